use super::{
    Distribution, batch_broadcast, check_finite, check_positive, check_values,
    normal::normal_log_prob, same_tape, standard_normal, uniform,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// A mixture of `k` normals along the last axis of its parameters.
///
/// # Density
/// `p(x) = sum_j w_j N(x; loc_j, scale_j)`, evaluated as
/// `logsumexp_j(ln w_j + ln N(x; loc_j, scale_j))`: far in the tails, where
/// every component density underflows to 0, the log density stays exact.
///
/// # Parameters
/// - `log_weights` (or weights in (0, 1) summing to 1, or logits):
///   shape `batch + [k]`.
/// - `locs`: finite; `scales`: finite and `> 0`; both broadcast with the weights.
///
/// All parameters are differentiable. There is no closed-form entropy or KL:
/// use a Monte Carlo divergence ([`Divergence::MonteCarlo`](crate::Divergence)).
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let w = tape.var(Tensor::vector(&[0.3, 0.7]));
/// let locs = tape.var(Tensor::vector(&[-1.0, 2.0]));
/// let scales = tape.var(Tensor::vector(&[0.5, 1.0]));
/// let mix = MixtureOfNormals::new(w, locs, scales)?;
/// let lp = mix.log_prob(tape.scalar(0.0))?;
/// assert!(lp.backward()?.get(w).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Weights outside (0, 1) or not summing to 1, non-positive scales,
/// shapes that do not broadcast, no components.
#[derive(Clone, Copy)]
pub struct MixtureOfNormals<'t, F: Element> {
    log_weights: Var<'t, F>,
    locs: Var<'t, F>,
    scales: Var<'t, F>,
    name: &'static str,
}

impl<'t, F: Element> MixtureOfNormals<'t, F> {
    /// From component weights (each in (0, 1), summing to 1 along the last axis).
    pub fn new(weights: Var<'t, F>, locs: Var<'t, F>, scales: Var<'t, F>) -> Result<Self> {
        check_values(
            "MixtureOfNormals",
            "weights",
            &weights,
            "must be in (0, 1)",
            |w| w > F::zero() && w < F::one(),
        )?;
        let last = weights.shape().len().saturating_sub(1);
        let sums = weights.sum_axis(last, false)?;
        check_values(
            "MixtureOfNormals",
            "sum of weights",
            &sums,
            "must be 1",
            |s| (s - F::one()).abs() <= F::lit(1e-6),
        )?;
        Self::from_log_weights(weights.ln(), locs, scales, "MixtureOfNormals")
    }

    /// From unnormalized logits of the weights.
    pub fn from_logits(logits: Var<'t, F>, locs: Var<'t, F>, scales: Var<'t, F>) -> Result<Self> {
        check_finite("MixtureOfNormals", "logits", &logits)?;
        let last = logits.shape().len().saturating_sub(1);
        Self::from_log_weights(logits.log_softmax(last)?, locs, scales, "MixtureOfNormals")
    }

    fn from_log_weights(
        log_weights: Var<'t, F>,
        locs: Var<'t, F>,
        scales: Var<'t, F>,
        name: &'static str,
    ) -> Result<Self> {
        same_tape("MixtureOfNormals::new", &log_weights, &locs)?;
        same_tape("MixtureOfNormals::new", &log_weights, &scales)?;
        check_finite(name, "locs", &locs)?;
        check_positive(name, "scales", &scales)?;
        let s = batch_broadcast(
            name,
            ("weights", log_weights.shape()),
            ("locs", locs.shape()),
        )?;
        let full = batch_broadcast(name, ("weights and locs", s), ("scales", scales.shape()))?;
        if full.last().copied().unwrap_or(0) == 0 {
            return Err(Error::invalid(
                "MixtureOfNormals",
                format!("needs at least one component: the parameters broadcast to shape {full:?}"),
            ));
        }
        Ok(MixtureOfNormals {
            log_weights,
            locs,
            scales,
            name,
        })
    }

    fn full_shape(&self) -> Vec<usize> {
        let s = crate::tensor::broadcast_shape(&self.log_weights.shape(), &self.locs.shape())
            .unwrap_or_default();
        crate::tensor::broadcast_shape(&s, &self.scales.shape()).unwrap_or_default()
    }

    /// Log-density of each component plus its log-weight, shape `batch + [k]`.
    fn joint_log_probs(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let x = x.unsqueeze(x.shape().len())?;
        normal_log_prob(x, self.locs, self.scales)?.try_add(self.log_weights)
    }

    /// The posterior responsibility of each component at `x`.
    pub fn responsibilities(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let j = self.joint_log_probs(x)?;
        Ok(j.log_softmax(j.shape().len() - 1)?.exp())
    }
}

