//! The Kumaraswamy distribution on the unit interval: shaped like a Beta,
//! with a cumulative distribution function in closed form, so that its
//! draws are a differentiable function of a uniform one (the stick-breaking
//! weights of a variational autoencoder, where a Beta would need implicit
//! gradients). Every formula is computed in `f64` with its partial
//! derivatives.

use super::pointwise::{self, Lanes, Pointwise, each_lane};
use super::{
    Distribution, batch_broadcast, check_divisor, check_two, on_support, open_uniform, same_tape,
    sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::Result;
use crate::kernels::special::{
    digamma_diff, lgamma, lgamma_diff, tetragamma_pentagamma, trigamma_diff,
};
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;

/// The Euler–Mascheroni constant `γ`: `ψ(b + 1) + γ` is the harmonic
/// number `H_b`.
const EULER: f64 = 0.577_215_664_901_532_9;

/// The Kumaraswamy distribution with concentrations `a` (`concentration1`)
/// and `b` (`concentration0`), TFP's `Kumaraswamy(concentration1,
/// concentration0)`: `P(X <= x) = 1 - (1 - x^a)^b` on `[0, 1]`.
///
/// # Density
/// `ln p(x) = ln a + ln b + (a - 1) ln x + (b - 1) ln(1 - x^a)` for `0 < x <
/// 1`, with `1 - x^a` as `-expm1(a ln x)` (its digits kept where `x^a` is
/// near 1); `-inf` (gradient 0) outside.
///
/// # Sampling
/// `x = (1 - e^(-E / b))^(1/a)` for a standard exponential `E` (the inverse
/// of the distribution function at `1 - e^-E`): `rsample` is differentiable
/// in both concentrations, without the implicit gradients a Beta needs.
///
/// # Moments and entropy
/// `E[x^n] = b B(1 + n/a, b)`; the variance is `E[x]² expm1(D)` with `D =
/// ln E[x²] - 2 ln E[x]`, of the size of `1/a²` for a large `a`, taken from
/// differences of `ln Γ` that keep their relative accuracy there and, from
/// `a = 2·10⁵` on, from its series (where `E[x²] - E[x]²` would lose about
/// `10⁻¹⁶ a²` of its digits: all of them from `a = 10⁸`); against 50-digit
/// values from `a = 10⁻²` to `10¹⁵`, 4e-10 at worst. The entropy
/// is `(1 - 1/b) + (1 - 1/a) H_b - ln(a b)` with the harmonic number `H_b =
/// ψ(b + 1) + γ`. There is no closed-form KL; `Divergence::Auto` (or
/// `MonteCarlo`) estimates it from reparameterized draws.
///
/// # Parameters
/// - `a > 0` and `b > 0`, finite and not below the smallest normal number;
///   shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// // a = 1: the Beta(1, b), density b (1 - x)^(b - 1)
/// let d = Kumaraswamy::new(tape.scalar(1.0), tape.scalar(3.0))?;
/// let lp = d.log_prob(tape.scalar(0.5))?.item()?;
/// assert!((lp - 0.75f64.ln()).abs() < 1e-12);
/// assert!((d.mean()?.item()? - 0.25).abs() < 1e-12);
/// assert!((d.variance()?.item()? - 0.0375).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Kumaraswamy<'t, F: Element> {
    concentration1: Var<'t, F>,
    concentration0: Var<'t, F>,
}

impl<'t, F: Element> Kumaraswamy<'t, F> {
    /// From the concentrations `a` (`concentration1`, the power of `x`) and
    /// `b` (`concentration0`, the power of `1 - x^a`).
    ///
    /// # Errors
    /// Concentrations that are not finite or are below the smallest normal
    /// number; shapes that do not broadcast.
    pub fn new(concentration1: Var<'t, F>, concentration0: Var<'t, F>) -> Result<Self> {
        check_two(
            "Kumaraswamy::new",
            "Kumaraswamy",
            check_divisor,
            ("concentration1", &concentration1),
            ("concentration0", &concentration0),
        )?;
        Ok(Kumaraswamy {
            concentration1,
            concentration0,
        })
    }

    /// The concentration `a`.
    pub fn concentration1(&self) -> Var<'t, F> {
        self.concentration1
    }

    /// The concentration `b`.
    pub fn concentration0(&self) -> Var<'t, F> {
        self.concentration0
    }
}

/// `(b - 1) y` that is 0 at `b = 1` whatever `y` (an infinite `y` at the
/// ends of the floats would make it NaN).
#[inline(always)]
fn times_b_less_one(b: f64, y: f64) -> f64 {
    if b == 1.0 { 0.0 } else { (b - 1.0) * y }
}

