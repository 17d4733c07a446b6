//! Fused linear cross-entropy on the GPU: the chunks' matrix products (products.rs) and the
//! cross-entropy row kernel, recorded chunk by chunk (see the family's `mod.rs`); a
//! classifier past one binding runs as vocabulary shards of the call (shard_gpu.rs).

pub use super::products::LinearCrossEntropyInputs;
#[cfg(test)]
use super::products::{filter_module, gemm_module};
use super::products::{reduced, record_logits, GradFilter, Gradients};
use super::LinearCrossEntropy;
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::output::LossOutput;
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::Recorder;
#[cfg(test)]
use crate::gpu::shader::{ShaderModule, FLOATS};
use crate::gpu::tensor::DType;
use crate::losses::cross_entropy::gpu::{Batch, CrossEntropyInputs, Target};
use crate::CrossEntropy;

/// The family's WGSL modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    FLOATS
        .iter()
        .flat_map(|&a| FLOATS.map(|b| gemm_module(a, b)))
        .chain([super::shard_gpu::module(), filter_module()])
        .collect()
}

impl LinearCrossEntropy {
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
    /// As [`LinearCrossEntropy::record`], plus [`Error::Value`](crate::Error::Value) for a class index outside
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
        let filter = GradFilter::new(rec, self, x, denom.binding(), (chunk.min(n), v))?;
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
            let filter = filter.as_ref();
            grads.record_chunk(rec, x, (start, rows), index == 0, &logits, filter)?;
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
