//! The von Mises distribution: the circle's counterpart of the normal
//! distribution, for angles (directions, phases, times of day).

use super::pointwise::{self, LANES, Lanes, Pointwise, each_lane};
use super::{
    Distribution, batch_broadcast, check_divisor, check_finite, open_uniform, same_tape,
    sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::Result;
use crate::kernels::special::{bessel_ratio, legendre_rule, remainder_integrals};
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;
use std::f64::consts::PI;
use std::sync::LazyLock;

/// `ln 2π`.
const LN_TWO_PI: f64 = 1.837_877_066_409_345_5;

/// The von Mises distribution on the circle, with location `μ` and
/// concentration `κ` (TFP's and PyTorch's `VonMises(loc, concentration)`).
///
/// # Density
/// `ln p(x) = κ (cos(x - μ) - 1) - ln(2π I₀(κ) e^-κ)` for every real `x`
/// (the density has period `2π`), with `cos(x - μ) - 1` as `-2 sin²((x -
/// μ)/2)` and the Bessel function scaled by `e^-κ`, so that neither
/// overflows nor loses its digits near the location for a large `κ`.
///
/// # Sampling
/// Best and Fisher's rejection sampler, in `[-π, π)`. `rsample` gives the
/// draws implicit gradients (as TFP's): `1` in the location and, in the
/// concentration, `dθ/dκ = -(∂F/∂κ) / p(θ)` at the angle `θ` from the
/// location, with `∂F/∂κ` by Gauss–Legendre quadrature over whichever
/// side of `θ` keeps its digits ([`VonMises::reparameterize`]).
///
/// # Moments and entropy
/// `mean` is the location (the circular mean) and `variance` the circular
/// variance `1 - A(κ)`, `A = I₁ / I₀`, as in TFP. The entropy is `ln(2π
/// I₀(κ)) - κ A(κ)`, taken as `ln 2π + ln(I₀(κ) e^-κ) + κ (1 - A(κ))`.
/// KL(VonMises || VonMises) is built in: `ln I₀(κ2) - ln I₀(κ1) +
/// A(κ1) (κ1 - κ2 cos(μ1 - μ2))`, written as a sum of terms that each
/// vanish where the two coincide.
///
/// # Parameters
/// - `loc`: finite; `concentration`: finite, at least the smallest normal
///   number; shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = VonMises::new(tape.var(Tensor::scalar(0.5)), tape.scalar(2.0))?;
/// // periodic in the value
/// let at = |x: f64| d.log_prob(tape.scalar(x)).and_then(|lp| lp.item());
/// assert!((at(1.0)? - at(1.0 + 2.0 * std::f64::consts::PI)?).abs() < 1e-12);
/// // a draw's gradient in the location is 1
/// let x = d.rsample(&mut rand::rng())?;
/// assert_eq!(x.backward()?.get(d.loc()).unwrap().item()?, 1.0);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct VonMises<'t, F: Element> {
    loc: Var<'t, F>,
    concentration: Var<'t, F>,
}

impl<'t, F: Element> VonMises<'t, F> {
    /// From a location (an angle) and a concentration.
    ///
    /// # Errors
    /// A non-finite location; a concentration that is not finite or is
    /// below the smallest normal number; shapes that do not broadcast.
    pub fn new(loc: Var<'t, F>, concentration: Var<'t, F>) -> Result<Self> {
        same_tape("VonMises::new", &loc, &concentration)?;
        check_finite("VonMises", "loc", &loc)?;
        check_divisor("VonMises", "concentration", &concentration)?;
        batch_broadcast(
            "VonMises",
            ("loc", loc.shape()),
            ("concentration", concentration.shape()),
        )?;
        Ok(VonMises { loc, concentration })
    }

    /// The location `μ`.
    pub fn loc(&self) -> Var<'t, F> {
        self.loc
    }

    /// The concentration `κ`.
    pub fn concentration(&self) -> Var<'t, F> {
        self.concentration
    }

    /// Given draws `x` of this distribution (batch shape, or with leading
    /// sample axes), `x` as a var whose gradients are `1` in the location
    /// and, in the concentration, the implicit one at a fixed value of the
    /// distribution function (of the angle `x - μ` on `[-π, π)`): what
    /// `rsample` backpropagates.
    ///
    /// # Errors
    /// Values that are not finite; shapes that do not broadcast.
    pub fn reparameterize(&self, x: Tensor<F>) -> Result<Var<'t, F>> {
        let x = self.tape().constant(x);
        check_finite("VonMises", "value", &x)?;
        batch_broadcast(
            "VonMises",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        pointwise::apply(VonMisesDraw, &[self.loc, self.concentration, x])
    }
}

