//! Distributions and divergences: TFP reference values (gradients included),
//! gradchecks, properties, extreme values, bad inputs, divergence nodes.

#[path = "common/tfp_cases.rs"]
mod tfp_cases;

use bayesgrad::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Every case of a reference file (`count` of them, none skipped, at least
/// `least` of each kind) passes, each kind within `bound(kind)`.
fn every_reference_case_matches(text: &str, count: usize, least: usize, bound: fn(&str) -> f64) {
    let doc = crate::json::parse(text.as_bytes()).unwrap();
    let tfp_cases::Evaluation { results, skipped } = tfp_cases::evaluate_all(&doc).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(results.len(), count);
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("case {} {}: {}", r.index, r.kind, r.detail))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    for (kind, (worst, passed, failed)) in tfp_cases::summarize(&results) {
        assert!(passed >= least && failed == 0, "{kind}");
        assert!(worst <= bound(&kind), "{kind}: worst {worst}");
    }
}

#[test]
fn every_tfp_reference_case_matches() {
    let text = include_str!("data/tfp_golden.json");
    every_reference_case_matches(text, 102, 1, |kind| match kind {
        "normal_vs_spike_slab_kl" => tfp_cases::MC_SIGMAS,
        _ => tfp_cases::RTOL,
    });
}

/// Every case of the families reference: value and every gradient at 1e-9
/// relative (implicit-reparameterization derivatives, against 50-digit
/// values, at 5e-14), none skipped.
#[test]
fn every_family_reference_case_matches() {
    let text = include_str!("data/tfp_golden_families.json");
    every_reference_case_matches(text, 310, 8, |kind| match kind.ends_with("implicit_grad") {
        true => tfp_cases::IMPLICIT_RTOL,
        false => tfp_cases::RTOL,
    });
}

/// Every case of the 50-digit reference for what TFP's files do not hold
/// (the KL pairs of Uniform, Poisson, LogitNormal, Exponential against
/// Gamma and back, Normal against Laplace, Kumaraswamy against Beta, Beta
/// against Beta at concentrations from 1e-100 to 1e100, Binomial against
/// Binomial; the Cauchy, HalfCauchy, HalfNormal, Gumbel, Weibull,
/// Pareto, Kumaraswamy, inverse Gamma, geometric and von Mises densities, entropies
/// and KLs, the Weibull's, Pareto's, Kumaraswamy's and von Mises' moments, the von Mises
/// draws' implicit derivatives (at 5e-14); the negative binomial and binomial
/// masses to counts of 1e14; the Student-t density far in its tails, at degrees
/// of freedom from 1e-300 to 1e305): value and gradients at 1e-9 relative.
#[test]
fn every_mpmath_reference_case_matches() {
    let text = include_str!("data/mpmath_reference.json");
    every_reference_case_matches(text, 394, 4, |_| tfp_cases::RTOL);
}

/// Every case of the divergences between nearly equal distributions (the
/// second's parameters the first's moved by 1e-12 to 1e-1 of themselves,
/// 17 families and the Dirichlet over three categories): value and
/// gradients within 1e-9 relative, or where that
/// is beyond what rounding the parameters alone does to them, within
/// `COND_ULPS` units of 2⁻⁵² per unit of their condition number. (The worst
/// relative error is then up to about 1e-4 and bounded case by case, not
/// by kind.)
#[test]
fn every_near_divergence_case_matches() {
    let text = include_str!("data/near_reference.json");
    every_reference_case_matches(text, 143, 7, |_| f64::INFINITY);
}

/// Every case of the divergences whose second distribution has every
/// parameter of the first times one factor (Beta, Dirichlet over three
/// categories, Gamma, inverse Gamma; concentrations from 0.1 to 1e300, the
/// factor from `e^-5` to `e^5`): value and gradients within 1e-9
/// relative, or within `COND_ULPS` units of 2⁻⁵² per unit of their
/// condition number where that is more.
#[test]
fn every_scaled_divergence_case_matches() {
    let text = include_str!("data/scaled_reference.json");
    every_reference_case_matches(text, 80, 20, |_| f64::INFINITY);
}

