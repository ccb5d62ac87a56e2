//! Gamma, Beta and Dirichlet, with `rsample` by implicit reparameterization.
//!
//! A draw `x` of `Gamma(a, 1)` is a function of `a` at a fixed value of its
//! CDF `u = P(a, x)`; differentiating `P(a, x(a)) = u` gives
//! `dx/da = -(∂P/∂a) / p(x; a)` (Figurnov, Mohamed, Mnih 2018). The draw
//! itself comes from Marsaglia and Tsang's method (2000). For the Gamma,
//! `∂P/∂a` is carried through the same series (or continued fraction) that
//! evaluates the incomplete gamma function, in double precision and one
//! pass; it matches the 50-digit reference values to 4e-15. Beta draws are
//! `G1 / (G1 + G2)` and are differentiated through the Beta CDF, whose
//! derivatives in `a` and `b` are carried through the continued fraction
//! that evaluates it (on the tail its convergence favours), matching the
//! reference to 4e-15; Dirichlet draws are normalized Gamma draws
//! differentiated through each Gamma.
//!
//! The per-draw derivatives advance several draws at a time in vector
//! registers (the Gamma's 16 under AVX-512, otherwise 8; the same values on
//! every tier) on every thread, and run as long as the parameter needs: up
//! to `1e10`, past which `backward` is an error.
//! The draws take one `u64` from the caller's RNG and come from two
//! xoshiro256++ streams seeded from it, one for each half of the tensor, on
//! two threads, with Marsaglia and Tsang's normals drawn from a ziggurat: a
//! seed gives the same draws on any machine and thread count.

use super::pointwise::{self, LANES, Lanes, Pointwise, ln_each};
use super::widened::{InF64, in_f64_elementwise, rounded_once};
use super::{
    Distribution, Exponential, HALF_LN_2PI, batch_broadcast, check_divisor, check_positive,
    check_two, check_values, into_open_unit, on_support, open_unit, same_tape, sample_shape,
};
use crate::autodiff::ops::sigmoid;
use crate::autodiff::tape::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{join, par_blocks, par_fill_costly, sum_pairwise};
use crate::kernels::random::Xoshiro256;
use crate::kernels::special::{
    self, MAX_IMPLICIT_PARAMETER, Memo, beta_sample_grads, digamma_correction_lanes, digamma_lanes,
    gamma_sample_grads, gamma_sample_log_grads, lgamma_correction_lanes, lgamma_lanes,
};
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;
use std::mem::MaybeUninit;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The uniform and normal draws of the Gamma sampler, from one xoshiro256++
/// stream (no virtual call a draw).
struct Draws {
    bits: Xoshiro256,
    ziggurat: &'static Ziggurat,
    /// Marsaglia and Tsang's constants of recent `a`s (a Dirichlet's
    /// concentrations alternate).
    constants: Memo<(f64, f64), 8>,
}

/// The layers of the ziggurat for `N(0, 1)` (Marsaglia and Tsang 2000, in
/// Doornik's form, 2005, which draws the layer's index from bits the
/// uniform does not use): 128 layers of area `V` under `f(x) = e^(-x²/2)`,
/// the lowest one reaching to the tail at `R`.
struct Ziggurat {
    /// The layers' right edges: `x[0] = V / f(R)` (the base strip's width
    /// as a rectangle), `x[1] = R`, ..., `x[128] = 0`.
    x: [f64; 129],
    /// `x[i + 1] / x[i]`: below it a point of layer `i` lies inside the
    /// curve whatever its height.
    ratio: [f64; 128],
}

impl Ziggurat {
    const R: f64 = 3.442_619_855_899;
    const V: f64 = 9.912_563_035_262_17e-3;

    fn get() -> &'static Ziggurat {
        static TABLE: OnceLock<Ziggurat> = OnceLock::new();
        TABLE.get_or_init(|| {
            let mut x = [0.0; 129];
            let mut f = (-0.5 * Self::R * Self::R).exp();
            (x[0], x[1]) = (Self::V / f, Self::R);
            for i in 2..128 {
                x[i] = (-2.0 * (Self::V / x[i - 1] + f).ln()).sqrt();
                f = (-0.5 * x[i] * x[i]).exp();
            }
            Ziggurat {
                x,
                ratio: std::array::from_fn(|i| x[i + 1] / x[i]),
            }
        })
    }
}

impl Draws {
    fn new(seed: u64) -> Self {
        Draws {
            bits: Xoshiro256::new(seed),
            ziggurat: Ziggurat::get(),
            constants: Memo::new(marsaglia_tsang),
        }
    }
    /// Uniform in the open interval (0, 1), 53 bits.
    #[inline(always)]
    fn uniform(&mut self) -> f64 {
        open_unit(self.bits.next_u64())
    }
    /// `|z|` conditioned on `|z| > R`, by Marsaglia's method: `R - ln(U1)/R`
    /// accepted when `-2 ln U2 >= (ln(U1)/R)²`.
    fn normal_tail(&mut self) -> f64 {
        loop {
            let x = self.uniform().ln() / Ziggurat::R;
            let y = self.uniform().ln();
            if -2.0 * y >= x * x {
                return Ziggurat::R - x;
            }
        }
    }
    /// `N(0, 1)` from the ziggurat: one 64-bit draw gives a uniform `u` in
    /// (-1, 1) from its high 53 bits and the layer `i` from its low 7; most
    /// draws end at the first comparison.
    #[inline(always)]
    fn normal(&mut self) -> f64 {
        let z = self.ziggurat;
        loop {
            let bits = self.bits.next_u64();
            let u = 2.0 * open_unit(bits) - 1.0;
            let i = (bits & 0x7f) as usize;
            if u.abs() < z.ratio[i] {
                return u * z.x[i];
            }
            if i == 0 {
                let t = self.normal_tail();
                return if u < 0.0 { -t } else { t };
            }
            // the part of layer i outside the rectangle under the next one
            let x = u * z.x[i];
            let f0 = (-0.5 * (z.x[i] * z.x[i] - x * x)).exp();
            let f1 = (-0.5 * (z.x[i + 1] * z.x[i + 1] - x * x)).exp();
            if f1 + self.uniform() * (f0 - f1) < 1.0 {
                return x;
            }
        }
    }
}

/// Marsaglia and Tsang's `d = a - 1/3` and `c = 1/√(9d)`.
fn marsaglia_tsang(a: f64) -> (f64, f64) {
    let d = a - 1.0 / 3.0;
    (d, 1.0 / (9.0 * d).sqrt())
}

/// A `Gamma(a, 1)` draw by Marsaglia and Tsang's method (with its squeeze,
/// which skips the logarithm for most draws); for `a < 1`,
/// `Gamma(a + 1) · U^(1/a)`, at least the smallest normal number (so that
/// tiny `a` gives a tiny positive draw rather than 0).
///
/// Inlined into the caller's loop. The operations, and so the draws, are
/// the same whatever instruction set the loop is compiled for
/// (`every_tier_draws_the_same_gammas`). [`gamma_draws`] does not force
/// its loop into the wider sets: the loop is scalar, and compiled for AVX2
/// (under `vectorized`) 10⁵ draws of Gamma(2.5) took the same time on AMD
/// EPYC (1.00–1.01 of it).
#[inline(always)]
fn std_gamma_with(a: f64, draws: &mut Draws) -> f64 {
    if a < 1.0 {
        let g = marsaglia_tsang_draw(a + 1.0, draws);
        let x = g * (draws.uniform().ln() / a).exp();
        return x.max(f64::MIN_POSITIVE);
    }
    marsaglia_tsang_draw(a, draws)
}

/// The logarithm of a `Gamma(a, 1)` draw, from the same random numbers as
/// [`std_gamma_with`] but without its floor: for `a < 1`,
/// `ln Gamma(a + 1) + ln(U) / a`, which goes down to about `-37 / a`, where
/// the draw itself underflows for `a` below about 0.05 (to 0 in every draw
/// of `a = 10⁻⁵` but about one in a hundred).
#[inline(always)]
fn ln_std_gamma_with(a: f64, draws: &mut Draws) -> f64 {
    if a < 1.0 {
        let g = marsaglia_tsang_draw(a + 1.0, draws);
        return g.ln() + draws.uniform().ln() / a;
    }
    marsaglia_tsang_draw(a, draws).ln()
}

/// Below this concentration the Beta and Dirichlet draws are normalized
/// from the Gamma draws' logarithms ([`ln_std_gamma_with`]): a Gamma draw
/// of `a >= 0.1` is at least `Gamma(1.1)`'s draw times `U^10 >= 2^-530`, so
/// it does not underflow but with a probability below 10⁻¹⁴⁰, and the
/// draws' ratios are exact; below, the floored draws of a row could all sit
/// at the smallest normal number, where their ratios say nothing (a
/// `Beta(10⁻³, 10⁻³)` draw was exactly 0.5 one time in four).
const LOG_SPACE_BELOW: f64 = 0.1;

/// The error of a Beta or Dirichlet draw whose Gamma draws all fell below
/// the range of their logarithms (`ln(U) / a` past the largest float, for
/// concentrations below about 10⁻³⁰⁷), with those concentrations: the
/// draw's coordinates cannot be told apart.
fn beyond_logarithms<F: Element>(distribution: &'static str, concentrations: &[F]) -> Error {
    let c: Vec<f64> = concentrations
        .iter()
        .map(|c| c.to_f64().unwrap_or(f64::NAN))
        .collect();
    Error::invalid(
        "rsample",
        format!(
            "{distribution} concentrations {c:?}: their Gamma draws' logarithms all fall below \
             -f64::MAX, so the draw cannot be normalized"
        ),
    )
}

/// A `Gamma(a, 1)` draw for `a >= 1` by Marsaglia and Tsang's method.
#[inline(always)]
fn marsaglia_tsang_draw(a: f64, draws: &mut Draws) -> f64 {
    let (d, c) = draws.constants.at(a);
    loop {
        let z = draws.normal();
        let v = 1.0 + c * z;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = draws.uniform();
        let z2 = z * z;
        if u < 1.0 - 0.0331 * z2 * z2 || u.ln() < 0.5 * z2 + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// `len` values `draw(i, draws)`, seeded from one `next_u64` of `rng`: the
/// first and second halves each come from their own stream, and run on two
/// threads for long tensors. The values depend on the seed alone, not on
/// the thread count.
fn gamma_draws<F: Element>(
    len: usize,
    rng: &mut dyn Rng,
    draw: impl Fn(usize, &mut Draws) -> F + Sync,
) -> Vec<F> {
    let seed = rng.next_u64();
    let mut out = Vec::with_capacity(len);
    let (first, second) = out.spare_capacity_mut()[..len].split_at_mut(len / 2);
    let fill = |part: &mut [MaybeUninit<F>], start: usize, seed: u64| {
        let mut draws = Draws::new(seed);
        for (i, o) in part.iter_mut().enumerate() {
            o.write(draw(start + i, &mut draws));
        }
    };
    // the second half's stream, as `NormalStream` marks its second part
    // (`Xoshiro256::new` mixes the seed through PCG32)
    let other = seed ^ 0x9e37_79b9_7f4a_7c15;
    let start = first.len();
    if len >= 1024 {
        join(|| fill(first, 0, seed), || fill(second, start, other));
    } else {
        fill(first, 0, seed);
        fill(second, start, other);
    }
    // SAFETY: the two halves cover the `len` elements, and `fill` wrote
    // every element of each (a panic in `draw` drops `out` unread).
    unsafe { out.set_len(len) };
    out
}

/// `grad(parameters, x, out)`: the derivatives of the draws `x` in each of
/// the `P` parameters (one slice of each, a value per draw), into `out`.
type ImplicitGrad<const P: usize> = fn([&[f64]; P], &[f64], &mut [[f64; P]]);

/// Draws `x` as a tape node whose inputs are the `P` parameters (each
/// broadcast to the draws' shape) and whose gradient is the implicit one,
/// computed by `grad` on parts of the draws on every thread.
struct ImplicitSample<F, const P: usize> {
    name: &'static str,
    x: Tensor<F>,
    grad: ImplicitGrad<P>,
    /// The draws in `f64` where the derivatives are taken, when `x` has
    /// lost what they depend on: an `f32` Beta draw within 2^-24 of 1
    /// keeps that much of its distance to 1, and the derivative there
    /// belonged to another draw (up to hundreds of times the true one).
    at: Option<Vec<f64>>,
}

impl<F: Element, const P: usize> Op<F> for ImplicitSample<F, P> {
    fn name(&self) -> &str {
        self.name
    }
    fn forward(&self, _: &[&Tensor<F>]) -> Result<Tensor<F>> {
        Ok(self.x.clone())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let to_f64 = |v: F| v.to_f64().unwrap_or(f64::NAN);
        let (x, n, g) = (self.x.data(), self.x.len(), g.data());
        let number = |v: F| !to_f64(v).is_nan();
        // (not zero-filled: every element is written below)
        let mut grads: [Vec<F>; P] = std::array::from_fn(|_| Vec::with_capacity(n));
        // the first draw whose derivative did not converge (a parameter
        // past the series' reach): NaN at a draw whose inputs are numbers
        let failed = AtomicUsize::new(usize::MAX);
        // each part on its own thread, a block of draws at a time: their
        // derivatives (in f64) stay in the first-level cache on their way
        // into the gradients
        let spare = grads.each_mut().map(|v| &mut v.spare_capacity_mut()[..n]);
        par_fill_costly(spare, |start, mut part| {
            const BLOCK: usize = 1024;
            let mut per_draw = [[0.0; P]; BLOCK];
            let len = part.first().map_or(0, |p| p.len());
            for block in (0..len).step_by(BLOCK) {
                let local = block..(block + BLOCK).min(len);
                let draws = start + local.start..start + local.end;
                let per_draw = &mut per_draw[..local.len()];
                // the draws converted (in f32; f64 reads them in place)
                let params: [_; P] =
                    std::array::from_fn(|p| F::as_f64s(&inputs[p].data()[draws.clone()]));
                let at = match &self.at {
                    Some(at) => std::borrow::Cow::Borrowed(&at[draws.clone()]),
                    None => F::as_f64s(&x[draws.clone()]),
                };
                (self.grad)(std::array::from_fn(|p| &params[p][..]), &at, per_draw);
                for (p, part) in part.iter_mut().enumerate() {
                    let (part, g) = (&mut part[local.clone()], &g[draws.clone()]);
                    for ((d, per_draw), &g) in part.iter_mut().zip(&*per_draw).zip(g) {
                        d.write(F::lit(per_draw[p]) * g);
                    }
                }
                // (one branch-free pass: NaN is rare)
                if per_draw.iter().flatten().fold(false, |n, d| n | d.is_nan()) {
                    let first = per_draw.iter().zip(draws).find(|&(d, i)| {
                        d.iter().any(|d| d.is_nan())
                            && number(x[i])
                            && inputs.iter().all(|p| number(p.data()[i]))
                    });
                    if let Some((_, i)) = first {
                        failed.fetch_min(i, Ordering::Relaxed);
                    }
                }
            }
        });
        let i = failed.into_inner();
        if i < n {
            let params: Vec<f64> = inputs.iter().map(|p| to_f64(p.data()[i])).collect();
            return Err(Error::invalid(
                self.name,
                format!(
                    "the implicit derivative of the draw {} with parameters {params:?} did not \
                     converge; parameters up to {MAX_IMPLICIT_PARAMETER:e} are supported",
                    crate::error::Number(to_f64(x[i]))
                ),
            ));
        }
        for d in &mut grads {
            // SAFETY: `par_fill_costly` hands every one of the `n` elements
            // of each gradient to one block, which writes each of them (a
            // panic drops the vectors unread, at length 0).
            unsafe { d.set_len(n) };
        }
        let shape = self.x.shape();
        grads
            .into_iter()
            .map(|d| Ok(Some(Tensor::from_vec(d, shape)?)))
            .collect()
    }
}

/// `x = g / Σ g` along the last axis, the Dirichlet draw from its Gamma
/// draws, as one op: its backward is `∂L/∂g_k = (∂L/∂x_k - Σ_j ∂L/∂x_j x_j) / S`
/// for the row's sum `S`, one pass per row instead of a reduction, a
/// broadcast division and their two backward passes.
struct NormalizeRows;

impl<F: Element> Op<F> for NormalizeRows {
    fn name(&self) -> &str {
        "dirichlet_normalize"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let g = inputs[0];
        let k = g.shape().last().copied().unwrap_or(1).max(1);
        let mut x = g.data().to_vec();
        let rows = x.len() / k;
        // rows on both threads (each row computed alike)
        par_blocks(&mut x[..], rows, rows * k, |_, part: &mut [F]| {
            for_rows(part, k, |_, row| {
                let total = sum_pairwise(row);
                row.iter_mut().for_each(|v| *v = *v / total);
            })
        });
        Tensor::from_vec(x, g.shape())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let k = output.shape().last().copied().unwrap_or(1).max(1);
        let (draws, x) = (inputs[0].data(), output.data());
        let mut out = g.data().to_vec();
        let rows = out.len() / k;
        par_blocks(&mut out[..], rows, rows * k, |items, part: &mut [F]| {
            let span = items.start * k..items.end * k;
            let (draws, x) = (&draws[span.clone()], &x[span]);
            for_rows(part, k, |r, grad| {
                let at = r * k..(r + 1) * k;
                let total = sum_pairwise(&draws[at.clone()]);
                let dot = x[at]
                    .iter()
                    .zip(grad.iter())
                    .fold(F::zero(), |s, (&x, &d)| s + x * d);
                grad.iter_mut().for_each(|d| *d = (*d - dot) / total);
            })
        });
        Ok(vec![Some(Tensor::from_vec(out, output.shape())?)])
    }
}

/// `row_op(r, row)` on each row `r` of `k` values of `part` in turn (`k`
/// not 0); rows of two to four values are handed over as slices of a
/// length known at compile time, whose loops the compiler unrolls (a
/// Dirichlet over three categories spent most of its normalization in the
/// loops' overhead).
#[inline(always)]
fn for_rows<F>(part: &mut [F], k: usize, mut row_op: impl FnMut(usize, &mut [F])) {
    #[inline(always)]
    fn each<F, const K: usize>(part: &mut [F], row_op: &mut impl FnMut(usize, &mut [F])) {
        for (r, row) in part.chunks_exact_mut(K).enumerate() {
            row_op(r, &mut row[..K]);
        }
    }
    match k {
        2 => each::<F, 2>(part, &mut row_op),
        3 => each::<F, 3>(part, &mut row_op),
        4 => each::<F, 4>(part, &mut row_op),
        _ => {
            for (r, row) in part.chunks_mut(k).enumerate() {
                row_op(r, row);
            }
        }
    }
}

/// `x = e^l / Σ e^l` along the last axis of the logarithms `l` of a
/// Dirichlet's Gamma draws ([`ln_std_gamma_rsample`]), at least the
/// smallest normal number: the draw from concentrations that
/// [`LOG_SPACE_BELOW`] sends to log space. The values come from the
/// logarithms in `f64` that the op keeps (in `f32` the rounded ones would
/// move a draw by their error, up to `|l|` ulps); its backward is the
/// softmax's, `∂L/∂l_k = x_k (∂L/∂x_k - Σ_j ∂L/∂x_j x_j)`.
struct NormalizeLogs {
    logs: Vec<f64>,
}

impl<F: Element> Op<F> for NormalizeLogs {
    fn name(&self) -> &str {
        "dirichlet_normalize_logs"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let shape = inputs[0].shape();
        let k = shape.last().copied().unwrap_or(1).max(1);
        let floor = F::min_positive_value()
            .to_f64()
            .unwrap_or(f64::MIN_POSITIVE);
        let mut x = Vec::with_capacity(self.logs.len());
        for row in self.logs.chunks(k) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l));
            let total: f64 = row.iter().map(|&l| (l - m).exp()).sum();
            x.extend(
                row.iter()
                    .map(|&l| F::lit(((l - m).exp() / total).max(floor))),
            );
        }
        Tensor::from_vec(x, shape)
    }
    fn backward(
        &self,
        _: &[&Tensor<F>],
        output: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let k = output.shape().last().copied().unwrap_or(1).max(1);
        let mut out = g.data().to_vec();
        for (x, grad) in output.data().chunks(k).zip(out.chunks_mut(k)) {
            let dot = x
                .iter()
                .zip(grad.iter())
                .fold(F::zero(), |s, (&x, &d)| s + x * d);
            grad.iter_mut()
                .zip(x)
                .for_each(|(d, &x)| *d = x * (*d - dot));
        }
        Ok(vec![Some(Tensor::from_vec(out, output.shape())?)])
    }
}

/// `Gamma(a, 1)` draws `x` as a tape node with the implicit gradient in `a`.
fn std_gamma_node<F: Element>(x: Tensor<F>) -> ImplicitSample<F, 1> {
    ImplicitSample {
        name: "gamma_rsample",
        x,
        grad: |[a], x, out| gamma_sample_grads(a, x, out),
        at: None,
    }
}

/// `Beta(a, b)` draws `x` as a tape node with the implicit gradients, taken
/// at the draws `at` (in `f64`, where they are finer than `x`).
fn beta_node<F: Element>(x: Tensor<F>, at: Option<Vec<f64>>) -> ImplicitSample<F, 2> {
    ImplicitSample {
        name: "beta_rsample",
        x,
        grad: |[a, b], x, out| beta_sample_grads(a, b, x, out),
        at,
    }
}

/// `Gamma(a, 1)` draws of `shape` for `a` (broadcast to it), differentiable in `a`.
pub(crate) fn std_gamma_rsample<'t, F: Element>(
    a: Var<'t, F>,
    shape: &[usize],
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    let a = a.broadcast_to(shape)?;
    let av = a.value();
    // (the slice taken once: through the tensor, each draw's read took
    // three dependent loads)
    let data = av.data();
    let x = gamma_draws(av.len(), rng, |i, draws| {
        let a = data[i].to_f64().unwrap_or(f64::NAN);
        F::lit(std_gamma_with(a, draws)).max(F::min_positive_value())
    });
    a.tape()
        .apply(std_gamma_node(Tensor::from_vec(x, shape)?), &[a])
}

/// The logarithms of `Gamma(a, 1)` draws, one for each `a`
/// ([`ln_std_gamma_with`]), in `f64`.
pub(crate) fn ln_std_gamma_draws<F: Element>(a: &Tensor<F>, rng: &mut dyn Rng) -> Vec<f64> {
    let data = a.data();
    gamma_draws(data.len(), rng, |i, draws| {
        ln_std_gamma_with(data[i].to_f64().unwrap_or(f64::NAN), draws)
    })
}

/// The logarithms of `Gamma(a, 1)` draws of `shape` ([`ln_std_gamma_with`]),
/// differentiable in `a` (the implicit derivative of `ln x`,
/// [`gamma_sample_log_grads`]), and the same logarithms in `f64`.
pub(crate) fn ln_std_gamma_rsample<'t, F: Element>(
    a: Var<'t, F>,
    shape: &[usize],
    rng: &mut dyn Rng,
) -> Result<(Var<'t, F>, Vec<f64>)> {
    let a = a.broadcast_to(shape)?;
    let logs = ln_std_gamma_draws(&a.value(), rng);
    let rounded = logs.iter().map(|&l| F::lit(l)).collect();
    let node = ImplicitSample {
        name: "gamma_rsample_log",
        x: Tensor::from_vec(rounded, shape)?,
        grad: |[a], ln_x, out| gamma_sample_log_grads(a, ln_x, out),
        at: None,
    };
    Ok((a.tape().apply(node, &[a])?, logs))
}

/// `h = ln a - ln G` for `G ~ Gamma(a, 1)` drawn for each `a` (broadcast
/// to `shape`): with `a = ν/2`, `sqrt(ν / 2G) = e^(h/2)` for the Student-t.
/// Taken in `f64` and rounded once, and differentiable in `a` with its
/// derivative `1/a - ψ_G` (`ψ_G` the implicit derivative of `ln G` in `a`,
/// [`gamma_sample_log_grads`]) as one factor: through `ln a` and the
/// Gamma draw as two nodes, the two terms each overflowed near the largest
/// float, with opposite signs, and their sum was NaN where the derivative
/// is a large number, or an infinity of one sign.
fn ln_ratio_to_gamma_draw<'t, F: Element>(
    a: Var<'t, F>,
    shape: &[usize],
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    let a = a.broadcast_to(shape)?;
    let av = a.value();
    let logs = ln_std_gamma_draws(&av, rng);
    let h = av
        .data()
        .iter()
        .zip(&logs)
        .map(|(&a, &ln_g)| F::lit(a.to_f64().unwrap_or(f64::NAN).ln() - ln_g))
        .collect();
    let node = ImplicitSample {
        name: "gamma_rsample_log_ratio",
        x: Tensor::from_vec(h, shape)?,
        grad: |[a], ln_g, out| {
            gamma_sample_log_grads(a, ln_g, out);
            for (d, &a) in out.iter_mut().zip(a) {
                d[0] = 1.0 / a - d[0];
            }
        },
        at: Some(logs),
    };
    a.tape().apply(node, &[a])
}

