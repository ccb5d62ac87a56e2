//! Formulas computed in `f64` for `f32` tapes and rounded once: where an
//! `f32` evaluation cancels or leaves its range beyond what a careful form
//! keeps, the formula runs on a tape of its own on the inputs widened to
//! `f64` ([`InF64`]), and its value and gradients are rounded back.

use crate::autodiff::profile::untimed;
use crate::autodiff::tape::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor, broadcast_shape};

/// An `f64` computation applied to `f32` (or `f64`) inputs: forward and
/// backward each run `f` on a tape of their own, on the inputs widened to
/// `f64`, and round the value and the input gradients back once. For
/// formulas whose `f32` evaluation cancels beyond what careful forms can
/// keep; backward evaluates `f` again rather than keep a tape alive.
pub(crate) struct InF64 {
    name: &'static str,
    f: for<'s> fn(&[Var<'s, f64>]) -> Result<Var<'s, f64>>,
    /// Whether each input needs a gradient; the others are constants of
    /// the `f64` tape, whose backward then skips them (a log-density's
    /// values, say).
    needs: Vec<bool>,
}

fn narrowed<F: Element>(t: &Tensor<f64>) -> Result<Tensor<F>> {
    Tensor::from_vec(t.data().iter().map(|&x| F::lit(x)).collect(), t.shape())
}

impl InF64 {
    /// `f` as an op of `inputs`' tape, for `inputs`.
    pub(crate) fn new<F: Element>(
        name: &'static str,
        f: for<'s> fn(&[Var<'s, f64>]) -> Result<Var<'s, f64>>,
        inputs: &[Var<'_, F>],
    ) -> Self {
        let needs = inputs.iter().map(|v| v.requires_grad()).collect();
        InF64 { name, f, needs }
    }

    /// `f` on the inputs widened to `f64`, as variables of a tape of its
    /// own (constants where they need no gradient), then `then` of its
    /// output, with this thread's op timer paused.
    fn run<F: Element, R>(
        &self,
        inputs: &[&Tensor<F>],
        then: impl for<'s> FnOnce(&[Var<'s, f64>], Var<'s, f64>) -> Result<R>,
    ) -> Result<R> {
        untimed(|| {
            let tape = Tape::<f64>::new();
            let vars: Vec<_> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| match self.needs.get(i) {
                    Some(false) => tape.constant(t.to_f64()),
                    _ => tape.var(t.to_f64()),
                })
                .collect();
            let out = (self.f)(&vars)?;
            then(&vars, out)
        })
    }
}

impl<F: Element> Op<F> for InF64 {
    fn name(&self) -> &str {
        self.name
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        self.run(inputs, |_, out| narrowed(&out.value()))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.run(inputs, |vars, out| {
            let weighted = out.try_mul(out.tape.constant(grad.to_f64()))?.sum();
            let grads = weighted.backward()?;
            vars.iter()
                .map(|v| grads.get(*v).map(narrowed).transpose())
                .collect()
        })
    }
}

/// [`InF64`] for an elementwise `f` (each output element depends only on
/// the elements of the inputs it is broadcast from), applied to `inputs`.
/// Where every input that needs a gradient has the output's shape (a
/// parameter per value), forward runs `f` once and, for those inputs, its
/// backward too, keeping their partial derivatives element by element; the
/// op's backward multiplies them by the incoming gradient in `f64` and
/// rounds once, one evaluation of `f` fewer than [`InF64`]'s backward,
/// which evaluates it again. Where such an input is broadcast (a single
/// parameter for many values), [`InF64`] runs instead: there the partials
/// would need `f` at every element of the broadcast input, where `f` takes
/// it once.
pub(crate) fn in_f64_elementwise<'t, F: Element>(
    name: &'static str,
    f: for<'s> fn(&[Var<'s, f64>]) -> Result<Var<'s, f64>>,
    inputs: &[Var<'t, F>],
) -> Result<Var<'t, F>> {
    let tape = inputs[0].tape;
    let shape = inputs.iter().try_fold(Vec::new(), |shape, v| {
        broadcast_shape(&shape, &v.shape()).ok_or_else(|| Error::ShapeMismatch {
            op: name,
            lhs: shape.clone(),
            rhs: v.shape(),
        })
    })?;
    let formula = InF64::new(name, f, inputs);
    let per_value = inputs
        .iter()
        .zip(&formula.needs)
        .all(|(v, &need)| !need || v.shape() == shape);
    if !per_value {
        return tape.apply(formula, inputs);
    }
    let op = InF64Elementwise {
        formula,
        partials: std::cell::RefCell::new(Vec::new()),
    };
    tape.apply(op, inputs)
}

