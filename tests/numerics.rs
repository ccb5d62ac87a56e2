//! Floating-point formulations without cancellation. Each expected value
//! was computed independently in 50-digit arithmetic (mpmath) or is exact
//! by construction, as stated next to it.

use bayesgrad::prelude::*;

/// `|got - want| <= ulps · ulp(want)` in f32.
fn close_f32(got: f32, want: f64, ulps: f32) -> bool {
    let w = want as f32;
    let ulp = f32::from_bits(w.abs().to_bits() + 1) - w.abs();
    (got - w).abs() <= ulps * ulp
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// The log-sum-exp backward takes its weights from the shifted values:
/// with `lse` rounded, 0.5·N(0, 0.1) + 0.5·N(0, 0.1) at x = -1000 gave
/// d/dx = 200000 in f32. Exact: -x / 0.1² = 100000 (and 30000 at -300).
#[test]
fn mixture_gradient_far_in_the_tail_in_f32() {
    for (x, want) in [(-1000.0f32, 100_000.0), (-300.0, 30_000.0)] {
        let tape = Tape::<f32>::new();
        let mix = MixtureOfNormals::new(
            tape.constant(Tensor::vector(&[0.5, 0.5])),
            tape.constant(Tensor::vector(&[0.0, 0.0])),
            tape.constant(Tensor::vector(&[0.1, 0.1])),
        )
        .unwrap();
        let xv = tape.var(Tensor::scalar(x));
        let g = mix.log_prob(xv).unwrap().backward().unwrap();
        let got = g.get(xv).unwrap().item().unwrap();
        assert!(close_f32(got, want, 4.0), "x = {x}: {got} vs {want}");
    }
    let tape = Tape::<f32>::new();
    let slab = SpikeAndSlab::new(tape.scalar(0.5), tape.scalar(0.1), tape.scalar(0.1)).unwrap();
    let xv = tape.var(Tensor::scalar(-1000.0f32));
    let g = slab.log_prob(xv).unwrap().backward().unwrap();
    assert!(close_f32(
        g.get(xv).unwrap().item().unwrap(),
        100_000.0,
        4.0
    ));
}

/// Σ w (s² + (μ − mean)²): 0.5·N(1000, 0.01) + 0.5·N(1000, 0.01) has
/// variance 1e-4 exactly (E[x²] − E[x]² gave 0 in f32).
#[test]
fn mixture_variance_does_not_cancel_in_f32() {
    let tape = Tape::<f32>::new();
    let mix = MixtureOfNormals::new(
        tape.constant(Tensor::vector(&[0.5, 0.5])),
        tape.constant(Tensor::vector(&[1000.0, 1000.0])),
        tape.constant(Tensor::vector(&[0.01, 0.01])),
    )
    .unwrap();
    let v = mix.variance().unwrap().item().unwrap();
    assert!(close_f32(v, 1e-4, 4.0), "{v}");
    // unequal means: 0.3·N(-2, 0.5) + 0.7·N(3, 1.5): 0.3·0.25 + 0.7·2.25 + 0.3·0.7·25 = 6.9
    let mix = MixtureOfNormals::new(
        tape.constant(Tensor::vector(&[0.3, 0.7])),
        tape.constant(Tensor::vector(&[-2.0, 3.0])),
        tape.constant(Tensor::vector(&[0.5, 1.5])),
    )
    .unwrap();
    let v = mix.variance().unwrap().item().unwrap();
    assert!(close_f32(v, 6.9, 8.0), "{v}");
}

/// `(x − m) − ln Σ`: f32 logits [1e4, 1e4, −1e4] give log-probability
/// −0.693147180559945... (mpmath), and KL(Cat[−80, −80] ‖ Cat[0, 0]) = 0.
#[test]
fn log_softmax_keeps_its_digits_in_f32() {
    let tape = Tape::<f32>::new();
    let l = tape.var(Tensor::vector(&[1e4f32, 1e4, -1e4]));
    let lp = l.log_softmax(0).unwrap().value();
    assert!(
        close_f32(lp.data()[0], -std::f64::consts::LN_2, 2.0),
        "{}",
        lp.data()[0]
    );
    let q = Categorical::from_logits(tape.var(Tensor::vector(&[-80.0f32, -80.0]))).unwrap();
    let p = Categorical::from_logits(tape.var(Tensor::vector(&[0.0f32, 0.0]))).unwrap();
    assert_eq!(kl_divergence(&q, &p).unwrap().item().unwrap(), 0.0);
}

/// Stable Bernoulli forms (values from mpmath).
#[test]
fn bernoulli_log_prob_entropy_and_kl_without_cancellation() {
    // f32, logit 11: ln P(1) = -softplus(-11)
    let tape = Tape::<f32>::new();
    let b = Bernoulli::from_logits(tape.var(Tensor::scalar(11.0f32))).unwrap();
    let lp = b.log_prob(tape.scalar(1.0)).unwrap().item().unwrap();
    assert!(close_f32(lp, -1.670_156_131_839_396e-5, 4.0), "{lp}");
    // f64, logit 36
    let tape = Tape::<f64>::new();
    let b = Bernoulli::from_logits(tape.var(Tensor::scalar(36.0))).unwrap();
    let lp = b.log_prob(tape.scalar(1.0)).unwrap().item().unwrap();
    assert!(rel(lp, -2.319_522_830_243_569e-16) < 1e-12, "{lp}");
    // entropy at logit 30: 2.9008631203401870e-12
    let b = Bernoulli::from_logits(tape.var(Tensor::scalar(30.0))).unwrap();
    let h = b.entropy().unwrap().item().unwrap();
    assert!(rel(h, 2.900_863_120_340_187e-12) < 1e-12, "{h}");
    // KLs between near-equal Bernoullis: positive and accurate
    for (a, bl, want) in [
        (3.0, 3.0 + 1e-4, 2.258_764_835_293_284_3e-10),
        (-20.0, -20.001, 1.030_233_367_236_761e-15),
        (15.0, 15.5, 3.258_795_879_830_628_7e-8),
    ] {
        let q = Bernoulli::from_logits(tape.var(Tensor::scalar(a))).unwrap();
        let p = Bernoulli::from_logits(tape.var(Tensor::scalar(bl))).unwrap();
        let kl = kl_divergence(&q, &p).unwrap().item().unwrap();
        // the logits themselves are rounded: 3 + 1e-4 carries a relative error of 1e-12 in d
        assert!(
            rel(kl, want) < 1e-9,
            "KL({a} || {bl}) = {kl:e}, want {want:e}"
        );
    }
}

/// The Bernoulli entropy's slope `-l σ(l) σ(-l)` near `l = 0`, where as
/// the sum of its terms' slopes (two halves of about `∓1/2`) it kept only
/// their rounding: 2.4e-7 off at `l = 1e-10` and wholly wrong at `-3e-20`
/// (values and slopes from mpmath, in `f64` and `f32`).
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn bernoulli_entropy_slope_keeps_its_digits_near_zero() {
    let cases = [
        // (ln 2 less l²/8 and beyond: ln 2 in f64)
        (1e-10, std::f64::consts::LN_2, -2.5e-11),
        (-3e-20, std::f64::consts::LN_2, 7.5e-21),
        (0.7, 0.635_454_608_367_741_62, -0.155_199_011_305_176_34),
        (
            -25.0,
            3.610_865_404_841_462_2e-10,
            3.471_985_966_144_567_7e-10,
        ),
    ];
    for (l, value, slope) in cases {
        let tape = Tape::<f64>::new();
        let logits = tape.var(Tensor::scalar(l));
        let h = Bernoulli::from_logits(logits).unwrap().entropy().unwrap();
        let got = h.backward().unwrap().get(logits).unwrap().item().unwrap();
        assert!(rel(h.item().unwrap(), value) < 1e-14, "H({l})");
        assert!(rel(got, slope) < 1e-14, "H'({l}) = {got:e}, want {slope:e}");
        let tape = Tape::<f32>::new();
        let logits = tape.var(Tensor::scalar(l as f32));
        let h = Bernoulli::from_logits(logits).unwrap().entropy().unwrap();
        let got = h.backward().unwrap().get(logits).unwrap().item().unwrap();
        // (the f32 logit is l rounded: the slope is that of the rounded one)
        let want = f64::from(l as f32) * slope / l;
        assert!(
            close_f32(got, want, 2.0),
            "f32 H'({l}) = {got:e}, want {want:e}"
        );
    }
}

/// KLs between Bernoullis whose logits are far apart (mpmath): taken as the
/// difference of two terms that both grow like `u = s (e^-d - 1)`, the KL
/// lost its digits, 4e-5 of it from -1 against 30 in `f64` (all of it in
/// `f32`) and all of it from -80 against 80.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn bernoulli_kl_between_distant_logits_keeps_its_digits() {
    let cases = [
        (-80.0, 80.0, 79.999_999_999_999_999_93),
        (-1.0, 30.0, 21.349_554_250_012_022),
        (0.0, 30.0, 14.306_852_819_440_148),
        (3.0, -20.0, 18.860_617_567_403_376),
        (-20.0, 30.0, 29.999_999_894_881_259),
        (2.0, -2.0, 1.523_188_311_911_529_8),
        (0.5, 0.25, 0.007_477_268_499_200_522_5),
    ];
    for (a, b, want) in cases {
        let tape = Tape::<f64>::new();
        let q = Bernoulli::from_logits(tape.scalar(a)).unwrap();
        let p = Bernoulli::from_logits(tape.scalar(b)).unwrap();
        let kl = kl_divergence(&q, &p).unwrap().item().unwrap();
        assert!(rel(kl, want) < 1e-14, "KL({a} || {b}) = {kl}, want {want}");
        let tape = Tape::<f32>::new();
        let q = Bernoulli::from_logits(tape.scalar(a as f32)).unwrap();
        let p = Bernoulli::from_logits(tape.scalar(b as f32)).unwrap();
        let kl = kl_divergence(&q, &p).unwrap().item().unwrap();
        assert!(
            close_f32(kl, want, 8.0),
            "f32 KL({a} || {b}) = {kl}, want {want}"
        );
    }
    // the gradient in p's logit, sigmoid(b) - sigmoid(a), from the
    // complements near 1: 1 - sigmoid(30) = 9.357622968840175e-14 (mpmath)
    for (a, b) in [(80.0f32, 30.0f32), (-30.0, -80.0)] {
        let tape = Tape::<f32>::new();
        let (qa, pb) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
        let q = Bernoulli::from_logits(qa).unwrap();
        let p = Bernoulli::from_logits(pb).unwrap();
        let g = kl_divergence(&q, &p).unwrap().backward().unwrap();
        let db = -g.get(pb).unwrap().item().unwrap();
        assert!(
            close_f32(db, 9.357_622_968_840_175e-14, 8.0),
            "({a}, {b}): {db}"
        );
    }
}

