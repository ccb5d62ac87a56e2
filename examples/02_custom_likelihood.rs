//! The Keras users' `add_weight` question, done right: a custom likelihood
//! layer with a trainable mean and standard deviation, fitted to data.
//!
//! In Keras, building `Normal(self.mu[0], self.sigma[0])` once in `build()`
//! freezes the parameters ("no gradients provided"). Here the layer keeps
//! `Param`s and builds the distribution from the tape on every step, so
//! indexing (`.index(0)`) is an ordinary differentiable op.
//!
//! Run: `cargo run --release --example 02_custom_likelihood`

use bayesgrad::prelude::*;

/// A likelihood layer with two trainable weights of shape [1], as in the Keras question.
struct NormalLikelihood {
    mu: Param,
    sigma: Param,
}

impl NormalLikelihood {
    fn new(store: &mut ParamStore<f64>) -> Self {
        NormalLikelihood {
            mu: store.add("likelihood/mu", Tensor::vector(&[0.0])),
            sigma: store.add_positive("likelihood/sigma", Tensor::vector(&[1.0])),
        }
    }

    /// The distribution, built fresh on each tape.
    fn distribution<'t>(
        &self,
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
    ) -> Result<Normal<'t, f64>> {
        let mu = tape.param(store, self.mu).index(0)?;
        let sigma = tape.param(store, self.sigma).index(0)?;
        Normal::new(mu, sigma)
    }
}

fn main() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(42);
    let truth = (3.0, 0.7);
    let data: Vec<f64> = (0..2000)
        .map(|_| truth.0 + truth.1 * rng.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();
    let n = data.len() as f64;
    let mean = data.iter().sum::<f64>() / n;
    let std = (data.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let x = Tensor::vector(&data);

    let mut store = ParamStore::new();
    let layer = NormalLikelihood::new(&mut store);
    let mut opt = Adam::new(0.05);
    for step in 0..=600 {
        let tape = Tape::new();
        let d = layer.distribution(&tape, &store)?;
        let nll = -d.log_prob(tape.constant(x.clone()))?.mean();
        if step % 100 == 0 {
            // the loss and the parameters it was computed from, before the update
            println!(
                "step {step:>3}  nll {:.5}  mu {:.4}  sigma {:.4}",
                nll.item()?,
                d.loc().item()?,
                d.scale().item()?
            );
        }
        let grads = nll.backward()?;
        opt.step(&mut store, &grads)?; // errors, naming the parameter, if one got no gradient
    }
    let tape = Tape::new();
    let d = layer.distribution(&tape, &store)?;
    println!(
        "fitted: mu = {:.4}, sigma = {:.4}",
        d.loc().item()?,
        d.scale().item()?
    );
    println!("sample: mean = {mean:.4}, std = {std:.4} (maximum likelihood)");
    Ok(())
}
