//! InfoNCE losses and mined triplets on the CPU, the twin of `shaders/pairwise.wgsl`:
//! anchors in parallel, similarities recomputed in the backward pass (memory O(N·D) for
//! InfoNCE, as on the GPU), distances in f32 with f64 sums where results accumulate.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::losses::metric_options::{Distance, InfoNce, MinedTriplet, Mining, NceKind, NORM_EPS};
use crate::losses::LossValues;

/// Dot product with eight independent f32 lanes (vectorizes), summed at the end.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Squared distance with eight f32 lanes.
#[inline]
fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            lanes[l] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Normalized rows and norms.
fn normalize(x: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut unit = x.to_vec();
    let norms = unit
        .par_chunks_mut(dim.max(1))
        .map(|row| {
            let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32;
            let div = norm.max(NORM_EPS);
            row.iter_mut().for_each(|v| *v /= div);
            norm
        })
        .collect();
    (unit, norms)
}

/// In place: G (gradient for the unit rows) → gradient for the raw rows.
fn normalize_backward(g: &mut [f32], unit: &[f32], norms: &[f32], dim: usize) {
    g.par_chunks_mut(dim.max(1))
        .zip(unit.par_chunks(dim.max(1)))
        .zip(norms.par_iter())
        .for_each(|((g, n), &norm)| {
            let d: f64 = g.iter().zip(n).map(|(a, b)| *a as f64 * *b as f64).sum();
            for (gk, nk) in g.iter_mut().zip(n) {
                *gk = if norm >= NORM_EPS {
                    ((*gk as f64 - *nk as f64 * d) / norm as f64) as f32
                } else {
                    *gk / NORM_EPS
                };
            }
        });
}

fn rows_len(name: &'static str, x: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 || !x.len().is_multiple_of(dim) || x.is_empty() {
        return Err(Error::Shape {
            input: name,
            expected: format!("[N, {dim}] with N >= 1"),
            got: vec![x.len()],
        });
    }
    Ok(x.len() / dim)
}

