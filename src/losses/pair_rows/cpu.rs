//! Contrastive and triplet losses on the CPU, the twin of `shaders/pair_rows.wgsl`: rows in
//! parallel, each row's distances accumulated in f64.

use rayon::prelude::*;

use super::{check, first_bad_sign, Args, Contrastive, CosineEmbedding, Triplet, COSINE_EPS};
use crate::core::{
    host_rows, widened, written_as, Arg, DType, Element, LossValues, Reduction, Upstream,
};
use crate::error::Result;
use crate::Distance;

/// Sum of `|w|` (p = 1) or `w²` (p = 2) over `w = u − v + eps` (w in f32 as on the GPU),
/// in eight f64 lanes (they vectorize; f64 keeps huge rows from overflowing).
#[inline(always)]
fn norm_sum(u: &[f32], v: &[f32], eps: f32, p: u32) -> f64 {
    let term = |a: f32, b: f32| {
        let w = (a - b + eps) as f64;
        if p == 1 {
            w.abs()
        } else {
            w * w
        }
    };
    let mut lanes = [0.0f64; 8];
    let (cu, cv) = (u.chunks_exact(8), v.chunks_exact(8));
    let tail: f64 = cu
        .remainder()
        .iter()
        .zip(cv.remainder())
        .map(|(&a, &b)| term(a, b))
        .sum();
    for (a, b) in cu.zip(cv) {
        for l in 0..8 {
            lanes[l] += term(a[l], b[l]);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

fn norm(sum: f64, p: u32) -> f64 {
    if p == 1 {
        sum
    } else {
        sum.sqrt()
    }
}

/// The row factor f of d‖w‖_p/dw times `c`: the element's gradient is [`norm_grad`](w, f).
fn grad_factor(c: f64, d: f64, p: u32) -> f64 {
    match p {
        1 => c,
        _ if d == 0.0 => 0.0,
        _ => c / d,
    }
}

/// c·d‖w‖_p/dw for one element from its row's factor: w·c/d (p = 2) or c·sign(w) (p = 1,
/// 0 at w = 0); NaN stays NaN.
#[inline(always)]
fn norm_grad(w: f32, f: f64, p: u32) -> f64 {
    let w = w as f64;
    if p == 1 {
        if w == 0.0 {
            0.0
        } else {
            w.signum() * f
        }
    } else {
        w * f
    }
}

fn relu(v: f64) -> f64 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// Checks options and inputs by the family's rules ([`super::check`]); gives (N, D).
fn check_host(
    rows: &[(&'static str, &[f32])],
    dtype: DType,
    y: Option<&[f32]>,
    dim: usize,
    upstream: Upstream<'_, [f32]>,
    reduction: Reduction,
) -> Result<(usize, usize)> {
    let shapes: Vec<Vec<usize>> = rows.iter().map(|(_, r)| host_rows(r.len(), dim)).collect();
    let rows: Vec<_> = rows
        .iter()
        .zip(&shapes)
        .map(|(&(name, _), s)| (name, Arg { shape: s, dtype }))
        .collect();
    let y_shape = y.map(|y| [y.len()]);
    let (scalar_upstream, per_item) = upstream.split(|g| [g.len()]);
    let args = Args {
        rows: &rows,
        y: y_shape.as_ref().map(|s| Arg::f32(s)),
        scalar_upstream,
        per_item_upstream: per_item.as_ref().map(|s| Arg::f32(s)),
    };
    check(&args, reduction)
}

/// Per-row loss and the scale of each row's gradient, with the reduction applied.
fn reduce(losses: Vec<f64>, reduction: Reduction, upstream: &[f32]) -> (Vec<f32>, Vec<f64>) {
    let n = losses.len();
    let denom = if reduction == Reduction::Mean {
        n as f64
    } else {
        1.0
    };
    let up = |i: usize| *upstream.get(i).or(upstream.first()).unwrap_or(&1.0) as f64;
    let scales = (0..n).map(|i| up(i) / denom).collect();
    let loss = match reduction {
        Reduction::None => losses.iter().map(|&l| l as f32).collect(),
        _ => vec![(losses.iter().sum::<f64>() / denom) as f32],
    };
    (loss, scales)
}

/// Host inputs of [`contrastive`]; the fields mirror [`crate::ContrastiveInputs`]. The rows
/// may be f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostContrastiveInputs<'a, T: Element = f32> {
    /// First rows `[N, dim]`, row-major.
    pub x1: &'a [T],
    /// Second rows `[N, dim]`.
    pub x2: &'a [T],
    /// Labels `[N]` (1 similar, 0 not).
    pub y: &'a [f32],
    /// Row length D.
    pub dim: usize,
    /// Gradient from above: a scalar, or one per row with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// Host inputs of [`triplet`]; the fields mirror [`crate::TripletInputs`]. The rows may be
/// f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostTripletInputs<'a, T: Element = f32> {
    /// Anchors `[N, dim]`, row-major.
    pub anchor: &'a [T],
    /// Positives `[N, dim]`.
    pub positive: &'a [T],
    /// Negatives `[N, dim]`.
    pub negative: &'a [T],
    /// Row length D.
    pub dim: usize,
    /// Gradient from above: a scalar, or one per row with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// Contrastive loss of rows `x1`, `x2` with labels `y`, on the CPU. 16-bit rows are widened
/// (exactly) and the gradients come back as written in `opts.grad_dtype` (by default the
/// rows' type).
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for lengths that do not match.
pub fn contrastive<T: Element>(
    opts: &Contrastive,
    inputs: &HostContrastiveInputs<'_, T>,
) -> Result<LossValues> {
    let (x1, x2) = (widened(inputs.x1), widened(inputs.x2));
    let (x1, x2, y, dim) = (&x1[..], &x2[..], inputs.y, inputs.dim);
    let upstream = &inputs.upstream.values();
    opts.validate()?;
    let (n, _) = check_host(
        &[("x1", x1), ("x2", x2)],
        T::DTYPE,
        Some(y),
        dim,
        inputs.upstream,
        opts.reduction,
    )?;
    let (m, eps) = (opts.margin as f64, opts.eps);
    // (loss, d l/d d, d) per row.
    let rows: Vec<(f64, f64, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let r = i * dim..(i + 1) * dim;
            let d = norm_sum(&x1[r.clone()], &x2[r], eps, 2).sqrt();
            let yi = y[i] as f64;
            let hinge = relu(m - d);
            let loss = 0.5 * (yi * d * d + (1.0 - yi) * hinge * hinge);
            (loss, yi * d - (1.0 - yi) * hinge, d)
        })
        .collect();
    let (loss, scales) = reduce(rows.iter().map(|r| r.0).collect(), opts.reduction, upstream);
    let mut grads = Vec::new();
    if opts.gradient {
        let (mut g1, mut g2) = (vec![0.0f32; n * dim], vec![0.0f32; n * dim]);
        g1.par_chunks_mut(dim.max(1))
            .zip(g2.par_chunks_mut(dim.max(1)))
            .enumerate()
            .for_each(|(i, (g1, g2))| {
                let f = grad_factor(rows[i].1 * scales[i], rows[i].2, 2);
                let r = i * dim..(i + 1) * dim;
                for (((a, b), g1), g2) in x1[r.clone()].iter().zip(&x2[r]).zip(g1).zip(g2) {
                    let g = norm_grad(a - b + eps, f, 2) as f32;
                    (*g1, *g2) = (g, -g);
                }
            });
        grads = vec![("x1", g1), ("x2", g2)];
    }
    let grad_type = opts.grad_dtype.unwrap_or(T::DTYPE);
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        grad_type,
    ))
}

/// Cosine embedding loss of rows `x1`, `x2` with labels `y` ∈ {−1, +1} (the inputs of
/// [`contrastive`]), on the CPU; 16-bit rows as in [`contrastive`].
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for lengths that do not match;
/// [`Error::Value`](crate::Error::Value) naming the first label that is not ±1.
pub fn cosine_embedding<T: Element>(
    opts: &CosineEmbedding,
    inputs: &HostContrastiveInputs<'_, T>,
) -> Result<LossValues> {
    let (x1, x2) = (widened(inputs.x1), widened(inputs.x2));
    let (x1, x2, y, dim) = (&x1[..], &x2[..], inputs.y, inputs.dim);
    let upstream = &inputs.upstream.values();
    opts.validate()?;
    let (n, _) = check_host(
        &[("x1", x1), ("x2", x2)],
        T::DTYPE,
        Some(y),
        dim,
        inputs.upstream,
        opts.reduction,
    )?;
    if let Some((row, value)) = first_bad_sign(y) {
        return Err(crate::Error::Value {
            input: "y",
            row,
            value: value.to_string(),
            reason: "labels must be -1 or +1".into(),
        });
    }
    let m = opts.margin as f64;
    // (loss, d loss/d cos, cos, denominator, |x1|² + ε, |x2|² + ε) per row, in f64.
    let rows: Vec<[f64; 6]> = (0..n)
        .into_par_iter()
        .map(|i| {
            let r = i * dim..(i + 1) * dim;
            let (a, b) = (&x1[r.clone()], &x2[r]);
            let dot: f64 = a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum();
            let ma = a.iter().map(|&u| u as f64 * u as f64).sum::<f64>() + 1e-12;
            let mb = b.iter().map(|&v| v as f64 * v as f64).sum::<f64>() + 1e-12;
            let denom = (ma * mb).sqrt();
            let cos = dot / denom;
            let (loss, dl) = if y[i] == 1.0 {
                (1.0 - cos, -1.0)
            } else if cos - m > 0.0 {
                (cos - m, 1.0)
            } else {
                (relu(cos - m), 0.0)
            };
            [loss, dl, cos, denom, ma, mb]
        })
        .collect();
    let (loss, scales) = reduce(
        rows.iter().map(|r| r[0]).collect(),
        opts.reduction,
        upstream,
    );
    let mut grads = Vec::new();
    if opts.gradient {
        let (mut g1, mut g2) = (vec![0.0f32; n * dim], vec![0.0f32; n * dim]);
        g1.par_chunks_mut(dim.max(1))
            .zip(g2.par_chunks_mut(dim.max(1)))
            .enumerate()
            .for_each(|(i, (g1, g2))| {
                let [_, dl, cos, denom, ma, mb] = rows[i];
                let c = dl * scales[i];
                let r = i * dim..(i + 1) * dim;
                for (((&a, &b), g1), g2) in x1[r.clone()].iter().zip(&x2[r]).zip(g1).zip(g2) {
                    let (a, b) = (a as f64, b as f64);
                    *g1 = (c * (b / denom - cos * a / ma)) as f32;
                    *g2 = (c * (a / denom - cos * b / mb)) as f32;
                }
            });
        grads = vec![("x1", g1), ("x2", g2)];
    }
    let grad_type = opts.grad_dtype.unwrap_or(T::DTYPE);
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        grad_type,
    ))
}

