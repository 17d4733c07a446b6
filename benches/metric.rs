//! Criterion: the metric-learning losses forward+backward on the GPU and on the CPU backend,
//! in one run: nt-xent and clip at N = 4096, D = 256; triplet-mined at N = 1024, D = 128
//! (each mining); explicit triplets at 65,536 × 128. The f64 reference is timed on the
//! mined triplets (the InfoNCE reference takes seconds per call; `wgpu-losses bench` reports
//! it once). Throughput for the all-pairs losses is in similarity pairs per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgpu_losses::cpu::{HostMinedTripletInputs, HostNceInputs, HostNceRows};
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::{
    Engine, InfoNce, MinedTriplet, MinedTripletInputs, Mining, NceInputs, NceKind, Triplet,
    TripletInputs, Upstream,
};

fn metric(c: &mut Criterion) {
    let engine = Engine::new().expect("benchmarks need a wgpu adapter");
    let name = engine.adapter_info().name.clone();
    let mut group = c.benchmark_group(format!("metric [{name}]"));
    group.sample_size(10);
    let mut rng = Rng::new(5);

    let (n, d) = (4096, 256);
    let z = rng.normals(2 * n * d, 1.0);
    // nt-xent's 4096 rows are two views of 2048; clip pairs 4096 rows of a with 4096 of b.
    let zt = engine.upload(&z[..n * d], &[n, d]).unwrap();
    let bt = engine.upload(&z[n * d..], &[n, d]).unwrap();
    for kind in [NceKind::NtXent, NceKind::Clip] {
        let loss = InfoNce::new(kind);
        let (inputs, rows) = match kind {
            NceKind::NtXent => (
                NceInputs::nt_xent(&zt),
                HostNceRows::NtXent { z: &z[..n * d] },
            ),
            _ => (
                NceInputs::clip(&zt, &bt),
                HostNceRows::Clip {
                    a: &z[..n * d],
                    b: &z[n * d..],
                },
            ),
        };
        let host = HostNceInputs {
            rows,
            dim: d,
            upstream: Upstream::Ones,
        };
        group.throughput(Throughput::Elements((n * n) as u64));
        group.bench_function(format!("{} gpu {n}x{d}", kind.name()), |bench| {
            bench.iter(|| {
                let mut encoder = engine.encoder();
                loss.record(&engine, &mut encoder, &inputs).unwrap();
                engine.submit(encoder).unwrap();
            })
        });
        group.bench_function(format!("{} cpu {n}x{d}", kind.name()), |bench| {
            bench.iter(|| wgpu_losses::cpu::info_nce(&loss, &host).unwrap())
        });
    }

    let (n, d) = (1024, 128);
    let e = rng.normals(n * d, 1.0);
    let labels: Vec<i32> = (0..n).map(|_| rng.below(32) as i32).collect();
    let et = engine.upload(&e, &[n, d]).unwrap();
    let lt = engine.upload_i32(&labels, &[n]).unwrap();
    group.throughput(Throughput::Elements((n * n) as u64));
    for mining in [Mining::BatchAll, Mining::BatchHard, Mining::SemiHard] {
        let loss = MinedTriplet::new().mining(mining);
        group.bench_function(format!("triplet-mined {mining:?} gpu {n}x{d}"), |bench| {
            bench.iter(|| {
                let mut encoder = engine.encoder();
                loss.record(&engine, &mut encoder, &MinedTripletInputs::new(&et, &lt))
                    .unwrap();
                engine.submit(encoder).unwrap();
            })
        });
        group.bench_function(format!("triplet-mined {mining:?} cpu {n}x{d}"), |bench| {
            bench.iter(|| {
                let inputs = HostMinedTripletInputs {
                    embeddings: &e,
                    labels: &labels,
                    dim: d,
                    upstream: Upstream::Ones,
                };
                wgpu_losses::cpu::mined_triplet(&loss, &inputs).unwrap()
            })
        });
    }
    let def = wgpu_losses::losses::find("triplet-mined").unwrap();
    let case = Case::default()
        .with("embeddings", HostArray::f32(&[n, d], e.clone()))
        .with(
            "labels",
            HostArray::i64(&[n], labels.iter().map(|&l| l as i64).collect()),
        )
        .set("mining", "batch-hard");
    group.bench_function(
        format!("triplet-mined BatchHard f64 reference {n}x{d}"),
        |bench| bench.iter(|| def.reference(&case).unwrap()),
    );

    let (n, d) = (65_536, 128);
    let rows: Vec<_> = (0..3)
        .map(|_| engine.upload(&rng.normals(n * d, 1.0), &[n, d]).unwrap())
        .collect();
    let loss = Triplet::new().swap(true);
    let inputs = TripletInputs {
        anchor: &rows[0],
        positive: &rows[1],
        negative: &rows[2],
        upstream: Upstream::Ones,
    };
    group.throughput(Throughput::Bytes((6 * n * d * 4) as u64));
    group.bench_function(format!("triplet swap gpu {n}x{d}"), |bench| {
        bench.iter(|| {
            let mut encoder = engine.encoder();
            loss.record(&engine, &mut encoder, &inputs).unwrap();
            engine.submit(encoder).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, metric);
criterion_main!(benches);
