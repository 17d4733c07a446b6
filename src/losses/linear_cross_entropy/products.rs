//! The GPU pieces the fused linear cross-entropy's calls share: the matrix-product kernel
//! `gemm.wgsl` (with gradient filtering's `filter.wgsl`), a chunk's logits, the gradients
//! folded chunk by chunk, the inputs and their size checks. Used by the unsharded call
//! (gpu.rs) and by the vocabulary shards (shard_gpu.rs).

use super::{Args, LinearCrossEntropy, CHUNK_ALIGN};
use crate::core::{Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{float_digit, Access, FloatView, ShaderModule, FLOATS, HALF, MATH};
use crate::gpu::tensor::{Binding, DType, Tensor};

/// The product kernel for operands `a` and `b` of the given element types.
pub(super) fn gemm_module(a: DType, b: DType) -> ShaderModule {
    ShaderModule {
        name: "gemm",
        variant: float_digit(a) * 3 + float_digit(b),
        source: |v| {
            let view = |binding, name, dtype| {
                let view = FloatView {
                    name,
                    dtype,
                    access: Access::Read,
                };
                view.declare(binding, false) + &view.functions(false)
            };
            let header =
                view(1, "a", FLOATS[v as usize / 3]) + &view(2, "b", FLOATS[v as usize % 3]);
            [MATH, HALF, &header, include_str!("gemm.wgsl")].join("\n")
        },
        bindings: |_| {
            use Access::*;
            vec![Uniform, Read, Read, Read, ReadWrite, Read]
        },
        entry_points: &["main"],
    }
}

/// The gradient filter's mask kernel (`filter.wgsl`).
pub(super) fn filter_module() -> ShaderModule {
    ShaderModule {
        name: "linear_filter",
        variant: 0,
        source: |_| [MATH, include_str!("filter.wgsl")].join("\n"),
        bindings: |_| {
            use Access::*;
            vec![Uniform, ReadWrite, Read, Read, ReadWrite]
        },
        entry_points: &["main"],
    }
}

/// Mirrors `Params` in `filter.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct FilterParams {
    rows: u32,
    classes: u32,
    row_base: u32,
    eps: f32,
    grad_output: f32,
    _pad: [u32; 3],
}

/// Gradient filtering for a call: the threshold, where the rows' scale comes from, and the
/// chunk's block flags.
pub(super) struct GradFilter<'t> {
    eps: f32,
    /// The mean's denominator (one value), when the reduction is mean.
    denom: Option<Binding>,
    upstream: Upstream<'t, Tensor>,
    flags: Tensor,
}

impl<'t> GradFilter<'t> {
    /// The filter of `opts` (none when off) for chunks of `chunk` rows of `v` classes;
    /// `denom` holds the mean's denominator.
    pub(super) fn new(
        rec: &mut Recorder<'_>,
        opts: &LinearCrossEntropy,
        x: &LinearCrossEntropyInputs<'t>,
        denom: Binding,
        (chunk, v): (usize, usize),
    ) -> Result<Option<Self>> {
        let Some(eps) = opts.grad_filter else {
            return Ok(None);
        };
        let flags = rec.tensor(&[chunk.div_ceil(16) * v.div_ceil(16)], DType::I32)?;
        Ok(Some(Self {
            eps,
            denom: (opts.reduction == Reduction::Mean).then_some(denom),
            upstream: x.upstream,
            flags,
        }))
    }
}

/// Which blocks of a chunk's gradient the products keep: `[rows/16, classes/16]` flags.
struct Mask {
    flags: Binding,
    /// (row blocks, class blocks).
    blocks: (usize, usize),
}

impl GradFilter<'_> {
    /// Records the mask of the first `rows·v` values of `g`, rows from batch row `start`.
    fn record_mask(
        &self,
        rec: &mut Recorder<'_>,
        g: &Tensor,
        (start, rows): (usize, usize),
        v: usize,
    ) -> Result<Mask> {
        let flags = &self.flags;
        let blocks = (rows.div_ceil(16), v.div_ceil(16));
        let unused = rec.unused()?;
        let params = rec.params(&FilterParams {
            rows: rows as u32,
            classes: v as u32,
            row_base: start as u32,
            eps: self.eps,
            grad_output: match self.upstream {
                Upstream::Scalar(g) => g,
                _ => 1.0,
            },
            _pad: [0; 3],
        });
        let key = KernelKey {
            module: filter_module(),
            entry: "main",
            overrides: vec![
                (
                    "UPSTREAM_PER_ROW",
                    matches!(self.upstream, Upstream::PerItem(_)) as u32,
                ),
                ("MEAN", self.denom.is_some() as u32),
            ],
        };
        let count = blocks.0 * blocks.1;
        let bindings = vec![
            params,
            g.window(0, rows * v),
            match self.upstream {
                Upstream::PerItem(u) => u.binding(),
                _ => unused.clone(),
            },
            self.denom.clone().unwrap_or(unused),
            flags.window(0, count),
        ];
        rec.dispatch(key, bindings, count.div_ceil(64) as u32)?;
        Ok(Mask {
            flags: flags.window(0, count),
            blocks,
        })
    }
}

