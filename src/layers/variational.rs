//! The variational layer, one implementation over every [`LinearMap`]:
//! its posterior parameters, priors, divergences and estimators.

use super::Module;
use super::linear_map::{Conv2dMap, DenseMap, Epilogue, LinearMap};
use crate::autodiff::params::{Constraint, POSITIVE_EPS, Param, ParamStore};
use crate::autodiff::tape::{Op, Tape, Var};
use crate::bayes::forward::{Forward, SampleMode};
use crate::distributions::kl::{kl_divergence, kl_from_sample};
use crate::distributions::{Distribution, Normal, SpikeAndSlab};
use crate::error::{Error, Result};
use crate::kernels::parallel::par_new;
use crate::tensor::{Element, Tensor};
use rand::Rng;
use std::marker::PhantomData;
use std::sync::Arc;

/// Builds a prior on a tape for a weight tensor of the given shape. Its
/// parameters may be read from the store, i.e. trainable.
pub type PriorFn<F> = dyn for<'t> Fn(&'t Tape<F>, &ParamStore<F>, &[usize]) -> Result<Box<dyn Distribution<'t, F> + 't>>
    + Send
    + Sync;

/// A user-defined divergence: given the posterior, the prior and the
/// posterior sample used in the forward pass, returns the KL term.
pub type KlFn<F> = dyn for<'t> Fn(&Normal<'t, F>, &dyn Distribution<'t, F>, Var<'t, F>) -> Result<Var<'t, F>>
    + Send
    + Sync;

/// The prior over a layer's weights.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// // a prior whose scale is learned: read from the store on every pass
/// let scale = store.add_positive("prior/scale", Tensor::scalar(1.0));
/// let learned = Prior::custom(move |tape, store, _shape| {
///     Ok(Box::new(Normal::new(tape.scalar(0.0), tape.try_param(store, scale)?)?))
/// });
/// for prior in [Prior::default(), Prior::spike_and_slab_tfp(), learned] {
///     let config = VariationalConfig { prior, ..VariationalConfig::default() };
///     let name = format!("layer{}", store.len());
///     let mut rng = StdRng::seed_from_u64(0);
///     let layer = DenseFlipout::with_config(&mut store, &name, 3, 2, config, &mut rng)?;
///     let tape = Tape::new();
///     let mut cx = Forward::new(&tape, &store, &mut rng);
///     layer.forward(&mut cx, tape.constant(Tensor::ones(&[4, 3])))?;
///     assert!(cx.divergences().total().item()?.is_finite());
/// }
/// # Ok::<(), bayesgrad::Error>(())
/// ```
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
    Custom(Arc<PriorFn<F>>),
    /// `N(0, (τ λ)²)` with random scales that have variational posteriors
    /// ([`HierarchicalScale`](super::HierarchicalScale)); the layer registers
    /// their divergence as `<layer>/scale_divergence`. Kernels only.
    Hierarchical(Arc<super::HierarchicalScale>),
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
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Prior::Custom(Arc::new(f))
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
            Prior::Hierarchical(_) => {
                return Err(Error::invalid(
                    "Prior::Hierarchical",
                    "a hierarchical prior draws its scales in the layer's forward pass; it has no fixed distribution",
                ));
            }
        })
    }
}

/// How a layer computes its KL term.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// // a spike-and-slab prior has no closed-form KL: estimate it at the pass's sample
/// let config = VariationalConfig {
///     prior: Prior::spike_and_slab_tfp(),
///     divergence: KlMethod::SampleEstimate,
///     ..VariationalConfig::default()
/// };
/// let layer = DenseFlipout::with_config(&mut store, "dense", 3, 2, config, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// layer.forward(&mut cx, tape.constant(Tensor::zeros(&[4, 3])))?;
/// assert!(cx.divergences().get("dense/kernel_divergence").is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
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
    Custom(Arc<KlFn<F>>),
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
///
/// ```
/// use bayesgrad::prelude::*;
/// let config = VariationalConfig::<f32> {
///     bias: BiasMode::Variational,            // a posterior over the bias too
///     prior: Prior::spike_and_slab_tfp(),     // 0.5 N(0, 1) + 0.5 N(0, 2000)
///     divergence: KlMethod::SampleEstimate,   // ln q(w) - ln p(w) at the pass's sample
///     ..VariationalConfig::default()
/// };
/// let mut store = ParamStore::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = DenseReparameterization::with_config(&mut store, "h", 3, 2, config, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// layer.forward(&mut cx, tape.constant(Tensor::ones(&[1, 3])))?;
/// let names: Vec<String> = cx.divergences().values().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["h/kernel_divergence", "h/bias_divergence"]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
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
                    format!(
                        "{setting}'s standard deviation must be finite and >= 0, got {std} (layer '{name}')"
                    ),
                ));
            }
        }
        crate::tensor::checked_alloc::<F>(&format!("layer '{name}'"), shape)?;
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

    /// The posterior on the tape.
    pub(crate) fn read<'t, F: Element>(&self, cx: &Forward<'t, '_, F>) -> Result<Normal<'t, F>> {
        Normal::new(cx.param(self.loc)?, cx.param(self.rho)?)
    }
}

