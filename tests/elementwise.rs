//! The elementwise family on the GPU: the identities that tie it to other losses, extreme
//! logits, splitting across bindings, determinism and bad input (softmax focal's bad options
//! too). Every loss against the reference on every backend is in tests/every_loss.rs.
//! Tolerances as in tests/cross_entropy.rs.

mod common;

use common::{assert_close, check_case, engine, fresh_rng};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::{
    CrossEntropyInputs, DType, ElementwiseInputs, ElementwiseLoss, Engine, EngineOptions, Error,
    Pointwise, Reduction, SoftmaxFocal, Target, Tolerance, Upstream,
};

fn upload(e: &Engine, v: &[f32], shape: &[usize]) -> wgpu_losses::Tensor {
    e.upload(v, shape).unwrap()
}

#[test]
fn sigmoid_focal_with_gamma_zero_and_no_alpha_is_bce() {
    let e = engine();
    let mut rng = fresh_rng("sigmoid_focal_is_bce");
    let (n, k) = (257, 9);
    let x = rng.normals(n * k, 4.0);
    let y: Vec<f32> = (0..n * k).map(|_| rng.uniform() as f32).collect();
    let (xt, yt) = (upload(e, &x, &[n, k]), upload(e, &y, &[n, k]));
    for reduction in [Reduction::Mean, Reduction::None] {
        let inputs = ElementwiseInputs::new(&xt, &yt);
        let focal = ElementwiseLoss::new(Pointwise::SigmoidFocal {
            alpha: -1.0,
            gamma: 0.0,
        })
        .reduction(reduction)
        .run(e, &inputs)
        .unwrap();
        let bce = ElementwiseLoss::new(Pointwise::BceWithLogits)
            .reduction(reduction)
            .run(e, &inputs)
            .unwrap();
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        assert_close(
            "loss",
            &focal.loss,
            &f64s(&bce.loss),
            Tolerance {
                rtol: 1e-6,
                atol: 1e-6,
                floor: 1e-6,
                written_as: DType::F32,
            },
        );
        assert_close(
            "grad",
            focal.grad("logits").unwrap(),
            &f64s(bce.grad("logits").unwrap()),
            Tolerance {
                rtol: 1e-6,
                atol: 1e-6,
                floor: 1e-6,
                written_as: DType::F32,
            },
        );
    }
}

#[test]
fn extreme_logits_stay_finite() {
    let mut rng = fresh_rng("extreme_logits_stay_finite");
    let n = 2000;
    let x: Vec<f32> = (0..n).map(|_| rng.range(-1e4, 1e4) as f32).collect();
    let y: Vec<f32> = (0..n)
        .map(|_| if rng.chance(0.5) { 1.0 } else { 0.0 })
        .collect();
    for name in ["bce-with-logits", "sigmoid-focal"] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[n], x.clone()))
            .with("target", HostArray::f32(&[n], y.clone()))
            .set("reduction", "none");
        let def = wgpu_losses::losses::find(name).unwrap();
        let gpu = def.gpu(engine(), &case).unwrap();
        assert!(
            gpu.loss
                .iter()
                .chain(&gpu.grads[0].1)
                .all(|v| v.is_finite()),
            "{name}"
        );
        check_case(def, engine(), &case, Tolerance::default());
    }
    let focal = wgpu_losses::losses::find("softmax-focal").unwrap();
    let (rows, c) = (8, 500);
    let logits: Vec<f32> = (0..rows * c).map(|_| rng.range(-1e4, 1e4) as f32).collect();
    let case = Case::default()
        .with("logits", HostArray::f32(&[rows, c], logits))
        .with(
            "target",
            HostArray::i64(&[rows], (0..rows as i64).collect()),
        )
        .set("gamma", 2.0);
    check_case(focal, engine(), &case, Tolerance::default());
}

