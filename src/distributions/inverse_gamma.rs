//! The inverse Gamma: the conjugate prior of a normal variance, built on
//! the [`Gamma`] it inverts.

use super::gamma::{
    Gamma, inverse_gamma_log_density, kl_gamma, ln_std_gamma_rsample, mask_where, split,
};
use super::widened::rounded_once;
use super::{
    Distribution, batch_broadcast, check_positive, check_two, on_support, same_tape, sample_shape,
};
use crate::autodiff::tape::{Tape, Var};
use crate::error::Result;
use crate::tensor::{Element, Tensor, broadcast_shape};
use rand::Rng;

/// The inverse Gamma distribution: `1/G` for `G ~ Gamma(concentration,
/// rate = scale)`, with `concentration` `a` and `scale` `b` (TFP's
/// `InverseGamma(concentration, scale)`; PyTorch calls the same `b` its
/// `rate`).
///
/// # Density
/// `ln p(x) = a ln b - ln Γ(a) - (a + 1) ln x - b / x` on `x > 0`; `-inf`
/// (gradient 0) for `x <= 0` and `+inf`. Computed in `f64` with its
/// partial derivatives in one pass (rounded once for `f32`); at large `a`
/// near the mode through the Gamma's form that keeps its digits there
/// (the Gamma's log-density of `b / x`, whose terms of size `a ln a`
/// cancel analytically).
///
/// # Sampling
/// `rsample` is `b / G = e^(ln b - ln G)` for `G ~ Gamma(a, 1)`, whose
/// logarithm carries its implicit gradient: differentiable in both
/// parameters (through `ln G`, whose derivative stays moderate where `G`
/// itself underflows). A draw beyond half the largest float (most draws of
/// concentrations near 10⁻⁴ in `f32`) is held there, with a gradient of 0.
///
/// # Moments
/// Mean `b / (a - 1)` for `a > 1`, variance `b² / ((a - 1)² (a - 2))` for
/// `a > 2`: `+inf` where the integral diverges (`a <= 1`, `a <= 2`), as
/// PyTorch gives them. Entropy `a + ln b + ln Γ(a) - (a + 1) ψ(a)`.
///
/// # Parameters
/// - `concentration`, `scale`: finite, `> 0`; shapes broadcast.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let d = InverseGamma::new(tape.scalar(3.0), tape.scalar(2.0))?;
/// assert!((d.mean()?.item()? - 1.0).abs() < 1e-12);
/// assert!((d.variance()?.item()? - 1.0).abs() < 1e-12);
/// // at x = 1: 3 ln 2 - ln Γ(3) - 2
/// let lp = d.log_prob(tape.scalar(1.0))?.item()?;
/// assert!((lp - (3.0 * 2f64.ln() - 2f64.ln() - 2.0)).abs() < 1e-12);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct InverseGamma<'t, F: Element> {
    concentration: Var<'t, F>,
    scale: Var<'t, F>,
}

impl<'t, F: Element> InverseGamma<'t, F> {
    /// From a concentration (shape) and a scale.
    ///
    /// # Errors
    /// Parameters that are not finite and `> 0`; shapes that do not
    /// broadcast.
    pub fn new(concentration: Var<'t, F>, scale: Var<'t, F>) -> Result<Self> {
        check_two(
            "InverseGamma::new",
            "InverseGamma",
            check_positive,
            ("concentration", &concentration),
            ("scale", &scale),
        )?;
        Ok(InverseGamma {
            concentration,
            scale,
        })
    }

    /// The concentration (shape).
    pub fn concentration(&self) -> Var<'t, F> {
        self.concentration
    }

    /// The scale.
    pub fn scale(&self) -> Var<'t, F> {
        self.scale
    }

    /// The Gamma of the reciprocals: `Gamma(concentration, rate = scale)`.
    pub fn to_gamma(&self) -> Result<Gamma<'t, F>> {
        Gamma::new(self.concentration, self.scale)
    }

    /// `+inf` where `a` is at most `bound`, `f(a)` elsewhere (with no
    /// gradient from the other side).
    fn where_finite(
        &self,
        bound: F,
        f: impl FnOnce(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    ) -> Result<Var<'t, F>> {
        let inputs = [self.concentration, self.scale];
        let finite = mask_where(&inputs, |v| v[0] > bound)?;
        split(&inputs, (finite.clone(), finite), f, super::gamma::infinite)
    }
}

