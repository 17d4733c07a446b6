//! Typed device buffers with a shape: upload, download, and wrapping a caller's buffer.

use wgpu::util::DeviceExt;

pub use crate::core::DType;
use crate::core::{typed_bytes, Element};
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
    /// Wraps a caller's buffer, from offset 0, without copying. A 16-bit tensor's buffer
    /// holds whole 4-byte words: an odd element count needs 2 bytes of padding after it,
    /// which the kernels leave as they are.
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
        let bytes = typed_bytes("shape", shape, dtype)?;
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
        let offset = self.offset + (start * row) as u64 * self.dtype.size();
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
        self.len() as u64 * self.dtype.size()
    }

    /// The bytes of the whole 4-byte words the data occupies.
    fn word_bytes(&self) -> u64 {
        self.bytes().next_multiple_of(4)
    }

    /// The binding of `count` elements starting at element `start` (at least one element:
    /// wgpu cannot bind an empty range, and buffers are never smaller than 16 bytes), in
    /// whole 4-byte words: a 16-bit window starts on a word (callers split at aligned
    /// rows) and ends on one, taking the other half of a last shared word with it.
    pub(crate) fn window(&self, start: usize, count: usize) -> Binding {
        let size = self.dtype.size();
        debug_assert!((start as u64 * size).is_multiple_of(4));
        Binding::Buffer {
            buffer: self.buffer.clone(),
            offset: self.offset + start as u64 * size,
            size: (count.max(1) as u64 * size).next_multiple_of(4),
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

    /// A new tensor of `shape` and `dtype` holding `bytes`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `bytes` does not hold exactly `shape`; as [`Engine::upload`].
    pub(crate) fn upload_bytes(
        &self,
        bytes: &[u8],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let elements = bytes.len() as u64 / dtype.size();
        typed_bytes("shape", shape, dtype)?;
        if shape.iter().product::<usize>() as u64 != elements {
            return Err(Error::Shape {
                input: "data",
                expected: format!("{elements} elements"),
                got: shape.to_vec(),
            });
        }
        Ok(Tensor {
            buffer: self.upload_buffer(bytes)?,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A new storage buffer holding `bytes` (padded to the 16-byte minimum and to whole
    /// 4-byte words).
    pub(crate) fn upload_buffer(&self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        self.check_size(bytes.len() as u64)?;
        let size = (bytes.len() as u64).max(MIN_BYTES).next_multiple_of(4);
        self.note_buffer(size, false);
        let mut padded;
        let contents = if (bytes.len() as u64) < size {
            padded = bytes.to_vec();
            padded.resize(size as usize, 0);
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
        if typed_bytes("shape", shape, DType::F32)? != len as u64 * 4 {
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

    /// Copies f32, f16 or bf16 host data to a new device tensor of that type.
    ///
    /// # Errors
    /// As [`Engine::upload`].
    pub fn upload_values<T: Element>(&self, data: &[T], shape: &[usize]) -> Result<Tensor> {
        Self::check_len("data", data.len(), shape)?;
        self.upload_bytes(bytemuck::cast_slice(data), shape, T::DTYPE)
    }

    /// Copies f32 host data to a new device tensor of the float type `dtype`, rounding
    /// each value to nearest, ties to even.
    ///
    /// # Errors
    /// As [`Engine::upload`]; [`Error::DType`] when `dtype` is not a float type.
    pub fn upload_as(&self, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => self.upload(data, shape),
            DType::F16 => self.upload_values(
                &data
                    .iter()
                    .map(|&x| half::f16::from_f32(x))
                    .collect::<Vec<_>>(),
                shape,
            ),
            DType::BF16 => self.upload_values(
                &data
                    .iter()
                    .map(|&x| half::bf16::from_f32(x))
                    .collect::<Vec<_>>(),
                shape,
            ),
            DType::I32 => Err(Error::DType {
                input: "dtype",
                expected: "f32, f16 or bf16",
                got: "i32",
            }),
        }
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
        let buffer = self.new_buffer(typed_bytes("shape", shape, dtype)?)?;
        Ok(Tensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A new zero-filled storage buffer of at least `bytes` bytes.
    pub(crate) fn new_buffer(&self, bytes: u64) -> Result<wgpu::Buffer> {
        let bytes = bytes.max(MIN_BYTES).next_multiple_of(4);
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

    /// Reads a float tensor back to the host as f32 (waits for queued work); f16 and bf16
    /// values widen exactly.
    ///
    /// # Errors
    /// [`Error::DType`] for an i32 tensor; map failures and wgpu errors.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        match t.dtype {
            DType::F16 => Ok(self
                .download_values::<half::f16>(t)?
                .iter()
                .map(|v| v.to_f32())
                .collect()),
            DType::BF16 => Ok(self
                .download_values::<half::bf16>(t)?
                .iter()
                .map(|v| v.to_f32())
                .collect()),
            _ => self.download_values::<f32>(t),
        }
    }

    /// Reads a tensor of element type `T` back to the host.
    ///
    /// # Errors
    /// [`Error::DType`] when the tensor is not of type `T`; as [`Engine::download`].
    pub fn download_values<T: Element>(&self, t: &Tensor) -> Result<Vec<T>> {
        t.expect_dtype("tensor", T::DTYPE)?;
        let mut bytes = self.read_bytes(&t.buffer, t.offset, t.word_bytes())?;
        bytes.truncate(t.bytes() as usize);
        Ok(bytemuck::pod_collect_to_vec(&bytes))
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