use super::meanfield::FusedPrior;
use super::sample_axis::draw_and_register;
use crate::tensor::rademacher;
pub(crate) use crate::tensor::standard_normal as noise;

/// A posterior draw `loc + scale · ε` made for the divergence alone, for
/// a pass whose output did not draw the weights (the moments of local
/// reparameterization, or the posterior means): a sampled divergence is
/// then still `ln q(w) - ln p(w)` at a draw from `q`, not at its mean,
/// where `ln q` is at its largest (`Σ ε²/2` too high: half a nat a weight).
fn divergence_draw<'t, 'q, F: Element>(
    q: &'q Normal<'t, F>,
    shape: &'q [usize],
) -> impl FnOnce(&mut dyn Rng) -> Var<'t, F> + 'q {
    move |rng| q.loc() + q.scale() * noise(shape, rng)
}

/// Computes and registers the divergence of one posterior.
pub(crate) fn register_divergence<'t, F: Element>(
    cx: &mut Forward<'t, '_, F>,
    name: String,
    q: &Normal<'t, F>,
    sample: impl FnOnce(&mut dyn Rng) -> Var<'t, F>,
    cfg: &VariationalConfig<F>,
    shape: &[usize],
) -> Result<()> {
    if let Prior::Hierarchical(h) = &cfg.prior {
        let layer = name.strip_suffix("/kernel_divergence").ok_or_else(|| {
            Error::invalid(
                "Prior::Hierarchical",
                format!("'{name}': a hierarchical prior applies to kernels; give the bias a deterministic or Normal prior (BiasMode::Deterministic)"),
            )
        })?;
        let (p, scale_kl) = h.prior(cx, layer, shape)?;
        let kl = match &cfg.divergence {
            KlMethod::SampleEstimate => kl_from_sample(q, &p, sample(cx.rng()))?,
            KlMethod::Custom(f) => f(q, &p, sample(cx.rng()))?,
            KlMethod::Auto | KlMethod::Analytic => kl_divergence(q, &p)?,
        };
        let scale_name = format!("{layer}/scale_divergence");
        cx.add_divergence(name, kl)?;
        return match scale_kl {
            Some(scale_kl) => cx.add_divergence(scale_name, scale_kl),
            // another layer of the pass drew the shared scale and registered it
            None => Ok(()),
        };
    }
    let p = cfg.prior.build(cx.tape(), cx.store(), shape)?;
    let kl = match &cfg.divergence {
        KlMethod::Analytic => kl_divergence(q, p.as_ref())?,
        KlMethod::Auto => match kl_divergence(q, p.as_ref()) {
            Err(Error::NoAnalyticKl { .. }) => kl_from_sample(q, p.as_ref(), sample(cx.rng()))?,
            other => other?,
        },
        KlMethod::SampleEstimate => kl_from_sample(q, p.as_ref(), sample(cx.rng()))?,
        KlMethod::Custom(f) => f(q, p.as_ref(), sample(cx.rng()))?,
    };
    cx.add_divergence(name, kl)
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
        cx: &mut Forward<'t, '_, F>,
        layer: &str,
        y: Var<'t, F>,
        cfg: &VariationalConfig<F>,
    ) -> Result<Var<'t, F>> {
        match self {
            Bias::None => Ok(y),
            Bias::Deterministic(b) => y.try_add(cx.param(*b)?),
            Bias::Variational(mf) => {
                let q = mf.read(cx)?;
                let b = match cx.mode() {
                    SampleMode::Sample => q.rsample(cx.rng())?,
                    SampleMode::PosteriorMean => {
                        let name = format!("{layer}/bias_divergence");
                        let draw = divergence_draw(&q, &mf.shape);
                        register_divergence(cx, name, &q, draw, cfg, &mf.shape)?;
                        return y.try_add(q.loc());
                    }
                    SampleMode::SampleAxis(_) => {
                        // one bias per sample, added to its block of rows
                        let shape = y.shape();
                        let (k, _) = cx.sample_blocks(layer, shape[0])?;
                        let name = format!("{layer}/bias_divergence");
                        let b = draw_and_register(cx, name, &q, cfg, &mf.shape, k)?;
                        let width = mf.shape.iter().product::<usize>();
                        let rows = shape.iter().product::<usize>() / (k * width);
                        let blocks = y.reshape(&[k, rows, width])?;
                        return (blocks + b.reshape(&[k, 1, width])?).reshape(&shape);
                    }
                };
                register_divergence(
                    cx,
                    format!("{layer}/bias_divergence"),
                    &q,
                    |_| b,
                    cfg,
                    &mf.shape,
                )?;
                y.try_add(b)
            }
        }
    }
}

