//! Matrix products: the strided GEMM behind `matmul` and the convolutions,
//! with a small-matrix path, large products split over the threads, and
//! several products side by side.

use super::element::Element;
use crate::tensor::{Storage, Uninit};

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
/// `f32` on CPUs with AVX-512, or AVX2 and FMA, and a product larger than those [`gemm_uninit`]
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

/// One product `a b` (`a: m x k`, `b: k x n`) of [`gemm_new_many`].
#[derive(Clone, Copy)]
pub(crate) struct Product<'a, F> {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) a: MatRef<'a, F>,
    pub(crate) b: MatRef<'a, F>,
}

impl<F: Element> Product<'_, F> {
    /// Its multiply-adds.
    fn work(&self) -> usize {
        self.m * self.k * self.n
    }

    /// Whether it is large enough to split over threads.
    fn large(&self) -> bool {
        self.work() >= GEMM_PARALLEL_MIN && (self.m >= 16 || self.n >= 16)
    }

    /// Panics unless `a` and `b` hold every element their strides reach.
    fn check_bounds(&self) {
        let in_bounds = |x: MatRef<'_, F>, rows: usize, cols: usize| {
            rows == 0
                || cols == 0
                || (rows - 1) * x.row_stride as usize + (cols - 1) * (x.col_stride as usize)
                    < x.data.len()
        };
        assert!(
            in_bounds(self.a, self.m, self.k) && in_bounds(self.b, self.k, self.n),
            "gemm_uninit: operand too small"
        );
    }

    /// How the product splits into `parts` parts (at least one, each of
    /// at least half the parallel threshold): along the rows of `c` when it
    /// is taller than wide or `b` is small ([`SMALL_RIGHT`]), else along its
    /// columns, so each part packs only its share of the larger operand; at
    /// multiples of 8. The parts' elements are computed exactly as in one
    /// product.
    fn split(&self, parts: usize) -> Split {
        let (m, k, n) = (self.m, self.k, self.n);
        let parts = parts
            .min(m * k * n / (GEMM_PARALLEL_MIN / 2))
            .clamp(1, m.max(n).div_ceil(8));
        let rows = m >= n || (k * n <= SMALL_RIGHT && m >= 64);
        let long = if rows { m } else { n };
        let step = long.div_ceil(parts).next_multiple_of(8);
        Split {
            rows,
            long,
            step,
            parts: long.div_ceil(step),
        }
    }

    /// Computes rows (or columns, as `split` says) `part · step ..` of
    /// `c`, which `out` points at (row-major, `n` columns).
    ///
    /// # Safety
    /// `check_bounds` holds, `out` points at `m x n` writable elements, no
    /// other thread writes the same part, and `k >= 1`.
    unsafe fn run_part(&self, split: Split, part: usize, out: OutPtr<F>) {
        let (lo, hi) = (part * split.step, ((part + 1) * split.step).min(split.long));
        let (mut a, mut b, mut m, mut n, mut out) = (self.a, self.b, self.m, self.n, out);
        if split.rows {
            a = a.skip_rows(lo);
            m = hi - lo;
            // SAFETY: row lo < m of an m x n row-major buffer.
            out = unsafe { out.add(lo * self.n) };
        } else {
            b = b.skip_cols(lo);
            n = hi - lo;
            // SAFETY: column lo < n of the first row.
            out = unsafe { out.add(lo) };
        }
        // SAFETY: `a` and `b` hold every element their strides reach
        // (the caller's `check_bounds`; strides are positive, see
        // `MatRef::new`), and `out` points at the part's m x n elements with
        // row stride `self.n`, which no other thread writes. With beta = 0
        // matrixmultiply writes every element of its part without reading it
        // ("if beta is zero, C does not need to be initialized").
        unsafe {
            F::gemm(
                m,
                self.k,
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
                self.n as isize,
                1,
            )
        };
    }
}

/// How a product is split over threads (see [`Product::split`]).
#[derive(Clone, Copy)]
struct Split {
    rows: bool,
    /// The rows (or columns) of `c`.
    long: usize,
    /// The rows (or columns) of a part.
    step: usize,
    parts: usize,
}

/// Whether a product runs as one plain GEMM on this thread: one without
/// rows or columns, `k = 0`, or a small product (written here, zeros for
/// `k = 0` and [`small_gemm`] at most [`SMALL_GEMM_MAX`]). Otherwise
/// returns `false` and writes nothing.
fn small_product<F: Element>(p: &Product<'_, F>, c: &mut [std::mem::MaybeUninit<F>]) -> bool {
    if p.m == 0 || p.n == 0 {
        return true;
    }
    if p.k == 0 {
        c.fill(std::mem::MaybeUninit::new(F::zero()));
        return true;
    }
    if p.work() <= SMALL_GEMM_MAX {
        c.fill(std::mem::MaybeUninit::new(F::zero()));
        // SAFETY: every element was just initialized.
        let c = unsafe { assume_init(c) };
        super::parallel::vectorized(
            #[inline(always)]
            || small_gemm(p.k, p.n, p.a, p.b, c),
        );
        return true;
    }
    false
}

