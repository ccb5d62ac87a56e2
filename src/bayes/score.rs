//! Score-function (REINFORCE) gradients for any distribution with a
//! `log_prob`, with control variates.
//!
//! For `x ~ q_θ` and an objective `f` (the quantity you minimize),
//!
//! ```text
//! ∇θ E[f(x)] = E[ ∇θ f(x) + (f(x) - b) ∇θ ln q_θ(x) ]
//! ```
//!
//! for any baseline `b` that does not depend on `x` (`E[∇θ ln q_θ(x)] = 0`).
//! No reparameterization is needed, so this trains through discrete
//! draws (a mixture assignment, a gate, a binary code). [`ScoreSample`]
//! keeps a draw and its `ln q` on the tape; [`ScoreSample::surrogate`]
//! builds
//!
//! ```text
//! f(x) + c · (ln q(x) - stop(ln q(x))),   c = stop(f(x)) - b
//! ```
//!
//! whose **value is `f(x)`** (the difference is exactly zero) and whose
//! gradient is the estimator above. The baseline enters only as the
//! constant `c`: it is read as plain numbers, so no gradient can flow
//! from the objective into it.
//!
//! Baselines ([`Baseline`]):
//! - [`Baseline::MovingAverage`]: an exponential average of past objectives
//!   (updated after it is used, so it never sees the current draw).
//! - [`Baseline::Learned`]: a var the caller computes from the input (not
//!   from the draw), trained by the separate
//!   [`Surrogate::baseline_loss`] `mean((stop(f) - b)²)`.
//! - [`Baseline::LeaveOneOut`]: with `K >= 2` draws per element, draw `k`'s
//!   baseline is the mean objective of the other `K - 1` draws (RLOO;
//!   Kool, van Hoof, Welling 2019; the VIMCO-style control variate).
//!
//! For a latent-variable model trained on the `K`-sample bound
//! `L = ln (1/K) Σ_k p(x, h_k) / q(h_k)` instead of an objective per draw,
//! [`ScoreSample::vimco`] gives VIMCO's surrogate (Mnih and Rezende 2016),
//! whose per-draw baselines come from the other draws of the same bound.
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::bayes::score::{Baseline, ScoreSample};
//! // minimize E[(b - 0.499)^2] over b ~ Bernoulli(sigmoid(theta))
//! let tape = Tape::<f64>::new();
//! let theta = tape.var(Tensor::scalar(0.0));
//! let q = Bernoulli::from_logits(theta)?;
//! let mut rng = StdRng::seed_from_u64(0);
//! let draw = ScoreSample::draw(&q, Some(8), &mut rng)?;       // 8 draws, shape [8]
//! let f = (draw.value() - 0.499).square();                     // the objective per draw
//! let s = draw.surrogate(f, Baseline::LeaveOneOut)?;
//! let grads = s.loss()?.backward()?;
//! assert!(grads.get(theta).is_some());
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::tape::Var;
use crate::distributions::Distribution;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// An exponential moving average of the objective, kept across steps.
///
/// The baseline used at a step is the average of the steps before it; the
/// current objective's mean is folded in afterwards. The first step has no
/// baseline (0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovingAverage {
    decay: f64,
    value: Option<f64>,
}

impl MovingAverage {
    /// An average that keeps `decay` of its value at each update
    /// (`0 <= decay < 1`; 0.9 to 0.99 are common).
    ///
    /// # Errors
    /// A decay outside `[0, 1)` or not finite.
    pub fn new(decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::invalid(
                "MovingAverage::new",
                format!("decay must be in [0, 1), got {decay}"),
            ));
        }
        Ok(MovingAverage { decay, value: None })
    }

    /// The current average (`None` before the first update).
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    fn update(&mut self, mean: f64) {
        self.value = Some(match self.value {
            None => mean,
            Some(v) => self.decay * v + (1.0 - self.decay) * mean,
        });
    }
}

