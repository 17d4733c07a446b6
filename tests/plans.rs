//! Plans, counted: a second call with inputs of the same shapes in the same buffers creates
//! no buffer and no bind group, records within each loss's budget of dispatches, writes its
//! parameters at most once, and gives the same bits as a one-off call. Tensor views into one
//! pooled buffer work as inputs and outputs.

#[macro_use]
mod common;

use common::{engine, fresh_rng, own_engine};
use wgpu_losses::registry::{Case, Evaluated, GpuSession, HostData, LossDef};
use wgpu_losses::{
    Counters, CrossEntropy, CrossEntropyInputs, DType, ElementwiseLoss, Error, GpuLoss, Pointwise,
    Target, Tensor, Upstream,
};

/// Case `a` with new values in the same shapes: the first differentiable input halved and a
/// scalar `grad_output` scaled (so the parameter block changes too).
fn next_step(def: &dyn LossDef, a: &Case) -> Case {
    let mut b = a.clone();
    let first = def
        .inputs()
        .iter()
        .find(|s| s.differentiable)
        .expect("a differentiable input");
    if let Some(HostData::F32(v)) = b.inputs.get_mut(first.name).map(|x| &mut x.data) {
        v.iter_mut().for_each(|x| *x *= 0.5);
    }
    if let Some(g) = b.inputs.get_mut("grad_output") {
        if let (HostData::F32(v), true) = (&mut g.data, g.shape.is_empty()) {
            v[0] *= 1.5;
        }
    }
    b
}

/// The dispatches of one planned call at the small shapes of `random_case`, and the bytes
/// it may zero-fill (accumulators and status flags), per loss.
fn budget(def: &dyn LossDef, case: &Case) -> (u64, u64) {
    let bytes = |name: &str| {
        case.inputs
            .get(name)
            .map_or(0, |a| a.shape.iter().product::<usize>() as u64 * 4)
    };
    let rows = |name: &str| case.inputs.get(name).map_or(0, |a| a.shape[0] as u64);
    let cols = |name: &str| case.inputs.get(name).map_or(0, |a| a.shape[1]);
    let status = 16;
    match def.name() {
        // denominator, rows, sum (random cases have under 8192 classes: rows are not split).
        "cross-entropy" | "softmax-focal" => (3, status),
        // elements, sum.
        "mse" | "l1" | "huber" | "smooth-l1" | "kl-div" | "hinge" | "margin-ranking"
        | "bce-with-logits" | "sigmoid-focal" | "quantile" | "power" | "soft-margin"
        | "hinge-embedding" | "poisson-nll" | "bce" => (2, status),
        "contrastive" | "triplet" | "cosine-embedding" | "triplet-distance" => (2, 0),
        // rows, the mean's denominator, the sum, the gradient.
        "nll" => (4, status),
        // rows (loss and gradient), sum.
        // the frame rows' log-probabilities, the recursions, the gradient, the sum.
        "ctc" => (4, status),
        // elements, sum; a variance per item adds the sums of its gradient.
        "gaussian-nll" => {
            let per_item = case.inputs["var"].shape != case.inputs["input"].shape;
            (2 + u64::from(per_item), status)
        }
        "multi-margin"
        | "multilabel-soft-margin"
        | "multilabel-margin"
        | "distill-kl"
        | "coral" => (2, status),
        // A mean over a count of the device's labels (JSD's kept rows, CORN's terms) adds
        // the counts and their sum.
        "jsd" | "corn" => (4, status),
        // the lists, the count's sum, the gradient, the loss's sum.
        "ranknet" | "pairwise-hinge" | "listnet" | "listmle" | "lambda-ndcg" => (4, status),
        // the partial sums per tile, the ratios, the gradient, the loss's sum.
        "dice" | "tversky" => (4, status),
        // normalize, forward, merge of the key splits, two sums, backward, finish; clip
        // goes both ways. The backward pass accumulates one gradient per key split (at most
        // one split per 32-row key tile), zero-filled only for rows of more than 256
        // dimensions: shorter ones stay in registers and are written once.
        "nt-xent" | "supcon" => {
            let key_tiles = rows("z").max(rows("embeddings")).div_ceil(32);
            let deep = cols("z").max(cols("embeddings")) > 256;
            (
                7,
                deep as u64 * (bytes("z") + bytes("embeddings")) * key_tiles,
            )
        }
        "clip" => {
            let deep = cols("a") > 256;
            (
                9,
                deep as u64 * (bytes("a") + bytes("b")) * rows("a").div_ceil(32),
            )
        }
        // normalize (cosine), distances, mining, two sums, backward, finish (cosine).
        "triplet-mined" => {
            // Plus the status flag; tiny buffers take at least 16 bytes (N = 1 zero-fills 32).
            let n = case.inputs["labels"].shape[0] as u64;
            (7, (bytes("embeddings") + 4 * n * n).max(16) + status)
        }
        // The targets' check and denominator; per chunk of rows the logits' product, the
        // row kernel, and the products for the hidden states, the classifier and the bias;
        // the sum. Each chunk's row kernel zero-fills its own status flag.
        "linear-cross-entropy" => {
            let n = rows("hidden");
            let chunk = case
                .options
                .get("chunk_rows")
                .map_or(n, |c| c.parse().unwrap());
            let chunks = n.div_ceil(chunk);
            (2 + 5 * chunks, status * (1 + chunks))
        }
        other => panic!("no budget written for {other}"),
    }
}

