//! 2-D convolution (NHWC, im2col + GEMM) and max pooling.

use crate::error::{Error, Result};
use crate::parallel::par_blocks;
use crate::tape::{Op, Var};
use crate::tensor::{assume_init, gemm_append, gemm_new, gemm_uninit, Element, MatRef, Tensor};
use std::cell::RefCell;
use std::ops::Range;

/// Padding of a convolution, as in TensorFlow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// No padding: the output is `(in - k) / stride + 1`.
    Valid,
    /// Zero padding so that the output is `ceil(in / stride)`.
    Same,
}

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    o: usize,
    stride: usize,
    oh: usize,
    ow: usize,
    pad_top: usize,
    pad_left: usize,
}

impl ConvGeometry {
    pub(crate) fn new(x: &[usize], k: &[usize], stride: usize, padding: Padding) -> Result<Self> {
        let mismatch = || Error::ShapeMismatch {
            op: "conv2d",
            lhs: x.to_vec(),
            rhs: k.to_vec(),
        };
        if x.len() != 4 || k.len() != 4 || x[3] != k[2] {
            return Err(mismatch());
        }
        if stride == 0 {
            return Err(Error::invalid("conv2d", "stride must be >= 1"));
        }
        let (n, h, w, c) = (x[0], x[1], x[2], x[3]);
        let (kh, kw, o) = (k[0], k[1], k[3]);
        if kh == 0 || kw == 0 {
            return Err(Error::invalid("conv2d", format!("empty kernel {k:?}")));
        }
        let (oh, ow, pad_top, pad_left) = match padding {
            Padding::Valid => {
                if h < kh || w < kw {
                    return Err(Error::invalid(
                        "conv2d",
                        format!("VALID padding: input {h}x{w} is smaller than kernel {kh}x{kw}"),
                    ));
                }
                ((h - kh) / stride + 1, (w - kw) / stride + 1, 0, 0)
            }
            Padding::Same => {
                let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
                let pad_h = ((oh.max(1) - 1) * stride + kh).saturating_sub(h);
                let pad_w = ((ow.max(1) - 1) * stride + kw).saturating_sub(w);
                (oh, ow, pad_h / 2, pad_w / 2)
            }
        };
        Ok(ConvGeometry {
            n,
            h,
            w,
            c,
            kh,
            kw,
            o,
            stride,
            oh,
            ow,
            pad_top,
            pad_left,
        })
    }

    pub(crate) fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.oh, self.ow, self.o]
    }

    fn rows(&self) -> usize {
        self.n * self.oh * self.ow
    }

    fn patch(&self) -> usize {
        self.kh * self.kw * self.c
    }

    fn image_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// The kernel columns `[lo, hi)` whose taps fall inside the input for
    /// an output position starting at `base` (before padding) along an
    /// axis of length `len`: the in-bounds taps are contiguous in memory.
    fn taps(base: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
        let lo = pad.saturating_sub(base).min(k);
        let hi = (len + pad).saturating_sub(base).min(k).max(lo);
        (lo, hi)
    }

    /// Calls `f(col_offset, input_offset, len)` for every run of in-bounds
    /// taps of the patches of one image (row by row): `len` elements of the
    /// image starting at `input_offset` belong in the patch matrix at
    /// `col_offset`. Everything else in the patch matrix is padding.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (c, p) = (self.c, self.patch());
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = (oy * self.ow + ox) * p;
                let (lo, hi) = Self::taps(ox * self.stride, self.pad_left, self.kw, self.w);
                for ky in 0..self.kh {
                    let iy = (oy * self.stride + ky) as isize - self.pad_top as isize;
                    if iy < 0 || iy >= self.h as isize || lo == hi {
                        continue;
                    }
                    let ix = ox * self.stride + lo - self.pad_left;
                    let col = row + (ky * self.kw + lo) * c;
                    f(col, (iy as usize * self.w + ix) * c, (hi - lo) * c);
                }
            }
        }
    }

    /// Appends the patches of image `b` of `x` to `cols` as an
    /// `oh * ow x patch` matrix (zeros where padded), written once.
    fn im2col_image<F: Element>(&self, x: &[F], b: usize, cols: &mut Vec<F>) {
        let image = &x[b * self.image_len()..(b + 1) * self.image_len()];
        let start = cols.len();
        let mut written = start;
        self.for_each_run(|col, src, len| {
            cols.resize(start + col, F::zero());
            cols.extend_from_slice(&image[src..src + len]);
            written = start + col + len;
        });
        debug_assert_eq!(written, cols.len());
        cols.resize(start + self.oh * self.ow * self.patch(), F::zero());
    }

    /// The patches of `x` as a `rows x patch` matrix (zeros where padded),
    /// written once, row by row (no zero-fill of the whole matrix first).
    pub(crate) fn im2col<F: Element>(&self, x: &[F]) -> Vec<F> {
        let mut cols = Vec::with_capacity(self.rows() * self.patch());
        for b in 0..self.n {
            self.im2col_image(x, b, &mut cols);
        }
        cols
    }

    /// Scatter-adds one image's `oh * ow x patch` matrix into that image's
    /// input-shaped buffer.
    fn col2im_image_add<F: Element>(&self, cols: &[F], image: &mut [F]) {
        self.for_each_run(|col, src, len| {
            image[src..src + len]
                .iter_mut()
                .zip(&cols[col..col + len])
                .for_each(|(a, &b)| *a = *a + b);
        });
    }

    /// Scatter-adds a `rows x patch` matrix back into an input-shaped buffer.
    fn col2im<F: Element>(&self, cols: &[F]) -> Vec<F> {
        let mut x = vec![F::zero(); self.n * self.image_len()];
        let per_image = self.oh * self.ow * self.patch();
        for (image, cols) in x
            .chunks_mut(self.image_len().max(1))
            .zip(cols.chunks(per_image.max(1)))
        {
            self.col2im_image_add(cols, image);
        }
        x
    }

    /// `cols @ kernel` as an NHWC output.
    pub(crate) fn apply<F: Element>(&self, cols: &[F], kernel: &[F]) -> Tensor<F> {
        let out = gemm_new(
            self.rows(),
            self.patch(),
            self.o,
            MatRef::new(cols, self.patch(), false),
            MatRef::new(kernel, self.o, false),
        );
        Tensor::new_unchecked(out, self.output_shape())
    }
}