/// What the estimator drew from the kernel posterior in one pass, kept for
/// a divergence that needs a weight sample (a prior without a closed form).
enum Drawn<'t, F: Element> {
    /// Nothing yet.
    Nothing,
    /// The fused sampler drew `delta` and computed the analytic KL with it.
    Fused { kl: Var<'t, F> },
    /// `delta = scale * eps`: the weights are `loc + delta`.
    Perturbation { q: Normal<'t, F>, delta: Var<'t, F> },
    /// Only the posterior's moments were used (local reparameterization):
    /// weights are drawn for the divergence if it needs them.
    Moments { q: Normal<'t, F> },
}

/// The kernel posterior of one forward pass, as an [`Estimator`] sees it:
/// it asks for what it needs (a weight perturbation, or the moments), and
/// the layer then registers the divergence that fits what was drawn.
pub struct PosteriorPass<'t, 'c, 'a, F: Element> {
    cx: &'c mut Forward<'t, 'a, F>,
    kernel: &'c MeanField,
    layer: &'c str,
    config: &'c VariationalConfig<F>,
    drawn: Drawn<'t, F>,
    /// What the layer applies after the map, until an estimator takes it.
    epilogue: Epilogue<'t, F>,
}

impl<'t, F: Element> PosteriorPass<'t, '_, '_, F> {
    /// The posterior mean `loc` and one perturbation `delta = scale * eps`,
    /// `eps ~ N(0, 1)` of the kernel's shape: the weights of this pass are
    /// `loc + delta`. For the default layer (a Normal prior with an analytic
    /// divergence) `delta` and the KL term come from one fused op, and so do
    /// `delta` and the single-sample estimate at `loc + delta` for a
    /// spike-and-slab prior.
    pub fn perturbation(&mut self) -> Result<(Var<'t, F>, Var<'t, F>)> {
        if let Some(fused) = self.fused_prior()? {
            let (loc, delta, kl) = self.fused_draw(fused)?;
            self.drawn = Drawn::Fused { kl };
            return Ok((loc, delta));
        }
        let q = self.kernel.read(self.cx)?;
        let delta = q.scale() * noise(&self.kernel.shape, self.cx.rng());
        let loc = q.loc();
        self.drawn = Drawn::Perturbation { q, delta };
        Ok((loc, delta))
    }

    /// The posterior mean and scale, drawing nothing.
    pub fn moments(&mut self) -> Result<(Var<'t, F>, Var<'t, F>)> {
        let q = self.kernel.read(self.cx)?;
        let (loc, scale) = (q.loc(), q.scale());
        self.drawn = Drawn::Moments { q };
        Ok((loc, scale))
    }

    /// The pass's RNG.
    pub fn rng(&mut self) -> &mut dyn Rng {
        self.cx.rng()
    }

