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
mod extremes;
mod f32_domain;
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
mod sample_n;
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

/// Vectors a program builds itself and hands to `Tensor::from_vec`, which
/// keeps them where they are, start on a cache line under [`ALLOC`] (the
/// tensors bayesgrad builds pad themselves to a line whatever the
/// allocator). Eight at once, so that on the system allocator (16-byte
/// blocks) some would start inside a line.
#[test]
fn vectors_handed_to_from_vec_start_on_a_cache_line() {
    use bayesgrad::prelude::*;
    let n = 2 * bayesgrad::train::CacheAligned::MIN_SIZE / 4;
    let tensors: Vec<Tensor<f32>> = (0..8)
        .map(|k| Tensor::from_vec(vec![k as f32; n], &[n]).unwrap())
        .collect();
    for (k, t) in tensors.iter().enumerate() {
        assert_eq!(t.data().as_ptr() as usize % 64, 0, "vector {k}");
        assert!(t.data().iter().all(|&x| x == k as f32));
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
