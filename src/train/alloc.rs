//! Allocator tuning for training loops.
//!
//! Every step allocates and frees the same large buffers. glibc returns
//! freed memory above its trim threshold to the kernel and serves large
//! requests with fresh `mmap`s, so each step pays for page faults and page
//! zeroing again (about 6% of the `mlp` benchmark step). Keeping freed memory
//! in the process avoids that; resident memory then stays at the peak of one
//! step instead of oscillating (it does not grow from step to step).
//!
//! The C allocator also aligns blocks to 16 bytes only, so a buffer's first
//! element falls anywhere in a 64-byte cache line, and every AVX-512 vector
//! read from it then spans two lines. Tensors pad themselves to a line;
//! [`CacheAligned`] starts every other large block on a line too.

use crate::tensor::{ALIGNED_MIN_BYTES, LINE};
use std::alloc::{GlobalAlloc, Layout, System};

/// Asks the C allocator to keep freed memory for reuse (glibc on Linux:
/// raises `M_TRIM_THRESHOLD` and `M_MMAP_THRESHOLD` to 1 GiB). Process-wide
/// and opt-in: call it once at the start of a program that trains. Returns
/// whether the setting was applied (always `false` on other platforms).
pub fn retain_freed_memory() -> bool {
    imp::retain()
}

/// A global allocator that starts every block of at least
/// [`CacheAligned::MIN_SIZE`] bytes on a 64-byte boundary (a cache line, and
/// the width of an AVX-512 vector) and passes smaller ones to the system
/// allocator unchanged. Opt-in, for the program's `main` crate:
///
/// ```
/// #[global_allocator]
/// static ALLOC: bayesgrad::train::CacheAligned = bayesgrad::train::CacheAligned;
///
/// let v = vec![0.0f32; 1 << 16];
/// assert_eq!(v.as_ptr() as usize % 64, 0);
/// ```
///
/// The system allocator aligns blocks to 16 bytes; an AVX-512 load from a
/// buffer that starts 16, 32 or 48 bytes into a line reads two lines.
/// The tensors bayesgrad builds start on a line already (their storage
/// pads itself), and so do the scratch buffers its products read rows
/// from; this allocator lines up everything else as well: vectors a
/// program hands to `Tensor::from_vec` or keeps for its own kernels, and
/// the remaining scratch buffers. On the benchmark workloads it adds
/// nothing measurable to the tensors' own alignment (`docs/benchmarks.md`,
/// "Cache-line alignment"). PyTorch aligns its CPU tensors to 64 bytes for
/// the same reason.
///
/// A large block is taken from the system allocator 64 bytes longer than
/// asked for, and the pointer handed out is the first line boundary past its
/// start; the byte before it records how far that is, for `dealloc` and
/// `realloc`. So glibc sees ordinary `malloc` requests (not `memalign`,
/// which leaves gaps that grow the heap) and `calloc` still gets fresh
/// zeroed pages without writing them.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheAligned;

impl CacheAligned {
    /// Blocks of this many bytes or more start on a cache line (the size
    /// from which tensors pad themselves to a line).
    pub const MIN_SIZE: usize = ALIGNED_MIN_BYTES;

    /// The block asked of the system allocator for a large `layout` (64
    /// bytes longer), or `None` for a layout passed through unchanged
    /// (small, or aligned to more than a line already).
    fn padded(layout: Layout) -> Option<Layout> {
        if layout.size() < Self::MIN_SIZE || layout.align() > LINE {
            return None;
        }
        // a size too large to pad is passed on as it is; the system
        // allocator refuses it (it exceeds isize::MAX once padded)
        Layout::from_size_align(layout.size().checked_add(LINE)?, layout.align()).ok()
    }

