//! Trains an embedding network with wgpu-losses' mined triplet loss (batch-all, margin 0.2)
//! on Gaussian blobs whose class shows in 4 of 32 coordinates, the other 28 being larger
//! noise: nearest neighbours on the raw points are near chance, and the embedding has to
//! learn which coordinates matter. Prints the loss curve and the held-out retrieval accuracy
//! (the nearest training embedding has the query's class) before and after.
//!
//! `cargo run --release -p wgpu-losses-burn --example embeddings`

#[allow(dead_code)]
mod common;

use common::{hidden_blobs, nearest_neighbour_accuracy, tensors, train, values, Mlp, Rng};
use wgpu_losses_burn::{mined_triplet, MinedTriplet};

const STEPS: usize = 200;

fn main() -> Result<(), wgpu_losses_burn::Error> {
    let device = wgpu_losses_burn::init()?.autodiff();
    let engine = wgpu_losses_burn::engine(&device)?;
    println!(
        "adapter: {} ({:?})",
        engine.adapter_info().name,
        engine.adapter_info().backend
    );

    let mut rng = Rng::new(11);
    let (classes, dim, signal, noise) = (10, 32, 4, 3.0);
    let [train_set, test_set] = hidden_blobs([40, 20], classes, dim, signal, noise, &mut rng);
    let (x, y) = tensors(&train_set, &device);
    let (x_test, _) = tensors(&test_set, &device);
    let retrieval = |model: &Mlp| {
        let base = values(model.forward(x.clone()));
        let query = values(model.forward(x_test.clone()));
        nearest_neighbour_accuracy(&query, &test_set.labels, &base, &train_set.labels, 16)
    };

    device.seed(3);
    let model = Mlp::new(dim, 64, 16, &device);
    let raw = nearest_neighbour_accuracy(
        &test_set.x,
        &test_set.labels,
        &train_set.x,
        &train_set.labels,
        dim,
    );
    println!(
        "retrieval accuracy on raw points: {raw:.3} (chance {:.3})",
        1.0 / classes as f32
    );
    println!(
        "retrieval accuracy, untrained embedding: {:.3}",
        retrieval(&model)
    );

    let loss = MinedTriplet::new();
    let (model, curve) = train(model, STEPS, 0.005, |m: &Mlp| {
        mined_triplet(&loss, m.forward(x.clone()), y.clone()).expect("valid inputs")
    });
    for step in (0..STEPS).step_by(20).chain([STEPS - 1]) {
        println!("step {step:4}  mined triplet loss {:.5}", curve[step]);
    }
    println!(
        "retrieval accuracy, trained embedding: {:.3}",
        retrieval(&model)
    );
    Ok(())
}
