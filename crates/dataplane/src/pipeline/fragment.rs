//! IPv4 fragmentation of forwarded datagrams, as the kernel's `ip_do_fragment`
//! (slow path) does it: every fragment but the last carries
//! `(mtu - header length) & !7` bytes of payload; all keep the ID, TOS and TTL;
//! MF is set on all but the last (which keeps the original's MF); offsets add
//! to the original's; options without the "copied" flag are replaced by NOOPs in
//! later fragments (`ip_options_fragment`), so every header has the original
//! length. The first fragment stays in the received frame's buffer, the
//! others are written into spare buffers.

use std::sync::atomic::Ordering;

use fastables_packet::checksum;
use fastables_packet::ipv4::{self, Ipv4Packet};
use fastables_packet::read_be16;
use fastables_packet::IfIndex;

use super::output::frame_pair;
use super::pkt::ETH_LEN;
use super::Pipeline;
use crate::drop::DropReason;
use crate::worker::Batch;
use fastables_port::{Frame, FrameAddr};

impl Pipeline {
    /// Splits the forwarded frame `rx` (L2 already rewritten) into fragments for
    /// `mtu` out of `port`: the first stays in `rx`, the others go into spare
    /// buffers of `batch`, in order, queued in `batch.generated`. Fails
    /// (nothing sent) when there are not enough spare buffers.
    pub(super) fn fragment(
        &mut self,
        mem: &mut [u8],
        rx: &mut Frame,
        mtu: u16,
        port: IfIndex,
        batch: &mut Batch,
    ) -> Result<(), DropReason> {
        let a = usize::try_from(rx.addr).map_err(|_| DropReason::InvalidFrame)?;
        let ip_len = usize::from(rx.len).saturating_sub(ETH_LEN);
        let head = mem
            .get(a + ETH_LEN..a + ETH_LEN + ip_len)
            .and_then(|ip| Ipv4Packet::new_checked(ip).ok())
            .ok_or(DropReason::InvalidFrame)?;
        let (hl, orig_off, orig_mf) = (
            head.header_len(),
            usize::from(head.frag_offset()),
            head.more_frags(),
        );
        let (chunk, count) =
            plan(hl, ip_len, usize::from(mtu)).ok_or(DropReason::FragmentationUnsupported)?;
        let (spare, generated) = (&mut batch.spare, &mut batch.generated);
        if spare.len() < count - 1 {
            return Err(DropReason::NoBuffer);
        }
        let payload = ip_len - hl;
        let first_gen = generated.len();
        for k in 1..count {
            let Some(b) = spare.pop().and_then(|x| usize::try_from(x).ok()) else {
                return Err(DropReason::NoBuffer);
            };
            let Some((rxb, out)) = frame_pair(mem, a, b) else {
                spare.push(b as FrameAddr);
                // Give back the buffers of the fragments already written.
                while generated.len() > first_gen {
                    if let Some(g) = generated.pop() {
                        spare.push(g.addr);
                    }
                }
                return Err(DropReason::InvalidFrame);
            };
            let off = k * chunk;
            let len = chunk.min(payload - off);
            out[..ETH_LEN + hl].copy_from_slice(&rxb[..ETH_LEN + hl]);
            let data = ETH_LEN + hl + off..ETH_LEN + hl + off + len;
            out[ETH_LEN + hl..ETH_LEN + hl + len].copy_from_slice(&rxb[data]);
            let h = &mut out[ETH_LEN..ETH_LEN + hl];
            noop_uncopied_options(h);
            let last = k == count - 1;
            set_fragment_header(h, hl + len, orig_off + off, !last || orig_mf);
            generated.push(Frame {
                addr: b as FrameAddr,
                len: (ETH_LEN + hl + len) as u16,
                port,
            });
        }
        self.counters
            .generated
            .fetch_add((count - 1) as u64, Ordering::Relaxed);
        let h = mem
            .get_mut(a + ETH_LEN..a + ETH_LEN + hl)
            .ok_or(DropReason::InvalidFrame)?;
        set_fragment_header(h, hl + chunk, orig_off, true);
        rx.len = (ETH_LEN + hl + chunk) as u16;
        Ok(())
    }
}

