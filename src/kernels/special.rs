//! Special functions in f64: `ln Γ`, digamma and trigamma, the incomplete
//! gamma and beta functions, and the implicit derivatives of their draws.
//!
//! - Near 1 and 2, `ln Γ` comes from its Taylor series in `z = x - 1`
//!   (`-γ z + Σ (-1)^k ζ(k) z^k / k`), so it keeps its relative accuracy
//!   where it crosses zero.
//! - Elsewhere for `x > 0`, the recurrence `Γ(x + 1) = x Γ(x)` shifts `x` to
//!   at least 10, where Stirling's series is accurate to double precision.
//! - Negative non-integers use the reflection formulas.
//! - Over many values, `ln Γ`, ψ, ψ' and their corrections are computed
//!   lane by lane in operations that vectorize (`lgamma_lanes`, ...): ten
//!   fixed steps of the recurrence, whose products and sums of reciprocals
//!   are taken in trees, and logarithms from `ln_lanes`. They agree with
//!   the scalar functions to their accuracy, not bit for bit (the scalar
//!   loops take only the steps a value needs, faster for one value).

use std::f64::consts::PI;

use crate::kernels::parallel::{Tier, tier, vectorized};

/// The Euler–Mascheroni constant `γ` (the mean of the standard Gumbel).
pub(crate) const EULER: f64 = 0.577_215_664_901_532_9;
/// `ln(2 pi) / 2`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;
/// Terms of the Taylor series of `ln Γ(1 + z)` taken near 1 and 2
/// (`lgamma1p_series`, [`lgamma1p_lanes`]): at `|z| <` [`TAYLOR_RADIUS`]
/// the first left out is below 10⁻¹⁸ of the value.
const TAYLOR_TERMS: usize = 24;
/// `|z|` below which the Taylor series around 1 (or 2) is used.
const TAYLOR_RADIUS: f64 = 0.2;

/// `ζ(k)` by Euler–Maclaurin summation with ten explicit terms.
fn zeta(k: usize) -> f64 {
    let s = k as f64;
    let n = 10.0f64;
    let mut sum: f64 = (1..10).map(|i| (i as f64).powf(-s)).sum();
    sum += n.powf(1.0 - s) / (s - 1.0) + 0.5 * n.powf(-s);
    // Bernoulli numbers B2..B12 over (2j)!
    const B: [f64; 6] = [
        1.0 / 6.0 / 2.0,
        -1.0 / 30.0 / 24.0,
        1.0 / 42.0 / 720.0,
        -1.0 / 30.0 / 40_320.0,
        5.0 / 66.0 / 3_628_800.0,
        -691.0 / 2730.0 / 479_001_600.0,
    ];
    let mut rising = s; // s (s+1) ... (s + 2j - 2)
    for (j, b) in B.iter().enumerate() {
        if j > 0 {
            rising *= (s + 2.0 * j as f64 - 1.0) * (s + 2.0 * j as f64);
        }
        sum += b * rising * n.powf(-s - 2.0 * j as f64 - 1.0);
    }
    sum
}

/// The Taylor coefficients `(-1)^k ζ(k) / k`, `k = 2..`.
fn taylor() -> &'static [f64; TAYLOR_TERMS] {
    static COEFFS: std::sync::OnceLock<[f64; TAYLOR_TERMS]> = std::sync::OnceLock::new();
    COEFFS.get_or_init(|| {
        let mut c = [0.0; TAYLOR_TERMS];
        for (i, c) in c.iter_mut().enumerate() {
            let k = i + 2;
            let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
            *c = sign * zeta(k) / k as f64;
        }
        c
    })
}

/// `ln Γ(1 + z)` for small `|z|`.
fn lgamma1p_series(z: f64) -> f64 {
    let mut acc = 0.0;
    for &c in taylor().iter().rev() {
        acc = acc * z + c;
    }
    z * (-EULER + z * acc)
}

/// `ln |Γ(x)|`; `+inf` at the poles (0, -1, -2, ...).
pub(crate) fn lgamma(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        if x == x.floor() {
            return f64::INFINITY;
        }
        // Γ(x) Γ(1 - x) = π / sin(π x)
        return (PI / (PI * x).sin().abs()).ln() - lgamma(1.0 - x);
    }
    if (x - 1.0).abs() < TAYLOR_RADIUS {
        return lgamma1p_series(x - 1.0);
    }
    if (x - 2.0).abs() < TAYLOR_RADIUS {
        let z = x - 2.0;
        return z.ln_1p() + lgamma1p_series(z);
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let (mut x, mut shift) = (x, 1.0);
    let mut log_shift = 0.0;
    while x < 10.0 {
        shift *= x;
        x += 1.0;
        if shift > 1e280 {
            log_shift += shift.ln();
            shift = 1.0;
        }
    }
    log_shift += shift.ln();
    stirling(x) - log_shift
}

/// Stirling's series for `ln Γ(x)`, `x >= 10`.
fn stirling(x: f64) -> f64 {
    (x - 0.5) * x.ln() - x + HALF_LN_2PI + stirling_tail(x)
}

/// The part of Stirling's series after its leading terms, `ln Γ(x) -
/// ((x - 1/2) ln x - x + ln(2π)/2)`, for `x >= 10` (0 at +inf).
#[inline(always)]
fn stirling_tail(x: f64) -> f64 {
    stirling_tail_of_inverse(1.0 / x)
}

/// [`stirling_tail`] of `x = 1 / r`.
#[inline(always)]
fn stirling_tail_of_inverse(r: f64) -> f64 {
    let r2 = r * r;
    r * (1.0 / 12.0
        + r2 * (-1.0 / 360.0
            + r2 * (1.0 / 1260.0
                + r2 * (-1.0 / 1680.0
                    + r2 * (1.0 / 1188.0 + r2 * (-691.0 / 360_360.0 + r2 / 156.0))))))
}

/// `ln Γ(x) - ((x - 1/2) ln x - x + ln(2π)/2)` for `x > 0`: what is left of
/// `ln Γ` after the terms that grow with `x` (about `1 / (12 x)` for large
/// `x`). Formulas that cancel those terms analytically against others of
/// the same size keep their accuracy for large `x`, where `ln Γ(x)` itself
/// carries an absolute rounding error of `x ln x` ulps.
pub(crate) fn lgamma_correction(x: f64) -> f64 {
    if x >= 10.0 {
        stirling_tail(x)
    } else {
        lgamma(x) - ((x - 0.5) * x.ln() - x + HALF_LN_2PI)
    }
}

/// `ψ(x) - ln x + 1 / (2x)` for `x > 0`, the derivative of
/// [`lgamma_correction`] (about `-1 / (12 x²)` for large `x`).
pub(crate) fn digamma_correction(x: f64) -> f64 {
    if x >= 10.0 {
        -digamma_tail(x)
    } else {
        digamma(x) - x.ln() + 0.5 / x
    }
}

/// `ψ'(x) - 1/x - 1 / (2x²)` for `x > 0`, the derivative of
/// [`digamma_correction`] (about `1 / (6 x³)` for large `x`).
pub(crate) fn trigamma_correction(x: f64) -> f64 {
    if x >= 10.0 {
        trigamma_tail(x)
    } else {
        trigamma(x) - 1.0 / x - 0.5 / (x * x)
    }
}

/// `ψ''(x) + 1/x² + 1/x³` for `x > 0`, the derivative of
/// [`trigamma_correction`] (about `-1 / (2 x⁴)` for large `x`): from 10 on
/// the derivative of [`trigamma_tail`]'s series, below it `ψ''(x + 1) + (1
/// - 1/x) / x²` (`ψ''(x) = ψ''(x + 1) - 2/x³`).
pub(crate) fn tetragamma_correction(x: f64) -> f64 {
    if x >= 10.0 {
        let r = 1.0 / x;
        let r2 = r * r;
        -(r2 * r2) * (0.5 - r2 * (1.0 / 6.0 - r2 * (1.0 / 6.0 - r2 * (0.3 - r2 * (5.0 / 6.0)))))
    } else {
        tetragamma_pentagamma(x + 1.0).0 + (1.0 - 1.0 / x) / (x * x)
    }
}

/// `ln B(a, b) = ln Γ(a) + ln Γ(b) - ln Γ(a + b)` for `a, b > 0`, accurate
/// for large arguments: with `p <= q` the two, and `s = p + q`,
/// - both below 10: the three `ln Γ` directly (none is large);
/// - `p < 10 <= q`: `ln Γ(p) + p - (q - 1/2) ln(1 + p/q) - p ln s` plus the
///   [`lgamma_correction`]s of `q` and `s`, where the direct sum would
///   cancel two values of size `q ln q`;
/// - both from 10: `ln(2π)/2 - (ln s)/2 + (p - 1/2) ln(p/s) + (q - 1/2)
///   ln(q/s)` plus the corrections, with `ln(p/s) = -ln(1 + q/p)`.
///
/// `ln s` is taken as `ln q + ln(1 + p/q)`, so it stays finite when `p + q`
/// overflows.
pub(crate) fn lbeta(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (p, q) = if a <= b { (a, b) } else { (b, a) };
    if q < 10.0 {
        return lgamma(p) + lgamma(q) - lgamma(p + q);
    }
    let s = p + q;
    // ln(1 + p/q) = ln(s/q)
    let ln_s_over_q = (p / q).ln_1p();
    let ln_s = q.ln() + ln_s_over_q;
    let corrections = lgamma_correction(q) - lgamma_correction(s);
    if p < 10.0 {
        lgamma(p) + (p - (q - 0.5) * ln_s_over_q) - p * ln_s + corrections
    } else {
        HALF_LN_2PI - 0.5 * ln_s - (p - 0.5) * (q / p).ln_1p() - (q - 0.5) * ln_s_over_q
            + lgamma_correction(p)
            + corrections
    }
}

/// `ln Γ(x + h) - ln Γ(x)` for `x > 0`, `h >= 0`, with its accuracy where
/// `h` is small beside `x`, where the two `ln Γ` agree in most of their
/// digits: `KL(Beta(1e-10, 3) || Beta(1e-10, 1))` sums such differences,
/// and as differences of `ln Γ` values (`ln Γ(3 + 1e-10) - ln Γ(3)`, each
/// near 0.69) they are 2e-5 off. For `x` of at least 10 it
/// is `(x - 1/2) ln(1 + h/x) + h (ln(x + h) - 1)` plus the difference of
/// the [`lgamma_correction`]s, taken term by term
/// ([`stirling_tail_difference`]); a smaller `x` is first raised past 10 by
/// the recurrence `ln Γ(x) = ln Γ(x + 1) - ln x`, whose terms for the two
/// arguments differ by `-ln(1 + h/x)`. Its derivatives are `ψ(x + h) -
/// ψ(x)` in `x` ([`digamma_diff`]) and `ψ(x + h)` in `h`. Outside that
/// domain (`x <= 0` or `h < 0`) it is the plain difference of [`lgamma`]s.
pub(crate) fn lgamma_diff(x: f64, h: f64) -> f64 {
    if x.is_nan() || h.is_nan() {
        return f64::NAN;
    }
    if h == 0.0 {
        return 0.0;
    }
    if x <= 0.0 || h < 0.0 {
        return lgamma(x + h) - lgamma(x);
    }
    if x.is_infinite() || h.is_infinite() {
        return f64::INFINITY;
    }
    let (mut x, mut sum) = (x, 0.0);
    while x < 10.0 {
        sum -= (h / x).ln_1p();
        x += 1.0;
    }
    let u = (h / x).ln_1p();
    sum + (x - 0.5) * u + h * (x.ln() + u - 1.0) - stirling_tail_difference(x, h, u)
}

/// `S(x) - S(x + h)` for `x >= 10`, `h > 0`, with `S` the series of
/// [`stirling_tail`] and `u = ln(1 + h/x)`, term by term as in
/// [`tail_differences`]: a term `c / x^m` (odd `m`) differs by `c (1 -
/// q^m) / x^m` with `q = x / (x + h)`, `1 - q = -expm1(-u)` and `1 -
/// q^(m+2) = (1 - q^m) + q^m (1 - q²)`.
fn stirling_tail_difference(x: f64, h: f64, u: f64) -> f64 {
    const STIRLING: [f64; 7] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
    ];
    debug_assert!(x >= 10.0 && h > 0.0, "stirling_tail_difference({x}, {h})");
    let two = -(-2.0 * u).exp_m1();
    let r = 1.0 / x;
    let r2 = r * r;
    let (mut odd, mut power, mut sum) = (-(-u).exp_m1(), r, 0.0);
    for (k, c) in STIRLING.iter().enumerate() {
        if k > 0 {
            odd += (1.0 - odd) * two;
            power *= r2;
        }
        sum += c * power * odd;
    }
    sum
}

/// `(a - b) ψ(a) - ln Γ(a) + ln Γ(b)`, the part of a Gamma, Beta or
/// Dirichlet divergence that compares two concentrations, summed directly
/// (for concentrations below 10 that are not [`shapes_near`] each other;
/// larger ones need Stirling's forms), and for near ones, of any size, as
/// the remainder of the first-order Taylor polynomial of `ln Γ` at `a`:
/// `δ² ∫₀¹ (1 - u) ψ'(a + u δ) du` with `δ = b - a` ([`taylor_remainder`],
/// `ψ'(x)` as `1/x² + ψ'(x + 1)`, so that `(δ/x)²` does not overflow at a
/// tiny `x`). The direct sum leaves rounding errors of the size of `ln
/// Γ(a)` ulps in a value of about `ψ'(a) δ²/2`: with it, the Gamma
/// divergence between concentrations of 0.0376 that differ by 1.3e-12
/// (and rates 2.5e-10 of themselves apart) was 9e5 times its value off,
/// against mpmath. As one function its derivatives `(a - b) ψ'(a)` and `ψ(b) -
/// ψ(a)` are 0 where `a = b`, where the sum of its terms' derivatives
/// (`ψ(a)` and `-ψ(a)`, about `∓1/a` for a tiny `a`) would keep the
/// rounding error of whatever else was added to one of them first.
pub(crate) fn shape_divergence_direct(a: f64, b: f64) -> f64 {
    if a == b {
        return 0.0;
    }
    if shapes_near(a, b) {
        let delta = b - a;
        return taylor_remainder(delta.abs() / a.min(b), |u| {
            let x = a + u * delta;
            // (δ ψ'(x + 1) first: about δ / x, where δ² can overflow)
            let q = delta / x;
            q * q + delta * (delta * trigamma(x + 1.0))
        });
    }
    (a - b) * digamma(a) - lgamma(a) + lgamma(b)
}

/// `(a - b) ψ'(a)`, the derivative of [`shape_divergence_direct`] in `a`
/// (0 where `a = b`). Below [`TINY_SHAPE`], `ψ'(a)` as `1/a² + ψ'(a + 1)`
/// with `(a - b)/a` divided by `a` once more: `ψ'(a)` alone overflows below
/// about 1e-154, where `(a - b) ψ'(a)` does not (about `-1e300` at `a =
/// 1e-300`, `b = 2a`), and the product of the two was `-inf`, which a Beta
/// or Gamma divergence's slope then met with `+inf` from another of its
/// parts (NaN at `KL(Beta(1e-300, 1e-300) || Beta(2e-300, 1e-300))`).
pub(crate) fn shape_slope(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else if a < TINY_SHAPE {
        (a - b) / a / a + (a - b) * trigamma(a + 1.0)
    } else {
        (a - b) * trigamma(a)
    }
}

/// The concentration below which [`shape_slope`] takes `ψ'(a)` apart.
const TINY_SHAPE: f64 = 1e-100;

/// Whether two positive parameters differ by at most an eighth of the
/// smaller, where divergences between them are taken from [`taylor_remainder`]
/// (a function with no singularity nearer to the interval than the smaller
/// parameter, as `ln Γ`, whose poles lie at 0 and below).
#[inline(always)]
pub(crate) fn shapes_near(a: f64, b: f64) -> bool {
    (a - b).abs() * 8.0 <= a.min(b)
}

/// `∫₀¹ (1 - u) g(u) du` by Gauss–Legendre quadrature: with `g(u) = δ²
/// f''(a + u δ)`, the remainder `f(a + δ) - f(a) - δ f'(a)` of the
/// first-order Taylor polynomial, a sum of terms of one sign where `f` is
/// convex, where the difference of the three values loses the digits of a
/// small remainder (every divergence between two members of an exponential
/// family is such a remainder of its log-normalizer). `reach` is `|δ|`
/// over a bound on the distance from `a` to the nearest singularity of
/// `f''` in the complex plane, at most 1/8: the eight-point rule then
/// integrates to about `32⁻¹⁶` of the value, and the four-point rule,
/// taken where `reach` is at most 1/64, to about `256⁻⁸` (half the cost).
pub(crate) fn taylor_remainder(reach: f64, g: impl Fn(f64) -> f64) -> f64 {
    remainder_integrals(reach, |u| [g(u)])[0][0]
}

/// `[∫₀¹ (1 - u) g(u) du, ∫₀¹ g(u) du]`, for each of `K` functions, from
/// the same values of `g` ([`taylor_remainder`], whose `reach` chooses the
/// rule): with `g(u) = δ f''(a + u δ)`, the second is `f'(a + δ) - f'(a)`,
/// the remainder's derivative in `δ`.
pub(crate) fn remainder_integrals<const K: usize>(
    reach: f64,
    g: impl Fn(f64) -> [f64; K],
) -> [[f64; K]; 2] {
    let rule: &[(f64, f64)] = match reach <= 1.0 / 64.0 {
        true => &GAUSS_LEGENDRE_4,
        false => &GAUSS_LEGENDRE_8,
    };
    let (mut weighted, mut whole) = ([0.0; K], [0.0; K]);
    for &(x, w) in rule {
        let u = 0.5 * (x + 1.0);
        for (k, value) in g(u).into_iter().enumerate() {
            weighted[k] += w * (1.0 - u) * value;
            whole[k] += w * value;
        }
    }
    [weighted.map(|v| 0.5 * v), whole.map(|v| 0.5 * v)]
}

/// `ψ(b) - ψ(a)` for `a, b > 0`, from [`digamma_diff`] where the two are
/// [`shapes_near`] (`b - a` exact there), whose relative accuracy the
/// difference of the two digammas keeps only far apart.
pub(crate) fn digamma_spread(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else if !shapes_near(a, b) {
        digamma(b) - digamma(a)
    } else if a < b {
        -digamma_diff(a, b - a)
    } else {
        digamma_diff(b, a - b)
    }
}

/// The nodes and weights of the `N`-point Gauss–Legendre rule on `[-1,
/// 1]`, by Newton's method on the Legendre polynomial from the usual
/// first guesses (exact for polynomials of degree `2N - 1`).
pub(crate) fn legendre_rule<const N: usize>() -> [(f64, f64); N] {
    let mut rule = [(0.0, 0.0); N];
    for (i, node) in rule.iter_mut().enumerate() {
        let mut x = (PI * (i as f64 + 0.75) / (N as f64 + 0.5)).cos();
        let mut slope = 0.0;
        for _ in 0..100 {
            // P_N(x) and P_N'(x) by the three-term recurrence
            let (mut p0, mut p1) = (1.0, x);
            for n in 2..=N {
                let n = n as f64;
                (p0, p1) = (p1, ((2.0 * n - 1.0) * x * p1 - (n - 1.0) * p0) / n);
            }
            slope = N as f64 * (x * p1 - p0) / (x * x - 1.0);
            let step = p1 / slope;
            x -= step;
            if step.abs() <= 1e-16 {
                break;
            }
        }
        *node = (x, 2.0 / ((1.0 - x * x) * slope * slope));
    }
    rule
}

/// The eight-point Gauss–Legendre rule on `[-1, 1]`: its nodes, the roots
/// of the Legendre polynomial `P₈`, and weights `2 / ((1 - x²) P₈'(x)²)`,
/// correctly rounded from 40-digit values (by Newton's method
/// [`legendre_rule`] leaves 6 ulp in the weights).
const GAUSS_LEGENDRE_8: [(f64, f64); 8] = symmetric([
    (0.960_289_856_497_536_3, 0.101_228_536_290_376_26),
    (0.796_666_477_413_626_7, 0.222_381_034_453_374_48),
    (0.525_532_409_916_329, 0.313_706_645_877_887_27),
    (0.183_434_642_495_649_8, 0.362_683_783_378_362),
]);

/// The four-point Gauss–Legendre rule on `[-1, 1]`, as
/// [`GAUSS_LEGENDRE_8`].
const GAUSS_LEGENDRE_4: [(f64, f64); 4] = symmetric([
    (0.861_136_311_594_052_6, 0.347_854_845_137_453_85),
    (0.339_981_043_584_856_26, 0.652_145_154_862_546_1),
]);

/// A rule of `N` nodes from its positive nodes (and their weights), the
/// negative ones first.
const fn symmetric<const H: usize, const N: usize>(half: [(f64, f64); H]) -> [(f64, f64); N] {
    let mut rule = [(0.0, 0.0); N];
    let mut i = 0;
    while i < H {
        rule[i] = (-half[i].0, half[i].1);
        rule[N - 1 - i] = half[i];
        i += 1;
    }
    rule
}

