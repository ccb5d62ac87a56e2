//! Elementwise formulas of `f32` tensors computed in `f64`, eight positions
//! at a time, with their partial derivatives in the same pass.
//!
//! The log-densities whose `f32` evaluation cancels (the Gamma's `a ln b +
//! (a - 1) ln x - b x - ln Γ(a)`, say) are computed in `f64` and rounded
//! once. Built from the tape's ops on an `f64` tape of its own, such a
//! formula makes a tensor for every operation, forward and backward, and
//! takes `ln Γ(a)` at every value when `a` is one parameter broadcast to
//! many. A [`Pointwise`] formula instead reads its inputs where they lie
//! (a single value once), computes the terms of its parameters once when
//! they are single values ([`Pointwise::pre`]), and writes the value and
//! the partial derivatives of each position in one pass; backward
//! multiplies the incoming gradient by the partials in `f64`, sums over the
//! positions an input was broadcast to, and rounds once.

use crate::autodiff::ops::binary::{broadcast_all, broadcast_into};
use crate::autodiff::profile::untimed;
use crate::autodiff::tape::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::parallel::{
    PARALLEL_MIN, halves, join_with, par_new, par_sum2, vectorized_with,
};
use crate::kernels::random::{UNIT_PIECE, Unit, UnitStream};
use crate::kernels::special::{ln_lanes, mask, select};
use crate::tensor::{Element, Storage, Tensor, Uninit};
use rand::Rng;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Positions a formula takes at once: two AVX2 registers of `f64`, one
/// AVX-512 register.
pub(crate) const LANES: usize = 8;

/// Eight positions' values of one input, as `f64`.
pub(crate) type Lanes = [f64; LANES];

/// Groups of eight positions that [`Pointwise::eval_block`] takes at once.
pub(crate) const BLOCK: usize = 8;

/// From this many positions on, forward runs as two halves on two threads.
const SPLIT_MIN: usize = 4096;

/// An elementwise formula on an `f64` tape of its own, for the positions a
/// [`Pointwise`] formula does not cover.
pub(crate) type Fallback = for<'s> fn(&[Var<'s, f64>]) -> Result<Var<'s, f64>>;

/// An elementwise formula of `N` inputs, the first `KEYED` of them
/// parameters (the rest values), evaluated in `f64` eight positions at a
/// time.
pub(crate) trait Pointwise<const N: usize>: Copy + Send + Sync + 'static {
    /// The op's name.
    const NAME: &'static str;
    /// How many of the inputs, from the first, [`pre`](Self::pre) reads.
    const KEYED: usize;
    /// What the formula needs of the parameters alone (`ln Γ(a)`, `ψ(a)`,
    /// ...), for eight positions.
    type Pre: Copy + Send + Sync;
    /// The terms of the parameters `v[..KEYED]` at eight positions. Where
    /// every parameter is a single value it is called once, on eight
    /// copies of it, and the result serves every position.
    fn pre(v: &[Lanes; N]) -> Self::Pre;
    /// The value at eight positions into `out`, and its partial derivative
    /// in each input into `d`.
    fn eval(v: &[Lanes; N], pre: &Self::Pre, out: &mut Lanes, d: &mut [Lanes; N]);
    /// Whether [`eval_block`](Self::eval_block) is the formula's own: then
    /// full blocks of [`BLOCK`] groups go through it where the parameters
    /// are single values.
    const STAGED: bool = false;
    /// [`eval`](Self::eval) of [`BLOCK`] groups, with the same values:
    /// `v(g)` reads group `g`'s inputs and `put(g, value, partials)` takes
    /// its results. A formula whose steps form a long chain (a logarithm
    /// of an exponential, an exponential of that) can take each step over
    /// every group before the next, so that the CPU does not hold a chain
    /// per group in flight, which fills its window of instructions and
    /// leaves its units idle.
    #[inline(always)]
    fn eval_block(
        v: impl Fn(usize) -> [Lanes; N],
        pre: &Self::Pre,
        mut put: impl FnMut(usize, &Lanes, &[Lanes; N]),
    ) {
        for g in 0..BLOCK {
            let (mut out, mut d) = ([0.0; LANES], [[0.0; LANES]; N]);
            Self::eval(&v(g), pre, &mut out, &mut d);
            put(g, &out, &d);
        }
    }
    /// The formula, elementwise on an `f64` tape, for the positions that
    /// [`covers`](Self::covers) leaves out (`None`: it covers every one).
    const FALLBACK: Option<Fallback> = None;
    /// Whether [`eval`](Self::eval) computes the position whose inputs are
    /// `v`; where it does not, the value and partials come from
    /// [`FALLBACK`](Self::FALLBACK) (asked only where that is set).
    fn covers(_v: &[f64; N]) -> bool {
        true
    }
    /// Whether a position whose value, rounded to the tape's type, is not
    /// finite has partial derivatives 0: a closed form held at `+inf` where
    /// it leaves the floats, whose partials there (finite in `f64` when
    /// only an `f32` value overflows) are no slope of the value.
    const FLAT_BEYOND_THE_FLOATS: bool = false;
}

