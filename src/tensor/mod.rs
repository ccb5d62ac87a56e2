//! `Tensor<F>`: a shape and a contiguous row-major buffer, with the numeric
//! kernels the ops are built from. No autodiff lives here.

mod random;
mod storage;

pub use crate::kernels::Element;
pub(crate) use random::{rademacher, standard_normal, unit_draws};

use crate::error::{Error, Result};
use crate::kernels::gemm::{MatRef, Product, gemm_new};
use std::fmt;
use std::ops::DerefMut;
use std::sync::Arc;
pub(crate) use storage::{ALIGNED_MIN_BYTES, LINE, Storage, Uninit};

/// A dense tensor: a shape and its elements in row-major order.
///
/// ```
/// use bayesgrad::Tensor;
/// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// assert_eq!(t.shape(), &[2, 3]);
/// assert_eq!(t.sum_axis(1, false)?.data(), &[6.0, 15.0]);
/// assert!(Tensor::from_vec(vec![1.0, 2.0], &[3]).is_err());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor<F> {
    shape: Vec<usize>,
    /// Shared, copy-on-write: cloning a tensor (a parameter read, a
    /// gradient passed on unchanged, a reshape) copies no elements.
    data: Arc<Storage<F>>,
}

impl<F: fmt::Debug> fmt::Debug for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(f, "Tensor{:?} [", self.shape)?;
        for (i, x) in self.data.iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{x:?}")?;
        }
        if self.data.len() > SHOWN {
            write!(f, ", … {} more", self.data.len() - SHOWN)?;
        }
        write!(f, "]")
    }
}

/// Nested brackets, row by row, as NumPy prints: at most 6 entries per
/// axis (the first and last 3 around `...`), and the precision of the
/// formatter (`{:.3}`) applied to every element.
///
/// ```
/// use bayesgrad::Tensor;
/// let t = Tensor::from_rows(&[[1.0, 2.5], [-3.0, 4.0]])?;
/// assert_eq!(format!("{t}"), "[[1, 2.5],\n [-3, 4]]");
/// assert_eq!(format!("{:.1}", Tensor::vector(&[0.25, 1.0])), "[0.2, 1.0]");
/// # Ok::<(), bayesgrad::Error>(())
/// ```
impl<F: fmt::Display> fmt::Display for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write_axis<F: fmt::Display>(
            f: &mut fmt::Formatter<'_>,
            data: &[F],
            shape: &[usize],
            depth: usize,
        ) -> fmt::Result {
            let Some((&n, rest)) = shape.split_first() else {
                return match f.precision() {
                    Some(p) => write!(f, "{:.*}", p, data[0]),
                    None => write!(f, "{}", data[0]),
                };
            };
            let block: usize = rest.iter().product();
            let sep = if rest.is_empty() {
                ", ".to_string()
            } else {
                format!(",\n{}", " ".repeat(depth + 1))
            };
            write!(f, "[")?;
            let shown: Vec<usize> = if n > 6 {
                (0..3).chain(n - 3..n).collect()
            } else {
                (0..n).collect()
            };
            for (k, &i) in shown.iter().enumerate() {
                if k > 0 {
                    write!(f, "{sep}")?;
                }
                if n > 6 && k == 3 {
                    write!(f, "...{sep}")?;
                }
                write_axis(f, &data[i * block..(i + 1) * block], rest, depth + 1)?;
            }
            write!(f, "]")
        }
        if self.data.is_empty() {
            return write!(f, "[] (shape {:?})", self.shape);
        }
        write_axis(f, &self.data, &self.shape, 0)
    }
}

/// Number of elements of a shape.
///
/// # Panics
/// If the count overflows `usize` (no tensor of that shape can exist);
/// [`checked_numel`] returns `None` instead.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape)
        .unwrap_or_else(|| panic!("shape {shape:?} has more elements than usize can count"))
}

/// Number of elements of a shape, `None` if it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The element count of a new buffer of `shape` for `what`, checked before
/// anything is allocated: the count and the byte size must fit (`isize::MAX`
/// bytes, Rust's limit), and a buffer above 64 MiB is reserved once as a
/// probe, so that a size the allocator refuses is an error instead of an
/// abort of the process.
pub(crate) fn checked_alloc<F>(what: &str, shape: &[usize]) -> Result<usize> {
    let too_large = |reason: String| Error::TooLarge {
        what: what.to_string(),
        shape: shape.to_vec(),
        reason,
    };
    let len =
        checked_numel(shape).ok_or_else(|| too_large("the element count overflows".into()))?;
    let bytes = len
        .checked_mul(std::mem::size_of::<F>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| too_large(format!("{len} elements exceed the address space")))?;
    if bytes > 64 << 20 {
        let mut probe: Vec<F> = Vec::new();
        probe
            .try_reserve_exact(len)
            .map_err(|e| too_large(format!("{bytes} bytes could not be allocated: {e}")))?;
    }
    Ok(len)
}

/// The NumPy broadcast of two shapes, or `None` if they are incompatible
/// (or the broadcast has more elements than `usize` counts).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    // None as well when the broadcast has more elements than usize counts
    checked_numel(&out).map(|_| out)
}

/// Strides (in elements) of `shape` when read as `out_shape`; broadcast axes get 0.
fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let offset = out_shape.len() - shape.len();
    let mut strides = vec![0; out_shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[i + offset] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    strides
}

/// Calls `f(out_index, src_index)` for every element of `out_shape`, where
/// `src_index` is the element of a tensor of `shape` broadcast to it.
///
/// The walk itself is [`broadcast_runs`], compiled once; what is generic
/// (and so compiled for every `f`) is only the two loops over a run.
#[inline]
fn for_each_broadcast(shape: &[usize], out_shape: &[usize], mut f: impl FnMut(usize, usize)) {
    broadcast_runs(shape, out_shape, &mut |out, src, len, step| {
        if step == 1 {
            (0..len).for_each(|k| f(out + k, src + k));
        } else {
            (0..len).for_each(|k| f(out + k, src));
        }
    });
}

