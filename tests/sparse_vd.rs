//! Sparse variational dropout: gradients, the KL approximation, pruning.

use crate::layers::gradcheck_with_divergence;
use bayesgrad::layers::{DenseSparseVd, SparseVdConfig};
use bayesgrad::prelude::*;

fn layer(store: &mut ParamStore<f64>, log_sigma2: f64) -> DenseSparseVd {
    let config = SparseVdConfig {
        theta_init_std: 0.5,
        log_sigma2_init: log_sigma2,
        ..SparseVdConfig::default()
    };
    let map = bayesgrad::layers::DenseMap {
        inputs: 3,
        outputs: 2,
    };
    DenseSparseVd::from_map(store, "s", map, config, &mut StdRng::seed_from_u64(0)).unwrap()
}

/// Both passes: the sampled one, whose divergence op also hands the
/// weights' variances to the output's variance, and the posterior mean,
/// where the divergence alone reaches `ln σ²`.
#[test]
fn gradcheck_sparse_vd_layer_with_its_divergence() {
    let mut store = ParamStore::new();
    let l = layer(&mut store, -2.0);
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]).unwrap();
    for mode in [SampleMode::Sample, SampleMode::PosteriorMean] {
        gradcheck_with_divergence(&l, &mut store, &x, (1, mode));
    }
}

/// A loss of the output alone, and one of the divergence alone: the
/// divergence op's backward gets only the variances' gradient in the first,
/// only the divergence's in the second.
#[test]
fn gradcheck_sparse_vd_output_and_divergence_apart() {
    let mut store = ParamStore::new();
    let l = layer(&mut store, -2.0);
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]).unwrap();
    let params: Vec<Param> = store.params().collect();
    for output in [true, false] {
        bayesgrad::autodiff::gradcheck::gradcheck_params(
            |tape, store| {
                let mut rng = StdRng::seed_from_u64(1);
                let mut cx = Forward::new(tape, store, &mut rng);
                let y = l.forward(&mut cx, tape.constant(x.clone()))?;
                Ok(match output {
                    true => y.square().sum(),
                    false => cx.divergences().total(),
                })
            },
            &mut store,
            &params,
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("output alone: {output}: {e}"));
    }
}

/// `ln σ²` read a second time by the loss, outside the layer: the tape sums
/// that read's gradient with the one the divergence op gives (the unit test
/// `gradcheck_divergence_op_with_log_sigma2_used_again` uses one var for
/// both). With the divergence in the loss, and without it.
#[test]
fn gradcheck_sparse_vd_with_log_sigma2_used_twice() {
    let mut store = ParamStore::new();
    let l = layer(&mut store, -2.0);
    let (_, ls2) = l.kernel_params();
    let x = Tensor::from_rows(&[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]]).unwrap();
    let params: Vec<Param> = store.params().collect();
    for with_divergence in [true, false] {
        bayesgrad::autodiff::gradcheck::gradcheck_params(
            |tape, store| {
                let mut rng = StdRng::seed_from_u64(1);
                let mut cx = Forward::new(tape, store, &mut rng);
                let y = l.forward(&mut cx, tape.constant(x.clone()))?;
                let again = cx.param(ls2)?.square().sum() * 0.1;
                let loss = y.square().sum() + again;
                Ok(match with_divergence {
                    true => loss + cx.divergences().total(),
                    false => loss,
                })
            },
            &mut store,
            &params,
            &GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("with the divergence: {with_divergence}: {e}"));
    }
}

/// The KL approximation of Molchanov et al. (2017) at a few ln α: it tends
/// to 0 as α grows and to (k1 - ln α / 2 ...) as α shrinks; here against
/// the formula evaluated by hand.
#[test]
fn divergence_is_the_papers_approximation() {
    let mut store = ParamStore::new();
    let l = layer(&mut store, -2.0);
    let (theta, _) = l.kernel_params();
    store.set_raw(theta, Tensor::full(&[3, 2], 0.5)).unwrap();
    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(0);
    let mut cx = Forward::new(&tape, &store, &mut rng);
    l.forward(&mut cx, tape.constant(Tensor::ones(&[1, 3])))
        .unwrap();
    let kl = cx.divergences().total().item().unwrap();
    let la = -2.0 - (0.25f64).ln();
    let (k1, k2, k3) = (0.63576, 1.87320, 1.48695);
    let neg = k1 / (1.0 + (-(k2 + k3 * la)).exp()) - 0.5 * (1.0 + (-la).exp()).ln() - k1;
    assert!((kl - 6.0 * -neg).abs() < 1e-12, "{kl} vs {}", -6.0 * neg);
    let la_tensor = l.log_alpha(&store).unwrap();
    assert!(la_tensor.data().iter().all(|&v| (v - la).abs() < 1e-12));
}

