//! Hierarchical priors: a kernel prior whose scale is itself random, with
//! a variational posterior (automatic relevance determination, or
//! shrinkage with a global and a local scale: the horseshoe under
//! half-Cauchy scale priors).

use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::Var;
use crate::bayes::forward::{Forward, SampleMode};
use crate::distributions::kl::{Divergence, kl_divergence_with};
use crate::distributions::{Distribution, Gamma, HalfCauchy, LogNormal, Normal};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};

/// A prior over a positive scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalePrior {
    /// `LogNormal(loc, scale)`: the scale's logarithm is `N(loc, scale)`.
    LogNormal {
        /// Mean of the log-scale.
        loc: f64,
        /// Standard deviation of the log-scale (> 0).
        scale: f64,
    },
    /// `Gamma(concentration, rate)`.
    Gamma {
        /// Shape (> 0).
        concentration: f64,
        /// Inverse scale (> 0).
        rate: f64,
    },
    /// `HalfCauchy(scale)`: with scale 1 for both the local and the global
    /// scale, the horseshoe prior (Carvalho, Polson and Scott 2010). Its
    /// divergence from the LogNormal posterior is a Monte Carlo estimate.
    HalfCauchy {
        /// The median (> 0).
        scale: f64,
    },
}

impl ScalePrior {
    fn check(&self, which: &str) -> Result<()> {
        let ok = match *self {
            ScalePrior::LogNormal { loc, scale } => {
                loc.is_finite() && scale > 0.0 && scale.is_finite()
            }
            ScalePrior::Gamma {
                concentration,
                rate,
            } => concentration > 0.0 && concentration.is_finite() && rate > 0.0 && rate.is_finite(),
            ScalePrior::HalfCauchy { scale } => scale > 0.0 && scale.is_finite(),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "HierarchicalScale",
                format!(
                    "the {which} scale prior {self:?} needs a finite location and positive parameters"
                ),
            ))
        }
    }

    fn build<'t, F: Element>(
        &self,
        cx: &Forward<'t, '_, F>,
    ) -> Result<Box<dyn Distribution<'t, F> + 't>> {
        let c = |v: f64| cx.tape().scalar(F::lit(v));
        Ok(match *self {
            ScalePrior::LogNormal { loc, scale } => Box::new(LogNormal::new(c(loc), c(scale))?),
            ScalePrior::Gamma {
                concentration,
                rate,
            } => Box::new(Gamma::new(c(concentration), c(rate))?),
            ScalePrior::HalfCauchy { scale } => Box::new(HalfCauchy::new(c(scale))?),
        })
    }
}

/// The random scale of a kernel prior, `w ~ N(0, (τ λ_i)²)`: one local
/// scale `λ_i` per input unit (the kernel's second-to-last axis) and one
/// global scale `τ`, each with a LogNormal posterior whose parameters live
/// in the store (`<name>/local_scale_loc`, `<name>/local_scale_rho`,
/// `<name>/global_scale_loc`, `<name>/global_scale_rho`).
///
/// A layer with [`Prior::Hierarchical`](super::Prior::Hierarchical)
/// draws `λ` and `τ` from their posteriors in each pass, registers the
/// kernel's KL to `N(0, (τ λ)²)` as `<layer>/kernel_divergence` and
/// `KL(q(λ) ‖ p(λ)) + KL(q(τ) ‖ p(τ))` as `<layer>/scale_divergence` (Monte
/// Carlo where no closed form exists, e.g. a Gamma prior).
///
/// One scale may serve several layers (a global shrinkage shared by a
/// network, as horseshoe priors often have it; their kernels then need the
/// same number of input units): a pass draws it once, for the first layer
/// that reads it, and registers its divergence once, under that layer's
/// name. Every layer reads the same draws.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::layers::{HierarchicalScale, ScalePrior};
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let ard = ScalePrior::LogNormal { loc: 0.0, scale: 1.0 };
/// let scale = HierarchicalScale::new(&mut store, "h/prior", 3, ard, ard)?;
/// let config = VariationalConfig { prior: Prior::Hierarchical(scale.into()), ..Default::default() };
/// let layer = DenseFlipout::with_config(&mut store, "h", 3, 2, config, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// layer.forward(&mut cx, tape.constant(Tensor::ones(&[4, 3])))?;
/// let names: Vec<String> = cx.divergences().values().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["h/kernel_divergence", "h/scale_divergence"]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HierarchicalScale {
    units: usize,
    local: (Param, Param),
    global: (Param, Param),
    local_prior: ScalePrior,
    global_prior: ScalePrior,
}

