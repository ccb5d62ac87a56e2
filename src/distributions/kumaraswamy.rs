//! The Kumaraswamy distribution on the unit interval: shaped like a Beta,
//! with a cumulative distribution function in closed form, so that its
//! draws are a differentiable function of a uniform one (the stick-breaking
//! weights of a variational autoencoder, where a Beta would need implicit
//! gradients). Every formula is computed in `f64` with its partial
//! derivatives.

use super::gamma::Beta;
use super::pointwise::{self, BLOCK, LANES, Lanes, Pointwise, each_lane};
use super::widened::rounded_once;
use super::{
    Distribution, batch_broadcast, check_divisor, check_two, on_support, same_tape, sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::Result;
use crate::kernels::random::Unit;
use crate::kernels::special::{
    digamma_diff, exp_and_exp_m1_lanes, exp_and_exp_m1_nonpositive_lanes, exp_lanes,
    exp_nonpositive_to_f32, lbeta, lgamma_diff, ln_1p_lanes, ln_lanes, mask, select,
    tetragamma_pentagamma, trigamma, trigamma_diff,
};
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;
use std::marker::PhantomData;
use std::sync::LazyLock;

/// The Kumaraswamy distribution with concentrations `a` (`concentration1`)
/// and `b` (`concentration0`), TFP's `Kumaraswamy(concentration1,
/// concentration0)`: `P(X <= x) = 1 - (1 - x^a)^b` on `[0, 1]`.
///
/// # Density
/// `ln p(x) = ln a + ln b + (a - 1) ln x + (b - 1) ln(1 - x^a)` for `0 < x <
/// 1`, with `ln(1 - x^a)` as `ln(-expm1(a ln x))` where `x^a` is near 1 and
/// as `ln1p(-x^a)` where it is below 1/2 (the digits of each kept);
/// `-inf` (gradient 0) outside.
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
/// values from `a = 10⁻²` to `10¹⁵`, 4e-10 at worst. For `b` below 10⁻³,
/// where `D` is of the size of `b`, from its series in `b`: within 1e-9 of
/// 200-digit values down to `b = 10⁻³⁰` (up to 1.5e-7 just above 10⁻³
/// where `a` is 10⁴ to 2·10⁵). The entropy
/// is `(1 - 1/b) + (1 - 1/a) H_b - ln(a b)` with the harmonic number `H_b =
/// ψ(b + 1) + γ`.
///
/// # Divergence
/// KL(Kumaraswamy || [`Beta`]), the pair of a stick-breaking posterior
/// and its prior, is built in: the entropy and `E[ln x] = -H_b / a` in
/// closed form, and `E[ln(1 - x)]` with its partials by a tanh-sinh
/// quadrature over the uniform of a draw (81 to 641 points an element for
/// `a` from `10⁻²` to `10⁵` and `b` from `10⁻¹²` to `10⁵`, each a few
/// exponentials and logarithms: microseconds an element, where the closed
/// forms take nanoseconds). Against
/// 50-digit values (`a` and `b` from `10⁻²` to `10³`, and `b` down to
/// `10⁻⁸`), the KL and its gradients are within 2·10⁻¹³. `E[ln(1 - x)]` is
/// about `-1/b` where `b` is small: it is integrated less that term, so
/// that the KL's terms of the size of `1/b` cancel in closed form. Where
/// the two distributions nearly coincide the KL is the difference of terms
/// of the size of 1 (and of `ln b`), and it keeps its digits in absolute
/// terms there, not relative ones. Against other families,
/// `Divergence::Auto` (or `MonteCarlo`) estimates the KL from
/// reparameterized draws.
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
/// // and so is its KL against that Beta zero
/// let beta = Beta::new(tape.scalar(1.0), tape.scalar(3.0))?;
/// assert!(kl_divergence(&d, &beta)?.item()?.abs() < 1e-12);
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

/// `ln(1 - x^a)` from `u = -a ln x` (and `a`, `ln x`): where `x^a = e^-u`
/// is below 1/2, `ln(1 - x^a)` as `ln1p(-e^-u)`, whose digits `ln(-expm1(-u))`
/// loses with those of `1 - x^a` as it rounds to 1 (all of them where
/// `x^a` is below the float spacing at 1: `(b - 1) ln(1 - x^a)` was 0 at
/// `a = 1`, `b = 1e150`, `x = 1e-20`, where it is -1e130); where `u` is
/// below the smallest normal float, `ln u`, as `ln a + ln(-ln x)` (`u`
/// itself may round to 0).
#[inline(always)]
fn ln_one_less_power(u: f64, a: f64, lx: f64) -> f64 {
    if u > std::f64::consts::LN_2 {
        (-(-u).exp()).ln_1p()
    } else if u >= f64::MIN_POSITIVE {
        (-(-u).exp_m1()).ln()
    } else {
        a.ln() + (-lx).ln()
    }
}

/// `(b - 1) y` that is 0 at `b = 1` whatever `y` (an infinite `y` at the
/// ends of the floats would make it NaN).
#[inline(always)]
fn times_b_less_one(b: f64, y: f64) -> f64 {
    if b == 1.0 { 0.0 } else { (b - 1.0) * y }
}

/// The Kumaraswamy log-density of `[a, b, x]` for `x` in `(0, 1)`, with
/// `u = -a ln x`, `w = 1 - x^a` ([`ln_one_less_power`]), `r = x^a / (1 -
/// x^a) = 1 / expm1(u)` and `h(u) = u / expm1(u)`: the value is
/// `ln a + ln b + (a - 1) ln x + (b - 1) ln w`, with `∂b = 1/b + ln w`,
/// `∂x = ((a - 1) - (b - 1) a r) / x` where `a r = h / -ln x`, and
/// `∂a = 1/a + ln x (1 - (b - 1) r) = (1 + (b - 1) h) / a + ln x` (`r`
/// and `a r` overflow where `u` is below the floats' range beside 1, at
/// `a = 1e-300`: the slopes came out `±inf` where they are finite). With
/// `u` small, `1/a` and `(b - 1) h / a` are each about `1/a` and add up
/// with `ln x` to about `(b - u (b + 1) / 2) / a`; taken as `ln x (1 -
/// G(u)) + (b / a) h(u)` with `G(u) = 1/u - 1/expm1(u)`
/// ([`one_over_minus_expm1`]), the terms are of size `max(b, u) / a`
/// instead, so that form is `1 / max(b, u)` times as accurate, and is
/// used where `b` and `u` are both below 1 (at `a = 1e-21`, `b = 7e-28`
/// and `x = 0.94`, `∂a` is -0.031, which the first form gives as 131072).
#[derive(Clone, Copy)]
struct KumaraswamyLogDensity;

/// `1 / (k + 2)!` for `k` from 0 to 17: the series of
/// `(expm1(u) - u) / u²`, whose next term is below 1e-17 of its sum for
/// `u < 1`.
const EXPM1_LESS_U: [f64; 18] = {
    let mut c = [0.0; 18];
    let (mut k, mut factorial) = (0, 2.0);
    while k < 18 {
        c[k] = 1.0 / factorial;
        factorial *= (k + 3) as f64;
        k += 1;
    }
    c
};

/// `G(u) = 1/u - 1/expm1(u) = (expm1(u) - u) / (u expm1(u))` for `u` in
/// `[0, 1]` given `h = u / expm1(u)` (1 at `u = 0`), 1/2 at 0: as
/// `h (expm1(u) - u) / u²` ([`EXPM1_LESS_U`]), where the two reciprocals
/// would cancel.
#[inline(always)]
fn one_over_minus_expm1(u: f64, h: f64) -> f64 {
    debug_assert!((0.0..=1.0).contains(&u), "one_over_minus_expm1({u})");
    h * EXPM1_LESS_U.iter().rev().fold(0.0, |sum, &c| c + u * sum)
}

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
            let u = -(a * lx);
            let ln_w = ln_one_less_power(u, a, lx);
            let expm1_u = u.exp_m1();
            let h = if u == 0.0 { 1.0 } else { u / expm1_u };
            let value = a.ln() + b.ln() + (a - 1.0) * lx + times_b_less_one(b, ln_w);
            let slope_a = if u < 1.0 && b < 1.0 {
                lx * (1.0 - one_over_minus_expm1(u, h)) + (b / a) * h
            } else {
                (1.0 + times_b_less_one(b, h)) / a + lx
            };
            // a r = a / expm1(u) = h / -ln x
            let ar = times_b_less_one(b, h / -lx);
            let partials = [slope_a, 1.0 / b + ln_w, ((a - 1.0) - ar) / x];
            Some((value, partials))
        });
    }
}

