//! Shape ops: reshape, broadcast, index, slice, select (index along an
//! axis), gather (one element per row), concat and stack.

use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor, numel, split_at_axis};

/// Same elements, another shape of equal size.
struct Reshape {
    shape: Vec<usize>,
}
impl<F: Element> Op<F> for Reshape {
    fn name(&self) -> &str {
        "reshape"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        inputs[0].reshape(&self.shape)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(g.reshape(inputs[0].shape())?)])
    }
}

/// NumPy broadcast to a larger shape; its adjoint sums back.
struct BroadcastTo {
    shape: Vec<usize>,
}
impl<F: Element> Op<F> for BroadcastTo {
    fn name(&self) -> &str {
        "broadcast_to"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        inputs[0].broadcast_to(&self.shape)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(g.sum_to(inputs[0].shape())?)])
    }
}

/// Picks `indices` along `axis` (repeats allowed); the backward scatters-adds.
struct Select {
    axis: usize,
    indices: Vec<usize>,
}
impl Select {
    /// The indices as runs of consecutive ones, `(first, length)` in order
    /// (a slice is one run): each run is one copy of `length * inner`
    /// elements, where one copy an index cost a call per element along the
    /// last axis.
    fn runs(&self) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &i in &self.indices {
            match runs.last_mut() {
                Some((first, len)) if *first + *len == i => *len += 1,
                _ => runs.push((i, 1)),
            }
        }
        runs
    }

    fn check<F: Element>(&self, x: &Tensor<F>, op: &'static str) -> Result<()> {
        if self.axis >= x.rank() {
            return Err(Error::AxisOutOfRange {
                op,
                axis: self.axis,
                shape: x.shape().to_vec(),
            });
        }
        let size = x.shape()[self.axis];
        match self.indices.iter().find(|&&i| i >= size) {
            Some(&index) => Err(Error::IndexOutOfRange {
                op,
                index,
                axis: self.axis,
                size,
            }),
            None => Ok(()),
        }
    }
}
impl<F: Element> Op<F> for Select {
    fn name(&self) -> &str {
        "select"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        self.check(x, "select")?;
        let (outer, len, inner) = split_at_axis(x.shape(), self.axis);
        let mut data = Vec::with_capacity(outer * self.indices.len() * inner);
        let runs = self.runs();
        for o in 0..outer {
            for &(i, n) in &runs {
                let start = (o * len + i) * inner;
                data.extend_from_slice(&x.data()[start..start + n * inner]);
            }
        }
        let mut shape = x.shape().to_vec();
        shape[self.axis] = self.indices.len();
        Tensor::from_vec(data, &shape)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let x = inputs[0];
        let (outer, len, inner) = split_at_axis(x.shape(), self.axis);
        let k = self.indices.len();
        let mut dx = Tensor::zeros(x.shape());
        let d = dx.data_mut();
        // (each run's elements are distinct, and the runs are added in the
        // indices' order: a repeated index gets its terms in the same order)
        let runs = self.runs();
        for o in 0..outer {
            let mut j = 0;
            for &(i, n) in &runs {
                let src = &g.data()[(o * k + j) * inner..(o * k + j + n) * inner];
                let dst = &mut d[(o * len + i) * inner..(o * len + i + n) * inner];
                dst.iter_mut().zip(src).for_each(|(a, &b)| *a = *a + b);
                j += n;
            }
        }
        Ok(vec![Some(dx)])
    }
}

/// For `x` of shape `[..., k]` and one index per leading position, picks
/// `x[..., indices[r]]`: shape `[...]`. (Categorical log-prob of labels.)
struct Gather {
    indices: Vec<usize>,
}
impl<F: Element> Op<F> for Gather {
    fn name(&self) -> &str {
        "gather"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        let Some((&k, lead)) = x.shape().split_last() else {
            return Err(Error::invalid("gather", "needs a tensor of rank >= 1"));
        };
        if numel(lead) != self.indices.len() {
            return Err(Error::invalid(
                "gather",
                format!(
                    "{} indices for {} rows of shape {:?}",
                    self.indices.len(),
                    numel(lead),
                    x.shape()
                ),
            ));
        }
        let mut data = Vec::with_capacity(self.indices.len());
        let xd = x.data();
        for (r, &i) in self.indices.iter().enumerate() {
            if i >= k {
                return Err(Error::IndexOutOfRange {
                    op: "gather",
                    index: i,
                    axis: x.rank() - 1,
                    size: k,
                });
            }
            data.push(xd[r * k + i]);
        }
        Tensor::from_vec(data, lead)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let x = inputs[0];
        let k = x.shape().last().copied().unwrap_or(1);
        let mut dx = Tensor::zeros(x.shape());
        let (d, g) = (dx.data_mut(), g.data());
        for (r, &i) in self.indices.iter().enumerate() {
            d[r * k + i] = g[r];
        }
        Ok(vec![Some(dx)])
    }
}

