//! Fused linear cross-entropy beyond the registry-wide suites (which check it on every
//! backend against the f64 reference at random shapes, options and chunk sizes, and
//! tests/pytorch_fixtures.rs against PyTorch): no N×V buffer at a gibibyte of logits,
//! chunking, loss-only calls and bad targets. Tolerance as everywhere (`Tolerance::default`).

mod common;

use common::{assert_close, check_case, engine, fresh_rng, own_engine};
use wgpu_losses::cpu::{linear_cross_entropy, HostLinearInputs};
use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::{
    DType, Engine, EngineOptions, Error, LinearCrossEntropy, LinearCrossEntropyInputs, Reduction,
    Tensor, Tolerance, Upstream,
};

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Hidden states, classifier and targets of a problem whose logits are of order 1.
fn problem(seed: &str, n: usize, h: usize, v: usize) -> (Vec<f32>, Vec<f32>, Vec<i32>) {
    let mut rng = fresh_rng(seed);
    let hidden = rng.normals(n * h, 1.0);
    let classifier = rng.normals(v * h, 1.5 / (h as f64).sqrt());
    let target = (0..n)
        .map(|_| {
            if rng.chance(0.1) {
                -100
            } else {
                rng.below(v) as i32
            }
        })
        .collect();
    (hidden, classifier, target)
}

#[test]
fn a_gibibyte_of_logits_never_exists() {
    // 8192 × 32768 f32 logits would be 1 GiB; the call holds one 64 MiB chunk of them.
    let (n, h, v) = (8192, 4, 32768);
    let (x, w, y) = problem("a_gibibyte_of_logits_never_exists", n, h, v);
    let e = own_engine();
    let hidden = e.upload(&x, &[n, h]).unwrap();
    let classifier = e.upload(&w, &[v, h]).unwrap();
    let target = e.upload_i32(&y, &[n]).unwrap();
    let opts = LinearCrossEntropy::new().label_smoothing(0.1);
    let before = e.counters();
    let got = opts
        .run(
            &e,
            &LinearCrossEntropyInputs::new(&hidden, &classifier, &target),
        )
        .unwrap();
    let c = e.counters().since(&before);
    let logits_bytes = (n * v * 4) as u64;
    eprintln!("one call at {n}x{h}x{v}: {c:?}");
    assert!(c.largest_buffer <= 64 << 20, "{c:?}");
    assert!(c.bytes_created < logits_bytes / 8, "{c:?}");
    let want = linear_cross_entropy(
        &opts,
        &HostLinearInputs {
            hidden: &x,
            classifier: &w,
            bias: None,
            shape: (n, h, v),
            target: &y,
            weight: None,
            upstream: Upstream::Ones,
        },
    )
    .unwrap();
    assert_close("loss", &got.loss, &to64(&want.loss), Tolerance::default());
    for ((name, g), (_, cpu)) in got.grads.iter().zip(&want.grads) {
        assert_close(name, g, &to64(cpu), Tolerance::default());
    }
}

/// The issue's shape, N = 8192, H = 1024, V = 32768 (f32 logits of 1 GiB, 2 GiB with their
/// gradient), recorded (not run: 1.6 TFLOP): the device memory a call creates beside its
/// inputs, from the engine's counters, is its gradients (160 MiB) and one chunk of logits.
#[test]
fn the_issue_shape_creates_its_gradients_and_one_chunk() {
    let (n, h, v) = (8192, 1024, 32768);
    let e = own_engine();
    let hidden = e.zeros(&[n, h], DType::F32).unwrap();
    let classifier = e.zeros(&[v, h], DType::F32).unwrap();
    let target = e.upload_i32(&vec![0; n], &[n]).unwrap();
    let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
    let before = e.counters();
    let mut encoder = e.encoder();
    LinearCrossEntropy::new()
        .record(&e, &mut encoder, &inputs)
        .unwrap();
    let c = e.counters().since(&before);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{n}x{h}x{v}: {:.1} MiB created, the largest buffer {:.1} MiB",
        mib(c.bytes_created),
        mib(c.largest_buffer)
    );
    let gradients = ((n + v) * h * 4) as u64;
    assert!(c.largest_buffer <= (v * h * 4) as u64, "{c:?}");
    assert!(c.bytes_created <= gradients + (65 << 20), "{c:?}");
}

