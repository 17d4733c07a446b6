//! Sizes past the adapter's limits: inputs larger than one storage binding, more than 65,535
//! rows, grids past 65,535 workgroups, and the largest class count. Tolerances as in
//! tests/cross_entropy.rs.

mod common;

use common::{assert_close, engine, fresh_rng};
use wgpu_losses::reference::{cross_entropy, RefTarget};
use wgpu_losses::registry::{Case, HostArray};
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

/// `d` repeated cyclically to `len` values (so every value is one the loss accepted).
fn tiled(d: &wgpu_losses::registry::HostData, len: usize) -> wgpu_losses::registry::HostData {
    use wgpu_losses::registry::HostData;
    match d {
        HostData::F32(v) => HostData::F32(v.iter().copied().cycle().take(len).collect()),
        HostData::I64(v) => HostData::I64(v.iter().copied().cycle().take(len).collect()),
        other => panic!("random cases are f32 or integers: {other:?}"),
    }
}

/// GPU against the CPU backend on one case: loss and every gradient, the gradients'
/// tolerance scaled by their largest value.
fn gpu_matches_cpu(what: &str, def: &dyn wgpu_losses::registry::LossDef, case: &Case) {
    let (gpu, cpu) = (def.gpu(engine(), case).unwrap(), def.cpu(case).unwrap());
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    assert_close(
        &format!("{what} loss"),
        &gpu.loss,
        &wide(&cpu.loss),
        Tolerance::default(),
    );
    for ((name, g, _), (_, c, _)) in gpu.grads.iter().zip(&cpu.grads) {
        assert_close(
            &format!("{what} grad {name}"),
            g,
            &wide(c),
            Tolerance::default(),
        );
    }
}

/// Every loss that takes inputs of any shape (the elementwise family, found from the
/// registry) past 2²⁴ elements, where an f32 count or index stops being exact and the
/// arrays pass 64 MiB: GPU against the CPU backend, on each loss's own random values tiled
/// to that length, with every option its random case draws.
#[test]
fn every_elementwise_loss_past_2_24_elements() {
    let len = (1 << 24) + (1 << 20) + 7;
    let mut rng = fresh_rng("every_elementwise_loss_past_2_24_elements");
    let mut ran = Vec::new();
    for def in wgpu_losses::losses::all() {
        let main = def.inputs().iter().find(|s| s.differentiable).unwrap().name;
        // A random case whose inputs all have the main input's shape, accepted flattened.
        let flat = |c: &Case| {
            let mut c = c.clone();
            c.inputs.remove("grad_output");
            c.inputs
                .values_mut()
                .for_each(|a| a.shape = vec![a.data.len()]);
            c
        };
        let Some(small) = (0..50).map(|_| def.random_case(&mut rng)).find(|c| {
            let shape = &c.inputs[main].shape;
            c.inputs
                .iter()
                .all(|(n, a)| n == "grad_output" || &a.shape == shape)
                && !c.inputs[main].data.is_empty()
                && def.reference(&flat(c)).is_ok()
        }) else {
            continue;
        };
        let mut big = flat(&small);
        for a in big.inputs.values_mut() {
            a.data = tiled(&a.data, len);
            a.shape = vec![len];
        }
        gpu_matches_cpu(&format!("{} {:?}", def.name(), big.options), *def, &big);
        ran.push(def.name());
    }
    eprintln!("past 2^24 elements: {ran:?}");
    assert!(ran.len() >= 15, "ran {ran:?}");
}

