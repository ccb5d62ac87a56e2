//! Discrete latents: the Concrete relaxations, the score-function
//! estimator with its baselines, and the statistical gradient check of
//! every stochastic gradient the crate ships.

use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck, stat_gradient_report};
use bayesgrad::bayes::score::{Baseline, MovingAverage, ScoreSample};
use bayesgrad::distributions::{expectation_enumerated, expectation_quadrature};
use bayesgrad::layers::{Conv2dVariational, DenseVariational, Estimator};
use bayesgrad::prelude::*;

fn gc<Fun>(f: Fun, inputs: &[Tensor<f64>])
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    gradcheck(f, inputs, &GradCheck::default()).unwrap();
}

#[test]
fn relaxed_log_probs_gradcheck_in_every_argument() {
    gc(
        |_, v| RelaxedBernoulli::new(v[0], v[1])?.log_prob(v[2]),
        &[
            Tensor::vector(&[0.4, 1.3]),
            Tensor::vector(&[0.7, -1.2]),
            Tensor::vector(&[0.2, 0.9]),
        ],
    );
    // the value stays on the simplex: it is softmax(z), checked through z
    gc(
        |_, v| RelaxedOneHotCategorical::new(v[0], v[1])?.log_prob(v[2].softmax(1)?),
        &[
            Tensor::vector(&[0.6, 1.7]),
            Tensor::from_vec(vec![0.3, -1.0, 0.5, 1.0, 0.0, -0.4], &[2, 3]).unwrap(),
            Tensor::from_vec(vec![0.2, 1.5, -0.3, -1.0, 0.1, 2.8], &[2, 3]).unwrap(),
        ],
    );
}

#[test]
fn relaxed_rsamples_gradcheck_in_temperature_and_logits() {
    gc(
        |_, v| {
            let mut rng = StdRng::seed_from_u64(4);
            RelaxedBernoulli::new(v[0], v[1])?.rsample_n(Some(3), &mut rng)
        },
        &[Tensor::scalar(0.7), Tensor::vector(&[0.5, -2.0])],
    );
    gc(
        |_, v| {
            let mut rng = StdRng::seed_from_u64(5);
            RelaxedOneHotCategorical::new(v[0], v[1])?.rsample_n(Some(2), &mut rng)
        },
        &[Tensor::scalar(0.8), Tensor::vector(&[0.5, -2.0, 1.0, 0.1])],
    );
}

/// The straight-through draw thresholds `(logits + noise) / t`, which is an
/// exact Bernoulli (Gumbel-max: Categorical) draw at any temperature, and
/// backpropagates the relaxed draw's gradient.
#[test]
fn straight_through_draws_are_exact_discrete_draws_with_relaxed_gradients() {
    let n = 20_000;
    let tape = Tape::<f64>::new();
    let logits = tape.var(Tensor::vector(&[0.8, -1.5, 0.0]));
    let rb = RelaxedBernoulli::new(tape.scalar(2.0), logits).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut ones = [0.0; 3];
    for _ in 0..n {
        let b = rb.rsample_straight_through(&mut rng).unwrap().value();
        for (o, &x) in ones.iter_mut().zip(b.data()) {
            assert!(x == 0.0 || x == 1.0);
            *o += x;
        }
    }
    for (o, l) in ones.iter().zip([0.8f64, -1.5, 0.0]) {
        let p = 1.0 / (1.0 + (-l).exp());
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((o / n as f64 - p).abs() < 4.0 * se, "{o} vs {p}");
    }
    let rc = RelaxedOneHotCategorical::new(tape.scalar(3.0), logits).unwrap();
    let mut counts = [0.0; 3];
    for _ in 0..n {
        let y = rc.rsample_straight_through(&mut rng).unwrap().value();
        assert_eq!(y.data().iter().sum::<f64>(), 1.0);
        for (c, &x) in counts.iter_mut().zip(y.data()) {
            *c += x;
        }
    }
    let z: f64 = [0.8f64, -1.5, 0.0].iter().map(|l| l.exp()).sum();
    for (c, l) in counts.iter().zip([0.8f64, -1.5, 0.0]) {
        let p = l.exp() / z;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((c / n as f64 - p).abs() < 4.0 * se, "{c} vs {p}");
    }
    // backward: the relaxed draw's gradient, unchanged
    let w = Tensor::vector(&[1.0, 2.0, 3.0]);
    let hard = rc
        .rsample_straight_through(&mut StdRng::seed_from_u64(9))
        .unwrap();
    let soft = rc.rsample(&mut StdRng::seed_from_u64(9)).unwrap();
    let g_hard = (hard * w.clone()).sum().backward().unwrap();
    let g_soft = (soft * w).sum().backward().unwrap();
    assert_eq!(g_hard.get(logits), g_soft.get(logits));
}

