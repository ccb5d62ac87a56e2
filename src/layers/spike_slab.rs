//! A spike-and-slab posterior over a layer's weights, for variable selection.

use super::linear_map::{DenseMap, LinearMap};
use super::{no_sample_axis, Module};
use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::Var;
use crate::bayes::forward::{Forward, SampleMode};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// Settings of a [`SpikeAndSlabVariational`] layer: the prior
/// `p(w) = (1 - prior_inclusion) δ₀ + prior_inclusion N(0, slab_scale²)`
/// and the starting posterior.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeAndSlabConfig {
    /// The prior probability that a weight is included (in (0, 1)).
    pub prior_inclusion: f64,
    /// The slab's standard deviation (> 0).
    pub slab_scale: f64,
    /// Posterior inclusion probabilities start here (in (0, 1)).
    pub inclusion_init: f64,
    /// Posterior slab means start at `N(0, loc_init_std)`.
    pub loc_init_std: f64,
    /// Posterior slab scales start here (> 0).
    pub scale_init: f64,
}

impl Default for SpikeAndSlabConfig {
    fn default() -> Self {
        SpikeAndSlabConfig {
            prior_inclusion: 0.5,
            slab_scale: 1.0,
            inclusion_init: 0.5,
            loc_init_std: 0.1,
            scale_init: 0.1,
        }
    }
}

/// A linear map whose weights have the posterior
/// `q(w) = (1 - p) δ₀ + p N(μ, σ²)` each, with trainable inclusion
/// probability `p` (stored as a logit), slab mean `μ` and scale `σ`.
///
/// # Why no relaxation is needed
/// The inclusion indicators are marginalized out: the layer's output is
/// drawn by local reparameterization from the exact moments of
/// `x ⊛ w`, `E = x ⊛ (p μ)` and `Var = x² ⊛ (p (σ² + μ²) - p² μ²)`. For a
/// linear model with a Gaussian likelihood this makes the expected
/// log-likelihood exact in expectation (it depends on the output's first
/// two moments only), so `p` gets an unbiased, low-variance gradient
/// without a relaxed Bernoulli. Deeper in a network the output is a sum of
/// many independent terms and the Gaussian is the usual approximation.
///
/// # Divergence
/// With the spike an exact point mass in both, the KL per weight is
/// `p ln(p / p₀) + (1 - p) ln((1 - p) / (1 - p₀)) + p KL(N(μ, σ²) ‖ N(0, s²))`,
/// registered as `<name>/kernel_divergence`.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::layers::DenseSpikeAndSlab;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = DenseSpikeAndSlab::new(&mut store, "lin", 4, 1, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = layer.forward(&mut cx, tape.constant(Tensor::ones(&[3, 4])))?;
/// assert_eq!(y.shape(), vec![3, 1]);
/// let p = layer.inclusion_probabilities(&store)?;
/// assert!(p.data().iter().all(|&v| (v - 0.5).abs() < 1e-12));
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct SpikeAndSlabVariational<M> {
    name: String,
    map: M,
    logit: Param,
    loc: Param,
    scale: Param,
    config: SpikeAndSlabConfig,
}

/// A dense layer with a spike-and-slab posterior (no bias).
pub type DenseSpikeAndSlab = SpikeAndSlabVariational<DenseMap>;

impl SpikeAndSlabVariational<DenseMap> {
    /// A dense `inputs -> outputs` layer with the default settings.
    pub fn new<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        inputs: usize,
        outputs: usize,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        let map = DenseMap { inputs, outputs };
        Self::from_map(store, name, map, SpikeAndSlabConfig::default(), rng)
    }
}

