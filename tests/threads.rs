//! Threads: training on several user threads at once gives, bit for bit,
//! what training on one gives, whatever the pool's thread count; so do the
//! implicitly reparameterized draws and their gradients.

use bayesgrad::prelude::*;

/// Eight steps of a Bayesian MLP large enough for every parallel kernel
/// (GEMMs above the split threshold, elementwise ops over 32K elements);
/// returns every parameter's final values.
fn train(seed: u64) -> Result<Vec<Vec<f32>>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = ParamStore::<f32>::new();
    let net = Sequential::new()
        .push(DenseFlipout::new(&mut store, "hidden", 256, 256, &mut rng)?)
        .push(Activation::Relu)
        .push(DenseLocalReparameterization::new(
            &mut store, "out", 256, 10, &mut rng,
        )?);
    let x = Tensor::from_fn(&[64, 256], |i| ((i * 7919) % 1000) as f32 / 1000.0);
    let labels: Vec<usize> = (0..64).map(|i| (i * 7 + seed as usize) % 10).collect();
    let elbo = Elbo::new(KlWeight::PerExample { num_examples: 6400 });
    let mut opt = Adam::new(1e-3);
    for step in 0..8 {
        let grads = {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, &mut rng);
            let logits = net.forward(&mut cx, tape.constant(x.clone()))?;
            let nll = -Categorical::from_logits(logits)?
                .log_prob_labels(&labels)?
                .sum();
            let batch = Batch {
                index: 0,
                size: 64,
                step,
            };
            elbo.loss(cx.divergences(), nll, batch)?.loss.backward()?
        };
        opt.step(&mut store, &grads)?;
    }
    Ok(store
        .params()
        .map(|p| store.raw(p).data().to_vec())
        .collect())
}

/// Gamma, Beta and Dirichlet draws (long enough to split the sampler and
/// the implicit derivatives over threads) and their gradients, bit for bit.
fn implicit_draws(seed: u64) -> Result<Vec<Vec<u64>>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::from_fn(&[3000], |i| 0.3 + (i % 17) as f64 * 0.7));
    let b = tape.var(Tensor::from_fn(&[3000], |i| 0.5 + (i % 5) as f64));
    let c = tape.var(Tensor::from_fn(&[1000, 3], |i| [1.5, 2.0, 0.7][i % 3]));
    let g = Gamma::new(a, tape.scalar(1.0))?.rsample(&mut rng)?;
    let x = Beta::new(a, b)?.rsample(&mut rng)?;
    let d = Dirichlet::new(c)?.rsample(&mut rng)?;
    let loss = g.sum() + (x * x).sum() + (d * Tensor::vector(&[1.0, 2.0, 3.0])).sum();
    let grads = loss.backward()?;
    let bits = |t: &Tensor<f64>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<u64>>();
    let mut out = vec![bits(&g.value()), bits(&x.value()), bits(&d.value())];
    for v in [a, b, c] {
        out.push(bits(grads.get(v).expect("a gradient")));
    }
    Ok(out)
}

#[test]
fn four_training_threads_match_one_thread_on_any_pool_size() -> Result<()> {
    let original = bayesgrad::threads();
    bayesgrad::set_threads(1)?;
    let want: Vec<_> = (0..4).map(train).collect::<Result<_>>()?;
    let want_draws: Vec<_> = (0..4).map(implicit_draws).collect::<Result<_>>()?;
    for pool in [2, 3, original.max(2)] {
        bayesgrad::set_threads(pool)?;
        let handles: Vec<_> = (0..4)
            .map(|seed| std::thread::spawn(move || train(seed)))
            .collect();
        for (seed, handle) in handles.into_iter().enumerate() {
            let got = handle.join().expect("a training thread panicked")?;
            let same = got.iter().zip(&want[seed]).all(|(a, b)| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            });
            assert!(same, "seed {seed} with a pool of {pool} threads");
        }
        for seed in 0..4 {
            let got = implicit_draws(seed)?;
            assert!(
                got == want_draws[seed as usize],
                "draws of seed {seed}, {pool} threads"
            );
        }
    }
    bayesgrad::set_threads(original)?;
    Ok(())
}
