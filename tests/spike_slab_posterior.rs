//! The spike-and-slab posterior layer: gradients, its KL, its moments.

use bayesgrad::autodiff::gradcheck::gradcheck_params;
use bayesgrad::layers::{DenseMap, DenseSpikeAndSlab, SpikeAndSlabConfig};
use bayesgrad::prelude::*;

fn layer(store: &mut ParamStore<f64>) -> DenseSpikeAndSlab {
    let config = SpikeAndSlabConfig {
        prior_inclusion: 0.3,
        slab_scale: 1.5,
        inclusion_init: 0.6,
        loc_init_std: 0.7,
        scale_init: 0.4,
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
    let params: Vec<Param> = store.params().collect();
    gradcheck_params(
        |tape, store| {
            let mut rng = StdRng::seed_from_u64(1);
            let mut cx = Forward::new(tape, store, &mut rng);
            let y = l.forward(&mut cx, tape.constant(x.clone()))?;
            Ok(y.square().sum() + cx.divergences().total())
        },
        &mut store,
        &params,
        &GradCheck::default(),
    )
    .unwrap();
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
