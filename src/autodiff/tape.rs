//! The tape: records every op applied to [`Var`]s and runs reverse-mode
//! differentiation over it in [`Var::backward`].

use crate::autodiff::params::{Constraint, Param, ParamKey, ParamStore};
use crate::autodiff::profile::{self, Pass};
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};

/// A differentiable operation: forward and backward on tensors, in one place.
///
/// Implement it to add a custom op (say a hand-written likelihood kernel),
/// apply it with [`Tape::apply`] and check its backward with
/// [`gradcheck`](crate::autodiff::gradcheck::gradcheck).
///
/// ```
/// use bayesgrad::prelude::*;
///
/// /// y = x^3, elementwise.
/// struct Cube;
/// impl Op<f64> for Cube {
///     fn name(&self) -> &str { "cube" }
///     fn forward(&self, inputs: &[&Tensor<f64>]) -> Result<Tensor<f64>> {
///         Ok(inputs[0].map(|x| x * x * x))
///     }
///     fn backward(&self, inputs: &[&Tensor<f64>], _out: &Tensor<f64>, grad: &Tensor<f64>)
///         -> Result<Vec<Option<Tensor<f64>>>> {
///         Ok(vec![Some(grad.zip_map(inputs[0], "cube", |g, x| 3.0 * x * x * g)?)])
///     }
/// }
///
/// let report = gradcheck(
///     |tape, xs| Ok(tape.apply(Cube, &[xs[0]])?.sum()),
///     &[Tensor::vector(&[0.5, -1.5, 2.0])],
///     &GradCheck::default(),
/// )?;
/// assert!(report.max_abs_err() < 1e-6);
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub trait Op<F: Element>: 'static {
    /// Name used in error messages and the numerics check.
    fn name(&self) -> &str;

    /// Computes the output from the inputs.
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Tensor<F>>;

    /// Given the inputs, the output and the gradient of the loss w.r.t. the
    /// output, returns the gradient w.r.t. each input (same shape as that
    /// input), or `None` for inputs that are not differentiable.
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
    ) -> Result<Vec<Option<Tensor<F>>>>;

    /// Like [`backward`](Op::backward), told which inputs need a gradient so
    /// that expensive ones can be skipped. The default calls `backward`.
    fn backward_needed(
        &self,
        inputs: &[&Tensor<F>],
        output: &Tensor<F>,
        grad: &Tensor<F>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<F>>>> {
        self.backward(inputs, output, grad)
    }
}

/// An op with several outputs (crate-internal), for fused kernels whose
/// outputs share intermediates: a layer's weight perturbation and its KL
/// term, say. Output 0 is the op's own node; outputs 1.. are nodes that
/// follow it on the tape and hand their gradients back to it, so its
/// backward runs once, when any output received a gradient.
pub(crate) trait MultiOp<F: Element>: 'static {
    /// Name used in error messages and the numerics check.
    fn name(&self) -> &str;

    /// Computes the outputs (at least one) from the inputs.
    fn forward(&self, inputs: &[&Tensor<F>]) -> Result<Vec<Tensor<F>>>;

    /// `grads[j]` is the gradient of the loss w.r.t. output `j` (`None` if
    /// none reached it; at least one is `Some`), handed over so that its
    /// storage can become an input's gradient. `acc[i]` holds the gradient
    /// of input `i` from the uses of it processed so far: for each input
    /// with `needs[i]`, add this op's part to it, in place or by setting it.
    /// (Adding in place saves the separate pass that summing two gradients
    /// of a large input would cost.)
    fn backward(
        &self,
        inputs: &[&Tensor<F>],
        grads: Vec<Option<Tensor<F>>>,
        needs: &[bool],
        acc: &mut [Option<Tensor<F>>],
    ) -> Result<()>;
}

