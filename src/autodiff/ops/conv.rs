//! 2-D convolution (NHWC, im2col + GEMM) and the geometry the
//! convolution ops share.

use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::gemm::{MatRef, gathers, gemm_gathered_new, gemm_new};
use crate::kernels::parallel::vectorized;
use crate::tensor::Storage;
use crate::tensor::{Element, Tensor, checked_numel};
use std::cell::RefCell;
use std::mem::MaybeUninit;

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
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) o: usize,
    pub(crate) stride: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) pad_top: usize,
    pub(crate) pad_left: usize,
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
        let too_large = |shape: &[usize]| Error::TooLarge {
            what: "conv2d".into(),
            shape: shape.to_vec(),
            reason: format!(
                "the convolution of {x:?} with {k:?} has more elements than memory addresses"
            ),
        };
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
                // (o - 1) stride < the input's size; the kernel's side may be
                // anything when its channels are empty
                let pad = |o: usize, k: usize, len: usize| {
                    ((o.max(1) - 1) * stride)
                        .checked_add(k)
                        .map(|need| need.saturating_sub(len) / 2)
                };
                match (pad(oh, kh, h), pad(ow, kw, w)) {
                    (Some(top), Some(left)) => (oh, ow, top, left),
                    _ => return Err(too_large(k)),
                }
            }
        };
        // the output and the patch matrix, in f64 (the larger element)
        for shape in [[n, oh, ow, o, 1, 1], [n, oh, ow, kh, kw, c]] {
            let fits = checked_numel(&shape)
                .and_then(|len| len.checked_mul(8))
                .is_some_and(|bytes| bytes <= isize::MAX as usize);
            if !fits {
                return Err(too_large(&shape));
            }
        }
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

    pub(crate) fn rows(&self) -> usize {
        self.n * self.oh * self.ow
    }

    pub(crate) fn patch(&self) -> usize {
        self.kh * self.kw * self.c
    }

    pub(crate) fn image_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// The kernel columns `[lo, hi)` whose taps fall inside the input for
    /// an output position starting at `base` (before padding) along an
    /// axis of length `len`: the in-bounds taps are contiguous in memory.
    pub(crate) fn taps(base: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
        let lo = pad.saturating_sub(base).min(k);
        let hi = (len + pad).saturating_sub(base).min(k).max(lo);
        (lo, hi)
    }

    /// Calls `f(col_offset, input_offset, len)` for every run of in-bounds
    /// taps of the patches of one image (row by row): `len` elements of the
    /// image starting at `input_offset` belong in the patch matrix at
    /// `col_offset`. Everything else in the patch matrix is padding.
    pub(crate) fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
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
    /// `oh * ow x patch` matrix (zeros where padded). Row by row: a window
    /// inside the image is `kh` copies of `kw * c` elements (the image's
    /// rows under it), written once; a window that overlaps the padding is
    /// zeroed first, then its in-bounds taps copied.
    pub(crate) fn im2col_image<F: Element>(&self, x: &[F], b: usize, cols: &mut Vec<F>) {
        let image = &x[b * self.image_len()..(b + 1) * self.image_len()];
        let (start, total) = (cols.len(), self.oh * self.ow * self.patch());
        cols.reserve(total);
        let mut rows = cols.spare_capacity_mut()[..total].chunks_exact_mut(self.patch().max(1));
        let (c, line) = (self.c, self.w * self.c);
        vectorized(
            #[inline(always)]
            || {
                'image: for oy in 0..self.oh {
                    let (y0, y1) = Self::taps(oy * self.stride, self.pad_top, self.kh, self.h);
                    for ox in 0..self.ow {
                        let Some(row) = rows.next() else {
                            break 'image; // an empty patch
                        };
                        let (x0, x1) = Self::taps(ox * self.stride, self.pad_left, self.kw, self.w);
                        if (y1 - y0, x1 - x0) != (self.kh, self.kw) {
                            row.fill(MaybeUninit::new(F::zero()));
                        }
                        if x0 == x1 || y0 == y1 {
                            continue;
                        }
                        // the window's first in-bounds tap in the image
                        let iy = oy * self.stride + y0 - self.pad_top;
                        let ix = ox * self.stride + x0 - self.pad_left;
                        let (from, len) = ((iy * self.w + ix) * c, (x1 - x0) * c);
                        for ky in y0..y1 {
                            let (at, src) = ((ky * self.kw + x0) * c, from + (ky - y0) * line);
                            write_copy(&mut row[at..at + len], &image[src..src + len]);
                        }
                    }
                }
            },
        );
        // SAFETY: the loop wrote each of the `oh * ow` rows of `patch`
        // elements: zeroed where its window overlaps the padding, and its
        // in-bounds taps copied (for a window inside the image, all of it).
        unsafe { cols.set_len(start + total) };
    }

    /// The height and width of the padded image every window fits in:
    /// `(oh - 1) stride + kh` by `(ow - 1) stride + kw`.
    fn padded_size(&self) -> (usize, usize) {
        let side = |out: usize, k: usize| (out.max(1) - 1) * self.stride + k;
        (side(self.oh, self.kh), side(self.ow, self.kw))
    }

    /// Image `b` of `x` zero-padded to [`padded_size`](Self::padded_size)
    /// (the padding before the image on top and left, the rest after),
    /// appended to `out`: the patch of output pixel `i` at tap `p` is then
    /// `out[pixels[i] + taps[p]]` with the offsets of
    /// [`gather_offsets`](Self::gather_offsets).
    pub(crate) fn padded_image<F: Element>(&self, x: &[F], b: usize, out: &mut Vec<F>) {
        let image = &x[b * self.image_len()..(b + 1) * self.image_len()];
        let (hp, wp) = self.padded_size();
        let c = self.c;
        let start = out.len();
        out.resize(start + hp * wp * c, F::zero());
        let out = &mut out[start..];
        // the image's columns that land inside the padded width
        let x0 = self.pad_left.min(wp);
        let cols = self.w.min(wp - x0);
        for y in 0..hp {
            let Some(iy) = y.checked_sub(self.pad_top).filter(|&iy| iy < self.h) else {
                continue;
            };
            let (to, from) = ((y * wp + x0) * c, iy * self.w * c);
            out[to..to + cols * c].copy_from_slice(&image[from..from + cols * c]);
        }
    }

    /// The offsets of [`padded_image`](Self::padded_image)'s patches: of
    /// each output pixel's window in the padded image, and of each tap
    /// (`(ky, kx, channel)`, the patch matrix's column order) in a window.
    pub(crate) fn gather_offsets(&self) -> (Vec<isize>, Vec<isize>) {
        let (_, wp) = self.padded_size();
        let (s, c) = (self.stride, self.c);
        let pixels = (0..self.oh)
            .flat_map(|oy| (0..self.ow).map(move |ox| ((oy * s * wp + ox * s) * c) as isize))
            .collect();
        let taps = (0..self.kh)
            .flat_map(|ky| (0..self.kw * c).map(move |j| (ky * wp * c + j) as isize))
            .collect();
        (pixels, taps)
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
    pub(crate) fn col2im_image_add<F: Element>(&self, cols: &[F], image: &mut [F]) {
        self.for_each_run(|col, src, len| {
            image[src..src + len]
                .iter_mut()
                .zip(&cols[col..col + len])
                .for_each(|(a, &b)| *a = *a + b);
        });
    }

    /// Scatter-adds a `rows x patch` matrix back into an input-shaped buffer.
    pub(crate) fn col2im<F: Element>(&self, cols: &[F]) -> Vec<F> {
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
/// Forward keeps the patches for the backward pass:
/// `dK = cols^T g`, `dx = col2im(g K^T)`. In `f32` on AVX-512 or AVX2 they are the
/// zero-padded images, which the products read the patch matrix from
/// through tables of offsets (the same bits as the built matrix); else the
/// im2col matrix.
struct Conv2dOp<F> {
    geometry: ConvGeometry,
    saved: RefCell<Option<Patches<F>>>,
}

/// The patches of a whole batch, as [`Conv2dOp`] keeps them.
enum Patches<F> {
    /// The im2col matrix, `rows x patch`.
    Built(Vec<F>),
    /// The images zero-padded one after the other, and the offsets of
    /// every output pixel's window in them (all images' pixels in order)
    /// and of every tap in a window.
    Gathered {
        images: Vec<F>,
        windows: Vec<isize>,
        taps: Vec<isize>,
    },
}

impl ConvGeometry {
    /// The batch's [`Patches`]: gathered where [`gathers`] allows the
    /// products, else built.
    fn batch_patches<F: Element>(&self, x: &[F]) -> Patches<F> {
        if !gathers::<F>(self.rows(), self.patch(), self.o) {
            return Patches::Built(self.im2col(x));
        }
        let (windows, taps) = self.gather_offsets();
        let mut images = Vec::new();
        for b in 0..self.n {
            self.padded_image(x, b, &mut images);
        }
        let per = (images.len() / self.n.max(1)) as isize;
        let windows = (0..self.n as isize)
            .flat_map(|b| windows.iter().map(move |&w| b * per + w))
            .collect();
        Patches::Gathered {
            images,
            windows,
            taps,
        }
    }

    /// `patches @ kernel` as an NHWC output.
    fn apply_patches<F: Element>(&self, patches: &Patches<F>, kernel: &[F]) -> Tensor<F> {
        match patches {
            Patches::Built(cols) => self.apply(cols, kernel),
            Patches::Gathered {
                images,
                windows,
                taps,
            } => {
                let out = gemm_gathered_new(images, (windows, taps), kernel, self.o);
                Tensor::new_unchecked(out, self.output_shape())
            }
        }
    }

    /// `patches^T grad`, the kernel's gradient (`patch x o`).
    fn kernel_grad<F: Element>(&self, patches: &Patches<F>, grad: &[F]) -> Storage<F> {
        let (rows, patch, o) = (self.rows(), self.patch(), self.o);
        match patches {
            Patches::Built(cols) => gemm_new(
                patch,
                rows,
                o,
                MatRef::new(cols, patch, true),
                MatRef::new(grad, o, false),
            ),
            Patches::Gathered {
                images,
                windows,
                taps,
            } => gemm_gathered_new(images, (taps, windows), grad, o),
        }
    }
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
        let patches = self.geometry.batch_patches(inputs[0].data());
        let out = self.geometry.apply_patches(&patches, inputs[1].data());
        *self.saved.borrow_mut() = Some(patches);
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
        let saved = self.saved.borrow();
        let recomputed;
        let patches = match saved.as_ref() {
            Some(p) => p,
            None => {
                recomputed = g.batch_patches(inputs[0].data());
                &recomputed
            }
        };
        let dk = needs[1].then(|| {
            let dk = g.kernel_grad(patches, grad.data());
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

impl<'t, F: Element> Var<'t, F> {
    /// 2-D convolution of an NHWC input `[N, H, W, C]` with a kernel
    /// `[KH, KW, C, O]` (cross-correlation, as in TensorFlow).
    pub fn conv2d(self, kernel: Var<'t, F>, stride: usize, padding: Padding) -> Result<Self> {
        let geometry = ConvGeometry::new(&self.shape(), &kernel.shape(), stride, padding)?;
        self.tape.apply(
            Conv2dOp::<F> {
                geometry,
                saved: RefCell::new(None),
            },
            &[self, kernel],
        )
    }
}

/// Copies `src` into `dst` (of the same length): a `memcpy`.
#[inline(always)]
fn write_copy<F: Copy>(dst: &mut [MaybeUninit<F>], src: &[F]) {
    assert_eq!(dst.len(), src.len(), "a run is copied to a run as long");
    // SAFETY: `MaybeUninit<F>` has the layout of `F`, both cover
    // `src.len()` elements, and a unique borrow overlaps no other.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), src.len()) };
}

#[cfg(test)]
mod tests {
    use crate::Padding;
    use crate::prelude::*;
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

    /// The patch matrix against its definition, element by element: every
    /// padding, stride and kernel size up to larger than the image, an
    /// empty channel axis, and two images appended to one buffer.
    #[test]
    fn im2col_writes_every_tap_or_a_zero() {
        use super::ConvGeometry;
        for (h, w, c) in [(5, 4, 3), (1, 1, 2), (3, 6, 1), (4, 4, 0)] {
            for (kh, kw) in [(1, 1), (2, 3), (3, 3), (5, 5), (7, 2)] {
                for stride in 1..=3 {
                    for padding in [Padding::Valid, Padding::Same] {
                        let (x, k) = ([2, h, w, c], [kh, kw, c, 4]);
                        let Ok(g) = ConvGeometry::new(&x, &k, stride, padding) else {
                            assert!(padding == Padding::Valid && (h < kh || w < kw));
                            continue;
                        };
                        let data: Vec<f32> = (0..2 * h * w * c).map(|i| i as f32 + 1.0).collect();
                        let mut cols = vec![-1.0f32; 3];
                        g.im2col_image(&data, 0, &mut cols);
                        g.im2col_image(&data, 1, &mut cols);
                        let mut want = vec![-1.0f32; 3];
                        for b in 0..2 {
                            for (oy, ox) in
                                (0..g.oh).flat_map(|oy| (0..g.ow).map(move |ox| (oy, ox)))
                            {
                                for (ky, kx, ch) in (0..kh).flat_map(|ky| {
                                    (0..kw).flat_map(move |kx| (0..c).map(move |ch| (ky, kx, ch)))
                                }) {
                                    let iy = (oy * stride + ky) as isize - g.pad_top as isize;
                                    let ix = (ox * stride + kx) as isize - g.pad_left as isize;
                                    let inside = (0..h as isize).contains(&iy)
                                        && (0..w as isize).contains(&ix);
                                    want.push(if inside {
                                        data[((b * h + iy as usize) * w + ix as usize) * c + ch]
                                    } else {
                                        0.0
                                    });
                                }
                            }
                        }
                        assert_eq!(cols, want, "{x:?} {k:?} stride {stride} {padding:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_settings::persisted(48, "proptest-regressions/conv.txt"))]

        /// `conv2d` over random geometries on the AVX-512 and AVX2 tiers (the
        /// patches read from the padded images where the products are large
        /// enough) and on the portable tier (im2col): the same bits, values
        /// and both gradients.
        #[test]
        fn conv2d_reads_the_patches_im2col_builds(
            (n, h, w, c) in (1..4usize, 1..12usize, 1..12usize, 1..4usize),
            (kh, kw, o) in (1..6usize, 1..6usize, 1..24usize),
            (stride, same) in (1..4usize, proptest::bool::ANY),
        ) {
            use crate::kernels::parallel::{Tier, on_tier};
            let padding = if same { Padding::Same } else { Padding::Valid };
            let values = |shape: &[usize], phase: f32| {
                Tensor::from_fn(shape, |i| ((i as f32) * 0.77 + phase).sin())
            };
            let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let run = |tier| {
                on_tier(tier, || {
                    let tape = Tape::<f32>::new();
                    let x = tape.var(values(&[n, h, w, c], 0.2));
                    let k = tape.var(values(&[kh, kw, c, o], 0.4));
                    let Ok(y) = x.conv2d(k, stride, padding) else { return None };
                    let weights = tape.constant(values(&y.shape(), 0.5));
                    let g = (y * weights).sum().backward().ok()?;
                    let mut all = bits(&y.value());
                    all.extend(bits(g.get(x)?));
                    all.extend(bits(g.get(k)?));
                    Some(all)
                })
            };
            // both values, or both errors (a geometry that does not fit)
            for tier in [Tier::Avx512, Tier::Avx2Fma].into_iter().filter(|t| t.supported()) {
                proptest::prop_assert_eq!(run(tier), run(Tier::Portable));
            }
        }
    }
}
