use std::time::Instant;
fn t(name: &str, n: usize, mut f: impl FnMut()) {
    f();
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:<40} {:8.3} ms",
        s.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
fn main() {
    let v: Vec<f32> = (0..401_408)
        .map(|i| 0.04 + (i as f32 * 1e-3).sin().abs() * 0.02)
        .collect();
    let mut out = vec![0f32; v.len()];
    t("libm ln", 50, || {
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = x.ln();
        }
        std::hint::black_box(&out);
    });
    t("fastmath ln", 50, || {
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = bayesgrad::fastmath::ln(x);
        }
        std::hint::black_box(&out);
    });
    t("fastmath exp", 50, || {
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = bayesgrad::fastmath::exp(-x);
        }
        std::hint::black_box(&out);
    });
    t("libm exp", 50, || {
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = (-x).exp();
        }
        std::hint::black_box(&out);
    });
    t("fastmath softplus", 50, || {
        for (o, &x) in out.iter_mut().zip(&v) {
            *o = bayesgrad::fastmath::softplus(x);
        }
        std::hint::black_box(&out);
    });
}
