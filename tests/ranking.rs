//! The ranking losses' named cases on every backend: lists without a pair, NDCG at its
//! closed forms, bad lengths naming the list. PyTorch-formula fixtures are in
//! tests/pytorch_fixtures.rs.

#[macro_use]
mod common;

use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::Error;

const ALL: [&str; 5] = [
    "ranknet",
    "pairwise-hinge",
    "listnet",
    "listmle",
    "lambda-ndcg",
];

fn lists(scores: Vec<f32>, relevance: Vec<f32>, q: usize) -> Case {
    let l = scores.len() / q;
    Case::default()
        .with("scores", HostArray::f32(&[q, l], scores))
        .with("relevance", HostArray::f32(&[q, l], relevance))
}

on_every_backend! {
    /// All-equal grades have no pair: the pairwise losses' mean is 0 with a zero gradient,
    /// never NaN; the listwise losses stay finite.
    fn all_equal_relevance_has_no_pair(backend) {
        for name in ALL {
            let def = wgpu_losses::losses::find(name).unwrap();
            let case = lists(vec![0.3, -1.0, 2.0, 0.5, 0.5, 0.1], vec![1.0; 6], 2);
            let got = backend.run(def, &case).unwrap();
            assert!(got.loss[0].is_finite(), "{name}: {:?}", got.loss);
            if !matches!(name, "listnet" | "listmle") {
                assert_eq!(got.loss, vec![0.0], "{name}");
                assert!(got.grads[0].1.iter().all(|&g| g == 0.0), "{name}");
            }
        }
    }
}

on_every_backend! {
    /// NDCG@k: a list in the ideal order scores 1, a list without relevant items 1 (allRank's
    /// filler); grades [0, 1, 3] ranked in reverse score (1/log2 3 + 7/log2 4) / (7 + 1/log2 3).
    fn ndcg_at_its_closed_forms(backend) {
        let def = wgpu_losses::losses::find("listnet").unwrap();
        let case = lists(
            vec![3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 3.0, 2.0, 1.0],
            vec![3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 3.0],
            3,
        )
        .set("ndcg", true);
        let got = backend.run(def, &case).unwrap();
        let ndcg = &got.rows.iter().find(|(n, _)| *n == "ndcg").unwrap().1;
        let ideal = 7.0 + 1.0 / 3f64.log2();
        let reversed = 1.0 / 3f64.log2() + 7.0 / 2.0;
        let want = [1.0, 1.0, reversed / ideal];
        for (g, w) in ndcg.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{ndcg:?} vs {want:?}");
        }
    }
}

on_every_backend! {
    /// A length outside [0, L] is an error naming the list and the value, as the reference's.
    fn a_bad_length_names_the_list(backend) {
        for name in ALL {
            let def = wgpu_losses::losses::find(name).unwrap();
            let case = lists(vec![0.1; 6], vec![1.0, 0.0, 2.0, 0.0, 1.0, 1.0], 2)
                .with("lengths", HostArray::i64(&[2], vec![3, 4]));
            let err = backend.run(def, &case).unwrap_err();
            assert_eq!(err, def.reference(&case).unwrap_err());
            match &err {
                Error::Value { input: "lengths", row: 1, value, .. } => assert_eq!(value, "4"),
                _ => panic!("{name}: {err}"),
            }
        }
    }
}
