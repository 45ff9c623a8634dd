//! Packet tracing (`fastables trace`): for each packet that matches a
//! filter, one record with a line per table and hook it went through (the
//! chain, the rule number or the policy that decided, the verdict), the
//! conntrack state with the ORIGINAL and REPLY tuples before and after NAT,
//! and what became of the packet.
//!
//! While no trace is set, the cost on the data path is one branch per
//! packet and per table run. Records wait in a bounded queue until they are
//! drained; when it is full, records (never packets) are dropped and counted.

use std::fmt::Write as _;

use fastables_conntrack::{CtState, Dir, Entry, Tuple};
use fastables_packet::ipv4::{PROTO_TCP, PROTO_UDP};
use fastables_packet::parse::{parse_frame, Ipv4Info, L3, L4};
use fastables_packet::IfIndex;
use fastables_rules::ctx::{PacketCtx, Verdict};
use fastables_rules::model::{Hook, Table};

use super::conntrack::Ct;
use super::pkt::Fate;
use super::Pipeline;

/// Records kept between two drains.
pub const TRACE_QUEUE: usize = 256;

/// Which packets to trace (every field optional, all must match).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// Protocol number.
    pub proto: Option<u8>,
    /// Source address (host order).
    pub src: Option<u32>,
    /// Destination address (host order).
    pub dst: Option<u32>,
    /// TCP/UDP source port.
    pub sport: Option<u16>,
    /// TCP/UDP destination port.
    pub dport: Option<u16>,
    /// Ingress interface.
    pub in_if: Option<IfIndex>,
    /// Only packets a `-j TRACE` rule marked (as `xtables-monitor --trace`
    /// shows the packets with `nftrace` set); the record starts at the table
    /// whose rule marked it.
    pub marked: bool,
}

impl TraceFilter {
    /// Whether a packet with these fields matches (`ports`: it has ports).
    // The fields one by one: `fastables conntrack` filters a tuple with it.
    #[allow(clippy::too_many_arguments)]
    pub fn matches(
        &self,
        proto: u8,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        ports: bool,
        in_if: IfIndex,
    ) -> bool {
        self.admits(&TraceHead {
            proto,
            src,
            dst,
            sport,
            dport,
            ports,
            in_if,
            len: 0,
            ttl: 0,
        })
    }

    /// Whether the packet `h` describes matches.
    #[inline]
    fn admits(&self, h: &TraceHead) -> bool {
        self.proto.is_none_or(|p| p == h.proto)
            && self.src.is_none_or(|a| a == h.src)
            && self.dst.is_none_or(|a| a == h.dst)
            && self.sport.is_none_or(|p| h.ports && p == h.sport)
            && self.dport.is_none_or(|p| h.ports && p == h.dport)
            && self.in_if.is_none_or(|i| i == h.in_if)
    }
}

/// What a trace record's first line says about the packet.
struct TraceHead {
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    ports: bool,
    in_if: IfIndex,
    len: u16,
    ttl: u8,
}

/// The tracer: its filter, how many packets remain, the queue of records.
#[derive(Debug)]
pub struct Tracer {
    /// The filter.
    pub filter: TraceFilter,
    /// Packets still to trace (`None`: no limit).
    pub remaining: Option<u64>,
    queue: Vec<String>,
    lost: u64,
    /// The record of the packet being traced.
    cur: String,
    seq: u64,
}

impl Tracer {
    /// A tracer for `filter`, at most `count` packets.
    pub fn new(filter: TraceFilter, count: Option<u64>) -> Tracer {
        Tracer {
            filter,
            remaining: count,
            queue: Vec::with_capacity(TRACE_QUEUE),
            lost: 0,
            cur: String::new(),
            seq: 0,
        }
    }

    /// Whether more packets are to be traced.
    pub fn active(&self) -> bool {
        self.remaining != Some(0)
    }

    /// Starts a record; `head` describes the packet.
    pub fn begin(&mut self, head: &str) {
        self.seq += 1;
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(1);
        }
        self.cur.clear();
        let _ = writeln!(self.cur, "trace {}: {head}", self.seq);
    }

    /// One line of the current record.
    pub fn line(&mut self, l: &str) {
        let _ = writeln!(self.cur, "  {l}");
    }

    /// Ends the record: into the queue, or counted as lost.
    pub fn end(&mut self) {
        if self.queue.len() < TRACE_QUEUE {
            self.queue.push(std::mem::take(&mut self.cur));
        } else {
            self.lost += 1;
            self.cur.clear();
        }
    }

    /// Hands the finished records to `f`, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(&str)) {
        for r in self.queue.drain(..) {
            f(&r);
        }
    }

    /// Records dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Whether records wait to be drained.
    pub fn pending(&self) -> bool {
        !self.queue.is_empty()
    }
}

