//! Probability distributions as differentiable values.
//!
//! A distribution is built from [`Var`]s on one tape, so its parameters stay
//! trainable: `log_prob`, `rsample`, `entropy` and KL divergences are
//! differentiable w.r.t. every parameter. Because the vars borrow the tape,
//! a distribution cannot outlive its forward pass or be stored in a layer,
//! which is exactly what makes TFP's "gradients silently cut" bug
//! (`Normal(self.mu[0], ...)` built once in `build()`) impossible here.
//!
//! Constructors validate their parameters' values: a scale `<= 0` or NaN,
//! a mixture weight outside (0, 1), empty logits or batch shapes that do
//! not broadcast return an [`Error`] naming the distribution, the
//! parameter and the offending value.

mod bernoulli;
mod categorical;
mod independent;
mod mixture;
mod normal;

pub(crate) use bernoulli::kl_bernoulli as bernoulli_kl;
pub(crate) use categorical::kl_categorical as categorical_kl;
pub(crate) use normal::kl_normal_normal as normal_kl;

pub use bernoulli::Bernoulli;
pub use categorical::Categorical;
pub use independent::Independent;
pub use mixture::{MixtureOfNormals, SpikeAndSlab};
pub use normal::Normal;

use crate::error::{Error, Result};
use crate::tape::{Tape, Var};
use crate::tensor::{broadcast_shape, Element, Tensor};
use rand::Rng;

/// `ln(2 pi) / 2`.
pub(crate) const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// The concrete type behind a `dyn Distribution`, for dispatching analytic
/// KL divergences.
#[non_exhaustive]
pub enum Kind<'a, 't, F: Element> {
    /// A [`Normal`].
    Normal(&'a Normal<'t, F>),
    /// A [`Categorical`].
    Categorical(&'a Categorical<'t, F>),
    /// A [`Bernoulli`].
    Bernoulli(&'a Bernoulli<'t, F>),
    /// An [`Independent`].
    Independent(&'a Independent<'t, F>),
    /// A [`MixtureOfNormals`] (including spike-and-slab).
    Mixture(&'a MixtureOfNormals<'t, F>),
}

/// A probability distribution whose parameters are vars on a tape.
///
/// Shapes follow TFP: `batch_shape` indexes independent distributions,
/// `event_shape` is the shape of one draw of one of them. `log_prob(x)`
/// returns one value per batch element (broadcasting `x` against the batch).
pub trait Distribution<'t, F: Element> {
    /// The distribution's name, used in errors.
    fn name(&self) -> &'static str;
    /// The tape the parameters live on.
    fn tape(&self) -> &'t Tape<F>;
    /// Log density (or mass) at `x`, differentiable w.r.t. `x` and every parameter.
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>>;
    /// A reparameterized draw of shape `batch + event`: differentiable
    /// w.r.t. the parameters. Errors for distributions without one.
    fn rsample(&self, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        self.rsample_n(None, rng)
    }
    /// `n` reparameterized draws stacked on a new leading axis (`None`: no axis).
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>>;
    /// A plain draw (no gradient) of shape `batch + event`.
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>>;
    /// Differential entropy (or Shannon entropy), one value per batch element.
    fn entropy(&self) -> Result<Var<'t, F>>;
    /// The mean.
    fn mean(&self) -> Result<Var<'t, F>>;
    /// The variance.
    fn variance(&self) -> Result<Var<'t, F>>;
    /// The standard deviation.
    fn stddev(&self) -> Result<Var<'t, F>> {
        Ok(self.variance()?.sqrt())
    }
    /// Shape of the batch of independent distributions.
    fn batch_shape(&self) -> Vec<usize>;
    /// Shape of one event.
    fn event_shape(&self) -> Vec<usize>;
    /// The concrete type, for analytic KL dispatch.
    fn kind(&self) -> Kind<'_, 't, F>;
}

/// Errors unless every element of `v` satisfies `ok`.
pub(crate) fn check_values<F: Element>(
    distribution: &'static str,
    parameter: &'static str,
    v: &Var<'_, F>,
    reason: &'static str,
    ok: impl Fn(F) -> bool,
) -> Result<()> {
    v.tape.with_value(v.id, |t| {
        match crate::tensor::first_failing(t.data(), &ok) {
            Some(i) => Err(Error::InvalidParameter {
                distribution,
                parameter,
                value: t.data()[i].to_f64().unwrap_or(f64::NAN),
                reason,
            }),
            None => Ok(()),
        }
    })
}

pub(crate) fn check_finite<F: Element>(
    d: &'static str,
    p: &'static str,
    v: &Var<'_, F>,
) -> Result<()> {
    check_values(d, p, v, "must be finite", |x| x.is_finite())
}

pub(crate) fn check_positive<F: Element>(
    d: &'static str,
    p: &'static str,
    v: &Var<'_, F>,
) -> Result<()> {
    check_values(d, p, v, "must be finite and > 0", |x| {
        x > F::zero() && x.is_finite()
    })
}

/// The broadcast of two parameters' shapes, or an error naming both.
pub(crate) fn batch_broadcast(
    distribution: &'static str,
    (lhs_param, lhs): (&'static str, Vec<usize>),
    (rhs_param, rhs): (&'static str, Vec<usize>),
) -> Result<Vec<usize>> {
    broadcast_shape(&lhs, &rhs).ok_or(Error::BatchShapeMismatch {
        distribution,
        lhs_param,
        lhs,
        rhs_param,
        rhs,
    })
}

/// Both vars must live on the same tape.
pub(crate) fn same_tape<F: Element>(
    op: &'static str,
    a: &Var<'_, F>,
    b: &Var<'_, F>,
) -> Result<()> {
    if std::ptr::eq(a.tape, b.tape) {
        Ok(())
    } else {
        Err(Error::ForeignTape { op })
    }
}

/// `n` (or none) leading sample axes followed by `shape`.
pub(crate) fn sample_shape(n: Option<usize>, shape: &[usize]) -> Vec<usize> {
    let mut s = Vec::with_capacity(shape.len() + 1);
    s.extend(n);
    s.extend_from_slice(shape);
    s
}

pub(crate) use crate::random::standard_normal;

/// Uniform draws in [0, 1).
pub(crate) fn uniform<F: Element>(rng: &mut dyn Rng) -> F {
    F::lit(rand::RngExt::random::<f64>(rng))
}
