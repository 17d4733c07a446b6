//! Dice and Tversky on the CPU, the twin of `overlap.wgsl`: items in parallel, each group's
//! sums in f64 in position order (then item order with `batch`).

use rayon::prelude::*;

use super::{index_reason, part_slopes, ratio_parts, squared, Activation, Args, Layout, Overlap};
use crate::core::{written_as, Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};

/// The target of [`overlap`].
#[derive(Debug, Clone, Copy)]
pub enum HostOverlapTarget<'a> {
    /// One-hot (or soft) values of the input's shape.
    OneHot(&'a [f32]),
    /// Class indices `[N, spatial…]`.
    Indices(&'a [i32]),
}

/// Host inputs of [`overlap`]; the fields mirror [`crate::OverlapInputs`]. The input may be
/// f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostOverlapInputs<'a, T: Element = f32> {
    /// Input `[N, C, spatial…]`, row-major.
    pub input: &'a [T],
    /// Its shape.
    pub shape: &'a [usize],
    /// The target.
    pub target: HostOverlapTarget<'a>,
    /// Per-class weights (C values).
    pub weight: Option<&'a [f32]>,
    /// Gradient from above: a scalar, or one per ratio with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// Item `i`'s predictions `[C, S]` after the activation, in f64.
fn predictions<T: Element>(opts: &Overlap, x: &[T], c: usize, s: usize) -> Vec<f64> {
    let mut p: Vec<f64> = x.iter().map(|v| v.to_f32() as f64).collect();
    match opts.activation {
        Activation::None => {}
        Activation::Sigmoid => p.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        Activation::Softmax => {
            for q in 0..s {
                let m = (0..c)
                    .map(|k| p[k * s + q])
                    .fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = (0..c).map(|k| (p[k * s + q] - m).exp()).sum();
                for k in 0..c {
                    p[k * s + q] = (p[k * s + q] - m).exp() / z;
                }
            }
        }
    }
    p
}

/// Item `i`'s target value at channel `k`, position `q`.
fn target_at(target: &HostOverlapTarget<'_>, l: &Layout, i: usize, k: usize, q: usize) -> f64 {
    match target {
        HostOverlapTarget::OneHot(t) => t[(i * l.c + k) * l.s + q] as f64,
        HostOverlapTarget::Indices(t) => (t[i * l.s + q] == k as i32) as u8 as f64,
    }
}

/// Dice or Tversky on the CPU; the gradient is written in the input's type unless
/// `grad_dtype` says otherwise.
///
/// # Errors
/// As [`crate::Overlap::record`], and [`Error::Value`] naming the item of the first class
/// index outside `[0, C)`.
pub fn overlap<T: Element>(opts: &Overlap, x: &HostOverlapInputs<'_, T>) -> Result<LossValues> {
    let (scalar_upstream, per_item) = x.upstream.split(|g| [g.len()]);
    let indices_shape = [
        &x.shape[..1.min(x.shape.len())],
        x.shape.get(2..).unwrap_or(&[]),
    ]
    .concat();
    let (target_shape, target_dtype, target_len) = match x.target {
        HostOverlapTarget::OneHot(t) => (x.shape.to_vec(), DType::F32, t.len()),
        HostOverlapTarget::Indices(t) => (indices_shape, DType::I32, t.len()),
    };
    let layout = opts.check(&Args {
        input: Arg {
            shape: x.shape,
            dtype: T::DTYPE,
        },
        target: Arg {
            shape: &target_shape,
            dtype: target_dtype,
        },
        weight: x.weight,
        scalar_upstream,
        per_item_upstream: None,
    })?;
    let (n, c, s) = (layout.n, layout.c, layout.s);
    let expected = n * c * s;
    if x.input.len() != expected {
        return Err(Error::shape(
            "input",
            format!("{:?}", x.shape),
            &[x.input.len()],
        ));
    }
    if target_len != target_shape.iter().product::<usize>() {
        return Err(Error::shape(
            "target",
            format!("{target_shape:?}"),
            &[target_len],
        ));
    }
    let groups = layout.groups();
    if let Some([len]) = per_item {
        opts.check_flat_upstream(&layout, len)?;
    }
    if let HostOverlapTarget::Indices(t) = x.target {
        if let Some(at) = t.iter().position(|&v| v < 0 || v as usize >= c) {
            return Err(Error::Value {
                input: "target",
                row: at / s,
                value: t[at].to_string(),
                reason: index_reason(c),
            });
        }
    }
    let sq = squared(opts.kind);
    // Per item, each kept channel's (I, P, G).
    let item_sums: Vec<Vec<(f64, f64, f64)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let p = predictions(opts, &x.input[i * c * s..(i + 1) * c * s], c, s);
            (layout.first..c)
                .map(|k| {
                    (0..s).fold((0.0, 0.0, 0.0), |(si, sp, sg), q| {
                        let (pv, gv) = (p[k * s + q], target_at(&x.target, &layout, i, k, q));
                        let (po, go) = if sq { (pv * pv, gv * gv) } else { (pv, gv) };
                        (si + pv * gv, sp + po, sg + go)
                    })
                })
                .collect()
        })
        .collect();
    let mut sums = vec![(0.0, 0.0, 0.0); groups];
    for (i, item) in item_sums.iter().enumerate() {
        for (k, v) in item.iter().enumerate() {
            let sum = &mut sums[layout.group(i, k)];
            *sum = (sum.0 + v.0, sum.1 + v.1, sum.2 + v.2);
        }
    }
    let weight = |k: usize| x.weight.map_or(1.0, |w| w[k + layout.first] as f64);
    let denom = match opts.reduction {
        Reduction::Mean => groups as f64,
        _ => 1.0,
    };
    let upstream = x.upstream.values();
    let up = |grp: usize| *upstream.get(grp).or(upstream.first()).unwrap_or(&1.0) as f64;
    // Per group: its weighted loss, and d loss / d num and / d den scaled for the reduction.
    let per_group: Vec<(f64, f64, f64)> = sums
        .iter()
        .enumerate()
        .map(|(grp, &sum)| {
            let (num, den) = ratio_parts(opts, sum);
            let w = weight(grp % layout.kept());
            let scale = w * up(grp) / denom;
            (
                w * (1.0 - num / den),
                -scale / den,
                scale * num / (den * den),
            )
        })
        .collect();
    let loss = match opts.reduction {
        Reduction::None => per_group.iter().map(|g| g.0 as f32).collect(),
        _ => vec![(per_group.iter().map(|g| g.0).sum::<f64>() / denom) as f32],
    };
    let mut grads = Vec::new();
    if opts.gradient {
        let mut grad = vec![0.0f32; n * c * s];
        grad.par_chunks_mut(c * s).enumerate().for_each(|(i, out)| {
            let p = predictions(opts, &x.input[i * c * s..(i + 1) * c * s], c, s);
            let mut dp = vec![0.0f64; c * s];
            for k in layout.first..c {
                let (_, a, b) = per_group[layout.group(i, k - layout.first)];
                for q in 0..s {
                    let e = k * s + q;
                    let (dnum, dden) =
                        part_slopes(opts, p[e], target_at(&x.target, &layout, i, k, q));
                    dp[e] = a * dnum + b * dden;
                }
            }
            for q in 0..s {
                let dot: f64 = (0..c).map(|k| p[k * s + q] * dp[k * s + q]).sum();
                for k in 0..c {
                    let e = k * s + q;
                    out[e] = match opts.activation {
                        Activation::None => dp[e],
                        Activation::Sigmoid => dp[e] * p[e] * (1.0 - p[e]),
                        Activation::Softmax => p[e] * (dp[e] - dot),
                    } as f32;
                }
            }
        });
        grads.push(("input", grad));
    }
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        opts.grad_dtype.unwrap_or(T::DTYPE),
    ))
}
