//! Laplace, Exponential, Uniform, Poisson, NegativeBinomial and Binomial.

use super::bernoulli::{exp_excess, kl_logits, log1p_excess};
use super::normal::{StandardLaplace, loc_scale_log_prob};
use super::pointwise::{self, Fallback, Lanes, Pointwise, each_lane};
use super::widened::{kl_from_kept_probs, rounded_once};
use super::{
    Distribution, Gamma, batch_broadcast, check_divisor, check_finite, check_positive,
    check_values, on_support, open_uniform, same_tape, sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::random::Unit;
use crate::kernels::special::{lgamma, ln_ratio};
use crate::tensor::{Element, Tensor, broadcast_shape, unit_draws};
use rand::Rng;

/// The Laplace (double exponential) distribution.
///
/// # Density
/// `ln p(x) = -ln(2 scale) - |x - loc| / scale`.
///
/// # Sampling
/// `x = loc ± scale · E`, `E = -ln u` a standard exponential draw and the
/// sign a fair coin: `rsample` is differentiable in both parameters.
///
/// # Parameters
/// - `loc`: finite; `scale`: finite, at least the smallest normal number;
///   shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Laplace::new(tape.scalar(1.0), tape.scalar(0.5))?;
/// assert!((d.variance()?.item()? - 0.5).abs() < 1e-12);
/// assert!((d.log_prob(tape.scalar(1.0))?.item()? - 0.0).abs() < 1e-12); // -ln(2 · 0.5)
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Laplace<'t, F: Element> {
    loc: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Laplace<'t, F> {
    /// From a location and a scale.
    pub fn new(loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        same_tape("Laplace::new", &loc, &scale)?;
        check_finite("Laplace", "loc", &loc)?;
        check_divisor("Laplace", "scale", &scale)?;
        batch_broadcast("Laplace", ("loc", loc.shape()), ("scale", scale.shape()))?;
        Ok(Laplace { loc, scale })
    }

    /// The location.
    pub fn loc(&self) -> Var<'t, F> {
        self.loc
    }

    /// The scale.
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }
}

impl<'t, F: Element> Distribution<'t, F> for Laplace<'t, F> {
    super::kl::builtin_kl!(Laplace => kl_laplace);

    fn name(&self) -> &'static str {
        "Laplace"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.loc.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Laplace::log_prob", &self.loc, &x)?;
        check_values("Laplace", "value", &x, "must not be NaN", |v| !v.is_nan())?;
        batch_broadcast(
            "Laplace",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        // one fused op: -|z| - ln scale - ln 2, z = (x - loc) / scale
        loc_scale_log_prob::<StandardLaplace, F>(x, self.loc, self.scale)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        // a standard exponential draw with a random sign
        let e: Tensor<F> = unit_draws(Unit::Laplace, &shape, rng);
        self.tape().constant(e).affine(self.scale, self.loc)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = 1 + ln(2 scale)
    fn entropy(&self) -> Result<Var<'t, F>> {
        let h = self.scale.ln_plus(1.0 + std::f64::consts::LN_2);
        h.broadcast_to(&self.batch_shape())
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        self.loc.broadcast_to(&self.batch_shape())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        (self.scale.square() * F::lit(2.0)).broadcast_to(&self.batch_shape())
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.loc.shape(), &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(Laplace(m1, b1) || Laplace(m2, b2)) of `[m1, b1, m2, b2]`: with
/// `d = |m1 - m2|`, `x = d / b1`, `r = b1 / b2` and `c = r e^-x`, `ln(b2 /
/// b1) + d / b2 + c - 1`, taken as `(t - ln(1 + t)) + r (e^-x - 1 + x)`
/// with `t = r - 1 = (b1 - b2) / b2`, two terms that are never negative,
/// each from its series where it is small ([`log1p_excess`],
/// [`exp_excess`]; `ln r` from the scales where `|t| >= 1/2`); summed as
/// written its terms cancel between near-equal
/// distributions (the value came out as 0 or wholly wrong, against
/// mpmath, where the scales were 1.3e-10 and the locations 4.5e-3 of the
/// scale apart). Its partial derivatives: `∂m1 = sign(m1 - m2) (1 - e^-x)
/// / b2 = -∂m2`, with `1 - e^-x` as `-expm1(-x)` (as the difference of `1
/// / b2` and `c / b1` its relative error grows up to about `1e-16 / x`:
/// 6e-8 where `d` is 10⁻¹⁰ of `b1`), `∂b1 = (c (1 + x) - 1) / b1` and
/// `∂b2 = (1 - d / b2 - c) / b2`, where `|t|` and `x` are below 1/2 as
/// `(t - r (1 - (1 + x) e^-x)) / b1` and `-(t + r (e^-x - 1 + x)) / b2`
/// (whose terms are of the size of `t` and `x²` there, and cancel where
/// `r` or `x` is large). Where `b1 / b2` overflows, the value is taken as
/// first written too, with `c = e^(ln(b1 / b2) - x)`.
#[derive(Clone, Copy)]
struct LaplaceDivergence;

impl Pointwise<4> for LaplaceDivergence {
    const NAME: &'static str = "kl_laplace";
    const KEYED: usize = 4;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        each_lane(v, out, d, f64::INFINITY, |[m1, b1, m2, b2]| {
            let diff = m1 - m2;
            let dist = diff.abs();
            let x = dist / b1;
            let ratio = b1 / b2;
            let slope_loc = if diff == 0.0 {
                0.0
            } else {
                (-(-x).exp_m1() / b2).copysign(diff)
            };
            // the partials as first written, given c (`c (1 + x)`, with
            // `c = r e^-x`, is `c`, not `0 · inf`, where `x` overflows)
            let scale_slopes = |c: f64| {
                let c_x = if x.is_finite() { c * (1.0 + x) } else { c };
                [
                    slope_loc,
                    (c_x - 1.0) / b1,
                    -slope_loc,
                    (1.0 - dist / b2 - c) / b2,
                ]
            };
            if ratio.is_finite() {
                let (t, excess) = ((b1 - b2) / b2, exp_excess(x));
                // (1 + t rounds away ln r where r is small: from the scales)
                let head = if t.abs() < 0.5 {
                    log1p_excess(t)
                } else {
                    t - ln_ratio(b1, b2)
                };
                // r (e^-x - 1 + x) = r e^-x - r + d / b2: where `x`
                // overflows (`d` beyond `b1` by more than the floats'
                // range), `d / b2 - r`, not `r · inf` (NaN at `r = 0`, for
                // a divergence of `d / b2`, 1e270 at `d = 1e300`, `b1 =
                // 1e-300`, `b2 = 1e30`)
                let value = if x.is_finite() {
                    head + ratio * excess
                } else {
                    head + (dist / b2 - ratio)
                };
                if t.abs() < 0.5 && x < 0.5 {
                    // 1 - (1 + x) e^-x
                    let k = -(x * (-x).exp_m1()) - excess;
                    let partials = [
                        slope_loc,
                        (t - ratio * k) / b1,
                        -slope_loc,
                        -(t + ratio * excess) / b2,
                    ];
                    return Some((value, partials));
                }
                let c = ratio * (-x).exp();
                return Some((value, scale_slopes(c)));
            }
            let c = (ln_ratio(b1, b2) - x).exp();
            let value = ln_ratio(b2, b1) + dist / b2 + c - 1.0;
            Some((value, scale_slopes(c)))
        });
    }
}