/// The control variate subtracted from the objective in the score term.
pub enum Baseline<'a, 't, F: Element> {
    /// No baseline (plain REINFORCE; unbiased, high variance).
    None,
    /// A moving average of past objectives, updated by
    /// [`ScoreSample::surrogate`].
    MovingAverage(&'a mut MovingAverage),
    /// A var computed from the input (never from the draw), one value per
    /// batch element or a single value. Its value is read as a constant in
    /// the objective; [`Surrogate::baseline_loss`] trains it.
    Learned(Var<'t, F>),
    /// For `K >= 2` draws per element, each draw's baseline is the mean
    /// objective of the other `K - 1` draws.
    LeaveOneOut,
}

/// The surrogate of a score-function estimate (see the [module docs](self)).
pub struct Surrogate<'t, F: Element> {
    /// One value per batch element, equal to the objective (averaged over
    /// the draws when there is a sample axis), or for
    /// [`ScoreSample::vimco`] to the negative bound; its gradient is the
    /// score-function estimate.
    pub objective: Var<'t, F>,
    /// For a [`Baseline::Learned`]: `mean((stop(f) - b)²)`, whose gradient
    /// reaches only the baseline's own parameters.
    pub baseline_loss: Option<Var<'t, F>>,
}

impl<'t, F: Element> Surrogate<'t, F> {
    /// The scalar to minimize: the objective summed over the batch, plus
    /// the baseline's loss if there is one.
    pub fn loss(&self) -> Result<Var<'t, F>> {
        let total = self.objective.sum();
        match self.baseline_loss {
            None => Ok(total),
            Some(b) => total.try_add(b),
        }
    }
}

/// Draws from a distribution kept together with their log-probability on
/// the tape: the input of a score-function estimate.
pub struct ScoreSample<'t, F: Element> {
    value: Var<'t, F>,
    log_prob: Var<'t, F>,
    samples: Option<usize>,
}

impl<'t, F: Element> ScoreSample<'t, F> {
    /// `samples` draws of `dist` stacked on a new leading axis (`None`: one
    /// draw, no axis), and their `ln q` as one batched node.
    ///
    /// # Errors
    /// `Some(0)` draws; whatever `dist.sample_n` or `dist.log_prob` returns.
    pub fn draw(
        dist: &dyn Distribution<'t, F>,
        samples: Option<usize>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        let value = dist.sample_n(samples, rng)?;
        let value = dist.tape().constant(value);
        let log_prob = dist.log_prob(value)?;
        Ok(ScoreSample {
            value,
            log_prob,
            samples,
        })
    }

