//! In `f32`, across the parameter domain and the support: parameters from
//! 1e-4 to 1e5 and values from 1e-8 to 1e8 (0 to 1 for the unit
//! interval, -1e3 to 1e3 on the line), every log-density, entropy,
//! divergence and reparameterized draw of the families, and its gradient
//! with respect to every input, is finite; parameters given per value (19
//! of them: two groups of eight lanes and a tail) and as single values.
//!
//! The Gumbel's and Weibull's log-densities and divergences, the
//! Weibull's draws and variance and the inverse Gamma's draws legitimately
//! leave `f32`'s range at the domain's ends (a Gumbel `e^-z` with `z =
//! -1e3 / 1e-4`, a Weibull `e^(k t)` with `k = 1e5`, an inverse Gamma draw
//! near 1e37 times a derivative near 1e8): those are checked for NaN only.
//!
//! The Pareto's draws, mean and variance leave it for small concentrations
//! (`e^(E / α)` with `α = 1e-4`; the mean and variance are `+inf` below 1
//! and 2): those too are checked for NaN only.
//!
//! The Student-t's draws are finite from `ν = 0.5` on. Below it they
//! legitimately leave `f32`'s range (with `ν = 0.05` about one draw in a
//! hundred has `|t| > 3.4e38`), so there the draws and their gradients are
//! checked for NaN only: a draw near the largest `f32` once got a NaN
//! gradient for `ν`, its two terms (through `ln ν` and through the Gamma
//! draw) each overflowing with opposite signs.

use bayesgrad::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Log-uniform between `lo` and `hi`.
fn log_uniform(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    (lo.ln()..hi.ln()).prop_map(f64::exp)
}

/// `v`'s value and the gradient of its sum with respect to each of
/// `inputs` (those it depends on) are finite; `at` names the case.
fn finite<'t>(what: &str, v: Result<Var<'t, f32>>, inputs: &[Var<'t, f32>], at: &str) {
    every(what, v, inputs, at, f32::is_finite);
}

/// `v`'s value and the gradient of its sum with respect to each of
/// `inputs` have no NaN (infinities allowed); `at` names the case.
fn no_nan<'t>(what: &str, v: Result<Var<'t, f32>>, inputs: &[Var<'t, f32>], at: &str) {
    every(what, v, inputs, at, |x| !x.is_nan());
}

/// Every element of `v`'s value and of the gradient of its sum with
/// respect to each of `inputs` passes `ok`.
fn every<'t>(
    what: &str,
    v: Result<Var<'t, f32>>,
    inputs: &[Var<'t, f32>],
    at: &str,
    ok: fn(f32) -> bool,
) {
    let v = v.unwrap_or_else(|e| panic!("{what}: {e} at {at}"));
    let value = v.value();
    assert!(
        value.data().iter().all(|&x| ok(x)),
        "{what}: {:?} at {at}",
        value.data()
    );
    let grads = v.sum().backward().unwrap();
    for (i, x) in inputs.iter().enumerate() {
        if let Some(g) = grads.get(*x) {
            assert!(
                g.data().iter().all(|&x| ok(x)),
                "{what}: gradient of input {i} {:?} at {at}, value {:?}",
                g.data(),
                value.data()
            );
        }
    }
}

