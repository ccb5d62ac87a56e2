//! Gradient variance of the crate's stochastic estimators.
//!
//! Run: `cargo run --release --example gradient_variance`
//!
//! 1. One dense variational layer (32 -> 16, mean squared error): the
//!    variance of the gradient w.r.t. the kernel means under
//!    reparameterization, Flipout and local reparameterization at batch 1,
//!    32 and 128. Flipout and local reparameterization decorrelate the
//!    examples of a batch, so their variance falls roughly as 1 / batch
//!    (Wen et al. 2018); a weight sample shared by the batch does not.
//! 2. The toy problem of the discrete-estimator literature (Tucker et al.
//!    2017): minimize E[(b - 0.499)²] over b ~ Bernoulli(sigmoid(theta)),
//!    and a 10-category version E[(c / 9 - 0.499)²] over c ~ Categorical.
//!    For each estimator: the bias of its gradient against the exact one
//!    (by enumeration) in standard errors, its variance, and the exact loss
//!    after a fixed number of Adam steps.
//! 3. The `K`-sample bound `ln (1/K) Σ_k p(x, h_k) / q(h_k)` of a one-bit
//!    latent model, `q(h) = Bernoulli(sigmoid(theta))` and
//!    `ln p(x, h) = -phi (h - 0.7)² + c`, at K = 2, 4 and 8, with log
//!    weights near 0 (`c = 0`) and far from it (`c = -10`, as a likelihood
//!    of a few observations gives): VIMCO against the bound's plain score
//!    function (one coefficient, the bound, for every draw), both against
//!    the exact gradient in `theta` and `phi` by enumerating the 2^K draws.

#[macro_use]
#[path = "common/say.rs"]
mod say;

use bayesgrad::autodiff::statcheck::{StatGradReport, stat_gradient_report};
use bayesgrad::bayes::score::{Baseline, MovingAverage, ScoreSample};
use bayesgrad::distributions::expectation_enumerated;
use bayesgrad::layers::Reparameterization;
use bayesgrad::layers::{DenseVariational, Estimator, Flipout, LocalReparameterization};
use bayesgrad::prelude::*;

const ESTIMATES: usize = 20_000;
const LAYER_ESTIMATES: usize = 400;
const STEPS: usize = 2000;

/// Mean per-component variance of the kernel-mean gradient of one layer.
fn layer_variance<E: Estimator>(batch: usize) -> Result<f64> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut store = ParamStore::<f64>::new();
    let config = VariationalConfig {
        rho_init: (-2.0, 0.1),
        loc_init: (0.0, 0.3),
        ..VariationalConfig::default()
    };
    let layer =
        DenseVariational::<f64, E>::with_config(&mut store, "layer", 32, 16, config, &mut rng)?;
    let x = Tensor::from_fn(&[batch, 32], |_| rng.random::<f64>() * 2.0 - 1.0);
    let t = Tensor::from_fn(&[batch, 16], |_| rng.random::<f64>());
    let (loc, _) = layer.kernel_params();
    let report = stat_gradient_report(
        |rng| {
            let tape = Tape::new();
            let mut cx = Forward::new(&tape, &store, rng);
            let y = layer.forward(&mut cx, tape.constant(x.clone()))?;
            let loss = (y - t.clone()).square().sum() / batch as f64;
            let g = loss.backward()?;
            Ok(g.param(loc).map(|g| g.data().to_vec()).unwrap_or_default())
        },
        &vec![0.0; 32 * 16],
        LAYER_ESTIMATES,
        &mut StdRng::seed_from_u64(1),
    )?;
    Ok(report.mean_variance())
}

/// The discrete estimators compared on the toys.
#[derive(Clone, Copy)]
enum Method {
    Score { k: usize },
    MovingAverage,
    Learned,
    LeaveOneOut { k: usize },
    Concrete,
    StraightThrough,
    Exact,
}

impl Method {
    fn label(self) -> String {
        match self {
            Method::Score { k } => format!("score function, no baseline, K={k}"),
            Method::MovingAverage => "score function + moving average".into(),
            Method::Learned => "score function + learned baseline".into(),
            Method::LeaveOneOut { k } => format!("score function + leave-one-out, K={k}"),
            Method::Concrete => format!("Concrete / Gumbel-softmax, t={TEMPERATURE}"),
            Method::StraightThrough => format!("straight-through, t={TEMPERATURE}"),
            Method::Exact => "exact (enumeration)".into(),
        }
    }
}