fn same_bits(what: &str, a: &Evaluated<f32>, b: &Evaluated<f32>) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.loss), bits(&b.loss), "{what}: loss");
    for ((name, ga, _), (_, gb, _)) in a.grads.iter().zip(&b.grads) {
        assert_eq!(bits(ga), bits(gb), "{what}: grad {name}");
    }
}

#[test]
fn every_loss_reuses_its_plan_within_its_budget() {
    let e = &own_engine();
    let mut rng = fresh_rng("every_loss_reuses_its_plan");
    for def in wgpu_losses::losses::all() {
        let mut checked = 0;
        for _ in 0..3 {
            let first = def.random_case(&mut rng);
            let second = next_step(*def, &first);
            let mut session = GpuSession::new(e);
            let Ok(_) = def.gpu_in(&mut session, &first) else {
                continue; // a case the loss rejects (checked by the suites that draw it)
            };
            let step = def.gpu_in(&mut session, &second).unwrap();
            let c = session.last_recorded();
            let what = format!("{} {:?}", def.name(), second.options);
            let (dispatches, zero_filled) = budget(*def, &second);
            assert_eq!(
                (c.buffers_created, c.bind_groups_created, c.compute_passes),
                (0, 0, 1),
                "{what}: {c:?}"
            );
            assert!(c.uniform_writes <= 1, "{what}: {c:?}");
            assert!(
                c.dispatches <= dispatches,
                "{what}: {c:?}, budget {dispatches}"
            );
            assert!(c.bytes_zero_filled <= zero_filled.max(16), "{what}: {c:?}");
            same_bits(&what, &step, &def.gpu(e, &second).unwrap());
            checked += 1;
        }
        assert!(checked > 0, "{}: no case ran", def.name());
    }
}

fn ce_inputs(e: &wgpu_losses::Engine, n: usize, c: usize) -> (Tensor, Tensor) {
    let logits: Vec<f32> = (0..n * c)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0)
        .collect();
    let target: Vec<i32> = (0..n).map(|i| (i * 7 % c) as i32).collect();
    (
        e.upload(&logits, &[n, c]).unwrap(),
        e.upload_i32(&target, &[n]).unwrap(),
    )
}

