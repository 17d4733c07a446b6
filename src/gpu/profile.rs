//! Per-dispatch GPU time, for the benchmark: while profiling is on, the recorder writes a
//! timestamp before and after every dispatch (wgpu's `TIMESTAMP_QUERY_INSIDE_PASSES`) and
//! resolves them at the end of the recording; [`Engine::dispatch_times`] reads them back.

use crate::error::{Error, Result};
use crate::gpu::engine::{Engine, Profiler, PROFILE_CAPACITY};

impl Engine {
    /// Turns per-dispatch timing on or off (see [`Engine::dispatch_times`]).
    ///
    /// # Errors
    /// [`Error::Limit`] when the device cannot write timestamps inside compute passes.
    pub fn profile_dispatches(&self, on: bool) -> Result<()> {
        let mut slot = self.profiler().lock().unwrap();
        if !on {
            *slot = None;
            return Ok(());
        }
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !self.features().contains(needed) {
            return Err(Error::Limit(
                "this device cannot write timestamps inside compute passes".into(),
            ));
        }
        let device = self.device();
        *slot = Some(Profiler {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("dispatch profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_CAPACITY,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("dispatch profile"),
                size: 16 * PROFILE_CAPACITY as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            labels: Vec::new(),
        });
        Ok(())
    }

    /// Seconds each dispatch of the last profiled recording took on the device, labelled
    /// `module:entry`, in recording order. Call after its submission; empty when profiling
    /// is off.
    ///
    /// # Errors
    /// Readback errors.
    pub fn dispatch_times(&self) -> Result<Vec<(String, f64)>> {
        let (resolve, labels) = match &*self.profiler().lock().unwrap() {
            Some(p) => (p.resolve.clone(), p.labels.clone()),
            None => return Ok(Vec::new()),
        };
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = self.read_bytes(&resolve, 0, 16 * labels.len() as u64)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = self.queue().get_timestamp_period() as f64 * 1e-9;
        Ok(labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l,
                    ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period,
                )
            })
            .collect())
    }
}
