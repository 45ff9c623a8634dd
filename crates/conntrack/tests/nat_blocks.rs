//! Dynamic port blocks and NAT events through the table: blocks given on
//! demand and counted per connection, released with their last connection,
//! the quota, exhaustion, and the session events of NATed connections.

use fastables_conntrack::tcp_hdr::{RST, SYN};
use fastables_conntrack::{
    BlockPoolSpec, EntryId, InsertError, NatEvent, NatEventKind, NatRange, PacketFacts, Table,
    TableConfig, Track,
};

const S: u64 = 1_000_000_000;
const SRV: u32 = 0x0808_0808;
const POOL: u32 = 0xc633_6401; // 198.51.100.1

fn table() -> Table {
    let mut t = Table::new(TableConfig {
        max: 4096,
        buckets: 4096,
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    t.set_nat_log(true, true, 1024);
    t
}

fn pool(max_blocks: u16) -> BlockPoolSpec {
    BlockPoolSpec {
        id: 1,
        pool: (POOL, POOL + 1),
        ports: (2000, 2399),
        size: 100,
        max_blocks,
    }
}

fn blocks_range() -> NatRange {
    let mut r = NatRange::default().with_flags(NatRange::BLOCKS);
    r.pool = 0;
    r
}

fn syn(
    t: &mut Table,
    src: u32,
    sport: u16,
    r: &NatRange,
    now: u64,
) -> Result<EntryId, InsertError> {
    match t.track(
        &PacketFacts::tcp(src, sport, SRV, 80, SYN, 1, 0, 64240, 0, &[]),
        now,
    ) {
        Track::New(n) => t.confirm(n, None, Some(r), now),
        other => panic!("{other:?}"),
    }
}

fn events(t: &mut Table) -> Vec<NatEvent> {
    let mut v = Vec::new();
    t.drain_nat_events(|e| v.push(*e));
    v
}

fn kinds(v: &[NatEvent]) -> Vec<NatEventKind> {
    v.iter().map(|e| e.kind).collect()
}

#[test]
fn a_block_is_given_used_and_released_with_its_last_connection() {
    let mut t = table();
    t.set_block_pools(&[pool(2)], 0, 1);
    let r = blocks_range();
    let sub = 0x0a00_0002;
    let ids: Vec<EntryId> = (0..150)
        .map(|i| syn(&mut t, sub, 40000 + i, &r, S).unwrap())
        .collect();
    let ev = events(&mut t);
    // Two blocks (150 connections to one destination need more than 100
    // ports), each logged once, then the sessions.
    let allocs: Vec<&NatEvent> = ev
        .iter()
        .filter(|e| e.kind == NatEventKind::BlockAlloc)
        .collect();
    assert_eq!(allocs.len(), 2, "{:?}", kinds(&ev));
    assert_eq!(
        ev.iter()
            .filter(|e| e.kind == NatEventKind::SessionCreate)
            .count(),
        150
    );
    assert_eq!(allocs[0].xsrc, allocs[1].xsrc, "paired: one public address");
    for a in &allocs {
        assert_eq!((a.src, a.pool), (sub, 1));
        assert_eq!(a.block.1 - a.block.0 + 1, 100);
    }
    // Every connection's public port is in one of its blocks.
    for id in &ids {
        let e = t.entry(*id).unwrap();
        let p = e.reply().dport;
        assert!(allocs
            .iter()
            .any(|a| a.block.0 <= p && p <= a.block.1 && a.xsrc == e.reply().dst));
    }
    assert_eq!(t.blocks_in_use(), vec![(1, 2)]);
    // A session event carries both sides of the translation.
    let s = ev
        .iter()
        .find(|e| e.kind == NatEventKind::SessionCreate)
        .unwrap();
    let e0 = t.entry(ids[0]).unwrap();
    assert_eq!((s.src, s.sport, s.dst, s.dport), (sub, 40000, SRV, 80));
    assert_eq!((s.xsrc, s.xsport), (e0.reply().dst, e0.reply().dport));
    assert_eq!((s.xdst, s.xdport, s.proto), (SRV, 80, 6));

    // The connections end (RST from the client): the blocks go back when
    // their last one does.
    for (i, _) in ids.iter().enumerate() {
        let p = PacketFacts::tcp(sub, 40000 + i as u16, SRV, 80, RST, 2, 0, 0, 0, &[]);
        t.track(&p, 2 * S);
    }
    let ev = events(&mut t);
    assert_eq!(
        ev.iter()
            .filter(|e| e.kind == NatEventKind::SessionDelete)
            .count(),
        150
    );
    let rel: Vec<&NatEvent> = ev
        .iter()
        .filter(|e| e.kind == NatEventKind::BlockRelease)
        .collect();
    assert_eq!(rel.len(), 2);
    assert!(rel.iter().all(|e| e.time_ns == 2 * S && e.src == sub));
    assert_eq!(t.blocks_in_use(), vec![(1, 0)]);
}

#[test]
fn quota_and_exhaustion_are_refused_and_logged() {
    let mut t = table();
    t.set_block_pools(&[pool(1)], 0, 1);
    let r = blocks_range();
    let a = 0x0a00_0002;
    for i in 0..100 {
        syn(&mut t, a, 40000 + i, &r, S).unwrap();
    }
    // The 101st connection to the same destination needs a second block.
    assert!(matches!(
        syn(&mut t, a, 41000, &r, S),
        Err(InsertError::Clash(_))
    ));
    let ev = events(&mut t);
    let q = ev
        .iter()
        .find(|e| e.kind == NatEventKind::QuotaExceeded)
        .unwrap();
    assert_eq!((q.src, q.limit), (a, 100));
    // Once a second: another refusal within the second is not logged.
    assert!(syn(&mut t, a, 41001, &r, S + 1).is_err());
    assert!(events(&mut t).is_empty());
    // Eight blocks in all: seven more subscribers take them, the ninth
    // finds the pool empty.
    for s in 1..8 {
        syn(&mut t, a + s, 40000, &r, S).unwrap();
    }
    assert!(syn(&mut t, a + 8, 40000, &r, S).is_err());
    let ev = events(&mut t);
    assert_eq!(
        kinds(&ev).last(),
        Some(&NatEventKind::AddressesExhausted),
        "{:?}",
        kinds(&ev)
    );
    assert_eq!(ev.last().unwrap().pool, 1);
}

#[test]
fn a_full_deterministic_block_is_the_subscribers_quota() {
    let mut t = table();
    let mut r = NatRange::addrs(POOL, POOL)
        .with_ports(3000, 3009)
        .with_flags(NatRange::DETERMINISTIC);
    r.pool = 0;
    let a = 0x0a00_0002;
    for i in 0..10 {
        syn(&mut t, a, 40000 + i, &r, S).unwrap();
    }
    assert!(syn(&mut t, a, 41000, &r, S).is_err());
    let ev = events(&mut t);
    let q = ev.last().unwrap();
    assert_eq!(
        (q.kind, q.src, q.limit),
        (NatEventKind::QuotaExceeded, a, 10)
    );
    // Ordinary SNAT: the address's ports exhausted.
    let r = NatRange::addrs(POOL + 5, POOL + 5).with_ports(3000, 3001);
    syn(&mut t, a, 50000, &r, 3 * S).unwrap();
    syn(&mut t, a, 50001, &r, 3 * S).unwrap();
    assert!(syn(&mut t, a, 50002, &r, 3 * S).is_err());
    let q = *events(&mut t).last().unwrap();
    assert_eq!((q.kind, q.xsrc), (NatEventKind::PortsExhausted, POOL + 5));
}

#[test]
fn pools_survive_a_reload_and_retired_ones_drain() {
    let mut t = table();
    t.set_block_pools(&[pool(2)], 0, 1);
    let r = blocks_range();
    let id = syn(&mut t, 0x0a00_0002, 40000, &r, S).unwrap();
    // The same pool again: its block stays.
    t.set_block_pools(&[pool(2)], 0, 1);
    assert_eq!(t.blocks_in_use(), vec![(1, 1)]);
    // Another pool instead: the old one is kept until its block is free.
    let mut other = pool(2);
    other.id = 2;
    other.pool = (POOL + 10, POOL + 10);
    t.set_block_pools(&[other], 0, 1);
    assert_eq!(t.blocks_in_use(), vec![(2, 0), (1, 1)]);
    events(&mut t);
    t.remove(id);
    assert_eq!(t.blocks_in_use(), vec![(2, 0)]);
    let ev = events(&mut t);
    assert_eq!(
        kinds(&ev),
        vec![NatEventKind::SessionDelete, NatEventKind::BlockRelease]
    );
}

#[test]
fn without_a_log_nothing_is_recorded() {
    let mut t = table();
    t.set_nat_log(false, false, 0);
    let r = NatRange::addrs(POOL, POOL);
    syn(&mut t, 0x0a00_0002, 40000, &r, S).unwrap();
    assert_eq!(t.nat_events_pending(), 0);
    // Sessions off: blocks still logged.
    t.set_nat_log(true, false, 16);
    t.set_block_pools(&[pool(2)], 0, 1);
    syn(&mut t, 0x0a00_0003, 40000, &blocks_range(), S).unwrap();
    assert_eq!(kinds(&events(&mut t)), vec![NatEventKind::BlockAlloc]);
}
