//! Mean-field variational dense layers and the machinery they share with
//! the convolutional ones: posterior parameters, priors, divergences.

use super::{check_dense_input, Module};
use crate::distributions::{Distribution, Normal, SpikeAndSlab};
use crate::divergence::{kl_divergence, kl_from_sample};
use crate::error::{Error, Result};
use crate::params::{Constraint, Param, ParamStore, POSITIVE_EPS};
use crate::tape::{SampleMode, Tape, Var};
use crate::tensor::{Element, Tensor};
use rand::Rng;
use std::marker::PhantomData;
use std::rc::Rc;

/// Builds a prior on a tape for a weight tensor of the given shape. Its
/// parameters may be read from the store, i.e. trainable.
pub type PriorFn<F> = dyn for<'t> Fn(
    &'t Tape<F>,
    &ParamStore<F>,
    &[usize],
) -> Result<Box<dyn Distribution<'t, F> + 't>>;

/// A user-defined divergence: given the posterior, the prior and the
/// posterior sample used in the forward pass, returns the KL term.
pub type KlFn<F> =
    dyn for<'t> Fn(&Normal<'t, F>, &dyn Distribution<'t, F>, Var<'t, F>) -> Result<Var<'t, F>>;

/// The prior over a layer's weights.
#[derive(Clone)]
pub enum Prior<F: Element> {
    /// `N(loc, scale)` for every weight (the default is `N(0, 1)`).
    Normal {
        /// Mean.
        loc: f64,
        /// Standard deviation (> 0).
        scale: f64,
    },
    /// `pi N(0, spike_scale) + (1 - pi) N(0, slab_scale)` for every weight;
    /// [`Prior::spike_and_slab_tfp`] gives TFP's default.
    SpikeAndSlab {
        /// Mixing weight of the spike, in (0, 1).
        pi: f64,
        /// Scale of the narrow component.
        spike_scale: f64,
        /// Scale of the wide component.
        slab_scale: f64,
    },
    /// Any distribution built on the tape (e.g. with trainable parameters).
    Custom(Rc<PriorFn<F>>),
}

impl<F: Element> Default for Prior<F> {
    fn default() -> Self {
        Prior::Normal {
            loc: 0.0,
            scale: 1.0,
        }
    }
}

impl<F: Element> Prior<F> {
    /// TFP's spike-and-slab default `0.5 N(0, 1) + 0.5 N(0, 2000)`.
    pub fn spike_and_slab_tfp() -> Self {
        Prior::SpikeAndSlab {
            pi: 0.5,
            spike_scale: 1.0,
            slab_scale: 2000.0,
        }
    }

    /// A prior from a closure.
    pub fn custom(
        f: impl for<'t> Fn(
                &'t Tape<F>,
                &ParamStore<F>,
                &[usize],
            ) -> Result<Box<dyn Distribution<'t, F> + 't>>
            + 'static,
    ) -> Self {
        Prior::Custom(Rc::new(f))
    }

    pub(crate) fn build<'t>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        shape: &[usize],
    ) -> Result<Box<dyn Distribution<'t, F> + 't>> {
        let c = |x: f64| tape.scalar(F::lit(x));
        Ok(match self {
            Prior::Normal { loc, scale } => Box::new(Normal::new(c(*loc), c(*scale))?),
            Prior::SpikeAndSlab {
                pi,
                spike_scale,
                slab_scale,
            } => Box::new(SpikeAndSlab::new(c(*pi), c(*spike_scale), c(*slab_scale))?),
            Prior::Custom(f) => f(tape, store, shape)?,
        })
    }
}

/// How a layer computes its KL term.
#[derive(Clone, Default)]
pub enum KlMethod<F: Element> {
    /// Analytic where a closed form exists, else `ln q(w) - ln p(w)` at the
    /// posterior sample `w` of the forward pass (every estimator has one).
    #[default]
    Auto,
    /// Always the closed form (an error for priors without one).
    Analytic,
    /// Always the single-sample estimate at the forward pass's posterior sample.
    SampleEstimate,
    /// A user closure.
    Custom(Rc<KlFn<F>>),
}

/// Whether and how a layer has a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BiasMode {
    /// No bias.
    None,
    /// A deterministic bias initialized to zero (TFP's default).
    #[default]
    Deterministic,
    /// A mean-field Normal bias with its own prior and divergence node.
    Variational,
}

/// Settings of a variational layer; the defaults are TFP's.
#[derive(Clone)]
pub struct VariationalConfig<F: Element> {
    /// Posterior means start at `N(loc_init.0, loc_init.1)` (TFP: `N(0, 0.1)`).
    pub loc_init: (f64, f64),
    /// Posterior `rho` starts at `N(rho_init.0, rho_init.1)`, scale = `softplus(rho) + 1e-5` (TFP: `N(-3, 0.1)`).
    pub rho_init: (f64, f64),
    /// The bias.
    pub bias: BiasMode,
    /// The prior over kernel (and variational bias) weights.
    pub prior: Prior<F>,
    /// How the KL term is computed.
    pub divergence: KlMethod<F>,
}

