//! Ranking losses on the GPU: `ranking.wgsl` and its launch.

use super::{Args, Ranking, RankingKind};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::{LossOutput, Status};
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{input_grad_source, input_grad_variant, Access, ShaderModule};
use crate::gpu::tensor::{DType, Tensor};

/// The kernels' module for scores of type `input` and a gradient of type `grad`.
pub(crate) fn module(input: DType, grad: DType) -> ShaderModule {
    ShaderModule {
        name: "ranking",
        variant: input_grad_variant(input, grad),
        source: |v| input_grad_source(v, include_str!("ranking.wgsl")),
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, Read, ReadWrite,
            ]
        },
        entry_points: &["lists", "finish"],
    }
}

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    crate::gpu::shader::input_grad_variants(module)
}

/// Device inputs of [`Ranking`].
#[derive(Debug, Clone, Copy)]
pub struct RankingInputs<'a> {
    /// Scores `[Q, L]` (f32, f16 or bf16).
    pub scores: &'a Tensor,
    /// Relevance grades `[Q, L]` (f32, ≥ 0).
    pub relevance: &'a Tensor,
    /// Each list's length `[Q]` (i32; default L): entries past it are padding.
    pub lengths: Option<&'a Tensor>,
    /// Gradient from above (default ones; one per list with reduction none).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> RankingInputs<'a> {
    /// Scores and relevance of full lists.
    pub fn new(scores: &'a Tensor, relevance: &'a Tensor) -> Self {
        Self {
            scores,
            relevance,
            lengths: None,
            upstream: Upstream::Ones,
        }
    }
}

/// Mirrors `Params` in `ranking.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    lists: u32,
    l: u32,
    list_base: u32,
    k: u32,
    margin: f32,
    scale: f32,
    stride: u32,
    _pad: u32,
}

impl Ranking {
    /// Records the loss (the gradient `scores`, and with `ndcg` the rows' "ndcg") into
    /// `encoder`.
    ///
    /// # Errors
    /// Bad options, shapes or types; wgpu errors. A length outside `[0, L]` is reported by
    /// [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &RankingInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Ranking::record`], and [`crate::Error::Value`] naming the first list whose length
    /// is out of range.
    pub fn run(&self, engine: &Engine, inputs: &RankingInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for Ranking {
    type Inputs<'a> = RankingInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &RankingInputs<'_>,
    ) -> Result<LossOutput> {
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        let (q, l) = self.check(&Args {
            scores: inputs.scores.arg(),
            relevance: inputs.relevance.arg(),
            lengths: inputs.lengths.map(Tensor::arg),
            scalar_upstream,
            per_item_upstream,
        })?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, q, l))
    }
}