/// Joins tensors along an existing axis.
struct Concat {
    axis: usize,
}
impl<F: Element> Op<F> for Concat {
    fn name(&self) -> &str {
        "concat"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("concat", "needs at least one input"))?;
        if self.axis >= first.rank() {
            return Err(Error::AxisOutOfRange {
                op: "concat",
                axis: self.axis,
                shape: first.shape().to_vec(),
            });
        }
        let mut shape = first.shape().to_vec();
        shape[self.axis] = 0;
        for t in inputs {
            let same_rest = t.rank() == first.rank()
                && (0..t.rank()).all(|a| a == self.axis || t.shape()[a] == first.shape()[a]);
            if !same_rest {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
            shape[self.axis] += t.shape()[self.axis];
        }
        let outer = numel(&shape[..self.axis]);
        let mut data = Vec::with_capacity(numel(&shape));
        for o in 0..outer {
            for t in inputs {
                let block = numel(&t.shape()[self.axis..]);
                data.extend_from_slice(&t.data()[o * block..(o + 1) * block]);
            }
        }
        Tensor::from_vec(data, &shape)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let outer = numel(&out.shape()[..self.axis]);
        let out_block = numel(&out.shape()[self.axis..]);
        let mut offset = 0;
        let mut grads = Vec::with_capacity(inputs.len());
        for t in inputs {
            let block = numel(&t.shape()[self.axis..]);
            let mut data = Vec::with_capacity(t.len());
            for o in 0..outer {
                let start = o * out_block + offset;
                data.extend_from_slice(&g.data()[start..start + block]);
            }
            offset += block;
            grads.push(Some(Tensor::from_vec(data, t.shape())?));
        }
        Ok(grads)
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// The same elements under a new shape; errors if the sizes differ.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        self.tape.apply(
            Reshape {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// Repeats the value to `shape` under NumPy broadcasting (the var
    /// itself, with no new node, when it has that shape already).
    pub fn broadcast_to(self, shape: &[usize]) -> Result<Self> {
        if self.shape() == shape {
            return Ok(self);
        }
        self.tape.apply(
            BroadcastTo {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// Element `i` along the first axis, which is removed: `mu.index(0)` on a
    /// parameter of shape `[1]` is a scalar that still carries the gradient.
    pub fn index(self, i: usize) -> Result<Self> {
        let shape = self.shape();
        if shape.is_empty() {
            return Err(Error::invalid("index", "cannot index a rank-0 tensor"));
        }
        let picked = self.select(0, &[i])?;
        picked.reshape(&shape[1..])
    }

    /// The elements `start..end` along `axis`.
    pub fn slice(self, axis: usize, start: usize, end: usize) -> Result<Self> {
        let shape = self.shape();
        if axis >= shape.len() {
            return Err(Error::AxisOutOfRange {
                op: "slice",
                axis,
                shape,
            });
        }
        if start > end || end > shape[axis] {
            return Err(Error::invalid(
                "slice",
                format!("range {start}..{end} does not fit axis {axis} of shape {shape:?}"),
            ));
        }
        self.select(axis, &(start..end).collect::<Vec<_>>())
    }

    /// Picks `indices` along `axis` (like `index_select`; repeats allowed).
    pub fn select(self, axis: usize, indices: &[usize]) -> Result<Self> {
        self.tape.apply(
            Select {
                axis,
                indices: indices.to_vec(),
            },
            &[self],
        )
    }

    /// For a var of shape `[..., k]`, picks one element per leading position:
    /// `out[r] = self[r, indices[r]]`, of shape `[...]`.
    pub fn gather(self, indices: &[usize]) -> Result<Self> {
        self.tape.apply(
            Gather {
                indices: indices.to_vec(),
            },
            &[self],
        )
    }

    /// Inserts an axis of size 1 at `axis`.
    pub fn unsqueeze(self, axis: usize) -> Result<Self> {
        let mut shape = self.shape();
        if axis > shape.len() {
            return Err(Error::AxisOutOfRange {
                op: "unsqueeze",
                axis,
                shape,
            });
        }
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Joins vars along an existing axis.
    pub fn concat(vars: &[Var<'t, F>], axis: usize) -> Result<Self> {
        let first = vars
            .first()
            .ok_or_else(|| Error::invalid("concat", "needs at least one input"))?;
        first.tape.apply(Concat { axis }, vars)
    }

    /// Stacks equally-shaped vars along a new axis.
    pub fn stack(vars: &[Var<'t, F>], axis: usize) -> Result<Self> {
        let expanded = vars
            .iter()
            .map(|v| v.unsqueeze(axis))
            .collect::<Result<Vec<_>>>()?;
        Self::concat(&expanded, axis)
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    #[test]
    fn select_and_gather_scatter_gradients() {
        // x = [[1,2,3],[4,5,6]]; gather [2, 0] -> [3, 4]; select rows [1,1] -> grad 2 on row 1
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap());
        let g = x.gather(&[2, 0]).unwrap();
        assert_eq!(g.value().data(), &[3., 4.]);
        let grads = g.sum().backward().unwrap();
        assert_eq!(grads.get(x).unwrap().data(), &[0., 0., 1., 1., 0., 0.]);
        let s = x.select(0, &[1, 1]).unwrap().sum();
        assert_eq!(
            s.backward().unwrap().get(x).unwrap().data(),
            &[0., 0., 0., 2., 2., 2.]
        );
        assert!(matches!(
            x.gather(&[3, 0]),
            Err(Error::IndexOutOfRange { index: 3, .. })
        ));
    }

    /// `select` copies runs of consecutive indices at once and adds them
    /// back in the indices' order: the values and gradients of an element
    /// at a time, repeats included, along each axis.
    #[test]
    fn select_by_runs_gives_the_elementwise_values() {
        let shape = [4, 9, 3];
        let x = Tensor::<f64>::from_fn(&shape, |i| (i as f64 * 0.37).sin());
        let indices = [3, 4, 5, 1, 1, 2, 0, 3, 8];
        for axis in 0..3 {
            let idx: Vec<usize> = indices
                .iter()
                .copied()
                .filter(|&i| i < shape[axis])
                .collect();
            let (outer, len, inner) = crate::tensor::split_at_axis(&shape, axis);
            let mut want = Vec::new();
            let mut want_grad = vec![0.0; x.len()];
            let weight = |j: usize| 1.0 + j as f64 * 0.5;
            for o in 0..outer {
                for &i in &idx {
                    for r in 0..inner {
                        let at = (o * len + i) * inner + r;
                        want_grad[at] += weight(want.len());
                        want.push(x.data()[at]);
                    }
                }
            }
            let tape = Tape::<f64>::new();
            let v = tape.var(x.clone());
            let y = v.select(axis, &idx).unwrap();
            assert_eq!(y.value().data(), &want[..], "axis {axis}");
            let w = tape.constant(Tensor::from_fn(&y.shape(), weight));
            let g = (y * w).sum().backward().unwrap();
            assert_eq!(g.get(v).unwrap().data(), &want_grad[..], "axis {axis}");
        }
    }

    #[test]
    fn concat_splits_gradient_back() {
        let tape = Tape::<f64>::new();
        let a = tape.var(Tensor::from_vec(vec![1., 2.], &[2, 1]).unwrap());
        let b = tape.var(Tensor::from_vec(vec![3., 4., 5., 6.], &[2, 2]).unwrap());
        let c = Var::concat(&[a, b], 1).unwrap();
        assert_eq!(c.value().data(), &[1., 3., 4., 2., 5., 6.]);
        let w = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
        let grads = (c * w).sum().backward().unwrap();
        assert_eq!(grads.get(a).unwrap().data(), &[1., 4.]);
        assert_eq!(grads.get(b).unwrap().data(), &[2., 3., 5., 6.]);
    }
}