    /// The layer's [`Epilogue`] (its deterministic bias, and pooling when
    /// a max-pooling layer follows), for an estimator that applies it with
    /// its map ([`LinearMap::flipout_with`]); an empty one once taken. The
    /// layer applies what was not taken after the estimator's output. A
    /// variational bias is not part of it: the layer adds it (and then
    /// pools) itself.
    pub fn take_epilogue(&mut self) -> Epilogue<'t, F> {
        std::mem::replace(&mut self.epilogue, Epilogue::none())
    }

    /// `(loc, delta, kl)` from the fused sampler for `prior` and the
    /// softplus shift, its normals seeded from the pass's RNG (the draw
    /// `noise` would give).
    fn fused_draw(
        &mut self,
        (prior, shift): (FusedPrior<F>, F),
    ) -> Result<(Var<'t, F>, Var<'t, F>, Var<'t, F>)> {
        let loc = self.cx.param(self.kernel.loc)?;
        let rho = self.cx.param_raw(self.kernel.rho)?;
        let seed = self.cx.rng().next_u64();
        let (delta, kl) = loc.mean_field_sample(rho, shift, prior, seed)?;
        Ok((loc, delta, kl))
    }

    /// The prior and the softplus shift when a fused sampler serves this
    /// layer, with `rho` stored with the softplus constraint:
    ///
    /// - a finite scalar Normal prior with an analytic (or automatic)
    ///   divergence: the closed form;
    /// - a valid spike-and-slab prior with the single-sample estimate (or
    ///   the automatic divergence, which is that estimate for it): the
    ///   estimate at the pass's weights.
    ///
    /// A rule registered by the user for the pair (`register_kl`) is for
    /// [`kl_divergence`] to apply: then the composed path serves.
    fn fused_prior(&self) -> Result<Option<(FusedPrior<F>, F)>> {
        use crate::distributions::MixtureOfNormals;
        use crate::distributions::kl::user_rule_for;
        let valid = |v: f64, lo: F, hi: F| F::lit(v) > lo && F::lit(v) < hi;
        // the fused op weighs a mixture's components by `1 / s²` in F: a
        // scale whose square's reciprocal overflows (below about 5e-20 in
        // f32) takes the mixture op, which keeps its gradients finite
        let precise = |s: f64| {
            let inv = F::lit(1.0 / s);
            valid(s, F::zero(), F::infinity()) && (inv * inv).is_finite()
        };
        let prior = match (&self.config.prior, &self.config.divergence) {
            (Prior::Normal { loc, scale }, KlMethod::Auto | KlMethod::Analytic)
                if valid(*loc, F::neg_infinity(), F::infinity())
                    && valid(*scale, F::zero(), F::infinity())
                    && !user_rule_for::<Normal<'static, F>, Normal<'static, F>>() =>
            {
                FusedPrior::Normal {
                    loc: F::lit(*loc),
                    scale: F::lit(*scale),
                }
            }
            (
                Prior::SpikeAndSlab {
                    pi,
                    spike_scale,
                    slab_scale,
                },
                method @ (KlMethod::Auto | KlMethod::SampleEstimate),
            ) if valid(*pi, F::zero(), F::one())
                && [spike_scale, slab_scale].iter().all(|&&s| precise(s))
                && (matches!(method, KlMethod::SampleEstimate)
                    || !user_rule_for::<Normal<'static, F>, MixtureOfNormals<'static, F>>()) =>
            {
                FusedPrior::spike_and_slab(*pi, *spike_scale, *slab_scale)
            }
            _ => return Ok(None),
        };
        // the op reads rho as stored and applies the softplus itself
        Ok(match self.cx.store().constraint(self.kernel.rho)? {
            Constraint::Positive { eps } => Some((prior, F::lit(eps))),
            _ => None,
        })
    }

    /// Registers `<layer>/kernel_divergence` for what was drawn.
    fn register(mut self) -> Result<()> {
        let name = format!("{}/kernel_divergence", self.layer);
        let shape = &self.kernel.shape;
        match self.drawn {
            Drawn::Fused { kl } => self.cx.add_divergence(name, kl),
            Drawn::Perturbation { q, delta } => {
                let w = |_: &mut dyn Rng| q.loc() + delta;
                register_divergence(self.cx, name, &q, w, self.config, shape)
            }
            Drawn::Moments { q } => {
                // weights drawn for the divergence alone: for a spike-and-slab
                // prior, by the fused op (the same draw as `noise` would give)
                if let Some(fused @ (FusedPrior::Mixture(_), _)) = self.fused_prior()? {
                    let (_, _, kl) = self.fused_draw(fused)?;
                    return self.cx.add_divergence(name, kl);
                }
                let w = divergence_draw(&q, shape);
                register_divergence(self.cx, name, &q, w, self.config, shape)
            }
            Drawn::Nothing => Err(Error::invalid(
                "Estimator",
                format!(
                    "layer '{}': the estimator used neither the perturbation nor the moments of the posterior",
                    self.layer
                ),
            )),
        }
    }
}

