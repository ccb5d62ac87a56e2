//! Guides: how to extend the library and run it, one page each, with
//! examples that the test suite runs. The same pages are in `docs/guide/`.
//!
//! - [`custom_distribution`]: a distribution of your own, fitted, with an
//!   analytic KL rule.
//! - [`custom_layer`]: a Bayesian layer of your own ([`Module`](crate::Module))
//!   that registers its divergence and supports every sample mode.
//! - [`custom_op`]: an op with its backward ([`Op`](crate::Op)), checked by
//!   [`gradcheck`](crate::gradcheck()) in `f64` and `f32`.
//! - [`checkpoints`]: saving and resuming training bit for bit.
//! - [`elbo`]: the KL weightings, and the importance-weighted bound.
//! - [`discrete_latents`]: training through discrete draws (the score
//!   function with baselines, VIMCO, relaxed draws) and checking the
//!   estimators.

#[doc = include_str!("../docs/guide/custom-distribution.md")]
pub mod custom_distribution {}

#[doc = include_str!("../docs/guide/custom-layer.md")]
pub mod custom_layer {}

#[doc = include_str!("../docs/guide/custom-op.md")]
pub mod custom_op {}

#[doc = include_str!("../docs/guide/checkpoints.md")]
pub mod checkpoints {}

#[doc = include_str!("../docs/guide/elbo.md")]
pub mod elbo {}

#[doc = include_str!("../docs/guide/discrete-latents.md")]
pub mod discrete_latents {}
