//! The distribution families beyond Normal, Categorical and Bernoulli:
//! gradient checks, sampler tests (Kolmogorov–Smirnov and chi-square at
//! fixed seeds, 10⁵ draws), statistical checks of the implicit
//! reparameterization, bijectors and bad input.

use crate::f32_domain::value_and_slopes;
use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
use bayesgrad::distributions::{
    Affine, Bijector, Chain, Exp, Sigmoid, Softplus, TransformedDistribution,
    expectation_quadrature,
};
use bayesgrad::prelude::*;

fn gc<Fun>(name: &str, f: Fun, inputs: &[Tensor<f64>])
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    gradcheck(f, inputs, &GradCheck::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// The lower triangle of a 2 x 2 var (gradcheck perturbs every entry; a
/// scale must be lower triangular).
fn lower(m: Var<'_, f64>) -> Var<'_, f64> {
    m * Tensor::from_rows(&[[1.0, 0.0], [1.0, 1.0]]).unwrap()
}

fn s(x: f64) -> Tensor<f64> {
    Tensor::scalar(x)
}

fn v(x: &[f64]) -> Tensor<f64> {
    Tensor::vector(x)
}

/// Whether `got` is within `rel` of `want`, relatively (NaN is not).
fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs()
}

/// The value of `f` at scalars `(a, b)` and its derivatives in them.
fn value_and_gradients(
    f: impl for<'t> Fn(&'t Tape<f64>, Var<'t, f64>, Var<'t, f64>) -> Result<Var<'t, f64>>,
    a: f64,
    b: f64,
) -> (f64, f64, f64) {
    let tape = Tape::<f64>::new();
    let (av, bv) = (tape.var(s(a)), tape.var(s(b)));
    let y = f(&tape, av, bv).unwrap();
    let g = y.backward().unwrap();
    let d = |x: Var<'_, f64>| g.get(x).unwrap().item().unwrap();
    (y.item().unwrap(), d(av), d(bv))
}

#[test]
fn gradcheck_special_functions_and_linear_algebra() {
    gc(
        "lgamma",
        |_, x| Ok(x[0].lgamma()),
        &[v(&[0.3, 1.0, 1.7, 2.0, 7.5, -0.5])],
    );
    gc(
        "digamma",
        |_, x| Ok(x[0].digamma()),
        &[v(&[0.3, 1.0, 1.7, 12.5, -1.5])],
    );
    gc("expm1", |_, x| Ok(x[0].expm1()), &[v(&[-2.0, 1e-3, 0.7])]);
    // both arguments below and past 10, where the stable forms take over;
    // and a scalar second argument, broadcast
    let (a, b) = (v(&[0.3, 2.0, 15.0, 40.0]), v(&[1.5, 0.7, 12.0, 3.0]));
    gc("lbeta", |_, x| x[0].lbeta(x[1]), &[a.clone(), b.clone()]);
    gc("lbeta", |_, x| x[0].lbeta(x[1]), &[a.clone(), s(0.5)]);
    gc(
        "digamma_diff",
        |_, x| x[0].digamma_diff(x[1]),
        &[a.clone(), b],
    );
    gc(
        "digamma_diff",
        |_, x| x[0].digamma_diff(x[1]),
        &[a.clone(), s(0.5)],
    );
    // below and past 10 in x, small and large h
    let h = v(&[1e-3, 0.7, 25.0, 0.05]);
    gc(
        "lgamma_diff",
        |_, x| x[0].lgamma_diff(x[1]),
        &[a.clone(), h],
    );
    gc("lgamma_diff", |_, x| x[0].lgamma_diff(x[1]), &[a, s(0.5)]);
    let spd = Tensor::from_rows(&[[2.0, 0.3, -0.4], [0.3, 1.5, 0.2], [-0.4, 0.2, 1.1]]).unwrap();
    gc("cholesky", |_, x| x[0].cholesky(), &[spd]);
    let l = Tensor::from_rows(&[[1.2, 0.0, 0.0], [0.4, 0.9, 0.0], [-0.3, 0.5, 1.4]]).unwrap();
    let b = Tensor::from_rows(&[[0.5, -1.0], [2.0, 0.1], [0.3, 0.7]]).unwrap();
    gc("tri_solve", |_, x| x[0].tri_solve(x[1]), &[l, b]);
}

#[test]
fn gradcheck_log_probs_entropies_and_kls() {
    gc(
        "Gamma",
        |_, x| {
            let d = Gamma::new(x[0], x[1])?;
            d.log_prob(x[2])?.try_add(d.entropy()?)
        },
        &[v(&[0.7, 3.0]), v(&[1.5, 0.4]), v(&[0.3, 9.0])],
    );
    gc(
        "Beta",
        |_, x| {
            let d = Beta::new(x[0], x[1])?;
            d.log_prob(x[2])?.try_add(d.entropy()?)
        },
        &[v(&[0.7, 3.0]), v(&[1.5, 0.4]), v(&[0.3, 0.9])],
    );
    gc(
        "Dirichlet",
        |_, x| {
            let d = Dirichlet::new(x[0])?;
            d.log_prob(x[1].softmax(0)?)?.try_add(d.entropy()?)
        },
        &[v(&[0.7, 3.0, 1.2]), v(&[0.1, -0.5, 0.8])],
    );
    // two categories (the Beta's entropy), below and past 10
    gc(
        "Dirichlet, two categories",
        |_, x| Dirichlet::new(x[0])?.entropy(),
        &[Tensor::from_rows(&[[0.7, 3.0], [15.0, 40.0]]).unwrap()],
    );
    gc(
        "StudentT",
        |_, x| {
            let d = StudentT::new(x[0], x[1], x[2])?;
            d.log_prob(x[3])?.try_add(d.entropy()?)
        },
        &[
            v(&[3.5, 1.2]),
            v(&[0.1, -2.0]),
            v(&[0.8, 2.5]),
            v(&[1.3, -0.4]),
        ],
    );
    gc(
        "Laplace",
        |_, x| {
            let d = Laplace::new(x[0], x[1])?;
            d.log_prob(x[2])?.try_add(d.entropy()?)
        },
        &[v(&[0.1, -2.0]), v(&[0.8, 2.5]), v(&[1.3, -0.4])],
    );
    gc(
        "Exponential",
        |_, x| {
            let d = Exponential::new(x[0])?;
            d.log_prob(x[1])?.try_add(d.entropy()?)
        },
        &[v(&[0.8, 2.5]), v(&[1.3, 0.4])],
    );
    gc(
        "Uniform",
        |_, x| {
            let d = Uniform::new(x[0], x[1])?;
            d.log_prob(x[2])?.try_add(d.entropy()?)
        },
        &[v(&[-1.0, 0.5]), v(&[2.0, 3.0]), v(&[1.3, 0.7])],
    );
    gc(
        "Poisson",
        |tape, x| Poisson::new(x[0])?.log_prob(tape.constant(v(&[0.0, 3.0]))),
        &[v(&[0.8, 12.5])],
    );
    gc(
        "LogNormal",
        |_, x| {
            let d = LogNormal::new(x[0], x[1])?;
            d.log_prob(x[2])?
                .try_add(d.entropy()?)?
                .try_add(d.variance()?)
        },
        &[v(&[0.1, -1.0]), v(&[0.8, 0.5]), v(&[1.3, 0.4])],
    );
    gc(
        "LogitNormal",
        |_, x| LogitNormal::new(x[0], x[1])?.log_prob(x[2]),
        &[v(&[0.1, -1.0]), v(&[0.8, 0.5]), v(&[0.3, 0.9])],
    );
    // one loc for every value (its gradient summed in one pass), a scale
    // per row broadcast along it
    let rows = |r: &[[f64; 2]]| Tensor::from_rows(r).unwrap();
    let column = Tensor::from_rows(&[[0.8], [0.5]]).unwrap();
    gc(
        "LogNormal, broadcast parameters",
        |_, x| LogNormal::new(x[0], x[1])?.log_prob(x[2]),
        &[
            Tensor::scalar(0.1),
            column.clone(),
            rows(&[[1.3, 0.4], [0.7, 2.0]]),
        ],
    );
    gc(
        "LogitNormal, broadcast parameters",
        |_, x| LogitNormal::new(x[0], x[1])?.log_prob(x[2]),
        &[
            Tensor::scalar(-0.4),
            column,
            rows(&[[0.3, 0.9], [0.05, 0.6]]),
        ],
    );
    let l = Tensor::from_rows(&[[1.2, 0.0], [0.4, 0.9]]).unwrap();
    gc(
        "MultivariateNormal",
        |_, x| {
            let d = MultivariateNormal::from_scale_tril(x[0], lower(x[1]))?;
            d.log_prob(x[2])?.sum().try_add(d.entropy()?)
        },
        &[
            v(&[0.1, -1.0]),
            l.clone(),
            Tensor::from_rows(&[[0.3, 0.9], [1.0, -2.0]]).unwrap(),
        ],
    );
    let cov = Tensor::from_rows(&[[2.0, 0.3], [0.3, 1.5]]).unwrap();
    gc(
        "MultivariateNormal::from_covariance",
        |tape, x| {
            let d = MultivariateNormal::from_covariance(x[0], x[1])?;
            d.log_prob(tape.constant(v(&[0.3, 0.9])))
        },
        &[v(&[0.1, -1.0]), cov],
    );
    // the KLs, in both arguments
    gc(
        "KL Gamma",
        |_, x| kl_divergence(&Gamma::new(x[0], x[1])?, &Gamma::new(x[2], x[3])?),
        &[s(2.0), s(0.5), s(1.2), s(1.5)],
    );
    gc(
        "KL Beta",
        |_, x| kl_divergence(&Beta::new(x[0], x[1])?, &Beta::new(x[2], x[3])?),
        &[s(2.0), s(0.5), s(1.2), s(1.5)],
    );
    gc(
        "KL Dirichlet",
        |_, x| kl_divergence(&Dirichlet::new(x[0])?, &Dirichlet::new(x[1])?),
        &[v(&[2.0, 0.5, 1.0]), v(&[1.2, 1.5, 0.3])],
    );
    // each element on one of the forms: a1 below 10; a1 and a2 from 10
    // with y = a1 b2 / b1 near a2 (twice: the second with the shapes far
    // apart); a1 from 10 and a2 below; both from 10 with y far from a2
    gc(
        "KL Gamma, every form",
        |_, x| kl_divergence(&Gamma::new(x[0], x[1])?, &Gamma::new(x[2], x[3])?),
        &[
            v(&[2.0, 15.0, 40.0, 40.0, 12.0]),
            v(&[0.5, 1.5, 2.0, 2.0, 0.3]),
            v(&[1.2, 12.0, 80.0, 3.0, 30.0]),
            v(&[1.5, 1.0, 4.1, 0.2, 30.0]),
        ],
    );
    // pairs whose first concentration is from 10 and second below (taken
    // less the first), and both below; every concentration from 10 (the
    // form by parts), twice, the second with the proportions nearly kept;
    // then the `a`s small beside the `b`s, and the `b`s beside the `a`s
    // (the shifted forms); by parts with the slopes in the second's
    // concentrations, far below the first's, as differences of digamma
    // differences
    gc(
        "KL Beta, every form",
        |_, x| kl_divergence(&Beta::new(x[0], x[1])?, &Beta::new(x[2], x[3])?),
        &[
            v(&[2.0, 15.0, 40.0, 40.0, 0.05, 3.0, 2.0]),
            v(&[0.5, 20.0, 30.0, 60.0, 3.0, 0.05, 3000.0]),
            v(&[1.2, 3.0, 50.0, 80.0, 0.1, 2.0, 0.001]),
            v(&[1.5, 2.0, 35.0, 121.0, 2.0, 0.1, 0.01]),
        ],
    );
    // two categories: the Beta divergence of the two concentrations, here
    // on its form for one small beside the other and on the general one
    gc(
        "KL Dirichlet, two categories",
        |_, x| kl_divergence(&Dirichlet::new(x[0])?, &Dirichlet::new(x[1])?),
        &[
            Tensor::from_rows(&[[0.05, 3.0], [2.0, 0.5]]).unwrap(),
            Tensor::from_rows(&[[0.1, 2.0], [1.5, 0.7]]).unwrap(),
        ],
    );
    // (the last two rows every concentration from 10: by parts, the second
    // with the proportions nearly kept)
    gc(
        "KL Dirichlet, every form",
        |_, x| kl_divergence(&Dirichlet::new(x[0])?, &Dirichlet::new(x[1])?),
        &[
            Tensor::from_rows(&[
                [15.0, 20.0, 30.0],
                [2.0, 0.5, 1.0],
                [40.0, 12.0, 0.7],
                [15.0, 20.0, 30.0],
                [15.0, 20.0, 30.0],
            ])
            .unwrap(),
            Tensor::from_rows(&[
                [3.0, 2.0, 0.5],
                [1.2, 1.5, 0.3],
                [50.0, 11.0, 2.0],
                [25.0, 12.0, 40.0],
                [30.0, 40.0, 61.0],
            ])
            .unwrap(),
        ],
    );
    // small shared concentrations at either end of a row, on the sticks'
    // divergences (the Betas' forms for small concentrations), beside a
    // row on the closed form
    gc(
        "KL Dirichlet, small shared concentrations",
        |_, x| kl_divergence(&Dirichlet::new(x[0])?, &Dirichlet::new(x[1])?),
        &[
            Tensor::from_rows(&[[0.05, 0.02, 2e3], [2e3, 0.05, 0.02], [2.0, 0.5, 1.0]]).unwrap(),
            Tensor::from_rows(&[[0.05, 0.02, 1.5e3], [1.5e3, 0.05, 0.02], [1.2, 1.5, 0.3]])
                .unwrap(),
        ],
    );
    // rows on the stick-breaking pieces (a spread past 2^15), on the
    // sums, and on the sums' form for large concentrations
    gc(
        "Dirichlet log_prob, every form",
        |_, x| Dirichlet::new(x[0])?.log_prob(x[1].softmax(1)?),
        &[
            Tensor::from_rows(&[[0.5, 2.0, 4e4], [0.5, 2.0, 1.5], [20.0, 30.0, 15.0]]).unwrap(),
            Tensor::from_rows(&[[-3.0, -1.0, 2.0], [0.1, -0.5, 0.8], [0.3, 0.2, -0.4]]).unwrap(),
        ],
    );
    gc(
        "Dirichlet entropy, every form",
        |_, x| Dirichlet::new(x[0])?.entropy(),
        &[Tensor::from_rows(&[[0.5, 2.0, 2e4], [0.5, 2.0, 1.5], [20.0, 30.0, 15.0]]).unwrap()],
    );
    gc(
        "KL Laplace",
        |_, x| kl_divergence(&Laplace::new(x[0], x[1])?, &Laplace::new(x[2], x[3])?),
        &[s(0.2), s(0.5), s(-1.2), s(1.5)],
    );
    gc(
        "KL Exponential",
        |_, x| kl_divergence(&Exponential::new(x[0])?, &Exponential::new(x[1])?),
        &[s(0.7), s(2.5)],
    );
    gc(
        "KL LogNormal",
        |_, x| kl_divergence(&LogNormal::new(x[0], x[1])?, &LogNormal::new(x[2], x[3])?),
        &[s(0.2), s(0.5), s(-1.2), s(1.5)],
    );
    let lq = Tensor::from_rows(&[[1.2, 0.0], [0.4, 0.9]]).unwrap();
    let lp = Tensor::from_rows(&[[0.7, 0.0], [-0.2, 1.3]]).unwrap();
    gc(
        "KL MultivariateNormal",
        |_, x| {
            kl_divergence(
                &MultivariateNormal::from_scale_tril(x[0], lower(x[1]))?,
                &MultivariateNormal::from_scale_tril(x[2], lower(x[3]))?,
            )
        },
        &[v(&[0.1, -1.0]), lq, v(&[0.5, 0.2]), lp],
    );
}

/// Location-scale draws are smooth in the parameters at a fixed seed.
/// The Laplace log-density is one fused op with a path for single
/// parameters and a constant value and one for any broadcast: each has
/// the formula's value, its finite-difference gradients, `abs`'s
/// derivative of 0 at `x = loc`, and zero gradients (not NaN) where the
/// incoming gradient is 0 and `|z| / scale` overflows.
#[test]
fn laplace_log_prob_in_every_layout() {
    let xs = [0.3, -1.2, 2.5, 0.0, 0.4, 7.0];
    let x = || Tensor::from_vec(xs.to_vec(), &[2, 3]).unwrap();
    // single parameters, a constant value (the likelihood path)
    gc(
        "Laplace, single parameters, constant x",
        |t, a| Laplace::new(a[0], a[1])?.log_prob(t.constant(x())),
        &[s(0.45), s(1.7)],
    );
    // single parameters, the value a var; parameters per row; per value
    gc(
        "Laplace, single parameters",
        |_, a| Laplace::new(a[0], a[1])?.log_prob(a[2]),
        &[s(0.45), s(1.7), x()],
    );
    gc(
        "Laplace, parameters per row",
        |t, a| Laplace::new(a[0], a[1])?.log_prob(t.constant(x())),
        &[
            Tensor::from_vec(vec![0.45, -2.0], &[2, 1]).unwrap(),
            Tensor::from_vec(vec![1.7, 0.6], &[2, 1]).unwrap(),
        ],
    );
    // the value at the formula, in each layout
    let formula = |x: f64, m: f64, b: f64| -(2.0 * b).ln() - (x - m).abs() / b;
    for (m, b) in [(vec![0.45], vec![1.7]), (vec![0.45, -2.0], vec![1.7, 0.6])] {
        let tape = Tape::<f64>::new();
        // a single value, or one per row
        let shape: &[usize] = if m.len() == 1 { &[] } else { &[2, 1] };
        let d = Laplace::new(
            tape.var(Tensor::from_vec(m.clone(), shape).unwrap()),
            tape.var(Tensor::from_vec(b.clone(), shape).unwrap()),
        )
        .unwrap();
        let lp = d.log_prob(tape.constant(x())).unwrap().value();
        for (i, &got) in lp.data().iter().enumerate() {
            let r = (i / 3) % m.len();
            let want = formula(xs[i], m[r], b[r]);
            assert!(close(got, want, 1e-15), "{i}: {got} vs {want}");
        }
    }
    // at x = loc: d/dx = d/dloc = 0, d/dscale = -1/scale, on both paths
    for value_is_var in [false, true] {
        let tape = Tape::<f64>::new();
        let (m, b) = (tape.var(s(0.4)), tape.var(s(2.0)));
        let at = Tensor::from_vec(vec![0.4, 0.4], &[2]).unwrap();
        let x = match value_is_var {
            true => tape.var(at),
            false => tape.constant(at),
        };
        let g = Laplace::new(m, b)
            .unwrap()
            .log_prob(x)
            .unwrap()
            .sum()
            .backward()
            .unwrap();
        assert_eq!(g.get(m).unwrap().item().unwrap(), 0.0);
        assert_eq!(g.get(b).unwrap().item().unwrap(), -1.0);
        if value_is_var {
            assert_eq!(g.get(x).unwrap().data(), &[0.0, 0.0]);
        }
    }
    // f32: the values and gradients of f64 rounded, to a few ε
    for single in [true, false] {
        let f64_side = {
            let tape = Tape::<f64>::new();
            let (m, b) = match single {
                true => (tape.var(s(0.45)), tape.var(s(1.7))),
                false => (
                    tape.var(
                        Tensor::from_vec(vec![0.45, -2.0, 0.1, 3.0, 0.4, 6.5], &[2, 3]).unwrap(),
                    ),
                    tape.var(
                        Tensor::from_vec(vec![1.7, 0.6, 2.0, 0.3, 1.1, 4.0], &[2, 3]).unwrap(),
                    ),
                ),
            };
            let lp = Laplace::new(m, b)
                .unwrap()
                .log_prob(tape.constant(x()))
                .unwrap();
            let g = lp.sum().backward().unwrap();
            let mut all = lp.value().data().to_vec();
            all.extend(g.get(m).unwrap().data());
            all.extend(g.get(b).unwrap().data());
            all
        };
        let tape = Tape::<f32>::new();
        let cast = |t: Tensor<f64>| {
            Tensor::from_vec(t.data().iter().map(|&v| v as f32).collect(), t.shape()).unwrap()
        };
        let (m, b) = match single {
            true => (
                tape.var(Tensor::scalar(0.45f32)),
                tape.var(Tensor::scalar(1.7f32)),
            ),
            false => (
                tape.var(cast(
                    Tensor::from_vec(vec![0.45, -2.0, 0.1, 3.0, 0.4, 6.5], &[2, 3]).unwrap(),
                )),
                tape.var(cast(
                    Tensor::from_vec(vec![1.7, 0.6, 2.0, 0.3, 1.1, 4.0], &[2, 3]).unwrap(),
                )),
            ),
        };
        let lp = Laplace::new(m, b)
            .unwrap()
            .log_prob(tape.constant(cast(x())))
            .unwrap();
        let g = lp.sum().backward().unwrap();
        let mut all = lp.value().data().to_vec();
        all.extend(g.get(m).unwrap().data());
        all.extend(g.get(b).unwrap().data());
        for (i, (&got, &want)) in all.iter().zip(&f64_side).enumerate() {
            // the inputs are f32-rounded: a relative 4 ε plus 4 ε absolute
            let tol = 4.0 * f64::from(f32::EPSILON) * (1.0 + want.abs());
            assert!(
                (f64::from(got) - want).abs() <= tol,
                "single {single}, {i}: {got} vs {want}"
            );
        }
    }
    // an incoming gradient of 0 where |z| / scale overflows: 0, not NaN
    // (the Normal shares the op: its z² overflows sooner)
    for (normal, value_is_var) in [(false, false), (false, true), (true, false), (true, true)] {
        let tape = Tape::<f32>::new();
        let (m, b) = (
            tape.var(Tensor::scalar(0.0f32)),
            tape.var(Tensor::scalar(1e-30f32)),
        );
        let at = Tensor::vector(&[1e30f32, 0.0]);
        let x = match value_is_var {
            true => tape.var(at),
            false => tape.constant(at),
        };
        let lp = match normal {
            true => Normal::new(m, b).unwrap().log_prob(x).unwrap(),
            false => Laplace::new(m, b).unwrap().log_prob(x).unwrap(),
        };
        let g = (lp * Tensor::vector(&[0.0f32, 1.0]))
            .sum()
            .backward()
            .unwrap();
        let db = g.get(b).unwrap().item().unwrap();
        assert_eq!(
            (g.get(m).unwrap().item().unwrap(), db),
            (0.0, -1e30),
            "Normal: {normal}, x a var: {value_is_var}"
        );
    }
}

#[test]
fn gradcheck_reparameterized_draws() {
    gc(
        "Laplace",
        |_, x| Laplace::new(x[0], x[1])?.rsample_n(Some(3), &mut StdRng::seed_from_u64(1)),
        &[s(0.3), s(1.7)],
    );
    gc(
        "Exponential",
        |_, x| Exponential::new(x[0])?.rsample_n(Some(3), &mut StdRng::seed_from_u64(2)),
        &[s(1.7)],
    );
    gc(
        "Uniform",
        |_, x| Uniform::new(x[0], x[1])?.rsample_n(Some(3), &mut StdRng::seed_from_u64(3)),
        &[s(-0.3), s(1.7)],
    );
    gc(
        "LogNormal",
        |_, x| LogNormal::new(x[0], x[1])?.rsample_n(Some(3), &mut StdRng::seed_from_u64(4)),
        &[s(-0.3), s(0.7)],
    );
    gc(
        "LogitNormal",
        |_, x| LogitNormal::new(x[0], x[1])?.rsample_n(Some(3), &mut StdRng::seed_from_u64(5)),
        &[s(-0.3), s(0.7)],
    );
    gc(
        "MultivariateNormal",
        |_, x| {
            MultivariateNormal::from_scale_tril(x[0], lower(x[1]))?
                .rsample_n(Some(2), &mut StdRng::seed_from_u64(6))
        },
        &[
            v(&[0.1, -1.0]),
            Tensor::from_rows(&[[1.2, 0.0], [0.4, 0.9]]).unwrap(),
        ],
    );
}

