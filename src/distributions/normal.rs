use super::{
    Distribution, HALF_LN_2PI, Laplace, batch_broadcast, check_divisor, check_finite, on_support,
    same_tape, sample_shape, standard_normal,
};
use crate::autodiff::ops::binary::{
    Operands, RUN_BACKWARD, RUN_FORWARD, View, broadcast_all, fill4, map4, with_value,
};
use crate::autodiff::ops::unary::par_fill;
use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::Op;
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::par_sum2;
use crate::tensor::{Element, Storage, Tensor};
use rand::Rng;

/// A location-scale family by its standard density: `ln p(x) =
/// log_density(z) - ln scale - LN_C` with `z = (x - loc) / scale`, and
/// `slope(z) = -d log_density / dz`.
///
/// The op over `[x, loc, scale]` then has `d/dloc = slope(z) / scale =
/// -d/dx` and `d/dscale = (z slope(z) - 1) / scale`.
pub(crate) trait Standardized: Send + Sync + 'static {
    /// The op's name.
    const NAME: &'static str;
    /// The constant subtracted with `ln scale`.
    const LN_C: f64;
    /// `ln p(z)` of the standard member, less `LN_C`.
    fn log_density<F: Element>(z: F) -> F;
    /// `-d log_density / dz`.
    fn slope<F: Element>(z: F) -> F;
    /// `g slope(d / scale)` for `inv = 1 / scale`, 0 where `g` is (also
    /// where `d / scale` overflows): the term of the location's sum with
    /// single parameters. The default tests `g`; a family whose form
    /// gives 0 without the test (which keeps the sum from vectorizing)
    /// writes it.
    #[inline(always)]
    fn weighted_slope<F: Element>(g: F, d: F, inv: F) -> F {
        if g == F::zero() {
            g
        } else {
            g * Self::slope(d * inv)
        }
    }
    /// `z slope(z)`, the scale's term.
    #[inline(always)]
    fn scale_term<F: Element>(z: F) -> F {
        z * Self::slope(z)
    }
}

/// The standard normal: `-z²/2 - ln √(2π)`, slope `z`.
pub(crate) struct StandardNormal;

impl Standardized for StandardNormal {
    const NAME: &'static str = "normal_log_prob";
    const LN_C: f64 = HALF_LN_2PI;
    #[inline(always)]
    fn log_density<F: Element>(z: F) -> F {
        F::lit(-0.5) * z * z
    }
    #[inline(always)]
    fn slope<F: Element>(z: F) -> F {
        z
    }
    /// `g d` first: 0 stays 0 whatever `inv` is.
    #[inline(always)]
    fn weighted_slope<F: Element>(g: F, d: F, inv: F) -> F {
        g * d * inv
    }
}

/// The standard Laplace: `-|z| - ln 2`, slope `sign z` (0 at `z = 0`, as
/// the derivative of [`Var::abs`] there).
pub(crate) struct StandardLaplace;

impl Standardized for StandardLaplace {
    const NAME: &'static str = "laplace_log_prob";
    const LN_C: f64 = std::f64::consts::LN_2;
    #[inline(always)]
    fn log_density<F: Element>(z: F) -> F {
        -z.abs()
    }
    #[inline(always)]
    fn slope<F: Element>(z: F) -> F {
        // two selects, which vectorize (a chain of branches did not)
        let up = if z > F::zero() { F::one() } else { F::zero() };
        let down = if z < F::zero() { F::one() } else { F::zero() };
        up - down
    }
    /// `sign(d / scale)` is `sign d`, finite.
    #[inline(always)]
    fn weighted_slope<F: Element>(g: F, d: F, _inv: F) -> F {
        g * Self::slope(d)
    }
    #[inline(always)]
    fn scale_term<F: Element>(z: F) -> F {
        z.abs()
    }
}

/// `ln p(x; loc, scale)` of the location-scale family `K` elementwise over
/// inputs `[x, loc, scale]`, fused (see [`Standardized`] for the
/// partials). An element whose incoming gradient is 0 passes on 0, also
/// where `slope(z) / scale` overflows (a component of a mixture whose
/// density underflows to 0 gets a zero gradient from the log-sum-exp, and
/// `0 · inf` would be NaN).
pub(crate) struct LocScaleLogProb<K>(std::marker::PhantomData<K>);

/// `ln p(x; loc, scale)` of the family `K` elementwise with broadcasting,
/// unchecked: the fused op behind [`Normal::log_prob`] and
/// [`Laplace::log_prob`](super::Laplace).
pub(crate) fn loc_scale_log_prob<'t, K: Standardized, F: Element>(
    x: Var<'t, F>,
    loc: Var<'t, F>,
    scale: Var<'t, F>,
) -> Result<Var<'t, F>> {
    x.tape.apply(
        LocScaleLogProb::<K>(std::marker::PhantomData),
        &[x, loc, scale],
    )
}

