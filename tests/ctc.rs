//! CTC's named cases on every backend: long sequences with a large vocabulary and mixed
//! lengths against the f64 reference, impossible alignments, and bad lengths and targets as
//! errors naming the sequence. PyTorch's values are in tests/pytorch_fixtures.rs.

#[macro_use]
mod common;

use common::{check_on, fresh_rng};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::{Error, Tolerance};

fn def() -> &'static dyn wgpu_losses::registry::LossDef {
    wgpu_losses::losses::find("ctc").unwrap()
}

/// Padded targets drawn from `labels` (so repeats come often), -1 past each length.
fn padded(rng: &mut Rng, lengths: &[i64], s: usize, labels: usize) -> HostArray {
    let mut v = Vec::new();
    for &len in lengths {
        for j in 0..s as i64 {
            v.push(if j < len {
                1 + rng.below(labels) as i64
            } else {
                -1
            });
        }
    }
    HostArray::i64(&[lengths.len(), s], v)
}

fn case(
    logits: HostArray,
    targets: HostArray,
    input_lengths: &[i64],
    target_lengths: &[i64],
) -> Case {
    let n = input_lengths.len();
    Case::default()
        .with("logits", logits)
        .with("targets", targets)
        .with(
            "input_lengths",
            HostArray::i64(&[n], input_lengths.to_vec()),
        )
        .with(
            "target_lengths",
            HostArray::i64(&[n], target_lengths.to_vec()),
        )
}

on_every_backend! {
    /// T = 300, S up to 60, C = 5000, frames and targets of mixed lengths (one empty), labels
    /// from a few classes (many repeats), mean and none, against the f64 reference. The
    /// frames favour the blank and the label classes, as a trained model's do. The GPU's
    /// log-space recursions run in f32, whose error in the gradient's posterior term grows
    /// with Σ_t |log p_t| along the sequence: at T = 1000 with near-uniform frames (about
    /// −8.5 each) it reached 2.4·10⁻⁵ of the largest gradient, past the 1e-5 tolerance on
    /// about one seed in eight (the README's CTC section states this limit).
    fn long_sequences_with_a_large_vocabulary(backend) {
        let mut rng = fresh_rng("ctc long sequences");
        let (t, c, s) = (300, 5000, 60);
        let input_lengths = [300, 190, 90];
        let target_lengths = [60, 45, 0];
        let mut x = rng.normals(t * 3 * c, 1.0);
        for frame in x.chunks_mut(c) {
            frame[..7].iter_mut().for_each(|v| *v += 6.0);
        }
        let targets = padded(&mut rng, &target_lengths, s, 6);
        for reduction in ["mean", "none"] {
            let case = case(
                HostArray::f32(&[t, 3, c], x.clone()),
                targets.clone(),
                &input_lengths,
                &target_lengths,
            )
            .set("reduction", reduction);
            assert!(check_on(backend, def(), &case, Tolerance::default()));
        }
    }
}

on_every_backend! {
    /// Sequence 1 needs more frames than it has (repeats need a blank between them): its loss
    /// is ∞ (0 with zero_infinity) and its gradient 0 (PyTorch's is NaN without
    /// zero_infinity: docs/LOSSES.md); the other sequences are unaffected.
    fn an_impossible_alignment_is_infinite_with_a_zero_gradient(backend) {
        let mut rng = fresh_rng("ctc impossible");
        let (t, n, c) = (4, 3, 5);
        let x = rng.normals(t * n * c, 1.0);
        let targets = HostArray::i64(&[n, 3], vec![1, 2, -1, 3, 3, 3, 4, -1, -1]);
        let base = case(HostArray::f32(&[t, n, c], x), targets, &[4, 4, 3], &[2, 3, 1])
            .set("reduction", "none");
        for zero_infinity in [false, true] {
            let case = base.clone().set("zero_infinity", zero_infinity);
            let got = backend.run(def(), &case).unwrap();
            let want = def().reference(&case).unwrap();
            assert_eq!(got.loss[1], if zero_infinity { 0.0 } else { f32::INFINITY });
            assert!(got.loss[0].is_finite() && got.loss[2].is_finite(), "{:?}", got.loss);
            let grad = &got.grads[0].1;
            for frame in 0..t {
                let row = &grad[(frame * n + 1) * c..(frame * n + 2) * c];
                assert!(row.iter().all(|&g| g == 0.0), "frame {frame}: {row:?}");
            }
            for (i, (g, w)) in grad.iter().zip(&want.grads[0].1).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-6, "[{i}] {g} vs {w}");
            }
        }
        // A mean over a batch with an infinite loss is infinite, as PyTorch's.
        let got = backend.run(def(), &base.clone().set("reduction", "mean")).unwrap();
        assert_eq!(got.loss, vec![f32::INFINITY]);
    }
}

