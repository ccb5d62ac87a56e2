//! `log_softmax` and `logsumexp`, both shifted by the maximum so that
//! logits of magnitude 1e4 neither overflow nor underflow.

use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::par_blocks;
use crate::tensor::{Element, Tensor, split_at_axis};

/// The parts of a shifted log-sum-exp along `axis` (both keepdim): the
/// maximum `m` and `ln Σ exp(x - m)`. Kept apart because `m + ln Σ` rounds:
/// in f32 at `m = -5e7` the `ln 2` of two equal terms vanishes entirely.
/// Rows whose maximum is not finite get `ln Σ = 0` (the max is the answer).
///
/// `ln Σ` is `log1p` of the sum of the terms other than the (first)
/// maximum's, whose term is exactly 1: `ln` of the rounded `1 + s` keeps
/// none of `s` below `ε/2` and few of its digits above, so that the
/// log-probability of a class that holds almost all the mass (`-s`, a
/// confident classifier's loss) or a near one-hot entropy lost most of
/// their relative precision.
fn lse_parts<F: Element>(x: &Tensor<F>, axis: usize) -> Result<(Tensor<F>, Tensor<F>)> {
    let m = x.max_axis(axis, true)?;
    let (outer, len, inner) = split_at_axis(x.shape(), axis);
    let mut ln_sum = Tensor::zeros(m.shape());
    let (xd, md, out) = (x.data(), m.data(), ln_sum.data_mut());
    for o in 0..outer {
        for i in 0..inner {
            let mi = md[o * inner + i];
            if !mi.is_finite() {
                continue;
            }
            let at = |k: usize| xd[(o * len + k) * inner + i];
            let top = (0..len).position(|k| at(k) == mi).unwrap_or(len);
            let others = (0..len)
                .filter(|&k| k != top)
                .fold(F::zero(), |s, k| s + (at(k) - mi).fast_exp());
            out[o * inner + i] = others.ln_1p();
        }
    }
    Ok((m, ln_sum))
}

/// `ln Σ exp(v - m)` of a row whose maximum `m` is finite, as
/// [`lse_parts`] computes it (the same operations, so the same bits): the
/// exponentials a piece at a time, which vectorize, then their sum in
/// order.
#[inline(always)]
fn row_ln_sum<F: Element>(row: &[F], m: F) -> F {
    const PIECE: usize = 64;
    let top = row.iter().position(|&v| v == m).unwrap_or(row.len());
    let mut terms = [F::zero(); PIECE];
    let mut s = F::zero();
    for (p, piece) in row.chunks(PIECE).enumerate() {
        for (t, &v) in terms.iter_mut().zip(piece) {
            *t = (v - m).fast_exp();
        }
        for (j, &t) in terms[..piece.len()].iter().enumerate() {
            if p * PIECE + j != top {
                s = s + t;
            }
        }
    }
    s.ln_1p()
}

/// Calls `f(r, out_r)` for each row `r` of `out`, `width` elements a row,
/// the rows split over the threads when there are enough (`len` elements
/// of input a row, an exponential and a few operations each).
fn by_rows<F: Element>(
    out: &mut [F],
    width: usize,
    len: usize,
    f: impl Fn(usize, &mut [F]) + Sync,
) {
    let rows = out.len() / width;
    par_blocks(
        out,
        rows,
        4 * rows * len,
        #[inline(always)]
        |items, part: &mut [F]| {
            for (r, out) in items.zip(part.chunks_exact_mut(width)) {
                f(r, out);
            }
        },
    );
}

/// The length of `axis` when it is the last of `shape` (its rows are
/// contiguous) and not empty.
fn last_axis_len(shape: &[usize], axis: usize) -> Option<usize> {
    (axis + 1 == shape.len() && shape[axis] > 0).then(|| shape[axis])
}

/// The maximum of a row as `Tensor::max_axis` takes it: NaN if any
/// element is NaN.
fn row_max<F: Element>(row: &[F]) -> F {
    row.iter().fold(
        F::neg_infinity(),
        |a, &b| if b > a || b.is_nan() { b } else { a },
    )
}

