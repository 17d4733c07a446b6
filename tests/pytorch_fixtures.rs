//! PyTorch float64 results (tests/fixtures/make_fixtures.py) for every loss against the
//! reference, and against `wgpu-losses eval` on both backends, end to end through .npy files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::assert_close;
use wgpu_losses::cli::npy;
use wgpu_losses::registry::{Case, HostData};
use wgpu_losses::{DType, Tolerance};

/// The reference is f64 like PyTorch: it must agree to near f64 rounding.
const REFERENCE_TOL: Tolerance = Tolerance {
    rtol: 1e-9,
    atol: 1e-9,
    floor: 1e-12,
    written_as: DType::F32,
};

/// Every fixture case, as (loss name, case directory).
fn fixtures() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases = Vec::new();
    for loss in sorted_dirs(&root) {
        let name = loss.file_name().unwrap().to_str().unwrap().to_string();
        wgpu_losses::losses::find(&name).unwrap_or_else(|e| panic!("fixture folder {name}: {e}"));
        for case in sorted_dirs(&loss) {
            cases.push((name.clone(), case));
        }
    }
    assert!(
        cases.len() >= 40,
        "fixtures missing under {}",
        root.display()
    );
    cases
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn options(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("options.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Per-row statistics a fixture may expect beside the loss (the ranking losses' NDCG@k).
const ROWS: &[&str] = &["ndcg"];

fn is_expected(file: &str) -> bool {
    file == "loss.npy"
        || file.starts_with("grad_")
        || ROWS.iter().any(|r| file == format!("{r}.npy"))
}

/// The expected outputs of a case: loss.npy, each grad_NAME.npy and any per-row statistics.
fn expected(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .filter(|f| is_expected(f))
        .collect();
    v.sort();
    v
}

fn inputs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .filter(|p| !is_expected(p.file_name().unwrap().to_str().unwrap()))
        .map(|p| (p.file_stem().unwrap().to_str().unwrap().to_string(), p))
        .collect();
    v.sort();
    v
}

fn floats64(path: &Path) -> (Vec<f64>, Vec<usize>) {
    // Expected values were written in float64; read them without loss.
    let bytes = std::fs::read(path).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (f.into_vec::<f64>().unwrap(), shape)
}

/// An output of `eval`: f32, or f16 (a gradient written as f16) widened.
fn floats32(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a = npy::read(path).unwrap();
    match a.data {
        HostData::F32(_) | HostData::F16(_) => (a.data.to_f32(), a.shape),
        _ => panic!("{}: expected floats", path.display()),
    }
}

/// A fixture case as the registry sees it, its `dtype` option applied.
fn case_of(loss: &str, dir: &Path) -> Case {
    let mut case = Case::default();
    for (name, path) in inputs(dir) {
        case.inputs.insert(name, npy::read(&path).unwrap());
    }
    for (k, v) in options(dir) {
        case.options.insert(k, v);
    }
    case.apply_dtype(wgpu_losses::losses::find(loss).unwrap())
        .unwrap()
}

#[test]
fn reference_matches_pytorch() {
    for (loss, dir) in fixtures() {
        let def = wgpu_losses::losses::find(&loss).unwrap();
        let got = def.reference(&case_of(&loss, &dir)).unwrap();
        let (loss_want, loss_shape) = floats64(&dir.join("loss.npy"));
        assert_eq!(got.loss_shape, loss_shape, "{}", dir.display());
        assert_tight(&format!("{} loss", dir.display()), &got.loss, &loss_want);
        let files = expected(&dir);
        assert_eq!(
            files.len(),
            1 + got.grads.len() + got.rows.len(),
            "{}: gradients and row statistics",
            dir.display()
        );
        for (name, g, _) in &got.grads {
            let (want, _) = floats64(&dir.join(format!("grad_{name}.npy")));
            assert_tight(&format!("{} grad_{name}", dir.display()), g, &want);
        }
        for (name, r) in &got.rows {
            let (want, _) = floats64(&dir.join(format!("{name}.npy")));
            assert_tight(&format!("{} {name}", dir.display()), r, &want);
        }
    }
}

/// f64 against f64: agreement to 1e-9 of the array's scale.
fn assert_tight(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= REFERENCE_TOL.atol * scale + REFERENCE_TOL.rtol * w.abs(),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn eval_command_matches_pytorch_on_every_backend() {
    for backend in ["gpu", "cpu", "reference"] {
        for (loss, dir) in fixtures() {
            let out = std::env::temp_dir().join(format!(
                "wgpu-losses-eval-{}-{backend}-{loss}-{}",
                std::process::id(),
                dir.file_name().unwrap().to_str().unwrap()
            ));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgpu-losses"));
            cmd.args(["eval", &loss, "--backend", backend, "--out"])
                .arg(&out);
            for (name, path) in inputs(&dir) {
                cmd.arg("--in").arg(format!("{name}={}", path.display()));
            }
            for (k, v) in options(&dir) {
                cmd.arg("--set").arg(format!("{k}={v}"));
            }
            let status = cmd.output().unwrap();
            assert!(
                status.status.success(),
                "{} {backend}: {}",
                dir.display(),
                String::from_utf8_lossy(&status.stderr)
            );
            let case = case_of(&loss, &dir);
            for file in expected(&dir) {
                let (got, got_shape) = floats32(&out.join(&file));
                let (want, want_shape) = floats64(&dir.join(&file));
                assert_eq!(got_shape, want_shape, "{} {backend} {file}", dir.display());
                // A gradient is held to its rounding to the type it was written in (16-bit
                // inputs on the GPU and CPU backends; the reference writes f64 values).
                let written = match file.strip_prefix("grad_") {
                    Some(g) if backend != "reference" => {
                        case.grad_dtype(g.trim_end_matches(".npy"))
                    }
                    _ => DType::F32,
                };
                assert_close(
                    &format!("{} {backend} {file}", dir.display()),
                    &got,
                    &want,
                    Tolerance::default().written_as(written),
                );
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
}

#[test]
fn eval_rejects_bad_input_with_one_line_and_nonzero_exit() {
    let dir = &fixtures()
        .into_iter()
        .find(|(loss, _)| loss == "cross-entropy")
        .unwrap()
        .1;
    let logits = dir.join("logits.npy");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_wgpu-losses"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let out = std::env::temp_dir().join(format!("wgpu-losses-bad-{}", std::process::id()));
    let out = out.to_str().unwrap();
    let l = format!("logits={}", logits.display());
    for (args, needle) in [
        (
            vec!["eval", "cross-entropy", "--in", &l, "--out", out],
            "target",
        ),
        (
            vec!["eval", "no-such-loss", "--in", &l, "--out", out],
            "unknown loss",
        ),
        (
            vec![
                "eval",
                "cross-entropy",
                "--in",
                &l,
                "--in",
                &l.replace("logits=", "target="),
                "--set",
                "label_smoothing=2",
                "--out",
                out,
            ],
            "label_smoothing",
        ),
        (
            vec![
                "eval",
                "cross-entropy",
                "--in",
                "logits=/nonexistent.npy",
                "--out",
                out,
            ],
            "nonexistent",
        ),
        (
            vec![
                "eval",
                "cross-entropy",
                "--in",
                &l,
                "--set",
                "bogus=1",
                "--out",
                out,
            ],
            "bogus",
        ),
        // The same input or option twice is an error, not the last one silently.
        (
            vec![
                "eval",
                "cross-entropy",
                "--in",
                &l,
                "--in",
                &l,
                "--out",
                out,
            ],
            "given twice",
        ),
        (
            vec![
                "eval",
                "cross-entropy",
                "--in",
                &l,
                "--set",
                "z_loss=0",
                "--set",
                "z_loss=1",
                "--out",
                out,
            ],
            "given twice",
        ),
        // check names an unknown loss instead of checking nothing.
        (
            vec!["check", "--loss", "nope", "--cases", "1"],
            "unknown loss",
        ),
    ] {
        let (ok, err) = run(&args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
