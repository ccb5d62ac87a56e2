//! Allocator tuning for training loops.
//!
//! Every step allocates and frees the same large buffers. glibc returns
//! freed memory above its trim threshold to the kernel and serves large
//! requests with fresh `mmap`s, so each step pays for page faults and page
//! zeroing again (about 6% of the `mlp` benchmark step). Keeping freed memory
//! in the process avoids that; resident memory then stays at the peak of one
//! step instead of oscillating (it does not grow from step to step).

/// Asks the C allocator to keep freed memory for reuse (glibc on Linux:
/// raises `M_TRIM_THRESHOLD` and `M_MMAP_THRESHOLD` to 1 GiB). Process-wide
/// and opt-in: call it once at the start of a program that trains. Returns
/// whether the setting was applied (always `false` on other platforms).
pub fn retain_freed_memory() -> bool {
    imp::retain()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;

    pub fn retain() -> bool {
        // SAFETY: mallopt only changes allocator parameters; it is safe to
        // call at any time (glibc serializes it with its own lock).
        unsafe {
            mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn retain() -> bool {
        false
    }
}