impl<F: Element> Default for VariationalConfig<F> {
    fn default() -> Self {
        VariationalConfig {
            loc_init: (0.0, 0.1),
            rho_init: (-3.0, 0.1),
            bias: BiasMode::Deterministic,
            prior: Prior::default(),
            divergence: KlMethod::Auto,
        }
    }
}

/// A mean-field Normal posterior over a weight tensor: `loc` and `rho`
/// parameters, scale `softplus(rho) + 1e-5`.
pub(crate) struct MeanField {
    pub loc: Param,
    pub rho: Param,
    pub shape: Vec<usize>,
}

impl MeanField {
    pub(crate) fn new<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        shape: &[usize],
        cfg: &VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        for (setting, (_, std)) in [("loc_init", cfg.loc_init), ("rho_init", cfg.rho_init)] {
            if !(std >= 0.0 && std.is_finite()) {
                return Err(Error::invalid(
                    "VariationalConfig",
                    format!("{setting}'s standard deviation must be finite and >= 0, got {std} (layer '{name}')"),
                ));
            }
        }
        let gauss = |(m, s): (f64, f64), rng: &mut dyn Rng| -> Tensor<F> {
            noise::<F>(shape, rng).map(|e| F::lit(m) + F::lit(s) * e)
        };
        let loc = store.try_add(format!("{name}_loc"), gauss(cfg.loc_init, rng))?;
        let rho = store.try_add_raw(
            format!("{name}_rho"),
            gauss(cfg.rho_init, rng),
            Constraint::Positive { eps: POSITIVE_EPS },
        )?;
        Ok(MeanField {
            loc,
            rho,
            shape: shape.to_vec(),
        })
    }

    /// The fast path of the default kind of layer (a scalar Normal prior,
    /// an analytic divergence, sampling mode): `output(loc, delta, rng)`
    /// computes the layer's output from the posterior mean and one
    /// perturbation `delta = scale * eps` (the weights are `loc + delta`);
    /// `delta` and the summed KL come from one fused op
    /// ([`Var::mean_field_sample`]), and the KL goes on the tape as
    /// `<layer>/kernel_divergence`. `None` for any other configuration,
    /// which takes the general path through [`Normal`] and
    /// [`register_divergence`].
    pub(crate) fn forward_fused<'t, F: Element>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        layer: &str,
        cfg: &VariationalConfig<F>,
        rng: &mut dyn Rng,
        output: impl FnOnce(Var<'t, F>, Var<'t, F>, &mut dyn Rng) -> Result<Var<'t, F>>,
    ) -> Result<Option<Var<'t, F>>> {
        let (m, s) = match (tape.mode(), &cfg.prior, &cfg.divergence) {
            (
                SampleMode::Sample,
                Prior::Normal { loc, scale },
                KlMethod::Auto | KlMethod::Analytic,
            ) if loc.is_finite() && scale.is_finite() && *scale > 0.0 => (*loc, *scale),
            _ => return Ok(None),
        };
        // the op reads rho as stored and applies the softplus itself
        let shift = match store.constraint(self.rho)? {
            Constraint::Positive { eps } => F::lit(eps),
            _ => return Ok(None),
        };
        let loc = tape.try_param(store, self.loc)?;
        let rho = tape.try_param_raw(store, self.rho)?;
        let (delta, kl) =
            loc.mean_field_sample(rho, shift, (F::lit(m), F::lit(s)), rng.next_u64())?;
        let y = output(loc, delta, rng)?;
        tape.add_divergence(format!("{layer}/kernel_divergence"), kl)?;
        Ok(Some(y))
    }

    /// The posterior on the tape.
    pub(crate) fn read<'t, F: Element>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
    ) -> Result<Normal<'t, F>> {
        Normal::new(
            tape.try_param(store, self.loc)?,
            tape.try_param(store, self.rho)?,
        )
    }
}

pub(crate) use crate::random::{rademacher, standard_normal as noise};

/// The posterior weight sample of one forward pass, turned into weights
/// only if the divergence needs them (an analytic KL does not).
#[derive(Clone, Copy)]
pub(crate) enum PassSample<'t, F: Element> {
    /// The weights themselves.
    Weights(Var<'t, F>),
    /// Flipout's `delta`: the weights are `loc + delta`.
    Perturbation(Var<'t, F>),
    /// The estimator drew no weights (local reparameterization): draw some.
    NotDrawn,
}

impl<'t, F: Element> PassSample<'t, F> {
    pub(crate) fn weights(
        self,
        loc: Var<'t, F>,
        scale: Var<'t, F>,
        shape: &[usize],
        rng: &mut dyn Rng,
    ) -> Var<'t, F> {
        match self {
            PassSample::Weights(w) => w,
            PassSample::Perturbation(delta) => loc + delta,
            PassSample::NotDrawn => loc + scale * noise(shape, rng),
        }
    }
}

