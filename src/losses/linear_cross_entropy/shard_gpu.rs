//! Vocabulary shards on the GPU (`shard.wgsl`; the protocol is shard.rs's), and the unsharded
//! call over a classifier larger than one storage binding, run as shards of itself.

use super::products::{fits, reduced, record_logits, GradFilter, Gradients, LinearCrossEntropyInputs};
use super::shard::{check_records, ShardGradients, ShardStatistics, VocabShard, SHARD_RECORD};
use super::{LinearCrossEntropy, CHUNK_ALIGN};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::{LossOutput, Status};
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{Access, ShaderModule, MATH};
use crate::gpu::tensor::{Binding, DType, Tensor};

/// The shards' kernels.
pub(super) fn module() -> ShaderModule {
    ShaderModule {
        name: "linear_shard",
        variant: 0,
        source: |_| [MATH, include_str!("shard.wgsl")].join("\n"),
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, ReadWrite, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite,
            ]
        },
        entry_points: &["statistics", "combine", "gradient"],
    }
}

/// Mirrors `Params` in `shard.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
    class_base: u32,
    vocab: u32,
    row_base: u32,
    shards: u32,
    plane: u32,
    ignore_index: i32,
    smoothing: f32,
    z_loss: f32,
    softcap: f32,
    grad_output: f32,
    record_rows: u32,
    _pad: [u32; 3],
}

impl Params {
    fn new(opts: &LinearCrossEntropy, shard: VocabShard, classes: usize) -> Self {
        Self {
            classes: classes as u32,
            class_base: shard.start as u32,
            vocab: shard.vocab as u32,
            ignore_index: opts.ignore_index,
            smoothing: opts.label_smoothing,
            z_loss: opts.z_loss,
            softcap: opts.softcap.unwrap_or(0.0),
            ..Self::default()
        }
    }
}

/// Planes of the per-row values `combine` writes (`shard.wgsl`).
const PLANES: usize = 10;
const PLANE_LOSS: usize = 0;
const PLANE_KEPT: usize = 1;
const PLANE_LSE: usize = 2;
const PLANE_CORRECT: usize = 3;
const PLANE_DENOM: usize = 9;

/// The device inputs of [`ShardGradients`]: this shard's inputs (its classifier rows, bias
/// and weight slices; the vocabulary's targets) and every shard's statistics.
#[derive(Debug, Clone, Copy)]
pub struct ShardGradientInputs<'a> {
    /// As for the unsharded call, with the shard's classifier `[V_s, H]`, bias `[V_s]` and
    /// weight `[V_s]`.
    pub linear: LinearCrossEntropyInputs<'a>,
    /// The records of every shard in vocabulary order, f32 `[K, N, SHARD_RECORD]`.
    pub stats: &'a Tensor,
}

/// The key of a `shard.wgsl` entry point for these options and inputs.
fn key(
    engine: &Engine,
    entry: &'static str,
    opts: &LinearCrossEntropy,
    x: &LinearCrossEntropyInputs<'_>,
) -> KernelKey {
    KernelKey {
        module: module(),
        entry,
        overrides: vec![
            ("WG_SIZE", engine.workgroup_size()),
            ("CAPPED", opts.softcap.is_some() as u32),
            ("WEIGHTED", x.weight.is_some() as u32),
            (
                "UPSTREAM_PER_ROW",
                matches!(x.upstream, Upstream::PerItem(_)) as u32,
            ),
            ("MEAN", (opts.reduction == Reduction::Mean) as u32),
        ],
    }
}

/// Records the statistics of `x`'s rows over the shard's `v` classes into `stats` (N
/// records).
fn record_statistics(
    rec: &mut Recorder<'_>,
    opts: &LinearCrossEntropy,
    shard: VocabShard,
    x: &LinearCrossEntropyInputs<'_>,
    (n, h, v): (usize, usize, usize),
    stats: Binding,
) -> Result<()> {
    let engine = rec.engine();
    let opts = opts.clone().gradient(false);
    let chunk = opts.check_sizes(engine, x.hidden.dtype(), (n, h, v))?;
    let logits = rec.tensor(&[chunk.min(n), v], DType::F32)?;
    let bias = x.bias.map(|b| rec.widened(b)).transpose()?;
    let unused = rec.unused()?;
    let key = key(engine, "statistics", &opts, x);
    for start in (0..n).step_by(chunk) {
        let rows = chunk.min(n - start);
        record_logits(rec, x, bias.as_ref(), (start, rows), (h, v), &logits)?;
        let params = rec.params(&Params {
            rows: rows as u32,
            row_base: start as u32,
            ..Params::new(&opts, shard, v)
        });
        let bindings = vec![
            params,
            logits.window(0, rows * v),
            x.target.binding(),
            x.weight.map_or(unused.clone(), Tensor::binding),
            unused.clone(),
            stats.clone(),
            unused.clone(),
            unused.clone(),
        ];
        rec.dispatch(key.clone(), bindings, rows as u32)?;
    }
    Ok(())
}