/// The InfoNCE loss `opts` on the CPU: `inputs` are [z] (nt-xent), [a, b] (clip) or
/// [embeddings] (supcon, with `labels`), rows of `dim`; `upstream` scales the gradients.
///
/// # Errors
/// Bad options; [`Error::Shape`] for mismatched inputs, labels, or an odd nt-xent batch.
pub fn info_nce(
    opts: &InfoNce,
    inputs: &[&[f32]],
    labels: Option<&[i32]>,
    dim: usize,
    upstream: f32,
) -> Result<LossValues> {
    opts.validate()?;
    let names: &[&'static str] = match opts.kind {
        NceKind::NtXent => &["z"],
        NceKind::Clip => &["a", "b"],
        NceKind::SupCon => &["embeddings"],
    };
    if inputs.len() != names.len() {
        return Err(Error::Shape {
            input: names[0],
            expected: format!("{} input arrays", names.len()),
            got: vec![inputs.len()],
        });
    }
    let n = rows_len(names[0], inputs[0], dim)?;
    for (name, x) in names.iter().zip(inputs) {
        if x.len() != n * dim {
            return Err(Error::Shape {
                input: name,
                expected: format!("[{n}, {dim}]"),
                got: vec![x.len() / dim, dim],
            });
        }
    }
    // One stacked set of m rows with labels, as on the GPU.
    let raw: Vec<f32> = inputs.concat();
    let m = raw.len() / dim;
    let (lab, half): (Vec<i32>, usize) = match opts.kind {
        NceKind::NtXent if !m.is_multiple_of(2) => {
            return Err(Error::Shape {
                input: "z",
                expected: "an even number of rows [2N, D] (two views)".into(),
                got: vec![m, dim],
            })
        }
        NceKind::NtXent | NceKind::Clip => ((0..m).map(|i| (i % (m / 2)) as i32).collect(), m / 2),
        NceKind::SupCon => match labels {
            Some(l) if l.len() == m => (l.to_vec(), 0),
            other => {
                return Err(Error::Shape {
                    input: "labels",
                    expected: format!("[{m}]"),
                    got: vec![other.map_or(0, |l| l.len())],
                })
            }
        },
    };
    let clip = opts.kind == NceKind::Clip;
    let candidates = |i: usize| {
        if clip && i < half {
            half..m
        } else if clip {
            0..half
        } else {
            0..m
        }
    };
    let (unit, norms) = normalize(&raw, dim);
    let inv_tau = 1.0 / opts.temperature;
    let row = |i: usize| &unit[i * dim..(i + 1) * dim];
    // Per anchor: (lse, 1/|P|, loss); lse and sums in f64.
    let stats: Vec<(f64, f64, f64)> = (0..m)
        .into_par_iter()
        .map(|i| {
            let (mut max, mut sum, mut pos, mut count) = (f64::NEG_INFINITY, 0.0f64, 0.0, 0.0);
            for j in candidates(i).filter(|&j| clip || j != i) {
                let s = (dot(row(i), row(j)) * inv_tau) as f64;
                if s > max {
                    sum = sum * (max - s).exp() + 1.0;
                    max = s;
                } else {
                    sum += (s - max).exp();
                }
                if s.is_nan() {
                    sum = f64::NAN;
                }
                if lab[j] == lab[i] {
                    pos += s;
                    count += 1.0;
                }
            }
            let lse = max + sum.ln();
            if count > 0.0 {
                (lse, 1.0 / count, lse - pos / count)
            } else {
                (lse, 0.0, 0.0)
            }
        })
        .collect();
    let anchors = stats.iter().filter(|s| s.1 > 0.0).count() as f64;
    let total: f64 = stats.iter().map(|s| s.2).sum();
    let loss = if anchors > 0.0 { total / anchors } else { 0.0 };
    let mut grads = Vec::new();
    if opts.gradient {
        let w = if anchors > 0.0 {
            upstream as f64 / anchors * inv_tau as f64
        } else {
            0.0
        };
        let mut g = vec![0.0f32; m * dim];
        g.par_chunks_mut(dim).enumerate().for_each(|(i, gi)| {
            let mut acc = vec![0.0f64; dim];
            let (lse_i, inv_i, _) = stats[i];
            for j in candidates(i).filter(|&j| clip || j != i) {
                let s = (dot(row(i), row(j)) * inv_tau) as f64;
                let pos = lab[j] == lab[i];
                let (lse_j, inv_j, _) = stats[j];
                let term = |lse: f64, inv: f64| {
                    if inv > 0.0 {
                        (s - lse).exp() - if pos { inv } else { 0.0 }
                    } else {
                        0.0
                    }
                };
                let c = w * (term(lse_i, inv_i) + term(lse_j, inv_j));
                for (a, &k) in acc.iter_mut().zip(row(j)) {
                    *a += c * k as f64;
                }
            }
            gi.iter_mut().zip(&acc).for_each(|(g, a)| *g = *a as f32);
        });
        normalize_backward(&mut g, &unit, &norms, dim);
        grads = if clip {
            let gb = g.split_off(half * dim);
            vec![("a", g), ("b", gb)]
        } else {
            vec![(names[0], g)]
        };
    }
    Ok(LossValues {
        loss: vec![loss as f32],
        grads,
    })
}

