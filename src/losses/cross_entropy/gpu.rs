//! Cross-entropy and softmax focal loss on the GPU: the row kernel `cross_entropy.wgsl`, its
//! I/O variants, and the host side that checks inputs and launches it.

use super::{Args, CrossEntropy, SoftmaxFocal};
use crate::core::{LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::{LossOutput, Status};
use crate::gpu::plan::{check_disjoint, GpuLoss};
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{
    float_digit, Access, FloatView, ShaderModule, FLOATS, HALF, MATH, WORKGROUP_SUM,
};
use crate::gpu::tensor::{DType, Tensor};

const SOURCE: &str = include_str!("cross_entropy.wgsl");
const ROW_MERGE_BARRIER: &str = include_str!("row_merge_barrier.wgsl");
const ROW_MERGE_SUBGROUP: &str = include_str!("row_merge_subgroup.wgsl");

/// How the row kernel reads logits and writes their gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RowIo {
    /// The gradient overwrites the logits (else it goes to its own buffer).
    pub in_place: bool,
    /// How rows are read and written.
    pub lanes: Lanes,
    /// Element type of the logits.
    pub logits: DType,
    /// Element type of the gradient (the logits' when in place).
    pub grad: DType,
    /// Per-row statistics (`row_lse`, `row_correct`) are written, at the last two bindings.
    pub row_stats: bool,
    /// Rows are merged across invocations with subgroup shuffles (else through workgroup
    /// memory): see [`Engine::subgroup_ops`].
    pub subgroups: bool,
}

/// Element access of the row kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lanes {
    /// One element at a time (tiny problems of fewer than 4 elements per window).
    Scalar,
    /// Chunks of 4 elements; C is a multiple of 4, so every row starts on a chunk.
    Vec4,
    /// Chunks of 4 elements over rows that do not start on one: the partial chunks at a
    /// row's ends go through scalar views of the same buffers (bindings 8–10).
    Ragged,
}

impl Lanes {
    const ALL: [Lanes; 3] = [Lanes::Scalar, Lanes::Vec4, Lanes::Ragged];
}

impl RowIo {
    fn variant(self) -> u32 {
        let io = (float_digit(self.logits) * 3 + float_digit(self.grad)) * 2 + self.in_place as u32;
        ((io * 3 + self.lanes as u32) * 2 + self.row_stats as u32) * 2 + self.subgroups as u32
    }

    fn from_variant(v: u32) -> Self {
        Self {
            subgroups: v % 2 == 1,
            row_stats: (v / 2) % 2 == 1,
            lanes: Lanes::ALL[(v / 4) as usize % 3],
            in_place: (v / 12) % 2 == 1,
            grad: FLOATS[(v / 24) as usize % 3],
            logits: FLOATS[(v / 72) as usize],
        }
    }

    /// The module of this variant.
    pub(crate) fn module(self) -> ShaderModule {
        ShaderModule {
            name: "cross_entropy",
            variant: self.variant(),
            source: |v| {
                let io = Self::from_variant(v);
                let merge = match io.subgroups {
                    true => ROW_MERGE_SUBGROUP,
                    false => ROW_MERGE_BARRIER,
                };
                [MATH, WORKGROUP_SUM, HALF, &io.header(), merge, SOURCE].join("\n")
            },
            bindings: |v| {
                use Access::*;
                let io = Self::from_variant(v);
                let ragged = io.lanes == Lanes::Ragged;
                let mut b = vec![Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite];
                match (io.in_place, ragged) {
                    (true, false) => b.push(ReadWrite),
                    (true, true) => b.extend([ReadWrite, ReadWrite]),
                    (false, false) => b.extend([Read, ReadWrite]),
                    (false, true) => b.extend([Read, ReadWrite, Read, ReadWrite]),
                }
                // The per-row statistics, last (only where written: WebGPU's baseline is 8
                // storage buffers per stage).
                if io.row_stats {
                    b.extend([ReadWrite, ReadWrite]);
                }
                b
            },
            entry_points: &["main", "denominator"],
        }
    }

