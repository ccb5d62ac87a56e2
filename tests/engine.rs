//! The core engine: every op under gradcheck (broadcasting both ways, reuse
//! within one graph), proptest properties, optimizer contracts, the Keras
//! `add_weight` bug done right, and a table of bad inputs.

use bayesgrad::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

type OpFn = for<'t> fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Result<Var<'t, f64>>;

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

/// Deterministic values in [lo, hi] spread over a shape.
fn spread(shape: &[usize], lo: f64, hi: f64, phase: f64) -> Tensor<f64> {
    Tensor::from_fn(shape, |i| {
        lo + (hi - lo) * (0.5 + 0.5 * ((i as f64) * 2.3 + phase).sin())
    })
}

fn check(name: &str, f: OpFn, inputs: &[Tensor<f64>]) {
    let report = gradcheck(f, inputs, &GradCheck::default())
        .unwrap_or_else(|e| panic!("gradcheck of {name} failed: {e}"));
    assert_eq!(report.inputs.len(), inputs.len(), "{name}");
}

#[test]
fn gradcheck_every_unary_op() {
    let x = spread(&[2, 3], -2.0, 2.0, 0.1);
    let pos = spread(&[2, 3], 0.2, 3.0, 0.4);
    let cases: Vec<(&str, OpFn, Tensor<f64>)> = vec![
        ("neg", |_, v| Ok(-v[0]), x.clone()),
        ("exp", |_, v| Ok(v[0].exp()), x.clone()),
        ("ln", |_, v| Ok(v[0].ln()), pos.clone()),
        ("log1p", |_, v| Ok(v[0].log1p()), pos.clone()),
        ("softplus", |_, v| Ok(v[0].softplus()), x.clone()),
        ("sigmoid", |_, v| Ok(v[0].sigmoid()), x.clone()),
        ("tanh", |_, v| Ok(v[0].tanh()), x.clone()),
        ("relu", |_, v| Ok(v[0].relu()), x.clone()),
        ("abs", |_, v| Ok(v[0].abs()), x.clone()),
        ("sqrt", |_, v| Ok(v[0].sqrt()), pos.clone()),
        ("square", |_, v| Ok(v[0].square()), x.clone()),
        ("powf", |_, v| Ok(v[0].powf(2.5)), pos.clone()),
        ("clamp", |_, v| Ok(v[0].clamp(-1.0, 1.0)), x.clone()),
        (
            "scalar ops",
            |_, v| Ok((3.0 - v[0]) * 2.0 / 4.0 + 1.0),
            x.clone(),
        ),
        ("scalar_div", |_, v| Ok(2.0 / v[0]), pos.clone()),
    ];
    for (name, f, input) in cases {
        check(name, f, &[input]);
    }
}

#[test]
fn gradcheck_binary_ops_with_broadcasting_both_ways() {
    let a = spread(&[2, 3], 0.5, 2.0, 0.0);
    let row = spread(&[3], 0.5, 2.0, 1.0);
    let col = spread(&[2, 1], 0.5, 2.0, 2.0);
    let cases: Vec<(&str, OpFn)> = vec![
        ("add", |_, v| v[0].try_add(v[1])),
        ("sub", |_, v| v[0].try_sub(v[1])),
        ("mul", |_, v| v[0].try_mul(v[1])),
        ("div", |_, v| v[0].try_div(v[1])),
    ];
    for (name, f) in cases {
        check(name, f, &[a.clone(), a.clone()]);
        check(name, f, &[a.clone(), row.clone()]);
        check(name, f, &[row.clone(), a.clone()]);
        check(name, f, &[col.clone(), row.clone()]);
        check(name, f, &[Tensor::scalar(1.5), a.clone()]);
    }
}

