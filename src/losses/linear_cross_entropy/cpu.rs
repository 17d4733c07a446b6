//! Fused linear cross-entropy on the CPU, chunk by chunk as on the GPU: matrix products by
//! `matrixmultiply`, in one block of output rows per rayon thread (the same bits whatever
//! the blocks), the cross-entropy row kernel of the CPU backend in between.

use rayon::prelude::*;

use super::shard::{check_records, ShardGradients, ShardStatistics, VocabShard, SHARD_RECORD};
use super::{Args, LinearCrossEntropy};
use crate::core::{
    cpu_math,
    host_shape, widened, written_as, Arg, DType, Element, LossValues, Reduction, Upstream,
};
use crate::error::Result;
use crate::losses::cross_entropy::cpu::{cross_entropy_in_place, HostRowInputs, HostTarget};
use crate::losses::cross_entropy::target_class;

/// Host inputs of [`linear_cross_entropy`]. Hidden states, classifier and bias share one
/// element type `T`: f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostLinearInputs<'a, T: Element = f32> {
    /// Hidden states `[N, H]`, row-major.
    pub hidden: &'a [T],
    /// Classifier weight `[V, H]` (`nn.Linear`'s layout).
    pub classifier: &'a [T],
    /// Bias `[V]`.
    pub bias: Option<&'a [T]>,
    /// (N, H, V).
    pub shape: (usize, usize, usize),
    /// Class indices `[N]`.
    pub target: &'a [i32],
    /// Per-class weight `[V]`.
    pub weight: Option<&'a [f32]>,
    /// Upstream gradient: a scalar, or one per row with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// `c = a·b` (`beta` 0) or `c += a·b` (`beta` 1) for strided views (see [`gemm_block`]),
/// one block of rows of c per thread. Every block packs all of b, so few large blocks
/// (packing was as costly as the products with blocks of 64 rows). The bits do not depend
/// on the blocks: each element's sum runs over k in the product's own fixed depth blocks.
fn gemm(
    (m, k, n): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    let block_rows = m.div_ceil(rayon::current_num_threads()).max(1);
    c[..m * n]
        .par_chunks_mut(block_rows * n.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            let rows = c.len() / n.max(1);
            let a = &a[i * block_rows * a_rs..];
            gemm_block((rows, k, n), (a, a_rs, a_cs), b, beta, c);
        });
}

/// `c = a·b` (`beta` 0) or `c += a·b` (`beta` 1) for row-major views given by (rows, cols)
/// strides: a is m×k, b is k×n, c is m×n with unit column stride.
fn gemm_block(
    (m, k, n): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() > (m - 1) * a_rs + k.saturating_sub(1) * a_cs || k == 0);
    assert!(b.len() > k.saturating_sub(1) * b_rs + (n - 1) * b_cs || k == 0);
    assert!(c.len() >= m * n);
    // SAFETY: the asserts keep every index the strides reach inside the slices, and `c` does
    // not alias `a` or `b` (a shared and a mutable borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            a_rs as isize,
            a_cs as isize,
            b.as_ptr(),
            b_rs as isize,
            b_cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// A row's log-sum-exp of its logits capped by `softcap` (f32 max, f64 sum) and 1 where the
/// first index of its largest capped logit is its class `y`; 0 and 0 for an ignored row.
fn row_stats(row: &[f32], softcap: Option<f32>, y: Option<usize>) -> (f32, f32) {
    let Some(y) = y else {
        return (0.0, 0.0);
    };
    let cap = |v: f32| capped(v, softcap);
    let (mut m, mut first) = (f32::NEG_INFINITY, usize::MAX);
    for (k, &v) in row.iter().enumerate() {
        if cap(v) > m {
            (m, first) = (cap(v), k);
        }
    }
    let sum: f64 = row.iter().map(|&v| ((cap(v) - m) as f64).exp()).sum();
    ((m as f64 + sum.ln()) as f32, (first == y) as u32 as f32)
}

