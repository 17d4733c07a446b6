//! Recording one loss call. A [`Recorder`] hands out the call's buffers from a [`Workspace`]
//! and collects its dispatches and copies; [`Recorder::finish`] then encodes them with one
//! uniform buffer for every parameter block and one compute pass per run of dispatches.
//!
//! A [`Plan`](crate::Plan) keeps its workspace across calls: the same requests in the same
//! order get the same buffers back, the bind groups of unchanged dispatches are reused, and
//! changed parameters cost one queue write. A one-off call records into a fresh workspace.
//! This is the one place that creates bind groups, uniforms and workspace buffers.

use std::ops::Range;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::core::typed_bytes;
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::{Kernel, KernelKey};
use crate::gpu::shader::REDUCE_MODULE;
use crate::gpu::tensor::{Binding, DType, Tensor};

/// The buffers, parameters and bind groups a plan keeps between calls.
#[derive(Default)]
pub struct Workspace {
    /// Buffers by the order the call requested them.
    buffers: Vec<Slot>,
    /// The parameter block's buffer and the bytes last written to it.
    params: Option<(wgpu::Buffer, Vec<u8>)>,
    /// Pipelines and bind groups by dispatch order.
    dispatches: Vec<Prepared>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("buffers", &self.buffers.len())
            .field("dispatches", &self.dispatches.len())
            .finish()
    }
}

struct Slot {
    bytes: u64,
    /// For uploaded constants: the data, reused only while unchanged.
    contents: Option<Vec<u8>>,
    buffer: wgpu::Buffer,
}

struct Prepared {
    key: KernelKey,
    bindings: Vec<Binding>,
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
}

enum Command {
    Dispatch {
        key: KernelKey,
        bindings: Vec<Binding>,
        groups: u32,
    },
    Copy {
        from: Binding,
        to: Binding,
    },
}

