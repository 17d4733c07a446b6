//! Shared test helpers. GPU tests fail loudly when no adapter exists: they never skip.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{Case, Evaluated, LossDef};
use wgpu_losses::{compare, Engine, Tolerance};

/// The shared engine on the best adapter. Panics with instructions when there is none.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(own_engine)
}

/// An engine of the calling test's own, for counting what one call does (the shared
/// engine's counters see every test running in parallel).
pub fn own_engine() -> Engine {
    Engine::new().unwrap_or_else(|e| {
        panic!(
            "GPU tests need a wgpu adapter and found none ({e}). \
             On a machine without a GPU: apt-get install -y mesa-vulkan-drivers"
        )
    })
}

/// A generator with a fresh seed, printed so a failure can be replayed.
pub fn fresh_rng(test: &str) -> Rng {
    let seed = std::env::var("WGPU_LOSSES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Rng::from_time().next_u64());
    eprintln!("{test}: seed {seed} (set WGPU_LOSSES_SEED to replay)");
    Rng::new(seed)
}

/// Asserts that `got` is within `tol` of `want`, naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let c = compare(got, want, tol);
    if let Some((i, g, w)) = c.first_bad {
        panic!(
            "{what}: index {i}: got {g}, want {w} (max abs err {:.3e}, rel to max {:.3e}, tol {tol:?})",
            c.max_abs, c.max_rel
        );
    }
}

/// Asserts GPU and reference agree on loss and every gradient (f32 gradients).
pub fn assert_evaluated(what: &str, gpu: &Evaluated<f32>, want: &Evaluated<f64>, tol: Tolerance) {
    assert_written(what, gpu, want, tol, &Case::default());
}

/// As [`assert_evaluated`], each gradient held to `tol` plus its rounding to the type
/// `case` has it written in (f16, bf16: ½ ulp, the rule of docs/LOSSES.md).
pub fn assert_written(
    what: &str,
    gpu: &Evaluated<f32>,
    want: &Evaluated<f64>,
    tol: Tolerance,
    case: &Case,
) {
    assert_eq!(gpu.loss_shape, want.loss_shape, "{what}: loss shape");
    assert_close(
        &format!("{what}: loss"),
        &gpu.loss,
        &want.loss,
        want.loss_tolerance(tol),
    );
    assert_eq!(gpu.grads.len(), want.grads.len(), "{what}: gradient count");
    for ((name, g, s), (wname, w, ws)) in gpu.grads.iter().zip(&want.grads) {
        assert_eq!((name, s), (wname, ws), "{what}: gradient name/shape");
        assert_close(
            &format!("{what}: grad {name} ({})", case.grad_dtype(name).name()),
            g,
            w,
            want.grad_tolerance(tol).written_as(case.grad_dtype(name)),
        );
    }
    // Per-row statistics the reference reports (the ranking losses' NDCG).
    for (name, w) in &want.rows {
        let g = gpu
            .rows
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{what}: no rows {name}"));
        assert_close(&format!("{what}: rows {name}"), &g.1, w, tol);
    }
}

/// A backend the registry runs a loss on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The best wgpu adapter (lavapipe on the CI machine).
    Gpu,
    /// The multi-threaded CPU backend.
    Cpu,
}

impl Backend {
    /// Runs `def` on `case` on this backend.
    pub fn run(self, def: &dyn LossDef, case: &Case) -> wgpu_losses::Result<Evaluated<f32>> {
        match self {
            Backend::Gpu => def.gpu(engine(), case),
            Backend::Cpu => def.cpu(case),
        }
    }
}

/// One test body run on every backend, in the spirit of candle's `test_device!`:
/// `on_every_backend!(fn name(backend) { … })` emits the tests `name::gpu` and `name::cpu`.
#[macro_export]
macro_rules! on_every_backend {
    ($(#[$meta:meta])* fn $name:ident($backend:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($backend: $crate::common::Backend) $body

            #[test]
            fn gpu() {
                body($crate::common::Backend::Gpu)
            }

            #[test]
            fn cpu() {
                body($crate::common::Backend::Cpu)
            }
        }
    };
}

/// Runs `case` on `backend` and the reference and asserts they agree; returns false (and
/// checks nothing) when the case is ambiguous in f32 (`Evaluated::ambiguous`: a mining
/// decision within rounding of its boundary).
pub fn check_on(backend: Backend, def: &dyn LossDef, case: &Case, tol: Tolerance) -> bool {
    check_with(&format!("{backend:?}"), def, case, tol, || {
        backend.run(def, case)
    })
}

/// [`check_on`] the GPU of `engine` (an engine of its own: capped bindings, say).
pub fn check_case(def: &dyn LossDef, engine: &Engine, case: &Case, tol: Tolerance) -> bool {
    check_with("gpu", def, case, tol, || def.gpu(engine, case))
}

fn check_with(
    backend: &str,
    def: &dyn LossDef,
    case: &Case,
    tol: Tolerance,
    run: impl FnOnce() -> wgpu_losses::Result<Evaluated<f32>>,
) -> bool {
    let want = def
        .reference(case)
        .unwrap_or_else(|e| panic!("reference failed on {:?}: {e}", case.options));
    if want.ambiguous() {
        eprintln!(
            "{}: case within f32 rounding of a decision boundary; not compared",
            def.name()
        );
        return false;
    }
    let got = run().unwrap_or_else(|e| panic!("{backend} failed on {:?}: {e}", case.options));
    assert_written(
        &format!("{backend} {} {:?}", def.name(), case.options),
        &got,
        &want,
        tol,
        case,
    );
    true
}
