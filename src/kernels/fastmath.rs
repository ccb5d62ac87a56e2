//! Branch-free `f32` exp, ln, log1p, softplus and sigmoid that the compiler
//! can vectorize (glibc's scalar `log1pf` costs ~11 ns per element here).
//! Accuracy: a few ulp over the whole range (see the tests); `f64` keeps
//! the platform's libm so that reference values match to 1e-9 and better.

/// `ln 2` split so that `k * LN2_HI` is exact for `|k| < 2^7`.
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;
const LOG2E: f32 = std::f32::consts::LOG2_E;

/// `e^x`: `x = n ln2 + r`, `|r| <= ln2/2`, degree-6 Taylor polynomial for
/// `e^r` (its truncation, `r^7/7!`, is near an ulp where `r` nears
/// `-ln(2)/2`: within 2 ulp in all, by the tests), scaled by `2^n` through
/// the exponent bits.
/// Returns 0 below -87.3 (flushing a few subnormals) and +inf above 88.72; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (p, ni) = exp_parts(x.clamp(-87.3, 88.72));
    // 2^n as two factors so that n = 128 and n = -126 stay representable
    let half = ni >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x < -87.3 {
        0.0
    } else if x > 88.72 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `(e^r, n)` with `e^xc = e^r 2^n`, for `xc` in `[-87.3, 88.72]`.
#[inline(always)]
fn exp_parts(xc: f32) -> (f32, i32) {
    // Round to nearest with the 1.5 * 2^23 trick (f32::round is a libm call
    // without SSE4.1); the integer n is then in the low mantissa bits of t.
    let t = xc * LOG2E + ROUNDER;
    let n = t - ROUNDER;
    let ni = t.to_bits() as i32 - 0x4B40_0000;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Estrin's scheme: pairs of terms, combined by r^2 and r^4
    let (r2, r4) = (r * r, (r * r) * (r * r));
    let p = 1.0
        + (r + (r2 * (0.5 + r * (1.0 / 6.0))
            + r4 * ((1.0 / 24.0 + r * (1.0 / 120.0)) + r2 * (1.0 / 720.0))));
    (p, ni)
}

/// [`exp`] of an `x` that is not positive (or is NaN), with the same bits,
/// for `e^-|x|` in the sigmoid and softplus: there `n` is in `[-126, 0]`,
/// so `2^n` is one normal number (and `p 2^n` rounds once, as `p s1 s2`
/// does), and there is no overflow to check.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    debug_assert!(x <= 0.0 || x.is_nan(), "exp_nonpositive({x})");
    let (p, ni) = exp_parts(x.max(-87.3));
    let y = p * f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `P` of `ln(1 + f) = f + f² (f P(f) - 1/2)` on `f` in `[√½ - 1, √2 - 1]`,
/// of degree 8, fitted (reweighted least squares) to the relative error of
/// the sum: below 4e-9 (under a tenth of an `f32` ulp) before the
/// evaluation's rounding. `examples/fit_ln_polynomial.py` computes them.
const LN1P: [f32; 9] = [
    0.333_333_22,
    -0.249_999_93,
    0.200_014_53,
    -0.166_685_06,
    0.142_329_44,
    -0.124_040_78,
    0.117_908_046,
    -0.116_492_28,
    0.069_286_28,
];

/// `ln(1 + f)` for `f` in `[√½ - 1, √2 - 1]`, without a division.
#[inline(always)]
fn ln1p_reduced(f: f32) -> f32 {
    let c = LN1P;
    let (f2, f4) = (f * f, (f * f) * (f * f));
    // Estrin's scheme, as in `exp`
    let p = ((c[0] + f * c[1]) + f2 * (c[2] + f * c[3]))
        + f4 * (((c[4] + f * c[5]) + f2 * (c[6] + f * c[7])) + f4 * c[8]);
    f + f2 * (f * p - 0.5)
}

/// `(k, ln m)` for a positive, finite, normal `x = m 2^k` with `m` in
/// `[√½, √2)` (`ln m` as `ln(1 + (m - 1))`, `m - 1` exact), so that
/// `ln x = k ln 2 + ln m`.
#[inline(always)]
fn ln_normal(x: f32) -> (f32, f32) {
    let bits = x.to_bits();
    let mut k = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    (k as f32, ln1p_reduced(m - 1.0))
}

