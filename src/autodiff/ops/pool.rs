//! Max pooling (NHWC, VALID windows).

use crate::autodiff::tape::{Op, Var};
use crate::error::{Error, Result};
use crate::kernels::gemm::assume_init;
use crate::kernels::parallel::par_blocks;
use crate::tensor::{Element, Tensor};
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Max pooling over `size x size` windows with a stride (VALID), NHWC.
/// Forward keeps, for every output element, which tap of its window
/// (`ky * size + kx`) held the maximum (the first one on ties; a NaN is
/// the maximum of any window that holds one, so it is not dropped); backward
/// adds the gradient there. Both run the two halves of the batch on two
/// threads, with branch-free channel loops that vectorize.
struct MaxPool2d {
    window: Window,
    argmax: RefCell<Vec<u32>>,
}

/// A pooling window: its side and stride.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) size: usize,
    pub(crate) stride: usize,
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

/// Max-pools one image `d` (its shape `xs`, pooled to `out_shape`; the
/// batch axis is not read) into `out`, and the tap of each maximum into
/// `arg`: every element of both is written.
#[inline(always)]
pub(crate) fn pool_image<F: Element>(
    window: Window,
    (xs, out_shape): (&[usize], &[usize]),
    d: &[F],
    (out, arg): (&mut [MaybeUninit<F>], &mut [MaybeUninit<u32>]),
) {
    let (c, taps) = (xs[3], window.size * window.size);
    window.for_each_window(
        xs,
        out_shape,
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
                for ((b, i), &v) in best.iter_mut().zip(idx.iter_mut()).zip(&d[at..at + c]) {
                    // a NaN wins over any number, and the first NaN over
                    // later ones
                    let better = v > *b || (v.is_nan() && !b.is_nan());
                    *b = if better { v } else { *b };
                    *i = if better { tap } else { *i };
                }
            }
        },
    );
}

/// The gradient of one image of max pooling over windows that tile it
/// (stride = size, no leftover rows or columns), into `dx` (the image's
/// shape `xs`): the output gradient `g` at each window's maximum (its tap
/// in `arg`) and zero elsewhere, every element written once, in loops over
/// channels that vectorize.
#[inline(always)]
pub(crate) fn spread_image<F: Element>(
    window: Window,
    (xs, out_shape): (&[usize], &[usize]),
    (g, arg): (&[F], &[u32]),
    dx: &mut [MaybeUninit<F>],
) {
    let c = xs[3];
    let taps = window.size * window.size;
    window.for_each_window(
        xs,
        out_shape,
        #[inline(always)]
        |o, first| {
            let (g, arg) = (&g[o..o + c], &arg[o..o + c]);
            for t in 0..taps {
                let at = first + window.tap_offset(t, xs);
                for ((d, &a), &g) in dx[at..at + c].iter_mut().zip(arg).zip(g) {
                    d.write(if a == t as u32 { g } else { F::zero() });
                }
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
                    pool_image(window, (xs, &out_shape), d, (out, arg));
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
            let (n, per) = (xs[0], output.len() / xs[0].max(1));
            let image = len / n.max(1);
            let (g, arg) = (grad.data(), arg);
            par_blocks(
                &mut dx.spare_capacity_mut()[..len],
                n,
                len,
                #[inline(always)]
                |images, dx| {
                    for (b, dx) in images.zip(dx.chunks_mut(image.max(1))) {
                        let part = b * per..(b + 1) * per;
                        spread_image(window, shapes, (&g[part.clone()], &arg[part]), dx);
                    }
                },
            );
            // SAFETY: the tiling windows of every image cover each of its
            // elements, and `spread_image` wrote every element it covers.
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

    #[test]
    fn a_nan_in_a_window_is_its_maximum() {
        // one image, 2 x 2, one channel: the NaN sits in the last tap
        for (values, nan) in [
            ([1.0, 2.0, 3.0, f64::NAN], true),
            ([1.0, 2.0, 3.0, 0.5], false),
        ] {
            let tape = Tape::<f64>::new();
            let x = tape.var(Tensor::from_vec(values.to_vec(), &[1, 2, 2, 1]).unwrap());
            let y = x.max_pool2d(2, 2).unwrap().value().data()[0];
            assert_eq!(y.is_nan(), nan, "{values:?} pooled to {y}");
        }
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
