//! Typed device buffers with a shape: upload, download, and wrapping a caller's buffer.

use wgpu::util::DeviceExt;

use crate::core::shape_bytes;
pub use crate::core::DType;
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;

/// A dense row-major array in a device buffer: the whole buffer, or a view of it from a
/// byte offset (frameworks hand out sub-allocations of pooled buffers).
///
/// Cloning is cheap and shares the buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    offset: u64,
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
        Self::wrap(buffer, 0, shape, dtype)
    }

    /// Wraps `shape` elements of a caller's buffer from byte `offset`, without copying: a
    /// view of a sub-allocation. Views of one buffer may be inputs and outputs of one call
    /// as long as the outputs overlap no input.
    ///
    /// # Errors
    /// [`Error::Option`] when `offset` is not a multiple of the adapter's
    /// `min_storage_buffer_offset_alignment` or the buffer lacks `STORAGE` usage;
    /// [`Error::Shape`] when the buffer ends before the view does.
    pub fn view(
        engine: &Engine,
        buffer: wgpu::Buffer,
        offset: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let align = engine.limits().min_storage_buffer_offset_alignment as u64;
        if !offset.is_multiple_of(align) {
            return Err(Error::Option {
                option: "offset",
                value: offset.to_string(),
                reason: "a view must start at a multiple of the adapter's \
                         min_storage_buffer_offset_alignment",
            });
        }
        Self::wrap(buffer, offset, shape, dtype)
    }

    fn wrap(buffer: wgpu::Buffer, offset: u64, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = shape_bytes("shape", shape)?;
        let t = Self {
            buffer,
            offset,
            shape: shape.to_vec(),
            dtype,
        };
        if t.buffer.size().saturating_sub(offset) < bytes {
            return Err(Error::Shape {
                input: "buffer",
                expected: format!("at least {} bytes", offset.saturating_add(bytes)),
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

    /// The first elements of the same buffer, seen with `shape`.
    pub(crate) fn prefix(&self, shape: &[usize]) -> Tensor {
        debug_assert!(shape.iter().product::<usize>() <= self.len());
        Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        }
    }

    /// Rows `[start, start + count)` of the outermost dimension, as a view of the same
    /// buffer.
    ///
    /// # Errors
    /// As [`Tensor::view`]: the rows must start at an aligned offset.
    pub(crate) fn rows(&self, engine: &Engine, start: usize, count: usize) -> Result<Tensor> {
        let row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = count;
        let offset = self.offset + (start * row * 4) as u64;
        Tensor::view(engine, self.buffer.clone(), offset, &shape, self.dtype)
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Where the data starts in [`Tensor::buffer`], in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the bytes of `self` and `other` overlap.
    pub(crate) fn overlaps(&self, other: &Tensor) -> bool {
        self.buffer == other.buffer
            && self.offset < other.offset + other.bytes()
            && other.offset < self.offset + self.bytes()
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

    /// The binding of `count` elements starting at element `start` (at least one element:
    /// wgpu cannot bind an empty range, and buffers are never smaller than 16 bytes).
    pub(crate) fn window(&self, start: usize, count: usize) -> Binding {
        Binding::Buffer {
            buffer: self.buffer.clone(),
            offset: self.offset + start as u64 * 4,
            size: count.max(1) as u64 * 4,
        }
    }

    /// The whole tensor as a binding.
    pub(crate) fn binding(&self) -> Binding {
        self.window(0, self.len())
    }

    pub(crate) fn expect_dtype(&self, input: &'static str, dtype: DType) -> Result<()> {
        self.arg().expect_dtype(input, dtype)
    }
}

/// What one binding slot of a dispatch holds: a byte range of a buffer, or a range of the
/// call's parameter block (placed when the call is encoded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Binding {
    Buffer {
        buffer: wgpu::Buffer,
        offset: u64,
        size: u64,
    },
    Params {
        offset: u64,
        size: u64,
    },
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
        Ok(Tensor {
            buffer: self.upload_buffer(bytes)?,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A new storage buffer holding `bytes` (padded to the 16-byte minimum).
    pub(crate) fn upload_buffer(&self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        self.check_size(bytes.len() as u64)?;
        self.note_buffer((bytes.len() as u64).max(MIN_BYTES), false);
        let mut padded;
        let contents = if (bytes.len() as u64) < MIN_BYTES {
            padded = bytes.to_vec();
            padded.resize(MIN_BYTES as usize, 0);
            &padded[..]
        } else {
            bytes
        };
        self.scoped(|| {
            Ok(self
                .device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents,
                    usage: USAGE,
                }))
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
        let buffer = self.new_buffer(shape_bytes("shape", shape)?)?;
        Ok(Tensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A new zero-filled storage buffer of at least `bytes` bytes.
    pub(crate) fn new_buffer(&self, bytes: u64) -> Result<wgpu::Buffer> {
        let bytes = bytes.max(MIN_BYTES);
        self.check_size(bytes)?;
        self.note_buffer(bytes, true);
        self.scoped(|| {
            Ok(self.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: USAGE,
                mapped_at_creation: false,
            }))
        })
    }

    /// Reads an f32 tensor back to the host (waits for queued work).
    ///
    /// # Errors
    /// [`Error::DType`] for an i32 tensor; map failures and wgpu errors.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        t.expect_dtype("tensor", DType::F32)?;
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(
            &t.buffer,
            t.offset,
            t.bytes(),
        )?))
    }

    /// Reads an i32 tensor back to the host.
    ///
    /// # Errors
    /// As [`Engine::download`].
    pub fn download_i32(&self, t: &Tensor) -> Result<Vec<i32>> {
        t.expect_dtype("tensor", DType::I32)?;
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(
            &t.buffer,
            t.offset,
            t.bytes(),
        )?))
    }

    /// Copies `bytes` bytes of `buffer` from byte `offset` to the host.
    pub(crate) fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        self.note_buffer(bytes, true);
        let staging = self.scoped(|| {
            let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self.encoder();
            encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
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
