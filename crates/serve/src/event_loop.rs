//! The event loop of a server: accepting within the cap (evicting the
//! oldest client without a complete request), reading requests within
//! their limits, writing answers, and the deadlines.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token, Waker};

use crate::conn::{Listener, Stream};
use crate::{Chunk, ConnId, Limits, Parse, Protocol, Refusal, ServerStats, READ_TURN};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Token of slot 0.
const FIRST_SLOT: usize = 2;
/// How often deadlines are looked at (they are seconds long).
const SWEEP: Duration = Duration::from_millis(50);
/// When the process has no descriptor left, accepting is tried again after this.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Bytes read from a socket at once.
const SCRATCH: usize = 64 << 10;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Receiving its request (evictable).
    Reading,
    /// The request is with the protocol; nothing sent yet.
    Waiting,
    /// Sending the answer; `done`: closed once it is written.
    Answering { done: bool },
    /// A long-lived stream.
    Streaming,
    /// Answered: the rest of its input is read and discarded until it
    /// closes, or the linger time passes (evictable).
    Lingering,
}

struct Conn {
    stream: Stream,
    state: State,
    /// When it was accepted (the eviction order).
    since: Instant,
    deadline: Option<Instant>,
    input: Vec<u8>,
    eof: bool,
    /// Bytes of the shared budget its input holds.
    charged: usize,
    out: VecDeque<Chunk>,
    /// Bytes of `out`'s front already written.
    off: usize,
    queued: usize,
    /// The last write that made progress (or when output started waiting).
    last_write: Instant,
}

/// The connections and what the loop keeps about them.
struct Conns {
    slots: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    count: usize,
    budget_used: usize,
    limits: Limits,
    stats: Arc<ServerStats>,
    registry: Registry,
    /// What to send a client refused for each reason (`Refusal::ALL` order).
    refusals: Vec<Option<Vec<u8>>>,
    /// Output queued since the last flush.
    dirty: Vec<ConnId>,
    /// Input left to read (their turn ended).
    again: Vec<ConnId>,
    /// Closed, or no longer answerable: the protocol is told.
    gone: Vec<ConnId>,
    /// A stream's output drained: the protocol may send more.
    drained: bool,
    now: Instant,
}

/// The protocol's handle on the connections: answers, streams.
pub struct Io<'a> {
    c: &'a mut Conns,
}

impl Io<'_> {
    /// Queues `chunk` for `id`; false when `id` is gone or answered.
    pub fn send(&mut self, id: ConnId, chunk: Chunk) -> bool {
        let now = self.c.now;
        let write_deadline = self.c.limits.write_deadline;
        let Some(c) = self.c.get(id) else {
            return false;
        };
        match c.state {
            State::Waiting => {
                c.state = State::Answering { done: false };
                c.deadline = Some(now + write_deadline);
            }
            State::Answering { done: false } | State::Streaming => {}
            _ => return false,
        }
        if c.queued == 0 {
            c.last_write = now;
        }
        c.queued += chunk.bytes().len();
        c.out.push_back(chunk);
        self.c.dirty.push(id);
        true
    }

    /// Closes `id` once what is queued for it is written.
    pub fn finish(&mut self, id: ConnId) {
        let now = self.c.now;
        let write_deadline = self.c.limits.write_deadline;
        let Some(c) = self.c.get(id) else { return };
        match c.state {
            State::Waiting | State::Streaming => {
                c.state = State::Answering { done: true };
                c.deadline = Some(now + write_deadline);
            }
            State::Answering { .. } => c.state = State::Answering { done: true },
            _ => return,
        }
        self.c.dirty.push(id);
    }

    /// Makes `id` a long-lived stream: no deadline but its output's
    /// ([`Limits::stream_stall`]).
    pub fn stream(&mut self, id: ConnId) {
        if let Some(c) = self.c.get(id) {
            if matches!(c.state, State::Waiting | State::Answering { done: false }) {
                c.state = State::Streaming;
                c.deadline = None;
            }
        }
    }

    /// Bytes queued for `id` and not yet written; `None` when it is gone.
    pub fn queued(&mut self, id: ConnId) -> Option<usize> {
        self.c.get(id).map(|c| c.queued)
    }

    /// Counts a refusal the protocol decided (e.g. its cap on streams).
    pub fn count(&self, why: Refusal) {
        self.c.stats.count(why);
    }
}

