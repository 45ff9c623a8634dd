//! Differential test of conntrack and NAT: the same frames through a Linux
//! router in network namespaces (the rules loaded with iptables-restore) and
//! through `fastables sim --conntrack` (the same rules file), compared:
//!
//! - the frames the router sends, MACs and IP datagram byte for byte (the IP
//!   ID and header checksum of ICMP errors the router generates excepted);
//!   where the kernel picks a NAT port at random, sim's port is checked against
//!   the range and mapped to the kernel's before comparing;
//! - `conntrack -L` at each snapshot, as sets of lines with the timeout
//!   masked (and random ports replaced by their range);
//! - the final rule counters (`iptables-save -c`).
//!
//! Replies are built from what each router actually sent (the port NAT chose),
//! so each side answers its own translation.
//!
//! Needs root and ip, iptables-restore, conntrack, netsniff-ng, tcpdump,
//! ethtool; skipped with a note otherwise. `FASTABLES_NAT_SHOW=1` prints both
//! sides' frames and tables.

mod common;
#[path = "common/nat.rs"]
mod nat;

use std::net::Ipv4Addr;

use common::seed::*;
use fastables_packet::builder::{
    icmp_echo_reply, icmp_echo_request, icmp_error, tcp_frame, udp_frame, EthSpec, IpSpec, TcpSpec,
    UdpSpec,
};
use fastables_packet::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use fastables_packet::MacAddr;
use nat::{assert_same, compare, Ct, Masks, Pkt, Script, Sent, Topo};

const DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const ONE: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
const CLIENT2_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x03]);

const NAT_HEAD: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n";
const SEED_MASQ: &str =
    "-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680\n\
                         -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\n";
const PLAIN_MASQ: &str = "-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\n";
const DNAT: &str =
    "-A PREROUTING -p tcp -m tcp --dport 8088 -j DNAT --to-destination 192.168.0.2:80\n";

fn nat_table(body: &str) -> String {
    format!("{NAT_HEAD}{body}COMMIT\n")
}

fn from_ctr(mac: MacAddr) -> EthSpec {
    EthSpec {
        src: mac,
        ..eth_from_container()
    }
}

/// The MACs of `p` swapped: a frame answering it on the same link.
fn swapped(p: &Pkt) -> EthSpec {
    EthSpec {
        src: MacAddr(p.frame[0..6].try_into().unwrap()),
        dst: MacAddr(p.frame[6..12].try_into().unwrap()),
        vlan: None,
        pad: true,
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    eth: &EthSpec,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    fl: u8,
    data: &[u8],
) -> Vec<u8> {
    tcp_frame(
        eth,
        &ip(src, dst, 64, (seq as u16) ^ sport ^ u16::from(fl)),
        &TcpSpec {
            src_port: sport,
            dst_port: dport,
            seq,
            ack,
            flags: fl,
            ..TcpSpec::default()
        },
        data,
    )
}

fn udp_data(
    eth: &EthSpec,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    udp_frame(
        eth,
        &ip(src, dst, 64, sport ^ 0x5a5a),
        &UdpSpec {
            src_port: sport,
            dst_port: dport,
        },
        data,
    )
}

/// The last frame the router sent on `iface` of `proto` to `dst:dport`.
fn sent_to(s: &Sent, iface: &str, proto: u8, dst: Ipv4Addr, dport: u16) -> Option<Pkt> {
    s.last(iface, |p| {
        p.proto == proto && p.dst == dst && p.dport == dport
    })
}

/// A TCP segment from `server:port` back to wherever the router sent the
/// flow's last segment on `iface` (its translated source).
fn tcp_back(
    iface: &'static str,
    server: Ipv4Addr,
    port: u16,
    seq: u32,
    ack: u32,
    fl: u8,
    data: &'static [u8],
) -> impl Fn(&Sent) -> Option<Vec<u8>> {
    move |s| {
        let p = sent_to(s, iface, 6, server, port)?;
        Some(tcp(
            &swapped(&p),
            server,
            port,
            p.src,
            p.sport,
            seq,
            ack,
            fl,
            data,
        ))
    }
}

fn udp_back(
    iface: &'static str,
    server: Ipv4Addr,
    port: u16,
    data: &'static [u8],
) -> impl Fn(&Sent) -> Option<Vec<u8>> {
    move |s| {
        let p = sent_to(s, iface, 17, server, port)?;
        Some(udp_data(&swapped(&p), server, port, p.src, p.sport, data))
    }
}

/// Reply tuples must be unique and every REPLY dport must be taken once.
fn assert_unique_replies(side: &str, lines: &[String]) {
    let mut seen = std::collections::HashSet::new();
    for l in lines {
        let c = Ct::parse(l);
        assert!(
            seen.insert(c.tuples[1].clone()),
            "{side}: duplicate reply tuple: {l}"
        );
    }
}

// ---------------------------------------------------------------------------

/// 1. The seed: DNS keeps its port, HTTP gets one of 55666-55680, and the
///    connection to 1.1.1.1 leaves from 1.2.3.56.
#[test]
fn seed_masquerade_matches_the_kernel() {
    let ctr = eth_from_container();
    let mut s = Script::new();
    s.frame(
        "docker0",
        udp_data(&ctr, CONTAINER_IP, 33894, DNS, 53, b"query"),
    );
    s.reply("eth0", "DNS answer", udp_back("eth0", DNS, 53, b"answer"));
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37622, DNS, 80, 1000, 0, SYN, b""),
    );
    s.reply(
        "eth0",
        "SYN-ACK",
        tcp_back("eth0", DNS, 80, 5000, 1001, SYN | ACK, b""),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37622, DNS, 80, 1001, 5001, ACK, b""),
    );
    s.frame(
        "docker0",
        tcp(
            &ctr,
            CONTAINER_IP,
            37622,
            DNS,
            80,
            1001,
            5001,
            PSH | ACK,
            b"GET / HTTP/1.0\r\n\r\n",
        ),
    );
    s.reply(
        "eth0",
        "HTTP answer",
        tcp_back(
            "eth0",
            DNS,
            80,
            5001,
            1019,
            PSH | ACK,
            b"HTTP/1.0 200 OK\r\n\r\n",
        ),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37622, DNS, 80, 1019, 5020, ACK, b""),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37623, ONE, 80, 2000, 0, SYN, b""),
    );
    s.reply(
        "eth0",
        "SYN-ACK from 1.1.1.1",
        tcp_back("eth0", ONE, 80, 7000, 2001, SYN | ACK, b""),
    );
    let masks = Masks(vec![("tcp", None, 55666, 55680)]);
    let Some((k, _sim, d)) = compare("nat-seed", &Topo::seed(), &nat_table(SEED_MASQ), &s, &masks)
    else {
        return;
    };
    // What the seed expects of the kernel (sanity of the harness itself).
    let end = &k.snaps.last().unwrap().1;
    assert!(
        end.iter()
            .any(|l| l
                .contains("sport=33894 dport=53 src=8.8.8.8 dst=10.0.2.15 sport=53 dport=33894")),
        "{end:?}"
    );
    assert!(
        end.iter()
            .any(|l| l.contains("dst=1.1.1.1") && l.contains("dst=1.2.3.56")),
        "{end:?}"
    );
    assert_same("nat-seed", &d);
}

