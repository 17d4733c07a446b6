//! f64 fused linear cross-entropy: the logits in full, the cross-entropy reference on them,
//! and the chain rule through the matrix product, in plain loops.

use super::LinearCrossEntropy;
use crate::core::reference::RefOutput;
use crate::error::Result;
use crate::losses::cross_entropy::reference::{cross_entropy, RefTarget};
use crate::CrossEntropy;

/// The inputs of the reference, widened to f64.
#[derive(Debug, Clone, Copy)]
pub struct RefLinearInputs<'a> {
    /// `[N, H]`.
    pub hidden: &'a [f64],
    /// `[V, H]`.
    pub classifier: &'a [f64],
    /// `[V]`.
    pub bias: Option<&'a [f64]>,
    /// (N, H, V).
    pub shape: (usize, usize, usize),
    /// Class indices `[N]`.
    pub target: &'a [i64],
    /// Per-class weight `[V]`.
    pub weight: Option<&'a [f64]>,
    /// One value (a scalar upstream gradient) or one per row (reduction none).
    pub upstream: &'a [f64],
}

/// Loss and gradients (`hidden`, `classifier`, then `bias` when given) per docs/LOSSES.md.
/// `grad_terms` is the largest sum of term magnitudes behind any gradient element.
///
/// # Errors
/// As the cross-entropy reference.
pub fn linear_cross_entropy(
    opts: &LinearCrossEntropy,
    x: &RefLinearInputs<'_>,
) -> Result<RefOutput> {
    opts.validate()?;
    let (n, h, v) = x.shape;
    let (hid, w) = (x.hidden, x.classifier);
    let mut logits = vec![0.0; n * v];
    for i in 0..n {
        for j in 0..v {
            let dot: f64 = (0..h).map(|k| hid[i * h + k] * w[j * h + k]).sum();
            logits[i * v + j] = dot + x.bias.map_or(0.0, |b| b[j]);
        }
    }
    let ce = CrossEntropy {
        reduction: opts.reduction,
        gradient: true,
        ..opts.row_kernel()
    };
    let out = cross_entropy(
        &ce,
        &logits,
        (n, v),
        RefTarget::Classes(x.target),
        x.weight,
        x.upstream,
    )?;
    let g = &out.grads[0].1; // d loss / d logits
    let mut grad_hidden = vec![0.0; n * h];
    let mut grad_classifier = vec![0.0; v * h];
    let mut grad_bias = vec![0.0; v];
    let (mut terms_hidden, mut terms_classifier) = (vec![0.0f64; n * h], vec![0.0f64; v * h]);
    let mut terms_bias = vec![0.0f64; v];
    for i in 0..n {
        for j in 0..v {
            let gij = g[i * v + j];
            grad_bias[j] += gij;
            terms_bias[j] += gij.abs();
            for k in 0..h {
                grad_hidden[i * h + k] += gij * w[j * h + k];
                terms_hidden[i * h + k] += (gij * w[j * h + k]).abs();
                grad_classifier[j * h + k] += gij * hid[i * h + k];
                terms_classifier[j * h + k] += (gij * hid[i * h + k]).abs();
            }
        }
    }
    let largest = |t: &[f64]| t.iter().fold(0.0f64, |m, &a| m.max(a));
    let grad_terms = out
        .grad_terms
        .max(largest(&terms_hidden))
        .max(largest(&terms_classifier))
        .max(if x.bias.is_some() {
            largest(&terms_bias)
        } else {
            0.0
        });
    let mut grads = vec![("hidden", grad_hidden), ("classifier", grad_classifier)];
    if x.bias.is_some() {
        grads.push(("bias", grad_bias));
    }
    Ok(RefOutput {
        loss: out.loss,
        grads: if opts.gradient { grads } else { Vec::new() },
        grad_terms,
        loss_terms: out.loss_terms,
        decision_gap: f64::INFINITY,
    })
}
