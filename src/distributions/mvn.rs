//! The multivariate normal distribution with a Cholesky-factored covariance.

use super::{Distribution, HALF_LN_2PI, check_finite, check_values, sample_shape};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Number, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// The multivariate normal `N(loc, L Lᵀ)` over the last axis, with a
/// lower-triangular `scale_tril = L` (positive diagonal).
///
/// # Density
/// With `z = L⁻¹ (x - loc)` (a triangular solve):
/// `ln p(x) = -|z|²/2 - Σ ln L_ii - d ln(2π)/2`.
///
/// # Sampling
/// `x = loc + L ε`, `ε ~ N(0, I)`: `rsample` is differentiable in `loc` and `L`.
///
/// # Parameters
/// - `loc`: shape `batch + [d]`, finite.
/// - `scale_tril`: `[d, d]`, lower triangular (entries above the diagonal
///   must be 0), finite, with a positive diagonal (at least the smallest
///   normal number); shared by the batch.
///   [`from_covariance`](Self::from_covariance) factors a covariance with
///   a differentiable Cholesky op.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let loc = tape.var(Tensor::vector(&[0.0, 1.0]));
/// let cov = tape.var(Tensor::from_rows(&[[2.0, 0.5], [0.5, 1.0]])?);
/// let d = MultivariateNormal::from_covariance(loc, cov)?;
/// let lp = d.log_prob(tape.constant(Tensor::vector(&[0.3, 0.2])))?;
/// let g = lp.backward()?;
/// assert!(g.get(cov).is_some());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct MultivariateNormal<'t, F: Element> {
    loc: Var<'t, F>,
    scale_tril: Var<'t, F>,
}

impl<'t, F: Element> MultivariateNormal<'t, F> {
    /// From a mean and a lower-triangular scale.
    ///
    /// # Errors
    /// Non-finite entries; a scale that is not `[d, d]` for the mean's last
    /// axis `d`, not lower triangular, or with a diagonal entry below the
    /// smallest normal number (the solves divide by it; a subnormal one
    /// gave NaN gradients).
    pub fn from_scale_tril(loc: Var<'t, F>, scale_tril: Var<'t, F>) -> Result<Self> {
        super::same_tape("MultivariateNormal::new", &loc, &scale_tril)?;
        check_finite("MultivariateNormal", "loc", &loc)?;
        check_finite("MultivariateNormal", "scale_tril", &scale_tril)?;
        let (ls, ss) = (loc.shape(), scale_tril.shape());
        let d = ls.last().copied().unwrap_or(0);
        if d == 0 || ss != [d, d] {
            return Err(Error::invalid(
                "MultivariateNormal",
                format!(
                    "scale_tril must be [d, d] for loc of shape {ls:?} (d = its last axis), got {ss:?}"
                ),
            ));
        }
        let l = scale_tril.value();
        for i in 0..d {
            let diag = l.data()[i * d + i];
            if diag < F::min_positive_value() || diag.is_nan() {
                return Err(Error::InvalidParameter {
                    distribution: "MultivariateNormal",
                    parameter: "scale_tril diagonal",
                    value: diag.to_f64().unwrap_or(f64::NAN),
                    reason: "must be at least the smallest normal number (1.2e-38 in f32, 2.2e-308 in f64)",
                });
            }
            for j in i + 1..d {
                let v = l.data()[i * d + j];
                if v != F::zero() {
                    return Err(Error::InvalidParameter {
                        distribution: "MultivariateNormal",
                        parameter: "scale_tril above the diagonal",
                        value: v.to_f64().unwrap_or(f64::NAN),
                        reason: "must be 0 (the scale is lower triangular)",
                    });
                }
            }
        }
        // read through the lower-triangle mask: every use (the solve, the
        // sampler, the KL) then gives the entries above the diagonal a zero
        // gradient, as they are not parameters; chosen, not multiplied, so
        // that an infinite or NaN gradient there stays out (a product with
        // the mask's 0 was NaN: `KL(q || q)` at `L = [[1e-30, 0], [1,
        // 1e-30]]` in f32, whose solves overflow above the diagonal)
        let tril = Tensor::from_fn(
            &[d, d],
            |i| if i % d <= i / d { F::one() } else { F::zero() },
        );
        let zeros = scale_tril.tape().constant(Tensor::zeros(&[d, d]));
        let scale_tril = scale_tril.choose(tril, zeros)?;
        Ok(MultivariateNormal { loc, scale_tril })
    }

