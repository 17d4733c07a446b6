//! One fused loss call over device tensors of this crate's core: which loss, which of its
//! optional inputs are present, and how the flat lists of float and integer tensors the burn
//! extension passes map onto the loss's inputs.

use std::any::Any;
use std::cell::RefCell;

use wgpu_losses::{
    ClassRows, ClassRowsInputs, ClassRowsKind, Contrastive, ContrastiveInputs, CosineEmbedding,
    CrossEntropy, CrossEntropyInputs, Ctc, CtcInputs, ElementwiseInputs, ElementwiseLoss, Engine,
    GpuLoss, InfoNce, LinearCrossEntropy, LinearCrossEntropyInputs, LossOutput, MinedTriplet,
    MinedTripletInputs, NceInputs, NceKind, Nll, NllInputs, Overlap, OverlapInputs, Plan, Ranking,
    RankingInputs, Reduction, Result, SoftmaxFocal, Target, Tensor, Triplet, TripletInputs,
    Upstream,
};

/// A loss and the layout of its inputs. Floats come first in the order of each variant's
/// comment (differentiable inputs leading), then the optional ones that are present; integer
/// inputs are class targets or labels.
#[derive(Clone, Debug)]
pub enum LossCall {
    /// floats `[logits, weight?]`, ints `[target]`.
    CrossEntropy { loss: CrossEntropy, weight: bool },
    /// floats `[logits, target probabilities, weight?]`.
    CrossEntropyProbabilities { loss: CrossEntropy, weight: bool },
    /// floats `[logits, weight?]`, ints `[target]`.
    SoftmaxFocal { loss: SoftmaxFocal, weight: bool },
    /// floats `[log-probabilities, weight?]`, ints `[target]`.
    Nll { loss: Nll, weight: bool },
    /// floats `[scores, weight?]` with ints `[target]` (multi-margin), or floats
    /// `[scores, target per class, weight?]` (multilabel).
    ClassRows { loss: ClassRows, weight: bool },
    /// floats `[input, target, labels?, weight?, pos_weight?]`.
    Elementwise {
        loss: ElementwiseLoss,
        labels: bool,
        weight: bool,
        pos_weight: bool,
    },
    /// floats `[x1, x2, y]`.
    Contrastive { loss: Contrastive },
    /// floats `[x1, x2, y]`.
    CosineEmbedding { loss: CosineEmbedding },
    /// floats `[anchor, positive, negative]`.
    Triplet { loss: Triplet },
    /// floats `[embeddings]`, ints `[labels]`.
    MinedTriplet { loss: MinedTriplet },
    /// floats `[z]` (nt-xent), `[a, b]` (clip) or `[embeddings]` with ints `[labels]`
    /// (supcon).
    InfoNce { loss: InfoNce },
    /// floats `[hidden, classifier, bias?, weight?]`, ints `[target]`.
    LinearCrossEntropy {
        loss: LinearCrossEntropy,
        bias: bool,
        weight: bool,
    },
    /// floats `[scores, relevance]`, ints `[lengths]` when `lengths`.
    Ranking { loss: Ranking, lengths: bool },
    /// floats `[input, one-hot target]` when `one_hot`, else floats `[input]` with ints
    /// `[class indices]`; the class weights are host values (empty: none).
    Overlap {
        loss: Overlap,
        one_hot: bool,
        weight: Vec<f32>,
    },
    /// floats `[logits]` (`[T, N, C]`), ints `[targets]`; the lengths are host values.
    Ctc {
        loss: Ctc,
        input_lengths: Vec<i32>,
        target_lengths: Vec<i32>,
    },
}

