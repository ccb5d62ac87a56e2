//! Bayesian networks from trained deterministic ones.

use bayesgrad::layers::convert::{
    MIN_SCALE, PosteriorScales, initialize_from_deterministic, variational_from_deterministic,
};
use bayesgrad::layers::{DenseSparseVd, Flipout};
use bayesgrad::prelude::*;

fn trained(rng: &mut StdRng) -> (Sequential<f64>, ParamStore<f64>) {
    let mut store = ParamStore::new();
    let net = Sequential::new()
        .push(Dense::new(&mut store, "h", 3, 4, rng).unwrap())
        .push(Activation::Tanh)
        .push(Dense::new(&mut store, "o", 4, 2, rng).unwrap());
    // a bias that is not zero, and one exact zero weight (for the scale floor)
    let b = store.get("h/bias").unwrap();
    store
        .set_value(b, Tensor::vector(&[0.1, -0.2, 0.3, 0.0]))
        .unwrap();
    let k = store.get("o/kernel").unwrap();
    let mut w = store.value(k);
    w.data_mut()[0] = 0.0;
    store.set_value(k, w).unwrap();
    (net, store)
}

fn outputs(net: &Sequential<f64>, store: &ParamStore<f64>, mode: SampleMode) -> Tensor<f64> {
    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(9);
    let mut cx = Forward::new(&tape, store, &mut rng).with_mode(mode);
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.3, 0.1, -0.7]]).unwrap();
    net.forward(&mut cx, tape.constant(x)).unwrap().value()
}

#[test]
fn moped_conversion_keeps_the_network_and_sets_prior_and_scales() {
    let mut rng = StdRng::seed_from_u64(0);
    let (det, weights) = trained(&mut rng);
    let mut store = ParamStore::new();
    let bnn = variational_from_deterministic::<f64, Flipout>(
        &det,
        &weights,
        &mut store,
        &VariationalConfig::default(),
        Some(0.1),
        &mut rng,
    )
    .unwrap();
    let want = outputs(&det, &weights, SampleMode::Sample);
    assert_eq!(outputs(&bnn, &store, SampleMode::PosteriorMean), want);
    // posterior scales delta |w|, floored
    let w = weights.value(weights.get("o/kernel").unwrap());
    let scale = store.value(store.get("o/kernel_posterior_rho").unwrap());
    for (s, w) in scale.data().iter().zip(w.data()) {
        let target = (0.1 * w.abs()).max(MIN_SCALE);
        assert!(
            (s - target).abs() < 1e-12 * target.max(1.0),
            "{s} vs {target}"
        );
    }
    // the prior N(w, delta |w|) equals the posterior: every KL is 0 at the start
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::PosteriorMean);
    bnn.forward(&mut cx, tape.constant(Tensor::ones(&[1, 3])))
        .unwrap();
    assert!(cx.divergences().total().item().unwrap().abs() < 1e-12);
}

