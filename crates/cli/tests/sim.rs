//! Scenario tests: the seed topology and rules through `fastables sim`, checked
//! by decoding the output pcaps (every checksum verified independently).

mod common;

use common::seed::*;
use common::{decode, decode_all, Scenario};

const FILTER_HEAD: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";

/// The rules of one filter table with `body` (built-in chains ACCEPT).
fn filter(body: &str) -> String {
    format!("{FILTER_HEAD}{body}COMMIT\n")
}

fn us(ms: u64) -> u64 {
    T0_US + ms * 1000
}

const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[test]
fn input_drop_by_source_drops_only_that_source() {
    // The seed's `iptables -I INPUT -s 1.2.3.4 -j DROP`, as iptables-save prints it.
    let mut s = Scenario::new("dropsrc", &filter("-A INPUT -s 1.2.3.4/32 -j DROP\n"));
    s.input(
        "eth0",
        &[
            // To us from 1.2.3.4: dropped silently.
            (us(0), udp(&eth_from_peer(), PEER_IP, 5000, ETH0_IP2, 9, 64)),
            // To us from elsewhere: no socket, so the stack answers port unreachable.
            (us(1), udp(&eth_from_gw(), REMOTE_IP, 5001, ETH0_IP, 9, 64)),
            // Through us from 1.2.3.4: INPUT does not see it; forwarded to the container.
            (
                us(2),
                udp(&eth_from_peer(), PEER_IP, 5002, CONTAINER_IP, 9, 64),
            ),
        ],
    );
    let r = s.run();
    let eth0 = decode_all(&r.sent("eth0"));
    assert_eq!(eth0.len(), 1, "{eth0:?}");
    assert_eq!(
        (eth0[0].src, eth0[0].dst, eth0[0].proto),
        (ETH0_IP, REMOTE_IP, 1)
    );
    assert_eq!(eth0[0].icmp_type_code(), (3, 3));
    let docker0 = decode_all(&r.sent("docker0"));
    assert_eq!(docker0.len(), 1);
    assert_eq!((docker0[0].src, docker0[0].ports()), (PEER_IP, (5002, 9)));
    let out = r.stdout();
    assert!(out.contains("filter_drop"), "{out}");
}

#[test]
fn ssh_is_accepted_only_from_one_host() {
    let rules = filter(
        "-A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n\
         -A INPUT -p tcp -m tcp --dport 22 -j DROP\n",
    );
    let mut s = Scenario::new("ssh", &rules);
    s.input(
        "eth0",
        &[
            (us(0), syn(&eth_from_peer(), PEER_IP, 40001, ETH0_IP2, 22)),
            (us(1), syn(&eth_from_gw(), REMOTE_IP, 40002, ETH0_IP, 22)),
            // Another port from elsewhere: not SSH, accepted by policy, answered with a RST.
            (us(2), syn(&eth_from_gw(), REMOTE_IP, 40003, ETH0_IP, 2222)),
        ],
    );
    let r = s.run();
    let sent = r.sent("eth0");
    let eth0 = decode_all(&sent);
    // Accepted SYNs reach the (empty) local stack, which resets them, as Linux
    // does with nothing listening; the dropped one gets no answer.
    let answered: Vec<_> = eth0.iter().map(|d| (d.dst, d.ports())).collect();
    assert_eq!(
        answered,
        vec![(PEER_IP, (22, 40001)), (REMOTE_IP, (2222, 40003))]
    );
    for d in &eth0 {
        assert_eq!(d.proto, 6);
        assert_eq!(d.tcp_flags(), TCP_RST | TCP_ACK);
    }
    // The reply to 1.2.3.4 leaves towards its own MAC (on-link, static neighbor).
    assert_eq!(eth0[0].dst_mac, PEER_MAC.0);
    assert_eq!(eth0[0].src, ETH0_IP2);
    assert_eq!(eth0[1].dst_mac, GW_MAC.0);
}

