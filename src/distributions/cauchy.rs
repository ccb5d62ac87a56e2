//! Cauchy and HalfCauchy: the heavy-tailed location and scale priors of
//! robust regression and horseshoe shrinkage.

use super::gamma::split;
use super::normal::{Standardized, loc_scale_log_prob};
use super::{
    Distribution, batch_broadcast, check_divisor, check_finite, on_support, same_tape, sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::random::Unit;
use crate::tensor::{Element, Tensor, unit_draws};
use rand::Rng;
use std::f64::consts::PI;

/// The standard Cauchy: `-ln(1 + z²) - ln π`, slope `2z / (1 + z²)`.
/// Beyond `|z| = 1` both are taken from `1/z` (`-2 ln|z| - ln(1 + 1/z²)`
/// and `2 / (z + 1/z)`), so that a `z` whose square overflows keeps its
/// finite log-density and slope.
pub(crate) struct StandardCauchy;

impl Standardized for StandardCauchy {
    const NAME: &'static str = "cauchy_log_prob";
    const LN_C: f64 = 1.144_729_885_849_400_2; // ln π
    #[inline(always)]
    fn log_density<F: Element>(z: F) -> F {
        let a = z.abs();
        if a <= F::one() {
            -(z * z).ln_1p()
        } else {
            let r = a.recip();
            -(a.ln() * F::lit(2.0) + (r * r).ln_1p())
        }
    }
    #[inline(always)]
    fn slope<F: Element>(z: F) -> F {
        if z.abs() <= F::one() {
            (z + z) / (F::one() + z * z)
        } else {
            F::lit(2.0) / (z + z.recip())
        }
    }
}

/// The Cauchy distribution (Student's t with one degree of freedom).
///
/// # Density
/// `ln p(x) = -ln(π scale) - ln(1 + z²)`, `z = (x - loc) / scale`, finite
/// and with a finite gradient for every finite `x`.
///
/// # Sampling
/// `x = loc + scale · tan(π (u - 1/2))`: `rsample` is differentiable in
/// both parameters.
///
/// # Moments
/// It has none: `mean` and `variance` are errors. The entropy is
/// `ln(4π scale)`.
///
/// # Parameters
/// - `loc`: finite; `scale`: finite, at least the smallest normal number;
///   shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = Cauchy::new(tape.scalar(1.0), tape.scalar(2.0))?;
/// // at the location: -ln(2π)
/// assert!((d.log_prob(tape.scalar(1.0))?.item()? + (2.0 * std::f64::consts::PI).ln()).abs() < 1e-12);
/// assert!(d.mean().is_err());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Cauchy<'t, F: Element> {
    loc: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> Cauchy<'t, F> {
    /// From a location and a scale.
    ///
    /// # Errors
    /// A non-finite location; a scale that is not finite or is below the
    /// smallest normal number; shapes that do not broadcast.
    pub fn new(loc: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        same_tape("Cauchy::new", &loc, &scale)?;
        check_finite("Cauchy", "loc", &loc)?;
        check_divisor("Cauchy", "scale", &scale)?;
        batch_broadcast("Cauchy", ("loc", loc.shape()), ("scale", scale.shape()))?;
        Ok(Cauchy { loc, scale })
    }

    /// The location (the median).
    pub fn loc(&self) -> Var<'t, F> {
        self.loc
    }

    /// The scale (half the interquartile range).
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }
}

impl<'t, F: Element> Distribution<'t, F> for Cauchy<'t, F> {
    super::kl::builtin_kl!(Cauchy => kl_cauchy);

    fn name(&self) -> &'static str {
        "Cauchy"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.loc.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("Cauchy::log_prob", &self.loc, &x)?;
        check_finite("Cauchy", "value", &x)?;
        batch_broadcast(
            "Cauchy",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        let inputs = [x, self.loc, self.scale];
        let lp = near_log_prob(&inputs)?;
        far_where_infinite(lp, &inputs, near_log_prob, far_log_prob)
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        // tan(π (u - 1/2)), finite, at most about 3e15 in size
        let z = unit_draws::<F>(Unit::Cauchy, &shape, rng);
        self.tape().constant(z).affine(self.scale, self.loc)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        self.scale
            .ln_plus((4.0 * PI).ln())
            .broadcast_to(&self.batch_shape())
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Cauchy",
            what: "a mean (it has none)",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "Cauchy",
            what: "a variance (it has none)",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        crate::tensor::broadcast_shape(&self.loc.shape(), &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// `y`, the value of `near(inputs)`, or where it is infinite, `far` of
/// the inputs there ([`split`]; `near` again for the rest): the Cauchy
/// log-density and divergence are logarithms of quantities that leave the
/// floats where the logarithms do not (`z = (x - loc) / scale` of 1e60 in
/// `f32`, at a location of -1e30 and a scale of 1e-30, made the
/// log-density `-inf` for -208.4 with a NaN slope; in `f64` at a location
/// of -1e300 and a scale of 1e-300). Where `z` overflows, the `1` of `1 +
/// z²` is far below an ulp of it, so the far forms drop it exactly.
fn far_where_infinite<'t, F: Element>(
    y: Var<'t, F>,
    inputs: &[Var<'t, F>],
    near: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    far: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
) -> Result<Var<'t, F>> {
    let value = y.value();
    if value.data().iter().all(|v| v.is_finite()) {
        return Ok(y);
    }
    let mask = value.map(|v| if v.is_finite() { F::zero() } else { F::one() });
    split(inputs, (mask.clone(), mask), far, near)
}

/// The Cauchy log-density of `[x, loc, scale]`, as first computed.
fn near_log_prob<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    loc_scale_log_prob::<StandardCauchy, F>(v[0], v[1], v[2])
}

