//! The UCI wine example's pipeline, end to end on one split with few epochs:
//! it must beat the trivial predictor (the training mean).

#[path = "../examples/uci_wine/pipeline.rs"]
mod pipeline;

#[test]
fn wine_pipeline_beats_the_training_mean() {
    let data = pipeline::load();
    assert_eq!(data.y.len(), 1599);
    assert_eq!(data.x.len(), 1599);
    let cfg = pipeline::Config {
        splits: 1,
        epochs: 8,
        map_epochs: 4,
        test_samples: 30,
        ..Default::default()
    };
    for estimator in [
        pipeline::EstimatorChoice::Flipout,
        pipeline::EstimatorChoice::Local,
    ] {
        let r = pipeline::run_split(
            &pipeline::Config {
                estimator,
                ..cfg.clone()
            },
            &data,
            0,
        )
        .unwrap();
        assert!(
            r.rmse < r.baseline_rmse,
            "{estimator:?}: rmse {} vs training-mean {}",
            r.rmse,
            r.baseline_rmse
        );
        assert!(
            r.log_likelihood.is_finite() && r.log_likelihood < 0.0,
            "{}",
            r.log_likelihood
        );
    }
}

/// The MAP start alone (no variational epochs) already puts the posterior
/// means at a fitted network; without it they are random and predict worse
/// than the training mean.
#[test]
fn the_map_start_puts_the_posterior_at_a_fitted_network() {
    let data = pipeline::load();
    let run = |map_epochs| {
        let cfg = pipeline::Config {
            splits: 1,
            epochs: 0,
            map_epochs,
            test_samples: 30,
            ..Default::default()
        };
        pipeline::run_split(&cfg, &data, 0).unwrap()
    };
    let (fitted, untrained) = (run(10), run(0));
    assert!(
        fitted.rmse < 0.9 * fitted.baseline_rmse,
        "MAP start: rmse {} vs training-mean {}",
        fitted.rmse,
        fitted.baseline_rmse
    );
    assert!(
        untrained.rmse > untrained.baseline_rmse,
        "untrained: rmse {} vs training-mean {}",
        untrained.rmse,
        untrained.baseline_rmse
    );
}