#[test]
fn chunks_of_64_rows_give_the_one_chunk_result() {
    let (n, h, v) = (200, 24, 333);
    let (x, w, y) = problem("chunks_of_64_rows", n, h, v);
    let e = engine();
    let hidden = e.upload(&x, &[n, h]).unwrap();
    let classifier = e.upload(&w, &[v, h]).unwrap();
    let target = e.upload_i32(&y, &[n]).unwrap();
    let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
    let opts = LinearCrossEntropy::new().z_loss(1e-3).softcap(Some(8.0));
    let whole = opts.run(e, &inputs).unwrap();
    let chunked = opts.clone().chunk_rows(64).run(e, &inputs).unwrap();
    assert_close(
        "loss",
        &chunked.loss,
        &to64(&whole.loss),
        Tolerance::default(),
    );
    for ((name, a), (_, b)) in chunked.grads.iter().zip(&whole.grads) {
        assert_close(name, a, &to64(b), Tolerance::default());
    }
}

#[test]
fn loss_only_calls_give_the_same_loss_and_no_gradients() {
    let (n, h, v) = (70, 9, 65);
    let (x, w, y) = problem("loss_only", n, h, v);
    let e = engine();
    let hidden = e.upload(&x, &[n, h]).unwrap();
    let classifier = e.upload(&w, &[v, h]).unwrap();
    let target = e.upload_i32(&y, &[n]).unwrap();
    let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
    let full = LinearCrossEntropy::new().run(e, &inputs).unwrap();
    let only = LinearCrossEntropy::new()
        .gradient(false)
        .run(e, &inputs)
        .unwrap();
    assert_eq!(full.loss, only.loss);
    assert!(only.grads.is_empty());
}

#[test]
fn bad_targets_and_shapes_are_errors_naming_them() {
    let (n, h, v) = (130, 3, 7);
    let (x, w, mut y) = problem("bad_targets", n, h, v);
    y[97] = 7;
    let e = engine();
    let hidden = e.upload(&x, &[n, h]).unwrap();
    let classifier = e.upload(&w, &[v, h]).unwrap();
    let target = e.upload_i32(&y, &[n]).unwrap();
    let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
    // The row is named in the whole batch, in a later chunk too.
    for opts in [
        LinearCrossEntropy::new(),
        LinearCrossEntropy::new().chunk_rows(64),
    ] {
        match opts.run(e, &inputs) {
            Err(Error::Value {
                input, row, value, ..
            }) => {
                assert_eq!((input, row, value.as_str()), ("target", 97, "7"));
            }
            other => panic!("{other:?}"),
        }
    }
    // A classifier one class short of the bias: the bias is the input that disagrees.
    let short = e.upload(&w[..(v - 1) * h], &[v - 1, h]).unwrap();
    let bias = e.upload(&vec![0.0; v], &[v]).unwrap();
    let mismatched = LinearCrossEntropyInputs::new(&hidden, &short, &target).bias(&bias);
    let err = LinearCrossEntropy::new().run(e, &mismatched).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let err = LinearCrossEntropy::new()
        .chunk_rows(100)
        .run(e, &inputs)
        .unwrap_err();
    assert!(err.to_string().contains("chunk_rows"), "{err}");
}

