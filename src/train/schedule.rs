//! Learning-rate schedules: the learning rate as a function of the step.

use crate::error::{Error, Number, Result};

/// A learning-rate schedule; [`Schedule::lr`] gives the rate for a step.
///
/// ```
/// use bayesgrad::train::Schedule;
/// let decay = Schedule::Exponential { start: 3e-3, end: 3e-4, steps: 1000 };
/// assert_eq!(decay.lr(0)?, 3e-3);
/// assert!((decay.lr(1000)? - 3e-4).abs() < 1e-18);
/// let warm = Schedule::WarmUp { steps: 100, then: Box::new(Schedule::Constant(1e-3)) };
/// assert!((warm.lr(49)? - 5e-4).abs() < 1e-18);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The same rate at every step.
    Constant(f64),
    /// `start * (end / start)^(step / steps)`: from `start` at step 0 to
    /// `end` at `steps`, continuing beyond.
    Exponential {
        /// The rate at step 0.
        start: f64,
        /// The rate at step `steps`.
        end: f64,
        /// The steps to reach `end`.
        steps: usize,
    },
    /// `end + (start - end) (1 + cos(pi step / steps)) / 2`, then `end`
    /// (Loshchilov and Hutter's cosine annealing, without restarts).
    Cosine {
        /// The rate at step 0.
        start: f64,
        /// The rate from step `steps` on.
        end: f64,
        /// The steps of the decay.
        steps: usize,
    },
    /// Rises linearly from `then`'s first rate / `steps` to it over
    /// `steps` steps, then follows `then` (whose step 0 comes after them).
    WarmUp {
        /// The steps of the warm-up.
        steps: usize,
        /// The schedule after the warm-up.
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// The learning rate at `step`.
    ///
    /// # Errors
    /// A rate that is negative or not finite, an exponential decay from or
    /// to 0 (its ratio is undefined), or a decay over 0 steps.
    pub fn lr(&self, step: usize) -> Result<f64> {
        let check = |what: &str, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(x)
            } else {
                Err(Error::invalid(
                    "Schedule",
                    format!("{what} must be finite and >= 0, got {}", Number(x)),
                ))
            }
        };
        let over = |steps: usize| {
            if steps == 0 {
                Err(Error::invalid("Schedule", "a decay needs at least 1 step"))
            } else {
                Ok(steps as f64)
            }
        };
        match self {
            Schedule::Constant(lr) => check("the rate", *lr),
            Schedule::Exponential { start, end, steps } => {
                let (s, e, n) = (check("start", *start)?, check("end", *end)?, over(*steps)?);
                if s == 0.0 || e == 0.0 {
                    return Err(Error::invalid(
                        "Schedule",
                        "an exponential decay needs start and end > 0",
                    ));
                }
                check("the rate", s * (e / s).powf(step as f64 / n))
            }
            Schedule::Cosine { start, end, steps } => {
                let (s, e, n) = (check("start", *start)?, check("end", *end)?, over(*steps)?);
                let t = (step as f64 / n).min(1.0);
                check(
                    "the rate",
                    e + (s - e) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                )
            }
            Schedule::WarmUp { steps, then } => {
                if step < *steps {
                    Ok(then.lr(0)? * (step + 1) as f64 / *steps as f64)
                } else {
                    then.lr(step - steps)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_by_hand_and_bad_settings() {
        // halfway: end + (start - end) / 2
        let c = Schedule::Cosine {
            start: 1.0,
            end: 0.2,
            steps: 10,
        };
        assert!((c.lr(5).unwrap() - 0.6).abs() < 1e-15);
        assert_eq!(c.lr(10).unwrap(), 0.2);
        assert_eq!(c.lr(50).unwrap(), 0.2);
        let zero = Schedule::Exponential {
            start: 0.0,
            end: 0.0,
            steps: 10,
        };
        assert!(zero.lr(3).is_err(), "0 * (0/0)^t is refused");
        assert!(Schedule::Constant(f64::NAN).lr(0).is_err());
        let none = Schedule::Cosine {
            start: 1.0,
            end: 0.1,
            steps: 0,
        };
        assert!(none.lr(0).is_err());
    }
}
