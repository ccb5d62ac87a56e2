//! Training: optimizers, checkpoints of parameters, optimizer and RNG
//! state, an RNG that can be checkpointed, and an opt-in allocator setting
//! for long training loops.

pub mod alloc;
pub mod checkpoint;
pub mod optim;
mod rng;

pub use alloc::retain_freed_memory;
pub use checkpoint::Resumable;
pub use optim::{Adam, Optimizer, Sgd};
pub use rng::ResumableRng;
