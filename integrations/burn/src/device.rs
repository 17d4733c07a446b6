//! burn's wgpu device shared with this crate's engine, and one fused call on burn's buffers.
//!
//! Ordering contract: burn's cubecl server batches its kernels and submits them to the
//! device's queue when flushed. A fused call flushes burn's stream, then submits its own
//! command buffer to the same queue, so it runs after everything burn recorded before it and
//! before everything burn records later. The buffers it reads and writes are held (cubecl's
//! managed resources pin them) until the submission.

use std::cell::RefCell;
use std::sync::Mutex;

use burn::backend::wgpu::{AutoCompiler, WgpuSetup};
use burn::backend::{CubeDevice, DispatchDevice, TensorMetadata};
use burn::tensor::{DType as BurnDType, Device, FloatDType};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::wgpu::WgpuServer;
use wgpu_losses::{DType, Engine, Tensor};

use crate::call::LossCall;
use crate::Error;

/// The engines sharing burn's devices.
static ENGINES: Mutex<Vec<(CubeDevice, Engine)>> = Mutex::new(Vec::new());

thread_local! {
    /// The failure of this thread's last fused call, which the burn operation cannot return.
    static FAILURE: RefCell<Option<wgpu_losses::Error>> = const { RefCell::new(None) };
}

/// Initializes burn's default wgpu device and shares it with this crate: the device every
/// function of this crate takes tensors on. Call once, before burn touches the device.
///
/// # Errors
/// [`Error::Init`] when burn cannot acquire the device (no adapter, or already initialized
/// by a tensor operation).
pub fn init() -> Result<Device, Error> {
    let (device, setup) = Device::wgpu_options()
        .init_with_setup()
        .map_err(|e| Error::Init(e.to_string()))?;
    register(&device, &setup)?;
    Ok(device)
}

/// Shares an initialized burn wgpu device (from `Device::wgpu_options().init_with_setup()`,
/// or a setup you registered with `.setup(..)`) with this crate.
///
/// # Errors
/// [`Error::Device`] when `device` is not a wgpu device.
pub fn register(device: &Device, setup: &WgpuSetup) -> Result<(), Error> {
    let cube = cube_device(device).ok_or_else(|| Error::Device(format!("{device:?}")))?;
    let engine = Engine::from_device(setup.device.clone(), setup.queue.clone());
    let mut engines = ENGINES.lock().expect("engine registry poisoned");
    engines.retain(|(d, _)| *d != cube);
    engines.push((cube, engine));
    Ok(())
}

/// The engine on `device`'s queue.
///
/// # Errors
/// [`Error::Device`] when `device` was not shared with [`init`] or [`register`].
pub fn engine(device: &Device) -> Result<Engine, Error> {
    cube_device(device)
        .and_then(|cube| engine_for(&cube))
        .ok_or_else(|| Error::Device(format!("{device:?}")))
}

fn cube_device(device: &Device) -> Option<CubeDevice> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube @ CubeDevice::Wgpu(_)) => Some(cube.clone()),
        _ => None,
    }
}

fn engine_for(cube: &CubeDevice) -> Option<Engine> {
    let engines = ENGINES.lock().expect("engine registry poisoned");
    engines
        .iter()
        .find(|(d, _)| d == cube)
        .map(|(_, e)| e.clone())
}

/// The failure of this thread's last fused call, if it failed.
pub(crate) fn take_failure() -> Option<wgpu_losses::Error> {
    FAILURE.with(|f| f.borrow_mut().take())
}

/// Runs `call` on burn's tensors: the loss (f32, `[1]` or `[items]`), then the gradients
/// when the call computes them. Outputs are new burn tensors from `empty`; a failure is left
/// for [`take_failure`] and the outputs are then undefined.
pub(crate) fn run(
    call: LossCall,
    floats: Vec<CubeTensor>,
    ints: Vec<CubeTensor>,
    gradients: bool,
    empty: impl Fn(&[usize], FloatDType, &CubeTensor) -> CubeTensor,
) -> Vec<CubeTensor> {
    let call = call.with_gradient(gradients);
    let like = floats[0].clone();
    let grads: Vec<CubeTensor> = if gradients {
        floats[..call.gradient_names().len()]
            .iter()
            .map(|t| empty(&dims(t), float_dtype(t), t))
            .collect()
    } else {
        Vec::new()
    };
    let loss = empty(&[call.loss_len(&dims(&like))], FloatDType::F32, &like);
    match record(&call, &floats, &ints, &grads, &loss) {
        Ok(()) => {}
        Err(e) => FAILURE.with(|f| *f.borrow_mut() = Some(e)),
    }
    std::iter::once(loss).chain(grads).collect()
}