/// A Kumaraswamy draw from `[a, b, e]`, `e` a standard exponential draw:
/// with `s = e / b` and `w = 1 - e^-s = -expm1(-s)`, `x = e^(ln w / a)`,
/// `∂a = -x ln w / a²`, `∂b = -x s / (a b expm1(s))` and `∂e = x / (a b
/// expm1(s))`. A draw that rounds to 0 or 1 in `F` (or below its smallest
/// normal number) is the nearest value of `F` inside, with partials 0, as
/// [`Var::clamp`] into [`open_unit_bounds`](super::open_unit_bounds) would
/// give it, without a pass and a tensor of its own.
#[derive(Clone, Copy)]
struct KumaraswamyDraw<F>(PhantomData<fn() -> F>);

impl<F: Element> Pointwise<3> for KumaraswamyDraw<F> {
    const NAME: &'static str = "kumaraswamy_draw";
    const KEYED: usize = 2;
    /// `1/a` and `1/b`.
    type Pre = (Lanes, Lanes);

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> (Lanes, Lanes) {
        let (mut inv_a, mut inv_b) = ([0.0; LANES], [0.0; LANES]);
        for l in 0..LANES {
            inv_a[l] = 1.0 / v[0][l];
            inv_b[l] = 1.0 / v[1][l];
        }
        (inv_a, inv_b)
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 3], (inv_a, inv_b): &(Lanes, Lanes), out: &mut Lanes, d: &mut [Lanes; 3]) {
        let (s, decay, w) = draw_decay(&v[2], inv_b);
        let ln_w = ln_lanes(&w);
        let power = draw_power(&ln_w, inv_a);
        // (a second group's lanes computed and dropped)
        let (x, _) = draw_exp::<F>(&power, &power);
        (*out, *d) = draw_finish::<F>(&x, &s, &decay, &w, &ln_w, inv_a, inv_b);
    }

    /// The chain of an exponential, a logarithm and an exponential, each
    /// step over every group before the next: a million `f32` draws took
    /// the op 1.91–1.99 ms as one chain a group, 1.23–1.25 in steps (AMD
    /// EPYC family 26 model 2, AVX-512).
    const STAGED: bool = true;

    #[inline(always)]
    fn eval_block(
        v: impl Fn(usize) -> [Lanes; 3],
        (inv_a, inv_b): &(Lanes, Lanes),
        mut put: impl FnMut(usize, &Lanes, &[Lanes; 3]),
    ) {
        let (mut s, mut decay, mut w) = (
            [[0.0; LANES]; BLOCK],
            [[0.0; LANES]; BLOCK],
            [[0.0; LANES]; BLOCK],
        );
        for g in 0..BLOCK {
            (s[g], decay[g], w[g]) = draw_decay(&v(g)[2], inv_b);
        }
        let mut ln_w = [[0.0; LANES]; BLOCK];
        for g in 0..BLOCK {
            ln_w[g] = ln_lanes(&w[g]);
        }
        let mut x = [[0.0; LANES]; BLOCK];
        for g in (0..BLOCK).step_by(2) {
            let powers = (draw_power(&ln_w[g], inv_a), draw_power(&ln_w[g + 1], inv_a));
            (x[g], x[g + 1]) = draw_exp::<F>(&powers.0, &powers.1);
        }
        for g in 0..BLOCK {
            let (out, d) = draw_finish::<F>(&x[g], &s[g], &decay[g], &w[g], &ln_w[g], inv_a, inv_b);
            put(g, &out, &d);
        }
    }
}

impl<F: Element> pointwise::Drawn<3> for KumaraswamyDraw<F> {
    const DRAWS: Unit = Unit::Exponential;
}

/// The first step of a Kumaraswamy draw from exponential draws `e`: `s =
/// e / b`, `e^-s` and `w = 1 - e^-s`.
#[inline(always)]
fn draw_decay(e: &Lanes, inv_b: &Lanes) -> (Lanes, Lanes, Lanes) {
    let (mut s, mut minus_s) = ([0.0; LANES], [0.0; LANES]);
    for l in 0..LANES {
        s[l] = e[l] * inv_b[l];
        // (beyond 800, e^-s is 0 already: the cap keeps the lanes' range
        // reduction in its range)
        minus_s[l] = -s[l].min(800.0);
    }
    // e^-s with e^-s - 1: for 1 / expm1(s) = e^-s / w, an exponential the
    // expm1 computes on its way
    let (decay, e_m1) = exp_and_exp_m1_nonpositive_lanes(&minus_s);
    let mut w = [0.0; LANES];
    for l in 0..LANES {
        // 1 - e^-s, at least the smallest float where s is (1 where it
        // underflows: the lane is set to 0 in `draw_finish`)
        w[l] = select(mask(s[l] > 0.0), -e_m1[l], 1.0);
    }
    (s, decay, w)
}

/// `ln w / a`, the logarithm of a Kumaraswamy draw.
#[inline(always)]
fn draw_power(ln_w: &Lanes, inv_a: &Lanes) -> Lanes {
    let mut power = [0.0; LANES];
    for l in 0..LANES {
        power[l] = ln_w[l] * inv_a[l];
    }
    power
}

/// The draws `e^p` of two groups' logarithms `p`: for `f32` draws in `f32`
/// lanes (within an ulp of `e^p` rounded, [`exp_nonpositive_to_f32`]: a
/// million draws took the op 1.09–1.11 ms with [`exp_lanes`], 0.98–1.00
/// so, AMD EPYC family 26 model 2, AVX-512), widened; for `f64` draws
/// [`exp_lanes`].
#[inline(always)]
fn draw_exp<F: Element>(p0: &Lanes, p1: &Lanes) -> (Lanes, Lanes) {
    if std::mem::size_of::<F>() == 4 {
        let x = exp_nonpositive_to_f32(p0, p1);
        (
            std::array::from_fn(|l| f64::from(x[l])),
            std::array::from_fn(|l| f64::from(x[LANES + l])),
        )
    } else {
        (exp_lanes(p0), exp_lanes(p1))
    }
}

/// The last step of a Kumaraswamy draw `x` (from [`draw_exp`]): `x` as `F`
/// rounds it (moved into (0, 1) if it rounds out) and its partials in `a`,
/// `b` and `e`.
#[inline(always)]
fn draw_finish<F: Element>(
    x: &Lanes,
    s: &Lanes,
    decay: &Lanes,
    w: &Lanes,
    ln_w: &Lanes,
    inv_a: &Lanes,
    inv_b: &Lanes,
) -> (Lanes, [Lanes; 3]) {
    let (mut out, mut d) = ([0.0; LANES], [[0.0; LANES]; 3]);
    for l in 0..LANES {
        let x = x[l];
        // x / (a b expm1(s)) with 1 / expm1(s) = e^-s / w, the quotient
        // first: 0 where e^-s underflows, not inf / inf where a b
        // underflows as well
        let slope = (((x * decay[l]) / w[l]) * inv_a[l]) * inv_b[l];
        // a draw below the smallest float (or of an s that underflows): its
        // slopes, smaller still, are 0 (where `a²` or `a b` would underflow
        // too and divide 0 by 0); `&`, not `&&`, whose branch kept the loop
        // out of vector registers
        let x = select(mask((x > 0.0) & (s[l] > 0.0)), x, 0.0);
        // the draw as `F` rounds it: inside the open interval it is kept
        // with its slopes, outside (0 among them) it is moved inside, flat
        let rounded = F::lit(x);
        let inside = super::into_open_unit(rounded);
        let live = mask(inside == rounded);
        out[l] = inside.to_f64().unwrap_or(f64::NAN);
        d[0][l] = select(live, -(((x * ln_w[l]) * inv_a[l]) * inv_a[l]), 0.0);
        d[1][l] = select(live, -(s[l] * slope), 0.0);
        d[2][l] = select(live, slope, 0.0);
    }
    (out, d)
}