#[test]
fn few_rows_of_a_large_vocabulary_split_across_workgroups() {
    // A few rows of 9,000+ classes: the row kernel splits each row over workgroups, and the
    // mean's denominator (computed over the whole batch first) is copied to where it looks.
    let mut rng = fresh_rng("few_rows_of_a_large_vocabulary");
    let def = wgpu_losses::losses::find("linear-cross-entropy").unwrap();
    for (n, h, v, reduction) in [
        (10, 8, 9000, "mean"),
        (3, 5, 20_011, "sum"),
        (130, 4, 8200, "mean"),
    ] {
        for gpu_layout in [false, true] {
            let engine = Engine::with_options(EngineOptions {
                gpu_layout: Some(gpu_layout),
                ..EngineOptions::default()
            })
            .unwrap();
            let y = (0..n)
                .map(|_| {
                    if rng.chance(0.2) {
                        -100
                    } else {
                        rng.below(v) as i64
                    }
                })
                .collect();
            let case = Case::default()
                .with("hidden", HostArray::f32(&[n, h], rng.normals(n * h, 1.0)))
                .with(
                    "classifier",
                    HostArray::f32(&[v, h], rng.normals(v * h, 1.0)),
                )
                .with("bias", HostArray::f32(&[v], rng.normals(v, 1.0)))
                .with("target", HostArray::i64(&[n], y))
                .set("reduction", reduction)
                .set("label_smoothing", 0.1)
                .set("chunk_rows", 64);
            check_case(def, &engine, &case, Tolerance::default());
        }
    }
}

/// A classifier larger than one storage binding (bindings capped at 256 KiB here): it runs in
/// pieces of 512 rows that fit, each a vocabulary shard of the one call (statistics, one
/// merge, gradients written into the whole outputs), against the f64 reference with every
/// option, in f32 and bf16, the loss alone too; and a classifier whose rows cannot fit one
/// binding is refused with `Error::Limit`.
#[test]
fn a_classifier_larger_than_one_binding_runs_in_pieces() {
    let mut rng = fresh_rng("a_classifier_larger_than_one_binding");
    let engine = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(256 << 10),
        ..EngineOptions::default()
    })
    .unwrap();
    let def = wgpu_losses::losses::find("linear-cross-entropy").unwrap();
    let (n, h, v) = (150, 128, 1300);
    for dtype in ["f32", "bf16"] {
        let y = (0..n)
            .map(|_| match rng.chance(0.1) {
                true => -100,
                false => rng.below(v) as i64,
            })
            .collect();
        let case = Case::default()
            .with("hidden", HostArray::f32(&[n, h], rng.normals(n * h, 1.0)))
            .with(
                "classifier",
                HostArray::f32(&[v, h], rng.normals(v * h, 0.2)),
            )
            .with("bias", HostArray::f32(&[v], rng.normals(v, 1.0)))
            .with(
                "weight",
                HostArray::f32(&[v], (0..v).map(|_| rng.range(0.2, 2.0) as f32).collect()),
            )
            .with("target", HostArray::i64(&[n], y))
            .set("reduction", ["mean", "sum", "none"][rng.below(3)])
            .set("label_smoothing", 0.1)
            .set("z_loss", 1e-3)
            .set("softcap", 6.0)
            .set("dtype", dtype);
        let case = case.apply_dtype(def).unwrap();
        assert!(check_case(def, &engine, &case, Tolerance::default()));
    }
    // The loss alone, of an f16 classifier of 1300×128 (its pieces now sized by f16 rows):
    // the loss of the call with gradients.
    let e = &engine;
    let (x, w, y) = problem("a_classifier_larger_than_one_binding (loss)", n, h, v);
    let hidden = e.upload_as(&x, &[n, h], DType::F16).unwrap();
    let classifier = e.upload_as(&w, &[v, h], DType::F16).unwrap();
    let target = e.upload_i32(&y, &[n]).unwrap();
    let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
    let opts = LinearCrossEntropy::new().label_smoothing(0.1);
    let with_grads = opts.run(e, &inputs).unwrap();
    let alone = opts.gradient(false).run(e, &inputs).unwrap();
    assert!(alone.grads.is_empty());
    let tol = Tolerance::default();
    assert_close("loss alone", &alone.loss, &to64(&with_grads.loss), tol);
    // One classifier row of 70,000 f32 values is 280 KB, past the binding: no piece fits.
    let wide = 70_000;
    let hidden = e.upload(&vec![0.0; 4 * wide], &[4, wide]).unwrap();
    let classifier = e.upload(&vec![0.0; 20 * wide], &[20, wide]).unwrap();
    let target = e.upload_i32(&[0, 1, 2, 3], &[4]).unwrap();
    let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
    match LinearCrossEntropy::new().run(e, &inputs) {
        Err(Error::Limit(_)) => {}
        other => panic!("{:?}", other.map(|v| v.loss)),
    }
}

