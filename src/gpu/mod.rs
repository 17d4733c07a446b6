//! The GPU core, one acyclic chain: shader modules ← kernels ← engine ← tensors ← dispatch.
//! Everything a loss family's `gpu.rs` needs to launch its kernels lives here, once.

pub(crate) mod dispatch;
pub(crate) mod engine;
pub(crate) mod kernel;
pub(crate) mod shader;
pub(crate) mod tensor;

pub use dispatch::LossOutput;
pub use engine::{adapters, BufferStats, Engine, EngineOptions};
pub use tensor::Tensor;
