//! Layers. A layer owns [`Param`]s, never [`Var`]s: each call of
//! [`Module::forward`] reads its parameters onto the given tape, so the
//! gradient path from the loss to every parameter is rebuilt every step.

pub mod convert;
mod head;
mod hierarchical;
mod linear_map;
mod meanfield;
pub mod metrics;
pub mod predict;
mod sample_axis;
mod sparse;
mod spike_slab;
mod variational;

pub use head::{BoxedDistribution, DistributionHead, HeadFn};
pub use hierarchical::{HierarchicalScale, ScalePrior};
pub use linear_map::{Conv2dMap, DenseMap, Epilogue, LinearMap};
pub use sparse::{DenseSparseVd, SparseVariational, SparseVdConfig};
pub use spike_slab::{DenseSpikeAndSlab, Selection, SpikeAndSlabConfig, SpikeAndSlabVariational};
pub use variational::{
    BiasMode, Conv2dFlipout, Conv2dLocalReparameterization, Conv2dReparameterization,
    Conv2dVariational, DenseFlipout, DenseLocalReparameterization, DenseReparameterization,
    DenseVariational, Estimator, Flipout, KlFn, KlMethod, LocalReparameterization, PosteriorPass,
    Prior, PriorFn, Reparameterization, Variational, VariationalConfig,
};

use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::Var;
use crate::bayes::forward::Forward;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use rand::{Rng, RngExt};

/// A layer or a network: maps an input var to an output var in one
/// forward pass.
///
/// A layer owns [`Param`]s and reads them through the [`Forward`] context
/// on every call ([`Forward::param`]); a stochastic layer draws from
/// [`Forward::rng`], honours [`Forward::mode`] and registers its KL terms
/// with [`Forward::add_divergence`] or [`Forward::add_kl`]. Layers are
/// `Send + Sync`, so a trained model can be shared between threads.
///
/// ```
/// use bayesgrad::prelude::*;
///
/// /// `y = x * exp(log_gain)`, one gain per feature, with a N(0, 1) prior
/// /// on the log-gain registered as an analytic divergence.
/// struct LogGain { log_gain: Param }
///
/// impl Module<f64> for LogGain {
///     fn forward<'t>(&self, cx: &mut Forward<'t, '_, f64>, x: Var<'t, f64>) -> Result<Var<'t, f64>> {
///         let g = cx.param(self.log_gain)?;
///         let tape = cx.tape();
///         let q = Normal::new(g, tape.scalar(1.0))?;
///         cx.add_kl("gain/divergence", &q, &Normal::standard(tape, &[]), Divergence::Analytic)?;
///         x.try_mul(g.exp())
///     }
///     fn name(&self) -> &str { "gain" }
/// }
///
/// let mut store = ParamStore::<f64>::new();
/// let layer = LogGain { log_gain: store.add("gain/log_gain", Tensor::vector(&[0.0, 0.5])) };
/// let mut rng = StdRng::seed_from_u64(0);
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = layer.forward(&mut cx, tape.constant(Tensor::vector(&[2.0, 2.0])))?;
/// assert!((y.value().data()[1] - 2.0 * 0.5f64.exp()).abs() < 1e-12);
/// assert_eq!(cx.divergences().len(), 1);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub trait Module<F: Element>: Send + Sync {
    /// The forward pass of `x` in the pass `cx`.
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>>;

    /// The layer's name (prefix of its parameters and divergence nodes).
    fn name(&self) -> &str;

    /// The forward pass followed by max pooling over `size x size` windows
    /// with `stride` (NHWC, VALID), which [`Sequential`] calls for a layer
    /// followed by a [`MaxPool2d`]. The default runs the two one after the
    /// other; a layer may fuse them (a Flipout convolution pools each image
    /// as soon as it is computed, and never stores the full-size output).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let mut store = ParamStore::<f32>::new();
    /// let map = Conv2dMap::new(3, 8, 3).padding(Padding::Same);
    /// let conv = Conv2dFlipout::new(&mut store, "conv", map, &mut StdRng::seed_from_u64(0))?;
    /// let tape = Tape::new();
    /// let x = tape.constant(Tensor::from_fn(&[2, 8, 8, 3], |i| (i as f32 * 0.1).sin()));
    /// // the same draws (one seed) for the fused and the separate ops
    /// let (mut a, mut b) = (StdRng::seed_from_u64(1), StdRng::seed_from_u64(1));
    /// let pooled = conv.forward_max_pooled(&mut Forward::new(&tape, &store, &mut a), x, (2, 2))?;
    /// let apart = conv.forward(&mut Forward::new(&tape, &store, &mut b), x)?.max_pool2d(2, 2)?;
    /// assert_eq!(pooled.shape(), [2, 4, 4, 8]);
    /// assert_eq!(pooled.value().data(), apart.value().data());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    fn forward_max_pooled<'t>(
        &self,
        cx: &mut Forward<'t, '_, F>,
        x: Var<'t, F>,
        (size, stride): (usize, usize),
    ) -> Result<Var<'t, F>> {
        self.forward(cx, x)?.max_pool2d(size, stride)
    }

    /// The layer as [`Any`](std::any::Any), for code that needs its
    /// concrete type (the conversions of [`convert`]); `None` by default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Errors unless `x` is `[batch > 0, width]`.