/// Covers `out_shape` in order with runs `run(out_start, src_start, len,
/// step)`: output elements `out_start..out_start + len` take source elements
/// `src_start + k * step`, where `step` is 1 (the source is contiguous
/// along the run) or 0 (one source element, broadcast along the run).
fn broadcast_runs(
    shape: &[usize],
    out_shape: &[usize],
    run: &mut dyn FnMut(usize, usize, usize, usize),
) {
    let n = numel(out_shape);
    let src_len = numel(shape);
    if n == 0 || src_len == 0 {
        return; // nothing to visit (an empty source only broadcasts to an empty output)
    }
    if shape == out_shape {
        return run(0, 0, n, 1);
    }
    if src_len == 1 {
        return run(0, 0, n, 0);
    }
    // `shape` (without leading ones) is a suffix of `out_shape`: plain repetition.
    let lead = shape.iter().take_while(|&&d| d == 1).count();
    if out_shape.ends_with(&shape[lead..]) {
        for block in (0..n).step_by(src_len) {
            run(block, 0, src_len, 1);
        }
        return;
    }
    // The trailing axes that are all kept (the source contiguous along them)
    // or all broadcast (one source element along them) make the run; a
    // multi-index walks the axes above them.
    let rank = out_shape.len();
    let offset = rank - shape.len();
    let src_dim = |ax: usize| if ax < offset { 1 } else { shape[ax - offset] };
    let kept = |ax: usize| src_dim(ax) == out_shape[ax];
    let last = (0..rank).rev().find(|&ax| out_shape[ax] != 1).unwrap_or(0);
    let step = usize::from(kept(last));
    let mut split = rank;
    while split > 0 && (out_shape[split - 1] == 1 || kept(split - 1) == (step == 1)) {
        split -= 1;
    }
    let len: usize = out_shape[split..].iter().product();
    let strides = broadcast_strides(shape, out_shape);
    let mut idx = vec![0usize; split];
    let mut src = 0usize;
    let mut out = 0;
    while out < n {
        run(out, src, len, step);
        out += len;
        for ax in (0..split).rev() {
            idx[ax] += 1;
            src += strides[ax];
            if idx[ax] < out_shape[ax] {
                break;
            }
            src -= strides[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
}

/// Splits a shape around `axis` into (outer, axis length, inner) element counts.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

impl<F: Element> Tensor<F> {
    /// A tensor from a buffer and a shape; errors when the sizes disagree.
    pub fn from_vec(data: Vec<F>, shape: &[usize]) -> Result<Self> {
        let expected = checked_numel(shape).ok_or_else(|| Error::TooLarge {
            what: "Tensor::from_vec".into(),
            shape: shape.to_vec(),
            reason: "the element count overflows".into(),
        })?;
        if data.len() != expected {
            return Err(Error::DataLength {
                op: "Tensor::from_vec",
                len: data.len(),
                shape: shape.to_vec(),
                expected,
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Arc::new(Storage::from_vec(data)),
        })
    }

    /// Internal constructor for kernels that computed a buffer of the right size.
    pub(crate) fn new_unchecked(data: impl Into<Storage<F>>, shape: Vec<usize>) -> Self {
        let data = data.into();
        debug_assert_eq!(data.len(), numel(&shape));
        Tensor {
            shape,
            data: Arc::new(data),
        }
    }

    /// A matrix from rows of equal length.
    ///
    /// ```
    /// use bayesgrad::Tensor;
    /// let t = Tensor::from_rows(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]])?;
    /// assert_eq!(t.shape(), &[3, 2]);
    /// assert!(Tensor::from_rows(&[vec![1.0], vec![2.0, 3.0]]).is_err());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// Rows of different lengths (naming the first that differs).
    pub fn from_rows<R: AsRef<[F]>>(rows: &[R]) -> Result<Self> {
        let width = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * width);
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != width {
                return Err(Error::invalid(
                    "Tensor::from_rows",
                    format!("row {i} has {} elements, row 0 has {width}", row.len()),
                ));
            }
            data.extend_from_slice(row);
        }
        Tensor::from_vec(data, &[rows.len(), width])
    }

    /// The rows (entries along axis 0) at `rows`, in that order: a
    /// minibatch of a data set.
    ///
    /// ```
    /// use bayesgrad::Tensor;
    /// let t = Tensor::from_rows(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])?;
    /// assert_eq!(t.select_rows(&[2, 0])?.data(), &[5.0, 6.0, 1.0, 2.0]);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// A rank-0 tensor, or a row index out of range.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let Some((&n, rest)) = self.shape.split_first() else {
            return Err(Error::invalid("select_rows", "a scalar has no rows"));
        };
        let block: usize = rest.iter().product();
        let mut data = Vec::with_capacity(rows.len() * block);
        for &r in rows {
            if r >= n {
                return Err(Error::IndexOutOfRange {
                    op: "select_rows",
                    index: r,
                    axis: 0,
                    size: n,
                });
            }
            data.extend_from_slice(&self.data[r * block..(r + 1) * block]);
        }
        let mut shape = self.shape.clone();
        shape[0] = rows.len();
        Ok(Tensor::new_unchecked(data, shape))
    }

    /// A rank-0 tensor.
    pub fn scalar(x: F) -> Self {
        Tensor {
            shape: vec![],
            data: Arc::new(Storage::from_vec(vec![x])),
        }
    }

    /// A rank-1 tensor from a slice.
    pub fn vector(xs: &[F]) -> Self {
        Tensor {
            shape: vec![xs.len()],
            data: Arc::new(Storage::from_vec(xs.to_vec())),
        }
    }

    /// A tensor with every element equal to `x`.
    ///
    /// # Panics
    /// If the element count of `shape` overflows `usize` (as [`numel`];
    /// [`Tensor::from_vec`] returns [`Error::TooLarge`] instead). The same
    /// holds for [`Tensor::zeros`], [`Tensor::ones`] and [`Tensor::from_fn`].
    pub fn full(shape: &[usize], x: F) -> Self {
        // vectorized, and on two threads when large
        // SAFETY: the closure writes every element of each chunk.
        let data = unsafe {
            crate::kernels::parallel::par_new(
                numel(shape),
                #[inline(always)]
                |_, chunk| chunk.fill(std::mem::MaybeUninit::new(x)),
            )
        };
        Tensor {
            shape: shape.to_vec(),
            data: Arc::new(data),
        }
    }

    /// Zeros. Panics as [`Tensor::full`] does.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, F::zero())
    }

    /// Ones. Panics as [`Tensor::full`] does.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, F::one())
    }

    /// A tensor whose element `i` (row-major) is `f(i)`. Panics as
    /// [`Tensor::full`] does.
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> F) -> Self {
        let n = numel(shape);
        Tensor {
            shape: shape.to_vec(),
            data: Arc::new(Storage::collect(n, (0..n).map(f))),
        }
    }

    /// The same tensor with its elements starting on a cache line when it
    /// is large ([`Storage::build`]): a copy if they do not, for a value
    /// kept and read for long (a parameter).
    pub(crate) fn line_aligned(self) -> Self {
        if self.data.is_aligned() {
            return self;
        }
        Tensor {
            data: Arc::new(Storage::clone(&self.data)),
            shape: self.shape,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[F] {
        &self.data
    }

    /// Mutable access to the elements (the shape cannot change).
    /// (A tensor sharing its elements with clones copies them first.)
    pub fn data_mut(&mut self) -> &mut [F] {
        Arc::make_mut(&mut self.data).deref_mut()
    }

    /// Mutable access to the elements if no clone shares them.
    pub(crate) fn unique_data_mut(&mut self) -> Option<&mut [F]> {
        Arc::get_mut(&mut self.data).map(|s| &mut **s)
    }

    /// Consumes the tensor, returning its elements as a vector: its own
    /// buffer when no clone shares it (the elements moved to the front when
    /// a large tensor keeps them past a few padding elements that start
    /// them on a cache line), else a copy.
    pub fn into_data(self) -> Vec<F> {
        match Arc::try_unwrap(self.data) {
            Ok(storage) => storage.into_vec(),
            Err(shared) => shared.to_vec(),
        }
    }

    /// The single element of a one-element tensor.
    pub fn item(&self) -> Result<F> {
        if self.data.len() == 1 {
            Ok(self.data[0])
        } else {
            Err(Error::invalid(
                "Tensor::item",
                format!(
                    "tensor of shape {:?} has {} elements, not 1",
                    self.shape,
                    self.len()
                ),
            ))
        }
    }

    /// The same elements under another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let expected = checked_numel(shape).ok_or_else(|| Error::TooLarge {
            what: "reshape".into(),
            shape: shape.to_vec(),
            reason: "the element count overflows".into(),
        })?;
        if expected != self.len() {
            return Err(Error::DataLength {
                op: "reshape",
                len: self.len(),
                shape: shape.to_vec(),
                expected,
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data: self.data.clone(),
        })
    }

    /// Converts every element to `f64`.
    pub fn to_f64(&self) -> Tensor<f64> {
        Tensor {
            shape: self.shape.clone(),
            data: Arc::new(Storage::from_vec(
                self.data
                    .iter()
                    .map(|x| x.to_f64().unwrap_or(f64::NAN))
                    .collect(),
            )),
        }
    }

    /// The first element that is NaN or infinite, with its position.
    pub fn first_non_finite(&self) -> Option<(usize, F)> {
        let i = par_first_failing(&self.data[..], |x| x.is_finite())?;
        Some((i, self.data[i]))
    }

    /// Applies `f` to every element.
    pub fn map(&self, f: impl Fn(F) -> F) -> Self {
        Tensor {
            shape: self.shape.clone(),
            data: Arc::new(Storage::collect(
                self.len(),
                self.data.iter().map(|&x| f(x)),
            )),
        }
    }

    /// Combines two tensors elementwise under NumPy broadcasting.
    pub fn zip_map(&self, other: &Self, op: &'static str, f: impl Fn(F, F) -> F) -> Result<Self> {
        let shape =
            broadcast_shape(&self.shape, &other.shape).ok_or_else(|| Error::ShapeMismatch {
                op,
                lhs: self.shape.clone(),
                rhs: other.shape.clone(),
            })?;
        let pairs = self.data.iter().zip(other.data.iter());
        let data = if self.shape == other.shape {
            Some(Storage::collect(self.len(), pairs.map(|(&a, &b)| f(a, b))))
        } else if other.len() == 1 && shape == self.shape {
            let b = other.data[0];
            Some(Storage::collect(
                self.len(),
                self.data.iter().map(|&a| f(a, b)),
            ))
        } else if self.len() == 1 && shape == other.shape {
            let a = self.data[0];
            Some(Storage::collect(
                other.len(),
                other.data.iter().map(|&b| f(a, b)),
            ))
        } else {
            None
        };
        if let Some(data) = data {
            return Ok(Tensor {
                data: Arc::new(data),
                shape,
            });
        }
        let mut data = vec![F::zero(); numel(&shape)];
        if self.shape == shape {
            for_each_broadcast(&other.shape, &shape, |i, j| {
                data[i] = f(self.data[i], other.data[j])
            });
        } else if other.shape == shape {
            for_each_broadcast(&self.shape, &shape, |i, j| {
                data[i] = f(self.data[j], other.data[i])
            });
        } else {
            let a = self.broadcast_to(&shape)?;
            for_each_broadcast(&other.shape, &shape, |i, j| {
                data[i] = f(a.data[i], other.data[j])
            });
        }
        Ok(Tensor {
            shape,
            data: Arc::new(Storage::from_vec(data)),
        })
    }

    /// This tensor repeated to `shape` under NumPy broadcasting.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        if self.shape == shape {
            return Ok(self.clone());
        }
        match broadcast_shape(&self.shape, shape) {
            Some(s) if s == shape => {}
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "broadcast_to",
                    lhs: self.shape.clone(),
                    rhs: shape.to_vec(),
                });
            }
        }
        let (n, src_len) = (numel(shape), self.data.len());
        let lead = self.shape.iter().take_while(|&&d| d == 1).count();
        if src_len > 1 && shape.ends_with(&self.shape[lead..]) {
            // copies of the source one after the other (a batch tiled K
            // times): element i is source element i mod its length, written
            // in slices (of a short source repeated, which has the same
            // element there), on two threads when large
            let src = tiled(&self.data[..]);
            let src_len = src.len();
            // SAFETY: each part is written from the source's elements at
            // the same positions of its period.
            let data = unsafe {
                crate::kernels::parallel::par_new_in_segments(n, src_len, |at, part| {
                    let (from, len) = (at % src_len, part.len());
                    for (o, &v) in part.iter_mut().zip(&src[from..from + len]) {
                        o.write(v);
                    }
                })
            };
            return Ok(Tensor {
                shape: shape.to_vec(),
                data: Arc::new(data),
            });
        }
        // the runs cover the output in order: each is a slice of the source
        // or one source element repeated
        let mut data = Vec::with_capacity(n);
        broadcast_runs(&self.shape, shape, &mut |out, src, len, step| {
            debug_assert_eq!(out, data.len(), "broadcast runs out of order");
            match step {
                1 => data.extend_from_slice(&self.data[src..src + len]),
                _ => data.extend(std::iter::repeat_n(self.data[src], len)),
            }
        });
        debug_assert_eq!(data.len(), n);
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Arc::new(Storage::from_vec(data)),
        })
    }

    /// Sums a broadcast result back down to `shape` (the adjoint of `broadcast_to`).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Self> {
        if self.shape == shape {
            return Ok(self.clone());
        }
        match broadcast_shape(shape, &self.shape) {
            Some(s) if s == self.shape => {}
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "sum_to",
                    lhs: self.shape.clone(),
                    rhs: shape.to_vec(),
                });
            }
        }
        if numel(shape) == 1 {
            return Ok(Tensor {
                shape: shape.to_vec(),
                data: Arc::new(Storage::from_vec(vec![self.sum_all()])),
            });
        }
        if let Some(rows) = leading_kept(&self.shape, shape) {
            // a per-row shift's gradient: each element the sum of a
            // contiguous run, as `sum_axis` sums its last axis
            let len = self.data.len() / rows;
            return Ok(Tensor {
                shape: shape.to_vec(),
                data: Arc::new(Storage::from_vec(row_sums(&self.data, rows, len))),
            });
        }
        let mut data = vec![F::zero(); numel(shape)];
        if trailing_broadcast(&self.shape, shape).is_some() {
            // a bias gradient: the rows of `self` summed, a vectorizable loop
            crate::kernels::parallel::vectorized(
                #[inline(always)]
                || {
                    for row in self.data.chunks_exact(data.len()) {
                        data.iter_mut().zip(row).for_each(|(d, &x)| *d = *d + x);
                    }
                },
            );
        } else {
            for_each_broadcast(shape, &self.shape, |i, j| data[j] = data[j] + self.data[i]);
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data: Arc::new(Storage::from_vec(data)),
        })
    }

    /// [`Tensor::sum_to`] that returns `self` unchanged (no copy) when it already has `shape`.
    pub fn sum_to_owned(self, shape: &[usize]) -> Result<Self> {
        if self.shape == shape {
            Ok(self)
        } else {
            self.sum_to(shape)
        }
    }

    /// `self += other`, where `other` has the same shape (gradient accumulation).
    pub(crate) fn add_assign(&mut self, other: &Self) {
        assert_eq!(self.shape, other.shape, "add_assign: shapes differ");
        let other = &other.data;
        crate::kernels::parallel::par_fill(
            self.data_mut(),
            #[inline(always)]
            |start, chunk| {
                for (a, &b) in chunk.iter_mut().zip(&other[start..]) {
                    *a = *a + b;
                }
            },
        );
    }

    fn check_axis(&self, op: &'static str, axis: usize) -> Result<()> {
        if axis < self.rank() {
            Ok(())
        } else {
            Err(Error::AxisOutOfRange {
                op,
                axis,
                shape: self.shape.clone(),
            })
        }
    }

    fn reduced_shape(&self, axis: usize, keepdim: bool) -> Vec<usize> {
        let mut shape = self.shape.clone();
        if keepdim {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        shape
    }

    /// The sum of all elements.
    ///
    /// Pairwise over vectorized blocks: the rounding error grows with
    /// `log n`, so the sum of 10⁶ copies of `0.1f32` is 100000 to 1e-6.
    pub fn sum_all(&self) -> F {
        crate::kernels::parallel::par_sum_pairwise(&self.data)
    }

    /// Sums along `axis`; `keepdim` keeps it with size 1. Along the last
    /// axis (or one followed only by axes of size 1) each sum is taken as
    /// [`sum_all`](Tensor::sum_all) takes it, pairwise over vectorized
    /// blocks; otherwise each element of the result adds its values in
    /// order, many of them at once.
    pub fn sum_axis(&self, axis: usize, keepdim: bool) -> Result<Self> {
        self.check_axis("sum_axis", axis)?;
        let (outer, len, inner) = split_at_axis(&self.shape, axis);
        if inner == 1 {
            return Ok(Tensor {
                shape: self.reduced_shape(axis, keepdim),
                data: Arc::new(Storage::from_vec(row_sums(&self.data, outer, len))),
            });
        }
        self.reduce_axis("sum_axis", axis, keepdim, F::zero(), |a, b| a + b)
    }

    /// Maximum along `axis`; errors on an empty axis.
    pub fn max_axis(&self, axis: usize, keepdim: bool) -> Result<Self> {
        self.check_axis("max_axis", axis)?;
        if self.shape[axis] == 0 {
            return Err(Error::invalid(
                "max_axis",
                "cannot take the maximum of an empty axis",
            ));
        }
        self.reduce_axis("max_axis", axis, keepdim, F::neg_infinity(), |a, b| {
            if b > a || b.is_nan() { b } else { a }
        })
    }

    fn reduce_axis(
        &self,
        op: &'static str,
        axis: usize,
        keepdim: bool,
        init: F,
        f: impl Fn(F, F) -> F + Sync,
    ) -> Result<Self> {
        self.check_axis(op, axis)?;
        let (outer, len, inner) = split_at_axis(&self.shape, axis);
        let mut data = vec![init; outer * inner];
        // the outer blocks split over the threads (each element of the
        // result takes its values in order, whatever the split)
        let x = &self.data[..];
        crate::kernels::parallel::par_blocks(
            &mut data[..],
            outer,
            outer * len * inner,
            #[inline(always)]
            |items, part: &mut [F]| {
                for (o, out) in items.zip(part.chunks_exact_mut(inner.max(1))) {
                    for k in 0..len {
                        let row = &x[(o * len + k) * inner..(o * len + k + 1) * inner];
                        out.iter_mut()
                            .zip(row)
                            .for_each(|(acc, &x)| *acc = f(*acc, x));
                    }
                }
            },
        );
        Ok(Tensor {
            shape: self.reduced_shape(axis, keepdim),
            data: Arc::new(Storage::from_vec(data)),
        })
    }

    /// Swaps the last two axes (a copy).
    pub fn transpose(&self) -> Result<Self> {
        if self.rank() < 2 {
            return Err(Error::invalid(
                "transpose",
                format!("needs rank >= 2, got shape {:?}", self.shape),
            ));
        }
        let r = self.rank();
        let (rows, cols) = (self.shape[r - 2], self.shape[r - 1]);
        let batch = numel(&self.shape[..r - 2]);
        let mut data = vec![F::zero(); self.len()];
        for b in 0..batch {
            let src = &self.data[b * rows * cols..(b + 1) * rows * cols];
            let dst = &mut data[b * rows * cols..(b + 1) * rows * cols];
            for i in 0..rows {
                for j in 0..cols {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
        let mut shape = self.shape.clone();
        shape.swap(r - 2, r - 1);
        Ok(Tensor {
            shape,
            data: Arc::new(Storage::from_vec(data)),
        })
    }

    /// Matrix product of rank-2 tensors, optionally reading either operand
    /// transposed (through strides, without a copy).
    ///
    /// ```
    /// use bayesgrad::Tensor;
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[2, 2])?;
    /// assert_eq!(a.matmul_t(&b, true, false)?.data(), &[1.0, 3.0, 2.0, 4.0]);
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn matmul_t(&self, other: &Self, ta: bool, tb: bool) -> Result<Self> {
        let p = self.product_t(other, ta, tb)?;
        Ok(Tensor {
            shape: vec![p.m, p.n],
            data: Arc::new(gemm_new(p.m, p.k, p.n, p.a, p.b)),
        })
    }

    /// The product [`matmul_t`](Tensor::matmul_t) computes, its shapes
    /// checked and its output's size allowed, for a caller that computes
    /// several products at once (`gemm_new_many`).
    pub(crate) fn product_t<'a>(
        &'a self,
        other: &'a Self,
        ta: bool,
        tb: bool,
    ) -> Result<Product<'a, F>> {
        let mismatch = || Error::ShapeMismatch {
            op: "matmul",
            lhs: self.shape.clone(),
            rhs: other.shape.clone(),
        };
        if self.rank() != 2 || other.rank() != 2 {
            return Err(mismatch());
        }
        let (m, k) = if ta {
            (self.shape[1], self.shape[0])
        } else {
            (self.shape[0], self.shape[1])
        };
        let (k2, n) = if tb {
            (other.shape[1], other.shape[0])
        } else {
            (other.shape[0], other.shape[1])
        };
        if k != k2 {
            return Err(mismatch());
        }
        // [m, 0] @ [0, n] is valid for any m and n: the product may not fit
        checked_alloc::<F>("matmul", &[m, n])?;
        Ok(Product {
            m,
            k,
            n,
            a: MatRef::new(&self.data, self.shape[1], ta),
            b: MatRef::new(&other.data, other.shape[1], tb),
        })
    }

    /// Matrix product `self @ other` of rank-2 tensors.
    pub fn matmul(&self, other: &Self) -> Result<Self> {
        self.matmul_t(other, false, false)
    }
}