/// What made a node.
enum NodeOp<F: Element> {
    /// Nothing: a constant, a var or a parameter read.
    Leaf,
    /// An op with one output.
    Single(Box<dyn Op<F>>),
    /// Output 0 of an op with this many outputs; the others are the
    /// [`NodeOp::Extra`] nodes right after it.
    Multi(Box<dyn MultiOp<F>>, usize),
    /// Output `index` (at least 1) of the [`NodeOp::Multi`] node `of`.
    Extra { of: usize, index: usize },
}

struct Node<F: Element> {
    value: Tensor<F>,
    op: NodeOp<F>,
    /// Where the ids of the inputs are in the tape's `edges`.
    inputs: std::ops::Range<usize>,
    requires_grad: bool,
    /// For a parameter read: the parameter and the version of its value.
    param: Option<(ParamKey, u64)>,
}

/// Records a computation for one forward pass and its backward pass.
///
/// A tape is cheap: make a new one per training step. [`Var`]s borrow it,
/// so nothing built on a tape (vars, distributions) can outlive it or be
/// stored in a layer: layers store [`Param`]s and read them with
/// [`Tape::param`] on every call, which is what keeps their gradients alive.
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::vector(&[1.0, 2.0]));   // a leaf with a gradient
/// let c = tape.scalar(3.0);                         // a constant
/// let y = (x * c + 1.0).square().sum();             // sum (3x + 1)^2
/// let grads = y.backward()?;
/// // d/dx = 6 (3x + 1) = [24, 42]
/// assert_eq!(grads.get(x).unwrap().data(), &[24.0, 42.0]);
/// assert_eq!(grads.get(c), None);                   // constants get none
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Tape<F: Element> {
    /// Unique among the process's tapes (never reused): it tells
    /// [`Gradients::get`] whether a var is on the tape it differentiated.
    id: u64,
    nodes: RefCell<Vec<Node<F>>>,
    /// The input ids of all nodes, one after the other (one buffer rather
    /// than a small vector per node).
    edges: RefCell<Vec<usize>>,
    finite_check: bool,
    first_non_finite: RefCell<Option<Error>>,
}

impl<F: Element> Default for Tape<F> {
    fn default() -> Self {
        Self::new()
    }
}

/// A handle to a value on a [`Tape`]. `Copy`, so it can be used freely in
/// expressions; gradients flow through every use.
///
/// Operators `+ - * /` work between vars, tensors and scalars on either side
/// (they panic on shapes that do not broadcast; the `try_` methods return
/// the error instead).
///
/// ```
/// use bayesgrad::prelude::*;
/// let tape = Tape::<f64>::new();
/// let w = tape.var(Tensor::from_rows(&[[1.0, -1.0], [0.5, 2.0]])?);
/// let x = tape.constant(Tensor::from_rows(&[[1.0, 2.0]])?);
/// let h = x.matmul(w)?.relu();                       // [1, 2]
/// assert_eq!(h.shape(), vec![1, 2]);
/// let loss = (h - 1.0).square().mean();
/// assert!(loss.backward()?.get(w).is_some());
/// assert!(x.try_add(tape.scalar(1.0).broadcast_to(&[3])?).is_err());
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Var<'t, F: Element> {
    pub(crate) tape: &'t Tape<F>,
    pub(crate) id: usize,
}

impl<F: Element> Clone for Var<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Element> Copy for Var<'_, F> {}

impl<F: Element> std::fmt::Debug for Var<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = self.tape.nodes.borrow();
        write!(f, "Var#{} {:?}", self.id, nodes[self.id].value)
    }
}