fn ip(a: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(a)
}

/// A tuple as conntrack-tools prints it (`src=... dst=... sport=... dport=...`).
pub fn tuple(t: &Tuple) -> String {
    if fastables_conntrack::tuple::proto_has_ports(t.proto) {
        format!(
            "src={} dst={} sport={} dport={}",
            ip(t.src),
            ip(t.dst),
            t.sport,
            t.dport
        )
    } else {
        format!("src={} dst={}", ip(t.src), ip(t.dst))
    }
}

/// An entry's two tuples.
pub fn tuples(e: &Entry) -> String {
    format!("ORIGINAL {}  REPLY {}", tuple(e.orig()), tuple(e.reply()))
}

impl Pipeline {
    /// Traces the packets `filter` matches (at most `count`), or stops
    /// tracing (`None`).
    pub fn set_trace(&mut self, t: Option<(TraceFilter, Option<u64>)>) {
        self.trace = t.map(|(f, n)| Tracer::new(f, n));
    }

    /// Hands the finished trace records to `f`.
    pub fn drain_trace(&mut self, f: impl FnMut(&str)) {
        if let Some(t) = self.trace.as_mut() {
            t.drain(f);
        }
    }

    /// Whether a trace is set and has packets or records left.
    pub fn tracing(&self) -> bool {
        self.trace
            .as_ref()
            .is_some_and(|t| t.active() || t.pending())
    }

    /// Trace records dropped because their queue was full.
    pub fn trace_lost(&self) -> u64 {
        self.trace.as_ref().map_or(0, Tracer::lost)
    }

    /// A received datagram meets the trace: whether its record starts
    /// (the filter matches, and does not wait for a `-j TRACE`).
    pub(super) fn trace_begin(&mut self, info: &Ipv4Info, in_if: IfIndex) -> bool {
        let (sport, dport, ports) = match info.ports() {
            Some((s, d)) => (s, d, true),
            None => (0, 0, false),
        };
        let head = TraceHead {
            proto: info.protocol,
            src: u32::from(info.src),
            dst: u32::from(info.dst),
            sport,
            dport,
            ports,
            in_if,
            len: info.total_len,
            ttl: info.ttl,
        };
        // The filter first: a set trace costs a packet it does not match
        // only this test.
        let wanted = self
            .trace
            .as_ref()
            .is_some_and(|t| !t.filter.marked && t.active() && t.filter.admits(&head));
        wanted && self.trace_start(&head)
    }

    /// `-j TRACE` marked the packet: its record starts here, for a
    /// `--marked` trace. Returns whether it started.
    pub(super) fn trace_marked(&mut self, ctx: &PacketCtx) -> bool {
        if !self.trace.as_ref().is_some_and(|t| t.filter.marked) {
            return false;
        }
        self.trace_start(&TraceHead {
            proto: ctx.proto,
            src: ctx.src,
            dst: ctx.dst,
            sport: ctx.sport,
            dport: ctx.dport,
            ports: ctx.has_l4 && matches!(ctx.proto, PROTO_TCP | PROTO_UDP),
            in_if: ctx.in_if.unwrap_or(IfIndex::MAX),
            len: ctx.len,
            ttl: ctx.ttl,
        })
    }

    #[cold]
    fn trace_start(&mut self, h: &TraceHead) -> bool {
        let Some(t) = self.trace.as_mut() else {
            return false;
        };
        if !t.active() || !t.filter.admits(h) {
            return false;
        }
        let dev = self.ifs.get(h.in_if).map_or("local", |d| d.name.as_str());
        let (src, dst) = (
            std::net::Ipv4Addr::from(h.src),
            std::net::Ipv4Addr::from(h.dst),
        );
        let head = if h.ports {
            format!(
                "in {dev}: {src}:{} > {dst}:{} proto {} len {} ttl {}",
                h.sport, h.dport, h.proto, h.len, h.ttl
            )
        } else {
            format!(
                "in {dev}: {src} > {dst} proto {} len {} ttl {}",
                h.proto, h.len, h.ttl
            )
        };
        t.begin(&head);
        true
    }