#[test]
fn mangle_ttl_inc_cancels_the_forwarding_decrement() {
    let rules = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
                 :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                 -A PREROUTING -i eth0 -j TTL --ttl-inc 1\nCOMMIT\n";
    let mut s = Scenario::new("ttl", rules);
    s.input(
        "eth0",
        &[
            (
                us(0),
                udp(&eth_from_gw(), REMOTE_IP, 1000, CONTAINER_IP, 80, 64),
            ),
            // TTL 1: incremented to 2 before the forwarding check, leaves with 1.
            (
                us(1),
                udp(&eth_from_gw(), REMOTE_IP, 1001, CONTAINER_IP, 80, 1),
            ),
        ],
    );
    s.input(
        "docker0",
        &[
            (
                us(2),
                udp(&eth_from_container(), CONTAINER_IP, 1002, REMOTE_IP, 80, 64),
            ),
            // TTL 1 from docker0 (no rule): time exceeded back to the container.
            (
                us(3),
                udp(&eth_from_container(), CONTAINER_IP, 1003, REMOTE_IP, 80, 1),
            ),
        ],
    );
    let r = s.run();
    let docker0 = decode_all(&r.sent("docker0"));
    let got: Vec<_> = docker0.iter().map(|d| (d.proto, d.ttl)).collect();
    assert_eq!(got[..2], [(17, 64), (17, 1)], "{docker0:?}");
    for d in &docker0[..2] {
        assert_eq!(d.dst_mac, CONTAINER_MAC.0);
        assert_eq!(d.src_mac, DOCKER0_MAC.0);
    }
    assert_eq!(docker0.len(), 3);
    assert_eq!(docker0[2].icmp_type_code(), (11, 0));
    assert_eq!((docker0[2].src, docker0[2].dst), (DOCKER0_IP, CONTAINER_IP));
    let eth0 = decode_all(&r.sent("eth0"));
    assert_eq!(eth0.len(), 1);
    assert_eq!((eth0[0].ttl, eth0[0].dst_mac), (63, GW_MAC.0));
}

#[test]
fn reject_replies_have_valid_checksums_and_kernel_fields() {
    let rules = filter(
        "-A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset\n\
         -A INPUT -p udp -m udp --dport 161 -j REJECT --reject-with icmp-port-unreachable\n\
         -A FORWARD -p tcp -m tcp --dport 25 -j REJECT --reject-with tcp-reset\n\
         -A FORWARD -p udp -j REJECT\n",
    );
    let mut s = Scenario::new("reject", &rules);
    let telnet = syn(&eth_from_gw(), REMOTE_IP, 40003, ETH0_IP, 23);
    let snmp = udp(&eth_from_gw(), REMOTE_IP, 40004, ETH0_IP, 161, 64);
    s.input("eth0", &[(us(0), telnet.clone()), (us(1), snmp.clone())]);
    s.input(
        "docker0",
        &[
            (
                us(2),
                syn(&eth_from_container(), CONTAINER_IP, 40005, REMOTE_IP, 25),
            ),
            (
                us(3),
                udp(
                    &eth_from_container(),
                    CONTAINER_IP,
                    40006,
                    REMOTE_IP,
                    53,
                    64,
                ),
            ),
        ],
    );
    let r = s.run();
    let eth0 = decode_all(&r.sent("eth0"));
    assert_eq!(eth0.len(), 2, "{eth0:?}");

    // tcp-reset to a SYN (no ACK): seq 0, ack = SYN's seq + 1, RST|ACK (nf_send_reset).
    let t = &eth0[0];
    let syn_in = decode(&telnet);
    assert_eq!((t.src, t.dst, t.proto), (ETH0_IP, REMOTE_IP, 6));
    assert_eq!(t.ports(), (23, 40003));
    assert_eq!(t.tcp_flags(), TCP_RST | TCP_ACK);
    assert_eq!(t.tcp_seq(), 0);
    assert_eq!(t.tcp_ack(), syn_in.tcp_seq().wrapping_add(1));
    assert_eq!(t.dst_mac, GW_MAC.0);

    // icmp-port-unreachable quotes the offending datagram's header and first 8 bytes at least.
    let u = &eth0[1];
    let udp_in = decode(&snmp);
    assert_eq!((u.src, u.dst, u.proto), (ETH0_IP, REMOTE_IP, 1));
    assert_eq!(u.icmp_type_code(), (3, 3));
    let q = u.icmp_quoted();
    assert!(q.len() >= 28);
    assert_eq!(&q[..28], &udp_in.ip[..28]);

    // In FORWARD: the reset comes from the router's address on the ingress side,
    // and plain REJECT is icmp-port-unreachable.
    let docker0 = decode_all(&r.sent("docker0"));
    assert_eq!(docker0.len(), 2, "{docker0:?}");
    assert_eq!((docker0[0].proto, docker0[0].dst), (6, CONTAINER_IP));
    assert_eq!(
        docker0[0].src, REMOTE_IP,
        "a TCP reset is sent from the original destination"
    );
    assert_eq!(docker0[0].tcp_flags(), TCP_RST | TCP_ACK);
    assert_eq!((docker0[1].proto, docker0[1].icmp_type_code()), (1, (3, 3)));
    assert_eq!((docker0[1].src, docker0[1].dst), (DOCKER0_IP, CONTAINER_IP));
}

