//! Gumbel and Weibull: the extreme-value families (the largest of many
//! draws, and the time to the first of many failures). The logarithm of a
//! Weibull draw is a negated Gumbel draw, so their divergences share one
//! closed form ([`gumbel_kl_form`]), each computed in `f64` with its
//! partial derivatives.

use super::normal::{Standardized, loc_scale_log_prob};
use super::pointwise::{self, LANES, Lanes, Pointwise, each_lane};
use super::widened::rounded_once;
use super::{
    Distribution, batch_broadcast, check_divisor, check_finite, check_two, on_support, same_tape,
    sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::Result;
use crate::kernels::random::Unit;
use crate::kernels::special::{self, EULER, exp_m1_lanes, lgamma, ln_lanes, mask, select};
use crate::tensor::{Element, Tensor, broadcast_shape, unit_draws};
use rand::Rng;
use std::f64::consts::PI;

/// The standard Gumbel: `-(z + e^-z)`, slope `1 - e^-z`. Where `e^-z`
/// overflows the log-density is `-inf` (also at `z = -inf`, where the sum
/// would be `inf - inf`).
pub(crate) struct StandardGumbel;

impl Standardized for StandardGumbel {
    const NAME: &'static str = "gumbel_log_prob";
    const LN_C: f64 = 0.0;
    #[inline(always)]
    fn log_density<F: Element>(z: F) -> F {
        let e = (-z).exp();
        if e == F::infinity() {
            F::neg_infinity()
        } else {
            -(z + e)
        }
    }
    #[inline(always)]
    fn slope<F: Element>(z: F) -> F {
        -(-z).exp_m1()
    }
}

/// The Gumbel distribution (type I extreme value): the law of the largest
/// of many draws, and the noise of the Gumbel-max trick.
///
/// # Density
/// `ln p(x) = -ln scale - (z + e^-z)`, `z = (x - loc) / scale`.
///
/// # Sampling
/// `x = loc - scale · ln(-ln u)`: `rsample` is differentiable in both
/// parameters.
///
/// # Moments
/// Mean `loc + γ scale` (`γ` Euler's constant), variance `π² scale² / 6`,
/// entropy `ln scale + γ + 1`.
///
/// # Parameters
/// - `loc`: finite; `scale`: finite, at least the smallest normal number;
///   shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Gumbel::new(tape.scalar(1.0), tape.scalar(2.0))?;
/// // at the mode: -ln 2 - 1
/// assert!((d.log_prob(tape.scalar(1.0))?.item()? + 2f64.ln() + 1.0).abs() < 1e-12);
/// assert!((d.mean()?.item()? - (1.0 + 2.0 * 0.5772156649015329)).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Gumbel<'t, F: Element> {
    loc: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Gumbel<'t, F> {
    /// From a location (the mode) and a scale.
    ///
    /// # Errors
    /// A non-finite location; a scale that is not finite or is below the
    /// smallest normal number; shapes that do not broadcast.
    pub fn new(loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        same_tape("Gumbel::new", &loc, &scale)?;
        check_finite("Gumbel", "loc", &loc)?;
        check_divisor("Gumbel", "scale", &scale)?;
        batch_broadcast("Gumbel", ("loc", loc.shape()), ("scale", scale.shape()))?;
        Ok(Gumbel { loc, scale })
    }

    /// The location (the mode).
    pub fn loc(&self) -> Var<'t, F> {
        self.loc
    }

    /// The scale.
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }
}

impl<'t, F: Element> Distribution<'t, F> for Gumbel<'t, F> {
    super::kl::builtin_kl!(Gumbel => kl_gumbel);

    fn name(&self) -> &'static str {
        "Gumbel"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.loc.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Gumbel::log_prob", &self.loc, &x)?;
        check_finite("Gumbel", "value", &x)?;
        batch_broadcast(
            "Gumbel",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        loc_scale_log_prob::<StandardGumbel, F>(x, self.loc, self.scale)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let z = unit_draws::<F>(Unit::Gumbel, &shape, rng);
        self.tape().constant(z).affine(self.scale, self.loc)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        self.scale
            .ln_plus(EULER + 1.0)
            .broadcast_to(&self.batch_shape())
    }
    // `loc + γ scale`, which cancels near its root (608 ulp off at -2,
    // 3.4674 where it was taken in `f32`): in f64, rounded once
    fn mean(&self) -> Result<Var<'t, F>> {
        self.loc.gumbel_mean(self.scale)
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        (self.scale.square() * F::lit(PI * PI / 6.0)).broadcast_to(&self.batch_shape())
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.loc.shape(), &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// `ζ(k) - 1` for `k = 2..=13`, the coefficients of [`ln_gamma_two_plus`].
const ZETA_LESS_ONE: [f64; 12] = [
    0.644_934_066_848_226_4,
    0.202_056_903_159_594_3,
    0.082_323_233_711_138_19,
    0.036_927_755_143_369_93,
    0.017_343_061_984_449_14,
    0.008_349_277_381_922_827,
    0.004_077_356_197_944_339,
    0.002_008_392_826_082_214,
    0.000_994_575_127_818_085_3,
    0.000_494_188_604_119_464_6,
    0.000_246_086_553_308_048_3,
    0.000_122_713_347_578_489_1,
];

