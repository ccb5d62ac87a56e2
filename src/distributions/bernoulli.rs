use super::{check_finite, check_values, uniform, Distribution};
use crate::autodiff::ops::sigmoid;
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// A distribution over {0, 1}, parameterized by logits.
///
/// # Density
/// `P(x) = sigmoid(l)^x (1 - sigmoid(l))^(1-x)`, computed as
/// `x l - softplus(l)` without under- or overflow.
///
/// # Parameters
/// - `logits`: any finite real (batch shape = its shape).
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let b = Bernoulli::from_logits(tape.var(Tensor::vector(&[0.0, 2.0])))?;
/// let lp = b.log_prob(tape.constant(Tensor::vector(&[1.0, 0.0])))?;
/// assert!((lp.value().data()[0] - 0.5f64.ln()).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Non-finite logits; values other than 0 and 1.
#[derive(Clone, Copy)]
pub struct Bernoulli<'t, F: Element> {
    logits: Var<'t, F>,
}

impl<'t, F: Element> Bernoulli<'t, F> {
    /// From log-odds.
    pub fn from_logits(logits: Var<'t, F>) -> Result<Self> {
        check_finite("Bernoulli", "logits", &logits)?;
        Ok(Bernoulli { logits })
    }

    /// The logits.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }
}

impl<'t, F: Element> Distribution<'t, F> for Bernoulli<'t, F> {
    fn name(&self) -> &'static str {
        "Bernoulli"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        check_values("Bernoulli", "value", &x, "must be 0 or 1", |v| {
            v == F::zero() || v == F::one()
        })?;
        x.try_mul(self.logits)?.try_sub(self.logits.softplus())
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Bernoulli",
            what: "reparameterized sampling (rsample)",
        })
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let l = self.logits.value();
        let draws = l.data().iter().map(|&l| {
            if uniform::<F>(rng) < sigmoid(l) {
                F::one()
            } else {
                F::zero()
            }
        });
        Tensor::from_vec(draws.collect(), l.shape())
    }
    // H = softplus(l) - l sigmoid(l)
    fn entropy(&self) -> Result<Var<'t, F>> {
        Ok(self.logits.softplus() - self.logits * self.logits.sigmoid())
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Ok(self.logits.sigmoid())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        // p (1 - p) = sigmoid(l) sigmoid(-l)
        Ok(self.logits.sigmoid() * (-self.logits).sigmoid())
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.logits.shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(q || p) = s(a) (softplus(-b) - softplus(-a)) + s(-a) (softplus(b) - softplus(a))
/// for logits a of q and b of p, s the sigmoid.
pub(crate) fn kl_bernoulli<'t, F: Element>(
    q: &Bernoulli<'t, F>,
    p: &Bernoulli<'t, F>,
) -> Result<Var<'t, F>> {
    let (a, b) = (q.logits, p.logits);
    let on = a
        .sigmoid()
        .try_mul((-b).softplus().try_sub((-a).softplus())?)?;
    let off = (-a)
        .sigmoid()
        .try_mul(b.softplus().try_sub(a.softplus())?)?;
    on.try_add(off)
}