#[test]
fn relaxations_refuse_bad_parameters_and_values_by_name() {
    let tape = Tape::<f64>::new();
    let l = tape.var(Tensor::vector(&[0.1, 0.2]));
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = RelaxedBernoulli::new(tape.scalar(t), l).err().unwrap();
        assert!(e.to_string().contains("temperature"), "{e}");
        let e = RelaxedOneHotCategorical::new(tape.scalar(t), l)
            .err()
            .unwrap();
        assert!(e.to_string().contains("temperature"), "{e}");
    }
    let bad = tape.var(Tensor::vector(&[0.1, f64::NAN]));
    let e = RelaxedBernoulli::new(tape.scalar(1.0), bad).err().unwrap();
    assert!(e.to_string().contains("logits"), "{e}");
    let e = RelaxedOneHotCategorical::new(tape.scalar(1.0), bad)
        .err()
        .unwrap();
    assert!(e.to_string().contains("logits"), "{e}");
    let one_class = tape.var(Tensor::vector(&[0.3]));
    assert!(RelaxedOneHotCategorical::new(tape.scalar(1.0), one_class).is_err());
    let rb = RelaxedBernoulli::new(tape.scalar(0.5), l).unwrap();
    for x in [0.0, 1.0, -0.1, f64::NAN] {
        let e = rb.log_prob(tape.constant(Tensor::vector(&[0.5, x])));
        assert!(e.is_err(), "x = {x}");
    }
    let rc = RelaxedOneHotCategorical::new(tape.scalar(0.5), l).unwrap();
    for x in [[0.5, 0.6], [1.0, 0.0], [0.2, 0.2]] {
        let e = rc
            .log_prob(tape.constant(Tensor::vector(&x)))
            .err()
            .unwrap();
        assert!(e.to_string().contains("RelaxedOneHotCategorical"), "{e}");
    }
    let other = Tape::<f64>::new();
    let e = rb.log_prob(other.constant(Tensor::vector(&[0.5, 0.5])));
    assert!(matches!(e, Err(Error::ForeignTape { .. })));
}

/// Relaxed draws at a low temperature land near the vertices, and their
/// log-density and gradients stay finite: also where the sigmoid or the
/// softmax rounds to exactly 0 or 1 (at 10⁻³ in f64, 10⁻² in f32), which
/// `rsample` moves to the nearest values inside the support.
#[test]
fn relaxed_log_prob_of_own_draws_is_finite() {
    fn check<F: Element>(temperature: f64) {
        let tape = Tape::<F>::new();
        let l = tape.var(Tensor::from_fn(&[3], |i| F::lit([0.4, -0.3, 1.2][i])));
        let t = tape.scalar(F::lit(temperature));
        let rc = RelaxedOneHotCategorical::new(t, l).unwrap();
        let rb = RelaxedBernoulli::new(t, l).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let finite = |v: Var<'_, F>| v.value().data().iter().all(|x| x.is_finite());
        for _ in 0..200 {
            let one_hot = rc.rsample(&mut rng).unwrap();
            let binary = rb.rsample(&mut rng).unwrap();
            for (y, lp) in [
                (one_hot, rc.log_prob(one_hot)),
                (binary, rb.log_prob(binary)),
            ] {
                let lp = lp.unwrap_or_else(|e| panic!("temperature {temperature}: {e}"));
                assert!(finite(lp), "temperature {temperature}");
                let g = y.sum().backward().unwrap();
                assert!(g.get(l).unwrap().data().iter().all(|x| x.is_finite()));
            }
        }
    }
    for temperature in [0.3, 1e-3, 1e-8] {
        check::<f64>(temperature);
    }
    for temperature in [0.3, 1e-2] {
        check::<f32>(temperature);
    }
}

/// The log-density of a relaxed draw whose class weights underflow (the
/// logits far apart) has finite gradients, those of finite differences: the
/// weights clamped to the smallest normal number do not depend on the
/// parameters, and `ln`'s gradient there, `g / x`, overflows once the
/// temperature passes about 3, which the clamp used to multiply by 0 into
/// NaN (at a temperature of 10: logits 2e3 apart in `f32`, 2e4 in `f64`).
#[test]
fn relaxed_log_prob_of_draws_with_underflowing_classes_has_its_gradient() {
    fn lp_of_own_draw<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        let rc = RelaxedOneHotCategorical::new(v[0], v[1])?;
        let y = rc.rsample_n(Some(4), &mut StdRng::seed_from_u64(8))?;
        Ok(rc.log_prob(y)?.sum())
    }
    let inputs = |t: f64, spread: f64| {
        let logits = Tensor::vector(&[-spread, 0.0, spread]);
        [Tensor::scalar(t), logits]
    };
    // the draws' outer classes underflow (softmax of ±100 or ±1000)
    gc(|_, v| lp_of_own_draw(v), &inputs(10.0, 1e4));
    gc(|_, v| lp_of_own_draw(v), &inputs(1.0, 1e3));
    let tape = Tape::<f32>::new();
    let t = tape.var(Tensor::scalar(10.0f32));
    let l = tape.var(Tensor::vector(&[-1e3f32, 0.0, 1e3]));
    let g = lp_of_own_draw(&[t, l]).unwrap().backward().unwrap();
    for v in [t, l] {
        assert!(g.get(v).unwrap().data().iter().all(|x| x.is_finite()));
    }
}

