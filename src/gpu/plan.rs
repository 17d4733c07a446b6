//! Plans: what a training loop holds across steps. Every GPU loss is a [`GpuLoss`]; its
//! `record` and `run` are conveniences over a one-off plan.

use crate::core::LossValues;
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::output::LossOutput;
use crate::gpu::record::{Recorder, Workspace};
use crate::gpu::tensor::Tensor;

/// A loss that records on the GPU. Its inputs are a struct of device tensors
/// ([`CrossEntropyInputs`](crate::CrossEntropyInputs), …).
pub trait GpuLoss: Clone {
    /// The device inputs of one call.
    type Inputs<'a>;

    /// Checks `inputs` and records the call: the one implementation of each loss's GPU
    /// path, behind [`Plan::record`].
    #[doc(hidden)]
    fn record_into(&self, rec: &mut Recorder<'_>, inputs: &Self::Inputs<'_>) -> Result<LossOutput>;

    /// A plan for repeated calls on `engine`; see [`Plan`].
    fn plan(&self, engine: &Engine) -> Plan<Self> {
        Plan {
            engine: engine.clone(),
            loss: self.clone(),
            workspace: Workspace::default(),
        }
    }
}

/// A loss bound to an engine with the buffers, parameters and bind groups of its last call,
/// for the training loop that calls it every step.
///
/// The first call allocates every workspace and output; later calls with inputs of the
/// same shapes create no buffer, and none of the bind groups whose buffers come back, and
/// write the parameters (the upstream scalar, say) with at most one small queue write when
/// they changed. The budgets per loss are pinned in the tests through
/// [`Engine::counters`].
///
/// The outputs live in the plan: each call overwrites those of the last, and the parameter
/// write lands at the next submission. So submit (and read what you need) before the next
/// `record` of the same plan; two plans of one loss can be in flight together.
#[derive(Debug)]
pub struct Plan<L> {
    engine: Engine,
    loss: L,
    workspace: Workspace,
}

impl<L: GpuLoss> Plan<L> {
    /// The loss and its options.
    pub fn loss(&self) -> &L {
        &self.loss
    }

    /// The engine the plan records for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Records the loss (and gradients) into `encoder`. Submit the encoder, then read the
    /// results with [`Engine::read_output`] (which also reports invalid inputs that only
    /// the kernels see) or use the device tensors directly.
    ///
    /// # Errors
    /// Invalid options, shapes or types, sizes past the adapter's limits, wgpu errors.
    pub fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &L::Inputs<'_>,
    ) -> Result<LossOutput> {
        let engine = &self.engine;
        let mut rec = Recorder::new(engine, &mut self.workspace);
        let out = self.loss.record_into(&mut rec, inputs)?;
        engine.scoped(|| rec.finish(encoder))?;
        Ok(out)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Plan::record`], plus [`Error::Value`] naming the first invalid input row the
    /// kernels reported.
    pub fn run(&mut self, inputs: &L::Inputs<'_>) -> Result<LossValues> {
        let engine = self.engine.clone();
        engine.execute(|encoder| self.record(encoder, inputs))
    }
}

/// `Err` when an output tensor the caller passed overlaps one of the inputs (views of one
/// buffer may be both, but not over the same bytes).
pub(crate) fn check_disjoint(
    outputs: &[(&'static str, &Tensor)],
    inputs: &[(&str, &Tensor)],
) -> Result<()> {
    for &(out_name, out) in outputs {
        for &(in_name, input) in inputs {
            if out.overlaps(input) {
                return Err(Error::Option {
                    option: out_name,
                    value: format!("overlaps `{in_name}`"),
                    reason: "an output must not share bytes with an input (use in_place)",
                });
            }
        }
    }
    Ok(())
}
