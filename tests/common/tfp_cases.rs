//! Evaluates the cases of a TFP reference file (the format of
//! `tests/data/tfp_golden.json`) with bayesgrad in f64. Shared by
//! `examples/tfp_reference.rs` and `tests/distributions.rs`.

use crate::json::Value;
use bayesgrad::prelude::*;
use std::collections::BTreeMap;

/// Relative tolerance for analytic values and gradients.
pub const RTOL: f64 = 1e-9;
/// Absolute tolerance where the reference is zero ([`ZERO`]).
pub const ATOL: f64 = 1e-12;
/// References below this are zeros: analytic zeros, or what the generator's
/// rounding left of one (1e-60 and below in the 50-digit file).
pub const ZERO: f64 = 1e-40;
/// Monte Carlo cases pass within this many standard errors.
pub const MC_SIGMAS: f64 = 4.0;
/// Draws per Monte Carlo KL estimate.
pub const MC_SAMPLES: usize = 200_000;

/// The worst comparison of one case.
pub struct CaseResult {
    pub kind: String,
    pub index: usize,
    /// Largest relative error over value and gradients (for MC: |est - exact| / se).
    pub worst: f64,
    pub passed: bool,
    pub detail: String,
}

fn num(case: &Value, key: &str) -> Result<f64> {
    case[key]
        .as_f64()
        .ok_or_else(|| Error::invalid("tfp_reference", format!("case lacks number '{key}'")))
}

fn nums(case: &Value, key: &str) -> Result<Vec<f64>> {
    case[key]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| Error::invalid("tfp_reference", format!("case lacks array '{key}'")))
}

/// Relative tolerance for the implicit-reparameterization derivatives: their
/// references are 50-digit values, and the one-pass derivatives reach 4e-15.
pub const IMPLICIT_RTOL: f64 = 5e-14;

/// A var per named input: a scalar or, for an array, a vector or matrix.
fn inputs<'t>(tape: &'t Tape<f64>, case: &Value, names: &[&str]) -> Result<Vec<Var<'t, f64>>> {
    names
        .iter()
        .map(|name| Ok(tape.var(tensor(case, name)?)))
        .collect()
}