fn grads_of(g: &Gradients<f64>, vars: &[Var<'_, f64>]) -> Vec<f64> {
    vars.iter()
        .flat_map(|v| g.get(*v).unwrap().data().to_vec())
        .collect()
}

/// Normal `rsample` against the exact gradient of E[f(x)] by quadrature.
#[test]
fn normal_rsample_gradient_is_unbiased() {
    let (mu, sigma) = (0.3, 0.8);
    fn f(x: Var<'_, f64>) -> Result<Var<'_, f64>> {
        (x.tanh() * x.square() + x.softplus()).sum_axis(0, false)
    }
    let exact = {
        let tape = Tape::new();
        let v = [
            tape.var(Tensor::scalar(mu)),
            tape.var(Tensor::scalar(sigma)),
        ];
        let q = Normal::new(v[0], v[1]).unwrap();
        let e = expectation_quadrature(&q, -12.0, 12.0, 4001, |x| {
            Ok(x.tanh() * x.square() + x.softplus())
        })
        .unwrap();
        grads_of(&e.backward().unwrap(), &v)
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let v = [
                tape.var(Tensor::scalar(mu)),
                tape.var(Tensor::scalar(sigma)),
            ];
            let x = Normal::new(v[0], v[1])?.rsample_n(Some(1), rng)?;
            Ok(grads_of(&f(x)?.sum().backward()?, &v))
        },
        &exact,
        &StatGradCheck::default(),
        &mut StdRng::seed_from_u64(0),
    )
    .unwrap();
}

/// E[Σ (x ⊛ W - t)²] = Σ (x ⊛ μ - t)² + Σ x² ⊛ σ² for W ~ N(μ, σ²)
/// elementwise: the exact objective whose gradient every estimator of a
/// variational layer must match on average.
fn check_layer_estimator<M: LinearMap<f64>, E: Estimator>(
    layer: &bayesgrad::layers::Variational<f64, M, E>,
    store: &ParamStore<f64>,
    x: &Tensor<f64>,
    samples: usize,
) {
    let (loc, rho) = layer.kernel_params();
    let target = {
        let tape = Tape::new();
        let y = layer
            .map()
            .apply(tape.constant(x.clone()), tape.constant(store.value(loc)));
        y.unwrap().value().map(|v| 0.5 - 0.3 * v)
    };
    let exact = {
        let tape = Tape::new();
        let (m, s) = (tape.param(store, loc), tape.param(store, rho));
        let xv = tape.constant(x.clone());
        let mean = layer.map().apply(xv, m).unwrap() - target.clone();
        let var = layer.map().apply(xv.square(), s.square()).unwrap();
        let e = mean.square().sum() + var.sum();
        let g = e.backward().unwrap();
        [loc, rho]
            .iter()
            .flat_map(|p| g.param(*p).unwrap().data().to_vec())
            .collect::<Vec<_>>()
    };
    let report = stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, store, rng);
            let y = layer.forward(&mut cx, tape.constant(x.clone()))?;
            let g = (y - target.clone()).square().sum().backward()?;
            Ok([loc, rho]
                .iter()
                .flat_map(|p| g.param(*p).unwrap().data().to_vec())
                .collect())
        },
        &exact,
        &StatGradCheck {
            samples,
            ..StatGradCheck::default()
        },
        &mut StdRng::seed_from_u64(11),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", E::NAME));
    assert!(report.mean_variance() > 0.0, "{}", E::NAME);
}

fn layer_config() -> VariationalConfig<f64> {
    VariationalConfig {
        rho_init: (-0.5, 0.3),
        loc_init: (0.0, 0.5),
        bias: BiasMode::None,
        ..VariationalConfig::default()
    }
}

fn dense_estimator<E: Estimator>() {
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(3);
    let layer = DenseVariational::<f64, E>::with_config(
        &mut store,
        E::NAME,
        3,
        2,
        layer_config(),
        &mut rng,
    )
    .unwrap();
    let x = Tensor::from_fn(&[4, 3], |i| ((i as f64) * 0.9).sin());
    check_layer_estimator(&layer, &store, &x, 3000);
}

fn conv_estimator<E: Estimator>() {
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(4);
    let layer = Conv2dVariational::<f64, E>::with_config(
        &mut store,
        E::NAME,
        Conv2dMap::new(2, 2, 2),
        layer_config(),
        &mut rng,
    )
    .unwrap();
    let x = Tensor::from_fn(&[2, 3, 3, 2], |i| ((i as f64) * 0.61).cos());
    check_layer_estimator(&layer, &store, &x, 3000);
}

#[test]
fn dense_estimators_are_unbiased() {
    use bayesgrad::layers::{Flipout, LocalReparameterization, Reparameterization};
    dense_estimator::<Reparameterization>();
    dense_estimator::<Flipout>();
    dense_estimator::<LocalReparameterization>();
}