/// `G(t) = ln Γ(1 + t) - ln Γ(1 + b + t) + ln Γ(1 + b)`, the logarithm of
/// `E[x^n] = b B(1 + n/a, b)` at `t = n/a`, with its derivative in `t`
/// times `t` ([`scaled_digamma_diff`]), and in `b`, `ψ(1 + b) - ψ(1 + b +
/// t)`. `G`
/// is symmetric in `t` and `b`, and of the size of the smaller of them
/// where that is small: it is taken as two differences of `ln Γ` over the
/// smaller one ([`lgamma_diff`]), `(ln Γ(1 + m) - ln Γ(1)) - (ln Γ(1 + M
/// + m) - ln Γ(1 + M))` with `m` the smaller and `M` the larger, so that
/// it keeps its relative accuracy (over the larger one, at `b = 10⁻³⁰`
/// and `t = 1`, the two differences agree in every digit and `G` came out
/// 0). The differences of ψ do not cancel ([`digamma_diff`]).
fn ln_moment(t: f64, b: f64) -> [f64; 3] {
    let (small, large) = if t <= b { (t, b) } else { (b, t) };
    let value = lgamma_diff(1.0, small) - lgamma_diff(1.0 + large, small);
    [value, scaled_digamma_diff(t, b), digamma_diff(1.0 + b, t)]
}

/// From this `t` on, [`scaled_digamma_diff`] takes the leading terms of
/// `ψ`'s expansion alone: the rest is below `10⁻²⁰` of them.
const SCALED_EXPANSION_FROM: f64 = 1e10;

/// `t (ψ(1 + t) - ψ(1 + b + t))`, the slope of [`ln_moment`] in `t` times
/// `t`: the slopes in `a` take it (`∂/∂a = -(t/a) ∂/∂t` at `t = n/a`), as
/// a product that stays in range where its two factors do not. From
/// [`SCALED_EXPANSION_FROM`] on it is `-(t/x) b (ln(1 + u)/u + 1/(2(x +
/// b)))` with `x = 1 + t` and `u = b/x`: the difference of digammas
/// underflows where `u` does (at `a = b = 10⁻³⁰⁰` the mean's slope in `a`
/// came out 0 where it is 1), and `t/a` overflows from `a = 10⁻¹⁵⁴` (the
/// variance's slope was NaN or `-inf` there).
fn scaled_digamma_diff(t: f64, b: f64) -> f64 {
    if t < SCALED_EXPANSION_FROM {
        return t * digamma_diff(1.0 + t, b);
    }
    let x = 1.0 + t;
    let u = b / x;
    // ln(1 + u)/u is 1 to the last digit below 1e-20
    let ln_ratio = if u < 1e-20 { 1.0 } else { u.ln_1p() / u };
    -((t / x) * b * (ln_ratio + 0.5 / (x + b)))
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
            let [g, hg_h, g_b] = ln_moment(h, b);
            let m = g.exp();
            Some((m, [-(m * hg_h) / a, m * g_b]))
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

/// Below this `b` (and from [`VARIANCE_SERIES_BELOW`] on in `h`), the
/// variance's `D` comes from its series in `b` ([`small_b_log_ratio`]),
/// where `G(2h) - 2 G(h)` is off by about `10⁻¹⁶ / h²` relative (`G` of
/// the size of `b h`, `D` of `b h²`: 6.5e-6 at `a = 2·10⁵`, `b = 10⁻⁷`).
/// Against a 200-digit reference over `a` from 1 to 10⁶, the variance
/// just below it is within 1e-11 and its derivatives within 2.1e-9 (`∂a`,
/// whose series stops a term earlier); just above, the form of
/// differences over `h` is up to 1.5e-7 off where `a` is 10⁴ to 2·10⁵
/// (`10⁻¹⁶ / (b h)`).
const SMALL_B_SERIES_BELOW: f64 = 1e-3;

/// The variance's `D = G(2h) - 2 G(h)` for a small `b`, with its
/// derivatives in `a` and `b` (as in [`KumaraswamyVariance`]): `D = -Σ_j
/// b^j T_j / j!` to `j = 4`, with `T_j = f_j(1 + 2h) - 2 f_j(1 + h) +
/// f_j(1)` for `f_j = ψ⁽ʲ⁻¹⁾`, the first two as differences of differences
/// ([`digamma_diff`], [`trigamma_diff`]: `10⁻¹⁶ / h` relative), the others,
/// corrections, directly; the derivative in `h` to `j = 3` (its `T4` would
/// need `ψ⁽⁴⁾`). The derivative in `a` comes times `a`, as `-h ∂D/∂h`.
fn small_b_log_ratio(h: f64, b: f64) -> (f64, f64, f64) {
    let (second_2h, third_2h) = tetragamma_pentagamma(1.0 + 2.0 * h);
    let (second_h, third_h) = tetragamma_pentagamma(1.0 + h);
    let t1 = digamma_diff(1.0, h) - digamma_diff(1.0 + h, h);
    let t2 = trigamma_diff(1.0, h) - trigamma_diff(1.0 + h, h);
    let t3 = (second_2h - 2.0 * second_h) + SECOND_AT_ONE;
    let t4 = (third_2h - 2.0 * third_h) + THIRD_AND_FOURTH_AT_ONE.0;
    // their derivatives in h, times h (each factor of h first, so that a
    // difference that underflows leaves 0, not 0 times an overflow)
    let t1_h = -2.0 * (h * trigamma_diff(1.0 + h, h));
    let t2_h = 2.0 * (h * second_2h - h * second_h);
    let t3_h = 2.0 * (h * third_2h - h * third_h);
    let d = -(b * (t1 + b * (t2 * 0.5 + b * (t3 / 6.0 + b * t4 / 24.0))));
    let d_b = -(t1 + b * (t2 + b * (t3 * 0.5 + b * t4 / 6.0)));
    (d, b * (t1_h + b * (t2_h * 0.5 + b * t3_h / 6.0)), d_b)
}

/// `ψ'''(1) = 6 ζ(4)` and `ψ''''(1) = -24 ζ(5)`.
const THIRD_AND_FOURTH_AT_ONE: (f64, f64) = (6.493_939_402_266_829, -24.886_266_123_440_88);

/// Below this `b`, the variance's `c3 = ψ''(1) - ψ''(1 + b)` is taken
/// from its series, `-b (ψ'''(1) + ψ''''(1) b / 2)` (off by about `3 b²`
/// relative), where the difference of the two values has lost most of
/// its digits (all of them from `b = 10⁻¹⁶`, where `1 + b` rounds to 1:
/// at `a = 10⁸`, `b = 10⁻³⁰` the variance came out NaN).
const THIRD_SERIES_BELOW: f64 = 1e-5;

impl Pointwise<2> for KumaraswamyVariance {
    const NAME: &'static str = "kumaraswamy_variance";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, 0.0, |[a, b]| {
            let h = 1.0 / a;
            let [g1, hg1_h, g1_b] = ln_moment(h, b);
            // D and its derivatives, in a times a (through h: a dh/da = -h),
            // so that the slope in a is only divided by a at the end: h/a
            // overflows from a = 1e-154
            let (dv, adv_a, dv_b) = if h < VARIANCE_SERIES_BELOW {
                // c2 h² + c3 h³ with c_k = ψ⁽ᵏ⁻¹⁾(1) - ψ⁽ᵏ⁻¹⁾(1 + b)
                let (second, third) = tetragamma_pentagamma(1.0 + b);
                let c3 = if b < THIRD_SERIES_BELOW {
                    let (third_at_one, fourth_at_one) = THIRD_AND_FOURTH_AT_ONE;
                    -(b * (third_at_one + fourth_at_one * b * 0.5))
                } else {
                    SECOND_AT_ONE - second
                };
                let c2 = trigamma_diff(1.0, b);
                let h2 = h * h;
                (
                    h2 * (c2 + c3 * h),
                    -(h2 * (2.0 * c2 + 3.0 * c3 * h)),
                    -(h2 * (second + third * h)),
                )
            } else if b < SMALL_B_SERIES_BELOW {
                small_b_log_ratio(h, b)
            } else {
                let [g2, hg2_h, g2_b] = ln_moment(2.0 * h, b);
                (g2 - 2.0 * g1, 2.0 * hg1_h - hg2_h, g2_b - 2.0 * g1_b)
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
                (second * adv_a - 2.0 * value * hg1_h) / a,
                2.0 * value * g1_b + second * dv_b,
            ];
            Some((value, partials))
        });
    }
}