/// `ln N(x; loc, scale)` elementwise with broadcasting, unchecked.
pub(crate) fn normal_log_prob<'t, F: Element>(
    x: Var<'t, F>,
    loc: Var<'t, F>,
    scale: Var<'t, F>,
) -> Result<Var<'t, F>> {
    loc_scale_log_prob::<StandardNormal, F>(x, loc, scale)
}

/// `(x, loc, scale)` when `loc` and `scale` are single values whose
/// broadcast with `x` is `x`'s shape (a likelihood with scalar parameters).
fn scalar_parameters<'a, F: Element>(inputs: &[&'a Tensor<F>]) -> Option<(&'a Tensor<F>, F, F)> {
    let (x, m, s) = (inputs[0], inputs[1], inputs[2]);
    let fits = |p: &Tensor<F>| p.len() == 1 && p.rank() <= x.rank();
    (fits(m) && fits(s) && !x.is_empty()).then(|| (x, m.data()[0], s.data()[0]))
}

/// `x - m` where it is finite, else `x/2 - m/2`, with the factor (1 or 2)
/// that takes it back: finite `x` and `m` of opposite signs beyond half
/// the largest float subtract to an overflow, and `z = (x - m) / scale`
/// came out infinite where it lies in the floats (with it the density:
/// `-inf` where an `f32` Normal's is -1886, at `x = 3e38`, `loc = -3e38`,
/// `scale = 1e37`). Halves subtract without overflow, and `(h / s) k` is
/// `(x - m) / s` bit for bit wherever `x - m` is finite (`k = 1`).
#[inline(always)]
fn halved_difference<F: Element>(x: F, m: F) -> (F, F) {
    let d = x - m;
    let wide = d.abs() == F::infinity();
    let half = F::lit(0.5);
    let h = if wide { x * half - m * half } else { d };
    (h, if wide { F::lit(2.0) } else { F::one() })
}

/// `(x - m) / s`, finite wherever it lies in the floats
/// ([`halved_difference`]).
#[inline(always)]
fn standardized<F: Element>(x: F, m: F, s: F) -> F {
    let (h, k) = halved_difference(x, m);
    h / s * k
}

/// [`standardized`] by the inverse of the scale, `(x - m) inv`.
#[inline(always)]
fn standardized_by<F: Element>(x: F, m: F, inv: F) -> F {
    let (h, k) = halved_difference(x, m);
    h * (inv * k)
}

/// `ln p(x; m, s)`: the general branch's formula.
#[inline(always)]
fn log_density<K: Standardized, F: Element>(x: F, m: F, s: F) -> F {
    let z = standardized(x, m, s);
    K::log_density(z) - s.fast_ln() - F::lit(K::LN_C)
}

/// [`log_density`] of the first three of four operands (for [`fill4`]).
#[inline(always)]
fn log_density4<K: Standardized, F: Element>(x: F, m: F, s: F, _: F) -> F {
    log_density::<K, F>(x, m, s)
}

/// `g slope(z) / s`, with `z = (x - m) / s` (0 where `g` is).
#[inline(always)]
fn loc_slope<K: Standardized, F: Element>(g: F, x: F, m: F, s: F) -> F {
    let z = standardized(x, m, s);
    if g == F::zero() {
        F::zero()
    } else {
        K::slope(z) / s * g
    }
}

/// `g (z slope(z) - 1) / s` (0 where `g` is).
#[inline(always)]
fn scale_slope<K: Standardized, F: Element>(g: F, x: F, m: F, s: F) -> F {
    let z = standardized(x, m, s);
    if g == F::zero() {
        F::zero()
    } else {
        (K::scale_term(z) - F::one()) / s * g
    }
}