#[test]
fn products_deeper_than_a_software_adapters_loop_limit() {
    // grad_hidden sums over V = 70,000 classes: on lavapipe one dispatch stopped its loops
    // silently (grad_hidden as wrong as it was large); CPU adapters now split the depth.
    let mut rng = fresh_rng("products_deeper_than_a_software_adapters_loop_limit");
    let (n, h, v) = (64, 4, 70_000);
    let y = (0..n).map(|_| rng.below(v) as i64).collect();
    let case = Case::default()
        .with("hidden", HostArray::f32(&[n, h], rng.normals(n * h, 1.0)))
        .with(
            "classifier",
            HostArray::f32(&[v, h], rng.normals(v * h, 0.75)),
        )
        .with("target", HostArray::i64(&[n], y));
    let def = wgpu_losses::losses::find("linear-cross-entropy").unwrap();
    check_case(def, engine(), &case, Tolerance::default());
}

/// The f64 oracle of `row_stats`: each row's log-sum-exp of its capped logits, whether the
/// first index of its largest is the target (0, 0 for an ignored row), and the gap between
/// its two largest logits (a tie within f32 rounding may legitimately pick either).
fn row_stats_oracle(
    (x, w, b): (&[f32], &[f32], &[f32]),
    y: &[i32],
    (n, h, v): (usize, usize, usize),
    softcap: Option<f64>,
) -> Vec<(f64, f64, f64)> {
    (0..n)
        .map(|i| {
            let logits: Vec<f64> = (0..v)
                .map(|k| {
                    let z = b[k] as f64
                        + (0..h)
                            .map(|d| x[i * h + d] as f64 * w[k * h + d] as f64)
                            .sum::<f64>();
                    softcap.map_or(z, |c| c * (z / c).tanh())
                })
                .collect();
            if y[i] < 0 {
                return (0.0, 0.0, f64::INFINITY);
            }
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let first = logits.iter().position(|&z| z == m).unwrap();
            let second = logits
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != first)
                .map(|(_, &z)| z)
                .fold(f64::NEG_INFINITY, f64::max);
            let lse = m + logits.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            (lse, (first == y[i] as usize) as u32 as f64, m - second)
        })
        .collect()
}

