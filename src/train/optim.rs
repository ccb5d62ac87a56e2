//! Optimizers: [`Sgd`] (with momentum) and [`Adam`].
//!
//! A step is all-or-nothing: every non-frozen parameter must have a finite
//! gradient computed from its current value, otherwise the step returns an
//! error naming the parameter and nothing is modified. A gradient from a
//! tape that outlived an earlier step (a distribution built once and kept,
//! the Keras `Normal(self.mu[0])` trap) is [`Error::StaleGradient`]. The same holds for the optimizer's settings, checked
//! at every step because schedules change them between steps: a learning
//! rate that is negative or not finite (a decay schedule's `0/0`, say),
//! Adam betas outside `[0, 1)`, a negative `eps` or momentum.
//!
//! A tape that read a parameter shares its storage until the tape is
//! dropped. An update while that tape is alive writes the new values to a
//! new buffer (the tape's reads stay as they were); once the tape is gone,
//! the update writes in place, which moves less memory. For large layers,
//! compute the gradients in a block that owns the tape:
//!
//! ```
//! use bayesgrad::prelude::*;
//! let mut store = ParamStore::<f32>::new();
//! let w = store.add("w", Tensor::zeros(&[256, 256]));
//! let mut opt = Adam::new(1e-3);
//! let grads = {
//!     let tape = Tape::new();
//!     (tape.param(&store, w) - 1.0).square().sum().backward()?
//! }; // the tape is dropped here
//! opt.step(&mut store, &grads)?; // in place
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::Gradients;
use crate::error::{Error, Result};
use crate::kernels::parallel::par_blocks;
use crate::tensor::{Element, Tensor};

/// Something that updates a [`ParamStore`] from [`Gradients`].
pub trait Optimizer<F: Element> {
    /// Applies one update to every non-frozen parameter.
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()>;
}

/// Checks that every non-frozen parameter has a finite gradient of its shape,
/// and returns them in store order.
fn collect<'g, F: Element>(
    store: &ParamStore<F>,
    grads: &'g Gradients<F>,
) -> Result<Vec<(Param, &'g Tensor<F>)>> {
    let mut out = Vec::with_capacity(store.len());
    for p in store.params() {
        if store.is_frozen(p) {
            continue;
        }
        let name = || store.name(p).to_string();
        let g = grads
            .param_by_key(p.key())
            .ok_or_else(|| Error::MissingGradient { name: name() })?;
        let current = store.version(p)?;
        match grads.param_version(p) {
            Some(read) if read == current => {}
            read => {
                return Err(Error::StaleGradient {
                    name: name(),
                    read: read.unwrap_or(0),
                    current,
                })
            }
        }
        if g.shape() != store.value(p).shape() {
            return Err(Error::ParamShapeMismatch {
                name: name(),
                expected: store.value(p).shape().to_vec(),
                found: g.shape().to_vec(),
            });
        }
        if let Some((index, v)) = g.first_non_finite() {
            return Err(Error::NonFiniteGradient {
                name: name(),
                index,
                value: v.to_f64().unwrap_or(f64::NAN),
            });
        }
        out.push((p, g));
    }
    Ok(out)
}

/// Refuses a hyperparameter outside `[low, high)` (`high` may be infinite)
/// or non-finite, naming the optimizer and the setting, as PyTorch does.
fn check_setting<F: Element>(
    optimizer: &'static str,
    setting: &str,
    value: F,
    (low, high): (f64, f64),
) -> Result<()> {
    let v = value.to_f64().unwrap_or(f64::NAN);
    if v.is_finite() && v >= low && v < high {
        return Ok(());
    }
    let domain = if high.is_finite() {
        format!("in [{low}, {high})")
    } else {
        format!("finite and >= {low}")
    };
    Err(Error::invalid(
        optimizer,
        format!("{setting} must be {domain}, got {v}"),
    ))
}

/// Stochastic gradient descent with optional (heavy-ball) momentum, as in
/// PyTorch: `v = mu v + g; p -= lr v`.
#[derive(Debug, Clone)]
pub struct Sgd<F> {
    lr: F,
    momentum: F,
    velocity: Vec<Option<Tensor<F>>>,
}

impl<F: Element> Sgd<F> {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: F) -> Self {
        Sgd {
            lr,
            momentum: F::zero(),
            velocity: Vec::new(),
        }
    }

    /// SGD with momentum.
    pub fn with_momentum(lr: F, momentum: F) -> Self {
        Sgd {
            momentum,
            ..Self::new(lr)
        }
    }
}