/// `conv2d(x, kernel)`: `x` is `[N, H, W, C]`, `kernel` is `[KH, KW, C, O]`.
/// Forward keeps the im2col matrix for the backward pass:
/// `dK = cols^T g`, `dx = col2im(g K^T)`.
struct Conv2dOp<F> {
    geometry: ConvGeometry,
    cols: RefCell<Option<Vec<F>>>,
}

impl<F: Element> Op<F> for Conv2dOp<F> {
    fn name(&self) -> &str {
        "conv2d"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let g = &self.geometry;
        if inputs[0].shape() != [g.n, g.h, g.w, g.c] || inputs[1].shape() != [g.kh, g.kw, g.c, g.o]
        {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                lhs: inputs[0].shape().to_vec(),
                rhs: inputs[1].shape().to_vec(),
            });
        }
        let cols = self.geometry.im2col(inputs[0].data());
        let out = self.geometry.apply(&cols, inputs[1].data());
        *self.cols.borrow_mut() = Some(cols);
        Ok(out)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, out, grad, &[true, true])
    }
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let g = &self.geometry;
        let (rows, patch, o) = (g.rows(), g.patch(), g.o);
        let cached = self.cols.borrow();
        let recomputed;
        let cols: &[F] = match cached.as_ref() {
            Some(c) => c,
            None => {
                recomputed = g.im2col(inputs[0].data());
                &recomputed
            }
        };
        let dk = needs[1].then(|| {
            let dk = gemm_new(
                patch,
                rows,
                o,
                MatRef::new(cols, patch, true),
                MatRef::new(grad.data(), o, false),
            );
            Tensor::new_unchecked(dk, inputs[1].shape().to_vec())
        });
        let dx = needs[0].then(|| {
            let dcols = gemm_new(
                rows,
                o,
                patch,
                MatRef::new(grad.data(), o, false),
                MatRef::new(inputs[1].data(), o, true),
            );
            Tensor::new_unchecked(g.col2im(&dcols), inputs[0].shape().to_vec())
        });
        Ok(vec![dx, dk])
    }
}

