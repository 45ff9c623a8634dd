//! `fastables gen`: the AF_XDP traffic generator, and with `--sink` the
//! receiving end that counts loss, reordering, duplicates and one-way
//! latency (crate `fastables-gen`). A progress line a second goes to
//! stderr; the summary to stdout (`--json`: one JSON object).

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use fastables_config::XdpMode;
use fastables_gen::flow::{FlowMode, FlowSpace, Flows, Span};
use fastables_gen::frame::Proto;
use fastables_gen::tcp::Close;
use fastables_gen::xsk::{self, GenOptions, NextHop, PortOptions, SinkOptions};
use fastables_packet::MacAddr;

use crate::CliError;

/// `fastables gen` arguments.
#[derive(Args, Debug)]
pub struct GenArgs {
    /// Receive and count the generator's frames instead of sending.
    #[arg(long)]
    pub sink: bool,
    /// The interface (its queue 0).
    #[arg(long, value_name = "IFACE")]
    pub dev: String,
    /// Frames per second (0: as fast as possible).
    #[arg(long, value_name = "PPS")]
    pub rate: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Generator: send this many frames. Sink: stop when this many arrived;
    /// the ones missing are lost.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Sink: stop when nothing came for this many seconds after something did.
    #[arg(long, value_name = "SECS")]
    pub idle: Option<f64>,
    /// Frame size without FCS [default: the least the protocol needs, 60
    /// for udp, 72 for syn and tcp].
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,
    /// udp; syn (TCP SYNs carrying the stamp as data); or tcp: every flow
    /// a TCP connection with a three-way handshake (answered by `gen --sink
    /// --echo`), then data segments carrying the stamp in sequence (--count
    /// and --rate count SYNs and data; the ACKs and FINs go unpaced), then
    /// closed (--close) [default: udp].
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<Proto>,
    /// --proto tcp: how the connections end: fin (FIN exchange: TIME_WAIT in
    /// a router's conntrack), rst, or none (they stay ESTABLISHED)
    /// [default: fin].
    #[arg(long, value_name = "HOW")]
    pub close: Option<Close>,
    /// Source addresses.
    #[arg(long, value_name = "A[-B]")]
    pub src: Option<Span<Ipv4Addr>>,
    /// Destination addresses.
    #[arg(long, value_name = "A[-B]")]
    pub dst: Option<Span<Ipv4Addr>>,
    /// Source ports [default: 1024].
    #[arg(long, value_name = "P[-Q]")]
    pub sport: Option<Span<u16>>,
    /// Destination ports [default: 9].
    #[arg(long, value_name = "P[-Q]")]
    pub dport: Option<Span<u16>>,
    /// A fixed set of N flows (the first N of the flow space) instead of
    /// cycling through all of it. With --conntrack-fill: the established
    /// flows [default: 100]. --proto tcp keeps a connection per flow: at
    /// most 1048576.
    #[arg(long, value_name = "N")]
    pub flows: Option<u64>,
    /// N new flows (unique tuples) a second; between them, the flows
    /// started so far in turn.
    #[arg(long, value_name = "N")]
    pub new_flows_rate: Option<u64>,
    /// Destination MAC (else resolved by ARP).
    #[arg(long, value_name = "MAC", conflicts_with = "gateway")]
    pub dst_mac: Option<MacAddr>,
    /// The next hop to resolve by ARP [default: the first --dst address].
    #[arg(long, value_name = "IP")]
    pub gateway: Option<Ipv4Addr>,
    /// Source MAC [default: the device's].
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<MacAddr>,
    /// The conntrack-limit test: --flows established flows kept alive (a
    /// packet each --keepalive-ms, answered by `gen --sink --echo`), then
    /// after --warmup seconds new flows at --new-flows-rate a second, each
    /// one packet on a fresh tuple; reports per second how many new flows
    /// passed, whether the established ones survived, and their round trip.
    #[arg(long)]
    pub conntrack_fill: bool,
    /// --conntrack-fill: a packet per established flow this often [default: 100].
    #[arg(long, value_name = "MS")]
    pub keepalive_ms: Option<u64>,
    /// --conntrack-fill: seconds of established traffic before the new
    /// flows (the kernel marks a UDP stream ASSURED after 2 s) [default: 3].
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<f64>,
    /// Sink: send every stamped UDP frame back (addresses and ports
    /// swapped), the responder of --conntrack-fill; and answer TCP as the
    /// peer of --proto tcp (SYN-ACK, an ACK per data segment, FIN|ACK; a RST
    /// for unknown connections).
    #[arg(long)]
    pub echo: bool,
    /// Sink with --echo: the TCP connections the responder keeps at once
    /// (allocated at start; SYNs beyond get no answer) [default: 65536].
    #[arg(long, value_name = "N")]
    pub tcp_connections: Option<usize>,
    /// The summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_mode)]
    pub xdp_mode: XdpMode,
    /// Descriptors per AF_XDP ring; a power of two.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub ring: u32,
    /// Frames per burst.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub batch: usize,
}

