//! Fused ops for a mean-field Normal posterior `N(loc, softplus(rho) + c)`
//! read straight from its raw `rho` parameter.
//!
//! Composed from the generic ops, one layer step makes about ten passes over
//! the posterior (softplus, its derivative, the noise product, the
//! elementwise KL, its sum and their backward passes). These two ops make
//! one pass each way:
//!
//! * [`Var::mean_field_perturbation`]: `delta = (softplus(rho) + c) * eps`.
//! * [`Var::mean_field_kl`]: `sum KL(N(loc, softplus(rho) + c) || N(m, s))` as a scalar.
//!
//! They compute exactly the composed formulas; the layers use them when the
//! prior is a scalar Normal and the divergence analytic.

use crate::error::{Error, Result};
use crate::parallel::{join, par_fill, par_fill2, vectorized, PARALLEL_MIN};
use crate::tape::{Op, Var};
use crate::tensor::{Element, Tensor};

/// `delta = (softplus(rho) + shift) * eps`, with `eps` a constant of the op.
/// `d delta / d rho = eps * sigmoid(rho)`.
struct Perturbation<F> {
    eps: Tensor<F>,
    shift: F,
}

impl<F: Element> Op<F> for Perturbation<F> {
    fn name(&self) -> &str {
        "mean_field_perturbation"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (rho, eps, shift) = (inputs[0].data(), self.eps.data(), self.shift);
        let mut out = vec![F::zero(); rho.len()];
        par_fill(
            &mut out,
            #[inline(always)]
            |start, chunk| {
                let n = chunk.len();
                let (rho, eps) = (&rho[start..start + n], &eps[start..start + n]);
                for i in 0..n {
                    chunk[i] = (rho[i].fast_softplus() + shift) * eps[i];
                }
            },
        );
        Ok(Tensor::new_unchecked(out, inputs[0].shape().to_vec()))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _out: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (rho, eps, g) = (inputs[0].data(), self.eps.data(), grad.data());
        let mut drho = vec![F::zero(); rho.len()];
        par_fill(
            &mut drho,
            #[inline(always)]
            |start, chunk| {
                let n = chunk.len();
                let (rho, eps, g) = (
                    &rho[start..start + n],
                    &eps[start..start + n],
                    &g[start..start + n],
                );
                for i in 0..n {
                    chunk[i] = g[i] * eps[i] * rho[i].fast_sigmoid();
                }
            },
        );
        Ok(vec![Some(Tensor::new_unchecked(
            drho,
            inputs[0].shape().to_vec(),
        ))])
    }
}

/// `sum_i KL(N(loc_i, sigma_i) || N(m, s))`, `sigma_i = softplus(rho_i) + shift`.
/// With `r = sigma / s`, `d = (loc - m) / s`: each term is `(r^2 + d^2 - 1)/2 - ln r`,
/// `d/dloc = (loc - m) / s^2` and `d/drho = (sigma / s^2 - 1 / sigma) sigmoid(rho)`.
struct Kl<F> {
    shift: F,
    prior_loc: F,
    prior_scale: F,
}

