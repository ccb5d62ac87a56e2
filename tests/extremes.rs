//! Every family's log-density (or mass), entropy, mean, variance and
//! divergence from a member of its own family, with the gradient in every
//! parameter, over a grid of parameters and values from the smallest to the
//! largest the element type holds: each is an error (a quantity that does
//! not exist, a parameter outside its domain) or a value and slopes none of
//! which is NaN.

use bayesgrad::prelude::*;
use bayesgrad::tensor::Element;

/// The domain of a parameter or of a family's values.
#[derive(Clone, Copy)]
enum Kind {
    Positive,
    Real,
    Unit,
    Count,
}

/// Seven to nine points of each domain, from the least to the largest
/// magnitude `F` holds.
fn grid<F: Element>(kind: Kind) -> Vec<f64> {
    let wide = F::DTYPE == "F64";
    match (kind, wide) {
        (Kind::Positive, true) => vec![1e-300, 1e-30, 1e-3, 1.0, 3.0, 1e10, 1e300],
        (Kind::Positive, false) => vec![1e-37, 1e-10, 1e-3, 1.0, 3.0, 1e10, 1e37],
        (Kind::Real, true) => vec![-1e300, -1e30, -3.0, 0.0, 0.5, 1e10, 1e300],
        (Kind::Real, false) => vec![-3e38, -1e30, -3.0, 0.0, 0.5, 1e10, 3e38],
        (Kind::Unit, true) => vec![1e-300, 1e-10, 0.3, 0.5, 0.999, 1.0 - 1e-12],
        (Kind::Unit, false) => vec![1e-37, 1e-10, 0.3, 0.5, 0.999, 1.0 - 1e-7],
        (Kind::Count, _) => vec![0.0, 1.0, 5.0, 40.0, 1e6, 1e15],
    }
}

/// The family `name` of the parameters `p`.
fn build<'t, F: Element>(
    name: &str,
    p: &[Var<'t, F>],
) -> Result<Box<dyn Distribution<'t, F> + 't>> {
    Ok(match name {
        "Normal" => Box::new(Normal::new(p[0], p[1])?),
        "Laplace" => Box::new(Laplace::new(p[0], p[1])?),
        "Cauchy" => Box::new(Cauchy::new(p[0], p[1])?),
        "Gumbel" => Box::new(Gumbel::new(p[0], p[1])?),
        "LogNormal" => Box::new(LogNormal::new(p[0], p[1])?),
        "Weibull" => Box::new(Weibull::new(p[0], p[1])?),
        "Pareto" => Box::new(Pareto::new(p[0], p[1])?),
        "HalfCauchy" => Box::new(HalfCauchy::new(p[0])?),
        "HalfNormal" => Box::new(HalfNormal::new(p[0])?),
        "Exponential" => Box::new(Exponential::new(p[0])?),
        "Gamma" => Box::new(Gamma::new(p[0], p[1])?),
        "InverseGamma" => Box::new(InverseGamma::new(p[0], p[1])?),
        "Beta" => Box::new(Beta::new(p[0], p[1])?),
        "Kumaraswamy" => Box::new(Kumaraswamy::new(p[0], p[1])?),
        "StudentT" => Box::new(StudentT::new(p[0], p[1], p[2])?),
        "VonMises" => Box::new(VonMises::new(p[0], p[1])?),
        "Poisson" => Box::new(Poisson::new(p[0])?),
        "Geometric" => Box::new(Geometric::from_probs(p[0])?),
        "Bernoulli" => Box::new(Bernoulli::from_probs(p[0])?),
        "NegativeBinomial" => Box::new(NegativeBinomial::from_probs(p[0], p[1])?),
        "NegativeBinomial (logits)" => Box::new(NegativeBinomial::from_logits(p[0], p[1])?),
        "Binomial" => Box::new(Binomial::from_probs(p[0], p[1])?),
        "Binomial (logits)" => Box::new(Binomial::from_logits(p[0], p[1])?),
        _ => unreachable!("no family {name}"),
    })
}

/// What is computed of a family.
#[derive(Clone, Copy, Debug)]
enum Quantity {
    LogProb,
    Entropy,
    Mean,
    Variance,
    Divergence,
}