/// Records one call into a workspace; see the module documentation.
pub struct Recorder<'a> {
    engine: &'a Engine,
    workspace: &'a mut Workspace,
    next_slot: usize,
    params: Vec<u8>,
    commands: Vec<Command>,
    /// Buffers to zero at the start of the call, and how many leading bytes (`None`: all).
    clears: Vec<(wgpu::Buffer, Option<u64>)>,
    unused: Option<Binding>,
    discarded: Option<Binding>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(engine: &'a Engine, workspace: &'a mut Workspace) -> Self {
        Self {
            engine,
            workspace,
            next_slot: 0,
            params: Vec::new(),
            commands: Vec::new(),
            clears: Vec::new(),
            unused: None,
            discarded: None,
        }
    }

    /// The engine recorded for.
    pub(crate) fn engine(&self) -> &'a Engine {
        self.engine
    }

    /// The next slot's buffer of `bytes` (and `contents`): the kept one when it matches,
    /// else a new one. Returns the buffer and whether it is new.
    fn slot(&mut self, bytes: u64, contents: Option<&[u8]>) -> Result<(wgpu::Buffer, bool)> {
        let i = self.next_slot;
        self.next_slot += 1;
        if let Some(s) = self.workspace.buffers.get(i) {
            if s.bytes == bytes && s.contents.as_deref() == contents {
                return Ok((s.buffer.clone(), false));
            }
        }
        let buffer = match contents {
            Some(data) => self.engine.upload_buffer(data)?,
            None => self.engine.new_buffer(bytes)?,
        };
        let slot = Slot {
            bytes,
            contents: contents.map(<[u8]>::to_vec),
            buffer: buffer.clone(),
        };
        match self.workspace.buffers.get_mut(i) {
            Some(s) => *s = slot,
            None => self.workspace.buffers.push(slot),
        }
        Ok((buffer, true))
    }

    fn tensor_in(buffer: wgpu::Buffer, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::from_buffer(buffer, shape, dtype)
    }

    /// A workspace or output tensor whose contents the call's kernels write in full before
    /// anything reads them (undefined at the start of a call).
    pub(crate) fn tensor(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let (buffer, _) = self.slot(typed_bytes("shape", shape, dtype)?, None)?;
        Self::tensor_in(buffer, shape, dtype)
    }

    /// A tensor that holds zeros at the start of every call (accumulators, status flags).
    pub(crate) fn zeros(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let (buffer, new) = self.slot(typed_bytes("shape", shape, dtype)?, None)?;
        if !new {
            self.clears.push((buffer.clone(), None));
        }
        Self::tensor_in(buffer, shape, dtype)
    }

    /// A u32 status flag (zero at the start of every call) followed by `scratch` words the
    /// kernel uses as it likes (undefined at the start): one binding for both, for kernels
    /// at the limit of storage bindings.
    pub(crate) fn flag_with_scratch(&mut self, scratch: usize) -> Result<Tensor> {
        let shape = [1 + scratch];
        let (buffer, new) = self.slot(typed_bytes("shape", &shape, DType::I32)?, None)?;
        if !new {
            self.clears.push((buffer.clone(), Some(4)));
        }
        Self::tensor_in(buffer, &shape, DType::I32)
    }

    /// An i32 tensor holding `data`, uploaded again only when `data` changes.
    pub(crate) fn constant_i32(&mut self, data: &[i32], shape: &[usize]) -> Result<Tensor> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let (buffer, _) = self.slot(bytes.len() as u64, Some(bytes))?;
        Self::tensor_in(buffer, shape, DType::I32)
    }

    /// A binding for an input slot the kernel does not read (storage is laid out
    /// read-write, so one small buffer serves every such slot of a dispatch; outputs that
    /// are thrown away go to [`Recorder::discarded`], so this one is never written).
    pub(crate) fn unused(&mut self) -> Result<Binding> {
        if self.unused.is_none() {
            self.unused = Some(self.tensor(&[4], DType::F32)?.binding());
        }
        Ok(self.unused.clone().expect("set above"))
    }

    /// A binding for an output slot whose values the call throws away.
    pub(crate) fn discarded(&mut self) -> Result<Binding> {
        if self.discarded.is_none() {
            self.discarded = Some(self.tensor(&[4], DType::F32)?.binding());
        }
        Ok(self.discarded.clone().expect("set above"))
    }

    /// `value` as a uniform parameter block, placed in the call's one uniform buffer.
    pub(crate) fn params<T: bytemuck::Pod>(&mut self, value: &T) -> Binding {
        let align = self.engine.limits().min_uniform_buffer_offset_alignment as usize;
        let offset = self.params.len().next_multiple_of(align.max(16));
        self.params.resize(offset, 0);
        self.params.extend_from_slice(bytemuck::bytes_of(value));
        Binding::Params {
            offset: offset as u64,
            size: std::mem::size_of::<T>() as u64,
        }
    }

    /// Records `groups` workgroups of `key` with `bindings` at bindings 0, 1, …; grids past
    /// the per-dimension limit become 2-D (shaders use `group_index`).
    pub(crate) fn dispatch(
        &mut self,
        key: KernelKey,
        bindings: Vec<Binding>,
        groups: u32,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let max = self.engine.limits().max_compute_workgroups_per_dimension;
        if groups.div_ceil(max) > max {
            return Err(Error::Limit(format!(
                "{groups} workgroups exceed a {max}×{max} grid"
            )));
        }
        self.commands.push(Command::Dispatch {
            key,
            bindings,
            groups,
        });
        Ok(())
    }

    /// Records a copy of `count` elements of `from` (from element `from_start`) into `to`
    /// at element `to_start`.
    pub(crate) fn copy(
        &mut self,
        (from, from_start): (&Tensor, usize),
        (to, to_start): (&Tensor, usize),
        count: usize,
    ) {
        if count > 0 {
            self.commands.push(Command::Copy {
                from: from.window(from_start, count),
                to: to.window(to_start, count),
            });
        }
    }

    /// Encodes what was recorded into `encoder`: clears first, then dispatches and copies
    /// in order, consecutive dispatches in one compute pass.
    ///
    /// # Errors
    /// wgpu errors.
    pub(crate) fn finish(self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let Recorder {
            engine,
            workspace,
            params,
            commands,
            clears,
            ..
        } = self;
        for (buffer, bytes) in &clears {
            encoder.clear_buffer(buffer, 0, *bytes);
            engine.count(|c| c.bytes_zero_filled += bytes.unwrap_or(buffer.size()));
        }
        let params_buffer = prepare_params(engine, workspace, params);
        let mut index = 0;
        let mut profiler = engine.profiler().lock().unwrap();
        if let Some(p) = profiler.as_mut() {
            p.labels.clear();
        }
        let mut pass: Option<wgpu::ComputePass<'_>> = None;
        for command in commands {
            match command {
                Command::Copy { from, to } => {
                    pass = None;
                    let (
                        Binding::Buffer {
                            buffer: src,
                            offset: src_offset,
                            size,
                        },
                        Binding::Buffer {
                            buffer: dst,
                            offset: dst_offset,
                            ..
                        },
                    ) = (from, to)
                    else {
                        unreachable!("copies are between tensors")
                    };
                    encoder.copy_buffer_to_buffer(&src, src_offset, &dst, dst_offset, size);
                }
                Command::Dispatch {
                    key,
                    bindings,
                    groups,
                } => {
                    let label = profiler
                        .is_some()
                        .then(|| format!("{}:{}", key.module.name, key.entry));
                    let prepared =
                        prepare(engine, workspace, index, key, bindings, &params_buffer)?;
                    index += 1;
                    let pass = pass.get_or_insert_with(|| {
                        engine.count(|c| c.compute_passes += 1);
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                            .forget_lifetime()
                    });
                    let max = engine.limits().max_compute_workgroups_per_dimension;
                    let x = groups.min(max);
                    pass.set_pipeline(&prepared.kernel.pipeline);
                    pass.set_bind_group(0, &prepared.bind_group, &[]);
                    let timed = profiler
                        .as_mut()
                        .zip(label)
                        .and_then(|(p, label)| p.next(label).map(|q| (p.set.clone(), q)));
                    if let Some((set, q)) = &timed {
                        pass.write_timestamp(set, *q);
                    }
                    pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
                    if let Some((set, q)) = &timed {
                        pass.write_timestamp(set, q + 1);
                    }
                    engine.count(|c| c.dispatches += 1);
                }
            }
        }
        drop(pass);
        if let Some(p) = profiler.as_ref().filter(|p| !p.labels.is_empty()) {
            let count = 2 * p.labels.len() as u32;
            encoder.resolve_query_set(&p.set, 0..count, &p.resolve, 0);
        }
        Ok(())
    }
}

