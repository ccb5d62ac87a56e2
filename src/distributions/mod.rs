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
mod cauchy;
mod expectation;
mod extreme;
mod gamma;
mod independent;
mod inverse_gamma;
pub mod kl;
mod kumaraswamy;
mod linked;
mod mixture;
mod mvn;
mod normal;
mod pareto;
mod pointwise;
mod relaxed;
mod transformed;
mod univariate;
mod von_mises;
mod widened;

pub use bernoulli::Bernoulli;
pub use categorical::Categorical;
pub use cauchy::{Cauchy, HalfCauchy};
pub use expectation::{expectation_enumerated, expectation_quadrature};
pub use extreme::{Gumbel, Weibull};
pub use gamma::{Beta, Dirichlet, Gamma, StudentT};
pub use independent::Independent;
pub use inverse_gamma::InverseGamma;
pub use kl::{
    AUTO_MC_SAMPLES, Divergence, KlRule, kl_divergence, kl_divergence_with, kl_from_sample,
    kl_monte_carlo, register_kl,
};
pub use kumaraswamy::Kumaraswamy;
pub use mixture::{MixtureOfNormals, SpikeAndSlab};
pub use mvn::MultivariateNormal;
pub use normal::{HalfNormal, Normal};
pub use pareto::Pareto;
pub use relaxed::{RelaxedBernoulli, RelaxedOneHotCategorical};
pub use transformed::{
    Affine, Bijector, Chain, Exp, LogNormal, LogitNormal, Sigmoid, Softplus,
    TransformedDistribution,
};
pub use univariate::{
    Binomial, Exponential, Geometric, Laplace, NegativeBinomial, Poisson, Uniform,
};
pub use von_mises::VonMises;

use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::par_blocks;
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;

/// `ln(2 pi) / 2`.
pub(crate) const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

mod sealed {
    /// The identity of a distribution's concrete type with its lifetimes
    /// erased. Implemented for every sized type by the blanket impl below
    /// and by nothing else, so an implementor cannot misstate it; that is
    /// what makes [`Distribution::downcast_ref`](super::Distribution) sound.
    pub trait TypeKey {
        /// The key of `Self`.
        fn type_key(&self) -> std::any::TypeId;
    }
    impl<T> TypeKey for T {
        fn type_key(&self) -> std::any::TypeId {
            typeid::of::<T>()
        }
    }
}

