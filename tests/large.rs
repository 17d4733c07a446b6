//! Sizes past the adapter's limits: inputs larger than one storage binding, more than 65,535
//! rows, grids past 65,535 workgroups, and the largest class count. Tolerances as in
//! tests/cross_entropy.rs.

mod common;

use common::{assert_close, engine, fresh_rng};
use wgpu_losses::reference::{cross_entropy, RefTarget};
use wgpu_losses::{CrossEntropy, CrossEntropyInputs, Reduction, Target, Tolerance};

/// Runs `opts` on the GPU and compares every row with the reference, one row at a time
/// (reduction none, so rows are independent and the f64 reference stays small).
/// Gradient error is measured against the reference's `grad_terms`, as everywhere.
fn check_rows(opts: &CrossEntropy, n: usize, c: usize, x: &[f32], y: &[i32]) {
    let e = engine();
    let logits = e.upload(x, &[n, c]).unwrap();
    let target = e.upload_i32(y, &[n]).unwrap();
    let got = opts
        .run(
            e,
            &CrossEntropyInputs::new(&logits, Target::Classes(&target)),
        )
        .unwrap();
    let grad = got.grad("logits").unwrap();
    let mut want_loss = Vec::with_capacity(n);
    for i in 0..n {
        let row: Vec<f64> = x[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
        let want = cross_entropy(
            opts,
            &row,
            (1, c),
            RefTarget::Classes(&[y[i] as i64]),
            None,
            &[1.0],
        )
        .unwrap();
        want_loss.push(want.loss[0]);
        assert_close(
            &format!("grad row {i}"),
            &grad[i * c..(i + 1) * c],
            &want.grads[0].1,
            Tolerance {
                floor: want.grad_terms,
                ..Tolerance::default()
            },
        );
    }
    assert_close("loss", &got.loss, &want_loss, Tolerance::default());
}

#[test]
fn one_gib_of_logits_spans_several_bindings() {
    // 1 GiB of f32, or just past one binding on adapters that bind more (2 GiB on an H200).
    let c = 131072;
    let e = engine();
    let n = 2048.max(e.max_binding_bytes() as usize / (c * 4) + 16);
    assert!((n * c * 4) as u64 > e.max_binding_bytes());
    let mut rng = fresh_rng("one_gib_of_logits_spans_several_bindings");
    let x: Vec<f32> = (0..n * c).map(|_| rng.range(-8.0, 8.0) as f32).collect();
    let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    // In place: the gradient overwrites the logits, so the device holds 1 GiB, not 2.
    let opts = CrossEntropy::new()
        .reduction(Reduction::None)
        .label_smoothing(0.1)
        .in_place(true);
    check_rows(&opts, n, c, &x, &y);
}

#[test]
fn many_rows_with_many_classes() {
    let (n, c) = (70_000, 32);
    let mut rng = fresh_rng("many_rows_with_many_classes");
    let x = rng.normals(n * c, 3.0);
    let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    check_rows(
        &CrossEntropy::new().reduction(Reduction::None).z_loss(1e-3),
        n,
        c,
        &x,
        &y,
    );
}

#[test]
fn grid_past_65535_workgroups() {
    // C = 1 packs 256 rows per workgroup: 17M rows need 66,407 workgroups in one dispatch.
    let (n, c) = (17_000_000, 1);
    let e = engine();
    let mut rng = fresh_rng("grid_past_65535_workgroups");
    let x: Vec<f32> = (0..n).map(|_| rng.range(-4.0, 4.0) as f32).collect();
    let mut y = vec![0i32; n];
    for v in y.iter_mut().step_by(7) {
        *v = -100;
    }
    let logits = e.upload(&x, &[n, c]).unwrap();
    let target = e.upload_i32(&y, &[n]).unwrap();
    // One class: log-softmax is 0, so the loss is the z-loss term z·lse² = z·cap(x)² alone.
    let z = 0.5f64;
    let cap = 3.0f64;
    for reduction in [Reduction::None, Reduction::Mean] {
        let opts = CrossEntropy::new()
            .reduction(reduction)
            .z_loss(z as f32)
            .softcap(Some(cap as f32));
        let got = opts
            .run(
                e,
                &CrossEntropyInputs::new(&logits, Target::Classes(&target)),
            )
            .unwrap();
        let kept = y.iter().filter(|&&v| v != -100).count() as f64;
        let s = |i: usize| {
            if y[i] == -100 {
                0.0
            } else if reduction == Reduction::Mean {
                1.0 / kept
            } else {
                1.0
            }
        };
        let capped = |v: f32| cap * (v as f64 / cap).tanh();
        let want_grad: Vec<f64> = (0..n)
            .map(|i| s(i) * 2.0 * z * capped(x[i]) / (x[i] as f64 / cap).cosh().powi(2))
            .collect();
        let per_row: Vec<f64> = (0..n)
            .map(|i| {
                if y[i] == -100 {
                    0.0
                } else {
                    z * capped(x[i]).powi(2)
                }
            })
            .collect();
        let want_loss = match reduction {
            Reduction::None => per_row,
            _ => vec![per_row.iter().sum::<f64>() / kept],
        };
        assert_close(
            &format!("{reduction:?} loss"),
            &got.loss,
            &want_loss,
            Tolerance::default(),
        );
        assert_close(
            &format!("{reduction:?} grad"),
            got.grad("logits").unwrap(),
            &want_grad,
            Tolerance::default(),
        );
    }
}

#[test]
fn largest_class_count() {
    let (n, c) = (3, 262_144);
    let mut rng = fresh_rng("largest_class_count");
    let x = rng.normals(n * c, 5.0);
    let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    check_rows(
        &CrossEntropy::new()
            .reduction(Reduction::None)
            .label_smoothing(0.2),
        n,
        c,
        &x,
        &y,
    );
}
