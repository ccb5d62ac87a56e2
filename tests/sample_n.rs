//! `Distribution::sample_n` draws in one pass for every built-in family: a
//! few tape nodes whatever the number of draws, the values `rsample_n`
//! gives where the family has a reparameterized draw and those of `n`
//! calls of `sample` one after the other where it has not, and an error
//! for no draws; and draws inside the support where the mass crowds the
//! ends of the floats.

use bayesgrad::distributions::{Exp, TransformedDistribution};
use bayesgrad::prelude::*;
use rand::rngs::StdRng;

/// How a family's `sample_n` values are checked.
enum Same {
    /// `rsample_n(n)`'s values for the same generator state.
    AsRsample,
    /// `n` calls of `sample` one after the other.
    AsRepeatedSample,
    /// The family's own one-pass draws (the mixtures draw every normal at
    /// once): the shape, the tape and the means.
    Own,
}

type Family<'t> = (Box<dyn Distribution<'t, f64> + 't>, Same);

fn b<'t, D: Distribution<'t, f64> + 't>(d: D, same: Same) -> Family<'t> {
    (Box::new(d), same)
}

/// Every built-in family with a batch of three (four categories or
/// components where there are any).
fn families(tape: &Tape<f64>) -> Vec<Family<'_>> {
    let v = |x: &[f64]| tape.var(Tensor::vector(x));
    let pos = || v(&[0.7, 1.5, 3.0]);
    let real = || v(&[-0.4, 0.2, 1.1]);
    let unit = || v(&[0.2, 0.5, 0.9]);
    let m = |rows: usize, x: &[f64]| {
        tape.var(Tensor::from_vec(x.to_vec(), &[rows, x.len() / rows]).unwrap())
    };
    let cat = || {
        m(
            3,
            &[
                0.1, -0.3, 0.8, 0.0, 1.0, 0.2, -1.0, 0.5, 0.3, 0.3, -0.2, 0.1,
            ],
        )
    };
    use Same::*;
    let mvn_tril = tape.var(Tensor::from_vec(vec![1.0, 0.0, 0.3, 0.8], &[2, 2]).unwrap());
    vec![
        b(Normal::new(real(), pos()).unwrap(), AsRsample),
        b(HalfNormal::new(pos()).unwrap(), AsRsample),
        b(LogNormal::new(real(), pos()).unwrap(), AsRsample),
        b(LogitNormal::new(real(), pos()).unwrap(), AsRsample),
        b(Laplace::new(real(), pos()).unwrap(), AsRsample),
        b(Exponential::new(pos()).unwrap(), AsRsample),
        b(Uniform::new(real(), pos()).unwrap(), AsRsample),
        b(Cauchy::new(real(), pos()).unwrap(), AsRsample),
        b(HalfCauchy::new(pos()).unwrap(), AsRsample),
        b(Gumbel::new(real(), pos()).unwrap(), AsRsample),
        b(Weibull::new(pos(), pos()).unwrap(), AsRsample),
        b(Gamma::new(pos(), pos()).unwrap(), AsRsample),
        b(Beta::new(pos(), pos()).unwrap(), AsRsample),
        b(
            Dirichlet::new(m(3, &[0.7, 1.5, 3.0, 2.0, 0.4, 1.0])).unwrap(),
            AsRsample,
        ),
        b(StudentT::new(pos(), real(), pos()).unwrap(), AsRsample),
        b(InverseGamma::new(pos(), pos()).unwrap(), AsRsample),
        b(Kumaraswamy::new(pos(), pos()).unwrap(), AsRsample),
        b(Pareto::new(pos(), pos()).unwrap(), AsRsample),
        b(RelaxedBernoulli::new(pos(), real()).unwrap(), AsRsample),
        b(
            RelaxedOneHotCategorical::new(pos().unsqueeze(1).unwrap(), cat()).unwrap(),
            AsRsample,
        ),
        b(
            MultivariateNormal::from_scale_tril(v(&[0.5, -1.0]), mvn_tril).unwrap(),
            AsRsample,
        ),
        b(VonMises::new(real(), pos()).unwrap(), AsRsample),
        b(
            Independent::new(Box::new(Normal::new(real(), pos()).unwrap()), 1).unwrap(),
            AsRsample,
        ),
        b(
            TransformedDistribution::new(
                Box::new(Gamma::new(pos(), pos()).unwrap()),
                Box::new(Exp),
            ),
            AsRsample,
        ),
        b(Bernoulli::from_logits(real()).unwrap(), AsRepeatedSample),
        b(Poisson::new(pos()).unwrap(), AsRepeatedSample),
        b(
            NegativeBinomial::from_logits(pos(), real()).unwrap(),
            AsRepeatedSample,
        ),
        b(
            Binomial::from_logits(v(&[3.0, 10.0, 40.0]), real()).unwrap(),
            AsRepeatedSample,
        ),
        b(Geometric::from_logits(real()).unwrap(), AsRepeatedSample),
        b(
            MixtureOfNormals::new(cat().softmax(1).unwrap(), cat(), cat().exp()).unwrap(),
            Own,
        ),
        b(SpikeAndSlab::new(unit(), pos(), pos() * 10.0).unwrap(), Own),
        b(Categorical::from_logits(cat()).unwrap(), Own),
    ]
}

