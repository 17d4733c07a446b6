//! The burn backend extension: one operation, `fused_loss`, on burn's cubecl backend (our
//! kernels on burn's wgpu device and buffers) and on `Autodiff` over it (one backward node
//! whose gradients are the ones the forward kernels already wrote).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Autodiff, Backend, Cube, TensorMetadata};
use burn::tensor::{FloatDType, IntDType, Shape};

use crate::call::LossCall;
use crate::device;

/// The fused losses as operations of burn's backends. burn's extension macro routes bare
/// tensor arguments only, so the inputs are four float slots (the differentiable inputs
/// first; slots past the call's inputs hold a clone of the first and are not read) and, for
/// the losses with class targets or labels, one integer tensor.
#[backend_extension(Autodiff, Cube)]
pub trait FusedLossBackend: Backend {
    /// The loss of `call`, shaped `[1]` when reduced and `[items]` otherwise; with
    /// `gradients`, followed by the gradient of each differentiable input for an upstream
    /// gradient of ones.
    fn fused_loss(
        call: LossCall,
        f0: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        f3: FloatTensor<Self>,
        gradients: bool,
    ) -> Vec<FloatTensor<Self>>;

    /// [`fused_loss`](Self::fused_loss) with integer `labels` (class targets, labels).
    fn fused_loss_labeled(
        call: LossCall,
        f0: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        f3: FloatTensor<Self>,
        labels: IntTensor<Self>,
        gradients: bool,
    ) -> Vec<FloatTensor<Self>>;
}

impl FusedLossBackend for Cube {
    fn fused_loss(
        call: LossCall,
        f0: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        f3: FloatTensor<Self>,
        gradients: bool,
    ) -> Vec<FloatTensor<Self>> {
        cube_call(call, [f0, f1, f2, f3], None, gradients)
    }

    fn fused_loss_labeled(
        call: LossCall,
        f0: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        f3: FloatTensor<Self>,
        labels: IntTensor<Self>,
        gradients: bool,
    ) -> Vec<FloatTensor<Self>> {
        cube_call(call, [f0, f1, f2, f3], Some(labels), gradients)
    }
}

fn cube_call(
    call: LossCall,
    floats: [FloatTensor<Cube>; 4],
    labels: Option<IntTensor<Cube>>,
    gradients: bool,
) -> Vec<FloatTensor<Cube>> {
    let floats = floats.into_iter().take(call.float_inputs()).collect();
    let ints = labels
        .map(|t| match t.dtype {
            burn::tensor::DType::I32 => t,
            _ => Cube::int_cast(t, IntDType::I32),
        })
        .into_iter()
        .collect();
    device::run(call, floats, ints, gradients, |shape, dtype, like| {
        Cube::float_empty(Shape::from(shape.to_vec()), &like.device, dtype)
    })
}

impl<B: FusedLossBackend, C: CheckpointStrategy> FusedLossBackend for Autodiff<B, C> {
    fn fused_loss(
        call: LossCall,
        f0: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        f3: FloatTensor<Self>,
        _gradients: bool,
    ) -> Vec<FloatTensor<Self>> {
        differentiated::<B, C>(call, [f0, f1, f2, f3], None)
    }

    fn fused_loss_labeled(
        call: LossCall,
        f0: FloatTensor<Self>,
        f1: FloatTensor<Self>,
        f2: FloatTensor<Self>,
        f3: FloatTensor<Self>,
        labels: IntTensor<Self>,
        _gradients: bool,
    ) -> Vec<FloatTensor<Self>> {
        differentiated::<B, C>(call, [f0, f1, f2, f3], Some(labels))
    }
}

fn differentiated<B: FusedLossBackend, C: CheckpointStrategy>(
    call: LossCall,
    floats: [FloatTensor<Autodiff<B, C>>; 4],
    labels: Option<IntTensor<B>>,
) -> Vec<FloatTensor<Autodiff<B, C>>> {
    match call.gradient_names().len() {
        1 => tracked::<B, C, 1>(call, floats, labels),
        2 => tracked::<B, C, 2>(call, floats, labels),
        3 => tracked::<B, C, 3>(call, floats, labels),
        n => unreachable!("no loss has {n} differentiable inputs"),
    }
}

/// The backward node of a fused loss: the gradients its forward pass wrote for an upstream
/// gradient of ones, scaled by the real upstream gradient (a scalar, or one value per item
/// of an unreduced loss whose items are separable).
#[derive(Debug)]
struct SavedGradients;

impl<B: Backend, const N: usize> Backward<B, N> for SavedGradients {
    type State = Vec<FloatTensor<B>>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<B>(&ops.node);
        for (parent, saved) in ops.parents.iter().zip(ops.state) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, scaled::<B>(saved, upstream.clone()));
            }
        }
    }
}

/// `grad · upstream`, the upstream gradient broadcast over the trailing dimensions of `grad`
/// it lacks (a `[1]` scalar over everything, `[N]` per-row values over each row).
fn scaled<B: Backend>(grad: FloatTensor<B>, upstream: FloatTensor<B>) -> FloatTensor<B> {
    let shape = grad.shape();
    let mut dims: Vec<usize> = upstream.shape().iter().copied().collect();
    if dims.iter().product::<usize>() == 1 {
        dims.clear();
    }
    dims.resize(shape.num_dims(), 1);
    let upstream = B::float_reshape(upstream, Shape::from(dims));
    let upstream = B::float_expand(upstream, shape);
    // The loss (and so its upstream gradient) is f32; a 16-bit gradient is scaled in its type.
    let upstream = match grad.dtype() {
        dtype if dtype == upstream.dtype() => upstream,
        dtype => B::float_cast(upstream, FloatDType::from(dtype)),
    };
    B::float_mul(grad, upstream)
}

fn tracked<B: FusedLossBackend, C: CheckpointStrategy, const N: usize>(
    call: LossCall,
    floats: [FloatTensor<Autodiff<B, C>>; 4],
    labels: Option<IntTensor<B>>,
) -> Vec<FloatTensor<Autodiff<B, C>>> {
    let nodes: [NodeGuard; N] = std::array::from_fn(|i| floats[i].node());
    let [f0, f1, f2, f3] = floats.map(|t| t.into_primitive());
    let inner = |call: LossCall, gradients: bool| match labels {
        Some(labels) => B::fused_loss_labeled(call, f0, f1, f2, f3, labels, gradients),
        None => B::fused_loss(call, f0, f1, f2, f3, gradients),
    };
    match SavedGradients
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let mut out = inner(call, true);
            let saved = out.split_off(1);
            let loss = out.pop().expect("the loss comes first");
            vec![prep.finish(saved, loss)]
        }
        OpsKind::UnTracked(prep) => {
            let mut out = inner(call, false);
            vec![prep.finish(out.remove(0))]
        }
    }
}
