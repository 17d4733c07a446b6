//! InfoNCE losses and mined triplets on the GPU, on the tiled all-pairs kernels of
//! `shaders/pairwise.wgsl`. f64 twins: `reference::info_nce`, `reference::mined_triplet`.
//!
//! InfoNCE keeps device memory O(N·D): rows are normalized once, each similarity tile is
//! computed in workgroup memory, reduced into per-row log-sum-exps, and recomputed in the
//! backward pass. Mined triplets store the N×N distance matrix and an N×N matrix of
//! integer pair weights, each split into row windows that fit one binding.

use super::{Args, Distance, InfoNce, MinedTriplet, Mining, NceKind};
use crate::core::{LossValues, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::LossOutput;
use crate::gpu::plan::GpuLoss;
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{Access, ShaderModule, MATH};
use crate::gpu::tensor::{Binding, DType, Tensor};

/// The kernels' module.
pub(crate) const MODULE: ShaderModule = ShaderModule {
    name: "pairwise",
    variant: 0,
    source: |_| [MATH, include_str!("pairwise.wgsl")].join("\n"),
    bindings: |_| {
        use Access::*;
        let mut b = vec![Uniform];
        b.extend([Read; 10]);
        b.extend([ReadWrite; 3]);
        b
    },
    entry_points: &[
        "normalize",
        "finish",
        "nce_forward",
        "nce_merge",
        "nce_backward",
        "distances",
        "mine",
        "mined_backward",
    ],
};

/// The family's modules, for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    vec![MODULE]
}

/// Key rows of a tile (`KT`); its query rows are 8 per block row of an invocation
/// (`BLOCK_ROWS`, 8 unless `nce_backward` needs the registers).
pub(super) const KEY_TILE: usize = 64;
pub(super) const BLOCK_ROWS: usize = 8;
/// The tile kernels' depth chunk (`KC`), and the most chunks of a gradient row that
/// `nce_backward` keeps in registers (rows of up to 256 dimensions).
const KC: usize = 32;
const MAX_GRAD_CHUNKS: usize = 8;
/// The `vec4` registers `nce_backward` holds through a key tile where it keeps the gradient
/// rows: those rows (block rows × chunks) and the score block (2 × block rows). 36, what
/// the 4×4 blocks held at 8 chunks, keeps an invocation clear of spilling on GPUs with 255
/// registers per thread (with the key columns and addresses beside them).
const BACKWARD_VEC4S: usize = 36;

/// Query rows of a tile at `block_rows` rows per invocation.
pub(super) fn query_tile(block_rows: usize) -> usize {
    8 * block_rows
}

/// `nce_backward`'s shape for rows of `dim`: (depth chunks of the gradient rows kept in
/// registers across key tiles and written once, or 0 where they are added into memory per
/// key half; block rows per invocation): 8 block rows up to 2 chunks, then fewer, down to
/// 3 at 8 chunks, within [`BACKWARD_VEC4S`].
pub(super) fn backward_blocking(dim: usize) -> (usize, usize) {
    match dim.div_ceil(KC) {
        chunks if chunks <= MAX_GRAD_CHUNKS => {
            (chunks, (BACKWARD_VEC4S / (chunks + 2)).min(BLOCK_ROWS))
        }
        _ => (0, BLOCK_ROWS),
    }
}
/// Per-row statistics are stored in planes at multiples of this many elements, so each
/// plane can be bound at an offset every adapter accepts (256 bytes).
const PLANE_ALIGN: usize = 64;
/// Bytes of mining's sort scratch (one window of sorted rows) where bindings allow more.
const SORT_SCRATCH: u64 = 64 << 20;
/// Positives the mining kernel sorts in workgroup memory (`LIST` of `pairwise.wgsl`); an
/// anchor with more sorts its whole row in the scratch.
const LISTED_POSITIVES: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    dim: u32,
    q_begin: u32,
    q_count: u32,
    k_begin: u32,
    k_count: u32,
    n: u32,
    plane: u32,
    inv_tau: f32,
    margin: f32,
    scale: f32,
    splits: u32,
    k_from: u32,
    k_to: u32,
}

