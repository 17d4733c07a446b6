//! The one place that builds pipelines and bind groups and dispatches: 2-D grids past the
//! per-dimension workgroup limit, row windows past one binding's size, uniforms, reductions.

use std::ops::Range;

use wgpu::util::DeviceExt;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::shader::Shader;
use crate::tensor::window;

/// How a kernel uses one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Uniform,
    Read,
    ReadWrite,
}

/// Identifies a pipeline: module, entry point and override constants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KernelKey {
    pub shader: Shader,
    pub entry: &'static str,
    pub overrides: Vec<(&'static str, u32)>,
}

/// A built pipeline and its bind group layout.
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

impl Kernel {
    pub(crate) fn build(engine: &Engine, key: &KernelKey) -> Kernel {
        let device = engine.device();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.entry),
            source: wgpu::ShaderSource::Wgsl(key.shader.source().into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = key
            .shader
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let constants: Vec<(&str, f64)> = key
            .overrides
            .iter()
            .map(|&(name, v)| (name, v as f64))
            .collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Kernel { pipeline, layout }
    }
}

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
            usage: crate::tensor::USAGE,
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
            shader: Shader::Reduce,
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