/// A probability distribution whose parameters are vars on a tape.
///
/// Shapes follow TFP: `batch_shape` indexes independent distributions,
/// `event_shape` is the shape of one draw of one of them. `log_prob(x)`
/// returns one value per batch element (broadcasting `x` against the batch).
///
/// # Writing one
///
/// A type of your own implements the required methods and is then used
/// wherever a built-in distribution is: as a likelihood, as a layer prior
/// ([`Prior::custom`](crate::Prior::custom)), in [`kl_monte_carlo`]
/// and [`kl_divergence_with`]. To give it analytic
/// KL divergences, write a [`KlRule`] and [`register_kl`] it.
/// `tests/open_api.rs` does this for a Laplace distribution.
///
/// A distribution's lifetime parameter is its tape's (`'t`), as for every
/// type built from [`Var`]s; `downcast_ref` relies on that.
///
/// ```
/// use bayesgrad::prelude::*;
///
/// /// A point mass at `at`: `log_prob` is 0 there and -inf elsewhere.
/// struct PointMass<'t> { at: Var<'t, f64> }
///
/// impl<'t> Distribution<'t, f64> for PointMass<'t> {
///     fn name(&self) -> &'static str { "PointMass" }
///     fn tape(&self) -> &'t Tape<f64> { self.at.tape() }
///     fn log_prob(&self, x: Var<'t, f64>) -> Result<Var<'t, f64>> {
///         let same = x.value().zip_map(&self.at.value(), "point_mass", |a, b| {
///             if a == b { 0.0 } else { f64::NEG_INFINITY }
///         })?;
///         Ok(self.tape().constant(same))
///     }
///     fn rsample_n(&self, n: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, f64>> {
///         match n {
///             None => Ok(self.at),
///             Some(n) => self.at.unsqueeze(0)?.broadcast_to(&[n]),
///         }
///     }
///     fn sample(&self, _: &mut dyn Rng) -> Result<Tensor<f64>> { Ok(self.at.value()) }
///     fn entropy(&self) -> Result<Var<'t, f64>> { Ok(self.at * 0.0) }
///     fn mean(&self) -> Result<Var<'t, f64>> { Ok(self.at) }
///     fn variance(&self) -> Result<Var<'t, f64>> { Ok(self.at * 0.0) }
///     fn batch_shape(&self) -> Vec<usize> { self.at.shape() }
///     fn event_shape(&self) -> Vec<usize> { vec![] }
/// }
///
/// let tape = Tape::new();
/// let d = PointMass { at: tape.var(Tensor::scalar(1.5)) };
/// let as_dyn: &dyn Distribution<'_, f64> = &d;
/// assert!(as_dyn.downcast_ref::<PointMass>().is_some());
/// assert!(as_dyn.downcast_ref::<Normal<f64>>().is_none());
/// assert_eq!(d.log_prob(tape.scalar(1.5))?.item()?, 0.0);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub trait Distribution<'t, F: Element>: sealed::TypeKey {
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
    /// `n` plain draws stacked on a new leading axis (`None`: no axis).
    ///
    /// Every built-in family draws them in one pass, with no tape node per
    /// draw: the reparameterized families return the values
    /// [`rsample_n`](Self::rsample_n) gives for the same generator state,
    /// the others the values of `n` calls of [`sample`](Self::sample) one
    /// after the other (Categorical, the mixtures and the von Mises
    /// distribution have draws of their own). The default, for a
    /// distribution written outside the crate, calls `sample` `n` times;
    /// override it where one pass is possible.
    ///
    /// # Errors
    /// `Some(0)`; the errors of `sample`.
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        check_draw_count(self.name(), n)?;
        let Some(n) = n else {
            return self.sample(rng);
        };
        let first = self.sample(rng)?;
        let shape = sample_shape(Some(n), first.shape());
        let mut data = Vec::with_capacity(first.len() * n);
        data.extend_from_slice(first.data());
        for _ in 1..n {
            data.extend_from_slice(self.sample(rng)?.data());
        }
        Tensor::from_vec(data, &shape)
    }
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
    /// Whether one event's entries have fewer degrees of freedom than there
    /// are entries, as on the simplex (a Dirichlet's `k` entries sum to 1):
    /// its density is on a `(k - 1)`-dimensional set, not on `R^k`, so an
    /// elementwise change of variables does not carry it, and
    /// [`TransformedDistribution`] refuses such a base. `false` by default;
    /// a distribution of your own on such a set says `true`.
    fn events_on_the_simplex(&self) -> bool {
        false
    }
    /// How errors name this distribution (its name by default).
    fn describe(&self) -> String {
        self.name().to_string()
    }
    /// KL(self || p) by a closed form built into the crate, `None` for a
    /// pair without one. Not part of the API: the crate's families give
    /// their closed forms here, so that a program compiles those of the
    /// families it uses and no others; [`kl_divergence`] calls it for a
    /// pair without a rule from [`register_kl`]. A closed form of your own
    /// goes through [`register_kl`].
    #[doc(hidden)]
    fn builtin_kl(&self, p: &dyn Distribution<'t, F>) -> Option<Result<Var<'t, F>>> {
        let _ = p;
        None
    }
    /// Whether [`builtin_kl`](Self::builtin_kl) has a closed form against
    /// the type whose key is `p` (lifetimes erased, as `typeid::of` gives
    /// it). Not part of the API, as `builtin_kl`.
    #[doc(hidden)]
    fn has_builtin_kl(p: std::any::TypeId) -> bool
    where
        Self: Sized,
    {
        let _ = p;
        false
    }
}

