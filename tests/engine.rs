//! The engine and its tensors at the edges: shapes whose size overflows, empty tensors.
//! GPU tests: they fail loudly when no adapter exists.

use wgpu_losses::{DType, Engine, Error, Tensor};

fn engine() -> Engine {
    Engine::new().unwrap_or_else(|e| {
        panic!("GPU tests need a wgpu adapter ({e}); apt-get install -y mesa-vulkan-drivers")
    })
}

/// Shapes whose element or byte count overflows are an error naming the shape, from every
/// constructor (they used to be accepted, and a later call panicked or aborted).
#[test]
fn overflowing_shapes_are_errors_not_panics() {
    let e = engine();
    for shape in [
        &[1usize << 62, 4][..],
        &[usize::MAX, 2],
        &[1 << 40, 1 << 40],
    ] {
        let shape_err = |r: Result<Tensor, Error>| {
            assert!(
                matches!(r, Err(Error::Shape { input: "shape", .. })),
                "{shape:?}: {r:?}"
            )
        };
        shape_err(e.upload(&[], shape));
        shape_err(e.upload_i32(&[], shape));
        shape_err(e.zeros(shape, DType::F32));
        let small = e.zeros(&[4], DType::F32).unwrap().buffer().clone();
        shape_err(Tensor::from_buffer(small, shape, DType::F32));
    }
}

/// A zero-element tensor downloads as an empty vector (it used to panic on alignment).
#[test]
fn a_zero_element_tensor_downloads_as_empty() {
    let e = engine();
    assert_eq!(
        e.download(&e.zeros(&[0], DType::F32).unwrap()).unwrap(),
        Vec::<f32>::new()
    );
    assert_eq!(
        e.download(&e.upload(&[], &[3, 0]).unwrap()).unwrap(),
        Vec::<f32>::new()
    );
    let empty = e.upload_i32(&[], &[0]).unwrap();
    assert_eq!(e.download_i32(&empty).unwrap(), Vec::<i32>::new());
}

/// A wgpu validation error on purpose (a tensor of another device) is an `Err` naming
/// wgpu's complaint, not a panic, and the engine keeps working afterwards.
#[test]
fn a_validation_error_is_an_err_and_the_engine_keeps_working() {
    use wgpu_losses::{CrossEntropy, CrossEntropyInputs, Target};
    let (ours, other) = (engine(), engine());
    let foreign = other.upload(&[0.5; 8], &[2, 4]).unwrap();
    let target = ours.upload_i32(&[0, 3], &[2]).unwrap();
    let r = CrossEntropy::new().run(
        &ours,
        &CrossEntropyInputs::new(&foreign, Target::Classes(&target)),
    );
    assert!(matches!(r, Err(Error::Wgpu(_))), "{r:?}");
    let logits = ours.upload(&[0.5; 8], &[2, 4]).unwrap();
    let ok = CrossEntropy::new()
        .run(
            &ours,
            &CrossEntropyInputs::new(&logits, Target::Classes(&target)),
        )
        .unwrap();
    assert!((ok.loss[0] - 4f32.ln()).abs() < 1e-6, "{:?}", ok.loss);
    ours.health().unwrap();
}

/// Out of memory on purpose. A software adapter's device memory is the process's, so there
/// the test runs itself again in a child process whose address space is capped at 3 GiB
/// (`ulimit -v`); a GPU's device-local memory runs out by itself. Zero-filled tensors of
/// 1.5 GiB (or the adapter's largest buffer) are allocated until one fails, at most 1 TiB:
/// the failure must be an `Err` saying so, not a panic or an abort, and the engine must then
/// still compute a loss once the held tensors are dropped, or report itself lost.
#[test]
fn out_of_memory_is_an_err_and_the_engine_keeps_working() {
    const CHILD: &str = "WGPU_LOSSES_OOM_CHILD";
    const NAME: &str = "out_of_memory_is_an_err_and_the_engine_keeps_working";
    if std::env::var_os(CHILD).is_some()
        || engine().adapter_info().device_type != wgpu::DeviceType::Cpu
    {
        return run_out_of_memory();
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 3145728 && exec \"$0\" --exact \"$1\" --nocapture --test-threads 1")
        .arg(std::env::current_exe().unwrap())
        .arg(NAME)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed: {text}");
    // The child ran the test (a filter matching nothing would also succeed).
    assert!(text.contains("out of memory reported:"), "{text}");
}

fn run_out_of_memory() {
    use wgpu_losses::{CrossEntropy, CrossEntropyInputs, Target};
    let e = engine();
    let bytes = (3u64 << 29).min(e.limits().max_buffer_size) / 4 * 4;
    let mut held = Vec::new();
    let failure = loop {
        assert!(
            held.len() as u64 * bytes < 1 << 40,
            "1 TiB allocated without running out"
        );
        match e.zeros(&[bytes as usize / 4], DType::F32) {
            Ok(t) => held.push(t),
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&failure, Error::Wgpu(m) if m.to_lowercase().contains("memory")),
        "{failure:?}"
    );
    println!(
        "out of memory reported: {failure} (after {} tensors)",
        held.len()
    );
    drop(held);
    let logits = e.upload(&[0.5; 8], &[2, 4]);
    let target = e.upload_i32(&[0, 3], &[2]);
    match (logits, target) {
        (Ok(logits), Ok(target)) => {
            let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target));
            match CrossEntropy::new().run(&e, &inputs) {
                Ok(v) => assert!((v.loss[0] - 4f32.ln()).abs() < 1e-6, "{:?}", v.loss),
                Err(err) => assert!(matches!(err, Error::DeviceLost(_)), "{err:?}"),
            }
        }
        (l, t) => panic!("after the failure: {:?} {:?}", l.err(), t.err()),
    }
}

/// The subgroup size the kernels' teams are sized by is probed on the device: a power of
/// two within the adapter's reported range wherever the adapter has subgroups (8 on
/// lavapipe), and the width the kernels use.
#[test]
fn the_subgroup_size_is_probed_within_the_adapters_range() {
    let e = engine();
    let info = e.adapter_info();
    if !e.device().features().contains(wgpu::Features::SUBGROUP) {
        assert_eq!(e.probed_subgroup_size(), None);
        return;
    }
    let probed = e.probed_subgroup_size().expect("the probe failed");
    assert!(probed.is_power_of_two(), "{probed}");
    assert!(
        info.subgroup_min_size <= probed && probed <= info.subgroup_max_size,
        "{probed} outside {}..{}",
        info.subgroup_min_size,
        info.subgroup_max_size
    );
    assert_eq!(e.subgroup_width(), probed.min(e.workgroup_size()));
}