#[test]
fn elementwise_inputs_split_across_bindings() {
    let small = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let mut rng = fresh_rng("elementwise_inputs_split_across_bindings");
    let (n, k) = (4000, 25); // 400 KB per input: seven windows
    let signs = |rng: &mut Rng, len| {
        (0..len)
            .map(|_| if rng.chance(0.5) { 1.0 } else { -1.0 })
            .collect()
    };
    for reduction in ["mean", "none"] {
        let bce = Case::default()
            .with("logits", HostArray::f32(&[n, k], rng.normals(n * k, 3.0)))
            .with(
                "target",
                HostArray::f32(&[n, k], (0..n * k).map(|_| rng.uniform() as f32).collect()),
            )
            .with(
                "weight",
                HostArray::f32(
                    &[n, k],
                    (0..n * k).map(|_| rng.range(0.1, 2.0) as f32).collect(),
                ),
            )
            .with(
                "pos_weight",
                HostArray::f32(&[k], (0..k).map(|_| rng.range(0.5, 3.0) as f32).collect()),
            )
            .set("reduction", reduction);
        check_case(
            wgpu_losses::losses::find("bce-with-logits").unwrap(),
            &small,
            &bce,
            Tolerance::default(),
        );
        let ranking = Case::default()
            .with("x1", HostArray::f32(&[n * k], rng.normals(n * k, 1.0)))
            .with("x2", HostArray::f32(&[n * k], rng.normals(n * k, 1.0)))
            .with("y", HostArray::f32(&[n * k], signs(&mut rng, n * k)))
            .set("margin", 0.3)
            .set("reduction", reduction);
        check_case(
            wgpu_losses::losses::find("margin-ranking").unwrap(),
            &small,
            &ranking,
            Tolerance::default(),
        );
    }
    let focal = Case::default()
        .with(
            "logits",
            HostArray::f32(&[300, 700], rng.normals(300 * 700, 2.0)),
        )
        .with(
            "target",
            HostArray::i64(&[300], (0..300).map(|i| i % 700).collect()),
        )
        .set("gamma", 1.5);
    check_case(
        wgpu_losses::losses::find("softmax-focal").unwrap(),
        &small,
        &focal,
        Tolerance::default(),
    );
}

#[test]
fn repeated_runs_give_identical_bits() {
    let e = engine();
    let mut rng = fresh_rng("elementwise determinism");
    let n = 1 << 20;
    let x = upload(e, &rng.normals(n, 2.0), &[n]);
    let y: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let y = upload(e, &y, &[n]);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    for kind in [
        Pointwise::Huber { delta: 0.7 },
        Pointwise::SigmoidFocal {
            alpha: 0.25,
            gamma: 2.0,
        },
    ] {
        let loss = ElementwiseLoss::new(kind);
        let first = loss.run(e, &ElementwiseInputs::new(&x, &y)).unwrap();
        assert!(first.loss[0].is_finite(), "{kind:?}");
        let grad = bits(&first.grads[0].1);
        for _ in 0..3 {
            let again = loss.run(e, &ElementwiseInputs::new(&x, &y)).unwrap();
            assert_eq!(first.loss[0].to_bits(), again.loss[0].to_bits(), "{kind:?}");
            assert!(
                grad == bits(&again.grads[0].1),
                "{kind:?}: gradient bits differ"
            );
        }
    }
}

#[test]
fn labels_outside_plus_minus_one_are_errors_naming_the_element() {
    let e = engine();
    let x = upload(e, &[0.5, -0.2, 1.5, 0.0], &[4]);
    let bad = upload(e, &[1.0, -1.0, 0.0, 1.0], &[4]);
    let good = upload(e, &[1.0, -1.0, 1.0, 1.0], &[4]);
    let hinge = ElementwiseLoss::new(Pointwise::Hinge).run(e, &ElementwiseInputs::new(&x, &bad));
    match hinge {
        Err(Error::Value {
            input: "target",
            row: 2,
            value,
            ..
        }) => assert_eq!(value, "0"),
        other => panic!("hinge: {other:?}"),
    }
    let ranking = ElementwiseLoss::new(Pointwise::MarginRanking { margin: 0.1 })
        .run(e, &ElementwiseInputs::ranking(&x, &good, &bad));
    assert!(
        matches!(
            ranking,
            Err(Error::Value {
                input: "y",
                row: 2,
                ..
            })
        ),
        "{ranking:?}"
    );
    // Through the registry the check happens on the host, before any dispatch.
    let case = Case::default()
        .with("input", HostArray::f32(&[3], vec![0.1, 0.2, 0.3]))
        .with("target", HostArray::f32(&[3], vec![1.0, 2.0, -1.0]));
    let def = wgpu_losses::losses::find("hinge").unwrap();
    for r in [
        def.gpu(e, &case).map(|_| ()),
        def.reference(&case).map(|_| ()),
    ] {
        assert!(
            matches!(
                r,
                Err(Error::Value {
                    input: "target",
                    row: 1,
                    ..
                })
            ),
            "{r:?}"
        );
    }
}