    /// Bindings before the per-row statistics (`row_lse`, `row_correct`).
    fn io_bindings(self) -> u32 {
        8 + !self.in_place as u32
            + (self.lanes == Lanes::Ragged) as u32 * (2 - self.in_place as u32)
    }

    /// WGSL declaring the logits (binding 7), the gradient (binding 8 unless in place), their
    /// scalar views (ragged), the per-row statistics after them, and the row access
    /// functions the kernel uses.
    fn header(self) -> String {
        let chunked = self.lanes != Lanes::Scalar;
        let ragged = self.lanes == Lanes::Ragged;
        let dst = if self.in_place { "logits" } else { "grad" };
        let logits_access = if self.in_place {
            Access::ReadWrite
        } else {
            Access::Read
        };
        // Chunk views (vec4 mode) or the only views (scalar mode) at bindings 7 and 8; the
        // scalar views of ragged rows after them.
        let mut decls = String::new();
        let mut fns = String::new();
        let mut view = |binding: u32, name: &str, dtype: DType, access: Access, chunk: bool| {
            let view = FloatView {
                name,
                dtype,
                access,
            };
            decls += &view.declare(binding, chunk);
            fns += &view.functions(chunk);
        };
        view(7, "logits", self.logits, logits_access, chunked);
        if !self.in_place {
            view(8, "grad", self.grad, Access::ReadWrite, chunked);
        }
        if ragged {
            let at = if self.in_place { 8 } else { 9 };
            view(at, "logits_s", self.logits, logits_access, false);
            if !self.in_place {
                view(10, "grad_s", self.grad, Access::ReadWrite, false);
            }
        }
        let stats = self.io_bindings();
        decls += &match self.row_stats {
            true => format!(
                "const ROW_STATS: bool = true;\n\
                 @group(0) @binding({stats}) var<storage, read_write> row_lse: array<f32>;\n\
                 @group(0) @binding({}) var<storage, read_write> row_correct: array<f32>;\n\
                 fn write_row_stats(row: u32, lse: f32, correct: bool) {{\n\
                 \x20   row_lse[row] = lse;\n\
                 \x20   row_correct[row] = select(0.0, 1.0, correct);\n\
                 }}\n",
                stats + 1
            ),
            false => "const ROW_STATS: bool = false;\n\
                      fn write_row_stats(row: u32, lse: f32, correct: bool) {}\n"
                .to_string(),
        };
        let access_fns = if ragged {
            format!(
                "fn row_first_chunk(row: u32) -> u32 {{ return (row * params.c) / 4u; }}\n\
                 fn row_chunks(row: u32) -> u32 {{\n\
                     let lo = row * params.c;\n\
                     return (lo + params.c + 3u) / 4u - lo / 4u;\n\
                 }}\n\
                 fn whole_chunk(row: u32, j: u32) -> bool {{\n\
                     let lo = row * params.c;\n\
                     return j * 4u >= lo && j * 4u + 4u <= lo + params.c;\n\
                 }}\n\
                 fn load_row_chunk(row: u32, j: u32) -> vec4<f32> {{\n\
                     if (whole_chunk(row, j)) {{ return load4_logits(j); }}\n\
                     let lo = row * params.c;\n\
                     var v = vec4<f32>(0.0);\n\
                     for (var e = 0u; e < 4u; e++) {{\n\
                         let at = j * 4u + e;\n\
                         if (at >= lo && at < lo + params.c) {{ v[e] = load_logits_s(at); }}\n\
                     }}\n\
                     return v;\n\
                 }}\n\
                 fn store_row_chunk(row: u32, j: u32, g: vec4<f32>) {{\n\
                     if (whole_chunk(row, j)) {{ store4_{dst}(j, g); return; }}\n\
                     let lo = row * params.c;\n\
                     for (var e = 0u; e < 4u; e++) {{\n\
                         let at = j * 4u + e;\n\
                         if (at >= lo && at < lo + params.c) {{ store_{dst}_s(at, g[e]); }}\n\
                     }}\n\
                 }}\n\
                 fn first_logit(row: u32) -> f32 {{ return load_logits_s(row * params.c); }}\n"
            )
        } else if chunked {
            format!(
                "fn row_first_chunk(row: u32) -> u32 {{ return row * (params.c / 4u); }}\n\
                 fn row_chunks(row: u32) -> u32 {{ return params.c / 4u; }}\n\
                 fn load_row_chunk(row: u32, j: u32) -> vec4<f32> {{ return load4_logits(j); }}\n\
                 fn store_row_chunk(row: u32, j: u32, g: vec4<f32>) {{ store4_{dst}(j, g); }}\n\
                 fn first_logit(row: u32) -> f32 {{ return load4_logits(row_first_chunk(row)).x; }}\n"
            )
        } else {
            format!(
                "fn row_first_chunk(row: u32) -> u32 {{ return row * params.c; }}\n\
                 fn row_chunks(row: u32) -> u32 {{ return params.c; }}\n\
                 fn load_row_chunk(row: u32, j: u32) -> vec4<f32> {{\n\
                     return vec4<f32>(load_logits(j), 0.0, 0.0, 0.0);\n\
                 }}\n\
                 fn store_row_chunk(row: u32, j: u32, g: vec4<f32>) {{ store_{dst}(j, g.x); }}\n\
                 fn first_logit(row: u32) -> f32 {{ return load_logits(row * params.c); }}\n"
            )
        };
        let lanes = if chunked { 4 } else { 1 };
        format!(
            "const LANES: u32 = {lanes}u;\n\
             const RAGGED: bool = {ragged};\n\
             {decls}{fns}\
             // The offset of chunk j's first lane from the start of the row.\n\
             fn chunk_start(row: u32, j: u32) -> i32 {{ return i32(j * LANES) - i32(row * params.c); }}\n\
             {access_fns}"
        )
    }
}

