//! Vocabulary shards of the fused linear cross-entropy (`ShardStatistics`, then
//! `ShardGradients` over every shard's records): K = 1, 2, 3 and 7 shards of unequal sizes,
//! on the GPU and the CPU backend, against the f64 reference of the unsharded call and
//! against the same backend's unsharded call; errors; the plan's budget; the same bits on
//! reruns. Tolerance as everywhere (`Tolerance::default`).

mod common;

use common::{assert_close, engine, fresh_rng, own_engine};
use wgpu_losses::cpu::{
    linear_cross_entropy, linear_shard_gradients, linear_shard_statistics, HostLinearInputs,
};
use wgpu_losses::reference::{self, RefLinearInputs};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::{
    DType, Error, GpuLoss, LinearCrossEntropy, LinearCrossEntropyInputs, LossValues, Reduction,
    ShardGradientInputs, Tolerance, Upstream, VocabShard, SHARD_RECORD,
};

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// One random problem with every option drawn.
struct Problem {
    n: usize,
    h: usize,
    v: usize,
    hidden: Vec<f32>,
    classifier: Vec<f32>,
    bias: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
    target: Vec<i32>,
    upstream: Vec<f32>,
    opts: LinearCrossEntropy,
}

impl Problem {
    fn random(rng: &mut Rng, v: usize) -> Self {
        let (n, h) = (1 + rng.below(150), 1 + rng.below(20));
        let reduction = [Reduction::None, Reduction::Sum, Reduction::Mean][rng.below(3)];
        let opts = LinearCrossEntropy::new()
            .reduction(reduction)
            .label_smoothing(if rng.chance(0.5) { 0.1 } else { 0.0 })
            .z_loss(if rng.chance(0.5) { 1e-3 } else { 0.0 })
            .softcap(rng.chance(0.5).then_some(5.0))
            .row_stats(true);
        let opts = match rng.chance(0.3) {
            true => opts.chunk_rows(64),
            false => opts,
        };
        let target = (0..n)
            .map(|_| match rng.chance(0.1) {
                true => -100,
                false => rng.below(v) as i32,
            })
            .collect();
        let upstream = match reduction {
            Reduction::None if rng.chance(0.5) => rng.normals(n, 1.0),
            _ => vec![1.7],
        };
        Self {
            n,
            h,
            v,
            hidden: rng.normals(n * h, 1.0),
            classifier: rng.normals(v * h, 1.5 / (h as f64).sqrt()),
            bias: rng.chance(0.5).then(|| rng.normals(v, 0.5)),
            weight: rng
                .chance(0.5)
                .then(|| (0..v).map(|_| rng.range(0.2, 2.0) as f32).collect()),
            target,
            upstream,
            opts,
        }
    }

    fn host_upstream(&self) -> Upstream<'_, [f32]> {
        match self.upstream.len() {
            1 => Upstream::Scalar(self.upstream[0]),
            _ => Upstream::PerItem(&self.upstream),
        }
    }

    /// The host inputs of the classes `range` (all of them: the unsharded call).
    fn host(&self, range: std::ops::Range<usize>) -> HostLinearInputs<'_> {
        let h = self.h;
        HostLinearInputs {
            hidden: &self.hidden,
            classifier: &self.classifier[range.start * h..range.end * h],
            bias: self.bias.as_ref().map(|b| &b[range.clone()]),
            shape: (self.n, h, range.len()),
            target: &self.target,
            weight: self.weight.as_ref().map(|w| &w[range.clone()]),
            upstream: self.host_upstream(),
        }
    }
}

