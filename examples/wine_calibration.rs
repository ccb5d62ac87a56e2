//! Calibration of a Bayesian classifier against its deterministic twin.
//!
//! Run: `cargo run --release --example wine_calibration [-- --splits 20]`
//!
//! UCI wine-quality-red's quality scores (3 to 8) as 6 classes, on the
//! `uci_wine` protocol's splits and standardization (seed 0, 90/10). For
//! each split:
//!
//! - **MAP**: an 11 -> 50 -> 6 ReLU network of `Dense` layers trained on the
//!   log posterior (Categorical likelihood, N(0, 1) prior) for 60 epochs;
//! - **Bayesian**: its Flipout twin (`layers::convert`, posterior means at
//!   the MAP weights) trained by the ELBO (KL / N) for 40 more epochs, and
//!   predicting with 100 posterior samples.
//!
//! Both are scored on the test rows: expected calibration error (15 bins),
//! Brier score, NLL and accuracy; the last lines give the paired
//! differences (Bayesian minus MAP) with their standard errors.

#[path = "uci_wine/pipeline.rs"]
mod pipeline;

use bayesgrad::layers::Flipout;
use bayesgrad::layers::convert::variational_from_deterministic;
use bayesgrad::layers::metrics::{
    brier_score, expected_calibration_error, negative_log_likelihood,
};
use bayesgrad::layers::predict::{Predict, predict_classes};
use bayesgrad::prelude::*;
use bayesgrad::train::{Schedule, shuffle};

const CLASSES: usize = 6;
const HIDDEN: usize = 50;
const BATCH: usize = 32;
const MAP_EPOCHS: usize = 60;
const BAYES_EPOCHS: usize = 40;
const BINS: usize = 15;

/// ECE, Brier, NLL and accuracy of class probabilities.
#[derive(Debug, Clone, Copy)]
struct Scores {
    ece: f64,
    brier: f64,
    nll: f64,
    accuracy: f64,
}

fn score(probs: &Tensor<f64>, labels: &[usize]) -> Result<Scores> {
    let correct = probs
        .data()
        .chunks(CLASSES)
        .zip(labels)
        .filter(|(row, y)| {
            let best = (0..CLASSES).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            best == **y
        })
        .count();
    Ok(Scores {
        ece: expected_calibration_error(probs, labels, BINS)?,
        brier: brier_score(probs, labels)?,
        nll: negative_log_likelihood(probs, labels)?,
        accuracy: correct as f64 / labels.len() as f64,
    })
}

/// Standardized rows and class labels (quality - 3) of some table rows.
fn rows(
    data: &pipeline::Data,
    idx: &[usize],
    st: &pipeline::Standardizer,
) -> Result<(Tensor<f64>, Vec<usize>)> {
    let x: Vec<f64> = idx.iter().flat_map(|&i| st.apply(&data.x[i])).collect();
    let labels = idx
        .iter()
        .map(|&i| (data.y[i] as usize).saturating_sub(3).min(CLASSES - 1))
        .collect();
    Ok((Tensor::from_vec(x, &[idx.len(), 11])?, labels))
}

/// One epoch of minibatch steps over a fresh shuffle of `order`.
fn epoch(
    order: &mut [usize],
    rng: &mut StdRng,
    mut step: impl FnMut(&[usize], &mut StdRng) -> Result<()>,
) -> Result<()> {
    shuffle(order, rng);
    for chunk in order.chunks(BATCH) {
        step(chunk, rng)?;
    }
    Ok(())
}

