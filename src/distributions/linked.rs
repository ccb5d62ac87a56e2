//! The log-densities of the log-normal and logit-normal as one op that
//! computes each element in `f64`.
//!
//! Composed from tape ops (`ln y`, then the Normal's density at it), an
//! `f32` log-density carries the rounding of `ln y` (or `logit y`) divided
//! by the scale, and so do its gradients: tens to hundreds of ulp at
//! scales below 1 (see the accuracy report). Here `ln y` and every term
//! after it are `f64`, and each value and gradient is rounded once.

use super::{HALF_LN_2PI, on_support_of_events};
use crate::autodiff::ops::binary::{View, broadcast_all};
use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{Pairwise, par_blocks};
use crate::kernels::special::{ln_1m_lanes, ln_lanes, mask, select};
use crate::tensor::{Element, Tensor, Uninit, numel};
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Elements a pass takes at a time, in `f64` lanes.
const L: usize = 16;

/// Blocks of `L` whose summed gradient terms are added in lanes before
/// they join a pairwise sum.
const SUM_BLOCKS: usize = 32;

/// `ln p(y)` of `Normal(loc, scale)` pushed through `exp` (`logit: false`)
/// or the sigmoid, for `y` inside the image (`0 < y`, or `0 < y < 1`),
/// with `loc` and `scale` broadcast against `y`: `-inf` (gradient 0) at
/// the values outside the image, and an error for a NaN value (as the
/// composed density gave).
pub(super) fn linked_normal_log_prob<'t, F: Element>(
    logit: bool,
    y: Var<'t, F>,
    loc: Var<'t, F>,
    scale: Var<'t, F>,
) -> Result<Var<'t, F>> {
    let (distribution, op) = match logit {
        true => ("LogitNormal", "LogitNormal::log_prob"),
        false => ("LogNormal", "LogNormal::log_prob"),
    };
    if !std::ptr::eq(y.tape(), loc.tape()) {
        return Err(Error::ForeignTape { op });
    }
    let tape = y.tape();
    let inside = |v: F| v > F::zero() && v < if logit { F::one() } else { F::infinity() };
    let in_image = y.value().data().iter().map(|&v| inside(v)).collect();
    // the image of 0, for the values outside the image
    let inner = if logit { F::lit(0.5) } else { F::one() };
    on_support_of_events(
        distribution,
        y,
        0,
        in_image,
        || Ok(tape.constant(Tensor::full(&y.shape(), inner))),
        |y| {
            let op = LinkedNormalLogProb {
                link: Link { logit },
                x: RefCell::new(Vec::new()),
            };
            tape.apply(op, &[y, loc, scale])
        },
    )
}

/// The op of [`linked_normal_log_prob`] on inputs `[y, loc, scale]`, with
/// `x = ln y` (`logit y` when `logit`), `z = (x - loc) / scale` and the
/// log-Jacobian `j = ln y` (`ln y + ln(1 - y)`):
/// `ln p = -z²/2 - ln scale - ln √(2π) - j`, `d/dloc = z / scale`,
/// `d/dscale = (z² - 1) / scale`, `d/dy = -(z / scale) x' - j'`. An element
/// whose incoming gradient is 0 passes on 0 (as the Normal's density does).
/// A gradient of an input broadcast from one value is summed in `f64`,
/// pairwise over blocks of [`SUM_BLOCKS`] lanes' worth.
struct LinkedNormalLogProb {
    link: Link,
    /// `x` of each output element from the forward pass, for the backward
    /// one (the logarithms are most of the op's time).
    x: RefCell<Vec<f64>>,
}

/// The terms of `L` elements, in `f64`.
struct Point {
    z: [f64; L],
    inv_scale: [f64; L],
    /// `ln scale` (zeros when not asked for).
    ln_scale: [f64; L],
}

/// `v`'s elements `i..i + len` in `f64` lanes (`pad` after `len`).
#[inline(always)]
fn lanes<F: Element>(v: View<'_, F>, (i, len): (usize, usize), pad: f64) -> [f64; L] {
    let wide = |x: F| x.to_f64().unwrap_or(f64::NAN);
    let (data, step) = v.strided();
    if step == 0 {
        return [wide(data[0]); L];
    }
    let mut out = [pad; L];
    if len == L {
        let block = &data[i..i + L];
        for l in 0..L {
            out[l] = wide(block[l]);
        }
    } else {
        for (o, &x) in out.iter_mut().zip(&data[i..i + len]) {
            *o = wide(x);
        }
    }
    out
}

