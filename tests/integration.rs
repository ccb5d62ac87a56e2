//! All integration tests, in one binary: one link and one instantiation of
//! the library's generics instead of one per file (the cold CI run went from
//! 10.5 to 7.1 minutes with this, `CARGO_INCREMENTAL=0` and line tables only,
//! one cold run each).
//! `Cargo.toml` turns off the automatic discovery of `tests/*.rs`, so a new
//! file must be declared below; the test at the end fails when it is not.

mod checkpoint;
mod convert;
#[cfg(feature = "oracle")]
mod dfdx_oracle;
mod discrete;
mod distributions;
mod engine;
mod families;
mod faults;
mod hierarchical;
mod iwae;
// The library's JSON reader, for the reference files and checkpoint headers.
#[path = "../src/json.rs"]
mod json;
mod layers;
mod metrics;
mod no_panic;
mod numerics;
mod open_api;
mod readme;
mod silent;
mod sparse_vd;
mod spike_slab_posterior;
mod threads;
mod uci_wine;

// The integration tests run on the allocator that starts large blocks on a
// cache line, the unit tests on the system allocator: each serves a whole
// suite, threads included.
#[global_allocator]
static ALLOC: bayesgrad::train::CacheAligned = bayesgrad::train::CacheAligned;

/// A training step's weight-sized tensors (parameters, gradients, Adam's
/// state written in place) start on a cache line under [`ALLOC`].
#[test]
fn large_tensors_start_on_a_cache_line() {
    use bayesgrad::layers::DenseSparseVd;
    use bayesgrad::prelude::*;
    let mut rng = StdRng::seed_from_u64(0);
    let mut store = ParamStore::<f32>::new();
    let layer = DenseSparseVd::new(&mut store, "l", 64, 48, &mut rng).unwrap();
    let x = Tensor::from_fn(&[16, 64], |i| (i % 7) as f32 - 3.0);
    let mut opt = Adam::new(1e-2);
    for _ in 0..3 {
        let tape = Tape::new();
        let mut cx = Forward::new(&tape, &store, &mut rng);
        let y = layer.forward(&mut cx, tape.constant(x.clone())).unwrap();
        let loss = y.square().mean() + cx.divergences().total();
        let grads = loss.backward().unwrap();
        for p in store.params() {
            let g = grads.param(p).unwrap();
            for (what, t) in [("value", &store.value(p)), ("gradient", g)] {
                if t.len() * 4 >= bayesgrad::train::CacheAligned::MIN_SIZE {
                    let at = t.data().as_ptr() as usize % 64;
                    assert_eq!(at, 0, "{what} of {}", store.name(p));
                }
            }
        }
        opt.step(&mut store, &grads).unwrap();
    }
}

/// Every `tests/*.rs` besides this file is a module of this binary.
#[test]
fn every_test_file_is_declared_here() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = include_str!("integration.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let declared = this.lines().any(|l| l == format!("mod {stem};"));
        if path.extension().is_some_and(|e| e == "rs") && stem != "integration" && !declared {
            missing.push(stem.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs would never run: declare them in tests/integration.rs",
        missing.join(",")
    );
}