impl<F: Element> Tape<F> {
    /// An empty tape.
    pub fn new() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Tape {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            nodes: RefCell::new(Vec::with_capacity(8)),
            edges: RefCell::new(Vec::with_capacity(16)),
            finite_check: false,
            first_non_finite: RefCell::new(None),
        }
    }

    /// A tape that checks every op's output for NaN and Inf; the first op
    /// that produced one is reported by [`Tape::check_finite`] and by
    /// [`Var::backward`] as [`Error::NonFinite`].
    pub fn with_finite_check() -> Self {
        Tape {
            finite_check: true,
            ..Self::new()
        }
    }

    /// The number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first non-finite value seen by the numerics check, if it is on.
    pub fn check_finite(&self) -> Result<()> {
        match &*self.first_non_finite.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn push(
        &self,
        value: Tensor<F>,
        op: NodeOp<F>,
        inputs: &[Var<'_, F>],
        requires_grad: bool,
        param: Option<(ParamKey, u64)>,
    ) -> Var<'_, F> {
        let mut nodes = self.nodes.borrow_mut();
        let id = nodes.len();
        if self.finite_check
            && self.first_non_finite.borrow().is_none()
            && let Some((_, bad)) = value.first_non_finite()
        {
            let name = match &op {
                NodeOp::Leaf => "leaf".to_string(),
                NodeOp::Single(o) => o.name().to_string(),
                NodeOp::Multi(o, _) => o.name().to_string(),
                NodeOp::Extra { of, index } => match &nodes[*of].op {
                    NodeOp::Multi(o, _) => format!("{} (output {index})", o.name()),
                    _ => unreachable!("an extra output follows its op"),
                },
            };
            let input_shapes = inputs
                .iter()
                .map(|v| nodes[v.id].value.shape().to_vec())
                .collect();
            *self.first_non_finite.borrow_mut() = Some(Error::NonFinite {
                op: name,
                node: id,
                value: bad.to_f64().unwrap_or(f64::NAN),
                input_shapes,
            });
        }
        let mut edges = self.edges.borrow_mut();
        let start = edges.len();
        edges.extend(inputs.iter().map(|v| v.id));
        nodes.push(Node {
            value,
            op,
            inputs: start..edges.len(),
            requires_grad,
            param,
        });
        Var { tape: self, id }
    }

    /// A constant: no gradient is computed for it.
    pub fn constant(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(value, NodeOp::Leaf, &[], false, None)
    }

    /// A scalar constant.
    pub fn scalar(&self, x: F) -> Var<'_, F> {
        self.constant(Tensor::scalar(x))
    }

    /// A leaf that receives a gradient ([`Gradients::get`]); useful for
    /// inputs you differentiate with respect to, as in gradient checks.
    pub fn var(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push(value, NodeOp::Leaf, &[], true, None)
    }

    /// Reads a parameter onto the tape, in its constrained form: a
    /// positive parameter `p` stored as `rho` is read as `softplus(rho) + eps`.
    /// The gradient reaches the stored (unconstrained) value.
    ///
    /// # Panics
    /// If `param` belongs to another store; [`Tape::try_param`] returns an error instead.
    pub fn param<'t>(&'t self, store: &ParamStore<F>, param: Param) -> Var<'t, F> {
        self.try_param(store, param)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Tape::param`] returning an error for a foreign parameter.
    pub fn try_param<'t>(&'t self, store: &ParamStore<F>, param: Param) -> Result<Var<'t, F>> {
        let raw = self.try_param_raw(store, param)?;
        Ok(store.constraint(param)?.apply(raw))
    }

    /// Reads the stored, unconstrained value of a parameter (`rho` for a
    /// positive parameter).
    pub fn try_param_raw<'t>(&'t self, store: &ParamStore<F>, param: Param) -> Result<Var<'t, F>> {
        let value = store.try_raw(param)?.clone();
        let read = (store.key(param), store.version(param)?);
        Ok(self.push(value, NodeOp::Leaf, &[], true, Some(read)))
    }

    /// Applies an op to vars, recording it on the tape.
    pub fn apply<'t, O: Op<F>>(&'t self, op: O, inputs: &[Var<'t, F>]) -> Result<Var<'t, F>> {
        self.apply_boxed(Box::new(op), inputs)
    }

    pub(crate) fn apply_boxed<'t>(
        &'t self,
        op: Box<dyn Op<F>>,
        inputs: &[Var<'t, F>],
    ) -> Result<Var<'t, F>> {
        self.check_own(inputs)?;
        let span = profile::span();
        let (value, requires_grad) = {
            let nodes = self.nodes.borrow();
            let value = match inputs {
                // the common arities without allocating the list of inputs
                [a] => op.forward(&[&nodes[a.id].value])?,
                [a, b] => op.forward(&[&nodes[a.id].value, &nodes[b.id].value])?,
                [a, b, c] => {
                    op.forward(&[&nodes[a.id].value, &nodes[b.id].value, &nodes[c.id].value])?
                }
                _ => {
                    let values: Vec<&Tensor<F>> =
                        inputs.iter().map(|v| &nodes[v.id].value).collect();
                    op.forward(&values)?
                }
            };
            (value, inputs.iter().any(|v| nodes[v.id].requires_grad))
        };
        span.end(op.name(), Pass::Forward);
        Ok(self.push(value, NodeOp::Single(op), inputs, requires_grad, None))
    }

    /// An op's inputs must all be vars of this tape.
    fn check_own(&self, inputs: &[Var<'_, F>]) -> Result<()> {
        if inputs.iter().any(|v| !std::ptr::eq(v.tape, self)) {
            return Err(Error::ForeignTape { op: "apply" });
        }
        Ok(())
    }

    /// Records an op whose output the caller already computed, since the
    /// `span` it started before computing it (which this ends).
    pub(crate) fn record<'t>(
        &'t self,
        span: profile::Span,
        value: Tensor<F>,
        op: Box<dyn Op<F>>,
        inputs: &[Var<'t, F>],
    ) -> Var<'t, F> {
        span.end(op.name(), Pass::Forward);
        let requires_grad = {
            let nodes = self.nodes.borrow();
            inputs.iter().any(|v| nodes[v.id].requires_grad)
        };
        self.push(value, NodeOp::Single(op), inputs, requires_grad, None)
    }

    /// Applies an op with several outputs; returns one var per output.
    pub(crate) fn apply_multi<'t>(
        &'t self,
        op: Box<dyn MultiOp<F>>,
        inputs: &[Var<'t, F>],
    ) -> Result<Vec<Var<'t, F>>> {
        self.check_own(inputs)?;
        let (outputs, requires_grad) = {
            let nodes = self.nodes.borrow();
            let values: Vec<&Tensor<F>> = inputs.iter().map(|v| &nodes[v.id].value).collect();
            let requires_grad = inputs.iter().any(|v| nodes[v.id].requires_grad);
            let span = profile::span();
            let outputs = op.forward(&values)?;
            span.end(op.name(), Pass::Forward);
            (outputs, requires_grad)
        };
        let count = outputs.len();
        let mut outputs = outputs.into_iter();
        let Some(first) = outputs.next() else {
            return Err(Error::InvalidArgument {
                op: "apply_multi",
                reason: format!("op '{}' returned no outputs", op.name()),
            });
        };
        let first = self.push(first, NodeOp::Multi(op, count), inputs, requires_grad, None);
        let mut vars = vec![first];
        for (index, value) in (1..).zip(outputs) {
            let of = first.id;
            vars.push(self.push(value, NodeOp::Extra { of, index }, &[], requires_grad, None));
        }
        Ok(vars)
    }

    /// Runs `f` on the value of node `id` without cloning it.
    pub(crate) fn with_value<R>(&self, id: usize, f: impl FnOnce(&Tensor<F>) -> R) -> R {
        f(&self.nodes.borrow()[id].value)
    }
}

/// The value a model reads is the stored one through its constraint, an op
/// on the tape: computed here, so that it is exactly what [`Tape::param`]
/// gives.
impl<F: Element> ParamStore<F> {
    /// The value a model reads: `softplus(rho) + eps` for a positive
    /// parameter, `sigmoid(logit)` for one in (0, 1), the stored value
    /// otherwise ([`ParamStore::raw`] gives the stored one).
    pub fn try_value(&self, p: Param) -> Result<Tensor<F>> {
        let tape = Tape::new();
        Ok(tape.try_param(self, p)?.value())
    }

    /// [`ParamStore::try_value`], panicking for a parameter of another store.
    ///
    /// # Panics
    /// If `p` belongs to another store.
    pub fn value(&self, p: Param) -> Tensor<F> {
        self.try_value(p).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Applying a constraint is an op on the tape, so it lives beside the tape
/// (the store itself knows nothing of tapes).
impl Constraint {
    /// Maps an unconstrained var to the constrained space.
    pub fn apply<'t, F: Element>(self, raw: Var<'t, F>) -> Var<'t, F> {
        match self {
            Constraint::Real => raw,
            Constraint::Positive { eps } => raw.softplus_shift(F::lit(eps)),
            Constraint::UnitInterval => raw.sigmoid(),
        }
    }
}

/// Gradients of a scalar w.r.t. the leaves of the tape, returned by
/// [`Var::backward`]. Gradients live here, not on the nodes: there is no
/// `zero_grad`.
///
/// ```
/// use bayesgrad::prelude::*;
/// let mut store = ParamStore::<f64>::new();
/// let w = store.add("w", Tensor::vector(&[1.0, 2.0]));
/// let tape = Tape::new();
/// let x = tape.var(Tensor::vector(&[3.0, 4.0]));
/// let loss = (tape.param(&store, w) * x).sum();
/// let grads = loss.backward()?;
/// assert_eq!(grads.param(w).unwrap().data(), &[3.0, 4.0]); // by parameter
/// assert_eq!(grads.get(x).unwrap().data(), &[1.0, 2.0]);   // by var
/// # Ok::<(), bayesgrad::Error>(())
/// ```
pub struct Gradients<F: Element> {
    /// The id of the tape whose output was differentiated.
    tape: u64,
    /// By node id on that tape.
    leaves: HashMap<usize, Tensor<F>, BuildHasherDefault<IdHasher>>,
    /// Each parameter's gradient and the (oldest) version of its value read.
    params: HashMap<ParamKey, (Tensor<F>, u64), BuildHasherDefault<IdHasher>>,
}