impl Conns {
    fn get(&mut self, id: ConnId) -> Option<&mut Conn> {
        if self.gens.get(id.slot as usize) != Some(&id.gen) {
            return None;
        }
        self.slots.get_mut(id.slot as usize)?.as_mut()
    }

    fn id_of(&self, token: Token) -> Option<ConnId> {
        let slot = token.0.checked_sub(FIRST_SLOT)?;
        let gen = *self.gens.get(slot)?;
        self.slots.get(slot)?.as_ref()?;
        Some(ConnId {
            slot: slot as u32,
            gen,
        })
    }

    fn insert(&mut self, mut stream: Stream) -> Option<ConnId> {
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                self.slots.len() - 1
            }
        };
        if stream
            .register(&self.registry, Token(slot + FIRST_SLOT))
            .is_err()
        {
            self.free.push(slot as u32);
            return None;
        }
        self.slots[slot] = Some(Conn {
            stream,
            state: State::Reading,
            since: self.now,
            deadline: Some(self.now + self.limits.request_deadline),
            input: Vec::new(),
            eof: false,
            charged: 0,
            out: VecDeque::new(),
            off: 0,
            queued: 0,
            last_write: self.now,
        });
        self.count += 1;
        Some(ConnId {
            slot: slot as u32,
            gen: self.gens[slot],
        })
    }

    fn close(&mut self, id: ConnId) {
        if self.get(id).is_none() {
            return;
        }
        let slot = id.slot as usize;
        if let Some(mut c) = self.slots[slot].take() {
            c.stream.deregister(&self.registry);
            self.budget_used -= c.charged;
        }
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free.push(id.slot);
        self.count -= 1;
        self.gone.push(id);
    }

    /// Writes what a client refused for `why` is told, as far as the
    /// socket takes it at once (a few hundred bytes into an empty buffer).
    fn tell(&mut self, id: ConnId, why: Refusal) {
        let Some(bytes) = self.refusals[why.index()].take() else {
            return;
        };
        if let Some(c) = self.get(id) {
            let _ = c.stream.write(&bytes);
        }
        self.refusals[why.index()] = Some(bytes);
    }

    /// Refuses `id` for `why`: counted, told, then its input is discarded
    /// until it closes (the answer would be lost to a reset otherwise).
    fn refuse(&mut self, id: ConnId, why: Refusal) {
        self.stats.count(why);
        self.tell(id, why);
        self.gone.push(id);
        self.linger(id);
    }

    /// Stops answering `id`: its write side is shut, its input discarded.
    fn linger(&mut self, id: ConnId) {
        let until = self.now + self.limits.linger;
        let Some(c) = self.get(id) else { return };
        c.stream.shutdown_write();
        c.state = State::Lingering;
        c.deadline = Some(until);
        c.input = Vec::new();
        c.out.clear();
        c.queued = 0;
        self.again.push(id);
    }

    /// Closes the oldest client that has not sent a complete request (or
    /// is lingering), to make room; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                matches!(c.state, State::Reading | State::Lingering)
                    .then_some((c.since, i, c.state))
            })
            .min_by_key(|(since, i, _)| (*since, *i));
        let Some((_, slot, state)) = oldest else {
            return false;
        };
        let id = ConnId {
            slot: slot as u32,
            gen: self.gens[slot],
        };
        if state == State::Reading {
            self.stats.count(Refusal::Evicted);
            self.tell(id, Refusal::Evicted);
        }
        self.close(id);
        true
    }

    /// Reads what `id` sent (at most a turn's worth); a complete request
    /// is returned for the protocol.
    fn read(&mut self, id: ConnId, scratch: &mut [u8], p: &mut impl Protocol) -> Option<Vec<u8>> {
        let limits = self.limits;
        let mut turn = READ_TURN;
        let mut refused = None;
        let mut failed = false;
        {
            let budget_used = &mut self.budget_used;
            let c = match self.slots.get_mut(id.slot as usize) {
                Some(Some(c)) if self.gens[id.slot as usize] == id.gen => c,
                _ => return None,
            };
            while turn > 0 && !c.eof {
                let want = scratch.len().min(turn);
                let n = match c.stream.read(&mut scratch[..want]) {
                    Ok(0) => {
                        c.eof = true;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                };
                turn -= n;
                if c.state != State::Reading {
                    continue; // after the request: discarded
                }
                let len = c.input.len() + n;
                if len > limits.max_request {
                    refused = Some(Refusal::TooLarge);
                    break;
                }
                let over = len.saturating_sub(limits.small_request);
                if over > c.charged {
                    let more = over - c.charged;
                    if *budget_used + more > limits.large_budget {
                        refused = Some(Refusal::Busy);
                        break;
                    }
                    *budget_used += more;
                    c.charged = over;
                }
                c.input.extend_from_slice(&scratch[..n]);
            }
        }
        if failed {
            self.close(id);
            return None;
        }
        if let Some(why) = refused {
            self.refuse(id, why);
            return None;
        }
        if turn == 0 {
            self.again.push(id);
        }
        let now = self.now;
        let c = self.get(id)?;
        match c.state {
            State::Reading => match p.parse(&c.input, c.eof) {
                Parse::Complete => {
                    c.state = State::Waiting;
                    c.deadline = Some(now + limits.answer_deadline);
                    Some(std::mem::take(&mut c.input))
                }
                Parse::TooLarge => {
                    self.refuse(id, Refusal::TooLarge);
                    None
                }
                Parse::More if c.eof => {
                    // The client gave up before its request was whole.
                    self.close(id);
                    None
                }
                Parse::More => None,
            },
            State::Lingering if c.eof => {
                self.close(id);
                None
            }
            _ => None,
        }
    }

    /// Writes what is queued for `id`, as far as the socket takes it.
    fn flush(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.get(id) else { return };
        let mut failed = false;
        let had = c.queued;
        while let Some(front) = c.out.front() {
            let bytes = front.bytes();
            match c.stream.write(&bytes[c.off..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    c.off += n;
                    c.queued -= n;
                    c.last_write = now;
                    if c.off == bytes.len() {
                        c.out.pop_front();
                        c.off = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.close(id);
            return;
        }
        if !c.out.is_empty() {
            return;
        }
        let state = c.state;
        match state {
            State::Answering { done: true } => self.linger(id),
            State::Streaming if had > 0 => self.drained = true,
            _ => {}
        }
    }

    /// Deadlines: requests not complete, answers not come, answers or
    /// streams not read, lingering over.
    fn sweep(&mut self) {
        let now = self.now;
        let stall = self.limits.stream_stall;
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].as_ref() else {
                continue;
            };
            let id = ConnId {
                slot: slot as u32,
                gen: self.gens[slot],
            };
            let expired = c.deadline.is_some_and(|d| now >= d);
            let stalled = c.queued > 0 && now.duration_since(c.last_write) >= stall;
            match c.state {
                State::Reading if expired => self.refuse(id, Refusal::RequestDeadline),
                State::Waiting if expired => self.refuse(id, Refusal::AnswerDeadline),
                State::Answering { .. } if expired => {
                    self.stats.count(Refusal::WriteDeadline);
                    self.close(id);
                }
                State::Streaming if stalled => {
                    self.stats.count(Refusal::WriteDeadline);
                    self.close(id);
                }
                State::Lingering if expired => self.close(id),
                _ => {}
            }
        }
    }
}

pub(crate) struct EventLoop {
    poll: Poll,
    listener: Listener,
    waker: Arc<Waker>,
    conns: Conns,
}

impl EventLoop {
    pub(crate) fn new(
        mut listener: Listener,
        limits: Limits,
        stats: Arc<ServerStats>,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        listener.register(poll.registry(), LISTENER)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let registry = poll.registry().try_clone()?;
        Ok(EventLoop {
            poll,
            listener,
            waker,
            conns: Conns {
                slots: Vec::new(),
                gens: Vec::new(),
                free: Vec::new(),
                count: 0,
                budget_used: 0,
                limits,
                stats,
                registry,
                refusals: Vec::new(),
                dirty: Vec::new(),
                again: Vec::new(),
                gone: Vec::new(),
                drained: false,
                now: Instant::now(),
            },
        })
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Serves until `stop` is set (and the waker woken).
    pub(crate) fn run(mut self, p: &mut impl Protocol, stop: &AtomicBool) {
        self.conns.refusals = Refusal::ALL.iter().map(|r| p.refusal(*r)).collect();
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        let mut next_sweep = Instant::now() + SWEEP;
        let mut accept_paused: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = if !self.conns.again.is_empty() || self.conns.drained {
                Some(Duration::ZERO)
            } else if self.conns.count > 0 || accept_paused.is_some() {
                Some(next_sweep.saturating_duration_since(now))
            } else {
                None
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    std::thread::sleep(SWEEP);
                }
                continue;
            }
            self.conns.now = Instant::now();
            let mut woken = std::mem::take(&mut self.conns.drained);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => {
                        if accept_paused.is_none() {
                            accept_paused = self.accept_all(&mut scratch, p);
                        }
                    }
                    WAKER => woken = true,
                    t => {
                        let Some(id) = self.conns.id_of(t) else {
                            continue;
                        };
                        if ev.is_readable() || ev.is_read_closed() {
                            self.read(id, &mut scratch, p);
                        }
                        if ev.is_writable() {
                            self.conns.flush(id);
                        }
                        if ev.is_write_closed() || ev.is_error() {
                            // The client is gone both ways: nothing can reach it.
                            self.conns.close(id);
                        }
                    }
                }
            }
            for id in std::mem::take(&mut self.conns.again) {
                self.read(id, &mut scratch, p);
            }
            if woken {
                p.woken(&mut Io { c: &mut self.conns });
            }
            while let Some(id) = self.conns.dirty.pop() {
                self.conns.flush(id);
            }
            let now = self.conns.now;
            if now >= next_sweep {
                self.conns.sweep();
                next_sweep = now + SWEEP;
            }
            if accept_paused.is_some_and(|t| now >= t) {
                accept_paused = self.accept_all(&mut scratch, p);
            }
            for id in std::mem::take(&mut self.conns.gone) {
                p.gone(id);
            }
            self.conns.stats.set_clients(self.conns.count);
        }
        self.conns.stats.set_clients(0);
    }

    fn read(&mut self, id: ConnId, scratch: &mut [u8], p: &mut impl Protocol) {
        if let Some(req) = self.conns.read(id, scratch, p) {
            p.request(id, req, &mut Io { c: &mut self.conns });
        }
    }

    /// Accepts every waiting client; returns when to try again if the
    /// process ran out of descriptors.
    fn accept_all(&mut self, scratch: &mut [u8], p: &mut impl Protocol) -> Option<Instant> {
        loop {
            match self.listener.accept() {
                Ok(stream) => {
                    self.conns.stats.count_accepted();
                    if self.conns.count >= self.conns.limits.max_clients
                        && !self.conns.evict_oldest()
                    {
                        self.conns.stats.count(Refusal::Full);
                        let mut s = stream;
                        if let Some(b) = &self.conns.refusals[Refusal::Full.index()] {
                            let _ = s.write(b);
                        }
                        continue;
                    }
                    if let Some(id) = self.conns.insert(stream) {
                        // Its request may be there already: read it before
                        // anyone else can take its place.
                        self.read(id, scratch, p);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // Out of descriptors (or another error that a later
                    // try may not meet): make room, else try again later.
                    if !self.conns.evict_oldest() {
                        return Some(self.conns.now + ACCEPT_RETRY);
                    }
                }
            }
        }
    }
}
