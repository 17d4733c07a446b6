//! What is particular to the multi-threaded CPU backend: edge cases of its vectorized loops,
//! bad input, `_into` buffers, and results that do not depend on the number of threads. Every
//! loss against the reference on this backend is in tests/every_loss.rs. No GPU, except
//! where a test compares the CPU path's answer with the GPU path's.

mod common;

use common::{check_on, fresh_rng, Backend};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray, LossDef};
use wgpu_losses::{Error, Tolerance};

fn check_cpu_case(def: &dyn LossDef, case: &Case) {
    check_on(Backend::Cpu, def, case, Tolerance::default());
}

#[test]
fn cross_entropy_edge_cases() {
    let ce = wgpu_losses::losses::find("cross-entropy").unwrap();
    let mut rng = fresh_rng("cpu cross_entropy_edge_cases");
    let (n, c) = (6, 300);
    let mut x: Vec<f32> = (0..n * c).map(|_| rng.range(-1e4, 1e4) as f32).collect();
    for k in 0..c {
        x[c + k] = if k % 3 == 0 { 1e4 } else { 1e-30 };
        x[2 * c + k] = 1e4 + rng.normal() as f32;
    }
    for (target, smoothing) in [
        (HostArray::i64(&[n], vec![0, 5, 299, -100, 7, 3]), "0.2"),
        (HostArray::i64(&[n], vec![-100; 6]), "0.1"),
    ] {
        for reduction in ["mean", "sum", "none"] {
            let case = Case::default()
                .with("logits", HostArray::f32(&[n, c], x.clone()))
                .with("target", target.clone())
                .set("label_smoothing", smoothing)
                .set("softcap", 20.0)
                .set("reduction", reduction);
            check_cpu_case(ce, &case);
        }
    }
    // One row with NaN: that row's loss and gradient are NaN, the others finite.
    let mut x = rng.normals(3 * 10, 1.0);
    x[12] = f32::NAN;
    let case = Case::default()
        .with("logits", HostArray::f32(&[3, 10], x))
        .with("target", HostArray::i64(&[3], vec![1, 2, 3]))
        .set("reduction", "none");
    let got = ce.cpu(&case).unwrap();
    assert!(got.loss[1].is_nan() && got.loss[0].is_finite() && got.loss[2].is_finite());
    assert!(got.grads[0].1[10..20].iter().all(|v| v.is_nan()));
    assert!(got.grads[0].1[..10]
        .iter()
        .chain(&got.grads[0].1[20..])
        .all(|v| v.is_finite()));
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let ce = wgpu_losses::losses::find("cross-entropy").unwrap();
    let case = Case::default()
        .with("logits", HostArray::f32(&[3, 4], vec![0.5; 12]))
        .with("target", HostArray::i64(&[3], vec![0, 4, 1]));
    assert!(matches!(
        ce.cpu(&case),
        Err(Error::Value {
            input: "target",
            row: 1,
            ..
        })
    ));
    let case = case
        .with("target", HostArray::i64(&[3], vec![0, 1, 1]))
        .set("label_smoothing", 2);
    assert!(matches!(
        ce.cpu(&case),
        Err(Error::Option {
            option: "label_smoothing",
            ..
        })
    ));
    let hinge = wgpu_losses::losses::find("hinge").unwrap();
    let case = Case::default()
        .with("input", HostArray::f32(&[3], vec![0.1, 0.2, 0.3]))
        .with("target", HostArray::f32(&[3], vec![1.0, -1.0, 0.5]));
    assert!(matches!(
        hinge.cpu(&case),
        Err(Error::Value {
            input: "target",
            row: 2,
            ..
        })
    ));
    let bce = wgpu_losses::losses::find("bce-with-logits").unwrap();
    let case = Case::default()
        .with("logits", HostArray::f32(&[2, 3], vec![0.0; 6]))
        .with("target", HostArray::f32(&[2, 3], vec![0.0; 6]))
        .with("pos_weight", HostArray::f32(&[2], vec![1.0; 2]));
    assert!(matches!(
        bce.cpu(&case),
        Err(Error::Shape {
            input: "pos_weight",
            ..
        })
    ));
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = fresh_rng("cpu thread count");
    let big = |rng: &mut Rng| {
        let (n, c) = (700, 1000);
        Case::default()
            .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, 2.0)))
            .with(
                "target",
                HostArray::i64(&[n], (0..n).map(|i| (i % c) as i64).collect()),
            )
            .set("label_smoothing", 0.1)
    };
    let ce_case = big(&mut rng);
    let n = 300_000;
    let mse_case = Case::default()
        .with("input", HostArray::f32(&[n], rng.normals(n, 1.0)))
        .with("target", HostArray::f32(&[n], rng.normals(n, 1.0)));
    let nce_case =
        Case::default().with("z", HostArray::f32(&[300, 64], rng.normals(300 * 64, 1.0)));
    let (n, h, v) = (500, 48, 700);
    let linear_case = Case::default()
        .with("hidden", HostArray::f32(&[n, h], rng.normals(n * h, 1.0)))
        .with(
            "classifier",
            HostArray::f32(&[v, h], rng.normals(v * h, 0.2)),
        )
        .with("bias", HostArray::f32(&[v], rng.normals(v, 1.0)))
        .with(
            "target",
            HostArray::i64(&[n], (0..n).map(|i| (i * 7 % v) as i64).collect()),
        )
        .set("chunk_rows", 128);
    for (name, case) in [
        ("cross-entropy", &ce_case),
        ("mse", &mse_case),
        ("nt-xent", &nce_case),
        ("linear-cross-entropy", &linear_case),
    ] {
        let def = wgpu_losses::losses::find(name).unwrap();
        let many = def.cpu(case).unwrap();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| def.cpu(case).unwrap());
        assert_eq!(many, one, "{name}");
    }
}