on_every_backend! {
    /// Lengths outside [0, T] or [0, S] (or past the concatenated targets), and targets that
    /// are the blank or not a class within a sequence's length, are errors naming the
    /// sequence and the value, the same on this backend as on the reference; padding past a
    /// target's length is never read.
    fn bad_lengths_and_targets_name_the_sequence(backend) {
        let x = HostArray::f32(&[5, 2, 4], vec![0.25; 40]);
        let padded = |v: Vec<i64>| HostArray::i64(&[2, 3], v);
        let concatenated = |v: Vec<i64>| HostArray::i64(&[v.len()], v);
        let good = padded(vec![1, 2, -9, 3, 99, 99]);
        let cases = [
            (good.clone(), [5, 6], [2, 1], "input_lengths", 1, "6"),
            (good.clone(), [-1, 5], [2, 1], "input_lengths", 0, "-1"),
            (good.clone(), [5, 5], [2, 4], "target_lengths", 1, "4"),
            (concatenated(vec![1, 2, 3]), [5, 5], [2, 2], "target_lengths", 1, "2"),
            (padded(vec![1, 2, 0, 3, 0, 3]), [5, 5], [2, 3], "targets", 1, "0"),
            (padded(vec![1, 4, -9, 3, 9, 9]), [5, 5], [2, 1], "targets", 0, "4"),
            (concatenated(vec![1, 2, 3, -2]), [5, 5], [2, 2], "targets", 1, "-2"),
        ];
        for (targets, il, tl, input, row, value) in cases {
            let case = case(x.clone(), targets, &il, &tl);
            let err = backend.run(def(), &case).unwrap_err();
            assert_eq!(err, def().reference(&case).unwrap_err());
            match &err {
                Error::Value { input: i, row: r, value: v, .. } => {
                    assert_eq!((*i, *r, v.as_str()), (input, row, value), "{err}");
                }
                _ => panic!("{err}"),
            }
        }
        // Padding past each length (99, -9) is not read.
        let case = case(x, good, &[5, 5], &[2, 1]);
        assert!(check_on(backend, def(), &case, Tolerance::default()));
    }
}

on_every_backend! {
    /// A +∞ logit makes its frame's log-softmax NaN over the whole row (as PyTorch's), so its
    /// sequence's loss is NaN and the other sequence's stays finite. The GPU's
    /// online normalizer used to leave the other classes at probability 0, making the
    /// alignment look impossible: an infinite (or, with zero_infinity, zero) loss.
    fn a_positive_infinite_logit_makes_its_sequence_nan(backend) {
        // T = 3, N = 2, C = 3; the +∞ is sequence 1's frame 1, class 2 (no label of it).
        let mut x: Vec<f32> = (0..18).map(|i| ((i * 7 % 5) as f32 - 2.0) / 2.0).collect();
        x[(2 + 1) * 3 + 2] = f32::INFINITY;
        let targets = HostArray::i64(&[2, 1], vec![1, 1]);
        for zero_infinity in [false, true] {
            let c = case(HostArray::f32(&[3, 2, 3], x.clone()), targets.clone(), &[3, 3], &[1, 1])
                .set("reduction", "none")
                .set("zero_infinity", zero_infinity);
            let got = backend.run(def(), &c).unwrap();
            assert!(got.loss[0].is_finite() && got.loss[1].is_nan(), "{:?}", got.loss);
            let g = &got.grads[0].1;
            // Sequence 1: the +∞ frame's row is NaN; in its other frames the blank and the
            // label (0 and 1) go through the NaN likelihood, class 2 keeps its softmax term
            // (as PyTorch's formula gives).
            for frame in 0..3 {
                let row = |seq: usize| &g[(frame * 2 + seq) * 3..(frame * 2 + seq + 1) * 3];
                assert!(row(0).iter().all(|v| v.is_finite()), "{g:?}");
                assert!(row(1)[..2].iter().all(|v| v.is_nan()), "{g:?}");
                assert_eq!(row(1)[2].is_nan(), frame == 1, "{g:?}");
            }
        }
    }
}

on_every_backend! {
    /// A −∞ logit of a label's class: its probability is 0 and no path goes through it, so
    /// its gradient is the limit 0 (PyTorch forms e^(−∞ + ∞) there and gives NaN).
    fn a_negative_infinite_logit_has_a_zero_gradient(backend) {
        let mut x: Vec<f32> = (0..9).map(|i| ((i * 3 % 4) as f32 - 1.5) / 2.0).collect();
        x[3 + 1] = f32::NEG_INFINITY; // frame 1, class 1 (the label)
        let c = case(HostArray::f32(&[3, 1, 3], x), HostArray::i64(&[1, 1], vec![1]), &[3], &[1]);
        let got = backend.run(def(), &c).unwrap();
        assert!(got.loss[0].is_finite(), "{:?}", got.loss);
        let g = &got.grads[0].1;
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert_eq!(g[3 + 1], 0.0);
        check_on(backend, def(), &c, Tolerance::default());
    }
}