/// Mirrors `Params` in `gemm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    k_base: u32,
    a_base: u32,
    b_base: u32,
    mask_cols: u32,
    mask_rows: u32,
}

/// One operand of a product: a binding, its element type and its (row, column) strides in
/// elements.
struct Operand {
    data: Binding,
    dtype: DType,
    strides: (usize, usize),
    /// Where the operand starts in its binding, in elements.
    base: usize,
}

impl Operand {
    /// A whole tensor, or its elements from 0 in a binding.
    fn whole(data: Binding, dtype: DType, strides: (usize, usize)) -> Self {
        Self {
            data,
            dtype,
            strides,
            base: 0,
        }
    }

    /// Elements `[start, start + count)` of `t`, bound from the last offset at or before
    /// `start` that the adapter accepts (a 16-bit chunk of rows of odd length starts
    /// between two).
    fn rows_of(
        engine: &Engine,
        t: &Tensor,
        (start, count): (usize, usize),
        strides: (usize, usize),
    ) -> Self {
        let align = engine.limits().min_storage_buffer_offset_alignment as usize
            / t.dtype().size() as usize;
        let first = start - start % align.max(1);
        Self {
            data: t.window(first, count + start - first),
            dtype: t.dtype(),
            strides,
            base: start - first,
        }
    }
}

/// What one product writes: `c = a·b` or `c += a·b`, plus a bias per column.
struct Product<'m> {
    /// (m, k, n): a is m×k, b is k×n.
    dims: (usize, usize, usize),
    a: Operand,
    /// `None`: all ones (row sums of a).
    b: Option<Operand>,
    bias: Option<Binding>,
    accumulate: bool,
    /// Skip a's unmarked blocks: a is a chunk's gradient (1) or its transpose (2).
    filter: Option<(&'m Mask, u32)>,
}

/// Depth of one product dispatch on a CPU adapter: its loops then stay under lavapipe's
/// silent stop at 65,535 iterations (a whole 70,000-deep product came out wrong there).
const CPU_ADAPTER_DEPTH: usize = 8192;

fn record_product(rec: &mut Recorder<'_>, p: Product<'_>, c: Binding) -> Result<()> {
    let (m, k, n) = p.dims;
    let unused = rec.unused()?;
    let (b, b_type, (b_rs, b_cs), b_base) = match p.b {
        Some(b) => (b.data, b.dtype, b.strides, b.base),
        None => (unused.clone(), DType::F32, (0, 0), 0),
    };
    let software = rec.engine().adapter_info().device_type == wgpu::DeviceType::Cpu;
    let depth = if software {
        CPU_ADAPTER_DEPTH
    } else {
        k.max(1)
    };
    let groups = m.div_ceil(64) * n.div_ceil(64);
    // Later depth ranges add to what the first wrote (which adds the bias once).
    for (range, k_base) in (0..k.max(1)).step_by(depth).enumerate() {
        let first = range == 0;
        let params = rec.params(&GemmParams {
            m: m as u32,
            n: n as u32,
            k: depth.min(k - k_base) as u32,
            a_rs: p.a.strides.0 as u32,
            a_cs: p.a.strides.1 as u32,
            b_rs: b_rs as u32,
            b_cs: b_cs as u32,
            k_base: k_base as u32,
            a_base: p.a.base as u32,
            b_base: b_base as u32,
            mask_cols: p.filter.map_or(0, |(m, _)| m.blocks.1 as u32),
            mask_rows: p.filter.map_or(0, |(m, _)| m.blocks.0 as u32),
        });
        let key = KernelKey {
            module: gemm_module(p.a.dtype, b_type),
            entry: "main",
            overrides: vec![
                ("ACCUMULATE", (p.accumulate || !first) as u32),
                ("BIAS", (p.bias.is_some() && first) as u32),
                ("B_ONES", ((b_rs, b_cs) == (0, 0)) as u32),
                ("FILTER", p.filter.map_or(0, |(_, f)| f)),
            ],
        };
        let bias = p.bias.clone().filter(|_| first).unwrap_or(unused.clone());
        let mask = p.filter.map_or(unused.clone(), |(m, _)| m.flags.clone());
        let bindings = vec![params, p.a.data.clone(), b.clone(), bias, c.clone(), mask];
        rec.dispatch(key, bindings, groups as u32)?;
    }
    Ok(())
}

