//! f64 NLLLoss, the twin of `nll.wgsl`.

use super::Nll;
use crate::core::reference::{reduce, RefOutput};
use crate::error::Result;
use crate::losses::cross_entropy::target_class;

/// NLLLoss of log-probabilities `input` `[n, c]` per docs/LOSSES.md: `−w_y·x[y]` per row,
/// `mean` over `Σ w_y`. `upstream` holds one value (a scalar upstream gradient) or one per
/// row (reduction none).
///
/// # Errors
/// [`crate::Error::Value`] for a class index outside `[0, c)` that is not `ignore_index`;
/// option errors as [`Nll::validate`].
pub fn nll(
    opts: &Nll,
    input: &[f64],
    (n, c): (usize, usize),
    target: &[i64],
    weight: Option<&[f64]>,
    upstream: &[f64],
) -> Result<RefOutput> {
    opts.validate()?;
    let w = |k: usize| weight.map_or(1.0, |w| w[k]);
    let mut losses = vec![0.0; n];
    let mut classes = vec![None; n];
    let mut denom = 0.0;
    for row in 0..n {
        if let Some(k) = target_class(target[row], row, c, opts.ignore_index)? {
            losses[row] = -w(k) * input[row * c + k];
            denom += w(k);
            classes[row] = Some(k);
        }
    }
    let (loss, scale) = reduce(&losses, opts.reduction, denom, upstream);
    let mut grad = vec![0.0; n * c];
    let mut terms = 0.0f64;
    for (row, k) in classes.iter().enumerate() {
        if let Some(k) = *k {
            grad[row * c + k] = -w(k) * scale(row);
            terms = terms.max(grad[row * c + k].abs());
        }
    }
    Ok(RefOutput {
        loss,
        grads: if opts.gradient {
            vec![("input", grad)]
        } else {
            Vec::new()
        },
        grad_terms: terms,
        loss_terms: 0.0,
        decision_gap: f64::INFINITY,
    })
}
