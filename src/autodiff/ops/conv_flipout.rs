//! Flipout's convolution in one pass: each image convolved with its own
//! sign-flipped kernel.

use super::conv::{ConvGeometry, Padding};
use super::pool::{Window, pool_image, spread_image};
use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::gemm::{MatRef, assume_init, gathers, gemm_append, gemm_gathered, gemm_uninit};
use crate::kernels::parallel::{par_blocks, vectorized};
use crate::tensor::{Element, Storage, Tensor, Uninit};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// Flipout's convolution `conv(x, loc) + conv(x * s_in, delta) * s_out`
/// with per-image channel factors `s_in: [N, C]` and `s_out: [N, O]`, and
/// with `bias` a fourth input `[O]` added to every output pixel.
///
/// A convolution is linear in its kernel, and the factors are constant
/// over each image, so image `b` is convolved with the single kernel
/// `loc + delta * (s_in[b] ⊗ s_out[b])`: one im2col and one GEMM per
/// image, where the unfused graph needs two im2cols and two batch GEMMs
/// plus the sign product and the sum. Backward likewise needs one GEMM per
/// image, `dW_b = cols_b^T g_b`, which gives both `dloc = Σ_b dW_b` and
/// `ddelta = Σ_b dW_b * (s_in[b] ⊗ s_out[b])`. The patch matrix of one
/// image is small enough to stay in cache, so it is rebuilt in backward
/// rather than kept; in `f32` on AVX-512 or AVX2 it is not built at all, the GEMMs
/// reading it from the zero-padded image (`gather`). The bias is added to each image's output, and its
/// gradient summed from each image's output gradient, while they are in
/// cache: a separate op would make a pass over the whole output forward
/// and one backward.
///
/// With `pool = Some(k)` the op also max-pools its output over `k x k`
/// windows that tile it (stride `k`), each image as soon as it is
/// computed: the full-size output is never stored. Backward spreads each
/// image's pooled gradient to its windows' maxima (the taps kept in
/// `argmax`) in a per-image buffer, which the rest of backward reads as it
/// would the gradient of the unpooled output.
struct Conv2dFlipoutOp<F> {
    geometry: ConvGeometry,
    s_in: Vec<F>,
    s_out: Vec<F>,
    bias: bool,
    pool: Option<usize>,
    /// Where `gemm_gathered` reads the patch matrix from the padded image
    /// (`f32` on AVX-512 or AVX2): the offsets of the pixels' windows and of the
    /// taps; `None` where the patch matrix is built (im2col).
    gather: Option<(Vec<isize>, Vec<isize>)>,
    /// Written by forward for backward (a `Mutex`: the op is shared with
    /// the helper threads).
    argmax: Mutex<Vec<u32>>,
}

impl<F: Element> Conv2dFlipoutOp<F> {
    /// The sign product `s_in[b] ⊗ s_out[b]` of image `b`, laid out like a
    /// `patch x o` kernel.
    fn image_signs(&self, b: usize, signs: &mut Vec<F>) {
        let g = &self.geometry;
        let (s_in, s_out) = (
            &self.s_in[b * g.c..(b + 1) * g.c],
            &self.s_out[b * g.o..(b + 1) * g.o],
        );
        signs.clear();
        for _tap in 0..g.kh * g.kw {
            for &si in s_in {
                signs.extend(s_out.iter().map(|&so| si * so));
            }
        }
    }

    /// Image `b`'s kernel `loc + delta * signs` into `kernel`, given its
    /// sign product.
    fn image_kernel(loc: &[F], delta: &[F], signs: &[F], kernel: &mut Vec<F>) {
        kernel.clear();
        kernel.extend(
            loc.iter()
                .zip(delta)
                .zip(signs)
                .map(|((&l, &d), &s)| l + d * s),
        );
    }