/// `c = a b` (`a: m x k`, `b: k x n`, `c` row-major `m x n`), writing every
/// element of `c` without reading it. Large products are split over the
/// threads ([`Product::split`]).
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
    let p = Product { m, k, n, a, b };
    p.check_bounds();
    if small_product(&p, c) {
        return;
    }
    let out = OutPtr(c.as_mut_ptr().cast::<F>());
    let split = p.split(if p.large() {
        super::parallel::threads()
    } else {
        1
    });
    if split.parts == 1 {
        // SAFETY: bounds checked above, `out` is `c`, `k >= 1` (not small).
        unsafe { p.run_part(split, 0, out) };
        return;
    }
    super::parallel::par_for(split.parts, |part| {
        // SAFETY: as above; each part is run once, on one thread.
        unsafe { p.run_part(split, part, out) }
    });
}

/// Several products into new row-major buffers (starting on a cache line
/// when large), each element computed as [`gemm_new`] computes it. The
/// large products run side by side, each on its share of the threads
/// (one each, on two), rather than one after another over all of them:
/// a product on one thread packs and reads its operands alone, and the
/// threads meet once instead of once per product. Two `128 x 784 x 512`
/// products and their weight gradients took 1.37–1.42 ms side by side
/// against 1.44–1.52 one after the other on two threads (`bench -- gemm`,
/// Intel Xeon, AVX-512; docs/benchmarks.md).
pub(crate) fn gemm_new_many<F: Element>(products: &[Product<'_, F>]) -> Vec<Storage<F>> {
    let mut outs: Vec<Uninit<F>> = products.iter().map(|p| Uninit::new(p.m * p.n)).collect();
    gemm_many_uninit(products, outs.iter_mut().map(Uninit::slots).collect());
    outs.into_iter()
        // SAFETY: `gemm_many_uninit` wrote every element of every output.
        .map(|out| unsafe { out.assume_init() })
        .collect()
}

/// [`gemm_new_many`] into `outs` (product `i`'s `m x n` row-major output
/// in `outs[i]`), writing every element without reading it.
pub(crate) fn gemm_many_uninit<F: Element>(
    products: &[Product<'_, F>],
    mut outs: Vec<&mut [std::mem::MaybeUninit<F>]>,
) {
    assert_eq!(
        outs.len(),
        products.len(),
        "gemm_many_uninit: one output a product"
    );
    for (p, c) in products.iter().zip(&outs) {
        assert_eq!(
            c.len(),
            p.m * p.n,
            "gemm_many_uninit: output of the wrong size"
        );
    }
    let threads = super::parallel::threads();
    let total: usize = products
        .iter()
        .filter(|p| p.large())
        .map(Product::work)
        .sum();
    if threads < 2 || products.iter().filter(|p| p.large()).count() < 2 {
        for (p, c) in products.iter().zip(outs) {
            gemm_uninit(p.m, p.k, p.n, p.a, p.b, c);
        }
        return;
    }
    let mut ptrs = Vec::with_capacity(products.len());
    let mut rest = Vec::with_capacity(products.len());
    for (i, (p, c)) in products.iter().zip(&mut outs).enumerate() {
        p.check_bounds();
        ptrs.push(OutPtr(c.as_mut_ptr().cast::<F>()));
        if !small_product(p, c) {
            rest.push(i);
        }
    }
    // Each large product in parts by its share of the work (one part for
    // half of it on two threads), the parts dealt to the threads largest
    // first; if that leaves a thread more than a tenth above an even share
    // (three equal products on two threads), every large product is split
    // over all the threads instead.
    let mut plan = deal(products, &rest, threads, |p| {
        (threads * p.work()).div_ceil(total)
    });
    if plan.uneven {
        plan = deal(products, &rest, threads, |_| threads);
    }
    let Plan { parts, bins, .. } = plan;
    super::parallel::par_for(bins.len(), |b| {
        for &j in &bins[b] {
            let (i, split, part) = parts[j];
            // SAFETY: bounds checked above, `ptrs[i]` is product i's output
            // buffer of m x n elements, each part is in one bin and each bin
            // runs once, on one thread, and `k >= 1` (small products were
            // written above).
            unsafe { products[i].run_part(split, part, ptrs[i]) }
        }
    });
}

/// The parts of a set of products and how they are dealt to the threads.
struct Plan {
    /// (product, its split, part)
    parts: Vec<(usize, Split, usize)>,
    /// The parts each thread runs.
    bins: Vec<Vec<usize>>,
    /// Whether a thread has more than a tenth above an even share of the work.
    uneven: bool,
}

/// Splits products `rest` of `products` (a large one into `share(p)` parts,
/// another into one) and deals the parts to `threads` bins, largest first,
/// each to the bin with the least work so far.
fn deal<F: Element>(
    products: &[Product<'_, F>],
    rest: &[usize],
    threads: usize,
    share: impl Fn(&Product<'_, F>) -> usize,
) -> Plan {
    let mut parts = Vec::new();
    let mut work = Vec::new();
    for &i in rest {
        let p = &products[i];
        let split = p.split(if p.large() { share(p).max(1) } else { 1 });
        for part in 0..split.parts {
            let lines = ((part + 1) * split.step).min(split.long) - part * split.step;
            parts.push((i, split, part));
            work.push(p.work() / split.long * lines);
        }
    }
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(work[j]));
    let mut bins = vec![Vec::new(); threads.min(parts.len()).max(1)];
    let mut load = vec![0usize; bins.len()];
    for j in order {
        let b = (0..bins.len()).min_by_key(|&b| load[b]).unwrap_or(0);
        bins[b].push(j);
        load[b] += work[j];
    }
    let even = work.iter().sum::<usize>() as f64 / threads as f64;
    let uneven = load.iter().any(|&l| l as f64 > 1.1 * even);
    Plan {
        parts,
        bins,
        uneven,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::parallel::{set_threads, thread_count_held, threads};

    /// A deterministic pseudo-random matrix of `len` elements: values with
    /// many significant bits, so that any change in the order of a sum
    /// shows in its bits.
    fn matrix(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Products side by side give each product's bits as it computes alone
    /// on one thread: pairs of equal and unequal size, with transposed
    /// operands, with a small product, one without rows and one with
    /// `k = 0` among them, and three at once, on pools of 1 to 5 threads.
    #[test]
    fn products_side_by_side_are_each_product_alone() {
        // (m, k, n, a transposed, b transposed)
        type Shape = (usize, usize, usize, bool, bool);
        let sets: [&[Shape]; 7] = [
            &[(128, 96, 80, false, false), (128, 96, 80, false, false)],
            &[(96, 128, 80, true, false), (80, 64, 200, false, true)],
            &[
                (200, 72, 40, false, false),
                (8, 8, 8, false, false),
                (130, 70, 90, false, true),
            ],
            &[
                (0, 64, 64, false, false),
                (130, 70, 90, false, false),
                (64, 0, 100, false, false),
                (100, 80, 70, true, false),
            ],
            &[
                (72, 100, 96, false, true),
                (70, 110, 99, true, true),
                (120, 90, 88, false, false),
            ],
            &[(1, 700, 1000, false, false), (1000, 700, 1, false, false)],
            // tall and wide with `a` by rows (on AVX-512 the blocked order
            // whole and in large parts, the unpacked kernel in small ones)
            &[(260, 300, 150, false, false), (150, 40, 400, false, false)],
        ];
        let _held = thread_count_held();
        let original = threads();
        for (s, set) in sets.iter().enumerate() {
            let data: Vec<(Vec<f32>, Vec<f32>)> = (set.iter().enumerate())
                .map(|(i, &(m, k, n, ..))| {
                    (
                        matrix(m * k, 2 * i as u64 + 1),
                        matrix(k * n, 2 * i as u64 + 2),
                    )
                })
                .collect();
            let products: Vec<Product<'_, f32>> = (set.iter().zip(&data))
                .map(|(&(m, k, n, ta, tb), (a, b))| Product {
                    m,
                    k,
                    n,
                    a: MatRef::new(a, if ta { m } else { k }, ta),
                    b: MatRef::new(b, if tb { k } else { n }, tb),
                })
                .collect();
            set_threads(1).unwrap();
            let alone: Vec<Storage<f32>> = (products.iter())
                .map(|p| gemm_new(p.m, p.k, p.n, p.a, p.b))
                .collect();
            for t in [1, 2, 3, 5] {
                set_threads(t).unwrap();
                let together = gemm_new_many(&products);
                assert_eq!(together.len(), alone.len());
                for (i, (x, y)) in together.iter().zip(&alone).enumerate() {
                    let bits = |s: &Storage<f32>| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert!(bits(x) == bits(y), "set {s}, product {i}, {t} threads");
                }
            }
        }
        set_threads(original).unwrap();
    }
}