/// The largest `t` of the tanh-sinh rule of [`mean_log_complement`]: its
/// nodes there lie within `e^-233` of the interval's ends, where the
/// weights (below `10⁻⁹⁸`) leave nothing of the integrand to count.
const TANH_SINH_REACH: f64 = 5.0;

/// The levels of [`mean_log_complement`]'s rule: level `k` has step
/// `2^-k` (10·2ᵏ + 1 nodes in all).
const TANH_SINH_LEVELS: usize = 8;

/// A change from one level to the next below this, relative to the
/// estimate (or to the terms it is added to), ends
/// [`mean_log_complement`]: the error of a tanh-sinh
/// estimate falls about as the square of the last change, so the estimate
/// is then good to about the rounding of the sum.
const TANH_SINH_SETTLED: f64 = 1e-9;

/// An exponent beyond which `e^x` is within a factor `e^9` of overflowing
/// (and `expm1(x)` is `e^x`).
const EXP_NEAR_OVERFLOW: f64 = 700.0;

/// Below this `b`, [`mean_log_complement`] integrates over `y = -ln v / b`
/// (`-s`) on `(0, Y)`, where the draw's features lie at `y` of the size of
/// 1 (and of `ln(1/a)`), not over `v`, where they crowd into `1 - v` of
/// the size of `b` at the interval's end.
const OVER_Y_BELOW: f64 = 1e-2;

/// `Y` less `ln(1/a)` (where `a < 1`): beyond it `ln(1 - x) - s` is `-ln
/// a` and the partials' remainders are 0 to within `e^-Y / a`.
const Y_BEYOND_FEATURES: f64 = 40.0;

/// One node of the tanh-sinh rule on `(0, 1)` at `t >= 0`: the logarithms
/// of `v = (1 + tanh(u)) / 2 = 1 / (1 + e^(-2u))`, `u = π/2 sinh t`, and of
/// its complement `1 - v = 1 / (1 + e^(2u))` (each from `e^(-2u)`, so that
/// both keep their digits near the ends), and the weight `dv/dt`; the node
/// at `-t` swaps `v` and its complement.
#[derive(Clone, Copy)]
struct TanhSinhNode {
    ln_v: f64,
    ln_complement: f64,
    v: f64,
    complement: f64,
    weight: f64,
}

/// The nodes of every level, level by level (level 0: `t = 0, 1, ...,
/// 5`; level `k`: the odd multiples of `2^-k`), and where each level ends.
static TANH_SINH: LazyLock<(Vec<TanhSinhNode>, [usize; TANH_SINH_LEVELS + 1])> =
    LazyLock::new(|| {
        let node = |t: f64| {
            let u = std::f64::consts::FRAC_PI_2 * t.sinh();
            let (cosh_u, ln_v) = (u.cosh(), -(-2.0 * u).exp().ln_1p());
            TanhSinhNode {
                ln_v,
                ln_complement: ln_v - 2.0 * u,
                v: ln_v.exp(),
                complement: (ln_v - 2.0 * u).exp(),
                weight: std::f64::consts::FRAC_PI_4 * t.cosh() / (cosh_u * cosh_u),
            }
        };
        let (mut nodes, mut ends) = (Vec::new(), [0; TANH_SINH_LEVELS + 1]);
        for (level, end) in ends.iter_mut().enumerate() {
            let (step, first) = match level {
                0 => (1.0, 0),
                _ => (0.5f64.powi(level as i32), 1),
            };
            let stride = if level == 0 { 1 } else { 2 };
            let mut k = first;
            while k as f64 * step <= TANH_SINH_REACH {
                nodes.push(node(k as f64 * step));
                k += stride;
            }
            *end = nodes.len();
        }
        (nodes, ends)
    });

