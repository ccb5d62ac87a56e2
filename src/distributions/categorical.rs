use super::{Distribution, check_logits, check_values, uniform};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::par_blocks;
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
        check_logits("Categorical", &logits)?;
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

    /// Log-probability of integer labels, one per distribution of the
    /// batch (in the batch's row-major order, result of the batch shape),
    /// or any number for a single distribution (result `[labels.len()]`).
    ///
    /// # Errors
    /// A label outside `0..k`; for a batch of several distributions, a
    /// number of labels other than the batch's size: a slice of another
    /// length is not broadcast (one label for a batch of 128 would give that
    /// label's log-probability in every row).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let batch = Categorical::from_logits(tape.var(Tensor::zeros(&[4, 3])))?;
    /// assert_eq!(batch.log_prob_labels(&[0, 2, 1, 1])?.shape(), [4]);
    /// assert!(batch.log_prob_labels(&[0]).is_err()); // not one label for all four
    /// let single = Categorical::from_logits(tape.var(Tensor::zeros(&[3])))?;
    /// assert_eq!(single.log_prob_labels(&[0, 2, 1, 1, 0])?.shape(), [5]);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn log_prob_labels(&self, labels: &[usize]) -> Result<Var<'t, F>> {
        let batch = self.batch_shape();
        let size = batch.iter().product::<usize>();
        let shape = if size == labels.len() {
            batch
        } else if size == 1 {
            vec![labels.len()]
        } else {
            return Err(Error::invalid(
                "Categorical::log_prob_labels",
                format!(
                    "{} label(s) for a batch of {size} distributions (batch shape {batch:?}): \
                     give one label per distribution",
                    labels.len()
                ),
            ));
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
    super::kl::builtin_kl!(Categorical => kl_categorical);

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
        super::check_draw_count("Categorical", n)?;
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

/// `KL(q || p) = Σ_c q_c (ln q_c - ln p_c)` along the last axis of logits
/// `a` (of `q`) and `b` (of `p`), one shape, as one op over the rows, each
/// in `f64`. With `e_c = a_c - b_c` and `m = Σ_c q_c e_c`, the KL is
/// `-ln(1 + u)`, `u = Σ_c w_c expm1(e_c - m) / Σ_c w_c` (`w = e^(b - max b)`,
/// the weights of `p` unnormalized), where `|u| <= 1/2`: the terms of `u`
/// are of the size of the logits' differences, not of the logits, so the
/// KL between near-equal distributions keeps its digits (as the difference
/// of the log-softmaxes it was 7e-8 of itself off in `f64` and came out
/// negative in `f32`). Past that the distributions are far apart, `1 + u`
/// nears 0, and the direct sum, which has nothing to cancel, is taken. It
/// is at least 0. Gradients: `q_c (e_c - m)` for `a_c`, `p_c - q_c` for
/// `b_c`.
struct CategoricalKl {
    classes: usize,
}

/// One row's `q`, `p`, `e - m` and the logits in `f64`, reused row after row.
struct Row {
    a: Vec<f64>,
    b: Vec<f64>,
    q: Vec<f64>,
    p: Vec<f64>,
    centred: Vec<f64>,
}

impl Row {
    fn new(k: usize) -> Self {
        let v = || vec![0.0; k];
        Row {
            a: v(),
            b: v(),
            q: v(),
            p: v(),
            centred: v(),
        }
    }

    /// Fills the row from logits `a` and `b` and returns its KL.
    fn kl<F: Element>(&mut self, a: &[F], b: &[F]) -> f64 {
        let f = |v: &F| v.to_f64().unwrap_or(f64::NAN);
        for (o, v) in self.a.iter_mut().zip(a) {
            *o = f(v);
        }
        for (o, v) in self.b.iter_mut().zip(b) {
            *o = f(v);
        }
        // the weights from the logits less their largest (into `out`),
        // their sum, and the log of the normalizer
        let weights = |x: &[f64], out: &mut [f64]| {
            let top = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - top).exp();
            }
            let total: f64 = out.iter().sum();
            (total, top + total.ln())
        };
        let (tq, lnq) = weights(&self.a, &mut self.q);
        let (tp, lnp) = weights(&self.b, &mut self.p);
        // the mean of e = a - b under q, and p's weights against e - m
        let mut m = 0.0;
        for (q, (a, b)) in self.q.iter_mut().zip(self.a.iter().zip(&self.b)) {
            *q /= tq;
            m += *q * (a - b);
        }
        let mut u = 0.0;
        for ((c, p), (a, b)) in self
            .centred
            .iter_mut()
            .zip(&mut self.p)
            .zip(self.a.iter().zip(&self.b))
        {
            *c = (a - b) - m;
            u += *p * c.exp_m1();
            *p /= tp;
        }
        let u = u / tp;
        let kl = if u.abs() <= 0.5 {
            -u.ln_1p()
        } else {
            // far apart (1 + u near 0 would lose the KL): Σ q (ln q - ln p)
            let terms = self.q.iter().zip(self.a.iter().zip(&self.b));
            terms
                .map(|(&q, (a, b))| match q {
                    0.0 => 0.0,
                    _ => q * ((a - lnq) - (b - lnp)),
                })
                .sum()
        };
        if kl < 0.0 { 0.0 } else { kl }
    }
}