/// One weight's term of the paper's approximation (eq. 14) in `f64` and its
/// derivatives in `ln σ²` and in `θ`: `(term, dterm/d ln σ², dterm/dθ)`.
fn papers_term(t: f64, s: f64) -> (f64, f64, f64) {
    let (k1, k2, k3) = (0.63576, 1.87320, 1.48695);
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let u = t * t + 1e-16;
    let la = s - u.ln();
    let sg = sigmoid(k2 + k3 * la);
    let term = k1 - k1 * sg + 0.5 * (-la).exp().ln_1p();
    let slope = -k1 * k3 * sg * (1.0 - sg) - 0.5 * sigmoid(-la);
    (term, slope, slope * -2.0 * t / u)
}

/// Over more weights than one block of the divergence's summation (680:
/// two whole blocks of 256 and part of a third), each with its own θ and
/// ln σ², the divergence is the sum of the paper's terms and its gradients
/// in ln σ² and θ are each weight's own derivative: a term or a slope
/// given to the wrong weight shows here, where every weight differs.
#[test]
fn divergence_and_gradients_over_several_blocks_are_each_weights() {
    let (inputs, outputs) = (40, 17);
    let mut store = ParamStore::<f64>::new();
    let map = bayesgrad::layers::DenseMap { inputs, outputs };
    let l = DenseSparseVd::from_map(
        &mut store,
        "s",
        map,
        SparseVdConfig::default(),
        &mut StdRng::seed_from_u64(0),
    )
    .unwrap();
    let (theta, ls2) = l.kernel_params();
    let n = inputs * outputs;
    let t: Vec<f64> = (0..n)
        .map(|i| ((i * 37 % 101) as f64 - 50.0) / 40.0)
        .collect();
    let s: Vec<f64> = (0..n).map(|i| (i * 53 % 89) as f64 / 6.0 - 10.0).collect();
    store
        .set_raw(
            theta,
            Tensor::from_vec(t.clone(), &[inputs, outputs]).unwrap(),
        )
        .unwrap();
    store
        .set_raw(
            ls2,
            Tensor::from_vec(s.clone(), &[inputs, outputs]).unwrap(),
        )
        .unwrap();
    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(0);
    let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::PosteriorMean);
    l.forward(&mut cx, tape.constant(Tensor::ones(&[1, inputs])))
        .unwrap();
    let kl = cx.divergences().total();
    let grads = kl.backward().unwrap();
    let (mut total, mut scale) = (0.0, 0.0);
    let (g_theta, g_ls2) = (grads.param(theta).unwrap(), grads.param(ls2).unwrap());
    for i in 0..n {
        let (term, slope, d_theta) = papers_term(t[i], s[i]);
        total += term;
        scale += term.abs();
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
        assert!(
            close(g_ls2.data()[i], slope),
            "weight {i}: dKL/d ln σ² {} against {slope}",
            g_ls2.data()[i]
        );
        assert!(
            close(g_theta.data()[i], d_theta),
            "weight {i}: dKL/dθ {} against {d_theta}",
            g_theta.data()[i]
        );
    }
    let kl = kl.item().unwrap();
    assert!((kl - total).abs() <= 1e-12 * scale, "{kl} against {total}");
}

