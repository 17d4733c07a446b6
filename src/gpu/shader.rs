//! WGSL modules: each kernel family declares its source, its bindings and its entry points
//! once, in a [`ShaderModule`]; the shared helper files are composed in front of it here.
//!
//! WGSL has no include, so a module is the concatenation of the helpers it needs and its own
//! file. The loss families keep their WGSL beside their Rust (`src/losses/<family>/`); the
//! reduction and copy kernels that every family or the benchmark uses live under `shaders/`.

use crate::core::DType;

/// The helpers every module starts with: stable `exp`/`log` pieces, the grid index.
pub(crate) const MATH: &str = include_str!("../../shaders/common/math.wgsl");
/// Exact widening and round-to-nearest-even narrowing of bf16 and f16 packed in u32 words.
pub(crate) const HALF: &str = include_str!("../../shaders/common/half.wgsl");
/// A workgroup-wide tree sum in a fixed order.
pub(crate) const WORKGROUP_SUM: &str = include_str!("../../shaders/common/workgroup_sum.wgsl");
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
#[cfg(feature = "cli")]
const COPY: &str = include_str!("../../shaders/copy.wgsl");

/// How a kernel uses one binding of group 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// One WGSL module: a kernel family in one of its I/O variants.
///
/// Identity (for the pipeline cache) is `(name, variant)`; `source` and `bindings` are
/// functions of the variant, declared once beside the family's WGSL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShaderModule {
    /// Unique among modules: the family's name.
    pub name: &'static str,
    /// Which I/O variant of the family (0 where there is one).
    pub variant: u32,
    /// The composed WGSL of a variant.
    pub source: fn(u32) -> String,
    /// Access of each binding of group 0, by binding index, of a variant.
    pub bindings: fn(u32) -> Vec<Access>,
    /// The module's entry points.
    pub entry_points: &'static [&'static str],
}

impl ShaderModule {
    /// The composed WGSL.
    pub fn wgsl(&self) -> String {
        (self.source)(self.variant)
    }

    /// Binding access by binding index.
    pub fn binding_access(&self) -> Vec<Access> {
        (self.bindings)(self.variant)
    }
}

impl PartialEq for ShaderModule {
    fn eq(&self, other: &Self) -> bool {
        (self.name, self.variant) == (other.name, other.variant)
    }
}

impl Eq for ShaderModule {}

impl std::hash::Hash for ShaderModule {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.name, self.variant).hash(state);
    }
}

/// The deterministic two-level sum (`shaders/reduce.wgsl`).
pub(crate) const REDUCE_MODULE: ShaderModule = ShaderModule {
    name: "reduce",
    variant: 0,
    source: |_| [MATH, WORKGROUP_SUM, REDUCE].join("\n"),
    bindings: |_| {
        use Access::*;
        vec![Uniform, Read, ReadWrite, Read, ReadWrite]
    },
    entry_points: &["partial_sums", "finish", "row_sums"],
};

/// The element-type conversions at the edges of f32 kernels (`shaders/convert.wgsl`,
/// launched by `gpu::convert`).
pub(crate) const CONVERT_MODULE: ShaderModule = ShaderModule {
    name: "convert",
    variant: 0,
    source: |_| [MATH, HALF, include_str!("../../shaders/convert.wgsl")].join("\n"),
    bindings: |_| vec![Access::Uniform, Access::Read, Access::ReadWrite],
    entry_points: &["widen", "narrow"],
};

/// The vec4 copy that sets the adapter's bandwidth yardstick (`shaders/copy.wgsl`), for the
/// benchmark.
#[cfg(feature = "cli")]
pub(crate) const COPY_MODULE: ShaderModule = ShaderModule {
    name: "copy",
    variant: 0,
    source: |_| [MATH, COPY].join("\n"),
    bindings: |_| vec![Access::Uniform, Access::Read, Access::ReadWrite],
    entry_points: &["main"],
};

/// The GPU core's own modules (the loss families list theirs in `crate::losses`).
#[cfg(test)]
pub(crate) fn core_modules() -> Vec<ShaderModule> {
    #[cfg(feature = "cli")]
    return vec![REDUCE_MODULE, CONVERT_MODULE, COPY_MODULE];
    #[cfg(not(feature = "cli"))]
    vec![REDUCE_MODULE, CONVERT_MODULE]
}

/// The float element types a kernel variant is specialized for, in the order the variant
/// numbers count them (`float_digit`).
pub(crate) const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The position of the float type `d` in [`FLOATS`]: one digit of a variant number.
pub(crate) fn float_digit(d: DType) -> u32 {
    FLOATS.iter().position(|&f| f == d).expect("a float type") as u32
}

/// One float array of a kernel as its WGSL sees it, whatever its element type: the
/// declaration and the functions that read (`load_NAME(i)`, `load4_NAME(j)`) and write
/// (`store_NAME(i, v)`, `store4_NAME(j, v)`) it as f32, element `i` or 4-element chunk `j`.
///
/// f32 arrays are `array<f32>` / `array<vec4<f32>>`. 16-bit arrays are pairs packed in u32
/// words (`half.wgsl`); a chunk of four is one `vec2<u32>`. A single 16-bit element shares
/// its word with a neighbour another invocation may be writing, so a scalar view that is
/// written is `array<atomic<u32>>` and each store replaces its own half with an atomic
/// AND then OR, which leave the other half as it is in any interleaving.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub access: Access,
}

