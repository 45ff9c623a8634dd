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

use fastables_conntrack::{Entry, Tuple};
use fastables_rules::ctx::IfIndex;

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
    /// Whether a received packet matches.
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
        self.proto.is_none_or(|p| p == proto)
            && self.src.is_none_or(|a| a == src)
            && self.dst.is_none_or(|a| a == dst)
            && self.sport.is_none_or(|p| ports && p == sport)
            && self.dport.is_none_or(|p| ports && p == dport)
            && self.in_if.is_none_or(|i| i == in_if)
    }
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
