//! Uncertainty metrics against small cases computed by hand.

use bayesgrad::layers::metrics::{
    auroc, brier_score, expected_calibration_error, interval_coverage, negative_log_likelihood,
    pit_histogram,
};
use bayesgrad::prelude::*;

fn probs() -> Tensor<f64> {
    Tensor::from_rows(&[[0.93, 0.07], [0.22, 0.78], [0.62, 0.38], [0.56, 0.44]]).unwrap()
}
const LABELS: [usize; 4] = [0, 1, 1, 0];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn classification_metrics_match_hand_computed_values() {
    // 10 bins: each row alone; |1 - .93|, |1 - .78|, |0 - .62|, |1 - .56| averaged
    let ece = expected_calibration_error(&probs(), &LABELS, 10).unwrap();
    assert!(close(ece, (0.07 + 0.22 + 0.62 + 0.44) / 4.0), "{ece}");
    // 2 bins: all in (0.5, 1]: accuracy 3/4, mean confidence 2.89 / 4
    let ece = expected_calibration_error(&probs(), &LABELS, 2).unwrap();
    assert!(close(ece, 0.75 - 2.89 / 4.0), "{ece}");
    let brier = brier_score(&probs(), &LABELS).unwrap();
    assert!(close(
        brier,
        (2.0 * 0.0049 + 2.0 * 0.0484 + 2.0 * 0.3844 + 2.0 * 0.1936) / 4.0
    ));
    let nll = negative_log_likelihood(&probs(), &LABELS).unwrap();
    let want = -(0.93f64.ln() + 0.78f64.ln() + 0.38f64.ln() + 0.56f64.ln()) / 4.0;
    assert!(close(nll, want));
    // 9.5 of 12 pairs ordered (one tie)
    let a = auroc(&[0.1, 0.4, 0.35, 0.8], &[0.9, 0.4, 0.7]).unwrap();
    assert!(close(a, 9.5 / 12.0), "{a}");
    assert!(close(auroc(&[1.0, 2.0], &[3.0, 4.0]).unwrap(), 1.0));
    assert!(close(auroc(&[3.0, 4.0], &[1.0, 2.0]).unwrap(), 0.0));
}

#[test]
fn regression_metrics_match_hand_computed_values() {
    // 5 samples of 2 targets: [1..5] and [10..50]
    let samples: Vec<Tensor<f64>> = (1..=5)
        .map(|s| Tensor::vector(&[s as f64, 10.0 * s as f64]))
        .collect();
    let targets = [2.5, 45.0];
    // 50 %: [2, 4] holds 2.5; [20, 40] misses 45
    assert!(close(
        interval_coverage(&samples, &targets, 0.5).unwrap(),
        0.5
    ));
    // 90 %: [1.4, 4.6] and [14, 46] hold both
    assert!(close(
        interval_coverage(&samples, &targets, 0.9).unwrap(),
        1.0
    ));
    // PIT: 2 of 5 below 2.5 (0.4), 4 of 5 below 45 (0.8)
    let h = pit_histogram(&samples, &targets, 5).unwrap();
    assert_eq!(h, vec![0.0, 0.0, 0.5, 0.0, 0.5]);
}

#[test]
fn metrics_refuse_bad_input_by_name() {
    let e = |r: Result<f64>| r.err().unwrap().to_string();
    assert!(e(expected_calibration_error(&probs(), &LABELS, 0)).contains("bin"));
    assert!(e(brier_score(&probs(), &[0, 1])).contains("labels"));
    assert!(e(brier_score(&probs(), &[0, 1, 2, 0])).contains("label 2"));
    let unnormalized = Tensor::from_rows(&[[0.5, 0.6]]).unwrap();
    assert!(e(negative_log_likelihood(&unnormalized, &[0])).contains("sum"));
    let negative = Tensor::from_rows(&[[1.5, -0.5]]).unwrap();
    assert!(e(brier_score(&negative, &[0])).contains("outside"));
    assert!(e(auroc(&[], &[1.0])).contains("each set"));
    assert!(e(auroc(&[f64::NAN], &[1.0])).contains("NaN"));
    let samples = vec![Tensor::vector(&[1.0, 2.0])];
    for level in [0.0, 1.0, f64::NAN] {
        assert!(e(interval_coverage(&samples, &[1.0, 2.0], level)).contains("level"));
    }
    assert!(e(interval_coverage(&samples, &[1.0], 0.5)).contains("targets"));
    assert!(pit_histogram(&samples, &[1.0, 2.0], 0).is_err());
    assert!(pit_histogram::<f64>(&[], &[1.0], 3).is_err());
}
