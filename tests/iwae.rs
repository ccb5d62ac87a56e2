//! The importance-weighted bound: the sample axis of a forward pass, the
//! batched product behind it, the bound's relation to the ELBO, its
//! gradient (by finite differences and statistically), and the errors of
//! passes that cannot give per-sample log ratios.

use bayesgrad::autodiff::gradcheck::gradcheck_params;
use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
use bayesgrad::bayes::iwae::log_mean_exp;
use bayesgrad::layers::{
    DenseSparseVd, DenseSpikeAndSlab, HierarchicalScale, Reparameterization, ScalePrior,
};
use bayesgrad::prelude::*;
use std::sync::Arc;

/// A config under which a pass in `SampleMode::Sample` draws its weights
/// exactly as one block of a pass with a sample axis does, and registers
/// `ln q(w) - ln p(w)` at them.
fn sampled_kl() -> VariationalConfig<f64> {
    VariationalConfig {
        divergence: KlMethod::SampleEstimate,
        loc_init: (0.0, 0.5),
        rho_init: (-1.0, 0.3),
        ..VariationalConfig::default()
    }
}

fn x43() -> Tensor<f64> {
    Tensor::from_rows(&[
        [0.5, -1.0, 2.0],
        [0.1, 0.2, -0.3],
        [1.5, 0.7, 0.0],
        [-0.4, 0.9, 1.1],
    ])
    .unwrap()
}

#[test]
fn batched_matmul_gradchecks_and_names_bad_shapes() {
    let a = Tensor::from_fn(&[3, 2, 4], |i| (i as f64 * 0.37).sin());
    let b = Tensor::from_fn(&[3, 4, 5], |i| (i as f64 * 0.21).cos());
    gradcheck(
        |_, v| Ok(v[0].batched_matmul(v[1])?.square().sum()),
        &[a.clone(), b.clone()],
        &GradCheck::default(),
    )
    .unwrap();
    // block k is the plain product of the blocks
    let tape = Tape::new();
    let c = tape
        .constant(a.clone())
        .batched_matmul(tape.constant(b.clone()))
        .unwrap();
    for k in 0..3 {
        let want = tape
            .constant(a.clone())
            .index(k)
            .unwrap()
            .matmul(tape.constant(b.clone()).index(k).unwrap())
            .unwrap();
        assert_eq!(c.index(k).unwrap().value(), want.value());
    }
    for (sa, sb) in [
        (vec![3, 2, 4], vec![2, 4, 5]),
        (vec![3, 2, 4], vec![3, 3, 5]),
        (vec![2, 4], vec![4, 5]),
    ] {
        let err = tape
            .constant(Tensor::zeros(&sa))
            .batched_matmul(tape.constant(Tensor::zeros(&sb)))
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("{sa:?}")),
            "{sa:?} {sb:?}: {err}"
        );
    }
}

/// Block k of a pass with a sample axis is the k-th of K successive
/// single-sample passes from the same RNG state: same outputs, and its log
/// ratio is that pass's sampled KL. Checked for the dense layer (one
/// batched product, the fused log ratio of a Normal prior), a
/// spike-and-slab prior (the generic log ratio) and the convolution (the
/// blockwise default).
#[test]
fn sample_axis_blocks_are_successive_single_sample_passes() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let dense = Sequential::new()
        .push(Dense::new(&mut store, "d", 3, 4, &mut rng).unwrap())
        .push(Activation::Tanh)
        .push(
            DenseReparameterization::with_config(&mut store, "v", 4, 2, sampled_kl(), &mut rng)
                .unwrap(),
        );
    let map = Conv2dMap::new(2, 3, 3).padding(Padding::Same);
    let conv = Conv2dReparameterization::with_config(&mut store, "c", map, sampled_kl(), &mut rng)
        .unwrap();
    // a prior without the fused log ratio: the generic route through log_prob
    let slab_cfg = VariationalConfig {
        prior: Prior::spike_and_slab_tfp(),
        ..sampled_kl()
    };
    let slab =
        DenseReparameterization::with_config(&mut store, "s", 3, 2, slab_cfg, &mut rng).unwrap();
    let cases: [(&dyn Module<f64>, Tensor<f64>, &str); 3] = [
        (&dense, x43(), "v/kernel_divergence"),
        (&slab, x43(), "s/kernel_divergence"),
        (
            &conv,
            Tensor::from_fn(&[2, 4, 4, 2], |i| (i as f64 * 0.3).sin()),
            "c/kernel_divergence",
        ),
    ];
    for (model, x, term) in cases {
        let k = 3;
        let b = x.shape()[0];
        let tape = Tape::new();
        let mut rng = StdRng::seed_from_u64(7);
        let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::SampleAxis(k));
        let y = model
            .forward(&mut cx, Iwae::tile(tape.constant(x.clone()), k).unwrap())
            .unwrap();
        let ratios = cx.divergences().get(term).unwrap().value();
        assert_eq!(ratios.shape(), &[k]);
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..k {
            let tape1 = Tape::new();
            let mut cx1 = Forward::new(&tape1, &store, &mut rng);
            let y1 = model.forward(&mut cx1, tape1.constant(x.clone())).unwrap();
            let block = y.slice(0, i * b, (i + 1) * b).unwrap().value();
            let diff = block
                .data()
                .iter()
                .zip(y1.value().data())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-12, "{term}: block {i} differs by {diff}");
            let kl = cx1.divergences().get(term).unwrap().item().unwrap();
            assert!(
                (ratios.data()[i] - kl).abs() < 1e-10 * kl.abs().max(1.0),
                "{term} {i}"
            );
        }
    }
}