const METHODS: [Method; 8] = [
    Method::Score { k: 1 },
    Method::MovingAverage,
    Method::Learned,
    Method::Score { k: 8 },
    Method::LeaveOneOut { k: 8 },
    Method::Concrete,
    Method::StraightThrough,
    Method::Exact,
];

const TEMPERATURE: f64 = 0.5;
const TARGET: f64 = 0.499;

/// A toy: `k` classes (2: the Bernoulli toy over the logit `theta`).
#[derive(Clone, Copy)]
struct Toy {
    classes: usize,
}

impl Toy {
    /// The value of class `c`: `b` for the Bernoulli, `c / 9` for 10 classes.
    fn value(&self, c: f64) -> f64 {
        c / (self.classes - 1) as f64
    }
    fn params(&self) -> usize {
        if self.classes == 2 { 1 } else { self.classes }
    }

    /// The exact loss and gradient at `theta`.
    fn exact(&self, theta: &[f64]) -> Result<(f64, Vec<f64>)> {
        let tape = Tape::new();
        let t = tape.var(Tensor::vector(theta));
        let e = if self.classes == 2 {
            let q = Bernoulli::from_logits(t.index(0)?)?;
            let support = [Tensor::scalar(0.0), Tensor::scalar(1.0)];
            expectation_enumerated(&q, &support, |b| Ok((b - TARGET).square()))?
        } else {
            let q = Categorical::from_logits(t)?;
            let support: Vec<_> = (0..self.classes)
                .map(|c| Tensor::scalar(c as f64))
                .collect();
            let scale = 1.0 / (self.classes - 1) as f64;
            expectation_enumerated(&q, &support, |c| Ok((c * scale - TARGET).square()))?
        };
        let g = e.backward()?;
        Ok((e.item()?, g.get(t).unwrap().data().to_vec()))
    }
}

/// The state an estimator keeps across steps.
struct State {
    average: MovingAverage,
    baseline: ParamStore<f64>,
    baseline_opt: Adam<f64>,
}

impl State {
    fn new() -> Result<Self> {
        let mut baseline = ParamStore::new();
        baseline.try_add("baseline", Tensor::scalar(0.0))?;
        Ok(State {
            average: MovingAverage::new(0.9)?,
            baseline,
            baseline_opt: Adam::new(0.01),
        })
    }
}

/// One gradient estimate w.r.t. `theta` (the learned baseline takes its own step).
fn estimate(
    toy: Toy,
    method: Method,
    theta: &[f64],
    state: &mut State,
    rng: &mut dyn Rng,
) -> Result<Vec<f64>> {
    if let Method::Exact = method {
        return Ok(toy.exact(theta)?.1);
    }
    let tape = Tape::new();
    let t = tape.var(Tensor::vector(theta));
    let relaxed = matches!(method, Method::Concrete | Method::StraightThrough);
    let loss = if relaxed {
        let temp = tape.scalar(TEMPERATURE);
        let y = if toy.classes == 2 {
            let q = RelaxedBernoulli::new(temp, t.index(0)?)?;
            if let Method::StraightThrough = method {
                q.rsample_straight_through(rng)?
            } else {
                q.rsample(rng)?
            }
        } else {
            let q = RelaxedOneHotCategorical::new(temp, t)?;
            let y = if let Method::StraightThrough = method {
                q.rsample_straight_through(rng)?
            } else {
                q.rsample(rng)?
            };
            let values = Tensor::from_fn(&[toy.classes], |c| toy.value(c as f64));
            (y * values).sum()
        };
        (y - TARGET).square()
    } else {
        let k = match method {
            Method::Score { k } | Method::LeaveOneOut { k } => k,
            _ => 1,
        };
        let draw = if toy.classes == 2 {
            ScoreSample::draw(&Bernoulli::from_logits(t.index(0)?)?, Some(k), rng)?
        } else {
            ScoreSample::draw(&Categorical::from_logits(t)?, Some(k), rng)?
        };
        let f = tape.constant(
            draw.value()
                .value()
                .map(|c| (toy.value(c) - TARGET).powi(2)),
        );
        let baseline = match method {
            Method::MovingAverage => Baseline::MovingAverage(&mut state.average),
            Method::Learned => Baseline::Learned(
                tape.param(&state.baseline, state.baseline.params().next().unwrap()),
            ),
            Method::LeaveOneOut { .. } => Baseline::LeaveOneOut,
            _ => Baseline::None,
        };
        let s = draw.surrogate(f, baseline)?;
        if let Some(b) = s.baseline_loss {
            let g = b.backward()?;
            state.baseline_opt.step(&mut state.baseline, &g)?;
        }
        s.objective.sum()
    };
    let g = loss.backward()?;
    Ok(g.get(t)
        .map(|g| g.data().to_vec())
        .unwrap_or_else(|| vec![0.0; toy.params()]))
}

