//! Training: optimizers, checkpoints of parameters and optimizer state, and
//! an opt-in allocator setting for long training loops.

pub mod alloc;
pub mod checkpoint;
pub mod optim;

pub use alloc::retain_freed_memory;
pub use optim::{Adam, Optimizer, Sgd};
