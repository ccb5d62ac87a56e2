//! GEMM libraries on the products of bayesgrad's `mlp` and `conv` steps, in
//! f32, one thread and all threads: matrixmultiply (what bayesgrad uses,
//! split over threads by bayesgrad's own kernel, emulated here with scoped
//! threads), the `gemm` crate and `faer`, and with the `openblas` feature
//! the system's OpenBLAS (`cblas_sgemm`; Debian: `apt-get install
//! libopenblas-dev`, whose library picks its kernels for the CPU at run
//! time). Prints GFLOP/s, best of 15 runs each, the libraries alternating
//! within each shape.
//!
//! Run: `cargo run --release [--features avx512,openblas]` in this directory.

use std::time::Instant;

/// `(name, m, k, n, a transposed, b transposed)`: the products of one step.
const SHAPES: &[(&str, usize, usize, usize, bool, bool)] = &[
    ("mlp  x W1        ", 128, 784, 512, false, false),
    ("mlp  x^T g1 (dW1)", 784, 128, 512, true, false),
    ("mlp  h W2        ", 128, 512, 10, false, false),
    ("mlp  g2 W2^T (dh)", 128, 10, 512, false, true),
    ("conv im2col x K  ", 32768, 75, 64, false, false),
    ("conv x^T g (dK)  ", 75, 32768, 64, true, false),
    ("conv dense x W   ", 32, 16384, 10, false, false),
    ("square 1024      ", 1024, 1024, 1024, false, false),
];

struct Problem {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    ta: bool,
    tb: bool,
}

impl Problem {
    /// (row stride, col stride) of a stored `rows x cols` matrix read transposed or not.
    fn strides(rows_read: usize, cols_read: usize, t: bool) -> (isize, isize) {
        let _ = rows_read;
        if t {
            (1, rows_read as isize)
        } else {
            (cols_read as isize, 1)
        }
    }
}

fn mm(p: &Problem, c: &mut [f32], rows: std::ops::Range<usize>) {
    let (ars, acs) = Problem::strides(p.m, p.k, p.ta);
    let (brs, bcs) = Problem::strides(p.k, p.n, p.tb);
    let m = rows.len();
    // SAFETY: the strides address the stored operands; c holds m x n from row `rows.start`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            p.k,
            p.n,
            1.0,
            p.a.as_ptr().offset(rows.start as isize * ars),
            ars,
            acs,
            p.b.as_ptr(),
            brs,
            bcs,
            0.0,
            c.as_mut_ptr(),
            p.n as isize,
            1,
        );
    }
}

/// matrixmultiply split by rows over `threads` scoped threads (bayesgrad
/// splits the longer side; rows are what these tall products split).
fn matrixmultiply_split(p: &Problem, c: &mut [f32], threads: usize) {
    if threads == 1 || p.m < 16 {
        return mm(p, c, 0..p.m);
    }
    let step = p.m.div_ceil(threads).next_multiple_of(8);
    std::thread::scope(|s| {
        for (i, chunk) in c.chunks_mut(step * p.n).enumerate() {
            let lo = i * step;
            let hi = (lo + step).min(p.m);
            s.spawn(move || mm(p, chunk, lo..hi));
        }
    });
}

