//! Contrastive and triplet losses on the GPU: `pair_rows.wgsl` and its launch.

use super::{check, Args, Contrastive, CosineEmbedding, Triplet};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::LossOutput;
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{float_digit, Access, FloatView, ShaderModule, FLOATS, HALF, MATH};
use crate::gpu::tensor::{DType, Tensor};
use crate::Distance;

/// The kernel's module for rows of type `rows` and gradients of type `grads`.
pub(crate) fn module(rows: DType, grads: DType) -> ShaderModule {
    ShaderModule {
        name: "pair_rows",
        variant: float_digit(rows) * 3 + float_digit(grads),
        source: |v| {
            let header = header(FLOATS[v as usize / 3], FLOATS[v as usize % 3]);
            [MATH, HALF, &header, include_str!("pair_rows.wgsl")].join("\n")
        },
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, Read, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite,
            ]
        },
        entry_points: &["main"],
    }
}

/// WGSL declaring the row inputs (bindings 1–3) and their gradients (6–8) by element.
fn header(rows: DType, grads: DType) -> String {
    let views = [
        (1, "in_a", rows, Access::Read),
        (2, "in_b", rows, Access::Read),
        (3, "in_c", rows, Access::Read),
        (6, "grad_a", grads, Access::ReadWrite),
        (7, "grad_b", grads, Access::ReadWrite),
        (8, "grad_c", grads, Access::ReadWrite),
    ];
    views
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

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    crate::gpu::shader::input_grad_variants(module)
}

/// Device inputs of [`Contrastive`]: pairs of rows and their labels (1 similar, 0 not).
#[derive(Debug, Clone, Copy)]
pub struct ContrastiveInputs<'a> {
    /// First rows [N, D].
    pub x1: &'a Tensor,
    /// Second rows [N, D].
    pub x2: &'a Tensor,
    /// Labels `[N]` (f32).
    pub y: &'a Tensor,
    /// Gradient from above (default ones).
    pub upstream: Upstream<'a, Tensor>,
}

/// Device inputs of [`Triplet`].
#[derive(Debug, Clone, Copy)]
pub struct TripletInputs<'a> {
    /// Anchors [N, D].
    pub anchor: &'a Tensor,
    /// Positives [N, D].
    pub positive: &'a Tensor,
    /// Negatives [N, D].
    pub negative: &'a Tensor,
    /// Gradient from above (default ones).
    pub upstream: Upstream<'a, Tensor>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    margin: f32,
    eps: f32,
    scale: f32,
    _pad: [u32; 3],
}

/// What one launch of the row kernel computes.
struct RowsJob<'a> {
    names: &'static [&'static str],
    rows: Vec<&'a Tensor>,
    y: Option<&'a Tensor>,
    upstream: Upstream<'a, Tensor>,
    reduction: Reduction,
    gradient: bool,
    overrides: Vec<(&'static str, u32)>,
    margin: f32,
    eps: f32,
    grad_dtype: Option<DType>,
}

/// The `[N, D]` shape shared by `rows` (named `names`), checked.
impl RowsJob<'_> {
    fn record(self, rec: &mut Recorder<'_>) -> Result<LossOutput> {
        let rows: Vec<_> = self
            .names
            .iter()
            .zip(&self.rows)
            .map(|(&name, t)| (name, t.arg()))
            .collect();
        let (scalar_upstream, per_item_upstream) = self.upstream.split(Tensor::arg);
        let args = Args {
            rows: &rows,
            y: self.y.map(Tensor::arg),
            scalar_upstream,
            per_item_upstream,
        };
        let (n, dim) = check(&args, self.reduction)?;
        rec.engine().scoped(|| self.record_checked(rec, n, dim))
    }

    fn record_checked(self, rec: &mut Recorder<'_>, n: usize, dim: usize) -> Result<LossOutput> {
        let engine = rec.engine();
        let row_loss = rec.tensor(&[n], DType::F32)?;
        let rows_type = self.rows[0].dtype();
        let grad_type = self.grad_dtype.unwrap_or(rows_type);
        let grads: Vec<Tensor> = if self.gradient {
            self.rows
                .iter()
                .map(|t| rec.tensor(t.shape(), grad_type))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let denom = match self.reduction {
            Reduction::Mean => n as f64,
            _ => 1.0,
        };
        let upstream = match self.upstream {
            Upstream::Scalar(g) => g as f64,
            _ => 1.0,
        };
        let wg = 64.min(engine.workgroup_size());
        // About 16 elements per invocation: short rows share a workgroup, long ones get 64.
        let team = ((dim / 16).max(1).next_power_of_two() as u32).min(wg);
        let rows_per_group = (wg / team) as usize;
        let mut overrides = vec![
            ("WG_SIZE", wg),
            ("TEAM", team),
            ("WANT_GRAD", self.gradient as u32),
            (
                "UPSTREAM_PER_ROW",
                matches!(self.upstream, Upstream::PerItem(_)) as u32,
            ),
        ];
        overrides.extend(self.overrides.iter().copied());
        let key = KernelKey {
            module: module(rows_type, grad_type),
            entry: "main",
            overrides,
        };
        let unused = rec.unused()?;
        let row_bytes = |d: DType| dim.max(1) as u64 * d.size();
        for w in engine.row_windows_for(n, &[row_bytes(rows_type), row_bytes(grad_type)], true)? {
            let (rs, rc) = (w.start * dim, w.len() * dim);
            let params = rec.params(&Params {
                rows: w.len() as u32,
                dim: dim as u32,
                margin: self.margin,
                eps: self.eps,
                scale: (upstream / denom) as f32,
                _pad: [0; 3],
            });
            let input = |i: usize| {
                self.rows
                    .get(i)
                    .map_or(unused.clone(), |t| t.window(rs, rc))
            };
            let grad = |i: usize| grads.get(i).map_or(unused.clone(), |t| t.window(rs, rc));
            let bindings = vec![
                params,
                input(0),
                input(1),
                input(2),
                self.y
                    .map_or(unused.clone(), |y| y.window(w.start, w.len())),
                match self.upstream {
                    Upstream::PerItem(t) => t.window(w.start, w.len()),
                    _ => unused.clone(),
                },
                grad(0),
                grad(1),
                grad(2),
                row_loss.window(w.start, w.len()),
            ];
            let groups = w.len().div_ceil(rows_per_group) as u32;
            rec.dispatch(key.clone(), bindings, groups)?;
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
            grads: self.names.iter().copied().zip(grads).collect(),
            status: None,
            rows: Vec::new(),
        })
    }
}