/// Loss and gradients (`hidden`, `classifier`, then `bias` when given) of `x`. 16-bit
/// inputs are widened (exactly) into f32 copies for the products; the gradients come back
/// as written in `opts.grad_dtype` (by default the inputs' type).
///
/// # Errors
/// Option, shape and target errors as the GPU path.
pub fn linear_cross_entropy<T: Element>(
    opts: &LinearCrossEntropy,
    x: &HostLinearInputs<'_, T>,
) -> Result<LossValues> {
    let out = with_f32(x, |wide| linear_f32(opts, wide))?;
    Ok(written_as(out, opts.grad_dtype.unwrap_or(T::DTYPE)))
}

/// `f` of `x` with 16-bit hidden states, classifier and bias widened (exactly) to f32.
fn with_f32<T: Element, R>(
    x: &HostLinearInputs<'_, T>,
    f: impl FnOnce(&HostLinearInputs<'_>) -> R,
) -> R {
    let (hidden, classifier) = (widened(x.hidden), widened(x.classifier));
    let bias = x.bias.map(widened);
    f(&HostLinearInputs {
        hidden: &hidden,
        classifier: &classifier,
        bias: bias.as_deref(),
        shape: x.shape,
        target: x.target,
        weight: x.weight,
        upstream: x.upstream,
    })
}

/// Checks the options and `x`'s lengths as the GPU path does; gives the scalar upstream
/// gradient (1 when per row).
fn check(opts: &LinearCrossEntropy, x: &HostLinearInputs<'_>) -> Result<f32> {
    let (n, h, v) = x.shape;
    let (scalar_upstream, per_item) = x.upstream.split(|g| host_shape(g.len(), &[n]));
    opts.check(&Args {
        hidden: Arg::f32(&host_shape(x.hidden.len(), &[n, h])),
        classifier: Arg::f32(&host_shape(x.classifier.len(), &[v, h])),
        bias: x
            .bias
            .map(|b| host_shape(b.len(), &[v]))
            .as_deref()
            .map(Arg::f32),
        target: Arg {
            shape: &host_shape(x.target.len(), &[n]),
            dtype: DType::I32,
        },
        weight: x
            .weight
            .map(|w| host_shape(w.len(), &[v]))
            .as_deref()
            .map(Arg::f32),
        scalar_upstream,
        per_item_upstream: per_item.as_deref().map(Arg::f32),
    })?;
    Ok(scalar_upstream.unwrap_or(1.0))
}

/// A chunk's logits, `hidden[start..start + rows] · classifierᵀ (+ bias)`, into `logits`.
fn chunk_logits(x: &HostLinearInputs<'_>, (start, rows): (usize, usize), logits: &mut [f32]) {
    let (_, h, v) = x.shape;
    let hid = &x.hidden[start * h..(start + rows) * h];
    gemm((rows, h, v), (hid, h, 1), (x.classifier, 1, h), 0.0, logits);
    if let Some(b) = x.bias {
        for row in logits.chunks_mut(v) {
            row.iter_mut().zip(b).for_each(|(l, b)| *l += b);
        }
    }
}

/// The f32 gradients of hidden, classifier and bias, filled chunk by chunk.
struct Gradients {
    hidden: Vec<f32>,
    classifier: Vec<f32>,
    bias: Vec<f32>,
}

impl Gradients {
    fn new(want: bool, (n, h, v): (usize, usize, usize)) -> Self {
        let len = |l| if want { l } else { 0 };
        Self {
            hidden: vec![0.0; len(n * h)],
            classifier: vec![0.0; len(v * h)],
            bias: vec![0.0; len(v)],
        }
    }

    /// Folds a chunk's logit gradient `grad` into the gradients: the chunk's `hidden` rows
    /// = grad · classifier; `classifier` (+)= gradᵀ · hidden and `bias` += its column sums,
    /// in chunk order.
    fn fold(&mut self, x: &HostLinearInputs<'_>, (start, rows): (usize, usize), grad: &[f32]) {
        let (_, h, v) = x.shape;
        let hid = &x.hidden[start * h..(start + rows) * h];
        let hidden = &mut self.hidden[start * h..(start + rows) * h];
        gemm((rows, v, h), (grad, v, 1), (x.classifier, h, 1), 0.0, hidden);
        let beta = if start == 0 { 0.0 } else { 1.0 };
        gemm((v, rows, h), (grad, 1, v), (hid, h, 1), beta, &mut self.classifier);
        for row in grad.chunks(v) {
            self.bias.iter_mut().zip(row).for_each(|(b, g)| *b += g);
        }
    }

    /// By input name: hidden, classifier, then bias when `x` has one; none unless `want`.
    fn named(self, want: bool, has_bias: bool) -> Vec<(&'static str, Vec<f32>)> {
        let mut grads = Vec::new();
        if want {
            grads.push(("hidden", self.hidden));
            grads.push(("classifier", self.classifier));
            if has_bias {
                grads.push(("bias", self.bias));
            }
        }
        grads
    }
}

/// The factor of row `i`'s gradient: the upstream gradient (the scalar `g`, or one per row
/// with reduction none), over the mean's denominator (0 when that is 0).
fn row_scale(
    reduction: Reduction,
    upstream: Upstream<'_, [f32]>,
    g: f32,
    denom: f32,
) -> impl Fn(usize) -> f32 + Sync + '_ {
    move |i| match (reduction, upstream) {
        (Reduction::Mean, _) if denom == 0.0 => 0.0,
        (Reduction::Mean, _) => g / denom,
        (_, Upstream::PerItem(u)) => u[i],
        _ => g,
    }
}