/// The `f32` divergence (vectorizable `ln`, `exp`, sigmoid and softplus)
/// against the `f64` formula at the same weights, over several blocks; a
/// weight whose `θ²` overflows makes the divergence infinite (an error).
#[test]
fn f32_divergence_and_gradients_match_the_f64_formula() {
    let (inputs, outputs) = (40, 17);
    let n = inputs * outputs;
    let t: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    let s: Vec<f32> = (0..n).map(|i| (i * 53 % 89) as f32 / 6.0 - 10.0).collect();
    let run = |t: &[f32]| {
        let mut store = ParamStore::<f32>::new();
        let map = bayesgrad::layers::DenseMap { inputs, outputs };
        let config = SparseVdConfig::default();
        let mut rng = StdRng::seed_from_u64(0);
        let l = DenseSparseVd::from_map(&mut store, "s", map, config, &mut rng).unwrap();
        let (theta, ls2) = l.kernel_params();
        for (p, v) in [(theta, t), (ls2, &s[..])] {
            let v = Tensor::from_vec(v.to_vec(), &[inputs, outputs]).unwrap();
            store.set_raw(p, v).unwrap();
        }
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, &store, &mut rng);
        let y = l.forward(&mut cx, tape.constant(Tensor::ones(&[1, inputs])))?;
        let kl = cx.divergences().total();
        let grads = kl.backward()?;
        let (g_theta, g_ls2) = (grads.param(theta).unwrap(), grads.param(ls2).unwrap());
        // the output's gradient in ln σ², through the variances the op gives
        let g_out = y.sum().backward()?.param(ls2).unwrap().data().to_vec();
        let g = (g_theta.data().to_vec(), g_ls2.data().to_vec(), g_out);
        Ok::<_, bayesgrad::Error>((kl.item()?, g))
    };
    let (kl, (g_theta, g_ls2, g_out)) = run(&t).unwrap();
    // y_j = Σ_i θ_ij + ε_j (Σ_i σ²_ij)^½ for an input of ones: its gradient in
    // ln σ²_ij over σ²_ij is the same along a column
    for j in 0..outputs {
        let ratio =
            |i: usize| f64::from(g_out[i * outputs + j]) / f64::from(s[i * outputs + j]).exp();
        let first = ratio(0);
        for i in 1..inputs {
            let r = ratio(i);
            assert!(
                (r - first).abs() <= 1e-5 * first.abs(),
                "column {j}, row {i}: {r} against {first}"
            );
        }
    }
    let (mut total, mut scale) = (0.0, 0.0);
    for i in 0..n {
        let (term, slope, d_theta) = papers_term(f64::from(t[i]), f64::from(s[i]));
        total += term;
        scale += term.abs();
        let close = |x: f32, y: f64| (f64::from(x) - y).abs() <= 1e-5 * (1.0 + y.abs());
        assert!(
            close(g_ls2[i], slope),
            "weight {i}: {} against {slope}",
            g_ls2[i]
        );
        assert!(
            close(g_theta[i], d_theta),
            "weight {i}: {} against {d_theta}",
            g_theta[i]
        );
    }
    let kl = f64::from(kl);
    assert!((kl - total).abs() <= 1e-5 * scale, "{kl} against {total}");
    // θ² overflows f32: the divergence is infinite, which the layer refuses
    // (instead of a finite value)
    let mut t = t;
    t[300] = 1e20;
    let err = run(&t)
        .map(|r| r.0)
        .expect_err("θ = 1e20 gave a finite divergence");
    assert!(err.to_string().contains("is inf"), "{err}");
}

/// Weights whose ln α exceeds the threshold are 0 in the posterior-mean
/// network, and counted by `sparsity`.
#[test]
fn pruned_weights_are_zero_in_the_posterior_mean_network() {
    let mut store = ParamStore::new();
    let l = layer(&mut store, -10.0);
    let (theta, ls2) = l.kernel_params();
    store
        .set_raw(
            theta,
            Tensor::from_rows(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).unwrap(),
        )
        .unwrap();
    // weight (0, 1) gets ln α = 10 - ln 4 > 3, the rest stay at ln σ² = -10
    let mut s2 = Tensor::full(&[3, 2], -10.0);
    s2.data_mut()[1] = 10.0;
    store.set_raw(ls2, s2).unwrap();
    assert_eq!(l.sparsity(&store).unwrap(), (1, 6));
    let tape = Tape::new();
    let mut rng = StdRng::seed_from_u64(0);
    let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::PosteriorMean);
    let x = Tensor::from_rows(&[[1.0, 0.0, 0.0]]).unwrap();
    let y = l.forward(&mut cx, tape.constant(x)).unwrap().value();
    assert_eq!(y.data(), &[1.0, 0.0]); // bias 0; w01 = 2 pruned
}

#[test]
fn sparse_vd_refuses_bad_settings_and_inputs() {
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    for config in [
        SparseVdConfig {
            theta_init_std: -1.0,
            ..SparseVdConfig::default()
        },
        SparseVdConfig {
            log_alpha_threshold: f64::NAN,
            ..SparseVdConfig::default()
        },
    ] {
        let map = bayesgrad::layers::DenseMap {
            inputs: 2,
            outputs: 2,
        };
        assert!(DenseSparseVd::from_map(&mut store, "bad", map, config, &mut rng).is_err());
    }
    assert!(
        store.is_empty(),
        "a refused layer leaves the store unchanged"
    );
    let l = DenseSparseVd::new(&mut store, "ok", 3, 2, &mut rng).unwrap();
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, &store, &mut rng);
    let e = l
        .forward(&mut cx, tape.constant(Tensor::ones(&[2, 4])))
        .err()
        .unwrap();
    assert!(e.to_string().contains("ok"), "{e}");
}
