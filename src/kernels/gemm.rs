//! Matrix products: the strided GEMM behind `matmul` and the convolutions,
//! with a small-matrix path and a two-thread split of large products.

use super::element::Element;
use crate::tensor::Storage;

/// A row-major matrix buffer read directly or transposed.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, F> {
    data: &'a [F],
    row_stride: isize,
    col_stride: isize,
}

impl<'a, F> MatRef<'a, F> {
    /// `data` is row-major with `cols` columns; `transposed` reads it as its transpose.
    pub(crate) fn new(data: &'a [F], cols: usize, transposed: bool) -> Self {
        let cols = cols as isize;
        if transposed {
            MatRef {
                data,
                row_stride: 1,
                col_stride: cols,
            }
        } else {
            MatRef {
                data,
                row_stride: cols,
                col_stride: 1,
            }
        }
    }

    /// The matrix without its first `rows` rows.
    fn skip_rows(self, rows: usize) -> Self {
        MatRef {
            data: &self.data[rows * self.row_stride as usize..],
            ..self
        }
    }

    /// The matrix without its first `cols` columns.
    fn skip_cols(self, cols: usize) -> Self {
        MatRef {
            data: &self.data[cols * self.col_stride as usize..],
            ..self
        }
    }
}

/// `a b` with `a: m x k`, `b: k x n` into a new row-major buffer, which
/// the GEMM writes without a zero-filling pass first (starting on a cache
/// line when large, [`Storage::build`]).
pub(crate) fn gemm_new<F: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
) -> Storage<F> {
    // SAFETY: `gemm_uninit` writes every element of its output.
    unsafe { Storage::build(m * n, |c| gemm_uninit(m, k, n, a, b, c)) }
}

/// Appends `a b` (`a: m x k`, `b: k x n`, row-major `m x n`) to `c`; the
/// GEMM writes the new elements without a zero-filling pass first.
pub(crate) fn gemm_append<F: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    c: &mut Vec<F>,
) {
    let start = c.len();
    c.reserve(m * n);
    gemm_uninit(m, k, n, a, b, &mut c.spare_capacity_mut()[..m * n]);
    // SAFETY: `gemm_uninit` initialized all m * n elements after `start`.
    unsafe { c.set_len(start + m * n) };
}