/// Every variant of the row kernel, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    (0..216)
        .map(RowIo::from_variant)
        .filter(|io| !io.in_place || io.logits == io.grad)
        .map(RowIo::module)
        .collect()
}

/// The target of a cross-entropy call.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices, i32 `[N]`.
    Classes(&'a Tensor),
    /// Class probabilities, f32 `[N, C]`.
    Probabilities(&'a Tensor),
}

/// The device inputs of one cross-entropy call.
#[derive(Debug, Clone, Copy)]
pub struct CrossEntropyInputs<'a> {
    /// f32 `[N, C]`.
    pub logits: &'a Tensor,
    /// Class indices or probabilities.
    pub target: Target<'a>,
    /// Optional per-class weight, f32 `[C]`.
    pub weight: Option<&'a Tensor>,
    /// Upstream gradient (default ones).
    pub upstream: Upstream<'a, Tensor>,
    /// Where to write the gradient, f32 `[N, C]` (default: a new tensor). Reusing one
    /// buffer across calls saves an allocation and its zero-fill per call.
    pub grad_out: Option<&'a Tensor>,
}

impl<'a> CrossEntropyInputs<'a> {
    /// Logits and target, no weight, upstream gradient of ones.
    pub fn new(logits: &'a Tensor, target: Target<'a>) -> Self {
        Self {
            logits,
            target,
            weight: None,
            upstream: Upstream::Ones,
            grad_out: None,
        }
    }

    /// Writes the gradient into `grad` instead of a new tensor.
    pub fn grad_out(mut self, grad: &'a Tensor) -> Self {
        self.grad_out = Some(grad);
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

/// What a caller that splits one batch into several row-kernel calls (fused linear
/// cross-entropy, a chunk of rows at a time) shares between them.
#[derive(Debug, Default)]
pub(crate) struct Batch<'a> {
    /// The mean's denominator over the whole batch, f32 `[1]`: gradients are scaled by it
    /// (with any reduction) and no denominator pass runs.
    pub denominator: Option<&'a Tensor>,
    /// Where the per-row losses go, instead of a new tensor.
    pub loss_rows: Option<Tensor>,
    /// Run the denominator pass alone (which also checks every class target) and return
    /// the mean's denominator as the loss; the logits are not read.
    pub denominator_only: bool,
    /// Where each row's log-sum-exp and its 0/1 "argmax is the target" go (`[n]` each).
    pub row_stats: Option<(Tensor, Tensor)>,
}

/// Mirrors `Params` in `cross_entropy.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct CeParams {
    pub n: u32,
    pub c: u32,
    pub row_base: u32,
    pub flags: u32,
    pub ignore_index: i32,
    pub smoothing: f32,
    pub z_loss: f32,
    pub softcap: f32,
    pub grad_output: f32,
    pub denom: f32,
    pub gamma: f32,
    pub block: u32,
    pub group_base: u32,
    pub splits: u32,
    pub _pad: u32,
}