    /// The line boundary in a padded block from the system allocator that
    /// the caller gets (1 to 64 bytes past its start), with the distance
    /// written into the byte before it.
    ///
    /// # Safety
    /// `raw` is the start of a live block of a [`Self::padded`] layout.
    unsafe fn hand_out(raw: *mut u8) -> *mut u8 {
        let shift = Self::shift(raw);
        // SAFETY: shift <= 64 bytes into a block 64 bytes longer than the
        // caller's size, and the byte before it is in the block (shift >= 1).
        unsafe {
            let ptr = raw.add(shift);
            ptr.sub(1).write(shift as u8);
            ptr
        }
    }

    /// How far past `raw` the first line boundary after it lies: 1 to 64
    /// bytes, so that there is always a byte before it to record it in.
    fn shift(raw: *mut u8) -> usize {
        LINE - raw as usize % LINE
    }

    /// A block for `layout` from `get` (the system allocator's `alloc` or
    /// `alloc_zeroed`): padded and handed out at its line boundary when
    /// large, else as it is.
    ///
    /// # Safety
    /// `layout` has a nonzero size.
    unsafe fn from_system(layout: Layout, get: unsafe fn(&System, Layout) -> *mut u8) -> *mut u8 {
        // SAFETY: (all three) a nonzero size, padded or not; `hand_out`
        // gets the start of a live padded block
        unsafe {
            match Self::padded(layout) {
                Some(padded) => {
                    let raw = get(&System, padded);
                    if raw.is_null() {
                        raw
                    } else {
                        Self::hand_out(raw)
                    }
                }
                None => get(&System, layout),
            }
        }
    }

    /// The start of the system allocator's block behind a pointer
    /// [`Self::hand_out`] gave.
    ///
    /// # Safety
    /// `ptr` came from `hand_out` and its block is live.
    unsafe fn raw_of(ptr: *mut u8) -> *mut u8 {
        // SAFETY: `hand_out` wrote the distance into the byte before `ptr`.
        unsafe { ptr.sub(usize::from(ptr.sub(1).read())) }
    }
}

