//! Adapter choice, device creation, limits and the pipeline cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::gpu::kernel::{Kernel, KernelKey};

/// How [`Engine::with_options`] picks and configures its device.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Use the first adapter whose name contains this text (case-insensitive).
    /// [`Engine::new`] reads it from `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
    /// Cap on the bytes of one storage binding, below the adapter's own limit. Inputs larger
    /// than this are split across bindings; tests use it to exercise splitting on small data.
    pub max_binding_bytes: Option<u64>,
    /// Lay the row kernels' work out as for a GPU (`Some(true)`) or for a CPU adapter
    /// (`Some(false)`) whatever the adapter is; `None` follows the adapter. Tests run the GPU
    /// layout (many invocations per row, few rows split 256 ways) on lavapipe with it.
    pub gpu_layout: Option<bool>,
    /// Turn the kernels' subgroup operations off (`Some(false)`) even where the device has
    /// them; `None` or `Some(true)` uses them where [`Engine::subgroup_ops`] allows. Tests
    /// run the workgroup-memory paths on adapters with subgroups with it.
    pub subgroup_ops: Option<bool>,
}

impl Counters {
    /// What happened between `earlier` and `self` (the largest buffer is `self`'s).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            buffers_created: self.buffers_created - earlier.buffers_created,
            bytes_created: self.bytes_created - earlier.bytes_created,
            largest_buffer: self.largest_buffer,
            bytes_zero_filled: self.bytes_zero_filled - earlier.bytes_zero_filled,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            dispatches: self.dispatches - earlier.dispatches,
            compute_passes: self.compute_passes - earlier.compute_passes,
            uniform_writes: self.uniform_writes - earlier.uniform_writes,
        }
    }
}

/// A compute pipeline's subgroups, as probed.
#[derive(Debug, Clone, Copy)]
struct Subgroups {
    size: u32,
    /// Invocation i of a workgroup is lane i mod `size`.
    lanes_in_order: bool,
}

/// Optional features requested when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::SHADER_F16);

/// Dispatches one recording can time.
pub(crate) const PROFILE_CAPACITY: u32 = 256;

/// Per-dispatch timing (`gpu/profile.rs`): the query set, its resolve buffer and what the
/// last profiled recording wrote.
pub(crate) struct Profiler {
    pub set: wgpu::QuerySet,
    pub resolve: wgpu::Buffer,
    /// The kernel (module:entry) of each timed dispatch, in order.
    pub labels: Vec<String>,
}

impl Profiler {
    /// The query index pair of the next dispatch, or `None` past the capacity.
    pub(crate) fn next(&mut self, label: String) -> Option<u32> {
        let index = self.labels.len() as u32;
        (index < PROFILE_CAPACITY).then(|| {
            self.labels.push(label);
            2 * index
        })
    }
}

/// A wgpu device and queue with the pipelines built for it.
///
/// Cloning is cheap and shares the device, the pipeline cache and the counters; every loss
/// takes `&Engine`, and a [`Plan`](crate::Plan) keeps a clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    max_binding: u64,
    gpu_layout: bool,
    subgroup_ops_allowed: bool,
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Option<String>>>,
    counters: Mutex<Counters>,
    profiler: Mutex<Option<Profiler>>,
    /// What a compute pipeline's subgroups look like, probed on first use.
    simd: OnceLock<Option<Subgroups>>,
}

/// What the engine has done since the last [`Engine::reset_counters`] (or its creation),
/// from every thread that uses it: the structural cost of loss calls, countable where
/// timings are not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Device buffers created (workspaces, outputs, uniforms, uploads, readback staging).
    pub buffers_created: u64,
    /// Their total bytes: for one loss call, an upper bound on the device memory it needed
    /// beyond its inputs.
    pub bytes_created: u64,
    /// Bytes of the largest buffer created.
    pub largest_buffer: u64,
    /// Bytes zero-filled: buffers created without contents (wgpu zeroes them) and clears.
    pub bytes_zero_filled: u64,
    /// Bind groups created.
    pub bind_groups_created: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Compute passes recorded.
    pub compute_passes: u64,
    /// Queue writes of parameters into existing buffers.
    pub uniform_writes: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("adapter", &self.shared.info.name)
            .field("backend", &self.shared.info.backend)
            .field("max_binding", &self.shared.max_binding)
            .finish()
    }
}

/// Rank of an adapter: lower is preferred. Discrete, integrated, virtual, then CPU; within a
/// kind, Vulkan/Metal/DX12 before GL (lavapipe before llvmpipe).
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    };
    (kind, backend)
}

fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(backends);
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Every adapter wgpu can see, best first. `WGPU_BACKEND` picks the backends; otherwise GL
/// is only probed when Vulkan, Metal and DX12 have no adapter (probing EGL is slow and noisy).
pub fn adapters() -> Vec<wgpu::Adapter> {
    let mut all = enumerate(wgpu::Backends::PRIMARY);
    if all.is_empty() && wgpu::Backends::from_env().is_none() {
        all = enumerate(wgpu::Backends::all());
    }
    all.sort_by_key(|a| adapter_rank(&a.get_info()));
    all
}