    /// The draws, a constant on the tape (shape `[samples] + batch + event`).
    pub fn value(&self) -> Var<'t, F> {
        self.value
    }

    /// `ln q` of the draws (shape `[samples] + batch`).
    pub fn log_prob(&self) -> Var<'t, F> {
        self.log_prob
    }

    /// The number of draws per element (`None`: no sample axis).
    pub fn samples(&self) -> Option<usize> {
        self.samples
    }

    /// The surrogate for the objective `f` (one value per draw, the shape
    /// of [`log_prob`](Self::log_prob), on the same tape), with `baseline`.
    ///
    /// `f` may depend on parameters directly as well (a decoder's, say):
    /// that pathwise gradient is kept. A [`Baseline::MovingAverage`] is
    /// updated with the mean of `f` after it is used.
    ///
    /// # Errors
    /// `f` or a learned baseline from another tape
    /// ([`Error::ForeignTape`]); `f` of the wrong shape or not finite; a
    /// learned baseline whose shape is neither the batch's nor a single
    /// value; [`Baseline::LeaveOneOut`] with fewer than 2 draws. Nothing
    /// (a moving average included) is modified on error.
    pub fn surrogate(
        &self,
        f: Var<'t, F>,
        baseline: Baseline<'_, 't, F>,
    ) -> Result<Surrogate<'t, F>> {
        const OP: &str = "ScoreSample::surrogate";
        let fv = self.per_draw_values(f, OP, "the objective")?;
        let shape = self.log_prob.shape();
        let batch = match self.samples {
            Some(_) => &shape[1..],
            None => &shape[..],
        };
        let (b, baseline_loss) = match baseline {
            Baseline::None => (None, None),
            Baseline::MovingAverage(avg) => {
                let b = avg.value.map(|v| Tensor::scalar(F::lit(v)));
                let mean = fv
                    .data()
                    .iter()
                    .map(|x| x.to_f64().unwrap_or(0.0))
                    .sum::<f64>()
                    / fv.len().max(1) as f64;
                avg.update(mean);
                (b, None)
            }
            Baseline::Learned(b) => {
                if !std::ptr::eq(b.tape(), f.tape()) {
                    return Err(Error::ForeignTape { op: OP });
                }
                let bs = b.shape();
                if bs.as_slice() != batch && bs.iter().product::<usize>() != 1 {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "a learned baseline needs the batch shape {batch:?} or a single value, got shape {bs:?}"
                        ),
                    ));
                }
                let value = b.value();
                let single = value.len() == 1;
                let value = if single { value.reshape(&[])? } else { value };
                // trained towards the objective, which is a constant here
                let target = f.tape().constant(fv.clone());
                let b_var = if single { b.reshape(&[])? } else { b };
                let loss = target.try_sub(b_var)?.square().mean();
                (Some(value), Some(loss))
            }
            Baseline::LeaveOneOut => {
                let k = self.draws_per_element(OP, "the leave-one-out baseline")?;
                (Some(leave_one_out(&fv, k)), None)
            }
        };
        // c = stop(f) - b, broadcast over the draws
        let c = match b {
            None => fv,
            Some(b) => {
                let b = if b.shape() == shape.as_slice() {
                    b
                } else {
                    b.broadcast_to(&shape)?
                };
                fv.zip_map(&b, OP, |f, b| f - b)?
            }
        };
        let lp = self.log_prob;
        let score = lp.try_sub(lp.detach())? * c;
        let term = f.try_add(score)?;
        let objective = match self.samples {
            Some(_) => term.mean_axis(0, false)?,
            None => term,
        };
        Ok(Surrogate {
            objective,
            baseline_loss,
        })
    }

    /// The VIMCO surrogate (Mnih and Rezende 2016) of the `K`-sample bound
    /// `L = ln (1/K) Σ_k e^(f_k)` on the log weights `f_k`, one per draw
    /// (the shape of [`log_prob`](Self::log_prob)): typically
    /// `ln p(x, h_k) - ln q(h_k)`, differentiable in the model's parameters
    /// and in `q`'s.
    ///
    /// The surrogate's `objective` is **`-L`** per batch element, a quantity
    /// to minimize as with [`surrogate`](Self::surrogate), and its gradient
    /// is VIMCO's unbiased estimate of `-∇E[L]`: the pathwise gradient of
    /// `L` through the log weights, plus each draw's score `∇ ln q(h_k)`
    /// times `L - L_-k`, where `L_-k` is the bound with `f_k` replaced by
    /// the mean of the other draws' log weights (a baseline that does not
    /// depend on draw `k`). The coefficients are computed in `f64`, each
    /// log-sum-exp shifted by its own largest term and summed over the
    /// other draws directly, in `O(K)` per batch element.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// use bayesgrad::bayes::score::ScoreSample;
    /// // q(h) = Bernoulli(sigmoid(theta)) for a binary code h of 3 bits;
    /// // the model: ln p(x, h) = -(Σ h - 1)² + const
    /// let tape = Tape::<f64>::new();
    /// let theta = tape.var(Tensor::zeros(&[3]));
    /// let q = Independent::new(Box::new(Bernoulli::from_logits(theta)?), 1)?;
    /// let mut rng = StdRng::seed_from_u64(0);
    /// let draw = ScoreSample::draw(&q, Some(5), &mut rng)?;        // h: [5, 3]
    /// let log_joint = -(draw.value().sum_axis(1, false)? - 1.0).square();
    /// let log_weights = log_joint - draw.log_prob();                 // [5]
    /// let s = draw.vimco(log_weights)?;                             // objective: -L
    /// let bound = log_weights.logsumexp(0, false)?.item()? - 5f64.ln();
    /// assert!((s.objective.item()? + bound).abs() < 1e-12);
    /// assert!(s.loss()?.backward()?.get(theta).is_some());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// Fewer than 2 draws per element, or no sample axis; log weights from
    /// another tape ([`Error::ForeignTape`]), of another shape, or not
    /// finite.
    pub fn vimco(&self, log_weights: Var<'t, F>) -> Result<Surrogate<'t, F>> {
        const OP: &str = "ScoreSample::vimco";
        let k = self.draws_per_element(OP, "VIMCO")?;
        let fv = self.per_draw_values(log_weights, OP, "the log weight")?;
        let c = vimco_coefficients(&fv, k);
        let lp = self.log_prob;
        let score = (lp.try_sub(lp.detach())? * c).sum_axis(0, false)?;
        let bound = log_weights.logsumexp(0, false)? - F::lit((k as f64).ln());
        Ok(Surrogate {
            objective: -bound.try_add(score)?,
            baseline_loss: None,
        })
    }

    /// The values of `f`, checked to be one finite number per draw on this
    /// draw's tape (`what` names them in the error).
    fn per_draw_values(&self, f: Var<'t, F>, op: &'static str, what: &str) -> Result<Tensor<F>> {
        if !std::ptr::eq(f.tape(), self.log_prob.tape()) {
            return Err(Error::ForeignTape { op });
        }
        let fv = f.value();
        let shape = self.log_prob.shape();
        if fv.shape() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: shape,
                rhs: fv.shape().to_vec(),
            });
        }
        if let Some((i, v)) = fv.first_non_finite() {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} is {v:?} at element {i}; a score-function estimate needs finite values"
                ),
            ));
        }
        Ok(fv)
    }

    /// The number of draws per element, refused below 2 (`what` needs them).
    fn draws_per_element(&self, op: &'static str, what: &str) -> Result<usize> {
        match self.samples {
            Some(k) if k >= 2 => Ok(k),
            other => Err(Error::invalid(
                op,
                format!(
                    "{what} needs at least 2 draws per element, got {}",
                    other.map_or("no sample axis".to_string(), |k| k.to_string())
                ),
            )),
        }
    }
}