#[test]
fn conv_estimators_are_unbiased() {
    use bayesgrad::layers::{Flipout, LocalReparameterization, Reparameterization};
    conv_estimator::<Reparameterization>();
    conv_estimator::<Flipout>();
    conv_estimator::<LocalReparameterization>();
}

/// The exact gradient of E[(b - 0.499)²] w.r.t. the logits, b ~ Bernoulli.
fn bernoulli_toy_exact(theta: &[f64]) -> Vec<f64> {
    let tape = Tape::new();
    let t = tape.var(Tensor::vector(theta));
    let q = Bernoulli::from_logits(t).unwrap();
    let n = theta.len();
    let support: Vec<Tensor<f64>> = (0..1usize << n)
        .map(|bits| Tensor::from_fn(&[n], |i| ((bits >> i) & 1) as f64))
        .collect();
    let e = expectation_enumerated(&q, &support, |b| Ok((b - 0.499).square().sum())).unwrap();
    e.backward().unwrap().get(t).unwrap().data().to_vec()
}

#[derive(Clone, Copy, Debug)]
enum Which {
    Plain,
    Average,
    Learned,
    LeaveOneOut,
}

fn bernoulli_toy_estimate(
    theta: &[f64],
    which: Which,
    avg: &mut MovingAverage,
    rng: &mut dyn Rng,
) -> Result<Vec<f64>> {
    let tape = Tape::new();
    let t = tape.var(Tensor::vector(theta));
    let q = Bernoulli::from_logits(t)?;
    let k = match which {
        Which::LeaveOneOut => Some(4),
        _ => None,
    };
    let draw = ScoreSample::draw(&q, k, rng)?;
    let f = (draw.value() - 0.499).square();
    let baseline = match which {
        Which::Plain => Baseline::None,
        Which::Average => Baseline::MovingAverage(avg),
        // computed from theta on purpose: its value enters as a constant,
        // so the estimate stays unbiased
        Which::Learned => Baseline::Learned(t.sigmoid() * 0.02 + 0.24),
        Which::LeaveOneOut => Baseline::LeaveOneOut,
    };
    let s = draw.surrogate(f, baseline)?;
    Ok(s.objective
        .sum()
        .backward()?
        .get(t)
        .unwrap()
        .data()
        .to_vec())
}

#[test]
fn score_function_is_unbiased_with_every_baseline() {
    let theta = [0.4, -1.1];
    let exact = bernoulli_toy_exact(&theta);
    let mut variances = Vec::new();
    for which in [
        Which::Plain,
        Which::Average,
        Which::Learned,
        Which::LeaveOneOut,
    ] {
        let mut avg = MovingAverage::new(0.9).unwrap();
        let report = stat_gradcheck(
            |rng| bernoulli_toy_estimate(&theta, which, &mut avg, rng),
            &exact,
            &StatGradCheck {
                samples: 20_000,
                max_z: 4.0,
            },
            &mut StdRng::seed_from_u64(7),
        )
        .unwrap_or_else(|e| panic!("{which:?}: {e}"));
        variances.push(report.mean_variance());
    }
    // every baseline cuts the variance of plain REINFORCE on this toy by more than 10x
    for (v, which) in variances[1..].iter().zip(["average", "learned", "rloo"]) {
        assert!(*v < variances[0] / 10.0, "{which}: {v} vs {}", variances[0]);
    }
}

/// A check that cannot tell a biased estimator from an unbiased one is
/// worthless: a score term with the wrong sign is caught.
#[test]
fn stat_gradcheck_catches_a_biased_estimator() {
    let theta = [0.4];
    let exact = bernoulli_toy_exact(&theta);
    let r = stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let t = tape.var(Tensor::vector(&theta));
            let draw = ScoreSample::draw(&Bernoulli::from_logits(t)?, Some(4), rng)?;
            let f = (draw.value() - 0.499).square();
            let s = draw.surrogate(-f, Baseline::LeaveOneOut)?;
            Ok(s.objective
                .sum()
                .backward()?
                .get(t)
                .unwrap()
                .data()
                .to_vec())
        },
        &exact,
        &StatGradCheck {
            samples: 20_000,
            max_z: 4.0,
        },
        &mut StdRng::seed_from_u64(1),
    );
    assert!(matches!(r, Err(Error::StatGradCheck { .. })), "{r:?}");
}

#[test]
fn score_function_on_a_ten_class_categorical() {
    let logits: Vec<f64> = (0..10).map(|c| ((c as f64) * 1.3).sin()).collect();
    let value = |c: f64| (c / 9.0 - 0.499).powi(2);
    let exact = {
        let tape = Tape::new();
        let l = tape.var(Tensor::vector(&logits));
        let q = Categorical::from_logits(l).unwrap();
        let support: Vec<_> = (0..10).map(|c| Tensor::scalar(c as f64)).collect();
        let e = expectation_enumerated(&q, &support, |c| Ok((c / 9.0 - 0.499).square())).unwrap();
        e.backward().unwrap().get(l).unwrap().data().to_vec()
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let l = tape.var(Tensor::vector(&logits));
            let draw = ScoreSample::draw(&Categorical::from_logits(l)?, Some(8), rng)?;
            let f = tape.constant(draw.value().value().map(value));
            let s = draw.surrogate(f, Baseline::LeaveOneOut)?;
            Ok(s.objective
                .sum()
                .backward()?
                .get(l)
                .unwrap()
                .data()
                .to_vec())
        },
        &exact,
        &StatGradCheck {
            samples: 5000,
            max_z: 4.0,
        },
        &mut StdRng::seed_from_u64(2),
    )
    .unwrap();
}