/// A FORWARD chain with user chains: jump, RETURN, goto, and a DROP policy.
const CHAINS: &str = "*filter\n\
:INPUT ACCEPT [0:0]\n\
:FORWARD DROP [0:0]\n\
:OUTPUT ACCEPT [0:0]\n\
:allow - [0:0]\n\
:deny_some - [0:0]\n\
-A FORWARD -p udp -j deny_some\n\
-A FORWARD -p udp -m udp --dport 53 -j ACCEPT\n\
-A FORWARD -p udp -g allow\n\
-A FORWARD -p udp -m udp --dport 999 -j ACCEPT\n\
-A allow -p udp -m udp --dport 123 -j ACCEPT\n\
-A deny_some -p udp -m udp --dport 5353 -j DROP\n\
-A deny_some -j RETURN\n\
-A deny_some -j DROP\n\
COMMIT\n";

#[test]
fn jump_goto_return_and_policy() {
    let mut s = Scenario::new("chains", CHAINS);
    let ports = [53u16, 5353, 123, 999];
    let frames: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let f = udp(
                &eth_from_container(),
                CONTAINER_IP,
                2000 + i as u16,
                REMOTE_IP,
                *p,
                64,
            );
            (us(i as u64), f)
        })
        .collect();
    s.input("docker0", &frames);
    s.input(
        "docker0",
        &[(
            us(10),
            syn(&eth_from_container(), CONTAINER_IP, 3000, REMOTE_IP, 80),
        )],
    );
    let r = s.run_into("out", &["--save-counters"]);
    // --save-counters needs a value: clap refuses.
    assert_eq!(r.output.status.code(), Some(2), "{}", r.stderr());

    let counters = s.dir.path("counters.v4");
    let r = s.run_into("out", &["--save-counters", counters.to_str().unwrap()]);
    r.assert_ok();
    // 53: RETURN from deny_some, then ACCEPT. 5353: DROP in deny_some.
    // 123: goto allow, ACCEPT. 999: goto allow, falls off its end, and a goto
    // does not come back: the FORWARD policy (DROP) applies, not the next rule.
    // TCP: policy DROP.
    let eth0 = decode_all(&r.sent("eth0"));
    let dports: Vec<_> = eth0.iter().map(|d| d.ports().1).collect();
    assert_eq!(dports, vec![53, 123]);

    // Counters as `iptables-save -c` prints them; bytes are IP total lengths
    // (UDP with 9 bytes of payload: 37; a bare SYN: 40).
    let saved = std::fs::read_to_string(&counters).unwrap();
    for line in [
        ":FORWARD DROP [2:77]",
        "[4:148] -A FORWARD -p udp -j deny_some",
        "[1:37] -A FORWARD -p udp -m udp --dport 53 -j ACCEPT",
        "[2:74] -A FORWARD -p udp -g allow",
        "[0:0] -A FORWARD -p udp -m udp --dport 999 -j ACCEPT",
        "[1:37] -A allow -p udp -m udp --dport 123 -j ACCEPT",
        "[1:37] -A deny_some -p udp -m udp --dport 5353 -j DROP",
        "[3:111] -A deny_some -j RETURN",
        "[0:0] -A deny_some -j DROP",
    ] {
        assert!(
            saved.lines().any(|l| l == line),
            "missing `{line}` in:\n{saved}"
        );
    }
    // The saved file is itself valid input.
    let out = common::fastables()
        .args(["save", "-c", "-r"])
        .arg(&counters)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), saved);
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let mut s = Scenario::new("determinism", DEMO_RULES);
    let input = demo_input();
    s.input("eth0", &input.eth0);
    s.input("docker0", &input.docker0);
    let a = s.run_into("a", &["--seed", "7"]);
    let b = s.run_into("b", &["--seed", "7"]);
    a.assert_ok();
    b.assert_ok();
    assert_eq!(a.stdout(), b.stdout());
    let mut total = 0;
    for iface in ["eth0", "docker0"] {
        let fa = std::fs::read(a.out_dir.join(format!("{iface}.pcap"))).unwrap();
        let fb = std::fs::read(b.out_dir.join(format!("{iface}.pcap"))).unwrap();
        assert_eq!(fa, fb, "{iface}.pcap differs between two runs");
        total += a.sent(iface).len();
    }
    assert!(
        total >= 6,
        "the demo should send something on both interfaces"
    );
}

