//! The open registry of analytic KL divergences.
//!
//! [`kl_divergence`](crate::kl_divergence) looks the pair `(type of q, type
//! of p)` up here. The built-in pairs (Normal/Normal, Categorical/Categorical,
//! Bernoulli/Bernoulli, Independent/Independent) are registered through the
//! same call a user makes for a pair of their own, [`register_kl`]:
//!
//! See [`KlRule`] for a rule written out and `tests/open_api.rs` for a
//! distribution defined outside the crate, given a KL against [`Normal`],
//! registered and used as a layer prior.
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

use super::{Bernoulli, Categorical, Distribution, Independent, Normal};
use crate::error::{Error, Result};
use crate::tape::Var;
use crate::tensor::Element;
use std::any::{Any, TypeId};
use std::collections::HashMap;
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

static RULES: LazyLock<RwLock<Rules>> = LazyLock::new(|| {
    let mut rules = Rules::new();
    builtin::<f32>(&mut rules);
    builtin::<f64>(&mut rules);
    RwLock::new(rules)
});

fn insert<F: Element, R: for<'t> KlRule<'t, F>>(rules: &mut Rules, rule: R) -> bool {
    // the types' keys erase lifetimes: the same for every 't
    let key = (
        typeid::of::<<R as KlRule<'static, F>>::Q>(),
        typeid::of::<<R as KlRule<'static, F>>::P>(),
    );
    let erased: Arc<dyn ErasedKl<F>> = Arc::new(Erased(rule));
    rules.insert(key, Arc::new(erased)).is_some()
}

/// The built-in pairs: a unit struct per pair.
macro_rules! builtin_rules {
    ($($rule:ident: $ty:ident => $f:path;)*) => {
        $(
            struct $rule;
            impl<'t, F: Element> KlRule<'t, F> for $rule {
                type Q = $ty<'t, F>;
                type P = $ty<'t, F>;
                fn kl(&self, q: &$ty<'t, F>, p: &$ty<'t, F>) -> Result<Var<'t, F>> {
                    $f(q, p)
                }
            }
        )*
        fn builtin<F: Element>(rules: &mut Rules) {
            $(insert::<F, _>(rules, $rule);)*
        }
    };
}

builtin_rules! {
    NormalNormal: Normal => super::normal::kl_normal_normal;
    CategoricalCategorical: Categorical => super::categorical::kl_categorical;
    BernoulliBernoulli: Bernoulli => super::bernoulli::kl_bernoulli;
    IndependentIndependent: Independent => kl_independent;
}

/// Registers (or replaces) an analytic KL rule, process-wide, for every
/// later [`kl_divergence`](crate::kl_divergence) call on any thread.
/// Returns whether a rule for the pair existed before.
///
/// Check a rule with
/// [`gradcheck`](crate::gradcheck::gradcheck) and against
/// [`kl_monte_carlo`](crate::kl_monte_carlo).
///
/// `tests/open_api.rs` registers KL(Laplace || Normal) for a Laplace
/// distribution defined there and trains a layer with it as a prior.
pub fn register_kl<F: Element, R: for<'t> KlRule<'t, F>>(rule: R) -> bool {
    let mut rules = RULES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    insert::<F, R>(&mut rules, rule)
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

/// KL between two Independent distributions that reinterpret as many axes:
/// the base pair's KL summed over those axes.
fn kl_independent<'t, F: Element>(
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
    let inner = crate::divergence::kl_divergence(q.base(), p.base()).map_err(|e| match e {
        Error::NoAnalyticKl { .. } => mismatch(),
        e => e,
    })?;
    q.reduce(inner)
}
