use super::{
    Distribution, HALF_LN_2PI, batch_broadcast, check_divisor, check_finite, check_values,
    same_tape, standard_normal, uniform,
};
use crate::autodiff::tape::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{join, par_blocks, par_fill, sum_lanes, vectorized};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// A mixture of `k` normals along the last axis of its parameters.
///
/// # Density
/// `p(x) = sum_j w_j N(x; loc_j, scale_j)`, evaluated as
/// `logsumexp_j(ln w_j + ln N(x; loc_j, scale_j))`: far in the tails, where
/// every component density underflows to 0, the log density stays exact.
/// Past the float range (every `((x - loc_j) / scale_j)²` overflows: about
/// 1.8e19 scales away in `f32`, 1.3e154 in `f64`) it is -inf, and its
/// gradients there are their limit: all of the responsibility on the
/// nearest components. The responsibilities (the gradients' shares, and
/// what [`responsibilities`](Self::responsibilities) gives) come from
/// differences that keep what tells nearly coincident components apart far
/// in the tails (their weights, or locs closer than the value's rounding),
/// where differences of the rounded joint log-densities lose it once
/// `z²/2` passes `2^24` (`f32`) or `2^53` (`f64`) times it.
///
/// The log-density is one fused op, forward and backward, vectorized over
/// the values, whether one set of components serves every value
/// (parameters of shape `[k]`, a prior over weights) or each value has its
/// own (a mixture density network's output).
///
/// # Parameters
/// - `log_weights` (or weights in (0, 1) summing to 1, or logits):
///   shape `batch + [k]`.
/// - `locs`: finite; `scales`: finite and `> 0`; both broadcast with the weights.
///
/// All parameters are differentiable. There is no closed-form entropy or KL:
/// use a Monte Carlo divergence ([`Divergence::MonteCarlo`](crate::Divergence)).
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let w = tape.var(Tensor::vector(&[0.3, 0.7]));
/// let locs = tape.var(Tensor::vector(&[-1.0, 2.0]));
/// let scales = tape.var(Tensor::vector(&[0.5, 1.0]));
/// let mix = MixtureOfNormals::new(w, locs, scales)?;
/// let lp = mix.log_prob(tape.scalar(0.0))?;
/// assert!(lp.backward()?.get(w).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Weights outside (0, 1) or not summing to 1, scales below the smallest
/// normal number, shapes that do not broadcast, no components.
#[derive(Clone, Copy)]
pub struct MixtureOfNormals<'t, F: Element> {
    log_weights: Var<'t, F>,
    locs: Var<'t, F>,
    scales: Var<'t, F>,
    name: &'static str,
}

impl<'t, F: Element> MixtureOfNormals<'t, F> {
    /// From component weights (each in (0, 1), summing to 1 along the last axis).
    pub fn new(weights: Var<'t, F>, locs: Var<'t, F>, scales: Var<'t, F>) -> Result<Self> {
        check_values(
            "MixtureOfNormals",
            "weights",
            &weights,
            "must be in (0, 1)",
            |w| w > F::zero() && w < F::one(),
        )?;
        let last = weights.shape().len().saturating_sub(1);
        let sums = weights.sum_axis(last, false)?;
        check_values(
            "MixtureOfNormals",
            "sum of weights",
            &sums,
            "must be 1",
            |s| (s - F::one()).abs() <= F::lit(1e-6),
        )?;
        Self::from_log_weights(weights.ln(), locs, scales, "MixtureOfNormals")
    }

    /// From unnormalized logits of the weights.
    pub fn from_logits(logits: Var<'t, F>, locs: Var<'t, F>, scales: Var<'t, F>) -> Result<Self> {
        check_finite("MixtureOfNormals", "logits", &logits)?;
        let last = logits.shape().len().saturating_sub(1);
        Self::from_log_weights(logits.log_softmax(last)?, locs, scales, "MixtureOfNormals")
    }

    fn from_log_weights(
        log_weights: Var<'t, F>,
        locs: Var<'t, F>,
        scales: Var<'t, F>,
        name: &'static str,
    ) -> Result<Self> {
        same_tape("MixtureOfNormals::new", &log_weights, &locs)?;
        same_tape("MixtureOfNormals::new", &log_weights, &scales)?;
        check_finite(name, "locs", &locs)?;
        check_divisor(name, "scales", &scales)?;
        let s = batch_broadcast(
            name,
            ("weights", log_weights.shape()),
            ("locs", locs.shape()),
        )?;
        let full = batch_broadcast(name, ("weights and locs", s), ("scales", scales.shape()))?;
        if full.last().copied().unwrap_or(0) == 0 {
            return Err(Error::invalid(
                "MixtureOfNormals",
                format!("needs at least one component: the parameters broadcast to shape {full:?}"),
            ));
        }
        Ok(MixtureOfNormals {
            log_weights,
            locs,
            scales,
            name,
        })
    }