const DENOM_FROM_BUFFER: u32 = 4;
const UPSTREAM_PER_ROW: u32 = 8;
const WANT_GRAD: u32 = 16;

/// Invocations per row: a power of two up to the workgroup size, with about `per_thread`
/// elements each. Software adapters run a workgroup's invocations in turn and pay for each
/// barrier, so they get long runs per invocation and many rows per workgroup.
fn row_threads(engine: &Engine, c: usize) -> u32 {
    let per_thread = if engine.gpu_layout() { 16 } else { 1024 };
    (c.div_ceil(per_thread).next_power_of_two() as u32).min(engine.workgroup_size())
}

/// Chunks of a row one invocation can keep in registers between the passes (the kernel's
/// `ROW_CACHE`).
const ROW_CACHE: usize = 16;

/// The most chunks of a row one invocation reads, ⌈⌈chunks / teams⌉ / TEAM⌉, where that is
/// at most ROW_CACHE, so that an unsplit row stays in registers between the passes; else 0.
fn cached_steps(engine: &Engine, lanes: Lanes, c: usize) -> usize {
    let threads = row_threads(engine, c);
    let team = engine.subgroup_width().min(threads) as usize;
    let row_chunks = match lanes {
        Lanes::Vec4 => c / 4,
        Lanes::Ragged => c / 4 + 2,
        Lanes::Scalar => c,
    };
    match row_chunks.div_ceil(threads as usize / team).div_ceil(team) {
        steps if steps <= ROW_CACHE => steps,
        _ => 0,
    }
}

/// How many times a call reads each logit of N rows of C classes on this engine: once where
/// rows stay on chip between the passes, else twice (for the benchmark's byte counts).
#[cfg(feature = "cli")]
pub(crate) fn logit_reads(engine: &Engine, n: usize, c: usize) -> usize {
    let rows_per_group = (engine.workgroup_size() / row_threads(engine, c)) as usize;
    let lanes = match c.is_multiple_of(4) {
        true => Lanes::Vec4,
        false => Lanes::Ragged,
    };
    let split = row_splits(engine, n.div_ceil(rows_per_group), c) > 1;
    match !split && cached_steps(engine, lanes, c) > 0 {
        true => 1,
        false => 2,
    }
}

/// Where the split rows' states start in the denominator buffer (a 16-byte boundary).
const STATE_BASE: usize = 4;

/// Workgroups per row: enough that few rows still make about 256 workgroups on a GPU
/// (H100-class parts have 132 multiprocessors) or 8 on a CPU adapter (one thread runs a
/// workgroup at a time; splitting further only adds the merge: 64×32000 took 1.12× as long
/// on lavapipe split 7 ways), each split at least 4096 classes.
fn row_splits(engine: &Engine, row_groups: usize, c: usize) -> usize {
    const MIN_CLASSES: usize = 4096;
    let fill = if engine.gpu_layout() { 256 } else { 8 };
    if row_groups >= fill {
        return 1;
    }
    fill.div_ceil(row_groups.max(1)).min(c / MIN_CLASSES).max(1)
}

