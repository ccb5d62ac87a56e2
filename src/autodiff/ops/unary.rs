//! Elementwise unary ops. Each kernel states its value `f(x)` and its
//! derivative `df(x, y)` (with `y = f(x)`) side by side; [`Map`] turns any
//! kernel into an [`Op`].

use crate::autodiff::profile;
use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{Tier, tier};
pub(crate) use crate::kernels::parallel::{par_fill, par_new};
use crate::tensor::{Element, Tensor};
use std::mem::MaybeUninit;

/// A scalar function and its derivative.
pub(crate) trait Kernel<F: Element>: 'static + Sync + Copy {
    const NAME: &'static str;
    fn f(&self, x: F) -> F;
    /// d f / d x at `x`, given `y = f(x)`.
    fn df(&self, x: F, y: F) -> F;
    /// The gradient `g · df(x, y)` passed to `x`.
    #[inline(always)]
    fn grad(&self, x: F, y: F, g: F) -> F {
        g * self.df(x, y)
    }
    /// [`f`](Kernel::f) of each element of `x` into `out` (of the same
    /// length). A kernel computed several elements at a time overrides it
    /// (the special functions' lane forms, which agree with `f` to its
    /// accuracy, not bit for bit).
    #[inline(always)]
    fn f_slice(&self, x: &[F], out: &mut [MaybeUninit<F>]) {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(self.f(v));
        }
    }
    /// [`grad`](Kernel::grad) of each element into `out`, as
    /// [`f_slice`](Kernel::f_slice) is of `f`.
    #[inline(always)]
    fn grad_slice(&self, x: &[F], y: &[F], g: &[F], out: &mut [MaybeUninit<F>]) {
        let n = out.len();
        let (x, y, g) = (&x[..n], &y[..n], &g[..n]);
        for i in 0..n {
            out[i].write(self.grad(x[i], y[i], g[i]));
        }
    }
}

/// `k.f` applied to every element of `x`, vectorized, on two threads when large.
fn map_tensor<F: Element, K: Kernel<F>>(x: &Tensor<F>, k: K) -> Tensor<F> {
    let d = x.data();
    // SAFETY: the loop writes every element of each chunk.
    let out = unsafe {
        par_new(
            d.len(),
            #[inline(always)]
            move |start, chunk| k.f_slice(&d[start..start + chunk.len()], chunk),
        )
    };
    Tensor::new_unchecked(out, x.shape().to_vec())
}

/// The op applying a [`Kernel`] elementwise.
pub(crate) struct Map<K>(pub K);

impl<F: Element, K: Kernel<F>> Op<F> for Map<K> {
    fn name(&self) -> &str {
        K::NAME
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        Ok(map_tensor(inputs[0], self.0))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (x, y, g) = (inputs[0].data(), output.data(), grad.data());
        // the kernel is copied so that its fields are loop constants
        let k = self.0;
        // SAFETY: the loop writes every element of each chunk.
        let out = unsafe {
            par_new(
                x.len(),
                #[inline(always)]
                move |start, chunk| {
                    let n = chunk.len();
                    let at = start..start + n;
                    k.grad_slice(&x[at.clone()], &y[at.clone()], &g[at], chunk)
                },
            )
        };
        Ok(vec![Some(Tensor::new_unchecked(
            out,
            output.shape().to_vec(),
        ))])
    }
}

macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident $(($($field:ident),*))?, $label:literal, |$s:ident, $x:ident| $f:expr, |$s2:ident, $x2:ident, $y:ident| $df:expr) => {
        kernel!($(#[$doc])* $name $(($($field),*))?, $label, |$s, $x| $f, |$s2, $x2, $y| $df, |k, x, y, g| g * k.df(x, y));
    };
    ($(#[$doc:meta])* $name:ident $(($($field:ident),*))?, $label:literal, |$s:ident, $x:ident| $f:expr, |$s2:ident, $x2:ident, $y:ident| $df:expr, |$k:ident, $gx:ident, $gy:ident, $g:ident| $grad:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub(crate) struct $name<F> { $($(pub $field: F,)*)? _f: std::marker::PhantomData<fn() -> F> }
        impl<F> $name<F> {
            #[allow(clippy::new_without_default)]
            pub fn new($($($field: F),*)?) -> Self { $name { $($($field,)*)? _f: std::marker::PhantomData } }
        }
        impl<F: Element> Kernel<F> for $name<F> {
            const NAME: &'static str = $label;
            #[allow(unused_variables)]
            #[inline(always)]
            fn f(&self, $x: F) -> F { let $s = self; $f }
            #[allow(unused_variables)]
            #[inline(always)]
            fn df(&self, $x2: F, $y: F) -> F { let $s2 = self; $df }
            #[inline(always)]
            fn grad(&self, $gx: F, $gy: F, $g: F) -> F { let $k = self; $grad }
        }
    };
}

/// The gradient of a special function's kernel: `g · df`, except that a
/// zero `g` passes on zero also where `df` overflows at an argument in the
/// domain (ψ'(x) = 1/x² is +inf in f64 for `x` below 1e-154, ψ(x) = -1/x
/// for a subnormal `x`), where `0 · inf` would be NaN and the derivative
/// of the whole expression is finite (a divergence between two equal
/// concentrations of 1e-300 has the factor `a1 - a2 = 0` in front of ψ).
#[inline(always)]
fn special_grad<F: Element>(g: F, df: impl FnOnce() -> F) -> F {
    if g == F::zero() { F::zero() } else { g * df() }
}

/// A [`Kernel`] whose value and derivative are special functions of f64
/// (`crate::kernels::special::$f` and `$df`), rounded for f32, with the
/// gradient of [`special_grad`]. Over slices (the op's forward and
/// backward) they are taken [`SPECIAL_LANES`] elements at a time through
/// their lane forms (`$fl`, `$dfl`), which agree with the scalar functions
/// to their accuracy, not bit for bit.
macro_rules! special_kernel {
    ($(#[$doc:meta])* $name:ident, $label:literal, $f:ident, $df:ident, $fl:ident, $dfl:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub(crate) struct $name<F>(std::marker::PhantomData<fn() -> F>);
        impl<F> $name<F> {
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                $name(std::marker::PhantomData)
            }
        }
        impl<F: Element> Kernel<F> for $name<F> {
            const NAME: &'static str = $label;
            #[inline(always)]
            fn f(&self, x: F) -> F {
                special1(crate::kernels::special::$f, x)
            }
            #[inline(always)]
            fn df(&self, x: F, _: F) -> F {
                special1(crate::kernels::special::$df, x)
            }
            #[inline(always)]
            fn grad(&self, x: F, y: F, g: F) -> F {
                special_grad(g, || self.df(x, y))
            }
            #[inline(always)]
            fn f_slice(&self, x: &[F], out: &mut [MaybeUninit<F>]) {
                special_lanes(
                    x,
                    out,
                    #[inline(always)]
                    |v, _| v,
                    #[inline(always)]
                    |x| crate::kernels::special::$fl(x),
                )
            }
            #[inline(always)]
            fn grad_slice(&self, x: &[F], _: &[F], g: &[F], out: &mut [MaybeUninit<F>]) {
                special_lanes(
                    x,
                    out,
                    #[inline(always)]
                    |d, i| special_grad(g[i], || d),
                    #[inline(always)]
                    |x| crate::kernels::special::$dfl(x),
                )
            }
        }
    };
}

/// Elements a special function's lane form takes at once: two AVX2
/// registers of `f64`, one AVX-512 register.
pub(crate) const SPECIAL_LANES: usize = 8;

/// `finish(F(lanes(x)_i), i)` into `out` for each element `i` of `x`,
/// [`SPECIAL_LANES`] at a time (the last group padded with 3, an argument
/// every branch takes). With AVX-512 two groups go through `lanes` side by
/// side, each with the operations it has alone: `bench -- survey`'s
/// `lgamma` took 0.83–0.87 of its time so (AMD EPYC family 25 model 17),
/// where with AVX2's sixteen registers it did not gain (1.03).
#[inline(always)]
fn special_lanes<F: Element>(
    x: &[F],
    out: &mut [MaybeUninit<F>],
    finish: impl Fn(F, usize) -> F,
    lanes: impl Fn(&[f64; SPECIAL_LANES]) -> [f64; SPECIAL_LANES],
) {
    /// The group of up to [`SPECIAL_LANES`] elements from `xs`, padded with 3.
    #[inline(always)]
    fn group<F: Element>(xs: &[F]) -> [f64; SPECIAL_LANES] {
        let mut v = [3.0; SPECIAL_LANES];
        for (v, &x) in v.iter_mut().zip(xs) {
            *v = x.to_f64().unwrap_or(f64::NAN);
        }
        v
    }
    /// `lanes` of the group of `xs`. Without debug assertions it is
    /// inlined; with them each call keeps a frame of its own, as
    /// `pointwise`'s formulas do (the lane forms' frames, inlined at each of
    /// the three calls, would add up in an unoptimized build).
    #[cfg_attr(debug_assertions, inline(never))]
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn of<F: Element>(
        lanes: &impl Fn(&[f64; SPECIAL_LANES]) -> [f64; SPECIAL_LANES],
        xs: &[F],
    ) -> [f64; SPECIAL_LANES] {
        lanes(&group(xs))
    }
    const PAIR: usize = 2 * SPECIAL_LANES;
    let paired = match tier() {
        Tier::Avx512 => x.len() / PAIR * PAIR,
        _ => 0,
    };
    let (x_pairs, x_rest) = x.split_at(paired);
    let (out_pairs, out_rest) = out.split_at_mut(paired);
    for (at, (xs, os)) in (x_pairs.chunks_exact(PAIR))
        .zip(out_pairs.chunks_exact_mut(PAIR))
        .enumerate()
    {
        let (first, second) = xs.split_at(SPECIAL_LANES);
        let (r0, r1) = (of(&lanes, first), of(&lanes, second));
        for (j, (o, &r)) in os.iter_mut().zip(r0.iter().chain(&r1)).enumerate() {
            o.write(finish(F::lit(r), at * PAIR + j));
        }
    }
    for (at, (xs, os)) in (x_rest.chunks(SPECIAL_LANES))
        .zip(out_rest.chunks_mut(SPECIAL_LANES))
        .enumerate()
    {
        let r = of(&lanes, xs);
        for (j, (o, &r)) in os.iter_mut().zip(&r).enumerate() {
            o.write(finish(F::lit(r), paired + at * SPECIAL_LANES + j));
        }
    }
}

/// A special function of f64 at `x` (NaN where `x` has no f64 value).
#[inline(always)]
fn special1<F: Element>(f: fn(f64) -> f64, x: F) -> F {
    F::lit(f(x.to_f64().unwrap_or(f64::NAN)))
}

kernel!(Neg, "neg", |s, x| -x, |s, x, y| -F::one());
kernel!(Exp, "exp", |s, x| x.fast_exp(), |s, x, y| y);
/// `ln x`, whose gradient is `g / x`: not `g · (1 / x)`, whose `1 / x`
/// overflows for a subnormal `x` in f32 even where `g / x` is finite.
#[derive(Clone, Copy)]
pub(crate) struct Ln<F>(std::marker::PhantomData<fn() -> F>);
impl<F> Ln<F> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Ln(std::marker::PhantomData)
    }
}
impl<F: Element> Kernel<F> for Ln<F> {
    const NAME: &'static str = "ln";
    #[inline(always)]
    fn f(&self, x: F) -> F {
        x.fast_ln()
    }
    #[inline(always)]
    fn df(&self, x: F, _: F) -> F {
        x.recip()
    }
    #[inline(always)]
    fn grad(&self, x: F, _: F, g: F) -> F {
        g / x
    }
}
/// `ln x + c` of a constant `c`, computed in f64 and rounded once (for
/// f32, where `ln x` and `c` rounded apart lost the digits of a sum near
/// 0: an entropy `ln σ + c` near its root); gradient `g / x`.
#[derive(Clone, Copy)]
pub(crate) struct LnPlus<F> {
    c: f64,
    _f: std::marker::PhantomData<fn() -> F>,
}
impl<F: Element> Kernel<F> for LnPlus<F> {
    const NAME: &'static str = "ln_plus";
    #[inline(always)]
    fn f(&self, x: F) -> F {
        F::lit(x.to_f64().unwrap_or(f64::NAN).ln() + self.c)
    }
    // the derivative of `ln x`, as `Ln` takes it
    #[inline(always)]
    fn df(&self, x: F, y: F) -> F {
        Ln::new().df(x, y)
    }
    #[inline(always)]
    fn grad(&self, x: F, y: F, g: F) -> F {
        Ln::new().grad(x, y, g)
    }
    #[inline(always)]
    fn f_slice(&self, x: &[F], out: &mut [MaybeUninit<F>]) {
        let c = self.c;
        special_lanes(
            x,
            out,
            #[inline(always)]
            |v, _| v,
            #[inline(always)]
            |x| crate::kernels::special::ln_lanes(x).map(|l| l + c),
        )
    }
}
kernel!(
    /// `e^x - 1`; its derivative `e^x` from `x`, not `y + 1`, which loses
    /// the digits of `e^x` as `y` nears -1 (all of them below x = -17 in
    /// `f32`).
    Expm1, "expm1",
    |s, x| x.exp_m1(),
    |s, x, y| x.fast_exp()
);
kernel!(Log1p, "log1p", |s, x| x.ln_1p(), |s, x, y| (F::one() + x)
    .recip());