/// The Gamma distribution with shape `concentration` and inverse scale `rate`.
///
/// # Density
/// `ln p(x) = a ln b + (a - 1) ln x - b x - ln Γ(a)` on `x > 0`; `-inf`
/// (gradient 0) for `x <= 0`.
///
/// # Sampling
/// `rsample` is differentiable in both parameters: `x = g / rate` with
/// `g ~ Gamma(concentration, 1)` carrying its implicit gradient. A draw
/// below the smallest normal number (most draws of a concentration of
/// 10⁻⁵, or of a rate of 10²⁰ and a concentration of 0.05 in `f32`) is
/// that number, with a gradient of 0.
///
/// # Parameters
/// - `concentration`, `rate`: finite, `> 0`; shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let (a, b) = (tape.var(Tensor::scalar(2.0)), tape.var(Tensor::scalar(0.5)));
/// let g = Gamma::new(a, b)?;
/// assert!((g.mean()?.item()? - 4.0).abs() < 1e-12);
/// let x = g.rsample(&mut StdRng::seed_from_u64(0))?;
/// let grads = x.backward()?;
/// assert!(grads.get(a).is_some() && grads.get(b).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Gamma<'t, F: Element> {
    concentration: Var<'t, F>,
    rate: Var<'t, F>,
}

impl<'t, F: Element> Gamma<'t, F> {
    /// The chi-squared distribution with `df` degrees of freedom (TFP's
    /// and PyTorch's `Chi2`): `Gamma(df / 2, 1/2)`, the sum of `df` squared
    /// standard normal draws where `df` is whole. Differentiable in `df`,
    /// which may be any positive number.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let d = Gamma::chi_squared(tape.scalar(4.0))?;
    /// // x e^(-x/2) / 4 at x = 2
    /// let lp = d.log_prob(tape.scalar(2.0))?.item()?;
    /// assert!((lp - (0.5f64 * (-1.0f64).exp()).ln()).abs() < 1e-12);
    /// assert!((d.mean()?.item()? - 4.0).abs() < 1e-12);
    /// assert!((d.variance()?.item()? - 8.0).abs() < 1e-12);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// A `df` that is not finite and positive.
    pub fn chi_squared(df: Var<'t, F>) -> Result<Self> {
        check_positive("Gamma::chi_squared", "df", &df)?;
        let rate = df.tape().constant(Tensor::scalar(F::lit(0.5)));
        Self::new(df * F::lit(0.5), rate)
    }

    /// From a concentration (shape) and a rate (inverse scale).
    pub fn new(concentration: Var<'t, F>, rate: Var<'t, F>) -> Result<Self> {
        check_two(
            "Gamma::new",
            "Gamma",
            check_positive,
            ("concentration", &concentration),
            ("rate", &rate),
        )?;
        Ok(Gamma {
            concentration,
            rate,
        })
    }

    /// The concentration.
    pub fn concentration(&self) -> Var<'t, F> {
        self.concentration
    }

    /// The rate.
    pub fn rate(&self) -> Var<'t, F> {
        self.rate
    }

    /// Given draws `x` of this distribution (batch shape, or with leading
    /// sample axes), `x` as a var whose gradients w.r.t. the parameters are
    /// the implicit ones, at a fixed value of the CDF: what `rsample`
    /// backpropagates.
    ///
    /// # Errors
    /// Values that are not finite and `> 0`; shapes that do not broadcast.
    pub fn reparameterize(&self, x: Tensor<F>) -> Result<Var<'t, F>> {
        let tape = self.tape();
        let xv = tape.constant(x);
        check_positive("Gamma", "value", &xv)?;
        let shape = broadcast_shape(xv.value().shape(), &self.batch_shape()).ok_or_else(|| {
            Error::ShapeMismatch {
                op: "Gamma::reparameterize",
                lhs: xv.shape(),
                rhs: self.batch_shape(),
            }
        })?;
        let std = xv.try_mul(self.rate)?.value().broadcast_to(&shape)?;
        let a = self.concentration.broadcast_to(&shape)?;
        tape.apply(std_gamma_node(std), &[a])?.try_div(self.rate)
    }
}

impl<'t, F: Element> Distribution<'t, F> for Gamma<'t, F> {
    super::kl::builtin_kl!(
        Gamma => kl_gamma,
        Exponential => super::univariate::kl_gamma_exponential,
    );

    fn name(&self) -> &'static str {
        "Gamma"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.rate.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Gamma::log_prob", &self.rate, &x)?;
        let (a, b) = (self.concentration, self.rate);
        on_support(
            "Gamma",
            x,
            // (+inf too is outside: the density vanishes there, and the
            // formula would be inf - inf)
            |_, v| v > F::zero() && v < F::infinity(),
            F::one(),
            |x| match F::DTYPE {
                "F32" => pointwise::apply(GammaLogDensity, &[a, b, x]),
                _ => gamma_log_density(a, b, x),
            },
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let g = std_gamma_rsample(self.concentration, &shape, rng)?;
        // (every rate is 1, every rate is at most 1), in one scan
        let (ones, at_most_one) = self
            .rate
            .value()
            .data()
            .iter()
            .fold((true, true), |(o, m), &r| {
                (o && r == F::one(), m && r <= F::one())
            });
        // a constant rate of 1 divides by nothing: the same values, and
        // the same gradient in the concentration, without two passes
        if ones && !self.rate.requires_grad() {
            return Ok(g);
        }
        let x = g.try_div(self.rate)?;
        // a draw divided below the smallest normal number by a large rate
        // is that number, as the draw before it (a rate up to 1 cannot)
        match at_most_one {
            true => Ok(x),
            false => Ok(super::above_zero(x)),
        }
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = a - ln b + ln Γ(a) + (1 - a) ψ(a); with ln Γ and ψ written as
    // their leading terms plus corrections (C and C'), the terms that grow
    // with a cancel: H = ln(a)/2 - ln b + ln(2π)/2 + 1/2 - 1/(2a) + C(a)
    // + (1 - a) C'(a), taken from `LARGE` on (`by_size`)
    fn entropy(&self) -> Result<Var<'t, F>> {
        if F::DTYPE == "F32" {
            return pointwise::apply(GammaEntropy, &[self.concentration, self.rate]);
        }
        let large = |v: &[Var<'t, F>]| {
            let a = v[0];
            let h = a.ln() * F::lit(0.5) + a.lgamma_correction() - a.scalar_div(F::lit(0.5));
            let h = h.try_sub((a - F::one()).try_mul(a.digamma_correction())?)?;
            Ok(h + F::lit(HALF_LN_2PI + 0.5))
        };
        let small = |v: &[Var<'t, F>]| {
            let a = v[0];
            a.try_add(a.lgamma())?
                .try_sub((a - F::one()).try_mul(a.digamma())?)
        };
        by_size(&[self.concentration], large, small)?.try_sub(self.rate.ln())
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        self.concentration.try_div(self.rate)
    }
    // (c / r) / r: `r²` overflows first
    fn variance(&self) -> Result<Var<'t, F>> {
        self.concentration.try_div(self.rate)?.try_div(self.rate)
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.concentration.shape(), &self.rate.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// `Σ_{j≠i} a_j` along `axis` for each `i`, as the sum of the entries
/// before `i` plus the sum of those after it (no `Σ_j a_j - a_i`, which
/// loses the others beside a large `a_i`).
fn others_sum<'t, F: Element>(a: Var<'t, F>, axis: usize) -> Result<Var<'t, F>> {
    let shape = a.shape();
    let k = shape[axis];
    let mut edge = shape.clone();
    edge[axis] = 1;
    let zero = a.tape.constant(Tensor::zeros(&edge));
    if k == 1 {
        return Ok(zero);
    }
    let before = Var::concat(&[zero, a.cumsum(axis)?.slice(axis, 0, k - 1)?], axis)?;
    let after = Var::concat(&[a.cumsum_from_end(axis)?.slice(axis, 1, k)?, zero], axis)?;
    before.try_add(after)
}

/// From this size on, a concentration's `ln Γ` and ψ are taken as
/// Stirling's terms plus their corrections (see [`by_size`]).
const LARGE: f64 = 10.0;

/// Whether `y` is within a factor of 16 of `a` (the range where the
/// forms built on `bd0(a, y)` cancel what the direct sums cannot).
fn near<F: Element>(y: F, a: F) -> bool {
    let r = y / a;
    r >= F::lit(0.0625) && r <= F::lit(16.0)
}

/// [`special::shapes_near`] in `F`: where the divergence between two
/// concentrations is taken as a Taylor remainder, whatever their size.
fn shapes_near<F: Element>(a: F, b: F) -> bool {
    (a - b).abs() * F::lit(8.0) <= a.min(b)
}

/// `large(inputs)` where `in_mask` is 1 and `small(inputs)` where it is 0,
/// chosen on the outputs by `out_mask`: the same mask, or the mask over
/// rows where the formulas sum the last axis (`in_mask` is then the row's
/// value repeated along it). With one mask value throughout, only that
/// side is built. Otherwise each formula is built on its own elements (or
/// rows) alone, gathered from the inputs (broadcast together, and
/// flattened to a vector or to rows of the last axis), and the two results
/// are put back in place: each side pays only for its part, and nothing
/// infinite or NaN from the other side's range reaches its value or
/// gradient. So the formulas must be elementwise (or sum only the last
/// axis, taken as the inputs' last), and a mask they use must come from
/// the inputs they are given: a mask of the whole would not fit a side.
pub(crate) fn split<'t, F: Element>(
    inputs: &[Var<'t, F>],
    (in_mask, out_mask): (Tensor<F>, Tensor<F>),
    large: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    small: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    if in_mask.data().iter().all(|&m| m == F::one()) {
        return large(inputs);
    }
    if in_mask.data().iter().all(|&m| m == F::zero()) {
        return small(inputs);
    }
    let (shape, units) = (in_mask.shape(), out_mask.len());
    // a vector of elements, or rows of the last axis
    let flat = match in_mask.shape() == out_mask.shape() {
        true => vec![units],
        false => vec![units, in_mask.len() / units],
    };
    let (mut ones, mut zeros) = (Vec::new(), Vec::new());
    for (i, &m) in out_mask.data().iter().enumerate() {
        if m == F::one() {
            ones.push(i);
        } else {
            zeros.push(i);
        }
    }
    let flat = inputs
        .iter()
        .map(|v| v.broadcast_to(shape)?.reshape(&flat))
        .collect::<Result<Vec<_>>>()?;
    let side = |idx: &[usize]| -> Result<Vec<Var<'t, F>>> {
        flat.iter().map(|v| v.select(0, idx)).collect()
    };
    // each formula's result over its part (a constant formula may come out
    // as a scalar)
    let (y1, y0) = (large(&side(&ones)?)?, small(&side(&zeros)?)?);
    let (y1, y0) = (
        y1.broadcast_to(&[ones.len()])?,
        y0.broadcast_to(&[zeros.len()])?,
    );
    // unit i is at place[i] of the joined results
    let mut place = vec![0; units];
    for (at, &i) in ones.iter().chain(&zeros).enumerate() {
        place[i] = at;
    }
    Var::concat(&[y1, y0], 0)?
        .select(0, &place)?
        .reshape(out_mask.shape())
}

/// 1 where `keep` holds for the inputs' values (broadcast together),
/// else 0.
pub(crate) fn mask_where<F: Element>(
    inputs: &[Var<'_, F>],
    keep: impl Fn(&[F]) -> bool,
) -> Result<Tensor<F>> {
    per_element(inputs, |v| if keep(v) { F::one() } else { F::zero() })
}

/// The inputs' shapes broadcast together.
fn broadcast_of<F: Element>(inputs: &[Var<'_, F>]) -> Result<Vec<usize>> {
    let mut shape = Vec::new();
    for v in inputs {
        shape = broadcast_shape(&shape, &v.shape()).ok_or_else(|| Error::ShapeMismatch {
            op: "broadcast",
            lhs: shape.clone(),
            rhs: v.shape(),
        })?;
    }
    Ok(shape)
}

/// `+inf` at every position of the inputs' broadcast shape, a constant (no
/// gradient): the side of a [`split`] where a quantity leaves the floats.
pub(crate) fn infinite<'t, F: Element>(inputs: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    let shape = broadcast_of(inputs)?;
    Ok(inputs[0]
        .tape()
        .constant(Tensor::full(&shape, F::infinity())))
}

/// `f` of the inputs' values (broadcast together), element by element.
fn per_element<F: Element>(inputs: &[Var<'_, F>], f: impl Fn(&[F]) -> F) -> Result<Tensor<F>> {
    let shape = broadcast_of(inputs)?;
    let values = inputs
        .iter()
        .map(|v| v.value().broadcast_to(&shape))
        .collect::<Result<Vec<_>>>()?;
    let data: Vec<&[F]> = values.iter().map(|t| t.data()).collect();
    // one element's inputs, in place (the callers pass at most four)
    let mut at = [F::zero(); PER_ELEMENT_MAX];
    let at = at
        .get_mut(..data.len())
        .expect("per_element: at most PER_ELEMENT_MAX inputs");
    Tensor::from_vec(
        (0..crate::tensor::numel(&shape))
            .map(|i| {
                for (x, d) in at.iter_mut().zip(&data) {
                    *x = d[i];
                }
                f(at)
            })
            .collect(),
        &shape,
    )
}

/// The most inputs [`per_element`] takes.
const PER_ELEMENT_MAX: usize = 8;

/// [`split`] of elementwise formulas by whether all their inputs are at
/// least [`LARGE`]: there the forms with Stirling's corrections keep the
/// digits that sums of `ln Γ` and ψ lose; below, the direct sums are as
/// accurate, and they keep their range at tiny concentrations, where the
/// corrections are differences of numbers that overflow.
fn by_size<'t, F: Element>(
    inputs: &[Var<'t, F>],
    large: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    small: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    let mask = mask_where(inputs, |v| v.iter().all(|&x| x >= F::lit(LARGE)))?;
    split(inputs, (mask.clone(), mask), large, small)
}

/// `ln p(x) = a ln b + (a - 1) ln x - b x - ln Γ(a)` of a Gamma(a, b) at
/// `x > 0`. With `ln Γ(a)` written as Stirling's terms plus their
/// correction `C(a)`, the terms of size `a ln a` cancel analytically:
/// `ln(a)/2 - C(a) - ln(2π)/2 - bd0(a, y) - ln x`, `y = b x`, which keeps
/// its digits at large concentrations. It is taken where `a` is at least
/// [`LARGE`] and `y` is [`near`] `a`, the direct sum elsewhere
/// ([`split`]): the terms that cancel are large only when both hold, and
/// far from `a` the stable form's `y` and `a / y` can underflow or
/// overflow where the direct sum's logarithms do not.
fn gamma_log_density<'t, F: Element>(
    a: Var<'t, F>,
    b: Var<'t, F>,
    x: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let stable = |v: &[Var<'t, F>]| {
        let (a, b, x) = (v[0], v[1], v[2]);
        let front = a.ln() * F::lit(0.5) - a.lgamma_correction() - F::lit(HALF_LN_2PI);
        front.try_sub(a.bd0(b.try_mul(x)?)?)?.try_sub(x.ln())
    };
    let direct = |v: &[Var<'t, F>]| {
        let (a, b, x) = (v[0], v[1], v[2]);
        let t = a
            .try_mul(b.ln())?
            .try_add((a - F::one()).try_mul(x.ln())?)?;
        t.try_sub(b.try_mul(x)?)?.try_sub(a.lgamma())
    };
    let inputs = [a, b, x];
    let mask = mask_where(&inputs, |v| {
        v[0] >= F::lit(LARGE) && near(v[1] * v[2], v[0])
    })?;
    split(&inputs, (mask.clone(), mask), stable, direct)
}

/// [`gamma_log_density`] as one [`Pointwise`] formula of `[a, b, x]` in
/// `f64` (for `f32`): the same two forms, chosen at each position by the
/// same test, with their partial derivatives: `∂a = ln b + ln x - ψ(a)`,
/// `∂b = a / b - x`, `∂x = (a - 1) / x - b` from the direct sum, and from
/// the stable form `∂a = 1/(2a) - C'(a) - ln(a / y)` and, through `y = b
/// x`, `∂b = (a / y - 1) x`, `∂x = (a / y - 1) b - 1 / x`.
#[derive(Clone, Copy)]
struct GammaLogDensity;

/// The terms of [`GammaLogDensity`]'s parameters at eight positions.
#[derive(Clone, Copy)]
struct GammaTerms {
    lgamma: Lanes,
    digamma: Lanes,
    ln_b: Lanes,
    /// `ln a`, `C(a)` and `C'(a)` for the stable form, where a lane's `a`
    /// is at least [`LARGE`] (else unused).
    large: Option<(Lanes, Lanes, Lanes)>,
}

impl Pointwise<3> for GammaLogDensity {
    const NAME: &'static str = "gamma_log_density";
    const KEYED: usize = 2;
    type Pre = GammaTerms;

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> GammaTerms {
        let a = &v[0];
        let large = a.iter().any(|&a| a >= LARGE).then(|| {
            (
                ln_each(a),
                lgamma_correction_lanes(a),
                digamma_correction_lanes(a),
            )
        });
        GammaTerms {
            lgamma: lgamma_lanes(a),
            digamma: digamma_lanes(a),
            ln_b: ln_each(&v[1]),
            large,
        }
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 3], t: &GammaTerms, out: &mut Lanes, d: &mut [Lanes; 3]) {
        let ([a, b, x], ln_x) = (v, ln_each(&v[2]));
        for l in 0..LANES {
            let (a, b, x) = (a[l], b[l], x[l]);
            out[l] = ((a * t.ln_b[l] + (a - 1.0) * ln_x[l]) - b * x) - t.lgamma[l];
            d[0][l] = t.ln_b[l] + ln_x[l] - t.digamma[l];
            d[1][l] = a / b - x;
            d[2][l] = (a - 1.0) / x - b;
        }
        if let Some((ln_a, c, dc)) = &t.large {
            for l in 0..LANES {
                let (a, b, x) = (a[l], b[l], x[l]);
                let y = b * x;
                if !(a >= LARGE && near(y, a)) {
                    continue;
                }
                let front = ln_a[l] * 0.5 - c[l] - HALF_LN_2PI;
                out[l] = front - special::bd0(a, y) - ln_x[l];
                let dy = a / y - 1.0;
                d[0][l] = 0.5 / a - dc[l] - special::ln_ratio(a, y);
                d[1][l] = dy * x;
                d[2][l] = dy * b - 1.0 / x;
            }
        }
    }
}

/// The inverse Gamma's log-density `ln p(x) = a ln b - ln Γ(a) - (a + 1) ln
/// x - b / x` of `[a, b, x]` at `x > 0`, in `f64` with its partial
/// derivatives (rounded once for `f32`). It is the Gamma's log-density of
/// `y = b / x` at rate 1 plus `ln y - ln x`, so the Gamma's stable form
/// serves where `a` is at least [`LARGE`] and `y` is [`near`] `a`:
/// `ln(a)/2 - C(a) - ln(2π)/2 - bd0(a, y) - ln x`. Elsewhere the direct
/// sum, which neither forms `1/x` (it overflows for small `x`) nor lets
/// `b / x` underflow into a wrong `-inf`; where `b / x` overflows the
/// value is `-inf`, as the density's.
#[derive(Clone, Copy)]
struct InverseGammaLogDensity;

impl Pointwise<3> for InverseGammaLogDensity {
    const NAME: &'static str = "inverse_gamma_log_density";
    const KEYED: usize = 2;
    type Pre = GammaTerms;

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> GammaTerms {
        <GammaLogDensity as Pointwise<3>>::pre(v)
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 3], t: &GammaTerms, out: &mut Lanes, d: &mut [Lanes; 3]) {
        let ([a, b, x], ln_x) = (v, ln_each(&v[2]));
        for l in 0..LANES {
            let (a, b, x) = (a[l], b[l], x[l]);
            let y = b / x;
            out[l] = ((a * t.ln_b[l] - (a + 1.0) * ln_x[l]) - y) - t.lgamma[l];
            d[0][l] = t.ln_b[l] - ln_x[l] - t.digamma[l];
            d[1][l] = a / b - 1.0 / x;
            d[2][l] = (y - a - 1.0) / x;
        }
        if let Some((ln_a, c, dc)) = &t.large {
            for l in 0..LANES {
                let (a, b, x) = (a[l], b[l], x[l]);
                let y = b / x;
                if !(a >= LARGE && near(y, a)) {
                    continue;
                }
                out[l] = ln_a[l] * 0.5 - c[l] - HALF_LN_2PI - special::bd0(a, y) - ln_x[l];
                d[0][l] = 0.5 / a - dc[l] - special::ln_ratio(a, y);
                d[1][l] = (a / y - 1.0) / x;
                d[2][l] = (y - a - 1.0) / x;
            }
        }
    }
}

/// The inverse Gamma's log-density at `x > 0` ([`InverseGammaLogDensity`]).
pub(crate) fn inverse_gamma_log_density<'t, F: Element>(
    a: Var<'t, F>,
    b: Var<'t, F>,
    x: Var<'t, F>,
) -> Result<Var<'t, F>> {
    pointwise::apply(InverseGammaLogDensity, &[a, b, x])
}