#[test]
fn gradcheck_reductions_shapes_and_softmax() {
    let x = spread(&[3, 4], -2.0, 2.0, 0.3);
    let cases: Vec<(&str, OpFn)> = vec![
        ("sum", |_, v| Ok(v[0].sum())),
        ("mean", |_, v| Ok(v[0].mean())),
        ("sum_axis 0", |_, v| v[0].sum_axis(0, false)),
        ("sum_axis 1 keepdim", |_, v| v[0].sum_axis(1, true)),
        ("mean_axis", |_, v| v[0].mean_axis(1, false)),
        ("max_axis", |_, v| v[0].max_axis(1, false)),
        ("cumsum", |_, v| v[0].cumsum(1)),
        ("cumsum axis 0", |_, v| v[0].cumsum(0)),
        ("cumsum_from_end", |_, v| v[0].cumsum_from_end(1)),
        ("cumsum_from_end axis 0", |_, v| v[0].cumsum_from_end(0)),
        ("transpose", |_, v| v[0].transpose()),
        ("reshape", |_, v| v[0].reshape(&[2, 6])),
        ("broadcast_to", |_, v| {
            v[0].reshape(&[3, 1, 4])?.broadcast_to(&[3, 2, 4])
        }),
        ("index", |_, v| v[0].index(1)),
        ("slice", |_, v| v[0].slice(1, 1, 3)),
        ("select repeated", |_, v| v[0].select(1, &[3, 0, 3])),
        ("gather", |_, v| v[0].gather(&[0, 3, 2])),
        ("concat", |_, v| Var::concat(&[v[0], v[0].exp()], 0)),
        ("stack", |_, v| Var::stack(&[v[0], v[0].square()], 2)),
        ("log_softmax", |_, v| v[0].log_softmax(1)),
        ("log_softmax axis 0", |_, v| v[0].log_softmax(0)),
        ("softmax", |_, v| v[0].softmax(1)),
        ("logsumexp", |_, v| v[0].logsumexp(1, false)),
        ("logsumexp keepdim", |_, v| v[0].logsumexp(0, true)),
    ];
    for (name, f) in cases {
        check(name, f, std::slice::from_ref(&x));
    }
    check(
        "matmul",
        |_, v| v[0].matmul(v[1]),
        &[x.clone(), spread(&[4, 2], -1.0, 1.0, 0.7)],
    );
}

#[test]
fn gradcheck_convolutions_and_pooling() {
    let x = spread(&[2, 5, 4, 2], -1.0, 1.0, 0.3);
    let k = spread(&[3, 3, 2, 3], -0.5, 0.5, 1.1);
    check(
        "conv2d SAME",
        |_, v| v[0].conv2d(v[1], 1, Padding::Same),
        &[x.clone(), k.clone()],
    );
    check(
        "conv2d VALID stride 2",
        |_, v| v[0].conv2d(v[1], 2, Padding::Valid),
        &[x.clone(), k.clone()],
    );
    // distinct values, so that no window has a tie at its maximum
    let distinct = Tensor::from_fn(&[2, 4, 4, 3], |i| ((i * 37) % 96) as f64 * 0.1);
    check("max_pool2d", |_, v| v[0].max_pool2d(2, 2), &[distinct]);
    fn flipout<'t>(v: &[Var<'t, f64>], stride: usize, padding: Padding) -> Result<Var<'t, f64>> {
        let s_in = t(&[1.0, -1.0, -1.0, -1.0], &[2, 2]);
        let s_out = t(&[-1.0, 1.0, 1.0, 1.0, -1.0, 1.0], &[2, 3]);
        v[0].conv2d_flipout(v[1], v[2], &s_in, &s_out, stride, padding)
    }
    let cases: Vec<(&str, OpFn)> = vec![
        ("conv2d_flipout SAME", |_, v| flipout(v, 1, Padding::Same)),
        ("conv2d_flipout SAME stride 2", |_, v| {
            flipout(v, 2, Padding::Same)
        }),
        ("conv2d_flipout VALID stride 2", |_, v| {
            flipout(v, 2, Padding::Valid)
        }),
    ];
    let delta = spread(&[3, 3, 2, 3], -0.2, 0.2, 2.0);
    for (name, f) in cases {
        check(name, f, &[x.clone(), k.clone(), delta.clone()]);
    }
}

