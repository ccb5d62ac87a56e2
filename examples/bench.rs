//! The benchmark workloads of docs/benchmarks.md: one full training step
//! (forward, backward, optimizer update) timed after warm-up.
//!
//! Run: `cargo run --release --example bench [-- mlp|sparse_vd|iwae|conv|tiny|discrete|sampling|draws|scaling|floor|gemm|handover|repeat|survey|all] [--steps N] [--batch B] [--width W] [--load N] [--threads N] [--default-alloc] [--ops]`
//! (`--load N` starts N busy-looping competitor threads; `scaling` prints ms per step and GFLOP/s of
//! `mlp` over batch sizes, widths and thread counts; `gemm` the GFLOP/s of the workloads' products
//! and the time of the `conv` workload's convolution as a plain `conv2d`; `survey` the time per
//! element of ops, log-densities and divergences over 400 000 values; `--ops` then times as many
//! steps (for `draws`, rounds) again op by op with `bayesgrad::autodiff::profile::OpTimer` and
//! prints its table;
//! `repeat` counts the rounds in which a product repeated on the pool ran at one thread's speed.)
//! Prints `<workload> ms_per_step=<median> p10=<..> p90=<..>` per workload,
//! then the resident memory (peak, and its change over the timed steps).

#[macro_use]
#[path = "common/say.rs"]
mod say;

use bayesgrad::autodiff::profile::{OpTimer, Pass};
use bayesgrad::prelude::*;
use rand::rngs::SmallRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

type Step = Box<dyn FnMut() -> Result<()>>;

/// One training step of a 10-class Bayesian classifier on a fixed batch with
/// random labels: Categorical NLL + KL / `num_examples`, Adam 1e-3.
fn classifier_step(
    net: Sequential<f32>,
    mut store: ParamStore<f32>,
    x: Tensor<f32>,
    num_examples: usize,
    mut rng: SmallRng,
) -> Step {
    let batch = x.shape()[0];
    let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    let elbo = Elbo::new(KlWeight::PerExample { num_examples });
    let mut opt = Adam::new(1e-3);
    Box::new(move || {
        // The tape is dropped before the update: its reads of the
        // parameters share their storage, and Adam updates unshared
        // storage in place instead of writing new buffers.
        let grads = {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, &mut rng);
            let logits = net.forward(&mut cx, tape.constant(x.clone()))?;
            let nll = -Categorical::from_logits(logits)?
                .log_prob_labels(&labels)?
                .sum();
            let out = elbo.loss(
                cx.divergences(),
                nll,
                Batch {
                    index: 0,
                    size: batch,
                    step: 0,
                },
            )?;
            out.loss.backward()?
        };
        opt.step(&mut store, &grads)
    })
}

/// `DenseFlipout(784->width, relu) -> DenseFlipout(width->10)`.
fn flipout_mlp(
    store: &mut ParamStore<f32>,
    width: usize,
    rng: &mut SmallRng,
) -> Result<Sequential<f32>> {
    Ok(Sequential::new()
        .push(DenseFlipout::new(store, "hidden", 784, width, rng)?)
        .push(Activation::Relu)
        .push(DenseFlipout::new(store, "out", width, 10, rng)?))
}

/// `DenseFlipout(784->width, relu) -> DenseFlipout(width->10)`, NLL + KL/60000, Adam 1e-3
/// (the `mlp` workload at batch 128 and width 512; `scaling`'s points at others).
fn mlp(batch: usize, width: usize) -> Result<Step> {
    let mut rng = SmallRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let net = flipout_mlp(&mut store, width, &mut rng)?;
    let x = Tensor::from_fn(&[batch, 784], |_| rng.random::<f32>());
    Ok(classifier_step(net, store, x, 60_000, rng))
}

/// The `mlp` workload with sparse variational dropout layers
/// (`DenseSparseVd(784->512, relu) -> DenseSparseVd(512->10)`).
fn sparse_vd() -> Result<Step> {
    use bayesgrad::layers::DenseSparseVd;
    let mut rng = SmallRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let net = Sequential::new()
        .push(DenseSparseVd::new(
            &mut store, "hidden", 784, 512, &mut rng,
        )?)
        .push(Activation::Relu)
        .push(DenseSparseVd::new(&mut store, "out", 512, 10, &mut rng)?);
    let x = Tensor::from_fn(&[128, 784], |_| rng.random::<f32>());
    Ok(classifier_step(net, store, x, 60_000, rng))
}

/// The `mlp` network trained by the importance-weighted bound with K = 8
/// samples in one pass along a sample axis (the batch of 128 tiled to 1024
/// rows; each layer draws 8 weight samples and applies them as one batched
/// product).
fn iwae() -> Result<Step> {
    const K: usize = 8;
    let mut rng = SmallRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let net = flipout_mlp(&mut store, 512, &mut rng)?;
    let x = Tensor::from_fn(&[128, 784], |_| rng.random::<f32>());
    let labels: Vec<usize> = (0..128).map(|_| rng.random_range(0..10)).collect();
    let tiled: Vec<usize> = (0..K).flat_map(|_| labels.iter().copied()).collect();
    let iwae = Iwae::new(KlWeight::PerExample {
        num_examples: 60_000,
    });
    let mut opt = Adam::new(1e-3);
    Ok(Box::new(move || {
        let grads = {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::SampleAxis(K));
            let x = Iwae::tile(tape.constant(x.clone()), K)?;
            let logits = net.forward(&mut cx, x)?;
            let log_lik = Categorical::from_logits(logits)?.log_prob_labels(&tiled)?;
            let batch = Batch {
                index: 0,
                size: 128,
                step: 0,
            };
            iwae.loss(cx.divergences(), log_lik, batch)?
                .loss
                .backward()?
        };
        opt.step(&mut store, &grads)
    }))
}

/// `Conv2dFlipout(3->64, 5x5, SAME, relu) -> MaxPool 2x2/2 -> Flatten -> DenseFlipout(16384->10)`, batch 32.
fn conv() -> Result<Step> {
    let mut rng = SmallRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let net = Sequential::new()
        .push(Conv2dFlipout::new(
            &mut store,
            "conv",
            Conv2dMap::new(3, 64, 5).padding(Padding::Same),
            &mut rng,
        )?)
        .push(Activation::Relu)
        .push(MaxPool2d { size: 2, stride: 2 })
        .push(Flatten)
        .push(DenseFlipout::new(
            &mut store,
            "out",
            16 * 16 * 64,
            10,
            &mut rng,
        )?);
    let x = Tensor::from_fn(&[32, 32, 32, 3], |_| rng.random::<f32>());
    Ok(classifier_step(net, store, x, 50_000, rng))
}

