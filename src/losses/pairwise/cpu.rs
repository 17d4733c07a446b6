//! InfoNCE losses and mined triplets on the CPU, the twin of `shaders/pairwise.wgsl`:
//! anchors in parallel, similarities recomputed in the backward pass (memory O(N·D) for
//! InfoNCE, as on the GPU), distances in f32 with f64 sums where results accumulate.

use rayon::prelude::*;

use super::simd;
use super::{Args, Distance, InfoNce, MinedTriplet, Mining, NceKind, NORM_EPS};
use crate::core::cpu_math::exp;
use crate::core::{host_rows, widened, written_as, Arg, DType, Element, LossValues, Upstream};
use crate::error::Result;

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
            // `max` would drop a NaN norm; PyTorch's clamp_min keeps it (the row turns NaN).
            let div = if norm < NORM_EPS { NORM_EPS } else { norm };
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
                *gk = if norm < NORM_EPS {
                    *gk / NORM_EPS
                } else {
                    ((*gk as f64 - *nk as f64 * d) / norm as f64) as f32
                };
            }
        });
}

/// Anchors per block: a candidate row is reused from L1 for all of them.
const BLOCK: usize = 4;
/// Candidates per chunk: their scores stay in a small buffer so the exps vectorize.
const CHUNK: usize = 64;

/// What the backward pass needs of each anchor's forward: its log-sum-exp and 1/|P| (0 for
/// an anchor without positives), as arrays the coefficient loop reads lane by lane.
struct Saved {
    lse: Vec<f32>,
    inv: Vec<f32>,
}

/// One InfoNCE problem over stacked unit rows (see [`info_nce`]).
struct Nce<'a> {
    unit: &'a [f32],
    dim: usize,
    labels: &'a [i32],
    inv_tau: f32,
    clip: bool,
    half: usize,
    /// Whether the AVX2 + FMA blocks of [`simd`] run (the CPU has them, `dim` fits).
    fma: bool,
}