impl Engine {
    /// Opens the best adapter: see [`adapters`] for the order. `WGPU_BACKEND` restricts the
    /// backends, `WGPU_ADAPTER_NAME` picks an adapter by name, and `WGPU_LOSSES_LAYOUT`
    /// (`gpu` or `cpu`) sets [`EngineOptions::gpu_layout`].
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when nothing matches, [`Error::RequestDevice`] when the device
    /// cannot be created.
    pub fn new() -> Result<Self> {
        let gpu_layout = match std::env::var("WGPU_LOSSES_LAYOUT") {
            Err(_) => None,
            Ok(v) if v == "gpu" => Some(true),
            Ok(v) if v == "cpu" => Some(false),
            Ok(v) => {
                return Err(Error::Option {
                    option: "WGPU_LOSSES_LAYOUT",
                    value: v,
                    reason: "must be `gpu` or `cpu`",
                })
            }
        };
        Self::with_options(EngineOptions {
            adapter_name: std::env::var("WGPU_ADAPTER_NAME").ok(),
            gpu_layout,
            ..EngineOptions::default()
        })
    }

    /// Opens an adapter chosen by `options`.
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn with_options(options: EngineOptions) -> Result<Self> {
        let all = adapters();
        let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
        let adapter = match &options.adapter_name {
            Some(want) => {
                let want = want.to_lowercase();
                all.into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(
                            " whose name contains `{want}` (adapters: {names:?})"
                        ))
                    })?
            }
            None => all.into_iter().next().ok_or_else(|| {
                Error::NoAdapter(
                    " (install a Vulkan driver; with no GPU: apt-get install mesa-vulkan-drivers)"
                        .into(),
                )
            })?,
        };
        let info = adapter.get_info();
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgpu-losses"),
            required_features: adapter.features() & WANTED_FEATURES,
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(Self::build(device, queue, info, &options))
    }

    /// Wraps a device and queue that the application already owns. Nothing is copied; losses
    /// run on this device and can record into the application's encoders.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Self::build(device, queue, info, &EngineOptions::default())
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &EngineOptions,
    ) -> Self {
        let limits = device.limits();
        // Binding indices are u32 element offsets in the shaders: keep a binding under 4 GiB.
        let mut max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        if let Some(cap) = options.max_binding_bytes {
            max_binding = max_binding.min(cap);
        }
        max_binding -= max_binding % 16;
        let gpu_layout = options
            .gpu_layout
            .unwrap_or(info.device_type != wgpu::DeviceType::Cpu);
        let lost = Arc::new(Mutex::new(None));
        let lost_in = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_in.lock().unwrap() = Some(format!("{reason:?}: {message}"));
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_in = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            uncaptured_in.lock().unwrap().get_or_insert(e.to_string());
        }));
        Self {
            shared: Arc::new(Shared {
                device,
                queue,
                info,
                limits,
                max_binding,
                gpu_layout,
                subgroup_ops_allowed: options.subgroup_ops != Some(false),
                kernels: Mutex::new(HashMap::new()),
                counters: Mutex::new(Counters::default()),
                profiler: Mutex::new(None),
                simd: OnceLock::new(),
                lost,
                uncaptured,
            }),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.shared.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.shared.queue
    }

    /// The adapter behind the device.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.shared.info
    }

    /// The device's limits (the adapter's own, as requested).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.shared.limits
    }

    /// The device's features.
    pub fn features(&self) -> wgpu::Features {
        self.shared.device.features()
    }

    /// Largest storage binding used, in bytes; larger inputs are split.
    pub fn max_binding_bytes(&self) -> u64 {
        self.shared.max_binding
    }

    /// Whether the row kernels lay their work out for a GPU (many invocations per row) rather
    /// than for a CPU adapter (long sequential runs per invocation).
    pub fn gpu_layout(&self) -> bool {
        self.shared.gpu_layout
    }

    /// The per-dispatch timer, when profiling is on.
    pub(crate) fn profiler(&self) -> &Mutex<Option<Profiler>> {
        &self.shared.profiler
    }

    /// What this engine has done since the last [`Engine::reset_counters`].
    pub fn counters(&self) -> Counters {
        *self.shared.counters.lock().unwrap()
    }

    /// Starts a new count for [`Engine::counters`].
    pub fn reset_counters(&self) {
        *self.shared.counters.lock().unwrap() = Counters::default();
    }

    /// Updates the counters.
    pub(crate) fn count(&self, update: impl FnOnce(&mut Counters)) {
        update(&mut self.shared.counters.lock().unwrap());
    }

    /// Counts a buffer of `bytes` created on this engine's device, zero-filled unless it was
    /// created with contents.
    pub(crate) fn note_buffer(&self, bytes: u64, zero_filled: bool) {
        self.count(|c| {
            c.buffers_created += 1;
            c.bytes_created += bytes;
            c.largest_buffer = c.largest_buffer.max(bytes);
            if zero_filled {
                c.bytes_zero_filled += bytes;
            }
        });
    }

    /// Workgroup size of every kernel: 256, or less where the adapter allows less.
    pub fn workgroup_size(&self) -> u32 {
        256.min(self.shared.limits.max_compute_invocations_per_workgroup)
            .min(self.shared.limits.max_compute_workgroup_size_x)
    }

    /// Invocations that execute in lockstep: the subgroup size a compute pipeline gets on
    /// this device, probed once (a one-workgroup kernel writes its `subgroup_size`); where
    /// the adapter has no subgroups or the probe fails, its smallest subgroup size, or 8.
    /// The adapter's range alone can mislead (Metal reports 4 for 32-wide SIMD groups).
    pub fn subgroup_width(&self) -> u32 {
        let width =
            self.probed_subgroup_size()
                .unwrap_or(match self.shared.info.subgroup_min_size {
                    0 => 8,
                    s => s,
                });
        width.clamp(1, self.workgroup_size())
    }

    /// The `subgroup_size` a compute pipeline of this device sees (probed on the first
    /// call), or `None` where the device has no subgroups or the probe failed.
    pub fn probed_subgroup_size(&self) -> Option<u32> {
        self.subgroups().map(|s| s.size)
    }

    /// Whether kernels use subgroup operations: the device has them, they are not turned
    /// off ([`EngineOptions::subgroup_ops`]), and the probe found invocation i of a
    /// workgroup at lane i mod the subgroup size, as the kernels' row teams assume (Vulkan
    /// does not promise it; every driver we know of does it).
    pub fn subgroup_ops(&self) -> bool {
        self.shared.subgroup_ops_allowed && self.subgroups().is_some_and(|s| s.lanes_in_order)
    }

    fn subgroups(&self) -> Option<Subgroups> {
        *self.shared.simd.get_or_init(|| self.probe_subgroups())
    }

    fn probe_subgroups(&self) -> Option<Subgroups> {
        const PROBE: &str = "@group(0) @binding(0) var<storage, read_write> out: array<atomic<u32>>;\n\
            @compute @workgroup_size(64)\n\
            fn main(@builtin(subgroup_size) size: u32, @builtin(subgroup_invocation_id) lane: u32,\n\
                    @builtin(local_invocation_index) i: u32) {\n\
                if (i == 0u) { atomicStore(&out[0], size); }\n\
                if (lane != i % size) { atomicStore(&out[1], 1u); }\n\
            }\n";
        let device = &self.shared.device;
        if !device.features().contains(wgpu::Features::SUBGROUP) {
            return None;
        }
        let read = self
            .scoped(|| {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("subgroup probe"),
                    source: wgpu::ShaderSource::Wgsl(PROBE.into()),
                });
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("subgroup probe"),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                });
                let buffer = |usage| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("subgroup probe"),
                        size: 8,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let out = buffer(wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
                let read = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("subgroup probe"),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &[wgpu::BindGroupEntry {
                        binding: 0,
                        resource: out.as_entire_binding(),
                    }],
                });
                let mut encoder = self.encoder();
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(1, 1, 1);
                }
                encoder.copy_buffer_to_buffer(&out, 0, &read, 0, 8);
                self.shared.queue.submit([encoder.finish()]);
                Ok(read)
            })
            .ok()?;
        let (tx, rx) = std::sync::mpsc::channel();
        read.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait().ok()?;
        rx.recv().ok()?.ok()?;
        let bytes = read.get_mapped_range(..).ok()?.to_vec();
        let word = |i: usize| {
            let b = bytes.get(4 * i..4 * i + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?))
        };
        let (size, misplaced) = (word(0)?, word(1)?);
        (size.is_power_of_two() && size <= 1024).then_some(Subgroups {
            size,
            lanes_in_order: misplaced == 0,
        })
    }

    /// The cached kernel for `key`, built on first use.
    pub(crate) fn kernel(&self, key: KernelKey) -> Result<Arc<Kernel>> {
        if let Some(k) = self.shared.kernels.lock().unwrap().get(&key) {
            return Ok(k.clone());
        }
        let kernel = Arc::new(self.scoped(|| Ok(Kernel::build(&self.shared.device, &key)))?);
        self.shared
            .kernels
            .lock()
            .unwrap()
            .insert(key, kernel.clone());
        Ok(kernel)
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch,
    /// a lost device, or an uncaptured error into `Err`.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self
            .shared
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self
            .shared
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(Error::Wgpu(e.to_string()));
        }
        self.health()?;
        out
    }

    /// `Err` once the device is lost or wgpu reported an error outside our scopes.
    pub fn health(&self) -> Result<()> {
        if let Some(m) = self.shared.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost(m));
        }
        if let Some(m) = self.shared.uncaptured.lock().unwrap().take() {
            return Err(Error::Wgpu(m));
        }
        Ok(())
    }

    /// Submits `encoder` and waits for the device to finish it.
    ///
    /// # Errors
    /// wgpu errors, a lost device or a failed wait.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.scoped(|| {
            self.shared.queue.submit([encoder.finish()]);
            self.wait()
        })
    }

    /// Waits for all submitted work.
    pub(crate) fn wait(&self) -> Result<()> {
        self.shared
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::DeviceLost(e.to_string()))
    }

    /// A new command encoder on this device.
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.shared
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu-losses"),
            })
    }
}