/// 2. DNAT to 192.168.0.2:80 behind a third interface, from the Internet and
///    from the container (DNAT + MASQUERADE), with replies translated back.
#[test]
fn dnat_matches_the_kernel() {
    let gw = eth_from_gw();
    let ctr = eth_from_container();
    let mut s = Script::new();
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 40000, ETH0_IP, 8088, 100, 0, SYN, b""),
    );
    s.snap("remote SYN");
    s.reply(
        "srv0",
        "server SYN-ACK",
        tcp_back("srv0", SERVER, 80, 900, 101, SYN | ACK, b""),
    );
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 40000, ETH0_IP, 8088, 101, 901, ACK, b""),
    );
    s.frame(
        "eth0",
        tcp(
            &gw,
            REMOTE_IP,
            40000,
            ETH0_IP,
            8088,
            101,
            901,
            PSH | ACK,
            b"hello",
        ),
    );
    s.reply(
        "srv0",
        "server data",
        tcp_back("srv0", SERVER, 80, 901, 106, PSH | ACK, b"world"),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 41000, ETH0_IP, 8088, 300, 0, SYN, b""),
    );
    s.reply(
        "srv0",
        "server SYN-ACK to the container",
        move |sent: &Sent| {
            let p = sent.last("srv0", |p| p.proto == 6 && p.dport == 80 && p.seq == 300)?;
            Some(tcp(
                &swapped(&p),
                SERVER,
                80,
                p.src,
                p.sport,
                700,
                301,
                SYN | ACK,
                b"",
            ))
        },
    );
    let masks = Masks(vec![("tcp", None, 55666, 55680)]);
    let rules = nat_table(&format!("{DNAT}{SEED_MASQ}"));
    let Some((_, _, d)) = compare("nat-dnat", &Topo::with_server(None), &rules, &s, &masks) else {
        return;
    };
    assert_same("nat-dnat", &d);
}