/// Runs `f` on the inputs of each lane (those of one position) and writes
/// its value and partials, or `beyond` (`-inf` or `+inf`) with partials 0
/// where it gives `None`: for a formula computed a position at a time.
#[inline(always)]
pub(crate) fn each_lane<const N: usize>(
    v: &[Lanes; N],
    out: &mut Lanes,
    d: &mut [Lanes; N],
    beyond: f64,
    f: impl Fn([f64; N]) -> Option<(f64, [f64; N])>,
) {
    for l in 0..LANES {
        let (value, partials) = f(std::array::from_fn(|i| v[i][l])).unwrap_or((beyond, [0.0; N]));
        out[l] = value;
        for (d, p) in d.iter_mut().zip(partials) {
            d[l] = p;
        }
    }
}

/// KL(q || p) as the formula `K` of the two distributions' parameters
/// (`q`'s two, then `p`'s), one value per batch element: the two on one
/// tape, and batch shapes (`q`'s, `p`'s) that broadcast, or an error naming
/// `distribution`.
pub(crate) fn divergence<'t, F: Element, K: Pointwise<4>>(
    formula: K,
    distribution: &'static str,
    (q, p): (Vec<usize>, Vec<usize>),
    inputs: [Var<'t, F>; 4],
) -> Result<Var<'t, F>> {
    super::same_tape("kl_divergence", &inputs[0], &inputs[2])?;
    super::batch_broadcast(
        distribution,
        ("the posterior's parameters", q),
        ("the prior's parameters", p),
    )?;
    apply(formula, &inputs)
}

/// The formula `K` of `inputs` (broadcast together) as one op of their
/// tape (`_formula` names it at the call).
pub(crate) fn apply<'t, F: Element, K: Pointwise<N>, const N: usize>(
    _formula: K,
    inputs: &[Var<'t, F>; N],
) -> Result<Var<'t, F>> {
    let op = Fused::<K, N>::new(inputs.each_ref().map(|v| v.requires_grad()));
    inputs[0].tape().apply(op, inputs)
}

/// A [`Pointwise`] formula whose last input is a tensor of standard draws
/// of one kind (the exponential draws of a Kumaraswamy draw, say), which
/// [`apply_drawn`] draws inside the op.
pub(crate) trait Drawn<const N: usize>: Pointwise<N> {
    /// The kind of the draws.
    const DRAWS: Unit;
}

/// The formula `K` of `params` (broadcast to `shape`) and of standard draws
/// of `K::DRAWS` of `shape`, as one op: the values
/// [`apply`] would give on `params` and a constant of
/// [`unit_draws`](crate::tensor::unit_draws)`(K::DRAWS, shape, rng)` (one
/// `next_u64` of `rng`, the same draws), bit for bit, with the draws taken
/// a piece at a time inside the formula's loop instead of written out and
/// read back: a round of a million `f32` Kumaraswamy draws with their
/// gradients took 1.41, 1.46 and 1.82 ms so against 1.60, 1.70 and 1.94
/// through a tensor of draws (`bench -- draws`, three runs of each,
/// alternated; AMD EPYC family 26 model 2, AVX-512).
pub(crate) fn apply_drawn<'t, F: Element, K: Drawn<N>, const M: usize, const N: usize>(
    _formula: K,
    params: &[Var<'t, F>; M],
    shape: &[usize],
    rng: &mut dyn Rng,
) -> Result<Var<'t, F>> {
    const {
        assert!(M + 1 == N, "the parameters are every input but the draws");
        assert!(K::KEYED < N, "the draws are no parameter");
        assert!(
            K::FALLBACK.is_none(),
            "a fallback reads the inputs it leaves out"
        );
    }
    let op = DrawnOp::<K, N> {
        fused: Fused::new(std::array::from_fn(|j| j < M && params[j].requires_grad())),
        seed: rng.next_u64(),
        shape: shape.to_vec(),
    };
    params[0].tape().apply(op, params)
}