/// `(a - b) ψ(a) - ln Γ(a) + ln Γ(b)`, the part of a Gamma, Beta or
/// Dirichlet divergence that compares two concentrations. With `ln Γ` and
/// `ψ` written as their leading terms plus corrections (`C`, `C'`), the
/// terms of size `a ln a` cancel analytically:
/// `bd0(b, a) - ln(b/a)/2 - (a - b)/(2a) + (a - b) C'(a) + C(b) - C(a)`,
/// with `bd0(b, a) = b ln(b/a) + a - b` (the direct sum, one op, where
/// either is below [`LARGE`], see [`by_size`] and
/// [`Var::shape_divergence_direct`]). Each part is small when `a` and
/// `b` are close, so the divergence between two large, close
/// concentrations keeps its digits (the direct sum loses them to
/// rounding errors of size `a ln a` ulps).
fn shape_divergence<'t, F: Element>(a: Var<'t, F>, b: Var<'t, F>) -> Result<Var<'t, F>> {
    let large = |v: &[Var<'t, F>]| {
        let (a, b) = (v[0], v[1]);
        let diff = a.try_sub(b)?;
        let t = b.bd0(a)?.try_sub(b.try_div(a)?.ln() * F::lit(0.5))?;
        let t = t.try_sub(diff.try_div(a)? * F::lit(0.5))?;
        let t = t.try_add(diff.try_mul(a.digamma_correction())?)?;
        t.try_add(b.lgamma_correction().try_sub(a.lgamma_correction())?)
    };
    let small = |v: &[Var<'t, F>]| v[0].shape_divergence_direct(v[1]);
    by_size(&[a, b], large, small)
}

/// The [`shape_divergence`] `D(a, b)` of each pair, less `a` where `a` is
/// at least [`LARGE`] and `b` is below it (`r` is 1 there, else 0). There
/// `D(a, b)` is about `a`, and a Beta or Dirichlet divergence sums three or
/// more of them whose `a`s cancel (`a1 + b1 - (a1 + b1)`): from a large
/// posterior to a small prior (`Beta(1e8, 1e8)` against `Beta(1, 1)`) the
/// sum kept `16 - log10(a)` digits at best. Less `a`, with `ln Γ(a)` and
/// `ψ(a)` as Stirling's terms plus their corrections, it is
/// `(1/2 - b) ln a - (a - b)/(2a) + (a - b) C'(a) - ln(2π)/2 - C(a) +
/// ln Γ(b)`, of the size of `b ln a`; the caller adds back the `a`s that
/// do not cancel.
fn pair_divergence<'t, F: Element>(
    a: Var<'t, F>,
    b: Var<'t, F>,
) -> Result<(Var<'t, F>, Tensor<F>)> {
    let less_a = |v: &[Var<'t, F>]| {
        let (a, b) = (v[0], v[1]);
        let diff = a.try_sub(b)?;
        let t = (-b + F::lit(0.5)).try_mul(a.ln())?;
        let t = t.try_sub(diff.try_div(a)? * F::lit(0.5))?;
        let t = t.try_add(diff.try_mul(a.digamma_correction())?)?;
        let t = t.try_sub(a.lgamma_correction())? - F::lit(HALF_LN_2PI);
        t.try_add(b.lgamma())
    };
    let whole = |v: &[Var<'t, F>]| shape_divergence(v[0], v[1]);
    let removed = mask_where(&[a, b], |v| v[0] >= F::lit(LARGE) && v[1] < F::lit(LARGE))?;
    let d = split(&[a, b], (removed.clone(), removed.clone()), less_a, whole)?;
    Ok((d, removed))
}

/// KL(Gamma(a1, b1) || Gamma(a2, b2))
/// `= (a1 - a2) ψ(a1) - ln Γ(a1) + ln Γ(a2) + a2 (ln b1 - ln b2) + a1 (b2 - b1) / b1`.
///
/// Where the concentrations and the rates are each within an eighth of the
/// smaller ([`gamma_near`]), one Taylor remainder ([`GammaNearDivergence`]),
/// whose terms are never negative; elsewhere as follows.
///
/// Where `a1` is at least [`LARGE`], `ln Γ(a1)` and `ψ(a1)` are written as
/// Stirling's terms plus their corrections (`C`, `C'`), and the terms of
/// sizes `a1 ln a1` and `a1` cancel analytically. With `y = a1 b2 / b1`
/// (the mean of `q` times the rate of `p`), what is left is `y - a2 ln y +
/// ln Γ(a2) - ln(2π)/2 + ln(a1)/2 - (a1 - a2)/(2 a1) + (a1 - a2) C'(a1) -
/// C(a1)`, taken
/// - for `a2` at least [`LARGE`] too, as `bd0(a2, y) - ln(a2/a1)/2 -
///   (a1 - a2)/(2 a1) + (a1 - a2) C'(a1) + C(a2) - C(a1)`, with
///   `bd0(a2, y) = a2 ln(a2 / y) + y - a2` (from the logarithms of the
///   parameters where `y` is not [`near`] `a2`, so that `y` may leave the
///   range where `ln y` does not); each part is small when the two are
///   close, so the divergence keeps its digits;
/// - else as written, with `ln y` from the logarithms of the parameters.
///
/// The direct sum keeps its digits only where `a1` is small: its first
/// terms add up to about `a1` and its last to about `-a1` when `y` is far
/// below `a1` (`KL(Gamma(1e12, 1e12) || Gamma(1, 1)) = 13.39657...` came
/// out as 13.39661, and at `a1 = 1e20` as 0 instead of 22.6). Below
/// [`LARGE`], and for concentrations of any size that are [`shapes_near`]
/// each other (where the shape terms are one Taylor remainder,
/// [`special::shape_divergence_direct`], and the large forms' corrections
/// would cancel instead), it is taken with its rate terms as `bd0(a1, y) +
/// (a1 - a2) ln(1 + (b2 - b1) / b1)` where `b2 / b1` is [`near`] 1 (the
/// difference of the two logarithms kept only their absolute accuracy),
/// and elsewhere `a1 (b2 - b1) / b1` as `a1 (b2 / b1) - a1`, in an order
/// whose intermediate does not leave the range.
///
/// The direct sum ([`GammaDirect`]) and the large forms' terms in `y`
/// ([`RateTerm`], [`RateTermFar`]) are each one formula with its partials
/// written out, so that a slope whose two terms each overflow is the
/// infinity of its sign ([`sum_beyond_range`], [`rate_slopes`]) where the
/// tape's paths met as `inf - inf`.
///
/// In `f32` the divergence is computed in `f64` by [`GammaDivergence`] (the
/// same forms) and rounded once.
pub(crate) fn kl_gamma<'t, F: Element>(q: &Gamma<'t, F>, p: &Gamma<'t, F>) -> Result<Var<'t, F>> {
    if F::DTYPE == "F32" {
        let prior_first = [p.concentration, p.rate, q.concentration, q.rate];
        return pointwise::apply(GammaDivergence, &prior_first);
    }
    let inputs = [q.concentration, q.rate, p.concentration, p.rate];
    let large = |v: &[Var<'t, F>]| {
        let (a1, a2) = (v[0], v[2]);
        let diff = a1.try_sub(a2)?;
        // -(a1 - a2)/(2 a1) + (a1 - a2) C'(a1) - C(a1), common to both forms
        let common = diff.try_mul(a1.digamma_correction())?;
        let common = common.try_sub(diff.try_div(a1)? * F::lit(0.5))?;
        let common = common.try_sub(a1.lgamma_correction())?;
        let both_large = |w: &[Var<'t, F>]| {
            let (a1, a2) = (w[0], w[2]);
            let near_form =
                |u: &[Var<'t, F>]| pointwise::apply(RateDeviance, &[u[0], u[1], u[2], u[3]]);
            let far_form =
                |u: &[Var<'t, F>]| pointwise::apply(RateTermFar, &[u[0], u[1], u[2], u[3]]);
            let close = mask_where(w, |v| near(v[0] * (v[3] / v[1]), v[2]))?;
            let bd0 = split(w, (close.clone(), close), near_form, far_form)?;
            let t = bd0.try_sub(a2.try_div(a1)?.ln() * F::lit(0.5))?;
            t.try_add(a2.lgamma_correction())
        };
        let small_a2 = |w: &[Var<'t, F>]| {
            let (a1, a2) = (w[0], w[2]);
            let t = pointwise::apply(RateTerm, &[w[0], w[1], w[2], w[3]])?;
            let t = t.try_add(a2.lgamma())?;
            t.try_add(a1.ln() * F::lit(0.5) - F::lit(HALF_LN_2PI))
        };
        let a2_large = mask_where(&[a2], |v| v[0] >= F::lit(LARGE))?;
        let rest = split(v, (a2_large.clone(), a2_large), both_large, small_a2)?;
        common.try_add(rest)
    };
    let small = |v: &[Var<'t, F>]| {
        let stable = |w: &[Var<'t, F>]| {
            let (a1, b1, a2, b2) = (w[0], w[1], w[2], w[3]);
            let y = a1.try_mul(b2.try_div(b1)?)?;
            // ln(b2 / b1) as ln(1 + δ), δ exact where the rates are close
            let ln_ratio = b2.try_sub(b1)?.try_div(b1)?.log1p();
            let rates = a1.bd0(y)?.try_add(a1.try_sub(a2)?.try_mul(ln_ratio)?)?;
            a1.shape_divergence_direct(a2)?.try_add(rates)
        };
        let direct = |w: &[Var<'t, F>]| pointwise::apply(GammaDirect, &[w[0], w[1], w[2], w[3]]);
        let close = mask_where(v, |v| near(v[3] / v[1], F::one()))?;
        split(v, (close.clone(), close), stable, direct)
    };
    let far = |v: &[Var<'t, F>]| {
        let a1_large = mask_where(v, |v| v[0] >= F::lit(LARGE) && !shapes_near(v[0], v[2]))?;
        split(v, (a1_large.clone(), a1_large), large, small)
    };
    let near_form =
        |v: &[Var<'t, F>]| pointwise::apply(GammaNearDivergence, &[v[0], v[1], v[2], v[3]]);
    let close = mask_where(&inputs, |v| gamma_near(v))?;
    split(&inputs, (close.clone(), close), near_form, far)
}

/// Whether [`kl_gamma`] takes [`GammaNearDivergence`] at the inputs `[a1,
/// b1, a2, b2]`: the concentrations and the rates each within an eighth of
/// the smaller ([`shapes_near`]).
fn gamma_near<F: Element>(v: &[F]) -> bool {
    shapes_near(v[0], v[2]) && shapes_near(v[1], v[3])
}

/// `KL(Gamma(a1, b1) || Gamma(a2, b2))` and its partials in `[a1, b1, a2,
/// b2]` between near parameters ([`gamma_near`]): the remainder of the
/// first-order Taylor polynomial of `F(a, b) = ln Γ(a) - a ln b` (the
/// divergence is `F`'s Bregman divergence), `∫₀¹ (1 - s) δ' H δ ds` along
/// the segment, `H` the Hessian of `F` (`ψ'(a)`, `-1/b`, `a/b²`). With `u
/// = δa/a`, `v = δb/b` and `ψ'(a) = 1/a + 1/(2a²) + R(a)`, `δ' H δ = a (u -
/// v)² + u²/2 + δa² R(a)`, three terms that are never negative (`R > 0`),
/// where the sums of the other forms cancel terms of size `a u²`: where
/// shapes and rates move by one fraction `t` (the same mean), the divergence
/// is about `t²/4`, which the other forms' sums had 8e-5 of itself off at
/// `a = 1e12`, `t = 1e-6` (against mpmath), and the shape remainder beside
/// the rate terms, -3.8e81 at `a = 1e100`, `t = 0.05` (for 6.05e-4). The
/// partials: in `p`'s parameters `∫₀¹ H δ ds` and in `q`'s `-H δ` at `(a1,
/// b1)`, with `H δ = ((u - v) + u/(2a) + δa R(a), (a/b)(v - u))`, and `u -
/// v` with the rounding errors of the two quotients.
fn gamma_near_scalar([a1, b1, a2, b2]: [f64; 4]) -> (f64, [f64; 4]) {
    let (da, db) = (a2 - a1, b2 - b1);
    if da == 0.0 && db == 0.0 {
        return (0.0, [0.0; 4]);
    }
    // u - v at (a1, b1) with the two quotients' rounding errors (fused
    // multiply-adds give them exactly): where shape and rate move by nearly
    // one fraction, u - v is far below either. Along the segment it is
    // (δa b1 - δb a1) / (a b), the first's times (a1 / a)(b1 / b).
    let (u1, v1) = (da / a1, db / b1);
    let spread1 = (u1 - v1) + ((-u1).mul_add(a1, da) / a1 - (-v1).mul_add(b1, db) / b1);
    let pull = |a: f64, b: f64| {
        let u = da / a;
        let spread = spread1 * (a1 / a) * (b1 / b);
        let r = special::trigamma_correction(a);
        let form = a * spread * spread + 0.5 * u * u + da * (da * r);
        [spread + 0.5 * u / a + da * r, -(a / b) * spread, form]
    };
    let reach = (da.abs() / a1.min(a2)).max(db.abs() / b1.min(b2));
    let [weighted, whole] = special::remainder_integrals(reach, |s| pull(a1 + s * da, b1 + s * db));
    let [ga, gb, _] = pull(a1, b1);
    (weighted[2], [-ga, -gb, whole[0], whole[1]])
}

/// A [`Pointwise`] formula of `[a1, b1, a2, b2]` taken a position at a time
/// by a function of them that gives the value and the four partials.
macro_rules! by_position {
    ($(#[$doc:meta])* $name:ident, $op:literal, $f:path) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        struct $name;

        impl Pointwise<4> for $name {
            const NAME: &'static str = $op;
            const KEYED: usize = 4;
            type Pre = ();

            #[inline(always)]
            fn pre(_: &[Lanes; 4]) {}

            fn eval(v: &[Lanes; 4], _: &(), out: &mut Lanes, d: &mut [Lanes; 4]) {
                pointwise::each_lane(v, out, d, f64::INFINITY, |x| Some($f(x)));
            }
        }
    };
}

/// `bd0(a2, y)` with `y = a1 b2 / b1`, of the inputs `[a1, b1, a2, b2]`,
/// from `a2 - y` computed without rounding `y` first
/// ([`special::ratio_apart`]): where `y` is close to `a2` the divergence is
/// about `(a2 - y)² / a2`, and from `y` rounded it carried an error of about
/// `ε² a2` (`KL(Gamma(2e100, 3e100) || Gamma(3e100, 4.5e100))`, whose
/// inputs' means differ in their last bits, came out 1.006e69 for
/// 5.661e68). The partials: `ln(a2 / y)` in `a2`, and through `∂/∂y = -(a2
/// - y)/y`, `-(a2 - y)/a1`, `(a2 - y)/b1` and `-(a2 - y)/b2`.
fn rate_deviance_scalar([a1, b1, a2, b2]: [f64; 4]) -> (f64, [f64; 4]) {
    let y = a1 * (b2 / b1);
    let apart = special::ratio_apart(a2, a1, b2, b1);
    (
        deviance(a2, y, apart),
        [
            -apart / a1,
            apart / b1,
            ln_deviate(a2, y, apart),
            -apart / b2,
        ],
    )
}

by_position!(
    /// [`rate_deviance_scalar`] as one [`Pointwise`] formula.
    RateDeviance,
    "bd0_of_rates",
    rate_deviance_scalar
);

/// `x + y` where each may have overflowed: where they are infinities of
/// opposite signs (their sum NaN), the one whose logarithm of its
/// magnitude (`ln_x()`, `ln_y()`) is the larger, so that a slope beyond
/// the range is the infinity of its sign. Two tape paths that each
/// overflow met as `inf - inf`: the slope of `KL(Gamma(1e-10, 1e-200) ||
/// Gamma(1e200, 1))` in `1e-200`, `a2/b1 - a1 b2/b1²` (1e400), was NaN.
fn sum_beyond_range(x: f64, y: f64, ln_x: impl FnOnce() -> f64, ln_y: impl FnOnce() -> f64) -> f64 {
    let sum = x + y;
    if !sum.is_nan() || x.is_nan() || y.is_nan() {
        return sum;
    }
    if ln_x() >= ln_y() { x } else { y }
}

/// `y = a1 b2 / b1`, the mean of `q` times the rate of `p`, as `a1 (b2 /
/// b1)` where that ratio is a normal float, else as `(a1 / b1) b2`: the
/// ratio overflows for a tiny `b1` where `y` does not (`a1 = 1e-300`, `b1
/// = 1e-10`, `b2 = 1e300`).
fn scaled_mean(a1: f64, b1: f64, b2: f64) -> f64 {
    let ratio = b2 / b1;
    if ratio.is_normal() {
        a1 * ratio
    } else {
        (a1 / b1) * b2
    }
}

/// `a b / c²` for positive finite `a`, `b` and `c`, from their significands
/// and binary exponents apart, so that it overflows or underflows only
/// where the result is beyond the range (`(a / c)(b / c)` and `(a (b / c))
/// / c` can in between: at `a = 1e200`, `b = 1e-300`, `c = 1e100` both are
/// 0, for 1e-300).
fn product_over_square(a: f64, b: f64, c: f64) -> f64 {
    let split = |x: f64| {
        let (x, shift) = match x < f64::MIN_POSITIVE {
            true => (x * 2f64.powi(64), -64),
            false => (x, 0),
        };
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023 + shift;
        let significand = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
        (significand, exponent)
    };
    let ((ma, ea), (mb, eb), (mc, ec)) = (split(a), split(b), split(c));
    let (mut m, mut e) = ((ma * mb) / (mc * mc), ea + eb - 2 * ec);
    // 2^e in steps that the floats hold
    while e > 1000 {
        m *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        m *= 2f64.powi(-1000);
        e += 1000;
    }
    m * 2f64.powi(e)
}

/// The slopes of the Gamma divergence in the rates, `∂b1 = a2/b1 - a1
/// b2/b1²` and `∂b2 = a1/b1 - a2/b2`, each in one expression of its two
/// terms ([`sum_beyond_range`]), each term as small or as large as it is
/// ([`product_over_square`]), so that a slope beyond the range is the
/// infinity of its sign.
fn rate_slopes(a1: f64, b1: f64, a2: f64, b2: f64) -> (f64, f64) {
    let db1 = sum_beyond_range(
        a2 / b1,
        -product_over_square(a1, b2, b1),
        || a2.ln() - b1.ln(),
        || a1.ln() + b2.ln() - 2.0 * b1.ln(),
    );
    let db2 = sum_beyond_range(
        a1 / b1,
        -(a2 / b2),
        || a1.ln() - b1.ln(),
        || a2.ln() - b2.ln(),
    );
    (db1, db2)
}

/// [`kl_gamma`]'s direct sum at `[a1, b1, a2, b2]` (`a1` below [`LARGE`] or
/// [`shapes_near`] `a2`, the rates not [`near`]): `D(a1, a2) + a2 (ln b1 -
/// ln b2) + (y - a1)` with `D` the direct [`shape_divergence`] and `y` of
/// [`scaled_mean`] (`a1 (b2 - b1) / b1` not through `b2 - b1`, which drops
/// `b2` where it is below `b1`'s last digits, and with it the slope in
/// `b1`: at `a1 = 0.5`, `b1 = 1e-10`, `b2 = 1e-30` that slope came out
/// 1e-20, the other term's, for -5e-11), and its partials `∂a1 = (a1 -
/// a2) ψ'(a1) + b2/b1 - 1`, `∂a2 = ψ(a2) - ψ(a1) + ln b1 - ln b2` and
/// those of [`rate_slopes`], in one formula: on the tape, as the sums of
/// the slopes of the terms, those that each overflowed met as `inf - inf`
/// (NaN for the slope in `a1` at `KL(Gamma(1e-300, 1e-10) || Gamma(1e-100,
/// 1e300))`, which is -inf).
/// The value and each partial that overflows in two terms of opposite
/// signs is the infinity of the larger ([`sum_beyond_range`]).
fn gamma_direct_scalar([a1, b1, a2, b2]: [f64; 4]) -> (f64, [f64; 4]) {
    let (ln_b1, ln_b2) = (b1.ln(), b2.ln());
    let y = scaled_mean(a1, b1, b2);
    let log_term = a2 * (ln_b1 - ln_b2);
    let rates = sum_beyond_range(
        log_term,
        y - a1,
        || a2.ln() + (ln_b1 - ln_b2).abs().ln(),
        || a1.ln() + ln_b2 - ln_b1,
    );
    let value = special::shape_divergence_direct(a1, a2) + rates;
    // (a1 - a2) ψ'(a1) overflows (to -inf) only below `TINY_SHAPE`, where it
    // is (a1 - a2) / a1² to within far less than its rounding
    let da1 = sum_beyond_range(
        special::shape_slope(a1, a2),
        b2 / b1 - 1.0,
        || (a1 - a2).abs().ln() - 2.0 * a1.ln(),
        || ln_b2 - ln_b1,
    );
    let da2 = special::digamma_spread(a1, a2) + (ln_b1 - ln_b2);
    let (db1, db2) = rate_slopes(a1, b1, a2, b2);
    (value, [da1, db1, da2, db2])
}

by_position!(
    /// [`gamma_direct_scalar`] as one [`Pointwise`] formula.
    GammaDirect,
    "kl_gamma_direct",
    gamma_direct_scalar
);

/// The terms of [`kl_gamma`]'s large forms in which the rates enter, at
/// `[a1, b1, a2, b2]` (`a1` at least [`LARGE`]), with `y` of
/// [`scaled_mean`] and `ln y = ln a1 + (ln b2 - ln b1)`: `y - a2 ln y`
/// where `a2` is below [`LARGE`], and (`FAR`) `bd0(a2, y) = a2 (ln a2 -
/// ln y) + (y - a2)` where `a2` is large too and `y` not [`near`] it. The
/// partials go through `y` alone (`∂/∂y = 1 - a2/y`): `(y - a2)/a1` in
/// `a1`, `-ln y` (`FAR`: `ln a2 - ln y`) in `a2`, and those of
/// [`rate_slopes`], each one expression where on the tape the paths
/// through `y` and `ln y` each overflowed (NaN for the slope in `1e-300`
/// of `KL(Gamma(1e10, 1e-300) || Gamma(1e100, 1))`, which is -inf).
fn rate_term_scalar<const FAR: bool>([a1, b1, a2, b2]: [f64; 4]) -> (f64, [f64; 4]) {
    let y = scaled_mean(a1, b1, b2);
    let ln_y = a1.ln() + (b2.ln() - b1.ln());
    let (value, da2) = match FAR {
        true => {
            let ln_a2 = a2.ln();
            let log_term = a2 * (ln_a2 - ln_y);
            let value = sum_beyond_range(
                log_term,
                y - a2,
                || ln_a2 + (ln_a2 - ln_y).abs().ln(),
                || ln_y,
            );
            (value, ln_a2 - ln_y)
        }
        false => {
            let value = sum_beyond_range(y, -(a2 * ln_y), || ln_y, || a2.ln() + ln_y.abs().ln());
            (value, -ln_y)
        }
    };
    // (y - a2)/a1 as b2/b1 - a2/a1, whose terms do not under- or overflow
    // in between (a1 >= LARGE: a2/a1 is finite)
    let da1 = b2 / b1 - a2 / a1;
    let (db1, db2) = rate_slopes(a1, b1, a2, b2);
    (value, [da1, db1, da2, db2])
}

by_position!(
    /// [`rate_term_scalar`] as one [`Pointwise`] formula, `y - a2 ln y`.
    RateTerm,
    "gamma_rate_term",
    rate_term_scalar::<false>
);

by_position!(
    /// [`rate_term_scalar`] as one [`Pointwise`] formula, `bd0(a2, y)` far
    /// from `y = a2`.
    RateTermFar,
    "gamma_rate_term_far",
    rate_term_scalar::<true>
);

by_position!(
    /// [`gamma_near_scalar`] as one [`Pointwise`] formula.
    GammaNearDivergence,
    "kl_gamma_near",
    gamma_near_scalar
);

/// [`kl_gamma`] as one [`Pointwise`] formula in `f64` (for `f32`), of the
/// inputs `[a2, b2, a1, b1]` (the prior's parameters first: their terms are
/// computed once when they are single values). Near parameters
/// ([`gamma_near`]) take [`gamma_near_scalar`] lane by lane; elsewhere, with
/// `δ = (b2 - b1) / b1`,
/// `r = ln(b2 / b1)` (as `ln(1 + δ)` where `b2 / b1` is [`near`] 1, else
/// from the logarithms) and `y = a1 b2 / b1`:
/// - where `a1` is below [`LARGE`] or [`shapes_near`] `a2`, `D(a1, a2) +
///   a1 (δ - r) + (a1 - a2) r`, with `D` the direct [`shape_divergence`]
///   (for near concentrations a Taylor remainder,
///   [`special::shape_divergence_direct`]) and `δ - r` from its series
///   `δ²/2 - δ³/3 + ...` where `|δ| < 1e-3` (the first two forms of
///   [`kl_gamma`], regrouped: `a1 (δ - r) = bd0(a1, y)`);
/// - else [`kl_gamma`]'s large forms, the same as on the tape.
///
/// The partial derivatives are the same functions in every form:
/// - `∂a1 = (a1 - a2) ψ'(a1) + δ`, for a large `a1` from Stirling's terms
///   as `(y - a2)/a1 + (a1 - a2)/(2 a1²) + (a1 - a2) C''(a1)` (which does
///   not cancel `1 - 1`);
/// - `∂b1 = (a2 - y) / b1` and `∂b2 = (y - a2) / b2`;
/// - `∂a2 = ψ(a2) - ψ(a1) - r`, for a large `a1` with `ψ` from Stirling's
///   terms: `ln(a2 / y) - 1/(2 a2) + 1/(2 a1) + C'(a2) - C'(a1)` where `a2`
///   is large too, else `ψ(a2) - ln y + 1/(2 a1) - C'(a1)`.
#[derive(Clone, Copy)]
struct GammaDivergence;

/// The terms of [`GammaDivergence`]'s prior parameters `a2`, `b2` at eight
/// positions.
#[derive(Clone, Copy)]
struct PriorTerms {
    lgamma: Lanes,
    digamma: Lanes,
    ln_b: Lanes,
    /// `C(a2)` and `C'(a2)` where a lane's `a2` is at least [`LARGE`] (else
    /// unused).
    large: Option<(Lanes, Lanes)>,
}

impl Pointwise<4> for GammaDivergence {
    const NAME: &'static str = "kl_gamma";
    const KEYED: usize = 2;
    type Pre = PriorTerms;

    #[inline(always)]
    fn pre(v: &[Lanes; 4]) -> PriorTerms {
        let a2 = &v[0];
        let large = a2
            .iter()
            .any(|&a| a >= LARGE)
            .then(|| (lgamma_correction_lanes(a2), digamma_correction_lanes(a2)));
        PriorTerms {
            lgamma: lgamma_lanes(a2),
            digamma: digamma_lanes(a2),
            ln_b: ln_each(&v[1]),
            large,
        }
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 4], t: &PriorTerms, out: &mut Lanes, d: &mut [Lanes; 4]) {
        Self::general(v, t, out, d);
        let [a2, b2, a1, b1] = v;
        for l in 0..LANES {
            let q_first = [a1[l], b1[l], a2[l], b2[l]];
            if gamma_near(&q_first) {
                (out[l], [d[2][l], d[3][l], d[0][l], d[1][l]]) = gamma_near_scalar(q_first);
            }
        }
    }
}

impl GammaDivergence {
    /// [`kl_gamma`]'s forms other than [`GammaNearDivergence`].
    #[inline(always)]
    fn general(v: &[Lanes; 4], t: &PriorTerms, out: &mut Lanes, d: &mut [Lanes; 4]) {
        let [a2, b2, a1, b1] = v;
        let (psi1, lgamma1) = (digamma_lanes(a1), lgamma_lanes(a1));
        let (trigamma1, ln_b1) = (special::trigamma_lanes(a1), ln_each(b1));
        let ratio: Lanes = std::array::from_fn(|l| b2[l] / b1[l]);
        let close: [u64; LANES] = std::array::from_fn(|l| special::mask(near(ratio[l], 1.0)));
        // δ where the rates are close (then exact, and above -1), else 0
        let delta: Lanes = std::array::from_fn(|l| (b2[l] - b1[l]) / b1[l]);
        let near_delta: Lanes = std::array::from_fn(|l| special::select(close[l], delta[l], 0.0));
        let ln_1p = special::ln_1p_lanes(&near_delta);
        let mut r = [0.0; LANES];
        for l in 0..LANES {
            let (a1, a2, delta) = (a1[l], a2[l], delta[l]);
            r[l] = special::select(close[l], ln_1p[l], t.ln_b[l] - ln_b1[l]);
            let series = delta
                * delta
                * (0.5 - delta * (1.0 / 3.0 - delta * (0.25 - delta * (0.2 - delta / 6.0))));
            let excess = special::select(special::mask(delta.abs() < 1e-3), series, delta - r[l]);
            let diff = a1 - a2;
            let shape = diff * psi1[l] - lgamma1[l] + t.lgamma[l];
            let shape = special::select(special::mask(diff == 0.0), 0.0, shape);
            let shape = if diff != 0.0 && shapes_near(a1, a2) {
                special::shape_divergence_direct(a1, a2)
            } else {
                shape
            };
            out[l] = shape + (a1 * excess + diff * r[l]);
            let y = a1 * ratio[l];
            d[0][l] = t.digamma[l] - psi1[l] - r[l];
            d[1][l] = (y - a2) / b2[l];
            d[2][l] = diff * trigamma1[l] + delta;
            d[3][l] = (a2 - y) / b1[l];
        }
        if a1.iter().all(|&a| a < LARGE) {
            return;
        }
        let [ln_a1, c1, dc1, tc1] = stirling_terms(a1);
        for l in 0..LANES {
            let (a1, a2) = (a1[l], a2[l]);
            if a1 < LARGE || shapes_near(a1, a2) {
                continue;
            }
            let (y, ln_y, diff) = (a1 * ratio[l], ln_a1[l] + r[l], a1 - a2);
            let common = (diff * dc1[l] - diff / (2.0 * a1)) - c1[l];
            let (rest, d_a2) = match t.large {
                Some((c2, dc2)) if a2 >= LARGE => {
                    // (a2 - y from the products, as `RateDeviance` takes it)
                    let apart = special::ratio_apart(a2, a1, b2[l], b1[l]);
                    d[1][l] = -apart / b2[l];
                    d[3][l] = apart / b1[l];
                    d[2][l] = -apart / a1 + diff / (2.0 * a1 * a1) + diff * tc1[l];
                    out[l] = common + (deviance(a2, y, apart) - 0.5 * (a2 / a1).ln()) + c2[l];
                    d[0][l] = ln_deviate(a2, y, apart) - 0.5 / a2 + 0.5 / a1 + (dc2[l] - dc1[l]);
                    continue;
                }
                _ => (
                    (y - a2 * ln_y) + t.lgamma[l] + (0.5 * ln_a1[l] - HALF_LN_2PI),
                    t.digamma[l] - ln_y + 0.5 / a1 - dc1[l],
                ),
            };
            out[l] = common + rest;
            d[0][l] = d_a2;
            d[2][l] = (y - a2) / a1 + diff / (2.0 * a1 * a1) + diff * tc1[l];
        }
    }
}

/// `ln x` and the corrections `C(x)`, `C'(x)`, `C''(x)` of Stirling's
/// series at each lane: the terms of the large-concentration forms.
#[inline(always)]
fn stirling_terms(x: &Lanes) -> [Lanes; 4] {
    [
        ln_each(x),
        lgamma_correction_lanes(x),
        digamma_correction_lanes(x),
        special::trigamma_correction_lanes(x),
    ]
}

/// [`Gamma::entropy`] as one [`Pointwise`] formula in `f64` (for `f32`), of
/// `[a, b]`, with the tape's forms: `a - ln b + ln Γ(a) - (a - 1) ψ(a)`,
/// `∂a = 1 - (a - 1) ψ'(a)`, `∂b = -1/b`; where `a` is at least [`LARGE`],
/// with `ln Γ(a)` and `ψ(a)` as Stirling's terms plus their corrections
/// (the terms of size `a ln a` cancel), `ln(a)/2 + C(a) - 1/(2a) - (a - 1)
/// C'(a) + (ln(2π) + 1)/2 - ln b` and `∂a = 1/(2a) + 1/(2a²) - (a - 1)
/// C''(a)`. What depends on `a` alone is its [`Pointwise::pre`], computed
/// once where the concentration is a single value.
#[derive(Clone, Copy)]
struct GammaEntropy;

/// [`GammaEntropy`]'s terms of `a` at eight positions: the entropy less
/// `ln b`, and its derivative in `a`.
#[derive(Clone, Copy)]
struct EntropyTerms {
    h: Lanes,
    dh: Lanes,
}

impl Pointwise<2> for GammaEntropy {
    const NAME: &'static str = "gamma_entropy";
    const KEYED: usize = 1;
    type Pre = EntropyTerms;

    #[inline(always)]
    fn pre(v: &[Lanes; 2]) -> EntropyTerms {
        let a = &v[0];
        let (lgamma, psi) = (lgamma_lanes(a), digamma_lanes(a));
        let psi1 = special::trigamma_lanes(a);
        let mut h = [0.0; LANES];
        let mut dh = [0.0; LANES];
        for l in 0..LANES {
            let a = a[l];
            h[l] = (a + lgamma[l]) - (a - 1.0) * psi[l];
            dh[l] = 1.0 - (a - 1.0) * psi1[l];
        }
        if a.iter().any(|&a| a >= LARGE) {
            let [ln_a, c, dc, tc] = stirling_terms(a);
            for l in 0..LANES {
                let a = a[l];
                if a < LARGE {
                    continue;
                }
                let t = ((ln_a[l] * 0.5 + c[l]) - 0.5 / a) - (a - 1.0) * dc[l];
                h[l] = t + (HALF_LN_2PI + 0.5);
                dh[l] = (0.5 / a + 0.5 / (a * a)) - (a - 1.0) * tc[l];
            }
        }
        EntropyTerms { h, dh }
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 2], t: &EntropyTerms, out: &mut Lanes, d: &mut [Lanes; 2]) {
        let b = &v[1];
        let ln_b = ln_each(b);
        for l in 0..LANES {
            out[l] = t.h[l] - ln_b[l];
            d[0][l] = t.dh[l];
            d[1][l] = -1.0 / b[l];
        }
    }
}

/// Below this sum of its concentrations the Beta entropy is taken by
/// [`beta_entropy_tiny`]: from about 1.3e-154 down, `ψ'` of the sum and of
/// each concentration overflow, and the sums of the terms' slopes were
/// `inf - inf` (NaN) at `Beta(1e-160, 1e-160)`.
const TINY_SUM: f64 = 1e-100;

/// The Beta entropy `H = ln B(a, b) - (a - 1)(ψ(a) - ψ(s)) - (b - 1)(ψ(b) -
/// ψ(s))` (`s = a + b`) and its partials in `a` and `b`, for a sum below
/// [`TINY_SUM`]: with `ψ(x) = ψ(x + 1) - 1/x`, `ψ(a) - ψ(s)` is `-(b/a)/s +
/// (ψ(a + 1) - ψ(s + 1))`, and `∂H/∂a = (1 - a) ψ'(a) + (s - 2) ψ'(s)` is
/// `((1 - a) - (2 - s)(a/s)²)/a² + (1 - a) ψ'(a + 1) + (s - 2) ψ'(s + 1)`,
/// whose first term has the sign of the two huge ones it gathers and
/// overflows to `±inf` only where their sum does (`+inf` at `a = b =
/// 1e-300`, about `1/(2a²)`).
fn beta_entropy_tiny([a, b]: [f64; 2]) -> (f64, [f64; 2]) {
    let s = a + b;
    let slope = |x: f64| {
        let r = x / s;
        ((1.0 - x) - (2.0 - s) * (r * r)) / x / x
            + ((1.0 - x) * special::trigamma(x + 1.0) + (s - 2.0) * special::trigamma(s + 1.0))
    };
    let part =
        |x: f64, y: f64| -(1.0 - x) * (y / x) / s - (x - 1.0) * special::digamma_diff(x + 1.0, y);
    (
        special::lbeta(a, b) + part(a, b) + part(b, a),
        [slope(a), slope(b)],
    )
}

/// The Dirichlet entropy `H = ln B(α) + (α0 - K) ψ(α0) - Σ (α_i - 1) ψ(α_i)`
/// of one row whose concentrations add up to less than [`TINY_SUM`], and
/// its slopes written to `grad`, as [`beta_entropy_tiny`] takes the Beta's:
/// with `ψ(x) = ψ(x + 1) - 1/x`, `H = ln B(α) + (α0 - K) ψ(α0 + 1) - Σ (α_i -
/// 1) ψ(α_i + 1) + (K - 1) + K/α0 - Σ 1/α_i`, and `∂H/∂α_i = ((1 - α_i) - (K
/// - α0)(α_i/α0)²)/α_i² + (1 - α_i) ψ'(α_i + 1) + (α0 - K) ψ'(α0 + 1)`.
fn dirichlet_entropy_tiny(a: &[f64], grad: &mut [f64]) -> f64 {
    let k = a.len() as f64;
    let a0: f64 = a.iter().sum();
    let (psi0, psi1) = (special::digamma(a0 + 1.0), special::trigamma(a0 + 1.0));
    let mut h = (a0 - k) * psi0 + (k - 1.0) + k / a0 - special::lgamma(a0);
    for (g, &x) in grad.iter_mut().zip(a) {
        h += special::lgamma(x) - (x - 1.0) * special::digamma(x + 1.0) - 1.0 / x;
        let r = x / a0;
        *g = ((1.0 - x) - (k - a0) * (r * r)) / x / x
            + ((1.0 - x) * special::trigamma(x + 1.0) + (a0 - k) * psi1);
    }
    h
}

/// [`dirichlet_entropy_tiny`] along the last axis, one op: backward
/// recomputes the slopes.
struct DirichletEntropyTiny;

impl DirichletEntropyTiny {
    /// The entropy of each row and the slopes.
    fn rows<F: Element>(c: &Tensor<F>) -> (Vec<f64>, Vec<f64>) {
        let c = c.to_f64();
        let k = c.shape().last().copied().unwrap_or(1).max(1);
        let mut grad = vec![0.0; c.len()];
        let values = c
            .data()
            .chunks(k)
            .zip(grad.chunks_mut(k))
            .map(|(row, g)| dirichlet_entropy_tiny(row, g))
            .collect();
        (values, grad)
    }
}

impl<F: Element> Op<F> for DirichletEntropyTiny {
    fn name(&self) -> &str {
        "dirichlet_entropy_tiny"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        row_values(Self::rows(inputs[0]).0, inputs[0].shape())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (_, slopes) = Self::rows(inputs[0]);
        Ok(vec![row_slopes(&slopes, grad, inputs[0].shape())?])
    }
}

/// One value per row of an input of `shape` (its last axis the row), as the
/// output of a row op.
fn row_values<F: Element>(values: Vec<f64>, shape: &[usize]) -> Result<Tensor<F>> {
    Tensor::from_vec(
        values.into_iter().map(F::lit).collect(),
        &shape[..shape.len() - 1],
    )
}

/// The gradient of an input of `shape` to a row op: each partial in
/// `slopes` times the incoming gradient of its row.
fn row_slopes<F: Element>(
    slopes: &[f64],
    grad: &Tensor<F>,
    shape: &[usize],
) -> Result<Option<Tensor<F>>> {
    let k = shape.last().copied().unwrap_or(1).max(1);
    let g = grad.to_f64();
    let data = slopes
        .iter()
        .enumerate()
        .map(|(i, &d)| F::lit(g.data()[i / k] * d))
        .collect();
    Tensor::from_vec(data, shape).map(Some)
}

/// [`beta_entropy_tiny`] as one [`Pointwise`] formula.
#[derive(Clone, Copy)]
struct BetaEntropyTiny;

impl Pointwise<2> for BetaEntropyTiny {
    const NAME: &'static str = "beta_entropy_tiny";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        pointwise::each_lane(v, out, d, f64::INFINITY, |x| Some(beta_entropy_tiny(x)));
    }
}

/// The Beta distribution on (0, 1).
///
/// # Density
/// `ln p(x) = (a - 1) ln x + (b - 1) ln(1 - x) - ln B(a, b)` for
/// `a = concentration1`, `b = concentration0`, on `0 < x < 1`; `-inf`
/// (gradient 0) elsewhere.
///
/// # Sampling
/// `x = G1 / (G1 + G2)` with `G1 ~ Gamma(a)`, `G2 ~ Gamma(b)`, taken from
/// their logarithms when `a` or `b` is below 0.1, where the Gamma draws
/// underflow; `rsample` is differentiated implicitly through the Beta CDF.
/// Draws stay in `[MIN_POSITIVE, 1 - ε/2]`.
///
/// # Parameters
/// - `concentration1`, `concentration0`: finite, `> 0`; shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let b = Beta::new(tape.var(Tensor::scalar(2.0)), tape.var(Tensor::scalar(3.0)))?;
/// assert!((b.mean()?.item()? - 0.4).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Beta<'t, F: Element> {
    concentration1: Var<'t, F>,
    concentration0: Var<'t, F>,
}

impl<'t, F: Element> Beta<'t, F> {
    /// From the two concentrations (`a` of `x`, `b` of `1 - x`).
    pub fn new(concentration1: Var<'t, F>, concentration0: Var<'t, F>) -> Result<Self> {
        check_two(
            "Beta::new",
            "Beta",
            check_positive,
            ("concentration1", &concentration1),
            ("concentration0", &concentration0),
        )?;
        Ok(Beta {
            concentration1,
            concentration0,
        })
    }

    /// The concentration of `x`.
    pub fn concentration1(&self) -> Var<'t, F> {
        self.concentration1
    }

    /// The concentration of `1 - x`.
    pub fn concentration0(&self) -> Var<'t, F> {
        self.concentration0
    }

    /// Given draws `x` in (0, 1), `x` as a var whose gradients w.r.t. the
    /// concentrations are the implicit ones (see [`Gamma::reparameterize`]).
    ///
    /// # Errors
    /// Values outside (0, 1); shapes that do not broadcast.
    pub fn reparameterize(&self, x: Tensor<F>) -> Result<Var<'t, F>> {
        let tape = self.tape();
        let xv = tape.constant(x);
        check_values("Beta", "value", &xv, "must be in (0, 1)", |v| {
            v > F::zero() && v < F::one()
        })?;
        let shape = broadcast_shape(xv.value().shape(), &self.batch_shape()).ok_or_else(|| {
            Error::ShapeMismatch {
                op: "Beta::reparameterize",
                lhs: xv.shape(),
                rhs: self.batch_shape(),
            }
        })?;
        let a = self.concentration1.broadcast_to(&shape)?;
        let b = self.concentration0.broadcast_to(&shape)?;
        let x = xv.value().broadcast_to(&shape)?;
        tape.apply(beta_node(x, None), &[a, b])
    }

    fn lbeta(&self) -> Result<Var<'t, F>> {
        self.concentration1.lbeta(self.concentration0)
    }
}