impl Ranking {
    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &RankingInputs<'_>,
        q: usize,
        l: usize,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let input_type = inputs.scores.dtype();
        let grad_type = self.grad_dtype.unwrap_or(input_type);
        // [loss | count | ndcg] per list, each array aligned for a sum's window.
        let stride = q.next_multiple_of(64);
        let stats = rec.tensor(&[3 * stride], DType::F32)?;
        let status = rec.flag_with_scratch(0)?;
        let unused = rec.unused()?;
        let wg = 64.min(engine.workgroup_size());
        let loss_id = match self.kind {
            RankingKind::RankNet => 0,
            RankingKind::PairwiseHinge { .. } => 1,
            RankingKind::ListNet => 2,
            RankingKind::ListMle => 3,
            RankingKind::LambdaNdcg => 4,
        };
        let margin = match self.kind {
            RankingKind::PairwiseHinge { margin } => margin,
            _ => 0.0,
        };
        let key = |entry| KernelKey {
            module: module(input_type, grad_type),
            entry,
            overrides: vec![
                ("WG_SIZE", wg),
                ("LOSS", loss_id),
                ("HAS_LENGTHS", inputs.lengths.is_some() as u32),
                ("NEEDS_RANKS", self.needs_ranks() as u32),
                (
                    "UPSTREAM_PER_LIST",
                    matches!(inputs.upstream, Upstream::PerItem(_)) as u32,
                ),
                (
                    "DENOM_FROM_BUFFER",
                    (self.reduction == Reduction::Mean) as u32,
                ),
            ],
        };
        let upstream = match inputs.upstream {
            Upstream::Scalar(g) => g,
            _ => 1.0,
        };
        let row = |d: DType| l as u64 * d.size();
        // Lists by windows: the scores, relevance, gradient and 3·L workspace values each.
        let windows = engine.row_windows_for(
            q,
            &[row(input_type), row(grad_type), row(DType::F32) * 3],
            true,
        )?;
        let work = rec.tensor(&[q * 3 * l], DType::F32)?;
        let work_of = |w: &std::ops::Range<usize>| work.window(w.start * 3 * l, w.len() * 3 * l);
        let grad = match self.gradient {
            true => Some(rec.tensor(&[q, l], grad_type)?),
            false => None,
        };
        let params = |rec: &mut Recorder<'_>, w: &std::ops::Range<usize>| {
            rec.params(&Params {
                lists: w.len() as u32,
                l: l as u32,
                list_base: w.start as u32,
                k: self.cutoff(),
                margin,
                scale: upstream,
                stride: stride as u32,
                _pad: 0,
            })
        };
        let per_list = |t: Option<&Tensor>, w: &std::ops::Range<usize>| {
            t.map_or(unused.clone(), |t| t.window(w.start, w.len()))
        };
        let upstream_binding = match inputs.upstream {
            Upstream::PerItem(u) => u.binding(),
            _ => unused.clone(),
        };
        let discarded = rec.discarded()?;
        // Each window's lists; the gradient needs the whole batch's count, so it waits for
        // every window and the count's sum.
        let count = rec.tensor(&[1], DType::F32)?;
        let mut finishes = Vec::new();
        for w in &windows {
            let bindings = vec![
                params(rec, w),
                inputs.relevance.window(w.start * l, w.len() * l),
                per_list(inputs.lengths, w),
                upstream_binding.clone(),
                work_of(w),
                stats.binding(),
                status.binding(),
                inputs.scores.window(w.start * l, w.len() * l),
                discarded.clone(),
            ];
            rec.dispatch(key("lists"), bindings, w.len() as u32)?;
            if let Some(g) = &grad {
                finishes.push((w.clone(), g.window(w.start * l, w.len() * l)));
            }
        }
        if self.reduction == Reduction::Mean {
            rec.sum((&stats, stride), q, SumOf::PLAIN, &count)?;
        }
        for (w, g) in finishes {
            let bindings = vec![
                params(rec, &w),
                count.binding(),
                per_list(inputs.lengths, &w),
                upstream_binding.clone(),
                work_of(&w),
                stats.binding(),
                status.binding(),
                unused.clone(),
                g,
            ];
            let groups = (w.len() * l).div_ceil(wg as usize) as u32;
            rec.dispatch(key("finish"), bindings, groups)?;
        }
        let loss = match self.reduction {
            Reduction::None => {
                let loss = rec.tensor(&[q], DType::F32)?;
                rec.copy((&stats, 0), (&loss, 0), q);
                loss
            }
            reduction => {
                let loss = rec.tensor(&[], DType::F32)?;
                let how = SumOf {
                    scale: 1.0,
                    divisor: (reduction == Reduction::Mean).then_some(&count),
                };
                rec.sum((&stats, 0), q, how, &loss)?;
                loss
            }
        };
        let mut rows = Vec::new();
        if self.ndcg {
            let ndcg = rec.tensor(&[q], DType::F32)?;
            rec.copy((&stats, 2 * stride), (&ndcg, 0), q);
            rows.push(("ndcg", ndcg));
        }
        Ok(LossOutput {
            loss,
            grads: grad.into_iter().map(|g| ("scores", g)).collect(),
            status: inputs.lengths.map(|lengths| Status {
                flag: status,
                input: "lengths",
                values: lengths.clone(),
                row_len: 1,
                row_starts: None,
                reason: format!("outside [0, {l}]"),
            }),
            rows,
        })
    }
}
