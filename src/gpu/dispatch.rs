//! The one place that builds bind groups and dispatches: 2-D grids past the per-dimension
//! workgroup limit, row windows past one binding's size, uniforms, reductions, and the
//! loss outputs with their readback.

use std::ops::Range;

use wgpu::util::DeviceExt;

use crate::core::LossValues;
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::shader::REDUCE_MODULE;
use crate::gpu::tensor::{window, DType, Tensor, USAGE};

impl Engine {
    /// A uniform buffer holding `value`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        self.note_buffer(std::mem::size_of::<T>() as u64);
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// A small scratch storage buffer (unused inputs are bound to one of these).
    pub(crate) fn scratch(&self, elements: usize) -> wgpu::Buffer {
        self.note_buffer((elements.max(4) * 4) as u64);
        self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("scratch"),
            size: (elements.max(4) * 4) as u64,
            usage: USAGE,
            mapped_at_creation: false,
        })
    }

    /// Records one dispatch of `groups` workgroups of `kernel` with `resources` at bindings
    /// 0, 1, …; grids past the per-dimension limit become 2-D (shaders use `group_index`).
    pub(crate) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        key: KernelKey,
        resources: &[wgpu::BindingResource<'_>],
        groups: u32,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let kernel = self.kernel(key)?;
        let max = self.limits().max_compute_workgroups_per_dimension;
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(Error::Limit(format!(
                "{groups} workgroups exceed a {max}×{max} grid"
            )));
        }
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: r.clone(),
            })
            .collect();
        let bind_group = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
        Ok(())
    }

    /// Splits `rows` rows of `row_bytes` bytes into windows that each fit one binding and
    /// start at an offset the adapter accepts, for the row data and, with `per_row_scalars`,
    /// for arrays of one 4-byte value per row bound alongside.
    pub(crate) fn row_windows(
        &self,
        rows: usize,
        row_bytes: u64,
        per_row_scalars: bool,
    ) -> Result<Vec<Range<usize>>> {
        let a = self.limits().min_storage_buffer_offset_alignment.max(4) as u64;
        let gcd = |mut x: u64, mut y: u64| {
            while y != 0 {
                (x, y) = (y, x % y);
            }
            x
        };
        let row_align = a / gcd(a, row_bytes);
        let scalar_align = if per_row_scalars { a / 4 } else { 1 };
        let align = (row_align * scalar_align / gcd(row_align, scalar_align)) as usize;
        let fit = (self.max_binding_bytes() / row_bytes.max(4)) as usize;
        let per = fit - fit % align;
        if per == 0 {
            return Err(Error::Limit(format!(
                "a block of {align} rows of {row_bytes} bytes exceeds the {}-byte binding limit",
                self.max_binding_bytes()
            )));
        }
        Ok((0..rows.max(1))
            .step_by(per)
            .map(|s| s..(s + per).min(rows))
            .collect())
    }

    /// Records `result[0] = scale * sum(values[..len])`, divided by `divisor[0]` when given
    /// (0 when the divisor is 0), in a fixed order.
    pub(crate) fn record_sum(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        values: &wgpu::Buffer,
        len: usize,
        scale: f32,
        divisor: Option<&wgpu::Buffer>,
        result: &wgpu::Buffer,
    ) -> Result<()> {
        self.record_sum_at(encoder, (values, 0), len, scale, divisor, result)
    }

    /// [`Engine::record_sum`] over `len` values from element `offset` of a buffer, an offset
    /// the adapter's storage alignment accepts (a multiple of 64 elements always is).
    pub(crate) fn record_sum_at(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (values, offset): (&wgpu::Buffer, usize),
        len: usize,
        scale: f32,
        divisor: Option<&wgpu::Buffer>,
        result: &wgpu::Buffer,
    ) -> Result<()> {
        let wg = self.workgroup_size();
        // At most ~1024 partials; blocks of at least 8 values per invocation.
        let block = (len.div_ceil(1024)).max(wg as usize * 8);
        let groups = len.div_ceil(block).max(1);
        // Values past one binding are reduced window by window into one partials array.
        let windows = self.row_windows(groups, block as u64 * 4, false)?;
        let partials = self.scratch(groups);
        let dummy;
        let divisor_buffer = match divisor {
            Some(d) => d,
            None => {
                dummy = self.scratch(1);
                &dummy
            }
        };
        let key = |entry| KernelKey {
            module: REDUCE_MODULE,
            entry,
            overrides: vec![("WG_SIZE", wg)],
        };
        let params = |len: usize, groups: usize, group_base: usize| ReduceParams {
            len: len as u32,
            block: block as u32,
            groups: groups as u32,
            flags: divisor.is_some() as u32,
            scale,
            group_base: group_base as u32,
            _pad: [0; 2],
        };
        let mut last = None;
        for w in &windows {
            let start = w.start * block;
            let count = (w.end * block).min(len) - start;
            let uniform = self.uniform(&params(count, w.len(), w.start));
            let resources = [
                uniform.as_entire_binding(),
                window(values, offset + start, count),
                partials.as_entire_binding(),
                window(divisor_buffer, 0, 1),
                window(result, 0, 1),
            ];
            self.dispatch(encoder, key("partial_sums"), &resources, w.len() as u32)?;
            last = Some((start, count));
        }
        let (start, count) = last.unwrap_or((0, len));
        let uniform = self.uniform(&params(len, groups, 0));
        let resources = [
            uniform.as_entire_binding(),
            window(values, offset + start, count),
            partials.as_entire_binding(),
            window(divisor_buffer, 0, 1),
            window(result, 0, 1),
        ];
        self.dispatch(encoder, key("finish"), &resources, 1)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ReduceParams {
    pub len: u32,
    pub block: u32,
    pub groups: u32,
    pub flags: u32,
    pub scale: f32,
    pub group_base: u32,
    pub _pad: [u32; 2],
}

/// Device results of one loss call.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Shape `[]` for mean and sum, the per-item shape for `Reduction::None`.
    pub loss: Tensor,
    /// Gradient of each differentiable input, by input name, in the input's shape.
    pub grads: Vec<(&'static str, Tensor)>,
    /// Where the kernel reports the first invalid input row, if the loss checks any.
    pub(crate) status: Option<Status>,
}

/// A device-side report of the first bad row of an input the host did not see.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    /// `u32::MAX - row` of the first bad row, 0 when all rows are valid.
    pub flag: wgpu::Buffer,
    /// The input checked, to read the offending value from.
    pub input: &'static str,
    pub values: Tensor,
    pub reason: String,
}