impl<'t, F: Element> Distribution<'t, F> for Beta<'t, F> {
    super::kl::builtin_kl!(Beta => kl_beta);

    fn name(&self) -> &'static str {
        "Beta"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.concentration1.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Beta::log_prob", &self.concentration1, &x)?;
        let (a, b) = (self.concentration1, self.concentration0);
        on_support(
            "Beta",
            x,
            |_, v| v > F::zero() && v < F::one(),
            F::lit(0.5),
            |x| match F::DTYPE {
                "F32" => pointwise::apply(BetaLogDensity, &[a, b, x]),
                _ => beta_log_density(a, b, x),
            },
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let a = self.concentration1.broadcast_to(&shape)?;
        let b = self.concentration0.broadcast_to(&shape)?;
        let (av, bv) = (a.value(), b.value());
        let (a_data, b_data) = (av.data(), bv.data());
        let f = |v: F| v.to_f64().unwrap_or(f64::NAN);
        let draw = |i: usize, draws: &mut Draws| {
            let (a, b) = (f(a_data[i]), f(b_data[i]));
            // kept inside (0, 1) after rounding (NaN, where both
            // logarithms underflowed, is refused below)
            into_open_unit(if a.min(b) < LOG_SPACE_BELOW {
                // e^l1 / (e^l1 + e^l2), NaN where both are -inf
                let l1 = ln_std_gamma_with(a, draws);
                sigmoid(l1 - ln_std_gamma_with(b, draws))
            } else {
                let g1 = std_gamma_with(a, draws);
                g1 / (g1 + std_gamma_with(b, draws))
            })
        };
        // f32 keeps the f64 draws for the derivatives (f64 has them in `x`)
        let (x, at) = match size_of::<F>() < size_of::<f64>() {
            true => {
                let x64: Vec<f64> = gamma_draws(av.len(), rng, draw);
                (
                    x64.iter().map(|&x| into_open_unit(F::lit(x))).collect(),
                    Some(x64),
                )
            }
            false => (gamma_draws(av.len(), rng, |i, d| F::lit(draw(i, d))), None),
        };
        if let Some(i) = x.iter().position(|x: &F| x.is_nan()) {
            return Err(beyond_logarithms("Beta", &[av.data()[i], bv.data()[i]]));
        }
        let x = Tensor::from_vec(x, &shape)?;
        self.tape().apply(beta_node(x, at), &[a, b])
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = ln B(a, b) - (a - 1) ψ(a) - (b - 1) ψ(b) + (a + b - 2) ψ(a + b):
    // from `LARGE` on, the Dirichlet entropy's form with Stirling's
    // corrections for the pair; below, with the digamma differences whole
    fn entropy(&self) -> Result<Var<'t, F>> {
        if F::DTYPE == "F32" {
            return in_f64_elementwise(
                "beta_entropy",
                |v| {
                    let beta = Beta {
                        concentration1: v[0],
                        concentration0: v[1],
                    };
                    beta.entropy()
                },
                &[self.concentration1, self.concentration0],
            );
        }
        let large = |v: &[Var<'t, F>]| {
            let (a, b) = (v[0], v[1]);
            let s = a.try_add(b)?;
            // ln(a/s) = -ln(1 + b/a), and the same for b
            let ln_a = -b.try_div(a)?.log1p();
            let ln_b = -a.try_div(b)?.log1p();
            let terms = |x: Var<'t, F>, ln_x: Var<'t, F>| -> Result<Var<'t, F>> {
                let t = ln_x * F::lit(0.5) - x.scalar_div(F::lit(0.5)) + x.lgamma_correction();
                let slope = x.digamma_correction().try_sub(s.digamma_correction())?;
                t.try_sub((x - F::one()).try_mul(slope)?)
            };
            let h = terms(a, ln_a)?.try_add(terms(b, ln_b)?)?;
            let h =
                h.try_add(s.scalar_div(F::one()) - s.ln() * F::lit(0.5) - s.lgamma_correction())?;
            Ok(h + F::lit(HALF_LN_2PI + 0.5))
        };
        // ln B(a, b) - (a - 1) (ψ(a) - ψ(a + b)) - (b - 1) (ψ(b) - ψ(a + b)),
        // where a + b is below TINY_SUM as one op ([`beta_entropy_tiny`])
        let small = |v: &[Var<'t, F>]| {
            let sums = |w: &[Var<'t, F>]| {
                let (a, b) = (w[0], w[1]);
                let h = a
                    .lbeta(b)?
                    .try_sub((a - F::one()).try_mul(a.digamma_diff(b)?)?)?;
                h.try_sub((b - F::one()).try_mul(b.digamma_diff(a)?)?)
            };
            let tiny = mask_where(v, |v| v[0] + v[1] < F::lit(TINY_SUM))?;
            let by_parts = |w: &[Var<'t, F>]| pointwise::apply(BetaEntropyTiny, &[w[0], w[1]]);
            split(v, (tiny.clone(), tiny), by_parts, sums)
        };
        by_size(&[self.concentration1, self.concentration0], large, small)
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        let (a, b) = (self.concentration1, self.concentration0);
        a.try_div(a.try_add(b)?)
    }
    // (a / s)(b / s) / (s + 1) with s = a + b: the shares neither overflow
    // nor underflow where `a b` and `s²` do (0 in f32 at a = b = 1e19, NaN
    // at 1e-25, where the variances are 1.25e-20 and 1/4)
    fn variance(&self) -> Result<Var<'t, F>> {
        let (a, b) = (self.concentration1, self.concentration0);
        let s = a.try_add(b)?;
        a.try_div(s)?.try_mul(b.try_div(s)?)?.try_div(s + F::one())
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.concentration1.shape(), &self.concentration0.shape())
            .unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// `ln p(x)` of `Beta(a, b)` at `x` in (0, 1): `(a - 1) ln x + (b - 1)
/// ln(1 - x) - ln B(a, b)`.
fn beta_log_density<'t, F: Element>(
    a: Var<'t, F>,
    b: Var<'t, F>,
    x: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let lp = (a - F::one()).try_mul(x.ln())?;
    lp.try_add((b - F::one()).try_mul((-x).log1p())?)?
        .try_sub(a.lbeta(b)?)
}

/// [`beta_log_density`] as one [`Pointwise`] formula of `[a, b, x]` in
/// `f64` (for `f32`), with `∂a = ln x - (ψ(a) - ψ(a + b))`, `∂b = ln(1 -
/// x) - (ψ(b) - ψ(a + b))` (the differences of digammas whole, as `lbeta`'s
/// gradient takes them) and `∂x = (a - 1) / x - (b - 1) / (1 - x)`.
#[derive(Clone, Copy)]
struct BetaLogDensity;

/// The terms of [`BetaLogDensity`]'s parameters at eight positions:
/// `ln B(a, b)`, `ψ(a) - ψ(a + b)` and `ψ(b) - ψ(a + b)`.
#[derive(Clone, Copy)]
struct BetaTerms {
    lbeta: Lanes,
    da: Lanes,
    db: Lanes,
}

impl Pointwise<3> for BetaLogDensity {
    const NAME: &'static str = "beta_log_density";
    const KEYED: usize = 2;
    type Pre = BetaTerms;

    #[inline(always)]
    fn pre(v: &[Lanes; 3]) -> BetaTerms {
        let [a, b, _] = v;
        BetaTerms {
            lbeta: special::lbeta_lanes(a, b),
            da: special::digamma_diff_lanes(a, b),
            db: special::digamma_diff_lanes(b, a),
        }
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 3], t: &BetaTerms, out: &mut Lanes, d: &mut [Lanes; 3]) {
        let [a, b, x] = v;
        let (ln_x, ln_1m_x) = (ln_each(x), special::ln_1m_lanes(x));
        for l in 0..LANES {
            let (a, b, x) = (a[l], b[l], x[l]);
            out[l] = ((a - 1.0) * ln_x[l] + (b - 1.0) * ln_1m_x[l]) - t.lbeta[l];
            d[0][l] = ln_x[l] - t.da[l];
            d[1][l] = ln_1m_x[l] - t.db[l];
            d[2][l] = (a - 1.0) / x - (b - 1.0) / (1.0 - x);
        }
    }
}

/// The Student-t log-density `N(ν, s) - (ν + 1)/2 ln(1 + z²/ν)`, `z = (x -
/// loc) / s`, `N(ν, s) = -ln B(ν/2, 1/2) - ln(ν)/2 - ln s`, as one
/// [`Pointwise`] formula of `[ν, loc, s, x]` in `f64` (for `f32`, whose
/// values give no `z²/ν` beyond `f64`'s range: the far form of
/// `StudentT::log1p_z2_over_df` is not needed). With `h = (ν + 1)/2` and
/// `c = h / (1 + z²/ν)`: `∂loc = 2 c z / (ν s) = -∂x`, `∂s = -1/s + ∂loc
/// z`, `∂ν = ∂N/∂ν - ln(1 + z²/ν)/2 + c z² / ν²`, where `∂N/∂ν = -(ψ(ν/2) -
/// ψ(ν/2 + 1/2))/2 - 1/(2ν)`.
#[derive(Clone, Copy)]
struct StudentTLogDensity;

/// The terms of [`StudentTLogDensity`]'s parameters at eight positions.
#[derive(Clone, Copy)]
struct StudentTTerms {
    /// `N(ν, s)`.
    norm: Lanes,
    /// `∂N/∂ν`.
    norm_dnu: Lanes,
}

impl Pointwise<4> for StudentTLogDensity {
    const NAME: &'static str = "student_t_log_density";
    const KEYED: usize = 3;
    type Pre = StudentTTerms;

    #[inline(always)]
    fn pre(v: &[Lanes; 4]) -> StudentTTerms {
        let [nu, _, s, _] = v;
        let (half_nu, half) = (nu.map(|nu| nu * 0.5), [0.5; LANES]);
        let (lbeta, dd) = (
            special::lbeta_lanes(&half_nu, &half),
            special::digamma_diff_lanes(&half_nu, &half),
        );
        let (ln_nu, ln_s) = (ln_each(nu), ln_each(s));
        StudentTTerms {
            norm: std::array::from_fn(|l| (-lbeta[l] - ln_nu[l] * 0.5) - ln_s[l]),
            norm_dnu: std::array::from_fn(|l| -0.5 * dd[l] - 0.5 / nu[l]),
        }
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 4], t: &StudentTTerms, out: &mut Lanes, d: &mut [Lanes; 4]) {
        let [nu, loc, s, x] = v;
        let z: Lanes = std::array::from_fn(|l| (x[l] - loc[l]) / s[l]);
        let q: Lanes = std::array::from_fn(|l| z[l] * z[l] / nu[l]);
        let ln_1p_q = match q.iter().all(|&q| (0.0..f64::INFINITY).contains(&q)) {
            true => special::ln_1p_lanes(&q),
            false => q.map(f64::ln_1p),
        };
        for l in 0..LANES {
            let (nu, s, z, q) = (nu[l], s[l], z[l], q[l]);
            let h = (nu + 1.0) * 0.5;
            out[l] = t.norm[l] - h * ln_1p_q[l];
            let c = h / (1.0 + q);
            let dloc = 2.0 * c * z / (nu * s);
            d[0][l] = t.norm_dnu[l] - 0.5 * ln_1p_q[l] + c * q / nu;
            d[1][l] = dloc;
            d[2][l] = -1.0 / s + dloc * z;
            d[3][l] = -dloc;
        }
    }
}

