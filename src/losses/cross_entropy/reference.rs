//! f64 softmax cross-entropy, the twin of `shaders/cross_entropy.wgsl`.

use super::{target_class, CrossEntropy, SoftmaxFocal};
use crate::core::reference::{reduce, row_output, RefOutput};
use crate::error::Result;

/// Target of the reference cross-entropy.
#[derive(Debug, Clone, Copy)]
pub enum RefTarget<'a> {
    /// Class indices `[N]`.
    Classes(&'a [i64]),
    /// Probabilities `[N, C]`.
    Probabilities(&'a [f64]),
}

/// Cross-entropy of `logits` `[n, c]` per docs/LOSSES.md. `upstream` holds one value (a scalar
/// upstream gradient) or one per row (reduction none).
///
/// # Errors
/// [`crate::Error::Value`] for a class index outside `[0, c)` that is not `ignore_index`; option
/// errors as [`CrossEntropy::validate`].
pub fn cross_entropy(
    opts: &CrossEntropy,
    logits: &[f64],
    (n, c): (usize, usize),
    target: RefTarget<'_>,
    weight: Option<&[f64]>,
    upstream: &[f64],
) -> Result<RefOutput> {
    opts.validate()?;
    let eps = opts.label_smoothing as f64;
    let z = opts.z_loss as f64;
    let cap = opts.softcap.map(|c| c as f64);
    let w = |k: usize| weight.map_or(1.0, |w| w[k]);
    let w_sum: f64 = (0..c).map(w).sum();

    let mut per_row = vec![0.0; n];
    let mut local = vec![0.0; n * c]; // d l_n / d x_nc
    let mut terms = vec![0.0; n * c]; // sum of the magnitudes of its terms
    let mut denom = 0.0;
    // Ignored rows: exact zero gradients, even when the scale is NaN (a NaN class weight in
    // the mean's denominator), as PyTorch's nll_loss backward leaves them.
    let mut dropped = vec![false; n];
    for i in 0..n {
        let row = &logits[i * c..(i + 1) * c];
        let x: Vec<f64> = row
            .iter()
            .map(|&v| cap.map_or(v, |cv| cv * (v / cv).tanh()))
            .collect();
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        // log p = (x − m) − log Σ exp(x − m): with the maximum subtracted first, two logits
        // tied at ±3e38 each get p = ½ (m + log 2 would round back to m).
        let log_sum = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let lse = m + log_sum;
        let logp: Vec<f64> = x.iter().map(|v| (v - m) - log_sum).collect();
        let p: Vec<f64> = logp.iter().map(|v| v.exp()).collect();
        let g = &mut local[i * c..(i + 1) * c];
        let mag = &mut terms[i * c..(i + 1) * c];
        match target {
            RefTarget::Classes(t) => {
                let Some(y) = target_class(t[i], i, c, opts.ignore_index)? else {
                    dropped[i] = true;
                    continue;
                };
                denom += w(y);
                // Without smoothing the term is absent, not 0·∞ (a −∞ logit elsewhere).
                let smooth: f64 = if eps > 0.0 {
                    eps / c as f64 * (0..c).map(|k| -w(k) * logp[k]).sum::<f64>()
                } else {
                    0.0
                };
                per_row[i] = (1.0 - eps) * (-w(y) * logp[y]) + smooth;
                for k in 0..c {
                    let hit = if k == y { 1.0 } else { 0.0 };
                    g[k] = (1.0 - eps) * w(y) * (p[k] - hit);
                    mag[k] = (1.0 - eps) * w(y) * (p[k] + hit);
                    // As in the loss, the smoothing terms exist only with smoothing (another
                    // class's NaN weight must not reach this row through 0·NaN).
                    if eps > 0.0 {
                        g[k] += eps / c as f64 * (p[k] * w_sum - w(k));
                        mag[k] += eps / c as f64 * (w_sum * p[k] + w(k));
                    }
                }
            }
            RefTarget::Probabilities(t) => {
                denom += 1.0;
                let tp: Vec<f64> = (0..c)
                    .map(|k| (1.0 - eps) * t[i * c + k] + eps / c as f64)
                    .collect();
                per_row[i] = (0..c).map(|k| -w(k) * tp[k] * logp[k]).sum();
                let a: f64 = (0..c).map(|k| w(k) * tp[k]).sum();
                for k in 0..c {
                    g[k] = a * p[k] - w(k) * tp[k];
                    mag[k] = (a * p[k]).abs() + (w(k) * tp[k]).abs();
                }
            }
        }
        per_row[i] += z * lse * lse;
        for k in 0..c {
            g[k] += 2.0 * z * lse * p[k];
            mag[k] += (2.0 * z * lse * p[k]).abs();
            if let Some(cv) = cap {
                let d = (row[k] / cv).cosh().powi(-2); // d/dx c·tanh(x/c)
                g[k] *= d;
                mag[k] *= d;
            }
        }
    }
    let (loss, scale) = reduce(&per_row, opts.reduction, denom, upstream);
    let scale = |i: usize| if dropped[i] { 0.0 } else { scale(i) };
    Ok(row_output(loss, (&local, &terms), c, scale, opts.gradient))
}

/// `−α_y (1 − p_y)^γ log p_y` per row of `logits` `[n, c]`; ignored rows give 0 and the mean
/// divides by the number of kept rows. `upstream`: one value, or one per row.
///
/// # Errors
/// [`crate::Error::Value`] for a class outside `[0, c)` that is not `ignore_index`; option errors.
pub fn softmax_focal(
    opts: &SoftmaxFocal,
    logits: &[f64],
    (n, c): (usize, usize),
    target: &[i64],
    alpha: Option<&[f64]>,
    upstream: &[f64],
) -> Result<RefOutput> {
    opts.validate()?;
    let gamma = opts.gamma as f64;
    let mut per_row = vec![0.0; n];
    let mut local = vec![0.0; n * c];
    let mut terms = vec![0.0; n * c];
    let mut kept = 0.0;
    let mut dropped = vec![false; n];
    for i in 0..n {
        let Some(y) = target_class(target[i], i, c, opts.ignore_index)? else {
            dropped[i] = true;
            continue;
        };
        kept += 1.0;
        let x = &logits[i * c..(i + 1) * c];
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let log_p = x[y] - lse;
        let p = log_p.exp();
        let q = -log_p.exp_m1(); // 1 - p
        let a = alpha.map_or(1.0, |a| a[y]);
        per_row[i] = -a * q.powf(gamma) * log_p;
        // d/dx_c of -a q^γ log p, with dp/dx_c = p (δ - p_c) and d log p/dx_c = δ - p_c:
        // a [q^γ - γ q^(γ-1) p log p] (p_c - δ).
        let f = if gamma == 0.0 {
            a
        } else if q == 0.0 {
            a * q.powf(gamma) // the bracket's second term vanishes with q^γ as well
        } else {
            a * (q.powf(gamma) - gamma * q.powf(gamma - 1.0) * p * log_p)
        };
        for k in 0..c {
            let pk = (x[k] - lse).exp();
            let hit = if k == y { 1.0 } else { 0.0 };
            local[i * c + k] = f * (pk - hit);
            terms[i * c + k] = f.abs() * (pk + hit);
        }
    }
    let (loss, scale) = reduce(&per_row, opts.reduction, kept, upstream);
    let scale = |i: usize| if dropped[i] { 0.0 } else { scale(i) };
    Ok(row_output(loss, (&local, &terms), c, scale, opts.gradient))
}
