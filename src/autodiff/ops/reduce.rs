//! Reductions: sum and mean over everything or one axis, max over an
//! axis; running sums along an axis.

use crate::autodiff::profile;
use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::par_blocks;
use crate::tensor::{Element, Tensor, split_at_axis};

/// Sum of all elements, as a rank-0 tensor.
struct SumAll;
impl<F: Element> Op<F> for SumAll {
    fn name(&self) -> &str {
        "sum"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        Ok(Tensor::scalar(inputs[0].sum_all()))
    }
    // d sum / d x_i = 1: the gradient is the output gradient everywhere.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(Tensor::full(inputs[0].shape(), g.data()[0]))])
    }
}

/// Sum along one axis.
struct SumAxis {
    axis: usize,
    keepdim: bool,
}
impl<F: Element> Op<F> for SumAxis {
    fn name(&self) -> &str {
        "sum_axis"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        inputs[0].sum_axis(self.axis, self.keepdim)
    }
    // Each input element receives the gradient of the sum it fed.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(along_axis(g, inputs[0].shape(), self.axis)?)])
    }
}

/// The mean of `values` (`n` of them) where their sum times `1/n` is not
/// finite: each taken by `2^-64` first (exact for all but values too small
/// to matter beside a sum that overflowed), so that the sum stays in range
/// when every value is finite, and an infinite result of the last rounding
/// taken back to the largest finite value, which the mean of finite values
/// cannot exceed. A non-finite value still gives a non-finite mean, and no
/// values (`n = 0`) NaN.
fn mean_out_of_range<F: Element>(values: impl Iterator<Item = F>, n: usize) -> F {
    let (down, up) = (F::lit(2f64.powi(-64)), F::lit(2f64.powi(64)));
    let sum = values.fold(F::zero(), |sum, v| sum + v * down);
    let mean = sum / F::lit(n as f64) * up;
    match sum.is_finite() && mean.is_infinite() {
        true => F::max_value().copysign(mean),
        false => mean,
    }
}

/// Mean of all elements, as a rank-0 tensor: the sum times `1/n`, or
/// where that overflows with every element finite, [`mean_out_of_range`].
struct MeanAll<F> {
    inv_n: F,
}
impl<F: Element> MeanAll<F> {
    fn mean(&self, x: &Tensor<F>) -> Tensor<F> {
        let mean = x.sum_all() * self.inv_n;
        Tensor::scalar(match mean.is_finite() {
            true => mean,
            false => mean_out_of_range(x.data().iter().copied(), x.len()),
        })
    }
}
impl<F: Element> Op<F> for MeanAll<F> {
    fn name(&self) -> &str {
        "mean"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        Ok(self.mean(inputs[0]))
    }
    // d mean / d x_i = 1/n
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(Tensor::full(
            inputs[0].shape(),
            g.data()[0] * self.inv_n,
        ))])
    }
}

/// Mean along one axis: its sums times `1/n`, each that overflows with its
/// elements finite taken by [`mean_out_of_range`] instead.
struct MeanAxis<F> {
    axis: usize,
    keepdim: bool,
    inv_n: F,
}
impl<F: Element> Op<F> for MeanAxis<F> {
    fn name(&self) -> &str {
        "mean_axis"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        let inv_n = self.inv_n;
        // the sums scaled where they are (a fresh tensor: no copy), noting
        // in the same pass whether any mean is out of range
        let mut mean = x.sum_axis(self.axis, self.keepdim)?;
        let mut finite = true;
        for m in mean.data_mut() {
            *m = *m * inv_n;
            finite &= m.is_finite();
        }
        if finite {
            return Ok(mean);
        }
        let (_, len, inner) = split_at_axis(x.shape(), self.axis);
        let data = x.data();
        let values = mean
            .data()
            .iter()
            .enumerate()
            .map(|(r, &m)| match m.is_finite() {
                true => m,
                false => {
                    let (o, i) = (r / inner, r % inner);
                    let along = (0..len).map(|k| data[(o * len + k) * inner + i]);
                    mean_out_of_range(along, len)
                }
            })
            .collect();
        Tensor::from_vec(values, mean.shape())
    }
    // Each input element receives 1/n of the gradient of the mean it fed.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let inv_n = self.inv_n;
        let g = g.map(|v| v * inv_n);
        Ok(vec![Some(along_axis(&g, inputs[0].shape(), self.axis)?)])
    }
}

/// A reduction's gradient `g` (one value per reduced position) repeated
/// along the reduced `axis` of an input of `shape`.
fn along_axis<F: Element>(g: &Tensor<F>, shape: &[usize], axis: usize) -> Result<Tensor<F>> {
    let mut kept = shape.to_vec();
    kept[axis] = 1;
    g.reshape(&kept)?.broadcast_to(shape)
}

