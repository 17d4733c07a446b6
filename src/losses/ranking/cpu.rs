//! Ranking losses on the CPU, the twin of `ranking.wgsl`: lists in parallel, each list's
//! sums in f64.

use rayon::prelude::*;

use super::{discount, gain, list_length, Args, Ranking, RankingKind};
use crate::core::{written_as, Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::Result;

/// Host inputs of [`ranking`]; the fields mirror [`crate::RankingInputs`]. The scores may be
/// f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostRankingInputs<'a, T: Element = f32> {
    /// Scores `[Q, L]`, row-major.
    pub scores: &'a [T],
    /// Relevance grades `[Q, L]`.
    pub relevance: &'a [f32],
    /// (Q, L).
    pub shape: (usize, usize),
    /// Each list's length (default L).
    pub lengths: Option<&'a [i32]>,
    /// Gradient from above: a scalar, or one per list with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// One list's results: loss, count for the mean, NDCG@k, the unscaled gradient.
struct List {
    loss: f64,
    count: f64,
    ndcg: f64,
    grad: Vec<f64>,
}

/// log(1 + e^−d) and its derivative in d.
fn softplus_neg(d: f64) -> (f64, f64) {
    let e = (-d.abs()).exp();
    let slope = if d < 0.0 {
        -1.0 / (1.0 + e)
    } else {
        -e / (1.0 + e)
    };
    ((-d).max(0.0) + e.ln_1p(), slope)
}

/// 1-based ranks of `v` descending, ties by index (as the kernel counts them).
fn ranks(v: &[f64]) -> Vec<usize> {
    (0..v.len())
        .map(|i| {
            1 + (0..v.len())
                .filter(|&j| v[j] > v[i] || (v[j] == v[i] && j < i))
                .count()
        })
        .collect()
}

fn list(opts: &Ranking, s: &[f64], r: &[f64]) -> List {
    let len = s.len();
    let k = opts.cutoff();
    let (rank, ideal) = match opts.needs_ranks() {
        true => (ranks(s), ranks(r)),
        false => (Vec::new(), Vec::new()),
    };
    let (mut dcg, mut idcg) = (0.0, 0.0);
    if opts.needs_ranks() {
        for i in 0..len {
            dcg += gain(r[i]) * discount(rank[i], k);
            idcg += gain(r[i]) * discount(ideal[i], k);
        }
    }
    let mut grad = vec![0.0; len];
    let (mut loss, mut count) = (0.0, 0.0);
    match opts.kind {
        RankingKind::RankNet | RankingKind::PairwiseHinge { .. } | RankingKind::LambdaNdcg => {
            for i in 0..len {
                for j in (0..len).filter(|&j| r[i] > r[j]) {
                    let weight = match opts.kind {
                        RankingKind::LambdaNdcg => {
                            if rank[i].min(rank[j]) as u64 > k as u64 {
                                continue;
                            }
                            (gain(r[i]) - gain(r[j])).abs()
                                * (discount(rank[i], k) - discount(rank[j], k)).abs()
                                / idcg
                        }
                        _ => 1.0,
                    };
                    let (value, slope) = match opts.kind {
                        RankingKind::PairwiseHinge { margin } => {
                            let h = margin as f64 - (s[i] - s[j]);
                            if h > 0.0 {
                                (h, -1.0)
                            } else {
                                (0.0, 0.0)
                            }
                        }
                        _ => softplus_neg(s[i] - s[j]),
                    };
                    loss += weight * value;
                    count += 1.0;
                    grad[i] += weight * slope;
                    grad[j] -= weight * slope;
                }
            }
            if opts.kind == RankingKind::LambdaNdcg {
                count = (count > 0.0) as u8 as f64;
            }
        }
        RankingKind::ListNet => {
            count = 1.0;
            if len > 0 {
                let lse = |v: &[f64]| {
                    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
                };
                let (lse_s, lse_r) = (lse(s), lse(r));
                for i in 0..len {
                    let target = (r[i] - lse_r).exp();
                    loss -= target * (s[i] - lse_s);
                    grad[i] = (s[i] - lse_s).exp() - target;
                }
            }
        }
        RankingKind::ListMle => {
            count = 1.0;
            // Scores by position in the relevance order; suffix log-sum-exps z_p; the
            // gradient −1 + e^{s}·Σ_{p' ≤ p} e^−z_p'.
            let mut by_pos = vec![0.0; len];
            for i in 0..len {
                by_pos[ideal[i] - 1] = s[i];
            }
            let log_add = |a: f64, b: f64| {
                let m = a.max(b);
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else if m == f64::NEG_INFINITY {
                    m
                } else {
                    m + (-(a - b).abs()).exp().ln_1p()
                }
            };
            let mut z = vec![0.0; len];
            let mut acc = f64::NEG_INFINITY;
            for p in (0..len).rev() {
                acc = log_add(acc, by_pos[p]);
                z[p] = acc;
                loss += acc - by_pos[p];
            }
            let mut prefix = vec![0.0; len];
            let mut c = f64::NEG_INFINITY;
            for p in 0..len {
                c = log_add(c, -z[p]);
                prefix[p] = c;
            }
            for i in 0..len {
                grad[i] = (s[i] + prefix[ideal[i] - 1]).exp() - 1.0;
            }
        }
    }
    List {
        loss,
        count,
        ndcg: if idcg == 0.0 { 1.0 } else { dcg / idcg },
        grad,
    }
}

/// A ranking loss on the CPU; the gradient is written in the scores' type unless `grad_dtype`
/// says otherwise; with `ndcg`, `rows` holds "ndcg".
///
/// # Errors
/// As [`crate::Ranking::record`], and [`crate::Error::Value`] naming the first list whose
/// length is out of range.
pub fn ranking<T: Element>(
    opts: &Ranking,
    inputs: &HostRankingInputs<'_, T>,
) -> Result<LossValues> {
    let (q, l) = inputs.shape;
    let shape_of = |len: usize| match len == q * l {
        true => vec![q, l],
        false => vec![len],
    };
    let lengths_shape = inputs.lengths.map(|v| [v.len()]);
    let (scalar_upstream, per_item) = inputs.upstream.split(|g| [g.len()]);
    opts.check(&Args {
        scores: Arg {
            shape: &shape_of(inputs.scores.len()),
            dtype: T::DTYPE,
        },
        relevance: Arg::f32(&shape_of(inputs.relevance.len())),
        lengths: lengths_shape.as_ref().map(|shape| Arg {
            shape,
            dtype: DType::I32,
        }),
        scalar_upstream,
        per_item_upstream: per_item.as_ref().map(|s| Arg::f32(s)),
    })?;
    let lengths: Vec<usize> = match inputs.lengths {
        Some(v) => v
            .iter()
            .enumerate()
            .map(|(row, &n)| list_length(n as i64, row, l))
            .collect::<Result<_>>()?,
        None => vec![l; q],
    };
    let lists: Vec<List> = (0..q)
        .into_par_iter()
        .map(|row| {
            let at = row * l..row * l + lengths[row];
            let s: Vec<f64> = inputs.scores[at.clone()]
                .iter()
                .map(|v| v.to_f32() as f64)
                .collect();
            let r: Vec<f64> = inputs.relevance[at].iter().map(|&v| v as f64).collect();
            list(opts, &s, &r)
        })
        .collect();
    let count: f64 = lists.iter().map(|x| x.count).sum();
    let denom = match opts.reduction {
        Reduction::Mean => count,
        _ => 1.0,
    };
    let per_denom = |v: f64| if denom == 0.0 { 0.0 } else { v / denom };
    let loss = match opts.reduction {
        Reduction::None => lists.iter().map(|x| x.loss as f32).collect(),
        _ => vec![per_denom(lists.iter().map(|x| x.loss).sum::<f64>()) as f32],
    };
    let mut grads = Vec::new();
    if opts.gradient {
        let upstream = inputs.upstream.values();
        let up = |row: usize| *upstream.get(row).or(upstream.first()).unwrap_or(&1.0) as f64;
        let mut grad = vec![0.0f32; q * l];
        grad.par_chunks_mut(l).enumerate().for_each(|(row, g)| {
            let scale = per_denom(up(row));
            for (i, &d) in lists[row].grad.iter().enumerate() {
                g[i] = (d * scale) as f32;
            }
        });
        grads.push(("scores", grad));
    }
    let rows = match opts.ndcg {
        true => vec![("ndcg", lists.iter().map(|x| x.ndcg as f32).collect())],
        false => Vec::new(),
    };
    Ok(written_as(
        LossValues { loss, grads, rows },
        opts.grad_dtype.unwrap_or(T::DTYPE),
    ))
}
