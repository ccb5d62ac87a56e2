//! Bijectors, distributions transformed by them, and the log-normal and
//! logit-normal distributions built from them.

use super::pointwise::{self, Lanes, Pointwise, each_lane};
use super::widened::rounded_once;
use super::{
    Distribution, Normal, above_zero, into_open_unit, kl::kl_divergence,
    linked::linked_normal_log_prob, on_support_of_events, open_unit_bounds,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;

/// An invertible, differentiable map applied elementwise, with its
/// log-determinant of the Jacobian, on the tape.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::distributions::{Bijector, Exp};
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::vector(&[-1.0, 0.5]));
/// let y = Exp.forward(x)?;
/// let back = Exp.inverse(y)?;
/// assert!((back.value().data()[0] + 1.0).abs() < 1e-15);
/// assert_eq!(Exp.forward_log_det_jacobian(x)?.value().data(), x.value().data());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub trait Bijector<'t, F: Element> {
    /// The bijector's name, used in errors.
    fn name(&self) -> String;
    /// `y = f(x)`.
    fn forward(&self, x: Var<'t, F>) -> Result<Var<'t, F>>;
    /// `x = f⁻¹(y)`.
    fn inverse(&self, y: Var<'t, F>) -> Result<Var<'t, F>>;
    /// `ln |f'(x)|`, elementwise.
    fn forward_log_det_jacobian(&self, x: Var<'t, F>) -> Result<Var<'t, F>>;
    /// Whether `y` is in the image of `f` (where `inverse` is defined).
    fn in_image(&self, _y: F) -> bool {
        true
    }
    /// Whether each element of `y` is in the image of `f`, in order: what
    /// [`TransformedDistribution::log_prob`] reads. By default
    /// [`in_image`](Bijector::in_image) of each element; a bijector whose
    /// image one value cannot tell (a [`Chain`], whose inner parts' images
    /// are met at their own inputs) says it here.
    fn image_mask(&self, y: Var<'t, F>) -> Result<Vec<bool>> {
        Ok(y.value().data().iter().map(|&v| self.in_image(v)).collect())
    }
}

/// `y = e^x`; image `y > 0`. An `e^x` that underflows to 0 or below the
/// smallest normal number is that number, `F::MIN_POSITIVE`, so that a
/// draw through it stays in the image (the true gradient there is below
/// it too; it is 0). One that overflows is `+inf`, outside the image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exp;

impl<'t, F: Element> Bijector<'t, F> for Exp {
    fn name(&self) -> String {
        "Exp".into()
    }
    fn forward(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(above_zero(x.exp()))
    }
    fn inverse(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(y.ln())
    }
    fn forward_log_det_jacobian(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(x)
    }
    // (+inf is not in the image: no finite x maps to it)
    fn in_image(&self, y: F) -> bool {
        y > F::zero() && y < F::infinity()
    }
}

/// `y = ln(1 + e^x)`; image `y > 0`. The inverse is `y + ln(-expm1(-y))`,
/// accurate for small `y`. A `y` below the smallest normal number is that
/// number, as in [`Exp`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Softplus;

impl<'t, F: Element> Bijector<'t, F> for Softplus {
    fn name(&self) -> String {
        "Softplus".into()
    }
    fn forward(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(above_zero(x.softplus()))
    }
    fn inverse(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        y.try_add((-(-y).expm1()).ln())
    }
    // ln sigmoid(x) = -softplus(-x)
    fn forward_log_det_jacobian(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(-(-x).softplus())
    }
    fn in_image(&self, y: F) -> bool {
        y > F::zero() && y < F::infinity()
    }
}

/// `y = 1 / (1 + e^-x)`; image `0 < y < 1`. A `y` that rounds to 1 is the
/// largest number below 1, and one below the smallest normal number is
/// that number, so that a draw through it stays in the image (as
/// `torch.distributions` clamps it; where this acts the true gradient is
/// below `F::EPSILON`, and it is 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sigmoid;

impl<'t, F: Element> Bijector<'t, F> for Sigmoid {
    fn name(&self) -> String {
        "Sigmoid".into()
    }
    fn forward(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let (lo, hi) = open_unit_bounds();
        Ok(x.sigmoid().clamp(lo, hi))
    }
    fn inverse(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        y.ln().try_sub((-y).log1p())
    }
    // ln sigmoid(x) + ln sigmoid(-x)
    fn forward_log_det_jacobian(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(-(-x).softplus() - x.softplus())
    }
    fn in_image(&self, y: F) -> bool {
        y > F::zero() && y < F::one()
    }
}

/// `y = shift + scale · x` with trainable `shift` and `scale` (nonzero).
#[derive(Clone, Copy)]
pub struct Affine<'t, F: Element> {
    shift: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Affine<'t, F> {
    /// From a shift and a scale; shapes broadcast against the values.
    ///
    /// # Errors
    /// A non-finite shift; a scale that is zero or not finite.
    pub fn new(shift: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        super::same_tape("Affine::new", &shift, &scale)?;
        super::check_finite("Affine", "shift", &shift)?;
        super::check_values(
            "Affine",
            "scale",
            &scale,
            "must be finite and nonzero",
            |s| s != F::zero() && s.is_finite(),
        )?;
        Ok(Affine { shift, scale })
    }
}

impl<'t, F: Element> Bijector<'t, F> for Affine<'t, F> {
    fn name(&self) -> String {
        "Affine".into()
    }
    fn forward(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.shift.try_add(self.scale.try_mul(x)?)
    }
    fn inverse(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        y.try_sub(self.shift)?.try_div(self.scale)
    }
    fn forward_log_det_jacobian(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        // ln |scale|, broadcast to the values' shape
        let l = self.scale.abs().ln();
        let shape =
            broadcast_shape(&x.shape(), &l.shape()).ok_or_else(|| Error::ShapeMismatch {
                op: "Affine::forward_log_det_jacobian",
                lhs: x.shape(),
                rhs: l.shape(),
            })?;
        if l.shape() == shape {
            Ok(l)
        } else {
            l.broadcast_to(&shape)
        }
    }
}