/// Maximum along one axis; the gradient goes to the first maximal element.
struct MaxAxis {
    axis: usize,
    keepdim: bool,
}
impl<F: Element> Op<F> for MaxAxis {
    fn name(&self) -> &str {
        "max_axis"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        inputs[0].max_axis(self.axis, self.keepdim)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let x = inputs[0];
        let (outer, len, inner) = split_at_axis(x.shape(), self.axis);
        let mut dx = vec![F::zero(); x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let r = o * inner + i;
                let k = (0..len)
                    .find(|&k| x.data()[(o * len + k) * inner + i] == out.data()[r])
                    .unwrap_or(0);
                dx[(o * len + k) * inner + i] = g.data()[r];
            }
        }
        Ok(vec![Some(Tensor::from_vec(dx, x.shape())?)])
    }
}

/// Running sums along one axis, from its start or, with `from_end`, from
/// its end. Each is added up in order, one element at a time.
struct CumSum {
    axis: usize,
    from_end: bool,
}

impl CumSum {
    fn apply<F: Element>(&self, x: &Tensor<F>) -> Result<Tensor<F>> {
        let (op, axis) = (self.name_of(), self.axis);
        if axis >= x.shape().len() {
            return Err(Error::AxisOutOfRange {
                op,
                axis,
                shape: x.shape().to_vec(),
            });
        }
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let (data, mut out) = (x.data(), vec![F::zero(); x.len()]);
        if x.is_empty() {
            return Tensor::from_vec(out, x.shape());
        }
        let block = len * inner;
        // the outer blocks over the threads; in a block, the running sums
        // of all inner positions advance a row at a time (a loop that
        // vectorizes), each adding its values in the axis' order
        par_blocks(
            &mut out[..],
            outer,
            x.len(),
            #[inline(always)]
            |items, part: &mut [F]| {
                let mut sum = vec![F::zero(); inner];
                for (o, out) in items.zip(part.chunks_exact_mut(block)) {
                    let src = &data[o * block..(o + 1) * block];
                    if inner == 1 {
                        // a row of the last axis: one running sum
                        let mut s = F::zero();
                        for step in 0..len {
                            let k = if self.from_end { len - 1 - step } else { step };
                            s = s + src[k];
                            out[k] = s;
                        }
                        continue;
                    }
                    sum.fill(F::zero());
                    for step in 0..len {
                        let k = if self.from_end { len - 1 - step } else { step };
                        let row = &src[k * inner..(k + 1) * inner];
                        let out = &mut out[k * inner..(k + 1) * inner];
                        for ((s, &v), o) in sum.iter_mut().zip(row).zip(out) {
                            *s = *s + v;
                            *o = *s;
                        }
                    }
                }
            },
        );
        Tensor::from_vec(out, x.shape())
    }
    fn name_of(&self) -> &'static str {
        if self.from_end {
            "cumsum_from_end"
        } else {
            "cumsum"
        }
    }
}

impl<F: Element> Op<F> for CumSum {
    fn name(&self) -> &str {
        self.name_of()
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        self.apply(inputs[0])
    }
    // Element `j` feeds the running sums at `j` and past it (before it,
    // from the end): its gradient is the running sum of the output
    // gradients the other way.
    fn backward(
        &self,
        _: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let other = CumSum {
            axis: self.axis,
            from_end: !self.from_end,
        };
        Ok(vec![Some(other.apply(g)?)])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// Sum of all elements (a scalar).
    pub fn sum(self) -> Self {
        let span = profile::span();
        let value = self
            .tape
            .with_value(self.id, |x| Tensor::scalar(x.sum_all()));
        self.tape.record(span, value, Box::new(SumAll), &[self])
    }

    /// Mean of all elements (a scalar; NaN for an empty tensor, caught by
    /// the numerics check). Finite for finite elements, even where their
    /// sum would overflow.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::vector(&[3e38, 3e38, 1e38]));
    /// let mean = x.mean().item()?;   // the sum, 7e38, is beyond f32's range
    /// assert!((f64::from(mean) - 7e38 / 3.0).abs() <= 1e32);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn mean(self) -> Self {
        let span = profile::span();
        let (op, value) = self.tape.with_value(self.id, |x| {
            let op = MeanAll {
                inv_n: F::one() / F::lit(x.len() as f64),
            };
            let value = op.mean(x);
            (op, value)
        });
        self.tape.record(span, value, Box::new(op), &[self])
    }

    /// Sum along `axis`, keeping it with size 1 if `keepdim`.
    pub fn sum_axis(self, axis: usize, keepdim: bool) -> Result<Self> {
        self.tape.apply(SumAxis { axis, keepdim }, &[self])
    }