fn gc<Fun>(name: &str, f: Fun, inputs: &[Tensor<f64>])
where
    Fun: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>,
{
    gradcheck(f, inputs, &GradCheck::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn v(x: &[f64]) -> Tensor<f64> {
    Tensor::vector(x)
}

#[test]
fn gradcheck_log_probs_wrt_value_and_parameters() {
    // scalar parameters and a constant x take a specialized path in the fused op
    gc(
        "normal scalar params, constant x",
        |t, a| {
            let x = t.constant(Tensor::from_vec(vec![0.3, -1.2, 2.5, 0.0], &[2, 2])?);
            Normal::new(a[0], a[1])?.log_prob(x)
        },
        &[Tensor::scalar(0.4), Tensor::scalar(1.7)],
    );
    gc(
        "normal kl vs scalar prior",
        |t, a| {
            kl_divergence(
                &Normal::new(a[0], a[1])?,
                &Normal::new(t.scalar(0.2), t.scalar(1.5))?,
            )
        },
        &[v(&[0.3, -1.0, 0.8]), v(&[0.7, 2.0, 0.05])],
    );
    gc(
        "normal",
        |_, a| Normal::new(a[0], a[1])?.log_prob(a[2]),
        &[v(&[0.3, -1.0]), v(&[0.7, 2.0]), v(&[1.1, -0.4])],
    );
    gc(
        "categorical",
        |_, a| Categorical::from_logits(a[0])?.log_prob_labels(&[2, 0]),
        &[Tensor::from_vec(vec![0.1, -0.5, 1.2, 2.0, 0.3, -1.0], &[2, 3]).unwrap()],
    );
    gc(
        "categorical probs",
        |_, a| Categorical::from_probs(a[0].softmax(0)?)?.log_prob_labels(&[1]),
        &[v(&[0.2, -0.1, 0.4])],
    );
    gc(
        "bernoulli",
        |t, a| Bernoulli::from_logits(a[0])?.log_prob(t.constant(v(&[1.0, 0.0]))),
        &[v(&[0.4, -1.3])],
    );
    gc(
        "mixture",
        |_, a| MixtureOfNormals::from_logits(a[0], a[1], a[2])?.log_prob(a[3]),
        &[
            v(&[0.2, -0.3, 0.5]),
            v(&[-1.0, 0.0, 2.0]),
            v(&[0.5, 1.0, 1.5]),
            v(&[0.7, -2.0]),
        ],
    );
    // a set of components per value, broadcast against a value with one
    // more axis (its gradients summed over it)
    let t = |v: &[f64], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape).unwrap();
    gc(
        "mixture, a component set per value",
        |_, a| MixtureOfNormals::from_logits(a[0], a[1], a[2])?.log_prob(a[3]),
        &[
            t(&[0.2, -0.3, 0.5, 1.0, 0.0, -1.0], &[2, 3]),
            t(&[-1.0, 0.0, 2.0, 0.5, 0.6, -3.0], &[2, 3]),
            t(&[0.5, 1.0, 1.5, 2.0, 0.4, 0.8], &[2, 3]),
            t(&[0.7, -2.0, 1.5, 0.1, -0.4, 3.0, 2.5, -1.0], &[4, 2]),
        ],
    );
    gc(
        "mixture responsibilities, one set of components",
        |_, a| MixtureOfNormals::from_logits(a[0], a[1], a[2])?.responsibilities(a[3]),
        &[
            v(&[0.2, -0.3, 0.5]),
            v(&[-1.0, 0.0, 2.0]),
            v(&[0.5, 1.0, 1.5]),
            v(&[0.7, -2.0]),
        ],
    );
    gc(
        "mixture responsibilities, a component set per value",
        |_, a| MixtureOfNormals::from_logits(a[0], a[1], a[2])?.responsibilities(a[3]),
        &[
            t(&[0.2, -0.3, 0.5, 1.0, 0.0, -1.0], &[2, 3]),
            t(&[-1.0, 0.0, 2.0, 0.5, 0.6, -3.0], &[2, 3]),
            t(&[0.5, 1.0, 1.5, 2.0, 0.4, 0.8], &[2, 3]),
            t(&[0.7, -2.0, 1.5, 0.1, -0.4, 3.0, 2.5, -1.0], &[4, 2]),
        ],
    );
    // weights shared by the values, locs per value, scales broadcast
    gc(
        "mixture, parameters of mixed shapes",
        |_, a| MixtureOfNormals::from_logits(a[0], a[1], a[2])?.log_prob(a[3]),
        &[
            v(&[0.2, -0.3, 0.5]),
            t(&[-1.0, 0.0, 2.0, 0.5, 0.6, -3.0], &[2, 3]),
            t(&[0.5, 1.0, 1.5], &[1, 3]),
            v(&[0.7, -2.0]),
        ],
    );
    gc(
        "spike and slab",
        |_, a| SpikeAndSlab::new(a[0], a[1], a[2])?.log_prob(a[3]),
        &[
            Tensor::scalar(0.3),
            Tensor::scalar(0.2),
            Tensor::scalar(1.5),
            v(&[0.1, -0.8, 2.5]),
        ],
    );
    gc(
        "independent",
        |_, a| Independent::new(Box::new(Normal::new(a[0], a[1])?), 1)?.log_prob(a[2]),
        &[v(&[0.3, -1.0]), v(&[0.7, 2.0]), v(&[1.1, -0.4])],
    );
}

#[test]
fn gradcheck_entropies_and_moments() {
    gc(
        "normal entropy",
        |_, a| Normal::new(a[0], a[1])?.entropy(),
        &[v(&[0.0]), v(&[0.7, 2.0])],
    );
    gc(
        "categorical entropy",
        |_, a| Categorical::from_logits(a[0])?.entropy(),
        &[v(&[0.3, -1.0, 2.0])],
    );
    gc(
        "bernoulli entropy",
        |_, a| Bernoulli::from_logits(a[0])?.entropy(),
        &[v(&[0.3, -1.0])],
    );
    gc(
        "bernoulli variance",
        |_, a| Bernoulli::from_logits(a[0])?.variance(),
        &[v(&[0.3, -1.0])],
    );
    gc(
        "mixture variance",
        |_, a| MixtureOfNormals::from_logits(a[0], a[1], a[2])?.variance(),
        &[v(&[0.2, -0.3]), v(&[-1.0, 2.0]), v(&[0.5, 1.5])],
    );
}

/// Between Normals whose scales are further apart than the float range
/// (their ratio underflows or overflows), the divergence is its closed
/// form, `(r² + d² - 1)/2 - ln r` with `ln r = ln sq - ln sp`, finite or
/// `+inf`, never NaN, in `f64` and `f32`: the log of the rounded ratio gave
/// `inf` for 759.35 (scales 1e-300 and 1e30) and NaN (`inf - inf`) the
/// other way round. Its gradients stay finite where it is.
#[test]
fn normal_kl_between_scales_beyond_the_float_range() {
    fn kl<F: Element>(sq: f64, sp: f64, mq: f64) -> (f64, Vec<f64>) {
        let tape = Tape::<F>::new();
        let p: Vec<Var<'_, F>> = [mq, sq, 0.0, sp]
            .iter()
            .map(|&x| tape.var(Tensor::scalar(F::lit(x))))
            .collect();
        let q = Normal::new(p[0], p[1]).unwrap();
        let prior = Normal::new(p[2], p[3]).unwrap();
        let kl = kl_divergence(&q, &prior).unwrap();
        let value = kl.item().unwrap().to_f64().unwrap();
        let grads = match value.is_finite() {
            true => {
                let g = kl.backward().unwrap();
                p.iter()
                    .map(|v| g.get(*v).unwrap().item().unwrap().to_f64().unwrap())
                    .collect()
            }
            false => Vec::new(),
        };
        (value, grads)
    }
    // (sq, sp, mq): the closed form in f64 logarithms
    let want = |sq: f64, sp: f64, mq: f64| {
        let d = mq / sp;
        0.5 * (d * d - 1.0) - (sq.ln() - sp.ln())
    };
    for (sq, sp, mq) in [
        (1e-300, 1e30, 0.0),
        (1e-300, 1e30, 3e29),
        (1e-200, 1e200, 0.0),
    ] {
        let (got, grads) = kl::<f64>(sq, sp, mq);
        let w = want(sq, sp, mq);
        assert!(
            (got - w).abs() <= 1e-15 * w.abs(),
            "({sq:e}, {sp:e}): {got} vs {w}"
        );
        assert!(
            grads.iter().all(|g| g.is_finite()),
            "({sq:e}, {sp:e}): {grads:?}"
        );
    }
    let (got, _) = kl::<f64>(1e30, 1e-300, 0.0);
    assert_eq!(got, f64::INFINITY);
    let (got, grads) = kl::<f32>(1e-30, 1e20, 0.0);
    let w = want(f64::from(1e-30f32), f64::from(1e20f32), 0.0);
    assert!((got - w).abs() <= 1e-6 * w.abs(), "f32: {got} vs {w}");
    assert!(grads.iter().all(|g| g.is_finite()), "f32: {grads:?}");
    let (got, _) = kl::<f32>(1e20, 1e-30, 0.0);
    assert_eq!(got, f64::INFINITY);
}

/// The Normal divergence's slopes where the prior's scale squared
/// underflows (below about 1e-154 in `f64`, 1e-19 in `f32`) but the slopes
/// do not: `(mq - mp) / sp²` and `sq / sp² - 1 / sq` divided `sp²` out,
/// and were NaN in `mq` (0/0) where the locations are equal, `±inf` where
/// they are close, and `inf` in `sq` where the scales are equal (all three
/// are 0 or finite). Checked against the same slopes in `f64` from the
/// inputs as `F` holds them.
#[test]
fn normal_kl_slopes_where_the_prior_scale_squared_underflows() {
    fn slopes<F: Element>(mq: f64, sq: f64, mp: f64, sp: f64) -> [f64; 4] {
        let tape = Tape::<F>::new();
        let p = [mq, sq, mp, sp].map(|x| tape.var(Tensor::scalar(F::lit(x))));
        let kl = kl_divergence(
            &Normal::new(p[0], p[1]).unwrap(),
            &Normal::new(p[2], p[3]).unwrap(),
        )
        .unwrap();
        let g = kl.backward().unwrap();
        p.map(|v| g.get(v).unwrap().item().unwrap().to_f64().unwrap())
    }
    // the slopes in f64 at the inputs as F rounds them, each from its
    // factors divided out in turn
    fn want<F: Element>(mq: f64, sq: f64, mp: f64, sp: f64) -> [f64; 4] {
        let [mq, sq, mp, sp] = [mq, sq, mp, sp].map(|x| F::lit(x).to_f64().unwrap());
        let (r, d) = (sq / sp, (mq - mp) / sp);
        let dm = d / sp;
        [dm, r / sp - 1.0 / sq, -dm, (1.0 - r * r - d * d) / sp]
    }
    fn check<F: Element>(mq: f64, sq: f64, mp: f64, sp: f64, tol: f64) {
        let (got, want) = (slopes::<F>(mq, sq, mp, sp), want::<F>(mq, sq, mp, sp));
        for (k, (g, w)) in got.into_iter().zip(want).enumerate() {
            assert!(
                g.is_finite() && (g - w).abs() <= tol * w.abs(),
                "{}: slope {k} at ({mq:e}, {sq:e}) || ({mp:e}, {sp:e}): {g:e} vs {w:e}",
                F::DTYPE
            );
        }
    }
    check::<f64>(0.5, 1e-200, 0.5, 1e-200, 1e-15);
    check::<f64>(0.5, 2e-200, 0.5, 1e-200, 1e-15);
    check::<f64>(1e-300, 1e-160, 3e-300, 1e-160, 1e-15);
    check::<f32>(0.5, 1e-20, 0.5, 1e-20, 1e-6);
    check::<f32>(3e-30, 1e-20, 1e-30, 1e-20, 1e-6);
    check::<f32>(0.25, 3e-21, 0.25, 1e-20, 1e-6);
}

#[test]
fn gradcheck_kl_wrt_both_arguments() {
    gc(
        "normal kl",
        |_, a| kl_divergence(&Normal::new(a[0], a[1])?, &Normal::new(a[2], a[3])?),
        &[
            v(&[0.3, -1.0]),
            v(&[0.7, 2.0]),
            v(&[0.1, 0.4]),
            v(&[1.3, 0.6]),
        ],
    );
    gc(
        "categorical kl",
        |_, a| {
            kl_divergence(
                &Categorical::from_logits(a[0])?,
                &Categorical::from_logits(a[1])?,
            )
        },
        &[v(&[0.3, -1.0, 0.5]), v(&[1.0, 0.2, -0.7])],
    );
    gc(
        "bernoulli kl",
        |_, a| {
            kl_divergence(
                &Bernoulli::from_logits(a[0])?,
                &Bernoulli::from_logits(a[1])?,
            )
        },
        &[v(&[0.3, -2.0]), v(&[1.0, 0.5])],
    );
    gc(
        "independent kl",
        |_, a| {
            let q = Independent::new(Box::new(Normal::new(a[0], a[1])?), 1)?;
            let p = Independent::new(Box::new(Normal::new(a[2], a[3])?), 1)?;
            kl_divergence(&q, &p)
        },
        &[
            v(&[0.3, -1.0]),
            v(&[0.7, 2.0]),
            v(&[0.1, 0.4]),
            v(&[1.3, 0.6]),
        ],
    );
    // Monte Carlo KL against spike-and-slab, with the noise fixed by a seed inside.
    gc(
        "mc kl vs spike-slab",
        |_, a| {
            let mut rng = StdRng::seed_from_u64(7);
            let q = Normal::new(a[0], a[1])?;
            let p = SpikeAndSlab::new(a[2], a[3], a[4])?;
            kl_monte_carlo(&q, &p, 8, &mut rng)
        },
        &[
            v(&[0.2, -0.1]),
            v(&[0.3, 0.5]),
            Tensor::scalar(0.4),
            Tensor::scalar(0.3),
            Tensor::scalar(2.0),
        ],
    );
}

/// The pairs beyond one family against itself in TFP's reference files, with
/// parameters that broadcast (`q` over rows, `p` over columns).
#[test]
fn gradcheck_kl_of_the_other_pairs_wrt_both_arguments() {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    gc(
        "uniform kl",
        // q = [a, a + e^w] inside p = [a - 1 - e^c, a + e^w + e^d]
        |_, x| {
            let (a, w) = (x[0], x[1].exp());
            let q = Uniform::new(a, a + w)?;
            let p = Uniform::new(a - 1.0 - x[2].exp(), a + w + x[3].exp())?;
            kl_divergence(&q, &p)
        },
        &[
            col(&[0.3, -1.0]),
            col(&[0.2, -0.5]),
            v(&[0.1, -0.4, 0.8]),
            v(&[-0.3, 0.6, 0.0]),
        ],
    );
    gc(
        "poisson kl",
        |_, x| kl_divergence(&Poisson::new(x[0].exp())?, &Poisson::new(x[1].exp())?),
        &[col(&[0.3, -2.0, 3.0]), v(&[1.0, 0.5])],
    );
    gc(
        "logit-normal kl",
        |_, x| {
            let q = LogitNormal::new(x[0], x[1].exp())?;
            kl_divergence(&q, &LogitNormal::new(x[2], x[3].exp())?)
        },
        &[
            col(&[0.3, -1.0]),
            col(&[0.7, -0.2]),
            v(&[0.1, 0.4]),
            v(&[1.3, 0.6]),
        ],
    );
    gc(
        "exponential/gamma kl",
        |_, x| {
            let q = Exponential::new(x[0].exp())?;
            kl_divergence(&q, &Gamma::new(x[1].exp(), x[2].exp())?)
        },
        &[
            col(&[0.3, -1.0]),
            v(&[0.7, -0.2, 2.5]),
            v(&[0.1, 0.4, -0.3]),
        ],
    );
    gc(
        "gamma/exponential kl",
        |_, x| {
            let q = Gamma::new(x[0].exp(), x[1].exp())?;
            kl_divergence(&q, &Exponential::new(x[2].exp())?)
        },
        &[
            col(&[0.3, -1.0, 2.6]),
            col(&[0.7, -0.2, 1.0]),
            v(&[0.1, 0.4]),
        ],
    );
}

/// KL(Uniform || Uniform) is `+inf` where the first interval leaves the
/// second, with no gradient from those elements; the others, touching
/// bounds included, are the log-ratio of the widths, in `f32` too.
#[test]
fn a_uniform_kl_is_infinite_where_q_leaves_p() -> Result<()> {
    fn check<F: Element>() -> Result<()> {
        let tape = Tape::<F>::new();
        let f = |x: &[f64]| Tensor::from_vec(x.iter().map(|&v| F::lit(v)).collect(), &[x.len()]);
        // inside, touching both bounds, out on the left, out on the right
        let low = tape.var(f(&[0.0, -0.5, -1.0, 0.5])?);
        let high = tape.var(f(&[1.0, 2.0, 1.0, 3.0])?);
        let (pl, ph) = (tape.var(f(&[-0.5])?), tape.var(f(&[2.0])?));
        let kl = kl_divergence(&Uniform::new(low, high)?, &Uniform::new(pl, ph)?)?;
        let got: Vec<f64> = kl
            .value()
            .data()
            .iter()
            .map(|v| v.to_f64().unwrap())
            .collect();
        let want = [(2.5f64).ln(), 0.0, f64::INFINITY, f64::INFINITY];
        for (g, w) in got.iter().zip(want) {
            assert!(g == &w || (g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        let g = kl.sum().backward()?;
        let grad = |v: Var<F>| -> Vec<f64> {
            g.get(v)
                .unwrap()
                .data()
                .iter()
                .map(|x| x.to_f64().unwrap())
                .collect()
        };
        // d/d low_q = 1/width_q, d/d high_q = -1/width_q where finite; 0 beyond
        let (gl, gh) = (grad(low), grad(high));
        assert!(
            (gl[0] - 1.0).abs() < 1e-6 && (gh[0] + 1.0).abs() < 1e-6,
            "{gl:?} {gh:?}"
        );
        assert!(
            (gl[1] - 0.4).abs() < 1e-6 && (gh[1] + 0.4).abs() < 1e-6,
            "{gl:?} {gh:?}"
        );
        assert_eq!((&gl[2..], &gh[2..]), (&[0.0, 0.0][..], &[0.0, 0.0][..]));
        // the prior's: -1/width_p from each of the two finite elements
        assert!((grad(pl)[0] + 0.8).abs() < 1e-6 && (grad(ph)[0] - 0.8).abs() < 1e-6);
        Ok(())
    }
    check::<f64>()?;
    check::<f32>()
}

/// A distribution built from vars of one tape.
type Boxed<'t> = Box<dyn Distribution<'t, f64> + 't>;

/// The mean of a tensor's values and its standard error.
fn mean_and_se(d: &Tensor<f64>) -> (f64, f64) {
    let n = d.len() as f64;
    let m = d.data().iter().sum::<f64>() / n;
    let sd = (d.data().iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (m, sd / n.sqrt())
}

/// Each new closed form is the mean of `ln q(z) - ln p(z)` over draws of
/// `q`, within four standard errors (for the Uniform pair, whose log-ratio
/// is the same at every draw inside, within the rounding of the sum).
#[test]
fn the_other_pairs_closed_forms_are_the_monte_carlo_limits() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let pairs: Vec<(&str, Boxed, Boxed)> = vec![
        (
            "uniform",
            Box::new(Uniform::new(s(0.2), s(0.9))?),
            Box::new(Uniform::new(s(-1.0), s(1.5))?),
        ),
        (
            "poisson",
            Box::new(Poisson::new(s(3.5))?),
            Box::new(Poisson::new(s(2.0))?),
        ),
        (
            "logit-normal",
            Box::new(LogitNormal::new(s(0.4), s(0.6))?),
            Box::new(LogitNormal::new(s(-0.2), s(1.3))?),
        ),
        (
            "exponential/gamma",
            Box::new(Exponential::new(s(1.5))?),
            Box::new(Gamma::new(s(2.5), s(2.0))?),
        ),
        (
            "gamma/exponential",
            Box::new(Gamma::new(s(2.5), s(2.0))?),
            Box::new(Exponential::new(s(1.5))?),
        ),
    ];
    let mut rng = StdRng::seed_from_u64(17);
    let n = 100_000;
    for (name, q, p) in &pairs {
        let exact = kl_divergence(q.as_ref(), p.as_ref())?.item()?;
        let z = tape.constant(q.sample_n(Some(n), &mut rng)?);
        let (mean, se) = mean_and_se(&(q.log_prob(z)? - p.log_prob(z)?).value());
        assert!(
            (mean - exact).abs() <= 4.0 * se + 1e-10 * exact.abs(),
            "{name}: MC {mean} ± {se} vs exact {exact}"
        );
    }
    Ok(())
}

/// The Cauchy, HalfCauchy and HalfNormal densities (in the value and every
/// parameter), entropies, KLs and draws, with parameters that broadcast.
#[test]
fn gradcheck_cauchy_and_the_half_distributions() {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    // values on both sides of |z| = 1, where the Cauchy's forms meet
    let x = Tensor::from_rows(&[[0.3, -2.0, 7.5], [1.2, 0.05, -40.0]]).unwrap();
    gc(
        "cauchy log_prob",
        |_, a| Cauchy::new(a[0], a[1].exp())?.log_prob(a[2]),
        &[col(&[0.2, -1.0]), v(&[0.1, -0.5, 1.0]), x.clone()],
    );
    let xp = x.map(f64::abs);
    gc(
        "half-cauchy log_prob",
        |_, a| HalfCauchy::new(a[0].exp())?.log_prob(a[1]),
        &[v(&[0.1, -0.5, 1.0]), xp.clone()],
    );
    gc(
        "half-normal log_prob",
        |_, a| HalfNormal::new(a[0].exp())?.log_prob(a[1]),
        &[v(&[0.1, -0.5, 2.5]), xp.clone()],
    );
    gc(
        "entropies and the half-normal's moments",
        |_, a| {
            let s = a[0].exp();
            let h = Cauchy::new(a[1], s)?.entropy()? + HalfCauchy::new(s)?.entropy()?;
            let n = HalfNormal::new(s)?;
            Ok(h + n.entropy()? + n.mean()? * n.variance()?)
        },
        &[v(&[0.1, -0.5, 1.0]), v(&[0.0, 2.0, -1.0])],
    );
    gc(
        "cauchy kl",
        |_, a| {
            let q = Cauchy::new(a[0], a[1].exp())?;
            kl_divergence(&q, &Cauchy::new(a[2], a[3].exp())?)
        },
        &[
            col(&[0.3, -1.0]),
            col(&[0.7, -0.2]),
            v(&[0.1, 0.4, 3.0]),
            v(&[1.3, 0.6, -2.0]),
        ],
    );
    gc(
        "half kls",
        |_, a| {
            let (sq, sp) = (a[0].exp(), a[1].exp());
            let c = kl_divergence(&HalfCauchy::new(sq)?, &HalfCauchy::new(sp)?)?;
            Ok(c + kl_divergence(&HalfNormal::new(sq)?, &HalfNormal::new(sp)?)?)
        },
        &[col(&[0.3, -1.0]), v(&[0.1, 0.4, -2.0])],
    );
    gc(
        "draws",
        |_, a| {
            let mut rng = StdRng::seed_from_u64(3);
            let s = a[1].exp();
            let c = Cauchy::new(a[0], s)?.rsample_n(Some(3), &mut rng)?;
            let h = HalfCauchy::new(s)?.rsample_n(Some(3), &mut rng)?;
            let n = HalfNormal::new(s)?.rsample_n(Some(3), &mut rng)?;
            Ok(c + h + n)
        },
        &[v(&[0.3, -1.0]), v(&[0.7, -0.2])],
    );
}

/// The Cauchy's density keeps its value and gradient where `z²` overflows
/// (beyond 1.8e19 in `f32`, 1.3e154 in `f64`): its value is the `f64` one
/// rounded, and the half distributions give `-inf` with no gradient below
/// 0; the moments a Cauchy lacks are errors.
#[test]
fn the_cauchy_density_holds_in_the_far_tails() -> Result<()> {
    let tape = Tape::<f32>::new();
    let x = tape.var(Tensor::vector(&[1e30, -3e25, 2.0]));
    let lp = Cauchy::new(tape.scalar(0.5), tape.scalar(2.0))?.log_prob(x)?;
    for (&got, x) in lp.value().data().iter().zip([1e30f64, -3e25, 2.0]) {
        let z = (x - 0.5) / 2.0;
        let want = -(std::f64::consts::PI * 2.0).ln() - (z * z).ln_1p();
        assert!(
            (got as f64 - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs(),
            "{got} vs {want}"
        );
    }
    let g = lp.sum().backward()?;
    // d/dx = -2z / (scale (1 + z²)) = -1/x near enough in the tails
    let gx = g.get(x).unwrap().data().to_vec();
    assert!((gx[0] as f64 * 1e30 + 2.0).abs() < 1e-5, "{gx:?}");
    assert!((gx[1] as f64 * -3e25 + 2.0).abs() < 1e-5, "{gx:?}");

    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::vector(&[-1.0, 0.0, 2.0]));
    let s = tape.var(Tensor::scalar(1.5));
    for lp in [
        HalfCauchy::new(s)?.log_prob(x)?,
        HalfNormal::new(s)?.log_prob(x)?,
    ] {
        assert_eq!(lp.value().data()[0], f64::NEG_INFINITY);
        assert!(lp.value().data()[1..].iter().all(|v| v.is_finite()));
        let g = lp.sum().backward()?;
        assert_eq!(g.get(x).unwrap().data()[0], 0.0);
        assert!(g.get(s).unwrap().item()?.is_finite());
    }
    let c = Cauchy::new(tape.scalar(0.0), s)?;
    let h = HalfCauchy::new(s)?;
    for r in [c.mean(), c.variance(), h.mean(), h.variance()] {
        assert!(matches!(r, Err(Error::Unsupported { .. })));
    }
    Ok(())
}

/// `q`'s KL from `p` and its entropy are the means of `ln q(z) - ln p(z)`
/// and `-ln q(z)` over the draws `z` of `q`, within four standard errors.
fn kl_and_entropy_are_the_means_over<'t>(
    name: &str,
    q: &(dyn Distribution<'t, f64> + 't),
    p: &(dyn Distribution<'t, f64> + 't),
    z: Var<'t, f64>,
) -> Result<()> {
    let lq = q.log_prob(z)?;
    let (kl, se) = mean_and_se(&(lq - p.log_prob(z)?).value());
    let exact = kl_divergence(q, p)?.item()?;
    assert!(
        (kl - exact).abs() < 4.0 * se,
        "{name} KL: {kl} ± {se} vs {exact}"
    );
    let (h, se) = mean_and_se(&(-lq).value());
    let exact = q.entropy()?.item()?;
    assert!(
        (h - exact).abs() < 4.0 * se,
        "{name} entropy: {h} ± {se} vs {exact}"
    );
    Ok(())
}

/// Draws of the Cauchy have its quartiles, the half-normal's its mean and
/// variance, and each family's entropy and KL are the Monte Carlo limits of
/// their integrals (all within four standard errors).
#[test]
fn cauchy_and_half_distribution_draws_and_integrals() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let mut rng = StdRng::seed_from_u64(29);
    let n = 200_000;
    // quartiles of Cauchy(1, 2): 1 ∓ 2; the share of draws below each is 1/4, 3/4
    let draws = Cauchy::new(s(1.0), s(2.0))?.sample_n(Some(n), &mut rng)?;
    for (q, share) in [(-1.0, 0.25), (3.0, 0.75)] {
        let below = draws.data().iter().filter(|&&x| x < q).count() as f64 / n as f64;
        let se = (share * (1.0 - share) / n as f64).sqrt();
        assert!((below - share).abs() < 4.0 * se, "{below} below {q}");
    }
    let h = HalfNormal::new(s(1.5))?;
    let draws = h.sample_n(Some(n), &mut rng)?;
    let (mean, var) = (h.mean()?.item()?, h.variance()?.item()?);
    let m = draws.data().iter().sum::<f64>() / n as f64;
    assert!(draws.data().iter().all(|&x| x >= 0.0));
    assert!(
        (m - mean).abs() < 4.0 * (var / n as f64).sqrt(),
        "{m} vs {mean}"
    );
    let ss = draws.data().iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    assert!((ss - var).abs() < 0.02 * var, "{ss} vs {var}");
    let pairs: Vec<(&str, Boxed, Boxed)> = vec![
        (
            "cauchy",
            Box::new(Cauchy::new(s(0.5), s(0.7))?),
            Box::new(Cauchy::new(s(-1.0), s(2.0))?),
        ),
        (
            "half-cauchy",
            Box::new(HalfCauchy::new(s(0.7))?),
            Box::new(HalfCauchy::new(s(2.0))?),
        ),
        (
            "half-normal",
            Box::new(HalfNormal::new(s(0.7))?),
            Box::new(HalfNormal::new(s(2.0))?),
        ),
    ];
    for (name, q, p) in &pairs {
        let z = tape.constant(q.sample_n(Some(n), &mut rng)?);
        kl_and_entropy_are_the_means_over(name, q.as_ref(), p.as_ref(), z)?;
    }
    Ok(())
}

/// The negative binomial's log-mass in both parameters, with parameters
/// that broadcast (a count is not perturbed: a value between counts is
/// refused; the reference file checks the derivative in the count).
#[test]
fn gradcheck_negative_binomial_log_prob() {
    let counts = Tensor::from_rows(&[[0.0, 3.0, 12.0], [1.0, 40.0, 7.0]]).unwrap();
    gc(
        "negative binomial log_prob",
        |tape, a| {
            let d = NegativeBinomial::from_logits(a[0].exp(), a[1])?;
            d.log_prob(tape.constant(counts.clone()))
        },
        &[
            Tensor::from_vec(vec![0.3, 2.0], &[2, 1]).unwrap(),
            v(&[-1.0, 0.5, 2.5]),
        ],
    );
}

/// Draws of the negative binomial follow its mass (the share of each small
/// count, and the mean and variance, within four standard errors), built
/// from logits or from probabilities; bad parameters and values are named;
/// a rate that overflows is an error rather than an infinite count.
#[test]
fn negative_binomial_draws_follow_its_mass() -> Result<()> {
    let tape = Tape::<f64>::new();
    let d = NegativeBinomial::from_logits(tape.scalar(2.5), tape.scalar(0.4))?;
    let mut rng = StdRng::seed_from_u64(41);
    let n = 200_000;
    let from_probs = NegativeBinomial::from_probs(tape.scalar(2.5), tape.scalar(0.3))?;
    for d in [d, from_probs] {
        let draws = d.sample_n(Some(n), &mut rng)?;
        for k in 0..8 {
            let p = d.log_prob(tape.scalar(k as f64))?.item()?.exp();
            let share = draws.data().iter().filter(|&&x| x == k as f64).count() as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((share - p).abs() < 4.0 * se, "P({k}) = {p}, drawn {share}");
        }
        let (mean, var) = (d.mean()?.item()?, d.variance()?.item()?);
        let (m, se) = mean_and_se(&draws);
        assert!((m - mean).abs() < 4.0 * se, "{m} vs {mean}");
        let ss = draws.data().iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        assert!((ss - var).abs() < 0.03 * var, "{ss} vs {var}");
        // the mass sums to 1 over the counts
        let ks = tape.constant(Tensor::from_fn(&[400], |i| i as f64));
        let total: f64 = d.log_prob(ks)?.value().data().iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }

    let bad = |r: f64, l: f64| NegativeBinomial::from_logits(tape.scalar(r), tape.scalar(l));
    for (r, l) in [
        (0.0, 0.0),
        (-1.0, 0.0),
        (f64::INFINITY, 0.0),
        (1.0, f64::NAN),
    ] {
        let e = bad(r, l).err().unwrap().to_string();
        assert!(e.contains("NegativeBinomial"), "{e}");
    }
    for k in [-1.0, 0.5, f64::INFINITY] {
        let e = d.log_prob(tape.scalar(k)).err().unwrap().to_string();
        assert!(e.contains("count"), "{e}");
    }
    assert!(matches!(
        d.rsample(&mut rng),
        Err(Error::Unsupported { .. })
    ));
    let huge = NegativeBinomial::from_logits(tape.scalar(3.0), tape.scalar(800.0))?;
    let e = huge.sample(&mut rng).err().unwrap().to_string();
    assert!(e.contains("overflows"), "{e}");
    Ok(())
}

/// The binomial's log-mass in the logits, with parameters that broadcast
/// (counts are not perturbed: values between counts are refused; the
/// reference file checks the derivatives in `n` and `k`).
#[test]
fn gradcheck_binomial_log_prob() {
    let counts = Tensor::from_rows(&[[0.0, 3.0, 12.0], [1.0, 40.0, 7.0]]).unwrap();
    let n = Tensor::from_vec(vec![12.0, 45.0], &[2, 1]).unwrap();
    gc(
        "binomial log_prob",
        |tape, a| {
            let d = Binomial::from_logits(tape.constant(n.clone()), a[0])?;
            d.log_prob(tape.constant(counts.clone()))
        },
        &[v(&[-1.0, 0.5, 2.5])],
    );
}

/// At logits whose probability is far below the smallest float's square
/// root, the binomial and negative binomial log-masses keep their slope
/// in the logits, `k sigmoid(-l) - (n - k) sigmoid(l)` (`r` in place of
/// `n - k` for the negative binomial), and their value where the mean
/// count underflows: their saddle-point form once multiplied the gradient
/// of `bd0` in the mean count by `n` before `sigmoid`'s slope, which came
/// out `±inf` (`Binomial(1e15, -700)` at 1e8 successes,
/// `NegativeBinomial(1e8, 700)` at one, `f32` `NegativeBinomial(1e6, 95)`
/// at 10), and took
/// `bd0` of a mean of 0 beyond logits of 745: `Binomial(40, -800)` at one
/// success gave `-inf` for `ln 40 - 800`.
#[test]
fn binomial_slopes_at_far_logits() {
    fn value<F: Element>(n: f64, l: f64, k: f64) -> f64 {
        let tape = Tape::<F>::new();
        let (n, l) = (tape.scalar(F::lit(n)), tape.scalar(F::lit(l)));
        let d = Binomial::from_logits(n, l).unwrap();
        let lp = d.log_prob(tape.scalar(F::lit(k))).unwrap();
        lp.item().unwrap().to_f64().unwrap()
    }
    let want = 40f64.ln() - 800.0;
    let got = value::<f64>(40.0, -800.0, 1.0);
    assert!((got - want).abs() <= 1e-15 * want.abs(), "{got} vs {want}");
    let got = value::<f64>(40.0, 800.0, 39.0);
    assert!((got - want).abs() <= 1e-15 * want.abs(), "{got} vs {want}");
    fn check<F: Element>(negative: bool, n: f64, l: f64, k: f64) {
        let tape = Tape::<F>::new();
        let logits = tape.var(Tensor::scalar(F::lit(l)));
        let count = tape.constant(Tensor::scalar(F::lit(n)));
        let value = tape.constant(Tensor::scalar(F::lit(k)));
        let lp = match negative {
            false => Binomial::from_logits(count, logits)
                .unwrap()
                .log_prob(value),
            true => NegativeBinomial::from_logits(count, logits)
                .unwrap()
                .log_prob(value),
        }
        .unwrap();
        let got = lp.backward().unwrap().get(logits).unwrap().item().unwrap();
        let got = got.to_f64().unwrap();
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let failures = if negative { n } else { n - k };
        let want = k * sigmoid(-l) - failures * sigmoid(l);
        let tol = if F::DTYPE == "F32" { 1e-6 } else { 1e-12 };
        assert!(
            (got - want).abs() <= tol * want.abs(),
            "{} ({n}, {l}) at {k}: {got:e} vs {want:e}",
            if negative {
                "NegativeBinomial"
            } else {
                "Binomial"
            }
        );
    }
    for (n, l, k) in [
        (1e15, -700.0, 1e8),
        (1e15, 700.0, 1.0),
        (1e15, -400.0, 50.0),
        (40.0, -800.0, 1.0),
    ] {
        check::<f64>(false, n, l, k);
    }
    for (r, l, k) in [
        (1e8, 700.0, 1.0),
        (1.0, -700.0, 1e8),
        (40.0, 400.0, 3.0),
        (1.0, -800.0, 40.0),
    ] {
        check::<f64>(true, r, l, k);
    }
    check::<f32>(false, 1e6, -95.0, 10.0);
    check::<f32>(true, 1e6, 95.0, 10.0);
}

/// At a count of 0 (and, for the binomial, at `n`) the log-mass is the
/// other side's term alone, `-r softplus(l)` (`-n softplus(±l)`), never
/// above 0, and its slope in the count parameter is that term's: the
/// `ln Γ` terms' values and slopes cancel exactly there. Taken as separate
/// terms they left their rounding, about 1e-16, which beside a tiny
/// success probability exceeded the whole value: `NegativeBinomial(0.01,
/// -35)` at 0 gave `ln P = +8.8e-16` (want `-6.3e-18`) and a slope in `r`
/// of 0; the binomial's slope in `n` at 0 was 0.5 % off at
/// `Binomial(10, -31)`.
#[test]
fn log_masses_at_zero_counts_are_the_failures_term() -> Result<()> {
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 1e-14 * want.abs(),
            "{what}: {got:e} vs {want:e}"
        );
    };
    for r in [1e-3, 0.01, 0.6, 1.0, 7.5, 31.0, 1e6, 1e12] {
        for l in [-700.0, -35.0, -22.0, -5.0, 0.0, 3.0] {
            let tape = Tape::<f64>::new();
            let (count, logits) = (tape.var(Tensor::scalar(r)), tape.scalar(l));
            let zero = tape.var(Tensor::scalar(0.0));
            let lp = NegativeBinomial::from_logits(count, logits)?.log_prob(zero)?;
            let what = format!("NegativeBinomial({r}, {l}) at 0");
            let value = lp.item()?;
            assert!(value <= 0.0, "{what}: {value:e}");
            close(value, -r * softplus(l), &what);
            let g = lp.backward()?;
            close(g.get(count).unwrap().item()?, -softplus(l), &what);
            // the slope in k, psi(r) - psi(1), is the continuous extension's
            let slope = tape.scalar(r).digamma() - tape.scalar(1.0).digamma();
            let got = g.get(zero).unwrap().item()? + softplus(-l);
            assert!((got - slope.item()?).abs() <= 1e-12 * (1.0 + slope.item()?.abs()));
        }
    }
    for n in [1.0, 2.0, 10.0, 31.0, 214.0, 1e6, 1e12] {
        for l in [-35.0, -21.0, -5.0, 0.0, 4.0] {
            for at_n in [false, true] {
                let tape = Tape::<f64>::new();
                let count = tape.var(Tensor::scalar(n));
                // the failure side's probability is the tiny one at k = n
                let l = if at_n { -l } else { l };
                let d = Binomial::from_logits(count, tape.scalar(l))?;
                let k = if at_n { n } else { 0.0 };
                let lp = d.log_prob(tape.scalar(k))?;
                let what = format!("Binomial({n}, {l}) at {k}");
                let other = if at_n { softplus(-l) } else { softplus(l) };
                let value = lp.item()?;
                assert!(value <= 0.0, "{what}: {value:e}");
                close(value, -n * other, &what);
                let slope = lp.backward()?.get(count).unwrap().item()?;
                if at_n {
                    // psi(n + 1) - psi(1) - softplus(l)
                    let psi = tape.scalar(n + 1.0).digamma() - tape.scalar(1.0).digamma();
                    let want = psi.item()? - softplus(l);
                    assert!(
                        (slope - want).abs() <= 1e-13 * want.abs().max(1.0),
                        "{what}"
                    );
                } else {
                    close(slope, -other, &what);
                }
            }
        }
    }
    Ok(())
}

