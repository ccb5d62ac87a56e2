//! A layer's weight perturbation and KL term under a mean-field Normal
//! posterior and a scalar Normal prior, fused into one op with two outputs.
//!
//! Composed from the generic ops, a layer's posterior costs about a dozen
//! passes over its weights: the softplus of `rho`, the normal draws, their
//! product with the scale, the elementwise KL and its sum, and in backward
//! the KL's gradients, the product's, the softplus's and two sums of
//! gradients. The weights of a large layer do not fit in cache, so each
//! pass is a trip to memory. [`Var::mean_field_sample`] makes one pass
//! forward (drawing the normals as it goes) and one backward, and adds the
//! gradient of `loc` into the one its other uses left. It computes exactly
//! the composed formulas; the layers use it when the prior is a scalar
//! Normal and the divergence analytic, and, with the single-sample
//! estimate `ln q(w) - ln p(w)` at the drawn weights in place of the
//! analytic KL, when the prior is a spike-and-slab mixture.

use crate::autodiff::tape::{MultiOp, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{Pairwise, par_blocks, par_fill, par_new, sum_lanes};
use crate::kernels::random::NormalStream;
use crate::tensor::{Element, Tensor, Uninit};
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// With `scale = softplus(rho) + shift` and `eps ~ N(0, 1)` drawn from
/// `seed` (the values [`standard_normal`](crate::tensor::standard_normal)
/// gives for that seed), the outputs are the perturbation
/// `delta = scale * eps` (the weights are `loc + delta`) and
/// `sum_i KL(N(loc_i, scale_i) || N(m, s))`. With `r = scale / s` and
/// `d = (loc - m) / s`, each KL term is `(r^2 + d^2 - 1)/2 - ln r`, with
/// `d/dloc = (loc - m) / s^2` and `d/dscale = scale / s^2 - 1 / scale`;
/// `d scale / d rho = sigmoid(rho)`.
///
/// Forward, which computes `scale` anyway, also writes the derivatives of
/// both outputs with respect to `rho` (see [`Slopes`]), so that backward
/// is two products and a sum per weight, with no softplus, sigmoid or
/// division left to recompute.
struct MeanFieldSample<F: Element> {
    seed: u64,
    shift: F,
    prior: FusedPrior<F>,
    /// Written by forward, for backward.
    slopes: RefCell<Option<Slopes<F>>>,
}

/// The prior a [`MeanFieldSample`] measures its divergence against.
#[derive(Clone, Copy)]
pub(crate) enum FusedPrior<F> {
    /// `N(loc, scale)`: the analytic KL.
    Normal { loc: F, scale: F },
    /// `Σ_k w_k N(0, s_k)` over two components, each given as
    /// `(ln w_k - ln s_k, 1 / s_k)`: the single-sample estimate
    /// ([`SpikeSlabTerms`]).
    Mixture([(F, F); 2]),
}

/// The derivatives with respect to `rho_i` of `delta_i`,
/// `eps_i sigmoid(rho_i)`, and of the KL term,
/// `(scale_i / s^2 - 1 / scale_i) sigmoid(rho_i)` for a Normal prior; for
/// a mixture also the KL term's derivative with respect to `loc_i`, which
/// depends on the drawn weight.
struct Slopes<F> {
    delta: Tensor<F>,
    kl: Tensor<F>,
    loc: Option<Tensor<F>>,
}

/// `sum_i ln x_i` with one logarithm per four values: eight lanes of
/// products of four, then their logarithms (`ln` is most of the cost of a
/// KL term). A block of 32 values with a product that is not a normal
/// number, or with a value that is not positive, is summed value by value
/// instead, so zeros, negatives, infinities and NaNs give what the plain
/// sum gives.
#[inline(always)]
pub(crate) fn sum_ln<F: Element>(x: &[F]) -> F {
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
                acc[j] = acc[j] + product[j].fast_ln_of_normal();
            }
        } else {
            acc[0] = acc[0] + plain(c);
        }
    }
    acc.iter().fold(plain(blocks.remainder()), |s, &v| s + v)
}

/// Adds `terms` to the gradient `acc` of an input of `shape`: in place if
/// there is one (a fresh gradient is not shared, so this does not copy),
/// else into a new tensor, written once. `terms(start, out)` writes the
/// terms of elements `start..start + out.len()`, a piece at a time.
pub(crate) fn add_terms<F: Element>(
    acc: &mut Option<Tensor<F>>,
    shape: &[usize],
    terms: impl Fn(usize, &mut [F]) + Sync,
) {
    const PIECE: usize = 256;
    #[inline(always)]
    fn pieces<F: Element>(
        start: usize,
        len: usize,
        terms: &impl Fn(usize, &mut [F]),
        mut sink: impl FnMut(usize, &[F]),
    ) {
        let mut buf = [F::zero(); PIECE];
        for at in (0..len).step_by(PIECE) {
            let piece = &mut buf[..PIECE.min(len - at)];
            terms(start + at, piece);
            sink(at, piece);
        }
    }
    match acc {
        Some(grad) => par_fill(
            grad.data_mut(),
            #[inline(always)]
            |start, chunk| {
                pieces(
                    start,
                    chunk.len(),
                    &terms,
                    #[inline(always)]
                    |at, piece| {
                        for (g, &t) in chunk[at..].iter_mut().zip(piece) {
                            *g = *g + t;
                        }
                    },
                )
            },
        ),
        None => {
            let n = shape.iter().product();
            // SAFETY: `pieces` covers the whole chunk, and each piece's
            // values are written
            let data = unsafe {
                par_new(
                    n,
                    #[inline(always)]
                    |start, chunk: &mut [MaybeUninit<F>]| {
                        pieces(
                            start,
                            chunk.len(),
                            &terms,
                            #[inline(always)]
                            |at, piece| {
                                for (g, &t) in chunk[at..].iter_mut().zip(piece) {
                                    g.write(t);
                                }
                            },
                        )
                    },
                )
            };
            *acc = Some(Tensor::new_unchecked(data, shape.to_vec()));
        }
    }
}

