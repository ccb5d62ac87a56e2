//! No panics reachable from the `try_` API: random small graphs over random
//! shapes (mismatched and empty ones included) and non-finite values; the
//! same for distribution constructors, layer forwards and checkpoint bytes.
//! Every call must return `Ok` or an `Err`; a panic fails the property.
//! The graphs, distributions and layers run in `f64` and in `f32` (whose
//! kernels are separate vector code); the values are drawn in `f64` and
//! rounded, so that `1e300` is `inf` and `1e-40` a subnormal in `f32`.

use bayesgrad::prelude::*;
use bayesgrad::tensor::Element;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -3.0..3.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => prop_oneof![Just(1e300), Just(-1e300), Just(1e-300), Just(3e38), Just(1e-40)],
    ]
}

fn tensor() -> impl Strategy<Value = Tensor<f64>> {
    prop::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(value(), n).prop_map(move |d| Tensor::from_vec(d, &shape).unwrap())
    })
}

/// Distribution parameters: mostly valid (positive, down to 1e-300 and up
/// to 1e300), sometimes not, over non-empty shapes, so that constructors
/// succeed often enough for the methods behind them to run.
fn param() -> impl Strategy<Value = Tensor<f64>> {
    let v = prop_oneof![
        8 => 0.01..5.0f64,
        1 => prop_oneof![Just(1e-300), Just(1e300), Just(1e10), Just(0.5), Just(1e-40)],
        1 => prop_oneof![Just(-1.0), Just(f64::NAN), Just(0.0)],
    ];
    prop::collection::vec(1usize..4, 0..3).prop_flat_map(move |shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(v.clone(), n).prop_map(move |d| Tensor::from_vec(d, &shape).unwrap())
    })
}

/// One step of a random graph: an op code and operand/argument choices.
#[derive(Debug, Clone)]
struct Step {
    op: u8,
    a: usize,
    b: usize,
    k: usize,
    flag: bool,
    shape: Vec<usize>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..34,
        0usize..16,
        0usize..16,
        0usize..5,
        any::<bool>(),
        prop::collection::vec(0usize..4, 0..4),
    )
        .prop_map(|(op, a, b, k, flag, shape)| Step {
            op,
            a,
            b,
            k,
            flag,
            shape,
        })
}

/// `t` in the element type `F` (rounded for `f32`).
fn cast<F: Element>(t: &Tensor<f64>) -> Tensor<F> {
    Tensor::from_vec(t.data().iter().map(|&v| F::lit(v)).collect(), t.shape()).unwrap()
}

fn apply<'t, F: Element>(
    tape: &'t Tape<F>,
    divergences: &mut Divergences<'t, F>,
    pool: &[Var<'t, F>],
    s: &Step,
) -> Result<Var<'t, F>> {
    let a = pool[s.a % pool.len()];
    let b = pool[s.b % pool.len()];
    let pad = if s.flag {
        Padding::Same
    } else {
        Padding::Valid
    };
    match s.op {
        0 => a.try_add(b),
        1 => a.try_sub(b),
        2 => a.try_mul(b),
        3 => a.try_div(b),
        4 => a.matmul(b),
        5 => a.reshape(&s.shape),
        6 => a.sum_axis(s.k, s.flag),
        7 => a.mean_axis(s.k, s.flag),
        8 => a.max_axis(s.k, s.flag),
        9 => a.log_softmax(s.k),
        10 => a.logsumexp(s.k, s.flag),
        11 => a.index(s.k),
        12 => a.slice(s.k % 3, s.b % 3, s.b % 3 + s.k % 2),
        13 => a.select(s.k % 3, &s.shape),
        14 => a.gather(&s.shape),
        15 => Var::concat(&[a, b], s.k),
        16 => Var::stack(&[a, b], s.k),
        17 => a.transpose(),
        18 => a.broadcast_to(&s.shape),
        19 => a.unsqueeze(s.k),
        20 => Ok(a.exp().ln().sqrt()),
        21 => Ok(a.softplus().log1p().sigmoid().tanh()),
        22 => Ok(a
            .relu()
            .abs()
            .square()
            .powf(F::lit(1.5))
            .clamp(F::lit(-1.0), F::one())),
        23 => Ok(a.sum()),
        24 => Ok(a.mean()),
        25 => a.conv2d(b, s.k, pad),
        26 => a.max_pool2d(s.k, s.b % 3),
        27 => Ok(a.detach()),
        28 => a.softmax(s.k),
        29 => Ok(divergences.total()),
        30 => divergences.add(format!("d{}", s.k), a).map(|_| a),
        31 => {
            let n = a.shape().first().copied().unwrap_or(0);
            let o = b.shape().last().copied().unwrap_or(0);
            let (s_in, s_out) = (Tensor::ones(&s.shape), Tensor::ones(&[n, o]));
            a.conv2d_flipout(b, b, &s_in, &s_out, s.k, pad)
        }
        32 if s.flag => a.cumsum_from_end(s.k),
        32 => a.cumsum(s.k),
        _ => a.item().map(|v| tape.scalar(v)),
    }
}