/// `ψ(a) - ψ(a + b)` for `a, b > 0` (the derivative of [`lbeta`] in `a`),
/// with its relative accuracy wherever `b` is small beside `a`, where the
/// two digammas agree in most of their digits. For `a` of at least 10 it
/// is `-ln(1 + b/a) - b / (2 a (a + b))` plus the difference of the
/// [`digamma_correction`]s, taken term by term ([`tail_differences`]); a
/// smaller `a` is first raised past 10 by the recurrence `ψ(x) = ψ(x + 1) -
/// 1/x`, whose terms for the two arguments differ by `-b / (x (x + b))`,
/// computed as such (every term has the sign of the result, so nothing
/// cancels). The plain difference of digammas kept 8 digits at `(9.99,
/// 1e-10)` and gave 0 at `(1, 1e-20)`.
pub(crate) fn digamma_diff(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (mut x, mut sum) = (a, 0.0);
    while x < 10.0 {
        // b / (x + b) <= 1 first, so that only a result beyond the range overflows
        sum -= (b / (x + b)) / x;
        x += 1.0;
    }
    let s = x + b;
    sum - (b / x).ln_1p() - (b / x) / (2.0 * s) - tail_differences(x, b).0
}

/// `ψ'(a) - ψ'(a + b)` for `a, b > 0` (the derivative of [`digamma_diff`]
/// in `a`), with its relative accuracy where `b` is small beside `a`: for
/// `a` of at least 10, `t (1 + 1/(2a) + 1/(2(a + b)))` with
/// `t = b / (a (a + b))`, plus the difference of the
/// [`trigamma_correction`]s ([`tail_differences`]); a smaller `a`
/// is raised past 10 by `ψ'(x) = ψ'(x + 1) + 1/x²`, whose terms for the
/// two arguments differ by `b (2x + b) / (x² (x + b)²)`.
pub(crate) fn trigamma_diff(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (mut x, mut sum) = (a, 0.0);
    while x < 10.0 {
        let u = x + b;
        sum += (b / u) * ((x + u) / u) / x / x;
        x += 1.0;
    }
    let s = x + b;
    let t = (b / x) / s;
    sum + t * (1.0 + 0.5 / x + 0.5 / s) + tail_differences(x, b).1
}

/// The coefficients of [`digamma_tail`]'s series in `1/x²` (`B_2k / 2k`),
/// which [`tail_differences`] and [`digamma_diff_lanes`] take term by term.
const DIGAMMA_TAIL: [f64; 6] = [
    1.0 / 12.0,
    -1.0 / 120.0,
    1.0 / 252.0,
    -1.0 / 240.0,
    1.0 / 132.0,
    -691.0 / 32_760.0,
];

/// `(T(x) - T(x + b), T'(x) - T'(x + b))` for `x >= 10`, `b > 0`, with `T`
/// and `T'` the series of [`digamma_tail`] and [`trigamma_tail`], term by
/// term: with `q = x / (x + b)`, a term `c / x^m` differs by
/// `c (1 - q^m) / x^m`, and `1 - q^m` comes from `1 - q² = -expm1(-2
/// ln(1 + b/x))` by `1 - q^(m+2) = (1 - q^m) + q^m (1 - q²)`, so that every
/// difference keeps its relative accuracy where `b` is small beside `x`.
/// (Subtracting the tails themselves gives 0 once `x + b` rounds to `x`,
/// and loses digits well before.)
fn tail_differences(x: f64, b: f64) -> (f64, f64) {
    const TRIGAMMA: [f64; 5] = [1.0 / 6.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 5.0 / 66.0];
    let u = (b / x).ln_1p();
    let two = -(-2.0 * u).exp_m1();
    let r = 1.0 / x;
    let r2 = r * r;
    // the terms in r^2k (digamma) and r^(2k+1) (trigamma) with their 1 - q^m
    let (mut even, mut odd) = (two, -(-3.0 * u).exp_m1());
    let (mut even_power, mut odd_power) = (r2, r2 * r);
    let (mut digamma, mut trigamma) = (0.0, 0.0);
    for (k, c) in DIGAMMA_TAIL.iter().enumerate() {
        if k > 0 {
            even += (1.0 - even) * two;
            odd += (1.0 - odd) * two;
            even_power *= r2;
            odd_power *= r2;
        }
        digamma += c * even_power * even;
        if let Some(c) = TRIGAMMA.get(k) {
            trigamma += c * odd_power * odd;
        }
    }
    (digamma, trigamma)
}

/// `a ln(a / y) + y - a` for `a, y >= 0` (Loader's `bd0`, the deviance of
/// a Poisson count `a` from a mean `y`): 0 at `y = a`, and computed there
/// from its series in `v = (a - y)/(a + y)`, `(a - y) v + 2a (v³/3 + v⁵/5 +
/// ...)`, which keeps its relative accuracy where the direct formula
/// cancels three values of size `a`.
pub(crate) fn bd0(a: f64, y: f64) -> f64 {
    if a.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if y.is_infinite() {
        return f64::INFINITY;
    }
    if a == 0.0 {
        return y;
    }
    if (a - y).abs() < 0.1 * (a + y) {
        let v = (a - y) / (a + y);
        let v2 = v * v;
        let (mut sum, mut term) = ((a - y) * v, 2.0 * a * v);
        for j in 1..1000 {
            term *= v2;
            let next = sum + term / f64::from(2 * j + 1);
            if next == sum {
                break;
            }
            sum = next;
        }
        return sum;
    }
    a * ln_ratio(a, y) + y - a
}

/// `ln P(k; λ) = k ln λ - λ - ln Γ(k + 1)` of a count `k >= 0` under a
/// Poisson rate `λ > 0`, as `-bd0(k, λ) - (ln Γ(k + 1) - k ln k + k)`,
/// the second part `ln(2πk)/2 + C(k)` ([`lgamma_correction`]) from
/// `k = 1` (directly below, 0 at `k = 0`): for large counts the direct sum
/// cancels values of size `k ln k`. (Defined for any `k >= 0`, so that the
/// op's derivative in `k` is that of the continuous extension.)
pub(crate) fn poisson_log_mass(k: f64, rate: f64) -> f64 {
    let stirling = if k >= 1.0 {
        0.5 * k.ln() + HALF_LN_2PI + lgamma_correction(k)
    } else if k > 0.0 {
        lgamma(k + 1.0) - k * k.ln() + k
    } else {
        0.0
    };
    -bd0(k, rate) - stirling
}

/// `a b - c d` to within about one rounding of the result (Kahan's
/// algorithm: the rounding error of `c d`, exact by a fused multiply-add,
/// is added back), where the products agree in most of their digits and
/// their plain difference keeps none of them. The products must not
/// overflow.
pub(crate) fn product_difference(a: f64, b: f64, c: f64, d: f64) -> f64 {
    let cd = c * d;
    let error = (-c).mul_add(d, cd);
    a.mul_add(b, -cd) + error
}

/// The power of 2 at or below a positive normal `x` (its exponent alone):
/// dividing by it is exact, and brings `x` into `[1, 2)`.
pub(crate) fn power_of_two_below(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & 0x7ff0_0000_0000_0000)
}

/// `a2 - a1 b2 / b1` for positive normal arguments, as `(a2 b1 - a1 b2) /
/// b1` from the products' [`product_difference`] (the `a`s and the `b`s
/// each scaled by the power of 2 below the larger, so that no product
/// overflows): where `a1 b2 / b1` is close to `a2`, the difference of the
/// two rounded keeps only the absolute accuracy of `ε a2`.
pub(crate) fn ratio_apart(a2: f64, a1: f64, b2: f64, b1: f64) -> f64 {
    let (ua, ub) = (
        power_of_two_below(a1.max(a2)),
        power_of_two_below(b1.max(b2)),
    );
    ua * (product_difference(a2 / ua, b1 / ub, a1 / ua, b2 / ub) / (b1 / ub))
}

/// `loc + γ scale`, the mean of a Gumbel distribution: in `f64` for `f32`
/// arguments, where the two terms rounded apart lost the digits of a mean
/// near 0 (608 ulp at -2, 3.4674).
pub(crate) fn gumbel_mean(loc: f64, scale: f64) -> f64 {
    loc + EULER * scale
}

/// `ln(a / y)`, from the logarithms when the ratio over- or underflows.
pub(crate) fn ln_ratio(a: f64, y: f64) -> f64 {
    let r = a / y;
    if r.is_normal() {
        r.ln()
    } else {
        a.ln() - y.ln()
    }
}

/// Where [`bessel_ratio`] leaves the power series for the asymptotic one:
/// from here the asymptotic series' smallest term, about `e^-2κ`, is below
/// `10⁻²¹`.
const BESSEL_ASYMPTOTIC_FROM: f64 = 25.0;

/// The modified Bessel functions of the first kind of orders 0 and 1 as
/// the von Mises distribution needs them, for `κ > 0`: `[ln I₀(κ) - κ,
/// A(κ), 1 - A(κ), A'(κ)]` with `A = I₁ / I₀`, each a quotient of sums of
/// terms of one sign (`A' = 1 - A/κ - A²` as a difference, from a
/// correctly rounded `A`, is 4e-12 off at `κ = 100` and 9e-9 at `10⁴`, in
/// mpmath). Below
/// [`BESSEL_ASYMPTOTIC_FROM`], from the power series in `t = κ²/4`: `I₀ =
/// Σ t^n / n!²`, `I₁ = (κ/2) Σ t^n / (n! (n + 1)!)` and `A' I₀² = Σ p_n t^n
/// / (2 (n + 1)²)` with `p_n = (2n)! / n!⁴` (the coefficients of `I₀²`), and
/// `ln I₀` from `ln_1p` of the terms past the first; from there, from the
/// asymptotic series `I_ν(κ) ≈ e^κ / √(2πκ) Σ c_n(ν) κ^-n`, where `1 - A`
/// is `Σ (c_n(0) - c_n(1)) κ^-n / Σ c_n(0) κ^-n` (`c_n(1) < 0` for `n >=
/// 1`) and `A'` the derivative of the quotient.
pub(crate) fn bessel_ratio(k: f64) -> [f64; 4] {
    if k.is_nan() {
        return [f64::NAN; 4];
    }
    if k < BESSEL_ASYMPTOTIC_FROM {
        let t = 0.25 * k * k;
        // the sums past their first terms (1, 1 and 1/2), and the terms
        let (mut r0, mut r1, mut r2) = (0.0, 0.0, 0.0);
        let (mut t0, mut t1, mut t2) = (1.0, 1.0, 1.0);
        let mut n = 1.0;
        loop {
            t0 *= t / (n * n);
            t1 *= t / (n * (n + 1.0));
            // p_n t^n = p_{n-1} t^(n-1) t (2n)(2n - 1) / n⁴
            t2 *= t * ((2.0 * n) * (2.0 * n - 1.0) / (n * n)) / (n * n);
            r0 += t0;
            r1 += t1;
            r2 += t2 / (2.0 * (n + 1.0) * (n + 1.0));
            // (past both series' largest terms: t0's ratio t / n² and t2's,
            // about 4t / n², below 1)
            if (t0 <= 1e-17 * r0 && t2 <= 1e-17 * r2 && n * n > 4.0 * t) || t2 == 0.0 {
                break;
            }
            n += 1.0;
        }
        let (s0, s1) = (1.0 + r0, 1.0 + r1);
        let a = 0.5 * k * s1 / s0;
        let one_less = (s0 - 0.5 * k * s1) / s0;
        return [r0.ln_1p() - k, a, one_less, ((0.5 + r2) / s0) / s0];
    }
    // c_k(0) = c_{k-1}(0) (2k - 1)² / 8k, c_k(1) = c_{k-1}(1) (2k - 3)(2k + 1) / 8k
    let z = 1.0 / k;
    let (mut c0, mut c1, mut power) = (1.0, 1.0, 1.0);
    let (mut s0, mut diff, mut d0, mut d1) = (1.0, 0.0, 0.0, 0.0);
    let mut s1 = 1.0;
    for n in 1..=40 {
        let m = f64::from(n);
        c0 *= (2.0 * m - 1.0) * (2.0 * m - 1.0) / (8.0 * m);
        c1 *= (2.0 * m - 3.0) * (2.0 * m + 1.0) / (8.0 * m);
        power *= z;
        let (u0, u1) = (c0 * power, c1 * power);
        s0 += u0;
        s1 += u1;
        diff += u0 - u1;
        // d/dκ of c κ^-n is -n c κ^-n / κ
        d0 -= m * u0 * z;
        d1 -= m * u1 * z;
        if u0 <= 1e-17 * s0 {
            break;
        }
    }
    let a = s1 / s0;
    // (S1' S0 - S1 S0') / S0², whose two products have the same sign
    let slope = (d1 * s0 - s1 * d0) / (s0 * s0);
    let ln_i0 = s0.ln() - 0.5 * ((2.0 * std::f64::consts::PI).ln() + k.ln());
    [ln_i0, a, diff / s0, slope]
}

/// The digamma function `ψ(x) = d ln Γ(x) / dx`; NaN at the poles.
pub(crate) fn digamma(x: f64) -> f64 {
    if x.is_nan() || (x <= 0.0 && x == x.floor()) {
        return f64::NAN;
    }
    if x < 0.0 {
        // ψ(1 - x) - ψ(x) = π cot(π x)
        return digamma(1.0 - x) - PI / (PI * x).tan();
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let (mut x, mut acc) = (x, 0.0);
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    acc + x.ln() - 0.5 / x - digamma_tail(x)
}

/// `ln x - 1/(2x) - ψ(x)` for `x >= 10`, from the asymptotic series.
fn digamma_tail(x: f64) -> f64 {
    let r = 1.0 / x;
    digamma_tail_of_square(r * r)
}

/// [`digamma_tail`] of `x = 1 / √r2`.
#[inline(always)]
fn digamma_tail_of_square(r2: f64) -> f64 {
    r2 * (1.0 / 12.0
        - r2 * (1.0 / 120.0
            - r2 * (1.0 / 252.0
                - r2 * (1.0 / 240.0 - r2 * (1.0 / 132.0 - r2 * (691.0 / 32_760.0))))))
}

/// The trigamma function `ψ'(x)`; NaN at the poles.
pub(crate) fn trigamma(x: f64) -> f64 {
    if x.is_nan() || (x <= 0.0 && x == x.floor()) {
        return f64::NAN;
    }
    if x < 0.0 {
        // ψ'(1 - x) + ψ'(x) = π² / sin²(π x)
        let s = (PI * x).sin();
        return PI * PI / (s * s) - trigamma(1.0 - x);
    }
    if x.is_infinite() {
        return 0.0;
    }
    let (mut x, mut acc) = (x, 0.0);
    while x < 10.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let r = 1.0 / x;
    // (grouped as before the tail had a name of its own: the same bits)
    acc + (r + 0.5 * (r * r) + trigamma_tail(x))
}

/// `ψ'(x) - 1/x - 1/(2x²)` for `x >= 10`, from the asymptotic series.
#[inline(always)]
fn trigamma_tail(x: f64) -> f64 {
    trigamma_tail_of_inverse(1.0 / x)
}

/// [`trigamma_tail`] of `x = 1 / r`.
#[inline(always)]
fn trigamma_tail_of_inverse(r: f64) -> f64 {
    let r2 = r * r;
    r * r2
        * (1.0 / 6.0
            - r2 * (1.0 / 30.0 - r2 * (1.0 / 42.0 - r2 * (1.0 / 30.0 - r2 * (5.0 / 66.0)))))
}

/// `ψ''(x)` and `ψ'''(x)` for `x > 0` (NaN otherwise): `x` is raised
/// past 20 by `ψ''(x) = ψ''(x + 1) - 2/x³` and `ψ'''(x) = ψ'''(x + 1) +
/// 6/x⁴` (terms of one sign), then the asymptotic series, the derivatives
/// of [`trigamma`]'s, to `x⁻¹⁶` and `x⁻¹⁷`: the first term left out is
/// below 10⁻¹⁶ of each from 20 on.
pub(crate) fn tetragamma_pentagamma(x: f64) -> (f64, f64) {
    if x.is_nan() || x <= 0.0 {
        return (f64::NAN, f64::NAN);
    }
    if x.is_infinite() {
        return (0.0, 0.0);
    }
    let (mut x, mut second, mut third) = (x, 0.0, 0.0);
    while x < 20.0 {
        let x2 = x * x;
        second -= 2.0 / (x2 * x);
        third += 6.0 / (x2 * x2);
        x += 1.0;
    }
    let r = 1.0 / x;
    let r2 = r * r;
    // -r² - r³ - r⁴/2 + r⁶/6 - r⁸/6 + 3r¹⁰/10 - 5r¹²/6 + 691r¹⁴/210 - 35r¹⁶/2
    let tail2 = r2
        * r2
        * (-0.5
            + r2 * (1.0 / 6.0
                + r2 * (-1.0 / 6.0
                    + r2 * (0.3 + r2 * (-5.0 / 6.0 + r2 * (691.0 / 210.0 - r2 * 17.5))))));
    // 2r³ + 3r⁴ + 2r⁵ - r⁷ + 4r⁹/3 - 3r¹¹ + 10r¹³ - 691r¹⁵/15 + 280r¹⁷
    let tail3 = r
        * r2
        * r2
        * (2.0
            + r2 * (-1.0
                + r2 * (4.0 / 3.0
                    + r2 * (-3.0 + r2 * (10.0 + r2 * (-691.0 / 15.0 + r2 * 280.0))))));
    (
        second + (-r2 - r2 * r + tail2),
        third + (2.0 * r2 * r + 3.0 * r2 * r2 + tail3),
    )
}

/// The regularized incomplete gamma functions `(P(a, x), Q(a, x))`,
/// `P + Q = 1`: the series for `x < a + 1`, Lentz's continued fraction
/// otherwise, each giving its own tail to full relative precision.
#[cfg(test)]
pub(crate) fn gamma_pq(a: f64, x: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (0.0, 1.0);
    }
    if x.is_infinite() {
        return (1.0, 0.0);
    }
    let log_front = a * x.ln() - x - lgamma(a);
    if x < a + 1.0 {
        // P = x^a e^-x / Γ(a + 1) Σ x^n / ((a + 1) ... (a + n))
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        let p = (log_front + sum.ln()).exp();
        (p, 1.0 - p)
    } else {
        // Q = x^a e^-x / Γ(a) · 1 / (x + 1 - a - 1·(1 - a) / (x + 3 - a - ...))
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let q = (log_front + h.ln()).exp();
        (1.0 - q, q)
    }
}

/// The continued fraction of the incomplete beta function (Lentz), the
/// test reference for [`beta_cf_with_grad`].
#[cfg(test)]
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function and its complement,
/// `(I_x(a, b), 1 - I_x(a, b))`, each tail to full relative precision.
#[cfg(test)]
pub(crate) fn beta_pq(a: f64, b: f64, x: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (0.0, 1.0);
    }
    if x >= 1.0 {
        return (1.0, 0.0);
    }
    let log_front = a * x.ln() + b * (-x).ln_1p() - lbeta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        let p = (log_front + beta_cf(a, b, x).ln()).exp() / a;
        (p, 1.0 - p)
    } else {
        let q = (log_front + beta_cf(b, a, 1.0 - x).ln()).exp() / b;
        (1.0 - q, q)
    }
}

/// How many draws the Beta derivatives advance together under AVX-512: one
/// register a value (sixteen ran slower, the fraction's seventeen values a
/// draw no longer fitting in the registers). Under AVX2 it is
/// [`BETA_LANES_AVX2`]. The Gamma derivatives choose theirs by tier too
/// ([`gamma_sample_grads`]).
const BETA_LANES: usize = 8;
/// How many draws the Beta derivatives advance together under AVX2 and the
/// portable code: one register a value, where eight (two registers a value,
/// 34 for the fraction's seventeen values) spill out of AVX2's sixteen. On
/// AMD EPYC (Zen 3, `bench -- sampling`, eight alternations, the order
/// flipped every pair) four lanes drew Beta(2, 3) with gradients at
/// 10.7–11.1 M draws/s in seven pairs (9.2 in one) against eight lanes'
/// 9.0–9.3.
const BETA_LANES_AVX2: usize = 4;

/// `2^-e` for `v = m 2^e` (`m` in [1, 2), `e` taken in `lowest..=1000`):
/// the power of two that takes `v` back to [1, 2), exactly, when `e` is in
/// that range. The continued fractions and the Gamma series rescale their
/// state by it.
#[inline(always)]
fn pow2_inverse(v: f64, lowest: i64) -> f64 {
    let e = ((v.to_bits() >> 52) & 0x7ff) as i64 - 1023;
    f64::from_bits(((1023 - e.clamp(lowest, 1000)) as u64) << 52)
}

/// `2^64`: from this `b₀ = x + 1 - a` on, the Gamma fraction runs its
/// scaled recurrences ([`gamma_fraction_lanes`]).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// `2^-64`: below it (or past [`TWO_POW_64`]) the Gamma fraction's state
/// is rescaled at a round's end.
const TWO_POW_MINUS_64: f64 = 1.0 / TWO_POW_64;

/// Steps of the Gamma series and fraction between convergence tests
/// ([`gamma_series_lanes`]).
const ROUND: usize = 4;

/// `new` where `mask` is all ones, `old` where it is zero: a blend the
/// vectorizer keeps in registers, unlike a branch.
#[inline(always)]
pub(crate) fn select(mask: u64, new: f64, old: f64) -> f64 {
    f64::from_bits((new.to_bits() & mask) | (old.to_bits() & !mask))
}

#[inline(always)]
pub(crate) fn mask(c: bool) -> u64 {
    (c as u64).wrapping_neg()
}

