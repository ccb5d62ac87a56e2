//! Variational layers: output marginals, Flipout decorrelation, gradchecks,
//! divergence nodes and their KL values, ELBO weighting, bad inputs.

use bayesgrad::Batch;
use bayesgrad::DenseFlipout;
use bayesgrad::layers::DenseVariational;
use bayesgrad::layers::predict::{Predict, predict_classes};
use bayesgrad::layers::{Estimator, Flipout, LocalReparameterization, Reparameterization};
use bayesgrad::prelude::*;

fn wide_posterior() -> VariationalConfig<f64> {
    VariationalConfig {
        loc_init: (0.0, 0.5),
        rho_init: (-1.0, 0.2),
        bias: BiasMode::Variational,
        ..Default::default()
    }
}

/// The posterior mean and standard deviation of a (loc, rho) pair, as stored.
fn posterior(store: &ParamStore<f64>, (loc, rho): (Param, Param)) -> (Tensor<f64>, Tensor<f64>) {
    let tape = Tape::new();
    (
        tape.param(store, loc).value(),
        tape.param(store, rho).value(),
    )
}

/// Runs `passes` forward passes and checks each output's sample mean and
/// variance against the expected Normal marginal (5 standard errors).
fn check_marginals(
    layer: &dyn Module<f64>,
    store: &ParamStore<f64>,
    x: &Tensor<f64>,
    mean: &Tensor<f64>,
    var: &Tensor<f64>,
    passes: usize,
) {
    let mut rng = StdRng::seed_from_u64(2024);
    let mut sum = Tensor::<f64>::zeros(mean.shape());
    let mut sq = Tensor::<f64>::zeros(mean.shape());
    for _ in 0..passes {
        let tape = Tape::new();
        let y = layer
            .forward(
                &mut Forward::new(&tape, store, &mut rng),
                tape.constant(x.clone()),
            )
            .unwrap()
            .value();
        for i in 0..y.len() {
            sum.data_mut()[i] += y.data()[i];
            sq.data_mut()[i] += y.data()[i] * y.data()[i];
        }
    }
    let n = passes as f64;
    for i in 0..mean.len() {
        let m: f64 = sum.data()[i] / n;
        let v: f64 = sq.data()[i] / n - m * m;
        let (em, ev): (f64, f64) = (mean.data()[i], var.data()[i]);
        assert!(
            (m - em).abs() < 5.0 * (ev / n).sqrt(),
            "{}: unit {i} mean {m} vs {em}",
            layer.name()
        );
        assert!(
            (v - ev).abs() < 5.0 * ev * (2.0 / n).sqrt(),
            "{}: unit {i} var {v} vs {ev}",
            layer.name()
        );
    }
}

fn dense_marginals<E: Estimator>() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(1);
    let layer = DenseVariational::<f64, E>::with_config(
        &mut store,
        E::NAME,
        3,
        2,
        wide_posterior(),
        &mut rng,
    )
    .unwrap();
    let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 1.5, 0.3, -0.7], &[2, 3]).unwrap();
    let (loc, sd) = posterior(&store, layer.kernel_params());
    let (bloc, bsd) = posterior(
        &store,
        (
            store
                .get(&format!("{}/bias_posterior_loc", E::NAME))
                .unwrap(),
            store
                .get(&format!("{}/bias_posterior_rho", E::NAME))
                .unwrap(),
        ),
    );
    // mean x·loc + b_loc, variance sum_i x_i^2 sd_ij^2 + sd_b^2
    let mean = x
        .matmul(&loc)
        .unwrap()
        .zip_map(&bloc, "t", |a, b| a + b)
        .unwrap();
    let var = x
        .map(|v| v * v)
        .matmul(&sd.map(|s| s * s))
        .unwrap()
        .zip_map(&bsd, "t", |a, b| a + b * b)
        .unwrap();
    check_marginals(&layer, &store, &x, &mean, &var, 6000);
}

#[test]
fn dense_reparameterization_marginals() {
    dense_marginals::<Reparameterization>();
}

#[test]
fn dense_flipout_marginals() {
    dense_marginals::<Flipout>();
}

#[test]
fn dense_local_reparameterization_marginals() {
    dense_marginals::<LocalReparameterization>();
}