/// From here down (`f32`'s `fast_exp` flushes to 0 below -87.3) [`prob`]
/// takes the platform's `exp`.
const FAST_EXP_FROM: f64 = -87.0;

/// `e^y` of a log-probability `y`, vectorized where the result is a normal
/// number, and with the subnormal results `fast_exp` would flush to 0: a
/// class of probability 1e-40 (`Categorical::from_probs`) would lose its
/// gradient through `ln p`, whose backward is `g / p`.
#[inline(always)]
fn prob<F: Element>(y: F) -> F {
    if y < F::lit(FAST_EXP_FROM) {
        y.exp()
    } else {
        y.fast_exp()
    }
}

/// `x - logsumexp(x)` along an axis, computed as `(x - m) - ln Σ exp(x - m)`
/// ([`lse_parts`]).
struct LogSoftmax {
    axis: usize,
}
impl<F: Element> Op<F> for LogSoftmax {
    fn name(&self) -> &str {
        "log_softmax"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        if let Some(len) = last_axis_len(x.shape(), self.axis) {
            // rows of the last axis, contiguous: one pass a row, with the
            // operations (and so the bits) of the general path below
            let mut out = vec![F::zero(); x.len()];
            let x = x.data();
            by_rows(
                &mut out,
                len,
                len,
                #[inline(always)]
                |r, out| {
                    let row = &x[r * len..(r + 1) * len];
                    let m = row_max(row);
                    let l = match m.is_finite() {
                        true => row_ln_sum(row, m),
                        false => F::zero(),
                    };
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = (v - m) - l;
                    }
                },
            );
            return Tensor::from_vec(out, inputs[0].shape());
        }
        let (m, ln_sum) = lse_parts(x, self.axis)?;
        let shifted = x.zip_map(&m, "log_softmax", |x, m| x - m)?;
        shifted.zip_map(&ln_sum, "log_softmax", |d, l| d - l)
    }
    // dx = g - softmax(x) * sum(g) along the axis, with softmax = exp(y).
    fn backward(
        &self,
        _: &[&Tensor<F>],
        y: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        if let Some(len) = last_axis_len(y.shape(), self.axis) {
            // the same operations as below, a row at a time (the rows of
            // the incoming gradient, which become the rows of the result)
            let mut out = g.data().to_vec();
            let (y, g_in) = (y.data(), g.data());
            let low = F::lit(FAST_EXP_FROM);
            by_rows(
                &mut out,
                len,
                len,
                #[inline(always)]
                |r, g| {
                    let span = r * len..(r + 1) * len;
                    let (y, g_in) = (&y[span.clone()], &g_in[span]);
                    let s = g.iter().fold(F::zero(), |s, &g| s + g);
                    // `prob` in two passes: the vectorized exponential,
                    // then the rare probabilities below its range
                    for (g, &y) in g.iter_mut().zip(y) {
                        *g = *g - y.fast_exp() * s;
                    }
                    if y.iter().any(|&y| y < low) {
                        for ((g, &g_in), &y) in g.iter_mut().zip(g_in).zip(y) {
                            if y < low {
                                *g = g_in - prob(y) * s;
                            }
                        }
                    }
                },
            );
            return Ok(vec![Some(Tensor::from_vec(out, g.shape())?)]);
        }
        let gs = g.sum_axis(self.axis, true)?;
        let p_gs = y.zip_map(&gs, "log_softmax", |y, s| prob(y) * s)?;
        Ok(vec![Some(g.zip_map(&p_gs, "log_softmax", |g, q| g - q)?)])
    }
}

