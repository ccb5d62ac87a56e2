//! Optimizers: [`Sgd`] (with momentum) and [`Adam`].
//!
//! A step is all-or-nothing: every non-frozen parameter must have a finite
//! gradient computed from its current value, otherwise the step returns an
//! error naming the parameter and nothing is modified. A gradient from a
//! tape that outlived an earlier step (a distribution built once and kept,
//! the Keras `Normal(self.mu[0])` trap) is [`Error::StaleGradient`]. The same holds for the optimizer's settings, checked
//! at every step because schedules change them between steps: a learning
//! rate that is negative or not finite (a decay schedule's `0/0`, say),
//! Adam betas outside `[0, 1)`, a negative `eps` or momentum.
//!
//! A tape that read a parameter shares its storage until the tape is
//! dropped. An update while that tape is alive writes the new values to a
//! new buffer (the tape's reads stay as they were); once the tape is gone,
//! the update writes in place, which moves less memory. For large layers,
//! compute the gradients in a block that owns the tape:
//!
//! ```
//! use bayesgrad::prelude::*;
//! let mut store = ParamStore::<f32>::new();
//! let w = store.add("w", Tensor::zeros(&[256, 256]));
//! let mut opt = Adam::new(1e-3);
//! let grads = {
//!     let tape = Tape::new();
//!     (tape.param(&store, w) - 1.0).square().sum().backward()?
//! }; // the tape is dropped here
//! opt.step(&mut store, &grads)?; // in place
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::profile::{self, Pass};
use crate::autodiff::tape::Gradients;
use crate::error::{Error, Number, Result};
use crate::kernels::parallel::par_blocks;
use crate::tensor::{Element, Tensor, first_failing};
use crate::train::checkpoint::{Resumable, StateReader, StateWriter};

/// Something that updates a [`ParamStore`] from [`Gradients`].
///
/// An optimizer with state (Adam's moments, SGD's momentum) serves one
/// store: once it has stepped one, a step on another is an error, since its
/// state is indexed by parameter position and would be applied to the other
/// store's parameters. Make a new optimizer for a new model (each fold of a
/// cross-validation, say); [`Adam::set_state`] or a checkpoint moves a
/// state on purpose.
pub trait Optimizer<F: Element> {
    /// Applies one update to every non-frozen parameter.
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()>;
}

/// The largest `|x|` of a tensor, or the first element that is not finite.
/// Eight lanes of maxima and of `x * 0` (NaN exactly when some `x` is not
/// finite) keep the pass vectorized; the first bad element is looked for
/// only when there is one.
fn max_abs<F: Element>(t: &Tensor<F>) -> std::result::Result<F, (usize, F)> {
    let data = t.data();
    #[inline(always)]
    fn larger<F: Element>(a: F, b: F) -> F {
        // one max instruction; NaN is caught by the probe
        if a > b { a } else { b }
    }
    let (a, b) = par_blocks(
        (),
        data.len(),
        data.len(),
        #[inline(always)]
        |items, ()| {
            let part = &data[items.clone()];
            let (mut max, mut probe) = ([F::zero(); 8], [F::zero(); 8]);
            let mut chunks = part.chunks_exact(8);
            for c in &mut chunks {
                for i in 0..8 {
                    max[i] = larger(max[i], c[i].abs());
                    probe[i] = probe[i] + c[i] * F::zero();
                }
            }
            for &x in chunks.remainder() {
                max[0] = max[0].max(x.abs());
                probe[0] = probe[0] + x * F::zero();
            }
            if probe.iter().any(|p| !p.is_finite()) {
                let i = part.iter().position(|x| !x.is_finite()).unwrap_or(0);
                return Err((items.start + i, part[i]));
            }
            Ok(max.iter().fold(F::zero(), |m, &x| m.max(x)))
        },
    );
    Ok(a?.max(b?))
}

/// A gradient of a parameter, checked: its shape, finite, and whether every
/// `|g|` is at most `sqrt(F::MAX) / 2`, so that Adam's `g^2` cannot overflow.
struct Update<'g, F: Element> {
    param: Param,
    grad: &'g Tensor<F>,
    moderate: bool,
    /// For an update that runs in place: a bound on its result's largest `|x|`.
    in_place: Option<f64>,
}

