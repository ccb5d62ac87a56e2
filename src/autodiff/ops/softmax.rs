//! `log_softmax` and `logsumexp`, both shifted by the maximum so that
//! logits of magnitude 1e4 neither overflow nor underflow.

use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::tensor::{split_at_axis, Element, Tensor};

/// `logsumexp` along `axis` of a tensor (keepdim).
fn lse<F: Element>(x: &Tensor<F>, axis: usize) -> Result<Tensor<F>> {
    let m = x.max_axis(axis, true)?;
    let (outer, len, inner) = split_at_axis(x.shape(), axis);
    let mut out = m.clone();
    for o in 0..outer {
        for i in 0..inner {
            let mi = m.data()[o * inner + i];
            if !mi.is_finite() {
                continue; // all -inf (or +inf/NaN present): the max is the answer
            }
            let s: F = (0..len)
                .map(|k| (x.data()[(o * len + k) * inner + i] - mi).exp())
                .sum();
            out.data_mut()[o * inner + i] = mi + s.ln();
        }
    }
    Ok(out)
}

/// `x - logsumexp(x)` along an axis.
struct LogSoftmax {
    axis: usize,
}
impl<F: Element> Op<F> for LogSoftmax {
    fn name(&self) -> &str {
        "log_softmax"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let l = lse(inputs[0], self.axis)?;
        inputs[0].zip_map(&l, "log_softmax", |x, l| x - l)
    }
    // dx = g - softmax(x) * sum(g) along the axis, with softmax = exp(y).
    fn backward(
        &self,
        _: &[&Tensor<F>],
        y: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let gs = g.sum_axis(self.axis, true)?;
        let p_gs = y.zip_map(&gs, "log_softmax", |y, s| y.exp() * s)?;
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
        let out = lse(inputs[0], self.axis)?;
        if self.keepdim {
            Ok(out)
        } else {
            let mut shape = inputs[0].shape().to_vec();
            shape.remove(self.axis);
            out.reshape(&shape)
        }
    }
    // d lse / d x_k = exp(x_k - lse) = softmax_k.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        y: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let x = inputs[0];
        let mut kept = x.shape().to_vec();
        kept[self.axis] = 1;
        let (y, g) = (y.reshape(&kept)?, g.reshape(&kept)?);
        let p = x.zip_map(&y, "logsumexp", |x, l| {
            if l.is_finite() {
                (x - l).exp()
            } else {
                F::zero()
            }
        })?;
        Ok(vec![Some(p.zip_map(&g, "logsumexp", |p, g| p * g)?)])
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
}