fn run_split(data: &pipeline::Data, split: usize) -> Result<(Scores, Scores)> {
    let (mut rng, test, train) = pipeline::split_rows(0, data.y.len(), split);
    let n = train.len() as f64;
    let st = pipeline::Standardizer::fit(
        &train
            .iter()
            .map(|&i| data.x[i].to_vec())
            .collect::<Vec<_>>(),
    );
    let (train_x, train_y) = rows(data, &train, &st)?;
    let (test_x, test_y) = rows(data, &test, &st)?;

    // MAP
    let mut map = ParamStore::new();
    let det = Sequential::new()
        .push(Dense::new(&mut map, "hidden", 11, HIDDEN, &mut rng)?)
        .push(Activation::Relu)
        .push(Dense::new(&mut map, "out", HIDDEN, CLASSES, &mut rng)?);
    let kernels = [map.get("hidden/kernel"), map.get("out/kernel")];
    let mut opt = Adam::new(3e-3);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for _ in 0..MAP_EPOCHS {
        epoch(&mut order, &mut rng, |chunk, rng| {
            let x = train_x.select_rows(chunk)?;
            let y: Vec<usize> = chunk.iter().map(|&i| train_y[i]).collect();
            let tape = Tape::new();
            let logits = det.forward(&mut Forward::new(&tape, &map, rng), tape.constant(x))?;
            let mut loss = -Categorical::from_logits(logits)?
                .log_prob_labels(&y)?
                .mean();
            for k in kernels.into_iter().flatten() {
                loss = loss + tape.param(&map, k).square().sum() * (0.5 / n);
            }
            opt.step(&mut map, &loss.backward()?)
        })?;
    }
    let map_probs = predict_classes(&det, &map, &test_x, Predict::PosteriorMean, &mut rng)?.probs;

    // its Flipout twin, trained on from the MAP weights
    let mut store = ParamStore::new();
    let bnn = variational_from_deterministic::<f64, Flipout>(
        &det,
        &map,
        &mut store,
        &VariationalConfig::default(),
        None,
        &mut rng,
    )?;
    let elbo = Elbo::new(KlWeight::PerExample {
        num_examples: train.len(),
    });
    let steps = BAYES_EPOCHS * train.len().div_ceil(BATCH);
    let schedule = Schedule::Exponential {
        start: 3e-3,
        end: 3e-4,
        steps,
    };
    let mut opt = Adam::new(3e-3);
    let mut step = 0;
    for _ in 0..BAYES_EPOCHS {
        epoch(&mut order, &mut rng, |chunk, rng| {
            let x = train_x.select_rows(chunk)?;
            let y: Vec<usize> = chunk.iter().map(|&i| train_y[i]).collect();
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, rng);
            let logits = bnn.forward(&mut cx, tape.constant(x))?;
            let nll = -Categorical::from_logits(logits)?.log_prob_labels(&y)?.sum();
            let batch = Batch {
                index: 0,
                size: chunk.len(),
                step,
            };
            let out = elbo.loss(cx.divergences(), nll, batch)?;
            opt.lr = schedule.lr(step)?;
            step += 1;
            opt.step(&mut store, &out.loss.backward()?)
        })?;
    }
    let bayes_probs =
        predict_classes(&bnn, &store, &test_x, Predict::Samples(100), &mut rng)?.probs;
    Ok((score(&map_probs, &test_y)?, score(&bayes_probs, &test_y)?))
}

fn main() -> Result<()> {
    let mut splits = 20usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [flag, n] if flag == "--splits" => {
            splits = n.parse().ok().filter(|&n: &usize| n > 0).ok_or_else(|| {
                Error::invalid("wine_calibration", "--splits needs a positive integer")
            })?
        }
        _ => {
            return Err(Error::invalid(
                "wine_calibration",
                "usage: wine_calibration [--splits N]",
            ));
        }
    }
    let data = pipeline::load();
    println!(
        "UCI wine-red quality as {CLASSES} classes; seed 0, {splits} splits; MAP {MAP_EPOCHS} epochs, Flipout +{BAYES_EPOCHS}; ECE with {BINS} bins\n"
    );
    println!(
        "{:>5}  {:>22}  {:>22}",
        "split", "MAP ece/brier/nll", "Bayesian ece/brier/nll"
    );
    let mut diffs: [Vec<f64>; 4] = Default::default();
    let mut totals = [[0.0; 4]; 2];
    for split in 0..splits {
        let (m, b) = run_split(&data, split)?;
        println!(
            "{split:>5}  {:.3} {:.3} {:.3}   {:.3} {:.3} {:.3}",
            m.ece, m.brier, m.nll, b.ece, b.brier, b.nll
        );
        for (k, (x, y)) in [
            (m.ece, b.ece),
            (m.brier, b.brier),
            (m.nll, b.nll),
            (m.accuracy, b.accuracy),
        ]
        .into_iter()
        .enumerate()
        {
            diffs[k].push(y - x);
            totals[0][k] += x;
            totals[1][k] += y;
        }
    }
    let s = splits as f64;
    println!(
        "\n{:<10} {:>8} {:>8} {:>18}",
        "metric", "MAP", "Bayesian", "Bayesian - MAP"
    );
    for (k, name) in ["ECE", "Brier", "NLL", "accuracy"].iter().enumerate() {
        let d = &diffs[k];
        let mean = d.iter().sum::<f64>() / s;
        let se = if d.len() > 1 {
            (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (s - 1.0) / s).sqrt()
        } else {
            f64::NAN
        };
        println!(
            "{name:<10} {:>8.4} {:>8.4} {:>+10.4} ± {:.4}",
            totals[0][k] / s,
            totals[1][k] / s,
            mean,
            se
        );
    }
    Ok(())
}
