//! The numbers the metric-learning issue asks for, in one run on the best adapter:
//! nt-xent and clip forward+backward at N = 4096, D = 256 and triplet-mined at N = 1024,
//! D = 128 on the GPU, the CPU backend and the f64 reference (one call each after a warm-up),
//! and the device memory one nt-xent call creates at N = 16,384, D = 256.
//!
//! `cargo run --release --features cli --example metric_scale`

use std::time::Instant;

use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray};
use wgpu_losses::{Engine, InfoNce, NceInputs, NceKind};

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() -> Result<(), wgpu_losses::Error> {
    let engine = Engine::new()?;
    println!("adapter: {}", engine.adapter_info().name);
    let mut rng = Rng::new(11);
    let (n, d) = (4096, 256);
    let a = HostArray::f32(&[n, d], rng.normals(n * d, 1.0));
    let b = HostArray::f32(&[n, d], rng.normals(n * d, 1.0));
    let e = HostArray::f32(&[1024, 128], rng.normals(1024 * 128, 1.0));
    let labels = HostArray::i64(&[1024], (0..1024).map(|_| rng.below(32) as i64).collect());
    let cases = [
        ("nt-xent", Case::default().with("z", a.clone())),
        ("clip", Case::default().with("a", a).with("b", b)),
        (
            "triplet-mined",
            Case::default()
                .with("embeddings", e)
                .with("labels", labels)
                .set("mining", "semi-hard"),
        ),
    ];
    println!(
        "{:<14} {:>12} {:>10} {:>10} {:>12}",
        "loss", "shape", "gpu s", "cpu s", "f64 ref s"
    );
    for (name, case) in &cases {
        let def = wgpu_losses::losses::find(name)?;
        def.gpu(&engine, case)?; // warm-up: pipelines
        let gpu = secs(|| drop(def.gpu(&engine, case)));
        let cpu = secs(|| drop(def.cpu(case)));
        let reference = secs(|| drop(def.reference(case)));
        let shape = &case.inputs.values().next().expect("an input").shape;
        println!(
            "{name:<14} {:>12} {gpu:>10.3} {cpu:>10.3} {reference:>12.3}",
            format!("{}x{}", shape[0], shape[1])
        );
    }
    let (m, d) = (16_384, 256);
    let z = engine.upload(&rng.normals(m * d, 1.0), &[m, d])?;
    engine.reset_counters();
    let t = Instant::now();
    InfoNce::new(NceKind::NtXent).run(&engine, &NceInputs::nt_xent(&z))?;
    let stats = engine.counters();
    println!(
        "nt-xent {m}x{d}: {:.1} s; device buffers created by the call: {:.1} MiB in all, \
         largest {:.1} MiB (input {:.1} MiB; an N×N f32 matrix would be {:.0} MiB)",
        t.elapsed().as_secs_f64(),
        stats.bytes_created as f64 / 1048576.0,
        stats.largest_buffer as f64 / 1048576.0,
        (m * d * 4) as f64 / 1048576.0,
        (m * m * 4) as f64 / 1048576.0,
    );
    Ok(())
}