/// Trainable `mu` and `rho`; loss = -sum Normal(mu, softplus(rho)).log_prob(x) over 4x100; Adam 1e-2.
fn tiny() -> Result<Step> {
    let mut rng = SmallRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let mu = store.add("mu", Tensor::scalar(0.0));
    let scale = store.add_positive("scale", Tensor::scalar(1.0));
    let x = Tensor::from_fn(&[4, 100], |_| 2.0 + rng.random::<f32>());
    let mut opt = Adam::new(1e-2);
    Ok(Box::new(move || {
        let tape = Tape::new();
        let normal = Normal::from_params(&tape, &store, mu, scale)?;
        let loss = -normal.log_prob(tape.constant(x.clone()))?.sum();
        opt.step(&mut store, &loss.backward()?)
    }))
}

/// The 10-category toy of the discrete-estimator literature, batched:
/// 128 independent rows of logits, `E[(c / 9 - 0.499)²]` over
/// `c ~ Categorical(softmax(logits))`, score function with the
/// leave-one-out baseline over K = 8 draws per row; Adam 1e-2.
fn discrete() -> Result<Step> {
    use bayesgrad::bayes::score::{Baseline, ScoreSample};
    let mut rng = SmallRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let logits = store.add("logits", Tensor::zeros(&[128, 10]));
    let mut opt = Adam::new(1e-2);
    Ok(Box::new(move || {
        let grads = {
            let tape = Tape::new();
            let q = Categorical::from_logits(tape.param(&store, logits))?;
            let draw = ScoreSample::draw(&q, Some(8), &mut rng)?;
            let f = draw
                .value()
                .value()
                .map(|c| (c / 9.0 - 0.499) * (c / 9.0 - 0.499));
            let s = draw.surrogate(tape.constant(f), Baseline::LeaveOneOut)?;
            s.loss()?.backward()?
        };
        opt.step(&mut store, &grads)
    }))
}

/// Draws per second of Gamma(2.5), Beta(2, 3) and Dirichlet([1.5, 2, 0.7])
/// `rsample` with the implicit gradient (draw, then backward of the sum),
/// next to `rand_distr` drawing the same without gradients, alternating,
/// after three untimed rounds of each.
fn sampling(rounds: usize) -> Result<()> {
    use rand_distr::Distribution as _;
    const N: usize = 100_000;
    let mut rng = SmallRng::seed_from_u64(0);
    // each of ours returns the seconds of its backward pass
    type Ours = fn(&mut SmallRng) -> Result<f64>;
    type Theirs = fn(&mut SmallRng) -> f64;
    let cases: [(&str, Ours, Theirs); 3] = [
        (
            "Gamma(2.5, 1)",
            |rng| {
                let tape = Tape::<f64>::new();
                let a = tape.var(Tensor::full(&[N], 2.5));
                let x = Gamma::new(a, tape.scalar(1.0))?.rsample(rng)?;
                backward_seconds(x.sum())
            },
            |rng| {
                let g = rand_distr::Gamma::new(2.5, 1.0).unwrap();
                (0..N).map(|_| g.sample(rng)).sum()
            },
        ),
        (
            "Beta(2, 3)",
            |rng| {
                let tape = Tape::<f64>::new();
                let a = tape.var(Tensor::full(&[N], 2.0));
                let x = Beta::new(a, tape.scalar(3.0))?.rsample(rng)?;
                backward_seconds(x.sum())
            },
            |rng| {
                let b = rand_distr::Beta::new(2.0, 3.0).unwrap();
                (0..N).map(|_| b.sample(rng)).sum()
            },
        ),
        (
            "Dirichlet([1.5, 2, 0.7])",
            |rng| {
                let tape = Tape::<f64>::new();
                let a = tape.var(Tensor::from_fn(&[N / 3, 3], |i| [1.5, 2.0, 0.7][i % 3]));
                let x = Dirichlet::new(a)?.rsample(rng)?;
                backward_seconds((x * Tensor::vector(&[1.0, 2.0, 3.0])).sum())
            },
            |rng| {
                let d = rand_distr::multi::Dirichlet::new(&[1.5, 2.0, 0.7]).unwrap();
                (0..N / 3).map(|_| d.sample(rng)[0]).sum()
            },
        ),
    ];
    for (name, ours, theirs) in cases {
        // three rounds untimed first, as the peer scripts warm up
        for _ in 0..3 {
            ours(&mut rng)?;
            std::hint::black_box(theirs(&mut rng));
        }
        let (mut a, mut b, mut backward) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            backward.push(ours(&mut rng)?);
            a.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(theirs(&mut rng));
            b.push(t.elapsed().as_secs_f64());
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (ta, tb, tg) = (median(&mut a), median(&mut b), median(&mut backward));
        say!(
            "sampling {name}: rsample with gradients {:.2} M draws/s (a round {:.3} ms, its backward {:.3} ms), rand_distr without {:.2} M draws/s (medians of {rounds})",
            N as f64 / ta / 1e6,
            ta * 1e3,
            tg * 1e3,
            N as f64 / tb / 1e6
        );
    }
    Ok(())
}

