//! Finite-difference gradient checking, in `f64` or `f32`.
//!
//! [`gradcheck`] compares the gradients from [`Var::backward`] with
//! central differences `(f(x + h) - f(x - h)) / 2h`, element by element.
//! A non-scalar output is reduced by a fixed, uneven weighting so that every
//! output element is checked (a plain sum could hide errors that cancel).

use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Number, Result};
use crate::tensor::{Element, Tensor};
use std::cmp::Ordering;

/// Settings of a gradient check: a pair fails when
/// `|analytic - numeric| > atol + rtol * |numeric|`.
///
/// ```
/// use bayesgrad::prelude::*;
/// // f32 ops are checked in f32, with a step and tolerances its rounding allows
/// let report = gradcheck(
///     |_, x| Ok(x[0].tanh().sum()),
///     &[Tensor::<f32>::vector(&[-1.0, 0.2, 2.0])],
///     &GradCheck::f32(),
/// )?;
/// assert!(report.max_abs_err() < 1e-3);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// The finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
}

impl Default for GradCheck {
    /// Settings for `f64`: step 1e-6, tolerances 1e-6 absolute and 1e-5 relative.
    fn default() -> Self {
        GradCheck {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
        }
    }
}

impl GradCheck {
    /// Settings for an `f32` op checked in `f32`: a step of 1e-2 (central
    /// differences then err by about `1e-7 / eps` from rounding and
    /// `eps^2` from curvature) and tolerances of 1e-3 absolute, 1e-2
    /// relative.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let report = gradcheck(
    ///     |_, x| Ok(x[0].softplus().sum()),
    ///     &[Tensor::<f32>::vector(&[-2.0, 0.5, 3.0])],
    ///     &GradCheck::f32(),
    /// )?;
    /// assert!(report.max_abs_err() < 1e-3);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn f32() -> Self {
        GradCheck {
            eps: 1e-2,
            atol: 1e-3,
            rtol: 1e-2,
        }
    }

    /// An error unless the step is finite and positive and the tolerances
    /// are not negative (or NaN): a step of 0 divides 0 by 0, and a NaN
    /// tolerance fails every element, each with a message that names the
    /// derivatives rather than the setting.
    fn check(&self) -> Result<()> {
        let reason = if !(self.eps.is_finite() && self.eps > 0.0) {
            format!(
                "the step eps must be finite and > 0, got {}",
                Number(self.eps)
            )
        } else if self.atol.is_nan() || self.rtol.is_nan() || self.atol < 0.0 || self.rtol < 0.0 {
            format!(
                "the tolerances must be >= 0, got atol = {}, rtol = {}",
                Number(self.atol),
                Number(self.rtol)
            )
        } else {
            return Ok(());
        };
        Err(Error::invalid("gradcheck", reason))
    }
}

/// The largest errors seen for one input.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InputReport {
    /// Largest `|analytic - numeric|`.
    pub max_abs_err: f64,
    /// Largest `|analytic - numeric| / max(|numeric|, 1e-12)`.
    pub max_rel_err: f64,
}

/// How many failing elements an error lists.
const LISTED: usize = 8;

/// The comparisons of one input's elements, with its failures.
#[derive(Default)]
struct InputCheck {
    report: InputReport,
    failing: usize,
    elements: Vec<(usize, f64, f64)>,
}

impl InputCheck {
    /// Records one element's comparison; out of tolerance (or NaN) counts as a failure.
    fn compare(&mut self, cfg: &GradCheck, index: usize, analytic: f64, numeric: f64) {
        let abs_err = (analytic - numeric).abs();
        let bound = cfg.atol + cfg.rtol * numeric.abs();
        let within = matches!(
            abs_err.partial_cmp(&bound),
            Some(Ordering::Less | Ordering::Equal)
        );
        if !within {
            self.failing += 1;
            if self.elements.len() < LISTED {
                self.elements.push((index, analytic, numeric));
            }
            return;
        }
        let r = &mut self.report;
        r.max_abs_err = r.max_abs_err.max(abs_err);
        r.max_rel_err = r.max_rel_err.max(abs_err / numeric.abs().max(1e-12));
    }

    /// The report, or the error naming every failing element (up to [`LISTED`]).
    fn finish(self, input: usize) -> Result<InputReport> {
        match self.elements.first() {
            None => Ok(self.report),
            Some(&(index, analytic, numeric)) => Err(Error::GradCheck {
                input,
                index,
                analytic,
                numeric,
                abs_err: (analytic - numeric).abs(),
                failing: self.failing,
                elements: self.elements,
            }),
        }
    }
}

/// The result of a successful check: per-input error maxima.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GradCheckReport {
    /// One entry per input, in order.
    pub inputs: Vec<InputReport>,
}

impl GradCheckReport {
    /// The largest absolute error over all inputs.
    pub fn max_abs_err(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_abs_err)
            .fold(0.0, f64::max)
    }
}

/// Weight of output element `i` in the scalar that is differentiated.
fn weight(i: usize) -> f64 {
    1.0 + 0.5 * ((i as f64) * 1.7 + 0.3).sin()
}