#[test]
fn bad_options_and_shapes_are_errors() {
    let e = engine();
    let x = upload(e, &[0.0; 6], &[2, 3]);
    let y = upload(e, &[0.0; 6], &[2, 3]);
    let inputs = ElementwiseInputs::new(&x, &y);
    for kind in [
        Pointwise::Huber { delta: 0.0 },
        Pointwise::Huber { delta: f32::NAN },
        Pointwise::SmoothL1 { beta: -1.0 },
        Pointwise::SigmoidFocal {
            alpha: 0.25,
            gamma: -1.0,
        },
        Pointwise::SigmoidFocal {
            alpha: f32::INFINITY,
            gamma: 2.0,
        },
        Pointwise::MarginRanking { margin: f32::NAN },
    ] {
        let r = ElementwiseLoss::new(kind).run(e, &inputs);
        assert!(matches!(r, Err(Error::Option { .. })), "{kind:?}: {r:?}");
    }
    let r = ElementwiseLoss::new(Pointwise::Mse)
        .reduction(Reduction::BatchMean)
        .run(e, &inputs);
    assert!(matches!(
        r,
        Err(Error::Option {
            option: "reduction",
            ..
        })
    ));
    let y_bad = upload(e, &[0.0; 4], &[2, 2]);
    let r = ElementwiseLoss::new(Pointwise::Mse).run(e, &ElementwiseInputs::new(&x, &y_bad));
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                input: "target",
                ..
            })
        ),
        "{r:?}"
    );
    let pw = upload(e, &[1.0; 2], &[2]);
    let r = ElementwiseLoss::new(Pointwise::BceWithLogits).run(e, &inputs.pos_weight(&pw));
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                input: "pos_weight",
                ..
            })
        ),
        "{r:?}"
    );
    let w = upload(e, &[1.0; 2], &[2]);
    let r = ElementwiseLoss::new(Pointwise::BceWithLogits).run(e, &inputs.weight(&w));
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                input: "weight",
                ..
            })
        ),
        "{r:?}"
    );
    let w3 = upload(e, &[1.0; 3], &[3]);
    let r = ElementwiseLoss::new(Pointwise::Mse).run(e, &inputs.weight(&w3));
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                input: "weight",
                ..
            })
        ),
        "{r:?}"
    );
    let r = ElementwiseLoss::new(Pointwise::MarginRanking { margin: 0.0 }).run(e, &inputs);
    assert!(matches!(r, Err(Error::Empty("y"))), "{r:?}");
    let per = upload(e, &[1.0; 6], &[2, 3]);
    let r = ElementwiseLoss::new(Pointwise::L1).run(e, &inputs.upstream(Upstream::PerItem(&per)));
    assert!(
        matches!(
            r,
            Err(Error::Option {
                option: "grad_output",
                ..
            })
        ),
        "{r:?}"
    );
    let empty = e.zeros(&[0], wgpu_losses::DType::F32).unwrap();
    let r = ElementwiseLoss::new(Pointwise::L1).run(e, &ElementwiseInputs::new(&empty, &empty));
    assert!(matches!(r, Err(Error::Empty("input"))), "{r:?}");
    // softmax-focal: gamma, probability targets, target range.
    let logits = upload(e, &[0.0; 6], &[2, 3]);
    let classes = e.upload_i32(&[0, 3], &[2]).unwrap();
    let r = SoftmaxFocal::new().gamma(-0.5).run(
        e,
        &CrossEntropyInputs::new(&logits, Target::Classes(&classes)),
    );
    assert!(
        matches!(
            r,
            Err(Error::Option {
                option: "gamma",
                ..
            })
        ),
        "{r:?}"
    );
    let r = SoftmaxFocal::new().run(
        e,
        &CrossEntropyInputs::new(&logits, Target::Probabilities(&y)),
    );
    assert!(
        matches!(
            r,
            Err(Error::DType {
                input: "target",
                ..
            })
        ),
        "{r:?}"
    );
    let r = SoftmaxFocal::new().run(
        e,
        &CrossEntropyInputs::new(&logits, Target::Classes(&classes)),
    );
    assert!(
        matches!(
            r,
            Err(Error::Value {
                input: "target",
                row: 1,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn focal_targets_outside_unit_interval_follow_c_pow() {
    // torch's (1 - p_t) ** γ: a whole γ accepts a negative base. (A fractional γ gives NaN
    // there, and near 1 - p_t = 0+ its gradient γ·m^(γ-1) is ill-conditioned in any float
    // precision, so only whole exponents are compared.)
    let mut rng = fresh_rng("focal_targets_outside_unit_interval");
    let n = 500;
    for gamma in [1.0, 2.0, 3.0] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[n], rng.normals(n, 2.0)))
            .with("target", HostArray::f32(&[n], rng.normals(n, 2.0)))
            .set("gamma", gamma)
            .set("reduction", "none");
        check_case(
            wgpu_losses::losses::find("sigmoid-focal").unwrap(),
            engine(),
            &case,
            Tolerance::default(),
        );
    }
}

#[test]
fn huber_and_smooth_l1_propagate_nan_as_pytorch() {
    // torch: huber / smooth-l1 at a NaN difference give NaN loss and NaN gradient; ±inf
    // gives inf and ±δ (±1).
    let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5, 3.0];
    for (name, option) in [("huber", "delta"), ("smooth-l1", "beta")] {
        let case = Case::default()
            .with("input", HostArray::f32(&[5], x.to_vec()))
            .with("target", HostArray::f32(&[5], vec![0.0; 5]))
            .set(option, 1.0)
            .set("reduction", "none");
        let def = wgpu_losses::losses::find(name).unwrap();
        let gpu = def.gpu(engine(), &case).unwrap();
        assert!(
            gpu.loss[0].is_nan() && gpu.grads[0].1[0].is_nan(),
            "{name}: {gpu:?}"
        );
        assert_eq!(&gpu.grads[0].1[1..], &[1.0, -1.0, 0.5, 1.0], "{name}");
        check_case(def, engine(), &case, Tolerance::default());
    }
}