/// Draws per second of the one-uniform families' `rsample` with gradients
/// (1 000 000 `f32` draws of single trainable parameters, then backward of
/// their sum, each parameter's gradient read), after three untimed rounds;
/// the peers' `draws` measure the same.
fn draws(rounds: usize, ops: bool) -> Result<()> {
    const N: usize = 1_000_000;
    let mut rng = SmallRng::seed_from_u64(0);
    type Make = for<'t> fn(&[Var<'t, f32>]) -> Result<Box<dyn Distribution<'t, f32> + 't>>;
    let cases: [(&str, &[f32], Make); 9] = [
        ("Exponential(2)", &[2.0], |p| {
            Ok(Box::new(Exponential::new(p[0])?))
        }),
        ("Laplace(0.5, 2)", &[0.5, 2.0], |p| {
            Ok(Box::new(Laplace::new(p[0], p[1])?))
        }),
        ("Gumbel(0.5, 2)", &[0.5, 2.0], |p| {
            Ok(Box::new(Gumbel::new(p[0], p[1])?))
        }),
        ("Uniform(0.5, 2)", &[0.5, 2.0], |p| {
            Ok(Box::new(Uniform::new(p[0], p[1])?))
        }),
        ("Cauchy(0.5, 2)", &[0.5, 2.0], |p| {
            Ok(Box::new(Cauchy::new(p[0], p[1])?))
        }),
        ("HalfCauchy(2)", &[2.0], |p| {
            Ok(Box::new(HalfCauchy::new(p[0])?))
        }),
        ("Weibull(1.5, 2)", &[1.5, 2.0], |p| {
            Ok(Box::new(Weibull::new(p[0], p[1])?))
        }),
        ("Pareto(1.5, 2)", &[1.5, 2.0], |p| {
            Ok(Box::new(Pareto::new(p[0], p[1])?))
        }),
        ("Kumaraswamy(1.5, 2)", &[1.5, 2.0], |p| {
            Ok(Box::new(Kumaraswamy::new(p[0], p[1])?))
        }),
    ];
    for (name, values, make) in cases {
        let round = |rng: &mut SmallRng| -> Result<f64> {
            let t = Instant::now();
            let tape = Tape::<f32>::new();
            let params: Vec<_> = values
                .iter()
                .map(|&v| tape.var(Tensor::scalar(v)))
                .collect();
            let grads = make(&params)?.rsample_n(Some(N), rng)?.sum().backward()?;
            for &p in &params {
                let g = grads.get(p).ok_or_else(|| {
                    bayesgrad::Error::invalid("bench draws", format!("{name}: no gradient"))
                })?;
                std::hint::black_box(g.data()[0]);
            }
            Ok(t.elapsed().as_secs_f64())
        };
        for _ in 0..3 {
            round(&mut rng)?;
        }
        let mut times = (0..rounds)
            .map(|_| round(&mut rng))
            .collect::<Result<Vec<_>>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        say!(
            "sampling {name}: rsample with gradients {:.2} M draws/s (a round {:.3} ms, median of {rounds})",
            N as f64 / median / 1e6,
            median * 1e3
        );
        if ops {
            // as many rounds again, each op timed (the draws a family
            // starts from, which are not an op, are the wall time's rest)
            let timer = OpTimer::start()?;
            let start = Instant::now();
            for _ in 0..rounds {
                round(&mut rng)?;
            }
            let wall = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
            let times = timer.finish();
            let covered = times.total().as_secs_f64() * 1e3 / rounds as f64;
            say!(
                "{name}: time by op over {rounds} rounds, {wall:.3} ms a round, {covered:.3} of it in the ops below\n{times}"
            );
        }
    }
    Ok(())
}

/// Backpropagates from `loss` and returns the seconds that took.
fn backward_seconds(loss: Var<'_, f64>) -> Result<f64> {
    let t = Instant::now();
    loss.backward()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Resident set size and its peak, in MiB (Linux; 0 elsewhere).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn run(name: &str, mut step: Step, steps: usize, ops: bool) -> Result<()> {
    let warmup = (steps / 10).clamp(3, 50);
    for _ in 0..warmup {
        step()?;
    }
    let (rss_before, _) = rss_mib();
    // Time batches of repetitions so that even microsecond steps are measured well.
    let probe = Instant::now();
    step()?;
    let reps = ((1e-3 / probe.elapsed().as_secs_f64().max(1e-9)) as usize).clamp(1, 10_000);
    let mut times: Vec<f64> = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        for _ in 0..reps {
            step()?;
        }
        times.push(start.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (rss_after, peak) = rss_mib();
    say!(
        "{name} ms_per_step={:.4} p10={:.4} p90={:.4}  (steps={steps}, reps={reps}; rss {rss_after:.0} MiB, peak {peak:.0} MiB, change over timed steps {:+.1} MiB)",
        q(0.5),
        q(0.1),
        q(0.9),
        rss_after - rss_before
    );
    if ops {
        // as many steps again, each op timed (apart from the figures above,
        // which the timer's clock reads would touch)
        let timer = OpTimer::start()?;
        let start = Instant::now();
        for _ in 0..steps * reps {
            step()?;
        }
        let wall = start.elapsed().as_secs_f64() * 1e3 / (steps * reps) as f64;
        let times = timer.finish();
        let covered = times.total().as_secs_f64() * 1e3 / (steps * reps) as f64;
        say!(
            "{name}: time by op over {} steps, {wall:.4} ms a step, {covered:.4} of it in the ops below\n{times}",
            steps * reps
        );
    }
    Ok(())
}

/// `N` threads that spin until the returned flag is set: a competing load
/// on the machine's cores, started by the bench itself.
fn start_load(n: usize) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..n)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                }
            })
        })
        .collect();
    (stop, handles)
}

/// The GEMM speed the machine reaches on the bench's thread count, in
/// GFLOP/s: the fastest of a square `1024³` product and the `mlp` layer's
/// forward product and weight gradient (`128 × 784 × 512`, `784 × 128 ×
/// 512`), each the best of 25, with the name of the one that reached it.
/// (The layer's products can run faster than the square one, whose
/// operands outgrow the caches; a floor from a slower product would
/// flatter the step.)
fn gemm_peak() -> Result<(f64, &'static str)> {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut peak = (0.0, "");
    for (name, m, k, n, ta) in [
        ("1024 x 1024 x 1024", 1024, 1024, 1024, false),
        ("128 x 784 x 512", 128, 784, 512, false),
        ("784 x 128 x 512", 784, 128, 512, true),
    ] {
        let gflops = product_gflops((m, k, n), (ta, false), &mut rng)?;
        if gflops > peak.0 {
            peak = (gflops, name);
        }
    }
    Ok(peak)
}

