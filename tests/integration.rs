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