/// With K = 1 the loss is the ELBO with the KL estimated at the sample.
#[test]
fn one_sample_is_the_elbo() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(1);
    let layer = DenseReparameterization::with_config(&mut store, "v", 3, 1, sampled_kl(), &mut rng)
        .unwrap();
    let y = Tensor::vector(&[0.3, -0.2, 1.0, 0.5]);
    for weighting in [
        KlWeight::PerExample { num_examples: 40 },
        KlWeight::Blundell { num_batches: 3 },
    ] {
        let batch = Batch {
            index: 1,
            size: 4,
            step: 0,
        };
        let tape = Tape::new();
        let mut rng = StdRng::seed_from_u64(9);
        let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::SampleAxis(1));
        let out = layer.forward(&mut cx, tape.constant(x43())).unwrap();
        let lik = Normal::new(out.reshape(&[4]).unwrap(), tape.scalar(0.7)).unwrap();
        let iwae = Iwae::new(weighting)
            .loss_from_likelihood(cx.divergences(), &lik, tape.constant(y.clone()), batch)
            .unwrap();
        let tape1 = Tape::new();
        let mut rng = StdRng::seed_from_u64(9);
        let mut cx1 = Forward::new(&tape1, &store, &mut rng);
        let out1 = layer.forward(&mut cx1, tape1.constant(x43())).unwrap();
        let lik1 = Normal::new(out1.reshape(&[4]).unwrap(), tape1.scalar(0.7)).unwrap();
        let elbo = Elbo::new(weighting)
            .loss_from_likelihood(cx1.divergences(), &lik1, tape1.constant(y.clone()), batch)
            .unwrap();
        let (a, b) = (iwae.loss.item().unwrap(), elbo.loss.item().unwrap());
        assert!((a - b).abs() < 1e-12 * b.abs(), "{weighting:?}: {a} vs {b}");
        assert!((iwae.bound - iwae.elbo).abs() < 1e-12);
        assert_eq!(iwae.effective_samples, 1.0);
    }
}

