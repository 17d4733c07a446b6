//! [wgpu-losses](wgpu_losses)' fused losses on burn tensors, on burn's own wgpu device.
//!
//! ```no_run
//! use burn::tensor::{Int, Tensor};
//! use wgpu_losses_burn::{cross_entropy, CrossEntropy};
//!
//! # fn main() -> Result<(), wgpu_losses_burn::Error> {
//! let device = wgpu_losses_burn::init()?.autodiff();
//! let logits = Tensor::<2>::from_floats([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], &device).require_grad();
//! let target = Tensor::<1, Int>::from_ints([0, 2], &device);
//! let loss = cross_entropy(&CrossEntropy::new().label_smoothing(0.1), logits.clone(), target, None)?;
//! let grads = loss.backward();
//! let grad = logits.grad(&grads);
//! # Ok(())
//! # }
//! ```
//!
//! Each function is one burn operation. Without autodiff it computes the loss alone; on an
//! autodiff device with a tracked input, the same kernels write every input's gradient in the
//! forward pass, and the backward node only scales those saved gradients by the upstream
//! gradient — nothing is recomputed. Inputs are read in place from burn's pooled buffers
//! and the row losses write their gradients straight into tensors burn allocated; the others
//! copy their gradient once (O(rows × dim), beside all-pairs or matrix-product work).
//!
//! Losses are `[1]` when reduced and one value per item (row, or element for the
//! elementwise losses, flattened) with `Reduction::None`. Under autodiff an unreduced loss
//! must be separable per item: the all-pairs losses and the fused linear loss take a
//! reduction.
//!
//! Bad input is an [`Error`]: what the host can see before the call, and what the kernels
//! report (a class index out of range, say). The kernels' report is read back after each
//! call that has one (cross-entropy and focal targets, elementwise labels), one small
//! blocking read per call.

mod backend;
mod call;
mod device;

use burn::backend::{Dispatch, DispatchTensor};
use burn::tensor::{Int, Tensor};

pub use backend::FusedLossBackend;
pub use call::LossCall;
pub use device::{engine, init, register};
pub use wgpu_losses::{
    Activation, ClassRows, ClassRowsKind, Contrastive, CosineEmbedding, CrossEntropy, Ctc,
    CtcInput, Distance, ElementwiseLoss, InfoNce, LinearCrossEntropy, MinedTriplet, Mining,
    NceKind, Nll, Overlap, OverlapKind, Pointwise, Ranking, RankingKind, Reduction, SoftmaxFocal,
    Triplet,
};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input, option or value the loss refuses (named with its row and value), or a
    /// wgpu error.
    #[error(transparent)]
    Loss(#[from] wgpu_losses::Error),
    /// burn could not initialize its wgpu device.
    #[error("burn could not initialize its wgpu device: {0}")]
    Init(String),
    /// Tensors on a device this crate does not share.
    #[error(
        "{0} is not a burn wgpu device shared with wgpu-losses \
         (create it with wgpu_losses_burn::init, or register it)"
    )]
    Device(String),
    /// A combination the burn operation cannot differentiate.
    #[error("{0}")]
    Unsupported(String),
}

/// The result of this crate's functions.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs `call` as one burn operation on `floats` (the differentiable inputs first) and the
/// class targets or labels, if the loss takes them.
fn fused(
    call: LossCall,
    floats: Vec<DispatchTensor>,
    labels: Option<DispatchTensor>,
) -> Result<Tensor<1>> {
    let device = Tensor::<1>::from_dispatch(floats[0].clone()).device();
    engine(&device)?;
    if device.is_autodiff() && call.reduction() == Reduction::None && !call.items_separable() {
        return Err(Error::Unsupported(format!(
            "{call:?}: under autodiff this loss needs a reduction (its per-item losses share \
             inputs, so saved gradients cannot be scaled item by item)"
        )));
    }
    debug_assert_eq!(floats.len(), call.float_inputs());
    // Slots past the call's inputs are not read; a clone of the first fills them.
    let first = floats[0].clone();
    let mut slots = floats.into_iter().chain(std::iter::repeat(first));
    let mut f = || slots.next().expect("repeats forever");
    let (f0, f1, f2, f3) = (f(), f(), f(), f());
    let mut out = match labels {
        Some(labels) => {
            <Dispatch as FusedLossBackend>::fused_loss_labeled(call, f0, f1, f2, f3, labels, false)
        }
        None => <Dispatch as FusedLossBackend>::fused_loss(call, f0, f1, f2, f3, false),
    };
    if let Some(e) = device::take_failure() {
        return Err(e.into());
    }
    Ok(Tensor::from_dispatch(out.remove(0)))
}