    fn full_shape(&self) -> Vec<usize> {
        let s = crate::tensor::broadcast_shape(&self.log_weights.shape(), &self.locs.shape())
            .unwrap_or_default();
        crate::tensor::broadcast_shape(&s, &self.scales.shape()).unwrap_or_default()
    }

    /// The posterior responsibility of each component at `x`, of shape
    /// `batch + [k]`: the softmax of the joint log-densities
    /// `ln w_k + ln N(x; m_k, s_k)` along the last axis, from the
    /// differences that keep nearly coincident components apart far in the
    /// tails and with the limit past the float range (see the type's docs),
    /// in one op, forward and backward.
    ///
    /// # Errors
    /// A value that is not finite, or whose shape does not broadcast with
    /// the batch shape.
    pub fn responsibilities(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        check_finite(self.name, "value", &x)?;
        let inputs = self.per_value_inputs(x)?;
        x.tape.apply(MixtureResponsibilities, &inputs)
    }

    /// `[x, ln w, m, s]` broadcast to a set of components for each value:
    /// `x` to the broadcast of its shape and the batch shape, the others
    /// to that and `[k]`.
    fn per_value_inputs(&self, x: Var<'t, F>) -> Result<[Var<'t, F>; 4]> {
        let batch = self.batch_shape();
        let mut shape = crate::tensor::broadcast_shape(&x.shape(), &batch).ok_or_else(|| {
            Error::invalid(
                self.name,
                format!(
                    "a value of shape {:?} does not broadcast with the batch shape {batch:?}",
                    x.shape()
                ),
            )
        })?;
        let x = x.broadcast_to(&shape)?;
        shape.push(self.full_shape().last().copied().unwrap_or(1));
        Ok([
            x,
            self.log_weights.broadcast_to(&shape)?,
            self.locs.broadcast_to(&shape)?,
            self.scales.broadcast_to(&shape)?,
        ])
    }
}

/// `ln Σ_k w_k N(x; m_k, s_k)` elementwise over `x`, for one set of `K`
/// components (inputs `[x, ln w, m, s]`, the last three of shape `[K]`):
/// one pass over `x` forward and one backward, where the composed form
/// builds `[..x, K]` tensors in a dozen mostly serial passes (a
/// spike-and-slab prior over a layer's weights took many times the rest
/// of its step). With
/// `z_k = (x - m_k) / s_k`, `t_k = ln w_k - ln s_k - ln √(2π) - z_k²/2` and
/// the responsibilities `r_k` (the softmax of the `t_k`, from their
/// differences to the largest): `d/dx = -Σ r_k z_k / s_k`, `d/d ln w_k = r_k`,
/// `d/dm_k = r_k z_k / s_k`, `d/ds_k = r_k (z_k² - 1) / s_k`. A value whose
/// incoming gradient is 0, or a component whose responsibility is 0, adds
/// nothing, also where `z_k / s_k` overflows (`0 · inf` would be NaN). The
/// sums over the values are taken in `f64`.
struct ScalarMixtureLogProb;

/// A component's terms: `c = ln w - ln s - ln √(2π)`, `m`, `1 / s` and
/// `m / s` (as `m · (1 / s)`).
#[derive(Clone, Copy)]
struct Component<F> {
    c: F,
    m: F,
    inv: F,
    m_inv: F,
}

impl<F: Element> Component<F> {
    /// The terms of `w N(m, s)` from `ln w`, `m`, `s` and `ln s`.
    #[inline(always)]
    fn new(ln_w: F, m: F, s: F, ln_s: F) -> Self {
        let inv = F::one() / s;
        Component {
            c: ln_w - ln_s - F::lit(HALF_LN_2PI),
            m,
            inv,
            m_inv: m * inv,
        }
    }
}

/// Each component's [`Component`] terms.
fn component_terms<F: Element>(inputs: &[&Tensor<F>]) -> Vec<Component<F>> {
    let (lw, m, s) = (inputs[1].data(), inputs[2].data(), inputs[3].data());
    (0..lw.len())
        .map(|k| Component::new(lw[k], m[k], s[k], s[k].ln()))
        .collect()
}

/// Values a block of the op handles at a time.
const BLOCK: usize = 256;