/// How a datagram of `total` bytes with a `hl`-byte header splits for `mtu`:
/// (payload bytes per fragment, number of fragments). `None` if the MTU leaves
/// no room for 8 bytes of payload.
pub fn plan(hl: usize, total: usize, mtu: usize) -> Option<(usize, usize)> {
    let chunk = (mtu.checked_sub(hl)? / 8) * 8;
    if chunk == 0 || total <= hl {
        return None;
    }
    let payload = total - hl;
    Some((chunk, payload.div_ceil(chunk)))
}

/// Option kinds: the end of the list, and no operation.
const OPT_END: u8 = 0;
const OPT_NOOP: u8 = 1;
/// The option kind's "copied into fragments" flag.
const OPT_COPIED: u8 = 0x80;

/// Replace the options of `header[20..]` that are not copied into fragments by NOOPs.
pub fn noop_uncopied_options(header: &mut [u8]) {
    let mut i = ipv4::field::OPTIONS_START;
    while let Some(&kind) = header.get(i) {
        match kind {
            OPT_END => break,
            OPT_NOOP => i += 1,
            _ => {
                let len = usize::from(header.get(i + 1).copied().unwrap_or(0));
                let Some(opt) = header.get_mut(i..i + len).filter(|_| len >= 2) else {
                    break;
                };
                if kind & OPT_COPIED == 0 {
                    opt.fill(OPT_NOOP);
                }
                i += len;
            }
        }
    }
}

/// Rewrite the header `h` for a fragment: total length `total`, fragment offset
/// `offset_bytes` (absolute), MF; recompute the header checksum.
pub fn set_fragment_header(h: &mut [u8], total: usize, offset_bytes: usize, mf: bool) {
    use ipv4::field;
    if h.len() < ipv4::MIN_HEADER_LEN {
        return;
    }
    h[field::TOTAL_LEN].copy_from_slice(&(total as u16).to_be_bytes());
    let old = read_be16(h, field::FLAGS_FRAG.start).unwrap_or(0);
    let mut ff = (old & ipv4::FLAG_DF) | ((offset_bytes / 8) as u16 & ipv4::FRAG_OFFSET_MASK);
    if mf {
        ff |= ipv4::FLAG_MF;
    }
    h[field::FLAGS_FRAG].copy_from_slice(&ff.to_be_bytes());
    h[field::CHECKSUM].fill(0);
    let c = checksum::checksum(h);
    h[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_as_the_kernel() {
        // 1500-byte datagram, MTU 1400: 1376 + 104 (kernel capture).
        assert_eq!(plan(20, 1500, 1400), Some((1376, 2)));
        assert_eq!(plan(24, 1500, 576), Some((552, 3)));
        assert_eq!(plan(60, 100, 64), None);
    }

    #[test]
    fn uncopied_options_become_noops() {
        // Record route (7, not copied), then security-like copied option (0x82).
        let mut h = [0u8; 32];
        h[20..27].copy_from_slice(&[7, 7, 4, 0, 0, 0, 0]);
        h[27..31].copy_from_slice(&[0x82, 4, 9, 9]);
        noop_uncopied_options(&mut h);
        assert_eq!(&h[20..31], &[1, 1, 1, 1, 1, 1, 1, 0x82, 4, 9, 9]);
    }

    #[test]
    fn header_rewrite() {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[8] = 63;
        h[9] = 17;
        set_fragment_header(&mut h, 124, 1376, false);
        assert_eq!(&h[2..4], &124u16.to_be_bytes());
        assert_eq!(&h[6..8], &172u16.to_be_bytes());
        assert!(checksum::verify(&h));
        set_fragment_header(&mut h, 1396, 0, true);
        assert_eq!(&h[6..8], &[0x20, 0]);
    }
}