impl<F: Element> crate::autodiff::tape::Op<F> for CategoricalKl {
    fn name(&self) -> &str {
        "categorical_kl"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let k = self.classes;
        let (a, b) = (inputs[0].data(), inputs[1].data());
        let mut kl = vec![F::zero(); a.len() / k];
        par_blocks(&mut kl[..], a.len() / k, a.len() * 8, |rows, out| {
            let mut row = Row::new(k);
            for (r, o) in rows.zip(out) {
                *o = F::lit(row.kl(&a[r * k..(r + 1) * k], &b[r * k..(r + 1) * k]));
            }
        });
        let shape = inputs[0].shape();
        Tensor::from_vec(kl, &shape[..shape.len() - 1])
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let k = self.classes;
        let (a, b, g) = (inputs[0].data(), inputs[1].data(), g.data());
        let (mut da, mut db) = (vec![F::zero(); a.len()], vec![F::zero(); a.len()]);
        par_blocks(
            (&mut da[..], &mut db[..]),
            g.len(),
            a.len() * 8,
            |rows, (da, db)| {
                let mut row = Row::new(k);
                let outputs = da.chunks_mut(k).zip(db.chunks_mut(k));
                for (r, (da, db)) in rows.zip(outputs) {
                    row.kl(&a[r * k..(r + 1) * k], &b[r * k..(r + 1) * k]);
                    let g = g[r].to_f64().unwrap_or(f64::NAN);
                    for c in 0..k {
                        da[c] = F::lit(g * row.q[c] * row.centred[c]);
                        db[c] = F::lit(g * (row.p[c] - row.q[c]));
                    }
                }
            },
        );
        let shape = inputs[0].shape();
        Ok(vec![
            Some(Tensor::from_vec(da, shape)?),
            Some(Tensor::from_vec(db, shape)?),
        ])
    }
}

/// KL(q || p) between categoricals (see [`CategoricalKl`]).
pub(crate) fn kl_categorical<'t, F: Element>(
    q: &Categorical<'t, F>,
    p: &Categorical<'t, F>,
) -> Result<Var<'t, F>> {
    let k = q.num_classes();
    if k != p.num_classes() {
        return Err(Error::ShapeMismatch {
            op: "kl_divergence",
            lhs: q.logits.shape(),
            rhs: p.logits.shape(),
        });
    }
    let (a, b) = (q.logits, p.logits);
    let shape = broadcast_shape(&a.shape(), &b.shape()).ok_or_else(|| Error::ShapeMismatch {
        op: "kl_divergence",
        lhs: a.shape(),
        rhs: b.shape(),
    })?;
    let (a, b) = (a.broadcast_to(&shape)?, b.broadcast_to(&shape)?);
    a.tape.apply(CategoricalKl { classes: k }, &[a, b])
}
