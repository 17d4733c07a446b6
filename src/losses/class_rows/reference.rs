//! f64 whole-row class-score losses, the twin of `class_rows.wgsl`.

use super::{class_index, class_list_len, ordinal_label, ClassRows, ClassRowsKind};
use crate::core::reference::{log_sum_exp, reduce, RefOutput};
use crate::error::Result;

/// The targets of the reference.
#[derive(Debug, Clone, Copy)]
pub enum RefClassTargets<'a> {
    /// Multi-margin's class indices `[N]`.
    Classes(&'a [i64]),
    /// A target per class `[N, C]`.
    PerClass(&'a [f64]),
    /// Multilabel margin's classes per row `[N, C]`, each list ended by the first −1.
    ClassLists(&'a [i64]),
}

/// The loss of `opts.kind` over scores `input` `[n, c]` per docs/LOSSES.md, with its
/// gradient. `labels` are JSD's row labels. `upstream` holds one value (a scalar upstream
/// gradient) or one per row (reduction none).
///
/// # Errors
/// [`crate::Error::Value`] for a multi-margin class outside `[0, c)`; option errors as
/// [`ClassRows::validate`].
pub fn class_rows(
    opts: &ClassRows,
    input: &[f64],
    (n, c): (usize, usize),
    target: RefClassTargets<'_>,
    weight: Option<&[f64]>,
    labels: Option<&[i64]>,
    upstream: &[f64],
) -> Result<RefOutput> {
    opts.validate()?;
    let w = |k: usize| weight.map_or(1.0, |w| w[k]);
    let mut losses = vec![0.0; n];
    // d l_row / d x, before the reduction's scale.
    let mut local = vec![0.0; n * c];
    // Multi-margin's nearest hinge to its kink, relative to the largest score.
    let (mut gap, mut size) = (f64::INFINITY, 1.0f64);
    // Distillation's row loss is τ²·(Σ p_t·(a − b) − lse_t + lse_s): f32 cancellation is
    // absolute at the scale of those log-sum-exps.
    let mut loss_terms = 0.0f64;
    // The mean's count: rows, or JSD's kept rows, or CORN's (task, row) terms.
    let mut count = 0.0;
    for row in 0..n {
        let x = &input[row * c..(row + 1) * c];
        let g = &mut local[row * c..(row + 1) * c];
        match (opts.kind, target) {
            (ClassRowsKind::Jsd { beta, ignore_index }, RefClassTargets::PerClass(t)) => {
                if labels.is_some_and(|l| l[row] == ignore_index as i64) {
                    continue;
                }
                count += 1.0;
                let (beta, t) = (beta as f64, &t[row * c..(row + 1) * c]);
                let mut terms = 0.0;
                for k in 0..c {
                    // KL(P‖Q) at β = 0, KL(Q‖P) at β = 1, else β·KL(P‖M) + (1 − β)·KL(Q‖M).
                    let (p, q) = (t[k].exp(), x[k].exp());
                    let kl = |a: f64, log_a: f64, log_b: f64| {
                        if a == 0.0 {
                            0.0
                        } else {
                            a * (log_a - log_b)
                        }
                    };
                    let (value, slope) = match beta {
                        0.0 => (kl(p, t[k], x[k]), -p),
                        1.0 => (kl(q, x[k], t[k]), kl(q, x[k], t[k]) + q),
                        _ => {
                            let log_m = (beta * p + (1.0 - beta) * q).ln();
                            let value =
                                beta * kl(p, t[k], log_m) + (1.0 - beta) * kl(q, x[k], log_m);
                            // q·log q → 0 as q → 0: a −∞ student log-probability
                            // has slope 0, not 0·(−∞).
                            let slope = match q {
                                0.0 => 0.0,
                                _ => (1.0 - beta) * q * (x[k] - log_m),
                            };
                            (value, slope)
                        }
                    };
                    losses[row] += value;
                    g[k] = slope;
                    terms += (p * t[k]).abs() + (q * x[k]).abs() + p + q;
                }
                loss_terms = loss_terms.max(terms);
            }
            (kind, RefClassTargets::Classes(y)) if kind.ordinal() => {
                // coral-pytorch: −Σ_k imp_k·[log σ(x_k)·level_k + (log σ(x_k) − x_k)·(1 − level_k)]
                // over the tasks the row trains (CORN: k ≤ label).
                let label = ordinal_label(y[row], row, c)?;
                let log_sig = |v: f64| if v < -30.0 { v } else { -(-v).exp().ln_1p() };
                for k in 0..c {
                    if kind == ClassRowsKind::Corn && k > label {
                        continue;
                    }
                    count += 1.0;
                    let level = if k < label { 1.0 } else { 0.0 };
                    losses[row] -=
                        w(k) * (log_sig(x[k]) * level + (log_sig(x[k]) - x[k]) * (1.0 - level));
                    g[k] = w(k) * (1.0 / (1.0 + (-x[k]).exp()) - level);
                }
            }
            (ClassRowsKind::MultiMargin { p, margin }, RefClassTargets::Classes(y)) => {
                let y = class_index(y[row], row, c)?;
                for k in (0..c).filter(|&k| k != y) {
                    let h = margin as f64 - x[y] + x[k];
                    gap = gap.min(h.abs());
                    size = size.max(x[k].abs()).max(x[y].abs());
                    // PyTorch's kernels add a term only where h > 0 (a NaN one is dropped).
                    if h > 0.0 {
                        let (term, slope) = if p == 2 { (h * h, 2.0 * h) } else { (h, 1.0) };
                        losses[row] += w(y) * term / c as f64;
                        g[k] += w(y) * slope / c as f64;
                        g[y] -= w(y) * slope / c as f64;
                    }
                }
            }
            (ClassRowsKind::DistillKl { temperature }, RefClassTargets::PerClass(t)) => {
                let tau = temperature as f64;
                let t = &t[row * c..(row + 1) * c];
                let (lse_t, lse_s) = (
                    log_sum_exp(t.iter().map(|v| v / tau)),
                    log_sum_exp(x.iter().map(|v| v / tau)),
                );
                loss_terms = loss_terms.max(tau * tau * (lse_t.abs() + lse_s.abs() + 1.0));
                for k in 0..c {
                    let (log_pt, log_ps) = (t[k] / tau - lse_t, x[k] / tau - lse_s);
                    losses[row] += tau * tau * log_pt.exp() * (log_pt - log_ps);
                    g[k] = tau * (log_ps.exp() - log_pt.exp());
                }
            }
            (ClassRowsKind::MultilabelMargin, RefClassTargets::ClassLists(t)) => {
                let list = &t[row * c..(row + 1) * c];
                let list = &list[..class_list_len(list, row, c)?];
                let mut listed = vec![false; c];
                list.iter().for_each(|&j| listed[j as usize] = true);
                // Every (listed entry, unlisted class) pair, straight from the definition.
                for &j in list {
                    for i in (0..c).filter(|&i| !listed[i]) {
                        let h = 1.0 - x[j as usize] + x[i];
                        gap = gap.min(h.abs());
                        size = size.max(x[i].abs()).max(x[j as usize].abs());
                        if h > 0.0 {
                            losses[row] += h / c as f64;
                            g[i] += 1.0 / c as f64;
                            g[j as usize] -= 1.0 / c as f64;
                        }
                    }
                }
            }
            (ClassRowsKind::MultilabelSoftMargin, RefClassTargets::PerClass(t)) => {
                let t = &t[row * c..(row + 1) * c];
                for k in 0..c {
                    // −[t·log σ(x) + (1 − t)·log σ(−x)], with log σ(x) = −log(1 + e^−x).
                    let log_sig = |v: f64| -(-v).exp().ln_1p();
                    let log_sig = |v: f64| if v < -30.0 { v } else { log_sig(v) };
                    losses[row] -=
                        w(k) * (t[k] * log_sig(x[k]) + (1.0 - t[k]) * log_sig(-x[k])) / c as f64;
                    g[k] = w(k) * (1.0 / (1.0 + (-x[k]).exp()) - t[k]) / c as f64;
                }
            }
            _ => unreachable!("the targets match the loss (checked by the callers)"),
        }
    }
    let denom = match opts.kind {
        ClassRowsKind::Jsd { .. } if labels.is_some() => count,
        ClassRowsKind::Corn => count,
        _ => n as f64,
    };
    let (loss, scale) = reduce(&losses, opts.reduction, denom, upstream);
    let mut grad_terms = 0.0f64;
    let grad = local
        .iter()
        .enumerate()
        .map(|(j, g)| {
            let s = scale(j / c);
            grad_terms = grad_terms.max((g * s).abs());
            g * s
        })
        .collect();
    Ok(RefOutput {
        loss,
        grads: if opts.gradient {
            vec![(opts.kind.input_name(), grad)]
        } else {
            Vec::new()
        },
        grad_terms,
        loss_terms,
        decision_gap: gap / size,
    })
}
