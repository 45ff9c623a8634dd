//! fastables-config: the TOML configuration file (`fastables.toml`), see
//! DESIGN.md "Configuration".
//!
//! [`Config::load`] reads and validates a file; [`Config::parse`] does the same for
//! text already in memory (tests, `fastables check` on stdin). Every error names
//! `file:line:col`, the key, and what is allowed. Unknown keys are rejected.
//!
//! Validation follows what `ip addr` / `ip route` accept:
//! - interface names are unique, 1..=15 bytes (IFNAMSIZ), at most 64 interfaces;
//! - addresses are `a.b.c.d/len` (host bits allowed, as on `ip addr add`), no duplicates on one device;
//! - routes: `to` must not have host bits set ("Invalid prefix for given prefix length"),
//!   `dev` must name an interface, `via` must be on a connected subnet of `dev`
//!   (the kernel's "Nexthop has invalid gateway"); without `via` the route is
//!   directly connected and needs `dev`; a duplicate `to` is "File exists".
//!
//! The conntrack defaults are the conntrack crate's ([`fastables_conntrack::Timeouts`],
//! [`fastables_conntrack::TableConfig`]). What it is not: the data plane; the
//! AF_XDP port reads its per-interface settings ([`XdpMode`], [`ZeroCopy`])
//! from here without linking the pipeline.
#![deny(unsafe_code)]

use fastables_port::FRAME_SIZE;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fastables_conntrack::{TableConfig, Timeouts};
use fastables_packet::ethernet;
pub use fastables_packet::ipv4::prefix_mask;
use fastables_packet::{IfIndex, MacAddr};
use serde::Deserialize;
use toml::Spanned;

/// At most this many interfaces (interface matches compile to 64-bit masks).
pub const MAX_INTERFACES: usize = 64;
/// The smallest MTU an IPv4 interface may have (RFC 791).
pub const MIN_MTU: u16 = 68;
/// The largest MTU: a frame (MTU + 14 bytes of Ethernet header) must fit in one
/// of the ports' frame buffers ([`FRAME_SIZE`]).
pub const MAX_MTU: u16 = (FRAME_SIZE - ethernet::HEADER_LEN) as u16;

/// Errors of loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        /// The configuration file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the TOML parser says, including the keys or values that are allowed.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable (bad CIDR, unknown device, ...).
    #[error("{file}:{line}:{col}: {key}: {message}")]
    Invalid {
        /// The configuration file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The key, e.g. `interface[1].addresses` or `route[0].via`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// An IPv4 prefix (`a.b.c.d/len`); for routes the host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    /// The address (for interface addresses: with host bits, as configured).
    pub addr: Ipv4Addr,
    /// Prefix length 0..=32.
    pub len: u8,
}

impl Ipv4Prefix {
    /// The netmask as a host-order u32 (`/24` → `0xffff_ff00`).
    pub fn mask(self) -> u32 {
        prefix_mask(self.len)
    }
    /// The network address (host bits cleared), host order.
    pub fn network(self) -> u32 {
        u32::from(self.addr) & self.mask()
    }
    /// Whether `ip` is inside this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;
    /// `a.b.c.d/len`, or `a.b.c.d` alone meaning `/32`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 prefix: expected a.b.c.d/len"))?;
        let len = match l {
            None => 32,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= 32 && !l.starts_with('+') => n,
                _ => return Err(format!("`{s}`: prefix length must be 0..=32")),
            },
        };
        Ok(Ipv4Prefix { addr, len })
    }
}

/// XDP attach mode of an interface (`xdp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native if the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// AF_XDP zero-copy (`zero_copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopy {
    /// Zero-copy if the driver supports it, else copy mode.
    #[default]
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// How many RX queues of an interface to serve (`queues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Queues {
    /// Every queue the device has.
    #[default]
    All,
    /// The first N queues.
    Count(u32),
}

/// One `[[interface]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceConfig {
    /// Device name (`eth0`).
    pub name: String,
    /// MAC address; required for `sim`, read from the device by `run` when absent.
    pub mac: Option<MacAddr>,
    /// Addresses in configuration order (host bits kept, as `ip addr add` does).
    pub addresses: Vec<Ipv4Prefix>,
    /// MTU (default 1500).
    pub mtu: u16,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// AF_XDP zero-copy.
    pub zero_copy: ZeroCopy,
    /// RX queues to serve.
    pub queues: Queues,
}

