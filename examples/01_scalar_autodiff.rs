//! Reverse-mode autodiff on a tape, and what one small graph costs.
//!
//! Run: `cargo run --release --example 01_scalar_autodiff`

use bayesgrad::prelude::*;
use std::time::Instant;

/// Median time of one call, in microseconds, over batches after a warm-up.
fn median_micros(f: impl Fn() -> Result<f32>) -> Result<f64> {
    for _ in 0..1000 {
        f()?;
    }
    let batch = 800;
    let mut times = Vec::with_capacity(25);
    for _ in 0..25 {
        let start = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(f()?);
        }
        times.push(start.elapsed().as_secs_f64() * 1e6 / batch as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    // f(x, y) = ln(1 + e^(x y)) + x^2 / y  at (1.5, 2.0)
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(1.5));
    let y = tape.var(Tensor::scalar(2.0));
    let f = (x * y).softplus() + x.square() / y;
    let grads = f.backward()?;
    println!("f(1.5, 2.0)  = {:.10}", f.item()?);
    // df/dx = y sigmoid(xy) + 2x/y ; df/dy = x sigmoid(xy) - x^2/y^2
    let s = 1.0 / (1.0 + (-3.0f64).exp());
    println!(
        "df/dx        = {:.10} (by hand {:.10})",
        grads.get(x).unwrap().data()[0],
        2.0 * s + 1.5
    );
    println!(
        "df/dy        = {:.10} (by hand {:.10})",
        grads.get(y).unwrap().data()[0],
        1.5 * s - 0.5625
    );

    // Check the same gradient numerically with the public gradcheck.
    let report = gradcheck(
        |_, v| Ok((v[0] * v[1]).softplus() + v[0].square() / v[1]),
        &[Tensor::scalar(1.5), Tensor::scalar(2.0)],
        &GradCheck::default(),
    )?;
    println!("gradcheck max abs error: {:.2e}", report.max_abs_err());

    // Per-op overhead: forward + backward of a 10-op graph on 400 elements (f32).
    let data = Tensor::from_fn(&[4, 100], |i| (i as f32 * 0.01).sin());
    let run = || -> Result<f32> {
        let tape = Tape::<f32>::new();
        let a = tape.var(data.clone());
        let b = (a * 2.0 + 1.0).tanh(); // 3 ops
        let c = (b * a).softplus() - a.sigmoid(); // 4 ops
        let loss = (c.square()).sum().ln(); // 3 ops
        let g = loss.backward()?;
        Ok(g.get(a).map_or(0.0, |t| t.data()[0]))
    };
    // The same graph shape with cheap arithmetic only: what the tape itself costs.
    let run_cheap = || -> Result<f32> {
        let tape = Tape::<f32>::new();
        let a = tape.var(data.clone());
        let b = (a * 2.0 + 1.0) * a; // 3 ops
        let c = (b - a) * 0.5 + b * b; // 4 ops
        let loss = (c / 3.0).sum() * 0.1; // 3 ops
        let g = loss.backward()?;
        Ok(g.get(a).map_or(0.0, |t| t.data()[0]))
    };
    println!("10-op graph on 400 f32 elements, forward + backward:");
    println!(
        "  tanh, softplus, sigmoid, ln, ...   median {:.2} µs",
        median_micros(run)?
    );
    println!(
        "  arithmetic only                    median {:.2} µs",
        median_micros(run_cheap)?
    );
    Ok(())
}
