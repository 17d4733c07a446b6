//! The metric-learning losses on the GPU (and the CPU backend where noted) against the f64
//! reference: tile boundaries, label patterns, ties, zero vectors, NaN, matrices split over
//! bindings, bad input, and an nt-xent batch of 16,384 rows without an N×N buffer.
//! Tolerances as in tests/cross_entropy.rs (Tolerance::default()).

mod common;

use common::{assert_evaluated, check_case, engine, fresh_rng, own_engine};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray, LossDef};
use wgpu_losses::{Engine, EngineOptions, Error, InfoNce, NceInputs, NceKind, Tolerance};

fn def(name: &str) -> &'static dyn LossDef {
    wgpu_losses::losses::find(name).unwrap()
}

fn rows(rng: &mut Rng, n: usize, d: usize) -> HostArray {
    HostArray::f32(&[n, d], rng.normals(n * d, 0.7))
}

fn labels(l: Vec<i64>) -> HostArray {
    HostArray::i64(&[l.len()], l)
}

/// Checks `case` on the GPU and on the CPU backend against the reference.
fn check_both(name: &str, case: &Case) {
    let d = def(name);
    if check_case(d, engine(), case, Tolerance::default()) {
        let cpu = d.cpu(case).unwrap();
        assert_evaluated(
            &format!("cpu {name} {:?}", case.options),
            &cpu,
            &d.reference(case).unwrap(),
            Tolerance::default(),
        );
    }
}

#[test]
fn tile_and_chunk_boundaries() {
    let mut rng = fresh_rng("tile_and_chunk_boundaries");
    // Tiles of 64 keys in halves of 32 and 64 query rows (both sides of each); InfoNCE's
    // gradient stays in registers up to 256 dimensions (8 depth chunks) with 8 block rows
    // up to 64 dimensions, then 7 (96), 6 (128), 5 (129, 160), 4 (200) and 3 (256), and is
    // added into memory per key half beyond: both sides of those boundaries.
    for (n, dim) in [
        (1, 1),
        (31, 33),
        (32, 32),
        (33, 31),
        (64, 40),
        (65, 64),
        (97, 3),
        (50, 96),
        (70, 128),
        (70, 129),
        (50, 160),
        (40, 256),
        (33, 257),
        (20, 200),
    ] {
        let mut l: Vec<i64> = (0..n).map(|_| rng.below(4) as i64).collect();
        l[0] = l[n - 1];
        check_both(
            "nt-xent",
            &Case::default().with("z", rows(&mut rng, 2 * n, dim)),
        );
        check_both(
            "clip",
            &Case::default()
                .with("a", rows(&mut rng, n, dim))
                .with("b", rows(&mut rng, n, dim))
                .set("temperature", 0.07),
        );
        check_both(
            "supcon",
            &Case::default()
                .with("embeddings", rows(&mut rng, n, dim))
                .with("labels", labels(l.clone())),
        );
        for mining in ["batch-all", "batch-hard", "semi-hard"] {
            for distance in ["euclidean", "squared", "cosine"] {
                check_both(
                    "triplet-mined",
                    &Case::default()
                        .with("embeddings", rows(&mut rng, n, dim))
                        .with("labels", labels(l.clone()))
                        .set("mining", mining)
                        .set("distance", distance),
                );
            }
        }
    }
}

#[test]
fn label_patterns() {
    let mut rng = fresh_rng("label_patterns");
    let n = 40;
    let patterns: [Vec<i64>; 4] = [
        vec![3; n],              // all one class
        (0..n as i64).collect(), // all distinct
        (0..n as i64)
            .map(|i| if i < 5 { 100 + i } else { i % 2 })
            .collect(), // singletons
        (0..n as i64).map(|i| -(i % 3)).collect(), // negative labels
    ];
    for l in patterns {
        let e = rows(&mut rng, n, 12);
        check_both(
            "supcon",
            &Case::default()
                .with("embeddings", e.clone())
                .with("labels", labels(l.clone())),
        );
        for mining in ["batch-all", "batch-hard", "semi-hard"] {
            let case = Case::default()
                .with("embeddings", e.clone())
                .with("labels", labels(l.clone()))
                .set("mining", mining);
            check_both("triplet-mined", &case);
        }
    }
    // No anchor has a positive (or no negative exists): the loss is 0 with a zero gradient.
    for (name, l) in [("supcon", (0..6).collect()), ("triplet-mined", vec![1; 6])] {
        let case = Case::default()
            .with("embeddings", rows(&mut rng, 6, 4))
            .with("labels", labels(l));
        let out = def(name).gpu(engine(), &case).unwrap();
        assert_eq!(out.loss, vec![0.0], "{name}");
        assert!(out.grads[0].1.iter().all(|&g| g == 0.0), "{name}");
    }
}

