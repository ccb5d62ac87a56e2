//! The element trait: `f32` and `f64`, with the numeric kernels each provides.

use num_traits::{Float, FromPrimitive};
use std::fmt;
use std::iter::Sum;

/// The element types a tensor can hold: `f32` and `f64`.
///
/// Beyond [`num_traits::Float`] it gives a lossless way to write literals
/// ([`Element::lit`]) and the safetensors dtype name. The trait is sealed:
/// the numeric kernels behind it (vectorized math, byte conversion and the
/// GEMM entry point) are the crate's own, implemented for `f32` and `f64`
/// only.
pub trait Element:
    Float
    + FromPrimitive
    + Sum
    + Default
    + fmt::Debug
    + fmt::Display
    + fmt::LowerExp
    + Send
    + Sync
    + 'static
    + sealed::Kernels
{
    /// The safetensors dtype name (`"F32"` or `"F64"`).
    const DTYPE: &'static str;

    /// Converts an `f64` literal (rounding for `f32`).
    fn lit(x: f64) -> Self;
}

pub(crate) mod sealed {
    /// The numeric kernels of an element type: crate-internal (the
    /// supertrait lives in a private module, so no type outside the crate
    /// can implement [`Element`](super::Element)).
    pub trait Kernels: Copy {
        /// `e^x` (vectorizable polynomial in `f32`, libm in `f64`).
        fn fast_exp(self) -> Self;
        /// `fast_exp` of an `x` that is not positive (or is NaN): the same
        /// bits, with no overflow to handle in `f32`.
        fn fast_exp_nonpositive(self) -> Self;
        /// `ln x` (vectorizable in `f32`, libm in `f64`).
        fn fast_ln(self) -> Self;
        /// `fast_ln` of a value known to be at least the smallest normal
        /// number, or +inf, or NaN (the same bits, fewer checks in `f32`).
        fn fast_ln_of_normal(self) -> Self;
        /// `ln(1 + e^x)` without overflow or underflow.
        fn fast_softplus(self) -> Self;
        /// `1 / (1 + e^-x)` without overflow.
        fn fast_sigmoid(self) -> Self;
        /// `tanh x` (vectorizable in `f32`, within 3 ulp; libm in `f64`).
        fn fast_tanh(self) -> Self;
        /// `(softplus(x), sigmoid(x))`, sharing work where that is cheaper; each
        /// equals what `fast_softplus` and `fast_sigmoid` give.
        #[inline(always)]
        fn fast_softplus_sigmoid(self) -> (Self, Self) {
            (self.fast_softplus(), self.fast_sigmoid())
        }
        /// [`fast_softplus_sigmoid`](Kernels::fast_softplus_sigmoid) given
        /// `e = e^-|x|`, which the caller has (or can get more cheaply or
        /// more accurately than an exponential of `x`); NaN in `e` gives NaN.
        fn fast_softplus_sigmoid_given(self, e: Self) -> (Self, Self);

        /// The values as `f64`: borrowed in `f64`, converted (exactly) in `f32`.
        fn as_f64s(data: &[Self]) -> std::borrow::Cow<'_, [f64]>;

        /// Little-endian bytes of a slice (exact).
        fn to_le_bytes(data: &[Self]) -> Vec<u8>;

        /// Values from little-endian bytes; `None` if the length is not a multiple of the size.
        fn from_le_bytes(bytes: &[u8]) -> Option<Vec<Self>>;

        /// `C = alpha * A B + beta * C` over strided operands.
        ///
        /// # Safety
        /// The pointers and strides must describe valid `m x k`, `k x n` and
        /// `m x n` matrices, and `c` must not alias `a` or `b`.
        #[allow(clippy::too_many_arguments)]
        unsafe fn gemm(
            m: usize,
            k: usize,
            n: usize,
            alpha: Self,
            a: *const Self,
            rsa: isize,
            csa: isize,
            b: *const Self,
            rsb: isize,
            csb: isize,
            beta: Self,
            c: *mut Self,
            rsc: isize,
            csc: isize,
        );

        /// Whether [`gemm_gathered`](Kernels::gemm_gathered) runs here
        /// (`f32` on CPUs with AVX-512, or AVX2 and FMA).
        fn can_gather() -> bool {
            false
        }

        /// `c = a b` with the left operand's element `(i, p)` at
        /// `a + rows[i] + cols[p]`, `b: k x n` and `c: m x n` row-major
        /// (`m = rows.len()`, `k = cols.len()`), every element of `c`
        /// written, with the bits [`gemm`](Kernels::gemm) gives for the
        /// matrix those offsets describe.
        ///
        /// # Safety
        /// [`can_gather`](Kernels::can_gather) holds; every
        /// `a + rows[i] + cols[p]` is a valid element, `b` and `c` hold
        /// `k x n` and `m x n` elements, `c` overlaps neither, and `m`, `k`
        /// and `n` are at least 1.
        unsafe fn gemm_gathered(
            _a: *const Self,
            _offsets: (&[isize], &[isize]),
            _b: *const Self,
            _n: usize,
            _c: *mut Self,
        ) {
            unreachable!("gemm_gathered is called only where can_gather holds")
        }
    }
}