/// Whether every element of `t` is finite and at most `limit` in size (one
/// vectorized pass over two threads, as `first_non_finite`).
fn all_within<F: Element>(t: &Tensor<F>, limit: F) -> bool {
    let data = t.data();
    let (a, b) = par_blocks(
        (),
        data.len(),
        data.len(),
        #[inline(always)]
        |items, ()| first_failing(&data[items], |x| x.abs() <= limit).is_none(),
    );
    a && b
}

/// Runs an optimizer's update, timed as `name` when an
/// [`OpTimer`](crate::autodiff::profile::OpTimer) runs on this thread (a
/// refused update counts nothing).
fn timed_update(name: &str, update: impl FnOnce() -> Result<()>) -> Result<()> {
    let span = profile::span();
    update()?;
    span.end(name, Pass::Update);
    Ok(())
}

/// Checks that every non-frozen parameter has a finite gradient of its
/// shape, computed from its current value, and returns them in store order.
fn collect<'g, F: Element>(
    store: &ParamStore<F>,
    grads: &'g Gradients<F>,
) -> Result<Vec<Update<'g, F>>> {
    let moderate_limit = F::max_value().sqrt() * F::lit(0.5);
    let mut out = Vec::with_capacity(store.len());
    for p in store.params() {
        if store.is_frozen(p) {
            continue;
        }
        let name = || store.name(p).to_string();
        let g = grads.param_by_key(p.key()).ok_or_else(|| {
            if grads.only_other_stores_than(p) {
                Error::invalid(
                    "Optimizer::step",
                    format!(
                        "the gradients are of parameters of another ParamStore, none of this one's \
                         (such as '{}'): step the store the tape read them from",
                        name()
                    ),
                )
            } else {
                Error::MissingGradient { name: name() }
            }
        })?;
        let current = store.version(p)?;
        match grads.param_version(p) {
            Some(read) if read == current => {}
            read => {
                return Err(Error::StaleGradient {
                    name: name(),
                    read: read.unwrap_or(0),
                    current,
                });
            }
        }
        if g.shape() != store.raw(p).shape() {
            return Err(Error::ParamShapeMismatch {
                name: name(),
                expected: store.raw(p).shape().to_vec(),
                found: g.shape().to_vec(),
            });
        }
        let moderate = all_within(g, moderate_limit);
        if !moderate && let Some((index, v)) = g.first_non_finite() {
            return Err(Error::NonFiniteGradient {
                name: name(),
                index,
                value: v.to_f64().unwrap_or(f64::NAN),
            });
        }
        out.push(Update {
            param: p,
            grad: g,
            moderate,
            in_place: None,
        });
    }
    Ok(out)
}

/// Refuses a hyperparameter outside `[low, high)` (`high` may be infinite)
/// or non-finite, naming the optimizer and the setting, as PyTorch does.
fn check_setting<F: Element>(
    optimizer: &'static str,
    setting: &str,
    value: F,
    (low, high): (f64, f64),
) -> Result<()> {
    let v = value.to_f64().unwrap_or(f64::NAN);
    if v.is_finite() && v >= low && v < high {
        return Ok(());
    }
    let domain = if high.is_finite() {
        format!("in [{low}, {high})")
    } else {
        format!("finite and >= {low}")
    };
    Err(Error::invalid(
        optimizer,
        format!("{setting} must be {domain}, got {}", Number(v)),
    ))
}

/// Stochastic gradient descent with optional (heavy-ball) momentum, as in
/// PyTorch: `v = mu v + g; p -= lr v`.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let x = store.add("x", Tensor::scalar(3.0));
/// let mut opt = Sgd::with_momentum(0.1, 0.9);
/// for _ in 0..200 {
///     let tape = Tape::new();
///     let loss = tape.param(&store, x).square(); // minimum at 0
///     opt.step(&mut store, &loss.backward()?)?;
/// }
/// assert!(store.value(x).item()?.abs() < 1e-3);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sgd<F> {
    lr: F,
    momentum: F,
    velocity: Vec<Option<Tensor<F>>>,
    /// The store the velocities belong to (the last one stepped).
    store: Option<u64>,
    owners: Owners,
}

