//! Fused linear cross-entropy on the GPU: the matrix-product kernel `gemm.wgsl` and the
//! cross-entropy row kernel, recorded chunk by chunk (see the family's `mod.rs`).

use super::{Args, LinearCrossEntropy, CHUNK_ALIGN};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::LossOutput;
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{float_digit, Access, FloatView, ShaderModule, FLOATS, HALF, MATH};
use crate::gpu::tensor::{Binding, DType, Tensor};
use crate::losses::cross_entropy::gpu::{Batch, CrossEntropyInputs, Target};
use crate::CrossEntropy;

/// The product kernel for operands `a` and `b` of the given element types.
fn gemm_module(a: DType, b: DType) -> ShaderModule {
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
            vec![Uniform, Read, Read, Read, ReadWrite]
        },
        entry_points: &["main"],
    }
}

/// The family's WGSL modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    FLOATS
        .iter()
        .flat_map(|&a| FLOATS.map(|b| gemm_module(a, b)))
        .chain([super::shard_gpu::module()])
        .collect()
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
    _pad: [u32; 2],
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
struct Product {
    /// (m, k, n): a is m×k, b is k×n.
    dims: (usize, usize, usize),
    a: Operand,
    /// `None`: all ones (row sums of a).
    b: Option<Operand>,
    bias: Option<Binding>,
    accumulate: bool,
}

/// Depth of one product dispatch on a CPU adapter: its loops then stay under lavapipe's
/// silent stop at 65,535 iterations (a whole 70,000-deep product came out wrong there).
const CPU_ADAPTER_DEPTH: usize = 8192;

fn record_product(rec: &mut Recorder<'_>, p: Product, c: Binding) -> Result<()> {
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
            _pad: [0; 2],
        });
        let key = KernelKey {
            module: gemm_module(p.a.dtype, b_type),
            entry: "main",
            overrides: vec![
                ("ACCUMULATE", (p.accumulate || !first) as u32),
                ("BIAS", (p.bias.is_some() && first) as u32),
                ("B_ONES", ((b_rs, b_cs) == (0, 0)) as u32),
            ],
        };
        let bias = p.bias.clone().filter(|_| first).unwrap_or(unused.clone());
        let bindings = vec![params, p.a.data.clone(), b.clone(), bias, c.clone()];
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

    /// Records the loss and gradients into `encoder`: a one-off [`Plan`](crate::Plan).
    ///
    /// # Errors
    /// Invalid options or shapes, sizes past the adapter's limits (a classifier row, 64 rows
    /// of hidden states and 64 rows of a piece's logits must each fit one storage binding; a
    /// larger classifier runs in pieces), wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LinearCrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`LinearCrossEntropy::record`], plus [`Error::Value`] for a class index outside
    /// `[0, V)` that is not `ignore_index`.
    pub fn run(
        &self,
        engine: &Engine,
        inputs: &LinearCrossEntropyInputs<'_>,
    ) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }

    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        x: &LinearCrossEntropyInputs<'_>,
        (n, h, v): (usize, usize, usize),
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let dtype = x.hidden.dtype();
        if !self.fits_whole(engine, dtype, (n, h, v)) {
            return self.record_in_pieces(rec, x, (n, h, v));
        }
        let chunk = self.check_sizes(engine, dtype, (n, h, v))?;

        // Every target checked, and the mean's denominator, over the whole batch.
        let whole = CrossEntropyInputs {
            logits: x.hidden, // not read by a denominator-only call
            target: Target::Classes(x.target),
            weight: x.weight,
            upstream: Upstream::Ones,
            grad_out: None,
        };
        let checked = CrossEntropy::new()
            .ignore_index(self.ignore_index)
            .record_checked(
                rec,
                &whole,
                n,
                v,
                Batch {
                    denominator_only: true,
                    ..Batch::default()
                },
            )?;
        let denom = checked.loss;
        let mean = self.reduction == Reduction::Mean;

        let loss_rows = rec.tensor(&[n], DType::F32)?;
        let stats = match self.row_stats {
            true => Some((rec.tensor(&[n], DType::F32)?, rec.tensor(&[n], DType::F32)?)),
            false => None,
        };
        let logits = rec.tensor(&[chunk.min(n), v], DType::F32)?;
        let grads = Gradients::new(rec, self.gradient, x, (n, h, v))?;
        // A 16-bit bias is widened once (it is added as f32 in the product's epilogue).
        let bias = x.bias.map(|b| rec.widened(b)).transpose()?;
        let ce = self.row_kernel().in_place(true);
        for (index, start) in (0..n).step_by(chunk).enumerate() {
            let rows = chunk.min(n - start);
            record_logits(rec, x, bias.as_ref(), (start, rows), (h, v), &logits)?;
            // Their gradient, in place, scaled by the whole batch's denominator.
            let chunk_logits = logits.prefix(&[rows, v]);
            let target = x.target.rows(engine, start, rows)?;
            let upstream_rows;
            let upstream = match x.upstream {
                Upstream::PerItem(u) => {
                    upstream_rows = u.rows(engine, start, rows)?;
                    Upstream::PerItem(&upstream_rows)
                }
                other => other,
            };
            let inputs = CrossEntropyInputs {
                logits: &chunk_logits,
                target: Target::Classes(&target),
                weight: x.weight,
                upstream,
                grad_out: None,
            };
            let row_stats = match &stats {
                Some((lse, correct)) => Some((
                    lse.rows(engine, start, rows)?,
                    correct.rows(engine, start, rows)?,
                )),
                None => None,
            };
            let batch = Batch {
                denominator: mean.then_some(&denom),
                loss_rows: Some(loss_rows.rows(engine, start, rows)?),
                denominator_only: false,
                row_stats,
            };
            ce.record_checked(rec, &inputs, rows, v, batch)?;
            grads.record_chunk(rec, x, (start, rows), index == 0, &logits)?;
        }
        let loss = reduced(rec, self.reduction, &loss_rows, n, &denom)?;
        let out = LossOutput {
            loss,
            grads: grads.named(),
            status: checked.status,
            rows: stats.map_or(Vec::new(), |(lse, correct)| {
                vec![("lse", lse), ("correct", correct)]
            }),
        };
        rec.gradients_as(out, self.grad_dtype.unwrap_or(dtype))
    }

    /// Whether the classifier (and its f32 gradient, when computed) fits one binding.
    fn classifier_fits(&self, engine: &Engine, dtype: DType, (h, v): (usize, usize)) -> bool {
        let size = if self.gradient { 4 } else { dtype.size() };
        (v * h) as u64 * size <= engine.max_binding_bytes()
    }

    /// Whether the classifier and the logits of the smallest chunk each fit one binding: the
    /// call over the whole vocabulary at once (else it runs in pieces).
    fn fits_whole(&self, engine: &Engine, dtype: DType, (n, h, v): (usize, usize, usize)) -> bool {
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
    ) -> Result<()> {
        let Some((gh, gw)) = &self.hidden_classifier else {
            return Ok(());
        };
        let engine = rec.engine();
        let (h, v) = self.dims;
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

impl GpuLoss for LinearCrossEntropy {
    type Inputs<'a> = LinearCrossEntropyInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &LinearCrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        let dims = self.check_inputs(inputs)?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, dims))
    }
}