/// Flipout's convolution `conv(x, loc) + conv(x * s_in, delta) * s_out`
/// with per-image channel factors `s_in: [N, C]` and `s_out: [N, O]`.
///
/// A convolution is linear in its kernel, and the factors are constant
/// over each image, so image `b` is convolved with the single kernel
/// `loc + delta * (s_in[b] ⊗ s_out[b])`: one im2col and one GEMM per
/// image, where the unfused graph needs two im2cols and two batch GEMMs
/// plus the sign product and the sum. Backward likewise needs one GEMM per
/// image, `dW_b = cols_b^T g_b`, which gives both `dloc = Σ_b dW_b` and
/// `ddelta = Σ_b dW_b * (s_in[b] ⊗ s_out[b])`. The patch matrix of one
/// image is small enough to stay in cache, so it is rebuilt in backward
/// rather than kept.
struct Conv2dFlipoutOp<F> {
    geometry: ConvGeometry,
    s_in: Vec<F>,
    s_out: Vec<F>,
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
        {
            return Err(Error::ShapeMismatch {
                op: "conv2d_flipout",
                lhs: inputs[0].shape().to_vec(),
                rhs: inputs[2].shape().to_vec(),
            });
        }
        let (x, loc, delta) = (inputs[0].data(), inputs[1].data(), inputs[2].data());
        let (pixels, patch, o) = (g.oh * g.ow, g.patch(), g.o);
        let total = g.rows() * o;
        let mut out = Vec::with_capacity(total);
        // the two halves of the batch on two threads, one image at a time
        par_blocks(
            &mut out.spare_capacity_mut()[..total],
            g.n,
            self.work(),
            |images, out| {
                let (mut cols, mut kernel, mut signs) = (Vec::new(), Vec::new(), Vec::new());
                for (b, out) in images.zip(out.chunks_mut((pixels * o).max(1))) {
                    self.image_signs(b, &mut signs);
                    Self::image_kernel(loc, delta, &signs, &mut kernel);
                    cols.clear();
                    g.im2col_image(x, b, &mut cols);
                    gemm_uninit(
                        pixels,
                        patch,
                        o,
                        MatRef::new(&cols, patch, false),
                        MatRef::new(&kernel, o, false),
                        out,
                    );
                }
            },
        );
        // SAFETY: `par_blocks` gave every image's block of the first
        // `total` elements to one `gemm_uninit`, which writes all of it.
        unsafe { out.set_len(total) };
        Tensor::from_vec(out, &g.output_shape())
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        out: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, out, grad, &[true, true, true])
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
        let kernel_grads = needs[1] || needs[2];
        let mut dx = if needs[0] {
            vec![F::zero(); x.len()]
        } else {
            Vec::new()
        };
        // each half of the batch sums its images' kernel gradients
        let half = |images: Range<usize>, dx: &mut [F]| {
            let size = if kernel_grads { patch * o } else { 0 };
            let (mut dloc, mut ddelta) = (vec![F::zero(); size], vec![F::zero(); size]);
            let (mut cols, mut kernel, mut signs, mut dw) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let first = images.start;
            for b in images {
                let gb = &grad.data()[b * pixels * o..(b + 1) * pixels * o];
                self.image_signs(b, &mut signs);
                if kernel_grads {
                    cols.clear();
                    g.im2col_image(x, b, &mut cols);
                    dw.clear();
                    gemm_append(
                        patch,
                        pixels,
                        o,
                        MatRef::new(&cols, patch, true),
                        MatRef::new(gb, o, false),
                        &mut dw,
                    );
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
            (dloc, ddelta)
        };
        let work = self.work() * (usize::from(kernel_grads) + usize::from(needs[0]));
        let ((dloc0, ddelta0), (dloc1, ddelta1)) = par_blocks(dx.as_mut_slice(), g.n, work, half);
        let sum = |a: Vec<F>, b: Vec<F>| a.into_iter().zip(b).map(|(a, b)| a + b).collect();
        let kernel_shape = inputs[1].shape();
        let wrap = |need: bool, data: Vec<F>| {
            need.then(|| Tensor::new_unchecked(data, kernel_shape.to_vec()))
        };
        Ok(vec![
            needs[0].then(|| Tensor::new_unchecked(dx, inputs[0].shape().to_vec())),
            wrap(needs[1], sum(dloc0, dloc1)),
            wrap(needs[2], sum(ddelta0, ddelta1)),
        ])
    }
}

/// Max pooling over `size x size` windows with a stride (VALID), NHWC.
/// Forward keeps, for every output element, which tap of its window
/// (`ky * size + kx`) held the maximum (the first one on ties); backward
/// adds the gradient there. Both run the two halves of the batch on two
/// threads, with branch-free channel loops that vectorize.
struct MaxPool2d {
    window: Window,
    argmax: RefCell<Vec<u32>>,
}