/// `KL(Beta(a1, b1) || Beta(a2, b2))`, which is `ln B(a2, b2) - ln B(a1,
/// b1) + (a1 - a2) ψ(a1) + (b1 - b2) ψ(b1) + (a2 - a1 + b2 - b1) ψ(a1 +
/// b1)`, in one of five forms, chosen element by element:
/// - Where each pair of concentrations is within an eighth of its smaller
///   ([`beta_near`]), as one Taylor remainder of `ln B` ([`kl_beta_near`]):
///   the forms below cancel terms there that agree in most of their digits.
/// - Where every concentration is at least [`LARGE`], or the largest at
///   least [`BY_PARTS_FROM`] and the next form does not apply, as the
///   divergences of the parts of `ln B` by Stirling's series
///   ([`kl_beta_large`]), each small where the divergence is: the two
///   forms after the next cancel terms of the size of the largest
///   concentration, and lost the whole divergence where the
///   concentrations all move by one factor. But where some concentration
///   is below [`LARGE`] and both of `q`'s are below [`BY_PARTS_FROM`]
///   ([`beta_small_q`]), as the last form below.
/// - Where the two `a`s are below [`LARGE`] and both 16 times smaller than
///   the `b`s, `b1` at most [`SHIFTED_MAX`] (or the same with the roles
///   swapped; see [`kl_beta_shifted`]),
///   as `D(a1, a2)` plus the differences that adding the `a`s makes to
///   the `b`s' terms. Those differences are of the size of the `a`s, where
///   the general form below takes them as differences of two divergences
///   between the `b`s that agree in most of their digits:
///   `KL(Beta(1e-10, 3) || Beta(1e-10, 1))` was 2.5e-5 off, and at `b`s of
///   1e10 and 1e5 the divergence came out as 0 instead of 1.05e-9.
/// - Elsewhere as `D(a1, a2) + D(b1, b2) - D(a1 + b1, a2 + b2)`, with `D`
///   the [`shape_divergence`], each taken less its first argument where
///   that is large and the second small ([`pair_divergence`]); the first
///   arguments so removed cancel (`a1 + b1 - (a1 + b1)`), and those that do
///   not are added back.
/// - Where that sum is not finite (its three parts can overflow with
///   opposite signs when a concentration of `q` is far below 1e-10 and one
///   of `p` is large), or where `a1 + b1` or `a2 + b2` drops digits of its
///   smaller term ([`sum_rounds`]),
///   as `ln B(a2, b2) - ln B(a1, b1) + (a1 - a2) (ψ(a1) -
///   ψ(a1 + b1)) + (b1 - b2) (ψ(b1) - ψ(a1 + b1))`, whose differences of
///   digammas do not overflow: +inf where the divergence is beyond the
///   range, instead of NaN. A sum that rounds so drops what its smaller term
///   adds to `D(a1 + b1, a2 + b2)`, of the size of the divergence where
///   the other sum is far from it, and the slopes cancel terms far larger
///   than themselves: `KL(Beta(1000, 1e20) || Beta(1e-300, 1000))` came out
///   1000 where it is 692.81, `KL(Beta(1000, 1e150) || Beta(0.5, 1e300))`
///   1000 where it is 1e153, with a slope in `1e150` of -5e-151 for -1000.
///
/// In `f32` the divergence and its gradients are computed in `f64` by
/// [`BetaDivergence`] (the same forms) and rounded once: the general forms cancel
/// terms of the size of the concentrations times their digammas, which at
/// a concentration of 1e6 left an `f32` result up to 1.7 % off
/// (`KL(Beta(1e6, 30) || Beta(500, 0.7))` came out 3.5625 for 3.5037).
pub(crate) fn kl_beta<'t, F: Element>(q: &Beta<'t, F>, p: &Beta<'t, F>) -> Result<Var<'t, F>> {
    let inputs = [
        q.concentration1,
        q.concentration0,
        p.concentration1,
        p.concentration0,
    ];
    if F::DTYPE == "F32" {
        let prior_first = [inputs[2], inputs[3], inputs[0], inputs[1]];
        return pointwise::apply(BetaDivergence, &prior_first);
    }
    kl_beta_of(&inputs)
}

/// [`kl_beta`] as one [`Pointwise`] formula in `f64` (for `f32`), of the
/// inputs `[a2, b2, a1, b1]` (the prior's first: its `ln Γ` and ψ are
/// computed once when its parameters are single values). Near
/// concentrations ([`beta_near`]) take [`beta_near_scalar`] lane by lane,
/// and those of [`beta_large`] [`beta_large_scalar`].
/// Where neither pair of concentrations is taken by [`kl_beta_shifted`],
/// [`kl_beta`] is `D(a1, a2) + D(b1, b2) - D(s1, s2)` (`s = a + b`) of
/// [`pair_divergence`]s
/// plus what [`added_back`] adds, which this computes lane by lane with the
/// same forms: the direct sum where the first argument is below [`LARGE`],
/// the large form where both are at least [`LARGE`], the form less `a`
/// where only the first is. The partials of each pair are those of its
/// form: `∂x = (x - y) ψ'(x)` (less 1 where `x` is removed, written as
/// `(1/2 - y)/x - y/(2x²) + (x - y) C''(x)`) and `∂y = ψ(y) - ψ(x)` (from
/// `ln(y/x)` and the corrections where both are large, so that close
/// concentrations keep their digits). Where a pair is taken by
/// [`kl_beta_shifted`], [`kl_beta_of`] on an `f64` tape of those
/// positions. (The inputs are `f32`: no sum of these forms overflows in
/// `f64`, so [`kl_beta_general`]'s other form is never taken.)
#[derive(Clone, Copy)]
struct BetaDivergence;

/// The terms of [`BetaDivergence`]'s prior parameters at eight positions:
/// `ln Γ` and ψ of `a2`, `b2` and `s2 = a2 + b2`, and where any of them is
/// at least [`LARGE`] their corrections `C` and `C'`.
#[derive(Clone, Copy)]
struct BetaPriorTerms {
    lgamma: [Lanes; 3],
    digamma: [Lanes; 3],
    large: Option<[[Lanes; 3]; 2]>,
}

impl Pointwise<4> for BetaDivergence {
    const NAME: &'static str = "kl_beta";
    const KEYED: usize = 2;
    type Pre = BetaPriorTerms;
    const FALLBACK: Option<pointwise::Fallback> = Some(|v| kl_beta_of(&[v[2], v[3], v[0], v[1]]));

    fn covers(v: &[f64; 4]) -> bool {
        let [a2, b2, a1, b1] = *v;
        let q_first = [a1, b1, a2, b2];
        // (sums that round in `f64`, of `f32` terms far apart, take the
        // general form's other form, in the fallback, and so do `q`'s
        // concentrations small beside a large one of `p`'s)
        let rounds = sum_rounds(a1, b1) || sum_rounds(a2, b2);
        beta_near(&q_first)
            || match beta_large(&q_first) {
                true => !beta_small_q(&q_first),
                false => !beta_shifted(&q_first, false) && !beta_shifted(&q_first, true) && !rounds,
            }
    }

    #[inline(always)]
    fn pre(v: &[Lanes; 4]) -> BetaPriorTerms {
        let [a2, b2, ..] = v;
        let s2: Lanes = std::array::from_fn(|l| a2[l] + b2[l]);
        let large = s2.iter().any(|&s| s >= LARGE).then(|| {
            [
                [a2, b2, &s2].map(lgamma_correction_lanes),
                [a2, b2, &s2].map(digamma_correction_lanes),
            ]
        });
        BetaPriorTerms {
            lgamma: [lgamma_lanes(a2), lgamma_lanes(b2), lgamma_lanes(&s2)],
            digamma: [digamma_lanes(a2), digamma_lanes(b2), digamma_lanes(&s2)],
            large,
        }
    }

    #[inline(always)]
    fn eval(v: &[Lanes; 4], t: &BetaPriorTerms, out: &mut Lanes, d: &mut [Lanes; 4]) {
        Self::general(v, t, out, d);
        let [a2, b2, a1, b1] = v;
        for l in 0..LANES {
            let q_first = [a1[l], b1[l], a2[l], b2[l]];
            if beta_near(&q_first) {
                (out[l], [d[2][l], d[3][l], d[0][l], d[1][l]]) = beta_near_scalar(q_first);
            } else if beta_large(&q_first) && !beta_small_q(&q_first) {
                // (the positions of `beta_small_q` are the fallback's)
                (out[l], [d[2][l], d[3][l], d[0][l], d[1][l]]) = beta_large_scalar(q_first);
            }
        }
    }
}

/// [`kl_beta_near`] of one position `[a1, b1, a2, b2]`: the value and the
/// partials in `a1, b1, a2, b2`.
fn beta_near_scalar([a1, b1, a2, b2]: [f64; 4]) -> (f64, [f64; 4]) {
    let (da, db) = (a2 - a1, b2 - b1);
    // H δ and δ' H δ at (a, b), H the Hessian of ln B: with T(x, y) = ψ'(x)
    // - ψ'(x + y) as (1/x²)(y/s)((s + x)/s) + T(x + 1, y) and ψ'(s) as 1/s²
    // + ψ'(s + 1), every term a product, none of them overflowing for
    // concentrations near the smallest normal number
    let pull = |a: f64, b: f64| {
        let s = a + b;
        let (ta, tb) = ((b / s) * ((s + a) / s), (a / s) * ((s + b) / s));
        let (ua, ub) = (
            special::trigamma_diff(a + 1.0, b),
            special::trigamma_diff(b + 1.0, a),
        );
        let ps = special::trigamma(s + 1.0);
        let (qa, qb, ra, rb) = (da / a, db / b, da / s, db / s);
        let ga = (qa * ta / a + da * ua) - (rb / s + db * ps);
        let gb = (qb * tb / b + db * ub) - (ra / s + da * ps);
        // (each product from its smallest factors up: δ² can overflow)
        let form = (qa * qa * ta + da * (da * ua)) + (qb * qb * tb + db * (db * ub))
            - 2.0 * (ra * rb + da * (db * ps));
        [ga, gb, form]
    };
    if da == 0.0 && db == 0.0 {
        return (0.0, [0.0; 4]);
    }
    let reach = (da.abs() / a1.min(a2)).max(db.abs() / b1.min(b2));
    // where every concentration on the way is at least LARGE, ψ'(x) = 1/x +
    // 1/(2x²) + R(x) term by term: with u = δa/a, v = δb/b, w = δs/s, λ =
    // a/s and μ = b/s, the 1/x terms of δ' H δ are a μ (u - v)² and the
    // 1/(2x²) terms (u² + v² - w²)/2, as u² + λ (v - u)(v + w) (or with the
    // roles swapped, whichever of λ, μ is at most 1/2): where both move by
    // one fraction, the three terms of size δ²/a cancel to those of δ²/a²
    //
    // u - v is `(a2 b1 - a1 b2) / (a b)` at every point `(a, b)` of the
    // segment, from the products' exact difference: as the difference of
    // `u` and `v` rounded, its error of about `ε u` became one of `a ε² u²`
    // in the divergence, which at `1e40` and `t = 1e-7` outweighed it tenfold
    let apart = special::product_difference(a2, b1, a1, b2);
    let pull_large = |a: f64, b: f64| {
        let s = a + b;
        let (lam, mu) = (a / s, b / s);
        let ds = da + db;
        let (u, v, w) = (da / a, db / b, ds / s);
        let u_v = apart / a / b;
        let r = special::trigamma_correction;
        let (ra, rb, rs) = (r(a), r(b), r(s));
        let halves = match lam <= 0.5 {
            true => u * u - lam * u_v * (v + w),
            false => v * v + mu * u_v * (u + w),
        };
        let form = a * mu * u_v * u_v
            + 0.5 * halves
            + ((da * (da * ra) + db * (db * rb)) - ds * (ds * rs));
        let ga = mu * u_v + 0.5 * mu * (u_v + w) / a + (da * ra - ds * rs);
        let gb = -lam * u_v + 0.5 * lam * (w - u_v) / b + (db * rb - ds * rs);
        [ga, gb, form]
    };
    let large = a1.min(a2).min(b1.min(b2)) >= LARGE;
    let at = |a: f64, b: f64| if large { pull_large(a, b) } else { pull(a, b) };
    let [weighted, whole] = special::remainder_integrals(reach, |u| at(a1 + u * da, b1 + u * db));
    let [ga, gb, _] = at(a1, b1);
    (weighted[2], [-ga, -gb, whole[0], whole[1]])
}

by_position!(
    /// [`kl_beta_near`] as one [`Pointwise`] formula ([`beta_near_scalar`]).
    BetaNearDivergence,
    "kl_beta_near",
    beta_near_scalar
);

impl BetaDivergence {
    /// [`kl_beta`]'s forms other than [`kl_beta_near`].
    #[inline(always)]
    fn general(v: &[Lanes; 4], t: &BetaPriorTerms, out: &mut Lanes, d: &mut [Lanes; 4]) {
        let [a2, b2, a1, b1] = v;
        let s1: Lanes = std::array::from_fn(|l| a1[l] + b1[l]);
        let s2: Lanes = std::array::from_fn(|l| a2[l] + b2[l]);
        let q = [a1, b1, &s1];
        let p = [a2, b2, &s2];
        // D(q_k, p_k), ∂D/∂q_k and ∂D/∂p_k of the three pairs by the direct
        // sum, unless a1 and b1 (and so s1) are at least LARGE at every
        // position, where no pair takes it
        let mut div = [[0.0; LANES]; 3];
        let mut dq = [[0.0; LANES]; 3];
        let mut dp = [[0.0; LANES]; 3];
        let direct = (0..LANES).any(|l| a1[l] < LARGE || b1[l] < LARGE);
        if direct {
            for k in 0..3 {
                let (q, p) = (q[k], p[k]);
                let (lg, psi, psi1) = (
                    lgamma_lanes(q),
                    digamma_lanes(q),
                    special::trigamma_lanes(q),
                );
                for l in 0..LANES {
                    let diff = q[l] - p[l];
                    let same = special::mask(diff == 0.0);
                    let value = diff * psi[l] - lg[l] + t.lgamma[k][l];
                    div[k][l] = special::select(same, 0.0, value);
                    dq[k][l] = special::select(same, 0.0, diff * psi1[l]);
                    dp[k][l] = special::select(same, 0.0, t.digamma[k][l] - psi[l]);
                }
            }
        }
        for l in 0..LANES {
            out[l] = (div[0][l] + div[1][l]) - div[2][l];
            d[0][l] = dp[0][l] - dp[2][l];
            d[1][l] = dp[1][l] - dp[2][l];
            d[2][l] = dq[0][l] - dq[2][l];
            d[3][l] = dq[1][l] - dq[2][l];
        }
        // where s1 (at least a1 and b1) is below LARGE, every pair is direct
        if s1.iter().all(|&s| s < LARGE) {
            return;
        }
        let ln_q = q.map(ln_each);
        let (c_q, dc_q) = (
            q.map(lgamma_correction_lanes),
            q.map(digamma_correction_lanes),
        );
        let tc_q = q.map(special::trigamma_correction_lanes);
        for l in 0..LANES {
            if s1[l] < LARGE {
                continue;
            }
            // each pair's divergence, partials and whether its `x` was removed
            let mut pair = [(0.0, 0.0, 0.0, false); 3];
            for k in 0..3 {
                let (x, y) = (q[k][l], p[k][l]);
                let diff = x - y;
                pair[k] = if x < LARGE {
                    (div[k][l], dq[k][l], dp[k][l], false)
                } else if diff == 0.0 {
                    (0.0, 0.0, 0.0, false)
                } else if y >= LARGE {
                    let Some([c_p, dc_p]) = t.large else {
                        unreachable!("y >= LARGE: the prior's corrections were computed")
                    };
                    let value = (special::bd0(y, x) - 0.5 * (y / x).ln())
                        + (diff * dc_q[k][l] - diff / (2.0 * x))
                        + (c_p[k][l] - c_q[k][l]);
                    let d_y =
                        special::ln_ratio(y, x) - 0.5 / y + 0.5 / x + (dc_p[k][l] - dc_q[k][l]);
                    // ψ'(x) from Stirling's terms
                    let psi1 = 1.0 / x + 0.5 / (x * x) + tc_q[k][l];
                    (value, diff * psi1, d_y, false)
                } else {
                    let ln_x = ln_q[k][l];
                    let value = (0.5 - y) * ln_x - diff / (2.0 * x) + diff * dc_q[k][l]
                        - HALF_LN_2PI
                        - c_q[k][l]
                        + t.lgamma[k][l];
                    let d_x = (0.5 - y) / x - y / (2.0 * x * x) + diff * tc_q[k][l];
                    let d_y = t.digamma[k][l] - ln_x + 0.5 / x - dc_q[k][l];
                    (value, d_x, d_y, true)
                };
            }
            let [(va, qa, pa, ra), (vb, qb, pb, rb), (vs, qs, ps, rs)] = pair;
            // what `added_back` adds: the removed `x`s that do not cancel,
            // and its derivatives (0 or ±1) in `a1` and `b1`
            let (a1, b1) = (q[0][l], q[1][l]);
            let (back, back_a, back_b) = match rs {
                true => {
                    let (ka, kb) = (f64::from(u8::from(!ra)), f64::from(u8::from(!rb)));
                    (-(a1 * ka + b1 * kb), -ka, -kb)
                }
                false => {
                    let (ka, kb) = (f64::from(u8::from(ra)), f64::from(u8::from(rb)));
                    (a1 * ka + b1 * kb, ka, kb)
                }
            };
            out[l] = ((va + vb) - vs) + back;
            d[0][l] = pa - ps;
            d[1][l] = pb - ps;
            d[2][l] = (qa - qs) + back_a;
            d[3][l] = (qb - qs) + back_b;
        }
    }
}

/// [`kl_beta`] of the inputs `[a1, b1, a2, b2]`, in their own precision.
fn kl_beta_of<'t, F: Element>(inputs: &[Var<'t, F>; 4]) -> Result<Var<'t, F>> {
    let near = mask_where(inputs, |v| beta_near(v))?;
    let rest = |v: &[Var<'t, F>]| {
        let large = mask_where(v, |v| beta_large(v))?;
        let by_parts = |w: &[Var<'t, F>]| {
            let small_q = mask_where(w, |w| beta_small_q(w))?;
            split(
                w,
                (small_q.clone(), small_q),
                kl_beta_by_digamma_diffs,
                kl_beta_large,
            )
        };
        split(v, (large.clone(), large), by_parts, kl_beta_far)
    };
    split(inputs, (near.clone(), near), kl_beta_near, rest)
}

/// Whether [`kl_beta`] takes [`kl_beta_by_digamma_diffs`] at the inputs
/// `[a1, b1, a2, b2]` of [`beta_large`]: some concentration below
/// [`LARGE`] and both of `q`'s below [`BY_PARTS_FROM`] (so that the largest,
/// which took them by parts, is one of `p`'s). By parts, the slopes in
/// `q`'s concentrations are sums of terms of size `δ/a²` (`δ = b - a`) and
/// corrections at `a` that cancel: with `q`'s far below 1 beside a large
/// `p` their rounding outweighed a slope (in `1e-10` of `KL(Beta(1e-60,
/// 1e-100) || Beta(1e-10, 1e100))` 8.9e43 for 1e20) and the value lost a
/// term (`KL(Beta(1e-100, 1e-60) || Beta(1e-30, 1e30))` 1e50 for 1e70).
/// With differences of digammas every term keeps its digits there; on
/// grids of concentrations from 1e-100 to 1e100 (`q`'s below 1e3) no value
/// or slope is further from mpmath's than by parts, which from `q`'s of 3e3
/// on is the closer one.
fn beta_small_q<F: Element>(v: &[F]) -> bool {
    let below = |x: F, bound: f64| x < F::lit(bound);
    v.iter().any(|&x| below(x, LARGE)) && below(v[0], BY_PARTS_FROM) && below(v[1], BY_PARTS_FROM)
}

/// Whether [`kl_beta`] takes [`kl_beta_large`] at the inputs `[a1, b1, a2,
/// b2]` that [`beta_near`] does not take: both sums finite, and every
/// concentration at least [`LARGE`], or (where [`kl_beta_shifted`] does not
/// take them) the largest at least [`BY_PARTS_FROM`] and at most 1e300
/// times the square of the smallest (so that its terms, such as `δ/a²`,
/// stay in range: `a1 = 1e-300` made them NaN).
fn beta_large<F: Element>(v: &[F]) -> bool {
    let finite = (v[0] + v[1]).is_finite() && (v[2] + v[3]).is_finite();
    let largest = v.iter().fold(F::zero(), |m, &x| if x > m { x } else { m });
    let smallest = v.iter().fold(largest, |m, &x| if x < m { x } else { m });
    let in_range = largest.to_f64().unwrap_or(f64::INFINITY)
        <= 1e300 * smallest.to_f64().unwrap_or(0.0).powi(2);
    finite
        && (v.iter().all(|&x| x >= F::lit(LARGE))
            || (largest >= F::lit(BY_PARTS_FROM)
                && in_range
                && !beta_shifted(v, false)
                && !beta_shifted(v, true)))
}

/// The largest concentration from which [`kl_beta`] takes [`kl_beta_large`]
/// where some are below [`LARGE`] (and the `a`s or the `b`s are not
/// small beside the others): the general form's parts are then of the size
/// of that concentration and cancel to the divergence, which
/// `KL(Beta(1.41e13, 62.3) || Beta(1.19e11, 0.526))` (2.03620) lost from
/// its fourth digit on. Below it their rounding errors stay under about
/// `1e-12`.
const BY_PARTS_FROM: f64 = 1024.0;

/// `KL(Beta(a1, b1) || Beta(a2, b2))` at the inputs of [`beta_large`] (every
/// concentration at least [`LARGE`], or the largest at least
/// [`BY_PARTS_FROM`]): [`divergence_by_parts`] of the rows `(a1, b1)` and
/// `(a2, b2)`. The other forms add terms of size `a ln a` that
/// cancel to one of order 1: `KL(Beta(2e12, 3e12) || Beta(3e12, 4.5e12))`
/// (the same means, the spread 1.5 times smaller; 0.0472674459459...)
/// came out 0.04822, and at `1e100` as 1.2e85. Where a row's
/// concentrations are far apart or `p`'s far below `q`'s, the value and
/// the slopes in `p`'s concentrations are taken from differences of
/// digammas instead, each where its terms are the smaller
/// ([`beta_large_scalar`]).
fn kl_beta_large<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    pointwise::apply(BetaLargeDivergence, &[v[0], v[1], v[2], v[3]])
}

/// [`kl_beta_large`] of one position `[a1, b1, a2, b2]`: the value and the
/// partials in `a1, b1, a2, b2`. The partials in `p`'s concentrations are
/// each taken either by parts or as a difference of digamma differences,
/// `∂a2 = (ψ(a2) - ψ(a2 + b2)) - (ψ(a1) - ψ(a1 + b1))` (and the same with
/// the `a`s and `b`s swapped; [`special::digamma_diff`]), whichever has the
/// smaller terms: the two differences, or by parts about `1 / min(a1, a2)`
/// and `ln(a2 / m)` with `m = a1 (a2 + b2) / (a1 + b1)`. Each form loses
/// what the other keeps. By parts, where `p`'s concentrations are
/// far below `q`'s, `p`'s terms of size `1/a2` that cancel among themselves
/// (to about `b2/a2²` where `b2` is small beside `a2`) took in `q`'s part
/// of the slope before they cancelled, and lost it: the slope of
/// `KL(Beta(1e10, 1e-30) || Beta(1e-100, 1e-60))` in `1e-60` came out -1e20
/// where it is 1e30, and that of `KL(Beta(1e-10, 1e5) || Beta(12, 1e100))`
/// in `1e100` 8.4e-7 of itself off. The differences cancel where `p` and
/// `q` share their proportions, where by parts keeps the digits: at
/// `KL(Beta(12, 1e30) || Beta(6, 5e29))` the slope in `5e29` from them is
/// all rounding error. On grids of concentrations from 1e-100 to 1e100
/// (and of `p`'s as `q`'s moved by factors from `1 + 1e-6` to 3), against
/// mpmath at 450 digits, this choice is never more than 10 times further
/// from mpmath than the closer of the two forms (and 1e-12 of the slope)
/// but where both are within rounding of the terms the slope cancels.
///
/// The value is chosen the same way, by parts or as `ln B(a2, b2) - ln
/// B(a1, b1) + (a1 - a2) (ψ(a1) - ψ(a1 + b1)) + (b1 - b2) (ψ(b1) - ψ(a1 +
/// b1))`, whichever has the smaller terms: by parts, the spreads `bd0(x,
/// y)/x` of a row whose concentrations are far apart are far larger than
/// the divergence and cancel against the totals': `KL(Beta(1e10, 1e-30) ||
/// Beta(1e100, 1e30))` came out half of itself, and at `1e5` in place of
/// `1e10` 1e-5 of itself off. On the grid of concentrations from 1e-100 to
/// 1e100 the value moved at 1001 positions, 66 of them closer to mpmath's
/// by more than 10 times, none further, every one within 1e-12 of it; on
/// the grid of `p`'s moved from `q`'s by a factor none moved.
fn beta_large_scalar([a1, b1, a2, b2]: [f64; 4]) -> (f64, [f64; 4]) {
    use special::digamma_diff;
    let (mut dq, mut dp, mut terms) = ([0.0; 2], [0.0; 2], 0.0);
    let mut value = divergence_by_parts(&[a1, b1], &[a2, b2], &mut dq, &mut dp, &mut terms);
    let (ln_s1, ln_s2) = ((a1 + b1).ln(), (a2 + b2).ln());
    // the size of the terms of the slope by parts in `y` (of `p`) beside `x`
    let by_parts_terms = |x: f64, y: f64| {
        let proportions = (y.ln() - ln_s2) - (x.ln() - ln_s1);
        (1.0 / x.min(y)).max(proportions.abs())
    };
    let (q_a, p_a) = (digamma_diff(a1, b1), digamma_diff(a2, b2));
    if q_a.abs() + p_a.abs() <= by_parts_terms(a1, a2) {
        dp[0] = p_a - q_a;
    }
    let (q_b, p_b) = (digamma_diff(b1, a1), digamma_diff(b2, a2));
    if q_b.abs() + p_b.abs() <= by_parts_terms(b1, b2) {
        dp[1] = p_b - q_b;
    }
    // the value the same way: by parts, or `ln B(a2, b2) - ln B(a1, b1) +
    // (a1 - a2) (ψ(a1) - ψ(a1 + b1)) + (b1 - b2) (ψ(b1) - ψ(a1 + b1))`
    let differences = [
        special::lbeta(a2, b2),
        -special::lbeta(a1, b1),
        (a1 - a2) * q_a,
        (b1 - b2) * q_b,
    ];
    if differences.iter().fold(0.0, |m: f64, t| m.max(t.abs())) < terms {
        value = differences.iter().sum();
    }
    (value, [dq[0], dq[1], dp[0], dp[1]])
}

