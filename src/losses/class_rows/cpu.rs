//! Whole-row class-score losses on the CPU, the twin of `class_rows.wgsl`: rows in
//! parallel, each row's sums in f64.

use rayon::prelude::*;

use super::{class_index, class_list_len, Args, ClassRows, ClassRowsKind};
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
    /// Class weights `[C]`.
    pub weight: Option<&'a [f32]>,
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
        scalar_upstream,
        per_item_upstream: per_item.as_ref().map(|s| Arg::f32(s)),
    })?;
    let classes: Vec<usize> = match inputs.target {
        HostClassTargets::Classes(y) => y
            .iter()
            .enumerate()
            .map(|(row, &k)| class_index(k as i64, row, c))
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
    let x = |i: usize| inputs.input[i].to_f32() as f64;
    // Per row: the loss and (multi-margin) the sum of the hinge derivatives.
    let rows: Vec<(f64, f64)> = (0..n)
        .into_par_iter()
        .map(|row| {
            let base = row * c;
            let (mut loss, mut slope) = (0.0, 0.0);
            match (opts.kind, inputs.target) {
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
    let denom = if opts.reduction == Reduction::Mean {
        n as f64
    } else {
        1.0
    };
    let loss = match opts.reduction {
        Reduction::None => rows.iter().map(|r| r.0 as f32).collect(),
        _ => vec![(rows.iter().map(|r| r.0).sum::<f64>() / denom) as f32],
    };
    let mut grads = Vec::new();
    if opts.gradient {
        let upstream = inputs.upstream.values();
        let up = |row: usize| *upstream.get(row).or(upstream.first()).unwrap_or(&1.0) as f64;
        let mut grad = vec![0.0f32; n * c];
        grad.par_chunks_mut(c).enumerate().for_each(|(row, g)| {
            let base = row * c;
            let s = up(row) / denom / c as f64;
            match (opts.kind, inputs.target) {
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
                    let s = up(row) / denom * tau;
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
