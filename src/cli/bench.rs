//! Measurement helpers shared by `wgpu-losses bench` and the criterion benches: the copy
//! kernel that sets the adapter's bandwidth yardstick, the host copy that sets the CPU
//! backend's, and median wall-clock timing.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::record::{Recorder, Workspace};
use crate::gpu::shader::COPY_MODULE;
use crate::gpu::tensor::{DType, Tensor};

/// A source and destination for the copy kernel, `bytes` each (a multiple of 16).
pub struct CopyJob {
    src: Tensor,
    dst: Tensor,
    workspace: Workspace,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    len: u32,
    _pad: [u32; 3],
}

impl CopyJob {
    /// Allocates the two buffers.
    ///
    /// # Errors
    /// Allocation failures.
    pub fn new(engine: &Engine, bytes: u64) -> Result<Self> {
        let elems = (bytes / 16 * 4) as usize;
        Ok(Self {
            src: engine.upload(&vec![1.0; elems], &[elems])?,
            dst: engine.zeros(&[elems], DType::F32)?,
            workspace: Workspace::default(),
        })
    }

    /// Bytes moved by one copy (read plus write).
    pub fn bytes_moved(&self) -> u64 {
        2 * self.src.bytes()
    }

    /// Records one copy (planned, like the losses: no allocation after the first).
    ///
    /// # Errors
    /// wgpu errors.
    pub fn record(&mut self, engine: &Engine, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let vec4s = self.src.len() / 4;
        let wg = engine.workgroup_size();
        let mut rec = Recorder::new(engine, &mut self.workspace);
        const ITEMS: u32 = 16;
        let key = KernelKey {
            module: COPY_MODULE,
            entry: "main",
            overrides: vec![
                ("WG_SIZE", wg),
                ("ITEMS", ITEMS),
                ("TEAM", engine.subgroup_width()),
            ],
        };
        // Sizes past one binding are copied window by window.
        for w in engine.row_windows(vec4s, 16, false)? {
            let params = rec.params(&CopyParams {
                len: w.len() as u32,
                _pad: [0; 3],
            });
            let (start, count) = (4 * w.start, 4 * w.len());
            let bindings = vec![
                params,
                self.src.window(start, count),
                self.dst.window(start, count),
            ];
            let groups = w.len().div_ceil((wg * ITEMS) as usize) as u32;
            rec.dispatch(key.clone(), bindings, groups)?;
        }
        engine.scoped(|| rec.finish(encoder))
    }
}

/// Median seconds of `reps` runs of `f`, after `warmup` unmeasured runs.
///
/// # Errors
/// The first error of `f`.
pub fn median_secs(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Copy bandwidth of the adapter in GB/s (read + write bytes), median of `reps`.
///
/// # Errors
/// wgpu errors.
pub fn copy_gbps(engine: &Engine, bytes: u64, reps: usize) -> Result<f64> {
    let mut job = CopyJob::new(engine, bytes)?;
    let secs = median_secs(2, reps, || {
        let mut encoder = engine.encoder();
        job.record(engine, &mut encoder)?;
        engine.submit(encoder)
    })?;
    Ok(job.bytes_moved() as f64 / secs / 1e9)
}

/// Host copy bandwidth in GB/s (read + write bytes), median of `reps`: `bytes` copied in
/// chunks in parallel on rayon's threads, as the CPU backend runs its losses.
///
/// # Errors
/// None in practice; the signature matches [`median_secs`].
pub fn host_copy_gbps(bytes: usize, reps: usize) -> Result<f64> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let src = vec![1.0f32; bytes / 4];
    let mut dst = vec![0.0f32; bytes / 4];
    let secs = median_secs(2, reps, || {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    })?;
    Ok(2.0 * (src.len() * 4) as f64 / secs / 1e9)
}

/// GPU time of recorded work from timestamp queries written around it in the encoder, where
/// the device has `TIMESTAMP_QUERY_INSIDE_ENCODERS`.
pub struct KernelTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    period_ns: f64,
}

impl KernelTimer {
    /// A timer, or `None` when the device cannot write timestamps inside encoders.
    pub fn new(engine: &Engine) -> Option<Self> {
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if !engine.features().contains(needed) {
            return None;
        }
        let device = engine.device();
        Some(Self {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel timer"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            period_ns: engine.queue().get_timestamp_period() as f64,
        })
    }

    /// Seconds the device spent on what `record` records (submitted and waited for).
    ///
    /// # Errors
    /// Those of `record`, submission and readback.
    pub fn time(
        &self,
        engine: &Engine,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<f64> {
        let mut encoder = engine.encoder();
        encoder.write_timestamp(&self.set, 0);
        record(&mut encoder)?;
        encoder.write_timestamp(&self.set, 1);
        encoder.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
        engine.submit(encoder)?;
        let ticks: [u64; 2] =
            bytemuck::pod_read_unaligned(&engine.read_bytes(&self.resolve, 0, 16)?);
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * self.period_ns / 1e9)
    }
}