/// For every draw the bound is at least the mean of the K single-sample
/// ELBOs, and on average it rises with K.
#[test]
fn bound_is_above_the_elbo_and_rises_with_k() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(2);
    let net = Sequential::new()
        .push(DenseFlipout::new(&mut store, "h", 3, 6, &mut rng).unwrap())
        .push(Activation::Relu)
        .push(DenseFlipout::new(&mut store, "o", 6, 1, &mut rng).unwrap());
    let y = Tensor::vector(&[0.3, -0.2, 1.0, 0.5]);
    let mean_bound = |k: usize, rng: &mut StdRng| {
        let (mut sum, mut sq, n) = (0.0, 0.0, 400);
        for _ in 0..n {
            let tape = Tape::new();
            let mut cx =
                Forward::new(&tape, &store, &mut *rng).with_mode(SampleMode::SampleAxis(k));
            let out = net
                .forward(&mut cx, Iwae::tile(tape.constant(x43()), k).unwrap())
                .unwrap();
            let lik = Normal::new(out.reshape(&[4 * k]).unwrap(), tape.scalar(0.5)).unwrap();
            let y = Iwae::tile(tape.constant(y.clone()), k).unwrap();
            let batch = Batch {
                index: 0,
                size: 4,
                step: 0,
            };
            let l = Iwae::new(KlWeight::PerExample { num_examples: 4 })
                .loss_from_likelihood(cx.divergences(), &lik, y, batch)
                .unwrap();
            assert!(l.bound >= l.elbo - 1e-12, "K={k}: {l}");
            assert!(l.effective_samples >= 1.0 - 1e-12 && l.effective_samples <= k as f64 + 1e-9);
            sum += l.bound;
            sq += l.bound * l.bound;
        }
        let mean = sum / n as f64;
        (mean, ((sq / n as f64 - mean * mean) / n as f64).sqrt())
    };
    let mut rng = StdRng::seed_from_u64(3);
    let (b1, s1) = mean_bound(1, &mut rng);
    let (b8, s8) = mean_bound(8, &mut rng);
    let se = (s1 * s1 + s8 * s8).sqrt();
    assert!(b8 - b1 > 4.0 * se, "K=1 {b1} ± {s1}, K=8 {b8} ± {s8}");
}

#[test]
fn gradcheck_through_the_sample_axis() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(4);
    let cfg = VariationalConfig {
        bias: BiasMode::Variational,
        ..sampled_kl()
    };
    let net = Sequential::new()
        .push(DenseFlipout::with_config(&mut store, "h", 3, 3, cfg.clone(), &mut rng).unwrap())
        .push(Activation::Tanh)
        .push(DenseFlipout::with_config(&mut store, "o", 3, 1, cfg, &mut rng).unwrap());
    let params: Vec<Param> = store.params().collect();
    assert_eq!(params.len(), 8);
    let y = Tensor::vector(&[0.3, -0.2, 1.0, 0.5]);
    gradcheck_params(
        |tape, store| {
            let k = 3;
            let mut rng = StdRng::seed_from_u64(5);
            let mut cx = Forward::new(tape, store, &mut rng).with_mode(SampleMode::SampleAxis(k));
            let out = net.forward(&mut cx, Iwae::tile(tape.constant(x43()), k)?)?;
            let names: Vec<String> = cx.divergences().values().into_iter().map(|v| v.0).collect();
            assert_eq!(
                names,
                [
                    "h/kernel_divergence",
                    "h/bias_divergence",
                    "o/kernel_divergence",
                    "o/bias_divergence"
                ]
            );
            let lik = Normal::new(out.reshape(&[4 * k])?, tape.scalar(0.5))?;
            let y = Iwae::tile(tape.constant(y.clone()), k)?;
            let batch = Batch {
                index: 0,
                size: 4,
                step: 0,
            };
            let iwae = Iwae::new(KlWeight::PerExample { num_examples: 20 });
            Ok(iwae
                .loss_from_likelihood(cx.divergences(), &lik, y, batch)?
                .loss)
        },
        &mut store,
        &params,
        &GradCheck::default(),
    )
    .unwrap();
}