/// `row_stats(true)`: the per-row log-sum-exp and token accuracy on the GPU and the CPU
/// backend against an f64 oracle, over chunks, with and without softcap; exact ties (two
/// identical classifier rows) go to the lower index; the loss and gradients are unchanged.
#[test]
fn row_stats_report_lse_and_token_accuracy() {
    let mut rng = fresh_rng("row_stats_report_lse_and_token_accuracy");
    let e = engine();
    // 3 rows of 20,000 classes: each row split across workgroups (merged states).
    let shapes = [
        (150, 8, 37, None),
        (70, 5, 300, Some(3.0f32)),
        (1, 1, 1, None),
        (3, 2, 20000, None),
    ];
    for &(n, h, v, softcap) in &shapes {
        let (x, mut w, mut y) = problem("row_stats_report_lse_and_token_accuracy", n, h, v);
        let b = rng.normals(v, 0.5);
        // Classes 0 and 1 share a classifier row and bias: their logits tie exactly.
        if v > 2 {
            let (first, rest) = w.split_at_mut(h);
            rest[..h].copy_from_slice(first);
            y[0] = 1; // tied with class 0: correct only if 0 is not the maximum
            y[1] = 0;
        }
        let mut b_tied = b.clone();
        if v > 2 {
            b_tied[1] = b_tied[0];
        }
        let opts = LinearCrossEntropy::new()
            .softcap(softcap)
            .chunk_rows(64)
            .row_stats(true);
        let xt = e.upload(&x, &[n, h]).unwrap();
        let wt = e.upload(&w, &[v, h]).unwrap();
        let bt = e.upload(&b_tied, &[v]).unwrap();
        let yt = e.upload_i32(&y, &[n]).unwrap();
        let gpu = opts
            .run(e, &LinearCrossEntropyInputs::new(&xt, &wt, &yt).bias(&bt))
            .unwrap();
        let host = HostLinearInputs {
            hidden: &x,
            classifier: &w,
            bias: Some(&b_tied),
            shape: (n, h, v),
            target: &y,
            weight: None,
            upstream: Upstream::Ones,
        };
        let cpu = linear_cross_entropy(&opts, &host).unwrap();
        let want = row_stats_oracle((&x, &w, &b_tied), &y, (n, h, v), softcap.map(f64::from));
        for (backend, out) in [("gpu", &gpu), ("cpu", &cpu)] {
            let names: Vec<_> = out.rows.iter().map(|(name, _)| *name).collect();
            assert_eq!(names, ["lse", "correct"], "{backend}");
            let lse = &out.rows[0].1;
            let correct = &out.rows[1].1;
            let lse_want: Vec<f64> = want.iter().map(|s| s.0).collect();
            assert_close(
                &format!("{backend} lse"),
                lse,
                &lse_want,
                Tolerance::default(),
            );
            for (i, s) in want.iter().enumerate() {
                // A top-two gap within f32 rounding may pick either; the exact tie may not.
                if s.2 > 1e-4 || (v > 2 && i < 2) {
                    assert_eq!(
                        correct[i] as f64, s.1,
                        "{backend} correct[{i}] (gap {})",
                        s.2
                    );
                }
            }
            let plain = LinearCrossEntropy::new().softcap(softcap).chunk_rows(64);
            let base = linear_cross_entropy(&plain, &host).unwrap();
            assert_eq!(out.loss.len(), base.loss.len());
            assert!(out
                .grads
                .iter()
                .map(|g| g.0)
                .eq(base.grads.iter().map(|g| g.0)));
        }
        if v > 2 {
            // Row 0's target is class 1, tied with class 0: never correct; row 1's is 0.
            assert_eq!(gpu.rows[1].1[0], 0.0);
            let is_max = want[1].1 == 1.0;
            assert_eq!(gpu.rows[1].1[1] == 1.0, is_max);
        }
        // The statistics do not change the loss or the gradients.
        let plain = LinearCrossEntropy::new().softcap(softcap).chunk_rows(64);
        let base = plain
            .run(e, &LinearCrossEntropyInputs::new(&xt, &wt, &yt).bias(&bt))
            .unwrap();
        assert_eq!(base.loss, gpu.loss);
        assert_eq!(base.grads, gpu.grads);
        assert!(base.rows.is_empty());
    }
}

