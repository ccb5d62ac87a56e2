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