impl<K: Standardized, F: Element> Op<F> for LocScaleLogProb<K> {
    fn name(&self) -> &str {
        K::NAME
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        if let Some((x, m, s)) = scalar_parameters(inputs) {
            // scalar parameters (a likelihood): ln(scale) and 1/scale once;
            // on two threads when long, as the backward's sums are (a pass
            // on one thread between them left the helper asleep); `move`,
            // so that the loop vectorizes (see `with_value`)
            let (inv, offset) = (F::one() / s, s.fast_ln() + F::lit(K::LN_C));
            return Ok(with_value(x, m, move |xi, m| {
                K::log_density(standardized_by(xi, m, inv)) - offset
            }));
        }
        // a loc and a scale per value (a posterior at its own draws), or any
        // mix of single values and full tensors
        // (a row or a column of parameters is read where it lies)
        let ops = Operands::<F, 3>::new(K::NAME, inputs, RUN_FORWARD)?;
        // SAFETY: `fill4` writes every element of each part.
        let out = unsafe {
            ops.new_output(
                #[inline(always)]
                |_, [x, m, s], out| fill4(&log_density4::<K, F>, [x, m, s, s], out),
            )
        };
        Ok(Tensor::new_unchecked(out, ops.shape))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, out, g, &[true; 3])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let g = g.data();
        if let (Some((x, mv, sv)), false) = (scalar_parameters(inputs), needs[0]) {
            // scalar parameters and a constant x: reduce straight into scalars
            let xs = x.data();
            let inv = F::one() / sv;
            // sums in eight lanes (a single running sum does not vectorize);
            // 0 where gi is, also where z overflows
            // (`halved_difference`: where `x - loc` overflows, its half
            // with twice the inverse)
            let dloc = par_sum2(xs, g, |xi, gi| {
                let (h, k) = halved_difference(xi, mv);
                K::weighted_slope(gi, h, inv * k)
            });
            let dscale = par_sum2(xs, g, |xi, gi| {
                let z = standardized_by(xi, mv, inv);
                if gi == F::zero() {
                    gi
                } else {
                    gi * (K::scale_term(z) - F::one())
                }
            });
            let scalar = |v: F, k: usize| -> Result<Option<Tensor<F>>> {
                Ok(needs[k].then(|| Tensor::full(inputs[k].shape(), v)))
            };
            return Ok(vec![None, scalar(dloc * inv, 1)?, scalar(dscale * inv, 2)?]);
        }
        let shape = out.shape().to_vec();
        let ops = Operands::<F, 3>::new(K::NAME, inputs, RUN_BACKWARD)?;
        let (dloc, dscale) = (
            slopes(&ops, g, loc_slope::<K, F>),
            slopes(&ops, g, scale_slope::<K, F>),
        );
        let dx = needs[0].then(|| {
            Tensor::new_unchecked(dloc.iter().map(|&d| -d).collect::<Vec<_>>(), shape.clone())
        });
        let reduce = |d: Option<Tensor<F>>, k: usize| {
            d.map(|d| d.sum_to_owned(inputs[k].shape())).transpose()
        };
        Ok(vec![
            reduce(dx, 0)?,
            reduce(
                needs[1].then(|| Tensor::new_unchecked(dloc, shape.clone())),
                1,
            )?,
            reduce(
                needs[2].then(|| Tensor::new_unchecked(dscale, shape.clone())),
                2,
            )?,
        ])
    }
}

/// `slope(g_i, x_i, m_i, s_i)` at every position of the operands `ops`
/// (`x`, `m`, `s`) and the incoming gradient `g`.
fn slopes<F: Element>(
    ops: &Operands<'_, F, 3>,
    g: &[F],
    slope: impl Fn(F, F, F, F) -> F + Sync,
) -> Storage<F> {
    // SAFETY: `fill4` writes every element of each part.
    unsafe {
        ops.new_output(
            #[inline(always)]
            |at, [x, m, s], out| fill4(&slope, [View::each(&g[at..]), x, m, s], out),
        )
    }
}

/// `KL(N(mq, sq) || N(mp, sp))`, with `r = sq / sp` and
/// `d = (mq - mp) / sp`: `(r² - 1 + d²) / 2 - ln r`. Where the scales are
/// near (`|t| < 1/4`, `t = r - 1` taken as `(sq - sp) / sp`, exact but for
/// one rounding), `d²/2 + t²/2 + (t - ln(1 + t))`, three terms that are
/// never negative ([`log1p_excess_near`]): `r² - 1` and `2 ln r` cancel
/// there to about `t²`, and their roundings (and that of `r`) left a
/// relative error of about `ε / |t|` (300 `f32` ulp at scales 1.9953 and
/// 2). Elsewhere `r² - 1` as `(r - 1)(r + 1)`; where `r` is not a normal
/// number (the scales more than the float range apart), `ln r` is `ln sq -
/// ln sp`: `ln` of an `r` that underflowed to 0 made the divergence `inf`
/// (it is 759.35 at scales 1e-300 and 1e30), and of one that overflowed,
/// `inf - inf`.
#[inline(always)]
fn normal_kl_term<F: Element>(mq: F, sq: F, mp: F, sp: F) -> F {
    let r = sq / sp;
    let d = standardized(mq, mp, sp);
    let t = (sq - sp) / sp;
    if t.abs() < F::lit(0.25) {
        return F::lit(0.5) * (d * d + t * t) + log1p_excess_near(t);
    }
    let ln_r = if r.is_normal() {
        r.fast_ln()
    } else {
        sq.fast_ln() - sp.fast_ln()
    };
    F::lit(0.5) * ((r - F::one()) * (r + F::one()) + d * d) - ln_r
}