pub(crate) fn check_dense_input<F: Element>(
    layer: &str,
    x: &Var<'_, F>,
    width: usize,
) -> Result<()> {
    let s = x.shape();
    if s.len() != 2 || s[0] == 0 || s[1] != width {
        return Err(Error::LayerInput {
            layer: layer.to_string(),
            expected: format!("[batch > 0, {width}]"),
            found: s,
        });
    }
    Ok(())
}

/// Uniform samples in `[-limit, limit]`.
pub(crate) fn uniform_init<F: Element>(
    shape: &[usize],
    limit: f64,
    rng: &mut dyn Rng,
) -> Tensor<F> {
    Tensor::from_fn(shape, |_| F::lit(rng.random_range(-limit..=limit)))
}

/// The error of a layer that cannot take a pass with a sample axis.
pub(crate) fn no_sample_axis(layer: &str, why: &str) -> Error {
    Error::invalid(
        "SampleMode::SampleAxis",
        format!(
            "layer '{layer}' has no per-sample weights for the importance-weighted bound: {why}"
        ),
    )
}

/// A deterministic fully connected layer `y = x W + b`, Glorot-uniform
/// initialized (`W ~ U(-sqrt(6 / (in + out)), +)`), zero bias.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let dense = Dense::new(&mut store, "dense", 3, 2, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = dense.forward(&mut cx, tape.constant(Tensor::zeros(&[4, 3])))?;
/// assert_eq!(y.shape(), vec![4, 2]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Debug)]
pub struct Dense {
    name: String,
    kernel: Param,
    bias: Param,
    inputs: usize,
}

impl Dense {
    /// A dense layer with `inputs -> outputs` units; parameters `<name>/kernel`, `<name>/bias`.
    ///
    /// # Errors
    /// Zero inputs or outputs; a kernel too large to allocate; a name whose
    /// parameters are in the store already. Nothing is added to the store
    /// on error.
    pub fn new<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        inputs: usize,
        outputs: usize,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        if inputs == 0 || outputs == 0 {
            return Err(Error::invalid(
                "Dense::new",
                format!("layer '{name}' needs inputs and outputs >= 1"),
            ));
        }
        crate::tensor::checked_alloc::<F>(&format!("layer '{name}'"), &[inputs, outputs])?;
        let limit = (6.0 / (inputs as f64 + outputs as f64)).sqrt();
        let (kernel, bias) = store.adding(|store| {
            let kernel = store.try_add(
                format!("{name}/kernel"),
                uniform_init(&[inputs, outputs], limit, rng),
            )?;
            Ok((
                kernel,
                store.try_add(format!("{name}/bias"), Tensor::zeros(&[outputs]))?,
            ))
        })?;
        Ok(Dense {
            name: name.to_string(),
            kernel,
            bias,
            inputs,
        })
    }
}

impl Dense {
    /// The kernel parameter (`[inputs, outputs]`).
    pub fn kernel_param(&self) -> Param {
        self.kernel
    }

