//! Layers. A layer owns [`Param`]s, never [`Var`]s: each call of
//! [`Module::forward`] reads its parameters onto the given tape, so the
//! gradient path from the loss to every parameter is rebuilt every step.

mod conv;
mod variational;

pub use conv::{Conv2dFlipout, Conv2dReparameterization, Conv2dVariational};
pub use variational::{
    BiasMode, DenseFlipout, DenseLocalReparameterization, DenseReparameterization,
    DenseVariational, Estimator, Flipout, KlFn, KlMethod, LocalReparameterization, Prior, PriorFn,
    Reparameterization, VariationalConfig,
};

use crate::error::{Error, Result};
use crate::params::{Param, ParamStore};
use crate::tape::{Tape, Var};
use crate::tensor::{Element, Tensor};
use rand::{Rng, RngExt};

/// A layer or a network: maps an input var to an output var on a tape.
pub trait Module<F: Element> {
    /// The forward pass. Stochastic layers draw their noise from `rng` and
    /// register their KL terms on `tape`.
    fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        rng: &mut dyn Rng,
    ) -> Result<Var<'t, F>>;

    /// The layer's name (prefix of its parameters and divergence nodes).
    fn name(&self) -> &str;
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

/// A deterministic fully connected layer `y = x W + b`, Glorot-uniform
/// initialized (`W ~ U(-sqrt(6 / (in + out)), +)`), zero bias.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let dense = Dense::new(&mut store, "dense", 3, 2, &mut rng)?;
/// let tape = Tape::new();
/// let y = dense.forward(&tape, &store, tape.constant(Tensor::zeros(&[4, 3])), &mut rng)?;
/// assert_eq!(y.shape(), vec![4, 2]);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Dense {
    name: String,
    kernel: Param,
    bias: Param,
    inputs: usize,
}

impl Dense {
    /// A dense layer with `inputs -> outputs` units; parameters `<name>/kernel`, `<name>/bias`.
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
        let limit = (6.0 / (inputs + outputs) as f64).sqrt();
        let kernel = store.try_add(
            format!("{name}/kernel"),
            uniform_init(&[inputs, outputs], limit, rng),
        )?;
        let bias = store.try_add(format!("{name}/bias"), Tensor::zeros(&[outputs]))?;
        Ok(Dense {
            name: name.to_string(),
            kernel,
            bias,
            inputs,
        })
    }
}

impl<F: Element> Module<F> for Dense {
    fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        _: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
        check_dense_input(&self.name, &x, self.inputs)?;
        x.matmul(tape.try_param(store, self.kernel)?)?
            .try_add(tape.try_param(store, self.bias)?)
    }
    fn name(&self) -> &str {
        &self.name
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
    fn forward<'t>(
        &self,
        _: &'t Tape<F>,
        _: &ParamStore<F>,
        x: Var<'t, F>,
        _: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
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
}

/// Reshapes `[N, ...]` to `[N, prod(...)]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl<F: Element> Module<F> for Flatten {
    fn forward<'t>(
        &self,
        _: &'t Tape<F>,
        _: &ParamStore<F>,
        x: Var<'t, F>,
        _: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
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
    fn forward<'t>(
        &self,
        _: &'t Tape<F>,
        _: &ParamStore<F>,
        x: Var<'t, F>,
        _: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
        x.max_pool2d(self.size, self.stride)
    }
    fn name(&self) -> &str {
        "max_pool2d"
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
/// let y = net.forward(&tape, &store, tape.constant(Tensor::zeros(&[5, 4])), &mut rng)?;
/// assert_eq!(y.shape(), vec![5, 1]);
/// assert_eq!(tape.divergences().len(), 2); // hidden/kernel_divergence, out/kernel_divergence
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
    fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        rng: &mut dyn Rng,
    ) -> Result<Var<'t, F>> {
        self.layers
            .iter()
            .try_fold(x, |h, layer| layer.forward(tape, store, h, rng))
    }
    fn name(&self) -> &str {
        "sequential"
    }
}