fn gemm_crate(p: &Problem, c: &mut [f32], threads: usize) {
    let (ars, acs) = Problem::strides(p.m, p.k, p.ta);
    let (brs, bcs) = Problem::strides(p.k, p.n, p.tb);
    let par = if threads == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: as for matrixmultiply; gemm takes (col stride, row stride) pairs.
    unsafe {
        gemm::gemm(
            p.m,
            p.n,
            p.k,
            c.as_mut_ptr(),
            1,
            p.n as isize,
            false,
            p.a.as_ptr(),
            acs,
            ars,
            p.b.as_ptr(),
            bcs,
            brs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn faer_crate(p: &Problem, c: &mut [f32], threads: usize) {
    use faer::{linalg::matmul::matmul, Accum, MatMut, MatRef, Par};
    let (ars, acs) = Problem::strides(p.m, p.k, p.ta);
    let (brs, bcs) = Problem::strides(p.k, p.n, p.tb);
    // SAFETY: the strides address the stored operands.
    let (a, b, c) = unsafe {
        (
            MatRef::from_raw_parts(p.a.as_ptr(), p.m, p.k, ars, acs),
            MatRef::from_raw_parts(p.b.as_ptr(), p.k, p.n, brs, bcs),
            MatMut::from_raw_parts_mut(c.as_mut_ptr(), p.m, p.n, p.n as isize, 1),
        )
    };
    let par = if threads == 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    };
    matmul(c, Accum::Replace, a, b, 1.0f32, par);
}

#[cfg(feature = "openblas")]
mod openblas {
    #[link(name = "openblas")]
    extern "C" {
        pub fn cblas_sgemm(
            order: i32,
            trans_a: i32,
            trans_b: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
        pub fn openblas_set_num_threads(n: i32);
    }
}

/// OpenBLAS's `cblas_sgemm`, row-major, on `threads` of its own threads.
#[cfg(feature = "openblas")]
fn openblas_sgemm(p: &Problem, c: &mut [f32], threads: usize) {
    const ROW_MAJOR: i32 = 101;
    let trans = |t: bool| if t { 112 } else { 111 };
    // a stored k x m when read transposed, else m x k; b likewise
    let lda = if p.ta { p.m } else { p.k };
    let ldb = if p.tb { p.k } else { p.n };
    // SAFETY: the operands hold m x k and k x n values as the leading
    // dimensions say, and c holds m x n.
    unsafe {
        openblas::openblas_set_num_threads(threads as i32);
        openblas::cblas_sgemm(
            ROW_MAJOR,
            trans(p.ta),
            trans(p.tb),
            p.m as i32,
            p.n as i32,
            p.k as i32,
            1.0,
            p.a.as_ptr(),
            lda as i32,
            p.b.as_ptr(),
            ldb as i32,
            0.0,
            c.as_mut_ptr(),
            p.n as i32,
        );
    }
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "CPU: {cpu}; avx512f: {}; {threads} threads",
        std::is_x86_feature_detected!("avx512f")
    );
    type Lib = fn(&Problem, &mut [f32], usize);
    #[allow(unused_mut)]
    let mut libs: Vec<(&str, Lib)> = vec![
        (
            if cfg!(feature = "avx512") {
                "mm avx512"
            } else {
                "mm avx2"
            },
            matrixmultiply_split,
        ),
        ("gemm", gemm_crate),
        ("faer", faer_crate),
    ];
    #[cfg(feature = "openblas")]
    libs.push(("openblas", openblas_sgemm));
    for t in [1, threads] {
        println!("\n{t} thread(s): GFLOP/s, best of 15 (alternating)");
        print!("{:<20} {:>16}", "product (m k n)", libs[0].0);
        for (name, _) in &libs[1..] {
            print!(" {name:>10}");
        }
        println!();
        for &(name, m, k, n, ta, tb) in SHAPES {
            let mut seed = 1u32;
            let mut rnd = || {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            };
            let p = Problem {
                m,
                k,
                n,
                a: (0..m * k).map(|_| rnd()).collect(),
                b: (0..k * n).map(|_| rnd()).collect(),
                ta,
                tb,
            };
            let mut best = vec![f64::INFINITY; libs.len()];
            let mut outs = vec![vec![0f32; m * n]; libs.len()];
            for _ in 0..15 {
                for (i, (_, f)) in libs.iter().enumerate() {
                    let start = Instant::now();
                    f(&p, &mut outs[i], t);
                    best[i] = best[i].min(start.elapsed().as_secs_f64());
                }
            }
            // the libraries agree (to f32 rounding of k-term sums)
            let tol = 1e-4 * k as f32;
            for o in &outs[1..] {
                let worst = o
                    .iter()
                    .zip(&outs[0])
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(worst < tol, "{name}: the libraries disagree by {worst}");
            }
            let flop = 2.0 * (m * k * n) as f64;
            print!("{name} {:>16.1}", flop / best[0] / 1e9);
            for b in &best[1..] {
                print!(" {:>10.1}", flop / b / 1e9);
            }
            println!();
        }
    }
}