/// Draws of the binomial follow its mass, by trials one at a time (10) and
/// through Knuth's Beta halving (1000), at a probability below and above
/// 1/2, built from logits or from probabilities; a count above `n` has no
/// mass and no gradient; bad parameters and values are named.
#[test]
fn binomial_draws_follow_its_mass() -> Result<()> {
    let tape = Tape::<f64>::new();
    let mut rng = StdRng::seed_from_u64(43);
    let n = 100_000;
    let cases = [
        (10.0, -0.4, 0..8, false),
        (1000.0, 1.3, 780..800, false),
        (10.0, -0.4, 0..8, true),
        (1000.0, 1.3, 780..800, true),
    ];
    for (trials, logits, ks, from_probs) in cases {
        let d = match from_probs {
            false => Binomial::from_logits(tape.scalar(trials), tape.scalar(logits))?,
            true => {
                let p = 1.0 / (1.0 + f64::exp(-logits));
                Binomial::from_probs(tape.scalar(trials), tape.scalar(p))?
            }
        };
        let draws = d.sample_n(Some(n), &mut rng)?;
        assert!(
            draws
                .data()
                .iter()
                .all(|&k| (0.0..=trials).contains(&k) && k.fract() == 0.0)
        );
        for k in ks {
            let p = d.log_prob(tape.scalar(k as f64))?.item()?.exp();
            let share = draws.data().iter().filter(|&&x| x == k as f64).count() as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (share - p).abs() < 4.0 * se,
                "n = {trials}: P({k}) = {p}, drawn {share}"
            );
        }
        let (mean, var) = (d.mean()?.item()?, d.variance()?.item()?);
        let (m, se) = mean_and_se(&draws);
        assert!((m - mean).abs() < 4.0 * se, "{m} vs {mean}");
        assert!(
            ((se * se * n as f64) - var).abs() < 0.03 * var,
            "variance vs {var}"
        );
        let ks = tape.constant(Tensor::from_fn(&[trials as usize + 1], |i| i as f64));
        let total: f64 = d.log_prob(ks)?.value().data().iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
    let none = Binomial::from_logits(tape.scalar(0.0), tape.scalar(0.7))?;
    assert!(
        none.sample_n(Some(5), &mut rng)?
            .data()
            .iter()
            .all(|&k| k == 0.0)
    );

    let l = tape.var(Tensor::scalar(0.3));
    let d = Binomial::from_logits(tape.scalar(5.0), l)?;
    let k = tape.var(Tensor::vector(&[2.0, 6.0]));
    let lp = d.log_prob(k)?;
    assert!(lp.value().data()[0].is_finite());
    assert_eq!(lp.value().data()[1], f64::NEG_INFINITY);
    let g = lp.sum().backward()?;
    assert_eq!(g.get(k).unwrap().data()[1], 0.0);
    assert!(g.get(l).unwrap().item()?.is_finite());

    for (n, l) in [
        (2.5, 0.0),
        (-1.0, 0.0),
        (f64::INFINITY, 0.0),
        (3.0, f64::NAN),
    ] {
        let e = Binomial::from_logits(tape.scalar(n), tape.scalar(l))
            .err()
            .unwrap();
        assert!(e.to_string().contains("Binomial"), "{e}");
    }
    for k in [-1.0, 0.5] {
        let e = d.log_prob(tape.scalar(k)).err().unwrap().to_string();
        assert!(e.contains("count"), "{e}");
    }
    assert!(matches!(
        d.rsample(&mut rng),
        Err(Error::Unsupported { .. })
    ));
    Ok(())
}

#[test]
fn gradcheck_rsample_wrt_parameters() {
    gc(
        "normal rsample",
        |_, a| {
            let mut rng = StdRng::seed_from_u64(3);
            Normal::new(a[0], a[1])?.rsample_n(Some(4), &mut rng)
        },
        &[v(&[0.3, -1.0]), v(&[0.7, 2.0])],
    );
}

#[test]
fn analytic_kl_without_closed_form_names_both() {
    let tape = Tape::<f64>::new();
    let q = Normal::new(tape.scalar(0.0), tape.scalar(1.0)).unwrap();
    let p = SpikeAndSlab::tfp_default(&tape);
    let err = kl_divergence(&q, &p).unwrap_err();
    assert_eq!(
        err,
        Error::NoAnalyticKl {
            q: "Normal".into(),
            p: "SpikeAndSlab".into()
        }
    );
    let mut rng = StdRng::seed_from_u64(0);
    assert!(kl_divergence_with(&q, &p, Divergence::Auto, &mut rng).is_ok());
    assert!(kl_divergence_with(&q, &p, Divergence::Analytic, &mut rng).is_err());
    // q without a reparameterized sampler cannot feed a Monte Carlo KL
    let c = Categorical::from_logits(tape.var(Tensor::vector(&[0.0, 1.0]))).unwrap();
    let err = kl_monte_carlo(&c, &c, 4, &mut rng).unwrap_err();
    assert!(matches!(
        err,
        Error::Unsupported {
            distribution: "Categorical",
            ..
        }
    ));
}

#[test]
fn monte_carlo_kl_converges_to_the_closed_form() {
    let tape = Tape::<f64>::new();
    let q = Normal::new(tape.scalar(0.4), tape.scalar(0.6)).unwrap();
    let p = Normal::new(tape.scalar(-0.2), tape.scalar(1.3)).unwrap();
    let exact = kl_divergence(&q, &p).unwrap().item().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let n = 100_000;
    let z = q.rsample_n(Some(n), &mut rng).unwrap();
    let d = (q.log_prob(z).unwrap() - p.log_prob(z).unwrap()).value();
    let mean = d.data().iter().sum::<f64>() / n as f64;
    let sd = (d.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
    let se = sd / (n as f64).sqrt();
    assert!(
        (mean - exact).abs() < 4.0 * se,
        "MC {mean} ± {se} vs exact {exact}"
    );
}

#[test]
fn extreme_values_stay_finite_and_exact() {
    let tape = Tape::<f64>::new();
    // 0.5 N(0,1) + 0.5 N(0,2000) at x = -1000: the spike's density is e^-500000,
    // so ln p = ln 0.5 + ln N(-1000; 0, 2000) = ln 0.5 - 0.125 - ln 2000 - ln(2 pi)/2
    let prior = SpikeAndSlab::tfp_default(&tape);
    let x = tape.var(Tensor::scalar(-1000.0));
    let lp = prior.log_prob(x).unwrap();
    let expected = 0.5f64.ln() - 0.125 - 2000f64.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
    assert!(
        (lp.item().unwrap() - expected).abs() < 1e-12,
        "{}",
        lp.item().unwrap()
    );
    // d/dx = -x / 2000^2 = 2.5e-4
    let g = lp.backward().unwrap();
    assert!((g.get(x).unwrap().data()[0] - 2.5e-4).abs() < 1e-15);

    // Categorical with logits of magnitude 1e4: P(class 0) = 1 - e^-2e4 -> ln P = -0 exactly enough
    let logits = tape.var(Tensor::vector(&[1e4, -1e4, 0.0]));
    let cat = Categorical::from_logits(logits).unwrap();
    let lp = cat.log_prob_labels(&[0]).unwrap().item().unwrap();
    assert!(lp.abs() < 1e-300 || lp == 0.0);
    let lp1 = cat.log_prob_labels(&[1]).unwrap().item().unwrap();
    assert!((lp1 + 2e4).abs() < 1e-9, "{lp1}");
    let h = cat.entropy().unwrap().item().unwrap();
    assert!(h.is_finite() && h >= 0.0);
    let g = cat.log_prob_labels(&[2]).unwrap().sum().backward().unwrap();
    assert!(g.get(logits).unwrap().data().iter().all(|x| x.is_finite()));

    // f32 too
    let tape = Tape::<f32>::new();
    let prior = SpikeAndSlab::tfp_default(&tape);
    assert!(
        prior
            .log_prob(tape.scalar(-1000.0))
            .unwrap()
            .item()
            .unwrap()
            .is_finite()
    );
}

#[test]
fn bad_parameters_name_distribution_parameter_and_value() {
    let tape = Tape::<f64>::new();
    let c = |x: f64| tape.scalar(x);
    let vec = |x: &[f64]| tape.constant(Tensor::vector(x));
    let table: Vec<(&str, Error)> = vec![
        ("scale 0", Normal::new(c(0.0), c(0.0)).err().unwrap()),
        ("scale nan", Normal::new(c(0.0), c(f64::NAN)).err().unwrap()),
        (
            "pi 1",
            SpikeAndSlab::new(c(1.0), c(1.0), c(2.0)).err().unwrap(),
        ),
        (
            "pi negative",
            SpikeAndSlab::new(c(-0.1), c(1.0), c(2.0)).err().unwrap(),
        ),
        (
            "spike scale",
            SpikeAndSlab::new(c(0.5), c(-1.0), c(2.0)).err().unwrap(),
        ),
        (
            "empty logits",
            Categorical::from_logits(tape.constant(Tensor::zeros(&[0])))
                .err()
                .unwrap(),
        ),
        (
            "label too big",
            Categorical::from_logits(vec(&[0.0, 1.0]))
                .unwrap()
                .log_prob(c(2.0))
                .err()
                .unwrap(),
        ),
        (
            "batch shapes",
            Normal::new(vec(&[0.0, 1.0]), vec(&[1.0, 1.0, 1.0]))
                .err()
                .unwrap(),
        ),
        (
            "probs sum",
            Categorical::from_probs(vec(&[0.5, 0.6])).err().unwrap(),
        ),
        (
            "bernoulli value",
            Bernoulli::from_logits(c(0.0))
                .unwrap()
                .log_prob(c(0.5))
                .err()
                .unwrap(),
        ),
        (
            "mixture weights",
            MixtureOfNormals::new(vec(&[0.5, 0.6]), vec(&[0.0, 0.0]), vec(&[1.0, 1.0]))
                .err()
                .unwrap(),
        ),
    ];
    let expect = [
        ("Normal", "scale", Some(0.0)),
        ("Normal", "scale", None),
        ("SpikeAndSlab", "pi", Some(1.0)),
        ("SpikeAndSlab", "pi", Some(-0.1)),
        ("SpikeAndSlab", "spike_scale", Some(-1.0)),
        ("", "", None),
        ("Categorical", "label", Some(2.0)),
        ("Normal", "", None),
        ("Categorical", "sum of probs", Some(1.1)),
        ("Bernoulli", "value", Some(0.5)),
        ("MixtureOfNormals", "sum of weights", Some(1.1)),
    ];
    for ((name, err), (dist, param, value)) in table.iter().zip(expect) {
        let msg = err.to_string();
        match err {
            Error::InvalidParameter {
                distribution,
                parameter,
                value: v,
                ..
            } => {
                assert_eq!((*distribution, *parameter), (dist, param), "{name}: {msg}");
                match value {
                    Some(x) => assert!((v - x).abs() < 1e-12, "{name}: {msg}"),
                    None => assert!(v.is_nan(), "{name}: {msg}"),
                }
            }
            Error::BatchShapeMismatch { distribution, .. } => {
                assert_eq!(*distribution, dist, "{name}")
            }
            Error::InvalidArgument { op, .. } => assert_eq!(*op, "Categorical", "{name}"),
            other => panic!("{name}: unexpected {other:?}"),
        }
        assert!(msg.contains(dist), "{name}: '{msg}' does not name {dist}");
    }
}

#[test]
fn divergence_nodes_are_named_and_counted_once() {
    let tape = Tape::<f64>::new();
    let q = Normal::new(
        tape.var(Tensor::vector(&[0.1, 0.2])),
        tape.var(Tensor::vector(&[0.5, 0.9])),
    )
    .unwrap();
    let p = Normal::standard(&tape, &[2]);
    let kl = kl_divergence(&q, &p).unwrap();
    let (store, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(0));
    let mut cx = Forward::new(&tape, &store, &mut rng);
    cx.add_divergence("layer/kernel_divergence", kl).unwrap();
    let prior = SpikeAndSlab::tfp_default(&tape);
    let mc = cx
        .add_kl("layer/bias_divergence", &q, &prior, Divergence::Auto)
        .unwrap();
    let names: Vec<String> = cx
        .divergences()
        .values()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["layer/kernel_divergence", "layer/bias_divergence"]);
    let total = cx.divergences().total().item().unwrap();
    let expected = kl.sum().item().unwrap() + mc.sum().item().unwrap();
    assert!((total - expected).abs() < 1e-12);
    assert!(matches!(
        cx.add_divergence("layer/kernel_divergence", kl),
        Err(Error::DuplicateDivergence { .. })
    ));
}

#[test]
fn sample_moments_match() {
    let tape = Tape::<f64>::new();
    let mut rng = StdRng::seed_from_u64(5);
    let n = Normal::new(tape.scalar(1.5), tape.scalar(0.5)).unwrap();
    let xs: Vec<f64> = (0..20_000)
        .map(|_| n.sample(&mut rng).unwrap().data()[0])
        .collect();
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    // se of the mean is 0.5/sqrt(20000) = 0.0035; of the variance ~0.25*sqrt(2/20000) = 0.0025
    assert!(
        (mean - 1.5).abs() < 0.015 && (var - 0.25).abs() < 0.01,
        "{mean} {var}"
    );

    let cat = Categorical::from_probs(tape.constant(Tensor::vector(&[0.2, 0.5, 0.3]))).unwrap();
    let mut counts = [0usize; 3];
    for _ in 0..20_000 {
        counts[cat.sample(&mut rng).unwrap().data()[0] as usize] += 1;
    }
    for (c, p) in counts.iter().zip([0.2, 0.5, 0.3]) {
        let f = *c as f64 / 20_000.0; // se <= 0.0036
        assert!((f - p).abs() < 0.015, "{counts:?}");
    }

    let mix = SpikeAndSlab::new(tape.scalar(0.3), tape.scalar(0.1), tape.scalar(2.0)).unwrap();
    let xs: Vec<f64> = (0..40_000)
        .map(|_| mix.sample(&mut rng).unwrap().data()[0])
        .collect();
    let var = xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64;
    let exact = mix.variance().unwrap().item().unwrap(); // 0.3*0.01 + 0.7*4 = 2.803
    assert!((exact - 2.803).abs() < 1e-12);
    assert!((var - exact).abs() < 0.1, "{var} vs {exact}");

    let b = Bernoulli::from_logits(tape.scalar(0.8)).unwrap();
    let ones: f64 = (0..20_000)
        .map(|_| b.sample(&mut rng).unwrap().data()[0])
        .sum();
    let p = b.mean().unwrap().item().unwrap();
    assert!((ones / 20_000.0 - p).abs() < 0.015);
}

fn normal_params() -> impl Strategy<Value = (f64, f64)> {
    (-5.0..5.0f64, 0.05..5.0f64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/distributions.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn kl_of_a_distribution_with_itself_is_zero((m, s) in normal_params(), logits in prop::collection::vec(-10.0..10.0f64, 1..6)) {
        let tape = Tape::<f64>::new();
        let n = Normal::new(tape.scalar(m), tape.scalar(s)).unwrap();
        prop_assert!(kl_divergence(&n, &n).unwrap().item().unwrap().abs() < 1e-12);
        let c = Categorical::from_logits(tape.constant(Tensor::vector(&logits))).unwrap();
        prop_assert!(kl_divergence(&c, &c).unwrap().item().unwrap().abs() < 1e-12);
        let b = Bernoulli::from_logits(tape.scalar(logits[0])).unwrap();
        prop_assert!(kl_divergence(&b, &b).unwrap().item().unwrap().abs() < 1e-12);
    }

    #[test]
    fn kl_is_non_negative((m1, s1) in normal_params(), (m2, s2) in normal_params(),
                          a in prop::collection::vec(-10.0..10.0f64, 3), b in prop::collection::vec(-10.0..10.0f64, 3)) {
        let tape = Tape::<f64>::new();
        let q = Normal::new(tape.scalar(m1), tape.scalar(s1)).unwrap();
        let p = Normal::new(tape.scalar(m2), tape.scalar(s2)).unwrap();
        prop_assert!(kl_divergence(&q, &p).unwrap().item().unwrap() >= -1e-12);
        let cq = Categorical::from_logits(tape.constant(Tensor::vector(&a))).unwrap();
        let cp = Categorical::from_logits(tape.constant(Tensor::vector(&b))).unwrap();
        prop_assert!(kl_divergence(&cq, &cp).unwrap().item().unwrap() >= -1e-12);
        let bq = Bernoulli::from_logits(tape.scalar(a[0])).unwrap();
        let bp = Bernoulli::from_logits(tape.scalar(b[0])).unwrap();
        prop_assert!(kl_divergence(&bq, &bp).unwrap().item().unwrap() >= -1e-12);
    }

    /// Between nearly equal distributions (each parameter moved by 1e-12 to
    /// 1e-1 of itself) a divergence is a small difference of large terms:
    /// every built-in one between two members of a family stays at or
    /// above 0, in `f64` and in `f32` (a Dirichlet's over three categories,
    /// `[a, b, ab]`).
    #[test]
    fn divergences_between_nearly_equal_distributions_are_not_negative(
        (x, y) in (-3.0..3.0f64, -3.0..3.0f64),
        (u, v) in (-12.0..-1.0f64, -12.0..-1.0f64),
        (up, vp) in (any::<bool>(), any::<bool>()),
    ) {
        let (a, b) = (10f64.powf(x), 10f64.powf(y));
        let moved = |p: f64, e: f64, up: bool| p * (1.0 + if up { 1.0 } else { -1.0 } * 10f64.powf(e));
        let (a2, b2, x2) = (moved(a, u, up), moved(b, v, vp), moved(x, v, up));
        near_divergences_are_not_negative::<f64>([x, a, b], [x2, a2, b2])?;
        near_divergences_are_not_negative::<f32>([x, a, b], [x2, a2, b2])?;
    }

    /// Where every concentration of the second distribution is that of the
    /// first times `c` and the first's are all equal (Beta(a, a),
    /// Gamma(a, a), inverse Gamma(a, a), Dirichlet(a, a, a)), the
    /// divergence tends to `(K - 1)/2 · (c - 1 - ln c)` as `a` grows (`K` the
    /// concentrations a `ln Γ` term each: 2 for the Beta, the Gammas' rate
    /// counted as the second, 3 for the Dirichlet), to within about `1/a` of
    /// itself: from `a` = 1e6 to 1e300 in `f64` and to 1e35 in `f32`, with
    /// `c` from `e^-5` to `e^5` and within 1e-12 of 1.
    #[test]
    fn divergences_of_scaled_concentrations_reach_their_limit(
        x in 6.0..300.0f64,
        u in -12.0..0.7f64,
        up in any::<bool>(),
    ) {
        let a = 10f64.powf(x);
        let c = (if up { 1.0 } else { -1.0 } * 10f64.powf(u)).exp();
        scaled_divergences_reach_their_limit::<f64>(a, c)?;
        scaled_divergences_reach_their_limit::<f32>(a.min(1e35), c)?;
    }

    #[test]
    fn log_prob_is_finite_on_the_support((m, s) in normal_params(), x in -1e4..1e4f64,
                                         pi in 0.001..0.999f64, spike in 1e-3..1.0f64, slab in 1.0..3000.0f64) {
        let tape = Tape::<f64>::new();
        let n = Normal::new(tape.scalar(m), tape.scalar(s)).unwrap();
        prop_assert!(n.log_prob(tape.scalar(x)).unwrap().item().unwrap().is_finite());
        let mix = SpikeAndSlab::new(tape.scalar(pi), tape.scalar(spike), tape.scalar(slab)).unwrap();
        let lp = mix.log_prob(tape.var(Tensor::scalar(x))).unwrap();
        prop_assert!(lp.item().unwrap().is_finite());
        let g = lp.backward().unwrap();
        prop_assert!(g.all_finite());
        let b = Bernoulli::from_logits(tape.scalar(x)).unwrap();
        prop_assert!(b.log_prob(tape.scalar(1.0)).unwrap().item().unwrap().is_finite());
    }

    #[test]
    fn entropy_is_the_mean_negative_log_prob((m, s) in normal_params(), seed in 0u64..1000) {
        let tape = Tape::<f64>::new();
        let n = Normal::new(tape.scalar(m), tape.scalar(s)).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let z = n.rsample_n(Some(4000), &mut rng).unwrap();
        let nlp = (-n.log_prob(z).unwrap()).value();
        let k = nlp.len() as f64;
        let mean = nlp.data().iter().sum::<f64>() / k;
        let se = (nlp.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt();
        let h = n.entropy().unwrap().item().unwrap();
        prop_assert!((mean - h).abs() < 5.0 * se, "{mean} ± {se} vs {h}");
    }

    /// The fused Laplace log-density (its path for single parameters and a
    /// constant value, and its broadcasting path) has the value and the
    /// gradients of its formula composed of tape ops.
    #[test]
    fn laplace_log_prob_is_its_composed_formula(
        (m, s) in normal_params(),
        xs in prop::collection::vec(-20.0..20.0f64, 1..40),
        per_value in any::<bool>(),
        value_is_var in any::<bool>(),
    ) {
        let n = xs.len();
        // the fused op's value and gradients, then the composed formula's
        let run = |fused: bool| {
            let tape = Tape::<f64>::new();
            let (loc, scale) = match per_value {
                true => (
                    tape.var(Tensor::from_fn(&[n], |i| m + 0.1 * i as f64)),
                    tape.var(Tensor::from_fn(&[n], |i| s * (1.0 + 0.05 * i as f64))),
                ),
                false => (tape.scalar(m), tape.scalar(s)),
            };
            let x = match value_is_var {
                true => tape.var(Tensor::vector(&xs)),
                false => tape.constant(Tensor::vector(&xs)),
            };
            let lp = match fused {
                true => Laplace::new(loc, scale).unwrap().log_prob(x).unwrap(),
                false => {
                    let z = x.try_sub(loc).unwrap().abs().try_div(scale).unwrap();
                    (-(scale * 2.0).ln()).try_sub(z).unwrap()
                }
            };
            // weights that differ by value, so that a gradient summed
            // into the wrong place shows
            let w = Tensor::from_fn(&[n], |i| 0.5 + (i % 7) as f64 * 0.3);
            let g = (lp * w).sum().backward().unwrap();
            let mut all = lp.value().data().to_vec();
            for v in [loc, scale, x] {
                if let Some(d) = g.get(v) {
                    all.extend(d.data());
                }
            }
            all
        };
        let (fused, composed) = (run(true), run(false));
        prop_assert_eq!(fused.len(), composed.len());
        for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
            prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{}: {} vs {}", i, a, b);
        }
    }
}

/// [`divergences_of_scaled_concentrations_reach_their_limit`] at `a` and
/// `c` in `F`: the second distribution's concentrations are `a c` rounded
/// to `F`, and `c` the ratio of the two as rounded.
fn scaled_divergences_reach_their_limit<F: Element>(
    a: f64,
    c: f64,
) -> std::result::Result<(), TestCaseError> {
    let in_f = |x: f64| Tensor::<F>::scalar(F::lit(x));
    let (q, p) = (in_f(a), in_f(a * c));
    let c = p.to_f64().data()[0] / q.to_f64().data()[0];
    if c == 1.0 {
        return Ok(());
    }
    let tape = Tape::<F>::new();
    let (qv, pv) = (q.data()[0], p.data()[0]);
    let (q, p) = (tape.constant(q), tape.constant(p));
    let row = |x| Dirichlet::new(tape.constant(Tensor::full(&[3], x))).unwrap();
    // (K - 1, the divergence)
    let kls = [
        (
            1.0,
            kl_divergence(&Beta::new(q, q).unwrap(), &Beta::new(p, p).unwrap()),
        ),
        (
            1.0,
            kl_divergence(&Gamma::new(q, q).unwrap(), &Gamma::new(p, p).unwrap()),
        ),
        (
            1.0,
            kl_divergence(
                &InverseGamma::new(q, q).unwrap(),
                &InverseGamma::new(p, p).unwrap(),
            ),
        ),
        (2.0, kl_divergence(&row(qv), &row(pv))),
    ];
    let phi = (c - 1.0) - c.ln();
    // about 1/a of the limit, and the rounding of a divergence whose
    // condition number is about 1/|c - 1| (the inputs are exact: the
    // concentrations of each distribution are equal)
    let eps = Tensor::<F>::scalar(F::epsilon()).to_f64().data()[0];
    let tol = 1e-5 + 8.0 * eps / (c - 1.0).abs().min(1.0);
    for (i, (k1, kl)) in kls.into_iter().enumerate() {
        let got = kl.unwrap().value().to_f64().data()[0];
        let want = 0.5 * k1 * phi;
        prop_assert!(
            (got - want).abs() <= tol * want,
            "{} a = {a:e}, c = {c}, divergence {i}: {got:e} vs {want:e}",
            F::DTYPE
        );
    }
    Ok(())
}

/// The divergences between two members of each family, the first built
/// from `[real, positive, positive]` parameters and the second from the
/// same moved a little, are at or above 0 (in `F`, from the parameters
/// rounded to it; a pair whose rounding made them equal gives 0).
fn near_divergences_are_not_negative<F: Element>(
    q: [f64; 3],
    p: [f64; 3],
) -> std::result::Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let vars = |v: [f64; 3]| v.map(|x| tape.scalar(F::lit(x)));
    let ([m1, a1, b1], [m2, a2, b2]) = (vars(q), vars(p));
    let kls = [
        (
            "normal",
            kl_divergence(&Normal::new(m1, a1).unwrap(), &Normal::new(m2, a2).unwrap()),
        ),
        (
            "laplace",
            kl_divergence(
                &Laplace::new(m1, a1).unwrap(),
                &Laplace::new(m2, a2).unwrap(),
            ),
        ),
        (
            "gumbel",
            kl_divergence(&Gumbel::new(m1, a1).unwrap(), &Gumbel::new(m2, a2).unwrap()),
        ),
        (
            "cauchy",
            kl_divergence(&Cauchy::new(m1, a1).unwrap(), &Cauchy::new(m2, a2).unwrap()),
        ),
        (
            "poisson",
            kl_divergence(&Poisson::new(a1).unwrap(), &Poisson::new(a2).unwrap()),
        ),
        (
            "half_normal",
            kl_divergence(&HalfNormal::new(a1).unwrap(), &HalfNormal::new(a2).unwrap()),
        ),
        (
            "gamma",
            kl_divergence(&Gamma::new(a1, b1).unwrap(), &Gamma::new(a2, b2).unwrap()),
        ),
        (
            "inverse_gamma",
            kl_divergence(
                &InverseGamma::new(a1, b1).unwrap(),
                &InverseGamma::new(a2, b2).unwrap(),
            ),
        ),
        (
            "beta",
            kl_divergence(&Beta::new(a1, b1).unwrap(), &Beta::new(a2, b2).unwrap()),
        ),
        (
            "weibull",
            kl_divergence(
                &Weibull::new(a1, b1).unwrap(),
                &Weibull::new(a2, b2).unwrap(),
            ),
        ),
        (
            "von_mises",
            kl_divergence(
                &VonMises::new(m1, a1).unwrap(),
                &VonMises::new(m2, a2).unwrap(),
            ),
        ),
        (
            "geometric",
            kl_divergence(
                &Geometric::from_logits(m1).unwrap(),
                &Geometric::from_logits(m2).unwrap(),
            ),
        ),
        (
            "bernoulli",
            kl_divergence(
                &Bernoulli::from_logits(m1).unwrap(),
                &Bernoulli::from_logits(m2).unwrap(),
            ),
        ),
        (
            "dirichlet",
            kl_divergence(
                &Dirichlet::new(Var::stack(&[a1, b1, a1 * b1], 0).unwrap()).unwrap(),
                &Dirichlet::new(Var::stack(&[a2, b2, a2 * b2], 0).unwrap()).unwrap(),
            ),
        ),
    ];
    for (name, kl) in kls {
        let kl = kl.unwrap().item().unwrap();
        prop_assert!(
            kl >= F::lit(0.0),
            "{} {}: KL {:e} between {:?} and {:?}",
            F::DTYPE,
            name,
            kl,
            q,
            p
        );
    }
    Ok(())
}

