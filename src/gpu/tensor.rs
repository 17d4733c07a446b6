//! Typed device buffers with a shape: upload, download, and wrapping a caller's buffer.

use wgpu::util::DeviceExt;

use crate::core::shape_bytes;
pub use crate::core::DType;
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;

/// A device buffer holding a dense row-major array.
///
/// Cloning is cheap and shares the buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
    dtype: DType,
}

/// Usages of every buffer the crate allocates.
pub(crate) const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Buffers are never smaller than this: wgpu cannot bind an empty range.
const MIN_BYTES: u64 = 16;

impl Tensor {
    /// Wraps a caller's buffer, from offset 0, without copying.
    ///
    /// # Errors
    /// [`Error::Shape`] when the buffer is smaller than the shape needs; [`Error::Option`] when
    /// it lacks `STORAGE` usage.
    pub fn from_buffer(buffer: wgpu::Buffer, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = shape_bytes("shape", shape)?;
        let t = Self {
            buffer,
            shape: shape.to_vec(),
            dtype,
        };
        if t.buffer.size() < bytes {
            return Err(Error::Shape {
                input: "buffer",
                expected: format!("at least {bytes} bytes"),
                got: vec![t.buffer.size() as usize],
            });
        }
        if !t.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::Option {
                option: "buffer usage",
                value: format!("{:?}", t.buffer.usage()),
                reason: "a wrapped buffer needs STORAGE usage",
            });
        }
        Ok(t)
    }

    /// The same buffer seen with another shape of the same size.
    pub(crate) fn reshaped(t: Tensor, shape: &[usize]) -> Tensor {
        debug_assert_eq!(t.len(), shape.iter().product::<usize>());
        Tensor {
            shape: shape.to_vec(),
            ..t
        }
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The shape, outermost first. A scalar has shape `[]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes.
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }

    /// The binding of `count` elements starting at element `start`.
    pub(crate) fn window(&self, start: usize, count: usize) -> wgpu::BindingResource<'_> {
        window(&self.buffer, start, count)
    }

    /// The whole tensor as a binding.
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        self.window(0, self.len())
    }

    pub(crate) fn expect_dtype(&self, input: &'static str, dtype: DType) -> Result<()> {
        self.arg().expect_dtype(input, dtype)
    }
}

/// A binding of `count` 4-byte elements of `buffer` from element `start` (at least one element,
/// since wgpu cannot bind an empty range).
pub(crate) fn window(
    buffer: &wgpu::Buffer,
    start: usize,
    count: usize,
) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: start as u64 * 4,
        size: std::num::NonZeroU64::new(count.max(1) as u64 * 4),
    })
}

impl Engine {
    fn check_size(&self, bytes: u64) -> Result<()> {
        if bytes > self.limits().max_buffer_size {
            return Err(Error::Limit(format!(
                "{bytes} bytes exceed the adapter's max_buffer_size of {}",
                self.limits().max_buffer_size
            )));
        }
        Ok(())
    }

    fn upload_bytes(&self, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.check_size(bytes.len() as u64)?;
        self.note_buffer((bytes.len() as u64).max(MIN_BYTES));
        let buffer = self.scoped(|| {
            Ok(if (bytes.len() as u64) < MIN_BYTES {
                let mut padded = bytes.to_vec();
                padded.resize(MIN_BYTES as usize, 0);
                self.device()
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: None,
                        contents: &padded,
                        usage: USAGE,
                    })
            } else {
                self.device()
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: None,
                        contents: bytes,
                        usage: USAGE,
                    })
            })
        })?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    fn check_len(input: &'static str, len: usize, shape: &[usize]) -> Result<()> {
        if shape_bytes("shape", shape)? != len as u64 * 4 {
            return Err(Error::Shape {
                input,
                expected: format!("{len} elements"),
                got: shape.to_vec(),
            });
        }
        Ok(())
    }

    /// Copies f32 host data to a new device tensor.
    ///
    /// # Errors
    /// [`Error::Shape`] when `data.len()` is not the product of `shape`; wgpu errors.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Self::check_len("data", data.len(), shape)?;
        self.upload_bytes(bytemuck::cast_slice(data), shape, DType::F32)
    }

    /// Copies i32 host data (class indices, labels) to a new device tensor.
    ///
    /// # Errors
    /// As [`Engine::upload`].
    pub fn upload_i32(&self, data: &[i32], shape: &[usize]) -> Result<Tensor> {
        Self::check_len("data", data.len(), shape)?;
        self.upload_bytes(bytemuck::cast_slice(data), shape, DType::I32)
    }

    /// A new zero-filled device tensor.
    ///
    /// # Errors
    /// [`Error::Limit`] past the adapter's buffer size; wgpu errors.
    pub fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = shape_bytes("shape", shape)?.max(MIN_BYTES);
        self.check_size(bytes)?;
        self.note_buffer(bytes);
        let buffer = self.scoped(|| {
            Ok(self.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: USAGE,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Reads an f32 tensor back to the host (waits for queued work).
    ///
    /// # Errors
    /// [`Error::DType`] for an i32 tensor; map failures and wgpu errors.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        t.expect_dtype("tensor", DType::F32)?;
        Ok(bytemuck::pod_collect_to_vec(
            &self.read_bytes(&t.buffer, t.bytes())?,
        ))
    }

    /// Reads an i32 tensor back to the host.
    ///
    /// # Errors
    /// As [`Engine::download`].
    pub fn download_i32(&self, t: &Tensor) -> Result<Vec<i32>> {
        t.expect_dtype("tensor", DType::I32)?;
        Ok(bytemuck::pod_collect_to_vec(
            &self.read_bytes(&t.buffer, t.bytes())?,
        ))
    }

    /// Copies the first `bytes` bytes of `buffer` to the host.
    pub(crate) fn read_bytes(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        self.note_buffer(bytes);
        let staging = self.scoped(|| {
            let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self.encoder();
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
            self.queue().submit([encoder.finish()]);
            Ok(staging)
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let data = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(e.to_string()))?
            .to_vec();
        staging.unmap();
        self.health()?;
        Ok(data)
    }
}

impl Tensor {
    /// The tensor as the input checks see it.
    pub(crate) fn arg(&self) -> crate::core::Arg<'_> {
        crate::core::Arg {
            shape: &self.shape,
            dtype: self.dtype,
        }
    }
}

impl crate::core::Dims for Tensor {
    fn dims(&self) -> Vec<usize> {
        self.shape.clone()
    }
}
