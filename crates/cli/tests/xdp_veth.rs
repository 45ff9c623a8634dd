//! The AF_XDP port over a real veth pair (root; CI is root): frames sent into
//! the peer come out of the port, go through the pipeline (half forwarded
//! back out, half dropped) and every UMEM chunk is accounted for afterwards.
//!
//! The test thread moves into a network namespace of its own
//! (`unshare(CLONE_NEWNET)` affects only the calling thread), so the veth
//! pair disappears with the thread's namespace whatever happens.
#![allow(unsafe_code)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastables_config::{Config, XdpMode, ZeroCopy};
use fastables_dataplane::pipeline::Pipeline;
use fastables_dataplane::worker::Worker;
use fastables_packet::builder::{udp_frame, EthSpec, IpSpec, UdpSpec};
use fastables_packet::MacAddr;
use fastables_rules::compile::CompiledRuleset;
use fastables_xdp::{Options, PortSpec, XdpPort};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An AF_PACKET socket bound to `dev` (in the calling thread's namespace).
struct Raw(i32);

impl Raw {
    fn bind(dev: &str) -> Raw {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: plain calls with checked results; `sll` is a zeroed
        // sockaddr_ll filled in before bind.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            let r = libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            Raw(fd)
        }
    }

    fn send(&self, f: &[u8]) {
        // SAFETY: `f` is a live buffer of `f.len()` bytes.
        let n = unsafe { libc::send(self.0, f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
    }

    /// One frame, or `None` after the receive timeout.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        (n > 0).then_some(n as usize)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: closes the socket opened in `bind`, once.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn frames_through_the_port_are_all_accounted_for() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the AF_XDP tests: not root"
        );
        eprintln!("note: not root; skipping the AF_XDP veth test");
        return;
    }
    // A namespace of this thread's own.
    // SAFETY: unshare of the network namespace for the calling thread only.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
    sh(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    sh(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    sh(&[
        "ip",
        "link",
        "add",
        "xa",
        "address",
        "02:00:00:00:0a:01",
        "type",
        "veth",
        "peer",
        "name",
        "xb",
        "address",
        "02:00:00:00:0b:01",
    ]);
    sh(&["ip", "link", "set", "xa", "up"]);
    sh(&["ip", "link", "set", "xb", "up"]);

    let cfg = Config::parse(
        "[[interface]]\nname = \"xa\"\nmac = \"02:00:00:00:0a:01\"\n\
         addresses = [\"10.77.0.1/24\"]\nxdp_mode = \"generic\"\n\
         [[neighbor]]\nip = \"10.77.0.2\"\nmac = \"02:00:00:00:0b:01\"\ndev = \"xa\"\n\
         [[route]]\nto = \"0.0.0.0/0\"\nvia = \"10.77.0.2\"\ndev = \"xa\"\n",
        "/t/fastables.toml",
    )
    .unwrap();
    let rs = fastables_rules::parse::parse_restore("", "empty.rules").unwrap();
    let rules = Arc::new(CompiledRuleset::compile(&rs, &["xa"]).unwrap());
    let pipeline = Pipeline::new(&cfg, rules).unwrap();
    let mut worker = Worker::new(pipeline, 64);
    let mut port = XdpPort::open(
        &[PortSpec {
            name: "xa".into(),
            mode: XdpMode::Generic,
            zero_copy: ZeroCopy::Off,
            one_queue_ok: false,
        }],
        Options {
            ring: 512,
            ..Options::default()
        },
    )
    .unwrap();
    let info: Vec<String> = port.info().map(|i| i.to_string()).collect();
    assert_eq!(info, ["xa: XDP generic, copy mode, queue 0 of 1"]);
    let start = port.accounting();
    assert_eq!(start.free + start.in_fill, start.total);

    let peer = Raw::bind("xb");
    // Half to us, forwarded back to 10.77.0.2 (hairpin); half to another
    // host's MAC, dropped as OTHERHOST.
    let n = 2000usize;
    let ours = EthSpec {
        src: MacAddr([2, 0, 0, 0, 0x0b, 1]),
        dst: MacAddr([2, 0, 0, 0, 0x0a, 1]),
        ..EthSpec::default()
    };
    let other = EthSpec {
        dst: MacAddr([2, 0, 0, 0, 0x0c, 1]),
        ..ours
    };
    let ip = IpSpec {
        src: Ipv4Addr::new(10, 77, 0, 2),
        dst: Ipv4Addr::new(10, 77, 1, 9),
        ..IpSpec::default()
    };
    let mut received = 0usize;
    let mut buf = vec![0u8; 4096];
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (sent < n || received < n / 2) && Instant::now() < deadline {
        // Bursts of 50, so that neither ring overflows.
        for _ in 0..50 {
            if sent == n {
                break;
            }
            let eth = if sent % 2 == 0 { &ours } else { &other };
            let f = udp_frame(
                eth,
                &IpSpec {
                    ident: sent as u16,
                    ..ip.clone()
                },
                &UdpSpec {
                    src_port: 40000,
                    dst_port: 9,
                },
                &[0x5a; 64],
            );
            peer.send(&f);
            sent += 1;
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            worker.poll(&mut port);
        }
        // The forwarded half comes back to the peer (and it also sees what
        // it sent itself: AF_PACKET shows outgoing frames, skip those).
        while let Some(len) = peer.recv(&mut buf) {
            let f = &buf[..len];
            if f[0..6] == [2, 0, 0, 0, 0x0b, 1] && f[6..12] == [2, 0, 0, 0, 0x0a, 1] {
                assert_eq!(f[22], 63, "TTL decremented: {f:02x?}");
                received += 1;
            }
            if received == n / 2 && sent == n {
                break;
            }
        }
    }
    // Let the last completions come back.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(200) {
        worker.poll(&mut port);
    }
    assert_eq!(received, n / 2, "forwarded frames back at the peer");
    let drops = worker.pipeline().drops();
    assert_eq!(
        drops.get(fastables_dataplane::drop::DropReason::OtherHost),
        (n / 2) as u64
    );
    let k = port.counters(0);
    assert_eq!(k.rx, n as u64);
    assert_eq!(k.tx, (n / 2) as u64);
    assert_eq!(k.completed, k.tx);
    let end = port.accounting();
    assert_eq!(end.in_tx, 0);
    assert_eq!(
        end.free + end.in_fill,
        end.total,
        "every chunk is free or in the fill ring: {end:?}"
    );
    let ks = port.kernel_stats(0).unwrap();
    assert_eq!(ks.rx_dropped, 0, "{ks:?}");
    drop(port);
}

/// veth has no RSS: reading or setting it is refused with EOPNOTSUPP (the
/// data plane then steers frames in software).
#[test]
fn veth_rss_is_not_programmable() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the AF_XDP tests: not root"
        );
        eprintln!("note: not root; skipping the veth RSS test");
        return;
    }
    // SAFETY: unshare of the network namespace for the calling thread only.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
    sh(&[
        "ip",
        "link",
        "add",
        "ra",
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "rb",
    ]);
    for r in [
        fastables_xdp::device_rss("ra").map(|_| ()),
        fastables_xdp::set_device_rss("ra", &[0x6d; 40], 2),
    ] {
        let e = r.expect_err("veth has no RSS");
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
    }
    let e = fastables_xdp::device_rss("no-such-dev0").expect_err("no device");
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
}