/// `g - s`, `∂g/∂a + 1/a` and `∂g/∂b + s/b`, then `g`, `∂g/∂a` and
/// `∂g/∂b`, for `g = ln(1 - x)` at the draw `x = (1 - v^(1/b))^(1/a)` of a
/// uniform `v` (given as `ln v`), with `s = ln v / b = ln(1 - x^a)`, whose
/// mean `-1/b` and its partials are exact: [`mean_log_complement`]
/// integrates both, so that where `E[ln(1 - x)]` is about `-1/b` terms of
/// that size cancel in closed form, not in the sums, and where it is far
/// smaller (`x` tiny) it keeps its own digits. With
/// `w = 1 - e^s`, `t = ln w / a` and `x = e^t`: `∂g/∂a = (t / a) x / (1 -
/// x)` and `∂g/∂b = -(s / (a b)) (e^s / w) (x / (1 - x))`, so the remainders
/// are `-expm1(t - g + τ) / a` and `-(s / b) expm1(s - ln w + t - g - ln
/// a)`. Where `v^(1/b)` is small, `ln w` and `t` underflow while `g` is
/// about `s - ln a`: `λ = ln(-ln w)` and `τ = ln(-t) = λ - ln a` carry them
/// in logarithms, and `s` and `ln a` drop out of the exponents in closed
/// form, which leaves them as small as the remainders are.
///
/// Every lane at one node, in operations that vectorize (`exp_lanes` and
/// the like for libm's calls), each branch computed in every lane and the
/// lane's chosen (an argument a branch cannot take is replaced by a
/// harmless one where the branch is not chosen). `-ln w` is `-expm1`'s
/// logarithm or `ln_1p(-e^s)`, `λ = s + ln(-ln w / e^s)` (the ratio 1 where
/// `e^s` underflows), and `g = τ + ln(expm1(t) / t)` above `t = -ln 2` (a
/// sum of two terms of one sign) and `ln_1p(-e^t)` below (where `|s|` is
/// below `ln(1 / (1 - 2^-a))`, so that `g - s` is taken as such).
#[inline(always)]
fn log_complement_lanes(ln_v: &Lanes, a: &Lanes, b: &Lanes, ln_a: &Lanes) -> [Lanes; 6] {
    // (loops, not `array::from_fn`, which LLVM may leave out of line,
    // compiled without the caller's wider instructions)
    let minus_ln2 = -std::f64::consts::LN_2;
    let mut s = [0.0; LANES];
    for l in 0..LANES {
        s[l] = ln_v[l] / b[l];
    }
    let (e, em1) = exp_and_exp_m1_lanes(&s);
    let (mut near, mut far) = ([1.0; LANES], [-0.5; LANES]);
    for l in 0..LANES {
        let above = s[l] > minus_ln2;
        near[l] = if above && s[l] < 0.0 { -em1[l] } else { 1.0 };
        far[l] = if above { -0.5 } else { -e[l] };
    }
    let (ln_near, ln_far) = (ln_lanes(&near), ln_1p_lanes(&far));
    let (mut minus_ln_w, mut ratio) = ([0.0; LANES], [1.0; LANES]);
    for l in 0..LANES {
        minus_ln_w[l] = if s[l] > minus_ln2 {
            -ln_near[l]
        } else {
            -ln_far[l]
        };
        let q = minus_ln_w[l] / e[l];
        ratio[l] = if e[l] > 0.0 && q > 0.0 && q < f64::INFINITY {
            q
        } else {
            1.0
        };
    }
    let ln_ratio = ln_lanes(&ratio);
    let mut tau = [0.0; LANES];
    for l in 0..LANES {
        tau[l] = s[l] + ln_ratio[l] - ln_a[l];
    }
    let mut t = exp_lanes(&tau);
    for t in t.iter_mut() {
        *t = -*t;
    }
    let (et, em1t) = exp_and_exp_m1_lanes(&t);
    let (mut r, mut low) = ([1.0; LANES], [-0.5; LANES]);
    for l in 0..LANES {
        let above = t[l] > minus_ln2;
        r[l] = if above && t[l] < 0.0 {
            em1t[l] / t[l]
        } else {
            1.0
        };
        low[l] = if above { -0.5 } else { -et[l] };
    }
    let (ln_r, ln_low) = (ln_lanes(&r), ln_1p_lanes(&low));
    let (mut rest, mut arg_a, mut arg_b) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
    for l in 0..LANES {
        // g - s, g - τ - t and g - s - ln w - t + ln a, with the terms
        // that cancel left out where g is about s - ln a
        let far = t[l] > minus_ln2;
        rest[l] = if far {
            (ln_ratio[l] - ln_a[l]) + ln_r[l]
        } else {
            ln_low[l] - s[l]
        };
        arg_a[l] = if far {
            t[l] - ln_r[l]
        } else {
            tau[l] + t[l] - ln_low[l]
        };
        arg_b[l] = if far {
            minus_ln_w[l] + t[l] - ln_ratio[l] - ln_r[l]
        } else {
            s[l] + minus_ln_w[l] + t[l] - ln_low[l] - ln_a[l]
        };
    }
    let (e_a, em1_a) = exp_and_exp_m1_lanes(&arg_a);
    let (e_b, em1_b) = exp_and_exp_m1_lanes(&arg_b);
    let mut out = [[0.0; LANES]; 6];
    for l in 0..LANES {
        // v^(1/b) = 1 (s = 0) or x = 0 (t = -inf): g and its partials are
        // 0 in the limit
        let zero = s[l] == 0.0 || t[l] == f64::NEG_INFINITY;
        let g = if t[l] > minus_ln2 {
            tau[l] + ln_r[l]
        } else {
            ln_low[l]
        };
        out[0][l] = if zero { -s[l] } else { rest[l] };
        out[1][l] = if zero { 1.0 } else { -em1_a[l] } / a[l];
        let f = s[l] / b[l];
        out[2][l] = if zero { f } else { -em1_b[l] * f };
        out[3][l] = if zero { 0.0 } else { g };
        out[4][l] = if zero { 0.0 } else { -e_a[l] / a[l] };
        out[5][l] = if zero { 0.0 } else { -e_b[l] * f };
    }
    // where e^arg_b overflows, s / b has underflowed (b beyond 10¹⁵⁰ or so):
    // their product from the sum of their logarithms, a lane at a time
    // (outside the loop above, which then stays in vector registers)
    if arg_b.iter().any(|&x| x > EXP_NEAR_OVERFLOW) {
        for l in 0..LANES {
            let f = s[l] / b[l];
            if arg_b[l] > EXP_NEAR_OVERFLOW && s[l] != 0.0 {
                let p = -f.signum() * (arg_b[l] + f.abs().ln()).exp();
                out[2][l] = p;
                out[5][l] = p;
            }
        }
    }
    out
}

/// `E[ln(1 - x)]` under Kumaraswamy(a, b) in each lane, with its partials
/// in `a` and `b`, as `R = E[ln(1 - x)] + 1/b`, `∂R/∂a + 1/a` and `∂R/∂b -
/// 1/b²` and as themselves ([`log_complement_lanes`]), and the level at
/// which every lane had settled, as integrals over the uniform `v` of a
/// draw by the tanh-sinh rule, whose nodes crowd towards both ends, where
/// the integrand has its logarithmic singularity (`v → 0`, `x → 1`) and its
/// steepest part for small `b`. Below [`OVER_Y_BELOW`] that part lies
/// within `1 - v` of the size of `b`, which the rule would reach only with
/// many levels: there the integrals are taken over `y = -ln v / b` on `(0,
/// Y)` (`dv = b e^(-b y) dy`, the same nodes on the longer interval), where
/// the draw's features lie at `y` of the size of 1, and beyond `Y`
/// ([`Y_BEYOND_FEATURES`] past `ln(1/a)`) the remainders' limits (`-ln a`,
/// 0, 0) are added in closed form; over `y` the integrals themselves are
/// the remainders less their terms.
///
/// Levels are added until each integral changes by less than
/// [`TANH_SINH_SETTLED`] from one level to the next (from level 3 on):
/// where the integral itself is the smaller of the two forms (and the one
/// the divergence takes), relative to itself; else the remainder, relative
/// to the larger of itself and of the integral itself times `b` (`b²` for
/// the slope in `b`) where `b < 1`, the sizes of the terms the remainders
/// are added to in the divergence and its partials (of the size of 1, `b/a`
/// and 1 where `b` is small). At most level 6 for `a` from `10⁻²` to `10⁵`
/// and `b` from `10⁻¹²` to `10⁵` (a test walks that grid). The eight lanes
/// go on together until the last has settled. Where `a = 1` the draw is a
/// Beta(1, b)'s, `1 - x = v^(1/b)`, and `R` and its slope in `b` are 0.
#[inline(always)]
fn mean_log_complement(a: &Lanes, b: &Lanes) -> ([Lanes; 6], usize) {
    let (nodes, ends) = &*TANH_SINH;
    let ln_a = ln_lanes(a);
    // b Y for the lanes taken over y (0 for those over v), and their tails
    let (mut reach, mut minus_reach) = ([0.0; LANES], [0.0; LANES]);
    for l in 0..LANES {
        if b[l] < OVER_Y_BELOW {
            reach[l] = b[l] * (Y_BEYOND_FEATURES + (-ln_a[l]).max(0.0));
        }
        minus_reach[l] = -reach[l];
    }
    let over_y = reach.iter().any(|&r| r > 0.0);
    let tail = exp_lanes(&minus_reach);
    let (mut sums, mut last, mut step) = ([[0.0; LANES]; 6], [[f64::NAN; LANES]; 6], 1.0);
    let mut start = 0;
    for (level, &end) in ends.iter().enumerate() {
        for (k, n) in nodes[start..end].iter().enumerate() {
            // t = 0 (the first node of level 0) is its own mirror image
            let mirrored = level > 0 || start + k > 0;
            for (ln_u, u) in [(n.ln_v, n.v), (n.ln_complement, n.complement)]
                .into_iter()
                .take(1 + usize::from(mirrored))
            {
                // v = u, or v = e^(-b y) at y = Y u with dv = b Y e^(-b y) du
                let (mut ln_v, mut weight) = ([ln_u; LANES], [n.weight; LANES]);
                if over_y {
                    for l in 0..LANES {
                        ln_v[l] = -(reach[l] * u);
                    }
                    let density = exp_lanes(&ln_v);
                    for l in 0..LANES {
                        if reach[l] > 0.0 {
                            weight[l] *= reach[l] * density[l];
                        } else {
                            ln_v[l] = ln_u;
                        }
                    }
                }
                let terms = log_complement_lanes(&ln_v, a, b, &ln_a);
                for (sum, term) in sums.iter_mut().zip(&terms) {
                    for l in 0..LANES {
                        sum[l] += weight[l] * term[l];
                    }
                }
            }
        }
        start = end;
        if level > 0 {
            step *= 0.5;
        }
        let mut estimate = sums.map(|sum| sum.map(|sum| sum * step));
        for l in 0..LANES {
            let (inv_a, inv_b) = (1.0 / a[l], 1.0 / b[l]);
            if reach[l] > 0.0 {
                // beyond Y, g - s is -ln a, and the partials' remainders 0;
                // the integrals themselves from the remainders
                estimate[0][l] -= ln_a[l] * tail[l];
                estimate[3][l] = estimate[0][l] - inv_b;
                estimate[4][l] = estimate[1][l] - inv_a;
                estimate[5][l] = estimate[2][l] + inv_b * inv_b;
            }
        }
        let settled = (0..LANES).all(|l| {
            // the integrals themselves times b (b² for the slope in b)
            // where b < 1, from the remainders (in a form that does not
            // overflow)
            let (inv_a, inv_b, k) = (1.0 / a[l], 1.0 / b[l], b[l].min(1.0));
            let scaled = [
                (estimate[0][l] - inv_b) * k,
                (estimate[1][l] - inv_a) * k,
                (estimate[2][l] * k) * k + (inv_b * k) * (inv_b * k),
            ];
            (0..3).all(|i| {
                let (rest, whole) = (estimate[i][l], estimate[i + 3][l]);
                if whole.abs() <= rest.abs() {
                    // the integral itself is the smaller, and the one used
                    (whole - last[i + 3][l]).abs() <= TANH_SINH_SETTLED * whole.abs()
                } else {
                    // the remainder, relative also to the size of the terms
                    // it is added to
                    let scale = rest.abs().max(scaled[i].abs());
                    (rest - last[i][l]).abs() <= TANH_SINH_SETTLED * scale
                }
            })
        });
        if level >= 3 && settled {
            return (estimate, level);
        }
        last = estimate;
    }
    (last, TANH_SINH_LEVELS)
}