/// Bias and variance at `theta`, then the loss after `STEPS` Adam steps from it.
fn toy_row(toy: Toy, method: Method, theta0: &[f64]) -> Result<(StatGradReport, f64)> {
    let (_, exact) = toy.exact(theta0)?;
    let mut state = State::new()?;
    let report = stat_gradient_report(
        |rng| estimate(toy, method, theta0, &mut state, rng),
        &exact,
        ESTIMATES,
        &mut StdRng::seed_from_u64(2),
    )?;
    let mut store = ParamStore::new();
    let theta = store.try_add("theta", Tensor::vector(theta0))?;
    let mut opt = Adam::new(0.01);
    let mut state = State::new()?;
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..STEPS {
        let current = store.value(theta);
        let g = estimate(toy, method, current.data(), &mut state, &mut rng)?;
        let tape = Tape::new();
        // the estimate becomes the gradient of <theta, g>
        let surrogate = (tape.param(&store, theta) * Tensor::vector(&g)).sum();
        opt.step(&mut store, &surrogate.backward()?)?;
    }
    let (loss, _) = toy.exact(store.value(theta).data())?;
    Ok((report, loss))
}

const BOUND_THETA: f64 = 0.3;
const BOUND_PHI: f64 = 1.5;

/// The log weights `ln p(x, h) - ln q(h)` of the bound's model, whose
/// `ln p` is offset by `c`.
fn bound_log_weights<'t>(
    h: Var<'t, f64>,
    log_q: Var<'t, f64>,
    phi: Var<'t, f64>,
    c: f64,
) -> Result<Var<'t, f64>> {
    (-(h - 0.7).square().try_mul(phi)? + c).try_sub(log_q)
}

/// `∇E[L_K]` in `(theta, phi)`, over the 2^K tuples of draws.
fn bound_exact(k: usize, c: f64) -> Result<Vec<f64>> {
    let tape = Tape::new();
    let theta = tape.var(Tensor::vector(&[BOUND_THETA]));
    let phi = tape.var(Tensor::scalar(BOUND_PHI));
    let q = Bernoulli::from_logits(theta)?;
    let mut total = tape.scalar(0.0);
    for bits in 0..1usize << k {
        let h = tape.constant(Tensor::from_fn(&[k, 1], |i| ((bits >> i) & 1) as f64));
        let log_q = q.log_prob(h)?;
        let bound = bound_log_weights(h, log_q, phi, c)?.logsumexp(0, false)? - (k as f64).ln();
        total = total + log_q.sum().exp() * bound.sum();
    }
    let grads = total.backward()?;
    Ok(vec![
        grads.get(theta).map_or(0.0, |g| g.data()[0]),
        grads.get(phi).map_or(0.0, |g| g.data()[0]),
    ])
}

/// One estimate of `∇E[L_K]`: VIMCO's, or the plain score function's.
fn bound_estimate(k: usize, c: f64, vimco: bool, rng: &mut dyn Rng) -> Result<Vec<f64>> {
    let tape = Tape::new();
    let theta = tape.var(Tensor::vector(&[BOUND_THETA]));
    let phi = tape.var(Tensor::scalar(BOUND_PHI));
    let draw = ScoreSample::draw(&Bernoulli::from_logits(theta)?, Some(k), rng)?;
    let f = bound_log_weights(draw.value(), draw.log_prob(), phi, c)?;
    let loss = if vimco {
        draw.vimco(f)?.loss()?
    } else {
        let bound = (f.logsumexp(0, false)? - (k as f64).ln()).sum();
        let lp = draw.log_prob();
        -(bound + ((lp - lp.detach()) * bound.item()?).sum())
    };
    let grads = loss.backward()?;
    Ok(vec![
        -grads.get(theta).map_or(0.0, |g| g.data()[0]),
        -grads.get(phi).map_or(0.0, |g| g.data()[0]),
    ])
}

