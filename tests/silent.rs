//! Nothing silently wrong: each path that used to give a wrong gradient, a
//! wrong loss or an out-of-bounds access without an error now errors,
//! naming what is wrong.

use bayesgrad::bayes::score::{Baseline, ScoreSample};
use bayesgrad::prelude::*;

/// The Keras `Normal(self.mu[0])` trap in this library's clothes: a
/// distribution built once on a long-lived tape and reused after a step.
#[test]
fn a_tape_that_outlives_a_step_gives_a_stale_gradient_error() -> Result<()> {
    let mut store = ParamStore::<f64>::new();
    let mu = store.add("mu", Tensor::scalar(0.0));
    let x = Tensor::from_fn(&[50], |i| 2.0 + (i as f64 * 0.7).sin());
    let mut opt = Sgd::new(0.1);
    let tape = Tape::new();
    let d = Normal::new(tape.param(&store, mu), tape.scalar(1.0))?; // built once
    let nll = -d.log_prob(tape.constant(x.clone()))?.mean();
    opt.step(&mut store, &nll.backward()?)?; // the first step reads the current value
    let after_first = store.raw(mu).clone();
    let nll = -d.log_prob(tape.constant(x.clone()))?.mean();
    let err = opt.step(&mut store, &nll.backward()?).unwrap_err();
    assert!(
        matches!(&err, Error::StaleGradient { name, read: 0, current: 1 } if name == "mu"),
        "{err}"
    );
    assert!(err.to_string().contains("new tape"), "{err}");
    assert_eq!(
        store.raw(mu),
        &after_first,
        "a refused step modifies nothing"
    );
    // one tape per step trains (the error shrinks by 0.9 a step)
    for _ in 0..300 {
        let tape = Tape::new();
        let d = Normal::new(tape.param(&store, mu), tape.scalar(1.0))?;
        let nll = -d.log_prob(tape.constant(x.clone()))?.mean();
        opt.step(&mut store, &nll.backward()?)?;
    }
    let mean = x.data().iter().sum::<f64>() / 50.0;
    assert!((store.raw(mu).data()[0] - mean).abs() < 1e-6);
    Ok(())
}

#[test]
fn a_value_set_between_forward_and_step_is_a_stale_gradient() -> Result<()> {
    let mut store = ParamStore::<f64>::new();
    let w = store.add("w", Tensor::vector(&[1.0, 2.0]));
    let tape = Tape::new();
    let grads = tape.param(&store, w).square().sum().backward()?;
    store.set_raw(w, Tensor::vector(&[5.0, 5.0]))?;
    let err = Adam::new(0.1).step(&mut store, &grads).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StaleGradient {
                read: 0,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.version(w)?, 1);
    Ok(())
}

/// Returns one gradient for two inputs.
struct ShortBackward;
impl Op<f64> for ShortBackward {
    fn name(&self) -> &str {
        "short_backward"
    }
    fn forward(&self, inputs: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
        inputs[0].zip_map(inputs[1], "short_backward", |a, b| a * b)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<f64>],
        _: &Tensor<f64>,
        grad: &Tensor<f64>,
    ) -> Result<Vec<Option<Tensor<f64>>>> {
        Ok(vec![Some(grad.zip_map(
            inputs[1],
            "short_backward",
            |g, b| g * b,
        )?)])
    }
}

#[test]
fn an_op_returning_too_few_gradients_is_an_error_naming_it() {
    let tape = Tape::<f64>::new();
    let (a, b) = (tape.var(Tensor::scalar(2.0)), tape.var(Tensor::scalar(3.0)));
    let y = tape.apply(ShortBackward, &[a, b]).unwrap();
    let err = y.backward().unwrap_err();
    assert!(
        matches!(&err, Error::BadGradientCount { op, expected: 2, found: 1 } if op == "short_backward"),
        "{err}"
    );
    // gradcheck reports the same error instead of "analytic 0"
    let err = gradcheck(
        |tape, v| tape.apply(ShortBackward, &[v[0], v[1]]),
        &[Tensor::scalar(2.0), Tensor::scalar(3.0)],
        &GradCheck::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadGradientCount { .. }), "{err}");
}

#[test]
fn a_likelihood_broadcast_by_its_targets_is_refused() -> Result<()> {
    let tape = Tape::<f64>::new();
    let mean = tape.var(Tensor::from_vec(vec![0.1, 0.2, 0.3, 0.4], &[4, 1])?);
    let likelihood = Normal::new(mean, tape.scalar(1.0))?;
    let y = tape.constant(Tensor::vector(&[0.0, 0.5, 0.2, 0.1])); // [4], not [4, 1]
    let elbo = Elbo::new(KlWeight::PerExample { num_examples: 100 });
    let batch = Batch {
        index: 0,
        size: 4,
        step: 0,
    };
    let divergences = Divergences::new(&tape);
    let err = elbo
        .loss_from_likelihood(&divergences, &likelihood, y, batch)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("[4, 4]") && msg.contains("[4, 1]") && msg.contains("[4]"),
        "{msg}"
    );
    // the right targets pass, and a batch size that is not the leading size does not
    let y = tape.constant(Tensor::from_vec(vec![0.0, 0.5, 0.2, 0.1], &[4, 1])?);
    let ok = elbo.loss_from_likelihood(&divergences, &likelihood, y, batch)?;
    assert!((ok.nll - 0.9439).abs() < 1e-3, "{}", ok.nll);
    let wrong = Batch { size: 8, ..batch };
    let err = elbo
        .loss_from_likelihood(&divergences, &likelihood, y, wrong)
        .unwrap_err();
    assert!(err.to_string().contains("batch size 8"), "{err}");
    // Elbo::loss wants the NLL summed
    let err = elbo
        .loss(&divergences, likelihood.log_prob(y)?, batch)
        .unwrap_err();
    assert!(err.to_string().contains("one number"), "{err}");
    Ok(())
}