/// E[∇θ f(x)] = ∇θ E[f(x)] for the implicitly reparameterized families,
/// with the exact expectation in closed form.
#[test]
fn implicit_reparameterization_is_unbiased() {
    let cfg = StatGradCheck {
        samples: 20_000,
        max_z: 4.0,
    };
    let grads = |g: &Gradients<f64>, vs: &[Var<'_, f64>]| -> Vec<f64> {
        vs.iter()
            .map(|v| g.get(*v).unwrap().item().unwrap())
            .collect()
    };
    // Gamma(a, b), f = x²: E = a (a + 1) / b²; also a < 1
    for (a, b) in [(2.5, 1.5), (0.3, 0.8)] {
        let exact = vec![
            (2.0 * a + 1.0) / (b * b),
            -2.0 * a * (a + 1.0) / (b * b * b),
        ];
        stat_gradcheck(
            |rng| {
                let tape = Tape::new();
                let p = [tape.var(s(a)), tape.var(s(b))];
                let x = Gamma::new(p[0], p[1])?.rsample(rng)?;
                Ok(grads(&x.square().backward()?, &p))
            },
            &exact,
            &cfg,
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap_or_else(|e| panic!("Gamma({a}, {b}): {e}"));
    }
    // Beta(a, b), f = x²: E = a (a + 1) / ((a + b)(a + b + 1))
    let (a, b) = (2.0, 3.0);
    let exact = {
        let tape = Tape::new();
        let p = [tape.var(s(a)), tape.var(s(b))];
        let e = (p[0] * (p[0] + 1.0)) / ((p[0] + p[1]) * (p[0] + p[1] + 1.0));
        grads(&e.backward().unwrap(), &p)
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let p = [tape.var(s(a)), tape.var(s(b))];
            let x = Beta::new(p[0], p[1])?.rsample(rng)?;
            Ok(grads(&x.square().backward()?, &p))
        },
        &exact,
        &cfg,
        &mut StdRng::seed_from_u64(2),
    )
    .unwrap();
    // Beta, f = ln(1 + x), exact by quadrature
    let exact = {
        let tape = Tape::new();
        let p = [tape.var(s(a)), tape.var(s(b))];
        let q = Beta::new(p[0], p[1]).unwrap();
        let e = expectation_quadrature(&q, 0.0, 1.0, 4001, |x| Ok(x.log1p())).unwrap();
        grads(&e.backward().unwrap(), &p)
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let p = [tape.var(s(a)), tape.var(s(b))];
            let x = Beta::new(p[0], p[1])?.rsample(rng)?;
            Ok(grads(&x.log1p().backward()?, &p))
        },
        &exact,
        &cfg,
        &mut StdRng::seed_from_u64(3),
    )
    .unwrap();
    // Dirichlet(α), f = x0² + x1 x2: E[x_i²] = α_i (α_i + 1) / (α0 (α0 + 1)),
    // E[x_i x_j] = α_i α_j / (α0 (α0 + 1)); the last two normalize the
    // Gamma draws' logarithms (a concentration below 0.1), the last where
    // its Gamma draws underflow
    for alpha in [[1.5, 2.0, 0.7], [0.05, 0.3, 1.2], [1e-3, 0.5, 1.0]] {
        let exact = {
            let tape = Tape::new();
            let a = tape.var(v(&alpha));
            let (a0, a1, a2) = (
                a.index(0).unwrap(),
                a.index(1).unwrap(),
                a.index(2).unwrap(),
            );
            let t = a0 + a1 + a2;
            let e = (a0 * (a0 + 1.0) + a1 * a2) / (t * (t + 1.0));
            e.backward().unwrap().get(a).unwrap().data().to_vec()
        };
        stat_gradcheck(
            |rng| {
                let tape = Tape::new();
                let a = tape.var(v(&alpha));
                let x = Dirichlet::new(a)?.rsample(rng)?;
                let f = x.index(0)?.square() + x.index(1)? * x.index(2)?;
                Ok(f.backward()?.get(a).unwrap().data().to_vec())
            },
            &exact,
            &cfg,
            &mut StdRng::seed_from_u64(4),
        )
        .unwrap_or_else(|e| panic!("Dirichlet({alpha:?}): {e}"));
    }
    // StudentT(ν, loc, scale), f = x²: E = loc² + scale² ν / (ν - 2)
    let (nu, loc, scale) = (5.0, 0.5, 1.5);
    let exact = vec![
        -2.0 * scale * scale / ((nu - 2.0) * (nu - 2.0)),
        2.0 * loc,
        2.0 * scale * nu / (nu - 2.0),
    ];
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let p = [tape.var(s(nu)), tape.var(s(loc)), tape.var(s(scale))];
            let x = StudentT::new(p[0], p[1], p[2])?.rsample(rng)?;
            Ok(grads(&x.square().backward()?, &p))
        },
        &exact,
        &StatGradCheck {
            samples: 50_000,
            max_z: 4.0,
        },
        &mut StdRng::seed_from_u64(5),
    )
    .unwrap();
}

/// `f32` Beta draws within 2^-24 of 1 (a concentration far above the
/// other) take their implicit gradient at the draw before rounding: taken
/// at the rounded draw, it was the gradient of another draw: in the sum,
/// 0.5% off at `Beta(1000, 1/16)`, and 2.5 times the true one in `b` at
/// `Beta(1e8, 1)`. The same draws in `f64` give the reference.
#[test]
fn f32_beta_draws_near_1_have_the_gradient_of_their_draw() {
    fn summed<F: Element>(a: f64, b: f64) -> [f64; 2] {
        let tape = Tape::<F>::new();
        let (a, b) = (
            tape.var(Tensor::scalar(F::lit(a))),
            tape.var(Tensor::scalar(F::lit(b))),
        );
        let x = Beta::new(a, b)
            .unwrap()
            .rsample_n(Some(4000), &mut StdRng::seed_from_u64(13));
        let g = x.unwrap().sum().backward().unwrap();
        [a, b].map(|v| g.get(v).unwrap().item().unwrap().to_f64().unwrap())
    }
    // (parameters that f32 holds exactly, so that both draw the same)
    for (a, b) in [(1000.0, 0.0625), (1e8, 1.0), (3.0, 2.0)] {
        let (single, double) = (summed::<f32>(a, b), summed::<f64>(a, b));
        for (s, d) in single.iter().zip(&double) {
            assert!(
                (s - d).abs() <= 1e-4 * d.abs(),
                "Beta({a}, {b}): {single:?} vs {double:?}"
            );
        }
    }
}

/// Student-t draws at a small `df`, whose Gamma draws are tiny: the
/// gradient of `ln |x|` in `df` is unbiased (its expectation is
/// `1/(2ν) - ψ'(ν/2)/4`, mpmath), and in `f32` the gradient of the draws'
/// sum is finite and that of `f64` on the same draws (it was NaN at `df` =
/// 0.3: the gradients of `g/ν` and its square root passed the largest
/// `f32`).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn student_t_draws_at_a_small_df_have_their_gradient() {
    let nu = 0.3;
    stat_gradcheck(
        |rng| {
            let tape = Tape::new();
            let df = tape.var(s(nu));
            let t = StudentT::new(df, tape.scalar(0.0), tape.scalar(1.0))?;
            let x = t.rsample(rng)?;
            Ok(vec![x.abs().ln().backward()?.get(df).unwrap().item()?])
        },
        &[-9.780_834_282_453_471],
        &StatGradCheck {
            samples: 50_000,
            max_z: 4.0,
        },
        &mut StdRng::seed_from_u64(6),
    )
    .unwrap();
    fn summed<F: Element>(nu: f64) -> [f64; 2] {
        let tape = Tape::<F>::new();
        let (df, scale) = (
            tape.var(Tensor::scalar(F::lit(nu))),
            tape.var(Tensor::scalar(F::one())),
        );
        let t = StudentT::new(df, tape.scalar(F::zero()), scale).unwrap();
        let x = t
            .rsample_n(Some(20_000), &mut StdRng::seed_from_u64(7))
            .unwrap();
        let g = x.sum().backward().unwrap();
        let item = |v| g.get(v).unwrap().item().unwrap().to_f64().unwrap();
        [item(df), item(scale)]
    }
    let (single, double) = (summed::<f32>(nu), summed::<f64>(nu));
    for (a, b) in single.iter().zip(&double) {
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-4 * b.abs(),
            "{single:?} vs {double:?}"
        );
    }
}

/// Beta and Dirichlet draws from concentrations far below 1, which the
/// Gamma draws' logarithms normalize: their Gamma draws underflow, and
/// floored at the smallest normal number they made a `Beta(1e-3, 1e-3)`
/// draw exactly 0.5 one time in four (`1e-5`: 98 times in a hundred), where
/// the law puts 0.2% of its mass in (0.1, 0.9). Counts there, and the
/// mean, within four standard errors of the law's (mpmath's regularized
/// incomplete beta), in f64 and f32.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn beta_and_dirichlet_draws_from_tiny_concentrations_keep_their_law() {
    const N: usize = 40_000;
    // (a, b, P(0.1 < x < 0.9))
    let cases = [
        (1e-3, 1e-3, 0.002_193_389_148_335_861_6),
        (1e-5, 1e-5, 2.197_186_153_088_555_1e-5),
        (1e-3, 3e-3, 0.003_284_348_951_111_200_9),
    ];
    let within = |what: &str, got: f64, p: f64| {
        let se = (p * (1.0 - p) / N as f64).sqrt();
        assert!(
            (got - p).abs() <= 4.0 * se + 1.0 / N as f64,
            "{what}: {got} vs {p} (std err {se:e})"
        );
    };
    let check = |what: &str, first: &[f64], (a, b, p): (f64, f64, f64)| {
        let middle = first.iter().filter(|&&x| x > 0.1 && x < 0.9).count();
        within(
            &format!("{what} in (0.1, 0.9)"),
            middle as f64 / N as f64,
            p,
        );
        // nearly every draw sits within rounding of 0 or 1: the mean is the
        // share of ones, a / (a + b)
        let mean = first.iter().sum::<f64>() / N as f64;
        within(&format!("{what} mean"), mean, a / (a + b));
        assert!(first.iter().all(|x| (0.0..=1.0).contains(x)), "{what}");
    };
    let mut rng = StdRng::seed_from_u64(11);
    for case in cases {
        let (a, b, _) = case;
        let tape = Tape::<f64>::new();
        let beta = Beta::new(tape.constant(Tensor::full(&[N], a)), tape.scalar(b)).unwrap();
        let x = beta.sample(&mut rng).unwrap();
        check(&format!("Beta({a}, {b})"), x.data(), case);
        let dir = Dirichlet::new(tape.constant(Tensor::vector(&[a, b]))).unwrap();
        let x = dir.rsample_n(Some(N), &mut rng).unwrap().value();
        let first: Vec<f64> = x.data().chunks(2).map(|r| r[0]).collect();
        check(&format!("Dirichlet([{a}, {b}])"), &first, case);
        let tape = Tape::<f32>::new();
        let dir = Dirichlet::new(tape.constant(Tensor::vector(&[a as f32, b as f32]))).unwrap();
        let x = dir.rsample_n(Some(N), &mut rng).unwrap().value();
        let first: Vec<f64> = x.data().chunks(2).map(|r| f64::from(r[0])).collect();
        check(&format!("f32 Dirichlet([{a}, {b}])"), &first, case);
    }
    // below about 1e-307 `ln(U) / a` passes the largest float: where every
    // coordinate's logarithm does, the draw is an error (it was NaN, and
    // before the logarithms a share of the floor); one of them is a draw
    let tape = Tape::<f64>::new();
    let tiny = || tape.constant(Tensor::full(&[64], 1e-310));
    let refused = |r: Result<Tensor<f64>>, what: &str| match r {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("cannot be normalized"), "{what}: {reason}")
        }
        other => panic!("{what}: {other:?}"),
    };
    refused(Beta::new(tiny(), tiny()).unwrap().sample(&mut rng), "Beta");
    let dir = Dirichlet::new(tape.constant(Tensor::vector(&[1e-310, 1e-310]))).unwrap();
    refused(
        dir.rsample_n(Some(64), &mut rng).map(|x| x.value()),
        "Dirichlet",
    );
    let x = Beta::new(tiny(), tape.scalar(1.0))
        .unwrap()
        .sample(&mut rng)
        .unwrap();
    assert!(
        x.data().iter().all(|&x| x == f64::MIN_POSITIVE),
        "{:?}",
        x.data()
    );
}

/// The largest distance between the empirical CDF of `draws` and the CDF
/// obtained by integrating `density` (Simpson on a fine grid from `lo`).
fn ks_statistic(
    mut draws: Vec<f64>,
    lo: f64,
    hi: f64,
    density: impl Fn(&[f64]) -> Vec<f64>,
) -> f64 {
    draws.sort_by(f64::total_cmp);
    let n_grid = 20_000;
    let h = (hi - lo) / n_grid as f64;
    // cumulative trapezoid with a midpoint correction (Simpson per cell),
    // the density at every cell's ends and midpoint in one evaluation
    let points: Vec<f64> = (0..=2 * n_grid).map(|j| lo + h * 0.5 * j as f64).collect();
    let f = density(&points);
    let mut cdf = vec![0.0; n_grid + 1];
    for i in 0..n_grid {
        let cell = h / 6.0 * (f[2 * i] + 4.0 * f[2 * i + 1] + f[2 * i + 2]);
        cdf[i + 1] = cdf[i] + cell;
    }
    let at = |x: f64| {
        if x <= lo {
            return 0.0;
        }
        if x >= hi {
            return cdf[n_grid];
        }
        let t = (x - lo) / h;
        let i = (t.floor() as usize).min(n_grid - 1);
        cdf[i] + (cdf[i + 1] - cdf[i]) * (t - i as f64)
    };
    let n = draws.len() as f64;
    draws
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = at(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

/// Draws of a scalar family and its density as a plain function.
fn draws_and_density<'a, 't>(
    d: &'a dyn Distribution<'t, f64>,
    n: usize,
    seed: u64,
) -> (Vec<f64>, impl Fn(&[f64]) -> Vec<f64> + use<'a, 't>) {
    let x = d
        .sample_n(Some(n), &mut StdRng::seed_from_u64(seed))
        .unwrap()
        .data()
        .to_vec();
    let tape = d.tape();
    let density = move |x: &[f64]| -> Vec<f64> {
        let log_p = d.log_prob(tape.constant(Tensor::vector(x))).unwrap();
        log_p.value().data().iter().map(|l| l.exp()).collect()
    };
    (x, density)
}

/// A named distribution and an interval holding its mass.
type Support<'t> = (&'static str, Box<dyn Distribution<'t, f64> + 't>, f64, f64);

/// Kolmogorov–Smirnov at 10⁵ draws, fixed seeds: the 0.1 % critical value
/// is 1.95 / sqrt(n) = 0.0062.
#[test]
fn samplers_pass_kolmogorov_smirnov() {
    let n = 100_000;
    let critical = 1.95 / (n as f64).sqrt();
    let tape = Tape::<f64>::new();
    let c = |x: f64| tape.constant(s(x));
    let cases: Vec<Support<'_>> = vec![
        (
            "Gamma(2.5, 1.5)",
            Box::new(Gamma::new(c(2.5), c(1.5)).unwrap()),
            0.0,
            30.0,
        ),
        (
            "Gamma(1.3, 0.5)",
            Box::new(Gamma::new(c(1.3), c(0.5)).unwrap()),
            0.0,
            80.0,
        ),
        (
            "Beta(2, 3)",
            Box::new(Beta::new(c(2.0), c(3.0)).unwrap()),
            0.0,
            1.0,
        ),
        (
            "Beta(1.5, 1.2)",
            Box::new(Beta::new(c(1.5), c(1.2)).unwrap()),
            0.0,
            1.0,
        ),
        (
            "StudentT(4, 1, 2)",
            Box::new(StudentT::new(c(4.0), c(1.0), c(2.0)).unwrap()),
            -400.0,
            400.0,
        ),
        (
            "Laplace(1, 0.5)",
            Box::new(Laplace::new(c(1.0), c(0.5)).unwrap()),
            -20.0,
            22.0,
        ),
        (
            "Exponential(2)",
            Box::new(Exponential::new(c(2.0)).unwrap()),
            0.0,
            20.0,
        ),
        (
            "Uniform(-1, 3)",
            Box::new(Uniform::new(c(-1.0), c(3.0)).unwrap()),
            -1.0,
            3.0,
        ),
        (
            "LogNormal(0.2, 0.5)",
            Box::new(LogNormal::new(c(0.2), c(0.5)).unwrap()),
            0.0,
            40.0,
        ),
        (
            "LogitNormal(0.2, 0.8)",
            Box::new(LogitNormal::new(c(0.2), c(0.8)).unwrap()),
            0.0,
            1.0,
        ),
    ];
    for (i, (name, d, lo, hi)) in cases.iter().enumerate() {
        let (x, density) = draws_and_density(d.as_ref(), n, 100 + i as u64);
        let ks = ks_statistic(x, *lo, *hi, density);
        assert!(
            ks < critical,
            "{name}: KS statistic {ks:.5} >= {critical:.5}"
        );
    }
}

/// Poisson counts against the mass function: chi-square over the counts
/// with expected frequency >= 5 (the rest pooled), at 10⁵ draws.
#[test]
fn poisson_sampler_passes_chi_square() {
    let n = 100_000;
    for (i, rate) in [0.7, 4.5, 12.0, 60.0].into_iter().enumerate() {
        let tape = Tape::<f64>::new();
        let d = Poisson::new(tape.scalar(rate)).unwrap();
        let x = d
            .sample_n(Some(n), &mut StdRng::seed_from_u64(7 + i as u64))
            .unwrap();
        let max = (rate + 12.0 * rate.sqrt() + 20.0) as usize;
        let mut counts = vec![0.0; max + 1];
        for &k in x.data() {
            assert!(k >= 0.0 && k.fract() == 0.0);
            counts[(k as usize).min(max)] += 1.0;
        }
        let pmf: Vec<f64> = (0..=max)
            .map(|k| {
                d.log_prob(tape.scalar(k as f64))
                    .unwrap()
                    .item()
                    .unwrap()
                    .exp()
            })
            .collect();
        let (mut chi2, mut dof, mut pooled_obs, mut pooled_exp) = (0.0, 0usize, 0.0, 0.0);
        for k in 0..=max {
            let e = pmf[k] * n as f64;
            if e >= 5.0 {
                chi2 += (counts[k] - e).powi(2) / e;
                dof += 1;
            } else {
                pooled_obs += counts[k];
                pooled_exp += e;
            }
        }
        if pooled_exp > 0.0 {
            // the pool also takes the mass beyond `max`
            let tail = n as f64 - pmf.iter().sum::<f64>() * n as f64;
            pooled_exp += tail.max(0.0);
            chi2 += (pooled_obs - pooled_exp).powi(2) / pooled_exp.max(1e-300);
            dof += 1;
        }
        // the 0.1 % critical value of chi-square with k - 1 dof is below
        // k - 1 + 4.5 sqrt(2 (k - 1)) for these sizes
        let k = (dof - 1) as f64;
        let critical = k + 4.5 * (2.0 * k).sqrt();
        assert!(chi2 < critical, "rate {rate}: chi2 {chi2:.1} with {k} dof");
    }
}

/// Sample moments of the families whose density is singular at an end of
/// the support (concentration < 1), where the KS grid would be inaccurate.
#[test]
fn samplers_match_moments_with_small_concentrations() {
    let n = 100_000;
    let tape = Tape::<f64>::new();
    let c = |x: f64| tape.constant(s(x));
    let cases: Vec<(&str, Box<dyn Distribution<'_, f64>>)> = vec![
        (
            "Gamma(0.3, 2)",
            Box::new(Gamma::new(c(0.3), c(2.0)).unwrap()),
        ),
        (
            "Gamma(0.05, 1)",
            Box::new(Gamma::new(c(0.05), c(1.0)).unwrap()),
        ),
        (
            "Beta(0.4, 0.6)",
            Box::new(Beta::new(c(0.4), c(0.6)).unwrap()),
        ),
    ];
    for (i, (name, d)) in cases.iter().enumerate() {
        let x = d
            .sample_n(Some(n), &mut StdRng::seed_from_u64(20 + i as u64))
            .unwrap();
        assert!(x.data().iter().all(|&v| v > 0.0 && v.is_finite()), "{name}");
        let m = x.data().iter().sum::<f64>() / n as f64;
        let (mean, var) = (
            d.mean().unwrap().item().unwrap(),
            d.variance().unwrap().item().unwrap(),
        );
        let se = (var / n as f64).sqrt();
        assert!(
            (m - mean).abs() < 4.0 * se,
            "{name}: mean {m} vs {mean} (se {se})"
        );
    }
    // Dirichlet: each marginal is Beta(α_i, α0 - α_i)
    let alpha = [0.3, 1.5, 4.0];
    let d = Dirichlet::new(tape.constant(v(&alpha))).unwrap();
    let x = d.sample_n(Some(n), &mut StdRng::seed_from_u64(30)).unwrap();
    let a0: f64 = alpha.iter().sum();
    for (i, a) in alpha.iter().enumerate() {
        let m: f64 = x.data().iter().skip(i).step_by(3).sum::<f64>() / n as f64;
        let mean = a / a0;
        let var = mean * (1.0 - mean) / (a0 + 1.0);
        assert!(
            (m - mean).abs() < 4.0 * (var / n as f64).sqrt(),
            "Dirichlet marginal {i}"
        );
    }
    // MultivariateNormal: the sample covariance approaches L Lᵀ
    let l = Tensor::from_rows(&[[1.2, 0.0], [0.4, 0.9]]).unwrap();
    let d = MultivariateNormal::from_scale_tril(tape.constant(v(&[0.5, -1.0])), tape.constant(l))
        .unwrap();
    let x = d.sample_n(Some(n), &mut StdRng::seed_from_u64(31)).unwrap();
    let (mut sx, mut sy, mut sxy) = (0.0, 0.0, 0.0);
    for r in x.data().chunks(2) {
        let (a, b) = (r[0] - 0.5, r[1] + 1.0);
        sx += a * a;
        sy += b * b;
        sxy += a * b;
    }
    let nf = n as f64;
    // Σ = [[1.44, 0.48], [0.48, 0.97]]
    assert!((sx / nf - 1.44).abs() < 0.03 && (sy / nf - 0.97).abs() < 0.02);
    assert!((sxy / nf - 0.48).abs() < 0.02);
}

#[test]
fn bijectors_invert_and_their_log_det_is_the_log_derivative() {
    let tape = Tape::<f64>::new();
    let x = tape.var(v(&[-2.0, -0.1, 0.3, 1.7]));
    let affine = Affine::new(tape.scalar(0.5), tape.scalar(-2.0)).unwrap();
    let chain = Chain::new(vec![Box::new(Softplus), Box::new(affine)]).unwrap();
    let bijectors: Vec<(&str, &dyn Bijector<'_, f64>)> = vec![
        ("Exp", &Exp),
        ("Softplus", &Softplus),
        ("Sigmoid", &Sigmoid),
        ("Affine", &affine),
        ("Chain", &chain),
    ];
    for (name, b) in bijectors {
        let y = b.forward(x).unwrap();
        let back = b.inverse(y).unwrap().value();
        for (a, c) in back.data().iter().zip(x.value().data()) {
            assert!((a - c).abs() < 1e-12, "{name}: {a} vs {c}");
        }
        // ln |dy/dx| by central differences
        let ldj = b.forward_log_det_jacobian(x).unwrap().value();
        for (i, &x0) in x.value().data().iter().enumerate() {
            let h = 1e-6;
            let f = |t: f64| b.forward(tape.scalar(t)).unwrap().item().unwrap();
            let d = (f(x0 + h) - f(x0 - h)) / (2.0 * h);
            assert!(
                (d.abs().ln() - ldj.data()[i]).abs() < 1e-6,
                "{name} at {x0}"
            );
        }
    }
    // Chain applies its last part first: softplus(0.5 - 2 x)
    let y = chain.forward(tape.scalar(0.25)).unwrap().item().unwrap();
    assert!((y - (1.0f64 + 0.0f64.exp()).ln()).abs() < 1e-15);
    // a transformed Normal through Exp is the LogNormal
    let base = Normal::new(tape.scalar(0.3), tape.scalar(0.7)).unwrap();
    let t = TransformedDistribution::new(Box::new(base), Box::new(Exp));
    let ln = LogNormal::new(tape.scalar(0.3), tape.scalar(0.7)).unwrap();
    for y in [0.2, 1.0, 3.5] {
        let (a, b) = (
            t.log_prob(tape.scalar(y)).unwrap().item().unwrap(),
            ln.log_prob(tape.scalar(y)).unwrap().item().unwrap(),
        );
        assert!((a - b).abs() < 1e-14);
    }
}

