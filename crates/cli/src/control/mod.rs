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
//! the request to the control thread over a channel, which answers it by
//! running jobs on the workers between two of their batches (so a ruleset
//! is swapped atomically there), and wakes the socket's thread with the
//! answer ([`Responder`], [`StreamSender`]).
//!
//! The server is bounded ([`CONTROL_LIMITS`]): 1024 clients, a request of
//! at most 64 KiB (a `restore`: its rules up to [`MAX_RULES_INPUT`], larger
//! is refused whole), 10 s to send it, 10 s to read the answer, 16 streams.

mod client;
mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SendError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use fastables_serve::{Limits, Waker};

pub use client::{call, call_stream, exit, print, socket_path};
pub use server::{serve, Server};

/// Field separator of the request line.
const FIELD_SEPARATOR: char = '\x1f';

/// The most bytes of rules one `restore` takes; a larger input is refused
/// whole, before anything is parsed or applied.
pub const MAX_RULES_INPUT: usize = 64 << 20;

/// The most bytes of a request other than the rules of a `restore`.
const SMALL_REQUEST: usize = 64 << 10;

/// Streaming clients (`conntrack -E`, `trace`) at once; more are refused.
pub const MAX_STREAMS: usize = 16;

/// The control socket's bounds.
pub const CONTROL_LIMITS: Limits = Limits {
    max_clients: 1024,
    small_request: SMALL_REQUEST,
    max_request: SMALL_REQUEST + MAX_RULES_INPUT,
    // Two whole restores at once; a third waits for neither: it is busy.
    large_budget: 2 * MAX_RULES_INPUT,
    request_deadline: Duration::from_secs(10),
    answer_deadline: Duration::from_secs(30),
    write_deadline: Duration::from_secs(10),
    stream_stall: Duration::from_secs(30),
    linger: Duration::from_secs(2),
};

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
    pub reply: Responder,
    /// For a streaming request (`conntrack -E`): where its lines go, after
    /// a reply with code 0 said it is accepted.
    pub stream: Option<StreamSender>,
}

/// Wakes the socket's thread when an answer or stream lines are ready (at
/// most one wake-up waiting at a time, however many lines come).
#[derive(Clone)]
struct Wake {
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
}

impl Wake {
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// The socket's thread is about to look at every answer and stream.
    fn clear(&self) {
        self.pending.store(false, Ordering::Release);
    }
}

/// Where the answer to one request goes. Dropped unanswered, it tells the
/// socket's thread (which then answers that the instance is stopping).
pub struct Responder {
    tx: Option<SyncSender<Reply>>,
    wake: Wake,
}

impl Responder {
    fn new(tx: SyncSender<Reply>, wake: Wake) -> Responder {
        Responder { tx: Some(tx), wake }
    }

    /// Sends the answer (an error when the client is gone).
    pub fn send(&self, r: Reply) -> Result<(), SendError<Reply>> {
        let sent = match &self.tx {
            Some(tx) => tx.send(r),
            None => Err(SendError(r)),
        };
        self.wake.wake();
        sent
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // The channel closes first, then the thread looks.
        drop(self.tx.take());
        self.wake.wake();
    }
}

/// Where a stream's lines go ([`STREAM_QUEUE`] may wait; more are refused
/// with `Full`, and `Disconnected` says the client is gone). When the last
/// one is dropped the stream ends: its client's connection is closed.
pub struct StreamSender {
    tx: Option<SyncSender<String>>,
    wake: Wake,
}

impl StreamSender {
    fn new(tx: SyncSender<String>, wake: Wake) -> StreamSender {
        StreamSender { tx: Some(tx), wake }
    }

    /// Queues one line (or several, each ended by a newline).
    pub fn try_send(&self, line: String) -> Result<(), TrySendError<String>> {
        match &self.tx {
            Some(tx) => tx.try_send(line)?,
            None => return Err(TrySendError::Disconnected(line)),
        }
        self.wake.wake();
        Ok(())
    }
}

impl Clone for StreamSender {
    fn clone(&self) -> StreamSender {
        StreamSender {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        // The channel closes (with the last sender) first, then the thread looks.
        drop(self.tx.take());
        self.wake.wake();
    }
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
        let server = serve(&path, CONTROL_LIMITS).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second instance on the same socket is refused.
        assert!(
            matches!(serve(&path, CONTROL_LIMITS), Err(CliError::Start(m)) if m.contains("another fastables"))
        );
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