/// The device inputs of one fused linear cross-entropy call.
#[derive(Debug, Clone, Copy)]
pub struct LinearCrossEntropyInputs<'a> {
    /// Hidden states, f32 `[N, H]`.
    pub hidden: &'a Tensor,
    /// Classifier weight, f32 `[V, H]` (`nn.Linear`'s layout).
    pub classifier: &'a Tensor,
    /// Optional bias, f32 `[V]`.
    pub bias: Option<&'a Tensor>,
    /// Class indices, i32 `[N]`.
    pub target: &'a Tensor,
    /// Optional per-class weight, f32 `[V]`.
    pub weight: Option<&'a Tensor>,
    /// Upstream gradient (default ones).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> LinearCrossEntropyInputs<'a> {
    /// Hidden states, classifier and targets; no bias or weight, upstream gradient of ones.
    pub fn new(hidden: &'a Tensor, classifier: &'a Tensor, target: &'a Tensor) -> Self {
        Self {
            hidden,
            classifier,
            bias: None,
            target,
            weight: None,
            upstream: Upstream::Ones,
        }
    }

    /// Adds a bias.
    pub fn bias(mut self, bias: &'a Tensor) -> Self {
        self.bias = Some(bias);
        self
    }

    /// Adds per-class weights.
    pub fn weight(mut self, weight: &'a Tensor) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Sets the upstream gradient.
    pub fn upstream(mut self, upstream: Upstream<'a, Tensor>) -> Self {
        self.upstream = upstream;
        self
    }
}

/// `Err` unless `elements` f32 values fit one storage binding.
pub(super) fn fits(engine: &Engine, what: &str, elements: usize) -> Result<()> {
    if elements as u64 * 4 > engine.max_binding_bytes() {
        return Err(Error::Limit(format!(
            "{what} ({elements} values) exceeds the adapter's {}-byte storage binding",
            engine.max_binding_bytes()
        )));
    }
    Ok(())
}

impl LinearCrossEntropy {
    pub(super) fn check_inputs(&self, x: &LinearCrossEntropyInputs<'_>) -> Result<(usize, usize, usize)> {
        let (scalar_upstream, per_item_upstream) = x.upstream.split(Tensor::arg);
        self.check(&Args {
            hidden: x.hidden.arg(),
            classifier: x.classifier.arg(),
            bias: x.bias.map(Tensor::arg),
            target: x.target.arg(),
            weight: x.weight.map(Tensor::arg),
            scalar_upstream,
            per_item_upstream,
        })
    }

    /// Whether the classifier (and its f32 gradient, when computed) fits one binding.
    fn classifier_fits(&self, engine: &Engine, dtype: DType, (h, v): (usize, usize)) -> bool {
        let size = if self.gradient { 4 } else { dtype.size() };
        (v * h) as u64 * size <= engine.max_binding_bytes()
    }

    /// Whether the classifier and the logits of the smallest chunk each fit one binding: the
    /// call over the whole vocabulary at once (else it runs in pieces).
    pub(super) fn fits_whole(&self, engine: &Engine, dtype: DType, (n, h, v): (usize, usize, usize)) -> bool {
        let chunk = self.chunk_rows.unwrap_or(CHUNK_ALIGN).min(n);
        self.classifier_fits(engine, dtype, (h, v))
            && (chunk * v * 4) as u64 <= engine.max_binding_bytes()
    }

    /// Checks that the classifier, a chunk's hidden states and its logits each fit one
    /// storage binding; gives the rows per chunk (by default as many as fit one binding).
    pub(super) fn check_sizes(
        &self,
        engine: &Engine,
        dtype: DType,
        (n, h, v): (usize, usize, usize),
    ) -> Result<usize> {
        let binding = engine.max_binding_bytes() as usize;
        let chunk = self.rows_per_chunk_within(n, v, binding);
        if !self.classifier_fits(engine, dtype, (h, v)) {
            return Err(Error::Limit(format!(
                "a classifier of {v}×{h} exceeds the adapter's {binding}-byte storage binding"
            )));
        }
        fits(engine, "a chunk's hidden states", chunk.min(n) * h)?;
        fits(
            engine,
            "a chunk's logits (set chunk_rows lower)",
            chunk.min(n) * v,
        )?;
        Ok(chunk)
    }
}

/// The loss from the rows' losses: themselves (none), or their sum, divided by the mean's
/// denominator `denom` for mean.
pub(super) fn reduced(
    rec: &mut Recorder<'_>,
    reduction: Reduction,
    loss_rows: &Tensor,
    n: usize,
    denom: &Tensor,
) -> Result<Tensor> {
    if reduction == Reduction::None {
        return Ok(loss_rows.prefix(&[n]));
    }
    let loss = rec.tensor(&[], DType::F32)?;
    let how = SumOf {
        scale: 1.0,
        divisor: (reduction == Reduction::Mean).then_some(denom),
    };
    rec.sum((loss_rows, 0), n, how, &loss)?;
    Ok(loss)
}