/// One `[[route]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConfig {
    /// Destination prefix (host bits zero).
    pub to: Ipv4Prefix,
    /// Gateway; `None` for a directly connected route.
    pub via: Option<Ipv4Addr>,
    /// Output interface (index into [`Config::interfaces`]).
    pub dev: IfIndex,
}

/// One static `[[neighbor]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborConfig {
    /// Neighbor address.
    pub ip: Ipv4Addr,
    /// Its MAC address.
    pub mac: MacAddr,
    /// The interface it is reached on.
    pub dev: IfIndex,
}

/// `[conntrack]`; absent keys take the conntrack table's defaults (the kernel's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackConfig {
    /// nf_conntrack_max.
    pub max: u32,
    /// Hash buckets (nf_conntrack_buckets).
    pub buckets: u32,
    /// nf_conntrack_tcp_loose: pick up established TCP connections mid-stream.
    pub tcp_loose: bool,
    /// nf_conntrack_tcp_be_liberal: do not mark out-of-window packets INVALID.
    pub tcp_be_liberal: bool,
    /// nf_conntrack_checksum (default true): verify the TCP/UDP/ICMP
    /// checksum of received packets, a wrong one INVALID. The kernel skips
    /// the check where the NIC verified it (`CHECKSUM_UNNECESSARY`), as
    /// most do; AF_XDP does not say, so `false` is what such a box does.
    pub checksum: bool,
    /// `[conntrack.timeouts]`, in seconds; the kernel's defaults where absent.
    pub timeouts: Timeouts,
    /// Source ports that SNAT/MASQUERADE never hand out when they move a
    /// connection to another address (not in the kernel): `[22, "8000-8100"]`.
    #[serde(deserialize_with = "de_port_ranges")]
    pub reserved_ports: Vec<(u16, u16)>,
}

/// `[conntrack] reserved_ports`: ports (integers) and inclusive ranges
/// (`"lo-hi"` strings, or a single port as a string).
fn de_port_ranges<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(u16, u16)>, D::Error> {
    use serde::de::Error as _;
    let port = |v: i64| {
        u16::try_from(v)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| D::Error::custom(format!("port {v} is out of range [1, 65535]")))
    };
    let items = Vec::<toml::Value>::deserialize(d)?;
    items
        .into_iter()
        .map(|it| match it {
            toml::Value::Integer(v) => port(v).map(|p| (p, p)),
            toml::Value::String(s) => {
                let num = |t: &str| {
                    t.trim().parse::<i64>().map_err(|_| {
                        D::Error::custom(format!(
                            "`{s}` is not a port or a port range such as \"8000-8100\""
                        ))
                    })
                };
                let (lo, hi) = match s.split_once('-') {
                    Some((a, b)) => (port(num(a)?)?, port(num(b)?)?),
                    None => {
                        let p = port(num(&s)?)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(D::Error::custom(format!(
                        "port range `{s}` ends before it starts"
                    )));
                }
                Ok((lo, hi))
            }
            other => Err(D::Error::custom(format!(
                "expected a port or a port range string, found {}",
                other.type_str()
            ))),
        })
        .collect()
}

impl Default for ConntrackConfig {
    /// The conntrack table's defaults (the kernel's), and `checksum = true`.
    fn default() -> Self {
        let t = TableConfig::default();
        ConntrackConfig {
            max: t.max,
            buckets: t.buckets,
            tcp_loose: t.tcp_loose,
            tcp_be_liberal: t.tcp_be_liberal,
            checksum: true,
            timeouts: t.timeouts,
            reserved_ports: t.reserved_ports,
        }
    }
}

/// `[workers]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkersConfig {
    /// One worker per listed core (default `[0]`).
    pub cores: Vec<u32>,
    /// Frames per RX burst (default 64, 1..=1024).
    pub batch: usize,
    /// The flow cache (default true): see `PipelineOptions::flow_cache`.
    pub flow_cache: bool,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            cores: vec![0],
            batch: 64,
            flow_cache: true,
        }
    }
}