/// Triplet margin loss of rows `anchor`, `positive`, `negative`, on the CPU; 16-bit rows as
/// in [`contrastive`].
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for lengths that do not match.
pub fn triplet<T: Element>(
    opts: &Triplet,
    inputs: &HostTripletInputs<'_, T>,
) -> Result<LossValues> {
    let rows = [inputs.anchor, inputs.positive, inputs.negative].map(widened);
    let (a, p, ng, dim) = (&rows[0][..], &rows[1][..], &rows[2][..], inputs.dim);
    let upstream = &inputs.upstream.values();
    opts.validate()?;
    let (n, _) = check_host(
        &[("anchor", a), ("positive", p), ("negative", ng)],
        T::DTYPE,
        None,
        dim,
        inputs.upstream,
        opts.reduction,
    )?;
    if opts.distance == Distance::Cosine {
        return triplet_cosine(opts, [a, p, ng], n, dim, upstream, T::DTYPE);
    }
    let (m, eps, pn) = (opts.margin as f64, opts.eps, opts.p);
    // (loss, coefficients of d_ap, d_an, d_pn, the three distances) per row.
    let rows: Vec<(f64, [f64; 3], [f64; 3])> = (0..n)
        .into_par_iter()
        .map(|i| {
            let r = i * dim..(i + 1) * dim;
            let (ai, pi, ni) = (&a[r.clone()], &p[r.clone()], &ng[r]);
            let d_ap = norm(norm_sum(ai, pi, eps, pn), pn);
            let d_an = norm(norm_sum(ai, ni, eps, pn), pn);
            let d_pn = if opts.swap {
                norm(norm_sum(pi, ni, eps, pn), pn)
            } else {
                0.0
            };
            let (d_neg, w) = negative_weights(opts.swap, d_an, d_pn);
            let t = m + d_ap - d_neg;
            let on = if t >= 0.0 { 1.0 } else { 0.0 };
            (relu(t), [on, -on * w[0], -on * w[1]], [d_ap, d_an, d_pn])
        })
        .collect();
    let (loss, scales) = reduce(rows.iter().map(|r| r.0).collect(), opts.reduction, upstream);
    let mut grads = Vec::new();
    if opts.gradient {
        let (mut ga, mut gp, mut gn) = (
            vec![0.0f32; n * dim],
            vec![0.0; n * dim],
            vec![0.0; n * dim],
        );
        ga.par_chunks_mut(dim.max(1))
            .zip(gp.par_chunks_mut(dim.max(1)))
            .zip(gn.par_chunks_mut(dim.max(1)))
            .enumerate()
            .for_each(|(i, ((ga, gp), gn))| {
                let (_, c, d) = rows[i];
                let f: [f64; 3] = std::array::from_fn(|k| grad_factor(c[k] * scales[i], d[k], pn));
                let r = i * dim..(i + 1) * dim;
                let (ai, pi, ni) = (&a[r.clone()], &p[r.clone()], &ng[r]);
                for k in 0..dim {
                    let g_ap = norm_grad(ai[k] - pi[k] + eps, f[0], pn);
                    let g_an = norm_grad(ai[k] - ni[k] + eps, f[1], pn);
                    let g_pn = if opts.swap {
                        norm_grad(pi[k] - ni[k] + eps, f[2], pn)
                    } else {
                        0.0
                    };
                    ga[k] = (g_ap + g_an) as f32;
                    gp[k] = (-g_ap + g_pn) as f32;
                    gn[k] = (-g_an - g_pn) as f32;
                }
            });
        grads = vec![("anchor", ga), ("positive", gp), ("negative", gn)];
    }
    let grad_type = opts.grad_dtype.unwrap_or(T::DTYPE);
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        grad_type,
    ))
}

