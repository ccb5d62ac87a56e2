//! Continuous relaxations of discrete distributions (Concrete / Gumbel-softmax).

use super::{
    Distribution, batch_broadcast, check_divisor, check_logits, check_values, sample_shape,
};
use crate::autodiff::tape::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::random::Unit;
use crate::tensor::{Element, Tensor, broadcast_shape, unit_draws};
use rand::Rng;

/// Logistic noise `ln u - ln(1 - u)`, `u` uniform in (0, 1).
fn logistic_noise<F: Element>(shape: &[usize], rng: &mut dyn Rng) -> Tensor<F> {
    unit_draws(Unit::Logistic, shape, rng)
}

/// Gumbel noise `-ln(-ln u)`, `u` uniform in (0, 1).
fn gumbel_noise<F: Element>(shape: &[usize], rng: &mut dyn Rng) -> Tensor<F> {
    unit_draws(Unit::Gumbel, shape, rng)
}

/// Errors unless the temperature is finite and at least the smallest
/// normal number (the logits are divided by it).
fn check_temperature<F: Element>(distribution: &'static str, t: &Var<'_, F>) -> Result<()> {
    check_divisor(distribution, "temperature", t)
}

/// The straight-through estimator's op: the forward pass rounds a relaxed
/// sample to a hard one, the backward pass hands the gradient to the relaxed
/// sample unchanged.
struct StraightThrough {
    one_hot: bool,
}

impl<F: Element> Op<F> for StraightThrough {
    fn name(&self) -> &str {
        if self.one_hot {
            "straight_through_one_hot"
        } else {
            "straight_through_round"
        }
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let soft = inputs[0];
        if !self.one_hot {
            let half = F::lit(0.5);
            return Ok(soft.map(|y| if y > half { F::one() } else { F::zero() }));
        }
        let k = *soft.shape().last().unwrap_or(&1);
        let mut hard = Tensor::zeros(soft.shape());
        for (row, out) in soft
            .data()
            .chunks(k.max(1))
            .zip(hard.data_mut().chunks_mut(k.max(1)))
        {
            // the first maximum, as argmax conventionally picks
            let mut best = 0;
            for (c, &y) in row.iter().enumerate() {
                if y > row[best] {
                    best = c;
                }
            }
            out[best] = F::one();
        }
        Ok(hard)
    }
    fn backward(
        &self,
        _: &[&Tensor<F>],
        _: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(grad.clone())])
    }
}

/// The binary Concrete distribution (Maddison, Mnih, Teh 2017; Jang, Gu,
/// Poole 2017): a relaxation of `Bernoulli(logits)` on (0, 1).
///
/// # Sampling
/// `y = sigmoid((logits + L) / temperature)` with logistic noise
/// `L = ln u - ln(1 - u)`, so `rsample` is differentiable w.r.t. the logits
/// and the temperature. As the temperature falls to 0, `y` approaches a
/// Bernoulli draw (and its gradient's variance grows). A `y` that rounds to
/// 0 or 1 is moved to the nearest value inside (0, 1), so that `log_prob`
/// takes every draw.
///
/// # Density
/// With `z = logit(x)` and `u = temperature z - logits`,
/// `ln p(x) = ln temperature - u - 2 softplus(-u) - ln x - ln(1 - x)`
/// (a logistic density in logit space, as TFP's `RelaxedBernoulli`).
///
/// # Parameters
/// - `temperature`: finite, `> 0`, trainable; broadcast against the logits.
/// - `logits`: finite.
///
/// [`rsample_straight_through`](Self::rsample_straight_through) gives the
/// straight-through variant: hard 0/1 values forward, the relaxed
/// sample's gradient backward.
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let logits = tape.var(Tensor::vector(&[0.5, -1.0]));
/// let q = RelaxedBernoulli::new(tape.scalar(0.5), logits)?;
/// let mut rng = StdRng::seed_from_u64(0);
/// let y = q.rsample(&mut rng)?;
/// assert!(y.value().data().iter().all(|&v| v > 0.0 && v < 1.0));
/// let grads = y.sum().backward()?;
/// assert!(grads.get(logits).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// A temperature that is not finite or is below the smallest normal
/// number; non-finite logits; shapes that do not broadcast; `log_prob` at
/// values outside (0, 1).
#[derive(Clone, Copy)]
pub struct RelaxedBernoulli<'t, F: Element> {
    temperature: Var<'t, F>,
    logits: Var<'t, F>,
}