/// `t - ln(1 + t)` for `|t| < 1/4`, with its relative accuracy: with `v = t
/// / (2 + t)`, `ln(1 + t) = 2 atanh(v) = 2 (v + v³/3 + v⁵/5 + …)` and `t -
/// 2v = v t`, so it is `v t - 2 v³ (1/3 + v²/5 + v⁴/7 + …)`, whose second
/// term is at most a twentieth of the first (`|v| <= 1/7`), and the series
/// in `w = v² <= 1/49` is done to `w¹⁰` (the rest below `10⁻¹⁸` of it).
#[inline(always)]
fn log1p_excess_near<F: Element>(t: F) -> F {
    let v = t / (F::lit(2.0) + t);
    let w = v * v;
    let mut series = F::lit(1.0 / 23.0);
    for k in (0..10).rev() {
        series = series * w + F::lit(1.0 / (2 * k + 3) as f64);
    }
    v * t - F::lit(2.0) * (v * w) * series
}

/// `r² - 1` of [`normal_kl_term`] as `t (2 + t)` where `|t| < 1/4`,
/// `None` elsewhere: near 1, `r²` rounded keeps about `ε / |t|` of it.
#[inline(always)]
fn near_square_excess<F: Element>(sq: F, sp: F) -> Option<F> {
    let t = (sq - sp) / sp;
    (t.abs() < F::lit(0.25)).then(|| t * (F::lit(2.0) + t))
}

/// KL(N(mq, sq) || N(mp, sp)) elementwise over inputs `[mq, sq, mp, sp]`, fused.
/// With `r = sq / sp`, `d = (mq - mp) / sp`: `KL = (r^2 + d^2 - 1)/2 - ln r`,
/// `d/dmq = d / sp = -d/dmp`, `d/dsq = (r^2 - 1) / sq`, `d/dsp = (1 - r^2 - d^2) / sp`, with
/// `r^2 - 1` from [`near_square_excess`] where the scales are near.
struct NormalKl;

impl<F: Element> Op<F> for NormalKl {
    fn name(&self) -> &str {
        "normal_kl"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (shape, t) = broadcast_all("kl_divergence", inputs)?;
        let (mq, sq, mp, sp) = (t[0].view(), t[1].view(), t[2].view(), t[3].view());
        // (the variational layers' summed KL against a scalar prior comes
        // from the fused `mean_field_sample`; this is the elementwise,
        // broadcasting form)
        let data = map4(
            normal_kl_term,
            [mq, sq, mp, sp],
            crate::tensor::numel(&shape),
        );
        Ok(Tensor::new_unchecked(data, shape))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, out, g, &[true; 4])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (_, t) = broadcast_all("kl_divergence", inputs)?;
        let (mq, sq, mp, sp, g) = (t[0].view(), t[1].view(), t[2].view(), t[3].view(), g.data());
        let n = g.len();
        // With d = (mq - mp) / sp and r = sq / sp: d/dmq = d / sp = -d/dmp,
        // d/dsq = sq / sp^2 - 1 / sq, d/dsp = (1 - r^2 - d^2) / sp.
        let gv = View::each(g);
        // g (mq - mp) / sp² and g (sq / sp² - 1 / sq), dividing by `sp`
        // twice: `sp²` underflows from scales of about 1e-154 (1e-19 in
        // f32), where the slope in `mq` came out 0/0 = NaN for `mq = mp`
        // (it is 0) and `inf` for a small `mq - mp` (1e-30 against a
        // scale of 1e-20 in f32: 1e10)
        let dmq = map4(
            |g, mq, mp, sp| {
                let (h, k) = halved_difference(mq, mp);
                g * (h / sp / sp * k)
            },
            [gv, mq, mp, sp],
            n,
        );
        let dsq = needs[1].then(|| {
            map4(
                |g, sq, sp, _| {
                    let slope = match near_square_excess(sq, sp) {
                        Some(excess) => excess / sq,
                        None => sq / sp / sp - F::one() / sq,
                    };
                    g * slope
                },
                [gv, sq, sp, sp],
                n,
            )
        });
        let dsp = needs[3].then(|| {
            let mut out = vec![F::zero(); n];
            par_fill(
                &mut out,
                #[inline(always)]
                |start, chunk| {
                    for (j, out) in chunk.iter_mut().enumerate() {
                        let i = start + j;
                        let b = sp.at(i);
                        let (r, d) = (sq.at(i) / b, standardized(mq.at(i), mp.at(i), b));
                        *out = match near_square_excess(sq.at(i), b) {
                            Some(excess) => g[i] * -(excess + d * d) / b,
                            None => g[i] * (F::one() - r * r - d * d) / b,
                        };
                    }
                },
            );
            Storage::from_vec(out)
        });
        let dmp = needs[2].then(|| Storage::collect(n, dmq.iter().map(|&v| -v)));
        let finish = |d: Option<Storage<F>>, k: usize| -> Result<Option<Tensor<F>>> {
            d.map(|d| {
                Tensor::new_unchecked(d, out.shape().to_vec()).sum_to_owned(inputs[k].shape())
            })
            .transpose()
        };
        Ok(vec![
            finish(needs[0].then_some(dmq), 0)?,
            finish(dsq, 1)?,
            finish(dmp, 2)?,
            finish(dsp, 3)?,
        ])
    }
}