/// The op of [`apply_drawn`]: [`Fused`] with the draws its last input.
struct DrawnOp<K, const N: usize> {
    fused: Fused<K, N>,
    /// The seed of the draws.
    seed: u64,
    /// The draws' shape, the output's.
    shape: Vec<usize>,
}

/// The op of [`apply`].
struct Fused<K, const N: usize> {
    k: PhantomData<fn() -> K>,
    /// Whether each input needs a gradient (the partials of the others are
    /// not kept).
    needs: [bool; N],
    /// `∂ output_i / ∂ input` at each position `i`, of each input that
    /// needs a gradient (empty for the others).
    partials: RefCell<[Storage<f64>; N]>,
}

/// A part of the positions for [`run`]: its first position, its outputs
/// and its partials (those that are not empty).
type Part<'a, F, const N: usize> = (
    usize,
    &'a mut [MaybeUninit<F>],
    [&'a mut [MaybeUninit<f64>]; N],
);

/// An input as the loops read it: its data and the step between positions
/// (0 for a single value, 1 for a value per position).
type Strided<'a, F> = (&'a [F], usize);

/// An input's first value (0 if it has none) in every lane: a single
/// value's lanes.
#[inline(always)]
fn first_lanes<F: Element>(data: &[F]) -> Lanes {
    let x = data.first().copied().unwrap_or_else(F::zero);
    [x.to_f64().unwrap_or(f64::NAN); LANES]
}

