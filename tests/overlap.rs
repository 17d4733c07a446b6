//! Dice and Tversky's named cases on every backend: an empty foreground under each smoothing,
//! a perfect prediction, Tversky at α = β = ½ being Dice, and bad input as errors naming it.
//! MONAI fixtures are in tests/pytorch_fixtures.rs.

#[macro_use]
mod common;

use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::Error;

/// Two items, three channels, 2×3 positions: probabilities with channel 1 predicted 0
/// everywhere and absent from the one-hot target (labels only 0 and 2).
fn empty_channel_1() -> Case {
    let (n, c, s) = (2, 3, 6);
    let labels = [0, 2, 2, 0, 2, 0, 2, 2, 0, 0, 0, 2];
    let mut input = vec![0.0f32; n * c * s];
    let mut target = vec![0.0f32; n * c * s];
    for i in 0..n {
        for q in 0..s {
            let l = labels[i * s + q];
            target[(i * c + l) * s + q] = 1.0;
            input[(i * c) * s + q] = 0.25 + 0.05 * q as f32;
            input[(i * c + 2) * s + q] = 0.75 - 0.05 * q as f32;
        }
    }
    Case::default()
        .with("input", HostArray::f32(&[n, c, 2, 3], input))
        .with("target", HostArray::f32(&[n, c, 2, 3], target))
        .set("reduction", "none")
}

on_every_backend! {
    /// A channel empty in both prediction and target: its ratio is smooth_nr / smooth_dr, so
    /// its loss is 0 with MONAI's default smoothing (1e-5, 1e-5) and with (1, 1), and 1
    /// without numerator smoothing; its gradient is finite everywhere.
    fn an_empty_foreground_under_each_smoothing(backend) {
        for name in ["dice", "tversky"] {
            let def = wgpu_losses::losses::find(name).unwrap();
            for ((nr, dr), want) in [((1e-5, 1e-5), 0.0), ((0.0, 1e-5), 1.0), ((1.0, 1.0), 0.0)] {
                let case = empty_channel_1().set("smooth_nr", nr).set("smooth_dr", dr);
                let got = backend.run(def, &case).unwrap();
                // [N, C] per-ratio losses: channel 1 of each item.
                for item in 0..2 {
                    let v = got.loss[item * 3 + 1];
                    assert!((v - want).abs() < 1e-6, "{name} ({nr}, {dr}): {:?}", got.loss);
                }
                assert!(got.loss.iter().all(|v| v.is_finite()), "{name}: {:?}", got.loss);
                assert!(got.grads[0].1.iter().all(|g| g.is_finite()), "{name}");
            }
        }
    }
}

on_every_backend! {
    /// A prediction equal to its one-hot target has ratio 1: loss 0 for Dice, Jaccard and
    /// Tversky alike.
    fn a_perfect_prediction_costs_nothing(backend) {
        let case = empty_channel_1();
        let target = case.input("target").unwrap().data.to_f32();
        let perfect = case
            .clone()
            .with("input", HostArray::f32(&[2, 3, 2, 3], target))
            .set("reduction", "sum");
        for (name, extra) in [("dice", None), ("dice", Some("jaccard")), ("tversky", None)] {
            let def = wgpu_losses::losses::find(name).unwrap();
            let case = match extra {
                Some(flag) => perfect.clone().set(flag, true),
                None => perfect.clone(),
            };
            let got = backend.run(def, &case).unwrap();
            assert!(got.loss[0].abs() < 1e-6, "{name} {extra:?}: {:?}", got.loss);
        }
    }
}

on_every_backend! {
    /// Tversky with α = β = ½ is Dice: I + ½(P − I) + ½(G − I) = (P + G)/2.
    fn tversky_at_one_half_is_dice(backend) {
        let mut rng = common::fresh_rng("tversky_at_one_half_is_dice");
        let dice = wgpu_losses::losses::find("dice").unwrap();
        let tversky = wgpu_losses::losses::find("tversky").unwrap();
        for activation in ["none", "sigmoid", "softmax"] {
            let (n, c, s) = (2, 4, 30);
            let input = match activation {
                "none" => (0..n * c * s).map(|_| rng.range(0.0, 1.0) as f32).collect(),
                _ => rng.normals(n * c * s, 2.0),
            };
            let labels = (0..n * s).map(|_| rng.below(c) as i64).collect();
            // Dice's smoothing (2I + s) / (P + G + s) is Tversky's with s/2.
            let case = Case::default()
                .with("input", HostArray::f32(&[n, c, s], input))
                .with("target", HostArray::i64(&[n, s], labels))
                .set("activation", activation)
                .set("reduction", "none");
            let d = backend.run(dice, &case.clone().set("smooth_nr", 0.5).set("smooth_dr", 0.5));
            let t = backend.run(tversky, &case.set("smooth_nr", 0.25).set("smooth_dr", 0.25));
            let (d, t) = (d.unwrap(), t.unwrap());
            for (a, b) in d.loss.iter().zip(&t.loss) {
                assert!((a - b).abs() < 1e-6, "{activation}: {:?} vs {:?}", d.loss, t.loss);
            }
            for (a, b) in d.grads[0].1.iter().zip(&t.grads[0].1) {
                assert!((a - b).abs() < 1e-6, "{activation}: gradients differ");
            }
        }
    }
}