/// Gradient filtering (see [`LinearCrossEntropy::grad_filter`]): zeroes each 16×16 block of
/// a chunk's gradient `grad` (`[rows, v]`) in which every value is below `eps` times its
/// row's `scale` in magnitude (NaN is kept): what the GPU's skipped block products give.
fn filter_blocks(grad: &mut [f32], v: usize, eps: f32, scale: impl Fn(usize) -> f32 + Sync) {
    let bound = |r: usize| eps * scale(r).abs();
    grad.par_chunks_mut(16 * v)
        .enumerate()
        .for_each(|(block_row, rows)| {
            let r0 = block_row * 16;
            for c0 in (0..v).step_by(16) {
                let cols = c0..(c0 + 16).min(v);
                let keep = rows.chunks(v).enumerate().any(|(r, row)| {
                    let b = bound(r0 + r);
                    row[cols.clone()].iter().any(|g| g.abs() >= b || g.is_nan())
                });
                if !keep {
                    rows.chunks_mut(v).for_each(|row| row[cols.clone()].fill(0.0));
                }
            }
        });
}

/// The loss from the rows' losses: themselves (none), or their f64 sum, divided by
/// `denom` (0 when that is 0) for mean.
fn reduced(loss_rows: Vec<f32>, reduction: Reduction, denom: f64) -> Vec<f32> {
    let d = match reduction {
        Reduction::None => return loss_rows,
        Reduction::Mean => denom,
        _ => 1.0,
    };
    let total: f64 = loss_rows.iter().map(|&l| l as f64).sum();
    vec![if d == 0.0 { 0.0 } else { (total / d) as f32 }]
}