/// GFLOP/s of `Tensor::matmul_t` in `f32` on an `m x k x n` product of
/// operands stored transposed or not, best of 25.
fn product_gflops(
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    rng: &mut SmallRng,
) -> Result<f64> {
    let a_shape = if ta { [k, m] } else { [m, k] };
    let b_shape = if tb { [n, k] } else { [k, n] };
    let a = Tensor::<f32>::from_fn(&a_shape, |_| rng.random::<f32>() - 0.5);
    let b = Tensor::<f32>::from_fn(&b_shape, |_| rng.random::<f32>() - 0.5);
    let mut best = f64::INFINITY;
    for _ in 0..25 {
        let start = Instant::now();
        std::hint::black_box(a.matmul_t(&b, ta, tb)?);
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

/// How [`gemm_peak`] is taken, for the lines that print it.
const PEAK_OF: &str = "the fastest of 1024^3 and the mlp layer's two products, best of 25 each";

/// The products of the workloads' steps, `(name, m, k, n, a transposed,
/// b transposed)`.
const PRODUCTS: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("mlp x W1", 128, 784, 512, false, false),
    ("mlp x^T g (dW1)", 784, 128, 512, true, false),
    ("mlp h W2", 128, 512, 10, false, false),
    ("mlp h^T g (dW2)", 512, 128, 10, true, false),
    ("mlp g W2^T (dh)", 128, 10, 512, false, true),
    ("iwae x W1, K = 8", 1024, 784, 512, false, false),
    ("x W1, B 2048, w 1024", 2048, 784, 1024, false, false),
    ("x^T g, B 2048, w 1024", 784, 2048, 1024, true, false),
    ("conv im2col K", 32768, 75, 64, false, false),
    ("conv im2col^T g (dK)", 75, 32768, 64, true, false),
    ("conv dense x W", 32, 16384, 10, false, false),
    ("square 1024", 1024, 1024, 1024, false, false),
];

/// GFLOP/s of `matmul_t` on [`PRODUCTS`] in `f32`, best of 25 (compare
/// with `BAYESGRAD_SIMD=avx2`, which leaves every product to
/// matrixmultiply).
fn gemm_products() -> Result<()> {
    let threads = bayesgrad::threads();
    let peak = fma_peak(threads);
    match peak {
        Some((gflops, width)) => say!(
            "gemm: the CPU's multiply-add peak on {threads} thread(s): {gflops:.1} GFLOP/s \
             ({width}-bit fused multiply-adds on registers, best of 5)"
        ),
        None => say!("gemm: no multiply-add peak on this CPU (x86-64 with FMA only)"),
    }
    say!("gemm: Tensor::matmul_t in f32, GFLOP/s, best of 25, and its share of that peak");
    let mut rng = SmallRng::seed_from_u64(3);
    for &(name, m, k, n, ta, tb) in PRODUCTS {
        let gflops = product_gflops((m, k, n), (ta, tb), &mut rng)?;
        let share = peak.map_or(String::new(), |(p, _)| {
            format!("  {:5.1}%", 100.0 * gflops / p)
        });
        say!("{name:<22} {m:>6} x {k:>6} x {n:>5}  {gflops:7.1}{share}");
    }
    pair_products(&mut rng)?;
    // the plain convolution (reparameterization layers, posterior means)
    // on the `conv` workload's shapes, whose patch matrix is read from the
    // padded images on AVX-512
    let x = Tensor::<f32>::from_fn(&[32, 32, 32, 3], |_| rng.random::<f32>() - 0.5);
    let k = Tensor::<f32>::from_fn(&[5, 5, 3, 64], |_| rng.random::<f32>() - 0.5);
    let mut best = f64::INFINITY;
    for _ in 0..25 {
        let start = Instant::now();
        let tape = Tape::new();
        let kernel = tape.var(k.clone());
        let y = tape.constant(x.clone()).conv2d(kernel, 1, Padding::Same)?;
        std::hint::black_box(y.sum().backward()?);
        best = best.min(start.elapsed().as_secs_f64());
    }
    say!(
        "conv2d 32x32x32x3 * 5x5x3x64 SAME, forward and kernel gradient: {:.2} ms",
        best * 1e3
    );
    Ok(())
}

/// The `mlp` layer's two products (`128 × 784 × 512`, Flipout's mean and
/// perturbation) and their weight gradients, forward and backward on a
/// tape: as two `matmul`s one after the other, and as one
/// `Var::matmul_pair`, which runs them side by side. Medians of 100 of
/// each, alternating, with 16 MiB written before each so that the operands
/// come from memory as they do in a step.
fn pair_products(rng: &mut SmallRng) -> Result<()> {
    let mut random = |shape: &[usize]| Tensor::<f32>::from_fn(shape, |_| rng.random::<f32>() - 0.5);
    let (x, x2) = (random(&[128, 784]), random(&[128, 784]));
    let (w, w2) = (random(&[784, 512]), random(&[784, 512]));
    let mut evict = vec![0u8; 16 << 20];
    let mut times = [Vec::new(), Vec::new()];
    for rep in 0..200 {
        let side_by_side = rep % 2 == 1;
        evict.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        std::hint::black_box(&evict);
        let start = Instant::now();
        let tape = Tape::new();
        let (a, b) = (tape.constant(x.clone()), tape.constant(x2.clone()));
        let (v, v2) = (tape.var(w.clone()), tape.var(w2.clone()));
        let (p, q) = match side_by_side {
            true => Var::matmul_pair((a, v), (b, v2))?,
            false => (a.matmul(v)?, b.matmul(v2)?),
        };
        std::hint::black_box((p + q).sum().backward()?);
        times[usize::from(side_by_side)].push(start.elapsed().as_secs_f64() * 1e3);
    }
    let [apart, together] = times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    });
    say!(
        "gemm: two 128 x 784 x 512 products and their weight gradients on a tape, operands \
         from memory, medians of 100: one after the other {apart:.3} ms, side by side \
         (Var::matmul_pair) {together:.3} ms ({:.2}x)",
        apart / together
    );
    Ok(())
}