/// 3. Two clients with the same source port to one server: the second gets
///    another port (UDP: any of 1024-65535; TCP: both from 55666-55680).
#[test]
fn same_source_port_from_two_clients_matches_the_kernel() {
    let topo = Topo::seed().neighbor("172.18.0.3", "02:42:ac:12:00:03", "docker0");
    let (c1, c2) = (eth_from_container(), from_ctr(CLIENT2_MAC));
    let mut s = Script::new();
    s.frame("docker0", udp_data(&c1, CONTAINER_IP, 5353, DNS, 53, b"q1"));
    s.frame("docker0", udp_data(&c2, CLIENT2, 5353, DNS, 53, b"q2"));
    s.reply(
        "eth0",
        "answer to the second",
        udp_back("eth0", DNS, 53, b"a2"),
    );
    s.reply("eth0", "answer to the first", |sent: &Sent| {
        let p = sent
            .on("eth0")
            .iter()
            .filter_map(|f| Pkt::parse(f))
            .find(|p| p.proto == 17 && p.dport == 53)?;
        Some(udp_data(&swapped(&p), DNS, 53, p.src, p.sport, b"a1"))
    });
    s.frame(
        "docker0",
        tcp(&c1, CONTAINER_IP, 40000, ONE, 80, 10, 0, SYN, b""),
    );
    s.frame(
        "docker0",
        tcp(&c2, CLIENT2, 40000, ONE, 80, 20, 0, SYN, b""),
    );
    s.reply(
        "eth0",
        "SYN-ACK to the second",
        tcp_back("eth0", ONE, 80, 50, 21, SYN | ACK, b""),
    );
    let masks = Masks(vec![
        ("udp", None, 1024, 65535),
        ("tcp", None, 55666, 55680),
    ]);
    let Some((k, sim, d)) = compare("nat-two", &topo, &nat_table(SEED_MASQ), &s, &masks) else {
        return;
    };
    assert_same("nat-two", &d);
    assert_unique_replies("kernel", &k.snaps.last().unwrap().1);
    assert_unique_replies("sim", &sim.snaps.last().unwrap().1);
}

/// 4. 100 clients, all from port 10000, to one server: one keeps 10000, the
///    others get unique ports from 1024-65535.
#[test]
fn hundred_clients_from_one_port_match_the_kernel() {
    let mut s = Script::new();
    let client = |i: u8| Ipv4Addr::new(172, 18, 1, i);
    for i in 1..=100u8 {
        let eth = from_ctr(MacAddr([0x02, 0x42, 0xac, 0x12, 0x01, i]));
        s.frame(
            "docker0",
            tcp(
                &eth,
                client(i),
                10000,
                DNS,
                80,
                1000 + u32::from(i),
                0,
                SYN,
                b"",
            ),
        );
    }
    // Answer the first and the last client.
    for (i, what) in [(1u8, "SYN-ACK to client 1"), (100, "SYN-ACK to client 100")] {
        let seq = 1000 + u32::from(i);
        s.reply("eth0", what, move |sent: &Sent| {
            let p = sent.last("eth0", |p| p.proto == 6 && p.dst == DNS && p.seq == seq)?;
            Some(tcp(
                &swapped(&p),
                DNS,
                80,
                p.src,
                p.sport,
                9000,
                seq + 1,
                SYN | ACK,
                b"",
            ))
        });
    }
    let topo = Topo::seed()
        .neighbor("172.18.1.1", "02:42:ac:12:01:01", "docker0")
        .neighbor("172.18.1.100", "02:42:ac:12:01:64", "docker0");
    let masks = Masks(vec![("tcp", None, 1024, 65535)]);
    let Some((k, sim, d)) = compare("nat-100", &topo, &nat_table(PLAIN_MASQ), &s, &masks) else {
        return;
    };
    let kept = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| Ct::parse(l).port(1, "dport") == Some(10000))
            .count()
    };
    let kl = &k.snaps.last().unwrap().1;
    assert_eq!(kl.len(), 100, "kernel: {kl:#?}");
    assert_eq!(kept(kl), 1, "kernel: {kl:#?}");
    assert_unique_replies("kernel", kl);
    assert_same("nat-100", &d);
    let sl = &sim.snaps.last().unwrap().1;
    assert_eq!(sl.len(), 100, "sim: {sl:#?}");
    assert_eq!(
        kept(sl),
        kept(kl),
        "how many keep port 10000 (kernel vs sim)"
    );
    assert_unique_replies("sim", sl);
}

/// 5. A connection from 93.184.216.34:10000 straight to 192.168.0.2:80, then
///    one from the same port DNATed (8088 -> 192.168.0.2:80): the second's
///    reply tuple would be the first's.
#[test]
fn dnat_clashing_with_an_existing_flow_matches_the_kernel() {
    let gw = eth_from_gw();
    let mut s = Script::new();
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 10000, SERVER, 80, 100, 0, SYN, b""),
    );
    s.reply(
        "srv0",
        "server SYN-ACK",
        tcp_back("srv0", SERVER, 80, 900, 101, SYN | ACK, b""),
    );
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 10000, SERVER, 80, 101, 901, ACK, b""),
    );
    s.snap("first flow");
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 10000, ETH0_IP, 8088, 5000, 0, SYN, b""),
    );
    s.snap("after the DNATed SYN");
    // The same from the container: MASQUERADE out of srv0 as 192.168.0.1.
    let ctr = eth_from_container();
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 10000, SERVER, 80, 200, 0, SYN, b""),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 10000, ETH0_IP, 8088, 6000, 0, SYN, b""),
    );
    // The kernel resolves the clash by moving the DNATed flow's source port.
    let masks = Masks(vec![
        ("tcp", Some("93.184.216.34"), 1024, 65535),
        ("tcp", None, 55666, 55680),
    ]);
    let rules = nat_table(&format!("{DNAT}{SEED_MASQ}"));
    let Some((_, _, d)) = compare("nat-clash", &Topo::with_server(None), &rules, &s, &masks) else {
        return;
    };
    assert_same("nat-clash", &d);
}