/// The Kumaraswamy log-density of `[a, b, x]` for `x` in `(0, 1)`, with
/// `t = a ln x`, `w = 1 - x^a = -expm1(t)` and `r = x^a / (1 - x^a) =
/// 1 / expm1(-t)`: `ln a + ln b + (a - 1) ln x + (b - 1) ln w`, `∂a = 1/a +
/// ln x (1 - (b - 1) r)`, `∂b = 1/b + ln w`, `∂x = ((a - 1) - (b - 1) a r)
/// / x`.
#[derive(Clone, Copy)]
struct KumaraswamyLogDensity;

impl Pointwise<3> for KumaraswamyLogDensity {
    const NAME: &'static str = "kumaraswamy_log_density";
    const KEYED: usize = 2;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 3]) {}

    fn eval(v: &[Lanes; 3], _: &(), out: &mut Lanes, d: &mut [Lanes; 3]) {
        each_lane(v, out, d, f64::NEG_INFINITY, |[a, b, x]| {
            let lx = x.ln();
            let t = a * lx;
            let ln_w = (-t.exp_m1()).ln();
            let br = times_b_less_one(b, 1.0 / (-t).exp_m1());
            let value = a.ln() + b.ln() + (a - 1.0) * lx + times_b_less_one(b, ln_w);
            let partials = [
                1.0 / a + lx * (1.0 - br),
                1.0 / b + ln_w,
                ((a - 1.0) - a * br) / x,
            ];
            Some((value, partials))
        });
    }
}

/// A Kumaraswamy draw from `[a, b, e]`, `e` a standard exponential draw:
/// with `s = e / b` and `w = 1 - e^-s = -expm1(-s)`, `x = e^(ln w / a)`,
/// `∂a = -x ln w / a²`, `∂b = -x s / (a b expm1(s))` and `∂e = x / (a b
/// expm1(s))`.
#[derive(Clone, Copy)]
struct KumaraswamyDraw;

impl Pointwise<3> for KumaraswamyDraw {
    const NAME: &'static str = "kumaraswamy_draw";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 3]) {}

    fn eval(v: &[Lanes; 3], _: &(), out: &mut Lanes, d: &mut [Lanes; 3]) {
        each_lane(v, out, d, 0.0, |[a, b, e]| {
            let s = e / b;
            let ln_w = (-(-s).exp_m1()).ln();
            let x = (ln_w / a).exp();
            if x == 0.0 {
                // a draw below the smallest float: its slopes, smaller
                // still, are 0 (where `a²` or `a b` would underflow too
                // and divide 0 by 0)
                return Some((0.0, [0.0; 3]));
            }
            // x / (a b expm1(s)), 0 where expm1(s) overflows
            let slope = x / a / b / s.exp_m1();
            Some((x, [-((x * ln_w) / a) / a, -(s * slope), slope]))
        });
    }
}

/// `G(t) = ln Γ(1 + t) - ln Γ(1 + b + t) + ln Γ(1 + b)`, the logarithm of
/// `E[x^n] = b B(1 + n/a, b)` at `t = n/a`, with its derivatives in `t`,
/// `ψ(1 + t) - ψ(1 + b + t)`, and in `b`, `ψ(1 + b) - ψ(1 + b + t)`. For a
/// small `t`, `G` is of the size of `t`: its two differences of `ln Γ` are
/// taken as such ([`lgamma_diff`]), so that it keeps its relative
/// accuracy; for a `t` beyond 1 and `b`, `ln Γ(1 + b)` less the difference
/// over `b`. The differences of ψ do not cancel ([`digamma_diff`]).
fn ln_moment(t: f64, b: f64) -> [f64; 3] {
    let value = if t <= 1.0 || t <= b {
        lgamma_diff(1.0, t) - lgamma_diff(1.0 + b, t)
    } else {
        lgamma(1.0 + b) - lgamma_diff(1.0 + t, b)
    };
    [value, digamma_diff(1.0 + t, b), digamma_diff(1.0 + b, t)]
}

/// The Kumaraswamy mean of `[a, b]`, `b B(1 + 1/a, b)`.
#[derive(Clone, Copy)]
struct KumaraswamyMean;

impl Pointwise<2> for KumaraswamyMean {
    const NAME: &'static str = "kumaraswamy_mean";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, 0.0, |[a, b]| {
            let h = 1.0 / a;
            let [g, g_t, g_b] = ln_moment(h, b);
            let m = g.exp();
            Some((m, [-(m * g_t * h) / a, m * g_b]))
        });
    }
}

/// The Kumaraswamy variance of `[a, b]`, `E[x]² expm1(D)` with `D = ln
/// E[x²] - 2 ln E[x] = G(2h) - 2 G(h)` and `h = 1/a` (see [`ln_moment`]):
/// where the variance is small beside the squared mean, `D` is of the size
/// of `h²` and `G` of `h`, and `G` keeps its relative accuracy there, where
/// `E[x²] - E[x]²` loses about `10⁻¹⁶ a²` of its digits (all of them from
/// `a = 10⁸`); for `h` below [`VARIANCE_SERIES_BELOW`], `D` comes from its
/// series. The partials: `∂v = 2 v ∂ln E[x] + E[x²] ∂D`.
#[derive(Clone, Copy)]
struct KumaraswamyVariance;

