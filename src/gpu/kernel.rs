//! Compute pipelines: a [`KernelKey`] names one (module, entry point, override constants),
//! [`Kernel::build`] compiles it with the bind group layout its module declares.

use crate::gpu::shader::{Access, ShaderModule};

/// Identifies a pipeline: module, entry point and override constants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KernelKey {
    pub module: ShaderModule,
    pub entry: &'static str,
    pub overrides: Vec<(&'static str, u32)>,
}

/// A built pipeline and its bind group layout.
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    /// Compiles `key` on `device` (wgpu reports failures through error scopes).
    pub(crate) fn build(device: &wgpu::Device, key: &KernelKey) -> Kernel {
        debug_assert!(
            key.module.entry_points.contains(&key.entry),
            "{} declares no entry point {}",
            key.module.name,
            key.entry
        );
        // Storage is bound read-write throughout, read-only inputs included: WebGPU forbids
        // one buffer bound both read-only and writable in a dispatch but allows repeated
        // writable use, so views into one pooled buffer can be an input and an output.
        // wgpu wants the shader's access to match the layout's exactly.
        let source = key
            .module
            .wgsl()
            .replace("var<storage, read>", "var<storage, read_write>");
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key.entry),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = key
            .module
            .binding_access()
            .iter()
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::Read | Access::ReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
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