/// The composition of bijectors, TFP's order: `Chain::new(vec![f, g])`
/// maps `x` to `f(g(x))`.
pub struct Chain<'t, F: Element> {
    parts: Vec<Box<dyn Bijector<'t, F> + 't>>,
}

impl<'t, F: Element> Chain<'t, F> {
    /// `parts[0] ∘ parts[1] ∘ ...`; the last is applied first.
    ///
    /// # Errors
    /// An empty list.
    pub fn new(parts: Vec<Box<dyn Bijector<'t, F> + 't>>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::invalid("Chain::new", "needs at least one bijector"));
        }
        Ok(Chain { parts })
    }
}

impl<'t, F: Element> Bijector<'t, F> for Chain<'t, F> {
    fn name(&self) -> String {
        let names: Vec<String> = self.parts.iter().map(|b| b.name()).collect();
        format!("Chain[{}]", names.join(", "))
    }
    fn forward(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.parts.iter().rev().try_fold(x, |x, b| b.forward(x))
    }
    fn inverse(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        self.parts.iter().try_fold(y, |y, b| b.inverse(y))
    }
    // Σ of each part's log-det at its own input
    fn forward_log_det_jacobian(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let mut total: Option<Var<'t, F>> = None;
        let mut x = x;
        for b in self.parts.iter().rev() {
            let l = b.forward_log_det_jacobian(x)?;
            total = Some(match total {
                None => l,
                Some(t) => t.try_add(l)?,
            });
            x = b.forward(x)?;
        }
        total.ok_or_else(|| Error::invalid("Chain", "no bijectors"))
    }
    /// Whether `y` is in the outermost part's image: necessary, not
    /// sufficient (`exp(sigmoid(x))` lies in (1, e), not in all of `exp`'s
    /// image); [`image_mask`](Bijector::image_mask) checks every part.
    fn in_image(&self, y: F) -> bool {
        self.parts[0].in_image(y)
    }
    /// Each part's image at its own input: `y` in the outermost part's,
    /// its inverse there in the next part's, and so on.
    fn image_mask(&self, y: Var<'t, F>) -> Result<Vec<bool>> {
        let shape = y.shape();
        let mut mask = image_mask(self.parts[0].as_ref(), y)?;
        let mut at = y.detach();
        for (outer, part) in self.parts.iter().zip(&self.parts[1..]) {
            if !mask.contains(&true) {
                break;
            }
            at = outer.inverse(at)?.detach();
            if at.shape() != shape {
                // an element's copies could lie in and out of the image,
                // and its one entry of the mask could not say so
                return Err(Error::invalid(
                    "Chain",
                    format!(
                        "{} broadcast values of shape {shape:?} to {:?}, so which of them \
                         lie in the chain's image depends on the copy: pass values of that shape",
                        outer.name(),
                        at.shape()
                    ),
                ));
            }
            for (m, i) in mask.iter_mut().zip(image_mask(part.as_ref(), at)?) {
                *m &= i;
            }
        }
        Ok(mask)
    }
}

