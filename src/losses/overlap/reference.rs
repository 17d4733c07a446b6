//! f64 Dice and Tversky from their definitions: the activation, the one-hot target, each
//! group's sums and ratio, and the gradient by the quotient rule through the activation.

use super::{Activation, Args, Overlap, OverlapKind};
use crate::core::reference::{reduce, RefOutput};
use crate::core::{Arg, DType};
use crate::error::{Error, Result};

/// The target of the reference.
#[derive(Debug, Clone, Copy)]
pub enum RefOverlapTarget<'a> {
    /// One-hot (or soft) values of the input's shape.
    OneHot(&'a [f64]),
    /// Class indices `[N, spatial…]`.
    Indices(&'a [i64]),
}

/// The host inputs of the reference.
#[derive(Debug, Clone, Copy)]
pub struct RefOverlapInputs<'a> {
    /// Input `[N, C, spatial…]`.
    pub input: &'a [f64],
    /// Its shape.
    pub shape: &'a [usize],
    /// The target.
    pub target: RefOverlapTarget<'a>,
    /// The per-class weights (C values).
    pub weight: Option<&'a [f32]>,
    /// One value (a scalar upstream gradient) or one per ratio (reduction none).
    pub upstream: &'a [f64],
}

/// The loss of docs/LOSSES.md and its gradient with respect to the input.
///
/// # Errors
/// As [`Overlap::record`](crate::Overlap::record); [`Error::Value`] naming the item of the
/// first class index outside `[0, C)`.
pub fn overlap(opts: &Overlap, x: RefOverlapInputs<'_>) -> Result<RefOutput> {
    let (n, c) = (x.shape[0], x.shape[1]);
    let target_shape = match x.target {
        RefOverlapTarget::OneHot(_) => x.shape.to_vec(),
        RefOverlapTarget::Indices(_) => [&[n][..], &x.shape[2..]].concat(),
    };
    let per_item = x.upstream.len() != 1;
    let layout = opts.check(&Args {
        input: Arg::f32(x.shape),
        target: Arg {
            shape: &target_shape,
            dtype: match x.target {
                RefOverlapTarget::OneHot(_) => DType::F32,
                RefOverlapTarget::Indices(_) => DType::I32,
            },
        },
        weight: x.weight,
        scalar_upstream: (!per_item).then(|| x.upstream[0] as f32),
        per_item_upstream: None,
    })?;
    if per_item {
        opts.check_flat_upstream(&layout, x.upstream.len())?;
    }
    let s = layout.s;
    let at = |i: usize, k: usize, p: usize| (i * c + k) * s + p;
    // Predictions after the activation.
    let mut p = vec![0.0; n * c * s];
    for i in 0..n {
        for q in 0..s {
            let m = (0..c)
                .map(|k| x.input[at(i, k, q)])
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..c).map(|k| (x.input[at(i, k, q)] - m).exp()).sum();
            for k in 0..c {
                let v = x.input[at(i, k, q)];
                p[at(i, k, q)] = match opts.activation {
                    Activation::None => v,
                    Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Activation::Softmax => (v - m).exp() / z,
                };
            }
        }
    }
    // One-hot targets.
    let mut g = vec![0.0; n * c * s];
    match x.target {
        RefOverlapTarget::OneHot(t) => g.copy_from_slice(t),
        RefOverlapTarget::Indices(t) => {
            for i in 0..n {
                for q in 0..s {
                    let label = t[i * s + q];
                    if label < 0 || label >= c as i64 {
                        return Err(Error::Value {
                            input: "target",
                            row: i,
                            value: label.to_string(),
                            reason: super::index_reason(c),
                        });
                    }
                    g[at(i, label as usize, q)] = 1.0;
                }
            }
        }
    }
    let groups = layout.groups();
    let squared = super::squared(opts.kind);
    let (nr, dr) = (opts.smooth_nr as f64, opts.smooth_dr as f64);
    // Each group's intersection, prediction and target sums, and Tversky's false positives
    // and false negatives.
    let mut sums = vec![[0.0f64; 5]; groups];
    for i in 0..n {
        for k in 0..layout.kept() {
            let sum = &mut sums[layout.group(i, k)];
            for q in 0..s {
                let (pv, gv) = (p[at(i, k + layout.first, q)], g[at(i, k + layout.first, q)]);
                let (po, go) = if squared {
                    (pv * pv, gv * gv)
                } else {
                    (pv, gv)
                };
                sum[0] += pv * gv;
                sum[1] += po;
                sum[2] += go;
                sum[3] += pv * (1.0 - gv);
                sum[4] += (1.0 - pv) * gv;
            }
        }
    }
    let weight = |k: usize| x.weight.map_or(1.0, |w| w[k + layout.first] as f64);
    let mut losses = vec![0.0; groups];
    // d loss_group / d num and / d den.
    let mut slopes = vec![(0.0, 0.0); groups];
    for (grp, sum) in sums.iter().enumerate() {
        let [inter, pred, target, fp, fn_] = *sum;
        let (num, den) = match opts.kind {
            OverlapKind::Dice { jaccard: false, .. } => (2.0 * inter + nr, pred + target + dr),
            OverlapKind::Dice { jaccard: true, .. } => {
                (2.0 * inter + nr, 2.0 * (pred + target - inter) + dr)
            }
            OverlapKind::Tversky { alpha, beta } => (
                inter + nr,
                inter + alpha as f64 * fp + beta as f64 * fn_ + dr,
            ),
        };
        let w = weight(grp % layout.kept());
        losses[grp] = w * (1.0 - num / den);
        slopes[grp] = (-w / den, w * num / (den * den));
    }
    let (loss, scale) = reduce(&losses, opts.reduction, groups as f64, x.upstream);
    // d loss / d p for the kept channels, then through the activation.
    let mut dp = vec![0.0; n * c * s];
    let mut grad_terms = 0.0f64;
    for i in 0..n {
        for k in 0..layout.kept() {
            let grp = layout.group(i, k);
            let (a, b) = slopes[grp];
            let sc = scale(grp);
            for q in 0..s {
                let e = at(i, k + layout.first, q);
                let (dnum, dden) = super::part_slopes(opts, p[e], g[e]);
                dp[e] = sc * (a * dnum + b * dden);
                grad_terms = grad_terms.max((sc * a * dnum).abs().max((sc * b * dden).abs()));
            }
        }
    }
    let mut grad = vec![0.0; n * c * s];
    for i in 0..n {
        for q in 0..s {
            let dot: f64 = (0..c).map(|k| p[at(i, k, q)] * dp[at(i, k, q)]).sum();
            for k in 0..c {
                let e = at(i, k, q);
                grad[e] = match opts.activation {
                    Activation::None => dp[e],
                    Activation::Sigmoid => dp[e] * p[e] * (1.0 - p[e]),
                    Activation::Softmax => p[e] * (dp[e] - dot),
                };
            }
        }
    }
    Ok(RefOutput {
        loss,
        grads: match opts.gradient {
            true => vec![("input", grad)],
            false => Vec::new(),
        },
        grad_terms,
        // A ratio near 1 leaves 1 − ratio with f32 rounding absolute at the scale of 1.
        loss_terms: x
            .weight
            .map_or(1.0, |w| w.iter().fold(0.0f32, |m, v| m.max(*v)) as f64),
        decision_gap: f64::INFINITY,
    })
}