/// Below this `h = 1/a` the variance's `D = Σ_{k >= 2} c_k (2^k - 2)
/// h^k / k!` (with `c_k = ψ⁽ᵏ⁻¹⁾(1) - ψ⁽ᵏ⁻¹⁾(1 + b)`) is taken from its
/// first two terms, `c2 h² + c3 h³`, off by about `h²` relative, where
/// `G(2h) - 2 G(h)` is off by about `10⁻¹⁶ / h` (times up to 30): the two
/// meet near here, where the 50-digit reference finds the variance 4e-10
/// off at `a = 1.5·10⁵` (the worst of its cases) and 8e-11 at `2.5·10⁵`.
const VARIANCE_SERIES_BELOW: f64 = 5e-6;

/// `ψ''(1) = -2 ζ(3)`.
const SECOND_AT_ONE: f64 = -2.404_113_806_319_188_6;

impl Pointwise<2> for KumaraswamyVariance {
    const NAME: &'static str = "kumaraswamy_variance";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, 0.0, |[a, b]| {
            let h = 1.0 / a;
            let [g1, g1_t, g1_b] = ln_moment(h, b);
            let [g2, g2_t, g2_b] = ln_moment(2.0 * h, b);
            // D and its derivatives (in a through h: dh/da = -h/a)
            let (dv, dv_a, dv_b) = if h < VARIANCE_SERIES_BELOW {
                // c2 h² + c3 h³ with c_k = ψ⁽ᵏ⁻¹⁾(1) - ψ⁽ᵏ⁻¹⁾(1 + b)
                let (second, third) = tetragamma_pentagamma(1.0 + b);
                let (c2, c3) = (trigamma_diff(1.0, b), SECOND_AT_ONE - second);
                let h2 = h * h;
                (
                    h2 * (c2 + c3 * h),
                    -(h2 * (2.0 * c2 + 3.0 * c3 * h)) / a,
                    -(h2 * (second + third * h)),
                )
            } else {
                (
                    g2 - 2.0 * g1,
                    -(2.0 * h / a) * (g2_t - g1_t),
                    g2_b - 2.0 * g1_b,
                )
            };
            // E[x]² expm1(D) and E[x²] = E[x]² e^D through their logarithms:
            // E[x]² may underflow where expm1(D) overflows
            let ln_em = if dv > 1.0 {
                dv + (-(-dv).exp()).ln_1p()
            } else {
                dv.exp_m1().ln()
            };
            let value = (2.0 * g1 + ln_em).exp();
            let second = (2.0 * g1 + dv).exp();
            let partials = [
                2.0 * value * (-(g1_t * h) / a) + second * dv_a,
                2.0 * value * g1_b + second * dv_b,
            ];
            Some((value, partials))
        });
    }
}

impl<'t, F: Element> Distribution<'t, F> for Kumaraswamy<'t, F> {
    fn name(&self) -> &'static str {
        "Kumaraswamy"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.concentration1.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Kumaraswamy::log_prob", &self.concentration1, &x)?;
        batch_broadcast(
            "Kumaraswamy",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        let (a, b) = (self.concentration1, self.concentration0);
        on_support(
            "Kumaraswamy",
            x,
            |_, v| v > F::zero() && v < F::one(),
            F::lit(0.5),
            |x| pointwise::apply(KumaraswamyLogDensity, &[a, b, x]),
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        // standard exponential draws
        let e: Tensor<F> = Tensor::from_fn(&shape, |_| F::lit(-open_uniform(rng).ln()));
        let e = self.tape().constant(e);
        pointwise::apply(
            KumaraswamyDraw,
            &[self.concentration1, self.concentration0, e],
        )
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    /// `(1 - 1/b) + (1 - 1/a) (ψ(b + 1) + γ) - ln a - ln b`.
    fn entropy(&self) -> Result<Var<'t, F>> {
        let (a, b) = (self.concentration1, self.concentration0);
        let harmonic = (b + F::one()).digamma() + F::lit(EULER);
        let front = -b.scalar_div(F::one()) + F::one();
        let weighted = (-a.scalar_div(F::one()) + F::one()).try_mul(harmonic)?;
        front.try_add(weighted)?.try_sub(a.ln())?.try_sub(b.ln())
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        pointwise::apply(KumaraswamyMean, &[self.concentration1, self.concentration0])
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        pointwise::apply(
            KumaraswamyVariance,
            &[self.concentration1, self.concentration0],
        )
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.concentration1.shape(), &self.concentration0.shape())
            .unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}
