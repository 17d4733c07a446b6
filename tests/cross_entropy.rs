//! Cross-entropy and softmax focal loss (one row kernel) on the GPU against the f64
//! reference; every backend's random problems are in tests/every_loss.rs.
//!
//! Tolerance: `|gpu - ref| <= 1e-5 * max|ref| + 1e-4 * |ref|` per array (`Tolerance::default`).
//! The kernel forms x - lse as (x - max) - log(sum), so its error is f32 rounding of O(1)
//! quantities and does not grow with the logits' magnitude; `check` measures ~1e-6.

mod common;

use common::{assert_close, check_case, engine, fresh_rng};
use proptest::prelude::*;
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray, LossDef};
use wgpu_losses::{
    CrossEntropy, CrossEntropyInputs, DType, Engine, EngineOptions, Error, Reduction, SoftmaxFocal,
    Target, Tolerance, Upstream,
};

fn ce() -> &'static dyn LossDef {
    wgpu_losses::losses::find("cross-entropy").unwrap()
}

/// Random class targets with a share of ignored rows.
fn classes(rng: &mut Rng, n: usize, c: usize, ignored: f64) -> HostArray {
    let y = (0..n)
        .map(|_| {
            if rng.chance(ignored) {
                -100
            } else {
                rng.below(c) as i64
            }
        })
        .collect();
    HostArray::i64(&[n], y)
}

/// Random probability rows.
fn probabilities(rng: &mut Rng, n: usize, c: usize) -> HostArray {
    let mut t: Vec<f32> = (0..n * c).map(|_| rng.uniform() as f32 + 1e-3).collect();
    for row in t.chunks_mut(c) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    HostArray::f32(&[n, c], t)
}

#[derive(Debug, Clone)]
struct Opts {
    probs: bool,
    weight: bool,
    smoothing: Option<f32>,
    z_loss: bool,
    softcap: Option<f32>,
    reduction: &'static str,
    upstream: bool,
    scale: f64,
}

fn opts() -> impl Strategy<Value = Opts> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0.0f32..=1.0),
        any::<bool>(),
        prop::option::of(0.5f32..50.0),
        prop::sample::select(vec!["mean", "sum", "none"]),
        any::<bool>(),
        prop::sample::select(vec![0.1, 1.0, 10.0, 1e4]),
    )
        .prop_map(
            |(probs, weight, smoothing, z_loss, softcap, reduction, upstream, scale)| Opts {
                probs,
                weight,
                smoothing,
                z_loss,
                softcap,
                reduction,
                upstream,
                scale,
            },
        )
}

fn build_case(rng: &mut Rng, n: usize, c: usize, o: &Opts) -> Case {
    let mut case = Case::default()
        .with(
            "logits",
            HostArray::f32(&[n, c], rng.normals(n * c, o.scale)),
        )
        .with(
            "target",
            if o.probs {
                probabilities(rng, n, c)
            } else {
                classes(rng, n, c, 0.15)
            },
        )
        .set("reduction", o.reduction);
    if o.weight {
        let w = (0..c).map(|_| rng.range(0.05, 3.0) as f32).collect();
        case = case.with("weight", HostArray::f32(&[c], w));
    }
    if let Some(eps) = o.smoothing {
        case = case.set("label_smoothing", eps);
    }
    if o.z_loss {
        case = case.set("z_loss", 1e-4);
    }
    if let Some(cap) = o.softcap {
        case = case.set("softcap", cap);
    }
    if o.upstream {
        let g = if o.reduction == "none" {
            HostArray::f32(&[n], rng.normals(n, 1.0))
        } else {
            HostArray::f32(&[], vec![rng.range(-2.0, 2.0) as f32])
        };
        case = case.with("grad_output", g);
    }
    case
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn gpu_matches_reference(n in 1usize..160, c in 1usize..2500, seed in any::<u64>(), o in opts()) {
        let mut rng = Rng::new(seed);
        let case = build_case(&mut rng, n, c, &o);
        check_case(ce(), engine(), &case, Tolerance::default());
    }
}

#[test]
fn one_row_one_class() {
    for target in [
        HostArray::i64(&[1], vec![0]),
        HostArray::f32(&[1, 1], vec![1.0]),
    ] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[1, 1], vec![3.5]))
            .with("target", target)
            .set("label_smoothing", 0.2);
        check_case(ce(), engine(), &case, Tolerance::default());
    }
}

