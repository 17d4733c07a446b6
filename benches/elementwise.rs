//! Criterion: elementwise losses forward+backward on 4M elements against the copy kernel on
//! the same adapter, in one run; then the CPU backend on the same problems against a host
//! copy. Bytes = inputs read + gradient written (the copy: source read + destination
//! written).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgpu_losses::cli::bench::CopyJob;
use wgpu_losses::cpu::{elementwise_into, HostElementInputs};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::{ElementwiseInputs, ElementwiseLoss, Engine, Pointwise};

fn elementwise(c: &mut Criterion) {
    let engine = Engine::new().expect("benchmarks need a wgpu adapter");
    let name = engine.adapter_info().name.clone();
    let mut group = c.benchmark_group(format!("elementwise [{name}]"));
    group.sample_size(20);

    let n = 4 << 20;
    let mut copy = CopyJob::new(&engine, (n * 4) as u64).unwrap();
    group.throughput(Throughput::Bytes(copy.bytes_moved()));
    group.bench_function("copy 16MiB", |b| {
        b.iter(|| {
            let mut encoder = engine.encoder();
            copy.record(&engine, &mut encoder).unwrap();
            engine.submit(encoder).unwrap();
        })
    });

    let mut rng = Rng::new(3);
    let host_x = rng.normals(n, 2.0);
    let x = engine.upload(&host_x, &[n]).unwrap();
    let unit: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let y = engine.upload(&unit, &[n]).unwrap();
    // Like the copy's destination, the gradient buffer is allocated once and reused.
    let grad = engine.zeros(&[n], wgpu_losses::DType::F32).unwrap();
    let kinds = [
        Pointwise::Mse,
        Pointwise::Huber { delta: 1.0 },
        Pointwise::KlDiv { log_target: false },
        Pointwise::BceWithLogits,
        Pointwise::SigmoidFocal {
            alpha: 0.25,
            gamma: 2.0,
        },
    ];
    for kind in kinds {
        let loss = ElementwiseLoss::new(kind);
        let inputs = ElementwiseInputs::new(&x, &y).grad_out(&grad);
        group.throughput(Throughput::Bytes(3 * 4 * n as u64));
        group.bench_function(format!("{kind:?} fwd+bwd 4M"), |b| {
            b.iter(|| {
                let mut encoder = engine.encoder();
                loss.record(&engine, &mut encoder, &inputs).unwrap();
                engine.submit(encoder).unwrap();
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!(
        "elementwise cpu [{} threads]",
        rayon::current_num_threads()
    ));
    group.sample_size(20);
    let mut dst = vec![0.0f32; n];
    group.throughput(Throughput::Bytes(2 * 4 * n as u64));
    group.bench_function("host copy 16MiB", |b| {
        use rayon::prelude::*;
        b.iter(|| {
            dst.par_chunks_mut(1 << 16)
                .zip(host_x.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
    let inputs = HostElementInputs {
        shape: &[n],
        input: &host_x,
        target: &unit,
        labels: None,
        var: None,
        weight: None,
        pos_weight: None,
        upstream: wgpu_losses::Upstream::Ones,
    };
    let mut grad = vec![0.0f32; n];
    for kind in kinds {
        let loss = ElementwiseLoss::new(kind);
        group.throughput(Throughput::Bytes(3 * 4 * n as u64));
        group.bench_function(format!("{kind:?} fwd+bwd 4M"), |b| {
            b.iter(|| elementwise_into(&loss, &inputs, &mut grad, &mut [0.0f32; 0]).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, elementwise);
criterion_main!(benches);
