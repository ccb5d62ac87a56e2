//! Hierarchical (random-scale) priors on variational kernels.

use crate::layers::gradcheck_with_divergence;
use bayesgrad::layers::{HierarchicalScale, Reparameterization, ScalePrior};
use bayesgrad::prelude::*;
use std::sync::Arc;

const LOGNORMAL: ScalePrior = ScalePrior::LogNormal {
    loc: 0.0,
    scale: 1.0,
};
const GAMMA: ScalePrior = ScalePrior::Gamma {
    concentration: 2.0,
    rate: 2.0,
};
const HORSESHOE: ScalePrior = ScalePrior::HalfCauchy { scale: 1.0 };

fn layer(
    store: &mut ParamStore<f64>,
    local: ScalePrior,
    global: ScalePrior,
) -> bayesgrad::layers::DenseVariational<f64, Reparameterization> {
    let mut rng = StdRng::seed_from_u64(0);
    let scale = HierarchicalScale::new(store, "h/prior", 3, local, global).unwrap();
    let config = VariationalConfig {
        prior: Prior::Hierarchical(Arc::new(scale)),
        ..VariationalConfig::default()
    };
    bayesgrad::layers::DenseVariational::with_config(store, "h", 3, 2, config, &mut rng).unwrap()
}

#[test]
fn gradcheck_every_parameter_including_the_scales() {
    // the horseshoe's scale divergence is a Monte Carlo estimate, its draws
    // fixed by the seed the check passes each evaluation
    for (local, global) in [(LOGNORMAL, LOGNORMAL), (HORSESHOE, HORSESHOE)] {
        let mut store = ParamStore::new();
        let l = layer(&mut store, local, global);
        let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]).unwrap();
        // kernel loc, rho, bias and four scale parameters
        assert_eq!(store.params().count(), 7);
        gradcheck_with_divergence(&l, &mut store, &x, (3, SampleMode::Sample));
    }
}

/// Both divergence nodes are registered and counted once by the ELBO; with
/// a Gamma or half-Cauchy prior on the scales the scale divergence is a
/// Monte Carlo estimate, still finite and differentiable.
#[test]
fn kernel_and_scale_divergences_are_named_nodes() {
    for (local, global) in [
        (LOGNORMAL, LOGNORMAL),
        (GAMMA, LOGNORMAL),
        (LOGNORMAL, GAMMA),
        (HORSESHOE, HORSESHOE),
    ] {
        let mut store = ParamStore::new();
        let l = layer(&mut store, local, global);
        let tape = Tape::new();
        let mut rng = StdRng::seed_from_u64(1);
        let mut cx = Forward::new(&tape, &store, &mut rng);
        let y = l
            .forward(&mut cx, tape.constant(Tensor::ones(&[4, 3])))
            .unwrap();
        let terms = cx.divergences().values();
        let names: Vec<&str> = terms.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["h/kernel_divergence", "h/scale_divergence"]);
        assert!(terms.iter().all(|(_, v)| v.is_finite()));
        let elbo = Elbo::new(KlWeight::PerExample { num_examples: 100 });
        let batch = Batch {
            index: 0,
            size: 4,
            step: 0,
        };
        let out = elbo
            .loss(cx.divergences(), y.square().sum(), batch)
            .unwrap();
        let g = out.loss.backward().unwrap();
        let ((local_loc, _), (global_loc, _)) = (
            store
                .get("h/prior/local_scale_loc")
                .map(|p| (p, ()))
                .unwrap(),
            store
                .get("h/prior/global_scale_loc")
                .map(|p| (p, ()))
                .unwrap(),
        );
        assert!(g.param(local_loc).is_some() && g.param(global_loc).is_some());
    }
}

#[test]
fn hierarchical_priors_refuse_bad_settings_by_name() {
    let mut store = ParamStore::<f64>::new();
    let bad = ScalePrior::Gamma {
        concentration: -1.0,
        rate: 1.0,
    };
    let e = HierarchicalScale::new(&mut store, "p", 3, bad, LOGNORMAL)
        .err()
        .unwrap();
    assert!(e.to_string().contains("local"), "{e}");
    for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let bad = ScalePrior::HalfCauchy { scale };
        let e = HierarchicalScale::new(&mut store, "p", 3, LOGNORMAL, bad)
            .err()
            .unwrap();
        assert!(e.to_string().contains("global"), "{e}");
    }
    assert!(HierarchicalScale::new(&mut store, "p", 0, LOGNORMAL, LOGNORMAL).is_err());
    assert!(store.is_empty());
    // a scale for 4 input units on a kernel with 3
    let mut rng = StdRng::seed_from_u64(0);
    let scale = HierarchicalScale::new(&mut store, "p", 4, LOGNORMAL, LOGNORMAL).unwrap();
    let n = store.len();
    assert!(matches!(
        HierarchicalScale::new(&mut store, "p", 4, LOGNORMAL, LOGNORMAL),
        Err(Error::DuplicateParam { .. })
    ));
    assert_eq!(store.len(), n);
    let config = VariationalConfig {
        prior: Prior::Hierarchical(Arc::new(scale.clone())),
        ..VariationalConfig::default()
    };
    let l = DenseFlipout::with_config(&mut store, "h", 3, 2, config, &mut rng).unwrap();
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    let e = l
        .forward(&mut cx, tape.constant(Tensor::ones(&[2, 3])))
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("'h'") && e.to_string().contains("4"),
        "{e}"
    );
    // a variational bias under a hierarchical prior
    let config = VariationalConfig {
        prior: Prior::Hierarchical(Arc::new(scale)),
        bias: BiasMode::Variational,
        ..VariationalConfig::default()
    };
    let l = DenseFlipout::with_config(&mut store, "b", 4, 2, config, &mut rng).unwrap();
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    let e = l
        .forward(&mut cx, tape.constant(Tensor::ones(&[2, 4])))
        .err()
        .unwrap();
    assert!(e.to_string().contains("bias"), "{e}");
}

/// A scale shared by two layers (a global shrinkage over a network) is
/// drawn once a pass and its divergence registered once; each layer used
/// to draw it anew and register it again, counting `KL(q(λ, τ) ‖ p)` once
/// per layer in the ELBO.
#[test]
fn a_scale_shared_by_layers_is_drawn_and_counted_once_a_pass() -> Result<()> {
    let mut store = ParamStore::<f64>::new();
    let scale = Arc::new(HierarchicalScale::new(
        &mut store, "shared", 3, LOGNORMAL, GAMMA,
    )?);
    // two layers with the same posterior (the same seed), one scale
    let mut layer = |name: &str| {
        let config = VariationalConfig {
            prior: Prior::Hierarchical(scale.clone()),
            ..VariationalConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        DenseReparameterization::with_config(&mut store, name, 3, 2, config, &mut rng)
    };
    let (a, b) = (layer("a")?, layer("b")?);
    let mut rng = StdRng::seed_from_u64(1);
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    let x = tape.constant(Tensor::ones(&[4, 3]));
    a.forward(&mut cx, x)?;
    b.forward(&mut cx, x)?;
    let d = cx.divergences();
    let names: Vec<String> = d.values().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "a/kernel_divergence",
            "a/scale_divergence",
            "b/kernel_divergence"
        ]
    );
    // the same posterior against the same drawn prior: the same divergence
    let kernel = |n: &str| d.get(n).unwrap().item().unwrap();
    assert_eq!(kernel("a/kernel_divergence"), kernel("b/kernel_divergence"));
    Ok(())
}