/// A hasher for the small integer keys of [`Gradients`] (node ids, store
/// ids and positions): a multiply and a rotate per word. The keys come from
/// this crate, not from outside, so SipHash's protection against chosen
/// keys buys nothing here, and it cost ~5% of the instructions of the
/// `tiny` benchmark step.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl<F: Element> std::fmt::Debug for Gradients<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gradients")
            .field("params", &self.params.len())
            .field("leaves", &self.leaves.len())
            .finish()
    }
}

impl<F: Element> Gradients<F> {
    /// The gradient w.r.t. a leaf made by [`Tape::var`]; for a parameter
    /// read, the parameter's gradient summed over all its reads. `None` if
    /// the output does not depend on it, as for a var of another tape (whose
    /// node id may be that of a leaf of this one; a parameter's gradient
    /// whatever tape read it is [`Gradients::param`]).
    ///
    /// ```
    /// use bayesgrad::prelude::*;
    /// let (tape, other) = (Tape::<f64>::new(), Tape::<f64>::new());
    /// let x = tape.var(Tensor::scalar(2.0));
    /// let y = other.var(Tensor::scalar(5.0)); // the first leaf of its tape, as x is of its own
    /// let grads = (x * x).backward()?;
    /// assert_eq!(grads.get(x).map(|g| g.data()[0]), Some(4.0));
    /// assert!(grads.get(y).is_none());
    /// # Ok::<(), bayesgrad::Error>(())
    /// ```
    pub fn get(&self, var: Var<'_, F>) -> Option<&Tensor<F>> {
        if var.tape.id != self.tape {
            return None;
        }
        match var.tape.nodes.borrow()[var.id].param {
            Some((key, _)) => self.params.get(&key).map(|(g, _)| g),
            None => self.leaves.get(&var.id),
        }
    }