/// dice past a binding and 2²⁴ positions: 2 × 2 × (2²³ + 8) logits (134 MB: the items run
/// in two windows, whose offsets the adapter's alignment accepts), softmax over two
/// channels, class-index labels; GPU against the CPU backend.
#[test]
fn dice_past_a_binding_and_2_24_positions() {
    let (n, c, s) = (2, 2, (1 << 23) + 8);
    let mut rng = fresh_rng("dice_past_a_binding_and_2_24_positions");
    let x = rng.normals(n * c * s, 2.0);
    let labels: Vec<i64> = (0..n * s).map(|_| rng.below(c) as i64).collect();
    let def = wgpu_losses::losses::find("dice").unwrap();
    for reduction in ["mean", "none"] {
        let case = Case::default()
            .with("input", HostArray::f32(&[n, c, s], x.clone()))
            .with("target", HostArray::i64(&[n, s], labels.clone()))
            .set("activation", "softmax")
            .set("reduction", reduction);
        gpu_matches_cpu(&format!("dice {reduction}"), def, &case);
    }
}

/// Every ranking loss past 2²⁴ scores: 2²⁰ + 3 lists of 16 items (17 M scores, 67 MB, past
/// 2²⁴ where an f32 index stops being exact), graded relevance in 0..4, NDCG reported; GPU
/// against the CPU backend. Scores are multiples of ¼, so every pair's difference and hinge
/// argument is exact: among 2.7·10⁸ pairs some would otherwise fall within f32 rounding of
/// the hinge's kink, where the backends may legitimately decide differently.
#[test]
fn every_ranking_loss_past_2_24_scores() {
    let (q, l) = ((1 << 20) + 3, 16);
    let mut rng = fresh_rng("every_ranking_loss_past_2_24_scores");
    let scores: Vec<f32> = rng
        .normals(q * l, 2.0)
        .iter()
        .map(|s| (s * 4.0).round() / 4.0)
        .collect();
    let relevance: Vec<f32> = (0..q * l).map(|_| rng.below(4) as f32).collect();
    for name in [
        "ranknet",
        "pairwise-hinge",
        "listnet",
        "listmle",
        "lambda-ndcg",
    ] {
        let def = wgpu_losses::losses::find(name).unwrap();
        let case = Case::default()
            .with("scores", HostArray::f32(&[q, l], scores.clone()))
            .with("relevance", HostArray::f32(&[q, l], relevance.clone()))
            .set("ndcg", true);
        gpu_matches_cpu(name, def, &case);
    }
}

/// CTC past 2²⁴ logits: T = 256 frames of 32 sequences over 2,049 classes (16.8 M logits, 67
/// MB), targets of up to 40 labels with repeats, mixed lengths; GPU against the CPU backend.
#[test]
fn ctc_past_2_24_logits() {
    let (t, n, c, s) = (256, 32, 2049, 40);
    let mut rng = fresh_rng("ctc_past_2_24_logits");
    let logits = rng.normals(t * n * c, 1.0);
    let targets: Vec<i64> = (0..n * s).map(|_| 1 + rng.below(4) as i64).collect();
    let input_lengths: Vec<i64> = (0..n).map(|_| (t - rng.below(64)) as i64).collect();
    let target_lengths: Vec<i64> = (0..n).map(|_| rng.below(s + 1) as i64).collect();
    let def = wgpu_losses::losses::find("ctc").unwrap();
    for reduction in ["mean", "none"] {
        let case = Case::default()
            .with("logits", HostArray::f32(&[t, n, c], logits.clone()))
            .with("targets", HostArray::i64(&[n, s], targets.clone()))
            .with("input_lengths", HostArray::i64(&[n], input_lengths.clone()))
            .with(
                "target_lengths",
                HostArray::i64(&[n], target_lengths.clone()),
            )
            .set("reduction", reduction);
        gpu_matches_cpu(&format!("ctc {reduction}"), def, &case);
    }
}