#[test]
fn ties_pick_the_lowest_index() {
    // Rows 1 and 2 are equal, so anchor 0 sees two positives at exactly distance 1 (and
    // anchors 1, 2 two negatives at equal distance when row 4 equals row 3): batch-hard
    // and semi-hard must pick the lower index, as the reference does.
    let e = HostArray::f32(
        &[5, 2],
        vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.5],
    );
    let l = labels(vec![0, 0, 0, 1, 1]);
    for mining in ["batch-hard", "semi-hard", "batch-all"] {
        for distance in ["euclidean", "squared"] {
            let case = Case::default()
                .with("embeddings", e.clone())
                .with("labels", l.clone())
                .set("mining", mining)
                .set("distance", distance)
                .set("margin", 0.3);
            let d = def("triplet-mined");
            let want = d.reference(&case).unwrap();
            let what = format!("{mining} {distance}");
            assert_evaluated(
                &what,
                &d.gpu(engine(), &case).unwrap(),
                &want,
                Tolerance::default(),
            );
            assert_evaluated(&what, &d.cpu(&case).unwrap(), &want, Tolerance::default());
        }
    }
}

#[test]
fn zero_vectors_under_cosine_stay_finite() {
    let mut rng = fresh_rng("zero_vectors_under_cosine_stay_finite");
    let (n, dim) = (10, 6);
    let mut z = rng.normals(2 * n * dim, 1.0);
    z[..dim].iter_mut().for_each(|v| *v = 0.0);
    let mut e = rng.normals(n * dim, 1.0);
    e[dim..2 * dim].iter_mut().for_each(|v| *v = 0.0);
    let cases = [
        (
            "nt-xent",
            Case::default().with("z", HostArray::f32(&[2 * n, dim], z)),
        ),
        (
            "triplet-mined",
            Case::default()
                .with("embeddings", HostArray::f32(&[n, dim], e.clone()))
                .with("labels", labels((0..n as i64).map(|i| i % 3).collect()))
                .set("distance", "cosine"),
        ),
        (
            "supcon",
            Case::default()
                .with("embeddings", HostArray::f32(&[n, dim], e))
                .with("labels", labels((0..n as i64).map(|i| i % 2).collect())),
        ),
    ];
    for (name, case) in cases {
        let out = def(name).gpu(engine(), &case).unwrap();
        assert!(out.loss[0].is_finite(), "{name}: loss {}", out.loss[0]);
        assert!(
            out.grads
                .iter()
                .all(|(_, g, _)| g.iter().all(|v| v.is_finite())),
            "{name}: gradient not finite"
        );
        check_both(name, &case);
    }
}