/// If `small` is `big`'s trailing axes (after dropping leading 1s), i.e.
/// it is repeated along `big`'s leading axes, the number of its elements.
pub(crate) fn trailing_broadcast(big: &[usize], small: &[usize]) -> Option<usize> {
    let first = small.iter().position(|&d| d != 1).unwrap_or(small.len());
    let tail = &small[first..];
    let width: usize = tail.iter().product();
    (small.len() <= big.len() && big.ends_with(tail) && width > 1 && width < big.iter().product())
        .then_some(width)
}

/// Rows shorter than this are repeated to at least its length where a row
/// is broadcast along leading axes ([`Tensor::broadcast_to`], and a binary
/// op's operand along the rows of the other), so that the loop over a
/// segment is long enough to pay for itself.
const SHORT_ROW: usize = 64;

/// `row` repeated to at least [`SHORT_ROW`] elements (a whole number of
/// times), or itself when it is that long already.
pub(crate) fn tiled<F: Copy>(row: &[F]) -> std::borrow::Cow<'_, [F]> {
    match row.len() {
        0 => std::borrow::Cow::Borrowed(row),
        n if n < SHORT_ROW => std::borrow::Cow::Owned(
            row.iter()
                .copied()
                .cycle()
                .take(SHORT_ROW.div_ceil(n) * n)
                .collect(),
        ),
        _ => std::borrow::Cow::Borrowed(row),
    }
}