/// Whether any lane still iterates.
#[inline(always)]
fn any<const L: usize>(live: &[u64; L]) -> bool {
    live.iter().fold(0, |a, &l| a | l) != 0
}

/// The largest parameter the implicit derivatives accept: the series and
/// fractions need about `9 √a` steps near the median, two million at most.
pub(crate) const MAX_IMPLICIT_PARAMETER: f64 = 1e10;

/// Steps after which a lane that has not converged gives NaN (which the
/// sampling op reports as an error): enough for any parameter up to
/// [`MAX_IMPLICIT_PARAMETER`], whose series need `√(78 a)` terms at worst.
#[inline(always)]
fn step_cap<const L: usize>(params: &[&[f64; L]]) -> usize {
    let largest = params
        .iter()
        .flat_map(|p| p.iter())
        .fold(0.0f64, |m, &v| m.max(v));
    10_000 + (20.0 * largest.min(MAX_IMPLICIT_PARAMETER).sqrt()) as usize
}

/// NaN in the lanes that are still live (did not converge).
#[inline(always)]
fn nan_if_live<const L: usize>(live: &[u64; L], v: &mut [f64; L]) {
    for l in 0..L {
        v[l] = select(live[l], f64::NAN, v[l]);
    }
}

/// A closure marked `#[inline(always)]` (an attribute a closure takes only
/// as an argument). The per-draw closures of the Beta derivatives, left out
/// of line (and so without the caller's AVX-512), held a tenth of their
/// profile.
#[inline(always)]
fn inlined<A, R>(f: impl Fn(A) -> R) -> impl Fn(A) -> R {
    f
}

/// [`inlined`] for the closure that takes each draw's outputs in
/// [`in_lanes`], typed before it is handed on.
#[inline(always)]
fn inlined_finish<const O: usize>(f: impl FnMut(usize, [f64; O])) -> impl FnMut(usize, [f64; O]) {
    f
}

/// [`beta_sample_grads`] of the draws listed in `live`, `L` at a time:
/// each draw's fraction `h`, its two logarithmic slopes and the draw's
/// `ln x` and `ln(1 - x)`, handed to `finish`.
#[inline(always)]
fn beta_grads_in_lanes<const L: usize>(
    live: &[usize],
    input: impl Fn(usize) -> [f64; 4],
    finish: impl FnMut(usize, [f64; 5]),
) {
    in_lanes(
        live,
        input,
        #[inline(always)]
        |[a, b, x, draw]: &[[f64; L]; 4]| {
            let [h, l1, l2] = beta_fraction_lanes(&[*a, *b, *x]);
            [h, l1, l2, ln_lanes(draw), ln_1m_lanes(draw)]
        },
        finish,
    )
}

/// Draws sorted into lists ([`sorted_lists`]) at a time: the lists stay in
/// the first-level cache, and the draws' inputs and outputs in the second.
const SORT_BLOCK: usize = 2048;

/// Buckets of each list of [`sorted_lists`].
const BUCKETS: usize = 16;

/// The bucket of a draw whose key is `r` in `[0, 1)`: `⌊16 r⌋`, read from
/// the leading bits of `1 + r`'s mantissa (integer operations, which
/// vectorize where a conversion to an integer did not). `1 + r` may round
/// up to the next bucket, and `r = 1` falls in the first: a bucket only
/// orders the draws, it never changes a draw's result.
#[inline(always)]
fn bucket(r: f64) -> u8 {
    const _: () = assert!(BUCKETS == 16);
    ((1.0 + r).to_bits() >> 48) as u8 & 0xf
}

/// The indices `start + j` of the draws whose `keys[j]` is in `1..=BUCKETS`
/// and those whose key is in `BUCKETS + 1..=2 BUCKETS`, as two lists in
/// `idx` (at least as long as `keys`), each ordered by key; key 0 is in
/// neither. A key is a side (the series or the fraction) and a [`bucket`]
/// of a measure of the steps a draw takes, so that the `L` draws of a group
/// take about as many steps as each other: a group runs until its last
/// lane converges, and in the order drawn the largest step count among 8
/// draws of `Gamma(2.5)` is about a fifth above the mean in the series and
/// a sixth in the fraction. A counting sort, without a branch a draw (which
/// side a draw takes is as good as random, and a mispredicted branch costs
/// about a step of the series); consecutive draws count into and take
/// their slots from four sets of counters in turn, so that a run of one
/// key is not one chain of dependent increments.
#[inline(always)]
fn sorted_lists<'a>(idx: &'a mut [usize], start: usize, keys: &[u8]) -> (&'a [usize], &'a [usize]) {
    const KEYS: usize = 2 * BUCKETS + 1;
    const WAYS: usize = 4;
    let mut next = [[0usize; KEYS]; WAYS];
    for (j, &k) in keys.iter().enumerate() {
        next[j % WAYS][usize::from(k)] += 1;
    }
    // each key's first slot in each set: the lists' keys in order, key 0
    // after them
    let mut at = 0;
    for k in (1..KEYS).chain([0]) {
        for next in &mut next {
            (next[k], at) = (at, at + next[k]);
        }
    }
    let (first, live) = (next[0][BUCKETS + 1], next[0][0]);
    for (j, &k) in keys.iter().enumerate() {
        let slot = &mut next[j % WAYS][usize::from(k)];
        idx[*slot] = start + j;
        *slot += 1;
    }
    (&idx[..first], &idx[first..live])
}

/// `[f(0), f(1), ...]` by a loop: `array::from_fn`, which LLVM may leave out
/// of line (compiled without the caller's wider instructions), held about a
/// hundredth of the Gamma derivatives' profile.
#[inline(always)]
fn each<T: Copy + Default, const N: usize>(f: impl Fn(usize) -> T) -> [T; N] {
    let mut v = [T::default(); N];
    for (i, v) in v.iter_mut().enumerate() {
        *v = f(i);
    }
    v
}

/// Calls `lanes` on the draws listed in `idx`, `L` at a time, and hands
/// each draw's outputs to `out`. The last group is padded with copies of its
/// first draw. A lane's results are fixed in the round it converges in
/// (its state kept, or its values set aside while it runs on), so a draw's
/// outputs do not depend on the draws it shares a group with.
///
/// `lanes` is best an `#[inline(always)]` closure: a function item is
/// called through `Fn::call`, which LLVM may leave out of line, compiled
/// without the caller's AVX2 (a timing harness that did so ran the series
/// at half speed).
#[inline(always)]
fn in_lanes<const I: usize, const O: usize, const L: usize>(
    idx: &[usize],
    input: impl Fn(usize) -> [f64; I],
    lanes: impl Fn(&[[f64; L]; I]) -> [[f64; L]; O],
    mut out: impl FnMut(usize, [f64; O]),
) {
    for group in idx.chunks(L) {
        let mut args = [[0.0; L]; I];
        for l in 0..L {
            let v = input(group[l.min(group.len() - 1)]);
            for k in 0..I {
                args[k][l] = v[k];
            }
        }
        let res = lanes(&args);
        for (l, &i) in group.iter().enumerate() {
            out(i, each(|k| res[k][l]));
        }
    }
}

/// `f(x)` through a direct-mapped memo of `N` slots (a power of two) keyed
/// by the bits of `x`: the draws of one distribution ask for the values of a
/// few parameters over and over (one broadcast parameter, or a Dirichlet's
/// concentration vector along each row). It returns exactly what `f`
/// returns; an empty slot holds NaN's key and `f(NaN)`.
pub(crate) struct Memo<V, const N: usize> {
    f: fn(f64) -> V,
    slots: [(u64, V); N],
}

impl<V: Copy, const N: usize> Memo<V, N> {
    pub(crate) fn new(f: fn(f64) -> V) -> Self {
        Memo {
            f,
            slots: [(f64::NAN.to_bits(), f(f64::NAN)); N],
        }
    }
    #[inline(always)]
    pub(crate) fn at(&mut self, x: f64) -> V {
        let bits = x.to_bits();
        let hash = bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - N.trailing_zeros());
        let slot = &mut self.slots[hash as usize];
        if slot.0 != bits {
            *slot = (bits, (self.f)(x));
        }
        slot.1
    }
}

/// `ψ` through a [`Memo`].
type Digamma = Memo<f64, 64>;

/// `ln x` of each lane for positive finite `x` (subnormals included),
/// within about an ulp, in operations that vectorize (libm's `ln`, a call a
/// draw, took a twelfth of the Gamma derivative's time): `x = m 2^k` with
/// `m` in `[√½, √2)` and `ln m = 2 atanh(s)`, `s = (m - 1)/(m + 1)`, from
/// ten terms of `atanh`'s series (`|s| < 0.172`, the next is below 10⁻¹⁸
/// of the sum). `ln 2` is split so that `k ln 2` rounds once.
#[inline(always)]
pub(crate) fn ln_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    // ln 2 with its 11 low bits cleared, and the rest (computed in 200 bits)
    const LN2_HI: f64 = 0.6931471805598903;
    const LN2_LO: f64 = 5.497923018708371e-14;
    const TWO_54: f64 = 18014398509481984.0;
    // a loop, not `array::from_fn`, which LLVM left out of line (without
    // the caller's wider instructions)
    let mut ln = [0.0; L];
    for l in 0..L {
        let subnormal = x[l] < f64::MIN_POSITIVE;
        let y = select(mask(subnormal), x[l] * TWO_54, x[l]);
        let bits = y.to_bits();
        let mut k = ((bits >> 52) & 0x7ff) as i64 - 1023 - 54 * i64::from(subnormal);
        let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
        let big = m > std::f64::consts::SQRT_2;
        let m = select(mask(big), m * 0.5, m);
        k += i64::from(big);
        let f = m - 1.0;
        let s = f / (2.0 + f);
        let z = s * s;
        // Σ_{j=1..10} 2 z^(j-1) / (2j + 1), in pairs and then pairs of
        // pairs (Estrin's scheme): four multiply-add levels where Horner's
        // rule takes nine in a chain
        let c = |j: usize| 2.0 / (2 * j + 1) as f64;
        let pair = |j: usize| z.mul_add(c(j + 1), c(j));
        let (z2, z4) = (z * z, (z * z) * (z * z));
        let low = z4.mul_add(z2.mul_add(pair(7), pair(5)), z2.mul_add(pair(3), pair(1)));
        let series = (z4 * z4).mul_add(pair(9), low);
        let kf = small_int_as_f64(k);
        // k ln 2's high part is exact: the first multiply-add rounds once
        ln[l] = kf.mul_add(LN2_HI, kf.mul_add(LN2_LO, s.mul_add(z * series, 2.0 * s)));
    }
    ln
}

/// `k as f64` for `|k| < 4096` without the conversion AVX2 lacks (a vector
/// of `i64` to `f64` is AVX-512 only): `k + 4096` as the low bits of
/// 2^52's mantissa, exact.
#[inline(always)]
pub(crate) fn small_int_as_f64(k: i64) -> f64 {
    const MAGIC: f64 = 4_503_599_627_370_496.0 + 4096.0;
    f64::from_bits(MAGIC.to_bits().wrapping_add(k as u64)) - MAGIC
}

/// `ln(1 + v)` of each lane for finite `v > -1`, within about two ulp:
/// [`ln_lanes`] of `u = 1 + v` corrected by `(v - (u - 1)) / u` for the
/// rounding of `u`.
#[inline(always)]
pub(crate) fn ln_1p_lanes<const L: usize>(v: &[f64; L]) -> [f64; L] {
    let mut u = [0.0; L];
    for l in 0..L {
        u[l] = 1.0 + v[l];
    }
    let mut ln = ln_lanes(&u);
    for l in 0..L {
        ln[l] += (v[l] - (u[l] - 1.0)) / u[l];
    }
    ln
}

/// `ln(1 - x)` of each lane for `x` in `(0, 1)`, within about two ulp:
/// [`ln_1p_lanes`] of `-x`, with `u = 1 - x` and the correction `((1 - u)
/// - x) / u` (both differences exact).
#[inline(always)]
pub(crate) fn ln_1m_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    let mut v = [0.0; L];
    for l in 0..L {
        v[l] = -x[l];
    }
    ln_1p_lanes(&v)
}

/// `e^x` of each lane, within about two ulp where the result is normal
/// (0 below `e^-745`, `+inf` above `e^709.78`; NaN for NaN), in
/// operations that vectorize: `x = k ln 2 + r` with `|r| <= ln(2)/2` and
/// `e^r` from its Taylor polynomial of degree 13 ([`exp_m1_reduced`]),
/// scaled by `2^k` as two factors (so that neither leaves the range).
#[inline(always)]
pub(crate) fn exp_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    let mut out = [0.0; L];
    for l in 0..L {
        let (r, k) = reduced(x[l]);
        out[l] = scaled(1.0 + exp_m1_reduced(r), k);
    }
    out
}

/// `e^x - 1` of each lane, within 2 ulp of the result (`-1` below
/// `e^-745`, `+inf` above `e^709.78`): the second value of
/// [`exp_and_exp_m1_lanes`].
#[inline(always)]
pub(crate) fn exp_m1_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    exp_and_exp_m1_lanes(x).1
}

/// `(e^x, e^x - 1)` of each lane: [`exp_lanes`] and [`exp_m1_lanes`], the
/// same values, from one range reduction and polynomial `p = e^r - 1` for
/// both: `e^x - 1 = 2^k p + (2^k - 1)` in one rounding (where `k = 0`, `p`
/// itself), which keeps the bits that `e^x` less 1 would cancel (up to 6 ulp
/// just beyond `ln(2)/2`); beyond `2^1023`, `e^x` less 1.
#[inline(always)]
pub(crate) fn exp_and_exp_m1_lanes<const L: usize>(x: &[f64; L]) -> ([f64; L], [f64; L]) {
    let (mut exp, mut exp_m1) = ([0.0; L], [0.0; L]);
    for l in 0..L {
        let (p, k, power) = exp_parts(x[l]);
        exp[l] = scaled(1.0 + p, k);
        exp_m1[l] = select(
            mask(k <= 1023.0),
            power.mul_add(p, power - 1.0),
            exp[l] - 1.0,
        );
    }
    (exp, exp_m1)
}

/// `(p, k, 2^k)` with `e^x = (1 + p) 2^k`, `p = e^r - 1` of the reduced
/// argument ([`reduced`], [`exp_m1_reduced`]); `2^k` is 0 below the normal
/// powers (where `e^x - 1 = 2^k p + (2^k - 1)` rounds to -1).
#[inline(always)]
fn exp_parts(x: f64) -> (f64, f64, f64) {
    let (r, k) = reduced(x);
    (exp_m1_reduced(r), k, power_of_two(k.max(-1023.0)))
}

/// [`exp_and_exp_m1_lanes`] of `x <= 0`, the same values down to `k =
/// -1022` (`e^x` to about `2^-1022.5`, a little into the subnormals); below,
/// `e^x` is 0: it is `(1 + p) 2^k` with the one power of two that `e^x - 1`
/// takes, not two factors that keep the smaller subnormal results. For the
/// first step of a Kumaraswamy draw, whose draw is 1 (moved inside the
/// support, flat) long before `e^-s` leaves the normal numbers: its op
/// took 0.95–0.97 ms a million `f32` draws instead of 1.05–1.10 (AMD EPYC
/// family 26 model 2, AVX-512).
#[inline(always)]
pub(crate) fn exp_and_exp_m1_nonpositive_lanes<const L: usize>(
    x: &[f64; L],
) -> ([f64; L], [f64; L]) {
    let (mut exp, mut exp_m1) = ([0.0; L], [0.0; L]);
    for l in 0..L {
        let (p, _, power) = exp_parts(x[l]);
        exp[l] = (1.0 + p) * power;
        exp_m1[l] = power.mul_add(p, power - 1.0);
    }
    (exp, exp_m1)
}

/// `e^x` of sixteen `f64` lanes `x <= 0` (`lo` then `hi`) as `f32`,
/// within an ulp of `e^x` rounded where that is normal and 0 where it is
/// below `f32::MIN_POSITIVE` (or its subnormal value where `k = -126`;
/// NaN for NaN; a positive `x` gives `+inf` from about 88.4, where `k =
/// 128`): `x = k ln 2 + r` reduced in `f64` ([`reduced`]), so that
/// an `x` of many digits before the point keeps those after it; `r` rounded
/// to `f32` moves `e^r` by at most a sixth of an `f32` ulp, and `e^r` comes
/// from its Taylor polynomial of degree 7 in `f32` (the next term is below a
/// tenth of an ulp) as `1 + (r + r² q(r))`, times `2^k`.
/// Half the vectors of [`exp_lanes`] and a shorter polynomial, for the
/// `f32` draws whose last step is an exponential.
#[inline(always)]
pub(crate) fn exp_nonpositive_to_f32(lo: &[f64; 8], hi: &[f64; 8]) -> [f32; 16] {
    let (mut r, mut k) = ([0.0f32; 16], [0.0f32; 16]);
    for (half, x) in [lo, hi].into_iter().enumerate() {
        for l in 0..8 {
            let (r64, k64) = reduced(x[l]);
            r[8 * half + l] = r64 as f32;
            k[8 * half + l] = k64.clamp(-127.0, 128.0) as f32;
        }
    }
    let mut out = [0.0f32; 16];
    for l in 0..16 {
        // 2^k from the biased exponent k + 127 (0 at k = -127, +inf at
        // 128) as the low bits of 2^23's mantissa, shifted into place
        const TWO_23: f32 = 8_388_608.0;
        let power = f32::from_bits(((k[l] + 127.0) + TWO_23).to_bits() << 23);
        // e^r - 1 = r + r² q(r), q = Σ r^j / (j + 2)! for j = 0..6 in
        // pairs (Estrin's scheme): the leading term exact, so that 1 + (e^r
        // - 1) is the one rounding of a size of the result
        let r = r[l];
        let (r2, r4) = (r * r, (r * r) * (r * r));
        let q = r4.mul_add(
            r.mul_add(1.0 / 5040.0, 1.0 / 720.0),
            r2.mul_add(
                r.mul_add(1.0 / 120.0, 1.0 / 24.0),
                r.mul_add(1.0 / 6.0, 0.5),
            ),
        );
        out[l] = (1.0 + r2.mul_add(q, r)) * power;
    }
    out
}

/// `(r, k)` with `x = k ln 2 + r`, `|r| <= ln(2)/2` and `k` an integer,
/// for `x` clamped to `[-746, 710]` (beyond, `e^x` is 0 or `+inf` as the
/// clamped value gives it). `k ln 2` is taken away in two parts (`ln 2` with
/// its 11 low bits cleared, exact times `k`, then the rest).
#[inline(always)]
fn reduced(x: f64) -> (f64, f64) {
    const LN2_HI: f64 = 0.6931471805598903;
    const LN2_LO: f64 = 5.497923018708371e-14;
    // 1.5 * 2^52: adding it rounds to an integer (to even)
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let x = x.clamp(-746.0, 710.0);
    let k = x.mul_add(std::f64::consts::LOG2_E, ROUND) - ROUND;
    ((-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, x)), k)
}