/// A chain's image is met part by part, element by element; a part that
/// broadcasts the values (parameters of a larger shape) asks for values
/// of the full shape, since its copies of one value could lie on both
/// sides.
#[test]
fn a_chain_checks_every_parts_image() -> Result<()> {
    let tape = Tape::<f64>::new();
    let base = || Box::new(Normal::standard(&tape, &[]));
    let exp_sigmoid = Chain::new(vec![Box::new(Exp), Box::new(Sigmoid)])?;
    let d = TransformedDistribution::new(base(), Box::new(exp_sigmoid));
    let lp = d.log_prob(tape.constant(v(&[0.5, 2.0, 3.0])))?.value();
    // inside: the Normal at logit(ln y), less ln |d exp(sigmoid(x)) / dx|
    let (l, x) = (2f64.ln(), (2f64.ln() / (1.0 - 2f64.ln())).ln());
    let expected =
        -0.5 * x * x - 0.5 * (2.0 * std::f64::consts::PI).ln() - 2f64.ln() - (l * (1.0 - l)).ln();
    assert_eq!(lp.data()[0], f64::NEG_INFINITY);
    assert!(
        (lp.data()[1] - expected).abs() < 1e-12,
        "{lp:?} against {expected}"
    );
    assert_eq!(lp.data()[2], f64::NEG_INFINITY);

    let shifts = Affine::new(tape.constant(v(&[0.0, 10.0])), tape.scalar(1.0))?;
    let d = TransformedDistribution::new(
        base(),
        Box::new(Chain::new(vec![Box::new(shifts), Box::new(Exp)])?),
    );
    let err = d.log_prob(tape.scalar(5.0)).map(drop).unwrap_err();
    assert!(
        err.to_string().contains("pass values of that shape"),
        "{err}"
    );
    let lp = d.log_prob(tape.constant(v(&[5.0, 5.0])))?.value();
    assert!(
        lp.data()[0].is_finite() && lp.data()[1] == f64::NEG_INFINITY,
        "{lp:?}"
    );
    Ok(())
}

/// Outside the support: -inf with a zero gradient, never NaN.
#[test]
fn log_prob_outside_the_support_is_minus_infinity_with_zero_gradient() {
    let tape = Tape::<f64>::new();
    let p = tape.var(s(1.5));
    let q = tape.var(s(2.5));
    fn chained<'t>(
        (p, q): (Var<'t, f64>, Var<'t, f64>),
        parts: Vec<Box<dyn Bijector<'t, f64> + 't>>,
    ) -> Box<dyn Distribution<'t, f64> + 't> {
        Box::new(TransformedDistribution::new(
            Box::new(Normal::new(p, q).unwrap()),
            Box::new(Chain::new(parts).unwrap()),
        ))
    }
    let exp_sigmoid = || chained((p, q), vec![Box::new(Exp), Box::new(Sigmoid)]);
    let negative_exp = || {
        let flip = Affine::new(tape.scalar(0.0), tape.scalar(-1.0)).unwrap();
        chained((p, q), vec![Box::new(flip), Box::new(Exp)])
    };
    let cases: Vec<(&str, Box<dyn Distribution<'_, f64>>, f64)> = vec![
        ("Gamma", Box::new(Gamma::new(p, q).unwrap()), -1.0),
        ("Gamma at 0", Box::new(Gamma::new(p, q).unwrap()), 0.0),
        ("Beta", Box::new(Beta::new(p, q).unwrap()), 1.5),
        ("Exponential", Box::new(Exponential::new(p).unwrap()), -0.5),
        ("Uniform", Box::new(Uniform::new(p, q).unwrap()), 3.0),
        ("LogNormal", Box::new(LogNormal::new(p, q).unwrap()), -2.0),
        (
            "LogitNormal",
            Box::new(LogitNormal::new(p, q).unwrap()),
            1.0,
        ),
        // infinite values: chosen out, not multiplied by 0 (which gave NaN)
        (
            "Gamma at -inf",
            Box::new(Gamma::new(p, q).unwrap()),
            f64::NEG_INFINITY,
        ),
        (
            "Gamma at +inf",
            Box::new(Gamma::new(p, q).unwrap()),
            f64::INFINITY,
        ),
        (
            "Beta at -inf",
            Box::new(Beta::new(p, q).unwrap()),
            f64::NEG_INFINITY,
        ),
        (
            "Beta at +inf",
            Box::new(Beta::new(p, q).unwrap()),
            f64::INFINITY,
        ),
        (
            "Exponential at -inf",
            Box::new(Exponential::new(p).unwrap()),
            f64::NEG_INFINITY,
        ),
        (
            "Uniform at +inf",
            Box::new(Uniform::new(p, q).unwrap()),
            f64::INFINITY,
        ),
        (
            "StudentT at +inf",
            Box::new(StudentT::new(p, q, q).unwrap()),
            f64::INFINITY,
        ),
        (
            "StudentT at -inf",
            Box::new(StudentT::new(p, q, q).unwrap()),
            f64::NEG_INFINITY,
        ),
        // the positive half-line's bijectors: +inf is outside their image
        // (it was handed to the base Normal, whose error named "Normal")
        (
            "LogNormal at +inf",
            Box::new(LogNormal::new(p, q).unwrap()),
            f64::INFINITY,
        ),
        (
            "Softplus-transformed Normal at +inf",
            Box::new(TransformedDistribution::new(
                Box::new(Normal::new(p, q).unwrap()),
                Box::new(Softplus),
            )),
            f64::INFINITY,
        ),
        // a chain's inner parts have images of their own: exp(sigmoid(x))
        // lies in (1, e) and -exp(x) below 0 (only the outer part's image
        // was checked, and the inverse's NaN reached the base's check)
        ("exp(sigmoid) below 1", exp_sigmoid(), 0.5),
        ("exp(sigmoid) above e", exp_sigmoid(), 5.0),
        ("-exp above 0", negative_exp(), 1.0),
    ];
    for (name, d, x) in cases {
        let xv = tape.var(s(x));
        let lp = d.log_prob(xv).unwrap();
        assert_eq!(lp.item().unwrap(), f64::NEG_INFINITY, "{name}");
        let g = lp.backward().unwrap();
        for var in [p, q, xv] {
            if let Some(t) = g.get(var) {
                assert!(t.data().iter().all(|&v| v == 0.0), "{name}: {:?}", t.data());
            }
        }
    }
}

/// Draws of the logit-normal, log-normal and softplus-transformed
/// Normal: one whose `sigmoid` rounds to 1 or whose `e^x` or softplus
/// falls below the smallest normal number stays in the support, so that
/// `log_prob` takes it with a finite value and finite gradients (before,
/// 5% of `LogitNormal(0, 10)`'s `f32` draws had a log-density of -inf).
#[test]
fn draws_through_sigmoid_exp_and_softplus_stay_in_the_support() {
    fn check<F: Element>(name: &str, (loc, scale): (f64, f64), bijector: &str) {
        let tape = Tape::<F>::new();
        let loc = tape.var(Tensor::scalar(F::lit(loc)));
        let scale = tape.var(Tensor::scalar(F::lit(scale)));
        let d: Box<dyn Distribution<'_, F> + '_> = match bijector {
            "sigmoid" => Box::new(LogitNormal::new(loc, scale).unwrap()),
            "exp" => Box::new(LogNormal::new(loc, scale).unwrap()),
            _ => Box::new(TransformedDistribution::new(
                Box::new(Normal::new(loc, scale).unwrap()),
                Box::new(Softplus),
            )),
        };
        let mut rng = StdRng::seed_from_u64(11);
        let y = d.rsample_n(Some(20_000), &mut rng).unwrap();
        let sampled = d.sample_n(Some(20_000), &mut rng).unwrap();
        let (lo, hi) = (
            F::min_positive_value(),
            F::one() - F::epsilon() * F::lit(0.5),
        );
        for draws in [y.value(), sampled] {
            let at = |b: F| draws.data().iter().filter(|&&v| v == b).count();
            // the test reaches the ends it is about
            assert!(at(lo) > 10, "{name}: {} draws at the floor", at(lo));
            if bijector == "sigmoid" {
                assert!(at(hi) > 10, "{name}: {} draws below 1", at(hi));
            }
            let inside = |v: F| match bijector {
                "sigmoid" => v > F::zero() && v < F::one(),
                _ => v > F::zero() && v.is_finite(),
            };
            assert!(draws.data().iter().all(|&v| inside(v)), "{name}");
        }
        let lp = d.log_prob(y).unwrap();
        let bad = lp.value().data().iter().filter(|v| !v.is_finite()).count();
        assert_eq!(bad, 0, "{name}: log_prob not finite");
        let g = lp.sum().backward().unwrap();
        for p in [loc, scale] {
            let gp = g.get(p).unwrap().item().unwrap();
            assert!(gp.is_finite(), "{name}: gradient {gp:?}");
        }
    }
    check::<f32>("LogitNormal(0, 30), f32", (0.0, 30.0), "sigmoid");
    check::<f64>("LogitNormal(0, 250), f64", (0.0, 250.0), "sigmoid");
    // (far enough below 0 that no e^x overflows: one that does is +inf)
    check::<f32>("LogNormal(-60, 20), f32", (-60.0, 20.0), "exp");
    check::<f64>("LogNormal(-600, 100), f64", (-600.0, 100.0), "exp");
    check::<f32>("Softplus(Normal(0, 30)), f32", (0.0, 30.0), "softplus");
}

/// Gamma draws divided by a large rate: one that falls below the smallest
/// normal number is that number, as the draw before the division is, so
/// that `log_prob` takes it (`Gamma(0.05, 1e20)` in `f32` drew 0, outside
/// the support, 6% of the time; `Gamma(1e-3, 1e20)` in `f64` half the time).
#[test]
fn gamma_draws_divided_by_a_large_rate_stay_in_the_support() {
    fn check<F: Element>(a: f64) {
        let tape = Tape::<F>::new();
        let (a, rate) = (
            tape.var(Tensor::scalar(F::lit(a))),
            tape.var(Tensor::scalar(F::lit(1e20))),
        );
        let d = Gamma::new(a, rate).unwrap();
        let mut rng = StdRng::seed_from_u64(12);
        let x = d.rsample_n(Some(20_000), &mut rng).unwrap();
        for draws in [x.value(), d.sample_n(Some(20_000), &mut rng).unwrap()] {
            let floor = draws
                .data()
                .iter()
                .filter(|&&v| v == F::min_positive_value())
                .count();
            assert!(floor > 100, "{floor} draws at the floor");
            assert!(draws.data().iter().all(|&v| v >= F::min_positive_value()));
        }
        let lp = d.log_prob(x).unwrap();
        assert!(lp.value().data().iter().all(|v| v.is_finite()));
        let g = lp.sum().backward().unwrap();
        for p in [a, rate] {
            assert!(g.get(p).unwrap().item().unwrap().is_finite());
        }
    }
    check::<f32>(0.05);
    check::<f64>(1e-3);
}

#[test]
fn bad_parameters_and_values_are_named_errors() {
    let tape = Tape::<f64>::new();
    let c = |x: f64| tape.constant(s(x));
    let msg = |r: Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(msg(Gamma::new(c(bad), c(1.0)).map(drop)).contains("concentration"));
        assert!(msg(Gamma::new(c(1.0), c(bad)).map(drop)).contains("rate"));
        assert!(msg(Beta::new(c(bad), c(1.0)).map(drop)).contains("concentration1"));
        assert!(msg(Beta::new(c(1.0), c(bad)).map(drop)).contains("concentration0"));
        assert!(msg(StudentT::new(c(bad), c(0.0), c(1.0)).map(drop)).contains("df"));
        assert!(msg(StudentT::new(c(3.0), c(0.0), c(bad)).map(drop)).contains("scale"));
        assert!(msg(Laplace::new(c(0.0), c(bad)).map(drop)).contains("scale"));
        assert!(msg(Exponential::new(c(bad)).map(drop)).contains("rate"));
        assert!(msg(Poisson::new(c(bad)).map(drop)).contains("rate"));
        assert!(
            msg(Dirichlet::new(tape.constant(v(&[1.0, bad]))).map(drop)).contains("concentration")
        );
    }
    assert!(msg(Uniform::new(c(2.0), c(1.0)).map(drop)).contains("high - low"));
    assert!(Dirichlet::new(tape.constant(v(&[1.0]))).is_err());
    let d = Dirichlet::new(tape.constant(v(&[1.0, 2.0]))).unwrap();
    assert!(msg(d.log_prob(c(0.5)).map(drop)).contains("last axis"));
    assert!(msg(d.log_prob(tape.constant(v(&[0.5, 0.6]))).map(drop)).contains("simplex"));
    let p = Poisson::new(c(2.0)).unwrap();
    for k in [-1.0, 1.5, f64::NAN] {
        assert!(msg(p.log_prob(c(k)).map(drop)).contains("count"), "{k}");
    }
    let loc = tape.constant(v(&[0.0, 0.0]));
    let bad_l = [
        Tensor::from_rows(&[[1.0, 0.0], [0.5, -1.0]]).unwrap(),
        Tensor::from_rows(&[[1.0, 0.3], [0.5, 1.0]]).unwrap(),
        Tensor::from_rows(&[[1.0, 0.0, 0.0]]).unwrap(),
    ];
    for (l, what) in bad_l
        .into_iter()
        .zip(["diagonal", "above the diagonal", "[d, d]"])
    {
        let e = msg(MultivariateNormal::from_scale_tril(loc, tape.constant(l)).map(drop));
        assert!(e.contains(what), "{what}: {e}");
    }
    let not_pd = Tensor::from_rows(&[[1.0, 2.0], [2.0, 1.0]]).unwrap();
    let e = msg(MultivariateNormal::from_covariance(loc, tape.constant(not_pd)).map(drop));
    assert!(e.contains("positive definite"), "{e}");
    assert!(Affine::new(c(0.0), c(0.0)).is_err());
    assert!(Chain::<f64>::new(vec![]).is_err());
    // moments that do not exist are errors, not NaN
    let t = StudentT::new(c(0.8), c(0.0), c(1.0)).unwrap();
    assert!(t.mean().is_err() && t.variance().is_err());
    let t = StudentT::new(c(1.5), c(0.0), c(1.0)).unwrap();
    assert_eq!(t.variance().unwrap().item().unwrap(), f64::INFINITY);
}

/// The implicit derivatives reach concentrations up to 1e10 (a Gamma(1e8)
/// draw backpropagates `dx/da ≈ 1` near its median); past that, backward is
/// a named error rather than a derivative that stopped converging.
#[test]
fn implicit_derivatives_of_huge_concentrations_are_exact_or_an_error() {
    let mut rng = StdRng::seed_from_u64(3);
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::full(&[16], 1e8));
    let x = Gamma::new(a, tape.scalar(1.0))
        .unwrap()
        .rsample(&mut rng)
        .unwrap();
    let grads = x.sum().backward().unwrap();
    let (xs, ds) = (x.value(), grads.get(a).unwrap().clone());
    for (&x, &d) in xs.data().iter().zip(ds.data()) {
        // dx/da = 1 + z / (2 √a) + O(1/a) at z = (x - a) / √a
        let want = 1.0 + (x - 1e8) / 2e8;
        assert!((d - want).abs() < 1e-6, "x = {x}: {d} vs {want}");
    }
    let backward_error = |x: Var<'_, f64>| x.sum().backward().err().map(|e| e.to_string());
    let tape = Tape::<f64>::new();
    let huge = tape.var(Tensor::full(&[4], 1e12));
    let x = Gamma::new(huge, tape.scalar(1.0)).unwrap();
    let e = backward_error(x.rsample(&mut rng).unwrap()).unwrap_or_default();
    assert!(e.contains("did not converge") && e.contains("1e10"), "{e}");
    let y = Beta::new(huge, tape.scalar(2.0)).unwrap();
    let e = backward_error(y.rsample(&mut rng).unwrap()).unwrap_or_default();
    assert!(
        e.contains("beta_rsample") && e.contains("did not converge"),
        "{e}"
    );
    // a draw far below 1e-4 is named in scientific notation, not with
    // hundreds of digits
    let tiny = Beta::new(tape.scalar(1e-3), huge).unwrap();
    let e = backward_error(tiny.rsample(&mut rng).unwrap()).unwrap_or_default();
    assert!(
        e.contains("did not converge") && e.contains("e-") && e.len() < 250,
        "{e}"
    );
}

/// In f32 the families' log-densities stay within a few ulp of the f64
/// values (computed in f64 and rounded), away from cancellation.
#[test]
fn f32_log_probs_agree_with_f64() {
    fn eval<F: Element>(which: usize, x: f64) -> f64 {
        let tape = Tape::<F>::new();
        let c = |v: f64| tape.constant(Tensor::scalar(F::from_f64(v).unwrap()));
        let d: Box<dyn Distribution<'_, F>> = match which {
            0 => Box::new(Gamma::new(c(2.5), c(1.5)).unwrap()),
            1 => Box::new(Beta::new(c(2.0), c(3.5)).unwrap()),
            2 => Box::new(StudentT::new(c(4.0), c(0.5), c(2.0)).unwrap()),
            3 => Box::new(Laplace::new(c(0.5), c(2.0)).unwrap()),
            4 => Box::new(Exponential::new(c(1.5)).unwrap()),
            5 => Box::new(LogNormal::new(c(0.2), c(0.7)).unwrap()),
            _ => Box::new(LogitNormal::new(c(0.2), c(0.7)).unwrap()),
        };
        d.log_prob(c(x)).unwrap().item().unwrap().to_f64().unwrap()
    }
    for which in 0..7 {
        for x in [0.15, 0.4, 0.85] {
            let (lo, hi) = (eval::<f32>(which, x), eval::<f64>(which, x));
            let ulp = f32::EPSILON as f64 * hi.abs().max(1.0);
            assert!(
                (lo - hi).abs() <= 8.0 * ulp,
                "family {which} at {x}: {lo} vs {hi}"
            );
        }
    }
}

/// Over a wide range (values log-uniform from 1e-6 to 1e6, or for the
/// logit-normal from 1e-6 to 1 and one less such values; scales
/// log-uniform from 1e-3 to 100; locations from -10 to 10) the
/// f32 log-densities of the log-normal and logit-normal and their gradients
/// per value are within an ulp of the formula evaluated with the
/// platform's f64 logarithms, a reference that shares no code with them.
#[test]
fn f32_log_normal_and_logit_normal_match_an_independent_f64_formula() {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut u = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    for logit in [false, true] {
        let mut cases = Vec::new();
        while cases.len() < 5000 {
            let y = match logit {
                false => (1e-6f64.ln() + u() * 2.0 * 1e6f64.ln()).exp(),
                true => {
                    let near = (1e-6f64.ln() * (1.0 - u())).exp().min(0.999_999);
                    if u() < 0.5 { near } else { 1.0 - near }
                }
            };
            let scale = (1e-3f64.ln() + u() * 1e5f64.ln()).exp();
            let c = [y, -10.0 + 20.0 * u(), scale].map(|v| v as f32);
            if c[0] > 0.0 && (!logit || c[0] < 1.0) {
                cases.push(c);
            }
        }
        let tape = Tape::<f32>::new();
        let column =
            |j: usize| Tensor::from_vec(cases.iter().map(|c| c[j]).collect(), &[cases.len()]);
        let y = tape.constant(column(0).unwrap());
        let (loc, scale) = (tape.var(column(1).unwrap()), tape.var(column(2).unwrap()));
        let lp = match logit {
            true => LogitNormal::new(loc, scale).unwrap().log_prob(y).unwrap(),
            false => LogNormal::new(loc, scale).unwrap().log_prob(y).unwrap(),
        };
        let g = lp.sum().backward().unwrap();
        let got = [
            lp.value(),
            g.get(loc).unwrap().clone(),
            g.get(scale).unwrap().clone(),
        ];
        for (i, c) in cases.iter().enumerate() {
            let [y, m, sc] = c.map(f64::from);
            let (ln_y, ln_1m) = (y.ln(), (-y).ln_1p());
            let (x, log_det) = match logit {
                true => (ln_y - ln_1m, ln_y + ln_1m),
                false => (ln_y, ln_y),
            };
            let z = (x - m) / sc;
            let want = [
                -0.5 * z * z - sc.ln() - 0.918_938_533_204_672_8 - log_det,
                z / sc,
                (z * z - 1.0) / sc,
            ];
            for (k, what) in ["value", "d/dloc", "d/dscale"].iter().enumerate() {
                let w = want[k] as f32;
                if !w.is_finite() || w == 0.0 {
                    continue;
                }
                let ulp = f64::from(f32::from_bits(w.abs().to_bits() + 1) - w.abs());
                let off = (f64::from(got[k].data()[i]) - want[k]).abs() / ulp;
                assert!(
                    off <= 1.0,
                    "logit {logit}, case {c:?}: {what} {} against {} ({off:.1} ulp)",
                    got[k].data()[i],
                    want[k]
                );
            }
        }
    }
}