#[test]
fn shapes_whose_size_overflows_are_errors_not_memory_errors() {
    let huge = (1usize << 63) + 1;
    let err = Tensor::<f32>::from_vec(vec![1.0; 64], &[huge, 64]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let t = Tensor::<f32>::ones(&[4, 4]);
    assert!(matches!(
        t.reshape(&[huge, 2, 8]).unwrap_err(),
        Error::TooLarge { .. }
    ));
    // empty operands are valid for any other size; their product may not fit
    let (a, b) = (
        Tensor::<f64>::zeros(&[1 << 40, 0]),
        Tensor::<f64>::zeros(&[0, 1 << 40]),
    );
    assert!(matches!(a.matmul(&b).unwrap_err(), Error::TooLarge { .. }));
    let x = Tensor::<f64>::zeros(&[1 << 20, 1 << 20, 1 << 20, 0]);
    let k = Tensor::<f64>::zeros(&[1, 1, 0, 1 << 30]);
    let tape = Tape::new();
    let err = tape
        .constant(x)
        .conv2d(tape.constant(k), 1, Padding::Same)
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    // layers: an overflowing kernel and one the allocator refuses
    let mut store = ParamStore::<f64>::new();
    let mut rng = StdRng::seed_from_u64(0);
    for (i, o) in [
        (1usize << 32, 1usize << 32),
        (1 << 20, 1 << 20),
        (1 << 40, 1),
    ] {
        let err = DenseFlipout::new(&mut store, "l", i, o, &mut rng).unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { what, .. } if what.contains("layer 'l")),
            "{i}x{o}: {err}"
        );
        let err = Dense::new(&mut store, "d", i, o, &mut rng).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{i}x{o}: {err}");
    }
    assert!(store.is_empty(), "nothing was added");
}

/// A var of another tape shares node ids with this tape's leaves: its
/// gradient lookup used to return the gradient of the leaf with its id.
#[test]
fn a_var_of_another_tape_gets_no_gradient() -> Result<()> {
    let mut store = ParamStore::<f64>::new();
    let w = store.add("w", Tensor::scalar(3.0));
    let (tape, other) = (Tape::<f64>::new(), Tape::<f64>::new());
    let x = tape.var(Tensor::scalar(2.0));
    let w_here = tape.param(&store, w);
    let (y, w_there) = (other.var(Tensor::scalar(5.0)), other.param(&store, w));
    let grads = (x * x * w_here).backward()?;
    assert_eq!(grads.get(x).map(|g| g.data()[0]), Some(12.0));
    assert_eq!(grads.get(w_here).map(|g| g.data()[0]), Some(4.0));
    assert!(grads.get(y).is_none(), "node 0 of the other tape");
    assert!(
        grads.get(w_there).is_none(),
        "a read of the same parameter elsewhere"
    );
    assert_eq!(grads.param(w).map(|g| g.data()[0]), Some(4.0));
    Ok(())
}

/// A label slice of the wrong length used to broadcast: one label for a
/// batch of four gave that label's log-probability in every row, and a
/// row of three labels for a `[2, 3]` batch was repeated down its rows.
#[test]
fn labels_that_do_not_match_the_batch_are_an_error() -> Result<()> {
    let tape = Tape::<f64>::new();
    let logits = Tensor::from_fn(&[4, 3], |i| (i as f64 * 0.7).sin());
    let cat = Categorical::from_logits(tape.var(logits.clone()))?;
    let err = cat.log_prob_labels(&[2]).unwrap_err();
    assert!(
        err.to_string().contains("1 label(s) for a batch of 4"),
        "{err}"
    );
    assert!(cat.log_prob_labels(&[2, 0]).is_err());
    let grid = Categorical::from_logits(tape.var(logits.reshape(&[2, 2, 3])?))?;
    assert!(
        grid.log_prob_labels(&[0, 1]).is_err(),
        "one row of a [2, 2] batch"
    );
    // one label per distribution, in row-major order
    let lp = grid.log_prob_labels(&[0, 1, 2, 0])?.value();
    assert_eq!(lp.shape(), [2, 2]);
    let row = |i: usize| {
        Categorical::from_logits(tape.var(Tensor::from_fn(&[3], |j| logits.data()[3 * i + j])))
    };
    for (i, &label) in [0, 1, 2, 0].iter().enumerate() {
        assert_eq!(lp.data()[i], row(i)?.log_prob_labels(&[label])?.item()?);
    }
    // a single distribution takes any number of labels
    assert_eq!(row(0)?.log_prob_labels(&[0, 2, 2])?.shape(), [3]);
    Ok(())
}

/// Bounds with no interval between them used to clamp every value to `hi`.
#[test]
fn clamp_bounds_that_are_not_ordered_are_refused() -> Result<()> {
    let tape = Tape::<f32>::new();
    let x = tape.var(Tensor::vector(&[-2.0, 0.5, 3.0]));
    for (lo, hi) in [(1.0, 0.0), (f32::NAN, 1.0), (0.0, f32::NAN)] {
        let err = x.try_clamp(lo, hi).unwrap_err();
        assert!(err.to_string().contains("lo <= hi"), "{err}");
        let clamp = std::panic::AssertUnwindSafe(|| x.clamp(lo, hi));
        let panicked = std::panic::catch_unwind(clamp).unwrap_err();
        let message = panicked
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("try_clamp"), "{message}");
    }
    assert_eq!(x.try_clamp(0.5, 0.5)?.value().data(), [0.5; 3]);
    assert_eq!(
        x.clamp(f32::NEG_INFINITY, 1.0).value().data(),
        [-2.0, 0.5, 1.0]
    );
    Ok(())
}