/// `conv2d_flipout` against the graph it replaces,
/// `conv(x, loc) + conv(x * s_in, delta) * s_out`: values and every gradient.
fn flipout_matches_two_convolutions(
    x: &Tensor<f64>,
    loc: &Tensor<f64>,
    delta: &Tensor<f64>,
    signs: (&Tensor<f64>, &Tensor<f64>),
    stride: usize,
    padding: Padding,
) -> std::result::Result<(), String> {
    let (n, c, o) = (x.shape()[0], x.shape()[3], loc.shape()[3]);
    let (s_in, s_out) = signs;
    let tape = Tape::<f64>::new();
    let (xv, lv, dv) = (
        tape.var(x.clone()),
        tape.var(loc.clone()),
        tape.var(delta.clone()),
    );
    let fused = xv
        .conv2d_flipout(lv, dv, s_in, s_out, stride, padding)
        .unwrap();
    let s_in4 = s_in.reshape(&[n, 1, 1, c]).unwrap();
    let s_out4 = s_out.reshape(&[n, 1, 1, o]).unwrap();
    let unfused = xv.conv2d(lv, stride, padding).unwrap()
        + (xv * s_in4).conv2d(dv, stride, padding).unwrap() * s_out4;
    let close = |a: &Tensor<f64>, b: &Tensor<f64>, what: &str| {
        let scale = b.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
        match a
            .data()
            .iter()
            .zip(b.data())
            .find(|(p, q)| (*p - *q).abs() > 1e-12 * scale)
        {
            Some((p, q)) => Err(format!("{what}: {p} vs {q}")),
            None => Ok(()),
        }
    };
    close(&fused.value(), &unfused.value(), "value")?;
    // a weighted sum, so that every output element has its own gradient
    let weights = tape.constant(spread(&fused.shape(), -1.0, 1.0, 0.9));
    let gf = (fused * weights).sum().backward().unwrap();
    let gu = (unfused * weights).sum().backward().unwrap();
    for (v, what) in [(xv, "dx"), (lv, "dloc"), (dv, "ddelta")] {
        close(gf.get(v).unwrap(), gu.get(v).unwrap(), what)?;
    }
    Ok(())
}

