//! The control socket of `fastables run`, and the commands that use it
//! (`save`, `restore`, `conntrack`, `stats`).
//!
//! A Unix stream socket (mode 0600). One request per connection: the client
//! writes its arguments (one line, fields separated by `\x1f`) and, for
//! `restore`, the rules text after it, then shuts down its write side; the
//! server answers `<exit code> <stdout bytes> <stderr bytes>\n` followed by
//! the two texts. The socket's thread never touches the data plane: it hands
//! the request to the worker over a bounded channel, and the worker answers
//! between two batches (so a ruleset is swapped atomically there).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use crate::CliError;

/// Field separator of the request line.
const SEP: char = '\x1f';
/// Largest request accepted (a rules file).
const MAX_REQUEST: u64 = 64 << 20;

/// What a command printed and its exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Exit code.
    pub code: u8,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

impl Reply {
    /// Success with this output.
    pub fn ok(out: String) -> Reply {
        Reply {
            code: 0,
            out,
            err: String::new(),
        }
    }

    /// Failure (exit 1) with this message on stderr.
    pub fn fail(err: impl Into<String>) -> Reply {
        Reply {
            code: 1,
            out: String::new(),
            err: err.into(),
        }
    }
}

/// One request for the worker.
pub struct Request {
    /// The command and its arguments (`["conntrack", "-L", "-p", "tcp"]`).
    pub args: Vec<String>,
    /// Standard input of the command (`restore`).
    pub body: String,
    /// Where the answer goes.
    pub reply: SyncSender<Reply>,
    /// For a streaming request (`conntrack -E`): where its lines go, after
    /// a reply with code 0 said it is accepted.
    pub stream: Option<SyncSender<String>>,
}

/// Lines of a stream that may wait for a slow client; more are dropped.
pub const STREAM_QUEUE: usize = 8192;

/// A request that streams lines until the client goes (`conntrack -E`).
fn is_stream(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some("conntrack") => args.iter().any(|a| a == "-E" || a == "--event"),
        Some("trace") => true,
        _ => false,
    }
}

/// The listening side: a thread accepting connections, and the receiving
/// end that the worker polls.
pub struct Server {
    path: PathBuf,
    /// Requests for the worker.
    pub requests: Receiver<Request>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn socket_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::Start(format!(
        "{}: cannot create the control socket: {e}",
        path.display()
    ))
}

/// Binds the control socket at `path` (mode 0600) and starts its thread.
/// An existing socket that nobody answers on is replaced; one that answers
/// belongs to another running instance, and is an error.
pub fn serve(path: &Path) -> Result<Server, CliError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(CliError::Start(format!(
                "{}: another fastables instance is running (its control socket answers)",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| socket_error(path, e))?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| socket_error(path, e))?;
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| socket_error(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| socket_error(path, e))?;
    let (tx, rx) = mpsc::sync_channel::<Request>(16);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                // One short-lived thread per client: a slow client never
                // holds up the others (the worker answers one at a time).
                let _ = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || handle(conn, &tx));
            }
        })
        .map_err(|e| socket_error(path, e))?;
    Ok(Server {
        path: path.to_path_buf(),
        requests: rx,
    })
}

fn handle(mut conn: UnixStream, tx: &SyncSender<Request>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut raw = Vec::new();
    if (&mut conn).take(MAX_REQUEST).read_to_end(&mut raw).is_err() {
        return;
    }
    if raw.is_empty() {
        // A probe (another instance checking whether this socket is alive).
        return;
    }
    let text = String::from_utf8_lossy(&raw);
    let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let args: Vec<String> = line.split(SEP).map(str::to_string).collect();
    let (rtx, rrx) = mpsc::sync_channel(1);
    let (stream, lines) = if is_stream(&args) {
        let (t, r) = mpsc::sync_channel::<String>(STREAM_QUEUE);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    let reply = match tx.send(Request {
        args,
        body: body.to_string(),
        reply: rtx,
        stream,
    }) {
        Ok(()) => rrx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| Reply::fail("fastables: the worker did not answer")),
        Err(_) => Reply::fail("fastables: the instance is stopping"),
    };
    match lines {
        Some(lines) if reply.code == 0 => {
            // Accepted: stream until the client or the instance goes.
            if conn.write_all(b"stream\n").is_err() {
                return;
            }
            for l in lines {
                if conn.write_all(l.as_bytes()).is_err() {
                    break;
                }
            }
        }
        _ => {
            let _ = write_reply(&mut conn, &reply);
        }
    }
}

fn write_reply(w: &mut impl Write, r: &Reply) -> std::io::Result<()> {
    writeln!(w, "{} {} {}", r.code, r.out.len(), r.err.len())?;
    w.write_all(r.out.as_bytes())?;
    w.write_all(r.err.as_bytes())?;
    w.flush()
}

/// Where a client finds the socket: `--socket`, else the `[control] socket`
/// of `--config`, else the default.
pub fn socket_path(socket: Option<&Path>, config: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    if let Some(c) = config {
        let cfg = fastables_dataplane::config::Config::load(c)?;
        return Ok(cfg.control.socket);
    }
    Ok(fastables_dataplane::config::ControlConfig::default().socket)
}