#[test]
fn in_place_cross_entropy_gives_the_same_bits() {
    use wgpu_losses::cpu::{cross_entropy_in_place, cross_entropy_into, HostRowInputs, HostTarget};
    use wgpu_losses::{CrossEntropy, Reduction};
    let mut rng = fresh_rng("in_place_cross_entropy_gives_the_same_bits");
    let (n, c) = (37, 20_000);
    let x = rng.normals(n * c, 3.0);
    let y: Vec<i32> = (0..n)
        .map(|i| {
            if i % 5 == 0 {
                -100
            } else {
                rng.below(c) as i32
            }
        })
        .collect();
    let p: Vec<f32> = (0..n * c)
        .map(|_| rng.uniform() as f32 / c as f32)
        .collect();
    let w: Vec<f32> = (0..c).map(|_| rng.range(0.5, 2.0) as f32).collect();
    let up: Vec<f32> = rng.normals(n, 1.0);
    let options = [
        CrossEntropy::new(),
        CrossEntropy::new()
            .label_smoothing(0.1)
            .reduction(Reduction::Sum),
        CrossEntropy::new()
            .softcap(Some(5.0))
            .z_loss(1e-3)
            .reduction(Reduction::None),
    ];
    for (k, opts) in options.iter().enumerate() {
        for probs in [false, true] {
            let inputs = HostRowInputs {
                logits: &x,
                shape: (n, c),
                target: if probs {
                    HostTarget::Probabilities(&p)
                } else {
                    HostTarget::Classes(&y)
                },
                weight: (k == 1).then_some(w.as_slice()),
                upstream: if k == 2 {
                    wgpu_losses::Upstream::PerItem(&up[..])
                } else {
                    wgpu_losses::Upstream::Ones
                },
            };
            let mut grad = vec![0.0f32; n * c];
            let loss = cross_entropy_into(opts, &inputs, &mut grad).unwrap();
            let mut logits = x.clone();
            let in_place = cross_entropy_in_place(opts, &inputs, &mut logits).unwrap();
            assert_eq!(loss, in_place, "{opts:?} probs {probs}: loss");
            assert!(
                grad.iter()
                    .zip(&logits)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{opts:?} probs {probs}: gradient"
            );
        }
    }
    let no_grad = CrossEntropy::new().gradient(false);
    let inputs = HostRowInputs {
        logits: &x,
        shape: (n, c),
        target: HostTarget::Classes(&y),
        weight: None,
        upstream: wgpu_losses::Upstream::Ones,
    };
    assert!(matches!(
        cross_entropy_in_place(&no_grad, &inputs, &mut x.clone()),
        Err(Error::Option {
            option: "gradient",
            ..
        })
    ));
}