/// KL(Kumaraswamy(a, b) || Beta(α, β)) of `[a, b, α, β]`: `E_q[ln q] -
/// E_q[ln p]` with the Kumaraswamy's entropy in closed form, `E[ln x] =
/// -H_b / a` (`H_b = ψ(b + 1) + γ`, taken as `ψ(1 + b) - ψ(1)` with its
/// relative accuracy for a small `b`) and `E[ln(1 - x)] = R - 1/b` by
/// quadrature ([`mean_log_complement`], with `M = ∂R/∂a + 1/a` and `N =
/// ∂R/∂b - 1/b²`): `ln(a b) + (β - b) / b - H_b (a - α) / a - (β - 1) R +
/// ln B(α, β)`, with `∂a = β/a - α H_b / a² - (β - 1) M`, `∂b = (b - β) /
/// b² - ψ'(b + 1) (a - α) / a - (β - 1) N`, `∂α = H_b / a + ψ(α) - ψ(α +
/// β)` and `∂β = (β - b) / (b β) + ψ(1 + β) - ψ(α + β) - R`. Written so,
/// the terms of the size of `1/b` (and `1/a` in `∂a`), which cancel where
/// the two distributions are close, do so in closed form: with `E[ln(1 -
/// x)]` itself the KL between equal distributions at `b = 10⁻⁸` was
/// `-1.7·10⁻⁸`. Where an integral is smaller than its remainder (`x`
/// tiny, `E[ln(1 - x)]` far below `1/b`), or the remainder's form is NaN
/// (`β/a` beyond the floats), each term takes the integral's form, with
/// `L = E[ln(1 - x)]`: `ln(a b) - (b - 1) / b - (β - 1) L` and so on,
/// `∂a = 1/a - α H_b / a² - (β - 1) ∂L/∂a`, `∂b = 1/b - 1/b² - ψ'(b + 1)
/// (a - α) / a - (β - 1) ∂L/∂b` and `∂β = ψ(β) - ψ(α + β) - L`: the
/// remainder would leave `L` to the rounding of `1/b` (a KL of -69 for `a
/// = 0.001`, `b = 1000` against Beta(1, 10³⁰)).
#[derive(Clone, Copy)]
struct KumaraswamyBetaDivergence;

impl Pointwise<4> for KumaraswamyBetaDivergence {
    const NAME: &'static str = "kl_kumaraswamy_beta";
    const KEYED: usize = 4;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 4]) {}

    #[inline(always)]
    fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
        let ([r, m, n, l, l_a, l_b], _) = mean_log_complement(&v[0], &v[1]);
        for i in 0..LANES {
            let [a, b, alpha, beta] = [v[0][i], v[1][i], v[2][i], v[3][i]];
            let harmonic = -digamma_diff(1.0, b);
            let gap = (a - alpha) / a;
            // each integral's form, or its remainder's where that is the
            // smaller (and the form is not NaN, as where β/a overflows)
            let [value_terms, beta_terms] = prefer(
                l[i].abs() <= r[i].abs(),
                || {
                    [
                        -(b - 1.0) / b - times_b_less_one(beta, l[i]),
                        digamma_diff(beta, alpha) - l[i],
                    ]
                },
                || {
                    // ψ(1 + β) - ψ(α + β), each pair with its digits
                    let digamma_gap = if alpha >= 1.0 {
                        digamma_diff(1.0 + beta, alpha - 1.0)
                    } else {
                        -digamma_diff(alpha + beta, 1.0 - alpha)
                    };
                    [
                        (beta - b) / b - times_b_less_one(beta, r[i]),
                        ((beta - b) / b) / beta + digamma_gap - r[i],
                    ]
                },
            );
            let [a_terms] = prefer(
                l_a[i].abs() <= m[i].abs(),
                || [1.0 / a - times_b_less_one(beta, l_a[i])],
                || [beta / a - times_b_less_one(beta, m[i])],
            );
            let [b_terms] = prefer(
                l_b[i].abs() <= n[i].abs(),
                || [(1.0 / b - (1.0 / b) / b) - times_b_less_one(beta, l_b[i])],
                || [((b - beta) / b) / b - times_b_less_one(beta, n[i])],
            );
            let value = (a.ln() + b.ln()) + value_terms - harmonic * gap + lbeta(alpha, beta);
            let partials = [
                a_terms - ((alpha * harmonic) / a) / a,
                b_terms - trigamma(b + 1.0) * gap,
                harmonic / a + digamma_diff(alpha, beta),
                beta_terms,
            ];
            out[i] = value;
            for (d, p) in d.iter_mut().zip(partials) {
                d[i] = p;
            }
        }
    }
}

/// `whole` where `whole_first`, or where `rest` holds a NaN; else `rest`.
/// (Each form is computed only where it may be taken.)
#[inline(always)]
fn prefer<const N: usize>(
    whole_first: bool,
    whole: impl FnOnce() -> [f64; N],
    rest: impl FnOnce() -> [f64; N],
) -> [f64; N] {
    if whole_first {
        return whole();
    }
    let rest = rest();
    if rest.iter().any(|x| x.is_nan()) {
        whole()
    } else {
        rest
    }
}

/// KL(Kumaraswamy || Beta), one value per batch element ([`Kumaraswamy`]).
pub(crate) fn kl_kumaraswamy_beta<'t, F: Element>(
    q: &Kumaraswamy<'t, F>,
    p: &Beta<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::divergence(
        KumaraswamyBetaDivergence,
        "Kumaraswamy",
        (q.batch_shape(), p.batch_shape()),
        [
            q.concentration1,
            q.concentration0,
            p.concentration1(),
            p.concentration0(),
        ],
    )
}