/// Every row's loss and gradient coefficients, merged from the shards' records.
struct Merged {
    /// `PLANES` planes of `plane` values (see `shard.wgsl`).
    per_row: Tensor,
    plane: usize,
    loss: Tensor,
    status: Tensor,
}

impl Merged {
    /// Plane `index` as a tensor of `shape`.
    fn view(&self, engine: &Engine, index: usize, shape: &[usize]) -> Result<Tensor> {
        let offset = self.per_row.offset() + (index * self.plane * 4) as u64;
        Tensor::view(
            engine,
            self.per_row.buffer().clone(),
            offset,
            shape,
            DType::F32,
        )
    }
}

/// Records the merge of `shards` shards' records (`stats`, `record_rows` records apart) of
/// `n` rows over a vocabulary of `vocab`, and the loss.
fn record_merge(
    rec: &mut Recorder<'_>,
    opts: &LinearCrossEntropy,
    vocab: usize,
    x: &LinearCrossEntropyInputs<'_>,
    n: usize,
    (stats, shards, record_rows): (Binding, usize, usize),
) -> Result<Merged> {
    let engine = rec.engine();
    // Planes start at multiples of 64 values: offsets every adapter binds.
    let plane = n.next_multiple_of(64);
    fits(engine, "the rows' merged statistics", PLANES * plane)?;
    let per_row = rec.tensor(&[PLANES * plane], DType::F32)?;
    let status = rec.zeros(&[1], DType::I32)?;
    let unused = rec.unused()?;
    let params = rec.params(&Params {
        rows: n as u32,
        shards: shards as u32,
        plane: plane as u32,
        record_rows: record_rows as u32,
        ..Params::new(opts, VocabShard::new(0, vocab), 0)
    });
    let bindings = vec![
        params,
        unused.clone(),
        x.target.binding(),
        unused.clone(),
        unused,
        stats,
        per_row.binding(),
        status.binding(),
    ];
    let groups = n.div_ceil(engine.workgroup_size() as usize) as u32;
    rec.dispatch(key(engine, "combine", opts, x), bindings, groups)?;
    let mut merged = Merged {
        loss: per_row.clone(),
        per_row,
        plane,
        status,
    };
    let denom = merged.view(engine, PLANE_DENOM, &[1])?;
    if opts.reduction == Reduction::Mean {
        let kept = (&merged.per_row, PLANE_KEPT * plane);
        rec.sum(kept, n, SumOf::PLAIN, &denom)?;
    }
    let loss_rows = merged.view(engine, PLANE_LOSS, &[n])?;
    merged.loss = reduced(rec, opts.reduction, &loss_rows, n, &denom)?;
    Ok(merged)
}

/// Records the shard's logits again, chunk by chunk, turned into their gradient with the
/// merged coefficients and folded into `grads`.
fn record_gradients(
    rec: &mut Recorder<'_>,
    opts: &LinearCrossEntropy,
    shard: VocabShard,
    x: &LinearCrossEntropyInputs<'_>,
    (n, h, v): (usize, usize, usize),
    merged: &Merged,
    grads: &Gradients,
) -> Result<()> {
    let engine = rec.engine();
    let chunk = opts.check_sizes(engine, x.hidden.dtype(), (n, h, v))?;
    let logits = rec.tensor(&[chunk.min(n), v], DType::F32)?;
    let bias = x.bias.map(|b| rec.widened(b)).transpose()?;
    let unused = rec.unused()?;
    let key = key(engine, "gradient", opts, x);
    let wg = engine.workgroup_size() as usize;
    let denom = merged.view(engine, PLANE_DENOM, &[1])?.binding();
    let filter = GradFilter::new(rec, opts, x, denom, (chunk.min(n), v))?;
    for (index, start) in (0..n).step_by(chunk).enumerate() {
        let rows = chunk.min(n - start);
        record_logits(rec, x, bias.as_ref(), (start, rows), (h, v), &logits)?;
        let params = rec.params(&Params {
            rows: rows as u32,
            row_base: start as u32,
            plane: merged.plane as u32,
            grad_output: match x.upstream {
                Upstream::Scalar(g) => g,
                _ => 1.0,
            },
            ..Params::new(opts, shard, v)
        });
        let bindings = vec![
            params,
            logits.window(0, rows * v),
            x.target.binding(),
            x.weight.map_or(unused.clone(), Tensor::binding),
            match x.upstream {
                Upstream::PerItem(u) => u.binding(),
                _ => unused.clone(),
            },
            unused.clone(),
            merged.per_row.binding(),
            unused.clone(),
        ];
        rec.dispatch(key.clone(), bindings, (rows * v).div_ceil(wg) as u32)?;
        let filter = filter.as_ref();
        grads.record_chunk(rec, x, (start, rows), index == 0, &logits, filter)?;
    }
    Ok(())
}