#[test]
fn a_bad_label_far_into_the_input_is_named() {
    // Labels are scanned a block at a time: the error still names the exact element.
    let hinge = wgpu_losses::losses::find("hinge").unwrap();
    let n = 10_000;
    for bad in [0, 4095, 4096, 8191, 9_999] {
        let mut y = vec![1.0f32; n];
        y[bad] = 0.5;
        y[(bad + 7) % n] = 2.0;
        let first = bad.min((bad + 7) % n);
        let case = Case::default()
            .with("input", HostArray::f32(&[n], vec![0.1; n]))
            .with("target", HostArray::f32(&[n], y));
        match hinge.cpu(&case) {
            Err(Error::Value {
                input: "target",
                row,
                ..
            }) => assert_eq!(row, first),
            other => panic!("bad label at {first}: {other:?}"),
        }
    }
}

#[test]
fn elementwise_edge_cases() {
    let mut rng = fresh_rng("cpu elementwise_edge_cases");
    let n = 2000;
    // Extreme logits, hard and soft targets: bce and every specialized focal power.
    let x: Vec<f32> = (0..n).map(|_| rng.range(-1e4, 1e4) as f32).collect();
    let soft: Vec<f32> = (0..n)
        .map(|k| {
            if k % 3 == 0 {
                rng.uniform() as f32
            } else {
                (k % 2) as f32
            }
        })
        .collect();
    for (name, gamma) in [
        ("bce-with-logits", None),
        ("sigmoid-focal", Some(0.0)),
        ("sigmoid-focal", Some(1.0)),
        ("sigmoid-focal", Some(2.0)),
        ("sigmoid-focal", Some(2.5)),
    ] {
        let mut case = Case::default()
            .with("logits", HostArray::f32(&[n], x.clone()))
            .with("target", HostArray::f32(&[n], soft.clone()))
            .set("reduction", "none");
        if let Some(g) = gamma {
            case = case.set("gamma", g);
        }
        check_cpu_case(wgpu_losses::losses::find(name).unwrap(), &case);
    }
    // Targets outside [0, 1]: whole γ takes a negative base (C's pow).
    for gamma in [1.0, 2.0, 3.0] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[n], rng.normals(n, 2.0)))
            .with("target", HostArray::f32(&[n], rng.normals(n, 2.0)))
            .set("gamma", gamma)
            .set("reduction", "none");
        check_cpu_case(wgpu_losses::losses::find("sigmoid-focal").unwrap(), &case);
    }
    // kl-div targets across the whole f32 range: subnormal, tiny, huge, 0, negative, inf.
    let t: Vec<f32> = (0..n)
        .map(|k| match k % 8 {
            0 => f32::from_bits(1 + rng.below(1 << 23) as u32),
            1 => (rng.range(-40.0, 38.0) as f32).exp2(),
            2 => 0.0,
            3 => -(rng.uniform() as f32),
            4 => 1e30 * rng.uniform() as f32, // y·ln y stays within f32
            5 => f32::INFINITY,
            _ => rng.uniform() as f32,
        })
        .collect();
    let case = Case::default()
        .with("input", HostArray::f32(&[n], rng.normals(n, 2.0)))
        .with("target", HostArray::f32(&[n], t))
        .set("reduction", "none");
    check_cpu_case(wgpu_losses::losses::find("kl-div").unwrap(), &case);
    // huber and smooth-l1 across their knee, with ±inf and NaN differences.
    let mut d: Vec<f32> = (0..n).map(|_| rng.range(-3.0, 3.0) as f32).collect();
    d[..4].copy_from_slice(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0]);
    for (name, option) in [("huber", "delta"), ("smooth-l1", "beta")] {
        let case = Case::default()
            .with("input", HostArray::f32(&[n], d.clone()))
            .with("target", HostArray::f32(&[n], vec![0.0; n]))
            .set(option, 1.0)
            .set("reduction", "none");
        check_cpu_case(wgpu_losses::losses::find(name).unwrap(), &case);
    }
}