/// K shards of unequal sizes tiling [0, v): distinct random cut points.
fn shards(rng: &mut Rng, v: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let mut cuts = vec![0, v];
    while cuts.len() < k + 1 {
        let c = 1 + rng.below(v - 1);
        if !cuts.contains(&c) {
            cuts.push(c);
        }
    }
    cuts.sort();
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// What the shards give together: the loss (every shard's, which must agree bit for bit),
/// hidden's gradient summed over the shards in order, classifier's and bias's concatenated,
/// and the row statistics.
fn assembled(per_shard: Vec<LossValues>) -> LossValues {
    for s in &per_shard[1..] {
        assert_eq!(
            s.loss, per_shard[0].loss,
            "every shard computes the same loss"
        );
        assert_eq!(s.rows, per_shard[0].rows, "and the same row statistics");
    }
    let mut grads: Vec<(&'static str, Vec<f32>)> = Vec::new();
    for s in &per_shard {
        for (name, g) in &s.grads {
            match grads.iter_mut().find(|(n, _)| n == name) {
                Some((_, acc)) if *name == "hidden" => {
                    acc.iter_mut().zip(g).for_each(|(a, b)| *a += b)
                }
                Some((_, acc)) => acc.extend_from_slice(g),
                None => grads.push((name, g.clone())),
            }
        }
    }
    LossValues {
        grads,
        ..per_shard[0].clone()
    }
}

/// The sharded call on the CPU backend.
fn cpu_sharded(p: &Problem, ranges: &[std::ops::Range<usize>]) -> Vec<LossValues> {
    let stats: Vec<f32> = ranges
        .iter()
        .flat_map(|r| {
            let step = p.opts.shard_statistics(VocabShard::new(r.start, p.v));
            linear_shard_statistics(&step, &p.host(r.clone())).unwrap()
        })
        .collect();
    ranges
        .iter()
        .map(|r| {
            let step = p.opts.shard_gradients(VocabShard::new(r.start, p.v));
            linear_shard_gradients(&step, &p.host(r.clone()), &stats).unwrap()
        })
        .collect()
}

/// The sharded call on the GPU: each shard's statistics on the device, stacked as an
/// all-gather would, then each shard's gradients.
fn gpu_sharded(
    p: &Problem,
    ranges: &[std::ops::Range<usize>],
) -> wgpu_losses::Result<Vec<LossValues>> {
    gpu_sharded_as(p, ranges, DType::F32)
}

/// As [`gpu_sharded`], hidden states, classifier and bias uploaded as `dtype`.
fn gpu_sharded_as(
    p: &Problem,
    ranges: &[std::ops::Range<usize>],
    dtype: DType,
) -> wgpu_losses::Result<Vec<LossValues>> {
    let e = engine();
    let hidden = e.upload_as(&p.hidden, &[p.n, p.h], dtype)?;
    let target = e.upload_i32(&p.target, &[p.n])?;
    let upstream = e.upload(&p.upstream, &[p.upstream.len()])?;
    let mut tensors = Vec::new();
    for r in ranges {
        let x = p.host(r.clone());
        let classifier = e.upload_as(x.classifier, &[r.len(), p.h], dtype)?;
        let bias = x
            .bias
            .map(|b| e.upload_as(b, &[r.len()], dtype))
            .transpose()?;
        let weight = x.weight.map(|w| e.upload(w, &[r.len()])).transpose()?;
        tensors.push((classifier, bias, weight));
    }
    let inputs = |i: usize| {
        let (classifier, bias, weight) = &tensors[i];
        LinearCrossEntropyInputs {
            hidden: &hidden,
            classifier,
            bias: bias.as_ref(),
            target: &target,
            weight: weight.as_ref(),
            upstream: match p.upstream.len() {
                1 => Upstream::Scalar(p.upstream[0]),
                _ => Upstream::PerItem(&upstream),
            },
        }
    };
    let mut stacked = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let step = p.opts.shard_statistics(VocabShard::new(r.start, p.v));
        stacked.extend(step.run(e, &inputs(i))?.loss);
    }
    let stats = e.upload(&stacked, &[ranges.len(), p.n, SHARD_RECORD])?;
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let step = p.opts.shard_gradients(VocabShard::new(r.start, p.v));
            step.run(
                e,
                &ShardGradientInputs {
                    linear: inputs(i),
                    stats: &stats,
                },
            )
        })
        .collect()
}

/// The f64 reference of the unsharded call.
fn reference(p: &Problem) -> wgpu_losses::reference::RefOutput {
    let wide = |v: &[f32]| to64(v);
    let (hidden, classifier) = (wide(&p.hidden), wide(&p.classifier));
    let bias = p.bias.as_deref().map(wide);
    let weight = p.weight.as_deref().map(wide);
    let target: Vec<i64> = p.target.iter().map(|&y| y as i64).collect();
    reference::linear_cross_entropy(
        &p.opts.clone().row_stats(false),
        &RefLinearInputs {
            hidden: &hidden,
            classifier: &classifier,
            bias: bias.as_deref(),
            shape: (p.n, p.h, p.v),
            target: &target,
            weight: weight.as_deref(),
            upstream: &wide(&p.upstream),
        },
    )
    .unwrap()
}