/// `ln Γ(2 + u)`, for the Gumbel divergence's `ln Γ(1 + r)` with `u = r -
/// 1`. Near `u = 0`, where it is about `(1 - γ) u` and cancels against the
/// divergence's other terms, it comes from its series `(1 - γ) u + Σ_{k >=
/// 2} (-1)^k (ζ(k) - 1) u^k / k` in the exact `u` (through `2 + u`, whose
/// rounding is `10⁻¹⁶` absolute, the divergence between scales `1` and
/// `1.000001` was 5e-5 off); from `|u| = 1/20` on, [`lgamma`] (the series'
/// first term left out is below 10⁻¹⁷ of the sum inside).
fn ln_gamma_two_plus(u: f64) -> f64 {
    if u.abs() >= 0.05 {
        return lgamma(2.0 + u);
    }
    let mut series = 0.0;
    for (i, &c) in ZETA_LESS_ONE.iter().enumerate().rev() {
        series = c / (i + 2) as f64 - u * series;
    }
    u * (1.0 - EULER + u * series)
}

/// `-ln r + γ (r - 1) + expm1(ln Γ(1 + r) - d) + d`: the KL from
/// `Gumbel(m1, s1)` to `Gumbel(m2, s2)` with `r = s1 / s2` and `d = (m1 -
/// m2) / s2`, at one position in `f64` (`ln Γ(1 + r)` by
/// [`ln_gamma_two_plus`]). It is 0 at `r = 1`, `d = 0`,
/// where the exponential's part is taken by `expm1` (`e^(…)` less 1 would
/// lose the digits of the terms that cancel); `+inf` where `e^-d`
/// overflows.
///
/// `ln r` is given (as [`special::ln_ratio`] of the two scales: `r` may be
/// subnormal, where its logarithm loses digits, at scales 1e320 apart).
/// Returns the value, `∂r + 1/r = γ + E ψ(1 + r)` (the callers take `1/r`
/// apart, which overflows for a subnormal `r` where the slope does not),
/// `∂d = -expm1(ln Γ(1 + r) - d)` and `r ∂r + d ∂d = γ r - 1 + d + E (r
/// ψ(1 + r) - d)` (with `E
/// = Γ(1 + r) e^-d`; the combination the scales' partials take, summed
/// before `E` multiplies it, so that where it is large it is one product
/// of one sign, not two that overflow with opposite signs); `None` where
/// the divergence leaves the floats (`E` beyond the largest, or `d`
/// itself infinite), which the families hold at `+inf` with a gradient of
/// 0.
#[inline(always)]
fn gumbel_kl_form(r: f64, ln_r: f64, d: f64) -> Option<[f64; 4]> {
    use crate::kernels::special::digamma;
    let growth = ln_gamma_two_plus(r - 1.0) - d;
    let less_one = growth.exp_m1();
    let value = ((r - 1.0) * EULER - ln_r) + less_one + d;
    if !value.is_finite() {
        return None;
    }
    let (e, psi) = (growth.exp(), digamma(1.0 + r));
    Some([
        value,
        EULER + e * psi,
        -less_one,
        EULER * r - 1.0 + d + e * (r * psi - d),
    ])
}

/// KL(Gumbel || Gumbel) of `[m1, s1, m2, s2]` ([`gumbel_kl_form`] and the
/// chain rule through `r` and `d`), in `f64` with its partial derivatives:
/// built from the tape's ops in `f32`, the backward multiplied `∂r` and
/// `∂d` by the scales' derivatives apart, and where the value neared the
/// largest float they overflowed with opposite signs (NaN).
#[derive(Clone, Copy)]
struct GumbelDivergence;