#[test]
fn initialization_works_for_every_estimator_and_sparse_dropout() {
    let mut rng = StdRng::seed_from_u64(1);
    let (det, weights) = trained(&mut rng);
    let want = outputs(&det, &weights, SampleMode::Sample);
    let mut store = ParamStore::new();
    let bnn = Sequential::new()
        .push(DenseLocalReparameterization::new(&mut store, "h", 3, 4, &mut rng).unwrap())
        .push(Activation::Tanh)
        .push(DenseSparseVd::new(&mut store, "o", 4, 2, &mut rng).unwrap());
    initialize_from_deterministic(&bnn, &mut store, &det, &weights, PosteriorScales::Keep).unwrap();
    let got = outputs(&bnn, &store, SampleMode::PosteriorMean);
    for (a, b) in got.data().iter().zip(want.data()) {
        assert!((a - b).abs() < 1e-12);
    }
    // MOPED scales have nowhere to go in a sparse layer: refused, nothing written
    let before: Vec<Tensor<f64>> = store.params().map(|p| store.raw(p).clone()).collect();
    let e = initialize_from_deterministic(
        &bnn,
        &mut store,
        &det,
        &weights,
        PosteriorScales::Moped { delta: 0.1 },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("sparse"), "{e}");
    let after: Vec<Tensor<f64>> = store.params().map(|p| store.raw(p).clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn mismatched_networks_are_refused_with_the_store_unchanged() {
    let mut rng = StdRng::seed_from_u64(2);
    let (det, weights) = trained(&mut rng);
    let mut store = ParamStore::new();
    let wrong_width = Sequential::new()
        .push(DenseFlipout::new(&mut store, "h", 3, 4, &mut rng).unwrap())
        .push(Activation::Tanh)
        .push(DenseFlipout::new(&mut store, "o", 4, 3, &mut rng).unwrap());
    let before: Vec<Tensor<f64>> = store.params().map(|p| store.raw(p).clone()).collect();
    let e = initialize_from_deterministic(
        &wrong_width,
        &mut store,
        &det,
        &weights,
        PosteriorScales::Keep,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("layer 2"), "{e}");
    let after: Vec<Tensor<f64>> = store.params().map(|p| store.raw(p).clone()).collect();
    assert_eq!(before, after);
    let wrong_activation = Sequential::new()
        .push(DenseFlipout::new(&mut store, "h2", 3, 4, &mut rng).unwrap())
        .push(Activation::Relu)
        .push(DenseFlipout::new(&mut store, "o2", 4, 2, &mut rng).unwrap());
    let e = initialize_from_deterministic(
        &wrong_activation,
        &mut store,
        &det,
        &weights,
        PosteriorScales::Keep,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("layer 1"), "{e}");
    let short =
        Sequential::new().push(DenseFlipout::new(&mut store, "h3", 3, 4, &mut rng).unwrap());
    assert!(
        initialize_from_deterministic(&short, &mut store, &det, &weights, PosteriorScales::Keep)
            .is_err()
    );
    let e = initialize_from_deterministic(
        &short,
        &mut store,
        &det,
        &weights,
        PosteriorScales::Moped { delta: 0.0 },
    );
    assert!(e.err().unwrap().to_string().contains("delta"));
    // a conversion into a store that already holds the names: refused before any change
    let mut taken = ParamStore::new();
    taken.add("h/bias", Tensor::zeros(&[4]));
    let n = taken.len();
    let r = variational_from_deterministic::<f64, Flipout>(
        &det,
        &weights,
        &mut taken,
        &VariationalConfig::default(),
        None,
        &mut rng,
    );
    assert!(matches!(r, Err(Error::DuplicateParam { .. })));
    assert_eq!(taken.len(), n);
}

/// A MOPED scale `delta · |w|` that overflows in the second layer only:
/// refused, naming the parameter, with the store as it was (before, the
/// first layer's posterior had been written, and a conversion into a new
/// store left its parameters behind), so that a retry with a sane `delta`
/// starts clean.
#[test]
fn a_conversion_that_fails_part_way_leaves_the_store_unchanged() {
    let mut rng = StdRng::seed_from_u64(4);
    let (det, mut weights) = trained(&mut rng);
    let k = weights.get("o/kernel").unwrap();
    weights.set_value(k, Tensor::full(&[4, 2], 1e10)).unwrap();
    let huge = PosteriorScales::Moped { delta: 1e300 };

    let mut store = ParamStore::new();
    let bnn = Sequential::new()
        .push(DenseFlipout::new(&mut store, "h", 3, 4, &mut rng).unwrap())
        .push(Activation::Tanh)
        .push(DenseFlipout::new(&mut store, "o", 4, 2, &mut rng).unwrap());
    let state = |s: &ParamStore<f64>| -> Vec<(Tensor<f64>, u64)> {
        s.params()
            .map(|p| (s.raw(p).clone(), s.version(p).unwrap()))
            .collect()
    };
    let before = state(&store);
    let e = initialize_from_deterministic(&bnn, &mut store, &det, &weights, huge).unwrap_err();
    assert!(e.to_string().contains("o/kernel_posterior_rho"), "{e}");
    assert_eq!(state(&store), before);

    let mut fresh = ParamStore::new();
    fresh.add("other", Tensor::zeros(&[2]));
    let config = VariationalConfig::default();
    let r = variational_from_deterministic::<f64, Flipout>(
        &det,
        &weights,
        &mut fresh,
        &config,
        Some(1e300),
        &mut rng,
    );
    assert!(
        r.err()
            .unwrap()
            .to_string()
            .contains("o/kernel_posterior_rho")
    );
    assert_eq!(fresh.len(), 1);
    assert!(fresh.get("h/kernel_posterior_loc").is_none());
    let net = variational_from_deterministic::<f64, Flipout>(
        &det,
        &weights,
        &mut fresh,
        &config,
        Some(0.1),
        &mut rng,
    )
    .unwrap();
    assert_eq!(net.layers().len(), 3);
    assert_eq!(fresh.len(), 7);
}
