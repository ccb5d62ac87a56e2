//! A variational layer's pass with a sample axis ([`SampleMode::SampleAxis`]):
//! `K` weight samples at once and their log ratios `ln q(w_k) − ln p(w_k)`
//! for the importance-weighted bound.
//!
//! For the mean-field Normal posterior with a Normal prior, two fused ops
//! do this in one pass each over the `K` samples: the draw
//! `w_k = loc + scale ε_k`, and the log ratio, in which
//! `ln q(w_k) = −Σ ln scale − ½ Σ ε_k² − c` is exact at the sample and
//! depends on the parameters only through `ln scale` (the path and score
//! terms through `loc` cancel). Other priors take the generic route
//! through the distributions' `log_prob`.
//!
//! [`SampleMode::SampleAxis`]: crate::SampleMode::SampleAxis

use super::meanfield::{add_terms, sum_ln};
use super::variational::{Prior, VariationalConfig};
use crate::autodiff::tape::{MultiOp, Op, Var};
use crate::bayes::forward::Forward;
use crate::distributions::{Distribution, Normal};
use crate::error::{Error, Result};
use crate::kernels::parallel::{
    PAIRWISE_BLOCK, Pairwise, join, par_blocks, par_fill, par_new, sum_lanes,
};
use crate::kernels::random::standard_normal_into;
use crate::tensor::{Element, Tensor, Uninit};
use rand::Rng;

/// `K` draws `ε_k` of a standard Normal over `shape`, stacked to
/// `[K, ...shape]`. Each is drawn as a pass in `SampleMode::Sample` draws its
/// perturbation, so draw `k` is the weight noise of the `k`-th of `K`
/// successive single-sample passes.
fn stacked_noise<F: Element>(shape: &[usize], k: usize, rng: &mut dyn Rng) -> Result<Tensor<F>> {
    let n: usize = shape.iter().product();
    crate::tensor::checked_alloc::<F>("SampleMode::SampleAxis", &[k, n])?;
    let mut data = Uninit::new(k * n);
    let blocks = data.slots();
    for i in 0..k {
        // each block draws as `noise(shape, rng)` would, straight into place
        standard_normal_into(&mut blocks[i * n..(i + 1) * n], rng);
    }
    // SAFETY: the K blocks of n elements were all written
    let data = unsafe { data.assume_init() };
    let mut stacked = vec![k];
    stacked.extend_from_slice(shape);
    Ok(Tensor::new_unchecked(data, stacked))
}

/// The pieces of `len` elements from `start` of a `[K, n]` buffer that lie
/// in one row: `(offset from start, column of the first, length)`.
fn segments(start: usize, len: usize, n: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= len || n == 0 {
            return None;
        }
        let j = (start + at) % n;
        let piece = (n - j).min(len - at);
        let out = (at, j, piece);
        at += piece;
        Some(out)
    })
}

/// `w[k] = loc + scale ∘ eps[k]` for inputs `loc, scale` of one shape and
/// a constant `eps: [K, ...shape]`.
struct PerSampleDraw<F: Element> {
    eps: Tensor<F>,
}

impl<F: Element> Op<F> for PerSampleDraw<F> {
    fn name(&self) -> &str {
        "per_sample_draw"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (loc, scale) = (inputs[0].data(), inputs[1].data());
        let eps = self.eps.data();
        // SAFETY: the segments cover every element of each chunk
        let w = unsafe {
            par_new(eps.len(), |start, out| {
                for (at, j, len) in segments(start, out.len(), loc.len()) {
                    let (m, s) = (&loc[j..j + len], &scale[j..j + len]);
                    let e = &eps[start + at..start + at + len];
                    let out = &mut out[at..at + len];
                    for (o, ((&m, &s), &e)) in out.iter_mut().zip(m.iter().zip(s).zip(e)) {
                        o.write(m + s * e);
                    }
                }
            })
        };
        Ok(Tensor::new_unchecked(w, self.eps.shape().to_vec()))
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        g: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let shape = inputs[0].shape();
        let n = inputs[0].len();
        let (g, eps) = (g.data(), self.eps.data());
        // sums over the samples, for each weight
        let (mut dloc, mut dscale) = (Tensor::zeros(shape), Tensor::zeros(shape));
        par_fill(dloc.data_mut(), |start, out| {
            for gk in g.chunks_exact(n.max(1)) {
                for (o, &g) in out.iter_mut().zip(&gk[start..]) {
                    *o = *o + g;
                }
            }
        });
        par_fill(dscale.data_mut(), |start, out| {
            for (gk, ek) in g.chunks_exact(n.max(1)).zip(eps.chunks_exact(n.max(1))) {
                for (o, (&g, &e)) in out.iter_mut().zip(gk[start..].iter().zip(&ek[start..])) {
                    *o = *o + g * e;
                }
            }
        });
        Ok(vec![Some(dloc), Some(dscale)])
    }
}