/// The elements of a slice that has been written in full.
///
/// # Safety
/// Every element of `s` is initialized.
#[inline(always)]
pub(crate) unsafe fn assume_init<T>(s: &mut [std::mem::MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: MaybeUninit<T> has the layout of T, and the caller vouches that
    // every element holds a valid T.
    unsafe { &mut *(s as *mut [std::mem::MaybeUninit<T>] as *mut [T]) }
}

/// GEMMs with at most this many multiply-adds are computed by
/// [`small_gemm`]: matrixmultiply's packing costs about a microsecond per
/// call, more than such a product itself.
pub(crate) const SMALL_GEMM_MAX: usize = 1 << 12;

/// `c += a b` (`c` row-major with `n` columns; every path adds into it) by
/// plain loops, for products too small for packing to pay: columns of `a`
/// added up for a single output column when they are contiguous; rows of `b`
/// scaled and added into rows of `c` when `b`'s rows are contiguous and not
/// too short; else dot products (of contiguous vectors in four lanes where
/// possible).
#[inline(always)]
fn small_gemm<F: Element>(k: usize, n: usize, a: MatRef<'_, F>, b: MatRef<'_, F>, c: &mut [F]) {
    let (ar, ac) = (a.row_stride as usize, a.col_stride as usize);
    let (br, bc) = (b.row_stride as usize, b.col_stride as usize);
    if n == 1 && ar == 1 {
        // one output column, and `a`'s columns are contiguous: add them up
        let m = c.len();
        for p in 0..k {
            let x = b.data[p * br];
            for (y, &v) in c.iter_mut().zip(&a.data[p * ac..][..m]) {
                *y = *y + v * x;
            }
        }
        return;
    }
    for (i, row) in c.chunks_exact_mut(n).enumerate() {
        if bc == 1 && n >= 4 {
            for p in 0..k {
                let x = a.data[i * ar + p * ac];
                for (y, &w) in row.iter_mut().zip(&b.data[p * br..][..n]) {
                    *y = *y + x * w;
                }
            }
        } else if ac == 1 && br == 1 {
            let a_row = &a.data[i * ar..][..k];
            for (j, y) in row.iter_mut().enumerate() {
                *y = *y + dot4(a_row, &b.data[j * bc..][..k]);
            }
        } else {
            for (j, y) in row.iter_mut().enumerate() {
                *y = (0..k).fold(*y, |sum, p| {
                    sum + a.data[i * ar + p * ac] * b.data[p * br + j * bc]
                });
            }
        }
    }
}

/// `sum_i x_i y_i` accumulated in four lanes (so that it vectorizes).
#[inline(always)]
fn dot4<F: Element>(x: &[F], y: &[F]) -> F {
    let (xs, ys) = (x.chunks_exact(4), y.chunks_exact(4));
    let rest = (xs.remainder().iter())
        .zip(ys.remainder())
        .fold(F::zero(), |s, (&u, &v)| s + u * v);
    let mut acc = [F::zero(); 4];
    for (u, v) in xs.zip(ys) {
        for l in 0..4 {
            acc[l] = acc[l] + u[l] * v[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// GEMMs with at least this many multiply-adds are split over the threads.
pub(crate) const GEMM_PARALLEL_MIN: usize = 1 << 19;

/// A right operand of at most this many elements is read whole by every
/// part of a split product, which then splits the rows of `c`: each thread
/// writes one contiguous block of the output. Split by columns instead,
/// the threads write alternate pieces of every row, and the cores' cache
/// lines and prefetches cross between them; where the product is short
/// (`g W2ᵀ` of the `mlp` workload, 128 × 10 × 512) that made two threads
/// slower than one: 15.4 µs against 11.1, and 8.5 split by rows (Intel
/// Xeon, medians of 20 000 products).
pub(crate) const SMALL_RIGHT: usize = 1 << 15;

/// A pointer into the output of a GEMM that several threads write
/// disjoint parts of.
#[derive(Clone, Copy)]
struct OutPtr<F>(*mut F);
// SAFETY: only used by `gemm_uninit`, whose parts write disjoint elements
// of one buffer that outlives all of them (and never read it).
unsafe impl<F: Send> Send for OutPtr<F> {}
// SAFETY: as for Send: the parts share the pointer, not the elements.
unsafe impl<F: Send> Sync for OutPtr<F> {}

impl<F> OutPtr<F> {
    /// The pointer `count` elements on.
    ///
    /// # Safety
    /// The result must stay inside the output buffer.
    unsafe fn add(self, count: usize) -> Self {
        // SAFETY: the caller's contract.
        OutPtr(unsafe { self.0.add(count) })
    }
}

/// Whether [`gemm_gathered`] computes an `m x k x n` product of `F` here:
/// `f32` on AVX-512 CPUs, and a product larger than those [`gemm_uninit`]
/// sums in its small kernel (whose order of summation differs).
pub(crate) fn gathers<F: Element>(m: usize, k: usize, n: usize) -> bool {
    let large = m
        .checked_mul(k)
        .and_then(|mk| mk.checked_mul(n))
        .is_some_and(|w| w > SMALL_GEMM_MAX);
    large && F::can_gather()
}

/// `c = a b` with the left operand's element `(i, p)` at
/// `a[rows[i] + cols[p]]` (`m = rows.len()`, `k = cols.len()`): a
/// convolution's patch matrix read from its padded image, without building
/// it. `b: k x n` and `c: m x n` are row-major; every element of `c` is
/// written, with the bits [`gemm_uninit`] gives for the matrix the offsets
/// describe. Only where [`gathers`] says so; panics otherwise, or if an
/// offset reaches outside `a`.
pub(crate) fn gemm_gathered<F: Element>(
    a: &[F],
    (rows, cols): (&[isize], &[isize]),
    b: &[F],
    n: usize,
    c: &mut [std::mem::MaybeUninit<F>],
) {
    let (m, k) = (rows.len(), cols.len());
    assert!(
        gathers::<F>(m, k, n),
        "gemm_gathered: no kernel for this product"
    );
    assert_eq!(c.len(), m * n, "gemm_gathered: output of the wrong size");
    assert!(b.len() >= k * n, "gemm_gathered: right operand too small");
    let span = |t: &[isize]| {
        t.iter().fold((isize::MAX, isize::MIN), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
    };
    let ((r0, r1), (c0, c1)) = (span(rows), span(cols));
    assert!(
        r0.checked_add(c0).is_some_and(|lo| lo >= 0)
            && r1.checked_add(c1).is_some_and(|hi| (hi as usize) < a.len()),
        "gemm_gathered: an offset outside the left operand"
    );
    // SAFETY: every offset rows[i] + cols[p] lies in 0..a.len() (checked
    // above), `b` holds k x n elements and `c` m x n, `c` is a unique
    // borrow, m, k, n >= 1 (the product is larger than the small ones),
    // and `can_gather` holds (`gathers`, asserted above).
    unsafe {
        F::gemm_gathered(
            a.as_ptr(),
            (rows, cols),
            b.as_ptr(),
            n,
            c.as_mut_ptr().cast(),
        )
    };
}

/// [`gemm_gathered`] into a new `m x n` vector, the rows of `c` split
/// over two threads when the product is large (each row's sums are the
/// same either way; starting on a cache line when large).
pub(crate) fn gemm_gathered_new<F: Element>(
    a: &[F],
    (rows, cols): (&[isize], &[isize]),
    b: &[F],
    n: usize,
) -> Storage<F> {
    let m = rows.len();
    // SAFETY: the two parts cover all rows (one may be empty), and
    // `gemm_gathered` writes every element of each.
    unsafe {
        Storage::build(m * n, |c| {
            super::parallel::par_blocks(c, m, m * cols.len() * n, |part, c| {
                if !part.is_empty() {
                    gemm_gathered(a, (&rows[part], cols), b, n, c);
                }
            });
        })
    }
}

/// `c = a b` (`a: m x k`, `b: k x n`, `c` row-major `m x n`), writing every
/// element of `c` without reading it. Large products are split over the
/// threads: along the rows of `c` when it is taller than wide or `b` is
/// small ([`SMALL_RIGHT`]), else along its columns, so each part packs only
/// its share of the larger operand.
/// (matrixmultiply's own threading busy-waits between calls, which cost
/// more than it gained on the many mid-sized GEMMs of a training step.)
pub(crate) fn gemm_uninit<F: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    c: &mut [std::mem::MaybeUninit<F>],
) {
    assert_eq!(c.len(), m * n, "gemm_uninit: output of the wrong size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(std::mem::MaybeUninit::new(F::zero()));
        return;
    }
    let in_bounds = |x: MatRef<'_, F>, rows: usize, cols: usize| {
        (rows - 1) * x.row_stride as usize + (cols - 1) * (x.col_stride as usize) < x.data.len()
    };
    assert!(
        in_bounds(a, m, k) && in_bounds(b, k, n),
        "gemm_uninit: operand too small"
    );
    if m * k * n <= SMALL_GEMM_MAX {
        c.fill(std::mem::MaybeUninit::new(F::zero()));
        // SAFETY: every element was just initialized.
        let c = unsafe { assume_init(c) };
        super::parallel::vectorized(
            #[inline(always)]
            || small_gemm(k, n, a, b, c),
        );
        return;
    }
    let out = OutPtr(c.as_mut_ptr().cast::<F>());
    let row_stride = n as isize;
    // SAFETY: (both calls) `a` and `b` hold every element their strides
    // reach (checked above; strides are positive, see `MatRef::new`), and
    // `out` points at m x n elements with row stride n. The two halves
    // write disjoint rows or columns of it; with beta = 0 matrixmultiply
    // writes every element of its part without reading it ("if beta is
    // zero, C does not need to be initialized").
    let run = |m: usize, n: usize, a: MatRef<'_, F>, b: MatRef<'_, F>, out: OutPtr<F>| unsafe {
        F::gemm(
            m,
            k,
            n,
            F::one(),
            a.data.as_ptr(),
            a.row_stride,
            a.col_stride,
            b.data.as_ptr(),
            b.row_stride,
            b.col_stride,
            F::zero(),
            out.0,
            row_stride,
            1,
        )
    };
    if m * k * n < GEMM_PARALLEL_MIN || (m < 16 && n < 16) {
        run(m, n, a, b, out);
        return;
    }
    // one part per thread, each of at least half the parallel threshold,
    // split at multiples of 8 along the rows of c when it is taller than
    // wide or `b` is small, else along its columns (the parts' elements are
    // computed exactly as in one product)
    let parts = super::parallel::threads()
        .min(m * k * n / (GEMM_PARALLEL_MIN / 2))
        .clamp(1, m.max(n).div_ceil(8));
    let rows = m >= n || (k * n <= SMALL_RIGHT && m >= 64);
    let long = if rows { m } else { n };
    let step = long.div_ceil(parts).next_multiple_of(8);
    super::parallel::par_for(long.div_ceil(step), |p| {
        let (lo, hi) = (p * step, ((p + 1) * step).min(long));
        if rows {
            // SAFETY: row lo < m of an m x n row-major buffer.
            let out = unsafe { out.add(lo * n) };
            run(hi - lo, n, a.skip_rows(lo), b, out);
        } else {
            // SAFETY: column lo < n of the first row.
            let out = unsafe { out.add(lo) };
            run(m, hi - lo, a, b.skip_cols(lo), out);
        }
    });
}
