//! Fuzzing what `eval` takes from outside: `.npy` files with arbitrary headers, shapes,
//! dtypes and lengths, and every loss with nonsense option strings and mangled input shapes.
//! Nothing may panic; what the reader accepts must be consistent with the file. Fresh inputs
//! every run (seed printed; `WGPU_LOSSES_SEED` replays).

#[macro_use]
mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use common::{engine, fresh_rng};
use wgpu_losses::cli::npy;
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, HostArray, HostData, LossDef};

/// A temporary file, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

/// A `.npy` file: a plausible header more often than not, arbitrary bytes otherwise.
fn random_npy(rng: &mut Rng, i: usize) -> (TempFile, Vec<u8>) {
    let descr = *pick(
        rng,
        &[
            "<f4", "<f8", "<i4", "<i8", "|b1", "<f2", ">f4", "|u1", "<c8", "<U3", "", "<f4'",
        ],
    );
    let dims = [0u64, 1, 2, 3, 7, 1 << 31, 1 << 62, u64::MAX, 4_000_000_000];
    let rank = rng.below(4);
    let shape: Vec<String> = (0..rank).map(|_| pick(rng, &dims).to_string()).collect();
    let shape = match rank {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.join(", ")),
    };
    let order = *pick(rng, &["False", "True", "maybe"]);
    let mut dict = match rng.below(6) {
        0 => (0..rng.below(40))
            .map(|_| (32 + rng.below(95)) as u8 as char)
            .collect(),
        _ => format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}"),
    };
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    if rng.chance(0.05) {
        bytes[6] = rng.below(256) as u8; // an unknown version
    }
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    let data: Vec<u8> = (0..rng.below(80)).map(|_| rng.below(256) as u8).collect();
    bytes.extend_from_slice(&data);
    if rng.chance(0.05) {
        bytes.truncate(rng.below(bytes.len() + 1));
    }
    let path =
        std::env::temp_dir().join(format!("wgpu-losses-fuzz-{}-{i}.npy", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    (TempFile(path), bytes)
}

#[test]
fn the_npy_reader_never_panics_and_never_invents_data() {
    let mut rng = fresh_rng("npy_reader_fuzz");
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..2000 {
        let (file, bytes) = random_npy(&mut rng, i);
        let read = catch_unwind(|| npy::read(&file.0));
        let Ok(result) = read else {
            panic!(
                "npy::read panicked on {:?}",
                String::from_utf8_lossy(&bytes)
            );
        };
        match result {
            Ok(a) => {
                accepted += 1;
                let items: usize = a.shape.iter().product();
                let len = a.data.len();
                assert_eq!(len, items, "{:?}", String::from_utf8_lossy(&bytes));
                // Every element came from the file (booleans are the smallest, one byte).
                assert!(
                    items <= bytes.len(),
                    "{items} elements from {} bytes",
                    bytes.len()
                );
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().contains('\n'), "one line: {e}");
            }
        }
    }
    assert!(
        accepted > 50 && refused > 500,
        "{accepted} accepted, {refused} refused"
    );
}

/// Strings an option might be given on the command line.
const NASTY: &[&str] = &[
    "",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e40",
    "-1e-40",
    "3.5",
    "1e9",
    "18446744073709551616",
    "-9223372036854775809",
    "true",
    "none",
    "mean",
    "sum",
    "batchmean",
    "batch-all",
    "cosine",
    "🦀",
    "1,2",
    " 1",
    "0x10",
];

/// `case` with one option set to a nasty string, or one input's shape mangled.
fn mangle(rng: &mut Rng, def: &dyn LossDef, mut case: Case) -> Case {
    match rng.below(3) {
        0 | 1 => {
            let name = match rng.chance(0.9) && !def.options().is_empty() {
                true => pick(rng, def.options()).to_string(),
                false => "no_such_option".to_string(),
            };
            case.set(&name, pick(rng, NASTY))
        }
        _ => {
            let names: Vec<String> = case.inputs.keys().cloned().collect();
            if let Some(name) = names.get(rng.below(names.len().max(1))) {
                let a = case.inputs.get_mut(name).expect("listed");
                match rng.below(4) {
                    0 => a.shape.push(1),
                    1 => {
                        a.shape.pop();
                    }
                    2 => a.shape.iter_mut().for_each(|d| *d = 0),
                    _ => {
                        if let Some(d) = a.shape.first_mut() {
                            *d += 1;
                        }
                    }
                }
                // Keep the data consistent with the shape, as the .npy reader guarantees.
                let items: usize = a.shape.iter().product();
                *a = match &a.data {
                    HostData::F32(v) => {
                        HostArray::f32(&a.shape, v.iter().copied().cycle().take(items).collect())
                    }
                    HostData::I64(v) => {
                        HostArray::i64(&a.shape, v.iter().copied().cycle().take(items).collect())
                    }
                    other => panic!("the fuzzer makes no 16-bit arrays: {other:?}"),
                };
            }
            case
        }
    }
}

#[test]
fn nonsense_options_and_shapes_are_errors_not_panics_on_every_backend() {
    let mut rng = fresh_rng("options_fuzz");
    let e = engine();
    let mut runs = 0;
    for def in wgpu_losses::losses::all() {
        for k in 0..100 {
            let case = def.random_case(&mut rng);
            let case = mangle(&mut rng, *def, case);
            let what = format!("{} {:?} {:?}", def.name(), case.options, shapes(&case));
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _ = def.cpu(&case);
                let _ = def.reference(&case);
                // The GPU is the slow backend here: every fourth case.
                if k % 4 == 0 {
                    let _ = def.gpu(e, &case);
                }
            }));
            assert!(outcome.is_ok(), "panicked: {what}");
            runs += 1;
        }
    }
    assert!(runs >= 100 * 17);
}

fn shapes(case: &Case) -> Vec<(String, Vec<usize>)> {
    case.inputs
        .iter()
        .map(|(n, a)| (n.clone(), a.shape.clone()))
        .collect()
}
