//! Tracker, table and NAT behaviour with virtual time (no sleeping).

use fastables_conntrack::tcp_hdr::{ACK, FIN, RST, SYN};
use fastables_conntrack::{
    status, CtState, Dir, EntryId, Events, InsertError, NatRange, PacketFacts, Table, TableConfig,
    TcpState, Track, Tracked, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

const S: u64 = 1_000_000_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

fn table_with(f: impl FnOnce(&mut TableConfig)) -> Table {
    let mut c = TableConfig {
        max: 4096,
        buckets: 4096,
        seed: 7,
        ..Default::default()
    };
    f(&mut c);
    Table::new(c).unwrap()
}

fn table() -> Table {
    table_with(|_| {})
}

const CLI: u32 = 0x0a00_0002; // 10.0.0.2
const SRV: u32 = 0x0808_0808; // 8.8.8.8

#[allow(clippy::too_many_arguments)]
fn seg(
    from_client: bool,
    flags: u8,
    seq: u32,
    ack: u32,
    win: u16,
    len: u32,
) -> PacketFacts<'static> {
    if from_client {
        PacketFacts::tcp(CLI, 40000, SRV, 80, flags, seq, ack, win, len, &[])
    } else {
        PacketFacts::tcp(SRV, 80, CLI, 40000, flags, seq, ack, win, len, &[])
    }
}

fn new_conn(t: &mut Table, p: &PacketFacts, now: u64) -> EntryId {
    match t.track(p, now) {
        Track::New(n) => t.confirm(n, None, None, now).unwrap(),
        other => panic!("expected NEW, got {other:?}"),
    }
}

fn tracked(t: &mut Table, p: &PacketFacts, now: u64) -> Tracked {
    match t.track(p, now) {
        Track::Tracked(x) => x,
        other => panic!("expected a tracked packet, got {other:?}"),
    }
}

fn state(t: &Table, id: EntryId) -> TcpState {
    t.entry(id).unwrap().tcp_state().unwrap()
}

fn secs_left(t: &Table, id: EntryId, now: u64) -> u64 {
    t.entry(id).unwrap().expires_in(now) / S
}

/// SYN, SYN/ACK, ACK: client ISN 1000, server ISN 5000.
fn handshake(t: &mut Table, now: u64) -> EntryId {
    let id = new_conn(t, &seg(true, SYN, 1000, 0, 64240, 0), now);
    assert_eq!(state(t, id), TcpState::SynSent);
    assert_eq!(secs_left(t, id, now), 120);
    let r = tracked(t, &seg(false, SYN | ACK, 5000, 1001, 65160, 0), now);
    assert_eq!((r.dir, r.state), (Dir::Reply, CtState::Established));
    assert_eq!(
        r.events.0 & (Events::REPLY | Events::PROTOINFO),
        Events::REPLY | Events::PROTOINFO
    );
    assert_eq!(state(t, id), TcpState::SynRecv);
    assert_eq!(secs_left(t, id, now), 60);
    let a = tracked(t, &seg(true, ACK, 1001, 5001, 502, 0), now);
    assert_eq!(a.state, CtState::Established);
    assert!(a.events.0 & Events::ASSURED != 0);
    assert_eq!(state(t, id), TcpState::Established);
    assert!(t
        .entry(id)
        .unwrap()
        .has(status::ASSURED | status::SEEN_REPLY));
    assert_eq!(secs_left(t, id, now), 432_000);
    id
}

#[test]
fn tcp_open_and_close_lifecycle() {
    let mut t = table();
    let id = handshake(&mut t, 0);
    // Data leaves unacknowledged data: the shorter UNACK timeout applies until ACKed.
    tracked(&mut t, &seg(true, ACK, 1001, 5001, 502, 100), S);
    assert_eq!(secs_left(&t, id, S), 300);
    tracked(&mut t, &seg(false, ACK, 5001, 1101, 509, 0), S);
    assert_eq!(secs_left(&t, id, S), 432_000);
    // Client closes.
    tracked(&mut t, &seg(true, FIN | ACK, 1101, 5001, 502, 0), 2 * S);
    assert_eq!(state(&t, id), TcpState::FinWait);
    assert_eq!(secs_left(&t, id, 2 * S), 120);
    tracked(&mut t, &seg(false, ACK, 5001, 1102, 509, 0), 2 * S);
    assert_eq!(state(&t, id), TcpState::CloseWait);
    tracked(&mut t, &seg(false, FIN | ACK, 5001, 1102, 509, 0), 2 * S);
    assert_eq!(state(&t, id), TcpState::LastAck);
    assert_eq!(secs_left(&t, id, 2 * S), 30);
    tracked(&mut t, &seg(true, ACK, 1102, 5002, 502, 0), 2 * S);
    assert_eq!(state(&t, id), TcpState::TimeWait);
    assert_eq!(secs_left(&t, id, 2 * S), 120);
    // Virtual time: nothing expires early, everything on time.
    assert_eq!(t.expire(121 * S, 1000), 0);
    let mut destroyed = Vec::new();
    assert_eq!(t.expire_with(122 * S, 1000, |_, e| destroyed.push(*e)), 1);
    assert_eq!(destroyed.len(), 1);
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 1);
}