/// Every check of the file, with parameters `a..d`, a positive value `xp`,
/// one in the unit interval `xu` and one on the line `xr`, each as a
/// tensor of `n` equal values (`n = 0`: a single value).
fn families(p: [f64; 4], (xp, xu, xr): (f64, f64, f64), n: usize, seed: u64) {
    let at = format!("parameters {p:?}, values {xp}, {xu}, {xr}, {n} of each");
    let t = |v: f64| match n {
        0 => Tensor::<f32>::scalar(v as f32),
        n => Tensor::<f32>::full(&[n], v as f32),
    };
    let tape = Tape::<f32>::new();
    let [a, b, c, d] = p.map(|v| tape.var(t(v)));
    // the values per position always
    let x = |v: f64| tape.var(Tensor::<f32>::full(&[19], v as f32));
    let (xp, xu, xr) = (x(xp), x(xu), x(xr));
    let ins = [a, b, c, d, xp, xu, xr];
    let check = |what: &str, v: Result<Var<'_, f32>>| finite(what, v, &ins, &at);
    let mut rng = StdRng::seed_from_u64(seed);

    let (g, g2) = (Gamma::new(a, b).unwrap(), Gamma::new(c, d).unwrap());
    check("Gamma log_prob", g.log_prob(xp));
    check("Gamma entropy", g.entropy());
    check("Gamma KL", kl_divergence(&g, &g2));
    check("Gamma rsample", g.rsample(&mut rng));
    let (be, be2) = (Beta::new(a, b).unwrap(), Beta::new(c, d).unwrap());
    check("Beta log_prob", be.log_prob(xu));
    check("Beta entropy", be.entropy());
    check("Beta KL", kl_divergence(&be, &be2));
    check("Beta rsample", be.rsample(&mut rng));
    let s = StudentT::new(a, c, b).unwrap();
    check("StudentT log_prob", s.log_prob(xr));
    check("StudentT entropy", s.entropy());
    if p[0] >= 0.5 {
        check("StudentT rsample", s.rsample(&mut rng));
    } else {
        no_nan("StudentT rsample", s.rsample(&mut rng), &ins, &at);
    }
    let columns = Var::stack(&[a, b, c], a.shape().len()).unwrap();
    let dir = Dirichlet::new(columns).unwrap();
    check("Dirichlet entropy", dir.entropy());
    check("Dirichlet rsample", dir.rsample(&mut rng));
    check(
        "LogNormal log_prob",
        LogNormal::new(c.ln(), b).unwrap().log_prob(xp),
    );
    let logit = LogitNormal::new(c.ln(), b).unwrap();
    check("LogitNormal log_prob", logit.log_prob(xu));
    check("Laplace log_prob", Laplace::new(c, b).unwrap().log_prob(xr));
    let (cq, cp) = (Cauchy::new(c, b).unwrap(), Cauchy::new(d, a).unwrap());
    check("Cauchy log_prob", cq.log_prob(xr));
    check("Cauchy KL", kl_divergence(&cq, &cp));
    check("Cauchy rsample", cq.rsample(&mut rng));
    let (hq, hp) = (HalfCauchy::new(b).unwrap(), HalfCauchy::new(a).unwrap());
    check("HalfCauchy log_prob", hq.log_prob(xp));
    check("HalfCauchy KL", kl_divergence(&hq, &hp));
    let (nq, np) = (HalfNormal::new(b).unwrap(), HalfNormal::new(a).unwrap());
    check("HalfNormal log_prob", nq.log_prob(xp));
    check("HalfNormal KL", kl_divergence(&nq, &np));
    check("HalfNormal rsample", nq.rsample(&mut rng));
    check(
        "Exponential log_prob",
        Exponential::new(a).unwrap().log_prob(xp),
    );
    let counts = tape.constant(xp.value().map(f32::round));
    check(
        "Poisson log_prob",
        Poisson::new(a).unwrap().log_prob(counts),
    );
    check(
        "NegativeBinomial log_prob",
        NegativeBinomial::from_logits(a, b.ln())
            .unwrap()
            .log_prob(counts),
    );
    // the Gumbel and Weibull densities and divergences legitimately leave
    // f32's range here (e^-z with z = -1e3 / 1e-4, a Weibull's e^(k t) with
    // k = 1e5): no NaN; their entropies, moments and draws are finite
    let (gq, gp) = (Gumbel::new(c, b).unwrap(), Gumbel::new(d, a).unwrap());
    no_nan("Gumbel log_prob", gq.log_prob(xr), &ins, &at);
    no_nan("Gumbel KL", kl_divergence(&gq, &gp), &ins, &at);
    check("Gumbel entropy", gq.entropy());
    check("Gumbel rsample", gq.rsample(&mut rng));
    let (wq, wp) = (Weibull::new(a, b).unwrap(), Weibull::new(c, d).unwrap());
    no_nan("Weibull log_prob", wq.log_prob(xp), &ins, &at);
    no_nan("Weibull KL", kl_divergence(&wq, &wp), &ins, &at);
    check("Weibull entropy", wq.entropy());
    no_nan("Weibull rsample", wq.rsample(&mut rng), &ins, &at);
    no_nan("Weibull variance", wq.variance(), &ins, &at);
    let (iq, ip) = (
        InverseGamma::new(a, b).unwrap(),
        InverseGamma::new(c, d).unwrap(),
    );
    check("InverseGamma log_prob", iq.log_prob(xp));
    check("InverseGamma entropy", iq.entropy());
    check("InverseGamma KL", kl_divergence(&iq, &ip));
    // (its gradient in a concentration near 1e-4 is beyond f32: draws near
    // 1e37 times the derivative of ln G, about -ln G / a)
    no_nan("InverseGamma rsample", iq.rsample(&mut rng), &ins, &at);
    let (eq, ep) = (
        Geometric::from_logits(a.ln()).unwrap(),
        Geometric::from_logits(-b.ln()).unwrap(),
    );
    check("Geometric log_prob", eq.log_prob(counts));
    check("Geometric entropy", eq.entropy());
    check("Geometric KL", kl_divergence(&eq, &ep));
    // the Pareto's draws leave f32's range for small concentrations (e^(E /
    // α) with α = 1e-4), and so do its mean and variance, +inf below 1 and
    // 2: no NaN; the posterior's scale is above the prior's
    let (pq, pp) = (
        Pareto::new(a, b).unwrap(),
        Pareto::new(c, b / (d + 1.0)).unwrap(),
    );
    check("Pareto log_prob", pq.log_prob(b + xp));
    check("Pareto entropy", pq.entropy());
    check("Pareto KL", kl_divergence(&pq, &pp));
    no_nan("Pareto rsample", pq.rsample(&mut rng), &ins, &at);
    no_nan("Pareto mean", pq.mean(), &ins, &at);
    no_nan("Pareto variance", pq.variance(), &ins, &at);
    let ku = Kumaraswamy::new(a, b).unwrap();
    check("Kumaraswamy log_prob", ku.log_prob(xu));
    check("Kumaraswamy entropy", ku.entropy());
    check("Kumaraswamy mean", ku.mean());
    check("Kumaraswamy variance", ku.variance());
    check("Kumaraswamy rsample", ku.rsample(&mut rng));
    check("Kumaraswamy Beta KL", kl_divergence(&ku, &be2));
    let (vm, vm2) = (VonMises::new(c, a).unwrap(), VonMises::new(d, b).unwrap());
    check("VonMises log_prob", vm.log_prob(xr));
    check("VonMises entropy", vm.entropy());
    check("VonMises variance", vm.variance());
    check("VonMises KL", kl_divergence(&vm, &vm2));
    check("VonMises rsample", vm.rsample(&mut rng));
    let (n1, n2) = (Normal::new(c, a).unwrap(), Normal::new(d, b).unwrap());
    check("Normal log_prob", n1.log_prob(xr));
    check("Normal KL", kl_divergence(&n1, &n2));
    let lp = Laplace::new(d, b).unwrap();
    check("Normal Laplace KL", kl_divergence(&n1, &lp));
    let (q, r) = (
        Bernoulli::from_logits(a.ln()).unwrap(),
        Bernoulli::from_logits(-b.ln()).unwrap(),
    );
    check("Bernoulli KL", kl_divergence(&q, &r));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/f32_domain.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn f32_families_are_finite_with_finite_gradients_across_the_domain(
        p in [log_uniform(1e-4, 1e5), log_uniform(1e-4, 1e5), log_uniform(1e-4, 1e5), log_uniform(1e-4, 1e5)],
        xp in log_uniform(1e-8, 1e8),
        xu in 1e-6..(1.0 - 1e-6),
        xr in -1e3..1e3f64,
        single in any::<bool>(),
        seed in any::<u64>(),
    ) {
        families(p, (xp, xu, xr), if single { 0 } else { 19 }, seed);
    }
}