/// The normal distribution.
///
/// # Density
/// `p(x) = exp(-(x - loc)^2 / (2 scale^2)) / (scale sqrt(2 pi))`
///
/// # Parameters
/// - `loc`: any finite real.
/// - `scale`: finite and at least the smallest normal number (a subnormal
///   scale's reciprocal can overflow).
///
/// Their shapes broadcast to the batch shape; the event shape is `[]`.
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let mu = store.add("mu", Tensor::scalar(0.0));
/// let sd = store.add_positive("sd", Tensor::scalar(1.0));
/// let tape = Tape::new();
/// let normal = Normal::from_params(&tape, &store, mu, sd)?;
/// let lp = normal.log_prob(tape.constant(Tensor::vector(&[0.5, -1.0])))?.sum();
/// let grads = lp.backward()?;
/// assert!(grads.param(mu).is_some() && grads.param(sd).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] for a non-finite `loc` or a `scale` that is
/// not `> 0`; [`Error::BatchShapeMismatch`] when the shapes do not broadcast.
#[derive(Clone, Copy)]
pub struct Normal<'t, F: Element> {
    loc: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Normal<'t, F> {
    /// A normal distribution with the given location and scale.
    pub fn new(loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        same_tape("Normal::new", &loc, &scale)?;
        check_finite("Normal", "loc", &loc)?;
        check_divisor("Normal", "scale", &scale)?;
        batch_broadcast("Normal", ("loc", loc.shape()), ("scale", scale.shape()))?;
        Ok(Normal { loc, scale })
    }

    /// A normal distribution whose parameters are read from a store (a
    /// positive parameter is read as `softplus(rho) + eps`).
    pub fn from_params(
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        loc: Param,
        scale: Param,
    ) -> Result<Self> {
        Self::new(tape.try_param(store, loc)?, tape.try_param(store, scale)?)
    }

    /// N(0, 1) with the given batch shape, as constants.
    pub fn standard(tape: &'t Tape<F>, shape: &[usize]) -> Self {
        Normal {
            loc: tape.constant(Tensor::zeros(shape)),
            scale: tape.constant(Tensor::ones(shape)),
        }
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

impl<'t, F: Element> Distribution<'t, F> for Normal<'t, F> {
    super::kl::builtin_kl!(
        Normal => kl_normal_normal,
        Laplace => super::univariate::kl_normal_laplace,
    );

    fn name(&self) -> &'static str {
        "Normal"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.loc.tape
    }
    // ln p(x) = -((x - loc) / scale)^2 / 2 - ln scale - ln(2 pi) / 2
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Normal::log_prob", &x, &self.loc)?;
        check_finite("Normal", "value", &x)?;
        batch_broadcast(
            "Normal",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        normal_log_prob(x, self.loc, self.scale)
    }
    // loc + scale * eps, eps ~ N(0, 1): differentiable in loc and scale.
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let eps = standard_normal(&sample_shape(n, &self.batch_shape()), rng);
        self.tape().constant(eps).affine(self.scale, self.loc)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    /// The values of `rsample_n`, without the tape.
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::check_draw_count("Normal", n)?;
        let batch = self.batch_shape();
        let loc = self.loc.value().broadcast_to(&batch)?;
        let scale = self.scale.value().broadcast_to(&batch)?;
        let mut x: Tensor<F> = standard_normal(&sample_shape(n, &batch), rng);
        let (loc, scale) = (loc.data(), scale.data());
        // in place, a draw of the batch at a time (the batch's elements
        // repeat along the draws)
        let values = x.data_mut();
        match (loc, scale) {
            ([], _) => {}
            ([loc], [scale]) => values.iter_mut().for_each(|x| *x = *loc + *scale * *x),
            _ => {
                for draw in values.chunks_exact_mut(loc.len()) {
                    for ((x, &loc), &scale) in draw.iter_mut().zip(loc).zip(scale) {
                        *x = loc + scale * *x;
                    }
                }
            }
        }
        Ok(x)
    }
    // H = 1/2 + ln(2 pi)/2 + ln scale
    fn entropy(&self) -> Result<Var<'t, F>> {
        // (in f64, rounded once: near its root the two terms rounded apart
        // lost its digits in f32)
        let h = self.scale.ln_plus(0.5 + HALF_LN_2PI);
        h.broadcast_to(&self.batch_shape())
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        self.loc.broadcast_to(&self.batch_shape())
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        self.scale.square().broadcast_to(&self.batch_shape())
    }
    fn stddev(&self) -> Result<Var<'t, F>> {
        self.scale.broadcast_to(&self.batch_shape())
    }
    fn batch_shape(&self) -> Vec<usize> {
        crate::tensor::broadcast_shape(&self.loc.shape(), &self.scale.shape())
            .unwrap_or_else(|| self.loc.shape())
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(q || p) between normals: `ln(sp/sq) + (sq^2 + (mq - mp)^2) / (2 sp^2) - 1/2`.
pub(crate) fn kl_normal_normal<'t, F: Element>(
    q: &Normal<'t, F>,
    p: &Normal<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.loc, &p.loc)?;
    batch_broadcast(
        "Normal",
        ("q batch", q.batch_shape()),
        ("p batch", p.batch_shape()),
    )
    .map_err(|e| match e {
        Error::BatchShapeMismatch { lhs, rhs, .. } => Error::ShapeMismatch {
            op: "kl_divergence",
            lhs,
            rhs,
        },
        e => e,
    })?;
    q.loc
        .tape
        .apply(NormalKl, &[q.loc, q.scale, p.loc, p.scale])
}

