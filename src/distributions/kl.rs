//! KL divergences: analytic where a closed form is registered, Monte Carlo
//! otherwise, and the open registry of closed forms.
//!
//! Divergence *nodes* (the named KL terms of a forward pass) live in the
//! forward context: see [`Forward::add_kl`](crate::Forward::add_kl) and
//! [`Divergences`](crate::Divergences).
//!
//! # The registry
//!
//! [`kl_divergence`] looks the pair `(type of q, type of p)` up in a
//! process-wide registry of rules, filed by [`register_kl`], and otherwise
//! takes the closed form built into the crate for the pair, if there is
//! one: each family against itself (Normal, HalfNormal, LogNormal,
//! LogitNormal, Cauchy, HalfCauchy, Gumbel, Weibull, Pareto, Laplace,
//! Exponential, Gamma, InverseGamma, Beta, Dirichlet, Uniform, Poisson,
//! Geometric, Bernoulli, Categorical, MultivariateNormal, VonMises, Binomial
//! (of equal total counts), and Independent of a pair that has one), Exponential against Gamma either way, Normal
//! against Laplace (a mean-field posterior under a sparsity prior), and
//! Kumaraswamy against Beta (stick-breaking weights under their prior; its
//! `E[ln(1 - x)]` by quadrature). A rule
//! registered for a built-in pair replaces the built-in closed form. See
//! [`KlRule`] for a rule written out and `tests/open_api.rs` for a
//! distribution defined outside the crate, given a KL against
//! [`Normal`](super::Normal), registered and used as a layer prior.
//!
//! The built-in closed forms are given by the families themselves (through
//! hidden methods of [`Distribution`]), not filed in the registry: a table
//! of them names every closed form in one place, and a program then
//! compiles all of them, for every element type, whether it uses the
//! families or not (docs/cold-start.md).
//!
//! A pair matches when both types match exactly (Rust has no subclasses,
//! so there is no "most specific" rule to apply); [`Independent`] is
//! matched as one type and its rule recurses into the wrapped pair.
//! A pair registered again replaces the earlier rule, for every thread.
//!
//! # Why a registry and how the lookup is typed
//!
//! A distribution's parameters borrow its tape (`Normal<'t, F>`), so
//! [`std::any::Any`] (which needs `'static` types) cannot recover the concrete
//! type behind a `dyn Distribution`. Every distribution instead carries a
//! type key that the crate computes, never the implementor: a blanket impl
//! of a sealed supertrait gives each type the identity of `Self` with its
//! lifetimes erased. `downcast_ref` on `dyn Distribution` compares it and
//! casts. A [`KlRule`] is implemented for every tape lifetime `'t` at once,
//! so one registration serves every tape.

use super::{Distribution, Independent};
use crate::autodiff::tape::Var;
use crate::error::{Error, Result};
use crate::tensor::Element;
use rand::Rng;
use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, RwLock};

/// An analytic KL(q || p) for `q` of type `Q` and `p` of type `P`.
///
/// A rule is a value (usually a unit struct) implementing this trait for
/// every tape lifetime `'t`; register it with [`register_kl`].
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::distributions::KlRule;
///
/// /// KL between two Normals through the closed form, written out.
/// struct NormalByHand;
/// impl<'t> KlRule<'t, f64> for NormalByHand {
///     type Q = Normal<'t, f64>;
///     type P = Normal<'t, f64>;
///     fn kl(&self, q: &Normal<'t, f64>, p: &Normal<'t, f64>) -> Result<Var<'t, f64>> {
///         let r = q.scale() / p.scale();
///         let d = (q.loc() - p.loc()) / p.scale();
///         Ok((r.square() + d.square() - 1.0) * 0.5 - r.ln())
///     }
/// }
///
/// let tape = Tape::<f64>::new();
/// let (q, p) = (Normal::new(tape.scalar(0.3), tape.scalar(0.7))?, Normal::standard(&tape, &[]));
/// let by_hand = NormalByHand.kl(&q, &p)?.item()?;
/// assert!((by_hand - kl_divergence(&q, &p)?.item()?).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub trait KlRule<'t, F: Element>: Send + Sync + 'static {
    /// The type of `q`.
    type Q: Distribution<'t, F>;
    /// The type of `p`.
    type P: Distribution<'t, F>;
    /// KL(q || p), one value per batch element, differentiable w.r.t. both
    /// distributions' parameters.
    fn kl(&self, q: &Self::Q, p: &Self::P) -> Result<Var<'t, F>>;
}