/// Checker settings that make a check meaningless are refused: a NaN `|z|`
/// bound passed every estimator (`|z| > NaN` is false), a step of 0 failed
/// every element with a message about the derivatives, not the setting.
#[test]
fn gradient_checks_refuse_settings_that_cannot_check() {
    use bayesgrad::autodiff::statcheck::{StatGradCheck, stat_gradcheck};
    // an estimator whose mean is 1 against an exact gradient of 0
    let biased = |_: &mut dyn Rng| Ok(vec![1.0]);
    let mut rng = StdRng::seed_from_u64(0);
    let at = |max_z: f64, rng: &mut StdRng| {
        stat_gradcheck(biased, &[0.0], &StatGradCheck { samples: 10, max_z }, rng)
    };
    assert!(matches!(
        at(4.0, &mut rng),
        Err(Error::StatGradCheck { .. })
    ));
    for max_z in [f64::NAN, 0.0, -1.0] {
        let err = at(max_z, &mut rng).unwrap_err();
        assert!(err.to_string().contains("max_z must be > 0"), "{err}");
    }
    fn square<'t>(_: &'t Tape<f64>, v: &[Var<'t, f64>]) -> Result<Var<'t, f64>> {
        Ok(v[0].square().sum())
    }
    let x = [Tensor::vector(&[1.0, -2.0])];
    for (eps, atol, rtol, says) in [
        (0.0, 1e-6, 1e-5, "eps"),
        (f64::NAN, 1e-6, 1e-5, "eps"),
        (f64::INFINITY, 1e-6, 1e-5, "eps"),
        (-1e-6, 1e-6, 1e-5, "eps"),
        (1e-6, f64::NAN, 1e-5, "tolerances"),
        (1e-6, 1e-6, -1.0, "tolerances"),
    ] {
        let err = gradcheck(square, &x, &GradCheck { eps, atol, rtol }).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains(says),
            "{err}"
        );
    }
    assert!(gradcheck(square, &x, &GradCheck::default()).is_ok());
}

/// Gradients of one store's parameters, stepped on another store: the error
/// says so, where it said that the parameter was not read on the tape.
#[test]
fn stepping_another_stores_gradients_names_the_mix_up() -> Result<()> {
    let (mut read, mut other) = (ParamStore::<f64>::new(), ParamStore::<f64>::new());
    let p = read.add("p", Tensor::scalar(1.0));
    let q = other.add("p", Tensor::scalar(1.0));
    let tape = Tape::new();
    let v = tape.param(&read, p);
    let grads = (v * v).backward()?;
    let err = Adam::new(0.1).step(&mut other, &grads).unwrap_err();
    assert!(err.to_string().contains("another ParamStore"), "{err}");
    assert_eq!(other.value(q).data(), [1.0], "nothing was updated");
    // a tape that read both stores steps each with its own gradients
    let tape = Tape::new();
    let loss = tape.param(&read, p) * tape.param(&other, q);
    let grads = loss.backward()?;
    Adam::new(0.1).step(&mut read, &grads)?;
    Adam::new(0.1).step(&mut other, &grads)?;
    // a parameter of this store the loss does not read is still the usual error
    read.add("unread", Tensor::scalar(0.0));
    let tape = Tape::new();
    let grads = tape.param(&read, p).square().backward()?;
    let err = Adam::new(0.1).step(&mut read, &grads).unwrap_err();
    assert!(
        matches!(&err, Error::MissingGradient { name } if name == "unread"),
        "{err}"
    );
    Ok(())
}

/// A covariance that is not symmetric used to be read by its lower triangle
/// alone: `[[2, 0.1], [0.9, 2]]` gave the density of `[[2, 0.9], [0.9, 2]]`.
#[test]
fn a_covariance_that_is_not_symmetric_is_refused() -> Result<()> {
    fn check<F: bayesgrad::Element>(nudge: f64) -> Result<()> {
        let tape = Tape::<F>::new();
        let loc = tape.var(Tensor::zeros(&[3]));
        let cov = |c: [f64; 9]| tape.var(Tensor::from_fn(&[3, 3], |i| F::lit(c[i])));
        let symmetric = [2.0, 0.9, 0.2, 0.9, 2.0, -0.3, 0.2, -0.3, 1.5];
        MultivariateNormal::from_covariance(loc, cov(symmetric))?;
        let mut off = symmetric;
        off[5] = 0.4; // (1, 2) against (2, 1) = -0.3
        let err = MultivariateNormal::from_covariance(loc, cov(off))
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .contains("entry (1, 2) is 0.4 and (2, 1) is -0.3"),
            "{err}"
        );
        // an asymmetry at the scale of rounding (or of a finite-difference step) is not refused
        let mut near = symmetric;
        near[1] += nudge;
        MultivariateNormal::from_covariance(loc, cov(near))?;
        Ok(())
    }
    check::<f64>(1e-6)?;
    check::<f32>(1e-4)
}