/// A gradient estimator for a variational layer: how one stochastic
/// forward pass turns the kernel posterior into an output. Behaviour, not
/// a tag: the layer calls it with its [`LinearMap`] and the pass's
/// [`PosteriorPass`], and registers the divergence that fits what it drew.
///
/// The three of TFP are built in ([`Reparameterization`], [`Flipout`],
/// [`LocalReparameterization`]); each works with every map.
pub trait Estimator: Send + Sync + 'static {
    /// Its name.
    const NAME: &'static str;

    /// One stochastic pass of `x` through `map`.
    fn output<'t, F: Element, M: LinearMap<F>>(
        map: &M,
        x: Var<'t, F>,
        posterior: &mut PosteriorPass<'t, '_, '_, F>,
    ) -> Result<Var<'t, F>>;
}

/// The reparameterization estimator: one weight sample per pass,
/// `W = loc + scale * eps`, `y = x ⊛ W`.
pub struct Reparameterization;
/// Flipout (Wen et al. 2018): `y = x ⊛ loc + ((x ∘ s_in) ⊛ dW) ∘ s_out`,
/// one `dW = scale * eps` per pass, Rademacher signs per example, so that
/// examples in a batch get decorrelated perturbations.
pub struct Flipout;
/// Local reparameterization (Kingma et al. 2015): each output unit is
/// drawn from its marginal `N(x ⊛ loc, x² ⊛ scale²)`. For a convolution
/// the variance is `conv(x², scale²)` (TFP has no convolutional form).
pub struct LocalReparameterization;

impl Estimator for Reparameterization {
    const NAME: &'static str = "reparameterization";
    fn output<'t, F: Element, M: LinearMap<F>>(
        map: &M,
        x: Var<'t, F>,
        posterior: &mut PosteriorPass<'t, '_, '_, F>,
    ) -> Result<Var<'t, F>> {
        let (loc, delta) = posterior.perturbation()?;
        map.apply(x, loc + delta)
    }
}

impl Estimator for Flipout {
    const NAME: &'static str = "flipout";
    fn output<'t, F: Element, M: LinearMap<F>>(
        map: &M,
        x: Var<'t, F>,
        posterior: &mut PosteriorPass<'t, '_, '_, F>,
    ) -> Result<Var<'t, F>> {
        let (loc, delta) = posterior.perturbation()?;
        // one sign per example and input unit, and per example and output unit
        let (batch, kernel) = (x.shape()[0], map.kernel_shape());
        let (inputs, outputs) = (kernel[kernel.len() - 2], kernel[kernel.len() - 1]);
        let s_in = rademacher(&[batch, inputs], posterior.rng());
        let s_out = rademacher(&[batch, outputs], posterior.rng());
        let epilogue = posterior.take_epilogue();
        map.flipout_with(x, (loc, delta), (s_in, s_out), epilogue)
    }
}

impl Estimator for LocalReparameterization {
    const NAME: &'static str = "local_reparameterization";
    fn output<'t, F: Element, M: LinearMap<F>>(
        map: &M,
        x: Var<'t, F>,
        posterior: &mut PosteriorPass<'t, '_, '_, F>,
    ) -> Result<Var<'t, F>> {
        let (loc, scale) = posterior.moments()?;
        let (mean, var) = map.apply_pair((x, loc), (x.square(), scale.square()))?;
        let eps = noise(&mean.shape(), posterior.rng());
        local_draw(mean, var, F::min_positive_value(), eps)
    }
}

/// `mean + √(var + floor) ε` for the noise `ε` (of `mean`'s shape): the
/// outputs a local reparameterization pass draws from their marginals, as
/// one node instead of four (shift, square root, product, sum), each an
/// output-sized pass forward and backward.
pub(crate) fn local_draw<'t, F: Element>(
    mean: Var<'t, F>,
    var: Var<'t, F>,
    floor: F,
    eps: Tensor<F>,
) -> Result<Var<'t, F>> {
    if mean.shape() != var.shape() || mean.shape() != eps.shape() {
        return Err(Error::ShapeMismatch {
            op: "local_draw",
            lhs: mean.shape(),
            rhs: var.shape(),
        });
    }
    mean.tape().apply(LocalDraw { floor, eps }, &[mean, var])
}

/// The op of [`local_draw`]: the same operations as the four nodes it
/// replaces, in the same order, so the same bits forward and backward
/// (`∂/∂mean = g`, `∂/∂var = g ε · 0.5 / √(var + floor)`).
struct LocalDraw<F> {
    floor: F,
    eps: Tensor<F>,
}

