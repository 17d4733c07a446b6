//! Trains a small MLP on three noisy spiral arms with burn's Adam and wgpu-losses' fused
//! cross-entropy (label smoothing 0.1), and the same model from the same initial weights with
//! burn's own `CrossEntropyLoss`, on one wgpu device. Prints both loss curves, the held-out
//! accuracy and the time per training step.
//!
//! `cargo run --release -p wgpu-losses-burn --example spirals`

#[allow(dead_code)]
mod common;

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use common::{accuracy, spirals, tensors, train, Mlp, Rng};
use wgpu_losses_burn::{cross_entropy, CrossEntropy};

const STEPS: usize = 300;
const SMOOTHING: f32 = 0.1;

fn main() -> Result<(), wgpu_losses_burn::Error> {
    let device = wgpu_losses_burn::init()?.autodiff();
    let engine = wgpu_losses_burn::engine(&device)?;
    println!(
        "adapter: {} ({:?})",
        engine.adapter_info().name,
        engine.adapter_info().backend
    );

    let mut rng = Rng::new(7);
    let train_set = spirals(200, 3, 0.05, &mut rng);
    let test_set = spirals(100, 3, 0.0, &mut rng);
    let (x, y) = tensors(&train_set, &device);
    let (x_test, _) = tensors(&test_set, &device);

    device.seed(42);
    let initial = Mlp::new(2, 64, 3, &device);
    let fused_loss = CrossEntropy::new().label_smoothing(SMOOTHING);
    let burn_loss = CrossEntropyLossConfig::new()
        .with_smoothing(Some(SMOOTHING))
        .init(&device);

    let start = Instant::now();
    let (ours, our_curve) = train(initial.clone(), STEPS, 0.01, |m: &Mlp| {
        cross_entropy(&fused_loss, m.forward(x.clone()), y.clone(), None).expect("valid inputs")
    });
    let our_time = start.elapsed().as_secs_f64() / STEPS as f64;
    let start = Instant::now();
    let (theirs, burn_curve) = train(initial, STEPS, 0.01, |m: &Mlp| {
        burn_loss.forward(m.forward(x.clone()), y.clone())
    });
    let burn_time = start.elapsed().as_secs_f64() / STEPS as f64;

    println!("step  fused CE   burn CE");
    for step in (0..STEPS).step_by(25).chain([STEPS - 1]) {
        println!("{step:4}  {:.5}   {:.5}", our_curve[step], burn_curve[step]);
    }
    let labels = &test_set.labels;
    println!(
        "held-out accuracy: fused {:.3}, burn {:.3} ({} points, chance 0.333)",
        accuracy(ours.forward(x_test.clone()), labels),
        accuracy(theirs.forward(x_test), labels),
        labels.len()
    );
    println!(
        "time per step (forward, loss, backward, Adam): fused {:.2} ms, burn {:.2} ms",
        our_time * 1e3,
        burn_time * 1e3
    );
    loss_alone(&device);
    Ok(())
}

/// The loss and its gradient alone (forward, backward, gradient read back) at a larger shape.
fn loss_alone(device: &burn::tensor::Device) {
    use burn::tensor::{Int, Tensor, TensorData};
    let (n, c, calls) = (2048, 1000, 20);
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..n * c).map(|_| rng.normal()).collect();
    let t: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    let logits = Tensor::<2>::from_data(TensorData::new(x, [n, c]), device).require_grad();
    let target = Tensor::<1, Int>::from_data(TensorData::new(t, [n]), device);
    let fused_loss = CrossEntropy::new().label_smoothing(SMOOTHING);
    let burn_loss = CrossEntropyLossConfig::new()
        .with_smoothing(Some(SMOOTHING))
        .init(device);
    let time = |f: &dyn Fn() -> burn::tensor::Tensor<1>| {
        let grad = |l: burn::tensor::Tensor<1>| logits.grad(&l.backward()).expect("a gradient");
        let _ = grad(f()).into_data(); // warm-up: pipelines, pools
        let start = Instant::now();
        for _ in 0..calls {
            let _ = grad(f()).into_data();
        }
        start.elapsed().as_secs_f64() / calls as f64 * 1e3
    };
    let ours = time(&|| {
        cross_entropy(&fused_loss, logits.clone(), target.clone(), None).expect("valid inputs")
    });
    let theirs = time(&|| burn_loss.forward(logits.clone(), target.clone()));
    println!(
        "cross-entropy {n}x{c} alone (loss, backward, gradient read back): fused {ours:.2} ms, \
         burn {theirs:.2} ms ({:.2}x)",
        theirs / ours
    );
}