/// 6. ICMP through NAT: echo, a port unreachable about a NATed UDP flow, a
///    fragmentation-needed from beyond the uplink about a NATed TCP flow, and
///    fragmentation-needed the router generates (srv0 MTU 1000) for a DNATed
///    flow and for a first packet.
#[test]
fn icmp_through_nat_matches_the_kernel() {
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let mut s = Script::new();
    // Echo.
    s.frame(
        "docker0",
        icmp_echo_request(
            &ctr,
            &ip(CONTAINER_IP, DNS, 64, 0x1111),
            0x4242,
            1,
            b"ping data",
        ),
    );
    s.reply("eth0", "echo reply", |sent: &Sent| {
        let p = sent.last("eth0", |p| p.proto == 1 && p.dst == DNS)?;
        let l4 = &p.datagram()[20..];
        let id = u16::from_be_bytes([l4[4], l4[5]]);
        Some(icmp_echo_reply(
            &swapped(&p),
            &ip(DNS, p.src, 60, 0x2222),
            id,
            1,
            b"ping data",
        ))
    });
    s.snap("echo");
    // Port unreachable for a NATed UDP flow.
    s.frame(
        "docker0",
        udp_data(&ctr, CONTAINER_IP, 33000, DNS, 9999, b"anyone?"),
    );
    s.reply("eth0", "port unreachable", |sent: &Sent| {
        let p = sent_to(sent, "eth0", 17, DNS, 9999)?;
        let ipspec = IpSpec {
            dont_frag: false,
            ..ip(DNS, p.src, 60, 0x3333)
        };
        Some(icmp_error(&swapped(&p), &ipspec, 3, 3, 0, &p.frame))
    });
    s.snap("port unreachable");
    // Fragmentation needed from the gateway about a NATed TCP flow.
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37700, DNS, 80, 1000, 0, SYN, b""),
    );
    s.reply(
        "eth0",
        "SYN-ACK",
        tcp_back("eth0", DNS, 80, 5000, 1001, SYN | ACK, b""),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37700, DNS, 80, 1001, 5001, ACK, b""),
    );
    let big = [0x61u8; 1400];
    s.frame(
        "docker0",
        tcp(
            &ctr,
            CONTAINER_IP,
            37700,
            DNS,
            80,
            1001,
            5001,
            PSH | ACK,
            &big,
        ),
    );
    s.reply(
        "eth0",
        "fragmentation needed from 10.0.2.2",
        |sent: &Sent| {
            let p = sent.last("eth0", |p| {
                p.proto == 6 && p.dst == DNS && p.datagram().len() > 1000
            })?;
            let ipspec = IpSpec {
                dont_frag: false,
                ..ip(GW_IP, p.src, 64, 0x4444)
            };
            Some(icmp_error(&swapped(&p), &ipspec, 3, 4, 1280, &p.frame))
        },
    );
    s.snap("frag needed from outside");
    // The router's own fragmentation-needed: a DNATed flow to srv0 (MTU 1000).
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 40000, ETH0_IP, 8088, 100, 0, SYN, b""),
    );
    s.reply(
        "srv0",
        "server SYN-ACK",
        tcp_back("srv0", SERVER, 80, 900, 101, SYN | ACK, b""),
    );
    s.frame(
        "eth0",
        tcp(&gw, REMOTE_IP, 40000, ETH0_IP, 8088, 101, 901, ACK, b""),
    );
    s.frame(
        "eth0",
        tcp(
            &gw,
            REMOTE_IP,
            40000,
            ETH0_IP,
            8088,
            101,
            901,
            PSH | ACK,
            &[0x62u8; 1200],
        ),
    );
    // ... and for the first packet of a NATed UDP flow.
    s.frame(
        "docker0",
        udp_data(&ctr, CONTAINER_IP, 34000, SERVER, 7, &[0x63u8; 1200]),
    );
    let masks = Masks(vec![("tcp", None, 55666, 55680)]);
    let rules = nat_table(&format!("{DNAT}{SEED_MASQ}"));
    let Some((_, _, d)) = compare(
        "nat-icmp",
        &Topo::with_server(Some(1000)),
        &rules,
        &s,
        &masks,
    ) else {
        return;
    };
    assert_same("nat-icmp", &d);
}