/// The 13 bindings of `pairwise.wgsl` after the uniform; unused ones get scratch.
#[derive(Default)]
struct Slots {
    rows_q: Option<Binding>,
    rows_k: Option<Binding>,
    labels_q: Option<Binding>,
    labels_k: Option<Binding>,
    stats_q: Option<Binding>,
    stats_k: Option<Binding>,
    divisor: Option<Binding>,
    dist_q: Option<Binding>,
    cnt_q: Option<Binding>,
    cnt_k: Option<Binding>,
    out: Option<Binding>,
    out_stats: Option<Binding>,
    out_cnt: Option<Binding>,
}

/// Records one launch of `entry` with `groups` workgroups.
fn launch(
    rec: &mut Recorder<'_>,
    (entry, overrides): (&'static str, &[(&'static str, u32)]),
    params: Params,
    slots: Slots,
    groups: usize,
) -> Result<()> {
    let params = rec.params(&params);
    let read = rec.unused()?;
    let write = rec.discarded()?;
    let r = |s: Option<Binding>| s.unwrap_or_else(|| read.clone());
    let w = |s: Option<Binding>| s.unwrap_or_else(|| write.clone());
    let bindings = vec![
        params,
        r(slots.rows_q),
        r(slots.rows_k),
        r(slots.labels_q),
        r(slots.labels_k),
        r(slots.stats_q),
        r(slots.stats_k),
        r(slots.divisor),
        r(slots.dist_q),
        r(slots.cnt_q),
        r(slots.cnt_k),
        w(slots.out),
        w(slots.out_stats),
        w(slots.out_cnt),
    ];
    let key = KernelKey {
        module: MODULE,
        entry,
        overrides: [("WG_SIZE", 256)]
            .into_iter()
            .chain(overrides.iter().copied())
            .collect(),
    };
    rec.dispatch(key, bindings, groups as u32)
}

/// Software adapters stop a shader's loops after 65,535 iterations in all, per invocation
/// (Mesa's LP_MAX_TGSI_LOOP_ITERATIONS), silently. On them the tile kernels keep each
/// invocation to at most this many, half of that limit.
const SOFTWARE_LOOP_BUDGET: usize = 32_768;

/// Loop iterations per invocation for one block of keys a tile kernel takes, as (fixed, per
/// 32-deep chunk of the rows): `nce_backward` per 64-key tile (lavapipe stopped it between
/// 46 and 48 per chunk), `mined_backward` per 32-key half (between 33 and 35 per chunk).
const NCE_TILE_LOOPS: (usize, usize) = (64, 48);
const MINED_HALF_LOOPS: (usize, usize) = (32, 48);

/// How many key blocks of `loops` one invocation may take in one launch on a software
/// adapter (`None` elsewhere): the tile kernels' loops per block grow with the depth `dim`.
///
/// # Errors
/// [`Error::Limit`] when one block of rows of `dim` already exceeds the budget.
fn software_key_blocks(
    engine: &Engine,
    dim: usize,
    (fixed, per_chunk): (usize, usize),
) -> Result<Option<usize>> {
    if engine.adapter_info().device_type != wgpu::DeviceType::Cpu {
        return Ok(None);
    }
    let per_block = fixed + per_chunk * dim.div_ceil(KC);
    if per_block > SOFTWARE_LOOP_BUDGET {
        return Err(Error::Limit(format!(
            "rows of {dim} exceed what a software adapter runs per invocation (its loops \
             stop after 65,535 iterations); at most {} here",
            (SOFTWARE_LOOP_BUDGET - fixed) / per_chunk * KC
        )));
    }
    Ok(Some(SOFTWARE_LOOP_BUDGET / per_block))
}

/// Key ranges per query tile for the InfoNCE kernels: enough workgroups to fill a large GPU
/// (about 512: H100-class parts have 132 multiprocessors), at most one split per key tile,
/// and the splits' partial gradients in one binding of at most 1 GiB. On software adapters
/// the runs of key tiles are also kept within [`software_key_blocks`].
///
/// # Errors
/// [`Error::Limit`] when a software adapter would need more splits than memory allows, or
/// the rows are too deep for it.
pub(super) fn key_splits(
    engine: &Engine,
    queries: usize,
    keys: usize,
    (m, dim): (usize, usize),
) -> Result<usize> {
    const FILL: usize = 512;
    let key_tiles = keys.div_ceil(KEY_TILE).max(1);
    let fill = FILL.div_ceil(queries.div_ceil(query_tile(BLOCK_ROWS)).max(1));
    let room = engine.max_binding_bytes().min(1 << 30) / (m * dim * 4).max(1) as u64;
    let memory = (room as usize).max(1);
    let splits = fill.min(memory).min(key_tiles);
    let Some(tiles) = software_key_blocks(engine, dim, NCE_TILE_LOOPS)? else {
        return Ok(splits);
    };
    let needed = key_tiles.div_ceil(tiles);
    if needed > memory {
        return Err(Error::Limit(format!(
            "{m} rows of {dim} need {needed} key splits on a software adapter (its loops stop \
             after 65,535 iterations); their partial gradients exceed one binding"
        )));
    }
    Ok(splits.max(needed))
}