fn conv_marginals<E: Estimator>() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(3);
    let cfg = VariationalConfig {
        bias: BiasMode::Deterministic,
        ..wide_posterior()
    };
    let layer = bayesgrad::layers::Conv2dVariational::<f64, E>::with_config(
        &mut store,
        E::NAME,
        Conv2dMap::new(2, 2, 3).padding(Padding::Same),
        cfg,
        &mut rng,
    )
    .unwrap();
    let x = Tensor::from_fn(&[2, 4, 4, 2], |i| ((i as f64) * 0.77).sin());
    let (loc, sd) = posterior(&store, layer.kernel_params());
    // mean conv(x, loc), variance conv(x^2, sd^2)
    let tape = Tape::new();
    let mean = tape
        .constant(x.clone())
        .conv2d(tape.constant(loc), 1, Padding::Same)
        .unwrap()
        .value();
    let var = tape
        .constant(x.map(|v| v * v))
        .conv2d(tape.constant(sd.map(|s| s * s)), 1, Padding::Same)
        .unwrap()
        .value();
    check_marginals(&layer, &store, &x, &mean, &var, 4000);
}

#[test]
fn conv_reparameterization_marginals() {
    conv_marginals::<Reparameterization>();
}

#[test]
fn conv_flipout_marginals() {
    conv_marginals::<Flipout>();
}

#[test]
fn conv_local_reparameterization_marginals() {
    conv_marginals::<LocalReparameterization>();
}

#[test]
fn flipout_decorrelates_identical_inputs_and_is_reproducible() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let layer = DenseFlipout::new(&mut store, "f", 4, 3, &mut rng).unwrap();
    let row = [0.3, -0.2, 1.0, 0.5];
    let x = Tensor::from_vec([row, row].concat(), &[2, 4]).unwrap();
    let run = |seed| {
        let tape = Tape::new();
        let mut rng = StdRng::seed_from_u64(seed);
        layer
            .forward(
                &mut Forward::new(&tape, &store, &mut rng),
                tape.constant(x.clone()),
            )
            .unwrap()
            .value()
    };
    let y = run(9);
    assert_ne!(
        &y.data()[..3],
        &y.data()[3..],
        "identical rows must get different perturbations"
    );
    assert_eq!(y, run(9), "the same seed must give the same output");
    assert_ne!(y, run(10));
    // ... while the posterior-mean network gives both rows the same output
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::PosteriorMean);
    let m = layer
        .forward(&mut cx, tape.constant(x.clone()))
        .unwrap()
        .value();
    assert_eq!(&m.data()[..3], &m.data()[3..]);
}

/// Gradchecks every parameter of `layer` through `sum(y²)` plus the
/// divergences the layer registers, for the input `x`, in `mode`, with the
/// forward pass's draws seeded by `seed`.
pub(crate) fn gradcheck_with_divergence(
    layer: &dyn Module<f64>,
    store: &mut ParamStore<f64>,
    x: &Tensor<f64>,
    (seed, mode): (u64, SampleMode),
) {
    let params: Vec<Param> = store.params().collect();
    bayesgrad::autodiff::gradcheck::gradcheck_params(
        |tape, store| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut cx = Forward::new(tape, store, &mut rng).with_mode(mode);
            let y = layer.forward(&mut cx, tape.constant(x.clone()))?;
            Ok(y.square().sum() + cx.divergences().total())
        },
        store,
        &params,
        &GradCheck::default(),
    )
    .unwrap_or_else(|e| panic!("{} in {mode:?}: {e}", layer.name()));
}

fn gradcheck_layer(layer: &dyn Module<f64>, store: &mut ParamStore<f64>, x: Tensor<f64>) {
    let params: Vec<Param> = store.params().collect();
    let cfg = GradCheck {
        atol: 1e-5,
        rtol: 1e-4,
        ..Default::default()
    };
    gradcheck_params(
        |tape, store| {
            let mut rng = StdRng::seed_from_u64(5);
            let mut cx = Forward::new(tape, store, &mut rng);
            let y = layer.forward(&mut cx, tape.constant(x.clone()))?;
            Ok(y.tanh().sum() + cx.divergences().total())
        },
        store,
        &params,
        &cfg,
    )
    .unwrap_or_else(|e| panic!("{} w.r.t. parameters: {e}", layer.name()));
    let store = &*store;
    gradcheck(
        |tape, v| {
            let mut rng = StdRng::seed_from_u64(5);
            Ok(layer
                .forward(&mut Forward::new(tape, store, &mut rng), v[0])?
                .tanh()
                .sum())
        },
        &[x],
        &cfg,
    )
    .unwrap_or_else(|e| panic!("{} w.r.t. input: {e}", layer.name()));
}

