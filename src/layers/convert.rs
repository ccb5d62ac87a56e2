//! Bayesian networks from deterministic ones: posterior means at trained
//! weights, optionally with MOPED scales (Krishnan, Subedar, Tickoo 2020).
//!
//! - [`initialize_from_deterministic`] starts an existing variational
//!   network at a trained deterministic twin: every posterior mean at the
//!   trained weight, every bias at the trained bias, and the posterior
//!   scales either kept or set to `delta · |w|`.
//! - [`variational_from_deterministic`] builds that twin from the trained
//!   network, with MOPED priors `N(w, delta · |w|)` if asked.
//!
//! Only `Dense` layers and activations convert; anything else is an error
//! naming the layer, and a refused conversion leaves the stores unchanged.

use super::linear_map::DenseMap;
use super::variational::{DenseVariational, Estimator, Flipout, LocalReparameterization};
use super::variational::{Prior, Reparameterization, VariationalConfig};
use super::{Activation, Dense, Module, Sequential};
use crate::autodiff::params::{Param, ParamStore};
use crate::distributions::Normal;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::Rng;
use std::sync::Arc;

/// The posterior scales after [`initialize_from_deterministic`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PosteriorScales {
    /// Keep the scales the layers were built with.
    Keep,
    /// MOPED: each weight's posterior scale is `delta · |w|` (at least
    /// `MIN_SCALE`).
    Moped {
        /// The proportionality constant (the paper uses 0.1).
        delta: f64,
    },
}

/// The smallest MOPED scale (a zero weight would otherwise get scale 0).
pub const MIN_SCALE: f64 = 1e-4;

/// The parameters of one dense variational layer (`rho`: none for sparse
/// variational dropout, whose weights' means are its `θ`).
struct VariationalParts {
    loc: Param,
    rho: Option<Param>,
    bias: Option<Param>,
}

/// The dense variational layer behind `m`, whatever its estimator.
fn variational_parts<F: Element>(m: &dyn Module<F>) -> Option<VariationalParts> {
    fn parts<F: Element, E: Estimator>(any: &dyn std::any::Any) -> Option<VariationalParts> {
        any.downcast_ref::<DenseVariational<F, E>>().map(|l| {
            let (loc, rho) = l.kernel_params();
            VariationalParts {
                loc,
                rho: Some(rho),
                bias: l.bias_loc(),
            }
        })
    }
    let any = m.as_any()?;
    let sparse = || {
        any.downcast_ref::<super::DenseSparseVd>()
            .map(|l| VariationalParts {
                loc: l.kernel_params().0,
                rho: None,
                bias: l.bias_param(),
            })
    };
    parts::<F, Flipout>(any)
        .or_else(|| parts::<F, Reparameterization>(any))
        .or_else(|| parts::<F, LocalReparameterization>(any))
        .or_else(sparse)
}

fn layer_error(i: usize, name: &str, what: String) -> Error {
    Error::invalid("convert", format!("layer {i} ('{name}'): {what}"))
}

/// `delta · |w|`, at least [`MIN_SCALE`].
fn moped_scale<F: Element>(w: &Tensor<F>, delta: f64) -> Tensor<F> {
    w.map(|v| (v.abs() * F::lit(delta)).max(F::lit(MIN_SCALE)))
}

fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            "convert",
            format!("MOPED's delta must be finite and > 0, got {delta}"),
        ))
    }
}

