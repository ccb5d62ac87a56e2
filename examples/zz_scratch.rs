use bayesgrad::prelude::*;
use std::time::Instant;
fn main() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut times = vec![];
    for _ in 0..200 {
        let t = Instant::now();
        let x: Tensor<f32> = bayesgrad::random::standard_normal(&[784, 512], &mut rng);
        std::hint::black_box(&x);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "normal 401k: median {:.3} ms p10 {:.3}",
        times[100], times[20]
    );
}