/// A bijector over a base with events (an `Independent`, a
/// `MultivariateNormal`) used to subtract each element's log-Jacobian from
/// the event's log-density: the result had the value's shape, each entry
/// the whole event's density, and summing it counted the density once per
/// element.
#[test]
fn a_transformed_distribution_sums_the_log_jacobian_over_each_event() -> Result<()> {
    use bayesgrad::distributions::{Affine, Exp, TransformedDistribution};
    let tape = Tape::<f64>::new();
    let (loc, scale) = (
        tape.var(Tensor::from_fn(&[2, 3], |i| 0.1 * i as f64 - 0.2)),
        tape.var(Tensor::from_fn(&[2, 3], |i| 0.5 + 0.2 * i as f64)),
    );
    let base = || Independent::new(Box::new(Normal::new(loc, scale).unwrap()), 1).unwrap();
    let stretch = tape.var(Tensor::vector(&[2.0, -0.5, 3.0])); // one per event element
    let shift = tape.scalar(0.7);
    let d = TransformedDistribution::new(Box::new(base()), Box::new(Affine::new(shift, stretch)?));
    let y = tape.var(Tensor::from_fn(&[4, 2, 3], |i| {
        (i as f64 * 0.37).sin() * 2.0
    }));
    let lp = d.log_prob(y)?;
    assert_eq!(lp.shape(), [4, 2], "one log-density per event");
    // by hand: the base at x = (y - shift) / stretch, less Σ ln |stretch| over the event
    let x = (y - shift) / stretch;
    let expected = base().log_prob(x)? - stretch.abs().ln().sum();
    for (a, b) in lp.value().data().iter().zip(expected.value().data()) {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    }
    // a multivariate normal through y = 2x is the one with twice the mean and scale
    let l = Tensor::from_rows(&[[1.0, 0.0], [0.5, 1.5]])?;
    let m = tape.var(Tensor::vector(&[0.3, -0.1]));
    let mvn = |s: f64| MultivariateNormal::from_scale_tril(m * s, tape.constant(l.map(|v| v * s)));
    let doubled = TransformedDistribution::new(
        Box::new(mvn(1.0)?),
        Box::new(Affine::new(tape.scalar(0.0), tape.scalar(2.0))?),
    );
    let y = tape.var(Tensor::vector(&[0.9, -1.4]));
    let (got, want) = (doubled.log_prob(y)?.item()?, mvn(2.0)?.log_prob(y)?.item()?);
    assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
    // through Exp, an event with one element outside the image is -inf, the other finite
    let positive = TransformedDistribution::new(Box::new(base()), Box::new(Exp));
    let y = tape.var(Tensor::from_rows(&[[0.5, 1.0, 2.0], [0.5, -1.0, 2.0]])?);
    let lp = positive.log_prob(y)?.value();
    assert_eq!(lp.shape(), [2]);
    assert!(
        lp.data()[0].is_finite() && lp.data()[1] == f64::NEG_INFINITY,
        "{:?}",
        lp.data()
    );
    Ok(())
}

#[test]
fn gradcheck_a_transformed_distribution_over_events() {
    use bayesgrad::distributions::{Affine, TransformedDistribution};
    let report = gradcheck(
        |tape, v| {
            let base = Independent::new(Box::new(Normal::new(v[0], v[1])?), 1)?;
            let d = TransformedDistribution::new(
                Box::new(base),
                Box::new(Affine::new(tape.scalar(0.2), v[2])?),
            );
            Ok(d.log_prob(v[3])?.sum())
        },
        &[
            Tensor::vector(&[0.1, -0.3, 0.4]),
            Tensor::vector(&[0.8, 1.3, 0.6]),
            Tensor::vector(&[1.5, -2.0, 0.7]),
            Tensor::from_fn(&[2, 3], |i| 0.3 * i as f64 - 0.6),
        ],
        &GradCheck::default(),
    );
    assert!(report.is_ok(), "{report:?}");
}

/// An elementwise bijector over a simplex-valued base has no density to
/// carry (k entries, k - 1 degrees of freedom): an error, not a number.
#[test]
fn a_transformed_distribution_over_the_simplex_is_refused() -> Result<()> {
    use bayesgrad::distributions::{Exp, TransformedDistribution};
    let tape = Tape::<f64>::new();
    let conc = tape.var(Tensor::vector(&[1.5, 2.0, 0.7]));
    let y = tape.var(Tensor::vector(&[1.2, 1.3, 1.4]));
    let bases: Vec<Box<dyn Distribution<'_, f64> + '_>> = vec![
        Box::new(Dirichlet::new(conc)?),
        Box::new(Independent::new(
            Box::new(Dirichlet::new(conc.unsqueeze(0)?)?),
            1,
        )?),
        Box::new(RelaxedOneHotCategorical::new(tape.scalar(0.5), conc)?),
    ];
    for base in bases {
        let d = TransformedDistribution::new(base, Box::new(Exp));
        let err = d.log_prob(y).expect_err("refused");
        assert!(err.to_string().contains("simplex"), "{err}");
    }
    // a distribution of a user's own says so through the trait
    let d = TransformedDistribution::new(Box::new(OnTheLine { tape: &tape }), Box::new(Exp));
    let err = d
        .log_prob(tape.var(Tensor::vector(&[0.3, 0.7])))
        .expect_err("refused");
    assert!(err.to_string().contains("simplex"), "{err}");
    Ok(())
}

/// The uniform distribution on the segment `{(p, 1 - p)}`: two entries, one
/// degree of freedom.
struct OnTheLine<'t> {
    tape: &'t Tape<f64>,
}

impl<'t> Distribution<'t, f64> for OnTheLine<'t> {
    fn name(&self) -> &'static str {
        "OnTheLine"
    }
    fn tape(&self) -> &'t Tape<f64> {
        self.tape
    }
    fn log_prob(&self, x: Var<'t, f64>) -> Result<Var<'t, f64>> {
        Ok(x.sum_axis(x.shape().len() - 1, false)? * 0.0)
    }
    fn rsample_n(&self, _: Option<usize>, _: &mut dyn Rng) -> Result<Var<'t, f64>> {
        Err(Error::Unsupported {
            distribution: "OnTheLine",
            what: "draws",
        })
    }
    fn sample(&self, _: &mut dyn Rng) -> Result<Tensor<f64>> {
        Ok(Tensor::vector(&[0.5, 0.5]))
    }
    fn entropy(&self) -> Result<Var<'t, f64>> {
        Ok(self.tape.scalar(0.0))
    }
    fn mean(&self) -> Result<Var<'t, f64>> {
        Ok(self.tape.constant(Tensor::vector(&[0.5, 0.5])))
    }
    fn variance(&self) -> Result<Var<'t, f64>> {
        Ok(self
            .tape
            .constant(Tensor::vector(&[1.0 / 12.0, 1.0 / 12.0])))
    }
    fn batch_shape(&self) -> Vec<usize> {
        vec![]
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![2]
    }
    fn events_on_the_simplex(&self) -> bool {
        true
    }
}