    /// The bias parameter (`[outputs]`).
    pub fn bias_param(&self) -> Param {
        self.bias
    }

    /// The input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }
}

impl<F: Element> Module<F> for Dense {
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        check_dense_input(&self.name, &x, self.inputs)?;
        x.matmul(cx.param(self.kernel)?)?
            .try_add(cx.param(self.bias)?)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// An elementwise activation as a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `ln(1 + e^x)`.
    Softplus,
}

impl<F: Element> Module<F> for Activation {
    fn forward<'t>(&self, _: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        Ok(match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Softplus => x.softplus(),
        })
    }
    fn name(&self) -> &str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Softplus => "softplus",
        }
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Reshapes `[N, ...]` to `[N, prod(...)]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl<F: Element> Module<F> for Flatten {
    fn forward<'t>(&self, _: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let s = x.shape();
        if s.is_empty() {
            return Err(Error::LayerInput {
                layer: "flatten".into(),
                expected: "[batch, ...]".into(),
                found: s,
            });
        }
        x.reshape(&[s[0], s[1..].iter().product()])
    }
    fn name(&self) -> &str {
        "flatten"
    }
}

/// Max pooling over `size x size` windows (NHWC, VALID padding).
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d {
    /// Window size.
    pub size: usize,
    /// Stride.
    pub stride: usize,
}

impl<F: Element> Module<F> for MaxPool2d {
    fn forward<'t>(&self, _: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        x.max_pool2d(self.size, self.stride)
    }
    fn name(&self) -> &str {
        "max_pool2d"
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Layers applied in order.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f32>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let net = Sequential::new()
///     .push(DenseFlipout::new(&mut store, "hidden", 4, 8, &mut rng)?)
///     .push(Activation::Relu)
///     .push(DenseFlipout::new(&mut store, "out", 8, 1, &mut rng)?);
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = net.forward(&mut cx, tape.constant(Tensor::zeros(&[5, 4])))?;
/// assert_eq!(y.shape(), vec![5, 1]);
/// assert_eq!(cx.divergences().len(), 2); // hidden/kernel_divergence, out/kernel_divergence
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Sequential<F: Element> {
    layers: Vec<Box<dyn Module<F>>>,
}

impl<F: Element> Default for Sequential<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Element> Sequential<F> {
    /// An empty network (the identity).
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer.
    pub fn push(mut self, layer: impl Module<F> + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a boxed layer.
    pub fn push_boxed(mut self, layer: Box<dyn Module<F>>) -> Self {
        self.layers.push(layer);
        self
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Module<F>>] {
        &self.layers
    }
}

impl<F: Element> Module<F> for Sequential<F> {
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        let any = |j: usize| self.layers.get(j).and_then(|l| l.as_any());
        let relu = |j: usize| {
            let a = any(j).and_then(|a| a.downcast_ref::<Activation>());
            matches!(a, Some(Activation::Relu))
        };
        let pool = |j: usize| {
            let p = any(j).and_then(|a| a.downcast_ref::<MaxPool2d>());
            p.map(|p| (p.size, p.stride))
        };
        let mut h = x;
        let mut i = 0;
        while i < self.layers.len() {
            // A ReLU followed by max-pooling runs as max-pooling then ReLU,
            // on a quarter of the elements: both keep order (and NaN), so
            // they commute exactly, values and gradients alike
            // (`relu_then_pool_runs_as_pool_then_relu_with_the_same_bits`).
            // The layer before them, or before a max-pooling alone, is
            // asked for its output pooled, which it may fuse.
            if let (true, Some(window)) = (relu(i), pool(i + 1)) {
                h = h.max_pool2d(window.0, window.1)?.relu();
                i += 2;
            } else if let (true, Some(window)) = (relu(i + 1), pool(i + 2)) {
                h = self.layers[i].forward_max_pooled(cx, h, window)?.relu();
                i += 3;
            } else if let Some(window) = pool(i + 1) {
                h = self.layers[i].forward_max_pooled(cx, h, window)?;
                i += 2;
            } else {
                h = self.layers[i].forward(cx, h)?;
                i += 1;
            }
        }
        Ok(h)
    }
    fn name(&self) -> &str {
        "sequential"
    }
}
