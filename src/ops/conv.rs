//! 2-D convolution (NHWC, im2col + GEMM) and max pooling.

use crate::error::{Error, Result};
use crate::tape::{Op, Var};
use crate::tensor::{gemm_new, Element, MatRef, Tensor};
use std::cell::RefCell;

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

    /// Calls `f(col_row, col_offset, input_offset)` for every in-bounds
    /// (output position, kernel tap): the copy of `c` channels between them.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        for b in 0..self.n {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let row = (b * self.oh + oy) * self.ow + ox;
                    for ky in 0..self.kh {
                        let iy = (oy * self.stride + ky) as isize - self.pad_top as isize;
                        if iy < 0 || iy >= self.h as isize {
                            continue;
                        }
                        for kx in 0..self.kw {
                            let ix = (ox * self.stride + kx) as isize - self.pad_left as isize;
                            if ix < 0 || ix >= self.w as isize {
                                continue;
                            }
                            let col = (ky * self.kw + kx) * self.c;
                            let src = ((b * self.h + iy as usize) * self.w + ix as usize) * self.c;
                            f(row, col, src);
                        }
                    }
                }
            }
        }
    }

    /// The patches of `x` as a `rows x patch` matrix (zeros where padded),
    /// written once, row by row (no zero-fill of the whole matrix first).
    pub(crate) fn im2col<F: Element>(&self, x: &[F]) -> Vec<F> {
        let c = self.c;
        let mut cols = Vec::with_capacity(self.rows() * self.patch());
        for b in 0..self.n {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    for ky in 0..self.kh {
                        let iy = (oy * self.stride + ky) as isize - self.pad_top as isize;
                        for kx in 0..self.kw {
                            let ix = (ox * self.stride + kx) as isize - self.pad_left as isize;
                            if iy < 0 || iy >= self.h as isize || ix < 0 || ix >= self.w as isize {
                                cols.extend(std::iter::repeat_n(F::zero(), c));
                            } else {
                                let src = ((b * self.h + iy as usize) * self.w + ix as usize) * c;
                                cols.extend_from_slice(&x[src..src + c]);
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    /// Scatter-adds a `rows x patch` matrix back into an input-shaped buffer.
    fn col2im<F: Element>(&self, cols: &[F]) -> Vec<F> {
        let (p, c) = (self.patch(), self.c);
        let mut x = vec![F::zero(); self.n * self.h * self.w * self.c];
        self.for_each_tap(|row, col, src| {
            let s = &cols[row * p + col..row * p + col + c];
            x[src..src + c]
                .iter_mut()
                .zip(s)
                .for_each(|(a, &b)| *a = *a + b);
        });
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

/// Max pooling over `size x size` windows with a stride (VALID), NHWC.
/// Forward keeps, for every output element, the input position of its
/// maximum (the first one on ties); backward scatters the gradient there.
struct MaxPool2d {
    size: usize,
    stride: usize,
    argmax: RefCell<Vec<usize>>,
}

impl MaxPool2d {
    fn out_shape(&self, x: &[usize]) -> Result<Vec<usize>> {
        if x.len() != 4 {
            return Err(Error::invalid(
                "max_pool2d",
                format!("needs an NHWC input, got shape {x:?}"),
            ));
        }
        if self.size == 0 || self.stride == 0 || x[1] < self.size || x[2] < self.size {
            return Err(Error::invalid(
                "max_pool2d",
                format!(
                    "window {} stride {} does not fit input {x:?}",
                    self.size, self.stride
                ),
            ));
        }
        Ok(vec![
            x[0],
            (x[1] - self.size) / self.stride + 1,
            (x[2] - self.size) / self.stride + 1,
            x[3],
        ])
    }
}

impl<F: Element> Op<F> for MaxPool2d {
    fn name(&self) -> &str {
        "max_pool2d"
    }
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let x = inputs[0];
        let out_shape = self.out_shape(x.shape())?;
        let (h, w, c) = (x.shape()[1], x.shape()[2], x.shape()[3]);
        let d = x.data();
        let mut out = vec![F::zero(); out_shape.iter().product()];
        let mut arg = vec![0usize; out.len()];
        let mut o = 0;
        for b in 0..out_shape[0] {
            for oy in 0..out_shape[1] {
                for ox in 0..out_shape[2] {
                    // start from the first tap, then take channel-wise maxima over the others
                    let first = ((b * h + oy * self.stride) * w + ox * self.stride) * c;
                    let (best, idx) = (&mut out[o..o + c], &mut arg[o..o + c]);
                    best.copy_from_slice(&d[first..first + c]);
                    for (ch, i) in idx.iter_mut().enumerate() {
                        *i = first + ch;
                    }
                    for ky in 0..self.size {
                        for kx in 0..self.size {
                            let start =
                                ((b * h + oy * self.stride + ky) * w + ox * self.stride + kx) * c;
                            let row = &d[start..start + c];
                            for ch in 0..c {
                                if row[ch] > best[ch] {
                                    best[ch] = row[ch];
                                    idx[ch] = start + ch;
                                }
                            }
                        }
                    }
                    o += c;
                }
            }
        }
        *self.argmax.borrow_mut() = arg;
        Tensor::from_vec(out, &out_shape)
    }
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        _: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let arg = self.argmax.borrow();
        let mut dx = Tensor::zeros(inputs[0].shape());
        let d = dx.data_mut();
        for (&i, &g) in arg.iter().zip(grad.data()) {
            d[i] = d[i] + g;
        }
        Ok(vec![Some(dx)])
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

    /// Max pooling over `size x size` windows, NHWC, VALID padding.
    pub fn max_pool2d(self, size: usize, stride: usize) -> Result<Self> {
        self.tape.apply(
            MaxPool2d {
                size,
                stride,
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
