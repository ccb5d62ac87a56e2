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
use crate::distributions::Distribution;
use crate::distributions::kl::{Divergence, kl_divergence_with};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// How stochastic layers draw their weights in a forward pass.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = DenseFlipout::new(&mut store, "dense", 2, 1, &mut rng)?;
/// let x = Tensor::from_rows(&[[1.0, 2.0]])?;
/// let run = |mode: SampleMode, rng: &mut StdRng| -> Result<f64> {
///     let tape = Tape::new();
///     let mut cx = Forward::new(&tape, &store, rng).with_mode(mode);
///     layer.forward(&mut cx, tape.constant(x.clone()))?.item()
/// };
/// // a fresh weight sample each pass, or the posterior means
/// assert_ne!(run(SampleMode::Sample, &mut rng)?, run(SampleMode::Sample, &mut rng)?);
/// assert_eq!(run(SampleMode::PosteriorMean, &mut rng)?, run(SampleMode::PosteriorMean, &mut rng)?);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleMode {
    /// Draw a fresh posterior sample each forward pass (training, MC prediction).
    #[default]
    Sample,
    /// Use the posterior means (a deterministic network). The divergences
    /// are those of a drawn pass: one without a closed form is estimated at
    /// a posterior draw made for it (the RNG is read), not at the means.
    PosteriorMean,
    /// `K` posterior samples in one pass along a sample axis: the input's
    /// rows are `K` blocks of `B` examples (see [`Iwae::tile`](crate::Iwae::tile)),
    /// block `k` goes through weight sample `k`, and every stochastic layer
    /// registers its log ratio `ln q(w_k) − ln p(w_k)` per sample
    /// ([`Forward::add_log_ratio`]) for the importance-weighted bound
    /// ([`Iwae`](crate::Iwae)). Layers that cannot draw per-sample weights
    /// refuse it with an error.
    SampleAxis(usize),
}

/// The named divergence (KL) terms of one forward pass.
///
/// Each term is a scalar var (a registered tensor is summed); a name can
/// be registered once. [`Elbo`](crate::Elbo) counts each term exactly once.
///
/// In a pass with a sample axis ([`SampleMode::SampleAxis`]) every term is
/// instead a vector of `K` log ratios, one per posterior sample
/// ([`Divergences::add_log_ratio`]); such a pass's objective is
/// [`Iwae`](crate::Iwae), and [`Elbo`](crate::Elbo) refuses it.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let mut divergences = Divergences::new(&tape);
/// divergences.add("a/kernel_divergence", tape.scalar(2.0))?;
/// divergences.add("b/kernel_divergence", tape.constant(Tensor::vector(&[0.5, 0.5])))?;
/// assert_eq!(divergences.total().item()?, 3.0);
/// // a name counts once
/// assert!(divergences.add("a/kernel_divergence", tape.scalar(1.0)).is_err());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Divergences<'t, F: Element> {
    tape: &'t Tape<F>,
    terms: Vec<(String, Var<'t, F>)>,
    samples: Option<usize>,
}

impl<'t, F: Element> Divergences<'t, F> {
    /// No terms yet, for vars on `tape`.
    pub fn new(tape: &'t Tape<F>) -> Self {
        Divergences {
            tape,
            terms: Vec::new(),
            samples: None,
        }
    }

    /// No terms yet, for a pass with `samples` posterior samples along a
    /// sample axis: terms are registered per sample.
    ///
    /// # Errors
    /// `samples == 0`.
    pub fn per_sample(tape: &'t Tape<F>, samples: usize) -> Result<Self> {
        if samples == 0 {
            return Err(Error::invalid(
                "Divergences::per_sample",
                "a sample axis needs K >= 1 samples",
            ));
        }
        Ok(Divergences {
            tape,
            terms: Vec::new(),
            samples: Some(samples),
        })
    }

    /// `Some(K)` when the terms are per-sample log ratios of a pass with a
    /// sample axis of `K` samples.
    pub fn samples(&self) -> Option<usize> {
        self.samples
    }

