//! Every counter is exactly right for known traffic, and none is dead: each
//! drop reason has a scenario that produces it (a reason without one does not
//! compile), and every field of the pipeline totals and of the conntrack
//! statistics is checked (a new field without a check does not compile).

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fastables_config::Config;
use fastables_conntrack::Stats;
use fastables_dataplane::drop::DropReason;
use fastables_dataplane::pipeline::{Pipeline, PipelineCounters};
use fastables_dataplane::worker::{Action, Batch, Worker, WorkerStats};
use fastables_packet::arp::ArpRepr;
use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::{checksum, MacAddr};
use fastables_port::{Frame, FrameAddr, FRAME_SIZE};
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::ctx::IfIndex;

mod common;
use common::MemPort;

/// Added to [`common::LAN`]: an interface without an address, and no
/// default route.
const BARE_AND_ROUTE: &str = r#"
[[interface]]
name = "bare"
mac = "02:42:ac:14:00:01"

[[route]]
to = "8.0.0.0/8"
via = "10.0.2.2"
dev = "eth0"
"#;

const ETH0: IfIndex = 0;
const DOCKER0: IfIndex = 1;
const BARE: IfIndex = 3;

const DOCKER0_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
const ETH0_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11]);
const BARE_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x14, 0x00, 0x01]);
const HOST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const HOST3_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x03]);
const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]);

const HOST: &str = "172.18.0.2";
const DOCKER0_IP: &str = "172.18.0.1";
const DNS: &str = "8.8.8.8";
/// On lan2, never answers ARP.
const SILENT: &str = "192.168.5.9";

const SEC: u64 = 1_000_000_000;

const ACCEPT_ALL: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
/// A ruleset that loads conntrack (and with it reassembly) and accepts everything.
const TRACKED: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                       -A FORWARD -m state --state INVALID -j ACCEPT\nCOMMIT\n";

fn filter(forward: &str) -> String {
    format!("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{forward}COMMIT\n")
}

fn nat(rules: &str) -> String {
    format!("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{rules}COMMIT\n")
}

fn pipeline(rules: &str, extra_config: &str) -> Pipeline {
    let rs = fastables_rules::parse::parse_restore(rules, "counters.rules").unwrap();
    let c = CompiledRuleset::compile(&rs, &["eth0", "docker0", "lan2", "bare"]).unwrap();
    let cfg = format!("{}{BARE_AND_ROUTE}{extra_config}", common::LAN);
    let cfg = Config::parse(&cfg, "/t/fastables.toml").unwrap();
    Pipeline::new(&cfg, Arc::new(c)).unwrap()
}

/// A pipeline and frame memory that lives across batches (held frames stay
/// in it); every frame and spare gets a buffer of its own.
struct Lab {
    p: Pipeline,
    mem: Vec<u8>,
    slots: usize,
}

impl Lab {
    fn new(rules: &str) -> Lab {
        Lab::with_config(rules, "")
    }

    fn with_config(rules: &str, extra_config: &str) -> Lab {
        Lab {
            p: pipeline(rules, extra_config),
            mem: Vec::new(),
            slots: 0,
        }
    }

    fn buffer(&mut self) -> FrameAddr {
        let a = self.slots * FRAME_SIZE;
        self.slots += 1;
        self.mem.resize(self.slots * FRAME_SIZE, 0);
        a as FrameAddr
    }

    fn spares(&mut self, b: &mut Batch, n: usize) {
        for _ in 0..n {
            let a = self.buffer();
            b.spare.push(a);
        }
    }

    /// One batch at `now`: `frames`, received on `port`, with `spares` spare buffers.
    fn rx(&mut self, now: u64, port: IfIndex, frames: &[Vec<u8>], spares: usize) -> Batch {
        let mut b = Batch::with_capacity(frames.len());
        for f in frames {
            let a = self.buffer();
            self.mem[a as usize..a as usize + f.len()].copy_from_slice(f);
            b.frames.push(Frame::rx(a, f.len() as u16, port));
        }
        self.spares(&mut b, spares);
        self.p.process_batch(now, &mut self.mem, &mut b);
        b
    }

    /// The hold queue at `now`, with `spares` spare buffers.
    fn service(&mut self, now: u64, spares: usize) -> Batch {
        let mut b = Batch::default();
        self.spares(&mut b, spares);
        self.p.service_held(now, &mut self.mem, &mut b);
        b
    }

    fn drops(&self) -> Drops {
        self.p.drops().snapshot()
    }
}