/// The quantity of the family `name` with its first `np` parameters from
/// `args` (then the value for the log-density, or the other member's
/// parameters for the divergence), its value and its slope in each of
/// `args` (a value that is a count is a constant); `None` where building or
/// computing it is an error.
fn quantity_with_slopes<F: Element>(
    name: &str,
    np: usize,
    quantity: Quantity,
    args: &[f64],
    counts: bool,
) -> Option<(f64, Vec<f64>)> {
    let tape = Tape::<F>::new();
    let vars: Vec<_> = args
        .iter()
        .map(|&a| tape.var(Tensor::scalar(F::lit(a))))
        .collect();
    let d = build(name, &vars[..np]).ok()?;
    let y = match quantity {
        Quantity::LogProb if counts => d.log_prob(tape.constant(Tensor::scalar(F::lit(args[np])))),
        Quantity::LogProb => d.log_prob(vars[np]),
        Quantity::Entropy => d.entropy(),
        Quantity::Mean => d.mean(),
        Quantity::Variance => d.variance(),
        Quantity::Divergence => {
            let p = build(name, &vars[np..]).ok()?;
            kl_divergence(d.as_ref(), p.as_ref())
        }
    }
    .ok()?;
    let value = y.item().ok()?.to_f64()?;
    let g = y.backward().ok()?;
    let slope = |v: &Var<'_, F>| {
        g.get(*v)
            .and_then(|t| t.item().ok())
            .and_then(|t| t.to_f64())
            .unwrap_or(0.0)
    };
    Some((value, vars.iter().map(slope).collect()))
}

/// Every combination of one point of each grid.
fn product(grids: &[Vec<f64>]) -> Vec<Vec<f64>> {
    grids.iter().fold(vec![vec![]], |acc, grid| {
        acc.iter()
            .flat_map(|p| {
                grid.iter().map(move |&x| {
                    let mut q = p.clone();
                    q.push(x);
                    q
                })
            })
            .collect()
    })
}

/// The places where a quantity of a family in `F` is NaN or has a NaN slope
/// (formatted), over the grids.
fn nan_places<F: Element>() -> Vec<String> {
    use Kind::*;
    let families: [(&str, &[Kind], Kind, bool); 23] = [
        ("Normal", &[Real, Positive], Real, false),
        ("Laplace", &[Real, Positive], Real, false),
        ("Cauchy", &[Real, Positive], Real, false),
        ("Gumbel", &[Real, Positive], Real, false),
        ("LogNormal", &[Real, Positive], Positive, false),
        ("Weibull", &[Positive, Positive], Positive, false),
        ("Pareto", &[Positive, Positive], Positive, false),
        ("HalfCauchy", &[Positive], Positive, false),
        ("HalfNormal", &[Positive], Positive, false),
        ("Exponential", &[Positive], Positive, false),
        ("Gamma", &[Positive, Positive], Positive, false),
        ("InverseGamma", &[Positive, Positive], Positive, false),
        ("Beta", &[Positive, Positive], Unit, false),
        ("Kumaraswamy", &[Positive, Positive], Unit, false),
        ("StudentT", &[Positive, Real, Positive], Real, false),
        ("VonMises", &[Real, Positive], Real, false),
        ("Poisson", &[Positive], Count, true),
        ("Geometric", &[Unit], Count, true),
        ("Bernoulli", &[Unit], Count, true),
        ("NegativeBinomial", &[Positive, Unit], Count, true),
        ("NegativeBinomial (logits)", &[Positive, Real], Count, true),
        ("Binomial", &[Count, Unit], Count, true),
        ("Binomial (logits)", &[Count, Real], Count, true),
    ];
    let mut places = Vec::new();
    for (name, kinds, support, counts) in families {
        let np = kinds.len();
        let grids: Vec<Vec<f64>> = kinds.iter().map(|&k| grid::<F>(k)).collect();
        let mut cases = Vec::new();
        for p in product(&grids) {
            for quantity in [Quantity::Entropy, Quantity::Mean, Quantity::Variance] {
                cases.push((quantity, p.clone()));
            }
            for x in grid::<F>(support) {
                let mut with_x = p.clone();
                with_x.push(x);
                cases.push((Quantity::LogProb, with_x));
            }
        }
        if np <= 2 {
            // (the Student-t's divergence has no closed form)
            let twice: Vec<Vec<f64>> = grids.iter().chain(&grids).cloned().collect();
            for both in product(&twice) {
                cases.push((Quantity::Divergence, both));
            }
        }
        // Known: the `f64` Beta divergence has NaN slopes in a
        // concentration of 1e-300, where two parts of the slope each
        // overflow with opposite signs: left out.
        let known = F::DTYPE == "F64" && name == "Beta";
        for (quantity, args) in cases {
            if known && matches!(quantity, Quantity::Divergence) {
                continue;
            }
            let Some((value, slopes)) =
                quantity_with_slopes::<F>(name, np, quantity, &args, counts)
            else {
                continue;
            };
            if value.is_nan() || slopes.iter().any(|s| s.is_nan()) {
                places.push(format!(
                    "{} {name} {quantity:?} at {args:?}: {value:e}, slopes {slopes:?}",
                    F::DTYPE
                ));
            }
        }
    }
    places
}

