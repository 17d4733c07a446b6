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
//! Semantics follow PyTorch; `docs/LOSSES.md` is the contract for every loss, with the
//! deliberate deviations.
//!
//! Layout: a core without wgpu ← the GPU core ← one folder per loss family (options and
//! checks, `gpu.rs` with its WGSL, `cpu.rs`, `reference.rs`) ← `registry` and the command
//! line (feature `cli`). The items re-exported here, [`cpu`] and [`reference`](mod@reference) are the public
//! API; everything else is private to the crate.

#[cfg(feature = "cli")]
pub mod cli;
mod core;
mod error;
mod gpu;
pub mod losses;
#[cfg(feature = "cli")]
pub mod registry;

pub use crate::core::{DType, Element, LossValues, Reduction, Upstream};
pub use error::{Error, Result};
pub use gpu::{adapters, Counters, Engine, EngineOptions, GpuLoss, LossOutput, Plan, Tensor};
pub use half::{bf16, f16};
pub use losses::class_rows::gpu::ClassRowsInputs;
pub use losses::class_rows::{ClassRows, ClassRowsKind};
pub use losses::cross_entropy::gpu::{CrossEntropyInputs, Target};
pub use losses::cross_entropy::{CrossEntropy, SoftmaxFocal};
pub use losses::ctc::gpu::CtcInputs;
pub use losses::ctc::{Ctc, CtcInput};
pub use losses::elementwise::gpu::ElementwiseInputs;
pub use losses::elementwise::{ElementwiseLoss, Pointwise};
pub use losses::linear_cross_entropy::gpu::LinearCrossEntropyInputs;
pub use losses::linear_cross_entropy::shard::{
    ShardGradients, ShardStatistics, VocabShard, SHARD_RECORD,
};
pub use losses::linear_cross_entropy::shard_gpu::ShardGradientInputs;
pub use losses::linear_cross_entropy::LinearCrossEntropy;
pub use losses::nll::gpu::NllInputs;
pub use losses::nll::Nll;
pub use losses::overlap::gpu::OverlapInputs;
pub use losses::overlap::{Activation, Overlap, OverlapKind};
pub use losses::pair_rows::gpu::{ContrastiveInputs, TripletInputs};
pub use losses::pair_rows::{Contrastive, CosineEmbedding, Triplet, PAIRWISE_EPS};
pub use losses::pairwise::gpu::{MinedTripletInputs, NceInputs, NceRows};
pub use losses::pairwise::{Distance, InfoNce, MinedTriplet, Mining, NceKind, NORM_EPS};
pub use losses::ranking::gpu::RankingInputs;
pub use losses::ranking::{Ranking, RankingKind};
#[cfg(feature = "cli")]
pub use registry::compare::{compare, Comparison, Tolerance};
pub use wgpu;

/// The multi-threaded CPU backend: every loss on host `f32` slices, with rayon and loops the
/// compiler vectorizes (AVX2 builds picked at run time), f64 where results accumulate. Same
/// options types and semantics as the GPU path; each family's `cpu.rs` is its shader's twin.
pub mod cpu {
    pub use crate::losses::class_rows::cpu::{class_rows, HostClassRowsInputs, HostClassTargets};
    pub use crate::losses::cross_entropy::cpu::{
        cross_entropy, cross_entropy_in_place, cross_entropy_into, softmax_focal,
        softmax_focal_into, HostRowInputs, HostTarget,
    };
    pub use crate::losses::ctc::cpu::{ctc, HostCtcInputs};
    pub use crate::losses::elementwise::cpu::{elementwise, elementwise_into, HostElementInputs};
    pub use crate::losses::linear_cross_entropy::cpu::{
        linear_cross_entropy, linear_shard_gradients, linear_shard_statistics, HostLinearInputs,
    };
    pub use crate::losses::nll::cpu::{nll, HostNllInputs};
    pub use crate::losses::overlap::cpu::{overlap, HostOverlapInputs, HostOverlapTarget};
    pub use crate::losses::pair_rows::cpu::{
        contrastive, cosine_embedding, triplet, HostContrastiveInputs, HostTripletInputs,
    };
    pub use crate::losses::pairwise::cpu::{
        info_nce, mined_triplet, HostMinedTripletInputs, HostNceInputs, HostNceRows,
    };
    pub use crate::losses::ranking::cpu::{ranking, HostRankingInputs};
}

/// The f64 references: plain loops written to be obviously right, with hand-derived
/// gradients (checked by finite differences in the tests). They prove the other backends.
pub mod reference {
    pub use crate::core::reference::RefOutput;
    pub use crate::losses::class_rows::reference::{class_rows, RefClassTargets};
    pub use crate::losses::cross_entropy::reference::{cross_entropy, softmax_focal, RefTarget};
    pub use crate::losses::ctc::reference::{ctc, RefCtcInputs};
    pub use crate::losses::elementwise::reference::{elementwise, RefInputs};
    pub use crate::losses::linear_cross_entropy::reference::{
        linear_cross_entropy, RefLinearInputs,
    };
    pub use crate::losses::nll::reference::nll;
    pub use crate::losses::overlap::reference::{overlap, RefOverlapInputs, RefOverlapTarget};
    pub use crate::losses::pair_rows::reference::{
        contrastive, cosine_embedding, pairwise_distance, triplet,
    };
    pub use crate::losses::pairwise::mined_reference::{distance_matrix, mined_triplet};
    pub use crate::losses::pairwise::reference::{info_nce_loss, normalize, normalize_backward};
    pub use crate::losses::ranking::reference::{ranking, RefRankingInputs};
}

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