kernel!(
    /// softplus(x) = ln(1 + e^x), computed as max(x, 0) + log1p(e^-|x|): no
    /// overflow for large x and no underflow to 0 for very negative x.
    Softplus, "softplus",
    |s, x| softplus(x),
    |s, x, y| sigmoid(x)
);
kernel!(
    /// softplus(x) + c in one pass (a positive parameter read as softplus(rho) + eps).
    SoftplusShift(c), "softplus_shift",
    |s, x| softplus(x) + s.c,
    |s, x, y| sigmoid(x)
);
kernel!(
    /// The logistic function; its derivative `e / (1 + e)^2` with
    /// `e = e^-|x|`, from `x`: `y (1 - y)` from the rounded `y` loses the
    /// digits of `1 - y` as `y` nears 1 (5e-4 of the derivative at x = 10
    /// in `f32`, 17% at 15, all of it from 17 on).
    Sigmoid, "sigmoid",
    |s, x| sigmoid(x),
    |s, x, y| {
        let e = (-x.abs()).fast_exp();
        let r = F::one() / (F::one() + e);
        e * r * r
    }
);
kernel!(
    /// `tanh x` (vectorized in `f32`, within 3 ulp); its derivative
    /// `4e / (1 + e)^2` with `e = e^-2|x|`, from `x`, not `1 - y^2` (see
    /// [`Sigmoid`]).
    Tanh, "tanh",
    |s, x| x.fast_tanh(),
    |s, x, y| {
        let e = (-(x.abs() + x.abs())).fast_exp();
        let r = F::one() / (F::one() + e);
        F::lit(4.0) * e * r * r
    }
);
kernel!(
    /// `max(x, 0)`. Where `x <= 0` the gradient is 0 whatever comes in, not
    /// `0 · g`: an infinite `g` (`ln`'s `g / x` at an output of 0) would
    /// give NaN where the output does not depend on `x`.
    Relu,
    "relu",
    // `x <= 0` is false for NaN, which passes through
    |s, x| if x <= F::zero() { F::zero() } else { x },
    |s, x, y| if x > F::zero() { F::one() } else { F::zero() },
    |_k, x, _y, g| if x > F::zero() { g } else { F::zero() }
);
kernel!(
    /// |x|; its derivative at 0 is taken as 0, and the gradient there is 0
    /// whatever comes in (as [`Relu`]'s).
    Abs, "abs",
    |s, x| x.abs(),
    |s, x, y| if x > F::zero() { F::one() } else if x < F::zero() { -F::one() } else { F::zero() },
    |_k, x, _y, g| if x > F::zero() { g } else if x < F::zero() { -g } else { F::zero() }
);
special_kernel!(
    Lgamma,
    "lgamma",
    lgamma,
    digamma,
    lgamma_lanes,
    digamma_lanes
);
special_kernel!(
    Digamma,
    "digamma",
    digamma,
    trigamma,
    digamma_lanes,
    trigamma_lanes
);
special_kernel!(
    /// `ln Γ(x)` less its leading Stirling terms (see `special::lgamma_correction`).
    LgammaCorrection,
    "lgamma_correction",
    lgamma_correction,
    digamma_correction,
    lgamma_correction_lanes,
    digamma_correction_lanes
);
special_kernel!(
    /// `ψ(x) - ln x + 1/(2x)`, the derivative of [`LgammaCorrection`].
    DigammaCorrection,
    "digamma_correction",
    digamma_correction,
    trigamma_correction,
    digamma_correction_lanes,
    trigamma_correction_lanes
);
kernel!(Sqrt, "sqrt", |s, x| x.sqrt(), |s, x, y| F::lit(0.5) / y);
kernel!(Square, "square", |s, x| x * x, |s, x, y| F::lit(2.0) * x);
kernel!(
    Powf(p),
    "powf",
    |s, x| x.powf(s.p),
    |s, x, y| if s.p == F::zero() {
        F::zero()
    } else {
        s.p * x.powf(s.p - F::one())
    }
);
kernel!(
    /// Clamps into [lo, hi]; the gradient is 1 inside and 0 outside. NaN
    /// stays NaN (`max` alone would give `lo`). Outside, the incoming
    /// gradient is replaced by 0, not multiplied by it: the output does not
    /// depend on `x` there, and an incoming `inf` (`ln`'s `g / x` at a
    /// value clamped to the smallest normal number) would give NaN.
    Clamp(lo, hi), "clamp",
    |s, x| if x.is_nan() { x } else { x.max(s.lo).min(s.hi) },
    |s, x, y| if x >= s.lo && x <= s.hi { F::one() } else { F::zero() },
    |k, x, _y, g| if x >= k.lo && x <= k.hi { g } else { F::zero() }
);
kernel!(
    AddScalar(c),
    "add_scalar",
    |s, x| x + s.c,
    |s, x, y| F::one()
);
kernel!(MulScalar(c), "mul_scalar", |s, x| x * s.c, |s, x, y| s.c);
kernel!(
    /// c / x.
    ScalarDiv(c), "scalar_div",
    |s, x| s.c / x,
    |s, x, y| -y / x
);