/// The relaxed estimator is unbiased for the relaxed objective (exact by
/// quadrature over the logistic noise) and biased for the discrete one:
/// the report shows that bias.
#[test]
fn relaxed_bernoulli_gradient_is_exact_for_the_relaxed_objective_and_its_bias_is_reported() {
    let (theta, temp) = (0.4, 0.5);
    fn f(y: Var<'_, f64>) -> Var<'_, f64> {
        (y - 0.499).square()
    }
    // E over L ~ Logistic(0, 1) of f(sigmoid((theta + L) / temp)), Simpson over L
    let exact_relaxed = {
        let tape = Tape::new();
        let v = [
            tape.var(Tensor::scalar(theta)),
            tape.var(Tensor::scalar(temp)),
        ];
        let n = 8001;
        let (lo, hi) = (-40.0, 40.0);
        let h = (hi - lo) / (n - 1) as f64;
        let nodes = Tensor::from_fn(&[n], |i| lo + h * i as f64);
        let w = Tensor::from_fn(&[n], |i| {
            let c = if i == 0 || i == n - 1 {
                1.0
            } else if i % 2 == 1 {
                4.0
            } else {
                2.0
            };
            let l: f64 = lo + h * i as f64;
            // logistic density e^-l / (1 + e^-l)^2, written without overflow
            let s = 1.0 / (1.0 + (-l.abs()).exp());
            c * h / 3.0 * s * (1.0 - s)
        });
        let y = ((tape.constant(nodes) + v[0]) / v[1]).sigmoid();
        let e = (f(y) * w).sum();
        grads_of(&e.backward().unwrap(), &v)
    };
    let estimate = |rng: &mut dyn Rng| -> Result<Vec<f64>> {
        let tape = Tape::new();
        let v = [
            tape.var(Tensor::scalar(theta)),
            tape.var(Tensor::scalar(temp)),
        ];
        let y = RelaxedBernoulli::new(v[1], v[0])?.rsample(rng)?;
        Ok(grads_of(&f(y).backward()?, &v))
    };
    stat_gradcheck(
        estimate,
        &exact_relaxed,
        &StatGradCheck::default(),
        &mut StdRng::seed_from_u64(3),
    )
    .unwrap();
    let exact_discrete = bernoulli_toy_exact(&[theta]);
    let report = stat_gradient_report(
        |rng| estimate(rng).map(|g| vec![g[0]]),
        &exact_discrete,
        20_000,
        &mut StdRng::seed_from_u64(3),
    )
    .unwrap();
    let c = report.components[0];
    assert!(c.z.abs() > 8.0, "{report}");
    assert!((c.bias() - (exact_relaxed[0] - exact_discrete[0])).abs() < 5.0 * c.std_err);
    assert!(report.to_string().contains("bias"));
}

#[test]
fn relaxed_one_hot_gradient_is_unbiased_for_the_relaxed_objective_in_two_classes() {
    // with two classes, softmax((l + g) / t)_1 = sigmoid((l1 - l0 + L) / t)
    // with L = g1 - g0 ~ Logistic(0, 1): the binary Concrete
    let (l0, l1, temp) = (0.3, -0.5, 0.7);
    fn f(y: Var<'_, f64>) -> Var<'_, f64> {
        (y - 0.3).square()
    }
    let estimate = |rng: &mut dyn Rng| -> Result<Vec<f64>> {
        let tape = Tape::new();
        let l = tape.var(Tensor::vector(&[l0, l1]));
        let y = RelaxedOneHotCategorical::new(tape.scalar(temp), l)?.rsample(rng)?;
        let g = f(y.index(1)?).backward()?;
        Ok(vec![g.get(l).unwrap().data()[1]])
    };
    let reference = |rng: &mut dyn Rng| -> Result<Vec<f64>> {
        let tape = Tape::new();
        let d = tape.var(Tensor::scalar(l1 - l0));
        let y = RelaxedBernoulli::new(tape.scalar(temp), d)?.rsample(rng)?;
        Ok(vec![f(y).backward()?.get(d).unwrap().item()?])
    };
    let r = stat_gradient_report(reference, &[0.0], 20_000, &mut StdRng::seed_from_u64(8)).unwrap();
    stat_gradcheck(
        estimate,
        &[r.components[0].mean],
        &StatGradCheck {
            samples: 20_000,
            max_z: 4.0 * std::f64::consts::SQRT_2,
        },
        &mut StdRng::seed_from_u64(9),
    )
    .unwrap();
}

#[test]
fn score_function_refuses_bad_input_and_modifies_nothing() {
    let tape = Tape::<f64>::new();
    let t = tape.var(Tensor::vector(&[0.2, -0.3]));
    let q = Bernoulli::from_logits(t).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    assert!(ScoreSample::draw(&q, Some(0), &mut rng).is_err());
    let one = ScoreSample::draw(&q, None, &mut rng).unwrap();
    let f = one.value().square();
    let e = one.surrogate(f, Baseline::LeaveOneOut).err().unwrap();
    assert!(e.to_string().contains("at least 2 draws"), "{e}");
    let four = ScoreSample::draw(&q, Some(4), &mut rng).unwrap();
    assert_eq!(four.log_prob().shape(), vec![4, 2]);
    let mut avg = MovingAverage::new(0.5).unwrap();
    // wrong shape of f: nothing modified
    let e = four
        .surrogate(f, Baseline::MovingAverage(&mut avg))
        .err()
        .unwrap();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert_eq!(avg.value(), None);
    let f4 = four.value().square();
    let bad_b = tape.var(Tensor::vector(&[0.1, 0.2, 0.3]));
    let e = four.surrogate(f4, Baseline::Learned(bad_b)).err().unwrap();
    assert!(e.to_string().contains("learned baseline"), "{e}");
    let other = Tape::<f64>::new();
    let foreign = other.constant(Tensor::zeros(&[4, 2]));
    assert!(matches!(
        four.surrogate(foreign, Baseline::None),
        Err(Error::ForeignTape { .. })
    ));
    let nan = tape.constant(Tensor::full(&[4, 2], f64::NAN));
    assert!(
        four.surrogate(nan, Baseline::MovingAverage(&mut avg))
            .is_err()
    );
    assert_eq!(avg.value(), None);
    for d in [1.0, -0.1, f64::NAN] {
        assert!(MovingAverage::new(d).is_err());
    }
    // the objective's value is f itself; the learned baseline's loss is separate
    let b = tape.var(Tensor::vector(&[0.1, 0.2]));
    let s = four.surrogate(f4, Baseline::Learned(b)).unwrap();
    let mean_f = f4.mean_axis(0, false).unwrap().value();
    assert_eq!(s.objective.value(), mean_f);
    let g = s.baseline_loss.unwrap().backward().unwrap();
    assert!(g.get(b).is_some() && g.get(t).is_none());
}

/// A `-inf` logit (how PyTorch and TFP users rule a class out) is refused
/// with the way to do it here; the way it names works: a logit of -1e30
/// gives the class probability 0, no entropy, no draws, finite gradients.
#[test]
fn a_ruled_out_class_is_a_large_negative_logit() -> Result<()> {
    let tape = Tape::<f32>::new();
    let masked = tape.var(Tensor::vector(&[0.3, f32::NEG_INFINITY, 1.0]));
    let errors = [
        Categorical::from_logits(masked).err(),
        Bernoulli::from_logits(masked).err(),
        RelaxedBernoulli::new(tape.scalar(0.5), masked).err(),
        RelaxedOneHotCategorical::new(tape.scalar(0.5), masked).err(),
    ];
    for err in errors {
        let err = err.expect("a -inf logit is refused").to_string();
        assert!(err.contains("-1e30"), "{err}");
    }
    for bad in [f32::INFINITY, f32::NAN] {
        let err = Categorical::from_logits(tape.var(Tensor::vector(&[0.3, bad]))).err();
        let err = err.expect("refused").to_string();
        assert!(
            err.contains("must be finite") && !err.contains("-1e30"),
            "{err}"
        );
    }
    let logits = tape.var(Tensor::vector(&[0.3, -1e30, 1.0]));
    let cat = Categorical::from_logits(logits)?;
    let kept = Categorical::from_logits(tape.var(Tensor::vector(&[0.3, 1.0])))?;
    assert_eq!(cat.probs()?.value().data()[1], 0.0);
    let (h, h_kept) = (cat.entropy()?, kept.entropy()?.item()?);
    assert!(
        (h.item()? - h_kept).abs() <= 1e-6 * h_kept,
        "{} vs {h_kept}",
        h.item()?
    );
    let draws = cat.sample_n(Some(5000), &mut StdRng::seed_from_u64(3))?;
    assert!(draws.data().iter().all(|&c| c != 1.0));
    let g = (h + cat.log_prob_labels(&[2])?.sum()).backward()?;
    let g = g.get(logits).expect("a gradient");
    assert!(
        g.data().iter().all(|v| v.is_finite()) && g.data()[1] == 0.0,
        "{:?}",
        g.data()
    );
    Ok(())
}

/// The VIMCO toy: `q(h) = Π Bernoulli(sigmoid(θ_i))` over two bits, the
/// model `ln p(x, h) = -φ (Σ h - 0.7)²`, `K = 3` draws.
const VIMCO_THETA: [f64; 2] = [0.3, -0.6];
const VIMCO_PHI: f64 = 1.5;
const VIMCO_K: usize = 3;

/// The log weights `ln p(x, h_k) - ln q(h_k)` of draws `h` (`[K, 2]`).
fn vimco_log_weights<'t>(
    h: Var<'t, f64>,
    log_q: Var<'t, f64>,
    phi: Var<'t, f64>,
) -> Result<Var<'t, f64>> {
    let gap = h.sum_axis(1, false)? - 0.7;
    (-gap.square().try_mul(phi)?).try_sub(log_q)
}