impl<'t, F: Element> Distribution<'t, F> for Kumaraswamy<'t, F> {
    super::kl::builtin_kl!(Beta => kl_kumaraswamy_beta);

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
        // from standard exponential draws, taken inside the op; a draw that
        // rounds to 0 or 1 (b well below 1 puts much of the mass within an
        // ulp of 1) is moved to the nearest value inside the support, where
        // `log_prob` takes it, with a gradient of 0 there
        pointwise::apply_drawn(
            KumaraswamyDraw::<F>(PhantomData),
            &[self.concentration1, self.concentration0],
            &shape,
            rng,
        )
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    /// `(1 - 1/b) + (1 - 1/a) (ψ(b + 1) + γ) - ln a - ln b`, with
    /// `ψ(b + 1) + γ = ψ(b + 1) - ψ(1)` taken whole
    /// ([`Var::digamma_diff`]): about `π² b / 6` for a small `b`, where the
    /// sum of the two keeps only the rounding of `γ`, which `1/a` then
    /// multiplies. The second term is `H - H/a` (`H = ψ(b + 1) + γ`): as
    /// `(1 - 1/a) H` its slope in `a` was `H` times `1/a²`, which
    /// overflowed at `a = 1e-160` where `H/a²` is 1.6e290 (`b = 1e-30`).
    fn entropy(&self) -> Result<Var<'t, F>> {
        let (a, b) = (self.concentration1, self.concentration0);
        rounded_once!("kumaraswamy_entropy", [a, b], |v: G| {
            let (a, b) = (v[0], v[1]);
            let harmonic = -a.tape().scalar(G::one()).digamma_diff(b)?;
            let front = -b.scalar_div(G::one()) + G::one();
            let weighted = harmonic.try_sub(harmonic.try_div(a)?)?;
            front.try_add(weighted)?.try_sub(a.ln())?.try_sub(b.ln())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `G(u) = 1/u - 1/expm1(u)` from its series is 1/2 at 0 and
    /// `1/2 - u/12 + u³/720` near it, and agrees with the two reciprocals
    /// (which cancel less there) up to 1.
    #[test]
    fn one_over_minus_expm1_matches_its_limits_and_the_reciprocals() {
        let g = |u: f64| {
            let h = if u == 0.0 { 1.0 } else { u / u.exp_m1() };
            one_over_minus_expm1(u, h)
        };
        assert_eq!(g(0.0), 0.5);
        for u in [1e-300, 1e-12, 1e-6, 1e-3] {
            let want = 0.5 - u / 12.0 + u * u * u / 720.0;
            assert!((g(u) - want).abs() <= 1e-16, "{u}: {} vs {want}", g(u));
        }
        // 1/u - 1/expm1(u) at 1: 1 - 1/(e - 1), rounded from 30 digits
        let at_one = 0.418_023_293_130_673_6;
        assert!((g(1.0) - at_one).abs() <= 2e-16, "{}", g(1.0));
        // the series against the reciprocals
        for u in [0.5f64, 0.9, 0.999, 1.0 - 1e-12] {
            let want = 1.0 / u - 1.0 / u.exp_m1();
            assert!((g(u) - want).abs() <= 4e-16, "{u}: {} vs {want}", g(u));
        }
    }

    /// The draw and its partials in lanes against the same formulas
    /// computed a position at a time with the platform's `exp_m1`, `ln` and
    /// `exp` (`1 - e^-s` as `-expm1(-s)`, `1 / expm1(s)` directly), over
    /// `a`, `b` from 0.05 to 30 and exponential draws from 1e-12 to 36:
    /// within a few ulp times the size of the exponent of `x = e^(ln w / a)`.
    #[test]
    fn the_draw_in_lanes_matches_the_formulas_one_at_a_time() {
        let values = [0.05, 0.3, 1.0, 2.5, 30.0];
        let draws = [1e-12, 1e-4, 0.1, 0.7, 2.0, 9.0, 36.0];
        let mut worst: f64 = 0.0;
        for &a in &values {
            for &b in &values {
                for e in draws.chunks(LANES) {
                    let e: Lanes = std::array::from_fn(|l| e[l.min(e.len() - 1)]);
                    let v = [[a; LANES], [b; LANES], e];
                    let pre = KumaraswamyDraw::<f64>::pre(&v);
                    let (mut out, mut d) = ([0.0; LANES], [[0.0; LANES]; 3]);
                    KumaraswamyDraw::<f64>::eval(&v, &pre, &mut out, &mut d);
                    for l in 0..LANES {
                        let s = e[l] / b;
                        let ln_w = (-(-s).exp_m1()).ln();
                        let x = (ln_w / a).exp();
                        let slope = x / a / b / s.exp_m1();
                        let want = [x, -((x * ln_w) / a) / a, -(s * slope), slope];
                        let got = [out[l], d[0][l], d[1][l], d[2][l]];
                        // a draw of 1 is moved inside, flat (the test below)
                        if x == 1.0 {
                            assert_eq!(got, [1.0 - f64::EPSILON / 2.0, 0.0, 0.0, 0.0]);
                            continue;
                        }
                        for (g, w) in got.iter().zip(want) {
                            // (where e^s overflows the scalar slope is 0, the
                            // lanes' e^-s / w a subnormal: both nothing)
                            let err = (g - w).abs() / w.abs().max(1e-290);
                            // x = e^(ln w / a) carries the rounding of its
                            // exponent times the exponent's size
                            let tolerance = 2e-15 * (8.0 + (ln_w / a).abs());
                            assert!(
                                err < tolerance,
                                "a = {a}, b = {b}, e = {}: {got:?} vs {want:?}",
                                e[l]
                            );
                            worst = worst.max(err);
                        }
                    }
                }
            }
        }
        assert!(worst > 0.0, "the lanes are not the scalar formulas' bits");
    }

    /// `rsample_n` takes the exponential draws inside its op: the values
    /// and gradients of the op on a constant of the draws `unit_draws`
    /// gives for the same seed, bit for bit, in both element types, for
    /// single and per-element concentrations (broadcast over the sample
    /// axis), for a tensor shorter than a piece of draws, one of many
    /// pieces, and one split over two threads (an odd length).
    #[test]
    fn the_draws_taken_inside_the_op_are_those_of_a_tensor_of_draws() {
        use crate::kernels::parallel::PARALLEL_MIN;
        use crate::tensor::unit_draws;
        use rand::SeedableRng;
        fn check<F: Element>(n: usize, batch: usize) -> Result<()> {
            let tape = Tape::<F>::new();
            let concentrations = |first: f64, step: f64| -> Tensor<F> {
                match batch {
                    0 => Tensor::scalar(F::lit(first)),
                    _ => Tensor::from_vec(
                        (0..batch)
                            .map(|i| F::lit(first + step * i as f64))
                            .collect(),
                        &[batch],
                    )
                    .expect("a vector"),
                }
            };
            let a = tape.var(concentrations(1.5, 2.0));
            let b = tape.var(concentrations(0.4, 0.7));
            let d = Kumaraswamy::new(a, b)?;
            let rng = rand::rngs::SmallRng::seed_from_u64(5);
            let drawn = d.rsample_n(Some(n), &mut rng.clone())?;
            let shape = sample_shape(Some(n), &d.batch_shape());
            let e = unit_draws::<F>(Unit::Exponential, &shape, &mut rng.clone());
            let kept =
                pointwise::apply(KumaraswamyDraw::<F>(PhantomData), &[a, b, tape.constant(e)])?;
            let bits = |x: &[F]| -> Vec<u64> {
                x.iter()
                    .map(|x| x.to_f64().map_or(0, f64::to_bits))
                    .collect()
            };
            assert_eq!(
                bits(drawn.value().data()),
                bits(kept.value().data()),
                "values, n = {n}, batch = {batch}"
            );
            // an incoming gradient that differs from position to position
            let len = drawn.value().len();
            let weights = Tensor::from_vec(
                (0..len).map(|i| F::lit((i % 7) as f64 - 2.5)).collect(),
                &shape,
            )?;
            let weights = tape.constant(weights);
            let slopes = |x: Var<'_, F>| -> Result<Vec<Vec<u64>>> {
                let grads = x.try_mul(weights)?.sum().backward()?;
                Ok([a, b]
                    .iter()
                    .map(|&p| grads.get(p).map_or(Vec::new(), |g| bits(g.data())))
                    .collect())
            };
            let (got, want) = (slopes(drawn)?, slopes(kept)?);
            assert!(want.iter().all(|g| !g.is_empty()), "both slopes are there");
            assert_eq!(got, want, "slopes, n = {n}, batch = {batch}");
            Ok(())
        }
        for (n, batch) in [
            (13, 0),
            (1000, 0),
            (300, 3),
            (PARALLEL_MIN + 7, 0),
            (PARALLEL_MIN / 2 + 3, 3),
        ] {
            check::<f32>(n, batch).expect("f32");
            check::<f64>(n, batch).expect("f64");
        }
    }

    /// The draw op's steps over a block of groups give each group's
    /// values and partials bit for bit, in both element types, over draws
    /// from 1e-12 to 40 (some moved inside (0, 1)).
    #[test]
    fn the_draw_in_steps_is_the_draw_of_each_group() {
        fn check<F: Element>() {
            let blocks: Vec<[Lanes; 3]> = (0..pointwise::BLOCK)
                .map(|g| {
                    let e = std::array::from_fn(|l| {
                        10f64.powf(-12.0 + 13.6 * ((g * LANES + l) as f64 / 63.0))
                    });
                    [[0.7; LANES], [0.05; LANES], e]
                })
                .collect();
            let pre = KumaraswamyDraw::<F>::pre(&blocks[0]);
            let mut staged = Vec::new();
            KumaraswamyDraw::<F>::eval_block(
                |g| blocks[g],
                &pre,
                |g, out, d| staged.push((g, *out, *d)),
            );
            assert_eq!(staged.len(), pointwise::BLOCK);
            for (g, out, d) in staged {
                let (mut want, mut want_d) = ([0.0; LANES], [[0.0; LANES]; 3]);
                KumaraswamyDraw::<F>::eval(&blocks[g], &pre, &mut want, &mut want_d);
                assert_eq!(out.map(f64::to_bits), want.map(f64::to_bits), "group {g}");
                assert_eq!(d, want_d, "group {g}");
            }
        }
        check::<f32>();
        check::<f64>();
    }

    /// A draw that `F` rounds to 1 (or to 0, or below its smallest normal
    /// number) is the nearest value inside (0, 1), flat: `f32` moves
    /// `x = 1 - 10⁻⁹` (and `f64` keeps it, with its slopes), both move an
    /// `x` of exactly 1 and of `1e-50`, and a draw already inside keeps its
    /// value and slopes in both (to `f32`'s precision).
    #[test]
    fn a_draw_that_rounds_out_of_the_interval_is_moved_inside_flat() {
        fn draw<F: Element>(a: f64, b: f64, e: f64) -> (f64, [f64; 3]) {
            let v = [[a; LANES], [b; LANES], [e; LANES]];
            let pre = KumaraswamyDraw::<F>::pre(&v);
            let (mut out, mut d) = ([0.0; LANES], [[0.0; LANES]; 3]);
            KumaraswamyDraw::<F>::eval(&v, &pre, &mut out, &mut d);
            (out[0], [d[0][0], d[1][0], d[2][0]])
        }
        let (lo32, hi32) = crate::distributions::open_unit_bounds::<f32>();
        let hi64 = crate::distributions::open_unit_bounds::<f64>().1;
        // a = 1: x = 1 - e^(-e/b); e^-s = 1e-9 at s = 9 ln 10
        let e = 9.0 * 10f64.ln();
        let (x, d) = draw::<f32>(1.0, 1.0, e);
        assert_eq!((x, d), (f64::from(hi32), [0.0; 3]));
        let (x, d) = draw::<f64>(1.0, 1.0, e);
        assert!((x - (1.0 - 1e-9)).abs() < 1e-15 && x < hi64, "{x}");
        assert!(d.iter().all(|&d| d != 0.0 && d.is_finite()), "{d:?}");
        // x = 1 exactly (e^-s below an ulp of 1) and x = (1e-10)^5
        for (a, e, want32, want64) in [
            (1.0, 100.0, f64::from(hi32), hi64),
            (0.2, 1e-10, f64::from(lo32), 1e-50),
        ] {
            let (x, d) = draw::<f32>(a, 1.0, e);
            assert_eq!((x, d), (want32, [0.0; 3]), "a = {a}, e = {e}");
            let (x, _) = draw::<f64>(a, 1.0, e);
            assert!((x - want64).abs() <= 1e-9 * want64, "a = {a}, e = {e}: {x}");
        }
        // inside: the same value within an ulp of f32 (which computes its
        // last exponential in f32) and slopes that follow it
        let (x32, d32) = draw::<f32>(2.0, 3.0, 0.7);
        let (x64, d64) = draw::<f64>(2.0, 3.0, 0.7);
        assert!(
            (x32 - x64).abs() <= f64::from(f32::EPSILON) * x64,
            "{x32} against {x64}"
        );
        for (d32, d64) in d32.into_iter().zip(d64) {
            assert!(
                (d32 - d64).abs() <= 2.0 * f64::from(f32::EPSILON) * d64.abs(),
                "{d32} against {d64}"
            );
        }
    }

    /// Over `a` from `10⁻²` to `10⁵` and `b` from `10⁻¹²` to `10⁵` (every
    /// half decade) the quadrature settles by level 6 with finite
    /// integrals; where `a = 1` (a Beta(1, b) draw) `E[ln(1 - x)] = -1/b`
    /// and its slope in `b` is `1/b²`, so that the remainders `R` and `∂R/∂b
    /// - 1/b²` are 0, to the rounding of terms of the size of 1 (not of
    /// `1/b`); and on either side of [`OVER_Y_BELOW`] the integrals over `v`
    /// and over `y` agree.
    #[test]
    fn the_quadrature_settles_across_the_grid() {
        let grid: Vec<f64> = (-4..=10).map(|k| 10f64.powf(f64::from(k) / 2.0)).collect();
        let small: Vec<f64> = (-24..=-5).map(|k| 10f64.powf(f64::from(k) / 2.0)).collect();
        for &a in &grid {
            for &b in grid.iter().chain(&small) {
                // each pair alone in its lanes (a lane settles with the others)
                let (terms, level) = mean_log_complement(&[a; LANES], &[b; LANES]);
                assert!(level <= 6, "a = {a}, b = {b}: level {level}");
                let terms = terms.map(|t| t[0]);
                assert!(
                    terms.iter().all(|t| t.is_finite()),
                    "a = {a}, b = {b}: {terms:?}"
                );
            }
        }
        for b in grid.chunks(LANES).chain(small.chunks(LANES)) {
            let b: Lanes = std::array::from_fn(|l| b[l.min(b.len() - 1)]);
            let ([r, _, n, ..], _) = mean_log_complement(&[1.0; LANES], &b);
            for (i, &b) in b.iter().enumerate() {
                assert!(r[i].abs() <= 1e-15, "b = {b:e}: {:e}", r[i]);
                assert!(n[i].abs() <= 1e-13, "b = {b:e}: {:e}", n[i]);
            }
        }
        let below = OVER_Y_BELOW * (1.0 - 1e-12);
        assert!(below < OVER_Y_BELOW);
        for &a in &grid {
            let (over_v, _) = mean_log_complement(&[a; LANES], &[OVER_Y_BELOW; LANES]);
            let (over_y, _) = mean_log_complement(&[a; LANES], &[below; LANES]);
            for (v, y) in over_v.iter().zip(&over_y) {
                let (v, y) = (v[0], y[0]);
                // (1e-13 where the remainder is 0 but for the rounding, at a = 1)
                assert!(
                    (v - y).abs() <= 1e-11 * v.abs() + 1e-13,
                    "a = {a}: {v:e} vs {y:e}"
                );
            }
        }
    }
}