/// `e^r - 1` for `|r| <= ln(2)/2` from the Taylor polynomial of degree 13
/// (the next term is below 2e-16 of the result) as `r + r² q(r)`: the
/// leading term exact, the rounding of the rest a fifth of the result at
/// most. `q`'s terms in pairs, pairs of pairs and so on (Estrin's scheme).
#[inline(always)]
fn exp_m1_reduced(r: f64) -> f64 {
    // 1/n! for n = 2..=13
    const C: [f64; 12] = [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let (r2, r4) = (r * r, (r * r) * (r * r));
    let r8 = r4 * r4;
    // q = Σ C[j] r^j for j = 0..12
    let pair = |j: usize| r.mul_add(C[j + 1], C[j]);
    let low = r4.mul_add(r2.mul_add(pair(6), pair(4)), r2.mul_add(pair(2), pair(0)));
    let high = r2.mul_add(pair(10), pair(8));
    r2.mul_add(r8.mul_add(high, low), r)
}

/// `2^e` for an integer-valued `e` in `[-1023, 1023]` (0 at `-1023`), from
/// the biased exponent `e + 1023` as the low bits of 2^52's mantissa,
/// shifted into place: no conversion to an integer, which AVX2 lacks for
/// `f64`.
#[inline(always)]
fn power_of_two(e: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    f64::from_bits(((e + 1023.0) + TWO_52).to_bits() << 52)
}

/// `m 2^k` for an integer-valued `k` in `[-1076, 1025]`, as `m 2^(k - j)
/// 2^j` with `j = k/2` rounded down, both factors normal powers of two.
#[inline(always)]
fn scaled(m: f64, k: f64) -> f64 {
    let half = (k * 0.5).floor();
    (m * power_of_two(k - half)) * power_of_two(half)
}

/// The range of arguments that the lane forms of `ln Γ`, ψ and ψ'
/// ([`lgamma_lanes`], [`digamma_lanes`], [`trigamma_lanes`]) take through
/// their shift and asymptotic series; the others (NaN, `x <= 0`, tinier,
/// larger, infinite) go to the scalar functions.
const LANE_MIN: f64 = 1e-150;
/// See [`LANE_MIN`].
const LANE_MAX: f64 = 1e150;

/// Steps of the recurrence `Γ(x + 1) = x Γ(x)` that take any `x` from
/// [`LANE_MIN`] to at least 10.
const SHIFTS: usize = 10;

/// Step `i` of the recurrence in each lane, without a branch: `x + i`,
/// and whether it is below 10 (a step taken). `x + i` rises with `i`, so
/// the steps taken are the first `n`, and `x + n` is the first of `x, x +
/// 1, ...` at least 10 ([`shifted`]).
///
/// The lane forms build their terms from the steps one at a time, never
/// as arrays of `SHIFTS` rows written and then read: for AVX-512 the
/// compiler vectorized such a loop across the rows, with a scatter for
/// every row written and a gather for every row read, which made ψ and
/// `ψ(a) - ψ(a + b)` slower there than with AVX2 (`docs/benchmarks.md`,
/// "The lane forms of `ln Γ` and ψ on AVX-512").
#[inline(always)]
fn step<const L: usize>(x: &[f64; L], i: usize) -> ([f64; L], [u64; L]) {
    let (mut y, mut below) = ([0.0; L], [0; L]);
    for l in 0..L {
        y[l] = x[l] + i as f64;
        below[l] = mask(y[l] < 10.0);
    }
    (y, below)
}

/// `z = x + n` of each lane, `n` the steps taken ([`step`]).
#[inline(always)]
fn shifted<const L: usize>(x: &[f64; L]) -> [f64; L] {
    let mut n = [0.0; L];
    for i in 0..SHIFTS {
        let (_, below) = step(x, i);
        for l in 0..L {
            n[l] += select(below[l], 1.0, 0.0);
        }
    }
    let mut z = [0.0; L];
    for l in 0..L {
        z[l] = x[l] + n[l];
    }
    z
}

/// `f(y, l)` in each lane `l` where step `i` is taken (`y = x + i`,
/// [`step`]), `beyond` elsewhere.
#[inline(always)]
fn on_step<const L: usize>(
    x: &[f64; L],
    i: usize,
    f: impl Fn(f64, usize) -> f64,
    beyond: f64,
) -> [f64; L] {
    let (y, below) = step(x, i);
    let mut out = [0.0; L];
    for l in 0..L {
        out[l] = select(below[l], f(y[l], l), beyond);
    }
    out
}

/// Step `i` where it is taken, 1 elsewhere ([`step`]).
#[inline(always)]
fn factor<const L: usize>(x: &[f64; L], i: usize) -> [f64; L] {
    on_step(
        x,
        i,
        #[inline(always)]
        |y, _| y,
        1.0,
    )
}

/// 1 where step `i` is taken, 0 elsewhere ([`step`]).
#[inline(always)]
fn taken<const L: usize>(x: &[f64; L], i: usize) -> [f64; L] {
    on_step(
        x,
        i,
        #[inline(always)]
        |_, _| 1.0,
        0.0,
    )
}

/// `a/b + c/d = (a d + c b) / (b d)` of each lane.
#[inline(always)]
fn add_fractions<const L: usize>(
    (a, b): ([f64; L], [f64; L]),
    (c, d): ([f64; L], [f64; L]),
) -> ([f64; L], [f64; L]) {
    let (mut num, mut den) = ([0.0; L], [0.0; L]);
    for l in 0..L {
        num[l] = a[l] * d[l] + c[l] * b[l];
        den[l] = b[l] * d[l];
    }
    (num, den)
}

/// `Σ num_i / den_i` over the `SHIFTS` steps of each lane, `term(i) =
/// (num_i, den_i)`, as one fraction `(num, den)`: the terms combined in
/// pairs ([`add_fractions`]) in a tree of four levels rather than a chain
/// of divisions (the five pairs of neighbours, then the first two of those
/// and the next two, then those two, and last the fifth pair). The terms
/// are positive (or 0 / positive), so no digits cancel.
#[inline(always)]
fn fraction_sum<const L: usize>(
    term: impl Fn(usize) -> ([f64; L], [f64; L]),
) -> ([f64; L], [f64; L]) {
    const { assert!(SHIFTS == 10, "the tree takes ten terms") };
    let (p0, p1) = (
        add_fractions(term(0), term(1)),
        add_fractions(term(2), term(3)),
    );
    let (p2, p3) = (
        add_fractions(term(4), term(5)),
        add_fractions(term(6), term(7)),
    );
    let p4 = add_fractions(term(8), term(9));
    add_fractions(
        add_fractions(add_fractions(p0, p1), add_fractions(p2, p3)),
        p4,
    )
}

/// `ln Γ(1 + z)` of each lane for `|z| <` [`TAYLOR_RADIUS`], from
/// [`TAYLOR_TERMS`] terms of its series in pairs, pairs of pairs and
/// so on (Estrin's scheme: five multiply-add levels, not a chain of 24).
#[inline(always)]
fn lgamma1p_lanes<const L: usize>(z: &[f64; L]) -> [f64; L] {
    let c = taylor();
    let mut out = [0.0; L];
    for l in 0..L {
        let z1 = z[l];
        let z2 = z1 * z1;
        let z4 = z2 * z2;
        let z8 = z4 * z4;
        let q = |j: usize| c[2 * j] + z1 * c[2 * j + 1];
        let r = |j: usize| q(2 * j) + z2 * q(2 * j + 1);
        let s = |j: usize| r(2 * j) + z4 * r(2 * j + 1);
        let acc = s(0) + z8 * (s(1) + z8 * s(2));
        out[l] = z1 * (-EULER + z1 * acc);
    }
    out
}

/// `ln Γ(x)` of each lane ([`lgamma`] to its accuracy), in operations
/// that vectorize: the recurrence to `z >= 10` ([`shifted`]) and
/// Stirling's series there, less the logarithm of the product of the
/// factors (below `10^10`: no overflow); near 1 and 2, where `ln Γ`
/// crosses zero, its Taylor series ([`lgamma1p_lanes`]) for the relative
/// accuracy there. Lanes outside [`LANE_MIN`]`..=`[`LANE_MAX`] are taken
/// one by one by the scalar function.
#[inline(always)]
pub(crate) fn lgamma_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    // the steps taken and 1 beyond, whose product is x (x + 1) ... (x + n
    // - 1), in one loop with their count `n` (z = x + n): the count carried
    // from step to step keeps the compiler from vectorizing the loop across
    // the steps, with a scatter for each (see `step`). The same loop
    // without the count made `lgamma` 2.5 times slower with AVX-512, and a
    // tree of products of `factor`s, without the array, made `lbeta` a
    // quarter slower with AVX2.
    let (mut n, mut f) = ([0.0; L], [[1.0; L]; SHIFTS]);
    for (i, f) in f.iter_mut().enumerate() {
        let (y, below) = step(x, i);
        for l in 0..L {
            f[l] = select(below[l], y[l], 1.0);
            n[l] += select(below[l], 1.0, 0.0);
        }
    }
    let mut z = [0.0; L];
    for l in 0..L {
        z[l] = x[l] + n[l];
    }
    let mut p = [0.0; L];
    for l in 0..L {
        p[l] = ((f[0][l] * f[1][l]) * (f[2][l] * f[3][l]))
            * ((f[4][l] * f[5][l]) * (f[6][l] * f[7][l]))
            * (f[8][l] * f[9][l]);
    }
    let (ln_z, ln_p) = (ln_lanes(&z), ln_lanes(&p));
    let mut out = [0.0; L];
    let mut near = [0; L];
    let mut t = [0.0; L];
    for l in 0..L {
        let r = 1.0 / z[l];
        let stirling = (z[l] - 0.5) * ln_z[l] - z[l] + HALF_LN_2PI + stirling_tail_of_inverse(r);
        out[l] = stirling - ln_p[l];
        near[l] =
            mask((x[l] - 1.0).abs() < TAYLOR_RADIUS) | mask((x[l] - 2.0).abs() < TAYLOR_RADIUS);
        t[l] = select(mask(x[l] < 1.5), x[l] - 1.0, x[l] - 2.0);
    }
    if any(&near) {
        let (series, ln_1p) = (lgamma1p_lanes(&t), ln_1p_lanes(&t));
        for l in 0..L {
            // ln Γ(2 + t) = ln(1 + t) + ln Γ(1 + t)
            let taylor = select(mask(x[l] < 1.5), series[l], ln_1p[l] + series[l]);
            out[l] = select(near[l], taylor, out[l]);
        }
    }
    outside(x, &mut out, lgamma);
    out
}

/// `f(x)` in the lanes whose `x` is outside [`LANE_MIN`]`..=`[`LANE_MAX`]
/// (NaN included), one by one.
#[inline(always)]
fn outside<const L: usize>(x: &[f64; L], out: &mut [f64; L], f: fn(f64) -> f64) {
    let mut off = [0; L];
    for l in 0..L {
        off[l] = !mask((LANE_MIN..=LANE_MAX).contains(&x[l]));
    }
    one_by_one(&off, out, |l| f(x[l]));
}

/// `out[l] = f(l)` in the lanes whose `off` is set (a scalar form where the
/// lane form does not reach), if any.
#[inline(always)]
fn one_by_one<const L: usize>(off: &[u64; L], out: &mut [f64; L], f: impl Fn(usize) -> f64) {
    if any(off) {
        for l in 0..L {
            if off[l] != 0 {
                out[l] = f(l);
            }
        }
    }
}

/// `ψ(x)` of each lane ([`digamma`] to its accuracy): `ln z - 1/(2z) -
/// T(z) - Σ 1/(x + i)` with `z` and the terms from [`step`], the
/// sum as one fraction ([`fraction_sum`]), `T` the tail of the asymptotic
/// series ([`digamma_tail`]).
#[inline(always)]
pub(crate) fn digamma_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    let z = shifted(x);
    // Σ 1 / (x + i) over the steps taken
    let (num, den) = fraction_sum(
        #[inline(always)]
        |i| (taken(x, i), factor(x, i)),
    );
    let ln_z = ln_lanes(&z);
    let mut out = [0.0; L];
    for l in 0..L {
        let r = 1.0 / z[l];
        out[l] = (ln_z[l] - 0.5 * r - digamma_tail_of_square(r * r)) - num[l] / den[l];
    }
    outside(x, &mut out, digamma);
    out
}

/// `ψ'(x)` of each lane ([`trigamma`] to its accuracy): `Σ 1/(x + i)²`
/// (one fraction, [`fraction_sum`]) plus `1/z + 1/(2z²) + T(z)`, `T` the
/// tail of the asymptotic series ([`trigamma_tail`]).
#[inline(always)]
pub(crate) fn trigamma_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    let z = shifted(x);
    // Σ 1 / (x + i)² over the steps taken
    let (num, den) = fraction_sum(
        #[inline(always)]
        |i| {
            (
                taken(x, i),
                on_step(
                    x,
                    i,
                    #[inline(always)]
                    |y, _| y * y,
                    1.0,
                ),
            )
        },
    );
    let mut out = [0.0; L];
    for l in 0..L {
        let r = 1.0 / z[l];
        out[l] = num[l] / den[l] + (r + 0.5 * (r * r) + trigamma_tail_of_inverse(r));
    }
    outside(x, &mut out, trigamma);
    out
}

/// A correction of each lane: `tail(x)` (an asymptotic series) from 10,
/// `direct(x)` below (the function less its leading terms), the latter
/// only where some lane is below 10.
#[inline(always)]
fn correction_lanes<const L: usize>(
    x: &[f64; L],
    tail: impl Fn(f64) -> f64,
    direct: impl Fn(&[f64; L]) -> [f64; L],
) -> [f64; L] {
    let mut out = [0.0; L];
    let mut small = [0; L];
    for l in 0..L {
        out[l] = tail(x[l]);
        small[l] = !mask(x[l] >= 10.0);
    }
    if any(&small) {
        let direct = direct(x);
        for l in 0..L {
            out[l] = select(small[l], direct[l], out[l]);
        }
    }
    out
}

/// [`lgamma_correction`] of each lane: the tail of Stirling's series from
/// 10, `ln Γ(x) - ((x - 1/2) ln x - x + ln(2π)/2)` below (NaN for `x <=
/// 0`, where `ln x` is).
#[inline(always)]
pub(crate) fn lgamma_correction_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    correction_lanes(
        x,
        stirling_tail,
        #[inline(always)]
        |x| {
            let (lg, ln_x) = (lgamma_lanes(x), ln_lanes(x));
            each(|l| {
                let direct = lg[l] - ((x[l] - 0.5) * ln_x[l] - x[l] + HALF_LN_2PI);
                select(mask(x[l] > 0.0), direct, f64::NAN)
            })
        },
    )
}

/// [`digamma_correction`] of each lane: `-T(x)` from 10 ([`digamma_tail`]),
/// `ψ(x) - ln x + 1/(2x)` below (NaN for `x <= 0`).
#[inline(always)]
pub(crate) fn digamma_correction_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    correction_lanes(
        x,
        #[inline(always)]
        |x| -digamma_tail(x),
        #[inline(always)]
        |x| {
            let (psi, ln_x) = (digamma_lanes(x), ln_lanes(x));
            each(|l| select(mask(x[l] > 0.0), psi[l] - ln_x[l] + 0.5 / x[l], f64::NAN))
        },
    )
}

/// [`trigamma_correction`] of each lane: `T(x)` from 10
/// ([`trigamma_tail`]), `ψ'(x) - 1/x - 1/(2x²)` below.
#[inline(always)]
pub(crate) fn trigamma_correction_lanes<const L: usize>(x: &[f64; L]) -> [f64; L] {
    correction_lanes(
        x,
        trigamma_tail,
        #[inline(always)]
        |x| {
            let psi1 = trigamma_lanes(x);
            each(|l| psi1[l] - 1.0 / x[l] - 0.5 / (x[l] * x[l]))
        },
    )
}

/// [`lbeta`] of each lane's pair: where both are below 10 (and above 0),
/// `ln Γ(p) + ln Γ(q) - ln Γ(p + q)` from [`lgamma_lanes`] with `p <= q`
/// (so that it is symmetric, as [`lbeta`] is); elsewhere [`lbeta`], one
/// lane at a time.
#[inline(always)]
pub(crate) fn lbeta_lanes<const L: usize>(a: &[f64; L], b: &[f64; L]) -> [f64; L] {
    let (mut p, mut q, mut s) = ([0.0; L], [0.0; L], [0.0; L]);
    let mut off = [0; L];
    for l in 0..L {
        p[l] = a[l].min(b[l]);
        q[l] = a[l].max(b[l]);
        s[l] = p[l] + q[l];
        off[l] = !(mask(a[l] > 0.0) & mask(b[l] > 0.0) & mask(a[l] < 10.0) & mask(b[l] < 10.0));
    }
    let (lp, lq, ls) = (lgamma_lanes(&p), lgamma_lanes(&q), lgamma_lanes(&s));
    let mut out = [0.0; L];
    for l in 0..L {
        out[l] = lp[l] + lq[l] - ls[l];
    }
    one_by_one(&off, &mut out, |l| lbeta(a[l], b[l]));
    out
}

/// The range of both arguments that [`digamma_diff_lanes`] takes in
/// lanes: the products of its fractions stay within `f64` (ten factors
/// of up to `10 (10 + b)`); the rest go to [`digamma_diff`].
const DIFF_LANE_MIN: f64 = 1e-20;
/// See [`DIFF_LANE_MIN`].
const DIFF_LANE_MAX: f64 = 1e20;

/// [`digamma_diff`] `ψ(a) - ψ(a + b)` of each lane's pair, to its
/// accuracy: the terms `-b / (x (x + b))` of the recurrence from
/// [`step`] summed as one fraction ([`fraction_sum`]), then at `z
/// >= 10`, `-ln(1 + b/z) - (b/z) / (2(z + b))` less the difference of the
/// tails, term by term as [`tail_differences`] takes it, with `1 - q²`
/// (`q = z / (z + b)`) as `(b / s)((s + z) / s)`, `s = z + b`, where the
/// scalar form takes it from `expm1` (both keep its relative accuracy
/// where `b` is small beside `z`). Pairs outside
/// [`DIFF_LANE_MIN`]`..=`[`DIFF_LANE_MAX`] go to [`digamma_diff`].
#[inline(always)]
pub(crate) fn digamma_diff_lanes<const L: usize>(a: &[f64; L], b: &[f64; L]) -> [f64; L] {
    let z = shifted(a);
    // Σ b / (x (x + b)) over the steps taken, x = a + i
    let (num, den) = fraction_sum(
        #[inline(always)]
        |i| {
            (
                on_step(
                    a,
                    i,
                    #[inline(always)]
                    |_, l| b[l],
                    0.0,
                ),
                on_step(
                    a,
                    i,
                    #[inline(always)]
                    |y, l| y * (y + b[l]),
                    1.0,
                ),
            )
        },
    );
    let mut v = [0.0; L];
    for l in 0..L {
        v[l] = b[l] / z[l];
    }
    let ln_1p = ln_1p_lanes(&v);
    let mut out = [0.0; L];
    let mut off = [0; L];
    for l in 0..L {
        let (z, bl) = (z[l], b[l]);
        let s = z + bl;
        let two = (bl / s) * ((s + z) / s);
        let r = 1.0 / z;
        let r2 = r * r;
        let (mut even, mut power, mut tail) = (two, r2, 0.0);
        for (k, c) in DIGAMMA_TAIL.iter().enumerate() {
            if k > 0 {
                even += (1.0 - even) * two;
                power *= r2;
            }
            tail += c * power * even;
        }
        out[l] = -(num[l] / den[l]) - ln_1p[l] - v[l] / (2.0 * s) - tail;
        let inside = |x: f64| (DIFF_LANE_MIN..=DIFF_LANE_MAX).contains(&x);
        off[l] = !(mask(inside(a[l])) & mask(inside(b[l])));
    }
    one_by_one(&off, &mut out, |l| digamma_diff(a[l], b[l]));
    out
}

/// [`shape_divergence_direct`] of each lane's pair, from the lane forms of
/// `ln Γ` and ψ (0 where `a == b`; [`shapes_near`] pairs one by one).
#[inline(always)]
pub(crate) fn shape_divergence_lanes<const L: usize>(a: &[f64; L], b: &[f64; L]) -> [f64; L] {
    let (psi, la, lb) = (digamma_lanes(a), lgamma_lanes(a), lgamma_lanes(b));
    let mut out = [0.0; L];
    let mut near = [0; L];
    for l in 0..L {
        let d = (a[l] - b[l]) * psi[l] - la[l] + lb[l];
        out[l] = select(mask(a[l] == b[l]), 0.0, d);
        near[l] = mask(a[l] != b[l] && shapes_near(a[l], b[l]));
    }
    one_by_one(&near, &mut out, |l| shape_divergence_direct(a[l], b[l]));
    out
}

/// The derivatives of [`shape_divergence_direct`] in each lane: in `a`
/// (`side` 0) `(a - b) ψ'(a)`, in `b` `ψ(b) - ψ(a)` ([`digamma_spread`]
/// for [`shapes_near`] pairs); 0 where `a == b`.
#[inline(always)]
pub(crate) fn shape_divergence_grad_lanes<const L: usize>(
    side: usize,
    a: &[f64; L],
    b: &[f64; L],
) -> [f64; L] {
    let mut out = [0.0; L];
    if side == 0 {
        let psi1 = trigamma_lanes(a);
        let mut tiny = [0; L];
        for l in 0..L {
            out[l] = (a[l] - b[l]) * psi1[l];
            tiny[l] = mask(a[l] < TINY_SHAPE);
        }
        one_by_one(&tiny, &mut out, |l| shape_slope(a[l], b[l]));
    } else {
        let (pa, pb) = (digamma_lanes(a), digamma_lanes(b));
        let mut near = [0; L];
        for l in 0..L {
            out[l] = pb[l] - pa[l];
            near[l] = mask(shapes_near(a[l], b[l]));
        }
        one_by_one(&near, &mut out, |l| digamma_spread(a[l], b[l]));
    }
    for l in 0..L {
        out[l] = select(mask(a[l] == b[l]), 0.0, out[l]);
    }
    out
}

/// `dx/da` of `Gamma(a, 1)` draws `x` at fixed CDF value (implicit
/// reparameterization, Figurnov et al. 2018), into `out`: `-(∂P/∂a) / p(x; a)`,
/// with `∂P/∂a` carried through the same series or continued fraction that
/// evaluates `P` or `Q` (one pass, no `ln Γ`):
///
/// - for `x < a + 1`, `P = e^(a ln x - x) / Γ(a) · S` with
///   `S = Σ x^n / (a (a+1) ... (a+n))`, so `dx/da = -x (S (ln x - ψ(a)) + S')`;
/// - otherwise `Q = e^(a ln x - x) / Γ(a) · h` with `h` a continued
///   fraction, differentiated alongside it ([`gamma_fraction_lanes`]), so
///   `dx/da = x h (ln x - ψ(a) + h'/h)`.
///
/// The draws of each branch advance together, 16 at a time in AVX-512
/// registers and 8 otherwise (16 lanes do not fit AVX2's registers); each
/// value is what a draw computed alone would give, bit for bit, on any CPU.
pub(crate) fn gamma_sample_grads(a: &[f64], x: &[f64], out: &mut [[f64; 1]]) {
    gamma_grads(a, x, None, out)
}

/// `d ln x / da` of `Gamma(a, 1)` draws given by their logarithms `ln_x`,
/// into `out`: [`gamma_sample_grads`]' derivatives over `x`, which they
/// carry as a factor, so that they hold where `x` underflows. Draws of
/// concentrations far below 1 are as small as `e^-10⁵`, whose own
/// derivatives underflow with them (the Dirichlet draws from such
/// concentrations normalize them in log space). There `x` is taken as
/// `e^(ln x)`, 0 where it underflows, in the series, whose terms beyond
/// the first vanish with it; `ln x` itself enters as given. An infinite
/// `ln x` (a draw of 0 or +inf) gives 0.
pub(crate) fn gamma_sample_log_grads(a: &[f64], ln_x: &[f64], out: &mut [[f64; 1]]) {
    let x: Vec<f64> = ln_x.iter().map(|l| l.exp()).collect();
    gamma_grads(a, &x, Some(ln_x), out)
}

