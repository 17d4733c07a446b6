//! f64 contrastive and triplet losses over explicit rows, the twin of
//! `shaders/pair_rows.wgsl`: plain loops over `F.pairwise_distance`.

use super::{Contrastive, CosineEmbedding, Triplet, COSINE_EPS};
use crate::core::reference::{reduce, reduced_terms, RefOutput};
use crate::Distance;

/// `‖u − v + ε‖_p` and its gradient with respect to `u` (the gradient for `v` is its
/// negation): `w/‖w‖₂` for p = 2 (0 at 0), `sign(w)` for p = 1; NaN stays NaN.
pub fn pairwise_distance(u: &[f64], v: &[f64], eps: f64, p: u32) -> (f64, Vec<f64>) {
    let w: Vec<f64> = u.iter().zip(v).map(|(a, b)| a - b + eps).collect();
    if p == 1 {
        let d = w.iter().map(|x| x.abs()).sum();
        // sign, with sign(0) = 0 and NaN kept.
        let g = w
            .iter()
            .map(|&x| if x == 0.0 { 0.0 } else { x.signum() })
            .collect();
        (d, g)
    } else {
        let d = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        let g = w
            .iter()
            .map(|&x| if d == 0.0 { 0.0 } else { x / d })
            .collect();
        (d, g)
    }
}

/// Contrastive loss of `n` pairs of rows of `dim` (docs/LOSSES.md); gradients `x1`, `x2`.
pub fn contrastive(
    opts: &Contrastive,
    x1: &[f64],
    x2: &[f64],
    y: &[f64],
    dim: usize,
    upstream: &[f64],
) -> RefOutput {
    let n = y.len();
    let (m, eps) = (opts.margin as f64, opts.eps as f64);
    let mut losses = Vec::with_capacity(n);
    let mut coefs = Vec::with_capacity(n);
    let mut dirs = Vec::with_capacity(n);
    // The hinge m − d cancels terms of size |m| + d: its f32 error is absolute at that
    // scale, and the loss's, ½ hinge², is that times the hinge.
    let mut loss_terms = Vec::with_capacity(n);
    for (i, &yi) in y.iter().enumerate() {
        let rows = i * dim..(i + 1) * dim;
        let (d, g) = pairwise_distance(&x1[rows.clone()], &x2[rows], eps, 2);
        let hinge = relu(m - d);
        losses.push(0.5 * (yi * d * d + (1.0 - yi) * hinge * hinge));
        loss_terms.push((yi * d * d + (1.0 - yi) * hinge * (m.abs() + d)).abs());
        coefs.push(yi * d - (1.0 - yi) * hinge);
        dirs.push(g);
    }
    let (loss, scale) = reduce(&losses, opts.reduction, n as f64, upstream);
    let mut g1 = vec![0.0; n * dim];
    let mut terms = 0.0f64;
    for i in 0..n {
        let c = coefs[i] * scale(i);
        terms = terms.max(c.abs());
        for k in 0..dim {
            g1[i * dim + k] = c * dirs[i][k];
        }
    }
    let g2 = g1.iter().map(|g| -g).collect();
    RefOutput {
        loss,
        grads: grads(opts.gradient, vec![("x1", g1), ("x2", g2)]),
        grad_terms: terms,
        loss_terms: reduced_terms(&loss_terms, opts.reduction, n as f64),
        decision_gap: f64::INFINITY,
    }
}

