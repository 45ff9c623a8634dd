//! Differential fixture: the same TCP segments were injected (raw sockets)
//! through a Linux 6.18 netns router, and `conntrack -L` was run about 0.2 s
//! after each one. The expected lines below are that real output; here the
//! packets are replayed with virtual time and the table listed the same way.

use fastables_conntrack::{format_entry, PacketFacts, Table, TableConfig, Track};

const MS: u64 = 1_000_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

const FIN: u8 = 1;
const SYN: u8 = 2;
const RST: u8 = 4;
const ACK: u8 = 16;

struct Step {
    from_client: bool,
    sport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    win: u16,
    len: u32,
    /// Kernel `conntrack -L` output after this step (sorted), if listed.
    expect: Vec<&'static str>,
}

#[test]
fn tcp_rst_and_pickup_sequence_matches_linux() {
    let _ = FIN;
    let cli = ip(10, 1, 0, 2);
    let srv = ip(9, 9, 9, 9);
    let f1_syn = "tcp      6 119 SYN_SENT src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 [UNREPLIED] src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 mark=0 use=1";
    let f1_sr = "tcp      6 59 SYN_RECV src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 mark=0 use=1";
    let f1_es = "tcp      6 431999 ESTABLISHED src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 [ASSURED] mark=0 use=1";
    let f1_es10 = "tcp      6 9 ESTABLISHED src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 [ASSURED] mark=0 use=1";
    let f1_es300 = "tcp      6 299 ESTABLISHED src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 [ASSURED] mark=0 use=1";
    let f1_cl9 = "tcp      6 9 CLOSE src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 [ASSURED] mark=0 use=1";
    let f1_cl8 = "tcp      6 8 CLOSE src=10.1.0.2 dst=9.9.9.9 sport=40000 dport=80 src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40000 [ASSURED] mark=0 use=1";
    let f3 = "tcp      6 299 ESTABLISHED src=10.1.0.2 dst=9.9.9.9 sport=40002 dport=80 [UNREPLIED] src=9.9.9.9 dst=10.1.0.2 sport=80 dport=40002 mark=0 use=1";
    let steps: Vec<Step> = vec![
        Step {
            from_client: true,
            sport: 40000,
            flags: SYN,
            seq: 1000,
            ack: 0,
            win: 64240,
            len: 0,
            expect: vec![f1_syn],
        },
        Step {
            from_client: false,
            sport: 40000,
            flags: SYN | ACK,
            seq: 5000,
            ack: 1001,
            win: 65160,
            len: 0,
            expect: vec![f1_sr],
        },
        Step {
            from_client: true,
            sport: 40000,
            flags: ACK,
            seq: 1001,
            ack: 5001,
            win: 502,
            len: 0,
            expect: vec![f1_es],
        },
        // RST below the client's highest ACK: INVALID, nothing changes.
        Step {
            from_client: false,
            sport: 40000,
            flags: RST,
            seq: 4000,
            ack: 0,
            win: 0,
            len: 0,
            expect: vec![f1_es],
        },
        // In window but not exact: ESTABLISHED kept, 10 s.
        Step {
            from_client: false,
            sport: 40000,
            flags: RST,
            seq: 5300,
            ack: 0,
            win: 0,
            len: 0,
            expect: vec![f1_es10],
        },
        Step {
            from_client: true,
            sport: 40000,
            flags: ACK,
            seq: 1001,
            ack: 5001,
            win: 502,
            len: 0,
            expect: vec![f1_es300],
        },
        // Exact RST: CLOSE.
        Step {
            from_client: false,
            sport: 40000,
            flags: RST,
            seq: 5001,
            ack: 0,
            win: 0,
            len: 0,
            expect: vec![f1_cl9],
        },
        // Second flow refused by RST/ACK: gone.
        Step {
            from_client: true,
            sport: 40001,
            flags: SYN,
            seq: 1000,
            ack: 0,
            win: 64240,
            len: 0,
            expect: vec![],
        },
        Step {
            from_client: false,
            sport: 40001,
            flags: RST | ACK,
            seq: 0,
            ack: 1001,
            win: 0,
            len: 0,
            expect: vec![f1_cl8],
        },
        // Third flow picked up mid-stream.
        Step {
            from_client: true,
            sport: 40002,
            flags: ACK,
            seq: 1000,
            ack: 5000,
            win: 1000,
            len: 10,
            expect: vec![f1_cl8, f3],
        },
    ];

    let mut t = Table::new(TableConfig {
        max: 1024,
        buckets: 1024,
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    for (k, s) in steps.iter().enumerate() {
        let now = k as u64 * 450 * MS;
        let p = if s.from_client {
            PacketFacts::tcp(
                cli,
                s.sport,
                srv,
                80,
                s.flags,
                s.seq,
                s.ack,
                s.win,
                s.len,
                &[],
            )
        } else {
            PacketFacts::tcp(
                srv,
                80,
                cli,
                s.sport,
                s.flags,
                s.seq,
                s.ack,
                s.win,
                s.len,
                &[],
            )
        };
        if let Track::New(n) = t.track(&p, now) {
            t.confirm(n, None, None, now).unwrap();
        }
        if s.expect.is_empty() {
            continue;
        }
        let list_at = now + 200 * MS;
        let mut got: Vec<String> = t.iter().map(|(_, e)| format_entry(e, list_at)).collect();
        got.sort();
        let mut want: Vec<String> = s.expect.iter().map(|x| x.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "after step {k}");
    }
    // conntrack -S on the router counted exactly one invalid packet.
    assert_eq!(t.stats().invalid, 1);
}
