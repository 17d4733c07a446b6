//! Whole-row class-score losses on the GPU: `class_rows.wgsl` and its launch.

use super::{Args, ClassRows, ClassRowsKind};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::{LossOutput, Status};
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{input_grad_source, input_grad_variant, Access, ShaderModule};
use crate::gpu::tensor::{DType, Tensor};

/// The kernel's module for an input of type `input` and a gradient of type `grad`.
pub(crate) fn module(input: DType, grad: DType) -> ShaderModule {
    ShaderModule {
        name: "class_rows",
        variant: input_grad_variant(input, grad),
        source: |v| input_grad_source(v, include_str!("class_rows.wgsl")),
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, Read, ReadWrite,
            ]
        },
        entry_points: &["main", "counts"],
    }
}

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    crate::gpu::shader::input_grad_variants(module)
}

/// Device inputs of [`ClassRows`].
#[derive(Debug, Clone, Copy)]
pub struct ClassRowsInputs<'a> {
    /// Class scores `[N, C]` (f32, f16 or bf16).
    pub input: &'a Tensor,
    /// Multi-margin: class indices `[N]` (i32); CORAL, CORN: ordinal labels `[N]` (i32);
    /// multilabel soft margin: a target per class `[N, C]` (f32); multilabel margin: each
    /// row's classes `[N, C]` (i32, ended by the first −1); distillation: the teacher's logits
    /// `[N, C]` (f32); JSD: the teacher's log-probabilities `[N, C]` (f32).
    pub target: &'a Tensor,
    /// Class weights `[C]` (f32; CORAL's importance weights).
    pub weight: Option<&'a Tensor>,
    /// JSD's row labels `[N]` (i32): rows equal to its `ignore_index` are dropped.
    pub labels: Option<&'a Tensor>,
    /// Gradient from above (default ones).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> ClassRowsInputs<'a> {
    /// Scores and targets.
    pub fn new(input: &'a Tensor, target: &'a Tensor) -> Self {
        Self {
            input,
            target,
            weight: None,
            labels: None,
            upstream: Upstream::Ones,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    row_base: u32,
    param: f32,
    scale: f32,
    ignore_index: i32,
    _pad: [u32; 2],
}

impl ClassRows {
    /// Records the loss (and the gradient `input`) into `encoder`.
    ///
    /// # Errors
    /// Bad options; [`Error::Shape`](crate::Error::Shape) / [`Error::DType`](crate::Error::DType)
    /// for inputs of other shapes or types; wgpu errors. A multi-margin class outside `[0, C)`
    /// (or a multilabel-margin entry outside `[−1, C)`) is reported by
    /// [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ClassRowsInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`ClassRows::record`], and [`Error::Value`](crate::Error::Value) naming the first
    /// row whose class is out of range.
    pub fn run(&self, engine: &Engine, inputs: &ClassRowsInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for ClassRows {
    type Inputs<'a> = ClassRowsInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ClassRowsInputs<'_>,
    ) -> Result<LossOutput> {
        self.validate()?;
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        let (n, c) = self.check(&Args {
            input: inputs.input.arg(),
            target: inputs.target.arg(),
            weight: inputs.weight.map(Tensor::arg),
            labels: inputs.labels.map(Tensor::arg),
            scalar_upstream,
            per_item_upstream,
        })?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, n, c))
    }
}

impl ClassRows {
    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ClassRowsInputs<'_>,
        n: usize,
        c: usize,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let input_type = inputs.input.dtype();
        let grad_type = self.grad_dtype.unwrap_or(input_type);
        let row_loss = rec.tensor(&[n], DType::F32)?;
        let unused = rec.unused()?;
        let grad = match self.gradient {
            true => Some(rec.tensor(&[n, c], grad_type)?),
            false => None,
        };
        // JSD with labels and CORN divide their mean by a count of the device's labels.
        let counted = self.reduction == Reduction::Mean
            && match self.kind {
                ClassRowsKind::Jsd { .. } => inputs.labels.is_some(),
                kind => kind == ClassRowsKind::Corn,
            };
        let denom = match self.reduction {
            Reduction::Mean if !counted => n as f64,
            _ => 1.0,
        };
        let upstream = match inputs.upstream {
            Upstream::Scalar(g) => g as f64,
            _ => 1.0,
        };
        let wg = 64.min(engine.workgroup_size());
        // About 16 elements per invocation: short rows share a workgroup, long ones get 64.
        let team = ((c / 16).max(1).next_power_of_two() as u32).min(wg);
        let rows_per_group = (wg / team) as usize;
        let (loss_kind, p, param) = match self.kind {
            ClassRowsKind::MultiMargin { p, margin } => (0, p, margin),
            ClassRowsKind::MultilabelSoftMargin => (1, 1, 0.0),
            ClassRowsKind::DistillKl { temperature } => (2, 1, temperature),
            ClassRowsKind::MultilabelMargin => (3, 1, 0.0),
            ClassRowsKind::Jsd { beta, .. } => (4, 1, beta),
            ClassRowsKind::Coral => (5, 1, 0.0),
            ClassRowsKind::Corn => (6, 1, 0.0),
        };
        let ignore_index = match self.kind {
            ClassRowsKind::Jsd { ignore_index, .. } => ignore_index,
            _ => 0,
        };
        let key = |entry| KernelKey {
            module: module(input_type, grad_type),
            entry,
            overrides: vec![
                ("WG_SIZE", wg),
                ("TEAM", team),
                ("LOSS", loss_kind),
                ("P_POWER", p),
                ("WEIGHTED", inputs.weight.is_some() as u32),
                (
                    "UPSTREAM_PER_ROW",
                    matches!(inputs.upstream, Upstream::PerItem(_)) as u32,
                ),
                ("WANT_GRAD", grad.is_some() as u32),
                ("LABELED", inputs.labels.is_some() as u32),
                ("DENOM_FROM_BUFFER", counted as u32),
            ],
        };