impl<'t, F: Element> RelaxedBernoulli<'t, F> {
    /// From a temperature and log-odds.
    pub fn new(temperature: Var<'t, F>, logits: Var<'t, F>) -> Result<Self> {
        super::same_tape("RelaxedBernoulli", &temperature, &logits)?;
        check_temperature("RelaxedBernoulli", &temperature)?;
        check_logits("RelaxedBernoulli", &logits)?;
        batch_broadcast(
            "RelaxedBernoulli",
            ("temperature", temperature.shape()),
            ("logits", logits.shape()),
        )?;
        Ok(RelaxedBernoulli {
            temperature,
            logits,
        })
    }

    /// The temperature.
    pub fn temperature(&self) -> Var<'t, F> {
        self.temperature
    }

    /// The logits.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }

    /// A relaxed draw rounded to 0 or 1 in the forward pass, with the relaxed
    /// draw's gradient in the backward pass (the straight-through estimator:
    /// biased, but its forward values are exact Bernoulli draws).
    pub fn rsample_straight_through(&self, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let soft = self.rsample(rng)?;
        soft.tape.apply(StraightThrough { one_hot: false }, &[soft])
    }
}

impl<'t, F: Element> Distribution<'t, F> for RelaxedBernoulli<'t, F> {
    fn name(&self) -> &'static str {
        "RelaxedBernoulli"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        super::same_tape("RelaxedBernoulli::log_prob", &self.logits, &x)?;
        check_values("RelaxedBernoulli", "value", &x, "must be in (0, 1)", |v| {
            v > F::zero() && v < F::one()
        })?;
        let ln_x = x.ln();
        let ln_1mx = (-x).log1p();
        let u = self
            .temperature
            .try_mul(ln_x - ln_1mx)?
            .try_sub(self.logits)?;
        let density = self.temperature.ln().try_sub(u)? - (-u).softplus() * F::lit(2.0);
        Ok(density - ln_x - ln_1mx)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let noise = logistic_noise::<F>(&sample_shape(n, &self.batch_shape()), rng);
        let noise = self.tape().constant(noise);
        // At low temperatures the sigmoid rounds to exactly 0 or 1, outside
        // the support, where `log_prob` would refuse the draw: such values
        // are moved to the nearest representable ones inside, where the
        // sigmoid's gradient is below `F::EPSILON` (near 1) or the smallest
        // normal number (near 0) anyway (as `torch.distributions` clamps
        // its relaxed draws)
        let (lo, hi) = super::open_unit_bounds();
        noise
            .try_add(self.logits)?
            .try_div(self.temperature)
            .map(|v| v.sigmoid().clamp(lo, hi))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "RelaxedBernoulli",
            what: "entropy (no closed form; estimate it from samples)",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "RelaxedBernoulli",
            what: "mean (no closed form)",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "RelaxedBernoulli",
            what: "variance (no closed form)",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        // validated to broadcast by the constructor
        broadcast_shape(&self.temperature.shape(), &self.logits.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The Concrete (Gumbel-softmax) distribution over the simplex (Maddison,
/// Mnih, Teh 2017; Jang, Gu, Poole 2017): a relaxation of
/// `Categorical(logits)` whose draws are probability vectors.
///
/// # Sampling
/// `y = softmax((logits + g) / temperature)` along the last axis with Gumbel
/// noise `g = -ln(-ln u)`: differentiable w.r.t. the logits and the
/// temperature. As the temperature falls to 0, `y` approaches a one-hot
/// Categorical draw. A weight that underflows to 0 is given the smallest
/// normal number instead, so that `log_prob` takes every draw.
///
/// # Density
/// For `k` classes, with `l = ln x`,
/// `ln p(x) = ln (k-1)! + (k-1) ln t + Σ (logits - t l) - k logsumexp(logits - t l) - Σ l`
/// (TFP's `RelaxedOneHotCategorical`: the density of `ln x` under
/// `ExpRelaxedOneHotCategorical`, less the log-Jacobian `Σ l` of `exp`).
///
/// # Parameters
/// - `temperature`: finite, `> 0`, trainable; broadcast against the batch
///   shape (the logits' shape without the class axis).
/// - `logits`: shape `batch + [k]`, `k >= 2`, finite.
///
/// [`rsample_straight_through`](Self::rsample_straight_through) gives the
/// straight-through Gumbel-softmax: one-hot vectors forward, the relaxed
/// sample's gradient backward.
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let logits = tape.var(Tensor::vector(&[1.0, 0.0, -1.0]));
/// let q = RelaxedOneHotCategorical::new(tape.scalar(0.5), logits)?;
/// let mut rng = StdRng::seed_from_u64(0);
/// let hard = q.rsample_straight_through(&mut rng)?;
/// assert_eq!(hard.value().data().iter().sum::<f64>(), 1.0); // one-hot
/// let grads = (hard * Tensor::vector(&[1.0, 2.0, 3.0])).sum().backward()?;
/// assert!(grads.get(logits).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// A temperature that is not finite or is below the smallest normal
/// number; logits with fewer than two classes or non-finite entries; a
/// temperature whose shape does not broadcast against the batch; `log_prob`
/// at values off the simplex.
#[derive(Clone, Copy)]
pub struct RelaxedOneHotCategorical<'t, F: Element> {
    temperature: Var<'t, F>,
    logits: Var<'t, F>,
}

impl<'t, F: Element> RelaxedOneHotCategorical<'t, F> {
    /// From a temperature and unnormalized log-probabilities along the last axis.
    pub fn new(temperature: Var<'t, F>, logits: Var<'t, F>) -> Result<Self> {
        super::same_tape("RelaxedOneHotCategorical", &temperature, &logits)?;
        let shape = logits.shape();
        let k = shape.last().copied().unwrap_or(0);
        if k < 2 {
            return Err(Error::invalid(
                "RelaxedOneHotCategorical",
                format!("logits need a class axis of at least 2 classes, got shape {shape:?}"),
            ));
        }
        check_temperature("RelaxedOneHotCategorical", &temperature)?;
        check_logits("RelaxedOneHotCategorical", &logits)?;
        batch_broadcast(
            "RelaxedOneHotCategorical",
            ("temperature", temperature.shape()),
            ("logits batch", shape[..shape.len() - 1].to_vec()),
        )?;
        Ok(RelaxedOneHotCategorical {
            temperature,
            logits,
        })
    }

    /// The temperature.
    pub fn temperature(&self) -> Var<'t, F> {
        self.temperature
    }

    /// The logits.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }

    fn classes(&self) -> usize {
        *self.logits.shape().last().unwrap_or(&0)
    }

    /// The temperature with a trailing unit axis, to broadcast over classes.
    fn temperature_per_class(&self) -> Result<Var<'t, F>> {
        let t = self.temperature;
        t.unsqueeze(t.shape().len())
    }

    /// A relaxed draw replaced by the one-hot vector of its largest entry in
    /// the forward pass, with the relaxed draw's gradient in the backward
    /// pass (straight-through Gumbel-softmax).
    pub fn rsample_straight_through(&self, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let soft = self.rsample(rng)?;
        soft.tape.apply(StraightThrough { one_hot: true }, &[soft])
    }
}