/// The f32 log-densities of the log-normal and logit-normal are the f64
/// ones rounded (within an ulp), and so are their gradients in `loc` and
/// `scale`, per value and through parameters broadcast over the values.
/// Through the rounded `ln y` (or `logit y`) over a small scale they were
/// up to 21 (37) ulp off.
#[test]
fn f32_log_normal_and_logit_normal_are_the_f64_values_rounded() {
    /// `(log-density, d/dloc, d/dscale)` of each `(y, loc, scale)`, with
    /// `loc` and `scale` per value or (`shared`) the first one broadcast.
    fn eval<F: Element>(logit: bool, cases: &[[f64; 3]], shared: bool) -> Vec<[f64; 3]> {
        let tape = Tape::<F>::new();
        let column = |j: usize| {
            let values = cases.iter().map(|c| F::from_f64(c[j]).unwrap()).collect();
            Tensor::from_vec(values, &[cases.len()]).unwrap()
        };
        let first = |j: usize| Tensor::scalar(F::from_f64(cases[0][j]).unwrap());
        let y = tape.constant(column(0));
        let (loc, scale) = match shared {
            true => (tape.var(first(1)), tape.var(first(2))),
            false => (tape.var(column(1)), tape.var(column(2))),
        };
        let lp = match logit {
            true => LogitNormal::new(loc, scale).unwrap().log_prob(y).unwrap(),
            false => LogNormal::new(loc, scale).unwrap().log_prob(y).unwrap(),
        };
        let values = lp.value();
        let f64s = |t: &Tensor<F>| {
            t.data()
                .iter()
                .map(|v| v.to_f64().unwrap())
                .collect::<Vec<_>>()
        };
        if shared {
            // the gradient of one value in the shared parameters
            let at = |i: usize| {
                let pick = Tensor::from_fn(&[cases.len()], |j| {
                    F::from_f64(f64::from(u8::from(j == i))).unwrap()
                });
                let g = lp
                    .try_mul(tape.constant(pick))
                    .unwrap()
                    .sum()
                    .backward()
                    .unwrap();
                [
                    values.data()[i].to_f64().unwrap(),
                    g.get(loc).unwrap().item().unwrap().to_f64().unwrap(),
                    g.get(scale).unwrap().item().unwrap().to_f64().unwrap(),
                ]
            };
            return (0..cases.len()).map(at).collect();
        }
        let g = lp.sum().backward().unwrap();
        let (dl, ds) = (f64s(g.get(loc).unwrap()), f64s(g.get(scale).unwrap()));
        (0..cases.len())
            .map(|i| [values.data()[i].to_f64().unwrap(), dl[i], ds[i]])
            .collect()
    }
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let mut uniform = |lo: f64, hi: f64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64);
        v as f32 as f64
    };
    for logit in [false, true] {
        let cases: Vec<[f64; 3]> = (0..2000)
            .map(|_| {
                let y = match logit {
                    true => uniform(0.001, 0.999),
                    false => uniform(0.01, 10.0),
                };
                [y, uniform(-3.0, 3.0), uniform(0.05, 5.0)]
            })
            .collect();
        let ulps = |got: f64, want: f64| {
            let w = want as f32;
            let ulp = f64::from(f32::from_bits(w.abs().to_bits() + 1) - w.abs());
            (got - want).abs() / ulp
        };
        // per value, and with the first case's parameters for 50 values
        for (shared, cases) in [(false, &cases[..]), (true, &cases[..50])] {
            let (lo, hi) = (
                eval::<f32>(logit, cases, shared),
                eval::<f64>(logit, cases, shared),
            );
            for (i, (lo, hi)) in lo.iter().zip(&hi).enumerate() {
                for (what, (&l, &h)) in ["value", "d/dloc", "d/dscale"]
                    .iter()
                    .zip(lo.iter().zip(hi))
                {
                    assert!(
                        h.abs() < 1e-3 || ulps(l, h) <= 1.0,
                        "logit {logit}, shared {shared}, case {:?}: {what} {l} against {h} ({:.1} ulp)",
                        cases[i],
                        ulps(l, h)
                    );
                }
            }
        }
    }
}

/// A value of another tape is refused by name, not read against these
/// parameters.
#[test]
fn log_normal_densities_refuse_a_value_of_another_tape() {
    let (tape, other) = (Tape::<f32>::new(), Tape::<f32>::new());
    let (loc, scale) = (tape.scalar(0.2), tape.scalar(0.7));
    let y = other.scalar(0.4);
    for (name, lp) in [
        ("LogNormal", LogNormal::new(loc, scale).unwrap().log_prob(y)),
        (
            "LogitNormal",
            LogitNormal::new(loc, scale).unwrap().log_prob(y),
        ),
    ] {
        match lp {
            Err(Error::ForeignTape { op }) => assert!(op.starts_with(name), "{name}: {op}"),
            other => panic!("{name}: {:?}", other.map(|v| v.value())),
        }
    }
}

/// Values and gradients at large parameters, where `ln Γ` and ψ are large
/// numbers whose sums cancel, against mpmath at 80 digits (700 for
/// df = 10³⁰⁰); each of these was wrong in its leading digits, or in all
/// of them, when the formulas summed `lgamma`s.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn large_parameters_keep_their_digits() {
    let tape = Tape::<f64>::new();
    let item = |y: Var<'_, f64>| y.item().unwrap();
    let grad =
        |y: Var<'_, f64>, x: Var<'_, f64>| y.backward().unwrap().get(x).unwrap().item().unwrap();
    // (what, computed, mpmath, largest relative error allowed)
    let mut checks: Vec<(String, f64, f64, f64)> = Vec::new();

    // Student-t: d/dν is of order 1/ν², a cancellation of terms of order
    // 1/ν, so it keeps fewer digits than the value
    for (nu, lp, dlp, h, dh) in [
        (
            1e6,
            -1.418_939_033_204_589_4,
            4.999_998_333_333_333_3e-13,
            1.418_939_533_204_922_7,
            -1.000_000_499_999_5e-12,
        ),
        (
            1e10,
            -1.418_938_533_254_672_7,
            4.999_999_999_833_333_3e-21,
            1.418_938_533_304_672_7,
            -1.000_000_000_05e-20,
        ),
    ] {
        let df = tape.var(s(nu));
        let d = StudentT::new(df, tape.scalar(0.0), tape.scalar(1.0)).unwrap();
        let (l, e) = (d.log_prob(tape.scalar(1.0)).unwrap(), d.entropy().unwrap());
        checks.push((format!("StudentT({nu}) log_prob"), item(l), lp, 1e-14));
        checks.push((format!("StudentT({nu}) entropy"), item(e), h, 1e-14));
        checks.push((
            format!("StudentT({nu}) d log_prob / d df"),
            grad(l, df),
            dlp,
            1e-5,
        ));
        checks.push((
            format!("StudentT({nu}) d entropy / d df"),
            grad(e, df),
            dh,
            1e-5,
        ));
    }
    // (ln ν / 2 = 345 cancels against ln B(ν/2, 1/2): a few ulps of 345)
    let d = StudentT::new(tape.scalar(1e300), tape.scalar(0.0), tape.scalar(1.0)).unwrap();
    let l = d.log_prob(tape.scalar(0.5)).unwrap();
    checks.push((
        "StudentT(1e300) log_prob".into(),
        item(l),
        -1.043_938_533_204_672_7,
        1e-13,
    ));
    let e = d.entropy().unwrap();
    checks.push((
        "StudentT(1e300) entropy".into(),
        item(e),
        1.418_938_533_204_672_7,
        1e-13,
    ));

    let (a, b) = (tape.var(s(1e10)), tape.var(s(1e10)));
    let d = Gamma::new(a, b).unwrap();
    let (l, e) = (
        d.log_prob(tape.scalar(1.00001)).unwrap(),
        d.entropy().unwrap(),
    );
    // (at the f64 nearest 1.00001; b x rounds, and its relative error ε
    // moves ln p by |a - b x| ε = 1e5 ε, about 1e-12 of it)
    checks.push((
        "Gamma log_prob".into(),
        item(l),
        10.093_980_265_109_005,
        2e-12,
    ));
    checks.push((
        "Gamma d log_prob / da".into(),
        grad(l, a),
        1.000_000_000_039_884_3e-5,
        1e-9,
    ));
    checks.push((
        "Gamma d log_prob / db".into(),
        grad(l, b),
        -1.000_000_000_006_551_2e-5,
        1e-9,
    ));
    checks.push((
        "Gamma entropy".into(),
        item(e),
        -10.093_986_931_798_889,
        1e-14,
    ));
    checks.push((
        "Gamma d entropy / da".into(),
        grad(e, a),
        5.000_000_000_333_333_3e-11,
        1e-9,
    ));

    // ln p of a Beta at concentrations of 10⁸ is as well conditioned in x
    // as x (α - 1) / x: about 10⁸ ulps, which bounds its digits
    let (a, b) = (tape.var(s(1e8)), tape.var(s(3e8)));
    let d = Beta::new(a, b).unwrap();
    let (l, e) = (d.log_prob(tape.scalar(0.25)).unwrap(), d.entropy().unwrap());
    checks.push((
        "Beta log_prob".into(),
        item(l),
        9.821_537_235_214_513_3,
        3e-9,
    ));
    checks.push((
        "Beta entropy".into(),
        item(e),
        -9.321_537_238_478_402_2,
        1e-14,
    ));
    checks.push((
        "Beta d entropy / da".into(),
        grad(e, a),
        1.250_000_028_125_000_2e-9,
        1e-6,
    ));
    let e = Dirichlet::new(tape.var(v(&[1e8, 3e8])))
        .unwrap()
        .entropy()
        .unwrap();
    checks.push((
        "Dirichlet entropy".into(),
        item(e),
        -9.321_537_238_478_402_2,
        1e-14,
    ));

    // a count of 10⁸ (its d/dλ = k/λ - 1 never had the cancellation)
    let rate = tape.var(s(1e8));
    let l = Poisson::new(rate)
        .unwrap()
        .log_prob(tape.scalar(1e8 + 1e4))
        .unwrap();
    checks.push((
        "Poisson log_prob".into(),
        item(l),
        -10.629_312_237_680_889,
        1e-14,
    ));
    checks.push((
        "Poisson d log_prob / d rate".into(),
        grad(l, rate),
        1e-4,
        1e-12,
    ));

    // divergences between close, large concentrations (a posterior near
    // its prior), and between close normals, where the rounding of r² - 1
    // was all of a small divergence
    let gamma = |a: f64, b: f64| Gamma::new(tape.scalar(a), tape.scalar(b)).unwrap();
    let beta = |a: f64, b: f64| Beta::new(tape.scalar(a), tape.scalar(b)).unwrap();
    let dir = |a: &[f64]| Dirichlet::new(tape.var(v(a))).unwrap();
    let normal = |m: f64, s: f64| Normal::new(tape.scalar(m), tape.scalar(s)).unwrap();
    for (what, kl, want, rel) in [
        (
            "KL Gamma 1e6",
            kl_divergence(&gamma(1e6, 1.0), &gamma(1e6 + 10.0, 1.0)),
            4.999_985_833_400_833e-5,
            1e-11,
        ),
        (
            "KL Gamma 1e10",
            kl_divergence(&gamma(1e10, 2.0), &gamma(1e10 + 1e3, 2.0)),
            4.999_999_833_583_341_7e-5,
            1e-11,
        ),
        (
            "KL Beta",
            kl_divergence(&beta(1e6, 2e6), &beta(1e6 + 10.0, 2e6)),
            3.333_320_740_805_740_4e-5,
            1e-11,
        ),
        (
            "KL Dirichlet",
            kl_divergence(&dir(&[1e6, 2e6]), &dir(&[1e6 + 10.0, 2e6])),
            3.333_320_740_805_740_4e-5,
            1e-11,
        ),
        (
            "KL Normal",
            kl_divergence(&normal(0.0, 1.0), &normal(1e-5, 1.0 + 1e-6)),
            5.099_989_833_332_105_8e-11,
            1e-10,
        ),
    ] {
        checks.push((what.into(), item(kl.unwrap()), want, rel));
    }

    let failed: Vec<String> = checks
        .iter()
        // (a NaN fails too)
        .filter(|(_, got, want, rel)| ((got - want).abs() > rel * want.abs()) || got.is_nan())
        .map(|(what, got, want, _)| format!("{what}: {got:e} vs {want:e}"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The Gamma divergence from a large concentration `a1` to a small one:
/// the direct sum's first terms add up to about `a1` and its rate terms to
/// about `-a1` when the mean of `q` times the rate of `p` is far below
/// `a1`, so it kept `16 - log10(a1)` digits at best (4 at 10¹², none at
/// 10²⁰, where it gave 0). Values and gradients in `q`'s parameters
/// against mpmath at 1300 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn gamma_kl_from_a_large_concentration_keeps_its_digits() {
    // (a1, b1, a2, b2, KL, d/da1, d/db1)
    let cases = [
        (
            1e8,
            1e8,
            1.0,
            1.0,
            8.791_401_842_104_843_3,
            4.999_999_966_666_666_5e-9,
            0.0,
        ),
        (
            1e12,
            1e12,
            1.0,
            1.0,
            13.396_572_024_759_935,
            4.999_999_999_996_666_7e-13,
            0.0,
        ),
        (
            1e12,
            1e12,
            3.0,
            3e-12,
            92.686_945_687_105_195,
            -2.499_999_999_998_333_3e-12,
            2.999_999_999_997e-12,
        ),
        (
            1e20,
            1.0,
            2.0,
            1e-20,
            22.606_912_396_735_784,
            -5.000_000_000_000_000_5e-21,
            1.000_000_000_000_000_1,
        ),
        (
            1e10,
            1e10,
            1e5,
            1e5,
            5.256_468_565_801_781,
            4.999_950_000_166_665e-11,
            0.0,
        ),
    ];
    for (a1, b1, a2, b2, kl, da, db) in cases {
        let (value, got_da, got_db) = value_and_gradients(
            |t, a, b| kl_divergence(&Gamma::new(a, b)?, &Gamma::new(t.scalar(a2), t.scalar(b2))?),
            a1,
            b1,
        );
        let what = format!("KL(Gamma({a1:e}, {b1:e}) || Gamma({a2:e}, {b2:e}))");
        assert!(close(value, kl, 1e-13), "{what}: {value} vs {kl}");
        assert!(
            close(got_da, da, 1e-10),
            "{what} d/da1: {got_da:e} vs {da:e}"
        );
        // d/db1 = a2 / b1 - a1 b2 / b1²: where it is 0, a rounding of the two terms
        assert!(
            (got_db - db).abs() <= 1e-10 * db.abs().max(a2 / b1),
            "{what} d/db1: {got_db:e} vs {db:e}"
        );
    }
}

/// Divergences between Betas whose `a`s (or `b`s) are small beside the
/// other concentrations: the general form takes them as differences of two
/// divergences between the `b`s that agree in most of their digits (it
/// was 2.5e-5 off on the first case and gave 0 for the second). Values and
/// gradients against mpmath at 80 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn beta_kl_with_small_shared_concentrations_keeps_its_digits() {
    // (q, p, KL, d/da1, d/db1)
    let cases = [
        (
            (1e-10, 3.0),
            (1e-10, 1.0),
            7.101_318_662_564_585_3e-11,
            -0.789_868_133_665_630_11,
            3.082_276_126_264_832_1e-11,
        ),
        (
            (1e-10, 1e10),
            (1e-10, 1e5),
            1.051_294_046_487_856_2e-9,
            -0.999_990_000_049_999_5,
            9.999_900_000_999_990_4e-21,
        ),
        (
            (1e-10, 3.0),
            (2e-10, 1.0),
            0.306_852_819_661_067_88,
            -10_000_000_000.789_868,
            7.031_616_794_592_982_8e-11,
        ),
        (
            (0.01, 1e5),
            (0.01, 7.0),
            0.086_394_338_961_791_102,
            -0.999_934_899_672_675_56,
            9.999_398_993_555_066_2e-8,
        ),
    ];
    for ((a1, b1), (a2, b2), want, want_da, want_db) in cases {
        // as given, and with the two concentrations of each swapped
        for flip in [false, true] {
            let (value, da, db) = value_and_gradients(
                |t, a, b| {
                    let (c, e) = (t.scalar(a2), t.scalar(b2));
                    match flip {
                        false => kl_divergence(&Beta::new(a, b)?, &Beta::new(c, e)?),
                        true => kl_divergence(&Beta::new(b, a)?, &Beta::new(e, c)?),
                    }
                },
                a1,
                b1,
            );
            let case = format!("KL(Beta({a1:e}, {b1:e}) || Beta({a2:e}, {b2:e})), flipped: {flip}");
            assert!(close(value, want, 1e-13), "{case}: {value:e} vs {want:e}");
            assert!(
                close(da, want_da, 1e-12),
                "{case}, d/da1: {da:e} vs {want_da:e}"
            );
            assert!(
                close(db, want_db, 1e-12),
                "{case}, d/db1: {db:e} vs {want_db:e}"
            );
        }
    }
    // a Dirichlet over two categories is the same divergence
    for ((a1, b1), (a2, b2), want, _, _) in cases {
        let tape = Tape::<f64>::new();
        let q = Dirichlet::new(tape.constant(Tensor::vector(&[a1, b1]))).unwrap();
        let p = Dirichlet::new(tape.constant(Tensor::vector(&[a2, b2]))).unwrap();
        let got = kl_divergence(&q, &p).unwrap().item().unwrap();
        assert!(
            close(got, want, 1e-13),
            "KL(Dir([{a1:e}, {b1:e}]) || Dir([{a2:e}, {b2:e}])): {got:e} vs {want:e}"
        );
    }
    // in f32, where the general form was off by 1.3 and 1.9 (mpmath at the
    // f32 inputs, 1e-6 being 9.99999997e-7)
    for ((a1, b1), (a2, b2), want) in [
        ((1e-6f32, 7.0), (1e-6, 40.0), 3.263_447_501_344_619_6e-6),
        ((1e-6, 40.0), (1e-6, 7.0), 9.681_445_561_879_432_2e-7),
    ] {
        let tape = Tape::<f32>::new();
        let q = Beta::new(tape.scalar(a1), tape.scalar(b1)).unwrap();
        let p = Beta::new(tape.scalar(a2), tape.scalar(b2)).unwrap();
        let got = f64::from(kl_divergence(&q, &p).unwrap().item().unwrap());
        assert!(
            close(got, want, 5e-7),
            "f32 KL(Beta({a1}, {b1}) || Beta({a2}, {b2})): {got:e} vs {want:e}"
        );
    }
}

/// The divergence between Dirichlets over more than two categories, as a
/// sum of the Beta divergences of its sticks: where the concentrations
/// share tiny components, the closed form's terms of order 1 took the
/// digits of a small divergence (3e-8 off at `[1e-6, 2e-6, 3]`, 2e-5 at
/// `[1e-10, 1e-10, 3]`), wherever the tiny ones sit. Values and gradients
/// against mpmath at 80 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn dirichlet_kl_over_three_categories_keeps_its_digits() {
    const D_SMALL: f64 = -0.197_466_802_253_671_35;
    const D_LARGE: f64 = 2.311_704_418_654_343_4e-7;
    // (q, p, KL, d/dq)
    type Case<'a> = (&'a [f64], &'a [f64], f64, &'a [f64]);
    let cases: [Case; 5] = [
        (
            &[1e-10, 1e-10, 3.0],
            &[1e-10, 1e-10, 1.0],
            1.420_263_732_418_739_8e-10,
            &[
                -0.789_868_133_634_807_35,
                -0.789_868_133_634_807_35,
                6.164_552_252_291_785_4e-11,
            ],
        ),
        (
            &[1e-6, 2e-6, 3.0],
            &[1e-6, 2e-6, 2.5],
            6.648_190_043_689_657_5e-8,
            &[D_SMALL, D_SMALL, D_LARGE],
        ),
        (
            &[3.0, 1e-6, 2e-6],
            &[2.5, 1e-6, 2e-6],
            6.648_190_043_689_657_5e-8,
            &[D_LARGE, D_SMALL, D_SMALL],
        ),
        (
            &[1e-6, 3.0, 2e-6],
            &[1e-6, 2.5, 2e-6],
            6.648_190_043_689_657_5e-8,
            &[D_SMALL, D_LARGE, D_SMALL],
        ),
        (
            &[0.5, 2.0, 1e5, 7.0],
            &[0.7, 2.0, 1e5, 3.0],
            1.686_165_423_337_993_7,
            &[
                -0.986_998_436_689_243_1,
                -3.799_658_030_745_572e-5,
                -3.799_658_030_745_572e-5,
                0.614_142_715_257_042_73,
            ],
        ),
    ];
    for (q, p, want, want_grad) in cases {
        let tape = Tape::<f64>::new();
        let a = tape.var(Tensor::vector(q));
        let dir = |v| Dirichlet::new(v).unwrap();
        let kl = kl_divergence(&dir(a), &dir(tape.constant(Tensor::vector(p)))).unwrap();
        let got = kl.item().unwrap();
        let case = format!("KL(Dir({q:?}) || Dir({p:?}))");
        assert!(close(got, want, 1e-13), "{case}: {got:e} vs {want:e}");
        let grads = kl.backward().unwrap();
        let grad = grads.get(a).unwrap();
        for (i, (&g, &w)) in grad.data().iter().zip(want_grad).enumerate() {
            // a gradient far below the terms of about 1/b that make it
            // keeps fewer digits: d/dq1 of the last case (3.8e-5 from
            // terms of 4e-5 and 2e-6 in two sticks) is 2e-11 off
            let rel = if w.abs() < 1e-3 { 1e-10 } else { 1e-12 };
            assert!(close(g, w, rel), "{case}, d/dq{i}: {g:e} vs {w:e}");
        }
    }
    // a batch whose rows take the two forms (the sticks for the first, the
    // closed form for the second) gives each row's own divergence
    let (q_rows, p_rows) = (
        [[1e-6, 2e-6, 3.0, 1.0], [0.5, 2.0, 1.0, 7.0]],
        [[1e-6, 2e-6, 2.5, 1.0], [0.7, 2.0, 1.0, 3.0]],
    );
    let tape = Tape::<f64>::new();
    let dir = |rows: &[[f64; 4]; 2]| {
        Dirichlet::new(tape.constant(Tensor::from_rows(rows).unwrap())).unwrap()
    };
    let kl = kl_divergence(&dir(&q_rows), &dir(&p_rows)).unwrap();
    let single = |q: &[f64], p: &[f64]| {
        let t = Tape::<f64>::new();
        let d = |v: &[f64]| Dirichlet::new(t.constant(Tensor::vector(v))).unwrap();
        kl_divergence(&d(q), &d(p)).unwrap().item().unwrap()
    };
    let want = [
        single(&q_rows[0], &p_rows[0]),
        single(&q_rows[1], &p_rows[1]),
    ];
    assert_eq!(kl.value().data(), &want, "a batch of the two forms");
    // a single `q` against a batch of `p`s (ranks 1 and 2)
    let tape = Tape::<f64>::new();
    let q = Dirichlet::new(tape.constant(Tensor::vector(&q_rows[0]))).unwrap();
    let p = Dirichlet::new(tape.constant(Tensor::from_rows(&[p_rows[0]; 2]).unwrap())).unwrap();
    let kl = kl_divergence(&q, &p).unwrap();
    assert_eq!(kl.value().data(), &[want[0]; 2], "broadcast ranks");
    // in f32 (mpmath at the f32 inputs)
    for (q, p, want) in [
        (
            [1e-6f32, 2e-6, 3.0],
            [1e-6, 2e-6, 2.5],
            6.648_190_026_904_612_4e-8,
        ),
        (
            [1e-3, 1e-3, 5.0],
            [1e-3, 1e-3, 4.0],
            5.732_668_380_181_217_5e-5,
        ),
    ] {
        let tape = Tape::<f32>::new();
        let dir = |v: &[f32]| Dirichlet::new(tape.constant(Tensor::vector(v))).unwrap();
        let got = f64::from(kl_divergence(&dir(&q), &dir(&p)).unwrap().item().unwrap());
        assert!(
            close(got, want, 5e-6),
            "f32 KL(Dir({q:?}) || Dir({p:?})): {got:e} vs {want:e}"
        );
    }
}

/// A Dirichlet divergence and entropy need the sums of the concentrations;
/// where they pass the largest float it is an error naming that, where the
/// closed forms gave NaN.
#[test]
fn dirichlet_whose_concentrations_overflow_their_sum_is_refused() {
    // the density, mean, draws, entropy and divergences all need the sums:
    // the mean of Dir([1e308, 1e308]) was [0, 0], its draws [0, 0], its
    // log-density inf and its entropy -inf
    let refused = |row: &[f64], rows: usize| {
        let tape = Tape::<f64>::new();
        let a = Tensor::from_fn(&[rows, row.len()], |i| {
            // every row moderate but the last
            if i / row.len() + 1 == rows {
                row[i % row.len()]
            } else {
                1.0
            }
        });
        match Dirichlet::new(tape.var(a)) {
            Err(Error::InvalidParameter {
                distribution: "Dirichlet",
                parameter: "concentration",
                value,
                reason,
            }) => {
                assert_eq!(value, 1e308, "{row:?}: the row's largest");
                assert!(reason.contains("past the largest float"), "{reason}");
            }
            other => panic!(
                "Dir({row:?}): {:?}",
                other.map(|d| d.concentration().value())
            ),
        }
    };
    refused(&[1.0, 1e308, 1e308], 1);
    refused(&[1e308, 1e308], 3);
    // a sum just below the largest float is kept
    let tape = Tape::<f64>::new();
    let d = Dirichlet::new(tape.var(Tensor::vector(&[8e307, 8e307]))).unwrap();
    assert_eq!(d.mean().unwrap().value().data(), &[0.5, 0.5]);
    // in f32
    let tape = Tape::<f32>::new();
    assert!(matches!(
        Dirichlet::new(tape.var(Tensor::vector(&[2e38f32, 2e38, 1.0]))),
        Err(Error::InvalidParameter { .. })
    ));
}

