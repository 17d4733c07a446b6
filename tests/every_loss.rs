//! The registry-wide suites: every loss of `wgpu_losses::losses::all()` — no hand-kept
//! count, so a new loss is covered the moment it is listed — on every backend against the
//! f64 reference. Inputs are fresh on every run (seed printed; `WGPU_LOSSES_SEED` replays).

#[macro_use]
mod common;

use common::{check_case, check_on, fresh_rng, Backend};
use wgpu_losses::registry::HostArray;
use wgpu_losses::{DType, Engine, EngineOptions, Error, Tolerance};

/// Random problems per loss: the GPU (lavapipe in CI) is the slower backend.
fn cases(backend: Backend) -> usize {
    match backend {
        Backend::Gpu => 10,
        Backend::Cpu => 14,
    }
}

on_every_backend! {
    /// Each loss's random problems (every option, ragged shapes) against the reference.
    fn every_loss_matches_the_reference(backend) {
        let mut rng = fresh_rng(&format!("every_loss_matches_the_reference {backend:?}"));
        let all = wgpu_losses::losses::all();
        assert!(all.len() >= 18, "{} losses listed", all.len());
        for def in all {
            let mut compared = 0;
            for _ in 0..cases(backend) {
                let case = def.random_case(&mut rng);
                compared += check_on(backend, *def, &case, Tolerance::default()) as usize;
            }
            assert!(compared > 0, "{}: every case was ambiguous", def.name());
        }
    }
}

on_every_backend! {
    /// One element, one row (two for nt-xent's two views) and the ragged sizes that
    /// `random_case` draws.
    fn every_loss_on_one_element_and_ragged_sizes(backend) {
        let mut rng = fresh_rng(&format!("one element {backend:?}"));
        for def in wgpu_losses::losses::all() {
            for _ in 0..4 {
                let mut case = def.random_case(&mut rng);
                // CTC's inputs are frame-major ([T, N, C]); its random cases draw T = 1
                // and N = 1 themselves.
                if rng.chance(0.5) && def.name() != "ctc" {
                    let keep = if def.name() == "nt-xent" { 2 } else { 1 };
                    for (name, a) in case.inputs.iter_mut() {
                        if name == "classifier" {
                            continue; // its rows are classes, not items
                        }
                        let per_row = a.shape.len() == 1
                            && matches!(name.as_str(), "target" | "labels" | "y" | "var" | "lengths");
                        // Items lead every other input of rank 2 or more (dice's
                        // [N, C, spatial…] input and [N, spatial…] class indices).
                        let width = match a.shape.len() {
                            0 | 1 if !per_row => continue,
                            _ => a.shape[1..].iter().product::<usize>(),
                        };
                        a.shape[0] = keep;
                        a.data.truncate(keep * width);
                    }
                    case.inputs.remove("grad_output");
                }
                check_on(backend, *def, &case, Tolerance::default());
            }
        }
    }
}

on_every_backend! {
    /// The same inputs give the same bits, run after run.
    fn every_loss_gives_identical_bits_on_repeated_runs(backend) {
        let mut rng = fresh_rng(&format!("determinism {backend:?}"));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        for def in wgpu_losses::losses::all() {
            let case = def.random_case(&mut rng);
            let first = backend.run(*def, &case).unwrap();
            for _ in 0..2 {
                let again = backend.run(*def, &case).unwrap();
                assert_eq!(bits(&first.loss), bits(&again.loss), "{}: loss", def.name());
                for ((name, g, _), (_, h, _)) in first.grads.iter().zip(&again.grads) {
                    assert!(bits(g) == bits(h), "{}: gradient {name} bits differ", def.name());
                }
            }
        }
    }
}

on_every_backend! {
    /// A second input one row short is the same error on this backend as on the reference,
    /// naming that input: the family's one set of rules decides for all of them.
    fn a_mismatched_input_is_the_same_error_everywhere(backend) {
        let mut rng = fresh_rng(&format!("mismatch {backend:?}"));
        for def in wgpu_losses::losses::all() {
            let first = def.inputs().iter().find(|s| s.differentiable).unwrap().name;
            let Some(other) = def
                .inputs()
                .iter()
                .find(|s| s.required && s.name != first)
                .map(|s| s.name)
            else {
                continue; // nt-xent: one input
            };
            let mut tried = false;
            for _ in 0..20 {
                let mut case = def.random_case(&mut rng);
                let a = case.inputs.get_mut(other).unwrap();
                if a.shape.first().is_none_or(|&rows| rows < 2) {
                    continue;
                }
                let keep = (a.shape[0] - 1) * a.shape[1..].iter().product::<usize>();
                a.shape[0] -= 1;
                a.data.truncate(keep);
                let want = def.reference(&case).unwrap_err();
                let got = backend.run(*def, &case).unwrap_err();
                assert_eq!(got, want, "{}", def.name());
                assert!(got.to_string().contains(other), "{}: {got}", def.name());
                tried = true;
                break;
            }
            assert!(tried, "{}: no case with two rows", def.name());
        }
    }
}

on_every_backend! {
    /// A non-finite `grad_output` is one error on every backend and the reference, for every
    /// loss (the CPU and reference paths, and every path of the metric losses, used to return
    /// NaN gradients instead).
    fn a_non_finite_grad_output_is_an_error_everywhere(backend) {
        let mut rng = fresh_rng(&format!("grad_output {backend:?}"));
        for def in wgpu_losses::losses::all() {
            for g in [f32::NAN, f32::INFINITY] {
                let case = def
                    .random_case(&mut rng)
                    .with("grad_output", HostArray::f32(&[], vec![g]));
                for r in [
                    backend.run(*def, &case).map(|_| ()),
                    def.reference(&case).map(|_| ()),
                ] {
                    assert!(
                        matches!(r, Err(Error::Option { option: "grad_output", .. })),
                        "{} with grad_output {g}: {r:?}",
                        def.name()
                    );
                }
            }
        }
    }
}

/// Every loss with its storage bindings capped at 16 KiB, so that the random problems'
/// inputs, outputs and workspaces span many bindings (windows, split rows, partial sums):
/// each either matches the reference or, where a kernel needs a whole input in one binding
/// (the all-pairs losses), refuses with `Error::Limit` — never a wrong answer. In f32, f16
/// and bf16 (16-bit rows and words split across windows too).
#[test]
fn every_loss_across_many_small_bindings() {
    let engine = Engine::with_options(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    })
    .unwrap();
    let mut rng = fresh_rng("every_loss_across_many_small_bindings");
    for (def, dtype) in wgpu_losses::losses::all()
        .iter()
        .flat_map(|d| [DType::F32, DType::F16, DType::BF16].map(|t| (d, t)))
    {
        let (mut compared, mut refused) = (0, 0);
        for _ in 0..6 {
            let case = def.random_case(&mut rng).set("dtype", dtype.name());
            let case = case.apply_dtype(*def).unwrap();
            match def.gpu(&engine, &case) {
                Err(Error::Limit(_)) => refused += 1,
                _ => compared += check_case(*def, &engine, &case, Tolerance::default()) as usize,
            }
        }
        eprintln!(
            "{} {dtype:?}: {compared} compared, {refused} refused",
            def.name()
        );
        assert!(compared + refused > 0, "{}", def.name());
    }
}