/// `ln sum exp x` along an axis.
struct LogSumExp {
    axis: usize,
    keepdim: bool,
}
impl<F: Element> Op<F> for LogSumExp {
    fn name(&self) -> &str {
        "logsumexp"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        if let Some(len) = last_axis_len(x.shape(), self.axis) {
            // rows of the last axis: [`lse_parts`]' operations a row at a time
            let mut out = vec![F::zero(); x.len() / len];
            let x = x.data();
            by_rows(
                &mut out,
                1,
                len,
                #[inline(always)]
                |r, o| {
                    let row = &x[r * len..(r + 1) * len];
                    let m = row_max(row);
                    o[0] = match m.is_finite() {
                        true => m + row_ln_sum(row, m),
                        false => m,
                    };
                },
            );
            let mut shape = inputs[0].shape().to_vec();
            match self.keepdim {
                true => shape[self.axis] = 1,
                false => {
                    shape.remove(self.axis);
                }
            }
            return Tensor::from_vec(out, &shape);
        }
        let (m, ln_sum) = lse_parts(x, self.axis)?;
        let out = m.zip_map(&ln_sum, "logsumexp", |m, l| m + l)?;
        if self.keepdim {
            Ok(out)
        } else {
            let mut shape = inputs[0].shape().to_vec();
            shape.remove(self.axis);
            out.reshape(&shape)
        }
    }
    // d lse / d x_k = softmax_k = exp(x_k - m) / Σ exp(x - m): the weights
    // come from the shifted values, not from the rounded output. A weight
    // exp(x_k - m) below the square root of the smallest normal number is
    // zero (see `logsumexp`).
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let x = inputs[0];
        let cutoff = F::min_positive_value().ln() / F::lit(2.0);
        if let Some(len) = last_axis_len(x.shape(), self.axis) {
            // the operations below, a row at a time
            let mut out = vec![F::zero(); x.len()];
            let (x, g) = (x.data(), g.data());
            by_rows(
                &mut out,
                len,
                len,
                #[inline(always)]
                |r, out| {
                    let row = &x[r * len..(r + 1) * len];
                    let m = row_max(row);
                    if !m.is_finite() {
                        out.fill(F::zero());
                        return;
                    }
                    let scale = (-row_ln_sum(row, m)).exp() * g[r];
                    for (o, &x) in out.iter_mut().zip(row) {
                        let w = match x - m >= cutoff {
                            true => (x - m).fast_exp(),
                            false => F::zero(),
                        };
                        *o = w * scale;
                    }
                },
            );
            return Ok(vec![Some(Tensor::from_vec(out, inputs[0].shape())?)]);
        }
        let (m, ln_sum) = lse_parts(x, self.axis)?;
        let g = g.reshape(m.shape())?;
        // per row: g / Σ exp(x - m), or 0 where the row has no finite maximum
        let scale = m.zip_map(&ln_sum, "logsumexp", |m, l| {
            if m.is_finite() { (-l).exp() } else { F::zero() }
        })?;
        let scale = scale.zip_map(&g, "logsumexp", |s, g| s * g)?;
        let w = x.zip_map(&m, "logsumexp", |x, m| {
            if m.is_finite() && x - m >= cutoff {
                (x - m).fast_exp()
            } else {
                F::zero()
            }
        })?;
        Ok(vec![Some(w.zip_map(&scale, "logsumexp", |w, s| w * s)?)])
    }
}

fn check_axis<F: Element>(v: &Var<'_, F>, op: &'static str, axis: usize) -> Result<()> {
    let shape = v.shape();
    if axis >= shape.len() {
        return Err(Error::AxisOutOfRange { op, axis, shape });
    }
    if shape[axis] == 0 {
        return Err(Error::invalid(
            op,
            format!("axis {axis} of shape {shape:?} is empty"),
        ));
    }
    Ok(())
}

impl<'t, F: Element> Var<'t, F> {
    /// `x - logsumexp(x)` along `axis`: log-probabilities from logits.
    pub fn log_softmax(self, axis: usize) -> Result<Self> {
        check_axis(&self, "log_softmax", axis)?;
        self.tape.apply(LogSoftmax { axis }, &[self])
    }

    /// `softmax` along `axis`, as `exp(log_softmax)`.
    pub fn softmax(self, axis: usize) -> Result<Self> {
        Ok(self.log_softmax(axis)?.exp())
    }

