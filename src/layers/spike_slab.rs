//! A spike-and-slab posterior over a layer's weights, for variable selection.

use super::linear_map::{DenseMap, LinearMap};
use super::variational::local_draw;
use super::{Module, no_sample_axis};
use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::Var;
use crate::bayes::forward::{Forward, SampleMode};
use crate::distributions::{Distribution, RelaxedBernoulli};
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
    /// What one inclusion indicator switches: one weight, or every weight
    /// of an input unit.
    pub selection: Selection,
}

/// The unit of selection of a [`SpikeAndSlabVariational`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Selection {
    /// One indicator per weight, marginalized exactly in the output's moments.
    #[default]
    PerWeight,
    /// One indicator per input unit (an input feature of a dense layer, an
    /// input channel of a convolution), shared by all its outgoing weights:
    /// group selection. Indicators shared across outputs make the outputs
    /// dependent, so they are not marginalized: each example draws them
    /// from the Concrete relaxation ([`RelaxedBernoulli`])
    /// at this temperature, and the slab weights by local reparameterization
    /// given them.
    PerInput {
        /// The relaxation's temperature (> 0; lower is closer to 0/1 draws
        /// and gives noisier gradients).
        temperature: f64,
    },
}

impl Default for SpikeAndSlabConfig {
    fn default() -> Self {
        SpikeAndSlabConfig {
            prior_inclusion: 0.5,
            slab_scale: 1.0,
            inclusion_init: 0.5,
            loc_init_std: 0.1,
            scale_init: 0.1,
            selection: Selection::PerWeight,
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
/// Group selection ([`Selection::PerInput`]) shares one indicator among
/// the weights of an input unit; the outputs then depend on each other
/// through it, so the indicators are drawn (relaxed) instead.
///
/// # Divergence
/// With the spike an exact point mass in both, the KL per weight is
/// `p ln(p / p₀) + (1 - p) ln((1 - p) / (1 - p₀)) + p KL(N(μ, σ²) ‖ N(0, s²))`,
/// registered as `<name>/kernel_divergence`. Per input unit `i` it is the
/// Bernoulli term once plus `p_i Σ_o KL(N(μ_io, σ_io²) ‖ N(0, s²))`.
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
    /// Probabilities outside (0, 1), non-positive scales, initial values
    /// that overflow `F`, a zero-sized kernel, names taken in the store.
    /// Nothing is added to the store on error.
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
        let temperature = match c.selection {
            Selection::PerWeight => 1.0,
            Selection::PerInput { temperature } => temperature,
        };
        let checks = checks.into_iter().chain([(
            "selection temperature",
            temperature,
            temperature > 0.0 && temperature.is_finite(),
        )]);
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
        crate::tensor::checked_alloc::<F>(&format!("layer '{name}'"), &shape)?;
        let p0 = c.inclusion_init;
        let logit_shape = match c.selection {
            Selection::PerWeight => shape.clone(),
            // the input axis of the kernel (its second-to-last)
            Selection::PerInput { .. } => vec![shape[shape.len().max(2) - 2]],
        };
        let noise: Tensor<F> = crate::tensor::standard_normal(&shape, rng);
        // (a name taken, or a setting finite in f64 that overflows F: then
        // nothing is added)
        let (logit, loc, scale) = store.adding(|store| {
            let logit = store.try_add(
                format!("{name}/inclusion_logit"),
                Tensor::full(&logit_shape, F::lit((p0 / (1.0 - p0)).ln())),
            )?;
            let loc = store.try_add(
                format!("{name}/slab_loc"),
                noise.map(|e| e * F::lit(c.loc_init_std)),
            )?;
            let scale = store.try_add_positive(
                format!("{name}/slab_scale"),
                Tensor::full(&shape, F::lit(c.scale_init)),
            )?;
            Ok((logit, loc, scale))
        })?;
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

    /// The posterior inclusion probability of every weight (the kernel's
    /// shape), or of every input unit under [`Selection::PerInput`].
    pub fn inclusion_probabilities<F: Element>(&self, store: &ParamStore<F>) -> Result<Tensor<F>> {
        Ok(store
            .try_raw(self.logit)?
            .map(crate::autodiff::ops::sigmoid))
    }
}

impl<F: Element, M: LinearMap<F> + 'static> Module<F> for SpikeAndSlabVariational<M> {
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.map.check_input(&self.name, &x)?;
        if let SampleMode::SampleAxis(_) = cx.mode() {
            return Err(no_sample_axis(
                &self.name,
                "the spike-and-slab posterior marginalizes (or relaxes) the inclusion in the output moments, drawing no weight samples",
            ));
        }
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
        // the output's moments given the inclusion (or marginalized over it)
        let (mean, var) = match self.config.selection {
            Selection::PerWeight => {
                let kl = bernoulli.try_add(p.try_mul(slab)?)?.sum();
                cx.add_divergence(format!("{}/kernel_divergence", self.name), kl)?;
                let mean_w = p.try_mul(mu)?;
                if cx.mode() == SampleMode::PosteriorMean {
                    return self.map.apply(x, mean_w);
                }
                // Var w = p (σ² + μ²) - p² μ²
                let var_w = p.try_mul(second)?.try_sub(mean_w.square())?;
                self.map.apply_pair((x, mean_w), (x.square(), var_w))?
            }
            Selection::PerInput { temperature } => {
                // p per input unit, along the kernel's input axis
                let kernel = mu.shape();
                let mut along = vec![1; kernel.len()];
                along[kernel.len() - 2] = kernel[kernel.len() - 2];
                let slab_kl = p.reshape(&along)?.try_mul(slab)?;
                let kl = bernoulli.sum() + slab_kl.sum();
                cx.add_divergence(format!("{}/kernel_divergence", self.name), kl)?;
                // one indicator per example and input unit, broadcast over
                // the other axes of x (a convolution's positions)
                let xs = x.shape();
                let mut z_shape = vec![1; xs.len()];
                z_shape[0] = xs[0];
                z_shape[xs.len() - 1] = xs[xs.len() - 1];
                let z = if cx.mode() == SampleMode::PosteriorMean {
                    p
                } else {
                    let t = cx.tape().scalar(F::lit(temperature));
                    RelaxedBernoulli::new(t, logit)?
                        .rsample_n(Some(xs[0]), cx.rng())?
                        .reshape(&z_shape)?
                };
                let xz = x.try_mul(z)?;
                if cx.mode() == SampleMode::PosteriorMean {
                    return self.map.apply(xz, mu);
                }
                self.map
                    .apply_pair((xz, mu), (xz.square(), sigma.square()))?
            }
        };
        let eps = crate::tensor::standard_normal(&mean.shape(), cx.rng());
        local_draw(mean, var, F::lit(1e-16), eps)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