/// `ln (1/2) Σ exp(ℓ(w_k) + ln p(w_k) − ln q(w_k))` for the one-weight
/// model `y ~ N(w, s)`, `w ~ N(0, 1)`, `q = N(μ, σ)`, averaged over
/// `(ε₁, ε₂)` by Simpson's rule on a grid.
fn exact_two_sample_bound(mu: f64, sigma: f64, y: f64, s: f64) -> f64 {
    let ln_n = |x: f64, m: f64, sd: f64| {
        -0.5 * ((x - m) / sd).powi(2) - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
    };
    let log_w = |e: f64| {
        let w = mu + sigma * e;
        ln_n(y, w, s) + ln_n(w, 0.0, 1.0) - ln_n(w, mu, sigma)
    };
    let (n, lo, hi) = (601, -9.0, 9.0);
    let h = (hi - lo) / (n - 1) as f64;
    let node = |i: usize| lo + h * i as f64;
    let weight = |i: usize| {
        let c = if i == 0 || i == n - 1 {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        c * h / 3.0 * ln_n(node(i), 0.0, 1.0).exp()
    };
    let lw: Vec<f64> = (0..n).map(|i| log_w(node(i))).collect();
    let wt: Vec<f64> = (0..n).map(weight).collect();
    let mut total = 0.0;
    for i in 0..n {
        for j in 0..n {
            let m = lw[i].max(lw[j]);
            let lme = m + (0.5 * ((lw[i] - m).exp() + (lw[j] - m).exp())).ln();
            total += wt[i] * wt[j] * lme;
        }
    }
    total
}

/// The gradient of the loss is an unbiased estimate of the gradient of the
/// expected bound: checked for K = 2 against the bound integrated exactly
/// over both samples.
#[test]
fn iwae_gradient_is_unbiased_for_the_expected_bound() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(6);
    let cfg = VariationalConfig {
        bias: BiasMode::None,
        ..VariationalConfig::default()
    };
    let layer = DenseReparameterization::with_config(&mut store, "w", 1, 1, cfg, &mut rng).unwrap();
    let (loc, rho) = layer.kernel_params();
    store
        .set_raw(loc, Tensor::from_vec(vec![0.4], &[1, 1]).unwrap())
        .unwrap();
    store
        .set_raw(rho, Tensor::from_vec(vec![-0.3], &[1, 1]).unwrap())
        .unwrap();
    let (y, s) = (1.3, 0.6);
    let sigma_at = |store: &ParamStore<f64>| Tape::new().param(store, rho).item().unwrap();
    let (mu, sigma) = (0.4, sigma_at(&store));
    // d sigma / d rho through the store's constraint, by central differences
    let dsigma = {
        let h = 1e-6;
        let mut at = |r: f64| {
            let t = Tensor::from_vec(vec![r], &[1, 1]).unwrap();
            store.set_raw(rho, t).unwrap();
            sigma_at(&store)
        };
        let d = (at(-0.3 + h) - at(-0.3 - h)) / (2.0 * h);
        at(-0.3);
        d
    };
    let h = 1e-5;
    let d_mu = (exact_two_sample_bound(mu + h, sigma, y, s)
        - exact_two_sample_bound(mu - h, sigma, y, s))
        / (2.0 * h);
    let d_sigma = (exact_two_sample_bound(mu, sigma + h, y, s)
        - exact_two_sample_bound(mu, sigma - h, y, s))
        / (2.0 * h);
    // the loss is -bound / B with B = 1
    let exact = [-d_mu, -d_sigma * dsigma];
    let report = stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, rng).with_mode(SampleMode::SampleAxis(2));
            let x = Iwae::tile(tape.constant(Tensor::from_vec(vec![1.0], &[1, 1])?), 2)?;
            let out = layer.forward(&mut cx, x)?.reshape(&[2])?;
            let lik = Normal::new(out, tape.scalar(s))?;
            let batch = Batch {
                index: 0,
                size: 1,
                step: 0,
            };
            let iwae = Iwae::new(KlWeight::PerExample { num_examples: 1 });
            let l = iwae.loss_from_likelihood(cx.divergences(), &lik, tape.scalar(y), batch)?;
            let g = l.loss.backward()?;
            Ok(vec![
                g.param(loc).unwrap().item()?,
                g.param(rho).unwrap().item()?,
            ])
        },
        &exact,
        &StatGradCheck {
            samples: 20_000,
            ..StatGradCheck::default()
        },
        &mut StdRng::seed_from_u64(7),
    )
    .unwrap();
    assert!(report.mean_variance() > 0.0);
}

#[test]
fn log_mean_exp_is_the_predictive_log_likelihood() {
    let tape = Tape::<f64>::new();
    let ll = tape.constant(Tensor::vector(&[-1.0, -2.0, -3.0, -0.5, -1.5, -800.0]));
    let got = log_mean_exp(ll, 3).unwrap().value();
    // rows k*2 + b: example 0 has -1, -3, -1.5; example 1 has -2, -0.5, -800
    let want = |v: [f64; 3]| (v.iter().map(|x| x.exp()).sum::<f64>() / 3.0).ln();
    assert!((got.data()[0] - want([-1.0, -3.0, -1.5])).abs() < 1e-15);
    assert!((got.data()[1] - want([-2.0, -0.5, -800.0])).abs() < 1e-15);
    for (shape, k) in [(vec![5], 2), (vec![6], 0), (vec![2, 3], 3)] {
        let v = tape.constant(Tensor::zeros(&shape));
        assert!(log_mean_exp(v, k).is_err(), "{shape:?} with k={k}");
    }
}