/// A Monte Carlo KL averages its draws and nothing else. Against a prior
/// with a wider batch it gives one divergence per batch element (three
/// draws of a scalar posterior used to be read as the prior's batch of
/// three and averaged into one number), and a prior over a whole kernel
/// (an `Independent`) is compared with the posterior's whole kernel (each
/// weight's log-density used to be set against the kernel's, summing the
/// prior's once per weight).
#[test]
fn a_sampled_kl_keeps_the_batch_and_compares_whole_events() -> Result<()> {
    let tape = Tape::<f64>::new();
    let mut rng = StdRng::seed_from_u64(3);
    let q = Normal::new(tape.scalar(0.0), tape.scalar(1.0))?;
    let p = Normal::new(
        tape.constant(Tensor::vector(&[0.0, 3.0, -3.0])),
        tape.scalar(1.0),
    )?;
    for samples in [3, 4000] {
        let kl = kl_monte_carlo(&q, &p, samples, &mut rng)?;
        assert_eq!(kl.shape(), vec![3], "{samples} draws");
        // ln q(z) - ln p(z) = m²/2 - m z: at the same draws the two shifted
        // priors' estimates are 4.5 ∓ 3 z̄, and the unshifted one's is 0
        let v = kl.value();
        assert_eq!(v.data()[0], 0.0);
        assert!((v.data()[1] + v.data()[2] - 9.0).abs() < 1e-9, "{v:?}");
    }

    // a posterior per weight against a prior over the whole kernel, and
    // the other way round: one divergence, the log-densities' sums
    let q = Normal::new(
        tape.var(Tensor::from_fn(&[2, 3], |i| 0.1 * i as f64)),
        tape.constant(Tensor::full(&[2, 3], 0.7)),
    )?;
    let p = Normal::new(
        tape.constant(Tensor::full(&[2, 3], 0.5)),
        tape.constant(Tensor::full(&[2, 3], 1.3)),
    )?;
    let z = q.rsample(&mut rng)?;
    let by_hand = (q.log_prob(z)? - p.log_prob(z)?).sum().item()?;
    let joint = |d| Independent::new(Box::new(d), 2);
    for kl in [
        kl_from_sample(&q, &joint(p)?, z)?,
        kl_from_sample(&joint(q)?, &p, z)?,
    ] {
        assert_eq!(kl.shape(), Vec::<usize>::new());
        assert!(
            (kl.item()? - by_hand).abs() < 1e-12 * by_hand.abs(),
            "{kl:?}"
        );
    }
    // events that neither spans are refused
    let rows = Independent::new(Box::new(q), 1)?; // events [3]
    let cols = Independent::new(
        Box::new(Normal::standard(&tape, &[3, 2])),
        1, // events [2]
    )?;
    let err = kl_from_sample(&rows, &cols, z).unwrap_err();
    assert!(err.to_string().contains("events of shape [3]"), "{err}");
    Ok(())
}

/// A layer under a custom prior over its whole kernel (TFP's habit:
/// `Independent(Normal(0, 1), reinterpreted_batch_ndims=2)`) registers the
/// same divergence as under the per-weight prior, at the same draws.
#[test]
fn a_layer_under_a_prior_over_its_whole_kernel_gets_the_right_divergence() -> Result<()> {
    let run = |joint: bool| -> Result<f64> {
        let prior = Prior::custom(move |tape, _, shape| {
            let p = Normal::standard(tape, shape);
            Ok(if joint {
                Box::new(Independent::new(Box::new(p), shape.len())?)
            } else {
                Box::new(p)
            })
        });
        let config = VariationalConfig {
            prior,
            divergence: KlMethod::SampleEstimate,
            ..Default::default()
        };
        let mut store = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(5);
        let layer = DenseReparameterization::with_config(&mut store, "d", 4, 3, config, &mut rng)?;
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, &store, &mut rng);
        layer.forward(&mut cx, tape.constant(Tensor::ones(&[2, 4])))?;
        cx.divergences().total().item()
    };
    let (per_weight, whole) = (run(false)?, run(true)?);
    assert!(
        (whole - per_weight).abs() < 1e-12 * per_weight.abs(),
        "{whole} against {per_weight}"
    );
    Ok(())
}

/// A NaN predictive sample or target is refused by the regression
/// metrics: it used to be counted as outside its interval (a lower
/// coverage) or as a draw above the target (a PIT of 0), silently.
#[test]
fn regression_metrics_refuse_nan() {
    use bayesgrad::layers::metrics::{interval_coverage, pit_histogram};
    let samples = |bad: f64| -> Vec<Tensor<f64>> {
        (1..=5)
            .map(|s| Tensor::vector(&[s as f64, if s == 3 { bad } else { s as f64 }]))
            .collect()
    };
    let targets = [3.0, 3.0];
    // with the third draw at 3, both targets sit in the middle
    assert_eq!(interval_coverage(&samples(3.0), &targets, 0.5), Ok(1.0));
    assert_eq!(
        pit_histogram(&samples(3.0), &targets, 2),
        Ok(vec![0.0, 1.0])
    );
    let e = |r: Result<f64>| r.unwrap_err().to_string();
    let h = |r: Result<Vec<f64>>| r.unwrap_err().to_string();
    let at = "sample 2 is NaN at element 1";
    assert!(e(interval_coverage(&samples(f64::NAN), &targets, 0.5)).contains(at));
    assert!(h(pit_histogram(&samples(f64::NAN), &targets, 2)).contains(at));
    let nan_target = [3.0, f64::NAN];
    assert!(e(interval_coverage(&samples(3.0), &nan_target, 0.5)).contains("target 1 is NaN"));
    assert!(h(pit_histogram(&samples(3.0), &nan_target, 2)).contains("target 1 is NaN"));
}