impl<F: Element> Sgd<F> {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: F) -> Self {
        Sgd {
            lr,
            momentum: F::zero(),
            velocity: Vec::new(),
            store: None,
            owners: Owners::default(),
        }
    }

    /// SGD with momentum.
    pub fn with_momentum(lr: F, momentum: F) -> Self {
        Sgd {
            momentum,
            ..Self::new(lr)
        }
    }
}

impl<F: Element> Optimizer<F> for Sgd<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()> {
        timed_update("sgd", || self.update(store, grads))
    }
}

impl<F: Element> Sgd<F> {
    /// The update behind [`Optimizer::step`].
    fn update(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()> {
        check_setting("Sgd", "learning rate", self.lr, (0.0, f64::INFINITY))?;
        check_setting("Sgd", "momentum", self.momentum, (0.0, f64::INFINITY))?;
        let updates = collect(store, grads)?;
        if self.store == Some(store.id()) {
            self.owners
                .drop_removed::<F, _, ()>(store, &mut self.velocity, &mut []);
        }
        let has_state = self.velocity.iter().any(Option::is_some);
        if has_state && self.store.is_some_and(|id| id != store.id()) {
            return Err(stepped_another_store("Sgd", "velocities", "a checkpoint"));
        }
        if self.velocity.len() > store.len() {
            return Err(state_from_another_store(
                "Sgd",
                self.velocity.len(),
                store.len(),
            ));
        }
        let (lr, mu) = (self.lr, self.momentum);
        // every new value and velocity first, checked; then all of them at once
        let mut new = Vec::with_capacity(updates.len());
        for Update { param: p, grad, .. } in &updates {
            let velocity = self.velocity.get(p.index()).and_then(Option::as_ref);
            if let Some(v) = velocity.filter(|v| v.shape() != grad.shape()) {
                return Err(bad_state_shape("Sgd", store, *p, v));
            }
            let g = grad.data();
            let v: Vec<F> = match velocity {
                Some(v) if mu != F::zero() => {
                    v.data().iter().zip(g).map(|(&v, &g)| mu * v + g).collect()
                }
                _ => g.to_vec(),
            };
            let x: Vec<F> = store
                .raw(*p)
                .data()
                .iter()
                .zip(&v)
                .map(|(&x, &v)| x - lr * v)
                .collect();
            let x = Tensor::from_vec(x, grad.shape())?;
            refuse_non_finite(store, *p, &x)?;
            new.push((
                *p,
                x,
                (mu != F::zero())
                    .then(|| Tensor::from_vec(v, grad.shape()))
                    .transpose()?,
            ));
        }
        self.velocity.resize_with(store.len(), || None);
        self.store = Some(store.id());
        for (p, x, v) in new {
            *store.value_mut(p) = x;
            self.owners.record(p);
            if let Some(v) = v {
                self.velocity[p.index()] = Some(v);
            }
        }
        Ok(())
    }
}

/// The parameter each position of an optimizer's state was last updated
/// for. A failed [`ParamStore::adding`] removes the parameters it added, and
/// a later one may take a removed one's position: its state (stepped inside
/// the failed constructor) must not carry over to the newcomer.
#[derive(Debug, Clone, Default)]
struct Owners {
    of: Vec<Option<Param>>,
    /// The store's count of removals when this last looked.
    seen: u64,
}

impl Owners {
    fn record(&mut self, p: Param) {
        if self.of.len() <= p.index() {
            self.of.resize(p.index() + 1, None);
        }
        self.of[p.index()] = Some(p);
    }