impl Pointwise<4> for GumbelDivergence {
    const NAME: &'static str = "kl_gumbel";
    const KEYED: usize = 4;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        each_lane(v, out, d, f64::INFINITY, |[m1, s1, m2, s2]| {
            let shift = match m1 - m2 {
                diff if diff.is_finite() => diff / s2,
                _ => m1 / s2 - m2 / s2,
            };
            let ln_r = special::ln_ratio(s1, s2);
            let [value, dr_plus, dd, scaled] = gumbel_kl_form(s1 / s2, ln_r, shift)?;
            // ∂s1 = ∂r / s2 with ∂r = dr_plus - 1/r: -1/(r s2) = -1/s1
            let ds1 = dr_plus / s2 - 1.0 / s1;
            Some((value, [dd / s2, ds1, -dd / s2, -scaled / s2]))
        });
    }
}

/// KL(Gumbel || Gumbel) (see [`gumbel_kl_form`]).
pub(crate) fn kl_gumbel<'t, F: Element>(
    q: &Gumbel<'t, F>,
    p: &Gumbel<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        GumbelDivergence,
        "Gumbel",
        (q.batch_shape(), p.batch_shape()),
        [q.loc, q.scale, p.loc, p.scale],
    )
}

/// The Weibull distribution with shape `concentration` (`k`) and `scale`
/// (`λ`): lifetimes whose hazard grows (`k > 1`) or falls (`k < 1`) as a
/// power of time; `k = 1` is the exponential with rate `1/λ`.
///
/// # Density
/// `ln p(x) = ln k - ln λ + (k - 1) t - e^(k t)` with `t = ln(x / λ)`, on
/// `x > 0`; `-inf` (gradient 0) for `x <= 0` and `+inf`, as the
/// [`Gamma`](super::Gamma) (whose support is also taken open at 0).
/// Computed in `f64` with its partial derivatives in one pass (and
/// rounded once for `f32`); `-inf` where `e^(k t)` overflows.
///
/// # Sampling
/// `x = λ (-ln u)^(1/k)`: `rsample` is differentiable in both parameters.
/// A draw beyond the largest float (a concentration near 10⁻³, say) is
/// `+inf`.
///
/// # Moments
/// Mean `λ Γ(1 + 1/k)`; variance `λ² (Γ(1 + 2/k) - Γ(1 + 1/k)²)`, taken as
/// `λ² Γ(1 + 1/k)² expm1(D)` with `D = ln Γ(1 + 2/k) - 2 ln Γ(1 + 1/k)`
/// from its power series in `1/k` for `k >= 20` (the two `ln Γ` cancel to
/// `π²/(6 k²)` there), computed in `f64` through its logarithm with its
/// partial derivatives; entropy `γ (1 - 1/k) + ln(λ / k) + 1`.
///
/// # Parameters
/// - `concentration`, `scale`: finite, at least the smallest normal number;
///   shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// // concentration 1: the exponential with rate 1/2
/// let d = Weibull::new(tape.scalar(1.0), tape.scalar(2.0))?;
/// let lp = d.log_prob(tape.scalar(3.0))?.item()?;
/// assert!((lp - (0.5f64.ln() - 1.5)).abs() < 1e-12);
/// assert!((d.mean()?.item()? - 2.0).abs() < 1e-12);
/// assert!((d.variance()?.item()? - 4.0).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Weibull<'t, F: Element> {
    concentration: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Weibull<'t, F> {
    /// From a concentration (shape `k`) and a scale (`λ`).
    ///
    /// # Errors
    /// Parameters that are not finite or are below the smallest normal
    /// number; shapes that do not broadcast.
    pub fn new(concentration: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        check_two(
            "Weibull::new",
            "Weibull",
            check_divisor,
            ("concentration", &concentration),
            ("scale", &scale),
        )?;
        Ok(Weibull {
            concentration,
            scale,
        })
    }

    /// The concentration (shape `k`).
    pub fn concentration(&self) -> Var<'t, F> {
        self.concentration
    }

    /// The scale (`λ`).
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }
}

/// The Weibull log-density of `[k, λ, x]` in `f64` lanes, with its
/// partial derivatives: `∂k = 1/k - t expm1(u)`, `∂λ = k expm1(u) / λ`,
/// `∂x = -(1 + k expm1(u)) / x`, for `t = ln(x / λ)` and `u = k t`.
#[derive(Clone, Copy)]
struct WeibullLogDensity;

