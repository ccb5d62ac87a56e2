//! # bayesgrad
//!
//! A tape-based reverse-mode autodiff engine in which probability
//! distributions are differentiable values and variational Bayesian layers
//! register their KL terms as named nodes of the forward pass.
//!
//! # Concepts
//!
//! **A [`Tape`] records one forward pass; a [`Var`] is a `Copy` handle to a
//! value on it.** A var borrows its tape, so nothing built from vars (a
//! distribution, say) can outlive the pass or be stored in a layer.
//! [`Var::backward`] returns the [`Gradients`]; make a new tape per step.
//!
//! ```
//! use bayesgrad::prelude::*;
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::vector(&[1.0, 2.0]));
//! let y = (x.square() * 3.0).sum(); // 3 Σ x²
//! assert_eq!(y.backward()?.get(x).unwrap().data(), &[6.0, 12.0]);
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! **A [`ParamStore`] holds the trainable values across passes; a [`Param`]
//! is a handle into it.** Each pass reads parameters onto its tape
//! ([`Tape::param`]), which is what keeps the gradient path alive. Positive
//! parameters are stored unconstrained and read through a softplus:
//! `value` speaks in what the model reads, `raw` in what is stored.
//!
//! ```
//! use bayesgrad::prelude::*;
//! let mut store = ParamStore::<f64>::new();
//! let sigma = store.add_positive("sigma", Tensor::scalar(0.5));
//! let tape = Tape::new();
//! let s = tape.param(&store, sigma);
//! assert!((s.item()? - 0.5).abs() < 1e-12);
//! assert!(s.backward()?.param(sigma).is_some()); // d sigma / d raw
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! **A [`Distribution`] is built from vars**: `log_prob`, `rsample`,
//! `entropy` and [`kl_divergence`] are differentiable in every parameter.
//! Distributions and analytic KL rules of your own plug in
//! ([`guide::custom_distribution`]).
//!
//! ```
//! use bayesgrad::prelude::*;
//! let tape = Tape::<f64>::new();
//! let mu = tape.var(Tensor::scalar(0.0));
//! let q = Normal::new(mu, tape.scalar(1.0))?;
//! let p = Normal::new(tape.scalar(1.0), tape.scalar(1.0))?;
//! let kl = kl_divergence(&q, &p)?; // (mu - 1)² / 2
//! assert_eq!(kl.item()?, 0.5);
//! assert_eq!(kl.backward()?.get(mu).unwrap().item()?, -1.0);
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! **A [`Module`] maps a var to a var inside a [`Forward`] context**, which
//! carries the store, the RNG, the [`SampleMode`] and the named
//! [`Divergences`] that variational layers register
//! (`<layer>/kernel_divergence`); see [`guide::custom_layer`].
//!
//! ```
//! use bayesgrad::prelude::*;
//! let mut store = ParamStore::<f64>::new();
//! let mut rng = StdRng::seed_from_u64(0);
//! let layer = DenseFlipout::new(&mut store, "dense", 3, 2, &mut rng)?;
//! let tape = Tape::new();
//! let mut cx = Forward::new(&tape, &store, &mut rng);
//! let y = layer.forward(&mut cx, tape.constant(Tensor::zeros(&[4, 3])))?;
//! assert_eq!(y.shape(), vec![4, 2]);
//! assert!(cx.divergences().get("dense/kernel_divergence").is_some());
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! **[`Elbo`] weighs the registered divergences explicitly** against the
//! likelihood, each counted once, with the [`KlWeight`] you choose; [`Iwae`]
//! is the importance-weighted bound with the same weightings
//! ([`guide::elbo`]).
//!
//! ```
//! use bayesgrad::prelude::*;
//! let tape = Tape::<f64>::new();
//! let mut divergences = Divergences::new(&tape);
//! divergences.add("dense/kernel_divergence", tape.scalar(50.0))?;
//! let nll = tape.scalar(10.0); // summed over a batch of 10
//! let elbo = Elbo::new(KlWeight::PerExample { num_examples: 100 });
//! let out = elbo.loss(&divergences, nll, Batch { index: 0, size: 10, step: 0 })?;
//! assert!((out.loss.item()? - (1.0 + 50.0 / 100.0)).abs() < 1e-12);
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! The [`guide`] has a page each on writing a distribution, a layer and an
//! op, on checkpoints, and on the ELBO's weightings.
//!
//! # Randomness
//!
//! Every stochastic call takes the caller's RNG as `&mut dyn rand::Rng`,
//! the generator trait of the current `rand` (0.10, re-exported as
//! [`rand`]): its `StdRng` and `SmallRng`, or any type of yours that
//! implements `rand_core`'s `TryRng` with `Error = Infallible`, coerce to
//! it. A trait object rather than a generic `R: Rng` because the
//! [`Distribution`] trait must stay object-safe (priors and likelihoods are
//! `dyn Distribution`), and because the hot paths do not draw one number at
//! a time: a bulk draw takes one `u64` seed from the RNG and fills the
//! tensor from the crate's own vectorized streams, so the virtual call is
//! paid once per tensor. The same seed gives the same values on every CPU.
//!
//! ```
//! use bayesgrad::prelude::*;
//! let tape = Tape::<f32>::new();
//! let d = Normal::standard(&tape, &[3]);
//! let a = d.sample(&mut StdRng::seed_from_u64(7))?;
//! let b = d.sample(&mut SmallRng::seed_from_u64(7))?;
//! assert_eq!(a, d.sample(&mut StdRng::seed_from_u64(7))?);
//! assert_ne!(a, b);
//! # Ok::<(), bayesgrad::Error>(())
//! ```
//!
//! Kernels run the widest instruction set the CPU has, picked when the
//! program starts (AVX-512, else AVX2 with FMA, else the target's
//! baseline), so no build flag is needed, and split their work over
//! [`threads`]. A result is the same bits whichever set and however many
//! threads run it (matrix products: on any CPU with FMA). Setting
//! `BAYESGRAD_SIMD` to `avx2` or `portable` caps the instruction set of
//! bayesgrad's own kernels (matrixmultiply, which computes the larger
//! products, picks its kernel itself), to compare speeds or to rule the
//! vector code out.
//!
//! The layout follows the layers of the library, each importing only the
//! ones below it: `kernels` (element types, GEMM, threads, random streams),
//! `tensor`, `autodiff` (tape, parameters, ops, gradient checks), `train`
//! (optimizers, checkpoints), `distributions` (families, KL), `bayes`
//! (forward context, ELBO), `layers` (modules, prediction).
//!
//! ```
//! use bayesgrad::prelude::*;
//!
//! // Fit the mean of a Normal to data by gradient descent.
//! let mut store = ParamStore::<f64>::new();
//! let mu = store.add("mean", Tensor::scalar(0.0));
//! let data = Tensor::vector(&[1.0, 2.0, 3.0]);
//! let mut opt = Sgd::new(0.1);
//! for _ in 0..100 {
//!     let tape = Tape::new();
//!     let m = tape.param(&store, mu);
//!     let loss = ((m - data.clone()).square()).mean();
//!     let grads = loss.backward()?;
//!     opt.step(&mut store, &grads)?;
//! }
//! assert!((store.value(mu).data()[0] - 2.0).abs() < 1e-6);
//! # Ok::<(), bayesgrad::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod autodiff;
pub mod bayes;
pub mod distributions;
pub mod error;
pub mod guide;
mod json;
mod kernels;
pub mod layers;
pub mod tensor;
pub mod train;

