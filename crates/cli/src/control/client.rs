//! The client side of the control socket: where to find it, one request
//! and its reply, or a stream of lines until Ctrl-C.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Reply, FIELD_SEPARATOR};
use crate::CliError;

/// Where a client finds the socket: `--socket`, else the `[control] socket`
/// of `--config`, else the default.
pub fn socket_path(socket: Option<&Path>, config: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    if let Some(c) = config {
        let cfg = fastables_config::Config::load(c)?;
        return Ok(cfg.control.socket);
    }
    Ok(fastables_config::ControlConfig::default().socket)
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
/// A request the instance refuses (too large, too many clients) is
/// answered before the instance has read all of it: the write's error is
/// returned beside the stream, whose answer is still to be read.
fn send(
    path: &Path,
    args: &[String],
    body: &str,
) -> Result<(UnixStream, std::io::Result<()>), CliError> {
    let mut s = UnixStream::connect(path).map_err(|e| unreachable(path, e))?;
    let mut line = args.join(&FIELD_SEPARATOR.to_string());
    line.push('\n');
    let wrote = s
        .write_all(line.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .and_then(|()| s.shutdown(std::net::Shutdown::Write));
    Ok((s, wrote))
}

/// Sends one request and returns the answer.
pub fn call(path: &Path, args: &[String], body: &str) -> Result<Reply, CliError> {
    let (mut s, wrote) = send(path, args, body)?;
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    parse_reply(path, &raw).map_err(|bad| match (wrote, read) {
        (Err(e), _) | (_, Err(e)) => unreachable(path, e),
        _ => bad,
    })
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
    let (s, wrote) = send(path, args, "")?;
    wrote.map_err(unreachable)?;
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
