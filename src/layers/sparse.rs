//! Sparse variational dropout (Molchanov, Ashukha, Vetrov 2017).

use super::linear_map::{DenseMap, LinearMap};
use super::{Module, no_sample_axis};
use crate::autodiff::params::{Param, ParamStore};
use crate::autodiff::tape::{MultiOp, Var};
use crate::bayes::forward::{Forward, SampleMode};
use crate::error::{Error, Number, Result};
use crate::kernels::parallel::{PAIRWISE_BLOCK, Pairwise, par_blocks, par_fill, sum_lanes};
use crate::layers::meanfield::add_terms;
use crate::layers::variational::local_draw;
use crate::tensor::{Element, Storage, Tensor, Uninit};
use rand::Rng;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// The constants of the KL approximation of Molchanov et al. (2017), eq. 14.
const K1: f64 = 0.63576;
const K2: f64 = 1.87320;
const K3: f64 = 1.48695;

/// `ln α = ln σ² - ln(θ² + 10⁻¹⁶)` of one weight (`θ² + 10⁻¹⁶` is a
/// normal number, +inf or NaN).
#[inline(always)]
fn log_alpha_of<F: Element>(theta: F, log_sigma2: F) -> F {
    log_sigma2 - (theta * theta + F::lit(1e-16)).fast_ln_of_normal()
}

/// `e^-|ln α|` of one weight from `σ²` and `θ² + 10⁻¹⁶` (`α` is their
/// ratio): the smaller over the larger, one division where an exponential
/// of the rounded `ln α` would be less accurate (`ln α` of magnitude 10
/// carries an absolute rounding error of 10⁻⁶ into the exponent). A NaN
/// in either gives NaN.
#[inline(always)]
fn exp_neg_abs_log_alpha<F: Element>(sigma2: F, theta2: F) -> F {
    let (small, large) = if sigma2 <= theta2 {
        (sigma2, theta2)
    } else {
        (theta2, sigma2)
    };
    small / large
}

/// One weight's term of the KL approximation, `-(k1 σ(k2 + k3 ln α) -
/// softplus(-ln α) / 2 - k1)`, and its derivative in `ln α`, given
/// `s = σ(k2 + k3 ln α)` (see [`kl_sigmoid`]) and `e = e^-|ln α|` (see
/// [`exp_neg_abs_log_alpha`]).
#[inline(always)]
fn kl_term<F: Element>(log_alpha: F, s: F, e: F) -> (F, F) {
    let (k1, k3, half) = (F::lit(K1), F::lit(K3), F::lit(0.5));
    let (softplus, sigmoid) = (-log_alpha).fast_softplus_sigmoid_given(e);
    let kl = k1 - k1 * s + half * softplus;
    // d softplus(-a)/da = -sigmoid(-a)
    let slope = -(k1 * k3 * s * (F::one() - s)) - half * sigmoid;
    (kl, slope)
}

/// `σ(k2 + k3 ln α)`, the first part of [`kl_term`].
#[inline(always)]
fn kl_sigmoid<F: Element>(log_alpha: F) -> F {
    (F::lit(K2) + F::lit(K3) * log_alpha).fast_sigmoid()
}

/// The term of `θ`'s gradient from the divergence's gradient `g` and a
/// weight's slope `d = dKL/d ln α`: `g d` times `d ln α/dθ = -2θ / (θ² + ε)`.
#[inline(always)]
fn theta_term<F: Element>(g: F, d: F, t: F) -> F {
    -(g * d) * (t + t) / (t * t + F::lit(1e-16))
}

/// The KL approximation summed over the weights, from `θ` and `ln σ²` in
/// one pass that also keeps each weight's `dKL/d ln α`; the backward pass
/// adds the two gradients into the inputs' accumulated ones in place (in
/// one pass for both in a training step, where the products' backward has
/// made both). (The dozen elementwise tape nodes this replaces each made a
/// weight-sized tensor forward and backward.) With `variances`, the same
/// pass also gives the weights' variances `σ² = e^(ln σ²)` as a second
/// output, for the sampled pass, and backward adds their gradient to
/// `ln σ²`'s in the same pass as the KL's.
struct SparseVdKl<F: Element> {
    variances: bool,
    saved: RefCell<Option<Saved<F>>>,
}

/// What [`SparseVdKl`]'s forward pass keeps for backward.
struct Saved<F> {
    /// `dKL/d ln α` of each weight.
    slope: Storage<F>,
    /// `σ²`, when the op gives it.
    var: Option<Tensor<F>>,
}

