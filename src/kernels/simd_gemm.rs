//! `f32` products on the CPU's vector unit, for the common case in which the
//! right operand's rows are contiguous: AVX-512 (16 lanes) and AVX2 with FMA
//! (8 lanes), from one generic body per kernel ([`Isa`]).
//!
//! matrixmultiply packs every operand before its kernel runs. For the tall
//! products of a convolution (`32768 x 75` im2col rows times a `75 x 64`
//! kernel) packing the left operand costs about as much memory traffic as
//! the product itself, and the whole product is one pass over that operand.
//! Here a tile of [`MR`] rows and up to [`Isa::NR`] columns keeps its sums
//! in registers, broadcasts the left operand's elements from wherever its
//! strides put them, and loads the right operand's row segments directly.
//! The left operand may also be laid out by tables of row and column
//! offsets ([`sgemm_at`]): a convolution reads its patch matrix from the
//! padded image that way, without building it.
//!
//! Products both tall and wide whose operands have contiguous rows (a
//! layer's forward product at a batch above 128) take [`sgemm_blocked`]:
//! the same tiles in another order, with the right operand copied a block
//! of columns at a time into contiguous strips, so that each tile of the
//! result is written once.
//!
//! Products both tall and wide whose left operand is transposed (the weight
//! gradient `xᵀ g`) take [`sgemm_packed`]: both operands copied into
//! contiguous panels, the right one in strips narrow enough for a block of
//! it to stay in the L1 cache.
//!
//! Every element of the result is computed exactly as matrixmultiply's
//! kernels compute it on a CPU with FMA: a fused multiply-add chain over `k`
//! in order, restarted every [`KC`] steps, each block's sum added to the
//! element once. So these paths and matrixmultiply's give the same bits
//! (`gives_matrixmultiplys_bits`, on each instruction set the CPU has), and
//! a result does not depend on which of them ran, on the tile an element
//! falls in, on the vector width, or on how the product was split over
//! threads.
//!
//! The kernels are `#[inline(always)]` and generic over the instruction
//! set: they run inside [`Isa::enter`], into which they are inlined and
//! compiled with its features (by an `#[inline(always)]` closure: a plain
//! one of this size is compiled on its own, without them, and calls each
//! intrinsic as a function, 50–70 times slower). The entry point for a
//! whole product is [`product`].

use std::arch::x86_64::*;

use super::parallel::{Tier, tier, with_avx2_fma, with_avx512};

/// matrixmultiply's `f32` k block (`S_KC`): its kernels restart their sums
/// every this many steps of `k` and add each block's sum to `c`.
const KC: usize = 256;
/// Rows of a tile.
const MR: usize = 6;
/// How many rows of the right operand ahead a tile asks the cache for: a
/// block of [`KC`] rows of a 64-column strip (64 KiB) does not fit the L1
/// cache, so every tile streams it from L2 (or, the first time, from L3 or
/// the other core), and the hardware's own prefetcher, which stops at the
/// 2 KiB jumps between the strip's rows, leaves the loads waiting. Four rows
/// ahead: `bench -- gemm` on Intel Xeon (two threads, four alternations)
/// gave 281–290 GFLOP/s on `mlp x W1` (128 × 784 × 512) against 249–270
/// without, and 217–232 on the `conv` kernel gradient against 206–207;
/// eight rows did as well, sixteen and thirty-two less.
const PREFETCH_ROWS: isize = 4;
/// Blocks of at most this many steps (a strip's block of at most 32 KiB,
/// which the L1 cache holds) run without the prefetches: the `conv`
/// product (`k` = 75) ran 1–4% slower with them in three of four
/// alternations.
const PREFETCH_MIN_STEPS: usize = 128;

/// An instruction set the kernels are compiled for: its vector of `f32`
/// lanes, the operations the kernels use on it, and the shapes of its
/// tiles, which fill its registers with sums (24 of AVX-512's 32, 12 of
/// AVX2's 16) and leave room for the right operand's vectors and the
/// broadcast element.
///
/// # Safety
/// Every method but [`Isa::enter`] may only run inside [`Isa::enter`] (they
/// are `#[inline(always)]`, and compiled with the features of the function
/// they are inlined into).
pub(crate) trait Isa: Copy {
    /// A vector of [`Isa::LANES`] `f32`.
    type V: Copy;
    /// Which lanes of a vector a masked load or store touches.
    type Mask: Copy;
    /// `f32` lanes in a vector.
    const LANES: usize;
    /// Vectors of columns in a tile of [`MR`] rows.
    const VECTORS: usize;
    /// Columns of a tile of [`MR`] rows.
    const NR: usize = Self::LANES * Self::VECTORS;
    /// Rows of a tile of [`sgemm_packed`], by two vectors of columns.
    const PACKED_MR: usize;
    /// Columns of a tile of [`sgemm_packed`]: two vectors.
    const PACKED_NR: usize = 2 * Self::LANES;
    /// The widest result [`sgemm_narrow`] computes: one accumulator per
    /// column, beside the left operand's vector and the broadcast element.
    const NARROW_MAX: usize;
    /// Whether these kernels take every product [`route`] has a path for,
    /// or only the narrow ones (at most 128 columns) whose operands have
    /// contiguous rows, and the narrow kernel's: see [`Avx2`].
    const WIDE: bool;

    /// Runs `f` compiled with this instruction set's features.
    ///
    /// # Safety
    /// The CPU has them.
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R;
    /// The first `lanes` lanes (1 to [`Isa::LANES`]).
    unsafe fn mask(lanes: usize) -> Self::Mask;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// Every lane `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// The vector at `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// The lanes in `mask` from `p` (the others zero and not read).
    unsafe fn load_masked(mask: Self::Mask, p: *const f32) -> Self::V;
    /// Writes `v` at `p`.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Writes the lanes of `v` in `mask` at `p` (the others not written).
    unsafe fn store_masked(p: *mut f32, mask: Self::Mask, v: Self::V);
    /// `a b + c`, rounded once.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Runs a tile of `rows` (1 to [`MR`]) rows and `vectors` (1 to
    /// [`Isa::VECTORS`]) vectors: one instance of [`Tile::run`] per shape.
    ///
    /// # Safety
    /// As for [`Tile::run`].
    unsafe fn tile<R: Axis, C: Axis>(t: &Tile<Self, R, C>, rows: usize, vectors: usize);
    /// Runs a tile of [`sgemm_packed`] of `vectors` (1 or 2) vectors.
    ///
    /// # Safety
    /// As for [`PackedTile::run`].
    unsafe fn packed_tile(t: &PackedTile<Self>, vectors: usize);
}

