//! Bayesian neural network regression on the real UCI wine-quality-red
//! table, following the protocol of the Bayesian deep learning UCI
//! benchmarks (20 random 90/10 splits; see README "UCI wine").
//!
//! Run: `cargo run --release --example uci_wine`
//! Flags: `--splits N --epochs N --estimator {reparameterization,flipout,local}
//!         --seed N --lr X --lr-final X --rho-init X --noise-init X --kl-temperature X
//!         --kl-warmup-epochs N --loc-init-std X --batch-size N --train-samples N
//!         --map-epochs N --validate --export-splits DIR`
//!
//! `--validate` never touches the test parts: it scores on 10% of each
//! training part, for tuning. `--export-splits DIR` writes the table and the
//! test rows of the `--seed`'s splits for `examples/tfp_wine.py` and exits.

mod pipeline;

use pipeline::{mean_se, Config};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn parse(args: &[String]) -> Result<(Config, Option<PathBuf>), String> {
    let mut cfg = Config::default();
    let mut export = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--validate" {
            cfg.validate = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--splits" => cfg.splits = value.parse().map_err(|e| bad(&e))?,
            "--epochs" => cfg.epochs = value.parse().map_err(|e| bad(&e))?,
            "--estimator" => cfg.estimator = value.parse().map_err(|e: String| bad(&e))?,
            "--seed" => cfg.seed = value.parse().map_err(|e| bad(&e))?,
            "--lr" => {
                cfg.lr = value.parse().map_err(|e| bad(&e))?;
                cfg.lr_final = cfg.lr;
            }
            "--lr-final" => cfg.lr_final = value.parse().map_err(|e| bad(&e))?,
            "--rho-init" => cfg.rho_init = value.parse().map_err(|e| bad(&e))?,
            "--noise-init" => cfg.noise_init = value.parse().map_err(|e| bad(&e))?,
            "--kl-temperature" => cfg.kl_temperature = value.parse().map_err(|e| bad(&e))?,
            "--kl-warmup-epochs" => cfg.kl_warmup_epochs = value.parse().map_err(|e| bad(&e))?,
            "--loc-init-std" => cfg.loc_init_std = value.parse().map_err(|e| bad(&e))?,
            "--train-samples" => cfg.train_samples = value.parse().map_err(|e| bad(&e))?,
            "--map-epochs" => cfg.map_epochs = value.parse().map_err(|e| bad(&e))?,
            "--batch-size" => cfg.batch_size = value.parse().map_err(|e| bad(&e))?,
            "--export-splits" => export = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if cfg.splits == 0 || cfg.batch_size == 0 || cfg.test_samples == 0 {
        return Err("--splits and --batch-size must be >= 1".into());
    }
    Ok((cfg, export))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cfg, export) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let data = pipeline::load();
    if let Some(dir) = export {
        return match pipeline::export_splits(&data, cfg.seed, cfg.splits, &dir) {
            Ok([table, splits]) => {
                println!(
                    "wrote {} and {} (test rows of {} splits, seed {})",
                    table.display(),
                    splits.display(),
                    cfg.splits,
                    cfg.seed
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: writing to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    println!(
        "UCI wine-quality-red: {} rows; {} splits, {} epochs, {:?}, lr {}, batch {}, seed {}{}",
        data.y.len(),
        cfg.splits,
        cfg.epochs,
        cfg.estimator,
        cfg.lr,
        cfg.batch_size,
        cfg.seed,
        if cfg.validate {
            " (VALIDATION: scores on 10% of each training part)"
        } else {
            ""
        }
    );
    let (mut rmses, mut lls) = (Vec::new(), Vec::new());
    for split in 0..cfg.splits {
        match pipeline::run_split(&cfg, &data, split) {
            Ok(r) => {
                println!(
                    "split {split:>2}: rmse {:.4}  log-lik {:>7.4}  (train-mean rmse {:.4})  {:.2} s",
                    r.rmse, r.log_likelihood, r.baseline_rmse, r.seconds
                );
                rmses.push(r.rmse);
                lls.push(r.log_likelihood);
            }
            Err(e) => {
                eprintln!("split {split}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let ((rm, rse), (lm, lse)) = (mean_se(&rmses), mean_se(&lls));
    let part = if cfg.validate { "validation" } else { "test" };
    // one split has no standard error
    let pm = |se: f64| {
        if se.is_finite() {
            format!("± {se:.3}")
        } else {
            "(one split)".to_string()
        }
    };
    let tfp = "TFP, BENCHMARKS.md, its own splits";
    println!(
        "{part} RMSE           {rm:.3} {}   ({tfp}: 0.638 ± 0.010)",
        pm(rse)
    );
    println!(
        "{part} log-likelihood {lm:.3} {}   ({tfp}: -0.968 ± 0.014)",
        pm(lse)
    );
    let above: Vec<f64> = rmses
        .iter()
        .zip(&lls)
        .map(|(&r, &ll)| ll - pipeline::gaussian_log_likelihood_at(r))
        .collect();
    let (am, ase) = mean_se(&above);
    let by = if ase.is_finite() {
        format!("{am:+.4} ± {ase:.4}")
    } else {
        format!("{am:+.4}")
    };
    println!(
        "  (a Gaussian with σ = each split's {part} RMSE would score {:.3}; the predictive is {by} above it)",
        lm - am
    );
    println!(
        "wall time        {:.1} s for {} split{}   (TFP: 481 s for 20)",
        start.elapsed().as_secs_f64(),
        cfg.splits,
        if cfg.splits == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}
