//! Gives the operating system back the memory the C allocator holds free after a burst.
//!
//! librdkafka allocates through glibc's `malloc` (the Rust allocator of a service does not
//! reach C code). glibc returns freed memory only from the top of an arena, so after a burst of
//! fetch buffers (a changelog restore reads hundreds of MB through short-lived clients) the
//! freed pages below a live allocation stay resident: 30-75 MB of a 1,000,000-key restore,
//! measured in `docs/benchmarks.md`. `malloc_trim(0)` walks every arena and releases them.

/// Asks glibc to return the free pages of every arena to the system (`malloc_trim(0)`), and
/// says whether it gave anything back. Elsewhere (musl, macOS) it does nothing and returns
/// `false`: those allocators return memory themselves or have no such call.
///
/// Call it after a burst, not on a hot path: glibc locks each arena in turn while it walks it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "glibc's malloc_trim has no Rust binding without FFI"
)]
pub fn release_freed() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and touches only glibc's own free lists, which it
    // locks like every other allocator call does; 0 asks for no padding to be kept.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the C allocator to return its free pages: nothing to do off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn freed_pages_below_a_live_allocation_leave_the_resident_set() {
        let rss = || crate::testing::rss_kib(std::process::id());
        // 64 MB in 1 KiB pieces (what a restore's fetch buffers and messages look like to
        // glibc), written so they are resident; the last piece, the highest, stays: glibc's
        // own trimming, from the top only, cannot return the freed pieces below it.
        let mut burst: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 1_000]).collect();
        let pin = burst.pop();
        drop(burst);
        let before = rss();
        let released = release_freed();
        let after = rss();
        assert!(released, "glibc reported nothing released");
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "resident set {before} KiB before, {after} KiB after"
        );
        assert!(pin.is_some_and(|p| p.len() == 1_000));
    }
}
