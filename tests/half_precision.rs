//! bf16 and f16 inputs and gradients (docs/LOSSES.md, "Mixed precision") on the GPU and
//! the CPU backend against the f64 reference computed from the 16-bit inputs as rounded.
//!
//! Tolerance: the loss's f32 tolerance (`Tolerance::default`) plus, for a gradient written
//! in 16 bits, ½ ulp of that type at the element (`Tolerance::written_as`), nothing looser.

mod common;

use common::{assert_close, assert_written, check_on, engine, fresh_rng};
use wgpu_losses::cpu::{cross_entropy_in_place, cross_entropy_into, HostRowInputs, HostTarget};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray, LossDef};
use wgpu_losses::{
    bf16, f16, CrossEntropy, CrossEntropyInputs, DType, Engine, EngineOptions, Error, Target,
    Tolerance, Upstream,
};

const HALVES: [DType; 2] = [DType::F16, DType::BF16];

/// The losses that read 16-bit floats.
fn half_losses() -> Vec<&'static dyn LossDef> {
    wgpu_losses::losses::all()
        .iter()
        .copied()
        .filter(|d| d.half_precision())
        .collect()
}

fn ce() -> &'static dyn LossDef {
    wgpu_losses::losses::find("cross-entropy").unwrap()
}

/// `case` with its differentiable inputs rounded to `dtype` and the gradients written in
/// `grad` (`None`: the input's type).
fn in_dtype(def: &dyn LossDef, case: Case, dtype: DType, grad: Option<DType>) -> Case {
    let mut case = case.set("dtype", dtype.name()).apply_dtype(def).unwrap();
    if let Some(g) = grad {
        case = case.set("grad_dtype", g.name());
    }
    case
}

/// Random class-target cross-entropy of `n`×`c` logits of scale `scale`.
fn ce_case(rng: &mut Rng, n: usize, c: usize, scale: f64) -> Case {
    let y = (0..n).map(|_| rng.below(c) as i64).collect();
    Case::default()
        .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, scale)))
        .with("target", HostArray::i64(&[n], y))
}

#[test]
fn the_row_losses_read_16_bit_floats() {
    let names: Vec<_> = half_losses().iter().map(|d| d.name()).collect();
    assert!(
        names.contains(&"cross-entropy") && names.contains(&"softmax-focal"),
        "{names:?}"
    );
}

on_every_backend!(
    /// Every loss that reads 16-bit floats, on random cases covering its options, in f16 and
    /// bf16, with gradients in the input's type and in f32.
    fn random_cases_in_every_dtype(backend) {
        let mut rng = fresh_rng("random_cases_in_every_dtype");
        for def in half_losses() {
            for dtype in HALVES {
                for grad in [None, Some(DType::F32)] {
                    let mut checked = 0;
                    while checked < 6 {
                        let case = in_dtype(def, def.random_case(&mut rng), dtype, grad);
                        checked += check_on(backend, def, &case, Tolerance::default()) as usize;
                    }
                }
            }
        }
    }
);

on_every_backend!(
    /// Rows that do not start on a word or a chunk (odd C, odd N), rows of 1–3 elements (the
    /// kernel's scalar path), and ±1e4 logits in bf16 (the row max carries the exactness).
    fn odd_rows_and_large_logits(backend) {
        let mut rng = fresh_rng("odd_rows_and_large_logits");
        for &(n, c, scale) in &[
            (1, 1, 1.0),
            (1, 3, 1.0),
            (3, 1, 1.0),
            (5, 7, 3.0),
            (33, 33, 1.0),
            (7, 1001, 2.0),
            (9, 6, 1e4),
            (17, 257, 1e4),
        ] {
            for dtype in HALVES {
                for grad in [None, Some(DType::F32)] {
                    let case = in_dtype(ce(), ce_case(&mut rng, n, c, scale), dtype, grad)
                        .set("reduction", ["mean", "sum", "none"][rng.below(3)]);
                    assert!(check_on(backend, ce(), &case, Tolerance::default()));
                }
            }
        }
    }
);

on_every_backend!(
    /// Subnormal f16 logits (below 2⁻¹⁴ ≈ 6.1e-5) widen exactly.
    fn subnormal_f16_logits(backend) {
        let mut rng = fresh_rng("subnormal_f16_logits");
        let case = in_dtype(ce(), ce_case(&mut rng, 6, 37, 2e-5), DType::F16, None);
        let (x, _) = case.floats("logits").unwrap();
        assert!(x.iter().any(|v| *v != 0.0 && v.abs() < 6.1e-5), "no subnormals drawn");
        assert!(check_on(backend, ce(), &case, Tolerance::default()));
    }
);