#[test]
fn gradcheck_every_layer() {
    let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 1.5, 0.3, -0.7], &[2, 3]).unwrap();
    let ximg = Tensor::from_fn(&[2, 4, 4, 2], |i| ((i as f64) * 0.41).cos());
    let mut rng = StdRng::seed_from_u64(0);
    let cfg = || VariationalConfig {
        bias: BiasMode::Variational,
        ..Default::default()
    };
    let spike = || VariationalConfig {
        prior: Prior::spike_and_slab_tfp(),
        ..Default::default()
    };

    let mut s = ParamStore::new();
    let l = DenseReparameterization::with_config(&mut s, "r", 3, 2, cfg(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, x.clone());
    let mut s = ParamStore::new();
    let l = DenseFlipout::with_config(&mut s, "f", 3, 2, cfg(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, x.clone());
    let mut s = ParamStore::new();
    let l =
        DenseLocalReparameterization::with_config(&mut s, "l", 3, 2, spike(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, x.clone());
    let mut s = ParamStore::new();
    let l = DenseFlipout::with_config(&mut s, "fs", 3, 2, spike(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, x.clone());
    let mut s = ParamStore::new();
    let l = Dense::new(&mut s, "d", 3, 2, &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, x.clone());
    let mut s = ParamStore::new();
    let map = Conv2dMap::new(2, 3, 3).stride(2).padding(Padding::Same);
    let l = Conv2dReparameterization::with_config(&mut s, "cr", map, cfg(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, ximg.clone());
    let mut s = ParamStore::new();
    let map = Conv2dMap::new(2, 3, 2);
    let l = Conv2dFlipout::with_config(&mut s, "cf", map, spike(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, ximg.clone());
    let mut s = ParamStore::new();
    let l =
        Conv2dLocalReparameterization::with_config(&mut s, "cl", map, spike(), &mut rng).unwrap();
    gradcheck_layer(&l, &mut s, ximg.clone());
    let mut s = ParamStore::new();
    let net = Sequential::new()
        .push(
            Conv2dFlipout::new(
                &mut s,
                "c",
                Conv2dMap::new(2, 2, 3).padding(Padding::Same),
                &mut rng,
            )
            .unwrap(),
        )
        .push(Activation::Softplus)
        .push(MaxPool2d { size: 2, stride: 2 })
        .push(Flatten)
        .push(DenseFlipout::new(&mut s, "out", 8, 2, &mut rng).unwrap());
    gradcheck_layer(&net, &mut s, ximg);
}

#[test]
fn analytic_kl_is_the_sum_of_per_weight_kls() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let layer = DenseFlipout::new(&mut store, "l", 4, 3, &mut rng).unwrap();
    let (loc, sd) = posterior(&store, layer.kernel_params());
    // KL(N(m, s) || N(0, 1)) = -ln s + (s^2 + m^2)/2 - 1/2 per weight
    let expected: f64 = loc
        .data()
        .iter()
        .zip(sd.data())
        .map(|(m, s)| -s.ln() + (s * s + m * m) / 2.0 - 0.5)
        .sum();
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    layer
        .forward(&mut cx, tape.constant(Tensor::ones(&[2, 4])))
        .unwrap();
    let divs = cx.divergences().values();
    assert_eq!(divs.len(), 1);
    assert_eq!(divs[0].0, "l/kernel_divergence");
    assert!(
        (divs[0].1 - expected).abs() < 1e-10 * expected.abs(),
        "{} vs {expected}",
        divs[0].1
    );
}

/// The TFP quadrature value of KL(N(-0.3793, 0.0836) || 0.5 N(0,1) + 0.5 N(0,2000))
/// from tests/data/tfp_golden.json (case `normal_vs_spike_slab_kl`, first of its kind).
const QUAD_LOC: f64 = -0.3793478372459137;
const QUAD_SCALE: f64 = 0.08364153274210821;
const QUAD_KL: f64 = 2.7492732842525736;

fn mc_kl_converges<E: Estimator>() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let cfg = VariationalConfig {
        prior: Prior::spike_and_slab_tfp(),
        ..Default::default()
    };
    let layer =
        DenseVariational::<f64, E>::with_config(&mut store, "k", 1, 1, cfg, &mut rng).unwrap();
    let (loc, rho) = layer.kernel_params();
    store
        .set_raw(loc, Tensor::from_vec(vec![QUAD_LOC], &[1, 1]).unwrap())
        .unwrap();
    let raw = Constraint::Positive { eps: 1e-5 }
        .inverse(QUAD_SCALE)
        .unwrap();
    store
        .set_raw(rho, Tensor::from_vec(vec![raw], &[1, 1]).unwrap())
        .unwrap();
    let n = 20_000;
    let kls: Vec<f64> = (0..n)
        .map(|_| {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, &mut rng);
            layer
                .forward(&mut cx, tape.constant(Tensor::ones(&[1, 1])))
                .unwrap();
            let divs = cx.divergences().values();
            assert_eq!(divs.len(), 1);
            divs[0].1
        })
        .collect();
    let mean = kls.iter().sum::<f64>() / n as f64;
    let se =
        (kls.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0) / n as f64).sqrt();
    assert!(
        (mean - QUAD_KL).abs() < 4.0 * se,
        "{}: {mean} ± {se} vs {QUAD_KL}",
        E::NAME
    );
}

#[test]
fn monte_carlo_kl_against_spike_and_slab_converges_for_every_estimator() {
    mc_kl_converges::<Reparameterization>();
    mc_kl_converges::<Flipout>();
    mc_kl_converges::<LocalReparameterization>();
}

/// A layer under a spike-and-slab prior draws its weights and estimates
/// `ln q(w) - ln p(w)` at them in one fused op (with local
/// reparameterization, weights drawn for the divergence alone), for the
/// automatic and the sample-estimate divergence: the same outputs,
/// divergence and gradients as the composed estimate (the same mixture as
/// a custom prior, which the fused op does not serve) at the same draws.
fn spike_and_slab_takes_the_composed_estimate_in_one_op<E: Estimator>() {
    use bayesgrad::autodiff::profile::{OpTimer, Pass};
    let (pi, spike, slab) = (0.3, 0.2, 5.0);
    let composed = Prior::custom(move |tape, _, _| {
        let c = |v: f64| tape.scalar(v);
        Ok(Box::new(SpikeAndSlab::new(c(pi), c(spike), c(slab))?))
    });
    let fused = Prior::SpikeAndSlab {
        pi,
        spike_scale: spike,
        slab_scale: slab,
    };
    let x = Tensor::from_fn(&[3, 4], |i| ((i as f64) * 0.37).sin());
    let run = |prior: Prior<f64>, divergence: KlMethod<f64>| {
        let config = VariationalConfig {
            prior,
            divergence,
            rho_init: (-1.0, 0.5),
            ..Default::default()
        };
        let mut store = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(1);
        let layer =
            DenseVariational::<f64, E>::with_config(&mut store, "s", 4, 5, config, &mut rng)
                .unwrap();
        let timer = OpTimer::start().unwrap();
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, &store, &mut rng);
        let y = layer.forward(&mut cx, tape.constant(x.clone())).unwrap();
        let kl = cx.divergences().total();
        let grads = (y.square().sum() + kl).backward().unwrap();
        let fused = timer
            .finish()
            .get("mean_field_sample", Pass::Forward)
            .is_some();
        let (loc, rho) = layer.kernel_params();
        let grad = |p| grads.param(p).unwrap().clone();
        (y.value(), kl.item().unwrap(), [grad(loc), grad(rho)], fused)
    };
    let (y0, kl0, g0, fused0) = run(composed, KlMethod::Auto);
    assert!(
        !fused0,
        "{}: a custom prior takes the composed path",
        E::NAME
    );
    for method in [KlMethod::Auto, KlMethod::SampleEstimate] {
        let (y, kl, g, fused) = run(fused.clone(), method);
        let name = E::NAME;
        assert!(fused, "{name}: the spike-and-slab prior takes the fused op");
        assert_eq!(y, y0, "{name}: the same draws");
        assert!(
            (kl - kl0).abs() <= 1e-12 * kl0.abs(),
            "{name}: {kl} vs {kl0}"
        );
        for (a, b) in g.iter().zip(&g0) {
            for (&a, &b) in a.data().iter().zip(b.data()) {
                assert!(
                    (a - b).abs() <= 1e-11 * (1.0 + b.abs()),
                    "{name}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn a_spike_and_slab_layer_takes_the_composed_estimate_in_one_op() {
    spike_and_slab_takes_the_composed_estimate_in_one_op::<Reparameterization>();
    spike_and_slab_takes_the_composed_estimate_in_one_op::<Flipout>();
    spike_and_slab_takes_the_composed_estimate_in_one_op::<LocalReparameterization>();
}

#[test]
fn divergence_nodes_are_named_and_elbo_counts_each_once() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let cfg = VariationalConfig {
        bias: BiasMode::Variational,
        ..Default::default()
    };
    let net = Sequential::new()
        .push(DenseFlipout::with_config(&mut store, "hidden", 3, 5, cfg, &mut rng).unwrap())
        .push(Activation::Relu)
        .push(DenseFlipout::new(&mut store, "out", 5, 2, &mut rng).unwrap());
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    let logits = net
        .forward(&mut cx, tape.constant(Tensor::ones(&[4, 3])))
        .unwrap();
    let names: Vec<String> = cx
        .divergences()
        .values()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "hidden/kernel_divergence",
            "hidden/bias_divergence",
            "out/kernel_divergence"
        ]
    );
    let sum: f64 = cx.divergences().values().iter().map(|(_, v)| v).sum();

    let nll = -Categorical::from_logits(logits)
        .unwrap()
        .log_prob_labels(&[0, 1, 1, 0])
        .unwrap()
        .sum();
    let elbo = Elbo::new(KlWeight::PerExample { num_examples: 100 });
    let out = elbo
        .loss(
            cx.divergences(),
            nll,
            Batch {
                index: 0,
                size: 4,
                step: 0,
            },
        )
        .unwrap();
    assert!(
        (out.kl - sum).abs() < 1e-12,
        "KL counted {} vs registered {sum}",
        out.kl
    );
    let expected = nll.item().unwrap() / 4.0 + sum / 100.0;
    assert!((out.loss.item().unwrap() - expected).abs() < 1e-12);

    // Every parameter of the two-layer Flipout network gets a non-zero gradient.
    let grads = out.loss.backward().unwrap();
    for p in store.params() {
        let g = grads
            .param(p)
            .unwrap_or_else(|| panic!("{} got no gradient", store.name(p)));
        assert!(
            g.data().iter().any(|v| *v != 0.0),
            "{} got an all-zero gradient",
            store.name(p)
        );
    }
    Adam::new(1e-3).step(&mut store, &grads).unwrap();
}

#[test]
fn kl_weightings() {
    let b = |index| Batch {
        index,
        size: 10,
        step: 0,
    };
    // Blundell's pi_i = 2^(M-i)/(2^M-1) sums to 1 over an epoch; so does PerBatch.
    for m in [1usize, 3, 10, 2000] {
        let blundell = Elbo::new(KlWeight::Blundell { num_batches: m });
        let total: f64 = (0..m).map(|i| blundell.pi(b(i)).unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-12, "M = {m}: {total}");
        let per_batch = Elbo::new(KlWeight::PerBatch { num_batches: m });
        let total: f64 = (0..m).map(|i| per_batch.pi(b(i)).unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
    // M = 3: pi = 4/7, 2/7, 1/7
    let e = Elbo::new(KlWeight::Blundell { num_batches: 3 });
    assert!((e.pi(b(0)).unwrap() - 4.0 / 7.0).abs() < 1e-15);
    assert!((e.pi(b(2)).unwrap() - 1.0 / 7.0).abs() < 1e-15);
    assert!(e.pi(b(3)).is_err());
    // PerExample is TFP's kl / num_examples per example: pi = B / N
    assert_eq!(
        Elbo::new(KlWeight::PerExample { num_examples: 1000 })
            .pi(b(0))
            .unwrap(),
        0.01
    );
    let annealed = Elbo::new(KlWeight::Annealed {
        num_examples: 1000,
        warmup_steps: 4,
    });
    assert_eq!(annealed.pi(Batch { step: 1, ..b(0) }).unwrap(), 0.005);
    assert_eq!(annealed.pi(Batch { step: 100, ..b(0) }).unwrap(), 0.01);
    let cold = Elbo::new(KlWeight::Tempered {
        num_examples: 1000,
        temperature: 0.5,
    });
    assert_eq!(cold.pi(b(0)).unwrap(), 0.005);
    assert!(
        Elbo::new(KlWeight::PerExample { num_examples: 0 })
            .pi(b(0))
            .is_err()
    );
    // the number of batches passed as num_examples (here 4 batches of 10):
    // a weight 25 times too large unless it is refused; a batch as large
    // as the training set is fine
    for weighting in [
        KlWeight::PerExample { num_examples: 4 },
        KlWeight::Annealed {
            num_examples: 4,
            warmup_steps: 2,
        },
        KlWeight::Tempered {
            num_examples: 4,
            temperature: 0.5,
        },
    ] {
        let e = Elbo::new(weighting).pi(b(0)).unwrap_err().to_string();
        assert!(
            e.contains("num_examples is the size of the training set"),
            "{e}"
        );
    }
    assert_eq!(
        Elbo::new(KlWeight::PerExample { num_examples: 10 })
            .pi(b(0))
            .unwrap(),
        1.0
    );
}

#[test]
fn classification_uncertainty_decomposes() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let cfg = VariationalConfig {
        rho_init: (0.0, 0.1),
        ..Default::default()
    };
    let net = DenseFlipout::with_config(&mut store, "clf", 2, 3, cfg, &mut rng).unwrap();
    let x = Tensor::from_vec(vec![0.0, 0.0, 4.0, -4.0], &[2, 2]).unwrap();
    let p = predict_classes(&net, &store, &x, Predict::Samples(300), &mut rng).unwrap();
    for r in 0..2 {
        let row: f64 = p.probs.data()[r * 3..r * 3 + 3].iter().sum();
        assert!((row - 1.0).abs() < 1e-12);
        let (h, e, mi) = (
            p.predictive_entropy.data()[r],
            p.expected_entropy.data()[r],
            p.mutual_information.data()[r],
        );
        assert!((h - e - mi).abs() < 1e-12 && mi >= 0.0);
    }
    // At the origin every weight sample gives the same logits (zero bias): no epistemic part.
    assert!(p.mutual_information.data()[0] < 1e-12);
    assert!(p.mutual_information.data()[1] > 1e-3);
    let mean_only = predict_classes(&net, &store, &x, Predict::PosteriorMean, &mut rng).unwrap();
    assert!(
        mean_only
            .mutual_information
            .data()
            .iter()
            .all(|&m| m.abs() < 1e-12)
    );
}

/// A row whose logits are NaN has NaN probabilities and NaN entropies and
/// mutual information: before, `0 ln 0 = 0` and the clamp at 0 turned
/// them into 0 (no uncertainty at all).
#[test]
fn classification_uncertainty_of_a_nan_row_is_nan() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let net = DenseFlipout::new(&mut store, "clf", 2, 3, &mut rng).unwrap();
    let x = Tensor::from_vec(vec![f64::NAN, 1.0, 4.0, -4.0], &[2, 2]).unwrap();
    for how in [Predict::Samples(20), Predict::PosteriorMean] {
        let p = predict_classes(&net, &store, &x, how, &mut rng).unwrap();
        for t in [
            &p.predictive_entropy,
            &p.expected_entropy,
            &p.mutual_information,
        ] {
            assert!(t.data()[0].is_nan(), "{how:?}: {:?}", t.data());
            assert!(t.data()[1].is_finite(), "{how:?}: {:?}", t.data());
        }
    }
}

#[test]
fn bad_inputs_name_the_layer_and_shapes() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let dense = DenseFlipout::new(&mut store, "hidden", 3, 2, &mut rng).unwrap();
    let map = Conv2dMap::new(3, 4, 3).padding(Padding::Same);
    let conv = Conv2dFlipout::new(&mut store, "conv", map, &mut rng).unwrap();
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    let cases: Vec<(&dyn Module<f64>, Vec<usize>, &str)> = vec![
        (&dense, vec![4, 5], "wrong width"),
        (&dense, vec![4, 3, 1], "wrong rank"),
        (&dense, vec![0, 3], "zero batch"),
        (&conv, vec![2, 5, 5, 2], "mismatched channels"),
        (&conv, vec![2, 5, 5], "wrong rank"),
    ];
    for (layer, shape, what) in cases {
        let err = layer
            .forward(&mut cx, tape.constant(Tensor::zeros(&shape)))
            .unwrap_err();
        match &err {
            Error::LayerInput {
                layer: name, found, ..
            } => {
                assert_eq!(name, layer.name(), "{what}");
                assert_eq!(found, &shape, "{what}");
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(layer.name()) && msg.contains(&format!("{shape:?}")),
            "{what}: {msg}"
        );
    }
    assert!(
        cx.divergences().is_empty(),
        "a failed forward registers nothing"
    );
}

/// A negative or non-finite standard deviation for the initial posterior
/// means or rhos is refused when the layer is built, naming the setting and
/// the layer; a zero one starts every weight at the mean.
#[test]
fn a_bad_initial_spread_is_refused_when_the_layer_is_built() {
    let mut rng = StdRng::seed_from_u64(0);
    for (cfg, message) in [
        (
            VariationalConfig {
                loc_init: (0.0, -0.1),
                ..VariationalConfig::default()
            },
            "loc_init's standard deviation must be finite and >= 0, got -0.1",
        ),
        (
            VariationalConfig {
                rho_init: (-3.0, f64::NAN),
                ..VariationalConfig::default()
            },
            "rho_init's standard deviation must be finite and >= 0, got NaN",
        ),
    ] {
        let mut store = ParamStore::<f64>::new();
        let err = DenseVariational::<f64, Flipout>::with_config(
            &mut store, "hidden", 3, 2, cfg, &mut rng,
        )
        .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.starts_with("VariationalConfig: ") && text.contains(message),
            "{text}"
        );
        assert!(text.contains("hidden"), "names the layer: {text}");
    }
    let mut store = ParamStore::<f64>::new();
    let cfg = VariationalConfig {
        loc_init: (0.25, 0.0),
        ..VariationalConfig::default()
    };
    DenseVariational::<f64, Flipout>::with_config(&mut store, "hidden", 3, 2, cfg, &mut rng)
        .unwrap();
    let loc = store.get("hidden/kernel_posterior_loc").unwrap();
    assert!(store.raw(loc).data().iter().all(|&v| v == 0.25));
}