impl Pointwise<3> for WeibullLogDensity {
    const NAME: &'static str = "weibull_log_density";
    const KEYED: usize = 2;
    /// `ln k` and `ln λ`.
    type Pre = (Lanes, Lanes);

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> (Lanes, Lanes) {
        (ln_lanes(&v[0]), ln_lanes(&v[1]))
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 3], (ln_k, ln_s): &(Lanes, Lanes), out: &mut Lanes, d: &mut [Lanes; 3]) {
        let [k, s, x] = v;
        // t = ln(x / λ), one rounding before the logarithm (`k t` carries
        // it `k` times), or ln x - ln λ where the ratio leaves the normal
        // numbers
        let ratio: Lanes = std::array::from_fn(|l| x[l] / s[l]);
        let (ln_ratio, ln_x) = (ln_lanes(&ratio), ln_lanes(x));
        let t: Lanes = std::array::from_fn(|l| {
            let normal = ratio[l] >= f64::MIN_POSITIVE && ratio[l] < f64::INFINITY;
            select(mask(normal), ln_ratio[l], ln_x[l] - ln_s[l])
        });
        let u: Lanes = std::array::from_fn(|l| k[l] * t[l]);
        // (beyond ±800, e^u is inf or 0 already: the clamp keeps infinities
        // out of the lanes' range reduction)
        let em = exp_m1_lanes(&u.map(|u| u.clamp(-800.0, 800.0)));
        for l in 0..LANES {
            let (k, em) = (k[l], em[l]);
            let front = ln_k[l] - ln_s[l] - t[l] - 1.0;
            let tail = select(mask(em < f64::INFINITY), u[l] - em, f64::NEG_INFINITY);
            out[l] = front + tail;
            d[0][l] = 1.0 / k - t[l] * em;
            d[1][l] = k * em / s[l];
            d[2][l] = -(1.0 + k * em) / x[l];
        }
    }
}

/// `ln Γ(1 + 2h) - 2 ln Γ(1 + h)` from its power series,
/// `Σ_{n >= 2} (-1)^n ζ(n) (2^n - 2) h^n / n`: the coefficients of `h²`
/// to `h¹⁷`, enough for `h <= 1/20` to a relative 10⁻¹⁷.
const VARIANCE_SERIES: [f64; 16] = [
    1.644_934_066_848_226_4,
    -2.404_113_806_319_188_5,
    3.788_131_317_988_983_5,
    -6.221_566_530_860_22,
    10.512_544_973_839_308,
    -18.150_286_992_874_612,
    31.879_456_059_284_73,
    -56.780_475_593_477_995,
    102.301_645_578_063,
    -186.091_919_080_366_2,
    341.250_623_195_770_3,
    -630.077_309_408_974_4,
    1_170.214_526_210_609_4,
    -2_184.466_816_943_389,
    4_095.937_594_224_255_5,
    -7_710.058_882_793_788,
];