fn parse_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        _ => Err(format!("`{s}`: expected auto, native or generic")),
    }
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(format!("fastables gen: {}", m.into()))
}

/// Seconds as nanoseconds; `opt` names the option in the error.
fn secs_ns(v: Option<f64>, opt: &str) -> Result<Option<u64>, CliError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some((s * 1e9) as u64)),
        Some(s) => Err(usage(format!(
            "{opt} {s}: expected a positive number of seconds"
        ))),
    }
}

/// The options of one side given with the other (`--rate` with `--sink`).
fn misplaced(a: &GenArgs) -> Option<&'static str> {
    let given = |b: bool, name| b.then_some(name);
    if a.sink {
        given(a.rate.is_some(), "--rate")
            .or(given(a.size.is_some(), "--size"))
            .or(given(a.proto.is_some(), "--proto"))
            .or(given(a.src.is_some(), "--src"))
            .or(given(a.dst.is_some(), "--dst"))
            .or(given(a.sport.is_some(), "--sport"))
            .or(given(a.dport.is_some(), "--dport"))
            .or(given(a.flows.is_some(), "--flows"))
            .or(given(a.new_flows_rate.is_some(), "--new-flows-rate"))
            .or(given(a.dst_mac.is_some(), "--dst-mac"))
            .or(given(a.gateway.is_some(), "--gateway"))
            .or(given(a.src_mac.is_some(), "--src-mac"))
            .or(given(a.conntrack_fill, "--conntrack-fill"))
            .or(given(a.keepalive_ms.is_some(), "--keepalive-ms"))
            .or(given(a.warmup.is_some(), "--warmup"))
            .or(given(a.close.is_some(), "--close"))
    } else {
        given(a.idle.is_some(), "--idle")
            .or(given(a.echo, "--echo"))
            .or(given(a.tcp_connections.is_some(), "--tcp-connections"))
    }
}

fn port_options(a: &GenArgs) -> Result<PortOptions, CliError> {
    if a.batch == 0 || a.batch > a.ring as usize {
        return Err(usage(format!(
            "--batch {}: expected 1 to the ring size ({})",
            a.batch, a.ring
        )));
    }
    Ok(PortOptions {
        dev: a.dev.clone(),
        mode: a.xdp_mode,
        ring: a.ring,
        batch: a.batch,
    })
}

/// The generator's options from the arguments.
fn gen_options(a: &GenArgs) -> Result<GenOptions, CliError> {
    let (Some(src), Some(dst)) = (a.src, a.dst) else {
        return Err(usage(
            "the generator needs --src A[-B] and --dst A[-B] (or --sink to receive)",
        ));
    };
    let space = FlowSpace {
        src,
        dst,
        sport: a.sport.unwrap_or(Span::one(1024)),
        dport: a.dport.unwrap_or(Span::one(9)),
    };
    let mode = match (a.flows, a.new_flows_rate) {
        (Some(_), Some(_)) if !a.conntrack_fill => {
            return Err(usage(
                "--flows and --new-flows-rate exclude each other (but for --conntrack-fill)",
            ))
        }
        _ if a.conntrack_fill => FlowMode::Cycle,
        (Some(n), _) => FlowMode::Fixed(n),
        (None, Some(r)) => FlowMode::NewPerSecond(r),
        (None, None) => FlowMode::Cycle,
    };
    let flows = Flows::new(space, mode).map_err(|e| usage(e.to_string()))?;
    let next_hop = match (a.dst_mac, a.gateway) {
        (Some(m), _) => NextHop::Mac(m),
        (None, Some(g)) => NextHop::Arp(g),
        (None, None) => NextHop::Arp(dst.lo),
    };
    let proto = a.proto.unwrap_or(Proto::Udp);
    if a.close.is_some() && proto != Proto::Tcp {
        return Err(usage("--close is for --proto tcp"));
    }
    let duration_ns = secs_ns(a.duration, "--duration")?;
    if proto == Proto::Tcp {
        fastables_gen::tcp::flows_needed(&space, mode, duration_ns)
            .map_err(|e| usage(e.to_string()))?;
    }
    Ok(GenOptions {
        port: port_options(a)?,
        rate: a.rate.unwrap_or(0),
        count: a.count,
        duration_ns,
        proto,
        size: a.size.unwrap_or(proto.min_size()),
        flows,
        next_hop,
        src_mac: a.src_mac,
        close: a.close.unwrap_or(Close::Fin),
    })
}