/// A typed rule behind a type-erased call.
pub(crate) trait ErasedKl<F: Element>: Send + Sync {
    fn kl<'t>(
        &self,
        q: &(dyn Distribution<'t, F> + '_),
        p: &(dyn Distribution<'t, F> + '_),
    ) -> Result<Var<'t, F>>;
}

struct Erased<R>(R);

impl<F: Element, R: for<'t> KlRule<'t, F>> ErasedKl<F> for Erased<R> {
    fn kl<'t>(
        &self,
        q: &(dyn Distribution<'t, F> + '_),
        p: &(dyn Distribution<'t, F> + '_),
    ) -> Result<Var<'t, F>> {
        let typed = (
            q.downcast_ref::<<R as KlRule<'t, F>>::Q>(),
            p.downcast_ref::<<R as KlRule<'t, F>>::P>(),
        );
        match typed {
            (Some(q), Some(p)) => self.0.kl(q, p),
            // unreachable: the registry files a rule under its own types' keys
            _ => Err(Error::NoAnalyticKl {
                q: q.describe(),
                p: p.describe(),
            }),
        }
    }
}

/// Rules by `(key of q's type, key of p's type)`; each value is an
/// `Arc<dyn ErasedKl<F>>` for the element type of its keys.
type Rules = HashMap<(TypeId, TypeId), Arc<dyn Any + Send + Sync>>;

/// The rules filed by [`register_kl`].
static RULES: LazyLock<RwLock<Rules>> = LazyLock::new(Default::default);

fn insert<F: Element, R: for<'t> KlRule<'t, F>>(rules: &mut Rules, rule: R) -> bool {
    // the types' keys erase lifetimes: the same for every 't
    let key = (
        typeid::of::<<R as KlRule<'static, F>>::Q>(),
        typeid::of::<<R as KlRule<'static, F>>::P>(),
    );
    let erased: Arc<dyn ErasedKl<F>> = Arc::new(Erased(rule));
    rules.insert(key, Arc::new(erased)).is_some()
}

/// The hidden methods of [`Distribution`] that give a family's built-in
/// closed forms, inside the family's `impl Distribution<'t, F>`: each
/// listed family of `p` (a type with parameters `<'t, F>`) with the
/// function of `(q, p)` that computes KL(q || p).
///
/// The closed forms sit with the families, not in a table filled when the
/// registry is first read: such a table names every closed form for every
/// element type in one function, and a program compiled them all, for the
/// families it never uses too (docs/cold-start.md).
macro_rules! builtin_kl {
    ($($p:ident => $kl:path),+ $(,)?) => {
        fn builtin_kl(
            &self,
            p: &dyn Distribution<'t, F>,
        ) -> Option<Result<Var<'t, F>>> {
            $(
                if let Some(p) = p.downcast_ref::<$p<'t, F>>() {
                    return Some($kl(self, p));
                }
            )+
            None
        }
        fn has_builtin_kl(p: std::any::TypeId) -> bool {
            $(p == typeid::of::<$p<'static, F>>())||+
        }
    };
}
pub(crate) use builtin_kl;

/// Registers (or replaces) an analytic KL rule, process-wide, for every
/// later [`kl_divergence`] call on any thread.
/// Returns whether a rule for the pair existed before (registered, or built
/// in). A variational layer whose posterior and prior make the pair applies
/// the rule under the automatic or analytic divergence: its fused sampler,
/// which computes the built-in divergence itself, steps aside.
///
/// Check a rule with
/// [`gradcheck`](crate::autodiff::gradcheck::gradcheck) and against
/// [`kl_monte_carlo`].
///
/// `tests/open_api.rs` registers KL(Laplace || Normal) for a Laplace
/// distribution defined there and trains a layer with it as a prior.
pub fn register_kl<F: Element, R: for<'t> KlRule<'t, F>>(rule: R) -> bool {
    let mut rules = RULES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    USER_RULES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert((
            typeid::of::<<R as KlRule<'static, F>>::Q>(),
            typeid::of::<<R as KlRule<'static, F>>::P>(),
        ));
    let replaced = insert::<F, R>(&mut rules, rule);
    replaced
        || <<R as KlRule<'static, F>>::Q as Distribution<'static, F>>::has_builtin_kl(typeid::of::<
            <R as KlRule<'static, F>>::P,
        >())
}