/// `KL(Dir(a) || Dir(b))` for one row of concentrations (every one at
/// least [`LARGE`], or for a Beta those of [`beta_large`]; their sums
/// finite), in three parts that are each
/// small where the divergence is; its partials in `a` and `b` are written
/// to `grad_a` and `grad_b`. The divergence is the Bregman divergence of
/// `ln B(x) = Σ ln Γ(x_i) - ln Γ(x0)` (`x0 = Σ x_i`) from `a` to `b`, and
/// with `ln Γ(x) = (x - 1/2) ln x - x + ln(2π)/2 + C(x)` the sum of the
/// divergences of its parts:
/// - of `Σ x_i ln x_i - x0 ln x0`, of degree 1, `Σ bd0(b_i, m_i)` with `m
///   = b0 a / a0` (`b`'s total in `a`'s proportions): 0 where the
///   proportions agree. `b_i - m_i = (b_i a0 - a_i b0) / a0` is taken from
///   the products' exact difference and the totals' compensated sums: one
///   rounding of `m_i` alone makes an error of about `ε² b_i`, which
///   outweighs the whole divergence from concentrations of about 1e32 on
///   (at `1e100`, 1e68 against a true 3.4e68 of inputs whose proportions
///   differ in their last bits);
/// - of `-(Σ ln x_i - ln x0)/2`, `(Σ φ(b_i/a_i) - φ(b0/a0))/2` with `φ(r) =
///   r - 1 - ln r` (`bd0(a_i, b_i)/a_i`), of order 1 where every
///   concentration moves by one factor;
/// - of the corrections `Σ C(x_i) - C(x0)`, each `C(b_i) - C(a_i) - C'(a_i)
///   (b_i - a_i)`, of the size of `1/a` (a Taylor remainder where the two
///   are near each other).
///
/// The partials are the same parts' derivatives: in `b_i`, `ln(b_i/m_i) +
/// (δ_i/(a_i b_i) - δ0/(a0 b0))/2 + C'(b_i) - C'(a_i) - C'(b0) + C'(a0)`;
/// in `a_i`, `-((b_i - m_i)/a_i + (δ_i/a_i² - δ0/a0²)/2 + C''(a_i) δ_i -
/// C''(a0) δ0)` (`-H δ`, `H` the Hessian of `ln B` at `a`), with `δ = b -
/// a`. The largest magnitude of the terms it adds up is written to
/// `terms` (the second and third parts' two terms cancel where the
/// concentrations of a row are far apart).
fn divergence_by_parts(
    a: &[f64],
    b: &[f64],
    grad_a: &mut [f64],
    grad_b: &mut [f64],
    terms: &mut f64,
) -> f64 {
    use special::{bd0, digamma_correction as dc, trigamma_correction as tc};
    let largest = |x: &[f64]| x.iter().fold(0.0f64, |m, &v| m.max(v));
    let (ua, ub) = (
        special::power_of_two_below(largest(a)),
        special::power_of_two_below(largest(b)),
    );
    // the totals of the scaled rows (exact scalings), with their rounding
    // errors
    let (sa, ea) = compensated_sum(a.iter().map(|&x| x / ua));
    let (sb, eb) = compensated_sum(b.iter().map(|&x| x / ub));
    let (ta, tb) = (sa + ea, sb + eb);
    let (a0, b0) = (ua * ta, ub * tb);
    // what the totals lose as they round, which the sums hold
    let (ea0, eb0) = (ua * ((sa - ta) + ea), ub * ((sb - tb) + eb));
    let (d0, w) = (b0 - a0, (b0 - a0) / a0);
    let (mut proportions, mut spreads, mut corrections) = (0.0, 0.0, 0.0);
    for i in 0..a.len() {
        let (x, y) = (a[i], b[i]);
        let (xs, ys) = (x / ua, y / ub);
        let cross = special::product_difference(ys, sa, xs, sb) + (ys * ea - xs * eb);
        let apart = ub * (cross / (sa + ea));
        let m = b0 * (x / a0);
        proportions += deviance(y, m, apart);
        spreads += bd0(x, y) / x;
        corrections += correction_divergence(x, y);
        let (d, u) = (y - x, (y - x) / x);
        grad_b[i] = ln_deviate(y, m, apart)
            + 0.5 * (u / y - w / b0)
            + ((dc(y) - dc(x)) - (dc(b0) - dc(a0)));
        grad_a[i] = -(apart / x + 0.5 * (u / x - w / a0) + (tc(x) * d - tc(a0) * d0));
    }
    // the totals' terms, and their partials, to first order in the totals'
    // rounding: where a row's concentrations are far apart (1e-20 beside 1)
    // its total rounds to the larger, and with `b0` far from `a0` the
    // terms of the totals then miss about `b0 ψ'(a0) ea0`, of the size of
    // the divergence (`KL(Beta(1e-20, 1) || Beta(1, 1e150))` came out
    // 1e130, where it is 1.645e130; at `Beta(1e-20, 1e-3)` the slope in
    // `1e-3` came out -1e136 for -2e139)
    let mut rounding = 0.0;
    if ea0 != 0.0 || eb0 != 0.0 {
        let (tc_a0, inv_a0) = (tc(a0), 1.0 / a0);
        let across = 0.5 * inv_a0 * inv_a0 + tc_a0;
        rounding = (0.5 * w * inv_a0 + tc_a0 * d0) * ea0 - (0.5 * w / b0 + (dc(b0) - dc(a0))) * eb0;
        let of_a0 = special::tetragamma_correction(a0) * d0 - tc_a0 - (0.5 + w) * inv_a0 * inv_a0;
        let shift_a = of_a0 * ea0 + across * eb0;
        let shift_b = across * ea0 - (0.5 / (b0 * b0) + tc(b0)) * eb0;
        grad_a.iter_mut().for_each(|g| *g += shift_a);
        grad_b.iter_mut().for_each(|g| *g += shift_b);
    }
    let (spread0, correction0) = (bd0(a0, b0) / a0, correction_divergence(a0, b0));
    *terms = [
        proportions,
        0.5 * spreads,
        0.5 * spread0,
        corrections,
        correction0,
        rounding,
    ]
    .iter()
    .fold(0.0, |m: f64, t| m.max(t.abs()));
    proportions + 0.5 * (spreads - spread0) + (corrections - correction0) + rounding
}

/// `C(y) - C(x) - C'(x) (y - x)` for the correction `C` of Stirling's
/// series ([`special::lgamma_correction`]): where `x` and `y` are
/// [`shapes_near`], the Taylor remainder `δ² ∫₀¹ (1 - u) C''(x + u δ) du`
/// (the difference of the two values, of the size of `1/(12x)`, would
/// leave an error of about `ε/x` in a divergence of `δ²/x³`).
fn correction_divergence(x: f64, y: f64) -> f64 {
    use special::{digamma_correction, lgamma_correction, trigamma_correction};
    let d = y - x;
    if shapes_near(x, y) {
        let reach = d.abs() / x.min(y);
        d * (d * special::taylor_remainder(reach, |u| trigamma_correction(x + u * d)))
    } else {
        (lgamma_correction(y) - lgamma_correction(x)) - digamma_correction(x) * d
    }
}

/// The sum of `xs` as its rounded value and the rounding errors of the
/// additions (Neumaier's compensated sum): together within about `ε²` of
/// the total, relative to the largest partial sum.
fn compensated_sum(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut sum, mut error) = (0.0f64, 0.0);
    for x in xs {
        let t = sum + x;
        error += if sum.abs() >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    (sum, error)
}

/// `bd0(y, m) = m ((1 + δ) ln(1 + δ) - δ)` with `δ = d / m`, given `d = y -
/// m` computed as such: as `m (δ² - (1 + δ)(δ - ln(1 + δ)))` where `|δ| <
/// 1/2` (no digits lost to `y - m` rounded), else [`special::bd0`].
fn deviance(y: f64, m: f64, d: f64) -> f64 {
    let delta = d / m;
    if delta.abs() < 0.5 {
        m * (delta * delta - (1.0 + delta) * super::bernoulli::log1p_excess(delta))
    } else {
        special::bd0(y, m)
    }
}

/// `ln(y / m)`, the derivative of [`deviance`] in `y`, given `d = y - m`
/// computed as such.
fn ln_deviate(y: f64, m: f64, d: f64) -> f64 {
    let delta = d / m;
    if delta.abs() < 0.5 {
        delta.ln_1p()
    } else {
        special::ln_ratio(y, m)
    }
}

by_position!(
    /// [`kl_beta_large`] as one [`Pointwise`] formula ([`beta_large_scalar`]).
    BetaLargeDivergence,
    "kl_beta_large",
    beta_large_scalar
);

/// Whether [`kl_beta`] takes [`kl_beta_near`] at the inputs `[a1, b1, a2,
/// b2]`: both pairs of concentrations [`shapes_near`] each other (and so
/// their sums), and `q`'s below 1e150 (beyond, `ψ'(a) - ψ'(a + b)`, about
/// `b / a²`, leaves the range).
fn beta_near<F: Element>(v: &[F]) -> bool {
    let larger = if v[0] < v[1] { v[1] } else { v[0] };
    shapes_near(v[0], v[2]) && shapes_near(v[1], v[3]) && larger < F::lit(1e150)
}

/// `KL(Beta(a1, b1) || Beta(a2, b2))` between near concentrations
/// ([`beta_near`]), where the other forms' terms cancel: the remainder of
/// the first-order Taylor polynomial of `ln B` at `(a1, b1)`, `∫₀¹ (1 - u)
/// δ' H(u) δ du` with `δ = (a2 - a1, b2 - b1)` and `H` the Hessian of `ln
/// B` at `(a1, b1) + u δ` ([`special::remainder_integrals`]), whose
/// entries `ψ'(a) - ψ'(a + b)` ([`special::trigamma_diff`]), `ψ'(b) -
/// ψ'(a + b)` and `-ψ'(a + b)` keep their relative accuracy. Where every
/// concentration is at least [`LARGE`], `δ' H δ` is taken term by term of
/// `ψ'(x) = 1/x + 1/(2x²) + R(x)`: where both concentrations move by one
/// fraction `t`, its terms of size `δ²/a` cancel to the divergence (about
/// `t²/4`), which was 0 at `KL(Beta(1e100, 1e100) || Beta(1.05e100,
/// 1.05e100))` (6.05e-4) and 3.7e-4 of itself off at `1e12` and `t =
/// 1e-6` (against mpmath), and whose `1/x` terms are exactly `a μ (u -
/// v)²` (`u = δa/a`, `v = δb/b`, `μ = b/(a + b)`). Its partials in `p`'s
/// concentrations are `∫₀¹ H(u) δ du` and in `q`'s `-H(0) δ`.
/// (As `D(a1, a2) + D(b1, b2) - D(a1 + b1, a2 + b2)` of three remainders
/// the first and last would agree in most of their digits where `b` is
/// small beside `a`: `ψ'(a)` and `ψ'(a + b)` differ by about `b ψ''(a)`.)
fn kl_beta_near<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    pointwise::apply(BetaNearDivergence, &[v[0], v[1], v[2], v[3]])
}

/// [`kl_beta`]'s forms other than [`kl_beta_near`], from the inputs `[a1,
/// b1, a2, b2]`.
fn kl_beta_far<'t, F: Element>(inputs: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    let inputs = [inputs[0], inputs[1], inputs[2], inputs[3]];
    // the `a`s (or, flipped, the `b`s) below LARGE and 16 times below the
    // others, `b1` at most SHIFTED_MAX
    let shifts = beta_shifted::<F>;
    let small_a = mask_where(&inputs, |v| shifts(v, false))?;
    // where the `a`s are not the small ones, the `b`s may be (a mask from
    // the inputs `rest` is given: one of the whole would not fit the
    // elements `split` hands it)
    let rest = |v: &[Var<'t, F>]| {
        let small_b = mask_where(v, |v| shifts(v, true))?;
        split(
            v,
            (small_b.clone(), small_b),
            |w| kl_beta_shifted([w[1], w[0], w[3], w[2]]),
            kl_beta_general,
        )
    };
    split(
        &inputs,
        (small_a.clone(), small_a.clone()),
        |v| kl_beta_shifted([v[0], v[1], v[2], v[3]]),
        rest,
    )
}

/// Whether [`kl_beta_of`] takes [`kl_beta_shifted`] at the inputs `v = [a1,
/// b1, a2, b2]`: the `a`s (with `flip`, the `b`s) below [`LARGE`] and 16
/// times below the others, `b1` (with `flip`, `a1`) at most
/// [`SHIFTED_MAX`].
fn beta_shifted<F: Element>(v: &[F], flip: bool) -> bool {
    let (a1, b1, a2, b2) = match flip {
        false => (v[0], v[1], v[2], v[3]),
        true => (v[1], v[0], v[3], v[2]),
    };
    let small = if a1 > a2 { a1 } else { a2 };
    let low = if b1 < b2 { b1 } else { b2 };
    small < F::lit(LARGE) && small * F::lit(16.0) <= low && b1 <= F::lit(SHIFTED_MAX)
}

/// The largest `b1` of [`kl_beta_shifted`]: its gradient in `b1` has the
/// factor `ψ'(b1) - ψ'(b1 + a1)`, about `a1 / b1²`, which underflows for a
/// `b1` near 1e300 where the gradient (about `a1 / b1`) does not.
const SHIFTED_MAX: f64 = 1e100;

/// `KL(Beta(a1, b1) || Beta(a2, b2))` from the inputs `[a1, b1, a2, b2]`
/// where the `a`s are small beside the `b`s: `D(a1, a2) + (ln Γ(b1 + a1) -
/// ln Γ(b1)) - (ln Γ(b2 + a2) - ln Γ(b2)) - (a1 - a2) ψ(a1 + b1) + (b1 -
/// b2) (ψ(b1) - ψ(b1 + a1))`, with `D(a1, a2)` the direct sum `(a1 - a2)
/// ψ(a1) - ln Γ(a1) + ln Γ(a2)` and the differences of `ln Γ` and of `ψ`
/// taken as such
/// ([`Var::lgamma_diff`], [`Var::digamma_diff`]), each of the size of the
/// `a`s. `D` is one op, whose derivative in `a1` is `(a1 - a2) ψ'(a1)`:
/// as the sum of its terms' derivatives, `ψ(a1) - ψ(a1)` (about `∓1/a1`
/// for a tiny `a1`) with the other terms' added in between, `d/da1` was
/// 1.5e-6 off at `KL(Beta(1e-10, 3) || Beta(1e-10, 1))`. Swapping the `a`s and `b`s gives the
/// same divergence with the `b`s as the small ones.
fn kl_beta_shifted<F: Element>([a1, b1, a2, b2]: [Var<'_, F>; 4]) -> Result<Var<'_, F>> {
    let da = a1.try_sub(a2)?;
    let t = a1.shape_divergence_direct(a2)?;
    let t = t
        .try_add(b1.lgamma_diff(a1)?)?
        .try_sub(b2.lgamma_diff(a2)?)?;
    let t = t.try_sub(da.try_mul(a1.try_add(b1)?.digamma())?)?;
    t.try_add(b1.try_sub(b2)?.try_mul(b1.digamma_diff(a1)?)?)
}

/// The second and third forms of [`kl_beta`] from the inputs `[a1, b1,
/// a2, b2]`.
fn kl_beta_general<'t, F: Element>(inputs: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    let by_divergences = |v: &[Var<'t, F>]| {
        let (a1, b1, a2, b2) = (v[0], v[1], v[2], v[3]);
        let (da, ra) = pair_divergence(a1, a2)?;
        let (db, rb) = pair_divergence(b1, b2)?;
        let (ds, rs) = pair_divergence(a1.try_add(b1)?, a2.try_add(b2)?)?;
        let kl = da.try_add(db)?.try_sub(ds)?;
        match added_back(&[(a1, ra), (b1, rb)], rs, None)? {
            Some(back) => kl.try_add(back),
            None => Ok(kl),
        }
    };
    let kl = by_divergences(inputs)?;
    let rounds = mask_where(inputs, |x| {
        let x = |k: usize| x[k].to_f64().unwrap_or(f64::NAN);
        sum_rounds(x(0), x(1)) || sum_rounds(x(2), x(3))
    })?;
    let value = kl.value();
    if value.data().iter().all(|v| v.is_finite()) && rounds.data().iter().all(|&m| m == F::zero()) {
        return Ok(kl);
    }
    let rounds = rounds.broadcast_to(value.shape())?;
    let other = value.data().iter().zip(rounds.data()).map(|(v, &r)| {
        match v.is_finite() && r == F::zero() {
            true => F::zero(),
            false => F::one(),
        }
    });
    let other = Tensor::from_vec(other.collect(), value.shape())?;
    split(
        inputs,
        (other.clone(), other),
        kl_beta_by_digamma_diffs,
        by_divergences,
    )
}

/// `KL(Beta(a1, b1) || Beta(a2, b2))` from the inputs `[a1, b1, a2, b2]` as
/// `ln B(a2, b2) - ln B(a1, b1) + (a1 - a2) (ψ(a1) - ψ(a1 + b1)) + (b1 -
/// b2) (ψ(b1) - ψ(a1 + b1))`, the differences of ψ taken as such
/// ([`Var::digamma_diff`]).
fn kl_beta_by_digamma_diffs<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    let (a1, b1, a2, b2) = (v[0], v[1], v[2], v[3]);
    let t = a2.lbeta(b2)?.try_sub(a1.lbeta(b1)?)?;
    let t = t.try_add(a1.try_sub(a2)?.try_mul(a1.digamma_diff(b1)?)?)?;
    t.try_add(b1.try_sub(b2)?.try_mul(b1.digamma_diff(a1)?)?)
}

/// Whether `a + b` (in `f64`) drops digits of the smaller term: one is
/// below `2⁻²⁶` of the other (more than half its digits below the sum's
/// last) and the sum rounds.
fn sum_rounds(a: f64, b: f64) -> bool {
    let (small, large) = if a < b { (a, b) } else { (b, a) };
    let s = a + b;
    small < large * (1.0 / 67_108_864.0) && s.is_finite() && s - large != small
}

/// The first arguments that [`pair_divergence`] removed and that do not
/// cancel in `Σ D(x_i, y_i) - D(Σ x_i, Σ y_i)`: with `r_i` the parts'
/// masks and `r0` the sum's, `Σ x_i r_i - (Σ x_i) r0`, written without the
/// sum where `r0` is 1 (`-Σ x_i (1 - r_i)`) so that nothing of the size of
/// `Σ x_i` is left to round. `axis` sums the parts along an axis of one
/// tensor (a Dirichlet's) instead of over the list. `None` where that is 0
/// throughout (every mask 0, or every mask 1: the usual cases), so that
/// nothing is added.
fn added_back<'t, F: Element>(
    parts: &[(Var<'t, F>, Tensor<F>)],
    r0: Tensor<F>,
    axis: Option<usize>,
) -> Result<Option<Var<'t, F>>> {
    let all = |m: &Tensor<F>, v: F| m.data().iter().all(|&x| x == v);
    for v in [F::zero(), F::one()] {
        if all(&r0, v) && parts.iter().all(|(_, r)| all(r, v)) {
            return Ok(None);
        }
    }
    let mut kept: Option<Var<'t, F>> = None;
    let mut dropped: Option<Var<'t, F>> = None;
    for (x, r) in parts {
        let not = r.map(|m| F::one() - m);
        let constant = |m: Tensor<F>| x.tape().constant(m);
        let (k, d) = (x.try_mul(constant(r.clone()))?, x.try_mul(constant(not))?);
        let (k, d) = match axis {
            Some(axis) => (k.sum_axis(axis, false)?, d.sum_axis(axis, false)?),
            None => (k, d),
        };
        kept = Some(match kept {
            Some(t) => t.try_add(k)?,
            None => k,
        });
        dropped = Some(match dropped {
            Some(t) => t.try_add(d)?,
            None => d,
        });
    }
    let (Some(kept), Some(dropped)) = (kept, dropped) else {
        unreachable!("at least one part")
    };
    Ok(Some((-dropped).choose(r0, kept)?))
}

/// The Dirichlet distribution over the simplex (last axis).
///
/// # Density
/// `ln p(x) = Σ (α_i - 1) ln x_i + ln Γ(Σ α_i) - Σ ln Γ(α_i)`.
///
/// # Sampling
/// `x = g / Σ g` with `g_i ~ Gamma(α_i, 1)`, each carrying its implicit
/// gradient, so `rsample` is differentiable in `α`. Where a concentration
/// is below 0.1 the Gamma draws can underflow, and the draws are
/// normalized from their logarithms, `x = e^(ln g - max) / Σ e^(ln g - max)`,
/// with the implicit derivatives of `ln g`; a component below the smallest
/// normal number is that number.
///
/// # Parameters
/// - `concentration`: shape `batch + [k]`, `k >= 2`, finite, `> 0`, each
///   row adding up to a finite number.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Dirichlet::new(tape.var(Tensor::vector(&[1.0, 2.0, 3.0])))?;
/// let x = d.rsample(&mut StdRng::seed_from_u64(0))?;
/// assert!((x.value().data().iter().sum::<f64>() - 1.0).abs() < 1e-12);
/// assert!(d.log_prob(x)?.item()?.is_finite());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Non-positive concentrations, or a row of them that adds up past the
/// largest float; fewer than 2 classes; `log_prob` at a value off the
/// simplex (entries outside (0, 1] or a sum other than 1).
#[derive(Clone, Copy)]
pub struct Dirichlet<'t, F: Element> {
    concentration: Var<'t, F>,
}

impl<'t, F: Element> Dirichlet<'t, F> {
    /// From concentrations along the last axis.
    pub fn new(concentration: Var<'t, F>) -> Result<Self> {
        let shape = concentration.shape();
        if shape.last().copied().unwrap_or(0) < 2 {
            return Err(Error::invalid(
                "Dirichlet",
                format!(
                    "concentration needs a last axis of at least 2 classes, got shape {shape:?}"
                ),
            ));
        }
        check_positive("Dirichlet", "concentration", &concentration)?;
        // the density, moments, draws and divergences all need the sums
        let k = shape[shape.len() - 1];
        let values = concentration.value();
        let overflowing = values.data().chunks(k).find(|row| {
            let total = row.iter().fold(F::zero(), |s, &c| s + c);
            !total.is_finite()
        });
        if let Some(row) = overflowing {
            let largest = row.iter().fold(F::zero(), |m, &c| m.max(c));
            return Err(Error::InvalidParameter {
                distribution: "Dirichlet",
                parameter: "concentration",
                value: largest.to_f64().unwrap_or(f64::NAN),
                reason: "its row (the last axis) adds up past the largest float",
            });
        }
        Ok(Dirichlet { concentration })
    }