/// The Cauchy log-density of `[x, loc, scale]` where `z = (x - loc) /
/// scale` overflows: `-ln π - ln s - ln(1 + z²)` with `ln(1 + z²) = 2 ln|z|`
/// (`1/z²` is far below an ulp), `ln s - 2 ln|x - loc| - ln π`, the
/// difference taken of halves (it may overflow itself). At `x = 0`, a
/// location of -1e300 and a scale of 1e-300 it is -2073.47, where `z`
/// made it `-inf` with a NaN slope.
fn far_log_prob<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
    let half = F::lit(0.5);
    let d = (v[0] * half).try_sub(v[1] * half)?.abs();
    let ln_d = d.ln() + F::lit(std::f64::consts::LN_2);
    Ok(v[2].ln().try_sub(ln_d * F::lit(2.0))? - F::lit(StandardCauchy::LN_C))
}

/// [`cauchy_kl_form`] where `u² + v²` overflows: with `a = |s1 - s2| / 2`
/// and `b = |m1 - m2| / 2` (halves, which do not overflow), the divergence
/// is `ln(a² + b²) - ln s1 - ln s2`, and `ln(a² + b²) = 2 ln M + ln(1 +
/// (m / M)²)` with `M` the larger of `a` and `b` and `m` the smaller. At
/// locations -1e300 and 0.5 and scales 1e-300 and 1e-150 it is 2416.33,
/// where `u` and `v` made it `+inf` with NaN slopes.
fn cauchy_kl_far<'t, F: Element>(
    (m1, s1): (Var<'t, F>, Var<'t, F>),
    (m2, s2): (Var<'t, F>, Var<'t, F>),
) -> Result<Var<'t, F>> {
    let half = F::lit(0.5);
    let a = (s1 * half).try_sub(s2 * half)?.abs();
    let b = (m1 * half).try_sub(m2 * half)?.abs();
    let a_larger = super::gamma::mask_where(&[a, b], |v| v[0] >= v[1])?;
    let (large, small) = (a.choose(a_larger.clone(), b)?, b.choose(a_larger, a)?);
    let ratio = small.try_div(large)?;
    let ln_sum = large.ln() * F::lit(2.0) + ratio.square().log1p();
    ln_sum.try_sub(s1.ln())?.try_sub(s2.ln())
}

/// `ln(1 + (u² + v²))` with `u = (s1 - s2) / (2 √(s1 s2))` and `v = (m1 -
/// m2) / (2 √(s1 s2))`: the KL between Cauchys, `ln(((s1 + s2)² + (m1 -
/// m2)²) / (4 s1 s2))` (Chyzak and Nielsen 2019), in a form that is 0 at
/// equal parameters, keeps its digits near them, and does not overflow
/// for large scales.
fn cauchy_kl_form<'t, F: Element>(
    (m1, s1): (Var<'t, F>, Var<'t, F>),
    (m2, s2): (Var<'t, F>, Var<'t, F>),
) -> Result<Var<'t, F>> {
    let half_root = (s1.sqrt().try_mul(s2.sqrt())?) * F::lit(2.0);
    let u = s1.try_sub(s2)?.try_div(half_root)?;
    let v = m1.try_sub(m2)?.try_div(half_root)?;
    Ok(u.square().try_add(v.square())?.log1p())
}