/// The call's outputs: the merged loss, `grads` in the asked type, the row statistics when
/// asked for, and the class check.
fn outputs(
    rec: &mut Recorder<'_>,
    opts: &LinearCrossEntropy,
    x: &LinearCrossEntropyInputs<'_>,
    merged: Merged,
    grads: Gradients,
) -> Result<LossOutput> {
    let engine = rec.engine();
    let n = x.target.len();
    let out = LossOutput {
        rows: match opts.row_stats {
            true => vec![
                ("lse", merged.view(engine, PLANE_LSE, &[n])?),
                ("correct", merged.view(engine, PLANE_CORRECT, &[n])?),
            ],
            false => Vec::new(),
        },
        loss: merged.loss,
        grads: grads.named(),
        status: Some(Status {
            flag: merged.status,
            input: "target",
            values: x.target.clone(),
            row_len: 1,
            row_starts: None,
            reason: "outside [0, vocab), or not held by exactly one shard's statistics".into(),
        }),
    };
    rec.gradients_as(out, opts.grad_dtype.unwrap_or(x.hidden.dtype()))
}

impl ShardStatistics {
    /// Records the shard's statistics into `encoder`: a one-off [`Plan`](crate::Plan). The
    /// output's `loss` is the records, f32 `[N, SHARD_RECORD]`.
    ///
    /// # Errors
    /// As [`LinearCrossEntropy::record`]; [`Error::Shape`] when the shard's classes do not
    /// lie in the vocabulary.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LinearCrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back: `loss` holds the records.
    ///
    /// # Errors
    /// As [`ShardStatistics::record`].
    pub fn run(
        &self,
        engine: &Engine,
        inputs: &LinearCrossEntropyInputs<'_>,
    ) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for ShardStatistics {
    type Inputs<'a> = LinearCrossEntropyInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        x: &LinearCrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        let (n, h, v) = self.loss.check_inputs(x)?;
        self.shard.check(v)?;
        rec.engine().scoped(|| {
            fits(rec.engine(), "the statistics", n * SHARD_RECORD)?;
            let stats = rec.tensor(&[n, SHARD_RECORD], DType::F32)?;
            record_statistics(rec, &self.loss, self.shard, x, (n, h, v), stats.binding())?;
            Ok(LossOutput {
                loss: stats,
                grads: Vec::new(),
                rows: Vec::new(),
                status: None,
            })
        })
    }
}

