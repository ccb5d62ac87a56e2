//! KL divergences: analytic where a closed form exists, Monte Carlo otherwise.
//!
//! Divergence *nodes* (named KL terms of a forward pass) live in the
//! forward context: see [`Forward::add_kl`](crate::Forward::add_kl) and
//! [`Divergences`](crate::Divergences).

use crate::distributions::{lookup_kl, Distribution};
use crate::error::{Error, Result};
use crate::tape::Var;
use crate::tensor::Element;
use rand::Rng;

/// How to compute a KL divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// The closed form; an error for pairs that have none.
    Analytic,
    /// `mean_s [ln q(z_s) - ln p(z_s)]` over `samples` reparameterized draws
    /// `z_s ~ q`: unbiased, differentiable w.r.t. both distributions.
    MonteCarlo {
        /// Number of draws.
        samples: usize,
    },
    /// Analytic when a closed form exists, else Monte Carlo with
    /// [`AUTO_MC_SAMPLES`] draws.
    Auto,
}

/// Draws used by [`Divergence::Auto`] when there is no closed form.
pub const AUTO_MC_SAMPLES: usize = 16;

/// The analytic KL(q || p), one value per batch element.
///
/// Closed forms are looked up by the two concrete types in the open
/// registry of [`register_kl`](crate::distributions::register_kl): built in
/// are Normal/Normal, Categorical/Categorical, Bernoulli/Bernoulli and
/// Independent/Independent (of a pair that has one, over as many axes).
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let q = Normal::new(tape.var(Tensor::scalar(0.5)), tape.var(Tensor::scalar(0.8)))?;
/// let p = Normal::standard(&tape, &[]);
/// let kl = kl_divergence(&q, &p)?;
/// assert!(kl.item()? > 0.0);
/// let slab = SpikeAndSlab::tfp_default(&tape);
/// assert!(matches!(kl_divergence(&q, &slab), Err(Error::NoAnalyticKl { .. })));
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::NoAnalyticKl`] naming both distributions when no closed form exists.
pub fn kl_divergence<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
) -> Result<Var<'t, F>> {
    match lookup_kl(q, p) {
        Some(rule) => rule.kl(q, p),
        None => Err(Error::NoAnalyticKl {
            q: q.describe(),
            p: p.describe(),
        }),
    }
}

/// The single-sample estimate `ln q(z) - ln p(z)` at a given draw `z ~ q`
/// (for example the posterior weight sample a layer used in its forward
/// pass). If `z` has leading sample axes, they are averaged.
pub fn kl_from_sample<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
    z: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let d = q.log_prob(z)?.try_sub(p.log_prob(z)?)?;
    let batch_rank = q.batch_shape().len();
    let mut d = d;
    while d.shape().len() > batch_rank {
        d = d.mean_axis(0, false)?;
    }
    Ok(d)
}

/// KL(q || p) computed as `method` says; `rng` is used only by Monte Carlo.
///
/// # Errors
/// [`Error::NoAnalyticKl`] for `Analytic` on a pair without a closed form;
/// [`Error::Unsupported`] for Monte Carlo when `q` has no reparameterized sampler;
/// an error for `samples == 0`.
pub fn kl_divergence_with<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
    method: Divergence,
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    match method {
        Divergence::Analytic => kl_divergence(q, p),
        Divergence::MonteCarlo { samples } => kl_monte_carlo(q, p, samples, rng),
        Divergence::Auto => match kl_divergence(q, p) {
            Err(Error::NoAnalyticKl { .. }) => kl_monte_carlo(q, p, AUTO_MC_SAMPLES, rng),
            other => other,
        },
    }
}

/// The Monte Carlo estimate from `samples` fresh reparameterized draws of `q`.
pub fn kl_monte_carlo<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
    samples: usize,
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    if samples == 0 {
        return Err(Error::invalid(
            "kl_monte_carlo",
            "needs at least one sample",
        ));
    }
    let z = q.rsample_n(Some(samples), rng)?;
    kl_from_sample(q, p, z)
}