/// A NaN reaching hinge's or margin ranking's hinge, or kl-div's target, gives a NaN loss on
/// every backend and the reference (they dropped it: a finite loss with no NaN anywhere).
/// The gradient follows PyTorch: clamp_min's is 0 at NaN, kl-div's is −target = NaN.
#[test]
fn nan_propagates_through_hinge_margin_ranking_and_kl_div() {
    let nan = f32::NAN;
    let signs = HostArray::f32(&[4], vec![1.0, -1.0, 1.0, -1.0]);
    let cases = [
        (
            "hinge",
            Case::default()
                .with("input", HostArray::f32(&[4], vec![nan, 0.3, -2.0, 5.0]))
                .with("target", signs.clone()),
            0.0,
        ),
        (
            "margin-ranking",
            Case::default()
                .with("x1", HostArray::f32(&[4], vec![nan, 0.3, -2.0, 5.0]))
                .with("x2", HostArray::f32(&[4], vec![0.0, nan, 1.0, 1.0]))
                .with("y", signs),
            0.0,
        ),
        (
            "kl-div",
            Case::default()
                .with("input", HostArray::f32(&[4], vec![-1.0, -1.0, -2.0, -0.5]))
                .with("target", HostArray::f32(&[4], vec![nan, 0.0, 0.25, -1.0])),
            nan,
        ),
    ];
    for (name, case, grad_at_nan) in cases {
        let case = case.set("reduction", "none");
        let def = wgpu_losses::losses::find(name).unwrap();
        let want = def.reference(&case).unwrap();
        let nan_at = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
        let want_loss: Vec<bool> = want.loss.iter().map(|x| x.is_nan()).collect();
        assert!(want_loss[0], "{name}: reference loss {:?}", want.loss);
        for (backend, got) in [("gpu", def.gpu(engine(), &case)), ("cpu", def.cpu(&case))] {
            let got = got.unwrap();
            assert_eq!(
                nan_at(&got.loss),
                want_loss,
                "{name} {backend} loss {:?}",
                got.loss
            );
            let g = &got.grads[0].1;
            let first = g[0] == grad_at_nan || (g[0].is_nan() && grad_at_nan.is_nan());
            assert!(first, "{name} {backend}: gradient {g:?}");
            let want_grad: Vec<f32> = want.grads[0].1.iter().map(|&v| v as f32).collect();
            assert_eq!(nan_at(g), nan_at(&want_grad), "{name} {backend}: {g:?}");
        }
    }
}