impl<F: Element> Optimizer<F> for Sgd<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()> {
        check_setting("Sgd", "learning rate", self.lr, (0.0, f64::INFINITY))?;
        check_setting("Sgd", "momentum", self.momentum, (0.0, f64::INFINITY))?;
        let updates = collect(store, grads)?;
        self.velocity.resize_with(store.len(), || None);
        let (lr, mu) = (self.lr, self.momentum);
        for (p, g) in updates {
            let idx = p.index();
            let value = store.value_mut(p);
            if mu == F::zero() {
                value
                    .data_mut()
                    .iter_mut()
                    .zip(g.data())
                    .for_each(|(x, &g)| *x = *x - lr * g);
                continue;
            }
            let v = self.velocity[idx].get_or_insert_with(|| Tensor::zeros(g.shape()));
            for ((x, v), &g) in value.data_mut().iter_mut().zip(v.data_mut()).zip(g.data()) {
                *v = mu * *v + g;
                *x = *x - lr * *v;
            }
        }
        Ok(())
    }
}

/// Adam with bias correction, the update of PyTorch's `torch.optim.Adam`:
/// `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
/// `p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`.
#[derive(Debug, Clone)]
pub struct Adam<F> {
    /// Learning rate.
    pub lr: F,
    /// Decay of the first moment.
    pub beta1: F,
    /// Decay of the second moment.
    pub beta2: F,
    /// Added to the denominator.
    pub eps: F,
    state: AdamState<F>,
}

/// Adam's moments and step count (saved with checkpoints to resume exactly).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdamState<F> {
    /// Number of steps taken.
    pub step: u64,
    /// First and second moments, by parameter position in the store.
    pub moments: Vec<Option<(Tensor<F>, Tensor<F>)>>,
}

impl<F: Element> Adam<F> {
    /// Adam with learning rate `lr` and the usual defaults (0.9, 0.999, 1e-8).
    pub fn new(lr: F) -> Self {
        Adam {
            lr,
            beta1: F::lit(0.9),
            beta2: F::lit(0.999),
            eps: F::lit(1e-8),
            state: AdamState::default(),
        }
    }

    /// The optimizer state.
    pub fn state(&self) -> &AdamState<F> {
        &self.state
    }

    /// Mutable access to the state (for [`checkpoint::load`](crate::train::checkpoint::load)).
    pub fn state_mut(&mut self) -> &mut AdamState<F> {
        &mut self.state
    }

    /// Replaces the optimizer state (to resume from a checkpoint).
    pub fn set_state(&mut self, state: AdamState<F>) {
        self.state = state;
    }
}

/// One step of Adam's rule with this step's bias corrections.
#[derive(Clone, Copy)]
struct AdamRule<F> {
    b1: F,
    b2: F,
    eps: F,
    step_size: F,
    inv_sqrt_bc2: F,
}

impl<F: Element> AdamRule<F> {
    /// The new value of a parameter `x` with gradient `g`, updating its moments.
    #[inline(always)]
    fn update(self, x: F, m: &mut F, v: &mut F, g: F) -> F {
        *m = self.b1 * *m + (F::one() - self.b1) * g;
        *v = self.b2 * *v + (F::one() - self.b2) * g * g;
        x - self.step_size * *m / (v.sqrt() * self.inv_sqrt_bc2 + self.eps)
    }
}