/// KL(Laplace || Laplace), one value per batch element ([`LaplaceDivergence`]).
pub(crate) fn kl_laplace<'t, F: Element>(
    q: &Laplace<'t, F>,
    p: &Laplace<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        LaplaceDivergence,
        "Laplace",
        (q.batch_shape(), p.batch_shape()),
        [q.loc, q.scale, p.loc, p.scale],
    )
}

/// KL(Normal(μ, σ) || Laplace(m, s)) of `[μ, σ, m, s]`, a sparsity prior
/// against a mean-field posterior: with `d = μ - m`, `z = d / σ` and the
/// folded normal's mean `E|x - m| = σ √(2/π) e^(-z²/2) + d erf(z/√2)`
/// (two terms of one sign), `ln(2 s / σ) - ln(2π)/2 - 1/2 + E|x - m| / s`,
/// and its partial derivatives `∂μ = erf(z/√2) / s = -∂m`,
/// `∂σ = √(2/π) e^(-z²/2) / s - 1/σ` and `∂s = (1 - E|x - m| / s) / s`.
/// Where `d` overflows, `E|x - m| / s` is `|μ/s - m/s|`.
#[derive(Clone, Copy)]
struct NormalLaplaceDivergence;

impl Pointwise<4> for NormalLaplaceDivergence {
    const NAME: &'static str = "kl_normal_laplace";
    const KEYED: usize = 4;
    type Pre = ();
    const FLAT_BEYOND_THE_FLOATS: bool = true;

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
        const HALF_LN_2PI_PLUS_HALF: f64 = super::HALF_LN_2PI + 0.5;
        each_lane(v, out, d, f64::INFINITY, |[mu, sigma, m, s]| {
            let diff = mu - m;
            let z = diff / sigma;
            let bump = SQRT_2_OVER_PI * (-0.5 * z * z).exp();
            let erf = libm::erf(z * std::f64::consts::FRAC_1_SQRT_2);
            let mean_abs_over_s = if diff.is_finite() {
                (sigma * bump + diff * erf) / s
            } else {
                (mu / s - m / s).abs()
            };
            let value = std::f64::consts::LN_2 + ln_ratio(s, sigma) - HALF_LN_2PI_PLUS_HALF
                + mean_abs_over_s;
            let partials = [
                erf / s,
                bump / s - 1.0 / sigma,
                -erf / s,
                (1.0 - mean_abs_over_s) / s,
            ];
            Some((value, partials))
        });
    }
}

/// KL(Normal || Laplace), one value per batch element ([`NormalLaplaceDivergence`]).
pub(crate) fn kl_normal_laplace<'t, F: Element>(
    q: &super::Normal<'t, F>,
    p: &Laplace<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        NormalLaplaceDivergence,
        "Laplace",
        (q.batch_shape(), p.batch_shape()),
        [q.loc(), q.scale(), p.loc, p.scale],
    )
}

/// The exponential distribution with `rate`.
///
/// # Density
/// `ln p(x) = ln rate - rate · x` for `x >= 0`; `-inf` (gradient 0) for `x < 0`.
///
/// # Sampling
/// `x = -ln(u) / rate`: `rsample` is differentiable in the rate.
///
/// Its KL divergences go through [`Gamma`](super::Gamma) with
/// concentration 1 ([`Exponential::to_gamma`]).
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Exponential::new(tape.scalar(2.0))?;
/// assert!((d.mean()?.item()? - 0.5).abs() < 1e-12);
/// assert_eq!(d.log_prob(tape.scalar(-1.0))?.item()?, f64::NEG_INFINITY);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Exponential<'t, F: Element> {
    rate: Var<'t, F>,
}

impl<'t, F: Element> Exponential<'t, F> {
    /// From a rate (inverse mean).
    pub fn new(rate: Var<'t, F>) -> Result<Self> {
        check_positive("Exponential", "rate", &rate)?;
        Ok(Exponential { rate })
    }

    /// The rate.
    pub fn rate(&self) -> Var<'t, F> {
        self.rate
    }

    /// The same distribution as `Gamma(1, rate)`.
    pub fn to_gamma(&self) -> Result<super::Gamma<'t, F>> {
        let one = self
            .rate
            .tape()
            .constant(Tensor::full(&self.rate.shape(), F::one()));
        super::Gamma::new(one, self.rate)
    }
}

impl<'t, F: Element> Distribution<'t, F> for Exponential<'t, F> {
    super::kl::builtin_kl!(Exponential => kl_exponential, Gamma => kl_exponential_gamma);

    fn name(&self) -> &'static str {
        "Exponential"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.rate.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Exponential::log_prob", &self.rate, &x)?;
        let rate = self.rate;
        on_support(
            "Exponential",
            x,
            |_, v| v >= F::zero(),
            F::zero(),
            |x| rate.ln().try_sub(rate.try_mul(x)?),
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let e: Tensor<F> = unit_draws(Unit::Exponential, &shape, rng);
        self.tape().constant(e).try_div(self.rate)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = 1 - ln rate
    fn entropy(&self) -> Result<Var<'t, F>> {
        Ok(-self.rate.ln_plus(-1.0))
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Ok(self.rate.powf(-F::one()))
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Ok(self.rate.powf(F::lit(-2.0)))
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.rate.shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL between Exponentials, through `Gamma(1, rate)`.
pub(crate) fn kl_exponential<'t, F: Element>(
    q: &Exponential<'t, F>,
    p: &Exponential<'t, F>,
) -> Result<Var<'t, F>> {
    super::gamma::kl_gamma(&q.to_gamma()?, &p.to_gamma()?)
}

/// KL(Exponential || Gamma), through `Gamma(1, rate)`.
pub(crate) fn kl_exponential_gamma<'t, F: Element>(
    q: &Exponential<'t, F>,
    p: &super::Gamma<'t, F>,
) -> Result<Var<'t, F>> {
    super::gamma::kl_gamma(&q.to_gamma()?, p)
}

/// KL(Gamma || Exponential), through `Gamma(1, rate)`.
pub(crate) fn kl_gamma_exponential<'t, F: Element>(
    q: &super::Gamma<'t, F>,
    p: &Exponential<'t, F>,
) -> Result<Var<'t, F>> {
    super::gamma::kl_gamma(q, &p.to_gamma()?)
}

/// The continuous uniform distribution on `[low, high]`.
///
/// # Density
/// `ln p(x) = -ln(high - low)` for `low <= x <= high`; `-inf` (gradient 0)
/// elsewhere.
///
/// # Sampling
/// `x = low + (high - low) u`: `rsample` is differentiable in both bounds.
///
/// # Parameters
/// - `low < high`, both finite; shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Uniform::new(tape.scalar(-1.0), tape.scalar(3.0))?;
/// assert!((d.entropy()?.item()? - 4f64.ln()).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Uniform<'t, F: Element> {
    low: Var<'t, F>,
    high: Var<'t, F>,
}

impl<'t, F: Element> Uniform<'t, F> {
    /// From the bounds.
    ///
    /// # Errors
    /// Non-finite bounds; `low >= high` anywhere.
    pub fn new(low: Var<'t, F>, high: Var<'t, F>) -> Result<Self> {
        same_tape("Uniform::new", &low, &high)?;
        check_finite("Uniform", "low", &low)?;
        check_finite("Uniform", "high", &high)?;
        let shape = batch_broadcast("Uniform", ("low", low.shape()), ("high", high.shape()))?;
        let width = high.value().broadcast_to(&shape)?.zip_map(
            &low.value().broadcast_to(&shape)?,
            "Uniform::new",
            |h, l| h - l,
        )?;
        if let Some(&w) = width.data().iter().find(|&&w| w <= F::zero()) {
            return Err(Error::InvalidParameter {
                distribution: "Uniform",
                parameter: "high - low",
                value: w.to_f64().unwrap_or(f64::NAN),
                reason: "must be > 0",
            });
        }
        Ok(Uniform { low, high })
    }

