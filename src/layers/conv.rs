//! Variational 2-D convolutions (NHWC).

use super::variational::{
    noise, rademacher, register_divergence, Bias, EstimatorKind, MeanField, PassSample,
};
use super::{Estimator, Flipout, Module, Reparameterization, VariationalConfig};
use crate::error::{Error, Result};
use crate::ops::Padding;
use crate::params::{Param, ParamStore};
use crate::tape::{SampleMode, Tape, Var};
use crate::tensor::Element;
use rand::Rng;
use std::marker::PhantomData;

/// A 2-D convolution with a mean-field Normal posterior over its kernel
/// `[KH, KW, C_in, C_out]`, NHWC input, trained by the estimator `E`
/// (reparameterization or Flipout). Registers `<name>/kernel_divergence`
/// on every forward pass, like [`DenseVariational`](super::DenseVariational).
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f32>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let conv = Conv2dFlipout::new(&mut store, "conv", 3, 8, 3, 1, Padding::Same, &mut rng)?;
/// let tape = Tape::new();
/// let y = conv.forward(&tape, &store, tape.constant(Tensor::zeros(&[2, 5, 5, 3])), &mut rng)?;
/// assert_eq!(y.shape(), vec![2, 5, 5, 8]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Conv2dVariational<F: Element, E: Estimator> {
    name: String,
    in_channels: usize,
    kernel: MeanField,
    bias: Bias,
    stride: usize,
    padding: Padding,
    config: VariationalConfig<F>,
    _estimator: PhantomData<E>,
}

/// [`Conv2dVariational`] with the reparameterization estimator (`tfp.layers.Convolution2DReparameterization`).
pub type Conv2dReparameterization<F> = Conv2dVariational<F, Reparameterization>;
/// [`Conv2dVariational`] with Flipout (`tfp.layers.Convolution2DFlipout`).
pub type Conv2dFlipout<F> = Conv2dVariational<F, Flipout>;

impl<F: Element, E: Estimator> Conv2dVariational<F, E> {
    /// A square `kernel_size` convolution with TFP's default posterior and prior.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore<F>,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: Padding,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        Self::with_config(
            store,
            name,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            VariationalConfig::default(),
            rng,
        )
    }

    /// A convolution with explicit settings.
    #[allow(clippy::too_many_arguments)]
    pub fn with_config(
        store: &mut ParamStore<F>,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: Padding,
        config: VariationalConfig<F>,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        if E::KIND == EstimatorKind::LocalReparameterization {
            return Err(Error::invalid(
                "Conv2dVariational::new",
                "local reparameterization is offered for dense layers only",
            ));
        }
        if in_channels == 0 || out_channels == 0 || kernel_size == 0 || stride == 0 {
            return Err(Error::invalid(
                "Conv2dVariational::new",
                format!("layer '{name}': channels, kernel size and stride must be >= 1"),
            ));
        }
        let shape = [kernel_size, kernel_size, in_channels, out_channels];
        let kernel = MeanField::new(
            store,
            &format!("{name}/kernel_posterior"),
            &shape,
            &config,
            rng,
        )?;
        let bias = Bias::new(store, name, out_channels, &config, rng)?;
        Ok(Conv2dVariational {
            name: name.to_string(),
            in_channels,
            kernel,
            bias,
            stride,
            padding,
            config,
            _estimator: PhantomData,
        })
    }

    /// The kernel posterior's `loc` and `rho` parameters.
    pub fn kernel_params(&self) -> (Param, Param) {
        (self.kernel.loc, self.kernel.rho)
    }
}

impl<F: Element, E: Estimator> Module<F> for Conv2dVariational<F, E> {
    fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        rng: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
        let s = x.shape();
        if s.len() != 4 || s[0] == 0 || s[3] != self.in_channels {
            return Err(Error::LayerInput {
                layer: self.name.clone(),
                expected: format!("NHWC [batch > 0, height, width, {}]", self.in_channels),
                found: s,
            });
        }
        let shape = self.kernel.shape.clone();
        let (stride, padding) = (self.stride, self.padding);
        let flipout = |loc: Var<'t, F>, delta: Var<'t, F>, rng: &mut dyn Rng| {
            let s_in = rademacher(&[s[0], shape[2]], rng);
            let s_out = rademacher(&[s[0], shape[3]], rng);
            x.conv2d_flipout(loc, delta, &s_in, &s_out, stride, padding)
        };
        let output = |loc: Var<'t, F>, delta, rng: &mut dyn Rng| match E::KIND {
            EstimatorKind::Flipout => flipout(loc, delta, rng),
            _ => x.conv2d(loc + delta, stride, padding),
        };
        let fused =
            self.kernel
                .forward_fused(tape, store, &self.name, &self.config, rng, output)?;
        if let Some(y) = fused {
            return self
                .bias
                .apply(tape, store, &self.name, y, &self.config, rng);
        }
        let q = self.kernel.read(tape, store)?;
        let (loc, scale) = (q.loc(), q.scale());
        let (y, sample) = match (tape.mode(), E::KIND) {
            (SampleMode::PosteriorMean, _) => {
                (x.conv2d(loc, stride, padding)?, PassSample::Weights(loc))
            }
            (_, EstimatorKind::Flipout) => {
                let delta = scale * noise(&shape, rng);
                (flipout(loc, delta, rng)?, PassSample::Perturbation(delta))
            }
            _ => {
                let w = loc + scale * noise(&shape, rng);
                (x.conv2d(w, stride, padding)?, PassSample::Weights(w))
            }
        };
        register_divergence(
            tape,
            store,
            format!("{}/kernel_divergence", self.name),
            &q,
            || sample.weights(loc, scale, &shape, rng),
            &self.config,
            &shape,
        )?;
        self.bias
            .apply(tape, store, &self.name, y, &self.config, rng)
    }
    fn name(&self) -> &str {
        &self.name
    }
}