    /// `ln sum_k exp x_k` along `axis`, stable for large magnitudes.
    ///
    /// Its gradient is the softmax of `x`, computed from `x - max`. An
    /// element more than `-ln(MIN_POSITIVE) / 2` below the maximum (43.7 in
    /// `f32`, 354.2 in `f64`) gets a gradient of exactly zero: its true one is
    /// under `ε²` of the largest, so it moves no sum it joins, and carried
    /// back through a network it would turn every value it meets into a
    /// subnormal number, which Intel CPUs process many times slower (an
    /// importance-weighted bound, whose log weights are sums over a batch
    /// and often hundreds apart, took up to 9× longer a step).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::vector(&[0.0, -20.0, -80.0]));
    /// let g = x.logsumexp(0, false)?.backward()?.get(x).unwrap().clone();
    /// assert!(g.data()[1] > 0.0 && g.data()[1] < 3e-9); // e^-20, kept
    /// assert_eq!(g.data()[2], 0.0); // e^-80 would be 2e-35
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn logsumexp(self, axis: usize, keepdim: bool) -> Result<Self> {
        check_axis(&self, "logsumexp", axis)?;
        self.tape.apply(LogSumExp { axis, keepdim }, &[self])
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    #[test]
    fn logsumexp_of_huge_logits() {
        // lse([1e4, 1e4]) = 1e4 + ln 2; log_softmax = [-ln 2, -ln 2]
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::vector(&[1e4, 1e4]));
        let l = x.logsumexp(0, false).unwrap().item().unwrap();
        assert!((l - (1e4 + std::f64::consts::LN_2)).abs() < 1e-9);
        let ls = x.log_softmax(0).unwrap().value();
        assert!((ls.data()[0] + std::f64::consts::LN_2).abs() < 1e-12);
    }

    /// The last-axis path gives the bits of the general one: `log_softmax`
    /// of `x` along its rows against that of `xᵀ` along its columns,
    /// forward and backward, with rows of huge, tiny, infinite and NaN
    /// logits.
    #[test]
    fn rows_of_the_last_axis_give_the_general_paths_bits() {
        let (rows, cols) = (7, 5);
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
            .collect();
        x[5..10].copy_from_slice(&[3e4, 3e4 - 1.0, -3e4, 2.5, 3e4]);
        x[10..15].fill(f32::NEG_INFINITY);
        x[15..20].copy_from_slice(&[1.0, f32::INFINITY, 2.0, 0.5, -1.0]);
        x[21] = f32::NAN;
        let g: Vec<f32> = (0..rows * cols)
            .map(|i| (i % 7) as f32 * 0.3 - 0.8)
            .collect();
        let transpose = |v: &[f32]| {
            let t: Vec<f32> = (0..rows * cols)
                .map(|i| v[(i % rows) * cols + i / rows])
                .collect();
            Tensor::from_vec(t, &[cols, rows]).unwrap()
        };
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let run = |x: Tensor<f32>, g: Tensor<f32>, axis: usize| {
            let tape = Tape::new();
            let v = tape.var(x);
            let y = v.log_softmax(axis).unwrap();
            let grads = (y * g).sum().backward().unwrap();
            (y.value(), grads.get(v).unwrap().clone())
        };
        let shape = [rows, cols];
        let (y, dx) = run(
            Tensor::from_vec(x.clone(), &shape).unwrap(),
            Tensor::from_vec(g.clone(), &shape).unwrap(),
            1,
        );
        let (yt, dxt) = run(transpose(&x), transpose(&g), 0);
        assert_eq!(bits(&transpose(y.data())), bits(&yt));
        assert_eq!(bits(&transpose(dx.data())), bits(&dxt));
        // logsumexp, kept dimension or not
        for keepdim in [false, true] {
            let lse = |x: Tensor<f32>, axis: usize| {
                let tape = Tape::new();
                let v = tape.var(x);
                let l = v.logsumexp(axis, keepdim).unwrap();
                let w = Tensor::from_fn(&l.shape(), |i| 0.5 + i as f32);
                let grads = (l * w).sum().backward().unwrap();
                (l.value(), grads.get(v).unwrap().clone())
            };
            let (l, dl) = lse(Tensor::from_vec(x.clone(), &shape).unwrap(), 1);
            let (lt, dlt) = lse(transpose(&x), 0);
            assert_eq!(bits(&l), bits(&lt), "keepdim {keepdim}");
            assert_eq!(bits(&transpose(dl.data())), bits(&dlt), "keepdim {keepdim}");
        }
        // the huge row keeps ln(2 + e^-1) apart, the -inf row is NaN, the
        // NaN row NaN
        let want = -(2.0 + (-1.0f64).exp()).ln();
        assert!(
            (f64::from(y.data()[5]) - want).abs() < 1e-6,
            "{}",
            y.data()[5]
        );
        assert!(y.data()[10..15].iter().all(|v| v.is_nan()));
        assert!(y.data()[20..25].iter().all(|v| v.is_nan()));
    }

