//! Elementwise binary ops with NumPy broadcasting, and the `+ - * /`
//! operators between vars, tensors and scalars in either order.

use crate::autodiff::ops::unary::SPECIAL_LANES;
use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{par_new, par_new_in_segments, par_sum_filled};
use crate::kernels::special;
use crate::tensor::{Element, Storage, Tensor, tiled, trailing_broadcast};
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A binary scalar function with both partial derivatives.
trait Kernel2<F: Element>: 'static {
    const NAME: &'static str;
    /// The partial derivatives when they are constants (add, sub): the
    /// backward then scales the incoming gradient instead of evaluating `df`.
    const CONSTANT_DF: Option<(f64, f64)> = None;
    fn f(a: F, b: F) -> F;
    /// (d f / d a, d f / d b) at (a, b) with y = f(a, b).
    fn df(a: F, b: F, y: F) -> (F, F);
    /// The gradient `g · d f / d a` (`side` 0) or `g · d f / d b` (1)
    /// passed to that operand.
    #[inline(always)]
    fn grad(side: usize, a: F, b: F, y: F, g: F) -> F {
        let (da, db) = Self::df(a, b, y);
        g * if side == 0 { da } else { db }
    }
    /// Whether the op takes its values and gradients through
    /// [`f_lanes`](Kernel2::f_lanes) and [`grad_lanes`](Kernel2::grad_lanes)
    /// (a kernel computed several elements at a time), over the operands
    /// broadcast together, instead of the per-element loops.
    const LANES: bool = false;
    /// `f` of each position of the broadcast operands into `out`.
    #[inline(always)]
    fn f_lanes(a: View<'_, F>, b: View<'_, F>, out: &mut [MaybeUninit<F>]) {
        for (i, o) in out.iter_mut().enumerate() {
            o.write(Self::f(a.at(i), b.at(i)));
        }
    }
    /// [`grad`](Kernel2::grad) of each position into `out` (the output
    /// values are not passed: the kernels that take lanes do not use them).
    #[inline(always)]
    fn grad_lanes(
        side: usize,
        a: View<'_, F>,
        b: View<'_, F>,
        g: &[F],
        out: &mut [MaybeUninit<F>],
    ) {
        for (i, o) in out.iter_mut().enumerate() {
            let (a, b) = (a.at(i), b.at(i));
            o.write(Self::grad(side, a, b, Self::f(a, b), g[i]));
        }
    }
}

struct AddK;
impl<F: Element> Kernel2<F> for AddK {
    const NAME: &'static str = "add";
    const CONSTANT_DF: Option<(f64, f64)> = Some((1.0, 1.0));
    fn f(a: F, b: F) -> F {
        a + b
    }
    fn df(_: F, _: F, _: F) -> (F, F) {
        (F::one(), F::one())
    }
}

struct SubK;
impl<F: Element> Kernel2<F> for SubK {
    const NAME: &'static str = "sub";
    const CONSTANT_DF: Option<(f64, f64)> = Some((1.0, -1.0));
    fn f(a: F, b: F) -> F {
        a - b
    }
    fn df(_: F, _: F, _: F) -> (F, F) {
        (F::one(), -F::one())
    }
}

struct MulK;
impl<F: Element> Kernel2<F> for MulK {
    const NAME: &'static str = "mul";
    fn f(a: F, b: F) -> F {
        a * b
    }
    fn df(a: F, b: F, _: F) -> (F, F) {
        (b, a)
    }
}

struct DivK;
impl<F: Element> Kernel2<F> for DivK {
    const NAME: &'static str = "div";
    fn f(a: F, b: F) -> F {
        a / b
    }
    // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -y/b
    fn df(_: F, b: F, y: F) -> (F, F) {
        (b.recip(), -y / b)
    }
    // `g / b` rather than `g (1 / b)`, and `-(g / b) y` rather than
    // `g (-y / b)`: `1 / b` and `y / b` overflow for a tiny `b` where the
    // gradients do not (`g = 1e-300` through `y = 1e290` and `b = 1e-300`
    // gives -1e290, not -inf). Where `g / b` itself leaves the normal
    // range, `-(g y) / b` is taken (`g = 1e300`, `y = 1e-290`, `b = 1e-10`
    // gives -1e20). A zero `g` gives 0.
    #[inline(always)]
    fn grad(side: usize, _: F, b: F, y: F, g: F) -> F {
        let g_over_b = g / b;
        if side == 0 {
            g_over_b
        } else if g == F::zero() {
            // (also where y overflowed: 0, not 0 · inf)
            F::zero()
        } else if g_over_b.is_normal() {
            -(g_over_b * y)
        } else {
            -((g * y) / b)
        }
    }
}

/// `finish(i, F(lanes(a, b)_i))` into `out` for each position `i`,
/// [`SPECIAL_LANES`] at a time (the last group padded with `(3, 3)`, in
/// every form's range).
#[inline(always)]
fn binary_lanes<F: Element>(
    a: View<'_, F>,
    b: View<'_, F>,
    out: &mut [MaybeUninit<F>],
    finish: impl Fn(usize, F) -> F,
    lanes: impl Fn(&[f64; SPECIAL_LANES], &[f64; SPECIAL_LANES]) -> [f64; SPECIAL_LANES],
) {
    let f64_of = |v: F| v.to_f64().unwrap_or(f64::NAN);
    for (at, os) in out.chunks_mut(SPECIAL_LANES).enumerate() {
        let start = at * SPECIAL_LANES;
        let (mut va, mut vb) = ([3.0; SPECIAL_LANES], [3.0; SPECIAL_LANES]);
        for j in 0..os.len() {
            va[j] = f64_of(a.at(start + j));
            vb[j] = f64_of(b.at(start + j));
        }
        let r = lanes(&va, &vb);
        for (j, (o, &r)) in os.iter_mut().zip(&r).enumerate() {
            o.write(finish(start + j, F::lit(r)));
        }
    }
}

/// `f` of each lane's pair, one by one (a derivative with no lane form).
#[inline(always)]
fn each_lane(
    a: &[f64; SPECIAL_LANES],
    b: &[f64; SPECIAL_LANES],
    f: fn(f64, f64) -> f64,
) -> [f64; SPECIAL_LANES] {
    let mut out = [0.0; SPECIAL_LANES];
    for l in 0..SPECIAL_LANES {
        out[l] = f(a[l], b[l]);
    }
    out
}

/// A special function of two arguments, evaluated in f64.
fn special2<F: Element>(f: fn(f64, f64) -> f64, a: F, b: F) -> F {
    let f64_of = |v: F| v.to_f64().unwrap_or(f64::NAN);
    F::lit(f(f64_of(a), f64_of(b)))
}