/// The workspace's parameter buffer holding `params`: written only when they changed,
/// created (and every cached bind group dropped) only when it is too small.
fn prepare_params(
    engine: &Engine,
    workspace: &mut Workspace,
    params: Vec<u8>,
) -> Option<wgpu::Buffer> {
    if params.is_empty() {
        return None;
    }
    match &mut workspace.params {
        Some((buffer, last)) if buffer.size() >= params.len() as u64 => {
            if *last != params {
                engine.queue().write_buffer(buffer, 0, &params);
                engine.count(|c| c.uniform_writes += 1);
                *last = params;
            }
        }
        _ => {
            engine.note_buffer(params.len() as u64, false);
            let buffer = engine
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("params"),
                    contents: &params,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                });
            workspace.dispatches.clear();
            workspace.params = Some((buffer, params));
        }
    }
    workspace.params.as_ref().map(|(b, _)| b.clone())
}

/// The pipeline and bind group of dispatch `index`: the kept ones when key and bindings are
/// unchanged, else built (and kept).
fn prepare<'w>(
    engine: &Engine,
    workspace: &'w mut Workspace,
    index: usize,
    key: KernelKey,
    bindings: Vec<Binding>,
    params: &Option<wgpu::Buffer>,
) -> Result<&'w Prepared> {
    let reusable = workspace
        .dispatches
        .get(index)
        .is_some_and(|p| p.key == key && p.bindings == bindings);
    if !reusable {
        let kernel = engine.kernel(key.clone())?;
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(match b {
                    Binding::Buffer {
                        buffer,
                        offset,
                        size,
                    } => wgpu::BufferBinding {
                        buffer,
                        offset: *offset,
                        size: std::num::NonZeroU64::new(*size),
                    },
                    Binding::Params { offset, size } => wgpu::BufferBinding {
                        buffer: params.as_ref().expect("a dispatch with parameters"),
                        offset: *offset,
                        size: std::num::NonZeroU64::new(*size),
                    },
                }),
            })
            .collect();
        let bind_group = engine
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.layout,
                entries: &entries,
            });
        engine.count(|c| c.bind_groups_created += 1);
        let prepared = Prepared {
            key,
            bindings,
            kernel,
            bind_group,
        };
        workspace.dispatches.truncate(index);
        workspace.dispatches.push(prepared);
    }
    Ok(&workspace.dispatches[index])
}