/// Divergences between near concentrations far up the range are finite and
/// at least 0 (the remainders' squares of differences overflow there, and
/// their forms give way to the others); a Beta divergence whose two
/// concentrations move by one fraction keeps its digits; and `KL(Beta(a, 2)
/// || Beta(1.1 a, 2))` at `a = 1e100` is its limit `2 (r - 1 - ln r)`, `r =
/// 1.1` (the divergence of the Gamma(2) that `1 - x` becomes).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn divergences_between_near_huge_concentrations_are_finite() {
    for a in [1e100, 1e155, 1e250, 3e307] {
        let tape = Tape::<f64>::new();
        let (q, p) = (
            tape.var(Tensor::scalar(a)),
            tape.var(Tensor::scalar(a * 1.05)),
        );
        let (one, two) = (tape.scalar(1.0), tape.scalar(2.0));
        let kls = [
            kl_divergence(&Gamma::new(q, one).unwrap(), &Gamma::new(p, one).unwrap()),
            kl_divergence(
                &InverseGamma::new(q, two).unwrap(),
                &InverseGamma::new(p, two).unwrap(),
            ),
            kl_divergence(&Beta::new(q, q).unwrap(), &Beta::new(p, p).unwrap()),
            kl_divergence(&Beta::new(q, two).unwrap(), &Beta::new(p, two).unwrap()),
            kl_divergence(
                &VonMises::new(one, q).unwrap(),
                &VonMises::new(one, p).unwrap(),
            ),
        ];
        for (i, kl) in kls.into_iter().enumerate() {
            let kl = kl.unwrap();
            let value = kl.item().unwrap();
            assert!(
                value.is_finite() && value >= 0.0,
                "{a:e}, divergence {i}: {value:e}"
            );
            let g = kl.backward().unwrap();
            assert!(g.all_finite(), "{a:e}, divergence {i}: gradients");
        }
    }
    // both concentrations moved by one fraction, where the terms of size
    // δ²/a cancel to the divergence (mpmath at 300 digits: value, then the
    // slopes in a1, b1, a2, b2)
    let cases = [
        (
            [1e100, 1e100, 1.05e100, 1.05e100],
            6.049_179_152_840_010_1e-4,
            [
                -1.25e-102,
                -1.25e-102,
                1.190_476_190_476_192_9e-102,
                1.190_476_190_476_192_9e-102,
            ],
        ),
        (
            [1e12, 1e12, 1_000_000_999_999.999_9, 1_000_000_999_999.999_9],
            2.499_998_332_725_482_4e-13,
            [
                -2.499_999_999_696_074_2e-19,
                -2.499_999_999_696_074_2e-19,
                2.499_997_499_698_574_8e-19,
                2.499_997_499_698_574_8e-19,
            ],
        ),
        (
            [2e8, 5e7, 200_020_000.0, 50_005_000.0],
            2.499_833_363_330_583_6e-9,
            [
                -5.000_000_015e-14,
                -8.000_000_064e-13,
                4.999_500_064_992_750_8e-14,
                7.999_200_143_982_402_1e-13,
            ],
        ),
    ];
    for (x, value, slopes) in cases {
        let tape = Tape::<f64>::new();
        let v = x.map(|x| tape.var(Tensor::scalar(x)));
        let kl = kl_divergence(
            &Beta::new(v[0], v[1]).unwrap(),
            &Beta::new(v[2], v[3]).unwrap(),
        )
        .unwrap();
        let got = kl.item().unwrap();
        assert!(
            (got - value).abs() <= 1e-12 * value,
            "{x:?}: {got:e} vs {value:e}"
        );
        let g = kl.backward().unwrap();
        for (i, want) in slopes.into_iter().enumerate() {
            let got = g.get(v[i]).unwrap().item().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.abs(),
                "{x:?}, slope {i}: {got:e} vs {want:e}"
            );
        }
    }
    let tape = Tape::<f64>::new();
    let (a, two) = (1e100, tape.scalar(2.0));
    let q = Beta::new(tape.scalar(a), two).unwrap();
    let p = Beta::new(tape.scalar(a * 1.1), two).unwrap();
    let kl = kl_divergence(&q, &p).unwrap().item().unwrap();
    let r = 1.1f64;
    let want = 2.0 * ((r - 1.0) - r.ln());
    assert!((kl - want).abs() <= 1e-13 * want, "{kl:e} vs {want:e}");
}

/// KL(Gamma || Gamma) where shape and rate move by one fraction (the same
/// mean): terms of size `a t²` cancel to about `t²/4`. Values and slopes
/// in `a1, b1, a2, b2` against mpmath at 300 digits (the rate slopes of
/// the first two cases are 0 to the reference's own precision).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn gamma_divergence_along_a_fixed_mean_keeps_its_digits() {
    let cases = [
        (
            [1e100, 1e100, 1.05e100, 1.05e100],
            6.049_179_152_840_010_1e-4,
            [-2.5e-102, 0.0, 2.380_952_380_952_385_8e-102, 0.0f64],
        ),
        (
            [1e12, 1e12, 1_000_000_999_999.999_9, 1_000_000_999_999.999_9],
            2.499_998_332_725_065_7e-13,
            [
                -4.999_999_999_391_315_1e-19,
                0.0,
                4.999_994_999_396_316_3e-19,
                0.0,
            ],
        ),
        (
            [3e5, 2.0, 300_299.999_999_999_94, 2.002],
            2.498_337_357_335_971_8e-7,
            [
                -1.666_668_434_626_782_8e-9,
                -1.258_371_185_031_137_4e-11,
                1.665_003_430_271_510_7e-9,
                1.257_114_070_960_177_4e-11,
            ],
        ),
    ];
    for (x, value, slopes) in cases {
        let tape = Tape::<f64>::new();
        let v = x.map(|x| tape.var(Tensor::scalar(x)));
        let q = Gamma::new(v[0], v[1]).unwrap();
        let kl = kl_divergence(&q, &Gamma::new(v[2], v[3]).unwrap()).unwrap();
        let got = kl.item().unwrap();
        assert!(
            (got - value).abs() <= 1e-12 * value,
            "{x:?}: {got:e} vs {value:e}"
        );
        let g = kl.backward().unwrap();
        for (i, want) in slopes.into_iter().enumerate() {
            let got = g.get(v[i]).unwrap().item().unwrap();
            let tolerance = if want == 0.0 {
                1e-40
            } else {
                1e-9 * want.abs()
            };
            assert!(
                (got - want).abs() <= tolerance,
                "{x:?}, slope {i}: {got:e} vs {want:e}"
            );
        }
    }
}

/// The Beta, Gamma and Dirichlet divergences where every parameter of the
/// second is that of the first times one factor (the means kept, the
/// spread changed), at concentrations from 1e12: the terms of size `a ln a`
/// cancel to a divergence of order 1, and where the inputs' proportions
/// differ in their last bits (`2e100` against `3e100`, which are not in
/// the ratio 2:3 as floats) to one of about `ε² a`. Values and slopes
/// (first distribution's parameters, then the second's) against mpmath at
/// 400 digits at the inputs as floats; in `f32` at the inputs rounded to
/// `f32`.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn divergences_where_every_concentration_scales_keep_their_digits() {
    fn check<F: Element>(
        name: &str,
        x: &[f64],
        value: f64,
        slopes: &[f64],
        rtol: f64,
        kl: for<'t> fn(&[Var<'t, F>]) -> Result<Var<'t, F>>,
    ) {
        let tape = Tape::<F>::new();
        let v: Vec<_> = x
            .iter()
            .map(|&x| tape.var(Tensor::scalar(F::lit(x))))
            .collect();
        let kl = kl(&v).unwrap();
        let got = kl.value().to_f64().data()[0];
        assert!(
            (got - value).abs() <= rtol * value,
            "{name} {x:?}: {got:e} vs {value:e}"
        );
        let g = kl.backward().unwrap();
        for (i, &want) in slopes.iter().enumerate() {
            let got = g.get(v[i]).unwrap().to_f64().data()[0];
            assert!(
                (got - want).abs() <= rtol * want.abs(),
                "{name} {x:?}, slope {i}: {got:e} vs {want:e}"
            );
        }
    }
    fn beta<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        kl_divergence(&Beta::new(v[0], v[1])?, &Beta::new(v[2], v[3])?)
    }
    fn gamma<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        kl_divergence(&Gamma::new(v[0], v[1])?, &Gamma::new(v[2], v[3])?)
    }
    fn dirichlet<'t, F: Element>(v: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        let row = |v: &[Var<'t, F>]| Dirichlet::new(Var::stack(v, 0)?);
        kl_divergence(&row(&v[..3])?, &row(&v[3..])?)
    }
    let f64_cases: [(&str, &[f64], f64, &[f64], _); 6] = [
        (
            "Beta",
            &[2e12, 3e12, 3e12, 4.5e12],
            0.047267445945926605307,
            &[
                -7.50000000000175e-14,
                -3.3333333333339259259e-14,
                5.0000000000009722222e-14,
                2.2222222222225514403e-14,
            ],
            beta::<f64> as for<'t> fn(&[Var<'t, f64>]) -> Result<Var<'t, f64>>,
        ),
        (
            "Beta",
            &[2e100, 3e100, 3e100, 4.5e100],
            3.3965661823393872363e+68,
            &[
                1.7484020030031561662e-16,
                -1.1656013353354375196e-16,
                -1.1656013353354374517e-16,
                7.770675568902916093e-17,
            ],
            beta::<f64>,
        ),
        (
            "Beta, near",
            &[2e40, 3e40, 2.0000002e40, 3.0000003e40],
            9.7433435115101377878e-8,
            &[
                -2.4178516376127564394e-24,
                1.6119010917418375613e-24,
                2.4178513958276170183e-24,
                -1.6119009305517446139e-24,
            ],
            beta::<f64>,
        ),
        (
            "Gamma",
            &[2e100, 3e100, 3e100, 4.5e100],
            5.6609436372323120605e+68,
            &[
                2.9140033383385936858e-16,
                -1.9426688922257292497e-16,
                -1.942668892225729061e-16,
                1.2951125948171526654e-16,
            ],
            gamma::<f64>,
        ),
        (
            "Dirichlet",
            &[2e12, 3e12, 4e12, 3e12, 4.5e12, 6e12],
            0.094534891891849121108,
            &[
                -9.7222222222242026749e-14,
                -5.5555555555563786008e-14,
                -3.4722222222226401749e-14,
                6.481481481482581733e-14,
                3.7037037037041609511e-14,
                2.3148148148150470107e-14,
            ],
            dirichlet::<f64>,
        ),
        (
            "Dirichlet",
            &[2e100, 3e100, 4e100, 2.1e100, 3.15e100, 4.2e100],
            3.7150566621060728971e+68,
            &[
                6.5834890236538594779e-17,
                -1.3166978047307719809e-16,
                6.5834890236538594779e-17,
                -6.2699895463370093521e-17,
                1.2539979092674018337e-16,
                -6.2699895463370093521e-17,
            ],
            dirichlet::<f64>,
        ),
    ];
    for (name, x, value, slopes, kl) in f64_cases {
        check(name, x, value, slopes, 1e-11, kl);
    }
    // the inputs as f32: 2e30 is 2.0000000300949324e30, and so on
    let f32_cases: [(&str, &[f64], f64, &[f64], _); 3] = [
        (
            "Beta f32",
            &[2e30, 3e30, 3e30, 4.5e30],
            6343323146555145.4693,
            &[
                7.5557862588959938466e-8,
                -5.0371910929969241904e-8,
                -5.0371909661304579139e-8,
                3.3581273389461860395e-8,
            ],
            beta::<f32> as for<'t> fn(&[Var<'t, f32>]) -> Result<Var<'t, f32>>,
        ),
        (
            "Gamma f32",
            &[2e30, 3e30, 3e30, 4.5e30],
            10572205338932740.515,
            &[
                1.2592977351892918037e-7,
                -8.3953186574835010331e-8,
                -8.3953183050766439534e-8,
                5.5968789170386764921e-8,
            ],
            gamma::<f32>,
        ),
        (
            "Dirichlet f32",
            &[2e30, 3e30, 4e30, 3e30, 4.5e30, 6e30],
            10572205181142467.633,
            &[
                4.1976589763349032988e-8,
                -8.3953183755580147382e-8,
                4.1976589763349032988e-8,
                -2.7984394193630219616e-8,
                5.5968788857136219918e-8,
                -2.7984394193630219616e-8,
            ],
            dirichlet::<f32>,
        ),
    ];
    for (name, x, value, slopes, kl) in f32_cases {
        check(name, x, value, slopes, 3.0 * f64::from(f32::EPSILON), kl);
    }
}

/// A long parameter tensor is checked in two halves on two threads: a bad
/// value in either half is reported, and of two, the first.
#[test]
fn a_bad_value_anywhere_in_a_long_parameter_is_reported() {
    let n = 300_000;
    for (bad, want) in [
        (vec![(n - 1, -2.0)], -2.0),
        (vec![(3, 0.0), (n - 1, -2.0)], 0.0),
        (vec![(n / 2 + 1, f64::INFINITY), (n / 2 - 1, -5.0)], -5.0),
    ] {
        let tape = Tape::<f64>::new();
        let mut data = vec![1.5; n];
        for &(i, v) in &bad {
            data[i] = v;
        }
        let a = tape.var(Tensor::from_vec(data, &[n]).unwrap());
        match Gamma::new(a, tape.scalar(1.0)) {
            Err(Error::InvalidParameter {
                parameter, value, ..
            }) => assert_eq!((parameter, value), ("concentration", want)),
            other => panic!("{bad:?}: {:?}", other.map(|_| ())),
        }
    }
    let tape = Tape::<f64>::new();
    assert!(Gamma::new(tape.var(Tensor::full(&[n], 1.5)), tape.scalar(1.0)).is_ok());
}

/// A mixture component whose density at `x` underflows to 0 (a scale far
/// below `x`'s distance from its location) gets exactly no responsibility,
/// and so no gradient: `0 · z / scale` was NaN where `z / scale`
/// overflows, in every parameter of the mixture. The same for a Normal
/// whose log-density is multiplied by 0.
#[test]
fn a_component_with_no_responsibility_gets_a_zero_gradient() {
    // components of shape [2] take the mixture's fused op, a batch of one
    // ([1, 2]) the Normal op's broadcasting branch
    fn check<F: Element>(tiny: f64, huge: f64, x: f64, shape: &[usize]) {
        let tape = Tape::<F>::new();
        let c = |v: &[f64]| tape.var(Tensor::from_fn(shape, |i| F::lit(v[i])));
        let (w, m, s) = (c(&[0.5, 0.5]), c(&[-10.0, 10.0]), c(&[tiny, huge]));
        let xs = tape.constant(Tensor::from_fn(&[3], |i| F::lit(x * (i as f64 + 1.0))));
        let lp = MixtureOfNormals::new(w, m, s)
            .unwrap()
            .log_prob(xs)
            .unwrap();
        assert!(lp.value().data().iter().all(|v| v.is_finite()));
        let g = lp.sum().backward().unwrap();
        for p in [w, m, s] {
            let d = g.get(p).unwrap();
            assert!(d.data().iter().all(|v| v.is_finite()), "{:?}", d.data());
        }
        // the tiny component's location and scale: no responsibility at all
        assert_eq!(g.get(m).unwrap().data()[0], F::zero());
        assert_eq!(g.get(s).unwrap().data()[0], F::zero());
        // a Normal with one loc and scale for all values, and one per value
        let m0 = m.reshape(&[2]).unwrap().index(0).unwrap();
        let s0 = s.reshape(&[2]).unwrap().index(0).unwrap();
        for (loc, scale) in [
            (m0, s0),
            (
                m0.broadcast_to(&[3]).unwrap(),
                s0.broadcast_to(&[3]).unwrap(),
            ),
        ] {
            let normal = Normal::new(loc, scale).unwrap();
            let g = (normal.log_prob(xs).unwrap() * F::zero())
                .sum()
                .backward()
                .unwrap();
            assert_eq!(g.get(s).unwrap().data()[0], F::zero());
        }
    }
    for shape in [&[2][..], &[1, 2]] {
        check::<f32>(1e-20, 1e20, 1e20, shape);
        check::<f64>(1e-200, 1e200, 1e200, shape);
    }
}

