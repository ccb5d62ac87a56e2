//! Training: optimizers and learning-rate schedules, minibatches,
//! checkpoints of parameters, optimizer and RNG state, an RNG that can be
//! checkpointed, and an opt-in allocator setting for long training loops.

mod alloc;
pub mod checkpoint;
mod data;
pub mod optim;
mod rng;
mod schedule;

pub use alloc::{CacheAligned, retain_freed_memory};
pub use checkpoint::Resumable;
pub use data::{Minibatches, shuffle};
pub use optim::{Adam, Optimizer, Sgd};
pub use rng::ResumableRng;
pub use schedule::Schedule;
