//! Bounded servers for fastables' side channels: the control socket and the
//! metrics listener. Each is one thread running an event loop (mio, over
//! epoll) that serves many clients with fixed resources:
//!
//! - a cap on concurrent clients ([`Limits::max_clients`]): a new client
//!   beyond it takes the place of the oldest client that has not sent a
//!   complete request (evicted), or is refused when every client holds a
//!   complete request; both are counted ([`ServerStats`]);
//! - per-client size limits: a request is refused once it holds more than
//!   [`Limits::max_request`] bytes, and bytes beyond
//!   [`Limits::small_request`] are drawn from one budget shared by all
//!   clients ([`Limits::large_budget`]), so that what clients send never
//!   holds more than `max_clients * small_request + large_budget` bytes;
//! - deadlines: to send the request, to get the answer, to read it; a
//!   long-lived stream is dropped when its output waits too long;
//! - fairness: a client is read at most [`READ_TURN`] bytes at a time, so a
//!   fast sender never holds up the others.
//!
//! What a request means and what answers it is a [`Protocol`]: it says when
//! a request is complete, answers it at once or later (from another thread,
//! through [`Waker`]), and may turn a connection into a stream.
//!
//! Why mio: the workspace forbids `unsafe`, and mio is epoll behind a safe
//! API, with the non-blocking Unix and TCP sockets and the cross-thread
//! waker (an eventfd) that these servers need; a thread per client is what
//! exhausted the process before.

mod conn;
mod event_loop;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use conn::Listener;
pub use event_loop::Io;
pub use mio::Waker;

/// Bytes read from one client before the others get their turn.
pub const READ_TURN: usize = 256 << 10;

/// What a server allows each client and all of them together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Clients connected at once.
    pub max_clients: usize,
    /// Bytes a request may hold without drawing on the shared budget.
    pub small_request: usize,
    /// The most bytes one request may hold; more is refused whole.
    pub max_request: usize,
    /// Bytes beyond `small_request` that all requests may hold together; a
    /// request that needs more while others hold it is refused as busy.
    pub large_budget: usize,
    /// From accepting a client to its complete request.
    pub request_deadline: Duration,
    /// From a complete request to the start of its answer.
    pub answer_deadline: Duration,
    /// From the start of an answer to its last byte written.
    pub write_deadline: Duration,
    /// A stream whose output waits this long without a byte written is dropped.
    pub stream_stall: Duration,
    /// After the answer, how long the rest of a client's input is read and
    /// discarded before closing (so that the answer is not lost to a reset).
    pub linger: Duration,
}

impl Limits {
    /// The most bytes that what clients send can hold at once.
    pub fn input_bound(&self) -> usize {
        self.max_clients * self.small_request + self.large_budget
    }
}

/// Why a client was refused or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A new client found every place taken by a client with a complete request.
    Full,
    /// The oldest client without a complete request, dropped for a new one.
    Evicted,
    /// The request was not complete in time.
    RequestDeadline,
    /// The request is larger than the server takes.
    TooLarge,
    /// The request needs the shared budget that other requests hold.
    Busy,
    /// The answer did not come in time.
    AnswerDeadline,
    /// The client did not read its answer (or its stream) in time.
    WriteDeadline,
    /// Too many long-lived streams (the protocol's own cap).
    Streams,
}

impl Refusal {
    /// Every reason, in the order of [`ServerStats`]' counters.
    pub const ALL: [Refusal; 8] = [
        Refusal::Full,
        Refusal::Evicted,
        Refusal::RequestDeadline,
        Refusal::TooLarge,
        Refusal::Busy,
        Refusal::AnswerDeadline,
        Refusal::WriteDeadline,
        Refusal::Streams,
    ];

    /// The reason's label in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::Evicted => "evicted",
            Refusal::RequestDeadline => "request_deadline",
            Refusal::TooLarge => "too_large",
            Refusal::Busy => "busy",
            Refusal::AnswerDeadline => "answer_deadline",
            Refusal::WriteDeadline => "write_deadline",
            Refusal::Streams => "streams",
        }
    }

    /// Its place in [`Refusal::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A server's counters, read by the metrics at any time.
#[derive(Debug)]
pub struct ServerStats {
    /// The server's label in the metrics (`control`, `metrics`).
    pub name: &'static str,
    clients: AtomicU64,
    accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl ServerStats {
    /// Zeroed counters for the server `name`.
    pub fn new(name: &'static str) -> ServerStats {
        ServerStats {
            name,
            clients: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> u64 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Clients accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Clients refused or dropped for `why` since start.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why.index()].load(Ordering::Relaxed)
    }

    /// Counts one client refused or dropped for `why`.
    pub fn count(&self, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn set_clients(&self, n: usize) {
        self.clients.store(n as u64, Ordering::Relaxed);
    }

    fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection, for as long as it lives (a slot and its generation: the
/// id of a closed connection never names a later one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    gen: u32,
}

/// Bytes to send: owned, or shared by many clients (the metrics page).
#[derive(Clone, Debug)]
pub enum Chunk {
    /// Bytes of this answer only.
    Owned(Vec<u8>),
    /// Bytes several answers share.
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s) => s,
        }
    }
}

/// Whether what a client sent so far is a complete request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// Not yet.
    More,
    /// Yes: all of it is the request.
    Complete,
    /// It can only be refused (too large for what it is).
    TooLarge,
}

/// What a server speaks: when a request is complete and how it is answered.
pub trait Protocol: Send + 'static {
    /// Whether `input` (what the client sent so far; `eof`: it has shut its
    /// side) holds a complete request.
    fn parse(&mut self, input: &[u8], eof: bool) -> Parse;

    /// A complete request: answer it through `io` now, or later from
    /// [`Protocol::woken`].
    fn request(&mut self, id: ConnId, request: Vec<u8>, io: &mut Io<'_>);

    /// What to send a client refused or dropped for `why` before closing
    /// (`None`: close without a word).
    fn refusal(&mut self, why: Refusal) -> Option<Vec<u8>>;

    /// The loop was woken ([`Waker::wake`]), or a stream's output drained:
    /// answers and stream output from elsewhere.
    fn woken(&mut self, _io: &mut Io<'_>) {}

    /// `id` is closed (answered, dropped, or gone).
    fn gone(&mut self, _id: ConnId) {}
}

/// A running server: its thread stops when this is dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stats: Arc<ServerStats>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `listener` in a thread named `name`. `protocol` is
    /// built with the loop's waker (for answers that come from elsewhere).
    pub fn start<P: Protocol>(
        name: &'static str,
        listener: Listener,
        limits: Limits,
        protocol: impl FnOnce(Arc<Waker>) -> P,
    ) -> std::io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServerStats::new(name));
        let lp = event_loop::EventLoop::new(listener, limits, Arc::clone(&stats))?;
        let waker = lp.waker();
        let mut protocol = protocol(Arc::clone(&waker));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || lp.run(&mut protocol, &flag))?;
        Ok(Server {
            stop,
            waker,
            stats,
            thread: Some(thread),
        })
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
