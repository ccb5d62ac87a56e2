//! The differentiable ops, one file per family. Each op's forward and
//! backward live together in one [`Op`](crate::Op) implementation.

pub(crate) mod binary;
pub(crate) mod conv;
pub(crate) mod linalg;
pub(crate) mod meanfield;
pub(crate) mod reduce;
pub(crate) mod shape;
pub(crate) mod softmax;
pub(crate) mod unary;

pub use conv::Padding;
pub use unary::{sigmoid, softplus};