impl<'t, F: Element> Distribution<'t, F> for RelaxedOneHotCategorical<'t, F> {
    fn name(&self) -> &'static str {
        "RelaxedOneHotCategorical"
    }
    fn events_on_the_simplex(&self) -> bool {
        true
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        super::same_tape("RelaxedOneHotCategorical::log_prob", &self.logits, &x)?;
        let k = self.classes();
        super::check_simplex(
            "RelaxedOneHotCategorical",
            "RelaxedOneHotCategorical::log_prob",
            &x,
            k,
        )?;
        let t = self.temperature_per_class()?;
        let ln_x = x.ln();
        let scores = self.logits.try_sub(t.try_mul(ln_x)?)?;
        let axis = scores.shape().len() - 1;
        let ln_fact: f64 = (1..k).map(|i| (i as f64).ln()).sum();
        let norm = self.temperature.ln() * F::lit((k - 1) as f64) + F::lit(ln_fact);
        let body = scores.sum_axis(axis, false)?
            - scores.logsumexp(axis, false)? * F::lit(k as f64)
            - ln_x.sum_axis(ln_x.shape().len() - 1, false)?;
        norm.try_add(body)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let mut shape = sample_shape(n, &self.batch_shape());
        shape.push(self.classes());
        let noise = self.tape().constant(gumbel_noise::<F>(&shape, rng));
        let z = noise
            .try_add(self.logits)?
            .try_div(self.temperature_per_class()?)?;
        // a class whose weight underflows to 0 at a low temperature is
        // given the smallest normal number instead, so that `log_prob`
        // accepts the draw (see `RelaxedBernoulli::rsample_n`)
        Ok(z.softmax(shape.len() - 1)?
            .clamp(F::min_positive_value(), F::one()))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "RelaxedOneHotCategorical",
            what: "entropy (no closed form; estimate it from samples)",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "RelaxedOneHotCategorical",
            what: "mean (no closed form)",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "RelaxedOneHotCategorical",
            what: "variance (no closed form)",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = self.logits.shape();
        // validated to broadcast by the constructor
        broadcast_shape(&self.temperature.shape(), &s[..s.len() - 1]).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![self.classes()]
    }
}
