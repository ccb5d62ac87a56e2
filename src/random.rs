//! Fast, reproducible bulk sampling.
//!
//! Drawing hundreds of thousands of normals one virtual call at a time is
//! slow, so bulk draws take one seed from the caller's RNG and generate the
//! values with a generator the compiler can vectorize: eight interleaved
//! xoshiro128++ streams feed the Box–Muller transform, and large tensors
//! are split over two threads. Runs stay reproducible from the caller's
//! seed; the values differ from one-at-a-time draws.
//!
//! The draws are computed in `f32` for every element type (`f64` tensors
//! get `f32`-precision normals). The uniforms behind the radius have 31
//! bits, so `|z|` never exceeds 6.7 (the pairs beyond that radius have
//! probability `2^-32`).

use crate::tensor::{Element, Tensor};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Eight xoshiro128++ generators stepped together (one per vector lane).
struct Lanes {
    s: [[u32; 8]; 4],
}

impl Lanes {
    fn new(seed: u64) -> Self {
        // splitmix64, as the xoshiro authors recommend for seeding
        let mut z = seed;
        let mut next = move || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        // lane i's state is s[0][i], s[1][i], s[2][i], s[3][i]
        let words: [[u32; 4]; 8] = std::array::from_fn(|_| {
            let (a, b) = (next(), next());
            // the last word is odd: never the all-zero state
            [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32 | 1]
        });
        Lanes {
            s: std::array::from_fn(|w| std::array::from_fn(|lane| words[lane][w])),
        }
    }

    #[inline(always)]
    fn next(&mut self) -> [u32; 8] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u32; 8];
        for i in 0..8 {
            out[i] = s0[i].wrapping_add(s3[i]).rotate_left(7).wrapping_add(s0[i]);
            let t = s1[i] << 9;
            s2[i] ^= s0[i];
            s3[i] ^= s1[i];
            s1[i] ^= s2[i];
            s0[i] ^= s3[i];
            s2[i] ^= t;
            s3[i] = s3[i].rotate_left(11);
        }
        out
    }

    /// Sixteen `N(0, 1)` values by Box–Muller, computed in `f32`.
    #[inline(always)]
    fn normals<F: Element>(&mut self, out: &mut [F; 16]) {
        let (a, b) = (self.next(), self.next());
        for i in 0..8 {
            // u1 in (0, 1]: 31 random bits (rounding may give 1 + 1 ulp, hence the max(0))
            let u1 = (((a[i] >> 1) as i32) as f32 + 0.5) * (1.0 / 2_147_483_648.0);
            // u2 in [0, 1): 23 random bits as the mantissa of [1, 2)
            let u2 = f32::from_bits(0x3f80_0000 | (b[i] >> 9)) - 1.0;
            let r = (-2.0 * crate::fastmath::ln(u1)).max(0.0).sqrt();
            let (s, c) = crate::fastmath::sin_cos_turn(u2);
            out[i] = F::lit(f64::from(r * c));
            out[i + 8] = F::lit(f64::from(r * s));
        }
    }
}

#[inline(always)]
fn fill_normal<F: Element>(out: &mut [F], seed: u64) {
    let mut lanes = Lanes::new(seed);
    let mut block = [F::zero(); 16];
    let mut chunks = out.chunks_exact_mut(16);
    for chunk in &mut chunks {
        lanes.normals(&mut block);
        chunk.copy_from_slice(&block);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        lanes.normals(&mut block);
        rest.copy_from_slice(&block[..rest.len()]);
    }
}

/// `N(0, 1)` draws of a shape, seeded from `rng`.
pub fn standard_normal<F: Element>(shape: &[usize], rng: &mut dyn RngCore) -> Tensor<F> {
    let seed = rng.next_u64();
    let mut t = Tensor::zeros(shape);
    // each half that `par_fill` hands out gets its own stream
    crate::parallel::par_fill(
        t.data_mut(),
        #[inline(always)]
        |start, chunk| {
            let stream = if start == 0 { 0 } else { 0x9E37_79B9_7F4A_7C15 };
            fill_normal(chunk, seed ^ stream)
        },
    );
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
    fn normal_cdf_and_tails_match_in_f32() {
        // P(z < q) at a few quantiles, and E z^4 = 3, within 5 standard errors
        let t: Tensor<f32> = standard_normal(&[400_000], &mut SmallRng::seed_from_u64(9));
        let n = t.len() as f64;
        for (q, p) in [
            (-2.0, 0.022_750_131_948_179_2),
            (-1.0, 0.158_655_253_931_457_05),
            (0.0, 0.5),
            (0.5, 0.691_462_461_274_013_1),
            (2.5, 0.993_790_334_674_223_8),
        ] {
            let below = t.data().iter().filter(|&&z| (z as f64) < q).count() as f64 / n;
            let se = (p * (1.0 - p) / n).sqrt();
            assert!(
                (below - p).abs() < 5.0 * se,
                "P(z < {q}) = {below}, expected {p}"
            );
        }
        let m4 = t.data().iter().map(|&z| (z as f64).powi(4)).sum::<f64>() / n;
        assert!((m4 - 3.0).abs() < 5.0 * (96.0 / n).sqrt(), "E z^4 = {m4}"); // var z^4 = 105 - 9
        assert!(t.data().iter().all(|z| z.is_finite()));
    }

    #[test]
    fn rademacher_is_balanced() {
        let mut rng = SmallRng::seed_from_u64(2);
        let t: Tensor<f32> = rademacher(&[10_000], &mut rng);
        assert!(t.data().iter().all(|&x| x == 1.0 || x == -1.0));
        assert!(t.sum_all().abs() < 5.0 * 100.0); // se = sqrt(n) = 100
    }
}
