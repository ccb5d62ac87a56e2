//! Reverse-mode autodiff: the [`Tape`] and its [`Var`] handles, the
//! parameters the tape reads ([`ParamStore`]), the differentiable ops (one
//! family per file under `ops/`), the finite-difference gradient check and
//! the per-op timer ([`profile::OpTimer`]).
//!
//! Nothing Bayesian lives here: divergence terms and the sample mode travel
//! in the forward context ([`Forward`](crate::Forward)).

pub mod gradcheck;
pub(crate) mod ops;
pub mod params;
pub mod profile;
pub mod statcheck;
pub mod tape;

pub use gradcheck::{GradCheck, GradCheckReport, gradcheck, gradcheck_params};
pub use ops::Padding;
pub use ops::{sigmoid, softplus};
pub use params::{Constraint, Param, ParamStore};
pub use statcheck::{StatGradCheck, StatGradReport, stat_gradcheck, stat_gradient_report};
pub use tape::{Gradients, Op, Tape, Var};