/// The value of `f` at `inputs` and its slopes in them, on a tape of `F`,
/// as `f64`s.
pub(crate) fn value_and_slopes<F: Element, const N: usize>(
    inputs: [f64; N],
    f: impl for<'t> Fn([Var<'t, F>; N]) -> Result<Var<'t, F>>,
) -> (f64, [f64; N]) {
    let tape = Tape::<F>::new();
    let v = inputs.map(|x| tape.var(Tensor::scalar(F::from(x).unwrap())));
    let y = f(v).unwrap();
    let g = y.backward().unwrap();
    let wide = |x: F| x.to_f64().unwrap();
    (
        wide(y.item().unwrap()),
        v.map(|x| wide(g.get(x).unwrap().item().unwrap())),
    )
}

/// `f` in `f32` against `f` in `f64` at the same (`f32`) inputs, where
/// its intermediates leave `f32`'s range but its value and slopes do not:
/// each within `tol` relative of the `f64` one (a slope below `f32`'s
/// smallest normal number within that number).
fn f32_matches_f64<const N: usize>(
    what: &str,
    inputs: [f64; N],
    tol: f64,
    f32_form: impl for<'t> Fn([Var<'t, f32>; N]) -> Result<Var<'t, f32>>,
    f64_form: impl for<'t> Fn([Var<'t, f64>; N]) -> Result<Var<'t, f64>>,
) {
    let inputs = inputs.map(|x| x as f32 as f64);
    let (v32, g32) = value_and_slopes::<f32, N>(inputs, f32_form);
    let (v64, g64) = value_and_slopes::<f64, N>(inputs, f64_form);
    assert!(
        v64.is_finite() && v64.abs() < 3e38,
        "{what} {inputs:?}: f64 {v64:e}"
    );
    assert!(
        (v32 - v64).abs() <= tol * v64.abs(),
        "{what} {inputs:?}: {v32:e} vs {v64:e}"
    );
    for (i, (a, b)) in g32.iter().zip(g64).enumerate() {
        assert!(b.abs() < 3e38, "{what} {inputs:?}: f64 slope {i} {b:e}");
        // (a slope below `f32`'s normal range may round to 0 or a subnormal)
        let slack = tol * b.abs() + f64::from(f32::MIN_POSITIVE);
        assert!(
            (a - b).abs() <= slack,
            "{what} {inputs:?}: slope {i} {a:e} vs {b:e}"
        );
    }
}

/// [`f32_matches_f64`] of one formula written once (a closure is not
/// generic over the element type, so the macro writes it for both).
macro_rules! f32_vs_f64 {
    ($what:expr, $inputs:expr, $tol:expr, |$v:pat_param| $body:expr) => {
        f32_matches_f64($what, $inputs, $tol, |$v| $body, |$v| $body)
    };
}