/// `y` within 1e-14 of `want` and its gradient in `x` within 1e-12 of
/// `want_grad` (relative; or within `floor`, absolute).
fn expect_digits(
    what: &str,
    x: Var<f64>,
    y: Var<f64>,
    (want, want_grad): (f64, &[f64]),
    floor: f64,
) {
    let got = y.item().unwrap();
    assert!(close(got, want, 1e-14), "{what}: {got:e} vs {want:e}");
    let grads = y.backward().unwrap();
    let grad = grads.get(x).unwrap();
    for (i, (&g, &w)) in grad.data().iter().zip(want_grad).enumerate() {
        let near = close(g, w, 1e-12) || (g - w).abs() < floor;
        assert!(near, "{what}, d/da{i}: {g:e} vs {w:e}");
    }
}

/// The log-density of a Dirichlet whose concentrations spread widely, with
/// its normalizer `ln B(α)` from the stick-breaking pieces: the sums over
/// categories cancel `ln Γ` of the large concentration against `ln Γ(α0)`
/// (`[1e10, 1, 2]` was 1.7e-7 off and its gradient in 1e10 70 times its
/// size; `[0.5, 3, 1e30]` was -101 where it is 139; over two categories
/// `[1e10, 1]` was 1.2e-7 off; in f32 `[100, 1, 2]` 2.6e-6). Against
/// mpmath at 400 digits, at the same float inputs.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn dirichlet_log_prob_with_spread_concentrations_keeps_its_digits() {
    // (a, x, ln p, d ln p/da)
    type Case<'a> = (&'a [f64], &'a [f64], f64, &'a [f64]);
    let cases: [Case; 3] = [
        (
            &[1e10, 1.0, 2.0],
            &[1.0 - 3e-10, 1e-10, 2e-10],
            43.744_848_792_369_746,
            &[
                -2.489_711_130_717_774_6e-17,
                0.577_215_665_151_532_9,
                0.270_362_845_711_478_21,
            ],
        ),
        (
            &[0.5, 3.0, 1e30],
            &[1e-30, 3e-30, 1.0],
            139.086_818_033_494_31,
            &[1.963_510_026_021_423_6, 0.175_827_953_569_642_54, 3.5e-30],
        ),
        (
            &[1e10, 1.0],
            &[1.0 - 1e-10, 1e-10],
            22.025_850_847_250_086,
            &[-8.279_037_100_736_774_4e-18, 0.577_215_664_951_532_9],
        ),
    ];
    for (a, x, want, want_grad) in cases {
        let tape = Tape::<f64>::new();
        let av = tape.var(Tensor::vector(a));
        let d = Dirichlet::new(av).unwrap();
        let lp = d.log_prob(tape.constant(Tensor::vector(x))).unwrap();
        // d/da1 at [1e10, 1, 2] is a difference of terms of 3e-10
        let what = format!("ln p(Dir({a:?}))");
        expect_digits(&what, av, lp, (want, want_grad), 1e-24);
    }
    // a batch of rows on the pieces, on the sums and on the sums' form for
    // large concentrations gives each row's own log-density
    let rows = [[1e10, 1.0, 2.0], [0.5, 2.0, 1.5], [20.0, 30.0, 15.0]];
    let x = [
        [1.0 - 3e-10, 1e-10, 2e-10],
        [0.2, 0.3, 0.5],
        [0.3, 0.5, 0.2],
    ];
    let single = |a: &[f64], x: &[f64]| {
        let t = Tape::<f64>::new();
        let d = Dirichlet::new(t.constant(Tensor::vector(a))).unwrap();
        let lp = d.log_prob(t.constant(Tensor::vector(x))).unwrap();
        lp.item().unwrap()
    };
    let want: Vec<f64> = rows.iter().zip(&x).map(|(r, x)| single(r, x)).collect();
    let tape = Tape::<f64>::new();
    let batch = Dirichlet::new(tape.constant(Tensor::from_rows(&rows).unwrap())).unwrap();
    let lp = batch
        .log_prob(tape.constant(Tensor::from_rows(&x).unwrap()))
        .unwrap();
    assert_eq!(lp.value().data(), &want[..], "a batch of the forms");
    // in f32 (mpmath at the f32 inputs)
    let tape = Tape::<f32>::new();
    let d = Dirichlet::new(tape.constant(Tensor::vector(&[100.0f32, 1.0, 2.0]))).unwrap();
    let lp = d
        .log_prob(tape.constant(Tensor::vector(&[0.97f32, 0.01, 0.02])))
        .unwrap();
    let got = f64::from(lp.item().unwrap());
    let want = 6.917_781_867_360_657_8;
    assert!(close(got, want, 3e-7), "f32 ln p: {got:e} vs {want:e}");
}

/// The entropy of a Dirichlet over more categories whose concentrations
/// spread widely, from its stick-breaking pieces: the sums over categories
/// cancel `ln Γ` of the large concentration against the others
/// (`H(Dir([3, 1e10, 1]))` was 9e-7 off, its gradient in 1e10 8e-8; `[0.5,
/// 2, 1e5]` 3e-12 and 6e-12). Against mpmath at 80 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn dirichlet_entropy_with_spread_concentrations_keeps_its_digits() {
    // (a, H, dH/da)
    type Case<'a> = (&'a [f64], f64, &'a [f64]);
    let cases: [Case; 3] = [
        (
            &[3.0, 1e10, 1.0],
            -43.204_123_350_417_903,
            &[
                0.210_131_866_053_547_13,
                -1.999_999_999_1e-10,
                0.999_999_999_75,
            ],
        ),
        (
            &[0.5, 2.0, 1e5],
            -21.358_077_834_660_358,
            &[
                3.467_376_100_763_996_9,
                0.355_040_933_643_430_77,
                -1.999_947_500_929_148_9e-5,
            ],
        ),
        (
            &[0.3, 0.7, 1.1, 5.0, 2e6],
            -55.249_668_499_970_3,
            &[
                9.571_752_932_282_816_2,
                1.850_212_497_015_787_5,
                0.856_667_834_928_128_15,
                0.114_705_927_058_942_84,
                -1.999_992_512_524_297_2e-6,
            ],
        ),
    ];
    for (a, want, want_grad) in cases {
        let tape = Tape::<f64>::new();
        let av = tape.var(Tensor::vector(a));
        let h = Dirichlet::new(av).unwrap().entropy().unwrap();
        expect_digits(&format!("H(Dir({a:?}))"), av, h, (want, want_grad), 0.0);
    }
    // a batch of rows on the pieces, on the sums and on the sums' form for
    // large concentrations gives each row's own entropy
    let rows = [[3.0, 1e10, 1.0], [0.5, 2.0, 1.5], [20.0, 30.0, 15.0]];
    let tape = Tape::<f64>::new();
    let batch = Dirichlet::new(tape.constant(Tensor::from_rows(&rows).unwrap())).unwrap();
    let single = |a: &[f64]| {
        let t = Tape::<f64>::new();
        let d = Dirichlet::new(t.constant(Tensor::vector(a))).unwrap();
        d.entropy().unwrap().item().unwrap()
    };
    let want: Vec<f64> = rows.iter().map(|r| single(r)).collect();
    assert_eq!(
        batch.entropy().unwrap().value().data(),
        &want[..],
        "a batch of the forms"
    );
    // in f32, where the sums over categories were 3.4e-7, 6.4e-6 and
    // 7.4e-4 off (mpmath at the f32 inputs)
    for (a, want) in [
        ([0.5f32, 2.0, 10.0], -3.421_109_051_528_280_4),
        ([0.5, 2.0, 100.0], -7.594_556_050_798_483_9),
        ([3.0, 1e4, 1.0], -15.574_002_085_290_012),
    ] {
        let tape = Tape::<f32>::new();
        let h = Dirichlet::new(tape.constant(Tensor::vector(&a)))
            .unwrap()
            .entropy()
            .unwrap();
        let got = f64::from(h.item().unwrap());
        assert!(
            close(got, want, 1e-7),
            "f32 H(Dir({a:?})): {got:e} vs {want:e}"
        );
    }
}

/// The entropy of a Dirichlet over two categories is the Beta's, whose
/// differences of digammas are taken whole: the sum over categories was
/// 1.4e-6 off at `[0.5, 1e10]` and its gradient in the large concentration
/// 1.8e-5 off. Against mpmath at 60 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn two_category_dirichlet_entropy_keeps_its_digits() {
    // (a, b, H, dH/da, dH/db)
    let cases = [
        (
            0.5,
            1e10,
            -22.935_241_000_051_468,
            3.467_401_100_122_339_7,
            -9.999_999_999_75e-11,
        ),
        (
            0.01,
            1e5,
            -106.458_717_340_210_68,
            9_902.604_986_392_947_8,
            -1.000_004_850_015_015e-5,
        ),
        (
            3.0,
            1e10,
            -21.178_272_419_977_446,
            0.210_131_866_153_547_13,
            -9.999_999_996e-11,
        ),
    ];
    for (a, b, want, want_da, want_db) in cases {
        let (h, da, db) = value_and_gradients(
            |_, a, b| Dirichlet::new(Var::stack(&[a, b], 0)?)?.entropy(),
            a,
            b,
        );
        let case = format!("H(Dir([{a:e}, {b:e}]))");
        assert!(close(h, want, 1e-13), "{case}: {h} vs {want}");
        assert!(
            close(da, want_da, 1e-10),
            "{case}, d/da: {da:e} vs {want_da:e}"
        );
        assert!(
            close(db, want_db, 1e-10),
            "{case}, d/db: {db:e} vs {want_db:e}"
        );
    }
}

/// Beta and Dirichlet divergences from large concentrations to small ones
/// (a posterior after many observations against its prior): each of
/// their shape divergences is about its first concentration, and those
/// cancel in the sum, which kept `16 - log10(a)` digits at best
/// (`KL(Beta(1e8, 1e8) || Beta(1, 1))` was 8.8311224 for 8.8311226, and
/// at 10²⁰ it was 0). Values and gradients against mpmath at 60 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn beta_and_dirichlet_kl_from_large_concentrations_keep_their_digits() {
    // (a1, b1, a2, b2, KL, d/da1, d/db1)
    let cases = [
        (
            1e8,
            1e8,
            1.0,
            1.0,
            8.831_122_612_111_428_3,
            2.499_999_987_499_999_9e-9,
            2.499_999_987_499_999_9e-9,
        ),
        (
            1e12,
            1e12,
            1.0,
            1.0,
            13.436_292_795_599_769,
            2.499_999_999_998_75e-13,
            2.499_999_999_998_75e-13,
        ),
        (
            1e12,
            3e12,
            2.0,
            0.5,
            15.456_842_819_451_754,
            -1.000_000_000_000_765_6e-12,
            5.000_000_000_000_584_5e-13,
        ),
        (
            1e20,
            1e20,
            1.0,
            1.0,
            22.646_633_167_575_702,
            2.5e-21,
            2.5e-21,
        ),
    ];
    for (a1, b1, a2, b2, kl, da, db) in cases {
        let (value, got_da, got_db) = value_and_gradients(
            |t, a, b| kl_divergence(&Beta::new(a, b)?, &Beta::new(t.scalar(a2), t.scalar(b2))?),
            a1,
            b1,
        );
        let what = format!("KL(Beta({a1:e}, {b1:e}) || Beta({a2:e}, {b2:e}))");
        assert!(close(value, kl, 1e-14), "{what}: {value} vs {kl}");
        assert!(
            close(got_da, da, 1e-12) && close(got_db, db, 1e-12),
            "{what}: {got_da:e} {got_db:e}"
        );
        // the same two-class Dirichlet
        let tape = Tape::<f64>::new();
        let c = tape.var(v(&[a1, b1]));
        let q = Dirichlet::new(c).unwrap();
        let p = Dirichlet::new(tape.var(v(&[a2, b2]))).unwrap();
        let value = kl_divergence(&q, &p).unwrap();
        let g = value.backward().unwrap().get(c).unwrap().clone();
        assert!(
            close(value.item().unwrap(), kl, 1e-14),
            "Dirichlet {what}: {}",
            value.item().unwrap()
        );
        assert!(
            close(g.data()[0], da, 1e-12) && close(g.data()[1], db, 1e-12),
            "Dirichlet {what}: {:?}",
            g.data()
        );
    }
    // three classes, p's concentrations broadcast from a product
    let tape = Tape::<f64>::new();
    let c = tape.var(v(&[1e10, 2e10, 3e10]));
    let q = Dirichlet::new(c).unwrap();
    let p = Dirichlet::new(tape.var(v(&[1.0, 2.0, 0.5]))).unwrap();
    let value = kl_divergence(&q, &p).unwrap();
    let g = value.backward().unwrap().get(c).unwrap().clone();
    assert!(
        close(value.item().unwrap(), 23.894_922_841_004_373, 1e-14),
        "{}",
        value.item().unwrap()
    );
    // (the first component is a cancellation of terms near 1 to 3e-21:
    // checked against the size of the gradient)
    for (got, want) in g.data().iter().zip([
        -2.893_518_518_682_484_6e-21,
        -2.500_000_000_164_351_9e-11,
        5.000_000_000_034_722_2e-11,
    ]) {
        assert!((got - want).abs() <= 1e-13 * 5e-11, "{:?}", g.data());
    }
}

/// `ψ(a) - ψ(a + b)` and its derivative in `a`, `ψ'(a) - ψ'(a + b)`,
/// where `b` is small beside `a`: the difference of the two digammas
/// loses up to `-log10(b / a)` digits and is 0 once `a + b` rounds to `a`,
/// and so was the large-`a` form's sum of corrections, which lost the
/// corrections' own difference. Against mpmath at 1300 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn digamma_differences_keep_their_digits_for_small_increments() {
    // (a, b, ψ(a) - ψ(a + b), ψ'(a) - ψ'(a + b))
    let cases = [
        (
            1.0,
            1e-20,
            -1.644_934_066_848_226_3e-20,
            2.404_113_806_319_188_4e-20,
        ),
        (
            2.5,
            1e-10,
            -4.903_577_560_884_246_8e-11,
            2.362_040_516_305_321_2e-11,
        ),
        (
            10.0,
            1e-20,
            -1.051_663_356_816_857_4e-21,
            1.104_983_497_080_206_7e-22,
        ),
        (
            37.0,
            1e-10,
            -2.739_554_700_272_015_8e-12,
            7.504_690_783_457_741_1e-14,
        ),
        (
            1e5,
            1e-20,
            -1.000_005_000_016_666_6e-25,
            1.000_010_000_049_999_9e-30,
        ),
        (
            0.3,
            1e-300,
            -1.224_536_454_610_773_2e-299,
            7.527_253_658_872_604_1e-299,
        ),
    ];
    for (a, b, want, want_da) in cases {
        let tape = Tape::<f64>::new();
        let av = tape.var(s(a));
        let d = av.digamma_diff(tape.scalar(b)).unwrap();
        let da = d.backward().unwrap().get(av).unwrap().item().unwrap();
        let got = d.item().unwrap();
        assert!(
            close(got, want, 1e-13),
            "ψ({a}) - ψ({a} + {b:e}): {got:e} vs {want:e}"
        );
        // (the trigamma series at 10 is good to a few 1e-12)
        assert!(
            close(da, want_da, 1e-11),
            "ψ'({a}) - ψ'({a} + {b:e}): {da:e} vs {want_da:e}"
        );
    }
}

/// The Beta and Dirichlet entropies where the concentrations add up to less
/// than 1e-100: their slopes `(1 - a) ψ'(a) + (s - 2) ψ'(s)` (`(α0 - K)
/// ψ'(α0)` for the Dirichlet) gather two terms that overflow from about
/// 1.3e-154 down, and came out NaN (`inf - inf`) at `Beta(1e-160, 1e-160)`
/// and `Dirichlet([1e-300; 3])`; they are `+inf` where the slope is beyond
/// the floats and finite elsewhere. Values and slopes against mpmath at 700
/// to 800 digits (the inputs as floats).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn entropy_slopes_at_tiny_concentrations_are_not_nan() {
    let cases = [
        // (a, b, H, ∂a, ∂b)
        (
            1e-120,
            1e-120,
            -1.0000000000000000214e+120,
            5.0000000000000002139e+239,
            5.0000000000000002139e+239,
        ),
        (
            1e-101,
            3e-101,
            -8.3333333333333329244e+100,
            8.7499999999999991941e+201,
            -1.3888888888888889288e+200,
        ),
        (
            1e-300,
            1e-110,
            -9.9999999999999997494e+299,
            f64::INFINITY,
            -9.9999999999999989756e+219,
        ),
        (
            1e-300,
            1e-300,
            -9.9999999999999997494e+299,
            f64::INFINITY,
            f64::INFINITY,
        ),
        (
            1e-160,
            2e-160,
            -8.333333333333333428e+159,
            f64::INFINITY,
            f64::INFINITY,
        ),
    ];
    for (a, b, h, da, db) in cases {
        let tape = Tape::<f64>::new();
        let (x, y) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
        let entropy = Beta::new(x, y).unwrap().entropy().unwrap();
        let got = entropy.item().unwrap();
        assert!(
            (got - h).abs() <= 1e-14 * h.abs(),
            "H({a:e}, {b:e}): {got:e} vs {h:e}"
        );
        let g = entropy.backward().unwrap();
        for (var, want) in [(x, da), (y, db)] {
            let got = g.get(var).unwrap().item().unwrap();
            let close = match want.is_finite() {
                true => (got - want).abs() <= 1e-14 * want.abs(),
                false => got == want,
            };
            assert!(close, "slope of H({a:e}, {b:e}): {got:e} vs {want:e}");
        }
    }
    let inf = f64::INFINITY;
    let rows: [([f64; 3], f64, [f64; 3]); 4] = [
        (
            [1e-120; 3],
            -2.0000000000000000428e+120,
            [6.6666666666666669519e+239; 3],
        ),
        (
            [1e-101, 2e-101, 3e-101],
            -1.33333333333333326e+101,
            [
                9.1666666666666657626e+201,
                1.6666666666666665383e+201,
                2.7777777777777767561e+200,
            ],
        ),
        ([1e-300; 3], -1.9999999999999999499e+300, [inf; 3]),
        (
            [1e-300, 1e-160, 1e-160],
            -9.9999999999999997494e+299,
            [inf; 3],
        ),
    ];
    for (a, h, slopes) in rows {
        let tape = Tape::<f64>::new();
        let c = tape.var(Tensor::vector(&a));
        let entropy = Dirichlet::new(c).unwrap().entropy().unwrap();
        let got = entropy.item().unwrap();
        assert!(
            (got - h).abs() <= 1e-14 * h.abs(),
            "H({a:?}): {got:e} vs {h:e}"
        );
        let g = entropy.backward().unwrap();
        for (&got, want) in g.get(c).unwrap().data().iter().zip(slopes) {
            let close = match want.is_finite() {
                true => (got - want).abs() <= 1e-14 * want.abs(),
                false => got == want,
            };
            assert!(close, "slope of H({a:?}): {got:e} vs {want:e}");
        }
    }
}

/// Divergences at concentrations of 1e-300, where ψ' = 1/a² overflows and
/// single terms of the sums overflow with opposite signs: a zero factor in
/// front of an overflowing derivative gives 0, not NaN; a sum whose parts
/// overflow is taken in a form whose parts do not (a finite value), or
/// gives +inf where the divergence itself is beyond the range; and the
/// division's gradient does not overflow where it is finite. Against
/// mpmath at 1300 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn divergences_at_tiny_concentrations_are_finite_where_they_should_be() {
    let tape = Tape::<f64>::new();
    let grads = |kl: Var<'_, f64>, x: [Var<'_, f64>; 2]| {
        let g = kl.backward().unwrap();
        x.map(|x| g.get(x).unwrap().item().unwrap())
    };
    // (each was NaN or inf)
    let (a, b) = (tape.var(s(1e-300)), tape.var(s(1.0)));
    let q = Gamma::new(a, b).unwrap();
    let kl = kl_divergence(
        &q,
        &Gamma::new(tape.scalar(1e-300), tape.scalar(3.0)).unwrap(),
    )
    .unwrap();
    let [da, db] = grads(kl, [a, b]);
    assert!(
        close(kl.item().unwrap(), 9.013_877_113_318_903_3e-301, 1e-14),
        "{:e}",
        kl.item().unwrap()
    );
    assert!(
        close(da, 2.0, 1e-14) && close(db, -2.000_000_000_000_000_1e-300, 1e-14),
        "{da:e} {db:e}"
    );

    let (a, b) = (tape.var(s(1e-300)), tape.var(s(1e-10)));
    let q = Gamma::new(a, b).unwrap();
    let kl = kl_divergence(
        &q,
        &Gamma::new(tape.scalar(0.5), tape.scalar(1e300)).unwrap(),
    )
    .unwrap();
    let [_, db] = grads(kl, [a, b]);
    assert!(
        close(kl.item().unwrap(), 5e299, 1e-14),
        "{:e}",
        kl.item().unwrap()
    );
    assert!(close(db, -9.999_999_999_5e19, 1e-14), "{db:e}");

    let (a, b) = (tape.var(s(1e-300)), tape.var(s(1e-10)));
    let q = Beta::new(a, b).unwrap();
    let kl = kl_divergence(
        &q,
        &Beta::new(tape.scalar(1e-10), tape.scalar(1e300)).unwrap(),
    )
    .unwrap();
    let [_, db] = grads(kl, [a, b]);
    assert!(
        close(kl.item().unwrap(), 1e290, 1e-14),
        "{:e}",
        kl.item().unwrap()
    );
    assert!(close(db, -2e30, 1e-13), "{db:e}");

    // 5e309: beyond the range
    let q = Beta::new(tape.scalar(1e-300), tape.scalar(1e-300)).unwrap();
    let kl = kl_divergence(
        &q,
        &Beta::new(tape.scalar(1e-300), tape.scalar(1e10)).unwrap(),
    )
    .unwrap();
    assert_eq!(kl.item().unwrap(), f64::INFINITY);
}