/// A value so far from every component, in its scales, that each `z²`
/// overflows has the log-density -inf (its correctly rounded value) and the
/// gradients of the limit: the nearest component takes all of the
/// responsibility (components tied in `|z|` share it by weight), as the
/// same mixture in `f64`, which does not overflow there, gives. They were
/// NaN in every parameter. Both fused ops: one set of components, and a
/// set per value (which was the composed form's, NaN as well).
#[test]
fn a_value_beyond_the_float_range_of_every_component_gets_the_limiting_gradients() {
    fn run<F: Element>(
        x: f64,
        locs: [f64; 2],
        scales: [f64; 2],
        per_value: bool,
    ) -> (f64, Vec<Vec<f64>>) {
        let tape = Tape::<F>::new();
        let shape: &[usize] = if per_value { &[1, 2] } else { &[2] };
        let c = |v: [f64; 2]| tape.var(Tensor::from_fn(shape, |i| F::lit(v[i])));
        let (w, m, s) = (c([0.3, 0.7]), c(locs), c(scales));
        let xs = tape.var(Tensor::from_fn(&[2], |i| {
            F::lit(x * (1.0 - 2.0 * i as f64))
        }));
        let lp = MixtureOfNormals::new(w, m, s)
            .unwrap()
            .log_prob(xs)
            .unwrap();
        let g = lp.sum().backward().unwrap();
        let f = |v| {
            let t: &Tensor<F> = g.get(v).unwrap();
            t.data().iter().map(|v| v.to_f64().unwrap()).collect()
        };
        let value = lp.value().data()[0].to_f64().unwrap();
        (value, vec![f(xs), f(w), f(m), f(s)])
    }
    for per_value in [false, true] {
        // the nearest component: the second at both values (half the distance
        // over twice the scale); against f64, which does not overflow there
        let (value, got) = run::<f32>(1e20, [0.0, 1.0], [1.0, 2.0], per_value);
        let (_, want) = run::<f64>(1e20, [0.0, 1.0], [1.0, 2.0], per_value);
        assert_eq!(value, f64::NEG_INFINITY);
        for (got, want) in got.iter().zip(&want) {
            for (&g, &w) in got.iter().zip(want) {
                // (a scale's gradient, z²/s, overflows f32 as it should)
                let w32 = w as f32 as f64;
                assert!(
                    g == w32 || (g - w).abs() <= 1e-6 * w.abs(),
                    "{got:?} vs {want:?}"
                );
            }
        }
        // two components tied in |z| share by weight: ∂/∂w_k = Σ r_k / w_k = 2
        let (_, got) = run::<f32>(1e20, [0.0, 0.0], [1.0, 1.0], per_value);
        let x = 1e20f32 as f64;
        assert_eq!(got[0], [-x, x]);
        assert_eq!(got[2], [0.0, 0.0]);
        assert_eq!(got[3], [f64::INFINITY; 2]);
        for dw in &got[1] {
            assert!((dw - 2.0).abs() < 1e-6, "{:?}", got[1]);
        }
        // and in f64 past 1.3e154 scales, against the gradient of the nearest
        // component alone
        let (_, got) = run::<f64>(1e200, [0.0, 1.0], [1.0, 2.0], per_value);
        assert_eq!(got[0], [-2.5e199, 2.5e199]);
        assert_eq!(got[1], [0.0, 2.0 / 0.7]);
    }
    // `responsibilities` gives the same limit: all on the nearest, a tie
    // shared by weight
    let tape = Tape::<f32>::new();
    let c = |v: [f32; 2]| tape.var(Tensor::from_vec(v.to_vec(), &[2]).unwrap());
    let x = tape.var(Tensor::from_vec(vec![1e20, -1e20], &[2]).unwrap());
    for (locs, scales, want) in [
        ([0.0, 1.0], [1.0, 2.0], [0.0, 1.0]),
        ([0.0, 0.0], [1.0, 1.0], [0.3, 0.7]),
    ] {
        let mix = MixtureOfNormals::new(c([0.3, 0.7]), c(locs), c(scales)).unwrap();
        let r = mix.responsibilities(x).unwrap().value();
        for (got, want) in r.data().iter().zip(want.iter().cycle()) {
            assert!((got - want).abs() < 1e-6, "{:?} against {want:?}", r.data());
        }
    }
}

/// Far in the tail of two components that nearly coincide, the
/// responsibilities keep what tells the components apart. At one loc and
/// scale, weights 0.3 and 0.7, a value 10⁴ scales away in `f32` (10⁹ in
/// `f64`) has `z²/2` past `2^24` (`2^53`) times `ln(0.7/0.3)`; taken as
/// differences of the rounded `ln w_k - z_k²/2` the weights were rounded
/// away (0.02 and 0.98 in `f32` with one set of components, 0.5 and 0.5
/// with a set per value). At locs 0 and 10⁻⁴ and one scale, the quadratic
/// terms differ by `(2x - 10⁻⁴) 10⁻⁴ / 2 ≈ 1`, which `x - 10⁻⁴` itself
/// rounds away in `f32` at `x = 10⁴`. The responsibilities are
/// `w_k ∂/∂w_k` of the log-density; both fused ops (one set of components,
/// and a set per value) are checked.
#[test]
fn far_in_the_tail_the_responsibilities_keep_what_tells_the_components_apart() {
    fn responsibilities<F: Element>(x: f64, locs: [f64; 2], per_value: bool) -> Vec<f64> {
        let tape = Tape::<F>::new();
        let shape: &[usize] = if per_value { &[1, 2] } else { &[2] };
        let c = |v: [f64; 2]| tape.var(Tensor::from_fn(shape, |i| F::lit(v[i])));
        let (w, m, s) = (c([0.3, 0.7]), c(locs), c([1.0, 1.0]));
        let lp = MixtureOfNormals::new(w, m, s)
            .unwrap()
            .log_prob(tape.var(Tensor::from_fn(&[3], |_| F::lit(x))))
            .unwrap();
        let g = lp.sum().backward().unwrap();
        let dw: &Tensor<F> = g.get(w).unwrap();
        // three values, each with the same responsibilities
        let dw: Vec<f64> = dw
            .data()
            .iter()
            .map(|v| v.to_f64().unwrap() / 3.0)
            .collect();
        let from_gradients = vec![0.3 * dw[0], 0.7 * dw[1]];
        // and as `responsibilities` gives them, at each of the values
        let mix = MixtureOfNormals::new(w, m, s).unwrap();
        let r = mix
            .responsibilities(tape.var(Tensor::from_fn(&[3], |_| F::lit(x))))
            .unwrap()
            .value();
        for v in r.data().chunks(2) {
            for (a, b) in v.iter().zip(&from_gradients) {
                let a = a.to_f64().unwrap();
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-30),
                    "{a} against {b}"
                );
            }
        }
        from_gradients
    }
    let close = |got: Vec<f64>, want: [f64; 2], tol: f64| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "{got:?} against {want:?}");
        }
    };
    // e_0 - e_1 = ln(0.3 / 0.7) - ((2x - d) d) / 2 with x = 10⁴, d = 10⁻⁴
    // (the locs as f32 rounds them)
    let d = 1e-4f32 as f64;
    let gap = (0.3f64 / 0.7).ln() - (2.0 * 1e4 - d) * d / 2.0;
    let r0 = 1.0 / (1.0 + (-gap).exp());
    for per_value in [false, true] {
        let r = |x, locs| responsibilities::<f32>(x, locs, per_value);
        close(r(1e4, [0.0, 0.0]), [0.3, 0.7], 1e-6);
        close(r(1e4, [0.0, 1e-4]), [r0, 1.0 - r0], 1e-5);
        let r64 = responsibilities::<f64>(1e9, [0.0, 0.0], per_value);
        close(r64, [0.3, 0.7], 1e-12);
    }
}

/// How [`a_mixture_takes_the_composed_forms_values_and_gradients`] computes
/// a mixture's log-density.
#[derive(Clone, Copy, PartialEq)]
enum MixtureForm {
    /// One set of components for every value (shape `[K]`): a fused op.
    Shared,
    /// A batch of one (components of shape `[1, K]`): the fused op for a
    /// component set per value.
    PerValue,
    /// `logsumexp(ln w + ln N(x; m, s))` written out.
    Composed,
}

/// The fused ops for one set of components and for a set per value agree
/// with the composed form, in value and in every gradient, over enough
/// values for two threads and a ragged last block, with a component that
/// has no responsibility at some values.
#[test]
fn a_mixture_takes_the_composed_forms_values_and_gradients() {
    fn run<F: Element>(form: MixtureForm) -> Vec<Vec<f64>> {
        let tape = Tape::<F>::new();
        let shape: &[usize] = if form == MixtureForm::Shared {
            &[3]
        } else {
            &[1, 3]
        };
        let c = |v: [f64; 3]| {
            tape.var(Tensor::from_vec(v.iter().map(|&x| F::lit(x)).collect(), shape).unwrap())
        };
        let (w, m, s) = (
            c([0.2, 0.5, 0.3]),
            c([-1.0, 0.5, 40.0]),
            c([0.3, 2.0, 1e-3]),
        );
        let n = 70_001;
        let x = tape.var(Tensor::from_fn(&[n], |i| {
            F::lit(((i * 7919) % 1000) as f64 * 0.01 - 5.0)
        }));
        let lp = match form {
            MixtureForm::Composed => {
                let x1 = x.unsqueeze(1).unwrap();
                let joint = Normal::new(m, s).unwrap().log_prob(x1).unwrap() + w.ln();
                joint.logsumexp(1, false).unwrap()
            }
            _ => MixtureOfNormals::new(w, m, s).unwrap().log_prob(x).unwrap(),
        };
        let g = (lp * Tensor::from_fn(&[n], |i| F::lit(1.0 + (i % 3) as f64)))
            .sum()
            .backward()
            .unwrap();
        let f = |t: &Tensor<F>| {
            t.data()
                .iter()
                .map(|v| v.to_f64().unwrap())
                .collect::<Vec<f64>>()
        };
        let mut out = vec![f(&lp.value())];
        out.extend([x, w, m, s].iter().map(|v| f(g.get(*v).unwrap())));
        out
    }
    use MixtureForm::*;
    for fused in [Shared, PerValue] {
        for (fused, composed, rel) in [
            (run::<f64>(fused), run::<f64>(Composed), 1e-12),
            (run::<f32>(fused), run::<f32>(Composed), 1e-4),
        ] {
            for (a, b) in fused.iter().zip(&composed) {
                assert_eq!(a.len(), b.len());
                let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (u, v) in a.iter().zip(b) {
                    assert!((u - v).abs() <= rel * scale.max(v.abs()), "{u} vs {v}");
                }
            }
        }
    }
}

/// Components of their own for each of 12 001 values (several blocks,
/// both halves of the backward, and two parts of the responsibilities that
/// split a value's three): the fused ops take each value's own, in the
/// log-density and the responsibilities and in every gradient of each, as
/// the composed forms do.
#[test]
fn a_mixture_with_components_of_its_own_per_value_takes_the_composed_form() {
    let n = 12_001;
    let run = |fused: bool| {
        let tape = Tape::<f64>::new();
        let p = |f: fn(usize) -> f64| tape.var(Tensor::from_fn(&[n, 3], f));
        let w = p(|i| ((i * 7) % 13) as f64 * 0.1 - 0.6);
        let m = p(|i| ((i * 5) % 11) as f64 * 0.5 - 2.5);
        let s = p(|i| 0.3 + ((i * 3) % 7) as f64 * 0.2);
        let x = tape.var(Tensor::from_fn(&[n], |i| {
            ((i * 31) % 97) as f64 * 0.1 - 4.8
        }));
        let mix = MixtureOfNormals::from_logits(w, m, s).unwrap();
        let joint = || {
            let joint = Normal::new(m, s)
                .unwrap()
                .log_prob(x.unsqueeze(1).unwrap())
                .unwrap();
            joint + w.log_softmax(1).unwrap()
        };
        let (lp, r) = if fused {
            (mix.log_prob(x).unwrap(), mix.responsibilities(x).unwrap())
        } else {
            let r = joint().log_softmax(1).unwrap().exp();
            (joint().logsumexp(1, false).unwrap(), r)
        };
        let weights = |shape: &[usize]| Tensor::from_fn(shape, |i| 1.0 + (i % 5) as f64);
        let mut out = vec![lp.value(), r.value()];
        for y in [lp, r] {
            let g = (y * weights(&y.shape())).sum().backward().unwrap();
            out.extend([x, w, m, s].iter().map(|v| g.get(*v).unwrap().clone()));
        }
        out
    };
    for (a, b) in run(true).iter().zip(&run(false)) {
        for (u, v) in a.data().iter().zip(b.data()) {
            assert!((u - v).abs() <= 1e-12 * v.abs().max(1.0), "{u} vs {v}");
        }
    }
}

/// No values: an empty log-density and empty responsibilities, with zero
/// gradients, for one set of components and for a set per value.
#[test]
fn a_mixture_at_no_values_gives_empty_results() {
    for shape in [&[3][..], &[1, 3]] {
        let tape = Tape::<f64>::new();
        let c = |v: [f64; 3]| tape.var(Tensor::from_vec(v.to_vec(), shape).unwrap());
        let (w, m, s) = (c([0.1, 0.2, 0.3]), c([0.0, 1.0, 2.0]), c([1.0, 1.0, 2.0]));
        let mix = MixtureOfNormals::from_logits(w, m, s).unwrap();
        let x = tape.var(Tensor::from_vec(vec![], &[0]).unwrap());
        let (lp, r) = (mix.log_prob(x).unwrap(), mix.responsibilities(x).unwrap());
        assert_eq!((lp.shape(), r.shape()), (vec![0], vec![0, 3]));
        for y in [lp, r] {
            let g = y.sum().backward().unwrap();
            assert_eq!(g.get(w).unwrap().data(), [0.0; 3]);
        }
    }
}

/// A Normal with a location and a scale per value takes a parallel path;
/// broadcast against a value with one more axis, the general one: the same
/// bits, forward and backward.
#[test]
fn a_normal_with_one_scale_per_value_gives_the_general_bits() {
    let n = 50_003;
    let tape = Tape::<f32>::new();
    let m = tape.var(Tensor::from_fn(&[n], |i| ((i % 101) as f32 - 50.0) * 0.1));
    let s = tape.var(Tensor::from_fn(&[n], |i| 0.05 + (i % 37) as f32 * 0.1));
    let x = Tensor::from_fn(&[n], |i| ((i * 31) % 997) as f32 * 0.01 - 5.0);
    let d = Normal::new(m, s).unwrap();
    let same = d.log_prob(tape.var(x.clone())).unwrap();
    let wide = d.log_prob(tape.var(x.reshape(&[1, n]).unwrap())).unwrap();
    let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&same.value()), bits(&wide.value()));
    let (g1, g2) = (
        same.sum().backward().unwrap(),
        wide.sum().backward().unwrap(),
    );
    for v in [m, s] {
        assert_eq!(bits(g1.get(v).unwrap()), bits(g2.get(v).unwrap()));
    }
}

/// The Categorical KL op's gradients, near-equal (its `expm1` form) and far
/// apart (its direct sum), over a batch broadcast against one distribution.
#[test]
fn categorical_kl_gradcheck_in_both_forms() {
    fn kl<'t>(_: &'t Tape<f64>, a: &[Var<'t, f64>]) -> Result<Var<'t, f64>> {
        let (q, p) = (
            Categorical::from_logits(a[0])?,
            Categorical::from_logits(a[1])?,
        );
        Ok(kl_divergence(&q, &p)?.sum())
    }
    let near = Tensor::from_vec(vec![0.3, -0.2, 0.1, 1.0, 0.0, -1.0], &[2, 3]).unwrap();
    gc("categorical KL, near", kl, &[near, v(&[0.31, -0.2, 0.1])]);
    let far = Tensor::from_vec(vec![4.0, -3.0, 0.5, -2.0, 6.0, 1.0], &[2, 3]).unwrap();
    gc("categorical KL, far", kl, &[far, v(&[-1.0, 3.0, 0.0])]);
}

/// The Gumbel, Weibull, inverse Gamma and geometric densities (in the
/// value and every parameter, the geometric's in its logits), entropies,
/// moments, KLs and draws, with parameters that broadcast.
#[test]
fn gradcheck_gumbel_weibull_inverse_gamma_and_geometric() {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    // values below the mode (e^-z large) and above it
    let x = Tensor::from_rows(&[[0.3, -2.0, 7.5], [1.2, 0.05, -4.0]]).unwrap();
    gc(
        "gumbel log_prob",
        |_, a| Gumbel::new(a[0], a[1].exp())?.log_prob(a[2]),
        &[col(&[0.2, -1.0]), v(&[0.1, -0.5, 1.0]), x.clone()],
    );
    let xp = x.map(|x| x.abs() + 0.1);
    gc(
        "weibull log_prob",
        |_, a| Weibull::new(a[0].exp(), a[1].exp())?.log_prob(a[2]),
        &[col(&[-0.5, 1.2]), v(&[0.1, -0.5, 1.0]), xp.clone()],
    );
    gc(
        "inverse gamma log_prob",
        |_, a| InverseGamma::new(a[0].exp(), a[1].exp())?.log_prob(a[2]),
        // a concentration of e^3.5 = 33 takes the form for large ones near the mode
        &[col(&[-0.5, 3.5]), v(&[0.1, -0.5, 3.0]), xp.clone()],
    );
    gc(
        "geometric log_prob",
        |tape, a| {
            let k = tape.constant(Tensor::from_rows(&[[0.0, 3.0, 12.0], [1.0, 40.0, 7.0]])?);
            Geometric::from_logits(a[0])?.log_prob(k)
        },
        &[col(&[-1.5, 2.0])],
    );
    gc(
        "entropies and moments",
        |_, a| {
            let (s, k) = (a[0].exp(), a[1].exp());
            let g = Gumbel::new(a[1], s)?;
            let w = Weibull::new(k, s)?;
            let ig = InverseGamma::new(k + 2.5, s)?;
            let geo = Geometric::from_logits(a[1])?;
            let h = g.entropy()? + w.entropy()? + ig.entropy()? + geo.entropy()?;
            let m = g.mean()? * g.variance()? + w.mean()? + w.variance()?;
            Ok(h + m + ig.mean()? + ig.variance()? + geo.mean()? * geo.variance()?)
        },
        // concentrations e^3.2 = 24.5 and 0.61: both forms of the Weibull variance
        &[v(&[0.1, -0.5, 1.0]), v(&[0.0, 3.2, -0.5])],
    );
    gc(
        "kls",
        |_, a| {
            let (sq, sp) = (a[1].exp(), a[3].exp());
            let g = kl_divergence(&Gumbel::new(a[0], sq)?, &Gumbel::new(a[2], sp)?)?;
            let (kq, kp) = (a[0].exp(), a[2].exp());
            let w = kl_divergence(&Weibull::new(kq, sq)?, &Weibull::new(kp, sp)?)?;
            let ig = kl_divergence(&InverseGamma::new(kq, sq)?, &InverseGamma::new(kp, sp)?)?;
            let geo = kl_divergence(
                &Geometric::from_logits(a[0])?,
                &Geometric::from_logits(a[2])?,
            )?;
            Ok(g + w + ig + geo)
        },
        &[
            col(&[0.3, -1.0]),
            col(&[0.7, -0.2]),
            v(&[0.1, 0.4, 0.5]),
            v(&[0.3, 0.6, -0.1]),
        ],
    );
    gc(
        "draws",
        |_, a| {
            let mut rng = StdRng::seed_from_u64(3);
            let (s, k) = (a[1].exp(), a[0].exp());
            let g = Gumbel::new(a[0], s)?.rsample_n(Some(3), &mut rng)?;
            let w = Weibull::new(k, s)?.rsample_n(Some(3), &mut rng)?;
            Ok(g + w)
        },
        &[v(&[0.3, -1.0]), v(&[0.7, -0.2])],
    );
}

/// The inverse Gamma's `rsample` gradient is unbiased: `E[y + ln y]` for
/// `y ~ InverseGamma(a, b)` is `b / (a - 1) + ln b - ψ(a)`, and the mean
/// of the draws' gradients is its gradient within the statistical check's
/// bound (finite differences do not apply: the draws' gradient holds the
/// Gamma's CDF fixed, not the random numbers).
#[test]
fn inverse_gamma_rsample_gradient_is_unbiased() {
    use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
    let (a, b) = (5.0, 2.0);
    let exact = {
        let tape = Tape::<f64>::new();
        let (av, bv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
        let e = bv / (av - 1.0) + bv.ln() - av.digamma();
        let g = e.backward().unwrap();
        vec![
            g.get(av).unwrap().item().unwrap(),
            g.get(bv).unwrap().item().unwrap(),
        ]
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::<f64>::new();
            let (av, bv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
            let y = InverseGamma::new(av, bv)?.rsample_n(Some(16), rng)?;
            let g = ((y + y.ln()).sum() / 16.0).backward()?;
            Ok(vec![g.get(av).unwrap().item()?, g.get(bv).unwrap().item()?])
        },
        &exact,
        &StatGradCheck::default(),
        &mut StdRng::seed_from_u64(8),
    )
    .unwrap();
}

/// Draws of each family have its mean and variance (the geometric's also
/// its mass at small counts), and its entropy and KL are the Monte Carlo
/// limits of their integrals (all within four standard errors).
#[test]
fn gumbel_weibull_inverse_gamma_and_geometric_draws_and_integrals() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let mut rng = StdRng::seed_from_u64(31);
    let n = 200_000;
    let families: Vec<(&str, Boxed, Boxed)> = vec![
        (
            "gumbel",
            Box::new(Gumbel::new(s(0.5), s(0.7))?),
            Box::new(Gumbel::new(s(-1.0), s(2.0))?),
        ),
        (
            "weibull",
            Box::new(Weibull::new(s(1.7), s(2.0))?),
            Box::new(Weibull::new(s(0.8), s(1.2))?),
        ),
        (
            "inverse gamma",
            Box::new(InverseGamma::new(s(6.0), s(2.0))?),
            Box::new(InverseGamma::new(s(3.0), s(1.5))?),
        ),
        (
            "geometric",
            Box::new(Geometric::from_logits(s(-0.7))?),
            Box::new(Geometric::from_logits(s(0.4))?),
        ),
    ];
    for (name, q, p) in &families {
        let draws = q.sample_n(Some(n), &mut rng)?;
        let (m, se) = mean_and_se(&draws);
        let mean = q.mean()?.item()?;
        assert!(
            (m - mean).abs() < 4.0 * se,
            "{name} mean: {m} ± {se} vs {mean}"
        );
        // the variance's standard error from the draws' fourth moment
        let var = q.variance()?.item()?;
        let sq = draws.map(|x| (x - m).powi(2));
        let (ss, se) = mean_and_se(&sq);
        assert!(
            (ss - var).abs() < 4.0 * se,
            "{name} variance: {ss} ± {se} vs {var}"
        );
        kl_and_entropy_are_the_means_over(name, q.as_ref(), p.as_ref(), tape.constant(draws))?;
    }
    // the geometric's mass at small counts, and its sum over the counts
    let d = Geometric::from_logits(s(-0.7))?;
    let draws = d.sample_n(Some(n), &mut rng)?;
    for k in 0..6 {
        let p = d.log_prob(s(k as f64))?.item()?.exp();
        let share = draws.data().iter().filter(|&&x| x == k as f64).count() as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((share - p).abs() < 4.0 * se, "P({k}) = {p}, drawn {share}");
    }
    let ks = tape.constant(Tensor::from_fn(&[400], |i| i as f64));
    let total: f64 = d.log_prob(ks)?.value().data().iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-12, "{total}");
    Ok(())
}