#[test]
fn nan_embeddings_propagate() {
    let mut rng = fresh_rng("nan_embeddings_propagate");
    let (n, dim) = (8, 5);
    let poisoned = |rng: &mut Rng, rows: usize| {
        let mut v = rng.normals(rows * dim, 1.0);
        v[dim + 2] = f32::NAN;
        HostArray::f32(&[rows, dim], v)
    };
    let l = labels((0..n as i64).map(|i| i % 2).collect());
    let y = HostArray::f32(&[n], (0..n).map(|i| (i % 2) as f32).collect());
    let cases = [
        (
            "nt-xent",
            Case::default().with("z", poisoned(&mut rng, 2 * n)),
        ),
        (
            "clip",
            Case::default()
                .with("a", poisoned(&mut rng, n))
                .with("b", rows(&mut rng, n, dim)),
        ),
        (
            "supcon",
            Case::default()
                .with("embeddings", poisoned(&mut rng, n))
                .with("labels", l.clone()),
        ),
        (
            "triplet-mined",
            Case::default()
                .with("embeddings", poisoned(&mut rng, n))
                .with("labels", l),
        ),
        (
            "contrastive",
            Case::default()
                .with("x1", poisoned(&mut rng, n))
                .with("x2", rows(&mut rng, n, dim))
                .with("y", y),
        ),
        (
            "triplet",
            Case::default()
                .with("anchor", poisoned(&mut rng, n))
                .with("positive", rows(&mut rng, n, dim))
                .with("negative", rows(&mut rng, n, dim)),
        ),
    ];
    for (name, case) in cases {
        for (backend, out) in [
            ("gpu", def(name).gpu(engine(), &case).unwrap()),
            ("cpu", def(name).cpu(&case).unwrap()),
        ] {
            assert!(
                out.loss[0].is_nan(),
                "{backend} {name}: loss {}",
                out.loss[0]
            );
            // The poisoned row's gradient is NaN.
            assert!(
                out.grads[0].1[dim..2 * dim].iter().all(|v| v.is_nan()),
                "{backend} {name}"
            );
        }
        assert!(
            def(name).reference(&case).unwrap().loss[0].is_nan(),
            "reference {name}"
        );
    }
}

/// Anchors with more than 256 positives have their rows sorted, anchors with fewer their
/// positives listed and sorted in workgroup memory; both at once here, with ties
/// everywhere: rows drawn from the 27 points of {0, 1, 2}³, so squared distances are exact
/// integers and euclidean ones square roots of them, and margin 0.3 keeps every hinge at
/// least 0.017 from its kink. Every decision is exact in f32, so each backend must equal
/// the reference (no case is set aside as ambiguous), also with the sort scratch split
/// into windows by a 16 KiB binding cap.
#[test]
fn many_positives_sort_the_row_and_ties_pick_the_lowest_index() {
    let mut rng = fresh_rng("many_positives_sort_the_row");
    let n = 600;
    let e: Vec<f32> = (0..n * 3).map(|_| rng.below(3) as f32).collect();
    // Classes of 350, 150 and 100 rows, interleaved.
    let l: Vec<i64> = (0..n)
        .map(|i| match i % 12 {
            0..=6 => 0,
            7..=9 => 1,
            _ => 2,
        })
        .collect();
    let small = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let d = def("triplet-mined");
    for mining in ["batch-all", "semi-hard", "batch-hard"] {
        for distance in ["squared", "euclidean"] {
            let case = Case::default()
                .with("embeddings", HostArray::f32(&[n, 3], e.clone()))
                .with("labels", labels(l.clone()))
                .set("mining", mining)
                .set("distance", distance)
                .set("margin", 0.3);
            let want = d.reference(&case).unwrap();
            let what = format!("{mining} {distance}");
            for eng in [engine(), &small] {
                assert_evaluated(
                    &what,
                    &d.gpu(eng, &case).unwrap(),
                    &want,
                    Tolerance::default(),
                );
            }
            assert_evaluated(&what, &d.cpu(&case).unwrap(), &want, Tolerance::default());
        }
    }
}

#[test]
fn mined_matrices_split_across_bindings() {
    // A 16 KiB binding cap holds 32 rows of a 130×130 matrix: five row windows, and the
    // backward pass runs over every pair of windows.
    let small = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let mut rng = fresh_rng("mined_matrices_split_across_bindings");
    let n = 130;
    for mining in ["batch-all", "batch-hard", "semi-hard"] {
        for distance in ["euclidean", "cosine"] {
            let case = Case::default()
                .with("embeddings", rows(&mut rng, n, 7))
                .with(
                    "labels",
                    labels((0..n).map(|_| rng.below(5) as i64).collect()),
                )
                .set("mining", mining)
                .set("distance", distance);
            check_case(def("triplet-mined"), &small, &case, Tolerance::default());
        }
    }
    // Explicit pairs and triplets split by rows too.
    let case = Case::default()
        .with("anchor", rows(&mut rng, 2000, 9))
        .with("positive", rows(&mut rng, 2000, 9))
        .with("negative", rows(&mut rng, 2000, 9))
        .set("swap", true)
        .set("reduction", "none");
    check_case(def("triplet"), &small, &case, Tolerance::default());
}

