//! Interfaces and their addresses, with the kernel's rules for primary and
//! secondary addresses, source address selection and address types.
//!
//! - Primary/secondary: as `__inet_insert_ifa` decides: an address is secondary
//!   when the device already has an address with the same mask whose subnet
//!   contains it; primaries keep configuration order, secondaries follow.
//! - [`Interfaces::select_addr`]: `inet_select_addr(dev, dst, RT_SCOPE_UNIVERSE)`:
//!   the first primary whose subnet contains `dst`, else the first primary; a
//!   device without addresses borrows the first primary of another device.
//! - [`Interfaces::addr_type`]: what `inet_addr_type` (zeronet/limited
//!   broadcast, multicast, then the local table) says: LOCAL for our addresses,
//!   BROADCAST for 0/8, 255.255.255.255 and the subnet broadcast the kernel
//!   installs for each primary with prefix < 31, MULTICAST for 224/4, UNICAST
//!   otherwise.

use std::net::Ipv4Addr;

use fastables_packet::{IfIndex, MacAddr};
use fastables_rules::model::AddrTypeSet;

use fastables_config::{prefix_mask, Config};

/// One address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address, host order.
    pub addr: u32,
    /// Prefix length.
    pub len: u8,
    /// Netmask, host order.
    pub mask: u32,
    /// Subnet broadcast (`addr | !mask`).
    pub broadcast: u32,
    /// Secondary (`IFA_F_SECONDARY`): another address of the same subnet came first.
    pub secondary: bool,
}

impl IfAddr {
    /// Whether `ip` (host order) is in this address's subnet.
    #[inline]
    pub fn contains(&self, ip: u32) -> bool {
        (ip ^ self.addr) & self.mask == 0
    }
    /// The network address, host order.
    #[inline]
    pub fn network(&self) -> u32 {
        self.addr & self.mask
    }
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Index (configuration order).
    pub index: IfIndex,
    /// Device name.
    pub name: String,
    /// MAC address.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u16,
    /// Addresses in the kernel's list order: primaries (config order), then secondaries (config order).
    pub addrs: Vec<IfAddr>,
}

impl Interface {
    /// Primary addresses in order.
    pub fn primaries(&self) -> impl Iterator<Item = &IfAddr> {
        self.addrs.iter().filter(|a| !a.secondary)
    }

    /// Whether `ip` (host order) is one of this interface's addresses.
    pub fn has_addr(&self, ip: u32) -> bool {
        self.addrs.iter().any(|a| a.addr == ip)
    }
}

/// Errors building the interface table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfaceError {
    /// The interface has no MAC address (required offline; `run` reads it from the device).
    #[error("interface `{0}` has no `mac`: set `mac = \"xx:xx:xx:xx:xx:xx\"` in its [[interface]] section")]
    MissingMac(String),
}

/// All interfaces of one instance, indexed by [`IfIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    list: Vec<Interface>,
}

/// Insert addresses as `__inet_insert_ifa` does, returning the list in kernel order.
pub fn insert_addrs(addrs: &[(Ipv4Addr, u8)]) -> Vec<IfAddr> {
    let mut out: Vec<IfAddr> = Vec::with_capacity(addrs.len());
    for &(a, len) in addrs {
        let addr = u32::from(a);
        let mask = prefix_mask(len);
        let mut ifa = IfAddr {
            addr,
            len,
            mask,
            broadcast: addr | !mask,
            secondary: false,
        };
        let mut last_primary = 0;
        for (i, o) in out.iter().enumerate() {
            if !o.secondary {
                last_primary = i + 1;
            }
            if o.mask == ifa.mask && ifa.contains(o.addr) {
                if o.addr == ifa.addr {
                    // EEXIST: config validation rejects this; keep the first.
                    ifa.len = u8::MAX;
                    break;
                }
                ifa.secondary = true;
            }
        }
        if ifa.len == u8::MAX {
            continue;
        }
        if ifa.secondary {
            out.push(ifa);
        } else {
            out.insert(last_primary, ifa);
        }
    }
    out
}

impl Interfaces {
    /// The interfaces of `config`; every interface needs a MAC.
    pub fn new(config: &Config) -> Result<Interfaces, IfaceError> {
        let mut list = Vec::with_capacity(config.interfaces.len());
        for (i, c) in config.interfaces.iter().enumerate() {
            let mac = c
                .mac
                .ok_or_else(|| IfaceError::MissingMac(c.name.clone()))?;
            let pairs: Vec<(Ipv4Addr, u8)> = c.addresses.iter().map(|p| (p.addr, p.len)).collect();
            list.push(Interface {
                index: i as IfIndex,
                name: c.name.clone(),
                mac,
                mtu: c.mtu,
                addrs: insert_addrs(&pairs),
            });
        }
        Ok(Interfaces { list })
    }

    /// Number of interfaces.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The interface with this index.
    #[inline]
    pub fn get(&self, i: IfIndex) -> Option<&Interface> {
        self.list.get(usize::from(i))
    }