    /// The line of a table run: who decided, and what.
    pub(super) fn trace_table(&mut self, table: Table, hook: Hook, v: Verdict, last: u32) {
        let rules = &self.tables.rules;
        let info = rules.rule_info(last);
        let by = if info.index == 0 {
            format!("policy of {}", info.chain)
        } else {
            format!("{} rule {} (line {})", info.chain, info.index, info.line)
        };
        let verdict = match v {
            Verdict::Accept => "ACCEPT".to_string(),
            Verdict::Drop => "DROP".to_string(),
            Verdict::Reject(_) => "REJECT".to_string(),
            // The target's name, as the rules file writes it.
            Verdict::Nat(id) => fastables_rules::print::target_text(rules.target(id))
                .split(' ')
                .nth(1)
                .unwrap_or("NAT")
                .to_string(),
        };
        let line = format!("{} {}: {verdict} by {by}", table.name(), hook.chain_name());
        if let Some(t) = self.trace.as_mut() {
            t.line(&line);
        }
    }

    /// The line of the packet's connection, `what` saying where.
    pub(super) fn trace_ct(&mut self, what: &str, ct: &Ct) {
        let line = match ct {
            Ct::None => format!("{what}: untracked or INVALID"),
            Ct::New(nc) => format!("{what}: NEW {}", tuples(&nc.entry)),
            Ct::Killed { entry, .. } => format!("{what}: closed {}", tuples(entry)),
            _ => match self.ct.entry(ct) {
                Some((e, dir, state)) => {
                    let state = match state {
                        CtState::New => "NEW",
                        CtState::Established => "ESTABLISHED",
                        CtState::Related => "RELATED",
                        CtState::Invalid => "INVALID",
                    };
                    let dir = match dir {
                        Dir::Original => "original direction",
                        Dir::Reply => "reply direction",
                    };
                    format!("{what}: {state}, {dir}, {}", tuples(e))
                }
                None => format!("{what}: gone"),
            },
        };
        if let Some(t) = self.trace.as_mut() {
            t.line(&line);
        }
    }

    /// The last line of the record: what became of the packet (`frame`:
    /// as it leaves).
    pub(super) fn trace_end(&mut self, frame: &[u8], fate: Fate) {
        let line = match fate {
            Fate::Forward { port, .. } => {
                let dev = self.ifs.get(port).map_or("?", |d| d.name.as_str());
                match parse_frame(frame).ok().map(|p| p.l3) {
                    Some(L3::Ipv4(i)) => match i.l4 {
                        L4::Tcp {
                            src_port, dst_port, ..
                        }
                        | L4::Udp {
                            src_port, dst_port, ..
                        } => format!(
                            "out {dev}: {}:{src_port} > {}:{dst_port} ttl {}",
                            i.src, i.dst, i.ttl
                        ),
                        _ => format!("out {dev}: {} > {} ttl {}", i.src, i.dst, i.ttl),
                    },
                    _ => format!("out {dev}"),
                }
            }
            Fate::Drop(r) => format!("dropped: {}", r.name()),
            Fate::Consumed => "delivered locally".to_string(),
            Fate::HoldNeighbor { .. } | Fate::HoldFragment { .. } => {
                "held (waiting for ARP or for the rest of the datagram)".to_string()
            }
        };
        if let Some(t) = self.trace.as_mut() {
            t.line(&line);
            t.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_count_and_queue_bound() {
        let f = TraceFilter {
            proto: Some(6),
            dport: Some(80),
            ..TraceFilter::default()
        };
        assert!(f.matches(6, 1, 2, 1234, 80, true, 0));
        assert!(!f.matches(17, 1, 2, 1234, 80, true, 0));
        assert!(!f.matches(6, 1, 2, 1234, 80, false, 0));
        let mut t = Tracer::new(f, Some(2));
        t.begin("a");
        t.line("x");
        t.end();
        assert!(t.active());
        t.begin("b");
        t.end();
        assert!(!t.active());
        let mut got = vec![];
        t.drain(|r| got.push(r.to_string()));
        assert_eq!(got, ["trace 1: a\n  x\n", "trace 2: b\n"]);
        let mut t = Tracer::new(TraceFilter::default(), None);
        for _ in 0..TRACE_QUEUE + 3 {
            t.begin("p");
            t.end();
        }
        assert_eq!(t.lost(), 3);
    }
}
