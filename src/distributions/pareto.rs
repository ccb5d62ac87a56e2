//! The Pareto distribution: a power-law tail above a threshold. The
//! logarithm of a Pareto draw, less the logarithm of its scale, is an
//! exponential draw with the concentration as its rate, which gives the
//! sampler and the closed form of the divergence. Every formula is
//! computed in `f64` with its partial derivatives.

use super::pointwise::{self, Lanes, Pointwise, each_lane};
use super::widened::rounded_once;
use super::{
    Distribution, batch_broadcast, check_divisor, check_two, check_values, same_tape, sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::Result;
use crate::kernels::random::Unit;
use crate::kernels::special::ln_ratio;
use crate::tensor::{Element, Tensor, broadcast_shape, unit_draws};
use rand::Rng;

/// The Pareto distribution with concentration (tail index) `α` and scale
/// `m`, TFP's `Pareto(concentration, scale)`.
///
/// # Density
/// `ln p(x) = ln α + α ln m - (α + 1) ln x` for `x >= m`, and `-inf` (with
/// gradient 0) below `m` and at `+inf`.
///
/// # Sampling
/// `x = m e^(E / α)` for a standard exponential `E`: `rsample` is
/// differentiable in both parameters.
///
/// # Moments
/// The mean `α m / (α - 1)` for `α > 1` and the variance
/// `m² α / ((α - 1)² (α - 2))` for `α > 2`, `+inf` (with gradient 0)
/// otherwise, as the tail makes them.
///
/// # Divergence
/// KL(Pareto(α1, m1) || Pareto(α2, m2)) `= ln(α1 / α2) + α2 / α1 - 1 +
/// α2 ln(m1 / m2)` for `m1 >= m2`, and `+inf` (gradient 0) for `m1 < m2`,
/// where `q` puts mass below `p`'s support.
///
/// # Parameters
/// - `α > 0` and `m > 0`, finite and not below the smallest normal number;
///   shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Pareto::new(tape.scalar(3.0), tape.scalar(2.0))?;
/// // 3 * 2^3 / 4^4
/// let lp = d.log_prob(tape.scalar(4.0))?.item()?;
/// assert!((lp - (24.0f64 / 256.0).ln()).abs() < 1e-12);
/// assert_eq!(d.log_prob(tape.scalar(1.0))?.item()?, f64::NEG_INFINITY);
/// assert!((d.mean()?.item()? - 3.0).abs() < 1e-12);
/// assert!((d.variance()?.item()? - 3.0).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Pareto<'t, F: Element> {
    concentration: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Pareto<'t, F> {
    /// From a concentration (tail index `α`) and a scale (the threshold `m`).
    ///
    /// # Errors
    /// Parameters that are not finite or are below the smallest normal
    /// number; shapes that do not broadcast.
    pub fn new(concentration: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        check_two(
            "Pareto::new",
            "Pareto",
            check_divisor,
            ("concentration", &concentration),
            ("scale", &scale),
        )?;
        Ok(Pareto {
            concentration,
            scale,
        })
    }

    /// The concentration (tail index `α`).
    pub fn concentration(&self) -> Var<'t, F> {
        self.concentration
    }

    /// The scale (the threshold `m`, the smallest value).
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }
}

/// The Pareto log-density of `[α, m, x]`: `ln α + α ln(m / x) - ln x`,
/// with `∂α = 1/α + ln(m / x)`, `∂m = α / m` and `∂x = -(α + 1) / x`;
/// `-inf` below `m` and at `+inf`.
#[derive(Clone, Copy)]
struct ParetoLogDensity;

impl Pointwise<3> for ParetoLogDensity {
    const NAME: &'static str = "pareto_log_density";
    const KEYED: usize = 2;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 3]) {}

    fn eval(v: &[Lanes; 3], _: &(), out: &mut Lanes, d: &mut [Lanes; 3]) {
        each_lane(v, out, d, f64::NEG_INFINITY, |[a, m, x]| {
            if !(x >= m && x < f64::INFINITY) {
                return None;
            }
            let t = ln_ratio(m, x);
            let value = a.ln() + a * t - x.ln();
            Some((value, [1.0 / a + t, a / m, -(a + 1.0) / x]))
        });
    }
}

/// The Pareto mean of `[α, m]`, `α m / (α - 1)`, `+inf` for `α <= 1`.
#[derive(Clone, Copy)]
struct ParetoMean;

impl Pointwise<2> for ParetoMean {
    const NAME: &'static str = "pareto_mean";
    const KEYED: usize = 2;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, f64::INFINITY, |[a, m]| {
            if a <= 1.0 {
                return None;
            }
            // α - 1 is exact near 1, where the mean is sensitive to it
            let (b, ratio) = (a - 1.0, a / (a - 1.0));
            Some((m * ratio, [-(m / b) / b, ratio]))
        });
    }
}

