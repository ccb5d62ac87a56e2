//! The linear maps a variational layer can wrap: a dense product and a 2-D
//! convolution. A [`LinearMap`] knows its kernel's shape, checks its input
//! and applies a kernel; the estimator decides which kernel (or kernels).

use super::check_dense_input;
use crate::autodiff::ops::Padding;
use crate::autodiff::tape::Var;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};

/// A linear map `y = x ⊛ W` with a kernel `W` of a fixed shape.
///
/// [`Variational`](super::Variational) layers are generic over it, so the
/// dense and the convolutional layers share one implementation of every
/// estimator, the posterior and the divergence.
pub trait LinearMap<F: Element>: Send + Sync + 'static {
    /// The kernel's shape.
    fn kernel_shape(&self) -> Vec<usize>;
    /// The number of output units (the width of a bias).
    fn outputs(&self) -> usize;
    /// Errors unless `x` is an input this map takes, naming the layer.
    fn check_input(&self, layer: &str, x: &Var<'_, F>) -> Result<()>;
    /// `x ⊛ kernel`.
    fn apply<'t>(&self, x: Var<'t, F>, kernel: Var<'t, F>) -> Result<Var<'t, F>>;
    /// `(x1 ⊛ kernel1, x2 ⊛ kernel2)`: the two products of a local
    /// reparameterization (the mean's and the variance's). The default
    /// applies them one after the other; [`DenseMap`] computes them side
    /// by side.
    fn apply_pair<'t>(
        &self,
        (x1, kernel1): (Var<'t, F>, Var<'t, F>),
        (x2, kernel2): (Var<'t, F>, Var<'t, F>),
    ) -> Result<(Var<'t, F>, Var<'t, F>)> {
        Ok((self.apply(x1, kernel1)?, self.apply(x2, kernel2)?))
    }
    /// `K` products at once, for a pass with a sample axis: block `k` of
    /// `x` (its rows `k·B .. (k+1)·B` of `K·B`) with `kernels[k]`
    /// (`kernels: [K, ...kernel_shape]`), the outputs in the same row
    /// order. The default slices the blocks and joins their outputs.
    fn apply_samples<'t>(
        &self,
        x: Var<'t, F>,
        kernels: Var<'t, F>,
        k: usize,
    ) -> Result<Var<'t, F>> {
        let b = x.shape()[0] / k.max(1);
        let outputs = (0..k)
            .map(|i| self.apply(x.slice(0, i * b, (i + 1) * b)?, kernels.index(i)?))
            .collect::<Result<Vec<_>>>()?;
        Var::concat(&outputs, 0)
    }
    /// Flipout's output `x ⊛ loc + ((x ∘ s_in) ⊛ delta) ∘ s_out`, with
    /// signs `s_in: [batch, inputs]` and `s_out: [batch, outputs]` (inputs
    /// and outputs are the kernel's last two axes).
    fn flipout<'t>(
        &self,
        x: Var<'t, F>,
        loc: Var<'t, F>,
        delta: Var<'t, F>,
        signs: (Tensor<F>, Tensor<F>),
    ) -> Result<Var<'t, F>>;
    /// [`flipout`](LinearMap::flipout) followed by the layer's
    /// [`Epilogue`]. The default applies the epilogue as separate ops;
    /// [`Conv2dMap`] adds the bias and pools inside the convolution, each
    /// image while it is in cache.
    fn flipout_with<'t>(
        &self,
        x: Var<'t, F>,
        (loc, delta): (Var<'t, F>, Var<'t, F>),
        signs: (Tensor<F>, Tensor<F>),
        epilogue: Epilogue<'t, F>,
    ) -> Result<Var<'t, F>> {
        epilogue.apply(self.flipout(x, loc, delta, signs)?)
    }
}

/// What a layer applies after its linear map in one stochastic pass: its
/// deterministic bias, then max pooling over `k x k` windows with stride
/// `k` when the layer is followed by a [`MaxPool2d`](super::MaxPool2d) (in
/// a [`Sequential`](super::Sequential)). An estimator may take it from the
/// [`PosteriorPass`](super::PosteriorPass) and hand it to
/// [`LinearMap::flipout_with`], which may fuse it; the layer applies
/// whatever was not taken.
#[derive(Debug, Clone, Copy)]
#[must_use = "a taken epilogue must be applied (`Epilogue::apply`, `LinearMap::flipout_with`), or the bias and pooling are lost"]
pub struct Epilogue<'t, F: Element> {
    /// The bias (`[outputs]`), added along the last axis.
    pub bias: Option<Var<'t, F>>,
    /// The side (and stride) of the pooling windows.
    pub max_pool: Option<usize>,
}

impl<'t, F: Element> Epilogue<'t, F> {
    /// Nothing to apply.
    pub fn none() -> Self {
        Epilogue {
            bias: None,
            max_pool: None,
        }
    }

