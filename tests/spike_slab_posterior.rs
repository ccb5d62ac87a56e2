//! The spike-and-slab posterior layer: gradients, its KL, its moments.

use crate::layers::gradcheck_with_divergence;
use bayesgrad::autodiff::gradcheck::gradcheck_params;
use bayesgrad::layers::{DenseMap, DenseSpikeAndSlab, Selection, SpikeAndSlabConfig};
use bayesgrad::prelude::*;

fn layer(store: &mut ParamStore<f64>) -> DenseSpikeAndSlab {
    let config = SpikeAndSlabConfig {
        prior_inclusion: 0.3,
        slab_scale: 1.5,
        inclusion_init: 0.6,
        loc_init_std: 0.7,
        scale_init: 0.4,
        selection: Selection::PerWeight,
    };
    let map = DenseMap {
        inputs: 3,
        outputs: 2,
    };
    DenseSpikeAndSlab::from_map(store, "s", map, config, &mut StdRng::seed_from_u64(0)).unwrap()
}

#[test]
fn gradcheck_spike_and_slab_layer_with_its_divergence() {
    let mut store = ParamStore::new();
    let l = layer(&mut store);
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]).unwrap();
    gradcheck_with_divergence(&l, &mut store, &x, (1, SampleMode::Sample));
}

/// The output's mean and variance are those of `x ⊛ w` with every weight
/// drawn from `(1 - p) δ₀ + p N(μ, σ²)`: checked against explicit draws.
#[test]
fn output_moments_match_explicit_spike_and_slab_draws() {
    let mut store = ParamStore::new();
    let l = layer(&mut store);
    let (logit, loc, scale) = l.params();
    let p = store.raw(logit).map(|v| 1.0 / (1.0 + (-v).exp()));
    let (mu, sigma) = (store.value(loc), store.value(scale));
    let x = [0.5, -1.0, 2.0];
    let draws = 40_000;
    let mut rng = StdRng::seed_from_u64(5);
    let (mut m, mut m2) = (0.0, 0.0);
    for _ in 0..draws {
        let mut y = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            let k = i * 2; // output 0
            if rng.random::<f64>() < p.data()[k] {
                y += xi
                    * (mu.data()[k]
                        + sigma.data()[k] * rng.sample::<f64, _>(rand_distr::StandardNormal));
            }
        }
        m += y;
        m2 += y * y;
    }
    let (mean, var) = (
        m / draws as f64,
        m2 / draws as f64 - (m / draws as f64).powi(2),
    );
    let (mut lm, mut lm2) = (0.0, 0.0);
    for s in 0..draws {
        let tape = Tape::new();
        let mut r = StdRng::seed_from_u64(100 + s as u64);
        let mut cx = Forward::new(&tape, &store, &mut r);
        let y = l
            .forward(&mut cx, tape.constant(Tensor::from_rows(&[x]).unwrap()))
            .unwrap()
            .value()
            .data()[0];
        lm += y;
        lm2 += y * y;
    }
    let (lmean, lvar) = (
        lm / draws as f64,
        lm2 / draws as f64 - (lm / draws as f64).powi(2),
    );
    let se = (var / draws as f64).sqrt();
    assert!(
        (mean - lmean).abs() < 5.0 * se * 2f64.sqrt(),
        "{mean} vs {lmean}"
    );
    assert!((var - lvar).abs() < 0.05 * var, "{var} vs {lvar}");
}

/// KL per weight: the Bernoulli part plus p · KL(slab ‖ prior slab).
#[test]
fn divergence_matches_the_closed_form() {
    let mut store = ParamStore::new();
    let l = layer(&mut store);
    let (logit, loc, scale) = l.params();
    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(0);
    let mut cx = Forward::new(&tape, &store, &mut rng);
    l.forward(&mut cx, tape.constant(Tensor::ones(&[1, 3])))
        .unwrap();
    let kl = cx.divergences().total().item().unwrap();
    let (p0, s) = (0.3f64, 1.5f64);
    let mut want = 0.0;
    for i in 0..6 {
        let p = 1.0 / (1.0 + (-store.raw(logit).data()[i]).exp());
        let (m, sd) = (store.value(loc).data()[i], store.value(scale).data()[i]);
        let slab = (s / sd).ln() + (sd * sd + m * m) / (2.0 * s * s) - 0.5;
        want += p * (p / p0).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - p0)).ln() + p * slab;
    }
    assert!((kl - want).abs() < 1e-12, "{kl} vs {want}");
}