/// `Sequential` runs a ReLU followed by max-pooling as max-pooling then
/// ReLU. The outputs and input gradients must be the bits of the two ops
/// applied in the written order, on values with negatives, zeros of both
/// signs, ties and a NaN.
#[test]
fn relu_then_pool_runs_as_pool_then_relu_with_the_same_bits() {
    let shape = [2, 6, 4, 3];
    let values = |i: usize| match i % 11 {
        0 => -0.0,
        1 => 0.0,
        5 if i == 49 => f32::NAN,
        k => (((i * 7919) % 9) as f32 - 4.0) * if k % 2 == 0 { 1.0 } else { 0.5 },
    };
    let net = Sequential::<f32>::new()
        .push(Activation::Relu)
        .push(MaxPool2d { size: 2, stride: 2 });
    let (store, mut rng) = (ParamStore::<f32>::new(), StdRng::seed_from_u64(0));
    let run = |fused: bool, rng: &mut StdRng| {
        let tape = Tape::new();
        let x = tape.var(Tensor::from_fn(&shape, values));
        let y = if fused {
            let mut cx = Forward::new(&tape, &store, rng);
            net.forward(&mut cx, x).unwrap()
        } else {
            x.relu().max_pool2d(2, 2).unwrap()
        };
        let weights = Tensor::from_fn(&y.shape(), |i| 1.0 + i as f32);
        let grads = (y * weights).sum().backward().unwrap();
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        (bits(&y.value()), bits(grads.get(x).unwrap()))
    };
    let (written, fused) = (run(false, &mut rng), run(true, &mut rng));
    assert!(
        written.0.iter().any(|&b| f32::from_bits(b).is_nan()),
        "the NaN reaches the output"
    );
    assert!(written.0.contains(&0), "some windows are all negative");
    assert_eq!(fused, written);
}