fn sink_options(a: &GenArgs) -> Result<SinkOptions, CliError> {
    Ok(SinkOptions {
        port: port_options(a)?,
        count: a.count,
        duration_ns: secs_ns(a.duration, "--duration")?,
        idle_ns: secs_ns(a.idle, "--idle")?,
        echo: a.echo,
        tcp_connections: match a.tcp_connections {
            Some(n) if !a.echo => {
                return Err(usage(format!(
                    "--tcp-connections {n} is for the responder: add --echo"
                )))
            }
            Some(n) if n == 0 || n > fastables_gen::tcp::MAX_RESPONDER_CONNECTIONS => {
                return Err(usage(format!(
                    "--tcp-connections {n}: expected 1 to {}",
                    fastables_gen::tcp::MAX_RESPONDER_CONNECTIONS
                )))
            }
            Some(n) => n,
            None => 65536,
        },
    })
}

/// `--conntrack-fill`'s options from the arguments.
fn fill_options(a: &GenArgs) -> Result<xsk::FillOptions, CliError> {
    let Some(new_rate) = a.new_flows_rate.filter(|r| *r > 0) else {
        return Err(usage(
            "--conntrack-fill needs --new-flows-rate N (new flows a second)",
        ));
    };
    if a.duration.is_none() {
        return Err(usage(
            "--conntrack-fill needs --duration SECS (warm-up included)",
        ));
    }
    if a.proto.is_some_and(|p| p != Proto::Udp) || a.count.is_some() || a.rate.is_some() {
        return Err(usage(
            "--conntrack-fill sends UDP paced by its plan: no --proto syn or tcp, --count or --rate",
        ));
    }
    let keepalive_ms = a.keepalive_ms.unwrap_or(100);
    if keepalive_ms == 0 {
        return Err(usage("--keepalive-ms 0: expected at least 1"));
    }
    let plan = fastables_gen::fill::FillPlan {
        established: a.flows.unwrap_or(100),
        keepalive_ns: keepalive_ms * 1_000_000,
        new_rate,
        warmup_ns: secs_ns(Some(a.warmup.unwrap_or(3.0)), "--warmup")?.unwrap_or(0),
    };
    Ok(xsk::FillOptions {
        gen: gen_options(a)?,
        plan,
    })
}