    /// Clears the state (`state`, and `extra` where it has the position) of
    /// every position whose parameter is no longer in `store`, and drops
    /// cleared positions past the store's end; a comparison when the store
    /// has removed nothing since the last look.
    fn drop_removed<F: Element, S, E>(
        &mut self,
        store: &ParamStore<F>,
        state: &mut Vec<Option<S>>,
        extra: &mut [Option<E>],
    ) {
        if store.removals() == self.seen {
            return;
        }
        self.seen = store.removals();
        let mut current = store.params();
        for (i, owner) in self.of.iter_mut().enumerate() {
            let here = current.next();
            if owner.is_some_and(|p| here != Some(p)) {
                *owner = None;
                if let Some(s) = state.get_mut(i) {
                    *s = None;
                }
                if let Some(e) = extra.get_mut(i) {
                    *e = None;
                }
            }
        }
        while state.len() > store.len() && state.last().is_some_and(Option::is_none) {
            state.pop();
        }
    }
}

/// A step on one store by an optimizer whose state another store's steps
/// built: its state is indexed by parameter position, so it would apply
/// that store's moments to this one's parameters.
fn stepped_another_store(optimizer: &str, state: &str, moving: &str) -> Error {
    Error::invalid(
        "Optimizer::step",
        format!(
            "this {optimizer} has stepped another ParamStore, and its {state} belong to that \
             store's parameters: use one optimizer per store (a new one for a new model); \
             {moving} moves a state on purpose"
        ),
    )
}

fn state_from_another_store(optimizer: &str, len: usize, params: usize) -> Error {
    Error::invalid(
        "Optimizer::step",
        format!(
            "{optimizer}'s state covers {len} parameters, the store has {params}: it belongs to another store"
        ),
    )
}

fn bad_state_shape<F: Element>(
    optimizer: &str,
    store: &ParamStore<F>,
    p: Param,
    t: &Tensor<F>,
) -> Error {
    Error::invalid(
        "Optimizer::step",
        format!(
            "{optimizer}'s state for parameter '{}' has shape {:?}, the parameter {:?}",
            store.name(p),
            t.shape(),
            store.raw(p).shape()
        ),
    )
}

/// Refuses an updated value that is not finite, naming the parameter.
fn refuse_non_finite<F: Element>(store: &ParamStore<F>, p: Param, x: &Tensor<F>) -> Result<()> {
    match x.first_non_finite() {
        Some((index, v)) => Err(Error::NonFiniteUpdate {
            name: store.name(p).to_string(),
            index,
            value: v.to_f64().unwrap_or(f64::NAN),
        }),
        None => Ok(()),
    }
}

/// Adam with bias correction, the update of PyTorch's `torch.optim.Adam`:
/// `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
/// `p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let w = store.add("w", Tensor::vector(&[3.0, -2.0]));
/// let mut opt = Adam::new(0.1);
/// for _ in 0..300 {
///     let tape = Tape::new();
///     let loss = tape.param(&store, w).square().sum();   // minimum at 0
///     opt.step(&mut store, &loss.backward()?)?;
/// }
/// assert!(store.value(w).data().iter().all(|x| x.abs() < 0.05));
/// assert_eq!(opt.state().step, 300);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Adam<F> {
    /// Learning rate.
    pub lr: F,
    /// Decay of the first moment.
    pub beta1: F,
    /// Decay of the second moment.
    pub beta2: F,
    /// Added to the denominator.
    pub eps: F,
    state: AdamState<F>,
    /// Whether the moments are known finite (false after `set_state`).
    state_checked: bool,
    /// Per parameter: a version of its value and a bound on its largest `|x|`.
    largest: Vec<Option<(u64, f64)>>,
    /// The store the state belongs to (the last one stepped; none after
    /// `set_state`).
    store: Option<u64>,
    owners: Owners,
}

/// Adam's moments and step count (saved with checkpoints to resume exactly).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdamState<F> {
    /// Number of steps taken.
    pub step: u64,
    /// First and second moments, by parameter position in the store.
    pub moments: Vec<Option<(Tensor<F>, Tensor<F>)>>,
}

impl<F: Element> Adam<F> {
    /// Adam with learning rate `lr` and the usual defaults (0.9, 0.999, 1e-8).
    pub fn new(lr: F) -> Self {
        Adam {
            lr,
            beta1: F::lit(0.9),
            beta2: F::lit(0.999),
            eps: F::lit(1e-8),
            state: AdamState::default(),
            state_checked: true,
            largest: Vec::new(),
            store: None,
            owners: Owners::default(),
        }
    }

    /// The optimizer state.
    pub fn state(&self) -> &AdamState<F> {
        &self.state
    }