/// What [`sample_part`] needs of a [`MeanFieldSample`] with a Normal prior.
#[derive(Clone, Copy)]
struct SampleParams<F> {
    seed: u64,
    shift: F,
    prior_loc: F,
    inv_scale: F,
}

/// Each `scale = softplus(rho) + shift` and `sigmoid(rho)` of a piece.
/// A pass of its own: in one with the rest, the chain of exp, division
/// and log1p a weight waits on latency (as in the sparse-VD KL pass).
#[inline(always)]
fn scales_and_sigmoids<F: Element>(rho: &[F], shift: F, scale: &mut [F], sig: &mut [F]) {
    for ((s, g), &r) in scale.iter_mut().zip(sig.iter_mut()).zip(rho) {
        let (softplus, sigmoid) = r.fast_softplus_sigmoid();
        *s = softplus + shift;
        *g = sigmoid;
    }
}

/// The outputs [`sample_part`] writes: `delta` and the two slopes.
type SampleOutputs<'a, F> = (
    &'a mut [MaybeUninit<F>],
    (&'a mut [MaybeUninit<F>], &'a mut [MaybeUninit<F>]),
);

/// The forward pass over the part of the weights that starts at element
/// `start`: writes `delta` and the [`Slopes`], returns the part's sums of
/// the quadratic KL terms `(r^2 + d^2 - 1)/2` and of `ln scale`.
#[inline(always)]
fn sample_part<F: Element>(
    p: SampleParams<F>,
    loc: &[F],
    rho: &[F],
    start: usize,
    (delta, (delta_slope, kl_slope)): SampleOutputs<'_, F>,
) -> (F, F) {
    const PIECE: usize = NormalStream::PIECE;
    let half = F::lit(0.5);
    let inv_scale2 = p.inv_scale * p.inv_scale;
    let mut normals = NormalStream::new(p.seed, start);
    // pairwise over the blocks: a layer of 10⁶ f32 weights keeps its KL's digits
    let (mut quadratic, mut ln_scale) = (Pairwise::new(), Pairwise::new());
    let (mut scale, mut q) = ([F::zero(); PIECE], [F::zero(); PIECE]);
    let mut sig = [F::zero(); PIECE];
    for at in (0..rho.len()).step_by(PIECE) {
        let len = PIECE.min(rho.len() - at);
        let z = normals.next_piece(len);
        let (scale, q, sig) = (&mut scale[..len], &mut q[..len], &mut sig[..len]);
        scales_and_sigmoids(&rho[at..at + len], p.shift, scale, sig);
        let weights = sig.iter().zip(&loc[at..at + len]);
        let slopes = delta_slope[at..at + len]
            .iter_mut()
            .zip(&mut kl_slope[at..at + len]);
        let outputs = delta[at..at + len].iter_mut().zip(slopes);
        for (((s, q), &z), ((&sigmoid, &l), (d, (ds, ks)))) in scale
            .iter_mut()
            .zip(q.iter_mut())
            .zip(z)
            .zip(weights.zip(outputs))
        {
            let z = F::lit(f64::from(z));
            d.write(*s * z);
            ds.write(z * sigmoid);
            // sigmoid / scale, not 1 / scale: both vanish together as
            // rho -> -inf, where their ratio stays finite
            ks.write(*s * inv_scale2 * sigmoid - sigmoid / *s);
            let (r, d) = (*s * p.inv_scale, (l - p.prior_loc) * p.inv_scale);
            *q = half * (r * r + d * d - F::one());
        }
        quadratic.add(sum_lanes(q));
        ln_scale.add(sum_ln(scale));
    }
    (quadratic.total(), ln_scale.total())
}

/// The outputs [`sample_part_mixture`] writes: `delta`, the two slopes in
/// `rho` and the KL term's slope in `loc`.
type MixtureOutputs<'a, F> = (
    (&'a mut [MaybeUninit<F>], &'a mut [MaybeUninit<F>]),
    (&'a mut [MaybeUninit<F>], &'a mut [MaybeUninit<F>]),
);

