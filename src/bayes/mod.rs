//! The Bayesian state of a forward pass, above the autodiff core: the
//! forward context that carries a pass's divergence terms and sample mode,
//! and the ELBO that weighs them. (Prediction runs a [`Module`](crate::Module),
//! so it lives with the layers: [`crate::layers::predict`].)

pub mod elbo;
pub mod forward;
pub mod iwae;
pub mod score;
