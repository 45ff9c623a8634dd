//! The routing table: the kernel's local table (our addresses and broadcasts,
//! from [`Interfaces`]) consulted first, then the main table by longest prefix.
//!
//! The main table holds, as the kernel builds it:
//! - a connected route (`proto kernel scope link src <addr>`) for each primary
//!   address, unless it is a /32 (`fib_add_ifaddr`); the first one wins when
//!   two devices share a prefix;
//! - the configured `[[route]]`s (with a gateway, or directly connected).
//!
//! Lookup is allocation-free: one hash map per prefix length, probed from the
//! longest non-empty length down ([`Fib::lookup`]). [`Fib::route_input`] adds the
//! checks of `ip_route_input_slow` (martian source / destination, broadcast and
//! local delivery, no route).

use ahash::AHashMap;

use fastables_packet::IfIndex;

use crate::drop::DropReason;
use crate::iface::Interfaces;
use fastables_config::{prefix_mask, RouteConfig};

/// Where a route came from (`ip route`'s `proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    /// `proto kernel scope link`: from an interface address.
    Connected,
    /// A `[[route]]` of the config (`proto static`-like).
    Static,
}

/// One main-table route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network, host order.
    pub prefix: u32,
    /// Prefix length.
    pub len: u8,
    /// Output device.
    pub dev: IfIndex,
    /// Gateway (host order); `None` for a directly connected route.
    pub gateway: Option<u32>,
    /// Preferred source (`src`): the primary address of a connected route.
    pub prefsrc: Option<u32>,
    /// Origin.
    pub origin: RouteOrigin,
}

impl Route {
    /// The next hop for `dst`: the gateway, or `dst` itself on a connected route.
    #[inline]
    pub fn next_hop(&self, dst: u32) -> u32 {
        self.gateway.unwrap_or(dst)
    }
}

/// The type of a route lookup result (`RTN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteType {
    /// One of our addresses: local delivery.
    Local,
    /// A broadcast address of ours (or 255.255.255.255): local delivery, never forwarded.
    Broadcast,
    /// A unicast route: forward.
    Unicast,
}

/// The result of [`Fib::route_input`] / [`Fib::route_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteResult {
    /// What kind of destination.
    pub kind: RouteType,
    /// Output device (for Local/Broadcast: the device the packet came in on, or 0 for output).
    pub dev: IfIndex,
    /// Next hop (gateway or destination), host order.
    pub next_hop: u32,
    /// The source address the kernel would use from this route (prefsrc, else
    /// `inet_select_addr(dev, gateway)`); 0 if no interface has an address.
    pub src: u32,
    /// MTU of the output device.
    pub mtu: u16,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Fib {
    /// Per prefix length, network → index into `routes`.
    by_len: Vec<AHashMap<u32, u32>>,
    /// Non-empty prefix lengths, longest first.
    lens: Vec<u8>,
    routes: Vec<Route>,
    mtus: Vec<u16>,
}

impl Fib {
    /// Build the main table from interface addresses and configured routes.
    pub fn new(ifs: &Interfaces, config_routes: &[RouteConfig]) -> Fib {
        let mut fib = Fib {
            by_len: (0..=32).map(|_| AHashMap::new()).collect(),
            lens: Vec::new(),
            routes: Vec::new(),
            mtus: ifs.iter().map(|i| i.mtu).collect(),
        };
        for i in ifs.iter() {
            for a in i.primaries() {
                let prefix = a.network();
                if prefix >> 24 == 0 || a.len == 32 {
                    continue;
                }
                fib.insert(Route {
                    prefix,
                    len: a.len,
                    dev: i.index,
                    gateway: None,
                    prefsrc: Some(a.addr),
                    origin: RouteOrigin::Connected,
                });
            }
        }
        for r in config_routes {
            fib.insert(Route {
                prefix: r.to.network(),
                len: r.to.len,
                dev: r.dev,
                gateway: r.via.map(u32::from),
                prefsrc: None,
                origin: RouteOrigin::Static,
            });
        }
        fib
    }

    /// Add a route; an existing route for the same prefix stays (the kernel's
    /// "File exists"; config validation reports it). Returns whether it was added.
    pub fn insert(&mut self, r: Route) -> bool {
        let len = r.len.min(32);
        let key = r.prefix & prefix_mask(len);
        let idx = self.routes.len() as u32;
        let Some(map) = self.by_len.get_mut(usize::from(len)) else {
            return false;
        };
        if map.contains_key(&key) {
            return false;
        }
        map.insert(key, idx);
        self.routes.push(Route {
            prefix: key,
            len,
            ..r
        });
        if !self.lens.contains(&len) {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        true
    }

    /// All routes in insertion order (connected first).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Longest-prefix match in the main table.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<&Route> {
        for &len in &self.lens {
            if let Some(map) = self.by_len.get(usize::from(len)) {
                if let Some(&i) = map.get(&(dst & prefix_mask(len))) {
                    return self.routes.get(i as usize);
                }
            }
        }
        None
    }