impl Nce<'_> {
    #[inline(always)]
    fn row(&self, i: usize) -> &[f32] {
        &self.unit[i * self.dim..(i + 1) * self.dim]
    }

    /// The candidates of anchor `i` (all rows but itself; clip: the other half).
    fn candidates(&self, i: usize) -> std::ops::Range<usize> {
        let m = self.labels.len();
        match (self.clip, i < self.half) {
            (true, true) => self.half..m,
            (true, false) => 0..self.half,
            _ => 0..m,
        }
    }

    /// Scores s = q·k/τ of `anchors` against candidates `js` into `out[a][..]`, with
    /// f32::NEG_INFINITY for an anchor itself (never a candidate).
    #[inline(always)]
    fn scores(
        &self,
        anchors: &std::ops::Range<usize>,
        js: std::ops::Range<usize>,
        out: &mut [[f32; CHUNK]; BLOCK],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.fma {
            // A partial block repeats its last anchor (computed, not stored).
            let q: [&[f32]; BLOCK] =
                std::array::from_fn(|a| self.row((anchors.start + a).min(anchors.end - 1)));
            for t in (0..js.len()).step_by(2) {
                let j = js.start + t;
                let second = (j + 1).min(js.end - 1);
                // SAFETY: `fma` is set where simd::usable(dim) holds; rows have length dim.
                let d = unsafe { simd::dots_4x2(q, [self.row(j), self.row(second)]) };
                for a in 0..anchors.len() {
                    out[a][t] = d[a][0];
                    if j + 1 < js.end {
                        out[a][t + 1] = d[a][1];
                    }
                }
            }
            for (a, i) in anchors.clone().enumerate() {
                for (t, j) in js.clone().enumerate() {
                    out[a][t] = if i == j && !self.clip {
                        f32::NEG_INFINITY
                    } else {
                        out[a][t] * self.inv_tau
                    };
                }
            }
            return;
        }
        for (t, j) in js.enumerate() {
            for (a, i) in anchors.clone().enumerate() {
                out[a][t] = if i == j && !self.clip {
                    f32::NEG_INFINITY
                } else {
                    dot(self.row(i), self.row(j)) * self.inv_tau
                };
            }
        }
    }

    /// (lse, 1/|P|, loss) of each anchor in `anchors` (all with the same candidates). Runs
    /// the AVX2 build of the same code where the CPU has it; with FMA too, the products run in
    /// [`simd`]'s blocks (fused multiply-adds: other roundings than the portable loops, so
    /// results depend on the CPU's instruction set, never on the thread count).
    fn forward(&self, anchors: std::ops::Range<usize>) -> Vec<(f32, f32, f64)> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.forward_avx2(anchors) };
        }
        self.forward_portable(anchors)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, anchors: std::ops::Range<usize>) -> Vec<(f32, f32, f64)> {
        self.forward_portable(anchors)
    }

    /// G for the anchors from `first` (rows of `g`); AVX2 where the CPU has it.
    fn backward(&self, first: usize, g: &mut [f32], saved: &Saved, w: f32) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.backward_avx2(first, g, saved, w) };
        }
        self.backward_portable(first, g, saved, w)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn backward_avx2(&self, first: usize, g: &mut [f32], saved: &Saved, w: f32) {
        self.backward_portable(first, g, saved, w)
    }

    #[inline(always)]
    fn forward_portable(&self, anchors: std::ops::Range<usize>) -> Vec<(f32, f32, f64)> {
        let cands = self.candidates(anchors.start);
        let mut s = [[0.0f32; CHUNK]; BLOCK];
        let mut state = [(f32::NEG_INFINITY, 0.0f64, 0.0f64, 0.0f64); BLOCK];
        for c0 in cands.clone().step_by(CHUNK) {
            let js = c0..(c0 + CHUNK).min(cands.end);
            self.scores(&anchors, js.clone(), &mut s);
            let mut labels = [0i32; CHUNK];
            labels[..js.len()].copy_from_slice(&self.labels[js.clone()]);
            for (a, i) in anchors.clone().enumerate() {
                // Fixed-length loops over eight lanes, the chunk's tail padded with −inf (as
                // the anchor itself): they vectorize, and −inf adds nothing to any sum.
                let row = &mut s[a];
                row[js.len()..].fill(f32::NEG_INFINITY);
                let (max, sum, pos, count) = &mut state[a];
                let (mut top, mut nan) = ([f32::NEG_INFINITY; 8], [false; 8]);
                for c in row.chunks_exact(8) {
                    for l in 0..8 {
                        top[l] = if c[l] > top[l] { c[l] } else { top[l] };
                        nan[l] |= c[l].is_nan();
                    }
                }
                let m = top.iter().fold(*max, |m, &v| if v > m { v } else { m });
                if nan.contains(&true) || max.is_nan() {
                    // A NaN score makes the anchor's log-sum-exp, so its loss, NaN.
                    *max = f32::NAN;
                    *sum = f64::NAN;
                } else {
                    if m > *max {
                        *sum *= exp(*max - m) as f64;
                        *max = m;
                    }
                    // exp(-inf - m) is ~1e-38 in the fast exp: −inf scores count 0 exactly.
                    let mut acc = [0.0f32; 8];
                    for c in row.chunks_exact(8) {
                        for l in 0..8 {
                            let e = exp(c[l] - m);
                            acc[l] += if c[l] == f32::NEG_INFINITY { 0.0 } else { e };
                        }
                    }
                    *sum += acc.iter().map(|&v| v as f64).sum::<f64>();
                }
                // Positives: same label, not the anchor itself (its score is −inf).
                let label = self.labels[i];
                let (mut ps, mut pc) = ([0.0f32; 8], [0.0f32; 8]);
                for (c, lc) in row.chunks_exact(8).zip(labels.chunks_exact(8)) {
                    for l in 0..8 {
                        let hit = lc[l] == label && c[l] != f32::NEG_INFINITY;
                        ps[l] += if hit { c[l] } else { 0.0 };
                        pc[l] += hit as u32 as f32;
                    }
                }
                *pos += ps.iter().map(|&v| v as f64).sum::<f64>();
                *count += pc.iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        state[..anchors.len()]
            .iter()
            .map(|&(max, sum, pos, count)| {
                let lse = max as f64 + sum.ln();
                if count > 0.0 {
                    (lse as f32, (1.0 / count) as f32, lse - pos / count)
                } else {
                    (lse as f32, 0.0, 0.0)
                }
            })
            .collect()
    }

    /// G for the anchors from `first` (rows of `g`), before the normalization's Jacobian:
    /// Σ_j c_ij·n_j with c_ij = w·[(e^{s−lse_i} − pos/|P(i)|) + (e^{s−lse_j} − pos/|P(j)|)].
    #[inline(always)]
    fn backward_portable(&self, first: usize, g: &mut [f32], saved: &Saved, w: f32) {
        let dim = self.dim;
        let anchors = first..first + g.len() / dim;
        let cands = self.candidates(first);
        let mut s = [[0.0f32; CHUNK]; BLOCK];
        for c0 in cands.clone().step_by(CHUNK) {
            let js = c0..(c0 + CHUNK).min(cands.end);
            self.scores(&anchors, js.clone(), &mut s);
            // The chunk's coefficients first, in loops of their own that vectorize (exps
            // included), then the rows they weigh.
            let mut coef = [[0.0f32; CHUNK]; BLOCK];
            let labels = &self.labels[js.clone()];
            let (lse_j, inv_j) = (&saved.lse[js.clone()], &saved.inv[js.clone()]);
            for (a, i) in anchors.clone().enumerate() {
                let (label, lse_i, inv_i) = (self.labels[i], saved.lse[i], saved.inv[i]);
                // Both terms computed and chosen per value (no branches), so this vectorizes:
                // e^{s−lse} − [positive]/|P| from each side, 0 for an anchor without
                // positives (inv = 0) and for the anchor itself (s = −inf).
                for t in 0..js.len() {
                    let v = s[a][t];
                    let pos = (labels[t] == label) as u32 as f32;
                    let ti = exp(v - lse_i) - pos * inv_i;
                    let tj = exp(v - lse_j[t]) - pos * inv_j[t];
                    let c = w
                        * (if inv_i > 0.0 { ti } else { 0.0 }
                            + if inv_j[t] > 0.0 { tj } else { 0.0 });
                    coef[a][t] = if v == f32::NEG_INFINITY { 0.0 } else { c };
                }
            }
            #[cfg(target_arch = "x86_64")]
            if self.fma && anchors.len() == BLOCK {
                let keys = &self.unit[js.start * dim..js.end * dim];
                let coef = std::array::from_fn(|a| &coef[a][..js.len()]);
                // SAFETY: `fma` is set where simd::usable(dim) holds; g holds the block's
                // BLOCK = 4 rows, keys the chunk's rows, one per coefficient.
                unsafe { simd::accumulate_4(g, coef, keys, dim) };
                continue;
            }
            for a in 0..anchors.len() {
                let gi = &mut g[a * dim..(a + 1) * dim];
                for (t, j) in js.clone().enumerate() {
                    if s[a][t] == f32::NEG_INFINITY {
                        continue;
                    }
                    for (x, &k) in gi.iter_mut().zip(self.row(j)) {
                        *x += coef[a][t] * k;
                    }
                }
            }
        }
    }
}

/// The rows of a CPU InfoNCE loss, by kind; mirrors [`crate::NceRows`].
#[derive(Debug, Clone, Copy)]
pub enum HostNceRows<'a, T: Element = f32> {
    /// nt-xent: `z` `[2N, dim]`, rows i and i+N positives.
    NtXent {
        /// The two views stacked.
        z: &'a [T],
    },
    /// clip: `a`, `b` `[N, dim]`, row i of each a matched pair.
    Clip {
        /// First modality.
        a: &'a [T],
        /// Second modality.
        b: &'a [T],
    },
    /// supcon: `embeddings` `[N, dim]` with `labels` `[N]`.
    SupCon {
        /// The rows.
        embeddings: &'a [T],
        /// Their classes.
        labels: &'a [i32],
    },
}