fn main() -> Result<()> {
    say!("gradient variance of one dense layer (32 -> 16), w.r.t. the kernel means");
    say!(
        "{LAYER_ESTIMATES} estimates each; mean over the 512 components of the per-component variance\n"
    );
    say!(
        "{:<28} {:>12} {:>12} {:>12}",
        "estimator",
        "batch 1",
        "batch 32",
        "batch 128"
    );
    type Row = (&'static str, fn(usize) -> Result<f64>);
    let rows: [Row; 3] = [
        ("reparameterization", layer_variance::<Reparameterization>),
        ("flipout", layer_variance::<Flipout>),
        (
            "local reparameterization",
            layer_variance::<LocalReparameterization>,
        ),
    ];
    for (name, f) in rows {
        let v: Vec<f64> = [1, 32, 128].iter().map(|&b| f(b)).collect::<Result<_>>()?;
        say!(
            "{name:<28} {:>12.4e} {:>12.4e} {:>12.4e}   (batch 1 / batch 128: {:.1}x)",
            v[0],
            v[1],
            v[2],
            v[0] / v[2]
        );
    }
    for toy in [Toy { classes: 2 }, Toy { classes: 10 }] {
        let theta0 = vec![0.0; toy.params()];
        let (start, exact) = toy.exact(&theta0)?;
        let (best, what) = if toy.classes == 2 {
            (TARGET * TARGET, "b ~ Bernoulli(sigmoid(theta))")
        } else {
            (
                (4.0f64 / 9.0 - TARGET).powi(2),
                "c ~ Categorical(softmax(theta)), 10 classes",
            )
        };
        say!("\ntoy: minimize E[(value - {TARGET})^2], {what}, theta = 0");
        say!(
            "exact gradient[0] {:.4e}; loss at the start {start:.6}, at the optimum {best:.6}",
            exact[0]
        );
        say!(
            "bias and variance over {ESTIMATES} estimates at theta = 0 (largest |z| over the components); loss after {STEPS} Adam steps (lr 0.01)\n"
        );
        say!(
            "{:<40} {:>8} {:>12} {:>12} {:>12}",
            "estimator",
            "max |z|",
            "variance",
            "var / plain",
            "loss"
        );
        let mut plain = None;
        for method in METHODS {
            let (report, loss) = toy_row(toy, method, &theta0)?;
            let var = report.mean_variance();
            let plain_var = *plain.get_or_insert(var);
            let ratio = if var > 0.0 {
                format!("{:.2e}", var / plain_var)
            } else {
                "0".into()
            };
            say!(
                "{:<40} {:>8.2} {:>12.4e} {:>12} {:>12.6}",
                method.label(),
                report.max_abs_z(),
                var,
                ratio,
                loss
            );
        }
    }
    say!(
        "\n|z| > 4: the estimator is biased for the discrete objective (the relaxations are, by design)."
    );
    say!(
        "\nK-sample bound ln (1/K) sum_k p(x, h_k) / q(h_k), h ~ Bernoulli(sigmoid({BOUND_THETA})), ln p(x, h) = -{BOUND_PHI} (h - 0.7)^2 + c"
    );
    say!(
        "gradient in (theta, phi) over {ESTIMATES} estimates against the exact one (2^K tuples of draws)\n"
    );
    say!(
        "{:>5} {:<4} {:<28} {:>8} {:>12} {:>12}",
        "c",
        "K",
        "estimator",
        "max |z|",
        "variance",
        "vimco/plain"
    );
    for c in [0.0, -10.0] {
        for k in [2, 4, 8] {
            let exact = bound_exact(k, c)?;
            let report = |vimco: bool| {
                stat_gradient_report(
                    |rng| bound_estimate(k, c, vimco, rng),
                    &exact,
                    ESTIMATES,
                    &mut StdRng::seed_from_u64(4),
                )
            };
            let (plain, vimco) = (report(false)?, report(true)?);
            for (name, r) in [("score function of the bound", &plain), ("VIMCO", &vimco)] {
                let ratio = match name {
                    "VIMCO" => format!("{:.2e}", r.mean_variance() / plain.mean_variance()),
                    _ => String::new(),
                };
                say!(
                    "{c:>5} {k:<4} {name:<28} {:>8.2} {:>12.4e} {:>12}",
                    r.max_abs_z(),
                    r.mean_variance(),
                    ratio
                );
            }
        }
    }
    Ok(())
}