/// The components a block of values is measured against: one set for every
/// value (a slice of [`Component`]s) or a set per value ([`PerValue`]).
trait Components<F> {
    /// How many components a value has.
    fn count(&self) -> usize;
    /// Component `k` of the block's value `i`.
    fn at(&self, k: usize, i: usize) -> Component<F>;
    /// Takes the components of the `n` values from `start` (of the inputs
    /// `[x, ln w, m, s]`); one set for every value has them already.
    fn load(&mut self, _inputs: &[&Tensor<F>], _start: usize, _n: usize) {}
}

impl<F: Copy> Components<F> for Vec<Component<F>> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn at(&self, k: usize, _: usize) -> Component<F> {
        self[k]
    }
}

/// The components of a block of values, each its own: the terms of
/// component `k` of value `i` at `k * BLOCK + i` of each array.
struct PerValue<F> {
    k: usize,
    c: Vec<F>,
    m: Vec<F>,
    inv: Vec<F>,
    m_inv: Vec<F>,
}

impl<F: Element> PerValue<F> {
    fn new(k: usize) -> Self {
        let zeros = || vec![F::zero(); k * BLOCK];
        PerValue {
            k,
            c: zeros(),
            m: zeros(),
            inv: zeros(),
            m_inv: zeros(),
        }
    }
}

impl<F: Element> Components<F> for PerValue<F> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.k
    }
    /// `K` consecutive entries of `ln w`, `m` and `s` a value, from
    /// `start K`.
    #[inline(always)]
    fn load(&mut self, inputs: &[&Tensor<F>], start: usize, n: usize) {
        let k = self.k;
        let (lw, m, s) = (inputs[1].data(), inputs[2].data(), inputs[3].data());
        for j in 0..k {
            let at = |i: usize| (start + i) * k + j;
            let row = j * BLOCK..j * BLOCK + n;
            let (c, mj) = (&mut self.c[row.clone()], &mut self.m[row.clone()]);
            let (inv, m_inv) = (&mut self.inv[row.clone()], &mut self.m_inv[row]);
            for i in 0..n {
                let s = s[at(i)];
                let comp = Component::new(lw[at(i)], m[at(i)], s, s.fast_ln());
                (c[i], mj[i], inv[i], m_inv[i]) = (comp.c, comp.m, comp.inv, comp.m_inv);
            }
        }
    }
    #[inline(always)]
    fn at(&self, k: usize, i: usize) -> Component<F> {
        let at = k * BLOCK + i;
        Component {
            c: self.c[at],
            m: self.m[at],
            inv: self.inv[at],
            m_inv: self.m_inv[at],
        }
    }
}

/// The terms of a block of values `x`: the largest `t_k` of each value
/// (`top`), each component's difference to it `e_k = t_k - top`
/// (`t[k * BLOCK + i]`) and `Σ_k e^(e_k)` (`total`); loops over the block,
/// which vectorize, one component after the other.
///
/// With `EXACT` the differences are taken as
/// `(c_k - c_j) - (z_k - z_j)(z_k + z_j)/2` against the component `j` of
/// the largest `t_j`, with `z_k - z_j = x (1/s_k - 1/s_j) - (m_k/s_k - m_j/s_j)`,
/// which carries no rounding of `x` for components of one scale: the
/// responsibilities of the backward. As `t_k - t_j` (without `EXACT`, for
/// the value, whose error stays within a few ulp of `top`), they carry the
/// rounding of each `z²/2`, and far in the tails, where `z²/2` dwarfs the
/// `c_k`, they round the `c_k`'s differences away: two components of one
/// loc and scale with weights 0.3 and 0.7 shared the responsibility for a
/// value 10⁴ scales away unevenly (0.02 and 0.98) in `f32`.
#[inline(always)]
fn joint_terms<F: Element, C: Components<F> + ?Sized, const EXACT: bool>(
    comps: &C,
    x: &[F],
    t: &mut [F],
    top: &mut [F; BLOCK],
    total: &mut [F; BLOCK],
) {
    let n = x.len();
    let half = F::lit(0.5);
    // with EXACT, the component of the largest t_k (the first where they
    // tie) and its z; where every t_k of a value is -inf, the first
    let (mut c, mut inv, mut m_inv) = ([F::zero(); BLOCK], [F::one(); BLOCK], [F::zero(); BLOCK]);
    for i in 0..n {
        let first = comps.at(0, i);
        (c[i], inv[i], m_inv[i]) = (first.c, first.inv, first.m_inv);
    }
    let mut z_top = [F::zero(); BLOCK];
    top[..n].fill(F::neg_infinity());
    for k in 0..comps.count() {
        let tk = &mut t[k * BLOCK..k * BLOCK + n];
        for i in 0..n {
            let comp = comps.at(k, i);
            let z = (x[i] - comp.m) * comp.inv;
            let t = comp.c - half * z * z;
            if EXACT {
                let larger = t > top[i];
                tk[i] = z;
                top[i] = if larger { t } else { top[i] };
                c[i] = if larger { comp.c } else { c[i] };
                inv[i] = if larger { comp.inv } else { inv[i] };
                m_inv[i] = if larger { comp.m_inv } else { m_inv[i] };
                z_top[i] = if larger { z } else { z_top[i] };
            } else {
                tk[i] = t;
                top[i] = top[i].max(t);
            }
        }
    }
    total[..n].fill(F::zero());
    for k in 0..comps.count() {
        let ek = &mut t[k * BLOCK..k * BLOCK + n];
        for i in 0..n {
            let comp = comps.at(k, i);
            let e = if EXACT {
                let z = ek[i];
                let dz = x[i] * (comp.inv - inv[i]) - (comp.m_inv - m_inv[i]);
                (comp.c - c[i]) - half * dz * (z + z_top[i])
            } else {
                ek[i] - top[i]
            };
            ek[i] = e;
            total[i] = total[i] + e.fast_exp();
        }
    }
}