/// CTC over 65,537 sequences: its per-sequence kernel's grid passes 65,535 workgroups (the
/// overshoot of the 2-D grid must do nothing); short sequences, GPU against the CPU backend.
#[test]
fn ctc_past_65535_sequences() {
    let (t, n, c, s) = (3, 65_537, 4, 2);
    let mut rng = fresh_rng("ctc_past_65535_sequences");
    let targets: Vec<i64> = (0..n * s).map(|_| 1 + rng.below(c - 1) as i64).collect();
    let target_lengths: Vec<i64> = (0..n).map(|_| rng.below(s + 1) as i64).collect();
    let case = Case::default()
        .with(
            "logits",
            HostArray::f32(&[t, n, c], rng.normals(t * n * c, 1.0)),
        )
        .with("targets", HostArray::i64(&[n, s], targets))
        .with("input_lengths", HostArray::i64(&[n], vec![t as i64; n]))
        .with("target_lengths", HostArray::i64(&[n], target_lengths))
        .set("reduction", "sum");
    gpu_matches_cpu("ctc", wgpu_losses::losses::find("ctc").unwrap(), &case);
}

/// Issue 14's mining case: 6,000 standard-normal rows of 8 with labels in 0..10, about
/// 600 positives per anchor, where the kernels of the time stopped early on lavapipe (NaN
/// loss) and took minutes. Each anchor's row is now sorted (more than 256 positives).
/// Batch-all there, GPU against the CPU backend (a pair decided differently within f32
/// rounding moves one weight of millions); semi-hard, whose one negative per pair makes
/// such a flip visible, on rows of the integer grid {0..3}⁸ with squared distances, where
/// every distance is an exact integer and every decision exact.
#[test]
fn mining_6000_rows_of_ten_classes() {
    let (n, d) = (6000, 8);
    let mut rng = fresh_rng("mining_6000_rows_of_ten_classes");
    let normal = HostArray::f32(&[n, d], rng.normals(n * d, 1.0));
    let grid = HostArray::f32(&[n, d], (0..n * d).map(|_| rng.below(4) as f32).collect());
    let l = HostArray::i64(&[n], (0..n).map(|_| rng.below(10) as i64).collect());
    let def = wgpu_losses::losses::find("triplet-mined").unwrap();
    for (mining, e, distance, margin) in [
        ("batch-all", &normal, "euclidean", 0.2),
        ("semi-hard", &grid, "squared", 0.5),
    ] {
        let case = Case::default()
            .with("embeddings", e.clone())
            .with("labels", l.clone())
            .set("mining", mining)
            .set("distance", distance)
            .set("margin", margin);
        gpu_matches_cpu(mining, def, &case);
    }
}

/// The all-pairs losses past 2²⁴ input elements: about 1,025 rows of 16,400 (a depth that
/// is no multiple of the 32-deep chunks), where the tile kernels' depth loops are long. GPU
/// against the CPU backend. On a software adapter the InfoNCE losses refuse this size with
/// `Error::Limit` (their key splits, each holding a partial gradient of the whole input,
/// cannot keep every invocation's loops short within one 128 MiB binding), which is checked
/// instead; mined triplets run there too.
#[test]
fn all_pairs_losses_past_2_24_elements() {
    let (n, d) = (1025, 16_400);
    let mut rng = fresh_rng("all_pairs_losses_past_2_24_elements");
    let mut rows = |n: usize| HostArray::f32(&[n, d], rng.normals(n * d, 0.01));
    // nt-xent's two views: an even number of rows.
    let (z, a, b, e) = (rows(n + 1), rows(n / 2 + 1), rows(n / 2 + 1), rows(n));
    let labels = HostArray::i64(&[n], (0..n).map(|i| (i % 5) as i64).collect());
    // Mining decides discretely: on rows of the integer grid {0..3}^d with squared distances
    // every distance is an exact integer below 2²⁴ in any summation order, so GPU and CPU
    // decide alike (on normal rows a farthest positive within f32 rounding of the next one
    // may be picked differently, legitimately).
    let grid = HostArray::f32(&[n, d], (0..n * d).map(|_| rng.below(4) as f32).collect());
    let software = engine().adapter_info().device_type == wgpu::DeviceType::Cpu;
    for (name, case) in [
        ("nt-xent", Case::default().with("z", z)),
        ("clip", Case::default().with("a", a).with("b", b)),
        (
            "supcon",
            Case::default()
                .with("embeddings", e.clone())
                .with("labels", labels.clone()),
        ),
        (
            "triplet-mined",
            Case::default()
                .with("embeddings", grid)
                .with("labels", labels)
                .set("mining", "batch-hard")
                .set("distance", "squared"),
        ),
    ] {
        let def = wgpu_losses::losses::find(name).unwrap();
        if software && name != "triplet-mined" {
            let got = def.gpu(engine(), &case);
            assert!(
                matches!(&got, Err(wgpu_losses::Error::Limit(m)) if m.contains("key splits")),
                "{name}: {:?}",
                got.map(|g| g.loss)
            );
        } else {
            gpu_matches_cpu(name, def, &case);
        }
    }
}