    /// From a mean and a symmetric positive-definite covariance, factored
    /// by the differentiable [`Var::cholesky`] (which reads the lower
    /// triangle, so the gradient goes to it).
    ///
    /// # Errors
    /// Non-finite entries; a covariance that is not symmetric (an entry
    /// further from its mirror image than `1e-5` of their scale in `f64`,
    /// `3.5e-4` in `f32`: the entries above the diagonal would be ignored);
    /// one that is not positive definite; those of
    /// [`MultivariateNormal::from_scale_tril`].
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let cov = |c: [f64; 4]| tape.var(Tensor::from_vec(c.to_vec(), &[2, 2]).unwrap());
    /// let loc = tape.var(Tensor::zeros(&[2]));
    /// assert!(MultivariateNormal::from_covariance(loc, cov([2.0, 0.9, 0.9, 2.0])).is_ok());
    /// assert!(MultivariateNormal::from_covariance(loc, cov([2.0, 0.1, 0.9, 2.0])).is_err());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn from_covariance(loc: Var<'t, F>, covariance: Var<'t, F>) -> Result<Self> {
        check_values(
            "MultivariateNormal",
            "covariance",
            &covariance,
            "must be finite",
            |v| v.is_finite(),
        )?;
        if let [d, e] = covariance.shape()[..]
            && d == e
        {
            let c = covariance.value();
            let at = |i: usize, j: usize| c.data()[i * d + j];
            // loose enough for rounding and for a finite-difference step
            // of 1e-6 on one entry of a unit-scale matrix
            let tolerance = F::epsilon().sqrt().max(F::lit(1e-5));
            for i in 0..d {
                for j in i + 1..d {
                    let (upper, lower) = (at(i, j), at(j, i));
                    let scale = upper
                        .abs()
                        .max(lower.abs())
                        .max((at(i, i) * at(j, j)).abs().sqrt());
                    if (upper - lower).abs() > tolerance * scale {
                        return Err(Error::invalid(
                            "MultivariateNormal::from_covariance",
                            format!(
                                "the covariance is not symmetric: entry ({i}, {j}) is {} and ({j}, {i}) is {} \
                                 (only the lower triangle would be read)",
                                Number(upper),
                                Number(lower),
                            ),
                        ));
                    }
                }
            }
        }
        Self::from_scale_tril(loc, covariance.cholesky()?)
    }

    /// The mean.
    pub fn loc(&self) -> Var<'t, F> {
        self.loc
    }

    /// The lower-triangular scale `L`.
    pub fn scale_tril(&self) -> Var<'t, F> {
        self.scale_tril
    }

    fn dim(&self) -> usize {
        *self.loc.shape().last().unwrap_or(&0)
    }

    /// `Σ ln L_ii`.
    fn log_det_half(&self) -> Result<Var<'t, F>> {
        let d = self.dim();
        let eye = Tensor::from_fn(
            &[d, d],
            |i| if i / d == i % d { F::one() } else { F::zero() },
        );
        (self.scale_tril * eye)
            .sum_axis(1, false)
            .map(|v| v.ln().sum())
    }
}

impl<'t, F: Element> Distribution<'t, F> for MultivariateNormal<'t, F> {
    super::kl::builtin_kl!(MultivariateNormal => kl_mvn);

    fn name(&self) -> &'static str {
        "MultivariateNormal"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.loc.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        super::same_tape("MultivariateNormal::log_prob", &self.loc, &x)?;
        let d = self.dim();
        check_finite("MultivariateNormal", "value", &x)?;
        let diff = x.try_sub(self.loc)?;
        let shape = diff.shape();
        if shape.last() != Some(&d) {
            return Err(Error::invalid(
                "MultivariateNormal::log_prob",
                format!("values need a last axis of {d}, got shape {shape:?}"),
            ));
        }
        let batch = &shape[..shape.len() - 1];
        let n: usize = batch.iter().product();
        let z = self
            .scale_tril
            .tri_solve(diff.reshape(&[n, d])?.transpose()?)?;
        let quad = z.square().sum_axis(0, false)?.reshape(batch)?;
        let norm = self.log_det_half()? + F::lit(d as f64 * HALF_LN_2PI);
        Ok(quad * F::lit(-0.5) - norm)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let d = self.dim();
        let mut shape = sample_shape(n, &self.batch_shape());
        shape.push(d);
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let eps = self
            .tape()
            .constant(super::standard_normal::<F>(&[rows, d], rng));
        let x = eps.matmul(self.scale_tril.transpose()?)?.reshape(&shape)?;
        x.try_add(self.loc)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // H = d (1 + ln 2π) / 2 + Σ ln L_ii
    fn entropy(&self) -> Result<Var<'t, F>> {
        let d = self.dim() as f64;
        let h = self.log_det_half()? + F::lit(d * (0.5 + HALF_LN_2PI));
        let batch = self.batch_shape();
        if batch.is_empty() {
            Ok(h)
        } else {
            h.broadcast_to(&batch)
        }
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Ok(self.loc)
    }
    /// The marginal variances, `diag(L Lᵀ)`.
    fn variance(&self) -> Result<Var<'t, F>> {
        let v = self.scale_tril.square().sum_axis(1, false)?;
        v.broadcast_to(&self.loc.shape())
    }
    fn batch_shape(&self) -> Vec<usize> {
        let s = self.loc.shape();
        s[..s.len() - 1].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![self.dim()]
    }
}

/// KL(N(μq, Lq Lqᵀ) || N(μp, Lp Lpᵀ))
/// `= (|Lp⁻¹ Lq|²_F + |Lp⁻¹ (μp - μq)|² - d) / 2 + Σ ln Lp_ii - Σ ln Lq_ii`.
pub(crate) fn kl_mvn<'t, F: Element>(
    q: &MultivariateNormal<'t, F>,
    p: &MultivariateNormal<'t, F>,
) -> Result<Var<'t, F>> {
    let d = q.dim();
    if p.dim() != d {
        return Err(Error::ShapeMismatch {
            op: "kl_divergence",
            lhs: q.loc.shape(),
            rhs: p.loc.shape(),
        });
    }
    let trace = p.scale_tril.tri_solve(q.scale_tril)?.square().sum();
    let diff = p.loc.try_sub(q.loc)?;
    let shape = diff.shape();
    let batch = shape[..shape.len() - 1].to_vec();
    let n: usize = batch.iter().product();
    let m = p
        .scale_tril
        .tri_solve(diff.reshape(&[n, d])?.transpose()?)?
        .square()
        .sum_axis(0, false)?
        .reshape(&batch)?;
    let half = m.try_add(trace)? * F::lit(0.5) - F::lit(d as f64 * 0.5);
    half.try_add(p.log_det_half()?.try_sub(q.log_det_half()?)?)
}