on_every_backend!(
    /// A logit past f16's range is ∞ in f16: the row's loss and gradient are NaN (∞ − ∞ in
    /// the log-sum-exp), as for an f32 ∞; the other rows are unaffected.
    fn f16_overflow_is_infinity(backend) {
        let mut x = vec![0.5f32; 2 * 4];
        x[1] = 7e4; // rounds to +∞ in f16
        let case = Case::default()
            .with("logits", HostArray::f32(&[2, 4], x))
            .with("target", HostArray::i64(&[2], vec![0, 1]))
            .set("reduction", "none");
        let half = in_dtype(ce(), case, DType::F16, None);
        assert_eq!(half.floats("logits").unwrap().0[1], f32::INFINITY);
        let out = backend.run(ce(), &half).unwrap();
        assert!(out.loss[0].is_nan() && out.grads[0].1[..4].iter().all(|g| g.is_nan()));
        let want = ce().reference(&half).unwrap();
        assert_close("second row's loss", &out.loss[1..], &want.loss[1..], Tolerance::default());
        assert_close(
            "second row's gradient",
            &out.grads[0].1[4..],
            &want.grads[0].1[4..],
            Tolerance::default().written_as(DType::F16),
        );
    }
);

/// The 16-bit kernels compute in f32 exactly as the f32-output kernel does: their gradient
/// is its gradient rounded to nearest, ties to even — including gradients past f16's range
/// (∞) and in its subnormals (a large and a tiny upstream gradient).
#[test]
fn gpu_narrowing_rounds_to_nearest_even() {
    let mut rng = fresh_rng("gpu_narrowing_rounds_to_nearest_even");
    for dtype in HALVES {
        for upstream in [1.0f32, 3e6, 1e-7] {
            let base = ce_case(&mut rng, 13, 203, 4.0)
                .with("grad_output", HostArray::f32(&[], vec![upstream]));
            let wide = in_dtype(ce(), base.clone(), dtype, Some(DType::F32));
            let narrow = in_dtype(ce(), base.clone(), dtype, None);
            let wide = ce().gpu(engine(), &wide).unwrap();
            let narrow = ce().gpu(engine(), &narrow).unwrap();
            let rounded: Vec<f32> = wide.grads[0].1.iter().map(|&g| dtype.round(g)).collect();
            let same = rounded
                .iter()
                .zip(&narrow.grads[0].1)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{dtype:?} upstream {upstream}: narrowing differs from round-to-nearest-even"
            );
            assert_eq!(wide.loss, narrow.loss);
        }
    }
}

/// In-place gradients over a bf16 (and f16) logits buffer, on the GPU and the CPU backend.
#[test]
fn in_place_over_16_bit_logits() {
    let mut rng = fresh_rng("in_place_over_16_bit_logits");
    let e = engine();
    for dtype in HALVES {
        for (n, c) in [(4, 9), (6, 64)] {
            let case = in_dtype(ce(), ce_case(&mut rng, n, c, 2.0), dtype, None);
            let want = ce().reference(&case).unwrap();
            let (x, _) = case.floats("logits").unwrap();
            let y: Vec<i32> = match &case.input("target").unwrap().data {
                wgpu_losses::registry::HostData::I64(v) => v.iter().map(|&v| v as i32).collect(),
                _ => unreachable!(),
            };
            let logits = e.upload_as(&x, &[n, c], dtype).unwrap();
            let target = e.upload_i32(&y, &[n]).unwrap();
            let ce_opts = CrossEntropy::new().in_place(true);
            let out = ce_opts
                .run(
                    e,
                    &CrossEntropyInputs::new(&logits, Target::Classes(&target)),
                )
                .unwrap();
            let tol = Tolerance::default();
            assert_close("gpu loss", &out.loss, &want.loss, tol);
            let written = e.download(&logits).unwrap();
            assert_close(
                "gpu in place",
                &written,
                &want.grads[0].1,
                tol.written_as(dtype),
            );

            let host = HostRowInputs {
                logits: &[] as &[bf16],
                shape: (n, c),
                target: HostTarget::Classes(&y),
                weight: None,
                upstream: Upstream::Ones,
            };
            let mut buf: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            if dtype == DType::BF16 {
                let loss = cross_entropy_in_place(&ce_opts, &host, &mut buf).unwrap();
                assert_close("cpu loss", &loss, &want.loss, tol);
                let g: Vec<f32> = buf.iter().map(|v| v.to_f32()).collect();
                assert_close("cpu in place", &g, &want.grads[0].1, tol.written_as(dtype));
            }
        }
    }
}