/// The half-normal distribution on `[0, inf)`: `|x|` for `x ~ N(0, scale)`,
/// a weakly informative prior for a scale.
///
/// # Density
/// `ln p(x) = ln 2 + ln N(x; 0, scale)` for `x >= 0`; `-inf` (gradient 0)
/// for `x < 0`.
///
/// # Sampling
/// `x = scale · |ε|`, `ε ~ N(0, 1)`: `rsample` is differentiable in the
/// scale.
///
/// # Moments
/// Mean `scale √(2/π)`, variance `scale² (1 - 2/π)`, entropy
/// `ln scale + ln(π/2)/2 + 1/2`.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = HalfNormal::new(tape.scalar(2.0))?;
/// assert!((d.mean()?.item()? - 2.0 * (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-12);
/// assert_eq!(d.log_prob(tape.scalar(-0.5))?.item()?, f64::NEG_INFINITY);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct HalfNormal<'t, F: Element> {
    scale: Var<'t, F>,
}

impl<'t, F: Element> HalfNormal<'t, F> {
    /// From a scale (the standard deviation of the normal it folds).
    ///
    /// # Errors
    /// A scale that is not finite or is below the smallest normal number.
    pub fn new(scale: Var<'t, F>) -> Result<Self> {
        check_divisor("HalfNormal", "scale", &scale)?;
        Ok(HalfNormal { scale })
    }

    /// The scale.
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }

    /// The normal it folds, `N(0, scale)`.
    fn unfolded(&self) -> Normal<'t, F> {
        Normal {
            loc: self.scale.tape.scalar(F::zero()),
            scale: self.scale,
        }
    }
}