/// When `small` (broadcast to `big`) keeps the leading axes of `big` and is
/// 1 along the rest, and at least one axis is kept and one summed: the
/// number of elements of `small`, each the sum of a contiguous run of
/// `big`'s.
fn leading_kept(big: &[usize], small: &[usize]) -> Option<usize> {
    let offset = big.len().checked_sub(small.len())?;
    let dim = |ax: usize| if ax < offset { 1 } else { small[ax - offset] };
    let kept = (0..big.len()).take_while(|&ax| dim(ax) == big[ax]).count();
    let rest_ones = (kept..big.len()).all(|ax| dim(ax) == 1);
    let rows: usize = big[..kept].iter().product();
    (rest_ones && kept > 0 && rows > 1 && rows < numel(big)).then_some(rows)
}

/// The sums of the `rows` consecutive runs of `len` values of `data`, each
/// pairwise over vectorized blocks (`sum_pairwise`), the rows split over
/// the threads.
fn row_sums<F: Element>(data: &[F], rows: usize, len: usize) -> Vec<F> {
    use crate::kernels::parallel::{PAIRWISE_BLOCK, sum_lanes, sum_pairwise};
    let mut out = vec![F::zero(); rows];
    if rows == 0 || len == 0 {
        return out;
    }
    crate::kernels::parallel::par_blocks(
        &mut out[..],
        rows,
        rows * len,
        #[inline(always)]
        |items, part: &mut [F]| {
            for (o, out) in items.zip(part.iter_mut()) {
                let row = &data[o * len..(o + 1) * len];
                // (`sum_pairwise` of a row this short is `sum_lanes`, here
                // without a call per row)
                *out = match len <= PAIRWISE_BLOCK {
                    true => sum_lanes(row),
                    false => sum_pairwise(row),
                };
            }
        },
    );
    out
}

