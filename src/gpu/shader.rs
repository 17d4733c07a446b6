//! WGSL modules: each kernel family declares its source, its bindings and its entry points
//! once, in a [`ShaderModule`]; the shared helper files are composed in front of it here.
//!
//! WGSL has no include, so a module is the concatenation of the helpers it needs and its own
//! file. The loss families keep their WGSL beside their Rust (`src/losses/<family>/`); the
//! reduction and copy kernels that every family or the benchmark uses live under `shaders/`.

/// The helpers every module starts with: stable `exp`/`log` pieces, the grid index.
pub(crate) const MATH: &str = include_str!("../../shaders/common/math.wgsl");
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
    entry_points: &["partial_sums", "finish"],
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
    return vec![REDUCE_MODULE, COPY_MODULE];
    #[cfg(not(feature = "cli"))]
    vec![REDUCE_MODULE]
}

/// WGSL declaring `array<f32>` or `array<vec4<f32>>` I/O: `LANES` and the element type's
/// `(type, lanes, widen to vec4, narrow from vec4)` spellings.
pub(crate) fn lanes(vec4: bool) -> (&'static str, u32, &'static str, &'static str) {
    if vec4 {
        ("vec4<f32>", 4, "v", "g")
    } else {
        ("f32", 1, "vec4<f32>(v, 0.0, 0.0, 0.0)", "g.x")
    }
}