/// Mined triplet loss of `embeddings` (rows of `dim`) with `labels`, on the CPU.
///
/// # Errors
/// Bad options; [`Error::Shape`] for a label count that is not the row count.
pub fn mined_triplet(
    opts: &MinedTriplet,
    embeddings: &[f32],
    labels: &[i32],
    dim: usize,
    upstream: f32,
) -> Result<LossValues> {
    opts.validate()?;
    let n = rows_len("embeddings", embeddings, dim)?;
    if labels.len() != n {
        return Err(Error::Shape {
            input: "labels",
            expected: format!("[{n}]"),
            got: vec![labels.len()],
        });
    }
    let cosine = opts.distance == Distance::Cosine;
    let (unit, norms) = if cosine {
        normalize(embeddings, dim)
    } else {
        (Vec::new(), Vec::new())
    };
    let rows: &[f32] = if cosine { &unit } else { embeddings };
    let row = |i: usize| &rows[i * dim..(i + 1) * dim];
    let mut dist = vec![0.0f32; n * n];
    dist.par_chunks_mut(n).enumerate().for_each(|(i, di)| {
        for (j, d) in di.iter_mut().enumerate() {
            *d = match opts.distance {
                Distance::Euclidean => sq_dist(row(i), row(j)).sqrt(),
                Distance::Squared => sq_dist(row(i), row(j)),
                Distance::Cosine => 1.0 - dot(row(i), row(j)),
            };
        }
    });
    let m = opts.margin;
    // Per anchor: its row of pair weights, loss sum and count.
    let mined: Vec<(Vec<i32>, f64, f64)> = (0..n)
        .into_par_iter()
        .map(|a| {
            let d = &dist[a * n..(a + 1) * n];
            let mut w = vec![0i32; n];
            let (mut loss, mut count) = (0.0f64, 0.0f64);
            let is_pos = |j: usize| j != a && labels[j] == labels[a];
            let is_neg = |j: usize| labels[j] != labels[a];
            if (0..n).any(|j| j != a && d[j].is_nan()) {
                return (w, f64::NAN, f64::NAN);
            }
            // Ties to the lowest index: strict comparisons in ascending order.
            let best = |set: &mut dyn Iterator<Item = usize>, largest: bool| {
                set.fold(None, |b: Option<usize>, j| match b {
                    Some(k) if (largest && d[j] <= d[k]) || (!largest && d[j] >= d[k]) => b,
                    _ => Some(j),
                })
            };
            let hit = |p: usize, q: usize, t: f32, w: &mut Vec<i32>| {
                if t > 0.0 {
                    w[p] += 1;
                    w[q] -= 1;
                }
            };
            match opts.mining {
                Mining::BatchAll => {
                    for p in (0..n).filter(|&j| is_pos(j)) {
                        for q in (0..n).filter(|&j| is_neg(j)) {
                            let t = d[p] - d[q] + m;
                            if t > 0.0 {
                                loss += t as f64;
                                count += 1.0;
                                hit(p, q, t, &mut w);
                            }
                        }
                    }
                }
                Mining::BatchHard => {
                    let p = best(&mut (0..n).filter(|&j| is_pos(j)), true);
                    let q = best(&mut (0..n).filter(|&j| is_neg(j)), false);
                    if let (Some(p), Some(q)) = (p, q) {
                        let t = d[p] - d[q] + m;
                        loss += t.max(0.0) as f64;
                        count += 1.0;
                        hit(p, q, t, &mut w);
                    }
                }
                Mining::SemiHard => {
                    for p in (0..n).filter(|&j| is_pos(j)) {
                        let far = best(&mut (0..n).filter(|&j| is_neg(j) && d[j] > d[p]), false);
                        let pick = far.or_else(|| best(&mut (0..n).filter(|&j| is_neg(j)), true));
                        if let Some(q) = pick {
                            let t = d[p] - d[q] + m;
                            loss += t.max(0.0) as f64;
                            count += 1.0;
                            hit(p, q, t, &mut w);
                        }
                    }
                }
            }
            (w, loss, count)
        })
        .collect();
    let total: f64 = mined.iter().map(|r| r.1).sum();
    let count: f64 = mined.iter().map(|r| r.2).sum();
    let loss = if count != 0.0 { total / count } else { 0.0 };
    let mut grads = Vec::new();
    if opts.gradient {
        let scale = if count != 0.0 {
            upstream as f64 / count
        } else {
            0.0
        };
        let mut g = vec![0.0f32; n * dim];
        g.par_chunks_mut(dim).enumerate().for_each(|(i, gi)| {
            let mut acc = vec![0.0f64; dim];
            let mut rowsum = 0.0f64;
            for j in (0..n).filter(|&j| j != i) {
                let uses = (mined[i].0[j] + mined[j].0[i]) as f64;
                if uses == 0.0 && !scale.is_nan() {
                    continue;
                }
                let f = match opts.distance {
                    Distance::Euclidean => {
                        let d = dist[i * n + j] as f64;
                        if d > 0.0 {
                            1.0 / d
                        } else {
                            0.0
                        }
                    }
                    Distance::Squared => 2.0,
                    Distance::Cosine => -1.0,
                };
                let c = uses * f * scale;
                rowsum += c;
                for (a, &k) in acc.iter_mut().zip(row(j)) {
                    *a += c * k as f64;
                }
            }
            for (k, (g, a)) in gi.iter_mut().zip(&acc).enumerate() {
                *g = if cosine {
                    *a as f32
                } else {
                    (rowsum * row(i)[k] as f64 - a) as f32
                };
            }
        });
        if cosine {
            normalize_backward(&mut g, &unit, &norms, dim);
        }
        grads = vec![("embeddings", g)];
    }
    Ok(LossValues {
        loss: vec![loss as f32],
        grads,
    })
}