/// A value's log-density from its `top` and `total`: -inf where every
/// density underflowed (`top + ln total` would be NaN).
#[inline(always)]
fn log_density<F: Element>(top: F, total: F) -> F {
    if top == F::neg_infinity() {
        top
    } else {
        top + total.fast_ln()
    }
}

/// Where every component's `t_k` of a value is -inf (each `z²` overflowed:
/// the value lies farther from every component, in its scales, than the
/// float range reaches), the responsibilities that the backward reads from
/// `t` and `total` are their limit: all of it on the components nearest in
/// `|z|`, shared among those in proportion to `e^(c_k)` (their weights over
/// their scales), none on the others. The value itself stays -inf, its
/// correctly rounded value.
#[inline(always)]
fn limit_terms<F: Element, C: Components<F> + ?Sized>(
    comps: &C,
    x: &[F],
    t: &mut [F],
    top: &[F; BLOCK],
    total: &mut [F; BLOCK],
) {
    let far = F::neg_infinity();
    for (i, &x) in x.iter().enumerate() {
        if top[i] != far {
            continue;
        }
        let ks = 0..comps.count();
        let distance = |k: usize| {
            let comp = comps.at(k, i);
            ((x - comp.m) * comp.inv).abs()
        };
        let nearest = ks.clone().map(distance).fold(F::infinity(), F::min);
        let near = |k: &usize| distance(*k) == nearest;
        let best = ks
            .clone()
            .filter(near)
            .fold(far, |b, k| b.max(comps.at(k, i).c));
        for k in ks.clone() {
            t[k * BLOCK + i] = if near(&k) {
                comps.at(k, i).c - best
            } else {
                far
            };
        }
        total[i] = ks.fold(F::zero(), |s, k| s + t[k * BLOCK + i].exp());
    }
}

/// The backward's shares of component `k` of a block's values `x`, each
/// value's `rate(i)` the derivative of the output in `t_k` (`g r_k` for
/// the log-density): the rate into `r`, `rate z / s` into `dm` and
/// `rate (z² - 1) / s` into `ds`, and `dm` taken off `dx`. A value whose
/// rate is 0 adds nothing (`z / s` may be inf where it has no
/// responsibility).
#[inline(always)]
fn shares<F: Element, C: Components<F> + ?Sized>(
    comps: &C,
    k: usize,
    x: &[F],
    rate: impl Fn(usize) -> F,
    [r, dm, ds]: [&mut [F; BLOCK]; 3],
    dx: &mut [F],
) {
    for i in 0..x.len() {
        let comp = comps.at(k, i);
        let rate = rate(i);
        let z = (x[i] - comp.m) * comp.inv;
        let idle = rate == F::zero();
        r[i] = if idle { F::zero() } else { rate };
        dm[i] = if idle { F::zero() } else { rate * z * comp.inv };
        ds[i] = if idle {
            F::zero()
        } else {
            rate * (z * z - F::one()) * comp.inv
        };
        dx[i] = dx[i] - dm[i];
    }
}

/// The log-density's rate of a value (see [`shares`]): `g r_k` from `e_k`
/// and `total`, 0 where the incoming gradient is.
#[inline(always)]
fn density_rate<F: Element>(g: F, e: F, total: F) -> F {
    if g == F::zero() {
        F::zero()
    } else {
        e.fast_exp() * (g / total)
    }
}