/// 16-bit logits larger than one binding (bindings capped at 16 KiB), rows of odd length
/// split across windows, and a view of a bf16 sub-allocation at an aligned offset.
#[test]
fn split_bindings_and_views() {
    let mut rng = fresh_rng("split_bindings_and_views");
    let small = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..Default::default()
    })
    .unwrap();
    for dtype in HALVES {
        for grad in [None, Some(DType::F32)] {
            let case = in_dtype(ce(), ce_case(&mut rng, 301, 37, 3.0), dtype, grad);
            assert!(common::check_case(
                ce(),
                &small,
                &case,
                Tolerance::default()
            ));
        }
    }
    // A view: the logits sit 256 bytes into a pooled buffer, after another tensor's data.
    let e = engine();
    let (n, c) = (5, 11);
    let x: Vec<f32> = rng
        .normals(n * c, 2.0)
        .iter()
        .map(|&v| DType::BF16.round(v))
        .collect();
    let pool: Vec<bf16> = (0..128)
        .map(|_| bf16::from_f32(9.0))
        .chain(x.iter().map(|&v| bf16::from_f32(v)))
        .collect();
    let pool = e.upload_values(&pool, &[pool.len()]).unwrap();
    let align = e.limits().min_storage_buffer_offset_alignment as u64;
    assert!(align <= 256);
    let logits =
        wgpu_losses::Tensor::view(e, pool.buffer().clone(), 256, &[n, c], DType::BF16).unwrap();
    let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    let target = e.upload_i32(&y, &[n]).unwrap();
    let out = CrossEntropy::new()
        .run(
            e,
            &CrossEntropyInputs::new(&logits, Target::Classes(&target)),
        )
        .unwrap();
    let case = Case::default()
        .with("logits", HostArray::rounded(&[n, c], &x, DType::BF16))
        .with(
            "target",
            HostArray::i64(&[n], y.iter().map(|&v| v as i64).collect()),
        );
    let want = ce().reference(&case).unwrap();
    let got = wgpu_losses::registry::Evaluated::from_values(out, vec![], &[n, c]);
    assert_written("bf16 view", &got, &want, Tolerance::default(), &case);
    // The data before the view is untouched.
    let before = e.download(&pool).unwrap();
    assert!(before[..128].iter().all(|&v| v == 9.0));
}

/// A gradient buffer of the wrong type, and an in-place call asked for f32 gradients of
/// 16-bit logits, are errors naming the input or option.
#[test]
fn mismatched_gradient_types_are_errors() {
    let e = engine();
    let logits = e
        .upload_as(&[0.5, 1.0, -1.0, 2.0], &[2, 2], DType::BF16)
        .unwrap();
    let target = e.upload_i32(&[0, 1], &[2]).unwrap();
    let f32_grad = e.zeros(&[2, 2], DType::F32).unwrap();
    let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
    let err = CrossEntropy::new()
        .run(e, &inputs.grad_out(&f32_grad))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DType {
                input: "grad_out",
                ..
            }
        ),
        "{err}"
    );
    let ok = CrossEntropy::new()
        .grad_dtype(Some(DType::F32))
        .run(e, &inputs.grad_out(&f32_grad));
    assert!(ok.is_ok(), "{ok:?}");
    let err = CrossEntropy::new()
        .in_place(true)
        .grad_dtype(Some(DType::F32))
        .run(e, &inputs)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Option {
                option: "grad_dtype",
                ..
            }
        ),
        "{err}"
    );

    let host = HostRowInputs {
        logits: &[f16::from_f32(0.5); 4][..],
        shape: (2, 2),
        target: HostTarget::Classes(&[0, 1]),
        weight: None,
        upstream: Upstream::Ones,
    };
    let mut wrong = [bf16::ZERO; 4];
    let err = cross_entropy_into(&CrossEntropy::new(), &host, &mut wrong).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DType {
                input: "grad_out",
                ..
            }
        ),
        "{err}"
    );
}

/// Every loss reads 16-bit floats; 16-bit targets (not differentiable) are refused by name.
#[test]
fn every_loss_reads_16_bit_floats_and_targets_stay_typed() {
    let all = wgpu_losses::losses::all();
    let f32_only: Vec<_> = all
        .iter()
        .filter(|d| !d.half_precision())
        .map(|d| d.name())
        .collect();
    assert!(f32_only.is_empty(), "{f32_only:?}");
    let case = Case::default()
        .with("logits", HostArray::f32(&[2, 2], vec![0.0; 4]))
        .with(
            "target",
            HostArray::rounded(&[2, 2], &[0.5; 4], DType::BF16),
        );
    let err = ce().gpu(engine(), &case).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DType {
                input: "target",
                ..
            }
        ),
        "{err}"
    );
}