fn float<const D: usize>(t: Tensor<D>) -> DispatchTensor {
    t.into_dispatch()
}

fn int<const D: usize>(t: Tensor<D, Int>) -> DispatchTensor {
    t.into_dispatch()
}

/// Cross-entropy over `logits` `[N, C]` with class `target` `[N]` (any integer type; i64 is
/// narrowed), optional class `weight` `[C]`: every option of [`CrossEntropy`].
///
/// # Errors
/// Shapes, options and targets the loss refuses; devices not shared with this crate.
pub fn cross_entropy(
    loss: &CrossEntropy,
    logits: Tensor<2>,
    target: Tensor<1, Int>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    let call = LossCall::CrossEntropy {
        loss: loss.clone(),
        weight: weight.is_some(),
    };
    let floats = [Some(float(logits)), weight.map(float)];
    fused(
        call,
        floats.into_iter().flatten().collect(),
        Some(int(target)),
    )
}

/// Cross-entropy against target probabilities `[N, C]`.
///
/// # Errors
/// As [`cross_entropy`].
pub fn cross_entropy_probabilities(
    loss: &CrossEntropy,
    logits: Tensor<2>,
    target: Tensor<2>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    let call = LossCall::CrossEntropyProbabilities {
        loss: loss.clone(),
        weight: weight.is_some(),
    };
    let floats = [Some(float(logits)), Some(float(target)), weight.map(float)];
    fused(call, floats.into_iter().flatten().collect(), None)
}

/// Softmax focal loss over `logits` `[N, C]` with class `target` `[N]`, optional α `weight`
/// `[C]`.
///
/// # Errors
/// As [`cross_entropy`].
pub fn softmax_focal(
    loss: &SoftmaxFocal,
    logits: Tensor<2>,
    target: Tensor<1, Int>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    let call = LossCall::SoftmaxFocal {
        loss: *loss,
        weight: weight.is_some(),
    };
    let floats = [Some(float(logits)), weight.map(float)];
    fused(
        call,
        floats.into_iter().flatten().collect(),
        Some(int(target)),
    )
}

/// Negative log-likelihood over log-probabilities `input` `[N, C]` (PyTorch `F.nll_loss`)
/// with class `target` `[N]`, optional class `weight` `[C]`.
///
/// # Errors
/// As [`cross_entropy`].
pub fn nll(
    loss: &Nll,
    input: Tensor<2>,
    target: Tensor<1, Int>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    let call = LossCall::Nll {
        loss: *loss,
        weight: weight.is_some(),
    };
    let floats = [Some(float(input)), weight.map(float)];
    fused(
        call,
        floats.into_iter().flatten().collect(),
        Some(int(target)),
    )
}