#[test]
fn repeated_runs_give_identical_bits() {
    let mut rng = fresh_rng("metric repeated_runs_give_identical_bits");
    let e = rows(&mut rng, 90, 20);
    let l = labels((0..90).map(|i| i % 7).collect());
    for name in ["triplet-mined", "supcon"] {
        let case = Case::default()
            .with("embeddings", e.clone())
            .with("labels", l.clone());
        let first = def(name).gpu(engine(), &case).unwrap();
        for _ in 0..3 {
            assert_eq!(def(name).gpu(engine(), &case).unwrap(), first, "{name}");
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let mut rng = fresh_rng("metric bad_input");
    let e = rows(&mut rng, 6, 4);
    let err = |name: &str, case: Case| {
        let d = def(name);
        let gpu = d.gpu(engine(), &case).expect_err(name);
        assert_eq!(d.cpu(&case).expect_err(name), gpu);
        assert_eq!(d.reference(&case).expect_err(name), gpu);
        gpu
    };
    let labelled = |l: Vec<i64>| {
        Case::default()
            .with("embeddings", e.clone())
            .with("labels", labels(l))
    };
    // Label count != N.
    assert!(matches!(
        err("supcon", labelled(vec![0, 1, 0])),
        Error::Shape {
            input: "labels",
            ..
        }
    ));
    assert!(matches!(
        err("triplet-mined", labelled(vec![0; 7])),
        Error::Shape {
            input: "labels",
            ..
        }
    ));
    // Dimension mismatch between inputs.
    let clip = Case::default()
        .with("a", e.clone())
        .with("b", rows(&mut rng, 6, 5));
    assert!(matches!(err("clip", clip), Error::Shape { input: "b", .. }));
    let trip = Case::default()
        .with("anchor", e.clone())
        .with("positive", e.clone())
        .with("negative", rows(&mut rng, 5, 4));
    assert!(matches!(
        err("triplet", trip.clone()),
        Error::Shape {
            input: "negative",
            ..
        }
    ));
    // Temperature <= 0, negative margin, p outside {1, 2}, odd nt-xent batch.
    for t in ["0", "-0.5", "nan"] {
        let case = Case::default().with("z", e.clone()).set("temperature", t);
        assert!(matches!(
            err("nt-xent", case),
            Error::Option {
                option: "temperature",
                ..
            }
        ));
    }
    let case = labelled(vec![0, 0, 1, 1, 2, 2]).set("margin", -0.1);
    assert!(matches!(
        err("triplet-mined", case),
        Error::Option {
            option: "margin",
            ..
        }
    ));
    let good = Case::default()
        .with("anchor", e.clone())
        .with("positive", e.clone())
        .with("negative", e.clone());
    assert!(matches!(
        err("triplet", good.clone().set("p", 3)),
        Error::Option { option: "p", .. }
    ));
    assert!(matches!(
        err("triplet", good.set("margin", -1)),
        Error::Option {
            option: "margin",
            ..
        }
    ));
    let odd = Case::default().with("z", rows(&mut rng, 5, 4));
    assert!(matches!(
        err("nt-xent", odd),
        Error::Shape { input: "z", .. }
    ));
    // Contrastive labels outside [0, 1], named with their row.
    let case = Case::default()
        .with("x1", e.clone())
        .with("x2", e.clone())
        .with(
            "y",
            HostArray::f32(&[6], vec![1.0, 0.0, -1.0, 1.0, 0.0, 1.0]),
        );
    assert!(matches!(
        err("contrastive", case),
        Error::Value {
            input: "y",
            row: 2,
            ..
        }
    ));
    // Unknown mining / distance; non-mean reduction on a batch loss.
    for (k, v) in [
        ("mining", "hardest"),
        ("distance", "manhattan"),
        ("reduction", "sum"),
    ] {
        let case = labelled(vec![0, 0, 1, 1, 2, 2]).set(k, v);
        assert!(
            matches!(err("triplet-mined", case), Error::Option { .. }),
            "{k}"
        );
    }
}

#[test]
fn nt_xent_at_16384_rows_allocates_no_n_by_n_buffer() {
    // D = 8 keeps this affordable on a software adapter; the memory bound does not depend on D.
    // Its own engine: the counters of the shared one count the other tests' buffers too.
    let e = &own_engine();
    let mut rng = fresh_rng("nt_xent_at_16384_rows");
    let (m, dim) = (16_384, 8);
    let z = rng.normals(m * dim, 1.0);
    let zt = e.upload(&z, &[m, dim]).unwrap();
    e.reset_counters();
    let out = InfoNce::new(NceKind::NtXent)
        .run(e, &NceInputs::nt_xent(&zt))
        .unwrap();
    let stats = e.counters();
    let nn = (m * m * 4) as u64;
    // Normalized rows, gradient and its readback: 3·M·D floats; per-row planes; small buffers.
    let bound = (4 * m * dim * 4 + 16 * m * 4 + (1 << 20)) as u64;
    assert!(
        stats.largest_buffer < nn / 1000 && stats.bytes_created <= bound,
        "{stats:?} vs N×N = {nn} bytes"
    );
    let cpu = def("nt-xent")
        .cpu(&Case::default().with("z", HostArray::f32(&[m, dim], z)))
        .unwrap();
    let tol = Tolerance::default();
    let c = wgpu_losses::registry::compare::compare(
        &out.loss,
        &cpu.loss.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        tol,
    );
    assert!(c.ok(), "loss gpu {:?} cpu {:?}", out.loss, cpu.loss);
    let want: Vec<f64> = cpu.grads[0].1.iter().map(|&v| v as f64).collect();
    let c = wgpu_losses::registry::compare::compare(out.grad("z").unwrap(), &want, tol);
    assert!(c.ok(), "gradient: {c:?}");
}

/// Rows of magnitude 1e20 and 1e30 normalize as rows of magnitude 1 do (normalization is
/// scale-free): the GPU's sum of squares overflowed from |x| ~ 1e19, giving a zero gradient
/// and another loss than the CPU backend and the reference. The tolerance's floor is tiny, so
/// the 1e-20-sized gradients are compared, not waved through.
#[test]
fn huge_embeddings_normalize_without_overflow() {
    let mut rng = fresh_rng("huge_embeddings_normalize_without_overflow");
    let tol = Tolerance {
        floor: 1e-38,
        ..Tolerance::default()
    };
    for scale in [1e20f32, 1e30] {
        let big = |rng: &mut Rng, n: usize, d: usize| {
            HostArray::f32(
                &[n, d],
                rng.normals(n * d, 1.0).iter().map(|v| v * scale).collect(),
            )
        };
        let cases = [
            ("nt-xent", Case::default().with("z", big(&mut rng, 8, 5))),
            (
                "clip",
                Case::default()
                    .with("a", big(&mut rng, 6, 7))
                    .with("b", big(&mut rng, 6, 7)),
            ),
            (
                "supcon",
                Case::default()
                    .with("embeddings", big(&mut rng, 8, 3))
                    .with("labels", labels(vec![0, 1, 0, 1, 2, 2, 0, 1])),
            ),
            (
                "triplet-mined",
                Case::default()
                    .with("embeddings", big(&mut rng, 8, 3))
                    .with("labels", labels(vec![0, 1, 0, 1, 2, 2, 0, 1]))
                    .set("distance", "cosine")
                    .set("mining", "batch-hard"),
            ),
        ];
        for (name, case) in cases {
            let d = def(name);
            let gpu = d.gpu(engine(), &case).unwrap();
            assert!(
                gpu.grads[0].1.iter().any(|&g| g != 0.0) && gpu.loss[0].is_finite(),
                "{name} at {scale:e}: {gpu:?}"
            );
            if check_case(d, engine(), &case, tol) {
                let cpu = d.cpu(&case).unwrap();
                assert_evaluated(
                    &format!("cpu {name}"),
                    &cpu,
                    &d.reference(&case).unwrap(),
                    tol,
                );
            }
        }
    }
}
