//! Criterion: fused cross-entropy forward+backward against the copy kernel on the same adapter,
//! in one run. Bytes = logits read + gradient written (the copy: source read + destination
//! written), so the two throughputs compare directly. A second row per shape allocates the
//! gradient buffer on every call, which adds wgpu's zero-fill of the new buffer. The CPU
//! backend's group times the comparison shapes (512×50257, 4096×32000) with a reused
//! gradient buffer and with the gradient written over the logits. Softmax focal (the same
//! row kernel) has rows of its own on both.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgpu_losses::cli::bench::CopyJob;
use wgpu_losses::registry::random::Rng;
use wgpu_losses::{CrossEntropy, CrossEntropyInputs, DType, Engine, SoftmaxFocal, Target};

fn cross_entropy(c: &mut Criterion) {
    let engine = Engine::new().expect("benchmarks need a wgpu adapter");
    let name = engine.adapter_info().name.clone();
    let mut group = c.benchmark_group(format!("cross_entropy [{name}]"));
    group.sample_size(20);

    let mut copy = CopyJob::new(&engine, 64 << 20).unwrap();
    group.throughput(Throughput::Bytes(copy.bytes_moved()));
    group.bench_function("copy 64MiB", |b| {
        b.iter(|| {
            let mut encoder = engine.encoder();
            copy.record(&engine, &mut encoder).unwrap();
            engine.submit(encoder).unwrap();
        })
    });

    let mut rng = Rng::new(1);
    for (n, classes) in [(1024usize, 4096usize), (4096, 4096), (256, 32000), (32, 10)] {
        let logits = engine
            .upload(&rng.normals(n * classes, 2.0), &[n, classes])
            .unwrap();
        let y: Vec<i32> = (0..n).map(|_| rng.below(classes) as i32).collect();
        let target = engine.upload_i32(&y, &[n]).unwrap();
        // Like the copy's destination, the gradient buffer is allocated once and reused.
        let grad = engine.zeros(&[n, classes], DType::F32).unwrap();
        let reused = CrossEntropyInputs::new(&logits, Target::Classes(&target)).grad_out(&grad);
        let fresh = CrossEntropyInputs::new(&logits, Target::Classes(&target));
        let ce = CrossEntropy::new();
        group.throughput(Throughput::Bytes(2 * 4 * (n * classes) as u64));
        for (label, inputs) in [("fwd+bwd", &reused), ("fwd+bwd new grad buffer", &fresh)] {
            group.bench_function(format!("{label} {n}x{classes}"), |b| {
                b.iter(|| {
                    let mut encoder = engine.encoder();
                    ce.record(&engine, &mut encoder, inputs).unwrap();
                    engine.submit(encoder).unwrap();
                })
            });
        }
        if classes == 4096 {
            let focal = SoftmaxFocal::new();
            group.bench_function(format!("softmax focal fwd+bwd {n}x{classes}"), |b| {
                b.iter(|| {
                    let mut encoder = engine.encoder();
                    focal.record(&engine, &mut encoder, &reused).unwrap();
                    engine.submit(encoder).unwrap();
                })
            });
        }
    }
    group.finish();
}

fn cross_entropy_cpu(c: &mut Criterion) {
    use wgpu_losses::cpu::{
        cross_entropy_in_place, cross_entropy_into, softmax_focal_into, HostRowInputs, HostTarget,
    };
    let mut group = c.benchmark_group(format!(
        "cross_entropy cpu [{} threads]",
        rayon::current_num_threads()
    ));
    group.sample_size(10);
    let mut rng = Rng::new(2);
    for (n, classes) in [(512usize, 50257usize), (4096, 32000)] {
        let x = rng.normals(n * classes, 2.0);
        let y: Vec<i32> = (0..n).map(|_| rng.below(classes) as i32).collect();
        let mut grad = vec![0.0f32; n * classes];
        let inputs = HostRowInputs {
            logits: &x,
            shape: (n, classes),
            target: HostTarget::Classes(&y),
            weight: None,
            upstream: wgpu_losses::Upstream::Ones,
        };
        let ce = CrossEntropy::new();
        group.throughput(Throughput::Bytes(2 * 4 * (n * classes) as u64));
        group.bench_function(format!("fwd+bwd {n}x{classes}"), |b| {
            b.iter(|| cross_entropy_into(&ce, &inputs, &mut grad).unwrap())
        });
        let focal = SoftmaxFocal::new();
        group.bench_function(format!("softmax focal fwd+bwd {n}x{classes}"), |b| {
            b.iter(|| softmax_focal_into(&focal, &inputs, &mut grad).unwrap())
        });
        // The gradient over the logits: later iterations run on earlier gradients, which
        // costs the same.
        let mut logits = x.clone();
        group.bench_function(format!("fwd+bwd in place {n}x{classes}"), |b| {
            b.iter(|| cross_entropy_in_place(&ce, &inputs, &mut logits).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, cross_entropy, cross_entropy_cpu);
criterion_main!(benches);
