//! f64 softmax focal loss, the twin of the FOCAL path of `shaders/cross_entropy.wgsl`.

use crate::error::Result;
use crate::losses::softmax_focal::SoftmaxFocal;
use crate::reference::{reduce, row_output, target_class, RefOutput};

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
    for i in 0..n {
        let Some(y) = target_class(target[i], i, c, opts.ignore_index)? else {
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
    Ok(row_output(loss, (&local, &terms), c, scale, opts.gradient))
}
