//! What `run` checks and sets before its workers start: root, bpffs, the
//! seed, the devices against the configuration (MACs, addresses, MTU), and
//! the devices' RSS.

use fastables_config::{Config, Queues};
use fastables_packet::MacAddr;
use fastables_port::rss::{Rss, SYMMETRIC_KEY};

use crate::CliError;

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// bpffs on /sys/fs/bpf for libxdp (a warning when it cannot be mounted).
pub(crate) fn mount_bpffs() {
    if let Err(e) = fastables_xdp::ensure_bpffs() {
        eprintln!("warning: cannot mount bpffs on /sys/fs/bpf ({e}); libxdp loads its program without the dispatcher");
    }
}

/// A seed from the kernel's random pool, else from the clock.
pub(super) fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read as _;
        f.read_exact(&mut b)
    }) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Fills in what `run` reads from the devices (MACs) and checks the devices.
pub(super) fn complete_config(cfg: &mut Config) -> Result<(), CliError> {
    // One address on two interfaces: ARP and the local table would answer
    // for it on both; a configuration mistake here.
    for (i, a) in cfg.interfaces.iter().enumerate() {
        for b in &cfg.interfaces[i + 1..] {
            for x in &a.addresses {
                if b.addresses.iter().any(|y| y.addr == x.addr) {
                    return Err(CliError::Start(format!(
                        "{}: address {} is configured on both `{}` and `{}`",
                        cfg.path.display(),
                        x.addr,
                        a.name,
                        b.name
                    )));
                }
            }
        }
    }
    for i in &mut cfg.interfaces {
        if !fastables_xdp::device_exists(&i.name) {
            return Err(CliError::Start(format!(
                "{}: interface `{}` does not exist (see `ip link`)",
                cfg.path.display(),
                i.name
            )));
        }
        let dev_mac = fastables_xdp::device_mac(&i.name).map(MacAddr);
        match (i.mac, dev_mac) {
            (None, Some(m)) => i.mac = Some(m),
            (Some(c), Some(d)) if c != d => {
                return Err(CliError::Start(format!(
                    "{}: interface `{}` has MAC {d} but the configuration says {c}: \
                     remove `mac` to use the device's, or set the device's (`ip link set {} address {c}`)",
                    cfg.path.display(),
                    i.name,
                    i.name
                )))
            }
            _ => {}
        }
        let kernel = fastables_xdp::device_ipv4_addrs(&i.name);
        if !kernel.is_empty() {
            let list: Vec<String> = kernel.iter().map(|a| a.to_string()).collect();
            eprintln!(
                "warning: {}: the kernel also has {} on it; fastables takes all its traffic, \
                 so the kernel's stack will not hear from that network (`ip addr flush dev {}`)",
                i.name,
                list.join(", "),
                i.name
            );
        }
        if let Some(mtu) = fastables_xdp::device_mtu(&i.name) {
            if mtu != u32::from(i.mtu) {
                eprintln!(
                    "warning: {}: the device's MTU is {mtu}, the configuration's {}: \
                     fastables uses {} for fragmentation and frag-needed",
                    i.name, i.mtu, i.mtu
                );
            }
        }
    }
    Ok(())
}

/// Several workers: each device's RSS is set to the model's (symmetric
/// Toeplitz key, the queues round-robin, `ETHTOOL_SRSSH`) and read back;
/// the model then uses the devices' table. A device that cannot be set
/// (veth) is said so: its frames reach their worker by steering.
pub(super) fn rss_model(cfg: &Config, n: usize) -> Rss {
    let mut tables: Vec<Vec<u16>> = Vec::new();
    for i in &cfg.interfaces {
        let got = fastables_xdp::set_device_rss(&i.name, &SYMMETRIC_KEY, n as u32)
            .and_then(|()| fastables_xdp::device_rss(&i.name));
        match got {
            Ok(c) if c.key == SYMMETRIC_KEY && c.indir.iter().all(|q| (*q as usize) < n) => {
                println!(
                    "{}: RSS set: symmetric Toeplitz key, {n} queues over {} entries",
                    i.name,
                    c.indir.len()
                );
                tables.push(c.indir.iter().map(|q| *q as u16).collect());
            }
            Ok(_) => println!(
                "{}: RSS reads back otherwise than set: frames on another queue than their owner's are steered to it",
                i.name
            ),
            Err(e) => println!(
                "{}: RSS not programmable ({e}): frames on another queue than their owner's are steered to it",
                i.name
            ),
        }
    }
    match tables.first() {
        Some(t) if tables.iter().all(|x| x == t) => Rss::with_table(SYMMETRIC_KEY, t.clone()),
        _ => Rss::new(SYMMETRIC_KEY, n as u16),
    }
}

/// Each interface's `queues`, when set, is the number of workers: each
/// worker serves one queue of every interface.
pub(super) fn check_queues(cfg: &Config, n: usize) -> Result<(), CliError> {
    for i in &cfg.interfaces {
        if let Queues::Count(q) = i.queues {
            if q as usize != n {
                return Err(CliError::Start(format!(
                    "{}: interface `{}` has queues = {q} but [workers] cores lists {n} cores: \
                     each worker serves one queue of every interface",
                    cfg.path.display(),
                    i.name
                )));
            }
        }
    }
    Ok(())
}