/// The slopes of Beta, Gamma and Dirichlet divergences between
/// concentrations below about 1e-154, where `ψ'` overflows but the slopes
/// do not: a shape divergence's slope `(a - b) ψ'(a)` was `∓inf` there
/// (its factor `ψ'(a)` taken alone), and a sum of two such slopes NaN
/// (`KL(Beta(1e-300, 1e-300) || Beta(2e-300, 1e-300))` in `a1`, true
/// `-7.5e299`). Each case as a scalar and as a vector of 19 copies (so
/// that the lane forms run too), against mpmath at 700 digits (the inputs
/// as floats).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn divergence_slopes_at_tiny_concentrations_are_finite() {
    type Case = ([f64; 4], f64, [f64; 4]);
    // ([a1, b1, a2, b2], KL, its slopes in a1, b1, a2, b2)
    let beta: [Case; 4] = [
        (
            [1e-300, 1e-300, 2e-300, 1e-300],
            2.1231792754821907256e-1,
            [
                -7.4999999999999998121e+299,
                2.4999999999999999374e+299,
                3.3333333333333332498e+299,
                -1.6666666666666666249e+299,
            ],
        ),
        (
            [1e-160, 1e-160, 1e-160, 2e-160],
            2.1231792754821907256e-1,
            [
                2.5000000000000000284e+159,
                -7.5000000000000000852e+159,
                -1.6666666666666666856e+159,
                3.3333333333333333712e+159,
            ],
        ),
        (
            [1e-300, 1e-300, 1e-300, 1.5e-300],
            6.7678443206045393129e-2,
            [
                1.2500000000000001759e+299,
                -3.7500000000000005277e+299,
                -1.0000000000000001076e+299,
                2.3333333333333335106e+299,
            ],
        ),
        (
            [1e-170, 5.0, 2e-170, 5.0],
            3.0685281944005469058e-1,
            [
                -1.0000000000000000167e+170,
                2.2132295573711532168e-171,
                5.0000000000000000833e+169,
                -2.2132295573711532168e-171,
            ],
        ),
    ];
    let gamma: [Case; 3] = [
        (
            [1e-300, 1.0, 2e-300, 1.0],
            3.0685281944005469058e-1,
            [
                -9.9999999999999997494e+299,
                1.0000000000000000251e-300,
                4.9999999999999998747e+299,
                -1.0000000000000000251e-300,
            ],
        ),
        (
            [1e-160, 2.0, 3e-160, 0.5],
            9.013877113318903086e-1,
            [
                -2.0000000000000000227e+160,
                1.3749999999999999844e-160,
                6.6666666666666667424e+159,
                -5.4999999999999999375e-160,
            ],
        ),
        (
            [2e-200, 1e-3, 1e-200, 1e-3],
            1.9314718055994530942e-1,
            [
                2.5000000000000000447e+199,
                -9.9999999999999996128e-198,
                -5.0000000000000000895e+199,
                9.9999999999999996128e-198,
            ],
        ),
    ];
    let within = |tol: f64| {
        move |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() <= tol * want.abs(),
                "{what}: {got:e} vs {want:e}"
            );
        }
    };
    // (the values keep 12 digits or so here, where terms of size 1/a
    // cancel to one of size 1)
    let (value, near) = (within(1e-11), within(1e-12));
    for (family, cases) in [("Beta", &beta[..]), ("Gamma", &gamma[..])] {
        for &(c, kl, slopes) in cases.iter() {
            for n in [1, 19] {
                let tape = Tape::<f64>::new();
                let v = c.map(|x| tape.var(Tensor::full(&[n], x)));
                let divergence = match family {
                    "Beta" => kl_divergence(
                        &Beta::new(v[0], v[1]).unwrap(),
                        &Beta::new(v[2], v[3]).unwrap(),
                    ),
                    _ => kl_divergence(
                        &Gamma::new(v[0], v[1]).unwrap(),
                        &Gamma::new(v[2], v[3]).unwrap(),
                    ),
                }
                .unwrap();
                let g = divergence.sum().backward().unwrap();
                for i in 0..n {
                    let what = format!("{family} {c:?} ({n} copies, #{i})");
                    value(divergence.value().data()[i], kl, &what);
                    for (k, &want) in slopes.iter().enumerate() {
                        let got = g.get(v[k]).unwrap().data()[i];
                        near(got, want, &format!("slope {k} of {what}"));
                    }
                }
            }
        }
    }
    // ([q], [p], KL, slopes in q and then in p)
    type Rows = ([f64; 3], [f64; 3], f64, [f64; 6]);
    let dirichlet: [Rows; 2] = [
        (
            [1e-300, 1e-300, 2e-300],
            [2e-300, 1e-300, 1e-300],
            0.5,
            [
                -9.9999999999999997494e+299,
                0.0,
                2.4999999999999999374e+299,
                4.9999999999999998747e+299,
                // -5.3e-402: below the floats
                0.0,
                -4.9999999999999998747e+299,
            ],
        ),
        (
            [1e-160, 2e-160, 1e-160],
            [1e-160, 1e-160, 3e-160],
            1.0676784432060453738,
            [
                6.250000000000000071e+158,
                3.1250000000000000355e+159,
                -1.937500000000000022e+160,
                -5.0000000000000000568e+158,
                -5.5000000000000000625e+159,
                6.1666666666666667367e+159,
            ],
        ),
    ];
    for (q, p, kl, slopes) in dirichlet {
        let tape = Tape::<f64>::new();
        let (vq, vp) = (tape.var(Tensor::vector(&q)), tape.var(Tensor::vector(&p)));
        let divergence =
            kl_divergence(&Dirichlet::new(vq).unwrap(), &Dirichlet::new(vp).unwrap()).unwrap();
        let what = format!("Dirichlet {q:?} || {p:?}");
        value(divergence.item().unwrap(), kl, &what);
        let g = divergence.backward().unwrap();
        let got = g
            .get(vq)
            .unwrap()
            .data()
            .iter()
            .chain(g.get(vp).unwrap().data());
        for (k, (&got, want)) in got.zip(slopes).enumerate() {
            match want == 0.0 {
                true => assert_eq!(got, 0.0, "slope {k} of {what}"),
                false => near(got, want, &format!("slope {k} of {what}")),
            }
        }
    }
}

/// The inverse Gamma's entropy at concentrations where `ψ'` overflows
/// (below about 1e-154): its slope in the concentration, `1 - (1 + a)
/// ψ'(a)`, is `-inf` there, and was NaN (`+inf` from the Gamma's entropy
/// less `+inf` from `2 ψ(a)`). One vector mixes those concentrations with
/// ordinary ones. Against mpmath at 700 digits.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn inverse_gamma_entropy_slope_at_tiny_concentrations() {
    // (a, H, ∂a) at b = 3 (∂b = 1/3)
    let cases = [
        (1e-300, 9.9999999999999997494e+299, f64::NEG_INFINITY),
        (1e-160, 1.0000000000000000114e+160, f64::NEG_INFINITY),
        (
            1e-120,
            1.0000000000000000214e+120,
            -1.0000000000000000428e+240,
        ),
        (2.5, 1.4222469168826776957, -0.7162521463508220274),
    ];
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::vector(&cases.map(|c| c.0)));
    let b = tape.var(Tensor::scalar(3.0));
    let entropy = InverseGamma::new(a, b).unwrap().entropy().unwrap();
    let g = entropy.sum().backward().unwrap();
    for (i, (conc, h, da)) in cases.into_iter().enumerate() {
        let got = entropy.value().data()[i];
        assert!(
            (got - h).abs() <= 1e-14 * h.abs(),
            "H(a = {conc:e}): {got:e} vs {h:e}"
        );
        let got = g.get(a).unwrap().data()[i];
        let close = match da.is_finite() {
            true => (got - da).abs() <= 1e-12 * da.abs(),
            false => got == da,
        };
        assert!(close, "dH/da at {conc:e}: {got:e} vs {da:e}");
    }
    let db = g.get(b).unwrap().item().unwrap();
    assert!((db - 4.0 / 3.0).abs() <= 1e-14, "dH/db summed: {db}");
    // in f32, where ψ' overflows below about 5e-20: -inf (-1e60), and
    // -1.00000004e28 at 1e-14 (mpmath, the input as f32), beside an
    // ordinary concentration
    let tape = Tape::<f32>::new();
    let a = tape.var(Tensor::vector(&[1e-30f32, 1e-14, 2.5]));
    let entropy = InverseGamma::new(a, tape.scalar(3.0))
        .unwrap()
        .entropy()
        .unwrap();
    let g = entropy.sum().backward().unwrap();
    let slopes = g.get(a).unwrap().data().to_vec();
    let want = [
        f64::NEG_INFINITY,
        -1.0000000350966708355e+28,
        -0.7162521463508220274,
    ];
    for (got, want) in slopes.into_iter().map(f64::from).zip(want) {
        let close = match want.is_finite() {
            true => (got - want).abs() <= 4.0 * f64::from(f32::EPSILON) * want.abs(),
            false => got == want,
        };
        assert!(close, "f32 dH/da: {got:e} vs {want:e}");
    }
}

/// The entries above a multivariate normal's scale diagonal are not
/// parameters: their slopes are 0 even where the solves overflow there. At
/// `L = [[1e-30, 0], [1, 1e-30]]` in `f32` (`L⁻¹` has entries of 1e60) the
/// upper slots' slopes of `KL(q || q)` were NaN (`inf · 0` through the
/// triangle's mask). (The slopes of the lower triangle there, 0 at this
/// minimum, go through the overflowing solves and are not checked: `p`'s
/// first diagonal entry's is NaN.)
#[test]
fn multivariate_normal_slopes_above_the_diagonal_are_zero_where_solves_overflow() {
    let tape = Tape::<f32>::new();
    let l = || tape.var(Tensor::from_fn(&[2, 2], |i| [1e-30f32, 0.0, 1.0, 1e-30][i]));
    let loc = || tape.var(Tensor::vector(&[0.0f32, 1.0]));
    let (lq, lp) = (l(), l());
    let q = MultivariateNormal::from_scale_tril(loc(), lq).unwrap();
    let p = MultivariateNormal::from_scale_tril(loc(), lp).unwrap();
    let kl = kl_divergence(&q, &p).unwrap();
    assert_eq!(kl.item().unwrap(), 0.0);
    let g = kl.backward().unwrap();
    for (name, v) in [("q", lq), ("p", lp)] {
        let above = g.get(v).unwrap().data()[1];
        assert_eq!(above, 0.0, "slope above the diagonal of {name}'s scale");
    }
}

/// The Gamma density where `rate * x` is below the smallest normal number
/// (subnormal, or rounded to 0): there its large-concentration form cannot
/// be used and the direct sum is, per element, in f32 and f64, with the
/// gradient in x of the direct formula, `(a - 1)/x - b`. The same for the
/// Gamma KL's rate part.
#[test]
fn gamma_log_prob_and_kl_where_a_product_underflows() {
    fn check<F: Element>(a: f64, b: f64, xs: &[f64], ulps: f64) {
        let tape = Tape::<F>::new();
        let lit = |v: f64| F::from(v).unwrap();
        let x = tape.var(Tensor::from_fn(&[xs.len()], |i| lit(xs[i])));
        let d = Gamma::new(tape.scalar(lit(a)), tape.scalar(lit(b))).unwrap();
        let lp = d.log_prob(x).unwrap();
        let g = lp.sum().backward().unwrap();
        let lgamma_a = Tape::<f64>::new().scalar(a).lgamma().item().unwrap();
        for (i, &xv) in xs.iter().enumerate() {
            // the value as F holds it, in f64
            let xv = lit(xv).to_f64().unwrap();
            let want = a * b.ln() + (a - 1.0) * xv.ln() - b * xv - lgamma_a;
            let got = lp.value().data()[i].to_f64().unwrap();
            let tol = ulps * F::epsilon().to_f64().unwrap() * want.abs();
            assert!((got - want).abs() <= tol, "x = {xv:e}: {got} vs {want}");
            // (-inf where it overflows, as in the direct formula)
            let slope = lit((a - 1.0) / xv - b).to_f64().unwrap();
            let got = g.get(x).unwrap().data()[i].to_f64().unwrap();
            let close = got == slope
                || (got - slope).abs() <= ulps * F::epsilon().to_f64().unwrap() * slope.abs();
            assert!(close, "d/dx at {xv:e}: {got} vs {slope}");
        }
    }
    // 0.5 * 5e-324 rounds to 0 in f64; 1e-8 * 1e-38 to 0 in f32, and
    // 1e-3 * 1.2e-38 is subnormal; the last values are ordinary, so
    // one tensor mixes both forms
    check::<f64>(0.5, 0.5, &[5e-324, 1e-310, 0.7], 8.0);
    check::<f32>(0.5, 1e-8, &[1e-38, 2e-38, 3.0e7], 4.0);
    check::<f32>(0.5, 1e-3, &[1.2e-38, 0.25], 4.0);

    // the Gamma KL's rate part takes a1 b2 / b1, here 1e-30 * 1e-16 = 0
    // in f32: a2 ln(b1/b2) + a1 (b2 - b1)/b1 (the shape part is 0)
    let tape = Tape::<f32>::new();
    let g = |a: f32, b: f32| Gamma::new(tape.scalar(a), tape.scalar(b)).unwrap();
    let kl = kl_divergence(&g(1e-30, 1.0), &g(1e-30, 1e-16))
        .unwrap()
        .item()
        .unwrap();
    let (a, b2) = (f64::from(1e-30f32), f64::from(1e-16f32));
    let want = a * (1.0 / b2).ln() + a * (b2 - 1.0);
    assert!(
        (f64::from(kl) - want).abs() <= 4.0 * f64::from(f32::EPSILON) * want,
        "{kl} vs {want}"
    );
}

/// A tensor whose concentrations lie on both sides of the switch to the
/// large-concentration forms (and down to 1e-300) gives, element by
/// element, the values and gradients each element gives alone, and no NaN:
/// the two forms are chosen per element, not blended.
#[test]
fn concentrations_on_both_sides_of_the_switch_in_one_tensor() {
    let conc = [1e-300, 0.7, 3.0, 9.99, 10.0, 250.0, 1e7];
    let other = [2.0, 0.3, 12.0, 40.0, 9.0, 260.0, 1.1e7];
    type Build = for<'t> fn(&'t Tape<f64>, Var<'t, f64>, Var<'t, f64>) -> Result<Var<'t, f64>>;
    let cases: [(&str, Build); 7] = [
        ("Gamma log_prob", |t, a, b| {
            Gamma::new(a, b)?.log_prob(t.constant(v(&[1.5; 7])))
        }),
        ("Gamma entropy", |_, a, b| Gamma::new(a, b)?.entropy()),
        ("Gamma KL", |t, a, b| {
            let q = Gamma::new(a, t.constant(v(&[2.0; 7])))?;
            kl_divergence(&q, &Gamma::new(b, t.constant(v(&[2.5; 7])))?)
        }),
        ("Beta log_prob", |t, a, b| {
            Beta::new(a, b)?.log_prob(t.constant(v(&[0.3; 7])))
        }),
        ("Beta entropy", |_, a, b| Beta::new(a, b)?.entropy()),
        ("Beta KL", |_, a, b| {
            kl_divergence(&Beta::new(a, b)?, &Beta::new(b, a)?)
        }),
        ("Dirichlet entropy", |_, a, b| {
            // rows (a_i, b_i): some all large, some not
            Dirichlet::new(Var::stack(&[a, b], 1)?)?.entropy()
        }),
    ];
    for (name, build) in cases {
        let tape = Tape::<f64>::new();
        let (a, b) = (tape.var(v(&conc)), tape.var(v(&other)));
        let y = build(&tape, a, b).unwrap();
        let g = y.sum().backward().unwrap();
        for i in 0..conc.len() {
            let one = Tape::<f64>::new();
            // all seven elements equal to element i: one form throughout
            let (ai, bi) = (
                one.var(Tensor::full(&[7], conc[i])),
                one.var(Tensor::full(&[7], other[i])),
            );
            let yi = build(&one, ai, bi).unwrap();
            let gi = yi.sum().backward().unwrap();
            let (want, got) = (yi.value().data()[i], y.value().data()[i]);
            assert!(
                !got.is_nan() && (got == want || (got - want).abs() <= 1e-14 * want.abs()),
                "{name} at {i}: {got} vs {want}"
            );
            for (var, vi) in [(a, ai), (b, bi)] {
                let (got, want) = (g.get(var).unwrap().data()[i], gi.get(vi).unwrap().data()[i]);
                assert!(!got.is_nan(), "{name} at {i}: NaN gradient");
                assert!(
                    got == want || (got - want).abs() <= 1e-12 * want.abs(),
                    "{name} at {i}: gradient {got} vs {want}"
                );
            }
        }
    }
}

/// No NaN, in a value or a gradient, from parameters anywhere from 1e-10
/// to 1e10 (on both sides of the switch to the large-concentration forms)
/// and values across each support: every pair of a grid, broadcast.
#[test]
fn parameters_from_1e_minus_10_to_1e10_give_no_nan() {
    let grid = [1e-10, 0.01, 0.5, 1.0, 3.0, 9.99, 10.0, 1e5, 1e10];
    let at = |shape: &[usize]| Tensor::from_vec(grid.to_vec(), shape).unwrap();
    type Build = for<'t> fn(&'t Tape<f64>, [Var<'t, f64>; 4]) -> Result<Var<'t, f64>>;
    let cases: [(&str, Build); 10] = [
        ("Gamma log_prob", |t, [a, b, ..]| {
            Gamma::new(a, b)?.log_prob(t.constant(Tensor::from_vec(
                vec![1e-10, 0.5, 7.0, 1e10],
                &[4, 1, 1, 1, 1],
            )?))
        }),
        ("Gamma entropy", |_, [a, b, ..]| Gamma::new(a, b)?.entropy()),
        ("Gamma KL", |_, [a, b, c, d]| {
            kl_divergence(&Gamma::new(a, b)?, &Gamma::new(c, d)?)
        }),
        ("Beta log_prob", |t, [a, b, ..]| {
            Beta::new(a, b)?.log_prob(t.constant(Tensor::from_vec(
                vec![1e-10, 0.25, 1.0 - 1e-10],
                &[3, 1, 1, 1, 1],
            )?))
        }),
        ("Beta entropy", |_, [a, b, ..]| Beta::new(a, b)?.entropy()),
        ("Beta KL", |_, [a, b, c, d]| {
            kl_divergence(&Beta::new(a, b)?, &Beta::new(c, d)?)
        }),
        ("StudentT log_prob", |t, [a, b, ..]| {
            let x = t.constant(Tensor::from_vec(
                vec![-1e10, 0.0, 1.0, 1e10],
                &[4, 1, 1, 1, 1],
            )?);
            StudentT::new(a, t.scalar(0.5), b)?.log_prob(x)
        }),
        ("StudentT entropy", |t, [a, b, ..]| {
            StudentT::new(a, t.scalar(0.5), b)?.entropy()
        }),
        ("Dirichlet entropy", |_, [a, b, ..]| {
            let rows = Var::stack(
                &[
                    a.broadcast_to(&[9, 9, 1, 1])?,
                    b.broadcast_to(&[9, 9, 1, 1])?,
                ],
                4,
            )?;
            Dirichlet::new(rows)?.entropy()
        }),
        ("Poisson log_prob", |t, [a, ..]| {
            Poisson::new(a)?.log_prob(t.constant(Tensor::from_vec(
                vec![0.0, 1.0, 7.0, 1e10],
                &[4, 1, 1, 1, 1],
            )?))
        }),
    ];
    for (name, build) in cases {
        let tape = Tape::<f64>::new();
        let vars = [
            tape.var(at(&[9, 1, 1, 1])),
            tape.var(at(&[9, 1, 1])),
            tape.var(at(&[9, 1])),
            tape.var(at(&[9])),
        ];
        let y = build(&tape, vars).unwrap();
        assert!(
            y.value().data().iter().all(|x| !x.is_nan()),
            "{name}: NaN value"
        );
        let g = y.sum().backward().unwrap();
        for var in vars {
            if let Some(t) = g.get(var) {
                assert!(t.data().iter().all(|x| !x.is_nan()), "{name}: NaN gradient");
            }
        }
    }
}

/// A flat prior over every float, `Uniform(-MAX, MAX)`: its width
/// overflows, and `log_prob`, `entropy`, `rsample` and `mean` come from
/// the halved bounds instead of giving -inf, inf draws or an infinite
/// mean (f64 and f32). The gradients stay those of `-ln(high - low)`.
#[test]
fn a_uniform_over_every_float_is_not_infinitely_wide() {
    fn check<F: Element>() {
        let tape = Tape::<F>::new();
        let (lo, hi) = (
            tape.var(Tensor::scalar(-F::max_value())),
            tape.var(Tensor::scalar(F::max_value())),
        );
        let d = Uniform::new(lo, hi).unwrap();
        // ln(2 MAX)
        let want = F::max_value().to_f64().unwrap().ln() + std::f64::consts::LN_2;
        let rel = 4.0 * F::epsilon().to_f64().unwrap();
        let lp = d.log_prob(tape.scalar(F::zero())).unwrap();
        let close = |got: F, want: f64| (got.to_f64().unwrap() - want).abs() <= rel * want.abs();
        assert!(close(lp.item().unwrap(), -want), "log_prob {:?}", lp.item());
        assert!(close(d.entropy().unwrap().item().unwrap(), want));
        assert_eq!(d.mean().unwrap().item().unwrap(), F::zero());
        // d/d high of -ln(high - low) = -1 / (2 MAX)
        let g = lp.backward().unwrap();
        let slope = -0.5 / F::max_value().to_f64().unwrap();
        let got = g.get(hi).unwrap().item().unwrap().to_f64().unwrap();
        assert!(
            (got - slope).abs() <= 1e-3 * slope.abs(),
            "{got:e} vs {slope:e}"
        );
        let x = d
            .rsample_n(Some(200), &mut StdRng::seed_from_u64(5))
            .unwrap();
        assert!(x.value().data().iter().all(|v| v.is_finite()));
        let positive = x.value().data().iter().filter(|&&v| v > F::zero()).count();
        assert!((60..=140).contains(&positive), "{positive} of 200 above 0");
        let g = x.sum().backward().unwrap();
        // d/d low + d/d high = 1 for each draw
        let total = g.get(lo).unwrap().item().unwrap() + g.get(hi).unwrap().item().unwrap();
        assert!((total.to_f64().unwrap() - 200.0).abs() < 1e-3);
        // bounds whose sum overflows though their difference does not
        let d = Uniform::new(
            tape.scalar(F::max_value() * F::from(0.5).unwrap()),
            tape.scalar(F::max_value()),
        )
        .unwrap();
        let mean = d.mean().unwrap().item().unwrap().to_f64().unwrap();
        assert!((mean - 0.75 * F::max_value().to_f64().unwrap()).abs() <= rel * mean);
    }
    check::<f64>();
    check::<f32>();
}

/// A Student-t value so far from its location that `z²` overflows (1e200
/// at scale 1, or 1 at scale 1e-300) has a finite log-density, far out
/// in the tails; it is not -inf. Against mpmath (800 digits), in one
/// tensor with ordinary values, gradient in x included; the ordinary ones'
/// gradients stay finite where the far form is computed beside them (a
/// location of 1e17 once made them NaN).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn student_t_far_in_the_tails_is_finite() {
    // (df, x, loc, scale, ln p, d ln p / dx)
    let cases = [
        (3.0, 1e200, 0.0, 1.0, -1_840.871_738_667_523_8, -4.0e-200),
        (
            3.0,
            0.5,
            0.0,
            1.0,
            -1.160_974_264_970_582_6,
            -0.615_384_615_384_615_38,
        ),
        (3.0, 1.0, 0.0, 1e-300, -2_071.130_247_966_928_4, -4.0),
        (2.5, -1e160, 3.0, 2.0, -1_287.127_914_937_946_4, 3.5e-160),
        // df near 1e-300: z²/df overflows though z² does not
        (1e-300, 1e10, 0.0, 1.0, -714.494_526_008_714_11, -1.0e-10),
        // at its location, beside the far values, with `loc + scale`
        // rounding to `loc`: the far form must not see `x - loc = 0` there
        (3.0, 1e17, 1e17, 1.0, -1.000_888_849_623_509_7, 0.0),
    ];
    let tape = Tape::<f64>::new();
    let col = |k: usize| {
        Tensor::from_fn(&[cases.len()], |i| {
            [cases[i].0, cases[i].1, cases[i].2, cases[i].3][k]
        })
    };
    let (df, x, loc, scale) = (
        tape.var(col(0)),
        tape.var(col(1)),
        tape.var(col(2)),
        tape.var(col(3)),
    );
    let lp = StudentT::new(df, loc, scale).unwrap().log_prob(x).unwrap();
    let g = lp.sum().backward().unwrap();
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-13 * want.abs();
    for (i, &(.., want, slope)) in cases.iter().enumerate() {
        let got = lp.value().data()[i];
        assert!(close(got, want), "case {i}: {got} vs {want}");
        let got = g.get(x).unwrap().data()[i];
        assert!(close(got, slope), "case {i}: d/dx {got:e} vs {slope:e}");
    }
    // the other gradients where the far form is taken: (case, d/d loc,
    // d/d scale, d/d df), mpmath's numerical derivatives
    for (i, dloc, dscale, ddf) in [
        (0, 4.0e-200, 3.0, -459.274_565_273_915_14),
        (2, 4.0, 3.0e300, -689.533_074_573_319_71),
        (5, 0.0, -1.0, 0.026_480_513_893_278_643),
    ] {
        for (what, var, want) in [
            ("loc", loc, dloc),
            ("scale", scale, dscale),
            ("df", df, ddf),
        ] {
            let got = g.get(var).unwrap().data()[i];
            assert!(close(got, want), "case {i}: d/d {what} {got:e} vs {want:e}");
        }
    }
}