impl ShardGradients {
    /// Records the loss and this shard's gradients into `encoder`: a one-off
    /// [`Plan`](crate::Plan). `hidden`'s gradient is this shard's share (sum the shards').
    ///
    /// # Errors
    /// As [`LinearCrossEntropy::record`]; [`Error::Shape`] for records that are not
    /// `[K, N, SHARD_RECORD]` or a shard outside the vocabulary. A class outside the
    /// vocabulary, or held by no shard (or by two), is reported by [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ShardGradientInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`ShardGradients::record`], plus [`Error::Value`] naming the first row whose class
    /// no shard holds.
    pub fn run(&self, engine: &Engine, inputs: &ShardGradientInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for ShardGradients {
    type Inputs<'a> = ShardGradientInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ShardGradientInputs<'_>,
    ) -> Result<LossOutput> {
        let (opts, x) = (&self.loss, &inputs.linear);
        let (n, h, v) = opts.check_inputs(x)?;
        self.shard.check(v)?;
        let shards = check_records(inputs.stats.arg(), n)?;
        rec.engine().scoped(|| {
            fits(rec.engine(), "the statistics", inputs.stats.len())?;
            let stats = (inputs.stats.binding(), shards, n);
            let merged = record_merge(rec, opts, self.shard.vocab, x, n, stats)?;
            let grads = Gradients::new(rec, opts.gradient, x, (n, h, v))?;
            if opts.gradient {
                record_gradients(rec, opts, self.shard, x, (n, h, v), &merged, &grads)?;
            }
            outputs(rec, opts, x, merged, grads)
        })
    }
}

impl LinearCrossEntropy {
    /// The call over a classifier larger than one storage binding: its rows in pieces that
    /// fit, each a vocabulary shard of this call (statistics, one merge, gradients), whose
    /// gradients are written into the whole outputs. The logits are computed twice (for the
    /// statistics, then for the gradients).
    pub(super) fn record_in_pieces(
        &self,
        rec: &mut Recorder<'_>,
        x: &LinearCrossEntropyInputs<'_>,
        (n, h, v): (usize, usize, usize),
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let rows = self.piece_rows(engine, x.hidden.dtype(), (n, h))?;
        let pieces: Vec<(usize, usize)> = (0..v).step_by(rows).map(|s| (s, rows.min(v - s))).collect();
        let views = pieces
            .iter()
            .map(|&(start, len)| {
                let slice = |t: &Tensor| t.rows(engine, start, len);
                Ok((
                    slice(x.classifier)?,
                    x.bias.map(slice).transpose()?,
                    x.weight.map(slice).transpose()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let piece = |k: usize| LinearCrossEntropyInputs {
            classifier: &views[k].0,
            bias: views[k].1.as_ref(),
            weight: views[k].2.as_ref(),
            ..*x
        };
        // Each piece's records from an aligned offset: `record_rows` apart.
        let record_rows = n.next_multiple_of(64);
        fits(engine, "the pieces' statistics", pieces.len() * record_rows * SHARD_RECORD)?;
        let stats = rec.tensor(&[pieces.len() * record_rows * SHARD_RECORD], DType::F32)?;
        for (k, &(start, len)) in pieces.iter().enumerate() {
            let records = stats.window(k * record_rows * SHARD_RECORD, n * SHARD_RECORD);
            let shard = VocabShard::new(start, v);
            record_statistics(rec, self, shard, &piece(k), (n, h, len), records)?;
        }
        let records = (stats.binding(), pieces.len(), record_rows);
        let merged = record_merge(rec, self, v, x, n, records)?;
        let whole = Gradients::new(rec, self.gradient, x, (n, h, v))?;
        if self.gradient {
            for (k, &(start, len)) in pieces.iter().enumerate() {
                let slice = |t: &Tensor| t.rows(engine, start, len);
                let grads = Gradients {
                    hidden_classifier: match &whole.hidden_classifier {
                        Some((gh, gw)) => Some((gh.clone(), slice(gw)?)),
                        None => None,
                    },
                    bias: whole.bias.as_ref().map(slice).transpose()?,
                    dims: (h, len),
                    accumulate_hidden: k > 0,
                };
                let shard = VocabShard::new(start, v);
                record_gradients(rec, self, shard, &piece(k), (n, h, len), &merged, &grads)?;
            }
        }
        outputs(rec, self, x, merged, whole)
    }

    /// Classifier rows per piece: as many as fit one binding (as the f32 gradient when there
    /// is one) with the logits of the smallest chunk, a multiple of the rows that start every
    /// piece's views (16-bit bias included) at an offset the adapter binds.
    fn piece_rows(&self, engine: &Engine, dtype: DType, (n, h): (usize, usize)) -> Result<usize> {
        let align = engine.limits().min_storage_buffer_offset_alignment as usize;
        let unit = (align / 2).max(1);
        let size = if self.gradient { 4 } else { dtype.size() as usize };
        let binding = engine.max_binding_bytes() as usize;
        let chunk = self.chunk_rows.unwrap_or(CHUNK_ALIGN).min(n);
        let fit = (binding / (h * size)).min(binding / (chunk * 4));
        match fit - fit % unit {
            0 => Err(Error::Limit(format!(
                "{unit} classifier rows of {h} values (the pieces' alignment) and their logits \
                 for {chunk} rows exceed the adapter's {binding}-byte storage binding"
            ))),
            rows => Ok(rows),
        }
    }
}
