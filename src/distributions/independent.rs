use super::Distribution;
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// Reinterprets the trailing `ndims` batch axes of a distribution as event
/// axes: `log_prob` and `entropy` are summed over them.
///
/// # Density
/// `ln p(x) = sum over the last ndims batch axes of base.log_prob(x)`.
///
/// # Parameters
/// - `base`: any distribution; `ndims <= base.batch_shape().len()`.
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let base = Normal::standard(&tape, &[2, 3]);
/// let d = Independent::new(Box::new(base), 1)?;
/// assert_eq!(d.batch_shape(), vec![2]);
/// assert_eq!(d.event_shape(), vec![3]);
/// assert_eq!(d.log_prob(tape.constant(Tensor::zeros(&[2, 3])))?.shape(), vec![2]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// `ndims` larger than the base's batch rank.
pub struct Independent<'t, F: Element> {
    base: Box<dyn Distribution<'t, F> + 't>,
    ndims: usize,
}

impl<'t, F: Element> Independent<'t, F> {
    /// Wraps `base`, moving its last `ndims` batch axes into the event.
    pub fn new(base: Box<dyn Distribution<'t, F> + 't>, ndims: usize) -> Result<Self> {
        let batch = base.batch_shape();
        if ndims > batch.len() {
            return Err(Error::invalid(
                "Independent",
                format!(
                    "cannot reinterpret {ndims} axes of a {} with batch shape {batch:?}",
                    base.name()
                ),
            ));
        }
        Ok(Independent { base, ndims })
    }

    /// The wrapped distribution.
    pub fn base(&self) -> &(dyn Distribution<'t, F> + 't) {
        self.base.as_ref()
    }

    /// Number of reinterpreted axes.
    pub fn ndims(&self) -> usize {
        self.ndims
    }

    /// Sums a per-base-batch quantity over the reinterpreted trailing axes.
    pub(crate) fn reduce(&self, mut v: Var<'t, F>) -> Result<Var<'t, F>> {
        for _ in 0..self.ndims {
            let last = v.shape().len() - 1;
            v = v.sum_axis(last, false)?;
        }
        Ok(v)
    }
}

impl<'t, F: Element> Distribution<'t, F> for Independent<'t, F> {
    super::kl::builtin_kl!(Independent => super::kl::kl_independent);

    fn name(&self) -> &'static str {
        "Independent"
    }
    fn events_on_the_simplex(&self) -> bool {
        self.base().events_on_the_simplex()
    }
    fn tape(&self) -> &'t Tape<F> {
        self.base.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.reduce(self.base.log_prob(x)?)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        self.base.rsample_n(n, rng)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.base.sample(rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::check_draw_count(self.name(), n)?;
        self.base.sample_n(n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        self.reduce(self.base.entropy()?)
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        self.base.mean()
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        self.base.variance()
    }
    fn batch_shape(&self) -> Vec<usize> {
        let b = self.base.batch_shape();
        b[..b.len() - self.ndims].to_vec()
    }
    fn describe(&self) -> String {
        format!(
            "Independent({}, ndims={})",
            self.base.describe(),
            self.ndims
        )
    }
    fn event_shape(&self) -> Vec<usize> {
        let b = self.base.batch_shape();
        let mut e = b[b.len() - self.ndims..].to_vec();
        e.extend(self.base.event_shape());
        e
    }
}