/// The terms of the single-sample estimate `ln q(w) - ln p(w)` at the
/// drawn weight `w = loc + scale eps` against a two-component prior
/// `Σ_k w_k N(0, s_k)`, per weight, with `t_k = c_k - (w / s_k)²/2`
/// (`c_k = ln w_k - ln s_k`; the `ln √(2π)` of both densities cancels):
///
/// - `ln q(w) - ln p(w) = -eps²/2 - ln scale - max_k t_k - ln(1 + e^-|t_1 - t_2|)`
///   (the log-sum-exp as its largest term and a softplus of the gap, which
///   also gives the responsibilities as sigmoids, one exponential a weight);
/// - its derivative in `loc` is `-d ln p/dw = w Σ_k r_k / s_k²`, written
///   `w (1/s_2² + r_1 (1/s_1² - 1/s_2²))` (a convex combination, no
///   cancellation), and in `scale` it is `-1/scale + eps` times that (the
///   composed graph's `ln q` terms in `w` and `loc` cancel to this).
#[derive(Clone, Copy)]
struct SpikeSlabTerms<F> {
    c: [F; 2],
    /// `1 / s_k²`.
    precision: [F; 2],
}

impl<F: Element> SpikeSlabTerms<F> {
    fn new(components: [(F, F); 2]) -> Self {
        SpikeSlabTerms {
            c: components.map(|(c, _)| c),
            precision: components.map(|(_, inv)| inv * inv),
        }
    }
}

/// [`sample_part`] for a two-component prior ([`SpikeSlabTerms`]):
/// writes `delta` and the three slopes, returns the part's sums of
/// `-eps²/2 - ln p(w)` and of `ln scale`.
#[inline(always)]
fn sample_part_mixture<F: Element>(
    (seed, shift, prior): (u64, F, SpikeSlabTerms<F>),
    loc: &[F],
    rho: &[F],
    start: usize,
    ((delta, loc_slope), (delta_slope, kl_slope)): MixtureOutputs<'_, F>,
) -> (F, F) {
    const PIECE: usize = NormalStream::PIECE;
    let half = F::lit(0.5);
    let [c1, c2] = prior.c;
    let [prec1, prec2] = prior.precision;
    let gap = prec1 - prec2;
    let mut normals = NormalStream::new(seed, start);
    let (mut terms, mut ln_scale) = (Pairwise::new(), Pairwise::new());
    let (mut scale, mut q) = ([F::zero(); PIECE], [F::zero(); PIECE]);
    let mut sig = [F::zero(); PIECE];
    for at in (0..rho.len()).step_by(PIECE) {
        let len = PIECE.min(rho.len() - at);
        let z = normals.next_piece(len);
        let (scale, q, sig) = (&mut scale[..len], &mut q[..len], &mut sig[..len]);
        scales_and_sigmoids(&rho[at..at + len], shift, scale, sig);
        let weights = sig.iter().zip(&loc[at..at + len]);
        let slopes = delta_slope[at..at + len]
            .iter_mut()
            .zip(&mut kl_slope[at..at + len]);
        let outputs = delta[at..at + len]
            .iter_mut()
            .zip(&mut loc_slope[at..at + len])
            .zip(slopes);
        for (((s, q), &z), ((&sigmoid, &l), ((d, ls), (ds, ks)))) in scale
            .iter()
            .zip(q.iter_mut())
            .zip(z)
            .zip(weights.zip(outputs))
        {
            let z = F::lit(f64::from(z));
            let delta = *s * z;
            d.write(delta);
            ds.write(z * sigmoid);
            let w = l + delta;
            let w2 = half * w * w;
            let (t1, t2) = (c1 - w2 * prec1, c2 - w2 * prec2);
            let u = t1 - t2;
            // softplus(-|u|) and sigmoid(-|u|), the smaller responsibility
            let (soft, small) = (-u.abs()).fast_softplus_sigmoid();
            let r1 = if u >= F::zero() {
                F::one() - small
            } else {
                small
            };
            let slope = w * (prec2 + r1 * gap);
            ls.write(slope);
            ks.write(sigmoid * (z * slope) - sigmoid / *s);
            *q = -(half * z * z) - (t1.max(t2) + soft);
        }
        terms.add(sum_lanes(q));
        ln_scale.add(sum_ln(scale));
    }
    (terms.total(), ln_scale.total())
}

