//! Deep-learning loss functions and their gradients, fused in WGSL compute shaders, on any
//! wgpu adapter (Vulkan, Metal, DX12, GL, or a software Vulkan device).
//!
//! ```no_run
//! use wgpu_losses::{CrossEntropy, CrossEntropyInputs, Engine, Target};
//!
//! # fn main() -> Result<(), wgpu_losses::Error> {
//! let engine = Engine::new()?;
//! let logits = engine.upload(&[2.0, 0.5, -1.0, 0.0, 1.0, 3.0], &[2, 3])?;
//! let target = engine.upload_i32(&[0, 2], &[2])?;
//! let out = CrossEntropy::new()
//!     .label_smoothing(0.1)
//!     .run(&engine, &CrossEntropyInputs::new(&logits, Target::Classes(&target)))?;
//! println!("loss {} grad {:?}", out.loss[0], out.grad("logits"));
//! # Ok(())
//! # }
//! ```
//!
//! Semantics follow PyTorch; see the README for each loss and the deliberate deviations.

pub mod bench;
pub mod compare;
pub mod cpu;
pub mod engine;
pub mod error;
pub(crate) mod launch;
pub mod losses;
pub mod npy;
pub mod random;
pub mod reference;
pub mod registry;
pub mod shader;
pub mod tensor;

pub use compare::{compare, Comparison, Tolerance};
pub use engine::{adapters, BufferStats, Engine, EngineOptions};
pub use error::{Error, Result};
pub use losses::cross_entropy::{CrossEntropy, CrossEntropyInputs, Target};
pub use losses::elementwise::{ElementwiseInputs, ElementwiseLoss, Pointwise};
pub use losses::metric_options::{
    Contrastive, Distance, InfoNce, MinedTriplet, Mining, NceKind, Triplet,
};
pub use losses::pair_rows::{ContrastiveInputs, TripletInputs};
pub use losses::pairwise::NceInputs;
pub use losses::softmax_focal::SoftmaxFocal;
pub use losses::{LossOutput, LossValues, Reduction, Upstream};
pub use tensor::{DType, Tensor};
pub use wgpu;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
