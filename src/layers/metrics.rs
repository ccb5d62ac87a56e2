//! Uncertainty metrics: calibration, proper scores and separation for
//! classifiers; interval coverage and the PIT histogram for regression.
//!
//! Every function takes plain numbers (class probabilities with their
//! labels, or predictive samples with their targets), so it scores any
//! model, Bayesian or not.
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::layers::metrics::{brier_score, expected_calibration_error};
//! let probs = Tensor::from_rows(&[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])?;
//! let labels = [0, 1, 1];
//! let ece = expected_calibration_error(&probs, &labels, 10)?;
//! let brier = brier_score(&probs, &labels)?;
//! assert!(ece > 0.0 && brier > 0.0);
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};

/// The rows of `probs` (`[n, k]`) as f64, checked: `n` equal to the number
/// of labels, entries in [0, 1], rows summing to 1, labels below `k`.
fn checked_rows<F: Element>(
    op: &'static str,
    probs: &Tensor<F>,
    labels: &[usize],
) -> Result<(usize, Vec<f64>)> {
    let shape = probs.shape();
    if shape.len() != 2 || shape[0] != labels.len() || shape[0] == 0 || shape[1] == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "needs probabilities of shape [n, k] with n = {} labels (n, k >= 1), got {shape:?}",
                labels.len()
            ),
        ));
    }
    let k = shape[1];
    let p: Vec<f64> = probs
        .data()
        .iter()
        .map(|v| v.to_f64().unwrap_or(f64::NAN))
        .collect();
    let tol = (F::epsilon().to_f64().unwrap_or(1e-7)).sqrt() * k as f64;
    for (i, row) in p.chunks(k).enumerate() {
        if row.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::invalid(
                op,
                format!("row {i} has a probability outside [0, 1]: {row:?}"),
            ));
        }
        let sum: f64 = row.iter().sum();
        if (sum - 1.0).abs() > tol {
            return Err(Error::invalid(
                op,
                format!("row {i}'s probabilities sum to {sum}, not 1"),
            ));
        }
    }
    if let Some((i, &c)) = labels.iter().enumerate().find(|&(_, &c)| c >= k) {
        return Err(Error::invalid(
            op,
            format!("label {c} at row {i} is not below the {k} classes"),
        ));
    }
    Ok((k, p))
}

/// Expected calibration error with `bins` equal-width confidence bins:
/// `Σ_b (n_b / n) |accuracy_b - confidence_b|`, where the confidence of a
/// row is its largest probability and its prediction that class (the first
/// of ties).
///
/// # Errors
/// `bins == 0`; the shape and probability checks of [`brier_score`].
pub fn expected_calibration_error<F: Element>(
    probs: &Tensor<F>,
    labels: &[usize],
    bins: usize,
) -> Result<f64> {
    const OP: &str = "expected_calibration_error";
    if bins == 0 {
        return Err(Error::invalid(OP, "needs at least one bin"));
    }
    let (k, p) = checked_rows(OP, probs, labels)?;
    let (mut count, mut correct, mut confidence) =
        (vec![0.0; bins], vec![0.0; bins], vec![0.0; bins]);
    for (row, &y) in p.chunks(k).zip(labels) {
        let (mut best, mut conf) = (0, row[0]);
        for (c, &v) in row.iter().enumerate() {
            if v > conf {
                best = c;
                conf = v;
            }
        }
        // bin b holds confidences in (b / bins, (b + 1) / bins]; 0 goes to the first
        let b = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[b] += 1.0;
        confidence[b] += conf;
        if best == y {
            correct[b] += 1.0;
        }
    }
    let n = labels.len() as f64;
    Ok((0..bins)
        .filter(|&b| count[b] > 0.0)
        .map(|b| (count[b] / n) * (correct[b] / count[b] - confidence[b] / count[b]).abs())
        .sum())
}

/// The Brier score `mean_i Σ_c (p_ic - 1{c = y_i})²` (lower is better).
///
/// # Errors
/// Probabilities not of shape `[n, k]` for `n` labels, outside [0, 1] or
/// with rows not summing to 1 (within `sqrt(ε) · k`); a label not below `k`.
pub fn brier_score<F: Element>(probs: &Tensor<F>, labels: &[usize]) -> Result<f64> {
    let (k, p) = checked_rows("brier_score", probs, labels)?;
    let total: f64 = p
        .chunks(k)
        .zip(labels)
        .map(|(row, &y)| {
            row.iter()
                .enumerate()
                .map(|(c, &v)| (v - if c == y { 1.0 } else { 0.0 }).powi(2))
                .sum::<f64>()
        })
        .sum();
    Ok(total / labels.len() as f64)
}

/// The mean negative log-likelihood `-mean_i ln p_{i, y_i}` (infinite if a
/// label has probability 0).
///
/// # Errors
/// As [`brier_score`].
pub fn negative_log_likelihood<F: Element>(probs: &Tensor<F>, labels: &[usize]) -> Result<f64> {
    let (k, p) = checked_rows("negative_log_likelihood", probs, labels)?;
    let total: f64 = p.chunks(k).zip(labels).map(|(row, &y)| -row[y].ln()).sum();
    Ok(total / labels.len() as f64)
}