impl Contrastive {
    /// Records the loss (and gradients `x1`, `x2`) into `encoder`.
    ///
    /// # Errors
    /// Bad options; [`Error::Shape`](crate::Error::Shape) / [`Error::DType`](crate::Error::DType) for inputs that are not f32 `[N, D]`
    /// rows of one shape with `y` `[N]`; wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ContrastiveInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Contrastive::record`].
    pub fn run(&self, engine: &Engine, inputs: &ContrastiveInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for Contrastive {
    type Inputs<'a> = ContrastiveInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ContrastiveInputs<'_>,
    ) -> Result<LossOutput> {
        self.validate()?;
        RowsJob {
            names: &["x1", "x2"],
            rows: vec![inputs.x1, inputs.x2],
            y: Some(inputs.y),
            upstream: inputs.upstream,
            reduction: self.reduction,
            gradient: self.gradient,
            overrides: vec![("LOSS", 0), ("P_NORM", 2)],
            margin: self.margin,
            eps: self.eps,
            grad_dtype: self.grad_dtype,
        }
        .record(rec)
    }
}

impl Triplet {
    /// Records the loss (and gradients `anchor`, `positive`, `negative`) into `encoder`.
    ///
    /// # Errors
    /// Bad options; [`Error::Shape`](crate::Error::Shape) / [`Error::DType`](crate::Error::DType) for inputs that are not f32 `[N, D]`
    /// rows of one shape; wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &TripletInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Triplet::record`].
    pub fn run(&self, engine: &Engine, inputs: &TripletInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for Triplet {
    type Inputs<'a> = TripletInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &TripletInputs<'_>,
    ) -> Result<LossOutput> {
        self.validate()?;
        RowsJob {
            names: &["anchor", "positive", "negative"],
            rows: vec![inputs.anchor, inputs.positive, inputs.negative],
            y: None,
            upstream: inputs.upstream,
            reduction: self.reduction,
            gradient: self.gradient,
            overrides: vec![
                (
                    "LOSS",
                    if self.distance == Distance::Cosine {
                        3
                    } else {
                        1
                    },
                ),
                ("P_NORM", self.p),
                ("SWAP", self.swap as u32),
            ],
            margin: self.margin,
            eps: self.eps,
            grad_dtype: self.grad_dtype,
        }
        .record(rec)
    }
}

impl CosineEmbedding {
    /// Records the loss (and gradients `x1`, `x2`) into `encoder`; the inputs are a
    /// [`ContrastiveInputs`] with labels `y` ∈ {−1, +1} (the command line and the CPU
    /// backend reject others; here another value counts as −1).
    ///
    /// # Errors
    /// As [`Contrastive::record`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ContrastiveInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`CosineEmbedding::record`].
    pub fn run(&self, engine: &Engine, inputs: &ContrastiveInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for CosineEmbedding {
    type Inputs<'a> = ContrastiveInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ContrastiveInputs<'_>,
    ) -> Result<LossOutput> {
        self.validate()?;
        RowsJob {
            names: &["x1", "x2"],
            rows: vec![inputs.x1, inputs.x2],
            y: Some(inputs.y),
            upstream: inputs.upstream,
            reduction: self.reduction,
            gradient: self.gradient,
            overrides: vec![("LOSS", 2)],
            margin: self.margin,
            eps: 0.0,
            grad_dtype: self.grad_dtype,
        }
        .record(rec)
    }
}
