//! The seed topology and frames of the seed scenario, shared by the scenario
//! tests and by the demo pcap builder (`examples/seed_pcaps.rs`).
//!
//! Topology (demo/fastables.toml): eth0 10.0.2.15/24 + 1.2.3.56/24 (MAC
//! 52:54:00:c2:be:11), docker0 172.18.0.1/16 (MAC 02:42:ac:12:00:01), default
//! via 10.0.2.2, 1.1.1.1/32 via 1.2.3.4, static neighbors 10.0.2.2, 1.2.3.4 (on
//! eth0) and 172.18.0.2 (on docker0).
#![allow(dead_code)]

use std::net::Ipv4Addr;

use fastables_packet::builder::{tcp_frame, udp_frame, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::MacAddr;

/// The seed configuration, `rules = "rules.v4"`.
pub const CONFIG: &str = include_str!("../../../../demo/fastables.toml");
/// The demo rules (the seed's nat, filter and mangle rules).
pub const DEMO_RULES: &str = include_str!("../../../../demo/rules.v4");

pub const ETH0_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11]);
pub const DOCKER0_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
/// 10.0.2.2, the default gateway.
pub const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]);
/// 1.2.3.4, the next hop to 1.1.1.1.
pub const PEER_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x04]);
/// 172.18.0.2, the container.
pub const CONTAINER_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x02]);

pub const ETH0_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const ETH0_IP2: Ipv4Addr = Ipv4Addr::new(1, 2, 3, 56);
pub const DOCKER0_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(1, 2, 3, 4);
pub const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
/// A host on the Internet, behind the default gateway.
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

/// Capture time of the first frame: 2023-11-14T22:13:20Z, in microseconds.
pub const T0_US: u64 = 1_700_000_000_000_000;

/// A frame arriving on eth0 from the gateway's MAC.
pub fn eth_from_gw() -> EthSpec {
    EthSpec {
        src: GW_MAC,
        dst: ETH0_MAC,
        vlan: None,
        pad: true,
    }
}

/// A frame arriving on eth0 from 1.2.3.4's MAC.
pub fn eth_from_peer() -> EthSpec {
    EthSpec {
        src: PEER_MAC,
        ..eth_from_gw()
    }
}

/// A frame arriving on docker0 from the container.
pub fn eth_from_container() -> EthSpec {
    EthSpec {
        src: CONTAINER_MAC,
        dst: DOCKER0_MAC,
        vlan: None,
        pad: true,
    }
}

pub fn ip(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, ident: u16) -> IpSpec {
    IpSpec {
        src,
        dst,
        ttl,
        ident,
        ..IpSpec::default()
    }
}

/// A TCP SYN.
pub fn syn(eth: &EthSpec, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp_frame(
        eth,
        &ip(src, dst, 64, sport),
        &TcpSpec {
            src_port: sport,
            dst_port: dport,
            seq: 0x1000_0000 + u32::from(sport),
            ..TcpSpec::default()
        },
        &[],
    )
}

/// A UDP datagram with a small payload.
pub fn udp(
    eth: &EthSpec,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    ttl: u8,
) -> Vec<u8> {
    udp_frame(
        eth,
        &ip(src, dst, ttl, sport),
        &UdpSpec {
            src_port: sport,
            dst_port: dport,
        },
        b"fastables",
    )
}

/// The demo's input frames, per interface: `(time in µs, frame)`.
pub struct DemoInput {
    pub eth0: Vec<(u64, Vec<u8>)>,
    pub docker0: Vec<(u64, Vec<u8>)>,
}

/// The frames of `./demo.sh`, one interesting case each (see the demo rules).
pub fn demo_input() -> DemoInput {
    let t = |ms: u64| T0_US + ms * 1000;
    let (gw, peer, ctr) = (eth_from_gw(), eth_from_peer(), eth_from_container());
    DemoInput {
        eth0: vec![
            // SSH from 1.2.3.4: accepted by filter INPUT; nothing listens, so a RST comes back.
            (t(0), syn(&peer, PEER_IP, 40001, ETH0_IP2, 22)),
            // SSH from elsewhere: dropped by filter INPUT.
            (t(10), syn(&gw, REMOTE_IP, 40002, ETH0_IP, 22)),
            // Telnet: REJECT --reject-with tcp-reset.
            (t(20), syn(&gw, REMOTE_IP, 40003, ETH0_IP, 23)),
            // SNMP: REJECT --reject-with icmp-port-unreachable.
            (t(30), udp(&gw, REMOTE_IP, 40004, ETH0_IP, 161, 64)),
            // The DNS answer to the container's query (t=5ms), to the NATed
            // address: translated back to 172.18.0.2:33894.
            (
                t(7),
                udp(&gw, Ipv4Addr::new(8, 8, 8, 8), 53, ETH0_IP, 33894, 64),
            ),
            // Forwarded to the container: TTL 64 in, 64 out (mangle TTL --ttl-inc 1).
            (t(40), udp(&gw, REMOTE_IP, 40005, CONTAINER_IP, 8080, 64)),
            // Forwarded with TTL 1: still delivered, as the kernel does with this rule.
            (t(50), udp(&gw, REMOTE_IP, 40006, CONTAINER_IP, 8080, 1)),
        ],
        docker0: vec![
            // The container queries a DNS server: MASQUERADEd out of eth0 via
            // 10.0.2.2 as 10.0.2.15:33894 (the port is kept), TTL 63.
            (
                t(5),
                udp(&ctr, CONTAINER_IP, 33894, Ipv4Addr::new(8, 8, 8, 8), 53, 64),
            ),
            // TTL 1 from the container: ICMP time exceeded back to it.
            (
                t(60),
                udp(&ctr, CONTAINER_IP, 33895, Ipv4Addr::new(8, 8, 8, 8), 53, 1),
            ),
        ],
    }
}