/// Calls every method of a distribution; only panics matter.
fn exercise<'t, F: Element>(d: &dyn Distribution<'t, F>, x: Var<'t, F>, rng: &mut StdRng) {
    let _ = d.log_prob(x);
    let _ = d.rsample(rng);
    let _ = d.rsample_n(Some(2), rng);
    let _ = d.sample(rng);
    let _ = d.entropy();
    let _ = d.mean();
    let _ = d.variance();
    let _ = d.stddev();
    let _ = (d.batch_shape(), d.event_shape());
    let _ = kl_divergence(d, d);
    let _ = kl_monte_carlo(d, d, 2, rng);
}

/// [`exercise`], then the backward pass of every var it can make: the
/// special functions of the Gamma-family densities run only there.
fn exercise_backward<'t, F: Element>(d: &dyn Distribution<'t, F>, x: Var<'t, F>, rng: &mut StdRng) {
    exercise(d, x, rng);
    let outputs = [
        d.log_prob(x),
        d.rsample(rng),
        d.entropy(),
        d.mean(),
        d.variance(),
        kl_divergence(d, d),
    ];
    for v in outputs.into_iter().flatten() {
        let _ = v.sum().backward();
    }
}

/// A random graph of `steps` over `inputs` in `F`, then the backward pass
/// of every var it made.
fn random_graph<F: Element>(inputs: &[Tensor<f64>], steps: &[Step], checked: bool) {
    let tape = if checked {
        Tape::with_finite_check()
    } else {
        Tape::new()
    };
    let mut pool: Vec<Var<F>> = inputs.iter().map(|t| tape.var(cast(t))).collect();
    let mut divergences = Divergences::new(&tape);
    for s in steps {
        if let Ok(v) = apply(&tape, &mut divergences, &pool, s) {
            pool.push(v);
        }
    }
    for v in &pool {
        let _ = v.backward();
        let _ = v.item();
    }
    let _ = tape.check_finite();
    let _ = (divergences.values(), divergences.total());
}

/// Every constructor of the Normal-based and discrete distributions from
/// `[a, b, c, x]` in `F`, and every method of those that accept them.
fn constructors<F: Element>(t: [&Tensor<f64>; 4], labels: &[usize], seed: u64) {
    let tape = Tape::<F>::new();
    let [a, b, c, x] = t.map(|t| tape.var(cast(t)));
    let mut rng = StdRng::seed_from_u64(seed);
    if let Ok(d) = Normal::new(a, b) {
        exercise(&d, x, &mut rng);
    }
    if let Ok(d) = Categorical::from_logits(a) {
        exercise(&d, x, &mut rng);
        let _ = d.log_prob_labels(labels);
    }
    if let Ok(d) = Categorical::from_probs(b) {
        exercise(&d, x, &mut rng);
    }
    if let Ok(d) = Bernoulli::from_logits(a) {
        exercise(&d, x, &mut rng);
    }
    if let Ok(d) = MixtureOfNormals::from_logits(a, b, c) {
        exercise(&d, x, &mut rng);
    }
    if let Ok(d) = MixtureOfNormals::new(a, b, c) {
        exercise(&d, x, &mut rng);
    }
    if let Ok(d) = SpikeAndSlab::new(a, b, c) {
        exercise(&d, x, &mut rng);
    }
    if let Ok(n) = Normal::new(a, b)
        && let Ok(d) = Independent::new(Box::new(n), labels.len() % 3)
    {
        exercise(&d, x, &mut rng);
    }
}