impl<'t, F: Element> Distribution<'t, F> for InverseGamma<'t, F> {
    super::kl::builtin_kl!(InverseGamma => kl_inverse_gamma);

    fn name(&self) -> &'static str {
        "InverseGamma"
    }
    fn tape(&self) -> &'t Tape<F> {
        self.scale.tape()
    }
    fn log_prob(&self, x: Var<'t, F>) -> Result<Var<'t, F>> {
        same_tape("InverseGamma::log_prob", &self.scale, &x)?;
        batch_broadcast(
            "InverseGamma",
            ("value", x.shape()),
            ("batch", self.batch_shape()),
        )?;
        let (a, b) = (self.concentration, self.scale);
        on_support(
            "InverseGamma",
            x,
            |_, v| v > F::zero() && v < F::infinity(),
            F::one(),
            |x| inverse_gamma_log_density(a, b, x),
        )
    }
    fn rsample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Var<'t, F>> {
        let shape = sample_shape(n, &self.batch_shape());
        let (ln_g, _) = ln_std_gamma_rsample(self.concentration, &shape, rng)?;
        // b / G = e^(ln b - ln G), held at half the largest float (with a
        // gradient of 0) where it would go beyond it
        let hold = (F::max_value() * F::lit(0.5)).ln();
        let t = self.scale.ln().try_sub(ln_g)?;
        Ok(t.try_clamp(F::neg_infinity(), hold)?.exp())
    }
    fn sample(&self, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        Ok(self.rsample(rng)?.value())
    }
    fn sample_n(&self, n: Option<usize>, rng: &mut dyn Rng) -> Result<Tensor<F>> {
        super::sample_n_reparameterized(self, n, rng)
    }
    // `entropy_of`, in f64 for f32
    fn entropy(&self) -> Result<Var<'t, F>> {
        rounded_once!(
            "inverse_gamma_entropy",
            [self.concentration, self.scale],
            |v: G| entropy_of(v[0], v[1])
        )
    }
    fn mean(&self) -> Result<Var<'t, F>> {
        self.where_finite(F::one(), |v| v[1].try_div(v[0] - F::one()))
    }
    fn variance(&self) -> Result<Var<'t, F>> {
        self.where_finite(F::lit(2.0), |v| {
            let (a, b) = (v[0], v[1]);
            // m (m / (a - 2)) with m = b / (a - 1), the mean: neither the
            // square of the scale nor that of the mean (1e40 in f32 at a =
            // 1e10, b = 1e30, where the variance is 1e30)
            let m = b.try_div(a - F::one())?;
            m.try_mul(m.try_div(a - F::lit(2.0))?)
        })
    }
    fn batch_shape(&self) -> Vec<usize> {
        broadcast_shape(&self.concentration.shape(), &self.scale.shape()).unwrap_or_default()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
}

/// The inverse Gamma entropy of concentrations `a` and scales `b`:
/// `H(1/G) = H(G) - 2 E[ln G] = H(G) - 2 (ψ(a) - ln b)`; below `ε²` of the
/// element type (4.9e-32 in `f64`) the sum of its terms, `a + ln b + ln
/// Γ(a) - (1 + a) ψ(a)`, whose large terms have one sign there: the slopes
/// of `H(G)` and of `2ψ(a)` are `+inf` and `-inf` where `ψ'(a)`, their
/// factor, overflows (below about 1e-154 in `f64`), and their difference
/// was NaN, where the sum's slope `1 - (1 + a) ψ'(a)` is `-inf`, as it is
/// (about `-1/a²`). [`InverseGamma::entropy`] takes it in `f64` for `f32`:
/// the two parts of the first form cancel to the entropy (1.92 and 1.85 at
/// `a = 3`, `b = 1`, for 0.00201), which in `f32` arithmetic was 240 ulp
/// off there (and its slope NaN below 5e-20).
fn entropy_of<'t, F: Element>(a: Var<'t, F>, b: Var<'t, F>) -> Result<Var<'t, F>> {
    let by_gamma = |v: &[Var<'t, F>]| {
        let (a, b) = (v[0], v[1]);
        let h = Gamma::new(a, b)?.entropy()?;
        h.try_sub((a.digamma().try_sub(b.ln())?) * F::lit(2.0))
    };
    let by_terms = |v: &[Var<'t, F>]| {
        let (a, b) = (v[0], v[1]);
        let t = a.try_add(b.ln())?.try_add(a.lgamma())?;
        t.try_sub((a + F::one()).try_mul(a.digamma())?)
    };
    let tiny = mask_where(&[a, b], |v| v[0] < F::epsilon() * F::epsilon())?;
    split(&[a, b], (tiny.clone(), tiny), by_terms, by_gamma)
}

/// KL(InverseGamma || InverseGamma): the divergence is unchanged by the
/// map `x -> 1/x` both share, so it is the Gammas' (`kl_gamma`, with the
/// scales as rates).
pub(crate) fn kl_inverse_gamma<'t, F: Element>(
    q: &InverseGamma<'t, F>,
    p: &InverseGamma<'t, F>,
) -> Result<Var<'t, F>> {
    same_tape("kl_divergence", &q.scale, &p.scale)?;
    kl_gamma(&q.to_gamma()?, &p.to_gamma()?)
}