/// The log-density of each value (input 0) against the components that
/// `new` makes for each part of the values, loaded a block at a time.
fn log_densities<F: Element, C: Components<F>>(
    inputs: &[&Tensor<F>],
    new: impl Fn() -> C + Sync,
) -> Result<Tensor<F>> {
    let x = inputs[0].data();
    let mut out = vec![F::zero(); x.len()];
    par_fill(
        &mut out,
        #[inline(always)]
        |start, chunk| {
            let mut comps = new();
            let mut t = vec![F::zero(); comps.count() * BLOCK];
            let (mut top, mut total) = ([F::zero(); BLOCK], [F::zero(); BLOCK]);
            for (b, out) in chunk.chunks_mut(BLOCK).enumerate() {
                let from = start + b * BLOCK;
                let x = &x[from..from + out.len()];
                comps.load(inputs, from, out.len());
                joint_terms::<F, C, false>(&comps, x, &mut t, &mut top, &mut total);
                for ((o, &top), &total) in out.iter_mut().zip(top.iter()).zip(total.iter()) {
                    *o = log_density(top, total);
                }
            }
        },
    );
    Tensor::from_vec(out, inputs[0].shape())
}

impl<F: Element> Op<F> for ScalarMixtureLogProb {
    fn name(&self) -> &str {
        "mixture_log_prob"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let comps = component_terms(inputs);
        log_densities(inputs, || comps.clone())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let comps = component_terms(inputs);
        let k = comps.len();
        let (x, g) = (inputs[0].data(), g.data());
        let n = x.len();
        let mut dx = vec![F::zero(); n];
        // per component: Σ g r, Σ g r z / s and Σ g r (z² - 1) / s, each
        // block's sum in lanes, the blocks' in f64
        let (first, second) = par_blocks(
            &mut dx[..],
            n,
            n * k,
            #[inline(always)]
            |items, dx| {
                let mut sums = vec![[0.0f64; 3]; k];
                let mut t = vec![F::zero(); k * BLOCK];
                let (mut top, mut total) = ([F::zero(); BLOCK], [F::zero(); BLOCK]);
                let (mut r, mut dm, mut ds) =
                    ([F::zero(); BLOCK], [F::zero(); BLOCK], [F::zero(); BLOCK]);
                let (x, g) = (&x[items.clone()], &g[items]);
                for ((dx, x), g) in dx
                    .chunks_mut(BLOCK)
                    .zip(x.chunks(BLOCK))
                    .zip(g.chunks(BLOCK))
                {
                    let len = x.len();
                    joint_terms::<F, _, true>(&comps, x, &mut t, &mut top, &mut total);
                    if top[..len].contains(&F::neg_infinity()) {
                        limit_terms(&comps, x, &mut t, &top, &mut total);
                    }
                    dx.fill(F::zero());
                    for c in 0..k {
                        let ek = &t[c * BLOCK..c * BLOCK + len];
                        let rate = |i: usize| density_rate(g[i], ek[i], total[i]);
                        shares(&comps, c, x, rate, [&mut r, &mut dm, &mut ds], dx);
                        let block_sum = |v: &[F]| sum_lanes(v).to_f64().unwrap_or(f64::NAN);
                        sums[c][0] += block_sum(&r[..len]);
                        sums[c][1] += block_sum(&dm[..len]);
                        sums[c][2] += block_sum(&ds[..len]);
                    }
                }
                sums
            },
        );
        let column = |c: usize| {
            let v = (0..k).map(|i| F::lit(first[i][c] + second[i][c])).collect();
            Tensor::from_vec(v, &[k]).map(Some)
        };
        Ok(vec![
            Some(Tensor::from_vec(dx, inputs[0].shape())?),
            column(0)?,
            column(1)?,
            column(2)?,
        ])
    }
}

/// [`ScalarMixtureLogProb`] with a set of `K` components for each value
/// (inputs `[x, ln w, m, s]`, `x` of the batch shape and the others of the
/// batch shape and `[K]`, broadcast to them before): the same formulas and
/// loops, a block's components laid out by component and value
/// ([`PerValue`]), where the composed form built `[..x, K]` tensors in a
/// dozen passes and lost the responsibilities far in the tails (as
/// differences of rounded joint log-densities) and past the float range
/// (NaN).
struct BatchedMixtureLogProb;

/// `K` of the per-value ops' inputs: the last axis of the parameters (at
/// least 1, which construction checks), also where there are no values.
fn components_per_value<F: Element>(inputs: &[&Tensor<F>]) -> usize {
    inputs[1].shape().last().copied().unwrap_or(1).max(1)
}