/// The pairs [`register_kl`] has filed a rule for (a built-in pair or not).
static USER_RULES: LazyLock<RwLock<HashSet<(TypeId, TypeId)>>> = LazyLock::new(Default::default);

/// Whether a user registered a rule for `(Q, P)` (each type with its
/// lifetime `'static`): the layers' fused samplers, which compute the
/// built-in divergence themselves, then step aside for
/// [`kl_divergence`].
pub(crate) fn user_rule_for<Q: ?Sized, P: ?Sized>() -> bool {
    USER_RULES
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .contains(&(typeid::of::<Q>(), typeid::of::<P>()))
}

/// The registered rule for the pair, if any. The lock is released before
/// the rule runs (the Independent rule looks its base pair up again).
pub(crate) fn lookup<'t, F: Element>(
    q: &(dyn Distribution<'t, F> + '_),
    p: &(dyn Distribution<'t, F> + '_),
) -> Option<Arc<dyn ErasedKl<F>>> {
    let rules = RULES
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rule = rules.get(&(q.type_key(), p.type_key()))?;
    rule.downcast_ref::<Arc<dyn ErasedKl<F>>>().cloned()
}

/// KL between two Independent distributions that reinterpret as many axes
/// into events of the same shape: the base pair's KL summed over those axes.
pub(crate) fn kl_independent<'t, F: Element>(
    q: &Independent<'t, F>,
    p: &Independent<'t, F>,
) -> Result<Var<'t, F>> {
    let mismatch = || Error::NoAnalyticKl {
        q: q.describe(),
        p: p.describe(),
    };
    if q.ndims() != p.ndims() {
        return Err(mismatch());
    }
    let (qe, pe) = (q.event_shape(), p.event_shape());
    if qe != pe {
        // the base pair's KL would broadcast one event over the other's
        // entries: a density on R^1 set against one on R^3, say
        return Err(Error::invalid(
            "kl_divergence",
            format!(
                "{} has events of shape {qe:?} and {} {pe:?}: distributions over \
                 different spaces have no divergence (give both the same event shape)",
                q.describe(),
                p.describe()
            ),
        ));
    }
    let inner = kl_divergence(q.base(), p.base()).map_err(|e| match e {
        Error::NoAnalyticKl { .. } => mismatch(),
        e => e,
    })?;
    q.reduce(inner)
}

/// How to compute a KL divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// The closed form; an error for pairs that have none.
    Analytic,
    /// `mean_s [ln q(z_s) - ln p(z_s)]` over `samples` reparameterized draws
    /// `z_s ~ q`: unbiased, differentiable w.r.t. both distributions.
    MonteCarlo {
        /// Number of draws.
        samples: usize,
    },
    /// Analytic when a closed form exists, else Monte Carlo with
    /// [`AUTO_MC_SAMPLES`] draws.
    Auto,
}

/// Draws used by [`Divergence::Auto`] when there is no closed form.
pub const AUTO_MC_SAMPLES: usize = 16;