/// The variants of a module over (input type, gradient type) that calls reach, the gradient
/// in the input's type or f32: a family's `modules()`, for validation.
#[cfg(test)]
pub(crate) fn input_grad_variants(module: fn(DType, DType) -> ShaderModule) -> Vec<ShaderModule> {
    FLOATS
        .iter()
        .flat_map(|&t| [module(t, t), module(t, DType::F32)])
        .collect()
}

/// The variant of a module whose I/O is [`input_and_grad`]'s: one per (input, gradient) type
/// pair, decoded by [`input_grad_source`].
pub(crate) fn input_grad_variant(input: DType, grad: DType) -> u32 {
    float_digit(input) * 3 + float_digit(grad)
}

/// The WGSL of `variant` (from [`input_grad_variant`]) of a module whose kernels are `kernel`:
/// the shared numerics, the I/O header for its types, then the kernels.
pub(crate) fn input_grad_source(variant: u32, kernel: &str) -> String {
    let (input, grad) = (FLOATS[variant as usize / 3], FLOATS[variant as usize % 3]);
    [MATH, HALF, &input_and_grad(input, grad), kernel].join("\n")
}

/// WGSL declaring a row kernel's `input` (binding 7, read) and its `grad` (binding 8) by
/// element, with their `load_input` / `store_grad` functions: the I/O of the families whose
/// kernels read one float array and write its gradient (`nll`, `class_rows`, `ctc`,
/// `ranking`, `overlap`).
pub(crate) fn input_and_grad(input: DType, grad: DType) -> String {
    [
        (7, "input", input, Access::Read),
        (8, "grad", grad, Access::ReadWrite),
    ]
    .iter()
    .map(|&(binding, name, dtype, access)| {
        let view = FloatView {
            name,
            dtype,
            access,
        };
        view.declare(binding, false) + &view.functions(false)
    })
    .collect()
}

impl FloatView<'_> {
    fn half(&self) -> Option<&'static str> {
        match self.dtype {
            DType::F16 => Some("f16"),
            DType::BF16 => Some("bf16"),
            _ => None,
        }
    }

    fn writable(&self) -> bool {
        self.access == Access::ReadWrite
    }

    /// The declaration at `binding` of group 0, as chunks of four or as elements.
    pub fn declare(&self, binding: u32, chunks: bool) -> String {
        let element = match (self.half(), chunks) {
            (None, true) => "vec4<f32>",
            (None, false) => "f32",
            (Some(_), true) => "vec2<u32>",
            (Some(_), false) if self.writable() => "atomic<u32>",
            (Some(_), false) => "u32",
        };
        let access = if self.writable() {
            "read_write"
        } else {
            "read"
        };
        format!(
            "@group(0) @binding({binding}) var<storage, {access}> {}: array<{element}>;\n",
            self.name
        )
    }

    /// The access functions of the view declared with the same `chunks`.
    pub fn functions(&self, chunks: bool) -> String {
        let n = self.name;
        let mut f = match (self.half(), chunks) {
            (None, true) => format!("fn load4_{n}(j: u32) -> vec4<f32> {{ return {n}[j]; }}\n"),
            (None, false) => format!("fn load_{n}(i: u32) -> f32 {{ return {n}[i]; }}\n"),
            (Some(d), true) => format!(
                "fn load4_{n}(j: u32) -> vec4<f32> {{\n\
                 \x20   let w = {n}[j];\n\
                 \x20   return vec4<f32>({d}_to_f32(w.x & 0xffffu), {d}_to_f32(w.x >> 16u), \
                 {d}_to_f32(w.y & 0xffffu), {d}_to_f32(w.y >> 16u));\n\
                 }}\n"
            ),
            (Some(d), false) => {
                let word = if self.writable() {
                    format!("atomicLoad(&{n}[i >> 1u])")
                } else {
                    format!("{n}[i >> 1u]")
                };
                format!(
                    "fn load_{n}(i: u32) -> f32 {{ return {d}_to_f32(({word} >> ((i & 1u) * 16u)) & 0xffffu); }}\n"
                )
            }
        };
        if !self.writable() {
            return f;
        }
        f += &match (self.half(), chunks) {
            (None, true) => format!("fn store4_{n}(j: u32, g: vec4<f32>) {{ {n}[j] = g; }}\n"),
            (None, false) => format!("fn store_{n}(i: u32, g: f32) {{ {n}[i] = g; }}\n"),
            (Some(d), true) => format!(
                "fn store4_{n}(j: u32, g: vec4<f32>) {{\n\
                 \x20   {n}[j] = vec2<u32>(f32_to_{d}(g.x) | (f32_to_{d}(g.y) << 16u), \
                 f32_to_{d}(g.z) | (f32_to_{d}(g.w) << 16u));\n\
                 }}\n"
            ),
            (Some(d), false) => format!(
                "fn store_{n}(i: u32, g: f32) {{\n\
                 \x20   let shift = (i & 1u) * 16u;\n\
                 \x20   atomicAnd(&{n}[i >> 1u], ~(0xffffu << shift));\n\
                 \x20   atomicOr(&{n}[i >> 1u], f32_to_{d}(g) << shift);\n\
                 }}\n"
            ),
        };
        f
    }
}