/// Categorical KLs against mpmath, near-equal and far apart: as the
/// difference of the log-softmaxes the near-equal ones were 1e-9 to 7e-8
/// off in `f64`, and in `f32` 79% off or negative. In `f32` the KL is that
/// of its own (rounded) logits taken in `f64`, within a few ulp.
#[test]
#[allow(clippy::excessive_precision)] // mpmath's digits
fn categorical_kl_keeps_its_digits_near_equal_and_far_apart() {
    let cases: [([f64; 3], [f64; 3], f64, f64); 6] = [
        (
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 0.001],
            1.111_234_537_026_749_8e-7,
            1e-11,
        ),
        (
            [5.0, 0.0, -5.0],
            [5.001, 0.0, -5.0],
            3.345_023_584_288_171_2e-9,
            1e-9,
        ),
        (
            [0.001, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            1.111_357_932_057_617_2e-7,
            1e-11,
        ),
        ([-100.0, 0.0, 100.0], [100.0, 0.0, -100.0], 200.0, 1e-14),
        (
            [0.0, 30.0, 0.0],
            [0.0, -30.0, 0.0],
            30.693_147_180_548_576,
            1e-14,
        ),
        (
            [0.0, 0.0, 0.0],
            [-1.0, 30.0, 2.0],
            18.568_054_377_999_283,
            1e-14,
        ),
    ];
    fn kl<F: Element>(q: &[f64; 3], p: &[f64; 3]) -> F {
        let tape = Tape::<F>::new();
        let v = |x: &[f64; 3]| tape.var(Tensor::from_fn(&[3], |i| F::lit(x[i])));
        let (q, p) = (
            Categorical::from_logits(v(q)),
            Categorical::from_logits(v(p)),
        );
        kl_divergence(&q.unwrap(), &p.unwrap())
            .unwrap()
            .item()
            .unwrap()
    }
    for (q, p, want, tol) in cases {
        let got = kl::<f64>(&q, &p);
        assert!(
            rel(got, want) < tol,
            "KL({q:?} || {p:?}) = {got:e}, want {want:e}"
        );
        let single = kl::<f32>(&q, &p);
        let rounded = |x: [f64; 3]| x.map(|v| f64::from(v as f32));
        let of_its_logits = kl::<f64>(&rounded(q), &rounded(p));
        assert!(
            single >= 0.0 && close_f32(single, of_its_logits, 4.0),
            "f32 KL({q:?} || {p:?}) = {single:e}, of its logits {of_its_logits:e}"
        );
    }
}

