//! The numeric kernels under everything else: the element types, vectorized
//! math, GEMM, the two-thread work split and bulk random streams. Nothing
//! here knows about tensors' shapes or the tape.

pub(crate) mod element;
pub(crate) mod fastmath;
pub(crate) mod gemm;
pub(crate) mod parallel;
pub(crate) mod random;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd_gemm;
pub(crate) mod special;

pub use element::Element;