/// Where the densities' terms overflow, the values are `-inf` (never NaN)
/// and the gradients infinite or finite, never NaN: the Gumbel far below
/// its mode (`e^-z` beyond the largest float, and `z` itself `-inf`), the
/// Weibull far above its scale (`e^(k t)` overflowing, and `k t` itself);
/// the inverse Gamma keeps its finite value where `b / x` underflows to 0
/// in `f32`, and its `-inf` where `b / x` overflows; the moments an
/// inverse Gamma lacks are `+inf`; the geometric's entropy and KL stay
/// finite at logits whose `e^-l` overflows.
#[test]
fn extreme_values_of_gumbel_weibull_inverse_gamma_and_geometric() -> Result<()> {
    let tape = Tape::<f32>::new();
    let no_nan = |v: Var<'_, f32>, inputs: &[Var<'_, f32>]| -> Result<Vec<f32>> {
        let values = v.value().data().to_vec();
        assert!(values.iter().all(|x| !x.is_nan()), "{values:?}");
        let g = v.sum().backward()?;
        for x in inputs {
            let g = g.get(*x).unwrap().data().to_vec();
            assert!(g.iter().all(|x| !x.is_nan()), "{g:?}");
        }
        Ok(values)
    };
    let (loc, scale) = (
        tape.var(Tensor::scalar(0.0)),
        tape.var(Tensor::scalar(1e-30)),
    );
    let x = tape.var(Tensor::vector(&[-100.0, -3e38, 1.0, 0.0]));
    let lp = no_nan(Gumbel::new(loc, scale)?.log_prob(x)?, &[loc, scale, x])?;
    assert_eq!(&lp[..2], &[f32::NEG_INFINITY; 2]);
    // z = 1e30: -(z + e^-z) - ln(scale) = -1e30 + 69
    assert_eq!(lp[2], -1e30, "{lp:?}");
    assert!((lp[3] - (1e30f64.ln() - 1.0) as f32).abs() < 1e-4, "{lp:?}");

    let (k, s) = (
        tape.var(Tensor::vector(&[2.0, 3e38])),
        tape.var(Tensor::scalar(1.0)),
    );
    let x = tape.var(Tensor::vector(&[1e30, 2.0]));
    let lp = no_nan(Weibull::new(k, s)?.log_prob(x)?, &[k, s, x])?;
    assert_eq!(lp, [f32::NEG_INFINITY; 2]);

    let (a, b) = (
        tape.var(Tensor::scalar(0.5)),
        tape.var(Tensor::scalar(1e-30)),
    );
    // (1e-40 is subnormal in f32: its reciprocal overflows, b / x does not)
    let x = tape.var(Tensor::vector(&[1e20, 1e-40]));
    let lp = no_nan(InverseGamma::new(a, b)?.log_prob(x)?, &[a, b, x])?;
    // a ln b - ln Γ(a) - (a + 1) ln x - b/x, with b/x = 1e-50 (0 in f32) and 1e10
    let direct =
        |x: f64| 0.5 * 1e-30f64.ln() - std::f64::consts::PI.sqrt().ln() - 1.5 * x.ln() - 1e-30 / x;
    for (&got, x) in lp.iter().zip([1e20, 1e-40f32 as f64]) {
        let want = direct(x);
        assert!(
            (got as f64 - want).abs() < 1e-6 * want.abs(),
            "{lp:?} vs {want}"
        );
    }
    // in f64, b / x beyond the largest float: -inf
    let t64 = Tape::<f64>::new();
    let (a, b) = (t64.var(Tensor::scalar(2.0)), t64.var(Tensor::scalar(1e300)));
    let x = t64.var(Tensor::scalar(1e-300));
    let lp = InverseGamma::new(a, b)?.log_prob(x)?;
    assert_eq!(lp.item()?, f64::NEG_INFINITY);
    let g = lp.backward()?;
    assert!(
        [a, b, x]
            .iter()
            .all(|v| !g.get(*v).unwrap().item().unwrap().is_nan())
    );
    let d = InverseGamma::new(tape.scalar(0.5), tape.scalar(1.0))?;
    assert_eq!(d.mean()?.item()?, f32::INFINITY);
    let d = InverseGamma::new(tape.var(Tensor::vector(&[1.5, 4.0])), tape.scalar(3.0))?;
    assert_eq!(d.variance()?.value().data()[0], f32::INFINITY);
    assert!((d.variance()?.value().data()[1] - 0.5).abs() < 1e-6);

    let l = tape.var(Tensor::vector(&[-200.0, -60.0, 0.0, 200.0]));
    let geo = Geometric::from_logits(l)?;
    let h = no_nan(geo.entropy()?, &[l])?;
    // ≈ 1 - l for l far below 0; softplus(-l) + l e^-l above
    assert!(
        (h[0] - 201.0).abs() < 1e-3 && (h[1] - 61.0).abs() < 1e-4,
        "{h:?}"
    );
    assert!(h.iter().all(|h| h.is_finite()));
    let p = Geometric::from_logits(tape.var(Tensor::vector(&[-199.0, -61.0, 1.0, 190.0])))?;
    let kl = no_nan(kl_divergence(&geo, &p)?, &[l])?;
    assert!(kl.iter().all(|k| k.is_finite() && *k >= 0.0), "{kl:?}");
    Ok(())
}

/// The Weibull and Gumbel divergences of `[k1, λ1, k2, λ2]` (the Gumbels
/// those Weibulls' negated logarithms are) on a tape of `F`: each value
/// and its gradient in the four parameters, as `f64`.
fn extreme_kls<F: Element>(p: [f64; 4]) -> Result<[[f64; 5]; 2]> {
    let tape = Tape::<F>::new();
    let [k1, s1, k2, s2] = p.map(|x| tape.var(Tensor::scalar(F::from_f64(x).unwrap())));
    let weibull = kl_divergence(&Weibull::new(k1, s1)?, &Weibull::new(k2, s2)?)?;
    // -ln X of a Weibull X: location -ln λ, scale 1/k
    let (q, p) = (
        Gumbel::new(-s1.ln(), (-k1.ln()).exp())?,
        Gumbel::new(-s2.ln(), (-k2.ln()).exp())?,
    );
    let gumbel = kl_divergence(&q, &p)?;
    let mut out = [[0.0; 5]; 2];
    for (o, kl) in out.iter_mut().zip([weibull, gumbel]) {
        let g = kl.backward()?;
        o[0] = kl.item()?.to_f64().unwrap();
        for (o, x) in o[1..].iter_mut().zip([k1, s1, k2, s2]) {
            *o = g.get(x).unwrap().item()?.to_f64().unwrap();
        }
    }
    Ok(out)
}

/// Near the largest `f32` the Weibull and Gumbel divergences' gradients
/// are the `f64` ones rounded (infinities of one sign where they leave
/// `f32`'s range), not NaN: built from the tape's ops, two partials of
/// about 1e40 with opposite signs overflowed and met (the f32-domain
/// property test found the first case). Beyond `f32`'s range the value is
/// `+inf` with a gradient of 0.
#[test]
fn extreme_divergences_keep_their_gradients_near_the_largest_f32() -> Result<()> {
    for p in [
        [
            0.015141293491474032,
            1.0,
            0.5312778988212422,
            18591.720577783715,
        ],
        [0.02, 3.0, 0.6, 9000.0],
        [0.025, 2.0, 0.9, 5000.0],
        // 5e40
        [0.03, 1.0, 1.2, 1e6],
    ] {
        let (wide, narrow) = (extreme_kls::<f64>(p)?, extreme_kls::<f32>(p)?);
        for (w, n) in wide.iter().zip(&narrow) {
            assert!(w[0] > 1e30 && w[0] < 1e41, "{wide:?}");
            if (w[0] as f32).is_infinite() {
                assert_eq!(n, &[f64::INFINITY, 0.0, 0.0, 0.0, 0.0], "{p:?}");
                continue;
            }
            for (w, n) in w.iter().zip(n) {
                // f32 parameters are the f64 ones rounded: a few parts in
                // 1e7 of each, times the divergence's exponents (below 100)
                let near = match *w as f32 {
                    w if w.is_infinite() => *n == w as f64,
                    _ => (w - n).abs() <= 1e-4 * w.abs(),
                };
                assert!(near, "{p:?}: f64 {wide:?}, f32 {narrow:?}");
            }
        }
    }
    Ok(())
}

/// In `f64`, a difference of locations or a ratio of scales beyond the
/// floats does not make a finite divergence `+inf`: Gumbels 2e308 apart
/// at scale 1e300 (`d = 2e8`), Weibull scales 1e300 and 1e-300 (`ln(λ1 /
/// λ2)` from the logarithms).
#[test]
fn extreme_divergences_in_f64_where_a_difference_or_ratio_overflows() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.var(Tensor::scalar(x));
    let (m1, s1, m2, s2) = (s(1e308), s(1e300), s(-1e308), s(1e300));
    let kl = kl_divergence(&Gumbel::new(m1, s1)?, &Gumbel::new(m2, s2)?)?;
    // r = 1, d = 2e8: d - 1 + e^-d
    assert_eq!(kl.item()?, 2e8 - 1.0);
    let g = kl.backward()?;
    let grad = |v: Var<'_, f64>| g.get(v).unwrap().item().unwrap();
    // ∂m = ±(1 - e^-d)/s2, ∂s1 = (γ - 1)/s2, ∂s2 = -(γ - 1 + d)/s2
    assert_eq!((grad(m1), grad(m2)), (1e-300, -1e-300));
    let euler = 0.577_215_664_901_532_9;
    assert!((grad(s1) / ((euler - 1.0) / 1e300) - 1.0).abs() < 1e-12);
    assert!((grad(s2) / (-(euler - 1.0 + 2e8) / 1e300) - 1.0).abs() < 1e-12);

    let (k1, l1, k2, l2) = (s(1.0), s(1e300), s(1e-3), s(1e-300));
    let kl = kl_divergence(&Weibull::new(k1, l1)?, &Weibull::new(k2, l2)?)?;
    // 50-digit mpmath
    let want = 7.928_343_476_426_523;
    assert!((kl.item()? / want - 1.0).abs() < 1e-13, "{}", kl.item()?);
    let g = kl.backward()?;
    assert!(
        [k1, l1, k2, l2]
            .iter()
            .all(|v| g.get(*v).unwrap().item().unwrap().is_finite())
    );
    Ok(())
}

/// Bad parameters and values are named; counts that overflow a float are
/// an error; the geometric has no `rsample`.
#[test]
fn gumbel_weibull_inverse_gamma_and_geometric_refuse_bad_input() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    for (name, r) in [
        ("Gumbel", Gumbel::new(s(f64::NAN), s(1.0)).err()),
        ("Gumbel", Gumbel::new(s(0.0), s(0.0)).err()),
        ("Weibull", Weibull::new(s(-1.0), s(1.0)).err()),
        ("Weibull", Weibull::new(s(1.0), s(f64::INFINITY)).err()),
        ("InverseGamma", InverseGamma::new(s(0.0), s(1.0)).err()),
        ("InverseGamma", InverseGamma::new(s(1.0), s(-2.0)).err()),
        ("Geometric", Geometric::from_logits(s(f64::INFINITY)).err()),
    ] {
        let e = r.expect("an error").to_string();
        assert!(e.contains(name), "{e}");
    }
    let g = Geometric::from_logits(s(0.3))?;
    for k in [-1.0, 0.5, f64::INFINITY] {
        let e = g.log_prob(s(k)).err().unwrap().to_string();
        assert!(e.contains("count"), "{e}");
    }
    let mut rng = StdRng::seed_from_u64(5);
    assert!(matches!(
        g.rsample(&mut rng),
        Err(Error::Unsupported { .. })
    ));
    let tape32 = Tape::<f32>::new();
    let far = Geometric::from_logits(tape32.scalar(-95.0))?;
    let e = far.sample(&mut rng).err().unwrap().to_string();
    assert!(e.contains("overflows"), "{e}");
    // outside the support: -inf with no gradient
    let x = tape.var(Tensor::vector(&[-1.0, 0.0, 2.0]));
    let lp = Weibull::new(s(1.5), s(1.0))?.log_prob(x)?;
    assert_eq!(&lp.value().data()[..2], &[f64::NEG_INFINITY; 2]);
    assert_eq!(
        &lp.sum().backward()?.get(x).unwrap().data()[..2],
        &[0.0, 0.0]
    );
    let lp = InverseGamma::new(s(1.5), s(1.0))?.log_prob(x)?;
    assert_eq!(&lp.value().data()[..2], &[f64::NEG_INFINITY; 2]);
    Ok(())
}

/// At large counts the binomial and negative binomial log-masses keep
/// their digits in `f32` too (the direct sums cancel terms of size `k`:
/// in `f32` at a million trials their rounding alone was about 0.03, in
/// a log-mass near -7): within 1e-5 of the `f64` value of the same
/// (rounded) inputs, at counts from 40 to 10⁷.
#[test]
fn count_log_masses_keep_their_digits_at_large_counts_in_f32() -> Result<()> {
    fn masses<F: Element>(n: f64, l: f64, k: f64) -> Result<[f64; 2]> {
        let tape = Tape::<F>::new();
        let (n, l, k) = (
            tape.scalar(F::lit(n)),
            tape.scalar(F::lit(l)),
            tape.scalar(F::lit(k)),
        );
        let b = Binomial::from_logits(n, l)?.log_prob(k)?.item()?;
        let nb = NegativeBinomial::from_logits(n, l)?.log_prob(k)?.item()?;
        Ok([b, nb].map(|v| v.to_f64().unwrap()))
    }
    for (n, l, k) in [
        (40.0, 0.3, 23.0),
        (4000.0, -1.0, 1076.0),
        (1e6, 0.2, 549834.0),
        (1e7, -0.1, 4750208.0),
    ] {
        // the inputs as f32 rounds them
        let (n, l, k) = (n as f32 as f64, l as f32 as f64, k as f32 as f64);
        let (single, double) = (masses::<f32>(n, l, k)?, masses::<f64>(n, l, k)?);
        for (s, d) in single.iter().zip(double) {
            assert!(
                (s - d).abs() <= 1e-5 * d.abs(),
                "n {n}, l {l}, k {k}: {s} vs {d}"
            );
        }
    }
    Ok(())
}

/// The Pareto density (in the value and both parameters), entropy,
/// moments, KL and draws, with parameters that broadcast; the values sit
/// above the scales, the posterior's scale above the prior's.
#[test]
fn gradcheck_pareto() {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    gc(
        "pareto log_prob",
        |_, a| Pareto::new(a[0].exp(), a[1].exp())?.log_prob(a[2]),
        &[
            col(&[-0.5, 1.2]),
            v(&[0.1, -0.5, 1.0]),
            Tensor::from_rows(&[[1.5, 0.9, 9.0], [30.0, 0.7, 3.2]]).unwrap(),
        ],
    );
    gc(
        "pareto entropy and moments",
        |_, a| {
            // concentrations above 2: a finite variance
            let d = Pareto::new(a[0].exp() + 2.0, a[1].exp())?;
            Ok(d.entropy()? + d.mean()? + d.variance()?)
        },
        &[v(&[0.1, -0.5, 1.0]), v(&[0.0, 1.5, -0.5])],
    );
    gc(
        "pareto kl",
        |_, a| {
            let (mp, aq, ap) = (a[1].exp(), a[0].exp(), a[2].exp());
            // the posterior's scale above the prior's
            let mq = mp + a[3].exp();
            kl_divergence(&Pareto::new(aq, mq)?, &Pareto::new(ap, mp)?)
        },
        &[
            col(&[0.3, -1.0]),
            col(&[0.7, -0.2]),
            // one concentration close to the posterior's: the series
            v(&[0.1, 0.305, 0.5]),
            v(&[0.3, 0.6, -0.1]),
        ],
    );
    gc(
        "pareto draws",
        |_, a| {
            let mut rng = StdRng::seed_from_u64(3);
            Pareto::new(a[0].exp(), a[1].exp())?.rsample_n(Some(3), &mut rng)
        },
        &[v(&[0.3, 1.0]), v(&[0.7, -0.2])],
    );
}

/// The Pareto's `rsample` gradient is unbiased: `E[1/x] = α / ((α + 1) m)`.
#[test]
fn pareto_rsample_gradient_is_unbiased() {
    use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
    let (a, m) = (2.5, 1.5);
    stat_gradcheck(
        |rng| {
            let tape = Tape::<f64>::new();
            let (av, mv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(m)));
            let y = Pareto::new(av, mv)?.rsample_n(Some(16), rng)?;
            let g = ((1.0 / y).sum() / 16.0).backward()?;
            Ok(vec![g.get(av).unwrap().item()?, g.get(mv).unwrap().item()?])
        },
        &[1.0 / ((a + 1.0) * (a + 1.0) * m), -a / ((a + 1.0) * m * m)],
        &StatGradCheck::default(),
        &mut StdRng::seed_from_u64(8),
    )
    .unwrap();
}

/// Pareto draws have its mean and variance, nothing below the scale, and
/// its entropy and KL are the Monte Carlo limits of their integrals (all
/// within four standard errors).
#[test]
fn pareto_draws_and_integrals() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let mut rng = StdRng::seed_from_u64(37);
    let n = 200_000;
    // a concentration above 4: the variance's standard error is finite
    let q = Pareto::new(s(6.5), s(2.0))?;
    let p = Pareto::new(s(3.0), s(1.5))?;
    let draws = q.sample_n(Some(n), &mut rng)?;
    assert!(draws.data().iter().all(|&x| x >= 2.0));
    let (m, se) = mean_and_se(&draws);
    let mean = q.mean()?.item()?;
    assert!((m - mean).abs() < 4.0 * se, "mean: {m} ± {se} vs {mean}");
    let var = q.variance()?.item()?;
    let (ss, se) = mean_and_se(&draws.map(|x| (x - m).powi(2)));
    assert!(
        (ss - var).abs() < 4.0 * se,
        "variance: {ss} ± {se} vs {var}"
    );
    kl_and_entropy_are_the_means_over("pareto", &q, &p, tape.constant(draws))
}

/// Below its scale and at `+inf` the Pareto density is `-inf`, the mean
/// of a concentration up to 1 and the variance of one up to 2 are `+inf`,
/// and so is the KL of a posterior whose scale is below the prior's: each
/// with gradient 0, never NaN; in `f32` the values are those of `f64`
/// rounded; bad parameters and NaN values are errors.
#[test]
fn pareto_outside_its_support_and_its_tail() -> Result<()> {
    let tape = Tape::<f64>::new();
    let (a, m) = (
        tape.var(Tensor::vector(&[0.5, 1.0, 3.0])),
        tape.var(Tensor::scalar(2.0)),
    );
    let d = Pareto::new(a, m)?;
    let x = tape.var(Tensor::vector(&[1.0, f64::INFINITY, 2.0]));
    let lp = d.log_prob(x)?;
    let at_scale = 3.0f64.ln() - 2.0f64.ln();
    assert_eq!(
        lp.value().data(),
        &[f64::NEG_INFINITY, f64::NEG_INFINITY, at_scale]
    );
    let g = lp.sum().backward()?;
    assert_eq!(g.get(x).unwrap().data(), &[0.0, 0.0, -2.0]);
    assert_eq!(g.get(a).unwrap().data(), &[0.0, 0.0, 1.0 / 3.0]);
    assert_eq!(g.get(m).unwrap().item()?, 1.5);
    for (what, out, finite) in [
        ("mean", d.mean()?, [false, false, true]),
        ("variance", d.variance()?, [false, false, true]),
    ] {
        let values = out.value();
        for (v, f) in values.data().iter().zip(finite) {
            assert_eq!(v.is_finite(), f, "{what}: {:?}", values.data());
            assert!(f || *v == f64::INFINITY, "{what}: {:?}", values.data());
        }
        let g = out.sum().backward()?;
        assert_eq!(&g.get(a).unwrap().data()[..2], &[0.0, 0.0], "{what}");
        assert!(g.get(m).unwrap().item()?.is_finite(), "{what}");
    }
    // the posterior's scale below the prior's
    let (mq, mp) = (
        tape.var(Tensor::vector(&[1.0, 3.0])),
        tape.var(Tensor::scalar(2.0)),
    );
    let kl = kl_divergence(
        &Pareto::new(a.sum(), mq)?,
        &Pareto::new(tape.scalar(2.0), mp)?,
    )?;
    assert_eq!(kl.value().data()[0], f64::INFINITY);
    assert!(kl.value().data()[1].is_finite());
    let g = kl.sum().backward()?;
    assert_eq!(g.get(mq).unwrap().data()[0], 0.0);
    assert!(g.get(mp).unwrap().item()?.is_finite());
    // f32: the f64 values rounded
    let t32 = Tape::<f32>::new();
    let d32 = Pareto::new(t32.scalar(3.0), t32.scalar(2.0))?;
    let x32 = t32.constant(Tensor::vector(&[2.0f32, 2.5, 1e30]));
    let x64 = tape.constant(Tensor::vector(&[2.0, 2.5, 1e30f32 as f64]));
    let d64 = Pareto::new(tape.scalar(3.0), tape.scalar(2.0))?;
    let (l32, l64) = (d32.log_prob(x32)?.value(), d64.log_prob(x64)?.value());
    for (a, b) in l32.data().iter().zip(l64.data()) {
        assert_eq!(*a, *b as f32);
    }
    // bad parameters and values
    for (alpha, scale) in [
        (0.0, 1.0),
        (-1.0, 1.0),
        (1.0, 0.0),
        (f64::NAN, 1.0),
        (1.0, f64::INFINITY),
    ] {
        assert!(
            Pareto::new(tape.scalar(alpha), tape.scalar(scale)).is_err(),
            "{alpha}, {scale}"
        );
    }
    assert!(d.log_prob(tape.scalar(f64::NAN)).is_err());
    Ok(())
}