/// `values` rounded into `out` (`out.len() ≤ L`).
#[inline(always)]
fn store<F: Element, T>(out: &mut [T], values: &[f64; L], write: impl Fn(&mut T, F)) {
    let mut narrow = [F::zero(); L];
    for l in 0..L {
        narrow[l] = F::lit(values[l]);
    }
    if out.len() == L {
        for l in 0..L {
            write(&mut out[l], narrow[l]);
        }
    } else {
        for (o, &v) in out.iter_mut().zip(&narrow) {
            write(o, v);
        }
    }
}

/// `(ln scale, 1 / scale)` in `f64` when `scale` is one value.
fn shared_scale<F: Element>(scale: View<'_, F>) -> Option<(f64, f64)> {
    let (data, step) = scale.strided();
    let s = data.first()?.to_f64().unwrap_or(f64::NAN);
    (step == 0).then(|| (s.ln(), 1.0 / s))
}

/// The map of a [`LinkedNormalLogProb`]: `exp`, or the sigmoid when
/// `logit`.
#[derive(Clone, Copy)]
struct Link {
    logit: bool,
}

impl LinkedNormalLogProb {
    fn name(&self) -> &'static str {
        if self.link.logit {
            "logitnormal_log_prob"
        } else {
            "lognormal_log_prob"
        }
    }
}

impl Link {
    /// `(x, j)` at elements `at = (i, len)`, `len ≤ L`: `x = ln y` (`logit
    /// y`) and the log-Jacobian `j = ln y` (`ln y + ln(1 - y)`).
    #[inline(always)]
    fn x_and_log_det<F: Element>(
        &self,
        y: View<'_, F>,
        at: (usize, usize),
    ) -> ([f64; L], [f64; L]) {
        // a value inside either image in the lanes past `len`
        let y = lanes(y, at, 0.5);
        let ln_y = ln_lanes(&y);
        if !self.logit {
            return (ln_y, ln_y);
        }
        let ln_1m = ln_1m_lanes(&y);
        let (mut x, mut log_det) = ([0.0; L], [0.0; L]);
        for l in 0..L {
            x[l] = ln_y[l] - ln_1m[l];
            log_det[l] = ln_y[l] + ln_1m[l];
        }
        (x, log_det)
    }
}

