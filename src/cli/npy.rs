//! `.npy` files for `eval`, through the npyz crate: floats and integers in, f32 (or f16)
//! out.

use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result};
use crate::registry::{HostArray, HostData};

/// An I/O error on one line (the header parser's own messages draw multi-line diagrams).
fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Reads an array: f32/f64 become floats (f32), f16 stays f16, int32/int64 (and bool/uint)
/// become integers.
///
/// # Errors
/// [`Error::Io`] for unreadable files, Fortran order, or element types other than these.
pub fn read(path: &Path) -> Result<HostArray> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| io_err(path, e))?;
    if npy.order() == npyz::Order::Fortran && npy.shape().len() > 1 {
        return Err(io_err(
            path,
            "Fortran-order arrays are not supported (use np.ascontiguousarray)",
        ));
    }
    let npyz::DType::Plain(ts) = npy.dtype() else {
        return Err(io_err(path, "structured arrays are not supported"));
    };
    // The header's shape is checked against the file before anything is allocated for it.
    let needed = npy
        .shape()
        .iter()
        .try_fold(ts.size_field(), |n, &d| n.checked_mul(d))
        .filter(|&n| n <= bytes.len() as u64)
        .ok_or_else(|| {
            io_err(
                path,
                format!(
                    "the header's shape {:?} of {ts} needs more data than the file's {} bytes",
                    npy.shape(),
                    bytes.len()
                ),
            )
        })?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    use npyz::TypeChar::{Bool, Float, Int, Uint};
    let fail = |e: std::io::Error| {
        io_err(
            path,
            format!(
                "{e}: the header's shape {shape:?} of {ts} needs {needed} bytes of data, \
                 the file holds {} bytes in all",
                bytes.len()
            ),
        )
    };
    let array = match (ts.type_char(), ts.size_field()) {
        (Float, 2) => HostArray {
            shape: shape.clone(),
            data: HostData::F16(npy.into_vec::<half::f16>().map_err(fail)?),
        },
        (Float, 4) => HostArray::f32(&shape, npy.into_vec::<f32>().map_err(fail)?),
        (Float, 8) => {
            let v = npy.into_vec::<f64>().map_err(fail)?;
            HostArray::f32(&shape, v.into_iter().map(|x| x as f32).collect())
        }
        (Int, 4) => {
            let v = npy.into_vec::<i32>().map_err(fail)?;
            HostArray::i64(&shape, v.into_iter().map(i64::from).collect())
        }
        (Int, 8) => HostArray::i64(&shape, npy.into_vec::<i64>().map_err(fail)?),
        (Uint, 1) => {
            let v = npy.into_vec::<u8>().map_err(fail)?;
            HostArray::i64(&shape, v.into_iter().map(i64::from).collect())
        }
        (Bool, 1) => {
            let v = npy.into_vec::<bool>().map_err(fail)?;
            HostArray::i64(&shape, v.into_iter().map(i64::from).collect())
        }
        _ => {
            return Err(io_err(
                path,
                format!("dtype {ts} is not supported (use float16/32/64 or int32/64)"),
            ))
        }
    };
    Ok(array)
}

/// Writes an f32 array of `shape` (`[]` for a scalar).
///
/// # Errors
/// [`Error::Io`].
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, shape, data)
}

/// Writes an f16 array of `shape`: `data` rounded to f16 (exact for values a kernel wrote
/// as f16).
///
/// # Errors
/// [`Error::Io`].
pub fn write_f16(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
    write(path, shape, &halves)
}

fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(|e| io_err(path, e))?;
    w.extend(data.iter().copied())
        .map_err(|e| io_err(path, e))?;
    w.finish().map_err(|e| io_err(path, e))
}
