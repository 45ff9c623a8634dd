//! systemd's service notifications (sd_notify(3), implemented here: one
//! datagram to the Unix socket that `$NOTIFY_SOCKET` names, `@` for the
//! abstract namespace) and its watchdog. Without `$NOTIFY_SOCKET` (not
//! started by systemd, or by a unit without `Type=notify`) nothing is sent.
//!
//! What `run` says: `STATUS=starting`, then `READY=1` once every AF_XDP
//! socket, the control socket and the metrics listener are up;
//! `RELOADING=1` and `READY=1` around a reload; `STOPPING=1` at the end;
//! and `WATCHDOG=1` at half of `$WATCHDOG_USEC`, from the control thread,
//! only while every worker makes progress.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use fastables_stats::Health;

/// The service manager, when there is one.
pub(super) struct Systemd {
    notify: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Watchdog>,
}

/// `WATCHDOG=1` every `every` while the workers make progress.
struct Watchdog {
    every: Duration,
    next: Instant,
}

/// The socket address `$NOTIFY_SOCKET` names (`@name`: abstract).
fn notify_addr(name: &str) -> Option<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok()
        }
        None if name.starts_with('/') => SocketAddr::from_pathname(name).ok(),
        None => None,
    }
}

/// The watchdog interval systemd asks for, when it asks this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

impl Systemd {
    /// From the environment systemd sets.
    pub(super) fn from_env() -> Systemd {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        Systemd::new(socket.as_deref(), watchdog_interval())
    }

    /// Notifications to the socket `notify` names; `WATCHDOG=1` every
    /// `watchdog`.
    fn new(notify: Option<&str>, watchdog: Option<Duration>) -> Systemd {
        let notify = notify
            .and_then(notify_addr)
            .and_then(|a| UnixDatagram::unbound().ok().map(|s| (s, a)));
        let watchdog = notify.as_ref().and(watchdog).map(|every| Watchdog {
            every,
            next: Instant::now(),
        });
        Systemd { notify, watchdog }
    }

    /// Sends `state` (lines of `KEY=value`); a failure is not the
    /// instance's failure.
    fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.notify {
            let _ = sock.send_to_addr(state.as_bytes(), addr);
        }
    }

    /// `STATUS=text`.
    pub(super) fn status(&self, text: &str) {
        self.send(&format!("STATUS={text}"));
    }

    /// Every socket and listener is up: ready, running with `workers`.
    pub(super) fn ready(&self, workers: usize) {
        let s = if workers == 1 { "" } else { "s" };
        self.send(&format!("READY=1\nSTATUS=running with {workers} worker{s}"));
    }

    /// A reload starts (systemd waits for the next `READY=1`).
    pub(super) fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading the rules\nMONOTONIC_USEC={usec}"
        ));
    }

    /// The instance stops.
    pub(super) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// `WATCHDOG=1` when it is due and every worker makes progress (a
    /// stalled worker lets the watchdog fire: systemd restarts the service).
    pub(super) fn tick(&mut self, now: Instant, health: &Health) {
        let Some(w) = &mut self.watchdog else { return };
        if now < w.next || health.stalled(now).is_some() {
            return;
        }
        w.next = now + w.every;
        self.send("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_names() {
        use std::os::linux::net::SocketAddrExt as _;
        let a = notify_addr("@fastables/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"fastables/notify"[..]));
        let p = notify_addr("/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(notify_addr("relative").is_none());
    }

    /// The abstract namespace (`@name`), and a watchdog that stops while a
    /// worker is stalled.
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("fastables-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let recv = || {
            let mut b = [0u8; 256];
            let n = rx.recv(&mut b).unwrap();
            String::from_utf8_lossy(&b[..n]).into_owned()
        };
        let mut sd = Systemd::new(Some(&format!("@{name}")), Some(Duration::from_secs(10)));
        sd.ready(2);
        assert_eq!(recv(), "READY=1\nSTATUS=running with 2 workers");
        let health = Health::new(1);
        health.set_open(true);
        let now = Instant::now();
        sd.tick(now, &health);
        assert_eq!(recv(), "WATCHDOG=1");
        // Not due again yet; then due, but the worker is stalled.
        sd.tick(now + Duration::from_secs(1), &health);
        sd.tick(now + Duration::from_secs(11), &health);
        health.beat(0, now + Duration::from_secs(12));
        sd.tick(now + Duration::from_secs(12), &health);
        assert_eq!(recv(), "WATCHDOG=1");
        sd.stopping();
        assert_eq!(recv(), "STOPPING=1\nSTATUS=stopping");
    }
}