fn linear_f32(opts: &LinearCrossEntropy, x: &HostLinearInputs<'_>) -> Result<LossValues> {
    let g = check(opts, x)?;
    let (n, h, v) = x.shape;
    // Every target checked, and the mean's denominator over the whole batch.
    let mut denom = 0.0f64;
    for (i, &y) in x.target.iter().enumerate() {
        if let Some(y) = target_class(y as i64, i, v, opts.ignore_index)? {
            denom += x.weight.map_or(1.0, |w| w[y] as f64);
        }
    }
    let denom = denom as f32;
    let row_scale = row_scale(opts.reduction, x.upstream, g, denom);

    // The in-place row kernel always writes the gradient; loss-only calls just skip the rest.
    let ce = opts.row_kernel().gradient(true);
    let chunk = opts.rows_per_chunk(n, v);
    let mut logits = vec![0.0f32; chunk * v];
    let mut loss_rows = vec![0.0f32; n];
    let want = opts.gradient;
    let mut grads = Gradients::new(want, (n, h, v));
    let stats_len = if opts.row_stats { n } else { 0 };
    let (mut lse, mut correct) = (vec![0.0f32; stats_len], vec![0.0f32; stats_len]);
    for start in (0..n).step_by(chunk) {
        let rows = chunk.min(n - start);
        let logits = &mut logits[..rows * v];
        chunk_logits(x, (start, rows), logits);
        if opts.row_stats {
            for (r, row) in logits.chunks(v).enumerate() {
                let y = target_class(x.target[start + r] as i64, start + r, v, opts.ignore_index)?;
                (lse[start + r], correct[start + r]) = row_stats(row, opts.softcap, y);
            }
        }
        let upstream: Vec<f32> = (start..start + rows).map(&row_scale).collect();
        let rows_loss = cross_entropy_in_place(
            &ce,
            &HostRowInputs {
                logits: &[],
                shape: (rows, v),
                target: HostTarget::Classes(&x.target[start..start + rows]),
                weight: x.weight,
                upstream: Upstream::PerItem(&upstream),
            },
            logits,
        )?;
        // The per-row losses are unscaled: the upstream gradient only scales gradients.
        loss_rows[start..start + rows].copy_from_slice(&rows_loss);
        if want {
            if let Some(eps) = opts.grad_filter {
                filter_blocks(logits, v, eps, |r| row_scale(start + r));
            }
            grads.fold(x, (start, rows), logits);
        }
    }
    let rows = match opts.row_stats {
        true => vec![("lse", lse), ("correct", correct)],
        false => Vec::new(),
    };
    Ok(LossValues {
        loss: reduced(loss_rows, opts.reduction, denom as f64),
        grads: grads.named(want, x.bias.is_some()),
        rows,
    })
}

/// Step 1 of a vocabulary shard (see [`ShardStatistics`]): the records of `x`'s rows, f32
/// `[N, SHARD_RECORD]`. `x` holds the shard's classifier rows (and bias and weight slices);
/// its shape's V is the shard's class count.
///
/// # Errors
/// As [`linear_cross_entropy`]; [`Error::Shape`](crate::Error::Shape) when the shard's
/// classes do not lie in the vocabulary.
pub fn linear_shard_statistics<T: Element>(
    step: &ShardStatistics,
    x: &HostLinearInputs<'_, T>,
) -> Result<Vec<f32>> {
    with_f32(x, |x| {
        let opts = step.loss.clone().gradient(false);
        check(&opts, x)?;
        let (n, _, v) = x.shape;
        step.shard.check(v)?;
        let chunk = opts.rows_per_chunk(n, v);
        let mut logits = vec![0.0f32; chunk * v];
        let mut stats = vec![0.0f32; n * SHARD_RECORD];
        for start in (0..n).step_by(chunk) {
            let rows = chunk.min(n - start);
            let logits = &mut logits[..rows * v];
            chunk_logits(x, (start, rows), logits);
            let records = &mut stats[start * SHARD_RECORD..(start + rows) * SHARD_RECORD];
            records
                .par_chunks_mut(SHARD_RECORD)
                .zip(logits.par_chunks(v))
                .zip(&x.target[start..start + rows])
                .for_each(|((record, row), &y)| {
                    record.copy_from_slice(&shard_record(&opts, step.shard, x.weight, row, y));
                });
        }
        Ok(stats)
    })
}

/// A row's record over the shard's logits `row` (see the module documentation of
/// [`ShardStatistics`]): f32 maximum, f64 sums.
fn shard_record(
    opts: &LinearCrossEntropy,
    shard: VocabShard,
    weight: Option<&[f32]>,
    row: &[f32],
    y: i32,
) -> [f32; SHARD_RECORD] {
    if y == opts.ignore_index {
        return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0];
    }
    let cap = |v: f32| capped(v, opts.softcap);
    let w = |k: usize| weight.map_or(1.0, |w| w[k]) as f64;
    let (mut m, mut first) = (f32::NEG_INFINITY, -1.0f32);
    for (k, &v) in row.iter().enumerate() {
        if cap(v) > m {
            (m, first) = (cap(v), k as f32);
        }
    }
    // The GPU's running maximum starts at the lowest finite value: a row of −∞ keeps it.
    let m = m.max(f32::MIN);
    let (mut sum, mut w_dx, mut w_all) = (0.0f64, 0.0f64, 0.0f64);
    for (k, &v) in row.iter().enumerate() {
        let d = (cap(v) - m) as f64;
        sum += d.exp();
        w_dx += w(k) * d;
        w_all += w(k);
    }
    let local = (y as i64 - shard.start as i64).try_into().ok();
    let (x_y, w_y, found) = match local.filter(|&k: &usize| k < row.len()) {
        Some(k) => (cap(row[k]), w(k) as f32, 1.0),
        None => (0.0, 0.0, 0.0),
    };
    let first = match first {
        f if f < 0.0 => -1.0,
        f => f + shard.start as f32,
    };
    [
        m,
        sum as f32,
        x_y,
        w_y,
        found,
        w_dx as f32,
        w_all as f32,
        first,
    ]
}