/// For `f` of shape `[k, rest..]`: the mean of the other draws,
/// `Σ_{j≠i} f_j / (k - 1)`, for each draw `i`.
///
/// Each mean is summed from the other draws alone (those before `i` and
/// those after it), in `f64`, not as the total less `f_i`: that difference
/// keeps `f_i`'s rounding error, which swamps the others when `f_i` is much
/// larger (`f32` `[1e8, 1, 2]` gave draw 0 a baseline of 0 for 1.5),
/// and the total can overflow where no mean does. The terms are divided by
/// `k - 1` first, so that no partial sum exceeds the largest `|f_j|`.
fn leave_one_out<F: Element>(f: &Tensor<F>, k: usize) -> Tensor<F> {
    let means = leave_one_out_means(f.to_f64().data(), k);
    narrowed(means, f.shape())
}

/// `f64` values rounded to `F`, as a tensor of `shape`.
fn narrowed<F: Element>(values: Vec<f64>, shape: &[usize]) -> Tensor<F> {
    Tensor::new_unchecked(
        values.into_iter().map(F::lit).collect::<Vec<_>>(),
        shape.to_vec(),
    )
}

/// [`leave_one_out`] of values `[k, rest..]` in `f64`.
fn leave_one_out_means(values: &[f64], k: usize) -> Vec<f64> {
    let rest = values.len() / k;
    let others = (k - 1) as f64;
    let terms: Vec<f64> = values.iter().map(|x| x / others).collect();
    // the draws before each one, then those after it
    let mut means = vec![0.0; terms.len()];
    let mut sum = vec![0.0; rest];
    for (mean, term) in means.chunks_mut(rest).zip(terms.chunks(rest)) {
        for ((m, s), &t) in mean.iter_mut().zip(&mut sum).zip(term) {
            *m = *s;
            *s += t;
        }
    }
    sum.fill(0.0);
    for (mean, term) in means.chunks_mut(rest).zip(terms.chunks(rest)).rev() {
        for ((m, s), &t) in mean.iter_mut().zip(&mut sum).zip(term) {
            *m += *s;
            *s += t;
        }
    }
    means
}