/// A [`Kernel2`] whose value is a special function of f64 (`special2`)
/// and whose derivatives are `$da` and `$db` of the arguments, each
/// evaluated only for the operand that needs it. A zero incoming gradient
/// passes on zero, also where a derivative overflows at an argument in
/// the domain (ψ'(a) = 1/a² is +inf in f64 for `a` below 1e-154): there
/// `0 · inf` would be NaN where the derivative of the whole expression is
/// finite (a divergence between two equal concentrations of 1e-300 has the
/// factor `a1 - a2 = 0` in front of it).
macro_rules! special_kernel {
    ($(#[$doc:meta])* $name:ident, $label:literal, $f:path, |$a:ident, $b:ident| ($da:expr, $db:expr $(,)?)) => {
        special_kernel!($(#[$doc])* $name, $label, $f, |$a, $b| ($da, $db), {});
    };
    ($(#[$doc:meta])* $name:ident, $label:literal, $f:path, |$a:ident, $b:ident| ($da:expr, $db:expr $(,)?),
     lanes: |$la:ident, $lb:ident| $lanes:expr, grads: |$gs:ident, $ga:ident, $gb:ident| $grads:expr $(,)?) => {
        special_kernel!($(#[$doc])* $name, $label, $f, |$a, $b| ($da, $db), {
            const LANES: bool = true;
            #[inline(always)]
            fn f_lanes(a: View<'_, F>, b: View<'_, F>, out: &mut [MaybeUninit<F>]) {
                binary_lanes(a, b, out, |_, v| v, #[inline(always)] |$la, $lb| $lanes)
            }
            #[inline(always)]
            fn grad_lanes(side: usize, a: View<'_, F>, b: View<'_, F>, g: &[F], out: &mut [MaybeUninit<F>]) {
                binary_lanes(
                    a,
                    b,
                    out,
                    #[inline(always)]
                    |i, d| if g[i] == F::zero() { F::zero() } else { g[i] * d },
                    #[inline(always)]
                    |$ga, $gb| { let $gs = side; $grads },
                )
            }
        });
    };
    ($(#[$doc:meta])* $name:ident, $label:literal, $f:path, |$a:ident, $b:ident| ($da:expr, $db:expr $(,)?), {$($lanes:tt)*}) => {
        $(#[$doc])*
        struct $name;
        impl<F: Element> Kernel2<F> for $name {
            const NAME: &'static str = $label;
            $($lanes)*
            fn f(a: F, b: F) -> F {
                special2($f, a, b)
            }
            fn df($a: F, $b: F, _: F) -> (F, F) {
                ($da, $db)
            }
            fn grad(side: usize, $a: F, $b: F, _: F, g: F) -> F {
                if g == F::zero() {
                    F::zero()
                } else if side == 0 {
                    g * $da
                } else {
                    g * $db
                }
            }
        }
    };
}

special_kernel!(
    /// `ln B(a, b)`; `d/da = ψ(a) - ψ(a + b)`, and symmetrically for `b`.
    /// Value and derivatives are taken in lanes ([`special::lbeta_lanes`],
    /// [`special::digamma_diff_lanes`]).
    LbetaK, "lbeta", special::lbeta,
    |a, b| (special2(special::digamma_diff, a, b), special2(special::digamma_diff, b, a)),
    lanes: |a, b| special::lbeta_lanes(a, b),
    grads: |side, a, b| match side {
        0 => special::digamma_diff_lanes(a, b),
        _ => special::digamma_diff_lanes(b, a),
    }
);
special_kernel!(
    /// `ψ(a) - ψ(a + b)`; `d/da = ψ'(a) - ψ'(a + b)`, `d/db = -ψ'(a + b)`.
    /// Its value is taken in lanes ([`special::digamma_diff_lanes`]).
    DigammaDiffK, "digamma_diff", special::digamma_diff,
    |a, b| (
        special2(special::trigamma_diff, a, b),
        -special2(|a, b| special::trigamma(a + b), a, b),
    ),
    lanes: |a, b| special::digamma_diff_lanes(a, b),
    grads: |side, a, b| match side {
        0 => each_lane(a, b, special::trigamma_diff),
        _ => each_lane(a, b, |a, b| -special::trigamma(a + b)),
    }
);
special_kernel!(
    /// `(a - b) ψ(a) - ln Γ(a) + ln Γ(b)`; `d/da = (a - b) ψ'(a)`,
    /// `d/db = ψ(b) - ψ(a)` ([`special::digamma_spread`]). Value and
    /// derivatives are taken in lanes
    /// ([`special::shape_divergence_lanes`]).
    ShapeDivergenceK, "shape_divergence", special::shape_divergence_direct,
    |a, b| (
        special2(special::shape_slope, a, b),
        special2(special::digamma_spread, a, b),
    ),
    lanes: |a, b| special::shape_divergence_lanes(a, b),
    grads: |side, a, b| special::shape_divergence_grad_lanes(side, a, b)
);
special_kernel!(
    /// `ln Γ(x + h) - ln Γ(x)`; `d/dx = ψ(x + h) - ψ(x)`, `d/dh = ψ(x + h)`.
    LgammaDiffK, "lgamma_diff", special::lgamma_diff,
    |x, h| (
        -special2(special::digamma_diff, x, h),
        special2(|x, h| special::digamma(x + h), x, h),
    )
);
special_kernel!(
    /// `a ln(a / y) + y - a`; `d/da = ln(a / y)`, `d/dy = 1 - a / y`.
    Bd0K, "bd0", special::bd0,
    |a, y| (special2(special::ln_ratio, a, y), special2(|a, y| 1.0 - a / y, a, y))
);
special_kernel!(
    /// `ln(a / y)` ([`special::ln_ratio`]: `ln a - ln y` where the quotient
    /// leaves the normal floats); `d/da = 1/a`, `d/dy = -1/y`.
    LnRatioK, "ln_ratio", special::ln_ratio,
    |a, y| (special2(|a, _| 1.0 / a, a, y), special2(|_, y| -1.0 / y, a, y))
);
special_kernel!(
    /// `loc + γ scale`, a Gumbel mean, rounded once; `d/dloc = 1`,
    /// `d/dscale = γ`.
    GumbelMeanK, "gumbel_mean", special::gumbel_mean,
    |_loc, _scale| (F::one(), F::lit(special::EULER))
);
special_kernel!(
    /// `ln P(k; λ)` of a Poisson count; `d/dk = ln λ - ψ(k + 1)` (of the
    /// continuous extension), `d/dλ = k / λ - 1`.
    PoissonLogMassK, "poisson_log_mass", special::poisson_log_mass,
    |k, rate| (
        special2(|k, r| r.ln() - special::digamma(k + 1.0), k, rate),
        special2(|k, r| k / r - 1.0, k, rate),
    )
);

/// `a` where `mask` is nonzero and `b` elsewhere, over inputs
/// `[mask, a, b]` broadcast together; each of `a` and `b` gets the
/// incoming gradient where it was chosen and 0 elsewhere. Unlike
/// `a m + b (1 - m)`, an infinite or NaN value that is not chosen reaches
/// neither the output nor a gradient.
struct Choose;

impl<F: Element> Op<F> for Choose {
    fn name(&self) -> &str {
        "choose"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let ops = Operands::<F, 3>::new("choose", inputs, RUN_FORWARD)?;
        // SAFETY: the loop writes every element of each part.
        let out = unsafe {
            ops.new_output(
                #[inline(always)]
                |_, [m, a, b], out| {
                    // each operand is indexed with a stride of 1 or 0 (a
                    // single value), which keeps the loop free of branches
                    // on which it is
                    let ((m, sm), (a, sa), (b, sb)) = (m.strided(), a.strided(), b.strided());
                    for (i, o) in out.iter_mut().enumerate() {
                        o.write(if m[i * sm] != F::zero() {
                            a[i * sa]
                        } else {
                            b[i * sb]
                        });
                    }
                },
            )
        };
        Ok(Tensor::new_unchecked(out, ops.shape))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, output, grad, &[false, true, true])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let mask = widen(inputs[0], output.shape())?;
        let mut out = vec![None];
        for side in 1..3 {
            if !needs[side] {
                out.push(None);
                continue;
            }
            let chosen = |m: F| (m != F::zero()) == (side == 1);
            let g: Vec<F> = grad
                .data()
                .iter()
                .zip(mask.data())
                .map(|(&g, &m)| if chosen(m) { g } else { F::zero() })
                .collect();
            let g = Tensor::from_vec(g, output.shape())?;
            out.push(Some(g.sum_to_owned(inputs[side].shape())?));
        }
        Ok(out)
    }
}

/// The tensor broadcast to `shape`, borrowed when it already has it.
fn widen<'a, F: Element>(t: &'a Tensor<F>, shape: &[usize]) -> Result<Cow<'a, Tensor<F>>> {
    if t.shape() == shape {
        Ok(Cow::Borrowed(t))
    } else {
        Ok(Cow::Owned(t.broadcast_to(shape)?))
    }
}

struct Binary<K>(std::marker::PhantomData<K>);

impl<F: Element, K: Kernel2<F>> Op<F> for Binary<K> {
    fn name(&self) -> &str {
        K::NAME
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let ops = Operands::<F, 2>::new(K::NAME, inputs, RUN_FORWARD)?;
        // SAFETY: both kernels write every element of each chunk or segment.
        let out = unsafe {
            ops.new_output(
                #[inline(always)]
                |_, [a, b], out| {
                    if K::LANES {
                        K::f_lanes(a, b, out);
                    } else {
                        zip2(
                            out,
                            a,
                            b,
                            #[inline(always)]
                            |_, a, b| K::f(a, b),
                        );
                    }
                },
            )
        };
        Ok(Tensor::new_unchecked(out, ops.shape))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, output, grad, &[true, true])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        if let Some((da, db)) = K::CONSTANT_DF {
            // the gradient is passed on, scaled by a constant (+-1 for add
            // and sub)
            return (needs.iter().enumerate().take(2))
                .map(|(side, &need)| {
                    if !need {
                        return Ok(None);
                    }
                    let scale = if side == 0 { da } else { db };
                    let passed = if scale == 1.0 {
                        grad.clone()
                    } else {
                        grad.map(|g| g * F::lit(scale))
                    };
                    passed.sum_to_owned(inputs[side].shape()).map(Some)
                })
                .collect();
        }
        let ops = Operands::<F, 2>::new(K::NAME, inputs, RUN_BACKWARD)?;
        let (y, g) = (output.data(), grad.data());
        let mut out = Vec::with_capacity(2);
        for (side, &need) in needs.iter().enumerate().take(2) {
            if !need {
                out.push(None);
                continue;
            }
            // SAFETY: `grad_into` writes every element of each chunk or segment.
            let gradient = unsafe {
                gradient_of(
                    &ops,
                    inputs[side].shape(),
                    #[inline(always)]
                    |at, [a, b], part| {
                        grad_into::<F, K>(side, (a, b), (&y[at..], &g[at..]), part);
                    },
                )
            };
            out.push(Some(gradient?));
        }
        Ok(out)
    }
}

/// `x · scale + shift` with broadcasting, in one pass: the values of `x *
/// scale + shift` as the two ops give them (two roundings, not a fused
/// multiply-add), for the draws of the location-scale families (`x` a
/// standard draw), where the second op's pass and its output took as long
/// as the first's.
struct Affine;

impl<F: Element> Op<F> for Affine {
    fn name(&self) -> &str {
        "affine"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let ops = Operands::<F, 3>::new("affine", inputs, RUN_FORWARD)?;
        // SAFETY: `fill4` writes every element of each chunk or segment.
        let out = unsafe {
            ops.new_output(
                #[inline(always)]
                |_, [x, scale, shift], out| {
                    fill4(
                        &|x, scale, shift, _| x * scale + shift,
                        [x, scale, shift, shift],
                        out,
                    );
                },
            )
        };
        Ok(Tensor::new_unchecked(out, ops.shape))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, output, grad, &[true; 3])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let ops = Operands::<F, 3>::new("affine", inputs, RUN_BACKWARD)?;
        let g = grad.data();
        let mut out = Vec::with_capacity(3);
        // g times the other factor, for `x` (side 0) and `scale` (side 1)
        for side in 0..2 {
            if !needs[side] {
                out.push(None);
                continue;
            }
            // SAFETY: `fill4` writes every element of each chunk or segment.
            let gradient = unsafe {
                gradient_of(
                    &ops,
                    inputs[side].shape(),
                    #[inline(always)]
                    |at, [x, scale, _], part| {
                        let other = if side == 0 { scale } else { x };
                        let g = View::each(&g[at..]);
                        fill4(&|g, other, _, _| g * other, [g, other, other, other], part);
                    },
                )
            };
            out.push(Some(gradient?));
        }
        out.push(if needs[2] {
            Some(grad.clone().sum_to_owned(inputs[2].shape())?)
        } else {
            None
        });
        Ok(out)
    }
}

/// The gradient of a binary op's operand `side` at the operands `a`, `b`,
/// the output `y` and its gradient `g` (each from the first position of
/// `out`), into every element of `out`.
#[inline(always)]
fn grad_into<F: Element, K: Kernel2<F>>(
    side: usize,
    (a, b): (View<'_, F>, View<'_, F>),
    (y, g): (&[F], &[F]),
    out: &mut [MaybeUninit<F>],
) {
    if K::LANES {
        K::grad_lanes(side, a, b, g, out);
        return;
    }
    let (y, g) = (&y[..out.len()], &g[..out.len()]);
    if side == 0 {
        zip2(
            out,
            a,
            b,
            #[inline(always)]
            |i, a, b| K::grad(0, a, b, y[i], g[i]),
        );
    } else {
        zip2(
            out,
            a,
            b,
            #[inline(always)]
            |i, a, b| K::grad(1, a, b, y[i], g[i]),
        );
    }
}

/// The shortest runs of a per-run value (a column `[n, 1]` against
/// `[n, m]`: runs of `m`) that the forward of a binary op (or of a
/// log-density, through [`Operands`]) reads in place, a
/// segment per run; shorter runs are broadcast to the output's shape
/// first, which is faster at runs of 2 and slower at runs of 4 and more
/// (`docs/benchmarks.md`, "Repeated operands of the binary ops read in
/// place").
pub(crate) const RUN_FORWARD: usize = 4;

/// The same bound for the backward, which makes a pass per operand's
/// gradient: reading in place is slower there for runs of 16 and faster
/// from 32.
pub(crate) const RUN_BACKWARD: usize = 32;

/// An operand of an elementwise op as its loops read it, a segment of the
/// output at a time: every kind is read where it lies but a broadcast
/// that is none of them, which is widened to the output's shape first.
enum Reading<'a, F: Clone> {
    /// One value at every position (its tensor's one element).
    Same(&'a [F]),
    /// A value per position: the operand has the output's elements in its
    /// order, or was broadcast to them.
    Each(Cow<'a, Tensor<F>>),
    /// A row repeated along the leading axes, [`tiled`].
    Row(Cow<'a, [F]>),
    /// A value for each run of this many consecutive elements (a column
    /// `[n, 1]` against `[n, m]`: runs of `m`).
    Runs(&'a [F], usize),
}

impl<F: Element> Reading<'_, F> {
    /// The period of the segments it must be read in (no segment may cross
    /// a multiple of it), if it has one.
    fn period(&self) -> Option<usize> {
        match self {
            Reading::Row(row) => Some(row.len()),
            Reading::Runs(_, run) => Some(*run),
            Reading::Same(_) | Reading::Each(_) => None,
        }
    }

    /// The operand over the segment or chunk that starts at output
    /// element `at`.
    #[inline(always)]
    fn view_at(&self, at: usize) -> View<'_, F> {
        match self {
            Reading::Same(value) => View {
                data: value,
                scalar: true,
            },
            Reading::Each(t) => View::each(&t.data()[at..]),
            Reading::Row(row) => View::each(&row[at % row.len()..]),
            Reading::Runs(values, run) => View {
                data: &values[at / run..],
                scalar: true,
            },
        }
    }
}

/// The operands of an elementwise op broadcast together, each as a
/// [`Reading`]: a single value, the output's elements, a row repeated
/// along the leading axes, or a value per run of at least
/// `shortest_run` elements ([`RUN_FORWARD`], [`RUN_BACKWARD`]) are read in
/// place; other broadcasts are widened to the output's shape. Repeated
/// operands are read a segment at a time, so all of them must share a
/// period: one whose period differs from the first's is widened.
pub(crate) struct Operands<'a, F: Element, const N: usize> {
    pub(crate) shape: Vec<usize>,
    readings: [Reading<'a, F>; N],
    period: Option<usize>,
}

impl<'a, F: Element, const N: usize> Operands<'a, F, N> {
    pub(crate) fn new(
        op: &'static str,
        inputs: &[&'a Tensor<F>],
        shortest_run: usize,
    ) -> Result<Self> {
        if inputs.len() != N {
            return Err(Error::invalid(
                op,
                format!("{} inputs, expected {N}", inputs.len()),
            ));
        }
        let shape = common_shape(op, inputs)?;
        let n = crate::tensor::numel(&shape);
        let mut period = None;
        let mut readings = Vec::with_capacity(N);
        for t in inputs {
            let repeated = if t.len() == 1 || t.len() == n {
                None
            } else if trailing_broadcast(&shape, t.shape()).is_some() {
                Some(Reading::Row(tiled(t.data())))
            } else {
                leading_broadcast(&shape, t.shape())
                    .filter(|&run| run >= shortest_run)
                    .map(|run| Reading::Runs(t.data(), run))
            };
            let fits = |r: &Reading<'a, F>| period.is_none() || r.period() == period;
            let reading = match repeated {
                Some(r) if fits(&r) => {
                    period = r.period();
                    r
                }
                _ if t.len() == 1 => Reading::Same(t.data()),
                // (as many elements as the output: its shape with leading 1s)
                _ if t.len() == n => Reading::Each(Cow::Borrowed(*t)),
                _ => Reading::Each(Cow::Owned(t.broadcast_to(&shape)?)),
            };
            readings.push(reading);
        }
        let readings = readings
            .try_into()
            .map_err(|_| Error::invalid(op, format!("{} inputs, expected {N}", inputs.len())))?;
        Ok(Operands {
            shape,
            readings,
            period,
        })
    }

    /// The output's elements, written by `fill(at, operands, out)` a chunk
    /// at a time on every thread, or a segment at a time (none crossing a
    /// multiple of the repeated operands' period), with the operands from
    /// output element `at` on.
    ///
    /// # Safety
    /// `fill` must initialize every element of each `out` (as for
    /// [`par_new`]).
    #[inline(always)]
    pub(crate) unsafe fn new_output(
        &self,
        fill: impl Fn(usize, [View<'_, F>; N], &mut [MaybeUninit<F>]) + Sync,
    ) -> Storage<F> {
        let n = crate::tensor::numel(&self.shape);
        let views = |at: usize| std::array::from_fn(|k| self.readings[k].view_at(at));
        // SAFETY: the parts cover the output, and `fill` initializes every
        // element of each (the caller's contract).
        unsafe {
            match self.period {
                Some(period) => par_new_in_segments(
                    n,
                    period,
                    #[inline(always)]
                    |at, out| fill(at, views(at), out),
                ),
                None => par_new(
                    n,
                    #[inline(always)]
                    |at, out| fill(at, views(at), out),
                ),
            }
        }
    }
}

impl<F: Element, const N: usize> Operands<'_, F, N> {
    /// The sum of the output's elements that `fill` writes (as
    /// [`new_output`](Self::new_output) takes it), without the output: the
    /// bits of [`Tensor::sum_all`] of it ([`par_sum_filled`]), for operands
    /// that are not read in segments (no period).
    ///
    /// # Safety
    /// As for [`new_output`](Self::new_output).
    #[inline(always)]
    pub(crate) unsafe fn output_sum(
        &self,
        fill: impl Fn(usize, [View<'_, F>; N], &mut [MaybeUninit<F>]) + Sync,
    ) -> F {
        debug_assert!(self.period.is_none(), "operands read in segments");
        let n = crate::tensor::numel(&self.shape);
        let views = |at: usize| std::array::from_fn(|k| self.readings[k].view_at(at));
        // SAFETY: `fill` initializes every element of each block (the
        // caller's contract)
        unsafe {
            par_sum_filled(
                n,
                #[inline(always)]
                |at, block| fill(at, views(at), block),
            )
        }
    }
}

/// The gradient of an operand that is a single value (`shape`, one
/// element) from the sum of the output-shaped terms `fill` writes, without
/// them where the operands allow it (the bits of writing them out and
/// summing: [`Operands::output_sum`]); otherwise written out and summed.
///
/// # Safety
/// As for [`Operands::new_output`].
#[inline(always)]
unsafe fn gradient_of<F: Element, const N: usize>(
    ops: &Operands<'_, F, N>,
    shape: &[usize],
    fill: impl Fn(usize, [View<'_, F>; N], &mut [MaybeUninit<F>]) + Sync,
) -> Result<Tensor<F>> {
    if crate::tensor::numel(shape) == 1 && ops.period.is_none() {
        // SAFETY: the caller's contract
        let sum = unsafe { ops.output_sum(fill) };
        return Tensor::from_vec(vec![sum], shape);
    }
    // SAFETY: the caller's contract
    let data = unsafe { ops.new_output(fill) };
    Tensor::new_unchecked(data, ops.shape.clone()).sum_to_owned(shape)
}

impl<'t, F: Element> Var<'t, F> {
    fn binary<K: Kernel2<F>>(self, rhs: Var<'t, F>) -> Result<Var<'t, F>> {
        if !std::ptr::eq(self.tape, rhs.tape) {
            return Err(Error::ForeignTape { op: K::NAME });
        }
        self.tape
            .apply(Binary::<K>(std::marker::PhantomData), &[self, rhs])
    }

    /// `self * scale + shift` with broadcasting, the same values, in one
    /// op ([`Affine`]); errors on incompatible shapes or tapes.
    pub(crate) fn affine(self, scale: Var<'t, F>, shift: Var<'t, F>) -> Result<Self> {
        for other in [scale, shift] {
            if !std::ptr::eq(self.tape, other.tape) {
                return Err(Error::ForeignTape { op: "affine" });
            }
        }
        self.tape.apply(Affine, &[self, scale, shift])
    }

    /// `self + rhs` with broadcasting; errors on incompatible shapes.
    pub fn try_add(self, rhs: Var<'t, F>) -> Result<Self> {
        self.binary::<AddK>(rhs)
    }
    /// `self - rhs` with broadcasting.
    pub fn try_sub(self, rhs: Var<'t, F>) -> Result<Self> {
        self.binary::<SubK>(rhs)
    }
    /// `self * rhs` (elementwise) with broadcasting.
    pub fn try_mul(self, rhs: Var<'t, F>) -> Result<Self> {
        self.binary::<MulK>(rhs)
    }
    /// `self / rhs` (elementwise) with broadcasting.
    pub fn try_div(self, rhs: Var<'t, F>) -> Result<Self> {
        self.binary::<DivK>(rhs)
    }
    /// `ln B(a, b) = ln Γ(a) + ln Γ(b) - ln Γ(a + b)` of `a = self` and
    /// `b`, elementwise with broadcasting, for `a, b > 0`. Unlike the sum of
    /// three [`lgamma`](Var::lgamma)s, it keeps its accuracy for large
    /// arguments, where those are large numbers that cancel: `ln B(10¹⁰,
    /// 1/2)` has its digits, and `ln B(10³⁰⁰, 1/2)` is not 0. Its gradients
    /// are [`digamma_diff`](Var::digamma_diff)s, as accurate. Computed in
    /// f64 and rounded for f32.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let (a, b) = (tape.scalar(2.0), tape.scalar(3.0));
    /// let lb = a.lbeta(b)?; // B(2, 3) = 1/12
    /// assert!((lb.item()? + 12f64.ln()).abs() < 1e-14);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn lbeta(self, b: Var<'t, F>) -> Result<Self> {
        self.binary::<LbetaK>(b)
    }
    /// `ψ(a) - ψ(a + b)` of `a = self` and `b`, elementwise with
    /// broadcasting, for `a, b > 0` (ψ is the [`digamma`](Var::digamma)
    /// function): the derivative of [`lbeta`](Var::lbeta) in `a`, and the
    /// difference that Beta and Student-t entropies and divergences need.
    /// For large `a` the two digammas agree in most of their digits; this
    /// keeps the digits of the difference (about `-b / a`). Computed in f64
    /// and rounded for f32.
    pub fn digamma_diff(self, b: Var<'t, F>) -> Result<Self> {
        self.binary::<DigammaDiffK>(b)
    }
    /// `ln Γ(x + h) - ln Γ(x)` of `x = self` and `h`, elementwise with
    /// broadcasting, for `x > 0` and `h >= 0`. Where `h` is small beside
    /// `x` the two `ln Γ` agree in most of their digits, and their plain
    /// difference keeps few of them (`ln Γ(3 + 1e-10) - ln Γ(3)` is 2e-5
    /// off); this keeps its relative accuracy (about `h ψ(x)`), as in a
    /// negative binomial's `ln Γ(k + r) - ln Γ(r)` at a large `r`, or a
    /// Beta divergence between distributions sharing a tiny
    /// concentration. Computed in f64 and rounded for f32.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(3.0));
    /// let d = x.lgamma_diff(tape.scalar(1e-10))?;
    /// // ln Γ(3 + 1e-10) - ln Γ(3) = 1e-10 ψ(3) + ... = 9.2278433511821...e-11
    /// assert!((d.item()? / 9.227_843_351_182_139e-11 - 1.0).abs() < 1e-14);
    /// let naive = (x + 1e-10).lgamma() - x.lgamma();
    /// assert!((naive.item()? / 9.227_843_351_182_139e-11 - 1.0).abs() > 1e-6);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn lgamma_diff(self, h: Var<'t, F>) -> Result<Self> {
        self.binary::<LgammaDiffK>(h)
    }
    /// `(a - b) ψ(a) - ln Γ(a) + ln Γ(b)` of `a = self` and `b`,
    /// elementwise with broadcasting, for `a, b > 0` below 10 or so (its
    /// terms grow as `a ln a`): with its derivatives computed as a whole,
    /// so that they are 0 where `a = b`.
    pub(crate) fn shape_divergence_direct(self, b: Var<'t, F>) -> Result<Self> {
        self.binary::<ShapeDivergenceK>(b)
    }
    /// `a ln(a / y) + y - a` of `a = self` and `y`, elementwise with
    /// broadcasting, for `a, y >= 0`: accurate where `y` is near `a` (the
    /// Gamma log-density around its mode at large concentrations).
    pub(crate) fn bd0(self, y: Var<'t, F>) -> Result<Self> {
        self.binary::<Bd0K>(y)
    }
    /// `ln(self / y)` for positive `self` and `y`, with broadcasting: as
    /// `ln self - ln y` where the quotient leaves the normal floats (its
    /// logarithm, and the slopes through it, lost their range there).
    pub(crate) fn ln_ratio(self, y: Var<'t, F>) -> Result<Self> {
        self.binary::<LnRatioK>(y)
    }
    /// `self + γ scale` (Euler's constant γ), a Gumbel mean from its
    /// location and scale, with broadcasting: computed in f64 and rounded
    /// once.
    pub(crate) fn gumbel_mean(self, scale: Var<'t, F>) -> Result<Self> {
        self.binary::<GumbelMeanK>(scale)
    }
    /// `self` where `mask` is nonzero and `other` elsewhere (all three
    /// broadcast together); the gradient reaches each only where it was
    /// chosen, and an infinite or NaN value that is not chosen reaches
    /// nothing.
    pub(crate) fn choose(self, mask: Tensor<F>, other: Var<'t, F>) -> Result<Self> {
        if !std::ptr::eq(self.tape, other.tape) {
            return Err(Error::ForeignTape { op: "choose" });
        }
        let mask = self.tape.constant(mask);
        self.tape.apply(Choose, &[mask, self, other])
    }
    /// `k ln λ - λ - ln Γ(k + 1)` of counts `k = self` and rates `λ`,
    /// elementwise with broadcasting, accurate for large counts.
    pub(crate) fn poisson_log_mass(self, rate: Var<'t, F>) -> Result<Self> {
        self.binary::<PoissonLogMassK>(rate)
    }
}

fn unwrap_op<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e} (use the try_ method to get a Result)"))
}

macro_rules! var_ops {
    ($Trait:ident, $method:ident, $try:ident, $scalar_rhs:expr, $scalar_lhs:expr) => {
        /// Panics on incompatible shapes; the `try_` method returns an error.
        impl<'t, F: Element> $Trait<Var<'t, F>> for Var<'t, F> {
            type Output = Var<'t, F>;
            fn $method(self, rhs: Var<'t, F>) -> Var<'t, F> {
                unwrap_op(self.$try(rhs))
            }
        }
        /// A tensor operand is a constant; panics on incompatible shapes.
        impl<'t, F: Element> $Trait<Tensor<F>> for Var<'t, F> {
            type Output = Var<'t, F>;
            fn $method(self, rhs: Tensor<F>) -> Var<'t, F> {
                let rhs = self.tape.constant(rhs);
                unwrap_op(self.$try(rhs))
            }
        }
        impl<'t, F: Element> $Trait<F> for Var<'t, F> {
            type Output = Var<'t, F>;
            fn $method(self, rhs: F) -> Var<'t, F> {
                let f: fn(Var<'t, F>, F) -> Var<'t, F> = $scalar_rhs;
                f(self, rhs)
            }
        }
        impl<'t> $Trait<Var<'t, f64>> for f64 {
            type Output = Var<'t, f64>;
            fn $method(self, rhs: Var<'t, f64>) -> Var<'t, f64> {
                let f: fn(f64, Var<'t, f64>) -> Var<'t, f64> = $scalar_lhs;
                f(self, rhs)
            }
        }
        impl<'t> $Trait<Var<'t, f32>> for f32 {
            type Output = Var<'t, f32>;
            fn $method(self, rhs: Var<'t, f32>) -> Var<'t, f32> {
                let f: fn(f32, Var<'t, f32>) -> Var<'t, f32> = $scalar_lhs;
                f(self, rhs)
            }
        }
    };
}

var_ops!(Add, add, try_add, |v, c| v.add_scalar(c), |c, v| v
    .add_scalar(c));
var_ops!(Sub, sub, try_sub, |v, c| v.add_scalar(-c), |c, v| v
    .negate()
    .add_scalar(c));
var_ops!(Mul, mul, try_mul, |v, c| v.mul_scalar(c), |c, v| v
    .mul_scalar(c));
var_ops!(Div, div, try_div, |v, c| v.mul_scalar(c.recip()), |c, v| v
    .scalar_div(c));

impl<'t, F: Element> Neg for Var<'t, F> {
    type Output = Var<'t, F>;
    fn neg(self) -> Var<'t, F> {
        self.negate()
    }
}

/// An input read at the positions of a broadcast output: a one-element
/// tensor is read with stride 0, a same-shaped one directly, anything else
/// is materialized once.
pub(crate) struct Operand<'a, F: Element> {
    data: Cow<'a, Tensor<F>>,
    scalar: bool,
}

impl<F: Element> Operand<'_, F> {
    /// A `Copy` view to keep in a local inside hot loops: its fields are then
    /// loop invariants, which lets the compiler unswitch and vectorize.
    pub(crate) fn view(&self) -> View<'_, F> {
        View {
            data: self.data.data(),
            scalar: self.scalar,
        }
    }
}

/// `f(x, v)` for every element `x` of `big`: vectorized, on two threads
/// when large. A closure `f` that captures values should own them
/// (`move`): one that borrows them has them loaded again at every element
/// (the loop's stores might change them, for all the compiler knows),
/// which keeps the loop scalar.
pub(crate) fn with_value<F: Element>(
    big: &Tensor<F>,
    v: F,
    f: impl Fn(F, F) -> F + Sync,
) -> Tensor<F> {
    let x = big.data();
    // SAFETY: the loop writes every element of each chunk.
    let out = unsafe {
        par_new(
            x.len(),
            #[inline(always)]
            |start, chunk| {
                let x = &x[start..start + chunk.len()];
                for (o, &x) in chunk.iter_mut().zip(x) {
                    o.write(f(x, v));
                }
            },
        )
    };
    Tensor::new_unchecked(out, big.shape().to_vec())
}

/// The length of the runs of `big`'s elements that share one element of
/// `small`, when `small` is `big`'s shape with its trailing axes set to 1
/// (a column `[n, 1]` against `[n, m]`: runs of `m`), with runs longer
/// than one and more than one of them.
fn leading_broadcast(big: &[usize], small: &[usize]) -> Option<usize> {
    let lead = big.len().checked_sub(small.len())?;
    // small's axes aligned with big's trailing ones: big's own, then ones
    let kept = small.iter().rposition(|&d| d != 1).map_or(0, |p| p + 1);
    let aligned = &big[lead..];
    let run: usize = aligned[kept..].iter().product();
    let leading_ones = big[..lead].iter().all(|&d| d == 1);
    (leading_ones
        && small[..kept] == aligned[..kept]
        && run > 1
        && small.iter().product::<usize>() > 1)
        .then_some(run)
}

/// Writes every `out[i] = f(i, a_i, b_i)`, with the single-value and
/// per-position cases of `a` and `b` split outside the loop, so that each
/// loop is a plain vectorizable zip.
#[inline(always)]
fn zip2<F: Element>(
    out: &mut [MaybeUninit<F>],
    a: View<'_, F>,
    b: View<'_, F>,
    f: impl Fn(usize, F, F) -> F,
) {
    let n = out.len();
    match (a.scalar, b.scalar) {
        (false, false) => {
            let (a, b) = (&a.data[..n], &b.data[..n]);
            for i in 0..n {
                out[i].write(f(i, a[i], b[i]));
            }
        }
        (true, false) => {
            let (a, b) = (a.data[0], &b.data[..n]);
            for i in 0..n {
                out[i].write(f(i, a, b[i]));
            }
        }
        (false, true) => {
            let (a, b) = (&a.data[..n], b.data[0]);
            for i in 0..n {
                out[i].write(f(i, a[i], b));
            }
        }
        (true, true) => {
            let (a, b) = (a.data[0], b.data[0]);
            for (i, o) in out.iter_mut().enumerate() {
                o.write(f(i, a, b));
            }
        }
    }
}

/// See [`Operand::view`].
#[derive(Clone, Copy)]
pub(crate) struct View<'a, F: Sync> {
    data: &'a [F],
    scalar: bool,
}

impl<'a, F: Element> View<'a, F> {
    /// A value per position, read from `data`.
    pub(crate) fn each(data: &'a [F]) -> Self {
        View {
            data,
            scalar: false,
        }
    }

    /// The view from output position `start` on (a single value stays
    /// itself).
    #[inline(always)]
    pub(crate) fn skip(self, start: usize) -> Self {
        if self.scalar {
            self
        } else {
            View::each(&self.data[start..])
        }
    }

    /// The data and the step between output positions (0 for a single
    /// value), for loops that index rather than branch.
    pub(crate) fn strided(self) -> (&'a [F], usize) {
        (self.data, usize::from(!self.scalar))
    }

    /// The element at output position `i`.
    #[inline(always)]
    pub(crate) fn at(self, i: usize) -> F {
        if self.scalar {
            self.data[0]
        } else {
            self.data[i]
        }
    }
}

/// An operand of an elementwise kernel as its loop reads it: one value
/// for every position ([`Same`]) or a value per position ([`Each`]). A
/// kernel generic over its operands' kinds compiles a loop for each
/// combination, so that every loop is a plain vectorizable zip (a branch on
/// the kind at each element kept the loops scalar, several times slower).
pub(crate) trait Lane<F>: Copy + Send + Sync {
    fn at(self, i: usize) -> F;
    /// The operand at positions `start..start + len` (a loop over exactly
    /// `len` positions then reads it without bounds checks).
    fn window(self, start: usize, len: usize) -> Self;
}

/// One value for every position.
#[derive(Clone, Copy)]
pub(crate) struct Same<F>(pub F);

/// A value per position.
#[derive(Clone, Copy)]
pub(crate) struct Each<'a, F>(pub &'a [F]);

impl<F: Element> Lane<F> for Same<F> {
    #[inline(always)]
    fn at(self, _: usize) -> F {
        self.0
    }
    #[inline(always)]
    fn window(self, _: usize, _: usize) -> Self {
        self
    }
}

impl<F: Element> Lane<F> for Each<'_, F> {
    #[inline(always)]
    fn at(self, i: usize) -> F {
        self.0[i]
    }
    #[inline(always)]
    fn window(self, start: usize, len: usize) -> Self {
        Each(&self.0[start..start + len])
    }
}

/// `k(a_i, b_i, c_i, d_i)` at each of `n` positions for the views of four
/// operands broadcast to them, on every thread ([`fill4`] a chunk at a
/// time).
pub(crate) fn map4<F: Element>(
    k: impl Fn(F, F, F, F) -> F + Sync,
    v: [View<'_, F>; 4],
    n: usize,
) -> Storage<F> {
    // SAFETY: `fill4` writes every element of each chunk.
    unsafe {
        par_new(
            n,
            #[inline(always)]
            |start, chunk| fill4(&k, v.map(|v| v.skip(start)), chunk),
        )
    }
}

/// `k(a_i, b_i, c_i, d_i)` into every element of `out` for the views of
/// four operands from its first position on, with one loop per
/// combination of the operands' kinds ([`Lane`]). A kernel of fewer
/// operands repeats one and ignores it.
#[inline(always)]
pub(crate) fn fill4<F: Element>(
    k: &impl Fn(F, F, F, F) -> F,
    v: [View<'_, F>; 4],
    out: &mut [MaybeUninit<F>],
) {
    #[inline(always)]
    fn run<F: Element>(
        k: &impl Fn(F, F, F, F) -> F,
        (a, b, c, d): (impl Lane<F>, impl Lane<F>, impl Lane<F>, impl Lane<F>),
        out: &mut [MaybeUninit<F>],
    ) {
        let n = out.len();
        let (a, b, c, d) = (
            a.window(0, n),
            b.window(0, n),
            c.window(0, n),
            d.window(0, n),
        );
        for (i, o) in out.iter_mut().enumerate() {
            o.write(k(a.at(i), b.at(i), c.at(i), d.at(i)));
        }
    }
    // `$body` with `$l` bound to the view's lane of either kind
    macro_rules! by_kind {
        ($v:expr, |$l:ident| $body:expr) => {
            match $v.scalar {
                true => {
                    let $l = Same($v.data[0]);
                    $body
                }
                false => {
                    let $l = Each($v.data);
                    $body
                }
            }
        };
    }
    let [a, b, c, d] = v;
    by_kind!(a, |a| by_kind!(b, |b| by_kind!(c, |c| by_kind!(d, |d| {
        run(k, (a, b, c, d), out)
    }))))
}

/// The shape the inputs broadcast to together (an error naming `op` and
/// the first pair that does not broadcast).
fn common_shape<F: Element>(op: &'static str, inputs: &[&Tensor<F>]) -> Result<Vec<usize>> {
    let mut shape = inputs
        .first()
        .map(|t| t.shape().to_vec())
        .unwrap_or_default();
    for t in inputs.iter().skip(1) {
        shape = crate::tensor::broadcast_shape(&shape, t.shape()).ok_or_else(|| {
            Error::ShapeMismatch {
                op,
                lhs: shape.clone(),
                rhs: t.shape().to_vec(),
            }
        })?;
    }
    Ok(shape)
}

/// The common shape of the inputs and each input as an [`Operand`].
pub(crate) fn broadcast_all<'a, F: Element>(
    op: &'static str,
    inputs: &[&'a Tensor<F>],
) -> Result<(Vec<usize>, Vec<Operand<'a, F>>)> {
    let shape = common_shape(op, inputs)?;
    let operands = broadcast_into(inputs, &shape)?;
    Ok((shape, operands))
}

/// Each input as an [`Operand`] of `shape` (an error where one does not
/// broadcast to it).
pub(crate) fn broadcast_into<'a, F: Element>(
    inputs: &[&'a Tensor<F>],
    shape: &[usize],
) -> Result<Vec<Operand<'a, F>>> {
    inputs
        .iter()
        .map(|t| {
            if t.len() == 1 {
                Ok(Operand {
                    data: Cow::Borrowed(*t),
                    scalar: true,
                })
            } else {
                Ok(Operand {
                    data: widen(t, shape)?,
                    scalar: false,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    /// A column of per-row values (and its kin: trailing axes of 1) against
    /// a full tensor takes the runs path, with the bits of the same values
    /// broadcast in full, in either order and for each binary op, forward
    /// and backward, on one thread and two.
    #[test]
    fn per_row_values_give_the_bits_of_full_ones() {
        let cases: [(&[usize], &[usize]); 9] = [
            // runs too short to be read in place, broadcast first
            (&[20011, 2], &[20011, 1]),
            // runs the forward reads in place and the backward does not
            (&[3001, 17], &[3001, 1]),
            // runs both read in place
            (&[3001, 41], &[3001, 1]),
            (&[3001, 70], &[3001, 1]),
            (&[5, 2, 64], &[5, 2, 1]),
            (&[5, 7], &[5, 1]),
            (&[2, 3, 4], &[2, 3, 1]),
            (&[2, 3, 4], &[2, 1, 1]),
            (&[1, 6, 5], &[6, 1]),
        ];
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (big, small) in cases {
            let x = Tensor::<f32>::from_fn(big, |i| 1.5 + ((i * 7) % 13) as f32 * 0.25);
            let r = Tensor::<f32>::from_fn(small, |i| 0.5 + (i % 11) as f32 * 0.75);
            let wide = r.broadcast_to(big).unwrap();
            type BinaryOp = for<'t> fn(Var<'t, f32>, Var<'t, f32>) -> Var<'t, f32>;
            let ops: [BinaryOp; 5] = [
                |a, b| a + b,
                |a, b| a - b,
                |a, b| a * b,
                |a, b| a / b,
                // (a kernel in lanes)
                |a, b| a.lbeta(b).unwrap(),
            ];
            for (k, op) in ops.iter().enumerate() {
                for swap in [false, true] {
                    let run = |r: &Tensor<f32>| {
                        let tape = Tape::new();
                        let (xv, rv) = (tape.var(x.clone()), tape.var(r.clone()));
                        let y = if swap { op(rv, xv) } else { op(xv, rv) };
                        let w = tape.constant(Tensor::from_fn(big, |i| (i % 5) as f32 - 2.0));
                        let g = (y * w).sum().backward().unwrap();
                        let (gx, gr) = (g.get(xv).unwrap(), g.get(rv).unwrap());
                        (
                            y.value(),
                            gx.clone(),
                            gr.clone().sum_to_owned(small).unwrap(),
                        )
                    };
                    let ((y, gx, gr), (y_full, gx_full, gr_full)) = (run(&r), run(&wide));
                    let what = format!("{big:?} {small:?} op {k} swap {swap}");
                    assert_eq!(y.shape(), big, "{what}");
                    assert!(bits(&y) == bits(&y_full), "{what}: values");
                    assert!(bits(&gx) == bits(&gx_full), "{what}: gradient of x");
                    assert!(
                        bits(&gr) == bits(&gr_full),
                        "{what}: gradient of the values"
                    );
                }
            }
        }
    }

    /// `x.affine(scale, shift)` passes the finite-difference check with
    /// each operand broadcast against the others (a column, a row, a single
    /// value), and gives the bits of `x * scale + shift`, values and
    /// gradients, in both element types, on one thread and two.
    #[test]
    fn affine_is_the_product_and_sum_in_one_op() {
        let shapes: [[&[usize]; 3]; 4] = [
            [&[3, 4], &[4], &[3, 1]],
            [&[4], &[3, 1], &[]],
            [&[2, 3], &[], &[2, 3]],
            // (above PARALLEL_MIN: on both threads)
            [&[40001, 3], &[], &[]],
        ];
        for [xs, ss, hs] in shapes {
            let make = |shape: &[usize], k: usize| {
                Tensor::<f64>::from_fn(shape, |i| 0.3 + ((i * 7 + k) % 11) as f64 * 0.17)
            };
            let inputs = [make(xs, 0), make(ss, 1), make(hs, 2)];
            if xs[0] < 10 {
                let report = crate::autodiff::gradcheck::gradcheck(
                    |_, v| v[0].affine(v[1], v[2]),
                    &inputs,
                    &crate::autodiff::gradcheck::GradCheck::default(),
                );
                assert!(report.is_ok(), "{xs:?} {ss:?} {hs:?}: {report:?}");
            }
            fn same_bits<F: Element>(inputs: &[Tensor<F>; 3], what: &str) {
                let run = |fused: bool| {
                    let tape = Tape::new();
                    let v = inputs.clone().map(|t| tape.var(t));
                    let y = if fused {
                        v[0].affine(v[1], v[2]).unwrap()
                    } else {
                        v[0] * v[1] + v[2]
                    };
                    let w = tape.constant(Tensor::from_fn(&y.shape(), |i| {
                        F::lit((i % 5) as f64 - 2.0)
                    }));
                    let g = (y * w).sum().backward().unwrap();
                    let mut out = vec![y.value()];
                    out.extend(v.iter().map(|v| g.get(*v).unwrap().clone()));
                    out.iter()
                        .map(|t| {
                            let bits = t.data().iter().map(|x| x.to_f64().unwrap().to_bits());
                            (t.shape().to_vec(), bits.collect::<Vec<_>>())
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(run(true), run(false), "{what}");
            }
            let what = format!("{xs:?} {ss:?} {hs:?}");
            same_bits(&inputs, &what);
            let narrow =
                |t: &Tensor<f64>| Tensor::<f32>::from_fn(t.shape(), |i| t.data()[i] as f32);
            same_bits(&inputs.each_ref().map(narrow), &what);
        }
    }

    /// The quotient's gradients where `1 / b` or `y / b` overflows and the
    /// gradients do not, in both orders of the divisor's cases: `g / b`
    /// normal, and `g / b` beyond the range with `g y` in it.
    #[test]
    fn division_gradients_where_a_reciprocal_overflows() {
        // (a, b, the gradient reaching a / b, d/da, d/db), d/db = -g a / b²
        let cases = [
            (1e-10, 1e-300, 1e-300, 1.0, -1e290),
            (1e-280, 1e-10, 1e300, f64::INFINITY, -1e40),
            (1e20, 1e-300, 1e-10, 1e290, f64::NEG_INFINITY),
            (2.0, 5e-324, 0.0, 0.0, 0.0),
        ];
        for (a, b, g, da, db) in cases {
            let tape = Tape::<f64>::new();
            let (av, bv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
            let y = (av / bv) * g;
            let grads = y.backward().unwrap();
            let (ga, gb) = (
                grads.get(av).unwrap().item().unwrap(),
                grads.get(bv).unwrap().item().unwrap(),
            );
            let close =
                |got: f64, want: f64| got == want || (got - want).abs() <= 1e-15 * want.abs();
            assert!(
                close(ga, da) && close(gb, db),
                "a {a:e} b {b:e} g {g:e}: {ga:e} {gb:e}"
            );
        }
    }

    /// A zero gradient reaching a special function passes on zero where its
    /// derivative overflows: `(x - c) ψ(x)` at `x = c = 1e-300` has the
    /// derivative `ψ(x) + (x - c) ψ'(x) = ψ(x)`, with ψ'(x) = 1e600 beyond
    /// the range; likewise through `digamma_diff`'s derivative.
    #[test]
    fn a_zero_factor_before_an_overflowing_derivative_gives_zero() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::scalar(1e-300));
        let zero = x - 1e-300;
        let y = zero * x.digamma() + zero * x.digamma_diff(tape.scalar(1e-300)).unwrap();
        let g = y.backward().unwrap().get(x).unwrap().item().unwrap();
        let want = x.digamma().item().unwrap()
            + x.digamma_diff(tape.scalar(1e-300)).unwrap().item().unwrap();
        assert!(
            g.is_finite() && (g - want).abs() <= 1e-15 * want.abs(),
            "{g:e} vs {want:e}"
        );
    }

    /// `choose` takes each element from its side, broadcasts a mask over
    /// rows, passes each side the gradient only where it was chosen
    /// (gradcheck), and keeps an infinite value that is not chosen out of
    /// both the value and the gradients.
    #[test]
    fn choose_picks_by_mask_and_routes_gradients() {
        let mask = Tensor::vector(&[1.0, 0.0, 1.0]);
        let a = Tensor::from_rows(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).unwrap();
        let b = Tensor::vector(&[-1.0, -2.0, -3.0]);
        let tape = Tape::<f64>::new();
        let y = tape
            .var(a.clone())
            .choose(mask.clone(), tape.var(b.clone()))
            .unwrap();
        assert_eq!(y.value().data(), &[1.0, -2.0, 3.0, 4.0, -2.0, 6.0]);
        let w = Tensor::from_rows(&[[0.5, 1.5, -1.0], [2.0, 0.25, 3.0]]).unwrap();
        gradcheck(
            |t, v| Ok((v[0].choose(mask.clone(), v[1])? * t.constant(w.clone())).sum()),
            &[a.clone(), b],
            &GradCheck::default(),
        )
        .unwrap();
        let x = tape.var(Tensor::vector(&[f64::INFINITY, 2.0]));
        let z = tape.var(Tensor::vector(&[5.0, f64::NAN]));
        let y = (x * 3.0)
            .choose(Tensor::vector(&[0.0, 1.0]), z * 2.0)
            .unwrap();
        assert_eq!(y.value().data(), &[10.0, 6.0]);
        let g = y.sum().backward().unwrap();
        assert_eq!(g.get(x).unwrap().data(), &[0.0, 3.0]);
        assert_eq!(g.get(z).unwrap().data(), &[2.0, 0.0]);
        // a full mask with a single value on one side (the fast path), its
        // gradient summed over the elements that chose it
        let full = Tensor::from_rows(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).unwrap();
        let (av, s) = (tape.var(a.clone()), tape.var(Tensor::scalar(-7.0)));
        let y = av.choose(full.clone(), s).unwrap();
        assert_eq!(y.value().data(), &[1.0, -7.0, -7.0, -7.0, 5.0, -7.0]);
        let g = (y * w.clone()).sum().backward().unwrap();
        assert_eq!(g.get(av).unwrap().data(), &[0.5, 0.0, 0.0, 0.0, 0.25, 0.0]);
        assert_eq!(g.get(s).unwrap().item().unwrap(), 1.5 - 1.0 + 2.0 + 3.0);
    }

    #[test]
    fn scalar_operands_in_either_order() {
        // f(x) = (2 - x) * 3 / x + x / 4 at x = 2: value 0 + 0.5; f' = -6/x^2 + 1/4 = -1.25
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::scalar(2.0));
        let y = (2.0 - x) * 3.0 / x + x / 4.0;
        assert!((y.item().unwrap() - 0.5).abs() < 1e-15);
        let g = y.backward().unwrap();
        assert!((g.get(x).unwrap().data()[0] + 1.25).abs() < 1e-15);
    }

    #[test]
    fn row_broadcasts_match_explicit_broadcasting_on_both_thread_paths() {
        // a bias-like operand or a single value on either side of every op, small and large
        // (the large one is split over two threads mid-row), values and gradients
        for (big, small) in [
            (vec![3, 2, 5], vec![5]),
            (vec![4, 2, 5], vec![1, 2, 5]),
            (vec![701, 7, 11], vec![7, 11]),
            // rows shorter than their repetition in the loops, whose count
            // the output's length is not a multiple of
            (vec![20011, 3], vec![3]),
            (vec![1001, 70], vec![70]),
            // a single value
            (vec![3, 2, 5], vec![]),
            (vec![701, 7, 11], vec![1, 1]),
        ] {
            let x = Tensor::from_fn(&big, |i| 1.0 + ((i * 37) % 101) as f64 / 50.0);
            let r = Tensor::from_fn(&small, |i| 0.5 + i as f64 / 7.0);
            // (each case's `small` is a trailing part of `big`)
            let wide = Tensor::from_fn(&big, |i| r.data()[i % r.len()]);
            assert_eq!(r.broadcast_to(&big).unwrap(), wide, "{big:?} {small:?}");
            fn apply<'t>(op: usize, a: Var<'t, f64>, b: Var<'t, f64>) -> Var<'t, f64> {
                match op {
                    0 => a + b,
                    1 => a - b,
                    2 => a * b,
                    3 => a / b,
                    _ => a.lbeta(b).unwrap(),
                }
            }
            for op in 0..5 {
                for small_first in [false, true] {
                    let tape = Tape::<f64>::new();
                    let (xv, rv, wv) = (
                        tape.var(x.clone()),
                        tape.var(r.clone()),
                        tape.var(wide.clone()),
                    );
                    let (fast, slow) = if small_first {
                        (apply(op, rv, xv), apply(op, wv, xv))
                    } else {
                        (apply(op, xv, rv), apply(op, xv, wv))
                    };
                    assert_eq!(fast.value(), slow.value(), "op {op} {big:?} {small_first}");
                    let weights = tape.constant(Tensor::from_fn(&big, |i| (i % 13) as f64));
                    let gf = (fast * weights).sum().backward().unwrap();
                    let gs = (slow * weights).sum().backward().unwrap();
                    assert_eq!(gf.get(xv), gs.get(xv));
                    let summed = gs.get(wv).unwrap().sum_to(&small).unwrap();
                    let got = gf.get(rv).unwrap();
                    for (a, b) in got.data().iter().zip(summed.data()) {
                        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
                    }
                }
            }
        }
    }

    /// Two operands that are both repeated (a column against a row, a row
    /// against a value per run): both read in place where they share a
    /// period, the second broadcast where not, with the bits of both
    /// broadcast in full, forward and backward, in either order, on one
    /// thread and two.
    #[test]
    fn two_repeated_operands_give_the_bits_of_full_ones() {
        let cases: [(&[usize], &[usize]); 6] = [
            // runs shorter than the row: a segment of the row's period would
            // cross them
            (&[3, 4, 1], &[4, 5]),
            (&[400, 4, 1], &[4, 40]),
            (&[3001, 1], &[70]),
            (&[300, 1], &[1, 3]),
            (&[2, 1, 1], &[3, 40]),
            (&[3, 1, 5], &[4, 1]),
        ];
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        type BinaryOp = for<'t> fn(Var<'t, f32>, Var<'t, f32>) -> Var<'t, f32>;
        let ops: [BinaryOp; 3] = [|a, b| a - b, |a, b| a / b, |a, b| a.lbeta(b).unwrap()];
        for (p, q) in cases {
            let x = Tensor::<f32>::from_fn(p, |i| 1.5 + ((i * 7) % 13) as f32 * 0.25);
            let r = Tensor::<f32>::from_fn(q, |i| 0.5 + (i % 11) as f32 * 0.75);
            let shape = crate::tensor::broadcast_shape(p, q).unwrap();
            let (x_full, r_full) = (
                x.broadcast_to(&shape).unwrap(),
                r.broadcast_to(&shape).unwrap(),
            );
            for (k, op) in ops.iter().enumerate() {
                for swap in [false, true] {
                    let run = |x: &Tensor<f32>, r: &Tensor<f32>| {
                        let tape = Tape::new();
                        let (xv, rv) = (tape.var(x.clone()), tape.var(r.clone()));
                        let y = if swap { op(rv, xv) } else { op(xv, rv) };
                        let w = tape.constant(Tensor::from_fn(&shape, |i| (i % 5) as f32 - 2.0));
                        let g = (y * w).sum().backward().unwrap();
                        let summed = |v: Var<'_, f32>, to: &[usize]| {
                            g.get(v).unwrap().clone().sum_to_owned(to).unwrap()
                        };
                        (y.value(), summed(xv, p), summed(rv, q))
                    };
                    let (fast, full) = (run(&x, &r), run(&x_full, &r_full));
                    let what = format!("{p:?} {q:?} op {k} swap {swap}");
                    assert_eq!(fast.0.shape(), &shape[..], "{what}");
                    assert!(bits(&fast.0) == bits(&full.0), "{what}: values");
                    assert!(bits(&fast.1) == bits(&full.1), "{what}: gradient of x");
                    assert!(bits(&fast.2) == bits(&full.2), "{what}: gradient of r");
                }
            }
        }
    }

    #[test]
    fn broadcast_gradient_is_summed_back() {
        // y = sum(a + b) with a: [2,3], b: [3] -> db = [2,2,2]
        let tape = Tape::<f64>::new();
        let a = tape.var(Tensor::zeros(&[2, 3]));
        let b = tape.var(Tensor::zeros(&[3]));
        let g = (a + b).sum().backward().unwrap();
        assert_eq!(g.get(b).unwrap().data(), &[2.0, 2.0, 2.0]);
        assert!(a.try_add(tape.var(Tensor::zeros(&[2]))).is_err());
    }
}