/// The formula at positions `start..start + out.len()` into `out` (and the
/// partials into `d`, those that are not empty), from inputs read at those
/// positions: every element of `out` and of each `d` that is not empty is
/// written. `pre` is the parameters' terms where they are single values;
/// then the groups are evaluated two at a time (each with the values it
/// gives alone), which took the Gamma, Beta and Student-t densities and the
/// Gamma entropy with single parameters to 0.48–0.89 of their time per
/// element (`bench -- survey`, docs/benchmarks.md). The loop for terms of
/// each group is kept apart: with one loop for both, testing `pre` at every
/// group, the Gamma entropy with a concentration per value ran 1.4 times
/// slower with AVX-512.
#[inline(always)]
fn run<F: Element, K: Pointwise<N>, const N: usize>(
    inputs: &[Strided<'_, F>; N],
    pre: Option<&K::Pre>,
    start: usize,
    out: &mut [MaybeUninit<F>],
    d: &mut [&mut [MaybeUninit<f64>]; N],
) {
    let n = out.len();
    // a single value's lanes once, for every group
    let single: [Option<Lanes>; N] = std::array::from_fn(|j| match inputs[j] {
        (data, 0) => Some(first_lanes(data)),
        _ => None,
    });
    let mut at = 0;
    match pre {
        Some(pre) => {
            while K::STAGED && n - at >= BLOCK * LANES {
                K::eval_block(
                    #[inline(always)]
                    |g| group(inputs, &single, start + at + g * LANES, LANES),
                    pre,
                    #[inline(always)]
                    |g, value, partials| write(out, d, at + g * LANES, LANES, value, partials),
                );
                at += BLOCK * LANES;
            }
            while n - at >= 2 * LANES {
                let (v0, v1) = (
                    group(inputs, &single, start + at, LANES),
                    group(inputs, &single, start + at + LANES, LANES),
                );
                let (value0, partials0) = eval::<K, N>(&v0, pre);
                let (value1, partials1) = eval::<K, N>(&v1, pre);
                write(out, d, at, LANES, &value0, &partials0);
                write(out, d, at + LANES, LANES, &value1, &partials1);
                at += 2 * LANES;
            }
            while at < n {
                let len = LANES.min(n - at);
                let v = group(inputs, &single, start + at, len);
                let (value, partials) = eval::<K, N>(&v, pre);
                write(out, d, at, len, &value, &partials);
                at += len;
            }
        }
        None => {
            while at < n {
                let len = LANES.min(n - at);
                let v = group(inputs, &single, start + at, len);
                let (value, partials) = pre_and_eval::<K, N>(&v);
                write(out, d, at, len, &value, &partials);
                at += len;
            }
        }
    }
}

/// [`Pointwise::eval`] of one group: its value and partials. Without debug
/// assertions (release builds) it is inlined into [`run`] with the formula;
/// with them (debug builds, unoptimized) each call keeps a frame of its
/// own, since `run` calls it at three places and the formulas' frames,
/// inlined at each, added up to more than a test thread's stack (the Beta
/// divergence's overflowed it).
#[cfg_attr(debug_assertions, inline(never))]
#[cfg_attr(not(debug_assertions), inline(always))]
fn eval<K: Pointwise<N>, const N: usize>(v: &[Lanes; N], pre: &K::Pre) -> (Lanes, [Lanes; N]) {
    let (mut value, mut partials) = ([0.0; LANES], [[0.0; LANES]; N]);
    K::eval(v, pre, &mut value, &mut partials);
    (value, partials)
}

/// [`Pointwise::pre`] and [`eval`] of one group whose parameters' terms are
/// its own (inlined as [`eval`] is).
#[cfg_attr(debug_assertions, inline(never))]
#[cfg_attr(not(debug_assertions), inline(always))]
fn pre_and_eval<K: Pointwise<N>, const N: usize>(v: &[Lanes; N]) -> (Lanes, [Lanes; N]) {
    eval::<K, N>(v, &K::pre(v))
}

/// The inputs at the `len` (1 to eight) positions from `first`, as eight
/// lanes; a short group repeats its last position (values are computed and
/// dropped).
#[inline(always)]
fn group<F: Element, const N: usize>(
    inputs: &[Strided<'_, F>; N],
    single: &[Option<Lanes>; N],
    first: usize,
    len: usize,
) -> [Lanes; N] {
    let wide = |x: F| x.to_f64().unwrap_or(f64::NAN);
    let mut v = [[0.0; LANES]; N];
    for (j, v) in v.iter_mut().enumerate() {
        let (data, step) = inputs[j];
        *v = match single[j] {
            Some(lanes) => lanes,
            None if step == 1 && len == LANES => {
                let group: &[F; LANES] = data[first..first + LANES]
                    .try_into()
                    .expect("a group of eight");
                group.map(wide)
            }
            None => std::array::from_fn(|l| wide(data[(first + l.min(len - 1)) * step])),
        };
    }
    v
}

/// A group's value and partials into `out` and `d` (those that are not
/// empty) at `at..at + len`.
#[inline(always)]
fn write<F: Element, const N: usize>(
    out: &mut [MaybeUninit<F>],
    d: &mut [&mut [MaybeUninit<f64>]; N],
    at: usize,
    len: usize,
    value: &Lanes,
    partials: &[Lanes; N],
) {
    for (o, &y) in out[at..at + len].iter_mut().zip(value) {
        o.write(F::lit(y));
    }
    for (d, p) in d.iter_mut().zip(partials) {
        if d.is_empty() {
            continue;
        }
        // a full group as eight stores of a fixed length (a length known
        // only at run time made each copy a call to `memmove`)
        if len == LANES {
            let group: &mut [MaybeUninit<f64>; LANES] = (&mut d[at..at + LANES])
                .try_into()
                .expect("a group of eight");
            for (d, &p) in group.iter_mut().zip(p) {
                d.write(p);
            }
        } else {
            for (d, &p) in d[at..at + len].iter_mut().zip(p) {
                d.write(p);
            }
        }
    }
}

impl<F: Element, K: Pointwise<N>, const N: usize> Op<F> for Fused<K, N> {
    fn name(&self) -> &str {
        K::NAME
    }

    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let (shape, operands) = broadcast_all(K::NAME, inputs)?;
        let views: Vec<_> = operands.iter().map(|o| o.view()).collect();
        let strided: [Strided<'_, F>; N] = std::array::from_fn(|j| views[j].strided());
        // SAFETY: `run` writes every position of its part's outputs and of
        // each of its partials that is not empty
        unsafe {
            self.evaluate(
                shape,
                &strided,
                SPLIT_MIN,
                #[inline(always)]
                |strided, pre, (start, out, mut d)| {
                    run::<F, K, N>(strided, pre, start, out, &mut d)
                },
            )
        }
    }

    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(inputs, output, grad, &self.needs)
    }

    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        let partials = self.partials.borrow();
        let g = grad.data();
        (0..N)
            .map(|j| {
                let p: &[f64] = &partials[j];
                if !needs[j] || p.is_empty() {
                    return Ok(None);
                }
                let shape = inputs[j].shape();
                if shape == output.shape() {
                    // SAFETY: every element of each chunk is written (the
                    // slices of its length, if either were shorter, panic)
                    let each = unsafe {
                        par_new(
                            g.len(),
                            #[inline(always)]
                            |start, chunk: &mut [MaybeUninit<F>]| {
                                let span = start..start + chunk.len();
                                let terms = g[span.clone()].iter().zip(&p[span]);
                                for (o, (&g, &p)) in chunk.iter_mut().zip(terms) {
                                    o.write(F::lit(term(g, p)));
                                }
                            },
                        )
                    };
                    return Ok(Some(Tensor::new_unchecked(each, shape.to_vec())));
                }
                if inputs[j].len() == 1 {
                    // the plain products first: [`term`]'s choice kept this
                    // sum out of vector registers (the Kumaraswamy draws'
                    // backward took twice as long); only a NaN sum, which a
                    // zero gradient times a NaN partial may have made, is
                    // taken again term by term
                    let wide = |g: F, p: f64| g.to_f64().unwrap_or(f64::NAN) * p;
                    let mut sum = par_sum2(g, p, wide);
                    if sum.is_nan() {
                        sum = par_sum2(g, p, term);
                    }
                    return Tensor::from_vec(vec![F::lit(sum)], shape).map(Some);
                }
                let each = g.iter().zip(p).map(|(&g, &p)| term(g, p));
                let full = Tensor::from_vec(each.collect(), output.shape())?.sum_to(shape)?;
                let narrowed = full.data().iter().map(|&x| F::lit(x)).collect();
                Tensor::from_vec(narrowed, shape).map(Some)
            })
            .collect()
    }
}

