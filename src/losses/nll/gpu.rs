//! NLLLoss on the GPU: `nll.wgsl` and its launch.

use super::{check, Args, Nll};
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
        name: "nll",
        variant: input_grad_variant(input, grad),
        source: |v| input_grad_source(v, include_str!("nll.wgsl")),
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, Read, ReadWrite,
            ]
        },
        entry_points: &["rows", "grads"],
    }
}

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    crate::gpu::shader::input_grad_variants(module)
}

/// Device inputs of [`Nll`].
#[derive(Debug, Clone, Copy)]
pub struct NllInputs<'a> {
    /// Log-probabilities `[N, C]` (f32, f16 or bf16).
    pub input: &'a Tensor,
    /// Class indices `[N]` (i32).
    pub target: &'a Tensor,
    /// Class weights `[C]` (f32).
    pub weight: Option<&'a Tensor>,
    /// Gradient from above (default ones).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> NllInputs<'a> {
    /// Log-probabilities and their targets.
    pub fn new(input: &'a Tensor, target: &'a Tensor) -> Self {
        Self {
            input,
            target,
            weight: None,
            upstream: Upstream::Ones,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    row_base: u32,
    ignore_index: i32,
    weights_at: u32,
    scale: f32,
    _pad: [u32; 2],
}

impl Nll {
    /// Records the loss (and the gradient `input`) into `encoder`.
    ///
    /// # Errors
    /// Bad options; [`Error::Shape`](crate::Error::Shape) / [`Error::DType`](crate::Error::DType)
    /// for inputs that are not `[N, C]` floats with i32 targets `[N]` and f32 weights `[C]`;
    /// wgpu errors. A target outside `[0, C)` (not `ignore_index`) is reported by
    /// [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NllInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Nll::record`], and [`Error::Value`](crate::Error::Value) naming the first row
    /// whose target is out of range.
    pub fn run(&self, engine: &Engine, inputs: &NllInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for Nll {
    type Inputs<'a> = NllInputs<'a>;

    fn record_into(&self, rec: &mut Recorder<'_>, inputs: &NllInputs<'_>) -> Result<LossOutput> {
        self.validate()?;
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        let (n, c) = check(
            &Args {
                input: inputs.input.arg(),
                target: inputs.target.arg(),
                weight: inputs.weight.map(Tensor::arg),
                scalar_upstream,
                per_item_upstream,
            },
            self.reduction,
        )?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, n, c))
    }
}

impl Nll {
    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &NllInputs<'_>,
        n: usize,
        c: usize,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let input_type = inputs.input.dtype();
        let grad_type = self.grad_dtype.unwrap_or(input_type);
        let wg = 64.min(engine.workgroup_size());
        // The rows' losses, then (from an offset every adapter accepts) their weights.
        let weights_at = n.next_multiple_of(64);
        let stats = rec.tensor(&[weights_at + n], DType::F32)?;
        let status = rec.zeros(&[1], DType::I32)?;
        let unused = rec.unused()?;
        let grad = match self.gradient {
            true => Some(rec.tensor(&[n, c], grad_type)?),
            false => None,
        };
        let per_row = matches!(inputs.upstream, Upstream::PerItem(_));
        let mean = self.reduction == Reduction::Mean;
        let key = |entry| KernelKey {
            module: module(input_type, grad_type),
            entry,
            overrides: vec![
                ("WG_SIZE", wg),
                ("WEIGHTED", inputs.weight.is_some() as u32),
                ("UPSTREAM_PER_ROW", per_row as u32),
                ("DENOM_FROM_BUFFER", mean as u32),
            ],
        };
        let windows = engine.row_windows_for(
            n,
            &[c as u64 * input_type.size(), c as u64 * grad_type.size()],
            true,
        )?;
        let denom = rec.tensor(&[1], DType::F32)?;
        let scale = match inputs.upstream {
            Upstream::Scalar(g) => g,
            _ => 1.0,
        };
        let launch = |rec: &mut Recorder<'_>, entry: &'static str| -> Result<()> {
            for w in &windows {
                let rows = w.len();
                let params = rec.params(&Params {
                    n: rows as u32,
                    c: c as u32,
                    row_base: w.start as u32,
                    ignore_index: self.ignore_index,
                    weights_at: weights_at as u32,
                    scale,
                    _pad: [0; 2],
                });
                let bindings = vec![
                    params,
                    inputs.target.window(w.start, rows),
                    inputs.weight.map_or(unused.clone(), Tensor::binding),
                    match inputs.upstream {
                        Upstream::PerItem(t) => t.window(w.start, rows),
                        _ => unused.clone(),
                    },
                    denom.binding(),
                    stats.binding(),
                    status.binding(),
                    inputs.input.window(w.start * c, rows * c),
                    match (&grad, entry) {
                        (Some(g), "grads") => g.window(w.start * c, rows * c),
                        _ => rec.discarded()?,
                    },
                ];
                let items = if entry == "rows" { rows } else { rows * c };
                rec.dispatch(key(entry), bindings, items.div_ceil(wg as usize) as u32)?;
            }
            Ok(())
        };
        launch(rec, "rows")?;
        let loss = match self.reduction {
            Reduction::None => stats.prefix(&[n]),
            _ => {
                let loss = rec.tensor(&[], DType::F32)?;
                let how = match mean {
                    true => {
                        rec.sum((&stats, weights_at), n, SumOf::PLAIN, &denom)?;
                        SumOf {
                            scale: 1.0,
                            divisor: Some(&denom),
                        }
                    }
                    false => SumOf::PLAIN,
                };
                rec.sum((&stats, 0), n, how, &loss)?;
                loss
            }
        };
        if grad.is_some() {
            launch(rec, "grads")?;
        }
        Ok(LossOutput {
            loss,
            grads: grad.into_iter().map(|g| ("input", g)).collect(),
            status: Some(Status {
                flag: status,
                input: "target",
                values: inputs.target.clone(),
                row_len: 1,
                row_starts: None,
                reason: format!(
                    "class index outside [0, {c}) and not ignore_index {}",
                    self.ignore_index
                ),
            }),
            rows: Vec::new(),
        })
    }
}