/// KL(Cauchy || Cauchy): see [`cauchy_kl_form`]; symmetric in its arguments.
pub(crate) fn kl_cauchy<'t, F: Element>(
    q: &Cauchy<'t, F>,
    p: &Cauchy<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.loc, &p.loc)?;
    let shape = batch_broadcast(
        "Cauchy",
        ("the posterior's parameters", q.batch_shape()),
        ("the prior's parameters", p.batch_shape()),
    )?;
    let kl = cauchy_kl_form((q.loc, q.scale), (p.loc, p.scale))?;
    let inputs = [q.loc, q.scale, p.loc, p.scale];
    far_where_infinite(
        kl,
        &inputs,
        |v| cauchy_kl_form((v[0], v[1]), (v[2], v[3])),
        |v| cauchy_kl_far((v[0], v[1]), (v[2], v[3])),
    )?
    .broadcast_to(&shape)
}

/// The half-Cauchy distribution on `[0, inf)`: `|x|` for `x` Cauchy with
/// location 0, the scale prior of horseshoe shrinkage (Carvalho, Polson and
/// Scott 2010) and of Gelman's (2006) hierarchical variances.
///
/// # Density
/// `ln p(x) = ln 2 - ln(π scale) - ln(1 + (x / scale)²)` for `x >= 0`;
/// `-inf` (gradient 0) for `x < 0`.
///
/// # Sampling
/// `x = scale · tan(π u / 2)`: `rsample` is differentiable in the scale.
///
/// # Moments
/// Its mean and variance are infinite: both are errors. The entropy is
/// `ln(2π scale)`.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = HalfCauchy::new(tape.scalar(1.0))?;
/// // at 0: ln 2 - ln π
/// assert!((d.log_prob(tape.scalar(0.0))?.item()? - (2.0 / std::f64::consts::PI).ln()).abs() < 1e-12);
/// assert_eq!(d.log_prob(tape.scalar(-1.0))?.item()?, f64::NEG_INFINITY);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct HalfCauchy<'t, F: Element> {
    scale: Var<'t, F>,
}

impl<'t, F: Element> HalfCauchy<'t, F> {
    /// From a scale.
    ///
    /// # Errors
    /// A scale that is not finite or is below the smallest normal number.
    pub fn new(scale: Var<'t, F>) -> Result<Self> {
        check_divisor("HalfCauchy", "scale", &scale)?;
        Ok(HalfCauchy { scale })
    }

    /// The scale (the median).
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }
}

impl<'t, F: Element> Distribution<'t, F> for HalfCauchy<'t, F> {
    super::kl::builtin_kl!(HalfCauchy => kl_half_cauchy);

    fn name(&self) -> &'static str {
        "HalfCauchy"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.scale.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("HalfCauchy::log_prob", &self.scale, &x)?;
        check_finite("HalfCauchy", "value", &x)?;
        batch_broadcast(
            "HalfCauchy",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        let zero = self.tape().scalar(F::zero());
        on_support(
            "HalfCauchy",
            x,
            |_, v| v >= F::zero(),
            F::zero(),
            |x| {
                let inputs = [x, zero, self.scale];
                let lp = near_log_prob(&inputs)?;
                let lp = far_where_infinite(lp, &inputs, near_log_prob, far_log_prob)?;
                Ok(lp + F::lit(std::f64::consts::LN_2))
            },
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        // tan(π u / 2), finite, at most about 6e15
        let z = unit_draws::<F>(Unit::HalfCauchy, &shape, rng);
        Ok(self.scale * z)
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    fn entropy(&self) -> Result<Var<'t, F>> {
        Ok(self.scale.ln_plus((2.0 * PI).ln()))
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "HalfCauchy",
            what: "a mean (it is infinite)",
        })
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        Err(Error::Unsupported {
            distribution: "HalfCauchy",
            what: "a variance (it is infinite)",
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        self.scale.shape()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// KL(HalfCauchy || HalfCauchy): the KL of the two Cauchys at location 0
/// (folding both densities at 0 doubles each, and leaves their ratio).
pub(crate) fn kl_half_cauchy<'t, F: Element>(
    q: &HalfCauchy<'t, F>,
    p: &HalfCauchy<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.scale, &p.scale)?;
    let shape = batch_broadcast(
        "HalfCauchy",
        ("the posterior's scale", q.batch_shape()),
        ("the prior's scale", p.batch_shape()),
    )?;
    let zero = q.tape().scalar(F::zero());
    let kl = cauchy_kl_form((zero, q.scale), (zero, p.scale))?;
    far_where_infinite(
        kl,
        &[q.scale, p.scale],
        |v| {
            let zero = v[0].tape().scalar(F::zero());
            cauchy_kl_form((zero, v[0]), (zero, v[1]))
        },
        |v| {
            let zero = v[0].tape().scalar(F::zero());
            cauchy_kl_far((zero, v[0]), (zero, v[1]))
        },
    )?
    .broadcast_to(&shape)
}