const DNS_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(8, 8, 8, 8);

#[test]
fn the_demo_does_what_the_readme_says() {
    let mut s = Scenario::new("demo", DEMO_RULES);
    let input = demo_input();
    s.input("eth0", &input.eth0);
    s.input("docker0", &input.docker0);
    let r = s.run();
    let eth0 = decode_all(&r.sent("eth0"));
    let docker0 = decode_all(&r.sent("docker0"));
    // eth0 out, in time order: the DNS query (t=5ms), RST to 1.2.3.4 for SSH (t=0 came
    // first), telnet RST, SNMP port unreachable.
    assert_eq!(eth0.len(), 4, "{eth0:?}");
    assert_eq!(
        (eth0[0].proto, eth0[0].dst, eth0[0].tcp_flags()),
        (6, PEER_IP, TCP_RST | TCP_ACK)
    );
    assert_eq!(
        (eth0[1].proto, eth0[1].ttl, eth0[1].ports()),
        (17, 63, (33894, 53))
    );
    assert_eq!((eth0[1].src, eth0[1].dst), (ETH0_IP, DNS_IP), "MASQUERADE");
    assert_eq!((eth0[2].proto, eth0[2].ports()), (6, (23, 40003)));
    assert_eq!((eth0[3].proto, eth0[3].icmp_type_code()), (1, (3, 3)));
    // docker0 out: the DNS answer translated back (t=7ms), the two forwarded
    // datagrams (TTL 64 and 1: the mangle rule cancels the decrement), the
    // time exceeded for the container's TTL-1 query.
    assert_eq!(docker0.len(), 4, "{docker0:?}");
    assert_eq!(
        (docker0[0].src, docker0[0].dst, docker0[0].ports()),
        (DNS_IP, CONTAINER_IP, (53, 33894))
    );
    let d: Vec<_> = docker0[1..3].iter().map(|d| (d.proto, d.ttl)).collect();
    assert_eq!(d, [(17, 64), (17, 1)]);
    assert_eq!(docker0[3].icmp_type_code(), (11, 0));
    // The conntrack table at the end: the DNS flow, replied (the kernel's
    // line, timeout aside).
    let r = s.run_into("ct", &["--conntrack"]);
    r.assert_ok();
    assert!(
        r.stdout().lines().any(|l| l.starts_with("udp      17 ")
            && l.ends_with(
                " src=172.18.0.2 dst=8.8.8.8 sport=33894 dport=53 src=8.8.8.8 dst=10.0.2.15 sport=53 dport=33894 mark=0 use=1"
            )),
        "{}",
        r.stdout()
    );
    // SSH from elsewhere was dropped by the filter.
    assert!(r.stdout().contains("filter_drop"), "{}", r.stdout());
}

#[test]
fn conntrack_option_without_conntrack_shows_no_entries() {
    // Rules that need no conntrack: the table is empty, as `conntrack -L`
    // on a host where nothing loaded it.
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -s 1.2.3.99/32 -j DROP\nCOMMIT\n";
    let mut s = Scenario::new("ct", rules);
    s.input("eth0", &[]);
    let r = s.run_into("out", &["--conntrack"]);
    r.assert_ok();
    assert_eq!(
        r.stderr(),
        "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n"
    );
}

