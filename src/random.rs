//! Fast, reproducible bulk sampling.
//!
//! Drawing hundreds of thousands of normals one virtual call at a time is
//! slow, so bulk draws take one seed from the caller's RNG and generate the
//! values with a small, inlined generator (xoshiro256++), split over two
//! threads when the tensor is large. Runs stay reproducible from the
//! caller's seed; the values differ from one-at-a-time draws.

use crate::tensor::{Element, Tensor};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::StandardNormal;

/// Tensors at least this large are filled on two threads.
const PARALLEL_MIN: usize = 1 << 15;

fn fill_normal<F: Element>(out: &mut [F], seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    for x in out {
        *x = F::lit(rng.sample::<f64, _>(StandardNormal));
    }
}

/// `N(0, 1)` draws of a shape, seeded from `rng`.
pub fn standard_normal<F: Element>(shape: &[usize], rng: &mut dyn RngCore) -> Tensor<F> {
    let seed = rng.next_u64();
    let mut t = Tensor::zeros(shape);
    let data = t.data_mut();
    if data.len() < PARALLEL_MIN {
        fill_normal(data, seed);
    } else {
        let (a, b) = data.split_at_mut(data.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| fill_normal(b, seed ^ 0x9E37_79B9_7F4A_7C15));
            fill_normal(a, seed);
        });
    }
    t
}

/// Random signs ±1 of a shape, one random bit each.
pub fn rademacher<F: Element>(shape: &[usize], rng: &mut dyn RngCore) -> Tensor<F> {
    let mut local = SmallRng::seed_from_u64(rng.next_u64());
    let mut t = Tensor::zeros(shape);
    for chunk in t.data_mut().chunks_mut(64) {
        let bits = local.next_u64();
        for (i, x) in chunk.iter_mut().enumerate() {
            *x = if (bits >> i) & 1 == 1 {
                F::one()
            } else {
                -F::one()
            };
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_moments_and_reproducibility() {
        // mean within 5 se (1/sqrt(n)), variance within 5 se (sqrt(2/n))
        let mut rng = SmallRng::seed_from_u64(1);
        let t: Tensor<f64> = standard_normal(&[100_000], &mut rng);
        let n = t.len() as f64;
        let mean = t.sum_all() / n;
        let var = t.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 5.0 / n.sqrt() && (var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(),
            "{mean} {var}"
        );
        let again: Tensor<f64> = standard_normal(&[100_000], &mut SmallRng::seed_from_u64(1));
        assert_eq!(t, again);
        let halves_differ = t.data()[..10] != t.data()[50_000..50_010];
        assert!(halves_differ, "the two threads must use different streams");
    }

    #[test]
    fn rademacher_is_balanced() {
        let mut rng = SmallRng::seed_from_u64(2);
        let t: Tensor<f32> = rademacher(&[10_000], &mut rng);
        assert!(t.data().iter().all(|&x| x == 1.0 || x == -1.0));
        assert!(t.sum_all().abs() < 5.0 * 100.0); // se = sqrt(n) = 100
    }
}