    /// The concentrations.
    pub fn concentration(&self) -> Var<'t, F> {
        self.concentration
    }

    fn axis(&self) -> usize {
        self.concentration.shape().len() - 1
    }

    /// `ln p(x)` at a point `x` of the simplex (checked by the caller):
    /// `Σ (α_i - 1) ln x_i - ln B(α)`.
    fn log_density(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let terms = (self.concentration - F::one()).try_mul(x.ln())?;
        terms
            .sum_axis(terms.shape().len() - 1, false)?
            .try_sub(self.ln_norm()?)
    }

    /// `ln B(α) = Σ ln Γ(α_i) - ln Γ(α0)`, `α0 = Σ α_i`, in one of three
    /// forms by row:
    /// - where the concentrations spread over more than [`pieces_spread`],
    ///   the sum of the stick-breaking pieces'
    ///   `ln B(α_k, t_k)` ([`stick_pieces`]), which telescopes to it: each
    ///   is one [`Var::lbeta`], which keeps its digits where a large
    ///   concentration meets small ones; there the sums below cancel `ln Γ`
    ///   of the large one against `ln Γ(α0)`, and from about 10³⁰ on lose
    ///   every digit;
    /// - where all are at least [`LARGE`], each `ln Γ` written as Stirling's
    ///   leading terms plus its correction `C`, so that the terms that grow
    ///   with `α` cancel analytically, leaving `Σ (α_i - 1/2) ln(α_i/α0) -
    ///   (k - 1) ln(α0)/2 + (k - 1) ln(2π)/2 + Σ C(α_i) - C(α0)`;
    /// - else the direct sum.
    fn ln_norm(&self) -> Result<Var<'t, F>> {
        let k = self.classes();
        let large = |v: &[Var<'t, F>]| {
            let (a, axis) = (v[0], last_axis(v));
            let a0 = a.sum_axis(axis, true)?;
            let ratios = (a - F::lit(0.5)).try_mul(a.try_div(a0)?.ln())?;
            let a0 = a0.sum_axis(axis, false)?;
            let t = ratios
                .sum_axis(axis, false)?
                .try_sub(a0.ln() * ((k - F::one()) * F::lit(0.5)))?;
            let t = t.try_add(a.lgamma_correction().sum_axis(axis, false)?)?;
            Ok(t.try_sub(a0.lgamma_correction())? + (k - F::one()) * F::lit(HALF_LN_2PI))
        };
        let small = |v: &[Var<'t, F>]| Self::ln_norm_direct(v[0], last_axis(v));
        let sums =
            |v: &[Var<'t, F>]| split(&[v[0]], Self::large_rows_of(&v[0].value())?, large, small);
        let sticks = |v: &[Var<'t, F>]| {
            stick_pieces("log_prob", v[0])?
                .lbeta()?
                .sum_axis(last_axis(v), false)
        };
        let a = self.concentration;
        by_spread("log_prob", a, a, pieces_spread(), sticks, sums)
    }

    /// `Σ ln Γ(α_i) - ln Γ(α0)` summed directly.
    fn ln_norm_direct(a: Var<'t, F>, axis: usize) -> Result<Var<'t, F>> {
        let a0 = a.sum_axis(axis, false)?;
        a.lgamma().sum_axis(axis, false)?.try_sub(a0.lgamma())
    }

    /// The number of classes, as `F`.
    fn classes(&self) -> F {
        F::from_usize(*self.concentration.shape().last().unwrap_or(&0)).unwrap_or_else(F::nan)
    }

    /// The masks for [`split`] of the rows of the concentrations `a` that
    /// are all at least [`LARGE`]: over the concentrations, and over the
    /// rows.
    fn large_rows_of(a: &Tensor<F>) -> Result<(Tensor<F>, Tensor<F>)> {
        let k = *a.shape().last().unwrap_or(&1);
        let rows: Vec<F> = a
            .data()
            .chunks(k.max(1))
            .map(|row| {
                let large = row.iter().all(|&x| x >= F::lit(LARGE));
                if large { F::one() } else { F::zero() }
            })
            .collect();
        row_masks(rows, a.shape())
    }
}

/// The masks for [`split`] of a tensor of `shape` from one value (0 or 1)
/// per row along its last axis: over the elements, and over the rows.
fn row_masks<F: Element>(rows: Vec<F>, shape: &[usize]) -> Result<(Tensor<F>, Tensor<F>)> {
    let k = *shape.last().unwrap_or(&1);
    let in_mask: Vec<F> = rows
        .iter()
        .flat_map(|&m| std::iter::repeat_n(m, k))
        .collect();
    Ok((
        Tensor::from_vec(in_mask, shape)?,
        Tensor::from_vec(rows, &shape[..shape.len() - 1])?,
    ))
}

impl<'t, F: Element> Distribution<'t, F> for Dirichlet<'t, F> {
    super::kl::builtin_kl!(Dirichlet => kl_dirichlet);

    fn name(&self) -> &'static str {
        "Dirichlet"
    }
    fn events_on_the_simplex(&self) -> bool {
        true
    }
    fn tape(&self) -> &'t Tape<F> {
        self.concentration.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Dirichlet::log_prob", &self.concentration, &x)?;
        let k = *self.concentration.shape().last().unwrap_or(&0);
        super::check_simplex("Dirichlet", "Dirichlet::log_prob", &x, k)?;
        if F::DTYPE == "F32" {
            let inputs = [self.concentration, x];
            let op = InF64::new(
                "dirichlet_log_density",
                |v| {
                    Dirichlet {
                        concentration: v[0],
                    }
                    .log_density(v[1])
                },
                &inputs,
            );
            return x.tape.apply(op, &inputs);
        }
        self.log_density(x)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let mut shape = sample_shape(n, &self.batch_shape());
        shape.push(*self.concentration.shape().last().unwrap_or(&0));
        let small = self
            .concentration
            .value()
            .data()
            .iter()
            .any(|&c| c < F::lit(LOG_SPACE_BELOW));
        if small {
            let (l, logs) = ln_std_gamma_rsample(self.concentration, &shape, rng)?;
            let k = shape[shape.len() - 1];
            let lost = logs
                .chunks(k)
                .position(|row| row.iter().all(|&l| l == f64::NEG_INFINITY));
            if let Some(r) = lost {
                let c = self.concentration.value().broadcast_to(&shape)?;
                return Err(beyond_logarithms("Dirichlet", &c.data()[r * k..][..k]));
            }
            return self.tape().apply(NormalizeLogs { logs }, &[l]);
        }
        let g = std_gamma_rsample(self.concentration, &shape, rng)?;
        self.tape().apply(NormalizeRows, &[g])
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = ln B(α) + (α0 - k) ψ(α0) - Σ (α_i - 1) ψ(α_i). For rows whose
    // concentrations are all at least `LARGE`, with ln Γ and ψ written as
    // Stirling's terms plus corrections (C, C'), the growing terms cancel:
    // H = Σ [ln(α_i/α0)/2 - 1/(2α_i) + C(α_i) - (α_i - 1)(C'(α_i) - C'(α0))]
    //   + k/(2α0) - (k - 1) ln(α0)/2 - C(α0) + (k - 1)(ln(2π) + 1)/2
    //
    // Rows whose concentrations spread over more than `entropy_spread` take
    // the stick-breaking pieces `v_j ~ Beta(α_j, t_j)`, `t_j = Σ_{i>j} α_i`,
    // whose map to the simplex has Jacobian `Π_j (1 - v_j)^(k - 1 - j)`
    // (`j` from 1): H = Σ_j [H(Beta(α_j, t_j)) + (k - 1 - j)(ψ(t_j) -
    // ψ(α_j + t_j))], terms of their own size with the Beta's forms, where
    // the sums above cancel `ln Γ` of a large concentration against the
    // others (`H(Dir([3, 1e10, 1]))` was 9e-7 off).
    fn entropy(&self) -> Result<Var<'t, F>> {
        if F::DTYPE == "F32" {
            let inputs = [self.concentration];
            let op = InF64::new(
                "dirichlet_entropy",
                |v| {
                    Dirichlet {
                        concentration: v[0],
                    }
                    .entropy()
                },
                &inputs,
            );
            return self.concentration.tape.apply(op, &inputs);
        }
        let (axis, k) = (self.axis(), self.classes());
        let a = self.concentration;
        let classes = *a.shape().last().unwrap_or(&0);
        // over two categories the Dirichlet is the Beta of its one stick,
        // whose entropy takes the difference of the two digammas whole
        // where the sums over categories lose it (the gradient at `[x,
        // 1e10]` was 2e-5 off)
        if classes == 2 {
            return stick_pieces("entropy", a)?.entropy()?.sum_axis(axis, false);
        }
        let sticks = |v: &[Var<'t, F>]| -> Result<Var<'t, F>> {
            let (a, axis) = (v[0], last_axis(v));
            let pieces = stick_pieces("entropy", a)?;
            let (heads, tails) = (pieces.concentration1, pieces.concentration0);
            let weights = (0..classes - 1)
                .map(|j| F::from_usize(classes - 2 - j).unwrap_or_else(F::nan))
                .collect();
            let weights = a
                .tape()
                .constant(Tensor::from_vec(weights, &[classes - 1])?);
            let jacobian = tails.digamma_diff(heads)?.try_mul(weights)?;
            pieces.entropy()?.try_add(jacobian)?.sum_axis(axis, false)
        };
        let large = |v: &[Var<'t, F>]| {
            let (a, axis) = (v[0], last_axis(v));
            let a0 = a.sum_axis(axis, true)?;
            let slopes = a.digamma_correction().try_sub(a0.digamma_correction())?;
            let each = a.try_div(a0)?.ln() * F::lit(0.5) - a.scalar_div(F::lit(0.5))
                + a.lgamma_correction();
            let each = each.try_sub((a - F::one()).try_mul(slopes)?)?;
            let a0 = a0.sum_axis(axis, false)?;
            let whole = a0.scalar_div(k * F::lit(0.5))
                - a0.ln() * ((k - F::one()) * F::lit(0.5))
                - a0.lgamma_correction();
            let h = each.sum_axis(axis, false)?.try_add(whole)?;
            Ok(h + (k - F::one()) * F::lit(HALF_LN_2PI + 0.5))
        };
        let small = |v: &[Var<'t, F>]| {
            let (a, axis) = (v[0], last_axis(v));
            let a0 = a.sum_axis(axis, false)?;
            let h = Self::ln_norm_direct(a, axis)?.try_add((a0 - k).try_mul(a0.digamma())?)?;
            h.try_sub((a - F::one()).try_mul(a.digamma())?.sum_axis(axis, false)?)
        };
        let sums = |v: &[Var<'t, F>]| {
            let a = v[0];
            split(&[a], Self::large_rows_of(&a.value())?, large, small)
        };
        // rows adding up to less than TINY_SUM as one op, whichever their
        // spread: there the slopes of both forms above are `inf - inf`
        let tiny = rows_where("entropy", a, a, |x, _| {
            x.iter().fold(F::zero(), |s, &c| s + c) < F::lit(TINY_SUM)
        })?;
        let rest =
            |v: &[Var<'t, F>]| by_spread("entropy", v[0], v[0], pieces_spread(), sticks, sums);
        by_rows(
            &[a],
            tiny,
            |v| v[0].tape.apply(DirichletEntropyTiny, &[v[0]]),
            rest,
        )
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        let a = self.concentration;
        a.try_div(a.sum_axis(self.axis(), true)?)
    }
    // m_i (1 - m_i) / (a0 + 1), with 1 - m_i as the others' share
    // Σ_{j≠i} a_j / a0, those sums taken from both sides of i: `1 - m_i`
    // rounds away what a dominant concentration leaves (0 in f32 for
    // [1e8, 3], whose variances are 3e-16)
    fn variance(&self) -> Result<Var<'t, F>> {
        let a = self.concentration;
        let axis = self.axis();
        let a0 = a.sum_axis(axis, true)?;
        a.try_div(a0)?
            .try_mul(others_sum(a, axis)?.try_div(a0)?)?
            .try_div(a0 + F::one())
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = self.concentration.shape();
        s[..s.len() - 1].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![*self.concentration.shape().last().unwrap_or(&0)]
    }
}

/// `KL(Dir(a) || Dir(b))`. Over two categories, in the rows whose
/// concentrations (`a`'s and `b`'s together) spread over more than
/// [`STICKS_SPREAD`], and in those whose concentrations are each
/// [`shapes_near`] their counterpart, some below [`LARGE`], it is the sum
/// of the divergences of its sticks: a
/// Dirichlet draw is `x_1 ~ Beta(a_1, a_2 + ... + a_K)`, then the rest of
/// the stick shared out by `Dir(a_2, ..., a_K)` independently of it, and
/// the two densities' Jacobians cancel, so
/// `KL = Σ_{k<K} KL(Beta(a_k, t_k(a)) || Beta(b_k, t_k(b)))` with the tails
/// `t_k = Σ_{j>k} a_j` ([`Var::cumsum_from_end`]). Every term is a Beta
/// divergence ([`kl_beta`]) that is at least 0, so the sum cancels
/// nothing, and each takes the Beta's forms for small and large
/// concentrations. Rows whose concentrations are all at least [`LARGE`]
/// take [`divergence_by_parts`] ([`DirichletByParts`]), and the other
/// rows the closed form
/// ([`kl_dirichlet_closed`]), within about 1e-9 there in f64 and several
/// times cheaper; where small concentrations are shared it loses the
/// digits of a small divergence to terms of order 1: `KL(Dir([1e-6, 2e-6,
/// 3]) || Dir([1e-6, 2e-6, 2.5]))` was 3e-8 off, `[1e-10, 1e-10, 3]`
/// against `[1e-10, 1e-10, 1]` 2e-5, and `[0.01, 0.02, 3]` against `[0.01,
/// 0.02, 2.5]` 6e-12.
///
/// In `f32` the divergence and its gradients are computed in `f64` and
/// rounded ([`InF64`]), as the Beta's are: the `f32` closed form left up to
/// 1.1e-5 at a spread of 10³.
pub(crate) fn kl_dirichlet<'t, F: Element>(
    q: &Dirichlet<'t, F>,
    p: &Dirichlet<'t, F>,
) -> Result<Var<'t, F>> {
    const OP: &str = "kl_divergence";
    let (a, b) = (q.concentration, p.concentration);
    let k = *a.shape().last().unwrap_or(&0);
    if b.shape().last() != Some(&k) {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: a.shape(),
            rhs: b.shape(),
        });
    }
    if F::DTYPE == "F32" {
        let op = InF64::new("kl_dirichlet", |v| kl_dirichlet_of(v[0], v[1]), &[a, b]);
        return a.tape.apply(op, &[a, b]);
    }
    kl_dirichlet_of(a, b)
}

/// [`kl_dirichlet`] of the concentrations `a` and `b` (whose last axes
/// match), in their own precision.
fn kl_dirichlet_of<'t, F: Element>(a: Var<'t, F>, b: Var<'t, F>) -> Result<Var<'t, F>> {
    const OP: &str = "kl_divergence";
    let k = *a.shape().last().unwrap_or(&0);
    let sticks = |v: &[Var<'t, F>]| -> Result<Var<'t, F>> {
        let (q, p) = (stick_pieces(OP, v[0])?, stick_pieces(OP, v[1])?);
        kl_beta(&q, &p)?.sum_axis(last_axis(v), false)
    };
    // the rows below the spread in closed form, or where every
    // concentration is large by parts (one op of both rows, broadcast)
    let closed = |v: &[Var<'t, F>]| {
        let by_parts = |w: &[Var<'t, F>]| {
            let shape = broadcast_of(w)?;
            let (a, b) = (w[0].broadcast_to(&shape)?, w[1].broadcast_to(&shape)?);
            a.tape.apply(DirichletByParts, &[a, b])
        };
        let sums = |w: &[Var<'t, F>]| kl_dirichlet_closed(w[0], w[1], last_axis(w));
        by_rows(v, large_rows(OP, v[0], v[1])?, by_parts, sums)
    };
    // over two categories every row is one stick
    let spread = if k == 2 {
        F::zero()
    } else {
        F::lit(STICKS_SPREAD)
    };
    // the sticks where the concentrations spread, or where each is
    // [`shapes_near`] its counterpart and some are below LARGE: there the
    // closed form's parts, remainders each, cancel to the divergence (which
    // came out -2.2e-17 for 1.4e-17 between [0.0104, 292.4, 0.019] and
    // itself moved by about 1e-9), where each stick's Beta divergence is one
    // remainder ([`kl_beta_near`])
    let rows = rows_where(OP, a, b, |x, y| {
        let near = x.iter().zip(y).all(|(&p, &q)| shapes_near(p, q));
        spreads(x, y, spread) || (near && x.iter().chain(y).any(|&c| c < F::lit(LARGE)))
    })?;
    by_rows(&[a, b], rows, sticks, closed)
}

/// 1 for each row of `a` and `b` (broadcast together) whose concentrations
/// are all at least [`LARGE`] and add up to finite totals, where the
/// closed form's terms of size `a ln a` would cancel
/// ([`DirichletByParts`]), else 0; and the broadcast shape.
fn large_rows<F: Element>(
    op: &'static str,
    a: Var<'_, F>,
    b: Var<'_, F>,
) -> Result<(Vec<F>, Vec<usize>)> {
    let large = |r: &[F]| {
        r.iter().all(|&c| c >= F::lit(LARGE)) && r.iter().fold(F::zero(), |s, &c| s + c).is_finite()
    };
    rows_where(op, a, b, |x, y| large(x) && large(y))
}

/// 1 for each row of `a` and `b` (broadcast together) where `keep` holds
/// of the two rows, else 0; and the broadcast shape (`op` names a shape
/// error).
fn rows_where<F: Element>(
    op: &'static str,
    a: Var<'_, F>,
    b: Var<'_, F>,
    keep: impl Fn(&[F], &[F]) -> bool,
) -> Result<(Vec<F>, Vec<usize>)> {
    let shape = broadcast_shape(&a.shape(), &b.shape()).ok_or_else(|| Error::ShapeMismatch {
        op,
        lhs: a.shape(),
        rhs: b.shape(),
    })?;
    let (av, bv) = (
        a.value().broadcast_to(&shape)?,
        b.value().broadcast_to(&shape)?,
    );
    let k = shape.last().copied().unwrap_or(1).max(1);
    let rows = av
        .data()
        .chunks(k)
        .zip(bv.data().chunks(k))
        .map(|(x, y)| if keep(x, y) { F::one() } else { F::zero() })
        .collect();
    Ok((rows, shape))
}

/// `KL(Dir(a) || Dir(b))` along the last axis of `a` and `b` (of one
/// shape), every row of concentrations at least [`LARGE`]: one op, each
/// row by [`divergence_by_parts`] in `f64`, its partials recomputed by
/// backward.
struct DirichletByParts;

impl DirichletByParts {
    /// The divergence of each row, and (with `grads`) the partials.
    fn rows<F: Element>(inputs: &[&Tensor<F>], grads: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (a, b) = (inputs[0].to_f64(), inputs[1].to_f64());
        let k = a.shape().last().copied().unwrap_or(1).max(1);
        let n = a.len();
        let (mut ga, mut gb) = (vec![0.0; n], vec![0.0; n]);
        let (mut sa, mut sb) = (vec![0.0; k], vec![0.0; k]);
        let values = a
            .data()
            .chunks(k)
            .zip(b.data().chunks(k))
            .enumerate()
            .map(|(r, (x, y))| {
                let value = divergence_by_parts(x, y, &mut sa, &mut sb, &mut 0.0);
                if grads {
                    ga[r * k..(r + 1) * k].copy_from_slice(&sa);
                    gb[r * k..(r + 1) * k].copy_from_slice(&sb);
                }
                value
            })
            .collect();
        (values, ga, gb)
    }
}

impl<F: Element> Op<F> for DirichletByParts {
    fn name(&self) -> &str {
        "kl_dirichlet_by_parts"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        row_values(Self::rows(inputs, false).0, inputs[0].shape())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let shape = inputs[0].shape();
        let (_, ga, gb) = Self::rows(inputs, true);
        Ok(vec![
            row_slopes(&ga, grad, shape)?,
            row_slopes(&gb, grad, shape)?,
        ])
    }
}

/// The last axis of the inputs a Dirichlet formula is given (the largest
/// rank less one): `split` may hand them as rows, of rank 2.
fn last_axis<F: Element>(inputs: &[Var<'_, F>]) -> usize {
    inputs.iter().map(|v| v.shape().len()).max().unwrap_or(1) - 1
}

/// `sticks(&[a, b])` in the rows of `a` and `b` (broadcast together) whose
/// concentrations spread over more than `spread`, `sums(&[a, b])`
/// in the others ([`split`]; only one is built where every row takes it).
fn by_spread<'t, F: Element>(
    op: &'static str,
    a: Var<'t, F>,
    b: Var<'t, F>,
    spread: F,
    sticks: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    sums: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    by_rows(&[a, b], spread_rows(op, a, b, spread)?, sticks, sums)
}

/// `yes(inputs)` in the rows whose entry of `rows` is 1, `no(inputs)` in
/// the others ([`split`] by the rows of `shape`, the inputs' broadcast
/// shape; only one is built where every row takes it).
fn by_rows<'t, F: Element>(
    inputs: &[Var<'t, F>],
    (rows, shape): (Vec<F>, Vec<usize>),
    yes: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    no: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    if rows.iter().all(|&m| m == F::zero()) {
        return no(inputs);
    }
    if rows.iter().all(|&m| m == F::one()) {
        return yes(inputs);
    }
    split(inputs, row_masks(rows, &shape)?, yes, no)
}

/// The stick-breaking pieces of a Dirichlet's concentrations `c` along
/// their last axis, as the Betas `(c_k, t_k)` for every category but the
/// last, with the tails `t_k = Σ_{j>k} c_j` summed from the end. A tail
/// past the largest float is an error of `op`.
fn stick_pieces<'t, F: Element>(op: &'static str, c: Var<'t, F>) -> Result<Beta<'t, F>> {
    let axis = c.shape().len() - 1;
    let k = c.shape()[axis];
    let tails = c.cumsum_from_end(axis)?.slice(axis, 1, k)?;
    if let Some(&t) = tails.value().data().iter().find(|t| !t.is_finite()) {
        return Err(overflowed_sum(op, t));
    }
    // the heads were checked when the Dirichlet was built (finite,
    // positive, one tape), and the tails are sums of them
    Ok(Beta {
        concentration1: c.slice(axis, 0, k - 1)?,
        concentration0: tails,
    })
}

/// How far the concentrations of a row, the two Dirichlets' together, may
/// spread (the largest over the smallest) before their divergence is taken
/// by sticks ([`kl_dirichlet`]): 2^15. The divergence is always computed
/// in `f64` (an `f32` one through [`InF64`]). The closed form's error grows
/// with the spread where the small concentrations are shared (`[x, 2x, 3]`
/// against `[x, 2x, 2.5]`): 6e-12 at 300, 3.6e-10 at 10⁴, 7.9e-10 at
/// 3.3·10⁴, 2.8e-9 at 10⁵, 3e-8 at 3·10⁶ (in `f32` arithmetic it was up to
/// 2.4e-6 to 500, 1.1e-5 at 10³ and 4.5e-4 at 1.7·10⁴). The sticks cost
/// several times as much (a Beta divergence, with its choice of forms, for
/// each concentration), so the rows below the spread keep the closed form.
const STICKS_SPREAD: f64 = 32_768.0;

/// How far the concentrations of a row may spread before its entropy and
/// its normalizer `ln B(α)` are taken by the stick-breaking pieces
/// (`Dirichlet::entropy`, `Dirichlet::ln_norm`): 2^15 in `f64`, as for the
/// divergence; 2^4 in `f32`. Below it the sums over categories are as
/// accurate and cost less (the normalizer's pieces, a `ln B` each, take
/// several times as long with the gradient). Past it they lose digits:
/// - the entropy in `f32` was 3.4e-7 off at a spread of 20 (`[0.5, 2,
///   10]`), 6.4e-6 at 200 and 7.4e-4 at 10⁴, against 1.5e-8, 6.7e-9 and
///   5.9e-8 by the pieces;
/// - the normalizer's gradient in `f64` was 2e-11 off at a spread of
///   3·10⁴ (`[31623, 1, 2]`), 3.5e-10 at 10⁶ and 5.8e-6 at 10¹⁰, and its
///   value 100% off from 10³⁰ on, against 4e-15 at most by the pieces; in
///   `f32` the gradient was 3.7e-7 off at a spread of 20 (`[10, 0.5, 3]`)
///   and 1.9e-6 at 32, against 1e-7 at most by the pieces.
fn pieces_spread<F: Element>() -> F {
    if F::epsilon() < F::lit(1e-10) {
        F::lit(32_768.0)
    } else {
        F::lit(16.0)
    }
}

/// The error of `op` on a Dirichlet whose concentrations add up to `t`,
/// past the largest float.
fn overflowed_sum<F: Element>(op: &'static str, t: F) -> Error {
    Error::invalid(
        op,
        format!(
            "a Dirichlet's concentrations add up to {t:?}, past the largest float: {op} \
             needs their sums"
        ),
    )
}

/// 1 for each row of `a` and `b` (broadcast together) whose
/// concentrations spread over more than `spread`, else 0; and the
/// broadcast shape (`op` names a shape error).
fn spread_rows<F: Element>(
    op: &'static str,
    a: Var<'_, F>,
    b: Var<'_, F>,
    spread: F,
) -> Result<(Vec<F>, Vec<usize>)> {
    rows_where(op, a, b, |x, y| spreads(x, y, spread))
}

/// Whether the concentrations of the rows `x` and `y` together spread over
/// more than `spread` (the largest over the smallest).
fn spreads<F: Element>(x: &[F], y: &[F], spread: F) -> bool {
    // (the concentrations are positive and finite, and so are their sums:
    // checked when the Dirichlets were built)
    let (mut lo, mut hi) = (F::infinity(), F::zero());
    for &c in x.iter().chain(y) {
        lo = if c < lo { c } else { lo };
        hi = if c > hi { c } else { hi };
    }
    hi > lo * spread
}

/// `KL(Dir(a) || Dir(b))` in closed form along `axis`, `ln Γ(a0) - Σ ln
/// Γ(a_i) - ln Γ(b0) + Σ ln Γ(b_i) + Σ (a_i - b_i)(ψ(a_i) - ψ(a0))`,
/// gathered as `Σ D(a_i, b_i) - D(a0, b0)` with `D` the
/// [`shape_divergence`].
fn kl_dirichlet_closed<'t, F: Element>(
    a: Var<'t, F>,
    b: Var<'t, F>,
    axis: usize,
) -> Result<Var<'t, F>> {
    // the sums of ln Γ and ψ terms regrouped by pairs (Σ (a_i - b_i) =
    // a0 - b0), each less its first argument where that is large and the
    // second small (see `kl_beta`)
    let (a0, b0) = (
        a.sum_axis(a.shape().len() - 1, false)?,
        b.sum_axis(b.shape().len() - 1, false)?,
    );
    let (d, r) = pair_divergence(a, b)?;
    let (d0, r0) = pair_divergence(a0, b0)?;
    // the parts' first arguments broadcast to the parts' shape
    let a_full = a.broadcast_to(&d.shape())?;
    let kl = d.sum_axis(axis, false)?.try_sub(d0)?;
    match added_back(&[(a_full, r)], r0, Some(axis))? {
        Some(back) => kl.try_add(back),
        None => Ok(kl),
    }
}

