//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong, with the offending input and value named.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// No wgpu adapter matched (or none exists at all).
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },
    /// An input's shape does not fit the loss.
    #[error("shape mismatch for `{input}`: expected {expected}, got {got:?}")]
    Shape {
        input: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    /// An input has the wrong element type.
    #[error("`{input}` must be {expected}, got {got}")]
    DType {
        input: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    /// An option is outside its allowed range.
    #[error("invalid option `{option}` = {value}: {reason}")]
    Option {
        option: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A data value is outside its allowed set (a class index, a label).
    #[error("invalid `{input}` at row {row}: value {value} ({reason})")]
    Value {
        input: &'static str,
        row: usize,
        value: String,
        reason: String,
    },
    /// A batch with no rows.
    #[error("`{0}` is empty: the batch needs at least one row")]
    Empty(&'static str),
    /// A size that the adapter's limits cannot hold even after splitting.
    #[error("resource limit: {0}")]
    Limit(String),
    /// wgpu reported a validation or out-of-memory error.
    #[error("wgpu error: {0}")]
    Wgpu(String),
    /// The device was lost.
    #[error("device lost: {0}")]
    DeviceLost(String),
    /// Mapping a buffer for readback failed.
    #[error("buffer readback failed: {0}")]
    Readback(String),
    /// A loss or option name that does not exist (command line and registry).
    #[error("unknown {kind} `{name}`{hint}")]
    Unknown {
        kind: &'static str,
        name: String,
        hint: String,
    },
    /// Reading or writing a file.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// [`Error::Shape`]: `input` should be `expected` and has shape (or length) `got`.
    pub(crate) fn shape(input: &'static str, expected: String, got: &[usize]) -> Self {
        Self::Shape {
            input,
            expected,
            got: got.to_vec(),
        }
    }
}