    /// All interfaces in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Interface> {
        self.list.iter()
    }

    /// The index of the interface called `name`.
    pub fn by_name(&self, name: &str) -> Option<IfIndex> {
        self.list
            .iter()
            .position(|i| i.name == name)
            .map(|p| p as IfIndex)
    }

    /// Whether `ip` (host order) is one of our addresses (any interface).
    #[inline]
    pub fn is_local(&self, ip: u32) -> bool {
        self.list.iter().any(|i| i.has_addr(ip))
    }

    /// Whether `ip` is a broadcast address of ours: 255.255.255.255, or the
    /// subnet broadcast of a primary address with prefix length < 31 (the
    /// `broadcast` routes `fib_add_ifaddr` installs in the local table; kernels
    /// since 5.x no longer add one for the network address, checked on 6.18).
    #[inline]
    pub fn is_broadcast(&self, ip: u32) -> bool {
        if ip == u32::MAX {
            return true;
        }
        self.list
            .iter()
            .any(|i| i.primaries().any(|a| a.len < 31 && ip == a.broadcast))
    }

    /// The source address the kernel would choose on `dev` towards `dst` (host
    /// order): `inet_select_addr(dev, dst, RT_SCOPE_UNIVERSE)`. `None` when no
    /// interface has an address.
    pub fn select_addr(&self, dev: IfIndex, dst: u32) -> Option<u32> {
        if let Some(i) = self.get(dev) {
            let mut first = None;
            for a in i.primaries() {
                if a.contains(dst) {
                    return Some(a.addr);
                }
                first.get_or_insert(a.addr);
            }
            if first.is_some() {
                return first;
            }
        }
        // `no_in_dev`: the first primary of any other device.
        self.list
            .iter()
            .filter(|i| i.index != dev)
            .find_map(|i| i.primaries().next().map(|a| a.addr))
    }

    /// The address type of `ip` (host order) as `inet_addr_type` says
    /// (`AddrTypeSet` bits): BROADCAST for 0.0.0.0/8 and 255.255.255.255,
    /// MULTICAST for 224.0.0.0/4, then the local table: LOCAL for our addresses,
    /// BROADCAST for our subnet broadcasts; UNICAST for everything else.
    #[inline]
    pub fn addr_type(&self, ip: u32) -> u16 {
        if ip >> 24 == 0 || ip == u32::MAX {
            AddrTypeSet::BROADCAST
        } else if ip >> 28 == 0xe {
            AddrTypeSet::MULTICAST
        } else if self.is_local(ip) {
            AddrTypeSet::LOCAL
        } else if self.is_broadcast(ip) {
            AddrTypeSet::BROADCAST
        } else {
            AddrTypeSet::UNICAST
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn cfg() -> Config {
        Config::parse(
            r#"
[[interface]]
name = "eth0"
mac = "52:54:00:c2:be:11"
addresses = ["10.0.2.15/24", "1.2.3.56/24", "10.0.2.16/24", "10.0.2.17/16"]
[[interface]]
name = "docker0"
mac = "02:42:ac:12:00:01"
addresses = ["172.18.0.1/16"]
[[interface]]
name = "empty"
mac = "02:42:ac:12:00:02"
"#,
            "/x/fastables.toml",
        )
        .unwrap()
    }

    #[test]
    fn primary_secondary_as_kernel() {
        let ifs = Interfaces::new(&cfg()).unwrap();
        let eth0 = ifs.get(0).unwrap();
        let v: Vec<(u32, bool)> = eth0.addrs.iter().map(|a| (a.addr, a.secondary)).collect();
        // Primaries in config order (10.0.2.17/16 has another mask: primary), then secondaries.
        assert_eq!(
            v,
            vec![
                (ip("10.0.2.15"), false),
                (ip("1.2.3.56"), false),
                (ip("10.0.2.17"), false),
                (ip("10.0.2.16"), true),
            ]
        );
    }

    #[test]
    fn select_addr_matches_subnet_else_first_primary() {
        let ifs = Interfaces::new(&cfg()).unwrap();
        assert_eq!(ifs.select_addr(0, ip("1.2.3.4")), Some(ip("1.2.3.56")));
        assert_eq!(ifs.select_addr(0, ip("10.0.2.2")), Some(ip("10.0.2.15")));
        assert_eq!(ifs.select_addr(0, ip("8.8.8.8")), Some(ip("10.0.2.15")));
        // 10.0.9.9 is only in the /16.
        assert_eq!(ifs.select_addr(0, ip("10.0.9.9")), Some(ip("10.0.2.17")));
        assert_eq!(ifs.select_addr(1, ip("8.8.8.8")), Some(ip("172.18.0.1")));
        // No address on the device: the first primary of another device.
        assert_eq!(ifs.select_addr(2, ip("8.8.8.8")), Some(ip("10.0.2.15")));
    }

    #[test]
    fn local_types() {
        let ifs = Interfaces::new(&cfg()).unwrap();
        assert_eq!(ifs.addr_type(ip("10.0.2.16")), AddrTypeSet::LOCAL);
        assert_eq!(ifs.addr_type(ip("10.0.2.255")), AddrTypeSet::BROADCAST);
        assert_eq!(ifs.addr_type(ip("10.0.2.0")), AddrTypeSet::UNICAST);
        assert_eq!(ifs.addr_type(ip("172.18.255.255")), AddrTypeSet::BROADCAST);
        assert_eq!(ifs.addr_type(ip("255.255.255.255")), AddrTypeSet::BROADCAST);
        assert_eq!(ifs.addr_type(ip("0.1.2.3")), AddrTypeSet::BROADCAST);
        assert_eq!(ifs.addr_type(ip("224.0.0.1")), AddrTypeSet::MULTICAST);
        assert_eq!(ifs.addr_type(ip("8.8.8.8")), AddrTypeSet::UNICAST);
    }

    #[test]
    fn missing_mac_is_an_error() {
        let c = Config::parse("[[interface]]\nname = \"eth0\"\n", "f.toml").unwrap();
        assert_eq!(
            Interfaces::new(&c),
            Err(IfaceError::MissingMac("eth0".into()))
        );
    }
}