#[test]
fn a_planned_cross_entropy_step_records_three_dispatches_and_creates_nothing() {
    let e = &own_engine();
    let (logits, target) = ce_inputs(e, 32, 10);
    let loss = CrossEntropy::new();
    let mut plan = loss.plan(e);
    let step = |plan: &mut wgpu_losses::Plan<CrossEntropy>, upstream| -> (Counters, Vec<f32>) {
        let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target)).upstream(upstream);
        let mut encoder = e.encoder();
        let before = e.counters();
        let out = plan.record(&mut encoder, &inputs).unwrap();
        let c = e.counters().since(&before);
        e.submit(encoder).unwrap();
        (
            c,
            e.read_output(&out)
                .unwrap()
                .grad("logits")
                .unwrap()
                .to_vec(),
        )
    };
    let (first, g1) = step(&mut plan, Upstream::Ones);
    assert!(
        first.buffers_created > 0 && first.bind_groups_created > 0,
        "{first:?}"
    );
    let (second, g2) = step(&mut plan, Upstream::Ones);
    assert_eq!(g1, g2);
    assert_eq!(
        (
            second.dispatches,
            second.compute_passes,
            second.buffers_created,
            second.bind_groups_created,
            second.uniform_writes
        ),
        (3, 1, 0, 0, 0),
        "{second:?}"
    );
    // A new upstream scalar is one parameter write, nothing else.
    let (third, g3) = step(&mut plan, Upstream::Scalar(2.0));
    assert_eq!(
        (
            third.buffers_created,
            third.bind_groups_created,
            third.uniform_writes
        ),
        (0, 0, 1),
        "{third:?}"
    );
    for (a, b) in g3.iter().zip(&g1) {
        assert_eq!(*a, 2.0 * b);
    }
}

#[test]
fn a_plan_clears_its_status_between_steps() {
    let e = engine();
    let (logits, _) = ce_inputs(e, 4, 3);
    let bad = e.upload_i32(&[0, 7, 1, 2], &[4]).unwrap();
    let good = e.upload_i32(&[0, 1, 1, 2], &[4]).unwrap();
    let mut plan = CrossEntropy::new().plan(e);
    let err = plan
        .run(&CrossEntropyInputs::new(&logits, Target::Classes(&bad)))
        .unwrap_err();
    assert!(matches!(err, Error::Value { row: 1, .. }), "{err}");
    plan.run(&CrossEntropyInputs::new(&logits, Target::Classes(&good)))
        .unwrap();
}

/// A buffer sub-allocated as a framework's pool would: each tensor at an aligned offset.
struct Pool {
    buffer: wgpu_losses::wgpu::Buffer,
    align: u64,
    next: u64,
}