/// The log-normal variance `expm1(s²) exp(2 loc + s²)` where one factor
/// leaves the floats and the product does not, or both do: against mpmath
/// (100 digits) at 1e-13 relative, gradients included, and 0 with
/// partials 0 where the variance is below the smallest float. The product
/// of the two factors gave NaN at `(-1e8, 1e3)` (`inf · 0`) and `inf` at
/// `(360, 1e-20)`.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn lognormal_variance_where_its_factors_leave_the_floats() {
    // (loc, scale, variance, d/d loc, d/d scale)
    let cases = [
        (
            0.5,
            1.2,
            36.951_174_328_550_334,
            73.902_348_657_100_668,
            204.900_934_559_749_19,
        ),
        (
            360.0,
            1e-20,
            4.920_700_930_263_815_2e272,
            9.841_401_860_527_630_4e272,
            9.841_401_860_527_630_9e292,
        ),
        (
            300.0,
            1e-160,
            3.773_020_300_929_939_7e-60,
            7.546_040_601_859_879_5e-60,
            7.546_040_601_859_879_6e100,
        ),
        (-1e8, 1e3, 0.0, 0.0, 0.0),
    ];
    for (m, s, want, want_m, want_s) in cases {
        let tape = Tape::<f64>::new();
        let (loc, scale) = (tape.var(Tensor::scalar(m)), tape.var(Tensor::scalar(s)));
        let var = LogNormal::new(loc, scale).unwrap().variance().unwrap();
        let g = var.backward().unwrap();
        let got = [
            var.item().unwrap(),
            g.get(loc).unwrap().item().unwrap(),
            g.get(scale).unwrap().item().unwrap(),
        ];
        for ((got, want), what) in got
            .iter()
            .zip([want, want_m, want_s])
            .zip(["value", "∂loc", "∂scale"])
        {
            assert!(
                (got - want).abs() <= 1e-13 * want.abs(),
                "({m}, {s}): {what} {got:e} vs {want:e}"
            );
        }
    }
}

/// In `f32` the Beta divergence and its gradients are the `f64` ones
/// rounded (the `f64` path is checked against mpmath elsewhere): its forms
/// cancel terms of the size of a concentration times its digamma, which
/// at concentrations of 1e6 left the `f32` value up to 1.7 % off
/// (`KL(Beta(1e6, 30) || Beta(500, 0.7))` was 3.5625 for 3.5037). Two-
/// category Dirichlets are Beta divergences and follow.
#[test]
fn beta_kl_in_f32_is_the_f64_value_rounded() {
    fn kl<F: Element>(v: [f64; 4]) -> (f64, Vec<f64>) {
        let tape = Tape::<F>::new();
        let x: Vec<Var<'_, F>> = v
            .iter()
            .map(|&c| tape.var(Tensor::scalar(F::lit(c))))
            .collect();
        let q = Beta::new(x[0], x[1]).unwrap();
        let p = Beta::new(x[2], x[3]).unwrap();
        let kl = kl_divergence(&q, &p).unwrap();
        let g = kl.backward().unwrap();
        let grads = x
            .iter()
            .map(|v| g.get(*v).unwrap().item().unwrap().to_f64().unwrap());
        (kl.item().unwrap().to_f64().unwrap(), grads.collect())
    }
    let within = |got: f64, want: f64| {
        (got - want).abs() <= 2.0 * f64::from(f32::EPSILON) * want.abs() || got == want
    };
    for v in [
        [1e6, 30.0, 500.0, 0.7],
        [3.0, 1e6, 0.05, 20.0],
        [300.0, 1e6, 0.05, 20.0],
        [1e6, 1e6, 0.05, 20.0],
        [3e4, 30.0, 2.0, 5.0],
        [0.3, 0.8, 2.0, 5.0],
    ] {
        // the parameters as f32 holds them
        let v = v.map(|c| f64::from(c as f32));
        let (got, got_grads) = kl::<f32>(v);
        let (want, want_grads) = kl::<f64>(v);
        assert!(within(got, want), "KL at {v:?}: {got} vs {want}");
        for (i, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
            assert!(within(*g, *w), "d/dv{i} at {v:?}: {g} vs {w}");
        }
        let tape = Tape::<f32>::new();
        let dir = |a: f64, b: f64| {
            Dirichlet::new(tape.constant(Tensor::vector(&[a as f32, b as f32]))).unwrap()
        };
        let d = kl_divergence(&dir(v[0], v[1]), &dir(v[2], v[3]))
            .unwrap()
            .item()
            .unwrap();
        assert!(
            within(f64::from(d), want),
            "Dirichlet at {v:?}: {d} vs {want}"
        );
    }
}

/// Each of `got` (from `f32`) within one `f32` epsilon, relative, of the
/// same entry of `want` (from `f64`), or equal to its rounding to `f32`
/// (where that is subnormal or infinite).
fn assert_rounded_from_f64(got: &[f64], want: &[f64], case: &str) {
    assert_eq!(got.len(), want.len(), "{case}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= f64::from(f32::EPSILON) * w.abs() || *g == f64::from(*w as f32),
            "{case}, entry {i}: {g} vs {w}"
        );
    }
}

/// The three values of `y`, then the gradients of `y · [0.5, -2, 3]`
/// summed, in each of `vars` that gets one, as `f64`.
fn values_and_weighted_gradients<'t, F: Element>(y: Var<'t, F>, vars: &[Var<'t, F>]) -> Vec<f64> {
    let w = y
        .tape()
        .constant(Tensor::vector(&[0.5, -2.0, 3.0].map(F::lit)));
    values_and_gradients_weighted_by(y, vars, w)
}

/// The values of `y`, then the gradients of `y · w` summed, in each of
/// `vars` that gets one, as `f64`.
fn values_and_gradients_weighted_by<'t, F: Element>(
    y: Var<'t, F>,
    vars: &[Var<'t, F>],
    w: Var<'t, F>,
) -> Vec<f64> {
    let f64s = |t: &Tensor<F>| {
        t.data()
            .iter()
            .map(|v| v.to_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let mut out = f64s(&y.value());
    let g = (y * w).sum().backward().unwrap();
    for v in vars {
        out.extend(g.get(*v).map(f64s).unwrap_or_default());
    }
    out
}

/// In `f32` the Gamma, Beta and Dirichlet log-densities and entropies are
/// the `f64` values rounded, with their gradients in the parameters and
/// the point: their sums cancel terms of the size of `ln Γ` of a
/// concentration, which in `f32` left `ln p(0.5)` of `Beta(1e6, 1e6)` at 7
/// for 7.0285, `ln p(0.001)` of `Gamma(0.001, 1)` 535 ulp off, the entropy
/// of `Dir([100, 100, 7])` 7.5e-5 off and the gradient in `b` of the
/// entropy of `Beta(1e6, 5)` 5.6e-6 off.
#[test]
fn gamma_beta_dirichlet_densities_in_f32_are_the_f64_values_rounded() {
    /// The value and the gradients in each parameter and (for a density)
    /// the point, as f64.
    fn eval<F: Element>(family: usize, p: &[f64], x: &[f64]) -> (f64, Vec<f64>) {
        let tape = Tape::<F>::new();
        let var = |v: &[f64]| match v.len() {
            1 => tape.var(Tensor::scalar(F::lit(v[0]))),
            _ => tape.var(Tensor::vector(
                &v.iter().map(|&c| F::lit(c)).collect::<Vec<_>>(),
            )),
        };
        let params: Vec<Var<'_, F>> = match family {
            0..=3 => p.iter().map(|&c| var(&[c])).collect(),
            _ => vec![var(p)],
        };
        let point = var(x);
        let y = match family {
            0 => Gamma::new(params[0], params[1]).unwrap().log_prob(point),
            1 => Gamma::new(params[0], params[1]).unwrap().entropy(),
            2 => Beta::new(params[0], params[1]).unwrap().log_prob(point),
            3 => Beta::new(params[0], params[1]).unwrap().entropy(),
            4 => Dirichlet::new(params[0]).unwrap().log_prob(point),
            _ => Dirichlet::new(params[0]).unwrap().entropy(),
        }
        .unwrap();
        let g = y.backward().unwrap();
        let grads = params
            .iter()
            .chain([&point])
            .filter_map(|v| g.get(*v))
            .flat_map(|t| {
                t.data()
                    .iter()
                    .map(|d| d.to_f64().unwrap())
                    .collect::<Vec<_>>()
            });
        (y.item().unwrap().to_f64().unwrap(), grads.collect())
    }
    let cases: [(usize, &[f64], &[f64]); 14] = [
        (0, &[0.001, 1.0], &[0.001]),
        (0, &[100.0, 1e6], &[6e-5]),
        (0, &[1.5, 5.0], &[0.42]),
        (1, &[0.1, 0.001], &[]),
        (1, &[1e5, 1e3], &[]),
        (2, &[1e6, 1e6], &[0.5]),
        (2, &[1e4, 1e3], &[0.9]),
        (2, &[1.0, 2.0], &[0.5]),
        (2, &[0.3, 0.8], &[0.01]),
        (3, &[1e6, 5.0], &[]),
        (4, &[0.5, 2.0, 7.0], &[0.25, 0.25, 0.5]),
        (4, &[1e4, 1e4, 1e4], &[0.25, 0.25, 0.5]),
        (5, &[100.0, 100.0, 7.0], &[]),
        (5, &[1.5, 10.0, 7.0], &[]),
    ];
    for (family, p, x) in cases {
        // the parameters and the point as f32 holds them
        let p: Vec<f64> = p.iter().map(|&c| f64::from(c as f32)).collect();
        let x: Vec<f64> = x.iter().map(|&c| f64::from(c as f32)).collect();
        let both = |(value, mut grads): (f64, Vec<f64>)| {
            grads.insert(0, value);
            grads
        };
        let got = both(eval::<f32>(family, &p, &x));
        let want = both(eval::<f64>(family, &p, &x));
        // entry 0 the value, then the gradients
        assert_rounded_from_f64(&got, &want, &format!("family {family} at {p:?}, {x:?}"));
    }
}

/// The `f32` Gamma and Beta log-densities through `f64` with parameters of
/// the values' shape and with single parameters broadcast over the values
/// (whose gradients sum the partial derivatives over the values), each
/// needing a gradient or not: the values and every gradient are the `f64`
/// ones rounded.
#[test]
fn f32_densities_through_f64_broadcast_their_parameters() {
    const X: [f64; 3] = [0.25, 0.5, 0.875]; // exact in f32, as the parameters
    /// The value and the gradients (those the tape gives) as f64; `a`
    /// per value or single, `b` single, each a var or a constant.
    fn eval<F: Element>(beta: bool, a_per_value: bool, vars: [bool; 3]) -> Vec<f64> {
        let tape = Tape::<F>::new();
        let leaf = |v: Tensor<F>, var: bool| if var { tape.var(v) } else { tape.constant(v) };
        let a = match a_per_value {
            true => Tensor::vector(&[F::lit(3.0), F::lit(1e4), F::lit(0.75)]),
            false => Tensor::scalar(F::lit(1e4)),
        };
        let (a, b) = (leaf(a, vars[0]), leaf(Tensor::scalar(F::lit(1e3)), vars[1]));
        let x = leaf(Tensor::vector(&X.map(F::lit)), vars[2]);
        let y = match beta {
            true => Beta::new(a, b).unwrap().log_prob(x),
            false => Gamma::new(a, b).unwrap().log_prob(x),
        }
        .unwrap();
        values_and_weighted_gradients(y, &[a, b, x])
    }
    for beta in [false, true] {
        for a_per_value in [false, true] {
            for vars in [
                [true, true, true],
                [true, false, false],
                [false, true, true],
            ] {
                let got = eval::<f32>(beta, a_per_value, vars);
                let want = eval::<f64>(beta, a_per_value, vars);
                let case = format!("beta {beta}, a per value {a_per_value}, vars {vars:?}");
                assert_rounded_from_f64(&got, &want, &case);
            }
        }
    }
}

/// The `f32` Gamma and Beta entropies and the Beta divergence through `f64`
/// with a parameter per element, each element's gradient taken from its
/// own partial derivatives: with distinct elements and a weighted sum,
/// the values and gradients are the `f64` ones rounded (an element's
/// gradient mixed with another's would not be).
#[test]
fn f32_entropies_and_beta_divergence_per_element_are_the_f64_ones_rounded() {
    fn eval<F: Element>(which: usize) -> Vec<f64> {
        let tape = Tape::<F>::new();
        let vector = |v: [f64; 3]| tape.var(Tensor::vector(&v.map(F::lit)));
        let (a, b) = (vector([0.5, 3.0, 1e4]), vector([2.0, 1e3, 0.25]));
        let (c, d) = (vector([1.5, 20.0, 0.75]), vector([4.0, 0.5, 64.0]));
        let (y, vars) = match which {
            0 => (Gamma::new(a, b).unwrap().entropy(), vec![a, b]),
            1 => (Beta::new(a, b).unwrap().entropy(), vec![a, b]),
            _ => {
                let (q, p) = (Beta::new(a, b).unwrap(), Beta::new(c, d).unwrap());
                (kl_divergence(&q, &p), vec![a, b, c, d])
            }
        };
        values_and_weighted_gradients(y.unwrap(), &vars)
    }
    for which in 0..3 {
        let (got, want) = (eval::<f32>(which), eval::<f64>(which));
        assert_rounded_from_f64(&got, &want, &format!("case {which}"));
    }
}

/// The Dirichlet divergence in `f32` is the `f64` one rounded, in the rows
/// of the closed form too, which in `f32` lost up to 1.1e-5 where small
/// concentrations are shared (`[3, 30, 2]` against `[1, 1, 1]` was 4.6e-7
/// off), with its gradients.
#[test]
fn dirichlet_kl_in_f32_is_the_f64_value_rounded() {
    fn kl<F: Element>(a: [f64; 3], b: [f64; 3]) -> (f64, Vec<f64>) {
        let tape = Tape::<F>::new();
        let (x, y) = (
            tape.var(Tensor::vector(&a.map(F::lit))),
            tape.var(Tensor::vector(&b.map(F::lit))),
        );
        let kl = kl_divergence(&Dirichlet::new(x).unwrap(), &Dirichlet::new(y).unwrap()).unwrap();
        let g = kl.backward().unwrap();
        let grads = [x, y].into_iter().flat_map(|v| {
            g.get(v)
                .unwrap()
                .data()
                .iter()
                .map(|d| d.to_f64().unwrap())
                .collect::<Vec<_>>()
        });
        (kl.item().unwrap().to_f64().unwrap(), grads.collect())
    }
    let within =
        |got: f64, want: f64| (got - want).abs() <= 2.0 * f64::from(f32::EPSILON) * want.abs();
    for (a, b) in [
        ([3.0, 30.0, 2.0], [1.0, 1.0, 1.0]),
        ([0.01, 0.02, 5.0], [0.01, 0.02, 4.0]),
        ([1e6, 15.0, 1.0], [500.0, 0.7, 2.0]),
        ([0.3, 0.8, 2.0], [2.0, 5.0, 1.0]),
    ] {
        let (a, b) = (
            a.map(|c: f64| f64::from(c as f32)),
            b.map(|c: f64| f64::from(c as f32)),
        );
        let (got, got_grads) = kl::<f32>(a, b);
        let (want, want_grads) = kl::<f64>(a, b);
        assert!(within(got, want), "KL({a:?} || {b:?}): {got} vs {want}");
        for (i, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
            assert!(
                within(*g, *w) || g == w,
                "gradient {i} at {a:?} || {b:?}: {g} vs {w}"
            );
        }
    }
}

/// `values` (a matrix of `cols` columns, row-major) as a variable of
/// `tape` in a layout: `0` a single value (the one at row 13, column 7),
/// `1` a column (each row's first value), else the whole matrix.
fn in_layout<F: Element>(tape: &Tape<F>, values: Vec<F>, cols: usize, layout: usize) -> Var<'_, F> {
    let rows = values.len() / cols;
    tape.var(match layout {
        0 => Tensor::scalar(values[cols * 13 + 7]),
        1 => Tensor::from_fn(&[rows, 1], |r| values[r * cols]),
        _ => Tensor::from_vec(values, &[rows, cols]).unwrap(),
    })
}

/// Weights of `shape` that `f32` holds exactly (multiples of 1/64 from
/// -0.75 to 0.625), so that a weighted gradient in `f32` and in `f64` differ
/// by the roundings of the gradient alone.
fn exact_weights<'t, F: Element>(tape: &'t Tape<F>, shape: &[usize]) -> Var<'t, F> {
    tape.constant(Tensor::from_fn(shape, |i| {
        F::lit(((i * 13) % 89) as f64 / 64.0 - 0.75)
    }))
}

/// The `f32` Gamma, Beta and Student-t log-densities and the Gamma
/// entropy, computed in `f64` eight positions at a time with their partial
/// derivatives, over 6 000 positions (two threads' halves, many groups of
/// eight with a short last one) that mix the forms each chooses between
/// (the Gamma's stable form where `a >= 10` and `b x` is near `a`; the
/// entropy's large form where `a >= 10`), with single parameters,
/// parameters per row, and parameters per value: the values and every
/// gradient are the `f64` ones rounded.
#[test]
fn f32_densities_in_lanes_are_the_f64_values_rounded_in_every_layout() {
    const ROWS: usize = 60;
    const COLS: usize = 100;
    /// The parameters and the point at position `i` (`row` its row), as
    /// f32 holds them.
    fn at(family: usize, i: usize, row: usize) -> [f64; 4] {
        let f = |v: f64| f64::from(v as f32);
        let a = [1e-3, 0.4, 1.0, 2.5, 9.5, 10.0, 37.0, 1e4][row % 8];
        let b = [0.5, 1.0, 3.0, 1e3][(row / 8) % 4];
        let u = ((i * 37) % 101) as f64 / 101.0 + 0.004; // in (0, 1)
        match family {
            // x from a tenth of the mean to ten times it: near and far
            0 => [f(a), f(b), f(a / b * (0.1 + 10.0 * u * u)), 0.0],
            1 => [f(a.min(1e3)), f(b), f(u), 0.0],
            2 => [f(a + 0.5), f(b - 2.0), f(b * 0.7), f(8.0 * u - 4.0)],
            // the Gamma entropy: a concentration per row (1e12 for 1e4: at
            // 1e12 the direct sum in f64 keeps about 4 of its 16 digits,
            // at 1e4 enough for f32), rates per value
            _ => {
                let a = if a > 1e3 { 1e12 } else { a };
                [f(a * (1.0 + 0.01 * u)), f(b * (0.5 + u)), 0.0, 0.0]
            }
        }
    }
    fn eval<F: Element>(family: usize, layout: usize) -> Vec<f64> {
        let tape = Tape::<F>::new();
        let n = ROWS * COLS;
        let values =
            |k: usize| -> Vec<F> { (0..n).map(|i| F::lit(at(family, i, i / COLS)[k])).collect() };
        let param = |k: usize| in_layout(&tape, values(k), COLS, layout);
        let point = |k: usize| in_layout(&tape, values(k), COLS, 2);
        let (y, vars) = match family {
            0 => {
                let (a, b, x) = (param(0), param(1), point(2));
                (Gamma::new(a, b).unwrap().log_prob(x), vec![a, b, x])
            }
            1 => {
                let (a, b, x) = (param(0), param(1), point(2));
                (Beta::new(a, b).unwrap().log_prob(x), vec![a, b, x])
            }
            2 => {
                let (df, loc, scale, x) = (param(0), param(1), param(2), point(3));
                let y = StudentT::new(df, loc, scale).unwrap().log_prob(x);
                (y, vec![df, loc, scale, x])
            }
            _ => {
                let (a, b) = (param(0), point(1));
                (Gamma::new(a, b).unwrap().entropy(), vec![a, b])
            }
        };
        let y = y.unwrap();
        let w = exact_weights(&tape, &[ROWS, COLS]);
        values_and_gradients_weighted_by(y, &vars, w)
    }
    for family in 0..4 {
        for layout in 0..3 {
            let (got, want) = (eval::<f32>(family, layout), eval::<f64>(family, layout));
            assert_rounded_from_f64(&got, &want, &format!("family {family}, layout {layout}"));
        }
    }
}

/// The rows and columns of the divergence tests in lanes.
const KL_ROWS: usize = 60;
/// See [`KL_ROWS`].
const KL_COLS: usize = 100;

/// Over `KL_ROWS × KL_COLS` positions whose parameters are `at(i, row)`
/// (`q`'s, then as many of `p`'s), the `f32` divergence of `family` (0
/// Gamma, 1 Beta, 2 Bernoulli by its logits) from `q` to `p` is the `f64`
/// one rounded, values and every gradient, with the prior's parameters
/// single, per row and per value, and `q`'s single against a prior per
/// value.
fn assert_kl_rounded_from_f64_in_every_layout(family: usize, at: fn(usize, usize) -> Vec<f64>) {
    fn eval<F: Element>(
        family: usize,
        at: fn(usize, usize) -> Vec<f64>,
        layout: usize,
    ) -> Vec<f64> {
        let tape = Tape::<F>::new();
        let n = KL_ROWS * KL_COLS;
        let values =
            |k: usize| -> Vec<F> { (0..n).map(|i| F::lit(at(i, i / KL_COLS)[k])).collect() };
        let param = |k: usize, how: usize| in_layout(&tape, values(k), KL_COLS, how);
        let (q_how, p_how) = [(2, 0), (2, 1), (2, 2), (0, 2)][layout];
        let side = at(0, 0).len() / 2;
        let q: Vec<_> = (0..side).map(|k| param(k, q_how)).collect();
        let p: Vec<_> = (side..2 * side).map(|k| param(k, p_how)).collect();
        let y = match family {
            0 => kl_divergence(
                &Gamma::new(q[0], q[1]).unwrap(),
                &Gamma::new(p[0], p[1]).unwrap(),
            ),
            1 => kl_divergence(
                &Beta::new(q[0], q[1]).unwrap(),
                &Beta::new(p[0], p[1]).unwrap(),
            ),
            _ => kl_divergence(
                &Bernoulli::from_logits(q[0]).unwrap(),
                &Bernoulli::from_logits(p[0]).unwrap(),
            ),
        };
        let w = exact_weights(&tape, &[KL_ROWS, KL_COLS]);
        values_and_gradients_weighted_by(y.unwrap(), &[q, p].concat(), w)
    }
    for layout in 0..4 {
        let (got, want) = (
            eval::<f32>(family, at, layout),
            eval::<f64>(family, at, layout),
        );
        assert_rounded_from_f64(&got, &want, &format!("family {family}, layout {layout}"));
    }
}

/// The `f32` Gamma divergence, computed in `f64` eight positions at a time
/// with its partial derivatives, over 6 000 positions that mix its forms
/// (a concentration of `q` below and above 10, one of `p` below and above
/// it, rates near each other and far apart, `|δ|` below 1e-3), with the
/// prior's parameters single, per row and per value, and `q`'s single
/// against a prior per value: the values and every gradient are the `f64`
/// ones rounded.
#[test]
fn f32_gamma_kl_in_lanes_is_the_f64_value_rounded_in_every_layout() {
    /// `[a1, b1, a2, b2]` at position `i` (`row` its row), as f32 holds
    /// them.
    fn at(i: usize, row: usize) -> Vec<f64> {
        let f = |v: f64| f64::from(v as f32);
        let u = ((i * 37) % 101) as f64 / 101.0;
        let a1 = [1e-3, 0.4, 1.0, 2.5, 9.5, 10.0, 37.0, 1e4, 3e7][(i * 7) % 9] * (1.0 + 0.1 * u);
        let b1 = [0.5, 1.0, 3.0, 1e3][(i / 3) % 4];
        let a2 = [0.1, 1.0, 2.0, 9.99, 12.0, 500.0, 1e4, 2.9e7][row % 8] * (1.0 + 0.3 * u);
        let ratio = [1.0, 1.0 + 2e-4, 0.7, 5.0, 1e-3, 40.0][(row / 8 + i) % 6];
        vec![f(a1), f(b1), f(a2), f(b1 * ratio)]
    }
    assert_kl_rounded_from_f64_in_every_layout(0, at);
}