/// [`gamma_sample_grads`] (`ln_x` None) or [`gamma_sample_log_grads`]
/// (`ln_x` the draws' logarithms, `x` their exponentials).
fn gamma_grads(a: &[f64], x: &[f64], ln_x: Option<&[f64]>, out: &mut [[f64; 1]]) {
    vectorized(
        #[inline(always)]
        || {
            let mut psi = Digamma::new(digamma);
            for start in (0..out.len()).step_by(SORT_BLOCK) {
                let end = (start + SORT_BLOCK).min(out.len());
                // each draw's key (0: none; the series' buckets, then the
                // fraction's) in a pass that vectorizes, then the two lists
                // ([`sorted_lists`]); the steps grow as `x` nears `a + 1`
                // from either side, so the bucket is of `x / (a + 1)` in the
                // series and of its inverse in the fraction
                let mut keys = [0u8; SORT_BLOCK];
                let keys = &mut keys[..end - start];
                let args = a[start..end].iter().zip(&x[start..end]);
                for ((o, k), (&a, &x)) in out[start..end].iter_mut().zip(&mut *keys).zip(args) {
                    let invalid = x.is_nan() | a.is_nan() | (a > MAX_IMPLICIT_PARAMETER);
                    // (with logarithms given, x = 0 is a draw that underflowed,
                    // and an infinite logarithm makes x 0 or +inf)
                    let edge = match ln_x {
                        None => (x <= 0.0) | x.is_infinite(),
                        Some(_) => x.is_infinite(),
                    };
                    // NaN or 0; the live draws' values are written below
                    *o = [f64::from_bits(mask(invalid) & f64::NAN.to_bits())];
                    let live = !invalid & !edge;
                    let (fraction, r) = (x >= a + 1.0, x.min(a + 1.0) / x.max(a + 1.0));
                    let side = BUCKETS as u8 * u8::from(fraction);
                    *k = u8::from(live) * (1 + side + bucket(r));
                }
                if let Some(ln_x) = ln_x {
                    for (k, l) in keys.iter_mut().zip(&ln_x[start..end]) {
                        *k *= u8::from(l.is_finite());
                    }
                }
                let mut idx = [0; SORT_BLOCK];
                let branches = sorted_lists(&mut idx, start, keys);
                match tier() {
                    Tier::Avx512 => gamma_grads_in_lanes::<16>(a, x, ln_x, branches, out, &mut psi),
                    _ => gamma_grads_in_lanes::<8>(a, x, ln_x, branches, out, &mut psi),
                }
            }
        },
    )
}

/// [`gamma_grads`] of the draws listed in `series` and `fraction`, `L` at
/// a time: `dx/da`, or `d ln x/da` with the logarithms `ln_x` given.
#[inline(always)]
fn gamma_grads_in_lanes<const L: usize>(
    a: &[f64],
    x: &[f64],
    ln_x: Option<&[f64]>,
    (series, fraction): (&[usize], &[usize]),
    out: &mut [[f64; 1]],
    psi: &mut Digamma,
) {
    // the given logarithm over the lanes' (which `x = 0` would not give),
    // and the factor x of dx/da = x d ln x/da
    let ln_and_scale = inlined(
        #[inline(always)]
        |(i, ln_lanes): (usize, f64)| match ln_x {
            None => (ln_lanes, x[i]),
            Some(ln_x) => (ln_x[i], 1.0),
        },
    );
    let input = inlined(
        #[inline(always)]
        |i: usize| [a[i], x[i]],
    );
    // each branch's lanes also give ln x
    in_lanes(
        series,
        &input,
        #[inline(always)]
        |args: &[[f64; L]; 2]| {
            let [s, ds] = gamma_series_lanes(args);
            [s, ds, ln_lanes(&args[1])]
        },
        #[inline(always)]
        |i, [s, ds, ln_x]| {
            let (ln_x, scale) = ln_and_scale((i, ln_x));
            let ln_x_minus_psi = ln_x - psi.at(a[i]);
            out[i] = [-scale * (s * ln_x_minus_psi + ds)];
        },
    );
    in_lanes(
        fraction,
        &input,
        #[inline(always)]
        |args: &[[f64; L]; 2]| {
            // where b₀ = x + 1 - a is past 2^64, b₀⁵ may overflow in the
            // first round: that group runs the scaled recurrences
            let huge = args[0]
                .iter()
                .zip(&args[1])
                .any(|(a, x)| x + 1.0 - a > TWO_POW_64);
            let [h, dlog_h] = match huge {
                true => gamma_fraction_lanes::<L, true>(args),
                false => gamma_fraction_lanes::<L, false>(args),
            };
            [h, dlog_h, ln_lanes(&args[1])]
        },
        #[inline(always)]
        |i, [h, dlog_h, ln_x]| {
            let (ln_x, scale) = ln_and_scale((i, ln_x));
            let ln_x_minus_psi = ln_x - psi.at(a[i]);
            out[i] = [scale * h * (ln_x_minus_psi + dlog_h)];
        },
    );
}

/// The series `S = Σ_{n≥0} x^n / (a (a+1) ... (a+n))` and `∂S/∂a`, without
/// a division per term: the partial sums are kept over their common
/// denominator, `S_n = P_n / D_n` with `D_n = D_{n-1} (a+n)` and
/// `P_n = P_{n-1} (a+n) + x^n`, and the derivative's numerator
/// `Q_n = P_n' D_n - P_n D_n'` obeys `Q_n = (a+n)² Q_{n-1} - x^n D_n'`: every
/// term of it has the same sign, so `S' = Q / D²` carries no cancellation.
///
/// The lanes take [`ROUND`] steps between convergence tests, and a lane
/// that has converged keeps the sums of the round's end: so a draw stops
/// after the first multiple of `ROUND` steps at which its last terms are
/// below 10⁻¹⁷ of the sums, whatever its group, and a step is only its
/// arithmetic (eight operations, three of them fused multiply-adds, which
/// every tier computes alike). A converged lane runs on with its group
/// with its `a + n` held at 1 and its `x^n` at 0, steps that leave its sums
/// as they are (setting its values aside instead took three more values a
/// lane, which spilled out of AVX2's registers). With no test or blend
/// inside a round the steps of a group are one chain of dependent
/// operations; 16 lanes (two AVX-512 registers) are two chains, which keep
/// the core busy while each waits. The sums are rescaled by a power of two
/// (exactly) whenever `D` passes `2^100` at a round's end.
#[inline(always)]
fn gamma_series_lanes<const L: usize>([a, x]: &[[f64; L]; 2]) -> [[f64; L]; 2] {
    const BIG: f64 = 1.2676506002282294e30; // 2^100
    let (mut xn, mut p, mut q) = ([1.0f64; L], [1.0f64; L], [-1.0f64; L]);
    let (mut d, mut dd, mut ap) = (*a, [1.0f64; L], *a);
    // a + n steps by 1 while a lane is live; a lane that has converged
    // steps with a + n = 1 and x^n = 0, which leave P, Q and D as they are
    let mut inc = [1.0f64; L];
    let mut live = [u64::MAX; L];
    for _ in 0..step_cap(&[a]).div_ceil(ROUND) {
        let mut dq = [0.0; L];
        for _ in 0..ROUND {
            for l in 0..L {
                ap[l] += inc[l];
                xn[l] *= x[l];
                dd[l] = dd[l].mul_add(ap[l], d[l]);
                d[l] *= ap[l];
                p[l] = p[l].mul_add(ap[l], xn[l]);
                dq[l] = xn[l] * dd[l];
                q[l] = q[l].mul_add(ap[l] * ap[l], -dq[l]);
            }
        }
        let mut big = 0;
        for l in 0..L {
            // the last step's terms x^n / D_n and x^n D_n' / D_n² against the sums
            let done = xn[l] <= 1e-17 * p[l] && dq[l] <= -1e-17 * q[l];
            live[l] &= !mask(done);
            big |= mask(d[l] > BIG);
        }
        if big != 0 {
            for l in 0..L {
                // D = m 2^e (e >= 100 here) back to [1, 2), exactly
                let s = select(mask(d[l] > BIG), pow2_inverse(d[l], 0), 1.0);
                xn[l] *= s;
                dd[l] *= s;
                d[l] *= s;
                p[l] *= s;
                q[l] *= s * s;
            }
        }
        // a lane that converged runs on with the others, its P, Q and D
        // those of this round's end: with a + n = 1 and x^n = 0 (never
        // subnormal) a step multiplies them by 1 and adds 0, exactly (D',
        // which only x^n multiplies, grows by D a step)
        for l in 0..L {
            xn[l] = f64::from_bits(xn[l].to_bits() & live[l]);
            ap[l] = select(live[l], ap[l], 1.0);
            inc[l] = f64::from_bits(inc[l].to_bits() & live[l]);
        }
        if !any(&live) {
            break;
        }
    }
    let mut s = each(|l| p[l] / d[l]);
    nan_if_live(&live, &mut s);
    [s, each(|l| q[l] / (d[l] * d[l]))]
}

/// The continued fraction `h` of `Q(a, x)` (the `x ≥ a + 1` branch of
/// [`gamma_sample_grads`]) and `∂ ln h/∂a`, without a division per step:
/// `h = 1/K` with `K = b₀ + a₁/(b₁ + a₂/(b₂ + ...))`, `b_n = x + 1 - a + 2n`,
/// `a_n = n (a - n)`. `K`'s convergents `A_n / B_n` follow the three-term
/// recurrences `A_n = b_n A_{n-1} + a_n A_{n-2}` (the same for `B`), and
/// their derivatives in `a` follow those differentiated, so at the end
/// `h = B/A` and `∂ ln h = B'/B - A'/A`: two divisions a draw, where Lentz's
/// method takes two a step and its divisions bound its speed (the fraction
/// ran 1.4 times as long that way).
///
/// Like [`gamma_series_lanes`], the lanes take [`ROUND`] steps between
/// convergence tests; a converged lane's `A`, `B` and their derivatives of
/// its round's end are set aside, and it runs on with its group (keeping
/// its whole state took a blend of each of its eleven values a round). The
/// test is Lentz's (the last step changed `h` by less than 10⁻¹⁶ of itself
/// and `∂ ln h` by less than 10⁻¹⁶ of itself), evaluated without
/// cancellation: `W_n = A_n B_{n-1} - A_{n-1} B_n` obeys `W_n = -a_n W_{n-1}`
/// and is carried, with its derivative, alongside; the test of `∂ ln h`
/// is taken only in rounds where a live lane passes that of `h`. The state
/// is rescaled by a power of two (exactly) at a round's end where its
/// largest value has left `[2^-64, 2^64]`.
// a lane index runs over the state's arrays together: the loops vectorize
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn gamma_fraction_lanes<const L: usize, const SCALED: bool>(
    [a, x]: &[[f64; L]; 2],
) -> [[f64; L]; 2] {
    /// Each lane's `A_n, A_{n-1}, B_n, B_{n-1}`, their derivatives in `a`,
    /// `W_n`, `W_n'` and `b_n`.
    struct State<const L: usize> {
        den: [f64; L],
        den_prev: [f64; L],
        num: [f64; L],
        num_prev: [f64; L],
        dden: [f64; L],
        dden_prev: [f64; L],
        dnum: [f64; L],
        dnum_prev: [f64; L],
        w: [f64; L],
        dw: [f64; L],
        b: [f64; L],
    }
    // `SCALED`: every b_n divided by c = 2^e ≈ b₀ and every a_n by c², so
    // that the recurrences give A_n / c^(n+1) and B_n / c^n (and W_n / c^(2n)),
    // exactly, from the same first values but A_0 = b₀/c: the state starts
    // near 1 where b₀⁵ would overflow within the first round, and
    // h = (B/A) / c. Where nothing overflows or underflows the values are
    // the unscaled ones times powers of two, so the choice does not change a
    // draw's result.
    let b0: [f64; L] = each(|l| x[l] + 1.0 - a[l]);
    let inv_c: [f64; L] = each(|l| match SCALED {
        true => pow2_inverse(b0[l], 0),
        false => 1.0,
    });
    // (c² underflows past c = 2^511: a_n/c² is then 0, below the precision of K/c)
    let inv_c2: [f64; L] = each(|l| inv_c[l] * inv_c[l]);
    // A_0 = b_0, A_{-1} = 1, B_0 = 1, B_{-1} = 0, b_0' = -1, W_0 = -1 (A_0,
    // b_0 and b_0' over c)
    let b0c: [f64; L] = each(|l| b0[l] * inv_c[l]);
    #[rustfmt::skip]
    let mut state = State {
        den: b0c, den_prev: [1.0; L], num: [1.0; L], num_prev: [0.0; L],
        dden: each(|l| -inv_c[l]), dden_prev: [0.0; L], dnum: [0.0; L], dnum_prev: [0.0; L],
        w: [-1.0; L], dw: [0.0; L], b: b0c,
    };
    // [A, B, A', B'] at the end of the round each lane converged in
    let mut end = [[1.0; L]; 4];
    let mut live = [u64::MAX; L];
    for round in 0..step_cap(&[a]).div_ceil(ROUND) {
        let s = &mut state;
        for step in 1..=ROUND {
            let n = (round * ROUND + step) as f64;
            for l in 0..L {
                // a_n and a_n' = n over c², b_n and b_n' = -1 over c
                let (an, dan, db) = match SCALED {
                    true => (n * (a[l] - n) * inv_c2[l], n * inv_c2[l], inv_c[l]),
                    false => (n * (a[l] - n), n, 1.0),
                };
                s.b[l] += 2.0 * db;
                let b = s.b[l];
                let den = b.mul_add(s.den[l], an * s.den_prev[l]);
                let (d0, d1) = (s.den[l], s.den_prev[l]);
                let (n0, n1) = (s.num[l], s.num_prev[l]);
                let (d0, d1, n0, n1) = match SCALED {
                    true => (d0 * db, d1 * dan, n0 * db, n1 * dan),
                    false => (d0, n * d1, n0, n * n1),
                };
                let dden = b.mul_add(s.dden[l], -d0) + an.mul_add(s.dden_prev[l], d1);
                let num = b.mul_add(s.num[l], an * s.num_prev[l]);
                let dnum = b.mul_add(s.dnum[l], -n0) + an.mul_add(s.dnum_prev[l], n1);
                (s.den_prev[l], s.den[l]) = (s.den[l], den);
                (s.dden_prev[l], s.dden[l]) = (s.dden[l], dden);
                (s.num_prev[l], s.num[l]) = (s.num[l], num);
                (s.dnum_prev[l], s.dnum[l]) = (s.dnum[l], dnum);
                (s.w[l], s.dw[l]) = (-an * s.w[l], -dan.mul_add(s.w[l], an * s.dw[l]));
            }
        }
        // each lane's largest |A|, |B| = m 2^e; the lanes past 2^±64 (all
        // of them with `SCALED`, whose test below needs values near 1) are
        // brought back to [1, 2) by 2^-e, exactly. The recurrences are
        // linear and the test homogeneous in that factor, so when a lane is
        // rescaled changes none of its results; a round's four steps
        // multiply the values by at most about 2^264 (b_n < 2^65 and
        // |a_n| < 2^56 here), so from 2^64 they do not overflow.
        let mut big = [0.0; L];
        let mut rescale = [0u64; L];
        for l in 0..L {
            big[l] = (s.den[l].abs().max(s.den_prev[l].abs()))
                .max(s.num[l].abs().max(s.num_prev[l].abs()));
            rescale[l] = mask(SCALED | !(TWO_POW_MINUS_64..=TWO_POW_64).contains(&big[l]));
        }
        if any(&rescale) {
            for l in 0..L {
                let k = select(rescale[l], pow2_inverse(big[l], -1000), 1.0);
                for v in [&mut s.den, &mut s.den_prev, &mut s.num, &mut s.num_prev] {
                    v[l] *= k;
                }
                for v in [&mut s.dden, &mut s.dden_prev, &mut s.dnum, &mut s.dnum_prev] {
                    v[l] *= k;
                }
                s.w[l] *= k * k;
                s.dw[l] *= k * k;
            }
        }
        // the last step multiplied h by 1 - W_n/(A_n B_{n-1}): the lanes
        // where that is below 10⁻¹⁶ of h; only where a live one is does
        // the test of ∂ ln h follow
        let mut h_done = [0u64; L];
        for l in 0..L {
            let prod = s.den[l] * s.num_prev[l];
            h_done[l] = live[l] & mask(s.w[l].abs() < 1e-16 * prod.abs());
        }
        if !any(&h_done) {
            continue;
        }
        for l in 0..L {
            let (den, num, dden, dnum) = (s.den[l], s.num[l], s.dden[l], s.dnum[l]);
            let (w, dw) = (s.w[l], s.dw[l]);
            // the last step moved ln h by that factor's derivative, against
            // ∂ ln h = (B'A - A'B)/(AB)
            let prod = den * s.num_prev[l];
            let dprod = dden * s.num_prev[l] + den * s.dnum_prev[l];
            let dlog_h = dnum * den - dden * num;
            // (both sides times c, exactly: ∂ ln h is of the order of 1/c,
            // and the right side would underflow for c near 2^1000)
            let c = match SCALED {
                true => 1.0 / inv_c[l],
                false => 1.0,
            };
            let done = (dw * prod - w * dprod).abs() * (den * num).abs() * c
                < 1e-16 * (dlog_h.abs() * c) * (prod * prod);
            // a lane that converged runs on with its group; its values of
            // this round are the ones it gives
            let newly = h_done[l] & mask(done);
            for (end, now) in end.iter_mut().zip([den, num, dden, dnum]) {
                end[l] = select(newly, now, end[l]);
            }
            live[l] &= !newly;
        }
        if !any(&live) {
            break;
        }
    }
    let [den, num, dden, dnum] = end;
    let mut h = each(|l| num[l] / den[l] * inv_c[l]);
    nan_if_live(&live, &mut h);
    [h, each(|l| dnum[l] / num[l] - dden[l] / den[l])]
}

