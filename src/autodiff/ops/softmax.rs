//! `log_softmax` and `logsumexp`, both shifted by the maximum so that
//! logits of magnitude 1e4 neither overflow nor underflow.

use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{par_blocks, sum_lanes, sum_pairwise};
use crate::tensor::{Element, Storage, Tensor, split_at_axis};
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// `ln Σ exp(v - m)` of a row whose maximum `m` is finite, shifted by
/// that maximum so that logits of magnitude 1e4 neither overflow nor
/// underflow; `m + ln Σ` is not formed (it rounds: in f32 at `m = -5e7`
/// the `ln 2` of two equal terms vanishes entirely).
///
/// `ln Σ` is `log1p` of the sum of the terms other than the (first)
/// maximum's, whose term is exactly 1: `ln` of the rounded `1 + s` keeps
/// none of `s` below `ε/2` and few of its digits above, so that the
/// log-probability of a class that holds almost all the mass (`-s`, a
/// confident classifier's loss) or a near one-hot entropy lost most of
/// their relative precision. The exponentials are taken a piece at a
/// time and each piece summed in eight lanes (both vectorize), the
/// pieces' sums in order: the same bits on every instruction set.
#[inline(always)]
fn row_ln_sum<F: Element>(row: &[F], m: F) -> F {
    const PIECE: usize = 64;
    let top = row.iter().position(|&v| v == m).unwrap_or(row.len());
    let mut terms = [F::zero(); PIECE];
    let mut s = F::zero();
    for (p, piece) in row.chunks(PIECE).enumerate() {
        for (t, &v) in terms.iter_mut().zip(piece) {
            // (not positive: m is the row's maximum)
            *t = (v - m).fast_exp_nonpositive();
        }
        // the maximum's own term is left out (adding 0 to a sum of
        // non-negative terms changes nothing)
        if top / PIECE == p {
            terms[top % PIECE] = F::zero();
        }
        s = s + sum_lanes(&terms[..piece.len()]);
    }
    s.ln_1p()
}

/// Calls `f(r, out_r)` for each row `r` of `out`, `width` elements a row,
/// the rows split over the threads when there are enough (`len` elements
/// of input a row, an exponential and a few operations each).
fn by_rows<F: Element>(
    out: &mut [MaybeUninit<F>],
    width: usize,
    len: usize,
    f: impl Fn(usize, &mut [MaybeUninit<F>]) + Sync,
) {
    let rows = out.len() / width;
    par_blocks(
        out,
        rows,
        4 * rows * len,
        #[inline(always)]
        |items, part: &mut [MaybeUninit<F>]| {
            for (r, out) in items.zip(part.chunks_exact_mut(width)) {
                f(r, out);
            }
        },
    );
}

/// The larger of two values, NaN if either is (`b` if they are equal).
#[inline(always)]
fn larger<F: Element>(a: F, b: F) -> F {
    if b > a || b.is_nan() { b } else { a }
}

/// The maximum of a row, NaN if any element is NaN: eight running maxima
/// (which vectorize), then theirs in order.
#[inline(always)]
fn row_max<F: Element>(row: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 8];
    let lanes = row.chunks_exact(8);
    let rest = lanes
        .remainder()
        .iter()
        .fold(F::neg_infinity(), |m, &v| larger(m, v));
    for c in lanes {
        for j in 0..8 {
            acc[j] = larger(acc[j], c[j]);
        }
    }
    acc.iter().fold(rest, |m, &v| larger(m, v))
}

/// A tensor's values with `axis` moved to the last place, so that each
/// of its `outer · inner` rows is contiguous (row `o · inner + i`), for
/// `(outer, len, inner)` of [`split_at_axis`]; borrowed when it is there
/// already (`inner == 1`).
fn rows_of<F: Element>(x: &[F], (outer, len, inner): (usize, usize, usize)) -> Cow<'_, [F]> {
    if inner == 1 {
        return Cow::Borrowed(x);
    }
    let mut rows = Vec::with_capacity(x.len());
    for o in 0..outer {
        for i in 0..inner {
            rows.extend((0..len).map(|k| x[(o * len + k) * inner + i]));
        }
    }
    Cow::Owned(rows)
}