impl Engine {
    /// Splits `rows` rows of `row_bytes` bytes into windows that each fit one binding and
    /// start at an offset the adapter accepts, for the row data and, with `per_row_scalars`,
    /// for arrays of one 4-byte value per row bound alongside.
    pub(crate) fn row_windows(
        &self,
        rows: usize,
        row_bytes: u64,
        per_row_scalars: bool,
    ) -> Result<Vec<Range<usize>>> {
        self.row_windows_for(rows, &[row_bytes], per_row_scalars)
    }

    /// As [`Engine::row_windows`] for several arrays of rows bound together, whose rows are
    /// `row_bytes` each (arrays of different element types): every window starts at an
    /// accepted offset in each and fits one binding of the widest.
    pub(crate) fn row_windows_for(
        &self,
        rows: usize,
        row_bytes: &[u64],
        per_row_scalars: bool,
    ) -> Result<Vec<Range<usize>>> {
        self.row_windows_within(rows, row_bytes, per_row_scalars, self.max_binding_bytes())
    }

    /// As [`Engine::row_windows_for`], with windows of at most `budget` bytes of the widest
    /// array where the binding allows more (at least one aligned block of rows): for
    /// scratch that one window at a time reuses.
    pub(crate) fn row_windows_within(
        &self,
        rows: usize,
        row_bytes: &[u64],
        per_row_scalars: bool,
        budget: u64,
    ) -> Result<Vec<Range<usize>>> {
        let a = self.limits().min_storage_buffer_offset_alignment.max(4) as u64;
        let gcd = |mut x: u64, mut y: u64| {
            while y != 0 {
                (x, y) = (y, x % y);
            }
            x
        };
        let lcm = |x: u64, y: u64| x / gcd(x, y) * y;
        let scalar_align = if per_row_scalars { a / 4 } else { 1 };
        let align = row_bytes
            .iter()
            .fold(scalar_align, |l, &b| lcm(l, a / gcd(a, b))) as usize;
        let widest = row_bytes.iter().copied().max().unwrap_or(4);
        let fit = (self.max_binding_bytes() / widest.max(4)) as usize;
        let per = fit - fit % align;
        if per == 0 {
            return Err(Error::Limit(format!(
                "a block of {align} rows of {widest} bytes exceeds the {}-byte binding limit",
                self.max_binding_bytes()
            )));
        }
        let within = (budget / widest.max(4)) as usize;
        let per = per.min((within - within % align).max(align));
        Ok((0..rows.max(1))
            .step_by(per)
            .map(|s| s..(s + per).min(rows))
            .collect())
    }

    /// Values one workgroup sums alone, in one dispatch; longer sums take two.
    pub(crate) fn single_pass_sum(&self) -> usize {
        self.workgroup_size() as usize * 64
    }
}

/// How a [`Recorder::sum`] scales its total.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SumOf<'t> {
    /// Multiplies the sum.
    pub scale: f32,
    /// Divides the scaled sum by this one-element tensor's value (0 when that is 0).
    pub divisor: Option<&'t Tensor>,
}

impl SumOf<'_> {
    pub(crate) const PLAIN: SumOf<'static> = SumOf {
        scale: 1.0,
        divisor: None,
    };

    pub(crate) fn scaled(scale: f32) -> SumOf<'static> {
        SumOf {
            scale,
            divisor: None,
        }
    }
}

