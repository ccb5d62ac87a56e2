//! Statistical checks of stochastic gradients: is an estimator unbiased?
//!
//! [`gradcheck`](super::gradcheck::gradcheck) checks a deterministic
//! derivative against finite differences. A stochastic estimator (a
//! reparameterized draw, Flipout, a score-function surrogate) is right
//! when its **expected** value is the gradient of the expected objective.
//! [`stat_gradcheck`] draws `N` independent estimates, and for each
//! component reports the mean, its standard error, the z-score
//! `(mean - exact) / standard error` and the variance; it fails when any
//! `|z|` exceeds a stated bound. [`stat_gradient_report`] reports without
//! failing, for estimators that are biased on purpose (a relaxation
//! measured against the discrete objective), so the bias is shown rather
//! than hidden.
//!
//! The exact gradient comes from the caller: by enumeration over a finite
//! support or by 1-D quadrature
//! ([`expectation_enumerated`](crate::distributions::expectation_enumerated),
//! [`expectation_quadrature`](crate::distributions::expectation_quadrature)),
//! or from a closed form.
//!
//! ```
//! use bayesgrad::prelude::*;
//! use bayesgrad::autodiff::statcheck::{stat_gradcheck, StatGradCheck};
//! // d/dmu E[x^2] for x ~ N(mu, 1) is 2 mu
//! let mu = 0.7;
//! let report = stat_gradcheck(
//!     |rng| {
//!         let tape = Tape::<f64>::new();
//!         let m = tape.var(Tensor::scalar(mu));
//!         let x = Normal::new(m, tape.scalar(1.0))?.rsample(rng)?;
//!         Ok(vec![x.square().backward()?.get(m).unwrap().item()?])
//!     },
//!     &[2.0 * mu],
//!     &StatGradCheck::default(),
//!     &mut StdRng::seed_from_u64(0),
//! )?;
//! assert!(report.max_abs_z() < 4.0);
//! # Ok::<(), bayesgrad::Error>(())
//! ```

use crate::error::{Error, Number, Result};
use rand::Rng;
use std::fmt;

/// Settings of a statistical gradient check.
#[derive(Debug, Clone, Copy)]
pub struct StatGradCheck {
    /// The number of independent estimates drawn.
    pub samples: usize,
    /// The largest `|z|` accepted for any component. With `d` components
    /// and a correct estimator, some `|z|` exceeds 4 with probability
    /// about `d · 6.3e-5`.
    pub max_z: f64,
}

impl Default for StatGradCheck {
    /// 2000 estimates, `|z| <= 4`.
    fn default() -> Self {
        StatGradCheck {
            samples: 2000,
            max_z: 4.0,
        }
    }
}

/// The statistics of one gradient component over the estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComponentStats {
    /// The exact expected gradient.
    pub exact: f64,
    /// The mean of the estimates.
    pub mean: f64,
    /// The sample variance of the estimates (one estimate's variance).
    pub variance: f64,
    /// The standard error of the mean, `sqrt(variance / samples)`.
    pub std_err: f64,
    /// `(mean - exact) / std_err`; for an estimator without variance, 0
    /// when the mean equals the exact value to 1e-12 relative, else infinite.
    pub z: f64,
}

impl ComponentStats {
    /// `mean - exact`: the estimated bias.
    pub fn bias(&self) -> f64 {
        self.mean - self.exact
    }
}

/// The outcome of a statistical gradient check: one entry per component.
#[derive(Debug, Clone, PartialEq)]
pub struct StatGradReport {
    /// Per-component statistics, in the order the estimates list them.
    pub components: Vec<ComponentStats>,
    /// How many estimates were drawn.
    pub samples: usize,
}

impl StatGradReport {
    /// The largest `|z|` over the components.
    pub fn max_abs_z(&self) -> f64 {
        self.components
            .iter()
            .map(|c| c.z.abs())
            .fold(0.0, f64::max)
    }

    /// The mean variance over the components.
    pub fn mean_variance(&self) -> f64 {
        let n = self.components.len().max(1) as f64;
        self.components.iter().map(|c| c.variance).sum::<f64>() / n
    }
}

