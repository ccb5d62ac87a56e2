//! The forward context: what one pass of a model carries besides its tape.
//!
//! The [`Tape`] is pure autodiff. The Bayesian state of a forward pass
//! lives here: the parameter store the layers read, the caller's RNG, the
//! [`SampleMode`], and the [`Divergences`] the variational layers register.
//! [`Elbo`](crate::Elbo) and the prediction helpers read it.
//!
//! ```
//! use bayesgrad::prelude::*;
//! let mut store = ParamStore::<f64>::new();
//! let mut rng = StdRng::seed_from_u64(0);
//! let net = Sequential::new()
//!     .push(DenseFlipout::new(&mut store, "hidden", 3, 8, &mut rng)?)
//!     .push(Activation::Relu)
//!     .push(DenseFlipout::new(&mut store, "out", 8, 1, &mut rng)?);
//! let tape = Tape::new();
//! let mut cx = Forward::new(&tape, &store, &mut rng);
//! let y = net.forward(&mut cx, tape.constant(Tensor::zeros(&[4, 3])))?;
//! assert_eq!(y.shape(), vec![4, 1]);
//! let names: Vec<String> = cx.divergences().values().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["hidden/kernel_divergence", "out/kernel_divergence"]);
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::{Tape, Var};
use crate::distributions::kl::{kl_divergence_with, Divergence};
use crate::distributions::Distribution;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// How stochastic layers draw their weights in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleMode {
    /// Draw a fresh posterior sample each forward pass (training, MC prediction).
    #[default]
    Sample,
    /// Use the posterior means (a deterministic network).
    PosteriorMean,
}

/// The named divergence (KL) terms of one forward pass.
///
/// Each term is a scalar var (a registered tensor is summed); a name can
/// be registered once. [`Elbo`](crate::Elbo) counts each term exactly once.
pub struct Divergences<'t, F: Element> {
    tape: &'t Tape<F>,
    terms: Vec<(String, Var<'t, F>)>,
}

impl<'t, F: Element> Divergences<'t, F> {
    /// No terms yet, for vars on `tape`.
    pub fn new(tape: &'t Tape<F>) -> Self {
        Divergences {
            tape,
            terms: Vec::new(),
        }
    }

    /// Registers a divergence term under a name; its elements are summed
    /// (a KL per batch element becomes the pass's total).
    ///
    /// # Errors
    /// A value (sum) that is NaN or infinite, naming the term;
    /// [`Error::DuplicateDivergence`] for a name registered before;
    /// [`Error::ForeignTape`] for a var on another tape.
    pub fn add(&mut self, name: impl Into<String>, kl: Var<'t, F>) -> Result<()> {
        if !std::ptr::eq(kl.tape(), self.tape) {
            return Err(Error::ForeignTape {
                op: "add_divergence",
            });
        }
        let name = name.into();
        if self.terms.iter().any(|(n, _)| *n == name) {
            return Err(Error::DuplicateDivergence { name });
        }
        let total = kl.sum();
        let value = total.item()?;
        if !value.is_finite() {
            return Err(Error::invalid(
                "Divergences::add",
                format!("divergence '{name}' is {value} (shape {:?})", kl.shape()),
            ));
        }
        self.terms.push((name, total));
        Ok(())
    }

    /// The tape the terms live on.
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// The terms as vars, in registration order.
    pub fn vars(&self) -> &[(String, Var<'t, F>)] {
        &self.terms
    }

    /// The terms' names and values, in registration order.
    pub fn values(&self) -> Vec<(String, F)> {
        self.terms
            .iter()
            .map(|(n, v)| (n.clone(), v.item().unwrap_or_else(|_| F::nan())))
            .collect()
    }

    /// The value of the term registered under `name`.
    pub fn get(&self, name: &str) -> Option<Var<'t, F>> {
        self.terms.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The sum of every term (a constant 0 if there are none).
    pub fn total(&self) -> Var<'t, F> {
        let mut total = self.tape.scalar(F::zero());
        for (_, v) in &self.terms {
            total = total + *v;
        }
        total
    }

    /// The number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether no term was registered.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// One forward pass: the tape, the parameters, the RNG, the sample mode
/// and the divergence terms registered so far.
///
/// Every [`Module::forward`](crate::Module::forward) receives it. Build one
/// per pass, next to its tape.
pub struct Forward<'t, 'a, F: Element> {
    tape: &'t Tape<F>,
    store: &'a ParamStore<F>,
    rng: &'a mut dyn Rng,
    mode: SampleMode,
    divergences: Divergences<'t, F>,
}

impl<'t, 'a, F: Element> Forward<'t, 'a, F> {
    /// A pass on `tape` reading `store`, drawing from `rng`, in
    /// [`SampleMode::Sample`].
    pub fn new(tape: &'t Tape<F>, store: &'a ParamStore<F>, rng: &'a mut dyn Rng) -> Self {
        Forward {
            tape,
            store,
            rng,
            mode: SampleMode::Sample,
            divergences: Divergences::new(tape),
        }
    }

    /// The same pass in another sample mode.
    pub fn with_mode(mut self, mode: SampleMode) -> Self {
        self.mode = mode;
        self
    }

    /// The tape.
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// The parameter store.
    pub fn store(&self) -> &'a ParamStore<F> {
        self.store
    }

    /// The caller's RNG.
    pub fn rng(&mut self) -> &mut dyn Rng {
        &mut *self.rng
    }

    /// How stochastic layers draw their weights.
    pub fn mode(&self) -> SampleMode {
        self.mode
    }

    /// Reads a parameter onto the tape in its constrained form
    /// ([`Tape::try_param`]).
    pub fn param(&self, param: Param) -> Result<Var<'t, F>> {
        self.tape.try_param(self.store, param)
    }

    /// Reads a parameter's stored, unconstrained value ([`Tape::try_param_raw`]).
    pub fn param_raw(&self, param: Param) -> Result<Var<'t, F>> {
        self.tape.try_param_raw(self.store, param)
    }

    /// A constant on the tape.
    pub fn constant(&self, value: Tensor<F>) -> Var<'t, F> {
        self.tape.constant(value)
    }

    /// Registers a divergence term ([`Divergences::add`]).
    pub fn add_divergence(&mut self, name: impl Into<String>, kl: Var<'t, F>) -> Result<()> {
        self.divergences.add(name, kl)
    }

    /// Computes KL(q || p) as `method` says (drawing from this pass's RNG
    /// for Monte Carlo) and registers it under `name`.
    pub fn add_kl(
        &mut self,
        name: impl Into<String>,
        q: &dyn Distribution<'t, F>,
        p: &dyn Distribution<'t, F>,
        method: Divergence,
    ) -> Result<Var<'t, F>> {
        let kl = kl_divergence_with(q, p, method, &mut *self.rng)?;
        self.divergences.add(name, kl)?;
        Ok(kl)
    }

    /// The divergence terms registered so far.
    pub fn divergences(&self) -> &Divergences<'t, F> {
        &self.divergences
    }

    /// Ends the pass, keeping its divergence terms.
    pub fn into_divergences(self) -> Divergences<'t, F> {
        self.divergences
    }
}