/// The area under the ROC curve of a score that should be higher for the
/// `positive` set than for the `negative` one (e.g. predictive entropy on
/// out-of-distribution against in-distribution inputs): the probability
/// that a random positive outscores a random negative, ties counting 1/2
/// (the Mann–Whitney statistic, by one sort).
///
/// # Errors
/// An empty set; a NaN score.
pub fn auroc(negative: &[f64], positive: &[f64]) -> Result<f64> {
    if negative.is_empty() || positive.is_empty() {
        return Err(Error::invalid(
            "auroc",
            "needs at least one score in each set",
        ));
    }
    if negative.iter().chain(positive).any(|v| v.is_nan()) {
        return Err(Error::invalid("auroc", "a score is NaN"));
    }
    // (score, is positive), sorted; ranks averaged over ties
    let mut all: Vec<(f64, bool)> = negative
        .iter()
        .map(|&v| (v, false))
        .chain(positive.iter().map(|&v| (v, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // ranks i + 1 ..= j + 1 share their mean
        let mean_rank = (i + j + 2) as f64 / 2.0;
        rank_sum += mean_rank * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (positive.len() as f64, negative.len() as f64);
    Ok((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// Checks predictive samples (`S` tensors of `n` values each) against `n` targets.
fn checked_samples<F: Element>(
    op: &'static str,
    samples: &[Tensor<F>],
    targets: &[f64],
) -> Result<()> {
    if samples.is_empty() {
        return Err(Error::invalid(op, "needs at least one predictive sample"));
    }
    if let Some((s, t)) = samples
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() != targets.len())
    {
        return Err(Error::invalid(
            op,
            format!(
                "sample {s} has {} values for {} targets",
                t.len(),
                targets.len()
            ),
        ));
    }
    if targets.is_empty() {
        return Err(Error::invalid(op, "needs at least one target"));
    }
    // a NaN is inside no interval and below no target: it would be counted
    // as a miss or a draw above, silently
    if let Some(i) = targets.iter().position(|v| v.is_nan()) {
        return Err(Error::invalid(op, format!("target {i} is NaN")));
    }
    for (s, t) in samples.iter().enumerate() {
        if let Some(i) = t.data().iter().position(|v| v.is_nan()) {
            return Err(Error::invalid(
                op,
                format!("sample {s} is NaN at element {i}"),
            ));
        }
    }
    Ok(())
}

/// The fraction of targets inside the central `level` interval of their
/// predictive samples: between the empirical `(1 - level) / 2` and
/// `(1 + level) / 2` quantiles (linear interpolation between order
/// statistics). Calibrated 90 % intervals cover about 90 %.
///
/// # Errors
/// `level` outside (0, 1); no samples; samples whose length differs from
/// the targets'; a NaN target or sample value.
pub fn interval_coverage<F: Element>(
    samples: &[Tensor<F>],
    targets: &[f64],
    level: f64,
) -> Result<f64> {
    const OP: &str = "interval_coverage";
    if !(level > 0.0 && level < 1.0) {
        return Err(Error::invalid(
            OP,
            format!("level must be in (0, 1), got {level}"),
        ));
    }
    checked_samples(OP, samples, targets)?;
    let quantile = |sorted: &[f64], q: f64| {
        let pos = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    let mut inside = 0usize;
    let mut column = Vec::with_capacity(samples.len());
    for (i, &y) in targets.iter().enumerate() {
        column.clear();
        column.extend(
            samples
                .iter()
                .map(|t| t.data()[i].to_f64().unwrap_or(f64::NAN)),
        );
        column.sort_by(f64::total_cmp);
        let (lo, hi) = (
            quantile(&column, (1.0 - level) / 2.0),
            quantile(&column, (1.0 + level) / 2.0),
        );
        if y >= lo && y <= hi {
            inside += 1;
        }
    }
    Ok(inside as f64 / targets.len() as f64)
}

/// The probability integral transform histogram: for each target the
/// fraction of its predictive samples at or below it, binned into `bins`
/// equal-width bins of [0, 1] and returned as fractions of the targets. A
/// calibrated predictive gives a flat histogram; a U shape means it is too
/// narrow, a hump too wide.
///
/// # Errors
/// `bins == 0`; as [`interval_coverage`].
pub fn pit_histogram<F: Element>(
    samples: &[Tensor<F>],
    targets: &[f64],
    bins: usize,
) -> Result<Vec<f64>> {
    const OP: &str = "pit_histogram";
    if bins == 0 {
        return Err(Error::invalid(OP, "needs at least one bin"));
    }
    checked_samples(OP, samples, targets)?;
    let mut hist = vec![0.0; bins];
    let s = samples.len() as f64;
    for (i, &y) in targets.iter().enumerate() {
        let below = samples
            .iter()
            .filter(|t| t.data()[i].to_f64().unwrap_or(f64::NAN) <= y)
            .count() as f64;
        let u = below / s;
        let b = ((u * bins as f64) as usize).min(bins - 1);
        hist[b] += 1.0;
    }
    let n = targets.len() as f64;
    Ok(hist.into_iter().map(|c| c / n).collect())
}
