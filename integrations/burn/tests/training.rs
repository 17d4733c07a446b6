//! Short training runs with burn's optimizer: the fused cross-entropy trains a classifier as
//! burn's own loss does (the two loss curves agree step by step at first, and both reach the
//! same accuracy), and the mined triplet loss trains an embedding whose retrieval accuracy
//! rises far above chance.

#[path = "../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;

use burn::nn::loss::CrossEntropyLossConfig;
use common::{
    accuracy, hidden_blobs, nearest_neighbour_accuracy, spirals, tensors, train, values, Mlp, Rng,
};
use wgpu_losses_burn::{cross_entropy, mined_triplet, CrossEntropy, MinedTriplet};

#[test]
fn training_on_burn() {
    let device = wgpu_losses_burn::init()
        .expect("a wgpu adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)")
        .autodiff();

    // A classifier on noisy spirals, from one set of initial weights with either loss.
    let mut rng = Rng::new(7);
    let train_set = spirals(100, 3, 0.05, &mut rng);
    let test_set = spirals(60, 3, 0.0, &mut rng);
    let (x, y) = tensors(&train_set, &device);
    let (x_test, _) = tensors(&test_set, &device);
    device.seed(42);
    let initial = Mlp::new(2, 32, 3, &device);
    let steps = 150;
    let fused = CrossEntropy::new().label_smoothing(0.1);
    let (ours, our_curve) = train(initial.clone(), steps, 0.02, |m: &Mlp| {
        cross_entropy(&fused, m.forward(x.clone()), y.clone(), None).unwrap()
    });
    let burn_loss = CrossEntropyLossConfig::new()
        .with_smoothing(Some(0.1))
        .init(&device);
    let (theirs, burn_curve) = train(initial, steps, 0.02, |m: &Mlp| {
        burn_loss.forward(m.forward(x.clone()), y.clone())
    });
    for step in 0..10 {
        let (a, b) = (our_curve[step], burn_curve[step]);
        assert!(
            (a - b).abs() <= 1e-4 * b,
            "step {step}: fused {a}, burn {b}"
        );
    }
    let ours = accuracy(ours.forward(x_test.clone()), &test_set.labels);
    let theirs = accuracy(theirs.forward(x_test), &test_set.labels);
    println!(
        "spirals: held-out accuracy fused {ours:.3}, burn {theirs:.3}; final loss {} / {}",
        our_curve[steps - 1],
        burn_curve[steps - 1]
    );
    assert!(ours >= 0.9, "fused cross-entropy reached {ours}");
    assert!(theirs >= 0.9, "burn's loss reached {theirs}");
    assert!(
        (ours - theirs).abs() <= 0.05,
        "fused {ours} vs burn {theirs}"
    );

    // An embedding that must learn which 4 of 32 coordinates carry the class.
    let mut rng = Rng::new(11);
    let [train_set, test_set] = hidden_blobs([20, 10], 10, 32, 4, 3.0, &mut rng);
    let (x, y) = tensors(&train_set, &device);
    let (x_test, _) = tensors(&test_set, &device);
    device.seed(3);
    let model = Mlp::new(32, 64, 16, &device);
    let loss = MinedTriplet::new();
    let (model, curve) = train(model, 120, 0.005, |m: &Mlp| {
        mined_triplet(&loss, m.forward(x.clone()), y.clone()).unwrap()
    });
    let retrieval = nearest_neighbour_accuracy(
        &values(model.forward(x_test)),
        &test_set.labels,
        &values(model.forward(x)),
        &train_set.labels,
        16,
    );
    let raw = nearest_neighbour_accuracy(
        &test_set.x,
        &test_set.labels,
        &train_set.x,
        &train_set.labels,
        32,
    );
    println!(
        "blobs: retrieval accuracy {retrieval:.3}, raw points {raw:.3} (chance 0.1); loss {} -> {}",
        curve[0], curve[119]
    );
    assert!(
        curve[119] < curve[0],
        "mined triplet loss {} -> {}",
        curve[0],
        curve[119]
    );
    assert!(
        retrieval >= 0.5 && retrieval >= raw + 0.3,
        "retrieval {retrieval}, raw {raw}"
    );
}