/// The analytic KL between two `Independent`s refuses events of different
/// shapes, as TFP does: the base pair's KL broadcast a prior over `R^1`
/// across a posterior's three entries and summed it (1.5 for three unit
/// shifts, silently).
#[test]
fn an_analytic_kl_between_events_of_different_shapes_is_refused() -> Result<()> {
    let tape = Tape::<f64>::new();
    let normal = |shape: &[usize], loc: f64| {
        Normal::new(
            tape.constant(Tensor::full(shape, loc)),
            tape.constant(Tensor::ones(shape)),
        )
    };
    let q = Independent::new(Box::new(normal(&[2, 3], 0.0)?), 1)?;
    let one = Independent::new(Box::new(normal(&[1], 1.0)?), 1)?;
    let err = kl_divergence(&q, &one).map(drop).unwrap_err();
    assert!(err.to_string().contains("events of shape [3]"), "{err}");
    // the same event shape is served, the base KLs summed over each event
    let three = Independent::new(Box::new(normal(&[3], 1.0)?), 1)?;
    let kl = kl_divergence(&q, &three)?.value();
    assert_eq!((kl.shape(), kl.data()), (&[2][..], &[1.5, 1.5][..]));
    Ok(())
}

/// One optimizer stepping two stores (a k-fold loop that makes a new store
/// per fold but keeps the optimizer, say) is refused: its state is indexed
/// by parameter position, so the second store's parameter took the first
/// one's moments and step count, and moved against its own gradient.
#[test]
fn an_optimizer_that_stepped_another_store_refuses_to_step() -> Result<()> {
    fn fold<O: Optimizer<f64>>(opt: &mut O) -> Result<(ParamStore<f64>, Param)> {
        let mut store = ParamStore::new();
        let w = store.add("w", Tensor::scalar(1.0));
        for _ in 0..3 {
            let tape = Tape::new();
            let loss = tape.param(&store, w).square(); // pulls w down
            opt.step(&mut store, &loss.backward()?)?;
        }
        Ok((store, w))
    }
    fn check<O: Optimizer<f64>>(mut opt: O, fresh: O) -> Result<()> {
        fold(&mut opt)?;
        let mut next = ParamStore::new();
        let w = next.add("w", Tensor::scalar(1.0));
        let tape = Tape::new();
        let grads = (-tape.param(&next, w)).backward()?; // pushes w up
        let err = opt.step(&mut next, &grads).unwrap_err();
        assert!(
            err.to_string().contains("stepped another ParamStore"),
            "{err}"
        );
        assert_eq!(next.value(w).item()?, 1.0, "a refused step changes nothing");
        // a fresh optimizer moves it up, by the learning rate
        let mut fresh = fresh;
        fresh.step(&mut next, &grads)?;
        assert!((next.value(w).item()? - 1.1).abs() < 1e-8);
        Ok(())
    }
    check(Adam::new(0.1), Adam::new(0.1))?;
    check(Sgd::with_momentum(0.1, 0.9), Sgd::with_momentum(0.1, 0.9))?;
    // plain SGD keeps no state, and set_state moves Adam's on purpose
    let mut sgd = Sgd::new(0.1);
    fold(&mut sgd)?;
    fold(&mut sgd)?;
    let mut adam = Adam::new(0.1);
    let (first, _) = fold(&mut adam)?;
    drop(first);
    adam.set_state(adam.state().clone());
    fold(&mut adam)?;
    Ok(())
}

/// The mean over `passes` forward passes of the divergences a layer
/// registers, and its standard error.
fn mean_divergence(
    layer: &dyn Module<f64>,
    store: &ParamStore<f64>,
    mode: SampleMode,
    passes: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Tensor::from_fn(&[4, 6], |i| (i as f64 * 0.37).sin());
    let mut kls = Vec::with_capacity(passes);
    for _ in 0..passes {
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, store, &mut rng).with_mode(mode);
        layer.forward(&mut cx, tape.constant(x.clone()))?;
        kls.push(
            cx.divergences()
                .values()
                .iter()
                .map(|(_, v)| v)
                .sum::<f64>(),
        );
    }
    let n = passes as f64;
    let mean = kls.iter().sum::<f64>() / n;
    let var = kls.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok((mean, (var / n).sqrt()))
}

/// A pass at the posterior means registers the same divergences, on
/// average, as a pass that draws the weights: a sampled divergence is taken
/// at a posterior draw made for it, not at the means (where `ln q` is at its
/// largest, half a nat a weight above its average), and a hierarchical
/// prior's scales are drawn, not taken at their medians. The network's
/// output stays the deterministic one at the means.
#[test]
fn a_pass_at_the_posterior_means_registers_the_divergences_of_a_drawn_pass() -> Result<()> {
    use bayesgrad::layers::{HierarchicalScale, ScalePrior};
    use std::sync::Arc;
    let mut rng = StdRng::seed_from_u64(3);
    let mut store = ParamStore::<f64>::new();
    // a prior without a closed form (the sampled divergence), over a
    // variational bias as well as the kernel (6 x 5 + 5 weights)
    let sampled = VariationalConfig {
        prior: Prior::spike_and_slab_tfp(),
        bias: BiasMode::Variational,
        ..VariationalConfig::default()
    };
    let flipout = DenseFlipout::with_config(&mut store, "f", 6, 5, sampled.clone(), &mut rng)?;
    let local =
        DenseLocalReparameterization::with_config(&mut store, "l", 6, 5, sampled, &mut rng)?;
    // random scales with wide posteriors, where E[1/s²] is far from the
    // value at the median
    let lognormal = ScalePrior::LogNormal {
        loc: 0.0,
        scale: 1.0,
    };
    let scale = HierarchicalScale::new(&mut store, "h/prior", 6, lognormal, lognormal)?;
    let ((local_loc, local_rho), (global_loc, global_rho)) = scale.params();
    for (loc, rho) in [(local_loc, local_rho), (global_loc, global_rho)] {
        let shape = store.raw(loc).shape().to_vec();
        store.set_value(loc, Tensor::full(&shape, -1.0))?;
        store.set_value(rho, Tensor::full(&shape, 0.4))?;
    }
    let hierarchical = VariationalConfig {
        prior: Prior::Hierarchical(Arc::new(scale)),
        ..VariationalConfig::default()
    };
    let h = DenseFlipout::with_config(&mut store, "h", 6, 5, hierarchical, &mut rng)?;
    let layers: [(&str, &dyn Module<f64>); 3] = [
        ("flipout", &flipout),
        ("local", &local),
        ("hierarchical", &h),
    ];
    for (name, layer) in layers {
        let (drawn, se_drawn) = mean_divergence(layer, &store, SampleMode::Sample, 4000, 1)?;
        let (at_means, se_means) =
            mean_divergence(layer, &store, SampleMode::PosteriorMean, 4000, 2)?;
        let z = (at_means - drawn) / (se_drawn.powi(2) + se_means.powi(2)).sqrt();
        assert!(
            z.abs() < 5.0,
            "{name}: {at_means:.3} ± {se_means:.3} at the means against {drawn:.3} ± {se_drawn:.3} drawn (z = {z:.1})"
        );
    }
    // the output at the means does not depend on the draws
    let out = output_at_the_means(&h, &store, 5)?;
    assert_eq!(out, output_at_the_means(&h, &store, 6)?);
    Ok(())
}