#[test]
fn syn_after_time_wait_reopens_as_new() {
    let mut t = table();
    let id = handshake(&mut t, 0);
    tracked(&mut t, &seg(true, FIN | ACK, 1001, 5001, 502, 0), S);
    tracked(&mut t, &seg(false, ACK, 5001, 1002, 509, 0), S);
    tracked(&mut t, &seg(false, FIN | ACK, 5001, 1002, 509, 0), S);
    tracked(&mut t, &seg(true, ACK, 1002, 5002, 502, 0), S);
    assert_eq!(state(&t, id), TcpState::TimeWait);
    // A new SYN on the same ports: the old entry is killed and the packet is NEW.
    match t.track(&seg(true, SYN, 90_000, 0, 64240, 0), 2 * S) {
        Track::New(n) => assert_eq!(n.entry.tcp_state(), Some(TcpState::SynSent)),
        other => panic!("{other:?}"),
    }
    assert!(t.entry(id).is_none());
}

#[test]
fn exact_rst_closes() {
    let mut t = table();
    let id = handshake(&mut t, 0);
    // RST from the server with seq == the client's highest ACK (5001).
    let r = tracked(&mut t, &seg(false, RST, 5001, 0, 0, 0), S);
    assert_eq!(r.state, CtState::Established);
    assert_eq!(state(&t, id), TcpState::Close);
    assert_eq!(secs_left(&t, id, S), 10);
}

#[test]
fn out_of_window_rst_is_invalid_and_does_not_close() {
    let mut t = table();
    let id = handshake(&mut t, 0);
    // seq below what the client already acknowledged: invalid RST.
    assert_eq!(t.track(&seg(false, RST, 4000, 0, 0, 0), S), Track::Invalid);
    assert_eq!(state(&t, id), TcpState::Established);
    assert_eq!(secs_left(&t, id, S), 432_000 - 1);
    assert_eq!(t.stats().invalid, 1);
    // In window but not exact: the kernel keeps ESTABLISHED (awaiting a
    // challenge ACK) and only shortens the timeout to CLOSE's 10 s.
    tracked(&mut t, &seg(false, RST, 5300, 0, 0, 0), S);
    assert_eq!(state(&t, id), TcpState::Established);
    assert_eq!(secs_left(&t, id, S), 10);
    // The RST moved the server's td_end to 5300, so an ACK of 5001 leaves
    // "unacknowledged data": the kernel applies the 300 s UNACK timeout.
    tracked(&mut t, &seg(true, ACK, 1001, 5001, 502, 0), 2 * S);
    assert_eq!(state(&t, id), TcpState::Established);
    assert_eq!(secs_left(&t, id, 2 * S), 300);
}

#[test]
fn rst_before_any_reply_kills_the_entry() {
    let mut t = table();
    let id = new_conn(&mut t, &seg(true, SYN, 1000, 0, 64240, 0), 0);
    match t.track(&seg(false, RST | ACK, 0, 1001, 0, 0), S) {
        Track::Killed { entry, dir, state } => {
            assert_eq!((dir, state), (Dir::Reply, CtState::Established));
            assert_eq!(entry.tcp_state(), Some(TcpState::Close));
        }
        other => panic!("{other:?}"),
    }
    assert!(t.entry(id).is_none());
    assert!(t.is_empty());
}

#[test]
fn out_of_window_data_invalid_unless_liberal() {
    for liberal in [false, true] {
        let mut t = table_with(|c| c.tcp_be_liberal = liberal);
        let id = handshake(&mut t, 0);
        // ACK for data the server never sent.
        let p = seg(true, ACK, 1001, 900_000, 502, 0);
        let got = t.track(&p, S);
        if liberal {
            assert!(matches!(got, Track::Tracked(_)), "{got:?}");
        } else {
            assert_eq!(got, Track::Invalid);
        }
        assert_eq!(state(&t, id), TcpState::Established);
    }
}