/// Computes and registers the divergence of one posterior.
pub(crate) fn register_divergence<'t, F: Element>(
    tape: &'t Tape<F>,
    store: &ParamStore<F>,
    name: String,
    q: &Normal<'t, F>,
    sample: impl FnOnce() -> Var<'t, F>,
    cfg: &VariationalConfig<F>,
    shape: &[usize],
) -> Result<()> {
    let p = cfg.prior.build(tape, store, shape)?;
    let kl = match &cfg.divergence {
        KlMethod::Analytic => kl_divergence(q, p.as_ref())?,
        KlMethod::Auto => match kl_divergence(q, p.as_ref()) {
            Err(Error::NoAnalyticKl { .. }) => kl_from_sample(q, p.as_ref(), sample())?,
            other => other?,
        },
        KlMethod::SampleEstimate => kl_from_sample(q, p.as_ref(), sample())?,
        KlMethod::Custom(f) => f(q, p.as_ref(), sample())?,
    };
    tape.add_divergence(name, kl)
}

/// The bias of a variational layer.
pub(crate) enum Bias {
    None,
    Deterministic(Param),
    Variational(MeanField),
}

impl Bias {
    pub(crate) fn new<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        width: usize,
        cfg: &VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        Ok(match cfg.bias {
            BiasMode::None => Bias::None,
            BiasMode::Deterministic => {
                Bias::Deterministic(store.try_add(format!("{name}/bias"), Tensor::zeros(&[width]))?)
            }
            BiasMode::Variational => Bias::Variational(MeanField::new(
                store,
                &format!("{name}/bias_posterior"),
                &[width],
                cfg,
                rng,
            )?),
        })
    }

    /// Adds the bias (one posterior sample per forward pass) and registers
    /// `<layer>/bias_divergence` for a variational bias.
    pub(crate) fn apply<'t, F: Element>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        layer: &str,
        y: Var<'t, F>,
        cfg: &VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
        match self {
            Bias::None => Ok(y),
            Bias::Deterministic(b) => y.try_add(tape.try_param(store, *b)?),
            Bias::Variational(mf) => {
                let q = mf.read(tape, store)?;
                let b = match tape.mode() {
                    SampleMode::Sample => q.rsample(rng)?,
                    SampleMode::PosteriorMean => q.loc(),
                };
                register_divergence(
                    tape,
                    store,
                    format!("{layer}/bias_divergence"),
                    &q,
                    || b,
                    cfg,
                    &mf.shape,
                )?;
                y.try_add(b)
            }
        }
    }
}

/// Which gradient estimator a variational layer uses.
pub trait Estimator: 'static {
    /// Its name.
    const NAME: &'static str;
    /// Its kind.
    const KIND: EstimatorKind;
}

/// The three estimators as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimatorKind {
    /// `W = loc + scale * eps`, `y = x W`.
    Reparameterization,
    /// `y = x loc + ((x * s_in) dW) * s_out`, Rademacher signs per example.
    Flipout,
    /// `y ~ N(x loc, x^2 scale^2)` sampled per output unit.
    LocalReparameterization,
}

/// Marker: the reparameterization estimator (one weight sample per pass).
pub struct Reparameterization;
/// Marker: Flipout (Wen et al. 2018), decorrelating examples in a batch.
pub struct Flipout;
/// Marker: local reparameterization (Kingma et al. 2015).
pub struct LocalReparameterization;

impl Estimator for Reparameterization {
    const NAME: &'static str = "reparameterization";
    const KIND: EstimatorKind = EstimatorKind::Reparameterization;
}
impl Estimator for Flipout {
    const NAME: &'static str = "flipout";
    const KIND: EstimatorKind = EstimatorKind::Flipout;
}
impl Estimator for LocalReparameterization {
    const NAME: &'static str = "local_reparameterization";
    const KIND: EstimatorKind = EstimatorKind::LocalReparameterization;
}

/// A fully connected layer with a mean-field Normal posterior over its
/// kernel, trained by the estimator `E`.
///
/// Each forward pass registers `<name>/kernel_divergence` (and
/// `<name>/bias_divergence` for a variational bias) on the tape: analytic
/// for a Normal prior, else a Monte Carlo estimate at the posterior sample
/// of that pass — for every estimator, including Flipout and local
/// reparameterization, where TFP has no sample to give a spike-and-slab prior.
///
/// With the tape in [`SampleMode::PosteriorMean`] the layer is deterministic.
pub struct DenseVariational<F: Element, E: Estimator> {
    name: String,
    inputs: usize,
    outputs: usize,
    kernel: MeanField,
    bias: Bias,
    config: VariationalConfig<F>,
    _estimator: PhantomData<E>,
}