/// [`run`] of positions `start..start + out.len()` whose last input is
/// the draws of `K::DRAWS` from `seed`, taken a piece at a time from the
/// stream of the part that starts at `start` ([`UnitStream`]): the parts
/// must be those of [`par_fill`](crate::kernels::parallel::par_fill), as
/// [`Fused::evaluate`] makes them with [`PARALLEL_MIN`] ([`halves`]).
#[inline(always)]
fn run_drawn<F: Element, K: Drawn<N>, const N: usize>(
    inputs: &[Strided<'_, F>; N],
    pre: Option<&K::Pre>,
    seed: u64,
    (start, out, mut d): Part<'_, F, N>,
) {
    let mut draws = UnitStream::<F>::new(seed, start);
    let mut at = 0;
    while at < out.len() {
        let len = UNIT_PIECE.min(out.len() - at);
        let piece = draws.next_piece(K::DRAWS, len);
        let first = start + at;
        let local: [Strided<'_, F>; N] = std::array::from_fn(|j| match inputs[j] {
            _ if j == N - 1 => (piece, 1),
            (data, 0) => (data, 0),
            (data, step) => (&data[first * step..], step),
        });
        let mut d = d.each_mut().map(|d| match d.is_empty() {
            true => &mut [][..],
            false => &mut d[at..at + len],
        });
        run::<F, K, N>(&local, pre, 0, &mut out[at..at + len], &mut d);
        at += len;
    }
}

impl<F: Element, K: Drawn<N>, const N: usize> Op<F> for DrawnOp<K, N> {
    fn name(&self) -> &str {
        K::NAME
    }

    fn forward(&self, params: &[&Tensor<F>]) -> Result<Tensor<F>> {
        let operands = broadcast_into(params, &self.shape)?;
        let views: Vec<_> = operands.iter().map(|o| o.view()).collect();
        // (the draws' slot is filled a piece at a time by `run_drawn`)
        let strided: [Strided<'_, F>; N] = std::array::from_fn(|j| match views.get(j) {
            Some(view) => view.strided(),
            None => (&[][..], 1),
        });
        let seed = self.seed;
        // SAFETY: `run_drawn` runs `run` over its part's pieces, one after
        // another from its first position to its last
        unsafe {
            self.fused.evaluate(
                self.shape.clone(),
                &strided,
                PARALLEL_MIN,
                #[inline(always)]
                |strided, pre, part| run_drawn::<F, K, N>(strided, pre, seed, part),
            )
        }
    }

    fn backward(
        &self,
        params: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward_needed(params, output, grad, &self.fused.needs[..N - 1])
    }

    fn backward_needed(
        &self,
        params: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        // the draws need no gradient: `Fused` does not read their slot
        let needs: [bool; N] = std::array::from_fn(|j| needs.get(j).copied().unwrap_or(false));
        let mut grads = self.fused.backward_needed(params, output, grad, &needs)?;
        grads.truncate(N - 1);
        Ok(grads)
    }
}