/// A row's merged statistics: its loss, kept weight w_y (0 if ignored), lse, correct, the
/// gradient's coefficients of p and of [c = y], the maximum and log Σ e^(x − max); `None`
/// for an ignored row.
struct MergedRow {
    loss: f64,
    kept: f64,
    lse: f64,
    correct: bool,
    coef: f32,
    hit: f32,
    max: f32,
    log_sum: f32,
}

/// Merges row `row`'s records from the stacked `stats` of `shards` shards, in shard order.
///
/// # Errors
/// [`Error::Value`](crate::Error::Value) for a class outside the vocabulary or held by no
/// shard (or two).
fn merge_row(
    opts: &LinearCrossEntropy,
    shard: VocabShard,
    stats: &[f32],
    (row, n): (usize, usize),
    y: i32,
) -> Result<Option<MergedRow>> {
    if y == opts.ignore_index {
        return Ok(None);
    }
    let records: Vec<&[f32]> = stats
        .chunks(n * SHARD_RECORD)
        .map(|s| &s[row * SHARD_RECORD..(row + 1) * SHARD_RECORD])
        .collect();
    let found: f32 = records.iter().map(|r| r[4]).sum();
    if y < 0 || y as usize >= shard.vocab || found != 1.0 {
        return Err(crate::Error::Value {
            input: "target",
            row,
            value: y.to_string(),
            reason: "outside [0, vocab), or not held by exactly one shard's statistics".into(),
        });
    }
    let m = records.iter().fold(f32::MIN, |m, r| m.max(r[0]));
    let sum: f64 = records
        .iter()
        .map(|r| r[1] as f64 * ((r[0] - m) as f64).exp())
        .sum();
    let log_sum = sum.ln();
    let lse = m as f64 + log_sum;
    let lse = if lse == f64::INFINITY { f64::NAN } else { lse };
    let (x_y, w_y) = records
        .iter()
        .find(|r| r[4] != 0.0)
        .map_or((0.0, 0.0), |r| (r[2] as f64, r[3] as f64));
    // The first index of the maximum: the earlier shard's on ties (its classes come first).
    let mut best = (f32::MIN, -1.0f32);
    for r in &records {
        if r[7] >= 0.0 && (best.1 < 0.0 || r[0] > best.0) {
            best = (r[0], r[7]);
        }
    }
    let eps = opts.label_smoothing as f64;
    let mut loss = (1.0 - eps) * w_y * (log_sum - (x_y - m as f64));
    let mut coef = (1.0 - eps) * w_y;
    // No smoothing, no term: 0·w would make a NaN weight reach every row.
    if eps > 0.0 {
        let w_dx: f64 = records
            .iter()
            .map(|r| r[5] as f64 + (r[0] - m) as f64 * r[6] as f64)
            .sum();
        let w_all: f64 = records.iter().map(|r| r[6] as f64).sum();
        let eps_v = eps / shard.vocab as f64;
        loss += eps_v * (log_sum * w_all - w_dx);
        coef += eps_v * w_all;
    }
    let z = opts.z_loss as f64;
    Ok(Some(MergedRow {
        loss: loss + z * lse * lse,
        kept: w_y,
        lse,
        correct: best.1 == y as f32,
        coef: (coef + 2.0 * z * lse) as f32,
        hit: ((1.0 - eps) * w_y) as f32,
        max: m,
        log_sum: log_sum as f32,
    }))
}