    /// [`Self::image_kernel`] into a buffer of its own, on a cache line
    /// (the forward product loads its rows where they lie).
    fn image_kernel_aligned(loc: &[F], delta: &[F], signs: &[F]) -> Storage<F> {
        // the op checked the kernel's shapes, and draws a sign per element
        assert!(
            delta.len() == loc.len() && signs.len() == loc.len(),
            "conv_flipout: the kernel's parts differ in length"
        );
        // SAFETY: the zip covers every slot (all four have the same length)
        unsafe {
            Storage::build(loc.len(), |out| {
                for (o, ((&l, &d), &s)) in out.iter_mut().zip(loc.iter().zip(delta).zip(signs)) {
                    o.write(l + d * s);
                }
            })
        }
    }

    /// Image `b`'s patches into `buf`: its padded image where the
    /// products read the patch matrix from it, else the matrix itself.
    fn patches(&self, x: &[F], b: usize, buf: &mut Vec<F>) {
        buf.clear();
        match self.gather {
            Some(_) => self.geometry.padded_image(x, b, buf),
            None => self.geometry.im2col_image(x, b, buf),
        }
    }

    /// One image's convolution from its [`patches`](Self::patches) and
    /// kernel, plus the bias if any, written over all of `y` (`oh * ow x o`).
    fn image_output(
        &self,
        (patches, kernel, bias): (&[F], &[F], Option<&[F]>),
        y: &mut [MaybeUninit<F>],
    ) {
        let g = &self.geometry;
        let (pixels, patch, o) = (g.oh * g.ow, g.patch(), g.o);
        match &self.gather {
            Some((windows, taps)) => gemm_gathered(patches, (windows, taps), kernel, o, y),
            None => gemm_uninit(
                pixels,
                patch,
                o,
                MatRef::new(patches, patch, false),
                MatRef::new(kernel, o, false),
                y,
            ),
        }
        if let Some(bias) = bias {
            // SAFETY: `gemm_uninit` wrote all of `y`.
            let y = unsafe { assume_init(y) };
            for row in y.chunks_exact_mut(o.max(1)) {
                row.iter_mut().zip(bias).for_each(|(y, &b)| *y = *y + b);
            }
        }
    }

    /// The output's shape: the convolution's, or its pooled one.
    fn output_shape(&self) -> Vec<usize> {
        let g = &self.geometry;
        match self.pool {
            Some(k) => vec![g.n, g.oh / k, g.ow / k, g.o],
            None => g.output_shape(),
        }
    }

    /// The shapes of one image's convolution and of its pooling by `k`.
    fn image_shapes(&self, k: usize) -> ([usize; 4], [usize; 4]) {
        let g = &self.geometry;
        ([1, g.oh, g.ow, g.o], [1, g.oh / k, g.ow / k, g.o])
    }

    /// Multiply-adds of the GEMMs of all images (one per image).
    fn work(&self) -> usize {
        let g = &self.geometry;
        g.n * g.oh * g.ow * g.patch() * g.o
    }
}

