//! The KL term of a mean-field Normal posterior against a scalar Normal
//! prior, as one fused op with a scalar output.
//!
//! Composed from the generic ops, the divergence of a layer is an
//! elementwise KL tensor, a sum, and in backward a full-size broadcast of
//! the scalar gradient feeding the elementwise backward. [`Var::normal_kl_sum`]
//! reads `loc` and `scale` once forward and writes their gradients once
//! backward. It computes exactly the composed formula; the layers use it
//! when the prior is a scalar Normal and the divergence analytic.

use crate::error::{Error, Result};
use crate::parallel::{join, par_new, vectorized, PARALLEL_MIN};
use crate::tape::{Op, Var};
use crate::tensor::{Element, Tensor};

/// `sum_i KL(N(loc_i, scale_i) || N(m, s))`. With `r = scale / s` and
/// `d = (loc - m) / s`, each term is `(r^2 + d^2 - 1)/2 - ln r`;
/// `d/dloc = (loc - m) / s^2` and `d/dscale = scale / s^2 - 1 / scale`.
struct KlSum<F> {
    prior_loc: F,
    prior_scale: F,
}

/// `sum_i term(a_i, b_i)`, accumulated in eight lanes (so that it
/// vectorizes), on two threads for long slices.
pub(crate) fn par_sum2<F: Element>(a: &[F], b: &[F], term: impl Fn(F, F) -> F + Sync) -> F {
    #[inline(always)]
    fn lanes<F: Element>(a: &[F], b: &[F], term: &impl Fn(F, F) -> F) -> F {
        // The terms of a block go to a buffer first: a plain map loop
        // vectorizes, a reduction through `term` does not.
        const BLOCK: usize = 256;
        let mut acc = [F::zero(); 8];
        let mut buf = [F::zero(); BLOCK];
        for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
            let buf = &mut buf[..x.len()];
            for ((t, &x), &y) in buf.iter_mut().zip(x).zip(y) {
                *t = term(x, y);
            }
            let lanes = buf.chunks_exact(8);
            for &t in lanes.remainder() {
                acc[0] = acc[0] + t;
            }
            for t in lanes {
                for j in 0..8 {
                    acc[j] = acc[j] + t[j];
                }
            }
        }
        acc.iter().fold(F::zero(), |s, &v| s + v)
    }
    if a.len() < PARALLEL_MIN {
        return vectorized(
            #[inline(always)]
            || lanes(a, b, &term),
        );
    }
    let mid = a.len() / 2;
    let (mut lo, mut hi) = (F::zero(), F::zero());
    join(
        #[inline(always)]
        || lo = lanes(&a[..mid], &b[..mid], &term),
        #[inline(always)]
        || hi = lanes(&a[mid..], &b[mid..], &term),
    );
    lo + hi
}

/// `sum_i ln x_i` with one logarithm per four values: eight lanes of
/// products of four, then their logarithms (`ln` is most of the cost of a
/// KL term). A block of 32 values with a product that is not a normal
/// number, or with a value that is not positive, is summed value by value
/// instead, so zeros, negatives, infinities and NaNs give what the plain
/// sum gives. Two threads for long slices.
fn sum_ln<F: Element>(x: &[F]) -> F {
    #[inline(always)]
    fn serial<F: Element>(x: &[F]) -> F {
        let plain = |c: &[F]| c.iter().fold(F::zero(), |s, &v| s + v.fast_ln());
        let mut acc = [F::zero(); 8];
        let mut blocks = x.chunks_exact(32);
        for c in &mut blocks {
            let (mut product, mut low) = ([F::one(); 8], [F::infinity(); 8]);
            for k in 0..4 {
                for j in 0..8 {
                    product[j] = product[j] * c[8 * k + j];
                    low[j] = low[j].min(c[8 * k + j]);
                }
            }
            if product.iter().all(|p| p.is_normal()) && low.iter().all(|&v| v > F::zero()) {
                for j in 0..8 {
                    acc[j] = acc[j] + product[j].fast_ln();
                }
            } else {
                acc[0] = acc[0] + plain(c);
            }
        }
        acc.iter().fold(plain(blocks.remainder()), |s, &v| s + v)
    }
    if x.len() < PARALLEL_MIN {
        return vectorized(
            #[inline(always)]
            || serial(x),
        );
    }
    let mid = x.len() / 2;
    let (mut lo, mut hi) = (F::zero(), F::zero());
    join(
        #[inline(always)]
        || lo = serial(&x[..mid]),
        #[inline(always)]
        || hi = serial(&x[mid..]),
    );
    lo + hi
}

