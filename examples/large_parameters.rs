//! Values and gradients of distributions at large parameters, where the
//! sums of `ln Γ` and ψ that textbook formulas use cancel numbers of size
//! `a ln a`: the bayesgrad column of `docs/accuracy.md`. Compare with
//! `examples/large_parameters.py`, which prints the same cases from
//! mpmath, PyTorch and TFP.
//!
//! Run: `cargo run --release --example large_parameters`

use bayesgrad::prelude::*;

type Case = (&'static str, fn(&Tape<f64>) -> Result<f64>);

/// `d y / d x` of a scalar `y` built from the scalar var `x`.
fn slope<'t>(x: Var<'t, f64>, y: Var<'t, f64>) -> Result<f64> {
    y.backward()?.get(x).map_or(Ok(0.0), |g| g.item())
}

fn main() -> Result<()> {
    let cases: [Case; 20] = [
        ("StudentT(1e10).log_prob(1)", |t| {
            StudentT::new(t.scalar(1e10), t.scalar(0.0), t.scalar(1.0))?
                .log_prob(t.scalar(1.0))?
                .item()
        }),
        ("StudentT(1e10).entropy", |t| {
            StudentT::new(t.scalar(1e10), t.scalar(0.0), t.scalar(1.0))?
                .entropy()?
                .item()
        }),
        ("StudentT(1e300).log_prob(0.5)", |t| {
            StudentT::new(t.scalar(1e300), t.scalar(0.0), t.scalar(1.0))?
                .log_prob(t.scalar(0.5))?
                .item()
        }),
        ("StudentT(1e10) dlogp/ddf", |t| {
            let df = t.var(Tensor::scalar(1e10));
            slope(
                df,
                StudentT::new(df, t.scalar(0.0), t.scalar(1.0))?.log_prob(t.scalar(1.0))?,
            )
        }),
        ("Gamma(1e10,1e10).log_prob(1.00001)", |t| {
            Gamma::new(t.scalar(1e10), t.scalar(1e10))?
                .log_prob(t.scalar(1.00001))?
                .item()
        }),
        ("Gamma(1e10,1e10).entropy", |t| {
            Gamma::new(t.scalar(1e10), t.scalar(1e10))?
                .entropy()?
                .item()
        }),
        ("Beta(1e8,3e8).entropy", |t| {
            Beta::new(t.scalar(1e8), t.scalar(3e8))?.entropy()?.item()
        }),
        ("KL Gamma(1e6,1)||Gamma(1e6+10,1)", |t| {
            let q = Gamma::new(t.scalar(1e6), t.scalar(1.0))?;
            kl_divergence(&q, &Gamma::new(t.scalar(1e6 + 10.0), t.scalar(1.0))?)?.item()
        }),
        ("KL Gamma(1e10,2)||Gamma(1e10+1e3,2)", |t| {
            let q = Gamma::new(t.scalar(1e10), t.scalar(2.0))?;
            kl_divergence(&q, &Gamma::new(t.scalar(1e10 + 1e3), t.scalar(2.0))?)?.item()
        }),
        ("KL Beta(1e6,2e6)||Beta(1e6+10,2e6)", |t| {
            let q = Beta::new(t.scalar(1e6), t.scalar(2e6))?;
            kl_divergence(&q, &Beta::new(t.scalar(1e6 + 10.0), t.scalar(2e6))?)?.item()
        }),
        ("KL N(0,1)||N(1e-5,1+1e-6)", |t| {
            let q = Normal::new(t.scalar(0.0), t.scalar(1.0))?;
            kl_divergence(&q, &Normal::new(t.scalar(1e-5), t.scalar(1.0 + 1e-6))?)?.item()
        }),
        ("Poisson(1e8).log_prob(1e8+1e4)", |t| {
            Poisson::new(t.scalar(1e8))?
                .log_prob(t.scalar(1e8 + 1e4))?
                .item()
        }),
        ("Uniform(-MAX,MAX).log_prob(0)", |t| {
            Uniform::new(t.scalar(-f64::MAX), t.scalar(f64::MAX))?
                .log_prob(t.scalar(0.0))?
                .item()
        }),
        ("KL Gamma(1e12,1e12)||Gamma(1,1)", |t| {
            let q = Gamma::new(t.scalar(1e12), t.scalar(1e12))?;
            kl_divergence(&q, &Gamma::new(t.scalar(1.0), t.scalar(1.0))?)?.item()
        }),
        ("KL Beta(1e8,1e8)||Beta(1,1)", |t| {
            let q = Beta::new(t.scalar(1e8), t.scalar(1e8))?;
            kl_divergence(&q, &Beta::new(t.scalar(1.0), t.scalar(1.0))?)?.item()
        }),
        ("KL Beta(1e-10,3)||Beta(1e-10,1)", |t| {
            let q = Beta::new(t.scalar(1e-10), t.scalar(3.0))?;
            kl_divergence(&q, &Beta::new(t.scalar(1e-10), t.scalar(1.0))?)?.item()
        }),
        ("KL Dir(1e-6,2e-6,3)||Dir(1e-6,2e-6,2.5)", |t| {
            let q = Dirichlet::new(t.var(Tensor::vector(&[1e-6, 2e-6, 3.0])))?;
            let p = Dirichlet::new(t.var(Tensor::vector(&[1e-6, 2e-6, 2.5])))?;
            kl_divergence(&q, &p)?.item()
        }),
        ("Dir(3,1e10,1).entropy", |t| {
            Dirichlet::new(t.var(Tensor::vector(&[3.0, 1e10, 1.0])))?
                .entropy()?
                .item()
        }),
        ("Dir(1e10,1,2).log_prob(1-3e-10,1e-10,2e-10)", |t| {
            Dirichlet::new(t.var(Tensor::vector(&[1e10, 1.0, 2.0])))?
                .log_prob(t.constant(Tensor::vector(&[1.0 - 3e-10, 1e-10, 2e-10])))?
                .item()
        }),
        ("Dir(0.5,3,1e30).log_prob(1e-30,3e-30,1)", |t| {
            Dirichlet::new(t.var(Tensor::vector(&[0.5, 3.0, 1e30])))?
                .log_prob(t.constant(Tensor::vector(&[1e-30, 3e-30, 1.0])))?
                .item()
        }),
    ];
    for (name, case) in cases {
        let tape = Tape::new();
        println!("bayesgrad\t{name}\t{:e}", case(&tape)?);
    }
    Ok(())
}
