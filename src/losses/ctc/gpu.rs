//! CTC on the GPU: `ctc.wgsl` and its launch.

use super::{target_reason, Args, Ctc, CtcInput, Layout};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
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
        name: "ctc",
        variant: input_grad_variant(input, grad),
        source: |v| input_grad_source(v, include_str!("ctc.wgsl")),
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, Read, ReadWrite,
            ]
        },
        entry_points: &["gather", "recurse", "gradients"],
    }
}

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    crate::gpu::shader::input_grad_variants(module)
}

/// Device inputs of [`Ctc`]. The lengths are host values (PyTorch reads them on the host
/// too): they size the workspace and place each sequence's targets.
#[derive(Debug, Clone, Copy)]
pub struct CtcInputs<'a> {
    /// Scores `[T, N, C]`: logits, or log-probabilities with [`CtcInput::LogProbs`] (f32,
    /// f16 or bf16).
    pub logits: &'a Tensor,
    /// i32 targets: padded `[N, S]`, or every sequence's concatenated (1-D).
    pub targets: &'a Tensor,
    /// Each sequence's frames, in `[0, T]`.
    pub input_lengths: &'a [i32],
    /// Each sequence's target length, in `[0, S]` (concatenated: within the array).
    pub target_lengths: &'a [i32],
    /// Gradient from above (default ones; per sequence with reduction none).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> CtcInputs<'a> {
    /// Scores, targets and lengths.
    pub fn new(
        logits: &'a Tensor,
        targets: &'a Tensor,
        input_lengths: &'a [i32],
        target_lengths: &'a [i32],
    ) -> Self {
        Self {
            logits,
            targets,
            input_lengths,
            target_lengths,
            upstream: Upstream::Ones,
        }
    }
}

/// Mirrors `Params` in `ctc.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    n: u32,
    c: u32,
    width: u32,
    blank: u32,
    row_base: u32,
    rows: u32,
    scale: f32,
}

impl Ctc {
    /// Records the loss (and the gradient `logits`) into `encoder`.
    ///
    /// # Errors
    /// Bad options, shapes, types or lengths (naming the row); [`Error::Limit`] when the
    /// workspace (three `[N, T, 2·S + 1]` f32 arrays) exceeds one binding; wgpu errors. A
    /// target that is the blank or not a class is reported by [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &CtcInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Ctc::record`], and [`Error::Value`] naming the sequence of the first bad target.
    pub fn run(&self, engine: &Engine, inputs: &CtcInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for Ctc {
    type Inputs<'a> = CtcInputs<'a>;

    fn record_into(&self, rec: &mut Recorder<'_>, inputs: &CtcInputs<'_>) -> Result<LossOutput> {
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        let layout = self.check(&Args {
            logits: inputs.logits.arg(),
            targets: inputs.targets.arg(),
            input_lengths: inputs.input_lengths,
            target_lengths: inputs.target_lengths,
            scalar_upstream,
            per_item_upstream,
        })?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, &layout))
    }
}