/// The op of [`in_f64_elementwise`] where the inputs that need a gradient
/// have the output's shape.
struct InF64Elementwise {
    /// The formula, run as [`InF64`] runs it (with which inputs need a
    /// gradient).
    formula: InF64,
    /// `∂ output_i / ∂ input_i` of each input that needs a gradient.
    partials: std::cell::RefCell<Vec<Option<Tensor<f64>>>>,
}

impl<F: Element> Op<F> for InF64Elementwise {
    fn name(&self) -> &str {
        self.formula.name
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        self.formula.run(inputs, |vars, out| {
            let mut partials = self.partials.borrow_mut();
            partials.clear();
            if self.formula.needs.iter().any(|&n| n) {
                let grads = out.sum().backward()?;
                for (v, &need) in vars.iter().zip(&self.formula.needs) {
                    let zeros = || Tensor::zeros(&v.shape());
                    partials.push(need.then(|| grads.get(*v).cloned().unwrap_or_else(zeros)));
                }
            }
            narrowed(&out.value())
        })
    }
    fn backward(
        &self,
        _inputs: &[&Tensor<F>],
        _output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let partials = self.partials.borrow();
        let g = grad.to_f64();
        (0..self.formula.needs.len())
            .map(|i| match partials.get(i) {
                Some(Some(d)) => {
                    narrowed(&g.zip_map(d, self.formula.name, |g, d| g * d)?).map(Some)
                }
                _ => Ok(None),
            })
            .collect()
    }
}

/// `formula` of `inputs`: for an `f32` tape computed in `f64` and rounded
/// once ([`in_f64_elementwise`], the formula elementwise), for `f64` as it
/// is. [`rounded_once!`] writes both forms from one body.
pub(crate) fn in_f64_for_f32<'t, F: Element>(
    name: &'static str,
    in_f64: for<'s> fn(&[Var<'s, f64>]) -> Result<Var<'s, f64>>,
    formula: fn(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    inputs: &[Var<'t, F>],
) -> Result<Var<'t, F>> {
    if F::DTYPE == "F32" {
        in_f64_elementwise(name, in_f64, inputs)
    } else {
        formula(inputs)
    }
}

/// [`in_f64_for_f32`] of an elementwise formula written once for any element
/// type: `rounded_once!("name", [a, b], |v: G| body)`, where `body` is a
/// `Result<Var<'_, G>>` of the variables `v[0]`, `v[1]`, … (of `a`, `b`,
/// …) and `G: Element`. For the quantities whose `f32` evaluation cancels
/// near a root of the result (an entropy `ln σ + c`, a mean `loc + γ
/// scale`) or takes the exponential of a rounded logarithm.
macro_rules! rounded_once {
    ($name:literal, [$($input:expr),+ $(,)?], |$v:ident: $G:ident| $body:expr) => {{
        fn formula<'s, $G: $crate::tensor::Element>(
            $v: &[$crate::autodiff::tape::Var<'s, $G>],
        ) -> $crate::error::Result<$crate::autodiff::tape::Var<'s, $G>> {
            $body
        }
        $crate::distributions::widened::in_f64_for_f32(
            $name,
            formula::<f64>,
            formula,
            &[$($input),+],
        )
    }};
}
pub(crate) use rounded_once;

/// In `f32`, `return`s `$kl(q, p)` computed in `f64` and rounded once where
/// either side (`$D`, a family with `probs: Option<Var>` and `logits`) was
/// built from probabilities, each side rebuilt in `f64` from what it was
/// built from: the log-odds that `f32` rounds differ by about `|l| ε` each,
/// and near-equal distributions' divergence by up to 137 ulp. Elsewhere
/// nothing.
macro_rules! kl_from_kept_probs {
    ($name:literal, $kl:ident, $D:ident, $q:expr, $p:expr) => {
        if F::DTYPE == "F32" {
            match ($q.probs, $p.probs) {
                (Some(pq), Some(pp)) => {
                    return rounded_once!($name, [pq, pp], |v: G| $kl(
                        &$D::from_probs(v[0])?,
                        &$D::from_probs(v[1])?
                    ));
                }
                (Some(pq), None) => {
                    return rounded_once!($name, [pq, $p.logits], |v: G| $kl(
                        &$D::from_probs(v[0])?,
                        &$D::from_logits(v[1])?
                    ));
                }
                (None, Some(pp)) => {
                    return rounded_once!($name, [$q.logits, pp], |v: G| $kl(
                        &$D::from_logits(v[0])?,
                        &$D::from_probs(v[1])?
                    ));
                }
                (None, None) => {}
            }
        }
    };
}
pub(crate) use kl_from_kept_probs;