    /// Replaces the optimizer state. The next step checks it against the
    /// store (its length, each moment's shape, finite values) and refuses a
    /// state that does not fit, naming the parameter.
    pub fn set_state(&mut self, state: AdamState<F>) {
        self.state = state;
        self.state_checked = false;
        self.store = None;
        self.largest.clear();
        self.owners = Owners::default();
    }
}

/// One step of Adam's rule with this step's bias corrections.
#[derive(Clone, Copy)]
struct AdamRule<F> {
    b1: F,
    b2: F,
    eps: F,
    step_size: F,
    inv_sqrt_bc2: F,
}

impl<F: Element> AdamRule<F> {
    /// The new value of a parameter `x` with gradient `g`, updating its moments.
    #[inline(always)]
    fn update(self, x: F, m: &mut F, v: &mut F, g: F) -> F {
        *m = self.b1 * *m + (F::one() - self.b1) * g;
        *v = self.b2 * *v + (F::one() - self.b2) * g * g;
        x - self.step_size * *m / (v.sqrt() * self.inv_sqrt_bc2 + self.eps)
    }
}

/// `|m_hat| / sqrt(v_hat) <= 1 / sqrt((1 - b2)(1 - b1^2 / b2))` for every
/// step when `b1^2 < b2`: by Cauchy–Schwarz on the sums behind `m` and `v`
/// (and `1 - b1^t >= 1 - b1`, `1 - b2^t <= 1`). So one Adam update moves
/// no element by more than `lr` times this; `None` when `b1^2 >= b2`.
fn adam_ratio_bound(b1: f64, b2: f64) -> Option<f64> {
    (b1 * b1 < b2).then(|| 1.0 / ((1.0 - b2) * (1.0 - b1 * b1 / b2)).sqrt())
}

impl<F: Element> Optimizer<F> for Adam<F> {
    /// One Adam update of every non-frozen parameter.
    ///
    /// An update whose result would not be finite (a learning rate too
    /// large for the values, say) is refused with
    /// [`Error::NonFiniteUpdate`], nothing modified. The check costs no
    /// extra pass in the usual case: the largest `|x|` of each parameter is
    /// kept from its last update, and when it plus `lr` times a bound on
    /// `|m_hat| / sqrt(v_hat)` (`1 / sqrt((1 - b2)(1 - b1^2 / b2))`, about 73
    /// for the defaults) stays far from overflow the update runs in place;
    /// otherwise it is computed aside, checked, and only then committed.
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()> {
        timed_update("adam", || self.update(store, grads))
    }
}