#[test]
fn conv2d_flipout_equals_the_two_convolutions_it_fuses() {
    let x = spread(&[3, 7, 6, 2], -2.0, 2.0, 0.5);
    let loc = spread(&[3, 2, 2, 4], -0.5, 0.5, 0.1);
    let delta = spread(&[3, 2, 2, 4], -0.1, 0.1, 1.7);
    let s_in = Tensor::from_fn(&[3, 2], |i| if i % 3 == 0 { -1.0 } else { 1.0 });
    let s_out = Tensor::from_fn(&[3, 4], |i| if i % 5 < 2 { -1.0 } else { 1.0 });
    for stride in 1..=3 {
        for padding in [Padding::Same, Padding::Valid] {
            flipout_matches_two_convolutions(&x, &loc, &delta, (&s_in, &s_out), stride, padding)
                .unwrap_or_else(|e| panic!("stride {stride} {padding:?}: {e}"));
        }
    }
    // a batch large enough for the two halves to run on two threads
    let x = spread(&[6, 12, 11, 3], -2.0, 2.0, 0.2);
    let loc = spread(&[5, 5, 3, 8], -0.5, 0.5, 0.4);
    let delta = spread(&[5, 5, 3, 8], -0.1, 0.1, 1.3);
    let s_in = Tensor::from_fn(&[6, 3], |i| if i % 4 == 1 { -1.0 } else { 1.0 });
    let s_out = Tensor::from_fn(&[6, 8], |i| if i % 3 == 2 { -1.0 } else { 1.0 });
    flipout_matches_two_convolutions(&x, &loc, &delta, (&s_in, &s_out), 1, Padding::Same).unwrap();
    let x = spread(&[3, 7, 6, 2], -2.0, 2.0, 0.5);
    let loc = spread(&[3, 2, 2, 4], -0.5, 0.5, 0.1);
    let s_in = Tensor::from_fn(&[3, 2], |i| if i % 3 == 0 { -1.0 } else { 1.0 });
    let s_out = Tensor::from_fn(&[3, 4], |i| if i % 5 < 2 { -1.0 } else { 1.0 });
    // the factors may be given NHWC-shaped; anything else is refused
    let tape = Tape::<f64>::new();
    let (xv, lv) = (tape.constant(x.clone()), tape.var(loc.clone()));
    let s_in4 = s_in.reshape(&[3, 1, 1, 2]).unwrap();
    assert!(
        xv.conv2d_flipout(lv, lv, &s_in4, &s_out, 1, Padding::Same)
            .is_ok()
    );
    let err = xv
        .conv2d_flipout(lv, lv, &s_out, &s_in, 1, Padding::Same)
        .unwrap_err();
    assert!(
        err.to_string().contains("s_in must have shape [3, 2]"),
        "{err}"
    );
    let other = tape.var(Tensor::zeros(&[3, 3, 2, 4]));
    assert!(matches!(
        xv.conv2d_flipout(lv, other, &s_in, &s_out, 1, Padding::Same),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn gradcheck_ops_used_several_times_in_one_graph() {
    // x appears in five places; the gradients of every use must add up.
    check(
        "reuse",
        |_, v| {
            let x = v[0];
            let y = x * x + x.exp() * x - x.sigmoid();
            y.matmul(x.transpose()?)
        },
        &[spread(&[2, 3], -1.0, 1.0, 0.2)],
    );
    // by hand: d/dx (x*x + 3x) at 2 = 2*2 + 3 = 7
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(2.0));
    let g = (x * x + x * 3.0).backward().unwrap();
    assert_eq!(g.get(x).unwrap().data(), &[7.0]);
}

#[test]
fn f32_matches_f64() {
    fn graph<F: Element>() -> (F, Vec<F>) {
        let tape = Tape::<F>::new();
        let x = tape.var(Tensor::from_fn(&[2, 3], |i| F::lit(0.3 * i as f64 - 0.7)));
        let w = tape.constant(Tensor::from_fn(&[3, 2], |i| F::lit(0.1 * i as f64 - 0.2)));
        let y = x
            .matmul(w)
            .unwrap()
            .softplus()
            .log_softmax(1)
            .unwrap()
            .gather(&[1, 0])
            .unwrap();
        let loss = -(y.sum() + x.tanh().mean());
        let g = loss.backward().unwrap();
        (loss.item().unwrap(), g.get(x).unwrap().data().to_vec())
    }
    let (v32, g32) = graph::<f32>();
    let (v64, g64) = graph::<f64>();
    assert!((v32 as f64 - v64).abs() < 1e-5, "{v32} vs {v64}");
    for (a, b) in g32.iter().zip(&g64) {
        assert!((*a as f64 - b).abs() < 1e-5);
    }
}

#[test]
fn softplus_f32_does_not_underflow() {
    let tape = Tape::<f32>::new();
    let x = tape.var(Tensor::scalar(-30.0f32));
    let y = x.softplus();
    let v = y.item().unwrap();
    assert!((v - 9.357_623e-14).abs() < 1e-18, "softplus(-30) = {v}");
    // its gradient sigmoid(-30) is also ~9.4e-14, not 0
    let g = y.backward().unwrap();
    assert!(g.get(x).unwrap().data()[0] > 9e-14);
}

/// Keras users write `Normal(self.mu[0], ...)` in `build()` and the gradient
/// is silently cut. Here the index is an op on the tape: the gradient arrives.
#[test]
fn keras_add_weight_bug_done_right() {
    let mut store = ParamStore::<f64>::new();
    let mu = store.add("likelihood/mu", Tensor::vector(&[0.5]));
    let unused = store.add("likelihood/forgotten", Tensor::vector(&[1.0]));
    let data = Tensor::vector(&[1.0, 2.0, 3.0]);

    let tape = Tape::new();
    let m = tape.param(&store, mu).index(0).unwrap();
    let _read_but_unused = tape.param(&store, unused);
    let loss = (m - data.clone()).square().mean();
    let grads = loss.backward().unwrap();
    // d/dmu mean((mu - x)^2) = 2 (mu - mean x) = 2 (0.5 - 2) = -3
    assert!((grads.param(mu).unwrap().data()[0] + 3.0).abs() < 1e-12);
    assert!(grads.param(unused).is_none());

    let mut opt = Adam::new(0.1);
    let before = store.raw(mu).clone();
    let err = opt.step(&mut store, &grads).unwrap_err();
    assert_eq!(
        err,
        Error::MissingGradient {
            name: "likelihood/forgotten".into()
        }
    );
    assert!(err.to_string().contains("likelihood/forgotten"));
    assert_eq!(
        store.raw(mu),
        &before,
        "a refused step must not modify anything"
    );

    store.freeze(unused).unwrap();
    opt.step(&mut store, &grads).unwrap();
    assert!(store.raw(mu).data()[0] > 0.5);
}

#[test]
fn non_finite_gradient_is_refused_without_modifying_anything() {
    let mut store = ParamStore::<f64>::new();
    let a = store.add("a", Tensor::scalar(1.0));
    let b = store.add("b", Tensor::scalar(0.0));
    let tape = Tape::new();
    // d/db sqrt(b) at 0 is +inf
    let loss = tape.param(&store, a) + tape.param(&store, b).sqrt();
    let grads = loss.backward().unwrap();
    let mut opt = Sgd::new(0.1);
    let err = opt.step(&mut store, &grads).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteGradient { name, .. } if name == "b"),
        "{err}"
    );
    assert_eq!(store.raw(a).data(), &[1.0]);
}

