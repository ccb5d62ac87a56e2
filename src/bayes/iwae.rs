//! The importance-weighted bound (IWAE; Burda, Grosse and Salakhutdinov
//! 2016) over a network's weights, with `K` posterior samples evaluated in
//! one pass along a sample axis.
//!
//! A pass in [`SampleMode::SampleAxis`](crate::SampleMode::SampleAxis)`(K)` takes the minibatch tiled `K`
//! times ([`Iwae::tile`]: rows `k·B .. (k+1)·B` are copy `k`); each
//! variational layer draws `K` weight samples `w_k`, sends block `k`
//! through `w_k` (one batched product for a dense layer) and registers
//! `r_k = ln q(w_k) − ln p(w_k)` per sample. With the minibatch
//! log-likelihood `ℓ_k = Σ_b ln p(y_b | x_b, w_k)` of each sample and the
//! KL share `π_i` of the [`KlWeight`]:
//!
//! ```text
//! ln w_k = ℓ_k − π_i r_k
//! bound  = ln (1/K) Σ_k exp(ln w_k)          (shifted log-sum-exp)
//! loss   = −bound / B
//! ```
//!
//! **Relation to the ELBO weightings.** In expectation the bound is a lower
//! bound on `ln E_q[p(y_i | w) (p(w)/q(w))^π_i]`, the minibatch likelihood
//! under the prior and posterior tempered by the batch's share `π_i`, and
//! it tends to it as `K` grows. With `K = 1`
//! the loss is [`Elbo::loss`](crate::Elbo::loss) with the KL estimated at
//! the sample (`(NLL + π_i r) / B`); by Jensen's inequality, for every
//! draw the bound is at least the mean of the `K` single-sample ELBOs
//! ([`IwaeLoss::elbo`]), and its expectation rises with `K`. With the
//! whole training set in one batch (`π = 1`) it is the IWAE lower bound on
//! `ln p(D)`. With many minibatches the weight per batch is `π_i` (one KL
//! per epoch in total), so the sum of the batch bounds is at least the
//! ELBO but is not in general a bound on `ln p(D)`; and since `ℓ_k` sums a whole
//! batch, the weights of a large batch concentrate on one sample
//! ([`IwaeLoss::effective_samples`] shows how many carry weight).
//!
//! **At test time** the same estimator with the posterior as proposal
//! gives the usual predictive log-likelihood of each test point,
//! `ln (1/K) Σ_k p(y | x, w_k)` ([`log_mean_exp`]), from one pass.
//!
//! ```
//! use bayesgrad::prelude::*;
//! let mut store = ParamStore::<f64>::new();
//! let mut rng = StdRng::seed_from_u64(0);
//! let net = Sequential::new()
//!     .push(DenseFlipout::new(&mut store, "hidden", 3, 8, &mut rng)?)
//!     .push(Activation::Relu)
//!     .push(DenseFlipout::new(&mut store, "out", 8, 1, &mut rng)?);
//! let (x, y) = (Tensor::zeros(&[4, 3]), Tensor::zeros(&[4]));
//! let k = 8;
//! let tape = Tape::new();
//! let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::SampleAxis(k));
//! let x = Iwae::tile(tape.constant(x), k)?; // [8 * 4, 3]
//! let y = Iwae::tile(tape.constant(y), k)?; // [8 * 4]
//! let mean = net.forward(&mut cx, x)?.reshape(&[k * 4])?;
//! let likelihood = Normal::new(mean, tape.scalar(0.5))?;
//! let iwae = Iwae::new(KlWeight::PerExample { num_examples: 400 });
//! let batch = Batch { index: 0, size: 4, step: 0 };
//! let out = iwae.loss_from_likelihood(cx.divergences(), &likelihood, y, batch)?;
//! assert!(out.bound >= out.elbo); // Jensen, for every draw
//! let grads = out.loss.backward()?;
//! # let _ = grads;
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::tape::Var;
use crate::bayes::elbo::{Batch, Elbo, KlWeight, log_prob_of_targets};
use crate::bayes::forward::Divergences;
use crate::distributions::Distribution;
use crate::error::{Error, Result};
use crate::tensor::Element;