/// Starts the dense variational layers of `variational` at the trained
/// `Dense` layers of `deterministic` (layer by layer, in order; activations
/// must match): posterior means at the kernels, biases at the biases, and
/// the posterior scales as `scales` says.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::layers::convert::{initialize_from_deterministic, PosteriorScales};
/// let mut rng = StdRng::seed_from_u64(0);
/// let (mut trained, mut store) = (ParamStore::<f64>::new(), ParamStore::<f64>::new());
/// let det = Sequential::new().push(Dense::new(&mut trained, "out", 3, 1, &mut rng)?);
/// let bnn = Sequential::new().push(DenseFlipout::new(&mut store, "out", 3, 1, &mut rng)?);
/// initialize_from_deterministic(&bnn, &mut store, &det, &trained, PosteriorScales::Keep)?;
/// let x = Tensor::ones(&[1, 3]);
/// let tape = Tape::new();
/// let a = det.forward(&mut Forward::new(&tape, &trained, &mut rng), tape.constant(x.clone()))?;
/// let mut cx = Forward::new(&tape, &store, &mut rng).with_mode(SampleMode::PosteriorMean);
/// let b = bnn.forward(&mut cx, tape.constant(x))?;
/// assert_eq!(a.value(), b.value());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
///
/// # Errors
/// Networks of different lengths; a pair of layers that is not a `Dense`
/// and a dense variational layer (or two equal activations); kernels or
/// biases of different shapes; a variational layer without a bias where
/// the trained one has one; a non-positive `delta`; a posterior scale
/// `delta · |w|` that is not finite, or not above the layer's scale floor.
/// The store is unchanged on error.
pub fn initialize_from_deterministic<F: Element>(
    variational: &Sequential<F>,
    store: &mut ParamStore<F>,
    deterministic: &Sequential<F>,
    trained: &ParamStore<F>,
    scales: PosteriorScales,
) -> Result<()> {
    if let PosteriorScales::Moped { delta } = scales {
        check_delta(delta)?;
    }
    let (v, d) = (variational.layers(), deterministic.layers());
    if v.len() != d.len() {
        return Err(Error::invalid(
            "convert",
            format!(
                "the variational network has {} layers, the deterministic one {}",
                v.len(),
                d.len()
            ),
        ));
    }
    // every write, as the stored value it makes, validated before the
    // first is made (a scale that overflows, say, fails here)
    let mut writes: Vec<(Param, Tensor<F>)> = Vec::new();
    for (i, (vl, dl)) in v.iter().zip(d).enumerate() {
        let dense = dl.as_any().and_then(|a| a.downcast_ref::<Dense>());
        if let Some(dense) = dense {
            let parts = variational_parts(vl.as_ref()).ok_or_else(|| {
                layer_error(
                    i,
                    vl.name(),
                    "is not a dense variational layer, but its deterministic twin is Dense".into(),
                )
            })?;
            let w = trained.try_value(dense.kernel_param())?;
            let b = trained.try_value(dense.bias_param())?;
            let loc_shape = store.try_raw(parts.loc)?.shape().to_vec();
            if w.shape() != loc_shape.as_slice() {
                return Err(layer_error(
                    i,
                    vl.name(),
                    format!(
                        "kernel {:?} does not match the trained {:?}",
                        loc_shape,
                        w.shape()
                    ),
                ));
            }
            let bias = parts.bias.ok_or_else(|| {
                layer_error(
                    i,
                    vl.name(),
                    "has no bias, but the trained layer has one (use BiasMode::Deterministic)"
                        .into(),
                )
            })?;
            if store.try_raw(bias)?.shape() != b.shape() {
                return Err(layer_error(
                    i,
                    vl.name(),
                    "bias shape differs from the trained one".into(),
                ));
            }
            if let PosteriorScales::Moped { delta } = scales {
                let rho = parts.rho.ok_or_else(|| {
                    layer_error(
                        i,
                        vl.name(),
                        "has no posterior scales to set (sparse variational dropout)".into(),
                    )
                })?;
                writes.push((rho, store.raw_for(rho, moped_scale(&w, delta))?));
            }
            writes.push((parts.loc, store.raw_for(parts.loc, w)?));
            writes.push((bias, store.raw_for(bias, b)?));
            continue;
        }
        let same_activation = match (
            vl.as_any().and_then(|a| a.downcast_ref::<Activation>()),
            dl.as_any().and_then(|a| a.downcast_ref::<Activation>()),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if !same_activation {
            return Err(layer_error(
                i,
                dl.name(),
                format!(
                    "cannot pair '{}' with '{}': only Dense layers and equal activations convert",
                    dl.name(),
                    vl.name()
                ),
            ));
        }
    }
    for (p, raw) in writes {
        store.set_raw(p, raw)?;
    }
    Ok(())
}

/// The variational twin of a trained network of `Dense` layers and
/// activations: each `Dense` becomes a [`DenseVariational`] with estimator
/// `E`, the same name and `config`, started by
/// [`initialize_from_deterministic`]. With `moped: Some(delta)`, each
/// layer's prior is `N(w, delta · |w|)` per weight and its posterior scales
/// start at `delta · |w|` (MOPED); with `None` the prior is `config`'s and
/// the scales are drawn as `config` says.
///
/// # Errors
/// A layer other than `Dense` or an activation; `config.bias` other than
/// `BiasMode::Deterministic` (the trained bias is kept as is); parameter
/// names taken in `store`; a non-positive `delta`, or one whose scales
/// `delta · |w|` are not finite. The store is unchanged on error: the
/// parameters of the layers made before the failure are removed again.
pub fn variational_from_deterministic<F: Element, E: Estimator>(
    deterministic: &Sequential<F>,
    trained: &ParamStore<F>,
    store: &mut ParamStore<F>,
    config: &VariationalConfig<F>,
    moped: Option<f64>,
    rng: &mut dyn Rng,
) -> Result<Sequential<F>> {
    if let Some(delta) = moped {
        check_delta(delta)?;
    }
    if config.bias != super::BiasMode::Deterministic {
        return Err(Error::invalid(
            "convert",
            "the conversion keeps the trained bias: use BiasMode::Deterministic",
        ));
    }
    // every layer converts (the loop below passes over any other kind);
    // names taken and trained values missing fail inside `adding`
    for (i, l) in deterministic.layers().iter().enumerate() {
        let any = l.as_any();
        let dense = any.and_then(|a| a.downcast_ref::<Dense>()).is_some();
        if !dense && any.and_then(|a| a.downcast_ref::<Activation>()).is_none() {
            return Err(layer_error(
                i,
                l.name(),
                "only Dense layers and activations convert".into(),
            ));
        }
    }
    // the layers add their parameters as they are made: a failure after
    // the first (a MOPED scale that overflows, say) removes them again
    store.adding(|store| {
        let mut net = Sequential::new();
        for l in deterministic.layers() {
            let any = l.as_any();
            if let Some(&a) = any.and_then(|a| a.downcast_ref::<Activation>()) {
                net = net.push(a);
                continue;
            }
            let Some(dense) = any.and_then(|a| a.downcast_ref::<Dense>()) else {
                continue;
            };
            let w = trained.try_value(dense.kernel_param())?;
            let mut cfg = config.clone();
            if let Some(delta) = moped {
                let (loc, scale) = (Arc::new(w.clone()), Arc::new(moped_scale(&w, delta)));
                cfg.prior = Prior::custom(move |tape, _, _| {
                    Ok(Box::new(Normal::new(
                        tape.constant((*loc).clone()),
                        tape.constant((*scale).clone()),
                    )?))
                });
            }
            let map = DenseMap {
                inputs: w.shape()[0],
                outputs: w.shape()[1],
            };
            let name = Module::<F>::name(dense).to_string();
            net = net.push(DenseVariational::<F, E>::from_map(
                store, &name, map, cfg, rng,
            )?);
        }
        let scales = match moped {
            Some(delta) => PosteriorScales::Moped { delta },
            None => PosteriorScales::Keep,
        };
        initialize_from_deterministic(&net, store, deterministic, trained, scales)?;
        Ok(net)
    })
}