    /// The gradient w.r.t. a parameter's stored (unconstrained) value,
    /// summed over every read of it on the tape; `None` if it got none.
    pub fn param(&self, param: Param) -> Option<&Tensor<F>> {
        self.params.get(&param.key()).map(|(g, _)| g)
    }

    /// Whether every computed gradient is finite.
    pub fn all_finite(&self) -> bool {
        self.leaves
            .values()
            .chain(self.params.values().map(|(g, _)| g))
            .all(|t| t.first_non_finite().is_none())
    }

    /// Whether the output depends on parameters only of other stores than
    /// `p`'s (and on at least one).
    pub(crate) fn only_other_stores_than(&self, p: Param) -> bool {
        !self.params.is_empty() && self.params.keys().all(|k| !k.same_store(p))
    }

    pub(crate) fn param_by_key(&self, key: ParamKey) -> Option<&Tensor<F>> {
        self.params.get(&key).map(|(g, _)| g)
    }

    /// The version of a parameter's value the gradient was computed from
    /// (the oldest, if the tape read it more than once).
    pub fn param_version(&self, param: Param) -> Option<u64> {
        self.params.get(&param.key()).map(|&(_, v)| v)
    }
}

impl<'t, F: Element> Var<'t, F> {
    /// The tape this var lives on.
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// A copy of the value.
    pub fn value(&self) -> Tensor<F> {
        self.tape.with_value(self.id, |t| t.clone())
    }