impl<F: Element> Op<F> for KlSum<F> {
    fn name(&self) -> &str {
        "normal_kl_sum"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (loc, scale) = (inputs[0].data(), inputs[1].data());
        let m = self.prior_loc;
        let (inv, half) = (F::one() / self.prior_scale, F::lit(0.5));
        // sum ln r = sum ln scale - n ln s: the logarithms in one pass of
        // their own, four values per `ln`
        let quadratic = par_sum2(
            loc,
            scale,
            #[inline(always)]
            |loc, scale| {
                let (r, d) = (scale * inv, (loc - m) * inv);
                half * (r * r + d * d - F::one())
            },
        );
        let n = F::from_usize(scale.len()).unwrap_or_else(F::nan);
        let total = quadratic - sum_ln(scale) + n * self.prior_scale.fast_ln();
        Ok(Tensor::scalar(total))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _out: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (loc, scale) = (inputs[0].data(), inputs[1].data());
        let (g, m) = (grad.data()[0], self.prior_loc);
        let ginv2 = g / (self.prior_scale * self.prior_scale);
        // SAFETY (both): each loop writes every element of its chunk.
        let dloc = unsafe {
            par_new(
                loc.len(),
                #[inline(always)]
                |start, out| {
                    for (o, &l) in out.iter_mut().zip(&loc[start..]) {
                        o.write((l - m) * ginv2);
                    }
                },
            )
        };
        let dscale = unsafe {
            par_new(
                scale.len(),
                #[inline(always)]
                |start, out| {
                    for (o, &s) in out.iter_mut().zip(&scale[start..]) {
                        o.write(s * ginv2 - g / s);
                    }
                },
            )
        };
        let shape = inputs[0].shape().to_vec();
        Ok(vec![
            Some(Tensor::new_unchecked(dloc, shape.clone())),
            Some(Tensor::new_unchecked(dscale, shape)),
        ])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// `sum KL(N(self, scale) || N(prior_loc, prior_scale))` as a scalar,
    /// `self` being the posterior mean and `scale > 0` the posterior scale.
    pub(crate) fn normal_kl_sum(self, scale: Self, prior_loc: F, prior_scale: F) -> Result<Self> {
        if scale.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "normal_kl_sum",
                lhs: self.shape(),
                rhs: scale.shape(),
            });
        }
        self.tape.apply(
            KlSum {
                prior_loc,
                prior_scale,
            },
            &[self, scale],
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{gradcheck, GradCheck};
    use crate::random::standard_normal;
    use crate::tape::Tape;
    use crate::tensor::Tensor;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn posterior(n: usize, seed: u64) -> (Tensor<f64>, Tensor<f64>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let loc = standard_normal(&[n], &mut rng);
        let scale = standard_normal::<f64>(&[n], &mut rng).map(|z| (2.0 * z - 1.0).exp());
        (loc, scale)
    }

    #[test]
    fn sum_ln_matches_the_plain_sum_including_special_values() {
        let plain = |x: &[f64]| x.iter().map(|v| v.ln()).sum::<f64>();
        // long (two threads) and short, with a ragged end
        for n in [5, 37, 1000, 3 * super::PARALLEL_MIN + 13] {
            let x: Vec<f64> = (0..n)
                .map(|i| 1e-5 + ((i * 7919) % 1000) as f64 * 0.01)
                .collect();
            let (got, want) = (super::sum_ln(&x), plain(&x));
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "n {n}: {got} vs {want}"
            );
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let got32 = f64::from(super::sum_ln(&x32));
            assert!(
                (got32 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "f32 n {n}: {got32} vs {want}"
            );
        }
        // products that underflow or overflow fall back to value-by-value sums
        let tiny = vec![1e-100; 64];
        assert!((super::sum_ln(&tiny) - plain(&tiny)).abs() < 1e-9);
        let huge = vec![1e100; 64];
        assert!((super::sum_ln(&huge) - plain(&huge)).abs() < 1e-9);
        // zeros, negatives (even two, whose product is positive) and NaN
        let mut x = vec![0.5; 64];
        x[3] = 0.0;
        assert_eq!(super::sum_ln(&x), f64::NEG_INFINITY);
        x[3] = -0.5;
        x[11] = -0.5;
        assert!(super::sum_ln(&x).is_nan());
        x[3] = f64::NAN;
        assert!(super::sum_ln(&x).is_nan());
        x[3] = f64::INFINITY;
        x[11] = 0.5;
        assert_eq!(super::sum_ln(&x), f64::INFINITY);
    }

    #[test]
    fn fused_kl_equals_the_composed_formula() {
        // long enough for the two-thread path, plus a short one
        for n in [37, 70_001] {
            let (loc, scale) = posterior(n, 3);
            let tape = Tape::new();
            let (l, s) = (tape.var(loc), tape.var(scale));
            let (r, d) = (s * 0.5, (l - 0.3) * 0.5);
            let composed = ((r.square() + d.square() - 1.0) * 0.5 - r.ln()).sum();
            let fused = l.normal_kl_sum(s, 0.3, 2.0).unwrap();
            let (v1, v2) = (composed.item().unwrap(), fused.item().unwrap());
            assert!((v1 - v2).abs() <= 1e-12 * v1.abs(), "{v1} vs {v2}");
            let (g1, g2) = (composed.backward().unwrap(), fused.backward().unwrap());
            for var in [l, s] {
                let (a, b) = (g1.get(var).unwrap().data(), g2.get(var).unwrap().data());
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 1e-12, "n = {n}: gradient differs by {worst}");
            }
        }
    }

    #[test]
    fn fused_kl_passes_gradcheck() {
        let (loc, scale) = posterior(12, 5);
        gradcheck(
            |_, v| v[0].normal_kl_sum(v[1], 0.3, 0.7),
            &[loc, scale],
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("gradcheck of normal_kl_sum failed: {e}"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 64,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "proptest-regressions/meanfield.txt",
                ),
            )),
            ..Default::default()
        })]

        /// Non-negative, zero when the posterior is the prior, equal to the
        /// unfused formula, with its gradients, for any posterior and prior.
        #[test]
        fn fused_kl_matches_the_formula_and_is_non_negative(
            post in proptest::collection::vec((-4.0..4.0f64, 0.05..4.0f64), 1..40),
            m in -2.0..2.0f64,
            s in 0.1..3.0f64,
        ) {
            let n = post.len();
            let loc = Tensor::from_vec(post.iter().map(|p| p.0).collect(), &[n]).unwrap();
            let scale = Tensor::from_vec(post.iter().map(|p| p.1).collect(), &[n]).unwrap();
            let tape = Tape::new();
            let (l, sc) = (tape.var(loc), tape.var(scale));
            let (r, d) = (sc * (1.0 / s), (l - m) * (1.0 / s));
            let composed = ((r.square() + d.square() - 1.0) * 0.5 - r.ln()).sum();
            let fused = l.normal_kl_sum(sc, m, s).unwrap();
            let (v1, v2) = (composed.item().unwrap(), fused.item().unwrap());
            proptest::prop_assert!(v2 >= 0.0 && (v1 - v2).abs() <= 1e-10 * (1.0 + v1.abs()));
            let (g1, g2) = (composed.backward().unwrap(), fused.backward().unwrap());
            for var in [l, sc] {
                let (a, b) = (g1.get(var).unwrap().data(), g2.get(var).unwrap().data());
                proptest::prop_assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-10 * (1.0 + x.abs())));
            }
            let at_prior = tape.var(Tensor::full(&[n], m))
                .normal_kl_sum(tape.var(Tensor::full(&[n], s)), m, s).unwrap();
            proptest::prop_assert!(at_prior.item().unwrap().abs() < 1e-12);
        }
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let tape = Tape::<f64>::new();
        let (l, s) = (tape.var(Tensor::zeros(&[3])), tape.var(Tensor::ones(&[4])));
        assert!(l.normal_kl_sum(s, 0.0, 1.0).is_err());
    }
}