/// Every way a pass with a sample axis could give a wrong bound is an error.
#[test]
fn passes_without_per_sample_log_ratios_are_refused() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(8);
    let flipout = DenseFlipout::new(&mut store, "f", 3, 1, &mut rng).unwrap();
    let sparse = DenseSparseVd::new(&mut store, "s", 3, 1, &mut rng).unwrap();
    let slab = DenseSpikeAndSlab::new(&mut store, "p", 3, 1, &mut rng).unwrap();
    let scale = HierarchicalScale::new(
        &mut store,
        "h/prior",
        3,
        ScalePrior::LogNormal {
            loc: 0.0,
            scale: 1.0,
        },
        ScalePrior::LogNormal {
            loc: 0.0,
            scale: 1.0,
        },
    )
    .unwrap();
    let hier_cfg = VariationalConfig {
        prior: Prior::Hierarchical(Arc::new(scale)),
        ..VariationalConfig::default()
    };
    let hier = bayesgrad::layers::DenseVariational::<f64, Reparameterization>::with_config(
        &mut store, "h", 3, 1, hier_cfg, &mut rng,
    )
    .unwrap();
    let run = |model: &dyn Module<f64>, mode: SampleMode, rows: usize| {
        let tape = Tape::new();
        let mut rng = StdRng::seed_from_u64(0);
        let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(mode);
        model
            .forward(&mut cx, tape.constant(Tensor::zeros(&[rows, 3])))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let axis = SampleMode::SampleAxis(2);
    for (model, what) in [
        (&sparse as &dyn Module<f64>, "sparse variational dropout"),
        (&slab, "spike-and-slab"),
        (&hier, "hierarchical"),
    ] {
        let err = run(model, axis, 4).unwrap_err();
        assert!(err.contains(what) && err.contains("per-sample"), "{err}");
        run(model, SampleMode::Sample, 4).unwrap();
    }
    assert!(
        run(&flipout, axis, 5)
            .unwrap_err()
            .contains("not 2 equal blocks")
    );
    assert!(
        run(&flipout, SampleMode::SampleAxis(0), 4)
            .unwrap_err()
            .contains("K >= 1")
    );
    run(&flipout, axis, 4).unwrap();

    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(0);
    // a layer of one's own that registers one divergence for all samples
    let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(axis);
    let err = cx.add_divergence("mine", tape.scalar(1.0)).unwrap_err();
    assert!(err.to_string().contains("per sample"), "{err}");
    assert!(cx.add_log_ratio("mine", tape.scalar(1.0)).is_err());
    cx.add_log_ratio("mine", tape.constant(Tensor::vector(&[1.0, 2.0])))
        .unwrap();
    let batch = Batch {
        index: 0,
        size: 2,
        step: 0,
    };
    let weight = KlWeight::PerExample { num_examples: 10 };
    let nll = tape.scalar(1.0);
    assert!(
        Elbo::new(weight)
            .loss(cx.divergences(), nll, batch)
            .is_err()
    );
    let ll = tape.constant(Tensor::zeros(&[4]));
    assert!(Iwae::new(weight).loss(cx.divergences(), ll, batch).is_ok());
    let wrong = tape.constant(Tensor::zeros(&[6]));
    let err = Iwae::new(weight)
        .loss(cx.divergences(), wrong, batch)
        .unwrap_err();
    assert!(err.to_string().contains("[4] or [2, 2]"), "{err}");
    // a likelihood over other rows than K times the batch
    let lik = Normal::new(tape.constant(Tensor::zeros(&[4])), tape.scalar(1.0)).unwrap();
    let y = tape.constant(Tensor::zeros(&[4]));
    let three = Batch { size: 3, ..batch };
    let err = Iwae::new(weight)
        .loss_from_likelihood(cx.divergences(), &lik, y, three)
        .unwrap_err();
    assert!(
        err.to_string().contains("K times the batch size 6"),
        "{err}"
    );
    // a pass without a sample axis has no bound
    let plain = Forward::new(&tape, &store, &mut rng);
    assert!(
        Iwae::new(weight)
            .loss(plain.divergences(), ll, batch)
            .is_err()
    );
    assert!(
        Iwae::new(weight)
            .loss_from_likelihood(plain.divergences(), &lik, y, batch)
            .is_err()
    );
    assert!(Iwae::tile(tape.scalar(1.0), 2).is_err());
    assert!(Iwae::tile(ll, 0).is_err());
}