impl<'t, F: Element> Distribution<'t, F> for Weibull<'t, F> {
    super::kl::builtin_kl!(Weibull => kl_weibull);

    fn name(&self) -> &'static str {
        "Weibull"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.scale.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Weibull::log_prob", &self.scale, &x)?;
        batch_broadcast(
            "Weibull",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        let (k, s) = (self.concentration, self.scale);
        on_support(
            "Weibull",
            x,
            |_, v| v > F::zero() && v < F::infinity(),
            F::one(),
            |x| pointwise::apply(WeibullLogDensity, &[k, s, x]),
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        // ln E for E a standard exponential draw
        let ln_e = unit_draws::<F>(Unit::LnExponential, &shape, rng);
        let power = self
            .tape()
            .constant(ln_e)
            .try_div(self.concentration)?
            .exp();
        // a small concentration takes draws below the smallest float,
        // which round to 0, outside the support `log_prob` takes: they
        // are moved to it
        Ok(super::above_zero(self.scale.try_mul(power)?))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        rounded_once!(
            "weibull_entropy",
            [self.concentration, self.scale],
            |v: G| {
                let (k, scale) = (v[0], v[1]);
                let h = (-k.scalar_div(G::one()) + G::one()) * G::lit(EULER);
                // ln(λ / k) from the logarithms where the quotient leaves the
                // floats (`+inf` at k = 1e-30, λ = 1e10 in f32, where the
                // entropy is -5.8e29; a slope of -inf at k = 1e20, λ = 1e-300)
                Ok(h.try_add(scale.ln_ratio(k)?)? + G::one())
            }
        )
    }
    // in `f64` for `f32`: the exponential of a rounded `ln Γ` (78 ulp off
    // at k = 0.0316, where the mean is 7.1e34)
    fn mean(&self) -> Result<Var<'t, F>> {
        rounded_once!("weibull_mean", [self.concentration, self.scale], |v: G| {
            let h = v[0].scalar_div(G::one());
            v[1].try_mul((h + G::one()).lgamma().exp())
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        pointwise::apply(WeibullVariance, &[self.concentration, self.scale])
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.concentration.shape(), &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The Weibull variance of `[k, λ]`, `λ² Γ(1 + h)² expm1(D)` with `D = ln
/// Γ(1 + 2h) - 2 ln Γ(1 + h)` and `h = 1/k` (`D` from its series for `h <=
/// 1/20`), in `f64` with its partial derivatives, taken from the logarithm
/// `L = 2 ln λ + 2 ln Γ(1 + h) + ln expm1(D)`: `∂λ = 2 v / λ` and `∂k = -v
/// h² L'(h)` with `L'(h) = 2ψ(1 + h) + D'(h) e^D / expm1(D)`. Built from
/// the tape's ops, the backward multiplied each of `D`'s two terms by about
/// the value before they cancel, and near the largest float they
/// overflowed with opposite signs (NaN); here the derivative of the
/// logarithm is summed first, and a gradient beyond the floats is an
/// infinity of one sign.
#[derive(Clone, Copy)]
struct WeibullVariance;

impl Pointwise<2> for WeibullVariance {
    const NAME: &'static str = "weibull_variance";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        use crate::kernels::special::{digamma, lgamma};
        for l in 0..LANES {
            let (k, s) = (v[0][l], v[1][l]);
            let h = 1.0 / k;
            // D and D'
            let (dv, dd) = if h <= 0.05 {
                let (mut acc, mut slope) = (0.0, 0.0);
                for (i, &c) in VARIANCE_SERIES.iter().enumerate().rev() {
                    acc = acc * h + c;
                    slope = slope * h + c * (i + 2) as f64;
                }
                (acc * h * h, slope * h)
            } else {
                let twice = lgamma(1.0 + 2.0 * h) - 2.0 * lgamma(1.0 + h);
                (twice, 2.0 * (digamma(1.0 + 2.0 * h) - digamma(1.0 + h)))
            };
            if dv <= 0.0 {
                // D below the smallest float (h below 1e-154): nothing left
                (out[l], d[0][l], d[1][l]) = (0.0, 0.0, 0.0);
                continue;
            }
            // ln expm1(D) and e^D / expm1(D), from e^-D beyond D = 1 (where
            // e^D overflows first)
            let (ln_em, ratio) = if dv > 1.0 {
                let t = -(-dv).exp_m1();
                (dv + t.ln(), 1.0 / t)
            } else {
                let em = dv.exp_m1();
                (em.ln(), (em + 1.0) / em)
            };
            let ln_mean = s.ln() + lgamma(1.0 + h);
            let value = (2.0 * ln_mean + ln_em).exp();
            let slope = 2.0 * digamma(1.0 + h) + dd * ratio;
            out[l] = value;
            // (slope h first: at k = 1e150 and λ = 1e300 the value, 1.6e300,
            // times the slope, 2e150, overflowed where ∂k is -3.3e150)
            d[0][l] = -(value * (slope * h)) * h;
            d[1][l] = 2.0 * value / s;
        }
    }
}

/// KL(Weibull || Weibull): `-ln X` of a Weibull `X` is a Gumbel with
/// location `-ln λ` and scale `1/k`, and the divergence is that of the
/// two Gumbels: [`gumbel_kl_form`] with `r = k2 / k1` and `d = -k2 ln(λ1 /
/// λ2)`.
pub(crate) fn kl_weibull<'t, F: Element>(
    q: &Weibull<'t, F>,
    p: &Weibull<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        WeibullDivergence,
        "Weibull",
        (q.batch_shape(), p.batch_shape()),
        [q.concentration, q.scale, p.concentration, p.scale],
    )
}

/// KL(Weibull || Weibull) of `[k1, λ1, k2, λ2]`: [`gumbel_kl_form`] with
/// `r = k2 / k1` and `d = -k2 ln(λ1 / λ2)`, in `f64` with its partial
/// derivatives (as [`GumbelDivergence`]).
#[derive(Clone, Copy)]
struct WeibullDivergence;

impl Pointwise<4> for WeibullDivergence {
    const NAME: &'static str = "kl_weibull";
    const KEYED: usize = 4;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        each_lane(v, out, d, f64::INFINITY, |[k1, s1, k2, s2]| {
            let r = k2 / k1;
            let shift = -(k2 * special::ln_ratio(s1, s2));
            let [value, dr_plus, dd, scaled] = gumbel_kl_form(r, special::ln_ratio(k2, k1), shift)?;
            // r ∂r = r dr_plus - 1
            let partials = [
                -(r * dr_plus - 1.0) / k1,
                -(k2 * dd) / s1,
                scaled / k2,
                (k2 * dd) / s2,
            ];
            Some((value, partials))
        });
    }
}