/// `Err` unless `t` fits one storage binding (the all-pairs kernels bind each input whole).
fn fits_one_binding(engine: &Engine, name: &'static str, t: &Tensor) -> Result<()> {
    if t.bytes() > engine.max_binding_bytes() {
        return Err(Error::Limit(format!(
            "`{name}` ({} bytes) exceeds one {}-byte binding",
            t.bytes(),
            engine.max_binding_bytes()
        )));
    }
    Ok(())
}

/// Normalized rows and norms of `rows` ([n, dim]).
fn normalized(
    rec: &mut Recorder<'_>,
    rows: &Tensor,
    (n, dim): (usize, usize),
) -> Result<(Tensor, Tensor)> {
    let unit = rec.tensor(&[n, dim], DType::F32)?;
    let norms = rec.tensor(&[n], DType::F32)?;
    let params = Params {
        dim: dim as u32,
        q_count: n as u32,
        ..Params::default()
    };
    let slots = Slots {
        rows_q: Some(rows.binding()),
        out: Some(unit.binding()),
        out_stats: Some(norms.binding()),
        ..Slots::default()
    };
    launch(rec, ("normalize", &[]), params, slots, n)?;
    Ok((unit, norms))
}

/// Records `loss = Σ loss plane / Σ count plane` (0 when the count is 0) from a statistics
/// buffer, returning the loss and the divisor.
fn mean_of_planes(
    rec: &mut Recorder<'_>,
    stats: &Tensor,
    (loss_plane, count_plane): (usize, usize),
    rows: usize,
) -> Result<(Tensor, Tensor)> {
    let divisor = rec.tensor(&[1], DType::F32)?;
    let loss = rec.tensor(&[], DType::F32)?;
    rec.sum((stats, count_plane), rows, SumOf::PLAIN, &divisor)?;
    let mean = SumOf {
        scale: 1.0,
        divisor: Some(&divisor),
    };
    rec.sum((stats, loss_plane), rows, mean, &loss)?;
    Ok((loss, divisor))
}

/// The rows of an [`InfoNce`] loss, by kind.
#[derive(Debug, Clone, Copy)]
pub enum NceRows<'a> {
    /// nt-xent: `z` [2N, D], rows i and i+N positives.
    NtXent {
        /// The two views stacked.
        z: &'a Tensor,
    },
    /// clip: `a`, `b` [N, D], row i of each a matched pair.
    Clip {
        /// First modality.
        a: &'a Tensor,
        /// Second modality.
        b: &'a Tensor,
    },
    /// supcon: `embeddings` `[N, D]` with i32 `labels` `[N]`.
    SupCon {
        /// The rows.
        embeddings: &'a Tensor,
        /// Their classes.
        labels: &'a Tensor,
    },
}

/// Device inputs of an [`InfoNce`] loss: its rows and the upstream gradient (a scalar: the
/// loss is a mean).
#[derive(Debug, Clone, Copy)]
pub struct NceInputs<'a> {
    /// The rows, by kind.
    pub rows: NceRows<'a>,
    /// Gradient from above (default ones).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> NceInputs<'a> {
    /// nt-xent's two views stacked, `z` `[2N, D]`.
    pub fn nt_xent(z: &'a Tensor) -> Self {
        NceRows::NtXent { z }.into()
    }

    /// clip's matched rows `a`, `b` `[N, D]`.
    pub fn clip(a: &'a Tensor, b: &'a Tensor) -> Self {
        NceRows::Clip { a, b }.into()
    }

    /// supcon's `embeddings` `[N, D]` and i32 `labels` `[N]`.
    pub fn supcon(embeddings: &'a Tensor, labels: &'a Tensor) -> Self {
        NceRows::SupCon { embeddings, labels }.into()
    }

    /// Sets the upstream gradient.
    pub fn upstream(mut self, upstream: Upstream<'a, Tensor>) -> Self {
        self.upstream = upstream;
        self
    }
}