fn eth(src: MacAddr, dst: MacAddr) -> EthSpec {
    EthSpec {
        src,
        dst,
        ..EthSpec::default()
    }
}

/// From 172.18.0.2 to docker0's MAC.
fn from_host() -> EthSpec {
    eth(HOST_MAC, DOCKER0_MAC)
}

fn ip(src: &str, dst: &str) -> IpSpec {
    IpSpec {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ident: 0x1234,
        ..IpSpec::default()
    }
}

fn udp(e: &EthSpec, ip: &IpSpec, payload: &[u8]) -> Vec<u8> {
    builder::udp_frame(e, ip, &UdpSpec::default(), payload)
}

/// A UDP datagram from the host on docker0.
fn udp_from_host(dst: &str) -> Vec<u8> {
    udp(&from_host(), &ip(HOST, dst), b"query")
}

/// A datagram from the host to forward with TTL 1.
fn ttl_1() -> Vec<u8> {
    udp(
        &from_host(),
        &IpSpec {
            ttl: 1,
            ..ip(HOST, DNS)
        },
        b"x",
    )
}

/// A 1500-byte datagram from the host to forward, without DF: two
/// fragments on eth0 (MTU 1400).
fn too_big() -> Vec<u8> {
    let ip = IpSpec {
        dont_frag: false,
        ..ip(HOST, DNS)
    };
    udp(&from_host(), &ip, &[7; 1472])
}

/// A fragment from the host to `dst`: `len` payload bytes at `off`.
fn fragment(dst: &str, ident: u16, off: u16, len: usize, more: bool) -> Vec<u8> {
    builder::ipv4_frame(
        &from_host(),
        &IpSpec {
            dont_frag: false,
            more_frags: more,
            frag_offset: off,
            ident,
            ..ip(HOST, dst)
        },
        17,
        &vec![0x5a; len],
    )
}