/// `[stats]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// Prometheus listen address (`host:port`); `None`: no exporter.
    pub listen: Option<String>,
    /// Stats thread interval in milliseconds (default 1000).
    pub interval_ms: u64,
    /// Workers record the latency histograms (two clock reads and two
    /// histogram updates per batch); default true.
    pub latency: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            listen: None,
            interval_ms: 1000,
            latency: true,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The Unix socket of `fastables run` (default `/run/fastables.sock`).
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from("/run/fastables.sock"),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (as given to [`Config::load`]).
    pub path: PathBuf,
    /// The rules file (iptables-save format), resolved relative to the config
    /// file's directory; `None` when the config has no `rules` key (empty ruleset).
    pub rules: Option<PathBuf>,
    /// Interfaces in configuration order; the position is the [`IfIndex`].
    pub interfaces: Vec<InterfaceConfig>,
    /// Static routes (connected routes come from the addresses).
    pub routes: Vec<RouteConfig>,
    /// Static neighbors.
    pub neighbors: Vec<NeighborConfig>,
    /// Conntrack settings (parsed and kept for the conntrack crate).
    pub conntrack: ConntrackConfig,
    /// Worker settings.
    pub workers: WorkersConfig,
    /// Stats settings.
    pub stats: StatsConfig,
    /// Control socket settings.
    pub control: ControlConfig,
}