/// The convolution layer adds its deterministic bias inside its Flipout
/// op: the output moves by exactly the bias, the same draws otherwise, and
/// the bias's gradient is the output gradient summed over the batch and
/// pixels.
#[test]
fn conv_flipout_adds_its_bias_and_passes_the_bias_its_gradient() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(11);
    let map = Conv2dMap::new(2, 3, 3).padding(Padding::Same);
    let layer = Conv2dFlipout::new(&mut store, "conv", map, &mut rng).unwrap();
    let bias = layer.bias_loc().expect("a deterministic bias by default");
    let x = Tensor::from_fn(&[3, 5, 4, 2], |i| ((i as f64) * 0.61).cos());
    let weights = Tensor::from_fn(&[3, 5, 4, 3], |i| ((i as f64) * 0.37).sin());
    let run = |store: &ParamStore<f64>| {
        let tape = Tape::new();
        let mut rng = StdRng::seed_from_u64(5);
        let mut cx = Forward::new(&tape, store, &mut rng);
        let y = layer.forward(&mut cx, tape.constant(x.clone())).unwrap();
        let grads = (y * tape.constant(weights.clone()))
            .sum()
            .backward()
            .unwrap();
        (y.value(), grads.param(bias).unwrap().clone())
    };
    let (y0, g0) = run(&store);
    let b = [0.25, -1.5, 3.0];
    store.set_value(bias, Tensor::vector(&b)).unwrap();
    let (y1, g1) = run(&store);
    for (i, (p, q)) in y1.data().iter().zip(y0.data()).enumerate() {
        assert!(
            (p - (q + b[i % 3])).abs() < 1e-12,
            "element {i}: {p} vs {q} + {}",
            b[i % 3]
        );
    }
    for (o, (g, h)) in g1.data().iter().zip(g0.data()).enumerate() {
        let want: f64 = weights.data().iter().skip(o).step_by(3).sum();
        assert!(
            (g - want).abs() < 1e-12 && g == h,
            "channel {o}: {g} vs {want}"
        );
    }
}

