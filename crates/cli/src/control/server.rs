//! The control socket's server: the socket file (refused over anything but
//! a stale socket), and the protocol on a bounded server (`fastables-serve`,
//! one thread): a request is complete when the client shuts its side; it
//! goes to the control thread, whose answer (or stream of lines) comes
//! back through a channel and a wake-up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use fastables_serve::{Chunk, ConnId, Io, Limits, Listener, Parse, Protocol, Refusal, ServerStats};

use super::{
    Reply, Request, Responder, StreamSender, Wake, FIELD_SEPARATOR, MAX_RULES_INPUT, MAX_STREAMS,
    SMALL_REQUEST, STREAM_QUEUE,
};
use crate::CliError;

/// Requests with the control thread (or writing their answers) at once;
/// more wait here, so that answers never hold more than this many.
const MAX_IN_FLIGHT: usize = 64;

/// Bytes of a stream's lines waiting for its client before no more are
/// taken from its queue (the rest wait there, then are dropped).
const STREAM_BUFFER: usize = 64 << 10;

/// A request that streams lines until the client goes (`conntrack -E`).
fn is_stream(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some("conntrack") => args.iter().any(|a| a == "-E" || a == "--event"),
        Some("trace") => true,
        _ => false,
    }
}

/// A request that carries rules after its line (`restore`).
fn is_restore(input: &[u8]) -> bool {
    input.strip_prefix(b"restore").is_some_and(|rest| {
        rest.first()
            .is_some_and(|&b| b == b'\n' || b == FIELD_SEPARATOR as u8)
    })
}

/// The listening side: the socket's thread, and the receiving end that the
/// control thread polls. Dropping it stops the thread and removes the file.
pub struct Server {
    path: PathBuf,
    /// Requests for the control thread.
    pub requests: Receiver<Request>,
    server: Option<fastables_serve::Server>,
}

impl Server {
    /// The server's counters (for the metrics).
    pub fn stats(&self) -> Option<Arc<ServerStats>> {
        self.server.as_ref().map(|s| s.stats())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

fn socket_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::Start(format!(
        "{}: cannot create the control socket: {e}",
        path.display()
    ))
}

/// What is at `path`, in words.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device"
    }
}

/// Makes room for the socket at `path`: nothing there, or a stale socket
/// (removed). A socket that answers belongs to another running instance;
/// anything else is not ours to remove.
fn claim(path: &Path) -> Result<(), CliError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(CliError::Start(format!(
                    "{}: another fastables instance is running (its control socket answers)",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| socket_error(path, e))
        }
        Ok(m) => Err(CliError::Start(format!(
            "{}: [control] socket names {}, not a socket: refusing to replace it \
             (remove it, or name another path)",
            path.display(),
            kind(m.file_type())
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(socket_error(path, e)),
    }
}

/// Binds the control socket at `path` (mode 0600) and starts its thread.
/// An existing socket that nobody answers on is replaced; one that answers
/// belongs to another running instance, and anything else at `path` is
/// left alone: both are errors.
pub fn serve(path: &Path, limits: Limits) -> Result<Server, CliError> {
    claim(path)?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| socket_error(path, e))?;
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| socket_error(path, e))?;
    let mut server = Server {
        path: path.to_path_buf(),
        requests: mpsc::channel().1,
        server: None,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| socket_error(path, e))?;
    let (tx, rx) = mpsc::channel::<Request>();
    let listener = Listener::unix(listener).map_err(|e| socket_error(path, e))?;
    let engine = fastables_serve::Server::start("control", listener, limits, |waker| Control {
        requests: tx,
        wake: Wake {
            waker,
            pending: Arc::new(AtomicBool::new(false)),
        },
        pending: HashMap::new(),
        in_flight: HashSet::new(),
        waiting: VecDeque::new(),
    })
    .map_err(|e| socket_error(path, e))?;
    server.server = Some(engine);
    server.requests = rx;
    Ok(server)
}

/// A request handed to the control thread: where its answer and lines come.
struct Pending {
    reply: Receiver<Reply>,
    lines: Option<Receiver<String>>,
    streaming: bool,
}

struct Control {
    requests: Sender<Request>,
    wake: Wake,
    pending: HashMap<ConnId, Pending>,
    /// Requests (not streams) with the control thread or writing their answer.
    in_flight: HashSet<ConnId>,
    /// Requests waiting for a place in flight.
    waiting: VecDeque<(ConnId, Request, Pending)>,
}

/// The bytes of a reply on the socket.
fn encode(r: &Reply) -> Vec<u8> {
    let mut v = format!("{} {} {}\n", r.code, r.out.len(), r.err.len()).into_bytes();
    v.extend_from_slice(r.out.as_bytes());
    v.extend_from_slice(r.err.as_bytes());
    v
}