impl LossCall {
    /// How many of the leading float inputs are differentiable, and the names the core gives
    /// their gradients, in that order.
    pub fn gradient_names(&self) -> &'static [&'static str] {
        match self {
            Self::CrossEntropy { .. }
            | Self::CrossEntropyProbabilities { .. }
            | Self::SoftmaxFocal { .. } => &["logits"],
            Self::Nll { .. } => &["input"],
            Self::ClassRows { loss, .. } => match loss.kind {
                ClassRowsKind::DistillKl { .. } => &["student"],
                _ => &["input"],
            },
            Self::Elementwise { loss, .. } => loss.kind.grad_names(),
            Self::Contrastive { .. } | Self::CosineEmbedding { .. } => &["x1", "x2"],
            Self::Triplet { .. } => &["anchor", "positive", "negative"],
            Self::MinedTriplet { .. } => &["embeddings"],
            Self::InfoNce { loss } => match loss.kind {
                NceKind::NtXent => &["z"],
                NceKind::Clip => &["a", "b"],
                NceKind::SupCon => &["embeddings"],
            },
            Self::LinearCrossEntropy { bias: true, .. } => &["hidden", "classifier", "bias"],
            Self::LinearCrossEntropy { bias: false, .. } => &["hidden", "classifier"],
            Self::Ranking { .. } => &["scores"],
            Self::Overlap { .. } => &["input"],
            Self::Ctc { .. } => &["logits"],
        }
    }

    /// How many float inputs the call has (at most four).
    pub fn float_inputs(&self) -> usize {
        match self {
            Self::CrossEntropy { weight, .. }
            | Self::SoftmaxFocal { weight, .. }
            | Self::Nll { weight, .. } => 1 + usize::from(*weight),
            Self::ClassRows { loss, weight } => {
                1 + usize::from(!loss.class_targets()) + usize::from(*weight)
            }
            Self::CrossEntropyProbabilities { weight, .. } => 2 + usize::from(*weight),
            Self::Elementwise {
                labels,
                weight,
                pos_weight,
                ..
            } => 2 + usize::from(*labels) + usize::from(*weight) + usize::from(*pos_weight),
            Self::Contrastive { .. } | Self::CosineEmbedding { .. } | Self::Triplet { .. } => 3,
            Self::MinedTriplet { .. } => 1,
            Self::InfoNce { loss } => 1 + usize::from(loss.kind == NceKind::Clip),
            Self::LinearCrossEntropy { bias, weight, .. } => {
                2 + usize::from(*bias) + usize::from(*weight)
            }
            Self::Ranking { .. } => 2,
            Self::Overlap { one_hot, .. } => 1 + usize::from(*one_hot),
            Self::Ctc { .. } => 1,
        }
    }

    /// The loss's reduction (the all-pairs losses always take the mean).
    pub fn reduction(&self) -> Reduction {
        match self {
            Self::CrossEntropy { loss, .. } | Self::CrossEntropyProbabilities { loss, .. } => {
                loss.reduction
            }
            Self::SoftmaxFocal { loss, .. } => loss.reduction,
            Self::Nll { loss, .. } => loss.reduction,
            Self::ClassRows { loss, .. } => loss.reduction,
            Self::Elementwise { loss, .. } => loss.reduction,
            Self::Contrastive { loss } => loss.reduction,
            Self::CosineEmbedding { loss } => loss.reduction,
            Self::Triplet { loss } => loss.reduction,
            Self::LinearCrossEntropy { loss, .. } => loss.reduction,
            Self::Ranking { loss, .. } => loss.reduction,
            Self::Overlap { loss, .. } => loss.reduction,
            Self::Ctc { loss, .. } => loss.reduction,
            Self::MinedTriplet { .. } | Self::InfoNce { .. } => Reduction::Mean,
        }
    }

    /// Whether each item's loss depends on its own row (or element) of every differentiable
    /// input alone, so that gradients saved for upstream ones scale item by item to any
    /// upstream gradient of an unreduced loss.
    pub fn items_separable(&self) -> bool {
        !matches!(
            self,
            Self::MinedTriplet { .. }
                | Self::InfoNce { .. }
                | Self::LinearCrossEntropy { .. }
                | Self::Ctc { .. }
                | Self::Overlap { .. }
        )
    }

    /// How many values the loss has for inputs whose first is shaped `first`: 1 when
    /// reduced, else one per row (one per element for the elementwise losses).
    pub fn loss_len(&self, first: &[usize]) -> usize {
        match (self.reduction(), self) {
            (Reduction::None, Self::Elementwise { .. }) => first.iter().product(),
            (Reduction::None, Self::Ctc { .. }) => first[1],
            (Reduction::None, Self::Overlap { loss, .. }) => {
                let kept = first[1] - usize::from(!loss.include_background);
                if loss.batch {
                    kept
                } else {
                    first[0] * kept
                }
            }
            (Reduction::None, _) => first[0],
            _ => 1,
        }
    }

    /// The same call with gradients on or off. Gradients always go to new tensors: burn's
    /// inputs are never overwritten (`in_place` is turned off).
    pub fn with_gradient(mut self, on: bool) -> Self {
        match &mut self {
            Self::CrossEntropy { loss, .. } | Self::CrossEntropyProbabilities { loss, .. } => {
                loss.gradient = on;
                loss.in_place = false;
            }
            Self::SoftmaxFocal { loss, .. } => {
                loss.gradient = on;
                loss.in_place = false;
            }
            Self::Nll { loss, .. } => loss.gradient = on,
            Self::ClassRows { loss, .. } => loss.gradient = on,
            Self::Elementwise { loss, .. } => loss.gradient = on,
            Self::Contrastive { loss } => loss.gradient = on,
            Self::CosineEmbedding { loss } => loss.gradient = on,
            Self::Triplet { loss } => loss.gradient = on,
            Self::MinedTriplet { loss } => loss.gradient = on,
            Self::InfoNce { loss } => loss.gradient = on,
            Self::LinearCrossEntropy { loss, .. } => loss.gradient = on,
            Self::Ranking { loss, .. } => loss.gradient = on,
            Self::Overlap { loss, .. } => loss.gradient = on,
            Self::Ctc { loss, .. } => loss.gradient = on,
        }
        self
    }

    /// Records the loss on `engine` into `encoder`. `grad_out` holds one destination per
    /// differentiable input; the row losses (cross-entropy, focal, elementwise) write their
    /// gradients there directly, the others into their own outputs, which the caller copies.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        floats: &[Tensor],
        ints: &[Tensor],
        grad_out: &[Tensor],
    ) -> Result<LossOutput> {
        let f = |i: usize| &floats[i];
        let optional = |present: bool, i: usize| present.then(|| &floats[i]);
        match self {
            Self::CrossEntropy { loss, weight }
            | Self::CrossEntropyProbabilities { loss, weight } => {
                let (target, next) = match self {
                    Self::CrossEntropy { .. } => (Target::Classes(&ints[0]), 1),
                    _ => (Target::Probabilities(f(1)), 2),
                };
                let mut inputs = CrossEntropyInputs::new(f(0), target);
                inputs.weight = optional(*weight, next);
                inputs.grad_out = grad_out.first();
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::SoftmaxFocal { loss, weight } => {
                let mut inputs = CrossEntropyInputs::new(f(0), Target::Classes(&ints[0]));
                inputs.weight = optional(*weight, 1);
                inputs.grad_out = grad_out.first();
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::ClassRows { loss, weight } => {
                let (target, next) = match loss.class_targets() {
                    true => (&ints[0], 1),
                    false => (f(1), 2),
                };
                let mut inputs = ClassRowsInputs::new(f(0), target);
                inputs.weight = optional(*weight, next);
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::Nll { loss, weight } => {
                let mut inputs = NllInputs::new(f(0), &ints[0]);
                inputs.weight = optional(*weight, 1);
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::Elementwise {
                loss,
                labels,
                weight,
                pos_weight,
            } => {
                let mut inputs = ElementwiseInputs::new(f(0), f(1));
                let mut next = 2;
                let mut take = |present: bool| {
                    let t = optional(present, next);
                    next += usize::from(present);
                    t
                };
                inputs.labels = take(*labels);
                inputs.weight = take(*weight);
                inputs.pos_weight = take(*pos_weight);
                inputs.grad_out = [grad_out.first(), grad_out.get(1)];
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::Contrastive { loss } => {
                planned(engine, loss, |plan| plan.record(encoder, &pair(floats)))
            }
            Self::CosineEmbedding { loss } => {
                planned(engine, loss, |plan| plan.record(encoder, &pair(floats)))
            }
            Self::Triplet { loss } => {
                let inputs = TripletInputs {
                    anchor: f(0),
                    positive: f(1),
                    negative: f(2),
                    upstream: Upstream::Ones,
                };
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::MinedTriplet { loss } => {
                let inputs = MinedTripletInputs::new(f(0), &ints[0]);
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::InfoNce { loss } => {
                let inputs = match loss.kind {
                    NceKind::NtXent => NceInputs::nt_xent(f(0)),
                    NceKind::Clip => NceInputs::clip(f(0), f(1)),
                    NceKind::SupCon => NceInputs::supcon(f(0), &ints[0]),
                };
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::LinearCrossEntropy { loss, bias, weight } => {
                let mut inputs = LinearCrossEntropyInputs::new(f(0), f(1), &ints[0]);
                inputs.bias = optional(*bias, 2);
                inputs.weight = optional(*weight, 2 + usize::from(*bias));
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::Ranking { loss, lengths } => {
                let mut inputs = RankingInputs::new(f(0), f(1));
                inputs.lengths = lengths.then(|| &ints[0]);
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::Overlap {
                loss,
                one_hot,
                weight,
            } => {
                let target = if *one_hot { f(1) } else { &ints[0] };
                let mut inputs = OverlapInputs::new(f(0), target);
                inputs.weight = (!weight.is_empty()).then_some(&weight[..]);
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
            Self::Ctc {
                loss,
                input_lengths,
                target_lengths,
            } => {
                let inputs = CtcInputs::new(f(0), &ints[0], input_lengths, target_lengths);
                planned(engine, loss, |plan| plan.record(encoder, &inputs))
            }
        }
    }
}

/// Contrastive and cosine embedding's inputs: floats `[x1, x2, y]`.
fn pair(floats: &[Tensor]) -> ContrastiveInputs<'_> {
    ContrastiveInputs {
        x1: &floats[0],
        x2: &floats[1],
        y: &floats[2],
        upstream: Upstream::Ones,
    }
}

/// Records with this thread's plan for `loss` on `engine`, made on first use: a training
/// loop's repeated calls then reuse the workspace, outputs and bind groups (the outputs are
/// copied into burn's tensors in the same submission, so reusing them is safe). The few most
/// recent (engine, options) pairs are kept.
fn planned<L: GpuLoss + std::fmt::Debug + 'static>(
    engine: &Engine,
    loss: &L,
    record: impl FnOnce(&mut Plan<L>) -> Result<LossOutput>,
) -> Result<LossOutput> {
    const KEPT: usize = 16;
    /// A plan with the device and options it was made for.
    type Kept = (wgpu::Device, String, Box<dyn Any>);
    thread_local! {
        static PLANS: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
    }
    let key = format!("{loss:?}");
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        let found = plans.iter().position(|(device, k, plan)| {
            device == engine.device() && *k == key && plan.is::<Plan<L>>()
        });
        let entry = match found {
            Some(i) => plans.remove(i),
            None => (
                engine.device().clone(),
                key,
                Box::new(loss.plan(engine)) as Box<dyn Any>,
            ),
        };
        plans.push(entry);
        if plans.len() > KEPT {
            plans.remove(0);
        }
        let plan = plans
            .last_mut()
            .expect("just pushed")
            .2
            .downcast_mut::<Plan<L>>();
        record(plan.expect("checked by type"))
    })
}