/// A Flipout convolution followed by max pooling (with a ReLU between or
/// not) runs as one op in a `Sequential`: the same values and parameter
/// gradients, bit for bit, as the layers run one by one, with a
/// deterministic bias (fused) and with a variational one (not fused: the
/// bias comes before the pooling).
#[test]
fn a_sequential_pools_inside_the_convolution_with_the_same_bits() {
    for bias in [BiasMode::Deterministic, BiasMode::Variational] {
        for with_relu in [true, false] {
            // the same layer twice (the same initial values under two
            // names): in the network, and on its own
            let mut store = ParamStore::<f32>::new();
            let mut layer = |name: &str| {
                let mut rng = StdRng::seed_from_u64(2);
                let cfg = VariationalConfig {
                    bias,
                    ..VariationalConfig::default()
                };
                let map = Conv2dMap::new(3, 4, 3).padding(Padding::Same);
                Conv2dFlipout::with_config(&mut store, name, map, cfg, &mut rng).unwrap()
            };
            let mut net = Sequential::new().push(layer("in_net"));
            let conv = layer("alone");
            if with_relu {
                net = net.push(Activation::Relu);
            }
            let net = net.push(MaxPool2d { size: 2, stride: 2 });
            let x = Tensor::from_fn(&[6, 8, 10, 3], |i| ((i as f32) * 0.37).sin());
            let run = |fused: bool| {
                let tape = Tape::new();
                let mut rng = StdRng::seed_from_u64(9);
                let mut cx = Forward::new(&tape, &store, &mut rng);
                let x = tape.constant(x.clone());
                let y = if fused {
                    net.forward(&mut cx, x).unwrap()
                } else {
                    let y = conv.forward(&mut cx, x).unwrap();
                    let y = if with_relu { y.relu() } else { y };
                    y.max_pool2d(2, 2).unwrap()
                };
                let weights = Tensor::from_fn(&y.shape(), |i| ((i as f32) * 0.71).cos());
                let loss = (y * weights).sum() + cx.divergences().total();
                let grads = loss.backward().unwrap();
                let bits =
                    |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let prefix = if fused { "in_net/" } else { "alone/" };
                let params: Vec<_> = store
                    .params()
                    .filter(|&p| store.name(p).starts_with(prefix))
                    .map(|p| bits(grads.param(p).unwrap()))
                    .collect();
                (bits(&y.value()), params)
            };
            let (fused, alone) = (run(true), run(false));
            assert!(!fused.1.is_empty());
            assert_eq!(fused, alone, "{bias:?}, relu {with_relu}");
        }
    }
}