#[test]
fn every_family_draws_n_values_in_one_pass() -> Result<()> {
    const N: usize = 500;
    let tape = Tape::new();
    for (d, same) in families(&tape) {
        let name = d.name();
        let mut want = vec![N];
        want.extend(d.batch_shape());
        want.extend(d.event_shape());
        let before = tape.len();
        let draws = d.sample_n(Some(N), &mut StdRng::seed_from_u64(7))?;
        // a per-draw loop through the tape puts thousands of nodes on it
        let nodes = tape.len() - before;
        assert!(nodes <= 16, "{name}: {nodes} tape nodes for {N} draws");
        assert_eq!(draws.shape(), &want[..], "{name}");
        assert!(draws.data().iter().all(|x| x.is_finite()), "{name}");
        // draws differ from one another
        let first = &draws.data()[..draws.len() / N];
        assert!(
            draws.data().chunks(first.len()).any(|c| c != first),
            "{name}"
        );
        match same {
            Same::AsRsample => {
                let r = d.rsample_n(Some(N), &mut StdRng::seed_from_u64(7))?.value();
                assert_eq!(draws.data(), r.data(), "{name}");
            }
            Same::AsRepeatedSample => {
                let mut rng = StdRng::seed_from_u64(7);
                let mut one_by_one = Vec::new();
                for _ in 0..N {
                    one_by_one.extend_from_slice(d.sample(&mut rng)?.data());
                }
                assert_eq!(draws.data(), &one_by_one[..], "{name}");
            }
            Same::Own => {}
        }
        // the draws of the families not checked against rsample_n follow
        // the distribution: each position's mean within five standard
        // errors (where the family has a mean)
        if let (Same::AsRepeatedSample | Same::Own, Ok(mean), Ok(var)) =
            (&same, d.mean(), d.variance())
        {
            let (mean, var) = (mean.value(), var.value());
            let per = mean.len();
            for j in 0..per {
                let m = draws.data().iter().skip(j).step_by(per).sum::<f64>() / N as f64;
                let se = (var.data()[j] / N as f64).sqrt();
                let want = mean.data()[j];
                assert!(
                    (m - want).abs() < 5.0 * se,
                    "{name}[{j}]: mean {m}, expected {want} ± {se}"
                );
            }
        }
        // no draws is an error, naming the family
        let none = d.sample_n(Some(0), &mut StdRng::seed_from_u64(7));
        let err = none.expect_err(name).to_string();
        assert!(
            err.contains(name) && err.contains("Some(0)"),
            "{name}: {err}"
        );
        // `None`: one draw of the batch, no new axis
        let one = d.sample_n(None, &mut StdRng::seed_from_u64(7))?;
        assert_eq!(one.shape(), &want[1..], "{name}");
    }
    Ok(())
}

/// A batch with no elements gives `n` empty draws, not a panic.
#[test]
fn an_empty_batch_gives_empty_draws() -> Result<()> {
    let tape = Tape::<f64>::new();
    let e = || tape.var(Tensor::from_vec(vec![], &[0]).unwrap());
    let families: Vec<Box<dyn Distribution<'_, f64> + '_>> = vec![
        Box::new(Normal::new(e(), e())?),
        Box::new(Gumbel::new(e(), e())?),
        Box::new(Bernoulli::from_logits(e())?),
        Box::new(Poisson::new(e())?),
    ];
    for d in families {
        let draws = d.sample_n(Some(4), &mut StdRng::seed_from_u64(1))?;
        assert_eq!(draws.shape(), &[4, 0], "{}", d.name());
    }
    Ok(())
}

/// Draws at parameters that put much of the mass near the ends of the
/// floats are inside the support: `log_prob` of each is finite (a draw
/// that rounds to 0 or 1 where the support excludes them is moved to the
/// nearest float inside).
#[test]
fn draws_near_the_ends_of_the_floats_are_inside_the_support() -> Result<()> {
    let tape = Tape::<f32>::new();
    let s = |x: f32| tape.scalar(x);
    let families: Vec<Box<dyn Distribution<'_, f32> + '_>> = vec![
        Box::new(Weibull::new(s(0.1), s(1.0))?),
        Box::new(Kumaraswamy::new(s(2.0), s(0.01))?),
        Box::new(Kumaraswamy::new(s(0.01), s(2.0))?),
        Box::new(Beta::new(s(0.01), s(0.01))?),
        Box::new(Gamma::new(s(0.01), s(1.0))?),
        Box::new(InverseGamma::new(s(0.5), s(1.0))?),
        Box::new(LogNormal::new(s(0.0), s(10.0))?),
        Box::new(LogitNormal::new(s(0.0), s(10.0))?),
        Box::new(Pareto::new(s(0.5), s(1.0))?),
        Box::new(RelaxedBernoulli::new(s(0.01), s(0.0))?),
        Box::new(Exponential::new(s(1e30))?),
        Box::new(Uniform::new(s(0.0), s(1.0))?),
        Box::new(Laplace::new(s(0.0), s(1.0))?),
        Box::new(Gumbel::new(s(0.0), s(1.0))?),
        Box::new(HalfCauchy::new(s(1e-30))?),
    ];
    for d in families {
        let x = d.rsample_n(Some(100_000), &mut StdRng::seed_from_u64(11))?;
        let lp = d.log_prob(x)?.value();
        let outside = lp.data().iter().filter(|v| !v.is_finite()).count();
        assert_eq!(
            outside,
            0,
            "{}: {outside} draws outside the support",
            d.name()
        );
    }
    Ok(())
}