    /// Mean along `axis`; finite for finite elements, even where their sum
    /// would overflow.
    pub fn mean_axis(self, axis: usize, keepdim: bool) -> Result<Self> {
        let shape = self.shape();
        let Some(&n) = shape.get(axis) else {
            return Err(Error::AxisOutOfRange {
                op: "mean_axis",
                axis,
                shape,
            });
        };
        let inv_n = F::one() / F::lit(n as f64);
        self.tape.apply(
            MeanAxis {
                axis,
                keepdim,
                inv_n,
            },
            &[self],
        )
    }

    /// Maximum along `axis` (gradient to the first maximal element).
    pub fn max_axis(self, axis: usize, keepdim: bool) -> Result<Self> {
        self.tape.apply(MaxAxis { axis, keepdim }, &[self])
    }

    /// Running sums along `axis`: element `k` is the sum of elements
    /// `0..=k`, added up in that order.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::vector(&[1.0, 2.0, 3.0]));
    /// assert_eq!(x.cumsum(0)?.value().data(), &[1.0, 3.0, 6.0]);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn cumsum(self, axis: usize) -> Result<Self> {
        let op = CumSum {
            axis,
            from_end: false,
        };
        self.tape.apply(op, &[self])
    }

    /// Running sums along `axis` from its end: element `k` is the sum of
    /// elements `k..`, added up from the last one. These are the tails of a
    /// stick-breaking construction, each as accurate as its own terms:
    /// `total - cumsum` would lose a small tail's digits to the total.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::vector(&[1e20, 1.0, 2.0]));
    /// let tails = x.cumsum_from_end(0)?;
    /// assert_eq!(tails.value().data(), &[1e20, 3.0, 2.0]);
    /// // the total less the running sum from the start has lost the tail
    /// let total = x.sum().item()?;
    /// assert_eq!(total - x.cumsum(0)?.value().data()[0], 0.0);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn cumsum_from_end(self, axis: usize) -> Result<Self> {
        let op = CumSum {
            axis,
            from_end: true,
        };
        self.tape.apply(op, &[self])
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    /// A mean of finite values is finite where their sum overflows, in a
    /// whole tensor and along an axis (only the row that overflows leaves
    /// the sum-times-`1/n` path, whose bits the others keep); non-finite
    /// values still give a non-finite mean, and no values NaN.
    #[test]
    fn means_of_finite_values_stay_finite_where_the_sum_overflows() {
        let mean = |v: &[f32]| {
            Tape::<f32>::new()
                .var(Tensor::vector(v))
                .mean()
                .item()
                .unwrap()
        };
        let m = mean(&[3e38, 3e38, 1e38]);
        assert!((f64::from(m) - 7e38 / 3.0).abs() <= 3e31, "{m}");
        // within 2 ulp of the largest value, never beyond it
        for (v, n) in [(f32::MAX, 3), (-f32::MAX, 5), (f32::MAX, 1000)] {
            let m = mean(&vec![v; n]);
            assert!(
                m.is_finite() && m / v >= 1.0 - 2.0 * f32::EPSILON,
                "{n} of {v}: {m}"
            );
        }
        assert_eq!(mean(&[3e38, f32::INFINITY]), f32::INFINITY);
        assert!(mean(&[f32::INFINITY, f32::NEG_INFINITY]).is_nan());
        assert!(mean(&[3e38, 3e38, f32::NAN]).is_nan());
        assert!(mean(&[]).is_nan());
        let tape = Tape::<f64>::new();
        let m = tape.var(Tensor::vector(&[1.7e308, 1.7e308, 1.6e308]));
        let m = m.mean().item().unwrap();
        assert!((m - 5e307 / 0.3).abs() <= 1e295, "{m}");

        let rows = Tensor::<f32>::from_vec(
            vec![3e38, 3e38, 1e38, 0.1, 0.2, 0.7, -3e38, -3e38, 2.0],
            &[3, 3],
        )
        .unwrap();
        let tape = Tape::<f32>::new();
        let x = tape.var(rows.clone());
        let by_row = x.mean_axis(1, false).unwrap().value();
        let third = 1.0f32 / 3.0;
        let m = by_row.data();
        assert!((f64::from(m[0]) - 7e38 / 3.0).abs() <= 3e31, "{m:?}");
        assert_eq!(m[1].to_bits(), ((0.1f32 + 0.2 + 0.7) * third).to_bits());
        assert!((f64::from(m[2]) + 6e38 / 3.0).abs() <= 3e31, "{m:?}");
        // along the first axis: the columns
        let by_col = x.mean_axis(0, true).unwrap().value();
        assert_eq!(by_col.shape(), &[1, 3]);
        let c = by_col.data();
        assert_eq!(c[0].to_bits(), ((3e38f32 + 0.1 + -3e38) * third).to_bits());
        assert!(
            (f64::from(c[2]) - (1e38 + 2.7) / 3.0).abs() <= 1e31,
            "{c:?}"
        );
        assert!(x.mean_axis(2, false).is_err());
    }

    /// Away from overflow a mean has the bits of the sum times `1/n`, and
    /// its gradient is `1/n` of the incoming one.
    #[test]
    fn means_are_the_sum_times_the_reciprocal_of_the_count() {
        let x = Tensor::<f32>::from_fn(&[7, 13], |i| ((i * 7919) % 1009) as f32 * 0.37 - 150.0);
        let tape = Tape::<f32>::new();
        let v = tape.var(x.clone());
        let inv = |n: usize| 1.0f32 / n as f32;
        let mean = v.mean();
        assert_eq!(
            mean.item().unwrap().to_bits(),
            (x.sum_all() * inv(91)).to_bits()
        );
        let g = mean.mul_scalar(3.0).backward().unwrap();
        let want = (3.0f32 * inv(91)).to_bits();
        assert!(g.get(v).unwrap().data().iter().all(|d| d.to_bits() == want));
        for axis in 0..2 {
            let n = x.shape()[axis];
            let m = v.mean_axis(axis, false).unwrap();
            let sums = x.sum_axis(axis, false).unwrap();
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let want: Vec<f32> = sums.data().iter().map(|s| s * inv(n)).collect();
            assert_eq!(bits(m.value().data()), bits(&want), "axis {axis}");
            let g = m.sum().backward().unwrap();
            assert!(
                g.get(v)
                    .unwrap()
                    .data()
                    .iter()
                    .all(|d| d.to_bits() == inv(n).to_bits()),
                "axis {axis}"
            );
        }
    }

    /// Running sums along each axis, from either end, on one thread and
    /// two: the bits of each position's values added one after the other,
    /// and the gradient (the running sums the other way) likewise.
    #[test]
    fn running_sums_add_their_values_in_order() {
        for shape in [[3usize, 5, 4], [2, 20_000, 2]] {
            let x = Tensor::<f32>::from_fn(&shape, |i| ((i * 7919) % 1009) as f32 * 0.37 - 150.0);
            let w = Tensor::<f32>::from_fn(&shape, |i| ((i * 13) % 7) as f32 - 3.0);
            for axis in 0..3 {
                let (outer, len, inner) = crate::tensor::split_at_axis(&shape, axis);
                // the running sums of `v` in the order `steps` visits the axis
                let running = |v: &Tensor<f32>, from_end: bool| {
                    let mut out = vec![0.0f32; v.len()];
                    for o in 0..outer {
                        for i in 0..inner {
                            let mut sum = 0.0f32;
                            for step in 0..len {
                                let k = if from_end { len - 1 - step } else { step };
                                let at = (o * len + k) * inner + i;
                                sum += v.data()[at];
                                out[at] = sum;
                            }
                        }
                    }
                    out
                };
                for from_end in [false, true] {
                    let tape = Tape::<f32>::new();
                    let v = tape.var(x.clone());
                    let y = match from_end {
                        false => v.cumsum(axis).unwrap(),
                        true => v.cumsum_from_end(axis).unwrap(),
                    };
                    let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    let what = format!("{shape:?} axis {axis} from_end {from_end}");
                    assert!(
                        bits(y.value().data()) == bits(&running(&x, from_end)),
                        "{what}"
                    );
                    let g = (y * tape.constant(w.clone())).sum().backward().unwrap();
                    let want = running(&w, !from_end);
                    assert!(
                        bits(g.get(v).unwrap().data()) == bits(&want),
                        "{what}: gradient"
                    );
                }
            }
        }
    }

    #[test]
    fn max_axis_routes_gradient_to_argmax() {
        // rows [1, 5, 2] and [7, 0, 7]: max 5 and 7 (first), grads to (0,1) and (1,0)
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_vec(vec![1., 5., 2., 7., 0., 7.], &[2, 3]).unwrap());
        let m = x.max_axis(1, false).unwrap();
        assert_eq!(m.value().data(), &[5., 7.]);
        let g = m.sum().backward().unwrap();
        assert_eq!(g.get(x).unwrap().data(), &[0., 1., 0., 1., 0., 0.]);
    }

    #[test]
    fn mean_axis_divides_by_axis_length() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap());
        assert_eq!(x.mean_axis(0, false).unwrap().value().data(), &[2., 3.]);
        assert!(x.sum_axis(2, true).is_err());
    }
}