/// Settings shared by the crate's own property tests.
#[cfg(test)]
pub(crate) mod proptest_settings {
    use proptest::test_runner::{Config, FileFailurePersistence};

    /// `cases` cases, with failing seeds kept in `file` (a committed
    /// `proptest-regressions/<name>.txt`), so that a failure found once is
    /// replayed on every run.
    pub(crate) fn persisted(cases: u32, file: &'static str) -> Config {
        Config {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
            ..Config::default()
        }
    }
}

pub use autodiff::{
    Constraint, GradCheck, GradCheckReport, Gradients, Op, Padding, Param, ParamStore, Tape, Var,
    gradcheck, gradcheck_params,
};
pub use bayes::elbo::{Batch, Elbo, ElboLoss, KlWeight};
pub use bayes::forward::{Divergences, Forward, SampleMode};
pub use bayes::iwae::{Iwae, IwaeLoss};
pub use distributions::{
    Bernoulli, Beta, Binomial, Categorical, Cauchy, Dirichlet, Distribution, Divergence,
    Exponential, Gamma, Geometric, Gumbel, HalfCauchy, HalfNormal, Independent, InverseGamma,
    Kumaraswamy, Laplace, LogNormal, LogitNormal, MixtureOfNormals, MultivariateNormal,
    NegativeBinomial, Normal, Pareto, Poisson, RelaxedBernoulli, RelaxedOneHotCategorical,
    SpikeAndSlab, StudentT, Uniform, VonMises, Weibull, kl_divergence, kl_divergence_with,
    kl_from_sample, kl_monte_carlo,
};
pub use error::{Error, Result};
pub use layers::predict::{Predict, predict_classes, predict_regression};
pub use layers::{
    Activation, BiasMode, Conv2dFlipout, Conv2dLocalReparameterization, Conv2dMap,
    Conv2dReparameterization, Dense, DenseFlipout, DenseLocalReparameterization,
    DenseReparameterization, DistributionHead, Flatten, KlMethod, LinearMap, MaxPool2d, Module,
    Prior, Sequential, VariationalConfig,
};
/// The `rand` release whose RNGs the API takes (`&mut dyn rand::Rng`).
pub use rand;
pub use tensor::{Element, Tensor};
pub use train::{Adam, Optimizer, Sgd};