/// `eval linear-cross-entropy --set row_stats=true` writes `lse.npy` and `correct.npy`
/// beside the loss and gradients, equal to the library's `rows`, on gpu and cpu; the
/// reference refuses the option (it does not compute them).
#[test]
fn eval_writes_row_stats() {
    use std::process::Command;
    use wgpu_losses::cli::npy;
    let (n, h, v) = (9, 4, 13);
    let (x, w, y) = problem("eval_writes_row_stats", n, h, v);
    let dir = std::env::temp_dir().join(format!("wgpu-losses-row-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yf: Vec<f32> = y.iter().map(|&c| c as f32).collect();
    for (name, data, shape) in [
        ("hidden", &x, vec![n, h]),
        ("classifier", &w, vec![v, h]),
        ("target", &yf, vec![n]),
    ] {
        npy::write_f32(&dir.join(format!("{name}.npy")), &shape, data).unwrap();
    }
    let host = HostLinearInputs {
        hidden: &x,
        classifier: &w,
        bias: None,
        shape: (n, h, v),
        target: &y,
        weight: None,
        upstream: Upstream::Ones,
    };
    let want = linear_cross_entropy(&LinearCrossEntropy::new().row_stats(true), &host).unwrap();
    for backend in ["gpu", "cpu", "reference"] {
        let out = dir.join(backend);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgpu-losses"));
        cmd.args([
            "eval",
            "linear-cross-entropy",
            "--backend",
            backend,
            "--set",
            "row_stats=true",
        ]);
        for name in ["hidden", "classifier", "target"] {
            cmd.arg("--in").arg(format!(
                "{name}={}",
                dir.join(format!("{name}.npy")).display()
            ));
        }
        let status = cmd.arg("--out").arg(&out).output().unwrap();
        if backend == "reference" {
            assert!(!status.status.success());
            assert!(String::from_utf8_lossy(&status.stderr).contains("row_stats"));
            continue;
        }
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        for (i, name) in ["lse", "correct"].iter().enumerate() {
            let got = npy::read(&out.join(format!("{name}.npy"))).unwrap();
            assert_eq!(got.shape, vec![n]);
            assert_close(
                &format!("{backend} {name}"),
                &got.data.to_f32(),
                &to64(&want.rows[i].1),
                Tolerance::default(),
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The f64 gradients of `F.cross_entropy(F.linear(x, w), y)` (no bias, weight, smoothing or
/// cap) scaled per row by `scale`, with Cut Cross-Entropy's filter applied: each 16×16 block
/// of the logit gradient whose every |g/s| is below `eps` counts as 0. Gives (hidden,
/// classifier, bias) gradients, the blocks filtered, and the smallest distance of a block's
/// largest |g/s| from `eps` relative to it (f32 may decide otherwise closer than ~1e-6).
#[allow(clippy::type_complexity)]
fn filtered_oracle(
    (x, w): (&[f32], &[f32]),
    y: &[i32],
    (n, h, v): (usize, usize, usize),
    scale: &[f64],
    eps: f64,
) -> ([Vec<f64>; 3], usize, f64) {
    let mut g = vec![0.0f64; n * v];
    for r in 0..n {
        if y[r] < 0 {
            continue;
        }
        let logits: Vec<f64> = (0..v)
            .map(|c| {
                (0..h)
                    .map(|k| x[r * h + k] as f64 * w[c * h + k] as f64)
                    .sum()
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        for c in 0..v {
            let hit = (c as i32 == y[r]) as u32 as f64;
            g[r * v + c] = (logits[c] - m).exp() / z - hit;
        }
    }
    let (mut filtered, mut closest) = (0, f64::INFINITY);
    for r0 in (0..n).step_by(16) {
        for c0 in (0..v).step_by(16) {
            let largest = (r0..(r0 + 16).min(n))
                .flat_map(|r| (c0..(c0 + 16).min(v)).map(move |c| (r, c)))
                .map(|(r, c)| g[r * v + c].abs())
                .fold(0.0f64, f64::max);
            closest = closest.min((largest - eps).abs() / eps);
            if largest < eps {
                filtered += 1;
                for r in r0..(r0 + 16).min(n) {
                    g[r * v + c0..r * v + (c0 + 16).min(v)].fill(0.0);
                }
            }
        }
    }
    let (mut gh, mut gw, mut gb) = (vec![0.0; n * h], vec![0.0; v * h], vec![0.0; v]);
    for r in 0..n {
        for c in 0..v {
            let gs = g[r * v + c] * scale[r];
            gb[c] += gs;
            for k in 0..h {
                gh[r * h + k] += gs * w[c * h + k] as f64;
                gw[c * h + k] += gs * x[r * h + k] as f64;
            }
        }
    }
    ([gh, gw, gb], filtered, closest)
}

/// Gradient filtering (`grad_filter`, off by default): a threshold of 0 filters nothing
/// (the same bits as off), one above every value filters everything; at 1e-3 over peaked logits the GPU (which skips the filtered
/// blocks' products) and the CPU backend (which zeroes them) equal an f64 oracle that counts
/// those blocks as 0, for mean with a scalar and none with per-row upstream gradients; and
/// the gradients' deviation from the unfiltered ones stays within the skipped terms' bound.
#[test]
fn gradient_filtering_skips_only_the_blocks_below_its_threshold() {
    let mut rng = fresh_rng("gradient_filtering");
    let (n, h, v) = (150, 16, 700);
    let e = engine();
    for reduction in ["mean", "none"] {
        let (x, w, y) = loop {
            let (x, mut w, y) = problem("gradient_filtering", n, h, v);
            // Peaked rows: most probabilities far below the threshold.
            w.iter_mut().for_each(|c| *c *= 10.0);
            let scale = vec![1.0; n];
            if filtered_oracle((&x, &w), &y, (n, h, v), &scale, 1e-3).2 > 1e-4 {
                break (x, w, y);
            }
        };
        let kept = y.iter().filter(|&&t| t >= 0).count() as f64;
        let (upstream, scale): (Upstream<'_, Tensor>, Vec<f64>);
        let per_row = e.upload(&rng.normals(n, 1.0), &[n]).unwrap();
        let per_row_host = e.download(&per_row).unwrap();
        let opts = match reduction {
            "mean" => {
                upstream = Upstream::Scalar(1.5);
                scale = vec![1.5 / kept; n];
                LinearCrossEntropy::new()
            }
            _ => {
                upstream = Upstream::PerItem(&per_row);
                scale = per_row_host.iter().map(|&u| u as f64).collect();
                LinearCrossEntropy::new().reduction(Reduction::None)
            }
        };
        let (want, filtered, _) = filtered_oracle((&x, &w), &y, (n, h, v), &scale, 1e-3);
        let blocks = n.div_ceil(16) * v.div_ceil(16);
        eprintln!("{reduction}: {filtered} of {blocks} blocks below 1e-3");
        // A block holding a row's target or largest logit is kept: 20–30% go here.
        assert!(filtered > blocks / 10, "{filtered} of {blocks}");
        let hidden = e.upload(&x, &[n, h]).unwrap();
        let classifier = e.upload(&w, &[v, h]).unwrap();
        let bias = e.upload(&vec![0.0; v], &[v]).unwrap();
        let target = e.upload_i32(&y, &[n]).unwrap();
        let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target)
            .bias(&bias)
            .upstream(upstream);
        let host = HostLinearInputs {
            hidden: &x,
            classifier: &w,
            bias: Some(&vec![0.0; v]),
            shape: (n, h, v),
            target: &y,
            weight: None,
            upstream: match reduction {
                "mean" => Upstream::Scalar(1.5),
                _ => Upstream::PerItem(&per_row_host),
            },
        };
        let off = opts.run(e, &inputs).unwrap();

        let zero = opts.clone().grad_filter(Some(0.0)).run(e, &inputs).unwrap();
        assert_eq!(off.grads, zero.grads, "a threshold of 0 filters nothing");
        // Above every |g/s| (at most 1): every block is skipped.
        let all = opts.clone().grad_filter(Some(2.0)).run(e, &inputs).unwrap();
        assert!(all.grads.iter().all(|(_, g)| g.iter().all(|&v| v == 0.0)));
        let filter = opts.clone().grad_filter(Some(1e-3));
        let gpu = filter.run(e, &inputs).unwrap();
        let cpu = linear_cross_entropy(&filter, &host).unwrap();
        assert_eq!(gpu.loss, off.loss, "the loss is not filtered");
        for (backend, got) in [("cpu", &cpu), ("gpu", &gpu)] {
            for ((name, g), want) in got.grads.iter().zip(&want) {
                let what = format!("{backend} {reduction} filtered grad {name}");
                assert_close(&what, g, want, Tolerance::default());
            }
        }
        // What filtering costs: hidden's deviation from the unfiltered gradient is within
        // Σ over the skipped terms |g|·|w| < 1e-3·|s|·Σ_c |w_c|.
        let column: f64 = (0..v).map(|c| w[c * h].abs() as f64).sum();
        for (r, s) in scale.iter().enumerate() {
            let bound = 1e-3 * s.abs() * column;
            let d = (gpu.grads[0].1[r * h] - off.grads[0].1[r * h]).abs() as f64;
            assert!(d <= bound + 1e-6, "row {r}: {d} > {bound}");
        }
    }
}
