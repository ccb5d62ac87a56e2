//! Bayesian neural network regression on the real UCI wine-quality-red
//! table, following the protocol of the Bayesian deep learning UCI
//! benchmarks (20 random 90/10 splits; see docs/uci-wine.md).
//!
//! Run: `cargo run --release --example uci_wine`
//! Flags: `--splits N --epochs N --estimator {reparameterization,flipout,local,sparse-vd}
//!         --likelihood {normal,student-t}
//!         --seed N --lr X --lr-final X --rho-init X --noise-init X --kl-temperature X
//!         --kl-warmup-epochs N --loc-init-std X --batch-size N --train-samples N
//!         --map-epochs N --validate --export-splits DIR --seeds A..B`
//!
//! `--validate` never touches the test parts: it scores on 10% of each
//! training part, for tuning. `--export-splits DIR` writes the table and the
//! test rows of the `--seed`'s splits for `examples/tfp_wine.py` and exits.
//! `--seeds 0..20` runs the 20 splits of every split seed in the range
//! (`0..=19` also works) and prints one line per seed, then how the
//! 20-split means vary across seeds and for how many the stretch targets hold.

mod pipeline;

use pipeline::{Config, Data, mean_sd, mean_se};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[macro_use]
#[path = "../common/say.rs"]
mod say;

/// What the command does besides its settings.
enum Mode {
    /// The splits of `--seed`, one line per split (the default).
    Splits,
    /// `--export-splits DIR`: write the table and the test rows, then exit.
    Export(PathBuf),
    /// `--seeds A..B`: the splits of every seed in the range, one line per seed.
    Seeds(Range<u64>),
}

