//! The evidence lower bound with one explicit, documented KL weighting.
//!
//! For a minibatch `i` of `B` examples out of `N` (in `M` minibatches), the
//! loss returned by [`Elbo::loss`] is the **per-example** objective
//!
//! ```text
//! loss = (NLL_i + pi_i * KL) / B
//! ```
//!
//! where `NLL_i` is the summed negative log-likelihood of the minibatch and
//! `KL` is [`Divergences::total`], the sum of every divergence node the
//! layers registered (each counted once). The weightings:
//!
//! | [`KlWeight`] | `pi_i` | KL coefficient in `loss` | corresponds to |
//! |---|---|---|---|
//! | `PerExample { N }` | `B / N` | `1 / N` | TFP's `kl / num_examples` with a mean NLL (the usual Keras recipe) |
//! | `PerBatch { M }` | `1 / M` | `1 / (M B)` | Blundell et al. 2015, eq. 8 split evenly (`pi_i = 1/M`) |
//! | `Blundell { M }` | `2^(M-i) / (2^M - 1)` | `pi_i / B` | Blundell et al. 2015, eq. 9: early batches carry most of the KL |
//! | `Annealed { N, warmup_steps }` | `B/N * min(1, step/warmup)` | | KL warm-up (Bowman et al. 2016; Sønderby et al. 2016) |
//! | `Tempered { N, temperature }` | `T B / N` | `T / N` | a tempered (cold, `T < 1`) posterior |
//!
//! With full minibatches (`N = M B`), `PerExample` and `PerBatch` coincide,
//! and `PerBatch` and `Blundell` both sum to exactly one KL per epoch.

use crate::autodiff::tape::Var;
use crate::bayes::forward::Divergences;
use crate::distributions::Distribution;
use crate::error::{Error, Number, Result};
use crate::tensor::Element;

/// How the KL term is weighted against the minibatch likelihood.
///
/// ```
/// use bayesgrad::prelude::*;
/// let batch = Batch { index: 0, size: 32, step: 0 };
/// // the batch's share of the KL: B / N, 1 / M, or Blundell's 2^(M-i) / (2^M - 1)
/// assert_eq!(Elbo::new(KlWeight::PerExample { num_examples: 3200 }).pi(batch)?, 0.01);
/// assert_eq!(Elbo::new(KlWeight::PerBatch { num_batches: 100 }).pi(batch)?, 0.01);
/// assert_eq!(Elbo::new(KlWeight::Blundell { num_batches: 2 }).pi(batch)?, 2.0 / 3.0);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KlWeight {
    /// `KL / N` per example: TFP's `kl / num_examples`.
    PerExample {
        /// Size of the training set.
        num_examples: usize,
    },
    /// `KL / M` per minibatch (Blundell et al., eq. 8 with `pi_i = 1/M`).
    PerBatch {
        /// Minibatches per epoch.
        num_batches: usize,
    },
    /// `pi_i = 2^(M-i) / (2^M - 1)` for batch `i = 1..M` (Blundell et al., eq. 9).
    Blundell {
        /// Minibatches per epoch.
        num_batches: usize,
    },
    /// `PerExample` scaled by `min(1, (step + 1) / warmup_steps)`.
    Annealed {
        /// Size of the training set.
        num_examples: usize,
        /// Steps over which the weight rises linearly to 1.
        warmup_steps: usize,
    },
    /// `PerExample` scaled by a temperature (`< 1`: a "cold" posterior).
    Tempered {
        /// Size of the training set.
        num_examples: usize,
        /// The temperature `T > 0`.
        temperature: f64,
    },
}

/// Where a minibatch sits in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Position of the minibatch within its epoch, from 0.
    pub index: usize,
    /// Number of examples in it.
    pub size: usize,
    /// Global optimizer step, from 0 (for annealing).
    pub step: usize,
}

/// The loss and its parts, for logging.
#[derive(Debug)]
pub struct ElboLoss<'t, F: Element> {
    /// The per-example loss to differentiate.
    pub loss: Var<'t, F>,
    /// Mean negative log-likelihood per example of the batch.
    pub nll: F,
    /// The total registered divergence (unweighted).
    pub kl: F,
    /// The coefficient of `kl` in `loss`.
    pub kl_weight: F,
}