/// `b.image_mask(y)`, checked to answer for every value.
fn image_mask<'t, F: Element>(b: &(dyn Bijector<'t, F> + 't), y: Var<'t, F>) -> Result<Vec<bool>> {
    let mask = b.image_mask(y)?;
    let n = y.value().len();
    if mask.len() != n {
        return Err(Error::invalid(
            "Bijector::image_mask",
            format!("{} answered for {} of {n} values", b.name(), mask.len()),
        ));
    }
    Ok(mask)
}

/// A distribution pushed through a bijector: `y = f(x)`, `x ~ base`.
///
/// # Density
/// `ln p(y) = ln p_base(f⁻¹(y)) - ln |f'(f⁻¹(y))|` for `y` in the image of
/// `f`; `-inf` (gradient 0) outside it. Over a base with events (an
/// [`Independent`](crate::Independent), a multivariate normal), `f` acts on
/// each element and the `ln |f'|` of an event's elements are summed: one
/// log-density per event, as the base gives, and `-inf` for an event with
/// an element outside the image. A base on the simplex (a Dirichlet, a
/// relaxed one-hot categorical) is an error in `log_prob`: its `k`
/// entries have `k - 1` degrees of freedom, and the elementwise Jacobian
/// does not carry its density.
///
/// `rsample` is `f` of the base's `rsample`, so it is differentiable in the
/// base's and the bijector's parameters. Entropy and moments have no
/// general closed form (an error).
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::distributions::{Affine, Exp, Chain, TransformedDistribution};
/// let tape = Tape::<f64>::new();
/// let base = Normal::standard(&tape, &[]);
/// // y = exp(1 + 2 x): a log-normal with loc 1 and scale 2
/// let f = Chain::new(vec![
///     Box::new(Exp),
///     Box::new(Affine::new(tape.scalar(1.0), tape.scalar(2.0))?),
/// ])?;
/// let d = TransformedDistribution::new(Box::new(base), Box::new(f));
/// let ln = LogNormal::new(tape.scalar(1.0), tape.scalar(2.0))?;
/// let y = tape.scalar(3.0);
/// assert!((d.log_prob(y)?.item()? - ln.log_prob(y)?.item()?).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct TransformedDistribution<'t, F: Element> {
    base: Box<dyn Distribution<'t, F> + 't>,
    bijector: Box<dyn Bijector<'t, F> + 't>,
}

impl<'t, F: Element> TransformedDistribution<'t, F> {
    /// `bijector` applied to draws of `base`.
    pub fn new(
        base: Box<dyn Distribution<'t, F> + 't>,
        bijector: Box<dyn Bijector<'t, F> + 't>,
    ) -> Self {
        TransformedDistribution { base, bijector }
    }

    /// The base distribution.
    pub fn base(&self) -> &(dyn Distribution<'t, F> + 't) {
        self.base.as_ref()
    }

    /// The bijector.
    pub fn bijector(&self) -> &(dyn Bijector<'t, F> + 't) {
        self.bijector.as_ref()
    }
}

impl<'t, F: Element> Distribution<'t, F> for TransformedDistribution<'t, F> {
    fn name(&self) -> &'static str {
        "TransformedDistribution"
    }
    fn describe(&self) -> String {
        format!(
            "TransformedDistribution({}, {})",
            self.base.describe(),
            self.bijector.name()
        )
    }
    fn tape(&self) -> &'t Tape<F> {
        self.base.tape()
    }
    fn log_prob(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        if !std::ptr::eq(y.tape(), self.tape()) {
            return Err(Error::ForeignTape {
                op: "TransformedDistribution::log_prob",
            });
        }
        if self.base.events_on_the_simplex() {
            return Err(Error::Unsupported {
                distribution: "TransformedDistribution",
                what: "a base on the simplex (Dirichlet, RelaxedOneHotCategorical): its k \
                       entries have k - 1 degrees of freedom, so an elementwise bijector's \
                       Jacobian does not carry its density",
            });
        }
        let b = self.bijector.as_ref();
        // the bijector acts elementwise; the base's log-density is one per
        // event, so its elements' log-Jacobians are summed over each event
        let event_rank = self.base.event_shape().len();
        let shape = y.shape();
        on_support_of_events(
            "TransformedDistribution",
            y,
            event_rank,
            image_mask(b, y)?,
            // a point inside each element's image (its map's parameters may
            // differ from element to element), for the values outside it
            || {
                Ok(b.forward(self.tape().constant(Tensor::zeros(&shape)))?
                    .detach())
            },
            |y| {
                let x = b.inverse(y)?;
                let mut log_det = b.forward_log_det_jacobian(x)?;
                if log_det.shape() != x.shape() {
                    log_det = log_det.broadcast_to(&x.shape())?;
                }
                for _ in 0..event_rank {
                    log_det = log_det.sum_axis(log_det.shape().len() - 1, false)?;
                }
                self.base.log_prob(x)?.try_sub(log_det)
            },
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        self.bijector.forward(self.base.rsample_n(n, rng)?)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::check_draw_count(self.name(), n)?;
        let x = self.tape().constant(self.base.sample_n(n, rng)?);
        Ok(self.bijector.forward(x)?.value())
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "TransformedDistribution",
            what: "a closed-form entropy",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "TransformedDistribution",
            what: "a closed-form mean",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "TransformedDistribution",
            what: "a closed-form variance",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.base.batch_shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        self.base.event_shape()
    }
    fn events_on_the_simplex(&self) -> bool {
        self.base.events_on_the_simplex()
    }
}

