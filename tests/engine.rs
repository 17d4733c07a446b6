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