impl CrossEntropy {
    /// Checks the inputs' types and shapes against each other; returns (N, C).
    fn check_inputs(&self, inputs: &CrossEntropyInputs<'_>) -> Result<(usize, usize)> {
        let (target, probabilities) = match inputs.target {
            Target::Classes(t) => (t, false),
            Target::Probabilities(t) => (t, true),
        };
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        let (n, c) = self.check(&Args {
            logits: inputs.logits.arg(),
            target: target.arg(),
            probabilities,
            weight: inputs.weight.map(Tensor::arg),
            scalar_upstream,
            per_item_upstream,
        })?;
        if let Some(g) = inputs.grad_out {
            let dtype = self.grad_dtype_for(inputs.logits.dtype());
            g.arg().expect("grad_out", &[n, c], dtype)?;
            if self.in_place || !self.gradient {
                return Err(Error::Option {
                    option: "grad_out",
                    value: "given".into(),
                    reason: "conflicts with in_place and with gradient(false)",
                });
            }
            let mut read = vec![("logits", inputs.logits), ("target", target)];
            read.extend(inputs.weight.map(|w| ("weight", w)));
            if let Upstream::PerItem(u) = inputs.upstream {
                read.push(("upstream", u));
            }
            check_disjoint(&[("grad_out", g)], &read)?;
        }
        Ok((n, c))
    }

    /// Records the loss (and gradient) into `encoder`: a one-off [`Plan`](crate::Plan).
    /// Submit the encoder, then read the results with [`Engine::read_output`] (which also
    /// reports invalid targets) or use the device tensors directly; call
    /// [`Engine::check_status`] to validate targets.
    ///
    /// # Errors
    /// Invalid options or shapes ([`Error::Option`], [`Error::Shape`], [`Error::DType`],
    /// [`Error::Empty`]), sizes past the adapter's limits, wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &CrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records checked inputs. `batch` lets a caller that splits one batch into several
    /// calls share the mean's denominator and the per-row losses (see [`Batch`]).
    pub(crate) fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &CrossEntropyInputs<'_>,
        n: usize,
        c: usize,
        batch: Batch<'_>,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let wg = engine.workgroup_size();
        let threads = row_threads(engine, c);
        let team = engine.subgroup_width().min(threads);
        let rows_per_group = (wg / threads) as usize;
        let probs = matches!(inputs.target, Target::Probabilities(_));
        let target = match inputs.target {
            Target::Classes(t) | Target::Probabilities(t) => t,
        };
        let grad_dtype = self.grad_dtype_for(inputs.logits.dtype());
        let windows = engine.row_windows_for(
            n,
            &[
                c as u64 * inputs.logits.dtype().size(),
                c as u64 * grad_dtype.size(),
            ],
            true,
        )?;

        let loss_rows = match batch.loss_rows {
            Some(rows) => rows,
            None => rec.tensor(&[n], DType::F32)?,
        };
        let loss = match self.reduction {
            Reduction::None => loss_rows.clone(),
            _ => rec.tensor(&[], DType::F32)?,
        };
        let grad = match (self.gradient && !batch.denominator_only, self.in_place) {
            (false, _) => None,
            (true, true) => Some(inputs.logits.clone()),
            (true, false) => match inputs.grad_out {
                Some(g) => Some(g.clone()),
                None => Some(rec.tensor(&[n, c], grad_dtype)?),
            },
        };
        let status = rec.zeros(&[1], DType::I32)?;
        let unused = rec.unused()?;
        // The mean's denominator: one partial per block of rows, summed when there are more.
        let block = engine.single_pass_sum();
        let blocks: Vec<usize> = windows.iter().map(|w| w.len().div_ceil(block)).collect();
        let total_blocks: usize = blocks.iter().sum();
        // Few rows of many classes are split across workgroups so they still fill a GPU.
        let row_groups: usize = windows
            .iter()
            .map(|w| w.len().div_ceil(rows_per_group))
            .sum();
        let splits = row_splits(engine, row_groups, c);
        // [0]: the denominator; from STATE_BASE: the split rows' pass-1 states.
        let state_len = if splits > 1 {
            STATE_BASE + 8 * n * splits
        } else {
            1
        };
        let denom = match batch.denominator {
            Some(d) if splits == 1 => d.clone(),
            _ => rec.tensor(&[state_len], DType::F32)?,
        };
        let partial_denoms = match total_blocks {
            1 => denom.clone(),
            _ => rec.tensor(&[total_blocks], DType::F32)?,
        };