/// Rows deeper than a software adapter's loops allow (they stop after 65,535 iterations per
/// invocation): mined triplets over 64 rows of 32,768 returned a gradient half of what it
/// should be on lavapipe, silently. Such rows are now an `Err` there (every all-pairs loss);
/// on a GPU they are compared with the CPU backend.
#[test]
fn all_pairs_rows_too_deep_for_a_software_adapter() {
    let (n, d) = (64, 32_768);
    let mut rng = fresh_rng("all_pairs_rows_too_deep_for_a_software_adapter");
    let e = HostArray::f32(&[n, d], rng.normals(n * d, 0.01));
    let grid = HostArray::f32(&[n, d], (0..n * d).map(|_| rng.below(4) as f32).collect());
    let labels = HostArray::i64(&[n], (0..n).map(|i| (i % 5) as i64).collect());
    let software = engine().adapter_info().device_type == wgpu::DeviceType::Cpu;
    for (name, case) in [
        (
            // Exact distances, as in all_pairs_losses_past_2_24_elements.
            "triplet-mined",
            Case::default()
                .with("embeddings", grid)
                .with("labels", labels.clone())
                .set("mining", "batch-hard")
                .set("distance", "squared"),
        ),
        ("nt-xent", Case::default().with("z", e.clone())),
        (
            "supcon",
            Case::default().with("embeddings", e).with("labels", labels),
        ),
    ] {
        let def = wgpu_losses::losses::find(name).unwrap();
        if software {
            let got = def.gpu(engine(), &case);
            assert!(
                matches!(got, Err(wgpu_losses::Error::Limit(_))),
                "{name}: {:?}",
                got.map(|g| g.loss)
            );
        } else {
            gpu_matches_cpu(name, def, &case);
        }
    }
}

/// mse past 2³¹ elements (8 GiB per f32 input), where the f32 divisor of the mean and the
/// kernels' element indices are at their widest: GPU against the CPU backend on adapters
/// whose buffers hold that much. Elsewhere (lavapipe: 2 GiB buffers, on a 24 GiB machine)
/// such a tensor must be refused, cleanly: `Error::Limit`, nothing allocated.
#[test]
fn mse_past_2_31_elements_where_buffers_allow() {
    let len = (1usize << 31) + 1031;
    let e = engine();
    if (len as u64) * 4 > e.limits().max_buffer_size {
        let got = e.zeros(&[len], wgpu_losses::DType::F32);
        assert!(
            matches!(&got, Err(wgpu_losses::Error::Limit(m)) if m.contains("max_buffer_size")),
            "{:?}",
            got.err()
        );
        return;
    }
    let mut rng = fresh_rng("mse_past_2_31_elements");
    let small = |rng: &mut wgpu_losses::registry::random::Rng| {
        wgpu_losses::registry::HostData::F32(rng.normals(4099, 1.0))
    };
    let (input, target) = (small(&mut rng), small(&mut rng));
    let array = |d: &wgpu_losses::registry::HostData| HostArray {
        shape: vec![len],
        data: tiled(d, len),
    };
    let case = Case::default()
        .with("input", array(&input))
        .with("target", array(&target));
    gpu_matches_cpu("mse", wgpu_losses::losses::find("mse").unwrap(), &case);
}