/// A layer whose constructor fails after adding some of its parameters (a
/// later name taken, a setting finite in `f64` that overflows `f32`)
/// removes them again: they used to stay in the store, where every later
/// optimizer step refused them for having no gradient and checkpoints
/// saved them.
#[test]
fn a_layer_that_fails_to_build_adds_no_parameters() {
    use bayesgrad::layers::{
        DenseMap, DenseSparseVd, DenseSpikeAndSlab, SparseVdConfig, SpikeAndSlabConfig,
    };
    let mut rng = StdRng::seed_from_u64(1);
    let names = |s: &ParamStore<f32>| -> Vec<String> {
        s.params().map(|p| s.name(p).to_string()).collect()
    };
    let map = DenseMap {
        inputs: 3,
        outputs: 2,
    };

    let mut store = ParamStore::<f32>::new();
    store.add("h/bias", Tensor::zeros(&[2]));
    let e = DenseFlipout::new(&mut store, "h", 3, 2, &mut rng).err();
    assert!(matches!(e, Some(Error::DuplicateParam { .. })), "{e:?}");
    store.add("d/bias", Tensor::zeros(&[2]));
    let e = Dense::new(&mut store, "d", 3, 2, &mut rng).err();
    assert!(matches!(e, Some(Error::DuplicateParam { .. })), "{e:?}");
    store.add("v/bias_posterior_loc", Tensor::zeros(&[2]));
    let config = VariationalConfig {
        bias: BiasMode::Variational,
        ..VariationalConfig::default()
    };
    let e =
        DenseVariational::<f32, Flipout>::from_map(&mut store, "v", map, config, &mut rng).err();
    assert!(matches!(e, Some(Error::DuplicateParam { .. })), "{e:?}");
    assert_eq!(names(&store), ["h/bias", "d/bias", "v/bias_posterior_loc"]);

    let mut store = ParamStore::<f32>::new();
    let sparse = SparseVdConfig {
        log_sigma2_init: 1e300,
        ..SparseVdConfig::default()
    };
    let e = DenseSparseVd::from_map(&mut store, "s", map, sparse, &mut rng).err();
    assert!(e.is_some_and(|e| e.to_string().contains("s/kernel_log_sigma2")));
    let slab = SpikeAndSlabConfig {
        scale_init: 1e300,
        ..SpikeAndSlabConfig::default()
    };
    let e = DenseSpikeAndSlab::from_map(&mut store, "k", map, slab, &mut rng).err();
    assert!(e.is_some_and(|e| e.to_string().contains("k/slab_scale")));
    assert!(store.is_empty(), "{:?}", names(&store));
    // and the names are free for a layer that builds
    DenseSparseVd::from_map(&mut store, "s", map, SparseVdConfig::default(), &mut rng).unwrap();
    DenseFlipout::new(&mut store, "k", 3, 2, &mut rng).unwrap();
    assert_eq!(store.len(), 6);
}