/// `1 - cos d = 2 sin²(d/2)`, with its digits for a small `d`.
#[inline(always)]
fn one_less_cos(d: f64) -> f64 {
    let s = (0.5 * d).sin();
    2.0 * s * s
}

/// The von Mises log-density of `[μ, κ, x]`: `-κ (1 - cos(x - μ)) - ln 2π -
/// ln(I₀(κ) e^-κ)`, `∂μ = κ sin(x - μ) = -∂x`, `∂κ = cos(x - μ) - A(κ)`
/// (as `(1 - A) - (1 - cos(x - μ))`).
#[derive(Clone, Copy)]
struct VonMisesLogDensity;

/// `ln(I₀(κ) e^-κ)` and `1 - A(κ)` of each lane's concentration: once for
/// all positions where the parameters are single values (the log-density
/// of a million `f32` values with its gradient, a single `κ`, took 61 and
/// 162 ns a value at `κ = 2` and `20` with [`bessel_ratio`] taken at every
/// position, 10 ns with it once; AMD EPYC, two threads).
#[inline(always)]
fn bessel_lanes(v: &Lanes) -> [Lanes; 2] {
    let mut out = [[0.0; LANES]; 2];
    for (l, &k) in v.iter().enumerate() {
        let [ln_i0, _, one_less_a, _] = bessel_ratio(k);
        (out[0][l], out[1][l]) = (ln_i0, one_less_a);
    }
    out
}

impl Pointwise<3> for VonMisesLogDensity {
    const NAME: &'static str = "von_mises_log_density";
    const KEYED: usize = 2;
    type Pre = [Lanes; 2];

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> [Lanes; 2] {
        bessel_lanes(&v[1])
    }

    fn eval(v: &[Lanes; 3], pre: &[Lanes; 2], out: &mut Lanes, d: &mut [Lanes; 3]) {
        for l in 0..LANES {
            let ([m, k, x], [ln_i0, one_less_a]) = (v.map(|v| v[l]), pre.map(|p| p[l]));
            let (dx, c) = (x - m, one_less_cos(x - m));
            let slope = k * dx.sin();
            out[l] = -(k * c) - LN_TWO_PI - ln_i0;
            (d[0][l], d[1][l], d[2][l]) = (slope, one_less_a - c, -slope);
        }
    }
}

/// The von Mises entropy of `[κ]`, `ln 2π + ln(I₀(κ) e^-κ) + κ (1 -
/// A(κ))`, and its derivative `-κ A'(κ)`.
#[derive(Clone, Copy)]
struct VonMisesEntropy;

impl Pointwise<1> for VonMisesEntropy {
    const NAME: &'static str = "von_mises_entropy";
    const KEYED: usize = 1;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 1]) {}

    fn eval(v: &[Lanes; 1], _: &(), out: &mut Lanes, d: &mut [Lanes; 1]) {
        each_lane(v, out, d, f64::NAN, |[k]| {
            let [ln_i0, _, one_less_a, slope] = bessel_ratio(k);
            Some((LN_TWO_PI + ln_i0 + k * one_less_a, [-(k * slope)]))
        });
    }
}

/// The circular variance of `[κ]`, `1 - A(κ)`, and its derivative `-A'(κ)`.
#[derive(Clone, Copy)]
struct VonMisesVariance;

impl Pointwise<1> for VonMisesVariance {
    const NAME: &'static str = "von_mises_variance";
    const KEYED: usize = 1;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 1]) {}

    fn eval(v: &[Lanes; 1], _: &(), out: &mut Lanes, d: &mut [Lanes; 1]) {
        each_lane(v, out, d, f64::NAN, |[k]| {
            let [_, _, one_less_a, slope] = bessel_ratio(k);
            Some((one_less_a, [-slope]))
        });
    }
}

