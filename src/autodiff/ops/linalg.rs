//! Matrix product and transpose.

use crate::autodiff::tape::{Op, Var};
use crate::error::Result;
use crate::kernels::gemm::{MatRef, gemm_uninit};
use crate::tensor::Storage;
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

/// `a[k] @ b[k]` for every `k` of rank-3 operands `[K, m, n]`, `[K, n, p]`:
/// one GEMM per block on the blocks in place. Backward per block:
/// `da[k] = g[k] b[k]^T`, `db[k] = a[k]^T g[k]`.
struct BatchedMatmul;

/// `(K, m, n, p)` of a batched product, or an error naming both shapes.
fn batched_dims<F: Element>(a: &Tensor<F>, b: &Tensor<F>) -> Result<(usize, usize, usize, usize)> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != 3 || sb.len() != 3 || sa[0] != sb[0] || sa[2] != sb[1] {
        return Err(crate::error::Error::ShapeMismatch {
            op: "batched_matmul",
            lhs: sa.to_vec(),
            rhs: sb.to_vec(),
        });
    }
    Ok((sa[0], sa[1], sa[2], sb[2]))
}

/// Block `k` of every product `x[k]^(T?) @ y[k]^(T?)`, appended row-major:
/// `x` blocks are `xr x xc`, `y` blocks `yr x yc` (as stored).
fn per_block<F: Element>(
    x: (&[F], usize, usize, bool),
    y: (&[F], usize, usize, bool),
    blocks: usize,
) -> Tensor<F> {
    let (xd, xr, xc, tx) = x;
    let (yd, yr, yc, ty) = y;
    let (m, k) = if tx { (xc, xr) } else { (xr, xc) };
    let n = if ty { yr } else { yc };
    // SAFETY: each block's product writes its m x n elements, and the
    // blocks cover the output (which is empty when m x n is)
    let out = unsafe {
        Storage::build(blocks * m * n, |out| {
            if m * n == 0 {
                return;
            }
            for (b, c) in out.chunks_mut(m * n).enumerate() {
                let xb = &xd[b * xr * xc..(b + 1) * xr * xc];
                let yb = &yd[b * yr * yc..(b + 1) * yr * yc];
                gemm_uninit(m, k, n, MatRef::new(xb, xc, tx), MatRef::new(yb, yc, ty), c);
            }
        })
    };
    Tensor::new_unchecked(out, vec![blocks, m, n])
}

impl<F: Element> Op<F> for BatchedMatmul {
    fn name(&self) -> &str {
        "batched_matmul"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (a, b) = (inputs[0], inputs[1]);
        let (blocks, m, n, p) = batched_dims(a, b)?;
        crate::tensor::checked_alloc::<F>("batched_matmul", &[blocks, m, p])?;
        Ok(per_block(
            (a.data(), m, n, false),
            (b.data(), n, p, false),
            blocks,
        ))
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
        let (blocks, m, n, p) = batched_dims(a, b)?;
        let da =
            needs[0].then(|| per_block((g.data(), m, p, false), (b.data(), n, p, true), blocks));
        let db =
            needs[1].then(|| per_block((a.data(), m, n, true), (g.data(), m, p, false), blocks));
        Ok(vec![da, db])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// Matrix product of two rank-2 vars; errors naming both shapes when
    /// the inner dimensions disagree.
    pub fn matmul(self, rhs: Var<'t, F>) -> Result<Self> {
        self.tape.apply(Matmul, &[self, rhs])
    }

    /// The product of every block of two rank-3 vars: `[K, m, n] @ [K, n, p]`
    /// is `[K, m, p]`, block `k` being `self[k] @ rhs[k]`. Errors naming both
    /// shapes unless the block counts and inner dimensions agree.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 1, 2])?);
    /// let b = tape.var(Tensor::from_vec(vec![1.0, 1.0, 2.0, 0.0], &[2, 2, 1])?);
    /// let c = a.batched_matmul(b)?;
    /// assert_eq!(c.value().data(), &[3.0, 6.0]); // [1 2]·[1 1], [3 4]·[2 0]
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn batched_matmul(self, rhs: Var<'t, F>) -> Result<Self> {
        if !std::ptr::eq(self.tape, rhs.tape) {
            return Err(crate::error::Error::ForeignTape {
                op: "batched_matmul",
            });
        }
        self.tape.apply(BatchedMatmul, &[self, rhs])
    }

    /// Swaps the last two axes (rank >= 2).
    pub fn transpose(self) -> Result<Self> {
        self.tape.apply(Transpose, &[self])
    }
}

/// Checks that `l` is a square matrix and `b` a matrix with as many rows.
fn check_solve<F: Element>(l: &Tensor<F>, b: &Tensor<F>) -> Result<usize> {
    let (ls, bs) = (l.shape(), b.shape());
    if ls.len() != 2 || ls[0] != ls[1] || bs.len() != 2 || bs[0] != ls[0] {
        return Err(crate::error::Error::ShapeMismatch {
            op: "tri_solve",
            lhs: ls.to_vec(),
            rhs: bs.to_vec(),
        });
    }
    Ok(ls[0])
}

/// Solves `L X = B` for lower-triangular `L` (`[d, d]`, only its lower
/// triangle read) and `B: [d, n]` by forward substitution.
fn solve_lower<F: Element>(l: &Tensor<F>, b: &Tensor<F>) -> Tensor<F> {
    let d = l.shape()[0];
    let n = b.shape()[1];
    let (l, mut x) = (l.data(), b.data().to_vec());
    for i in 0..d {
        for c in 0..n {
            let mut s = x[i * n + c];
            for k in 0..i {
                s = s - l[i * d + k] * x[k * n + c];
            }
            x[i * n + c] = s / l[i * d + i];
        }
    }
    Tensor::new_unchecked(x, vec![d, n])
}

/// Solves `Lᵀ X = B` for lower-triangular `L` by back substitution.
fn solve_lower_transposed<F: Element>(l: &Tensor<F>, b: &Tensor<F>) -> Tensor<F> {
    let d = l.shape()[0];
    let n = b.shape()[1];
    let (l, mut x) = (l.data(), b.data().to_vec());
    for i in (0..d).rev() {
        for c in 0..n {
            let mut s = x[i * n + c];
            for k in i + 1..d {
                s = s - l[k * d + i] * x[k * n + c];
            }
            x[i * n + c] = s / l[i * d + i];
        }
    }
    Tensor::new_unchecked(x, vec![d, n])
}

/// `L⁻¹ B` for lower-triangular `L`.
struct TriSolve;
impl<F: Element> Op<F> for TriSolve {
    fn name(&self) -> &str {
        "tri_solve"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        check_solve(inputs[0], inputs[1])?;
        Ok(solve_lower(inputs[0], inputs[1]))
    }
    // B̄ = L⁻ᵀ X̄; L̄ = -tril(B̄ Xᵀ)
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        x: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let l = inputs[0];
        let d = l.shape()[0];
        let gb = solve_lower_transposed(l, g);
        let mut gl = gb.matmul_t(x, false, true)?;
        for i in 0..d {
            for j in 0..d {
                let v = &mut gl.data_mut()[i * d + j];
                *v = if j <= i { -*v } else { F::zero() };
            }
        }
        Ok(vec![Some(gl), Some(gb)])
    }
}