fn parse(args: &[String]) -> Result<(Config, Mode), String> {
    let mut cfg = Config::default();
    let mut mode = Mode::Splits;
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
            "--likelihood" => cfg.likelihood = value.parse().map_err(|e: String| bad(&e))?,
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
            "--export-splits" | "--seeds" if !matches!(mode, Mode::Splits) => {
                return Err("--seeds and --export-splits do not go together".into());
            }
            "--export-splits" => mode = Mode::Export(PathBuf::from(value)),
            "--seeds" => {
                mode = Mode::Seeds(pipeline::parse_seed_range(value).map_err(|e| bad(&e))?)
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    cfg.check()?;
    Ok((cfg, mode))
}

/// Runs the splits of `cfg.seed` and returns their test (or validation)
/// RMSEs and log-likelihoods; with `print_each`, a line per split, in order.
///
/// The splits are independent (each seeded by its index), so they run on
/// as many threads as bayesgrad uses, each taking the next split; the
/// results are the same as one after the other (concurrent tapes give
/// bit-identical results), only sooner.
fn run_splits(cfg: &Config, data: &Data, print_each: bool) -> Result<(Vec<f64>, Vec<f64>), String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = bayesgrad::threads().clamp(1, cfg.splits.max(1));
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (send, next) = (send.clone(), &next);
            s.spawn(move || {
                loop {
                    let split = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if split >= cfg.splits {
                        break;
                    }
                    let r = pipeline::run_split(cfg, data, split);
                    let failed = r.is_err();
                    if send.send((split, r)).is_err() || failed {
                        // the receiver stopped at an error: take no more splits
                        next.store(cfg.splits, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
        drop(send);
        // print in split order as the results arrive
        let mut done = std::collections::BTreeMap::new();
        let (mut rmses, mut lls) = (Vec::new(), Vec::new());
        for (split, r) in receive {
            let r = r.map_err(|e| format!("seed {}, split {split}: {e}", cfg.seed))?;
            done.insert(split, r);
            while let Some(r) = done.remove(&rmses.len()) {
                if print_each {
                    say!(
                        "split {:>2}: rmse {:.4}  log-lik {:>7.4}  (train-mean rmse {:.4})  {:.2} s{}",
                        rmses.len(),
                        r.rmse,
                        r.log_likelihood,
                        r.baseline_rmse,
                        r.seconds,
                        match r.sparsity {
                            Some(s) => format!("  pruned {:.1}%", 100.0 * s),
                            None => String::new(),
                        }
                    );
                }
                rmses.push(r.rmse);
                lls.push(r.log_likelihood);
            }
        }
        Ok((rmses, lls))
    })
}

/// `n` and `word`, with an `s` unless `n` is 1.
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// `± se` to `digits` decimals, or a note that one value has none.
fn plus_minus(se: f64, digits: usize) -> String {
    if se.is_finite() {
        format!("± {se:.digits$}")
    } else {
        "(one split)".to_string()
    }
}

/// The summary of one seed's splits.
fn report_splits(cfg: &Config, rmses: &[f64], lls: &[f64], seconds: f64) {
    let ((rm, rse), (lm, lse)) = (mean_se(rmses), mean_se(lls));
    let part = if cfg.validate { "validation" } else { "test" };
    let tfp = "TFP, docs/uci-wine.md, its own splits";
    say!(
        "{part} RMSE           {rm:.3} {}   ({tfp}: 0.638 ± 0.010)",
        plus_minus(rse, 3)
    );
    say!(
        "{part} log-likelihood {lm:.3} {}   ({tfp}: -0.968 ± 0.014)",
        plus_minus(lse, 3)
    );
    let above: Vec<f64> = rmses
        .iter()
        .zip(lls)
        .map(|(&r, &ll)| ll - pipeline::gaussian_log_likelihood_at(r))
        .collect();
    let (am, ase) = mean_se(&above);
    let by = if ase.is_finite() {
        format!("{am:+.4} ± {ase:.4}")
    } else {
        format!("{am:+.4}")
    };
    say!(
        "  (a Gaussian with σ = each split's {part} RMSE would score {:.3}; the predictive is {by} above it)",
        lm - am
    );
    say!(
        "wall time        {seconds:.1} s for {}   (TFP's, timed on another machine: docs/uci-wine.md)",
        plural(cfg.splits, "split")
    );
}

/// `--seeds`: every seed's splits, a line per seed, then the spread of the
/// seeds' means and how many meet the stretch targets.
fn across_seeds(cfg: &Config, data: &Data, seeds: Range<u64>) -> Result<(), String> {
    let start = Instant::now();
    let part = if cfg.validate { "validation" } else { "test" };
    // each seed's 20-split means: (seed, RMSE, log-likelihood)
    let mut means = Vec::new();
    for seed in seeds.clone() {
        let seed_start = Instant::now();
        let cfg = Config {
            seed,
            ..cfg.clone()
        };
        let (r, l) = run_splits(&cfg, data, false)?;
        let ((rm, rse), (lm, lse)) = (mean_se(&r), mean_se(&l));
        let (rmse_ok, ll_ok) = (
            rm <= pipeline::TARGET_RMSE,
            lm >= pipeline::TARGET_LOG_LIKELIHOOD,
        );
        say!(
            "seed {seed:>3}: {part} rmse {rm:.4} {}  log-lik {lm:.4} {}  targets: {}  {:.1} s",
            plus_minus(rse, 4),
            plus_minus(lse, 4),
            match (rmse_ok, ll_ok) {
                (true, true) => "both",
                (true, false) => "rmse only",
                (false, true) => "log-lik only",
                (false, false) => "neither",
            },
            seed_start.elapsed().as_secs_f64()
        );
        means.push((seed, rm, lm));
    }
    let n = means.len();
    let rmses: Vec<f64> = means.iter().map(|&(_, r, _)| r).collect();
    let lls: Vec<f64> = means.iter().map(|&(_, _, l)| l).collect();
    // the spread of the seeds' means (a single seed has none)
    let mean_and_spread = |xs: &[f64]| match mean_sd(xs) {
        (m, sd) if sd.is_finite() => format!("{m:.4} (sd {sd:.4})"),
        (m, _) => format!("{m:.4}"),
    };
    say!(
        "over {} ({}..{}), the {}-split means: {part} RMSE {}, log-likelihood {}",
        plural(n, "seed"),
        seeds.start,
        seeds.end,
        cfg.splits,
        mean_and_spread(&rmses),
        mean_and_spread(&lls)
    );
    let passing: Vec<String> = means
        .iter()
        .filter(|&&(_, r, l)| pipeline::meets_targets(r, l))
        .map(|(seed, ..)| seed.to_string())
        .collect();
    say!(
        "stretch targets: RMSE <= {:.3} for {} of {n}, log-likelihood >= {:.3} for {}, both for {}{}",
        pipeline::TARGET_RMSE,
        rmses
            .iter()
            .filter(|&&r| r <= pipeline::TARGET_RMSE)
            .count(),
        pipeline::TARGET_LOG_LIKELIHOOD,
        lls.iter()
            .filter(|&&l| l >= pipeline::TARGET_LOG_LIKELIHOOD)
            .count(),
        passing.len(),
        if passing.is_empty() {
            String::new()
        } else {
            format!(" (seeds {})", passing.join(", "))
        }
    );
    say!(
        "wall time        {:.1} s for {}",
        start.elapsed().as_secs_f64(),
        plural(n, "seed")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cfg, mode) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let data = pipeline::load();
    let seeds = match mode {
        Mode::Export(dir) => {
            return match pipeline::export_splits(&data, cfg.seed, cfg.splits, &dir) {
                Ok([table, splits]) => {
                    say!(
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
        Mode::Seeds(seeds) => Some(seeds),
        Mode::Splits => None,
    };
    say!(
        "UCI wine-quality-red: {} rows; {}, {}, {}{}",
        data.y.len(),
        plural(cfg.splits, "split"),
        match &seeds {
            Some(seeds) => format!("seeds {}..{}", seeds.start, seeds.end),
            None => format!("seed {}", cfg.seed),
        },
        plural(cfg.epochs, "epoch"),
        if cfg.validate {
            " (VALIDATION: scores on 10% of each training part)"
        } else {
            ""
        }
    );
    say!(
        "  {:?}, {} likelihood, Adam lr {}{}, batch {}, {}, posterior rho init {}, noise init {}, KL temperature {}{}",
        cfg.estimator,
        match cfg.likelihood {
            pipeline::LikelihoodChoice::Normal => "Normal".to_string(),
            pipeline::LikelihoodChoice::StudentT => {
                format!("Student-t (df from {})", pipeline::DF_INIT)
            }
        },
        cfg.lr,
        if cfg.lr_final != cfg.lr {
            format!(" -> {}", cfg.lr_final)
        } else {
            String::new()
        },
        cfg.batch_size,
        match cfg.map_epochs {
            0 => "no MAP start".to_string(),
            n => format!("MAP start of {}", plural(n, "epoch")),
        },
        cfg.rho_init,
        cfg.noise_init,
        cfg.kl_temperature,
        match cfg.kl_warmup_epochs {
            0 => String::new(),
            n => format!(" (warm-up over {})", plural(n, "epoch")),
        }
    );
    let outcome = match seeds {
        Some(seeds) => across_seeds(&cfg, &data, seeds),
        None => run_splits(&cfg, &data, true)
            .map(|(rmses, lls)| report_splits(&cfg, &rmses, &lls, start.elapsed().as_secs_f64())),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