#[test]
fn spike_and_slab_refuses_settings_out_of_their_domain() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    let map = DenseMap {
        inputs: 2,
        outputs: 1,
    };
    for config in [
        SpikeAndSlabConfig {
            prior_inclusion: 1.0,
            ..SpikeAndSlabConfig::default()
        },
        SpikeAndSlabConfig {
            inclusion_init: 0.0,
            ..SpikeAndSlabConfig::default()
        },
        SpikeAndSlabConfig {
            slab_scale: -1.0,
            ..SpikeAndSlabConfig::default()
        },
    ] {
        let e = DenseSpikeAndSlab::from_map(&mut store, "bad", map, config, &mut rng)
            .err()
            .unwrap();
        assert!(e.to_string().contains("bad"), "{e}");
    }
    assert!(store.is_empty());
}

fn group_layer(store: &mut ParamStore<f64>, temperature: f64) -> DenseSpikeAndSlab {
    let config = SpikeAndSlabConfig {
        prior_inclusion: 0.3,
        slab_scale: 1.5,
        inclusion_init: 0.6,
        loc_init_std: 0.7,
        scale_init: 0.4,
        selection: Selection::PerInput { temperature },
    };
    let map = DenseMap {
        inputs: 3,
        outputs: 2,
    };
    DenseSpikeAndSlab::from_map(store, "g", map, config, &mut StdRng::seed_from_u64(0)).unwrap()
}

#[test]
fn group_selection_gradchecks_dense_and_conv() {
    let mut store = ParamStore::new();
    let dense = group_layer(&mut store, 0.7);
    let config = SpikeAndSlabConfig {
        selection: Selection::PerInput { temperature: 0.5 },
        loc_init_std: 0.5,
        ..SpikeAndSlabConfig::default()
    };
    let map = Conv2dMap::new(2, 3, 3).padding(Padding::Same);
    let conv = bayesgrad::layers::SpikeAndSlabVariational::from_map(
        &mut store,
        "c",
        map,
        config,
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(conv.inclusion_probabilities(&store).unwrap().shape(), &[2]);
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]).unwrap();
    let image = Tensor::from_fn(&[2, 3, 3, 2], |i| (i as f64 * 0.7).sin());
    let params: Vec<Param> = store.params().collect();
    for mode in [SampleMode::Sample, SampleMode::PosteriorMean] {
        gradcheck_params(
            |tape, store| {
                let mut rng = StdRng::seed_from_u64(3);
                let mut cx = Forward::new(tape, store, &mut rng).with_mode(mode);
                let y = dense.forward(&mut cx, tape.constant(x.clone()))?;
                let z = conv.forward(&mut cx, tape.constant(image.clone()))?;
                Ok(y.square().sum() + z.square().sum() + cx.divergences().total())
            },
            &mut store,
            &params,
            &GradCheck::default(),
        )
        .unwrap();
    }
}

