//! The AF_XDP port: one UMEM shared by a socket on each interface
//! (`XDP_SHARED_UMEM`), so that a frame received on one interface is sent
//! from another without a copy, behind the dataplane's [`PacketIo`] trait.
//!
//! Built on libxdp (the `libxdp-sys` bindings, which build libxdp and libbpf
//! from source): `xsk_umem__create` over memory this crate maps, one
//! `xsk_socket__create_shared` per interface with its own fill and completion
//! rings, and libxdp's default XDP program that redirects the bound queue to
//! the socket. xsk-rs (the layer above libxdp-sys) hands out per-frame
//! descriptors with their own lengths and accessors; the pipeline instead
//! works on one flat `&mut [u8]` with frames moving between interfaces, which
//! is what the raw rings give directly.
//!
//! Memory: the UMEM is cut into [`CHUNK`]-byte chunks. The kernel writes a
//! received frame at `chunk + XDP_PACKET_HEADROOM` (256) and the received
//! descriptor points there; the pipeline may use [`FRAME_SIZE`] bytes from a
//! frame's address, which stays inside the chunk. Buffers handed out by
//! [`PacketIo::alloc`] are chunk starts. Every chunk is always in exactly one
//! place: the free list, the fill ring of a socket, the kernel (received, not
//! yet consumed), the worker, or a TX ring until its completion comes back
//! ([`XdpPort::accounting`]).
//!
//! Per packet there is no allocation, lock or system call: rings are read and
//! written in bursts, and the kernel is kicked (`sendto`) once per TX burst
//! when it asks for it (`XDP_USE_NEED_WAKEUP`).
//!
//! One port serves one RX queue of each interface ([`Options::queue`]); a
//! data plane with several workers opens one port per worker, each on its
//! queue. A device with more RX queues than the data plane serves
//! ([`Options::queues`]) is refused unless told `queues = 1` (the others
//! would bypass it). Not here (yet): XDP multi-buffer (jumbo frames): the
//! MTU must fit a frame.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::ptr;
use std::time::Instant;

use fastables_config::{XdpMode, ZeroCopy};
use fastables_packet::IfIndex;
use fastables_port::{Frame, FrameAddr, PacketIo, FRAME_SIZE};
use libxdp_sys as sys;

/// Bytes per UMEM chunk (libxdp's default frame size).
pub const CHUNK: usize = 4096;
/// Where the kernel puts a received frame in its chunk.
pub const RX_HEADROOM: usize = sys::XDP_PACKET_HEADROOM as usize;
/// The largest MTU an interface may have: a frame (Ethernet header, one VLAN
/// tag, payload) must fit [`FRAME_SIZE`].
pub const MAX_MTU: u32 = (FRAME_SIZE - 18) as u32;

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

// A received frame (at RX_HEADROOM) has FRAME_SIZE bytes in its chunk.
const _: () = assert!(RX_HEADROOM + FRAME_SIZE <= CHUNK);

/// Frames kept out of the fill rings so that the worker always finds spare
/// buffers for generated packets.
const SPARE_RESERVE: usize = 512;

/// What to open on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Device name.
    pub name: String,
    /// XDP attach mode wanted.
    pub mode: XdpMode,
    /// Zero-copy wanted.
    pub zero_copy: ZeroCopy,
    /// `queues = 1` was configured explicitly: a device with more RX queues
    /// is accepted (the other queues stay with the kernel).
    pub one_queue_ok: bool,
}

/// Ring and memory sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Descriptors per ring (RX, TX, fill, completion): a power of two.
    pub ring: u32,
    /// The RX queue this port binds on every interface.
    pub queue: u32,
    /// RX queues the whole data plane serves per interface (one per worker).
    pub queues: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring: 2048,
            queue: 0,
            queues: 1,
        }
    }
}

/// How an interface was attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// What one interface got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Device name.
    pub name: String,
    /// The XDP mode the kernel accepted.
    pub attach: Attach,
    /// Zero-copy (else copy mode).
    pub zero_copy: bool,
    /// The RX queue served.
    pub queue: u32,
    /// RX queues the device has.
    pub rx_queues: u32,
}

impl std::fmt::Display for PortInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: XDP {}, {} mode, queue {} of {}",
            self.name,
            match self.attach {
                Attach::Native => "native",
                Attach::Generic => "generic",
            },
            if self.zero_copy { "zero-copy" } else { "copy" },
            self.queue,
            self.rx_queues
        )
    }
}

