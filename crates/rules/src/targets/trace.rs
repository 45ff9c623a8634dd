//! `-j TRACE`: the packet is traced from here on (iptables-nft sets `meta
//! nftrace`, in any table); `fastables trace --marked` shows it. No options.

use crate::ctx::PacketCtx;

#[inline(always)]
pub(super) fn apply(ctx: &mut PacketCtx) {
    ctx.effects.trace = true;
}
