//! # bayesgrad
//!
//! A tape-based reverse-mode autodiff engine in which probability
//! distributions are differentiable values and variational Bayesian layers
//! register their KL terms as named nodes on the tape.
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

pub mod alloc;
pub mod bayes;
pub mod checkpoint;
pub mod distributions;
pub mod divergence;
pub mod error;
pub mod fastmath;
pub mod gradcheck;
pub mod layers;
pub mod ops;
pub mod optim;
mod parallel;
pub mod params;
pub mod random;
pub mod tape;
pub mod tensor;

pub use bayes::elbo::{Batch, Elbo, ElboLoss, KlWeight};
pub use bayes::forward::{Divergences, Forward, SampleMode};
pub use bayes::predict::{predict_classes, predict_regression, Predict};
pub use distributions::{
    Bernoulli, Categorical, Distribution, Independent, MixtureOfNormals, Normal, SpikeAndSlab,
};
pub use divergence::{
    kl_divergence, kl_divergence_with, kl_from_sample, kl_monte_carlo, Divergence,
};
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, gradcheck_params, GradCheck, GradCheckReport};
pub use layers::{
    Activation, BiasMode, Conv2dFlipout, Conv2dLocalReparameterization, Conv2dMap,
    Conv2dReparameterization, Dense, DenseFlipout, DenseLocalReparameterization,
    DenseReparameterization, Flatten, KlMethod, LinearMap, MaxPool2d, Module, Prior, Sequential,
    VariationalConfig,
};
pub use ops::Padding;
pub use optim::{Adam, Optimizer, Sgd};
pub use params::{Constraint, Param, ParamStore};
pub use tape::{Gradients, Op, Tape, Var};
pub use tensor::{Element, Tensor};

/// Everything a typical program needs, in one import.
pub mod prelude {
    pub use crate::bayes::elbo::{Batch, Elbo, ElboLoss, KlWeight};
    pub use crate::bayes::forward::{Divergences, Forward, SampleMode};
    pub use crate::bayes::predict::{predict_classes, predict_regression, Predict};
    pub use crate::distributions::{
        Bernoulli, Categorical, Distribution, Independent, MixtureOfNormals, Normal, SpikeAndSlab,
    };
    pub use crate::divergence::{
        kl_divergence, kl_divergence_with, kl_from_sample, kl_monte_carlo, Divergence,
    };
    pub use crate::error::{Error, Result};
    pub use crate::gradcheck::{gradcheck, gradcheck_params, GradCheck, GradCheckReport};
    pub use crate::layers::{
        Activation, BiasMode, Conv2dFlipout, Conv2dLocalReparameterization, Conv2dMap,
        Conv2dReparameterization, Dense, DenseFlipout, DenseLocalReparameterization,
        DenseReparameterization, Flatten, KlMethod, LinearMap, MaxPool2d, Module, Prior,
        Sequential, VariationalConfig,
    };
    pub use crate::ops::Padding;
    pub use crate::optim::{Adam, Optimizer, Sgd};
    pub use crate::params::{Constraint, Param, ParamStore};
    pub use crate::tape::{Gradients, Op, Tape, Var};
    pub use crate::tensor::{Element, Tensor};
    pub use rand::{
        rngs::{SmallRng, StdRng},
        Rng, RngExt, SeedableRng,
    };
}