/// Gaussian NLL's variance: a negative entry is an error naming it (PyTorch raises too), on
/// the GPU (the kernel's report), the CPU and the reference; shapes other than the input's
/// or one per item are errors, even one a newer PyTorch broadcasts (`[D]` for `[N, D]`).
#[test]
fn gaussian_nll_rejects_negative_variances_and_other_shapes() {
    let e = engine();
    let def = wgpu_losses::losses::find("gaussian-nll").unwrap();
    let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.25).collect();
    let case = |var: HostArray| {
        Case::default()
            .with("input", HostArray::f32(&[2, 3], x.clone()))
            .with("target", HostArray::f32(&[2, 3], vec![0.5; 6]))
            .with("var", var)
    };
    for (var, row) in [
        (
            HostArray::f32(&[2, 3], vec![1.0, 0.5, 0.0, 2.0, -0.25, 1.0]),
            4,
        ),
        (HostArray::f32(&[2], vec![1.0, -3.0]), 1),
        (HostArray::f32(&[2, 1], vec![-1.0, 1.0]), 0),
    ] {
        let case = case(var);
        for r in [
            def.gpu(e, &case).map(|_| ()),
            def.cpu(&case).map(|_| ()),
            def.reference(&case).map(|_| ()),
        ] {
            match r {
                Err(Error::Value {
                    input: "var",
                    row: r,
                    ..
                }) => assert_eq!(r, row),
                other => panic!("{other:?}"),
            }
        }
    }
    for shape in [vec![3], vec![2, 2], vec![1, 3], vec![2, 3, 1]] {
        let n = shape.iter().product();
        let case = case(HostArray::f32(&shape, vec![1.0; n]));
        for r in [def.gpu(e, &case).map(|_| ()), def.cpu(&case).map(|_| ())] {
            assert!(
                matches!(r, Err(Error::Shape { input: "var", .. })),
                "{shape:?}: {r:?}"
            );
        }
    }
}

/// A variance per item is its elements' variance: the loss equals that of the variance
/// spread over the item, and its gradient is the sum of the spread variance's gradient.
#[test]
fn gaussian_nll_per_item_variance_is_the_spread_variance_summed() {
    let e = engine();
    let mut rng = fresh_rng("gaussian per item");
    let (n, d) = (37, 5);
    let (x, y) = (rng.normals(n * d, 1.0), rng.normals(n * d, 1.0));
    let v: Vec<f32> = (0..n).map(|_| rng.range(0.1, 2.0) as f32).collect();
    let spread: Vec<f32> = (0..n * d).map(|i| v[i / d]).collect();
    let (xt, yt) = (upload(e, &x, &[n, d]), upload(e, &y, &[n, d]));
    let (vt, st) = (upload(e, &v, &[n]), upload(e, &spread, &[n, d]));
    let loss = ElementwiseLoss::new(Pointwise::GaussianNll {
        full: true,
        eps: 1e-6,
    });
    let item = loss
        .run(e, &ElementwiseInputs::gaussian(&xt, &yt, &vt))
        .unwrap();
    let full = loss
        .run(e, &ElementwiseInputs::gaussian(&xt, &yt, &st))
        .unwrap();
    assert_eq!(item.loss, full.loss);
    assert_eq!(item.grads[0], full.grads[0]);
    let summed: Vec<f64> = full.grads[1]
        .1
        .chunks(d)
        .map(|c| c.iter().map(|&g| g as f64).sum())
        .collect();
    assert_eq!(item.grads[1].0, "var");
    assert_close(
        "per-item var gradient",
        &item.grads[1].1,
        &summed,
        Tolerance::default(),
    );
}