impl<M> SpikeAndSlabVariational<M> {
    /// A layer over `map` (parameters `<name>/inclusion_logit`,
    /// `<name>/slab_loc`, `<name>/slab_scale`).
    ///
    /// # Errors
    /// Probabilities outside (0, 1), non-positive scales, a zero-sized
    /// kernel, names taken in the store (which is then unchanged).
    pub fn from_map<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        map: M,
        config: SpikeAndSlabConfig,
        rng: &mut dyn Rng,
    ) -> Result<Self>
    where
        M: LinearMap<F>,
    {
        let c = config;
        let checks = [
            (
                "prior_inclusion",
                c.prior_inclusion,
                c.prior_inclusion > 0.0 && c.prior_inclusion < 1.0,
            ),
            (
                "inclusion_init",
                c.inclusion_init,
                c.inclusion_init > 0.0 && c.inclusion_init < 1.0,
            ),
            (
                "slab_scale",
                c.slab_scale,
                c.slab_scale > 0.0 && c.slab_scale.is_finite(),
            ),
            (
                "scale_init",
                c.scale_init,
                c.scale_init > 1e-5 && c.scale_init.is_finite(),
            ),
            (
                "loc_init_std",
                c.loc_init_std,
                c.loc_init_std >= 0.0 && c.loc_init_std.is_finite(),
            ),
        ];
        for (setting, value, ok) in checks {
            if !ok {
                return Err(Error::invalid(
                    "SpikeAndSlabConfig",
                    format!("{setting} = {value} is out of its domain (layer '{name}')"),
                ));
            }
        }
        let shape = map.kernel_shape();
        if shape.contains(&0) {
            return Err(Error::invalid(
                "SpikeAndSlabVariational::new",
                format!("layer '{name}' needs a kernel of nonzero size, got {shape:?}"),
            ));
        }
        for part in ["inclusion_logit", "slab_loc", "slab_scale"] {
            let full = format!("{name}/{part}");
            if store.get(&full).is_some() {
                return Err(Error::DuplicateParam { name: full });
            }
        }
        crate::tensor::checked_alloc::<F>(&format!("layer '{name}'"), &shape)?;
        let p0 = c.inclusion_init;
        let logit = store.try_add(
            format!("{name}/inclusion_logit"),
            Tensor::full(&shape, F::lit((p0 / (1.0 - p0)).ln())),
        )?;
        let noise: Tensor<F> = crate::tensor::standard_normal(&shape, rng);
        let loc = store.try_add(
            format!("{name}/slab_loc"),
            noise.map(|e| e * F::lit(c.loc_init_std)),
        )?;
        let scale = store.try_add_positive(
            format!("{name}/slab_scale"),
            Tensor::full(&shape, F::lit(c.scale_init)),
        )?;
        Ok(SpikeAndSlabVariational {
            name: name.to_string(),
            map,
            logit,
            loc,
            scale,
            config,
        })
    }

    /// `(inclusion logit, slab loc, slab scale)` parameters.
    pub fn params(&self) -> (Param, Param, Param) {
        (self.logit, self.loc, self.scale)
    }

    /// The posterior inclusion probability of every weight.
    pub fn inclusion_probabilities<F: Element>(&self, store: &ParamStore<F>) -> Result<Tensor<F>> {
        Ok(store
            .try_raw(self.logit)?
            .map(crate::autodiff::ops::sigmoid))
    }
}

impl<F: Element, M: LinearMap<F> + 'static> Module<F> for SpikeAndSlabVariational<M> {
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.map.check_input(&self.name, &x)?;
        let logit = cx.param(self.logit)?;
        let (mu, sigma) = (cx.param(self.loc)?, cx.param(self.scale)?);
        let p = logit.sigmoid();
        // ln p and ln(1 - p) from the logit, without cancellation
        let (ln_p, ln_q) = (-(-logit).softplus(), -logit.softplus());
        let (p0, s) = (self.config.prior_inclusion, self.config.slab_scale);
        let bernoulli = p
            .try_mul(ln_p - F::lit(p0.ln()))?
            .try_add((-p + F::one()).try_mul(ln_q - F::lit((1.0 - p0).ln()))?)?;
        // KL(N(μ, σ²) ‖ N(0, s²)) = ln(s / σ) + (σ² + μ²) / (2 s²) - 1/2
        let second = sigma.square().try_add(mu.square())?;
        let slab =
            (-sigma.ln() + F::lit(s.ln())).try_add(second * F::lit(0.5 / (s * s)))? - F::lit(0.5);
        let kl = bernoulli.try_add(p.try_mul(slab)?)?.sum();
        let mean_w = p.try_mul(mu)?;
        let y = match cx.mode() {
            SampleMode::PosteriorMean => self.map.apply(x, mean_w)?,
            SampleMode::SampleAxis(_) => {
                return Err(no_sample_axis(
                    &self.name,
                    "the spike-and-slab posterior marginalizes the inclusion in the output moments, drawing no weight samples",
                ))
            }
            SampleMode::Sample => {
                // Var w = p (σ² + μ²) - p² μ²
                let var_w = p.try_mul(second)?.try_sub(mean_w.square())?;
                let mean = self.map.apply(x, mean_w)?;
                let var = self.map.apply(x.square(), var_w)?;
                let eps = cx
                    .tape()
                    .constant(crate::tensor::standard_normal(&mean.shape(), cx.rng()));
                mean.try_add((var + F::lit(1e-16)).sqrt().try_mul(eps)?)?
            }
        };
        cx.add_divergence(format!("{}/kernel_divergence", self.name), kl)?;
        Ok(y)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
