//! Where a NaN input goes: every loss, on every backend, with NaN placed in one element of
//! each float input (four random problems each), must fail or succeed as the f64 reference
//! does and, when it succeeds, put non-finite values in exactly the loss and gradient
//! elements where the reference puts them.
//!
//! The same with +∞ and −∞ placed, comparing where non-finite values appear (not whether
//! each is NaN or ±∞), the gradient left out for the losses in `INFINITE_LOSS_ONLY`.
//!
//! Not under this contract (named in the README): a NaN supcon embedding when some anchor
//! has no positive (the reference skips such anchors; the backends multiply their zero
//! coefficient by the NaN row, which spreads NaN to the rows it meets).

#[macro_use]
mod common;

use common::fresh_rng;
use wgpu_losses::registry::{Evaluated, HostData};

/// How a value is classified: finite, NaN, +∞, −∞.
fn kind(v: f64) -> u8 {
    match v {
        v if v.is_nan() => 1,
        v if v == f64::INFINITY => 2,
        v if v == f64::NEG_INFINITY => 3,
        _ => 0,
    }
}

fn kinds<T: Copy + Into<f64>>(v: &[T]) -> Vec<u8> {
    v.iter().map(|&x| kind(x.into())).collect()
}

/// The elements (output, index, kind) where `e` is not finite.
fn pattern<T: Copy + Into<f64>>(e: &Evaluated<T>) -> Vec<(String, usize, u8)> {
    let mut out = Vec::new();
    let mut add = |name: &str, v: &[T]| {
        for (i, k) in kinds(v).into_iter().enumerate() {
            if k != 0 {
                out.push((name.to_string(), i, k));
            }
        }
    };
    add("loss", &e.loss);
    for (name, g, _) in &e.grads {
        add(&format!("grad_{name}"), g);
    }
    out
}

/// Runs every loss on `backend` with `values[j]` placed in one random element of each float
/// input (one problem per value) and compares with the reference: both fail, or both succeed
/// with the same `pattern` of non-finite outputs (`compare` picks the parts compared, by
/// loss). Gives the mismatches and the number of cases tried.
fn placed(
    backend: common::Backend,
    values: &[f32],
    skip: impl Fn(&str, &str) -> bool,
    compare: impl Fn(&str, Vec<(String, usize, u8)>) -> Vec<(String, usize, u8)>,
) -> (Vec<String>, usize) {
    let mut rng = fresh_rng(&format!("{values:?} {backend:?}"));
    let mut failures = Vec::new();
    let mut tried = 0;
    for def in wgpu_losses::losses::all() {
        for spec in def.inputs() {
            if skip(def.name(), spec.name) {
                continue;
            }
            for &value in values {
                let mut case = def.random_case(&mut rng);
                let Some(a) = case.inputs.get_mut(spec.name) else {
                    continue;
                };
                let HostData::F32(v) = &mut a.data else {
                    continue; // integer labels cannot hold NaN or ∞
                };
                if v.is_empty() {
                    continue;
                }
                let at = rng.below(v.len());
                v[at] = value;
                tried += 1;
                let want = def.reference(&case);
                let got = backend.run(*def, &case);
                let what = format!(
                    "{} {}[{at}] = {value} {:?}",
                    def.name(),
                    spec.name,
                    case.options
                );
                match (&want, &got) {
                    (Ok(w), Ok(g)) => {
                        let (pw, pg) = (
                            compare(def.name(), pattern(w)),
                            compare(def.name(), pattern(g)),
                        );
                        if pw != pg {
                            let show = |p: &[(String, usize, u8)]| {
                                format!("{} non-finite {:?}", p.len(), &p[..p.len().min(4)])
                            };
                            failures.push(format!(
                                "{what}: reference {}, backend {}",
                                show(&pw),
                                show(&pg)
                            ));
                        }
                    }
                    (Err(_), Err(_)) => {}
                    _ => failures.push(format!(
                        "{what}: reference {:?}, backend {:?}",
                        want.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
                        got.as_ref().map(|_| "ok").map_err(|e| e.to_string())
                    )),
                }
            }
        }
    }
    (failures, tried)
}

on_every_backend! {
    fn nan_inputs_go_where_the_reference_puts_them(backend) {
        let (failures, tried) = placed(
            backend,
            &[f32::NAN; 4],
            |loss, input| (loss, input) == ("supcon", "embeddings"),
            |_, p| p,
        );
        assert!(tried > 100, "{tried} cases");
        assert!(failures.is_empty(), "{} of {tried}:\n{}", failures.len(), failures.join("\n"));
    }
}