/// `fastables gen [--sink] --dev IFACE ...`.
pub fn run(a: &GenArgs) -> Result<(), CliError> {
    if let Some(opt) = misplaced(a) {
        let (side, other) = if a.sink {
            ("a generator option", "--sink")
        } else {
            ("a sink option", "the generator (add --sink)")
        };
        return Err(usage(format!("{opt} is {side}: not for {other}")));
    }
    if a.count == Some(0) {
        return Err(usage("--count 0: expected at least 1"));
    }
    // Everything the arguments can get wrong, before root and devices.
    let fill = if a.conntrack_fill {
        Some(fill_options(a)?)
    } else {
        None
    };
    let gen = if a.sink || fill.is_some() {
        None
    } else {
        Some(gen_options(a)?)
    };
    let sink = if a.sink { Some(sink_options(a)?) } else { None };
    if !crate::run::is_root() {
        return Err(CliError::Start(
            "fastables gen needs root (AF_XDP sockets and XDP programs)".to_string(),
        ));
    }
    crate::run::mount_bpffs();
    let stop = Arc::new(AtomicBool::new(false));
    crate::on_signals(&crate::STOP_SIGNALS, &stop)?;
    let progress = |l: &str| eprintln!("{l}");
    if let Some(o) = fill {
        let (f, xdp, end) = xsk::fill(o, &stop, progress).map_err(gen_error)?;
        if a.json {
            println!("{}", fastables_gen::fill::report_json(&f, end));
        } else {
            println!("gen: {} ({xdp})", a.dev);
            print!("{}", fastables_gen::fill::report(&f, end));
        }
        return Ok(());
    }
    let out = match (gen, sink) {
        (Some(o), _) => {
            if let NextHop::Arp(ip) = o.next_hop {
                eprintln!("gen: resolving {ip} by ARP on {}", a.dev);
            }
            let r = xsk::generate(o, &stop, progress).map_err(gen_error)?;
            if a.json {
                format!("{}\n", r.to_json())
            } else {
                r.to_string()
            }
        }
        (None, Some(o)) => {
            let ready = |info: &str| eprintln!("sink: ready on {info}");
            let r = xsk::sink(o, &stop, ready, progress).map_err(gen_error)?;
            if a.json {
                format!("{}\n", r.to_json())
            } else {
                r.to_string()
            }
        }
        (None, None) => String::new(),
    };
    print!("{out}");
    Ok(())
}