    /// The shape of the value.
    pub fn shape(&self) -> Vec<usize> {
        self.tape.with_value(self.id, |t| t.shape().to_vec())
    }

    /// The single element of a one-element var.
    pub fn item(&self) -> Result<F> {
        self.tape.with_value(self.id, |t| t.item())
    }

    /// Whether gradients flow to this var.
    pub fn requires_grad(&self) -> bool {
        self.tape.nodes.borrow()[self.id].requires_grad
    }

    /// The same value as a constant: **gradients stop here**. Use it only
    /// when you mean to cut the graph (e.g. a baseline or a target).
    pub fn detach(&self) -> Var<'t, F> {
        self.tape.constant(self.value())
    }

    /// Reverse-mode differentiation of this scalar w.r.t. every leaf.
    ///
    /// Errors if the var is not a one-element tensor, if the numerics check
    /// saw a NaN/Inf, or if a custom op's backward misbehaves.
    pub fn backward(&self) -> Result<Gradients<F>> {
        self.tape.check_finite()?;
        let nodes = self.tape.nodes.borrow();
        let root = &nodes[self.id];
        if root.value.len() != 1 {
            return Err(Error::NonScalarBackward {
                shape: root.value.shape().to_vec(),
            });
        }
        let mut grads: Vec<Option<Tensor<F>>> = Vec::new();
        grads.resize_with(self.id + 1, || None);
        grads[self.id] = Some(Tensor::full(root.value.shape(), F::one()));
        let mut out = Gradients {
            tape: self.tape.id,
            leaves: HashMap::default(),
            params: HashMap::default(),
        };
        let edges = self.tape.edges.borrow();
        // reused from node to node
        let (mut inputs, mut needs): (Vec<&Tensor<F>>, Vec<bool>) = (Vec::new(), Vec::new());
        // the gradients of the outputs 1.. of multi-output ops, by the op's node
        let mut extra: HashMap<usize, Vec<Option<Tensor<F>>>, BuildHasherDefault<IdHasher>> =
            HashMap::default();
        for id in (0..=self.id).rev() {
            let node = &nodes[id];
            let grad = grads[id].take();
            if !node.requires_grad {
                continue;
            }
            match (&node.op, grad) {
                (NodeOp::Multi(op, count), grad) => {
                    // its backward runs if any of its outputs got a gradient
                    let Some(mut outs) =
                        extra.remove(&id).or_else(|| grad.is_some().then(Vec::new))
                    else {
                        continue;
                    };
                    outs.resize_with(*count, || None);
                    outs[0] = grad;
                    let ids = &edges[node.inputs.clone()];
                    gather(&nodes, ids, &mut inputs, &mut needs);
                    // an input used twice gets its accumulated gradient once
                    let mut acc: Vec<Option<Tensor<F>>> =
                        ids.iter().map(|&i| grads[i].take()).collect();
                    let span = profile::span();
                    op.backward(&inputs, outs, &needs, &mut acc)?;
                    span.end(op.name(), Pass::Backward);
                    for (pos, (&input, g)) in ids.iter().zip(acc).enumerate() {
                        if let Some(g) = g {
                            accumulate(&mut grads, &nodes, op.name(), (pos, input), g)?;
                        }
                    }
                }
                (_, None) => {}
                (NodeOp::Leaf, Some(grad)) => match node.param {
                    // a parameter read: its gradient is summed over all reads,
                    // and the oldest version read is the one it reflects
                    Some((key, version)) => match out.params.get_mut(&key) {
                        Some((acc, read)) => {
                            acc.add_assign(&grad);
                            *read = (*read).min(version);
                        }
                        None => {
                            out.params.insert(key, (grad, version));
                        }
                    },
                    None => {
                        out.leaves.insert(id, grad);
                    }
                },
                (NodeOp::Extra { of, index }, Some(grad)) => {
                    let outs = extra.entry(*of).or_default();
                    if outs.len() <= *index {
                        outs.resize_with(index + 1, || None);
                    }
                    outs[*index] = Some(grad);
                }
                (NodeOp::Single(op), Some(grad)) => {
                    let ids = &edges[node.inputs.clone()];
                    gather(&nodes, ids, &mut inputs, &mut needs);
                    let span = profile::span();
                    let input_grads = op.backward_needed(&inputs, &node.value, &grad, &needs)?;
                    span.end(op.name(), Pass::Backward);
                    if input_grads.len() != ids.len() {
                        return Err(Error::BadGradientCount {
                            op: op.name().to_string(),
                            expected: ids.len(),
                            found: input_grads.len(),
                        });
                    }
                    for (pos, (&input, g)) in ids.iter().zip(input_grads).enumerate() {
                        if let (Some(g), true) = (g, needs[pos]) {
                            accumulate(&mut grads, &nodes, op.name(), (pos, input), g)?;
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The values of the nodes `ids` and whether each needs a gradient.
fn gather<'a, F: Element>(
    nodes: &'a [Node<F>],
    ids: &[usize],
    inputs: &mut Vec<&'a Tensor<F>>,
    needs: &mut Vec<bool>,
) {
    inputs.clear();
    inputs.extend(ids.iter().map(|&i| &nodes[i].value));
    needs.clear();
    needs.extend(ids.iter().map(|&i| nodes[i].requires_grad));
}

/// Adds `g`, the gradient an op computed for its input number `pos`
/// (node `input`), to what that node has received so far.
fn accumulate<F: Element>(
    grads: &mut [Option<Tensor<F>>],
    nodes: &[Node<F>],
    op: &str,
    (pos, input): (usize, usize),
    g: Tensor<F>,
) -> Result<()> {
    let expected = nodes[input].value.shape();
    if g.shape() != expected {
        return Err(Error::BadGradientShape {
            op: op.to_string(),
            input: pos,
            expected: expected.to_vec(),
            found: g.shape().to_vec(),
        });
    }
    match &mut grads[input] {
        Some(acc) => acc.add_assign(&g),
        slot @ None => *slot = Some(g),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(x + y, x * y, sum x)`, adding into the accumulated gradients; the
    /// first `.0` of them (a broken op when that is 0).
    struct ThreeOutputs(usize);
    impl MultiOp<f64> for ThreeOutputs {
        fn name(&self) -> &str {
            "three_outputs"
        }
        fn forward(&self, inputs: &[&Tensor<f64>]) -> Result<Vec<Tensor<f64>>> {
            let (x, y) = (inputs[0], inputs[1]);
            let mut outputs = vec![
                x.zip_map(y, "add", |a, b| a + b)?,
                x.zip_map(y, "mul", |a, b| a * b)?,
                Tensor::scalar(x.sum_all()),
            ];
            outputs.truncate(self.0);
            Ok(outputs)
        }
        fn backward(
            &self,
            inputs: &[&Tensor<f64>],
            grads: Vec<Option<Tensor<f64>>>,
            needs: &[bool],
            acc: &mut [Option<Tensor<f64>>],
        ) -> Result<()> {
            for (i, other) in [(0, 1), (1, 0)] {
                // y is not in output 2
                let reached = grads[0].is_some() || grads[1].is_some() || i == 0;
                if !needs[i] || !reached {
                    continue;
                }
                let mut g = Tensor::zeros(inputs[i].shape());
                if let Some(g0) = &grads[0] {
                    g = g.zip_map(g0, "add", |a, b| a + b)?;
                }
                if let Some(g1) = &grads[1] {
                    let part = g1.zip_map(inputs[other], "mul", |a, b| a * b)?;
                    g = g.zip_map(&part, "add", |a, b| a + b)?;
                }
                if let (0, Some(g2)) = (i, &grads[2]) {
                    let c = g2.data()[0];
                    g = g.map(|a| a + c);
                }
                acc[i] = Some(match acc[i].take() {
                    Some(a) => a.zip_map(&g, "add", |a, b| a + b)?,
                    None => g,
                });
            }
            Ok(())
        }
    }

    #[test]
    fn a_multi_output_op_without_outputs_is_an_error_not_a_panic() {
        let tape = Tape::<f64>::new();
        let x = tape.constant(Tensor::vector(&[1.0, 2.0]));
        let err = tape
            .apply_multi(Box::new(ThreeOutputs(0)), &[x, x])
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { reason, .. } if reason.contains("three_outputs")),
            "{err}"
        );
    }

    /// The same three outputs from single-output ops.
    fn composed<'t>(x: Var<'t, f64>, y: Var<'t, f64>) -> [Var<'t, f64>; 3] {
        [x + y, x * y, x.sum()]
    }

    #[test]
    fn every_output_of_a_multi_output_op_carries_its_gradient() {
        let (xv, yv) = (
            Tensor::vector(&[0.5, -1.0, 2.0]),
            Tensor::vector(&[3.0, 0.25, -2.0]),
        );
        let w = Tensor::vector(&[1.0, -2.0, 0.5]);
        // every non-empty subset of the outputs in the loss, weighted
        for subset in 1..8u32 {
            let gradients = |fused: bool| {
                let tape = Tape::new();
                let (x, y) = (tape.var(xv.clone()), tape.var(yv.clone()));
                let outs: Vec<Var<'_, f64>> = if fused {
                    tape.apply_multi(Box::new(ThreeOutputs(3)), &[x, y])
                        .unwrap()
                } else {
                    composed(x, y).to_vec()
                };
                let wc = tape.constant(w.clone());
                let mut loss = (x * wc).sum(); // x also used elsewhere
                for (j, out) in outs.iter().enumerate() {
                    if subset & (1 << j) != 0 {
                        loss = loss + (*out * (j as f64 + 1.0)).sum();
                    }
                }
                let g = loss.backward().unwrap();
                (g.get(x).cloned(), g.get(y).cloned())
            };
            assert_eq!(gradients(true), gradients(false), "outputs {subset:03b}");
        }
    }

    #[test]
    fn an_extra_output_can_be_the_root_and_an_input_can_repeat() {
        let xv = Tensor::vector(&[0.5, -1.0, 2.0]);
        let tape = Tape::new();
        let x = tape.var(xv.clone());
        // (2x, x^2, sum x) with x as both inputs; the root is output 1
        let outs = tape
            .apply_multi(Box::new(ThreeOutputs(3)), &[x, x])
            .unwrap();
        let g = outs[1].sum().backward().unwrap();
        assert_eq!(g.get(x).unwrap(), &xv.map(|a| 2.0 * a));
        let g = outs[2].backward().unwrap();
        assert_eq!(g.get(x).unwrap(), &Tensor::vector(&[1.0, 1.0, 1.0]));
    }
}