#[test]
fn window_scale_from_syn_options() {
    let mut t = table();
    let wscale7 = [1u8, 3, 3, 7];
    let syn = PacketFacts::tcp(CLI, 40000, SRV, 80, SYN, 1000, 0, 64240, 0, &wscale7);
    let id = new_conn(&mut t, &syn, 0);
    let synack = PacketFacts::tcp(
        SRV,
        80,
        CLI,
        40000,
        SYN | ACK,
        5000,
        1001,
        65160,
        0,
        &wscale7,
    );
    tracked(&mut t, &synack, 0);
    let tcp = *t.entry(id).unwrap().tcp().unwrap();
    assert_eq!((tcp.seen[0].td_scale, tcp.seen[1].td_scale), (7, 7));
    // Only one side offering scaling disables it (RFC 1323).
    let mut t = table();
    let id = new_conn(&mut t, &syn, 0);
    tracked(&mut t, &seg(false, SYN | ACK, 5000, 1001, 65160, 0), 0);
    let tcp = *t.entry(id).unwrap().tcp().unwrap();
    assert_eq!((tcp.seen[0].td_scale, tcp.seen[1].td_scale), (0, 0));
}

#[test]
fn loose_pickup_of_established_flow() {
    let mut t = table();
    let p = seg(true, ACK, 1000, 5000, 1000, 10);
    let n = match t.track(&p, 0) {
        Track::New(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(n.entry.tcp_state(), Some(TcpState::Established));
    let id = t.confirm(n, None, None, 0).unwrap();
    // ESTABLISHED without a reply gets the UNACK timeout, not 5 days.
    assert_eq!(secs_left(&t, id, 0), 300);
    tracked(&mut t, &seg(false, ACK, 5000, 1010, 1000, 0), S);
    assert!(!t.entry(id).unwrap().has(status::ASSURED));
    let r = tracked(&mut t, &seg(true, ACK, 1010, 5000, 1000, 0), 2 * S);
    assert!(r.events.0 & Events::ASSURED != 0);
    assert!(t.entry(id).unwrap().has(status::ASSURED));

    let mut strict = table_with(|c| c.tcp_loose = false);
    assert_eq!(strict.track(&p, 0), Track::Invalid);
    // FIN without a connection is never picked up.
    assert_eq!(
        table().track(&seg(true, FIN | ACK, 1, 1, 1, 0), 0),
        Track::Invalid
    );
}

#[test]
fn udp_unreplied_replied_and_stream() {
    let mut t = table();
    let q = PacketFacts::udp(CLI, 33894, SRV, 53, 30);
    let id = new_conn(&mut t, &q, 0);
    assert_eq!(secs_left(&t, id, 0), 30);
    assert!(!t.entry(id).unwrap().has(status::SEEN_REPLY));
    let r = tracked(&mut t, &PacketFacts::udp(SRV, 53, CLI, 33894, 60), S / 10);
    assert_eq!((r.dir, r.state), (Dir::Reply, CtState::Established));
    assert!(t.entry(id).unwrap().has(status::SEEN_REPLY));
    assert!(!t.entry(id).unwrap().has(status::ASSURED));
    assert_eq!(secs_left(&t, id, S / 10), 30);
    // Still active after two seconds: a stream, ASSURED, 120 s.
    let s = tracked(&mut t, &q, 3 * S);
    assert!(s.events.0 & Events::ASSURED != 0);
    assert_eq!(secs_left(&t, id, 3 * S), 120);
    // Malformed length is invalid.
    let mut bad = q;
    bad.udp_len = 4;
    assert_eq!(t.track(&bad, 3 * S), Track::Invalid);
}

#[test]
fn icmp_echo_and_related_errors() {
    let mut t = table();
    let req = PacketFacts::icmp(CLI, SRV, 8, 0, 77);
    let id = new_conn(&mut t, &req, 0);
    assert_eq!(secs_left(&t, id, 0), 30);
    let rep = PacketFacts::icmp(SRV, CLI, 0, 0, 77);
    let r = tracked(&mut t, &rep, S);
    assert_eq!((r.dir, r.state), (Dir::Reply, CtState::Established));
    // An echo reply nobody asked for is INVALID.
    assert_eq!(
        t.track(&PacketFacts::icmp(SRV, CLI, 0, 0, 78), S),
        Track::Invalid
    );
    // Unknown type: error counter.
    assert_eq!(
        t.track(&PacketFacts::icmp(SRV, CLI, 42, 0, 0), S),
        Track::Invalid
    );
    assert_eq!(t.stats().error, 1);

    // Port unreachable about a UDP flow, sent back to the client: RELATED.
    let udp = new_conn(&mut t, &PacketFacts::udp(CLI, 5000, SRV, 9, 1), S);
    let inner = Tuple::new(IPPROTO_UDP, CLI, 5000, SRV, 9);
    match t.track(&PacketFacts::icmp_error(SRV, CLI, 3, 3, Some(inner)), S) {
        Track::Related { id, dir } => {
            assert_eq!(id, udp);
            assert_eq!(dir, Dir::Reply);
        }
        other => panic!("{other:?}"),
    }
    // Wrong outer destination, or no such connection: INVALID and counted.
    assert_eq!(
        t.track(
            &PacketFacts::icmp_error(SRV, ip(9, 9, 9, 9), 3, 3, Some(inner)),
            S
        ),
        Track::Invalid
    );
    let other = Tuple::new(IPPROTO_UDP, CLI, 5001, SRV, 9);
    assert_eq!(
        t.track(&PacketFacts::icmp_error(SRV, CLI, 3, 3, Some(other)), S),
        Track::Invalid
    );
    assert_eq!(t.stats().error, 3);
}

#[test]
fn incremental_expiry_has_bounded_work() {
    let mut t = table();
    for i in 0..1000u32 {
        let o = Tuple::new(IPPROTO_UDP, CLI, 1000 + i as u16, SRV, 53);
        t.insert(o, o.invert().unwrap(), 0).unwrap();
    }
    assert_eq!(t.len(), 1000);
    assert_eq!(t.expire(29 * S, 5000), 0, "nothing before the timeout");
    let mut calls = 0;
    let mut total = 0;
    while !t.is_empty() {
        let n = t.expire(31 * S, 100);
        assert!(n <= 100);
        total += n;
        calls += 1;
        assert!(calls < 100);
    }
    assert_eq!((total, calls), (1000, 10));
    assert_eq!(t.stats().expired, 1000);
}

#[test]
fn expired_entries_are_not_found() {
    let mut t = table();
    let o = Tuple::new(IPPROTO_UDP, CLI, 1, SRV, 53);
    t.insert(o, o.invert().unwrap(), 0).unwrap();
    assert!(t.lookup(&o, 29 * S).is_some());
    assert!(
        t.lookup(&o, 30 * S).is_none(),
        "expired at exactly the timeout"
    );
    // A new packet on the tuple replaces the expired entry.
    let id = new_conn(&mut t, &PacketFacts::udp(CLI, 1, SRV, 53, 0), 31 * S);
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(&o, 31 * S).unwrap().0, id);
}

#[test]
fn full_table_early_drops_unassured_then_refuses_and_logs_once_a_second() {
    let mut t = table_with(|c| {
        c.max = 8;
        c.buckets = 4;
    });
    for i in 0..8u16 {
        new_conn(&mut t, &PacketFacts::udp(CLI, 1000 + i, SRV, 53, 0), 0);
    }
    assert_eq!(t.len(), 8);
    // Full: a new connection evicts the unassured entries of a nearby bucket.
    let id = new_conn(&mut t, &PacketFacts::udp(CLI, 2000, SRV, 53, 0), 0);
    assert!(t.stats().early_drop >= 1);
    assert!(t.entry(id).is_some());
    assert!(t.len() <= 8);
    // Fill up again and make everything ASSURED: nothing may go.
    let mut port = 3000;
    while t.len() < 8 {
        new_conn(&mut t, &PacketFacts::udp(CLI, port, SRV, 53, 0), 0);
        port += 1;
    }
    let ids: Vec<EntryId> = t.iter().map(|(id, _)| id).collect();
    for id in ids {
        t.entry_mut(id).unwrap().status |= status::ASSURED;
    }
    let drops = t.stats().early_drop;
    let p = PacketFacts::udp(CLI, 9000, SRV, 53, 0);
    assert_eq!(
        t.track(&p, S),
        Track::Drop {
            log: Some(fastables_conntrack::TableFullLog { suppressed: 0 })
        }
    );
    assert_eq!(t.track(&p, S + 1), Track::Drop { log: None });
    assert_eq!(t.track(&p, S + 2), Track::Drop { log: None });
    assert_eq!(
        t.track(&p, 2 * S + 5),
        Track::Drop {
            log: Some(fastables_conntrack::TableFullLog { suppressed: 2 })
        }
    );
    assert_eq!(t.stats().drop, 4);
    assert_eq!(t.stats().early_drop, drops);
    // Established connections continue.
    let first = t.iter().next().map(|(_, e)| *e.orig()).unwrap();
    let p = PacketFacts::udp(first.src, first.sport, first.dst, first.dport, 0);
    assert!(matches!(t.track(&p, 2 * S), Track::Tracked(_)));
}

fn snat_flow(
    t: &mut Table,
    sport: u16,
    range: &NatRange,
    now: u64,
) -> Result<EntryId, InsertError> {
    match t.track(
        &PacketFacts::tcp(CLI, sport, SRV, 80, SYN, 1000, 0, 64240, 0, &[]),
        now,
    ) {
        Track::New(n) => t.confirm(n, None, Some(range), now),
        other => panic!("{other:?}"),
    }
}

#[test]
fn port_range_of_77_gives_77_unique_ports_and_counted_failures() {
    let nat = ip(10, 0, 2, 15);
    let range = NatRange::addrs(nat, nat).with_ports(55600, 55676);
    let mut t = table();
    let mut ports = std::collections::BTreeSet::new();
    let mut failed = 0;
    for i in 0..100u16 {
        match snat_flow(&mut t, 40000 + i, &range, 0) {
            Ok(id) => {
                let e = t.entry(id).unwrap();
                assert_eq!(e.reply().dst, nat);
                assert!(e.has(status::SRC_NAT | status::SRC_NAT_DONE));
                assert!(ports.insert(e.reply().dport), "duplicate port");
            }
            Err(InsertError::Clash(_)) => failed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ports.len(), 77);
    assert_eq!(
        (*ports.first().unwrap(), *ports.last().unwrap()),
        (55600, 55676)
    );
    assert_eq!(failed, 23);
    assert_eq!(t.stats().insert_failed, 23);
    // nf_ct_resolve_clash counts a clash that drops the packet under both.
    assert_eq!(t.stats().drop, 23);
    // After SYN_SENT's 120 s the ports come back.
    for i in 0..77u16 {
        snat_flow(&mut t, 50000 + i, &range, 121 * S).unwrap();
    }
    assert!(snat_flow(&mut t, 60000, &range, 121 * S).is_err());
    t.expire(121 * S, 10_000);
    assert_eq!(t.len(), 77);
}

#[test]
fn masquerade_keeps_port_and_reuses_source_mapping() {
    let nat = ip(10, 0, 2, 15);
    let mut t = table();
    // DNS: no port range, the source port is kept.
    let q = PacketFacts::udp(ip(172, 18, 0, 2), 33894, SRV, 53, 0);
    let n = match t.track(&q, 0) {
        Track::New(n) => n,
        o => panic!("{o:?}"),
    };
    let id = t
        .confirm(n, None, Some(&NatRange::addrs(nat, nat)), 0)
        .unwrap();
    let e = t.entry(id).unwrap();
    assert_eq!(*e.reply(), Tuple::new(IPPROTO_UDP, SRV, 53, nat, 33894));
    assert_eq!(
        e.nat_target(Dir::Original),
        Tuple::new(IPPROTO_UDP, nat, 33894, SRV, 53)
    );
    assert_eq!(
        e.nat_target(Dir::Reply),
        Tuple::new(IPPROTO_UDP, SRV, 53, ip(172, 18, 0, 2), 33894)
    );

    // HTTP with --to-ports: a port in range; a second connection from the same
    // source port to another server reuses the mapping (find_appropriate_src).
    let range = NatRange::addrs(nat, nat).with_ports(55666, 55680);
    let a = PacketFacts::tcp(ip(172, 18, 0, 2), 37622, SRV, 80, SYN, 1, 0, 1000, 0, &[]);
    let Track::New(n) = t.track(&a, 0) else {
        panic!()
    };
    let ida = t.confirm(n, None, Some(&range), 0).unwrap();
    let pa = t.entry(ida).unwrap().reply().dport;
    assert!((55666..=55680).contains(&pa));
    let b = PacketFacts::tcp(
        ip(172, 18, 0, 2),
        37622,
        ip(1, 1, 1, 1),
        80,
        SYN,
        1,
        0,
        1000,
        0,
        &[],
    );
    let Track::New(n) = t.track(&b, 0) else {
        panic!()
    };
    let idb = t.confirm(n, None, Some(&range), 0).unwrap();
    assert_eq!(t.entry(idb).unwrap().reply().dport, pa);
    assert_eq!(t.entry(idb).unwrap().reply().dst, nat);
}

#[test]
fn dnat_to_backend_and_reply_lookup() {
    let mut t = table();
    let backend = ip(192, 168, 0, 2);
    let pub_ip = ip(1, 2, 3, 56);
    let p = PacketFacts::tcp(CLI, 40000, pub_ip, 8088, SYN, 1, 0, 1000, 0, &[]);
    let Track::New(n) = t.track(&p, 0) else {
        panic!()
    };
    let range = NatRange::addrs(backend, backend).with_ports(80, 80);
    let id = t.confirm(n, Some(&range), None, 0).unwrap();
    let e = t.entry(id).unwrap();
    assert_eq!(*e.reply(), Tuple::new(IPPROTO_TCP, backend, 80, CLI, 40000));
    assert!(e.has(status::DST_NAT | status::DST_NAT_DONE));
    // The backend's SYN/ACK is found as the REPLY direction.
    let r = PacketFacts::tcp(backend, 80, CLI, 40000, SYN | ACK, 9, 2, 1000, 0, &[]);
    let x = tracked(&mut t, &r, 0);
    assert_eq!((x.id, x.dir), (id, Dir::Reply));
}

#[test]
fn reserved_ports_are_never_handed_out() {
    let nat = ip(10, 0, 2, 15);
    let mut t = table_with(|c| c.reserved_ports = vec![(1024, 1027)]);
    let range = NatRange::addrs(nat, nat).with_ports(1024, 1030);
    let mut got = Vec::new();
    for i in 0..10u16 {
        if let Ok(id) = snat_flow(&mut t, 40000 + i, &range, 0) {
            got.push(t.entry(id).unwrap().reply().dport);
        }
    }
    got.sort_unstable();
    assert_eq!(got, vec![1028, 1029, 1030]);
}

#[test]
fn icmp_echo_ids_are_translated_on_clash() {
    let nat = ip(10, 0, 2, 15);
    let mut t = table();
    let r = NatRange::addrs(nat, nat);
    let mut ids = Vec::new();
    for host in [2u8, 3] {
        let p = PacketFacts::icmp(ip(172, 18, 0, host), SRV, 8, 0, 1);
        let Track::New(n) = t.track(&p, 0) else {
            panic!()
        };
        let id = t.confirm(n, None, Some(&r), 0).unwrap();
        let e = t.entry(id).unwrap();
        assert_eq!(
            (e.reply().proto, e.reply().icmp_type(), e.reply().dst),
            (IPPROTO_ICMP, 0, nat)
        );
        ids.push(e.reply().icmp_id());
    }
    assert_eq!(ids[0], 1, "first ping keeps its id");
    assert_ne!(ids[1], 1, "second ping gets another id");
}

#[test]
fn same_seed_same_choices() {
    let nat = ip(10, 0, 2, 15);
    let range = NatRange::addrs(nat, nat)
        .with_ports(20000, 29999)
        .with_flags(NatRange::PROTO_RANDOM_FULLY);
    let run = |seed: u64| {
        let mut t = table_with(|c| c.seed = seed);
        (0..20u16)
            .map(|i| {
                let id = snat_flow(&mut t, 1000 + i, &range, 0).unwrap();
                t.entry(id).unwrap().reply().dport
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn memory_for_ten_million_entries_fits_two_gib() {
    let n = 100_000u32;
    let t = Table::new(TableConfig {
        max: n,
        buckets: n,
        ..Default::default()
    })
    .unwrap();
    let per_entry = t.reserved_bytes() as f64 / f64::from(n);
    let ten_million = per_entry * 10_000_000.0;
    println!(
        "bytes per entry (buckets = max): {per_entry:.1}; 10M entries: {:.2} GiB",
        ten_million / f64::from(1u32 << 30)
    );
    assert!(ten_million <= 2.0 * f64::from(1u32 << 30));
}

#[test]
fn config_errors_say_what_to_fix() {
    let e = Table::new(TableConfig {
        max: 0,
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "conntrack max 0 is out of range [1, 2147483647]"
    );
}

#[test]
fn reply_filter_restricts_source_nat_choices() {
    let nat = ip(10, 0, 2, 15);
    let mut t = table();
    // Only even reply destination ports are acceptable to this "worker".
    t.set_nat_reply_filter(Some(Box::new(|reply: &Tuple| reply.dport % 2 == 0)));
    let range = NatRange::addrs(nat, nat).with_ports(30000, 30009);
    let mut got = Vec::new();
    for i in 0..8u16 {
        if let Ok(id) = snat_flow(&mut t, 41001 + 2 * i, &range, 0) {
            got.push(t.entry(id).unwrap().reply().dport);
        }
    }
    got.sort_unstable();
    assert_eq!(got, vec![30000, 30002, 30004, 30006, 30008]);
}

#[test]
fn batched_lookups_find_what_single_lookups_find() {
    let mut t = table_with(|c| {
        c.max = 4096;
        c.buckets = 512;
    });
    let tuple = |i: u32| {
        fastables_conntrack::Tuple::new(
            fastables_conntrack::IPPROTO_UDP,
            ip(10, 0, (i >> 8) as u8, i as u8),
            1024 + i as u16,
            ip(8, 8, 8, 8),
            53,
        )
    };
    for i in 0..2000u32 {
        let o = tuple(i);
        t.insert(o, o.invert().unwrap(), 0).unwrap();
    }
    // Present (both directions), absent, in batches longer than one chunk.
    let mut probe = Vec::new();
    for i in (0..3000u32).step_by(7) {
        probe.push(tuple(i));
        probe.push(tuple(i).invert().unwrap());
    }
    let mut out = vec![None; probe.len()];
    t.lookup_batch(&probe, 1, &mut out);
    let mut found = 0;
    for (p, o) in probe.iter().zip(&out) {
        assert_eq!(*o, t.lookup(p, 1), "{p:?}");
        found += usize::from(o.is_some());
    }
    assert_eq!(found, 2 * (0..2000u32).step_by(7).count());
}

/// A table of 64 entries in 16 buckets (full and with long chains soon).
fn small_table() -> Table {
    table_with(|c| {
        c.max = 64;
        c.buckets = 16;
    })
}

/// A pseudo-random number below `n` per call (xorshift64 from `seed`).
fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

/// `track_hinted` with hints from one `lookup_batch` per group of packets
/// (as the pipeline takes them, stale once a packet of the group inserted or
/// removed an entry) classifies every packet as `track` does.
#[test]
fn hinted_tracking_matches_plain_tracking() {
    use fastables_conntrack::Hint;
    let (mut a, mut b) = (small_table(), small_table());
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1du64);
    let mut now = S;
    let mut fresh = 0;
    for _ in 0..400 {
        // A group of 8 packets of 12 flows, either direction, UDP and TCP.
        let group: Vec<PacketFacts<'static>> = (0..8)
            .map(|_| {
                let f = rnd(12) as u16;
                let (cli, srv) = (ip(10, 0, 0, 1 + (f % 3) as u8), ip(8, 8, 8, 8));
                let reply = rnd(3) == 0;
                let (s, sp, d, dp) = if reply {
                    (srv, 53, cli, 1000 + f)
                } else {
                    (cli, 1000 + f, srv, 53)
                };
                if f % 2 == 0 {
                    PacketFacts::udp(s, sp, d, dp, 20)
                } else {
                    let flags = [SYN, ACK, RST, FIN | ACK][rnd(4) as usize];
                    PacketFacts::tcp(s, sp, d, dp, flags, 1, 1, 1000, 0, &[])
                }
            })
            .collect();
        let tuples: Vec<Tuple> = group.iter().map(|p| p.tuple().unwrap()).collect();
        let mut found = vec![None; tuples.len()];
        b.lookup_batch(&tuples, now, &mut found);
        let changes = b.changes();
        for (p, f) in group.iter().zip(found) {
            let hint = f.map(|found| Hint { found, changes });
            fresh += usize::from(hint.is_some() && b.changes() == changes);
            let (ta, tb) = (a.track(p, now), b.track_hinted(p, now, hint));
            assert_eq!(ta, tb);
            if let Track::New(n) = ta {
                if rnd(2) == 0 {
                    let (Ok(ia), Ok(ib)) =
                        (a.confirm(n, None, None, now), b.confirm(n, None, None, now))
                    else {
                        panic!("confirm");
                    };
                    assert_eq!(ia, ib);
                }
            }
        }
        if rnd(5) == 0 {
            now += rnd(200) * S;
            assert_eq!(a.expire(now, 64), b.expire(now, 64));
        }
        assert_eq!(a.stats(), b.stats());
        assert_eq!(a.len(), b.len());
    }
    assert!(fresh > 200, "hints that still hold: {fresh}");
}

/// One `expire` call with a budget of B slots (B at most the table's slots)
/// does what B calls with a budget of one do (the same entries destroyed in
/// the same order, the same counters), also in a full table where early
/// drop evicts unassured entries.
#[test]
fn expire_budget_is_slot_by_slot() {
    let (mut a, mut b) = (small_table(), small_table());
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15u64);
    let mut now = S;
    let (mut destroyed, mut full) = (0, 0);
    for round in 0..300u32 {
        for _ in 0..rnd(40) {
            // More flows than room, both directions.
            let f = rnd(100) as u16;
            let p = match rnd(6) {
                0 => PacketFacts::tcp(CLI, 1000 + f, SRV, 80, SYN, 1, 0, 1000, 0, &[]),
                1 | 2 => PacketFacts::udp(SRV, 53, CLI, 1000 + f, 20),
                _ => PacketFacts::udp(CLI, 1000 + f, SRV, 53, 20),
            };
            let (ta, tb) = (a.track(&p, now), b.track(&p, now));
            assert_eq!(ta, tb);
            match ta {
                Track::New(n) => {
                    let (ra, rb) = (a.confirm(n, None, None, now), b.confirm(n, None, None, now));
                    assert_eq!(ra, rb);
                }
                Track::Drop { .. } => full += 1,
                _ => {}
            }
        }
        // Some connections become ASSURED (as streams would): a full table
        // then refuses new ones (gc_early_drop) and the sweep evicts the
        // unassured while it is 95% full.
        let ids: Vec<EntryId> = a.iter().map(|(id, _)| id).collect();
        for id in ids {
            if round < 150 && rnd(3) == 0 {
                a.entry_mut(id).unwrap().status |= status::ASSURED;
                b.entry_mut(id).unwrap().status |= status::ASSURED;
            }
        }
        // Then time goes on faster: entries expire.
        now += if round < 150 { rnd(3) } else { rnd(12) } * S;
        // At most the entries (so at most the slots): B calls of one slot
        // each then examine B slots too.
        let budget = 1 + rnd(40) as usize % a.len().max(1);
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        let na = a.expire_with(now, budget, |id, e| ea.push((id, *e)));
        let mut nb = 0;
        for _ in 0..budget {
            nb += b.expire_with(now, 1, |id, e| eb.push((id, *e)));
        }
        assert_eq!((na, &ea), (nb, &eb), "round {round}");
        assert_eq!(a.stats(), b.stats());
        assert_eq!(a.len(), b.len());
        destroyed += na;
    }
    assert!(
        destroyed > 50 && full > 0,
        "{destroyed} destroyed, {full} drops when full, {} entries, {:?}",
        a.len(),
        a.stats()
    );
}

/// `find_appropriate_src()` walks the bysource chain newest first: a new
/// connection from a source reuses the mapping of the newest live
/// connection from that source whose mapping is in its range. Many
/// connections from one source (more than an index bucket holds), each
/// mapped to one of eight addresses, removed in random order (newest,
/// oldest and in between) and probed with random ranges, against a list of
/// the live ones newest first.
#[test]
fn source_mapping_reuse_is_newest_first_through_removals() {
    let src = ip(172, 18, 0, 2);
    let nat = |k: u64| ip(10, 0, 0, 1 + k as u8);
    let mut t = table();
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
    // Live connections from `src`, newest first: (id, NAT address).
    let mut live: Vec<(EntryId, u32)> = Vec::new();
    for step in 0..3000u32 {
        let dst = 0x0800_0000 + step; // a new server each time: unique tuples
        let q = PacketFacts::udp(src, 5000, dst, 53, 0);
        let Track::New(n) = t.track(&q, 0) else {
            panic!("step {step}: not new")
        };
        let (lo, hi) = if step < 40 {
            (step as u64 % 8, step as u64 % 8)
        } else {
            let a = rnd(8);
            (a, (a + rnd(3)).min(7))
        };
        let range = NatRange::addrs(nat(lo), nat(hi));
        let expect = live
            .iter()
            .map(|&(_, a)| a)
            .find(|a| (nat(lo)..=nat(hi)).contains(a));
        let id = t.confirm(n, None, Some(&range), 0).unwrap();
        let e = t.entry(id).unwrap();
        assert_eq!(e.reply().dport, 5000, "step {step}: the port is kept");
        let got = e.reply().dst;
        assert!((nat(lo)..=nat(hi)).contains(&got), "step {step}");
        if let Some(a) = expect {
            assert_eq!(got, a, "step {step}: the newest in-range mapping is reused");
        }
        live.insert(0, (id, got));
        // Keep between 15 and 60 of them: remove a random one.
        while live.len() > 15 && (live.len() > 60 || rnd(2) == 0) {
            let (id, _) = live.remove(rnd(live.len() as u64) as usize);
            assert!(t.remove(id).is_some(), "step {step}");
        }
    }
    for (id, _) in live.drain(..) {
        t.remove(id).unwrap();
    }
    assert!(t.is_empty());
}
