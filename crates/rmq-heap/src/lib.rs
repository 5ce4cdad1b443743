//! Gives freed heap memory back to the operating system.
//!
//! glibc's allocator keeps what a burst of connections freed in its arenas (one per thread
//! that allocated), so a sidecar that briefly held thousands of connections stays at that
//! size after they closed: measured at 276 MiB after 9,000 idle pairs closed
//! (`benches/compare.py --idle`). [`trim`] asks glibc to hand every free page of every arena
//! back (`malloc_trim(0)`: `madvise(MADV_DONTNEED)` on the free pages, `sbrk` at the top).
//! It costs a walk of the free lists, so it is called after many connections closed, not
//! per connection.
//!
//! This is the one `unsafe` of the workspace (an FFI call that takes a byte count and no
//! pointer); every other crate forbids unsafe code.
//!
//! # Layout
//! One function, [`trim`].

/// Returns free heap pages to the operating system; true when glibc released memory.
/// Does nothing (false) where the C library is not glibc.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim(3) takes a byte count, reads and writes only the allocator's
        // own state under each arena's lock (it is thread-safe), and has been exported by
        // glibc since 2.0; no pointer of ours is involved.
        unsafe { malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn memory_freed_below_a_live_block_is_given_back() {
        // 16 MiB in 2 KiB blocks (what connections leave behind), all freed but the last,
        // which pins the top of the heap: free() alone cannot shrink it, trim can.
        let mut blocks: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 2048]).collect();
        let keep = blocks.pop();
        drop(blocks);
        assert!(
            super::trim(),
            "glibc gave nothing back after 16 MiB were freed"
        );
        drop(keep);
    }
}
