//! The Bayesian layer of the crate, above the autodiff core: the forward
//! context that carries a pass's divergence terms and sample mode, the
//! ELBO that weighs them, and Monte Carlo prediction.

pub mod elbo;
pub mod forward;
pub mod predict;