/// A number, vector or matrix (array of rows) of a case as a tensor.
fn tensor(case: &Value, key: &str) -> Result<Tensor<f64>> {
    match &case[key] {
        Value::Array(rows) if rows.first().is_some_and(Value::is_array) => {
            let rows: Vec<Vec<f64>> = rows
                .iter()
                .map(|r| {
                    r.as_array()
                        .and_then(|r| r.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
                })
                .collect::<Option<_>>()
                .ok_or_else(|| Error::invalid("tfp_reference", format!("bad matrix '{key}'")))?;
            Tensor::from_rows(&rows)
        }
        Value::Array(_) => Ok(Tensor::vector(&nums(case, key)?)),
        _ => Ok(Tensor::scalar(num(case, key)?)),
    }
}

/// The numbers of a case's entry, flattened.
fn values(case: &Value, key: &str) -> Result<Vec<f64>> {
    Ok(tensor(case, key)?.data().to_vec())
}

/// Compares computed numbers with expected ones at a relative tolerance;
/// returns (worst rel err, all ok, detail).
fn compare_with(pairs: &[(&str, f64, f64)], rtol: f64) -> (f64, bool, String) {
    compare_each(pairs, |_| rtol)
}

/// Units of 2⁻⁵² of error allowed per unit of a quantity's relative
/// condition number, where a case gives one (`cond_value`,
/// `cond_grad_NAME`: the divergences between near-equal distributions of
/// `examples/reference_sweep.py --near`, ill-conditioned problems whose
/// inputs' rounding alone moves them by that much).
pub const COND_ULPS: f64 = 8.0;

/// [`compare_with`] with each quantity's tolerance: [`RTOL`], or where `case`
/// gives the quantity's condition number `c` (under `cond_` and its name
/// without an index; for a vector, a list indexed as the quantity is), the
/// larger of that and `COND_ULPS ε c`.
fn compare_conditioned(case: &Value, pairs: &[(&str, f64, f64)]) -> (f64, bool, String) {
    compare_each(pairs, |name| {
        let (base, index) = match name.split_once('[') {
            Some((base, rest)) => (base, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (name, None),
        };
        let cond = &case[format!("cond_{base}").as_str()];
        let c = match (cond, index) {
            (Value::Array(items), Some(i)) => items.get(i).and_then(Value::as_f64),
            _ => cond.as_f64(),
        };
        match c {
            Some(c) => RTOL.max(COND_ULPS * f64::EPSILON * c),
            None => RTOL,
        }
    })
}

/// Compares each pair at the relative tolerance `rtol` gives its name.
fn compare_each(pairs: &[(&str, f64, f64)], rtol: impl Fn(&str) -> f64) -> (f64, bool, String) {
    let mut worst = 0.0f64;
    let mut ok = true;
    let mut detail = String::new();
    for &(name, got, want) in pairs {
        let rtol = rtol(name);
        let abs = (got - want).abs();
        let rel = abs / want.abs().max(f64::MIN_POSITIVE);
        // Only at a reference that is zero (an analytic zero, or its
        // rounding in the generator) is a relative error meaningless: there
        // the absolute one counts. A small value that is not zero (a
        // divergence between near-equal parameters, a variance far below
        // its mean) is held to its relative tolerance like any other.
        let zero = want.abs() <= ZERO;
        let pass = rel <= rtol || (zero && abs <= ATOL);
        worst = worst.max(if zero { abs } else { rel });
        if !pass {
            ok = false;
            detail += &format!("{name}: got {got:e}, want {want:e}; ");
        }
    }
    (worst, ok, detail)
}

/// Evaluates one case; `None` for a kind bayesgrad does not implement.
pub fn evaluate(case: &Value, index: usize) -> Result<Option<CaseResult>> {
    let kind = case["kind"].as_str().unwrap_or("?").to_string();
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.var(Tensor::scalar(x));
    let mut pairs: Vec<(String, f64, f64)> = Vec::new();
    let push_grad =
        |pairs: &mut Vec<(String, f64, f64)>, name: &str, got: &Tensor<f64>, want: Vec<f64>| {
            for (i, (g, w)) in got.data().iter().zip(want).enumerate() {
                pairs.push((format!("{name}[{i}]"), *g, w));
            }
        };
    match kind.as_str() {
        "normal_log_prob" | "normal_softplus_log_prob" => {
            let (loc, x) = (s(num(case, "loc")?), s(num(case, "x")?));
            let soft = kind == "normal_softplus_log_prob";
            let raw = s(num(case, if soft { "rho" } else { "scale" })?);
            let scale = if soft {
                Constraint::Positive { eps: 1e-5 }.apply(raw)
            } else {
                raw
            };
            let lp = Normal::new(loc, scale)?.log_prob(x)?;
            let g = lp.backward()?;
            pairs.push(("value".into(), lp.item()?, num(case, "value")?));
            push_grad(
                &mut pairs,
                "grad_loc",
                g.get(loc).unwrap(),
                vec![num(case, "grad_loc")?],
            );
            let key = if soft { "grad_rho" } else { "grad_scale" };
            push_grad(&mut pairs, key, g.get(raw).unwrap(), vec![num(case, key)?]);
            push_grad(
                &mut pairs,
                "grad_x",
                g.get(x).unwrap(),
                vec![num(case, "grad_x")?],
            );
        }
        "normal_entropy" => {
            let scale = s(num(case, "scale")?);
            let h = Normal::new(tape.scalar(0.0), scale)?.entropy()?;
            let g = h.backward()?;
            pairs.push(("value".into(), h.item()?, num(case, "value")?));
            push_grad(
                &mut pairs,
                "grad_scale",
                g.get(scale).unwrap(),
                vec![num(case, "grad_scale")?],
            );
        }
        "normal_kl" => {
            let v: Vec<_> = ["loc_q", "scale_q", "loc_p", "scale_p"]
                .iter()
                .map(|k| num(case, k).map(s))
                .collect::<Result<_>>()?;
            let kl = kl_divergence(&Normal::new(v[0], v[1])?, &Normal::new(v[2], v[3])?)?;
            let g = kl.backward()?;
            pairs.push(("value".into(), kl.item()?, num(case, "value")?));
            for (var, key) in
                v.iter()
                    .zip(["grad_loc_q", "grad_scale_q", "grad_loc_p", "grad_scale_p"])
            {
                push_grad(&mut pairs, key, g.get(*var).unwrap(), vec![num(case, key)?]);
            }
        }
        "categorical_log_prob" | "categorical_entropy" => {
            let logits = tape.var(Tensor::vector(&nums(case, "logits")?));
            let cat = Categorical::from_logits(logits)?;
            let out = if kind == "categorical_entropy" {
                cat.entropy()?
            } else {
                let label = case["label"]
                    .as_u64()
                    .ok_or_else(|| Error::invalid("tfp_reference", "label"))?;
                cat.log_prob(tape.scalar(label as f64))?
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            push_grad(
                &mut pairs,
                "grad_logits",
                g.get(logits).unwrap(),
                nums(case, "grad_logits")?,
            );
        }
        "categorical_kl" => {
            let lq = tape.var(Tensor::vector(&nums(case, "logits_q")?));
            let lp = tape.var(Tensor::vector(&nums(case, "logits_p")?));
            let kl = kl_divergence(
                &Categorical::from_logits(lq)?,
                &Categorical::from_logits(lp)?,
            )?;
            let g = kl.backward()?;
            pairs.push(("value".into(), kl.item()?, num(case, "value")?));
            push_grad(
                &mut pairs,
                "grad_logits_q",
                g.get(lq).unwrap(),
                nums(case, "grad_logits_q")?,
            );
            push_grad(
                &mut pairs,
                "grad_logits_p",
                g.get(lp).unwrap(),
                nums(case, "grad_logits_p")?,
            );
        }
        "spike_slab_log_prob" => {
            let v: Vec<_> = ["pi", "spike_scale", "slab_scale", "x"]
                .iter()
                .map(|k| num(case, k).map(s))
                .collect::<Result<_>>()?;
            let lp = SpikeAndSlab::new(v[0], v[1], v[2])?.log_prob(v[3])?;
            let g = lp.backward()?;
            pairs.push(("value".into(), lp.item()?, num(case, "value")?));
            for (var, key) in
                v.iter()
                    .zip(["grad_pi", "grad_spike_scale", "grad_slab_scale", "grad_x"])
            {
                push_grad(&mut pairs, key, g.get(*var).unwrap(), vec![num(case, key)?]);
            }
        }
        "normal_vs_spike_slab_kl" => {
            let mut rng = StdRng::seed_from_u64(index as u64);
            let q = Normal::new(s(num(case, "loc")?), s(num(case, "scale")?))?;
            let p = SpikeAndSlab::new(
                s(num(case, "pi")?),
                s(num(case, "spike_scale")?),
                s(num(case, "slab_scale")?),
            )?;
            let z = q.rsample_n(Some(MC_SAMPLES), &mut rng)?;
            let d = q.log_prob(z)?.try_sub(p.log_prob(z)?)?.value();
            let n = d.len() as f64;
            let mean = d.data().iter().sum::<f64>() / n;
            let var = d.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let se = (var / n).sqrt();
            let exact = num(case, "value")?;
            let z_score = (mean - exact).abs() / se.max(1e-300);
            return Ok(Some(CaseResult {
                kind,
                index,
                worst: z_score,
                passed: z_score <= MC_SIGMAS,
                detail: format!("estimate {mean:.6} ± {se:.2e}, exact {exact:.6}"),
            }));
        }
        "bernoulli_log_prob"
        | "bernoulli_entropy"
        | "bernoulli_kl"
        | "relaxed_bernoulli_log_prob" => {
            let names: &[&str] = match kind.as_str() {
                "bernoulli_log_prob" => &["logits", "x"],
                "bernoulli_entropy" => &["logits"],
                "bernoulli_kl" => &["logits_q", "logits_p"],
                _ => &["temperature", "logits", "x"],
            };
            let v: Vec<_> = names
                .iter()
                .map(|k| num(case, k).map(s))
                .collect::<Result<_>>()?;
            let out = match kind.as_str() {
                "bernoulli_log_prob" => Bernoulli::from_logits(v[0])?.log_prob(v[1])?,
                "bernoulli_entropy" => Bernoulli::from_logits(v[0])?.entropy()?,
                "bernoulli_kl" => kl_divergence(
                    &Bernoulli::from_logits(v[0])?,
                    &Bernoulli::from_logits(v[1])?,
                )?,
                _ => RelaxedBernoulli::new(v[0], v[1])?.log_prob(v[2])?,
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            for (var, name) in v.iter().zip(names) {
                let key = format!("grad_{name}");
                push_grad(
                    &mut pairs,
                    &key,
                    g.get(*var).unwrap(),
                    vec![num(case, &key)?],
                );
            }
        }
        "gamma_log_prob" | "gamma_entropy" | "gamma_kl" | "beta_log_prob" | "beta_entropy"
        | "beta_kl" | "dirichlet_log_prob" | "dirichlet_entropy" | "dirichlet_kl"
        | "student_t_log_prob" | "student_t_entropy" => {
            let names: &[&str] = match kind.as_str() {
                "gamma_log_prob" => &["concentration", "rate", "x"],
                "gamma_entropy" => &["concentration", "rate"],
                "gamma_kl" => &["concentration_q", "rate_q", "concentration_p", "rate_p"],
                "beta_log_prob" => &["concentration1", "concentration0", "x"],
                "beta_entropy" => &["concentration1", "concentration0"],
                "beta_kl" => &[
                    "concentration1_q",
                    "concentration0_q",
                    "concentration1_p",
                    "concentration0_p",
                ],
                "dirichlet_log_prob" => &["concentration", "x"],
                "dirichlet_entropy" => &["concentration"],
                "dirichlet_kl" => &["concentration_q", "concentration_p"],
                "student_t_log_prob" => &["df", "loc", "scale", "x"],
                _ => &["df", "scale"],
            };
            let v = inputs(&tape, case, names)?;
            let out = match kind.as_str() {
                "gamma_log_prob" => Gamma::new(v[0], v[1])?.log_prob(v[2])?,
                "gamma_entropy" => Gamma::new(v[0], v[1])?.entropy()?,
                "gamma_kl" => kl_divergence(&Gamma::new(v[0], v[1])?, &Gamma::new(v[2], v[3])?)?,
                "beta_log_prob" => Beta::new(v[0], v[1])?.log_prob(v[2])?,
                "beta_entropy" => Beta::new(v[0], v[1])?.entropy()?,
                "beta_kl" => kl_divergence(&Beta::new(v[0], v[1])?, &Beta::new(v[2], v[3])?)?,
                "dirichlet_log_prob" => Dirichlet::new(v[0])?.log_prob(v[1])?,
                "dirichlet_entropy" => Dirichlet::new(v[0])?.entropy()?,
                "dirichlet_kl" => kl_divergence(&Dirichlet::new(v[0])?, &Dirichlet::new(v[1])?)?,
                "student_t_log_prob" => StudentT::new(v[0], v[1], v[2])?.log_prob(v[3])?,
                _ => StudentT::new(v[0], tape.scalar(0.0), v[1])?.entropy()?,
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            for (var, name) in v.iter().zip(names) {
                let key = format!("grad_{name}");
                push_grad(&mut pairs, &key, g.get(*var).unwrap(), values(case, &key)?);
            }
        }
        "laplace_log_prob"
        | "laplace_entropy"
        | "laplace_kl"
        | "exponential_log_prob"
        | "uniform_log_prob"
        | "uniform_entropy"
        | "poisson_log_prob" => {
            let names: &[&str] = match kind.as_str() {
                "laplace_log_prob" => &["loc", "scale", "x"],
                "laplace_entropy" => &["scale"],
                "laplace_kl" => &["loc_q", "scale_q", "loc_p", "scale_p"],
                "exponential_log_prob" => &["rate", "x"],
                "uniform_log_prob" => &["low", "high", "x"],
                "uniform_entropy" => &["low", "high"],
                _ => &["rate", "k"],
            };
            let v = inputs(&tape, case, names)?;
            let out = match kind.as_str() {
                "laplace_log_prob" => Laplace::new(v[0], v[1])?.log_prob(v[2])?,
                "laplace_entropy" => Laplace::new(tape.scalar(0.0), v[0])?.entropy()?,
                "laplace_kl" => {
                    kl_divergence(&Laplace::new(v[0], v[1])?, &Laplace::new(v[2], v[3])?)?
                }
                "exponential_log_prob" => Exponential::new(v[0])?.log_prob(v[1])?,
                "uniform_log_prob" => Uniform::new(v[0], v[1])?.log_prob(v[2])?,
                "uniform_entropy" => Uniform::new(v[0], v[1])?.entropy()?,
                _ => Poisson::new(v[0])?.log_prob(v[1])?,
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            for (var, name) in v.iter().zip(names) {
                let key = format!("grad_{name}");
                let got = g
                    .get(*var)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros(&var.shape()));
                push_grad(&mut pairs, &key, &got, values(case, &key)?);
            }
        }
        "lognormal_log_prob"
        | "lognormal_kl"
        | "logit_normal_log_prob"
        | "logit_normal_kl"
        | "uniform_kl"
        | "poisson_kl"
        | "exponential_gamma_kl"
        | "gamma_exponential_kl"
        | "cauchy_log_prob"
        | "cauchy_entropy"
        | "cauchy_kl"
        | "half_cauchy_log_prob"
        | "half_cauchy_entropy"
        | "half_cauchy_kl"
        | "half_normal_log_prob"
        | "half_normal_entropy"
        | "half_normal_kl"
        | "negative_binomial_log_prob"
        | "binomial_log_prob"
        | "gumbel_log_prob"
        | "gumbel_entropy"
        | "gumbel_kl"
        | "weibull_log_prob"
        | "weibull_entropy"
        | "weibull_kl"
        | "weibull_mean"
        | "weibull_variance"
        | "inverse_gamma_log_prob"
        | "inverse_gamma_entropy"
        | "inverse_gamma_kl"
        | "geometric_log_prob"
        | "geometric_entropy"
        | "geometric_kl"
        | "normal_laplace_kl"
        | "pareto_log_prob"
        | "pareto_entropy"
        | "pareto_kl"
        | "pareto_mean"
        | "pareto_variance"
        | "kumaraswamy_log_prob"
        | "kumaraswamy_entropy"
        | "kumaraswamy_mean"
        | "kumaraswamy_variance"
        | "kumaraswamy_beta_kl"
        | "von_mises_log_prob"
        | "von_mises_entropy"
        | "von_mises_variance"
        | "von_mises_kl"
        | "binomial_kl" => {
            let names: &[&str] = match kind.as_str() {
                "binomial_kl" => &["total_count", "logits_q", "logits_p"],
                "von_mises_log_prob" => &["loc", "concentration", "x"],
                "von_mises_entropy" | "von_mises_variance" => &["concentration"],
                "von_mises_kl" => &["loc_q", "concentration_q", "loc_p", "concentration_p"],
                "kumaraswamy_beta_kl" => &[
                    "concentration1_q",
                    "concentration0_q",
                    "concentration1_p",
                    "concentration0_p",
                ],
                "kumaraswamy_log_prob" => &["concentration1", "concentration0", "x"],
                "kumaraswamy_entropy" | "kumaraswamy_mean" | "kumaraswamy_variance" => {
                    &["concentration1", "concentration0"]
                }
                "negative_binomial_log_prob" | "binomial_log_prob" => {
                    &["total_count", "logits", "k"]
                }
                "cauchy_log_prob" | "gumbel_log_prob" => &["loc", "scale", "x"],
                "cauchy_kl" | "gumbel_kl" => &["loc_q", "scale_q", "loc_p", "scale_p"],
                "weibull_log_prob" | "inverse_gamma_log_prob" | "pareto_log_prob" => {
                    &["concentration", "scale", "x"]
                }
                "weibull_entropy"
                | "weibull_mean"
                | "weibull_variance"
                | "inverse_gamma_entropy"
                | "pareto_entropy"
                | "pareto_mean"
                | "pareto_variance" => &["concentration", "scale"],
                "normal_laplace_kl" => &["loc_q", "scale_q", "loc_p", "scale_p"],
                "weibull_kl" | "inverse_gamma_kl" | "pareto_kl" => {
                    &["concentration_q", "scale_q", "concentration_p", "scale_p"]
                }
                "geometric_log_prob" => &["logits", "k"],
                "geometric_entropy" => &["logits"],
                "geometric_kl" => &["logits_q", "logits_p"],
                "half_cauchy_log_prob" | "half_normal_log_prob" => &["scale", "x"],
                "cauchy_entropy"
                | "half_cauchy_entropy"
                | "half_normal_entropy"
                | "gumbel_entropy" => &["scale"],
                "half_cauchy_kl" | "half_normal_kl" => &["scale_q", "scale_p"],
                "lognormal_kl" | "logit_normal_kl" => &["loc_q", "scale_q", "loc_p", "scale_p"],
                "uniform_kl" => &["low_q", "high_q", "low_p", "high_p"],
                "poisson_kl" => &["rate_q", "rate_p"],
                "exponential_gamma_kl" => &["rate_q", "concentration_p", "rate_p"],
                "gamma_exponential_kl" => &["concentration_q", "rate_q", "rate_p"],
                _ => &["loc", "scale", "x"],
            };
            let v = inputs(&tape, case, names)?;
            let out = match kind.as_str() {
                "lognormal_log_prob" => LogNormal::new(v[0], v[1])?.log_prob(v[2])?,
                "lognormal_kl" => {
                    kl_divergence(&LogNormal::new(v[0], v[1])?, &LogNormal::new(v[2], v[3])?)?
                }
                "logit_normal_kl" => kl_divergence(
                    &LogitNormal::new(v[0], v[1])?,
                    &LogitNormal::new(v[2], v[3])?,
                )?,
                "uniform_kl" => {
                    kl_divergence(&Uniform::new(v[0], v[1])?, &Uniform::new(v[2], v[3])?)?
                }
                "poisson_kl" => kl_divergence(&Poisson::new(v[0])?, &Poisson::new(v[1])?)?,
                "exponential_gamma_kl" => {
                    kl_divergence(&Exponential::new(v[0])?, &Gamma::new(v[1], v[2])?)?
                }
                "gamma_exponential_kl" => {
                    kl_divergence(&Gamma::new(v[0], v[1])?, &Exponential::new(v[2])?)?
                }
                "cauchy_log_prob" => Cauchy::new(v[0], v[1])?.log_prob(v[2])?,
                "cauchy_entropy" => Cauchy::new(tape.scalar(0.0), v[0])?.entropy()?,
                "cauchy_kl" => kl_divergence(&Cauchy::new(v[0], v[1])?, &Cauchy::new(v[2], v[3])?)?,
                "half_cauchy_log_prob" => HalfCauchy::new(v[0])?.log_prob(v[1])?,
                "half_cauchy_entropy" => HalfCauchy::new(v[0])?.entropy()?,
                "half_cauchy_kl" => {
                    kl_divergence(&HalfCauchy::new(v[0])?, &HalfCauchy::new(v[1])?)?
                }
                "half_normal_log_prob" => HalfNormal::new(v[0])?.log_prob(v[1])?,
                "half_normal_entropy" => HalfNormal::new(v[0])?.entropy()?,
                "half_normal_kl" => {
                    kl_divergence(&HalfNormal::new(v[0])?, &HalfNormal::new(v[1])?)?
                }
                "negative_binomial_log_prob" => {
                    NegativeBinomial::from_logits(v[0], v[1])?.log_prob(v[2])?
                }
                "binomial_log_prob" => Binomial::from_logits(v[0], v[1])?.log_prob(v[2])?,
                "gumbel_log_prob" => Gumbel::new(v[0], v[1])?.log_prob(v[2])?,
                "gumbel_entropy" => Gumbel::new(tape.scalar(0.0), v[0])?.entropy()?,
                "gumbel_kl" => kl_divergence(&Gumbel::new(v[0], v[1])?, &Gumbel::new(v[2], v[3])?)?,
                "weibull_log_prob" => Weibull::new(v[0], v[1])?.log_prob(v[2])?,
                "weibull_entropy" => Weibull::new(v[0], v[1])?.entropy()?,
                "weibull_mean" => Weibull::new(v[0], v[1])?.mean()?,
                "weibull_variance" => Weibull::new(v[0], v[1])?.variance()?,
                "weibull_kl" => {
                    kl_divergence(&Weibull::new(v[0], v[1])?, &Weibull::new(v[2], v[3])?)?
                }
                "inverse_gamma_log_prob" => InverseGamma::new(v[0], v[1])?.log_prob(v[2])?,
                "inverse_gamma_entropy" => InverseGamma::new(v[0], v[1])?.entropy()?,
                "inverse_gamma_kl" => kl_divergence(
                    &InverseGamma::new(v[0], v[1])?,
                    &InverseGamma::new(v[2], v[3])?,
                )?,
                "geometric_log_prob" => Geometric::from_logits(v[0])?.log_prob(v[1])?,
                "geometric_entropy" => Geometric::from_logits(v[0])?.entropy()?,
                "geometric_kl" => kl_divergence(
                    &Geometric::from_logits(v[0])?,
                    &Geometric::from_logits(v[1])?,
                )?,
                "kumaraswamy_log_prob" => Kumaraswamy::new(v[0], v[1])?.log_prob(v[2])?,
                "kumaraswamy_entropy" => Kumaraswamy::new(v[0], v[1])?.entropy()?,
                "kumaraswamy_mean" => Kumaraswamy::new(v[0], v[1])?.mean()?,
                "kumaraswamy_variance" => Kumaraswamy::new(v[0], v[1])?.variance()?,
                "binomial_kl" => kl_divergence(
                    &Binomial::from_logits(v[0], v[1])?,
                    &Binomial::from_logits(v[0], v[2])?,
                )?,
                "von_mises_log_prob" => VonMises::new(v[0], v[1])?.log_prob(v[2])?,
                "von_mises_entropy" => VonMises::new(v[0] * 0.0, v[0])?.entropy()?,
                "von_mises_variance" => VonMises::new(v[0] * 0.0, v[0])?.variance()?,
                "von_mises_kl" => {
                    kl_divergence(&VonMises::new(v[0], v[1])?, &VonMises::new(v[2], v[3])?)?
                }
                "kumaraswamy_beta_kl" => {
                    kl_divergence(&Kumaraswamy::new(v[0], v[1])?, &Beta::new(v[2], v[3])?)?
                }
                "normal_laplace_kl" => {
                    kl_divergence(&Normal::new(v[0], v[1])?, &Laplace::new(v[2], v[3])?)?
                }
                "pareto_log_prob" => Pareto::new(v[0], v[1])?.log_prob(v[2])?,
                "pareto_entropy" => Pareto::new(v[0], v[1])?.entropy()?,
                "pareto_mean" => Pareto::new(v[0], v[1])?.mean()?,
                "pareto_variance" => Pareto::new(v[0], v[1])?.variance()?,
                "pareto_kl" => kl_divergence(&Pareto::new(v[0], v[1])?, &Pareto::new(v[2], v[3])?)?,
                _ => LogitNormal::new(v[0], v[1])?.log_prob(v[2])?,
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            for (var, name) in v.iter().zip(names) {
                let key = format!("grad_{name}");
                // an input the value does not reach (a Binomial KL's total
                // count) has gradient 0, which the reference gives it
                let zero = Tensor::zeros(&var.shape());
                push_grad(
                    &mut pairs,
                    &key,
                    g.get(*var).unwrap_or(&zero),
                    values(case, &key)?,
                );
            }
        }
        "mvn_tril_log_prob" | "mvn_tril_entropy" | "mvn_tril_kl" => {
            let names: &[&str] = match kind.as_str() {
                "mvn_tril_log_prob" => &["loc", "scale_tril", "x"],
                "mvn_tril_entropy" => &["scale_tril"],
                _ => &["loc_q", "scale_tril_q", "loc_p", "scale_tril_p"],
            };
            let v = inputs(&tape, case, names)?;
            let out = match kind.as_str() {
                "mvn_tril_log_prob" => {
                    MultivariateNormal::from_scale_tril(v[0], v[1])?.log_prob(v[2])?
                }
                "mvn_tril_entropy" => {
                    let d = v[0].shape()[0];
                    MultivariateNormal::from_scale_tril(tape.constant(Tensor::zeros(&[d])), v[0])?
                        .entropy()?
                }
                _ => kl_divergence(
                    &MultivariateNormal::from_scale_tril(v[0], v[1])?,
                    &MultivariateNormal::from_scale_tril(v[2], v[3])?,
                )?,
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            for (var, name) in v.iter().zip(names) {
                let key = format!("grad_{name}");
                push_grad(&mut pairs, &key, g.get(*var).unwrap(), values(case, &key)?);
            }
        }
        "gamma_implicit_grad" | "beta_implicit_grad" | "von_mises_implicit_grad" => {
            let names: &[&str] = match kind.as_str() {
                "gamma_implicit_grad" => &["concentration", "rate"],
                "beta_implicit_grad" => &["concentration1", "concentration0"],
                _ => &["loc", "concentration"],
            };
            let v = inputs(&tape, case, names)?;
            let x = Tensor::scalar(num(case, "x")?);
            let out = match kind.as_str() {
                "gamma_implicit_grad" => Gamma::new(v[0], v[1])?.reparameterize(x)?,
                "beta_implicit_grad" => Beta::new(v[0], v[1])?.reparameterize(x)?,
                _ => VonMises::new(v[0], v[1])?.reparameterize(x)?,
            };
            let g = out.backward()?;
            for (var, name) in v.iter().zip(names) {
                let key = format!("dx_d{name}");
                pairs.push((key.clone(), g.get(*var).unwrap().item()?, num(case, &key)?));
            }
            let refs: Vec<(&str, f64, f64)> =
                pairs.iter().map(|(n, g, w)| (n.as_str(), *g, *w)).collect();
            let (worst, passed, detail) = compare_with(&refs, IMPLICIT_RTOL);
            return Ok(Some(CaseResult {
                kind,
                index,
                worst,
                passed,
                detail,
            }));
        }
        "lgamma" | "digamma" => {
            let x = s(num(case, "x")?);
            let out = if kind == "lgamma" {
                x.lgamma()
            } else {
                x.digamma()
            };
            let g = out.backward()?;
            pairs.push(("value".into(), out.item()?, num(case, "value")?));
            push_grad(
                &mut pairs,
                "grad_x",
                g.get(x).unwrap(),
                vec![num(case, "grad_x")?],
            );
        }
        "relaxed_one_hot_categorical_log_prob" => {
            let temperature = s(num(case, "temperature")?);
            let logits = tape.var(Tensor::vector(&nums(case, "logits")?));
            let x = tape.var(Tensor::vector(&nums(case, "x")?));
            let lp = RelaxedOneHotCategorical::new(temperature, logits)?.log_prob(x)?;
            let g = lp.backward()?;
            pairs.push(("value".into(), lp.item()?, num(case, "value")?));
            push_grad(
                &mut pairs,
                "grad_temperature",
                g.get(temperature).unwrap(),
                vec![num(case, "grad_temperature")?],
            );
            for (var, key) in [(logits, "grad_logits"), (x, "grad_x")] {
                push_grad(&mut pairs, key, g.get(var).unwrap(), nums(case, key)?);
            }
        }
        _ => return Ok(None),
    }
    let refs: Vec<(&str, f64, f64)> = pairs.iter().map(|(n, g, w)| (n.as_str(), *g, *w)).collect();
    let (worst, passed, detail) = compare_conditioned(case, &refs);
    Ok(Some(CaseResult {
        kind,
        index,
        worst,
        passed,
        detail,
    }))
}

/// The cases of a reference document that were evaluated, and the number
/// of cases of each kind bayesgrad does not implement.
pub struct Evaluation {
    pub results: Vec<CaseResult>,
    pub skipped: BTreeMap<String, usize>,
}

/// Evaluates every case of a reference document.
pub fn evaluate_all(doc: &Value) -> Result<Evaluation> {
    let cases = doc["cases"]
        .as_array()
        .ok_or_else(|| Error::invalid("tfp_reference", "no 'cases' array"))?;
    let mut out = Evaluation {
        results: Vec::new(),
        skipped: BTreeMap::new(),
    };
    for (i, case) in cases.iter().enumerate() {
        match evaluate(case, i)? {
            Some(r) => out.results.push(r),
            None => {
                let kind = case["kind"].as_str().unwrap_or("?").to_string();
                *out.skipped.entry(kind).or_default() += 1;
            }
        }
    }
    Ok(out)
}

/// Worst error and pass/fail counts by kind.
pub fn summarize(results: &[CaseResult]) -> BTreeMap<String, (f64, usize, usize)> {
    let mut by_kind: BTreeMap<String, (f64, usize, usize)> = BTreeMap::new();
    for r in results {
        let e = by_kind.entry(r.kind.clone()).or_default();
        e.0 = e.0.max(r.worst);
        if r.passed { e.1 += 1 } else { e.2 += 1 }
    }
    by_kind
}
