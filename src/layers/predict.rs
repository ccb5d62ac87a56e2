//! Monte Carlo prediction with a Bayesian network: many forward passes,
//! each with a fresh posterior sample, summarized.

use crate::autodiff::params::ParamStore;
use crate::autodiff::tape::Tape;
use crate::bayes::forward::{Forward, SampleMode};
use crate::error::{Error, Result};
use crate::layers::Module;
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// How predictions draw the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predict {
    /// Average over this many posterior samples.
    Samples(usize),
    /// One pass with every weight at its posterior mean.
    PosteriorMean,
}

/// Runs the model on `x` once per posterior sample; returns every output.
pub fn sample_outputs<F: Element>(
    model: &dyn Module<F>,
    store: &ParamStore<F>,
    x: &Tensor<F>,
    how: Predict,
    rng: &mut dyn Rng,
) -> Result<Vec<Tensor<F>>> {
    let (n, mode) = match how {
        Predict::Samples(0) => return Err(Error::invalid("predict", "needs at least one sample")),
        Predict::Samples(n) => (n, SampleMode::Sample),
        Predict::PosteriorMean => (1, SampleMode::PosteriorMean),
    };
    (0..n)
        .map(|_| {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, store, &mut *rng).with_mode(mode);
            Ok(model.forward(&mut cx, tape.constant(x.clone()))?.value())
        })
        .collect()
}

/// Predictive mean and (epistemic) variance of a regression output.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionPrediction<F> {
    /// Mean over samples of the output.
    pub mean: Tensor<F>,
    /// Variance over samples of the output (0 for the posterior-mean network).
    pub variance: Tensor<F>,
}

/// Mean and variance of the model's output over posterior samples.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::layers::predict::{predict_regression, Predict};
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let net = DenseFlipout::new(&mut store, "out", 2, 1, &mut rng)?;
/// let x = Tensor::from_vec(vec![0.0, 0.0, 5.0, 5.0], &[2, 2])?;
/// let p = predict_regression(&net, &store, &x, Predict::Samples(200), &mut rng)?;
/// // far from the origin, the weight uncertainty shows
/// assert!(p.variance.data()[1] > p.variance.data()[0]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub fn predict_regression<F: Element>(
    model: &dyn Module<F>,
    store: &ParamStore<F>,
    x: &Tensor<F>,
    how: Predict,
    rng: &mut dyn Rng,
) -> Result<RegressionPrediction<F>> {
    let outs = sample_outputs(model, store, x, how, rng)?;
    let n = F::lit(outs.len() as f64);
    let shape = outs[0].shape().to_vec();
    let mut mean = Tensor::zeros(&shape);
    for o in &outs {
        mean.add_assign(o);
    }
    let mean = mean.map(|s| s / n);
    let mut variance = Tensor::zeros(&shape);
    for o in &outs {
        let d = o.zip_map(&mean, "predict", |a, m| (a - m) * (a - m))?;
        variance.add_assign(&d);
    }
    Ok(RegressionPrediction {
        mean,
        variance: variance.map(|s| s / n),
    })
}

/// Class probabilities and the uncertainty decomposition of a classifier
/// that outputs logits `[batch, classes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPrediction<F> {
    /// Mean over samples of the softmax, `[batch, classes]`.
    pub probs: Tensor<F>,
    /// Entropy of the mean probabilities (total uncertainty), `[batch]`.
    pub predictive_entropy: Tensor<F>,
    /// Mean over samples of each sample's entropy (aleatoric), `[batch]`.
    pub expected_entropy: Tensor<F>,
    /// Their difference, the information gained about the weights by
    /// observing the label (epistemic), `[batch]`.
    pub mutual_information: Tensor<F>,
}

fn softmax_rows<F: Element>(logits: &Tensor<F>) -> Result<Tensor<F>> {
    let s = logits.shape();
    if s.len() != 2 || s[1] == 0 {
        return Err(Error::invalid(
            "predict_classes",
            format!("expects logits [batch, classes], got {s:?}"),
        ));
    }
    let m = logits.max_axis(1, true)?;
    let e = logits.zip_map(&m, "softmax", |x, m| (x - m).exp())?;
    let z = e.sum_axis(1, true)?;
    e.zip_map(&z, "softmax", |e, z| e / z)
}

/// `-Σ p ln p` by rows (`0 ln 0 = 0`); a NaN probability gives NaN.
fn entropy_rows<F: Element>(p: &Tensor<F>) -> Result<Tensor<F>> {
    p.map(|p| {
        if p > F::zero() {
            -p * p.ln()
        } else if p.is_nan() {
            p
        } else {
            F::zero()
        }
    })
    .sum_axis(1, false)
}

/// Monte Carlo class probabilities, predictive entropy, expected entropy and
/// mutual information.
pub fn predict_classes<F: Element>(
    model: &dyn Module<F>,
    store: &ParamStore<F>,
    x: &Tensor<F>,
    how: Predict,
    rng: &mut dyn Rng,
) -> Result<ClassPrediction<F>> {
    let outs = sample_outputs(model, store, x, how, rng)?;
    let n = F::lit(outs.len() as f64);
    let mut probs: Option<Tensor<F>> = None;
    let mut expected: Option<Tensor<F>> = None;
    for o in &outs {
        let p = softmax_rows(o)?;
        let h = entropy_rows(&p)?;
        match (&mut probs, &mut expected) {
            (Some(acc), Some(hacc)) => {
                acc.add_assign(&p);
                hacc.add_assign(&h);
            }
            _ => {
                probs = Some(p);
                expected = Some(h);
            }
        }
    }
    let probs = probs.expect("at least one sample").map(|v| v / n);
    let expected_entropy = expected.expect("at least one sample").map(|v| v / n);
    let predictive_entropy = entropy_rows(&probs)?;
    let mutual_information =
        predictive_entropy.zip_map(&expected_entropy, "mutual_information", |a, b| {
            // rounding can take the difference below 0; NaN stays NaN
            let d = a - b;
            if d < F::zero() { F::zero() } else { d }
        })?;
    Ok(ClassPrediction {
        probs,
        predictive_entropy,
        expected_entropy,
        mutual_information,
    })
}
