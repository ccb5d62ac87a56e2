//! Reductions: sum and mean over everything or one axis, max over an axis.

use crate::autodiff::profile;
use crate::autodiff::tape::{Op, Var};
use crate::error::Result;
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
        let mut kept = inputs[0].shape().to_vec();
        kept[self.axis] = 1;
        Ok(vec![Some(
            g.reshape(&kept)?.broadcast_to(inputs[0].shape())?,
        )])
    }
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

impl<'t, F: Element> Var<'t, F> {
    /// Sum of all elements (a scalar).
    pub fn sum(self) -> Self {
        let span = profile::span();
        let value = self
            .tape
            .with_value(self.id, |x| Tensor::scalar(x.sum_all()));
        self.tape.record(span, value, Box::new(SumAll), &[self])
    }

    /// Mean of all elements (a scalar; NaN for an empty tensor, caught by the numerics check).
    pub fn mean(self) -> Self {
        let n = self.tape.with_value(self.id, |x| x.len());
        self.sum().mul_scalar(F::one() / F::lit(n as f64))
    }

    /// Sum along `axis`, keeping it with size 1 if `keepdim`.
    pub fn sum_axis(self, axis: usize, keepdim: bool) -> Result<Self> {
        self.tape.apply(SumAxis { axis, keepdim }, &[self])
    }

    /// Mean along `axis`.
    pub fn mean_axis(self, axis: usize, keepdim: bool) -> Result<Self> {
        let shape = self.shape();
        let s = self.sum_axis(axis, keepdim)?;
        Ok(s.mul_scalar(F::one() / F::lit(shape[axis] as f64)))
    }

    /// Maximum along `axis` (gradient to the first maximal element).
    pub fn max_axis(self, axis: usize, keepdim: bool) -> Result<Self> {
        self.tape.apply(MaxAxis { axis, keepdim }, &[self])
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

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
