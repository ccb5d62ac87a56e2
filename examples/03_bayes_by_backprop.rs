//! Bayes by Backprop on a small synthetic regression problem: the ELBO
//! falls while training, and the predictive uncertainty grows away from the
//! data.
//!
//! Run: `cargo run --release --example 03_bayes_by_backprop`

use bayesgrad::Batch;
use bayesgrad::layers::predict::{Predict, predict_regression};
use bayesgrad::prelude::*;

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    // y = sin(3x) + 0.1 noise, observed only for x in [-1, 1]
    let n = 256;
    let xs: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|x| (3.0 * x).sin() + 0.1 * rng.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();

    let mut store = ParamStore::<f64>::new();
    let net = Sequential::new()
        .push(DenseFlipout::new(&mut store, "hidden", 1, 64, &mut rng)?)
        .push(Activation::Tanh)
        .push(DenseFlipout::new(&mut store, "out", 64, 1, &mut rng)?);
    let noise = store.add_positive("noise_scale", Tensor::scalar(0.5));
    let batch_size = 32;
    let elbo = Elbo::new(KlWeight::PerExample { num_examples: n });
    let mut opt = Adam::new(0.01);
    let mut order: Vec<usize> = (0..n).collect();
    let mut step = 0;
    for epoch in 0..=600 {
        bayesgrad::train::shuffle(&mut order, &mut rng);
        let mut epoch_loss = 0.0;
        for (index, chunk) in order.chunks(batch_size).enumerate() {
            let x = Tensor::from_vec(chunk.iter().map(|&i| xs[i]).collect(), &[chunk.len(), 1])?;
            let y = Tensor::from_vec(chunk.iter().map(|&i| ys[i]).collect(), &[chunk.len(), 1])?;
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, &mut rng);
            let mean = net.forward(&mut cx, tape.constant(x))?;
            let likelihood = Normal::new(mean, tape.param(&store, noise))?;
            let out = elbo.loss_from_likelihood(
                cx.divergences(),
                &likelihood,
                tape.constant(y),
                Batch {
                    index,
                    size: chunk.len(),
                    step,
                },
            )?;
            epoch_loss += out.loss.item()? * chunk.len() as f64 / n as f64;
            opt.step(&mut store, &out.loss.backward()?)?;
            step += 1;
        }
        if epoch % 100 == 0 {
            let sigma = Tape::new().param(&store, noise).item()?;
            println!(
                "epoch {epoch:>3}  negative ELBO per example {epoch_loss:>8.4}  noise scale {sigma:.3}"
            );
        }
    }

    println!("\n   x    predictive mean   epistemic std   (data only in [-1, 1])");
    let grid = [-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0];
    let x = Tensor::from_vec(grid.to_vec(), &[grid.len(), 1])?;
    let pred = predict_regression(&net, &store, &x, Predict::Samples(500), &mut rng)?;
    for (i, x) in grid.iter().enumerate() {
        println!(
            "{x:>5.1}   {:>12.3}     {:>10.3}",
            pred.mean.data()[i],
            pred.variance.data()[i].sqrt()
        );
    }
    Ok(())
}