/// The Cholesky factor of a symmetric positive-definite matrix (its lower
/// triangle is read).
struct Cholesky;
impl<F: Element> Op<F> for Cholesky {
    fn name(&self) -> &str {
        "cholesky"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let a = inputs[0];
        let s = a.shape();
        if s.len() != 2 || s[0] != s[1] {
            return Err(crate::error::Error::invalid(
                "cholesky",
                format!("needs a square matrix, got shape {s:?}"),
            ));
        }
        let d = s[0];
        let a = a.data();
        let mut l = vec![F::zero(); d * d];
        for j in 0..d {
            let mut diag = a[j * d + j];
            for k in 0..j {
                diag = diag - l[j * d + k] * l[j * d + k];
            }
            if diag <= F::zero() || !diag.is_finite() {
                return Err(crate::error::Error::invalid(
                    "cholesky",
                    format!(
                        "the matrix is not positive definite (pivot {j} is {})",
                        diag.to_f64().unwrap_or(f64::NAN)
                    ),
                ));
            }
            let ljj = diag.sqrt();
            l[j * d + j] = ljj;
            for i in j + 1..d {
                let mut v = a[i * d + j];
                for k in 0..j {
                    v = v - l[i * d + k] * l[j * d + k];
                }
                l[i * d + j] = v / ljj;
            }
        }
        Ok(Tensor::new_unchecked(l, vec![d, d]))
    }
    // S = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹ and Ā = Φ(S + Sᵀ) (Murray 2016), Φ taking the
    // lower triangle with the diagonal halved: the gradient w.r.t. the
    // lower-triangle entries the forward pass read.
    fn backward(
        &self,
        _: &[&Tensor<F>],
        l: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let d = l.shape()[0];
        let phi = |m: &mut Tensor<F>| {
            for i in 0..d {
                for j in 0..d {
                    let v = &mut m.data_mut()[i * d + j];
                    if j > i {
                        *v = F::zero();
                    } else if j == i {
                        *v = *v * F::lit(0.5);
                    }
                }
            }
        };
        let mut p = l.matmul_t(g, true, false)?;
        phi(&mut p);
        // L⁻ᵀ P L⁻¹ = L⁻ᵀ (L⁻ᵀ Pᵀ)ᵀ
        let left = solve_lower_transposed(l, &p.transpose()?);
        let s = solve_lower_transposed(l, &left.transpose()?);
        let mut out = s.zip_map(&s.transpose()?, "cholesky", |a, b| a + b)?;
        phi(&mut out);
        Ok(vec![Some(out)])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// `L⁻¹ B` for a lower-triangular `self = L` (`[d, d]`; only its lower
    /// triangle is read, and only it gets a gradient) and `b: [d, n]`.
    pub fn tri_solve(self, b: Var<'t, F>) -> Result<Self> {
        if !std::ptr::eq(self.tape, b.tape) {
            return Err(crate::error::Error::ForeignTape { op: "tri_solve" });
        }
        self.tape.apply(TriSolve, &[self, b])
    }

    /// The lower Cholesky factor `L` of a symmetric positive-definite
    /// matrix (`self = L Lᵀ`); only the lower triangle of `self` is read,
    /// and the gradient goes to it.
    ///
    /// # Errors
    /// A matrix that is not square or not positive definite.
    pub fn cholesky(self) -> Result<Self> {
        self.tape.apply(Cholesky, &[self])
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