impl Element for f32 {
    const DTYPE: &'static str = "F32";
    fn lit(x: f64) -> Self {
        x as f32
    }
}

impl sealed::Kernels for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        super::fastmath::exp(self)
    }
    #[inline(always)]
    fn fast_exp_nonpositive(self) -> Self {
        super::fastmath::exp_nonpositive(self)
    }
    #[inline(always)]
    fn fast_ln(self) -> Self {
        super::fastmath::ln(self)
    }
    #[inline(always)]
    fn fast_ln_of_normal(self) -> Self {
        super::fastmath::ln_of_normal(self)
    }
    #[inline(always)]
    fn fast_softplus(self) -> Self {
        super::fastmath::softplus(self)
    }
    #[inline(always)]
    fn fast_sigmoid(self) -> Self {
        super::fastmath::sigmoid(self)
    }
    #[inline(always)]
    fn fast_tanh(self) -> Self {
        super::fastmath::tanh(self)
    }
    #[inline(always)]
    fn fast_softplus_sigmoid(self) -> (Self, Self) {
        super::fastmath::softplus_sigmoid(self)
    }
    #[inline(always)]
    fn fast_softplus_sigmoid_given(self, e: Self) -> (Self, Self) {
        super::fastmath::softplus_sigmoid_given(self, e)
    }
    fn as_f64s(data: &[Self]) -> std::borrow::Cow<'_, [f64]> {
        std::borrow::Cow::Owned(data.iter().map(|&v| f64::from(v)).collect())
    }
    fn to_le_bytes(data: &[Self]) -> Vec<u8> {
        data.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn from_le_bytes(bytes: &[u8]) -> Option<Vec<Self>> {
        bytes.len().is_multiple_of(4).then(|| {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("chunk of 4")))
                .collect()
        })
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // `c = a b` with contiguous rows of `c` on AVX-512 or AVX2, each
        // path with the same bits as matrixmultiply (docs/benchmarks.md,
        // "GEMM libraries")
        #[cfg(target_arch = "x86_64")]
        if alpha == 1.0
            && beta == 0.0
            && csc == 1
            && m.min(k).min(n) > 0
            && let Some(kernels) = super::simd_gemm::available()
        {
            let (shape, c) = ((m, k, n), (c, rsc));
            // SAFETY: the caller's contract below, with `c`'s rows
            // contiguous; `available` checked the CPU.
            if unsafe { super::simd_gemm::product(kernels, shape, (a, rsa, csa), (b, rsb, csb), c) }
            {
                return;
            }
        }
        // SAFETY: the caller upholds `gemm`'s contract, which is
        // matrixmultiply's: valid strided m x k, k x n and m x n operands,
        // `c` not aliasing `a` or `b`.
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    fn can_gather() -> bool {
        #[cfg(target_arch = "x86_64")]
        return super::simd_gemm::available().is_some();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn gemm_gathered(
        a: *const f32,
        offsets: (&[isize], &[isize]),
        b: *const f32,
        n: usize,
        c: *mut f32,
    ) {
        let kernels =
            super::simd_gemm::available().expect("can_gather held: the CPU has AVX2 and FMA");
        // SAFETY: the caller's contract; `can_gather` held, so `available`
        // names the CPU's instruction set.
        unsafe { super::simd_gemm::gathered(kernels, a, offsets, b, n, c) };
    }
}

impl Element for f64 {
    const DTYPE: &'static str = "F64";
    fn lit(x: f64) -> Self {
        x
    }
}

impl sealed::Kernels for f64 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn fast_exp_nonpositive(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn fast_ln(self) -> Self {
        self.ln()
    }
    #[inline(always)]
    fn fast_ln_of_normal(self) -> Self {
        self.ln()
    }
    #[inline(always)]
    fn fast_softplus(self) -> Self {
        self.max(0.0) + (-self.abs()).exp().ln_1p()
    }
    #[inline(always)]
    fn fast_tanh(self) -> Self {
        self.tanh()
    }
    #[inline(always)]
    fn fast_sigmoid(self) -> Self {
        if self >= 0.0 {
            1.0 / (1.0 + (-self).exp())
        } else {
            let e = self.exp();
            e / (1.0 + e)
        }
    }
    #[inline(always)]
    fn fast_softplus_sigmoid_given(self, e: Self) -> (Self, Self) {
        let u = 1.0 + e;
        (
            self.max(0.0) + e.ln_1p(),
            if self >= 0.0 { 1.0 / u } else { e / u },
        )
    }
    fn as_f64s(data: &[Self]) -> std::borrow::Cow<'_, [f64]> {
        std::borrow::Cow::Borrowed(data)
    }
    fn to_le_bytes(data: &[Self]) -> Vec<u8> {
        data.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn from_le_bytes(bytes: &[u8]) -> Option<Vec<Self>> {
        bytes.len().is_multiple_of(8).then(|| {
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect()
        })
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: as for f32 above.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}