    fn unicast(&self, ifs: &Interfaces, r: &Route, dst: u32) -> RouteResult {
        let next_hop = r.next_hop(dst);
        let src = r
            .prefsrc
            .or_else(|| ifs.select_addr(r.dev, r.gateway.unwrap_or(0)))
            .unwrap_or(0);
        RouteResult {
            kind: RouteType::Unicast,
            dev: r.dev,
            next_hop,
            src,
            mtu: self.mtus.get(usize::from(r.dev)).copied().unwrap_or(1500),
        }
    }

    /// Route a received packet as `ip_route_input_slow` does, with the default
    /// sysctls (rp_filter 0, accept_local 0, route_localnet 0, forwarding on).
    ///
    /// Errors: [`DropReason::MartianSource`] (multicast, limited broadcast,
    /// 0/8 (unless to 255.255.255.255 from 0.0.0.0), 127/8, or one of our addresses),
    /// [`DropReason::MartianDestination`] (0/8, 127/8),
    /// [`DropReason::Multicast`] (no multicast routing), [`DropReason::NoRoute`].
    pub fn route_input(
        &self,
        ifs: &Interfaces,
        in_dev: IfIndex,
        src: u32,
        dst: u32,
    ) -> Result<RouteResult, DropReason> {
        let local = |kind| RouteResult {
            kind,
            dev: in_dev,
            next_hop: dst,
            src: dst,
            mtu: self.mtus.get(usize::from(in_dev)).copied().unwrap_or(1500),
        };
        let is_multicast = |a: u32| a >> 28 == 0xe;
        let is_zeronet = |a: u32| a >> 24 == 0;
        let is_loopback = |a: u32| a >> 24 == 127;
        if is_multicast(dst) {
            return Err(DropReason::Multicast);
        }
        if is_multicast(src) || src == u32::MAX {
            return Err(DropReason::MartianSource);
        }
        if dst == u32::MAX || (src == 0 && dst == 0) {
            if src != 0 && ifs.is_local(src) {
                return Err(DropReason::MartianSource);
            }
            return Ok(local(RouteType::Broadcast));
        }
        if is_zeronet(src) {
            return Err(DropReason::MartianSource);
        }
        if is_zeronet(dst) {
            return Err(DropReason::MartianDestination);
        }
        if is_loopback(dst) {
            return Err(DropReason::MartianDestination);
        }
        if is_loopback(src) {
            return Err(DropReason::MartianSource);
        }
        // The local table first.
        let kind = if ifs.is_local(dst) {
            Some(RouteType::Local)
        } else if ifs.is_broadcast(dst) {
            Some(RouteType::Broadcast)
        } else {
            None
        };
        // fib_validate_source: a source that is one of our addresses is martian.
        if ifs.is_local(src) {
            return Err(DropReason::MartianSource);
        }
        if let Some(kind) = kind {
            return Ok(local(kind));
        }
        match self.lookup(dst) {
            Some(r) => Ok(self.unicast(ifs, r, dst)),
            None => Err(DropReason::NoRoute),
        }
    }

    /// Route a locally generated packet to `dst` (main table; our own addresses
    /// and broadcasts are not routed out). `None`: no route.
    pub fn route_output(&self, ifs: &Interfaces, dst: u32) -> Option<RouteResult> {
        if ifs.is_local(dst) || ifs.is_broadcast(dst) || dst >> 28 == 0xe {
            return None;
        }
        self.lookup(dst).map(|r| self.unicast(ifs, r, dst))
    }