/// KL(VonMises || VonMises) of `[μ1, κ1, μ2, κ2]`, with `Δ = μ1 - μ2`, `A1
/// = A(κ1)` and `c = 1 - cos Δ`: `B + κ2 A1 c`, where `B = ln I₀(κ2) - ln
/// I₀(κ1) - A1 (κ2 - κ1)` compares the concentrations. `B` is taken as
/// `(ln I₀(κ2) e^-κ2 - ln I₀(κ1) e^-κ1) + (κ2 - κ1)(1 - A1)`, except where
/// `|κ2 - κ1|` is at most the larger of `min(κ1, κ2)/8` and `1/4` (and
/// both are below 1e100, beyond which `A'` and `(κ2 - κ1)²` leave the
/// range): there
/// the two terms agree in most of their digits (2.5e8 times the value
/// off, against mpmath, at `κ = 0.0868` and `κ2 - κ1 = 1.4e-13`, and of
/// either sign), and `B` is the remainder `(κ2 - κ1)² ∫₀¹ (1 - u) A'(κ1 +
/// u (κ2 - κ1)) du` ([`remainder_integrals`]; `A' > 0`, and the zeros of
/// `I₀` lie on the imaginary axis beyond `±2.4i`). `∂μ1 = A1 κ2 sin Δ =
/// -∂μ2`, `∂κ1 = A'(κ1) ((κ1 - κ2) + κ2 c)` and `∂κ2 = (A2 - A1) + A1 c`,
/// with `A2 - A1` where `B` is a remainder as `(κ2 - κ1) ∫₀¹ A'(κ1 + u
/// (κ2 - κ1)) du` (from the same values of `A'`, [`remainder_integrals`]),
/// and elsewhere as the difference of `A` where `A1 < 1/2` and of `1 - A`
/// beyond (each then the smaller, with the smaller rounding error).
#[derive(Clone, Copy)]
struct VonMisesDivergence;

impl Pointwise<4> for VonMisesDivergence {
    const NAME: &'static str = "kl_von_mises";
    const KEYED: usize = 4;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        each_lane(v, out, d, f64::INFINITY, |[m1, k1, m2, k2]| {
            let [ln1, a1, one_less_a1, slope1] = bessel_ratio(k1);
            let [ln2, a2, one_less_a2, _] = bessel_ratio(k2);
            let (dm, c) = (m1 - m2, one_less_cos(m1 - m2));
            let delta = k2 - k1;
            // (the zeros of I₀ nearest to [κ1, κ2] are at least max(κ, 2) away)
            let reach = delta.abs() / k1.min(k2).max(2.0);
            let (concentrations, spread) = if delta == 0.0 {
                (0.0, 0.0)
            } else if reach <= 0.125 && k1.max(k2) < 1e100 {
                let [[weighted], [whole]] =
                    remainder_integrals(reach, |u| [bessel_ratio(k1 + u * delta)[3]]);
                (delta * delta * weighted, delta * whole)
            } else {
                // A2 - A1 from whichever of A and 1 - A is the smaller
                let spread = if a1 < 0.5 {
                    a2 - a1
                } else {
                    one_less_a1 - one_less_a2
                };
                ((ln2 - ln1) + delta * one_less_a1, spread)
            };
            let value = concentrations + k2 * a1 * c;
            let turn = a1 * k2 * dm.sin();
            let partials = [turn, slope1 * ((k1 - k2) + k2 * c), -turn, spread + a1 * c];
            Some((value, partials))
        });
    }
}

/// KL(VonMises || VonMises), one value per batch element ([`VonMises`]).
pub(crate) fn kl_von_mises<'t, F: Element>(
    q: &VonMises<'t, F>,
    p: &VonMises<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        VonMisesDivergence,
        "VonMises",
        (q.batch_shape(), p.batch_shape()),
        [q.loc, q.concentration, p.loc, p.concentration],
    )
}