    /// The lower bound.
    pub fn low(&self) -> Var<'t, F> {
        self.low
    }

    /// The upper bound.
    pub fn high(&self) -> Var<'t, F> {
        self.high
    }

    fn width(&self) -> Result<Var<'t, F>> {
        self.high.try_sub(self.low)
    }

    /// Whether `high - low` overflows somewhere (both bounds are finite,
    /// but a flat prior from `-f64::MAX` to `f64::MAX` is twice as wide as
    /// any number): then the quantities below are taken from the halved
    /// bounds, which cannot overflow.
    fn overflows(&self) -> bool {
        let (l, h) = (self.low.value(), self.high.value());
        let shape = self.batch_shape();
        match (l.broadcast_to(&shape), h.broadcast_to(&shape)) {
            (Ok(l), Ok(h)) => l
                .data()
                .iter()
                .zip(h.data())
                .any(|(&l, &h)| !(h - l).is_finite()),
            _ => false,
        }
    }

    /// `ln(high - low)`, as `ln(high/2 - low/2) + ln 2` where the width
    /// overflows.
    fn ln_width(&self) -> Result<Var<'t, F>> {
        if !self.overflows() {
            return Ok(self.width()?.ln());
        }
        let half = (self.high * F::lit(0.5)).try_sub(self.low * F::lit(0.5))?;
        Ok(half.ln() + F::lit(std::f64::consts::LN_2))
    }
}

impl<'t, F: Element> Distribution<'t, F> for Uniform<'t, F> {
    super::kl::builtin_kl!(Uniform => kl_uniform);

    fn name(&self) -> &'static str {
        "Uniform"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.low.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Uniform::log_prob", &self.low, &x)?;
        let shape = broadcast_shape(&x.shape(), &self.batch_shape()).ok_or_else(|| {
            Error::BatchShapeMismatch {
                distribution: "Uniform",
                lhs_param: "value",
                lhs: x.shape(),
                rhs_param: "low and high",
                rhs: self.batch_shape(),
            }
        })?;
        let x = x.broadcast_to(&shape)?;
        let low = self.low.value().broadcast_to(&shape)?;
        let high = self.high.value().broadcast_to(&shape)?;
        let ln_width = self.ln_width()?;
        on_support(
            "Uniform",
            x,
            |i, v| v >= low.data()[i] && v <= high.data()[i],
            F::zero(),
            |x| {
                // x enters with weight 0: the density is flat in x
                let flat = x * F::zero();
                flat.try_sub(ln_width)
            },
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let u = self.tape().constant(unit_draws(Unit::Uniform, &shape, rng));
        if self.overflows() {
            // low (1 - u) + high u: the same draw without the width
            let v = self.tape().constant(u.value().map(|u| F::one() - u));
            return self.low.try_mul(v)?.try_add(self.high.try_mul(u)?);
        }
        u.affine(self.width()?, self.low)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        self.ln_width()
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        let sum = self.low.try_add(self.high)?;
        if sum.value().data().iter().all(|s| s.is_finite()) {
            return Ok(sum * F::lit(0.5));
        }
        // the sum of the bounds overflows, their halves' does not
        (self.low * F::lit(0.5)).try_add(self.high * F::lit(0.5))
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Ok(self.width()?.square() / F::lit(12.0))
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.low.shape(), &self.high.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(Uniform(a, b) || Uniform(c, d)) `= ln((d - c) / (b - a))` where
/// `[a, b]` lies inside `[c, d]`, and `+inf` (with a zero gradient) where
/// it does not: `q` then puts mass where `p` has none. The widths are
/// those of [`Distribution::entropy`], so a bound pair as wide as the
/// whole range of `F` does not overflow.
pub(crate) fn kl_uniform<'t, F: Element>(
    q: &Uniform<'t, F>,
    p: &Uniform<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.low, &p.low)?;
    let shape = batch_broadcast(
        "Uniform",
        ("the posterior's bounds", q.batch_shape()),
        ("the prior's bounds", p.batch_shape()),
    )?;
    let bound = |v: Var<'t, F>| v.value().broadcast_to(&shape);
    let (ql, qh, pl, ph) = (bound(q.low)?, bound(q.high)?, bound(p.low)?, bound(p.high)?);
    let inside: Vec<F> = (ql.data().iter().zip(qh.data()))
        .zip(pl.data().iter().zip(ph.data()))
        .map(|((ql, qh), (pl, ph))| match pl <= ql && qh <= ph {
            true => F::one(),
            false => F::zero(),
        })
        .collect();
    let kl = p.ln_width()?.try_sub(q.ln_width()?)?.broadcast_to(&shape)?;
    if inside.iter().all(|&m| m == F::one()) {
        return Ok(kl);
    }
    let infinite = q.tape().scalar(F::infinity());
    kl.choose(Tensor::new_unchecked(inside, shape), infinite)
}

/// KL(Poisson(λ1) || Poisson(λ2)) `= λ1 ln(λ1 / λ2) + λ2 - λ1`, computed as
/// Loader's deviance `bd0(λ1, λ2)`, which keeps its relative accuracy
/// where the rates are close and the three terms nearly cancel.
pub(crate) fn kl_poisson<'t, F: Element>(
    q: &Poisson<'t, F>,
    p: &Poisson<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.rate, &p.rate)?;
    q.rate.bd0(p.rate)
}

/// The Poisson distribution over counts `0, 1, 2, ...`.
///
/// # Mass
/// `ln P(k) = k ln rate - rate - ln Γ(k + 1)`, differentiable in the rate
/// (and, as TFP does, in `k` through `ln Γ`).
///
/// # Sampling
/// `sample` only (a count has no reparameterization): train through it with
/// the score-function estimator ([`bayes::score`](crate::bayes::score)).
/// Knuth's multiplication method for rates below 10, Hörmann's transformed
/// rejection (PTRS, 1993) above.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Poisson::new(tape.scalar(3.0))?;
/// let p2 = d.log_prob(tape.scalar(2.0))?.item()?.exp();
/// assert!((p2 - 4.5 * (-3f64).exp()).abs() < 1e-12);
/// assert!(d.log_prob(tape.scalar(1.5)).is_err()); // not a count
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Poisson<'t, F: Element> {
    rate: Var<'t, F>,
}

impl<'t, F: Element> Poisson<'t, F> {
    /// From a rate (the mean).
    pub fn new(rate: Var<'t, F>) -> Result<Self> {
        check_positive("Poisson", "rate", &rate)?;
        Ok(Poisson { rate })
    }

    /// The rate.
    pub fn rate(&self) -> Var<'t, F> {
        self.rate
    }
}

/// Errors unless every element of `k` is a count, a whole number >= 0.
fn check_counts<F: Element>(d: &'static str, p: &'static str, k: &Var<'_, F>) -> Result<()> {
    check_values(d, p, k, "must be a count (an integer >= 0)", |v| {
        v >= F::zero() && v.fract() == F::zero() && v.is_finite()
    })
}

/// The error of `rsample` for a distribution over counts.
fn no_rsample(distribution: &'static str) -> Error {
    Error::Unsupported {
        distribution,
        what: "reparameterized sampling (rsample); use the score-function estimator",
    }
}