/// `sum_i term(a_i, b_i)`, accumulated in eight lanes (so that it
/// vectorizes), on two threads for long slices.
fn par_sum2<F: Element>(a: &[F], b: &[F], term: impl Fn(F, F) -> F + Sync) -> F {
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

impl<F: Element> Op<F> for Kl<F> {
    fn name(&self) -> &str {
        "mean_field_kl"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (loc, rho) = (inputs[0].data(), inputs[1].data());
        let (shift, m) = (self.shift, self.prior_loc);
        let (inv, half) = (F::one() / self.prior_scale, F::lit(0.5));
        let total = par_sum2(
            loc,
            rho,
            #[inline(always)]
            |loc, rho| {
                let r = (rho.fast_softplus() + shift) * inv;
                let d = (loc - m) * inv;
                half * (r * r + d * d - F::one()) - r.fast_ln()
            },
        );
        Ok(Tensor::scalar(total))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _out: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (loc, rho) = (inputs[0].data(), inputs[1].data());
        let g = grad.data()[0];
        let (shift, m) = (self.shift, self.prior_loc);
        let ginv2 = g / (self.prior_scale * self.prior_scale);
        let mut dloc = vec![F::zero(); loc.len()];
        let mut drho = vec![F::zero(); rho.len()];
        par_fill2(
            &mut dloc,
            &mut drho,
            #[inline(always)]
            |start, dl, dr| {
                let n = dl.len();
                let (loc, rho) = (&loc[start..start + n], &rho[start..start + n]);
                for i in 0..n {
                    dl[i] = (loc[i] - m) * ginv2;
                    let sigma = rho[i].fast_softplus() + shift;
                    dr[i] = (sigma * ginv2 - g / sigma) * rho[i].fast_sigmoid();
                }
            },
        );
        let shape = inputs[0].shape().to_vec();
        Ok(vec![
            Some(Tensor::new_unchecked(dloc, shape.clone())),
            Some(Tensor::new_unchecked(drho, shape)),
        ])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// `(softplus(self) + shift) * eps`: the perturbation `scale * eps` of a
    /// mean-field sample, `self` being the raw `rho`.
    pub(crate) fn mean_field_perturbation(self, eps: Tensor<F>, shift: F) -> Result<Self> {
        if eps.shape() != self.shape().as_slice() {
            return Err(Error::ShapeMismatch {
                op: "mean_field_perturbation",
                lhs: self.shape(),
                rhs: eps.shape().to_vec(),
            });
        }
        self.tape.apply(Perturbation { eps, shift }, &[self])
    }

    /// `sum KL(N(self, softplus(rho) + shift) || N(prior_loc, prior_scale))`
    /// as a scalar, `self` being the posterior mean.
    pub(crate) fn mean_field_kl(
        self,
        rho: Self,
        shift: F,
        prior_loc: F,
        prior_scale: F,
    ) -> Result<Self> {
        if rho.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "mean_field_kl",
                lhs: self.shape(),
                rhs: rho.shape(),
            });
        }
        self.tape.apply(
            Kl {
                shift,
                prior_loc,
                prior_scale,
            },
            &[self, rho],
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
        let rho = standard_normal::<f64>(&[n], &mut rng).map(|z| 2.0 * z - 1.0);
        (loc, rho)
    }

    #[test]
    fn fused_ops_equal_the_composed_formulas() {
        // long enough for the two-thread path, plus a short one
        for n in [37, 70_001] {
            let (loc, rho) = posterior(n, 3);
            let eps = standard_normal::<f64>(&[n], &mut SmallRng::seed_from_u64(4));
            let tape = Tape::new();
            let (l, r) = (tape.var(loc.clone()), tape.var(rho.clone()));
            let scale = r.softplus() + 1e-5;
            let delta = scale * eps.clone();
            let kl = ((scale * 0.5).square() + (l * 0.5).square() - 1.0) * 0.5 - (scale * 0.5).ln();
            let composed = delta.sum() * 0.3 + kl.sum();
            let fused = r.mean_field_perturbation(eps, 1e-5).unwrap().sum() * 0.3
                + l.mean_field_kl(r, 1e-5, 0.0, 2.0).unwrap();
            let (v1, v2) = (composed.item().unwrap(), fused.item().unwrap());
            assert!((v1 - v2).abs() <= 1e-12 * v1.abs(), "{v1} vs {v2}");
            let (g1, g2) = (composed.backward().unwrap(), fused.backward().unwrap());
            for var in [l, r] {
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
    fn fused_ops_pass_gradcheck() {
        let (loc, rho) = posterior(12, 5);
        let eps = standard_normal::<f64>(&[12], &mut SmallRng::seed_from_u64(6));
        gradcheck(
            |_, v| {
                Ok(v[1]
                    .mean_field_perturbation(eps.clone(), 1e-5)?
                    .square()
                    .sum()
                    + v[0].mean_field_kl(v[1], 1e-5, 0.3, 0.7)?)
            },
            &[loc, rho],
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("gradcheck of the fused ops failed: {e}"));
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let tape = Tape::<f64>::new();
        let (l, r) = (tape.var(Tensor::zeros(&[3])), tape.var(Tensor::zeros(&[4])));
        assert!(r.mean_field_perturbation(Tensor::zeros(&[3]), 0.0).is_err());
        assert!(l.mean_field_kl(r, 0.0, 0.0, 1.0).is_err());
    }
}