/// Cosine embedding loss of `n` pairs of rows of `dim` with labels ±1 (docs/LOSSES.md), as
/// PyTorch composes it: magnitudes with 1e−12 added, `1 − cos` or `max(0, cos − margin)`
/// (no gradient at 0: its in-place `clamp_min_`); gradients `x1`, `x2`.
pub fn cosine_embedding(
    opts: &CosineEmbedding,
    x1: &[f64],
    x2: &[f64],
    y: &[f64],
    dim: usize,
    upstream: &[f64],
) -> RefOutput {
    let n = y.len();
    let m = opts.margin as f64;
    let (mut losses, mut parts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // The hinge's kink: where cos − margin is within f32 rounding of cos (|cos| ≤ 1) of 0,
    // f32 may decide the other way (a loss of 0 against a tiny one).
    let mut gap = f64::INFINITY;
    for (i, &yi) in y.iter().enumerate() {
        let (a, b) = (&x1[i * dim..(i + 1) * dim], &x2[i * dim..(i + 1) * dim]);
        let dot: f64 = a.iter().zip(b).map(|(u, v)| u * v).sum();
        let ma = a.iter().map(|u| u * u).sum::<f64>() + 1e-12;
        let mb = b.iter().map(|v| v * v).sum::<f64>() + 1e-12;
        let denom = (ma * mb).sqrt();
        let cos = dot / denom;
        let (loss, dl) = if yi == 1.0 {
            (1.0 - cos, -1.0)
        } else if cos - m > 0.0 {
            (cos - m, 1.0)
        } else {
            (relu(cos - m), 0.0)
        };
        if yi != 1.0 {
            gap = gap.min((cos - m).abs());
        }
        losses.push(loss);
        parts.push((dl, cos, denom, ma, mb));
    }
    let (loss, scale) = reduce(&losses, opts.reduction, n as f64, upstream);
    let (mut g1, mut g2) = (vec![0.0; n * dim], vec![0.0; n * dim]);
    let mut terms = 0.0f64;
    for (i, &(dl, cos, denom, ma, mb)) in parts.iter().enumerate() {
        let c = dl * scale(i);
        for k in 0..dim {
            let (a, b) = (x1[i * dim + k], x2[i * dim + k]);
            let (ta, tb) = (b / denom, cos * a / ma);
            let (ua, ub) = (a / denom, cos * b / mb);
            g1[i * dim + k] = c * (ta - tb);
            g2[i * dim + k] = c * (ua - ub);
            // Either input's two terms cancel when the rows are nearly parallel: x2's are the
            // large ones when x2 is the short row.
            terms = terms.max(c.abs() * (ta.abs() + tb.abs()).max(ua.abs() + ub.abs()));
        }
    }
    RefOutput {
        loss,
        grads: grads(opts.gradient, vec![("x1", g1), ("x2", g2)]),
        grad_terms: terms,
        // 1 − cos and cos − margin cancel terms of magnitude up to 1 (and the margin).
        loss_terms: 1.0f64.max(m.abs()),
        decision_gap: gap,
    }
}

/// max(0, v) that keeps NaN (as `clamp_min`).
fn relu(v: f64) -> f64 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

fn grads(gradient: bool, g: Vec<(&'static str, Vec<f64>)>) -> Vec<(&'static str, Vec<f64>)> {
    if gradient {
        g
    } else {
        Vec::new()
    }
}

/// `1 − F.cosine_similarity(u, v)` (each norm clamped at 1e-8) and its gradient in `u`, as
/// PyTorch differentiates it: `−v / (n_u n_v) + cos · u / (n_u ‖u‖)`, the second term 0 for
/// a zero row. (By symmetry the gradient in `v` is this with `u` and `v` exchanged; the
/// callers below use the first-argument gradient and `cosine_distance(v, u)`.) Third: the
/// largest `|v_k/(n_u n_v)| + |cos·u_k/(n_u‖u‖)|`, the terms whose f32 difference forms a
/// gradient element (they cancel, for nearly parallel rows, to far below their size).
pub fn cosine_distance(u: &[f64], v: &[f64]) -> (f64, Vec<f64>, f64) {
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let (lu, lv) = (dot(u, u).sqrt(), dot(v, v).sqrt());
    let (nu, nv) = (lu.max(COSINE_EPS), lv.max(COSINE_EPS));
    let cos = dot(u, v) / (nu * nv);
    let mut terms = 0.0f64;
    let grad = u
        .iter()
        .zip(v)
        .map(|(&x, &y)| {
            let radial = if lu == 0.0 { 0.0 } else { cos * x / (nu * lu) };
            terms = terms.max((y / (nu * nv)).abs() + radial.abs());
            -(y / (nu * nv) - radial)
        })
        .collect();
    (1.0 - cos, grad, terms)
}

/// Triplet margin loss of `n` rows of `dim` (docs/LOSSES.md, `F.triplet_margin_loss`, and
/// `TripletMarginWithDistanceLoss` with the cosine distance); gradients `anchor`,
/// `positive`, `negative`. With `swap`, equal distances share the gradient equally, as
/// `torch.min` does.
pub fn triplet(
    opts: &Triplet,
    anchor: &[f64],
    positive: &[f64],
    negative: &[f64],
    dim: usize,
    upstream: &[f64],
) -> RefOutput {
    let n = anchor.len() / dim.max(1);
    let (m, eps, p) = (opts.margin as f64, opts.eps as f64, opts.p);
    let mut losses = Vec::with_capacity(n);
    // Per row: |m| + d_ap + d_neg, the terms whose f32 difference forms its loss.
    let mut loss_terms = Vec::with_capacity(n);
    // Per row: (d l/d d_ap, d l/d d_an, d l/d d_pn) and the three distance gradients.
    let mut parts = Vec::with_capacity(n);
    let mut gap = f64::INFINITY;
    let mut dist_scale = 1.0f64;
    for i in 0..n {
        let r = i * dim..(i + 1) * dim;
        let (a, pos, neg) = (&anchor[r.clone()], &positive[r.clone()], &negative[r]);
        // The distance, its gradients in both rows and the size of the terms they are formed
        // from (1 for the p-norm's, whose gradient is a unit vector).
        let distance = |u: &[f64], v: &[f64]| match opts.distance {
            Distance::Cosine => {
                let ((d, gu, tu), (_, gv, tv)) = (cosine_distance(u, v), cosine_distance(v, u));
                (d, (gu, gv), tu.max(tv))
            }
            _ => {
                let (d, gu) = pairwise_distance(u, v, eps, p);
                let gv = gu.iter().map(|g| -g).collect();
                (d, (gu, gv), 1.0)
            }
        };
        let (d_ap, g_ap, t_ap) = distance(a, pos);
        let (d_an, g_an, t_an) = distance(a, neg);
        let (d_pn, g_pn, t_pn) = distance(pos, neg);
        let (d_neg, w_an, w_pn) = if !opts.swap || d_an < d_pn {
            (d_an, 1.0, 0.0)
        } else if d_pn < d_an {
            (d_pn, 0.0, 1.0)
        } else {
            (d_an, 0.5, 0.5)
        };
        let t = m + d_ap - d_neg;
        dist_scale = dist_scale.max(d_ap).max(d_an);
        gap = gap.min(t.abs());
        if opts.swap {
            gap = gap.min((d_an - d_pn).abs());
        }
        losses.push(relu(t));
        loss_terms.push(m.abs() + d_ap + d_neg);
        // clamp_min's gradient passes where t >= 0, as in PyTorch.
        let on = if t >= 0.0 { 1.0 } else { 0.0 };
        let size = t_ap.max(t_an).max(if opts.swap { t_pn } else { 0.0 });
        parts.push(([on, -on * w_an, -on * w_pn], [g_ap, g_an, g_pn], size));
    }
    let (loss, scale) = reduce(&losses, opts.reduction, n as f64, upstream);
    let (mut ga, mut gp, mut gn) = (vec![0.0; n * dim], vec![0.0; n * dim], vec![0.0; n * dim]);
    let mut terms = 0.0f64;
    for (i, ([c_ap, c_an, c_pn], [g_ap, g_an, g_pn], size)) in parts.iter().enumerate() {
        let s = scale(i);
        terms = terms.max(s.abs() * size);
        for k in 0..dim {
            let j = i * dim + k;
            // d_ap = d(a, p), d_an = d(a, n), d_pn = d(p, n), each with its gradient in its
            // first and its second row.
            ga[j] = s * (c_ap * g_ap.0[k] + c_an * g_an.0[k]);
            // d(p, n) enters only with swap, as in PyTorch (which computes it only then):
            // a NaN positive must not reach the negative's gradient through it.
            let (pn_p, pn_n) = if opts.swap {
                (c_pn * g_pn.0[k], c_pn * g_pn.1[k])
            } else {
                (0.0, 0.0)
            };
            gp[j] = s * (c_ap * g_ap.1[k] + pn_p);
            gn[j] = s * (c_an * g_an.1[k] + pn_n);
        }
    }
    RefOutput {
        loss,
        grads: grads(
            opts.gradient,
            vec![("anchor", ga), ("positive", gp), ("negative", gn)],
        ),
        grad_terms: terms,
        loss_terms: reduced_terms(&loss_terms, opts.reduction, n as f64),
        decision_gap: gap / dist_scale,
    }
}