/// `∇E[L]` in `(θ, φ)` for the `K`-sample bound `L`, exactly: the bound of
/// every `K`-tuple of codes, weighted by its probability under `q`.
fn vimco_toy_exact() -> Vec<f64> {
    let tape = Tape::new();
    let theta = tape.var(Tensor::vector(&VIMCO_THETA));
    let phi = tape.var(Tensor::scalar(VIMCO_PHI));
    let q = Independent::new(Box::new(Bernoulli::from_logits(theta).unwrap()), 1).unwrap();
    let codes = 4usize;
    let mut total = tape.scalar(0.0);
    for tuple in 0..codes.pow(VIMCO_K as u32) {
        let h = Tensor::from_fn(&[VIMCO_K, 2], |i| {
            let code = tuple / codes.pow((i / 2) as u32) % codes;
            ((code >> (i % 2)) & 1) as f64
        });
        let log_q = q.log_prob(tape.constant(h.clone())).unwrap();
        let f = vimco_log_weights(tape.constant(h), log_q, phi).unwrap();
        let bound = f.logsumexp(0, false).unwrap() - (VIMCO_K as f64).ln();
        total = total + log_q.sum().exp() * bound;
    }
    let grads = total.backward().unwrap();
    let mut out = grads.get(theta).unwrap().data().to_vec();
    out.push(grads.get(phi).unwrap().item().unwrap());
    out
}