/// [`DenseVariational`] with the reparameterization estimator (`tfp.layers.DenseReparameterization`).
pub type DenseReparameterization<F> = DenseVariational<F, Reparameterization>;
/// [`DenseVariational`] with Flipout (`tfp.layers.DenseFlipout`).
pub type DenseFlipout<F> = DenseVariational<F, Flipout>;
/// [`DenseVariational`] with local reparameterization (`tfp.layers.DenseLocalReparameterization`).
pub type DenseLocalReparameterization<F> = DenseVariational<F, LocalReparameterization>;

impl<F: Element, E: Estimator> DenseVariational<F, E> {
    /// A layer with TFP's defaults: posterior `N(loc, softplus(rho) + 1e-5)`,
    /// `loc ~ N(0, 0.1)`, `rho ~ N(-3, 0.1)`, prior `N(0, 1)`, deterministic bias.
    pub fn new(
        store: &mut ParamStore<F>,
        name: &str,
        inputs: usize,
        outputs: usize,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        Self::with_config(
            store,
            name,
            inputs,
            outputs,
            VariationalConfig::default(),
            rng,
        )
    }

    /// A layer with explicit settings.
    pub fn with_config(
        store: &mut ParamStore<F>,
        name: &str,
        inputs: usize,
        outputs: usize,
        config: VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        if inputs == 0 || outputs == 0 {
            return Err(Error::invalid(
                "DenseVariational::new",
                format!("layer '{name}' needs inputs and outputs >= 1"),
            ));
        }
        let kernel = MeanField::new(
            store,
            &format!("{name}/kernel_posterior"),
            &[inputs, outputs],
            &config,
            rng,
        )?;
        let bias = Bias::new(store, name, outputs, &config, rng)?;
        Ok(DenseVariational {
            name: name.to_string(),
            inputs,
            outputs,
            kernel,
            bias,
            config,
            _estimator: PhantomData,
        })
    }

    /// The kernel posterior's `loc` and `rho` parameters.
    pub fn kernel_params(&self) -> (Param, Param) {
        (self.kernel.loc, self.kernel.rho)
    }

    /// The number of output units.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

impl<F: Element, E: Estimator> Module<F> for DenseVariational<F, E> {
    fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        rng: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
        check_dense_input(&self.name, &x, self.inputs)?;
        let batch = x.shape()[0];
        let flipout = |loc: Var<'t, F>, delta: Var<'t, F>, rng: &mut dyn Rng| {
            let s_in = rademacher(&[batch, self.inputs], rng);
            let s_out = rademacher(&[batch, self.outputs], rng);
            Ok::<_, Error>(x.matmul(loc)? + (x * s_in).matmul(delta)? * s_out)
        };
        if E::KIND != EstimatorKind::LocalReparameterization {
            let output = |loc: Var<'t, F>, delta, rng: &mut dyn Rng| match E::KIND {
                EstimatorKind::Flipout => flipout(loc, delta, rng),
                _ => x.matmul(loc + delta),
            };
            let fused =
                self.kernel
                    .forward_fused(tape, store, &self.name, &self.config, rng, output)?;
            if let Some(y) = fused {
                return self
                    .bias
                    .apply(tape, store, &self.name, y, &self.config, rng);
            }
        }
        let q = self.kernel.read(tape, store)?;
        let (loc, scale) = (q.loc(), q.scale());
        let shape = [self.inputs, self.outputs];
        let (y, sample) = match (tape.mode(), E::KIND) {
            (SampleMode::PosteriorMean, _) => (x.matmul(loc)?, PassSample::Weights(loc)),
            (_, EstimatorKind::Reparameterization) => {
                let w = loc + scale * noise(&shape, rng);
                (x.matmul(w)?, PassSample::Weights(w))
            }
            (_, EstimatorKind::Flipout) => {
                let delta = scale * noise(&shape, rng);
                (flipout(loc, delta, rng)?, PassSample::Perturbation(delta))
            }
            (_, EstimatorKind::LocalReparameterization) => {
                let mean = x.matmul(loc)?;
                let var = x.square().matmul(scale.square())?;
                let sd = (var + F::min_positive_value()).sqrt();
                (
                    mean + sd * noise(&[batch, self.outputs], rng),
                    PassSample::NotDrawn,
                )
            }
        };
        let draw = || sample.weights(loc, scale, &shape, rng);
        register_divergence(
            tape,
            store,
            format!("{}/kernel_divergence", self.name),
            &q,
            draw,
            &self.config,
            &shape,
        )?;
        self.bias
            .apply(tape, store, &self.name, y, &self.config, rng)
    }
    fn name(&self) -> &str {
        &self.name
    }
}
