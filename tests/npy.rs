//! The `.npy` reader at its edges, on files written byte by byte: a header whose shape
//! overflows or exceeds the file, a truncated file, booleans. No GPU.

use std::path::{Path, PathBuf};

use wgpu_losses::cli::npy;
use wgpu_losses::registry::HostData;
use wgpu_losses::Error;

/// A temporary file, removed when dropped.
struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A version 1.0 `.npy` file with `header` (the dict) followed by `data`.
fn file(name: &str, header: &str, data: &[u8]) -> TempFile {
    let mut dict = header.to_string();
    // Magic (6) + version (2) + length (2) + dict + '\n' is a multiple of 64.
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes.extend_from_slice(data);
    let path =
        std::env::temp_dir().join(format!("wgpu-losses-npy-{}-{name}.npy", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    TempFile(path)
}

fn io_message(r: Result<wgpu_losses::registry::HostArray, Error>) -> String {
    match r {
        Err(Error::Io { message, .. }) => message,
        other => panic!("expected an Io error, got {other:?}"),
    }
}

/// Shapes whose size overflows, or exceeds the file, are refused before any allocation (one
/// used to panic with capacity overflow, another ran to 16.8 GB before failing).
#[test]
fn a_header_shape_larger_than_the_file_is_an_error() {
    for shape in [
        "(4611686018427387904, 4)",
        "(4294967296, 4294967296)",
        "(1000000,)",
    ] {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let path = file("big", &header, &[0; 16]);
        let started = std::time::Instant::now();
        let message = io_message(npy::read(&path));
        assert!(message.contains("needs more data"), "{shape}: {message}");
        assert!(
            started.elapsed().as_secs() < 5,
            "{shape}: took {:?}",
            started.elapsed()
        );
    }
}

/// A file cut short says how many bytes the header asked for and how many there are.
#[test]
fn a_truncated_file_says_expected_and_actual_bytes() {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }";
    let path = file("short", header, &[0; 40]);
    let message = io_message(npy::read(&path));
    // 100 f4 values need 400 bytes; the whole file is 168.
    assert!(
        message.contains("needs more data") || message.contains("400"),
        "{message}"
    );
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (30,), }";
    let path = file("short2", header, &[0; 40]);
    let message = io_message(npy::read(&path));
    assert!(message.contains("needs 120 bytes"), "{message}");
}

/// Boolean arrays are read as integers 0 and 1, as the reader documents.
#[test]
fn booleans_are_read_as_integers() {
    let header = "{'descr': '|b1', 'fortran_order': False, 'shape': (4,), }";
    let path = file("bool", header, &[1, 0, 0, 1]);
    let a = npy::read(&path).unwrap();
    assert_eq!(a.shape, [4]);
    assert_eq!(a.data, HostData::I64(vec![1, 0, 0, 1]));
}