/// The output of a pass at the posterior means, with the RNG seeded by `seed`.
fn output_at_the_means(
    layer: &dyn Module<f64>,
    store: &ParamStore<f64>,
    seed: u64,
) -> Result<Tensor<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tape = Tape::new();
    let mut cx = Forward::new(&tape, store, &mut rng).with_mode(SampleMode::PosteriorMean);
    let x = Tensor::from_fn(&[4, 6], |i| (i as f64 * 0.37).sin());
    Ok(layer.forward(&mut cx, tape.constant(x))?.value())
}

/// A spike-and-slab prior with a narrow spike in `f32`: the fused posterior
/// op weighs the components by `1 / s²`, which overflows below about 5e-20,
/// and its gradients came out NaN (`0 · inf` where the spike's
/// responsibility is 0) while its divergence looked fine. Such a prior now
/// takes the mixture op, whose gradients stay finite; a scale whose
/// reciprocal overflows `F` (subnormal in `f32`) is refused by name, where
/// the mixture's log-density was NaN at the spike's mean.
#[test]
fn a_narrow_spike_in_f32_gives_finite_gradients() -> Result<()> {
    for spike_scale in [1e-20, 1e-30] {
        let mut rng = StdRng::seed_from_u64(0);
        let mut store = ParamStore::<f32>::new();
        let config = VariationalConfig {
            prior: Prior::SpikeAndSlab {
                pi: 0.5,
                spike_scale,
                slab_scale: 1.0,
            },
            ..VariationalConfig::default()
        };
        let layer = DenseFlipout::with_config(&mut store, "h", 3, 2, config, &mut rng)?;
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, &store, &mut rng);
        let y = layer.forward(&mut cx, tape.constant(Tensor::ones(&[2, 3])))?;
        let kl = cx.divergences().total();
        assert!(kl.item()?.is_finite());
        let grads = (kl + y.sum()).backward()?;
        let (loc, rho) = layer.kernel_params();
        for p in [loc, rho] {
            let g = grads.param(p).expect("a gradient");
            assert!(g.first_non_finite().is_none(), "{spike_scale}: {g:?}");
        }
    }
    let tape = Tape::<f32>::new();
    let e = SpikeAndSlab::new(tape.scalar(0.5), tape.scalar(1e-40), tape.scalar(1.0)).err();
    assert!(e.is_some_and(|e| e.to_string().contains("spike_scale")));
    let e = MixtureOfNormals::new(
        tape.var(Tensor::vector(&[0.5, 0.5])),
        tape.var(Tensor::vector(&[0.0, 0.0])),
        tape.var(Tensor::vector(&[1.0, 1e-40])),
    )
    .err();
    assert!(e.is_some_and(|e| e.to_string().contains("scales")));
    Ok(())
}

/// A relaxed one-hot categorical in `f32` at a subnormal temperature drew
/// NaN (the logits are divided by the temperature, whose reciprocal
/// overflows): such a temperature is refused by name, and the smallest
/// normal one still draws finite values with finite gradients.
#[test]
fn a_subnormal_temperature_is_refused() -> Result<()> {
    let tape = Tape::<f32>::new();
    let logits = tape.var(Tensor::vector(&[2.0, -1.0, 0.5]));
    for t in [1e-42f32, 1e-45] {
        let e = RelaxedOneHotCategorical::new(tape.scalar(t), logits).err();
        assert!(
            e.is_some_and(|e| e.to_string().contains("temperature")),
            "{t}"
        );
        let e = RelaxedBernoulli::new(tape.scalar(t), logits).err();
        assert!(
            e.is_some_and(|e| e.to_string().contains("temperature")),
            "{t}"
        );
    }
    let d = RelaxedOneHotCategorical::new(tape.scalar(f32::MIN_POSITIVE), logits)?;
    let x = d.rsample(&mut StdRng::seed_from_u64(3))?;
    assert!(x.value().first_non_finite().is_none(), "{:?}", x.value());
    let g = x.square().sum().backward()?;
    assert!(
        g.get(logits)
            .expect("a gradient")
            .first_non_finite()
            .is_none()
    );
    Ok(())
}