/// A Poisson draw.
fn poisson_draw(lambda: f64, rng: &mut dyn Rng) -> f64 {
    if lambda < 10.0 {
        let limit = (-lambda).exp();
        let (mut k, mut prod) = (0.0, open_uniform(rng));
        while prod > limit {
            k += 1.0;
            prod *= open_uniform(rng);
        }
        return k;
    }
    // PTRS: transformed rejection with squeeze
    let slam = lambda.sqrt();
    let loglam = lambda.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = open_uniform(rng) - 0.5;
        let v = open_uniform(rng);
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -lambda + k * loglam - lgamma(k + 1.0)
        {
            return k;
        }
    }
}

impl<'t, F: Element> Distribution<'t, F> for Poisson<'t, F> {
    super::kl::builtin_kl!(Poisson => kl_poisson);

    fn name(&self) -> &'static str {
        "Poisson"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.rate.tape()
    }
    fn log_prob(&self, k: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Poisson::log_prob", &self.rate, &k)?;
        check_counts("Poisson", "value", &k)?;
        // k ln λ - λ - ln Γ(k + 1) without its cancellation for large counts
        k.poisson_log_mass(self.rate)
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(no_rsample("Poisson"))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let r = self.rate.value();
        let rates = F::as_f64s(r.data());
        super::repeat_batches("Poisson", n, r.shape(), |out| {
            out.extend(rates.iter().map(|&l| F::lit(poisson_draw(l, rng))));
            Ok(())
        })
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Poisson",
            what: "a closed-form entropy",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Ok(self.rate)
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Ok(self.rate)
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.rate.shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The negative binomial distribution: the number of successes before the
/// `total_count`-th failure, each trial a success with probability
/// `sigmoid(logits)` (TFP's and PyTorch's convention). A Poisson whose
/// rate is Gamma-distributed: the overdispersed count likelihood.
///
/// # Mass
/// `ln P(k) = ln Γ(k + r) - ln Γ(r) - ln Γ(k + 1) - r softplus(l) - k
/// softplus(-l)` for `r = total_count` and `l = logits`, with the first
/// difference taken whole ([`Var::lgamma_diff`]): at `k = 0` the three
/// `ln Γ` terms are exactly 0 with a slope of 0 in `r`, so
/// `ln P(0) = -r softplus(l)` keeps its digits however small it is.
/// Differentiable in both parameters (and, as TFP does, in `k` through the
/// continuous extension of `ln Γ`). From `k >= 1` and `k + r >= 32` on it
/// is taken as `ln(r / (k + r))` plus the binomial mass of `k` in `k + r`
/// trials in Loader's saddle-point form, whose terms do not cancel: it
/// keeps its digits at any count (the direct sum cancels terms of size
/// `k`).
///
/// # Sampling
/// `sample` only (a count has no reparameterization; train through it with
/// the score-function estimator, [`bayes::score`](crate::bayes::score)):
/// a Poisson draw at a rate drawn from `Gamma(r, e^-l)`.
///
/// # Moments
/// Mean `r e^l`, variance `r e^l (1 + e^l)`.
///
/// # Parameters
/// - `total_count`: finite, > 0 (not necessarily an integer);
///   `logits`: finite; shapes broadcast. Or `probs` in `(0, 1)`, kept:
///   built from them, its mean `r p / (1 - p)`, variance `r p / (1 -
///   p)²` and draws come from them (through the rounded log-odds, whose
///   error of about `|l| ε` is a relative error of `e^l`, an `f32` mean at
///   `p = 1.5e-5` was 8 ulp off), and the mass from the log-odds.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// // r = 2, success probability 1/2: P(k) = (k + 1) / 2^(k + 2)
/// let d = NegativeBinomial::from_logits(tape.scalar(2.0), tape.scalar(0.0))?;
/// let p1 = d.log_prob(tape.scalar(1.0))?.item()?.exp();
/// assert!((p1 - 0.25).abs() < 1e-12);
/// assert_eq!(d.mean()?.item()?, 2.0);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct NegativeBinomial<'t, F: Element> {
    total_count: Var<'t, F>,
    logits: Var<'t, F>,
    /// The probabilities it was built from, if it was.
    probs: Option<Var<'t, F>>,
}

impl<'t, F: Element> NegativeBinomial<'t, F> {
    /// One draw of the batch, of counts `r` and log-odds `l` (both of the
    /// batch's shape, `l` in `f64`), appended to `out`.
    fn draw_batch(
        &self,
        r: &Tensor<F>,
        l: &[f64],
        rng: &mut dyn Rng,
        out: &mut Vec<F>,
    ) -> Result<()> {
        // the Poisson rates: Gamma(r, 1) draws times e^l, in logarithms
        let ln_g = super::gamma::ln_std_gamma_draws(r, rng);
        for (ln_g, &l) in ln_g.into_iter().zip(l) {
            let rate = (ln_g + l).exp();
            if !rate.is_finite() {
                return Err(Error::invalid(
                    "NegativeBinomial::sample",
                    format!(
                        "a draw's Poisson rate overflows (logits {}): its counts are beyond any float",
                        crate::error::Number(l)
                    ),
                ));
            }
            out.push(F::lit(poisson_draw(rate, rng)));
        }
        Ok(())
    }

    /// From the number of failures that ends the trials and the probability
    /// of a success (kept, and its log-odds beside it).
    ///
    /// # Errors
    /// Those of [`from_logits`](Self::from_logits); probabilities outside
    /// `(0, 1)`.
    pub fn from_probs(total_count: Var<'t, F>, probs: Var<'t, F>) -> Result<Self> {
        let logits = super::logits_of_probs("NegativeBinomial", probs)?;
        Ok(NegativeBinomial {
            probs: Some(probs),
            ..Self::from_logits(total_count, logits)?
        })
    }

    /// From the number of failures that ends the trials and the log-odds of
    /// a success.
    ///
    /// # Errors
    /// A `total_count` that is not finite and > 0; non-finite logits;
    /// shapes that do not broadcast.
    pub fn from_logits(total_count: Var<'t, F>, logits: Var<'t, F>) -> Result<Self> {
        same_tape("NegativeBinomial::from_logits", &total_count, &logits)?;
        check_positive("NegativeBinomial", "total_count", &total_count)?;
        check_finite("NegativeBinomial", "logits", &logits)?;
        batch_broadcast(
            "NegativeBinomial",
            ("total_count", total_count.shape()),
            ("logits", logits.shape()),
        )?;
        Ok(NegativeBinomial {
            total_count,
            logits,
            probs: None,
        })
    }

    /// The number of failures that ends the trials.
    pub fn total_count(&self) -> Var<'t, F> {
        self.total_count
    }

    /// The log-odds of a success.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }

    /// The probability of a success: the one it was built from, or the
    /// sigmoid of its logits.
    pub fn probs(&self) -> Var<'t, F> {
        self.probs.unwrap_or_else(|| self.logits.sigmoid())
    }
}

/// The log-odds `ln p - ln(1 - p)` in `f64` of the probabilities `probs`
/// where given (the `f64` difference of the two logarithms, not the
/// rounded log-odds of `F`), else the `logits` widened, at the batch's
/// `shape`.
fn wide_log_odds<F: Element>(
    logits: Var<'_, F>,
    probs: Option<Var<'_, F>>,
    shape: &[usize],
) -> Result<Vec<f64>> {
    Ok(match probs {
        Some(p) => F::as_f64s(p.value().broadcast_to(shape)?.data())
            .iter()
            .map(|&p| p.ln() - (-p).ln_1p())
            .collect(),
        None => F::as_f64s(logits.value().broadcast_to(shape)?.data()).into_owned(),
    })
}