/// A pooling window: its side and stride.
#[derive(Clone, Copy)]
struct Window {
    size: usize,
    stride: usize,
}

impl MaxPool2d {
    fn out_shape(&self, x: &[usize]) -> Result<Vec<usize>> {
        let Window { size, stride } = self.window;
        if x.len() != 4 {
            return Err(Error::invalid(
                "max_pool2d",
                format!("needs an NHWC input, got shape {x:?}"),
            ));
        }
        if size == 0 || stride == 0 || x[1] < size || x[2] < size {
            return Err(Error::invalid(
                "max_pool2d",
                format!("window {size} stride {stride} does not fit input {x:?}"),
            ));
        }
        Ok(vec![
            x[0],
            (x[1] - size) / stride + 1,
            (x[2] - size) / stride + 1,
            x[3],
        ])
    }
}

impl Window {
    /// Calls `f(output_offset, window_offset)` for every output pixel of
    /// one image: the offsets of its `c` channels in the output and of its
    /// window's first tap in the input image.
    #[inline(always)]
    fn for_each_window(&self, x: &[usize], out: &[usize], mut f: impl FnMut(usize, usize)) {
        let (w, c) = (x[2], x[3]);
        for oy in 0..out[1] {
            for ox in 0..out[2] {
                let window = (oy * self.stride * w + ox * self.stride) * c;
                f((oy * out[2] + ox) * c, window);
            }
        }
    }

    /// The offset of tap `t` from its window's first tap.
    #[inline(always)]
    fn tap_offset(&self, t: usize, x: &[usize]) -> usize {
        ((t / self.size) * x[2] + t % self.size) * x[3]
    }
}

/// Calls `visit(dx_image, first_tap, g, arg)` for every window of every
/// image (of shape `xs`, pooled to `out_shape`), the images split between
/// two threads by [`par_blocks`]: the image's block of `dx`, the offset of
/// the window's first tap in it, and the window's channels of the output
/// gradient and of the argmax.
fn par_each_window<F: Element, T: Send>(
    window: Window,
    (xs, out_shape): (&[usize], &[usize]),
    (grad, arg): (&[F], &[u32]),
    dx: &mut [T],
    visit: impl Fn(&mut [T], usize, &[F], &[u32]) + Sync,
) {
    let (n, c) = (xs[0], xs[3]);
    let per: usize = out_shape[1..].iter().product();
    let image = xs[1] * xs[2] * c;
    let work = dx.len();
    par_blocks(
        dx,
        n,
        work,
        #[inline(always)]
        |images, dx| {
            for (b, dx) in images.zip(dx.chunks_mut(image.max(1))) {
                let (g, arg) = (&grad[b * per..(b + 1) * per], &arg[b * per..(b + 1) * per]);
                window.for_each_window(
                    xs,
                    out_shape,
                    #[inline(always)]
                    |o, first| visit(dx, first, &g[o..o + c], &arg[o..o + c]),
                );
            }
        },
    );
}