/// `Categorical::from_probs` with a subnormal probability: the gradient of
/// `ln p` is `g / p`, finite, where `g · (1 / p)` overflowed to −inf.
#[test]
fn subnormal_probabilities_give_finite_gradients_in_f32() {
    let tape = Tape::<f32>::new();
    let tiny = 1e-40f32; // subnormal
    let probs = tape.var(Tensor::vector(&[1.0 - tiny, tiny]));
    let cat = Categorical::from_probs(probs).unwrap();
    let g = cat.log_prob_labels(&[0]).unwrap().sum().backward().unwrap();
    let gp = g.get(probs).unwrap();
    assert!(gp.data().iter().all(|v| v.is_finite()), "{:?}", gp.data());
    // d/dp_1 of ln softmax(ln p)_0 = -softmax_1 / p_1 = -1 / Σp = -1
    assert!((gp.data()[1] + 1.0).abs() < 1e-5, "{:?}", gp.data());
    let lp = cat.log_probs().unwrap().value();
    assert!(
        close_f32(lp.data()[1], (1e-40f64).ln(), 64.0),
        "{}",
        lp.data()[1]
    );
}

/// Pairwise summation: 10⁶ copies of 0.1f32 sum to 100000.00149011612
/// (exact: 10⁶ times the f32 nearest 0.1), and the gradient of `mean()`
/// sums to 1.
#[test]
fn long_f32_sums_are_pairwise() {
    let n = 1_000_000;
    let t = Tensor::full(&[n], 0.1f32);
    let s = t.sum_all();
    assert!(rel(s as f64, 100_000.001_490_116_12) < 1e-6, "{s}");
    let tape = Tape::<f32>::new();
    let x = tape.var(t);
    let g = x.mean().backward().unwrap();
    let total = g.get(x).unwrap().sum_all();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    let s = x.sum().item().unwrap();
    assert!(rel(s as f64, 100_000.001_490_116_12) < 1e-6, "{s}");
}

