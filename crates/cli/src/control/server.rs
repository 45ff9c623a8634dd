//! The control socket's server: a thread accepting connections, one
//! short-lived thread per client reading its request and writing the
//! control thread's reply (or the stream's lines).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use super::{Reply, Request, FIELD_SEPARATOR, STREAM_QUEUE};
use crate::CliError;

/// Largest request accepted (a rules file).
const MAX_REQUEST: u64 = 64 << 20;

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
    let args: Vec<String> = line.split(FIELD_SEPARATOR).map(str::to_string).collect();
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
