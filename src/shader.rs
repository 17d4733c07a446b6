//! The WGSL sources, composed from shared helpers and one file per kernel family.
//!
//! WGSL has no include: each kernel is the concatenation of the helper files it needs and its
//! own file. Adding a kernel family means one file under `shaders/` and one variant here.

use crate::launch::Access;

const MATH: &str = include_str!("../shaders/common/math.wgsl");
const CROSS_ENTROPY: &str = include_str!("../shaders/cross_entropy.wgsl");
const WORKGROUP_SUM: &str = include_str!("../shaders/common/workgroup_sum.wgsl");
const ELEMENTWISE: &str = include_str!("../shaders/elementwise.wgsl");
const REDUCE: &str = include_str!("../shaders/reduce.wgsl");
const COPY: &str = include_str!("../shaders/copy.wgsl");
const PAIR_ROWS: &str = include_str!("../shaders/pair_rows.wgsl");
const PAIRWISE: &str = include_str!("../shaders/pairwise.wgsl");

/// One compiled shader module (a kernel family in one of its I/O variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Softmax cross-entropy.
    CrossEntropy(RowIo),
    /// Elementwise losses.
    Elementwise(ElementIo),
    /// Contrastive and triplet losses over explicit rows.
    PairRows,
    /// Tiled all-pairs kernels: InfoNCE losses and mined triplets.
    Pairwise,
    /// Deterministic two-level sum.
    Reduce,
    /// vec4 copy, the bandwidth yardstick.
    Copy,
}

use Access::{Read, ReadWrite, Uniform};

/// How a row kernel reads logits and writes their gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowIo {
    /// The gradient overwrites the logits (else it goes to its own buffer).
    pub in_place: bool,
    /// Rows are read and written as `vec4<f32>` (needs C to be a multiple of 4).
    pub vec4: bool,
}

impl RowIo {
    /// The four variants.
    pub const ALL: [RowIo; 4] = [
        RowIo {
            in_place: false,
            vec4: false,
        },
        RowIo {
            in_place: false,
            vec4: true,
        },
        RowIo {
            in_place: true,
            vec4: false,
        },
        RowIo {
            in_place: true,
            vec4: true,
        },
    ];

    /// WGSL declaring the logits (binding 7) and gradient (binding 8 unless in place), and
    /// `load_chunk` / `store_chunk` over LANES-element chunks.
    fn header(self) -> String {
        let (ty, lanes, get, put) = if self.vec4 {
            ("vec4<f32>", 4, "v", "g")
        } else {
            ("f32", 1, "vec4<f32>(v, 0.0, 0.0, 0.0)", "g.x")
        };
        let (access, dst, grad_decl) = if self.in_place {
            ("read_write", "logits", String::new())
        } else {
            (
                "read",
                "grad",
                format!("@group(0) @binding(8) var<storage, read_write> grad: array<{ty}>;\n"),
            )
        };
        format!(
            "const LANES: u32 = {lanes}u;\n\
             @group(0) @binding(7) var<storage, {access}> logits: array<{ty}>;\n\
             {grad_decl}\
             fn load_chunk(j: u32) -> vec4<f32> {{ let v = logits[j]; return {get}; }}\n\
             fn store_chunk(j: u32, g: vec4<f32>) {{ {dst}[j] = {put}; }}\n"
        )
    }
}

/// How the elementwise kernel reads its two main inputs and writes their gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElementIo {
    /// As `vec4<f32>` (needs the element count to be a multiple of 4).
    pub vec4: bool,
}

impl ElementIo {
    /// WGSL declaring bindings 1, 2, 6 and 7 with LANES-element accessors.
    fn header(self) -> String {
        let (ty, lanes, get, put) = if self.vec4 {
            ("vec4<f32>", 4, "v", "g")
        } else {
            ("f32", 1, "vec4<f32>(v, 0.0, 0.0, 0.0)", "g.x")
        };
        format!(
            "const LANES: u32 = {lanes}u;\n\
             @group(0) @binding(1) var<storage, read> in_a: array<{ty}>;\n\
             @group(0) @binding(2) var<storage, read> in_b: array<{ty}>;\n\
             @group(0) @binding(6) var<storage, read_write> grad_a: array<{ty}>;\n\
             @group(0) @binding(7) var<storage, read_write> grad_b: array<{ty}>;\n\
             fn load_a(j: u32) -> vec4<f32> {{ let v = in_a[j]; return {get}; }}\n\
             fn load_b(j: u32) -> vec4<f32> {{ let v = in_b[j]; return {get}; }}\n\
             fn store_ga(j: u32, g: vec4<f32>) {{ grad_a[j] = {put}; }}\n\
             fn store_gb(j: u32, g: vec4<f32>) {{ grad_b[j] = {put}; }}\n"
        )
    }
}

/// Bindings of the row kernels up to the logits (see `shaders/cross_entropy.wgsl`).
const ROW_BINDINGS: [Access; 7] = [Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite];

impl Shader {
    /// Every module in every variant, for validation.
    pub fn all() -> Vec<Shader> {
        let mut all: Vec<Shader> = RowIo::ALL.into_iter().map(Shader::CrossEntropy).collect();
        all.extend([
            Shader::Elementwise(ElementIo { vec4: false }),
            Shader::Elementwise(ElementIo { vec4: true }),
            Shader::PairRows,
            Shader::Pairwise,
            Shader::Reduce,
            Shader::Copy,
        ]);
        all
    }

    /// The composed WGSL source.
    pub fn source(self) -> String {
        match self {
            Shader::CrossEntropy(io) => [MATH, &io.header(), CROSS_ENTROPY].join("\n"),
            Shader::Elementwise(io) => [MATH, WORKGROUP_SUM, &io.header(), ELEMENTWISE].join("\n"),
            Shader::PairRows => [MATH, PAIR_ROWS].join("\n"),
            Shader::Pairwise => [MATH, PAIRWISE].join("\n"),
            Shader::Reduce => [MATH, WORKGROUP_SUM, REDUCE].join("\n"),
            Shader::Copy => [MATH, COPY].join("\n"),
        }
    }

    /// Binding access, by binding index, of group 0.
    pub(crate) fn bindings(self) -> Vec<Access> {
        match self {
            Shader::CrossEntropy(RowIo {
                in_place: false, ..
            }) => [&ROW_BINDINGS[..], &[Read, ReadWrite]].concat(),
            Shader::CrossEntropy(RowIo { in_place: true, .. }) => {
                [&ROW_BINDINGS[..], &[ReadWrite]].concat()
            }
            Shader::Elementwise(_) => [
                &[Uniform, Read, Read, Read, Read, Read][..],
                &[ReadWrite, ReadWrite, ReadWrite, ReadWrite],
            ]
            .concat(),
            Shader::PairRows => [&[Uniform][..], &[Read; 5], &[ReadWrite; 4]].concat(),
            Shader::Pairwise => [&[Uniform][..], &[Read; 10], &[ReadWrite; 3]].concat(),
            Shader::Reduce => vec![Uniform, Read, ReadWrite, Read, ReadWrite],
            Shader::Copy => vec![Uniform, Read, ReadWrite],
        }
    }

    /// Entry points of the module.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Shader::CrossEntropy(_) => &["main", "row_weights"],
            Shader::Elementwise(_) => &["main"],
            Shader::PairRows => &["main"],
            Shader::Pairwise => &[
                "normalize",
                "finish",
                "nce_forward",
                "nce_backward",
                "distances",
                "mine",
                "mined_backward",
            ],
            Shader::Reduce => &["partial_sums", "finish"],
            Shader::Copy => &["main"],
        }
    }
}