impl fmt::Display for StatGradReport {
    /// A table: component, exact, mean, bias, standard error, z, variance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5} {:>12} {:>12} {:>11} {:>10} {:>7} {:>11}   ({} estimates)",
            "comp", "exact", "mean", "bias", "std err", "z", "variance", self.samples
        )?;
        for (i, c) in self.components.iter().enumerate() {
            writeln!(
                f,
                "{i:>5} {:>12.5e} {:>12.5e} {:>11.3e} {:>10.3e} {:>7.2} {:>11.3e}",
                c.exact,
                c.mean,
                c.bias(),
                c.std_err,
                c.z,
                c.variance
            )?;
        }
        Ok(())
    }
}

/// Draws `samples` estimates from `estimate` and compares their mean with
/// `exact`, component by component, without failing on a mismatch.
///
/// Means and variances are accumulated by Welford's update (no
/// `E[x²] - E[x]²` cancellation).
///
/// # Errors
/// Fewer than 2 samples; an estimate whose length differs from `exact`'s
/// or that holds a non-finite value; any error `estimate` returns.
pub fn stat_gradient_report(
    mut estimate: impl FnMut(&mut dyn Rng) -> Result<Vec<f64>>,
    exact: &[f64],
    samples: usize,
    rng: &mut dyn Rng,
) -> Result<StatGradReport> {
    const OP: &str = "stat_gradcheck";
    if samples < 2 {
        return Err(Error::invalid(
            OP,
            format!("needs at least 2 estimates, got {samples}"),
        ));
    }
    let d = exact.len();
    let (mut mean, mut m2) = (vec![0.0; d], vec![0.0; d]);
    for n in 1..=samples {
        let g = estimate(rng)?;
        if g.len() != d {
            return Err(Error::invalid(
                OP,
                format!(
                    "estimate {n} has {} components, the exact gradient {d}",
                    g.len()
                ),
            ));
        }
        if let Some(i) = g.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                OP,
                format!("estimate {n} is {} at component {i}", g[i]),
            ));
        }
        for ((m, s), &x) in mean.iter_mut().zip(m2.iter_mut()).zip(&g) {
            let delta = x - *m;
            *m += delta / n as f64;
            *s += delta * (x - *m);
        }
    }
    let components = exact
        .iter()
        .zip(mean.iter().zip(&m2))
        .map(|(&exact, (&mean, &m2))| {
            let variance = m2 / (samples - 1) as f64;
            let std_err = (variance / samples as f64).sqrt();
            let diff = mean - exact;
            let z = if std_err > 0.0 {
                diff / std_err
            } else if diff.abs() <= 1e-12 * exact.abs().max(1e-300) {
                0.0
            } else {
                f64::INFINITY.copysign(diff)
            };
            ComponentStats {
                exact,
                mean,
                variance,
                std_err,
                z,
            }
        })
        .collect();
    Ok(StatGradReport {
        components,
        samples,
    })
}

/// Like [`stat_gradient_report`], failing when any component's `|z|`
/// exceeds `cfg.max_z`.
///
/// # Errors
/// [`Error::StatGradCheck`] naming the worst components; the errors of
/// [`stat_gradient_report`]; [`Error::InvalidArgument`] for a `max_z` that
/// is not positive (NaN included, which would pass every estimator).
pub fn stat_gradcheck(
    estimate: impl FnMut(&mut dyn Rng) -> Result<Vec<f64>>,
    exact: &[f64],
    cfg: &StatGradCheck,
    rng: &mut dyn Rng,
) -> Result<StatGradReport> {
    // `|z| > NaN` is false: a NaN bound would pass every estimator
    if cfg.max_z.is_nan() || cfg.max_z <= 0.0 {
        return Err(Error::invalid(
            "stat_gradcheck",
            format!("max_z must be > 0, got {}", Number(cfg.max_z)),
        ));
    }
    let report = stat_gradient_report(estimate, exact, cfg.samples, rng)?;
    let failing: Vec<(usize, ComponentStats)> = report
        .components
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| c.z.is_nan() || c.z.abs() > cfg.max_z)
        .collect();
    if failing.is_empty() {
        return Ok(report);
    }
    let listed = failing
        .iter()
        .take(8)
        .map(|(i, c)| {
            format!(
                "component {i}: mean {:.6e} vs exact {:.6e} (std err {:.3e}, z {:.2})",
                c.mean, c.exact, c.std_err, c.z
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::StatGradCheck {
        failing: failing.len(),
        components: report.components.len(),
        max_z: cfg.max_z,
        samples: report.samples,
        listed,
    })
}