/// The other families from `[a, b, c, x]` in `F`, each method and its
/// backward pass.
fn other_families<F: Element>(t: [&Tensor<f64>; 4], seed: u64) {
    let tape = Tape::<F>::new();
    let [a, b, c, x] = t.map(|t| tape.var(cast(t)));
    let mut rng = StdRng::seed_from_u64(seed);
    let rng = &mut rng;
    if let Ok(d) = Gamma::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Beta::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Dirichlet::new(a) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = StudentT::new(a, b, c) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Poisson::new(a) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Laplace::new(a, b) {
        exercise_backward(&d, x, rng);
        if let Ok(n) = Normal::new(b, a) {
            let _ = kl_divergence(&n, &d).map(|v| v.sum().backward());
        }
    }
    if let Ok(d) = Cauchy::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = HalfCauchy::new(a) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = HalfNormal::new(a) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = NegativeBinomial::from_logits(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Binomial::from_logits(a, b) {
        exercise_backward(&d, x, rng);
        if let Ok(p) = Binomial::from_logits(a, x) {
            let _ = kl_divergence(&d, &p).map(|v| v.sum().backward());
        }
    }
    if let Ok(d) = Gumbel::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Weibull::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = InverseGamma::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Pareto::new(a, b) {
        exercise_backward(&d, x, rng);
        if let Ok(p) = Pareto::new(b, a) {
            let _ = kl_divergence(&d, &p).map(|v| v.sum().backward());
        }
    }
    if let Ok(d) = Kumaraswamy::new(a, b) {
        exercise_backward(&d, x, rng);
        if let Ok(p) = Beta::new(b, a) {
            let _ = kl_divergence(&d, &p).map(|v| v.sum().backward());
        }
    }
    if let Ok(d) = Geometric::from_logits(a) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = VonMises::new(a, b) {
        exercise_backward(&d, x, rng);
        if let Ok(p) = VonMises::new(b, a) {
            let _ = kl_divergence(&d, &p).map(|v| v.sum().backward());
        }
    }
    if let Ok(d) = Exponential::new(a) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = Uniform::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = LogNormal::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = LogitNormal::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = RelaxedBernoulli::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = RelaxedOneHotCategorical::new(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = MultivariateNormal::from_scale_tril(a, b) {
        exercise_backward(&d, x, rng);
    }
    if let Ok(d) = MultivariateNormal::from_covariance(a, b) {
        exercise_backward(&d, x, rng);
    }
    let _ = a.lbeta(b).map(|v| v.sum().backward());
    let _ = a.digamma_diff(b).map(|v| v.sum().backward());
    let _ = a.lgamma_diff(b).map(|v| v.sum().backward());
}

/// Each layer in `F` (`widths` in and out) on the input `x`, and the
/// backward pass of what it gives.
fn layer_forwards<F: Element>(x: &Tensor<f64>, (i, o): (usize, usize), seed: u64, stride: usize) {
    let x: Tensor<F> = cast(x);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = ParamStore::<F>::new();
    let spike_and_slab = VariationalConfig {
        prior: Prior::spike_and_slab_tfp(),
        ..Default::default()
    };
    let layers: Vec<Box<dyn Module<F>>> = vec![
        Box::new(Dense::new(&mut store, "d", i, o, &mut rng).unwrap()),
        Box::new(DenseFlipout::new(&mut store, "f", i, o, &mut rng).unwrap()),
        Box::new(DenseReparameterization::new(&mut store, "r", i, o, &mut rng).unwrap()),
        Box::new(
            DenseLocalReparameterization::with_config(
                &mut store,
                "l",
                i,
                o,
                spike_and_slab,
                &mut rng,
            )
            .unwrap(),
        ),
        Box::new(Activation::Relu),
        Box::new(Flatten),
        Box::new(MaxPool2d {
            size: 2,
            stride: stride.max(1),
        }),
    ];
    let map = Conv2dMap::new(i, o, 2)
        .stride(stride)
        .padding(Padding::Same);
    if let Ok(conv) = Conv2dFlipout::new(&mut store, "c", map, &mut rng) {
        let tape = Tape::new();
        let _ = conv.forward(
            &mut Forward::new(&tape, &store, &mut rng),
            tape.constant(x.clone()),
        );
    }
    for layer in &layers {
        let tape = Tape::new();
        if let Ok(y) = layer.forward(
            &mut Forward::new(&tape, &store, &mut rng),
            tape.constant(x.clone()),
        ) {
            let _ = y.sum().backward();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/no_panic.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_graphs_never_panic(inputs in prop::collection::vec(tensor(), 1..4),
                                 steps in prop::collection::vec(step(), 1..12),
                                 checked in any::<bool>()) {
        random_graph::<f64>(&inputs, &steps, checked);
        random_graph::<f32>(&inputs, &steps, checked);
    }

    #[test]
    fn distribution_constructors_never_panic(a in tensor(), b in tensor(), c in tensor(), x in tensor(),
                                             labels in prop::collection::vec(0usize..6, 0..5), seed in any::<u64>()) {
        constructors::<f64>([&a, &b, &c, &x], &labels, seed);
        constructors::<f32>([&a, &b, &c, &x], &labels, seed);
    }

    #[test]
    fn the_other_families_never_panic(a in param(), b in param(), c in prop_oneof![param(), tensor()],
                                      x in prop_oneof![param(), tensor()], seed in any::<u64>()) {
        other_families::<f64>([&a, &b, &c, &x], seed);
        other_families::<f32>([&a, &b, &c, &x], seed);
    }

    #[test]
    fn layer_forwards_never_panic(x in tensor(), widths in (1usize..4, 1usize..4), seed in any::<u64>(), stride in 0usize..3) {
        layer_forwards::<f64>(&x, widths, seed, stride);
        layer_forwards::<f32>(&x, widths, seed, stride);
    }

    #[test]
    fn checkpoint_bytes_never_panic(noise in prop::collection::vec(any::<u8>(), 0..64), cut in any::<usize>(), flip in any::<usize>()) {
        let mut store = ParamStore::<f32>::new();
        store.add("w", Tensor::vector(&[1.0, 2.0]));
        let _ = bayesgrad::train::checkpoint::load_bytes(&mut store, &mut [], &noise);
        let mut bytes = bayesgrad::train::checkpoint::save_bytes(&store, &[]).unwrap();
        let i = flip % bytes.len();
        bytes[i] ^= 0x5a;
        let _ = bayesgrad::train::checkpoint::load_bytes(&mut store, &mut [], &bytes);
        let _ = bayesgrad::train::checkpoint::load_bytes(&mut store, &mut [], &bytes[..cut % bytes.len()]);
    }
}

/// Found by `distribution_constructors_never_panic`: weights of shape [1]
/// broadcast with locs of shape [0] leave no component; sampling divided by zero.
#[test]
fn a_mixture_that_broadcasts_to_no_components_is_an_error() {
    let tape = Tape::<f64>::new();
    let w = tape.var(Tensor::vector(&[0.3]));
    let locs = tape.var(Tensor::zeros(&[0]));
    let scales = tape.var(Tensor::vector(&[1.0]));
    assert!(matches!(
        MixtureOfNormals::from_logits(w, locs, scales),
        Err(Error::InvalidArgument {
            op: "MixtureOfNormals",
            ..
        })
    ));
}

/// The properties above run in the test profile, which keeps overflow
/// checks on (an arithmetic overflow panics there instead of wrapping).
/// `cargo test --release` builds in the release profile, without them.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "an optimized build has no overflow checks"
)]
fn the_properties_run_with_overflow_checks_on() {
    let overflow =
        std::panic::catch_unwind(|| std::hint::black_box(u8::MAX) + std::hint::black_box(1u8));
    assert!(overflow.is_err(), "build the tests with overflow checks");
}

/// A property that only ever meets errors proves little: over 256 random
/// graphs (a fixed seed), a fair share of the steps must succeed.
#[test]
fn a_fair_share_of_random_graph_steps_succeed() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let graphs = (
        prop::collection::vec(tensor(), 1..4),
        prop::collection::vec(step(), 1..12),
    );
    let (mut ok, mut total) = (0usize, 0usize);
    for _ in 0..256 {
        let (inputs, steps) = graphs.new_tree(&mut runner).unwrap().current();
        let tape = Tape::new();
        let mut pool: Vec<Var<f64>> = inputs.into_iter().map(|t| tape.var(t)).collect();
        let mut divergences = Divergences::new(&tape);
        for s in &steps {
            total += 1;
            if let Ok(v) = apply(&tape, &mut divergences, &pool, s) {
                ok += 1;
                pool.push(v);
            }
        }
    }
    assert!(
        ok * 3 >= total,
        "only {ok} of {total} random steps succeeded: the properties test mostly errors"
    );
    eprintln!("{ok} of {total} random graph steps succeeded");
}