/// The `f32` multiply-add peak of `threads` threads in GFLOP/s, and the
/// vector width it used: each thread runs independent chains of fused
/// multiply-adds on registers (no memory operand), so that nothing but the
/// FMA units and the clock limits it; best of 5 runs of about 15 ms. The
/// chains fill the registers without spilling: 24 of AVX-512's 32, 12 of
/// AVX2's 16 (24 AVX2 chains spill to the stack and measured a third of
/// the peak on AMD EPYC: 65 GFLOP/s on two threads against 191), either
/// more than the FMA units' latency times their count.
/// `None` without FMA or off x86-64.
fn fma_peak(threads: usize) -> Option<(f64, u32)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        /// `iters` rounds of one multiply-add on each of `$chains` chains.
        macro_rules! chains {
            ($name:ident, $features:literal, $vec:ty, $set1:ident, $fma:ident, $add:ident, $store:ident, $lanes:literal, $chains:literal) => {
                #[target_feature(enable = $features)]
                fn $name(iters: usize) -> f32 {
                    let (a, b) = ($set1(1.000_000_1), $set1(0.999_999_9));
                    let mut acc: [$vec; $chains] = [$set1(0.0); $chains];
                    for _ in 0..iters {
                        for x in acc.iter_mut() {
                            *x = $fma(a, *x, b);
                        }
                    }
                    let sum = acc.iter().fold($set1(0.0), |s, &x| $add(s, x));
                    let mut lanes = [0.0f32; $lanes];
                    // SAFETY: `lanes` holds one vector's worth of f32.
                    unsafe { $store(lanes.as_mut_ptr(), sum) };
                    lanes.iter().sum()
                }
            };
        }
        chains!(
            chains512,
            "avx512f",
            __m512,
            _mm512_set1_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            _mm512_storeu_ps,
            16,
            24
        );
        chains!(
            chains256,
            "avx2,fma",
            __m256,
            _mm256_set1_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            _mm256_storeu_ps,
            8,
            12
        );
        let (run, lanes, chains): (fn(usize) -> f32, usize, usize) =
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                (|iters| unsafe { chains512(iters) }, 16, 24)
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA.
                (|iters| unsafe { chains256(iters) }, 8, 12)
            } else {
                return None;
            };
        let iters = 4_000_000;
        let mut best = 0.0f64;
        for _ in 0..5 {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| std::hint::black_box(run(std::hint::black_box(iters))));
                }
            });
            let flop = (threads * iters * chains * lanes * 2) as f64;
            best = best.max(flop / start.elapsed().as_secs_f64() / 1e9);
        }
        Some((best, 32 * lanes as u32))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// The GEMM FLOP of an `mlp` step at a batch and width: layer 1's two
/// products forward and two weight gradients, layer 2's also two input
/// gradients.
fn mlp_flop(batch: usize, width: usize) -> f64 {
    let (b, w) = (batch as f64, width as f64);
    8.0 * b * 784.0 * w + 12.0 * b * w * 10.0
}

/// The median time in seconds of `steps` steps, after `warmup` untimed ones.
fn median_step(step: &mut Step, warmup: usize, steps: usize) -> Result<f64> {
    for _ in 0..warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `mlp` at several batch sizes, widths and thread counts: ms per step,
/// the GEMM GFLOP/s it achieves, and its FLOP floor at the machine's GEMM
/// peak (measured first, per thread count).
fn scaling(steps: usize) -> Result<()> {
    let max_threads = bayesgrad::threads();
    let steps = steps.min(10);
    say!(
        "scaling: mlp = DenseFlipout(784->width, relu) -> DenseFlipout(width->10), Adam; {steps} timed steps per point"
    );
    say!(
        "GEMM FLOP per step: 8 B 784 w (layer 1: two products forward, two weight gradients) + 12 B w 10 (layer 2 also has two input gradients)"
    );
    say!(
        "{:>7} {:>6} {:>7} {:>11} {:>9} {:>13} {:>13}",
        "threads",
        "batch",
        "width",
        "ms/step",
        "GFLOP/s",
        "floor ms",
        "step / floor"
    );
    for threads in 1..=max_threads {
        bayesgrad::set_threads(threads)?;
        let (peak, shape) = gemm_peak()?;
        say!("{threads} thread(s): GEMM peak {peak:.1} GFLOP/s ({shape}, {PEAK_OF})");
        for width in [256, 1024, 4096] {
            for batch in [32, 128, 512, 2048] {
                let median = median_step(&mut mlp(batch, width)?, 2, steps)?;
                let flop = mlp_flop(batch, width);
                let floor = flop / (peak * 1e9);
                say!(
                    "{threads:>7} {batch:>6} {width:>7} {:>11.3} {:>9.1} {:>13.3} {:>13.2}",
                    median * 1e3,
                    flop / median / 1e9,
                    floor * 1e3,
                    median / floor
                );
            }
        }
    }
    bayesgrad::set_threads(max_threads)?;
    Ok(())
}

/// The `mlp` step against a floor of three parts measured here, which a
/// step runs one after another: the products' FLOP at the GEMM peak (as
/// `scaling`), one normal draw per weight at the sampler's speed
/// (`Tensor::standard_normal`), and the memory traffic Adam cannot avoid
/// (read each parameter, its gradient and two moments; write back three)
/// as a plain pass on every thread, arrays touched before timing. Then
/// the step's own products, timed op by op inside the step, against the
/// first part alone.
fn floor(steps: usize) -> Result<()> {
    let (batch, width) = (128usize, 512usize);
    let threads = bayesgrad::threads();
    let (peak, shape) = gemm_peak()?;
    let flop = mlp_flop(batch, width);
    let gemm = flop / (peak * 1e9);
    let weights = 784 * width + width * 10;
    let mut rng = SmallRng::seed_from_u64(0);
    let mut best = f64::INFINITY;
    for _ in 0..25 {
        let start = Instant::now();
        std::hint::black_box(Tensor::<f32>::standard_normal(&[weights], &mut rng));
        best = best.min(start.elapsed().as_secs_f64());
    }
    let normals = best;
    let mut store = ParamStore::<f32>::new();
    let net = flipout_mlp(&mut store, width, &mut rng)?;
    let params: usize = store.params().map(|p| store.raw(p).len()).sum();
    let traffic = adam_traffic(params, threads);
    let whole = gemm + normals + traffic;
    let x = Tensor::from_fn(&[batch, 784], |_| rng.random::<f32>());
    let mut step = classifier_step(net, store, x, 60_000, rng);
    let median = median_step(&mut step, 5, steps)?;
    // the products as they run inside the step (operands from memory, as
    // the step leaves them), timed op by op over as many steps again
    let timer = OpTimer::start()?;
    for _ in 0..steps {
        step()?;
    }
    let times = timer.finish();
    let products: f64 = ["matmul_pair", "matmul"]
        .iter()
        .flat_map(|&op| [Pass::Forward, Pass::Backward].map(|pass| times.get(op, pass)))
        .flatten()
        .map(|t| t.total.as_secs_f64())
        .sum::<f64>()
        / steps as f64;
    let ms = |s: f64| s * 1e3;
    say!("floor: the mlp step (batch {batch}, width {width}) on {threads} thread(s)");
    say!(
        "  GEMM        {:8.3} ms  {:.3} GFLOP at {peak:.1} GFLOP/s ({shape}, {PEAK_OF})",
        ms(gemm),
        flop / 1e9
    );
    say!(
        "  normals     {:8.3} ms  {weights} draws, Tensor::standard_normal (best of 25)",
        ms(normals)
    );
    say!(
        "  Adam memory {:8.3} ms  {params} f32 parameters, 4 arrays read and 3 written (best of 25)",
        ms(traffic)
    );
    if let Some((fma, _)) = fma_peak(threads) {
        say!(
            "  (the GEMM FLOP at the CPU's multiply-add peak, {fma:.1} GFLOP/s: {:.3} ms; see `-- gemm`)",
            ms(flop / (fma * 1e9))
        );
    }
    say!(
        "  step        {:8.3} ms  median of {steps}: {:.2} x the GEMM floor, {:.2} x the floor of all three ({:.3} ms)",
        ms(median),
        median / gemm,
        median / whole,
        ms(whole)
    );
    say!(
        "  products    {:8.3} ms  a step inside it (forward and backward, mean of {steps} timed op by op): {:.2} x the GEMM floor",
        ms(products),
        products / gemm
    );
    Ok(())
}

/// The best time of a pass that reads `x`, `g`, `m`, `v` and writes `x`,
/// `m`, `v` (`len` `f32` each, no division or square root), split over
/// `threads` threads started once, the arrays written before timing.
fn adam_traffic(len: usize, threads: usize) -> f64 {
    let part = len.div_ceil(threads);
    let barrier = std::sync::Barrier::new(threads);
    let best = std::sync::Mutex::new(f64::INFINITY);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, best) = (&barrier, &best);
            s.spawn(move || {
                let n = part.min(len.saturating_sub(t * part));
                let fill = |c: f32| vec![c; n];
                let (mut x, g, mut m, mut v) = (fill(0.5), fill(1e-3), fill(0.0), fill(0.0));
                for _ in 0..27 {
                    barrier.wait();
                    let start = Instant::now();
                    let moments = m.iter_mut().zip(v.iter_mut());
                    for ((x, &g), (m, v)) in x.iter_mut().zip(&g).zip(moments) {
                        *m = 0.9 * *m + 0.1 * g;
                        *v = 0.999 * *v + 0.001 * g * g;
                        *x -= 1e-3 * *m * *v;
                    }
                    std::hint::black_box((&x, &m, &v));
                    // the pass ends when the slowest thread's part does
                    barrier.wait();
                    if t == 0 {
                        let mut b = best.lock().unwrap_or_else(|e| e.into_inner());
                        *b = b.min(start.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    best.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// How often a product repeated on the pool runs at one thread's speed:
/// `rounds` rounds, each after two threads of its own have been busy for
/// 100 ms, of 40 `x W1` products (`128 x 784 x 512`, split over the
/// pool). A round is slow when its fastest product took more than 1.5
/// times the fastest of all rounds: the helper did not join any of them.
fn repeat(rounds: usize) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(1);
    let a = Tensor::<f32>::from_fn(&[128, 784], |_| rng.random::<f32>() - 0.5);
    let b = Tensor::<f32>::from_fn(&[784, 512], |_| rng.random::<f32>() - 0.5);
    let mut bests = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let start = Instant::now();
                    let mut x = 1.0f64;
                    while start.elapsed().as_millis() < 100 {
                        x = std::hint::black_box(x * 1.000_000_1 + 1e-9);
                    }
                });
            }
        });
        let mut best = f64::INFINITY;
        for _ in 0..40 {
            let start = Instant::now();
            std::hint::black_box(a.matmul(&b)?);
            best = best.min(start.elapsed().as_secs_f64());
        }
        bests.push(best * 1e6);
    }
    let fastest = bests.iter().copied().fold(f64::INFINITY, f64::min);
    let slow = bests.iter().filter(|&&t| t > 1.5 * fastest).count();
    say!(
        "repeat: x W1 (128 x 784 x 512) 40 times after two busy threads, {rounds} rounds on {} thread(s): fastest product {fastest:.0} us; {slow} of {rounds} rounds slow (their fastest over 1.5 x that)",
        bayesgrad::threads()
    );
    Ok(())
}

