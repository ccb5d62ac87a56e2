//! A tensor's elements, starting on a cache line when the buffer is large.
//!
//! The system allocator aligns blocks to 16 bytes, so a weight-sized buffer
//! starts anywhere in a 64-byte line and every AVX-512 load from it reads
//! two lines (`docs/benchmarks.md`, "Cache-line alignment"). A [`Storage`]
//! built here keeps an ordinary `Vec` with up to one line of zeros in front
//! of the elements, so that the first element sits on a line boundary: no
//! allocator of its own, nothing for a program to install. A vector handed
//! in from outside (`Tensor::from_vec`) is kept as it is, without a copy.

use crate::kernels::Element;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};

/// A cache line, in bytes.
pub(crate) const LINE: usize = 64;

/// Buffers of at least this many bytes start their elements on a line;
/// smaller ones are not worth the padding.
pub(crate) const ALIGNED_MIN_BYTES: usize = 4096;

/// The elements of a tensor: `vec[start..]`, with `start` elements of
/// padding (zeros) before them.
#[derive(Debug)]
pub(crate) struct Storage<F> {
    vec: Vec<F>,
    start: usize,
}

impl<F: Element> Storage<F> {
    /// The elements of `vec`, where they are.
    pub(crate) fn from_vec(vec: Vec<F>) -> Self {
        Storage { vec, start: 0 }
    }

    /// `len` elements written by `fill`, starting on a cache line when they
    /// take [`ALIGNED_MIN_BYTES`] or more (see [`Uninit`]).
    ///
    /// # Safety
    /// `fill` initializes every element of the slice it is given.
    pub(crate) unsafe fn build(len: usize, fill: impl FnOnce(&mut [MaybeUninit<F>])) -> Self {
        let mut out = Uninit::new(len);
        fill(out.slots());
        // SAFETY: the caller's contract
        unsafe { out.assume_init() }
    }

    /// The first `len` items, laid out as [`Storage::build`] does. Panics
    /// if there are fewer (a caller's error, found before any is read).
    pub(crate) fn collect(len: usize, items: impl IntoIterator<Item = F>) -> Self {
        let mut out = Uninit::new(len);
        let mut written = 0;
        for (slot, x) in out.slots().iter_mut().zip(items) {
            slot.write(x);
            written += 1;
        }
        assert_eq!(written, len, "Storage::collect: fewer items than slots");
        // SAFETY: all `len` slots were written (asserted)
        unsafe { out.assume_init() }
    }

    /// Whether the elements start where [`Storage::build`] would put them:
    /// on a cache line, or anywhere for a small buffer.
    pub(crate) fn is_aligned(&self) -> bool {
        self.len().saturating_mul(size_of::<F>()) < ALIGNED_MIN_BYTES
            || (self.as_ptr() as usize).is_multiple_of(LINE)
    }

    /// The elements as a vector of their own (moved to the front if they
    /// are behind padding).
    pub(crate) fn into_vec(self) -> Vec<F> {
        let Storage { mut vec, start } = self;
        vec.drain(..start);
        vec
    }
}

/// A [`Storage`] being written: `len` slots after the padding that puts
/// the first on a cache line (for [`ALIGNED_MIN_BYTES`] or more), for
/// kernels that write several outputs in one pass.
pub(crate) struct Uninit<F> {
    vec: Vec<F>,
    start: usize,
    len: usize,
}

impl<F: Element> Uninit<F> {
    /// Room for `len` elements, the padding written.
    pub(crate) fn new(len: usize) -> Self {
        let size = size_of::<F>();
        let pad = if len.saturating_mul(size) >= ALIGNED_MIN_BYTES {
            LINE / size
        } else {
            0
        };
        let mut vec = Vec::with_capacity(len + pad);
        // elements to skip to the first line boundary (an `F` is aligned
        // to its size, which divides the line)
        let start = match pad {
            0 => 0,
            _ => (LINE - vec.as_ptr() as usize % LINE) % LINE / size,
        };
        vec.resize(start, F::zero());
        Uninit { vec, start, len }
    }

    /// The `len` slots for the elements.
    pub(crate) fn slots(&mut self) -> &mut [MaybeUninit<F>] {
        &mut self.vec.spare_capacity_mut()[..self.len]
    }

    /// The storage, once every slot is written.
    ///
    /// # Safety
    /// Every one of the `len` slots [`Self::slots`] gives has been written.
    pub(crate) unsafe fn assume_init(self) -> Storage<F> {
        let Uninit {
            mut vec,
            start,
            len,
        } = self;
        // SAFETY: the padding was written by `new` (which reserved `pad +
        // len >= start + len`), and the slots by the caller
        unsafe { vec.set_len(start + len) };
        Storage { vec, start }
    }
}

impl<F: Element> From<Vec<F>> for Storage<F> {
    fn from(vec: Vec<F>) -> Self {
        Storage::from_vec(vec)
    }
}

impl<F> Deref for Storage<F> {
    type Target = [F];
    fn deref(&self) -> &[F] {
        &self.vec[self.start..]
    }
}