impl Ctc {
    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &CtcInputs<'_>,
        layout: &Layout,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let (t, n, c, width) = (layout.t, layout.n, layout.c, layout.width);
        let input_type = inputs.logits.dtype();
        let grad_type = self.grad_dtype.unwrap_or(input_type);
        // norm [T·N], lp, alpha, beta [N·T·W], chain [N·W], ll [N].
        let words = t * n + 3 * n * t * width + n * width + n;
        if words as u64 * 4 > engine.max_binding_bytes() {
            return Err(Error::Limit(format!(
                "CTC's workspace of {} bytes (3·N·T·(2·S + 1) values) exceeds the {}-byte \
                 binding limit: call with fewer sequences at a time",
                words * 4,
                engine.max_binding_bytes()
            )));
        }
        let work = rec.tensor(&[words], DType::F32)?;
        let row_loss = rec.tensor(&[n], DType::F32)?;
        // The flag, then a word per sequence for NaN log-probabilities.
        let status = rec.flag_with_scratch(n)?;
        let unused = rec.unused()?;
        let seqs: Vec<i32> = (0..n)
            .flat_map(|i| {
                let [frames, len, at] =
                    [layout.frames[i], layout.lengths[i], layout.offsets[i]].map(|v| v as i32);
                [frames, len, at, 0]
            })
            .collect();
        let seqs = rec.constant_i32(&seqs, &[n, 4])?;
        let targets = match inputs.targets.len() {
            0 => unused.clone(),
            _ => inputs.targets.binding(),
        };
        let grad = match self.gradient {
            true => Some(rec.tensor(&[t, n, c], grad_type)?),
            false => None,
        };
        let upstream = match inputs.upstream {
            Upstream::Scalar(g) => g as f64,
            _ => 1.0,
        };
        let denom = match self.reduction {
            Reduction::Mean => n as f64,
            _ => 1.0,
        };
        let wg = 64.min(engine.workgroup_size());
        // About 16 scores per invocation: short rows share a workgroup, long ones get 64.
        let team = ((c / 16).max(1).next_power_of_two() as u32).min(wg);
        let rows_per_group = (wg / team) as usize;
        let key = |entry| KernelKey {
            module: module(input_type, grad_type),
            entry,
            overrides: vec![
                ("WG_SIZE", wg),
                ("TEAM", team),
                ("LOG_PROBS", (self.input == CtcInput::LogProbs) as u32),
                (
                    "UPSTREAM_PER_ITEM",
                    matches!(inputs.upstream, Upstream::PerItem(_)) as u32,
                ),
                ("MEAN", (self.reduction == Reduction::Mean) as u32),
                ("ZERO_INFINITY", self.zero_infinity as u32),
                ("WANT_GRAD", self.gradient as u32),
            ],
        };
        let params = |rec: &mut Recorder<'_>, rows: std::ops::Range<usize>| {
            rec.params(&Params {
                t: t as u32,
                n: n as u32,
                c: c as u32,
                width: width as u32,
                blank: self.blank,
                row_base: rows.start as u32,
                rows: rows.len() as u32,
                scale: (upstream / denom) as f32,
            })
        };
        let bindings = |rec: &mut Recorder<'_>, rows: std::ops::Range<usize>, grad| {
            let p = params(rec, rows.clone());
            vec![
                p,
                targets.clone(),
                seqs.binding(),
                match inputs.upstream {
                    Upstream::PerItem(u) => u.binding(),
                    _ => unused.clone(),
                },
                work.binding(),
                row_loss.binding(),
                status.binding(),
                inputs.logits.window(rows.start * c, rows.len() * c),
                grad,
            ]
        };
        let in_bytes = c as u64 * input_type.size();
        let grad_bytes = c as u64 * grad_type.size();
        let windows = engine.row_windows_for(t * n, &[in_bytes, grad_bytes], false)?;
        let discarded = rec.discarded()?;
        for w in &windows {
            let b = bindings(rec, w.clone(), discarded.clone());
            rec.dispatch(key("gather"), b, w.len().div_ceil(rows_per_group) as u32)?;
        }
        let b = bindings(rec, 0..0, discarded);
        rec.dispatch(key("recurse"), b, n as u32)?;
        if let Some(g) = &grad {
            for w in &windows {
                let b = bindings(rec, w.clone(), g.window(w.start * c, w.len() * c));
                rec.dispatch(key("gradients"), b, w.len().div_ceil(rows_per_group) as u32)?;
            }
        }
        let loss = if self.reduction == Reduction::None {
            row_loss
        } else {
            let loss = rec.tensor(&[], DType::F32)?;
            rec.sum(
                (&row_loss, 0),
                n,
                SumOf::scaled((1.0 / denom) as f32),
                &loss,
            )?;
            loss
        };
        Ok(LossOutput {
            loss,
            grads: grad.into_iter().map(|g| ("logits", g)).collect(),
            status: Some(Status {
                flag: status,
                input: "targets",
                values: inputs.targets.clone(),
                row_len: 1,
                row_starts: Some(layout.offsets.clone()),
                reason: target_reason(c, self.blank),
            }),
            rows: Vec::new(),
        })
    }
}
