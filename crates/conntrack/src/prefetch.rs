//! A cache prefetch hint: the line of a value starts loading, and nothing
//! waits for it. A plain load whose result is thrown away also brings the
//! line in, but the core cannot retire it (nor anything after it) before
//! the data arrives, so a burst of such loads in a large table stalls as
//! soon as the reorder buffer is full; a prefetch retires at once.

/// Start loading the cache line holding `v` (into all cache levels). A no-op
/// where no prefetch instruction is available.
#[inline(always)]
#[allow(unsafe_code)]
pub fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it reads nothing architecturally, cannot
    // fault whatever the address, and `v` is a valid reference anyway; the
    // `sse` target feature it needs is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (v as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
