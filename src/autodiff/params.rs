//! Persistent, named parameters that outlive tapes.

use crate::error::{Error, Number, Result};
use crate::tensor::{Element, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

/// A handle to a parameter in a [`ParamStore`]. Layers keep these, never
/// [`Var`](crate::Var)s, and read them onto each new tape with
/// [`Tape::param`](crate::Tape::param).
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let w: Param = store.add("w", Tensor::scalar(1.5));
/// assert_eq!(store.name(w), "w");
/// assert_eq!(store.get("w"), Some(w));
/// let tape = Tape::new();
/// assert_eq!(tape.param(&store, w).item()?, 1.5);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Param {
    store: u64,
    index: usize,
    /// Which addition to its store made it: a position freed by a failed
    /// [`ParamStore::adding`] and taken by a later parameter does not make
    /// an old handle refer to the new one.
    serial: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ParamKey {
    store: u64,
    index: usize,
    serial: u64,
}

impl Param {
    /// The parameter's position in its store (insertion order). A position
    /// freed by a failed [`ParamStore::adding`] goes to the next parameter
    /// added; the two handles still differ (`==`, hashing), and the store
    /// refuses the removed one's.
    pub fn index(self) -> usize {
        self.index
    }

    pub(crate) fn key(self) -> ParamKey {
        ParamKey {
            store: self.store,
            index: self.index,
            serial: self.serial,
        }
    }
}

impl ParamKey {
    /// Whether the parameter belongs to the same store as `p`.
    pub(crate) fn same_store(self, p: Param) -> bool {
        self.store == p.store
    }
}

/// How a stored value maps to the value read on the tape.
///
/// The optimizer updates the stored, unconstrained value; [`Tape::param`]
/// reads it through the constraint, so however large a step, the value a
/// model sees stays in its domain (up to rounding at the edge of the unit
/// interval; see [`Constraint::UnitInterval`]).
///
/// [`Tape::param`]: crate::Tape::param
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let sigma = store.add_positive("sigma", Tensor::scalar(0.5));
/// assert!(matches!(store.constraint(sigma)?, Constraint::Positive { .. }));
/// assert!((store.value(sigma).item()? - 0.5).abs() < 1e-12); // what the model reads
/// assert!(store.raw(sigma).item()? < 0.0);                    // stored: softplus⁻¹(0.5 − 1e-5)
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Constraint {
    /// Read as stored.
    Real,
    /// Stored as `rho`, read as `softplus(rho) + eps` (always positive):
    /// scales and standard deviations ([`ParamStore::add_positive`]).
    Positive {
        /// The floor added to the softplus.
        eps: f64,
    },
    /// Stored as a logit, read as `sigmoid(logit)`, in (0, 1): mixing
    /// weights such as a spike-and-slab prior's `pi`, probabilities
    /// ([`ParamStore::add_unit_interval`]). Far out, the read value rounds
    /// to exactly 1 (logits above about 17 in `f32`, 37 in `f64`); a
    /// distribution that needs `p < 1` then refuses it by name.
    UnitInterval,
}

impl Constraint {
    /// Maps a constrained value back to the stored one, or `None` outside the domain.
    pub fn inverse(self, value: f64) -> Option<f64> {
        match self {
            Constraint::Real => value.is_finite().then_some(value),
            Constraint::Positive { eps } => {
                let y = value - eps;
                // softplus^-1(y) = y + ln(1 - e^-y) = y + ln(-expm1(-y))
                (y > 0.0 && y.is_finite()).then(|| y + (-(-y).exp_m1()).ln())
            }
            // logit(p) = ln p - ln(1 - p), with ln(1 - p) = log1p(-p) exact for small p
            Constraint::UnitInterval => {
                (value > 0.0 && value < 1.0).then(|| value.ln() - (-value).ln_1p())
            }
        }
    }

    /// The domain, for error messages.
    fn domain(self) -> String {
        match self {
            Constraint::Real => "finite".into(),
            Constraint::Positive { eps } => format!("finite and above the floor {}", Number(eps)),
            Constraint::UnitInterval => "in (0, 1)".into(),
        }
    }
}

struct Entry<F> {
    name: String,
    value: Tensor<F>,
    constraint: Constraint,
    frozen: bool,
    /// Bumped by every change of the value, so that a gradient computed
    /// from an older value is refused ([`Error::StaleGradient`]).
    version: u64,
    /// The store's count of additions when this one was made.
    serial: u64,
}

/// Named persistent parameters.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let mu = store.add("mean", Tensor::scalar(0.3));
/// let sd = store.add_positive("std", Tensor::scalar(2.0));
/// let tape = Tape::new();
/// // the positive parameter is stored as rho and read as softplus(rho) + 1e-5
/// assert!((tape.param(&store, sd).item()? - 2.0).abs() < 1e-12);
/// assert_eq!(store.name(mu), "mean");
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct ParamStore<F> {
    id: u64,
    entries: Vec<Entry<F>>,
    /// Parameters ever added (removed ones included).
    added: u64,
    /// How many times [`ParamStore::adding`] removed parameters.
    removals: u64,
}

impl<F: Element> Default for ParamStore<F> {
    fn default() -> Self {
        Self::new()
    }
}

/// The floor of positive parameters made by [`ParamStore::add_positive`] (TFP's default).
pub const POSITIVE_EPS: f64 = 1e-5;

impl<F: Element> ParamStore<F> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore {
            id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            entries: Vec::new(),
            added: 0,
            removals: 0,
        }
    }

    /// The store's process-unique identity.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// How many times a failed [`ParamStore::adding`] removed parameters:
    /// optimizers look for state of removed parameters only when it moved.
    pub(crate) fn removals(&self) -> u64 {
        self.removals
    }

    /// Adds an unconstrained parameter.
    ///
    /// # Panics
    /// On a duplicate name; [`ParamStore::try_add`] returns an error instead.
    pub fn add(&mut self, name: impl Into<String>, init: Tensor<F>) -> Param {
        self.try_add(name, init).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Adds an unconstrained parameter, erroring on a duplicate name.
    pub fn try_add(&mut self, name: impl Into<String>, init: Tensor<F>) -> Result<Param> {
        self.insert(name.into(), init, Constraint::Real)
    }

    /// Adds a positive parameter whose initial (constrained) value is `init`;
    /// it is stored as `rho = softplus^-1(init - 1e-5)` and read as
    /// `softplus(rho) + 1e-5`.
    ///
    /// # Panics
    /// On a duplicate name or a value `<= 1e-5`; see [`ParamStore::try_add_positive`].
    pub fn add_positive(&mut self, name: impl Into<String>, init: Tensor<F>) -> Param {
        self.try_add_positive(name, init)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ParamStore::add_positive`] returning errors instead of panicking.
    pub fn try_add_positive(&mut self, name: impl Into<String>, init: Tensor<F>) -> Result<Param> {
        let constraint = Constraint::Positive { eps: POSITIVE_EPS };
        self.try_add_constrained("ParamStore::add_positive", name.into(), init, constraint)
    }

    /// Adds a parameter in (0, 1) whose initial (constrained) value is
    /// `init`; it is stored as the logit `ln(p / (1 - p))` and read as
    /// `sigmoid(logit)`, so no optimizer step can take it out of (0, 1).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let mut store = ParamStore::<f64>::new();
    /// let pi = store.add_unit_interval("prior/pi", Tensor::scalar(0.5));
    /// let tape = Tape::new();
    /// let prior = SpikeAndSlab::new(tape.param(&store, pi), tape.scalar(1.0), tape.scalar(2000.0))?;
    /// let lp = prior.log_prob(tape.scalar(0.3))?;
    /// assert!(lp.backward()?.param(pi).is_some()); // the mixing weight trains
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Panics
    /// On a duplicate name or a value outside (0, 1); see
    /// [`ParamStore::try_add_unit_interval`].
    pub fn add_unit_interval(&mut self, name: impl Into<String>, init: Tensor<F>) -> Param {
        self.try_add_unit_interval(name, init)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ParamStore::add_unit_interval`] returning errors instead of panicking.
    pub fn try_add_unit_interval(
        &mut self,
        name: impl Into<String>,
        init: Tensor<F>,
    ) -> Result<Param> {
        let constraint = Constraint::UnitInterval;
        self.try_add_constrained(
            "ParamStore::add_unit_interval",
            name.into(),
            init,
            constraint,
        )
    }

    /// Stores `init` (a constrained value) as its unconstrained preimage.
    fn try_add_constrained(
        &mut self,
        op: &'static str,
        name: String,
        init: Tensor<F>,
        constraint: Constraint,
    ) -> Result<Param> {
        let mut raw = init;
        for (i, x) in raw.data_mut().iter_mut().enumerate() {
            let v = x.to_f64().unwrap_or(f64::NAN);
            match constraint.inverse(v) {
                Some(r) => *x = F::lit(r),
                None => {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "parameter '{name}': initial value {} at element {i} is not {}",
                            Number(v),
                            constraint.domain()
                        ),
                    ));
                }
            }
        }
        self.insert(name, raw, constraint)
    }

    /// Adds a parameter with an explicit constraint, `raw` being the stored
    /// (unconstrained) value, e.g. TFP's `rho ~ N(-3, 0.1)`.
    pub fn try_add_raw(
        &mut self,
        name: impl Into<String>,
        raw: Tensor<F>,
        constraint: Constraint,
    ) -> Result<Param> {
        self.insert(name.into(), raw, constraint)
    }

    fn insert(&mut self, name: String, value: Tensor<F>, constraint: Constraint) -> Result<Param> {
        if self.entries.iter().any(|e| e.name == name) {
            return Err(Error::DuplicateParam { name });
        }
        if name.starts_with("__") {
            return Err(Error::invalid(
                "ParamStore::add",
                format!(
                    "parameter name '{name}' starts with '__', which checkpoints reserve for optimizer state and metadata"
                ),
            ));
        }
        if let Constraint::Positive { eps } = constraint
            && !(eps.is_finite() && eps >= 0.0)
        {
            return Err(Error::invalid(
                "ParamStore::add",
                format!("parameter '{name}': Positive's eps must be finite and >= 0, got {eps}"),
            ));
        }
        if let Some((i, v)) = value.first_non_finite() {
            return Err(Error::invalid(
                "ParamStore::add",
                format!("parameter '{name}' has non-finite initial value {v} at element {i}"),
            ));
        }
        self.entries.push(Entry {
            name,
            // read by every step and updated in place: on a cache line
            value: value.line_aligned(),
            constraint,
            frozen: false,
            version: 0,
            serial: self.added,
        });
        self.added += 1;
        Ok(self.handle(self.entries.len() - 1))
    }

    /// What [`set_raw`](Self::set_raw) checks of a stored value: its
    /// parameter's shape, finite.
    fn check_raw(&self, p: Param, value: &Tensor<F>) -> Result<()> {
        let entry = self.entry(p)?;
        if value.shape() != entry.value.shape() {
            return Err(Error::ParamShapeMismatch {
                name: entry.name.clone(),
                expected: entry.value.shape().to_vec(),
                found: value.shape().to_vec(),
            });
        }
        if let Some((i, v)) = value.first_non_finite() {
            return Err(Error::invalid(
                "ParamStore::set_raw",
                format!(
                    "parameter '{}': value {v} at element {i} is not finite",
                    entry.name
                ),
            ));
        }
        Ok(())
    }

    fn entry(&self, p: Param) -> Result<&Entry<F>> {
        if p.store != self.id {
            return Err(Error::ForeignParam { index: p.index });
        }
        self.entries
            .get(p.index)
            .filter(|e| e.serial == p.serial)
            .ok_or(Error::ForeignParam { index: p.index })
    }

    /// The handle of the parameter at `index`.
    fn handle(&self, index: usize) -> Param {
        Param {
            store: self.id,
            index,
            serial: self.entries[index].serial,
        }
    }

    pub(crate) fn key(&self, p: Param) -> ParamKey {
        p.key()
    }

    /// The stored, unconstrained value (`rho` for a positive parameter, the
    /// logit for one in (0, 1)): what optimizers update and checkpoints
    /// hold. [`ParamStore::value`] gives the value a model reads.
    pub fn try_raw(&self, p: Param) -> Result<&Tensor<F>> {
        Ok(&self.entry(p)?.value)
    }

    /// [`ParamStore::try_raw`], panicking for a parameter of another store.
    ///
    /// # Panics
    /// If `p` belongs to another store.
    pub fn raw(&self, p: Param) -> &Tensor<F> {
        self.try_raw(p).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sets the value a model reads (`2.0` for a positive parameter that
    /// should read 2): it is stored through the constraint's inverse.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let mut store = ParamStore::<f64>::new();
    /// let sigma = store.add_positive("sigma", Tensor::scalar(0.5));
    /// assert!((store.value(sigma).item()? - 0.5).abs() < 1e-12);
    /// store.set_value(sigma, Tensor::scalar(2.0))?;
    /// assert!((store.value(sigma).item()? - 2.0).abs() < 1e-12);
    /// assert!(store.raw(sigma).item()? < 2.0); // rho = softplus^-1(2 - 1e-5)
    /// assert!(store.set_value(sigma, Tensor::scalar(-1.0)).is_err());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// Another shape, or a value outside the constraint's domain (naming the
    /// element).
    pub fn set_value(&mut self, p: Param, value: Tensor<F>) -> Result<()> {
        let raw = self.raw_for(p, value)?;
        self.set_raw(p, raw)
    }

    /// The stored value that [`set_value`](Self::set_value) would write for
    /// `value`, checked as it checks it (the shape, the constraint's
    /// domain, a finite result), without writing: for callers that validate
    /// several writes before making the first.
    pub(crate) fn raw_for(&self, p: Param, value: Tensor<F>) -> Result<Tensor<F>> {
        let entry = self.entry(p)?;
        let (constraint, name) = (entry.constraint, &entry.name);
        let mut raw = value;
        for (i, x) in raw.data_mut().iter_mut().enumerate() {
            let v = x.to_f64().unwrap_or(f64::NAN);
            match constraint.inverse(v) {
                Some(r) => *x = F::lit(r),
                None => {
                    return Err(Error::invalid(
                        "ParamStore::set_value",
                        format!(
                            "parameter '{name}': value {v} at element {i} is not {}",
                            constraint.domain()
                        ),
                    ));
                }
            }
        }
        self.check_raw(p, &raw)?;
        Ok(raw)
    }

    /// Runs `add`, which adds parameters (a layer's constructor), and on an
    /// error removes every parameter it added, so that a constructor that
    /// fails part-way (a later name taken, an initial value that overflows)
    /// leaves nothing behind for the optimizer, which would refuse its next
    /// step for want of their gradients, and for checkpoints. The built-in
    /// layers construct this way.
    ///
    /// Only additions are undone: a value `add` set or a parameter it froze
    /// stays. A handle to a removed parameter is refused by the store
    /// ([`Error::ForeignParam`]) even after another parameter takes its
    /// position, and the optimizers start afresh for a parameter in a
    /// position whose previous one was removed.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let mut store = ParamStore::<f64>::new();
    /// store.add("gain/scale", Tensor::scalar(1.0));
    /// // a layer whose second parameter's name is taken
    /// let built = store.adding(|store| {
    ///     let loc = store.try_add("gain/loc", Tensor::scalar(0.0))?;
    ///     let scale = store.try_add_positive("gain/scale", Tensor::scalar(0.1))?;
    ///     Ok((loc, scale))
    /// });
    /// assert!(matches!(built, Err(Error::DuplicateParam { .. })));
    /// assert_eq!(store.get("gain/loc"), None); // removed with the failure
    /// assert_eq!(store.len(), 1);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn adding<R>(&mut self, add: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let len = self.entries.len();
        let out = add(self);
        if out.is_err() && self.entries.len() > len {
            // a handle kept from `add` is refused by its serial
            self.entries.truncate(len);
            self.removals += 1;
        }
        out
    }

    /// Overwrites the stored, unconstrained value: same shape, finite.
    pub fn set_raw(&mut self, p: Param, value: Tensor<F>) -> Result<()> {
        self.check_raw(p, &value)?;
        let entry = &mut self.entries[p.index];
        entry.value = value.line_aligned();
        entry.version += 1;
        Ok(())
    }

    /// The version of a parameter's value: 0 when added, bumped by every
    /// optimizer update, [`ParamStore::set_value`], [`ParamStore::set_raw`]
    /// and checkpoint load.
    pub fn version(&self, p: Param) -> Result<u64> {
        Ok(self.entry(p)?.version)
    }

    /// The constraint of a parameter.
    pub fn constraint(&self, p: Param) -> Result<Constraint> {
        Ok(self.entry(p)?.constraint)
    }

    /// The name of a parameter.
    pub fn name(&self, p: Param) -> &str {
        self.entry(p)
            .map(|e| e.name.as_str())
            .unwrap_or("<foreign parameter>")
    }

    /// The parameter with this name.
    pub fn get(&self, name: &str) -> Option<Param> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .map(|index| self.handle(index))
    }

    /// All parameters, in insertion order.
    pub fn params(&self) -> impl Iterator<Item = Param> + '_ {
        (0..self.entries.len()).map(|index| self.handle(index))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of scalar elements over all parameters.
    pub fn num_elements(&self) -> usize {
        self.entries.iter().map(|e| e.value.len()).sum()
    }

    /// Excludes a parameter from optimizer steps (no gradient is then required).
    pub fn freeze(&mut self, p: Param) -> Result<()> {
        self.entry(p)?;
        self.entries[p.index].frozen = true;
        Ok(())
    }

    /// Undoes [`ParamStore::freeze`].
    pub fn unfreeze(&mut self, p: Param) -> Result<()> {
        self.entry(p)?;
        self.entries[p.index].frozen = false;
        Ok(())
    }

    /// Whether a parameter is frozen.
    pub fn is_frozen(&self, p: Param) -> bool {
        self.entry(p).map(|e| e.frozen).unwrap_or(false)
    }

    /// The value, for an update in place: bumps the version.
    pub(crate) fn value_mut(&mut self, p: Param) -> &mut Tensor<F> {
        let entry = &mut self.entries[p.index];
        entry.version += 1;
        &mut entry.value
    }
}
