//! Checks bayesgrad against TensorFlow Probability reference values (and
//! the 50-digit mpmath ones of `tests/data/mpmath_reference.json`, in the
//! same format).
//!
//! Run: `cargo run --release --example tfp_reference -- tests/data/tfp_golden.json`
//!
//! Prints one line per kind with the largest relative error (for the Monte
//! Carlo KL against spike-and-slab: the largest distance from the exact
//! quadrature value in standard errors), a line per kind it does not
//! implement (those cases are counted as skipped, not passed), then
//! `N passed, M failed`; exits non-zero if any case fails.

#[macro_use]
#[path = "common/say.rs"]
mod say;

#[path = "../tests/common/tfp_cases.rs"]
mod tfp_cases;

// The library's JSON reader, which `tfp_cases` reads the cases with.
#[path = "../src/json.rs"]
mod json;

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: tfp_reference <reference.json>");
        return ExitCode::from(2);
    };
    let doc = match std::fs::read(&path).map(|s| json::parse(&s)) {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) => {
            eprintln!("{path}: not valid JSON: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let tfp_cases::Evaluation { results, skipped } = match tfp_cases::evaluate_all(&doc) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for (kind, (worst, pass, fail)) in tfp_cases::summarize(&results) {
        let unit = if kind == "normal_vs_spike_slab_kl" {
            "standard errors"
        } else {
            "relative error"
        };
        say!("{kind:<38} {pass:>3} passed {fail:>2} failed   worst {worst:.3e} {unit}");
    }
    for r in results.iter().filter(|r| !r.passed) {
        say!("FAILED case {} ({}): {}", r.index, r.kind, r.detail);
    }
    for (kind, n) in &skipped {
        say!("{kind:<38} {n:>3} skipped: no implementation of this kind in bayesgrad");
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let skipped: usize = skipped.values().sum();
    if skipped > 0 {
        say!("{skipped} cases skipped (kinds listed above)");
    }
    say!("{} passed, {} failed", results.len() - failed, failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