impl<F: Element> MultiOp<F> for SparseVdKl<F> {
    fn name(&self) -> &str {
        "sparse_vd_kl"
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Vec<Tensor<F>>> {
        let (theta, ls2) = (inputs[0].data(), inputs[1].data());
        let n = theta.len();
        let mut slope = Uninit::new(n);
        let mut var = Uninit::new(if self.variances { n } else { 0 });
        // the blocks and the order of summation of `par_sum2`
        let (lo, hi) = par_blocks(
            (slope.slots(), var.slots()),
            n,
            n,
            #[inline(always)]
            |items, (slope, var): (&mut [MaybeUninit<F>], &mut [MaybeUninit<F>])| {
                const BLOCK: usize = PAIRWISE_BLOCK;
                // A block goes through three short passes (ln α, the
                // sigmoid, the rest) rather than one long one: each weight's
                // chain of dependent operations is long enough that a single
                // pass waits on latency, while short passes keep many
                // weights in flight. The operations, and so the bits, are
                // those of one pass.
                let (mut buf, mut sig, mut ratio) =
                    ([F::zero(); BLOCK], [F::zero(); BLOCK], [F::zero(); BLOCK]);
                let (theta, ls2) = (&theta[items.clone()], &ls2[items]);
                let mut sum = Pairwise::new();
                let blocks = theta.chunks(BLOCK).zip(ls2.chunks(BLOCK));
                let mut var = var.chunks_mut(BLOCK);
                for ((t, l), d) in blocks.zip(slope.chunks_mut(BLOCK)) {
                    let n = t.len();
                    let (buf, sig, ratio) = (&mut buf[..n], &mut sig[..n], &mut ratio[..n]);
                    for ((la, &t), &l) in buf.iter_mut().zip(t).zip(l) {
                        *la = log_alpha_of(t, l);
                    }
                    // σ², and e^-|ln α| from it, while ln σ² is in the L1
                    // cache; σ² is an output when the op gives it (`var`
                    // is empty otherwise)
                    // (`sig` holds σ² until the sigmoids below)
                    for ((s2, r), (&t, &l)) in
                        sig.iter_mut().zip(ratio.iter_mut()).zip(t.iter().zip(l))
                    {
                        *s2 = l.fast_exp();
                        *r = exp_neg_abs_log_alpha(*s2, t * t + F::lit(1e-16));
                    }
                    for (v, &s2) in var.next().unwrap_or_default().iter_mut().zip(sig.iter()) {
                        v.write(s2);
                    }
                    for (s, &la) in sig.iter_mut().zip(buf.iter()) {
                        *s = kl_sigmoid(la);
                    }
                    for (((v, d), &s), &e) in
                        buf.iter_mut().zip(d).zip(sig.iter()).zip(ratio.iter())
                    {
                        let (value, slope) = kl_term(*v, s, e);
                        *v = value;
                        d.write(slope);
                    }
                    sum.add(sum_lanes(buf));
                }
                sum.total()
            },
        );
        // SAFETY: the two parts wrote every element of both
        let (slope, var) = unsafe { (slope.assume_init(), var.assume_init()) };
        let mut outputs = vec![Tensor::scalar(lo + hi)];
        let var = match self.variances {
            true => {
                let var = Tensor::new_unchecked(var, inputs[1].shape().to_vec());
                outputs.push(var.clone());
                Some(var)
            }
            false => None,
        };
        *self.saved.borrow_mut() = Some(Saved { slope, var });
        Ok(outputs)
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        grads: Vec<Option<Tensor<F>>>,
        needs: &[bool],
        acc: &mut [Option<Tensor<F>>],
    ) -> Result<()> {
        let mut grads = grads.into_iter();
        // the divergence's gradient, and the variances' (each only if it reached them)
        let g = grads.next().flatten().map(|g| g.data()[0]);
        let mut g_var = grads.next().flatten();
        let (theta, shape) = (inputs[0].data(), inputs[0].shape());
        let saved = self.saved.borrow();
        let Saved { slope, var } = saved.as_ref().expect("forward ran before backward");
        let [theta_acc, ls2_acc] = acc else {
            unreachable!("two inputs")
        };
        // d/d ln σ² = g dKL/d ln α + (the variances' gradient) σ²;
        // d/dθ = g dKL/d ln α times d ln α/dθ = -2θ / (θ² + ε)
        //
        // When `ln σ²` has no other gradient yet and this op holds the
        // variances' gradient alone (the usual case), the sum is written over
        // that gradient, element by element where it is read, instead of
        // into a new tensor: a weight-sized buffer less to bring into the
        // cache, and the same operations.
        let mut ls2_done = false;
        // The usual case of a training step, in one pass instead of two
        // (the slopes read once): `θ`'s gradient from the products is in
        // place too, and the same terms are added to it as below.
        if let (true, true, Some(g), None, Some(gv), Some(v), Some(tg)) = (
            needs[0],
            needs[1],
            g,
            ls2_acc.as_ref(),
            g_var.as_mut(),
            var.as_ref(),
            theta_acc.as_mut(),
        ) && let (Some(out), Some(tg)) = (gv.unique_data_mut(), tg.unique_data_mut())
        {
            let (v, n) = (v.data(), theta.len());
            par_blocks(
                (out, tg),
                n,
                n,
                #[inline(always)]
                |items, (out, tg): (&mut [F], &mut [F])| {
                    let terms = slope[items.clone()].iter().zip(&v[items.clone()]);
                    let outs = out.iter_mut().zip(tg.iter_mut());
                    for ((o, tg), ((&d, &v), &t)) in outs.zip(terms.zip(&theta[items])) {
                        *o = g * d + *o * v;
                        *tg = *tg + theta_term(g, d, t);
                    }
                },
            );
            *ls2_acc = g_var.take();
            return Ok(());
        }
        if let (true, Some(g), None, Some(gv), Some(v)) =
            (needs[1], g, ls2_acc.as_ref(), g_var.as_mut(), var.as_ref())
            && let Some(out) = gv.unique_data_mut()
        {
            let v = v.data();
            par_fill(
                out,
                #[inline(always)]
                |start, chunk| {
                    let terms = slope[start..].iter().zip(&v[start..]);
                    for (o, (&d, &v)) in chunk.iter_mut().zip(terms) {
                        *o = g * d + *o * v;
                    }
                },
            );
            *ls2_acc = g_var.take();
            ls2_done = true;
        }
        let variances = g_var.as_ref().zip(var.as_ref());
        if needs[1] && !ls2_done && (g.is_some() || variances.is_some()) {
            add_terms(
                ls2_acc,
                shape,
                #[inline(always)]
                |i, out| {
                    let slope = &slope[i..];
                    let variances = variances.map(|(gv, v)| (&gv.data()[i..], &v.data()[i..]));
                    match (g, variances) {
                        (Some(g), Some((g_var, var))) => {
                            let terms = slope.iter().zip(g_var).zip(var);
                            for (o, ((&d, &gv), &v)) in out.iter_mut().zip(terms) {
                                *o = g * d + gv * v;
                            }
                        }
                        (Some(g), None) => {
                            for (o, &d) in out.iter_mut().zip(slope) {
                                *o = g * d;
                            }
                        }
                        (None, Some((g_var, var))) => {
                            for (o, (&gv, &v)) in out.iter_mut().zip(g_var.iter().zip(var)) {
                                *o = gv * v;
                            }
                        }
                        (None, None) => unreachable!("checked before the pass"),
                    }
                },
            );
        }
        if let (true, Some(g)) = (needs[0], g) {
            add_terms(
                theta_acc,
                shape,
                #[inline(always)]
                |i, out| {
                    for ((o, &d), &t) in out.iter_mut().zip(&slope[i..]).zip(&theta[i..]) {
                        *o = theta_term(g, d, t);
                    }
                },
            );
        }
        Ok(())
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
    /// A zero-sized kernel; a non-finite setting, or one whose initial
    /// values overflow `F`; names taken in the store. Nothing is added to
    /// the store on error.
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
                        "{setting} must be finite (and the std >= 0), got {} (layer '{name}')",
                        Number(v)
                    ),
                ));
            }
        }
        crate::tensor::checked_alloc::<F>(&format!("layer '{name}'"), &shape)?;
        let noise: Tensor<F> = crate::tensor::standard_normal(&shape, rng);
        // (a name taken, or a setting finite in f64 that overflows F: then
        // nothing is added)
        let (theta, log_sigma2, bias) = store.adding(|store| {
            let theta = store.try_add(
                format!("{name}/kernel_theta"),
                noise.map(|e| e * F::lit(config.theta_init_std)),
            )?;
            let log_sigma2 = store.try_add(
                format!("{name}/kernel_log_sigma2"),
                Tensor::full(&shape, F::lit(config.log_sigma2_init)),
            )?;
            let bias = if config.bias {
                let zeros = Tensor::zeros(&[map.outputs()]);
                Some(store.try_add(format!("{name}/bias"), zeros)?)
            } else {
                None
            };
            Ok((theta, log_sigma2, bias))
        })?;
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
        let sampled = matches!(cx.mode(), SampleMode::Sample);
        let op = SparseVdKl {
            variances: sampled,
            saved: RefCell::new(None),
        };
        let outputs = tape.apply_multi(Box::new(op), &[theta, ls2])?;
        let kl = outputs[0];
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
                let (mean, var) = self.map.apply_pair((x, theta), (x.square(), outputs[1]))?;
                let eps = crate::tensor::standard_normal(&mean.shape(), cx.rng());
                local_draw(mean, var, F::lit(1e-16), eps)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::gradcheck::{GradCheck, gradcheck_params};
    use crate::kernels::element::sealed::Kernels;

    /// The divergence op with `ln σ²` used again by the loss through the
    /// same var: its gradient then reaches the op's backward with a term
    /// already in it, which the op adds to (it writes over the variances'
    /// gradient only when `ln σ²` has no other). With and without the
    /// divergence itself in the loss.
    #[test]
    fn gradcheck_divergence_op_with_log_sigma2_used_again() {
        let mut store = ParamStore::<f64>::new();
        let theta = store.add(
            "theta",
            Tensor::from_vec(vec![0.5, -1.2, 0.03, 2.0, -0.4, 0.9], &[3, 2]).unwrap(),
        );
        let ls2 = store.add(
            "ls2",
            Tensor::from_vec(vec![-2.0, -0.5, -6.0, 1.0, -3.0, 0.2], &[3, 2]).unwrap(),
        );
        let weights = Tensor::from_vec(vec![0.3, -0.7, 1.1, 0.2, -0.5, 0.8], &[3, 2]).unwrap();
        for with_divergence in [true, false] {
            gradcheck_params(
                |tape, store| {
                    let (t, l) = (tape.param(store, theta), tape.param(store, ls2));
                    let op = SparseVdKl {
                        variances: true,
                        saved: RefCell::new(None),
                    };
                    let out = tape.apply_multi(Box::new(op), &[t, l])?;
                    let variances = (out[1] * weights.clone()).sum();
                    let again = l.square().sum() * 0.1;
                    Ok(match with_divergence {
                        true => out[0] + variances + again,
                        false => variances + again,
                    })
                },
                &mut store,
                &[theta, ls2],
                &GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("with the divergence: {with_divergence}: {e}"));
        }
    }

    /// `e^-|ln α|` as a ratio in `f32`: within 3 ulp (of 1) relative to
    /// the `f64` value over `ln σ²` from -80 to 80 and `θ` from 10⁻⁶ to 10
    /// (an exponential of the rounded `ln α` is off by up to 40), and at the
    /// edges: `σ²` flushed to 0, `θ²` infinite, NaN in either.
    #[test]
    fn exp_neg_abs_log_alpha_is_accurate_and_keeps_nan() {
        let mut worst = 0.0f64;
        for i in 0..20_000 {
            let ls2 = -80.0 + 160.0 * (f64::from(i) * 0.618_034).fract();
            let theta = 10f64.powf(-6.0 + 7.0 * (f64::from(i) * 0.754_878).fract());
            let (l, t) = (ls2 as f32, theta as f32);
            let got = exp_neg_abs_log_alpha(l.fast_exp(), t * t + 1e-16);
            let q = f64::from(t) * f64::from(t) + 1e-16;
            let want = (-(f64::from(l) - q.ln()).abs()).exp();
            if want > 1e-30 {
                worst = worst.max((f64::from(got) - want).abs() / want);
            }
        }
        assert!(worst < 3.0 * f64::from(f32::EPSILON), "{worst}");
        let e = |sigma2: f32, theta2: f32| exp_neg_abs_log_alpha(sigma2, theta2);
        assert_eq!(e(0.0, 1e-16), 0.0);
        assert_eq!(e(2.0, f32::INFINITY), 0.0);
        assert_eq!(e(f32::INFINITY, 2.0), 0.0);
        assert_eq!(e(3.0, 3.0), 1.0);
        for (a, b) in [
            (f32::NAN, 1.0),
            (1.0, f32::NAN),
            (f32::INFINITY, f32::INFINITY),
        ] {
            assert!(e(a, b).is_nan(), "{a}, {b}");
        }
    }
}