/// The error of a client that finds no instance on `path`.
fn unreachable(path: &Path, e: std::io::Error) -> CliError {
    CliError::Start(format!(
        "{}: no running instance answers ({e}); start one with `fastables run -c CONFIG`, \
         or name its socket with --socket PATH or --config FILE",
        path.display()
    ))
}

/// Connects to `path` and sends one request (its write side then shut).
fn send(path: &Path, args: &[String], body: &str) -> Result<UnixStream, CliError> {
    let mut s = UnixStream::connect(path).map_err(|e| unreachable(path, e))?;
    let mut req = args.join(&SEP.to_string());
    req.push('\n');
    req.push_str(body);
    s.write_all(req.as_bytes())
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
        .map_err(|e| unreachable(path, e))?;
    Ok(s)
}

/// Sends one request and returns the answer.
pub fn call(path: &Path, args: &[String], body: &str) -> Result<Reply, CliError> {
    let mut s = send(path, args, body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| unreachable(path, e))?;
    parse_reply(path, &raw)
}

fn parse_reply(path: &Path, raw: &[u8]) -> Result<Reply, CliError> {
    let bad = || {
        CliError::Start(format!(
            "{}: malformed answer from the instance",
            path.display()
        ))
    };
    let nl = raw.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..nl]).to_string();
    let mut it = head.split(' ').map(|x| x.parse::<usize>());
    let (Some(Ok(code)), Some(Ok(no)), Some(Ok(ne))) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let rest = &raw[nl + 1..];
    if rest.len() != no + ne {
        return Err(bad());
    }
    Ok(Reply {
        code: u8::try_from(code).unwrap_or(1),
        out: String::from_utf8_lossy(&rest[..no]).into_owned(),
        err: String::from_utf8_lossy(&rest[no..]).into_owned(),
    })
}

/// Sends a streaming request (`conntrack -E`) and prints its lines as they
/// come, until the instance closes the stream or `stop` is set (SIGINT,
/// SIGTERM). Returns the number of lines, or the reply if it was refused.
pub fn call_stream(
    path: &Path,
    args: &[String],
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Result<usize, Reply>, CliError> {
    use std::io::BufRead as _;
    use std::sync::atomic::Ordering;
    let unreachable = |e| unreachable(path, e);
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let s = send(path, args, "")?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(unreachable)?;
    let mut r = std::io::BufReader::new(s);
    let mut first = String::new();
    loop {
        match r.read_line(&mut first) {
            Ok(_) => break,
            Err(e) if timed_out(&e) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(Ok(0));
                }
            }
            Err(e) => return Err(unreachable(e)),
        }
    }
    if first != "stream\n" {
        // A refusal: the ordinary reply.
        let mut rest = Vec::new();
        let _ = r.get_mut().set_read_timeout(Some(Duration::from_secs(10)));
        r.read_to_end(&mut rest).map_err(unreachable)?;
        let mut raw = first.into_bytes();
        raw.extend(rest);
        return parse_reply(path, &raw).map(Err);
    }
    let mut n = 0;
    let mut line = String::new();
    let out = std::io::stdout();
    while !stop.load(Ordering::Relaxed) {
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.ends_with('\n') {
                    let mut o = out.lock();
                    let _ = o.write_all(line.as_bytes());
                    let _ = o.flush();
                    n += 1;
                    line.clear();
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
    }
    Ok(Ok(n))
}

/// The command's result for exit code `code` (its output already printed).
pub fn exit(code: u8) -> Result<(), CliError> {
    match code {
        0 => Ok(()),
        c => Err(CliError::Exit(c)),
    }
}

/// Prints a reply as the command's own output; returns its exit code.
pub fn print(r: &Reply) -> u8 {
    print!("{}", r.out);
    eprint!("{}", r.err);
    let _ = std::io::stdout().flush();
    r.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_reply_go_through_the_socket() {
        let dir = std::env::temp_dir().join(format!("fastables-ctl-{}", std::process::id()));
        let path = dir.join("t.sock");
        let server = serve(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second instance on the same socket is refused.
        assert!(matches!(serve(&path), Err(CliError::Start(m)) if m.contains("another fastables")));
        let worker = std::thread::spawn(move || {
            let req = server.requests.recv().unwrap();
            assert_eq!(req.args, ["conntrack", "-L", "-p", "tcp"]);
            assert_eq!(req.body, "body\nlines\n");
            req.reply
                .send(Reply {
                    code: 3,
                    out: "out ✓\n".into(),
                    err: "err\n".into(),
                })
                .unwrap();
            server
        });
        let args: Vec<String> = ["conntrack", "-L", "-p", "tcp"].map(String::from).to_vec();
        let r = call(&path, &args, "body\nlines\n").unwrap();
        assert_eq!(
            r,
            Reply {
                code: 3,
                out: "out ✓\n".into(),
                err: "err\n".into()
            }
        );
        drop(worker.join().unwrap());
        assert!(!path.exists(), "the socket is removed when the server goes");
        let e = call(&path, &args, "").unwrap_err().to_string();
        assert!(e.contains("no running instance answers"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