/// The divergence is the Bernoulli term once per input unit plus the
/// slab term weighted by the unit's inclusion; the posterior-mean network
/// scales each input by its inclusion probability.
#[test]
fn group_selection_divergence_and_mean_by_hand() {
    let mut store = ParamStore::new();
    let layer = group_layer(&mut store, 0.7);
    let (logit, loc, scale) = layer.params();
    assert_eq!(store.raw(logit).shape(), &[3]);
    store
        .set_raw(logit, Tensor::vector(&[0.4, -1.2, 2.0]))
        .unwrap();
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0]]).unwrap();
    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(0);
    let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::PosteriorMean);
    let y = layer.forward(&mut cx, tape.constant(x.clone())).unwrap();
    let kl = cx.divergences().total().item().unwrap();
    let (mu, sigma) = (store.value(loc), store.value(scale));
    let p: Vec<f64> = [0.4f64, -1.2, 2.0]
        .iter()
        .map(|l| 1.0 / (1.0 + (-l).exp()))
        .collect();
    let (p0, s) = (0.3f64, 1.5f64);
    let mut want_kl = 0.0;
    let mut want_y = [0.0; 2];
    for (i, &pi) in p.iter().enumerate() {
        want_kl += pi * (pi / p0).ln() + (1.0 - pi) * ((1.0 - pi) / (1.0 - p0)).ln();
        for (o, y) in want_y.iter_mut().enumerate() {
            let (m, sd) = (mu.data()[i * 2 + o], sigma.data()[i * 2 + o]);
            want_kl += pi * ((s / sd).ln() + (sd * sd + m * m) / (2.0 * s * s) - 0.5);
            *y += x.data()[i] * pi * m;
        }
    }
    assert!(
        (kl - want_kl).abs() < 1e-12 * want_kl.abs(),
        "{kl} vs {want_kl}"
    );
    for (got, want) in y.value().data().iter().zip(want_y) {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    // a temperature outside (0, inf) is refused, naming the layer
    let bad = SpikeAndSlabConfig {
        selection: Selection::PerInput { temperature: 0.0 },
        ..SpikeAndSlabConfig::default()
    };
    let map = DenseMap {
        inputs: 2,
        outputs: 1,
    };
    let e = DenseSpikeAndSlab::from_map(&mut store, "cold", map, bad, &mut rng)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("temperature") && e.to_string().contains("cold"),
        "{e}"
    );
}

/// The layer's gradient is unbiased for the relaxed objective
/// `E_z E_w (y - t)²` (z relaxed, w from the slab), integrated exactly over
/// z by quadrature: `E_w (x z w - t)² = (x z μ - t)² + x² z² σ²`.
#[test]
fn group_selection_gradient_is_unbiased_for_the_relaxed_objective() {
    use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
    use bayesgrad::distributions::expectation_quadrature;
    let mut store = ParamStore::new();
    let config = SpikeAndSlabConfig {
        selection: Selection::PerInput { temperature: 2.0 },
        loc_init_std: 0.8,
        scale_init: 0.5,
        ..SpikeAndSlabConfig::default()
    };
    let map = DenseMap {
        inputs: 1,
        outputs: 1,
    };
    let layer =
        DenseSpikeAndSlab::from_map(&mut store, "u", map, config, &mut StdRng::seed_from_u64(2))
            .unwrap();
    let (logit, loc, scale) = layer.params();
    store.set_raw(logit, Tensor::vector(&[0.7])).unwrap();
    let (x, t) = (1.3, 0.4);
    let exact = {
        let tape = Tape::new();
        let (l, m, sd) = (
            tape.param(&store, logit),
            tape.param(&store, loc).reshape(&[]).unwrap(),
            tape.param(&store, scale).reshape(&[]).unwrap(),
        );
        let q = RelaxedBernoulli::new(tape.scalar(2.0), l.reshape(&[]).unwrap()).unwrap();
        let e = expectation_quadrature(&q, 1e-9, 1.0 - 1e-9, 20_001, |z| {
            let xz = z * x;
            Ok((xz * m - t).square() + xz.square() * sd.square())
        })
        .unwrap();
        let g = e.backward().unwrap();
        [logit, loc, scale]
            .iter()
            .map(|p| g.param(*p).unwrap().data()[0])
            .collect::<Vec<f64>>()
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, rng);
            let y = layer.forward(&mut cx, tape.constant(Tensor::from_rows(&[[x]])?))?;
            let g = (y - t).square().sum().backward()?;
            Ok([logit, loc, scale]
                .iter()
                .map(|p| g.param(*p).unwrap().data()[0])
                .collect())
        },
        &exact,
        &StatGradCheck {
            samples: 40_000,
            ..StatGradCheck::default()
        },
        &mut StdRng::seed_from_u64(5),
    )
    .unwrap();
}
