//! The WGSL sources, composed from shared helpers and one file per kernel family.
//!
//! WGSL has no include: each kernel is the concatenation of the helper files it needs and its
//! own file. Adding a kernel family means one file under `shaders/` and one variant here.

use crate::launch::Access;

const MATH: &str = include_str!("../shaders/common/math.wgsl");
const GRAD_SEPARATE: &str = include_str!("../shaders/common/grad_separate.wgsl");
const GRAD_IN_PLACE: &str = include_str!("../shaders/common/grad_in_place.wgsl");
const CROSS_ENTROPY: &str = include_str!("../shaders/cross_entropy.wgsl");
const REDUCE: &str = include_str!("../shaders/reduce.wgsl");
const COPY: &str = include_str!("../shaders/copy.wgsl");

/// One compiled shader module (a kernel family in one of its I/O variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Softmax cross-entropy writing the gradient to its own buffer.
    CrossEntropy,
    /// Softmax cross-entropy writing the gradient over the logits.
    CrossEntropyInPlace,
    /// Deterministic two-level sum.
    Reduce,
    /// vec4 copy, the bandwidth yardstick.
    Copy,
}

use Access::{Read, ReadWrite, Uniform};

/// Bindings of the row kernels up to the logits (see `shaders/cross_entropy.wgsl`).
const ROW_BINDINGS: [Access; 7] = [Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite];

impl Shader {
    /// Every module, for validation.
    pub const ALL: [Shader; 4] = [
        Shader::CrossEntropy,
        Shader::CrossEntropyInPlace,
        Shader::Reduce,
        Shader::Copy,
    ];

    /// The composed WGSL source.
    pub fn source(self) -> String {
        let parts: &[&str] = match self {
            Shader::CrossEntropy => &[MATH, GRAD_SEPARATE, CROSS_ENTROPY],
            Shader::CrossEntropyInPlace => &[MATH, GRAD_IN_PLACE, CROSS_ENTROPY],
            Shader::Reduce => &[MATH, REDUCE],
            Shader::Copy => &[MATH, COPY],
        };
        parts.join("\n")
    }

    /// Binding access, by binding index, of group 0.
    pub(crate) fn bindings(self) -> Vec<Access> {
        match self {
            Shader::CrossEntropy => [&ROW_BINDINGS[..], &[Read, ReadWrite]].concat(),
            Shader::CrossEntropyInPlace => [&ROW_BINDINGS[..], &[ReadWrite]].concat(),
            Shader::Reduce => vec![Uniform, Read, ReadWrite, Read, ReadWrite],
            Shader::Copy => vec![Uniform, Read, ReadWrite],
        }
    }

    /// Entry points of the module.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Shader::CrossEntropy | Shader::CrossEntropyInPlace => &["main", "row_weights"],
            Shader::Reduce => &["partial_sums", "finish"],
            Shader::Copy => &["main"],
        }
    }
}