/// Multi-margin loss (`loss.kind` is [`ClassRowsKind::MultiMargin`], PyTorch
/// `F.multi_margin_loss`) of scores `input` `[N, C]` with class `target` `[N]`, optional
/// class `weight` `[C]`.
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Unsupported`] for another kind of `loss`.
pub fn multi_margin(
    loss: &ClassRows,
    input: Tensor<2>,
    target: Tensor<1, Int>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    if !matches!(loss.kind, ClassRowsKind::MultiMargin { .. }) {
        return Err(Error::Unsupported(format!(
            "multi_margin computes ClassRowsKind::MultiMargin, not {:?}",
            loss.kind
        )));
    }
    let call = LossCall::ClassRows {
        loss: *loss,
        weight: weight.is_some(),
    };
    let floats = [Some(float(input)), weight.map(float)];
    fused(
        call,
        floats.into_iter().flatten().collect(),
        Some(int(target)),
    )
}

/// Multilabel soft-margin loss (`loss.kind` is [`ClassRowsKind::MultilabelSoftMargin`],
/// PyTorch `F.multilabel_soft_margin_loss`) of scores `input` `[N, C]` against `target`
/// `[N, C]` (0 or 1), optional class `weight` `[C]`.
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Unsupported`] for a multi-margin `loss`.
pub fn multilabel_soft_margin(
    loss: &ClassRows,
    input: Tensor<2>,
    target: Tensor<2>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    if loss.kind != ClassRowsKind::MultilabelSoftMargin {
        return Err(Error::Unsupported(format!(
            "multilabel_soft_margin computes ClassRowsKind::MultilabelSoftMargin, not {:?}",
            loss.kind
        )));
    }
    let call = LossCall::ClassRows {
        loss: *loss,
        weight: weight.is_some(),
    };
    let floats = [Some(float(input)), Some(float(target)), weight.map(float)];
    fused(call, floats.into_iter().flatten().collect(), None)
}

/// CTC (PyTorch `F.ctc_loss`) of `logits` `[T, N, C]` (the log-softmax is fused; or
/// log-probabilities with [`CtcInput::LogProbs`]) against `targets` padded `[N, S]` (any
/// integer type) with host `input_lengths` and `target_lengths` (PyTorch reads them on the host
/// too). Under autodiff the loss needs a reduction (`Mean`, the default, or `Sum`).
///
/// # Errors
/// As [`cross_entropy`]; bad lengths or targets name the sequence.
pub fn ctc(
    loss: &Ctc,
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    input_lengths: &[i32],
    target_lengths: &[i32],
) -> Result<Tensor<1>> {
    let call = LossCall::Ctc {
        loss: *loss,
        input_lengths: input_lengths.to_vec(),
        target_lengths: target_lengths.to_vec(),
    };
    fused(call, vec![float(logits)], Some(int(targets)))
}

/// Dice or Tversky (MONAI's `DiceLoss` / `TverskyLoss`, `loss.kind`) of `input`
/// `[N, C, spatial…]` (probabilities, or logits with `loss.activation`) against a one-hot (or
/// soft) `target` of the same shape (f32, not differentiated), with optional host class
/// `weight` (C values). Under autodiff the loss needs a reduction (a ratio's loss reads every
/// channel through softmax, every item with `batch`).
///
/// # Errors
/// As [`cross_entropy`].
pub fn overlap<const D: usize>(
    loss: &Overlap,
    input: Tensor<D>,
    target: Tensor<D>,
    weight: Option<&[f32]>,
) -> Result<Tensor<1>> {
    let call = LossCall::Overlap {
        loss: *loss,
        one_hot: true,
        weight: weight.map_or(Vec::new(), <[f32]>::to_vec),
    };
    fused(call, vec![float(input), float(target)], None)
}

/// [`overlap`] against class indices `labels` `[N, spatial…]` or `[N, 1, spatial…]` (any
/// integer type; MONAI's `to_onehot_y`).
///
/// # Errors
/// As [`cross_entropy`]; a class index outside `[0, C)` names its item.
pub fn overlap_labels<const D: usize, const E: usize>(
    loss: &Overlap,
    input: Tensor<D>,
    labels: Tensor<E, Int>,
    weight: Option<&[f32]>,
) -> Result<Tensor<1>> {
    let call = LossCall::Overlap {
        loss: *loss,
        one_hot: false,
        weight: weight.map_or(Vec::new(), <[f32]>::to_vec),
    };
    fused(call, vec![float(input)], Some(int(labels)))
}