    /// The MTU of a device.
    pub fn mtu(&self, dev: IfIndex) -> u16 {
        self.mtus.get(usize::from(dev)).copied().unwrap_or(1500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastables_config::Config;
    use proptest::prelude::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn seed() -> (Interfaces, Fib) {
        let c = Config::parse(
            r#"
[[interface]]
name = "eth0"
mac = "52:54:00:c2:be:11"
addresses = ["10.0.2.15/24", "1.2.3.56/24", "10.0.2.16/24", "9.9.9.9/32"]
[[interface]]
name = "docker0"
mac = "02:42:ac:12:00:01"
addresses = ["172.18.0.1/16"]
[[route]]
to = "0.0.0.0/0"
via = "10.0.2.2"
dev = "eth0"
[[route]]
to = "1.1.1.1/32"
via = "1.2.3.4"
dev = "eth0"
[[route]]
to = "192.168.7.0/24"
dev = "docker0"
"#,
            "t.toml",
        )
        .unwrap();
        let ifs = Interfaces::new(&c).unwrap();
        let fib = Fib::new(&ifs, &c.routes);
        (ifs, fib)
    }

    #[test]
    fn connected_routes_from_primaries_only() {
        let (_, fib) = seed();
        let conn: Vec<(u32, u8, Option<u32>)> = fib
            .routes()
            .iter()
            .filter(|r| r.origin == RouteOrigin::Connected)
            .map(|r| (r.prefix, r.len, r.prefsrc))
            .collect();
        assert_eq!(
            conn,
            vec![
                (ip("10.0.2.0"), 24, Some(ip("10.0.2.15"))),
                (ip("1.2.3.0"), 24, Some(ip("1.2.3.56"))),
                (ip("172.18.0.0"), 16, Some(ip("172.18.0.1"))),
            ]
        );
    }

    #[test]
    fn seed_lookups() {
        let (ifs, fib) = seed();
        let r = fib
            .route_input(&ifs, 1, ip("172.18.0.2"), ip("1.1.1.1"))
            .unwrap();
        assert_eq!(
            (r.kind, r.dev, r.next_hop, r.src),
            (RouteType::Unicast, 0, ip("1.2.3.4"), ip("1.2.3.56"))
        );
        let r = fib
            .route_input(&ifs, 1, ip("172.18.0.2"), ip("8.8.8.8"))
            .unwrap();
        assert_eq!(
            (r.dev, r.next_hop, r.src),
            (0, ip("10.0.2.2"), ip("10.0.2.15"))
        );
        let r = fib
            .route_input(&ifs, 0, ip("8.8.8.8"), ip("172.18.0.2"))
            .unwrap();
        assert_eq!(
            (r.dev, r.next_hop, r.src),
            (1, ip("172.18.0.2"), ip("172.18.0.1"))
        );
        let r = fib
            .route_input(&ifs, 0, ip("8.8.8.8"), ip("192.168.7.9"))
            .unwrap();
        assert_eq!((r.dev, r.next_hop), (1, ip("192.168.7.9")));
        let r = fib
            .route_input(&ifs, 0, ip("8.8.8.8"), ip("10.0.2.16"))
            .unwrap();
        assert_eq!(r.kind, RouteType::Local);
        let r = fib
            .route_input(&ifs, 0, ip("8.8.8.8"), ip("9.9.9.9"))
            .unwrap();
        assert_eq!(r.kind, RouteType::Local);
        let r = fib
            .route_input(&ifs, 0, ip("10.0.2.2"), ip("10.0.2.255"))
            .unwrap();
        assert_eq!(r.kind, RouteType::Broadcast);
        let r = fib
            .route_input(&ifs, 0, ip("0.0.0.0"), ip("255.255.255.255"))
            .unwrap();
        assert_eq!(r.kind, RouteType::Broadcast);
    }

    #[test]
    fn martians_and_no_route() {
        let (ifs, fib) = seed();
        let e = |s, d| fib.route_input(&ifs, 0, ip(s), ip(d)).unwrap_err();
        assert_eq!(e("10.0.2.15", "8.8.8.8"), DropReason::MartianSource);
        assert_eq!(e("224.0.0.1", "8.8.8.8"), DropReason::MartianSource);
        assert_eq!(e("255.255.255.255", "8.8.8.8"), DropReason::MartianSource);
        assert_eq!(e("127.0.0.1", "8.8.8.8"), DropReason::MartianSource);
        assert_eq!(e("0.0.0.1", "8.8.8.8"), DropReason::MartianSource);
        assert_eq!(e("8.8.8.8", "0.1.2.3"), DropReason::MartianDestination);
        assert_eq!(e("8.8.8.8", "127.0.0.1"), DropReason::MartianDestination);
        assert_eq!(e("8.8.8.8", "239.1.1.1"), DropReason::Multicast);
        let c = Config::parse(
            "[[interface]]\nname = \"a\"\nmac = \"02:00:00:00:00:01\"\naddresses = [\"10.0.0.1/8\"]\n",
            "t.toml",
        )
        .unwrap();
        let ifs2 = Interfaces::new(&c).unwrap();
        let fib2 = Fib::new(&ifs2, &c.routes);
        assert_eq!(
            fib2.route_input(&ifs2, 0, ip("10.0.0.2"), ip("8.8.8.8")),
            Err(DropReason::NoRoute)
        );
        assert!(fib2.route_output(&ifs2, ip("8.8.8.8")).is_none());
        assert_eq!(
            fib2.route_output(&ifs2, ip("10.9.9.9")).unwrap().src,
            ip("10.0.0.1")
        );
    }

    fn naive(routes: &[Route], dst: u32) -> Option<Route> {
        let mut best: Option<Route> = None;
        for r in routes {
            if dst & prefix_mask(r.len) == r.prefix && best.map(|b| r.len > b.len).unwrap_or(true) {
                best = Some(*r);
            }
        }
        best
    }

    proptest! {
        #[test]
        fn lpm_matches_linear_scan(
            rs in proptest::collection::vec((any::<u32>(), 0u8..=32, 0u8..4), 0..60),
            probes in proptest::collection::vec(any::<u32>(), 1..60),
        ) {
            let mut fib = Fib { by_len: (0..=32).map(|_| AHashMap::new()).collect(), lens: vec![], routes: vec![], mtus: vec![1500; 4] };
            for &(p, len, dev) in &rs {
                fib.insert(Route { prefix: p, len, dev, gateway: None, prefsrc: None, origin: RouteOrigin::Static });
                // Probe addresses inside each prefix too.
            }
            let all = fib.routes().to_vec();
            let mut ps = probes.clone();
            ps.extend(rs.iter().map(|&(p, len, _)| p & prefix_mask(len) | (probes[0] & !prefix_mask(len))));
            for d in ps {
                prop_assert_eq!(fib.lookup(d).copied(), naive(&all, d));
            }
        }
    }
}
