//! Sparse variational dropout (Molchanov, Ashukha, Vetrov 2017).

use super::linear_map::{DenseMap, LinearMap};
use super::{Module, no_sample_axis};
use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::{Op, Var};
use crate::bayes::forward::{Forward, SampleMode};
use crate::error::{Error, Result};
use crate::kernels::parallel::{par_fill, par_sum2};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// The constants of the KL approximation of Molchanov et al. (2017), eq. 14.
const K1: f64 = 0.63576;
const K2: f64 = 1.87320;
const K3: f64 = 1.48695;

/// `ln α = ln σ² - ln(θ² + 10⁻¹⁶)` of one weight.
#[inline(always)]
fn log_alpha_of<F: Element>(theta: F, log_sigma2: F) -> F {
    log_sigma2 - (theta * theta + F::lit(1e-16)).fast_ln()
}

/// One weight's term of the KL approximation, `-(k1 σ(k2 + k3 ln α) -
/// softplus(-ln α) / 2 - k1)`, and its derivative in `ln α`.
#[inline(always)]
fn kl_term<F: Element>(log_alpha: F) -> (F, F) {
    let (k1, k2, k3, half) = (F::lit(K1), F::lit(K2), F::lit(K3), F::lit(0.5));
    let s = (k2 + k3 * log_alpha).fast_sigmoid();
    let (softplus, sigmoid) = (-log_alpha).fast_softplus_sigmoid();
    let kl = k1 - k1 * s + half * softplus;
    // d softplus(-a)/da = -sigmoid(-a)
    let slope = -(k1 * k3 * s * (F::one() - s)) - half * sigmoid;
    (kl, slope)
}

/// The KL approximation summed over the weights, from `θ` and `ln σ²` in
/// one pass, its gradient in one more: the dozen elementwise tape nodes
/// it replaces each made a weight-sized tensor forward and backward.
struct SparseVdKl;

impl<F: Element> Op<F> for SparseVdKl {
    fn name(&self) -> &str {
        "sparse_vd_kl"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (theta, ls2) = (inputs[0].data(), inputs[1].data());
        let kl = par_sum2(
            theta,
            ls2,
            #[inline(always)]
            |t, l| kl_term(log_alpha_of(t, l)).0,
        );
        Ok(Tensor::scalar(kl))
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let (theta, ls2) = (inputs[0], inputs[1]);
        let g = g.data()[0];
        // d/d ln σ² = g dKL/d ln α; d/dθ = that times d ln α/dθ = -2θ / (θ² + ε)
        let mut d_ls2 = Tensor::zeros(ls2.shape());
        let (t, l) = (theta.data(), ls2.data());
        par_fill(
            d_ls2.data_mut(),
            #[inline(always)]
            |i, out| {
                for ((o, &t), &l) in out.iter_mut().zip(&t[i..]).zip(&l[i..]) {
                    *o = g * kl_term(log_alpha_of(t, l)).1;
                }
            },
        );
        let mut d_theta = Tensor::zeros(theta.shape());
        let d = d_ls2.data();
        par_fill(
            d_theta.data_mut(),
            #[inline(always)]
            |i, out| {
                for ((o, &t), &d) in out.iter_mut().zip(&t[i..]).zip(&d[i..]) {
                    *o = -d * (t + t) / (t * t + F::lit(1e-16));
                }
            },
        );
        Ok(vec![Some(d_theta), Some(d_ls2)])
    }
}

/// Settings of a [`SparseVariational`] layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseVdConfig {
    /// The weights `θ` start at `N(0, theta_init_std)`.
    pub theta_init_std: f64,
    /// `ln σ²` of every weight starts here (the paper: -10, nearly deterministic).
    pub log_sigma2_init: f64,
    /// Weights with `ln α` above this are pruned (set to 0) in the
    /// posterior-mean network (the paper: 3, i.e. `α > 20`).
    pub log_alpha_threshold: f64,
    /// Whether the layer has a (deterministic) bias.
    pub bias: bool,
}