impl<F: Element> Op<F> for LocalDraw<F> {
    fn name(&self) -> &str {
        "local_draw"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (mean, var, eps) = (inputs[0].data(), inputs[1].data(), self.eps.data());
        let floor = self.floor;
        // SAFETY: the loop writes every element of each chunk.
        let out = unsafe {
            par_new(
                mean.len(),
                #[inline(always)]
                move |start, chunk| {
                    let terms = mean[start..].iter().zip(&var[start..]).zip(&eps[start..]);
                    for (o, ((&m, &v), &e)) in chunk.iter_mut().zip(terms) {
                        o.write(m + (v + floor).sqrt() * e);
                    }
                },
            )
        };
        Ok(Tensor::new_unchecked(out, inputs[0].shape().to_vec()))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (var, eps, g) = (inputs[1].data(), self.eps.data(), grad.data());
        let floor = self.floor;
        // SAFETY: the loop writes every element of each chunk.
        let d_var = unsafe {
            par_new(
                var.len(),
                #[inline(always)]
                move |start, chunk| {
                    let terms = var[start..].iter().zip(&eps[start..]).zip(&g[start..]);
                    for (o, ((&v, &e), &g)) in chunk.iter_mut().zip(terms) {
                        o.write(g * e * (F::lit(0.5) / (v + floor).sqrt()));
                    }
                },
            )
        };
        let d_var = Tensor::new_unchecked(d_var, inputs[1].shape().to_vec());
        Ok(vec![Some(grad.clone()), Some(d_var)])
    }
}

/// A variational layer: a [`LinearMap`] (dense or convolution) whose kernel
/// has a mean-field Normal posterior, trained by the estimator `E`.
///
/// Each forward pass registers `<name>/kernel_divergence` (and
/// `<name>/bias_divergence` for a variational bias) in the
/// [`Forward`] context: analytic for a Normal prior, else a Monte Carlo
/// estimate at the posterior sample of that pass, for every estimator,
/// including Flipout and local reparameterization, where TFP has no sample
/// to give a spike-and-slab prior.
///
/// In [`SampleMode::PosteriorMean`] the layer is deterministic.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f32>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let dense = DenseFlipout::new(&mut store, "dense", 4, 2, &mut rng)?;
/// let map = Conv2dMap::new(3, 8, 3).padding(Padding::Same);
/// let conv = Conv2dLocalReparameterization::new(&mut store, "conv", map, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = dense.forward(&mut cx, tape.constant(Tensor::zeros(&[5, 4])))?;
/// let z = conv.forward(&mut cx, tape.constant(Tensor::zeros(&[2, 6, 6, 3])))?;
/// assert_eq!((y.shape(), z.shape()), (vec![5, 2], vec![2, 6, 6, 8]));
/// assert_eq!(cx.divergences().len(), 2);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Variational<F: Element, M: LinearMap<F>, E: Estimator> {
    name: String,
    map: M,
    kernel: MeanField,
    bias: Bias,
    config: VariationalConfig<F>,
    _estimator: PhantomData<E>,
}

impl<F: Element, M: LinearMap<F> + std::fmt::Debug, E: Estimator> std::fmt::Debug
    for Variational<F, M, E>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variational")
            .field("name", &self.name)
            .field("map", &self.map)
            .field("estimator", &E::NAME)
            .finish_non_exhaustive()
    }
}

/// A fully connected variational layer (`x: [batch, inputs]`).
pub type DenseVariational<F, E> = Variational<F, DenseMap, E>;
/// [`DenseVariational`] with the reparameterization estimator (`tfp.layers.DenseReparameterization`).
pub type DenseReparameterization<F> = DenseVariational<F, Reparameterization>;
/// [`DenseVariational`] with Flipout (`tfp.layers.DenseFlipout`).
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f32>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = DenseFlipout::new(&mut store, "dense", 784, 10, &mut rng)?;
/// // kernel posterior loc and rho, and a deterministic bias
/// assert_eq!(store.params().count(), 3);
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = layer.forward(&mut cx, tape.constant(Tensor::zeros(&[32, 784])))?;
/// assert_eq!(y.shape(), vec![32, 10]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub type DenseFlipout<F> = DenseVariational<F, Flipout>;
/// [`DenseVariational`] with local reparameterization (`tfp.layers.DenseLocalReparameterization`).
pub type DenseLocalReparameterization<F> = DenseVariational<F, LocalReparameterization>;
/// A variational 2-D convolution (NHWC input, kernel `[K, K, C_in, C_out]`).
pub type Conv2dVariational<F, E> = Variational<F, Conv2dMap, E>;
/// [`Conv2dVariational`] with the reparameterization estimator (`tfp.layers.Convolution2DReparameterization`).
pub type Conv2dReparameterization<F> = Conv2dVariational<F, Reparameterization>;
/// [`Conv2dVariational`] with Flipout (`tfp.layers.Convolution2DFlipout`).
pub type Conv2dFlipout<F> = Conv2dVariational<F, Flipout>;
/// [`Conv2dVariational`] with local reparameterization: output variance `conv(x², scale²)`.
pub type Conv2dLocalReparameterization<F> = Conv2dVariational<F, LocalReparameterization>;