/// Records a chunk's logits, `hidden[start..start + rows] · classifierᵀ (+ bias)`, into the
/// first `rows·v` values of `logits`.
pub(super) fn record_logits(
    rec: &mut Recorder<'_>,
    x: &LinearCrossEntropyInputs<'_>,
    bias: Option<&Tensor>,
    (start, rows): (usize, usize),
    (h, v): (usize, usize),
    logits: &Tensor,
) -> Result<()> {
    let engine = rec.engine();
    record_product(
        rec,
        Product {
            dims: (rows, h, v),
            a: Operand::rows_of(engine, x.hidden, (start * h, rows * h), (h, 1)),
            b: Some(Operand::whole(
                x.classifier.binding(),
                x.classifier.dtype(),
                (1, h),
            )),
            bias: bias.map(Tensor::binding),
            accumulate: false,
            filter: None,
        },
        logits.window(0, rows * v),
    )
}

/// The f32 gradients of hidden, classifier and bias (when asked for), filled chunk by chunk.
pub(super) struct Gradients {
    pub hidden_classifier: Option<(Tensor, Tensor)>,
    pub bias: Option<Tensor>,
    /// (H, V).
    pub dims: (usize, usize),
    /// Whether `hidden`'s gradient adds to what it holds (a later piece of the vocabulary).
    pub accumulate_hidden: bool,
}

impl Gradients {
    pub(super) fn new(
        rec: &mut Recorder<'_>,
        want: bool,
        x: &LinearCrossEntropyInputs<'_>,
        (n, h, v): (usize, usize, usize),
    ) -> Result<Self> {
        let hidden_classifier = match want {
            true => Some((
                rec.tensor(&[n, h], DType::F32)?,
                rec.tensor(&[v, h], DType::F32)?,
            )),
            false => None,
        };
        let bias = (want && x.bias.is_some())
            .then(|| rec.tensor(&[v], DType::F32))
            .transpose()?;
        Ok(Self {
            hidden_classifier,
            bias,
            dims: (h, v),
            accumulate_hidden: false,
        })
    }

    /// Folds a chunk's logit gradient `g` (its first `rows·V` values) into the gradients:
    /// `hidden` rows of the chunk = g · classifier; `classifier` (+)= gᵀ · hidden and
    /// `bias` (+)= column sums of g, set by the first chunk and added to after, in order.
    pub(super) fn record_chunk(
        &self,
        rec: &mut Recorder<'_>,
        x: &LinearCrossEntropyInputs<'_>,
        (start, rows): (usize, usize),
        first: bool,
        g: &Tensor,
        filter: Option<&GradFilter<'_>>,
    ) -> Result<()> {
        let Some((gh, gw)) = &self.hidden_classifier else {
            return Ok(());
        };
        let engine = rec.engine();
        let (h, v) = self.dims;
        let mask = match filter {
            Some(f) => Some(f.record_mask(rec, g, (start, rows), v)?),
            None => None,
        };
        let skip = |orientation| mask.as_ref().map(|m| (m, orientation));
        let dtype = x.classifier.dtype();
        let g = |strides| Operand::whole(g.window(0, rows * v), DType::F32, strides);
        record_product(
            rec,
            Product {
                dims: (rows, v, h),
                a: g((v, 1)),
                b: Some(Operand::whole(x.classifier.binding(), dtype, (h, 1))),
                bias: None,
                accumulate: self.accumulate_hidden,
                filter: skip(1),
            },
            gh.window(start * h, rows * h),
        )?;
        record_product(
            rec,
            Product {
                dims: (v, rows, h),
                a: g((1, v)),
                b: Some(Operand::rows_of(
                    engine,
                    x.hidden,
                    (start * h, rows * h),
                    (h, 1),
                )),
                bias: None,
                accumulate: !first,
                filter: skip(2),
            },
            gw.binding(),
        )?;
        if let Some(gb) = &self.bias {
            record_product(
                rec,
                Product {
                    dims: (v, rows, 1),
                    a: g((1, v)),
                    b: None,
                    bias: None,
                    accumulate: !first,
                    filter: skip(2),
                },
                gb.binding(),
            )?;
        }
        Ok(())
    }

    /// The gradients by input name: hidden, classifier, then bias.
    pub(super) fn named(self) -> Vec<(&'static str, Tensor)> {
        let mut grads = Vec::new();
        if let Some((gh, gw)) = self.hidden_classifier {
            grads.push(("hidden", gh));
            grads.push(("classifier", gw));
        }
        grads.extend(self.bias.map(|gb| ("bias", gb)));
        grads
    }
}