/// A view of a burn tensor's bytes, with the cubecl resource that pins them.
struct Pinned {
    view: Tensor,
    _pin: Box<dyn std::any::Any>,
}

fn pin(engine: &Engine, t: &CubeTensor) -> wgpu_losses::Result<Pinned> {
    let dtype = match t.dtype {
        BurnDType::F32 => DType::F32,
        BurnDType::F16 => DType::F16,
        BurnDType::BF16 => DType::BF16,
        BurnDType::I32 => DType::I32,
        other => {
            return Err(wgpu_losses::Error::Option {
                option: "dtype",
                value: format!("{other:?}"),
                reason: "burn tensors must be f32, f16, bf16 or (class targets, labels) i32",
            })
        }
    };
    let pinned = t
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(t.handle.clone())
        .map_err(|e| wgpu_losses::Error::Wgpu(e.to_string()))?;
    let r = pinned.resource();
    let view = Tensor::view(engine, r.buffer.clone(), r.offset, &dims(t), dtype)?;
    Ok(Pinned {
        view,
        _pin: Box::new(pinned),
    })
}

fn dims(t: &CubeTensor) -> Vec<usize> {
    t.shape().iter().copied().collect()
}

fn float_dtype(t: &CubeTensor) -> FloatDType {
    match t.dtype {
        BurnDType::F16 => FloatDType::F16,
        BurnDType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

fn record(
    call: &LossCall,
    floats: &[CubeTensor],
    ints: &[CubeTensor],
    grads: &[CubeTensor],
    loss: &CubeTensor,
) -> wgpu_losses::Result<()> {
    let engine = engine_for(&floats[0].device).ok_or_else(|| wgpu_losses::Error::Option {
        option: "device",
        value: format!("{:?}", floats[0].device),
        reason: "not shared with wgpu-losses: create it with wgpu_losses_burn::init or register",
    })?;
    let floats: Vec<CubeTensor> = floats.iter().cloned().map(into_contiguous).collect();
    let ints: Vec<CubeTensor> = ints.iter().cloned().map(into_contiguous).collect();
    floats[0]
        .client
        .flush()
        .map_err(|e| wgpu_losses::Error::Wgpu(e.to_string()))?;
    let pin_all = |ts: &[CubeTensor]| -> wgpu_losses::Result<Vec<Pinned>> {
        ts.iter().map(|t| pin(&engine, t)).collect()
    };
    let (float_views, int_views, grad_views) =
        (pin_all(&floats)?, pin_all(&ints)?, pin_all(grads)?);
    let loss_view = pin(&engine, loss)?;
    let views = |p: &[Pinned]| p.iter().map(|p| p.view.clone()).collect::<Vec<_>>();

    let mut encoder = engine.encoder();
    let out = call.record(
        &engine,
        &mut encoder,
        &views(&float_views),
        &views(&int_views),
        &views(&grad_views),
    )?;
    let names = call.gradient_names();
    for (name, grad) in &out.grads {
        let i = names
            .iter()
            .position(|n| n == name)
            .expect("a known gradient");
        copy_unless_same(&mut encoder, grad, &grad_views[i].view);
    }
    copy_unless_same(&mut encoder, &out.loss, &loss_view.view);
    engine.submit(encoder)?;
    engine.check_status(&out)
}

/// Copies `from` into `to` unless the kernels already wrote there.
fn copy_unless_same(encoder: &mut wgpu::CommandEncoder, from: &Tensor, to: &Tensor) {
    if from.buffer() == to.buffer() && from.offset() == to.offset() {
        return;
    }
    let bytes = from.bytes().next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
    encoder.copy_buffer_to_buffer(
        from.buffer(),
        from.offset(),
        to.buffer(),
        to.offset(),
        bytes,
    );
}