/// The analytic KL(q || p), one value per batch element.
///
/// Closed forms are looked up by the two concrete types in the open
/// registry of [`register_kl`], then among those built in: Normal, HalfNormal,
/// LogNormal, LogitNormal, Cauchy, HalfCauchy, Gumbel, Weibull, Pareto,
/// Laplace, Exponential, Gamma, InverseGamma, Beta, Dirichlet, Uniform, Poisson,
/// Geometric, Bernoulli, Categorical, MultivariateNormal, VonMises and
/// Binomial (of equal total counts), each against
/// itself, Exponential against Gamma either way, Normal against Laplace,
/// Kumaraswamy against Beta, and Independent/Independent (of a pair that
/// has one, over as many axes).
/// KL(Uniform || Uniform) is `+inf`, with a zero gradient, where the
/// first's interval is not inside the second's.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let q = Normal::new(tape.var(Tensor::scalar(0.5)), tape.var(Tensor::scalar(0.8)))?;
/// let p = Normal::standard(&tape, &[]);
/// let kl = kl_divergence(&q, &p)?;
/// assert!(kl.item()? > 0.0);
/// let slab = SpikeAndSlab::tfp_default(&tape);
/// assert!(matches!(kl_divergence(&q, &slab), Err(Error::NoAnalyticKl { .. })));
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::NoAnalyticKl`] naming both distributions when no closed form exists.
pub fn kl_divergence<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
) -> Result<Var<'t, F>> {
    match lookup(q, p) {
        Some(rule) => rule.kl(q, p),
        None => q.builtin_kl(p).unwrap_or_else(|| {
            Err(Error::NoAnalyticKl {
                q: q.describe(),
                p: p.describe(),
            })
        }),
    }
}

/// The single-sample estimate `ln q(z) - ln p(z)` at a given draw `z ~ q`
/// (for example the posterior weight sample a layer used in its forward
/// pass). If `z` has leading sample axes (those before `q`'s batch and
/// event axes), they are averaged.
///
/// The result has the batch shape of `q` and `p` broadcast together: a
/// scalar `q` against a `p` with batch `[3]` gives three divergences, as
/// [`kl_divergence`] does. `q` and `p` must have the same event shape, or
/// one's events must span the other's trailing batch axes (a prior
/// `Independent` over a whole kernel against a posterior with one
/// distribution per weight): that one's log-densities are then summed over
/// those axes, as an [`Independent`] over them would give.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// // one posterior per weight, a prior over the whole [2, 3] kernel
/// let q = Normal::new(tape.var(Tensor::zeros(&[2, 3])), tape.var(Tensor::ones(&[2, 3])))?;
/// let p = Independent::new(Box::new(Normal::standard(&tape, &[2, 3])), 2)?;
/// let z = q.rsample(&mut rng)?;
/// let kl = kl_from_sample(&q, &p, z)?;
/// assert_eq!(kl.shape(), Vec::<usize>::new()); // one divergence for the kernel
/// assert!(kl.item()?.abs() < 1e-12);            // q and p are the same
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Event shapes that differ other than as above; shapes that do not
/// broadcast.
pub fn kl_from_sample<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
    z: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let (qb, qe, pb, pe) = (
        q.batch_shape(),
        q.event_shape(),
        p.batch_shape(),
        p.event_shape(),
    );
    // how many trailing batch axes of q (or of p) the other's events span
    let spans = |b: &[usize], e: &[usize], wide: &[usize]| {
        let k = wide.len().checked_sub(e.len())?;
        (wide.ends_with(e) && b.ends_with(&wide[..k])).then_some(k)
    };
    let (sum_q, sum_p) = if qe == pe {
        (0, 0)
    } else if let Some(k) = spans(&qb, &qe, &pe) {
        (k, 0)
    } else if let Some(k) = spans(&pb, &pe, &qe) {
        (0, k)
    } else {
        return Err(Error::invalid(
            "kl_from_sample",
            format!(
                "q ({}) has events of shape {qe:?} and p ({}) {pe:?}: the log-densities of \
                 different events cannot be compared (give both the same event shape)",
                q.describe(),
                p.describe()
            ),
        ));
    };
    // the axes before q's batch and event axes are sample axes; with p's
    // batch and event axes more than q's, singleton axes after them align
    // z with p's batch (a draw of a scalar q against a p with batch [3])
    let (q_rank, p_rank) = (qb.len() + qe.len(), pb.len() + pe.len());
    let samples = z.shape().len().saturating_sub(q_rank);
    let z = if samples > 0 && p_rank > q_rank {
        let mut shape = z.shape();
        shape.splice(samples..samples, std::iter::repeat_n(1, p_rank - q_rank));
        z.reshape(&shape)?
    } else {
        z
    };
    let summed = |mut l: Var<'t, F>, k: usize| -> Result<Var<'t, F>> {
        for _ in 0..k {
            l = l.sum_axis(l.shape().len() - 1, false)?;
        }
        Ok(l)
    };
    let lq = summed(q.log_prob(z)?, sum_q)?;
    let lp = summed(p.log_prob(z)?, sum_p)?;
    let mut d = lq.try_sub(lp)?;
    for _ in 0..samples {
        d = d.mean_axis(0, false)?;
    }
    Ok(d)
}

/// KL(q || p) computed as `method` says; `rng` is used only by Monte Carlo.
///
/// # Errors
/// [`Error::NoAnalyticKl`] for `Analytic` on a pair without a closed form;
/// [`Error::Unsupported`] for Monte Carlo when `q` has no reparameterized sampler;
/// an error for `samples == 0`.
pub fn kl_divergence_with<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
    method: Divergence,
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    match method {
        Divergence::Analytic => kl_divergence(q, p),
        Divergence::MonteCarlo { samples } => kl_monte_carlo(q, p, samples, rng),
        Divergence::Auto => match kl_divergence(q, p) {
            Err(Error::NoAnalyticKl { .. }) => kl_monte_carlo(q, p, AUTO_MC_SAMPLES, rng),
            other => other,
        },
    }
}

/// The Monte Carlo estimate from `samples` fresh reparameterized draws of `q`.
pub fn kl_monte_carlo<'t, F: Element>(
    q: &dyn Distribution<'t, F>,
    p: &dyn Distribution<'t, F>,
    samples: usize,
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    if samples == 0 {
        return Err(Error::invalid(
            "kl_monte_carlo",
            "needs at least one sample",
        ));
    }
    let z = q.rsample_n(Some(samples), rng)?;
    kl_from_sample(q, p, z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::tape::Tape;
    use crate::distributions::{
        Bernoulli, Beta, Binomial, Categorical, Cauchy, Dirichlet, Exponential, Gamma, Geometric,
        Gumbel, HalfCauchy, HalfNormal, InverseGamma, Kumaraswamy, Laplace, LogNormal, LogitNormal,
        MultivariateNormal, Normal, Pareto, Poisson, StudentT, Uniform, VonMises, Weibull,
    };
    use crate::tensor::Tensor;

    /// `(q's name, p's name)` of every pair with a closed form in the
    /// crate, as the module's documentation lists them.
    const PAIRS: [(&str, &str); 28] = [
        ("Normal", "Normal"),
        ("HalfNormal", "HalfNormal"),
        ("LogNormal", "LogNormal"),
        ("LogitNormal", "LogitNormal"),
        ("Cauchy", "Cauchy"),
        ("HalfCauchy", "HalfCauchy"),
        ("Gumbel", "Gumbel"),
        ("Weibull", "Weibull"),
        ("Pareto", "Pareto"),
        ("Laplace", "Laplace"),
        ("Exponential", "Exponential"),
        ("Gamma", "Gamma"),
        ("InverseGamma", "InverseGamma"),
        ("Beta", "Beta"),
        ("Dirichlet", "Dirichlet"),
        ("Uniform", "Uniform"),
        ("Poisson", "Poisson"),
        ("Geometric", "Geometric"),
        ("Bernoulli", "Bernoulli"),
        ("Categorical", "Categorical"),
        ("MultivariateNormal", "MultivariateNormal"),
        ("Independent", "Independent"),
        ("Exponential", "Gamma"),
        ("Gamma", "Exponential"),
        ("Normal", "Laplace"),
        ("Kumaraswamy", "Beta"),
        ("VonMises", "VonMises"),
        ("Binomial", "Binomial"),
    ];

    /// `Q::has_builtin_kl` against every `p`, and whether `q.builtin_kl(p)`
    /// gives a value, for each `p` by name.
    fn pairs_of<'t, Q: Distribution<'t, f64>>(
        q: &Q,
        all: &[&dyn Distribution<'t, f64>],
    ) -> Vec<(String, bool, bool)> {
        all.iter()
            .map(|p| {
                let by_key = Q::has_builtin_kl(p.type_key());
                let computed = q.builtin_kl(*p).is_some_and(|kl| kl.is_ok());
                (format!("{} || {}", q.name(), p.name()), by_key, computed)
            })
            .collect()
    }

    #[test]
    fn each_family_gives_the_closed_forms_of_its_pairs_and_says_so_by_type() -> Result<()> {
        let tape = Tape::<f64>::new();
        let s = |v: f64| tape.var(Tensor::scalar(v));
        let v = |v: &[f64]| tape.var(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap());
        let tril = tape.var(Tensor::from_vec(vec![1.0, 0.0, 0.3, 0.8], &[2, 2])?);
        let normal = Normal::new(s(0.1), s(1.2))?;
        let half_normal = HalfNormal::new(s(0.7))?;
        let log_normal = LogNormal::new(s(0.1), s(0.5))?;
        let logit_normal = LogitNormal::new(s(0.1), s(0.5))?;
        let cauchy = Cauchy::new(s(0.1), s(0.5))?;
        let half_cauchy = HalfCauchy::new(s(0.5))?;
        let gumbel = Gumbel::new(s(0.1), s(0.5))?;
        let weibull = Weibull::new(s(1.5), s(0.5))?;
        let pareto = Pareto::new(s(1.5), s(0.5))?;
        let laplace = Laplace::new(s(0.1), s(0.5))?;
        let exponential = Exponential::new(s(1.5))?;
        let gamma = Gamma::new(s(2.0), s(1.5))?;
        let inverse_gamma = InverseGamma::new(s(2.0), s(1.5))?;
        let beta = Beta::new(s(2.0), s(1.5))?;
        let dirichlet = Dirichlet::new(v(&[2.0, 1.5, 0.7]))?;
        let uniform = Uniform::new(s(0.1), s(0.5))?;
        let poisson = Poisson::new(s(1.5))?;
        let geometric = Geometric::from_logits(s(0.2))?;
        let bernoulli = Bernoulli::from_logits(s(0.2))?;
        let categorical = Categorical::from_logits(v(&[0.2, -0.1, 0.4]))?;
        let mvn = MultivariateNormal::from_scale_tril(v(&[0.1, 0.2]), tril)?;
        let independent = Independent::new(Box::new(Normal::new(v(&[0.1]), v(&[0.9]))?), 1)?;
        let von_mises = VonMises::new(s(0.1), s(2.5))?;
        let binomial = Binomial::from_logits(s(5.0), s(0.3))?;
        // no closed form against anything
        let student = StudentT::new(s(3.0), s(0.1), s(0.5))?;
        let kumaraswamy = Kumaraswamy::new(s(2.0), s(1.5))?;
        let all: [&dyn Distribution<'_, f64>; 26] = [
            &normal,
            &half_normal,
            &log_normal,
            &logit_normal,
            &cauchy,
            &half_cauchy,
            &gumbel,
            &weibull,
            &pareto,
            &laplace,
            &exponential,
            &gamma,
            &inverse_gamma,
            &beta,
            &dirichlet,
            &uniform,
            &poisson,
            &geometric,
            &bernoulli,
            &categorical,
            &mvn,
            &independent,
            &student,
            &kumaraswamy,
            &von_mises,
            &binomial,
        ];
        let rows = [
            pairs_of(&normal, &all),
            pairs_of(&half_normal, &all),
            pairs_of(&log_normal, &all),
            pairs_of(&logit_normal, &all),
            pairs_of(&cauchy, &all),
            pairs_of(&half_cauchy, &all),
            pairs_of(&gumbel, &all),
            pairs_of(&weibull, &all),
            pairs_of(&pareto, &all),
            pairs_of(&laplace, &all),
            pairs_of(&exponential, &all),
            pairs_of(&gamma, &all),
            pairs_of(&inverse_gamma, &all),
            pairs_of(&beta, &all),
            pairs_of(&dirichlet, &all),
            pairs_of(&uniform, &all),
            pairs_of(&poisson, &all),
            pairs_of(&geometric, &all),
            pairs_of(&bernoulli, &all),
            pairs_of(&categorical, &all),
            pairs_of(&mvn, &all),
            pairs_of(&independent, &all),
            pairs_of(&student, &all),
            pairs_of(&kumaraswamy, &all),
            pairs_of(&von_mises, &all),
            pairs_of(&binomial, &all),
        ];
        let mut expected: Vec<String> = PAIRS.iter().map(|(q, p)| format!("{q} || {p}")).collect();
        expected.sort();
        let mut found = Vec::new();
        for (pair, by_key, computed) in rows.into_iter().flatten() {
            assert_eq!(
                by_key, computed,
                "{pair}: by type {by_key}, computed {computed}"
            );
            if computed {
                found.push(pair);
            }
        }
        found.sort();
        assert_eq!(found, expected);
        Ok(())
    }
}