/// A schedule that computes a bad learning rate (here `0 * (0/0)^t`, the
/// exponential decay from and to 0) is refused at the step, naming the
/// setting, with nothing modified, instead of writing NaN into every
/// parameter; so are Adam betas outside [0, 1), negative eps and momentum.
#[test]
fn bad_optimizer_settings_are_refused_without_modifying_anything() {
    let mut store = ParamStore::<f64>::new();
    let w = store.add("w", Tensor::vector(&[1.0, -2.0]));
    let grads = {
        let tape = Tape::new();
        tape.param(&store, w).square().sum().backward().unwrap()
    };
    let (lr, lr_final, progress) = (0.0f64, 0.0f64, 0.5);
    let decayed = lr * (lr_final / lr).powf(progress);
    type Tweak = fn(&mut Adam<f64>);
    let bad: [(Tweak, &str); 7] = [
        (
            |o| o.lr = -1e-3,
            "learning rate (lr) must be finite and >= 0, got -0.001",
        ),
        (
            |o| o.lr = f64::INFINITY,
            "learning rate (lr) must be finite and >= 0, got inf",
        ),
        (|o| o.beta1 = 1.0, "beta1 must be in [0, 1), got 1"),
        (|o| o.beta2 = -0.1, "beta2 must be in [0, 1), got -0.1"),
        (|o| o.beta2 = f64::NAN, "beta2 must be in [0, 1), got NaN"),
        (|o| o.eps = -1e-8, "eps must be finite and >= 0, got -1e-8"),
        (|o| o.eps = f64::NAN, "eps must be finite and >= 0, got NaN"),
    ];
    let mut opt = Adam::new(decayed);
    let err = opt.step(&mut store, &grads).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Adam: learning rate (lr) must be finite and >= 0, got NaN"
    );
    for (tweak, message) in bad {
        let mut opt = Adam::new(1e-3);
        tweak(&mut opt);
        let err = opt.step(&mut store, &grads).unwrap_err();
        assert_eq!(err.to_string(), format!("Adam: {message}"));
        assert_eq!(opt.state().step, 0, "{message}: the step was not counted");
    }
    for (sgd, message) in [
        (
            Sgd::new(-0.1),
            "learning rate must be finite and >= 0, got -0.1",
        ),
        (
            Sgd::with_momentum(0.1, f64::NAN),
            "momentum must be finite and >= 0, got NaN",
        ),
    ] {
        let err = sgd.clone().step(&mut store, &grads).unwrap_err();
        assert_eq!(err.to_string(), format!("Sgd: {message}"));
    }
    assert_eq!(store.raw(w).data(), &[1.0, -2.0], "nothing was modified");
    // the edges of the domains are fine: lr 0 leaves w where it is
    let mut opt = Adam::new(0.0);
    opt.beta1 = 0.0;
    opt.eps = 0.0;
    opt.step(&mut store, &grads).unwrap();
    assert_eq!(store.raw(w).data(), &[1.0, -2.0]);
    // (an update, even by 0, is a new version: the gradient is taken again)
    let tape = Tape::new();
    let grads = tape.param(&store, w).square().sum().backward().unwrap();
    Sgd::with_momentum(0.1, 0.0)
        .step(&mut store, &grads)
        .unwrap();
    assert_eq!(store.raw(w).data(), &[0.8, -1.6]);
}

#[test]
fn positive_parameter_gradient_reaches_rho() {
    // read as s = softplus(rho) + 1e-5; d s / d rho = sigmoid(rho)
    let mut store = ParamStore::<f64>::new();
    let s = store.add_positive("scale", Tensor::scalar(2.0));
    let tape = Tape::new();
    let v = tape.param(&store, s);
    assert!((v.item().unwrap() - 2.0).abs() < 1e-12);
    let g = v.backward().unwrap();
    let rho = store.raw(s).data()[0];
    let expected = 1.0 / (1.0 + (-rho).exp());
    assert!((g.param(s).unwrap().data()[0] - expected).abs() < 1e-12);
    assert!(store.try_add_positive("bad", Tensor::scalar(-1.0)).is_err());
}