    /// `y` plus the bias, then pooled: the epilogue as separate ops.
    pub fn apply(self, y: Var<'t, F>) -> Result<Var<'t, F>> {
        let y = match self.bias {
            Some(b) => y.try_add(b)?,
            None => y,
        };
        match self.max_pool {
            Some(k) => y.max_pool2d(k, k),
            None => Ok(y),
        }
    }
}

/// `y = x W` for `x: [batch, inputs]`, `W: [inputs, outputs]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseMap {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

impl<F: Element> LinearMap<F> for DenseMap {
    fn kernel_shape(&self) -> Vec<usize> {
        vec![self.inputs, self.outputs]
    }
    fn outputs(&self) -> usize {
        self.outputs
    }
    fn check_input(&self, layer: &str, x: &Var<'_, F>) -> Result<()> {
        check_dense_input(layer, x, self.inputs)
    }
    fn apply<'t>(&self, x: Var<'t, F>, kernel: Var<'t, F>) -> Result<Var<'t, F>> {
        x.matmul(kernel)
    }
    fn apply_pair<'t>(
        &self,
        first: (Var<'t, F>, Var<'t, F>),
        second: (Var<'t, F>, Var<'t, F>),
    ) -> Result<(Var<'t, F>, Var<'t, F>)> {
        Var::matmul_pair(first, second)
    }
    /// One batched product `[K, B, in] @ [K, in, out]`.
    fn apply_samples<'t>(
        &self,
        x: Var<'t, F>,
        kernels: Var<'t, F>,
        k: usize,
    ) -> Result<Var<'t, F>> {
        let rows = x.shape()[0];
        let b = rows / k.max(1);
        x.reshape(&[k, b, self.inputs])?
            .batched_matmul(kernels)?
            .reshape(&[rows, self.outputs])
    }
    fn flipout<'t>(
        &self,
        x: Var<'t, F>,
        loc: Var<'t, F>,
        delta: Var<'t, F>,
        (s_in, s_out): (Tensor<F>, Tensor<F>),
    ) -> Result<Var<'t, F>> {
        let (mean, perturbation) = Var::matmul_pair((x, loc), (x * s_in, delta))?;
        Ok(mean + perturbation * s_out)
    }
}

/// A 2-D convolution over NHWC input with a square kernel
/// `[size, size, in_channels, out_channels]`; stride 1 and
/// [`Padding::Valid`] unless set.
///
/// ```
/// use bayesgrad::prelude::*;
/// let map = Conv2dMap::new(3, 8, 5).stride(2).padding(Padding::Same);
/// assert_eq!(LinearMap::<f32>::kernel_shape(&map), vec![5, 5, 3, 8]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dMap {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel_size: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Padding.
    pub padding: Padding,
}

impl Conv2dMap {
    /// `in_channels -> out_channels` with a `kernel_size x kernel_size`
    /// kernel, stride 1, no padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv2dMap {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: Padding::Valid,
        }
    }

    /// The same map with another stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// The same map with another padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
}

impl<F: Element> LinearMap<F> for Conv2dMap {
    fn kernel_shape(&self) -> Vec<usize> {
        vec![
            self.kernel_size,
            self.kernel_size,
            self.in_channels,
            self.out_channels,
        ]
    }
    fn outputs(&self) -> usize {
        self.out_channels
    }
    fn check_input(&self, layer: &str, x: &Var<'_, F>) -> Result<()> {
        let s = x.shape();
        if s.len() != 4 || s[0] == 0 || s[3] != self.in_channels {
            return Err(Error::LayerInput {
                layer: layer.to_string(),
                expected: format!("NHWC [batch > 0, height, width, {}]", self.in_channels),
                found: s,
            });
        }
        Ok(())
    }
    fn apply<'t>(&self, x: Var<'t, F>, kernel: Var<'t, F>) -> Result<Var<'t, F>> {
        x.conv2d(kernel, self.stride, self.padding)
    }
    fn flipout<'t>(
        &self,
        x: Var<'t, F>,
        loc: Var<'t, F>,
        delta: Var<'t, F>,
        (s_in, s_out): (Tensor<F>, Tensor<F>),
    ) -> Result<Var<'t, F>> {
        x.conv2d_flipout(loc, delta, &s_in, &s_out, self.stride, self.padding)
    }
    fn flipout_with<'t>(
        &self,
        x: Var<'t, F>,
        kernel: (Var<'t, F>, Var<'t, F>),
        (s_in, s_out): (Tensor<F>, Tensor<F>),
        Epilogue { bias, max_pool }: Epilogue<'t, F>,
    ) -> Result<Var<'t, F>> {
        let geometry = (self.stride, self.padding);
        x.conv2d_flipout_fused(kernel, (&s_in, &s_out), geometry, (bias, max_pool))
    }
}