/// softplus(x) = max(x, 0) + log1p(exp(-|x|)).
#[inline(always)]
pub fn softplus<F: Element>(x: F) -> F {
    x.fast_softplus()
}

/// The logistic function, without overflow for large |x|.
#[inline(always)]
pub fn sigmoid<F: Element>(x: F) -> F {
    x.fast_sigmoid()
}

impl<'t, F: Element> Var<'t, F> {
    fn map<K: Kernel<F>>(self, k: K) -> Var<'t, F> {
        // the kernel is copied into the closure so that its fields are loop
        // constants (read through a reference they block vectorization)
        let span = profile::span();
        let value = self.tape.with_value(self.id, |x| map_tensor(x, k));
        self.tape.record(span, value, Box::new(Map(k)), &[self])
    }

    /// `-x` (also the unary `-` operator).
    pub(crate) fn negate(self) -> Self {
        self.map(Neg::new())
    }
    /// `e^x`.
    pub fn exp(self) -> Self {
        self.map(Exp::new())
    }
    /// Natural logarithm.
    pub fn ln(self) -> Self {
        self.map(Ln::new())
    }
    /// `ln self + c`, computed in f64 and rounded once.
    pub(crate) fn ln_plus(self, c: f64) -> Self {
        self.map(LnPlus {
            c,
            _f: std::marker::PhantomData,
        })
    }
    /// `ln |Γ(x)|`, accurate to about 1e-15 relative for `x > 0` (including
    /// near 1 and 2, where it crosses zero); its derivative is the digamma
    /// function. Computed in f64 and rounded for f32.
    pub fn lgamma(self) -> Self {
        self.map(Lgamma::new())
    }
    /// The digamma function `ψ(x) = d ln Γ(x) / dx`; its derivative is the
    /// trigamma function. Computed in f64 and rounded for f32.
    pub fn digamma(self) -> Self {
        self.map(Digamma::new())
    }
    /// `ln Γ(x) - ((x - 1/2) ln x - x + ln(2π)/2)` for `x > 0`: about
    /// `1/(12x)` for large `x`, so that a formula which cancels the growing
    /// terms of `ln Γ` analytically keeps its digits.
    pub(crate) fn lgamma_correction(self) -> Self {
        self.map(LgammaCorrection::new())
    }
    /// `ψ(x) - ln x + 1/(2x)` for `x > 0`, the derivative of
    /// [`lgamma_correction`](Var::lgamma_correction).
    pub(crate) fn digamma_correction(self) -> Self {
        self.map(DigammaCorrection::new())
    }
    /// `e^x - 1`, accurate for small `x`.
    pub fn expm1(self) -> Self {
        self.map(Expm1::new())
    }
    /// `ln(1 + x)`, accurate for small `x`.
    pub fn log1p(self) -> Self {
        self.map(Log1p::new())
    }
    /// `ln(1 + e^x)`, stable: `softplus(-30)` in f32 is about 9.4e-14, not 0.
    pub fn softplus(self) -> Self {
        self.map(Softplus::new())
    }
    /// `softplus(x) + c`, fused.
    pub fn softplus_shift(self, c: F) -> Self {
        self.map(SoftplusShift::new(c))
    }
    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(self) -> Self {
        self.map(Sigmoid::new())
    }
    /// Hyperbolic tangent.
    pub fn tanh(self) -> Self {
        self.map(Tanh::new())
    }
    /// `max(x, 0)`; NaN stays NaN, so that a NaN reaching a ReLU is not
    /// hidden as a zero.
    pub fn relu(self) -> Self {
        self.map(Relu::new())
    }
    /// `|x|` (derivative 0 at 0).
    pub fn abs(self) -> Self {
        self.map(Abs::new())
    }
    /// Square root.
    pub fn sqrt(self) -> Self {
        self.map(Sqrt::new())
    }
    /// `x * x`.
    pub fn square(self) -> Self {
        self.map(Square::new())
    }
    /// `x^p` for a constant exponent.
    pub fn powf(self, p: F) -> Self {
        self.map(Powf::new(p))
    }
    /// Clamps into `[lo, hi]` (gradient 0 outside); NaN stays NaN.
    ///
    /// # Panics
    /// If `lo > hi` or either bound is NaN, as `f64::clamp` does
    /// ([`Var::try_clamp`] returns the error instead): such bounds have no
    /// interval to clamp into, and the result would be `hi` everywhere.
    pub fn clamp(self, lo: F, hi: F) -> Self {
        self.try_clamp(lo, hi)
            .unwrap_or_else(|e| panic!("{e} (use try_clamp to get a Result)"))
    }
    /// [`Var::clamp`], with bounds that are not ordered (`lo > hi`, or
    /// either NaN) an error.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::vector(&[-2.0, 0.5, 3.0]));
    /// assert_eq!(x.try_clamp(0.0, 1.0)?.value().data(), [0.0, 0.5, 1.0]);
    /// assert!(x.try_clamp(1.0, 0.0).is_err());
    /// assert!(x.try_clamp(f64::NAN, 1.0).is_err());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn try_clamp(self, lo: F, hi: F) -> Result<Self> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(Error::invalid(
                "clamp",
                format!(
                    "the bounds must satisfy lo <= hi (neither NaN), got lo = {lo:e}, hi = {hi:e}"
                ),
            ));
        }
        Ok(self.map(Clamp::new(lo, hi)))
    }
    pub(crate) fn add_scalar(self, c: F) -> Self {
        self.map(AddScalar::new(c))
    }
    pub(crate) fn mul_scalar(self, c: F) -> Self {
        self.map(MulScalar::new(c))
    }
    pub(crate) fn scalar_div(self, c: F) -> Self {
        self.map(ScalarDiv::new(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lgamma` and `digamma` give the same bits, value and gradient, on
    /// every instruction set the CPU has, at lengths around their groups of
    /// eight (taken two at a time with AVX-512).
    #[test]
    fn special_ops_give_the_same_bits_on_every_tier_at_every_length() {
        use crate::kernels::parallel::on_tier;
        use crate::{autodiff::tape::Tape, tensor::Tensor};
        fn run(n: usize) -> Vec<u32> {
            let tape = Tape::<f32>::new();
            let x = tape.var(Tensor::from_fn(&[n], |i| 0.3 + (i % 29) as f32 * 0.71));
            let mut out = Vec::new();
            for y in [x.lgamma(), x.digamma()] {
                let g = y.sum().backward().unwrap();
                out.extend(y.value().data().iter().map(|v| v.to_bits()));
                out.extend(g.get(x).unwrap().data().iter().map(|v| v.to_bits()));
            }
            out
        }
        for n in [1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48] {
            let portable = on_tier(Tier::Portable, || run(n)).expect("the baseline runs anywhere");
            for tier in [Tier::Avx2Fma, Tier::Avx512] {
                if let Some(got) = on_tier(tier, || run(n)) {
                    assert!(got == portable, "{tier:?}, {n} values");
                }
            }
        }
    }

    #[test]
    fn relu_keeps_nan() {
        use crate::{autodiff::tape::Tape, tensor::Tensor};
        let tape = Tape::<f32>::new();
        let x = Tensor::vector(&[f32::NAN, -1.0, 0.0, -0.0, 2.0]);
        let y = tape.var(x).relu().value();
        assert!(y.data()[0].is_nan());
        let bits: Vec<u32> = y.data()[1..].iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [0, 0, 0, 2f32.to_bits()]);
    }

    /// Where `relu` and `abs` do not depend on `x` (at 0 for `abs`), their
    /// gradient is 0 even when an infinite one comes in: `ln(relu(x))`
    /// gets `1 / 0 = inf` from `ln` at the units that are off, and
    /// `inf · 0` made every such unit's gradient NaN.
    #[test]
    fn relu_and_abs_pass_zero_where_they_are_flat() {
        use crate::{autodiff::tape::Tape, tensor::Tensor};
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::vector(&[-1.0, 0.0, 2.0, -4.0]));
        let relu = x.relu().ln().sum().backward().unwrap();
        assert_eq!(relu.get(x).unwrap().data(), &[0.0, 0.0, 0.5, 0.0]);
        let abs = x.abs().ln().sum().backward().unwrap();
        assert_eq!(abs.get(x).unwrap().data(), &[-1.0, 0.0, 0.5, -0.25]);
    }

    /// The derivatives of the logistic function and of tanh in `f32`
    /// within a few ulp of the `f64` ones wherever they are above
    /// `4 e^-87.3` (below which the `f32` exponential flushes to 0, a few
    /// times the smallest normal number); from `1 - y` they lost all their
    /// digits by x = 17 and 9.
    #[test]
    fn sigmoid_and_tanh_derivatives_keep_their_digits() {
        let exact_sigmoid = |x: f64| {
            let e = (-x.abs()).exp();
            e / ((1.0 + e) * (1.0 + e))
        };
        let exact_tanh = |x: f64| 1.0 / (x.cosh() * x.cosh());
        let mut worst = [0.0f64; 2];
        for i in -4000..=4000 {
            let x = i as f32 * 0.02;
            let (s, t) = (Sigmoid::<f32>::new(), Tanh::<f32>::new());
            let got = [s.df(x, s.f(x)), t.df(x, t.f(x))];
            let want = [exact_sigmoid(f64::from(x)), exact_tanh(f64::from(x))];
            for k in 0..2 {
                if want[k] >= 4.0 * (-87.3f64).exp() {
                    let ulp = f64::from(f32::EPSILON) * want[k];
                    worst[k] = worst[k].max((f64::from(got[k]) - want[k]).abs() / ulp);
                }
            }
            let (s, t) = (Sigmoid::<f64>::new(), Tanh::<f64>::new());
            let x = f64::from(x);
            assert!((s.df(x, s.f(x)) - exact_sigmoid(x)).abs() <= 1e-14 * exact_sigmoid(x));
            assert!((t.df(x, t.f(x)) - exact_tanh(x)).abs() <= 1e-14 * exact_tanh(x));
        }
        assert!(worst[0] <= 4.0 && worst[1] <= 4.0, "{worst:?} ulp");
    }

    #[test]
    fn expm1_derivative_keeps_its_digits() {
        let k = Expm1::<f32>::new();
        for i in -870..=880 {
            let x = i as f32 * 0.1;
            let (got, want) = (f64::from(k.df(x, k.f(x))), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * want;
            assert!(
                (got - want).abs() <= 4.0 * ulp,
                "x {x}: {got:e} vs {want:e}"
            );
        }
    }

    #[test]
    fn clamp_keeps_nan() {
        use crate::{autodiff::tape::Tape, tensor::Tensor};
        // long enough for the parallel, vectorized path
        let n = 3 * crate::kernels::parallel::PARALLEL_MIN;
        let mut x = vec![0.5f32; n];
        (x[0], x[n - 1], x[n / 2]) = (f32::NAN, -3.0, 7.0);
        let tape = Tape::<f32>::new();
        let y = tape.var(Tensor::vector(&x)).clamp(0.0, 1.0).value();
        assert!(y.data()[0].is_nan());
        assert_eq!(
            (y.data()[n - 1], y.data()[n / 2], y.data()[1]),
            (0.0, 1.0, 0.5)
        );
        let y64 = Tape::<f64>::new().scalar(f64::NAN).clamp(-1.0, 1.0).value();
        assert!(y64.data()[0].is_nan());
    }

    #[test]
    fn softplus_does_not_underflow_or_overflow() {
        // softplus(-30) = ln(1 + e^-30) ≈ e^-30 = 9.357622968840175e-14
        let v = softplus(-30.0f32);
        assert!((v - 9.357_623e-14).abs() < 1e-19, "{v}");
        assert_eq!(softplus(1000.0f64), 1000.0);
        // softplus(0) = ln 2
        assert!((softplus(0.0f64) - std::f64::consts::LN_2).abs() < 1e-16);
    }

    #[test]
    fn sigmoid_is_stable_at_extremes() {
        assert_eq!(sigmoid(-1000.0f64), 0.0);
        assert_eq!(sigmoid(1000.0f64), 1.0);
        assert!((sigmoid(0.0f64) - 0.5).abs() < 1e-16);
    }

    #[test]
    fn derivatives_at_hand_values() {
        // d/dx x^3 at 2 = 12; d/dx sqrt(x) at 4 = 1/4; d/dx tanh at 0 = 1
        assert_eq!(Powf::new(3.0f64).df(2.0, 8.0), 12.0);
        assert_eq!(Sqrt::<f64>::new().df(4.0, 2.0), 0.25);
        assert_eq!(Tanh::<f64>::new().df(0.0, 0.0), 1.0);
        assert_eq!(Clamp::new(0.0f64, 1.0).df(1.5, 1.0), 0.0);
    }
}
