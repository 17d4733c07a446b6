//! f64 InfoNCE losses (nt-xent, clip, supcon), the twin of `shaders/pairwise.wgsl`'s
//! similarity kernels: the full similarity matrix, plain loops, gradients through
//! `F.normalize` by its Jacobian.

use super::{InfoNce, NceKind, NORM_EPS};
use crate::core::reference::RefOutput;

/// Rows of `x` divided by `max(‖row‖₂, 1e-12)`, and the row norms.
pub fn normalize(x: &[f64], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let mut n = x.to_vec();
    let norms = x
        .chunks(dim.max(1))
        .zip(n.chunks_mut(dim.max(1)))
        .map(|(row, out)| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            // As PyTorch's clamp_min, a NaN norm stays NaN (`max` would drop it).
            let div = if norm < NORM_EPS as f64 {
                NORM_EPS as f64
            } else {
                norm
            };
            out.iter_mut().for_each(|v| *v /= div);
            norm
        })
        .collect();
    (n, norms)
}

/// The gradient with respect to the raw rows, given `g` with respect to the normalized rows
/// `n`: `(g − n(n·g))/‖x‖`, or `g/ε` where the norm was clamped (`clamp_min` passes its
/// gradient where the norm is ≥ ε, as PyTorch's).
pub fn normalize_backward(g: &[f64], n: &[f64], norms: &[f64], dim: usize) -> Vec<f64> {
    let eps = NORM_EPS as f64;
    let mut out = vec![0.0; g.len()];
    for (i, &norm) in norms.iter().enumerate() {
        let r = i * dim..(i + 1) * dim;
        let (gi, ni) = (&g[r.clone()], &n[r.clone()]);
        let dot: f64 = gi.iter().zip(ni).map(|(a, b)| a * b).sum();
        for k in 0..dim {
            out[r.start + k] = if norm < eps {
                gi[k] / eps
            } else {
                (gi[k] - ni[k] * dot) / norm
            };
        }
    }
    out
}

/// One direction of an InfoNCE loss: anchors are rows of set `q`, candidates rows of set
/// `k` (the same set when `q == k`, which excludes each anchor itself).
struct Direction {
    q: usize,
    k: usize,
    labels_q: Vec<i64>,
    labels_k: Vec<i64>,
}

/// An InfoNCE loss over normalized sets (`sets`: rows of `dim`); `labels` decide positives.
/// Returns the loss, the gradient of each set and the largest gradient term.
fn info_nce(
    sets: &[Vec<f64>],
    dim: usize,
    directions: &[Direction],
    tau: f64,
    upstream: f64,
) -> (f64, Vec<Vec<f64>>, f64) {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let row = |s: usize, i: usize| &sets[s][i * dim..(i + 1) * dim];
    // (direction, anchor, d l/d s over candidates) of every anchor with a positive.
    let mut anchors = Vec::new();
    let mut total = 0.0;
    for (di, dir) in directions.iter().enumerate() {
        let (nq, nk) = (dir.labels_q.len(), dir.labels_k.len());
        for i in 0..nq {
            let candidates: Vec<usize> = (0..nk).filter(|&j| dir.q != dir.k || j != i).collect();
            let s: Vec<f64> = candidates
                .iter()
                .map(|&j| dot(row(dir.q, i), row(dir.k, j)) / tau)
                .collect();
            let pos: Vec<bool> = candidates
                .iter()
                .map(|&j| dir.labels_k[j] == dir.labels_q[i])
                .collect();
            let count = pos.iter().filter(|&&p| p).count();
            if count == 0 {
                continue;
            }
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let pos_mean = s
                .iter()
                .zip(&pos)
                .filter(|(_, &p)| p)
                .map(|(v, _)| v)
                .sum::<f64>()
                / count as f64;
            total += lse - pos_mean;
            // (candidate, softmax probability, positive's share): dl/ds = p − share.
            let dl: Vec<(usize, f64, f64)> = candidates
                .iter()
                .zip(s.iter().zip(&pos))
                .map(|(&j, (v, &p))| (j, (v - lse).exp(), if p { 1.0 / count as f64 } else { 0.0 }))
                .collect();
            anchors.push((di, i, dl));
        }
    }
    let count = anchors.len() as f64;
    let loss = if count == 0.0 { 0.0 } else { total / count };
    let w = if count == 0.0 {
        0.0
    } else {
        upstream / (count * tau)
    };
    let mut grads: Vec<Vec<f64>> = sets.iter().map(|s| vec![0.0; s.len()]).collect();
    let mut terms = 0.0f64;
    for (di, i, dl) in &anchors {
        let dir = &directions[*di];
        for &(j, p, share) in dl {
            let c = (p - share) * w;
            // The terms are p·w and share·w: f32 cancels them at their own scale (as the
            // cross-entropy reference's p·coef and target terms), not at that of c.
            terms = terms.max((p.max(share) * w).abs());
            // s = q_i·k_j/τ: ∂/∂q_i = k_j/τ, ∂/∂k_j = q_i/τ (τ is in w).
            for t in 0..dim {
                grads[dir.q][i * dim + t] += c * sets[dir.k][j * dim + t];
                grads[dir.k][j * dim + t] += c * sets[dir.q][i * dim + t];
            }
        }
    }
    (loss, grads, terms)
}