on_every_backend! {
    /// A class index outside [0, C) is an error naming the item and the value, as the
    /// reference's; so are a negative class weight (naming the class), softmax or a dropped
    /// background over one channel, and smooth_dr = 0.
    fn bad_input_is_an_error_naming_it(backend) {
        let def = wgpu_losses::losses::find("dice").unwrap();
        let input = HostArray::f32(&[2, 3, 4], vec![0.5; 24]);
        let labels = |bad: i64| HostArray::i64(&[2, 4], vec![0, 1, 2, 0, 1, bad, 2, 2]);
        for bad in [3, -1] {
            let case = Case::default().with("input", input.clone()).with("target", labels(bad));
            let err = backend.run(def, &case).unwrap_err();
            assert_eq!(err, def.reference(&case).unwrap_err());
            match &err {
                Error::Value { input: "target", row: 1, value, .. } => {
                    assert_eq!(value, &bad.to_string())
                }
                _ => panic!("{err}"),
            }
        }
        let good = Case::default().with("input", input).with("target", labels(1));
        let weighted = good.clone().with("weight", HostArray::f32(&[3], vec![1.0, -0.5, 1.0]));
        match backend.run(def, &weighted).unwrap_err() {
            Error::Value { input: "weight", row: 1, .. } => {}
            err => panic!("{err}"),
        }
        let short = good.clone().with("weight", HostArray::f32(&[2], vec![1.0, 1.0]));
        assert!(matches!(
            backend.run(def, &short).unwrap_err(),
            Error::Shape { input: "weight", .. }
        ));
        let no_smoothing = good.clone().set("smooth_dr", 0.0);
        assert!(matches!(
            backend.run(def, &no_smoothing).unwrap_err(),
            Error::Option { option: "smooth_dr", .. }
        ));
        let one_channel = Case::default()
            .with("input", HostArray::f32(&[2, 1, 4], vec![0.5; 8]))
            .with("target", HostArray::f32(&[2, 1, 4], vec![1.0; 8]));
        for (option, value) in [("activation", "softmax"), ("include_background", "false")] {
            let case = one_channel.clone().set(option, value);
            match backend.run(def, &case).unwrap_err() {
                Error::Option { option: o, .. } => assert_eq!(o, option),
                err => panic!("{option}: {err}"),
            }
        }
        // No spatial axis: MONAI's sums would run over nothing.
        let flat = Case::default()
            .with("input", HostArray::f32(&[2, 3], vec![0.5; 6]))
            .with("target", HostArray::i64(&[2], vec![0, 1]));
        assert!(matches!(
            backend.run(def, &flat).unwrap_err(),
            Error::Shape { input: "input", .. }
        ));
    }
}

on_every_backend! {
    /// A +∞ logit under softmax makes every channel's prediction at its position NaN (as
    /// PyTorch's softmax), so every ratio of its item is NaN and the other item's finite. The
    /// GPU's online normalizer used to give the other channels probability 0: finite losses.
    fn a_positive_infinite_logit_under_softmax_is_nan_in_its_item(backend) {
        let (n, c, s) = (2, 3, 4);
        let mut x: Vec<f32> = (0..n * c * s).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
        x[(c + 1) * s + 2] = f32::INFINITY; // item 1, channel 1, position 2
        let labels = HostArray::i64(&[n, s], vec![0, 1, 2, 1, 2, 2, 0, 1]);
        for name in ["dice", "tversky"] {
            let case = Case::default()
                .with("input", HostArray::f32(&[n, c, s], x.clone()))
                .with("target", labels.clone())
                .set("activation", "softmax")
                .set("reduction", "none");
            let def = wgpu_losses::losses::find(name).unwrap();
            let got = backend.run(def, &case).unwrap();
            assert!(got.loss[..c].iter().all(|v| v.is_finite()), "{name}: {:?}", got.loss);
            assert!(got.loss[c..].iter().all(|v| v.is_nan()), "{name}: {:?}", got.loss);
        }
    }
}