/// `r[k] = Σ_j (−ln scale_j − ½ ε_kj² + ½ ((w_kj − m) / s)² + ln s)`:
/// `ln q(w_k) − ln p(w_k)` for `q = N(loc, scale)`, `p = N(m, s)` at
/// `w_k = loc + scale ε_k`, from inputs `scale` and `w: [K, ...]`.
struct NormalLogRatio<F: Element> {
    eps: Tensor<F>,
    prior: (F, F),
}

impl<F: Element> MultiOp<F> for NormalLogRatio<F> {
    fn name(&self) -> &str {
        "normal_log_ratio"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Vec<Tensor<F>>> {
        let (scale, w) = (inputs[0].data(), inputs[1].data());
        let (m, s) = self.prior;
        let n = scale.len();
        // Σ ln scale pairwise over blocks, one logarithm per four values
        // (`sum_ln`), half the weights on each thread
        let (lo, hi) = par_blocks(
            (),
            n,
            n,
            #[inline(always)]
            |items, ()| {
                let mut sum = Pairwise::new();
                for block in scale[items].chunks(PAIRWISE_BLOCK) {
                    sum.add(sum_ln(block));
                }
                sum.total()
            },
        );
        let shared = -(lo + hi) + F::lit(n as f64) * s.ln();
        let k = self.eps.shape()[0];
        let eps = self.eps.data();
        // sample i's sum of ½ (((w - m) / s)² - ε²), half the samples on each thread
        let inv_s = F::one() / s;
        // (the terms of a block of weights go to a buffer, summed in lanes,
        // and the blocks pairwise)
        let sums = |first: usize, out: &mut [F]| {
            let mut buf = [F::zero(); PAIRWISE_BLOCK];
            for (i, o) in out.iter_mut().enumerate() {
                let at = (first + i) * n;
                let mut sum = Pairwise::new();
                let blocks = w[at..at + n].chunks(PAIRWISE_BLOCK);
                for (w, e) in blocks.zip(eps[at..at + n].chunks(PAIRWISE_BLOCK)) {
                    let buf = &mut buf[..w.len()];
                    for ((t, &w), &e) in buf.iter_mut().zip(w).zip(e) {
                        let z = (w - m) * inv_s;
                        *t = F::lit(0.5) * (z * z - e * e);
                    }
                    sum.add(sum_lanes(buf));
                }
                *o = shared + sum.total();
            }
        };
        let mut r = vec![F::zero(); k];
        let (a, b) = r.split_at_mut(k / 2);
        join(|| sums(0, a), || sums(k / 2, b));
        Ok(vec![Tensor::from_vec(r, &[k])?])
    }
    /// Adds `-Σ_k g_k / scale` to the scale's gradient and
    /// `g_k (w_k - m) / s²` to the samples', in place: the samples' gradient
    /// from the product that reads them (as large as all K samples) is not
    /// summed with a second one in a pass of its own.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        grads: Vec<Option<Tensor<F>>>,
        needs: &[bool],
        acc: &mut [Option<Tensor<F>>],
    ) -> Result<()> {
        let Some(g) = grads.into_iter().next().flatten() else {
            return Ok(());
        };
        let [scale_acc, w_acc] = acc else {
            unreachable!("two inputs")
        };
        let (scale, w) = (inputs[0], inputs[1]);
        let (m, s) = self.prior;
        let n = scale.len();
        let g = g.data();
        if needs[0] {
            let total = g.iter().fold(F::zero(), |a, &b| a + b);
            let sd = scale.data();
            add_terms(scale_acc, scale.shape(), |start, out| {
                for (o, &v) in out.iter_mut().zip(&sd[start..]) {
                    *o = -total / v;
                }
            });
        }
        if needs[1] {
            let inv = F::one() / (s * s);
            let wd = w.data();
            add_terms(w_acc, w.shape(), |start, out| {
                for (at, _, len) in segments(start, out.len(), n) {
                    let gk = g[(start + at) / n] * inv;
                    let w = &wd[start + at..start + at + len];
                    for (o, &w) in out[at..at + len].iter_mut().zip(w) {
                        *o = gk * (w - m);
                    }
                }
            });
        }
        Ok(())
    }
}

