use super::{Distribution, check_finite, check_values, uniform};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;

/// A distribution over `k` classes `0..k`, parameterized by logits.
///
/// # Density
/// `P(y = c) = softmax(logits)_c`, computed as `log_softmax(logits)_c`, so
/// logits of magnitude 1e4 neither overflow nor underflow.
///
/// # Parameters
/// - `logits`: shape `batch + [k]`, `k >= 1`, finite.
///
/// Labels passed to `log_prob` are class indices stored as floats (or
/// given directly to [`Categorical::log_prob_labels`]).
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let logits = tape.var(Tensor::from_vec(vec![2.0, 0.0, -1.0, 0.5, 0.5, 0.5], &[2, 3])?);
/// let cat = Categorical::from_logits(logits)?;
/// let nll = -cat.log_prob_labels(&[0, 2])?.sum();
/// assert!(nll.backward()?.get(logits).is_some());
/// assert!(cat.log_prob_labels(&[0, 3]).is_err()); // class 3 does not exist
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Empty or non-finite logits; probabilities that are not positive or do
/// not sum to 1; labels that are not integers in `0..k`.
#[derive(Clone, Copy)]
pub struct Categorical<'t, F: Element> {
    logits: Var<'t, F>,
}

impl<'t, F: Element> Categorical<'t, F> {
    /// From unnormalized log-probabilities along the last axis.
    pub fn from_logits(logits: Var<'t, F>) -> Result<Self> {
        let shape = logits.shape();
        match shape.last() {
            None => {
                return Err(Error::invalid(
                    "Categorical",
                    "logits must have rank >= 1 (the class axis)",
                ));
            }
            Some(0) => {
                return Err(Error::invalid(
                    "Categorical",
                    format!("logits of shape {shape:?} have no classes"),
                ));
            }
            Some(_) => {}
        }
        check_finite("Categorical", "logits", &logits)?;
        Ok(Categorical { logits })
    }

    /// From probabilities along the last axis (each `> 0`, summing to 1).
    pub fn from_probs(probs: Var<'t, F>) -> Result<Self> {
        check_values("Categorical", "probs", &probs, "must be in (0, 1]", |p| {
            p > F::zero() && p <= F::one()
        })?;
        let sums = probs.sum_axis(probs.shape().len().saturating_sub(1), false)?;
        check_values("Categorical", "sum of probs", &sums, "must be 1", |s| {
            (s - F::one()).abs() <= F::lit(1e-6)
        })?;
        Self::from_logits(probs.ln())
    }

    /// The logits.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }

    /// Normalized log-probabilities, `log_softmax(logits)`.
    pub fn log_probs(&self) -> Result<Var<'t, F>> {
        self.logits.log_softmax(self.logits.shape().len() - 1)
    }

    /// Class probabilities.
    pub fn probs(&self) -> Result<Var<'t, F>> {
        Ok(self.log_probs()?.exp())
    }

    fn num_classes(&self) -> usize {
        *self.logits.shape().last().unwrap_or(&0)
    }

    /// Log-probability of integer labels; `labels.len()` must equal the
    /// number of batch elements (or the batch is a single distribution
    /// broadcast over all labels).
    pub fn log_prob_labels(&self, labels: &[usize]) -> Result<Var<'t, F>> {
        let batch = self.batch_shape();
        let shape = if batch.iter().product::<usize>() == labels.len() {
            batch
        } else {
            vec![labels.len()]
        };
        self.labels_at(labels, &shape)
    }

    fn labels_at(&self, labels: &[usize], shape: &[usize]) -> Result<Var<'t, F>> {
        let k = self.num_classes();
        if let Some(&bad) = labels.iter().find(|&&c| c >= k) {
            return Err(Error::InvalidParameter {
                distribution: "Categorical",
                parameter: "label",
                value: bad as f64,
                reason: "must be a class index below the number of classes",
            });
        }
        let batch = self.batch_shape();
        let target = broadcast_shape(&batch, shape).ok_or_else(|| Error::BatchShapeMismatch {
            distribution: "Categorical",
            lhs_param: "logits batch",
            lhs: batch.clone(),
            rhs_param: "labels",
            rhs: shape.to_vec(),
        })?;
        let mut full = target.clone();
        full.push(k);
        let lp = self.log_probs()?;
        let lp = if lp.shape() == full {
            lp
        } else {
            lp.broadcast_to(&full)?
        };
        let labels = if target.as_slice() == shape {
            labels.to_vec()
        } else {
            let t = Tensor::from_vec(labels.iter().map(|&c| c as f64).collect(), shape)?
                .broadcast_to(&target)?;
            t.data().iter().map(|&c| c as usize).collect()
        };
        lp.gather(&labels)
    }
}