/// The importance-weighted objective with a [`KlWeight`].
///
/// See the [module](self) for a full pass; the weights of the bound come
/// from the same [`KlWeight`] as the ELBO's:
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let mut d = Divergences::per_sample(&tape, 2)?;
/// d.add_log_ratio("w", tape.constant(Tensor::vector(&[1.0, 3.0])))?;
/// // two samples of a batch of one: log-likelihoods -1 and -2
/// let ll = tape.constant(Tensor::vector(&[-1.0, -2.0]));
/// let iwae = Iwae::new(KlWeight::PerExample { num_examples: 1 });
/// let out = iwae.loss(&d, ll, Batch { index: 0, size: 1, step: 0 })?;
/// let want = (((-2f64).exp() + (-5f64).exp()) / 2.0).ln();
/// assert!((out.bound - want).abs() < 1e-12);
/// assert_eq!(out.elbo, -3.5);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Iwae {
    elbo: Elbo,
}

/// The loss and its parts, for logging.
#[derive(Debug)]
pub struct IwaeLoss<'t, F: Element> {
    /// `−bound / B`, to differentiate.
    pub loss: Var<'t, F>,
    /// The bound per example, `ln (1/K) Σ_k w_k / B`.
    pub bound: F,
    /// The mean of the `K` single-sample ELBOs per example, `mean_k ln w_k / B`
    /// (never above `bound`).
    pub elbo: F,
    /// The effective number of samples `1 / Σ_k ŵ_k²` of the normalized
    /// weights `ŵ`: from 1 (one sample carries all the weight) to `K`.
    pub effective_samples: F,
    /// The number of samples `K`.
    pub samples: usize,
}

impl<F: Element> std::fmt::Display for IwaeLoss<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loss {:.5} (bound {:.5}, elbo {:.5}, effective samples {:.2} of {})",
            -self.bound, self.bound, self.elbo, self.effective_samples, self.samples
        )
    }
}

impl Iwae {
    /// The bound with the given KL weighting.
    pub fn new(weighting: KlWeight) -> Self {
        Iwae {
            elbo: Elbo::new(weighting),
        }
    }

    /// The weighting.
    pub fn weighting(&self) -> KlWeight {
        self.elbo.weighting()
    }