#[test]
fn splits_partition_the_rows_and_export_as_they_run() {
    let data = pipeline::load();
    let n = data.y.len();
    let (_, test0, train0) = pipeline::split_rows(5, n, 0);
    assert_eq!(test0.len(), 160);
    let mut all: Vec<usize> = test0.iter().chain(&train0).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "test and train partition the rows"
    );
    // a split follows from (seed, split) alone, and differs across both
    assert_eq!(pipeline::split_rows(5, n, 0).1, test0);
    assert_ne!(pipeline::split_rows(5, n, 1).1, test0);
    assert_ne!(pipeline::split_rows(6, n, 0).1, test0);

    let dir = std::env::temp_dir().join(format!("bayesgrad-wine-export-{}", std::process::id()));
    let [table, splits] = pipeline::export_splits(&data, 5, 3, &dir).unwrap();
    assert_eq!(
        splits,
        dir.join("splits_seed5.txt"),
        "the name tfp_wine.py reads"
    );
    let csv = std::fs::read_to_string(table).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), n);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[..11], data.x[i], "row {i}: features round-trip exactly");
        assert_eq!(row[11], data.y[i], "row {i}: quality");
    }
    let splits = std::fs::read_to_string(splits).unwrap();
    let lines: Vec<&str> = splits.lines().collect();
    assert_eq!(lines.len(), 3);
    for (split, line) in lines.iter().enumerate() {
        let test: Vec<usize> = line.split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(test, pipeline::split_rows(5, n, split).1, "split {split}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The example's calibration line: a Gaussian with σ = RMSE scores
/// `gaussian_log_likelihood_at(rmse)` on its own errors, and other σ less.
#[test]
fn a_gaussian_with_sigma_at_the_rmse_scores_the_printed_optimum() {
    let errors: Vec<f64> = (0..50)
        .map(|i| ((i * 37 % 50) as f64 - 24.5) * 0.03)
        .collect();
    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / 50.0).sqrt();
    let mean_log_density = |sigma: f64| {
        errors
            .iter()
            .map(|e| {
                -0.5 * (e / sigma).powi(2) - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum::<f64>()
            / 50.0
    };
    let optimum = pipeline::gaussian_log_likelihood_at(rmse);
    assert!((mean_log_density(rmse) - optimum).abs() < 1e-12);
    for factor in [0.8, 0.95, 1.05, 1.25] {
        assert!(
            mean_log_density(rmse * factor) < optimum,
            "σ = {factor} × RMSE"
        );
    }
}

/// `--seeds` takes `A..B` and `A..=B`, and refuses empty or malformed ranges
/// with the text the user typed.
#[test]
fn seed_ranges_parse_like_rust_ranges() {
    assert_eq!(pipeline::parse_seed_range("0..20"), Ok(0..20));
    assert_eq!(pipeline::parse_seed_range("0..=19"), Ok(0..20));
    assert_eq!(pipeline::parse_seed_range("7..=7"), Ok(7..8));
    for empty in ["3..3", "5..2", "4..=3"] {
        let err = pipeline::parse_seed_range(empty).unwrap_err();
        assert!(err.contains("empty") && err.contains(empty), "{err}");
    }
    for bad in [
        "x",
        "3",
        "..4",
        "1..",
        "1..=x",
        "-1..3",
        "0..=18446744073709551615",
    ] {
        let err = pipeline::parse_seed_range(bad).unwrap_err();
        assert!(err.contains(bad), "{bad}: {err}");
    }
}

/// The targets are compared unrounded: 0.6304 prints as 0.630 and misses.
#[test]
fn the_stretch_targets_need_both_figures() {
    assert!(pipeline::meets_targets(0.630, -0.950));
    assert!(pipeline::meets_targets(0.61, -0.93));
    assert!(!pipeline::meets_targets(0.6304, -0.94));
    assert!(!pipeline::meets_targets(0.62, -0.9504));
}

/// A `Config` built in code is checked as strictly as the command line:
/// each setting the protocol cannot run with is refused by name before any
/// training, where it used to panic (a batch size of 0 divides by zero),
/// give NaN (no test samples) or be read as something else (0 training
/// samples as 1).
#[test]
fn a_config_that_cannot_run_is_refused_by_name() {
    let data = pipeline::load();
    let good = pipeline::Config {
        splits: 1,
        epochs: 1,
        map_epochs: 0,
        test_samples: 2,
        ..Default::default()
    };
    assert_eq!(good.check(), Ok(()));
    type Spoil = fn(&mut pipeline::Config);
    let cases: [(&str, Spoil); 14] = [
        ("splits", |c| c.splits = 0),
        ("batch_size", |c| c.batch_size = 0),
        ("train_samples", |c| c.train_samples = 0),
        ("hidden", |c| c.hidden = 0),
        ("test_samples", |c| c.test_samples = 0),
        ("lr", |c| c.lr = 0.0),
        ("lr_final", |c| c.lr_final = -1e-3),
        ("lr", |c| c.lr = f64::INFINITY),
        ("noise_init", |c| c.noise_init = 0.0),
        ("noise_init", |c| c.noise_init = f64::NAN),
        ("kl_temperature", |c| c.kl_temperature = -1.0),
        ("loc_init_std", |c| c.loc_init_std = -0.1),
        ("loc_init_std", |c| c.loc_init_std = f64::NAN),
        ("rho_init", |c| c.rho_init = f64::NEG_INFINITY),
    ];
    for (field, spoil) in cases {
        let mut cfg = good.clone();
        spoil(&mut cfg);
        let err = cfg.check().unwrap_err();
        assert!(err.starts_with(&format!("{field} ")), "{field}: {err}");
        let err = pipeline::run_split(&cfg, &data, 0).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    // and the good config, one setting away from each bad one, runs
    let r = pipeline::run_split(&good, &data, 0).unwrap();
    assert!(r.rmse.is_finite() && r.log_likelihood.is_finite());
}
