//! What the f64 references share: their output and the reduction. Each loss family's
//! `reference.rs` holds plain loops written to be obviously right, used to prove the other
//! backends; gradients are derived by hand and checked against finite differences in the tests.

use crate::core::Reduction;

/// Loss (one value for mean/sum, per item for none) and gradients, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct RefOutput {
    /// As [`crate::LossValues::loss`].
    pub loss: Vec<f64>,
    /// Gradient of each differentiable input, by name.
    pub grads: Vec<(&'static str, Vec<f64>)>,
    /// Largest magnitude of the terms summed into any gradient element. f32 cancellation
    /// between such terms (p·coef against the target term, say) is absolute at this scale,
    /// so comparisons measure gradient error against it, not against the result's size.
    pub grad_terms: f64,
    /// Largest magnitude of the terms whose difference forms a per-item loss (cosine
    /// embedding's `1 − cos`): f32 cancellation makes its error absolute at this scale; 0 where
    /// no loss is formed so.
    pub loss_terms: f64,
    /// Smallest distance of a discrete decision the loss makes (mining, a hinge's gradient,
    /// swap) from its boundary, relative to the largest distance (at least 1); infinite
    /// where it makes none. f32 results may legitimately
    /// decide otherwise within about f32 rounding of the boundary.
    pub decision_gap: f64,
}

/// log Σ e^v as PyTorch's `logsumexp`: shifted by the largest value unless that is infinite,
/// so that a +∞ gives +∞ (not ∞ − ∞) and only the +∞ element's softmax weight, e^(v − lse),
/// is NaN; all −∞ gives −∞; a NaN gives NaN.
pub(crate) fn log_sum_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    let shift = if m.is_infinite() { 0.0 } else { m };
    shift + v.map(|a| (a - shift).exp()).sum::<f64>().ln()
}

/// Applies the reduction to per-item losses `l` with mean denominator `denom` (0 when the
/// denominator is zero, docs/LOSSES.md's deliberate deviation), and gives the factor by which
/// item `i`'s local gradient is scaled: upstream / denominator.
pub(crate) fn reduce<'u>(
    l: &[f64],
    reduction: Reduction,
    denom: f64,
    upstream: &'u [f64],
) -> (Vec<f64>, impl Fn(usize) -> f64 + 'u) {
    let d = match reduction {
        Reduction::Mean | Reduction::BatchMean => denom,
        _ => 1.0,
    };
    let loss = match reduction {
        Reduction::None => l.to_vec(),
        _ => {
            let s: f64 = l.iter().sum();
            vec![if d == 0.0 { 0.0 } else { s / d }]
        }
    };
    let scale = move |i: usize| {
        let u = if upstream.len() == 1 {
            upstream[0]
        } else {
            upstream[i]
        };
        if d == 0.0 {
            0.0
        } else {
            u / d
        }
    };
    (loss, scale)
}

/// The scale of the terms whose f32 difference forms the reduced loss, from each item's
/// (`terms`, non-negative): the largest for `none`, reduced as the loss otherwise. A
/// [`RefOutput::loss_terms`] for losses formed by cancellation (a margin minus a distance).
pub(crate) fn reduced_terms(terms: &[f64], reduction: Reduction, denom: f64) -> f64 {
    reduce(terms, reduction, denom, &[1.0])
        .0
        .into_iter()
        .fold(0.0, f64::max)
}

/// The output of a row loss: `local` (d l_row / d x, rows of `c`) and `terms` (the magnitudes
/// summed into each element) scaled by their row's factor, with exact zeros where the factor
/// is 0 (dropped rows, whatever their logits hold); `loss_terms` 1 (see there).
pub(crate) fn row_output(
    loss: Vec<f64>,
    (local, terms): (&[f64], &[f64]),
    c: usize,
    scale: impl Fn(usize) -> f64,
    gradient: bool,
) -> RefOutput {
    let grad = local
        .iter()
        .enumerate()
        .map(|(j, g)| match scale(j / c) {
            0.0 => 0.0,
            s => g * s,
        })
        .collect();
    let grad_terms = terms
        .iter()
        .enumerate()
        .fold(0.0f64, |m, (j, t)| m.max((t * scale(j / c)).abs()));
    RefOutput {
        loss,
        grads: if gradient {
            vec![("logits", grad)]
        } else {
            Vec::new()
        },
        grad_terms,
        // A row's loss carries log Σ e^(x − max) ≥ 0, whose f32 error is absolute at the
        // scale of its terms (1): a nearly certain row's loss of 1e-5 is known to ~1e-7.
        loss_terms: 1.0,
        decision_gap: f64::INFINITY,
    }
}