        let denom_from_buffer = (self.reduction == Reduction::Mean || batch.denominator_only)
            && !probs
            || batch.denominator.is_some();
        let flags = [
            (
                UPSTREAM_PER_ROW,
                matches!(inputs.upstream, Upstream::PerItem(_)),
            ),
            (WANT_GRAD, grad.is_some()),
            (DENOM_FROM_BUFFER, denom_from_buffer),
        ]
        .into_iter()
        .filter(|&(_, on)| on)
        .fold(0, |flags, (flag, _)| flags | flag);
        let host_denom = match self.reduction {
            Reduction::Mean if probs => n as f32,
            _ => 1.0,
        };
        let grad_output = match inputs.upstream {
            Upstream::Scalar(g) => g,
            _ => 1.0,
        };

        // Rows as vec4 chunks whenever every window holds at least one whole vec4.
        let lanes = match c.is_multiple_of(4) {
            true => Lanes::Vec4,
            false if windows.iter().all(|w| w.len() * c >= 4) => Lanes::Ragged,
            false => Lanes::Scalar,
        };
        let io = RowIo {
            in_place: self.in_place && grad.is_some(),
            lanes,
            logits: inputs.logits.dtype(),
            grad: grad_dtype,
            row_stats: batch.row_stats.is_some(),
            subgroups: engine.subgroup_ops(),
        };
        let module = io.module();
        let cached_steps = match splits {
            1 => cached_steps(engine, lanes, c),
            _ => 0,
        };
        // The smallest subgroup any pipeline can get (the adapter's range, and the probe).
        let min_subgroup = match io.subgroups {
            true => engine
                .probed_subgroup_size()
                .map_or(0, |p| p.min(engine.adapter_info().subgroup_min_size)),
            false => 0,
        };
        let key = |entry, threads, phase| KernelKey {
            module,
            entry,
            overrides: vec![
                ("PHASE", phase),
                ("WG_SIZE", wg),
                ("ROW_THREADS", threads),
                ("TEAM", team),
                ("PROBS", probs as u32),
                ("WEIGHTED", inputs.weight.is_some() as u32),
                ("SUMS", (probs || self.label_smoothing > 0.0) as u32),
                ("CAPPED", self.softcap.is_some() as u32),
                ("FOCAL", self.focal.is_some() as u32),
                ("CACHED_STEPS", cached_steps as u32),
                ("MIN_SUBGROUP", min_subgroup),
            ],
        };
        let row_elems = if probs { c } else { 1 };
        let stats_window = |pre_pass: bool, start: usize, rows: usize| match &batch.row_stats {
            Some(t) if !pre_pass => [t.0.window(start, rows), t.1.window(start, rows)],
            _ => [unused.clone(), unused.clone()],
        };
        let launch = |entry, phase: u32, rec: &mut Recorder<'_>| -> Result<()> {
            for (i, w) in windows.iter().enumerate() {
                let rows = w.len();
                let pre_pass = entry == "denominator";
                let params = rec.params(&CeParams {
                    n: rows as u32,
                    c: c as u32,
                    row_base: w.start as u32,
                    flags,
                    ignore_index: self.ignore_index,
                    smoothing: self.label_smoothing,
                    z_loss: self.z_loss,
                    softcap: self.softcap.unwrap_or(1.0),
                    grad_output,
                    denom: host_denom,
                    gamma: self.focal.unwrap_or(0.0),
                    block: block as u32,
                    group_base: blocks[..i].iter().sum::<usize>() as u32,
                    splits: splits as u32,
                    _pad: 0,
                });
                let mut bindings = vec![
                    params,
                    target.window(w.start * row_elems, rows * row_elems),
                    inputs.weight.map_or(unused.clone(), Tensor::binding),
                    match inputs.upstream {
                        Upstream::PerItem(t) => t.window(w.start, rows),
                        _ => unused.clone(),
                    },
                    if pre_pass {
                        partial_denoms.binding()
                    } else {
                        denom.binding()
                    },
                    loss_rows.window(w.start, rows),
                    status.binding(),
                    // The denominator pass reads no logits (a denominator-only call has none).
                    if pre_pass {
                        unused.clone()
                    } else {
                        inputs.logits.window(w.start * c, rows * c)
                    },
                ];
                let grad_window = match &grad {
                    Some(g) if !pre_pass => g.window(w.start * c, rows * c),
                    _ => unused.clone(),
                };
                if !io.in_place {
                    bindings.push(grad_window.clone());
                }
                if io.lanes == Lanes::Ragged {
                    // The scalar views of the same ranges.
                    bindings.push(bindings[7].clone());
                    if !io.in_place {
                        bindings.push(grad_window);
                    }
                }
                if io.row_stats {
                    bindings.extend(stats_window(pre_pass, w.start, rows));
                }
                let (groups, threads) = match (pre_pass, phase) {
                    (true, _) => (blocks[i], wg),
                    (false, 0) => (rows.div_ceil(rows_per_group), threads),
                    (false, _) => (rows.div_ceil(rows_per_group) * splits, threads),
                };
                rec.dispatch(key(entry, threads, phase), bindings, groups as u32)?;
            }
            Ok(())
        };

        if denom_from_buffer && batch.denominator.is_none() {
            launch("denominator", 0, rec)?;
            if total_blocks > 1 {
                rec.sum((&partial_denoms, 0), total_blocks, SumOf::PLAIN, &denom)?;
            }
        }
        let status = (!probs).then(|| Status {
            flag: status.clone(),
            input: "target",
            values: target.clone(),
            row_len: 1,
            row_starts: None,
            reason: format!(
                "class index outside [0, {c}) and not ignore_index {}",
                self.ignore_index
            ),
        });
        if batch.denominator_only {
            return Ok(LossOutput {
                loss: denom.prefix(&[1]),
                grads: Vec::new(),
                status,
                rows: Vec::new(),
            });
        }
        if let Some(d) = batch.denominator.filter(|_| splits > 1) {
            rec.copy((d, 0), (&denom, 0), 1);
        }
        if splits > 1 {
            launch("main", 1, rec)?;
            launch("main", 2, rec)?;
        } else {
            launch("main", 0, rec)?;
        }
        let sum = match self.reduction {
            Reduction::None => None,
            Reduction::Sum => Some(SumOf::PLAIN),
            Reduction::Mean if probs => Some(SumOf::scaled(1.0 / n as f32)),
            Reduction::Mean | Reduction::BatchMean => Some(SumOf {
                scale: 1.0,
                divisor: denom_from_buffer.then_some(&denom),
            }),
        };
        if let Some(how) = sum {
            rec.sum((&loss_rows, 0), n, how, &loss)?;
        }
        Ok(LossOutput {
            loss,
            grads: grad.into_iter().map(|g| ("logits", g)).collect(),
            status,
            rows: Vec::new(),
        })
    }

    /// Records, submits, waits and reads back: the one-call convenience.
    ///
    /// # Errors
    /// As [`CrossEntropy::record`], plus [`Error::Value`] for a class index outside `[0, C)`
    /// that is not `ignore_index` (naming the first such row and its value).
    pub fn run(&self, engine: &Engine, inputs: &CrossEntropyInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for CrossEntropy {
    type Inputs<'a> = CrossEntropyInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &CrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        let (n, c) = self.check_inputs(inputs)?;
        rec.engine()
            .scoped(|| self.record_checked(rec, inputs, n, c, Batch::default()))
    }
}

impl SoftmaxFocal {
    /// Records the loss (and gradient) into `encoder`; α is `inputs.weight`.
    ///
    /// # Errors
    /// As [`CrossEntropy::record`]; probability targets are an [`Error::DType`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &CrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`SoftmaxFocal::record`], plus [`Error::Value`] for a target out of range.
    pub fn run(&self, engine: &Engine, inputs: &CrossEntropyInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for SoftmaxFocal {
    type Inputs<'a> = CrossEntropyInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &CrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        self.row_kernel().record_into(rec, inputs)
    }
}