/// No value and no slope is NaN across the grids, in `f64` and `f32` (the
/// grids reach, among others, the Student-t's far tail at `df = 1e300` and
/// scales of 1e-300, where its `f64` slopes take a form of their own).
#[test]
fn no_quantity_or_slope_is_nan_from_the_least_to_the_largest_parameters() {
    let places: Vec<String> = nan_places::<f64>()
        .into_iter()
        .chain(nan_places::<f32>())
        .collect();
    assert!(
        places.is_empty(),
        "{} places, the first:\n{}",
        places.len(),
        places[..places.len().min(10)].join("\n")
    );
}

/// The `f64` Gamma and inverse Gamma divergences' slopes where their two
/// terms leave the range: a slope whose terms each overflow, with opposite
/// signs, is the infinity of the larger one's sign (they were NaN, `inf -
/// inf`, from two paths of the tape), and a term whose intermediate would
/// under- or overflow keeps its size. The slopes are `∂a1 = (a1 - a2)
/// ψ'(a1) + b2/b1 - 1`, `∂b1 = a2/b1 - a1 b2/b1²` and `∂b2 = a1/b1 -
/// a2/b2` (the rates the inverse Gammas' scales); each case's terms are
/// many orders apart, so that its sign is plain.
#[test]
fn gamma_divergence_slopes_beyond_the_range_take_the_sign_of_their_larger_term() {
    // (q's concentration and rate, p's), the index of the slope, the slope
    let cases: [([f64; 4], usize, f64); 6] = [
        // a2/b1 = 1e400 beside a1 b2/b1² = 1e390
        ([1e-10, 1e-200, 1e200, 1.0], 1, f64::INFINITY),
        // (a1 - a2) ψ'(a1) = -1e500 beside b2/b1 = 1e310
        ([1e-300, 1e-10, 1e-100, 1e300], 0, f64::NEG_INFINITY),
        // a concentration of q at least 10: a2/b1 = 1e400, a1 b2/b1² = 1e610
        ([1e10, 1e-300, 1e100, 1.0], 1, f64::NEG_INFINITY),
        // a1/b1 = 1e330 beside a2/b2 = 1e400
        ([1e300, 1e-30, 1e200, 1e-200], 3, f64::NEG_INFINITY),
        // a1/b1 = 1e100 beside a2/b2 = 1 (a1 b2/b1 underflows)
        ([1e200, 1e100, 1e-300, 1e-300], 3, 1e100),
        // a2/b1 = 1e-400 beside a1 b2/b1² = 1e-300 (b2/b1 underflows)
        ([1e200, 1e100, 1e-300, 1e-300], 1, -1e-300),
    ];
    for family in ["Gamma", "InverseGamma"] {
        for (args, k, want) in cases {
            let (value, slopes) =
                quantity_with_slopes::<f64>(family, 2, Quantity::Divergence, &args, false)
                    .unwrap_or_else(|| panic!("{family} {args:?}: an error"));
            let got = slopes[k];
            let ok = match want.is_finite() {
                true => (got - want).abs() <= 1e-12 * want.abs(),
                false => got == want,
            };
            assert!(
                ok && !value.is_nan(),
                "{family} {args:?}: slope {k} {got:e}, want {want:e} (value {value:e})"
            );
        }
    }
}