impl<F: Element, M: LinearMap<F>, E: Estimator> Variational<F, M, E> {
    /// A layer over `map` with explicit settings ([`VariationalConfig`]'s
    /// defaults are TFP's: posterior `N(loc, softplus(rho) + 1e-5)`,
    /// `loc ~ N(0, 0.1)`, `rho ~ N(-3, 0.1)`, prior `N(0, 1)`, deterministic bias).
    ///
    /// # Errors
    /// A map with a zero-sized kernel or stride; a negative or non-finite
    /// initial spread; a name whose parameters are in the store already.
    /// Nothing is added to the store on error.
    pub fn from_map(
        store: &mut ParamStore<F>,
        name: &str,
        map: M,
        config: VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        let shape = map.kernel_shape();
        if shape.contains(&0) {
            return Err(Error::invalid(
                "Variational::new",
                format!("layer '{name}' needs a kernel of nonzero size, got {shape:?}"),
            ));
        }
        // a bias whose name is taken removes the kernel's parameters again
        let (kernel, bias) = store.adding(|store| {
            let kernel = MeanField::new(
                store,
                &format!("{name}/kernel_posterior"),
                &shape,
                &config,
                rng,
            )?;
            Ok((kernel, Bias::new(store, name, map.outputs(), &config, rng)?))
        })?;
        Ok(Variational {
            name: name.to_string(),
            map,
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

    /// The bias's parameter (a variational bias's posterior `loc`), if any.
    pub fn bias_loc(&self) -> Option<Param> {
        match &self.bias {
            Bias::None => None,
            Bias::Deterministic(p) => Some(*p),
            Bias::Variational(q) => Some(q.loc),
        }
    }

    /// The number of output units.
    pub fn outputs(&self) -> usize {
        self.map.outputs()
    }

    /// The linear map.
    pub fn map(&self) -> &M {
        &self.map
    }

    /// The layer's settings.
    pub fn config(&self) -> &VariationalConfig<F> {
        &self.config
    }
}

impl<F: Element, E: Estimator> Variational<F, DenseMap, E> {
    /// A dense `inputs -> outputs` layer with TFP's defaults.
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

    /// A dense `inputs -> outputs` layer with explicit settings.
    pub fn with_config(
        store: &mut ParamStore<F>,
        name: &str,
        inputs: usize,
        outputs: usize,
        config: VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        Self::from_map(store, name, DenseMap { inputs, outputs }, config, rng)
    }
}

impl<F: Element, E: Estimator> Variational<F, Conv2dMap, E> {
    /// A convolution over `map` with TFP's defaults.
    pub fn new(
        store: &mut ParamStore<F>,
        name: &str,
        map: Conv2dMap,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        Self::with_config(store, name, map, VariationalConfig::default(), rng)
    }

    /// A convolution over `map` with explicit settings.
    pub fn with_config(
        store: &mut ParamStore<F>,
        name: &str,
        map: Conv2dMap,
        config: VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        if map.stride == 0 {
            return Err(Error::invalid(
                "Conv2dVariational::new",
                format!("layer '{name}': the stride must be >= 1"),
            ));
        }
        Self::from_map(store, name, map, config, rng)
    }
}

impl<F: Element, M: LinearMap<F>, E: Estimator> Variational<F, M, E> {
    /// The forward pass, followed by max pooling over `k x k` windows with
    /// stride `k` when `max_pool` is `Some(k)`: in a stochastic pass the
    /// estimator may fuse the pooling (and a deterministic bias) into its
    /// map through the [`Epilogue`].
    fn forward_with<'t>(
        &self,
        cx: &mut Forward<'t, '_, F>,
        x: Var<'t, F>,
        max_pool: Option<usize>,
    ) -> Result<Var<'t, F>> {
        self.map.check_input(&self.name, &x)?;
        let y = match cx.mode() {
            SampleMode::PosteriorMean => {
                let q = self.kernel.read(cx)?;
                let name = format!("{}/kernel_divergence", self.name);
                let shape = &self.kernel.shape;
                register_divergence(
                    cx,
                    name,
                    &q,
                    divergence_draw(&q, shape),
                    &self.config,
                    shape,
                )?;
                self.map.apply(x, q.loc())?
            }
            SampleMode::SampleAxis(_) => {
                let (k, _) = cx.sample_blocks(&self.name, x.shape()[0])?;
                let q = self.kernel.read(cx)?;
                let name = format!("{}/kernel_divergence", self.name);
                let w = draw_and_register(cx, name, &q, &self.config, &self.kernel.shape, k)?;
                self.map.apply_samples(x, w, k)?
            }
            SampleMode::Sample => {
                // a variational bias is added by the layer, and the pooling
                // comes after it
                let (bias, fusable) = match &self.bias {
                    Bias::Deterministic(b) => (Some(cx.param(*b)?), true),
                    Bias::None => (None, true),
                    Bias::Variational(_) => (None, false),
                };
                let max_pool = max_pool.filter(|_| fusable);
                let mut posterior = PosteriorPass {
                    cx: &mut *cx,
                    kernel: &self.kernel,
                    layer: &self.name,
                    config: &self.config,
                    drawn: Drawn::Nothing,
                    epilogue: Epilogue { bias, max_pool },
                };
                let y = E::output(&self.map, x, &mut posterior)?;
                let untaken = posterior.take_epilogue();
                posterior.register()?;
                if fusable {
                    return untaken.apply(y);
                }
                y
            }
        };
        let y = self.bias.apply(cx, &self.name, y, &self.config)?;
        match max_pool {
            Some(k) => y.max_pool2d(k, k),
            None => Ok(y),
        }
    }
}

impl<F: Element, M: LinearMap<F>, E: Estimator> Module<F> for Variational<F, M, E> {
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.forward_with(cx, x, None)
    }
    /// In a stochastic pass with windows that do not overlap
    /// (`stride == size`), the pooling is handed to the estimator with the
    /// bias ([`Epilogue`]): Flipout's convolution pools each image while it
    /// is in cache.
    fn forward_max_pooled<'t>(
        &self,
        cx: &mut Forward<'t, '_, F>,
        x: Var<'t, F>,
        (size, stride): (usize, usize),
    ) -> Result<Var<'t, F>> {
        if size == stride && matches!(cx.mode(), SampleMode::Sample) {
            self.forward_with(cx, x, Some(size))
        } else {
            self.forward(cx, x)?.max_pool2d(size, stride)
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::tape::Tape;
    use rand::SeedableRng;

    /// The fused node gives the bits of the four nodes it replaces, forward
    /// and backward, including at a variance of zero (where the floor alone
    /// keeps the square root's slope finite).
    #[test]
    fn local_draw_gives_the_bits_of_the_separate_nodes() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let n = 3000;
        let mean: Tensor<f32> = noise(&[n], &mut rng);
        let var = noise::<f32>(&[n], &mut rng).map(|v| if v < -1.0 { 0.0 } else { v * v });
        let eps: Tensor<f32> = noise(&[n], &mut rng);
        let g: Tensor<f32> = noise(&[n], &mut rng);
        let floor = f32::MIN_POSITIVE;
        let run = |fused: bool| {
            let tape = Tape::new();
            let (m, v) = (tape.var(mean.clone()), tape.var(var.clone()));
            let y = match fused {
                true => local_draw(m, v, floor, eps.clone()).unwrap(),
                false => m + (v + floor).sqrt() * eps.clone(),
            };
            let grads = (y * g.clone()).sum().backward().unwrap();
            let bits = |t: &Tensor<f32>| t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (dm, dv) = (grads.get(m).unwrap(), grads.get(v).unwrap());
            (bits(&y.value()), bits(dm), bits(dv))
        };
        assert_eq!(run(true), run(false));
        let tape = Tape::new();
        let short = local_draw(tape.var(mean), tape.var(var), floor, noise(&[2], &mut rng));
        assert!(matches!(
            short,
            Err(Error::ShapeMismatch {
                op: "local_draw",
                ..
            })
        ));
    }
}