/// The terms of the `x.len()` values from `from`: their components into
/// `comps`, and [`joint_terms`]' exact `e_k`, `top` and `total` (the limit
/// where every `t_k` is -inf).
#[inline(always)]
fn per_value_terms<F: Element>(
    inputs: &[&Tensor<F>],
    from: usize,
    x: &[F],
    comps: &mut PerValue<F>,
    t: &mut [F],
    (top, total): (&mut [F; BLOCK], &mut [F; BLOCK]),
) {
    comps.load(inputs, from, x.len());
    joint_terms::<F, _, true>(comps, x, t, top, total);
    if top[..x.len()].contains(&F::neg_infinity()) {
        limit_terms(comps, x, t, top, total);
    }
}

/// The backward of the per-value ops over the values from `start`: the
/// gradients of `x` into `dx` and of `ln w`, `m` and `s` into the three
/// others (`K` a value each), for an incoming gradient `g` of the
/// log-density (a value each) or, with `RESPONSIBILITIES`, of the
/// responsibilities (`K` a value each), whose `t_k` get
/// `r_k (g_k - Σ_j r_j g_j)`.
#[inline(always)]
fn per_value_backward<F: Element, const RESPONSIBILITIES: bool>(
    inputs: &[&Tensor<F>],
    g: &[F],
    start: usize,
    dx: &mut [F],
    [dlw, dm, ds]: [&mut [F]; 3],
) {
    let k = components_per_value(inputs);
    let mut comps = PerValue::new(k);
    let mut t = vec![F::zero(); k * BLOCK];
    let (mut top, mut total) = ([F::zero(); BLOCK], [F::zero(); BLOCK]);
    let mut out = [[F::zero(); BLOCK]; 3];
    let mut dot = [F::zero(); BLOCK];
    let x = inputs[0].data();
    for (b, dx) in dx.chunks_mut(BLOCK).enumerate() {
        let (from, len) = (start + b * BLOCK, dx.len());
        let (x, g_value) = (&x[from..from + len], &g[from..]);
        per_value_terms(inputs, from, x, &mut comps, &mut t, (&mut top, &mut total));
        // component c of value i: its incoming gradient, its gradients' place
        let at = |i: usize, c: usize| (from + i) * k + c;
        if RESPONSIBILITIES {
            // the responsibilities in place of the e_k, and Σ_j r_j g_j
            dot[..len].fill(F::zero());
            for c in 0..k {
                let rc = &mut t[c * BLOCK..c * BLOCK + len];
                for i in 0..len {
                    rc[i] = rc[i].fast_exp() / total[i];
                    dot[i] = dot[i] + rc[i] * g[at(i, c)];
                }
            }
        }
        dx.fill(F::zero());
        for c in 0..k {
            let ek = &t[c * BLOCK..c * BLOCK + len];
            let [r, m, s] = &mut out;
            let rate = |i: usize| match RESPONSIBILITIES {
                true => ek[i] * (g[at(i, c)] - dot[i]),
                false => density_rate(g_value[i], ek[i], total[i]),
            };
            shares(&comps, c, x, rate, [r, m, s], dx);
            for i in 0..len {
                let at = at(i, c) - start * k;
                (dlw[at], dm[at], ds[at]) = (r[i], m[i], s[i]);
            }
        }
    }
}

/// The gradients of the per-value ops' inputs ([`per_value_backward`] on
/// two halves of the values).
fn per_value_gradients<F: Element, const RESPONSIBILITIES: bool>(
    inputs: &[&Tensor<F>],
    g: &Tensor<F>,
) -> Result<Vec<Option<Tensor<F>>>> {
    let (n, len) = (inputs[0].len(), inputs[1].len());
    let k = components_per_value(inputs);
    let mut dx = vec![F::zero(); n];
    let zeros = || vec![F::zero(); len];
    let (mut dlw, mut dm, mut ds) = (zeros(), zeros(), zeros());
    let g = g.data();
    let half = n / 2;
    let (dx0, dx1) = dx.split_at_mut(half);
    let (dlw0, dlw1) = dlw.split_at_mut(half * k);
    let (dm0, dm1) = dm.split_at_mut(half * k);
    let (ds0, ds1) = ds.split_at_mut(half * k);
    // (each half inlined into `vectorized`, whose instructions it takes)
    if len >= 4096 {
        join(
            #[inline(always)]
            || per_value_backward::<F, RESPONSIBILITIES>(inputs, g, 0, dx0, [dlw0, dm0, ds0]),
            #[inline(always)]
            || per_value_backward::<F, RESPONSIBILITIES>(inputs, g, half, dx1, [dlw1, dm1, ds1]),
        );
    } else {
        vectorized(
            #[inline(always)]
            || {
                per_value_backward::<F, RESPONSIBILITIES>(inputs, g, 0, dx0, [dlw0, dm0, ds0]);
                per_value_backward::<F, RESPONSIBILITIES>(inputs, g, half, dx1, [dlw1, dm1, ds1]);
            },
        );
    }
    let params = inputs[1].shape();
    Ok(vec![
        Some(Tensor::from_vec(dx, inputs[0].shape())?),
        Some(Tensor::from_vec(dlw, params)?),
        Some(Tensor::from_vec(dm, params)?),
        Some(Tensor::from_vec(ds, params)?),
    ])
}

