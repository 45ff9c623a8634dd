//! Routing for the pipeline: the FIB ([`crate::route`]) behind a
//! direct-mapped cache of `route_input` decisions. The FIB and the
//! interfaces do not change while the pipeline lives, so nothing
//! invalidates the cache.

use fastables_packet::IfIndex;

use crate::drop::DropReason;
use crate::iface::Interfaces;
use crate::route::{Fib, RouteResult};

/// Slots of the route cache (a power of two).
const ROUTE_CACHE: usize = 1024;

/// The routing table and its cache.
pub(super) struct Routes {
    fib: Fib,
    cache: Box<[RouteSlot]>,
}

/// One remembered `route_input` decision.
#[derive(Clone, Copy)]
struct RouteSlot {
    used: bool,
    in_if: IfIndex,
    src: u32,
    dst: u32,
    res: Result<RouteResult, DropReason>,
}

impl RouteSlot {
    const EMPTY: RouteSlot = RouteSlot {
        used: false,
        in_if: 0,
        src: 0,
        dst: 0,
        res: Err(DropReason::NoRoute),
    };
}

impl Routes {
    /// `fib` with an empty cache.
    pub(super) fn new(fib: Fib) -> Routes {
        Routes {
            fib,
            cache: vec![RouteSlot::EMPTY; ROUTE_CACHE].into_boxed_slice(),
        }
    }

    /// The routing table.
    pub(super) fn fib(&self) -> &Fib {
        &self.fib
    }

    /// `Fib::route_input` for a packet from `src` to `dst` received on
    /// `in_if`, through the cache keyed by (ingress, source, destination):
    /// the same answer without the martian checks and the longest-prefix
    /// match on a hit.
    #[inline]
    pub(super) fn input(
        &mut self,
        ifs: &Interfaces,
        in_if: IfIndex,
        src: u32,
        dst: u32,
    ) -> Result<RouteResult, DropReason> {
        let h = (src.wrapping_mul(0x9e37_79b1) ^ dst.wrapping_mul(0x85eb_ca77) ^ u32::from(in_if))
            .rotate_left(13);
        let i = (h as usize) & (ROUTE_CACHE - 1);
        if let Some(slot) = self.cache.get(i) {
            if slot.used && slot.in_if == in_if && slot.src == src && slot.dst == dst {
                return slot.res;
            }
        }
        let res = self.fib.route_input(ifs, in_if, src, dst);
        if let Some(slot) = self.cache.get_mut(i) {
            *slot = RouteSlot {
                used: true,
                in_if,
                src,
                dst,
                res,
            };
        }
        res
    }

    /// `Fib::route_output`: the route of a packet we send to `dst`.
    #[inline]
    pub(super) fn output(&self, ifs: &Interfaces, dst: u32) -> Option<RouteResult> {
        self.fib.route_output(ifs, dst)
    }
}
