//! The control socket of `fastables run`: its protocol (here), the server
//! the instance runs (`server.rs`) and the client side of the commands
//! that use it (`client.rs`: `list`, `save`, `restore`, `conntrack`,
//! `stats`, `trace`).
//!
//! A Unix stream socket (mode 0600). One request per connection: the client
//! writes its arguments (one line, fields separated by `\x1f`) and, for
//! `restore`, the rules text after it, then shuts down its write side; the
//! server answers `<exit code> <stdout bytes> <stderr bytes>\n` followed by
//! the two texts. The socket's thread never touches the data plane: it hands
//! the request to the control thread over a bounded channel, which answers
//! it by running jobs on the workers between two of their batches (so a
//! ruleset is swapped atomically there).

mod client;
mod server;

use std::sync::mpsc::SyncSender;

pub use client::{call, call_stream, exit, print, socket_path};
pub use server::serve;

/// Field separator of the request line.
const FIELD_SEPARATOR: char = '\x1f';

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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::CliError;

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
