//! Dice and Tversky on the GPU: `overlap.wgsl` and its launch.

use super::{index_reason, squared, Activation, Args, Layout, Overlap, OverlapKind};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::{LossOutput, Status};
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{input_grad_source, input_grad_variant, Access, ShaderModule};
use crate::gpu::tensor::{DType, Tensor};

/// The kernels' module for an input of type `input` and a gradient of type `grad`.
pub(crate) fn module(input: DType, grad: DType) -> ShaderModule {
    ShaderModule {
        name: "overlap",
        variant: input_grad_variant(input, grad),
        source: |v| input_grad_source(v, include_str!("overlap.wgsl")),
        bindings: |_| {
            use Access::*;
            vec![
                Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, Read, ReadWrite,
            ]
        },
        entry_points: &["partials", "groups", "gradients"],
    }
}

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    crate::gpu::shader::input_grad_variants(module)
}

/// Device inputs of [`Overlap`].
#[derive(Debug, Clone, Copy)]
pub struct OverlapInputs<'a> {
    /// Input `[N, C, spatial…]`: probabilities, or logits with an activation (f32, f16 or
    /// bf16).
    pub input: &'a Tensor,
    /// f32 one-hot (or soft) targets of the input's shape, or i32 class indices
    /// `[N, spatial…]` or `[N, 1, spatial…]`.
    pub target: &'a Tensor,
    /// Per-class weights, C host values (MONAI's `weight`), each finite and ≥ 0.
    pub weight: Option<&'a [f32]>,
    /// Gradient from above (default ones; one per ratio with reduction none).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> OverlapInputs<'a> {
    /// Input and target, unweighted.
    pub fn new(input: &'a Tensor, target: &'a Tensor) -> Self {
        Self {
            input,
            target,
            weight: None,
            upstream: Upstream::Ones,
        }
    }
}

/// Mirrors `Params` in `overlap.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    s: u32,
    first: u32,
    item_base: u32,
    items: u32,
    tiles: u32,
    groups: u32,
    smooth_nr: f32,
    smooth_dr: f32,
    alpha: f32,
    beta: f32,
    scale: f32,
    stride: u32,
    _pad: [u32; 2],
}

/// Positions per invocation of `partials` (`PER` in `overlap.wgsl`).
const PER: usize = 4;

impl Overlap {
    /// Records the loss (and the gradient `input`) into `encoder`.
    ///
    /// # Errors
    /// Bad options, shapes, types or weights; wgpu errors. A class index outside `[0, C)` is
    /// reported by [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &OverlapInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Overlap::record`], and [`crate::Error::Value`] naming the item of the first bad
    /// class index.
    pub fn run(&self, engine: &Engine, inputs: &OverlapInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for Overlap {
    type Inputs<'a> = OverlapInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &OverlapInputs<'_>,
    ) -> Result<LossOutput> {
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        let layout = self.check(&Args {
            input: inputs.input.arg(),
            target: inputs.target.arg(),
            weight: inputs.weight,
            scalar_upstream,
            per_item_upstream,
        })?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, &layout))
    }
}