impl Pool {
    fn new(e: &wgpu_losses::Engine, bytes: u64) -> Self {
        let buffer = e
            .device()
            .create_buffer(&wgpu_losses::wgpu::BufferDescriptor {
                label: Some("pool"),
                size: bytes,
                usage: wgpu_losses::wgpu::BufferUsages::STORAGE
                    | wgpu_losses::wgpu::BufferUsages::COPY_DST
                    | wgpu_losses::wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
        Self {
            buffer,
            align: e.limits().min_storage_buffer_offset_alignment as u64,
            next: 0,
        }
    }

    fn take(&mut self, e: &wgpu_losses::Engine, shape: &[usize], dtype: DType) -> Tensor {
        // Leave a gap so that views start past the buffer's beginning.
        self.next += self.align;
        let t = Tensor::view(e, self.buffer.clone(), self.next, shape, dtype).unwrap();
        self.next = (self.next + t.bytes()).next_multiple_of(self.align);
        t
    }

    fn put_f32(&mut self, e: &wgpu_losses::Engine, data: &[f32], shape: &[usize]) -> Tensor {
        let t = self.take(e, shape, DType::F32);
        e.queue()
            .write_buffer(&self.buffer, t.offset(), bytemuck::cast_slice(data));
        t
    }
}

#[test]
fn views_of_one_pooled_buffer_are_inputs_and_outputs() {
    let e = engine();
    let (n, c) = (5, 7);
    let logits: Vec<f32> = (0..n * c).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let target: Vec<i32> = vec![0, 6, 3, -100, 2];
    let weight: Vec<f32> = (0..c).map(|k| 0.5 + k as f32 / 7.0).collect();
    let mut pool = Pool::new(e, 1 << 16);
    let lv = pool.put_f32(e, &logits, &[n, c]);
    let tv = pool.take(e, &[n], DType::I32);
    e.queue()
        .write_buffer(pool.buffer(), tv.offset(), bytemuck::cast_slice(&target));
    let wv = pool.put_f32(e, &weight, &[c]);
    let gv = pool.take(e, &[n, c], DType::F32);
    let loss = CrossEntropy::new().label_smoothing(0.1);
    let on_views = loss
        .run(
            e,
            &CrossEntropyInputs::new(&lv, Target::Classes(&tv))
                .weight(&wv)
                .grad_out(&gv),
        )
        .unwrap();
    let (l, t, w) = (
        e.upload(&logits, &[n, c]).unwrap(),
        e.upload_i32(&target, &[n]).unwrap(),
        e.upload(&weight, &[c]).unwrap(),
    );
    let whole = loss
        .run(
            e,
            &CrossEntropyInputs::new(&l, Target::Classes(&t)).weight(&w),
        )
        .unwrap();
    assert_eq!(on_views.loss, whole.loss);
    assert_eq!(
        on_views.grad("logits").unwrap(),
        whole.grad("logits").unwrap()
    );
    assert_eq!(e.download(&gv).unwrap(), whole.grad("logits").unwrap());
    // The inputs are untouched.
    assert_eq!(e.download(&lv).unwrap(), logits);

    // In place on a view: the logits' bytes become the gradient, the neighbours stay.
    CrossEntropy::new()
        .label_smoothing(0.1)
        .in_place(true)
        .run(
            e,
            &CrossEntropyInputs::new(&lv, Target::Classes(&tv)).weight(&wv),
        )
        .unwrap();
    assert_eq!(e.download(&lv).unwrap(), whole.grad("logits").unwrap());
    assert_eq!(e.download(&wv).unwrap(), weight);

    // An elementwise loss with input, target and gradient in the pool.
    let x = pool.put_f32(e, &logits, &[n, c]);
    let y = pool.put_f32(e, &weight.repeat(n), &[n, c]);
    let g = pool.take(e, &[n, c], DType::F32);
    let mse = ElementwiseLoss::new(Pointwise::Mse);
    let mut inputs = wgpu_losses::ElementwiseInputs::new(&x, &y);
    inputs.grad_out = [Some(&g), None];
    let on_views = mse.run(e, &inputs).unwrap();
    let (xa, ya) = (
        e.upload(&logits, &[n, c]).unwrap(),
        e.upload(&weight.repeat(n), &[n, c]).unwrap(),
    );
    let whole = mse
        .run(e, &wgpu_losses::ElementwiseInputs::new(&xa, &ya))
        .unwrap();
    assert_eq!(on_views.loss, whole.loss);
    assert_eq!(e.download(&g).unwrap(), whole.grad("input").unwrap());
}

#[test]
fn bad_views_are_errors() {
    let e = engine();
    let mut pool = Pool::new(e, 1 << 14);
    let align = e.limits().min_storage_buffer_offset_alignment as u64;
    if align > 4 {
        let err = Tensor::view(e, pool.buffer.clone(), align / 2, &[4], DType::F32).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Option {
                    option: "offset",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = Tensor::view(e, pool.buffer.clone(), 1 << 13, &[4096], DType::F32).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");

    // A gradient written over the logits it reads.
    let logits = pool.take(e, &[2, 4], DType::F32);
    let target = pool.take(e, &[2], DType::I32);
    let overlapping =
        Tensor::view(e, pool.buffer.clone(), logits.offset(), &[2, 4], DType::F32).unwrap();
    let err = CrossEntropy::new()
        .run(
            e,
            &CrossEntropyInputs::new(&logits, Target::Classes(&target)).grad_out(&overlapping),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Option {
                option: "grad_out",
                ..
            }
        ),
        "{err}"
    );
}

impl Pool {
    fn buffer(&self) -> &wgpu_losses::wgpu::Buffer {
        &self.buffer
    }
}

/// A training loop whose batch shape changes (sequence lengths vary): the plan reallocates
/// what no longer fits, and every step matches a one-off call bit for bit.
#[test]
fn a_plan_follows_changing_shapes() {
    let e = engine();
    let mut rng = fresh_rng("a_plan_follows_changing_shapes");
    let loss = CrossEntropy::new().label_smoothing(0.05);
    let mut plan = loss.plan(e);
    for &(n, c) in &[
        (64, 100),
        (17, 100),
        (300, 37),
        (64, 100),
        (1, 9000),
        (64, 100),
    ] {
        let x = rng.normals(n * c, 2.0);
        let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
        let logits = e.upload(&x, &[n, c]).unwrap();
        let target = e.upload_i32(&y, &[n]).unwrap();
        let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
        let planned = plan.run(&inputs).unwrap();
        let once = loss.run(e, &inputs).unwrap();
        assert_eq!(planned, once, "{n}x{c}");
    }
}

/// Views whose rows are split across bindings (a 64 KiB cap): every window starts at the
/// view's offset plus whole aligned blocks of rows.
#[test]
fn views_split_across_bindings() {
    let small = wgpu_losses::Engine::with_options(wgpu_losses::EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let e = &small;
    let mut rng = fresh_rng("views_split_across_bindings");
    let (n, c) = (200, 301);
    let x = rng.normals(n * c, 2.0);
    let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
    let mut pool = Pool::new(e, 4 << 20);
    let lv = pool.put_f32(e, &x, &[n, c]);
    let tv = pool.take(e, &[n], DType::I32);
    e.queue()
        .write_buffer(pool.buffer(), tv.offset(), bytemuck::cast_slice(&y));
    let gv = pool.take(e, &[n, c], DType::F32);
    let (l, t) = (
        e.upload(&x, &[n, c]).unwrap(),
        e.upload_i32(&y, &[n]).unwrap(),
    );
    let loss = CrossEntropy::new().z_loss(1e-4);
    let whole = loss
        .run(e, &CrossEntropyInputs::new(&l, Target::Classes(&t)))
        .unwrap();
    let on_views = loss
        .run(
            e,
            &CrossEntropyInputs::new(&lv, Target::Classes(&tv)).grad_out(&gv),
        )
        .unwrap();
    assert_eq!(on_views, whole);
    assert_eq!(e.download(&gv).unwrap(), whole.grad("logits").unwrap());
}

#[test]
fn profiled_recordings_time_every_dispatch_by_kernel() {
    let e = own_engine();
    let (logits, target) = ce_inputs(&e, 32, 10);
    let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
    let mut plan = CrossEntropy::new().plan(&e);
    plan.run(&inputs).unwrap();
    // lavapipe (CI) and Vulkan GPUs write timestamps inside compute passes; an adapter that
    // cannot must say so.
    let inside_passes = wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    if !e.features().contains(inside_passes) {
        assert!(matches!(e.profile_dispatches(true), Err(Error::Limit(_))));
        return;
    }
    e.profile_dispatches(true).unwrap();
    let before = e.counters();
    plan.run(&inputs).unwrap();
    let dispatches = e.counters().since(&before).dispatches as usize;
    let times = e.dispatch_times().unwrap();
    let labels: Vec<&str> = times.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels.len(), dispatches);
    assert_eq!(
        labels,
        [
            "cross_entropy:denominator",
            "cross_entropy:main",
            "reduce:finish"
        ]
    );
    assert!(
        times.iter().all(|&(_, s)| s.is_finite() && s >= 0.0),
        "{times:?}"
    );
    e.profile_dispatches(false).unwrap();
    plan.run(&inputs).unwrap();
    assert!(e.dispatch_times().unwrap().is_empty());
}