/// A term of an input's gradient: the incoming gradient `g` times the
/// partial `p`, in `f64`. A zero gradient passes on 0 whatever the partial,
/// as the binary ops' do: a partial that overflowed to NaN where the value
/// is set aside (as `on_support` sets aside the density at a stand-in for
/// a point outside the support) gave 0 times NaN, a NaN slope.
#[inline(always)]
fn term<F: Element>(g: F, p: f64) -> f64 {
    let g = g.to_f64().unwrap_or(f64::NAN);
    select(mask(g != 0.0), g * p, 0.0)
}

impl<K: Pointwise<N>, const N: usize> Fused<K, N> {
    /// The op, keeping the partials of the inputs that `needs` marks.
    fn new(needs: [bool; N]) -> Self {
        Fused {
            k: PhantomData,
            needs,
            partials: RefCell::new(std::array::from_fn(|_| Storage::from_vec(Vec::new()))),
        }
    }

    /// The formula's values (and the partials it keeps) at every position
    /// of `shape` from `strided`, the inputs: `part` computes those of a
    /// part ([`run`] or [`run_drawn`]), the whole or, from `split_min`
    /// positions on, each half on a thread of its own.
    ///
    /// # Safety
    /// `part` must write every element of the outputs and of each partial
    /// that is not empty of the part it is given: they are read as written.
    unsafe fn evaluate<F: Element>(
        &self,
        shape: Vec<usize>,
        strided: &[Strided<'_, F>; N],
        split_min: usize,
        part: impl Fn(&[Strided<'_, F>; N], Option<&K::Pre>, Part<'_, F, N>) + Sync,
    ) -> Result<Tensor<F>> {
        let n: usize = shape.iter().product();
        // single-valued parameters: their terms once
        let single = strided[..K::KEYED].iter().all(|&(_, step)| step == 0);
        let pre = single.then(|| {
            let v: [Lanes; N] = std::array::from_fn(|j| first_lanes(strided[j].0));
            K::pre(&v)
        });
        let mut out = Uninit::<F>::new(n);
        let mut partials: [Uninit<f64>; N] =
            std::array::from_fn(|j| Uninit::new(if self.needs[j] { n } else { 0 }));
        {
            let mut d: [&mut [MaybeUninit<f64>]; N] = partials.each_mut().map(|p| p.slots());
            let out = out.slots();
            let pre = pre.as_ref();
            // one closure for the whole and for each half: `run`, with the
            // formula inlined into it, compiled once for each instruction
            // set (`identity` only lets the closure carry its attribute)
            let part = std::convert::identity(
                #[inline(always)]
                |p: Part<'_, F, N>| part(strided, pre, p),
            );
            if let Some(mid) = halves(n, split_min) {
                let (o0, o1) = out.split_at_mut(mid);
                let mut halves = d.each_mut().map(|d| {
                    let d = std::mem::take(d);
                    if d.is_empty() {
                        (d, &mut [][..])
                    } else {
                        d.split_at_mut(mid)
                    }
                });
                let d0 = halves.each_mut().map(|h| std::mem::take(&mut h.0));
                let d1 = halves.each_mut().map(|h| std::mem::take(&mut h.1));
                join_with(&part, (0, o0, d0), (mid, o1, d1));
            } else {
                vectorized_with(&part, (0, out, d));
            }
        }
        // SAFETY: `part` wrote every position of `out` and of each partial
        // that is not empty, over the one part or the two halves (the
        // caller's contract)
        let (mut out, mut partials) =
            unsafe { (out.assume_init(), partials.map(|p| p.assume_init())) };
        if let Some(f) = K::FALLBACK {
            self.fall_back(f, strided, &mut out, &mut partials)?;
        }
        if K::FLAT_BEYOND_THE_FLOATS {
            for (i, _) in out.iter().enumerate().filter(|(_, y)| !y.is_finite()) {
                for p in partials.iter_mut().filter(|p| !p.is_empty()) {
                    p[i] = 0.0;
                }
            }
        }
        *self.partials.borrow_mut() = partials;
        Ok(Tensor::new_unchecked(out, shape))
    }

    /// The value and the partials, into `out` and `partials`, of the
    /// positions that `K` does not cover, from `f` on an `f64` tape of
    /// those positions' inputs (variables where they need a gradient).
    fn fall_back<F: Element>(
        &self,
        f: Fallback,
        inputs: &[Strided<'_, F>; N],
        out: &mut [F],
        partials: &mut [crate::tensor::Storage<f64>; N],
    ) -> Result<()> {
        let at = |i: usize| -> [f64; N] {
            std::array::from_fn(|j| {
                let (data, step) = inputs[j];
                data[i * step].to_f64().unwrap_or(f64::NAN)
            })
        };
        // the positions left out, with their inputs
        let (left, rows): (Vec<usize>, Vec<[f64; N]>) = (0..out.len())
            .map(|i| (i, at(i)))
            .filter(|(_, v)| !K::covers(v))
            .unzip();
        if left.is_empty() {
            return Ok(());
        }
        untimed(|| {
            let tape = Tape::<f64>::new();
            let vars: Vec<Var<'_, f64>> = (0..N)
                .map(|j| {
                    let column =
                        Tensor::from_vec(rows.iter().map(|v| v[j]).collect(), &[left.len()])?;
                    Ok(match self.needs[j] {
                        true => tape.var(column),
                        false => tape.constant(column),
                    })
                })
                .collect::<Result<_>>()?;
            let y = f(&vars)?;
            // (a fallback that is not elementwise would scatter values to
            // the wrong positions)
            if y.shape() != [left.len()] {
                return Err(Error::ShapeMismatch {
                    op: K::NAME,
                    lhs: y.shape(),
                    rhs: vec![left.len()],
                });
            }
            for (&i, &v) in left.iter().zip(y.value().data()) {
                out[i] = F::lit(v);
            }
            if self.needs.iter().any(|&n| n) {
                let grads = y.sum().backward()?;
                for (j, p) in partials.iter_mut().enumerate() {
                    if !self.needs[j] {
                        continue;
                    }
                    let g = grads.get(vars[j]);
                    for (k, &i) in left.iter().enumerate() {
                        p[i] = g.map_or(0.0, |g| g.data()[k]);
                    }
                }
            }
            Ok(())
        })
    }
}

/// `ln x` of each lane: [`ln_lanes`] where every lane is positive and
/// finite (its domain), the platform's `ln` lane by lane otherwise.
#[inline(always)]
pub(crate) fn ln_each(x: &Lanes) -> Lanes {
    if x.iter().all(|&x| x > 0.0 && x < f64::INFINITY) {
        ln_lanes(x)
    } else {
        x.map(f64::ln)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::tape::Tape;
    use crate::error::Error;

    /// `x` in lanes where `x >= 0`, and a fallback that sums its inputs
    /// instead of mapping them.
    #[derive(Clone, Copy)]
    struct Summed;

    impl Pointwise<1> for Summed {
        const NAME: &'static str = "summed";
        const KEYED: usize = 0;
        type Pre = ();
        fn pre(_: &[Lanes; 1]) {}
        fn eval(v: &[Lanes; 1], _: &(), out: &mut Lanes, d: &mut [Lanes; 1]) {
            *out = v[0];
            d[0] = [1.0; LANES];
        }
        const FALLBACK: Option<Fallback> = Some(|v| Ok(v[0].sum()));
        fn covers(v: &[f64; 1]) -> bool {
            v[0] >= 0.0
        }
    }

    /// A fallback whose output is not one value per position it was given
    /// is an error naming the op, not values scattered to positions they
    /// do not belong to; where every position is covered it is not run.
    #[test]
    fn a_fallback_that_is_not_elementwise_is_an_error() {
        let tape = Tape::<f32>::new();
        let x = tape.var(Tensor::vector(&[1.0, -2.0, 3.0, -4.0]));
        match apply(Summed, &[x]) {
            Err(Error::ShapeMismatch { op, lhs, rhs }) => {
                assert_eq!((op, lhs, rhs), ("summed", vec![], vec![2]));
            }
            other => panic!("{:?}", other.map(|v| v.value())),
        }
        let covered = tape.var(Tensor::vector(&[1.0, 2.0]));
        let y = apply(Summed, &[covered]).unwrap();
        assert_eq!(y.value().data(), &[1.0, 2.0]);
    }
}