/// 7. TCP lifecycles through NAT, `conntrack -L` after every step: a clean
///    close, a RST from the server, an out-of-window RST then an in-window one,
///    a refused connection, a RST from the client.
#[test]
fn tcp_lifecycles_match_the_kernel() {
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let c = |sport, seq, ack, fl| tcp(&ctr, CONTAINER_IP, sport, DNS, 80, seq, ack, fl, b"");
    let sv = |dport, seq, ack, fl| tcp(&gw, DNS, 80, ETH0_IP, dport, seq, ack, fl, b"");
    let mut s = Script::new();
    // A: open and close.
    s.frame("docker0", c(41000, 100, 0, SYN)).snap("A SYN");
    s.frame("eth0", sv(41000, 900, 101, SYN | ACK))
        .snap("A SYN-ACK");
    s.frame("docker0", c(41000, 101, 901, ACK)).snap("A ACK");
    s.frame("docker0", c(41000, 101, 901, FIN | ACK))
        .snap("A client FIN");
    s.frame("eth0", sv(41000, 901, 102, ACK))
        .snap("A server ACK");
    s.frame("eth0", sv(41000, 901, 102, FIN | ACK))
        .snap("A server FIN");
    s.frame("docker0", c(41000, 102, 902, ACK))
        .snap("A last ACK");
    // B: established, then RST from the server.
    s.frame("docker0", c(41001, 100, 0, SYN));
    s.frame("eth0", sv(41001, 900, 101, SYN | ACK));
    s.frame("docker0", c(41001, 101, 901, ACK))
        .snap("B established");
    s.frame("eth0", sv(41001, 901, 0, RST)).snap("B server RST");
    // C: an out-of-window RST, then an in-window one.
    s.frame("docker0", c(41002, 100, 0, SYN));
    s.frame("eth0", sv(41002, 900, 101, SYN | ACK));
    s.frame("docker0", c(41002, 101, 901, ACK));
    s.frame("eth0", sv(41002, 901 + 1_000_000_000, 0, RST))
        .snap("C out-of-window RST");
    s.frame("eth0", sv(41002, 901, 0, RST))
        .snap("C in-window RST");
    // D: refused.
    s.frame("docker0", c(41003, 100, 0, SYN));
    s.frame("eth0", sv(41003, 0, 101, RST | ACK))
        .snap("D refused");
    // E: RST from the client after the handshake.
    s.frame("docker0", c(41004, 100, 0, SYN));
    s.frame("eth0", sv(41004, 900, 101, SYN | ACK));
    s.frame("docker0", c(41004, 101, 901, ACK));
    s.frame("docker0", c(41004, 101, 0, RST))
        .snap("E client RST");
    let Some((_, _, d)) = compare(
        "nat-tcp",
        &Topo::seed(),
        &nat_table(PLAIN_MASQ),
        &s,
        &Masks::default(),
    ) else {
        return;
    };
    assert_same("nat-tcp", &d);
}

/// 8. raw NOTRACK for DNS both ways with `-m state --state UNTRACKED -j ACCEPT`
///    in a FORWARD DROP policy: DNS leaves untranslated, HTTP is NATed.
#[test]
fn notrack_matches_the_kernel() {
    let rules = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A PREROUTING -p udp -m udp --dport 53 -j NOTRACK\n\
                 -A PREROUTING -p udp -m udp --sport 53 -j NOTRACK\n\
                 COMMIT\n"
        .to_string()
        + &nat_table(SEED_MASQ)
        + "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
           -A FORWARD -m state --state UNTRACKED -j ACCEPT\n\
           -A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT\n\
           -A FORWARD -i docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n\
           COMMIT\n";
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let mut s = Script::new();
    s.frame(
        "docker0",
        udp_data(&ctr, CONTAINER_IP, 33894, DNS, 53, b"query"),
    );
    s.frame(
        "eth0",
        udp_data(&gw, DNS, 53, CONTAINER_IP, 33894, b"answer"),
    );
    // Tracked and not allowed: dropped, no entry.
    s.frame(
        "docker0",
        udp_data(&ctr, CONTAINER_IP, 33895, DNS, 54, b"other"),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 37622, DNS, 80, 1000, 0, SYN, b""),
    );
    s.reply(
        "eth0",
        "SYN-ACK",
        tcp_back("eth0", DNS, 80, 5000, 1001, SYN | ACK, b""),
    );
    let masks = Masks(vec![("tcp", None, 55666, 55680)]);
    let Some((_, _, d)) = compare("nat-notrack", &Topo::seed(), &rules, &s, &masks) else {
        return;
    };
    assert_same("nat-notrack", &d);
}

