//! Matrix product and transpose.

use crate::autodiff::tape::{Op, Var};
use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// `a @ b` for rank-2 operands. Backward reads the operands transposed
/// through strides, never copying them: `da = g b^T`, `db = a^T g`.
struct Matmul;
impl<F: Element> Op<F> for Matmul {
    fn name(&self) -> &str {
        "matmul"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        inputs[0].matmul(inputs[1])
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, out, g, &[true, true])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (a, b) = (inputs[0], inputs[1]);
        let da = if needs[0] {
            Some(g.matmul_t(b, false, true)?)
        } else {
            None
        };
        let db = if needs[1] {
            Some(a.matmul_t(g, true, false)?)
        } else {
            None
        };
        Ok(vec![da, db])
    }
}

/// Swaps the last two axes.
struct Transpose;
impl<F: Element> Op<F> for Transpose {
    fn name(&self) -> &str {
        "transpose"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        inputs[0].transpose()
    }
    fn backward(
        &self,
        _: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        Ok(vec![Some(g.transpose()?)])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// Matrix product of two rank-2 vars; errors naming both shapes when
    /// the inner dimensions disagree.
    pub fn matmul(self, rhs: Var<'t, F>) -> Result<Self> {
        self.tape.apply(Matmul, &[self, rhs])
    }

    /// Swaps the last two axes (rank >= 2).
    pub fn transpose(self) -> Result<Self> {
        self.tape.apply(Transpose, &[self])
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    #[test]
    fn matmul_gradients_by_hand() {
        // y = sum(a b), a = [[1,2]], b = [[3],[4]]: y = 11, da = b^T = [3,4], db = a^T = [1,2]
        let tape = Tape::<f64>::new();
        let a = tape.var(Tensor::from_vec(vec![1., 2.], &[1, 2]).unwrap());
        let b = tape.var(Tensor::from_vec(vec![3., 4.], &[2, 1]).unwrap());
        let y = a.matmul(b).unwrap().sum();
        assert_eq!(y.item().unwrap(), 11.0);
        let g = y.backward().unwrap();
        assert_eq!(g.get(a).unwrap().data(), &[3., 4.]);
        assert_eq!(g.get(b).unwrap().data(), &[1., 2.]);
        assert!(matches!(
            a.matmul(a),
            Err(Error::ShapeMismatch { op: "matmul", .. })
        ));
    }
}