impl<F: Element> Op<F> for MaxPool2d {
    fn name(&self) -> &str {
        "max_pool2d"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        let xs = x.shape();
        let out_shape = self.out_shape(xs)?;
        let (n, c) = (xs[0], xs[3]);
        let image = xs[1] * xs[2] * c;
        let d = x.data();
        let len: usize = out_shape.iter().product();
        let (mut out, mut arg) = (Vec::with_capacity(len), Vec::with_capacity(len));
        let (window, taps) = (self.window, self.window.size * self.window.size);
        par_blocks(
            (
                &mut out.spare_capacity_mut()[..len],
                &mut arg.spare_capacity_mut()[..len],
            ),
            n,
            len * taps,
            #[inline(always)]
            |images, (out, arg)| {
                let per = (len / n.max(1)).max(1);
                for (b, (out, arg)) in images.zip(out.chunks_mut(per).zip(arg.chunks_mut(per))) {
                    let d = &d[b * image..(b + 1) * image];
                    window.for_each_window(
                        xs,
                        &out_shape,
                        #[inline(always)]
                        |o, first| {
                            let (best, idx) = (&mut out[o..o + c], &mut arg[o..o + c]);
                            for ((b, i), &v) in best
                                .iter_mut()
                                .zip(idx.iter_mut())
                                .zip(&d[first..first + c])
                            {
                                b.write(v);
                                i.write(0);
                            }
                            // SAFETY: both were initialized just above.
                            let (best, idx) = unsafe { (assume_init(best), assume_init(idx)) };
                            for t in 1..taps {
                                let at = first + window.tap_offset(t, xs);
                                let tap = t as u32;
                                for ((b, i), &v) in
                                    best.iter_mut().zip(idx.iter_mut()).zip(&d[at..at + c])
                                {
                                    let better = v > *b;
                                    *b = if better { v } else { *b };
                                    *i = if better { tap } else { *i };
                                }
                            }
                        },
                    );
                }
            },
        );
        // SAFETY: every output pixel's window was visited above, and wrote
        // all c channels of it in both vectors.
        unsafe {
            out.set_len(len);
            arg.set_len(len);
        }
        *self.argmax.borrow_mut() = arg;
        Tensor::from_vec(out, &out_shape)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let arg = self.argmax.borrow();
        let (arg, window): (&[u32], _) = (&arg, self.window);
        let (xs, out_shape) = (inputs[0].shape(), output.shape());
        let (c, len) = (xs[3], inputs[0].len());
        let taps = window.size * window.size;
        let offsets: Vec<usize> = (0..taps).map(|t| window.tap_offset(t, xs)).collect();
        // Windows that tile the image (stride = size, no leftover rows or
        // columns) cover every input element once: each is written directly,
        // the gradient at its window's maximum and zero elsewhere, in loops
        // over channels that vectorize, into memory not zero-filled first.
        // Otherwise the gradient is added at each maximum.
        let tiled =
            window.stride == window.size && xs[1] % window.size == 0 && xs[2] % window.size == 0;
        let shapes = (xs, out_shape);
        let dx = if tiled {
            let mut dx = Vec::with_capacity(len);
            par_each_window(
                window,
                shapes,
                (grad.data(), arg),
                &mut dx.spare_capacity_mut()[..len],
                #[inline(always)]
                |dx, first, g, arg| {
                    for (t, &offset) in offsets.iter().enumerate() {
                        let at = first + offset;
                        for ((d, &a), &g) in dx[at..at + c].iter_mut().zip(arg).zip(g) {
                            d.write(if a == t as u32 { g } else { F::zero() });
                        }
                    }
                },
            );
            // SAFETY: the tiling windows of every image cover each of its
            // elements, and the loop above wrote every element it covers.
            unsafe { dx.set_len(len) };
            dx
        } else {
            let mut dx = vec![F::zero(); len];
            par_each_window(
                window,
                shapes,
                (grad.data(), arg),
                &mut dx,
                #[inline(always)]
                |dx, first, g, arg| {
                    for ch in 0..c {
                        let at = first + offsets[arg[ch] as usize] + ch;
                        dx[at] = dx[at] + g[ch];
                    }
                },
            );
            dx
        };
        Ok(vec![Some(Tensor::new_unchecked(dx, xs.to_vec()))])
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// 2-D convolution of an NHWC input `[N, H, W, C]` with a kernel
    /// `[KH, KW, C, O]` (cross-correlation, as in TensorFlow).
    pub fn conv2d(self, kernel: Var<'t, F>, stride: usize, padding: Padding) -> Result<Self> {
        let geometry = ConvGeometry::new(&self.shape(), &kernel.shape(), stride, padding)?;
        self.tape.apply(
            Conv2dOp::<F> {
                geometry,
                cols: RefCell::new(None),
            },
            &[self, kernel],
        )
    }

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
        self.tape.apply(
            Conv2dFlipoutOp {
                geometry,
                s_in: s_in.data().to_vec(),
                s_out: s_out.data().to_vec(),
            },
            &[self, loc, delta],
        )
    }