/// What handing half an elementwise op to another thread costs: `exp` of
/// `len` floats on a tape (bayesgrad's persistent helpers, then one
/// thread), against the same split with a thread spawned per op by
/// `std::thread::scope`. Medians over `reps` ops, in microseconds.
fn handover(reps: usize) -> Result<()> {
    let threads = bayesgrad::threads();
    let median = |mut f: Box<dyn FnMut() -> Result<()>>| -> Result<f64> {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[reps / 2])
    };
    say!("handover: one elementwise exp, median of {reps} ops, microseconds");
    for len in [1 << 15, 1 << 17, 1 << 20] {
        let x = Tensor::<f32>::from_fn(&[len], |i| (i % 1000) as f32 * 1e-3);
        let on_tape = |x: Tensor<f32>| -> Box<dyn FnMut() -> Result<()>> {
            Box::new(move || {
                let tape = Tape::new();
                std::hint::black_box(tape.constant(x.clone()).exp().value());
                Ok(())
            })
        };
        bayesgrad::set_threads(threads.max(2))?;
        let pool = median(on_tape(x.clone()))?;
        bayesgrad::set_threads(1)?;
        let one = median(on_tape(x.clone()))?;
        bayesgrad::set_threads(threads)?;
        let data = x.data().to_vec();
        let scoped = median(Box::new(move || {
            let mut out = vec![0f32; data.len()];
            let (a, b) = out.split_at_mut(data.len() / 2);
            let (xa, xb) = data.split_at(data.len() / 2);
            std::thread::scope(|s| {
                s.spawn(|| a.iter_mut().zip(xa).for_each(|(o, &v)| *o = v.exp()));
                b.iter_mut().zip(xb).for_each(|(o, &v)| *o = v.exp());
            });
            std::hint::black_box(out);
            Ok(())
        }))?;
        say!(
            "{len:>8} floats: helpers {pool:8.1}   one thread {one:8.1}   std::thread::scope {scoped:8.1}"
        );
    }
    Ok(())
}

/// The values [`survey`] evaluates at, `[400, 1000]` of each kind.
struct Values {
    real: Tensor<f32>,
    pos: Tensor<f32>,
    unit: Tensor<f32>,
}

/// A distribution on a tape from [`Values`], its parameters made by the
/// closure (a full tensor, or a single value).
type Build = for<'t> fn(
    &'t Tape<f32>,
    &Values,
    &dyn Fn(&Tensor<f32>, f32) -> Var<'t, f32>,
) -> Result<Box<dyn Distribution<'t, f32> + 't>>;

