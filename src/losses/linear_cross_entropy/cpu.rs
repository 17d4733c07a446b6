//! Fused linear cross-entropy on the CPU, chunk by chunk as on the GPU: matrix products by
//! `matrixmultiply`, in blocks of 64 output rows spread over rayon's threads (the same
//! blocks whatever the thread count, so the same bits), the cross-entropy row kernel of the
//! CPU backend in between.

use rayon::prelude::*;

use super::{Args, LinearCrossEntropy};
use crate::core::{
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

/// Output rows per parallel block of [`gemm`].
const BLOCK_ROWS: usize = 64;

/// `c = a·b` (`beta` 0) or `c += a·b` (`beta` 1) for strided views (see [`gemm_block`]),
/// blocks of [`BLOCK_ROWS`] rows of c in parallel.
fn gemm(
    (m, k, n): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    c[..m * n]
        .par_chunks_mut(BLOCK_ROWS * n.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            let rows = c.len() / n.max(1);
            let a = &a[i * BLOCK_ROWS * a_rs..];
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
    let cap = |v: f32| softcap.map_or(v, |c| c * (v / c).tanh());
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
    let (hidden, classifier) = (widened(x.hidden), widened(x.classifier));
    let bias = x.bias.map(widened);
    let wide = HostLinearInputs {
        hidden: &hidden,
        classifier: &classifier,
        bias: bias.as_deref(),
        shape: x.shape,
        target: x.target,
        weight: x.weight,
        upstream: x.upstream,
    };
    let out = linear_f32(opts, &wide)?;
    Ok(written_as(out, opts.grad_dtype.unwrap_or(T::DTYPE)))
}

fn linear_f32(opts: &LinearCrossEntropy, x: &HostLinearInputs<'_>) -> Result<LossValues> {
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
    // Every target checked, and the mean's denominator over the whole batch.
    let mut denom = 0.0f64;
    for (i, &y) in x.target.iter().enumerate() {
        if let Some(y) = target_class(y as i64, i, v, opts.ignore_index)? {
            denom += x.weight.map_or(1.0, |w| w[y] as f64);
        }
    }
    let denom = denom as f32;
    let g = scalar_upstream.unwrap_or(1.0);
    let row_scale = |i: usize| match (opts.reduction, x.upstream) {
        (Reduction::Mean, _) if denom == 0.0 => 0.0,
        (Reduction::Mean, _) => g / denom,
        (_, Upstream::PerItem(u)) => u[i],
        _ => g,
    };

    // The in-place row kernel always writes the gradient; loss-only calls just skip the rest.
    let ce = opts.row_kernel().gradient(true);
    let chunk = opts.rows_per_chunk(n, v);
    let mut logits = vec![0.0f32; chunk * v];
    let mut loss_rows = vec![0.0f32; n];
    let want = opts.gradient;
    let mut grad_hidden = vec![0.0f32; if want { n * h } else { 0 }];
    let mut grad_classifier = vec![0.0f32; if want { v * h } else { 0 }];
    let mut grad_bias = vec![0.0f32; if want { v } else { 0 }];
    let stats_len = if opts.row_stats { n } else { 0 };
    let (mut lse, mut correct) = (vec![0.0f32; stats_len], vec![0.0f32; stats_len]);
    for (index, start) in (0..n).step_by(chunk).enumerate() {
        let rows = chunk.min(n - start);
        let hid = &x.hidden[start * h..(start + rows) * h];
        let logits = &mut logits[..rows * v];
        // logits = hidden · classifierᵀ (+ bias)
        gemm((rows, h, v), (hid, h, 1), (x.classifier, 1, h), 0.0, logits);
        if let Some(b) = x.bias {
            for row in logits.chunks_mut(v) {
                row.iter_mut().zip(b).for_each(|(l, b)| *l += b);
            }
        }
        if opts.row_stats {
            for (r, row) in logits.chunks(v).enumerate() {
                let y = target_class(x.target[start + r] as i64, start + r, v, opts.ignore_index)?;
                (lse[start + r], correct[start + r]) = row_stats(row, opts.softcap, y);
            }
        }
        let upstream: Vec<f32> = (start..start + rows).map(row_scale).collect();
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
        if !want {
            continue;
        }
        let grad = &*logits;
        gemm(
            (rows, v, h),
            (grad, v, 1),
            (x.classifier, h, 1),
            0.0,
            &mut grad_hidden[start * h..(start + rows) * h],
        );
        let beta = if index == 0 { 0.0 } else { 1.0 };
        gemm(
            (v, rows, h),
            (grad, 1, v),
            (hid, h, 1),
            beta,
            &mut grad_classifier,
        );
        for row in grad.chunks(v) {
            grad_bias.iter_mut().zip(row).for_each(|(b, g)| *b += g);
        }
    }
    let loss = match opts.reduction {
        Reduction::None => loss_rows,
        _ => {
            let total: f64 = loss_rows.iter().map(|&l| l as f64).sum();
            let d = match opts.reduction {
                Reduction::Mean => denom as f64,
                _ => 1.0,
            };
            vec![if d == 0.0 { 0.0 } else { (total / d) as f32 }]
        }
    };
    let mut grads = Vec::new();
    if want {
        grads.push(("hidden", grad_hidden));
        grads.push(("classifier", grad_classifier));
        if x.bias.is_some() {
            grads.push(("bias", grad_bias));
        }
    }
    let rows = match opts.row_stats {
        true => vec![("lse", lse), ("correct", correct)],
        false => Vec::new(),
    };
    Ok(LossValues { loss, grads, rows })
}