#[test]
fn class_counts_around_workgroup_multiples() {
    let mut rng = fresh_rng("class_counts_around_workgroup_multiples");
    for c in [7, 255, 257, 1023, 2047, 2049, 4097] {
        let n = 1 + rng.below(9);
        let o = Opts {
            probs: false,
            weight: true,
            smoothing: Some(0.1),
            z_loss: true,
            softcap: None,
            reduction: "mean",
            upstream: false,
            scale: 3.0,
        };
        check_case(
            ce(),
            engine(),
            &build_case(&mut rng, n, c, &o),
            Tolerance::default(),
        );
    }
}

#[test]
fn extreme_logits_are_finite_and_correct() {
    let mut rng = fresh_rng("extreme_logits_are_finite_and_correct");
    let (n, c) = (24, 1000);
    let mut x: Vec<f32> = (0..n * c).map(|_| rng.range(-1e4, 1e4) as f32).collect();
    // Rows that mix huge and tiny values, and a row sitting at a large offset.
    for k in 0..c {
        x[c + k] = if k % 3 == 0 { 1e4 } else { 1e-30 };
        x[2 * c + k] = if k == 5 { -1e4 } else { 1e-7 * k as f32 };
        x[3 * c + k] = 1e4 + rng.normal() as f32;
    }
    for (target, smoothing) in [
        (classes(&mut rng, n, c, 0.0), "0.3"),
        (probabilities(&mut rng, n, c), "0.1"),
    ] {
        for reduction in ["none", "mean"] {
            let case = Case::default()
                .with("logits", HostArray::f32(&[n, c], x.clone()))
                .with("target", target.clone())
                .set("label_smoothing", smoothing)
                .set("reduction", reduction);
            let gpu = ce().gpu(engine(), &case).unwrap();
            assert!(gpu.loss.iter().all(|v| v.is_finite()));
            assert!(gpu.grads[0].1.iter().all(|v| v.is_finite()));
            check_case(ce(), engine(), &case, Tolerance::default());
        }
    }
}

#[test]
fn all_ignored_batch_gives_zero_loss_and_gradient() {
    let (n, c) = (5, 8);
    let mut rng = fresh_rng("all_ignored_batch");
    for reduction in ["mean", "sum", "none"] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, 1.0)))
            .with("target", HostArray::i64(&[n], vec![-100; n]))
            .set("label_smoothing", 0.1)
            .set("reduction", reduction);
        let gpu = ce().gpu(engine(), &case).unwrap();
        assert!(
            gpu.loss.iter().all(|&v| v == 0.0),
            "{reduction}: {:?}",
            gpu.loss
        );
        assert!(gpu.grads[0].1.iter().all(|&v| v == 0.0));
        check_case(ce(), engine(), &case, Tolerance::default());
    }
}

#[test]
fn ignore_index_inside_the_class_range() {
    let mut rng = fresh_rng("ignore_index_inside_the_class_range");
    let (n, c) = (40, 6);
    let case = Case::default()
        .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, 1.0)))
        .with("target", classes(&mut rng, n, c, 0.0))
        .with(
            "weight",
            HostArray::f32(&[c], vec![0.5, 1.0, 2.0, 1.5, 0.1, 3.0]),
        )
        .set("ignore_index", 2)
        .set("label_smoothing", 0.25);
    check_case(ce(), engine(), &case, Tolerance::default());
}

#[test]
fn nan_propagates_to_its_row_only() {
    let (n, c) = (4, 300);
    let mut rng = fresh_rng("nan_propagates_to_its_row_only");
    let mut x = rng.normals(n * c, 1.0);
    x[c + 17] = f32::NAN;
    let case = Case::default()
        .with("logits", HostArray::f32(&[n, c], x))
        .with("target", HostArray::i64(&[n], vec![1, 2, 3, 4]))
        .set("reduction", "none");
    let gpu = ce().gpu(engine(), &case).unwrap();
    assert!(gpu.loss[1].is_nan());
    assert!(gpu.loss[0].is_finite() && gpu.loss[2].is_finite() && gpu.loss[3].is_finite());
    let g = &gpu.grads[0].1;
    assert!(g[c..2 * c].iter().all(|v| v.is_nan()));
    assert!(g[..c].iter().chain(&g[2 * c..]).all(|v| v.is_finite()));
}