#[test]
fn unit_interval_parameter_reads_through_sigmoid_and_gradient_reaches_the_logit() {
    // read as p = sigmoid(logit); d p / d logit = p (1 - p) = 0.2 * 0.8 = 0.16
    let mut store = ParamStore::<f64>::new();
    let p = store.add_unit_interval("pi", Tensor::vector(&[0.2, 1e-9, 0.999]));
    // stored as logits: ln(0.2 / 0.8) = -ln 4
    assert!((store.raw(p).data()[0] + 4f64.ln()).abs() < 1e-15);
    let tape = Tape::new();
    let v = tape.param(&store, p);
    for (read, want) in v.value().data().iter().zip([0.2, 1e-9, 0.999]) {
        assert!(
            (read - want).abs() <= 1e-15 * want.max(1e-3),
            "{read} vs {want}"
        );
    }
    let g = v.index(0).unwrap().backward().unwrap();
    assert!((g.param(p).unwrap().data()[0] - 0.16).abs() < 1e-15);
    gradcheck_params(
        |tape, store| {
            Ok((tape.param(store, p) * tape.constant(Tensor::vector(&[1.0, -2.0, 3.0]))).sum())
        },
        &mut store,
        &[p],
        &GradCheck::default(),
    )
    .unwrap();
    for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let err = store
            .try_add_unit_interval(format!("bad{bad}"), Tensor::vector(&[0.5, bad]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("bad{bad}"))
                && err.contains("element 1")
                && err.contains("in (0, 1)"),
            "{err}"
        );
    }
}

/// A trainable probability learned by maximum likelihood: the Bernoulli
/// MLE is the data mean, 0.8, and the parameter gets there from 0.5,
/// read in (0, 1) at every step.
#[test]
fn unit_interval_parameter_learns_a_probability() {
    let mut store = ParamStore::<f64>::new();
    let p = store.add_unit_interval("p", Tensor::scalar(0.5));
    let data = Tensor::vector(&[1.0, 1.0, 0.0, 1.0, 1.0]);
    let mut opt = Sgd::new(1.0);
    for _ in 0..200 {
        let tape = Tape::new();
        let prob = tape.param(&store, p);
        let logit = prob.ln() - (-prob).log1p();
        let nll = -Bernoulli::from_logits(logit)
            .unwrap()
            .log_prob(tape.constant(data.clone()))
            .unwrap()
            .sum();
        opt.step(&mut store, &nll.backward().unwrap()).unwrap();
        let read = Tape::new().param(&store, p).item().unwrap();
        assert!(read > 0.0 && read < 1.0, "{read}");
    }
    let learned = Tape::new().param(&store, p).item().unwrap();
    assert!((learned - 0.8).abs() < 1e-9, "{learned}");
}

#[test]
fn parameter_read_twice_accumulates() {
    let mut store = ParamStore::<f64>::new();
    let w = store.add("w", Tensor::scalar(3.0));
    let tape = Tape::new();
    let y = tape.param(&store, w) * tape.param(&store, w); // w^2 -> 2w = 6
    assert_eq!(y.backward().unwrap().param(w).unwrap().data(), &[6.0]);
}

#[test]
fn bad_inputs_give_specific_errors() {
    let tape = Tape::<f64>::with_finite_check();
    let a = tape.var(Tensor::zeros(&[2, 3]));
    let b = tape.var(Tensor::zeros(&[4, 5]));
    type Case<'t> = (&'static str, Result<Var<'t, f64>>, fn(&Error) -> bool);
    let table: Vec<Case> = vec![
        ("add mismatch", a.try_add(b), |e| {
            matches!(e, Error::ShapeMismatch { op: "add", .. })
        }),
        ("matmul mismatch", a.matmul(b), |e| {
            matches!(e, Error::ShapeMismatch { op: "matmul", .. })
        }),
        ("reshape size", a.reshape(&[7]), |e| {
            matches!(e, Error::DataLength { op: "reshape", .. })
        }),
        ("index range", a.index(2), |e| {
            matches!(
                e,
                Error::IndexOutOfRange {
                    index: 2,
                    size: 2,
                    ..
                }
            )
        }),
        ("gather range", a.gather(&[0, 3]), |e| {
            matches!(e, Error::IndexOutOfRange { op: "gather", .. })
        }),
        ("axis range", a.sum_axis(2, false), |e| {
            matches!(e, Error::AxisOutOfRange { axis: 2, .. })
        }),
        ("cumsum axis range", a.cumsum_from_end(2), |e| {
            matches!(
                e,
                Error::AxisOutOfRange {
                    op: "cumsum_from_end",
                    axis: 2,
                    ..
                }
            )
        }),
        ("slice range", a.slice(1, 2, 5), |e| {
            matches!(e, Error::InvalidArgument { op: "slice", .. })
        }),
        ("concat shapes", Var::concat(&[a, b], 0), |e| {
            matches!(e, Error::ShapeMismatch { op: "concat", .. })
        }),
        ("broadcast_to", a.broadcast_to(&[3, 3]), |e| {
            matches!(
                e,
                Error::ShapeMismatch {
                    op: "broadcast_to",
                    ..
                }
            )
        }),
        (
            "log_softmax empty",
            tape.var(Tensor::zeros(&[2, 0])).log_softmax(1),
            |e| {
                matches!(
                    e,
                    Error::InvalidArgument {
                        op: "log_softmax",
                        ..
                    }
                )
            },
        ),
    ];
    for (name, result, expected) in table {
        let err = result.expect_err(name);
        assert!(expected(&err), "{name}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
    }
    let msg = a.try_add(b).unwrap_err().to_string();
    assert_eq!(msg, "shape mismatch in add: lhs [2, 3], rhs [4, 5]");
    assert!(matches!(a.backward(), Err(Error::NonScalarBackward { shape }) if shape == vec![2, 3]));
    assert!(Tensor::<f64>::from_vec(vec![1.0; 5], &[2, 3]).is_err());
    let tape2 = Tape::<f64>::new();
    let c = tape2.var(Tensor::zeros(&[2, 3]));
    assert!(matches!(a.try_add(c), Err(Error::ForeignTape { .. })));
}

#[test]
fn numerics_check_names_the_first_bad_op() {
    let tape = Tape::<f64>::with_finite_check();
    let x = tape.var(Tensor::vector(&[1.0, -1.0]));
    let y = x.exp(); // fine
    let z = (y - 2.0).ln(); // ln of a negative number: NaN
    let loss = (z * 2.0).sum(); // propagates the NaN, but is not the first
    match loss.backward() {
        Err(Error::NonFinite { op, .. }) => assert_eq!(op, "ln"),
        other => panic!("expected NonFinite from ln, got {:?}", other.err()),
    }
    // Without the check, the NaN flows silently (the default, zero-cost mode).
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::vector(&[-1.0]));
    assert!(x.ln().sum().backward().is_ok());
}