fn project<'t, F: Element>(out: Var<'t, F>) -> Var<'t, F> {
    let shape = out.shape();
    if shape.iter().product::<usize>() == 1 {
        return out.sum();
    }
    let w = Tensor::from_fn(&shape, |i| F::lit(weight(i)));
    (out * w).sum()
}

fn evaluate<F: Element, Fun>(f: &Fun, inputs: &[Tensor<F>]) -> Result<f64>
where
    Fun: for<'t> Fn(&'t Tape<F>, &[Var<'t, F>]) -> Result<Var<'t, F>>,
{
    let tape = Tape::new();
    let vars: Vec<_> = inputs.iter().map(|t| tape.var(t.clone())).collect();
    Ok(project(f(&tape, &vars)?)
        .item()?
        .to_f64()
        .unwrap_or(f64::NAN))
}

/// Checks the gradient of `f` w.r.t. every element of every input.
///
/// `f` gets a fresh tape and the inputs as leaf vars each time it is called;
/// a stochastic `f` must seed its own RNG inside so that every call sees the
/// same noise.
///
/// ```
/// use bayesgrad::prelude::*;
/// let report = gradcheck(
///     |_, x| Ok((x[0].softplus() * x[1]).sum()),
///     &[Tensor::vector(&[-3.0, 0.5]), Tensor::vector(&[2.0, -1.0])],
///     &GradCheck::default(),
/// )?;
/// assert_eq!(report.inputs.len(), 2);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::GradCheck`] for the first input with elements that disagree,
/// listing them (up to eight) with both derivatives, or any error `f` or
/// `backward` returns; [`Error::InvalidArgument`] for a step that is not
/// finite and positive, or a negative or NaN tolerance.
pub fn gradcheck<F: Element, Fun>(
    f: Fun,
    inputs: &[Tensor<F>],
    cfg: &GradCheck,
) -> Result<GradCheckReport>
where
    Fun: for<'t> Fn(&'t Tape<F>, &[Var<'t, F>]) -> Result<Var<'t, F>>,
{
    cfg.check()?;
    let analytic: Vec<Tensor<F>> = {
        let tape = Tape::new();
        let vars: Vec<_> = inputs.iter().map(|t| tape.var(t.clone())).collect();
        let grads = project(f(&tape, &vars)?).backward()?;
        vars.iter()
            .zip(inputs)
            .map(|(v, t)| {
                grads
                    .get(*v)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros(t.shape()))
            })
            .collect()
    };
    let mut report = GradCheckReport::default();
    let mut shifted = inputs.to_vec();
    for (input, grad) in analytic.iter().enumerate() {
        let mut check = InputCheck::default();
        for index in 0..grad.len() {
            let x0 = inputs[input].data()[index];
            let (xu, xd) = (x0 + F::lit(cfg.eps), x0 - F::lit(cfg.eps));
            shifted[input].data_mut()[index] = xu;
            let up = evaluate(&f, &shifted)?;
            shifted[input].data_mut()[index] = xd;
            let down = evaluate(&f, &shifted)?;
            shifted[input].data_mut()[index] = x0;
            // the step actually taken (in f32, x0 + eps rounds)
            let step = (xu - xd).to_f64().unwrap_or(f64::NAN);
            let numeric = (up - down) / step;
            let analytic = grad.data()[index].to_f64().unwrap_or(f64::NAN);
            check.compare(cfg, index, analytic, numeric);
        }
        report.inputs.push(check.finish(input)?);
    }
    Ok(report)
}

/// Checks the gradient of `f` w.r.t. the stored (unconstrained) values of
/// `params`, by perturbing them in place; the store is restored afterwards.
/// Use it to check a layer: `f` builds the loss from the store on the
/// tape it is given (seeding its own RNG so every call sees the same noise).
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::autodiff::gradcheck::gradcheck_params;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = DenseFlipout::new(&mut store, "layer", 3, 2, &mut rng)?;
/// let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.1, 0.2, -0.3], &[2, 3])?;
/// let params: Vec<Param> = store.params().collect();
/// gradcheck_params(
///     |tape, store| {
///         let mut rng = StdRng::seed_from_u64(1); // the same noise at every evaluation
///         let mut cx = Forward::new(tape, store, &mut rng);
///         let y = layer.forward(&mut cx, tape.constant(x.clone()))?;
///         Ok(y.square().sum() + cx.divergences().total())
///     },
///     &mut store,
///     &params,
///     &GradCheck::default(),
/// )?;
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::GradCheck`] with `input` the position of the parameter in
/// `params`; the settings as for [`gradcheck`].
pub fn gradcheck_params<Fun>(
    f: Fun,
    store: &mut ParamStore<f64>,
    params: &[Param],
    cfg: &GradCheck,
) -> Result<GradCheckReport>
where
    Fun: for<'t> Fn(&'t Tape<f64>, &ParamStore<f64>) -> Result<Var<'t, f64>>,
{
    cfg.check()?;
    let eval = |store: &ParamStore<f64>| -> Result<f64> {
        let tape = Tape::new();
        project(f(&tape, store)?).item()
    };
    let analytic: Vec<Tensor<f64>> = {
        let tape = Tape::new();
        let grads = project(f(&tape, store)?).backward()?;
        params
            .iter()
            .map(|&p| {
                Ok(grads
                    .param(p)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros(store.raw(p).shape())))
            })
            .collect::<Result<_>>()?
    };
    let mut report = GradCheckReport::default();
    for (input, (&p, grad)) in params.iter().zip(&analytic).enumerate() {
        let original = store.try_raw(p)?.clone();
        let mut check = InputCheck::default();
        let mut outcome = Ok(());
        for index in 0..grad.len() {
            let mut shifted = original.clone();
            shifted.data_mut()[index] += cfg.eps;
            store.set_raw(p, shifted.clone())?;
            let up = eval(store);
            shifted.data_mut()[index] -= 2.0 * cfg.eps;
            store.set_raw(p, shifted)?;
            let down = eval(store);
            let (up, down) = match (up, down) {
                (Ok(u), Ok(d)) => (u, d),
                (Err(e), _) | (_, Err(e)) => {
                    outcome = Err(e);
                    break;
                }
            };
            let numeric = (up - down) / (2.0 * cfg.eps);
            check.compare(cfg, index, grad.data()[index], numeric);
        }
        store.set_raw(p, original)?;
        outcome?;
        report.inputs.push(check.finish(input)?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::tape::Op;

    /// A deliberately wrong backward must be caught.
    struct WrongSquare;
    impl Op<f64> for WrongSquare {
        fn name(&self) -> &str {
            "wrong_square"
        }
        fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
            Ok(x[0].map(|v| v * v))
        }
        fn backward(
            &self,
            x: &[&Tensor<f64>],
            _: &Tensor<f64>,
            g: &Tensor<f64>,
        ) -> Result<Vec<Option<Tensor<f64>>>> {
            Ok(vec![Some(g.zip_map(x[0], "wrong", |g, x| g * x)?)]) // should be 2 g x
        }
    }

    /// `y = x^3` in f32 only, right or with the derivative off by a factor.
    struct CubeF32(f32);
    impl Op<f32> for CubeF32 {
        fn name(&self) -> &str {
            "cube_f32"
        }
        fn forward(&self, x: &[&Tensor<f32>]) -> Result<Tensor<f32>> {
            Ok(x[0].map(|v| v * v * v))
        }
        fn backward(
            &self,
            x: &[&Tensor<f32>],
            _: &Tensor<f32>,
            g: &Tensor<f32>,
        ) -> Result<Vec<Option<Tensor<f32>>>> {
            let k = self.0;
            Ok(vec![Some(g.zip_map(x[0], "cube", |g, x| k * x * x * g)?)])
        }
    }

    #[test]
    fn checks_an_f32_op_in_f32() {
        let x = [Tensor::<f32>::vector(&[-1.5, -0.2, 0.7, 2.0])];
        let report = gradcheck(
            |tape, v| tape.apply(CubeF32(3.0), &[v[0]]),
            &x,
            &GradCheck::f32(),
        )
        .unwrap();
        assert!(report.max_abs_err() < 1e-3, "{report:?}");
        let wrong = gradcheck(
            |tape, v| tape.apply(CubeF32(2.9), &[v[0]]),
            &x,
            &GradCheck::f32(),
        );
        assert!(matches!(wrong, Err(Error::GradCheck { .. })), "{wrong:?}");
    }

    /// Every failing element is reported with both derivatives; for a
    /// scalar output they are the derivatives themselves (x vs 2x here).
    #[test]
    fn reports_every_failing_element_with_both_derivatives() {
        let err = gradcheck(
            |tape, x| Ok(tape.apply(WrongSquare, &[x[0]])?.sum()),
            &[Tensor::vector(&[0.0, 1.0, 2.0, 3.0])],
            &GradCheck::default(),
        )
        .unwrap_err();
        let Error::GradCheck {
            failing, elements, ..
        } = &err
        else {
            panic!("{err}")
        };
        // element 0 has derivative 0 either way
        assert_eq!(*failing, 3);
        let got: Vec<(usize, f64)> = elements.iter().map(|&(i, a, _)| (i, a)).collect();
        assert_eq!(got, [(1, 1.0), (2, 2.0), (3, 3.0)]);
        for &(i, _, numeric) in elements {
            assert!((numeric - 2.0 * i as f64).abs() < 1e-6, "{err}");
        }
        let text = err.to_string();
        assert!(
            text.contains("3 element(s)") && text.contains("[3] 3 vs"),
            "{text}"
        );
    }

    #[test]
    fn catches_a_wrong_backward() {
        let err = gradcheck(
            |tape, x| tape.apply(WrongSquare, &[x[0]]),
            &[Tensor::vector(&[1.0, 2.0])],
            &GradCheck::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::GradCheck {
                    input: 0,
                    index: 0,
                    ..
                }
            ),
            "{err}"
        );
    }
}
