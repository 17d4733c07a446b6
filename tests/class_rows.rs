//! The whole-row class-score losses' named cases (PyTorch's quirks), on every backend
//! against closed forms worked by hand.

#[macro_use]
mod common;

use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::Error;

fn multilabel_margin(x: &[f32], targets: &[i64], (n, c): (usize, usize), reduction: &str) -> Case {
    Case::default()
        .with("input", HostArray::f32(&[n, c], x.to_vec()))
        .with("target", HostArray::i64(&[n, c], targets.to_vec()))
        .set("reduction", reduction)
}

on_every_backend! {
    /// Row 0 lists class 1 twice, then ends; its padding (class 0) is not read. Unlisted
    /// classes 0 and 2 with x_1 = 0.5: hinges 1 − 0.5 + 0 = 0.5 and 1 − 0.5 + 2 = 2.5, each
    /// counted twice: (2·0.5 + 2·2.5)/3 = 2. Row 1 lists nothing: loss 0, gradient 0.
    fn multilabel_margin_counts_a_repeated_class_twice(backend) {
        let def = wgpu_losses::losses::find("multilabel-margin").unwrap();
        let case = multilabel_margin(
            &[0.0, 0.5, 2.0, 3.0, -1.0, 4.0],
            &[1, 1, -1, -1, 0, 2],
            (2, 3),
            "none",
        );
        let got = backend.run(def, &case).unwrap();
        assert_eq!(got.loss, vec![2.0, 0.0]);
        let grad = &got.grads[0].1;
        // ∂/∂x_0 = 2/3, ∂/∂x_2 = 2/3, ∂/∂x_1 = −2·2/3 (two listings, two hinges each).
        let want = [2.0 / 3.0, -4.0 / 3.0, 2.0 / 3.0, 0.0, 0.0, 0.0];
        for (g, w) in grad.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{grad:?}");
        }
    }
}

on_every_backend! {
    /// Every entry must lie in [−1, C), padding included (PyTorch checks the whole tensor);
    /// the error names the first bad entry's row and value, as the reference does.
    fn multilabel_margin_names_the_row_of_a_bad_class(backend) {
        let def = wgpu_losses::losses::find("multilabel-margin").unwrap();
        for (targets, row, value) in [
            (vec![0, -1, 1, 2, 3, -1], 1, "3"),
            (vec![0, -1, -7, 1, 2, -1], 0, "-7"),
            (vec![0, 1, 2, 2, -1, -2], 1, "-2"),
        ] {
            let case = multilabel_margin(&[0.5; 6], &targets, (2, 3), "mean");
            let err = backend.run(def, &case).unwrap_err();
            assert_eq!(err, def.reference(&case).unwrap_err());
            match &err {
                Error::Value { input: "target", row: r, value: v, .. } => {
                    assert_eq!((*r, v.as_str()), (row, value), "{err}");
                }
                _ => panic!("{err}"),
            }
        }
    }
}
