//! f64 triplet loss with online mining, the twin of the mining kernels in
//! `shaders/pairwise.wgsl`: the full distance matrix, then each mining rule as written in
//! docs/LOSSES.md, ties to the lowest index.

use super::reference::{normalize, normalize_backward};
use super::{Distance, MinedTriplet, Mining};
use crate::core::reference::RefOutput;

/// The distance matrix of the rows of `e` (`n` rows of `dim`).
pub fn distance_matrix(e: &[f64], n: usize, dim: usize, distance: Distance) -> Vec<f64> {
    let (unit, _) = normalize(e, dim);
    let mut d = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (&e[i * dim..(i + 1) * dim], &e[j * dim..(j + 1) * dim]);
            let sq: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
            d[i * n + j] = match distance {
                Distance::Euclidean => sq.sqrt(),
                Distance::Squared => sq,
                Distance::Cosine => {
                    let (a, b) = (&unit[i * dim..(i + 1) * dim], &unit[j * dim..(j + 1) * dim]);
                    1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>()
                }
            };
        }
    }
    d
}

/// Mined triplet loss of `embeddings` (`labels.len()` rows of `dim`); gradient
/// `embeddings`. `decision_gap` is the smallest distance of any mining decision (a hinge
/// against 0, a comparison of two distances) from its boundary: f32 inputs within that of
/// a boundary may legitimately be mined differently in f32.
pub fn mined_triplet(
    opts: &MinedTriplet,
    e: &[f64],
    labels: &[i64],
    dim: usize,
    upstream: f64,
) -> RefOutput {
    let n = labels.len();
    let d = distance_matrix(e, n, dim, opts.distance);
    let m = opts.margin as f64;
    let dist = |i: usize, j: usize| d[i * n + j];
    let mut gap = f64::INFINITY;
    // dL/dD (before the mean), the loss sum and the mean's count.
    let mut w = vec![0.0; n * n];
    let (mut total, mut count) = (0.0, 0.0);
    // Σ (|m| + D_ap + D_an) over the counted triplets: the loss is their difference.
    let mut hinge_terms = 0.0;
    for a in 0..n {
        let pos: Vec<usize> = (0..n)
            .filter(|&j| j != a && labels[j] == labels[a])
            .collect();
        let neg: Vec<usize> = (0..n).filter(|&j| labels[j] != labels[a]).collect();
        if (0..n).any(|j| j != a && dist(a, j).is_nan()) {
            // A NaN embedding makes the loss and every gradient element NaN.
            total = f64::NAN;
            count = f64::NAN;
        }
        if pos.is_empty() || neg.is_empty() {
            continue;
        }
        let add = |p: usize, nn: usize, t: f64, w: &mut Vec<f64>| {
            if t > 0.0 {
                w[a * n + p] += 1.0;
                w[a * n + nn] -= 1.0;
            }
        };
        match opts.mining {
            Mining::BatchAll => {
                for &p in &pos {
                    for &nn in &neg {
                        let t = dist(a, p) - dist(a, nn) + m;
                        gap = gap.min(t.abs());
                        if t > 0.0 {
                            total += t;
                            count += 1.0;
                            hinge_terms += m.abs() + dist(a, p) + dist(a, nn);
                            add(p, nn, t, &mut w);
                        }
                    }
                }
            }
            Mining::BatchHard => {
                let arg = |set: &[usize], better: &dyn Fn(f64, f64) -> bool| {
                    let mut best = set[0];
                    for &j in &set[1..] {
                        if better(dist(a, j), dist(a, best)) {
                            best = j;
                        }
                    }
                    best
                };
                let p = arg(&pos, &|x, y| x > y);
                let nn = arg(&neg, &|x, y| x < y);
                for (set, best) in [(&pos, p), (&neg, nn)] {
                    for &j in set.iter().filter(|&&j| j != best) {
                        gap = gap.min((dist(a, j) - dist(a, best)).abs());
                    }
                }
                let t = dist(a, p) - dist(a, nn) + m;
                gap = gap.min(t.abs());
                total += t.max(0.0);
                count += 1.0;
                hinge_terms += m.abs() + dist(a, p) + dist(a, nn);
                add(p, nn, t, &mut w);
            }
            Mining::SemiHard => {
                for &p in &pos {
                    let d_ap = dist(a, p);
                    let farther: Vec<usize> =
                        neg.iter().copied().filter(|&j| dist(a, j) > d_ap).collect();
                    let pick = |set: &[usize], nearest: bool| {
                        let mut best = set[0];
                        for &j in &set[1..] {
                            let (x, y) = (dist(a, j), dist(a, best));
                            if (nearest && x < y) || (!nearest && x > y) {
                                best = j;
                            }
                        }
                        best
                    };
                    let nn = if farther.is_empty() {
                        pick(&neg, false)
                    } else {
                        pick(&farther, true)
                    };
                    for &j in &neg {
                        gap = gap.min((dist(a, j) - d_ap).abs());
                        if j != nn {
                            gap = gap.min((dist(a, j) - dist(a, nn)).abs());
                        }
                    }
                    let t = d_ap - dist(a, nn) + m;
                    gap = gap.min(t.abs());
                    total += t.max(0.0);
                    count += 1.0;
                    hinge_terms += m.abs() + d_ap + dist(a, nn);
                    add(p, nn, t, &mut w);
                }
            }
        }
    }
    let loss = if count != 0.0 { total / count } else { 0.0 };
    let scale = if count != 0.0 { upstream / count } else { 0.0 };
    // dL/de_i = Σ_j W_ij ∂D_ij/∂e_i + W_ji ∂D_ji/∂e_i.
    let (unit, norms) = normalize(e, dim);
    let mut g = vec![0.0; n * dim];
    let mut terms = 0.0f64;
    for i in 0..n {
        for j in 0..n {
            let c = (w[i * n + j] + w[j * n + i]) * scale;
            if c == 0.0 || i == j {
                continue;
            }
            for t in 0..dim {
                let (ei, ej) = (e[i * dim + t], e[j * dim + t]);
                let term = match opts.distance {
                    Distance::Euclidean if dist(i, j) > 0.0 => (ei - ej) / dist(i, j),
                    Distance::Euclidean => 0.0,
                    Distance::Squared => 2.0 * (ei - ej),
                    Distance::Cosine => -unit[j * dim + t],
                };
                terms = terms.max((c * term).abs());
                g[i * dim + t] += c * term;
            }
        }
    }
    if opts.distance == Distance::Cosine {
        g = normalize_backward(&g, &unit, &norms, dim);
    }
    RefOutput {
        loss: vec![loss],
        grads: if opts.gradient {
            vec![("embeddings", g)]
        } else {
            Vec::new()
        },
        grad_terms: terms,
        // f32 backends form each triplet's hinge, or batch-all's sum as
        // Σ k·(D_ap + m) − Σ c·D_an, by cancellation at this scale.
        loss_terms: if count != 0.0 {
            hinge_terms / count
        } else {
            0.0
        },
        decision_gap: gap / d.iter().fold(1.0f64, |m, v| m.max(v.abs())),
    }
}