/// 9. TCP corner cases through NAT: a mid-stream pickup (tcp_loose), a new
///    SYN on a TIME_WAIT entry, client data far outside the window, a
///    retransmitted SYN, a SYN-ACK acknowledging the wrong sequence number.
#[test]
fn tcp_corner_cases_match_the_kernel() {
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let c = |sport, seq, ack, fl, data: &[u8]| {
        tcp(&ctr, CONTAINER_IP, sport, DNS, 80, seq, ack, fl, data)
    };
    let sv = |dport, seq, ack, fl| tcp(&gw, DNS, 80, ETH0_IP, dport, seq, ack, fl, b"");
    let mut s = Script::new();
    // Mid-stream pickup.
    s.frame("docker0", c(42000, 5000, 7000, PSH | ACK, b"data"))
        .snap("F mid-stream data");
    s.frame("eth0", sv(42000, 7000, 5004, ACK))
        .snap("F server ACK");
    // TIME_WAIT, then a new SYN from the same port.
    s.frame("docker0", c(42001, 100, 0, SYN, b""));
    s.frame("eth0", sv(42001, 900, 101, SYN | ACK));
    s.frame("docker0", c(42001, 101, 901, ACK, b""));
    s.frame("docker0", c(42001, 101, 901, FIN | ACK, b""));
    s.frame("eth0", sv(42001, 901, 102, FIN | ACK));
    s.frame("docker0", c(42001, 102, 902, ACK, b""))
        .snap("G TIME_WAIT");
    s.frame("docker0", c(42001, 200_000, 0, SYN, b""))
        .snap("G new SYN in TIME_WAIT");
    // Client data far outside the window.
    s.frame("docker0", c(42002, 100, 0, SYN, b""));
    s.frame("eth0", sv(42002, 900, 101, SYN | ACK));
    s.frame("docker0", c(42002, 101, 901, ACK, b""));
    s.frame(
        "docker0",
        c(42002, 101 + 2_000_000_000, 901, PSH | ACK, b"far"),
    )
    .snap("H out-of-window data");
    // A retransmitted SYN.
    s.frame("docker0", c(42003, 100, 0, SYN, b""));
    s.frame("docker0", c(42003, 100, 0, SYN, b""))
        .snap("I SYN twice");
    // A SYN-ACK with the wrong ack.
    s.frame("docker0", c(42004, 100, 0, SYN, b""));
    s.frame("eth0", sv(42004, 900, 12345, SYN | ACK))
        .snap("J bad SYN-ACK");
    let Some((_, _, d)) = compare(
        "nat-tcp2",
        &Topo::seed(),
        &nat_table(PLAIN_MASQ),
        &s,
        &Masks(vec![("tcp", None, 1024, 65535)]),
    ) else {
        return;
    };
    assert_same("nat-tcp2", &d);
}

/// 10. Echo requests with one id from two clients (the second gets another
///     id), a UDP exchange both ways several times, an ICMP error about a
///     DNATed flow from the server, and an ICMP error that belongs to no flow.
#[test]
fn icmp_ids_udp_streams_and_stray_errors_match_the_kernel() {
    let topo = Topo::with_server(None).neighbor("172.18.0.3", "02:42:ac:12:00:03", "docker0");
    let (c1, c2, gw) = (eth_from_container(), from_ctr(CLIENT2_MAC), eth_from_gw());
    let mut s = Script::new();
    s.frame(
        "docker0",
        icmp_echo_request(&c1, &ip(CONTAINER_IP, DNS, 64, 0x10), 0x77, 1, b"one"),
    );
    s.frame(
        "docker0",
        icmp_echo_request(&c2, &ip(CLIENT2, DNS, 64, 0x11), 0x77, 1, b"two"),
    );
    s.reply("eth0", "echo reply to the second", |sent: &Sent| {
        let p = sent.last("eth0", |p| p.proto == 1 && p.dst == DNS)?;
        Some(icmp_echo_reply(
            &swapped(&p),
            &ip(DNS, p.src, 60, 0x12),
            p.key(),
            1,
            b"two",
        ))
    });
    s.snap("two pings");
    // UDP both ways, three times, the last more than 2 s after the first:
    // a stream, ASSURED (nf_conntrack_proto_udp's stream_ts). The wait
    // makes the kernel's real time and sim's clock agree whatever the
    // injection costs.
    for i in 0..3u8 {
        if i == 2 {
            s.wait(2100);
        }
        s.frame(
            "docker0",
            udp_data(&c1, CONTAINER_IP, 6000, DNS, 7000, &[i; 10]),
        );
        s.reply("eth0", "UDP answer", udp_back("eth0", DNS, 7000, b"back"));
    }
    s.snap("UDP stream");
    // A DNATed flow; the server answers port unreachable.
    s.frame(
        "eth0",
        udp_data(&gw, REMOTE_IP, 40000, ETH0_IP, 8089, b"to the server"),
    );
    s.reply("srv0", "port unreachable from the server", |sent: &Sent| {
        let p = sent_to(sent, "srv0", 17, SERVER, 9)?;
        let ipspec = IpSpec {
            dont_frag: false,
            ..ip(SERVER, p.src, 64, 0x99)
        };
        Some(icmp_error(&swapped(&p), &ipspec, 3, 3, 0, &p.frame))
    });
    s.snap("DNATed UDP refused");
    // An ICMP error about nothing we know.
    let stray = udp_data(&c1, ETH0_IP, 1111, DNS, 2222, b"never sent");
    let ipspec = IpSpec {
        dont_frag: false,
        ..ip(DNS, ETH0_IP, 60, 0x55)
    };
    s.frame("eth0", icmp_error(&gw, &ipspec, 3, 3, 0, &stray));
    let rules = nat_table(&format!(
        "-A PREROUTING -p udp -m udp --dport 8089 -j DNAT --to-destination 192.168.0.2:9\n{SEED_MASQ}"
    ));
    let masks = Masks(vec![("icmp", None, 0, 65535), ("tcp", None, 55666, 55680)]);
    let Some((_, _, d)) = compare("nat-icmp2", &topo, &rules, &s, &masks) else {
        return;
    };
    assert_same("nat-icmp2", &d);
}

