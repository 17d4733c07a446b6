//! Where a NaN input goes: every loss, on every backend, with NaN placed in one element of
//! each float input (four random problems each), must fail or succeed as the f64 reference
//! does and, when it succeeds, put non-finite values in exactly the loss and gradient
//! elements where the reference puts them.
//!
//! Not yet under this contract (named in the README): ±∞ inputs, whose NaN-or-∞ outcome
//! differs between backends in cross-entropy weights, bce-with-logits, sigmoid focal, kl-div
//! targets and mining; and a NaN supcon embedding when some anchor has no positive (the
//! reference skips such anchors; the backends multiply their zero coefficient by the NaN
//! row, which spreads NaN to the rows it meets).

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

on_every_backend! {
    fn nan_inputs_go_where_the_reference_puts_them(backend) {
        let mut rng = fresh_rng(&format!("nan {backend:?}"));
        let mut failures = Vec::new();
        let mut tried = 0;
        for def in wgpu_losses::losses::all() {
            for spec in def.inputs() {
                if (def.name(), spec.name) == ("supcon", "embeddings") {
                    continue;
                }
                for value in [f32::NAN; 4] {
                    let mut case = def.random_case(&mut rng);
                    let Some(a) = case.inputs.get_mut(spec.name) else {
                        continue;
                    };
                    let HostData::F32(v) = &mut a.data else {
                        continue; // integer labels cannot hold NaN
                    };
                    if v.is_empty() {
                        continue;
                    }
                    let at = rng.below(v.len());
                    v[at] = value;
                    tried += 1;
                    let want = def.reference(&case);
                    let got = backend.run(*def, &case);
                    let what = format!("{} {}[{at}] = NaN", def.name(), spec.name);
                    match (&want, &got) {
                        (Ok(w), Ok(g)) => {
                            let (pw, pg) = (pattern(w), pattern(g));
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
        assert!(tried > 100, "{tried} cases");
        assert!(failures.is_empty(), "{} of {tried}:\n{}", failures.len(), failures.join("\n"));
    }
}