/// The Kumaraswamy density (in the value and both concentrations), its
/// entropy, moments and draws, with concentrations that broadcast.
#[test]
fn gradcheck_kumaraswamy() {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    gc(
        "kumaraswamy log_prob",
        |_, a| Kumaraswamy::new(a[0].exp(), a[1].exp())?.log_prob(a[2]),
        &[
            col(&[-0.5, 1.2]),
            v(&[0.1, -0.7, 1.0]),
            Tensor::from_rows(&[[0.2, 0.55, 0.9], [0.05, 0.7, 0.35]]).unwrap(),
        ],
    );
    gc(
        "kumaraswamy entropy and moments",
        |_, a| {
            let d = Kumaraswamy::new(a[0].exp(), a[1].exp())?;
            Ok(d.entropy()? + d.mean()? + d.variance()? * 10.0)
        },
        // b below 1, near 1 and large; a from 0.6 to 4.5
        &[v(&[0.1, -0.5, 1.5]), v(&[-1.0, 0.01, 2.5])],
    );
    gc(
        "kumaraswamy || beta",
        |_, a| {
            let q = Kumaraswamy::new(a[0].exp(), a[1].exp())?;
            kl_divergence(&q, &Beta::new(a[2].exp(), a[3].exp())?)
        },
        // b below 1 and above; the prior's concentrations broadcast against them
        &[
            col(&[-0.5, 1.2]),
            v(&[0.4, -0.7, 2.0]),
            v(&[0.0, 0.9, -0.3]),
            col(&[0.2, 1.6]),
        ],
    );
    gc(
        "kumaraswamy draws",
        |_, a| {
            let mut rng = StdRng::seed_from_u64(3);
            Kumaraswamy::new(a[0].exp(), a[1].exp())?.rsample_n(Some(3), &mut rng)
        },
        &[v(&[0.3, -0.4]), v(&[0.7, -0.2])],
    );
}

/// Kumaraswamy(1, b) is Beta(1, b): its KL against a Beta, quadrature and
/// all, is the Beta's closed form, value and gradients, to a few units of
/// 1e-16 times the larger of its value and its largest term (`ln b`, or
/// 1), where the Betas are far apart, close (where the KL, 1e-9 or less,
/// keeps its digits in absolute terms only) and the same, also where `b`
/// is small: the terms of the size of `1/b` cancel in closed form (they
/// left -1.7e-8 between equal distributions at `b = 10⁻⁸`).
#[test]
fn kumaraswamy_of_concentration_one_has_the_betas_divergence() -> Result<()> {
    for (b, alpha, beta) in [
        (3.0, 2.0, 0.5),
        (0.2, 1.0, 7.0),
        (40.0, 0.3, 30.0),
        (3.0, 1.0, 3.0001),
        (3.0, 1.0, 3.0),
        (0.05, 1.000001, 0.05),
        (1e-8, 1.0, 1e-8),
        (1e-8, 1.0, 1.1e-8),
        (1e-6, 1.0, 2.0),
    ] {
        let scale = 1.0 + f64::ln(b).abs();
        let tape = Tape::<f64>::new();
        let (b, alpha, beta) = (
            tape.var(Tensor::scalar(b)),
            tape.scalar(alpha),
            tape.scalar(beta),
        );
        let prior = Beta::new(alpha, beta)?;
        let q = kl_divergence(&Kumaraswamy::new(tape.scalar(1.0), b)?, &prior)?;
        let p = kl_divergence(&Beta::new(tape.scalar(1.0), b)?, &prior)?;
        let (gq, gp) = (q.backward()?, p.backward()?);
        let (q, p) = (q.item()?, p.item()?);
        let scale = scale.max(p.abs());
        assert!(
            (q - p).abs() <= 2e-15 * scale,
            "b = {:?}: {q} vs {p}",
            b.value()
        );
        let (gq, gp) = (gq.get(b).unwrap().item()?, gp.get(b).unwrap().item()?);
        assert!((gq - gp).abs() <= 1e-13 * gp.abs().max(1.0), "{gq} vs {gp}");
    }
    Ok(())
}

/// The Kumaraswamy's `rsample` gradient is unbiased: the mean of the
/// draws' gradients is the gradient of its mean, `b B(1 + 1/a, b)`.
#[test]
fn kumaraswamy_rsample_gradient_is_unbiased() {
    use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
    let (a, b) = (0.8, 2.5);
    let exact = {
        let tape = Tape::<f64>::new();
        let (av, bv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
        let g = Kumaraswamy::new(av, bv)
            .unwrap()
            .mean()
            .unwrap()
            .backward()
            .unwrap();
        vec![
            g.get(av).unwrap().item().unwrap(),
            g.get(bv).unwrap().item().unwrap(),
        ]
    };
    stat_gradcheck(
        |rng| {
            let tape = Tape::<f64>::new();
            let (av, bv) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
            let y = Kumaraswamy::new(av, bv)?.rsample_n(Some(16), rng)?;
            let g = (y.sum() / 16.0).backward()?;
            Ok(vec![g.get(av).unwrap().item()?, g.get(bv).unwrap().item()?])
        },
        &exact,
        &StatGradCheck::default(),
        &mut StdRng::seed_from_u64(8),
    )
    .unwrap();
}

/// Kumaraswamy draws follow its distribution function `1 - (1 - x^a)^b`
/// and have its mean and variance; its entropy is the Monte Carlo limit of
/// `-ln p`, and its KL against a Beta with the same mean, in closed form
/// and by `Divergence::MonteCarlo`, is the mean of `ln q - ln p` over the
/// draws (all within four standard errors).
#[test]
fn kumaraswamy_draws_and_integrals() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let mut rng = StdRng::seed_from_u64(41);
    let n = 200_000;
    let (a, b) = (0.7, 2.2);
    let q = Kumaraswamy::new(s(a), s(b))?;
    let draws = q.sample_n(Some(n), &mut rng)?;
    assert!(draws.data().iter().all(|&x| x > 0.0 && x < 1.0));
    for x in [0.05, 0.3, 0.6, 0.9] {
        let cdf: f64 = 1.0 - (1.0 - f64::powf(x, a)).powf(b);
        let share = draws.data().iter().filter(|&&d| d <= x).count() as f64 / n as f64;
        let se = (cdf * (1.0 - cdf) / n as f64).sqrt();
        assert!(
            (share - cdf).abs() < 4.0 * se,
            "P(X <= {x}) = {cdf}, drawn {share}"
        );
    }
    let (m, se) = mean_and_se(&draws);
    let mean = q.mean()?.item()?;
    assert!((m - mean).abs() < 4.0 * se, "mean: {m} ± {se} vs {mean}");
    let var = q.variance()?.item()?;
    let (ss, se) = mean_and_se(&draws.map(|x| (x - m).powi(2)));
    assert!(
        (ss - var).abs() < 4.0 * se,
        "variance: {ss} ± {se} vs {var}"
    );
    let z = tape.constant(draws);
    let (h, se) = mean_and_se(&(-q.log_prob(z)?).value());
    let exact = q.entropy()?.item()?;
    assert!(
        (h - exact).abs() < 4.0 * se,
        "entropy: {h} ± {se} vs {exact}"
    );
    let p = Beta::new(s(1.0), s(1.0 / mean - 1.0))?;
    let (kl, se) = mean_and_se(&(q.log_prob(z)? - p.log_prob(z)?).value());
    let closed = kl_divergence(&q, &p)?.item()?;
    assert!(
        kl > 0.0 && (closed - kl).abs() < 4.0 * se,
        "KL: {kl} ± {se} vs {closed}"
    );
    let auto = kl_divergence_with(&q, &p, Divergence::MonteCarlo { samples: 20_000 }, &mut rng)?;
    let auto = auto.item()?;
    assert!(kl > 0.0 && (auto - kl).abs() < 4.0 * se * (n as f64 / 20_000.0).sqrt());
    Ok(())
}

/// Outside `(0, 1)` the Kumaraswamy density is `-inf` with gradient 0; in
/// `f32` its values are those of `f64` rounded; near 1, where `x^a` is
/// close to 1, it keeps its digits; bad concentrations and NaN values are
/// errors.
#[test]
fn kumaraswamy_outside_its_support_and_near_its_ends() -> Result<()> {
    let tape = Tape::<f64>::new();
    let (a, b) = (tape.var(Tensor::scalar(2.0)), tape.var(Tensor::scalar(3.0)));
    let d = Kumaraswamy::new(a, b)?;
    let x = tape.var(Tensor::vector(&[0.0, 1.0, -0.5, 1.5, 0.5]));
    let lp = d.log_prob(x)?;
    let inside = 6.0f64.ln() + 0.5f64.ln() + 2.0 * 0.75f64.ln();
    let values = lp.value();
    assert_eq!(&values.data()[..4], &[f64::NEG_INFINITY; 4]);
    assert!((values.data()[4] - inside).abs() < 1e-15);
    let g = lp.sum().backward()?;
    assert_eq!(&g.get(x).unwrap().data()[..4], &[0.0; 4]);
    // with a = 1/2, 1 - x^a = δ / (1 + √x) for x = 1 - δ (δ exact), where
    // 1 - √x loses the digits √x rounded away: 1.1e-4 off at δ near 1e-12
    let half = Kumaraswamy::new(tape.scalar(0.5), b)?;
    let x = 1.0 - 1e-12;
    let delta: f64 = 1.0 - x;
    let near = half.log_prob(tape.scalar(x))?.item()?;
    let ln_w = delta.ln() - (1.0 + x.sqrt()).ln();
    let want = 1.5f64.ln() - 0.5 * x.ln() + 2.0 * ln_w;
    assert!((near - want).abs() < 1e-14 * want.abs(), "{near} vs {want}");
    assert!(
        ((1.0 - x.sqrt()).ln() - ln_w).abs() > 1e-5,
        "the test's point"
    );
    // f32: the f64 values rounded
    let t32 = Tape::<f32>::new();
    let d32 = Kumaraswamy::new(t32.scalar(2.0), t32.scalar(3.0))?;
    let xs = [0.001f32, 0.25, 0.5, 0.999];
    let l32 = d32.log_prob(t32.constant(Tensor::vector(&xs)))?.value();
    let x64: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    let l64 = d.log_prob(tape.constant(Tensor::vector(&x64)))?.value();
    for (a, b) in l32.data().iter().zip(l64.data()) {
        assert_eq!(*a, *b as f32);
    }
    // a concentration near the smallest normal number: draws below every
    // float, moved to the smallest one, whose slopes are 0, not NaN (a²
    // underflows)
    let (tiny, one) = (
        tape.var(Tensor::scalar(1e-300)),
        tape.var(Tensor::scalar(1.0)),
    );
    let draws = Kumaraswamy::new(tiny, one)?.rsample_n(Some(8), &mut StdRng::seed_from_u64(1))?;
    assert!(draws.value().data().iter().all(|&x| x == f64::MIN_POSITIVE));
    let g = draws.sum().backward()?;
    assert_eq!(g.get(tiny).unwrap().item()?, 0.0);
    assert_eq!(g.get(one).unwrap().item()?, 0.0);
    // both concentrations tiny: draws that round to 1, moved below it, with
    // slopes 0, not inf / inf
    let other = tape.var(Tensor::scalar(1e-300));
    let draws = Kumaraswamy::new(tiny, other)?.rsample_n(Some(8), &mut StdRng::seed_from_u64(1))?;
    assert!(
        draws
            .value()
            .data()
            .iter()
            .all(|&x| x == 1.0 - f64::EPSILON / 2.0)
    );
    let g = draws.sum().backward()?;
    assert_eq!(
        (g.get(tiny).unwrap().item()?, g.get(other).unwrap().item()?),
        (0.0, 0.0)
    );
    // a small b puts much of the mass within an ulp of 1, in f64 and f32:
    // every draw is inside the support, where `log_prob` is finite
    let (a, b) = (
        tape.var(Tensor::scalar(2.0)),
        tape.var(Tensor::scalar(0.01)),
    );
    let d = Kumaraswamy::new(a, b)?;
    let x = d.rsample_n(Some(2000), &mut StdRng::seed_from_u64(3))?;
    assert!(
        x.value()
            .data()
            .iter()
            .any(|&x| x == 1.0 - f64::EPSILON / 2.0)
    );
    assert!(d.log_prob(x)?.value().data().iter().all(|v| v.is_finite()));
    let t32 = Tape::<f32>::new();
    let d32 = Kumaraswamy::new(t32.scalar(2.0), t32.scalar(0.01))?;
    let x = d32.rsample_n(Some(2000), &mut StdRng::seed_from_u64(3))?;
    assert!(
        d32.log_prob(x)?
            .value()
            .data()
            .iter()
            .all(|v| v.is_finite())
    );
    for (c1, c0) in [
        (0.0, 1.0),
        (1.0, -1.0),
        (f64::NAN, 1.0),
        (1.0, f64::INFINITY),
    ] {
        assert!(
            Kumaraswamy::new(tape.scalar(c1), tape.scalar(c0)).is_err(),
            "{c1}, {c0}"
        );
    }
    assert!(d.log_prob(tape.scalar(f64::NAN)).is_err());
    Ok(())
}

/// `from_probs` of the families parameterized by log-odds: the masses of
/// the probabilities given, differentiable in them, the same as from the
/// log-odds computed apart; probabilities outside `(0, 1)` are errors.
#[test]
fn from_probs_gives_the_masses_of_the_probabilities() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let close = |got: Var<'_, f64>, want: f64| {
        let got = got.item().unwrap().exp();
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    };
    close(Bernoulli::from_probs(s(0.3))?.log_prob(s(1.0))?, 0.3);
    // P(2 failures, then a success)
    close(
        Geometric::from_probs(s(0.25))?.log_prob(s(2.0))?,
        0.75 * 0.75 * 0.25,
    );
    // C(5, 2) 0.3² 0.7³
    close(
        Binomial::from_probs(s(5.0), s(0.3))?.log_prob(s(2.0))?,
        0.3087,
    );
    let logit = |p: f64| tape.scalar(p.ln() - (-p).ln_1p());
    let (nb_p, nb_l) = (
        NegativeBinomial::from_probs(s(3.0), s(0.4))?.log_prob(s(4.0))?,
        NegativeBinomial::from_logits(s(3.0), logit(0.4))?.log_prob(s(4.0))?,
    );
    assert_eq!(nb_p.item()?, nb_l.item()?);
    gc(
        "log-masses in the probabilities",
        |tape, a| {
            let p = a[0].sigmoid();
            let k = tape.constant(Tensor::vector(&[0.0, 1.0, 3.0]));
            let b = Bernoulli::from_probs(p)?
                .log_prob(tape.constant(Tensor::vector(&[1.0, 0.0, 1.0])))?;
            let g = Geometric::from_probs(p)?.log_prob(k)?;
            let n = tape.constant(Tensor::vector(&[4.0, 4.0, 4.0]));
            let bi = Binomial::from_probs(n, p)?.log_prob(k)?;
            let nb = NegativeBinomial::from_probs(n, p)?.log_prob(k)?;
            Ok(b + g + bi + nb)
        },
        &[v(&[-2.0, 0.3, 4.0])],
    );
    for p in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
        assert!(Bernoulli::from_probs(s(p)).is_err(), "{p}");
        assert!(Geometric::from_probs(s(p)).is_err(), "{p}");
        assert!(Binomial::from_probs(s(3.0), s(p)).is_err(), "{p}");
        assert!(NegativeBinomial::from_probs(s(3.0), s(p)).is_err(), "{p}");
    }
    Ok(())
}

/// `Gamma::chi_squared(k)`: the density `x^(k/2 - 1) e^(-x/2) / (2^(k/2)
/// Γ(k/2))` at whole and fractional `k`, differentiable in `k` and `x`,
/// with the batch shape of `k`; a `k` that is not positive is an error.
#[test]
fn chi_squared_is_the_gamma_of_half_the_degrees_of_freedom() -> Result<()> {
    let tape = Tape::<f64>::new();
    let ks = [1.0, 2.5, 7.0];
    let d = Gamma::chi_squared(tape.var(Tensor::vector(&ks)))?;
    assert_eq!(d.batch_shape(), vec![3]);
    let x = 1.7;
    let lp = d.log_prob(tape.scalar(x))?.value();
    // Γ(1/2) = √π, Γ(5/4) = Γ(1/4) / 4, Γ(7/2) = 15 √π / 8
    let sqrt_pi = std::f64::consts::PI.sqrt();
    let gammas = [sqrt_pi, 3.625_609_908_221_908 / 4.0, 15.0 * sqrt_pi / 8.0];
    for ((k, got), gamma_h) in ks.iter().zip(lp.data()).zip(gammas) {
        let h = k / 2.0;
        let want = (h - 1.0) * x.ln() - x / 2.0 - h * 2f64.ln() - gamma_h.ln();
        assert!((got - want).abs() < 1e-13, "k = {k}: {got} vs {want}");
    }
    gc(
        "chi-squared log_prob and entropy",
        |_, a| {
            let d = Gamma::chi_squared(a[0].exp())?;
            Ok(d.log_prob(a[1])?.sum() + d.entropy()?.sum())
        },
        &[v(&[0.0, 1.2, -0.7]), v(&[0.4, 2.0, 0.05])],
    );
    for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(Gamma::chi_squared(tape.scalar(k)).is_err(), "{k}");
    }
    Ok(())
}

/// KL(Normal || Laplace): finite differences in all four parameters (the
/// posterior's mean on either side of the prior's, near it and far from it
/// beside its scale), and the Monte Carlo limit of `ln q - ln p` over
/// 200 000 draws within four standard errors.
#[test]
fn normal_laplace_divergence() -> Result<()> {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    gc(
        "normal laplace kl",
        |_, a| {
            kl_divergence(
                &Normal::new(a[0], a[1].exp())?,
                &Laplace::new(a[2], a[3].exp())?,
            )
        },
        &[
            v(&[-2.0, 0.01, 0.3, 9.0]),
            v(&[0.2, -1.0, 0.5, -3.0]),
            col(&[0.0, 0.35]),
            col(&[-0.5, 1.0]),
        ],
    );
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let (q, p) = (Normal::new(s(0.4), s(0.8))?, Laplace::new(s(-0.3), s(1.5))?);
    let z = q.rsample_n(Some(200_000), &mut StdRng::seed_from_u64(43))?;
    kl_and_entropy_are_the_means_over("normal laplace", &q, &p, z)
}

/// KL(Laplace || Laplace): finite differences in all four parameters with
/// shapes that broadcast (the posterior's location on either side of the
/// prior's, near it and far from it beside the scales). Where the locations
/// differ by 10⁻⁹ of the posterior's scale, the slope in them is
/// `(1 - e^-x) / b2` to its last digits (as the difference of `1 / b2` and
/// `e^-x / b2` it kept seven); where `b1 / b2` overflows, the value is
/// `+inf` with slopes of 0, not NaN (`inf · e^-x` at an `e^-x` of 0).
#[test]
fn laplace_divergence_keeps_its_digits() -> Result<()> {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    gc(
        "laplace kl",
        |_, a| {
            kl_divergence(
                &Laplace::new(a[0], a[1].exp())?,
                &Laplace::new(a[2], a[3].exp())?,
            )
        },
        &[
            v(&[-2.0, 0.25, 0.31, 9.0]),
            v(&[0.2, -1.0, 0.5, -3.0]),
            col(&[0.0, 0.3]),
            col(&[-0.5, 1.0]),
        ],
    );
    let tape = Tape::<f64>::new();
    let var = |x: f64| tape.var(Tensor::scalar(x));
    let (m1, b1, m2, b2) = (var(1e-9), var(1.0), var(0.0), var(2.0));
    let kl = kl_divergence(&Laplace::new(m1, b1)?, &Laplace::new(m2, b2)?)?;
    // ln 2 + x/2 + e^-x/2 - 1 = ln 2 - 1/2 + x²/4 - ...
    let value = kl.item()?;
    assert!(
        (value - (2f64.ln() - 0.5)).abs() <= 1e-15 * value,
        "{value}"
    );
    let g = kl.backward()?;
    let x = 1e-9;
    let want = (x - x * x / 2.0 + x * x * x / 6.0) / 2.0;
    for (var, sign) in [(m1, 1.0), (m2, -1.0)] {
        let got = g.get(var).unwrap().item()?;
        assert!(
            (got - sign * want).abs() <= 1e-15 * want,
            "{got:e} vs {want:e}"
        );
    }
    let (m1, b1, m2, b2) = (var(0.0), var(1e300), var(1e305), var(1e-10));
    let kl = kl_divergence(&Laplace::new(m1, b1)?, &Laplace::new(m2, b2)?)?;
    assert_eq!(kl.item()?, f64::INFINITY);
    let g = kl.backward()?;
    for var in [m1, b1, m2, b2] {
        assert_eq!(g.get(var).unwrap().item()?, 0.0);
    }
    Ok(())
}

/// The cases of the 50-digit reference, each with its kind.
fn mpmath_cases() -> Vec<(String, crate::json::Value)> {
    let doc = crate::json::parse(include_str!("data/mpmath_reference.json").as_bytes()).unwrap();
    let cases = doc.get("cases").and_then(|c| c.as_array()).unwrap();
    cases
        .iter()
        .map(|c| {
            (
                c.get("kind").and_then(|k| k.as_str()).unwrap().to_string(),
                c.clone(),
            )
        })
        .collect()
}

/// The number under `key` in a reference case.
fn case_num(case: &crate::json::Value, key: &str) -> f64 {
    case.get(key).and_then(|v| v.as_f64()).unwrap()
}

/// A Kumaraswamy(a, b) moment (`Distribution::mean` or `variance`) and its
/// partials in `a` and `b`.
fn kumaraswamy_moment_and_partials(
    a: f64,
    b: f64,
    moment: for<'t> fn(&Kumaraswamy<'t, f64>) -> Result<Var<'t, f64>>,
) -> [f64; 3] {
    let tape = Tape::<f64>::new();
    let (a, b) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
    let m = moment(&Kumaraswamy::new(a, b).unwrap()).unwrap();
    let g = m.backward().unwrap();
    [
        m.item().unwrap(),
        g.get(a).unwrap().item().unwrap(),
        g.get(b).unwrap().item().unwrap(),
    ]
}

/// The Kumaraswamy(a, b) variance and its partials in `a` and `b`.
fn kumaraswamy_variance_and_partials(a: f64, b: f64) -> [f64; 3] {
    kumaraswamy_moment_and_partials(a, b, |k| k.variance())
}

