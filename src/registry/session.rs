//! Device state kept across GPU calls of one loss, as a training loop keeps it: the loss's
//! [`Plan`] and its input tensors, refilled in place when a case of the same shapes comes.

use std::any::Any;
use std::collections::HashMap;

use crate::core::{DType, LossValues};
use crate::error::Result;
use crate::gpu::{Counters, Engine, GpuLoss, Plan, Tensor};

/// What [`LossDef::gpu_in`](super::LossDef::gpu_in) runs in. A fresh session per call is
/// a one-off call; one session across same-shaped cases is a training loop's steady state.
pub struct GpuSession<'e> {
    engine: &'e Engine,
    inputs: HashMap<&'static str, Tensor>,
    plan: Option<Box<dyn Any>>,
    recorded: Counters,
}

impl<'e> GpuSession<'e> {
    /// A session with no plan and no inputs yet.
    pub fn new(engine: &'e Engine) -> Self {
        Self {
            engine,
            inputs: HashMap::new(),
            plan: None,
            recorded: Counters::default(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &'e Engine {
        self.engine
    }

    /// What the last [`GpuSession::run`] cost to record (its readback excluded): the
    /// structural budget of one call.
    pub fn last_recorded(&self) -> Counters {
        self.recorded
    }

    fn put(
        &mut self,
        name: &'static str,
        bytes: &[u8],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        if let Some(t) = self.inputs.get(name) {
            if t.shape() == shape && t.dtype() == dtype {
                // Whole words: an odd count of 16-bit values takes 2 bytes of padding.
                let mut words = bytes.to_vec();
                words.resize(bytes.len().next_multiple_of(4), 0);
                self.engine
                    .queue()
                    .write_buffer(t.buffer(), t.offset(), &words);
                return Ok(t.clone());
            }
        }
        let t = self.engine.upload_bytes(bytes, shape, dtype)?;
        self.inputs.insert(name, t.clone());
        Ok(t)
    }

    /// The f32 input `name` holding `data`: the kept tensor, rewritten, when its shape
    /// matches; else a new one.
    ///
    /// # Errors
    /// As [`Engine::upload`].
    pub fn upload(&mut self, name: &'static str, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.put(name, bytemuck::cast_slice(data), shape, DType::F32)
    }

    /// The float input `name` holding `data` rounded to `dtype` (f32, f16 or bf16).
    ///
    /// # Errors
    /// As [`Engine::upload_as`].
    pub fn upload_as(
        &mut self,
        name: &'static str,
        data: &[f32],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let bytes: Vec<u8> = match dtype {
            DType::F16 => data
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            DType::BF16 => data
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
            _ => return self.upload(name, data, shape),
        };
        self.put(name, &bytes, shape, dtype)
    }

    /// [`GpuSession::upload`] for i32 data.
    ///
    /// # Errors
    /// As [`Engine::upload_i32`].
    pub fn upload_i32(
        &mut self,
        name: &'static str,
        data: &[i32],
        shape: &[usize],
    ) -> Result<Tensor> {
        self.put(name, bytemuck::cast_slice(data), shape, DType::I32)
    }

    /// Runs `loss` through the kept plan when that plans an equal loss, else a new plan:
    /// records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`Plan::run`].
    pub fn run<L>(&mut self, loss: &L, inputs: &L::Inputs<'_>) -> Result<LossValues>
    where
        L: GpuLoss + PartialEq + 'static,
    {
        let reusable = self
            .plan
            .as_ref()
            .and_then(|p| p.downcast_ref::<Plan<L>>())
            .is_some_and(|p| p.loss() == loss);
        if !reusable {
            self.plan = Some(Box::new(loss.plan(self.engine)));
        }
        let plan = self
            .plan
            .as_mut()
            .and_then(|p| p.downcast_mut::<Plan<L>>())
            .expect("set above");
        let engine = self.engine;
        let recorded = &mut self.recorded;
        engine.execute(|encoder| {
            let before = engine.counters();
            let out = plan.record(encoder, inputs);
            *recorded = engine.counters().since(&before);
            out
        })
    }
}