/// `ln(1 + e)` for `e` in `[0, 1]` from `u = 1 + e` (rounded) and its
/// reciprocal `inv_u`, which the callers need anyway: `ln u` plus the
/// rounding error of `u`, `e - (u - 1)` (exact), divided by `u`. Exact for
/// tiny `e`, where `u` rounds to 1. `u` is in `[1, 2]`, where
/// [`ln_normal`]'s reduction is `(0, u)` up to `√2` and `(1, u / 2)` above,
/// taken here without reading the exponent bits (the same values).
#[inline(always)]
fn log1p_unit(e: f32, u: f32, inv_u: f32) -> f32 {
    let above = u > std::f32::consts::SQRT_2;
    let (k, m) = if above { (1.0, u * 0.5) } else { (0.0, u) };
    let ln_m = ln1p_reduced(m - 1.0);
    k * LN2_HI + (ln_m + k * LN2_LO) + (e - (u - 1.0)) * inv_u
}

/// Natural logarithm, through [`ln_normal`]. Handles 0, negatives, inf and
/// NaN like `f32::ln`; subnormals are treated through a rescale.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 8_388_608.0 } else { x }; // 2^23
    let (k, ln_m) = ln_normal(xs);
    let kf = k - if sub { 23.0 } else { 0.0 };
    let y = kf * LN2_HI + (ln_m + kf * LN2_LO);
    if x == 0.0 {
        f32::NEG_INFINITY
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else if x == f32::INFINITY {
        x
    } else {
        y
    }
}

/// [`ln`] of an `x` known not to be below the smallest normal number
/// (`f32::MIN_POSITIVE`), with the same bits, and `x` itself for +inf and
/// NaN: without the checks for subnormals, zero and negatives, which are
/// most of [`ln`]'s cost beside the polynomial. Below `MIN_POSITIVE` the
/// result is wrong (a debug build panics).
#[inline(always)]
pub fn ln_of_normal(x: f32) -> f32 {
    debug_assert!(x >= f32::MIN_POSITIVE || x.is_nan(), "ln_of_normal({x})");
    let (k, ln_m) = ln_normal(x);
    let y = k * LN2_HI + (ln_m + k * LN2_LO);
    if x < f32::INFINITY { y } else { x }
}

/// `softplus(x) = max(x, 0) + ln(1 + e^-|x|)`.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    softplus_sigmoid(x).0
}

/// The logistic function `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 { s } else { e * s }
}

/// `(softplus(x), sigmoid(x))` with one exponential and one division
/// between them (the logarithm takes the sigmoid's `1 / (1 + e^-|x|)`);
/// each is bit for bit what [`softplus`] and [`sigmoid`] give.
#[inline(always)]
pub fn softplus_sigmoid(x: f32) -> (f32, f32) {
    softplus_sigmoid_given(x, exp_nonpositive(-x.abs()))
}

/// [`softplus_sigmoid`] given `e = e^-|x|` (NaN in `e` gives NaN).
#[inline(always)]
pub fn softplus_sigmoid_given(x: f32, e: f32) -> (f32, f32) {
    let u = 1.0 + e;
    let s = 1.0 / u;
    let softplus = x.max(0.0) + log1p_unit(e, u, s);
    (softplus, if x >= 0.0 { s } else { e * s })
}

/// `tanh x = x + x³ T(x²)` on `|x| < 1/2`: Taylor's coefficients of
/// `x³` to `x¹⁹` (the next term is below 5e-10 of the result there).
const TANH: [f32; 9] = [
    -0.333_333_34,
    0.133_333_33,
    -0.053_968_254,
    0.021_869_488,
    -0.008_863_236,
    0.003_592_128,
    -0.001_455_834_4,
    0.000_590_027_4,
    -0.000_239_129_1,
];

/// `tanh x`: the odd series below `|x| = 1/2`, `(1 - e) / (1 + e)` with
/// `e = e^-2|x|` (at most `e^-1`, so `1 - e` keeps its digits) from there,
/// with the sign of `x` (-0 too); NaN stays NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut t = TANH[8];
    for &c in TANH[..8].iter().rev() {
        t = c + z * t;
    }
    let small = (x + x * (z * t)).copysign(x);
    let e = exp_nonpositive(-(a + a));
    let large = ((1.0 - e) / (1.0 + e)).copysign(x);
    if a < 0.5 { small } else { large }
}