/// One draw of the angle from the location, by Best and Fisher's (1979)
/// rejection sampler for concentration `k`, in `[-π, π]`. Its constants
/// are taken in forms without cancellation: with `s = √(1 + 4κ²)` and
/// `τ = 1 + s`, `ρ = (2κ / (s + 1)) (τ / (τ + √(2τ)))` (for a small `κ`,
/// where `τ - √(2τ)` cancels) and `r - 1 = (1 - ρ)² / 2ρ`, with
/// `1 - ρ = (√(2τ) - 4κ / (2κ - 1 + s)) / 2κ` for a large one; then
/// `1 - f = (r - 1)(1 - z) / (r + z)` and the angle `2 asin(√((1 - f)/2))`,
/// which keeps its digits where it is small (`κ` large).
fn von_mises_angle(k: f64, rng: &mut dyn Rng) -> f64 {
    let s = (2.0 * k).hypot(1.0);
    let tau = 1.0 + s;
    let root = (2.0 * tau).sqrt();
    let rho = (2.0 * k / (s + 1.0)) * (tau / (tau + root));
    let one_less_rho = if k > 1.0 {
        (root - 4.0 * k / (2.0 * k - 1.0 + s)) / (2.0 * k)
    } else {
        1.0 - rho
    };
    let r_less_one = one_less_rho * one_less_rho / (2.0 * rho);
    let r = 1.0 + r_less_one;
    loop {
        let (u1, u2, u3) = (open_uniform(rng), open_uniform(rng), open_uniform(rng));
        let half = 0.5 * PI * u1;
        // z = cos(π u1), 1 - z = 2 sin²(π u1 / 2)
        let (z, one_less_z) = ((PI * u1).cos(), 2.0 * half.sin() * half.sin());
        let one_less_f = r_less_one * one_less_z / (r + z);
        let c = k * (r_less_one + one_less_f);
        if c * (2.0 - c) - u2 > 0.0 || (c / u2).ln() + 1.0 - c >= 0.0 {
            let angle = 2.0 * (0.5 * one_less_f).min(1.0).sqrt().asin();
            return if u3 < 0.5 { -angle } else { angle };
        }
    }
}

/// The 32-point Gauss–Legendre rule on `[-1, 1]` ([`legendre_rule`], exact
/// for polynomials of degree 63).
static GAUSS_LEGENDRE: LazyLock<[(f64, f64); 32]> = LazyLock::new(legendre_rule::<32>);

/// `∫_lo^hi f` by [`GAUSS_LEGENDRE`].
#[inline(always)]
fn gauss_legendre(lo: f64, hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    let (half, mid) = (0.5 * (hi - lo), 0.5 * (hi + lo));
    half * GAUSS_LEGENDRE
        .iter()
        .map(|&(x, w)| w * f(mid + half * x))
        .sum::<f64>()
}

/// The implicit derivative `dθ/dκ = -(∂F/∂κ) / p(θ)` of a draw at angle
/// `θ` from the location (`F` the distribution function, `θ` held at the
/// same `F`), given `1 - A(κ)`. With `∂p/∂κ = (cos t - A) p(t)` and `F(0)
/// = 1/2` for every `κ`, `∂F/∂κ` is `∫₀^θ ∂p/∂κ`, or `-∫_θ^π ∂p/∂κ` (the
/// whole half circle's is 0), so that `dθ/dκ` is `-∫₀^θ h` or `∫_θ^π h`
/// with `h(t) = (cos t - A) e^(κ (cos t - cos θ))`, `cos t - A = (1 - A) -
/// 2 sin²(t/2)` and the exponent `2κ (sin²(θ/2) - sin²(t/2))` (no
/// cancellation where `κ` is large and the angles small). The head
/// integral serves where `2κ sin²(θ/2) <= 2` (`h` grows by at most `e²`
/// towards 0); beyond, the tail, over `[θ, π]` by Gauss–Legendre where
/// `h` falls by at most `e^50` there, else over `w = κ (cos θ - cos t)` in
/// `[0, 50]` (the rest is below `e^-50` of it), where it is `∫ e^-w (cos t
/// - A) / (κ sin t) dw`, in four pieces. Odd in `θ`.
fn von_mises_angle_slope(theta: f64, k: f64, one_less_a: f64) -> f64 {
    let (a, sign) = (theta.abs(), theta.signum());
    let half_sin = |t: f64| {
        let s = (0.5 * t).sin();
        s * s
    };
    let h0 = half_sin(a);
    let h = |t: f64| {
        let ht = half_sin(t);
        (one_less_a - 2.0 * ht) * (2.0 * k * (h0 - ht)).exp()
    };
    if 2.0 * k * h0 <= 2.0 {
        return -sign * gauss_legendre(0.0, a, h);
    }
    let reach = k * (1.0 + a.cos());
    if reach <= 50.0 {
        return sign * gauss_legendre(a, PI, h);
    }
    // cos t = cos θ - w/κ; 1 - cos t = 2 sin²(θ/2) + w/κ
    let f = |w: f64| {
        let one_less_cos = 2.0 * h0 + w / k;
        let sin = (one_less_cos * (2.0 - one_less_cos)).sqrt();
        (-w).exp() * (one_less_a - one_less_cos) / (k * sin)
    };
    let tail: f64 = [(0.0, 2.0), (2.0, 8.0), (8.0, 20.0), (20.0, 50.0)]
        .iter()
        .map(|&(lo, hi)| gauss_legendre(lo, hi, f))
        .sum();
    sign * tail
}