/// A learning-to-rank loss (`loss.kind`: ranknet, pairwise hinge, listNet, listMLE or
/// lambda-NDCG) of `scores` `[Q, L]` against graded `relevance` `[Q, L]` (f32, not
/// differentiated), with optional per-list `lengths` `[Q]` (entries past a length are padding
/// and get a zero gradient). `Reduction::None` gives one loss per list.
///
/// # Errors
/// As [`cross_entropy`]; a length outside `[0, L]` names its list.
pub fn ranking(
    loss: &Ranking,
    scores: Tensor<2>,
    relevance: Tensor<2>,
    lengths: Option<Tensor<1, Int>>,
) -> Result<Tensor<1>> {
    let call = LossCall::Ranking {
        loss: *loss,
        lengths: lengths.is_some(),
    };
    fused(
        call,
        vec![float(scores), float(relevance)],
        lengths.map(int),
    )
}

/// Hinton's distillation loss (`loss.kind` is [`ClassRowsKind::DistillKl`]):
/// `τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))` per row of `student` `[N, C]` logits
/// against `teacher` logits (f32, not differentiated); `Reduction::Mean` is PyTorch's
/// `batchmean`.
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Unsupported`] for another `loss.kind`.
pub fn distill_kl(loss: &ClassRows, student: Tensor<2>, teacher: Tensor<2>) -> Result<Tensor<1>> {
    if !matches!(loss.kind, ClassRowsKind::DistillKl { .. }) {
        return Err(Error::Unsupported(format!(
            "distill_kl computes ClassRowsKind::DistillKl, not {:?}",
            loss.kind
        )));
    }
    let call = LossCall::ClassRows {
        loss: *loss,
        weight: false,
    };
    fused(call, vec![float(student), float(teacher)], None)
}

/// An elementwise loss ([`Pointwise`]: mse, l1, huber, smooth-l1, kl-div, bce-with-logits,
/// sigmoid focal, bce, hinge, quantile, power, soft-margin, hinge-embedding, poisson-nll…)
/// of `input` against `target`, both of one shape.
///
/// # Errors
/// As [`cross_entropy`].
pub fn elementwise<const D: usize>(
    loss: &ElementwiseLoss,
    input: Tensor<D>,
    target: Tensor<D>,
) -> Result<Tensor<1>> {
    elementwise_weighted(loss, input, target, None, None)
}

/// BCE-style elementwise losses with a `weight` and a `pos_weight` over the last dimension
/// (broadcast over the others).
///
/// # Errors
/// As [`cross_entropy`].
pub fn elementwise_weighted<const D: usize>(
    loss: &ElementwiseLoss,
    input: Tensor<D>,
    target: Tensor<D>,
    weight: Option<Tensor<1>>,
    pos_weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    let call = LossCall::Elementwise {
        loss: *loss,
        labels: false,
        weight: weight.is_some(),
        pos_weight: pos_weight.is_some(),
    };
    let floats = [
        Some(float(input)),
        Some(float(target)),
        weight.map(float),
        pos_weight.map(float),
    ];
    fused(call, floats.into_iter().flatten().collect(), None)
}

/// Margin ranking loss (`loss.kind` is [`Pointwise::MarginRanking`]) of `x1` against `x2`
/// with labels `y` (±1), all of one shape; differentiable in `x1` and `x2`.
///
/// # Errors
/// As [`cross_entropy`].
pub fn margin_ranking<const D: usize>(
    loss: &ElementwiseLoss,
    x1: Tensor<D>,
    x2: Tensor<D>,
    y: Tensor<D>,
) -> Result<Tensor<1>> {
    let call = LossCall::Elementwise {
        loss: *loss,
        labels: true,
        weight: false,
        pos_weight: false,
    };
    fused(call, vec![float(x1), float(x2), float(y)], None)
}

/// Contrastive loss of row pairs `x1`, `x2` `[N, D]` with `y` `[N]` (1 similar, 0
/// dissimilar).
///
/// # Errors
/// As [`cross_entropy`].
pub fn contrastive(
    loss: &Contrastive,
    x1: Tensor<2>,
    x2: Tensor<2>,
    y: Tensor<1>,
) -> Result<Tensor<1>> {
    let call = LossCall::Contrastive { loss: *loss };
    fused(call, vec![float(x1), float(x2), float(y)], None)
}

/// Cosine embedding loss of `x1`, `x2` `[N, D]` with `y` `[N]` in {−1, 1}.
///
/// # Errors
/// As [`cross_entropy`].
pub fn cosine_embedding(
    loss: &CosineEmbedding,
    x1: Tensor<2>,
    x2: Tensor<2>,
    y: Tensor<1>,
) -> Result<Tensor<1>> {
    let call = LossCall::CosineEmbedding { loss: *loss };
    fused(call, vec![float(x1), float(x2), float(y)], None)
}

/// Triplet margin loss of `anchor`, `positive`, `negative` `[N, D]`.
///
/// # Errors
/// As [`cross_entropy`].
pub fn triplet(
    loss: &Triplet,
    anchor: Tensor<2>,
    positive: Tensor<2>,
    negative: Tensor<2>,
) -> Result<Tensor<1>> {
    let call = LossCall::Triplet { loss: *loss };
    fused(
        call,
        vec![float(anchor), float(positive), float(negative)],
        None,
    )
}

/// Triplet loss with in-batch mining over `embeddings` `[N, D]` and class `labels` `[N]`.
///
/// # Errors
/// As [`cross_entropy`].
pub fn mined_triplet(
    loss: &MinedTriplet,
    embeddings: Tensor<2>,
    labels: Tensor<1, Int>,
) -> Result<Tensor<1>> {
    let call = LossCall::MinedTriplet { loss: *loss };
    fused(call, vec![float(embeddings)], Some(int(labels)))
}

fn nce_kind(loss: &InfoNce, kind: NceKind) -> Result<LossCall> {
    if loss.kind != kind {
        return Err(Error::Unsupported(format!(
            "this function computes {}, the options are for {}",
            kind.name(),
            loss.kind.name()
        )));
    }
    Ok(LossCall::InfoNce { loss: *loss })
}

/// SimCLR's NT-Xent over `z` `[2N, D]` (rows i and i + N are positives).
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Unsupported`] when `loss` is not an NT-Xent.
pub fn nt_xent(loss: &InfoNce, z: Tensor<2>) -> Result<Tensor<1>> {
    fused(nce_kind(loss, NceKind::NtXent)?, vec![float(z)], None)
}