impl Default for SparseVdConfig {
    fn default() -> Self {
        SparseVdConfig {
            theta_init_std: 0.1,
            log_sigma2_init: -10.0,
            log_alpha_threshold: 3.0,
            bias: true,
        }
    }
}

/// A linear map with sparse variational dropout: each weight is
/// `w = θ (1 + sqrt(α) ε)`, i.e. `N(θ, σ²)` with `σ² = α θ²`, parameterized
/// additively by `θ` and `ln σ²` (the paper's variance reduction).
///
/// - **Sampling**: local reparameterization, `y = x ⊛ θ + sqrt(x² ⊛ σ²) ε` (+ bias).
/// - **Divergence**: the log-uniform prior's KL, approximated as
///   `-KL ≈ k1 sigmoid(k2 + k3 ln α) - softplus(-ln α) / 2 - k1` per weight,
///   registered as `<name>/kernel_divergence`.
/// - **Pruning**: in [`SampleMode::PosteriorMean`] the weights with
///   `ln α > log_alpha_threshold` are 0; [`sparsity`](Self::sparsity) counts them.
///
/// ```
/// use bayesgrad::prelude::*;
/// use bayesgrad::layers::DenseSparseVd;
/// let mut store = ParamStore::<f64>::new();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = DenseSparseVd::new(&mut store, "h", 4, 3, &mut rng)?;
/// let tape = Tape::new();
/// let mut cx = Forward::new(&tape, &store, &mut rng);
/// let y = layer.forward(&mut cx, tape.constant(Tensor::ones(&[2, 4])))?;
/// assert_eq!(y.shape(), vec![2, 3]);
/// assert_eq!(cx.divergences().len(), 1);
/// let (pruned, total) = layer.sparsity(&store)?;
/// assert_eq!((pruned, total), (0, 12)); // nothing is pruned at the start
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct SparseVariational<M> {
    name: String,
    map: M,
    theta: Param,
    log_sigma2: Param,
    bias: Option<Param>,
    config: SparseVdConfig,
}

/// A dense layer with sparse variational dropout.
pub type DenseSparseVd = SparseVariational<DenseMap>;

impl SparseVariational<DenseMap> {
    /// A dense `inputs -> outputs` layer with the default settings.
    pub fn new<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        inputs: usize,
        outputs: usize,
        rng: &mut dyn Rng,
    ) -> Result<Self> {
        Self::from_map(
            store,
            name,
            DenseMap { inputs, outputs },
            SparseVdConfig::default(),
            rng,
        )
    }
}

impl<M> SparseVariational<M> {
    /// A layer over `map` (parameters `<name>/kernel_theta`,
    /// `<name>/kernel_log_sigma2` and `<name>/bias`).
    ///
    /// # Errors
    /// A zero-sized kernel; a non-finite setting; names taken in the store.
    pub fn from_map<F: Element>(
        store: &mut ParamStore<F>,
        name: &str,
        map: M,
        config: SparseVdConfig,
        rng: &mut dyn Rng,
    ) -> Result<Self>
    where
        M: LinearMap<F>,
    {
        let shape = map.kernel_shape();
        if shape.contains(&0) {
            return Err(Error::invalid(
                "SparseVariational::new",
                format!("layer '{name}' needs a kernel of nonzero size, got {shape:?}"),
            ));
        }
        let finite = [
            ("theta_init_std", config.theta_init_std),
            ("log_sigma2_init", config.log_sigma2_init),
            ("log_alpha_threshold", config.log_alpha_threshold),
        ];
        for (setting, v) in finite {
            if !v.is_finite() || (setting == "theta_init_std" && v < 0.0) {
                return Err(Error::invalid(
                    "SparseVdConfig",
                    format!(
                        "{setting} must be finite (and the std >= 0), got {v} (layer '{name}')"
                    ),
                ));
            }
        }
        crate::tensor::checked_alloc::<F>(&format!("layer '{name}'"), &shape)?;
        // all names free first, so that a refusal leaves the store unchanged
        for part in ["kernel_theta", "kernel_log_sigma2", "bias"] {
            let full = format!("{name}/{part}");
            if store.get(&full).is_some() {
                return Err(Error::DuplicateParam { name: full });
            }
        }
        let noise: Tensor<F> = crate::tensor::standard_normal(&shape, rng);
        let theta = store.try_add(
            format!("{name}/kernel_theta"),
            noise.map(|e| e * F::lit(config.theta_init_std)),
        )?;
        let log_sigma2 = store.try_add(
            format!("{name}/kernel_log_sigma2"),
            Tensor::full(&shape, F::lit(config.log_sigma2_init)),
        )?;
        let bias = if config.bias {
            Some(store.try_add(format!("{name}/bias"), Tensor::zeros(&[map.outputs()]))?)
        } else {
            None
        };
        Ok(SparseVariational {
            name: name.to_string(),
            map,
            theta,
            log_sigma2,
            bias,
            config,
        })
    }