impl Overlap {
    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &OverlapInputs<'_>,
        layout: &Layout,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let (n, c, s) = (layout.n, layout.c, layout.s);
        let input_type = inputs.input.dtype();
        let grad_type = self.grad_dtype.unwrap_or(input_type);
        let wg = engine.workgroup_size();
        let tiles = s.div_ceil(wg as usize * PER);
        let groups = layout.groups();
        let stride = groups.next_multiple_of(64);
        let work = rec.tensor(&[3 * layout.kept() * n * tiles], DType::F32)?;
        let stats = rec.tensor(&[3 * stride], DType::F32)?;
        let status = rec.flag_with_scratch(0)?;
        let unused = rec.unused()?;
        let weight = match inputs.weight {
            Some(w) => {
                let bits: Vec<i32> = w.iter().map(|v| v.to_bits() as i32).collect();
                rec.constant_i32(&bits, &[c])?.binding()
            }
            None => unused.clone(),
        };
        let grad = match self.gradient {
            true => Some(rec.tensor(inputs.input.shape(), grad_type)?),
            false => None,
        };
        let denom = match self.reduction {
            Reduction::Mean => groups as f64,
            _ => 1.0,
        };
        let upstream = match inputs.upstream {
            Upstream::Scalar(g) => g as f64,
            _ => 1.0,
        };
        let (alpha, beta) = match self.kind {
            OverlapKind::Tversky { alpha, beta } => (alpha, beta),
            OverlapKind::Dice { .. } => (0.0, 0.0),
        };
        let key = |entry| KernelKey {
            module: module(input_type, grad_type),
            entry,
            overrides: vec![
                ("WG_SIZE", wg),
                (
                    "ACTIVATION",
                    match self.activation {
                        Activation::None => 0,
                        Activation::Sigmoid => 1,
                        Activation::Softmax => 2,
                    },
                ),
                ("INDICES", layout.indices as u32),
                (
                    "TVERSKY",
                    matches!(self.kind, OverlapKind::Tversky { .. }) as u32,
                ),
                ("SQUARED", squared(self.kind) as u32),
                (
                    "JACCARD",
                    matches!(self.kind, OverlapKind::Dice { jaccard: true, .. }) as u32,
                ),
                ("BATCH", self.batch as u32),
                ("WEIGHTED", inputs.weight.is_some() as u32),
                (
                    "UPSTREAM_PER_GROUP",
                    matches!(inputs.upstream, Upstream::PerItem(_)) as u32,
                ),
            ],
        };
        let params = |rec: &mut Recorder<'_>, items: &std::ops::Range<usize>| {
            rec.params(&Params {
                n: items.len() as u32,
                c: c as u32,
                s: s as u32,
                first: layout.first as u32,
                item_base: items.start as u32,
                items: n as u32,
                tiles: tiles as u32,
                groups: groups as u32,
                smooth_nr: self.smooth_nr,
                smooth_dr: self.smooth_dr,
                alpha,
                beta,
                scale: (upstream / denom) as f32,
                stride: stride as u32,
                _pad: [0; 2],
            })
        };
        let item_len = c * s;
        let bytes = |d: DType| (item_len as u64) * d.size();
        // Items by windows: input, one-hot targets and gradient are C·S values each.
        let windows = engine.row_windows_for(
            n,
            &[
                bytes(input_type),
                bytes(DType::F32),
                bytes(grad_type),
                s as u64 * 4,
            ],
            false,
        )?;
        let targets = |w: &std::ops::Range<usize>| match layout.indices {
            true => (
                unused.clone(),
                inputs.target.window(w.start * s, w.len() * s),
            ),
            false => (
                inputs.target.window(w.start * item_len, w.len() * item_len),
                unused.clone(),
            ),
        };
        let discarded = rec.discarded()?;
        for w in &windows {
            let (one_hot, labels) = targets(w);
            let bindings = vec![
                params(rec, w),
                one_hot,
                labels,
                weight.clone(),
                work.binding(),
                stats.binding(),
                status.binding(),
                inputs.input.window(w.start * item_len, w.len() * item_len),
                discarded.clone(),
            ];
            rec.dispatch(key("partials"), bindings, (w.len() * tiles) as u32)?;
        }
        let everything = 0..n;
        let bindings = vec![
            params(rec, &everything),
            match inputs.upstream {
                Upstream::PerItem(u) => u.binding(),
                _ => unused.clone(),
            },
            unused.clone(),
            weight.clone(),
            work.binding(),
            stats.binding(),
            status.binding(),
            unused.clone(),
            discarded.clone(),
        ];
        rec.dispatch(key("groups"), bindings, groups.div_ceil(wg as usize) as u32)?;
        if let Some(g) = &grad {
            for w in &windows {
                let (one_hot, labels) = targets(w);
                let bindings = vec![
                    params(rec, w),
                    one_hot,
                    labels,
                    weight.clone(),
                    work.binding(),
                    stats.binding(),
                    status.binding(),
                    inputs.input.window(w.start * item_len, w.len() * item_len),
                    g.window(w.start * item_len, w.len() * item_len),
                ];
                let positions = w.len() * s;
                rec.dispatch(
                    key("gradients"),
                    bindings,
                    positions.div_ceil(wg as usize) as u32,
                )?;
            }
        }
        let loss = match self.reduction {
            Reduction::None => {
                let loss = rec.tensor(&layout.group_shape(), DType::F32)?;
                rec.copy((&stats, 2 * stride), (&loss, 0), groups);
                loss
            }
            _ => {
                let loss = rec.tensor(&[], DType::F32)?;
                rec.sum(
                    (&stats, 2 * stride),
                    groups,
                    SumOf::scaled((1.0 / denom) as f32),
                    &loss,
                )?;
                loss
            }
        };
        Ok(LossOutput {
            loss,
            grads: grad.into_iter().map(|g| ("input", g)).collect(),
            status: layout.indices.then(|| Status {
                flag: status,
                input: "target",
                values: inputs.target.clone(),
                row_len: s,
                row_starts: None,
                reason: index_reason(c),
            }),
            rows: Vec::new(),
        })
    }
}