    /// Max pooling over `size x size` windows, NHWC, VALID padding.
    pub fn max_pool2d(self, size: usize, stride: usize) -> Result<Self> {
        self.tape.apply(
            MaxPool2d {
                window: Window { size, stride },
                argmax: RefCell::new(Vec::new()),
            },
            &[self],
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;
    use crate::Padding;

    #[test]
    fn conv_by_hand() {
        // 1x3x3x1 input 1..9, 2x2 kernel of ones, VALID: window sums 12, 16, 24, 28
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_fn(&[1, 3, 3, 1], |i| (i + 1) as f64));
        let k = tape.var(Tensor::ones(&[2, 2, 1, 1]));
        let y = x.conv2d(k, 1, Padding::Valid).unwrap();
        assert_eq!(y.value().data(), &[12., 16., 24., 28.]);
        // SAME with stride 1 keeps 3x3; the corner (2,2) sees only x[2,2] = 9
        let y = x.conv2d(k, 1, Padding::Same).unwrap();
        assert_eq!(y.shape(), vec![1, 3, 3, 1]);
        assert_eq!(y.value().data()[8], 9.0);
        // d sum(y) / dx counts how many windows cover each pixel: centre 4
        let g = y.sum().backward().unwrap();
        assert_eq!(g.get(x).unwrap().data()[0], 1.0);
        assert_eq!(g.get(x).unwrap().data()[4], 4.0);
    }

    #[test]
    fn max_pool_matches_a_naive_pool_on_both_thread_paths() {
        // small integers: many ties, which go to the first tap in window order
        for (shape, size, stride) in [
            ([2, 5, 5, 3], 2, 2),
            ([4, 20, 18, 16], 3, 2),
            ([3, 17, 16, 32], 2, 2),
            // windows that tile the input, on one thread and on two
            ([2, 6, 4, 5], 2, 2),
            ([4, 32, 32, 16], 2, 2),
        ] {
            let tape = Tape::<f64>::new();
            let x = tape.var(Tensor::from_fn(&shape, |i| (((i * 7919) % 13) / 4) as f64));
            let y = x.max_pool2d(size, stride).unwrap();
            let ys = y.shape();
            let weights = Tensor::from_fn(&ys, |i| 1.0 + i as f64);
            let g = (y * weights.clone()).sum().backward().unwrap();
            let (xv, dx) = (x.value(), g.get(x).unwrap().clone());
            let mut want_dx = vec![0.0; xv.len()];
            let at = |b: usize, iy: usize, ix: usize, ch: usize| {
                ((b * shape[1] + iy) * shape[2] + ix) * shape[3] + ch
            };
            for b in 0..ys[0] {
                for oy in 0..ys[1] {
                    for ox in 0..ys[2] {
                        for ch in 0..ys[3] {
                            let mut best = at(b, oy * stride, ox * stride, ch);
                            for ky in 0..size {
                                for kx in 0..size {
                                    let i = at(b, oy * stride + ky, ox * stride + kx, ch);
                                    if xv.data()[i] > xv.data()[best] {
                                        best = i;
                                    }
                                }
                            }
                            let o = ((b * ys[1] + oy) * ys[2] + ox) * ys[3] + ch;
                            assert_eq!(y.value().data()[o], xv.data()[best], "{shape:?}");
                            want_dx[best] += weights.data()[o];
                        }
                    }
                }
            }
            assert_eq!(dx.data(), &want_dx[..], "{shape:?}");
        }
    }

    #[test]
    fn empty_batches_and_channels_give_empty_results() {
        let tape = Tape::<f64>::new();
        let no_out = tape.var(Tensor::zeros(&[2, 2, 1, 0]));
        let x = tape.var(Tensor::ones(&[2, 3, 3, 1]));
        let signs = (Tensor::ones(&[2, 1]), Tensor::zeros(&[2, 0]));
        let y = x
            .conv2d_flipout(no_out, no_out, &signs.0, &signs.1, 1, Padding::Valid)
            .unwrap();
        assert_eq!(y.shape(), vec![2, 2, 2, 0]);
        assert_eq!(
            y.sum().backward().unwrap().get(x).unwrap().data(),
            &[0.0; 18]
        );
        let k = tape.var(Tensor::ones(&[2, 2, 1, 3]));
        let none = tape.var(Tensor::zeros(&[0, 3, 3, 1]));
        let signs = (Tensor::zeros(&[0, 1]), Tensor::zeros(&[0, 3]));
        let y = none
            .conv2d_flipout(k, k, &signs.0, &signs.1, 1, Padding::Same)
            .unwrap();
        assert_eq!(y.shape(), vec![0, 3, 3, 3]);
        assert!(y.sum().backward().is_ok());
        let y = tape
            .var(Tensor::zeros(&[2, 4, 4, 0]))
            .max_pool2d(2, 2)
            .unwrap();
        assert_eq!(y.shape(), vec![2, 2, 2, 0]);
        assert!(y.sum().backward().is_ok());
    }

    #[test]
    fn max_pool_by_hand() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::from_vec(vec![1., 5., 3., 2.], &[1, 2, 2, 1]).unwrap());
        let y = x.max_pool2d(2, 2).unwrap();
        assert_eq!(y.value().data(), &[5.]);
        assert_eq!(
            y.sum().backward().unwrap().get(x).unwrap().data(),
            &[0., 1., 0., 0.]
        );
    }
}