/// The log-normal distribution: `exp` of a `Normal(loc, scale)`, i.e.
/// `TransformedDistribution(Normal(loc, scale), Exp)`, with closed-form
/// entropy and moments and an analytic KL (the Normals'). Draws are those
/// of [`Exp`]: one below the smallest normal number is that number, one
/// that overflows is `+inf` (outside the support). The log-density and its
/// gradients are one op that computes each element in `f64`, so that in
/// `f32` they are the `f64` values rounded (composed in `f32`, the rounding
/// of `ln y` is divided by the scale).
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = LogNormal::new(tape.scalar(0.0), tape.scalar(1.0))?;
/// assert!((d.mean()?.item()? - 0.5f64.exp()).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct LogNormal<'t, F: Element> {
    normal: Normal<'t, F>,
}

impl<'t, F: Element> LogNormal<'t, F> {
    /// From the location and scale of the underlying Normal.
    pub fn new(loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        Ok(LogNormal {
            normal: Normal::new(loc, scale)?,
        })
    }

    /// The underlying Normal (of `ln y`).
    pub fn normal(&self) -> &Normal<'t, F> {
        &self.normal
    }

    fn as_transformed(&self) -> TransformedDistribution<'t, F> {
        TransformedDistribution::new(Box::new(self.normal), Box::new(Exp))
    }
}

impl<'t, F: Element> Distribution<'t, F> for LogNormal<'t, F> {
    super::kl::builtin_kl!(LogNormal => kl_lognormal);

    fn name(&self) -> &'static str {
        "LogNormal"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.normal.tape()
    }
    // one op, each element in `f64` ([`linked_normal_log_prob`])
    fn log_prob(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        let n = &self.normal;
        linked_normal_log_prob(false, y, n.loc(), n.scale())
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        self.as_transformed().rsample_n(n, rng)
    }
    // the values of `Exp::forward`, without the tape
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::check_draw_count(self.name(), n)?;
        let floor = F::min_positive_value();
        Ok(self.normal.sample_n(n, rng)?.map(|x| {
            let y = x.exp();
            if y < floor { floor } else { y }
        }))
    }
    // H = H(Normal) + loc
    fn entropy(&self) -> Result<Var<'t, F>> {
        let (loc, scale) = (self.normal.loc(), self.normal.scale());
        rounded_once!("log_normal_entropy", [loc, scale], |v: G| Normal::new(
            v[0], v[1]
        )?
        .entropy()?
        .try_add(v[0]))
    }
    // exp(loc + scale² / 2), in `f64` for `f32`: the exponential of a
    // rounded exponent (42 ulp off at a scale of 12.6)
    fn mean(&self) -> Result<Var<'t, F>> {
        let (loc, scale) = (self.normal.loc(), self.normal.scale());
        rounded_once!("log_normal_mean", [loc, scale], |v: G| {
            let s2 = v[1].square();
            Ok(v[0].try_add(s2 * G::lit(0.5))?.exp())
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        pointwise::apply(LogNormalVariance, &[self.normal.loc(), self.normal.scale()])
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.normal.batch_shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The log-normal variance of `[loc, scale]`, `expm1(s²) exp(2 loc + s²)`
/// (`s` the scale), with `∂loc = 2 v` and `∂s = 2 v (s + r / s)`, `r = s² /
/// (1 - e^-s²)` (`1` at `s = 0`). Where that product is not a normal
/// number (one factor overflows where the other underflows: `expm1(10⁶)`
/// and `exp(-2·10⁸)` gave NaN for a variance of 0), or `s²` is not (it
/// underflows beside a large `loc`), it is taken through its logarithm,
/// `2 loc + s² + ln expm1(s²)`, with `ln expm1(y) = y + ln(1 - e^-y)`
/// above 1 and `2 ln s + y/2` below `10⁻⁸`, and so is the scale's
/// partial.
#[derive(Clone, Copy)]
struct LogNormalVariance;

impl Pointwise<2> for LogNormalVariance {
    const NAME: &'static str = "lognormal_variance";
    const KEYED: usize = 2;
    type Pre = ();

    #[inline(always)]
    fn pre(_: &[Lanes; 2]) {}

    fn eval(v: &[Lanes; 2], _: &(), out: &mut Lanes, d: &mut [Lanes; 2]) {
        each_lane(v, out, d, f64::INFINITY, |[m, s]| {
            let y = s * s;
            // y / (1 - e^-y), and its limit where y is 0
            let r = if y > 1e-8 {
                y / -(-y).exp_m1()
            } else {
                1.0 + 0.5 * y
            };
            let direct = y.exp_m1() * (2.0 * m + y).exp();
            // (a subnormal s² has lost digits: its logarithm is 2 ln s)
            if direct.is_normal() && y.is_normal() {
                return Some((direct, [2.0 * direct, 2.0 * direct * (s + r / s)]));
            }
            let ln_expm1 = if y > 1.0 {
                y + (-(-y).exp()).ln_1p()
            } else if y > 1e-8 {
                y.exp_m1().ln()
            } else {
                2.0 * s.ln() + 0.5 * y
            };
            let z = 2.0 * m + y + ln_expm1;
            let value = z.exp();
            // 2 v (s + r/s) = 2 v (y + r) / s
            let slope = (z + std::f64::consts::LN_2 + (y + r).ln() - s.ln()).exp();
            Some((value, [2.0 * value, slope]))
        });
    }
}

/// KL between log-normals: the KL between their Normals (a bijection
/// leaves it unchanged).
pub(crate) fn kl_lognormal<'t, F: Element>(
    q: &LogNormal<'t, F>,
    p: &LogNormal<'t, F>,
) -> Result<Var<'t, F>> {
    kl_divergence(&q.normal, &p.normal)
}