fn gen_error(e: fastables_gen::GenError) -> CliError {
    match e {
        fastables_gen::GenError::Xdp(x) => CliError::Xdp(x),
        fastables_gen::GenError::SizeTooSmall { .. }
        | fastables_gen::GenError::SizeTooLarge { .. } => usage(e.to_string()),
        other => CliError::Start(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct GenCommandLine {
        #[command(flatten)]
        a: GenArgs,
    }

    fn args(line: &[&str]) -> GenArgs {
        let mut v = vec!["gen"];
        v.extend_from_slice(line);
        GenCommandLine::try_parse_from(v).unwrap().a
    }

    #[test]
    fn generator_options_become_a_flow_space() {
        let a = args(&[
            "--dev",
            "eth0",
            "--src",
            "10.0.0.1-10.0.0.4",
            "--dst",
            "192.0.2.1",
            "--sport",
            "1000-1099",
            "--count",
            "5",
            "--dst-mac",
            "02:00:00:00:00:02",
            "--proto",
            "syn",
            "--size",
            "100",
        ]);
        let o = gen_options(&a).unwrap();
        assert_eq!(o.flows.space().size(), 400);
        assert_eq!(o.count, Some(5));
        assert_eq!(o.proto, Proto::Syn);
        assert_eq!(o.size, 100);
        assert!(matches!(o.next_hop, NextHop::Mac(m) if m == MacAddr([2, 0, 0, 0, 0, 2])));
        let b = args(&["--dev", "eth0", "--src", "10.0.0.1", "--dst", "8.8.8.8"]);
        let o = gen_options(&b).unwrap();
        assert!(matches!(o.next_hop, NextHop::Arp(ip) if ip == Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!((o.size, o.rate, o.proto), (60, 0, Proto::Udp));
        let c = args(&[
            "--dev", "eth0", "--src", "10.0.0.1", "--dst", "8.8.8.8", "--proto", "syn",
        ]);
        assert_eq!(gen_options(&c).unwrap().size, 72);
        let d = args(&[
            "--dev",
            "eth0",
            "--src",
            "10.0.0.1",
            "--dst",
            "8.8.8.8",
            "--sport",
            "1000-1007",
            "--proto",
            "tcp",
            "--close",
            "none",
        ]);
        let o = gen_options(&d).unwrap();
        assert_eq!((o.proto, o.size, o.close), (Proto::Tcp, 72, Close::None));
        let e = args(&[
            "--dev", "eth0", "--src", "10.0.0.1", "--dst", "8.8.8.8", "--proto", "tcp",
        ]);
        assert_eq!(gen_options(&e).unwrap().close, Close::Fin);
        let s = args(&[
            "--dev",
            "eth0",
            "--sink",
            "--echo",
            "--tcp-connections",
            "10",
        ]);
        assert_eq!(sink_options(&s).unwrap().tcp_connections, 10);
        for bad in ["0", "16777217"] {
            let z = args(&[
                "--dev",
                "eth0",
                "--sink",
                "--echo",
                "--tcp-connections",
                bad,
            ]);
            assert_eq!(
                sink_options(&z).unwrap_err().to_string(),
                format!("fastables gen: --tcp-connections {bad}: expected 1 to 16777216")
            );
        }
    }

    #[test]
    fn bad_input_is_named() {
        let err = |line: &[&str]| {
            let mut v = vec!["gen"];
            v.extend_from_slice(line);
            match GenCommandLine::try_parse_from(v) {
                Err(e) => e.to_string(),
                Ok(t) => run(&t.a).unwrap_err().to_string(),
            }
        };
        assert!(
            err(&["--dev", "x", "--src", "10.0.0.9-10.0.0.1"]).contains("the range is reversed")
        );
        assert!(err(&["--dev", "x", "--dport", "99999"]).contains("`99999` is not a port"));
        assert!(err(&["--dev", "x", "--proto", "icmp"]).contains("expected udp, syn or tcp"));
        assert!(err(&["--dev", "x", "--close", "half"]).contains("expected fin, rst or none"));
        assert_eq!(
            err(&["--dev", "x", "--src", "1.1.1.1", "--dst", "2.2.2.2", "--close", "rst"]),
            "fastables gen: --close is for --proto tcp"
        );
        assert_eq!(
            err(&["--dev", "x", "--sink", "--close", "rst"]),
            "fastables gen: --close is a generator option: not for --sink"
        );
        assert_eq!(
            err(&["--dev", "x", "--sink", "--tcp-connections", "5"]),
            "fastables gen: --tcp-connections 5 is for the responder: add --echo"
        );
        assert_eq!(
            err(&[
                "--dev", "x", "--src", "10.0.0.0-10.0.255.255", "--dst", "2.2.2.2", "--sport",
                "1-100", "--proto", "tcp"
            ]),
            "fastables gen: --proto tcp keeps a connection per flow, at most 1048576: this run would use 6553600 (give --flows N, narrow a range, or a --duration for --new-flows-rate)"
        );
        assert!(err(&["--dev", "x", "--dst-mac", "zz"]).contains("invalid MAC address"));
        assert_eq!(
            err(&["--dev", "x"]),
            "fastables gen: the generator needs --src A[-B] and --dst A[-B] (or --sink to receive)"
        );
        assert_eq!(
            err(&["--dev", "x", "--sink", "--rate", "5"]),
            "fastables gen: --rate is a generator option: not for --sink"
        );
        assert_eq!(
            err(&["--dev", "x", "--idle", "1", "--src", "1.1.1.1", "--dst", "2.2.2.2"]),
            "fastables gen: --idle is a sink option: not for the generator (add --sink)"
        );
        assert_eq!(
            err(&["--dev", "x", "--src", "1.1.1.1", "--dst", "2.2.2.2", "--flows", "2"]),
            "fastables gen: --flows 2: the flow space (--src x --dst x --sport x --dport) has only 1 tuples; widen a range"
        );
        assert_eq!(
            err(&["--dev", "x", "--sink", "--duration=-1"]),
            "fastables gen: --duration -1: expected a positive number of seconds"
        );
        assert_eq!(
            err(&["--dev", "x", "--sink", "--count", "0"]),
            "fastables gen: --count 0: expected at least 1"
        );
        assert!(err(&[
            "--dev",
            "x",
            "--src",
            "1.1.1.1",
            "--dst",
            "2.2.2.2",
            "--flows",
            "2",
            "--new-flows-rate",
            "3"
        ])
        .contains("--flows and --new-flows-rate exclude each other"));
        assert_eq!(
            err(&[
                "--dev",
                "x",
                "--conntrack-fill",
                "--src",
                "1.1.1.1",
                "--dst",
                "2.2.2.2"
            ]),
            "fastables gen: --conntrack-fill needs --new-flows-rate N (new flows a second)"
        );
        assert_eq!(
            err(&["--dev", "x", "--sink", "--conntrack-fill"]),
            "fastables gen: --conntrack-fill is a generator option: not for --sink"
        );
        assert_eq!(
            err(&["--dev", "x", "--echo", "--src", "1.1.1.1", "--dst", "2.2.2.2"]),
            "fastables gen: --echo is a sink option: not for the generator (add --sink)"
        );
    }
}