/// The methods of [`Isa`] that are one intrinsic each with the same
/// arguments, for vector type `$v`.
macro_rules! vector_ops {
    ($v:ty, $zero:ident, $splat:ident, $load:ident, $store:ident, $fmadd:ident, $add:ident) => {
        #[inline(always)]
        unsafe fn zero() -> $v {
            // SAFETY: inside `enter` (the trait's contract).
            unsafe { $zero() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> $v {
            // SAFETY: as for `zero`.
            unsafe { $splat(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> $v {
            // SAFETY: as for `zero`, and the caller's contract for `p`.
            unsafe { $load(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: $v) {
            // SAFETY: as for `load`.
            unsafe { $store(p, v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: $v, b: $v, c: $v) -> $v {
            // SAFETY: as for `zero`.
            unsafe { $fmadd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: $v, b: $v) -> $v {
            // SAFETY: as for `zero`.
            unsafe { $add(a, b) }
        }
    };
}

/// AVX-512F: 16 lanes, tiles of 6 × 64 and (packed) 12 × 32.
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

impl Isa for Avx512 {
    type V = __m512;
    type Mask = __mmask16;
    const LANES: usize = 16;
    const VECTORS: usize = 4;
    const PACKED_MR: usize = 12;
    const NARROW_MAX: usize = 16;
    const WIDE: bool = true;

    #[inline(always)]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        // SAFETY: the caller's contract.
        unsafe { with_avx512(f) }
    }
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> __mmask16 {
        (u32::MAX >> (32 - lanes)) as __mmask16
    }
    vector_ops!(
        __m512,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps
    );
    #[inline(always)]
    unsafe fn load_masked(mask: __mmask16, p: *const f32) -> __m512 {
        // SAFETY: inside `enter` (the trait's contract), and the caller's
        // contract for the lanes of `p` in `mask`.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: __mmask16, v: __m512) {
        // SAFETY: inside `enter` (the trait's contract), and the caller's
        // contract for the lanes of `p` in `mask`.
        unsafe { _mm512_mask_storeu_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn tile<R: Axis, C: Axis>(t: &Tile<Self, R, C>, rows: usize, vectors: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match (rows, vectors) {
                (6, 4) => t.run::<6, 4>(),
                (6, 3) => t.run::<6, 3>(),
                (6, 2) => t.run::<6, 2>(),
                (6, 1) => t.run::<6, 1>(),
                (r, 4) => t.run_rows::<4>(r),
                (r, 3) => t.run_rows::<3>(r),
                (r, 2) => t.run_rows::<2>(r),
                (r, _) => t.run_rows::<1>(r),
            }
        }
    }
    #[inline(always)]
    unsafe fn packed_tile(t: &PackedTile<Self>, vectors: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match vectors {
                2 => t.run::<12, 2>(),
                _ => t.run::<12, 1>(),
            }
        }
    }
}

/// AVX2 with FMA: 8 lanes, tiles of 6 × 16 and (packed) 6 × 16.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

impl Isa for Avx2 {
    type V = __m256;
    type Mask = __m256i;
    const LANES: usize = 8;
    const VECTORS: usize = 2;
    const PACKED_MR: usize = 6;
    const NARROW_MAX: usize = 12;
    /// On AMD EPYC (AVX2 + FMA), matrixmultiply's packed 8 × 8 kernel
    /// runs the wide products as fast as these tiles do alone (`bench --
    /// gemm --threads 1`: `mlp x W1` and `xᵀ g` at 77–87 GFLOP/s on either),
    /// and faster in a step (`bench -- mlp`: the build routing them here
    /// was 6–27% slower in five pairs of six), and the products with a
    /// transposed operand no slower (the `conv` kernel's gradient at 58
    /// GFLOP/s against the tiles' 49–53). The narrow products run about
    /// twice as fast here (`h W2`, `128 x 512 x 10`: 58 against 26–32;
    /// `hᵀ g`: 68 against 30–33; the `conv` layer's dense product 54
    /// against 30), and the convolution's patch product 1.4 times (82
    /// against 58–60).
    const WIDE: bool = false;

    #[inline(always)]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        // SAFETY: the caller's contract.
        unsafe { with_avx2_fma(f) }
    }
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> __m256i {
        // SAFETY: inside `enter` (the trait's contract).
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(lanes as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }
    vector_ops!(
        __m256,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps
    );
    #[inline(always)]
    unsafe fn load_masked(mask: __m256i, p: *const f32) -> __m256 {
        // SAFETY: inside `enter` (the trait's contract), and the caller's
        // contract for the lanes of `p` in `mask`.
        unsafe { _mm256_maskload_ps(p, mask) }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, mask: __m256i, v: __m256) {
        // SAFETY: inside `enter` (the trait's contract), and the caller's
        // contract for the lanes of `p` in `mask`.
        unsafe { _mm256_maskstore_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn tile<R: Axis, C: Axis>(t: &Tile<Self, R, C>, rows: usize, vectors: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match (rows, vectors) {
                (6, 2) => t.run::<6, 2>(),
                (6, 1) => t.run::<6, 1>(),
                (r, 2) => t.run_rows::<2>(r),
                (r, _) => t.run_rows::<1>(r),
            }
        }
    }
    #[inline(always)]
    unsafe fn packed_tile(t: &PackedTile<Self>, vectors: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match vectors {
                2 => t.run::<6, 2>(),
                _ => t.run::<6, 1>(),
            }
        }
    }
}

/// The instruction set the kernels run on: the widest of [`Avx512`] and
/// [`Avx2`] the CPU has and `BAYESGRAD_SIMD` allows, or none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kernels {
    Avx512,
    Avx2,
}

/// The kernels for this CPU, if it has AVX2 and FMA.
#[inline]
pub(crate) fn available() -> Option<Kernels> {
    match tier() {
        Tier::Avx512 => Some(Kernels::Avx512),
        Tier::Avx2Fma => Some(Kernels::Avx2),
        Tier::Portable => None,
    }
}

/// Where the rows or the columns of the left operand start, in elements
/// from its first: a stride, or a table of offsets.
pub(crate) trait Axis: Copy {
    /// The offset of row (or column) `i`.
    fn at(self, i: usize) -> isize;
}

/// Rows (or columns) a fixed number of elements apart.
#[derive(Clone, Copy)]
pub(crate) struct Stride(pub(crate) isize);

impl Axis for Stride {
    #[inline(always)]
    fn at(self, i: usize) -> isize {
        i as isize * self.0
    }
}

/// Rows (or columns) at the offsets a table lists: a convolution's patch
/// matrix read from the (padded) image itself, each element of the patch
/// of output pixel `i` at tap `p` being `pixel[i] + tap[p]`.
#[derive(Clone, Copy)]
pub(crate) struct Offsets<'a>(pub(crate) &'a [isize]);

impl Axis for Offsets<'_> {
    #[inline(always)]
    fn at(self, i: usize) -> isize {
        self.0[i]
    }
}

/// `c = a b` for `a: m x k` (element `(i, p)` at `a + i rsa + p csa`),
/// `b: k x n` with contiguous rows (element `(p, j)` at `b + p rsb + j`)
/// and `c: m x n` with contiguous rows (`(i, j)` at `c + i rsc + j`),
/// writing every element of `c` without reading it first.
///
/// # Safety
/// Inside [`Isa::enter`]; the pointers and strides describe valid matrices
/// of those shapes (`m`, `k`, `n` at least 1), and `c` does not overlap `a`
/// or `b`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn sgemm<S: Isa>(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    c: *mut f32,
    rsc: isize,
) {
    // SAFETY: the caller's contract
    unsafe { sgemm_at::<S, _, _>((m, k, n), (a, Stride(rsa), Stride(csa)), (b, rsb), (c, rsc)) }
}

/// The largest right operand (in elements) that [`sgemm_b_transposed`]
/// copies: `g W2^T` of the `mlp` workload (128 × 10 × 512, 5 120
/// elements, split over two threads by rows) ran at 136–165 GFLOP/s this
/// way against matrixmultiply's 76–112 (`bench -- gemm`, Intel Xeon, seven
/// alternations). Copying a larger operand costs about as much as a
/// product as short as these.
pub(crate) const TRANSPOSE_MAX: usize = 1 << 14;

/// [`sgemm`] for a right operand whose columns are contiguous (element
/// `(p, j)` at `b + p + j csb`): its `k x n` elements are copied into
/// contiguous rows first.
///
/// # Safety
/// As for [`sgemm`], with `b` describing a valid `k x n` matrix that way.
#[inline(always)]
pub(crate) unsafe fn sgemm_b_transposed<S: Isa>(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (*const f32, isize, isize),
    (b, csb): (*const f32, isize),
    (c, rsc): (*mut f32, isize),
) {
    let mut rows = Vec::with_capacity(k * n);
    let out = &mut rows.spare_capacity_mut()[..k * n];
    for j in 0..n {
        // SAFETY: column j < n of `b` holds k contiguous elements.
        let column = unsafe { std::slice::from_raw_parts(b.offset(j as isize * csb), k) };
        for (p, &v) in column.iter().enumerate() {
            out[p * n + j].write(v);
        }
    }
    // SAFETY: the loops wrote all k x n elements; then the caller's
    // contract, with `rows` a contiguous k x n matrix.
    unsafe {
        rows.set_len(k * n);
        sgemm::<S>(m, k, n, a, rsa, csa, rows.as_ptr(), n as isize, c, rsc)
    }
}

/// [`sgemm`] with the left operand's element `(i, p)` at
/// `a + rows.at(i) + cols.at(p)`: the same sums in the same order, so the
/// same bits as a product of the matrix those offsets describe.
///
/// # Safety
/// As for [`sgemm`]: every `a + rows.at(i) + cols.at(p)` for `i < m`,
/// `p < k` is a valid element.
#[inline(always)]
pub(crate) unsafe fn sgemm_at<S: Isa, R: Axis, C: Axis>(
    (m, k, n): (usize, usize, usize),
    (a, rows, cols): (*const f32, R, C),
    (b, rsb): (*const f32, isize),
    (c, rsc): (*mut f32, isize),
) {
    // k blocks outermost: a block of `b` (at most KC rows of one strip of
    // columns) serves every tile of rows before the next block is read
    let mut p0 = 0;
    while p0 < k {
        let kc = (k - p0).min(KC);
        let mut j = 0;
        while j < n {
            let cols_left = (n - j).min(S::NR);
            let vectors = cols_left.div_ceil(S::LANES);
            // the lanes of the last vector that hold columns of `c`
            // SAFETY: inside `S::enter` (the caller's contract).
            let last = unsafe { S::mask(cols_left - S::LANES * (vectors - 1)) };
            let mut i = 0;
            while i < m {
                let tile_rows = (m - i).min(MR);
                // SAFETY: row i < m, column j < n and step p0 < k are inside
                // the operands.
                let t = unsafe {
                    Tile {
                        k: kc,
                        a,
                        rows,
                        cols,
                        at: (i, p0),
                        b: b.offset(p0 as isize * rsb).add(j),
                        rsb,
                        c: c.offset(i as isize * rsc).add(j),
                        rsc,
                        last,
                        first: p0 == 0,
                        prefetch: kc > PREFETCH_MIN_STEPS,
                    }
                };
                // SAFETY: the tile's rows, columns and `kc` steps lie inside
                // the operands, inside `S::enter` (the caller's contract).
                unsafe { S::tile(&t, tile_rows, vectors) }
                i += MR;
            }
            j += S::NR;
        }
        p0 += kc;
    }
}

/// The size of the block of `b` that [`sgemm_blocked`] packs at a time:
/// `k` rows and as many strips of [`Isa::NR`] columns as fit in these bytes
/// (512 KiB, a quarter of the L2 cache of the Intel Xeon measured; 1 MiB
/// did as well, 1.5 MiB 5–27% less).
const BLOCK_BYTES: usize = 1 << 19;

/// The longest `k` [`sgemm_blocked`] takes: one strip of `k x 64` (the
/// widest [`Isa::NR`]) fills [`BLOCK_BYTES`], so a thread's packing buffer
/// is never larger.
pub(crate) const BLOCKED_MAX_K: usize = BLOCK_BYTES / (4 * <Avx512 as Isa>::NR);

/// [`sgemm`] for products both tall and wide (`a` with contiguous rows,
/// `b` with contiguous rows and `k` at most [`BLOCKED_MAX_K`]), where
/// [`sgemm_at`]'s order reads every `k` block of `a`'s rows once per strip
/// of `b` and so streams `a` from memory again and again. Here `b` is
/// taken a block of columns at a time ([`BLOCK_BYTES`]), copied into
/// contiguous strips of `k x NR` (rows of `b` 4 KiB apart would put each
/// step of a strip on a page of its own); each tile of [`MR`] rows
/// then runs down the block's strips, and each tile of `c` its `k` blocks
/// of [`KC`] steps innermost, so it is written once and its block sums are
/// added while it sits in the L1 cache. The chains and the order of their
/// sums are [`sgemm_at`]'s: the same bits.
///
/// In a step, where the operands come from memory, Intel Xeon (AVX-512,
/// two threads): the forward products of `DenseFlipout(784 → 1024)` at a
/// batch of 2048 took 26.1–26.5 ms a step against 32.7–32.9 with matrixmultiply
/// (`bench -- mlp --batch 2048 --width 1024 --ops`; docs/benchmarks.md,
/// "Products both tall and wide").
///
/// # Safety
/// As for [`sgemm`], with `k` at most [`BLOCKED_MAX_K`] (a longer `k`
/// gives the same result from a larger buffer).
#[inline(always)]
pub(crate) unsafe fn sgemm_blocked<S: Isa>(
    (m, k, n): (usize, usize, usize),
    (a, rsa): (*const f32, isize),
    (b, rsb): (*const f32, isize),
    (c, rsc): (*mut f32, isize),
) {
    let block_cols = (BLOCK_BYTES / (4 * k)).max(S::NR) / S::NR * S::NR;
    let block_len = block_cols.min(n).next_multiple_of(S::NR) * k;
    let mut packed = PACKED_STRIPS.take();
    if packed.len() < block_len {
        // (zeroed once, as it grows: a value left by an earlier product
        // is overwritten before it is read, or not read)
        packed.resize(block_len, 0.0);
    }
    let mut j0 = 0;
    while j0 < n {
        let j_end = (j0 + block_cols).min(n);
        // SAFETY: rows 0..k and columns j0..j_end <= n of `b`.
        unsafe { pack_strips((b, rsb), 0..k, (j0..j_end, S::NR), &mut packed[..block_len]) };
        let mut i = 0;
        while i < m {
            let tile_rows = (m - i).min(MR);
            let mut j = j0;
            while j < j_end {
                let cols_left = (j_end - j).min(S::NR);
                let vectors = cols_left.div_ceil(S::LANES);
                // SAFETY: inside `S::enter` (the caller's contract).
                let last = unsafe { S::mask(cols_left - S::LANES * (vectors - 1)) };
                let strip = &packed[(j - j0) * k..];
                let mut p0 = 0;
                while p0 < k {
                    let kc = (k - p0).min(KC);
                    let t = Tile::<S, _, _> {
                        k: kc,
                        a,
                        rows: Stride(rsa),
                        cols: Stride(1),
                        at: (i, p0),
                        b: strip[p0 * S::NR..].as_ptr(),
                        rsb: S::NR as isize,
                        // SAFETY: row i < m, column j < n of `c`.
                        c: unsafe { c.offset(i as isize * rsc).add(j) },
                        rsc,
                        last,
                        first: p0 == 0,
                        prefetch: false,
                    };
                    // SAFETY: the tile's rows of `a` (steps p0..p0 + kc),
                    // `kc` rows of its strip (the columns its vectors and
                    // mask cover, packed above) and its rows and columns of
                    // `c` are valid, inside `S::enter` (the caller's
                    // contract).
                    unsafe { S::tile(&t, tile_rows, vectors) }
                    p0 += kc;
                }
                j += S::NR;
            }
            i += MR;
        }
        j0 = j_end;
    }
    PACKED_STRIPS.set(packed);
}

/// Copies `rows` of `b` (element `(p, j)` at `b + p rsb + j`), columns
/// `cols`, into strips of `w` columns in `out`: strip `s` holds columns
/// `cols.start + s w ..` of each row, row `p` of it at `p w`; the columns
/// of the last strip past `cols.end` are zeros. Strips that `out` has no
/// room for are not written.
///
/// # Safety
/// Every element of those rows and columns of `b` is valid.
#[inline(always)]
unsafe fn pack_strips(
    (b, rsb): (*const f32, isize),
    rows: std::ops::Range<usize>,
    (cols, w): (std::ops::Range<usize>, usize),
    out: &mut [f32],
) {
    let strips = out.chunks_exact_mut(w * rows.len());
    for (j, strip) in cols.clone().step_by(w).zip(strips) {
        let width = (cols.end - j).min(w);
        for (p, row) in rows.clone().zip(strip.chunks_exact_mut(w)) {
            // SAFETY: row p and columns j..j + width of `b` (the caller's
            // contract).
            let from =
                unsafe { std::slice::from_raw_parts(b.offset(p as isize * rsb).add(j), width) };
            row[..width].copy_from_slice(from);
            row[width..].fill(0.0);
        }
    }
}

/// Rows of `a` that [`sgemm_packed`] packs at a time: 22 panels of 12
/// rows (AVX-512's [`Isa::PACKED_MR`]; 44 of AVX2's 6) over [`KC`] steps,
/// 264 KiB, which the L2 cache holds beside the block of `b`. A tile's
/// strip of `b` ([`Isa::PACKED_NR`] columns: two vectors) over a whole
/// block of steps (32 KiB under AVX-512) stays in the L1 cache while the
/// tiles of rows run down it.
const PACKED_MC: usize = 264;
/// Columns of `b` that [`sgemm_packed`] packs at a time: 16 strips of
/// AVX-512's 32 columns (32 of AVX2's 16) over [`KC`] steps, 512 KiB.
const PACKED_NC: usize = 512;
// (its strips share `sgemm_blocked`'s buffer, which is at most BLOCK_BYTES)
const _: () = assert!(PACKED_NC * KC * 4 <= BLOCK_BYTES);

/// `c = a b` with both operands copied into contiguous panels first: `a`
/// (any strides; the weight gradient `xᵀ g` has it transposed) in panels of
/// [`Isa::PACKED_MR`] rows by a block of [`KC`] steps, `b` (contiguous rows) in
/// strips of [`Isa::PACKED_NR`] columns by the same steps, zero-padded. For each
/// `k` block, each strip of `b` is read from the L1 cache by every panel
/// of a block of [`PACKED_MC`] rows, which the L2 cache holds. A tile's
/// sums are the same chains as [`sgemm_at`]'s (from zero over the block's
/// steps in order, the block's sum stored, or added to `c` after the first
/// block), so the bits are matrixmultiply's.
///
/// # Safety
/// As for [`sgemm`]: inside [`Isa::enter`]; `a` (element `(i, p)` at
/// `a + i rsa + p csa`), `b` (element `(p, j)` at `b + p rsb + j`) and `c`
/// (element `(i, j)` at `c + i rsc + j`) describe valid matrices of those
/// shapes (`m`, `k`, `n` at least 1), and `c` overlaps neither.
#[inline(always)]
pub(crate) unsafe fn sgemm_packed<S: Isa>(
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (*const f32, isize, isize),
    (b, rsb): (*const f32, isize),
    (c, rsc): (*mut f32, isize),
) {
    let nc_max = n.min(PACKED_NC).next_multiple_of(S::PACKED_NR);
    let mc_max = m.min(PACKED_MC).next_multiple_of(S::PACKED_MR);
    let (mut b_pack, mut a_pack) = (PACKED_STRIPS.take(), PACKED_PANELS.take());
    // (grown zeroed; a value left by an earlier product is overwritten
    // before it is read: the packing below writes the padding too)
    for (pack, len) in [(&mut b_pack, nc_max), (&mut a_pack, mc_max)] {
        if pack.len() < len * k.min(KC) {
            pack.resize(len * k.min(KC), 0.0);
        }
    }
    let mut j0 = 0;
    while j0 < n {
        let nc = (n - j0).min(PACKED_NC);
        let strips = nc.div_ceil(S::PACKED_NR);
        // the k blocks outside the blocks of rows: each block of `b` is
        // packed once
        let mut p0 = 0;
        while p0 < k {
            let kc = (k - p0).min(KC);
            let block = &mut b_pack[..strips * S::PACKED_NR * kc];
            let cols = (j0..j0 + nc, S::PACKED_NR);
            // SAFETY: rows p0..p0 + kc <= k and columns j0..j0 + nc <= n of `b`.
            unsafe { pack_strips((b, rsb), p0..p0 + kc, cols, block) };
            let mut i0 = 0;
            while i0 < m {
                let mc = (m - i0).min(PACKED_MC);
                let panels = mc.div_ceil(S::PACKED_MR);
                // panel q: kc steps of PACKED_MR rows, step p at p PACKED_MR
                for (q, panel) in a_pack[..panels * S::PACKED_MR * kc]
                    .chunks_exact_mut(S::PACKED_MR * kc)
                    .enumerate()
                {
                    let i = i0 + q * S::PACKED_MR;
                    let rows = (m - i).min(S::PACKED_MR);
                    for (p, step) in panel.chunks_exact_mut(S::PACKED_MR).enumerate() {
                        // SAFETY: row i < m, step p0 + p < k of `a`.
                        let start = unsafe { a.offset(i as isize * rsa + (p0 + p) as isize * csa) };
                        if rsa == 1 {
                            // (`xᵀ g`: the panel's rows of a step are contiguous)
                            // SAFETY: rows i..i + rows <= m of step p0 + p.
                            step[..rows].copy_from_slice(unsafe {
                                std::slice::from_raw_parts(start, rows)
                            });
                        } else {
                            for (r, x) in step[..rows].iter_mut().enumerate() {
                                // SAFETY: row i + r < m of step p0 + p.
                                *x = unsafe { *start.offset(r as isize * rsa) };
                            }
                        }
                        step[rows..].fill(0.0);
                    }
                }
                for s in 0..strips {
                    let j = j0 + s * S::PACKED_NR;
                    let cols = (j0 + nc - j).min(S::PACKED_NR);
                    let vectors = cols.div_ceil(S::LANES);
                    // SAFETY: inside `S::enter` (the caller's contract).
                    let last = unsafe { S::mask(cols - S::LANES * (vectors - 1)) };
                    let strip = b_pack[s * S::PACKED_NR * kc..].as_ptr();
                    for q in 0..panels {
                        let i = i0 + q * S::PACKED_MR;
                        let tile = PackedTile::<S> {
                            k: kc,
                            a: a_pack[q * S::PACKED_MR * kc..].as_ptr(),
                            b: strip,
                            // SAFETY: row i < m, column j < n of `c`.
                            c: unsafe { c.offset(i as isize * rsc).add(j) },
                            rsc,
                            rows: (m - i).min(S::PACKED_MR),
                            last,
                            first: p0 == 0,
                        };
                        // SAFETY: the panel and strip hold kc packed steps,
                        // the tile's rows and columns of `c` are valid,
                        // inside `S::enter` (the caller's contract).
                        unsafe { S::packed_tile(&tile, vectors) }
                    }
                }
                i0 += mc;
            }
            p0 += kc;
        }
        j0 += nc;
    }
    PACKED_STRIPS.set(b_pack);
    PACKED_PANELS.set(a_pack);
}

/// One block of at most [`KC`] steps of one tile of [`sgemm_packed`]:
/// a packed panel of `a`, a packed strip of `b`, and the tile's place in
/// `c`, of which it writes `rows` rows and the columns of its vectors (the
/// last masked by `last`).
pub(crate) struct PackedTile<S: Isa> {
    k: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: isize,
    rows: usize,
    last: S::Mask,
    first: bool,
}

impl<S: Isa> PackedTile<S> {
    /// A fused multiply-add chain per element from zero over the block's
    /// steps, stored if this is the first block, else added to `c`.
    ///
    /// # Safety
    /// Inside [`Isa::enter`], with `ROWS` [`Isa::PACKED_MR`]; `a` holds `k`
    /// steps of [`Isa::PACKED_MR`] values, `b` `k` rows of
    /// [`Isa::PACKED_NR`], and `c` the tile's rows and columns.
    #[inline(always)]
    unsafe fn run<const ROWS: usize, const V: usize>(&self) {
        // SAFETY: (the whole body) every address is inside the panels or
        // `c` by the caller's contract; masked-off lanes are not written.
        unsafe {
            let mut acc = [[S::zero(); V]; ROWS];
            let (mut a, mut b) = (self.a, self.b);
            for _ in 0..self.k {
                let bv: [S::V; V] = std::array::from_fn(|v| S::load(b.add(S::LANES * v)));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let av = S::splat(*a.add(r));
                    for (sum, &bv) in sums.iter_mut().zip(&bv) {
                        *sum = S::fmadd(av, bv, *sum);
                    }
                }
                a = a.add(ROWS);
                b = b.add(S::PACKED_NR);
            }
            write_sums::<S, ROWS, V>(&acc, self.rows, (self.c, self.rsc), (self.last, self.first));
        }
    }
}

thread_local! {
    /// The strips [`sgemm_blocked`] and [`sgemm_packed`] pack `b` into,
    /// kept by each thread between products (the pool's helpers persist),
    /// so that a product neither allocates nor zeroes them: at most
    /// [`BLOCK_BYTES`] (`sgemm_packed`'s [`PACKED_NC`] columns by [`KC`]
    /// steps are as many).
    static PACKED_STRIPS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// The panels [`sgemm_packed`] packs `a` into, kept as [`PACKED_STRIPS`]
    /// is: at most [`PACKED_MC`] rows by [`KC`] steps.
    static PACKED_PANELS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One block of at most [`KC`] steps of one tile of `c`: where its
/// operands start, which lanes of its last vector of columns it writes, and
/// whether it is the first block (which stores its sums; the others add
/// theirs to `c`).
pub(crate) struct Tile<S: Isa, R, C> {
    k: usize,
    /// The left operand, its rows and columns, and the tile's first row
    /// and step in them.
    a: *const f32,
    rows: R,
    cols: C,
    at: (usize, usize),
    b: *const f32,
    rsb: isize,
    c: *mut f32,
    rsc: isize,
    last: S::Mask,
    first: bool,
    /// Whether to ask for the right operand's rows ahead ([`PREFETCH_ROWS`]).
    prefetch: bool,
}

impl<S: Isa, R: Axis, C: Axis> Tile<S, R, C> {
    /// A tile of fewer than [`MR`] rows.
    ///
    /// # Safety
    /// As for [`Tile::run`], with `rows` (1 to 5) rows.
    #[inline(always)]
    unsafe fn run_rows<const V: usize>(&self, rows: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match rows {
                5 => self.run::<5, V>(),
                4 => self.run::<4, V>(),
                3 => self.run::<3, V>(),
                2 => self.run::<2, V>(),
                _ => self.run::<1, V>(),
            }
        }
    }

    /// `ROWS` rows and `V` vectors of columns (the last one masked by
    /// `self.last`): a fused multiply-add chain per element from zero over
    /// the block's steps, stored if this is the first block, else added to
    /// `c`.
    ///
    /// # Safety
    /// Inside [`Isa::enter`]; rows `0..R` of `a` (the block's `k` columns),
    /// rows `0..k` of `b` (the columns the vectors and mask cover) and the
    /// same rows and columns of `c` are valid.
    #[inline(always)]
    unsafe fn run<const ROWS: usize, const V: usize>(&self) {
        // SAFETY: (the whole body) every address is inside the operands by
        // the caller's contract; masked-off lanes are neither read nor
        // written.
        unsafe {
            let mut acc = [[S::zero(); V]; ROWS];
            let (i0, p0) = self.at;
            let a_rows: [*const f32; ROWS] =
                std::array::from_fn(|r| self.a.offset(self.rows.at(i0 + r)));
            let mut b_row = self.b;
            for p in 0..self.k {
                // a hint only: an address past the operand's end is not
                // read (a prefetch neither faults nor changes a result)
                if self.prefetch {
                    let ahead = b_row.wrapping_offset(PREFETCH_ROWS * self.rsb);
                    for v in 0..V {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(S::LANES * v).cast());
                    }
                }
                let bv: [S::V; V] = std::array::from_fn(|v| {
                    let at = b_row.add(S::LANES * v);
                    if v + 1 == V {
                        S::load_masked(self.last, at)
                    } else {
                        S::load(at)
                    }
                });
                let col = self.cols.at(p0 + p);
                for (sums, a_row) in acc.iter_mut().zip(&a_rows) {
                    let av = S::splat(*a_row.offset(col));
                    for (sum, &bv) in sums.iter_mut().zip(&bv) {
                        *sum = S::fmadd(av, bv, *sum);
                    }
                }
                b_row = b_row.offset(self.rsb);
            }
            write_sums::<S, ROWS, V>(&acc, ROWS, (self.c, self.rsc), (self.last, self.first));
        }
    }
}

/// Writes the first `rows` rows of a tile's block sums into `c` (row `r`
/// at `c + r rsc`): stored if this is the first block, else added to what
/// `c` holds; the last vector of each row masked by `last`. (The whole
/// array is passed, not a slice of it, so that the sums stay in registers.)
///
/// # Safety
/// Inside [`Isa::enter`]; the first `rows` rows of `sums` and the columns
/// of their vectors (the last one's lanes in `last`) are valid elements of
/// `c`.
#[inline(always)]
unsafe fn write_sums<S: Isa, const R: usize, const V: usize>(
    sums: &[[S::V; V]; R],
    rows: usize,
    (c, rsc): (*mut f32, isize),
    (last, first): (S::Mask, bool),
) {
    // SAFETY: every address written or read is inside `c` by the caller's
    // contract; masked-off lanes are neither read nor written.
    unsafe {
        for (r, row) in sums.iter().enumerate().take(rows) {
            let c_row = c.offset(r as isize * rsc);
            for (v, &sum) in row.iter().enumerate() {
                let at = c_row.add(S::LANES * v);
                if v + 1 == V {
                    let value = if first {
                        sum
                    } else {
                        S::add(S::load_masked(last, at), sum)
                    };
                    S::store_masked(at, last, value);
                } else {
                    let value = if first { sum } else { S::add(S::load(at), sum) };
                    S::store(at, value);
                }
            }
        }
    }
}

/// `c = a b` for a narrow result (`n` at most [`Isa::NARROW_MAX`]) whose left
/// operand has contiguous columns (element `(i, p)` at `a + i + p csa`, as
/// in `xᵀ g`): [`Isa::LANES`] rows of `c` a vector, each step of `k` one load of
/// `a` and one fused multiply-add per column with `b`'s element broadcast,
/// where the row tiles of [`sgemm`] would fill a vector with the few
/// columns there are. The sums are the same chains as [`sgemm`]'s (and
/// so matrixmultiply's): in order over `k`, restarted every [`KC`] steps,
/// each block's sum added to `c`, so the bits are the same.
///
/// # Safety
/// Inside [`Isa::enter`]; `a` holds the `m x k` matrix so described, `b`
/// (element `(p, j)` at `b + p rsb + j csb`) the `k x n` one and `c` (rows
/// `rsc` apart, columns contiguous) the `m x n` one, which overlaps
/// neither; `m`, `k`, `n` are at least 1 and `n` at most [`Isa::NARROW_MAX`].
#[inline(always)]
pub(crate) unsafe fn sgemm_narrow<S: Isa>(
    (m, k, n): (usize, usize, usize),
    (a, csa): (*const f32, isize),
    (b, rsb, csb): (*const f32, isize, isize),
    (c, rsc): (*mut f32, isize),
) {
    let operands = ((m, k), (a, csa), (b, rsb, csb), (c, rsc));
    // the accumulators in registers: one instance per width
    macro_rules! widths {
        ($($w:literal)*) => {
            match n {
                // SAFETY: the caller's contract, with n = $w.
                $($w if $w <= S::NARROW_MAX => unsafe { narrow::<S, $w>(operands) },)*
                _ => unreachable!("sgemm_narrow: n = {n} is not 1 to {}", S::NARROW_MAX),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// [`sgemm_narrow`] for `n = N`.
///
/// # Safety
/// As for [`sgemm_narrow`].
#[allow(clippy::type_complexity)]
#[inline(always)]
unsafe fn narrow<S: Isa, const N: usize>(
    ((m, k), (a, csa), (b, rsb, csb), (c, rsc)): (
        (usize, usize),
        (*const f32, isize),
        (*const f32, isize, isize),
        (*mut f32, isize),
    ),
) {
    let mut i0 = 0;
    while i0 < m {
        let rows = (m - i0).min(S::LANES);
        // SAFETY: inside `S::enter` (the caller's contract).
        let mask = unsafe { S::mask(rows) };
        let mut p0 = 0;
        while p0 < k {
            let kc = (k - p0).min(KC);
            // SAFETY: (the whole block) rows i0..i0 + rows < m, steps
            // p0..p0 + kc <= k and columns j < N are inside the operands;
            // masked-off lanes are neither read nor written.
            unsafe {
                let mut acc = [S::zero(); N];
                for p in p0..p0 + kc {
                    let av = S::load_masked(mask, a.add(i0).offset(p as isize * csa));
                    let b_row = b.offset(p as isize * rsb);
                    for (j, sum) in acc.iter_mut().enumerate() {
                        let bv = S::splat(*b_row.offset(j as isize * csb));
                        *sum = S::fmadd(av, bv, *sum);
                    }
                }
                // the block's sums, column by column, into the rows of `c`
                // (16 lanes: the widest vector)
                const { assert!(S::LANES <= 16) };
                let mut block = [[0.0f32; 16]; N];
                for (sums, sum) in block.iter_mut().zip(&acc) {
                    S::store(sums.as_mut_ptr(), *sum);
                }
                for r in 0..rows {
                    let c_row = c.offset((i0 + r) as isize * rsc);
                    for (j, sums) in block.iter().enumerate() {
                        let at = c_row.add(j);
                        *at = if p0 == 0 { sums[r] } else { *at + sums[r] };
                    }
                }
            }
            p0 += kc;
        }
        i0 += S::LANES;
    }
}

/// Runs `$body` with `$S` the instruction set `$kernels` names, inside its
/// [`Isa::enter`] (by an `#[inline(always)]` closure, so that the kernels
/// are compiled with its features).
///
/// # Safety
/// As for [`Isa::enter`]: the CPU has that instruction set.
macro_rules! on_kernels {
    ($kernels:expr, $S:ident => $body:expr) => {
        match $kernels {
            Kernels::Avx512 => {
                type $S = Avx512;
                $S::enter(
                    #[inline(always)]
                    || $body,
                )
            }
            Kernels::Avx2 => {
                type $S = Avx2;
                $S::enter(
                    #[inline(always)]
                    || $body,
                )
            }
        }
    };
}

/// `c = a b` (`a: m x k` with element `(i, p)` at `a + i rsa + p csa`,
/// `b: k x n` with `(p, j)` at `b + p rsb + j csb`, `c: m x n` with
/// contiguous rows `rsc` apart, written without being read) by the path
/// these kernels have for its shape and strides; `false`, with `c`
/// untouched, if they have none (matrixmultiply's product then).
///
/// # Safety
/// The CPU has the instruction set of `kernels` (as when [`available`]
/// returned it); the operands are valid matrices of those shapes (`m`, `k`,
/// `n` at least 1), and `c` overlaps neither.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    kernels: Kernels,
    (m, k, n): (usize, usize, usize),
    (a, rsa, csa): (*const f32, isize, isize),
    (b, rsb, csb): (*const f32, isize, isize),
    (c, rsc): (*mut f32, isize),
) -> bool {
    let operands = ((m, k, n), (a, rsa, csa), (b, rsb, csb), (c, rsc));
    // SAFETY: the caller's contract.
    unsafe { on_kernels!(kernels, S => route::<S>(operands)) }
}

/// [`product`] on `S`.
///
/// # Safety
/// As for [`product`], inside [`Isa::enter`].
#[allow(clippy::type_complexity)]
#[inline(always)]
unsafe fn route<S: Isa>(
    ((m, k, n), (a, rsa, csa), (b, rsb, csb), (c, rsc)): (
        (usize, usize, usize),
        (*const f32, isize, isize),
        (*const f32, isize, isize),
        (*mut f32, isize),
    ),
) -> bool {
    // Both tall and wide, with the rows of `a` and `b` contiguous (a
    // layer's forward product at a batch above 128): `b` packed a block of
    // columns at a time, each tile of `c` written once (a transposed `a` in
    // this order, unpacked, ran 2-3 times slower)
    if S::WIDE && m > 128 && n > 128 && csa == 1 && csb == 1 && k <= BLOCKED_MAX_K {
        // SAFETY: the caller's contract with `a`'s and `b`'s rows
        // contiguous and `k` in range.
        unsafe { sgemm_blocked::<S>((m, k, n), (a, rsa), (b, rsb), (c, rsc)) };
        return true;
    }
    // Both tall and wide with `a` transposed or strided (the weight
    // gradient `xᵀ g`): both operands packed into panels, so that a strip
    // of `b` stays in the L1 cache down a block of rows (the layer's
    // forward product, whose `a` has contiguous rows, ran no faster this
    // way: docs/benchmarks.md, "GEMM libraries")
    if S::WIDE && m > 128 && n > 128 && csa != 1 && csb == 1 {
        // SAFETY: the caller's contract with `b`'s rows contiguous.
        unsafe { sgemm_packed::<S>((m, k, n), (a, rsa, csa), (b, rsb), (c, rsc)) };
        return true;
    }
    // Narrow or short: the paths that read the operands unpacked: a vector
    // of rows for a narrow result whose `a` has contiguous columns (`xᵀ g`
    // of a narrow layer); else row tiles, for a `b` with contiguous rows,
    // or with contiguous columns and small (`g W^T`), whose rows are copied
    // out first (which costs less than matrixmultiply's packing of both
    // operands)
    if n <= S::NARROW_MAX && rsa == 1 && m >= S::LANES {
        // SAFETY: the caller's contract with `a`'s columns contiguous and
        // n <= S::NARROW_MAX.
        unsafe { sgemm_narrow::<S>((m, k, n), (a, csa), (b, rsb, csb), (c, rsc)) };
        return true;
    }
    let narrow = n <= 128 && csa == 1;
    if (n <= 128 || m <= 128) && (S::WIDE || narrow) {
        if csb == 1 {
            // SAFETY: the caller's contract with `b`'s rows contiguous.
            unsafe { sgemm::<S>(m, k, n, a, rsa, csa, b, rsb, c, rsc) };
            return true;
        }
        if rsb == 1 && k * n <= TRANSPOSE_MAX && S::WIDE {
            // SAFETY: the caller's contract with `b`'s columns contiguous.
            unsafe { sgemm_b_transposed::<S>((m, k, n), (a, rsa, csa), (b, csb), (c, rsc)) };
            return true;
        }
    }
    false
}

/// [`sgemm_at`] on the instruction set of `kernels`, with the left
/// operand's rows and columns at the offsets of two tables and `b` and `c`
/// contiguous (`n` columns).
///
/// # Safety
/// As for [`product`], with every `a + rows[i] + cols[p]` a valid element.
pub(crate) unsafe fn gathered(
    kernels: Kernels,
    a: *const f32,
    (rows, cols): (&[isize], &[isize]),
    b: *const f32,
    n: usize,
    c: *mut f32,
) {
    let (m, k) = (rows.len(), cols.len());
    let (shape, a, b, c) = (
        (m, k, n),
        (a, Offsets(rows), Offsets(cols)),
        (b, n as isize),
        (c, n as isize),
    );
    // SAFETY: the caller's contract.
    unsafe { on_kernels!(kernels, S => sgemm_at::<S, _, _>(shape, a, b, c)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic matrix of `len` values in [-1, 1), some of them
    /// exactly zero or negative zero.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match i % 97 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0,
                }
            })
            .collect()
    }

    /// [`sgemm_packed`] against matrixmultiply, bit for bit, over shapes
    /// drawn at random (a third of the sizes at the edges of its tiles and
    /// blocks), with `a` transposed or not and strides wider than the rows.
    /// Runs `check::<S>()` inside `S::enter` for each instruction set `S`
    /// the CPU has.
    macro_rules! on_each_isa {
        ($check:ident) => {
            let isas = [(Tier::Avx512, Kernels::Avx512), (Tier::Avx2Fma, Kernels::Avx2)];
            let mut ran = false;
            for (_, kernels) in isas.into_iter().filter(|(tier, _)| tier.supported()) {
                // SAFETY: the CPU has the instruction set.
                unsafe { on_kernels!(kernels, S => $check::<S>()) };
                ran = true;
            }
            if !ran {
                eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 with FMA");
            }
        };
    }

    #[test]
    fn packed_gives_matrixmultiplys_bits_on_drawn_shapes() {
        on_each_isa!(packed_on_drawn_shapes);
    }

    #[inline(always)]
    fn packed_on_drawn_shapes<S: Isa>() {
        eprintln!("{} lanes", S::LANES);
        let edges = [
            1, 11, 12, 13, 31, 32, 33, 255, 256, 257, 263, 264, 265, 511, 512, 513,
        ];
        let mut draws = values(180, 99)
            .into_iter()
            .map(|v| (v.abs() * 1e6) as usize);
        let mut size = |limit: usize| {
            let d = draws.next().unwrap_or(1);
            match d % 3 {
                0 => edges[d % edges.len()].min(limit),
                _ => d % limit + 1,
            }
        };
        for case in 0..60 {
            let (m, k, n) = (size(300), size(600), size(560));
            let (transposed, pad) = (case % 2 == 0, case % 4);
            let a = values((m + pad) * (k + pad), case as u64);
            let b = values(k * (n + pad), 1000 + case as u64);
            let (rsa, csa) = match transposed {
                true => (1, (m + pad) as isize),
                false => ((k + pad) as isize, 1),
            };
            let (rsb, rsc) = ((n + pad) as isize, n + pad);
            let mut ours = vec![f32::NAN; m * rsc];
            let mut theirs = ours.clone();
            // SAFETY: `a` holds (m + pad) x (k + pad) values, which cover
            // m x k read either way; `b` k rows of n + pad, each `c` m rows
            // of rsc >= n.
            unsafe {
                sgemm_packed::<S>(
                    (m, k, n),
                    (a.as_ptr(), rsa, csa),
                    (b.as_ptr(), rsb),
                    (ours.as_mut_ptr(), rsc as isize),
                );
                let (a, b, c) = (a.as_ptr(), b.as_ptr(), theirs.as_mut_ptr());
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a,
                    rsa,
                    csa,
                    b,
                    rsb,
                    1,
                    0.0,
                    c,
                    rsc as isize,
                    1,
                );
            }
            for (i, (x, y)) in ours.iter().zip(&theirs).enumerate() {
                let (row, col) = (i / rsc, i % rsc);
                match col < n {
                    true => assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{m} x {k} x {n} (a transposed: {transposed}), element ({row}, {col})"
                    ),
                    false => assert!(x.is_nan(), "{m} x {k} x {n}: padding of row {row} written"),
                }
            }
        }
    }

    #[test]
    fn gives_matrixmultiplys_bits() {
        on_each_isa!(every_path_on_edge_shapes);
    }

    #[inline(always)]
    fn every_path_on_edge_shapes<S: Isa>() {
        eprintln!("{} lanes", S::LANES);
        // edge rows (m mod 6) and columns (n mod 8, 16 and 64: a vector and a tile of each instruction set), one and
        // several k blocks (k = 256, 257, 600), a transposed `a`, and row
        // strides wider than the rows; `sgemm_blocked` where `a`'s rows are
        // contiguous
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (6, 16, 16),
            (7, 75, 64),
            (13, 256, 65),
            (12, 257, 10),
            (19, 600, 130),
            (37, 31, 200),
            (37, 600, 10),
            (16, 257, 16),
            (33, 31, 1),
            (200, 513, 13),
            // AVX2's widest narrow result, rows a vector of 8
            (45, 300, 12),
            // the blocked path's blocks of columns: three at k = 600 (192
            // columns each, the last 16), three at its longest k (64 each,
            // the last 2)
            (131, 600, 400),
            (7, BLOCKED_MAX_K, 130),
            (9, 1, 200),
            // the packed path's blocks of rows (264) and columns (512),
            // and its edge panels and strips
            (281, 520, 530),
            (13, 3, 33),
        ];
        for (case, &(m, k, n)) in shapes.iter().enumerate() {
            for transposed in [false, true] {
                let pad = 3;
                let a = values((m + pad) * (k + pad), case as u64);
                let b = values(k * (n + pad), 100 + case as u64);
                let (rsa, csa) = if transposed {
                    (1, (m + pad) as isize)
                } else {
                    ((k + pad) as isize, 1)
                };
                let rsb = (n + pad) as isize;
                let rsc = n + pad;
                let mut ours = vec![f32::NAN; m * rsc];
                let mut theirs = ours.clone();
                let mut copied = ours.clone();
                let mut narrow = ours.clone();
                let mut blocked = ours.clone();
                let mut packed = ours.clone();
                // the same right operand stored by columns (column j at
                // j * (k + pad)), for the path that copies it into rows
                let csb = k + pad;
                let mut b_columns = vec![f32::NAN; n * csb];
                for p in 0..k {
                    for j in 0..n {
                        b_columns[j * csb + p] = b[p * rsb as usize + j];
                    }
                }
                // SAFETY: `a` holds (m + pad) x (k + pad) values, which
                // cover m x k read either way; `b` holds k rows of n + pad,
                // `b_columns` n columns of k + pad, and each `c` m rows of
                // rsc >= n; the narrow kernel runs only on the transposed
                // `a`, whose columns are contiguous, and n <= 16, the
                // blocked order only on the other, whose rows are, with
                // k <= BLOCKED_MAX_K.
                unsafe {
                    sgemm::<S>(
                        m,
                        k,
                        n,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        ours.as_mut_ptr(),
                        rsc as isize,
                    );
                    sgemm_b_transposed::<S>(
                        (m, k, n),
                        (a.as_ptr(), rsa, csa),
                        (b_columns.as_ptr(), csb as isize),
                        (copied.as_mut_ptr(), rsc as isize),
                    );
                    if !transposed {
                        // `a`'s rows are contiguous: the blocked order
                        sgemm_blocked::<S>(
                            (m, k, n),
                            (a.as_ptr(), rsa),
                            (b.as_ptr(), rsb),
                            (blocked.as_mut_ptr(), rsc as isize),
                        );
                    }
                    sgemm_packed::<S>(
                        (m, k, n),
                        (a.as_ptr(), rsa, csa),
                        (b.as_ptr(), rsb),
                        (packed.as_mut_ptr(), rsc as isize),
                    );
                    if transposed && n <= S::NARROW_MAX {
                        // `a`'s columns are contiguous: the narrow kernel
                        sgemm_narrow::<S>(
                            (m, k, n),
                            (a.as_ptr(), csa),
                            (b.as_ptr(), rsb, 1),
                            (narrow.as_mut_ptr(), rsc as isize),
                        );
                    }
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        1,
                        0.0,
                        theirs.as_mut_ptr(),
                        rsc as isize,
                        1,
                    );
                }
                for i in 0..m {
                    for j in 0..rsc {
                        let (x, y) = (ours[i * rsc + j], theirs[i * rsc + j]);
                        let z = copied[i * rsc + j];
                        let u = packed[i * rsc + j];
                        let v = if transposed { y } else { blocked[i * rsc + j] };
                        let narrow_ran = transposed && n <= S::NARROW_MAX;
                        let w = if narrow_ran { narrow[i * rsc + j] } else { y };
                        if j < n {
                            assert_eq!(
                                w.to_bits(),
                                y.to_bits(),
                                "{m} x {k} x {n} (narrow kernel), element ({i}, {j}): {w} against {y}"
                            );
                        } else if narrow_ran {
                            assert!(
                                w.is_nan(),
                                "{m} x {k} x {n}: the narrow kernel wrote the padding after row {i}"
                            );
                        }
                        if j < n {
                            assert_eq!(
                                x.to_bits(),
                                y.to_bits(),
                                "{m} x {k} x {n} (a transposed: {transposed}), element ({i}, {j}): {x} against {y}"
                            );
                            assert_eq!(
                                z.to_bits(),
                                y.to_bits(),
                                "{m} x {k} x {n} (a transposed: {transposed}, b by columns), element ({i}, {j}): {z} against {y}"
                            );
                            assert_eq!(
                                v.to_bits(),
                                y.to_bits(),
                                "{m} x {k} x {n} (blocked), element ({i}, {j}): {v} against {y}"
                            );
                            assert_eq!(
                                u.to_bits(),
                                y.to_bits(),
                                "{m} x {k} x {n} (a transposed: {transposed}, packed), element ({i}, {j}): {u} against {y}"
                            );
                        } else {
                            assert!(
                                x.is_nan()
                                    && z.is_nan()
                                    && u.is_nan()
                                    && (transposed || v.is_nan()),
                                "{m} x {k} x {n}: the padding after row {i} was written"
                            );
                        }
                    }
                }
            }
        }
    }
}