impl<F: Element> Op<F> for Conv2dFlipoutOp<F> {
    fn name(&self) -> &str {
        "conv2d_flipout"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let g = &self.geometry;
        let kernel_shape = [g.kh, g.kw, g.c, g.o];
        if inputs[0].shape() != [g.n, g.h, g.w, g.c]
            || inputs[1].shape() != kernel_shape
            || inputs[2].shape() != kernel_shape
            || (self.bias && inputs[3].shape() != [g.o])
        {
            return Err(Error::ShapeMismatch {
                op: "conv2d_flipout",
                lhs: inputs[0].shape().to_vec(),
                rhs: inputs[2].shape().to_vec(),
            });
        }
        let (x, loc, delta) = (inputs[0].data(), inputs[1].data(), inputs[2].data());
        let bias = self.bias.then(|| inputs[3].data());
        let (pixels, o) = (g.oh * g.ow, g.o);
        // per image, the output's elements and those kept (pooled or all)
        let full = pixels * o;
        let kept = self.pool.map_or(full, |k| pixels / (k * k) * o);
        let total = g.n * kept;
        let taps_len = if self.pool.is_some() { total } else { 0 };
        let (mut out, mut argmax) = (Vec::with_capacity(total), Vec::with_capacity(taps_len));
        // the two halves of the batch on two threads, one image at a time
        par_blocks(
            (
                &mut out.spare_capacity_mut()[..total],
                &mut argmax.spare_capacity_mut()[..taps_len],
            ),
            g.n,
            self.work(),
            |images, (out, taps)| {
                let (mut cols, mut signs) = (Vec::new(), Vec::new());
                // the output of one image before pooling, on a cache line
                let mut image = Uninit::new(if self.pool.is_some() { full } else { 0 });
                let mut taps = taps.chunks_mut(kept.max(1));
                for (b, out) in images.zip(out.chunks_mut(kept.max(1))) {
                    self.image_signs(b, &mut signs);
                    let kernel = Self::image_kernel_aligned(loc, delta, &signs);
                    self.patches(x, b, &mut cols);
                    let product = (&cols[..], &kernel[..], bias);
                    match (self.pool, taps.next()) {
                        (Some(k), Some(taps)) => {
                            // into a buffer, pooled from there
                            let y = image.slots();
                            self.image_output(product, y);
                            // SAFETY: `image_output` wrote all of `y`.
                            let y = unsafe { assume_init(y) };
                            let (image, pooled) = self.image_shapes(k);
                            let window = Window { size: k, stride: k };
                            // vectorized: this closure is compiled apart
                            vectorized(
                                #[inline(always)]
                                || pool_image(window, (&image, &pooled), y, (out, taps)),
                            );
                        }
                        _ => self.image_output(product, out),
                    }
                }
            },
        );
        // SAFETY: `par_blocks` gave every image's block of the first `total`
        // elements (and of the argmax) to one pass of the loop, which wrote
        // all of it: `gemm_uninit`, or the pooling of every window.
        unsafe {
            out.set_len(total);
            argmax.set_len(taps_len);
        }
        *self.argmax.lock().unwrap_or_else(PoisonError::into_inner) = argmax;
        Tensor::from_vec(out, &self.output_shape())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, out, grad, &[true; 4][..inputs.len()])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let g = &self.geometry;
        let (x, loc, delta) = (inputs[0].data(), inputs[1].data(), inputs[2].data());
        let (pixels, patch, o) = (g.oh * g.ow, g.patch(), g.o);
        let full = pixels * o;
        let kept = self.pool.map_or(full, |k| pixels / (k * k) * o);
        let argmax = self.argmax.lock().unwrap_or_else(PoisonError::into_inner);
        let argmax: &[u32] = &argmax;
        let kernel_grads = needs[1] || needs[2];
        let bias_grad = needs.get(3) == Some(&true);
        let mut dx = if needs[0] {
            vec![F::zero(); x.len()]
        } else {
            Vec::new()
        };
        // each half of the batch sums its images' kernel (and bias) gradients
        let half = |images: Range<usize>, dx: &mut [F]| {
            let size = if kernel_grads { patch * o } else { 0 };
            let (mut dloc, mut ddelta) = (vec![F::zero(); size], vec![F::zero(); size]);
            // each image's rows summed, in order
            let mut dbias = Vec::with_capacity(if bias_grad { images.len() * o } else { 0 });
            let (mut cols, mut kernel, mut signs, mut dw) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let first = images.start;
            // the gradient of one image's unpooled output, on a cache line
            // (the kernel gradient's product loads its rows where they lie)
            let mut spread = Uninit::new(if self.pool.is_some() { full } else { 0 });
            for b in images {
                let part = b * kept..(b + 1) * kept;
                // the gradient of the image's (unpooled) output
                let gb = match self.pool {
                    Some(k) => {
                        let (image, pooled) = self.image_shapes(k);
                        let window = Window { size: k, stride: k };
                        let taken = (&grad.data()[part.clone()], &argmax[part]);
                        let into = spread.slots();
                        vectorized(
                            #[inline(always)]
                            || spread_image(window, (&image, &pooled), taken, into),
                        );
                        // SAFETY: the windows tile the image (checked when
                        // the op was made), and `spread_image` wrote every
                        // element they cover.
                        &*unsafe { assume_init(into) }
                    }
                    None => &grad.data()[part],
                };
                self.image_signs(b, &mut signs);
                if bias_grad {
                    let at = dbias.len();
                    dbias.resize(at + o, F::zero());
                    for row in gb.chunks_exact(o.max(1)) {
                        dbias[at..]
                            .iter_mut()
                            .zip(row)
                            .for_each(|(d, &g)| *d = *d + g);
                    }
                }
                if kernel_grads {
                    self.patches(x, b, &mut cols);
                    dw.clear();
                    match &self.gather {
                        // the transposed patch matrix: taps as rows
                        Some((windows, taps)) => {
                            dw.reserve(patch * o);
                            let into = &mut dw.spare_capacity_mut()[..patch * o];
                            gemm_gathered(&cols, (taps, windows), gb, o, into);
                            // SAFETY: `gemm_gathered` wrote all of them.
                            unsafe { dw.set_len(patch * o) };
                        }
                        None => gemm_append(
                            patch,
                            pixels,
                            o,
                            MatRef::new(&cols, patch, true),
                            MatRef::new(gb, o, false),
                            &mut dw,
                        ),
                    }
                    for (((l, d), &w), &s) in dloc.iter_mut().zip(&mut ddelta).zip(&dw).zip(&signs)
                    {
                        *l = *l + w;
                        *d = *d + w * s;
                    }
                }
                if !dx.is_empty() {
                    Self::image_kernel(loc, delta, &signs, &mut kernel);
                    cols.clear();
                    gemm_append(
                        pixels,
                        o,
                        patch,
                        MatRef::new(gb, o, false),
                        MatRef::new(&kernel, o, true),
                        &mut cols,
                    );
                    let len = g.image_len();
                    let at = (b - first) * len;
                    g.col2im_image_add(&cols, &mut dx[at..at + len]);
                }
            }
            (dloc, ddelta, dbias)
        };
        let work = self.work() * (usize::from(kernel_grads) + usize::from(needs[0]));
        let ((dloc0, ddelta0, dbias0), (dloc1, ddelta1, dbias1)) =
            par_blocks(dx.as_mut_slice(), g.n, work, half);
        let sum = |a: Vec<F>, b: Vec<F>| a.into_iter().zip(b).map(|(a, b)| a + b).collect();
        let kernel_shape = inputs[1].shape();
        let wrap = |need: bool, data: Vec<F>| {
            need.then(|| Tensor::new_unchecked(data, kernel_shape.to_vec()))
        };
        let mut grads = vec![
            needs[0].then(|| Tensor::new_unchecked(dx, inputs[0].shape().to_vec())),
            wrap(needs[1], sum(dloc0, dloc1)),
            wrap(needs[2], sum(ddelta0, ddelta1)),
        ];
        if self.bias {
            // the images' sums added in image order, whatever the split
            let dbias = bias_grad.then(|| {
                let mut total = vec![F::zero(); o];
                for image in dbias0
                    .chunks_exact(o.max(1))
                    .chain(dbias1.chunks_exact(o.max(1)))
                {
                    total.iter_mut().zip(image).for_each(|(t, &g)| *t = *t + g);
                }
                Tensor::new_unchecked(total, vec![o])
            });
            grads.push(dbias);
        }
        Ok(grads)
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// Flipout's convolution `conv(x, loc) + conv(x * s_in, delta) * s_out`
    /// (Wen et al. 2018), computed in one pass: image `b` is convolved
    /// with the kernel `loc + delta * (s_in[b] ⊗ s_out[b])`, so the cost
    /// is that of one convolution. `x` is `[N, H, W, C]`, `loc` and
    /// `delta` are `[KH, KW, C, O]`, and the per-image channel factors
    /// `s_in` and `s_out` (Flipout's random signs, though any values work)
    /// have `N x C` and `N x O` elements: shape `[N, C]` or `[N, 1, 1, C]`.
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let tape = Tape::<f64>::new();
    /// let x = tape.constant(Tensor::ones(&[2, 4, 4, 1]));
    /// let loc = tape.var(Tensor::full(&[3, 3, 1, 2], 0.5));
    /// let delta = tape.var(Tensor::full(&[3, 3, 1, 2], 0.1));
    /// let s_in = Tensor::from_vec(vec![1.0, -1.0], &[2, 1])?;
    /// let s_out = Tensor::from_vec(vec![1.0, 1.0, -1.0, 1.0], &[2, 2])?;
    /// let y = x.conv2d_flipout(loc, delta, &s_in, &s_out, 1, Padding::Valid)?;
    /// // image 1, channel 0: 9 taps of 0.5 + 0.1 * (-1) * (-1)
    /// assert!((y.value().data()[4] - 9.0 * 0.6).abs() < 1e-12);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn conv2d_flipout(
        self,
        loc: Var<'t, F>,
        delta: Var<'t, F>,
        s_in: &Tensor<F>,
        s_out: &Tensor<F>,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        self.conv2d_flipout_fused((loc, delta), (s_in, s_out), (stride, padding), (None, None))
    }

    /// [`conv2d_flipout`](Var::conv2d_flipout) plus `bias` (`[O]`) added
    /// to every output pixel, then max pooling over `k x k` windows with
    /// stride `k`, each optional, in one op where the windows tile the
    /// output (otherwise the pooling is a second op, `max_pool2d`): what
    /// [`Conv2dMap`](crate::layers::Conv2dMap) runs for a Flipout layer's
    /// [`Epilogue`](crate::layers::Epilogue).
    pub(crate) fn conv2d_flipout_fused(
        self,
        (loc, delta): (Var<'t, F>, Var<'t, F>),
        (s_in, s_out): (&Tensor<F>, &Tensor<F>),
        (stride, padding): (usize, Padding),
        (bias, pool): (Option<Var<'t, F>>, Option<usize>),
    ) -> Result<Self> {
        let geometry = ConvGeometry::new(&self.shape(), &loc.shape(), stride, padding)?;
        let factor_ok = |t: &Tensor<F>, width: usize| {
            let s = t.shape();
            s.first() == Some(&geometry.n)
                && s.last() == Some(&width)
                && t.len() == geometry.n * width
        };
        if loc.shape() != delta.shape() {
            return Err(Error::ShapeMismatch {
                op: "conv2d_flipout",
                lhs: loc.shape(),
                rhs: delta.shape(),
            });
        }
        for (t, width, what) in [(s_in, geometry.c, "s_in"), (s_out, geometry.o, "s_out")] {
            if !factor_ok(t, width) {
                return Err(Error::invalid(
                    "conv2d_flipout",
                    format!(
                        "{what} must have shape [{n}, {width}] or [{n}, 1, 1, {width}], got {:?}",
                        t.shape(),
                        n = geometry.n
                    ),
                ));
            }
        }
        if let Some(bias) = bias
            && bias.shape() != [geometry.o]
        {
            return Err(Error::ShapeMismatch {
                op: "conv2d_flipout",
                lhs: geometry.output_shape(),
                rhs: bias.shape(),
            });
        }
        let tiles = |&k: &usize| k > 0 && geometry.oh % k == 0 && geometry.ow % k == 0;
        let op = Conv2dFlipoutOp {
            geometry,
            s_in: s_in.data().to_vec(),
            s_out: s_out.data().to_vec(),
            bias: bias.is_some(),
            pool: pool.filter(tiles),
            gather: gathers::<F>(geometry.oh * geometry.ow, geometry.patch(), geometry.o)
                .then(|| geometry.gather_offsets()),
            argmax: Mutex::new(Vec::new()),
        };
        let pooled = op.pool.is_some();
        let y = match bias {
            Some(bias) => self.tape.apply(op, &[self, loc, delta, bias])?,
            None => self.tape.apply(op, &[self, loc, delta])?,
        };
        match pool {
            Some(k) if !pooled => y.max_pool2d(k, k),
            _ => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::autodiff::gradcheck::{GradCheck, gradcheck};
    use crate::prelude::*;

    fn spread(shape: &[usize], scale: f64, phase: f64) -> Tensor<f64> {
        Tensor::from_fn(shape, |i| scale * ((i as f64) * 0.77 + phase).sin())
    }

    fn signs(n: usize, width: usize, every: usize) -> Tensor<f64> {
        Tensor::from_fn(&[n, width], |i| if i % every == 1 { -1.0 } else { 1.0 })
    }

    /// Finite differences for every input, the bias among them, with and
    /// without pooling inside the op.
    #[test]
    fn the_bias_and_the_pooling_pass_gradcheck_with_the_other_inputs() {
        let (s_in, s_out) = (signs(2, 2, 3), signs(2, 3, 4));
        let cases = [
            (1, Padding::Same, None),
            (2, Padding::Valid, None),
            (1, Padding::Same, Some(2)),
        ];
        for (stride, padding, pool) in cases {
            let inputs = [
                spread(&[2, 4, 6, 2], 1.0, 0.3),
                spread(&[3, 3, 2, 3], 0.5, 1.1),
                spread(&[3, 3, 2, 3], 0.2, 2.0),
                spread(&[3], 0.4, 0.7),
            ];
            gradcheck(
                |_, v| {
                    let geometry = (stride, padding);
                    let epilogue = (Some(v[3]), pool);
                    v[0].conv2d_flipout_fused((v[1], v[2]), (&s_in, &s_out), geometry, epilogue)
                },
                &inputs,
                &GradCheck::default(),
            )
            .unwrap_or_else(|e| panic!("stride {stride} {padding:?} pool {pool:?}: {e}"));
        }
    }

    /// The fused bias against `conv2d_flipout` then `+ bias`: the same
    /// values and input and kernel gradients bit for bit (the same
    /// operations), the bias's gradient up to the order of its sum; on a
    /// batch that runs on two threads, in f32.
    #[test]
    fn the_fused_bias_adds_what_a_separate_add_adds() {
        let (n, o) = (6, 8);
        let f32s = |t: Tensor<f64>| Tensor::from_fn(t.shape(), |i| t.data()[i] as f32);
        let tape = Tape::<f32>::new();
        let x = tape.var(f32s(spread(&[n, 12, 11, 3], 2.0, 0.2)));
        let loc = tape.var(f32s(spread(&[5, 5, 3, o], 0.5, 0.4)));
        let delta = tape.var(f32s(spread(&[5, 5, 3, o], 0.1, 1.3)));
        let bias = tape.var(f32s(spread(&[o], 0.3, 0.9)));
        let (s_in, s_out) = (f32s(signs(n, 3, 4)), f32s(signs(n, o, 3)));
        let same = (1, Padding::Same);
        let fused = x
            .conv2d_flipout_fused((loc, delta), (&s_in, &s_out), same, (Some(bias), None))
            .unwrap();
        let apart = x
            .conv2d_flipout(loc, delta, &s_in, &s_out, 1, Padding::Same)
            .unwrap()
            .try_add(bias)
            .unwrap();
        assert_eq!(fused.value().data(), apart.value().data());
        let weights = tape.constant(f32s(spread(&fused.shape(), 1.0, 0.5)));
        let gf = (fused * weights).sum().backward().unwrap();
        let ga = (apart * weights).sum().backward().unwrap();
        for v in [x, loc, delta] {
            assert_eq!(gf.get(v).unwrap().data(), ga.get(v).unwrap().data());
        }
        let (bf, ba) = (gf.get(bias).unwrap(), ga.get(bias).unwrap());
        for (f, a) in bf.data().iter().zip(ba.data()) {
            assert!((f - a).abs() <= 1e-4 * a.abs().max(1.0), "{f} vs {a}");
        }
        // only the bias needs a gradient: one thread, the same sums
        let constant = tape.constant(x.value());
        let kernel = (tape.constant(loc.value()), tape.constant(delta.value()));
        let y = constant
            .conv2d_flipout_fused(kernel, (&s_in, &s_out), same, (Some(bias), None))
            .unwrap();
        let g = (y * weights).sum().backward().unwrap();
        assert_eq!(g.get(bias).unwrap().data(), bf.data());
    }

    #[test]
    fn a_bias_of_the_wrong_width_is_refused() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::ones(&[2, 4, 4, 1]));
        let k = tape.var(Tensor::ones(&[3, 3, 1, 2]));
        let bias = tape.var(Tensor::ones(&[3]));
        let (s_in, s_out) = (signs(2, 1, 2), signs(2, 2, 2));
        let same = (1, Padding::Same);
        let err = x
            .conv2d_flipout_fused((k, k), (&s_in, &s_out), same, (Some(bias), None))
            .unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    }

    /// Pooling inside the op against `max_pool2d` after it: the same
    /// values and the same gradients, bit for bit (the same maxima, the
    /// same spread of the gradient, the same products after it), on a
    /// batch that runs on two threads, with a NaN and with ties; and
    /// windows that do not tile the output fall back to the two ops.
    #[test]
    fn pooling_in_the_op_gives_the_bits_of_pooling_after_it() {
        let (n, o) = (6, 8);
        let f32s = |t: Tensor<f64>| Tensor::from_fn(t.shape(), |i| t.data()[i] as f32);
        let mut image = f32s(spread(&[n, 12, 10, 3], 2.0, 0.2));
        image.data_mut()[77] = f32::NAN;
        // ties: a constant patch of the first image
        for i in 0..30 {
            image.data_mut()[i] = 0.5;
        }
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (k, stride, padding) in [
            (2, 1, Padding::Same),
            (3, 1, Padding::Valid),
            (2, 2, Padding::Same),
        ] {
            let tape = Tape::<f32>::new();
            let x = tape.var(image.clone());
            let loc = tape.var(f32s(spread(&[3, 3, 3, o], 0.5, 0.4)));
            let delta = tape.var(f32s(spread(&[3, 3, 3, o], 0.1, 1.3)));
            let bias = tape.var(f32s(spread(&[o], 0.3, 0.9)));
            let (s_in, s_out) = (f32s(signs(n, 3, 4)), f32s(signs(n, o, 3)));
            let geometry = (stride, padding);
            let fused = x
                .conv2d_flipout_fused(
                    (loc, delta),
                    (&s_in, &s_out),
                    geometry,
                    (Some(bias), Some(k)),
                )
                .unwrap();
            let apart = x
                .conv2d_flipout_fused((loc, delta), (&s_in, &s_out), geometry, (Some(bias), None))
                .unwrap()
                .max_pool2d(k, k)
                .unwrap();
            let what = format!("pool {k} stride {stride} {padding:?}");
            assert_eq!(fused.shape(), apart.shape(), "{what}");
            assert_eq!(bits(&fused.value()), bits(&apart.value()), "{what}");
            let weights = tape.constant(f32s(spread(&fused.shape(), 1.0, 0.5)));
            let gf = (fused * weights).sum().backward().unwrap();
            let ga = (apart * weights).sum().backward().unwrap();
            for v in [x, loc, delta, bias] {
                let (f, a) = (gf.get(v).unwrap(), ga.get(v).unwrap());
                assert_eq!(bits(f), bits(a), "{what}");
            }
        }
    }

    /// The bits of the value and of every gradient of the `f32` Flipout
    /// convolution of an input `[n, h, w, c]` with a kernel `[kh, kw, c, o]`,
    /// a bias and pooling, on `tier`; `None` where the tier is not this
    /// CPU's or the geometry does not fit (an error on every tier).
    fn flipout_bits_on(
        tier: crate::kernels::parallel::Tier,
        (input, kernel): ([usize; 4], [usize; 4]),
        geometry: (usize, Padding),
        pool: Option<usize>,
    ) -> Option<Vec<u32>> {
        let f32s = |t: Tensor<f64>| Tensor::from_fn(t.shape(), |i| t.data()[i] as f32);
        let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (n, c, o) = (input[0], input[3], kernel[3]);
        crate::kernels::parallel::on_tier(tier, || {
            let tape = Tape::<f32>::new();
            let x = tape.var(f32s(spread(&input, 2.0, 0.2)));
            let loc = tape.var(f32s(spread(&kernel, 0.5, 0.4)));
            let delta = tape.var(f32s(spread(&kernel, 0.1, 1.3)));
            let bias = tape.var(f32s(spread(&[o], 0.3, 0.9)));
            let (s_in, s_out) = (f32s(signs(n, c, 4)), f32s(signs(n, o, 3)));
            let epilogue = (Some(bias), pool);
            let y = x.conv2d_flipout_fused((loc, delta), (&s_in, &s_out), geometry, epilogue);
            let y = y.ok()?;
            let weights = tape.constant(f32s(spread(&y.shape(), 1.0, 0.5)));
            let g = (y * weights).sum().backward().ok()?;
            let mut all = bits(&y.value());
            for v in [x, loc, delta, bias] {
                all.extend(bits(g.get(v)?));
            }
            Some(all)
        })
        .flatten()
    }

    /// The patch matrix read from the padded image (`f32` on AVX-512 and
    /// on AVX2) against the one im2col builds (the portable tier): the same
    /// bits, values and every gradient, over paddings (an even kernel pads
    /// unevenly), strides, kernel sizes, a bias and pooling.
    #[test]
    fn reading_patches_from_the_image_gives_the_bits_of_im2col() {
        use crate::kernels::parallel::Tier;
        if !Tier::Avx2Fma.supported() {
            eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 with FMA");
            return;
        }
        let cases = [
            ([5, 5, 3, 8], 1, Padding::Same, Some(2)),
            ([5, 5, 3, 8], 2, Padding::Valid, None),
            ([5, 5, 3, 8], 3, Padding::Same, None),
            ([2, 3, 3, 8], 1, Padding::Same, None),
            ([3, 3, 3, 8], 1, Padding::Valid, Some(3)),
        ];
        for (kernel, stride, padding, pool) in cases {
            let run = |tier| {
                flipout_bits_on(tier, ([3, 13, 12, 3], kernel), (stride, padding), pool)
                    .expect("a geometry that fits, on a tier this CPU runs")
            };
            let what = format!("{kernel:?} stride {stride} {padding:?} pool {pool:?}");
            for tier in [Tier::Avx512, Tier::Avx2Fma]
                .into_iter()
                .filter(|t| t.supported())
            {
                assert_eq!(run(tier), run(Tier::Portable), "{what} on {tier:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_settings::persisted(48, "proptest-regressions/conv_flipout.txt"))]

        /// Any geometry, bias and pooling: the patches read from the padded
        /// image (on AVX-512 and AVX2, where the product is large enough) give the
        /// bits of im2col, values and gradients.
        #[test]
        fn any_geometry_reads_the_patches_im2col_builds(
            (n, h, w, c) in (1..3usize, 1..12usize, 1..12usize, 1..4usize),
            (kh, kw, o) in (1..6usize, 1..6usize, 1..24usize),
            (stride, same, pool) in (1..4usize, proptest::bool::ANY, 0..3usize),
        ) {
            use crate::kernels::parallel::Tier;
            let padding = if same { Padding::Same } else { Padding::Valid };
            let pool = (pool > 0).then_some(pool);
            let shapes = ([n, h, w, c], [kh, kw, c, o]);
            let run = |tier| flipout_bits_on(tier, shapes, (stride, padding), pool);
            // both values, or both errors (a geometry that does not fit)
            for tier in [Tier::Avx512, Tier::Avx2Fma].into_iter().filter(|t| t.supported()) {
                proptest::prop_assert_eq!(run(tier), run(Tier::Portable));
            }
        }
    }
}