impl<'t, F: Element> Distribution<'t, F> for MixtureOfNormals<'t, F> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn tape(&self) -> &'t Tape<F> {
        self.locs.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        check_finite(self.name, "value", &x)?;
        let j = self.joint_log_probs(x)?;
        j.logsumexp(j.shape().len() - 1, false)
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: self.name,
            what: "reparameterized sampling (the component choice is discrete)",
        })
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let full = self.full_shape();
        let k = *full.last().unwrap_or(&1);
        let w = self
            .log_weights
            .value()
            .broadcast_to(&full)?
            .map(|l| l.exp());
        let locs = self.locs.value().broadcast_to(&full)?;
        let scales = self.scales.value().broadcast_to(&full)?;
        let noise: Tensor<F> = standard_normal(&[w.len() / k], rng);
        let mut out = Vec::with_capacity(w.len() / k);
        for r in 0..w.len() / k {
            let u: F = uniform(rng);
            let mut acc = F::zero();
            let j = (0..k)
                .find(|&j| {
                    acc = acc + w.data()[r * k + j];
                    u < acc
                })
                .unwrap_or(k - 1);
            out.push(locs.data()[r * k + j] + scales.data()[r * k + j] * noise.data()[r]);
        }
        Tensor::from_vec(out, &self.batch_shape())
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: self.name,
            what: "a closed-form entropy",
        })
    }
    // E[x] = sum_j w_j loc_j
    fn mean(&self) -> Result<Var<'t, F>> {
        let w = self.log_weights.exp();
        let last = self.full_shape().len() - 1;
        w.try_mul(self.locs)?
            .broadcast_to(&self.full_shape())?
            .sum_axis(last, false)
    }
    // Var[x] = sum_j w_j (scale_j^2 + (loc_j - E[x])^2): no E[x²] - E[x]²
    // cancellation, so it is never negative
    fn variance(&self) -> Result<Var<'t, F>> {
        let w = self.log_weights.exp();
        let last = self.full_shape().len() - 1;
        let mean = self.mean()?.unsqueeze(last)?;
        let spread = self.locs.try_sub(mean)?.square();
        w.try_mul(self.scales.square().try_add(spread)?)?
            .broadcast_to(&self.full_shape())?
            .sum_axis(last, false)
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = self.full_shape();
        s[..s.len().saturating_sub(1)].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The spike-and-slab scale mixture `pi N(0, spike_scale) + (1 - pi) N(0, slab_scale)`
/// (Blundell et al. 2015, with `spike_scale << slab_scale`), built on
/// [`MixtureOfNormals`]. Every parameter is differentiable, so a prior's
/// mixing weight and scales can be learned.
///
/// # Parameters
/// - `pi`: in (0, 1); `spike_scale`, `slab_scale`: finite and `> 0`; all scalars
///   or broadcastable shapes.
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let prior = SpikeAndSlab::tfp_default(&tape); // 0.5 N(0,1) + 0.5 N(0,2000)
/// let lp = prior.log_prob(tape.scalar(-1000.0))?.item()?;
/// assert!(lp.is_finite()); // the spike underflows, the log-sum-exp does not
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// `pi` outside (0, 1); scales not `> 0`; shapes that do not broadcast.
pub struct SpikeAndSlab;

impl SpikeAndSlab {
    /// `pi N(0, spike_scale) + (1 - pi) N(0, slab_scale)`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<'t, F: Element>(
        pi: Var<'t, F>,
        spike_scale: Var<'t, F>,
        slab_scale: Var<'t, F>,
    ) -> Result<MixtureOfNormals<'t, F>> {
        const NAME: &str = "SpikeAndSlab";
        same_tape("SpikeAndSlab::new", &pi, &spike_scale)?;
        same_tape("SpikeAndSlab::new", &pi, &slab_scale)?;
        check_values(NAME, "pi", &pi, "must be in (0, 1)", |p| {
            p > F::zero() && p < F::one()
        })?;
        check_positive(NAME, "spike_scale", &spike_scale)?;
        check_positive(NAME, "slab_scale", &slab_scale)?;
        let s = batch_broadcast(
            NAME,
            ("pi", pi.shape()),
            ("spike_scale", spike_scale.shape()),
        )?;
        let s = batch_broadcast(
            NAME,
            ("pi and spike_scale", s),
            ("slab_scale", slab_scale.shape()),
        )?;
        let (pi, spike, slab) = (
            pi.broadcast_to(&s)?,
            spike_scale.broadcast_to(&s)?,
            slab_scale.broadcast_to(&s)?,
        );
        let axis = s.len();
        // ln pi and ln(1 - pi) = log1p(-pi), exact near pi = 0 and 1
        let log_w = Var::stack(&[pi.ln(), (-pi).log1p()], axis)?;
        let scales = Var::stack(&[spike, slab], axis)?;
        let locs = pi.tape.constant(Tensor::zeros(&[2]));
        MixtureOfNormals::from_log_weights(log_w, locs, scales, NAME)
    }

    /// TensorFlow Probability's default (tfp.experimental.nn): `0.5 N(0, 1) + 0.5 N(0, 2000)`.
    pub fn tfp_default<F: Element>(tape: &Tape<F>) -> MixtureOfNormals<'_, F> {
        let c = |x: f64| tape.scalar(F::lit(x));
        Self::new(c(0.5), c(1.0), c(2000.0)).expect("the TFP default parameters are valid")
    }
}