impl<'t, F: Element> Distribution<'t, F> for NegativeBinomial<'t, F> {
    fn name(&self) -> &'static str {
        "NegativeBinomial"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape()
    }
    fn log_prob(&self, k: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("NegativeBinomial::log_prob", &self.logits, &k)?;
        check_counts("NegativeBinomial", "value", &k)?;
        batch_broadcast(
            "NegativeBinomial",
            ("value", k.shape()),
            ("batch", self.batch_shape()),
        )?;
        let inputs = [self.total_count, k, self.logits];
        let direct = |v: &[Var<'t, F>]| {
            let (r, k, l) = (v[0], v[1], v[2]);
            // ln Γ(k + r) - ln Γ(r) - ln Γ(k + 1), exactly 0 with a slope of
            // 0 in r at k = 0, where the mass is e^(-r softplus(l))
            let binomial = r.lgamma_diff(k)?.try_sub((k + F::one()).lgamma())?;
            let failures = r.try_mul(l.softplus())?;
            let successes = k.try_mul((-l).softplus())?;
            binomial.try_sub(failures)?.try_sub(successes)
        };
        // the binomial mass of k in k + r trials, times r / (k + r)
        let saddle = |v: &[Var<'t, F>]| {
            let (r, k, l) = (v[0], v[1], v[2]);
            let n = k.try_add(r)?;
            let binomial = binomial_saddle_point(n, k, r, l)?;
            binomial.try_add(r.ln())?.try_sub(n.ln())
        };
        let large = super::gamma::mask_where(&inputs, |v| {
            v[1] >= F::one() && v[0] + v[1] >= F::lit(SADDLE_POINT_FROM)
        })?;
        super::gamma::split(&inputs, (large.clone(), large), saddle, direct)
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(no_rsample("NegativeBinomial"))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let shape = self.batch_shape();
        let r = self.total_count.value().broadcast_to(&shape)?;
        let l = wide_log_odds(self.logits, self.probs, &shape)?;
        super::repeat_batches("NegativeBinomial", n, &shape, |out| {
            self.draw_batch(&r, &l, rng, out)
        })
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "NegativeBinomial",
            what: "a closed-form entropy",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        if let Some(p) = self.probs {
            // r p / (1 - p)
            return self.total_count.try_mul(p.try_div(-p + F::one())?);
        }
        self.total_count.try_mul(self.logits.exp())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        if let Some(p) = self.probs {
            // r p / (1 - p)²
            let failure = -p + F::one();
            return self
                .total_count
                .try_mul(p.try_div(failure)?.try_div(failure)?);
        }
        // r e^l (1 + e^l) = r e^l / (1 - p)
        let odds = self.logits.exp();
        self.total_count.try_mul(odds)?.try_mul(odds + F::one())
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.total_count.shape(), &self.logits.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// From this many trials on (`n` for the binomial, `k + r` for the
/// negative binomial), the log-masses are taken in Loader's saddle-point
/// form ([`binomial_saddle_point`]), inside the support's ends.
const SADDLE_POINT_FROM: f64 = 32.0;

/// `ln C(n, k) + k ln p + (n - k) ln q` for `0 < k < n`, with `p =
/// sigmoid(l)` and `rest = n - k` (passed apart, so that the negative
/// binomial's `r` does not go through `k + r` and back): Loader's (2000)
/// saddle-point form, `C(n) - C(k) - C(rest) - bd0(k, n p) - bd0(rest, n
/// q) + ln(n / (2π k rest)) / 2` with `C` the remainder of Stirling's
/// series (`Var::lgamma_correction`) and `bd0(x, y) = x ln(x/y) + y - x`.
/// The direct sum cancels terms of size `k` (1e-9 relative held to counts
/// of about 1e7); here every term is small where the mass is not, and the
/// form holds its digits at any count.
fn binomial_saddle_point<'t, F: Element>(
    n: Var<'t, F>,
    k: Var<'t, F>,
    rest: Var<'t, F>,
    l: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let corrections = n.lgamma_correction() - k.lgamma_correction();
    let corrections = corrections.try_sub(rest.lgamma_correction())?;
    let successes = deviance_from_mean(k, n, l)?;
    let failures = deviance_from_mean(rest, n, -l)?;
    let spread = n.ln().try_sub(k.ln())?.try_sub(rest.ln())? * F::lit(0.5);
    let t = corrections.try_sub(successes.try_add(failures)?)?;
    Ok(t.try_add(spread)? - F::lit(super::HALF_LN_2PI))
}

/// `bd0(a, n sigmoid(l))`, the deviance of a count `a` from its mean in
/// [`binomial_saddle_point`]. Where `sigmoid(l)` is below about
/// `sqrt(MIN_POSITIVE)` (`l` under half of `ln MIN_POSITIVE`: -354 in
/// `f64`, -43 in `f32`), the mean is far below any count it meets (short
/// of counts past 1e154, or 1e19 in `f32`), and the deviance is `a (ln a -
/// ln y) + y - a` with `ln y = ln n - softplus(-l)`, whose terms do not
/// cancel there. Through the mean `y` itself, `y` underflowed to 0 from
/// `l = -745` on (`Binomial(40, -800)` at one success gave `-inf` for
/// -796.3, with a NaN gradient), and before that the gradient in `y`, `1 -
/// a / y`, passed the largest float on its way to `sigmoid`'s slope (`inf`
/// in the logits of `Binomial(1e15, -700)` at 1e8 successes; in `f32`, of
/// `NegativeBinomial(1e6, 95)` at 10). Elsewhere it is `bd0` of the
/// product, which keeps its digits where `a` is near `y`. Each form is
/// built on its own elements ([`split`](super::gamma::split)).
fn deviance_from_mean<'t, F: Element>(
    a: Var<'t, F>,
    n: Var<'t, F>,
    l: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let below = F::min_positive_value().ln() * F::lit(0.5);
    let inputs = [a, n, l];
    let far = super::gamma::mask_where(&inputs, |v| v[2] < below)?;
    let logs = |v: &[Var<'t, F>]| {
        let (a, n, l) = (v[0], v[1], v[2]);
        let ln_y = n.ln().try_sub((-l).softplus())?;
        a.try_mul(a.ln().try_sub(ln_y)?)?
            .try_add(ln_y.exp())?
            .try_sub(a)
    };
    let product = |v: &[Var<'t, F>]| v[0].bd0(v[1].try_mul(v[2].sigmoid())?);
    super::gamma::split(&inputs, (far.clone(), far), logs, product)
}

/// `ln C(n, k) + k ln p + (n - k) ln q` through `ln B` and two non-positive
/// softplus terms, `ln C` taken as exactly 0 at `k = 0` and `k = n`.
fn binomial_direct<'t, F: Element>(
    n: Var<'t, F>,
    k: Var<'t, F>,
    l: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let rest = n.try_sub(k)?;
    // ln C(n, k) = ln Γ(n + 1) - ln Γ(j + 1) - ln Γ(n - j + 1) from the end
    // j (k or n - k) it is nearer: exactly 0, with the slopes of 0 the
    // mass has there, at k = 0 and k = n
    let from_end = |j: Var<'t, F>, other: Var<'t, F>| -> Result<Var<'t, F>> {
        (other + F::one())
            .lgamma_diff(j)?
            .try_sub((j + F::one()).lgamma())
    };
    // each end's form built on its own elements only
    let low = super::gamma::mask_where(&[k, rest], |v| v[0] <= v[1])?;
    let choose = super::gamma::split(
        &[k, rest],
        (low.clone(), low),
        |v| from_end(v[0], v[1]),
        |v| from_end(v[1], v[0]),
    )?;
    let successes = k.try_mul((-l).softplus())?;
    let failures = rest.try_mul(l.softplus())?;
    choose.try_sub(successes)?.try_sub(failures)
}