/// 11. Fragments through NAT: the kernel reassembles (conntrack needs the
///     whole datagram), translates, and fragments again to the largest
///     fragment size received; a lone first fragment is held back.
#[test]
fn fragments_through_nat_match_the_kernel() {
    use fastables_packet::builder::ipv4_frame;
    let ctr = eth_from_container();
    // A UDP datagram of 8 + 1000 bytes, cut after 600 bytes of IP payload.
    let whole = udp_data(&ctr, CONTAINER_IP, 35000, DNS, 53, &[0x42u8; 1000]);
    let l4 = whole[14 + 20..].to_vec();
    let frag = |off: usize, end: usize, more: bool, id: u16| {
        ipv4_frame(
            &ctr,
            &IpSpec {
                dont_frag: false,
                more_frags: more,
                frag_offset: off as u16,
                ..ip(CONTAINER_IP, DNS, 64, id)
            },
            17,
            &l4[off..end],
        )
    };
    let mut s = Script::new();
    s.frame("docker0", frag(0, 600, true, 0x700));
    s.frame("docker0", frag(600, l4.len(), false, 0x700));
    s.snap("after two fragments");
    // Only the first fragment of another datagram.
    s.frame("docker0", frag(0, 600, true, 0x701));
    let Some((_, _, d)) = compare(
        "nat-frag",
        &Topo::seed(),
        &nat_table(PLAIN_MASQ),
        &s,
        &Masks(vec![("udp", None, 1024, 65535)]),
    ) else {
        return;
    };
    assert_same("nat-frag", &d);
}

/// 12. SNAT to an address range and DNAT to an address range: the kernel
///     picks the address by a hash of the addresses (no randomness), so the
///     choices are compared exactly.
#[test]
fn nat_address_ranges_match_the_kernel() {
    let mut topo = Topo::with_server(None);
    for (ip, mac) in [
        ("192.168.0.3", "02:00:c0:a8:00:03"),
        ("192.168.0.4", "02:00:c0:a8:00:04"),
        ("192.168.0.5", "02:00:c0:a8:00:05"),
    ] {
        topo = topo.neighbor(ip, mac, "srv0");
    }
    let gw = eth_from_gw();
    let mut s = Script::new();
    for i in 2..12u8 {
        let src = Ipv4Addr::new(172, 18, 0, i);
        let eth = from_ctr(MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, i]));
        s.frame("docker0", udp_data(&eth, src, 5000, DNS, 53, b"q"));
    }
    for i in 1..11u8 {
        let src = Ipv4Addr::new(203, 0, 113, i);
        s.frame("eth0", tcp(&gw, src, 30000, ETH0_IP, 8090, 1, 0, SYN, b""));
    }
    let rules = nat_table(
        "-A PREROUTING -p tcp -m tcp --dport 8090 -j DNAT --to-destination 192.168.0.2-192.168.0.5\n\
         -A POSTROUTING -s 172.18.0.0/16 -o eth0 -j SNAT --to-source 10.0.2.100-10.0.2.107\n",
    );
    // Ten clients share eight addresses: clashing ones get a random port.
    let masks = Masks(vec![("udp", None, 1024, 65535)]);
    let Some((_, _, d)) = compare("nat-ranges", &topo, &rules, &s, &masks) else {
        return;
    };
    assert_same("nat-ranges", &d);
}