/// Shards against the reference and against the same backend's unsharded call.
fn check_sharded(
    backend: &str,
    sharded: impl Fn(&Problem, &[std::ops::Range<usize>]) -> Vec<LossValues>,
) {
    let mut rng = fresh_rng(&format!("sharded_results_equal_unsharded_ones ({backend})"));
    for k in [1, 2, 3, 7] {
        for _ in 0..3 {
            let v = k + rng.below(300);
            let p = Problem::random(&mut rng, v);
            let ranges = shards(&mut rng, v, k);
            let what = format!("{backend}, {k} shards {ranges:?}, {:?}", p.opts);
            let LossValues { loss, grads, rows } = assembled(sharded(&p, &ranges));
            let want = reference(&p);
            let tol = Tolerance::default();
            let grad_tol = Tolerance {
                floor: tol.floor.max(want.grad_terms),
                ..tol
            };
            assert_close(&format!("{what}: loss"), &loss, &want.loss, tol);
            assert_eq!(grads.len(), want.grads.len(), "{what}");
            for ((name, g), (wname, w)) in grads.iter().zip(&want.grads) {
                assert_eq!(name, wname);
                assert_close(&format!("{what}: grad {name}"), g, w, grad_tol);
            }
            // The row statistics as the unsharded call reports them.
            let whole = match backend {
                "gpu" => unsharded_gpu(&p),
                _ => linear_cross_entropy(&p.opts, &p.host(0..p.v)).unwrap(),
            };
            let (lse, correct) = (&rows[0].1, &rows[1].1);
            assert_close(&format!("{what}: lse"), lse, &to64(&whole.rows[0].1), tol);
            assert_eq!(correct, &whole.rows[1].1, "{what}: correct");
            assert_close(
                &format!("{what}: loss vs unsharded"),
                &loss,
                &to64(&whole.loss),
                tol,
            );
        }
    }
}

fn unsharded_gpu(p: &Problem) -> LossValues {
    let e = engine();
    let hidden = e.upload(&p.hidden, &[p.n, p.h]).unwrap();
    let classifier = e.upload(&p.classifier, &[p.v, p.h]).unwrap();
    let target = e.upload_i32(&p.target, &[p.n]).unwrap();
    let bias = p.bias.as_ref().map(|b| e.upload(b, &[p.v]).unwrap());
    let weight = p.weight.as_ref().map(|w| e.upload(w, &[p.v]).unwrap());
    let upstream = e.upload(&p.upstream, &[p.upstream.len()]).unwrap();
    let inputs = LinearCrossEntropyInputs {
        hidden: &hidden,
        classifier: &classifier,
        bias: bias.as_ref(),
        target: &target,
        weight: weight.as_ref(),
        upstream: match p.upstream.len() {
            1 => Upstream::Scalar(p.upstream[0]),
            _ => Upstream::PerItem(&upstream),
        },
    };
    p.opts.run(e, &inputs).unwrap()
}

#[test]
fn sharded_results_equal_unsharded_ones_on_the_gpu() {
    check_sharded("gpu", |p, r| gpu_sharded(p, r).unwrap());
}

#[test]
fn sharded_results_equal_unsharded_ones_on_the_cpu() {
    check_sharded("cpu", cpu_sharded);
}

#[test]
fn classes_no_shard_holds_are_errors_naming_the_row() {
    let mut rng = fresh_rng("classes_no_shard_holds");
    let mut p = Problem::random(&mut rng, 40);
    // Class 40 lies outside the vocabulary.
    p.target[0] = 40;
    let err = gpu_sharded(&p, &[0..10, 10..40]).unwrap_err();
    assert!(
        matches!(&err, Error::Value { input: "target", row: 0, value, .. } if value == "40"),
        "{err}"
    );
    // The second shard's statistics alone: row 0's class 3 is held by none.
    p.target[0] = 3;
    let shard = VocabShard::new(10, 40);
    let stats = linear_shard_statistics(&p.opts.shard_statistics(shard), &p.host(10..40)).unwrap();
    let step = p.opts.shard_gradients(shard);
    let err = linear_shard_gradients(&step, &p.host(10..40), &stats).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Value {
                input: "target",
                row: 0,
                ..
            }
        ),
        "{err}"
    );
    // Records of another shape, and a shard past the vocabulary's end.
    let err = linear_shard_gradients(&step, &p.host(10..40), &stats[1..]).unwrap_err();
    assert!(matches!(err, Error::Shape { input: "stats", .. }), "{err}");
    let past = p.opts.shard_statistics(VocabShard::new(20, 40));
    let err = linear_shard_statistics(&past, &p.host(10..40)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                input: "classifier",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_planned_shard_step_allocates_nothing_after_the_first_and_repeats_its_bits() {
    let mut rng = fresh_rng("planned_shard_step");
    let p = Problem::random(&mut rng, 90);
    let e = own_engine();
    let hidden = e.upload(&p.hidden, &[p.n, p.h]).unwrap();
    let target = e.upload_i32(&p.target, &[p.n]).unwrap();
    let opts = LinearCrossEntropy::new().label_smoothing(0.1);
    let ranges = [0..30, 30..90];
    let classifiers: Vec<_> = ranges
        .iter()
        .map(|r| {
            let rows = &p.classifier[r.start * p.h..r.end * p.h];
            e.upload(rows, &[r.len(), p.h]).unwrap()
        })
        .collect();
    let linear = |i: usize| LinearCrossEntropyInputs::new(&hidden, &classifiers[i], &target);
    let mut stacked = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let step = opts.shard_statistics(VocabShard::new(r.start, 90));
        stacked.extend(step.run(&e, &linear(i)).unwrap().loss);
    }
    let stats = e.upload(&stacked, &[2, p.n, SHARD_RECORD]).unwrap();
    let inputs = ShardGradientInputs {
        linear: linear(1),
        stats: &stats,
    };
    let mut plan = opts.shard_gradients(VocabShard::new(30, 90)).plan(&e);
    let mut step = || {
        let mut encoder = e.encoder();
        let out = plan.record(&mut encoder, &inputs).unwrap();
        e.submit(encoder).unwrap();
        out
    };
    let first = e.read_output(&step()).unwrap();
    let before = e.counters();
    let out = step();
    let c = e.counters().since(&before);
    assert_eq!(c.buffers_created, 0, "{c:?}");
    assert_eq!(c.bind_groups_created, 0, "{c:?}");
    let second = e.read_output(&out).unwrap();
    assert_eq!(first.loss, second.loss, "the same bits on a rerun");
    assert_eq!(first.grads, second.grads, "the same bits on a rerun");
    assert!(first.loss[0].is_finite() && first.loss[0] > 0.0);
}