/// The binomial distribution: the number of successes in `total_count`
/// trials, each a success with probability `sigmoid(logits)`.
///
/// # Mass
/// `ln P(k) = ln C(n, k) - k softplus(-l) - (n - k) softplus(l)` for `n =
/// total_count` and `l = logits`, with
/// `ln C(n, k) = ln Γ(n + 1) - ln Γ(j + 1) - ln Γ(n - j + 1)` from the end
/// `j` (`k` or `n - k`) nearer it, the first difference taken whole
/// ([`Var::lgamma_diff`]): exactly 0 at `k = 0` and `k = n`, with the
/// slopes of 0 that the mass has there (the slope in `n` at `k = 0` is
/// `-softplus(l)` alone, however small); `-inf` (gradient 0) for a count
/// above `n`. The two softplus terms are non-positive and do not cancel
/// each other, as `k l` and `n softplus(l)` do: near a probability of 1
/// their rounding exceeds the whole log-probability (`P(50 of 50)` at
/// logits 40 is `e^-2.1e-16`, where each of those terms is about 2000).
/// Inside the ends, from `n >= 32` trials on, the mass is taken in Loader's
/// saddle-point form instead, whose terms do not cancel where the sum's of
/// size `k` do: it keeps its digits at any count. Differentiable in the
/// logits, and in `n` and `k` through the continuous extension of `ln Γ`,
/// as TFP's is.
///
/// # Sampling
/// `sample` only (train through a count with the score-function estimator,
/// [`bayes::score`](crate::bayes::score)): Knuth's halving by Beta draws
/// down to 40 trials or fewer, then one uniform per trial; exact, in
/// about `log2 n` Beta draws.
///
/// # Moments
/// Mean `n p`, variance `n p (1 - p)`, `p = sigmoid(l)`.
///
/// # Parameters
/// - `total_count`: a whole number >= 0, finite; `logits`: finite; shapes
///   broadcast. Or `probs` in `(0, 1)`, kept: built from them, its mean,
///   variance, draws and divergence come from them (as the Bernoulli's
///   do), and the mass from the log-odds.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Binomial::from_logits(tape.scalar(4.0), tape.scalar(0.0))?;
/// // C(4, 2) / 2^4
/// assert!((d.log_prob(tape.scalar(2.0))?.item()?.exp() - 0.375).abs() < 1e-12);
/// assert_eq!(d.log_prob(tape.scalar(5.0))?.item()?, f64::NEG_INFINITY);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Binomial<'t, F: Element> {
    total_count: Var<'t, F>,
    logits: Var<'t, F>,
    /// The probabilities it was built from, if it was.
    probs: Option<Var<'t, F>>,
}

impl<'t, F: Element> Binomial<'t, F> {
    /// From the number of trials and the probability of a success (kept,
    /// and its log-odds beside it).
    ///
    /// # Errors
    /// Those of [`from_logits`](Self::from_logits); probabilities outside
    /// `(0, 1)`.
    pub fn from_probs(total_count: Var<'t, F>, probs: Var<'t, F>) -> Result<Self> {
        let logits = super::logits_of_probs("Binomial", probs)?;
        Ok(Binomial {
            probs: Some(probs),
            ..Self::from_logits(total_count, logits)?
        })
    }

    /// From the number of trials and the log-odds of a success.
    ///
    /// # Errors
    /// A `total_count` that is not a whole number >= 0; non-finite
    /// logits; shapes that do not broadcast.
    pub fn from_logits(total_count: Var<'t, F>, logits: Var<'t, F>) -> Result<Self> {
        same_tape("Binomial::from_logits", &total_count, &logits)?;
        check_counts("Binomial", "total_count", &total_count)?;
        check_finite("Binomial", "logits", &logits)?;
        batch_broadcast(
            "Binomial",
            ("total_count", total_count.shape()),
            ("logits", logits.shape()),
        )?;
        Ok(Binomial {
            total_count,
            logits,
            probs: None,
        })
    }

    /// The number of trials.
    pub fn total_count(&self) -> Var<'t, F> {
        self.total_count
    }

    /// The log-odds of a success.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }

    /// The probability of a success: the one it was built from, or the
    /// sigmoid of its logits.
    pub fn probs(&self) -> Var<'t, F> {
        self.probs.unwrap_or_else(|| self.logits.sigmoid())
    }
}

/// A `Beta(a, b)` draw in `f64`, from two Gamma draws' logarithms.
fn beta_draw(a: f64, b: f64, rng: &mut dyn Rng) -> f64 {
    let ln = super::gamma::ln_std_gamma_draws(&Tensor::vector(&[a, b]), rng);
    // G_a / (G_a + G_b) = sigmoid(ln G_a - ln G_b)
    1.0 / (1.0 + (ln[1] - ln[0]).exp())
}

/// A binomial draw of `n` trials with success probability `p` (Knuth,
/// TAOCP vol. 2, 3.4.1): the `a`-th smallest of `n` uniforms is a
/// `Beta(a, n + 1 - a)` draw `x`; the trials below it succeed with
/// probability `p / x` if `p <= x`, and those above it, all of the first
/// `a` being successes, with `(p - x) / (1 - x)` otherwise. Each step
/// halves `n`; the last 40 trials or fewer are drawn one by one.
fn binomial_draw(n: f64, p: f64, rng: &mut dyn Rng) -> f64 {
    let (mut n, mut p, mut k) = (n, p, 0.0);
    while n > 40.0 {
        let a = (n / 2.0).floor() + 1.0;
        let b = n + 1.0 - a;
        let x = beta_draw(a, b, rng);
        if x >= p {
            n = a - 1.0;
            p /= x;
        } else {
            k += a;
            n = b - 1.0;
            p = (p - x) / (1.0 - x);
        }
    }
    for _ in 0..n as u32 {
        if open_uniform(rng) < p {
            k += 1.0;
        }
    }
    k
}

/// KL(Binomial || Binomial) of two distributions with the same total count
/// `n` at every position: `n` times the Bernoulli KL of their logits (the
/// counts are sums of `n` independent trials, and KL adds over independent
/// parts). Where the counts differ the divergence has no closed form (or
/// is `+inf`, where the posterior's count is the larger): an error naming
/// the first such position. The counts get no gradient (the divergence is
/// defined only where they are equal, so it has no slope in either alone).
pub(crate) fn kl_binomial<'t, F: Element>(
    q: &Binomial<'t, F>,
    p: &Binomial<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.logits, &p.logits)?;
    let shape = batch_broadcast(
        "Binomial",
        ("the posterior's parameters", q.batch_shape()),
        ("the prior's parameters", p.batch_shape()),
    )?;
    let (nq, np) = (
        q.total_count.value().broadcast_to(&shape)?,
        p.total_count.value().broadcast_to(&shape)?,
    );
    if let Some(i) = nq.data().iter().zip(np.data()).position(|(a, b)| a != b) {
        return Err(Error::invalid(
            "kl_divergence",
            format!(
                "KL(Binomial || Binomial) is in closed form only where the two total counts are \
                 equal; at position {i} they are {} and {}",
                nq.data()[i],
                np.data()[i]
            ),
        ));
    }
    // one trial's divergence, from the probabilities of a side that kept them
    let trial = |b: &Binomial<'t, F>| match b.probs {
        Some(probs) => super::Bernoulli::from_probs(probs),
        None => super::Bernoulli::from_logits(b.logits),
    };
    let trials = super::bernoulli::kl_bernoulli(&trial(q)?, &trial(p)?)?;
    trials.try_mul(q.tape().constant(nq))
}