impl<F: Element> Adam<F> {
    /// The update behind [`Optimizer::step`].
    fn update(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()> {
        check_setting("Adam", "learning rate (lr)", self.lr, (0.0, f64::INFINITY))?;
        check_setting("Adam", "beta1", self.beta1, (0.0, 1.0))?;
        check_setting("Adam", "beta2", self.beta2, (0.0, 1.0))?;
        check_setting("Adam", "eps", self.eps, (0.0, f64::INFINITY))?;
        let mut updates = collect(store, grads)?;
        if self.store == Some(store.id()) {
            self.owners
                .drop_removed(store, &mut self.state.moments, &mut self.largest);
        }
        if self.store.is_some_and(|id| id != store.id()) {
            return Err(stepped_another_store(
                "Adam",
                "moments and step count",
                "set_state or a checkpoint",
            ));
        }
        if self.state.moments.len() > store.len() {
            return Err(state_from_another_store(
                "Adam",
                self.state.moments.len(),
                store.len(),
            ));
        }
        for u in &updates {
            if let Some(Some((m, v))) = self.state.moments.get(u.param.index()) {
                for t in [m, v] {
                    if t.shape() != u.grad.shape() {
                        return Err(bad_state_shape("Adam", store, u.param, t));
                    }
                }
            }
        }
        let t = self.state.step.saturating_add(1);
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        // b^t for any t (powi takes t as an i32: a larger t wrapped to NaN)
        let pow = |b: F| match i32::try_from(t) {
            Ok(t) => b.powi(t),
            Err(_) => b.powf(F::lit(t as f64)),
        };
        let (bc1, bc2) = (F::one() - pow(b1), F::one() - pow(b2));
        let rule = AdamRule {
            b1,
            b2,
            eps,
            step_size: self.lr / bc1,
            inv_sqrt_bc2: F::one() / bc2.sqrt(),
        };
        let limit = F::max_value().to_f64().unwrap_or(f64::MAX) / 4.0;
        let reach = adam_ratio_bound(b1.to_f64().unwrap_or(1.0), b2.to_f64().unwrap_or(0.0))
            .map(|c| c * self.lr.to_f64().unwrap_or(f64::INFINITY));
        self.largest.resize(store.len(), None);
        // Parameters whose update cannot overflow run in place below; the
        // others are computed aside and checked first, so that a refused
        // step changes nothing.
        let mut aside = Vec::new();
        for u in &mut updates {
            let idx = u.param.index();
            let version = store.version(u.param)?;
            let largest = match self.largest[idx] {
                Some((v, x)) if v == version => x,
                _ => max_abs(store.raw(u.param))
                    .map_err(|_| Error::invalid("Adam", "a parameter holds a non-finite value"))?
                    .to_f64()
                    .unwrap_or(f64::INFINITY),
            };
            // moments from set_state are checked once (finite moments stay
            // finite under updates with bounded gradients)
            let moments_fit = || match self.state.moments.get(idx) {
                Some(Some((m, v))) => max_abs(m).is_ok() && max_abs(v).is_ok(),
                _ => true,
            };
            let safe = reach.is_some_and(|r| largest + r <= limit)
                && u.moderate
                && (self.state_checked || moments_fit());
            if safe {
                u.in_place = Some(largest + reach.unwrap_or(0.0));
            } else {
                let zeros = || Tensor::zeros(u.grad.shape());
                let (m, v) = match self.state.moments.get(idx) {
                    Some(Some((m, v))) => (m.clone(), v.clone()),
                    _ => (zeros(), zeros()),
                };
                let (mut m, mut v) = (m.data().to_vec(), v.data().to_vec());
                let x: Vec<F> = store
                    .raw(u.param)
                    .data()
                    .iter()
                    .zip(u.grad.data())
                    .enumerate()
                    .map(|(i, (&x, &g))| rule.update(x, &mut m[i], &mut v[i], g))
                    .collect();
                let shape = u.grad.shape();
                let (x, m, v) = (
                    Tensor::from_vec(x, shape)?,
                    Tensor::from_vec(m, shape)?,
                    Tensor::from_vec(v, shape)?,
                );
                for t in [&x, &m, &v] {
                    refuse_non_finite(store, u.param, t)?;
                }
                aside.push((u.param, x, m, v));
            }
        }
        // Nothing can fail from here on.
        self.state_checked = true;
        self.store = Some(store.id());
        self.state.moments.resize_with(store.len(), || None);
        self.state.step = t;
        for (p, x, m, v) in aside {
            let largest = max_abs(&x)
                .map(|x| x.to_f64().unwrap_or(0.0))
                .unwrap_or(0.0);
            *store.value_mut(p) = x;
            self.owners.record(p);
            self.state.moments[p.index()] = Some((m, v));
            self.largest[p.index()] = Some((store.version(p)?, largest));
        }
        for u in updates {
            let (p, Some(bound)) = (u.param, u.in_place) else {
                continue;
            };
            self.owners.record(p);
            let (m, v) = self.state.moments[p.index()].get_or_insert_with(|| {
                (Tensor::zeros(u.grad.shape()), Tensor::zeros(u.grad.shape()))
            });
            let (value, g, n) = (store.value_mut(p), u.grad.data(), u.grad.len());
            if let Some(x) = value.unique_data_mut() {
                par_blocks(
                    (x, (m.data_mut(), v.data_mut())),
                    n,
                    n,
                    #[inline(always)]
                    |range, (x, (m, v))| {
                        let g = &g[range];
                        for i in 0..x.len() {
                            x[i] = rule.update(x[i], &mut m[i], &mut v[i], g[i]);
                        }
                    },
                );
            } else {
                // A tape that read the parameter still shares its value: the
                // update goes into a new buffer, read from the old one, instead
                // of copying the old one first and updating the copy.
                let old = value.data();
                let mut new = Vec::with_capacity(n);
                par_blocks(
                    (
                        &mut new.spare_capacity_mut()[..n],
                        (m.data_mut(), v.data_mut()),
                    ),
                    n,
                    n,
                    #[inline(always)]
                    |range, (x, (m, v))| {
                        let (old, g) = (&old[range.clone()], &g[range]);
                        for i in 0..x.len() {
                            x[i].write(rule.update(old[i], &mut m[i], &mut v[i], g[i]));
                        }
                    },
                );
                // SAFETY: `par_blocks` gave each of the n elements to one half,
                // whose loop wrote every element of it.
                unsafe { new.set_len(n) };
                *value = Tensor::from_vec(new, value.shape())?;
            }
            // the update moved no element by more than lr times the bound
            self.largest[p.index()] = Some((store.version(p)?, bound));
        }
        Ok(())
    }
}

impl<F: Element> Resumable<F> for Adam<F> {
    fn kind(&self) -> &'static str {
        "adam"
    }
    fn save_state(&self, store: &ParamStore<F>, out: &mut StateWriter<F>) -> Result<()> {
        out.scalar("step", self.state.step)?;
        for p in store.params() {
            if let Some(Some((m, v))) = self.state.moments.get(p.index()) {
                out.tensor("m", store.name(p), m);
                out.tensor("v", store.name(p), v);
            }
        }
        Ok(())
    }
    fn check_state(&self, store: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()> {
        read_adam(store, state).map(|_| ())
    }
    fn load_state(&mut self, store: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()> {
        self.set_state(read_adam(store, state)?);
        self.state_checked = true;
        self.store = Some(store.id());
        Ok(())
    }
}

/// Adam's state from a checkpoint, validated: a step count, and for each
/// parameter both moments or neither, of its shape, finite, `v >= 0`.
fn read_adam<F: Element>(
    store: &ParamStore<F>,
    state: &StateReader<'_, F>,
) -> Result<AdamState<F>> {
    let step = state.scalar("step")?;
    let step = step.parse::<u64>().map_err(|_| Error::NotACheckpoint {
        reason: format!("adam_step '{step}' is not a step count"),
    })?;
    let mut moments = Vec::with_capacity(store.len());
    for p in store.params() {
        let name = store.name(p);
        let pair = match (state.tensor("m", name), state.tensor("v", name)) {
            (Some(m), Some(v)) => {
                for t in [m, v] {
                    if t.shape() != store.raw(p).shape() {
                        return Err(Error::ParamShapeMismatch {
                            name: name.into(),
                            expected: store.raw(p).shape().to_vec(),
                            found: t.shape().to_vec(),
                        });
                    }
                }
                let bad = max_abs(m).is_err()
                    || max_abs(v).is_err()
                    || v.data().iter().any(|&x| x < F::zero());
                if bad {
                    return Err(Error::NotACheckpoint {
                        reason: format!("Adam's moments of '{name}' are not finite, or v < 0"),
                    });
                }
                Some((m.clone(), v.clone()))
            }
            (None, None) => None,
            _ => {
                return Err(Error::NotACheckpoint {
                    reason: format!("Adam's state of '{name}' has one moment without the other"),
                });
            }
        };
        moments.push(pair);
    }
    Ok(AdamState { step, moments })
}

impl<F: Element> Resumable<F> for Sgd<F> {
    fn kind(&self) -> &'static str {
        "sgd"
    }
    fn save_state(&self, store: &ParamStore<F>, out: &mut StateWriter<F>) -> Result<()> {
        for p in store.params() {
            if let Some(Some(v)) = self.velocity.get(p.index()) {
                out.tensor("velocity", store.name(p), v);
            }
        }
        Ok(())
    }
    fn check_state(&self, store: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()> {
        read_sgd(store, state).map(|_| ())
    }
    fn load_state(&mut self, store: &ParamStore<F>, state: &StateReader<'_, F>) -> Result<()> {
        self.velocity = read_sgd(store, state)?;
        self.store = Some(store.id());
        self.owners = Owners::default();
        Ok(())
    }
}

fn read_sgd<F: Element>(
    store: &ParamStore<F>,
    state: &StateReader<'_, F>,
) -> Result<Vec<Option<Tensor<F>>>> {
    store
        .params()
        .map(|p| {
            let name = store.name(p);
            match state.tensor("velocity", name) {
                Some(v) if v.shape() != store.raw(p).shape() => Err(Error::ParamShapeMismatch {
                    name: name.into(),
                    expected: store.raw(p).shape().to_vec(),
                    found: v.shape().to_vec(),
                }),
                Some(v) if max_abs(v).is_err() => Err(Error::NotACheckpoint {
                    reason: format!("Sgd's velocity of '{name}' is not finite"),
                }),
                v => Ok(v.cloned()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tape;

    #[test]
    fn adam_first_step_moves_by_lr() {
        // On step 1, m_hat = g and v_hat = g^2, so the update is lr * g/(|g|+eps) ~ lr * sign(g).
        let mut store = ParamStore::<f64>::new();
        let p = store.add("w", Tensor::vector(&[1.0, -2.0]));
        let tape = Tape::new();
        let w = tape.param(&store, p);
        let loss = (w * Tensor::vector(&[3.0, -0.5])).sum();
        let grads = loss.backward().unwrap();
        let mut adam = Adam::new(0.1);
        adam.step(&mut store, &grads).unwrap();
        let v = store.raw(p).data();
        assert!(
            (v[0] - 0.9).abs() < 1e-7 && (v[1] - (-1.9)).abs() < 1e-7,
            "{v:?}"
        );
    }

    #[test]
    fn adam_gives_the_same_update_whether_or_not_a_tape_still_holds_the_parameter() {
        // A live tape shares the parameter's value, so Adam writes a new
        // buffer; without it, Adam updates in place. Both must agree exactly,
        // on one thread and on two (a large parameter).
        for n in [5, 3 * crate::kernels::parallel::PARALLEL_MIN + 3] {
            let init = Tensor::<f32>::from_fn(&[n], |i| (i % 17) as f32 * 0.1 - 0.8);
            let weights = Tensor::<f32>::from_fn(&[n], |i| (i % 7) as f32 - 3.0);
            let (mut kept, mut dropped) = (ParamStore::new(), ParamStore::new());
            let (pk, pd) = (kept.add("w", init.clone()), dropped.add("w", init));
            let (mut adam_k, mut adam_d) = (Adam::new(0.01), Adam::new(0.01));
            for step in 0..3 {
                let tape = Tape::new();
                let w = tape.param(&kept, pk);
                let grads = (w * w * weights.clone()).sum().backward().unwrap();
                adam_k.step(&mut kept, &grads).unwrap();
                // the tape still holds the old value, unchanged
                assert_ne!(w.value().data(), kept.raw(pk).data());
                let grads = {
                    let tape = Tape::new();
                    let w = tape.param(&dropped, pd);
                    (w * w * weights.clone()).sum().backward().unwrap()
                };
                let before = dropped.raw(pd).data().as_ptr();
                adam_d.step(&mut dropped, &grads).unwrap();
                // (at step 0 the two stores still share `init`)
                if step > 0 {
                    assert_eq!(before, dropped.raw(pd).data().as_ptr(), "in place");
                }
            }
            assert_eq!(kept.raw(pk), dropped.raw(pd), "n = {n}");
            assert_eq!(adam_k.state().moments, adam_d.state().moments);
        }
    }

    #[test]
    fn sgd_momentum_accumulates() {
        // g = 1 each step: v1 = 1, v2 = 1.5; x = 0 - 0.1 - 0.15 = -0.25
        let mut store = ParamStore::<f64>::new();
        let p = store.add("w", Tensor::scalar(0.0));
        let mut sgd = Sgd::with_momentum(0.1, 0.5);
        for _ in 0..2 {
            let tape = Tape::new();
            let grads = tape.param(&store, p).sum().backward().unwrap();
            sgd.step(&mut store, &grads).unwrap();
        }
        assert!((store.raw(p).data()[0] + 0.25).abs() < 1e-12);
    }
}
