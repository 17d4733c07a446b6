//! The GPU core, one acyclic chain: shader modules ← kernels ← engine ← tensors ← outputs
//! ← recording ← plans. Everything a loss family's `gpu.rs` needs to launch its kernels
//! lives here, once.

pub(crate) mod convert;
pub(crate) mod engine;
pub(crate) mod kernel;
pub(crate) mod output;
pub(crate) mod plan;
pub(crate) mod profile;
pub(crate) mod record;
pub(crate) mod shader;
pub(crate) mod tensor;

pub use engine::{adapters, Counters, Engine, EngineOptions};
pub use output::LossOutput;
pub use plan::{GpuLoss, Plan};
pub use tensor::Tensor;