    /// The `θ` and `ln σ²` parameters.
    pub fn kernel_params(&self) -> (Param, Param) {
        (self.theta, self.log_sigma2)
    }

    /// The bias parameter, if any.
    pub fn bias_param(&self) -> Option<Param> {
        self.bias
    }

    /// The settings.
    pub fn config(&self) -> &SparseVdConfig {
        &self.config
    }

    /// `ln α = ln σ² - ln θ²` of every weight.
    pub fn log_alpha<F: Element>(&self, store: &ParamStore<F>) -> Result<Tensor<F>> {
        let (theta, ls2) = (store.try_raw(self.theta)?, store.try_raw(self.log_sigma2)?);
        ls2.zip_map(theta, "log_alpha", |s, t| s - (t * t + F::lit(1e-16)).ln())
    }

    /// `(pruned, total)`: how many weights have `ln α` above the threshold.
    pub fn sparsity<F: Element>(&self, store: &ParamStore<F>) -> Result<(usize, usize)> {
        let la = self.log_alpha(store)?;
        let t = F::lit(self.config.log_alpha_threshold);
        Ok((la.data().iter().filter(|&&v| v > t).count(), la.len()))
    }
}

impl<F: Element, M: LinearMap<F> + 'static> Module<F> for SparseVariational<M> {
    fn forward<'t>(&self, cx: &mut Forward<'t, '_, F>, x: Var<'t, F>) -> Result<Var<'t, F>> {
        self.map.check_input(&self.name, &x)?;
        let tape = cx.tape();
        let theta = cx.param(self.theta)?;
        let ls2 = cx.param(self.log_sigma2)?;
        if theta.shape() != ls2.shape() {
            return Err(Error::ShapeMismatch {
                op: "sparse_vd_kl",
                lhs: theta.shape(),
                rhs: ls2.shape(),
            });
        }
        let kl = tape.apply(SparseVdKl, &[theta, ls2])?;
        let y = match cx.mode() {
            SampleMode::SampleAxis(_) => {
                return Err(no_sample_axis(
                    &self.name,
                    "sparse variational dropout draws the outputs (additive reparameterization), not weight samples",
                ));
            }
            SampleMode::PosteriorMean => {
                let t = F::lit(self.config.log_alpha_threshold);
                let keep = ls2.value().zip_map(&theta.value(), "log_alpha", |s, w| {
                    let log_alpha = s - (w * w + F::lit(1e-16)).ln();
                    if log_alpha > t { F::zero() } else { F::one() }
                })?;
                self.map.apply(x, theta * keep)?
            }
            SampleMode::Sample => {
                let mean = self.map.apply(x, theta)?;
                let var = self.map.apply(x.square(), ls2.exp())?;
                let eps = tape.constant(crate::tensor::standard_normal(&mean.shape(), cx.rng()));
                mean.try_add((var + F::lit(1e-16)).sqrt().try_mul(eps)?)?
            }
        };
        cx.add_divergence(format!("{}/kernel_divergence", self.name), kl)?;
        match self.bias {
            Some(b) => y.try_add(cx.param(b)?),
            None => Ok(y),
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