/// 13. Packets the router itself generates or receives with NAT rules loaded:
///     TTL expiry on a NATed flow in both directions, a stray answer to the
///     router's address, an echo request to the router.
#[test]
fn router_generated_packets_with_nat_match_the_kernel() {
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let mut s = Script::new();
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 43000, DNS, 80, 100, 0, SYN, b""),
    );
    s.frame(
        "eth0",
        tcp(&gw, DNS, 80, ETH0_IP, 43000, 900, 101, SYN | ACK, b""),
    );
    s.frame(
        "docker0",
        tcp(&ctr, CONTAINER_IP, 43000, DNS, 80, 101, 901, ACK, b""),
    );
    // TTL 1 from the container on the established flow.
    s.frame(
        "docker0",
        tcp_frame(
            &ctr,
            &ip(CONTAINER_IP, DNS, 1, 0x1234),
            &TcpSpec {
                src_port: 43000,
                dst_port: 80,
                seq: 101,
                ack: 901,
                flags: PSH | ACK,
                ..TcpSpec::default()
            },
            b"ttl one",
        ),
    );
    // TTL 1 from the server on the reply direction.
    s.frame(
        "eth0",
        tcp_frame(
            &gw,
            &ip(DNS, ETH0_IP, 1, 0x4321),
            &TcpSpec {
                src_port: 80,
                dst_port: 43000,
                seq: 901,
                ack: 101,
                flags: PSH | ACK,
                ..TcpSpec::default()
            },
            b"ttl one back",
        ),
    );
    s.snap("after TTL expiries");
    // An answer nobody asked for, to the router's address.
    s.frame("eth0", udp_data(&gw, DNS, 53, ETH0_IP, 33999, b"stray"));
    // Echo to the router.
    s.frame(
        "eth0",
        icmp_echo_request(
            &gw,
            &ip(REMOTE_IP, ETH0_IP, 64, 0x99),
            0x55,
            7,
            b"hello router",
        ),
    );
    let Some((_, _, d)) = compare(
        "nat-local",
        &Topo::seed(),
        &nat_table(PLAIN_MASQ),
        &s,
        &Masks::default(),
    ) else {
        return;
    };
    assert_same("nat-local", &d);
}

/// 14. MASQUERADE --to-ports 55666-55680 runs out after 15 connections to one
///     destination; DNAT to a port range keeps or picks ports without
///     randomness.
#[test]
fn port_range_exhaustion_and_dnat_port_ranges_match_the_kernel() {
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let mut s = Script::new();
    for i in 0..17u16 {
        s.frame(
            "docker0",
            tcp(&ctr, CONTAINER_IP, 44000 + i, DNS, 80, 1, 0, SYN, b""),
        );
    }
    s.snap("17 connections, 15 ports");
    // DNAT to a port range: 8005 is in the range (kept), 9000 is not.
    for (src, dport) in [
        (40001u16, 8005u16),
        (40002, 9000),
        (40003, 9000),
        (40001, 9000),
    ] {
        s.frame(
            "eth0",
            tcp(&gw, REMOTE_IP, src, ETH0_IP, dport, 1, 0, SYN, b""),
        );
    }
    let rules = nat_table(&format!(
        "-A PREROUTING -i eth0 -p tcp -m multiport --dports 8005,9000 -j DNAT --to-destination 192.168.0.2:8000-8010\n{SEED_MASQ}"
    ));
    let masks = Masks(vec![("tcp", None, 55666, 55680)]);
    let Some((_, _, d)) = compare("nat-exhaust", &Topo::with_server(None), &rules, &s, &masks)
    else {
        return;
    };
    assert_same("nat-exhaust", &d);
}

// ---------------------------------------------------------------------------
// The harness itself (no root needed).

#[test]
fn harness_masks_the_timeout_and_random_ports_only() {
    let masks = Masks(vec![("tcp", None, 55666, 55680)]);
    let mut errors = Vec::new();
    let l = "tcp      6 431999 ESTABLISHED src=172.18.0.2 dst=8.8.8.8 sport=37622 dport=80 \
             src=8.8.8.8 dst=10.0.2.15 sport=80 dport=55670 [ASSURED] mark=0 use=1";
    let (m, r) = nat::mask_line(l, &masks, &mut errors, "k");
    assert_eq!(
        m,
        "tcp 6 <timeout> ESTABLISHED src=172.18.0.2 dst=8.8.8.8 sport=37622 dport=80 \
         src=8.8.8.8 dst=10.0.2.15 sport=80 dport=<55666-55680> [ASSURED] mark=0 use=1"
    );
    assert_eq!(r, Some(55670));
    assert!(errors.is_empty());
    // A kept port is compared as it is; a port outside the range is an error.
    let kept = "udp      17 28 src=172.18.0.2 dst=8.8.8.8 sport=33894 dport=53 \
                src=8.8.8.8 dst=10.0.2.15 sport=53 dport=33894 mark=0 use=1";
    let (m, r) = nat::mask_line(kept, &masks, &mut errors, "k");
    assert!(
        m.ends_with("dport=33894 mark=0 use=1") && r.is_none(),
        "{m}"
    );
    let (_, r) = nat::mask_line(&l.replace("55670", "1234"), &masks, &mut errors, "k");
    assert_eq!(r, Some(1234));
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn harness_port_rewrite_keeps_checksums_valid() {
    let ctr = eth_from_container();
    for mut f in [
        tcp(&ctr, ETH0_IP, 55670, DNS, 80, 7, 9, ACK, b"odd length"),
        udp_data(&ctr, ETH0_IP, 33894, DNS, 53, b"query"),
    ] {
        nat::set_sport(&mut f, 61234);
        // common::decode verifies every checksum independently.
        let d = common::decode(&f);
        assert_eq!(d.ports().0, 61234);
    }
}
