//! The one error type of the crate.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in bayesgrad, each variant carrying the context
/// needed to find the cause (the op, the shapes, the parameter, the value).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands whose shapes cannot be combined.
    #[error("shape mismatch in {op}: lhs {lhs:?}, rhs {rhs:?}")]
    ShapeMismatch {
        /// The op that was given the operands.
        op: &'static str,
        /// Shape of the left operand.
        lhs: Vec<usize>,
        /// Shape of the right operand.
        rhs: Vec<usize>,
    },
    /// A buffer whose length disagrees with the requested shape.
    #[error("{op}: {len} elements do not fill shape {shape:?} ({expected} elements)")]
    DataLength {
        /// The constructor or op.
        op: &'static str,
        /// Number of elements given.
        len: usize,
        /// The requested shape.
        shape: Vec<usize>,
        /// Number of elements the shape needs.
        expected: usize,
    },
    /// A shape whose element count (or byte size) does not fit in memory's
    /// address range, or whose allocation failed.
    #[error("{what}: shape {shape:?} is too large ({reason})")]
    TooLarge {
        /// The tensor, op or layer.
        what: String,
        /// The requested shape.
        shape: Vec<usize>,
        /// Which limit it passed.
        reason: String,
    },
    /// An index outside an axis.
    #[error("{op}: index {index} out of range for axis {axis} of size {size}")]
    IndexOutOfRange {
        /// The op.
        op: &'static str,
        /// The offending index.
        index: usize,
        /// The axis indexed.
        axis: usize,
        /// The size of that axis.
        size: usize,
    },
    /// An axis outside a tensor's rank.
    #[error("{op}: axis {axis} out of range for a tensor of shape {shape:?}")]
    AxisOutOfRange {
        /// The op.
        op: &'static str,
        /// The offending axis.
        axis: usize,
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// Any other malformed argument of an op.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The op.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `backward` was called on a non-scalar.
    #[error("backward needs a scalar (one-element) output, got shape {shape:?}; reduce it with sum() or mean() first")]
    NonScalarBackward {
        /// The shape of the var backward was called on.
        shape: Vec<usize>,
    },
    /// Vars from two different tapes were combined.
    #[error("{op}: operands come from different tapes")]
    ForeignTape {
        /// The op.
        op: &'static str,
    },
    /// With the numerics check on, an op produced NaN or Inf.
    #[error("op '{op}' (node {node}) produced a non-finite value {value}; inputs had shapes {input_shapes:?}")]
    NonFinite {
        /// Name of the first op that produced a non-finite value.
        op: String,
        /// Its position on the tape.
        node: usize,
        /// The first non-finite value.
        value: f64,
        /// Shapes of the op's inputs.
        input_shapes: Vec<Vec<usize>>,
    },
    /// A custom op's backward returned a gradient of the wrong shape.
    #[error("op '{op}': backward returned a gradient of shape {found:?} for input {input} of shape {expected:?}")]
    BadGradientShape {
        /// The op.
        op: String,
        /// Input position.
        input: usize,
        /// Shape of the input.
        expected: Vec<usize>,
        /// Shape of the returned gradient.
        found: Vec<usize>,
    },
    /// A custom op's backward returned a different number of gradients than
    /// the op has inputs.
    #[error("op '{op}': backward returned {found} gradients for {expected} inputs (return one entry per input, None where an input gets no gradient)")]
    BadGradientCount {
        /// The op.
        op: String,
        /// Number of inputs.
        expected: usize,
        /// Number of gradients returned.
        found: usize,
    },
    /// A gradient was computed from an older value of a parameter than the
    /// store now holds: a tape (or a distribution built on it) outlived an
    /// optimizer step. The step was refused.
    #[error("gradient of parameter '{name}' was computed from version {read} of its value, but the store holds version {current}: a tape (or a distribution built on it) outlived an update; read the parameters onto a new tape for every step. No parameter was updated")]
    StaleGradient {
        /// The parameter's name.
        name: String,
        /// The version the tape read.
        read: u64,
        /// The version in the store.
        current: u64,
    },
    /// An optimizer update whose result is not finite; the step was refused.
    #[error("the update of parameter '{name}' gives {value} at element {index} (a learning rate too large for its values?); no parameter was updated")]
    NonFiniteUpdate {
        /// The parameter's name.
        name: String,
        /// The first bad element.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// A parameter that is not frozen received no gradient.
    #[error("parameter '{name}' received no gradient: it was not read on the tape or the loss does not depend on it (freeze it with ParamStore::freeze if that is intended)")]
    MissingGradient {
        /// The parameter's name.
        name: String,
    },
    /// A parameter's gradient holds NaN or Inf; the step was refused.
    #[error("gradient of parameter '{name}' is not finite (first bad value {value} at element {index}); no parameter was updated")]
    NonFiniteGradient {
        /// The parameter's name.
        name: String,
        /// Element position.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A parameter was used with a store it does not belong to.
    #[error("parameter #{index} does not belong to this ParamStore")]
    ForeignParam {
        /// The parameter's index in its own store.
        index: usize,
    },
    /// Two parameters were given the same name.
    #[error("a parameter named '{name}' already exists in this ParamStore")]
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// A divergence name was registered twice on one tape.
    #[error("divergence '{name}' is already registered on this tape; each layer registers once per forward pass (use a fresh tape per step)")]
    DuplicateDivergence {
        /// The repeated name.
        name: String,
    },
    /// A distribution parameter outside its domain.
    #[error("{distribution}: invalid {parameter} = {value}: {reason}")]
    InvalidParameter {
        /// The distribution.
        distribution: &'static str,
        /// The parameter.
        parameter: &'static str,
        /// The offending value (the first bad element).
        value: f64,
        /// The domain it violates.
        reason: &'static str,
    },
    /// Two parameters of a distribution whose shapes do not broadcast.
    #[error(
        "{distribution}: batch shapes do not broadcast: {lhs_param} {lhs:?}, {rhs_param} {rhs:?}"
    )]
    BatchShapeMismatch {
        /// The distribution.
        distribution: &'static str,
        /// First parameter.
        lhs_param: &'static str,
        /// Its shape.
        lhs: Vec<usize>,
        /// Second parameter.
        rhs_param: &'static str,
        /// Its shape.
        rhs: Vec<usize>,
    },
    /// An operation a distribution does not support.
    #[error("{distribution} does not support {what}")]
    Unsupported {
        /// The distribution.
        distribution: &'static str,
        /// The missing capability.
        what: &'static str,
    },
    /// `Divergence::Analytic` was asked for a pair with no closed form.
    #[error("no analytic KL divergence between {q} and {p}; use Divergence::MonteCarlo or Divergence::Auto")]
    NoAnalyticKl {
        /// The first argument.
        q: String,
        /// The second argument.
        p: String,
    },
    /// An input a layer cannot process.
    #[error("layer '{layer}': expected input {expected}, got shape {found:?}")]
    LayerInput {
        /// The layer's name.
        layer: String,
        /// What the layer accepts.
        expected: String,
        /// The shape it got.
        found: Vec<usize>,
    },
    /// The finite-difference and analytic gradients disagree.
    ///
    /// For a non-scalar output both numbers are derivatives of the scalar
    /// `sum_i w_i y_i` that the check differentiates (fixed weights `w_i` in
    /// [0.5, 1.5], so that errors cannot cancel); for a scalar output they are
    /// the derivatives of the output itself.
    #[error("gradcheck failed for input {input}: {failing} element(s) out of tolerance; first at element {index}: analytic {analytic}, numeric {numeric} (abs err {abs_err:.3e}){}", list_failures(elements))]
    GradCheck {
        /// Input position.
        input: usize,
        /// First failing element's position.
        index: usize,
        /// Its gradient from backward.
        analytic: f64,
        /// Its central-difference estimate.
        numeric: f64,
        /// Their absolute difference.
        abs_err: f64,
        /// How many elements of this input fail.
        failing: usize,
        /// The failing elements as `(index, analytic, numeric)`, up to eight.
        elements: Vec<(usize, f64, f64)>,
    },
    /// A stochastic gradient estimator's mean is further from the exact
    /// expected gradient than the stated number of standard errors.
    #[error("stat_gradcheck failed: {failing} of {components} component(s) beyond |z| = {max_z} over {samples} estimates: {listed}")]
    StatGradCheck {
        /// How many components fail.
        failing: usize,
        /// How many components were checked.
        components: usize,
        /// The bound on `|z|`.
        max_z: f64,
        /// The number of estimates.
        samples: usize,
        /// The failing components (up to eight) with mean, exact value, standard error and z.
        listed: String,
    },
    /// An I/O failure while saving or loading.
    #[error("i/o error on {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The system's message.
        message: String,
    },
    /// A parameter saved with another constraint than the store gives it
    /// (the stored value would be read through the wrong map).
    #[error("parameter '{name}' was saved with constraint {saved}, but the store's is {expected}")]
    ConstraintMismatch {
        /// The parameter.
        name: String,
        /// The constraint in the file.
        saved: String,
        /// The constraint in the store.
        expected: String,
    },
    /// A checkpoint without the state of a part the load asked for.
    #[error("the checkpoint holds no '{kind}' state (it holds: [{saved}])")]
    MissingState {
        /// The kind asked for ("adam").
        kind: String,
        /// The kinds the file holds.
        saved: String,
    },
    /// A file that is not a bayesgrad checkpoint.
    #[error("not a bayesgrad checkpoint: {reason}")]
    NotACheckpoint {
        /// Why it was rejected.
        reason: String,
    },
    /// A checkpoint written by an unsupported format version.
    #[error("unsupported checkpoint version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version found in the file.
        found: String,
        /// Version this build reads.
        supported: u32,
    },
    /// A checkpoint that ends early.
    #[error("checkpoint is truncated: {reason}")]
    Truncated {
        /// Details.
        reason: String,
    },
    /// Tensor bytes whose checksum disagrees with the metadata.
    #[error(
        "checkpoint checksum mismatch: metadata says {expected}, tensor bytes hash to {found}"
    )]
    ChecksumMismatch {
        /// Checksum in the metadata.
        expected: String,
        /// Checksum of the bytes read.
        found: String,
    },
    /// A parameter of the store is absent from the checkpoint.
    #[error("checkpoint has no tensor for parameter '{name}'")]
    MissingParameter {
        /// The parameter's name.
        name: String,
    },
    /// The checkpoint holds a tensor the store does not know.
    #[error("checkpoint holds '{name}', which is not a parameter of this store")]
    UnexpectedParameter {
        /// The tensor's name.
        name: String,
    },
    /// A tensor whose shape differs from the parameter's.
    #[error("parameter '{name}' has shape {expected:?}, got a value (or gradient, or saved tensor) of shape {found:?}")]
    ParamShapeMismatch {
        /// The parameter's name.
        name: String,
        /// Shape in the store.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor whose dtype differs from the store's.
    #[error("parameter '{name}': checkpoint dtype {found}, store expects {expected}")]
    DtypeMismatch {
        /// The parameter's name.
        name: String,
        /// Dtype of the store.
        expected: String,
        /// Dtype in the file.
        found: String,
    },
}

impl Error {
    /// An [`Error::InvalidArgument`], for custom ops and user code.
    pub fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }
}

/// `; all: [3] 0.5 vs 0.25, ...` for the failing elements after the first.
fn list_failures(elements: &[(usize, f64, f64)]) -> String {
    if elements.len() < 2 {
        return String::new();
    }
    let all: Vec<String> = elements
        .iter()
        .map(|(i, a, n)| format!("[{i}] {a} vs {n}"))
        .collect();
    format!("; failing (analytic vs numeric): {}", all.join(", "))
}