/// The terms at elements `at` given their `x`.
#[inline(always)]
fn point<F: Element>(
    x: [f64; L],
    [loc, scale]: [View<'_, F>; 2],
    shared: Option<(f64, f64)>,
    at: (usize, usize),
    with_ln_scale: bool,
) -> Point {
    let (ln_scale, inv_scale) = match shared {
        Some((ln, inv)) => ([ln; L], [inv; L]),
        None => {
            let s = lanes(scale, at, 1.0);
            let mut inv = [0.0; L];
            for l in 0..L {
                inv[l] = 1.0 / s[l];
            }
            let ln = if with_ln_scale {
                ln_lanes(&s)
            } else {
                [0.0; L]
            };
            (ln, inv)
        }
    };
    let m = lanes(loc, at, 0.0);
    let mut z = [0.0; L];
    for l in 0..L {
        z[l] = (x[l] - m[l]) * inv_scale[l];
    }
    Point {
        z,
        inv_scale,
        ln_scale,
    }
}

impl<F: Element> Op<F> for LinkedNormalLogProb {
    fn name(&self) -> &str {
        LinkedNormalLogProb::name(self)
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (shape, t) = broadcast_all(self.name(), inputs)?;
        let [y, loc, scale] = [t[0].view(), t[1].view(), t[2].view()];
        let (shared, link) = (shared_scale(scale), self.link);
        let n = numel(&shape);
        let mut xs = self.x.borrow_mut();
        xs.clear();
        xs.reserve_exact(n);
        let mut values = Uninit::new(n);
        let data = (values.slots(), &mut xs.spare_capacity_mut()[..n]);
        par_blocks(
            data,
            n,
            n * 64,
            #[inline(always)]
            |items, (values, xs)| {
                for (b, (out, x_out)) in values.chunks_mut(L).zip(xs.chunks_mut(L)).enumerate() {
                    let at = (items.start + b * L, out.len());
                    let (x, log_det) = link.x_and_log_det(y, at);
                    let p = point(x, [loc, scale], shared, at, true);
                    let mut value = [0.0; L];
                    for l in 0..L {
                        let z = p.z[l];
                        value[l] = -0.5 * z * z - p.ln_scale[l] - HALF_LN_2PI - log_det[l];
                    }
                    store(out, &value, |o: &mut MaybeUninit<F>, v| {
                        o.write(v);
                    });
                    for (o, &v) in x_out.iter_mut().zip(&x) {
                        o.write(v);
                    }
                }
            },
        );
        // SAFETY: the loops above wrote the first `n` elements of both.
        let values = unsafe {
            xs.set_len(n);
            values.assume_init()
        };
        Ok(Tensor::new_unchecked(values, shape))
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
        let (_, t) = broadcast_all(self.name(), inputs)?;
        let [y, loc, scale] = [t[0].view(), t[1].view(), t[2].view()];
        let (shared, link) = (shared_scale(scale), self.link);
        let n = out.len();
        let cached = self.x.borrow();
        let xs: &[f64] = &cached;
        if xs.len() != n {
            return Err(Error::invalid(self.name(), "backward before forward"));
        }
        let gv = View::each(g.data());
        // an input of one value gets its gradient summed in `f64` lanes;
        // any other one that needs it a gradient per output element
        let summed: [bool; 3] = std::array::from_fn(|k| needs[k] && inputs[k].len() == 1);
        let full = |k: usize| Uninit::new(if needs[k] && !summed[k] { n } else { 0 });
        let (mut dy, mut dloc, mut dscale) = (full(0), full(1), full(2));
        let data = ((dy.slots(), dloc.slots()), dscale.slots());
        let (first, second) = par_blocks(
            data,
            n,
            n * 64,
            #[inline(always)]
            |items, ((dy, dloc), dscale)| {
                let mut sums = [[0.0f64; L]; 3];
                let mut totals = [Pairwise::new(), Pairwise::new(), Pairwise::new()];
                let outs: [&mut [MaybeUninit<F>]; 3] = [dy, dloc, dscale];
                for (b, i) in items.clone().step_by(L).enumerate() {
                    if b % SUM_BLOCKS == 0 {
                        for (total, lanes) in totals.iter_mut().zip(&mut sums) {
                            total.add(lanes.iter().sum::<f64>());
                            *lanes = [0.0; L];
                        }
                    }
                    let at = (i, L.min(items.end - i));
                    let mut x = [0.0; L];
                    x[..at.1].copy_from_slice(&xs[i..i + at.1]);
                    let p = point(x, [loc, scale], shared, at, false);
                    // 0 past the block's end, and a 0 term wherever g is 0
                    let g = lanes(gv, at, 0.0);
                    let mut terms = [[0.0; L]; 3];
                    for l in 0..L {
                        let slope = p.z[l] * p.inv_scale[l];
                        let no_g = mask(g[l] == 0.0);
                        terms[1][l] = select(no_g, 0.0, g[l] * slope);
                        let d_scale = (p.z[l] * p.z[l] - 1.0) * p.inv_scale[l];
                        terms[2][l] = select(no_g, 0.0, g[l] * d_scale);
                    }
                    if needs[0] {
                        let y = lanes(y, at, 0.5);
                        for l in 0..L {
                            // x' and j': 1/y and 1/y through exp; through
                            // the sigmoid 1/y + 1/(1 - y) and 1/y - 1/(1 - y)
                            let inv_y = 1.0 / y[l];
                            let inv_1m = if link.logit { 1.0 / (1.0 - y[l]) } else { 0.0 };
                            let slope = p.z[l] * p.inv_scale[l];
                            let dy = -slope * (inv_y + inv_1m) - (inv_y - inv_1m);
                            terms[0][l] = select(mask(g[l] == 0.0), 0.0, g[l] * dy);
                        }
                    }
                    for k in 0..3 {
                        if summed[k] {
                            for l in 0..L {
                                sums[k][l] += terms[k][l];
                            }
                        } else if needs[k] {
                            let start = i - items.start;
                            let out = &mut outs[k][start..start + at.1];
                            store(out, &terms[k], |o: &mut MaybeUninit<F>, v| {
                                o.write(v);
                            });
                        }
                    }
                }
                for (total, lanes) in totals.iter_mut().zip(&sums) {
                    total.add(lanes.iter().sum::<f64>());
                }
                totals.map(|t| t.total())
            },
        );
        let grads = [dy, dloc, dscale];
        let mut result = Vec::with_capacity(3);
        for (k, grad) in grads.into_iter().enumerate() {
            let shape = inputs[k].shape();
            result.push(match (needs[k], summed[k]) {
                (false, _) => None,
                (true, true) => Some(Tensor::full(shape, F::lit(first[k] + second[k]))),
                (true, false) => {
                    // SAFETY: the passes above wrote every element of the
                    // gradients they were given (`n` of those needed here)
                    let grad = unsafe { grad.assume_init() };
                    Some(Tensor::new_unchecked(grad, out.shape().to_vec()).sum_to_owned(shape)?)
                }
            });
        }
        Ok(result)
    }
}