on_every_backend!(
    /// Fused linear cross-entropy in 16 bits over chunks whose rows start between two
    /// aligned offsets (H odd: a chunk of 64 rows of 5 bf16 values is 640 bytes), with a
    /// bias, gradients in the inputs' type and in f32.
    fn linear_cross_entropy_chunks_of_odd_rows(backend) {
        let mut rng = fresh_rng("linear_cross_entropy_chunks_of_odd_rows");
        let def = wgpu_losses::losses::find("linear-cross-entropy").unwrap();
        for (n, h, v) in [(150, 5, 37), (130, 7, 9), (3, 1, 4)] {
            for dtype in HALVES {
                for grad in [None, Some(DType::F32)] {
                    let y = (0..n).map(|_| rng.below(v) as i64).collect();
                    let case = Case::default()
                        .with("hidden", HostArray::f32(&[n, h], rng.normals(n * h, 1.0)))
                        .with("classifier", HostArray::f32(&[v, h], rng.normals(v * h, 0.5)))
                        .with("bias", HostArray::f32(&[v], rng.normals(v, 0.5)))
                        .with("target", HostArray::i64(&[n], y))
                        .set("chunk_rows", 64);
                    let case = in_dtype(def, case, dtype, grad);
                    assert!(check_on(backend, def, &case, Tolerance::default()));
                }
            }
        }
    }
);

/// The same 16-bit inputs give the same bits on every run.
#[test]
fn deterministic_in_bf16() {
    let mut rng = fresh_rng("deterministic_in_bf16");
    let case = in_dtype(ce(), ce_case(&mut rng, 64, 999, 3.0), DType::BF16, None);
    let a = ce().gpu(engine(), &case).unwrap();
    let b = ce().gpu(engine(), &case).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.loss), bits(&b.loss));
    assert_eq!(bits(&a.grads[0].1), bits(&b.grads[0].1));
    let c = ce().cpu(&case).unwrap();
    let d = ce().cpu(&case).unwrap();
    assert_eq!(bits(&c.grads[0].1), bits(&d.grads[0].1));
}

on_every_backend!(
    /// Elementwise losses over odd element counts (single elements, words shared by two
    /// invocations) and past one workgroup's block, and margin ranking with x1 and x2 of
    /// different types.
    fn elementwise_odd_lengths_and_mixed_types(backend) {
        let mut rng = fresh_rng("elementwise_odd_lengths_and_mixed_types");
        let find = |n| wgpu_losses::losses::find(n).unwrap();
        for len in [1, 3, 5, 4097, 2 * 16384 + 3, 65540] {
            for dtype in HALVES {
                for (name, grad) in [("mse", None), ("sigmoid-focal", Some(DType::F32)), ("huber", None)] {
                    let target: Vec<f32> = (0..len).map(|_| rng.uniform() as f32).collect();
                    let input = find(name).inputs()[0].name;
                    let case = Case::default()
                        .with(input, HostArray::f32(&[len], rng.normals(len, 2.0)))
                        .with("target", HostArray::f32(&[len], target))
                        .set("reduction", ["mean", "sum", "none"][rng.below(3)]);
                    let case = in_dtype(find(name), case, dtype, grad);
                    assert!(check_on(backend, find(name), &case, Tolerance::default()));
                }
            }
        }
        let ranking = find("margin-ranking");
        for len in [3, 1000] {
            let y = (0..len).map(|_| if rng.chance(0.5) { 1.0 } else { -1.0 }).collect();
            let case = Case::default()
                .with("x1", HostArray::rounded(&[len], &rng.normals(len, 1.0), DType::BF16))
                .with("x2", HostArray::rounded(&[len], &rng.normals(len, 1.0), DType::F16))
                .with("y", HostArray::f32(&[len], y));
            assert!(check_on(backend, ranking, &case, Tolerance::default()));
            let case = case.set("grad_dtype", "f32");
            assert!(check_on(backend, ranking, &case, Tolerance::default()));
        }
    }
);

/// The ½-ulp rule never tolerates an infinity it did not predict: a value past f16's range
/// must be written as ∞ of its sign, and ∞ for a value in range fails.
#[test]
fn written_tolerance_matches_overflow_exactly() {
    let tol = Tolerance::default().written_as(DType::F16);
    let ok = |got: f32, want: f64| wgpu_losses::compare(&[got], &[want], tol).ok();
    assert!(ok(f32::NEG_INFINITY, -1e12));
    assert!(!ok(f32::INFINITY, -1e12));
    assert!(!ok(-65504.0, -1e12));
    assert!(!ok(f32::INFINITY, 100.0));
    assert!(ok(100.0 + 0.03, 100.0)); // within ½ ulp (2⁻¹¹·100 ≈ 0.049)
    assert!(!ok(100.0 + 0.2, 100.0));
}