/// The weight of each side of a swapped negative distance: (d(a,n), d(p,n)); ties share it
/// as `torch.minimum` does.
fn negative_weights(swap: bool, d_an: f64, d_pn: f64) -> (f64, [f64; 2]) {
    if !swap || d_an < d_pn {
        (d_an, [1.0, 0.0])
    } else if d_pn < d_an {
        (d_pn, [0.0, 1.0])
    } else {
        (d_an, [0.5, 0.5])
    }
}

/// ∂cos(x, y)/∂x as PyTorch differentiates `F.cosine_similarity` (norms clamped at ε):
/// `y / (n_x n_y) − cos · x / (n_x ‖x‖)`, the second term 0 for a zero row.
fn cos_grad(x: f64, y: f64, n: [f64; 2], len_x: f64, cos: f64) -> f64 {
    let radial = if len_x == 0.0 {
        0.0
    } else {
        cos * x / (n[0] * len_x)
    };
    y / (n[0] * n[1]) - radial
}

/// The triplet loss over `d(u, v) = 1 − cos(u, v)`: the twin of the kernel's TRIPLET_COSINE.
fn triplet_cosine(
    opts: &Triplet,
    [a, p, ng]: [&[f32]; 3],
    n: usize,
    dim: usize,
    upstream: &[f32],
    dtype: DType,
) -> Result<LossValues> {
    let m = opts.margin as f64;
    let dot =
        |u: &[f32], v: &[f32]| -> f64 { u.iter().zip(v).map(|(&x, &y)| x as f64 * y as f64).sum() };
    /// A row's loss, coefficients of d(a,p), d(a,n), d(p,n), the lengths of a, p, n and the
    /// cosines of (a,p), (a,n), (p,n).
    type CosineRow = (f64, [f64; 3], [f64; 3], [f64; 3]);
    let rows: Vec<CosineRow> = (0..n)
        .into_par_iter()
        .map(|i| {
            let r = i * dim..(i + 1) * dim;
            let (ai, pi, ni) = (&a[r.clone()], &p[r.clone()], &ng[r]);
            let len = [dot(ai, ai), dot(pi, pi), dot(ni, ni)].map(f64::sqrt);
            let nrm = len.map(|l| l.max(COSINE_EPS));
            let cos = [
                dot(ai, pi) / (nrm[0] * nrm[1]),
                dot(ai, ni) / (nrm[0] * nrm[2]),
                dot(pi, ni) / (nrm[1] * nrm[2]),
            ];
            let (d_ap, d_an, d_pn) = (1.0 - cos[0], 1.0 - cos[1], 1.0 - cos[2]);
            let (d_neg, w) = negative_weights(opts.swap, d_an, d_pn);
            let t = m + d_ap - d_neg;
            let on = if t >= 0.0 { 1.0 } else { 0.0 };
            (relu(t), [on, -on * w[0], -on * w[1]], len, cos)
        })
        .collect();
    let (loss, scales) = reduce(rows.iter().map(|r| r.0).collect(), opts.reduction, upstream);
    let mut grads = Vec::new();
    if opts.gradient {
        let (mut ga, mut gp, mut gn) = (
            vec![0.0f32; n * dim],
            vec![0.0; n * dim],
            vec![0.0; n * dim],
        );
        ga.par_chunks_mut(dim.max(1))
            .zip(gp.par_chunks_mut(dim.max(1)))
            .zip(gn.par_chunks_mut(dim.max(1)))
            .enumerate()
            .for_each(|(i, ((ga, gp), gn))| {
                let (_, c, len, cos) = rows[i];
                let c = c.map(|c| c * scales[i]);
                let nrm = len.map(|l| l.max(COSINE_EPS));
                let r = i * dim..(i + 1) * dim;
                let (ai, pi, ni) = (&a[r.clone()], &p[r.clone()], &ng[r]);
                for k in 0..dim {
                    let (x, y, z) = (ai[k] as f64, pi[k] as f64, ni[k] as f64);
                    // Each distance's gradient is −∂cos; d(p, n) only with swap.
                    let mut g = [
                        -c[0] * cos_grad(x, y, [nrm[0], nrm[1]], len[0], cos[0])
                            - c[1] * cos_grad(x, z, [nrm[0], nrm[2]], len[0], cos[1]),
                        -c[0] * cos_grad(y, x, [nrm[1], nrm[0]], len[1], cos[0]),
                        -c[1] * cos_grad(z, x, [nrm[2], nrm[0]], len[2], cos[1]),
                    ];
                    if opts.swap {
                        g[1] -= c[2] * cos_grad(y, z, [nrm[1], nrm[2]], len[1], cos[2]);
                        g[2] -= c[2] * cos_grad(z, y, [nrm[2], nrm[1]], len[2], cos[2]);
                    }
                    ga[k] = g[0] as f32;
                    gp[k] = g[1] as f32;
                    gn[k] = g[2] as f32;
                }
            });
        grads = vec![("anchor", ga), ("positive", gp), ("negative", gn)];
    }
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        opts.grad_dtype.unwrap_or(dtype),
    ))
}