/// Draws `K` weight samples of the posterior `q` over `shape`
/// (`[K, ...shape]`), registers their log ratios under `name`
/// ([`Forward::add_log_ratio`]) and returns them. The layer's
/// [`KlMethod`](super::KlMethod) is not used: the importance weights need the log ratio at each sample.
pub(crate) fn draw_and_register<'t, F: Element>(
    cx: &mut Forward<'t, '_, F>,
    name: String,
    q: &Normal<'t, F>,
    cfg: &VariationalConfig<F>,
    shape: &[usize],
    k: usize,
) -> Result<Var<'t, F>> {
    let eps = stacked_noise::<F>(shape, k, cx.rng())?;
    let (loc, scale) = (q.loc(), q.scale());
    if loc.shape() != shape || scale.shape() != shape {
        return Err(Error::invalid(
            "SampleMode::SampleAxis",
            format!(
                "'{name}': the posterior's parameters do not have the kernel's shape {shape:?}"
            ),
        ));
    }
    let tape = cx.tape();
    let w = tape.apply(PerSampleDraw { eps: eps.clone() }, &[loc, scale])?;
    let log_ratio = match &cfg.prior {
        Prior::Normal { loc: m, scale: s } if m.is_finite() && s.is_finite() && *s > 0.0 => {
            let prior = (F::lit(*m), F::lit(*s));
            tape.apply_multi(Box::new(NormalLogRatio { eps, prior }), &[scale, w])?[0]
        }
        Prior::Hierarchical(_) => {
            let layer = name.rsplit_once('/').map_or(name.as_str(), |(l, _)| l);
            return Err(super::no_sample_axis(
                layer,
                "a hierarchical prior draws one set of scales per pass, with no per-sample log ratio",
            ));
        }
        other => {
            let p = other.build(tape, cx.store(), shape)?;
            let ratio = q.log_prob(w)? - p.log_prob(w)?;
            if ratio.shape() != w.shape() {
                return Err(Error::invalid(
                    "SampleMode::SampleAxis",
                    format!(
                        "'{name}': ln q - ln p of weights {:?} has shape {:?}; the prior must broadcast over the sample axis",
                        w.shape(),
                        ratio.shape()
                    ),
                ));
            }
            ratio
                .reshape(&[k, shape.iter().product()])?
                .sum_axis(1, false)?
        }
    };
    cx.add_log_ratio(name, log_ratio)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused log ratio against its definition summed in `f64`, over
    /// enough weights for many blocks and both threads, in `f64` and `f32`.
    #[test]
    fn normal_log_ratio_matches_its_definition_over_many_weights() {
        fn check<F: Element>(tolerance: f64) {
            let (k, n) = (3, 40_017);
            let value = |i: usize, modulus: usize, shift: f64, scale: f64| {
                ((i * 7919 % modulus) as f64 - shift) * scale
            };
            let scale: Vec<f64> = (0..n).map(|i| 0.05 + value(i, 1000, 0.0, 9e-4)).collect();
            let eps: Vec<f64> = (0..k * n).map(|i| value(i, 2001, 1000.0, 2.5e-3)).collect();
            let w: Vec<f64> = (0..k * n).map(|i| value(i, 997, 498.0, 3e-3)).collect();
            let (m, s) = (0.1, 0.7);
            let tensor = |v: &[f64], shape: &[usize]| {
                Tensor::from_vec(v.iter().map(|&x| F::lit(x)).collect(), shape).unwrap()
            };
            let op = NormalLogRatio {
                eps: tensor(&eps, &[k, n]),
                prior: (F::lit(m), F::lit(s)),
            };
            let out = op
                .forward(&[&tensor(&scale, &[n]), &tensor(&w, &[k, n])])
                .unwrap()
                .remove(0);
            let rounded = |v: f64| F::lit(v).to_f64().unwrap();
            for sample in 0..k {
                let (mut want, mut size) = (0.0, 0.0);
                for j in 0..n {
                    let (e, x) = (rounded(eps[sample * n + j]), rounded(w[sample * n + j]));
                    let z = (x - rounded(m)) / rounded(s);
                    let term =
                        -rounded(scale[j]).ln() - 0.5 * e * e + 0.5 * z * z + rounded(s).ln();
                    want += term;
                    size += term.abs();
                }
                let got = out.data()[sample].to_f64().unwrap();
                assert!(
                    (got - want).abs() <= tolerance * size,
                    "sample {sample}: {got} against {want}"
                );
            }
        }
        check::<f64>(1e-13);
        check::<f32>(1e-6);
    }
}
