//! Whole-row class-score losses on the CPU, the twin of `class_rows.wgsl`: rows in
//! parallel, each row's sums in f64.

use rayon::prelude::*;

use super::{class_index, class_list_len, ordinal_label, Args, ClassRows, ClassRowsKind};
use crate::core::{written_as, Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::Result;

/// The targets of [`HostClassRowsInputs`].
#[derive(Debug, Clone, Copy)]
pub enum HostClassTargets<'a> {
    /// Multi-margin's class indices `[N]`.
    Classes(&'a [i32]),
    /// A target per class `[N, C]` (multilabel soft margin, the teacher's logits).
    PerClass(&'a [f32]),
    /// Multilabel margin's classes per row `[N, C]`, each list ended by the first −1.
    ClassLists(&'a [i32]),
}

/// Host inputs of [`class_rows`]; the fields mirror [`crate::ClassRowsInputs`]. The scores
/// may be f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostClassRowsInputs<'a, T: Element = f32> {
    /// Class scores `[N, C]`, row-major.
    pub input: &'a [T],
    /// (N, C).
    pub shape: (usize, usize),
    /// The targets.
    pub target: HostClassTargets<'a>,
    /// Class weights `[C]` (CORAL's importance weights).
    pub weight: Option<&'a [f32]>,
    /// JSD's row labels `[N]`: rows equal to its `ignore_index` are dropped.
    pub labels: Option<&'a [i32]>,
    /// Gradient from above: a scalar, or one per row with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// softplus(−x) = log(1 + e^−x) and sigmoid(x), stable for either sign.
fn logistic(x: f64) -> (f64, f64) {
    let e = (-x.abs()).exp();
    let softplus_neg = e.ln_1p() + (-x).max(0.0);
    let p = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (softplus_neg, p)
}

/// The log-sum-exps of a teacher row `t/τ` and a student row `s/τ` (`student(k)`).
fn log_sum_exps(t: &[f32], student: impl Fn(usize) -> f64, tau: f64) -> (f64, f64) {
    let lse = |v: &dyn Fn(usize) -> f64| {
        let m = (0..t.len()).map(v).fold(f64::NEG_INFINITY, f64::max);
        m + (0..t.len()).map(|k| (v(k) - m).exp()).sum::<f64>().ln()
    };
    (lse(&|k| t[k] as f64 / tau), lse(&|k| student(k) / tau))
}

/// JSD's term and its derivative in the student's log-probability `x`, against the teacher's
/// `y` (as `class_rows.wgsl`'s `jsd`).
fn jsd(x: f64, y: f64, beta: f64) -> (f64, f64) {
    let (p, q) = (y.exp(), x.exp());
    let zero_or = |prob: f64, v: f64| if prob == 0.0 { 0.0 } else { v };
    if beta == 0.0 {
        return (zero_or(p, p * (y - x)), -p);
    }
    if beta == 1.0 {
        let t = zero_or(q, q * (x - y));
        return (t, t + q);
    }
    let m = beta * p + (1.0 - beta) * q;
    let term = zero_or(p, beta * p * y) + zero_or(q, (1.0 - beta) * q * x) - zero_or(m, m * m.ln());
    (term, zero_or(q, (1.0 - beta) * q * (x - m.ln())))
}

/// CORAL's and CORN's task k for a row with ordinal `label`: the weighted BCE-with-logits term
/// against [label > k] and its derivative; CORN trains task k on labels ≥ k only.
fn ordinal_task(kind: ClassRowsKind, x: f64, k: usize, label: usize, w: f64) -> (f64, f64) {
    if kind == ClassRowsKind::Corn && k > label {
        return (0.0, 0.0);
    }
    let level = if k < label { 1.0 } else { 0.0 };
    let (softplus_neg, p) = logistic(x);
    (w * (softplus_neg + (1.0 - level) * x), w * (p - level))
}

/// max(0, h)^p and its derivative, 0 unless h > 0 (PyTorch's test, which drops NaN).
fn hinge_power(h: f64, p: u32) -> (f64, f64) {
    match (h > 0.0, p) {
        (false, _) => (0.0, 0.0),
        (true, 2) => (h * h, 2.0 * h),
        (true, _) => (h, 1.0),
    }
}

/// A whole-row class-score loss on the CPU; the gradient is written in the input's type
/// unless `grad_dtype` says otherwise.
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for lengths that do not match;
/// [`Error::Value`](crate::Error::Value) naming the first row whose class is out of range.
pub fn class_rows<T: Element>(
    opts: &ClassRows,
    inputs: &HostClassRowsInputs<'_, T>,
) -> Result<LossValues> {
    opts.validate()?;
    let (n, c) = inputs.shape;
    let input_shape = match inputs.input.len() == n * c {
        true => vec![n, c],
        false => vec![inputs.input.len()],
    };
    let (target_shape, target_dtype) = match inputs.target {
        HostClassTargets::Classes(y) => (vec![y.len()], DType::I32),
        HostClassTargets::PerClass(t) => match t.len() == n * c {
            true => (vec![n, c], DType::F32),
            false => (vec![t.len()], DType::F32),
        },
        HostClassTargets::ClassLists(t) => match t.len() == n * c {
            true => (vec![n, c], DType::I32),
            false => (vec![t.len()], DType::I32),
        },
    };
    let weight_shape = inputs.weight.map(|w| [w.len()]);
    let labels_shape = inputs.labels.map(|l| [l.len()]);
    let (scalar_upstream, per_item) = inputs.upstream.split(|g| [g.len()]);
    opts.check(&Args {
        input: Arg {
            shape: &input_shape,
            dtype: T::DTYPE,
        },
        target: Arg {
            shape: &target_shape,
            dtype: target_dtype,
        },
        weight: weight_shape.as_ref().map(|s| Arg::f32(s)),
        labels: labels_shape.as_ref().map(|shape| Arg {
            shape,
            dtype: DType::I32,
        }),
        scalar_upstream,
        per_item_upstream: per_item.as_ref().map(|s| Arg::f32(s)),
    })?;
    let classes: Vec<usize> = match inputs.target {
        HostClassTargets::Classes(y) => y
            .iter()
            .enumerate()
            .map(|(row, &k)| match opts.kind.ordinal() {
                true => ordinal_label(k as i64, row, c),
                false => class_index(k as i64, row, c),
            })
            .collect::<Result<_>>()?,
        _ => vec![0; n],
    };
    // Multilabel margin: each row's list length and how often each class is listed.
    let lists: Vec<(usize, Vec<u32>)> = match inputs.target {
        HostClassTargets::ClassLists(t) => (0..n)
            .map(|row| {
                let list: Vec<i64> = t[row * c..(row + 1) * c]
                    .iter()
                    .map(|&v| v as i64)
                    .collect();
                let len = class_list_len(&list, row, c)?;
                let mut listed = vec![0u32; c];
                list[..len].iter().for_each(|&j| listed[j as usize] += 1);
                Ok((len, listed))
            })
            .collect::<Result<_>>()?,
        _ => Vec::new(),
    };
    let w = |k: usize| inputs.weight.map_or(1.0, |w| w[k] as f64);
    let kept = |row: usize| match (opts.kind, inputs.labels) {
        (ClassRowsKind::Jsd { ignore_index, .. }, Some(l)) => l[row] != ignore_index,
        _ => true,
    };
    let x = |i: usize| inputs.input[i].to_f32() as f64;
    // Per row: the loss and (multi-margin) the sum of the hinge derivatives.
    let rows: Vec<(f64, f64)> = (0..n)
        .into_par_iter()
        .map(|row| {
            let base = row * c;
            let (mut loss, mut slope) = (0.0, 0.0);
            match (opts.kind, inputs.target) {
                (ClassRowsKind::Jsd { beta, .. }, HostClassTargets::PerClass(t)) => {
                    let terms = (0..c).map(|k| jsd(x(base + k), t[base + k] as f64, beta as f64).0);
                    (if kept(row) { terms.sum() } else { 0.0 }, 0.0)
                }
                (kind, _) if kind.ordinal() => {
                    let task = |k| ordinal_task(kind, x(base + k), k, classes[row], w(k)).0;
                    ((0..c).map(task).sum(), 0.0)
                }
                (ClassRowsKind::MultiMargin { p, margin }, _) => {
                    let y = classes[row];
                    for k in (0..c).filter(|&k| k != y) {
                        let (h, d) = hinge_power(margin as f64 - x(base + y) + x(base + k), p);
                        loss += h;
                        slope += d;
                    }
                    // The weight multiplies each positive term (a NaN weight reaches only
                    // those, as in PyTorch).
                    let weighted = if slope > 0.0 { w(y) * loss } else { 0.0 };
                    (weighted / c as f64, slope)
                }
                (ClassRowsKind::DistillKl { temperature }, HostClassTargets::PerClass(t)) => {
                    let (tau, row_t) = (temperature as f64, &t[base..base + c]);
                    let (lse_t, lse_s) = log_sum_exps(row_t, |k| x(base + k), tau);
                    let kl: f64 = (0..c)
                        .map(|k| {
                            let (a, b) = (row_t[k] as f64 / tau, x(base + k) / tau);
                            (a - lse_t).exp() * ((a - lse_t) - (b - lse_s))
                        })
                        .sum();
                    (tau * tau * kl, 0.0)
                }
                (_, HostClassTargets::ClassLists(t)) => {
                    let (len, listed) = &lists[row];
                    for i in (0..c).filter(|&i| listed[i] == 0) {
                        for &j in &t[base..base + len] {
                            let h = 1.0 - x(base + j as usize) + x(base + i);
                            if h > 0.0 {
                                loss += h;
                            }
                        }
                    }
                    (loss / c as f64, 0.0)
                }
                (_, HostClassTargets::PerClass(t)) => {
                    for k in 0..c {
                        let (sp, _) = logistic(x(base + k));
                        loss += w(k) * ((1.0 - t[base + k] as f64) * x(base + k) + sp);
                    }
                    (loss / c as f64, 0.0)
                }
                (_, HostClassTargets::Classes(_)) => unreachable!("checked: per-class targets"),
            }
        })
        .collect();
    // The mean's count: rows, JSD's kept rows, or CORN's (task, row) terms.
    let denom = match (opts.reduction, opts.kind) {
        (Reduction::Mean, ClassRowsKind::Jsd { .. }) => (0..n).filter(|&r| kept(r)).count() as f64,
        (Reduction::Mean, ClassRowsKind::Corn) => {
            classes.iter().map(|&y| (y.min(c - 1) + 1) as f64).sum()
        }
        (Reduction::Mean, _) => n as f64,
        _ => 1.0,
    };
    let per_denom = |v: f64| if denom == 0.0 { 0.0 } else { v / denom };
    let loss = match opts.reduction {
        Reduction::None => rows.iter().map(|r| r.0 as f32).collect(),
        _ => vec![per_denom(rows.iter().map(|r| r.0).sum::<f64>()) as f32],
    };
    let mut grads = Vec::new();
    if opts.gradient {
        let upstream = inputs.upstream.values();
        let up = |row: usize| *upstream.get(row).or(upstream.first()).unwrap_or(&1.0) as f64;
        let mut grad = vec![0.0f32; n * c];
        grad.par_chunks_mut(c).enumerate().for_each(|(row, g)| {
            let base = row * c;
            let s = per_denom(up(row)) / c as f64;
            match (opts.kind, inputs.target) {
                (ClassRowsKind::Jsd { beta, .. }, HostClassTargets::PerClass(t)) => {
                    for (k, g) in g.iter_mut().enumerate() {
                        let d = jsd(x(base + k), t[base + k] as f64, beta as f64).1;
                        *g = (if kept(row) { d } else { 0.0 } * per_denom(up(row))) as f32;
                    }
                }
                (kind, _) if kind.ordinal() => {
                    for (k, g) in g.iter_mut().enumerate() {
                        let d = ordinal_task(kind, x(base + k), k, classes[row], w(k)).1;
                        *g = (d * per_denom(up(row))) as f32;
                    }
                }
                (ClassRowsKind::MultiMargin { p, margin }, _) => {
                    let y = classes[row];
                    let slope = rows[row].1;
                    for (k, g) in g.iter_mut().enumerate() {
                        let local = if k == y {
                            if slope > 0.0 {
                                -w(y) * slope
                            } else {
                                0.0
                            }
                        } else {
                            let d = hinge_power(margin as f64 - x(base + y) + x(base + k), p).1;
                            if d > 0.0 {
                                w(y) * d
                            } else {
                                0.0
                            }
                        };
                        // The upstream scale multiplies last: a NaN upstream reaches every
                        // element, as PyTorch's backward.
                        *g = (local * s) as f32;
                    }
                }
                (ClassRowsKind::DistillKl { temperature }, HostClassTargets::PerClass(t)) => {
                    // τ²·∂KL/∂s = τ·(p_s − p_t).
                    let (tau, row_t) = (temperature as f64, &t[base..base + c]);
                    let (lse_t, lse_s) = log_sum_exps(row_t, |k| x(base + k), tau);
                    let s = per_denom(up(row)) * tau;
                    for (k, g) in g.iter_mut().enumerate() {
                        let p_s = (x(base + k) / tau - lse_s).exp();
                        let p_t = (row_t[k] as f64 / tau - lse_t).exp();
                        *g = ((p_s - p_t) * s) as f32;
                    }
                }
                (_, HostClassTargets::ClassLists(t)) => {
                    // Unlisted i: how many listed entries j it is within the margin of;
                    // listed i (m times): −m·#{unlisted k within the margin of i}.
                    let (len, listed) = &lists[row];
                    let list = &t[base..base + len];
                    let within = |j: usize, i: usize| 1.0 - x(base + j) + x(base + i) > 0.0;
                    for (i, g) in g.iter_mut().enumerate() {
                        let slopes = match listed[i] {
                            0 => list.iter().filter(|&&j| within(j as usize, i)).count() as f64,
                            m => {
                                let k = (0..c).filter(|&k| listed[k] == 0 && within(i, k));
                                -(m as f64) * k.count() as f64
                            }
                        };
                        *g = (slopes * s) as f32;
                    }
                }
                (_, HostClassTargets::PerClass(t)) => {
                    for (k, g) in g.iter_mut().enumerate() {
                        let (_, p) = logistic(x(base + k));
                        *g = (w(k) * (p - t[base + k] as f64) * s) as f32;
                    }
                }
                (_, HostClassTargets::Classes(_)) => unreachable!("checked: per-class targets"),
            }
        });
        grads.push((opts.kind.input_name(), grad));
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
