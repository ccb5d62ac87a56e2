//! Matrix product and transpose.

use crate::autodiff::tape::{MultiOp, Op, Var};
use crate::error::Result;
use crate::kernels::gemm::{MatRef, Product, gemm_many_uninit, gemm_new_many};
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

/// `(a1 @ b1, a2 @ b2)` for rank-2 operands, the two products computed side
/// by side (`gemm_new_many`), each element as `Matmul` computes it; the
/// backward's products (`g1 b1ᵀ`, `a1ᵀ g1`, `g2 b2ᵀ`, `a2ᵀ g2`, those
/// needed) likewise. A layer with two products of the same size (Flipout's
/// mean and perturbation, a local reparameterization's mean and variance)
/// spends less time in them this way than one product after the other.
struct MatmulPair;

impl<F: Element> MultiOp<F> for MatmulPair {
    fn name(&self) -> &str {
        "matmul_pair"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Vec<Tensor<F>>> {
        let products = inputs
            .chunks_exact(2)
            .map(|pair| pair[0].product_t(pair[1], false, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(gemm_new_many(&products)
            .into_iter()
            .zip(&products)
            .map(|(c, p)| Tensor::new_unchecked(c, vec![p.m, p.n]))
            .collect())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        grads: Vec<Option<Tensor<F>>>,
        needs: &[bool],
        acc: &mut [Option<Tensor<F>>],
    ) -> Result<()> {
        // (the input it is the gradient of, the product): `g bᵀ` and `aᵀ g`
        let mut products = Vec::with_capacity(4);
        for (j, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let (a, b) = (inputs[2 * j], inputs[2 * j + 1]);
            if needs[2 * j] {
                products.push((2 * j, g.product_t(b, false, true)?));
            }
            if needs[2 * j + 1] {
                products.push((2 * j + 1, a.product_t(g, true, false)?));
            }
        }
        let (targets, products): (Vec<_>, Vec<_>) = products.into_iter().unzip();
        for (i, c) in targets.into_iter().zip(gemm_new_many(&products)) {
            let g = Tensor::new_unchecked(c, inputs[i].shape().to_vec());
            match &mut acc[i] {
                Some(sum) => sum.add_assign(&g),
                slot @ None => *slot = Some(g),
            }
        }
        Ok(())
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
/// one GEMM per block on the blocks in place, the blocks side by side
/// (`gemm_many_uninit`). Backward per block:
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
            let products: Vec<Product<'_, F>> = (0..blocks)
                .map(|b| Product {
                    m,
                    k,
                    n,
                    a: MatRef::new(&xd[b * xr * xc..(b + 1) * xr * xc], xc, tx),
                    b: MatRef::new(&yd[b * yr * yc..(b + 1) * yr * yc], yc, ty),
                })
                .collect();
            gemm_many_uninit(&products, out.chunks_mut(m * n).collect());
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

    /// `(a1 @ b1, a2 @ b2)`: the values and gradients of two
    /// [`matmul`](Var::matmul)s, bit for bit, with the two products (and
    /// those of the backward pass) computed side by side, each on its share
    /// of the threads. (An input used by both products, and by other ops
    /// too, may have its gradient's terms added in another order than
    /// after two `matmul`s.) For a layer with two products of about the same
    /// size, such as a local reparameterization's mean `x μ` and variance
    /// `x² σ²`, this takes less time than one product after the other
    /// (`cargo run --release --example bench -- gemm` times both).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[1, 2])?);
    /// let mu = tape.var(Tensor::from_vec(vec![0.5, -1.0], &[2, 1])?);
    /// let var = tape.var(Tensor::from_vec(vec![0.1, 0.2], &[2, 1])?);
    /// let (mean, variance) = Var::matmul_pair((x, mu), (x.square(), var))?;
    /// assert_eq!(mean.value().data(), &[-1.5]);
    /// assert!((variance.value().data()[0] - 0.9).abs() < 1e-15);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`matmul`](Var::matmul), for either pair; vars of another tape.
    pub fn matmul_pair(
        (a1, b1): (Var<'t, F>, Var<'t, F>),
        (a2, b2): (Var<'t, F>, Var<'t, F>),
    ) -> Result<(Self, Self)> {
        let outputs = a1
            .tape
            .apply_multi(Box::new(MatmulPair), &[a1, b1, a2, b2])?;
        Ok((outputs[0], outputs[1]))
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

    /// A matrix of values with many significant bits.
    fn values<F: Element>(shape: &[usize], seed: usize) -> Tensor<F> {
        Tensor::from_fn(shape, |i| {
            F::lit(((i * 7919 + seed * 104_729) % 1013) as f64 / 1013.0 - 0.45)
        })
    }

    /// The pair's values and gradients, and those of two `matmul`s, bit for
    /// bit: products large enough to run side by side (and small ones),
    /// the left operands one var and its product with signs (as Flipout's
    /// are) or the same var twice, a constant right operand, and only the
    /// first product used; and products without an inner dimension or rows.
    #[test]
    fn a_matmul_pair_is_two_matmuls_bit_for_bit() {
        type Run<'t> = fn(
            (Var<'t, f32>, Var<'t, f32>),
            (Var<'t, f32>, Var<'t, f32>),
        ) -> Result<(Var<'t, f32>, Var<'t, f32>)>;
        for (m, k, n) in [(64, 256, 64), (3, 4, 5), (4, 0, 3), (0, 5, 2)] {
            for case in 0..4 {
                let run = |pair: bool| -> Result<Vec<Vec<u32>>> {
                    let tape = Tape::new();
                    let x = tape.var(values(&[m, k], 1));
                    let b1 = tape.var(values(&[k, n], 2));
                    let b2 = match case {
                        2 => tape.constant(values(&[k, n], 3)),
                        _ => tape.var(values(&[k, n], 3)),
                    };
                    let a2 = match case {
                        1 => x,
                        _ => x * values::<f32>(&[m, k], 4).map(|v| v.signum()),
                    };
                    let two: Run<'_> = if pair {
                        Var::matmul_pair
                    } else {
                        |(a1, b1), (a2, b2)| Ok((a1.matmul(b1)?, a2.matmul(b2)?))
                    };
                    let (p, q) = two((x, b1), (a2, b2))?;
                    let loss = match case {
                        3 => (p * values::<f32>(&[m, n], 5)).sum(),
                        _ => (p * values::<f32>(&[m, n], 5)).sum() + (q * q).sum(),
                    };
                    let grads = loss.backward()?;
                    let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect();
                    let mut out = vec![bits(&p.value()), bits(&q.value())];
                    for v in [x, b1, b2] {
                        out.push(grads.get(v).map_or(Vec::new(), bits));
                    }
                    Ok(out)
                };
                assert!(
                    run(true).unwrap() == run(false).unwrap(),
                    "{m}x{k}x{n}, case {case}"
                );
            }
        }
    }

    /// A batched product's blocks (run side by side) and their gradients
    /// are those of each block's `matmul`, bit for bit, for three blocks
    /// large enough to split (three equal products on two threads are dealt
    /// split) and for small ones.
    #[test]
    fn batched_blocks_are_each_blocks_matmul_bit_for_bit() {
        for (m, k, n) in [(64, 256, 64), (2, 3, 4)] {
            let run = |batched: bool| -> Result<Vec<Vec<u32>>> {
                let tape = Tape::<f32>::new();
                let a = tape.var(values(&[3, m, k], 1));
                let b = tape.var(values(&[3, k, n], 2));
                let c = match batched {
                    true => a.batched_matmul(b)?,
                    false => {
                        let blocks = (0..3)
                            .map(|i| a.index(i)?.matmul(b.index(i)?)?.reshape(&[1, m, n]))
                            .collect::<Result<Vec<_>>>()?;
                        Var::concat(&blocks, 0)?
                    }
                };
                let grads = (c * values::<f32>(&[3, m, n], 3)).sum().backward()?;
                let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect();
                Ok(vec![
                    bits(&c.value()),
                    bits(grads.get(a).unwrap()),
                    bits(grads.get(b).unwrap()),
                ])
            };
            assert!(run(true).unwrap() == run(false).unwrap(), "{m}x{k}x{n}");
        }
    }

    /// Finite differences through both products, with one operand used
    /// in both, and shape errors named as `matmul`'s.
    #[test]
    fn gradcheck_matmul_pair() {
        let inputs = [
            values::<f64>(&[3, 4], 1),
            values(&[4, 2], 2),
            values(&[3, 5], 3),
            values(&[5, 2], 4),
        ];
        let w = values::<f64>(&[3, 2], 5);
        gradcheck(
            |_, x| {
                let (p, q) = Var::matmul_pair((x[0], x[1]), (x[2], x[3]))?;
                Ok((p * w.clone()).sum() + (p * q).sum())
            },
            &inputs,
            &GradCheck::default(),
        )
        .unwrap();
        gradcheck(
            |_, x| {
                let (p, q) = Var::matmul_pair((x[0], x[1]), (x[0], x[1].exp()))?;
                // x[0] used after the pair too: its gradient from that use
                // reaches the pair's backward first
                Ok((p * q).sum() + x[0].square().sum())
            },
            &inputs[..2],
            &GradCheck::default(),
        )
        .unwrap();
        let tape = Tape::<f64>::new();
        let (a, b) = (tape.var(inputs[0].clone()), tape.var(inputs[1].clone()));
        assert!(matches!(
            Var::matmul_pair((a, b), (a, a)),
            Err(Error::ShapeMismatch { op: "matmul", .. })
        ));
    }

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