#[test]
fn detach_cuts_the_gradient() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::scalar(3.0));
    let y = x * x.detach(); // d/dx = x.detach() = 3, not 2x = 6
    assert_eq!(y.backward().unwrap().get(x).unwrap().data(), &[3.0]);
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 1..4)
}

fn tensor_strategy(lo: f64, hi: f64) -> impl Strategy<Value = Tensor<f64>> {
    shape_strategy().prop_flat_map(move |shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(lo..hi, n).prop_map(move |d| Tensor::from_vec(d, &shape).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/engine.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn conv2d_flipout_matches_the_unfused_graph(
        (n, h, w, c, o, k) in (1usize..4, 1usize..7, 1usize..7, 1usize..4, 1usize..4, 1usize..4),
        stride in 1usize..4,
        same in any::<bool>(),
        bits in any::<u64>(),
        phase in 0.0f64..6.0,
    ) {
        let padding = if same { Padding::Same } else { Padding::Valid };
        prop_assume!(same || (h >= k && w >= k));
        let sign = |i: usize| if (bits >> (i % 64)) & 1 == 1 { 1.0 } else { -1.0 };
        let s_in = Tensor::from_fn(&[n, c], sign);
        let s_out = Tensor::from_fn(&[n, o], |i| sign(i + 17));
        let r = flipout_matches_two_convolutions(
            &spread(&[n, h, w, c], -2.0, 2.0, phase),
            &spread(&[k, k, c, o], -0.5, 0.5, phase + 1.0),
            &spread(&[k, k, c, o], -0.2, 0.2, phase + 2.0),
            (&s_in, &s_out),
            stride,
            padding,
        );
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    #[test]
    fn unit_interval_inverse_round_trips(p in 1e-12f64..(1.0 - 1e-12)) {
        let raw = Constraint::UnitInterval.inverse(p).unwrap();
        let tape = Tape::<f64>::new();
        let read = Constraint::UnitInterval.apply(tape.scalar(raw)).item().unwrap();
        // a small p keeps its relative digits; near 1, the read value can only
        // be as close as the spacing of doubles below 1 (1.1e-16)
        let tol = if p < 0.5 { 1e-14 * p } else { 1e-14 * (1.0 - p) + 2.3e-16 };
        prop_assert!((read - p).abs() <= tol, "{} -> {} -> {}", p, raw, read);
    }

    #[test]
    fn elementwise_ops_pass_gradcheck(x in tensor_strategy(-3.0, 3.0), which in 0usize..8) {
        let ops: [OpFn; 8] = [
            |_, v| Ok(v[0].exp()),
            |_, v| Ok(v[0].softplus()),
            |_, v| Ok(v[0].sigmoid()),
            |_, v| Ok(v[0].tanh()),
            |_, v| Ok(v[0].square() * v[0]),
            |_, v| Ok(v[0].abs().log1p()),
            |_, v| Ok((v[0] * 0.5).exp().sqrt()),
            |_, v| Ok(v[0].try_mul(v[0].sigmoid())? - v[0]),
        ];
        prop_assert!(gradcheck(ops[which], &[x], &GradCheck::default()).is_ok());
    }

    #[test]
    fn binary_broadcast_gradcheck(a in tensor_strategy(0.5, 2.0), b in tensor_strategy(0.5, 2.0)) {
        let ok = bayesgrad::tensor::broadcast_shape(a.shape(), b.shape()).is_some();
        let r = gradcheck(|_, v| v[0].try_div(v[1]), &[a, b], &GradCheck::default());
        if ok { prop_assert!(r.is_ok(), "{r:?}"); }
        else { prop_assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}"); }
    }

    #[test]
    fn reductions_agree_and_pass_gradcheck(x in tensor_strategy(-2.0, 2.0), axis in 0usize..3, keep in any::<bool>()) {
        let axis = axis % x.rank();
        let tape = Tape::<f64>::new();
        let v = tape.var(x.clone());
        let total = v.sum().item().unwrap();
        let by_axis = v.sum_axis(axis, keep).unwrap().sum().item().unwrap();
        prop_assert!((total - by_axis).abs() < 1e-9);
        let lse = v.logsumexp(axis, keep).unwrap().value();
        let max = x.max_axis(axis, keep).unwrap();
        for (l, m) in lse.data().iter().zip(max.data()) { prop_assert!(l >= m); }
        prop_assert!(gradcheck(|_, v| v[0].logsumexp(axis, keep), std::slice::from_ref(&x), &GradCheck::default()).is_ok());
        prop_assert!(gradcheck(|_, v| v[0].mean_axis(axis, keep), &[x], &GradCheck::default()).is_ok());
    }

    /// `f32` products of integer-valued operands (every partial sum exact)
    /// over shapes that cross each path's threshold: the small kernel,
    /// matrixmultiply, the unpacked AVX-512 (or AVX2) kernel with the right operand
    /// by rows or copied from columns, the packed one for a transposed left
    /// operand more than 128 rows by 128 columns, split over the threads by
    /// rows or by columns, on one to three threads; each element is the
    /// exact sum.
    #[test]
    fn products_on_every_path_are_exact(
        (m, k, n) in (1usize..160, 1usize..80, 1usize..400),
        ta in any::<bool>(),
        tb in any::<bool>(),
        threads in 1usize..4,
        seed in 0usize..1000,
    ) {
        let value = |i: usize| ((i * 5 + i / 3 + seed) % 7) as f32 - 3.0;
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = Tensor::<f32>::from_fn(&a_shape, value);
        let b = Tensor::<f32>::from_fn(&b_shape, |i| value(i + 3));
        let at = |i: usize, p: usize| a.data()[if ta { p * m + i } else { i * k + p }];
        let bt = |p: usize, j: usize| b.data()[if tb { j * k + p } else { p * n + j }];
        let original = bayesgrad::threads();
        bayesgrad::set_threads(threads).unwrap();
        let c = a.matmul_t(&b, ta, tb);
        bayesgrad::set_threads(original).unwrap();
        let c = c.unwrap();
        prop_assert_eq!(c.shape(), &[m, n]);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                prop_assert_eq!(c.data()[i * n + j], want, "{}x{}x{} {} {} at {},{}", m, k, n, ta, tb, i, j);
            }
        }
    }
}

#[test]
fn custom_op_with_gradcheck() {
    /// y = x * sin(x), with a hand-written backward.
    struct XSinX;
    impl Op<f64> for XSinX {
        fn name(&self) -> &str {
            "x_sin_x"
        }
        fn forward(&self, x: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
            Ok(x[0].map(|v| v * v.sin()))
        }
        fn backward(
            &self,
            x: &[&Tensor<f64>],
            _: &Tensor<f64>,
            g: &Tensor<f64>,
        ) -> Result<Vec<Option<Tensor<f64>>>> {
            Ok(vec![Some(g.zip_map(x[0], "x_sin_x", |g, v| {
                g * (v.sin() + v * v.cos())
            })?)])
        }
    }
    check(
        "custom",
        |tape, v| tape.apply(XSinX, &[v[0]]),
        &[t(&[0.3, -1.2, 2.5], &[3])],
    );
}