/// KL between logit-normals: the KL of their Normals (a divergence does not
/// change under the same bijection of both).
pub(crate) fn kl_logit_normal<'t, F: Element>(
    q: &LogitNormal<'t, F>,
    p: &LogitNormal<'t, F>,
) -> Result<Var<'t, F>> {
    kl_divergence(&q.normal, &p.normal)
}

/// The logit-normal distribution on (0, 1): `sigmoid` of a
/// `Normal(loc, scale)`, i.e. `TransformedDistribution(Normal, Sigmoid)`.
/// Its moments and entropy have no closed form (an error). Draws are those
/// of [`Sigmoid`], inside (0, 1) however large the scale. The log-density
/// is computed as [`LogNormal`]'s is, each element in `f64`.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = LogitNormal::new(tape.scalar(0.0), tape.scalar(1.0))?;
/// let y = d.rsample(&mut StdRng::seed_from_u64(0))?;
/// assert!(d.log_prob(y)?.item()?.is_finite());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct LogitNormal<'t, F: Element> {
    normal: Normal<'t, F>,
}

impl<'t, F: Element> LogitNormal<'t, F> {
    /// From the location and scale of the underlying Normal.
    pub fn new(loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        Ok(LogitNormal {
            normal: Normal::new(loc, scale)?,
        })
    }

    /// The underlying Normal (of `logit y`).
    pub fn normal(&self) -> &Normal<'t, F> {
        &self.normal
    }

    fn as_transformed(&self) -> TransformedDistribution<'t, F> {
        TransformedDistribution::new(Box::new(self.normal), Box::new(Sigmoid))
    }
}

impl<'t, F: Element> Distribution<'t, F> for LogitNormal<'t, F> {
    super::kl::builtin_kl!(LogitNormal => kl_logit_normal);

    fn name(&self) -> &'static str {
        "LogitNormal"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.normal.tape()
    }
    // one op, each element in `f64` ([`linked_normal_log_prob`])
    fn log_prob(&self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        let n = &self.normal;
        linked_normal_log_prob(true, y, n.loc(), n.scale())
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        self.as_transformed().rsample_n(n, rng)
    }
    // the values of `Sigmoid::forward`, without the tape
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        self.sample_n(None, rng)
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::check_draw_count(self.name(), n)?;
        Ok(self
            .normal
            .sample_n(n, rng)?
            .map(|x| into_open_unit(crate::autodiff::ops::sigmoid(x))))
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "LogitNormal",
            what: "a closed-form entropy",
        })
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "LogitNormal",
            what: "a closed-form mean",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "LogitNormal",
            what: "a closed-form variance",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.normal.batch_shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}