/// For log weights `f` of shape `[k, rest..]`: VIMCO's `L - L_-i` for
/// each draw `i`, where `L = ln Σ_j e^(f_j)` and `L_-i` is the same with
/// `f_i` replaced by the mean of the other draws' (the `-ln K` of both
/// cancels), in `f64` and `O(k)` per element.
///
/// Each `L_-i` sums the other draws directly (those before `i` and those
/// after it, not the total less draw `i`'s term, which would lose the
/// others beside a dominant draw), shifted by the largest of them: the
/// overall largest `f_j` for every draw but that one, whose own sum is
/// shifted by the largest of the rest, so that draws far below it keep
/// their digits.
fn vimco_coefficients<F: Element>(f: &Tensor<F>, k: usize) -> Tensor<F> {
    let rest = f.len() / k;
    let values = f.to_f64();
    let values = values.data();
    let replaced = leave_one_out_means(values, k);
    let mut out = vec![0.0; values.len()];
    let (mut draws, mut scaled, mut after) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
    for col in 0..rest {
        for (j, d) in draws.iter_mut().enumerate() {
            *d = values[j * rest + col];
        }
        let top = (0..k).fold(0, |best, j| if draws[j] > draws[best] { j } else { best });
        let m = draws[top];
        // e^(f_j - m), the largest exactly 1
        for (s, &d) in scaled.iter_mut().zip(&draws) {
            *s = (d - m).exp();
        }
        let bound = m + scaled.iter().sum::<f64>().ln();
        // `after[j]`: the scaled draws after j
        let mut sum = 0.0;
        for (a, &s) in after.iter_mut().zip(&scaled).rev() {
            *a = sum;
            sum += s;
        }
        let mut before = 0.0;
        for i in 0..k {
            let g = replaced[i * rest + col];
            let swapped = if i == top {
                // the largest draw swapped out in place, and back
                draws[i] = g;
                let s = log_sum_exp(&draws);
                draws[i] = m;
                s
            } else {
                // the others include the largest draw: a sum of at least 1
                m + (before + after[i] + (g - m).exp()).ln()
            };
            out[i * rest + col] = bound - swapped;
            before += scaled[i];
        }
    }
    narrowed(out, f.shape())
}

/// `ln Σ e^(x_i)` of finite values, shifted by the largest.
fn log_sum_exp(x: &[f64]) -> f64 {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + x.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VIMCO's bound and swap-one-out bounds against 50-digit references
    /// (`tests/data/vimco_reference.py`): dominant, tiny, equal, widely
    /// spread and large log weights, 2 to 64 draws.
    #[test]
    fn vimco_bounds_match_the_references() {
        let text = include_str!("../../tests/data/vimco_reference.json");
        let root = crate::json::parse(text.as_bytes()).unwrap();
        let cases = root.get("cases").and_then(|c| c.as_array()).unwrap();
        let numbers = |v: &crate::json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        // to the rounding of the larger of the two bounds a coefficient
        // is the difference of
        let close = |got: f64, want: f64, scale: f64| {
            (got - want).abs() <= 1e-13 * want.abs().max(scale).max(1.0)
        };
        for case in cases {
            let f = numbers(case.get("log_weights").unwrap());
            let k = f.len();
            let bound = log_sum_exp(&f) - (k as f64).ln();
            let want = case.get("bound").unwrap().as_f64().unwrap();
            assert!(close(bound, want, 0.0), "{f:?}: bound {bound} vs {want}");
            let c = vimco_coefficients(&Tensor::from_vec(f.clone(), &[k]).unwrap(), k);
            let swapped = numbers(case.get("swap_one_out").unwrap());
            for (i, (&c, &want)) in c.data().iter().zip(&swapped).enumerate() {
                let got = bound - c;
                assert!(
                    close(got, want, bound.abs()),
                    "{f:?}, draw {i}: {got} vs {want}"
                );
            }
        }
        assert_eq!(cases.len(), 11);
    }

    /// Each draw's baseline is the mean of the others to `f32` rounding,
    /// however large the others are: the total less the draw lost them.
    #[test]
    fn leave_one_out_keeps_the_small_draws_beside_large_ones() {
        // two columns: a cancellation, and a total beyond f32's range
        let f = Tensor::<f32>::from_vec(vec![1.0, 2e38, 1e8, 2e38, -1e8, 1.0, 1.0, 0.0], &[4, 2])
            .unwrap();
        let b = leave_one_out(&f, 4);
        let data = f.data();
        for i in 0..4 {
            for c in 0..2 {
                let others: f64 = (0..4)
                    .filter(|&j| j != i)
                    .map(|j| data[j * 2 + c] as f64)
                    .sum();
                let want = (others / 3.0) as f32;
                assert_eq!(b.data()[i * 2 + c], want, "draw {i}, column {c}");
            }
        }
    }
}