// SAFETY: every block comes from `System` and goes back to it with the
// layout it was taken with: `padded` is a function of the caller's layout
// (its size and alignment, which `dealloc` and `realloc` get again), and
// `raw_of` recovers the block's start from the byte `hand_out` wrote. The
// caller's `size` bytes at the pointer handed out lie inside the block, at
// its alignment (a line boundary is a multiple of every alignment up to 64).
unsafe impl GlobalAlloc for CacheAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract: `layout` has a nonzero size
        unsafe { Self::from_system(layout, System::alloc) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`; a zeroed padded block is zero at its
        // line boundary too
        unsafe { Self::from_system(layout, System::alloc_zeroed) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, so a padded
        // layout means `hand_out` gave it
        unsafe {
            match Self::padded(layout) {
                Some(padded) => System.dealloc(Self::raw_of(ptr), padded),
                None => System.dealloc(ptr, layout),
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `ptr` is live from this allocator
        // with `layout`, and `new_size` at that alignment is a valid layout
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            match (Self::padded(layout), Self::padded(new)) {
                (None, None) => System.realloc(ptr, layout, new_size),
                (Some(old_padded), Some(new_padded)) => {
                    let raw = Self::raw_of(ptr);
                    let old_shift = ptr.offset_from(raw);
                    let moved = System.realloc(raw, old_padded, new_padded.size());
                    if moved.is_null() {
                        return moved; // the old block is untouched
                    }
                    // the data came along at the old distance from the
                    // block's start (shift + min(sizes) <= the new block's
                    // size); moved to the new block's line boundary before
                    // `hand_out` writes the byte in front of it
                    let out = moved.add(Self::shift(moved));
                    std::ptr::copy(moved.offset(old_shift), out, layout.size().min(new_size));
                    Self::hand_out(moved)
                }
                // across the size threshold: a new block of the other kind
                _ => {
                    let out = self.alloc(new);
                    if !out.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, out, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    out
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `len` bytes at `ptr` with a pattern that depends on `seed`.
    unsafe fn fill(ptr: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: the caller's block holds `len` bytes
            unsafe {
                ptr.add(i)
                    .write((i as u8).wrapping_mul(31).wrapping_add(seed))
            };
        }
    }

    /// Whether the first `len` bytes at `ptr` hold `fill`'s pattern.
    unsafe fn holds(ptr: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: the caller's block holds `len` bytes
        (0..len)
            .all(|i| unsafe { ptr.add(i).read() } == (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    #[test]
    fn large_blocks_start_on_a_line_and_small_ones_keep_their_alignment() {
        let a = CacheAligned;
        // many blocks alive at once, so that the system allocator hands out
        // starts at every offset in a line
        let mut live = Vec::new();
        for (i, size) in [1, 3, 100, 4095, 4096, 4097, 10_000, 1 << 20, 3 << 20]
            .into_iter()
            .cycle()
            .take(90)
            .enumerate()
        {
            for align in [1, 4, 8, 16, 32, 64] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a nonzero size
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                let want = if size >= CacheAligned::MIN_SIZE {
                    64
                } else {
                    align
                };
                assert_eq!(p as usize % want, 0, "size {size}, align {align}");
                // SAFETY: the block holds `size` bytes
                unsafe { fill(p, size, i as u8) };
                live.push((p, layout, i as u8));
            }
        }
        for (p, layout, seed) in live {
            // SAFETY: each block is live, of `layout`, filled with `seed`
            unsafe {
                assert!(holds(p, layout.size(), seed));
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_within_and_across_the_threshold() {
        let a = CacheAligned;
        let min = CacheAligned::MIN_SIZE;
        // grow and shrink through the threshold and within each side of it
        let sizes = [
            16,
            min - 1,
            min,
            min + 64,
            3 * min + 5,
            1 << 20,
            5 << 20,
            2 * min,
            min,
            min - 1,
            8,
            1 << 21,
            100,
        ];
        for align in [4, 16, 64] {
            let mut layout = Layout::from_size_align(sizes[0], align).unwrap();
            // SAFETY: a nonzero size
            let mut p = unsafe { a.alloc(layout) };
            // SAFETY: the block holds `layout.size()` bytes
            unsafe { fill(p, layout.size(), 7) };
            for &size in &sizes[1..] {
                // keep other blocks around, so that a block cannot always
                // grow where it is
                let other = Layout::from_size_align(size.max(min), 16).unwrap();
                // SAFETY: a nonzero size; freed below
                let q = unsafe { a.alloc(other) };
                // SAFETY: `p` is live with `layout`, `size` is nonzero
                let moved = unsafe { a.realloc(p, layout, size) };
                assert!(!moved.is_null());
                let kept = layout.size().min(size);
                let want = if size >= min { 64 } else { align };
                assert_eq!(moved as usize % want, 0, "{} -> {size}", layout.size());
                // SAFETY: the new block holds `size` bytes, the first `kept`
                // of them carried over
                unsafe {
                    assert!(holds(moved, kept, 7), "{} -> {size}", layout.size());
                    fill(moved, size, 7);
                    a.dealloc(q, other);
                }
                (p, layout) = (moved, Layout::from_size_align(size, align).unwrap());
            }
            // SAFETY: live, of `layout`
            unsafe { a.dealloc(p, layout) };
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        let a = CacheAligned;
        for size in [10, 5000, 1 << 20] {
            let layout = Layout::from_size_align(size, 4).unwrap();
            // SAFETY: a nonzero size; the block is freed below
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!((0..size).all(|i| p.add(i).read() == 0));
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn a_size_too_large_to_pad_is_refused_not_wrapped() {
        let a = CacheAligned;
        let layout = Layout::from_size_align(isize::MAX as usize - 8, 8).unwrap();
        // SAFETY: a nonzero size; a null result is not used. (Without the
        // black boxes an optimized build may fold the system allocation
        // away and take its result for non-null.)
        let p = std::hint::black_box(unsafe { a.alloc(std::hint::black_box(layout)) });
        assert!(p.is_null());
    }
}