    /// Registers a term of a pass with a sample axis: `log_ratio` holds
    /// `ln q(w_k) − ln p(w_k)` for each of the `K` samples (shape `[K]`;
    /// its mean over `k` is a Monte Carlo estimate of the KL).
    ///
    /// # Errors
    /// A pass without a sample axis (use [`Divergences::add`]), a shape
    /// other than `[K]`, a value that is NaN or infinite, a duplicate
    /// name, a var on another tape; all name the term.
    pub fn add_log_ratio(&mut self, name: impl Into<String>, log_ratio: Var<'t, F>) -> Result<()> {
        let name = name.into();
        let Some(k) = self.samples else {
            return Err(Error::invalid(
                "Divergences::add_log_ratio",
                format!("'{name}': this pass has no sample axis; register the divergence with add"),
            ));
        };
        self.check_new(&name, &log_ratio, "add_log_ratio")?;
        if log_ratio.shape() != [k] {
            return Err(Error::invalid(
                "Divergences::add_log_ratio",
                format!(
                    "'{name}' has shape {:?}; a pass with {k} samples needs one log ratio per sample, [{k}]",
                    log_ratio.shape()
                ),
            ));
        }
        let values = log_ratio.value();
        if let Some(v) = values.data().iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "Divergences::add_log_ratio",
                format!("a log ratio of '{name}' is {v}"),
            ));
        }
        self.terms.push((name, log_ratio));
        Ok(())
    }

    /// Errors for a var on another tape or a name registered before.
    fn check_new(&self, name: &str, var: &Var<'t, F>, op: &'static str) -> Result<()> {
        if !std::ptr::eq(var.tape(), self.tape) {
            return Err(Error::ForeignTape { op });
        }
        if self.terms.iter().any(|(n, _)| n == name) {
            return Err(Error::DuplicateDivergence {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Registers a divergence term under a name; its elements are summed
    /// (a KL per batch element becomes the pass's total).
    ///
    /// # Errors
    /// A value (sum) that is NaN or infinite, naming the term;
    /// [`Error::DuplicateDivergence`] for a name registered before;
    /// [`Error::ForeignTape`] for a var on another tape.
    /// In a pass with a sample axis, every term must be per sample
    /// ([`Divergences::add_log_ratio`]): one value shared by all samples
    /// would give the importance weights a wrong term, so it is an error.
    pub fn add(&mut self, name: impl Into<String>, kl: Var<'t, F>) -> Result<()> {
        let name = name.into();
        if let Some(k) = self.samples {
            return Err(Error::invalid(
                "Divergences::add",
                format!(
                    "'{name}' is one divergence for a pass with {k} samples along a sample axis; \
                     such a pass needs ln q(w_k) - ln p(w_k) per sample (add_log_ratio), \
                     which this layer does not provide"
                ),
            ));
        }
        self.check_new(&name, &kl, "add_divergence")?;
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

    /// The terms' names and values, in registration order (a per-sample
    /// term's value is its mean over samples).
    pub fn values(&self) -> Vec<(String, F)> {
        self.terms
            .iter()
            .map(|(n, v)| {
                let t = v.value();
                (n.clone(), t.sum_all() / F::lit(t.len().max(1) as f64))
            })
            .collect()
    }

    /// The value of the term registered under `name`.
    pub fn get(&self, name: &str) -> Option<Var<'t, F>> {
        self.terms.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The sum of every term (a constant 0 if there are none). In a pass
    /// with a sample axis, the mean over samples of [`Divergences::log_ratio`].
    pub fn total(&self) -> Var<'t, F> {
        match self.log_ratio() {
            Some(r) => r.mean(),
            None => {
                let mut total = self.tape.scalar(F::zero());
                for (_, v) in &self.terms {
                    total = total + *v;
                }
                total
            }
        }
    }

    /// In a pass with a sample axis of `K` samples, the sum of every term
    /// per sample, `[K]` (zeros if there are none); `None` otherwise.
    pub fn log_ratio(&self) -> Option<Var<'t, F>> {
        let k = self.samples?;
        let mut total = self.tape.constant(Tensor::zeros(&[k]));
        for (_, v) in &self.terms {
            total = total + *v;
        }
        Some(total)
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
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let scale = store.add_positive("scale", Tensor::scalar(0.5));
/// let mut rng = StdRng::seed_from_u64(0);
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// assert_eq!(cx.mode(), SampleMode::Sample);
/// // parameters come onto the tape in the form the model reads
/// assert!((cx.param(scale)?.item()? - 0.5).abs() < 1e-12);
/// let q = Normal::new(tape.scalar(0.0), cx.param(scale)?)?;
/// let p = Normal::new(tape.scalar(0.0), tape.scalar(1.0))?;
/// cx.add_kl("mine/kernel_divergence", &q, &p, Divergence::Analytic)?;
/// assert_eq!(cx.divergences().len(), 1);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Forward<'t, 'a, F: Element> {
    tape: &'t Tape<F>,
    store: &'a ParamStore<F>,
    rng: &'a mut dyn Rng,
    mode: SampleMode,
    divergences: Divergences<'t, F>,
    /// The draws of the hierarchical scales this pass has read, by their
    /// first parameter: a scale shared by several layers is drawn, and its
    /// divergence registered, once a pass.
    scale_draws: Vec<(Param, Var<'t, F>, Var<'t, F>)>,
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
            scale_draws: Vec::new(),
        }
    }

    /// The same pass in another sample mode.
    ///
    /// For [`SampleMode::SampleAxis`] the pass's divergences become per
    /// sample; terms registered before the switch are kept as they are, and
    /// [`Iwae`](crate::Iwae) refuses them.
    pub fn with_mode(mut self, mode: SampleMode) -> Self {
        self.mode = mode;
        if let SampleMode::SampleAxis(k) = mode {
            self.divergences.samples = Some(k);
        } else {
            self.divergences.samples = None;
        }
        self
    }

    /// In [`SampleMode::SampleAxis`]`(K)`, `(K, B)` for an input of
    /// `rows = K * B` rows.
    ///
    /// # Errors
    /// Another mode, `K = 0`, or `rows` not a multiple of `K`; `layer` is named.
    pub fn sample_blocks(&self, layer: &str, rows: usize) -> Result<(usize, usize)> {
        match self.mode {
            SampleMode::SampleAxis(0) => Err(Error::invalid(
                "SampleMode::SampleAxis",
                format!("layer '{layer}': a sample axis needs K >= 1 samples"),
            )),
            SampleMode::SampleAxis(k) if rows.is_multiple_of(k) => Ok((k, rows / k)),
            SampleMode::SampleAxis(k) => Err(Error::invalid(
                "SampleMode::SampleAxis",
                format!(
                    "layer '{layer}': {rows} input rows are not {k} equal blocks, one per sample (tile the input with Iwae::tile)"
                ),
            )),
            other => Err(Error::invalid(
                "Forward::sample_blocks",
                format!("layer '{layer}': the pass is in {other:?}, not SampleAxis"),
            )),
        }
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

    /// Registers the per-sample log ratios of a pass with a sample axis
    /// ([`Divergences::add_log_ratio`]).
    pub fn add_log_ratio(&mut self, name: impl Into<String>, log_ratio: Var<'t, F>) -> Result<()> {
        self.divergences.add_log_ratio(name, log_ratio)
    }

    /// The draws of the hierarchical scale whose first parameter is `key`,
    /// if this pass has read it.
    pub(crate) fn scale_draw(&self, key: Param) -> Option<(Var<'t, F>, Var<'t, F>)> {
        self.scale_draws
            .iter()
            .find(|(k, ..)| *k == key)
            .map(|&(_, local, global)| (local, global))
    }

    /// Records the draws of the hierarchical scale whose first parameter is `key`.
    pub(crate) fn keep_scale_draw(&mut self, key: Param, local: Var<'t, F>, global: Var<'t, F>) {
        self.scale_draws.push((key, local, global));
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