impl HierarchicalScale {
    /// Scales for a kernel with `units` input units; both posteriors start
    /// at `LogNormal(0, 0.1)` (scales near 1).
    ///
    /// # Errors
    /// `units == 0`; a prior with non-finite or non-positive parameters;
    /// names taken in the store (the store is then unchanged).
    pub fn new<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        units: usize,
        local_prior: ScalePrior,
        global_prior: ScalePrior,
    ) -> Result<Self> {
        if units == 0 {
            return Err(Error::invalid(
                "HierarchicalScale",
                "needs at least one unit",
            ));
        }
        local_prior.check("local")?;
        global_prior.check("global")?;
        let names = [
            "local_scale_loc",
            "local_scale_rho",
            "global_scale_loc",
            "global_scale_rho",
        ];
        for n in names {
            let full = format!("{name}/{n}");
            if store.get(&full).is_some() {
                return Err(Error::DuplicateParam { name: full });
            }
        }
        let mut add = |n: &str, shape: &[usize], value: f64, positive: bool| {
            let t = Tensor::full(shape, F::lit(value));
            let n = format!("{name}/{n}");
            if positive {
                store.try_add_positive(n, t)
            } else {
                store.try_add(n, t)
            }
        };
        let local = (
            add(names[0], &[units], 0.0, false)?,
            add(names[1], &[units], 0.1, true)?,
        );
        let global = (
            add(names[2], &[], 0.0, false)?,
            add(names[3], &[], 0.1, true)?,
        );
        Ok(HierarchicalScale {
            units,
            local,
            global,
            local_prior,
            global_prior,
        })
    }

    /// The number of input units.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The parameters of `q(λ)` and `q(τ)`: `((loc, scale), (loc, scale))`.
    pub fn params(&self) -> ((Param, Param), (Param, Param)) {
        (self.local, self.global)
    }

    /// The kernel prior `N(0, (τ λ)²)` of one pass (draws of `λ` and `τ`,
    /// in [`SampleMode::PosteriorMean`] too), and the scales' divergence:
    /// `None` when another layer of the pass has drawn them.
    pub(crate) fn prior<'t, F: Element>(
        &self,
        cx: &mut Forward<'t, '_, F>,
        layer: &str,
        shape: &[usize],
    ) -> Result<(Normal<'t, F>, Option<Var<'t, F>>)> {
        let rank = shape.len();
        if rank < 2 || shape[rank - 2] != self.units {
            return Err(Error::invalid(
                "Prior::Hierarchical",
                format!(
                    "layer '{layer}': a kernel of shape {shape:?} has {} input units, the hierarchical scale {}",
                    if rank < 2 { 0 } else { shape[rank - 2] },
                    self.units
                ),
            ));
        }
        // λ along the input axis, broadcast over the others
        let mut lshape = vec![1; rank];
        lshape[rank - 2] = self.units;
        let zero = cx.tape().constant(Tensor::zeros(&[]));
        if let Some((lambda, tau)) = cx.scale_draw(self.local.0) {
            let scale = lambda.reshape(&lshape)?.try_mul(tau)?;
            return Ok((Normal::new(zero, scale)?, None));
        }
        let q_local = LogNormal::new(cx.param(self.local.0)?, cx.param(self.local.1)?)?;
        let q_global = LogNormal::new(cx.param(self.global.0)?, cx.param(self.global.1)?)?;
        // drawn in a pass at the posterior means too: the scales enter only
        // the kernel's divergence, which is an expectation over them (their
        // medians would give the divergence at one point, not its mean)
        let (lambda, tau) = match cx.mode() {
            SampleMode::Sample | SampleMode::PosteriorMean => {
                (q_local.rsample(cx.rng())?, q_global.rsample(cx.rng())?)
            }
            SampleMode::SampleAxis(_) => {
                return Err(super::no_sample_axis(
                    layer,
                    "a hierarchical prior draws one set of scales per pass, with no per-sample log ratio",
                ));
            }
        };
        cx.keep_scale_draw(self.local.0, lambda, tau);
        let scale = lambda.reshape(&lshape)?.try_mul(tau)?;
        let p = Normal::new(zero, scale)?;
        let (pl, pg) = (self.local_prior.build(cx)?, self.global_prior.build(cx)?);
        let auto = Divergence::Auto;
        let kl_local = kl_divergence_with(&q_local, pl.as_ref(), auto, cx.rng())?.sum();
        let kl_global = kl_divergence_with(&q_global, pg.as_ref(), auto, cx.rng())?.sum();
        Ok((p, Some(kl_local.try_add(kl_global)?)))
    }
}