impl Recorder<'_> {
    /// Records `result[0] = scale · Σ values[start..start + len]`, divided by the divisor's
    /// sum when given, in an order fixed by the sizes alone. `start` must be an offset the
    /// adapter's storage alignment accepts (a multiple of 64 elements always is). One
    /// dispatch up to [`Engine::single_pass_sum`] values, else two.
    pub(crate) fn sum(
        &mut self,
        (values, start): (&Tensor, usize),
        len: usize,
        how: SumOf<'_>,
        result: &Tensor,
    ) -> Result<()> {
        let engine = self.engine;
        let wg = engine.workgroup_size();
        let divisor = match how.divisor {
            Some(d) => d.binding(),
            None => self.unused()?,
        };
        let key = |entry| KernelKey {
            module: REDUCE_MODULE,
            entry,
            overrides: vec![("WG_SIZE", wg)],
        };
        let flags = |from_values: bool| {
            how.divisor.is_some() as u32 * DIVIDE_BY_BUFFER + from_values as u32 * FROM_VALUES
        };
        if len <= engine.single_pass_sum() && len as u64 * 4 <= engine.max_binding_bytes() {
            let params = self.params(&ReduceParams {
                len: len as u32,
                flags: flags(true),
                scale: how.scale,
                ..ReduceParams::default()
            });
            let partials = self.unused()?;
            let bindings = vec![
                params,
                values.window(start, len),
                partials,
                divisor,
                result.window(0, 1),
            ];
            return self.dispatch(key("finish"), bindings, 1);
        }
        // At most ~1024 partials; blocks of at least 8 values per invocation.
        let block = (len.div_ceil(1024)).max(wg as usize * 8);
        let groups = len.div_ceil(block);
        // Values past one binding are reduced window by window into one partials array.
        let windows = engine.row_windows(groups, block as u64 * 4, false)?;
        let partials = self.tensor(&[groups], DType::F32)?;
        for w in &windows {
            let first = w.start * block;
            let count = (w.end * block).min(len) - first;
            let params = self.params(&ReduceParams {
                len: count as u32,
                block: block as u32,
                groups: w.len() as u32,
                group_base: w.start as u32,
                ..ReduceParams::default()
            });
            let bindings = vec![
                params,
                values.window(start + first, count),
                partials.binding(),
                divisor.clone(),
                result.window(0, 1),
            ];
            self.dispatch(key("partial_sums"), bindings, w.len() as u32)?;
        }
        let params = self.params(&ReduceParams {
            groups: groups as u32,
            flags: flags(false),
            scale: how.scale,
            ..ReduceParams::default()
        });
        let bindings = vec![
            params,
            values.window(start, 1),
            partials.binding(),
            divisor,
            result.window(0, 1),
        ];
        self.dispatch(key("finish"), bindings, 1)
    }
}

impl Recorder<'_> {
    /// `result[r] = Σ values[r·row_len .. (r + 1)·row_len]` for `rows` rows, each added in
    /// order by one invocation (for short rows: a per-item gradient over a few elements).
    pub(crate) fn row_sums(
        &mut self,
        values: &Tensor,
        rows: usize,
        row_len: usize,
        result: &Tensor,
    ) -> Result<()> {
        let wg = self.engine.workgroup_size();
        let key = KernelKey {
            module: REDUCE_MODULE,
            entry: "row_sums",
            overrides: vec![("WG_SIZE", wg)],
        };
        let unused = self.unused()?;
        for w in self
            .engine
            .row_windows_for(rows, &[row_len as u64 * 4], true)?
        {
            let params = self.params(&ReduceParams {
                len: w.len() as u32,
                block: row_len as u32,
                ..ReduceParams::default()
            });
            let bindings = vec![
                params,
                values.window(w.start * row_len, w.len() * row_len),
                unused.clone(),
                unused.clone(),
                result.window(w.start, w.len()),
            ];
            self.dispatch(key.clone(), bindings, w.len().div_ceil(wg as usize) as u32)?;
        }
        Ok(())
    }
}

const DIVIDE_BY_BUFFER: u32 = 1;
const FROM_VALUES: u32 = 2;

/// Mirrors `ReduceParams` in `shaders/reduce.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    len: u32,
    block: u32,
    groups: u32,
    flags: u32,
    scale: f32,
    group_base: u32,
    _pad: [u32; 2],
}