impl<F: Element> std::fmt::Display for ElboLoss<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loss = self.loss.item().unwrap_or(F::nan());
        write!(
            f,
            "loss {loss:.5} = nll {:.5} + {:.3e} * kl {:.3}",
            self.nll, self.kl_weight, self.kl
        )
    }
}

/// The negative ELBO with a [`KlWeight`].
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let mut divergences = Divergences::new(&tape);
/// divergences.add("layer/kernel_divergence", tape.scalar(60.0))?;
/// let nll_sum = tape.scalar(32.0 * 0.5); // 32 examples, 0.5 nats each
/// let elbo = Elbo::new(KlWeight::PerExample { num_examples: 6000 });
/// let out = elbo.loss(&divergences, nll_sum, Batch { index: 0, size: 32, step: 0 })?;
/// assert!((out.loss.item()? - (0.5 + 60.0 / 6000.0)).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Elbo {
    weighting: KlWeight,
}

impl Elbo {
    /// An ELBO with the given weighting.
    pub fn new(weighting: KlWeight) -> Self {
        Elbo { weighting }
    }

    /// The weighting.
    pub fn weighting(&self) -> KlWeight {
        self.weighting
    }

    /// `pi_i` of a minibatch (the fraction of the KL it carries).
    ///
    /// # Errors
    /// A batch size, `num_examples`, `num_batches` or `warmup_steps` of 0;
    /// a batch index not below `num_batches` (Blundell); a temperature
    /// that is not finite and positive; a batch larger than
    /// `num_examples`, which is most often the number of batches passed as
    /// the size of the training set (a KL weight too large by a factor of
    /// the batch size squared, which would train without a sign of it).
    pub fn pi(&self, batch: Batch) -> Result<f64> {
        let positive = |what: &str, n: usize| {
            if n == 0 {
                Err(Error::invalid("Elbo", format!("{what} must be >= 1")))
            } else {
                Ok(n as f64)
            }
        };
        let b = positive("batch size", batch.size)?;
        // a batch larger than the training set is most often the number of
        // batches passed as `num_examples`: a KL weight too large by the
        // batch size squared, which trains without a sign of it
        let within = |num_examples: usize| {
            if num_examples > 0 && batch.size > num_examples {
                Err(Error::invalid(
                    "Elbo",
                    format!(
                        "a batch of {} examples from a training set of num_examples = {num_examples}: \
                         num_examples is the size of the training set (the number of batches goes \
                         into KlWeight::PerBatch)",
                        batch.size
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match self.weighting {
            KlWeight::PerExample { num_examples }
            | KlWeight::Annealed { num_examples, .. }
            | KlWeight::Tempered { num_examples, .. } => within(num_examples)?,
            KlWeight::PerBatch { .. } | KlWeight::Blundell { .. } => {}
        }
        match self.weighting {
            KlWeight::PerExample { num_examples } => {
                Ok(b / positive("num_examples", num_examples)?)
            }
            KlWeight::PerBatch { num_batches } => Ok(1.0 / positive("num_batches", num_batches)?),
            KlWeight::Blundell { num_batches } => {
                let m = positive("num_batches", num_batches)?;
                if batch.index >= num_batches {
                    return Err(Error::invalid(
                        "Elbo",
                        format!(
                            "batch index {} is not below num_batches {num_batches}",
                            batch.index
                        ),
                    ));
                }
                // 2^(M-i) / (2^M - 1) = 2^-i / (1 - 2^-M), i = index + 1: no overflow for large M
                let i = (batch.index + 1) as f64;
                Ok((-i).exp2() / (1.0 - (-m).exp2()))
            }
            KlWeight::Annealed {
                num_examples,
                warmup_steps,
            } => {
                let ramp =
                    ((batch.step + 1) as f64 / positive("warmup_steps", warmup_steps)?).min(1.0);
                Ok(ramp * b / positive("num_examples", num_examples)?)
            }
            KlWeight::Tempered {
                num_examples,
                temperature,
            } => {
                if !(temperature > 0.0 && temperature.is_finite()) {
                    return Err(Error::invalid(
                        "Elbo",
                        format!("temperature must be > 0, got {}", Number(temperature)),
                    ));
                }
                Ok(temperature * b / positive("num_examples", num_examples)?)
            }
        }
    }

    /// `(nll_sum + pi_i * KL) / B`, with `KL` the sum of the pass's divergence terms
    /// (from [`Forward::divergences`](crate::Forward::divergences)).
    pub fn loss<'t, F: Element>(
        &self,
        divergences: &Divergences<'t, F>,
        nll_sum: Var<'t, F>,
        batch: Batch,
    ) -> Result<ElboLoss<'t, F>> {
        if !std::ptr::eq(nll_sum.tape(), divergences.tape()) {
            return Err(Error::ForeignTape { op: "Elbo::loss" });
        }
        if let Some(k) = divergences.samples() {
            return Err(Error::invalid(
                "Elbo::loss",
                format!(
                    "the pass drew {k} samples along a sample axis; its objective is Iwae::loss (with K = 1 it equals this ELBO)"
                ),
            ));
        }
        let shape = nll_sum.shape();
        if shape.iter().product::<usize>() != 1 {
            return Err(Error::invalid(
                "Elbo::loss",
                format!("the NLL must be one number, the sum over the batch; got shape {shape:?}"),
            ));
        }
        let pi = self.pi(batch)?;
        let b = batch.size as f64;
        let kl = divergences.total();
        let nll_sum = nll_sum.sum();
        let loss = (nll_sum + kl * F::lit(pi)) * F::lit(1.0 / b);
        Ok(ElboLoss {
            loss,
            nll: nll_sum.item()? / F::lit(b),
            kl: kl.item()?,
            kl_weight: F::lit(pi / b),
        })
    }

    /// [`Elbo::loss`] with `nll_sum = -sum(likelihood.log_prob(y))`.
    ///
    /// # Errors
    /// When the log-prob's shape is not the likelihood's batch shape (the
    /// targets broadcast it up: a `[B, 1]` mean against `[B]` targets gives
    /// a `[B, B]` log-prob, a silently wrong loss), or its leading size is
    /// not `batch.size`; both shapes are named. Targets with extra sample
    /// axes go through [`Elbo::loss`] with an NLL of your own.
    pub fn loss_from_likelihood<'t, F: Element>(
        &self,
        divergences: &Divergences<'t, F>,
        likelihood: &dyn Distribution<'t, F>,
        y: Var<'t, F>,
        batch: Batch,
    ) -> Result<ElboLoss<'t, F>> {
        let rows = (batch.size, "the batch size");
        let log_prob = log_prob_of_targets("Elbo::loss_from_likelihood", likelihood, y, rows)?;
        self.loss(divergences, -log_prob.sum(), batch)
    }
}

/// `likelihood.log_prob(y)`, checked to have the likelihood's batch shape
/// (targets that broadcast it up, a `[B, 1]` mean against `[B]` targets
/// giving a `[B, B]` log-prob, would make a silently wrong loss) and
/// `rows.0` (described as `rows.1`) as its leading size; the error, under
/// `op`, names every shape.
pub(crate) fn log_prob_of_targets<'t, F: Element>(
    op: &'static str,
    likelihood: &dyn Distribution<'t, F>,
    y: Var<'t, F>,
    (rows, what): (usize, &str),
) -> Result<Var<'t, F>> {
    let batch_shape = likelihood.batch_shape();
    let y_shape = y.shape();
    let log_prob = likelihood.log_prob(y)?;
    let shape = log_prob.shape();
    let mismatch = |why: String| {
        Err(Error::invalid(
            op,
            format!(
                "{why}: the log-prob of targets {y_shape:?} under a {} of batch shape {batch_shape:?} has shape {shape:?}",
                likelihood.name()
            ),
        ))
    };
    if shape != batch_shape {
        return mismatch(format!(
            "the targets broadcast the likelihood's batch shape {batch_shape:?} up"
        ));
    }
    if shape.first().is_some_and(|&n| n != rows) {
        return mismatch(format!("its leading size is not {what} {rows}"));
    }
    Ok(log_prob)
}