impl<'t, F: Element> Distribution<'t, F> for Binomial<'t, F> {
    super::kl::builtin_kl!(Binomial => kl_binomial);

    fn name(&self) -> &'static str {
        "Binomial"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape()
    }
    fn log_prob(&self, k: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Binomial::log_prob", &self.logits, &k)?;
        check_counts("Binomial", "value", &k)?;
        let shape = batch_broadcast(
            "Binomial",
            ("value", k.shape()),
            ("batch", self.batch_shape()),
        )?;
        let k = k.broadcast_to(&shape)?;
        let n_values = self.total_count.value().broadcast_to(&shape)?;
        let (n, l) = (self.total_count, self.logits);
        on_support(
            "Binomial",
            k,
            |i, v| v <= n_values.data()[i],
            F::zero(),
            |k| {
                let inputs = [n, k, l];
                let interior = super::gamma::mask_where(&inputs, |v| {
                    v[1] > F::zero() && v[1] < v[0] && v[0] >= F::lit(SADDLE_POINT_FROM)
                })?;
                let saddle = |v: &[Var<'t, F>]| {
                    let (n, k, l) = (v[0], v[1], v[2]);
                    binomial_saddle_point(n, k, n.try_sub(k)?, l)
                };
                super::gamma::split(&inputs, (interior.clone(), interior), saddle, |v| {
                    binomial_direct(v[0], v[1], v[2])
                })
            },
        )
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(no_rsample("Binomial"))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, draws: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let shape = self.batch_shape();
        let n = self.total_count.value().broadcast_to(&shape)?;
        let n = F::as_f64s(n.data());
        let l = wide_log_odds(self.logits, self.probs, &shape)?;
        super::repeat_batches("Binomial", draws, &shape, |out| {
            out.extend(n.iter().zip(l.iter()).map(|(&n, &l)| {
                // count the rarer outcome, whose probability keeps its digits
                match l <= 0.0 {
                    true => F::lit(binomial_draw(n, 1.0 / (1.0 + (-l).exp()), rng)),
                    false => F::lit(n - binomial_draw(n, 1.0 / (1.0 + l.exp()), rng)),
                }
            }));
            Ok(())
        })
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Binomial",
            what: "a closed-form entropy",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        self.total_count.try_mul(self.probs())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        let (p, q) = match self.probs {
            Some(p) => (p, -p + F::one()),
            None => (self.logits.sigmoid(), (-self.logits).sigmoid()),
        };
        self.total_count.try_mul(p)?.try_mul(q)
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.total_count.shape(), &self.logits.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The geometric distribution: the number of failures before the first
/// success, each trial a success with probability `p = sigmoid(logits)`
/// (TFP's and PyTorch's convention; counts `0, 1, 2, ...`).
///
/// # Mass
/// `ln P(k) = k ln(1 - p) + ln p = -k softplus(l) - softplus(-l)` for
/// `l = logits`, differentiable in the logits.
///
/// # Sampling
/// `sample` only (a count has no reparameterization; train through it with
/// the score-function estimator, [`bayes::score`](crate::bayes::score)):
/// `floor(E / softplus(l))` for a standard exponential draw `E`. A count
/// beyond the largest float (logits below about -88 in `f32`) is an
/// error rather than `+inf`.
///
/// # Moments
/// Mean `e^-l = (1 - p)/p`, variance `e^-l (1 + e^-l)`; entropy
/// `softplus(-l) + e^-l softplus(l)`, whose second term (`ln(1 + u)/u` for
/// `u = e^l`, at most 1) is taken as `e^(ln softplus(l) - l)` with `ln
/// softplus(l)` from its series `l - e^l / 2` below `l = -30`: finite for
/// every logit (`e^-l` alone overflows where `softplus(l)` underflows).
///
/// # Parameters
/// - `logits`: finite; or `probs` in `(0, 1)`, kept: built from them, its
///   mass, entropy (`-((1 - p) / p) ln(1 - p) - ln p`), mean `(1 - p) /
///   p`, variance `(1 - p) / p²` and draws come from them, and the
///   divergence from the log-odds, in `f32` taken in `f64` from the
///   probabilities (a logit's rounding, about `|l| ε`, is a relative error
///   of `p`: through it a mean at `p = 2.9e-4` was 13 ulp off in `f32`).
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// // p = 1/2: P(k) = 2^-(k + 1)
/// let d = Geometric::from_logits(tape.scalar(0.0))?;
/// let p2 = d.log_prob(tape.scalar(2.0))?.item()?.exp();
/// assert!((p2 - 0.125).abs() < 1e-12);
/// assert_eq!(d.mean()?.item()?, 1.0);
/// assert!((d.entropy()?.item()? - 2.0 * 2f64.ln()).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Geometric<'t, F: Element> {
    logits: Var<'t, F>,
    /// The probabilities it was built from, if it was.
    probs: Option<Var<'t, F>>,
}

impl<'t, F: Element> Geometric<'t, F> {
    /// From the probability of a success (kept, and its log-odds beside
    /// it).
    ///
    /// # Errors
    /// Probabilities outside `(0, 1)` (at 1 the count is always 0, whose
    /// log-odds are infinite).
    pub fn from_probs(probs: Var<'t, F>) -> Result<Self> {
        let logits = super::logits_of_probs("Geometric", probs)?;
        Ok(Geometric {
            probs: Some(probs),
            ..Self::from_logits(logits)?
        })
    }

    /// From the log-odds of a success.
    ///
    /// # Errors
    /// Non-finite logits.
    pub fn from_logits(logits: Var<'t, F>) -> Result<Self> {
        check_finite("Geometric", "logits", &logits)?;
        Ok(Geometric {
            logits,
            probs: None,
        })
    }

    /// The log-odds of a success.
    pub fn logits(&self) -> Var<'t, F> {
        self.logits
    }

    /// The probability of a success: the one it was built from, or the
    /// sigmoid of its logits.
    pub fn probs(&self) -> Var<'t, F> {
        self.probs.unwrap_or_else(|| self.logits.sigmoid())
    }
}

/// From this logit down, `ln softplus(l)` is taken as `l - e^l / 2` (the
/// rest of its series, `5 e^(2l) / 24`, is below 10⁻²⁶ there).
const LN_SOFTPLUS_SERIES: f64 = -30.0;

/// `ln softplus(l) = ln ln(1 + e^l)`, finite for every finite `l` (where
/// `softplus(l)` underflows to 0, below about -745 in `f64` and -104 in
/// `f32`, its logarithm is still `l` less a little).
fn ln_softplus<'t, F: Element>(l: Var<'t, F>) -> Result<Var<'t, F>> {
    let series = super::gamma::mask_where(&[l], |v| v[0] < F::lit(LN_SOFTPLUS_SERIES))?;
    super::gamma::split(
        &[l],
        (series.clone(), series),
        |v| Ok(v[0] - v[0].exp() * F::lit(0.5)),
        |v| Ok(v[0].softplus().ln()),
    )
}