/// `sin a = a + a^3 (S0 + a^2 (S1 + a^2 (S2 + a^2 S3)))` on `|a| <= π/4`
/// (Taylor; truncation below 2e-9).
pub(crate) const SIN: [f32; 4] = [-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362_880.0];
/// `cos a = 1 + a^2 (C0 + a^2 (C1 + a^2 (C2 + a^2 (C3 + a^2 C4))))` on `|a| <= π/4`.
pub(crate) const COS: [f32; 5] = [
    -1.0 / 2.0,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
];
/// `1.5 * 2^23`: adding it rounds an `f32` of magnitude below `2^22` to an
/// integer, which then sits in the low mantissa bits (a float-to-int `as`
/// cast would not vectorize: it saturates and maps NaN to 0 lane by lane).
pub(crate) const ROUNDER: f32 = 12_582_912.0;

/// `(sin 2πu, cos 2πu)` for `|u| < 2^20` turns: `4u = q + f` with `q` the
/// nearest integer, polynomials in `a = 2π f/4`, `|a| <= π/4`, then a
/// rotation by `q` quarter turns. Absolute error a few `f32` ulp of 1.
/// (The sampler's AVX2 path computes the same operations; keep them in step.)
#[inline(always)]
pub fn sin_cos_turn(u: f32) -> (f32, f32) {
    let turns = u * 4.0;
    let shifted = turns + ROUNDER;
    let q = shifted.to_bits().wrapping_sub(ROUNDER.to_bits());
    let a = (turns - (shifted - ROUNDER)) * std::f32::consts::FRAC_PI_2;
    let a2 = a * a;
    let sin = a + a * a2 * (SIN[0] + a2 * (SIN[1] + a2 * (SIN[2] + a2 * SIN[3])));
    let cos = 1.0 + a2 * (COS[0] + a2 * (COS[1] + a2 * (COS[2] + a2 * (COS[3] + a2 * COS[4]))));
    // sin(x + π/2) = cos x, cos(x + π/2) = -sin x; a half turn negates both
    let (sin, cos) = if q & 1 == 1 { (cos, -sin) } else { (sin, cos) };
    if q & 2 == 2 { (-sin, -cos) } else { (sin, cos) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        if a == b32 {
            return 0.0;
        }
        let ulp = (b32.abs() * f32::EPSILON).max(f32::MIN_POSITIVE) as f64;
        (a as f64 - b).abs() / ulp
    }

    fn sweep(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        (0..200_001).map(move |i| lo + (hi - lo) * i as f32 / 200_000.0)
    }

    #[test]
    fn tanh_is_within_a_few_ulp() {
        let worst = sweep(-12.0, 12.0)
            .chain(sweep(-0.6, 0.6))
            .chain([1e-30, -1e-30, f32::MIN_POSITIVE, 0.499_999_97, 0.5])
            .map(|x| ulps(tanh(x), (x as f64).tanh()))
            .fold(0.0, f64::max);
        assert!(worst <= 3.0, "tanh worst {worst} ulp");
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!((tanh(100.0), tanh(-100.0)), (1.0, -1.0));
        assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY)), (1.0, -1.0));
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let worst = sweep(-87.0, 88.0)
            .chain(sweep(-1.0, 1.0))
            .map(|x| ulps(exp(x), (x as f64).exp()))
            .fold(0.0, f64::max);
        assert!(worst <= 2.0, "exp worst {worst} ulp");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    /// The reductions the sigmoid and softplus take (`exp_nonpositive`,
    /// `log1p_unit`) give the bits of the general ones.
    #[test]
    fn the_sigmoids_reductions_give_the_general_bits() {
        let nonpositive = sweep(-100.0, 0.0)
            .chain((0..4000).map(|i| -f32::from_bits(i * 265_000)))
            .chain([
                -87.3,
                -87.299_99,
                -87.300_01,
                -0.0,
                f32::NEG_INFINITY,
                f32::NAN,
            ]);
        for x in nonpositive {
            assert_eq!(
                exp_nonpositive(x).to_bits(),
                exp(x).to_bits(),
                "exp at {x:e}"
            );
        }
        let general = |e: f32, u: f32, inv_u: f32| {
            let (k, ln_m) = ln_normal(u);
            k * LN2_HI + (ln_m + k * LN2_LO) + (e - (u - 1.0)) * inv_u
        };
        let units = sweep(0.0, 1.0)
            .chain((0..4000).map(|i| f32::from_bits(i * 265_000)))
            .chain([std::f32::consts::SQRT_2 - 1.0, 1.0, f32::NAN]);
        for e in units.filter(|e| *e <= 1.0 || e.is_nan()) {
            let u = 1.0 + e;
            let want = general(e, u, 1.0 / u);
            assert_eq!(
                log1p_unit(e, u, 1.0 / u).to_bits(),
                want.to_bits(),
                "log1p at {e:e}"
            );
        }
    }

    #[test]
    fn ln_is_within_a_few_ulp() {
        let worst = sweep(1e-6, 50.0)
            .chain([1e-30, 3e-39, 1.0, 2.0, 1e30, f32::MAX])
            .map(|x| ulps(ln(x), (x as f64).ln()))
            .fold(0.0, f64::max);
        assert!(worst <= 1.0, "ln worst {worst} ulp");
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan());
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn ln_of_normal_is_ln_bit_for_bit() {
        let normals = sweep(1e-6, 50.0)
            .chain((0..2000).map(|i| f32::from_bits(0x0080_0000 + i * 1_065_353)))
            .chain([f32::MIN_POSITIVE, 1e-16, 1.0, 2.0, 1e30, f32::MAX]);
        for x in normals {
            assert!(x.is_normal());
            assert_eq!(ln_of_normal(x).to_bits(), ln(x).to_bits(), "at {x:e}");
        }
        assert_eq!(ln_of_normal(f32::INFINITY), f32::INFINITY);
        assert!(ln_of_normal(f32::NAN).is_nan());
    }

    #[test]
    fn softplus_and_sigmoid_are_accurate_without_underflow() {
        let sp = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
        let worst = sweep(-80.0, 80.0)
            .map(|x| ulps(softplus(x), sp(x as f64)))
            .fold(0.0, f64::max);
        assert!(worst <= 4.0, "softplus worst {worst} ulp");
        // softplus(-30) = 9.357622968840175e-14, not 0
        assert!((softplus(-30.0) as f64 - 9.357_622_968_840_175e-14).abs() < 1e-19);
        let sg = |x: f64| 1.0 / (1.0 + (-x).exp());
        let worst = sweep(-80.0, 80.0)
            .map(|x| ulps(sigmoid(x), sg(x as f64)))
            .fold(0.0, f64::max);
        assert!(worst <= 4.0, "sigmoid worst {worst} ulp");
        let worst = sweep(-80.0, 80.0)
            .map(|x| {
                let (p, g) = softplus_sigmoid(x);
                ulps(p, sp(x as f64)).max(ulps(g, sg(x as f64)))
            })
            .fold(0.0, f64::max);
        assert!(worst <= 4.0, "softplus_sigmoid worst {worst} ulp");
        for x in sweep(-90.0, 90.0).chain([0.0, -0.0, f32::MIN_POSITIVE]) {
            let (p, g) = softplus_sigmoid(x);
            assert_eq!(p.to_bits(), softplus(x).to_bits(), "softplus at {x}");
            assert_eq!(g.to_bits(), sigmoid(x).to_bits(), "sigmoid at {x}");
        }
        assert_eq!(softplus_sigmoid(f32::INFINITY), (f32::INFINITY, 1.0));
        assert_eq!(softplus_sigmoid(f32::NEG_INFINITY), (0.0, 0.0));
        assert!(softplus_sigmoid(f32::NAN).0.is_nan());
    }

    #[test]
    fn sin_cos_turn_is_accurate_in_every_quadrant() {
        let worst = sweep(-3.0, 3.0)
            .map(|u| {
                let (s, c) = sin_cos_turn(u);
                let (es, ec) = (std::f64::consts::TAU * u as f64).sin_cos();
                (s as f64 - es).abs().max((c as f64 - ec).abs())
            })
            .fold(0.0, f64::max);
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "sin_cos worst abs error {worst}"
        );
        assert_eq!(sin_cos_turn(0.0), (0.0, 1.0));
        assert_eq!(sin_cos_turn(0.25), (1.0, 0.0));
    }
}