/// Step 2 of a vocabulary shard (see [`ShardGradients`]): the loss from every shard's
/// records `stats` (`[K, N, SHARD_RECORD]`, in vocabulary order), and this shard's gradients:
/// `classifier` and `bias` of its rows, and its share of `hidden`'s (sum the shards').
///
/// # Errors
/// As [`linear_cross_entropy`]; [`Error::Shape`](crate::Error::Shape) for records of
/// another shape; [`Error::Value`](crate::Error::Value) naming the first row whose class no
/// shard holds.
pub fn linear_shard_gradients<T: Element>(
    step: &ShardGradients,
    x: &HostLinearInputs<'_, T>,
    stats: &[f32],
) -> Result<LossValues> {
    let opts = &step.loss;
    let out = with_f32(x, |x| {
        let g = check(opts, x)?;
        let (n, h, v) = x.shape;
        step.shard.check(v)?;
        let k = stats.len() / (n * SHARD_RECORD).max(1);
        check_records(Arg::f32(&host_shape(stats.len(), &[k, n, SHARD_RECORD])), n)?;
        let merged = x
            .target
            .iter()
            .enumerate()
            .map(|(row, &y)| merge_row(opts, step.shard, stats, (row, n), y))
            .collect::<Result<Vec<_>>>()?;
        let denom = merged.iter().flatten().map(|r| r.kept).sum::<f64>() as f32;
        let scale = row_scale(opts.reduction, x.upstream, g, denom);
        let want = opts.gradient;
        let mut grads = Gradients::new(want, (n, h, v));
        if want {
            let chunk = opts.rows_per_chunk(n, v);
            let mut logits = vec![0.0f32; chunk * v];
            let eps_v = opts.label_smoothing / step.shard.vocab as f32;
            let cap = |v: f32| capped(v, opts.softcap);
            for start in (0..n).step_by(chunk) {
                let rows = chunk.min(n - start);
                let logits = &mut logits[..rows * v];
                chunk_logits(x, (start, rows), logits);
                logits
                    .par_chunks_mut(v)
                    .enumerate()
                    .for_each(|(r, row_logits)| {
                        let i = start + r;
                        let s = scale(i);
                        let Some(m) = merged[i].as_ref().filter(|_| s != 0.0) else {
                            row_logits.fill(0.0);
                            return;
                        };
                        let y = x.target[i] as i64 - step.shard.start as i64;
                        for (k, l) in row_logits.iter_mut().enumerate() {
                            let p = ((cap(*l) - m.max) - m.log_sum).exp();
                            let mut target_term = 0.0;
                            if eps_v > 0.0 {
                                target_term = eps_v * x.weight.map_or(1.0, |w| w[k]);
                            }
                            if k as i64 == y {
                                target_term += m.hit;
                            }
                            let mut g = (p * m.coef - target_term) * s;
                            if let Some(c) = opts.softcap {
                                g *= cpu_math::sech2(*l / c);
                            }
                            *l = g;
                        }
                    });
                if let Some(eps) = opts.grad_filter {
                    filter_blocks(logits, v, eps, |r| scale(start + r));
                }
                grads.fold(x, (start, rows), logits);
            }
        }
        let loss_rows = merged.iter().map(|r| r.as_ref().map_or(0.0, |r| r.loss as f32));
        let rows = match opts.row_stats {
            true => vec![
                ("lse", merged.iter().map(|r| r.as_ref().map_or(0.0, |r| r.lse as f32)).collect()),
                (
                    "correct",
                    merged
                        .iter()
                        .map(|r| r.as_ref().map_or(0.0, |r| r.correct as u32 as f32))
                        .collect(),
                ),
            ],
            false => Vec::new(),
        };
        Ok(LossValues {
            loss: reduced(loss_rows.collect(), opts.reduction, denom as f64),
            grads: grads.named(want, x.bias.is_some()),
            rows,
        })
    })?;
    Ok(written_as(out, opts.grad_dtype.unwrap_or(T::DTYPE)))
}

/// `c·tanh(v/c)`, or `v` without a cap.
fn capped(v: f32, softcap: Option<f32>) -> f32 {
    softcap.map_or(v, |c| c * (v / c).tanh())
}