/// The position of the first element for which `ok` is false. Each block
/// is scanned branch-free first (that loop vectorizes); only a block with
/// a failing element is searched.
pub(crate) fn first_failing<F: Copy>(data: &[F], ok: impl Fn(F) -> bool) -> Option<usize> {
    const BLOCK: usize = 1024;
    let block = data
        .chunks(BLOCK)
        .position(|c| !c.iter().fold(true, |all, &x| all & ok(x)))?;
    let start = block * BLOCK;
    Some(start + data[start..].iter().position(|&x| !ok(x))?)
}

/// [`first_failing`] in AVX2 or AVX-512 where the CPU has them, and for a
/// long slice in two halves on two threads (a find in the first half comes
/// first).
pub(crate) fn par_first_failing<F: Copy + Sync>(
    data: &[F],
    ok: impl Fn(F) -> bool + Sync,
) -> Option<usize> {
    let (first, second) = crate::kernels::parallel::par_blocks(
        (),
        data.len(),
        data.len(),
        #[inline(always)]
        |items, ()| {
            let start = items.start;
            first_failing(&data[items], &ok).map(|i| start + i)
        },
    );
    first.or(second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{GEMM_PARALLEL_MIN, SMALL_GEMM_MAX};

    fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_vec(data.to_vec(), shape).unwrap()
    }

    /// Reductions along an axis split the leading blocks over the threads
    /// and give the bits of the values taken one after the other, but for a
    /// sum whose values are contiguous (the last axis), which gives the bits
    /// of `sum_pairwise` over them, as `sum_all` does.
    #[test]
    fn reductions_along_an_axis_take_their_values_in_order() {
        for shape in [[600usize, 100, 1], [60, 100, 10], [3, 100_000, 1]] {
            let x = Tensor::<f32>::from_fn(&shape, |i| ((i * 7919) % 1009) as f32 * 0.37 - 150.0);
            let (outer, len, inner) = (shape[0], shape[1], shape[2]);
            let sum = x.sum_axis(1, false).unwrap();
            let max = x.max_axis(1, false).unwrap();
            for o in 0..outer {
                for i in 0..inner {
                    let values = (0..len).map(|k| x.data()[(o * len + k) * inner + i]);
                    let (s, m) =
                        values.fold((0.0f32, f32::NEG_INFINITY), |(s, m), v| (s + v, m.max(v)));
                    let s = match inner {
                        1 => crate::kernels::parallel::sum_pairwise(
                            &x.data()[o * len..(o + 1) * len],
                        ),
                        _ => s,
                    };
                    assert_eq!(
                        sum.data()[o * inner + i].to_bits(),
                        s.to_bits(),
                        "{shape:?} sum {o} {i}"
                    );
                    assert_eq!(max.data()[o * inner + i], m, "{shape:?} max {o} {i}");
                }
            }
        }
    }

    /// A sum along the last axis, and a gradient summed down to a column
    /// (`sum_to` of `[rows, n]` to `[rows, 1]`), keep their digits as
    /// `sum_all` does: 10⁶ copies of 0.1 in `f32` sum to 100 000 within
    /// 1e-6, where one running sum is 9e-4 off.
    #[test]
    fn sums_of_contiguous_runs_are_pairwise() {
        let n = 1_000_000;
        let x = Tensor::<f32>::from_fn(&[2, n], |_| 0.1);
        let running = (0..n).fold(0.0f32, |s, _| s + 0.1);
        assert!((running as f64 / 100_000.0 - 1.0).abs() > 1e-4);
        let by_axis = x.sum_axis(1, true).unwrap();
        let by_shape = x.sum_to(&[2, 1]).unwrap();
        assert_eq!(
            (by_axis.shape(), by_shape.shape()),
            (&[2, 1][..], &[2, 1][..])
        );
        for s in by_axis.data().iter().chain(by_shape.data()) {
            assert!((*s as f64 / 100_000.0 - 1.0).abs() < 1e-6, "{s}");
        }
        // leading axes kept, the rest summed, against sums in f64; other
        // patterns keep the general path
        let x = Tensor::<f64>::from_fn(&[3, 4, 5], |i| ((i * 37) % 11) as f64 - 4.5);
        let want = |rows: usize| -> Vec<f64> {
            let len = 60 / rows;
            (0..rows)
                .map(|r| x.data()[r * len..(r + 1) * len].iter().sum())
                .collect()
        };
        assert_eq!(x.sum_to(&[3, 1, 1]).unwrap().data(), &want(3)[..]);
        assert_eq!(x.sum_to(&[3, 4, 1]).unwrap().data(), &want(12)[..]);
        assert_eq!(x.sum_to(&[3, 4, 1]).unwrap().shape(), &[3, 4, 1]);
        assert_eq!(x.sum_axis(2, false).unwrap().data(), &want(12)[..]);
        assert_eq!(leading_kept(&[3, 4, 5], &[4, 1]), None);
        assert_eq!(leading_kept(&[3, 4, 5], &[3, 1, 5]), None);
        assert_eq!(leading_kept(&[3, 4, 5], &[3, 4, 5]), None);
        let middle: Vec<f64> = (0..4)
            .map(|j| {
                (0..3)
                    .flat_map(|r| (0..5).map(move |k| (r, k)))
                    .map(|(r, k)| x.data()[r * 20 + j * 5 + k])
                    .sum()
            })
            .collect();
        assert_eq!(x.sum_to(&[4, 1]).unwrap().data(), &middle[..]);
        // empty rows sum to 0
        let empty = Tensor::<f32>::from_fn(&[3, 0], |_| 1.0);
        assert_eq!(empty.sum_axis(1, false).unwrap().data(), &[0.0; 3]);
    }

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 1], &[1, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[], &[4]), Some(vec![4]));
        assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
    }

    #[test]
    fn zip_map_broadcasts_columns_and_rows() {
        // [[1,2,3],[4,5,6]] + [[10],[20]] = [[11,12,13],[24,25,26]]
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let col = t(&[10., 20.], &[2, 1]);
        let r = a.zip_map(&col, "add", |x, y| x + y).unwrap();
        assert_eq!(r.data(), &[11., 12., 13., 24., 25., 26.]);
        // sum_to is the adjoint: column sums of a ones matrix are 3 each.
        let g = Tensor::<f64>::ones(&[2, 3]).sum_to(&[2, 1]).unwrap();
        assert_eq!(g.data(), &[3., 3.]);
        let g = Tensor::<f64>::ones(&[2, 3]).sum_to(&[3]).unwrap();
        assert_eq!(g.data(), &[2., 2., 2.]);
    }

    #[test]
    fn general_broadcast_uses_strides() {
        // [2,1,2] with [1,3,1] -> [2,3,2]; element (i,j,k) = a[i,k] * 10^j-ish
        let a = t(&[1., 2., 3., 4.], &[2, 1, 2]);
        let b = t(&[0., 10., 20.], &[1, 3, 1]);
        let r = a.zip_map(&b, "add", |x, y| x + y).unwrap();
        assert_eq!(r.shape(), &[2, 3, 2]);
        assert_eq!(
            r.data(),
            &[1., 2., 11., 12., 21., 22., 3., 4., 13., 14., 23., 24.]
        );
        let back = r.sum_to(&[1, 3, 1]).unwrap();
        // each j sums (1+2+3+4) + 4 * 10j
        assert_eq!(back.data(), &[10., 50., 90.]);
    }

    /// Every source shape that broadcasts to every output shape of rank up
    /// to 4 with sides 1 to 3: the visits are each output element once, in
    /// order, with the source element the multi-index gives, and
    /// `broadcast_to` copies those elements.
    #[test]
    fn broadcast_visits_match_the_multi_index() {
        let mut out_shapes = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<usize>> = out_shapes
                .iter()
                .filter(|s| s.len() < 4)
                .flat_map(|s| (1..=3).map(move |d| [s.clone(), vec![d]].concat()))
                .collect();
            out_shapes.extend(longer);
        }
        out_shapes.sort();
        out_shapes.dedup();
        let mut checked = 0;
        for out in &out_shapes {
            for drop in 0..=out.len() {
                for ones in 0..1u32 << (out.len() - drop) {
                    let src: Vec<usize> = out[drop..]
                        .iter()
                        .enumerate()
                        .map(|(ax, &d)| if ones >> ax & 1 == 1 { 1 } else { d })
                        .collect();
                    let mut visits = Vec::new();
                    for_each_broadcast(&src, out, |i, j| visits.push((i, j)));
                    let expected: Vec<(usize, usize)> = (0..numel(out))
                        .map(|i| {
                            // the multi-index of i in `out`, projected onto `src`
                            let (mut rest, mut j, mut stride) = (i, 0, 1);
                            for ax in (0..out.len()).rev() {
                                let k = rest % out[ax];
                                rest /= out[ax];
                                if ax >= drop {
                                    let d = src[ax - drop];
                                    j += (k % d) * stride;
                                    stride *= d;
                                }
                            }
                            (i, j)
                        })
                        .collect();
                    assert_eq!(visits, expected, "{src:?} -> {out:?}");
                    // broadcast_to copies those elements
                    let values = (0..numel(&src)).map(|v| v as f64).collect();
                    let b = Tensor::from_vec(values, &src)
                        .unwrap()
                        .broadcast_to(out)
                        .unwrap();
                    let want: Vec<f64> = expected.iter().map(|&(_, j)| j as f64).collect();
                    assert_eq!(b.data(), &want[..], "broadcast_to {src:?} -> {out:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// A source tiled into an output long enough to be written on two
    /// threads: the second part starts inside a copy, at an odd offset.
    #[test]
    fn a_tiled_source_is_copied_on_every_thread_count() {
        let _held = crate::kernels::parallel::thread_count_held();
        let original = crate::threads();
        let src = Tensor::<f32>::from_fn(&[1, 7, 1001], |i| i as f32);
        let out = [41, 7, 1001];
        assert!(numel(&out) > 2 * crate::kernels::parallel::PARALLEL_MIN);
        for t in [1, 2, 3] {
            crate::set_threads(t).unwrap();
            let b = src.broadcast_to(&out).unwrap();
            assert_eq!(b.shape(), &out);
            for (i, &v) in b.data().iter().enumerate() {
                assert_eq!(v, (i % 7007) as f32, "element {i} on {t} threads");
            }
        }
        crate::set_threads(original).unwrap();
    }

    #[test]
    fn axis_reductions() {
        let a = t(&[1., 5., 3., 4., 2., 6.], &[2, 3]);
        assert_eq!(a.sum_axis(0, false).unwrap().data(), &[5., 7., 9.]);
        assert_eq!(a.max_axis(1, true).unwrap().shape(), &[2, 1]);
        assert_eq!(a.max_axis(1, true).unwrap().data(), &[5., 6.]);
        assert!(a.sum_axis(2, false).is_err());
    }

    #[test]
    fn matmul_with_transposed_views() {
        // a = [[1,2],[3,4],[5,6]] (3x2); a^T a = [[35,44],[44,56]]
        let a = t(&[1., 2., 3., 4., 5., 6.], &[3, 2]);
        assert_eq!(
            a.matmul_t(&a, true, false).unwrap().data(),
            &[35., 44., 44., 56.]
        );
        // a a^T is 3x3; its (0,2) entry is 1*5+2*6 = 17
        let aat = a.matmul_t(&a, false, true).unwrap();
        assert_eq!(aat.shape(), &[3, 3]);
        assert_eq!(aat.data()[2], 17.);
        assert!(a.matmul(&a).is_err());
    }

    /// `matmul_t` of `m x k` and `k x n` integer-valued operands (so every
    /// order of summation is exact), in all four transpositions, equals the
    /// naive triple loop element for element.
    fn assert_products_match_naive(m: usize, k: usize, n: usize) {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = Tensor::<f64>::from_fn(&a_shape, |i| ((i * 7) % 13) as f64 - 6.0);
            let b = Tensor::<f64>::from_fn(&b_shape, |i| ((i * 5) % 11) as f64 - 5.0);
            let at = |i: usize, j: usize| a.data()[if ta { j * m + i } else { i * k + j }];
            let bt = |i: usize, j: usize| b.data()[if tb { j * k + i } else { i * n + j }];
            let c = a.matmul_t(&b, ta, tb).unwrap();
            assert_eq!(c.shape(), &[m, n]);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|l| at(i, l) * bt(l, j)).sum();
                    assert_eq!(
                        c.data()[i * n + j],
                        want,
                        "{m}x{k}x{n} {ta} {tb} at {i},{j}"
                    );
                }
            }
        }
    }

    #[test]
    fn large_products_split_over_threads_match_a_naive_product() {
        // shapes that split by rows (tall, or wide with a small right
        // operand), by columns (wide), odd sizes
        for (m, k, n) in [
            (300, 70, 60),
            (40, 90, 333),
            (129, 128, 130),
            (100, 20, 700),
        ] {
            assert!(m * k * n >= GEMM_PARALLEL_MIN);
            assert_products_match_naive(m, k, n);
        }
    }

    /// A product split over any number of threads has the bits of the
    /// unsplit one: every element accumulates its k terms in the same order.
    #[test]
    fn products_have_the_same_bits_on_every_thread_count() {
        let _held = crate::kernels::parallel::thread_count_held();
        let original = crate::threads();
        for (m, k, n) in [
            (300, 70, 60),
            (40, 90, 333),
            (256, 784, 512),
            (128, 10, 520),
        ] {
            let a = Tensor::<f32>::from_fn(&[m, k], |i| ((i * 37) % 101) as f32 * 0.013 - 0.6);
            let b = Tensor::<f32>::from_fn(&[k, n], |i| ((i * 53) % 97) as f32 * 0.011 - 0.5);
            crate::set_threads(1).unwrap();
            let want = a.matmul(&b).unwrap();
            for t in [2, 3, 4, 7] {
                crate::set_threads(t).unwrap();
                let got = a.matmul(&b).unwrap();
                let same = got
                    .data()
                    .iter()
                    .zip(want.data())
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}x{k}x{n} on {t} threads");
            }
        }
        crate::set_threads(original).unwrap();
    }

    #[test]
    fn small_products_match_a_naive_product_on_every_path() {
        // The shapes reach each loop of `small_gemm` (one output column,
        // rows of b, four-lane and strided dot products, ragged lane
        // remainders) and straddle SMALL_GEMM_MAX (16^3 = 4096 is small,
        // 16x16x17 is not).
        let shapes = [
            (1, 1, 1),
            (5, 3, 1),
            (1, 7, 1),
            (32, 50, 1),
            (50, 32, 1),
            (32, 1, 50),
            (3, 4, 2),
            (7, 9, 5),
            (4, 1, 4),
            (2, 13, 3),
            (16, 16, 16),
            (16, 16, 17),
        ];
        for (m, k, n) in shapes {
            assert_products_match_naive(m, k, n);
        }
        const { assert!(16 * 16 * 16 <= SMALL_GEMM_MAX && 16 * 16 * 17 > SMALL_GEMM_MAX) };
    }

    /// `full` writes every element, on two threads for a long tensor, and
    /// an empty shape gives an empty tensor.
    #[test]
    fn full_writes_every_element() {
        let n = 3 * crate::kernels::parallel::PARALLEL_MIN + 5;
        let t = Tensor::<f32>::full(&[n], -2.5);
        assert_eq!(t.len(), n);
        assert!(t.data().iter().all(|&v| v == -2.5));
        assert!(
            Tensor::<f64>::zeros(&[3, n])
                .data()
                .iter()
                .all(|&v| v == 0.0)
        );
        assert_eq!(Tensor::<f64>::ones(&[0, 4]).len(), 0);
        assert_eq!(Tensor::<f64>::full(&[], 7.0).data(), &[7.0]);
    }

    #[test]
    fn first_failing_finds_the_first_bad_element_in_any_block() {
        let mut v = vec![1.0f64; 5000];
        assert_eq!(first_failing(&v, |x| x > 0.0), None);
        v[4999] = -1.0;
        v[3001] = f64::NAN;
        assert_eq!(first_failing(&v, |x| x > 0.0), Some(3001));
        v[7] = 0.0;
        assert_eq!(first_failing(&v, |x| x > 0.0), Some(7));
        let t = Tensor::from_vec(v, &[5000]).unwrap();
        assert_eq!(t.first_non_finite().map(|(i, _)| i), Some(3001));
    }

    #[test]
    fn first_non_finite_scans_both_halves_of_a_long_tensor_in_order() {
        let n = 3 * crate::kernels::parallel::PARALLEL_MIN + 7;
        let mut v = vec![0.5f32; n];
        assert_eq!(
            Tensor::from_vec(v.clone(), &[n])
                .unwrap()
                .first_non_finite(),
            None
        );
        // only in the second half, then in both: the first one wins
        v[n - 2] = f32::NEG_INFINITY;
        let t = Tensor::from_vec(v.clone(), &[n]).unwrap();
        assert_eq!(t.first_non_finite(), Some((n - 2, f32::NEG_INFINITY)));
        v[n / 2 - 1] = f32::INFINITY;
        v[5] = f32::NAN;
        let t = Tensor::from_vec(v, &[n]).unwrap();
        assert!(matches!(t.first_non_finite(), Some((5, x)) if x.is_nan()));
    }

    #[test]
    fn from_vec_validates() {
        assert!(matches!(
            Tensor::<f32>::from_vec(vec![1.0; 5], &[2, 3]),
            Err(Error::DataLength {
                expected: 6,
                len: 5,
                ..
            })
        ));
    }
}