    /// Where one term holds almost all the mass, `ln Σ` is `log1p` of the
    /// others (mpmath at 300 digits): from `ln` of the rounded `1 + s`, the
    /// log-probability of the top class was 0 in `f32` at a gap of 20 and
    /// kept 4 digits in `f64` at 30, and the entropies as few.
    #[allow(clippy::excessive_precision)]
    #[test]
    fn a_class_with_almost_all_the_mass_keeps_its_digits() {
        use crate::distributions::{Categorical, Distribution};
        fn check<F: Element>(logits: &[f64], top: usize, log_p: f64, entropy: f64, tol: f64) {
            let close = |got: F, want: f64, what: &str| {
                let got = got.to_f64().unwrap();
                assert!(
                    (got - want).abs() <= tol * want.abs(),
                    "{what} of {logits:?}: {got:e} against {want:e}"
                );
            };
            let tape = Tape::<F>::new();
            let x = tape.var(
                Tensor::from_vec(logits.iter().map(|&v| F::lit(v)).collect(), &[logits.len()])
                    .unwrap(),
            );
            close(
                x.log_softmax(0).unwrap().value().data()[top],
                log_p,
                "log_softmax",
            );
            // logsumexp of the logits less the top one's is -log_p
            let shifted = tape.var(
                Tensor::from_vec(
                    logits.iter().map(|&v| F::lit(v - logits[top])).collect(),
                    &[logits.len()],
                )
                .unwrap(),
            );
            let lse = shifted.logsumexp(0, false).unwrap().item().unwrap();
            close(lse, -log_p, "logsumexp");
            let h = Categorical::from_logits(x)
                .unwrap()
                .entropy()
                .unwrap()
                .item()
                .unwrap();
            close(h, entropy, "entropy");
        }
        check::<f64>(
            &[0.0, 30.0, 0.0],
            1,
            -1.8715245937678598e-13,
            5.80172624067984e-12,
            1e-14,
        );
        check::<f64>(
            &[-100.0, 0.0, 100.0],
            2,
            -3.720075976020836e-44,
            3.7572767357810443e-42,
            1e-14,
        );
        check::<f64>(
            &[0.0, -40.0],
            0,
            -4.248354255291589e-18,
            1.7418252446695515e-16,
            1e-14,
        );
        check::<f32>(
            &[0.0, 20.0],
            1,
            -2.0611536203143807e-9,
            4.3284225984118452e-8,
            4e-7,
        );
    }

    #[test]
    fn logsumexp_gradient_is_zero_only_past_the_cutoff() {
        // f32: the cutoff is ln(2^-126) / 2 = -43.67; f64: ln(2^-1022) / 2 = -354.20
        for (gap, kept) in [(43.5f64, true), (43.8, false), (90.0, false)] {
            let tape = Tape::<f32>::new();
            let x = tape.var(Tensor::vector(&[1.5, 1.5 - gap as f32]));
            let g = x.logsumexp(0, false).unwrap().backward().unwrap();
            let g = g.get(x).unwrap().data()[1];
            let exact = (-gap).exp() / (1.0 + (-gap).exp());
            if kept {
                assert!((f64::from(g) - exact).abs() <= 1e-6 * exact, "{gap}: {g}");
            } else {
                assert_eq!(g, 0.0, "{gap}");
            }
        }
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::vector(&[0.0, -354.1, -354.3]));
        let g = x.logsumexp(0, false).unwrap().backward().unwrap();
        let g = g.get(x).unwrap();
        assert!((g.data()[1] - (-354.1f64).exp()).abs() <= 1e-12 * (-354.1f64).exp());
        assert_eq!(g.data()[2], 0.0);
    }
}