/// The IPv4 header checksum of `f` recomputed (after a header edit).
fn fix_ip_checksum(f: &mut [u8]) {
    let hl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].fill(0);
    let c = checksum::checksum(&f[14..14 + hl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

type Drops = [(DropReason, u64); DropReason::COUNT];

/// The drop counters after a scenario, and what it should have produced.
struct Seen {
    /// The count of the scenario's own reason.
    count: u64,
    /// Other reasons the scenario moves on purpose, with their counts.
    side: &'static [(DropReason, u64)],
    drops: Drops,
}

impl Seen {
    fn one(drops: Drops) -> Seen {
        Seen::n(1, drops)
    }

    fn n(count: u64, drops: Drops) -> Seen {
        Seen {
            count,
            side: &[],
            drops,
        }
    }

    fn with(mut self, side: &'static [(DropReason, u64)]) -> Seen {
        self.side = side;
        self
    }
}

/// Feeds a fresh pipeline the traffic that must be dropped for `r`.
fn scenario(r: DropReason) -> Seen {
    use DropReason as R;
    match r {
        R::InvalidFrame => {
            // A descriptor past the end of the port's memory.
            let mut p = pipeline(ACCEPT_ALL, "");
            let mut mem = vec![0u8; FRAME_SIZE];
            let mut b = Batch::default();
            b.frames
                .push(Frame::rx(FRAME_SIZE as FrameAddr, 60, DOCKER0));
            p.process_batch(0, &mut mem, &mut b);
            Seen::one(p.drops().snapshot())
        }
        R::Truncated => {
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[udp_from_host(DNS)[..13].to_vec()], 1);
            Seen::one(lab.drops())
        }
        R::NotIpv4 => {
            // IPv6 (and an IPv4 packet in a VLAN tag) to our MAC.
            let mut v6 = udp_from_host(DNS);
            v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let tagged = udp(
                &EthSpec {
                    vlan: Some(5),
                    ..from_host()
                },
                &ip(HOST, DNS),
                b"x",
            );
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[v6, tagged], 2);
            Seen::n(2, lab.drops())
        }
        R::OtherHost => {
            // Unicast to another MAC; and a packet to forward in a broadcast frame.
            let other = udp(
                &eth(HOST_MAC, MacAddr([2, 9, 9, 9, 9, 9])),
                &ip(HOST, DNS),
                b"x",
            );
            let bcast = udp(&eth(HOST_MAC, MacAddr::BROADCAST), &ip(HOST, DNS), b"x");
            // ip_rcv_core drops an OTHERHOST frame before looking at its header.
            let mut bad_csum = other.clone();
            bad_csum[24] ^= 0xff;
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[other, bcast, bad_csum], 3);
            Seen::n(3, lab.drops())
        }
        R::BadIpHeader => {
            // ip_rcv_core's inhdr errors: version 6, IHL 4, a total length
            // shorter than the header.
            let bad = |at: usize, v: &[u8]| {
                let mut f = udp_from_host(DNS);
                f[at..at + v.len()].copy_from_slice(v);
                fix_ip_checksum(&mut f);
                f
            };
            let frames = [bad(14, &[0x65]), bad(14, &[0x44]), bad(16, &[0, 10])];
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &frames, 3);
            Seen::n(3, lab.drops())
        }
        R::BadIpChecksum => {
            let mut f = udp_from_host(DNS);
            f[24] ^= 0xff;
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[f], 1);
            Seen::one(lab.drops())
        }
        R::BadArp => {
            // Hardware address length 8: not Ethernet/IPv4 ARP.
            let mut f =
                builder::arp_request(HOST_MAC, HOST.parse().unwrap(), DOCKER0_IP.parse().unwrap());
            f[18] = 8;
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[f], 1);
            Seen::one(lab.drops())
        }
        R::ArpNotForUs => {
            // Who has 172.18.0.99 (not ours); and a request with a multicast sender.
            let other = builder::arp_request(
                HOST_MAC,
                HOST.parse().unwrap(),
                "172.18.0.99".parse().unwrap(),
            );
            let mcast = builder::arp_frame(
                &eth(HOST_MAC, MacAddr::BROADCAST),
                &ArpRepr::request(
                    HOST_MAC,
                    Ipv4Addr::new(224, 0, 0, 5),
                    DOCKER0_IP.parse().unwrap(),
                ),
            );
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[other, mcast], 2);
            assert!(b.generated.is_empty(), "no ARP reply");
            Seen::n(2, lab.drops())
        }
        R::MartianSource => {
            // ip_route_input_slow: loopback source (route_localnet 0), and our own address.
            let mut lo = udp_from_host(DNS);
            lo[26..30].copy_from_slice(&[127, 0, 0, 1]);
            fix_ip_checksum(&mut lo);
            let ours = udp(&from_host(), &ip("10.0.2.15", DNS), b"x");
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[lo, ours], 2);
            Seen::n(2, lab.drops())
        }
        R::MartianDestination => {
            // ip_route_input_slow: a zeronet and a loopback destination.
            let zero = udp_from_host("0.1.2.3");
            let lo = udp_from_host("127.0.0.1");
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[zero, lo], 2);
            assert!(b.generated.is_empty(), "no ICMP for martians");
            Seen::n(2, lab.drops())
        }
        R::Multicast => {
            // A group we did not join: without multicast routing, ip_route_input_rcu drops it.
            let f = udp(
                &eth(HOST_MAC, MacAddr([0x01, 0x00, 0x5e, 0x01, 0x01, 0x01])),
                &ip(HOST, "239.1.1.1"),
                b"x",
            );
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[f], 1);
            Seen::one(lab.drops())
        }
        R::NoRoute => {
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[udp_from_host("9.9.9.9")], 1);
            assert_eq!(b.generated.len(), 1, "net unreachable");
            Seen::one(lab.drops())
        }
        R::TtlExpired => {
            let f = ttl_1();
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[f], 1);
            assert_eq!(b.generated.len(), 1, "time exceeded");
            Seen::one(lab.drops())
        }
        R::FilterDrop => {
            let mut lab = Lab::new(&filter("-A FORWARD -j DROP\n"));
            lab.rx(0, DOCKER0, &[udp_from_host(DNS)], 1);
            Seen::one(lab.drops())
        }
        R::Rejected => {
            let mut lab = Lab::new(&filter("-A FORWARD -j REJECT\n"));
            let b = lab.rx(0, DOCKER0, &[udp_from_host(DNS)], 1);
            assert_eq!(b.generated.len(), 1, "port unreachable");
            Seen::one(lab.drops())
        }
        R::NatNoAddress => {
            // REDIRECT on a device without an address: nf_nat_redirect_ipv4 drops.
            let f = builder::tcp_frame(
                &eth(HOST_MAC, BARE_MAC),
                &ip("192.0.2.7", DNS),
                &TcpSpec::default(),
                b"",
            );
            let mut lab = Lab::new(&nat(
                "-A PREROUTING -i bare -p tcp -j REDIRECT --to-ports 3128\n",
            ));
            lab.rx(0, BARE, &[f], 1);
            Seen::one(lab.drops())
        }
        R::ConntrackFull => {
            // One assured connection fills a table of one; a new one is refused.
            let mut lab = Lab::with_config(TRACKED, "\n[conntrack]\nmax = 1\nbuckets = 16\n");
            tcp_handshake(&mut lab, 40000);
            lab.rx(SEC, DOCKER0, &[tcp(Dir::Out, 40001, 100, 0, SYN)], 1);
            Seen::one(lab.drops())
        }
        R::ConntrackInsertFailed => {
            // Two flows SNATed to one address and port: the second finds it taken.
            let mut lab = Lab::new(&nat(
                "-A POSTROUTING -o eth0 -p udp -j SNAT --to-source 10.0.2.15:5000\n",
            ));
            lab.rx(0, DOCKER0, &[udp_from_host(DNS)], 1);
            let second = udp(&eth(HOST3_MAC, DOCKER0_MAC), &ip("172.18.0.3", DNS), b"x");
            lab.rx(0, DOCKER0, &[second], 1);
            Seen::one(lab.drops())
        }
        R::FragNeeded => {
            let f = udp(&from_host(), &ip(HOST, DNS), &[7; 1472]);
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[f], 1);
            assert_eq!(b.generated.len(), 1, "fragmentation needed");
            Seen::one(lab.drops())
        }
        R::FragmentationUnsupported => {
            // A 1500-byte ping from 8.8.8.8 arrives on docker0 (asymmetric
            // routing): its echo reply leaves by eth0 (MTU 1400), and locally
            // generated packets are not fragmented.
            let f = builder::icmp_echo_request(
                &from_host(),
                &IpSpec {
                    dont_frag: false,
                    ..ip(DNS, DOCKER0_IP)
                },
                1,
                1,
                &[0; 1472],
            );
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[f], 1);
            assert_eq!(b.verdicts[0], Action::Consumed);
            Seen::one(lab.drops())
        }
        R::LocalFragment => {
            // Without conntrack nothing reassembles, and the local stack does not.
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[fragment(DOCKER0_IP, 1, 0, 16, true)], 1);
            Seen::one(lab.drops())
        }
        R::FragmentTimeout => {
            let mut lab = Lab::new(TRACKED);
            let b = lab.rx(0, DOCKER0, &[fragment(DNS, 1, 0, 16, true)], 1);
            assert_eq!(b.verdicts[0], Action::Held);
            lab.rx(30 * SEC, DOCKER0, &[], 0);
            Seen::one(lab.drops())
        }
        R::FragmentOverlap => {
            // The second fragment overlaps the first: both frames go.
            let mut lab = Lab::new(TRACKED);
            let first = fragment(DNS, 1, 0, 16, true);
            let overlapping = fragment(DNS, 1, 8, 16, true);
            lab.rx(0, DOCKER0, &[first, overlapping], 2);
            assert_eq!(lab.p.reassembling(), 0);
            Seen::n(2, lab.drops())
        }
        R::FragmentDuplicate => {
            let mut lab = Lab::new(TRACKED);
            let f = fragment(DNS, 1, 0, 16, true);
            lab.rx(0, DOCKER0, &[f.clone(), f], 2);
            assert_eq!(lab.p.reassembling(), 1, "the first copy waits");
            Seen::one(lab.drops())
        }
        R::FragmentTooLong => {
            // The last fragment would end past 65535 bytes.
            let mut lab = Lab::new(TRACKED);
            lab.rx(0, DOCKER0, &[fragment(DNS, 1, 65528, 16, false)], 1);
            Seen::one(lab.drops())
        }
        R::FragmentEvicted => {
            // One datagram more than the reassembly table holds: the oldest goes.
            let max = fastables_dataplane::pipeline::reasm::MAX_DATAGRAMS as u16;
            let frames: Vec<_> = (0..=max).map(|id| fragment(DNS, id, 0, 16, true)).collect();
            let mut lab = Lab::new(TRACKED);
            lab.rx(0, DOCKER0, &frames, 0);
            assert_eq!(lab.p.reassembling(), usize::from(max));
            Seen::one(lab.drops())
        }
        R::BadL4Checksum => {
            let mut f = udp_from_host(DOCKER0_IP);
            let at = f.len() - 1;
            f[at] ^= 0xff;
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[f], 1);
            assert!(b.generated.is_empty(), "no answer to a bad checksum");
            Seen::one(lab.drops())
        }
        R::NoSocket => {
            // UDP to us: port unreachable; TCP to us: RST; protocol 99: protocol unreachable.
            let tcp = builder::tcp_frame(
                &from_host(),
                &ip(HOST, DOCKER0_IP),
                &TcpSpec::default(),
                b"",
            );
            let other = builder::ipv4_frame(&from_host(), &ip(HOST, DOCKER0_IP), 99, b"x");
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[udp_from_host(DOCKER0_IP), tcp, other], 3);
            assert_eq!(b.generated.len(), 3);
            Seen::n(3, lab.drops())
        }
        R::NeighborUnresolved => {
            // Held for a neighbor that never answers: three ARP requests a
            // second apart, then given up with a host unreachable.
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &[udp_from_host(SILENT)], 1);
            assert_eq!(b.verdicts[0], Action::Held);
            for t in 1..=3 {
                lab.service(t * SEC, 1);
            }
            assert_eq!(lab.p.held(), 0);
            Seen::one(lab.drops())
        }
        R::NeighborHoldFull => {
            // One frame more than a neighbor's hold queue; each held frame
            // after the first asks for an ARP request within the second.
            let n = fastables_dataplane::neigh::HOLD_PER_NEIGHBOR + 1;
            let frames = vec![udp_from_host(SILENT); n];
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &frames, n);
            Seen::one(lab.drops()).with(&[(R::ArpSolicitLimited, 32)])
        }
        R::ArpSolicitLimited => {
            let mut lab = Lab::new(ACCEPT_ALL);
            let f = udp_from_host(SILENT);
            let b = lab.rx(0, DOCKER0, &[f.clone(), f], 2);
            assert_eq!(b.generated.len(), 1, "one ARP request");
            Seen::one(lab.drops())
        }
        R::NoBuffer => {
            // Two fragments to send (no DF, larger than eth0's MTU), no spare buffer.
            let f = too_big();
            let mut lab = Lab::new(ACCEPT_ALL);
            lab.rx(0, DOCKER0, &[f], 0);
            Seen::one(lab.drops())
        }
        R::TxRingFull => {
            let mut port = MemPort::new(4, 8);
            port.tx_room = 0;
            port.rx[usize::from(DOCKER0)].push_back(udp_from_host(DNS));
            let mut w = Worker::new(pipeline(ACCEPT_ALL, ""), 4);
            w.poll(&mut port);
            assert_eq!(port.free.len(), 8, "no buffer leaked");
            Seen::one(w.pipeline().drops().snapshot())
        }
        R::IcmpRateLimited => {
            // icmp_ratelimit towards one host: a burst of 6 errors, the 7th suppressed.
            let f = ttl_1();
            let mut lab = Lab::new(ACCEPT_ALL);
            let b = lab.rx(0, DOCKER0, &vec![f; 7], 7);
            assert_eq!(b.generated.len(), 6);
            Seen::one(lab.drops()).with(&[(R::TtlExpired, 7)])
        }
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP segment between the host's port `port` and 8.8.8.8:80, in
/// `dir`ection, without payload.
fn tcp(dir: Dir, port: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let (e, ip, src_port, dst_port) = match dir {
        Dir::Out => (from_host(), ip(HOST, DNS), port, 80),
        Dir::Back => (eth(GW_MAC, ETH0_MAC), ip(DNS, HOST), 80, port),
    };
    let spec = TcpSpec {
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        ..TcpSpec::default()
    };
    builder::tcp_frame(&e, &ip, &spec, b"")
}

