//! PyTorch float64 results (tests/fixtures/make_cross_entropy.py) against the reference, and
//! against `wgpu-losses eval` on both backends, end to end through .npy files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::assert_close;
use wgpu_losses::registry::{self, Case, HostData};
use wgpu_losses::{npy, Tolerance};

/// The reference is f64 like PyTorch: it must agree to near f64 rounding.
const REFERENCE_TOL: Tolerance = Tolerance {
    rtol: 1e-9,
    atol: 1e-9,
    floor: 1e-12,
};

fn fixtures(loss_dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(loss_dir);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures under {}", root.display());
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

const EXPECTED: [&str; 2] = ["loss.npy", "grad_logits.npy"];

fn inputs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .filter(|p| !EXPECTED.contains(&p.file_name().unwrap().to_str().unwrap()))
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

fn floats32(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a = npy::read(path).unwrap();
    match a.data {
        HostData::F32(v) => (v, a.shape),
        HostData::I64(_) => panic!("{}: expected floats", path.display()),
    }
}

#[test]
fn reference_matches_pytorch() {
    let def = registry::find("cross-entropy").unwrap();
    for dir in fixtures("cross_entropy") {
        let mut case = Case::default();
        for (name, path) in inputs(&dir) {
            case.inputs.insert(name, npy::read(&path).unwrap());
        }
        for (k, v) in options(&dir) {
            case.options.insert(k, v);
        }
        let got = def.reference(&case).unwrap();
        let (loss, loss_shape) = floats64(&dir.join("loss.npy"));
        let (grad, _) = floats64(&dir.join("grad_logits.npy"));
        assert_eq!(got.loss_shape, loss_shape, "{}", dir.display());
        let as32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        // Compare in f64 by checking the f32-rounded reference against PyTorch at f32
        // resolution, and the raw f64 values tightly.
        let c = wgpu_losses::compare(&as32(&got.loss), &loss, Tolerance::default());
        assert!(c.ok(), "{}: loss {c:?}", dir.display());
        for (g, w) in got.loss.iter().zip(&loss) {
            assert!(
                (g - w).abs() <= REFERENCE_TOL.atol * w.abs().max(1.0),
                "{}: loss {g} vs {w}",
                dir.display()
            );
        }
        let scale = grad.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.grads[0].1.iter().zip(&grad).enumerate() {
            assert!(
                (g - w).abs() <= REFERENCE_TOL.atol * scale + REFERENCE_TOL.rtol * w.abs(),
                "{}: grad[{i}] {g} vs {w}",
                dir.display()
            );
        }
    }
}

#[test]
fn eval_command_matches_pytorch_on_both_backends() {
    for backend in ["gpu", "reference"] {
        for dir in fixtures("cross_entropy") {
            let out = std::env::temp_dir().join(format!(
                "wgpu-losses-eval-{}-{backend}-{}",
                std::process::id(),
                dir.file_name().unwrap().to_str().unwrap()
            ));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgpu-losses"));
            cmd.args(["eval", "cross-entropy", "--backend", backend, "--out"])
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
            for file in EXPECTED {
                let (got, got_shape) = floats32(&out.join(file));
                let (want, want_shape) = floats64(&dir.join(file));
                assert_eq!(got_shape, want_shape, "{} {backend} {file}", dir.display());
                assert_close(
                    &format!("{} {backend} {file}", dir.display()),
                    &got,
                    &want,
                    Tolerance::default(),
                );
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
}

#[test]
fn eval_rejects_bad_input_with_one_line_and_nonzero_exit() {
    let dir = &fixtures("cross_entropy")[0];
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
    ] {
        let (ok, err) = run(&args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
