//! The one error type of the crate.

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in bayesgrad, each variant carrying the context
/// needed to find the cause (the op, the shapes, the parameter, the value).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two operands whose shapes cannot be combined.
    ShapeMismatch {
        /// The op that was given the operands.
        op: &'static str,
        /// Shape of the left operand.
        lhs: Vec<usize>,
        /// Shape of the right operand.
        rhs: Vec<usize>,
    },
    /// A buffer whose length disagrees with the requested shape.
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
    TooLarge {
        /// The tensor, op or layer.
        what: String,
        /// The requested shape.
        shape: Vec<usize>,
        /// Which limit it passed.
        reason: String,
    },
    /// An index outside an axis.
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
    AxisOutOfRange {
        /// The op.
        op: &'static str,
        /// The offending axis.
        axis: usize,
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// Any other malformed argument of an op.
    InvalidArgument {
        /// The op.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `backward` was called on a non-scalar.
    NonScalarBackward {
        /// The shape of the var backward was called on.
        shape: Vec<usize>,
    },
    /// Vars from two different tapes were combined.
    ForeignTape {
        /// The op.
        op: &'static str,
    },
    /// With the numerics check on, an op produced NaN or Inf.
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
    StaleGradient {
        /// The parameter's name.
        name: String,
        /// The version the tape read.
        read: u64,
        /// The version in the store.
        current: u64,
    },
    /// An optimizer update whose result is not finite; the step was refused.
    NonFiniteUpdate {
        /// The parameter's name.
        name: String,
        /// The first bad element.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// A parameter that is not frozen received no gradient.
    MissingGradient {
        /// The parameter's name.
        name: String,
    },
    /// A parameter's gradient holds NaN or Inf; the step was refused.
    NonFiniteGradient {
        /// The parameter's name.
        name: String,
        /// Element position.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A parameter was used with a store it does not belong to (or with its
    /// own store after a failed
    /// [`ParamStore::adding`](crate::ParamStore::adding) removed it).
    ForeignParam {
        /// The parameter's index in its own store.
        index: usize,
    },
    /// Two parameters were given the same name.
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// A divergence name was registered twice on one tape.
    DuplicateDivergence {
        /// The repeated name.
        name: String,
    },
    /// A distribution parameter outside its domain.
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
    Unsupported {
        /// The distribution.
        distribution: &'static str,
        /// The missing capability.
        what: &'static str,
    },
    /// `Divergence::Analytic` was asked for a pair with no closed form.
    NoAnalyticKl {
        /// The first argument.
        q: String,
        /// The second argument.
        p: String,
    },
    /// An input a layer cannot process.
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
    Io {
        /// The file.
        path: String,
        /// The system's message.
        message: String,
    },
    /// A parameter saved with another constraint than the store gives it
    /// (the stored value would be read through the wrong map).
    ConstraintMismatch {
        /// The parameter.
        name: String,
        /// The constraint in the file.
        saved: String,
        /// The constraint in the store.
        expected: String,
    },
    /// A checkpoint without the state of a part the load asked for.
    MissingState {
        /// The kind asked for ("adam").
        kind: String,
        /// The kinds the file holds.
        saved: String,
    },
    /// A file that is not a bayesgrad checkpoint.
    NotACheckpoint {
        /// Why it was rejected.
        reason: String,
    },
    /// A checkpoint written by an unsupported format version.
    UnsupportedVersion {
        /// Version found in the file.
        found: String,
        /// Version this build reads.
        supported: u32,
    },
    /// A checkpoint that ends early.
    Truncated {
        /// Details.
        reason: String,
    },
    /// Tensor bytes whose checksum disagrees with the metadata.
    ChecksumMismatch {
        /// Checksum in the metadata.
        expected: String,
        /// Checksum of the bytes read.
        found: String,
    },
    /// A parameter of the store is absent from the checkpoint.
    MissingParameter {
        /// The parameter's name.
        name: String,
    },
    /// The checkpoint holds a tensor the store does not know.
    UnexpectedParameter {
        /// The tensor's name.
        name: String,
    },
    /// A tensor whose shape differs from the parameter's.
    ParamShapeMismatch {
        /// The parameter's name.
        name: String,
        /// Shape in the store.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor whose dtype differs from the store's.
    DtypeMismatch {
        /// The parameter's name.
        name: String,
        /// Dtype of the store.
        expected: String,
        /// Dtype in the file.
        found: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs } => {
                write!(f, "shape mismatch in {op}: lhs {lhs:?}, rhs {rhs:?}")
            }
            Error::DataLength {
                op,
                len,
                shape,
                expected,
            } => write!(
                f,
                "{op}: {len} elements do not fill shape {shape:?} ({expected} elements)"
            ),
            Error::TooLarge {
                what,
                shape,
                reason,
            } => write!(f, "{what}: shape {shape:?} is too large ({reason})"),
            Error::IndexOutOfRange {
                op,
                index,
                axis,
                size,
            } => write!(
                f,
                "{op}: index {index} out of range for axis {axis} of size {size}"
            ),
            Error::AxisOutOfRange { op, axis, shape } => write!(
                f,
                "{op}: axis {axis} out of range for a tensor of shape {shape:?}"
            ),
            Error::InvalidArgument { op, reason } => write!(f, "{op}: {reason}"),
            Error::NonScalarBackward { shape } => write!(
                f,
                "backward needs a scalar (one-element) output, got shape {shape:?}; reduce it with sum() or mean() first"
            ),
            Error::ForeignTape { op } => write!(f, "{op}: operands come from different tapes"),
            Error::NonFinite {
                op,
                node,
                value,
                input_shapes,
            } => write!(
                f,
                "op '{op}' (node {node}) produced a non-finite value {value}; inputs had shapes {input_shapes:?}"
            ),
            Error::BadGradientShape {
                op,
                input,
                expected,
                found,
            } => write!(
                f,
                "op '{op}': backward returned a gradient of shape {found:?} for input {input} of shape {expected:?}"
            ),
            Error::BadGradientCount {
                op,
                expected,
                found,
            } => write!(
                f,
                "op '{op}': backward returned {found} gradients for {expected} inputs (return one entry per input, None where an input gets no gradient)"
            ),
            Error::StaleGradient {
                name,
                read,
                current,
            } => write!(
                f,
                "gradient of parameter '{name}' was computed from version {read} of its value, but the store holds version {current}: a tape (or a distribution built on it) outlived an update; read the parameters onto a new tape for every step. No parameter was updated"
            ),
            Error::NonFiniteUpdate { name, index, value } => write!(
                f,
                "the update of parameter '{name}' gives {value} at element {index} (a learning rate too large for its values?); no parameter was updated"
            ),
            Error::MissingGradient { name } => write!(
                f,
                "parameter '{name}' received no gradient: it was not read on the tape or the loss does not depend on it (freeze it with ParamStore::freeze if that is intended)"
            ),
            Error::NonFiniteGradient { name, index, value } => write!(
                f,
                "gradient of parameter '{name}' is not finite (first bad value {value} at element {index}); no parameter was updated"
            ),
            Error::ForeignParam { index } => {
                write!(
                    f,
                    "parameter #{index} does not belong to this ParamStore (it is another store's, or was removed when the constructor that added it failed)"
                )
            }
            Error::DuplicateParam { name } => write!(
                f,
                "a parameter named '{name}' already exists in this ParamStore"
            ),
            Error::DuplicateDivergence { name } => write!(
                f,
                "divergence '{name}' is already registered on this tape; each layer registers once per forward pass (use a fresh tape per step)"
            ),
            Error::InvalidParameter {
                distribution,
                parameter,
                value,
                reason,
            } => write!(
                f,
                "{distribution}: invalid {parameter} = {}: {reason}",
                Number(*value)
            ),
            Error::BatchShapeMismatch {
                distribution,
                lhs_param,
                lhs,
                rhs_param,
                rhs,
            } => write!(
                f,
                "{distribution}: batch shapes do not broadcast: {lhs_param} {lhs:?}, {rhs_param} {rhs:?}"
            ),
            Error::Unsupported { distribution, what } => {
                write!(f, "{distribution} does not support {what}")
            }
            Error::NoAnalyticKl { q, p } => write!(
                f,
                "no analytic KL divergence between {q} and {p}; use Divergence::MonteCarlo or Divergence::Auto"
            ),
            Error::LayerInput {
                layer,
                expected,
                found,
            } => write!(
                f,
                "layer '{layer}': expected input {expected}, got shape {found:?}"
            ),
            Error::GradCheck {
                input,
                index,
                analytic,
                numeric,
                abs_err,
                failing,
                elements,
            } => write!(
                f,
                "gradcheck failed for input {input}: {failing} element(s) out of tolerance; first at element {index}: analytic {}, numeric {} (abs err {abs_err:.3e}){}",
                Number(*analytic),
                Number(*numeric),
                list_failures(elements)
            ),
            Error::StatGradCheck {
                failing,
                components,
                max_z,
                samples,
                listed,
            } => write!(
                f,
                "stat_gradcheck failed: {failing} of {components} component(s) beyond |z| = {max_z} over {samples} estimates: {listed}"
            ),
            Error::Io { path, message } => write!(f, "i/o error on {path}: {message}"),
            Error::ConstraintMismatch {
                name,
                saved,
                expected,
            } => write!(
                f,
                "parameter '{name}' was saved with constraint {saved}, but the store's is {expected}"
            ),
            Error::MissingState { kind, saved } => write!(
                f,
                "the checkpoint holds no '{kind}' state (it holds: [{saved}])"
            ),
            Error::NotACheckpoint { reason } => write!(f, "not a bayesgrad checkpoint: {reason}"),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "unsupported checkpoint version {found} (this build reads version {supported})"
            ),
            Error::Truncated { reason } => write!(f, "checkpoint is truncated: {reason}"),
            Error::ChecksumMismatch { expected, found } => write!(
                f,
                "checkpoint checksum mismatch: metadata says {expected}, tensor bytes hash to {found}"
            ),
            Error::MissingParameter { name } => {
                write!(f, "checkpoint has no tensor for parameter '{name}'")
            }
            Error::UnexpectedParameter { name } => write!(
                f,
                "checkpoint holds '{name}', which is not a parameter of this store"
            ),
            Error::ParamShapeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "parameter '{name}' has shape {expected:?}, got a value (or gradient, or saved tensor) of shape {found:?}"
            ),
            Error::DtypeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "parameter '{name}': checkpoint dtype {found}, store expects {expected}"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An [`Error::InvalidArgument`], for custom ops and user code.
    pub fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }
}

/// A number in a message: as `Display` prints it where that is short
/// (zero, non-finite, or a magnitude from 1e-4 up to 1e15), else in
/// scientific notation, where `Display` would print `1e-300` with three
/// hundred digits.
///
/// An `f32` shows its own shortest digits (`0.4`, not the `f64` of it).
pub(crate) struct Number<T>(pub(crate) T);

impl<T> std::fmt::Display for Number<T>
where
    T: num_traits::Float + std::fmt::Display + std::fmt::LowerExp,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        let size = v.abs().to_f64().unwrap_or(f64::NAN);
        if v.is_zero() || !v.is_finite() || (1e-4..1e15).contains(&size) {
            write!(f, "{v}")
        } else {
            write!(f, "{v:e}")
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
        .map(|&(i, a, n)| format!("[{i}] {} vs {}", Number(a), Number(n)))
        .collect();
    format!("; failing (analytic vs numeric): {}", all.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_messages_stay_short() {
        let shown = |v: f64| Number(v).to_string();
        assert_eq!(Number(0.4f32).to_string(), "0.4");
        assert_eq!(Number(-3e-30f32).to_string(), "-3e-30");
        assert_eq!(shown(0.5), "0.5");
        assert_eq!(shown(-1234.25), "-1234.25");
        assert_eq!(shown(1e-4), "0.0001");
        assert_eq!(shown(1e-5), "1e-5");
        assert_eq!(shown(-1e-300), "-1e-300");
        assert_eq!(shown(2.5e20), "2.5e20");
        assert_eq!(shown(0.0), "0");
        assert_eq!(shown(f64::NEG_INFINITY), "-inf");
        assert_eq!(shown(f64::NAN), "NaN");
        let err = Error::InvalidParameter {
            distribution: "Gamma",
            parameter: "rate",
            value: -1e-300,
            reason: "must be > 0",
        };
        assert_eq!(
            err.to_string(),
            "Gamma: invalid rate = -1e-300: must be > 0"
        );
    }
}