impl<'t, F: Element> Distribution<'t, F> for Categorical<'t, F> {
    fn name(&self) -> &'static str {
        "Categorical"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let k = self.num_classes();
        check_values(
            "Categorical",
            "label",
            &x,
            "must be a class index below the number of classes",
            |c| c >= F::zero() && c.fract() == F::zero() && c < F::lit(k as f64),
        )?;
        let labels: Vec<usize> = x
            .value()
            .data()
            .iter()
            .map(|c| c.to_usize().unwrap_or(0))
            .collect();
        self.labels_at(&labels, &x.shape())
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Categorical",
            what: "reparameterized sampling (rsample)",
        })
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    /// Inverse-CDF draws from `exp(logits - max)`, computed once for all
    /// `n` draws and without tape nodes.
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        if n == Some(0) {
            return Err(Error::invalid(
                "Distribution::sample_n",
                "Categorical needs at least one draw (n = Some(0))",
            ));
        }
        let logits = self.logits.value();
        let k = self.num_classes();
        // unnormalized cumulative weights per row, shifted by the row's max
        let mut cumulative = Vec::with_capacity(logits.len());
        for row in logits.data().chunks(k) {
            let m = row.iter().copied().fold(F::neg_infinity(), F::max);
            let mut acc = F::zero();
            cumulative.extend(row.iter().map(|&l| {
                acc = acc + (l - m).exp();
                acc
            }));
        }
        let rows = logits.len() / k;
        let mut out = Vec::with_capacity(rows * n.unwrap_or(1));
        for _ in 0..n.unwrap_or(1) {
            for row in cumulative.chunks(k) {
                let u = uniform::<F>(rng) * row[k - 1];
                let class = row.iter().position(|&c| u < c).unwrap_or(k - 1);
                out.push(F::lit(class as f64));
            }
        }
        Tensor::from_vec(out, &super::sample_shape(n, &self.batch_shape()))
    }
    // H = -sum_c p_c ln p_c
    fn entropy(&self) -> Result<Var<'t, F>> {
        let lp = self.log_probs()?;
        (-(lp.exp() * lp)).sum_axis(lp.shape().len() - 1, false)
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Categorical",
            what: "mean (class labels are not ordered)",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Categorical",
            what: "variance (class labels are not ordered)",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = self.logits.shape();
        s[..s.len() - 1].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(q || p) = sum_c q_c (ln q_c - ln p_c).
pub(crate) fn kl_categorical<'t, F: Element>(
    q: &Categorical<'t, F>,
    p: &Categorical<'t, F>,
) -> Result<Var<'t, F>> {
    if q.num_classes() != p.num_classes() {
        return Err(Error::ShapeMismatch {
            op: "kl_divergence",
            lhs: q.logits.shape(),
            rhs: p.logits.shape(),
        });
    }
    let (lq, lp) = (q.log_probs()?, p.log_probs()?);
    (lq.exp() * lq.try_sub(lp)?).sum_axis(lq.shape().len().max(lp.shape().len()) - 1, false)
}