/// Cauchy and half-Cauchy log-densities and divergences, and the Weibull
/// entropy, where `(x - loc) / scale`, the square of a ratio of scales or
/// `scale / concentration` leave `f32`'s range but the logarithms taken of
/// them do not: the Cauchy log-density at a location of -1e30 and a scale
/// of 1e-30 was `-inf` (-208.4) with a NaN slope, the divergence between
/// scales of 1e-30 and 1e10 `+inf` (90.7), and the Weibull entropy at
/// `k = 1e-30`, `λ = 1e10` `+inf` (-5.8e29; its slope in `k` is beyond
/// `f32`, so `k = 1e-15`, `λ = 1e30` here).
#[test]
fn logarithms_of_quantities_beyond_f32_stay_finite() {
    let cauchy_lp = |loc: f64, scale: f64, x: f64| {
        f32_vs_f64!("Cauchy log-density", [loc, scale, x], 1e-6, |[m, s, x]| {
            Cauchy::new(m, s)?.log_prob(x)
        })
    };
    cauchy_lp(-1e30, 1e-30, 0.5);
    cauchy_lp(0.0, 1e-30, 1e10);
    cauchy_lp(3e38, 1e-3, -3e38);
    f32_vs_f64!("half-Cauchy log-density", [1e-30, 1e10], 1e-6, |[s, x]| {
        HalfCauchy::new(s)?.log_prob(x)
    });
    for (s1, s2) in [(1e-30, 1e10), (1e30, 1e-10)] {
        f32_vs_f64!("Cauchy divergence", [0.5, s1, -2.0, s2], 1e-6, |[
            m1,
            s1,
            m2,
            s2,
        ]| {
            kl_divergence(&Cauchy::new(m1, s1)?, &Cauchy::new(m2, s2)?)
        });
        f32_vs_f64!("half-Cauchy divergence", [s1, s2], 1e-6, |[s1, s2]| {
            kl_divergence(&HalfCauchy::new(s1)?, &HalfCauchy::new(s2)?)
        });
    }
    for (k, scale) in [(1e-15, 1e30), (1e10, 1e-30), (1e30, 1e-10)] {
        f32_vs_f64!("Weibull entropy", [k, scale], 1e-6, |[k, s]| Weibull::new(
            k, s
        )?
        .entropy());
    }
}