#[test]
fn bf16_shards_match_the_reference_within_the_rounding_rule() {
    let mut rng = fresh_rng("bf16_shards");
    let mut p = Problem::random(&mut rng, 120);
    // The inputs as bf16 holds them: the reference sees the same values.
    for v in p
        .hidden
        .iter_mut()
        .chain(&mut p.classifier)
        .chain(p.bias.iter_mut().flatten())
    {
        *v = DType::BF16.round(*v);
    }
    let ranges = [0..17, 17..64, 64..120];
    let want = reference(&p);
    let tol = Tolerance::default();
    let grad_tol = Tolerance {
        floor: tol.floor.max(want.grad_terms),
        ..tol
    };
    // Gradients written in bf16: the classifier's and bias's rows are each one shard's,
    // held to ½ ulp of bf16 more. (hidden's shares, rounded each at its own size before
    // they are summed, are checked in f32 below.)
    let LossValues { loss, grads, .. } =
        assembled(gpu_sharded_as(&p, &ranges, DType::BF16).unwrap());
    assert_close("bf16 shards: loss", &loss, &want.loss, tol);
    for ((name, g), (_, w)) in grads.iter().zip(&want.grads).skip(1) {
        let what = format!("bf16 shards: grad {name}");
        assert_close(&what, g, w, grad_tol.written_as(DType::BF16));
    }
    // f32 gradients of bf16 inputs, as a trainer all-reduces hidden's.
    p.opts = p.opts.clone().grad_dtype(Some(DType::F32));
    let grads = assembled(gpu_sharded_as(&p, &ranges, DType::BF16).unwrap()).grads;
    for ((name, g), (_, w)) in grads.iter().zip(&want.grads) {
        assert_close(&format!("bf16 shards, f32 grad {name}"), g, w, grad_tol);
    }
}

/// Gradient filtering reaches the shards' gradients: a threshold of 0 gives the unfiltered
/// bits, one above every value zeroes every gradient (the loss unchanged), on both backends.
#[test]
fn shards_filter_their_gradients_as_the_unsharded_call() {
    let mut rng = fresh_rng("shards_filter");
    let mut p = Problem::random(&mut rng, 200);
    p.opts = p.opts.clone().label_smoothing(0.0);
    let ranges = shards(&mut rng, 200, 3);
    type Sharded = fn(&Problem, &[std::ops::Range<usize>]) -> Vec<LossValues>;
    let backends: [(&str, Sharded); 2] = [
        ("gpu", |p, r| gpu_sharded(p, r).unwrap()),
        ("cpu", cpu_sharded),
    ];
    for (backend, run) in backends {
        let plain = run(&p, &ranges);
        let with = |eps| {
            let q = Problem {
                opts: p.opts.clone().grad_filter(Some(eps)),
                hidden: p.hidden.clone(),
                classifier: p.classifier.clone(),
                bias: p.bias.clone(),
                weight: p.weight.clone(),
                target: p.target.clone(),
                upstream: p.upstream.clone(),
                ..p
            };
            run(&q, &ranges)
        };
        assert_eq!(with(0.0), plain, "{backend}: a threshold of 0");
        for (all, plain) in with(1e6).iter().zip(&plain) {
            assert_eq!(all.loss, plain.loss, "{backend}");
            assert!(all.grads.iter().all(|(_, g)| g.iter().all(|&v| v == 0.0)));
        }
    }
}