    /// `K` copies of `x` stacked along its first axis: `[B, ...]` becomes
    /// `[K * B, ...]`, copy `k` in rows `k·B .. (k+1)·B`. The gradient of
    /// `x` sums the copies'.
    ///
    /// # Errors
    /// `k = 0` or a scalar `x`.
    pub fn tile<'t, F: Element>(x: Var<'t, F>, k: usize) -> Result<Var<'t, F>> {
        let shape = x.shape();
        if k == 0 || shape.is_empty() {
            return Err(Error::invalid(
                "Iwae::tile",
                format!(
                    "needs K >= 1 copies of a var with a batch axis; got K = {k}, shape {shape:?}"
                ),
            ));
        }
        let mut tiled = shape.clone();
        tiled.insert(0, k);
        let mut rows = shape;
        rows[0] *= k;
        x.unsqueeze(0)?.broadcast_to(&tiled)?.reshape(&rows)
    }

    /// The loss from the log-likelihood of every row of a pass with a
    /// sample axis: `log_lik` is `[K * B]` (rows in [`Iwae::tile`]'s
    /// order) or `[K, B]`, and `divergences` the pass's per-sample terms.
    ///
    /// # Errors
    /// Divergences of a pass without a sample axis, or with a term that is
    /// not per sample; `log_lik` of another shape or tape; a batch size
    /// other than `B`; a non-finite bound. All name what they found.
    pub fn loss<'t, F: Element>(
        &self,
        divergences: &Divergences<'t, F>,
        log_lik: Var<'t, F>,
        batch: Batch,
    ) -> Result<IwaeLoss<'t, F>> {
        const OP: &str = "Iwae::loss";
        if !std::ptr::eq(log_lik.tape(), divergences.tape()) {
            return Err(Error::ForeignTape { op: OP });
        }
        let Some(k) = divergences.samples() else {
            return Err(Error::invalid(
                OP,
                "the pass has no sample axis: run it with SampleMode::SampleAxis(K), or use Elbo::loss",
            ));
        };
        if k == 0 {
            return Err(Error::invalid(OP, "a sample axis needs K >= 1 samples"));
        }
        if let Some((name, v)) = divergences.vars().iter().find(|(_, v)| v.shape() != [k]) {
            return Err(Error::invalid(
                OP,
                format!(
                    "divergence '{name}' has shape {:?}, not one log ratio per sample [{k}]",
                    v.shape()
                ),
            ));
        }
        let b = batch.size;
        let shape = log_lik.shape();
        if shape != [k * b] && shape != [k, b] {
            return Err(Error::invalid(
                OP,
                format!(
                    "the log-likelihood has shape {shape:?}; {k} samples of a batch of {b} need [{}] or [{k}, {b}]",
                    k * b
                ),
            ));
        }
        let pi = self.elbo.pi(batch)?;
        let per_sample = log_lik.reshape(&[k, b])?.sum_axis(1, false)?;
        let ratio = divergences.log_ratio().expect("a pass with a sample axis");
        let log_w = per_sample - ratio * F::lit(pi);
        let lse = log_w.logsumexp(0, false)?;
        let bound = lse - F::lit((k as f64).ln());
        let loss = bound * F::lit(-1.0 / b as f64);
        let (bound_value, w) = (bound.item()?, log_w.value());
        if !bound_value.is_finite() {
            return Err(Error::invalid(
                OP,
                format!("the bound is {bound_value} (log weights {:?})", w.data()),
            ));
        }
        let mean = w.sum_all() / F::lit(k as f64);
        // normalized weights from the shifted log weights
        let m = w.data().iter().fold(F::neg_infinity(), |a, &x| a.max(x));
        let e: Vec<F> = w.data().iter().map(|&x| (x - m).exp()).collect();
        let z: F = e.iter().fold(F::zero(), |a, &x| a + x);
        let sq = e.iter().fold(F::zero(), |a, &x| a + (x / z) * (x / z));
        let per = F::lit(1.0 / b as f64);
        Ok(IwaeLoss {
            loss,
            bound: bound_value * per,
            elbo: mean * per,
            effective_samples: F::one() / sq,
            samples: k,
        })
    }

    /// [`Iwae::loss`] with `log_lik = likelihood.log_prob(y)` for tiled
    /// targets `y` (`[K * B]`, see [`Iwae::tile`]).
    ///
    /// # Errors
    /// A log-prob whose shape is not the likelihood's batch shape (the
    /// targets broadcast it up) or whose leading size is not `K * B`, and
    /// those of [`Iwae::loss`].
    pub fn loss_from_likelihood<'t, F: Element>(
        &self,
        divergences: &Divergences<'t, F>,
        likelihood: &dyn Distribution<'t, F>,
        y: Var<'t, F>,
        batch: Batch,
    ) -> Result<IwaeLoss<'t, F>> {
        let Some(k) = divergences.samples() else {
            return Err(Error::invalid(
                "Iwae::loss_from_likelihood",
                "the pass has no sample axis: run it with SampleMode::SampleAxis(K), or use Elbo::loss_from_likelihood",
            ));
        };
        let rows = (k * batch.size, "K times the batch size");
        let log_prob = log_prob_of_targets("Iwae::loss_from_likelihood", likelihood, y, rows)?;
        self.loss(divergences, log_prob, batch)
    }
}

/// `ln (1/K) Σ_k exp(x_k)` over the sample axis of `values` (`[K * B]` in
/// [`Iwae::tile`]'s row order, or `[K, B]`): `[B]`, by a shifted
/// log-sum-exp. For per-row log-likelihoods of a pass with a sample axis
/// this is the Monte Carlo predictive log-likelihood of each example.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::bayes::iwae::log_mean_exp;
/// let tape = Tape::<f64>::new();
/// // two samples of three examples: rows 0..3 are sample 0
/// let ll = tape.constant(Tensor::vector(&[-1.0, -2.0, -900.0, -1.0, -4.0, -901.0]));
/// let got = log_mean_exp(ll, 2)?.value();
/// let want = ((-2f64).exp() + (-4f64).exp()).ln() - 2f64.ln();
/// assert!((got.data()[1] - want).abs() < 1e-15);
/// assert!(got.data()[2].is_finite());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// `k = 0`, or a shape that is not `k` equal blocks.
pub fn log_mean_exp<F: Element>(values: Var<'_, F>, k: usize) -> Result<Var<'_, F>> {
    let shape = values.shape();
    let n: usize = shape.iter().product();
    let blocks = match shape.as_slice() {
        [rows] if k > 0 && rows.is_multiple_of(k) => *rows / k,
        [kk, b] if *kk == k && k > 0 => *b,
        _ => {
            return Err(Error::invalid(
                "log_mean_exp",
                format!("{n} values of shape {shape:?} are not {k} samples of equal blocks"),
            ));
        }
    };
    let lse = values.reshape(&[k, blocks])?.logsumexp(0, false)?;
    Ok(lse - F::lit((k as f64).ln()))
}