#[test]
fn input_errors_name_the_file_and_interface() {
    let mut s = Scenario::new("inerr", DEMO_RULES);
    s.input("eth9", &[]);
    let r = s.run_into("out", &[]);
    assert_eq!(r.output.status.code(), Some(1));
    assert!(
        r.stderr()
            .contains("no interface `eth9` in the configuration (configured: eth0, docker0)"),
        "{}",
        r.stderr()
    );

    let mut s = Scenario::new("inerr2", DEMO_RULES);
    s.input(
        "eth0",
        &[(us(0), udp(&eth_from_gw(), REMOTE_IP, 1, ETH0_IP, 9, 64))],
    );
    let path = s.dir.path("in-eth0-0.pcap");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, bytes).unwrap();
    let r = s.run_into("out", &[]);
    assert_eq!(r.output.status.code(), Some(1));
    assert!(
        r.stderr().contains("in-eth0-0.pcap: record 0 is truncated"),
        "{}",
        r.stderr()
    );
}

/// The seed's MASQUERADE rules translate the container's packets; a packet
/// from eth0 straight to the container address is forwarded as it is.
#[test]
fn nat_targets_translate() {
    let rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :POSTROUTING ACCEPT [0:0]\n\
                 -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680\n\
                 -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\n\
                 COMMIT\n";
    let mut s = Scenario::new("nat", rules);
    let ctr = eth_from_container();
    s.input(
        "docker0",
        &[
            (us(0), udp(&ctr, CONTAINER_IP, 33894, REMOTE_IP, 53, 64)),
            (us(1), syn(&ctr, CONTAINER_IP, 37622, REMOTE_IP, 80)),
        ],
    );
    s.input(
        "eth0",
        &[(
            us(2),
            udp(&eth_from_gw(), REMOTE_IP, 53, CONTAINER_IP, 33894, 64),
        )],
    );
    let r = s.run();
    let eth0 = decode_all(&r.sent("eth0"));
    assert_eq!(eth0.len(), 2);
    assert_eq!((eth0[0].src, eth0[0].ports()), (ETH0_IP, (33894, 53)));
    assert_eq!(eth0[1].src, ETH0_IP);
    assert!((55666..=55680).contains(&eth0[1].ports().0), "{eth0:?}");
    let docker0 = decode_all(&r.sent("docker0"));
    assert_eq!(docker0.len(), 1);
    assert_eq!((docker0[0].src, docker0[0].dst), (REMOTE_IP, CONTAINER_IP));
}

#[test]
fn log_lines_are_printed_in_packet_order() {
    let rules = filter(
        "-A INPUT -p tcp -j LOG --log-prefix \"in: \"\n\
         -A FORWARD -j LOG\n",
    );
    let mut s = Scenario::new("log", &rules);
    s.input(
        "eth0",
        &[
            (us(0), syn(&eth_from_gw(), REMOTE_IP, 40002, ETH0_IP, 22)),
            (
                us(1),
                udp(&eth_from_gw(), REMOTE_IP, 40005, CONTAINER_IP, 8080, 64),
            ),
        ],
    );
    let r = s.run();
    let logs: Vec<_> = r
        .stdout()
        .lines()
        .filter(|l| l.starts_with("log: "))
        .map(str::to_string)
        .collect();
    assert_eq!(logs.len(), 2, "{}", r.stdout());
    assert!(
        logs[0].starts_with("log: in: IN=eth0 OUT= MAC=52:54:00:c2:be:11:52:54:00:12:35:02:08:00 SRC=93.184.216.34 DST=10.0.2.15 LEN=40 "),
        "{}",
        logs[0]
    );
    assert!(
        logs[0].contains(" PROTO=TCP SPT=40002 DPT=22 "),
        "{}",
        logs[0]
    );
    assert!(
        logs[1].starts_with("log: IN=eth0 OUT=docker0 "),
        "{}",
        logs[1]
    );
    assert!(logs[1].contains(" TTL=63 "), "{}", logs[1]);
}