/// A subnormal scale (or Student-t `df`, or a multivariate normal's
/// `scale_tril` diagonal) in `f32` gave NaN log-densities or gradients:
/// `Normal(0, 1e-42)` at its mean was NaN (its reciprocal overflows, and
/// `0 · inf` follows). Such parameters are refused by name;
/// the smallest normal scale still gives finite values and gradients.
#[test]
fn a_subnormal_scale_is_refused() -> Result<()> {
    let tape = Tape::<f32>::new();
    let (zero, tiny) = (tape.scalar(0.0), tape.scalar(1e-42));
    let refused = |r: Result<()>, what: &str| match r {
        Err(e) => assert!(e.to_string().contains(what), "{e}"),
        Ok(()) => panic!("{what} accepted"),
    };
    refused(Normal::new(zero, tiny).map(|_| ()), "scale");
    refused(LogNormal::new(zero, tiny).map(|_| ()), "scale");
    refused(Laplace::new(zero, tiny).map(|_| ()), "scale");
    refused(
        StudentT::new(tape.scalar(3.0), zero, tiny).map(|_| ()),
        "scale",
    );
    refused(
        StudentT::new(tiny, zero, tape.scalar(1.0)).map(|_| ()),
        "df",
    );
    let tril = tape.var(Tensor::from_rows(&[[1.0, 0.0], [0.5, 1e-42]])?);
    let mvn = MultivariateNormal::from_scale_tril(tape.var(Tensor::zeros(&[2])), tril);
    refused(mvn.map(|_| ()), "scale_tril diagonal");
    let scale = tape.var(Tensor::scalar(f32::MIN_POSITIVE));
    let lp = Normal::new(zero, scale)?.log_prob(tape.scalar(0.0))?;
    assert!(lp.item()?.is_finite());
    let grads = lp.backward()?;
    let g = grads.get(scale).expect("a gradient");
    assert!(g.first_non_finite().is_none(), "{g:?}");
    Ok(())
}

/// Draws whose total overflows `f32`, though every mean of the others is
/// finite: each leave-one-out baseline is the mean of the others (the total
/// less the draw would be `inf` for all of them, and the score-function
/// gradient infinite or NaN), the gradient is finite, and so is the
/// surrogate's value, the mean of the draws' objectives.
#[test]
fn a_leave_one_out_baseline_is_finite_where_the_total_overflows() -> Result<()> {
    let f = [2e38f32, 2e38, 1.0];
    let tape = Tape::<f32>::new();
    let t = tape.var(Tensor::vector(&[0.3]));
    let mut rng = StdRng::seed_from_u64(7);
    let draw = ScoreSample::draw(&Bernoulli::from_logits(t)?, Some(3), &mut rng)?;
    let objective = tape.constant(Tensor::from_vec(f.to_vec(), &[3, 1])?);
    let s = draw.surrogate(objective, Baseline::LeaveOneOut)?;
    // the surrogate's value is the mean of the draws' objectives, finite
    // though their sum is not
    let value = f64::from(s.objective.value().data()[0]);
    assert!((value - (4e38 + 1.0) / 3.0).abs() <= 1e32, "{value}");
    let grad = s.objective.sum().backward()?.get(t).unwrap().data()[0];
    // (1/3) Σ_i (f_i - mean of the others) d ln q(x_i)/dt, with
    // d ln q(x)/dt = x - σ(t) for a Bernoulli of logit t
    let x = draw.value().value();
    let sigma = 1.0 / (1.0 + (-0.3f64).exp());
    let want: f64 = (0..3)
        .map(|i| {
            let others = (0..3).filter(|&j| j != i).map(|j| f[j] as f64).sum::<f64>() / 2.0;
            (f[i] as f64 - others) * (x.data()[i] as f64 - sigma) / 3.0
        })
        .sum();
    assert!(grad.is_finite(), "{grad}");
    assert!(
        (grad as f64 - want).abs() <= 1e-5 * want.abs().max(1e30),
        "{grad} vs {want}"
    );
    Ok(())
}

/// A parameter that a failed `ParamStore::adding` removed leaves nothing a
/// later one could inherit. Its handle, kept out of the constructor, is
/// refused even after a new parameter takes its position (and gradients
/// have nothing under it), and an optimizer stepped inside the failed
/// constructor starts the newcomer afresh instead of applying the removed
/// parameter's moments or velocity to it.
#[test]
fn a_parameter_removed_by_a_failed_constructor_leaves_no_trace() -> Result<()> {
    fn check<O: Optimizer<f64>>(mut opt: O, first_move: f64) -> Result<()> {
        let mut store = ParamStore::<f64>::new();
        let kept = store.add("kept", Tensor::scalar(1.0));
        let mut leaked = None;
        let built = store.adding(|store| {
            let temp = store.try_add("temp", Tensor::scalar(5.0))?;
            leaked = Some(temp);
            // a step inside the constructor leaves state at temp's position
            let tape = Tape::new();
            let loss = tape.param(store, kept) + tape.param(store, temp) * -100.0;
            opt.step(store, &loss.backward()?)?;
            Err::<(), _>(Error::invalid("test", "the constructor fails"))
        });
        assert!(built.is_err());
        let leaked = leaked.unwrap();
        let newcomer = store.add("newcomer", Tensor::scalar(3.0));
        assert_eq!(newcomer.index(), leaked.index(), "the same position");
        assert_ne!(newcomer, leaked);
        assert!(matches!(
            store.try_raw(leaked),
            Err(Error::ForeignParam { .. })
        ));
        let err = store.set_raw(leaked, Tensor::scalar(0.0)).unwrap_err();
        assert!(err.to_string().contains("removed"), "{err}");
        let tape = Tape::new();
        assert!(tape.try_param(&store, leaked).is_err());
        let grads = (tape.param(&store, kept) + tape.param(&store, newcomer)).backward()?;
        assert!(grads.param(leaked).is_none());
        assert!(grads.param(newcomer).is_some());
        opt.step(&mut store, &grads)?;
        let moved = 3.0 - store.raw(newcomer).item()?;
        assert!(
            (moved - first_move).abs() < 1e-12,
            "{moved} vs {first_move}"
        );
        Ok(())
    }
    // SGD with momentum: a fresh velocity moves by lr * g
    check(Sgd::with_momentum(0.1, 0.9), 0.1)?;
    // Adam at its second step with fresh moments and g = 1:
    // lr (m / (1 - b1²)) / (sqrt(v / (1 - b2²)) + eps), m = 0.1, v = 0.001
    let fresh = 0.1 * (0.1 / (1.0 - 0.81)) / ((0.001f64 / (1.0 - 0.998001)).sqrt() + 1e-8);
    check(Adam::new(0.1), fresh)
}