/// Host inputs of [`info_nce`]; mirrors [`crate::NceInputs`].
#[derive(Debug, Clone, Copy)]
pub struct HostNceInputs<'a, T: Element = f32> {
    /// The rows, by kind (f32, [`half::f16`] or [`half::bf16`]).
    pub rows: HostNceRows<'a, T>,
    /// Row length D.
    pub dim: usize,
    /// Gradient from above (a scalar: the loss is a mean).
    pub upstream: Upstream<'a, [f32]>,
}

/// Host inputs of [`mined_triplet`]; mirrors [`crate::MinedTripletInputs`].
#[derive(Debug, Clone, Copy)]
pub struct HostMinedTripletInputs<'a, T: Element = f32> {
    /// `[N, dim]`, row-major (f32, [`half::f16`] or [`half::bf16`]).
    pub embeddings: &'a [T],
    /// `[N]`.
    pub labels: &'a [i32],
    /// Row length D.
    pub dim: usize,
    /// Gradient from above (a scalar: the loss is a mean).
    pub upstream: Upstream<'a, [f32]>,
}

/// The InfoNCE loss `opts` on the CPU. 16-bit rows are widened (exactly); the gradients come
/// back as written in `opts.grad_dtype` (by default the rows' type).
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for mismatched inputs, labels, or an odd nt-xent batch;
/// [`Error::Unknown`](crate::Error::Unknown) for rows of another kind than `opts.kind`.
pub fn info_nce<T: Element>(opts: &InfoNce, inputs: &HostNceInputs<'_, T>) -> Result<LossValues> {
    let (wide, labels): (Vec<_>, _) = match inputs.rows {
        HostNceRows::NtXent { z } => (vec![widened(z)], None),
        HostNceRows::Clip { a, b } => (vec![widened(a), widened(b)], None),
        HostNceRows::SupCon { embeddings, labels } => (vec![widened(embeddings)], Some(labels)),
    };
    let rows = match (inputs.rows, labels) {
        (HostNceRows::NtXent { .. }, _) => HostNceRows::NtXent { z: &wide[0] },
        (HostNceRows::Clip { .. }, _) => HostNceRows::Clip {
            a: &wide[0],
            b: &wide[1],
        },
        (_, labels) => HostNceRows::SupCon {
            embeddings: &wide[0],
            labels: labels.unwrap_or_default(),
        },
    };
    let f32_inputs = HostNceInputs {
        rows,
        dim: inputs.dim,
        upstream: inputs.upstream,
    };
    let out = info_nce_f32(opts, &f32_inputs)?;
    Ok(written_as(out, opts.grad_dtype.unwrap_or(T::DTYPE)))
}