impl<'t, F: Element> Distribution<'t, F> for HalfNormal<'t, F> {
    super::kl::builtin_kl!(HalfNormal => kl_half_normal);

    fn name(&self) -> &'static str {
        "HalfNormal"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.scale.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("HalfNormal::log_prob", &x, &self.scale)?;
        check_finite("HalfNormal", "value", &x)?;
        batch_broadcast(
            "HalfNormal",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        let normal = self.unfolded();
        on_support(
            "HalfNormal",
            x,
            |_, v| v >= F::zero(),
            F::zero(),
            |x| Ok(normal_log_prob(x, normal.loc, normal.scale)? + F::lit(std::f64::consts::LN_2)),
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let eps: Tensor<F> = standard_normal(&sample_shape(n, &self.batch_shape()), rng);
        Ok(self.scale * eps.map(|e| e.abs()))
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Ok(self
            .scale
            .ln_plus(0.5 * (std::f64::consts::PI / 2.0).ln() + 0.5))
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Ok(self.scale * F::lit((2.0 / std::f64::consts::PI).sqrt()))
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Ok(self.scale.square() * F::lit(1.0 - 2.0 / std::f64::consts::PI))
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.scale.shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(HalfNormal || HalfNormal): the KL of the normals they fold (folding
/// both densities at 0 doubles each, and leaves their ratio),
/// `ln(s2/s1) + s1² / (2 s2²) - 1/2`.
pub(crate) fn kl_half_normal<'t, F: Element>(
    q: &HalfNormal<'t, F>,
    p: &HalfNormal<'t, F>,
) -> Result<Var<'t, F>> {
    kl_normal_normal(&q.unfolded(), &p.unfolded())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mix of single-value and full operands of the log-density and
    /// of the KL (a loop compiled for each mix) gives the bits of the same
    /// values all given in full, forward and backward, on one thread and
    /// two.
    #[test]
    fn every_mix_of_single_and_full_operands_gives_the_bits_of_full_ones() {
        use crate::distributions::kl::kl_divergence;
        for n in [7, 70_001] {
            // operand k of `count` (the scales positive)
            let full = |count: usize, k: usize| {
                let scale = (count == 3 && k == 2) || (count == 4 && k % 2 == 1);
                Tensor::<f32>::from_fn(&[n], move |i| {
                    let v = ((i * (k + 3)) % 101) as f32 * 0.02;
                    if scale { 0.3 + v } else { v - 1.0 }
                })
            };
            let one = |count: usize, k: usize| full(count, k).data()[n / 2];
            let weights = Tensor::<f32>::from_fn(&[n], |i| ((i % 5) as f32 - 2.0) * 0.5);
            // operand k single where bit k of `mix` is set (its value then
            // repeated in the full run)
            let operands = |count: usize, mix: usize, spread: bool| -> Vec<Tensor<f32>> {
                (0..count)
                    .map(|k| match (mix >> k & 1 == 1, spread) {
                        (false, _) => full(count, k),
                        (true, false) => Tensor::scalar(one(count, k)),
                        (true, true) => Tensor::full(&[n], one(count, k)),
                    })
                    .collect()
            };
            // the first position where two tensors' bits differ
            let differ = |a: &Tensor<f32>, b: &Tensor<f32>| {
                let bits =
                    |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let (a, b) = (bits(a), bits(b));
                (a.len() != b.len())
                    .then_some(0)
                    .or_else(|| (0..a.len()).find(|&i| a[i] != b[i]))
            };
            for (count, name) in [(3, "log_prob"), (4, "kl")] {
                // (all single: a single value, not comparable)
                for mix in 0..(1 << count) - 1 {
                    let run = |spread: bool| {
                        let tape = Tape::<f32>::new();
                        let v: Vec<_> = operands(count, mix, spread)
                            .into_iter()
                            .map(|t| tape.var(t))
                            .collect();
                        let y = match count {
                            3 => Normal::new(v[1], v[2]).unwrap().log_prob(v[0]).unwrap(),
                            _ => {
                                let q = Normal::new(v[0], v[1]).unwrap();
                                kl_divergence(&q, &Normal::new(v[2], v[3]).unwrap()).unwrap()
                            }
                        };
                        let g = (y * tape.constant(weights.clone()))
                            .sum()
                            .backward()
                            .unwrap();
                        let grads: Vec<Tensor<f32>> =
                            v.iter().map(|&v| g.get(v).unwrap().clone()).collect();
                        (y.value(), grads)
                    };
                    let ((y, g), (y_full, g_full)) = (run(false), run(true));
                    let what = format!("{name} n {n} mix {mix:b}");
                    if (count, mix) == (3, 0b110) {
                        // a single loc and scale take the likelihood's own
                        // path, `(x - m) / s` as `(x - m) (1 / s)`
                        let close = y
                            .data()
                            .iter()
                            .zip(y_full.data())
                            .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0));
                        assert!(close, "{what}");
                    } else {
                        assert_eq!(differ(&y, &y_full), None, "{what}");
                    }
                    for (k, (g, g_full)) in g.iter().zip(&g_full).enumerate() {
                        if mix >> k & 1 == 0 {
                            assert_eq!(differ(g, g_full), None, "{what} d{k}");
                        } else {
                            // a single value's gradient is the sum of the full one's
                            let want: f64 = g_full.data().iter().map(|&v| f64::from(v)).sum();
                            let got = f64::from(g.item().unwrap());
                            let scale: f64 =
                                g_full.data().iter().map(|&v| f64::from(v.abs())).sum();
                            assert!(
                                (got - want).abs() <= 1e-5 * scale.max(1e-30),
                                "{name} n {n} mix {mix:b} d{k}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Parameters given as a row along the leading axes, a column of
    /// per-row values, or a mix of these with single values and full ones,
    /// read where they lie, give the bits of the same parameters broadcast
    /// in full: the log-density and every gradient, on one thread and two.
    #[test]
    fn rows_and_columns_of_parameters_give_the_bits_of_full_ones() {
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // (x, loc, scale) shapes
        let cases: [[&[usize]; 3]; 8] = [
            // a row and runs of different periods: the runs broadcast
            [&[5, 3, 4], &[3, 4], &[5, 3, 1]],
            [&[3001, 70], &[70], &[70]],
            [&[3001, 70], &[3001, 70], &[1, 70]],
            [&[3001, 70], &[3001, 1], &[3001, 1]],
            [&[3001, 70], &[3001, 1], &[70]],
            [&[20011, 3], &[3], &[20011, 1]],
            [&[70], &[3001, 70], &[]],
            [&[5, 1, 4], &[5, 3, 1], &[3, 4]],
        ];
        for shapes in cases {
            let shape = shapes.iter().fold(vec![], |s, t| {
                crate::tensor::broadcast_shape(&s, t).unwrap()
            });
            let values: Vec<Tensor<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    Tensor::from_fn(s, |i| {
                        let v = ((i * (k + 3)) % 101) as f32 * 0.02;
                        if k == 2 { 0.3 + v } else { v - 1.0 }
                    })
                })
                .collect();
            let run = |wide: bool| {
                let tape = Tape::<f32>::new();
                let v: Vec<_> = values
                    .iter()
                    .map(|t| {
                        tape.var(if wide {
                            t.broadcast_to(&shape).unwrap()
                        } else {
                            t.clone()
                        })
                    })
                    .collect();
                let y = Normal::new(v[1], v[2]).unwrap().log_prob(v[0]).unwrap();
                let w = Tensor::<f32>::from_fn(&shape, |i| ((i % 5) as f32 - 2.0) * 0.5);
                let g = (y * tape.constant(w)).sum().backward().unwrap();
                let grads: Vec<Tensor<f32>> = v
                    .iter()
                    .zip(shapes)
                    .map(|(&v, s)| g.get(v).unwrap().clone().sum_to_owned(s).unwrap())
                    .collect();
                (y.value(), grads)
            };
            let ((y, g), (y_full, g_full)) = (run(false), run(true));
            assert_eq!(y.shape(), &shape[..], "{shapes:?}");
            assert!(bits(&y) == bits(&y_full), "{shapes:?}: values");
            for k in 0..3 {
                assert!(bits(&g[k]) == bits(&g_full[k]), "{shapes:?}: gradient {k}");
            }
        }
    }

    #[test]
    fn scalar_parameter_fast_path_matches_full_parameters() {
        // loc and scale given as single values (shape [] or [1]) against the
        // same values repeated to x's shape: log-probs and gradients agree
        let x = Tensor::from_fn(&[4, 25], |i| (i as f64 * 0.37).sin() * 3.0);
        for (param_shape, x_needs_grad) in [(vec![], false), (vec![1], false), (vec![1, 1], true)] {
            let tape = Tape::<f64>::new();
            let xv = if x_needs_grad {
                tape.var(x.clone())
            } else {
                tape.constant(x.clone())
            };
            let (m, s) = (
                tape.var(Tensor::full(&param_shape, 0.7)),
                tape.var(Tensor::full(&param_shape, 1.3)),
            );
            let (mf, sf) = (
                tape.var(Tensor::full(&[4, 25], 0.7)),
                tape.var(Tensor::full(&[4, 25], 1.3)),
            );
            let fast = Normal::new(m, s).unwrap().log_prob(xv).unwrap();
            let full = Normal::new(mf, sf).unwrap().log_prob(xv).unwrap();
            let (fv, uv) = (fast.value(), full.value());
            for (a, b) in fv.data().iter().zip(uv.data()) {
                assert!((a - b).abs() < 1e-13, "{a} vs {b}");
            }
            let weights = tape.constant(Tensor::from_fn(&[4, 25], |i| 1.0 + (i % 3) as f64));
            let gf = (fast * weights).sum().backward().unwrap();
            let gu = (full * weights).sum().backward().unwrap();
            for (p, pf) in [(m, mf), (s, sf)] {
                let want: f64 = gu.get(pf).unwrap().data().iter().sum();
                let got = gf.get(p).unwrap().item().unwrap();
                assert!(
                    (got - want).abs() < 1e-10 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
            }
            if x_needs_grad {
                assert_eq!(gf.get(xv).unwrap().data().len(), 100);
                for (a, b) in gf
                    .get(xv)
                    .unwrap()
                    .data()
                    .iter()
                    .zip(gu.get(xv).unwrap().data())
                {
                    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn log_prob_by_hand() {
        // N(1, 2) at x = 3: -0.5 * 1 - ln 2 - 0.9189385332 = -2.112085713764618
        let tape = Tape::<f64>::new();
        let n = Normal::new(tape.scalar(1.0), tape.scalar(2.0)).unwrap();
        let lp = n.log_prob(tape.scalar(3.0)).unwrap().item().unwrap();
        assert!((lp + 2.112_085_713_764_618).abs() < 1e-14, "{lp}");
    }

    #[test]
    fn kl_by_hand() {
        // KL(N(0,1) || N(1,2)) = ln 2 + (1 + 1)/8 - 1/2 = 0.4431471805599453
        let tape = Tape::<f64>::new();
        let q = Normal::new(tape.scalar(0.0), tape.scalar(1.0)).unwrap();
        let p = Normal::new(tape.scalar(1.0), tape.scalar(2.0)).unwrap();
        let kl = kl_normal_normal(&q, &p).unwrap().item().unwrap();
        assert!((kl - 0.443_147_180_559_945_3).abs() < 1e-15);
    }
}