impl<F: Element> Op<F> for BatchedMixtureLogProb {
    fn name(&self) -> &str {
        "mixture_log_prob"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let k = components_per_value(inputs);
        log_densities(inputs, || PerValue::new(k))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        per_value_gradients::<F, false>(inputs, g)
    }
}

/// The responsibilities of each value's components (inputs as
/// [`BatchedMixtureLogProb`]'s, the output of the parameters' shape):
/// `e^(e_k) / total` from [`joint_terms`]' exact differences, the limit
/// past the float range. The incoming gradients `g_k` give each `t_k`
/// `r_k (g_k - Σ_j r_j g_j)`, passed on as the log-density's are.
struct MixtureResponsibilities;

impl<F: Element> Op<F> for MixtureResponsibilities {
    fn name(&self) -> &str {
        "mixture_responsibilities"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0].data();
        let k = components_per_value(inputs);
        let mut out = vec![F::zero(); inputs[1].len()];
        let values = x.len();
        par_fill(
            &mut out,
            #[inline(always)]
            |start, chunk| {
                // the chunk's whole values (par_fill splits at a multiple of K
                // only by chance, so each part recomputes the value it starts in)
                let (first, last) = (start / k, (start + chunk.len()).div_ceil(k).min(values));
                let mut comps = PerValue::new(k);
                let mut t = vec![F::zero(); k * BLOCK];
                let (mut top, mut total) = ([F::zero(); BLOCK], [F::zero(); BLOCK]);
                for from in (first..last).step_by(BLOCK) {
                    let x = &x[from..last.min(from + BLOCK)];
                    let terms = (&mut top, &mut total);
                    per_value_terms(inputs, from, x, &mut comps, &mut t, terms);
                    for c in 0..k {
                        for i in 0..x.len() {
                            let at = (from + i) * k + c;
                            if (start..start + chunk.len()).contains(&at) {
                                chunk[at - start] = t[c * BLOCK + i].fast_exp() / total[i];
                            }
                        }
                    }
                }
            },
        );
        Tensor::from_vec(out, inputs[1].shape())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        per_value_gradients::<F, true>(inputs, g)
    }
}

impl<'t, F: Element> Distribution<'t, F> for MixtureOfNormals<'t, F> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn tape(&self) -> &'t Tape<F> {
        self.locs.tape
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        check_finite(self.name, "value", &x)?;
        let k = self.locs.shape();
        if k.len() == 1 && self.log_weights.shape() == k && self.scales.shape() == k {
            // one set of components for every value (a prior over weights)
            let inputs = [x, self.log_weights, self.locs, self.scales];
            return x.tape.apply(ScalarMixtureLogProb, &inputs);
        }
        // a set of components for each value
        let inputs = self.per_value_inputs(x)?;
        x.tape.apply(BatchedMixtureLogProb, &inputs)
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: self.name,
            what: "reparameterized sampling (the component choice is discrete)",
        })
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        let full = self.full_shape();
        let k = *full.last().unwrap_or(&1);
        let w = self
            .log_weights
            .value()
            .broadcast_to(&full)?
            .map(|l| l.exp());
        let locs = self.locs.value().broadcast_to(&full)?;
        let scales = self.scales.value().broadcast_to(&full)?;
        let rows = w.len() / k;
        // the normals of all the draws at once (a bulk draw for each draw
        // of the batch, with its own seed and lanes, took 85 ns a draw of a
        // single mixture), then a component per row and draw
        super::check_draw_count(self.name, n)?;
        let len =
            crate::tensor::checked_alloc::<F>("Distribution::sample_n", &[n.unwrap_or(1), rows])?;
        let noise: Tensor<F> = standard_normal(&[len], rng);
        let mut noise = noise.data().chunks(rows.max(1));
        super::repeat_batches(self.name, n, &self.batch_shape(), |out| {
            let noise = noise.next().unwrap_or_default();
            for (r, &z) in noise.iter().enumerate() {
                let u: F = uniform(rng);
                let mut acc = F::zero();
                let j = (0..k)
                    .find(|&j| {
                        acc = acc + w.data()[r * k + j];
                        u < acc
                    })
                    .unwrap_or(k - 1);
                out.push(locs.data()[r * k + j] + scales.data()[r * k + j] * z);
            }
            Ok(())
        })
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: self.name,
            what: "a closed-form entropy",
        })
    }
    // E[x] = sum_j w_j loc_j
    fn mean(&self) -> Result<Var<'t, F>> {
        let w = self.log_weights.exp();
        let last = self.full_shape().len() - 1;
        w.try_mul(self.locs)?
            .broadcast_to(&self.full_shape())?
            .sum_axis(last, false)
    }
    // Var[x] = sum_j w_j (scale_j^2 + (loc_j - E[x])^2): no E[x²] - E[x]²
    // cancellation, so it is never negative
    fn variance(&self) -> Result<Var<'t, F>> {
        let w = self.log_weights.exp();
        let last = self.full_shape().len() - 1;
        let mean = self.mean()?.unsqueeze(last)?;
        let spread = self.locs.try_sub(mean)?.square();
        w.try_mul(self.scales.square().try_add(spread)?)?
            .broadcast_to(&self.full_shape())?
            .sum_axis(last, false)
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = self.full_shape();
        s[..s.len().saturating_sub(1)].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The spike-and-slab scale mixture `pi N(0, spike_scale) + (1 - pi) N(0, slab_scale)`