/// One estimate of `∇E[L]` in `(θ, φ)`: VIMCO's, or (`vimco` false) the
/// bound's gradient with one score coefficient `L` for every draw
/// (`with_score`), or with none (the pathwise part alone).
/// How [`vimco_toy_estimate`] estimates the bound's gradient.
#[derive(Clone, Copy)]
enum BoundEstimator {
    /// `ScoreSample::vimco`.
    Vimco,
    /// The bound's pathwise gradient plus its score function with the
    /// bound itself as every draw's coefficient (no baseline).
    PlainScore,
    /// The pathwise gradient alone (biased: the draws depend on `q`).
    PathwiseOnly,
}

fn vimco_toy_estimate(estimator: BoundEstimator, rng: &mut dyn Rng) -> Result<Vec<f64>> {
    let tape = Tape::new();
    let theta = tape.var(Tensor::vector(&VIMCO_THETA));
    let phi = tape.var(Tensor::scalar(VIMCO_PHI));
    let q = Independent::new(Box::new(Bernoulli::from_logits(theta)?), 1)?;
    let draw = ScoreSample::draw(&q, Some(VIMCO_K), rng)?;
    let f = vimco_log_weights(draw.value(), draw.log_prob(), phi)?;
    let bound = || Ok::<_, Error>(f.logsumexp(0, false)? - (VIMCO_K as f64).ln());
    let loss = match estimator {
        BoundEstimator::Vimco => draw.vimco(f)?.loss()?,
        BoundEstimator::PlainScore => {
            let bound = bound()?;
            let lp = draw.log_prob();
            -(bound + (lp - lp.detach()).sum() * bound.value().item()?)
        }
        BoundEstimator::PathwiseOnly => -bound()?,
    };
    let grads = loss.backward()?;
    let mut out: Vec<f64> = grads
        .get(theta)
        .unwrap()
        .data()
        .iter()
        .map(|g| -g)
        .collect();
    out.push(-grads.get(phi).unwrap().item()?);
    Ok(out)
}

/// VIMCO's estimate is unbiased for the gradient of the expected K-sample
/// bound in the parameters of `q` and of the model, and has less variance
/// than the same bound's score function without its per-draw baselines.
/// Without the score term the estimate is biased, and the check says so.
#[test]
fn vimco_is_unbiased_for_the_bounds_gradient() {
    let exact = vimco_toy_exact();
    let check = |estimator: BoundEstimator, seed: u64| {
        stat_gradcheck(
            |rng| vimco_toy_estimate(estimator, rng),
            &exact,
            &StatGradCheck {
                samples: 20_000,
                max_z: 4.0,
            },
            &mut StdRng::seed_from_u64(seed),
        )
    };
    let vimco = check(BoundEstimator::Vimco, 11).unwrap();
    let plain = check(BoundEstimator::PlainScore, 12).unwrap();
    for (v, p) in vimco.components[..2].iter().zip(&plain.components) {
        assert!(v.variance < p.variance / 2.0, "{vimco}\n{plain}");
    }
    let pathwise = check(BoundEstimator::PathwiseOnly, 13);
    assert!(
        matches!(pathwise, Err(Error::StatGradCheck { .. })),
        "{pathwise:?}"
    );
}