impl<'t, F: Element> dyn Distribution<'t, F> + '_ {
    /// The concrete distribution behind a `dyn Distribution`, if it is a `T`.
    ///
    /// `std::any::Any` cannot do this: distributions borrow their tape and
    /// are not `'static`. The comparison uses a key the crate derives from
    /// the concrete type (lifetimes erased), which an implementor cannot
    /// override.
    pub fn downcast_ref<T: Distribution<'t, F>>(&self) -> Option<&T> {
        if self.type_key() == typeid::of::<T>() {
            // SAFETY: the key is `typeid::of` of the concrete type behind
            // `self` (the sealed blanket impl), so that type is `T` up to
            // lifetimes. Both implement `Distribution<'t, F>`, whose vars
            // live on a tape of lifetime `'t`; `T`'s lifetime parameters
            // are the tape's, as for every distribution built from vars.
            Some(unsafe { &*(self as *const Self as *const T) })
        } else {
            None
        }
    }
}

/// Errors unless every element of `v` satisfies `ok`.
pub(crate) fn check_values<F: Element>(
    distribution: &'static str,
    parameter: &'static str,
    v: &Var<'_, F>,
    reason: &'static str,
    ok: impl Fn(F) -> bool + Sync,
) -> Result<()> {
    v.tape.with_value(v.id, |t| {
        match crate::tensor::par_first_failing(t.data(), &ok) {
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

/// [`check_finite`] for logits, whose `-inf` (a class ruled out, as
/// PyTorch and TFP users write it) gets an error that says how to rule a
/// class out here.
pub(crate) fn check_logits<F: Element>(d: &'static str, v: &Var<'_, F>) -> Result<()> {
    check_finite(d, "logits", v).map_err(|e| match e {
        Error::InvalidParameter { value, .. } if value == f64::NEG_INFINITY => {
            Error::InvalidParameter {
                distribution: d,
                parameter: "logits",
                value,
                reason: "must be finite; to rule a class out, give it a large negative logit such \
                         as -1e30 (its probability is then 0)",
            }
        }
        e => e,
    })
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

/// [`check_positive`] for a parameter the computations divide by (a scale,
/// a temperature, degrees of freedom): it must also be a normal number.
/// The reciprocal of a subnormal one can overflow (below about 3e-39 in
/// `f32`), and `0 · inf` at the point the distribution is centred on was
/// NaN; no such value comes out of a positive parameter's floor.
pub(crate) fn check_divisor<F: Element>(
    d: &'static str,
    p: &'static str,
    v: &Var<'_, F>,
) -> Result<()> {
    let smallest = F::min_positive_value();
    check_values(
        d,
        p,
        v,
        "must be finite and at least the smallest normal number (1.2e-38 in f32, 2.2e-308 in f64)",
        |x| x >= smallest && x.is_finite(),
    )
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

/// The log-odds `ln p - ln(1 - p)` of probabilities of a success, for the
/// families parameterized by logits (`1 - p` as `log1p(-p)`, exact near
/// 1): differentiable in `probs`, each of which must be in `(0, 1)`, where
/// the log-odds are finite.
pub(crate) fn logits_of_probs<'t, F: Element>(
    distribution: &'static str,
    probs: Var<'t, F>,
) -> Result<Var<'t, F>> {
    check_values(distribution, "probs", &probs, "must be in (0, 1)", |p| {
        p > F::zero() && p < F::one()
    })?;
    Ok(probs.ln() - (-probs).log1p())
}

/// The checks of a family's two parameters: on one tape (`op` names the
/// constructor), each passing `check` ([`check_positive`],
/// [`check_divisor`]), and shapes that broadcast.
pub(crate) fn check_two<F: Element>(
    op: &'static str,
    distribution: &'static str,
    check: fn(&'static str, &'static str, &Var<'_, F>) -> Result<()>,
    (first, a): (&'static str, &Var<'_, F>),
    (second, b): (&'static str, &Var<'_, F>),
) -> Result<()> {
    same_tape(op, a, b)?;
    check(distribution, first, a)?;
    check(distribution, second, b)?;
    batch_broadcast(distribution, (first, a.shape()), (second, b.shape()))?;
    Ok(())
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

/// Errors unless `x` is a point of the simplex over `k` classes along its
/// last axis: that axis has `k` entries, each in (0, 1], summing to 1
/// within `sqrt(ε) · k`. `op` names the call in a shape error.
pub(crate) fn check_simplex<F: Element>(
    distribution: &'static str,
    op: &'static str,
    x: &Var<'_, F>,
    k: usize,
) -> Result<()> {
    let shape = x.shape();
    if shape.last() != Some(&k) {
        return Err(Error::invalid(
            op,
            format!("values need a last axis of {k} classes, got shape {shape:?}"),
        ));
    }
    check_values(distribution, "value", x, "must be in (0, 1]", |v| {
        v > F::zero() && v <= F::one()
    })?;
    let tol = F::epsilon().sqrt() * F::lit(k as f64);
    let sums = x.value().sum_axis(shape.len() - 1, false)?;
    match sums.data().iter().find(|&&s| (s - F::one()).abs() > tol) {
        Some(s) => Err(Error::InvalidParameter {
            distribution,
            parameter: "sum of value",
            value: s.to_f64().unwrap_or(f64::NAN),
            reason: "must be 1 (values lie on the simplex)",
        }),
        None => Ok(()),
    }
}

/// `lp` evaluated where `inside` holds for the value and `-inf` (with a
/// zero gradient for the value and every parameter) elsewhere: TFP's
/// convention for `log_prob` outside a distribution's support. `inside`
/// gets each element of `x` and its index; outside points are replaced by
/// `safe` before `lp` sees them, so no NaN or infinity enters its
/// gradient. A NaN value is an error.
pub(crate) fn on_support<'t, F: Element>(
    distribution: &'static str,
    x: Var<'t, F>,
    inside: impl Fn(usize, F) -> bool + Sync,
    safe: F,
    lp: impl FnOnce(Var<'t, F>) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    let tape = x.tape();
    let xv = x.value();
    let data = xv.data();
    // the usual case, every value a number inside, in one branch-free pass
    // on every thread (a pass on the calling thread alone also lets the
    // helper fall asleep before the density's own pass)
    let (first, second) = par_blocks(
        (),
        data.len(),
        data.len(),
        #[inline(always)]
        |items, ()| {
            let start = items.start;
            let values = data[items].iter().enumerate();
            values.fold(true, |all, (k, &v)| {
                all & !v.is_nan() & inside(start + k, v)
            })
        },
    );
    if first && second {
        return lp(x);
    }
    let ind = data
        .iter()
        .enumerate()
        .map(|(i, &v)| inside(i, v))
        .collect();
    on_support_of_events(distribution, x, 0, ind, || Ok(tape.scalar(safe)), lp)
}

/// [`on_support`] for values whose last `event_rank` axes make one event,
/// of which `lp` gives one log-density (an event with an element outside
/// is `-inf`), given whether each element of `x` is inside (`ind`, one per
/// element), with the points inside from `safe` (called only if a value is
/// outside; its result broadcasts against `x`).
pub(crate) fn on_support_of_events<'t, F: Element>(
    distribution: &'static str,
    x: Var<'t, F>,
    event_rank: usize,
    ind: Vec<bool>,
    safe: impl FnOnce() -> Result<Var<'t, F>>,
    lp: impl FnOnce(Var<'t, F>) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    check_values(distribution, "value", &x, "must not be NaN", |v| {
        !v.is_nan()
    })?;
    let xv = x.value();
    debug_assert_eq!(ind.len(), xv.len(), "one answer per element");
    if ind.iter().all(|&b| b) {
        return lp(x);
    }
    let tape = x.tape();
    let mask = |ind: &[bool], shape: &[usize]| {
        Tensor::from_vec(
            ind.iter()
                .map(|&b| if b { F::one() } else { F::zero() })
                .collect(),
            shape,
        )
    };
    let keep = mask(&ind, xv.shape())?;
    // an event is kept when all its elements are (each element its own
    // event at rank 0, where the element mask serves)
    let keep_events = if event_rank == 0 {
        keep.clone()
    } else {
        let split = xv.shape().len().saturating_sub(event_rank);
        let (batch, event) = xv.shape().split_at(split);
        let per_event = event.iter().product::<usize>().max(1);
        let events: Vec<bool> = ind
            .chunks(per_event)
            .map(|e| e.iter().all(|&b| b))
            .collect();
        mask(&events, batch)?
    };
    // chosen, not blended: x * 0 would be NaN at x = ±inf
    let x_safe = x.choose(keep, safe()?)?;
    lp(x_safe)?.choose(keep_events, tape.scalar(F::neg_infinity()))
}

/// The error of [`Distribution::sample_n`] for `Some(0)` draws.
pub(crate) fn check_draw_count(distribution: &str, n: Option<usize>) -> Result<()> {
    match n {
        Some(0) => Err(Error::invalid(
            "Distribution::sample_n",
            format!("{distribution} needs at least one draw (n = Some(0))"),
        )),
        _ => Ok(()),
    }
}

/// [`Distribution::sample_n`] of a family whose plain draw is the value of
/// its reparameterized one: one pass, a handful of tape nodes whatever `n`.
pub(crate) fn sample_n_reparameterized<'t, F: Element, D: Distribution<'t, F> + ?Sized>(
    d: &D,
    n: Option<usize>,
    rng: &mut dyn Rng,
) -> Result<Tensor<F>> {
    check_draw_count(d.name(), n)?;
    Ok(d.rsample_n(n, rng)?.value())
}

/// [`Distribution::sample_n`] of a family without a reparameterized draw:
/// `draw` appends one draw of the whole batch (of shape `batch`) to its
/// vector, `n` times (`None`: once, no axis), so that the values of one
/// pass are those of `n` calls of the family's `sample` one after the
/// other, with the parameters read once.
pub(crate) fn repeat_batches<F: Element>(
    distribution: &str,
    n: Option<usize>,
    batch: &[usize],
    mut draw: impl FnMut(&mut Vec<F>) -> Result<()>,
) -> Result<Tensor<F>> {
    check_draw_count(distribution, n)?;
    let shape = sample_shape(n, batch);
    let mut out = Vec::with_capacity(crate::tensor::checked_alloc::<F>(
        "Distribution::sample_n",
        &shape,
    )?);
    for _ in 0..n.unwrap_or(1) {
        draw(&mut out)?;
    }
    Tensor::from_vec(out, &shape)
}

/// `n` (or none) leading sample axes followed by `shape`.
pub(crate) fn sample_shape(n: Option<usize>, shape: &[usize]) -> Vec<usize> {
    let mut s = Vec::with_capacity(shape.len() + 1);
    s.extend(n);
    s.extend_from_slice(shape);
    s
}

pub(crate) use crate::tensor::standard_normal;

/// A uniform draw in the open interval (0, 1), where both `ln u` and
/// `ln(1 - u)` are finite.
pub(crate) fn open_uniform(rng: &mut dyn Rng) -> f64 {
    open_unit(rng.next_u64())
}

/// The smallest normal number and the largest number below 1: the values
/// a draw in (0, 1) that rounds to 0 or 1 is moved to (the gradient there
/// is below `F::EPSILON`).
pub(crate) fn open_unit_bounds<F: Element>() -> (F, F) {
    (
        F::min_positive_value(),
        F::one() - F::epsilon() * F::lit(0.5),
    )
}

/// `x` moved into [`open_unit_bounds`]; NaN stays NaN.
pub(crate) fn into_open_unit<F: Element>(x: F) -> F {
    let (lo, hi) = open_unit_bounds();
    if x.is_nan() { x } else { x.max(lo).min(hi) }
}

/// `y` with the values below the smallest normal number (0 among them)
/// raised to it, with a gradient of 0 there; NaN and `+inf` stay. Draws on
/// the positive half-line go through it, so that `log_prob` takes them.
pub(crate) fn above_zero<'t, F: Element>(y: Var<'t, F>) -> Var<'t, F> {
    y.clamp(F::min_positive_value(), F::infinity())
}

/// The uniform in (0, 1) that the high 53 bits of `bits` give, centred in
/// its cell: never 0 or 1.
#[inline(always)]
pub(crate) fn open_unit(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Uniform draws in [0, 1).
pub(crate) fn uniform<F: Element>(rng: &mut dyn Rng) -> F {
    F::lit(rand::RngExt::random::<f64>(rng))
}