fn info_nce_f32(opts: &InfoNce, inputs: &HostNceInputs<'_>) -> Result<LossValues> {
    let upstream = inputs.upstream.scalar()?;
    let (kind, rows, labels): (_, Vec<(&'static str, &[f32])>, _) = match inputs.rows {
        HostNceRows::NtXent { z } => (NceKind::NtXent, vec![("z", z)], None),
        HostNceRows::Clip { a, b } => (NceKind::Clip, vec![("a", a), ("b", b)], None),
        HostNceRows::SupCon { embeddings, labels } => (
            NceKind::SupCon,
            vec![("embeddings", embeddings)],
            Some(labels),
        ),
    };
    let shapes: Vec<Vec<usize>> = rows
        .iter()
        .map(|(_, r)| host_rows(r.len(), inputs.dim))
        .collect();
    let args: Vec<_> = rows
        .iter()
        .zip(&shapes)
        .map(|(&(name, _), s)| (name, Arg::f32(s)))
        .collect();
    let label_shape = labels.map(|l| [l.len()]);
    opts.check(&Args {
        kind: Some(kind),
        rows: &args,
        labels: label_shape.as_ref().map(|s| Arg {
            shape: s,
            dtype: DType::I32,
        }),
    })?;
    let rows: Vec<&[f32]> = rows.iter().map(|&(_, r)| r).collect();
    nce(opts, &rows, labels.unwrap_or(&[]), inputs.dim, upstream)
}

/// [`info_nce`] on checked `inputs` `[z]` (nt-xent), `[a, b]` (clip) or `[embeddings]`
/// (supcon, with `labels`), rows of `dim`; `upstream` scales the gradients.
fn nce(
    opts: &InfoNce,
    inputs: &[&[f32]],
    labels: &[i32],
    dim: usize,
    upstream: f32,
) -> Result<LossValues> {
    // One stacked set of m rows with labels, as on the GPU.
    let raw: Vec<f32> = inputs.concat();
    let m = raw.len() / dim;
    let (lab, half): (Vec<i32>, usize) = match opts.kind {
        NceKind::NtXent | NceKind::Clip => ((0..m).map(|i| (i % (m / 2)) as i32).collect(), m / 2),
        NceKind::SupCon => (labels.to_vec(), 0),
    };
    let clip = opts.kind == NceKind::Clip;
    let (unit, norms) = normalize(&raw, dim);
    let inv_tau = 1.0 / opts.temperature;
    let nce = Nce {
        unit: &unit,
        dim,
        labels: &lab,
        inv_tau,
        clip,
        half,
        fma: BLOCK == 4 && super::simd::usable(dim),
    };
    // Anchors sharing their candidates (clip: each half), in blocks.
    // (start, end) of each part.
    let parts: &[(usize, usize)] = if clip {
        &[(0, half), (half, m)]
    } else {
        &[(0, m)]
    };
    let blocks: Vec<std::ops::Range<usize>> = parts
        .iter()
        .flat_map(|&(start, end)| {
            (start..end)
                .step_by(BLOCK)
                .map(move |b| b..(b + BLOCK).min(end))
        })
        .collect();
    // Per anchor: (lse, 1/|P|, loss), from blocks of anchors against chunks of candidates.
    let stats: Vec<(f32, f32, f64)> = blocks
        .par_iter()
        .flat_map_iter(|b| nce.forward(b.clone()))
        .collect();
    let anchors = stats.iter().filter(|s| s.1 > 0.0).count() as f64;
    let total: f64 = stats.iter().map(|s| s.2).sum();
    let loss = if anchors > 0.0 { total / anchors } else { 0.0 };
    let mut grads = Vec::new();
    if opts.gradient {
        let w = if anchors > 0.0 {
            (upstream as f64 / anchors * inv_tau as f64) as f32
        } else {
            0.0
        };
        let saved = Saved {
            lse: stats.iter().map(|s| s.0).collect(),
            inv: stats.iter().map(|s| s.1).collect(),
        };
        let mut g = vec![0.0f32; m * dim];
        let (first, second) = g.split_at_mut(if clip { half * dim } else { m * dim });
        for (offset, part) in [(0, first), (half, second)] {
            part.par_chunks_mut(BLOCK * dim)
                .enumerate()
                .for_each(|(b, gb)| nce.backward(offset + b * BLOCK, gb, &saved, w));
        }
        normalize_backward(&mut g, &unit, &norms, dim);
        grads = if clip {
            let gb = g.split_off(half * dim);
            vec![("a", g), ("b", gb)]
        } else {
            vec![(opts.kind.input_names()[0], g)]
        };
    }
    Ok(LossValues {
        loss: vec![loss as f32],
        grads,
        rows: Vec::new(),
    })
}

/// Mined triplet loss of embeddings with their labels, on the CPU. 16-bit embeddings are
/// widened (exactly); the gradient comes back as written in `opts.grad_dtype` (by default
/// the embeddings' type).
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for a label count that is not the row count.
pub fn mined_triplet<T: Element>(
    opts: &MinedTriplet,
    inputs: &HostMinedTripletInputs<'_, T>,
) -> Result<LossValues> {
    let wide = widened(inputs.embeddings);
    let f32_inputs = HostMinedTripletInputs {
        embeddings: &wide[..],
        labels: inputs.labels,
        dim: inputs.dim,
        upstream: inputs.upstream,
    };
    let out = mined_triplet_f32(opts, &f32_inputs)?;
    Ok(written_as(out, opts.grad_dtype.unwrap_or(T::DTYPE)))
}

fn mined_triplet_f32(
    opts: &MinedTriplet,
    inputs: &HostMinedTripletInputs<'_>,
) -> Result<LossValues> {
    let HostMinedTripletInputs {
        embeddings,
        labels,
        dim,
        ..
    } = *inputs;
    let upstream = inputs.upstream.scalar()?;
    let label_shape = [labels.len()];
    let (n, _) = opts.check(&Args {
        kind: None,
        rows: &[("embeddings", Arg::f32(&host_rows(embeddings.len(), dim)))],
        labels: Some(Arg {
            shape: &label_shape,
            dtype: DType::I32,
        }),
    })?;
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
            // Batch-all and semi-hard as the GPU kernel's listed path: the positives sorted
            // by distance, then index, and binary-searched by each negative, O(N log P).
            let mut pos: Vec<usize> = (0..n).filter(|&j| is_pos(j)).collect();
            // (+ 0.0 makes −0 equal to +0, as the comparisons below see them.)
            pos.sort_by(|&x, &y| (d[x] + 0.0).total_cmp(&(d[y] + 0.0)).then(x.cmp(&y)));
            let negatives = (0..n).filter(|&j| is_neg(j));
            match opts.mining {
                Mining::BatchAll => {
                    // A negative forms triplets with a suffix of the sorted positives (the
                    // test d_ap − d_an + m > 0 is monotone in d_ap); a positive's weight
                    // counts the negatives whose suffix reaches it.
                    // (Only pairs in a triplet enter the sums: 0·∞ would be NaN.)
                    let mut starts = vec![0i32; pos.len() + 1];
                    for q in negatives {
                        let s = pos.partition_point(|&p| d[p] - d[q] + m <= 0.0);
                        let uses = (pos.len() - s) as i32;
                        if uses > 0 {
                            w[q] -= uses;
                            loss -= uses as f64 * d[q] as f64;
                        }
                        starts[s] += 1;
                    }
                    let mut k = 0;
                    for (&p, &s) in pos.iter().zip(&starts) {
                        k += s;
                        if k > 0 {
                            w[p] += k;
                            loss += k as f64 * (d[p] as f64 + m as f64);
                            count += k as f64;
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
                    // A negative is farther than the positives before place u; the nearest
                    // of those at each u, then the nearest at or past each positive's place.
                    let farthest = best(&mut (0..n).filter(|&j| is_neg(j)), true);
                    let mut nearest: Vec<Option<usize>> = vec![None; pos.len()];
                    for q in negatives {
                        let u = pos.partition_point(|&p| d[p] < d[q]);
                        if u > 0 {
                            let b = &mut nearest[u - 1];
                            if b.is_none_or(|b| d[q] < d[b] || (d[q] == d[b] && q < b)) {
                                *b = Some(q);
                            }
                        }
                    }
                    let mut pick: Option<usize> = None;
                    for (i, &p) in pos.iter().enumerate().rev() {
                        if let Some(q) = nearest[i] {
                            if pick.is_none_or(|b| d[q] < d[b] || (d[q] == d[b] && q < b)) {
                                pick = Some(q);
                            }
                        }
                        if let Some(q) = pick.or(farthest) {
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
                // Distances: c·(e_i − e_j), the difference formed first; cosine: c·n_j.
                for ((a, &k), &q) in acc.iter_mut().zip(row(j)).zip(row(i)) {
                    *a += if cosine {
                        c * k as f64
                    } else {
                        c * (q - k) as f64
                    };
                }
            }
            for (g, a) in gi.iter_mut().zip(&acc) {
                *g = *a as f32;
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
        rows: Vec::new(),
    })
}