/// Student's t distribution.
///
/// # Density
/// With `z = (x - loc) / scale`:
/// `ln p(x) = ln Γ((ν + 1)/2) - ln Γ(ν/2) - ln(ν π)/2 - ln scale - (ν + 1)/2 · ln(1 + z²/ν)`.
///
/// # Sampling
/// `x = loc + scale · ε sqrt(ν / 2G)` with `ε ~ N(0, 1)` and
/// `G ~ Gamma(ν/2, 1)`, the square root taken as `exp((ln ν - ln 2 - ln G)/2)`
/// from the logarithm of the Gamma draw, which carries its implicit
/// gradient: `rsample` is differentiable in `df`, `loc` and `scale`, with
/// finite gradients where `G` is below the smallest normal number. At a
/// small `df` the law has mass past the largest float (at `df` = 0.01, 40%
/// of it in `f32` and 8e-4 in `f64`); those draws are `±inf`. The
/// derivative of `ln(ν / 2G)` in `df` is taken as one factor, `1/ν - ψ_G/2`
/// (`ψ_G` the implicit derivative of `ln G`), so that a draw near or past
/// the largest float gets a gradient of one sign, infinite where it
/// overflows, not the NaN of two overflowing terms of opposite signs.
///
/// # Parameters
/// - `df`, `scale`: finite, at least the smallest normal number; `loc`:
///   finite; shapes broadcast.
///
/// The mean exists for `df > 1` and the variance for `df > 2` (infinite
/// for `1 < df <= 2`); asking for them otherwise is an error.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let t = StudentT::new(tape.scalar(4.0), tape.scalar(1.0), tape.scalar(2.0))?;
/// assert!((t.variance()?.item()? - 8.0).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct StudentT<'t, F: Element> {
    df: Var<'t, F>,
    loc: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> StudentT<'t, F> {
    /// From degrees of freedom, a location and a scale.
    pub fn new(df: Var<'t, F>, loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        same_tape("StudentT::new", &df, &loc)?;
        same_tape("StudentT::new", &df, &scale)?;
        check_divisor("StudentT", "df", &df)?;
        super::check_finite("StudentT", "loc", &loc)?;
        check_divisor("StudentT", "scale", &scale)?;
        let s = batch_broadcast("StudentT", ("df", df.shape()), ("loc", loc.shape()))?;
        batch_broadcast("StudentT", ("df and loc", s), ("scale", scale.shape()))?;
        Ok(StudentT { df, loc, scale })
    }

    /// `ln(1 + z²/ν)` with `z = (x - loc) / scale`. Where `|z|` or
    /// `|z| / sqrt(ν)` passes `sqrt(MAX) / 1e4` (so that `z²` or `z²/ν`
    /// would overflow, or nearly), it is
    /// `softplus(2 (ln|x - loc| - ln scale - ln(ν)/2))`,
    /// finite for any finite `x`: a value 1e200 from the location is far
    /// out in the tails, not impossible. Each form sees, where the other is
    /// taken, a value at which it is finite (`z = 0` for the direct one,
    /// `x - loc = scale` for the far one: given as such, not as `x = loc +
    /// scale`, which rounds to `loc` where `loc` is above `2^53 scale`),
    /// and the two are chosen, not blended.
    fn log1p_z2_over_df(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let (nu, loc, scale) = (self.df, self.loc, self.scale);
        let direct = |x: Var<'t, F>| -> Result<Var<'t, F>> {
            let z = x.try_sub(loc)?.try_div(scale)?;
            Ok(z.square().try_div(nu)?.log1p())
        };
        let limit = F::max_value().sqrt() * F::lit(1e-4);
        // (an overflowing |x - loc| is far; so is a NaN, as the value it would give is)
        let far = mask_where(&[x, loc, scale, nu], |v| {
            let z = (v[0] - v[1]).abs() / v[2];
            z > limit || z / v[3].sqrt() > limit || z.is_nan()
        })?;
        if far.data().iter().all(|&m| m == F::zero()) {
            return direct(x);
        }
        let shape = far.shape().to_vec();
        let (l, s) = (
            loc.value().broadcast_to(&shape)?,
            scale.value().broadcast_to(&shape)?,
        );
        let near = far.map(|m| F::one() - m);
        let tape = self.tape();
        let x_near = x.choose(near, tape.constant(l))?;
        let d = x.try_sub(loc)?.choose(far.clone(), tape.constant(s))?;
        // softplus(2 ln(|z| / √ν)) = ln(1 + z²/ν): each slope the product of
        // the softplus's (at most 2) and one of 1/d, 1/scale, 1/(2ν), none
        // passing the largest float on the way to a finite slope (as `ln(z²)
        // - ln ν + ln(1 + ν (scale / d)²)` the square's backward took ν (ν +
        // 1)/2, +inf at ν = 1e300, times scale / d, 0 there: NaN slopes)
        let ln_ratio = d
            .abs()
            .ln()
            .try_sub(scale.ln())?
            .try_sub(nu.ln() * F::lit(0.5))?;
        let far_form = (ln_ratio * F::lit(2.0)).softplus();
        far_form.choose(far, direct(x_near)?)
    }

    /// Degrees of freedom.
    pub fn df(&self) -> Var<'t, F> {
        self.df
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

impl<'t, F: Element> Distribution<'t, F> for StudentT<'t, F> {
    fn name(&self) -> &'static str {
        "StudentT"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.df.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("StudentT::log_prob", &self.df, &x)?;
        let nu = self.df;
        // ±inf: -inf with a zero gradient (the formula's gradient there is
        // inf / inf)
        on_support(
            "StudentT",
            x,
            |_, v| v.is_finite(),
            F::zero(),
            |x| {
                if F::DTYPE == "F32" {
                    return pointwise::apply(StudentTLogDensity, &[nu, self.loc, self.scale, x]);
                }
                let half_nu1 = (nu + F::one()) * F::lit(0.5);
                // ln Γ((ν + 1)/2) - ln Γ(ν/2) - ln(πν)/2 = -ln B(ν/2, 1/2) -
                // ln(ν)/2 (ln Γ(1/2) = ln(π)/2), which keeps its digits for
                // large ν
                let half = self.tape().scalar(F::lit(0.5));
                let norm = -(nu * F::lit(0.5)).lbeta(half)? - nu.ln() * F::lit(0.5);
                let norm = norm.try_sub(self.scale.ln())?;
                norm.try_sub(half_nu1.try_mul(self.log1p_z2_over_df(x)?)?)
            },
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let eps = self.tape().constant(super::standard_normal(&shape, rng));
        // sqrt(ν / 2G) from ln G: where G is tiny, the gradients of G / ν
        // and of its square root pass the largest float on the way to a
        // finite one (NaN in `f32` at ν = 0.3), and G underflows
        let h = ln_ratio_to_gamma_draw(self.df * F::lit(0.5), &shape, rng)?;
        let t = eps.try_mul((h * F::lit(0.5)).exp())?;
        t.affine(self.scale, self.loc)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = (ν+1)/2 (ψ((ν+1)/2) - ψ(ν/2)) + ln(ν)/2 + ln B(ν/2, 1/2) + ln scale,
    // the digamma difference and ln B taken whole (their parts are large
    // numbers that cancel for large ν)
    fn entropy(&self) -> Result<Var<'t, F>> {
        rounded_once!("student_t_entropy", [self.df, self.scale], |v: G| {
            let nu = v[0];
            let (h1, h) = ((nu + G::one()) * G::lit(0.5), nu * G::lit(0.5));
            let half = nu.tape().scalar(G::lit(0.5));
            let t = -h1.try_mul(h.digamma_diff(half)?)?;
            let t = t.try_add(nu.ln() * G::lit(0.5))?.try_add(h.lbeta(half)?)?;
            t.try_add(v[1].ln())
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        check_values(
            "StudentT",
            "df",
            &self.df,
            "must be > 1 for the mean to exist",
            |v| v > F::one(),
        )?;
        self.loc.broadcast_to(&self.batch_shape())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        check_values(
            "StudentT",
            "df",
            &self.df,
            "must be > 1 for the variance to exist (it is infinite for df <= 2)",
            |v| v > F::one(),
        )?;
        // infinite for 1 < df <= 2; df there is replaced by 3 before the
        // finite formula sees it, so no inf or NaN enters the gradient
        let over_two = |v: F| v > F::lit(2.0);
        let nu = self.df;
        let nv = nu.value();
        let keep = nv.map(|v| if over_two(v) { F::one() } else { F::zero() });
        let fill = nv.map(|v| if over_two(v) { F::zero() } else { F::lit(3.0) });
        let inf = nv.map(|v| {
            if over_two(v) {
                F::zero()
            } else {
                F::infinity()
            }
        });
        let tape = self.tape();
        let nu = nu
            .try_mul(tape.constant(keep.clone()))?
            .try_add(tape.constant(fill))?;
        // s² ν/(ν - 2) as s² + 2 (s / (ν - 2)) s, one path to ν: through
        // the quotient ν/(ν - 2) the two partials, ±inf where the squared
        // scale overflows, met as inf - inf (a NaN slope at ν = 3 with a
        // scale of 1e30 in f32, where the variance leaves the floats), and
        // through s² (1 + 2/(ν - 2)) the slope in ν was s² = inf times
        // 2/(ν - 2)² = 0 (NaN at ν = s = 1e30 in f32, where it is -2)
        let s = self.scale;
        let scaled = s.try_div(nu - F::lit(2.0))?;
        let finite = s.square().try_add(scaled.try_mul(s)? * F::lit(2.0))?;
        let shape = self.batch_shape();
        finite
            .broadcast_to(&shape)?
            .try_mul(tape.constant(keep))?
            .try_add(tape.constant(inf))
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = broadcast_shape(&self.df.shape(), &self.loc.shape()).unwrap_or_default();
        broadcast_shape(&s, &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Dirichlet draws' normalization over many rows of each length
    /// (those of two to four values take their own loop): each row over
    /// its sum, and the gradient of every row.
    #[test]
    fn normalized_rows_of_every_length_are_each_over_its_sum() {
        use crate::autodiff::gradcheck::{GradCheck, gradcheck};
        for k in 1..=6 {
            let rows = 37 + k;
            let g = Tensor::<f64>::from_fn(&[rows, k], |i| 0.3 + ((i * 37) % 23) as f64 / 7.0);
            let tape = Tape::new();
            let x = tape.apply(NormalizeRows, &[tape.var(g.clone())]).unwrap();
            for (row, src) in x.value().data().chunks(k).zip(g.data().chunks(k)) {
                let total = sum_pairwise(src);
                assert!(
                    row.iter().zip(src).all(|(&x, &s)| x == s / total),
                    "k = {k}"
                );
            }
            gradcheck(
                |t, v| t.apply(NormalizeRows, &[v[0]]),
                std::slice::from_ref(&g),
                &GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("k = {k}: {e}"));
        }
        // rows enough for both threads: the gradient of each row,
        // (w_k - Σ_j w_j x_j) / Σ_j g_j for the weights w of the rows' values
        let (rows, k) = (20_011, 3);
        let g = Tensor::<f64>::from_fn(&[rows, k], |i| 0.3 + ((i * 37) % 23) as f64 / 7.0);
        let w = Tensor::<f64>::from_fn(&[rows, k], |i| ((i * 11) % 13) as f64 - 6.0);
        let tape = Tape::new();
        let gv = tape.var(g.clone());
        let x = tape.apply(NormalizeRows, &[gv]).unwrap();
        let grad = (x * tape.constant(w.clone())).sum().backward().unwrap();
        let got = grad.get(gv).unwrap();
        let rows_of = |t: &Tensor<f64>| t.data().chunks(k).map(|r| r.to_vec()).collect::<Vec<_>>();
        for ((g, w), d) in rows_of(&g).iter().zip(rows_of(&w)).zip(rows_of(got)) {
            let total: f64 = g.iter().sum();
            let dot: f64 = g.iter().zip(&w).map(|(g, w)| g / total * w).sum();
            for (d, w) in d.iter().zip(&w) {
                let want = (w - dot) / total;
                assert!(
                    (d - want).abs() <= 1e-14 * (1.0 + want.abs()),
                    "{d} vs {want}"
                );
            }
        }
    }

    /// The ops the large-concentration formulas are built from, against
    /// finite differences: below and above 10, where their special
    /// functions switch to asymptotic series, and `bd0` on both sides of
    /// its switch to a series near `a = y`; and the Poisson log-mass built
    /// on them.
    #[test]
    fn corrections_and_bd0_pass_gradcheck() {
        use crate::autodiff::gradcheck::{GradCheck, gradcheck};
        let x = Tensor::vector(&[0.3, 2.5, 9.0, 11.0, 60.0]);
        gradcheck(
            |_, v| Ok(v[0].lgamma_correction()),
            std::slice::from_ref(&x),
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("lgamma_correction: {e}"));
        gradcheck(
            |_, v| Ok(v[0].digamma_correction()),
            &[x],
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("digamma_correction: {e}"));
        let a = Tensor::vector(&[0.5, 3.0, 10.0, 10.0, 40.0]);
        let y = Tensor::vector(&[2.0, 0.2, 10.5, 30.0, 39.0]);
        gradcheck(
            |_, v| v[0].bd0(v[1]),
            &[a.clone(), y.clone()],
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("bd0: {e}"));
        // (in the count too, through the continuous extension)
        gradcheck(
            |_, v| v[0].poisson_log_mass(v[1]),
            &[a, y],
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("poisson_log_mass: {e}"));
    }

    /// The fused normalization of Dirichlet draws against finite
    /// differences, rows of 3 and of 1, and a loss that weighs each
    /// output differently.
    #[test]
    fn normalize_rows_passes_gradcheck() {
        use crate::autodiff::gradcheck::{GradCheck, gradcheck};
        for shape in [[2usize, 3], [3, 1]] {
            let g = Tensor::from_fn(&shape, |i| 0.4 + 0.7 * i as f64);
            let weights = Tensor::from_fn(&shape, |i| 1.0 + (i * i) as f64);
            gradcheck(
                |t, v| Ok((t.apply(NormalizeRows, &[v[0]])? * weights.clone()).sum()),
                &[g],
                &GradCheck::default(),
            )
            .unwrap();
        }
    }

    /// The normalization of the Gamma draws' logarithms against finite
    /// differences (the op built from the logarithms it is given, as the
    /// draws build it), with rows far below 0 and spread past the floor.
    #[test]
    fn normalize_logs_passes_gradcheck() {
        use crate::autodiff::gradcheck::{GradCheck, gradcheck};
        let l = Tensor::from_rows(&[[-800.0, -799.5, -801.2], [0.3, -2.0, 1.1]]).unwrap();
        let weights = Tensor::from_fn(&[2, 3], |i| 1.0 + (i * i) as f64);
        gradcheck(
            |t, v| {
                let logs = v[0].value().data().to_vec();
                Ok((t.apply(NormalizeLogs { logs }, &[v[0]])? * weights.clone()).sum())
            },
            &[l],
            &GradCheck::default(),
        )
        .unwrap();
        // a component 10⁴ below the rest is the floor, and the row still
        // adds up to 1
        let t = Tape::<f64>::new();
        let logs = vec![0.0, -1e4, -0.5];
        let x = t
            .apply(
                NormalizeLogs { logs },
                &[t.constant(Tensor::vector(&[0.0; 3]))],
            )
            .unwrap()
            .value();
        assert_eq!(x.data()[1], f64::MIN_POSITIVE);
        assert!((x.data().iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }

    /// Rows split between two threads (60 000 values) give what each row
    /// gives alone, forward and backward.
    #[test]
    fn normalize_rows_on_two_threads_is_row_by_row() {
        let (rows, k) = (20_000, 3);
        let g = Tensor::from_fn(&[rows, k], |i| 0.3 + ((i * 37) % 101) as f64 / 17.0);
        let d = Tensor::from_fn(&[rows, k], |i| ((i * 53) % 89) as f64 / 9.0 - 4.0);
        let x = NormalizeRows.forward(&[&g]).unwrap();
        let back = NormalizeRows.backward(&[&g], &x, &d).unwrap();
        let back = back[0].as_ref().unwrap();
        for r in 0..rows {
            let row = &g.data()[r * k..][..k];
            let total = sum_pairwise(row);
            let xr: Vec<f64> = row.iter().map(|v| v / total).collect();
            let dr = &d.data()[r * k..][..k];
            let dot = xr.iter().zip(dr).fold(0.0, |s, (x, d)| s + x * d);
            for j in 0..k {
                assert_eq!(x.data()[r * k + j], xr[j], "row {r}");
                assert_eq!(back.data()[r * k + j], (dr[j] - dot) / total, "row {r}");
            }
        }
    }

    /// A constant rate of 1 skips the division by the rate: the draws and
    /// the concentration's gradient are bit for bit those of a rate of 1
    /// that receives a gradient (and so is divided by), for a rate
    /// broadcast over the concentrations, of their shape, and of a larger
    /// shape than theirs; a constant rate other than 1 still divides.
    #[test]
    fn a_constant_rate_of_one_gives_the_divided_draws() {
        use rand::SeedableRng;
        let cases: [(&[usize], &[usize]); 4] = [
            (&[2, 3], &[]),
            (&[2, 3], &[3]),
            (&[2, 3], &[2, 3]),
            (&[3], &[2, 3]),
        ];
        for (a_shape, rate_shape) in cases {
            let run = |constant: bool, rate: f64| {
                let tape = Tape::<f64>::new();
                // (0.5: a concentration below 1, drawn from a + 1)
                let a = tape.var(Tensor::from_fn(a_shape, |i| 0.5 + 1.5 * i as f64));
                let r = Tensor::full(rate_shape, rate);
                let r = if constant {
                    tape.constant(r)
                } else {
                    tape.var(r)
                };
                let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
                let x = Gamma::new(a, r)
                    .unwrap()
                    .rsample_n(Some(4), &mut rng)
                    .unwrap();
                let w = Tensor::from_fn(&x.shape(), |i| 1.0 + i as f64);
                let grads = (x * w).sum().backward().unwrap();
                let bits =
                    |t: &Tensor<f64>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (bits(&x.value()), bits(grads.get(a).unwrap()))
            };
            let skipped = run(true, 1.0);
            assert_eq!(skipped, run(false, 1.0), "{a_shape:?} / {rate_shape:?}");
            let half = run(true, 0.5);
            assert_ne!(
                half.0, skipped.0,
                "{a_shape:?} / {rate_shape:?}: a rate of 0.5 divides"
            );
        }
    }

    /// The draws are compiled into each tier's loops; they are the same
    /// numbers on every tier (no operation may differ, a fused multiply-add
    /// say).
    #[test]
    fn every_tier_draws_the_same_gammas() {
        use crate::kernels::parallel::{Tier, on_tier, vectorized};
        let draw = || {
            vectorized(|| {
                let mut draws = Draws::new(11);
                [0.03, 0.7, 1.0, 2.5, 40.0, 3e4]
                    .iter()
                    .flat_map(|&a| (0..500).map(move |_| a))
                    .map(|a| std_gamma_with(a, &mut draws).to_bits())
                    .collect::<Vec<_>>()
            })
        };
        let portable = on_tier(Tier::Portable, draw).expect("every CPU runs the portable tier");
        for tier in [Tier::Avx2Fma, Tier::Avx512] {
            match on_tier(tier, draw) {
                Some(bits) => assert!(bits == portable, "{tier:?} draws other numbers"),
                None => eprintln!("skipped {tier:?}: not on this CPU"),
            }
        }
    }

    /// The layers close: each has area `V` (the top one, from `x[127]` to
    /// the peak, included), so the recursion from `R` lands at the mode.
    #[test]
    fn ziggurat_layers_have_equal_areas() {
        let z = Ziggurat::get();
        let f = |x: f64| (-0.5 * x * x).exp();
        assert!((z.x[0] * f(Ziggurat::R) - Ziggurat::V).abs() < 1e-15);
        for i in 1..127 {
            let area = z.x[i] * (f(z.x[i + 1]) - f(z.x[i]));
            assert!(
                (area - Ziggurat::V).abs() < 1e-12 * Ziggurat::V,
                "layer {i}: {area}"
            );
        }
        let top = z.x[127] * (1.0 - f(z.x[127]));
        assert!(
            (top - Ziggurat::V).abs() < 1e-6 * Ziggurat::V,
            "top layer: {top}"
        );
    }

    /// `P(lo < Z < hi)` for `Z ~ N(0, 1)` by Simpson's rule over 400 steps.
    fn normal_mass(lo: f64, hi: f64) -> f64 {
        let density = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let k = 400;
        let h = (hi - lo) / k as f64;
        let inner: f64 = (1..k)
            .map(|j| density(lo + j as f64 * h) * if j % 2 == 1 { 4.0 } else { 2.0 })
            .sum();
        h / 3.0 * (density(lo) + inner + density(hi))
    }

    /// 2·10⁵ draws of the tail beyond R against its exact conditional
    /// probabilities in 20 bins of width 0.05 and the rest: chi-square over
    /// 20 degrees of freedom (mean 20, sd 6.3).
    #[test]
    fn ziggurat_tail_has_the_normal_tail_distribution() {
        let n = 200_000;
        let mut draws = Draws::new(5);
        let r = Ziggurat::R;
        let simpson = normal_mass;
        let mass = simpson(r, r + 10.0);
        let mut counts = [0usize; 21];
        for _ in 0..n {
            let t = draws.normal_tail();
            assert!(t > r);
            counts[(((t - r) / 0.05) as usize).min(20)] += 1;
        }
        let chi2: f64 = (0..21)
            .map(|b| {
                let lo = r + b as f64 * 0.05;
                let p = if b < 20 {
                    simpson(lo, lo + 0.05)
                } else {
                    simpson(lo, r + 10.0)
                } / mass;
                let e = p * n as f64;
                (counts[b] as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 20.0 + 5.0 * 6.3, "chi-square {chi2}");
    }

    /// 10⁶ normals against the exact bin probabilities (Simpson's rule on
    /// the density) in 80 bins over [-4, 4] and the two tails: a chi-square
    /// over 81 degrees of freedom (mean 81, sd 12.7), the mass beyond the
    /// ziggurat's tail point R, and the first four moments.
    #[test]
    fn ziggurat_normals_have_the_normal_distribution() {
        let n = 1_000_000;
        let mut draws = Draws::new(11);
        let z: Vec<f64> = (0..n).map(|_| draws.normal()).collect();
        let simpson = normal_mass;
        // Φ(-4)
        let tail = 3.167_124_183_311_992e-5;
        let mut counts = [0usize; 82];
        for &x in &z {
            let bin = if x < -4.0 {
                0
            } else if x >= 4.0 {
                81
            } else {
                1 + (((x + 4.0) * 10.0) as usize).min(79)
            };
            counts[bin] += 1;
        }
        let chi2: f64 = (0..82)
            .map(|b| {
                let p = match b {
                    0 | 81 => tail,
                    _ => simpson(-4.0 + (b - 1) as f64 * 0.1, -4.0 + b as f64 * 0.1),
                };
                let e = p * n as f64;
                (counts[b] as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 81.0 + 5.0 * 12.7, "chi-square {chi2}");
        // beyond R on either side: 2 Φ(-R) = 5.7627e-4, sd 24 in 10⁶
        let beyond = z.iter().filter(|x| x.abs() > Ziggurat::R).count() as f64;
        assert!((beyond - 576.27).abs() < 5.0 * 24.0, "{beyond} beyond R");
        let moment = |k: i32| z.iter().map(|x| x.powi(k)).sum::<f64>() / n as f64;
        // standard errors: sqrt(1/n), sqrt(2/n), sqrt(15/n), sqrt(96/n)
        for (k, want, se) in [
            (1, 0.0, 1.0),
            (2, 1.0, 2.0f64.sqrt()),
            (3, 0.0, 15.0f64.sqrt()),
            (4, 3.0, 96.0f64.sqrt()),
        ] {
            let got = moment(k);
            assert!(
                (got - want).abs() < 5.0 * se / (n as f64).sqrt(),
                "moment {k}: {got}"
            );
        }
    }
}