/// The continued fraction of the incomplete beta function (as in
/// `beta_cf`) with its logarithmic derivatives in `a` and `b`, carried
/// alongside it: `[h, ∂ ln h/∂a, ∂ ln h/∂b]`, without a division a step.
///
/// `h = 1/K` with `K = 1 + d₁/(1 + d₂/(1 + ...))`, `d_n = p_n / q_n`:
/// `p_{2m} = m (b - m) x`, `p_{2m+1} = -(a + m)(a + b + m) x` and
/// `q_n = (a + n - 1)(a + n)`. Multiplying the n-th partial numerator by
/// `c_{n-1} c_n` and denominator by `c_n`, with `c_1 = a + 1` and
/// `c_n = q_n` after, leaves `K` as it is and makes the fraction's terms
/// polynomials (`d₁`'s factor `a` cancels, which keeps small
/// concentrations from underflowing): the convergents `A_n / B_n` then
/// follow `A_n = c_n A_{n-1} + e_n A_{n-2}` (the same for `B`), with
/// `e_n = c_{n-1} p_n` (and `e₁ = p₁ / a`), and their partials follow these
/// differentiated; at the end `h = B/A` and
/// `∂ ln h = B'/B - A'/A`. Lentz's method, which this replaces, took two
/// divisions a step. Both `A` and `B` carry the factor `c₁ c₂ ... c_n`,
/// whose logarithmic partial `S_n` (about `2 ln n`) would cancel in
/// `∂ ln h` and leave it an absolute error of a few ulps of `S_n` (twice
/// Lentz's at the references); the partials in `a` are therefore carried as
/// those of `A / (c₁ ... c_n)` times it, `A' - S_n A`, whose recurrence is
/// the same with `c_n' = 0` and `e_n' - e_n ∂ ln c_n` in place of `e_n'`:
/// one division a step, for `∂ ln c_n`.
///
/// As in [`gamma_fraction_lanes`], the lanes take [`ROUND`] steps between
/// convergence tests, the state is rescaled by a power of two (exactly) at
/// each round's end, and `W_n = A_n B_{n-1} - A_{n-1} B_n` (which obeys
/// `W_n = -e_n W_{n-1}`) measures the last step without
/// cancellation: a lane stops once the last step changed `h` by less than
/// 10⁻¹⁶ of itself and each partial of `ln h` by less than 10⁻¹⁶ of itself
/// plus one (so that a partial near 0 does not hold it to the cap). A lane
/// that has converged keeps its values of that round's end and runs on
/// with its group, its `W` held at 0.
// a lane index runs over the state's arrays together: the loops vectorize
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn beta_fraction_lanes<const L: usize>([a, b, x]: &[[f64; L]; 3]) -> [[f64; L]; 3] {
    /// A value of each lane: `A` (`den`, `h`'s denominator) and `B` (`num`)
    /// and their partials in `a` and `b`, each as `[previous, current]`;
    /// `W` with its partials; `c_{n-1}`. The partials in `a` are kept less
    /// the part that the factor `c₁ ... c_n` gives them.
    struct State<const L: usize> {
        den: [[f64; L]; 2],
        num: [[f64; L]; 2],
        den_a: [[f64; L]; 2],
        num_a: [[f64; L]; 2],
        den_b: [[f64; L]; 2],
        num_b: [[f64; L]; 2],
        w: [f64; L],
        w_a: [f64; L],
        w_b: [f64; L],
        c: [f64; L],
    }
    /// The kinds of step: `n = 1`, odd `n` after it, even `n`.
    const FIRST: u8 = 0;
    const ODD: u8 = 1;
    const EVEN: u8 = 2;
    /// Step `n` of the recurrences, of the kind `KIND` (a constant, so that
    /// each step of a round compiles to its own straight-line code rather
    /// than computing every kind and blending).
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn step<const L: usize, const KIND: u8>(s: &mut State<L>, [a, b, x]: &[[f64; L]; 3], n: f64) {
        for l in 0..L {
            let (a, b, x) = (a[l], b[l], x[l]);
            let (p, p_a, p_b) = match KIND {
                // n = 1: p₁ over the a that c₁ leaves out
                FIRST => (-(a + b) * x, -x, -x),
                // n = 2m + 1
                ODD => {
                    let am = a + (n - 1.0) * 0.5;
                    let abm = am + b;
                    (-(am * abm) * x, -(am + abm) * x, -am * x)
                }
                // n = 2m
                _ => {
                    let mx = n * 0.5 * x;
                    (mx * (b - n * 0.5), 0.0, mx)
                }
            };
            // c_n, and ∂ ln c_n: a + 1 for n = 1, (a + n - 1)(a + n) after
            let (e0, e1) = (a + (n - 1.0), a + n);
            let (c, ln_c_a) = match KIND {
                FIRST => (e1, 1.0 / e1),
                _ => (e0 * e1, (e0 + e1) / (e0 * e1)),
            };
            let e = s.c[l] * p;
            // (the partials in a are those of A / (c₁ ... c_n), times it)
            let e_a = s.c[l].mul_add(p_a, -(e * ln_c_a));
            let e_b = s.c[l] * p_b;
            let advance =
                |v: &mut [[f64; L]; 2], va: &mut [[f64; L]; 2], vb: &mut [[f64; L]; 2]| {
                    let (v0, v1) = (v[0][l], v[1][l]);
                    let next = c.mul_add(v1, e * v0);
                    let next_a = c.mul_add(va[1][l], e.mul_add(va[0][l], e_a * v0));
                    let next_b = c.mul_add(vb[1][l], e.mul_add(vb[0][l], e_b * v0));
                    (v[0][l], v[1][l]) = (v1, next);
                    (va[0][l], va[1][l]) = (va[1][l], next_a);
                    (vb[0][l], vb[1][l]) = (vb[1][l], next_b);
                };
            advance(&mut s.den, &mut s.den_a, &mut s.den_b);
            advance(&mut s.num, &mut s.num_a, &mut s.num_b);
            let w = s.w[l];
            s.w[l] = -e * w;
            s.w_a[l] = -e_a.mul_add(w, e * s.w_a[l]);
            s.w_b[l] = -e_b.mul_add(w, e * s.w_b[l]);
            s.c[l] = c;
        }
    }
    let (zero, one) = ([0.0f64; L], [1.0f64; L]);
    // A_0 = 1, A_{-1} = 1, B_0 = 1, B_{-1} = 0, W_0 = -1, c_0 = 1
    let mut s = State {
        den: [one, one],
        num: [zero, one],
        den_a: [zero; 2],
        num_a: [zero; 2],
        den_b: [zero; 2],
        num_b: [zero; 2],
        w: [-1.0; L],
        w_a: zero,
        w_b: zero,
        c: one,
    };
    // [A, B, A_a, B_a, A_b, B_b] of the round each lane converged in
    let mut end = [zero; 6];
    let mut live = [u64::MAX; L];
    const {
        assert!(
            ROUND == 4,
            "a round is an odd, an even, an odd and an even step"
        )
    };
    let args = &[*a, *b, *x];
    for round in 0..(2 * step_cap(&[a, b])).div_ceil(ROUND) {
        let n = (round * ROUND) as f64;
        match round {
            0 => step::<L, FIRST>(&mut s, args, 1.0),
            _ => step::<L, ODD>(&mut s, args, n + 1.0),
        }
        step::<L, EVEN>(&mut s, args, n + 2.0);
        step::<L, ODD>(&mut s, args, n + 3.0);
        step::<L, EVEN>(&mut s, args, n + 4.0);
        for l in 0..L {
            // the largest |A|, |B| back to [1, 2), exactly
            let big = (s.den[0][l].abs().max(s.den[1][l].abs()))
                .max(s.num[0][l].abs().max(s.num[1][l].abs()));
            let k = pow2_inverse(big, -1000);
            for v in [
                &mut s.den,
                &mut s.num,
                &mut s.den_a,
                &mut s.num_a,
                &mut s.den_b,
                &mut s.num_b,
            ] {
                v[0][l] *= k;
                v[1][l] *= k;
            }
            s.w[l] *= k * k;
            s.w_a[l] *= k * k;
            s.w_b[l] *= k * k;
            let (den, num) = (s.den[1][l], s.num[1][l]);
            let (den_a, den_b, num_a, num_b) =
                (s.den_a[1][l], s.den_b[1][l], s.num_a[1][l], s.num_b[1][l]);
            // the last step multiplied h by 1 - W/P, P = A_n B_{n-1}, and
            // moved ∂ ln h by -(W'P - W P')/P² (to first order in W/P, which
            // the first test makes below 10⁻¹⁶), against ∂ ln h = (B'A - A'B)/(AB)
            let w = s.w[l];
            let prod = den * s.num[0][l];
            let ab = (den * num).abs();
            let small = |w_d: f64, prod_d: f64, total: f64| {
                (w_d * prod - w * prod_d).abs() * ab <= 1e-16 * (prod * prod) * (total.abs() + ab)
            };
            let done = w.abs() < 1e-16 * prod.abs()
                && small(
                    s.w_a[l],
                    den_a * s.num[0][l] + den * s.num_a[0][l],
                    num_a * den - den_a * num,
                )
                && small(
                    s.w_b[l],
                    den_b * s.num[0][l] + den * s.num_b[0][l],
                    num_b * den - den_b * num,
                );
            let newly = live[l] & mask(done);
            for (end, now) in end.iter_mut().zip([den, num, den_a, num_a, den_b, num_b]) {
                end[l] = select(newly, now, end[l]);
            }
            live[l] &= !mask(done);
            for w in [&mut s.w, &mut s.w_a, &mut s.w_b] {
                w[l] = f64::from_bits(w[l].to_bits() & live[l]);
            }
        }
        if !any(&live) {
            break;
        }
    }
    let [den, num, den_a, num_a, den_b, num_b] = end;
    let mut h = each(|l| num[l] / den[l]);
    nan_if_live(&live, &mut h);
    [
        h,
        each(|l| num_a[l] / num[l] - den_a[l] / den[l]),
        each(|l| num_b[l] / num[l] - den_b[l] / den[l]),
    ]
}

/// `(dx/da, dx/db)` of `Beta(a, b)` draws `x` at fixed CDF value (implicit
/// reparameterization), into `out`: `-(∂I/∂θ) / p(x)` for the regularized
/// incomplete beta function `I`, carried through the continued fraction that
/// evaluates it, in one pass and without `ln B`.
///
/// Below `(a + 1) / (a + b + 2)`, `I = x^a (1 - x)^b h(a, b, x) / (a B(a, b))`,
/// so `I / p = x (1 - x) h / a` and `∂ ln I/∂a = ln x - ψ(a) + ψ(a + b) +
/// ∂ ln h/∂a - 1/a` (likewise in `b`); above it the same holds for the upper
/// tail `1 - I` with the roles of `a` and `b` (and `x` and `1 - x`) swapped.
/// The draws advance [`BETA_LANES`] at a time under AVX-512 and
/// [`BETA_LANES_AVX2`] otherwise, each bit for bit as if alone.
pub(crate) fn beta_sample_grads(a: &[f64], b: &[f64], x: &[f64], out: &mut [[f64; 2]]) {
    vectorized(
        #[inline(always)]
        || {
            // the live draws, those below (a + 1) / (a + b + 2) and the
            // others, in two lists ([`sorted_lists`]): choosing the side per
            // draw in gathering each group's inputs and again in writing its
            // results took about a tenth of the derivatives' time. The steps
            // grow as `x` nears that point from either side: the bucket is
            // of `x` over it below, and of `1 - x` over `1` minus it above.
            let mut psi = [(); 3].map(|()| Digamma::new(digamma));
            for start in (0..out.len()).step_by(SORT_BLOCK) {
                let end = (start + SORT_BLOCK).min(out.len());
                // each draw's key (0: none; the lower side's buckets, then
                // the upper's) in a pass without branches, which vectorizes
                // (a branch on the side, which the draws make unpredictable,
                // held an eighth of the derivatives' time)
                let mut keys = [0u8; SORT_BLOCK];
                let keys = &mut keys[..end - start];
                let args = a[start..end].iter().zip(&b[start..end]).zip(&x[start..end]);
                for ((o, k), ((&a, &b), &x)) in out[start..end].iter_mut().zip(&mut *keys).zip(args)
                {
                    let invalid =
                        x.is_nan() | a.is_nan() | b.is_nan() | (a.max(b) > MAX_IMPLICIT_PARAMETER);
                    let edge = (x <= 0.0) | (x >= 1.0);
                    // NaN or 0; the live draws' values are written below
                    *o = [f64::from_bits(mask(invalid) & f64::NAN.to_bits()); 2];
                    let live = !invalid & !edge;
                    let total = a + b + 2.0;
                    let lower = mask(x * total < a + 1.0);
                    let r = select(lower, x, 1.0 - x) * total / select(lower, a + 1.0, b + 1.0);
                    let side = BUCKETS as u8 * u8::from(lower == 0);
                    *k = u8::from(live) * (1 + side + bucket(r));
                }
                let mut idx = [0; SORT_BLOCK];
                let sides = sorted_lists(&mut idx, start, keys);
                match tier() {
                    Tier::Avx512 => beta_sides::<BETA_LANES>(sides, [a, b, x], out, &mut psi),
                    _ => beta_sides::<BETA_LANES_AVX2>(sides, [a, b, x], out, &mut psi),
                }
            }
        },
    )
}

/// `ln x - ψ(a) + ψ(a + b)` and `ln(1 - x) - ψ(b) + ψ(a + b)` (the partials
/// of the log density's `x`-terms and `-ln B(a, b)`), from the memos of
/// `ψ(a)`, `ψ(b)` and `ψ(a + b)`.
#[inline(always)]
fn draw_slopes(
    [psi_a, psi_b, psi_ab]: &mut [Digamma; 3],
    a: f64,
    b: f64,
    [ln_x, ln_1mx]: [f64; 2],
) -> (f64, f64) {
    let psi_ab = psi_ab.at(a + b);
    (ln_x - psi_a.at(a) + psi_ab, ln_1mx - psi_b.at(b) + psi_ab)
}

/// [`beta_sample_grads`] of the draws listed in `lower` (below
/// `(a + 1) / (a + b + 2)`) and in `upper`, `L` at a time, with the
/// memos of `ψ(a)`, `ψ(b)` and `ψ(a + b)`.
#[inline(always)]
fn beta_sides<const L: usize>(
    (lower, upper): (&[usize], &[usize]),
    [a, b, x]: [&[f64]; 3],
    out: &mut [[f64; 2]],
    psi: &mut [Digamma; 3],
) {
    beta_grads_in_lanes::<L>(
        lower,
        inlined(
            #[inline(always)]
            |i: usize| [a[i], b[i], x[i], x[i]],
        ),
        inlined_finish(
            #[inline(always)]
            |i, [h, l1, l2, ln_x, ln_1mx]| {
                let (dl_a, dl_b) = draw_slopes(psi, a[i], b[i], [ln_x, ln_1mx]);
                let (a, x) = (a[i], x[i]);
                let ratio = x * (1.0 - x) * h / a; // I / p
                out[i] = [-ratio * (dl_a + l1 - 1.0 / a), -ratio * (dl_b + l2)];
            },
        ),
    );
    // the upper tail Q = 1 - I is the fraction in (b, a, 1 - x); the draw
    // itself comes last, for its logarithms
    beta_grads_in_lanes::<L>(
        upper,
        inlined(
            #[inline(always)]
            |i: usize| [b[i], a[i], 1.0 - x[i], x[i]],
        ),
        inlined_finish(
            #[inline(always)]
            |i, [h, l1, l2, ln_x, ln_1mx]| {
                let (dl_a, dl_b) = draw_slopes(psi, a[i], b[i], [ln_x, ln_1mx]);
                let (b, x) = (b[i], x[i]);
                let ratio = x * (1.0 - x) * h / b; // Q / p
                out[i] = [ratio * (dl_a + l2), ratio * (dl_b + l1 - 1.0 / b)];
            },
        ),
    );
}

/// One draw's `dx/da` through [`gamma_sample_grads`].
#[cfg(test)]
fn gamma_sample_grad(a: f64, x: f64) -> f64 {
    let mut out = [[0.0]];
    gamma_sample_grads(&[a], &[x], &mut out);
    out[0][0]
}