/// Losses whose gradient's non-finite elements under a ±∞ input are not compared, only
/// their loss's: a +∞ inside a softmax over a row or list (the backends' max-shifted
/// normalizers make the whole row NaN; PyTorch's `logsumexp`, and the reference, only the
/// +∞ element), mining, whose decisions among infinite distances differ, and supcon, whose
/// anchors without a positive spread a non-finite row differently (as with NaN above).
const INFINITE_LOSS_ONLY: [&str; 5] = [
    "distill-kl",
    "listnet",
    "listmle",
    "triplet-mined",
    "supcon",
];

on_every_backend! {
    /// +∞ and −∞ in one element of each float input: the non-finite outputs appear in the
    /// same elements as the reference's (NaN and ±∞ may differ: an f32 overflow against
    /// f64, or ∞ − ∞ formed in another order); for INFINITE_LOSS_ONLY, in the loss.
    fn infinite_inputs_go_where_the_reference_puts_them(backend) {
        let (failures, tried) = placed(
            backend,
            &[f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY, f32::NEG_INFINITY],
            |_, _| false,
            |loss, p| {
                p.into_iter()
                    .filter(|(output, _, _)| output == "loss" || !INFINITE_LOSS_ONLY.contains(&loss))
                    .map(|(output, i, _)| (output, i, 1))
                    .collect()
            },
        );
        assert!(tried > 100, "{tried} cases");
        assert!(failures.is_empty(), "{} of {tried}:\n{}", failures.len(), failures.join("\n"));
    }
}

on_every_backend! {
    /// Softmax focal with γ = 0 and a −∞ target logit: the loss is +∞ and the gradient the
    /// finite cross-entropy one, as the reference has it. The backends multiplied γ = 0 by
    /// p·log p = 0·(−∞) and wrote a NaN row (found by the contract test above, on one seed).
    /// With γ = 2 that product is NaN in the reference too, and so the row.
    fn focal_gamma_0_with_a_minus_infinite_target_logit(backend) {
        use wgpu_losses::registry::{Case, HostArray};
        let def = wgpu_losses::losses::find("softmax-focal").unwrap();
        let logits = vec![0.5, f32::NEG_INFINITY, -1.0, 2.0, 0.25, 1.0];
        for gamma in [0.0, 2.0] {
            let case = Case::default()
                .with("logits", HostArray::f32(&[2, 3], logits.clone()))
                .with("target", HostArray::i64(&[2], vec![1, 2]))
                .set("gamma", gamma)
                .set("reduction", "none");
            let want = def.reference(&case).unwrap();
            let got = backend.run(def, &case).unwrap();
            common::assert_evaluated(&format!("gamma {gamma}"), &got, &want, Default::default());
            let row = &got.grads[0].1[..3];
            assert_eq!(row.iter().all(|g| g.is_finite()), gamma == 0.0, "{gamma}: {row:?}");
        }
    }
}

on_every_backend! {
    /// Batch-all mining with an infinite embedding in a row of its own class: it is every
    /// other anchor's negative at distance ∞, in no triplet, so the loss stays finite as in
    /// the reference. The CPU backend's sum Σ c·D_an took it with c = 0, and 0·∞ made the loss
    /// NaN (found by the contract test above, on one seed).
    fn mining_past_an_infinite_negative(backend) {
        use wgpu_losses::registry::{Case, HostArray};
        let def = wgpu_losses::losses::find("triplet-mined").unwrap();
        let mut rng = fresh_rng("mining_past_an_infinite_negative");
        let mut e = rng.normals(12 * 3, 1.0);
        e[3 * 5 + 1] = f32::INFINITY;
        let labels = vec![0, 1, 0, 1, 0, 9, 1, 0, 1, 0, 1, 0];
        for mining in ["batch-all", "semi-hard", "batch-hard"] {
            let case = Case::default()
                .with("embeddings", HostArray::f32(&[12, 3], e.clone()))
                .with("labels", HostArray::i64(&[12], labels.clone()))
                .set("mining", mining);
            let want = def.reference(&case).unwrap();
            let got = backend.run(def, &case).unwrap();
            assert!(want.loss[0].is_finite(), "{mining}: {:?}", want.loss);
            // The loss only, as INFINITE_LOSS_ONLY has it for mining: the GPU's gradient
            // tiles multiply the pair's zero weight by the infinite difference.
            common::assert_close(mining, &got.loss, &want.loss, Default::default());
        }
    }
}