/// Where the Kumaraswamy variance is tiny beside its squared mean (`a`
/// from 10⁴ to 10¹⁵, on both sides of the switch to the series near
/// 2·10⁵; variances from about 10⁻⁸ down to 10⁻³⁰), it and its gradients
/// match the 50-digit reference at 1e-9 relative (as the reference check
/// holds every value that is not zero); `E[x²] - E[x]²` loses all its
/// digits from `a = 10⁸`.
#[test]
fn kumaraswamy_variance_keeps_its_digits_where_it_is_tiny() {
    let mut checked = 0;
    for (kind, case) in mpmath_cases() {
        let num = |k: &str| case_num(&case, k);
        if kind != "kumaraswamy_variance" || num("concentration1") < 1e4 {
            continue;
        }
        let got = kumaraswamy_variance_and_partials(num("concentration1"), num("concentration0"));
        let want = ["value", "grad_concentration1", "grad_concentration0"].map(num);
        for ((got, want), what) in got.iter().zip(want).zip(["value", "∂a", "∂b"]) {
            let rel = ((got - want) / want).abs();
            assert!(
                rel < 1e-9,
                "a = {}: {what} {got} vs {want}",
                num("concentration1")
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// Where `b` is tiny the Kumaraswamy mass sits near 1 and the variance is
/// of the size of `b` (`b / 2` at `a = 1`): it and its gradients match
/// mpmath (200 digits, `b B(1 + 2/a, b) - (b B(1 + 1/a, b))²` and its
/// numerical derivatives) at 1e-9 relative, on both sides of the switch
/// to the series in `b` at 10⁻³. Its log-moments were once taken as
/// differences over `1/a` that agree in every digit there: the variance
/// came out NaN from `b = 10⁻¹⁵` down, 27 % off at `b = 10⁻¹⁴` (`a = 1`) and
/// 1.4e-3 off at `b = 10⁻⁷`, `a = 2·10⁵`.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's 17 digits
fn kumaraswamy_variance_of_a_tiny_b() {
    // (a, b, variance, ∂a, ∂b)
    let cases = [
        (
            1.0,
            1e-30,
            5.000_000_000_000_000_4e-31,
            -5.000_000_000_000_000_4e-31,
            0.5,
        ),
        (
            1e8,
            1e-30,
            2.404_113_741_379_796_2e-46,
            -4.808_227_417_820_201_3e-54,
            2.404_113_741_379_796e-16,
        ),
        (
            2.5,
            1e-12,
            1.694_551_424_371_129_6e-13,
            -9.228_238_496_871_749_3e-14,
            0.169_455_142_436_786_91,
        ),
        (
            0.3,
            1e-20,
            1.300_041_802_541_084_7e-20,
            -2.669_192_173_976_161_5e-20,
            1.300_041_802_541_084_7,
        ),
        (
            40.0,
            1e-9,
            1.406_490_500_665_578_1e-12,
            -6.805_044_645_014_247_5e-14,
            0.001_406_490_498_704_949_6,
        ),
        (
            1.0,
            3e-6,
            1.499_988_750_057_374_8e-6,
            -1.499_985_195_679_511_6e-6,
            0.499_992_500_057_374_67,
        ),
        (
            1e3,
            6e-4,
            1.437_414_227_590_710_3e-9,
            -2.870_951_084_506_398_4e-12,
            2.393_747_894_773_221_4e-6,
        ),
        (
            30.0,
            2e-3,
            4.881_185_606_268_751_9e-6,
            -3.115_580_935_589_254_3e-7,
            0.002_433_735_539_968_577_3,
        ),
        (
            2e5,
            1e-7,
            6.010_202_530_726_090_8e-18,
            -6.010_161_944_514_957_8e-23,
            6.010_201_718_989_540_6e-11,
        ),
    ];
    for (a0, b0, want, want_a, want_b) in cases {
        let got = kumaraswamy_variance_and_partials(a0, b0);
        for ((got, want), what) in got
            .iter()
            .zip([want, want_a, want_b])
            .zip(["value", "∂a", "∂b"])
        {
            let rel = ((got - want) / want).abs();
            assert!(rel < 1e-9, "a = {a0}, b = {b0}: {what} {got:e} vs {want:e}");
        }
    }
}

/// The Kumaraswamy log-density where `x^a` is tiny beside 1 and `b`
/// large (its term `(b - 1) ln(1 - x^a)` is about `-(b - 1) x^a`), and where
/// `a ln x` is below the floats' range beside 1: values and slopes in `a`,
/// `b` and `x` against mpmath at 700 digits. `ln(1 - x^a)` was taken as
/// `ln(-expm1(a ln x))`, whose digits go with those of `1 - x^a`: at
/// `a = 1`, `b = 1e150`, `x = 1e-20` the log-density came out 345.4 where
/// it is -1e130, at `b = 5e15`, `x^a = 1e-8` it was 0.5 off; and at `a =
/// 1e-300` the slopes in `x` and `a` overflowed (`-inf` for -2.8e20,
/// `inf` for 3e300). The slope in `b`, `1/b + ln(1 - x^a)`, is held to
/// 1e-9 of its larger term.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn kumaraswamy_log_density_where_x_to_the_a_is_tiny() {
    type Case = ([f64; 3], [f64; 4]);
    // ([a, b, x], [log-density, ∂a, ∂b, ∂x])
    let cases: [Case; 7] = [
        (
            [1.0, 1e150, 1e-20],
            [
                -9.9999999999999992599e+129,
                4.6051701859880910327e+131,
                -9.9999999999999994516e-21,
                -9.9999999999999998085e+149,
            ],
        ),
        (
            [0.5, 1e150, 1e-300],
            [
                6.8908238071765375987e+2,
                1.9999999999999954168,
                6.6348579099582460123e-168,
                -9.9999999999999997162e+299,
            ],
        ),
        (
            [3.0, 1e150, 1e-20],
            [
                -9.999999999999998163e+89,
                4.6051701859880905275e+91,
                -9.9999999999999983546e-61,
                -2.9999999999999996134e+110,
            ],
        ),
        (
            [2.0, 5e15, 1e-4],
            [
                -4.999997261897888053e+7,
                4.6051701449363894651e+8,
                -9.9999998500000012918e-9,
                -9.9999999999999994792e+11,
            ],
        ),
        (
            [1e-300, 1e20, 0.3],
            [
                -6.9058990113935133951e+22,
                // 1e320: beyond the floats
                f64::INFINITY,
                -6.9058990113935133951e+2,
                -2.7686118169417912479e+20,
            ],
        ),
        (
            [1e-300, 3.0, 1.0 - 1e-12],
            [
                -2.126490057881757723e+3,
                2.9999999999999999248e+300,
                -7.1807323780277323043e+2,
                -2.0000442444210056623e+12,
            ],
        ),
        (
            [2.0, 3.0, 0.5],
            [
                5.2324814376454783652e-1,
                2.6895093981335156353e-1,
                4.5651260881552405894e-2,
                -6.6666666666666666667e-1,
            ],
        ),
    ];
    for ([a0, b0, x0], want) in cases {
        let tape = Tape::<f64>::new();
        let [a, b, x] = [a0, b0, x0].map(|v| tape.var(Tensor::scalar(v)));
        let lp = Kumaraswamy::new(a, b).unwrap().log_prob(x).unwrap();
        let g = lp.backward().unwrap();
        let slope = |v| g.get(v).unwrap().item().unwrap();
        let got = [lp.item().unwrap(), slope(a), slope(b), slope(x)];
        for (k, what) in ["value", "∂a", "∂b", "∂x"].iter().enumerate() {
            let (got, want) = (got[k], want[k]);
            let tolerance = if k == 2 {
                1e-9 * want.abs().max(1.0 / b0)
            } else {
                1e-9 * want.abs()
            };
            let ok = if want.is_infinite() {
                got == want
            } else {
                (got - want).abs() <= tolerance
            };
            assert!(
                ok,
                "a = {a0:e}, b = {b0:e}, x = {x0:e}: {what} {got:e} vs {want:e}"
            );
        }
    }
}

/// Below `a` of about 10⁻¹⁵⁴, the Kumaraswamy mean's and variance's slopes
/// in `a` (through `h = 1/a`: `-(h/a) ∂/∂h`) keep their range: `h/a`
/// overflowed there (the variance's slope came out `-inf` or NaN where it
/// is finite or 0), and the mean's `E[x] (ψ(1 + h) - ψ(1 + h + b))`, two
/// small factors, underflowed (its slope came out 0 where it is 1 at
/// `a = 10⁻²⁰⁰`, `b = 1`, and at `a = b = 10⁻³⁰⁰`). Against mpmath at 700
/// digits (`b B(1 + n/a, b)` and its closed-form derivatives, the inputs
/// as floats); where the mean and the variance are below the floats
/// (`b = 3`), the value and the slopes are 0.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn kumaraswamy_moment_slopes_at_tiny_a() {
    type Case = ([f64; 2], [f64; 3], [f64; 3]);
    // ([a, b], [mean, ∂a, ∂b], [variance, ∂a, ∂b])
    let cases: [Case; 8] = [
        (
            [1e-300, 1e-300],
            [1.0, 1.0, -6.9135274356311523804e+2],
            [6.9065959638255531004e-298, -1.0, 6.9065959638255529273e+2],
        ),
        (
            [1e-200, 1.0],
            [9.999999999999999821e-201, 1.0, -4.6009423426371066145e-198],
            [
                4.9999999999999999105e-201,
                5.0e-1,
                -2.3039369072213530337e-198,
            ],
        ),
        (
            [1e-300, 0.5],
            [
                8.8622692545275802475e-151,
                4.4311346272637900127e+149,
                -6.1215153386979092348e-148,
            ],
            [
                6.2665706865775013346e-151,
                3.1332853432887505888e+149,
                -4.3329086629339376582e-148,
            ],
        ),
        (
            [1e-160, 1e-5],
            [
                9.9631689112259637268e-1,
                9.9631689112259646551e+154,
                -3.6763178075165569286e+2,
            ],
            [
                3.6626376678946764904e-3,
                -9.8898470986830097042e+154,
                3.6423568376433515577e+2,
            ],
        ),
        (
            [1e-200, 1e-2],
            [
                9.9432585119150594152e-3,
                9.9432585119150598002e+195,
                -4.584616794167516751,
            ],
            [
                9.7757070185385032475e-3,
                9.6768386287037323404e+195,
                -4.4686210069209535115,
            ],
        ),
        ([1e-170, 3.0], [0.0; 3], [0.0; 3]),
        (
            [1e-50, 1e-300],
            [1.0, 1.0000000000000000174e-250, -1.1570647031460381705e+2],
            [
                1.1501332313404387463e-298,
                -1.0000000000000000174e-250,
                1.1501332313404387174e+2,
            ],
        ),
        (
            [1e-160, 1e-300],
            [1.0, 1.0000000000000000364e-140, -3.6899083054394884231e+2],
            [
                3.6829768336338890623e-298,
                -1.0000000000000000364e-140,
                3.6829768336338889701e+2,
            ],
        ),
    ];
    for ([a, b], mean, variance) in cases {
        let got = [
            (
                "mean",
                kumaraswamy_moment_and_partials(a, b, |k| k.mean()),
                mean,
            ),
            (
                "variance",
                kumaraswamy_variance_and_partials(a, b),
                variance,
            ),
        ];
        for (moment, got, want) in got {
            for ((got, want), what) in got.iter().zip(want).zip(["value", "∂a", "∂b"]) {
                let ok = if want == 0.0 {
                    *got == 0.0
                } else {
                    ((got - want) / want).abs() < 1e-9
                };
                assert!(
                    ok,
                    "a = {a:e}, b = {b:e}: {moment} {what} {got:e} vs {want:e}"
                );
            }
        }
    }
}

/// Between near-equal Gumbels, Weibulls and geometrics (scales 1 and
/// 1.000001, concentrations 10 and 10.00001, logits 1 and 1.000001) the
/// divergence, about 1e-13 to 1e-12, matches the 50-digit reference at
/// 1e-9 relative (as the reference check holds every value that is not
/// zero; it once passed these at 1e-12 absolute): its terms cancel to the
/// size of the squared difference. `ln Γ(1 + r)` through a rounded `1 + r` left
/// the first two 5e-5 and 1e-4 off (TFP 0.25: 7.5e-5 and 3.5e-4), and the
/// differences of softplus values taken apart the third 3.6e-4.
#[test]
fn near_equal_divergences_keep_their_digits() {
    let mut checked = 0;
    for (kind, case) in mpmath_cases() {
        let (kind, num) = (kind.as_str(), |k: &str| case_num(&case, k));
        let kinds = ["gumbel_kl", "weibull_kl", "geometric_kl"];
        if !kinds.contains(&kind) {
            continue;
        }
        let want = num("value");
        if want == 0.0 || want > 1e-12 {
            continue;
        }
        let tape = Tape::<f64>::new();
        let s = |k: &str| tape.scalar(num(k));
        let got = match kind {
            "gumbel_kl" => kl_divergence(
                &Gumbel::new(s("loc_q"), s("scale_q")).unwrap(),
                &Gumbel::new(s("loc_p"), s("scale_p")).unwrap(),
            ),
            "weibull_kl" => kl_divergence(
                &Weibull::new(s("concentration_q"), s("scale_q")).unwrap(),
                &Weibull::new(s("concentration_p"), s("scale_p")).unwrap(),
            ),
            _ => kl_divergence(
                &Geometric::from_logits(s("logits_q")).unwrap(),
                &Geometric::from_logits(s("logits_p")).unwrap(),
            ),
        };
        let got = got.unwrap().item().unwrap();
        assert!(
            ((got - want) / want).abs() < 1e-9,
            "{kind}: {got:e} vs {want:e}"
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}

/// The von Mises density (in the location, the concentration and the
/// value, which broadcast), its entropy and circular variance, and its KL,
/// near and far from the location and at small and large concentrations.
#[test]
fn gradcheck_von_mises() {
    let col = |x: &[f64]| Tensor::from_vec(x.to_vec(), &[x.len(), 1]).unwrap();
    gc(
        "von mises log_prob",
        |_, a| VonMises::new(a[0], a[1].exp())?.log_prob(a[2]),
        &[
            col(&[0.3, -2.0]),
            v(&[-3.0, 0.4, 3.5]),
            Tensor::from_rows(&[[0.2, 0.31, 7.0], [-2.5, 3.0, -2.0]]).unwrap(),
        ],
    );
    gc(
        "von mises entropy and variance",
        |_, a| {
            let d = VonMises::new(a[0], a[1].exp())?;
            Ok(d.entropy()? + d.variance()? * 3.0)
        },
        // κ from 0.05 to 60: both sides of the series' switch at 25
        &[v(&[0.1, 0.0, -1.0, 2.0]), v(&[-3.0, 0.5, 3.2, 4.1])],
    );
    gc(
        "von mises kl",
        |_, a| {
            let q = VonMises::new(a[0], a[1].exp())?;
            kl_divergence(&q, &VonMises::new(a[2], a[3].exp())?)
        },
        &[
            col(&[0.3, -2.0]),
            v(&[-1.0, 0.5, 3.3]),
            v(&[0.2, 1.5, -2.9]),
            col(&[0.1, 2.0]),
        ],
    );
}

/// Von Mises draws lie in `[-π, π)` and have its circular moments,
/// `E[cos(x - μ)] = A(κ) = 1 - variance`, `E[sin(x - μ)] = 0` and
/// `E[cos 2(x - μ)] = 1 - 2A(κ)/κ`; the entropy is the mean of `-ln p` over
/// them, and the KL against another von Mises the mean of `ln q - ln p`
/// (each within four standard errors), from nearly uniform to a
/// concentration of a million.
#[test]
fn von_mises_draws_and_integrals() -> Result<()> {
    let n = 100_000;
    for (i, k) in [1e-3, 0.7, 12.0, 1e6].into_iter().enumerate() {
        let tape = Tape::<f64>::new();
        let (loc, kv) = (3.0, tape.scalar(k));
        let q = VonMises::new(tape.scalar(loc), kv)?;
        let mut rng = StdRng::seed_from_u64(70 + i as u64);
        let draws = q.sample_n(Some(n), &mut rng)?;
        let pi = std::f64::consts::PI;
        assert!(
            draws.data().iter().all(|&x| (-pi..pi).contains(&x)),
            "κ = {k}"
        );
        let a = 1.0 - q.variance()?.item()?;
        for (what, f, want) in [
            ("cos", (|d: f64| d.cos()) as fn(f64) -> f64, a),
            ("sin", |d: f64| d.sin(), 0.0),
            ("cos 2", |d: f64| (2.0 * d).cos(), 1.0 - 2.0 * a / k),
        ] {
            let (m, se) = mean_and_se(&draws.map(|x| f(x - loc)));
            assert!(
                (m - want).abs() < 4.0 * se.max(1e-15),
                "κ = {k}, E[{what}]: {m} ± {se} vs {want}"
            );
        }
        let z = tape.constant(draws);
        let (h, se) = mean_and_se(&(-q.log_prob(z)?).value());
        let exact = q.entropy()?.item()?;
        assert!(
            (h - exact).abs() < 4.0 * se.max(1e-12),
            "κ = {k}: entropy {h} ± {se} vs {exact}"
        );
        let p = VonMises::new(tape.scalar(2.0), tape.scalar(k.min(50.0) * 0.5))?;
        let (kl, se) = mean_and_se(&(q.log_prob(z)? - p.log_prob(z)?).value());
        let exact = kl_divergence(&q, &p)?.item()?;
        assert!(
            (kl - exact).abs() < 4.0 * se,
            "κ = {k}: KL {kl} ± {se} vs {exact}"
        );
    }
    Ok(())
}

/// The von Mises density is periodic in the value; a non-finite draw to
/// reparameterize is an error, and so are a non-finite location and a
/// concentration that is not positive, finite and normal; the KL between
/// equal distributions is 0.
#[test]
fn von_mises_periodicity_and_bad_parameters() -> Result<()> {
    let tape = Tape::<f64>::new();
    let s = |x: f64| tape.scalar(x);
    let d = VonMises::new(s(0.5), s(40.0))?;
    let two_pi = 2.0 * std::f64::consts::PI;
    for x in [-3.0, 0.4, 0.5, 2.9] {
        let (a, b) = (
            d.log_prob(s(x))?.item()?,
            d.log_prob(s(x + 3.0 * two_pi))?.item()?,
        );
        assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
    }
    assert!(d.reparameterize(Tensor::scalar(f64::NAN)).is_err());
    assert_eq!(
        kl_divergence(&d, &VonMises::new(s(0.5), s(40.0))?)?.item()?,
        0.0
    );
    for (loc, k) in [
        (f64::NAN, 1.0),
        (f64::INFINITY, 1.0),
        (0.0, 0.0),
        (0.0, -1.0),
        (0.0, f64::INFINITY),
        (0.0, f64::NAN),
        (0.0, 1e-310),
    ] {
        assert!(VonMises::new(s(loc), s(k)).is_err(), "({loc}, {k})");
    }
    Ok(())
}

/// KL(Binomial || Binomial) of equal total counts is `n` times the
/// Bernoulli KL of the logits: a gradcheck in both logits with counts that
/// broadcast, the mean of `ln q - ln p` over draws (within four standard
/// errors), no gradient to the counts, and an error naming the position
/// where two counts differ.
#[test]
fn binomial_divergence_of_equal_counts() -> Result<()> {
    let n = Tensor::from_vec(vec![3.0, 40.0], &[2, 1])?;
    gc(
        "binomial kl",
        |tape, a| {
            let n = tape.constant(Tensor::from_vec(vec![3.0, 40.0], &[2, 1])?);
            kl_divergence(
                &Binomial::from_logits(n, a[0])?,
                &Binomial::from_logits(n, a[1])?,
            )
        },
        &[v(&[0.3, -2.0, 4.0]), v(&[-0.5, -1.9, 1.0])],
    );
    let tape = Tape::<f64>::new();
    let counts = tape.var(n);
    let (q, p) = (
        Binomial::from_logits(counts, tape.var(v(&[0.3, -2.0, 4.0])))?,
        Binomial::from_logits(counts, tape.scalar(-0.5))?,
    );
    let kl = kl_divergence(&q, &p)?;
    let grads = kl.sum().backward()?;
    assert!(
        grads
            .get(counts)
            .is_none_or(|g| g.data().iter().all(|&x| x == 0.0))
    );
    let mut rng = StdRng::seed_from_u64(5);
    let draws = tape.constant(q.sample_n(Some(20_000), &mut rng)?);
    let terms = (q.log_prob(draws)? - p.log_prob(draws)?).value();
    let per = kl.value().len();
    for (i, &want) in kl.value().data().iter().enumerate() {
        let at: Vec<f64> = terms.data().iter().skip(i).step_by(per).copied().collect();
        let (m, se) = mean_and_se(&Tensor::vector(&at));
        assert!(
            (m - want).abs() < 4.0 * se,
            "position {i}: {m} ± {se} vs {want}"
        );
    }
    let other = Binomial::from_logits(tape.var(v(&[3.0, 41.0])), tape.scalar(0.0))?;
    let e = kl_divergence(
        &Binomial::from_logits(tape.var(v(&[3.0, 40.0])), tape.scalar(0.0))?,
        &other,
    )
    .unwrap_err();
    assert!(e.to_string().contains("position 1"), "{e}");
    Ok(())
}

/// The von Mises `rsample` gradient is unbiased: the mean over draws of
/// the gradient of `cos(x - μ)` is that of its expectation `A(κ) = 1 -
/// variance`, in the concentration (the implicit derivative) and in the
/// location (0), from nearly uniform to a concentration of 10⁵, on both
/// sides of the derivative's switches between its integrals.
#[test]
fn von_mises_rsample_gradient_is_unbiased() {
    use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
    for (i, k) in [0.3, 4.0, 200.0, 1e5].into_iter().enumerate() {
        let loc = 0.7;
        let exact = {
            let tape = Tape::<f64>::new();
            let (mv, kv) = (tape.var(Tensor::scalar(loc)), tape.var(Tensor::scalar(k)));
            let d = VonMises::new(mv, kv).unwrap();
            // d(1 - variance)/dκ = A'(κ)
            let g = (-d.variance().unwrap()).backward().unwrap();
            vec![0.0, g.get(kv).unwrap().item().unwrap()]
        };
        stat_gradcheck(
            |rng| {
                let tape = Tape::<f64>::new();
                let (mv, kv) = (tape.var(Tensor::scalar(loc)), tape.var(Tensor::scalar(k)));
                let x = VonMises::new(mv, kv)?.rsample_n(Some(16), rng)?;
                // cos(x - μ) less a constant, as the log-density of a
                // von Mises of concentration 1 at the same (constant) location
                let unit = VonMises::new(tape.scalar(loc), tape.scalar(1.0))?;
                let g = (unit.log_prob(x)?.sum() / 16.0).backward()?;
                Ok(vec![g.get(mv).unwrap().item()?, g.get(kv).unwrap().item()?])
            },
            &exact,
            &StatGradCheck::default(),
            &mut StdRng::seed_from_u64(90 + i as u64),
        )
        .unwrap_or_else(|e| panic!("κ = {k}: {e}"));
    }
}
