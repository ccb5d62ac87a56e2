//! Random tensors, drawn in bulk from one seed of the caller's RNG.

use super::Tensor;
use crate::kernels::Element;
use crate::kernels::random;
use rand::Rng;

/// `N(0, 1)` draws of a shape, seeded from `rng` (see [`Tensor::standard_normal`]).
pub(crate) fn standard_normal<F: Element>(shape: &[usize], rng: &mut dyn Rng) -> Tensor<F> {
    let len = super::numel(shape);
    Tensor::new_unchecked(random::standard_normal(len, rng), shape.to_vec())
}

/// Draws of one of the standard one-uniform families of a shape, seeded
/// from `rng` (see [`random::unit_draws`]).
pub(crate) fn unit_draws<F: Element>(
    kind: random::Unit,
    shape: &[usize],
    rng: &mut dyn Rng,
) -> Tensor<F> {
    let len = super::numel(shape);
    Tensor::new_unchecked(random::unit_draws(kind, len, rng), shape.to_vec())
}

/// Random signs ±1 of a shape (see [`Tensor::rademacher`]).
pub(crate) fn rademacher<F: Element>(shape: &[usize], rng: &mut dyn Rng) -> Tensor<F> {
    let len = super::numel(shape);
    Tensor::new_unchecked(random::rademacher(len, rng), shape.to_vec())
}

impl<F: Element> Tensor<F> {
    /// Standard normal draws of a shape.
    ///
    /// One `next_u64` of `rng` seeds eight interleaved xoshiro128++ streams
    /// that feed a Box–Muller transform (AVX2 where the CPU has it, with the
    /// same values as the portable code), so a seed gives the same tensor on
    /// every CPU. The draws are computed in `f32` precision for both element
    /// types, and `|z|` never exceeds 6.7.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let mut rng = StdRng::seed_from_u64(0);
    /// let z = Tensor::<f64>::standard_normal(&[10_000], &mut rng);
    /// assert!((z.data().iter().sum::<f64>() / 1e4).abs() < 0.05);
    /// ```
    pub fn standard_normal(shape: &[usize], rng: &mut dyn Rng) -> Self {
        standard_normal(shape, rng)
    }

    /// Random signs ±1 of a shape, one random bit each (Flipout's signs).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let s = Tensor::<f32>::rademacher(&[4, 3], &mut StdRng::seed_from_u64(1));
    /// assert!(s.data().iter().all(|&x| x == 1.0 || x == -1.0));
    /// ```
    pub fn rademacher(shape: &[usize], rng: &mut dyn Rng) -> Self {
        rademacher(shape, rng)
    }
}