impl<'a> From<NceRows<'a>> for NceInputs<'a> {
    fn from(rows: NceRows<'a>) -> Self {
        Self {
            rows,
            upstream: Upstream::Ones,
        }
    }
}

/// Device inputs of a [`MinedTriplet`] loss.
#[derive(Debug, Clone, Copy)]
pub struct MinedTripletInputs<'a> {
    /// f32 `[N, D]`.
    pub embeddings: &'a Tensor,
    /// i32 `[N]`.
    pub labels: &'a Tensor,
    /// Gradient from above (a scalar: the loss is a mean; default ones).
    pub upstream: Upstream<'a, Tensor>,
}

impl<'a> MinedTripletInputs<'a> {
    /// Embeddings and their labels, upstream gradient of ones.
    pub fn new(embeddings: &'a Tensor, labels: &'a Tensor) -> Self {
        Self {
            embeddings,
            labels,
            upstream: Upstream::Ones,
        }
    }

    /// Sets the upstream gradient.
    pub fn upstream(mut self, upstream: Upstream<'a, Tensor>) -> Self {
        self.upstream = upstream;
        self
    }
}

impl InfoNce {
    /// Records the loss (a mean over anchors) and the gradients of every input.
    ///
    /// # Errors
    /// Bad options; [`Error::Shape`] for inputs that are not `[N, D]`, differing shapes,
    /// labels not `[N]`, an odd nt-xent row count; [`Error::DType`]; inputs past one
    /// binding ([`Error::Limit`]); wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NceInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &NceRows<'_>,
        scale: f32,
    ) -> Result<LossOutput> {
        // Every loss is one set of M rows with labels: clip stacks [a; b] and pairs row i
        // with row i + N, as nt-xent does; only the candidates of each anchor differ.
        let stacked;
        let generated;
        let (rows, labels, half) = match *inputs {
            NceRows::NtXent { z } => {
                let m = z.shape()[0];
                let l: Vec<i32> = (0..m).map(|i| (i % (m / 2)) as i32).collect();
                generated = rec.constant_i32(&l, &[m])?;
                (z, &generated, m / 2)
            }
            NceRows::Clip { a, b } => {
                let (n, d) = (a.shape()[0], a.shape()[1]);
                stacked = rec.tensor(&[2 * n, d], DType::F32)?;
                rec.copy((a, 0), (&stacked, 0), a.len());
                rec.copy((b, 0), (&stacked, a.len()), b.len());
                let l: Vec<i32> = (0..2 * n).map(|i| (i % n) as i32).collect();
                generated = rec.constant_i32(&l, &[2 * n])?;
                (&stacked, &generated, n)
            }
            NceRows::SupCon { embeddings, labels } => (embeddings, labels, 0),
        };
        let (m, dim) = (rows.shape()[0], rows.shape()[1]);
        let (unit, norms) = normalized(rec, rows, (m, dim))?;
        let plane = m.next_multiple_of(PLANE_ALIGN);
        let stats = rec.tensor(&[4 * plane], DType::F32)?;
        // (queries, candidates): clip's anchors of a see the rows of b and vice versa.
        let directions = if self.kind == NceKind::Clip {
            vec![((0, half), (half, half)), ((half, half), (0, half))]
        } else {
            vec![((0, m), (0, m))]
        };
        let (q, k) = directions[0];
        let splits = key_splits(rec.engine(), q.1, k.1, (m, dim))?;
        // Each split's partial (log-sum-exp state, positives) per row, merged by nce_merge.
        let partial_stats = match splits {
            1 => None,
            _ => Some(rec.tensor(&[splits * plane * 4], DType::F32)?),
        };
        let overrides = [("EXCLUDE_SELF", (self.kind != NceKind::Clip) as u32)];
        let params =
            |(q_begin, q_count): (usize, usize), (k_begin, k_count): (usize, usize)| Params {
                dim: dim as u32,
                q_begin: q_begin as u32,
                q_count: q_count as u32,
                k_begin: k_begin as u32,
                k_count: k_count as u32,
                n: m as u32,
                plane: plane as u32,
                inv_tau: 1.0 / self.temperature,
                scale,
                splits: splits as u32,
                ..Params::default()
            };
        for &(q, k) in &directions {
            let slots = Slots {
                rows_q: Some(unit.binding()),
                rows_k: Some(unit.binding()),
                labels_q: Some(labels.binding()),
                labels_k: Some(labels.binding()),
                out_stats: Some(stats.binding()),
                out: partial_stats.as_ref().map(Tensor::binding),
                ..Slots::default()
            };
            let groups = q.1.div_ceil(query_tile(BLOCK_ROWS)) * splits;
            launch(
                rec,
                ("nce_forward", &overrides),
                params(q, k),
                slots,
                groups,
            )?;
        }
        if let Some(partial) = &partial_stats {
            let slots = Slots {
                stats_q: Some(partial.binding()),
                out_stats: Some(stats.binding()),
                ..Slots::default()
            };
            let groups = m.div_ceil(256);
            launch(
                rec,
                ("nce_merge", &[]),
                params((0, m), (0, m)),
                slots,
                groups,
            )?;
        }
        let (loss, divisor) = mean_of_planes(rec, &stats, (2 * plane, 3 * plane), m)?;
        let mut grads = Vec::new();
        if self.gradient {
            // nce_backward accumulates into one copy of the gradient per split; finish adds
            // them into the first. Gradient rows kept in registers need no zero-fill.
            let (grad_chunks, block_rows) = backward_blocking(dim);
            let partial_grads = match grad_chunks {
                0 => rec.zeros(&[splits * m, dim], DType::F32)?,
                _ => rec.tensor(&[splits * m, dim], DType::F32)?,
            };
            let backward_overrides = [
                overrides[0],
                ("GRAD_CHUNKS", grad_chunks as u32),
                ("BLOCK_ROWS", block_rows as u32),
            ];
            let grad = partial_grads.prefix(&[m, dim]);
            for &(q, k) in &directions {
                let slots = Slots {
                    rows_q: Some(unit.binding()),
                    rows_k: Some(unit.binding()),
                    labels_q: Some(labels.binding()),
                    labels_k: Some(labels.binding()),
                    stats_q: Some(stats.binding()),
                    stats_k: Some(stats.binding()),
                    divisor: Some(divisor.binding()),
                    out: Some(partial_grads.binding()),
                    ..Slots::default()
                };
                let groups = q.1.div_ceil(query_tile(block_rows)) * splits;
                let job = ("nce_backward", &backward_overrides[..]);
                launch(rec, job, params(q, k), slots, groups)?;
            }
            finish(rec, (&unit, &norms), (&partial_grads, splits), (m, dim))?;
            grads = match *inputs {
                NceRows::Clip { a, b } => {
                    let ga = rec.tensor(a.shape(), DType::F32)?;
                    let gb = rec.tensor(b.shape(), DType::F32)?;
                    rec.copy((&grad, 0), (&ga, 0), a.len());
                    rec.copy((&grad, a.len()), (&gb, 0), b.len());
                    vec![("a", ga), ("b", gb)]
                }
                NceRows::NtXent { .. } => vec![("z", grad)],
                NceRows::SupCon { .. } => vec![("embeddings", grad)],
            };
        }
        Ok(LossOutput {
            loss,
            grads,
            status: None,
            rows: Vec::new(),
        })
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`InfoNce::record`].
    pub fn run(&self, engine: &Engine, inputs: &NceInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for InfoNce {
    type Inputs<'a> = NceInputs<'a>;

    fn record_into(&self, rec: &mut Recorder<'_>, inputs: &NceInputs<'_>) -> Result<LossOutput> {
        let scale = inputs.upstream.scalar()?;
        let rows = &inputs.rows;
        let (kind, named): (_, Vec<(&'static str, &Tensor)>) = match *rows {
            NceRows::NtXent { z } => (NceKind::NtXent, vec![("z", z)]),
            NceRows::Clip { a, b } => (NceKind::Clip, vec![("a", a), ("b", b)]),
            NceRows::SupCon { embeddings, .. } => {
                (NceKind::SupCon, vec![("embeddings", embeddings)])
            }
        };
        let labels = match *rows {
            NceRows::SupCon { labels, .. } => Some(labels.arg()),
            _ => None,
        };
        let args: Vec<_> = named.iter().map(|&(name, t)| (name, t.arg())).collect();
        self.check(&Args {
            kind: Some(kind),
            rows: &args,
            labels,
        })?;
        // 16-bit rows are widened once; the all-pairs work, O(N²·D), is f32 throughout.
        let dtype = named[0].1.dtype();
        rec.engine().scoped(|| {
            let wide: Vec<Tensor> = named
                .iter()
                .map(|&(_, t)| rec.widened(t))
                .collect::<Result<_>>()?;
            for (&(name, _), t) in named.iter().zip(&wide) {
                fits_one_binding(rec.engine(), name, t)?;
            }
            let rows = match *rows {
                NceRows::NtXent { .. } => NceRows::NtXent { z: &wide[0] },
                NceRows::Clip { .. } => NceRows::Clip {
                    a: &wide[0],
                    b: &wide[1],
                },
                NceRows::SupCon { labels, .. } => NceRows::SupCon {
                    embeddings: &wide[0],
                    labels,
                },
            };
            let out = self.record_checked(rec, &rows, scale)?;
            rec.gradients_as(out, self.grad_dtype.unwrap_or(dtype))
        })
    }
}

/// Turns the accumulated G in `grad` (the gradient for the normalized rows `unit`) into the
/// raw rows' gradient through the normalization's Jacobian.
/// `grad` holds `splits` partial gradients, one after the other; the result is in the first.
fn finish(
    rec: &mut Recorder<'_>,
    (unit, norms): (&Tensor, &Tensor),
    (grad, splits): (&Tensor, usize),
    (m, dim): (usize, usize),
) -> Result<()> {
    let params = Params {
        dim: dim as u32,
        q_count: m as u32,
        splits: splits as u32,
        ..Params::default()
    };
    let slots = Slots {
        rows_q: Some(unit.binding()),
        stats_q: Some(norms.binding()),
        out: Some(grad.binding()),
        ..Slots::default()
    };
    launch(rec, ("finish", &[]), params, slots, m)
}

impl MinedTriplet {
    /// Records the loss (a mean, see [`Mining`]) and the gradient of the embeddings.
    ///
    /// # Errors
    /// Bad options; [`Error::Shape`] / [`Error::DType`] for the inputs; an N×N matrix past
    /// the adapter's buffer size ([`Error::Limit`]); wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &MinedTripletInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        (embeddings, labels): (&Tensor, &Tensor),
        scale: f32,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let (n, dim) = (embeddings.shape()[0], embeddings.shape()[1]);
        // mined_backward takes at least one key half per invocation: too deep a row for
        // a software adapter is an error before anything is recorded.
        software_key_blocks(engine, dim, MINED_HALF_LOOPS)?;
        let cosine = self.distance == Distance::Cosine;
        let unit = if cosine {
            Some(normalized(rec, embeddings, (n, dim))?)
        } else {
            None
        };
        let rows = unit.as_ref().map_or(embeddings, |(u, _)| u);
        let dist = rec.tensor(&[n, n], DType::F32)?;
        // Mining adds pair weights atomically.
        let counts = rec.zeros(&[n, n], DType::I32)?;
        let windows = engine.row_windows(n, n as u64 * 4, false)?;
        let mode = match self.distance {
            Distance::Euclidean => 0,
            Distance::Squared => 1,
            Distance::Cosine => 2,
        };
        let mining = match self.mining {
            Mining::BatchAll => 0,
            Mining::BatchHard => 1,
            Mining::SemiHard => 2,
        };
        let overrides = [("MODE", mode), ("MINING", mining)];
        let plane = n.next_multiple_of(PLANE_ALIGN);
        let params = |q: &std::ops::Range<usize>, k: &std::ops::Range<usize>| Params {
            dim: dim as u32,
            q_begin: q.start as u32,
            q_count: q.len() as u32,
            k_begin: k.start as u32,
            k_count: k.len() as u32,
            n: n as u32,
            plane: plane as u32,
            margin: self.margin,
            scale,
            ..Params::default()
        };
        let all = 0..n;
        for w in &windows {
            let slots = Slots {
                rows_q: Some(rows.binding()),
                rows_k: Some(rows.binding()),
                out: Some(dist.window(w.start * n, w.len() * n)),
                ..Slots::default()
            };
            let groups = w.len().div_ceil(query_tile(BLOCK_ROWS)) * n.div_ceil(KEY_TILE);
            launch(
                rec,
                ("distances", &overrides),
                params(w, &all),
                slots,
                groups,
            )?;
        }
        // One workgroup per anchor. With batch-all and semi-hard an anchor of more than
        // LISTED_POSITIVES positives (so only past that many rows) sorts its row of
        // (distance, tag) pairs in a scratch window, reused window after window.
        let sorts = self.mining != Mining::BatchHard && n > LISTED_POSITIVES + 1;
        let row_bytes = n as u64 * 4;
        let mining_windows = if sorts {
            engine.row_windows_within(n, &[row_bytes, 2 * row_bytes], false, SORT_SCRATCH)?
        } else {
            windows.clone()
        };
        let scratch = if sorts {
            Some(rec.tensor(&[mining_windows[0].len() * n * 2], DType::F32)?)
        } else {
            None
        };
        let stat_plane = n.next_multiple_of(PLANE_ALIGN);
        let stats = rec.tensor(&[2 * stat_plane], DType::F32)?;
        for w in &mining_windows {
            let slots = Slots {
                labels_q: Some(labels.binding()),
                labels_k: Some(labels.binding()),
                dist_q: Some(dist.window(w.start * n, w.len() * n)),
                out: scratch.as_ref().map(|s| s.window(0, w.len() * n * 2)),
                out_stats: Some(stats.binding()),
                out_cnt: Some(counts.window(w.start * n, w.len() * n)),
                ..Slots::default()
            };
            let params = Params {
                plane: stat_plane as u32,
                ..params(w, &all)
            };
            launch(rec, ("mine", &overrides), params, slots, w.len())?;
        }
        let (loss, divisor) = mean_of_planes(rec, &stats, (0, stat_plane), n)?;
        let mut grads = Vec::new();
        if self.gradient {
            // mined_backward accumulates into the gradient over key windows.
            let grad = rec.zeros(&[n, dim], DType::F32)?;
            // On a software adapter, runs of at most `halves` key halves per launch.
            let step = software_key_blocks(engine, dim, MINED_HALF_LOOPS)?
                .map_or(n, |halves| halves * KEY_TILE / 2)
                .max(1);
            for wq in &windows {
                for (wk, from) in windows
                    .iter()
                    .flat_map(|wk| (0..wk.len()).step_by(step).map(move |f| (wk, f)))
                {
                    let slots = Slots {
                        rows_q: Some(rows.binding()),
                        rows_k: Some(rows.binding()),
                        divisor: Some(divisor.binding()),
                        dist_q: Some(dist.window(wq.start * n, wq.len() * n)),
                        cnt_q: Some(counts.window(wq.start * n, wq.len() * n)),
                        cnt_k: Some(counts.window(wk.start * n, wk.len() * n)),
                        out: Some(grad.binding()),
                        ..Slots::default()
                    };
                    let groups = wq.len().div_ceil(query_tile(BLOCK_ROWS));
                    let job = ("mined_backward", &overrides[..]);
                    let params = Params {
                        k_from: from as u32,
                        k_to: (from + step).min(wk.len()) as u32,
                        ..params(wq, wk)
                    };
                    launch(rec, job, params, slots, groups)?;
                }
            }
            if let Some((u, norms)) = &unit {
                finish(rec, (u, norms), (&grad, 1), (n, dim))?;
            }
            grads.push(("embeddings", grad));
        }
        Ok(LossOutput {
            loss,
            grads,
            status: None,
            rows: Vec::new(),
        })
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`MinedTriplet::record`].
    pub fn run(&self, engine: &Engine, inputs: &MinedTripletInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for MinedTriplet {
    type Inputs<'a> = MinedTripletInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &MinedTripletInputs<'_>,
    ) -> Result<LossOutput> {
        let scale = inputs.upstream.scalar()?;
        let (embeddings, labels) = (inputs.embeddings, inputs.labels);
        self.check(&Args {
            kind: None,
            rows: &[("embeddings", embeddings.arg())],
            labels: Some(labels.arg()),
        })?;
        rec.engine().scoped(|| {
            // 16-bit rows are widened once; the all-pairs work is f32 throughout.
            let wide = rec.widened(embeddings)?;
            fits_one_binding(rec.engine(), "embeddings", &wide)?;
            let out = self.record_checked(rec, (&wide, labels), scale)?;
            rec.gradients_as(out, self.grad_dtype.unwrap_or(embeddings.dtype()))
        })
    }
}
