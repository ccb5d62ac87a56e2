//! Distribution heads: a network's output turned into a distribution, with
//! the turning written as a closure (TFP's `DistributionLambda`).

use crate::autodiff::tape::Var;
use crate::distributions::Distribution;
use crate::error::Result;
use crate::tensor::Element;

/// A boxed distribution on a tape.
pub type BoxedDistribution<'t, F> = Box<dyn Distribution<'t, F> + 't>;

/// The function inside a [`DistributionHead`].
pub type HeadFn<F> = dyn for<'t> Fn(Var<'t, F>) -> Result<BoxedDistribution<'t, F>> + Send + Sync;

/// Turns a network's output into a distribution, for every tape.
///
/// A closure `|out: Var| -> Result<Normal>` stored in a variable does not
/// compile: Rust gives its argument and its result one fixed lifetime,
/// where a head must work for the lifetime of every tape it will see.
/// [`DistributionHead::new`] states that requirement where the closure is
/// written, so the closure is accepted as it is; the distribution comes
/// back boxed ([`downcast_ref`](crate::Distribution) recovers the concrete
/// type).
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::layers::DistributionHead;
///
/// // column 0 is the mean, column 1 the (softplus) scale
/// let head = DistributionHead::new(|out: Var<'_, f64>| {
///     let loc = out.slice(1, 0, 1)?;
///     let scale = out.slice(1, 1, 2)?.softplus() + 1e-3;
///     Ok(Box::new(Normal::new(loc, scale)?))
/// });
///
/// let tape = Tape::new();
/// let out = tape.var(Tensor::from_rows(&[[0.5, 0.0], [1.0, 2.0]])?);
/// let y = tape.constant(Tensor::from_rows(&[[0.4], [1.3]])?);
/// let nll = -head.apply(out)?.log_prob(y)?.sum();
/// assert!(nll.backward()?.get(out).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct DistributionHead<F: Element> {
    f: Box<HeadFn<F>>,
}

impl<F: Element> DistributionHead<F> {
    /// A head from a closure (or a function) of the network's output.
    pub fn new(
        f: impl for<'t> Fn(Var<'t, F>) -> Result<BoxedDistribution<'t, F>> + Send + Sync + 'static,
    ) -> Self {
        DistributionHead { f: Box::new(f) }
    }

    /// The distribution for the output `out`.
    ///
    /// # Errors
    /// Whatever the closure returns (a distribution's parameter check, say).
    pub fn apply<'t>(&self, out: Var<'t, F>) -> Result<BoxedDistribution<'t, F>> {
        (self.f)(out)
    }
}

impl<F: Element> std::fmt::Debug for DistributionHead<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DistributionHead")
    }
}