/// Beta, Dirichlet and Gamma variances from shares that neither cancel nor
/// overflow. `1 - a_i / a0` rounded away a Dirichlet's dominant share (a
/// variance of 0 in f32 for concentrations [1e8, 3], 19 % off at [1e7, 1]),
/// and the Beta's `a b / (s² (s + 1))` overflowed or underflowed (0 at
/// a = b = 1e19, NaN at 1e-25). Exact: `(a/s)(b/s)/(s+1)` in f64 from the
/// f32 inputs (`s = a + b` exact in f64 for these pairs to well under an
/// f32 ulp of the result). The gradients are checked in f64.
#[test]
fn beta_dirichlet_and_gamma_variances_keep_their_digits_in_f32() {
    let tape = Tape::<f32>::new();
    for (a, b) in [
        (1e4f32, 1.0f32),
        (1e7, 1.0),
        (1e8, 3.0),
        (3.0, 1e8),
        (1e19, 1e19),
        (1e-25, 1e-25),
        (0.5, 2.5),
    ] {
        let (a64, b64) = (f64::from(a), f64::from(b));
        let s = a64 + b64;
        let exact = (a64 / s) * (b64 / s) / (s + 1.0);
        let dirichlet = Dirichlet::new(tape.constant(Tensor::vector(&[a, b]))).unwrap();
        let beta = Beta::new(tape.scalar(a), tape.scalar(b)).unwrap();
        for got in dirichlet.variance().unwrap().value().data() {
            assert!(
                close_f32(*got, exact, 4.0),
                "Dirichlet [{a:e}, {b:e}]: {got:e} vs {exact:e}"
            );
        }
        let got = beta.variance().unwrap().item().unwrap();
        assert!(
            close_f32(got, exact, 4.0),
            "Beta({a:e}, {b:e}): {got:e} vs {exact:e}"
        );
    }
    // three categories, one dominant: each variance a_i (a0 - a_i) / (a0² (a0 + 1))
    let a = [1e7f32, 2.0, 0.5];
    let dirichlet = Dirichlet::new(tape.constant(Tensor::vector(&a))).unwrap();
    let a0: f64 = a.iter().map(|&x| f64::from(x)).sum();
    for (i, got) in dirichlet
        .variance()
        .unwrap()
        .value()
        .data()
        .iter()
        .enumerate()
    {
        let ai = f64::from(a[i]);
        let exact = (ai / a0) * ((a0 - ai) / a0) / (a0 + 1.0);
        assert!(
            close_f32(*got, exact, 4.0),
            "Dirichlet {a:?}[{i}]: {got:e} vs {exact:e}"
        );
    }
    // Gamma(1e30, 1e20): r² overflows f32, the variance is 1e-10
    let gamma = Gamma::new(tape.scalar(1e30), tape.scalar(1e20)).unwrap();
    let got = gamma.variance().unwrap().item().unwrap();
    assert!(
        close_f32(got, 1e30f32 as f64 / (1e20f32 as f64).powi(2), 4.0),
        "{got:e}"
    );
    // the gradients of the three, checked in f64
    let cfg = GradCheck::default();
    let v = |x: &[f64]| Tensor::vector(x);
    gradcheck(
        |_, x| Dirichlet::new(x[0])?.variance(),
        &[Tensor::from_rows(&[[0.7, 3.0, 1.5], [40.0, 0.2, 2.0]]).unwrap()],
        &cfg,
    )
    .unwrap();
    gradcheck(
        |_, x| Beta::new(x[0], x[1])?.variance(),
        &[v(&[0.7, 30.0]), v(&[2.5, 0.4])],
        &cfg,
    )
    .unwrap();
    gradcheck(
        |_, x| Gamma::new(x[0], x[1])?.variance(),
        &[v(&[0.7, 30.0]), v(&[2.5, 0.4])],
        &cfg,
    )
    .unwrap();
}