/// (Blundell et al. 2015, with `spike_scale << slab_scale`), built on
/// [`MixtureOfNormals`]. Every parameter is differentiable, so a prior's
/// mixing weight and scales can be learned.
///
/// # Parameters
/// - `pi`: in (0, 1); `spike_scale`, `slab_scale`: finite and `> 0`; all scalars
///   or broadcastable shapes.
///
/// # Example
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let prior = SpikeAndSlab::tfp_default(&tape); // 0.5 N(0,1) + 0.5 N(0,2000)
/// let lp = prior.log_prob(tape.scalar(-1000.0))?.item()?;
/// assert!(lp.is_finite()); // the spike underflows, the log-sum-exp does not
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// `pi` outside (0, 1); scales below the smallest normal number; shapes
/// that do not broadcast.
pub struct SpikeAndSlab;

impl SpikeAndSlab {
    /// `pi N(0, spike_scale) + (1 - pi) N(0, slab_scale)`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<'t, F: Element>(
        pi: Var<'t, F>,
        spike_scale: Var<'t, F>,
        slab_scale: Var<'t, F>,
    ) -> Result<MixtureOfNormals<'t, F>> {
        const NAME: &str = "SpikeAndSlab";
        same_tape("SpikeAndSlab::new", &pi, &spike_scale)?;
        same_tape("SpikeAndSlab::new", &pi, &slab_scale)?;
        check_values(NAME, "pi", &pi, "must be in (0, 1)", |p| {
            p > F::zero() && p < F::one()
        })?;
        check_divisor(NAME, "spike_scale", &spike_scale)?;
        check_divisor(NAME, "slab_scale", &slab_scale)?;
        let s = batch_broadcast(
            NAME,
            ("pi", pi.shape()),
            ("spike_scale", spike_scale.shape()),
        )?;
        let s = batch_broadcast(
            NAME,
            ("pi and spike_scale", s),
            ("slab_scale", slab_scale.shape()),
        )?;
        let (pi, spike, slab) = (
            pi.broadcast_to(&s)?,
            spike_scale.broadcast_to(&s)?,
            slab_scale.broadcast_to(&s)?,
        );
        let axis = s.len();
        // ln pi and ln(1 - pi) = log1p(-pi), exact near pi = 0 and 1
        let log_w = Var::stack(&[pi.ln(), (-pi).log1p()], axis)?;
        let scales = Var::stack(&[spike, slab], axis)?;
        let locs = pi.tape.constant(Tensor::zeros(&[2]));
        MixtureOfNormals::from_log_weights(log_w, locs, scales, NAME)
    }

    /// TensorFlow Probability's default (tfp.experimental.nn): `0.5 N(0, 1) + 0.5 N(0, 2000)`.
    pub fn tfp_default<F: Element>(tape: &Tape<F>) -> MixtureOfNormals<'_, F> {
        let c = |x: f64| tape.scalar(F::lit(x));
        Self::new(c(0.5), c(1.0), c(2000.0)).expect("the TFP default parameters are valid")
    }
}