#[derive(Clone, Copy)]
enum Dir {
    /// From the host, to forward out of eth0.
    Out,
    /// The reply, in from eth0.
    Back,
}

/// SYN, SYN/ACK, ACK from the host's port `sport` to 8.8.8.8:80 at 0 s:
/// the connection is ESTABLISHED and ASSURED.
fn tcp_handshake(lab: &mut Lab, sport: u16) {
    let fwd = |b: Batch| assert!(matches!(b.verdicts[0], Action::Forward { .. }));
    fwd(lab.rx(0, DOCKER0, &[tcp(Dir::Out, sport, 100, 0, SYN)], 1));
    fwd(lab.rx(0, ETH0, &[tcp(Dir::Back, sport, 900, 101, SYN | ACK)], 1));
    fwd(lab.rx(0, DOCKER0, &[tcp(Dir::Out, sport, 101, 901, ACK)], 1));
}

#[test]
fn every_drop_reason_is_counted() {
    let mut failures = Vec::new();
    for &r in DropReason::ALL {
        let seen = scenario(r);
        let mut want = vec![(r, seen.count)];
        want.extend_from_slice(seen.side);
        for (reason, got) in seen.drops {
            let expected = want
                .iter()
                .find(|(w, _)| *w == reason)
                .map_or(0, |(_, n)| *n);
            if got != expected {
                let nonzero: Vec<String> = seen
                    .drops
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(x, n)| format!("{}={n}", x.name()))
                    .collect();
                failures.push(format!(
                    "scenario {}: {} expected {expected}, got {got} (nonzero: {})",
                    r.name(),
                    reason.name(),
                    nonzero.join(" ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The pipeline totals by name (a new field does not compile until it is named here).
fn totals(c: &PipelineCounters) -> [(&'static str, u64); 5] {
    let PipelineCounters {
        rx,
        forwarded,
        consumed,
        dropped,
        generated,
    } = c;
    [
        ("rx", rx),
        ("forwarded", forwarded),
        ("consumed", consumed),
        ("dropped", dropped),
        ("generated", generated),
    ]
    .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
}

#[test]
fn pipeline_totals_are_exact() {
    let mut lab = Lab::new(ACCEPT_ALL);
    let ping = builder::icmp_echo_request(&from_host(), &ip(HOST, DOCKER0_IP), 1, 1, b"ping");
    let expired = ttl_1();
    let big = too_big();
    let igmp = builder::ipv4_frame(
        &from_host(),
        &ip(HOST, DOCKER0_IP),
        2,
        &[0x11, 0, 0xee, 0xff, 0, 0, 0, 0],
    );
    let frames = [
        udp_from_host(DNS),
        udp_from_host(DNS),
        ping,
        igmp,
        expired,
        big,
        udp_from_host(SILENT),
    ];
    let b = lab.rx(0, DOCKER0, &frames, 8);
    // Forwarded: 2 datagrams + the first fragment of `big` (its second
    // fragment is generated); consumed: the ping (answered) and IGMP;
    // dropped: the TTL 1 datagram; held: the one for the silent neighbor.
    // Generated: the echo reply, the time exceeded, the second fragment
    // and the ARP request.
    assert_eq!(b.generated.len(), 4);
    let want = [
        ("rx", 7),
        ("forwarded", 3),
        ("consumed", 2),
        ("dropped", 1),
        ("generated", 4),
    ];
    assert_eq!(totals(lab.p.counters()), want);
    assert_eq!(lab.p.held(), 1);
    // The neighbor never answers: two more ARP requests, then the held
    // frame is dropped with a host unreachable.
    for t in 1..=3 {
        lab.service(t * SEC, 1);
    }
    let want = [
        ("rx", 7),
        ("forwarded", 3),
        ("consumed", 2),
        ("dropped", 2),
        ("generated", 7),
    ];
    assert_eq!(totals(lab.p.counters()), want);
    assert_eq!(lab.p.drops().total(), 2);
    for (name, n) in totals(lab.p.counters()) {
        assert!(n > 0, "{name} is never counted");
    }
}

#[test]
fn worker_stats_are_exact() {
    // Three datagrams to forward and one with TTL 1 (a time exceeded to
    // send back) through a port whose TX ring takes three frames: eth0 is
    // served first, docker0's ICMP error finds the ring full.
    let mut port = MemPort::new(4, 16);
    port.tx_room = 3;
    let q = &mut port.rx[usize::from(DOCKER0)];
    q.extend(std::iter::repeat_n(udp_from_host(DNS), 3));
    q.push_back(ttl_1());
    let mut w = Worker::new(pipeline(ACCEPT_ALL, ""), 8);
    assert_eq!(w.poll(&mut port), 4);
    let WorkerStats { rx, tx, tx_full } = w.stats();
    assert_eq!((rx, tx, tx_full), (4, 3, 1));
    assert_eq!(port.tx.iter().filter(|(p, _)| *p == ETH0).count(), 3);
    assert_eq!(w.pipeline().drops().get(DropReason::TxRingFull), 1);
    assert_eq!(port.free.len(), 16, "no buffer leaked");
    let want = [
        ("rx", 4),
        ("forwarded", 3),
        ("consumed", 0),
        ("dropped", 1),
        ("generated", 1),
    ];
    assert_eq!(totals(w.pipeline().counters()), want);
}

#[test]
fn reassembled_datagrams_count_every_frame() {
    // A datagram in two fragments, forwarded whole; another dropped whole by
    // a rule: each frame is counted, as a frame that needs no reassembly.
    let mut lab = Lab::new(&filter(
        "-A FORWARD -d 8.9.9.9 -j DROP\n-A FORWARD -m state --state INVALID -j ACCEPT\n",
    ));
    let frames = [
        fragment(DNS, 1, 0, 16, true),
        fragment(DNS, 1, 16, 16, false),
        fragment("8.9.9.9", 2, 0, 16, true),
        fragment("8.9.9.9", 2, 16, 16, false),
    ];
    let b = lab.rx(0, DOCKER0, &frames, 2);
    assert_eq!(b.generated.len(), 2, "the first datagram's fragments");
    let want = [
        ("rx", 4),
        ("forwarded", 2),
        ("consumed", 0),
        ("dropped", 2),
        ("generated", 0),
    ];
    assert_eq!(totals(lab.p.counters()), want);
    assert_eq!(lab.p.drops().get(DropReason::FilterDrop), 2);
}

/// The conntrack statistics by name (a new field does not compile until it is named here).
fn ct_fields(s: Stats) -> [(&'static str, u64); 11] {
    let Stats {
        found,
        invalid,
        insert,
        insert_failed,
        drop,
        early_drop,
        error,
        search_restart,
        clash_resolve,
        chaintoolong,
        expired,
    } = s;
    [
        ("found", found),
        ("invalid", invalid),
        ("insert", insert),
        ("insert_failed", insert_failed),
        ("drop", drop),
        ("early_drop", early_drop),
        ("error", error),
        ("search_restart", search_restart),
        ("clash_resolve", clash_resolve),
        ("chaintoolong", chaintoolong),
        ("expired", expired),
    ]
}

/// Kernel counters that cannot move here (documented in `Stats`).
const CT_NEVER: [&str; 2] = ["search_restart", "clash_resolve"];

fn ct_stats(lab: &Lab) -> Stats {
    lab.p.conntrack().expect("conntrack loaded").stats()
}

/// A UDP flow from the host's port `sport` to 8.8.8.8:53.
fn udp_flow(sport: u16) -> Vec<u8> {
    builder::udp_frame(
        &from_host(),
        &ip(HOST, DNS),
        &UdpSpec {
            src_port: sport,
            dst_port: 53,
        },
        b"x",
    )
}

#[test]
fn conntrack_stats_are_exact() {
    let snat = nat("-A POSTROUTING -o eth0 -p udp -j SNAT --to-source 10.0.2.15:5000\n");
    // Room for 3 entries, all in one bucket (eviction looks at one chain).
    let mut a = Lab::with_config(
        &format!("{snat}{TRACKED}"),
        "\n[conntrack]\nmax = 3\nbuckets = 1\n",
    );
    // An assured TCP connection: one insert.
    tcp_handshake(&mut a, 40000);
    // A UDP flow SNATed to 10.0.2.15:5000 (insert), and one from another
    // host: the only tuple the range allows is taken (found), the insert
    // clashes and nf_ct_resolve_clash drops the packet (insert_failed, drop).
    a.rx(0, DOCKER0, &[udp_from_host(DNS)], 1);
    let second = udp(&eth(HOST3_MAC, DOCKER0_MAC), &ip("172.18.0.3", DNS), b"x");
    a.rx(0, DOCKER0, &[second], 1);
    // A SYN/FIN (invalid); an ICMP error about no connection (error).
    a.rx(0, DOCKER0, &[tcp(Dir::Out, 40001, 1, 0, SYN | 0x01)], 1);
    let about = udp(&eth(DOCKER0_MAC, HOST_MAC), &ip(DNS, "172.18.0.9"), b"x");
    let stray = builder::icmp_error(&from_host(), &ip(HOST, DNS), 11, 0, 0, &about);
    a.rx(0, DOCKER0, &[stray], 1);
    // A third connection fills the table; a fourth evicts every unassured
    // entry of the chain (the UDP flow and the third: early_drop 2) and
    // is inserted.
    a.rx(SEC, DOCKER0, &[tcp(Dir::Out, 40002, 1, 0, SYN)], 1);
    a.rx(SEC, DOCKER0, &[tcp(Dir::Out, 40003, 1, 0, SYN)], 1);
    // Its SYN_SENT timeout (120 s) runs out.
    a.rx(122 * SEC, DOCKER0, &[], 0);
    let sa = ct_stats(&a);
    assert_eq!(
        sa,
        Stats {
            found: 1,
            invalid: 1,
            insert: 4,
            insert_failed: 1,
            drop: 1,
            early_drop: 2,
            error: 1,
            search_restart: 0,
            clash_resolve: 0,
            chaintoolong: 0,
            expired: 1,
        }
    );
    assert_eq!(a.p.conntrack().unwrap().len(), 1);

    // A table of one, held by an assured connection: a new one is dropped.
    let mut b = Lab::with_config(TRACKED, "\n[conntrack]\nmax = 1\nbuckets = 1\n");
    tcp_handshake(&mut b, 40000);
    b.rx(SEC, DOCKER0, &[tcp(Dir::Out, 40001, 1, 0, SYN)], 1);
    let sb = ct_stats(&b);
    assert_eq!(
        sb,
        Stats {
            found: 0,
            invalid: 0,
            insert: 1,
            insert_failed: 0,
            drop: 1,
            early_drop: 0,
            error: 0,
            search_restart: 0,
            clash_resolve: 0,
            chaintoolong: 0,
            expired: 0,
        }
    );

    // One bucket: each connection puts both its tuples in the chain; with
    // 33 of them (66 links, more than max_chainlen 64) the 34th is refused.
    let mut c = Lab::with_config(TRACKED, "\n[conntrack]\nbuckets = 1\n");
    let flows: Vec<_> = (0..34).map(|i| udp_flow(20000 + i)).collect();
    c.rx(0, DOCKER0, &flows, 0);
    let sc = ct_stats(&c);
    assert_eq!(
        sc,
        Stats {
            found: 0,
            invalid: 0,
            insert: 33,
            insert_failed: 1,
            drop: 0,
            early_drop: 0,
            error: 0,
            search_restart: 0,
            clash_resolve: 0,
            chaintoolong: 1,
            expired: 0,
        }
    );
    assert_eq!(c.p.drops().get(DropReason::ConntrackInsertFailed), 1);

    let (fa, fb, fc) = (ct_fields(sa), ct_fields(sb), ct_fields(sc));
    let dead: Vec<&str> = fa
        .iter()
        .zip(fb.iter().zip(fc.iter()))
        .filter(|((n, x), ((_, y), (_, z)))| x + y + z == 0 && !CT_NEVER.contains(n))
        .map(|((n, _), _)| *n)
        .collect();
    assert!(dead.is_empty(), "never counted: {dead:?}");
}

/// The ARP counters by name (a new field does not compile until it is named here).
fn arp_fields(c: fastables_dataplane::neigh::ArpCounters) -> [(&'static str, u64); 4] {
    let fastables_dataplane::neigh::ArpCounters {
        received,
        replies_sent,
        requests_sent,
        learned,
    } = c;
    [
        ("received", received),
        ("replies_sent", replies_sent),
        ("requests_sent", requests_sent),
        ("learned", learned),
    ]
}

#[test]
fn arp_counters_are_exact() {
    const LAN2: IfIndex = 2;
    const LAN2_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x13, 0x00, 0x01]);
    let mut lab = Lab::new(ACCEPT_ALL);
    // A request for our address from a host we do not know yet: answered,
    // and its sender learned.
    let ask = builder::arp_request(
        HOST3_MAC,
        "172.18.0.3".parse().unwrap(),
        DOCKER0_IP.parse().unwrap(),
    );
    let b = lab.rx(0, DOCKER0, &[ask], 1);
    assert_eq!(b.generated.len(), 1, "the reply");
    // A datagram for 192.168.5.7 on lan2: held, one request out; the
    // neighbor's reply is learned and releases it.
    let b = lab.rx(SEC, DOCKER0, &[udp_from_host("192.168.5.7")], 1);
    assert_eq!(b.verdicts[0], Action::Held);
    assert_eq!(b.generated.len(), 1, "the request");
    let answer = builder::arp_reply(
        MacAddr([0x02, 0, 0, 0, 0x05, 0x07]),
        "192.168.5.7".parse().unwrap(),
        LAN2_MAC,
        "192.168.5.1".parse().unwrap(),
    );
    lab.rx(2 * SEC, LAN2, &[answer], 1);
    assert_eq!(lab.p.held(), 0);
    let want = [
        ("received", 2),
        ("replies_sent", 1),
        ("requests_sent", 1),
        ("learned", 2),
    ];
    assert_eq!(arp_fields(lab.p.arp_counters()), want);
    // A silent neighbor: the request and its two retries, then given up.
    lab.rx(3 * SEC, DOCKER0, &[udp_from_host(SILENT)], 1);
    for t in 4..=6 {
        lab.service(t * SEC, 1);
    }
    assert_eq!(arp_fields(lab.p.arp_counters())[2], ("requests_sent", 4));
}