/// The Beta divergence in `f32` where the first distribution's
/// concentrations are far below the second's larger one, against the same
/// divergence in `f64` at the same inputs (whose forms `beta_kl` in
/// `mpmath_reference.json` checks there): each value and slope that `f32`
/// holds within 1e-5 of the `f64` one (or of `f32`'s smallest normal
/// number), the others the infinity of their sign. The `f32` formula kept
/// taking these positions by parts, which the `f64` divergence leaves to
/// another form there: the slope of `KL(Beta(1e-10, 1e-30) || Beta(1e20,
/// 1e10))` in `1e20` came out -9.5e-7 for -3.4e-19.
#[test]
fn beta_divergence_of_small_concentrations_beside_a_large_one_matches_f64() {
    fn kl<F: Element>([a1, b1, a2, b2]: [Var<'_, F>; 4]) -> Result<Var<'_, F>> {
        kl_divergence(&Beta::new(a1, b1)?, &Beta::new(a2, b2)?)
    }
    for inputs in [
        [1e-10, 1e-30, 1e20, 1e10],
        [1e-30, 1e-10, 1e10, 1e20],
        [1e-40, 1e-10, 1e10, 1e20],
        [0.5, 2.0, 3.0, 5000.0],
    ] {
        let inputs = inputs.map(|x: f64| x as f32 as f64);
        let (v32, g32) = value_and_slopes::<f32, 4>(inputs, kl::<f32>);
        let (v64, g64) = value_and_slopes::<f64, 4>(inputs, kl::<f64>);
        let slopes = g32.into_iter().zip(g64).map(|(a, b)| ("slope", a, b));
        for (what, a, b) in [("value", v32, v64)].into_iter().chain(slopes) {
            let ok = match b.abs() < f64::from(f32::MAX) {
                true => (a - b).abs() <= 1e-5 * b.abs() + f64::from(f32::MIN_POSITIVE),
                false => a == b.signum() * f64::INFINITY,
            };
            assert!(ok, "{inputs:?}: {what} {a:e} in f32, {b:e} in f64");
        }
    }
}

/// The location-scale log-densities and the Normal and log-normal
/// divergences where `x - loc` (`loc_q - loc_p`) overflows `f32` but `(x -
/// loc) / scale` does not: at `x = 3e38`, `loc = -3e38`, `scale = 1e37`
/// the Normal, Laplace and Gumbel log-densities were `-inf` (they are
/// -1886, -145.9 and -145.2) with infinite slopes, and the Normal
/// divergence between those locations at scales 1e37 `+inf` (1800).
/// Each density through the op's three paths: single
/// parameters with a value that needs a slope, per-value parameters, and
/// single parameters with a constant tensor of values (its slopes summed).
#[test]
fn location_differences_beyond_f32_stay_finite() {
    fn paths<
        D: for<'t> Fn(Var<'t, f32>, Var<'t, f32>) -> Result<Box<dyn Distribution<'t, f32> + 't>>,
    >(
        what: &str,
        (m, s, x): (f64, f64, f64),
        build: D,
        (want, want_slopes): (f64, [f64; 3]),
    ) {
        let close = |a: f32, b: f64, slack: f64| (f64::from(a) - b).abs() <= 1e-6 * b.abs() + slack;
        let tiny = f64::from(f32::MIN_POSITIVE);
        for per_value in [false, true] {
            let tape = Tape::<f32>::new();
            let shape: &[usize] = if per_value { &[2] } else { &[] };
            let full = |v: f64| Tensor::full(shape, v as f32);
            let (loc, scale) = (tape.var(full(m)), tape.var(full(s)));
            let x = tape.constant(Tensor::full(&[2], x as f32));
            let y = build(loc, scale).unwrap().log_prob(x).unwrap();
            assert!(
                y.value().data().iter().all(|&v| close(v, want, 0.0)),
                "{what} {per_value}: {:?} vs {want:e}",
                y.value().data()
            );
            let g = y.sum().backward().unwrap();
            let times = if per_value { 1.0 } else { 2.0 };
            for (p, w) in [(loc, want_slopes[0]), (scale, want_slopes[1])] {
                let got = g.get(p).unwrap();
                assert!(
                    got.data().iter().all(|&v| close(v, times * w, tiny)),
                    "{what} {per_value}: {:?} vs {w:e}",
                    got.data()
                );
            }
        }
    }
    // a family's log-density through the three paths (`paths`) and
    // against its `f64` value with a value that needs a slope
    macro_rules! density {
        ($family:ident, $inputs:expr) => {{
            let inputs: [f64; 3] = $inputs.map(|v: f64| v as f32 as f64);
            let want =
                value_and_slopes::<f64, 3>(inputs, |[m, s, x]| $family::new(m, s)?.log_prob(x));
            let what = stringify!($family);
            paths(
                what,
                (inputs[0], inputs[1], inputs[2]),
                |m, s| Ok(Box::new($family::new(m, s)?)),
                want,
            );
            f32_vs_f64!(what, inputs, 1e-6, |[m, s, x]| $family::new(m, s)?
                .log_prob(x));
        }};
    }
    for (m, s, x) in [
        (-3e38, 1e37, 3e38),
        (3e38, 1e37, -3e38),
        (-3e38, 1e30, 3e38),
    ] {
        density!(Normal, [m, s, x]);
        density!(Laplace, [m, s, x]);
        f32_vs_f64!("Normal divergence", [m, s, x, 1e37], 1e-6, |[
            m1,
            s1,
            m2,
            s2,
        ]| {
            kl_divergence(&Normal::new(m1, s1)?, &Normal::new(m2, s2)?)
        });
        f32_vs_f64!("log-normal divergence", [m, s, x, 1e37], 1e-6, |[
            m1,
            s1,
            m2,
            s2,
        ]| {
            kl_divergence(&LogNormal::new(m1, s1)?, &LogNormal::new(m2, s2)?)
        });
    }
    // the Gumbel density is finite only above its location there (below
    // it, `e^-z` overflows with the density)
    density!(Gumbel, [-3e38, 1e37, 3e38]);
}

/// The Weibull entropy's slopes in `f64` where `scale / concentration`
/// is below the normal floats: `∂k = γ/k² - 1/k` came out `-inf` at `k =
/// 1e20`, `λ = 1e-300` (through `ln` of a subnormal quotient).
#[test]
fn weibull_entropy_slopes_where_the_quotient_is_subnormal() {
    let (k, scale) = (1e20, 1e-300);
    let (value, [dk, ds]) =
        value_and_slopes::<f64, 2>([k, scale], |[k, s]| Weibull::new(k, s)?.entropy());
    let euler = 0.577_215_664_901_532_9;
    let want = euler * (1.0 - 1.0 / k) + (scale.ln() - k.ln()) + 1.0;
    assert!(
        (value - want).abs() <= 1e-14 * want.abs(),
        "{value:e} vs {want:e}"
    );
    let want_k = euler / (k * k) - 1.0 / k;
    assert!(
        (dk - want_k).abs() <= 1e-14 * want_k.abs(),
        "{dk:e} vs {want_k:e}"
    );
    assert!((ds - 1.0 / scale).abs() <= 1e-14 / scale, "{ds:e}");
}

/// The inverse Gamma entropy in `f32` is the `f64` one rounded once: its
/// two parts cancel (1.92 and 1.85 at `a = 3`, `b = 1`, for 0.00201), and
/// in `f32` arithmetic it was 240 ulp off there. Its variance takes the
/// square of neither the scale nor the mean, which overflowed in `f32` at
/// `a = 1e10`, `b = 1e30` (`+inf` for 1e30).
#[test]
fn inverse_gamma_entropy_and_variance_in_f32() {
    for (a, b) in [(3.0, 1.0), (2.5, 0.3), (40.0, 7.0)] {
        let (a, b) = (a as f32 as f64, b as f32 as f64);
        let entropy = |tape: &Tape<f64>| {
            InverseGamma::new(tape.scalar(a), tape.scalar(b))
                .unwrap()
                .entropy()
                .unwrap()
                .item()
                .unwrap()
        };
        let want = entropy(&Tape::new()) as f32;
        let tape = Tape::<f32>::new();
        let got = InverseGamma::new(tape.scalar(a as f32), tape.scalar(b as f32))
            .unwrap()
            .entropy()
            .unwrap()
            .item()
            .unwrap();
        // within an ulp of the f64 value rounded
        let ulp = f32::EPSILON * want.abs();
        assert!((got - want).abs() <= ulp, "({a}, {b}): {got:e} vs {want:e}");
    }
    f32_vs_f64!("inverse Gamma variance", [1e10, 1e30], 1e-6, |[a, b]| {
        InverseGamma::new(a, b)?.variance()
    });
}

/// `f32` entropies and means that sum terms larger than themselves (near
/// a root, an entropy `ln σ + c` or a Gumbel mean `loc + γ scale`), or
/// take the exponential of a rounded logarithm (a Weibull or log-normal
/// mean of 1e34), are the `f64` value rounded once, within an ulp, with
/// their slopes: at each of these points the `f32` evaluation was 11 to
/// 6430 ulp off (the Weibull entropy -2.1219e-4 for -2.1210e-4 at `k =
/// 10`, `λ = 2.19`; the Gumbel mean 1.41954e-3 for 1.41947e-3 at -2,
/// 3.467).
#[test]
fn entropies_and_means_that_cancel_are_rounded_once_in_f32() {
    let ulp = 1.2e-7;
    f32_vs_f64!("normal entropy", [0.239_883_29], ulp, |[s]| {
        Normal::new(s.tape().scalar(0.0), s)?.entropy()
    });
    f32_vs_f64!("half-normal entropy", [0.478_630_1], ulp, |[s]| {
        HalfNormal::new(s)?.entropy()
    });
    f32_vs_f64!("Laplace entropy", [0.181_970_09], ulp, |[s]| {
        Laplace::new(s.tape().scalar(0.0), s)?.entropy()
    });
    f32_vs_f64!("exponential entropy", [2.754_228_6], ulp, |[r]| {
        Exponential::new(r)?.entropy()
    });
    f32_vs_f64!("Cauchy entropy", [0.079_432_82], ulp, |[s]| {
        Cauchy::new(s.tape().scalar(0.0), s)?.entropy()
    });
    f32_vs_f64!("half-Cauchy entropy", [0.158_489_32], ulp, |[s]| {
        HalfCauchy::new(s)?.entropy()
    });
    f32_vs_f64!("Gumbel entropy", [0.199_526_24], ulp, |[s]| {
        Gumbel::new(s.tape().scalar(0.0), s)?.entropy()
    });
    f32_vs_f64!("Gumbel mean", [-2.0, 3.467_368_6], ulp, |[m, s]| {
        Gumbel::new(m, s)?.mean()
    });
    f32_vs_f64!("log-normal entropy", [1.5, 0.052_480_746], ulp, |[m, s]| {
        LogNormal::new(m, s)?.entropy()
    });
    f32_vs_f64!("log-normal mean", [1.5, 12.589_254], ulp, |[m, s]| {
        LogNormal::new(m, s)?.mean()
    });
    f32_vs_f64!("Weibull entropy", [10.0, 2.187_761_5], ulp, |[k, s]| {
        Weibull::new(k, s)?.entropy()
    });
    f32_vs_f64!("Weibull mean", [0.031_622_775, 1.0], ulp, |[k, s]| {
        Weibull::new(k, s)?.mean()
    });
    f32_vs_f64!("Pareto entropy", [0.3, 0.003_981_071_5], ulp, |[a, m]| {
        Pareto::new(a, m)?.entropy()
    });
    f32_vs_f64!("Kumaraswamy entropy", [0.954_992_6, 1.0], ulp, |[a, b]| {
        Kumaraswamy::new(a, b)?.entropy()
    });
    f32_vs_f64!("Student-t entropy", [10.0, 0.218_776_17], ulp, |[df, s]| {
        StudentT::new(df, s.tape().scalar(0.0), s)?.entropy()
    });
}

/// A Bernoulli or geometric distribution built from probabilities keeps
/// them: its mean is the probability itself (bit for bit), and its mass,
/// entropy, variance and divergence come from it: in `f32` within four
/// ulp of the `f64` value, with their slopes (whose two parts may cancel:
/// 1/p and -3/(1 - p) in the geometric log-mass of 3 at p = 0.3). Through the log-odds (rounded with an error of
/// about `|l| ε`, a relative error of `p`) they were up to 14 ulp off
/// (the Bernoulli mean 1.4791096e-5 for 1.4791084e-5), and the
/// divergences between near-equal distributions up to 137 ulp.
#[test]
fn distributions_built_from_probabilities_keep_them() {
    for p in [0.3, 1.479_108_4e-5, 2.884_031_6e-4, 0.999] {
        let tape = Tape::<f32>::new();
        let probs = tape.scalar(p as f32);
        assert_eq!(
            Bernoulli::from_probs(probs)
                .unwrap()
                .mean()
                .unwrap()
                .item()
                .unwrap(),
            p as f32
        );
        let geometric = Geometric::from_probs(probs).unwrap();
        assert_eq!(geometric.probs().item().unwrap(), p as f32);
        let tape = Tape::<f64>::new();
        let probs = tape.scalar(p);
        assert_eq!(
            Bernoulli::from_probs(probs)
                .unwrap()
                .mean()
                .unwrap()
                .item()
                .unwrap(),
            p
        );
    }
    let four_ulp = 4.8e-7;
    for p in [1.479_108_4e-5, 2.884_031_6e-4, 0.3] {
        f32_vs_f64!("Bernoulli log-mass of 0", [p], four_ulp, |[p]| {
            Bernoulli::from_probs(p)?.log_prob(p.tape().scalar(0.0))
        });
        f32_vs_f64!("Bernoulli log-mass of 1", [p], four_ulp, |[p]| {
            Bernoulli::from_probs(p)?.log_prob(p.tape().scalar(1.0))
        });
        f32_vs_f64!("Bernoulli entropy", [p], four_ulp, |[p]| {
            Bernoulli::from_probs(p)?.entropy()
        });
        f32_vs_f64!("Bernoulli variance", [p], four_ulp, |[p]| {
            Bernoulli::from_probs(p)?.variance()
        });
        f32_vs_f64!("geometric log-mass of 3", [p], four_ulp, |[p]| {
            Geometric::from_probs(p)?.log_prob(p.tape().scalar(3.0))
        });
        f32_vs_f64!("geometric entropy", [p], four_ulp, |[p]| {
            Geometric::from_probs(p)?.entropy()
        });
        f32_vs_f64!("geometric mean", [p], four_ulp, |[p]| {
            Geometric::from_probs(p)?.mean()
        });
        f32_vs_f64!("geometric variance", [p], four_ulp, |[p]| {
            Geometric::from_probs(p)?.variance()
        });
        let near = p * 0.7;
        f32_vs_f64!("Bernoulli divergence", [p, near], four_ulp, |[p, q]| {
            kl_divergence(&Bernoulli::from_probs(p)?, &Bernoulli::from_probs(q)?)
        });
        f32_vs_f64!("geometric divergence", [p, near], four_ulp, |[p, q]| {
            kl_divergence(&Geometric::from_probs(p)?, &Geometric::from_probs(q)?)
        });
    }
}

/// A divergence between a Bernoulli, geometric or binomial distribution
/// built from probabilities and one built from logits, either way round:
/// in `f32` within four ulp of the `f64` value, with its slopes. The side
/// built from probabilities went through its rounded log-odds: the
/// Bernoulli divergence at `p = 1.4791084e-5` against logits -11.48 was 69
/// ulp off (8.382967e-7 for 8.382928e-7).
#[test]
fn divergences_between_probabilities_and_logits_keep_them() {
    let four_ulp = 4.8e-7;
    for p in [1.479_108_4e-5, 2.884_031_6e-4, 0.3, 0.999] {
        // the logits of a probability near p (0.7 p where that is below 1)
        let near: f64 = if p < 0.9 { p * 0.7 } else { 0.995 };
        let l = near.ln() - (-near).ln_1p();
        f32_vs_f64!(
            "Bernoulli, probabilities first",
            [p, l],
            four_ulp,
            |[p, l]| { kl_divergence(&Bernoulli::from_probs(p)?, &Bernoulli::from_logits(l)?) }
        );
        f32_vs_f64!("Bernoulli, logits first", [l, p], four_ulp, |[l, p]| {
            kl_divergence(&Bernoulli::from_logits(l)?, &Bernoulli::from_probs(p)?)
        });
        f32_vs_f64!(
            "geometric, probabilities first",
            [p, l],
            four_ulp,
            |[p, l]| { kl_divergence(&Geometric::from_probs(p)?, &Geometric::from_logits(l)?) }
        );
        f32_vs_f64!("geometric, logits first", [l, p], four_ulp, |[l, p]| {
            kl_divergence(&Geometric::from_logits(l)?, &Geometric::from_probs(p)?)
        });
        f32_vs_f64!(
            "binomial, probabilities first",
            [p, l],
            four_ulp,
            |[p, l]| {
                let n = p.tape().scalar(8.0);
                kl_divergence(&Binomial::from_probs(n, p)?, &Binomial::from_logits(n, l)?)
            }
        );
    }
}

/// A binomial or negative binomial distribution built from probabilities
/// keeps them: the binomial mean is `n p` (bit for bit, `n` a power of
/// two), and the binomial variance and divergence and the negative
/// binomial mean and variance come from `p`: in `f32` within four ulp of
/// the `f64` value, with their slopes. Through the rounded log-odds they
/// were up to 14 ulp off at `p = 1.4791084e-5` (the binomial variance
/// 1.1832702e-4 for 1.1832692e-4; the negative binomial mean 8 ulp).
#[test]
fn counts_built_from_probabilities_keep_them() {
    for p in [0.3, 1.479_108_4e-5, 2.884_031_6e-4, 0.999] {
        let tape = Tape::<f32>::new();
        let (n, probs) = (tape.scalar(8.0), tape.scalar(p as f32));
        let binomial = Binomial::from_probs(n, probs).unwrap();
        assert_eq!(binomial.mean().unwrap().item().unwrap(), 8.0 * p as f32);
        assert_eq!(binomial.probs().item().unwrap(), p as f32);
        let negative = NegativeBinomial::from_probs(n, probs).unwrap();
        assert_eq!(negative.probs().item().unwrap(), p as f32);
    }
    let four_ulp = 4.8e-7;
    for p in [1.479_108_4e-5, 2.884_031_6e-4, 0.3, 0.999] {
        f32_vs_f64!("binomial variance", [p], four_ulp, |[p]| {
            Binomial::from_probs(p.tape().scalar(8.0), p)?.variance()
        });
        f32_vs_f64!("negative binomial mean", [p], four_ulp, |[p]| {
            NegativeBinomial::from_probs(p.tape().scalar(5.5), p)?.mean()
        });
        f32_vs_f64!("negative binomial variance", [p], four_ulp, |[p]| {
            NegativeBinomial::from_probs(p.tape().scalar(5.5), p)?.variance()
        });
        f32_vs_f64!("binomial divergence", [p, p * 0.7], four_ulp, |[p, q]| {
            let n = p.tape().scalar(8.0);
            kl_divergence(&Binomial::from_probs(n, p)?, &Binomial::from_probs(n, q)?)
        });
    }
}

/// The Student-t variance where it leaves the floats (`3 s²` with a scale
/// of 1e30 in `f32`, 1e300 in `f64`): `+inf`, and its slope in `ν`, `-2
/// s² / (ν - 2)²`, `-inf` beyond them (it was NaN: the two partials of `ν
/// / (ν - 2)` met as `inf - inf`); the slope in the scale, `2 s ν / (ν -
/// 2)`, stays finite. With `ν` as large as the scale the slope in `ν` is
/// -2 (it was NaN: `s²` overflowed and `2 / (ν - 2)²` underflowed).
#[test]
fn student_t_variance_beyond_the_floats_has_no_nan_slope() {
    fn check<F: Element>(scale: f64) {
        let (value, [df, s]) = value_and_slopes::<F, 2>([3.0, scale], |[df, s]| {
            StudentT::new(df, s.tape().scalar(F::zero()), s)?.variance()
        });
        assert_eq!(value, f64::INFINITY);
        assert_eq!(df, f64::NEG_INFINITY);
        assert!((s / (6.0 * scale) - 1.0).abs() < 1e-6, "{s:e}");
    }
    check::<f32>(1e30);
    check::<f64>(1e300);
    // ν as large as the scale: the slope in ν, -2 s² / (ν - 2)², is -2
    // (it was NaN: s² overflowed and 2 / (ν - 2)² underflowed)
    fn large_df<F: Element>(scale: f64) {
        let (value, [df, s]) = value_and_slopes::<F, 2>([scale, scale], |[df, s]| {
            StudentT::new(df, s.tape().scalar(F::zero()), s)?.variance()
        });
        assert_eq!(value, f64::INFINITY);
        assert!((df + 2.0).abs() < 1e-5, "{df:e}");
        assert!((s / (2.0 * scale) - 1.0).abs() < 1e-6, "{s:e}");
    }
    large_df::<f32>(1e30);
    large_df::<f64>(1e300);
}

/// A value outside the support gets `-inf` with slopes of 0 in every
/// parameter, even where the density at the stand-in point that
/// `on_support` evaluates there overflows: the `f32` Weibull log-density
/// at 0 and at `+inf` with a concentration of 1000 and a scale of 1e-30
/// had NaN slopes in both parameters (0 times the NaN partials of the
/// density at 1, where `(x / λ)^k` overflows).
/// Single parameters and a parameter per value (the gradient summed, or
/// passed on value by value) alike.
#[test]
fn outside_the_support_the_slopes_are_zero_where_the_stand_in_overflows() {
    for per_value in [false, true] {
        let tape = Tape::<f32>::new();
        let param = |v: f32| match per_value {
            false => tape.var(Tensor::scalar(v)),
            true => tape.var(Tensor::vector(&[v, v])),
        };
        let (k, s) = (param(1000.0), param(1e-30));
        let x = tape.constant(Tensor::vector(&[0.0, f32::INFINITY]));
        let lp = Weibull::new(k, s).unwrap().log_prob(x).unwrap();
        assert!(lp.value().data().iter().all(|&v| v == f32::NEG_INFINITY));
        let g = lp.sum().backward().unwrap();
        for p in [k, s] {
            let slopes = g.get(p).unwrap().data().to_vec();
            assert!(slopes.iter().all(|&d| d == 0.0), "{per_value}: {slopes:?}");
        }
    }
}
