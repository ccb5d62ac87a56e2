//! Exact expectations on the tape, for checking stochastic gradients.
//!
//! `E[f(x)] = Σ p(x) f(x)` over a finite support, or `∫ p(x) f(x) dx` by
//! Simpson's rule on an interval, built from `log_prob` so that the result
//! is differentiable w.r.t. the distribution's parameters: its gradient is
//! the exact `∇θ E[f(x)]` that a stochastic estimator must match on
//! average (see [`stat_gradcheck`](crate::autodiff::statcheck::stat_gradcheck)).

use super::Distribution;
use crate::autodiff::tape::Var;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};

/// How far the enumerated or integrated probability mass may be from 1.
const MASS_TOL: f64 = 1e-6;

fn check_mass(op: &'static str, mass: f64, hint: &str) -> Result<()> {
    if (mass - 1.0).abs() <= MASS_TOL {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("the points cover probability {mass:.9}, not 1 ({hint})"),
        ))
    }
}

/// `Σ_s p(s) f(s)` over `support`, each point a value of the whole
/// distribution (`batch + event` shape) weighted by its joint probability
/// `exp(Σ log_prob(s))`. `f` returns one value per point.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::distributions::expectation_enumerated;
/// let tape = Tape::<f64>::new();
/// let theta = tape.var(Tensor::scalar(0.3));
/// let q = Bernoulli::from_logits(theta)?;
/// let support = [Tensor::scalar(0.0), Tensor::scalar(1.0)];
/// let e = expectation_enumerated(&q, &support, |b| Ok((b - 0.499).square()))?;
/// let p = 1.0 / (1.0 + (-0.3f64).exp());
/// assert!((e.item()? - (p * 0.501f64.powi(2) + (1.0 - p) * 0.499f64.powi(2))).abs() < 1e-15);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// An empty support; points whose probabilities do not sum to 1 (within
/// 1e-6: the support is incomplete or repeats a point); `f` returning
/// other than one value; the errors of `log_prob`.
pub fn expectation_enumerated<'t, F: Element>(
    dist: &dyn Distribution<'t, F>,
    support: &[Tensor<F>],
    mut f: impl FnMut(Var<'t, F>) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    const OP: &str = "expectation_enumerated";
    let tape = dist.tape();
    let mut total: Option<Var<'t, F>> = None;
    let mut mass = 0.0;
    for point in support {
        let x = tape.constant(point.clone());
        let p = dist.log_prob(x)?.sum().exp();
        mass += p.item()?.to_f64().unwrap_or(f64::NAN);
        let fx = f(x)?;
        if fx.shape().iter().product::<usize>() != 1 {
            return Err(Error::invalid(
                OP,
                format!(
                    "f must return one value per point, got shape {:?}",
                    fx.shape()
                ),
            ));
        }
        let term = p.try_mul(fx.sum())?;
        total = Some(match total {
            None => term,
            Some(t) => t.try_add(term)?,
        });
    }
    let total = total.ok_or_else(|| Error::invalid(OP, "the support is empty"))?;
    check_mass(OP, mass, "list every point of the support once")?;
    Ok(total)
}

/// `∫ p(x) f(x) dx` over `[lo, hi]` by composite Simpson's rule on
/// `points` (odd, `>= 3`) evenly spaced nodes, for a distribution over
/// scalars (one batch element, no event axes). `f` gets the nodes as one
/// vector and returns one value per node.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::distributions::expectation_quadrature;
/// let tape = Tape::<f64>::new();
/// let (mu, sigma) = (tape.var(Tensor::scalar(0.5)), tape.var(Tensor::scalar(1.5)));
/// let q = Normal::new(mu, sigma)?;
/// // E[x^2] = mu^2 + sigma^2
/// let e = expectation_quadrature(&q, -20.0, 20.0, 2001, |x| Ok(x.square()))?;
/// assert!((e.item()? - 2.5).abs() < 1e-9);
/// let g = e.backward()?;
/// assert!((g.get(sigma).unwrap().item()? - 3.0).abs() < 1e-8);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// A distribution with more than one batch element or an event axis; an
/// even or too small `points`; an interval that is empty or holds a
/// probability mass other than 1 (within 1e-6: widen it or add nodes);
/// `f` returning the wrong shape.
pub fn expectation_quadrature<'t, F: Element>(
    dist: &dyn Distribution<'t, F>,
    lo: f64,
    hi: f64,
    points: usize,
    f: impl FnOnce(Var<'t, F>) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    const OP: &str = "expectation_quadrature";
    if dist.batch_shape().iter().product::<usize>() != 1 || !dist.event_shape().is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "needs a distribution over scalars, got batch {:?} and event {:?}",
                dist.batch_shape(),
                dist.event_shape()
            ),
        ));
    }
    if points < 3 || points.is_multiple_of(2) {
        return Err(Error::invalid(
            OP,
            format!("Simpson's rule needs an odd number of nodes >= 3, got {points}"),
        ));
    }
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::invalid(
            OP,
            format!("needs a finite interval with lo < hi, got [{lo}, {hi}]"),
        ));
    }
    let h = (hi - lo) / (points - 1) as f64;
    let nodes = Tensor::from_fn(&[points], |i| F::lit(lo + h * i as f64));
    let weights = Tensor::from_fn(&[points], |i| {
        let w = if i == 0 || i == points - 1 {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        F::lit(w * h / 3.0)
    });
    let tape = dist.tape();
    let x = tape.constant(nodes);
    let density = dist.log_prob(x)?.reshape(&[points])?.exp() * weights;
    let mass = density.value().sum_all().to_f64().unwrap_or(f64::NAN);
    check_mass(OP, mass, "widen the interval or add nodes")?;
    let fx = f(x)?;
    if fx.shape() != [points] {
        return Err(Error::invalid(
            OP,
            format!(
                "f must return one value per node (shape [{points}]), got shape {:?}",
                fx.shape()
            ),
        ));
    }
    Ok(density.try_mul(fx)?.sum())
}