/// Log weights far below zero, as a likelihood over many pixels gives,
/// keep VIMCO's coefficients and gradient finite in `f32`, and the
/// objective is the negative bound.
#[test]
fn vimco_takes_large_log_weights_in_f32() -> Result<()> {
    let tape = Tape::<f32>::new();
    let theta = tape.var(Tensor::vector(&[0.2f32]));
    let q = Bernoulli::from_logits(theta)?;
    let draw = ScoreSample::draw(&q, Some(4), &mut StdRng::seed_from_u64(5))?;
    let offsets = tape.constant(Tensor::from_vec(
        vec![-1000.0, -1000.5, -2000.0, -1001.0],
        &[4, 1],
    )?);
    let log_weights = offsets - draw.log_prob();
    let s = draw.vimco(log_weights)?;
    let f: Vec<f64> = log_weights
        .value()
        .data()
        .iter()
        .map(|&x| x as f64)
        .collect();
    let m = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bound = m + f.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - 4f64.ln();
    let objective = s.objective.value().data()[0] as f64;
    assert!(
        (objective + bound).abs() <= 1e-6 * bound.abs(),
        "{objective} vs {bound}"
    );
    let g = s.loss()?.backward()?.get(theta).unwrap().data()[0];
    assert!(g.is_finite(), "{g}");
    Ok(())
}

/// Bad input to VIMCO is a named error: one draw or none per element, log
/// weights of another shape, another tape, or not finite.
#[test]
fn vimco_refuses_bad_input() -> Result<()> {
    let tape = Tape::<f64>::new();
    let q = Bernoulli::from_logits(tape.var(Tensor::vector(&[0.1, 0.2])))?;
    let mut rng = StdRng::seed_from_u64(0);
    for samples in [None, Some(1)] {
        let draw = ScoreSample::draw(&q, samples, &mut rng)?;
        let err = draw.vimco(draw.log_prob()).err().unwrap();
        assert!(
            err.to_string().contains("VIMCO needs at least 2 draws"),
            "{err}"
        );
    }
    let draw = ScoreSample::draw(&q, Some(3), &mut rng)?;
    let wrong = tape.constant(Tensor::zeros(&[3]));
    assert!(matches!(
        draw.vimco(wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    let other = Tape::<f64>::new();
    let foreign = other.constant(Tensor::zeros(&[3, 2]));
    assert!(matches!(
        draw.vimco(foreign),
        Err(Error::ForeignTape { .. })
    ));
    let nan = tape.constant(Tensor::from_fn(&[3, 2], |i| {
        if i == 4 { f64::NAN } else { 0.0 }
    }));
    let err = draw.vimco(nan).err().unwrap();
    assert!(
        err.to_string().contains("log weight is NaN at element 4"),
        "{err}"
    );
    Ok(())
}

/// VIMCO over a batch weights each element's scores by that element's own
/// draws: the gradient in each logit is the formula's for its column
/// (pathwise `Σ_k ŵ_k ∂f_k` plus `Σ_k (L - L_-k) ∂ln q_k`), computed here
/// from the draws in plain `f64`, with log weights of very different sizes
/// in the columns.
#[test]
fn vimco_treats_each_batch_element_alone() -> Result<()> {
    const K: usize = 4;
    let logits = [0.4, -1.1, 2.0];
    let offsets = [-3.0, 0.5, -700.0];
    let tape = Tape::new();
    let theta = tape.var(Tensor::vector(&logits));
    let q = Bernoulli::from_logits(theta)?;
    let draw = ScoreSample::draw(&q, Some(K), &mut StdRng::seed_from_u64(9))?;
    let shift = tape.constant(Tensor::from_fn(&[K, 3], |i| {
        offsets[i % 3] * (1.0 + 0.1 * (i / 3) as f64)
    }));
    let log_weights = (draw.value() * 2.0)
        .try_add(shift)?
        .try_sub(draw.log_prob())?;
    let s = draw.vimco(log_weights)?;
    let grad = s.loss()?.backward()?.get(theta).unwrap().data().to_vec();
    let (h, f) = (draw.value().value(), log_weights.value());
    let lse = |x: &[f64]| {
        let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    for c in 0..3 {
        let sigma = 1.0 / (1.0 + (-logits[c]).exp());
        let fc: Vec<f64> = (0..K).map(|k| f.data()[k * 3 + c]).collect();
        let score: Vec<f64> = (0..K).map(|k| h.data()[k * 3 + c] - sigma).collect();
        let bound = lse(&fc);
        let mut want = 0.0;
        for k in 0..K {
            let weight = (fc[k] - bound).exp();
            let mut swapped = fc.clone();
            swapped[k] = (fc.iter().sum::<f64>() - fc[k]) / (K - 1) as f64;
            // d f_k / d logit = -score_k; the loss is minus the bound
            want -= weight * -score[k] + (bound - lse(&swapped)) * score[k];
        }
        assert!(
            (grad[c] - want).abs() <= 1e-12 * want.abs().max(1.0),
            "column {c}: {} vs {want}",
            grad[c]
        );
    }
    Ok(())
}