#[test]
fn elementwise_into_reuses_buffers_and_checks_their_lengths() {
    use wgpu_losses::cpu::{elementwise, elementwise_into, HostElementInputs};
    use wgpu_losses::{ElementwiseLoss, Pointwise, Reduction};
    let mut rng = fresh_rng("elementwise_into");
    let n = 70_001;
    let (a, b) = (rng.normals(n, 2.0), rng.normals(n, 1.0));
    let signs: Vec<f32> = (0..n)
        .map(|_| if rng.chance(0.5) { 1.0 } else { -1.0 })
        .collect();
    for (kind, ranking) in [
        (Pointwise::Mse, false),
        (Pointwise::BceWithLogits, false),
        (Pointwise::MarginRanking { margin: 0.2 }, true),
    ] {
        for reduction in [Reduction::Mean, Reduction::None] {
            let loss = ElementwiseLoss::new(kind).reduction(reduction);
            let inputs = HostElementInputs {
                shape: &[n],
                input: &a,
                target: &b,
                labels: ranking.then_some(signs.as_slice()),
                var: None,
                weight: None,
                pos_weight: None,
                upstream: wgpu_losses::Upstream::Ones,
            };
            let fresh = elementwise(&loss, &inputs).unwrap();
            // Stale values in the reused buffers are overwritten.
            let (mut g1, mut g2) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            let values = elementwise_into(&loss, &inputs, &mut g1, &mut g2).unwrap();
            assert_eq!(values, fresh.loss, "{kind:?}");
            assert_eq!(g1, fresh.grads[0].1, "{kind:?}");
            if ranking {
                assert_eq!(g2, fresh.grads[1].1, "{kind:?}");
            }
            let short = elementwise_into(&loss, &inputs, &mut g1[..n - 1], &mut g2);
            assert!(
                matches!(
                    short,
                    Err(Error::Shape {
                        input: "grad_out",
                        ..
                    })
                ),
                "{kind:?}: {short:?}"
            );
            if ranking {
                let short = elementwise_into(&loss, &inputs, &mut g1, &mut [0.0f32; 0]);
                assert!(
                    matches!(
                        short,
                        Err(Error::Shape {
                            input: "grad_out_x2",
                            ..
                        })
                    ),
                    "{short:?}"
                );
            }
        }
    }
}

#[test]
fn info_nce_register_blocks_at_every_segment_width() {
    // Rows of 8, 24 (one 16-wide and one 8-wide segment) and 256 floats take the AVX2 + FMA
    // blocks where the CPU has them; 37 and 38 rows leave partial anchor blocks (the
    // portable backward) and odd candidate chunks.
    let mut rng = fresh_rng("info_nce_register_blocks");
    for dim in [8, 24, 256] {
        for n in [37usize, 38] {
            let rows =
                |rng: &mut Rng, n: usize| HostArray::f32(&[n, dim], rng.normals(n * dim, 0.6));
            let labels = HostArray::i64(&[n], (0..n).map(|_| rng.below(5) as i64).collect());
            let cases = [
                (
                    "supcon",
                    Case::default()
                        .with("embeddings", rows(&mut rng, n))
                        .with("labels", labels),
                ),
                (
                    "clip",
                    Case::default()
                        .with("a", rows(&mut rng, n))
                        .with("b", rows(&mut rng, n)),
                ),
            ];
            for (name, case) in cases {
                check_cpu_case(
                    wgpu_losses::losses::find(name).unwrap(),
                    &case.set("temperature", 0.1),
                );
            }
            if n % 2 == 0 {
                let case = Case::default().with("z", rows(&mut rng, n));
                check_cpu_case(wgpu_losses::losses::find("nt-xent").unwrap(), &case);
            }
        }
    }
}

/// Softmax focal's γ is checked where every path checks its options (it was accepted by the
/// command line's GPU and CPU paths, with NaN gradients for γ = NaN).
#[test]
fn softmax_focal_rejects_a_bad_gamma_on_every_path() {
    use wgpu_losses::cpu::{softmax_focal, HostRowInputs, HostTarget};
    use wgpu_losses::{SoftmaxFocal, Upstream};
    let focal = wgpu_losses::losses::find("softmax-focal").unwrap();
    for gamma in [-1.0, f32::NAN, f32::INFINITY] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[2, 3], vec![0.5; 6]))
            .with("target", HostArray::i64(&[2], vec![0, 2]))
            .set("gamma", gamma);
        for (path, r) in [
            ("cpu", focal.cpu(&case)),
            ("gpu", focal.gpu(common::engine(), &case)),
        ] {
            assert!(
                matches!(
                    r,
                    Err(Error::Option {
                        option: "gamma",
                        ..
                    })
                ),
                "{path} γ = {gamma}: {r:?}"
            );
        }
        assert!(matches!(
            focal.reference(&case),
            Err(Error::Option {
                option: "gamma",
                ..
            })
        ));
        let inputs = HostRowInputs {
            logits: &[0.5; 6],
            shape: (2, 3),
            target: HostTarget::Classes(&[0, 2]),
            weight: None,
            upstream: Upstream::Ones,
        };
        let r = softmax_focal(&SoftmaxFocal::new().gamma(gamma), &inputs);
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
    }
}