fn upload_case(
    engine: &Engine,
    rng: &mut Rng,
    n: usize,
    c: usize,
) -> (Vec<f32>, wgpu_losses::Tensor, wgpu_losses::Tensor) {
    let x = rng.normals(n * c, 2.0);
    let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    (
        x.clone(),
        engine.upload(&x, &[n, c]).unwrap(),
        engine.upload_i32(&y, &[n]).unwrap(),
    )
}

#[test]
fn in_place_matches_separate_and_leaves_inputs_alone_otherwise() {
    let e = engine();
    let mut rng = fresh_rng("in_place");
    let (n, c) = (33, 517);
    let (x, logits, target) = upload_case(e, &mut rng, n, c);
    let ce = CrossEntropy::new().label_smoothing(0.1);
    let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
    let separate = ce.run(e, &inputs).unwrap();
    assert_eq!(
        e.download(&logits).unwrap(),
        x,
        "logits must not change without in_place"
    );
    let in_place = ce.clone().in_place(true).run(e, &inputs).unwrap();
    assert_eq!(separate, in_place);
    assert_eq!(
        e.download(&logits).unwrap(),
        separate.grad("logits").unwrap()
    );
}

#[test]
fn loss_only_mode_matches() {
    let e = engine();
    let mut rng = fresh_rng("loss_only");
    let (_, logits, target) = upload_case(e, &mut rng, 19, 100);
    let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
    let full = CrossEntropy::new().run(e, &inputs).unwrap();
    let loss_only = CrossEntropy::new().gradient(false).run(e, &inputs).unwrap();
    assert_eq!(full.loss, loss_only.loss);
    assert!(loss_only.grads.is_empty());
}

#[test]
fn repeated_runs_give_identical_bits() {
    let e = engine();
    let mut rng = fresh_rng("determinism");
    let (_, logits, target) = upload_case(e, &mut rng, 3000, 300);
    let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
    let ce = CrossEntropy::new().label_smoothing(0.05);
    let a = ce.run(e, &inputs).unwrap();
    for _ in 0..3 {
        let b = ce.run(e, &inputs).unwrap();
        assert_eq!(a.loss[0].to_bits(), b.loss[0].to_bits());
        assert_eq!(a.grads, b.grads);
    }
}

#[test]
fn per_item_upstream_gradient() {
    let mut rng = fresh_rng("per_item_upstream_gradient");
    let o = Opts {
        probs: false,
        weight: true,
        smoothing: Some(0.2),
        z_loss: false,
        softcap: Some(10.0),
        reduction: "none",
        upstream: true,
        scale: 4.0,
    };
    check_case(
        ce(),
        engine(),
        &build_case(&mut rng, 50, 130, &o),
        Tolerance::default(),
    );
}

#[test]
fn inputs_split_across_bindings() {
    // A 64 KiB binding cap forces every input through many row windows.
    let small = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let mut rng = fresh_rng("inputs_split_across_bindings");
    for probs in [false, true] {
        let o = Opts {
            probs,
            weight: true,
            smoothing: Some(0.1),
            z_loss: true,
            softcap: None,
            reduction: "mean",
            upstream: false,
            scale: 2.0,
        };
        // 700 classes: rows on vec4 boundaries; 701: rows across them (ragged chunks).
        for c in [700, 701] {
            let case = build_case(&mut rng, 300, c, &o);
            check_case(ce(), &small, &case, Tolerance::default());
        }
    }
    // 50,000 rows: the per-row losses and row weights (200 KB each) are themselves summed
    // window by window.
    let o = Opts {
        probs: false,
        weight: true,
        smoothing: Some(0.1),
        z_loss: false,
        softcap: None,
        reduction: "mean",
        upstream: false,
        scale: 2.0,
    };
    let case = build_case(&mut rng, 50_000, 3, &o);
    check_case(ce(), &small, &case, Tolerance::default());
}