/// The number of threads the parallel kernels use: the calling thread and
/// `threads() - 1` helpers. It is `BAYESGRAD_THREADS` if that is set to a
/// number from 1 to 256, else the machine's available parallelism, until
/// [`set_threads`] changes it.
///
/// Results do not depend on it: every kernel splits its work so that each
/// value is computed the same way on any number of threads, and random
/// draws depend only on the seed.
pub fn threads() -> usize {
    kernels::parallel::threads()
}

/// Sets the number of threads the parallel kernels use, for every thread
/// of the process, from the next kernel on. Threads that train at the same
/// time share the helpers: a kernel uses the ones idle when it starts and
/// runs the rest of its work itself.
///
/// ```
/// bayesgrad::set_threads(1)?; // everything on the calling thread
/// assert_eq!(bayesgrad::threads(), 1);
/// assert!(bayesgrad::set_threads(0).is_err());
/// # bayesgrad::set_threads(std::thread::available_parallelism().map_or(1, usize::from))?;
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// A count outside 1..=256.
pub fn set_threads(n: usize) -> Result<()> {
    kernels::parallel::set_threads(n).map_err(|why| Error::invalid("set_threads", why))
}

/// Everything a typical program needs, in one import.
pub mod prelude {
    pub use crate::{
        Activation, Adam, Batch, Bernoulli, Beta, BiasMode, Binomial, Categorical, Cauchy,
        Constraint, Conv2dFlipout, Conv2dLocalReparameterization, Conv2dMap,
        Conv2dReparameterization, Dense, DenseFlipout, DenseLocalReparameterization,
        DenseReparameterization, Dirichlet, Distribution, DistributionHead, Divergence,
        Divergences, Elbo, ElboLoss, Element, Error, Exponential, Flatten, Forward, Gamma,
        Geometric, GradCheck, GradCheckReport, Gradients, Gumbel, HalfCauchy, HalfNormal,
        Independent, InverseGamma, Iwae, IwaeLoss, KlMethod, KlWeight, Kumaraswamy, Laplace,
        LinearMap, LogNormal, LogitNormal, MaxPool2d, MixtureOfNormals, Module, MultivariateNormal,
        NegativeBinomial, Normal, Op, Optimizer, Padding, Param, ParamStore, Pareto, Poisson,
        Predict, Prior, RelaxedBernoulli, RelaxedOneHotCategorical, Result, SampleMode, Sequential,
        Sgd, SpikeAndSlab, StudentT, Tape, Tensor, Uniform, Var, VariationalConfig, VonMises,
        Weibull, gradcheck, gradcheck_params, kl_divergence, kl_divergence_with, kl_from_sample,
        kl_monte_carlo, predict_classes, predict_regression,
    };
    pub use rand::{
        Rng, RngExt, SeedableRng,
        rngs::{SmallRng, StdRng},
    };
}