// ---------------------------------------------------------------------------
// Raw (serde) form.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rules: Option<Spanned<String>>,
    #[serde(default)]
    interface: Vec<RawInterface>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    neighbor: Vec<RawNeighbor>,
    #[serde(default)]
    conntrack: ConntrackConfig,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    stats: RawStats,
    #[serde(default)]
    control: RawControl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    mac: Option<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
    #[serde(default)]
    xdp_mode: XdpMode,
    #[serde(default)]
    zero_copy: ZeroCopy,
    queues: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: Spanned<String>,
    via: Option<Spanned<String>>,
    dev: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbor {
    ip: Spanned<String>,
    mac: Spanned<String>,
    dev: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    cores: Option<Spanned<Vec<u32>>>,
    batch: Option<Spanned<i64>>,
    flow_cache: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStats {
    listen: Option<String>,
    interval_ms: Option<u64>,
    latency: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

/// Byte offset → 1-based (line, column), columns counted in characters.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError::Invalid {
            file: self.file.clone(),
            line,
            col,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.is_empty() || part.len() > 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(MacAddr(out))
}

impl Config {
    /// Read and validate the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validate configuration text; `path` names the file in errors and anchors
    /// the relative `rules` path.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let cx = Ctx {
            file: path.display().to_string(),
            text,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = line_col(text, e.span().map(|s| s.start).unwrap_or(0));
            ConfigError::Syntax {
                file: cx.file.clone(),
                line,
                col,
                message: e.message().trim_end().to_string(),
            }
        })?;

        let rules = raw.rules.as_ref().map(|r| {
            let p = Path::new(r.get_ref());
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new("")).join(p)
            }
        });
        if let Some(r) = &raw.rules {
            if r.get_ref().is_empty() {
                return Err(cx.err(
                    r.span(),
                    "rules",
                    "the rules path is empty: give a file in iptables-save format",
                ));
            }
        }

        let interfaces = Self::parse_interfaces(&cx, &raw.interface)?;
        let routes = Self::parse_routes(&cx, &raw.route, &interfaces)?;
        let neighbors = Self::parse_neighbors(&cx, &raw.neighbor, &interfaces)?;

        let mut workers = WorkersConfig::default();
        if let Some(c) = raw.workers.cores {
            let span = c.span();
            let cores = c.into_inner();
            if cores.is_empty() {
                return Err(cx.err(
                    span,
                    "workers.cores",
                    "give at least one core, e.g. cores = [1]",
                ));
            }
            if let Some(d) = cores
                .iter()
                .enumerate()
                .find(|(i, x)| cores[..*i].contains(x))
            {
                return Err(cx.err(
                    span,
                    "workers.cores",
                    format!("core {} is listed twice", d.1),
                ));
            }
            workers.cores = cores;
        }
        if let Some(b) = &raw.workers.batch {
            let v = *b.get_ref();
            if !(1..=1024).contains(&v) {
                return Err(cx.err(
                    b.span(),
                    "workers.batch",
                    format!("batch {v} is out of range [1, 1024]"),
                ));
            }
            workers.batch = v as usize;
        }
        if let Some(f) = raw.workers.flow_cache {
            workers.flow_cache = f;
        }
        let stats = StatsConfig {
            listen: raw.stats.listen,
            interval_ms: raw.stats.interval_ms.unwrap_or(1000),
            latency: raw.stats.latency.unwrap_or(true),
        };
        let control = ControlConfig {
            socket: raw
                .control
                .socket
                .map(PathBuf::from)
                .unwrap_or_else(|| ControlConfig::default().socket),
        };
        Ok(Config {
            path: path.to_path_buf(),
            rules,
            interfaces,
            routes,
            neighbors,
            conntrack: raw.conntrack,
            workers,
            stats,
            control,
        })
    }

    fn parse_interfaces(
        cx: &Ctx<'_>,
        raw: &[RawInterface],
    ) -> Result<Vec<InterfaceConfig>, ConfigError> {
        let mut out: Vec<InterfaceConfig> = Vec::with_capacity(raw.len());
        for (i, ri) in raw.iter().enumerate() {
            let name = ri.name.get_ref();
            let key = format!("interface[{i}]");
            if i >= MAX_INTERFACES {
                return Err(cx.err(
                    ri.name.span(),
                    format!("{key}.name"),
                    format!("too many interfaces: at most {MAX_INTERFACES} are supported"),
                ));
            }
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ':', ' ', '\t', '\n'])
                || name == "."
                || name == ".."
            {
                return Err(cx.err(
                    ri.name.span(),
                    format!("{key}.name"),
                    format!("`{name}` is not a valid interface name: 1 to 15 bytes, no `/`, `:` or whitespace"),
                ));
            }
            if let Some(j) = out.iter().position(|o| &o.name == name) {
                return Err(cx.err(
                    ri.name.span(),
                    format!("{key}.name"),
                    format!("duplicate interface `{name}` (already interface[{j}])"),
                ));
            }
            let mac = match &ri.mac {
                None => None,
                Some(m) => Some(parse_mac(m.get_ref()).ok_or_else(|| {
                    cx.err(
                        m.span(),
                        format!("{key}.mac"),
                        format!("`{}` is not a MAC address: expected six hex bytes like 52:54:00:12:34:56", m.get_ref()),
                    )
                })?),
            };
            let mut addresses: Vec<Ipv4Prefix> = Vec::with_capacity(ri.addresses.len());
            for a in &ri.addresses {
                let p: Ipv4Prefix = a
                    .get_ref()
                    .parse()
                    .map_err(|m: String| cx.err(a.span(), format!("{key}.addresses"), m))?;
                if p.addr.is_unspecified() || p.addr.is_multicast() || p.addr.is_broadcast() {
                    return Err(cx.err(
                        a.span(),
                        format!("{key}.addresses"),
                        format!(
                            "`{}`: an interface address must be a unicast address",
                            a.get_ref()
                        ),
                    ));
                }
                if addresses.iter().any(|o| o.addr == p.addr && o.len == p.len) {
                    return Err(cx.err(
                        a.span(),
                        format!("{key}.addresses"),
                        format!("duplicate address `{p}` on `{name}` (File exists)"),
                    ));
                }
                addresses.push(p);
            }
            let mtu = match &ri.mtu {
                None => 1500,
                Some(m) => {
                    let v = *m.get_ref();
                    if !(i64::from(MIN_MTU)..=i64::from(MAX_MTU)).contains(&v) {
                        return Err(cx.err(
                            m.span(),
                            format!("{key}.mtu"),
                            format!("MTU {v} is out of range [{MIN_MTU}, {MAX_MTU}] (frames are {FRAME_SIZE} bytes)"),
                        ));
                    }
                    v as u16
                }
            };
            let queues = match &ri.queues {
                None => Queues::All,
                Some(q) => match q.get_ref() {
                    toml::Value::String(s) if s == "all" => Queues::All,
                    toml::Value::Integer(n) if (1..=4096).contains(n) => Queues::Count(*n as u32),
                    _ => {
                        return Err(cx.err(
                            q.span(),
                            format!("{key}.queues"),
                            "expected \"all\" or a number of queues 1..=4096",
                        ))
                    }
                },
            };
            out.push(InterfaceConfig {
                name: name.clone(),
                mac,
                addresses,
                mtu,
                xdp_mode: ri.xdp_mode,
                zero_copy: ri.zero_copy,
                queues,
            });
        }
        Ok(out)
    }

    fn dev_index(
        cx: &Ctx<'_>,
        dev: &Spanned<String>,
        key: &str,
        ifs: &[InterfaceConfig],
    ) -> Result<IfIndex, ConfigError> {
        ifs.iter()
            .position(|i| &i.name == dev.get_ref())
            .map(|p| p as IfIndex)
            .ok_or_else(|| {
                let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
                cx.err(
                    dev.span(),
                    key,
                    format!(
                        "unknown device `{}`: configured interfaces are [{}]",
                        dev.get_ref(),
                        names.join(", ")
                    ),
                )
            })
    }

    fn parse_routes(
        cx: &Ctx<'_>,
        raw: &[RawRoute],
        ifs: &[InterfaceConfig],
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        let mut out: Vec<RouteConfig> = Vec::with_capacity(raw.len());
        for (i, rr) in raw.iter().enumerate() {
            let key = format!("route[{i}]");
            let to: Ipv4Prefix = rr
                .to
                .get_ref()
                .parse()
                .map_err(|m: String| cx.err(rr.to.span(), format!("{key}.to"), m))?;
            if u32::from(to.addr) != to.network() {
                return Err(cx.err(
                    rr.to.span(),
                    format!("{key}.to"),
                    format!(
                        "`{}`: invalid prefix for given prefix length (host bits set; did you mean {}/{}?)",
                        rr.to.get_ref(),
                        Ipv4Addr::from(to.network()),
                        to.len
                    ),
                ));
            }
            let via = match &rr.via {
                None => None,
                Some(v) => Some(v.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                    cx.err(
                        v.span(),
                        format!("{key}.via"),
                        format!("`{}` is not an IPv4 address", v.get_ref()),
                    )
                })?),
            };
            // Connected subnets of a device (every address, primary or secondary,
            // installs or shares a prefix route).
            let connected =
                |dev: usize, gw: Ipv4Addr| ifs[dev].addresses.iter().any(|a| a.contains(gw));
            let dev = match (&rr.dev, via) {
                (Some(d), _) => Self::dev_index(cx, d, &format!("{key}.dev"), ifs)?,
                (None, Some(gw)) => match (0..ifs.len()).find(|&d| connected(d, gw)) {
                    Some(d) => d as IfIndex,
                    None => {
                        return Err(cx.err(
                            rr.via.as_ref().map(|v| v.span()).unwrap_or(0..0),
                            format!("{key}.via"),
                            format!("Nexthop has invalid gateway: {gw} is not on a connected subnet of any interface"),
                        ))
                    }
                },
                (None, None) => {
                    return Err(cx.err(
                        rr.to.span(),
                        &key,
                        "a route needs `via` (a gateway), `dev`, or both",
                    ))
                }
            };
            if let (Some(gw), Some(v)) = (via, &rr.via) {
                if !connected(dev as usize, gw) {
                    return Err(cx.err(
                        v.span(),
                        format!("{key}.via"),
                        format!(
                            "Nexthop has invalid gateway: {gw} is not on a connected subnet of `{}` (gateways must be directly reachable)",
                            ifs[dev as usize].name
                        ),
                    ));
                }
            }
            let connected_prefix = ifs.iter().any(|i| {
                i.addresses
                    .iter()
                    .any(|a| a.len == to.len && a.network() == to.network())
            });
            if connected_prefix || out.iter().any(|o| o.to == to) {
                return Err(cx.err(
                    rr.to.span(),
                    format!("{key}.to"),
                    format!("duplicate route to {to} (File exists; connected routes come from interface addresses)"),
                ));
            }
            out.push(RouteConfig { to, via, dev });
        }
        Ok(out)
    }

    fn parse_neighbors(
        cx: &Ctx<'_>,
        raw: &[RawNeighbor],
        ifs: &[InterfaceConfig],
    ) -> Result<Vec<NeighborConfig>, ConfigError> {
        let mut out: Vec<NeighborConfig> = Vec::with_capacity(raw.len());
        for (i, rn) in raw.iter().enumerate() {
            let key = format!("neighbor[{i}]");
            let ip: Ipv4Addr = rn.ip.get_ref().parse().map_err(|_| {
                cx.err(
                    rn.ip.span(),
                    format!("{key}.ip"),
                    format!("`{}` is not an IPv4 address", rn.ip.get_ref()),
                )
            })?;
            let mac = parse_mac(rn.mac.get_ref()).ok_or_else(|| {
                cx.err(
                    rn.mac.span(),
                    format!("{key}.mac"),
                    format!(
                        "`{}` is not a MAC address: expected six hex bytes like 52:54:00:12:34:56",
                        rn.mac.get_ref()
                    ),
                )
            })?;
            let dev = Self::dev_index(cx, &rn.dev, &format!("{key}.dev"), ifs)?;
            if out.iter().any(|o| o.ip == ip && o.dev == dev) {
                return Err(cx.err(
                    rn.ip.span(),
                    format!("{key}.ip"),
                    format!("duplicate neighbor {ip} on `{}`", ifs[dev as usize].name),
                ));
            }
            out.push(NeighborConfig { ip, mac, dev });
        }
        Ok(out)
    }

    /// The index of the interface called `name`.
    pub fn iface_index(&self, name: &str) -> Option<IfIndex> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .map(|p| p as IfIndex)
    }

    /// Interface names in index order (what `CompiledRuleset::compile` takes).
    pub fn iface_names(&self) -> Vec<&str> {
        self.interfaces.iter().map(|i| i.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN: &str = r#"rules = "rules.v4"                  # iptables-save format, path relative to this file

[[interface]]
name = "eth0"
mac = "52:54:00:c2:be:11"
addresses = ["10.0.2.15/24", "1.2.3.56/24"]
xdp_mode = "auto"
zero_copy = "auto"
queues = "all"

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

[[neighbor]]
ip = "10.0.2.2"
mac = "52:54:00:12:35:02"
dev = "eth0"

[conntrack]
max = 262144
buckets = 262144
tcp_loose = true
tcp_be_liberal = false
[conntrack.timeouts]
tcp_established = 432000
udp = 30
udp_stream = 120
icmp = 30

[workers]
cores = [1]
batch = 64

[stats]
listen = "127.0.0.1:9464"
interval_ms = 1000

[control]
socket = "/run/fastables.sock"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, "/etc/fastables/f.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn design_example_parses() {
        let c = Config::parse(DESIGN, "/etc/fastables/fastables.toml").unwrap();
        assert_eq!(c.rules, Some(PathBuf::from("/etc/fastables/rules.v4")));
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(
            c.interfaces[0].mac,
            Some(MacAddr([0x52, 0x54, 0, 0xc2, 0xbe, 0x11]))
        );
        assert_eq!(c.interfaces[0].mtu, 1500);
        assert_eq!(c.interfaces[0].queues, Queues::All);
        assert_eq!(c.interfaces[0].addresses[1].to_string(), "1.2.3.56/24");
        assert_eq!(c.routes[1].via, Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(c.routes[1].dev, 0);
        assert_eq!(c.neighbors[0].dev, 0);
        assert_eq!(c.conntrack.timeouts.tcp_established, 432_000);
        assert_eq!(
            c.conntrack.timeouts.tcp_syn_sent, 120,
            "kernel default where absent"
        );
        assert_eq!(c.workers.cores, vec![1]);
        assert_eq!(c.stats.listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(c.iface_names(), vec!["eth0", "docker0"]);
    }

    #[test]
    fn reserved_ports_parse_and_bad_ones_are_located() {
        let c = Config::parse(
            "[conntrack]\nreserved_ports = [22, \"8000-8100\", \"443\"]\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(
            c.conntrack.reserved_ports,
            vec![(22, 22), (8000, 8100), (443, 443)]
        );
        let e = err("[conntrack]\nreserved_ports = [70000]\n");
        assert!(
            e.starts_with("/etc/fastables/f.toml:2:") && e.contains("port 70000 is out of range"),
            "{e}"
        );
        let e = err("[conntrack]\nreserved_ports = [\"9-3\"]\n");
        assert!(e.contains("ends before it starts"), "{e}");
        let e = err("[conntrack]\nreserved_ports = [\"http\"]\n");
        assert!(e.contains("`http` is not a port"), "{e}");
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = Config::parse("", "f.toml").unwrap();
        assert_eq!(c.rules, None);
        assert_eq!(c.workers, WorkersConfig::default());
        assert_eq!(c.conntrack, ConntrackConfig::default());
        assert_eq!(c.control.socket, PathBuf::from("/run/fastables.sock"));
    }

    #[test]
    fn unknown_key_names_position_and_allowed_keys() {
        let e = err("[[interface]]\nname = \"eth0\"\nmtuu = 1500\n");
        assert!(
            e.starts_with("/etc/fastables/f.toml:3:1: unknown field `mtuu`, expected one of"),
            "{e}"
        );
        assert!(e.contains("`mtu`"), "{e}");
        let e = err("[[interface]]\nname = \"eth0\"\nxdp_mode = \"fast\"\n");
        assert!(e.contains(":3:12:") && e.contains("`native`"), "{e}");
    }

    #[test]
    fn bad_values_are_located() {
        let e = err("[[interface]]\nname = \"eth0\"\naddresses = [\"10.0.2.15/33\"]\n");
        assert_eq!(e, "/etc/fastables/f.toml:3:14: interface[0].addresses: `10.0.2.15/33`: prefix length must be 0..=32");
        let e = err("[[interface]]\nname = \"eth0\"\nmac = \"52:54:00:c2:be\"\n");
        assert!(
            e.starts_with("/etc/fastables/f.toml:3:7: interface[0].mac: "),
            "{e}"
        );
        let e = err("[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n");
        assert_eq!(e, "/etc/fastables/f.toml:4:8: interface[1].name: duplicate interface `eth0` (already interface[0])");
        let e = err("[[interface]]\nname = \"eth0\"\nmtu = 9000\n");
        assert!(
            e.contains("interface[0].mtu: MTU 9000 is out of range [68, 2034]"),
            "{e}"
        );
    }

    #[test]
    fn route_validation_as_ip_route() {
        let base = "[[interface]]\nname = \"eth0\"\naddresses = [\"10.0.2.15/24\"]\n";
        let e = err(&format!(
            "{base}[[route]]\nto = \"0.0.0.0/0\"\nvia = \"10.0.3.1\"\ndev = \"eth0\"\n"
        ));
        assert!(
            e.contains(":6:7: route[0].via: Nexthop has invalid gateway"),
            "{e}"
        );
        let e = err(&format!(
            "{base}[[route]]\nto = \"0.0.0.0/0\"\nvia = \"10.0.2.1\"\ndev = \"eth9\"\n"
        ));
        assert!(
            e.contains("route[0].dev: unknown device `eth9`: configured interfaces are [eth0]"),
            "{e}"
        );
        let e = err(&format!(
            "{base}[[route]]\nto = \"10.1.2.3/8\"\nvia = \"10.0.2.1\"\n"
        ));
        assert!(e.contains("invalid prefix for given prefix length"), "{e}");
        let e = err(&format!(
            "{base}[[route]]\nto = \"10.0.2.0/24\"\nvia = \"10.0.2.1\"\n"
        ));
        assert!(e.contains("File exists"), "{e}");
        let e = err(&format!("{base}[[route]]\nto = \"1.0.0.0/8\"\n"));
        assert!(e.contains("needs `via`"), "{e}");
        // Without dev, the gateway's connected subnet picks it; a local gateway is accepted (as the kernel).
        let c = Config::parse(&format!("{base}[[route]]\nto = \"1.0.0.0/8\"\nvia = \"10.0.2.15\"\n[[route]]\nto = \"2.0.0.0/8\"\ndev = \"eth0\"\n"), "f").unwrap();
        assert_eq!((c.routes[0].dev, c.routes[1].via), (0, None));
    }

    #[test]
    fn workers_need_distinct_cores() {
        let e = err("[workers]\ncores = []\n");
        assert!(
            e.contains(":2:9: workers.cores: give at least one core"),
            "{e}"
        );
        let e = err("[workers]\ncores = [1, 2, 1]\n");
        assert!(e.contains("core 1 is listed twice"), "{e}");
    }

    #[test]
    fn at_most_64_interfaces() {
        let mut t = String::new();
        for i in 0..65 {
            t.push_str(&format!("[[interface]]\nname = \"e{i}\"\n"));
        }
        let e = err(&t);
        assert!(
            e.contains("interface[64].name: too many interfaces: at most 64"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = err("rules = \n");
        assert!(e.starts_with("/etc/fastables/f.toml:1:"), "{e}");
        let e = Config::load("/nonexistent/fastables.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/fastables.toml: cannot read"),
            "{e}"
        );
    }
}