/// A von Mises draw `x` of `[μ, κ, x]` held at its value, with `∂μ = 1`
/// and `∂κ` the implicit derivative at the angle `θ = x - μ` wrapped into
/// `[-π, π)` ([`von_mises_angle_slope`]).
#[derive(Clone, Copy)]
struct VonMisesDraw;

impl Pointwise<3> for VonMisesDraw {
    const NAME: &'static str = "von_mises_draw";
    const KEYED: usize = 2;
    type Pre = [Lanes; 2];

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> [Lanes; 2] {
        bessel_lanes(&v[1])
    }

    fn eval(v: &[Lanes; 3], pre: &[Lanes; 2], out: &mut Lanes, d: &mut [Lanes; 3]) {
        for l in 0..LANES {
            let [m, k, x] = v.map(|v| v[l]);
            let slope = von_mises_angle_slope(wrap_angle(x - m), k, pre[1][l]);
            out[l] = x;
            (d[0][l], d[1][l], d[2][l]) = (1.0, slope, 0.0);
        }
    }
}

/// `x` wrapped into `[-π, π)`; an `x` already there is kept as it is (the
/// round trip through `x + π` would round a small angle to the spacing of
/// the floats near π: 3e-5 came back 1.5e-11 off).
fn wrap_angle(x: f64) -> f64 {
    if (-PI..PI).contains(&x) {
        return x;
    }
    let y = (x + PI).rem_euclid(2.0 * PI) - PI;
    if y >= PI { -PI } else { y }
}

impl<'t, F: Element> Distribution<'t, F> for VonMises<'t, F> {
    super::kl::builtin_kl!(VonMises => kl_von_mises);

    fn name(&self) -> &'static str {
        "VonMises"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.loc.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("VonMises::log_prob", &self.loc, &x)?;
        check_finite("VonMises", "value", &x)?;
        batch_broadcast(
            "VonMises",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        pointwise::apply(VonMisesLogDensity, &[self.loc, self.concentration, x])
    }
    /// [`sample_n`](Distribution::sample_n)'s draws through
    /// [`reparameterize`](VonMises::reparameterize).
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        self.reparameterize(self.sample_n(n, rng)?)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    /// Best and Fisher's sampler per draw, in `f64`, each draw wrapped into
    /// `[-π, π)`.
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::check_draw_count("VonMises", n)?;
        let batch = self.batch_shape();
        let shape = sample_shape(n, &batch);
        let loc = self.loc.value().broadcast_to(&batch)?;
        let k = self.concentration.value().broadcast_to(&batch)?;
        let (loc, k) = (F::as_f64s(loc.data()), F::as_f64s(k.data()));
        let per = loc.len().max(1);
        Ok(Tensor::from_fn(&shape, |i| {
            let j = i % per;
            F::lit(wrap_angle(loc[j] + von_mises_angle(k[j], rng)))
        }))
    }
    /// `ln 2π + ln(I₀(κ) e^-κ) + κ (1 - A(κ))`.
    fn entropy(&self) -> Result<Var<'t, F>> {
        let h = pointwise::apply(VonMisesEntropy, &[self.concentration])?;
        h.broadcast_to(&self.batch_shape())
    }
    /// The location (the circular mean).
    fn mean(&self) -> Result<Var<'t, F>> {
        self.loc.broadcast_to(&self.batch_shape())
    }
    /// The circular variance `1 - A(κ)`.
    fn variance(&self) -> Result<Var<'t, F>> {
        let v = pointwise::apply(VonMisesVariance, &[self.concentration])?;
        v.broadcast_to(&self.batch_shape())
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.loc.shape(), &self.concentration.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}