/// CLIP's symmetric InfoNCE between `a` and `b` `[N, D]`.
///
/// # Errors
/// As [`nt_xent`].
pub fn clip(loss: &InfoNce, a: Tensor<2>, b: Tensor<2>) -> Result<Tensor<1>> {
    fused(
        nce_kind(loss, NceKind::Clip)?,
        vec![float(a), float(b)],
        None,
    )
}

/// Supervised contrastive loss over `embeddings` `[N, D]` with class `labels` `[N]`.
///
/// # Errors
/// As [`nt_xent`].
pub fn supcon(loss: &InfoNce, embeddings: Tensor<2>, labels: Tensor<1, Int>) -> Result<Tensor<1>> {
    fused(
        nce_kind(loss, NceKind::SupCon)?,
        vec![float(embeddings)],
        Some(int(labels)),
    )
}

/// Cross-entropy of `hidden` `[N, H]` · `classifier`ᵀ (`[V, H]`, `nn.Linear`'s layout) +
/// `bias` `[V]` against class `target` `[N]`, without the N×V logits; optional class
/// `weight` `[V]`. Differentiable in hidden, classifier and bias.
///
/// # Errors
/// As [`cross_entropy`].
pub fn linear_cross_entropy(
    loss: &LinearCrossEntropy,
    hidden: Tensor<2>,
    classifier: Tensor<2>,
    bias: Option<Tensor<1>>,
    target: Tensor<1, Int>,
    weight: Option<Tensor<1>>,
) -> Result<Tensor<1>> {
    let call = LossCall::LinearCrossEntropy {
        loss: loss.clone(),
        bias: bias.is_some(),
        weight: weight.is_some(),
    };
    let floats = [
        Some(float(hidden)),
        Some(float(classifier)),
        bias.map(float),
        weight.map(float),
    ];
    fused(
        call,
        floats.into_iter().flatten().collect(),
        Some(int(target)),
    )
}