impl<F: Element> Optimizer<F> for Adam<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Gradients<F>) -> Result<()> {
        check_setting("Adam", "learning rate (lr)", self.lr, (0.0, f64::INFINITY))?;
        check_setting("Adam", "beta1", self.beta1, (0.0, 1.0))?;
        check_setting("Adam", "beta2", self.beta2, (0.0, 1.0))?;
        check_setting("Adam", "eps", self.eps, (0.0, f64::INFINITY))?;
        let updates = collect(store, grads)?;
        self.state.moments.resize_with(store.len(), || None);
        self.state.step += 1;
        let t = self.state.step as i32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = F::one() - b1.powi(t);
        let bc2 = F::one() - b2.powi(t);
        let step_size = self.lr / bc1;
        let inv_sqrt_bc2 = F::one() / bc2.sqrt();
        let rule = AdamRule {
            b1,
            b2,
            eps,
            step_size,
            inv_sqrt_bc2,
        };
        for (p, g) in updates {
            let (m, v) = self.state.moments[p.index()]
                .get_or_insert_with(|| (Tensor::zeros(g.shape()), Tensor::zeros(g.shape())));
            let (value, g, n) = (store.value_mut(p), g.data(), g.len());
            if let Some(x) = value.unique_data_mut() {
                par_blocks(
                    (x, (m.data_mut(), v.data_mut())),
                    n,
                    n,
                    #[inline(always)]
                    |range, (x, (m, v))| {
                        let g = &g[range];
                        for i in 0..x.len() {
                            x[i] = rule.update(x[i], &mut m[i], &mut v[i], g[i]);
                        }
                    },
                );
                continue;
            }
            // A tape that read the parameter still shares its value: the
            // update goes into a new buffer, read from the old one, instead
            // of copying the old one first and updating the copy.
            let old = value.data();
            let mut new = Vec::with_capacity(n);
            par_blocks(
                (
                    &mut new.spare_capacity_mut()[..n],
                    (m.data_mut(), v.data_mut()),
                ),
                n,
                n,
                #[inline(always)]
                |range, (x, (m, v))| {
                    let (old, g) = (&old[range.clone()], &g[range]);
                    for i in 0..x.len() {
                        x[i].write(rule.update(old[i], &mut m[i], &mut v[i], g[i]));
                    }
                },
            );
            // SAFETY: `par_blocks` gave each of the n elements to one half,
            // whose loop wrote every element of it.
            unsafe { new.set_len(n) };
            *value = Tensor::from_vec(new, value.shape())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tape;

    #[test]
    fn adam_first_step_moves_by_lr() {
        // On step 1, m_hat = g and v_hat = g^2, so the update is lr * g/(|g|+eps) ~ lr * sign(g).
        let mut store = ParamStore::<f64>::new();
        let p = store.add("w", Tensor::vector(&[1.0, -2.0]));
        let tape = Tape::new();
        let w = tape.param(&store, p);
        let loss = (w * Tensor::vector(&[3.0, -0.5])).sum();
        let grads = loss.backward().unwrap();
        let mut adam = Adam::new(0.1);
        adam.step(&mut store, &grads).unwrap();
        let v = store.value(p).data();
        assert!(
            (v[0] - 0.9).abs() < 1e-7 && (v[1] - (-1.9)).abs() < 1e-7,
            "{v:?}"
        );
    }

    #[test]
    fn adam_gives_the_same_update_whether_or_not_a_tape_still_holds_the_parameter() {
        // A live tape shares the parameter's value, so Adam writes a new
        // buffer; without it, Adam updates in place. Both must agree exactly,
        // on one thread and on two (a large parameter).
        for n in [5, 3 * crate::kernels::parallel::PARALLEL_MIN + 3] {
            let init = Tensor::<f32>::from_fn(&[n], |i| (i % 17) as f32 * 0.1 - 0.8);
            let weights = Tensor::<f32>::from_fn(&[n], |i| (i % 7) as f32 - 3.0);
            let (mut kept, mut dropped) = (ParamStore::new(), ParamStore::new());
            let (pk, pd) = (kept.add("w", init.clone()), dropped.add("w", init));
            let (mut adam_k, mut adam_d) = (Adam::new(0.01), Adam::new(0.01));
            for step in 0..3 {
                let tape = Tape::new();
                let w = tape.param(&kept, pk);
                let grads = (w * w * weights.clone()).sum().backward().unwrap();
                adam_k.step(&mut kept, &grads).unwrap();
                // the tape still holds the old value, unchanged
                assert_ne!(w.value().data(), kept.value(pk).data());
                let grads = {
                    let tape = Tape::new();
                    let w = tape.param(&dropped, pd);
                    (w * w * weights.clone()).sum().backward().unwrap()
                };
                let before = dropped.value(pd).data().as_ptr();
                adam_d.step(&mut dropped, &grads).unwrap();
                // (at step 0 the two stores still share `init`)
                if step > 0 {
                    assert_eq!(before, dropped.value(pd).data().as_ptr(), "in place");
                }
            }
            assert_eq!(kept.value(pk), dropped.value(pd), "n = {n}");
            assert_eq!(adam_k.state().moments, adam_d.state().moments);
        }
    }

    #[test]
    fn sgd_momentum_accumulates() {
        // g = 1 each step: v1 = 1, v2 = 1.5; x = 0 - 0.1 - 0.15 = -0.25
        let mut store = ParamStore::<f64>::new();
        let p = store.add("w", Tensor::scalar(0.0));
        let mut sgd = Sgd::with_momentum(0.1, 0.5);
        for _ in 0..2 {
            let tape = Tape::new();
            let grads = tape.param(&store, p).sum().backward().unwrap();
            sgd.step(&mut store, &grads).unwrap();
        }
        assert!((store.value(p).data()[0] + 0.25).abs() < 1e-12);
    }
}