        let (class_targets, class_lists) = (self.class_targets(), self.class_lists());
        // The rows' labels (JSD's) or class targets, window by window.
        let row_classes = |start: usize, rows: usize| match (class_targets, class_lists) {
            _ if inputs.labels.is_some() => inputs.labels.map(|l| l.window(start, rows)),
            (true, _) => Some(inputs.target.window(start, rows)),
            (_, true) => Some(inputs.target.window(start * c, rows * c)),
            _ => None,
        };
        let row_bytes = |d: DType| c as u64 * d.size();
        let mut widths = vec![row_bytes(input_type), row_bytes(grad_type)];
        if !class_targets {
            // The targets; multilabel margin's scratch counts (and the flag) as wide.
            widths.push(row_bytes(DType::F32) + 4 * u64::from(class_lists));
        }
        let windows = engine.row_windows_for(n, &widths, true)?;
        // Multilabel margin counts each class's listings per row of a window.
        let scratch = match class_lists {
            true => windows.iter().map(|w| w.len()).max().unwrap_or(0) * c,
            false => 0,
        };
        let status = rec.flag_with_scratch(scratch)?;
        let params = |rec: &mut Recorder<'_>, w: &std::ops::Range<usize>| {
            rec.params(&Params {
                rows: w.len() as u32,
                c: c as u32,
                row_base: w.start as u32,
                param,
                scale: (upstream / denom) as f32,
                ignore_index,
                _pad: [0; 2],
            })
        };
        // The mean's count, summed from the rows' counts (in `row_loss`, before the losses).
        let count = match counted {
            true => {
                for w in &windows {
                    let bindings = vec![
                        params(rec, w),
                        row_classes(w.start, w.len()).unwrap_or(unused.clone()),
                        unused.clone(),
                        unused.clone(),
                        unused.clone(),
                        row_loss.window(w.start, w.len()),
                        status.binding(),
                        unused.clone(),
                        rec.discarded()?,
                    ];
                    let groups = w.len().div_ceil(wg as usize) as u32;
                    rec.dispatch(key("counts"), bindings, groups)?;
                }
                let count = rec.tensor(&[1], DType::F32)?;
                rec.sum((&row_loss, 0), n, SumOf::PLAIN, &count)?;
                Some(count)
            }
            false => None,
        };
        for w in windows {
            let rows = w.len();
            let bindings = vec![
                params(rec, &w),
                row_classes(w.start, rows).unwrap_or(unused.clone()),
                match class_targets || class_lists {
                    true => unused.clone(),
                    false => inputs.target.window(w.start * c, rows * c),
                },
                match &count {
                    Some(count) => count.binding(),
                    None => inputs.weight.map_or(unused.clone(), Tensor::binding),
                },
                match inputs.upstream {
                    Upstream::PerItem(t) => t.window(w.start, rows),
                    _ => unused.clone(),
                },
                row_loss.window(w.start, rows),
                status.binding(),
                inputs.input.window(w.start * c, rows * c),
                match &grad {
                    Some(g) => g.window(w.start * c, rows * c),
                    None => rec.discarded()?,
                },
            ];
            let groups = rows.div_ceil(rows_per_group) as u32;
            rec.dispatch(key("main"), bindings, groups)?;
        }
        let loss = if self.reduction == Reduction::None {
            row_loss
        } else {
            let loss = rec.tensor(&[], DType::F32)?;
            let how = SumOf {
                scale: (1.0 / denom) as f32,
                divisor: count.as_ref(),
            };
            rec.sum((&row_loss, 0), n, how, &loss)?;
            loss
        };
        Ok(LossOutput {
            loss,
            grads: grad
                .into_iter()
                .map(|g| (self.kind.input_name(), g))
                .collect(),
            status: (class_targets || class_lists).then(|| Status {
                flag: status,
                input: self.kind.target_name(),
                values: inputs.target.clone(),
                row_len: if class_lists { c } else { 1 },
                row_starts: None,
                reason: match (class_lists, self.kind.ordinal()) {
                    (true, _) => format!("class outside [-1, {c})"),
                    (_, true) => format!("label outside [0, {c}]"),
                    _ => format!("class index outside [0, {c})"),
                },
            }),
            rows: Vec::new(),
        })
    }
}