/// The InfoNCE loss `opts` over raw `inputs` (nt-xent: `[z]`; clip: `[a, b]`; supcon:
/// `[embeddings]`, with `labels`), rows of `dim`. Gradients are named after the inputs.
pub fn info_nce_loss(
    opts: &InfoNce,
    inputs: &[&[f64]],
    labels: Option<&[i64]>,
    dim: usize,
    upstream: f64,
) -> RefOutput {
    let (sets, norms): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
        inputs.iter().map(|x| normalize(x, dim)).unzip();
    let rows = norms[0].len();
    let directions = match opts.kind {
        NceKind::NtXent => {
            let half = rows / 2;
            let l: Vec<i64> = (0..rows).map(|i| (i % half.max(1)) as i64).collect();
            vec![Direction {
                q: 0,
                k: 0,
                labels_q: l.clone(),
                labels_k: l,
            }]
        }
        NceKind::SupCon => {
            let l = labels.expect("supcon needs labels").to_vec();
            vec![Direction {
                q: 0,
                k: 0,
                labels_q: l.clone(),
                labels_k: l,
            }]
        }
        NceKind::Clip => {
            let l: Vec<i64> = (0..rows as i64).collect();
            vec![
                Direction {
                    q: 0,
                    k: 1,
                    labels_q: l.clone(),
                    labels_k: l.clone(),
                },
                Direction {
                    q: 1,
                    k: 0,
                    labels_q: l.clone(),
                    labels_k: l,
                },
            ]
        }
    };
    let (loss, g, terms) = info_nce(&sets, dim, &directions, opts.temperature as f64, upstream);
    let names: &[&'static str] = match opts.kind {
        NceKind::NtXent => &["z"],
        NceKind::Clip => &["a", "b"],
        NceKind::SupCon => &["embeddings"],
    };
    let grads = if opts.gradient {
        names
            .iter()
            .enumerate()
            .map(|(s, &name)| (name, normalize_backward(&g[s], &sets[s], &norms[s], dim)))
            .collect()
    } else {
        Vec::new()
    };
    // The Jacobian divides by the norm: term magnitudes grow by 1/‖x‖.
    let min_norm = norms
        .iter()
        .flatten()
        .fold(f64::INFINITY, |m, &v| m.min(v.max(NORM_EPS as f64)));
    RefOutput {
        loss: vec![loss],
        grads,
        grad_terms: terms / min_norm,
        // Each anchor's loss is lse − s_ip over similarities of size up to 1/τ: its f32
        // error is absolute at that scale, however small the loss.
        loss_terms: 1.0 / opts.temperature as f64,
        decision_gap: f64::INFINITY,
    }
}