impl<F: Element> MultiOp<F> for MeanFieldSample<F> {
    fn name(&self) -> &str {
        "mean_field_sample"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Vec<Tensor<F>>> {
        let (prior_loc, prior_scale) = match self.prior {
            FusedPrior::Normal { loc, scale } => (loc, scale),
            FusedPrior::Mixture(components) => return self.forward_mixture(inputs, components),
        };
        let (loc, rho) = (inputs[0].data(), inputs[1].data());
        let n = rho.len();
        let mut delta = Uninit::new(n);
        let (mut delta_slope, mut kl_slope) = (Uninit::new(n), Uninit::new(n));
        // `par_blocks` makes the same parts as `standard_normal`'s
        // `par_fill`, so the parts draw the same normals.
        let p = SampleParams {
            seed: self.seed,
            shift: self.shift,
            prior_loc,
            inv_scale: F::one() / prior_scale,
        };
        let outputs = (delta.slots(), (delta_slope.slots(), kl_slope.slots()));
        let ((q0, l0), (q1, l1)) = par_blocks(
            outputs,
            n,
            n,
            #[inline(always)]
            |items, outputs| {
                let (loc, rho) = (&loc[items.clone()], &rho[items.clone()]);
                sample_part(p, loc, rho, items.start, outputs)
            },
        );
        // SAFETY: the two parts wrote every element of all three
        let (delta, delta_slope, kl_slope) = unsafe {
            (
                delta.assume_init(),
                delta_slope.assume_init(),
                kl_slope.assume_init(),
            )
        };
        let count = F::from_usize(n).unwrap_or_else(F::nan);
        // sum ln r = sum ln scale - n ln s
        let kl = (q0 + q1) - (l0 + l1) + count * prior_scale.fast_ln();
        let shape = inputs[1].shape().to_vec();
        *self.slopes.borrow_mut() = Some(Slopes {
            delta: Tensor::new_unchecked(delta_slope, shape.clone()),
            kl: Tensor::new_unchecked(kl_slope, shape.clone()),
            loc: None,
        });
        Ok(vec![
            Tensor::new_unchecked(delta, shape),
            Tensor::scalar(kl),
        ])
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        grads: Vec<Option<Tensor<F>>>,
        needs: &[bool],
        acc: &mut [Option<Tensor<F>>],
    ) -> Result<()> {
        let (loc, shape) = (inputs[0].data(), inputs[1].shape());
        // (a mixture prior's slopes in loc were written by forward)
        let (m, prior_scale) = match self.prior {
            FusedPrior::Normal { loc, scale } => (loc, scale),
            FusedPrior::Mixture(_) => (F::zero(), F::one()),
        };
        let mut grads = grads.into_iter();
        let delta_grad = grads.next().flatten();
        let kl_grad = grads.next().flatten().map(|g| g.data()[0]);
        let slopes = self.slopes.borrow();
        let slopes = slopes.as_ref().expect("forward ran before backward");
        let (delta_slope, kl_slope) = (slopes.delta.data(), slopes.kl.data());
        let [loc_acc, rho_acc] = acc else {
            unreachable!("two inputs")
        };
        match (kl_grad, needs[0], &slopes.loc) {
            (Some(c), true, None) => {
                let c_inv2 = c / (prior_scale * prior_scale);
                add_terms(
                    loc_acc,
                    shape,
                    #[inline(always)]
                    |i, out| {
                        for (o, &l) in out.iter_mut().zip(&loc[i..]) {
                            *o = (l - m) * c_inv2;
                        }
                    },
                );
            }
            (Some(c), true, Some(loc_slope)) => {
                let loc_slope = loc_slope.data();
                add_terms(
                    loc_acc,
                    shape,
                    #[inline(always)]
                    |i, out| {
                        for (o, &ls) in out.iter_mut().zip(&loc_slope[i..]) {
                            *o = c * ls;
                        }
                    },
                );
            }
            _ => {}
        }
        if !needs[1] {
            return Ok(());
        }
        // the gradient of rho from each output that got one
        match (delta_grad, kl_grad) {
            // written over delta's gradient (same shape), whose storage
            // becomes it; added into one from other uses of rho
            (Some(mut g), kl_grad) => {
                par_fill(
                    g.data_mut(),
                    #[inline(always)]
                    |i, out| {
                        let len = out.len();
                        let delta_slope = &delta_slope[i..i + len];
                        match kl_grad {
                            Some(c) => {
                                let slopes = delta_slope.iter().zip(&kl_slope[i..i + len]);
                                for (o, (&ds, &ks)) in out.iter_mut().zip(slopes) {
                                    *o = *o * ds + c * ks;
                                }
                            }
                            None => {
                                for (o, &ds) in out.iter_mut().zip(delta_slope) {
                                    *o = *o * ds;
                                }
                            }
                        }
                    },
                );
                match rho_acc {
                    Some(acc) => acc.add_assign(&g),
                    None => *rho_acc = Some(g),
                }
            }
            (None, Some(c)) => add_terms(
                rho_acc,
                shape,
                #[inline(always)]
                |i, out| {
                    for (o, &ks) in out.iter_mut().zip(&kl_slope[i..]) {
                        *o = c * ks;
                    }
                },
            ),
            // backward runs only for an output with a gradient
            (None, None) => {}
        }
        Ok(())
    }
}

impl<F: Element> MeanFieldSample<F> {
    /// [`MultiOp::forward`] for a mixture prior ([`sample_part_mixture`]).
    fn forward_mixture(
        &self,
        inputs: &[&Tensor<F>],
        components: [(F, F); 2],
    ) -> Result<Vec<Tensor<F>>> {
        let (loc, rho) = (inputs[0].data(), inputs[1].data());
        let n = rho.len();
        let (mut delta, mut loc_slope) = (Uninit::new(n), Uninit::new(n));
        let (mut delta_slope, mut kl_slope) = (Uninit::new(n), Uninit::new(n));
        let p = (self.seed, self.shift, SpikeSlabTerms::new(components));
        let outputs = (
            (delta.slots(), loc_slope.slots()),
            (delta_slope.slots(), kl_slope.slots()),
        );
        // the same parts as `standard_normal`'s, so the same normals
        let ((q0, l0), (q1, l1)) = par_blocks(
            outputs,
            n,
            n,
            #[inline(always)]
            |items, outputs| {
                let (loc, rho) = (&loc[items.clone()], &rho[items.clone()]);
                sample_part_mixture(p, loc, rho, items.start, outputs)
            },
        );
        // SAFETY: the two parts wrote every element of all four
        let (delta, loc_slope, delta_slope, kl_slope) = unsafe {
            (
                delta.assume_init(),
                loc_slope.assume_init(),
                delta_slope.assume_init(),
                kl_slope.assume_init(),
            )
        };
        let kl = (q0 + q1) - (l0 + l1);
        let shape = inputs[1].shape().to_vec();
        *self.slopes.borrow_mut() = Some(Slopes {
            delta: Tensor::new_unchecked(delta_slope, shape.clone()),
            kl: Tensor::new_unchecked(kl_slope, shape.clone()),
            loc: Some(Tensor::new_unchecked(loc_slope, shape.clone())),
        });
        Ok(vec![
            Tensor::new_unchecked(delta, shape),
            Tensor::scalar(kl),
        ])
    }
}

impl<F: Element> FusedPrior<F> {
    /// `pi N(0, spike) + (1 - pi) N(0, slab)`, its components' `ln w - ln s`
    /// computed in `f64` and rounded once.
    pub(crate) fn spike_and_slab(pi: f64, spike: f64, slab: f64) -> Self {
        let component = |ln_w: f64, s: f64| (F::lit(ln_w - s.ln()), F::lit(1.0 / s));
        FusedPrior::Mixture([component(pi.ln(), spike), component((-pi).ln_1p(), slab)])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// One draw of the weight perturbation of a mean-field Normal posterior
    /// with mean `self` and scale `softplus(rho) + shift`, and its
    /// divergence from `prior`: `(delta, kl)` (see [`MeanFieldSample`]).
    /// For a Normal prior `kl` is the summed KL; for a spike-and-slab one,
    /// whose divergence has no closed form, the single-sample estimate
    /// `Σ_i ln q(w_i) - ln p(w_i)` at the drawn weights `w = self + delta`
    /// (what [`kl_from_sample`](crate::distributions::kl::kl_from_sample)
    /// gives at that draw, see [`SpikeSlabTerms`]). `seed` picks the
    /// normals.
    pub(crate) fn mean_field_sample(
        self,
        rho: Self,
        shift: F,
        prior: FusedPrior<F>,
        seed: u64,
    ) -> Result<(Self, Self)> {
        if rho.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "mean_field_sample",
                lhs: self.shape(),
                rhs: rho.shape(),
            });
        }
        let op = MeanFieldSample {
            seed,
            shift,
            prior,
            slopes: RefCell::new(None),
        };
        match self.tape.apply_multi(Box::new(op), &[self, rho])?[..] {
            [delta, kl] => Ok((delta, kl)),
            _ => unreachable!("two outputs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FusedPrior;
    use crate::autodiff::gradcheck::{GradCheck, gradcheck};
    use crate::autodiff::tape::{Tape, Var};
    use crate::tensor::standard_normal;
    use crate::tensor::{Element, Tensor};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// Posterior means, standard normal.
    fn loc_of(n: usize, seed: u64) -> Tensor<f64> {
        standard_normal(&[n], &mut SmallRng::seed_from_u64(seed))
    }

    #[test]
    fn sum_ln_matches_the_plain_sum_including_special_values() {
        let plain = |x: &[f64]| x.iter().map(|v| v.ln()).sum::<f64>();
        // long and short, with a ragged end
        for n in [5, 37, 1000, 3 * crate::kernels::parallel::PARALLEL_MIN + 13] {
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

    const SHIFT: f64 = 1e-5;

    /// `N(m, s)` as the fused op's prior.
    fn normal<F: Element>((loc, scale): (F, F)) -> FusedPrior<F> {
        FusedPrior::Normal { loc, scale }
    }

    /// `pi N(0, spike) + (1 - pi) N(0, slab)` as the fused op's prior.
    fn spike_slab<F: Element>((pi, spike, slab): (f64, f64, f64)) -> FusedPrior<F> {
        FusedPrior::spike_and_slab(pi, spike, slab)
    }

    /// `rho` spread over the range posteriors use (scales 0.02 to 2).
    fn rho_of(n: usize, seed: u64) -> Tensor<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        standard_normal::<f64>(&[n], &mut rng).map(|z| -2.0 + 1.5 * z)
    }

    /// `(delta, kl)` composed from the generic ops, with the normals
    /// `standard_normal` draws for `seed`.
    fn composed<'t>(
        loc: Var<'t, f64>,
        rho: Var<'t, f64>,
        (m, s): (f64, f64),
        seed: u64,
    ) -> (Var<'t, f64>, Var<'t, f64>) {
        let eps = standard_normal(&loc.shape(), &mut SeededOnce(Some(seed)));
        let scale = rho.softplus_shift(SHIFT);
        let delta = scale * loc.tape.constant(eps);
        let (r, d) = (scale * (1.0 / s), (loc - m) * (1.0 / s));
        let kl = ((r.square() + d.square() - 1.0) * 0.5 - r.ln()).sum();
        (delta, kl)
    }

    /// An RNG whose first `next_u64` is a given seed.
    struct SeededOnce(Option<u64>);
    impl rand::TryRng for SeededOnce {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.try_next_u64()? as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(self.0.take().expect("one seed"))
        }
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
            unreachable!()
        }
    }

