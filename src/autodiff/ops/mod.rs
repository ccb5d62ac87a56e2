//! The differentiable ops, one family per file. Each op's forward and
//! backward live together in one [`Op`](crate::Op) implementation; the
//! methods that apply them are on [`Var`](crate::Var).

pub(crate) mod binary;
pub(crate) mod conv;
pub(crate) mod conv_flipout;
pub(crate) mod linalg;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod shape;
pub(crate) mod softmax;
pub(crate) mod unary;

pub use conv::Padding;
pub use unary::{sigmoid, softplus};