/// Errors opening the port.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The interface is not there.
    #[error("interface `{0}` does not exist (see `ip link`)")]
    NoDevice(String),
    /// The MTU does not fit a frame.
    #[error("{name}: MTU {mtu} is too large for the {frame}-byte frames: at most {MAX_MTU} (`ip link set {name} mtu {MAX_MTU}`)")]
    MtuTooLarge {
        /// Device.
        name: String,
        /// Its MTU.
        mtu: u32,
        /// The frame size.
        frame: usize,
    },
    /// More RX queues than workers: the others would bypass fastables.
    #[error("{name}: the device has {queues} RX queues and fastables serves {served} (one per core of [workers] cores): reduce them (`ethtool -L {name} combined {served}`), list {queues} cores, or set `queues = 1` for this interface to leave the other queues to the kernel")]
    MultiQueue {
        /// Device.
        name: String,
        /// Its RX queues.
        queues: u32,
        /// Queues served (workers).
        served: u32,
    },
    /// Fewer RX queues than workers.
    #[error("{name}: the device has {queues} RX queues and [workers] cores needs {wanted} (one per worker): add queues (`ethtool -L {name} combined {wanted}`; veth: `numrxqueues`) or list fewer cores")]
    TooFewQueues {
        /// Device.
        name: String,
        /// Its RX queues.
        queues: u32,
        /// Queues needed.
        wanted: u32,
    },
    /// Zero-copy wanted where it cannot be.
    #[error("{0}: zero_copy = \"on\" needs native XDP (xdp_mode \"native\" or \"auto\" on a device that supports it)")]
    ZeroCopyNeedsNative(String),
    /// A ring size that is not a power of two.
    #[error("ring size {0} is not a power of two")]
    Ring(u32),
    /// mmap of the UMEM failed.
    #[error("cannot map {bytes} bytes for the UMEM: {err}")]
    Mmap {
        /// Size asked for.
        bytes: usize,
        /// The error.
        err: io::Error,
    },
    /// `xsk_umem__create` failed.
    #[error(
        "cannot register the UMEM with the kernel: {0} (is this root, with bpffs on /sys/fs/bpf?)"
    )]
    Umem(io::Error),
    /// `xsk_socket__create_shared` failed in every mode tried.
    #[error("{name}: cannot open an AF_XDP socket ({tried}): {err}")]
    Socket {
        /// Device.
        name: String,
        /// The modes tried.
        tried: String,
        /// The last error.
        err: io::Error,
    },
}

/// Counters of one interface's socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockCounters {
    /// Frames taken from the RX ring.
    pub rx: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames put on the TX ring.
    pub tx: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// TX completions.
    pub completed: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Kicks that failed with something else than "try again".
    pub kick_errors: u64,
}

/// The kernel's `struct xdp_statistics` for a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Dropped for other reasons.
    pub rx_dropped: u64,
    /// Dropped because of invalid descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame came.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// Where the chunks are (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    /// All chunks of the UMEM.
    pub total: u64,
    /// On the free list.
    pub free: u64,
    /// Given to the kernel in fill rings (including received frames not yet consumed).
    pub in_fill: u64,
    /// On TX rings, not yet completed.
    pub in_tx: u64,
}

struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    fn new(len: usize) -> io::Result<Mmap> {
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: p.cast(), len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and the
        // UMEM that the kernel knew it by was deleted before (XdpPort::drop).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

struct Sock {
    xsk: *mut sys::xsk_socket,
    fd: i32,
    rx: Box<sys::xsk_ring_cons>,
    tx: Box<sys::xsk_ring_prod>,
    fq: Box<sys::xsk_ring_prod>,
    cq: Box<sys::xsk_ring_cons>,
    in_fill: u32,
    in_tx: u32,
    info: PortInfo,
    counters: SockCounters,
}

/// The AF_XDP port of one worker: a socket per interface (index = order of
/// the specs given to [`XdpPort::open`]) over one UMEM.
pub struct XdpPort {
    socks: Vec<Sock>,
    umem: *mut sys::xsk_umem,
    free: Vec<FrameAddr>,
    total: u64,
    epoch: Instant,
    now_ns: u64,
    // Last: unmapped after the sockets and the UMEM are gone.
    area: Mmap,
}

/// An `ifreq` ioctl on `name` in the calling thread's network namespace
/// (sysfs shows the namespace it was mounted in, which may be another).
fn ifreq(name: &str, req: libc::c_ulong) -> Option<libc::ifreq> {
    ifreq_ioctl(name, req, None).ok()
}

/// `SIOCETHTOOL` on `name` with `data` as the command buffer (its first
/// 32 bits the `ETHTOOL_*` command): `Ok` or the kernel's error.
fn ethtool(name: &str, data: &mut [u32]) -> io::Result<()> {
    ifreq_ioctl(name, SIOCETHTOOL, Some(data)).map(|_| ())
}

/// The `ifreq` ioctl `req` on `name` from a fresh datagram socket; with
/// `data`, `ifr_data` points at it (the kernel reads and writes within it,
/// as the command at its start announces). The filled `ifreq`, or the
/// kernel's error (`ENODEV` for a name that cannot be one).
fn ifreq_ioctl(
    name: &str,
    req: libc::c_ulong,
    data: Option<&mut [u32]>,
) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and a union).
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, &b) in r.ifr_name.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    if let Some(d) = data {
        r.ifr_ifru.ifru_data = d.as_mut_ptr().cast();
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a valid ifreq naming the device; its `ifr_data`, when
    // set, points at the caller's buffer, alive for the call.
    let rc = unsafe { libc::ioctl(fd, req as _, &mut r) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` was opened above and is not used after this.
    unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(r)
    } else {
        Err(err)
    }
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GRSSH: u32 = 0x46;
const ETHTOOL_SRSSH: u32 = 0x47;
/// `ETH_RSS_HASH_TOP`: Toeplitz.
const ETH_RSS_HASH_TOP: u32 = 1;
/// `struct ethtool_rxfh` before `rss_config[]`, in 32-bit words.
const RXFH_HEADER: usize = 6;

/// A device's RSS configuration (`ethtool -x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssConfig {
    /// The hash key.
    pub key: Vec<u8>,
    /// The indirection table: entry -> RX queue.
    pub indir: Vec<u32>,
}

/// Reads the device's RSS key and indirection table (`ETHTOOL_GRSSH`).
/// Devices without RSS (veth) answer `EOPNOTSUPP`.
pub fn device_rss(name: &str) -> io::Result<RssConfig> {
    let mut q = [0u32; RXFH_HEADER];
    q[0] = ETHTOOL_GRSSH;
    ethtool(name, &mut q)?;
    let (indir_size, key_size) = (q[2] as usize, q[3] as usize);
    let mut buf = vec![0u32; RXFH_HEADER + indir_size + key_size.div_ceil(4)];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir_size as u32;
    buf[3] = key_size as u32;
    ethtool(name, &mut buf)?;
    let indir = buf[RXFH_HEADER..RXFH_HEADER + indir_size].to_vec();
    let key = buf[RXFH_HEADER + indir_size..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(key_size)
        .collect();
    Ok(RssConfig { key, indir })
}

/// Sets the device's RSS to Toeplitz with `key` and an indirection table
/// spreading `queues` queues round-robin, as fastables' RSS model has them
/// (`ETHTOOL_SRSSH`; the device keeps its table size). Devices without
/// RSS (veth) answer `EOPNOTSUPP`; a device whose key is not `key.len()`
/// bytes, `EINVAL`.
pub fn set_device_rss(name: &str, key: &[u8], queues: u32) -> io::Result<()> {
    let mut q = [0u32; RXFH_HEADER];
    q[0] = ETHTOOL_GRSSH;
    ethtool(name, &mut q)?;
    let (indir_size, key_size) = (q[2] as usize, q[3] as usize);
    if key_size != key.len() || queues == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut buf = vec![0u32; RXFH_HEADER + indir_size + key_size.div_ceil(4)];
    buf[0] = ETHTOOL_SRSSH;
    buf[2] = indir_size as u32;
    buf[3] = key_size as u32;
    // hfunc is the first byte after key_size (u8 hfunc, u8 input_xfrm, u8 rsvd8[2]).
    buf[4] = u32::from_ne_bytes([ETH_RSS_HASH_TOP as u8, 0, 0, 0]);
    for (i, e) in buf[RXFH_HEADER..RXFH_HEADER + indir_size]
        .iter_mut()
        .enumerate()
    {
        *e = i as u32 % queues;
    }
    let mut kb = vec![0u8; key_size.div_ceil(4) * 4];
    kb[..key_size].copy_from_slice(key);
    for (w, c) in buf[RXFH_HEADER + indir_size..]
        .iter_mut()
        .zip(kb.chunks_exact(4))
    {
        *w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    ethtool(name, &mut buf)
}

/// Asks the system for transparent huge pages in `len` bytes at `addr`
/// (`madvise(MADV_HUGEPAGE)` on the whole 4 KiB pages inside; with
/// `/sys/kernel/mm/transparent_hugepage/enabled` at `madvise`, the default of
/// many distributions, large allocations get them only so). The pages are
/// then 2 MiB where the range covers them, which a randomly accessed table
/// of hundreds of MiB needs to avoid a TLB miss per access. An empty or
/// sub-page range is a no-op.
pub fn advise_huge_pages(addr: usize, len: usize) -> io::Result<()> {
    const PAGE: usize = 4096;
    let start = addr.div_ceil(PAGE) * PAGE;
    let end = addr.saturating_add(len) / PAGE * PAGE;
    if end <= start {
        return Ok(());
    }
    // SAFETY: madvise only changes how the kernel backs these pages; it
    // reads and writes no memory and does not invalidate the mapping.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock every network namespace of
/// the machine shares (unlike [`Instant`], whose value cannot be read out),
/// so that a timestamp written by one process can be compared in another.
/// A vDSO call, not a system call.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; CLOCK_MONOTONIC
    // is always available on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether the device exists.
pub fn device_exists(name: &str) -> bool {
    ifreq(name, libc::SIOCGIFINDEX).is_some()
}

/// The device's MAC address.
pub fn device_mac(name: &str) -> Option<[u8; 6]> {
    let r = ifreq(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR fills the `ifru_hwaddr` member of the union.
    let sa = unsafe { r.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, &b) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = b as u8;
    }
    Some(m)
}

/// The device's MTU.
pub fn device_mtu(name: &str) -> Option<u32> {
    let r = ifreq(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU fills the `ifru_mtu` member of the union.
    u32::try_from(unsafe { r.ifr_ifru.ifru_mtu }).ok()
}

/// The IPv4 addresses the kernel has on the device (`getifaddrs`, in the
/// calling thread's namespace).
pub fn device_ipv4_addrs(name: &str) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; its name is a NUL-terminated string and its
        // address, when not NULL and AF_INET, a sockaddr_in.
        unsafe {
            let ifa = &*cur;
            let n = std::ffi::CStr::from_ptr(ifa.ifa_name);
            if !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                && n.to_bytes() == name.as_bytes()
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: frees the list from getifaddrs, once; not used afterwards.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The number of RX queues of the device (from sysfs, which must be the
/// device's namespace's: `ip netns exec` sees to that; 1 when unknown).
pub fn device_rx_queues(name: &str) -> u32 {
    std::fs::read_dir(Path::new("/sys/class/net").join(name).join("queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// A physical device (it has a bus device behind it): native XDP is worth
/// trying. Virtual devices (veth, ...) get generic XDP under `auto`: native
/// XDP on veth delivers only what a peer with its own XDP program sends.
fn is_physical(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("device")
        .exists()
}

/// The (mode, zero-copy) pairs to try for `spec`, best first.
fn attempts(spec: &PortSpec) -> Result<Vec<(Attach, bool)>, XdpError> {
    let modes: &[Attach] = match spec.mode {
        XdpMode::Native => &[Attach::Native],
        XdpMode::Generic => &[Attach::Generic],
        XdpMode::Auto if is_physical(&spec.name) => &[Attach::Native, Attach::Generic],
        XdpMode::Auto => &[Attach::Generic],
    };
    let mut v = Vec::new();
    for &m in modes {
        let zc: &[bool] = match (spec.zero_copy, m) {
            (ZeroCopy::On, Attach::Native) => &[true],
            (ZeroCopy::On, Attach::Generic) => &[],
            (ZeroCopy::Auto, Attach::Native) => &[true, false],
            (_, _) => &[false],
        };
        v.extend(zc.iter().map(|&z| (m, z)));
    }
    if v.is_empty() {
        return Err(XdpError::ZeroCopyNeedsNative(spec.name.clone()));
    }
    Ok(v)
}

/// A zeroed C ring (or statistics) struct, boxed so that its address stays
/// put while libxdp keeps pointers to it.
trait Zeroed: Sized {
    fn boxed() -> Box<Self>;
}

macro_rules! zeroed {
    ($($t:ty),*) => {$(
        impl Zeroed for $t {
            fn boxed() -> Box<Self> {
                // SAFETY: a plain C struct of integers and raw pointers, for
                // which all-zero bytes are a valid (empty) value.
                Box::new(unsafe { std::mem::zeroed() })
            }
        }
    )*};
}
zeroed!(sys::xsk_ring_prod, sys::xsk_ring_cons, sys::xdp_statistics);

fn ring_default<T: Zeroed>() -> Box<T> {
    T::boxed()
}

/// Mounts bpffs on /sys/fs/bpf when nothing is mounted there (libxdp keeps
/// its dispatcher state there; `ip netns exec` gives a fresh /sys without
/// it). Returns whether it mounted it.
pub fn ensure_bpffs() -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(false);
    }
    let target = c"/sys/fs/bpf";
    // SAFETY: NUL-terminated string literals; no data argument.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Silences libbpf's and libxdp's own messages: libbpf warns about every ELF
/// section of libxdp's embedded programs that it does not know, and libxdp
/// says "failed" when it only falls back from its multi-program dispatcher
/// to a single program (which is all fastables needs). Failures are reported
/// through the errors of [`XdpPort::open`], and what each interface got
/// through [`XdpPort::info`].
fn quiet_libbpf() {
    // SAFETY: installs no callback (NULL), which both libraries document as
    // "print nothing"; called before the sockets are created.
    unsafe {
        libbpf_sys::libbpf_set_print(None);
        sys::libxdp_set_print(None);
    }
}

impl XdpPort {
    /// Opens a socket on every interface of `specs` over one UMEM; prints
    /// nothing (see [`XdpPort::info`] for what each got).
    pub fn open(specs: &[PortSpec], opts: Options) -> Result<XdpPort, XdpError> {
        quiet_libbpf();
        if !opts.ring.is_power_of_two() || opts.ring < 64 {
            return Err(XdpError::Ring(opts.ring));
        }
        for s in specs {
            if !device_exists(&s.name) {
                return Err(XdpError::NoDevice(s.name.clone()));
            }
            let mtu = device_mtu(&s.name).unwrap_or(1500);
            if mtu > MAX_MTU {
                return Err(XdpError::MtuTooLarge {
                    name: s.name.clone(),
                    mtu,
                    frame: FRAME_SIZE,
                });
            }
            let q = device_rx_queues(&s.name);
            if q > opts.queues.max(1) && !s.one_queue_ok {
                return Err(XdpError::MultiQueue {
                    name: s.name.clone(),
                    queues: q,
                    served: opts.queues.max(1),
                });
            }
            if opts.queue >= q {
                return Err(XdpError::TooFewQueues {
                    name: s.name.clone(),
                    queues: q,
                    wanted: opts.queue + 1,
                });
            }
            attempts(s)?;
        }
        let ring = opts.ring as usize;
        // Per socket: a full fill ring and a full TX ring; plus the spares.
        let chunks = specs.len().max(1) * 2 * ring + 4 * SPARE_RESERVE;
        let bytes = chunks * CHUNK;
        let area = Mmap::new(bytes).map_err(|err| XdpError::Mmap { bytes, err })?;

        let mut fq0 = ring_default::<sys::xsk_ring_prod>();
        let mut cq0 = ring_default::<sys::xsk_ring_cons>();
        let ucfg = sys::xsk_umem_config {
            fill_size: opts.ring,
            comp_size: opts.ring,
            frame_size: CHUNK as u32,
            frame_headroom: 0,
            flags: 0,
        };
        let mut umem: *mut sys::xsk_umem = ptr::null_mut();
        // SAFETY: `area` is a live mapping of `bytes` bytes, page aligned;
        // the ring structs are boxed, so their addresses stay valid for as
        // long as libxdp keeps pointers to them (they move into the first
        // socket's `Sock`, which lives until the UMEM is deleted).
        let err = unsafe {
            sys::xsk_umem__create(
                &mut umem,
                area.ptr.cast(),
                bytes as u64,
                &mut *fq0,
                &mut *cq0,
                &ucfg,
            )
        };
        if err != 0 || umem.is_null() {
            return Err(XdpError::Umem(io::Error::from_raw_os_error(-err)));
        }
        let mut port = XdpPort {
            socks: Vec::with_capacity(specs.len()),
            umem,
            free: (0..chunks as u64).rev().map(|i| i * CHUNK as u64).collect(),
            total: chunks as u64,
            epoch: Instant::now(),
            now_ns: 0,
            area,
        };
        let mut first = Some((fq0, cq0));
        for s in specs {
            let (fq, cq) = first
                .take()
                .unwrap_or_else(|| (ring_default(), ring_default()));
            let sock = port.open_socket(s, opts.ring, opts.queue, fq, cq)?;
            port.socks.push(sock);
        }
        for i in 0..port.socks.len() {
            port.refill(i);
        }
        Ok(port)
    }

    fn open_socket(
        &mut self,
        spec: &PortSpec,
        ring: u32,
        queue: u32,
        mut fq: Box<sys::xsk_ring_prod>,
        mut cq: Box<sys::xsk_ring_cons>,
    ) -> Result<Sock, XdpError> {
        let name =
            CString::new(spec.name.as_str()).map_err(|_| XdpError::NoDevice(spec.name.clone()))?;
        let mut tried = Vec::new();
        let mut last = io::Error::from_raw_os_error(libc::EINVAL);
        for (attach, zc) in attempts(spec)? {
            let mut rx = ring_default::<sys::xsk_ring_cons>();
            let mut tx = ring_default::<sys::xsk_ring_prod>();
            let cfg = sys::xsk_socket_config {
                rx_size: ring,
                tx_size: ring,
                __bindgen_anon_1: sys::xsk_socket_config__bindgen_ty_1 { libxdp_flags: 0 },
                xdp_flags: match attach {
                    Attach::Native => XDP_FLAGS_DRV_MODE,
                    Attach::Generic => XDP_FLAGS_SKB_MODE,
                },
                bind_flags: (sys::XDP_USE_NEED_WAKEUP
                    | if zc { sys::XDP_ZEROCOPY } else { sys::XDP_COPY })
                    as u16,
            };
            let mut xsk: *mut sys::xsk_socket = ptr::null_mut();
            // SAFETY: `self.umem` is the live UMEM; every ring pointer is a
            // boxed struct that outlives the socket (they move into `Sock`);
            // `name` is a NUL-terminated string alive for the call.
            let err = unsafe {
                sys::xsk_socket__create_shared(
                    &mut xsk,
                    name.as_ptr(),
                    queue,
                    self.umem,
                    &mut *rx,
                    &mut *tx,
                    &mut *fq,
                    &mut *cq,
                    &cfg,
                )
            };
            tried.push(format!(
                "{} {}",
                match attach {
                    Attach::Native => "native",
                    Attach::Generic => "generic",
                },
                if zc { "zero-copy" } else { "copy" }
            ));
            if err == 0 && !xsk.is_null() {
                // SAFETY: `xsk` was just created and is not shared.
                let fd = unsafe { sys::xsk_socket__fd(xsk) };
                return Ok(Sock {
                    xsk,
                    fd,
                    rx,
                    tx,
                    fq,
                    cq,
                    in_fill: 0,
                    in_tx: 0,
                    info: PortInfo {
                        name: spec.name.clone(),
                        attach,
                        zero_copy: zc,
                        queue,
                        rx_queues: device_rx_queues(&spec.name),
                    },
                    counters: SockCounters::default(),
                });
            }
            last = io::Error::from_raw_os_error(-err);
        }
        Err(XdpError::Socket {
            name: spec.name.clone(),
            tried: tried.join(", then "),
            err: last,
        })
    }

    /// What each interface got, in order.
    pub fn info(&self) -> impl Iterator<Item = &PortInfo> {
        self.socks.iter().map(|s| &s.info)
    }

    /// Counters of interface `port`'s socket.
    pub fn counters(&self, port: IfIndex) -> SockCounters {
        self.socks
            .get(port as usize)
            .map(|s| s.counters)
            .unwrap_or_default()
    }

    /// The kernel's statistics of interface `port`'s socket.
    pub fn kernel_stats(&self, port: IfIndex) -> io::Result<KernelStats> {
        let s = self
            .socks
            .get(port as usize)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let mut st = *ring_default::<sys::xdp_statistics>();
        let mut len = std::mem::size_of::<sys::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` is a properly sized and aligned xdp_statistics and
        // `len` its size; the fd is the live socket's.
        let r = unsafe {
            libc::getsockopt(
                s.fd,
                libc::SOL_XDP,
                sys::XDP_STATISTICS as i32,
                (&mut st as *mut sys::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(KernelStats {
            rx_dropped: st.rx_dropped,
            rx_invalid_descs: st.rx_invalid_descs,
            tx_invalid_descs: st.tx_invalid_descs,
            rx_ring_full: st.rx_ring_full,
            rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: st.tx_ring_empty_descs,
        })
    }

    /// Where the chunks are; with nothing held by a worker,
    /// `free + in_fill + in_tx == total`.
    pub fn accounting(&self) -> Accounting {
        Accounting {
            total: self.total,
            free: self.free.len() as u64,
            in_fill: self.socks.iter().map(|s| u64::from(s.in_fill)).sum(),
            in_tx: self.socks.iter().map(|s| u64::from(s.in_tx)).sum(),
        }
    }

    /// Waits up to `timeout_ms` for a frame on any interface (`poll(2)`);
    /// for an idle worker, so that an idle data plane does not spin.
    pub fn wait(&mut self, timeout_ms: i32) {
        let mut fds: [libc::pollfd; 16] = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 16];
        let n = self.socks.len().min(fds.len());
        for (p, s) in fds.iter_mut().zip(&self.socks) {
            p.fd = s.fd;
            p.events = libc::POLLIN;
        }
        // SAFETY: `fds` holds `n` initialised pollfd entries.
        unsafe {
            libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms);
        }
    }

    /// Completed TX frames of socket `i` back to the free list; kicks the
    /// kernel again while frames are still waiting to be sent.
    fn reap(&mut self, i: usize) {
        let s = &mut self.socks[i];
        if s.in_tx == 0 {
            return;
        }
        let mut idx = 0u32;
        // SAFETY: `s.cq` is the socket's live completion ring.
        let n = unsafe { sys::xsk_ring_cons__peek(&mut *s.cq, s.in_tx, &mut idx) };
        for k in 0..n {
            // SAFETY: `idx + k` is within the `n` entries peek returned.
            let a = unsafe { *sys::xsk_ring_cons__comp_addr(&*s.cq, idx.wrapping_add(k)) };
            self.free.push(a & !(CHUNK as u64 - 1));
        }
        if n > 0 {
            // SAFETY: releases exactly the `n` entries read above.
            unsafe { sys::xsk_ring_cons__release(&mut *s.cq, n) };
            s.in_tx -= n;
            s.counters.completed += u64::from(n);
        }
        if s.in_tx > 0 {
            Self::kick(s);
        }
    }

    fn kick(s: &mut Sock) {
        // SAFETY: `s.tx` is the socket's live TX ring.
        if unsafe { sys::xsk_ring_prod__needs_wakeup(&*s.tx) } == 0 {
            return;
        }
        s.counters.kicks += 1;
        // SAFETY: a zero-length sendto on the socket's own fd: the AF_XDP
        // wake-up for TX; no buffer is read.
        let r = unsafe { libc::sendto(s.fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if !matches!(
                e,
                libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN
            ) {
                s.counters.kick_errors += 1;
            }
        }
    }

    /// Tops up socket `i`'s fill ring from the free list (keeping spares).
    fn refill(&mut self, i: usize) {
        let avail = self.free.len().saturating_sub(SPARE_RESERVE);
        if avail == 0 {
            return;
        }
        let s = &mut self.socks[i];
        let mut idx = 0u32;
        let want = (avail as u32).min(s.fq.size.saturating_sub(s.in_fill));
        if want == 0 {
            return;
        }
        // SAFETY: `s.fq` is the socket's live fill ring.
        let n = unsafe { sys::xsk_ring_prod__reserve(&mut *s.fq, want, &mut idx) };
        for k in 0..n {
            let a = self.free.pop().unwrap_or(0);
            // SAFETY: `idx + k` is within the `n` entries reserved above.
            unsafe { *sys::xsk_ring_prod__fill_addr(&mut *s.fq, idx.wrapping_add(k)) = a };
        }
        if n > 0 {
            // SAFETY: submits exactly the `n` entries written above.
            unsafe { sys::xsk_ring_prod__submit(&mut *s.fq, n) };
            s.in_fill += n;
        }
    }
}

impl PacketIo for XdpPort {
    fn ports(&self) -> usize {
        self.socks.len()
    }

    fn memory(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is live for `self`'s lifetime and `&mut self`
        // makes this the only reference from userspace; the kernel writes
        // only chunks that sit in a fill ring, which no frame handed to the
        // caller does (a chunk is in one place at a time).
        unsafe { std::slice::from_raw_parts_mut(self.area.ptr, self.area.len) }
    }

    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn rx_burst(&mut self, port: IfIndex, out: &mut Vec<Frame>, max: usize) -> usize {
        let i = port as usize;
        if i >= self.socks.len() {
            return 0;
        }
        self.now_ns = self.epoch.elapsed().as_nanos() as u64;
        self.reap(i);
        self.refill(i);
        let s = &mut self.socks[i];
        let room = out.capacity().saturating_sub(out.len());
        let want = max.min(room) as u32;
        let mut idx = 0u32;
        // SAFETY: `s.rx` is the socket's live RX ring.
        let n = unsafe { sys::xsk_ring_cons__peek(&mut *s.rx, want, &mut idx) };
        for k in 0..n {
            // SAFETY: `idx + k` is within the `n` entries peek returned.
            let d = unsafe { *sys::xsk_ring_cons__rx_desc(&*s.rx, idx.wrapping_add(k)) };
            let len = u16::try_from(d.len).unwrap_or(u16::MAX);
            s.counters.rx_bytes += u64::from(d.len);
            out.push(Frame::rx(d.addr, len, port));
        }
        if n > 0 {
            // SAFETY: releases exactly the `n` entries read above.
            unsafe { sys::xsk_ring_cons__release(&mut *s.rx, n) };
            s.in_fill -= n.min(s.in_fill);
            s.counters.rx += u64::from(n);
        // SAFETY: `s.fq` is the socket's live fill ring.
        } else if unsafe { sys::xsk_ring_prod__needs_wakeup(&*s.fq) } != 0 {
            // SAFETY: a zero-length, non-blocking recvfrom on the socket's own
            // fd: the AF_XDP wake-up for RX; no buffer is written.
            unsafe {
                libc::recvfrom(
                    s.fd,
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
            }
        }
        n as usize
    }

    fn tx_burst(&mut self, port: IfIndex, frames: &[Frame]) -> usize {
        let i = port as usize;
        if i >= self.socks.len() || frames.is_empty() {
            return 0;
        }
        self.reap(i);
        let s = &mut self.socks[i];
        let mut idx = 0u32;
        let want = frames.len().min(u32::MAX as usize) as u32;
        // SAFETY: `s.tx` is the socket's live TX ring.
        let n = unsafe { sys::xsk_ring_prod__reserve(&mut *s.tx, want, &mut idx) };
        for (k, f) in frames.iter().take(n as usize).enumerate() {
            // SAFETY: `idx + k` is within the `n` entries reserved above.
            let d = unsafe {
                &mut *sys::xsk_ring_prod__tx_desc(&mut *s.tx, idx.wrapping_add(k as u32))
            };
            d.addr = f.addr;
            d.len = u32::from(f.len);
            d.options = 0;
            s.counters.tx_bytes += u64::from(f.len);
        }
        if n > 0 {
            // SAFETY: submits exactly the `n` descriptors written above.
            unsafe { sys::xsk_ring_prod__submit(&mut *s.tx, n) };
            s.in_tx += n;
            s.counters.tx += u64::from(n);
            Self::kick(s);
        }
        n as usize
    }

    fn alloc(&mut self, out: &mut Vec<FrameAddr>, n: usize) {
        let room = out.capacity().saturating_sub(out.len());
        for _ in 0..n.min(room) {
            match self.free.pop() {
                Some(a) => out.push(a),
                None => break,
            }
        }
    }

    fn free(&mut self, addrs: &[FrameAddr]) {
        self.free
            .extend(addrs.iter().map(|a| a & !(CHUNK as u64 - 1)));
    }
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        for s in self.socks.drain(..) {
            // SAFETY: each socket is deleted once, here; its rings (boxed in
            // `s`) are dropped only after the call returns. libxdp detaches
            // its XDP program with the last socket of the interface.
            unsafe { sys::xsk_socket__delete(s.xsk) };
            drop(s);
        }
        // SAFETY: all sockets using the UMEM are gone; deleted once.
        unsafe { sys::xsk_umem__delete(self.umem) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_follow_the_config() {
        let spec = |mode, zero_copy| PortSpec {
            name: "lo".into(),
            mode,
            zero_copy,
            one_queue_ok: false,
        };
        assert_eq!(
            attempts(&spec(XdpMode::Native, ZeroCopy::Auto)).unwrap(),
            [(Attach::Native, true), (Attach::Native, false)]
        );
        assert_eq!(
            attempts(&spec(XdpMode::Generic, ZeroCopy::Auto)).unwrap(),
            [(Attach::Generic, false)]
        );
        // lo is virtual: auto means generic.
        assert_eq!(
            attempts(&spec(XdpMode::Auto, ZeroCopy::Off)).unwrap(),
            [(Attach::Generic, false)]
        );
        assert!(matches!(
            attempts(&spec(XdpMode::Generic, ZeroCopy::On)),
            Err(XdpError::ZeroCopyNeedsNative(_))
        ));
    }

    #[test]
    fn huge_page_advice_takes_any_heap_range() {
        let v = vec![0u8; 8 << 20];
        let a = v.as_ptr() as usize;
        // Unaligned ends are rounded inward; a range inside one page is nothing.
        advise_huge_pages(a + 1, v.len() - 1).unwrap();
        advise_huge_pages(a, 10).unwrap();
        advise_huge_pages(a, 0).unwrap();
        // madvise refuses what is not mapped: the error is reported.
        assert!(advise_huge_pages(usize::MAX - (8 << 20), 4 << 20).is_err());
    }

    #[test]
    fn max_mtu_leaves_room_for_ethernet_and_a_tag() {
        assert_eq!(MAX_MTU, 2030);
    }

    #[test]
    fn missing_devices_are_named() {
        let e = XdpPort::open(
            &[PortSpec {
                name: "nosuchdev0".into(),
                mode: XdpMode::Auto,
                zero_copy: ZeroCopy::Auto,
                one_queue_ok: false,
            }],
            Options::default(),
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "interface `nosuchdev0` does not exist (see `ip link`)"
        );
    }
}