/// The time per element of elementwise ops, reductions, log-densities,
/// divergences and the Gamma entropy over 400 000 `f32` values, forward and backward of a
/// weighted sum: the median of 15 runs of each. A distribution's
/// parameters are full tensors (`full`) or single values (`single`).
fn survey() -> Result<()> {
    use bayesgrad::distributions::kl::kl_divergence;
    const N: usize = 400_000;
    const RUNS: usize = 15;
    let time = |name: &str, f: &dyn Fn() -> Result<()>| -> Result<()> {
        let mut t = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            f()?;
            t.push(start.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        let median = t[RUNS / 2];
        say!(
            "survey {name:<38} {:8.3} ms  {:6.2} ns/element",
            median * 1e3,
            median * 1e9 / N as f64
        );
        Ok(())
    };
    let (rows, cols) = (400, 1000);
    let of = |f: fn(usize) -> f32| Tensor::<f32>::from_fn(&[rows, cols], f);
    let v = Values {
        real: of(|i| ((i * 7) % 97) as f32 / 20.0 - 2.4),
        pos: of(|i| 0.2 + ((i * 7) % 97) as f32 / 50.0),
        unit: of(|i| 0.01 + ((i * 7) % 97) as f32 / 100.0),
    };
    let bits = of(|i| (i % 2) as f32);
    let weights = of(|i| ((i * 13) % 89) as f32 / 50.0 - 0.9);
    // y = f(x) for a var x, then the backward of Σ w y
    let unary = |name: &str, f: &dyn for<'t> Fn(Var<'t, f32>) -> Result<Var<'t, f32>>| {
        time(name, &|| {
            let tape = Tape::new();
            let x = tape.var(v.real.clone());
            let y = f(x)?;
            let w = tape.constant(Tensor::from_vec(
                weights.data()[..y.value().len()].to_vec(),
                &y.shape(),
            )?);
            (y * w).sum().backward().map(drop)
        })
    };
    unary("exp", &|x| Ok(x.exp()))?;
    unary("tanh", &|x| Ok(x.tanh()))?;
    unary("softplus", &|x| Ok(x.softplus()))?;
    unary("lgamma", &|x| Ok((x.abs() + 1.0).lgamma()))?;
    unary("x + a column [400, 1]", &|x| {
        x.try_add(x.tape().var(Tensor::from_fn(&[rows, 1], |i| i as f32)))
    })?;
    unary("log_softmax, last axis", &|x| x.log_softmax(1))?;
    unary("logsumexp, last axis", &|x| x.logsumexp(1, true))?;
    unary("sum, last axis", &|x| x.sum_axis(1, true))?;
    let densities: [(&str, &Tensor<f32>, Build); 8] = [
        ("Normal", &v.real, |_, v, p| {
            Ok(Box::new(Normal::new(p(&v.real, 0.1), p(&v.pos, 1.3))?))
        }),
        ("Laplace", &v.real, |_, v, p| {
            Ok(Box::new(Laplace::new(p(&v.real, 0.1), p(&v.pos, 1.3))?))
        }),
        ("Gamma", &v.pos, |_, v, p| {
            Ok(Box::new(Gamma::new(p(&v.pos, 1.5), p(&v.pos, 1.3))?))
        }),
        ("Beta", &v.unit, |_, v, p| {
            Ok(Box::new(Beta::new(p(&v.pos, 1.5), p(&v.pos, 1.3))?))
        }),
        ("StudentT", &v.real, |_, v, p| {
            let (df, loc, scale) = (p(&v.pos, 3.0), p(&v.real, 0.1), p(&v.pos, 1.3));
            Ok(Box::new(StudentT::new(df, loc, scale)?))
        }),
        ("Bernoulli", &bits, |_, v, p| {
            Ok(Box::new(Bernoulli::from_logits(p(&v.real, 0.3))?))
        }),
        ("LogNormal", &v.pos, |_, v, p| {
            Ok(Box::new(LogNormal::new(p(&v.real, 0.1), p(&v.pos, 1.3))?))
        }),
        ("LogitNormal", &v.unit, |_, v, p| {
            Ok(Box::new(LogitNormal::new(p(&v.real, 0.1), p(&v.pos, 1.3))?))
        }),
    ];
    // each case with full and with single-valued parameters
    type Case<'c> = &'c dyn for<'t> Fn(
        &'t Tape<f32>,
        &dyn Fn(&Tensor<f32>, f32) -> Var<'t, f32>,
    ) -> Result<Var<'t, f32>>;
    let with_parameters = |name: &str, what: &str, case: Case<'_>| -> Result<()> {
        for full in [true, false] {
            let kind = ["single", "full"][usize::from(full)];
            time(&format!("{name}, {kind} {what}"), &|| {
                let tape = Tape::new();
                let param = |t: &Tensor<f32>, one: f32| match full {
                    true => tape.var(t.clone()),
                    false => tape.var(Tensor::scalar(one)),
                };
                case(&tape, &param)?.sum().backward().map(drop)
            })?;
        }
        Ok(())
    };
    for (name, x, build) in densities {
        with_parameters(&format!("{name} log_prob"), "parameters", &|tape, param| {
            build(tape, &v, param)?.log_prob(tape.constant(x.clone()))
        })?;
    }
    // KL(q || p) of a posterior of full tensors against a prior
    let divergences: [(&str, Build, Build); 7] = [
        (
            "Normal",
            |t, v, _| {
                Ok(Box::new(Normal::new(
                    t.var(v.real.clone()),
                    t.var(v.pos.clone()),
                )?))
            },
            |_, v, p| Ok(Box::new(Normal::new(p(&v.real, 0.0), p(&v.pos, 1.0))?)),
        ),
        (
            "Gamma",
            |t, v, _| {
                Ok(Box::new(Gamma::new(
                    t.var(v.pos.clone()),
                    t.var(v.pos.clone()),
                )?))
            },
            |_, v, p| Ok(Box::new(Gamma::new(p(&v.unit, 1.0), p(&v.unit, 1.0))?)),
        ),
        (
            "Beta",
            |t, v, _| {
                Ok(Box::new(Beta::new(
                    t.var(v.pos.clone()),
                    t.var(v.pos.clone()),
                )?))
            },
            |_, v, p| Ok(Box::new(Beta::new(p(&v.unit, 1.0), p(&v.unit, 1.0))?)),
        ),
        // a posterior after tens of observations: concentrations of 10 to 50
        (
            "Beta (q large)",
            |t, v, _| {
                Ok(Box::new(Beta::new(
                    t.var(v.pos.map(|x| 8.0 + 20.0 * x)),
                    t.var(v.pos.map(|x| 8.0 + 10.0 * x)),
                )?))
            },
            |_, v, p| Ok(Box::new(Beta::new(p(&v.unit, 1.0), p(&v.unit, 1.0))?)),
        ),
        (
            "Bernoulli",
            |t, v, _| Ok(Box::new(Bernoulli::from_logits(t.var(v.real.clone()))?)),
            |_, v, p| Ok(Box::new(Bernoulli::from_logits(p(&v.pos, 0.0))?)),
        ),
        // a stick-breaking posterior against its prior (a quadrature per element)
        (
            "Kumaraswamy",
            |t, v, _| {
                Ok(Box::new(Kumaraswamy::new(
                    t.var(v.pos.clone()),
                    t.var(v.pos.clone()),
                )?))
            },
            |_, v, p| Ok(Box::new(Beta::new(p(&v.unit, 1.0), p(&v.pos, 1.0))?)),
        ),
        // ... where b is from 1e-5 to 1e-3
        (
            "Kumaraswamy (b small)",
            |t, v, _| {
                Ok(Box::new(Kumaraswamy::new(
                    t.var(v.pos.clone()),
                    t.var(v.unit.map(|x| x * 1e-3)),
                )?))
            },
            |_, v, p| Ok(Box::new(Beta::new(p(&v.unit, 1.0), p(&v.pos, 1.0))?)),
        ),
    ];
    for (name, q, p) in divergences {
        with_parameters(&format!("{name} KL"), "prior parameters", &|tape, param| {
            let (q, p) = (q(tape, &v, param)?, p(tape, &v, param)?);
            kl_divergence(q.as_ref(), p.as_ref())
        })?;
    }
    // the Gamma entropy of rates per value, the concentration per value or single
    for full in [true, false] {
        let kind = ["single concentration", "full parameters"][usize::from(full)];
        time(&format!("Gamma entropy, {kind}"), &|| {
            let tape = Tape::new();
            let a = match full {
                true => tape.var(v.pos.clone()),
                false => tape.var(Tensor::scalar(1.5)),
            };
            let h = Gamma::new(a, tape.var(v.pos.clone()))?.entropy()?;
            h.sum().backward().map(drop)
        })?;
    }
    Ok(())
}