/// One draw's `(dx/da, dx/db)` through [`beta_sample_grads`].
#[cfg(test)]
fn beta_sample_grad(a: f64, b: f64, x: f64) -> (f64, f64) {
    let mut out = [[0.0; 2]];
    beta_sample_grads(&[a], &[b], &[x], &mut out);
    (out[0][0], out[0][1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two sides of `bessel_ratio`'s switch from the power series to
    /// the asymptotic one agree at the switch, in every output (a series
    /// cut short on either side would leave a step there); below it,
    /// `A'` agrees with `1 - A/κ - A²` where that difference keeps its
    /// digits (small `κ`).
    #[test]
    fn bessel_ratio_is_continuous_across_its_switch() {
        let at = BESSEL_ASYMPTOTIC_FROM;
        let (below, above) = (bessel_ratio(at * (1.0 - 1e-15)), bessel_ratio(at));
        for (i, (b, a)) in below.iter().zip(above).enumerate() {
            assert!((b - a).abs() <= 1e-13 * a.abs(), "output {i}: {b} vs {a}");
        }
        for k in [1e-6, 0.01, 0.3, 1.0] {
            let [_, a, _, slope] = bessel_ratio(k);
            let direct = 1.0 - a / k - a * a;
            assert!(
                (slope - direct).abs() <= 1e-14,
                "κ = {k}: {slope} vs {direct}"
            );
        }
    }

    /// `pow2_inverse` takes a value back to [1, 2) exactly across the
    /// exponents it covers (the product is `m`, its significand), and
    /// stops at the ends of its range: 2^-1000 past 2^1000, `2^-lowest`
    /// below `2^lowest`.
    #[test]
    fn pow2_inverse_scales_into_one_to_two() {
        for e in -1000..=1000 {
            for m in [1.0, 1.5, 2.0 - f64::EPSILON] {
                let v = m * 2f64.powi(e);
                let k = pow2_inverse(v, -1000);
                assert_eq!(v * k, m, "v = {m} 2^{e}");
                assert_eq!(k, 2f64.powi(-e));
            }
        }
        assert_eq!(pow2_inverse(1.5 * 2f64.powi(1010), -1000), 2f64.powi(-1000));
        assert_eq!(pow2_inverse(1e-310, -1000), 2f64.powi(1000));
        assert_eq!(pow2_inverse(0.25, 0), 1.0);
        assert_eq!(pow2_inverse(6.0, 0), 0.25);
    }

    /// The one-pass derivative against central differences of `P` (on the
    /// lower tail) or `Q` (upper), the way it was computed before.
    #[test]
    #[allow(clippy::excessive_precision)] // mpmath's 17 digits
    fn lgamma_differences_keep_their_digits() {
        // (x, h, ln Γ(x + h) - ln Γ(x)) from mpmath at 60 digits
        let cases = [
            (3.0, 1e-10, 9.227_843_351_182_138_8e-11),
            (1.0, 1e-10, -5.772_156_648_192_861_8e-11),
            (1e10, 1e-10, 2.302_585_092_989_045_8e-9),
            (0.5, 1e-20, -1.963_510_026_021_423_4e-20),
            (10.0, 1e-20, 2.251_752_589_066_721e-20),
            (2.5, 0.7, 0.600_721_956_681_989_74),
            (1e-10, 1e-10, -0.693_147_180_617_666_88),
            (1e5, 3.0, 34.538_806_394_660_688),
            (1e-300, 1.0, -690.775_527_898_213_71),
            (20.0, 1e15, 3.353_877_639_491_132e16),
            (7.0, 2e-16, 3.745_568_670_196_934_2e-16),
        ];
        for (x, h, want) in cases {
            let got = lgamma_diff(x, h);
            let err = ((got - want) / want).abs();
            assert!(
                err < 1e-14,
                "ln Γ({x} + {h:e}) - ln Γ({x}): {got:e} vs {want:e} ({err:e})"
            );
        }
        // near the minimum of ln Γ the difference is far below its terms
        // (about h ψ(x) each, ψ(x) ≈ 2.8 at 10): it keeps their absolute
        // accuracy
        let (x, h) = (1.461_632_144_968_362_2, 1e-8);
        let err = (lgamma_diff(x, h) - 4.838_361_120_066_679e-17).abs();
        assert!(err < 1e-23, "at the minimum: off by {err:e}");
        assert_eq!(lgamma_diff(3.0, 0.0), 0.0);
        assert!(lgamma_diff(f64::NAN, 1.0).is_nan() && lgamma_diff(1.0, f64::NAN).is_nan());
        assert_eq!(lgamma_diff(2.0, f64::INFINITY), f64::INFINITY);
        // outside the domain: the plain difference
        assert_eq!(lgamma_diff(10.5, -1.0), lgamma(9.5) - lgamma(10.5));
        assert_eq!(lgamma_diff(-0.5, 2.0), lgamma(1.5) - lgamma(-0.5));
    }

    #[test]
    fn gamma_sample_grad_matches_central_differences() {
        let central = |a: f64, x: f64| {
            let h = 1e-5 * a;
            let dp = if x < a - 1.0 / 3.0 {
                (gamma_pq(a + h, x).0 - gamma_pq(a - h, x).0) / (2.0 * h)
            } else {
                -(gamma_pq(a + h, x).1 - gamma_pq(a - h, x).1) / (2.0 * h)
            };
            -dp / ((a - 1.0) * x.ln() - x - lgamma(a)).exp()
        };
        for a in [0.05f64, 0.3, 0.9, 1.0, 2.5, 7.0, 30.0, 400.0] {
            for q in [0.01, 0.2, 0.5, 0.8, 0.99] {
                // x near the q-quantile, by bisection on P
                let (mut lo, mut hi) = (1e-300f64, a + 50.0 * a.sqrt() + 50.0);
                for _ in 0..200 {
                    let mid = 0.5 * (lo + hi);
                    if gamma_pq(a, mid).0 < q {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                let x = 0.5 * (lo + hi);
                let (got, want) = (gamma_sample_grad(a, x), central(a, x));
                assert!(
                    (got - want).abs() <= 1e-7 * want.abs() + 1e-300,
                    "a = {a}, x = {x}: {got} vs {want}"
                );
            }
        }
    }

    /// The upper branch (`x ≥ a + 1`, the continued fraction) against
    /// 50-digit references (`tests/data/gamma_upper_tail_reference.py`),
    /// `a` from 0.003 to 10⁵ and `x` from `a + 1` (where the fraction
    /// converges slowest) up, including integer `a`, at which the fraction's
    /// value terminates after `a` steps while its derivative does not.
    #[test]
    fn gamma_sample_grad_matches_references_on_the_upper_tail() {
        let file = crate::json::parse(include_bytes!(
            "../../tests/data/gamma_upper_tail_reference.json"
        ))
        .unwrap();
        let cases = file.get("cases").and_then(|c| c.as_array()).unwrap();
        assert_eq!(cases.len(), 55);
        for case in cases {
            let field = |k| case.get(k).and_then(|v| v.as_f64()).unwrap();
            let (a, x, want) = (field("a"), field("x"), field("dx_da"));
            assert!(x >= a + 1.0);
            let got = gamma_sample_grad(a, x);
            // a rounding a step, about 9 √a steps near x = a + 1
            let tol = 2e-14 * (a.sqrt() / 10.0).max(1.0);
            assert!(
                (got - want).abs() <= tol * want.abs(),
                "a = {a}, x = {x}: {got} vs {want} ({:.2e})",
                ((got - want) / want).abs()
            );
        }
    }

    /// `d ln x/da` from `ln x`: `dx/da / x` where `x` is a number, on both
    /// branches; where `x` underflows, the series' limit `S = 1/a`,
    /// `S' = -1/a²`: `-((ln x - ψ(a))/a - 1/a²)`, from the given `ln x`.
    #[test]
    fn gamma_sample_log_grad_is_the_grad_over_the_draw() {
        let log_grad = |a: f64, ln_x: f64| {
            let mut out = [[0.0]];
            gamma_sample_log_grads(&[a], &[ln_x], &mut out);
            out[0][0]
        };
        for (a, x) in [
            (0.3, 1e-200f64),
            (0.3, 0.2),
            (2.5, 1.0),
            (2.5, 6.0),
            (40.0, 55.0),
        ] {
            let (got, want) = (log_grad(a, x.ln()), gamma_sample_grad(a, x) / x);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs(),
                "a = {a}, x = {x}: {got} vs {want}"
            );
        }
        for (a, ln_x) in [(1e-3, -1e4), (1e-5, -3e6), (0.05, -800.0)] {
            let want = -((ln_x - digamma(a)) / a - 1.0 / (a * a));
            let got = log_grad(a, ln_x);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs(),
                "a = {a}, ln x = {ln_x}: {got} vs {want}"
            );
        }
        assert_eq!(log_grad(0.5, f64::NEG_INFINITY), 0.0);
        assert!(log_grad(0.5, f64::NAN).is_nan());
    }

    /// Far in the upper tail, `dx/da = (ln x - ψ(a)) (1 + O(a/x))`: draws
    /// given to `reparameterize` may be that large, and `b₀⁵` of the
    /// fraction's first round overflows past about 10⁶¹, which the scaled
    /// recurrences avoid (unscaled, these came out NaN).
    #[test]
    fn gamma_sample_grad_holds_for_huge_draws() {
        for x in [1e20, 1e30, 1e60, 1e100, 1e300, f64::MAX] {
            for a in [0.5, 2.0, 1e3] {
                let (got, want) = (gamma_sample_grad(a, x), x.ln() - digamma(a));
                assert!(
                    (got - want).abs() <= 1e-13 * want,
                    "a = {a}, x = {x:e}: {got} vs {want}"
                );
            }
        }
    }

    /// The scaled recurrences give the unscaled ones' bits wherever both
    /// run, so a group of lanes taking either does not change a draw.
    #[test]
    fn scaled_and_unscaled_fractions_agree_bit_for_bit() {
        // a from 0.003 to 1e9, x from a + 1 to 10^17 (a + 1)
        for i in 0..400 {
            let a: [f64; 8] =
                std::array::from_fn(|l| (f64::from(i * 8 + l as i32) * 0.0083).exp() * 0.003);
            let x: [f64; 8] = std::array::from_fn(|l| {
                let spread = 1.0 + 10f64.powf(f64::from((i * 13 + l as i32 * 7) % 170) / 10.0);
                (a[l] + 1.0) * spread
            });
            let plain = gamma_fraction_lanes::<8, false>(&[a, x]);
            let scaled = gamma_fraction_lanes::<8, true>(&[a, x]);
            for k in 0..2 {
                for l in 0..8 {
                    assert_eq!(
                        plain[k][l].to_bits(),
                        scaled[k][l].to_bits(),
                        "a = {}, x = {:e}: {} vs {}",
                        a[l],
                        x[l],
                        plain[k][l],
                        scaled[k][l]
                    );
                }
            }
        }
    }

    /// Near the median of `Gamma(a)` for large `a`, `dx/da = 1 + z / (2 √a)`
    /// to `O(1/a)`: the series and fraction must run as long as `a` needs
    /// (past 10⁷ they once stopped at a fixed count, 60 % off at 10⁸).
    #[test]
    fn gamma_sample_grad_converges_for_large_concentrations() {
        for a in [1e6f64, 1e7, 1e8, 1e9, MAX_IMPLICIT_PARAMETER] {
            for z in [-2.0, -0.5, 0.0, 0.5, 2.0] {
                let x = a + z * a.sqrt();
                let (got, want) = (gamma_sample_grad(a, x), 1.0 + z / (2.0 * a.sqrt()));
                assert!(
                    (got - want).abs() < 10.0 / a,
                    "a = {a}, z = {z}: {got} vs {want}"
                );
            }
        }
        let mut out = [[0.0]];
        gamma_sample_grads(&[2.0 * MAX_IMPLICIT_PARAMETER], &[1e10], &mut out);
        assert!(out[0][0].is_nan());
    }

    /// Uniform numbers in `[0, 1)` from a xorshift stream.
    fn uniforms(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The derivatives are the same bits on every instruction set (the
    /// kernels' fused multiply-adds are exact on each) and, across the
    /// blocks the draws are sorted in, the same as a draw's alone.
    #[test]
    fn every_tier_and_every_block_give_the_same_derivatives() {
        use crate::kernels::parallel::{Tier, on_tier};
        let mut u = uniforms(0x9e37_79b9_7f4a_7c15u64);
        // past two blocks, both branches, and b₀ past 2^64 (scaled fraction)
        let n = 4500;
        let a: Vec<f64> = (0..n).map(|_| (u() * 16.0 - 6.0).exp()).collect();
        let mut x: Vec<f64> = (0..n).map(|i| a[i] * (u() * 6.0 - 3.0).exp()).collect();
        x[4000] = 1e21;
        let ln_x: Vec<f64> = x.iter().map(|x| x.ln()).collect();
        let b: Vec<f64> = (0..n).map(|_| (u() * 12.0 - 6.0).exp()).collect();
        let y: Vec<f64> = (0..n).map(|_| u()).collect();
        let run = || {
            let mut g = vec![[0.0]; n];
            gamma_sample_grads(&a, &x, &mut g);
            let mut lg = vec![[0.0]; n];
            gamma_sample_log_grads(&a, &ln_x, &mut lg);
            let mut bg = vec![[0.0; 2]; n];
            beta_sample_grads(&a, &b, &y, &mut bg);
            let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (
                bits(g.as_flattened()),
                bits(lg.as_flattened()),
                bits(bg.as_flattened()),
            )
        };
        let portable = on_tier(Tier::Portable, run).expect("every CPU runs the portable tier");
        for tier in [Tier::Avx2Fma, Tier::Avx512] {
            match on_tier(tier, run) {
                Some(bits) => assert!(bits == portable, "{tier:?} computes other derivatives"),
                None => eprintln!("skipped {tier:?}: not on this CPU"),
            }
        }
        for i in 0..n {
            let alone = gamma_sample_grad(a[i], x[i]);
            assert_eq!(portable.0[i], alone.to_bits(), "draw {i} of x = {}", x[i]);
        }
    }

    /// The lane forms of `ln Γ`, ψ, ψ' and the corrections against the
    /// scalar functions (whose references are checked above) over twenty
    /// orders of magnitude each side of 1, near the zeros of `ln Γ` and ψ,
    /// at the switch to the asymptotic series and the ends of the lane
    /// range, and at arguments outside it (which the scalar functions
    /// take): within a few ulp of the value's scale, and identical bits
    /// whatever the lanes beside a value hold and on every tier.
    #[test]
    fn lane_forms_agree_with_the_scalar_functions_beside_any_values_on_any_tier() {
        use crate::kernels::parallel::{Tier, on_tier};
        let mut u = uniforms(0x2545_f491_4f6c_dd1d);
        let mut xs: Vec<f64> = (0..3000).map(|_| 10f64.powf(u() * 40.0 - 20.0)).collect();
        xs.extend((0..3000).map(|_| u() * 12.0));
        for k in 1..16 {
            let e = 10f64.powi(-k);
            xs.extend([
                1.0 + e,
                1.0 - e,
                2.0 + e,
                2.0 - e,
                1.461_632_144_968_362 + e,
            ]);
        }
        let edges = [
            0.8, 1.2, 1.8, 2.2, 1.5, 9.0, 10.0, 10.5, LANE_MIN, LANE_MAX, 3e160,
        ];
        xs.extend(edges.iter().flat_map(|&e| [e, e.next_down(), e.next_up()]));
        let outside = [
            f64::NAN,
            0.0,
            -0.0,
            -1.0,
            -2.5,
            -1e-3,
            1e-200,
            1e-310,
            f64::INFINITY,
        ];
        xs.extend(outside);
        xs.push(f64::NEG_INFINITY);
        type Pair = (
            &'static str,
            fn(f64) -> f64,
            fn(&[f64; 8]) -> [f64; 8],
            fn(&[f64; 1]) -> [f64; 1],
        );
        let pairs: [Pair; 6] = [
            ("lgamma", lgamma, lgamma_lanes::<8>, lgamma_lanes::<1>),
            ("digamma", digamma, digamma_lanes::<8>, digamma_lanes::<1>),
            (
                "trigamma",
                trigamma,
                trigamma_lanes::<8>,
                trigamma_lanes::<1>,
            ),
            (
                "C",
                lgamma_correction,
                lgamma_correction_lanes::<8>,
                lgamma_correction_lanes::<1>,
            ),
            (
                "C'",
                digamma_correction,
                digamma_correction_lanes::<8>,
                digamma_correction_lanes::<1>,
            ),
            (
                "C''",
                trigamma_correction,
                trigamma_correction_lanes::<8>,
                trigamma_correction_lanes::<1>,
            ),
        ];
        for (name, scalar, eight, one) in pairs {
            let alone: Vec<f64> = xs.iter().map(|&x| one(&[x])[0]).collect();
            for (&x, &got) in xs.iter().zip(&alone) {
                let want = scalar(x);
                if want.is_nan() || want.is_infinite() {
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "{name}({x:e}): {got:e}, scalar {want:e}"
                    );
                    continue;
                }
                // both carry an absolute error of a few ulp of the terms
                // that cancel where the value is small (up to about 15 for
                // ln Γ below 10 away from its zeros, 2 at ψ's zero)
                let scale = want.abs().max(1.0);
                assert!(
                    (got - want).abs() <= 2e-14 * scale,
                    "{name}({x:e}): {got:e}, scalar {want:e}"
                );
            }
            // each value in groups of eight among others, shuffled
            let mut order: Vec<usize> = (0..xs.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (u() * (i + 1) as f64) as usize % (i + 1));
            }
            let run = || {
                vectorized(
                    #[inline(always)]
                    || {
                        let mut got = vec![0.0; xs.len()];
                        for group in order.chunks(8) {
                            let mut v = [2.5; 8];
                            for (v, &i) in v.iter_mut().zip(group) {
                                *v = xs[i];
                            }
                            let r = eight(&v);
                            for (&r, &i) in r.iter().zip(group) {
                                got[i] = r;
                            }
                        }
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    },
                )
            };
            let alone: Vec<u64> = alone.iter().map(|v| v.to_bits()).collect();
            for tier in [Tier::Portable, Tier::Avx2Fma, Tier::Avx512] {
                match on_tier(tier, run) {
                    Some(bits) => assert!(
                        bits == alone,
                        "{name} on {tier:?}: other bits among other lanes"
                    ),
                    None => eprintln!("skipped {tier:?}: not on this CPU"),
                }
            }
        }
    }

    /// The two-argument lane forms (`ln B` and the shape divergence with
    /// its derivatives) against the scalar functions, over pairs from tiny
    /// to large (so that `ln B` takes its scalar branches too), equal pairs,
    /// and arguments outside the domain; and each lane's bits alone and
    /// among others.
    #[test]
    fn two_argument_lane_forms_agree_with_the_scalar_functions() {
        let mut u = uniforms(0x9e37_79b9_7f4a_7c15);
        let mut pairs: Vec<(f64, f64)> = (0..4000)
            .map(|_| (10f64.powf(u() * 8.0 - 4.0), 10f64.powf(u() * 8.0 - 4.0)))
            .collect();
        pairs.extend((0..2000).map(|_| (u() * 12.0, u() * 12.0)));
        pairs.extend([
            (2.5, 2.5),
            (1e-3, 1e-3),
            (9.99, 10.0),
            (1e9, 0.5),
            (f64::NAN, 1.0),
            (-1.5, 2.0),
            (0.0, 3.0),
            (1.0, f64::INFINITY),
        ]);
        let close = |what: &str, (a, b): (f64, f64), got: f64, want: f64| {
            if !want.is_finite() {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{what}({a:e}, {b:e}): {got:e}, scalar {want:e}"
                );
            } else {
                // both carry an absolute error of a few ulp of the terms
                // that cancel (ln Γ(a), ln Γ(b), and a ψ(a) or ψ(b))
                let terms = [want, lgamma(a), lgamma(b), a * digamma(a), b * digamma(b)];
                let scale = terms.iter().fold(1.0f64, |m, t| m.max(t.abs()));
                assert!(
                    (got - want).abs() <= 2e-14 * scale,
                    "{what}({a:e}, {b:e}): {got:e}, scalar {want:e}"
                );
            }
        };
        type Form = (
            &'static str,
            fn(f64, f64) -> f64,
            fn(&[f64; 8], &[f64; 8]) -> [f64; 8],
            fn(&[f64; 1], &[f64; 1]) -> [f64; 1],
        );
        let forms: [Form; 5] = [
            ("lbeta", lbeta, lbeta_lanes::<8>, lbeta_lanes::<1>),
            (
                "digamma_diff",
                digamma_diff,
                digamma_diff_lanes::<8>,
                digamma_diff_lanes::<1>,
            ),
            (
                "shape divergence",
                shape_divergence_direct,
                shape_divergence_lanes::<8>,
                shape_divergence_lanes::<1>,
            ),
            (
                "its derivative in a",
                shape_slope,
                |a, b| shape_divergence_grad_lanes::<8>(0, a, b),
                |a, b| shape_divergence_grad_lanes::<1>(0, a, b),
            ),
            (
                "its derivative in b",
                digamma_spread,
                |a, b| shape_divergence_grad_lanes::<8>(1, a, b),
                |a, b| shape_divergence_grad_lanes::<1>(1, a, b),
            ),
        ];
        for (what, scalar, eight, one) in forms {
            let alone: Vec<f64> = pairs.iter().map(|&(a, b)| one(&[a], &[b])[0]).collect();
            for (&pair, &got) in pairs.iter().zip(&alone) {
                close(what, pair, got, scalar(pair.0, pair.1));
            }
            for (k, group) in pairs.chunks(8).enumerate() {
                let (mut a, mut b) = ([1.5; 8], [2.5; 8]);
                for (l, &(x, y)) in group.iter().enumerate() {
                    (a[l], b[l]) = (x, y);
                }
                for (l, &r) in eight(&a, &b).iter().take(group.len()).enumerate() {
                    let want = alone[k * 8 + l];
                    assert!(
                        r.to_bits() == want.to_bits() || (r.is_nan() && want.is_nan()),
                        "{what} at {:?}: {r:e} among others, {want:e} alone",
                        group[l]
                    );
                }
            }
        }
        assert_eq!(
            lbeta_lanes(&[2.0, 3.0], &[3.0, 2.0]),
            [lbeta_lanes(&[2.0], &[3.0])[0]; 2]
        );
        // ψ(a) - ψ(a + b) keeps its relative accuracy, also where b is
        // small beside a (where the digammas agree in most digits)
        for &(a, b) in &pairs {
            for b in [b, a * 1e-6, a * 1e-12, 1e-18] {
                let (got, want) = (digamma_diff_lanes(&[a], &[b])[0], digamma_diff(a, b));
                if want.is_finite() && want != 0.0 {
                    let rel = ((got - want) / want).abs();
                    assert!(
                        rel <= 1e-13,
                        "digamma_diff({a:e}, {b:e}): {got:e}, scalar {want:e}"
                    );
                }
            }
        }
    }

    /// Each draw's derivatives are the same bits whether it is computed
    /// alone or among others that converge earlier or later (a lane's
    /// results are fixed once it converges), so results do not depend on
    /// how the draws are split over threads.
    #[test]
    fn a_draw_in_a_batch_gets_what_it_gets_alone() {
        let mut u = uniforms(0x2545_f491_4f6c_dd1du64);
        let n = 203;
        let mut a: Vec<f64> = (0..n).map(|_| (u() * 12.0 - 6.0).exp()).collect();
        let mut b: Vec<f64> = (0..n).map(|_| (u() * 12.0 - 6.0).exp()).collect();
        let mut x: Vec<f64> = (0..n).map(|i| a[i] * (u() * 6.0 - 3.0).exp()).collect();
        let mut y: Vec<f64> = (0..n).map(|_| u()).collect();
        (x[3], y[4], a[5], b[6], x[7], y[8]) = (f64::NAN, 0.0, f64::NAN, f64::NAN, 0.0, 1.0);
        (x[9], a[10]) = (f64::INFINITY, 1e12);
        let mut gamma = vec![[0.0]; n];
        gamma_sample_grads(&a, &x, &mut gamma);
        let mut beta = vec![[0.0; 2]; n];
        beta_sample_grads(&a, &b, &y, &mut beta);
        let same = |p: f64, q: f64| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan());
        for i in 0..n {
            let g = gamma_sample_grad(a[i], x[i]);
            assert!(same(gamma[i][0], g), "{i}: {} vs {g}", gamma[i][0]);
            let (ga, gb) = beta_sample_grad(a[i], b[i], y[i]);
            assert!(same(beta[i][0], ga) && same(beta[i][1], gb), "{i}");
        }
        assert!(gamma[10][0].is_nan() && gamma[9][0] == 0.0 && beta[8] == [0.0; 2]);
    }

    /// `ln_lanes` against libm's `ln` from the smallest subnormal to the
    /// largest finite value, a thousand points a binade: within 2 ulp (1 at
    /// worst when written); `ln_1m_lanes` against `ln_1p` on `(0, 1)`.
    #[test]
    fn ln_lanes_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut bits = 1u64;
        while bits < f64::MAX.to_bits() {
            let x: [f64; 8] = std::array::from_fn(|l| f64::from_bits(bits + 7919 * l as u64));
            let got = ln_lanes(&x);
            for l in 0..8 {
                let want = x[l].ln();
                let ulp =
                    (f64::from_bits(want.abs().to_bits() + 1) - want.abs()).max(f64::MIN_POSITIVE);
                let err = (got[l] - want).abs();
                assert!(err <= 2.0 * ulp, "ln {}: {} against {want}", x[l], got[l]);
                worst = worst.max(err / ulp);
            }
            bits = bits.saturating_add(bits / 997 + 1);
        }
        assert!(
            worst > 0.0,
            "the lanes never differ from libm: the check checks nothing"
        );
        // ln(1 - x) against ln_1p(-x), from the smallest x to the largest below 1
        let mut bits = 1u64;
        while bits < 1f64.to_bits() {
            let x: [f64; 8] = std::array::from_fn(|l| f64::from_bits(bits + 7919 * l as u64));
            let got = ln_1m_lanes(&x);
            for l in 0..8 {
                let want = (-x[l]).ln_1p();
                let ulp = f64::from_bits(want.abs().to_bits() + 1) - want.abs();
                assert!(
                    (got[l] - want).abs() <= 2.0 * ulp,
                    "ln(1 - {}): {} against {want}",
                    x[l],
                    got[l]
                );
            }
            bits = bits.saturating_add(bits / 997 + 1);
        }
    }

    /// The gap from `|v|` to the next float up, at least the smallest
    /// normal number.
    fn ulp(v: f64) -> f64 {
        (f64::from_bits(v.abs().to_bits() + 1) - v.abs()).max(f64::MIN_POSITIVE)
    }

    /// `exp_nonpositive_to_f32` against libm's `f64` exponential rounded to
    /// `f32`: within an ulp at 400 000 points of `[-87.3, 0]` and at the
    /// `f32` below 0.5 in magnitude from a sweep of their bits, below
    /// `f32::MIN_POSITIVE` where that is, and 1, 0 and NaN at the ends.
    #[test]
    fn exp_nonpositive_to_f32_is_within_an_ulp() {
        let ulp32 = |v: f32| f32::from_bits(v.to_bits() + 1) - v;
        let check = |x: [f64; 16]| {
            let got =
                exp_nonpositive_to_f32(x[..8].try_into().unwrap(), x[8..].try_into().unwrap());
            for l in 0..16 {
                let want = x[l].exp() as f32;
                if want < f32::MIN_POSITIVE {
                    assert!(got[l] < f32::MIN_POSITIVE, "e^{} = {} in f32", x[l], got[l]);
                } else {
                    let err = (got[l] - want).abs();
                    assert!(err <= ulp32(want), "e^{}: {} against {want}", x[l], got[l]);
                }
            }
        };
        let n = 400_000;
        for i in 0..n / 16 {
            check(std::array::from_fn(|l| {
                -87.3 * ((16 * i + l) as f64 / n as f64)
            }));
        }
        let mut bits = 1u32;
        while f32::from_bits(bits) < 0.5 {
            check(std::array::from_fn(|l| {
                -f64::from(f32::from_bits(bits + 31 * l as u32))
            }));
            bits += bits / 4096 + 1;
        }
        check(std::array::from_fn(|l| -87.3 - 2.0 * l as f64));
        let mut ends = [0.0; 16];
        ends[..6].copy_from_slice(&[0.0, -0.0, -1e300, -746.0, f64::NEG_INFINITY, f64::NAN]);
        let got =
            exp_nonpositive_to_f32(ends[..8].try_into().unwrap(), ends[8..].try_into().unwrap());
        assert_eq!(got[..5], [1.0, 1.0, 0.0, 0.0, 0.0]);
        assert!(got[5].is_nan());
    }

    /// `exp_and_exp_m1_nonpositive_lanes` gives the bits of
    /// `exp_and_exp_m1_lanes` from 0 down to where `e^x` leaves the normal
    /// numbers and a little beyond, and 0 or those bits below (`e^x - 1`
    /// the same bits everywhere).
    #[test]
    fn the_nonpositive_exponential_is_the_general_one() {
        let n = 100_000;
        for i in 0..n / 8 {
            let x: [f64; 8] = std::array::from_fn(|l| -746.0 * ((8 * i + l) as f64 / n as f64));
            let (want, want_m1) = exp_and_exp_m1_lanes(&x);
            let (got, got_m1) = exp_and_exp_m1_nonpositive_lanes(&x);
            assert_eq!(got_m1.map(f64::to_bits), want_m1.map(f64::to_bits), "{x:?}");
            for l in 0..8 {
                // (k = -1022 down to e^x = 2^-1022.5, 0.71 of the smallest
                // normal number)
                if want[l] >= f64::MIN_POSITIVE * 0.75 {
                    assert_eq!(got[l].to_bits(), want[l].to_bits(), "e^{}", x[l]);
                } else {
                    assert!(got[l] == 0.0 || got[l] == want[l], "e^{}: {}", x[l], got[l]);
                }
            }
        }
        let (e, m1) = exp_and_exp_m1_nonpositive_lanes(&[0.0, -0.0, -1e300, f64::NAN]);
        assert_eq!(
            (&e[..3], &m1[..3]),
            (&[1.0, 1.0, 0.0][..], &[0.0, 0.0, -1.0][..])
        );
        assert!(e[3].is_nan() && m1[3].is_nan());
    }

    /// `exp_m1_lanes` against libm at 200 000 evenly spaced points of `[-2,
    /// 2]`: within 2 ulp where the polynomial is the result and where it is
    /// scaled and 1 taken away (the sparser sweep below missed 4 to 6 ulp
    /// there when `e^x - 1` was `e^x` less 1).
    #[test]
    fn exp_m1_lanes_are_within_two_ulp_near_zero() {
        let n = 200_000;
        for i in 0..n / 8 {
            let x: [f64; 8] = std::array::from_fn(|l| -2.0 + 4.0 * ((8 * i + l) as f64 / n as f64));
            let got = exp_m1_lanes(&x);
            for l in 0..8 {
                let want = x[l].exp_m1();
                assert!(
                    (got[l] - want).abs() <= 2.0 * ulp(want),
                    "exp_m1 {}: {} against {want}",
                    x[l],
                    got[l]
                );
            }
        }
    }

    /// `exp_lanes` and `exp_m1_lanes` against libm from -750 to 712, a
    /// thousand points a binade of `|x|` on both sides of 0: within 2 ulp
    /// of the result where it is normal, 0, -1 and `+inf` beyond the range.
    #[test]
    fn exp_lanes_are_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut bits = 1u64;
        while bits < 750f64.to_bits() {
            for sign in [1.0, -1.0] {
                let x: [f64; 8] =
                    std::array::from_fn(|l| sign * f64::from_bits(bits + 7919 * l as u64));
                let (got, got_m1) = (exp_lanes(&x), exp_m1_lanes(&x));
                for l in 0..8 {
                    for (got, want, what) in [
                        (got[l], x[l].exp(), "exp"),
                        (got_m1[l], x[l].exp_m1(), "exp_m1"),
                    ] {
                        let err = (got - want).abs();
                        let fine = err <= 2.0 * ulp(want) || (want.is_infinite() && got == want);
                        assert!(fine, "{what} {}: {got} against {want}", x[l]);
                        if want.is_finite() {
                            worst = worst.max(err / ulp(want));
                        }
                    }
                }
            }
            bits = bits.saturating_add(bits / 997 + 1);
        }
        assert!(
            worst > 0.0,
            "the lanes never differ from libm: the check checks nothing"
        );
        // every float within 64 of `±ln(2)/2`, where the range reduction
        // changes from `k = 0` to `k = ±1`
        let half_ln2 = 0.5 * std::f64::consts::LN_2;
        for sign in [1.0, -1.0] {
            for step in (-64..64).step_by(8) {
                let x: [f64; 8] = std::array::from_fn(|l| {
                    sign * f64::from_bits((half_ln2.to_bits() as i64 + step + l as i64) as u64)
                });
                let got = exp_m1_lanes(&x);
                for l in 0..8 {
                    let want = x[l].exp_m1();
                    assert!((got[l] - want).abs() <= 2.0 * ulp(want), "exp_m1 {}", x[l]);
                }
            }
        }
        let x = [-1e300, -746.0, -745.2, 709.8, 710.0, 1e300, 0.0, -0.0];
        assert_eq!(
            exp_lanes(&x),
            [
                0.0,
                0.0,
                0.0,
                f64::INFINITY,
                f64::INFINITY,
                f64::INFINITY,
                1.0,
                1.0
            ]
        );
        let m1 = exp_m1_lanes(&x);
        assert_eq!(m1[..3], [-1.0; 3]);
        assert_eq!(m1[3..6], [f64::INFINITY; 3]);
        assert_eq!((m1[6], m1[7]), (0.0, 0.0));
    }

    /// The one-pass Beta derivatives against central differences of the
    /// incomplete beta function on the smaller tail.
    #[test]
    fn beta_sample_grad_matches_central_differences() {
        let central = |a: f64, b: f64, x: f64| {
            let lower = beta_pq(a, b, x).0 < 0.5;
            let tail = |a: f64, b: f64| {
                let (p, q) = beta_pq(a, b, x);
                if lower { p } else { -q }
            };
            let (ha, hb) = (1e-5 * a, 1e-5 * b);
            let da = (tail(a + ha, b) - tail(a - ha, b)) / (2.0 * ha);
            let db = (tail(a, b + hb) - tail(a, b - hb)) / (2.0 * hb);
            let density = ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - lbeta(a, b)).exp();
            (-da / density, -db / density)
        };
        for (a, b) in [
            (0.05f64, 0.05f64),
            (0.3, 2.0),
            (1.0, 1.0),
            (2.5, 0.7),
            (7.0, 3.0),
            (30.0, 45.0),
            (400.0, 2.0),
            (0.5, 300.0),
        ] {
            for q in [0.01, 0.2, 0.5, 0.8, 0.99] {
                let (mut lo, mut hi) = (0.0f64, 1.0f64);
                for _ in 0..200 {
                    let mid = 0.5 * (lo + hi);
                    if beta_pq(a, b, mid).0 < q {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                let x = 0.5 * (lo + hi);
                if x <= 0.0 || x >= 1.0 {
                    continue;
                }
                let (got, want) = (beta_sample_grad(a, b, x), central(a, b, x));
                for (g, w) in [(got.0, want.0), (got.1, want.1)] {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.abs() + 1e-12,
                        "a = {a}, b = {b}, x = {x}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    /// The memo gives exactly `digamma`'s value for any sequence of
    /// arguments: repeated, alternating, NaN, and a pole.
    #[test]
    fn digamma_memo_returns_what_digamma_returns() {
        let mut memo = Digamma::new(digamma);
        let xs = [
            2.5,
            2.5,
            0.7,
            2.5,
            f64::NAN,
            f64::NAN,
            0.0,
            -1.5,
            -1.5,
            1e-300,
            2.5,
        ];
        for x in xs {
            let (got, want) = (memo.at(x), digamma(x));
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn zeta_matches_closed_forms() {
        assert!((zeta(2) - PI * PI / 6.0).abs() < 4e-15);
        assert!((zeta(4) - PI.powi(4) / 90.0).abs() < 4e-15);
        assert!((zeta(6) - PI.powi(6) / 945.0).abs() < 4e-15);
    }

    #[test]
    fn lgamma_at_integers_and_half_integers() {
        let mut fact = 1.0f64;
        for n in 1..30 {
            // Γ(n) = (n - 1)!
            let got = lgamma(n as f64);
            let want = fact.ln();
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1e-300),
                "{n}: {got} {want}"
            );
            fact *= n as f64;
        }
        // Γ(1/2) = sqrt(pi)
        assert!((lgamma(0.5) - 0.5 * PI.ln()).abs() < 4e-15);
        // relative accuracy where ln Γ crosses zero: ln Γ(1 + z) = -γ z + ζ(2) z² / 2 + O(z³)
        for base in [1.0, 2.0] {
            let x: f64 = base + 1e-7;
            let z = x - base; // exact
            let slope = if base == 1.0 { -EULER } else { 1.0 - EULER };
            let curvature = if base == 1.0 {
                PI * PI / 6.0
            } else {
                PI * PI / 6.0 - 1.0
            };
            let want = slope * z + 0.5 * curvature * z * z;
            assert!((lgamma(x) / want - 1.0).abs() < 1e-12, "{base}");
        }
    }

    #[test]
    fn tetragamma_and_pentagamma_match_their_closed_forms() {
        // ψ''(1) = -2ζ(3), ψ'''(1) = 6ζ(4) = π⁴/15, ψ''(1/2) = -14ζ(3),
        // ψ'''(1/2) = π⁴
        let zeta3 = 1.202_056_903_159_594_3;
        let pi4 = PI.powi(4);
        for (x, second, third) in [(1.0, -2.0 * zeta3, pi4 / 15.0), (0.5, -14.0 * zeta3, pi4)] {
            let (s, t) = tetragamma_pentagamma(x);
            assert!(
                ((s - second) / second).abs() < 4e-16,
                "ψ''({x}) = {s} vs {second}"
            );
            assert!(
                ((t - third) / third).abs() < 4e-16,
                "ψ'''({x}) = {t} vs {third}"
            );
        }
        // against central differences of trigamma and of ψ'' itself, on
        // both sides of the switch to the series at 20
        for x in [3.3, 19.5, 20.0, 20.5, 57.0, 1e4] {
            let h = 1e-4 * x;
            let (s, t) = tetragamma_pentagamma(x);
            let numeric = (trigamma(x + h) - trigamma(x - h)) / (2.0 * h);
            assert!(
                ((s - numeric) / s).abs() < 1e-7,
                "ψ''({x}) = {s} vs {numeric}"
            );
            let (sp, sm) = (
                tetragamma_pentagamma(x + h).0,
                tetragamma_pentagamma(x - h).0,
            );
            let numeric = (sp - sm) / (2.0 * h);
            assert!(
                ((t - numeric) / t).abs() < 1e-7,
                "ψ'''({x}) = {t} vs {numeric}"
            );
        }
        // the recurrences at a small x
        let ((s, t), (s1, t1)) = (tetragamma_pentagamma(1e-3), tetragamma_pentagamma(1.001));
        assert!(((s - (s1 - 2e9)) / s).abs() < 4e-16 && ((t - (t1 + 6e12)) / t).abs() < 4e-16);
        assert!(tetragamma_pentagamma(0.0).0.is_nan() && tetragamma_pentagamma(-1.0).1.is_nan());
    }

    #[test]
    fn digamma_and_trigamma_agree_with_differences_and_identities() {
        for &x in &[0.3, 1.0, 1.7, 2.5, 9.9, 10.1, 55.0, -0.5, -2.3] {
            let h = 1e-5;
            let d = (lgamma(x + h) - lgamma(x - h)) / (2.0 * h);
            assert!((digamma(x) - d).abs() < 1e-7 * d.abs().max(1.0), "{x}");
            let t = (digamma(x + h) - digamma(x - h)) / (2.0 * h);
            assert!((trigamma(x) - t).abs() < 1e-6 * t.abs().max(1.0), "{x}");
        }
        assert!((digamma(1.0) + EULER).abs() < 4e-15);
        assert!((trigamma(1.0) - PI * PI / 6.0).abs() < 5e-14);
    }

    fn close(got: f64, want: f64, rel: f64, what: &str) {
        assert!(
            (got - want).abs() <= rel * want.abs(),
            "{what}: {got:e} vs {want:e}, relative error {:e}",
            (got - want).abs() / want.abs()
        );
    }

    /// The corrections against mpmath (60 digits), and their two branches
    /// (from `ln Γ`, ψ, ψ' below 10; the asymptotic series from 10) against
    /// each other on both sides of the switch, where both are accurate.
    #[test]
    #[allow(clippy::excessive_precision)] // mpmath's 17 digits
    fn lgamma_corrections_match_references_and_agree_across_their_branches() {
        close(
            lgamma_correction(0.3),
            0.236_064_900_748_215_59,
            1e-14,
            "C(0.3)",
        );
        close(
            lgamma_correction(10.0),
            0.008_330_563_433_362_871_3,
            1e-13,
            "C(10)",
        );
        close(
            lgamma_correction(1e7),
            8.333_333_333_333_330_6e-9,
            1e-14,
            "C(1e7)",
        );
        assert_eq!(lgamma_correction(f64::INFINITY), 0.0);
        for x in [8.0, 9.5, 10.0, 12.0, 20.0] {
            let direct = lgamma(x) - ((x - 0.5) * x.ln() - x + HALF_LN_2PI);
            close(stirling_tail(x), direct, 1e-12, &format!("C({x})"));
            let direct = digamma(x) - x.ln() + 0.5 / x;
            close(-digamma_tail(x), direct, 1e-10, &format!("C'({x})"));
            let direct = trigamma(x) - 1.0 / x - 0.5 / (x * x);
            close(trigamma_tail(x), direct, 1e-8, &format!("C''({x})"));
        }
        // each is the derivative of the one before (central differences)
        for x in [0.4, 3.0, 10.0, 250.0] {
            let h = 1e-4 * x;
            let d = (lgamma_correction(x + h) - lgamma_correction(x - h)) / (2.0 * h);
            close(digamma_correction(x), d, 1e-6, &format!("C' at {x}"));
            let d = (digamma_correction(x + h) - digamma_correction(x - h)) / (2.0 * h);
            close(trigamma_correction(x), d, 1e-6, &format!("C'' at {x}"));
        }
    }

    /// `ln B`, `ψ(a) - ψ(a + b)`, `ψ'(a) - ψ'(a + b)` and `bd0` against
    /// mpmath (80 digits) where the direct formulas lose their digits, and
    /// against the direct formulas where those are exact enough.
    #[test]
    #[allow(clippy::excessive_precision)] // mpmath's 17 digits
    fn differences_of_special_functions_keep_their_digits_for_large_arguments() {
        // (a, b, ln B(a, b)): one large, both large, one past 10
        for (a, b, want) in [
            (1e10, 0.5, -10.940_560_522_033_028),
            (3e8, 1e8, -224_934_065.995_084_14),
            (12.5, 2e7, -191.406_191_475_791_15),
        ] {
            close(lbeta(a, b), want, 1e-14, &format!("lbeta({a}, {b})"));
            close(lbeta(b, a), want, 1e-14, &format!("lbeta({b}, {a})"));
        }
        for (a, b) in [(2.0, 3.0), (0.3, 7.0), (1e-3, 0.5), (4.0, 9.5)] {
            let direct = lgamma(a) + lgamma(b) - lgamma(a + b);
            close(lbeta(a, b), direct, 1e-14, &format!("lbeta({a}, {b})"));
        }
        close(lbeta(2.0, 3.0), -(12f64.ln()), 1e-15, "B(2, 3) = 1/12");
        assert!(lbeta(f64::NAN, 1.0).is_nan() && lbeta(1.0, f64::NAN).is_nan());

        close(
            digamma_diff(1e9, 0.5),
            -5.000_000_001_25e-10,
            1e-12,
            "ψ(1e9) - ψ(1e9 + 1/2)",
        );
        close(
            digamma_diff(40.0, 3.0),
            -0.073_199_767_711_962_834,
            1e-14,
            "ψ(40) - ψ(43)",
        );
        close(
            digamma_diff(2.5, 1e6),
            digamma(2.5) - digamma(1e6 + 2.5),
            1e-15,
            "small a",
        );
        close(
            trigamma_diff(1e6, 2.0),
            1.999_998_000_003e-12,
            1e-12,
            "ψ'(1e6) - ψ'(1e6 + 2)",
        );
        close(
            trigamma_diff(40.0, 3.0),
            trigamma(40.0) - trigamma(43.0),
            1e-12,
            "ψ'(40) - ψ'(43)",
        );

        close(
            bd0(1e10, 1e10 + 1e5),
            0.499_996_666_691_666_47,
            1e-14,
            "bd0 near a = y",
        );
        close(
            bd0(3.0, 1e-5),
            34.834_623_260_915_014,
            1e-14,
            "bd0 far from a = y",
        );
        assert_eq!(bd0(7.0, 7.0), 0.0);
        assert_eq!(bd0(0.0, 2.5), 2.5);
        assert_eq!(bd0(3.0, f64::INFINITY), f64::INFINITY);
        assert!(bd0(f64::NAN, 1.0).is_nan());
        // both sides of the switch to the series at |a - y| = (a + y) / 10
        for y in [8.1f64, 8.2, 12.2, 12.3] {
            let direct = 10.0 * (10.0 / y).ln() + y - 10.0;
            close(bd0(10.0, y), direct, 1e-13, &format!("bd0(10, {y})"));
        }
        // ln P(k; λ) for a count of 10¹⁰ at its rate (mpmath), and the
        // direct formula for small counts
        close(
            poisson_log_mass(1e10, 1e10),
            -12.431_863_998_183_234,
            1e-14,
            "Poisson 1e10",
        );
        for (k, rate) in [
            (0.0f64, 3.5f64),
            (0.5, 2.0),
            (1.0, 0.2),
            (4.0, 3.5),
            (12.0, 40.0),
        ] {
            let direct = k * rate.ln() - rate - lgamma(k + 1.0);
            close(
                poisson_log_mass(k, rate),
                direct,
                1e-14,
                &format!("Poisson({rate}) at {k}"),
            );
        }
        // ln(a / y) from the logarithms when the ratio overflows
        close(
            ln_ratio(1e300, 1e-300),
            600.0 * 10f64.ln(),
            1e-15,
            "ln_ratio",
        );
    }

    /// The `N`-point Gauss–Legendre rules, the four- and eight-point ones
    /// of [`taylor_remainder`] and the 32-point one [`legendre_rule`] builds
    /// for the von Mises draws' slopes, integrate every power up to `x^(2N
    /// - 1)` over `[-1, 1]` to its value `2 / (n + 1)` (odd ones to 0).
    #[test]
    fn the_gauss_legendre_rules_are_exact_to_degree_2n_minus_1() {
        let rules: [(&[(f64, f64)], f64); 3] = [
            (&GAUSS_LEGENDRE_4, 1e-15),
            (&GAUSS_LEGENDRE_8, 1e-15),
            (&legendre_rule::<32>(), 2e-15),
        ];
        for (rule, tolerance) in rules {
            let points = rule.len();
            for n in 0..2 * points as i32 {
                let sum: f64 = rule.iter().map(|&(x, w)| w * x.powi(n)).sum();
                let want = match n % 2 {
                    0 => 2.0 / f64::from(n + 1),
                    _ => 0.0,
                };
                assert!(
                    (sum - want).abs() <= tolerance,
                    "{points}: x^{n}: {sum} vs {want}"
                );
            }
        }
    }

    /// A Taylor remainder of a polynomial of degree at most 16 (`(1 - u)`
    /// times its second derivative of degree 15) is exact, and of `e^x`,
    /// `e^δ - 1 - δ`.
    #[test]
    fn taylor_remainders_are_exact_for_polynomials_and_exp() {
        // f(x) = x^16 from a = 0.5 by δ = 0.3
        let (a, d) = (0.5f64, 0.3f64);
        let got = taylor_remainder(0.1, |u| d * d * 240.0 * (a + u * d).powi(14));
        let want = (a + d).powi(16) - a.powi(16) - 16.0 * a.powi(15) * d;
        // (a few ulp: the rounding of eight terms and of the three powers)
        assert!((got - want).abs() <= 4e-15 * want, "{got} vs {want}");
        for d in [1e-8f64, -1e-3, 0.1, -0.1] {
            // (e^x has no singularity: either rule)
            let [[weighted], [whole]] = remainder_integrals(d.abs(), |u| [d * d * (u * d).exp()]);
            // e^δ - 1 - δ from its series (the difference would cancel)
            let (mut term, mut want) = (d, 0.0);
            for n in 2..20 {
                term *= d / f64::from(n);
                want += term;
            }
            assert!(
                (weighted - want).abs() <= 1e-15 * want,
                "{d}: {weighted} vs {want}"
            );
            // the second integral times 1/δ: f'(a + δ) - f'(a) = e^δ - 1
            assert!(
                (whole / d - d.exp_m1()).abs() <= 1e-15 * d.exp_m1().abs(),
                "{d}"
            );
        }
    }

    /// Where two concentrations are [`shapes_near`] (within an eighth of
    /// the smaller), the shape divergence is a Taylor remainder; at the
    /// edge of that range the direct sum
    /// still keeps its digits, and the two agree; well inside it, the
    /// remainder keeps the relative accuracy the sum loses (an mpmath
    /// value: `D(0.0376, 0.0376 + 1.3e-12)`, as in its doc).
    #[test]
    fn near_shape_divergences_agree_with_the_direct_sum_at_the_edge() {
        for a in [1e-3, 0.0376, 0.7, 3.0, 9.9, 40.0, 1e3] {
            for b in [a * 1.124, a / 1.124] {
                assert!(shapes_near(a, b), "{a} {b}");
                let near = shape_divergence_direct(a, b);
                let direct = (a - b) * digamma(a) - lgamma(a) + lgamma(b);
                // the direct sum's error: a few ulp of its largest term
                let scale = lgamma(a).abs().max((a * digamma(a)).abs()).max(1.0);
                assert!(
                    (near - direct).abs() <= 1e-14 * scale,
                    "{a} {b}: {near} vs {direct}"
                );
                let spread = digamma(b) - digamma(a);
                let scale = digamma(a).abs().max(1.0);
                assert!(
                    (digamma_spread(a, b) - spread).abs() <= 1e-14 * scale,
                    "{a} {b}"
                );
            }
        }
        let (a, b) = (0.0375810208842628, 0.03758102088295629);
        // mpmath at 50 digits: (a - b) ψ(a) - ln Γ(a) + ln Γ(b)
        let want = 6.0563895643313399e-22;
        let got = shape_divergence_direct(a, b);
        assert!((got - want).abs() <= 1e-14 * want, "{got:e} vs {want:e}");
    }
}