#[test]
fn target_out_of_range_is_an_error_naming_row_and_value() {
    let case = |y: Vec<i64>| {
        Case::default()
            .with("logits", HostArray::f32(&[4, 3], vec![0.5; 12]))
            .with("target", HostArray::i64(&[4], y))
    };
    for (y, row, value) in [(vec![0, 1, 3, 2], 2, "3"), (vec![0, -1, 7, -100], 1, "-1")] {
        for reduction in ["mean", "none"] {
            let case = case(y.clone()).set("reduction", reduction);
            for result in [
                ce().gpu(engine(), &case).map(|_| ()),
                ce().reference(&case).map(|_| ()),
            ] {
                match result {
                    Err(Error::Value {
                        input: "target",
                        row: r,
                        value: v,
                        ..
                    }) => {
                        assert_eq!((r, v.as_str()), (row, value))
                    }
                    other => panic!("expected a target error, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn bad_options_and_shapes_are_errors() {
    let e = engine();
    let logits = e.upload(&[0.0; 6], &[2, 3]).unwrap();
    let target = e.upload_i32(&[0, 1], &[2]).unwrap();
    let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
    for bad in [
        CrossEntropy::new().label_smoothing(1.5),
        CrossEntropy::new().label_smoothing(-0.1),
        CrossEntropy::new().label_smoothing(f32::NAN),
        CrossEntropy::new().z_loss(f32::INFINITY),
        CrossEntropy::new().z_loss(-1.0),
        CrossEntropy::new().softcap(Some(0.0)),
        CrossEntropy::new().softcap(Some(f32::NAN)),
    ] {
        assert!(
            matches!(bad.run(e, &inputs), Err(Error::Option { .. })),
            "{bad:?}"
        );
    }
    let ce = CrossEntropy::new();
    let wrong_weight = e.upload(&[1.0; 4], &[4]).unwrap();
    assert!(matches!(
        ce.run(e, &inputs.weight(&wrong_weight)),
        Err(Error::Shape {
            input: "weight",
            ..
        })
    ));
    let wrong_target = e.upload_i32(&[0, 1, 2], &[3]).unwrap();
    let r = ce.run(
        e,
        &CrossEntropyInputs::new(&logits, Target::Classes(&wrong_target)),
    );
    assert!(matches!(
        r,
        Err(Error::Shape {
            input: "target",
            ..
        })
    ));
    let wrong_probs = e.upload(&[0.5; 4], &[2, 2]).unwrap();
    let r = ce.run(
        e,
        &CrossEntropyInputs::new(&logits, Target::Probabilities(&wrong_probs)),
    );
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
    let r = ce.run(
        e,
        &CrossEntropyInputs::new(&logits, Target::Probabilities(&target)),
    );
    assert!(matches!(
        r,
        Err(Error::DType {
            input: "target",
            ..
        })
    ));
    let r = ce.run(
        e,
        &CrossEntropyInputs::new(&target, Target::Classes(&target)),
    );
    assert!(matches!(
        r,
        Err(Error::DType {
            input: "logits",
            ..
        })
    ));
    let empty = e.zeros(&[0, 3], DType::F32).unwrap();
    let none = e.zeros(&[0], DType::I32).unwrap();
    let r = ce.run(e, &CrossEntropyInputs::new(&empty, Target::Classes(&none)));
    assert!(matches!(r, Err(Error::Empty("logits"))));
    let per_item = e.upload(&[1.0, 1.0], &[2]).unwrap();
    let r = ce.run(e, &inputs.upstream(Upstream::PerItem(&per_item)));
    assert!(matches!(
        r,
        Err(Error::Option {
            option: "grad_output",
            ..
        })
    ));
    let r = ce.run(e, &inputs.upstream(Upstream::Scalar(f32::NAN)));
    assert!(matches!(
        r,
        Err(Error::Option {
            option: "grad_output",
            ..
        })
    ));
    let three_d = e.zeros(&[1, 2, 3], DType::F32).unwrap();
    let r = ce.run(
        e,
        &CrossEntropyInputs::new(&three_d, Target::Classes(&target)),
    );
    assert!(matches!(
        r,
        Err(Error::Shape {
            input: "logits",
            ..
        })
    ));
    let r = CrossEntropy::new()
        .reduction(Reduction::Sum)
        .run(e, &inputs);
    assert!(r.is_ok());
}

#[test]
fn embeds_in_a_callers_device_buffers_and_encoder() {
    use wgpu::util::DeviceExt;
    // The application owns the device, the buffers and the encoder.
    let adapter = wgpu_losses::adapters()
        .into_iter()
        .next()
        .expect("an adapter");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("device");
    let logits_data: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
    let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app logits"),
        contents: bytemuck::cast_slice(&logits_data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let targets = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app targets"),
        contents: bytemuck::cast_slice(&[2i32, 0, 3]),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let engine = Engine::from_device(device.clone(), queue.clone());
    let logits = wgpu_losses::Tensor::from_buffer(buffer, &[3, 4], DType::F32).unwrap();
    let target = wgpu_losses::Tensor::from_buffer(targets, &[3], DType::I32).unwrap();
    let mut encoder = device.create_command_encoder(&Default::default());
    let out = CrossEntropy::new()
        .record(
            &engine,
            &mut encoder,
            &CrossEntropyInputs::new(&logits, Target::Classes(&target)),
        )
        .unwrap();
    queue.submit([encoder.finish()]);
    let got = engine.read_output(&out).unwrap();
    let want = ce()
        .reference(
            &Case::default()
                .with("logits", HostArray::f32(&[3, 4], logits_data))
                .with("target", HostArray::i64(&[3], vec![2, 0, 3])),
        )
        .unwrap();
    assert_close("loss", &got.loss, &want.loss, Tolerance::default());
    assert_close(
        "grad",
        got.grad("logits").unwrap(),
        &want.grads[0].1,
        Tolerance::default(),
    );

    let small = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert!(matches!(
        wgpu_losses::Tensor::from_buffer(small, &[3, 4], DType::F32),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn softmax_focal_with_gamma_zero_and_no_alpha_is_cross_entropy_bit_for_bit() {
    let e = engine();
    let mut rng = fresh_rng("softmax_focal_is_cross_entropy");
    let (n, c) = (300, 37);
    let x = e.upload(&rng.normals(n * c, 3.0), &[n, c]).unwrap();
    let y: Vec<i32> = (0..n)
        .map(|_| {
            if rng.chance(0.1) {
                -100
            } else {
                rng.below(c) as i32
            }
        })
        .collect();
    let y = e.upload_i32(&y, &[n]).unwrap();
    let inputs = CrossEntropyInputs::new(&x, Target::Classes(&y));
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let focal = SoftmaxFocal::new()
            .gamma(0.0)
            .reduction(reduction)
            .run(e, &inputs)
            .unwrap();
        let ce = CrossEntropy::new()
            .reduction(reduction)
            .run(e, &inputs)
            .unwrap();
        assert_eq!(focal, ce, "{reduction:?}");
    }
}

/// A NaN class weight propagates into the loss and the gradient on every backend, as on the
/// reference (the GPU wrote an all-zero gradient: its `d != 0` test is false for NaN).
#[test]
fn a_nan_class_weight_propagates_on_every_backend() {
    let mut rng = fresh_rng("a_nan_class_weight_propagates_on_every_backend");
    let (n, c) = (6, 4);
    let mut w: Vec<f32> = (0..c).map(|_| rng.range(0.5, 2.0) as f32).collect();
    w[1] = f32::NAN;
    let case = Case::default()
        .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, 1.0)))
        .with("target", HostArray::i64(&[n], vec![0, 1, 2, 3, 1, 0]))
        .with("weight", HostArray::f32(&[c], w));
    let want = ce().reference(&case).unwrap();
    assert!(want.loss[0].is_nan());
    for (backend, got) in [("gpu", ce().gpu(engine(), &case)), ("cpu", ce().cpu(&case))] {
        let got = got.unwrap();
        assert!(got.loss[0].is_nan(), "{backend}: loss {:?}", got.loss);
        let nan: Vec<bool> = got.grads[0].1.iter().map(|g| g.is_nan()).collect();
        let want_nan: Vec<bool> = want.grads[0].1.iter().map(|g| g.is_nan()).collect();
        assert_eq!(nan, want_nan, "{backend}: gradient {:?}", got.grads[0].1);
    }
}

/// Few rows of 8192 classes or more are split across workgroups (each split's pass-1 state is
/// stored, then merged in split order before its gradient is written): every option against
/// the reference, rows that do and do not start on a vec4, ignored rows included.
#[test]
fn few_rows_of_many_classes_are_split_across_workgroups() {
    let mut rng = fresh_rng("few_rows_of_many_classes");
    for (n, c) in [(1, 8192), (3, 12_345), (17, 40_000), (2, 65_537)] {
        for probs in [false, true] {
            let o = Opts {
                probs,
                weight: rng.chance(0.5),
                smoothing: rng.chance(0.5).then_some(0.1),
                z_loss: rng.chance(0.5),
                softcap: rng.chance(0.5).then_some(20.0),
                reduction: ["mean", "sum", "none"][rng.below(3)],
                upstream: rng.chance(0.5),
                scale: 3.0,
            };
            check_case(
                ce(),
                engine(),
                &build_case(&mut rng, n, c, &o),
                Tolerance::default(),
            );
        }
        // Softmax focal shares the split rows.
        let focal = wgpu_losses::losses::find("softmax-focal").unwrap();
        let case = Case::default()
            .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, 3.0)))
            .with("target", classes(&mut rng, n, c, 0.2))
            .set("gamma", 2.0);
        check_case(focal, engine(), &case, Tolerance::default());
    }
}

/// The GPU layout (16 classes per invocation, few rows split up to 256 ways) and the CPU
/// layout (1,024 classes per invocation, split at most 8 ways) on whatever adapter runs the
/// tests, so that CI on lavapipe checks what GPUs run and a GPU run checks both. Shapes
/// cover ragged rows, rows wider than a workgroup's invocations, and split rows.
#[test]
fn both_kernel_layouts_match_the_reference() {
    let mut rng = fresh_rng("both_kernel_layouts_match_the_reference");
    for gpu_layout in [true, false] {
        let engine = Engine::with_options(EngineOptions {
            gpu_layout: Some(gpu_layout),
            ..EngineOptions::default()
        })
        .unwrap();
        for (n, c) in [
            (50, 2500),
            (7, 3),
            (300, 4099),
            (260, 20_000),
            (256, 33_001),
            (3, 50_000),
        ] {
            check_random_options(&mut rng, &engine, n, c);
        }
    }
}

/// Rows merged across their invocations by subgroup shuffles (where the adapter has them)
/// and through workgroup memory (the path of adapters without): both match the reference,
/// in the GPU layout, with rows of fewer, as many and more invocations than a subgroup
/// (1, 2, 8, 64 and 256 per row at 16 classes each), split rows included.
#[test]
fn subgroup_and_workgroup_row_merges_match_the_reference() {
    let mut rng = fresh_rng("subgroup_and_workgroup_row_merges_match_the_reference");
    for subgroup_ops in [None, Some(false)] {
        let engine = Engine::with_options(EngineOptions {
            gpu_layout: Some(true),
            subgroup_ops,
            ..EngineOptions::default()
        })
        .unwrap();
        let has = engine.features().contains(wgpu::Features::SUBGROUP);
        assert_eq!(
            engine.subgroup_ops(),
            has && subgroup_ops.is_none(),
            "subgroup operations in use"
        );
        for (n, c) in [
            (37, 3),
            (40, 20),
            (33, 125),
            (20, 1024),
            (9, 4099),
            (2, 20_000),
        ] {
            check_random_options(&mut rng, &engine, n, c);
        }
    }
}

/// Cross-entropy with random options (targets, weights, smoothing, z-loss, softcap,
/// reduction, upstream) on `engine` at N×C against the reference.
fn check_random_options(rng: &mut Rng, engine: &Engine, n: usize, c: usize) {
    let o = Opts {
        probs: rng.chance(0.3),
        weight: rng.chance(0.5),
        smoothing: rng.chance(0.5).then_some(0.1),
        z_loss: rng.chance(0.5),
        softcap: rng.chance(0.3).then_some(20.0),
        reduction: ["mean", "sum", "none"][rng.below(3)],
        upstream: rng.chance(0.5),
        scale: 3.0,
    };
    check_case(
        ce(),
        engine,
        &build_case(rng, n, c, &o),
        Tolerance::default(),
    );
}