/// A text from a client, as UTF-8 (invalid bytes replaced).
fn text(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Control {
    fn answer(&mut self, id: ConnId, r: &Reply, io: &mut Io<'_>) {
        io.send(id, Chunk::Owned(encode(r)));
        io.finish(id);
    }

    /// Hands waiting requests to the control thread while there is room.
    fn dispatch(&mut self, io: &mut Io<'_>) {
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some((id, req, p)) = self.waiting.pop_front() else {
                return;
            };
            if p.lines.is_none() {
                self.in_flight.insert(id);
            }
            if self.requests.send(req).is_err() {
                self.answer(
                    id,
                    &Reply::fail("fastables: the instance is stopping\n"),
                    io,
                );
                continue;
            }
            self.pending.insert(id, p);
        }
    }

    /// Answers and stream lines that came for `id`; false when it is done.
    fn forward(id: ConnId, p: &mut Pending, io: &mut Io<'_>) -> bool {
        if !p.streaming {
            let r = match p.reply.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    Reply::fail("fastables: the instance is stopping\n")
                }
            };
            if r.code != 0 || p.lines.is_none() {
                io.send(id, Chunk::Owned(encode(&r)));
                io.finish(id);
                return false;
            }
            // Accepted: stream until the client or the instance goes.
            io.send(id, Chunk::Owned(b"stream\n".to_vec()));
            io.stream(id);
            p.streaming = true;
        }
        let Some(lines) = &p.lines else {
            return false;
        };
        while let Some(queued) = io.queued(id) {
            if queued >= STREAM_BUFFER {
                return true;
            }
            match lines.try_recv() {
                Ok(l) => {
                    io.send(id, Chunk::Owned(l.into_bytes()));
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    io.finish(id);
                    return false;
                }
            }
        }
        false
    }
}

impl Protocol for Control {
    fn parse(&mut self, input: &[u8], eof: bool) -> Parse {
        if eof {
            return Parse::Complete;
        }
        let line_ends = input.iter().take(SMALL_REQUEST).any(|&b| b == b'\n');
        if input.len() > SMALL_REQUEST && !(line_ends && is_restore(input)) {
            // Only `restore` carries more than its line.
            return Parse::TooLarge;
        }
        Parse::More
    }

    fn request(&mut self, id: ConnId, mut request: Vec<u8>, io: &mut Io<'_>) {
        if request.is_empty() {
            // A probe (another instance checking whether this socket is alive).
            io.finish(id);
            return;
        }
        let body = match request.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let body = request.split_off(nl + 1);
                request.truncate(nl);
                text(body)
            }
            None => String::new(),
        };
        let args: Vec<String> = text(request)
            .split(FIELD_SEPARATOR)
            .map(str::to_string)
            .collect();
        let (stream, lines) = if is_stream(&args) {
            let streams = self.pending.values().filter(|p| p.lines.is_some()).count()
                + self.waiting.iter().filter(|w| w.2.lines.is_some()).count();
            if streams >= MAX_STREAMS {
                io.count(Refusal::Streams);
                let m = format!(
                    "fastables: {MAX_STREAMS} streams (conntrack -E, trace) are open already: refused\n"
                );
                self.answer(id, &Reply::fail(m), io);
                return;
            }
            let (t, r) = mpsc::sync_channel::<String>(STREAM_QUEUE);
            (Some(StreamSender::new(t, self.wake.clone())), Some(r))
        } else {
            (None, None)
        };
        let (rtx, rrx) = mpsc::sync_channel(1);
        let req = Request {
            args,
            body,
            reply: Responder::new(rtx, self.wake.clone()),
            stream,
        };
        let p = Pending {
            reply: rrx,
            lines,
            streaming: false,
        };
        self.waiting.push_back((id, req, p));
        self.dispatch(io);
    }

    fn refusal(&mut self, why: Refusal) -> Option<Vec<u8>> {
        let m = match why {
            Refusal::Full => "fastables: every place of the instance holds a client with a request in hand: refused; try again\n".to_string(),
            Refusal::Evicted => "fastables: dropped: no request came, and a new client needed the place\n".to_string(),
            Refusal::RequestDeadline => "fastables: the request did not come whole within 10 s: refused\n".to_string(),
            Refusal::TooLarge => format!(
                "fastables: the request is larger than the instance takes ({} MiB of rules for restore, {} KiB otherwise): refused whole, nothing was applied\n",
                MAX_RULES_INPUT >> 20,
                SMALL_REQUEST >> 10
            ),
            Refusal::Busy => "fastables: the instance is receiving other large requests: refused, nothing was applied; try again\n".to_string(),
            Refusal::AnswerDeadline => "fastables: the instance did not answer within 30 s\n".to_string(),
            Refusal::WriteDeadline | Refusal::Streams => return None,
        };
        Some(encode(&Reply::fail(m)))
    }

    fn woken(&mut self, io: &mut Io<'_>) {
        self.wake.clear();
        let mut done = Vec::new();
        for (id, p) in &mut self.pending {
            if !Control::forward(*id, p, io) {
                done.push(*id);
            }
        }
        for id in done {
            self.pending.remove(&id);
        }
        self.dispatch(io);
    }

    fn gone(&mut self, id: ConnId) {
        self.pending.remove(&id);
        self.waiting.retain(|w| w.0 != id);
        if self.in_flight.remove(&id) && !self.waiting.is_empty() {
            // A place in flight is free: `woken` hands the next one over.
            self.wake.wake();
        }
    }
}