const USAGE: &str = "usage: bench [mlp|sparse_vd|iwae|conv|tiny|discrete|sampling|draws|scaling|floor|gemm|handover|repeat|survey|all] [--steps N] [--batch B] [--width W] [--load N] [--threads N] [--default-alloc] [--ops]
  --steps N        timed steps per workload (default 50)
  --batch B        the mlp workload's batch (default 128), as in a point of scaling
  --width W        the mlp workload's hidden width (default 512)
  --load N         start N busy-looping competitor threads
  --threads N      threads bayesgrad uses (default: BAYESGRAD_THREADS, else every core)
  --default-alloc  leave the allocator's release of freed memory as it is
  --ops            then time as many steps again op by op, and print the table";

fn main() -> std::process::ExitCode {
    match bench() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}

fn bench() -> Result<()> {
    let mut steps = 50;
    let mut which = "all".to_string();
    let mut default_alloc = false;
    let mut load = 0;
    let mut ops = false;
    let (mut batch, mut width) = (128, 512);
    let mut args = std::env::args().skip(1);
    let number = |args: &mut std::iter::Skip<std::env::Args>, flag: &str, min: usize| {
        args.next()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n >= min)
            .ok_or_else(|| Error::invalid("bench", format!("{flag} needs an integer >= {min}")))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = number(&mut args, "--steps", 1)?,
            "--batch" => batch = number(&mut args, "--batch", 1)?,
            "--width" => width = number(&mut args, "--width", 1)?,
            "--load" => load = number(&mut args, "--load", 0)?,
            "--threads" => bayesgrad::set_threads(number(&mut args, "--threads", 1)?)?,
            "mlp" | "conv" | "tiny" | "discrete" | "sampling" | "draws" | "sparse_vd" | "iwae"
            | "scaling" | "floor" | "gemm" | "handover" | "repeat" | "survey" | "all" => which = a,
            "--default-alloc" => default_alloc = true,
            "--ops" => ops = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => {
                return Err(Error::invalid(
                    "bench",
                    format!("unknown argument '{other}'"),
                ));
            }
        }
    }
    if (batch, width) != (128, 512) && which != "mlp" {
        return Err(Error::invalid(
            "bench",
            "--batch and --width apply to the mlp workload only",
        ));
    }
    // Opt-in allocator setting (see bayesgrad::train::retain_freed_memory); --default-alloc measures without it.
    let retained = !default_alloc && bayesgrad::train::retain_freed_memory();
    say!("allocator keeps freed memory: {retained}");
    say!(
        "threads: {} (the caller and {} helper(s); BAYESGRAD_THREADS or --threads to change)",
        bayesgrad::threads(),
        bayesgrad::threads() - 1
    );
    let (stop, competitors) = start_load(load);
    if load > 0 {
        say!("load: {load} busy-looping competitor thread(s)");
    }
    if which == "scaling" {
        scaling(steps)?;
    }
    if which == "floor" {
        floor(steps)?;
    }
    if which == "gemm" {
        gemm_products()?;
    }
    if which == "handover" {
        handover(steps.max(200))?;
    }
    if which == "repeat" {
        repeat(steps)?;
    }
    if which == "survey" {
        survey()?;
    }
    if which == "all" || which == "tiny" {
        run("tiny", tiny()?, steps, ops)?;
    }
    if which == "all" || which == "mlp" {
        run("mlp", mlp(batch, width)?, steps, ops)?;
    }
    if which == "all" || which == "sparse_vd" {
        run("sparse_vd", sparse_vd()?, steps, ops)?;
    }
    if which == "all" || which == "iwae" {
        run("iwae", iwae()?, steps, ops)?;
    }
    if which == "all" || which == "conv" {
        run("conv", conv()?, steps, ops)?;
    }
    if which == "all" || which == "discrete" {
        run("discrete", discrete()?, steps, ops)?;
    }
    if which == "all" || which == "sampling" {
        sampling(steps.min(20))?;
    }
    if which == "all" || which == "draws" {
        draws(steps.min(20), ops)?;
    }
    stop.store(true, Ordering::Relaxed);
    for c in competitors {
        c.join().ok();
    }
    Ok(())
}