impl<'t, F: Element> Distribution<'t, F> for Geometric<'t, F> {
    super::kl::builtin_kl!(Geometric => kl_geometric);

    fn name(&self) -> &'static str {
        "Geometric"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.logits.tape()
    }
    fn log_prob(&self, k: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Geometric::log_prob", &self.logits, &k)?;
        check_counts("Geometric", "value", &k)?;
        batch_broadcast(
            "Geometric",
            ("value", k.shape()),
            ("batch", self.batch_shape()),
        )?;
        if let Some(p) = self.probs {
            // k ln(1 - p) + ln p
            return k.try_mul((-p).log1p())?.try_add(p.ln());
        }
        let l = self.logits;
        let failures = k.try_mul(l.softplus())?;
        Ok(-(failures.try_add((-l).softplus())?))
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(no_rsample("Geometric"))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let l = self.logits.value();
        let logits = F::as_f64s(l.data());
        // softplus(l) = -ln(1 - p), from the probabilities where kept
        let softplus: Vec<f64> = match self.probs {
            Some(p) => F::as_f64s(p.value().data())
                .iter()
                .map(|&p| -(-p).ln_1p())
                .collect(),
            None => logits
                .iter()
                .map(|&l| crate::autodiff::ops::softplus(l))
                .collect(),
        };
        super::repeat_batches("Geometric", n, l.shape(), |out| {
            for (&l, &softplus) in logits.iter().zip(&softplus) {
                let k = F::lit((-open_uniform(rng).ln() / softplus).floor());
                if !k.is_finite() {
                    return Err(Error::invalid(
                        "Geometric::sample",
                        format!(
                            "a draw overflows (logits {}): its counts are beyond any float",
                            crate::error::Number(l)
                        ),
                    ));
                }
                out.push(k);
            }
            Ok(())
        })
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        if let Some(p) = self.probs {
            // ((1 - p) / p) (-ln(1 - p)) - ln p, two terms of one sign, whose
            // slopes' parts of size 1/p cancel to `ln(1 - p) / p²` (over the
            // one quotient by `p`, parts of size 1/p² did: 10 ulp in `f32`
            // at p = 1.5e-5)
            let odds = (-p + F::one()).try_div(p)?;
            return odds.try_mul(-(-p).log1p())?.try_sub(p.ln());
        }
        let l = self.logits;
        let ratio = ln_softplus(l)?.try_sub(l)?.exp();
        (-l).softplus().try_add(ratio)
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        if let Some(p) = self.probs {
            return (-p + F::one()).try_div(p);
        }
        Ok((-self.logits).exp())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        if let Some(p) = self.probs {
            return (-p + F::one()).try_div(p)?.try_div(p);
        }
        let odds = (-self.logits).exp();
        odds.try_mul(odds + F::one())
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.logits.shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(Geometric(l1) || Geometric(l2))
/// `= softplus(-l2) - softplus(-l1) + e^-l1 (softplus(l2) - softplus(l1))`,
/// one formula in `f64` with its partial derivatives ([`GeometricDivergence`])
/// where `|l1|` and `|l2 - l1|` are at most 700, and beyond them the tape's
/// formula ([`kl_geometric_of`]).
pub(crate) fn kl_geometric<'t, F: Element>(
    q: &Geometric<'t, F>,
    p: &Geometric<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.logits, &p.logits)?;
    // a side built from probabilities in `f32`: its logits in `f64` (the
    // divergence was up to 117 ulp off through the rounded ones)
    kl_from_kept_probs!("kl_geometric", kl_geometric, Geometric, q, p);
    pointwise::apply(GeometricDivergence, &[q.logits, p.logits])
}

/// `softplus(a) - softplus(b) = ln1p(σ(b) expm1(a - b))` for `a >= b`, and
/// the negated difference the other way round (so that `ln1p` never sees
/// an argument near -1): with the relative accuracy of `a - b` where the
/// two are close (the difference of the two softplus values keeps only
/// their absolute one).
#[inline(always)]
fn softplus_difference(a: f64, b: f64) -> f64 {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    if a >= b {
        (sigmoid(b) * (a - b).exp_m1()).ln_1p()
    } else {
        -(sigmoid(a) * (b - a).exp_m1()).ln_1p()
    }
}

/// KL(Geometric(l1) || Geometric(l2)) of `[l1, l2]`: the Bernoulli
/// divergence between the same logits divided by the first's success
/// probability, `(1 + e^-l1) KL(Bernoulli(l1) || Bernoulli(l2))` (the
/// expected number of trials times the divergence of one), which
/// [`kl_logits`] takes in terms of the size of the result. Summed from its
/// two differences of softplus values, whose terms of the size of `l1 -
/// l2` cancel, it kept only their absolute accuracy (3.6e-4 of the value
/// off at logits 1 and 1.000001; the tape's formula, which served beyond
/// logits of ±30, was 8e4 times the value off at 33.52 and 2.6e-10 apart,
/// against mpmath). Its partials:
/// `∂l1 = -e^-l1 (softplus(l2) - softplus(l1))` ([`softplus_difference`])
/// and `∂l2 = e^-l1 σ(l2) - σ(-l2)`, as `-e^-l1 σ(l2) expm1(l1 - l2)` where
/// `l1 - l2 <= 1` (beyond, the difference does not cancel and the product
/// could be `0 · inf`). Where `|l1|` or `|l2 - l1|` exceeds 700 (where
/// `e^-l1` or `expm1(l2 - l1)` leaves the range) the tape's formula
/// ([`kl_geometric_of`]).
#[derive(Clone, Copy)]
struct GeometricDivergence;

impl Pointwise<2> for GeometricDivergence {
    const NAME: &'static str = "kl_geometric";
    const KEYED: usize = 2;
    type Pre = ();
    const FALLBACK: Option<Fallback> = Some(|v| kl_geometric_of(v[0], v[1]));

    fn covers(v: &[f64; 2]) -> bool {
        v[0].abs() <= 700.0 && (v[1] - v[0]).abs() <= 700.0
    }

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, f64::INFINITY, |[l1, l2]| {
            if !Self::covers(&[l1, l2]) {
                // (the fallback's: written over afterwards)
                return Some((0.0, [0.0; 2]));
            }
            let (e, tail) = ((-l1).exp(), softplus_difference(l2, l1));
            let value = (1.0 + e) * kl_logits(l1, l2);
            let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
            // (the difference cancels only where l2 is within 1 above l1 or below it)
            let slope = if l1 - l2 <= 1.0 {
                -(e * sigmoid(l2) * (l1 - l2).exp_m1())
            } else {
                e * sigmoid(l2) - sigmoid(-l2)
            };
            Some((value, [-(e * tail), slope]))
        });
    }
}

/// The tape's KL(Geometric(l1) || Geometric(l2)), with the last term taken
/// as `g(l1) expm1(ln softplus(l2) - ln softplus(l1))` for `g(l) = e^(ln
/// softplus(l) - l)` ([`ln_softplus`]): finite wherever the divergence is
/// (`e^-l1` alone overflows where `softplus(l1)` underflows, and their
/// product is about 1), and `+inf` where it is beyond the largest float.
fn kl_geometric_of<'t, F: Element>(l1: Var<'t, F>, l2: Var<'t, F>) -> Result<Var<'t, F>> {
    let (s1, s2) = (ln_softplus(l1)?, ln_softplus(l2)?);
    let tail = s1.try_sub(l1)?.exp().try_mul(s2.try_sub(s1)?.expm1())?;
    (-l2).softplus().try_sub((-l1).softplus())?.try_add(tail)
}
