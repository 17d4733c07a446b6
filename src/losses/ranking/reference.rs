//! f64 ranking losses from their definitions: every pair enumerated, the orders sorted
//! explicitly, the Plackett–Luce likelihood term by term.

use super::{discount, gain, list_length, Ranking, RankingKind};
use crate::core::reference::{log_sum_exp, reduce, RefOutput};
use crate::core::{Arg, DType};
use crate::error::Result;

/// log(1 + e^−d) and its derivative in d, stable for either sign.
fn softplus_neg(d: f64) -> (f64, f64) {
    let value = (-d).max(0.0) + (-d.abs()).exp().ln_1p();
    (value, -1.0 / (1.0 + d.exp()))
}

/// 1-based ranks by `key` descending, ties by index: each item's rank is one more than the
/// number of items before it (a NaN key is before nothing and has nothing before it).
fn ranks_by(key: &[f64]) -> Vec<usize> {
    let before = |j: usize, i: usize| key[j] > key[i] || (key[j] == key[i] && j < i);
    (0..key.len())
        .map(|i| 1 + (0..key.len()).filter(|&j| before(j, i)).count())
        .collect()
}

/// The items in the order of their ranks (ranks from [`ranks_by`] of keys without NaN).
fn order_of(ranks: &[usize]) -> Vec<usize> {
    let mut order = vec![0; ranks.len()];
    for (i, &r) in ranks.iter().enumerate() {
        order[r - 1] = i;
    }
    order
}

/// The host inputs of the reference.
#[derive(Debug, Clone, Copy)]
pub struct RefRankingInputs<'a> {
    /// Scores `[Q, L]`.
    pub scores: &'a [f64],
    /// Relevance grades `[Q, L]`.
    pub relevance: &'a [f64],
    /// (Q, L).
    pub shape: (usize, usize),
    /// Each list's length (default L).
    pub lengths: Option<&'a [i64]>,
    /// One value (a scalar upstream gradient) or one per list (reduction none).
    pub upstream: &'a [f64],
}

/// The ranking loss of docs/LOSSES.md, its gradient, and (with `opts.ndcg`) NDCG@k per list in
/// `rows`.
///
/// # Errors
/// Option and shape errors as [`Ranking::record`](crate::Ranking::record);
/// [`crate::Error::Value`] naming a list whose length is outside `[0, L]`.
pub fn ranking(opts: &Ranking, x: RefRankingInputs<'_>) -> Result<(RefOutput, Vec<f64>)> {
    let (q, l) = x.shape;
    let lengths_shape = x.lengths.map(|v| [v.len()]);
    let upstream_shape = [x.upstream.len()];
    let per_item = x.upstream.len() != 1;
    opts.check(&super::Args {
        scores: Arg::f32(&[q, l]),
        relevance: Arg::f32(&[q, l]),
        lengths: lengths_shape.as_ref().map(|s| Arg {
            shape: s,
            dtype: DType::I32,
        }),
        scalar_upstream: (!per_item).then(|| x.upstream[0] as f32),
        per_item_upstream: per_item.then(|| Arg::f32(&upstream_shape)),
    })?;
    let k = opts.cutoff();
    let mut losses = vec![0.0; q];
    let mut local = vec![0.0; q * l];
    let mut ndcg = vec![0.0; q];
    let mut count = 0.0;
    let mut lens = vec![l; q];
    // The nearest hinge to its kink (ranks compare the given scores themselves, so every
    // backend orders them alike).
    let mut gap = f64::INFINITY;
    let mut size = 1.0f64;
    for list in 0..q {
        let len = match x.lengths {
            Some(v) => list_length(v[list], list, l)?,
            None => l,
        };
        lens[list] = len;
        let s = &x.scores[list * l..list * l + len];
        let r = &x.relevance[list * l..list * l + len];
        let g = &mut local[list * l..list * l + len];
        size = s.iter().fold(size, |m, v| m.max(v.abs()));
        // 1-based ranks by score and by relevance (descending, ties by index).
        let (rank, ideal) = (ranks_by(s), ranks_by(r));
        let idcg: f64 = (0..len).map(|i| gain(r[i]) * discount(ideal[i], k)).sum();
        let dcg: f64 = (0..len).map(|i| gain(r[i]) * discount(rank[i], k)).sum();
        ndcg[list] = if idcg == 0.0 { 1.0 } else { dcg / idcg };
        match opts.kind {
            RankingKind::RankNet | RankingKind::PairwiseHinge { .. } | RankingKind::LambdaNdcg => {
                let mut pairs = 0.0;
                for i in 0..len {
                    for j in (0..len).filter(|&j| r[i] > r[j]) {
                        let d = s[i] - s[j];
                        let (weight, counted) = match opts.kind {
                            RankingKind::LambdaNdcg => {
                                let swap = (gain(r[i]) - gain(r[j])).abs()
                                    * (discount(rank[i], k) - discount(rank[j], k)).abs()
                                    / idcg;
                                (swap, rank[i].min(rank[j]) as u64 <= k as u64)
                            }
                            _ => (1.0, true),
                        };
                        if !counted {
                            continue;
                        }
                        pairs += 1.0;
                        let (value, slope) = match opts.kind {
                            RankingKind::PairwiseHinge { margin } => {
                                let h = margin as f64 - d;
                                gap = gap.min(h.abs());
                                if h > 0.0 {
                                    (h, -1.0)
                                } else {
                                    (0.0, 0.0)
                                }
                            }
                            _ => softplus_neg(d),
                        };
                        losses[list] += weight * value;
                        g[i] += weight * slope;
                        g[j] -= weight * slope;
                    }
                }
                count += match opts.kind {
                    RankingKind::LambdaNdcg => (pairs > 0.0) as u8 as f64,
                    _ => pairs,
                };
            }
            RankingKind::ListNet => {
                count += 1.0;
                if len == 0 {
                    continue;
                }
                let lse = |v: &[f64]| log_sum_exp(v.iter().copied());
                let (lse_s, lse_r) = (lse(s), lse(r));
                for i in 0..len {
                    let target = (r[i] - lse_r).exp();
                    losses[list] -= target * (s[i] - lse_s);
                    g[i] = (s[i] - lse_s).exp() - target;
                }
            }
            RankingKind::ListMle => {
                count += 1.0;
                let order = order_of(&ideal);
                // Position p's term: log Σ_{q ≥ p} e^{s_π(q)} − s_π(p); its derivative in s_j
                // for j at or after p is the softmax of s over those positions, minus 1 at p.
                for p in 0..len {
                    let rest = &order[p..];
                    let lse = log_sum_exp(rest.iter().map(|&i| s[i]));
                    losses[list] += lse - s[order[p]];
                    for &i in rest {
                        g[i] += (s[i] - lse).exp();
                    }
                    g[order[p]] -= 1.0;
                }
            }
        }
    }
    let (loss, scale) = reduce(&losses, opts.reduction, count, x.upstream);
    let grad: Vec<f64> = local
        .iter()
        .enumerate()
        .map(|(i, g)| match i % l < lens[i / l] {
            true => g * scale(i / l),
            false => 0.0, // padding
        })
        .collect();
    let grad_terms = (0..q).map(|list| scale(list).abs()).fold(0.0, f64::max);
    Ok((
        RefOutput {
            loss,
            grads: match opts.gradient {
                true => vec![("scores", grad)],
                false => Vec::new(),
            },
            grad_terms,
            loss_terms: 0.0,
            decision_gap: gap / size,
        },
        ndcg,
    ))
}