impl<F> DerefMut for Storage<F> {
    fn deref_mut(&mut self) -> &mut [F] {
        &mut self.vec[self.start..]
    }
}

/// A copy starts on a line too (a copy-on-write write makes one).
impl<F: Element> Clone for Storage<F> {
    fn clone(&self) -> Self {
        let elements: &[F] = self;
        // SAFETY: the copy writes every slot
        unsafe {
            Storage::build(elements.len(), |out| {
                for (o, &x) in out.iter_mut().zip(elements) {
                    o.write(x);
                }
            })
        }
    }
}

impl<F: PartialEq> PartialEq for Storage<F> {
    fn eq(&self, other: &Self) -> bool {
        self.vec[self.start..] == other.vec[other.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::params::ParamStore;
    use crate::autodiff::tape::Tape;
    use crate::tensor::Tensor;
    use rand::SeedableRng;

    /// On the system allocator (the unit tests do not install
    /// `train::CacheAligned`), the tensors a training step makes most of
    /// start on a cache line: drawn, filled, multiplied, mapped by an op,
    /// and a parameter added from a vector that starts anywhere.
    #[test]
    fn the_main_producers_start_large_tensors_on_a_line() {
        let on_line = |t: &Tensor<f32>| (t.data().as_ptr() as usize).is_multiple_of(LINE);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let a = Tensor::<f32>::from_fn(&[64, 300], |i| (i % 13) as f32 * 0.1);
        let b = Tensor::<f32>::full(&[300, 70], 0.5);
        let product = a.matmul(&b).unwrap();
        let normals = Tensor::<f32>::standard_normal(&[5000], &mut rng);
        let tape = Tape::new();
        let mapped = tape.constant(a.clone()).exp().value();
        let by_map = a.map(|x| x + 1.0);
        let by_zip = a.zip_map(&by_map, "sub", |x, y| y - x).unwrap();
        let mut store = ParamStore::<f32>::new();
        let mut given = Vec::new();
        // vectors of 5000 until one starts off a line (or give up: the
        // allocator may align them all)
        for _ in 0..16 {
            let v = vec![0.25f32; 5000];
            let off = !(v.as_ptr() as usize).is_multiple_of(LINE);
            given.push(v);
            if off {
                break;
            }
        }
        let last = given.pop().unwrap();
        let p = store.add("w", Tensor::from_vec(last, &[5000]).unwrap());
        for (what, t) in [
            ("from_fn", &a),
            ("full", &b),
            ("matmul", &product),
            ("standard_normal", &normals),
            ("exp", &mapped),
            ("map", &by_map),
            ("zip_map", &by_zip),
            ("a parameter", store.raw(p)),
        ] {
            assert!(on_line(t), "{what}");
        }
        assert!(store.raw(p).data().iter().all(|&x| x == 0.25));
        let expect = a.data().iter().zip(by_map.data()).map(|(&x, &y)| y - x);
        assert!(by_zip.data().iter().copied().eq(expect));
    }

    /// `collect` refuses an iterator shorter than its length before
    /// anything could read the slots left unwritten.
    #[test]
    #[should_panic(expected = "fewer items than slots")]
    fn collect_refuses_too_few_items() {
        Storage::<f32>::collect(2000, (0..1999).map(|i| i as f32));
    }

    /// Builds, clones and unwraps storages of many lengths, some alive at
    /// once so that the allocator hands out blocks at every offset in a
    /// line: large ones start on a line, every one holds its elements.
    #[test]
    fn large_storages_start_on_a_line_and_keep_their_elements() {
        let mut live = Vec::new();
        for (i, len) in [0usize, 1, 7, 1023, 1024, 1025, 5000, 100_000]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let value = |j: usize| (i * 1000 + j) as f32;
            // SAFETY: every slot is written
            let s = unsafe {
                Storage::<f32>::build(len, |out| {
                    for (j, o) in out.iter_mut().enumerate() {
                        o.write(value(j));
                    }
                })
            };
            let aligned = len * 4 >= ALIGNED_MIN_BYTES;
            for t in [&s, &s.clone()] {
                assert_eq!(t.len(), len);
                assert!(t.iter().enumerate().all(|(j, &x)| x == value(j)));
                if aligned {
                    assert_eq!(t.as_ptr() as usize % LINE, 0, "len {len}");
                }
            }
            assert_eq!(s.clone(), s);
            live.push(s);
        }
        for s in live.drain(..) {
            let expect: Vec<f32> = s.to_vec();
            assert_eq!(s.into_vec(), expect);
        }
        // SAFETY: the fill writes every slot
        let s = unsafe {
            Storage::<f64>::build(600, |out| {
                out.fill(MaybeUninit::new(2.5));
            })
        };
        assert_eq!(s.as_ptr() as usize % LINE, 0);
        assert!(s.iter().all(|&x| x == 2.5));
        let v = vec![1.0f64, 2.0, 3.0];
        let ptr = v.as_ptr();
        let kept = Storage::from_vec(v);
        assert_eq!(kept.as_ptr(), ptr, "a vector handed in is not copied");
    }
}