/// The `f32` Bernoulli divergence, computed in `f64` eight positions at a
/// time with its partial derivatives, over 6 000 positions whose logits
/// take each of its forms (equal and nearly equal logits, far apart, on
/// both sides of 0, and `q`'s far below `p`'s, where `e^-d` overflows),
/// with the prior's logit single, per row and per value, and `q`'s single
/// against a prior per value: the values and both gradients are the `f64`
/// ones rounded.
#[test]
fn f32_bernoulli_kl_in_lanes_is_the_f64_value_rounded_in_every_layout() {
    /// `[a, b]`, the logits of `q` and `p` at position `i` (`row` its
    /// row), as f32 holds them.
    fn at(i: usize, row: usize) -> Vec<f64> {
        let f = |v: f64| f64::from(v as f32);
        let u = ((i * 37) % 101) as f64 / 101.0;
        let a = [
            -100.0, -30.0, -5.0, -1.0, -1e-3, 0.0, 2e-4, 0.7, 3.0, 17.0, 40.0, -3e30,
        ][i % 12]
            * (1.0 + 0.1 * u);
        let offset = [0.0, 1e-6, -3e-5, 5e-3, -0.3, 2.0, -15.0, 60.0, 1e31][(row + i / 12) % 9];
        vec![f(a), f(f(a) + offset)]
    }
    assert_kl_rounded_from_f64_in_every_layout(2, at);
}

/// The `f32` Beta divergence, computed in `f64` eight positions at a time
/// where `q`'s concentrations sum below 10 (and neither pair is far
/// smaller than the other), on an `f64` tape of its own at the other
/// positions, over 6 000 positions that mix both (large and tiny
/// concentrations, equal ones, a prior far from `q`), with the prior's
/// parameters single, per row and per value, and `q`'s single against a
/// prior per value: the values and every gradient are the `f64` ones
/// rounded.
#[test]
fn f32_beta_kl_in_lanes_is_the_f64_value_rounded_in_every_layout() {
    /// `[a1, b1, a2, b2]` at position `i` (`row` its row), as f32 holds
    /// them.
    fn at(i: usize, row: usize) -> Vec<f64> {
        let f = |v: f64| f64::from(v as f32);
        let u = ((i * 37) % 101) as f64 / 101.0;
        // every third group of eight positions (as the lanes take them)
        // has one kind of posterior, so that some groups are all large
        let kind = match (i / 8) % 3 {
            0 => (i / 8 * 7) % 11,
            _ => (i * 7) % 11,
        };
        let q = [
            (0.3, 0.6),
            (1.0, 1.0),
            (2.5, 4.0),
            (0.05, 3.0),
            (4.0, 5.5),
            (1e-3, 0.02),
            (50.0, 30.0),
            (3.0, 0.1),
            (1e4, 2.0),
            (1e8, 1e8),
            (1e-10, 3.0),
        ][kind];
        let (a1, b1) = (q.0 * (1.0 + 0.1 * u), q.1 * (1.0 + 0.2 * u));
        // priors near the large posteriors too, where the large forms'
        // terms are small and cancel, and priors with one small
        // concentration and a large sum
        let p = [
            (1.0, 1.0),
            (0.5, 0.5),
            (2.0, 3.0),
            (30.0, 0.7),
            (1e-2, 4.0),
            (2e5, 1e5),
            (1e-10, 1.0),
            (50.0, 30.0),
            (1e4, 2.0),
            (1.05e8, 1e8),
            // one concentration small, their sum large
            (2.0, 40.0),
            (40.0, 2.0),
        ];
        let (a2, b2) = p[(row + i / 11) % p.len()];
        // some priors equal to q, where the divergence and its gradient are
        // 0 (of the forms in lanes: the tape's forms elsewhere leave
        // rounding noise there, of other bits in a tensor of other
        // positions)
        let equal = (row + i).is_multiple_of(17) && kind < 3;
        let (a2, b2) = if equal { (a1, b1) } else { (a2, b2) };
        vec![f(a1), f(b1), f(a2), f(b2)]
    }
    assert_kl_rounded_from_f64_in_every_layout(1, at);
}

/// Single parameters give every value the bits that the same parameters
/// repeated per value give (the value and the value's gradient), at every
/// length around the groups the formulas take positions in (eight, and two
/// groups at a time where the parameters are single) and the halves that
/// long inputs are split into: the Gamma, Beta and Student-t
/// log-densities and the Gamma entropy with a single concentration.
#[test]
fn single_parameters_give_the_bits_of_parameters_per_value_at_every_length() {
    /// The values and the gradient in `x`, with parameters `params` single
    /// or repeated over the `n` values.
    fn eval(which: usize, params: &[f64], n: usize, per_value: bool) -> Vec<u32> {
        let tape = Tape::<f32>::new();
        let param = |p: f64| match per_value {
            true => tape.constant(Tensor::from_fn(&[n], |_| p as f32)),
            false => tape.constant(Tensor::scalar(p as f32)),
        };
        let x = tape.var(Tensor::from_fn(&[n], |i| match which {
            1 => ((i % 17) + 1) as f32 / 19.0,
            2 => (i % 23) as f32 * 0.41 - 4.0,
            _ => 0.1 + (i % 13) as f32 * 0.37,
        }));
        let y = match which {
            0 => Gamma::new(param(params[0]), param(params[1]))
                .unwrap()
                .log_prob(x),
            1 => Beta::new(param(params[0]), param(params[1]))
                .unwrap()
                .log_prob(x),
            2 => StudentT::new(param(params[0]), param(params[1]), param(params[2]))
                .unwrap()
                .log_prob(x),
            // the entropy of Gamma(a, x): `a` single, the rates per value
            _ => Gamma::new(param(params[0]), x).unwrap().entropy(),
        }
        .unwrap();
        let g = y.sum().backward().unwrap();
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut out = bits(&y.value());
        out.extend(bits(g.get(x).expect("a gradient in x")));
        out
    }
    let cases: [&[f64]; 4] = [&[2.5, 1.5], &[2.0, 3.0], &[4.0, 0.5, 1.5], &[0.75]];
    for (which, params) in cases.into_iter().enumerate() {
        for n in [
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            24,
            31,
            32,
            33,
            47,
            4096,
            4096 + 17,
            5000 + 3,
        ] {
            let single = eval(which, params, n, false);
            let per_value = eval(which, params, n, true);
            assert!(single == per_value, "formula {which}, {n} values");
        }
    }
}

/// Beta divergences where a sum of one distribution's concentrations
/// rounds (a concentration below the other's last digits) and the other
/// distribution's is far from it: what the smaller term adds to the
/// terms of the sums is then of the size of the divergence, and the
/// slopes cancel terms far larger than themselves. The general form
/// (`KL(Beta(1000, 1e20) || Beta(1e-300, 1000))` came out 1000 where it
/// is 692.81, `KL(Beta(1000, 1e150) || Beta(0.5, 1e300))` 1000 where it
/// is 1e153, with a slope in `1e150` of -5e-151 for -1000) and the form by
/// parts (`KL(Beta(1e-20, 1e-3) || Beta(1e-3, 1e150))` 1e133 where it is
/// 1.0000016e136, its slope in `1e-3` -1e136 for -2e139) both missed it.
/// Against mpmath at 400 digits, the inputs as floats; the slope in `b1`
/// of the third case (-1e-34, where its terms are of the size of 1e-17)
/// to 1e-31.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn beta_divergence_where_a_sum_of_concentrations_rounds() {
    type Case = ([f64; 4], f64, [f64; 4]);
    // ([a1, b1, a2, b2], KL, its slopes in a1, b1, a2, b2)
    let cases: [Case; 5] = [
        (
            [1e-20, 1e-3, 1e-3, 1e150],
            1.0000016425331957433e+136,
            [
                1.0000016425331957882e+156,
                -2.0000000023976319868e+139,
                1.0000000000000000314e+20,
                1.0000016425331957625e-14,
            ],
        ),
        (
            [1e-20, 0.5, 0.5, 1e150],
            4.9348022005446789441e+130,
            [
                4.9348022005446792147e+150,
                -1.682879664423431875e+131,
                1.0000000000000000514e+20,
                4.9348022005446790387e-20,
            ],
        ),
        (
            [1000.0, 1e20, 1e-300, 1000.0],
            6.928103003378445554e+2,
            [
                5.0016666663334335214e-4,
                -9.9949999999999999001e-35,
                -9.9999999999999997494e+299,
                9.99999999999999995e-18,
            ],
        ),
        (
            [1000.0, 1e150, 0.5, 1e300],
            1.0000000000000000717e+153,
            [
                1.0000000000000000717e+150,
                -1.0000000000000000908e+3,
                -3.5425852917077708821e+2,
                1.0000000000000000192e-147,
            ],
        ),
        (
            [1000.0, 1e20, 0.5, 1e300],
            1.0000000000000000475e+283,
            [
                1.0000000000000000425e+280,
                -1.0000000000000000425e+263,
                -6.535945912600030271e+2,
                9.99999999999999995e-18,
            ],
        ),
    ];
    for (k, (inputs, want, want_slopes)) in cases.into_iter().enumerate() {
        let tape = Tape::<f64>::new();
        let v = inputs.map(|x| tape.var(Tensor::scalar(x)));
        let q = Beta::new(v[0], v[1]).unwrap();
        let kl = kl_divergence(&q, &Beta::new(v[2], v[3]).unwrap()).unwrap();
        let got = kl.item().unwrap();
        assert!(close(got, want, 1e-9), "{inputs:?}: KL {got:e} vs {want:e}");
        let g = kl.backward().unwrap();
        for (j, want) in want_slopes.into_iter().enumerate() {
            let got = g.get(v[j]).unwrap().item().unwrap();
            let ok = match (k, j) {
                (2, 1) => (got - want).abs() <= 1e-31,
                _ => close(got, want, 1e-9),
            };
            assert!(ok, "{inputs:?}: slope {j} {got:e} vs {want:e}");
        }
    }
}

/// The Gamma divergence's slope in `q`'s rate where `p`'s rate is below
/// the last digits of `q`'s: `-a1 b2 / b1²` came out of `(b2 - b1) / b1`,
/// which drops `b2` there, so that the slope in `b1` was the other term's
/// alone (1e-20 for -5e-11 at `KL(Gamma(0.5, 1e-10) || Gamma(1e-30,
/// 1e-30))`). Against mpmath at 100 digits, the inputs as floats.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn gamma_divergence_slope_in_the_rate_where_the_rates_are_far_apart() {
    type Case = ([f64; 4], f64, [f64; 4]);
    let cases: [Case; 2] = [
        (
            [0.5, 1e-10, 1e-30, 1e-30],
            6.702343283388595861e+1,
            [
                1.4674011002723396547,
                -4.9999999990000000524e-11,
                -9.9999999999999991666e+29,
                4.9999999989999998178e+9,
            ],
        ),
        (
            [2.0, 1.0, 1e-300, 1e-20],
            6.8962109656841063946e+2,
            [
                2.8986813369645287295e-1,
                -1.9999999999999998903e-20,
                -9.9999999999999997494e+299,
                2.0,
            ],
        ),
    ];
    for (inputs, want, want_slopes) in cases {
        let tape = Tape::<f64>::new();
        let v = inputs.map(|x| tape.var(Tensor::scalar(x)));
        let q = Gamma::new(v[0], v[1]).unwrap();
        let kl = kl_divergence(&q, &Gamma::new(v[2], v[3]).unwrap()).unwrap();
        let got = kl.item().unwrap();
        assert!(
            close(got, want, 1e-12),
            "{inputs:?}: KL {got:e} vs {want:e}"
        );
        let g = kl.backward().unwrap();
        for (j, want) in want_slopes.into_iter().enumerate() {
            let got = g.get(v[j]).unwrap().item().unwrap();
            assert!(
                close(got, want, 1e-12),
                "{inputs:?}: slope {j} {got:e} vs {want:e}"
            );
        }
    }
}

/// Gumbel and Weibull divergences where the ratio of the scales (of the
/// concentrations, for the Weibull) is below the normal floats: `ln r` is
/// taken from the two logarithms (as a logarithm of a subnormal `r` it
/// kept about 4 digits: the divergence came out 1.5e-8 of itself off), and
/// the slope through `1/r` is `-1/s1` (it overflowed to `-inf`, and to
/// NaN through the Weibull's `r ∂r`). Against the closed forms, whose
/// other terms vanish here.
#[test]
fn gumbel_and_weibull_divergences_at_subnormal_ratios() {
    let euler = 0.577_215_664_901_532_9;
    let (s1, s2) = (1e-300, 1e20);
    let tape = Tape::<f64>::new();
    let v = [0.0, s1, 0.0, s2].map(|x| tape.var(Tensor::scalar(x)));
    let kl = kl_divergence(
        &Gumbel::new(v[0], v[1]).unwrap(),
        &Gumbel::new(v[2], v[3]).unwrap(),
    )
    .unwrap();
    // -γ - ln r + expm1(ln Γ(1 + r)), the last about -γ r
    let (got, want) = (kl.item().unwrap(), (s2.ln() - s1.ln()) - euler);
    assert!(close(got, want, 1e-14), "{got:e} vs {want:e}");
    let g = kl.backward().unwrap();
    let ds1 = g.get(v[1]).unwrap().item().unwrap();
    assert!(close(ds1, -1.0 / s1, 1e-14), "{ds1:e}");

    let (k1, k2) = (1e300, 1e-20);
    let tape = Tape::<f64>::new();
    let v = [k1, 1.0, k2, 1.0].map(|x| tape.var(Tensor::scalar(x)));
    let kl = kl_divergence(
        &Weibull::new(v[0], v[1]).unwrap(),
        &Weibull::new(v[2], v[3]).unwrap(),
    )
    .unwrap();
    let (got, want) = (kl.item().unwrap(), (k1.ln() - k2.ln()) - euler);
    assert!(close(got, want, 1e-14), "{got:e} vs {want:e}");
    let g = kl.backward().unwrap();
    let [dk1, dk2] = [v[0], v[2]].map(|x| g.get(x).unwrap().item().unwrap());
    assert!(close(dk1, 1.0 / k1, 1e-12), "{dk1:e}");
    assert!(close(dk2, -1.0 / k2, 1e-12), "{dk2:e}");
}

/// Each of `got` within `tol` relative of `want` (`what` names the case).
fn all_close<const N: usize>(what: &str, got: [f64; N], want: [f64; N], tol: f64) {
    for (g, w) in got.iter().zip(&want) {
        assert!(close(*g, *w, tol), "{what}: {got:?} vs {want:?}");
    }
}

/// Cauchy and half-Cauchy log-densities and divergences in `f64` where
/// `z = (x - loc) / scale` (the scaled differences `u`, `v` of the
/// divergence) overflow but their logarithms do not: the log-density was
/// `-inf` with a NaN slope in the scale, the divergence `+inf` with NaN
/// slopes. Against mpmath (50 digits); each slope is the leading term of
/// its closed form, the rest below `1e-300` of it.
#[test]
#[allow(clippy::excessive_precision)]
fn cauchy_logarithms_of_quantities_beyond_f64() {
    let (value, slopes) = value_and_slopes::<f64, _>([0.0, -1e300, 1e-300], |[x, m, s]| {
        Cauchy::new(m, s)?.log_prob(x)
    });
    all_close(
        "Cauchy log-density",
        [value],
        [-2_073.471_313_580_490_5],
        1e-15,
    );
    // -2/d, 2/d and 1/s with d = x - loc
    all_close("its slopes", slopes, [-2e-300, 2e-300, 1e300], 1e-14);
    let (value, slopes) =
        value_and_slopes::<f64, _>([1e-300, 1e10], |[s, x]| HalfCauchy::new(s)?.log_prob(x));
    all_close(
        "half-Cauchy log-density",
        [value],
        [-737.278_812_463_384_07],
        1e-15,
    );
    all_close("its slopes", slopes, [1e300, -2e-10], 1e-14);
    let (value, slopes) =
        value_and_slopes::<f64, _>([-1e300, 1e-300, 0.5, 1e-150], |[m1, s1, m2, s2]| {
            kl_divergence(&Cauchy::new(m1, s1)?, &Cauchy::new(m2, s2)?)
        });
    all_close(
        "Cauchy divergence",
        [value],
        [2_416.328_053_282_628_1],
        1e-15,
    );
    // 2 Δ / Δ² = -2 / |Δ| in m1, -1/s1 and -1/s2 in the scales
    all_close(
        "its slopes",
        slopes,
        [-2e-300, -1e300, 2e-300, -1e150],
        1e-14,
    );
    let (value, slopes) = value_and_slopes::<f64, _>([1e-300, 1e20], |[s1, s2]| {
        kl_divergence(&HalfCauchy::new(s1)?, &HalfCauchy::new(s2)?)
    });
    // ln((s1 + s2)² / (4 s1 s2)) = ln(s2 / s1) - ln 4 + 2 ln(1 + s1/s2)
    let want = (1e20f64.ln() - 1e-300f64.ln()) - 4f64.ln();
    all_close("half-Cauchy divergence", [value], [want], 1e-15);
    all_close("its slopes", slopes, [-1e300, 1e-20], 1e-14);
}

/// The Laplace divergence where `|m1 - m2| / b1` overflows: its term `r
/// (e^-x - 1 + x)` is `d / b2 - r` (it was `0 · inf`, NaN, at `r = 0`) and
/// the slope in `b1` through `c (1 + x)` is `-1/b1` (NaN at a finite
/// value). The closed form `ln(b2 / b1) + d / b2 + r e^-x - 1`, whose `r
/// e^-x` is 0 here.
#[test]
fn laplace_divergence_where_the_scaled_distance_overflows() {
    for (m2, b2) in [(-1e30, 0.5), (-1e30, 1e30)] {
        let (m1, b1) = (-1e300, 1e-300);
        let (value, slopes) = value_and_slopes::<f64, _>([m1, b1, m2, b2], |[m1, b1, m2, b2]| {
            kl_divergence(&Laplace::new(m1, b1)?, &Laplace::new(m2, b2)?)
        });
        let d: f64 = m2 - m1;
        let want = (b2.ln() - b1.ln()) + d / b2 - 1.0;
        all_close("Laplace divergence", [value], [want], 1e-15);
        let slopes_want = [-1.0 / b2, -1.0 / b1, 1.0 / b2, (1.0 - d / b2) / b2];
        all_close("its slopes", slopes, slopes_want, 1e-15);
    }
}

/// The normal (and half-normal) divergence between near-equal scales
/// keeps its relative accuracy: `r² - 1` and `2 ln r` cancel there to
/// about `t²` (`t = r - 1`), and their roundings left a relative error of
/// up to about `ε / |t|` in the value and in the scales' slopes (2.5e-9
/// of the value at `t = 2⁻²⁶`). Against mpmath (60 digits) at the same `f64`
/// inputs `[mq, sq, mp, sp]`.
#[test]
#[allow(clippy::excessive_precision)]
fn normal_divergence_between_near_equal_scales() {
    let cases = [
        (
            [0.0, 1.0 + 2f64.powi(-26), 0.0, 1.0],
            2.220_446_038_221_238_370_1e-16,
            [
                2.980_232_216_565_071_088_4e-8,
                -2.980_232_260_973_991_742_5e-8,
            ],
        ),
        (
            [3e-9, 0.7, 0.0, 0.7 * (1.0 + 1e-7)],
            1.000_918_201_029_942_357_4e-14,
            [
                -2.857_142_429_333_373_272_1e-7,
                2.857_142_143_356_768_242_2e-7,
            ],
        ),
        (
            [0.0, 1.995_262_265_205_383_3, 0.0, 2.0],
            5.615_971_625_627_346_363_5e-6,
            [
                -0.002_371_679_825_951_885_755_4,
                0.002_366_061_630_935_334_392_2,
            ],
        ),
    ];
    for (at, want, [dsq, dsp]) in cases {
        let (value, slopes) = value_and_slopes::<f64, _>(at, |[mq, sq, mp, sp]| {
            kl_divergence(&Normal::new(mq, sq)?, &Normal::new(mp, sp)?)
        });
        all_close(
            &format!("normal divergence at {at:?}"),
            [value],
            [want],
            1e-14,
        );
        all_close(
            &format!("its scales' slopes at {at:?}"),
            [slopes[1], slopes[3]],
            [dsq, dsp],
            1e-14,
        );
    }
    let (value, slopes) = value_and_slopes::<f64, _>([1.995_262_265_205_383_3, 2.0], |[q, p]| {
        kl_divergence(&HalfNormal::new(q)?, &HalfNormal::new(p)?)
    });
    all_close(
        "half-normal divergence",
        [value],
        [5.615_971_625_627_346_363_5e-6],
        1e-14,
    );
    all_close(
        "its slopes",
        slopes,
        [
            -0.002_371_679_825_951_885_755_4,
            0.002_366_061_630_935_334_392_2,
        ],
        1e-14,
    );
}

/// Finite-difference checks of the Bernoulli and geometric quantities
/// computed from the probabilities they were built from (not from their
/// log-odds): log-masses, entropies, means, variances and divergences.
#[test]
fn gradcheck_distributions_built_from_probabilities() {
    /// Quantity `k` of `d` (entropy, mean, variance; a divergence from
    /// `other` for 3).
    fn quantity<'t, D: Distribution<'t, f64>>(k: usize, d: D, other: D) -> Result<Var<'t, f64>> {
        match k {
            0 => d.entropy(),
            1 => d.mean(),
            2 => d.variance(),
            _ => kl_divergence(&d, &other),
        }
    }
    let probs = || v(&[0.02, 0.3, 0.55, 0.9]);
    let others = || v(&[0.05, 0.25, 0.6, 0.8]);
    gc(
        "Bernoulli log-mass",
        |t, a| {
            let x = t.constant(v(&[0.0, 1.0, 1.0, 0.0]));
            Bernoulli::from_probs(a[0])?.log_prob(x)
        },
        &[probs()],
    );
    gc(
        "geometric log-mass",
        |t, a| {
            let k = t.constant(v(&[0.0, 2.0, 7.0, 1.0]));
            Geometric::from_probs(a[0])?.log_prob(k)
        },
        &[probs()],
    );
    for (k, what) in ["entropy", "mean", "variance", "divergence"]
        .iter()
        .enumerate()
    {
        gc(
            &format!("Bernoulli {what}"),
            |_, a| {
                quantity(
                    k,
                    Bernoulli::from_probs(a[0])?,
                    Bernoulli::from_probs(a[1])?,
                )
            },
            &[probs(), others()],
        );
        gc(
            &format!("geometric {what}"),
            |_, a| {
                quantity(
                    k,
                    Geometric::from_probs(a[0])?,
                    Geometric::from_probs(a[1])?,
                )
            },
            &[probs(), others()],
        );
    }
    // (the two families have no closed-form entropy, nor the negative
    // binomial a divergence)
    let counts = || v(&[3.0, 8.0, 1.0, 20.0]);
    for (k, what) in [(1, "mean"), (2, "variance"), (3, "divergence")] {
        gc(
            &format!("binomial {what}"),
            |t, a| {
                let n = t.constant(counts());
                quantity(
                    k,
                    Binomial::from_probs(n, a[0])?,
                    Binomial::from_probs(n, a[1])?,
                )
            },
            &[probs(), others()],
        );
    }
    for (k, what) in [(1, "mean"), (2, "variance")] {
        gc(
            &format!("negative binomial {what}"),
            |_, a| {
                let d = NegativeBinomial::from_probs(a[0], a[1])?;
                if k == 1 { d.mean() } else { d.variance() }
            },
            &[v(&[0.5, 2.5, 7.0, 1.0]), probs()],
        );
    }
}