    fn max_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
        a.data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
            .fold(0.0, f64::max)
    }

    /// Two `(delta, kl)` of the same draw agree: the same draws, the KL
    /// and the gradients of `loc` and `rho` within `tol` (relative), with
    /// `loc` also used elsewhere (the op adds into that gradient) and `rho`
    /// too or not (the op adds into its gradient or makes it).
    fn assert_agree<'t>(
        what: &str,
        (l, r, wc): (Var<'t, f64>, Var<'t, f64>, Var<'t, f64>),
        (delta1, kl1): (Var<'t, f64>, Var<'t, f64>),
        (delta2, kl2): (Var<'t, f64>, Var<'t, f64>),
        tol: f64,
    ) {
        assert_eq!(delta1.value(), delta2.value(), "{what}: the same draws");
        let (v1, v2) = (kl1.item().unwrap(), kl2.item().unwrap());
        assert!((v1 - v2).abs() <= tol * v1.abs(), "{what}: {v1} vs {v2}");
        for rho_elsewhere in [false, true] {
            let other = match rho_elsewhere {
                false => (l * wc).sum(),
                true => (l * wc).sum() + (r * wc).sum(),
            };
            let loss1 = (delta1 * wc).sum() + kl1 * 3.0 + other;
            let loss2 = (delta2 * wc).sum() + kl2 * 3.0 + other;
            let (g1, g2) = (loss1.backward().unwrap(), loss2.backward().unwrap());
            for var in [l, r] {
                let worst = max_diff(g1.get(var).unwrap(), g2.get(var).unwrap());
                assert!(worst < tol, "{what}: gradient differs by {worst}");
            }
        }
    }

    #[test]
    fn fused_sample_equals_the_composed_graph() {
        // long enough for the two-thread path, plus a short one
        for n in [37, 70_001] {
            let loc = loc_of(n, 3);
            let rho = rho_of(n, 4);
            let w = Tensor::from_fn(&[n], |i| ((i % 7) as f64 - 3.0) * 0.1);
            let (prior, seed) = ((0.3, 2.0), 99);
            let tape = Tape::new();
            let (l, r) = (tape.var(loc), tape.var(rho));
            let wc = tape.constant(w);
            let composed = composed(l, r, prior, seed);
            let fused = l.mean_field_sample(r, SHIFT, normal(prior), seed).unwrap();
            assert_agree(&format!("n = {n}"), (l, r, wc), composed, fused, 1e-12);
        }
    }

    #[test]
    fn in_f32_the_fused_sample_agrees_with_the_composed_graph() {
        // the element type of the layers in practice, where softplus and
        // sigmoid are the vectorized f32 polynomials (sharing one exp in
        // backward); one thread and two
        for n in [300, 70_001] {
            let to32 = |t: Tensor<f64>| {
                Tensor::<f32>::from_vec(t.data().iter().map(|&x| x as f32).collect(), t.shape())
                    .unwrap()
            };
            let (loc, rho) = (to32(loc_of(n, 12)), to32(rho_of(n, 13)));
            let w = Tensor::<f32>::from_fn(&[n], |i| ((i % 5) as f32 - 2.0) * 0.3);
            let (seed, shift) = (7, SHIFT as f32);
            let tape = Tape::<f32>::new();
            let (l, r, wc) = (tape.var(loc), tape.var(rho), tape.constant(w));
            let eps = standard_normal(&[n], &mut SeededOnce(Some(seed)));
            let scale = r.softplus_shift(shift);
            let delta1 = scale * tape.constant(eps);
            let kl1 = ((scale.square() + (l - 0.1).square() - 1.0) * 0.5 - scale.ln()).sum();
            let (delta2, kl2) = l
                .mean_field_sample(r, shift, normal((0.1, 1.0)), seed)
                .unwrap();
            assert_eq!(delta1.value(), delta2.value(), "n = {n}: the same draws");
            let (v1, v2) = (kl1.item().unwrap(), kl2.item().unwrap());
            assert!((v1 - v2).abs() <= 1e-5 * v1.abs(), "n = {n}: {v1} vs {v2}");
            let loss1 = (delta1 * wc).sum() + kl1 * 0.01 + (l * wc).sum();
            let loss2 = (delta2 * wc).sum() + kl2 * 0.01 + (l * wc).sum();
            let (g1, g2) = (loss1.backward().unwrap(), loss2.backward().unwrap());
            for var in [l, r] {
                let (a, b) = (g1.get(var).unwrap(), g2.get(var).unwrap());
                let worst = a
                    .data()
                    .iter()
                    .zip(b.data())
                    .map(|(&x, &y)| f64::from((x - y).abs() / (1e-3 + x.abs())))
                    .fold(0.0, f64::max);
                assert!(
                    worst < 1e-5,
                    "n = {n}: gradient differs by {worst} (relative)"
                );
            }
        }
    }

    #[test]
    fn either_output_alone_carries_its_gradient() {
        let loc = loc_of(50, 6);
        let rho = rho_of(50, 7);
        let (prior, seed) = ((0.0, 1.0), 5);
        let tape = Tape::new();
        let (l, r) = (tape.var(loc), tape.var(rho));
        let (delta1, kl1) = composed(l, r, prior, seed);
        let (delta2, kl2) = l.mean_field_sample(r, SHIFT, normal(prior), seed).unwrap();
        // the divergence alone (the KL output is the root of backward)
        let (g1, g2) = (kl1.backward().unwrap(), kl2.backward().unwrap());
        for var in [l, r] {
            assert!(max_diff(g1.get(var).unwrap(), g2.get(var).unwrap()) < 1e-12);
        }
        // the perturbation alone: no gradient for loc, as in the composed graph
        let (g1, g2) = (
            delta1.square().sum().backward().unwrap(),
            delta2.square().sum().backward().unwrap(),
        );
        assert!(g1.get(l).is_none() && g2.get(l).is_none());
        assert!(max_diff(g1.get(r).unwrap(), g2.get(r).unwrap()) < 1e-12);
    }

    #[test]
    fn fused_sample_passes_gradcheck() {
        let loc = loc_of(12, 5);
        let rho = rho_of(12, 8);
        let w = Tensor::from_fn(&[12], |i| 0.5 - 0.1 * i as f64);
        gradcheck(
            |tape, v| {
                let (delta, kl) = v[0].mean_field_sample(v[1], SHIFT, normal((0.3, 0.7)), 17)?;
                Ok((delta * tape.constant(w.clone())).sum() + kl)
            },
            &[loc, rho],
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("gradcheck of mean_field_sample failed: {e}"));
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_settings::persisted(64, "proptest-regressions/meanfield.txt"))]

        /// Non-negative, zero when the posterior is the prior, equal to the
        /// composed graph, with its gradients, for any posterior and prior.
        #[test]
        fn fused_sample_matches_the_composed_graph_and_its_kl_is_non_negative(
            post in proptest::collection::vec((-4.0..4.0f64, -6.0..3.0f64), 1..40),
            m in -2.0..2.0f64,
            s in 0.1..3.0f64,
            seed in 0..1000u64,
        ) {
            let n = post.len();
            let loc = Tensor::from_vec(post.iter().map(|p| p.0).collect(), &[n]).unwrap();
            let rho = Tensor::from_vec(post.iter().map(|p| p.1).collect(), &[n]).unwrap();
            let tape = Tape::new();
            let (l, r) = (tape.var(loc), tape.var(rho));
            let (delta1, kl1) = composed(l, r, (m, s), seed);
            let (delta2, kl2) = l.mean_field_sample(r, SHIFT, normal((m, s)), seed).unwrap();
            let (v1, v2) = (kl1.item().unwrap(), kl2.item().unwrap());
            proptest::prop_assert!(v2 >= 0.0 && (v1 - v2).abs() <= 1e-10 * (1.0 + v1.abs()));
            let (g1, g2) = ((delta1.sum() + kl1).backward().unwrap(), (delta2.sum() + kl2).backward().unwrap());
            for var in [l, r] {
                proptest::prop_assert!(max_diff(g1.get(var).unwrap(), g2.get(var).unwrap()) <= 1e-10);
            }
            // the posterior at the prior (rho with softplus(rho) + shift = s)
            let rho_s = (s - SHIFT).exp_m1().ln();
            let at_prior = tape.var(Tensor::full(&[n], m))
                .mean_field_sample(tape.var(Tensor::full(&[n], rho_s)), SHIFT, normal((m, s)), seed).unwrap().1;
            proptest::prop_assert!(at_prior.item().unwrap().abs() < 1e-9);
        }
    }

    /// `(delta, kl)` composed from the distributions: the weights
    /// `w = loc + delta` of the normals `standard_normal` draws for `seed`,
    /// and `Σ ln q(w) - ln p(w)` for the posterior `N(loc, scale)` and the
    /// spike-and-slab prior `(pi, spike, slab)`.
    fn composed_spike_slab<'t>(
        loc: Var<'t, f64>,
        rho: Var<'t, f64>,
        (pi, spike, slab): (f64, f64, f64),
        seed: u64,
    ) -> (Var<'t, f64>, Var<'t, f64>) {
        use crate::distributions::{Distribution, Normal, SpikeAndSlab};
        let tape = loc.tape;
        let eps = standard_normal(&loc.shape(), &mut SeededOnce(Some(seed)));
        let scale = rho.softplus_shift(SHIFT);
        let delta = scale * tape.constant(eps);
        let w = loc + delta;
        let q = Normal::new(loc, scale).unwrap();
        let p = SpikeAndSlab::new(tape.scalar(pi), tape.scalar(spike), tape.scalar(slab)).unwrap();
        let kl = (q.log_prob(w).unwrap() - p.log_prob(w).unwrap()).sum();
        (delta, kl)
    }

    #[test]
    fn spike_slab_sample_equals_the_composed_estimate() {
        // TFP's default and a narrow slab with a light spike; one thread and two
        for (n, prior) in [(37, (0.5, 1.0, 2000.0)), (70_001, (0.2, 0.05, 1.5))] {
            let (loc, rho) = (loc_of(n, 21), rho_of(n, 22));
            let w = Tensor::from_fn(&[n], |i| ((i % 7) as f64 - 3.0) * 0.1);
            let seed = 5;
            let tape = Tape::new();
            let (l, r, wc) = (tape.var(loc), tape.var(rho), tape.constant(w));
            let (delta1, kl1) = composed_spike_slab(l, r, prior, seed);
            let (delta2, kl2) = l
                .mean_field_sample(r, SHIFT, spike_slab(prior), seed)
                .unwrap();
            let what = format!("n = {n}");
            assert_agree(&what, (l, r, wc), (delta1, kl1), (delta2, kl2), 1e-11);
            // the divergence alone
            let (g1, g2) = (kl1.backward().unwrap(), kl2.backward().unwrap());
            for var in [l, r] {
                assert!(max_diff(g1.get(var).unwrap(), g2.get(var).unwrap()) < 1e-11);
            }
        }
    }

    #[test]
    fn spike_slab_sample_passes_gradcheck() {
        let loc = loc_of(12, 25).map(|v| 3.0 * v);
        let rho = rho_of(12, 26);
        let w = Tensor::from_fn(&[12], |i| 0.5 - 0.1 * i as f64);
        for prior in [(0.5, 1.0, 2000.0), (0.9, 2.0, 0.1)] {
            gradcheck(
                |tape, v| {
                    let (delta, kl) = v[0].mean_field_sample(v[1], SHIFT, spike_slab(prior), 3)?;
                    Ok((delta * tape.constant(w.clone())).sum() + kl)
                },
                &[loc.clone(), rho.clone()],
                &GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("gradcheck at {prior:?} failed: {e}"));
        }
    }

    /// In `f32` the estimate and its gradients agree with the `f64` ones
    /// at the same (rounded) posterior, where the composed graph's `ln q`
    /// takes `(w - loc) / scale`, which keeps only the digits of `w` beyond
    /// `loc`'s (its gradients in `loc` cancel to 0 only approximately).
    #[test]
    fn in_f32_the_spike_slab_sample_agrees_with_f64() {
        let n = 70_001;
        let loc32: Vec<f32> = loc_of(n, 31).data().iter().map(|&v| v as f32).collect();
        let rho32: Vec<f32> = rho_of(n, 32).data().iter().map(|&v| v as f32).collect();
        let weights: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.0) * 0.3).collect();
        let prior = (0.5, 1.0, 2000.0);
        let run = |to: &dyn Fn(&[f32]) -> Vec<f64>| {
            let tape = Tape::<f64>::new();
            let (l, r) = (
                tape.var(Tensor::from_vec(to(&loc32), &[n]).unwrap()),
                tape.var(Tensor::from_vec(to(&rho32), &[n]).unwrap()),
            );
            let (delta, kl) = l.mean_field_sample(r, SHIFT, spike_slab(prior), 9).unwrap();
            let wc = tape.constant(Tensor::from_vec(to(&weights), &[n]).unwrap());
            let g = ((delta * wc).sum() + kl * 0.01).backward().unwrap();
            let grads = [l, r].map(|v| g.get(v).unwrap().data().to_vec());
            (kl.item().unwrap(), grads)
        };
        let tape = Tape::<f32>::new();
        let (l, r) = (
            tape.var(Tensor::from_vec(loc32.clone(), &[n]).unwrap()),
            tape.var(Tensor::from_vec(rho32.clone(), &[n]).unwrap()),
        );
        let (delta, kl) = l
            .mean_field_sample(r, SHIFT as f32, spike_slab(prior), 9)
            .unwrap();
        let wc = tape.constant(Tensor::from_vec(weights.clone(), &[n]).unwrap());
        let g = ((delta * wc).sum() + kl * 0.01).backward().unwrap();
        let (want, want_grads) = run(&|v| v.iter().map(|&x| f64::from(x)).collect());
        let got = f64::from(kl.item().unwrap());
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
        for (var, want) in [l, r].into_iter().zip(want_grads) {
            let worst = g
                .get(var)
                .unwrap()
                .data()
                .iter()
                .zip(&want)
                .map(|(&x, &y)| (f64::from(x) - y).abs() / (1e-3 + y.abs()))
                .fold(0.0, f64::max);
            assert!(worst < 1e-5, "gradient differs by {worst} (relative)");
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_settings::persisted(64, "proptest-regressions/meanfield.txt"))]

        /// Equal to the composed estimate, with its gradients, for any
        /// posterior and spike-and-slab prior.
        #[test]
        fn spike_slab_sample_matches_the_composed_estimate(
            post in proptest::collection::vec((-4.0..4.0f64, -6.0..3.0f64), 1..40),
            pi in 0.01..0.99f64,
            spike in 0.01..3.0f64,
            slab in 0.01..3000.0f64,
            seed in 0..1000u64,
        ) {
            let n = post.len();
            let loc = Tensor::from_vec(post.iter().map(|p| p.0).collect(), &[n]).unwrap();
            let rho = Tensor::from_vec(post.iter().map(|p| p.1).collect(), &[n]).unwrap();
            let tape = Tape::new();
            let (l, r) = (tape.var(loc), tape.var(rho));
            let (delta1, kl1) = composed_spike_slab(l, r, (pi, spike, slab), seed);
            let (delta2, kl2) = l.mean_field_sample(r, SHIFT, spike_slab((pi, spike, slab)), seed).unwrap();
            let (v1, v2) = (kl1.item().unwrap(), kl2.item().unwrap());
            proptest::prop_assert!((v1 - v2).abs() <= 1e-10 * (1.0 + v1.abs()), "{} vs {}", v1, v2);
            let (g1, g2) = ((delta1.sum() + kl1).backward().unwrap(), (delta2.sum() + kl2).backward().unwrap());
            for var in [l, r] {
                let worst = max_diff(g1.get(var).unwrap(), g2.get(var).unwrap());
                proptest::prop_assert!(worst <= 1e-9, "gradient differs by {}", worst);
            }
        }
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let tape = Tape::<f64>::new();
        let (l, r) = (tape.var(Tensor::zeros(&[3])), tape.var(Tensor::ones(&[4])));
        assert!(
            l.mean_field_sample(r, SHIFT, normal((0.0, 1.0)), 0)
                .is_err()
        );
    }
}