/// The Pareto variance of `[α, m]`, `(m / (α - 1))² α / (α - 2)`, `+inf`
/// for `α <= 2`, with `∂m = 2 v / m` and
/// `∂α = v (1/α - 2/(α - 1) - 1/(α - 2))`. Where the square is not a
/// normal number (it overflows, or underflows while `α / (α - 2)` is
/// large), the variance is taken from the logarithms.
#[derive(Clone, Copy)]
struct ParetoVariance;

impl Pointwise<2> for ParetoVariance {
    const NAME: &'static str = "pareto_variance";
    const KEYED: usize = 2;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, f64::INFINITY, |[a, m]| {
            if a <= 2.0 {
                return None;
            }
            let (b, c) = (a - 1.0, a - 2.0);
            let t = m / b;
            let square = t * t;
            let value = if square.is_normal() {
                square * (a / c)
            } else {
                (2.0 * (m.ln() - b.ln()) + a.ln() - c.ln()).exp()
            };
            let slope = 1.0 / a - 2.0 / b - 1.0 / c;
            Some((value, [value * slope, 2.0 * value / m]))
        });
    }
}

/// `ln(α1 / α2) + α2 / α1 - 1`, the divergence between exponentials of
/// rates `α1` and `α2`. Where the rates are close its two terms cancel,
/// and with `u = (α1 - α2) / α2` (`α1 - α2` exact there) it is taken
/// below `|u| = 1/64` from its series `Σ_{n >= 2} (-1)^n (n - 1) u^n / n`
/// (twelve terms; the next is below 10⁻²¹ of the sum).
fn exponential_divergence(a1: f64, a2: f64) -> f64 {
    let u = (a1 - a2) / a2;
    if u.abs() < 1.0 / 64.0 {
        let mut sum = 0.0;
        for n in (2..=13).rev() {
            let n = n as f64;
            sum = sum * -u + (n - 1.0) / n;
        }
        return sum * u * u;
    }
    ln_ratio(a1, a2) + (a2 / a1 - 1.0)
}

/// KL(Pareto || Pareto) of `[α1, m1, α2, m2]`: [`exponential_divergence`]
/// plus `α2 ln(m1 / m2)` for `m1 >= m2`, `+inf` otherwise, and its partial
/// derivatives `∂α1 = (α1 - α2) / α1²`, `∂m1 = α2 / m1`, `∂α2 = (α2 -
/// α1) / (α1 α2) + ln(m1 / m2)` and `∂m2 = -α2 / m2` (the differences of
/// the rates exact where they are close).
#[derive(Clone, Copy)]
struct ParetoDivergence;

impl Pointwise<4> for ParetoDivergence {
    const NAME: &'static str = "kl_pareto";
    const KEYED: usize = 4;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        each_lane(v, out, d, f64::INFINITY, |[a1, m1, a2, m2]| {
            if m1 < m2 {
                return None;
            }
            let t = ln_ratio(m1, m2);
            let value = exponential_divergence(a1, a2) + a2 * t;
            let partials = [
                ((a1 - a2) / a1) / a1,
                a2 / m1,
                ((a2 - a1) / a1) / a2 + t,
                -a2 / m2,
            ];
            Some((value, partials))
        });
    }
}

/// KL(Pareto || Pareto), one value per batch element ([`Pareto`]).
pub(crate) fn kl_pareto<'t, F: Element>(
    q: &Pareto<'t, F>,
    p: &Pareto<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        ParetoDivergence,
        "Pareto",
        (q.batch_shape(), p.batch_shape()),
        [q.concentration, q.scale, p.concentration, p.scale],
    )
}

impl<'t, F: Element> Distribution<'t, F> for Pareto<'t, F> {
    super::kl::builtin_kl!(Pareto => kl_pareto);

    fn name(&self) -> &'static str {
        "Pareto"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.scale.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Pareto::log_prob", &self.scale, &x)?;
        batch_broadcast(
            "Pareto",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        check_values("Pareto", "value", &x, "must not be NaN", |v| !v.is_nan())?;
        pointwise::apply(ParetoLogDensity, &[self.concentration, self.scale, x])
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        // a standard exponential draw E
        let e = unit_draws::<F>(Unit::Exponential, &shape, rng);
        let power = self.tape().constant(e).try_div(self.concentration)?.exp();
        self.scale.try_mul(power)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    /// `ln m - ln α + 1/α + 1`.
    fn entropy(&self) -> Result<Var<'t, F>> {
        rounded_once!(
            "pareto_entropy",
            [self.concentration, self.scale],
            |v: G| {
                let a = v[0];
                let h = v[1].ln().try_sub(a.ln())?;
                Ok(h.try_add(a.scalar_div(G::one()))? + G::one())
            }
        )
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        pointwise::apply(ParetoMean, &[self.concentration, self.scale])
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        pointwise::apply(ParetoVariance, &[self.concentration, self.scale])
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.concentration.shape(), &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}