impl Engine {
    /// Checks the kernels' input report, then reads loss and gradients back.
    ///
    /// # Errors
    /// [`Error::Value`] naming the first bad row and its value; readback and wgpu errors.
    pub fn read_output(&self, out: &LossOutput) -> Result<LossValues> {
        self.check_status(out)?;
        let grads = out
            .grads
            .iter()
            .map(|(name, t)| Ok((*name, self.download(t)?)))
            .collect::<Result<_>>()?;
        Ok(LossValues {
            loss: self.download(&out.loss)?,
            grads,
        })
    }

    /// Records with `record` into a new encoder, submits, waits and reads the results back:
    /// the body of every loss's `run`.
    ///
    /// # Errors
    /// Those of `record`, submission, the kernels' input report and readback.
    pub fn execute(
        &self,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<LossOutput>,
    ) -> Result<LossValues> {
        let mut encoder = self.encoder();
        let out = record(&mut encoder)?;
        self.submit(encoder)?;
        self.read_output(&out)
    }

    /// `Err` naming the first bad input row that a kernel reported, if any.
    ///
    /// # Errors
    /// [`Error::Value`]; readback errors.
    pub fn check_status(&self, out: &LossOutput) -> Result<()> {
        let Some(status) = &out.status else {
            return Ok(());
        };
        let flag: u32 = bytemuck::pod_read_unaligned(&self.read_bytes(&status.flag, 4)?);
        if flag == 0 {
            return Ok(());
        }
        let row = (u32::MAX - flag) as usize;
        let value = match status.values.dtype() {
            DType::I32 => self.download_i32(&status.values)?[row].to_string(),
            DType::F32 => self.download(&status.values)?[row].to_string(),
        };
        Err(Error::Value {
            input: status.input,
            row,
            value,
            reason: status.reason.clone(),
        })
    }
}