/// The inverse of [`rows_of`]: rows of `len` values back into a tensor's
/// order with the axis in its place.
fn from_rows<F: Element>(
    rows: Storage<F>,
    (outer, len, inner): (usize, usize, usize),
) -> Storage<F> {
    if inner == 1 {
        return rows;
    }
    let mut out = vec![F::zero(); rows.len()];
    for o in 0..outer {
        for i in 0..inner {
            let row = &rows[(o * inner + i) * len..][..len];
            for (k, &v) in row.iter().enumerate() {
                out[(o * len + k) * inner + i] = v;
            }
        }
    }
    Storage::from_vec(out)
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

/// A row's maximum `m` and `ln Σ exp(v - m)` ([`row_ln_sum`]), the latter
/// 0 where the maximum is not finite (the maximum is then the answer).
#[inline(always)]
fn row_parts<F: Element>(row: &[F]) -> (F, F) {
    let m = row_max(row);
    match m.is_finite() {
        true => (m, row_ln_sum(row, m)),
        false => (m, F::zero()),
    }
}

/// `f(r, row, out)` for each row `r` of `x` along the axis of `parts`
/// (`(outer, len, inner)` of [`split_at_axis`]), gathered into contiguous
/// rows where they are not, with `width` outputs a row (split over the
/// threads by [`by_rows`]) written into a buffer that is not zero-filled
/// first; the outputs in the rows' order, put back in the tensor's order
/// when there is one for each value (`width == len`).
///
/// # Safety
/// `f` must initialize every element of the `out` it is given.
unsafe fn map_rows<F: Element>(
    x: &[F],
    parts: (usize, usize, usize),
    width: usize,
    f: impl Fn(usize, &[F], &mut [MaybeUninit<F>]) + Sync,
) -> Storage<F> {
    let len = parts.1;
    let rows = rows_of(x, parts);
    let build = |out: &mut [MaybeUninit<F>]| {
        by_rows(
            out,
            width,
            len,
            #[inline(always)]
            |r, out| f(r, &rows[r * len..(r + 1) * len], out),
        )
    };
    // SAFETY: `by_rows` hands every row of `out` to `f`, which initializes
    // it (the caller's contract)
    let out = unsafe { Storage::build(rows.len() / len * width, build) };
    match width == len {
        true => from_rows(out, parts),
        false => out,
    }
}

/// `x - logsumexp(x)` along an axis, computed as `(x - m) - ln Σ exp(x - m)`
/// ([`row_parts`]) a row at a time; along another axis than the last, on
/// the rows of the axis moved to the last place (the same operations).
struct LogSoftmax {
    axis: usize,
}
impl<F: Element> Op<F> for LogSoftmax {
    fn name(&self) -> &str {
        "log_softmax"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        let parts = split_at_axis(x.shape(), self.axis);
        // SAFETY: every element of `out` is written (it is as long as `row`)
        let out = unsafe {
            map_rows(
                x.data(),
                parts,
                parts.1,
                #[inline(always)]
                |_, row, out| {
                    let (m, l) = row_parts(row);
                    for (o, &v) in out.iter_mut().zip(row) {
                        o.write((v - m) - l);
                    }
                },
            )
        };
        Ok(Tensor::new_unchecked(out, x.shape().to_vec()))
    }
    // dx = g - softmax(x) * sum(g) along the axis, with softmax = exp(y).
    fn backward(
        &self,
        _: &[&Tensor<F>],
        y: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let parts = split_at_axis(y.shape(), self.axis);
        let len = parts.1;
        let g_rows = rows_of(g.data(), parts);
        let low = F::lit(FAST_EXP_FROM);
        // SAFETY: every element of `out` is written (it is as long as `y`)
        let out = unsafe {
            map_rows(
                y.data(),
                parts,
                len,
                #[inline(always)]
                |r, y, out| {
                    let g_in = &g_rows[r * len..(r + 1) * len];
                    let s = sum_pairwise(g_in);
                    // `prob` in two passes: the vectorized exponential (which
                    // notes whether any probability is below its range), then
                    // those rare ones
                    let mut any_low = false;
                    for ((o, &g), &y) in out.iter_mut().zip(g_in).zip(y) {
                        // (y is a log-probability, not positive)
                        o.write(g - y.fast_exp_nonpositive() * s);
                        any_low |= y < low;
                    }
                    if any_low {
                        for ((o, &g), &y) in out.iter_mut().zip(g_in).zip(y) {
                            if y < low {
                                o.write(g - prob(y) * s);
                            }
                        }
                    }
                },
            )
        };
        Ok(vec![Some(Tensor::new_unchecked(out, g.shape().to_vec()))])
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
        // one value a row, in the order of the result (`o · inner + i`);
        // `m + 0` is `m` where the maximum is not finite
        // SAFETY: the one element of `o` is written
        let out = unsafe {
            map_rows(
                x.data(),
                split_at_axis(x.shape(), self.axis),
                1,
                #[inline(always)]
                |_, row, o| {
                    let (m, l) = row_parts(row);
                    o[0].write(m + l);
                },
            )
        };
        let mut shape = x.shape().to_vec();
        match self.keepdim {
            true => shape[self.axis] = 1,
            false => {
                shape.remove(self.axis);
            }
        }
        Ok(Tensor::new_unchecked(out, shape))
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
        let cutoff = F::min_positive_value().ln() / F::lit(2.0);
        let x = inputs[0];
        let parts = split_at_axis(x.shape(), self.axis);
        // the incoming gradient has one value a row, in the rows' order
        let g = g.data();
        // SAFETY: every element of `out` is written (it is as long as `row`)
        let out = unsafe {
            map_rows(
                x.data(),
                parts,
                parts.1,
                #[inline(always)]
                |r, row, out| {
                    let (m, l) = row_parts(row);
                    if !m.is_finite() {
                        out.fill(MaybeUninit::new(F::zero()));
                        return;
                    }
                    let scale = (-l).exp() * g[r];
                    for (o, &x) in out.iter_mut().zip(row) {
                        let w = match x - m >= cutoff {
                            true => (x - m).fast_exp_nonpositive(),
                            false => F::zero(),
                        };
                        o.write(w * scale);
                    }
                },
            )
        };
        Ok(vec![Some(Tensor::new_unchecked(out, x.shape().to_vec()))])
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
