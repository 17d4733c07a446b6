//! Cross-entropy and softmax focal on the CPU: the twin of `shaders/cross_entropy.wgsl`,
//! rows in parallel, three passes over each row (max, sum of exponentials, gradient).

use rayon::prelude::*;

use super::{target_class, Args, CrossEntropy, SoftmaxFocal};
use crate::core::cpu_math::{exp, sech2, Floats, CHUNK_ELEMENTS};
use crate::core::{host_shape, Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};

/// Target of a CPU row loss.
#[derive(Debug, Clone, Copy)]
pub enum HostTarget<'a> {
    /// Class indices `[N]`.
    Classes(&'a [i32]),
    /// Probabilities `[N, C]`.
    Probabilities(&'a [f32]),
}

/// Host inputs of a CPU row loss (cross-entropy, softmax focal). The logits may be f32,
/// [`half::f16`] or [`half::bf16`]; the arithmetic is f32 (f64 where it accumulates) either
/// way.
#[derive(Debug, Clone, Copy)]
pub struct HostRowInputs<'a, T: Element = f32> {
    /// Logits `[n, c]`, row-major.
    pub logits: &'a [T],
    /// (N, C).
    pub shape: (usize, usize),
    /// Class indices or probabilities.
    pub target: HostTarget<'a>,
    /// Per-class weight `[C]` (α for softmax focal).
    pub weight: Option<&'a [f32]>,
    /// Upstream gradient: a scalar, or one per row with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

impl<'a, T: Element> HostRowInputs<'a, T> {
    /// The same inputs over other logits (of `shape`, with the target rows from `first`).
    fn with_logits(&self, logits: &'a [f32], first: usize, rows: usize) -> HostRowInputs<'a> {
        let c = self.shape.1;
        HostRowInputs {
            logits,
            shape: (rows, c),
            target: match self.target {
                HostTarget::Probabilities(p) => {
                    HostTarget::Probabilities(&p[first * c..(first + rows) * c])
                }
                classes => classes,
            },
            weight: self.weight,
            upstream: self.upstream,
        }
    }
}

/// Cross-entropy (or, with `opts.focal`, softmax focal) of `inputs` on the CPU. The
/// gradient comes back as the values written in `opts.grad_dtype` (by default the logits'
/// type), widened to f32.
///
/// # Errors
/// Option, shape and target errors as the GPU path.
pub fn cross_entropy<T: Element>(
    opts: &CrossEntropy,
    inputs: &HostRowInputs<'_, T>,
) -> Result<LossValues> {
    fn run<T: Element, G: Element>(
        opts: &CrossEntropy,
        inputs: &HostRowInputs<'_, T>,
    ) -> Result<LossValues> {
        let len = if opts.gradient {
            inputs.logits.len()
        } else {
            0
        };
        let mut grad = vec![G::from_f32(0.0); len];
        let loss = rows_into(opts, inputs, &mut grad, false)?;
        Ok(LossValues {
            loss,
            grads: if opts.gradient {
                vec![("logits", grad.iter().map(|g| g.to_f32()).collect())]
            } else {
                Vec::new()
            },
            rows: Vec::new(),
        })
    }
    match opts.grad_dtype_for(T::DTYPE) {
        DType::F16 => run::<T, half::f16>(opts, inputs),
        DType::BF16 => run::<T, half::bf16>(opts, inputs),
        _ => run::<T, f32>(opts, inputs),
    }
}

/// As [`cross_entropy`], writing the gradient into `grad` (`[N, C]` of `opts.grad_dtype`,
/// by default the logits' type; reused across calls to save an allocation; ignored when
/// `opts.gradient` is false) and returning the loss.
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Shape`] when `grad` has the wrong length,
/// [`Error::DType`] when it has the wrong type.
pub fn cross_entropy_into<T: Element, G: Element>(
    opts: &CrossEntropy,
    inputs: &HostRowInputs<'_, T>,
    grad: &mut [G],
) -> Result<Vec<f32>> {
    rows_into(opts, inputs, grad, false)
}

/// As [`cross_entropy_into`] with the gradient written over the logits (`inputs.logits` is
/// ignored; `logits` holds them on entry and the gradient on return), as the GPU path's
/// `in_place`. Saves the memory traffic of a second N×C array: each row is copied to a
/// cache-resident scratch row before its gradient overwrites it.
///
/// # Errors
/// As [`cross_entropy`]; [`Error::Option`] when `opts.gradient` is false.
pub fn cross_entropy_in_place<T: Element>(
    opts: &CrossEntropy,
    inputs: &HostRowInputs<'_, T>,
    logits: &mut [T],
) -> Result<Vec<f32>> {
    if !opts.gradient {
        return Err(Error::Option {
            option: "gradient",
            value: "false".into(),
            reason: "an in-place call writes the gradient",
        });
    }
    rows_into(opts, inputs, logits, true)
}

/// The body of the CPU row losses: with `in_place`, each row's logits are read from `grad`.
fn rows_into<T: Element, G: Element>(
    opts: &CrossEntropy,
    inputs: &HostRowInputs<'_, T>,
    grad: &mut [G],
    in_place: bool,
) -> Result<Vec<f32>> {
    let (n, c) = inputs.shape;
    let (logits, logits_dtype) = if in_place {
        (grad.len(), G::DTYPE)
    } else {
        (inputs.logits.len(), T::DTYPE)
    };
    let (target, probabilities) = match inputs.target {
        HostTarget::Classes(t) => (host_shape(t.len(), &[n]), false),
        HostTarget::Probabilities(p) => (host_shape(p.len(), &[n, c]), true),
    };
    let weight = inputs.weight.map(|w| host_shape(w.len(), &[c]));
    let (scalar_upstream, per_item) = inputs.upstream.split(|g| host_shape(g.len(), &[n]));
    opts.check(&Args {
        logits: Arg {
            shape: &host_shape(logits, &[n, c]),
            dtype: logits_dtype,
        },
        target: Arg {
            shape: &target,
            dtype: if probabilities {
                DType::F32
            } else {
                DType::I32
            },
        },
        probabilities,
        weight: weight.as_deref().map(Arg::f32),
        scalar_upstream,
        per_item_upstream: per_item.as_deref().map(Arg::f32),
    })?;
    if opts.gradient && G::DTYPE != opts.grad_dtype_for(logits_dtype) {
        return Err(Error::DType {
            input: "grad_out",
            expected: opts.grad_dtype_for(logits_dtype).name(),
            got: G::DTYPE.name(),
        });
    }
    let ups = &*inputs.upstream.values();
    // Targets are checked (and the mean's denominator formed) before any work.
    let mut classes = Vec::new();
    let denom = match inputs.target {
        HostTarget::Classes(t) => {
            let mut d = 0.0f64;
            for (row, &y) in t.iter().enumerate() {
                let class = target_class(y as i64, row, c, opts.ignore_index)?;
                if let Some(k) = class {
                    d += match (opts.focal, inputs.weight) {
                        (None, Some(w)) => w[k] as f64,
                        _ => 1.0,
                    };
                }
                classes.push(class);
            }
            d
        }
        HostTarget::Probabilities(_) => n as f64,
    };
    let denom = match opts.reduction {
        Reduction::Mean => denom,
        _ => 1.0,
    };
    let upstream = |row: usize| match ups.len() {
        0 => 1.0,
        1 => ups[0] as f64,
        _ => ups[row] as f64,
    };
    let scale = |row: usize| {
        if denom == 0.0 {
            0.0
        } else {
            upstream(row) / denom
        }
    };

    let rows_per_task = (CHUNK_ELEMENTS / c).max(1);
    let mut per_row = vec![0.0f64; n];
    if opts.gradient && grad.len() != n * c {
        return Err(Error::shape(
            "grad_out",
            format!("{n}x{c} values"),
            &[grad.len()],
        ));
    }
    // Logits are read where they lie, f32 and bf16 (a shift widens it) alike; f16 is widened
    // once per row into a cache-resident copy (its conversion costs more than a pass over
    // the copy). An f32 gradient is written where it lies; a 16-bit one goes through a
    // cache-resident f32 row, narrowed once. In place, an f32 row's logits are copied out
    // first (the gradient pass overwrites them).
    let target_rows = inputs.with_logits(&[], 0, n);
    fn readable<'a, T: Element>(x: &'a [T], x_row: &'a mut Vec<f32>) -> Floats<'a> {
        if T::DTYPE != DType::F16 {
            return Floats::of(x);
        }
        x_row.resize(x.len(), 0.0);
        T::widen(x, x_row);
        Floats::F32(x_row)
    }
    let logits_of = |i: usize| &inputs.logits[i * c..(i + 1) * c];
    let task = |first: usize, losses: &mut [f64], grads: &mut [G]| {
        let (mut x_row, mut g_row) = (Vec::new(), Vec::new());
        for (r, loss) in losses.iter_mut().enumerate() {
            let i = first + r;
            let g = if grads.is_empty() {
                &mut [][..]
            } else {
                &mut grads[r * c..(r + 1) * c]
            };
            let class = classes.get(i).copied();
            let scale = scale(i);
            let row_of = |x| Row {
                opts,
                inputs: &target_rows,
                x,
                i,
                class,
                scale,
            };
            let empty = g.is_empty();
            *loss = match (G::as_f32_mut(g), in_place) {
                (Some(g32), true) => {
                    x_row.clear();
                    x_row.extend_from_slice(g32);
                    row(row_of(Floats::F32(&x_row)), g32)
                }
                (Some(g32), false) => row(row_of(readable(logits_of(i), &mut x_row)), g32),
                (None, _) if empty => row(row_of(readable(logits_of(i), &mut x_row)), &mut []),
                (None, _) => {
                    g_row.resize(c, 0.0);
                    let loss = if in_place {
                        x_row.resize(c, 0.0);
                        G::widen(g, &mut x_row);
                        row(row_of(Floats::F32(&x_row)), &mut g_row)
                    } else {
                        row(row_of(readable(logits_of(i), &mut x_row)), &mut g_row)
                    };
                    G::narrow(&g_row, g);
                    loss
                }
            };
        }
    };
    if opts.gradient {
        per_row
            .par_chunks_mut(rows_per_task)
            .zip(grad.par_chunks_mut(rows_per_task * c))
            .enumerate()
            .for_each(|(t, (l, g))| task(t * rows_per_task, l, g));
    } else {
        per_row
            .par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(t, l)| task(t * rows_per_task, l, &mut []));
    }
    Ok(match opts.reduction {
        Reduction::None => per_row.iter().map(|&l| l as f32).collect(),
        _ => {
            let total: f64 = per_row.iter().sum();
            vec![if denom == 0.0 {
                0.0
            } else {
                (total / denom) as f32
            }]
        }
    })
}

/// Softmax focal loss of `inputs` on the CPU (α in `inputs.weight`).
///
/// # Errors
/// As [`cross_entropy`]; probability targets are an [`Error::DType`].
pub fn softmax_focal<T: Element>(
    opts: &SoftmaxFocal,
    inputs: &HostRowInputs<'_, T>,
) -> Result<LossValues> {
    opts.validate()?;
    cross_entropy(&opts.row_kernel(), inputs)
}

/// As [`softmax_focal`], writing the gradient into `grad`; see [`cross_entropy_into`].
///
/// # Errors
/// As [`softmax_focal`].
pub fn softmax_focal_into<T: Element, G: Element>(
    opts: &SoftmaxFocal,
    inputs: &HostRowInputs<'_, T>,
    grad: &mut [G],
) -> Result<Vec<f32>> {
    opts.validate()?;
    cross_entropy_into(&opts.row_kernel(), inputs, grad)
}

/// One row of a row loss: the options, the inputs, the row, its class (`None` for
/// probability targets, `Some(None)` for an ignored row) and its gradient's scale.
struct Row<'a, 'b> {
    opts: &'a CrossEntropy,
    inputs: &'a HostRowInputs<'b>,
    /// The row's logits, of any float type (16-bit ones are widened a block at a time as
    /// the passes read them, never into a copy of the row).
    x: Floats<'a>,
    i: usize,
    class: Option<Option<usize>>,
    scale: f64,
}

/// One row: returns its loss and writes its gradient (times `scale`) into `g` if non-empty.
/// Runs the AVX2 build of the same code where the CPU has it (the same operations, so the
/// same bits): all three passes over the row then vectorize eight lanes wide.
fn row(r: Row<'_, '_>, g: &mut [f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { row_avx2(r, g) };
    }
    row_portable(r, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(r: Row<'_, '_>, g: &mut [f32]) -> f64 {
    row_portable(r, g)
}

#[inline(always)]
fn row_portable(r: Row<'_, '_>, g: &mut [f32]) -> f64 {
    let Row {
        opts,
        inputs,
        x: raw,
        i,
        class,
        scale,
    } = r;
    let c = inputs.shape.1;
    let cap = opts.softcap;
    // Capped logits are formed once, in f32; the gradient pass needs the raw ones too.
    let raw_wide = cap.map(|_| raw.to_vec()).unwrap_or_default();
    let capped: Vec<f32>;
    let x: Floats<'_> = match cap {
        Some(cv) => {
            capped = raw_wide.iter().map(|&v| cv * (v / cv).tanh()).collect();
            Floats::F32(&capped)
        }
        None => raw,
    };
    // A dropped row (ignored target) has loss 0 and an exact zero gradient.
    let y = match class {
        Some(None) => {
            g.fill(0.0);
            return 0.0;
        }
        Some(Some(y)) => Some(y),
        None => None,
    };
    // e_k = exp(x_k − max) is kept where the gradient goes (or in scratch), so the gradient
    // pass multiplies instead of taking a second exp.
    let mut scratch = Vec::new();
    let want_grad = !g.is_empty();
    let e: &mut [f32] = if !want_grad {
        scratch.resize(c, 0.0);
        &mut scratch
    } else {
        g
    };
    let m = lane_max_of(x);
    let s = exp_and_sum_of(x, m, e);
    let log_sum = s.ln();
    let lse = m as f64 + log_sum;
    let eps = opts.label_smoothing as f64;
    let eps_c = eps / c as f64;
    let w = |k: usize| inputs.weight.map_or(1.0, |w| w[k] as f64);
    // −log p_k = (m − x_k) + log_sum, exact near the max.
    let nll = |k: usize| (m - x.get(k)) as f64 + log_sum;
    let (mut loss, mut coef, mut hit) = (0.0, 0.0, 0.0);
    let probs = match inputs.target {
        HostTarget::Probabilities(p) => Some(&p[i * c..(i + 1) * c]),
        HostTarget::Classes(_) => None,
    };
    match (y, probs, opts.focal) {
        (Some(y), _, Some(gamma)) => {
            let gamma = gamma as f64;
            let log_p = -nll(y);
            let q = -log_p.exp_m1();
            // With γ = 0 the bracket is 1, even where p·log p is 0·(−∞) (a −∞ target logit).
            let (qg, bracket) = if gamma == 0.0 {
                (1.0, 1.0)
            } else {
                let r = if q > 0.0 {
                    log_p.exp() * log_p / q
                } else {
                    -1.0
                };
                (q.powf(gamma), 1.0 - gamma * r)
            };
            loss = -w(y) * qg * log_p;
            coef = w(y) * qg * bracket;
            hit = coef;
        }
        (Some(y), _, None) => {
            loss = (1.0 - eps) * w(y) * nll(y);
            coef = (1.0 - eps) * w(y);
            hit = coef;
            if eps > 0.0 {
                let (mut smooth, mut w_sum) = (0.0, 0.0);
                for k in 0..c {
                    smooth += w(k) * nll(k);
                    w_sum += w(k);
                }
                loss += eps_c * smooth;
                coef += eps_c * w_sum;
            }
        }
        (None, Some(t), _) => {
            for (k, &tk) in t.iter().enumerate() {
                let wt = w(k) * ((1.0 - eps) * tk as f64 + eps_c);
                loss += wt * nll(k);
                coef += wt;
            }
        }
        (None, None, _) => unreachable!("class targets always carry a class"),
    }
    loss += opts.z_loss as f64 * lse * lse;
    coef += 2.0 * opts.z_loss as f64 * lse;
    if !want_grad {
        return loss;
    }
    if scale == 0.0 {
        e.fill(0.0);
        return loss;
    }
    // g_k = (p_k·coef − target term_k)·scale, the target term being w_k·t'_k, p_k = e_k / s.
    let (a, hit_s) = ((coef * scale / s) as f32, (hit * scale) as f32);
    match (probs, inputs.weight) {
        (None, None) => {
            let smooth = (eps_c * scale) as f32;
            for ek in e.iter_mut() {
                *ek = *ek * a - smooth;
            }
        }
        _ => {
            for (k, ek) in e.iter_mut().enumerate() {
                let t_term = match probs {
                    Some(t) => w(k) * ((1.0 - eps) * t[k] as f64 + eps_c),
                    // No smoothing, no term: 0·w_k would turn a NaN weight into NaN here.
                    None if eps > 0.0 => eps_c * w(k),
                    None => 0.0,
                };
                *ek = *ek * a - (t_term * scale) as f32;
            }
        }
    }
    if let Some(y) = y {
        e[y] -= hit_s;
    }
    if let Some(cv) = cap {
        for (gk, &v) in e.iter_mut().zip(&raw_wide) {
            *gk *= sech2(v / cv);
        }
    }
    loss
}

/// Lanes that independent accumulators use, so reductions vectorize without reordering any
/// one accumulator's additions (the result depends on the row alone, not on threads).
const LANES: usize = 8;

/// The largest value of `x`, ignoring NaN (a NaN still reaches the sum of exponentials and
/// makes the row NaN).
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut blocks = x.chunks_exact(LANES);
    for b in &mut blocks {
        for (l, &v) in lanes.iter_mut().zip(b) {
            *l = if v > *l { v } else { *l };
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    lanes.iter().fold(tail, |a, &v| if v > a { v } else { a })
}

/// [`lane_max`] of logits of any float type: 16-bit ones widened a block at a time (the
/// maximum does not depend on the blocking).
#[inline(always)]
fn lane_max_of(x: Floats<'_>) -> f32 {
    if let Floats::F32(x) = x {
        return lane_max(x);
    }
    let mut buf = [0.0f32; 256];
    (0..x.len())
        .step_by(buf.len())
        .map(|b| lane_max(x.block(b..(b + 256).min(x.len()), &mut buf)))
        .fold(f32::NEG_INFINITY, |a, v| if v > a { v } else { a })
}

/// [`exp_and_sum`] of logits of any float type: 16-bit ones widened a block of 64 at a time,
/// the same blocks as f32's, so the same sum as of their widened copy.
#[inline(always)]
fn exp_and_sum_of(x: Floats<'_>, m: f32, e: &mut [f32]) -> f64 {
    if let Floats::F32(x) = x {
        return exp_and_sum(x, m, e);
    }
    let mut buf = [0.0f32; 64];
    let mut total = 0.0f64;
    for (b, eb) in e.chunks_mut(64).enumerate() {
        let at = b * 64..b * 64 + eb.len();
        total += exp_and_sum(x.block(at, &mut buf), m, eb);
    }
    total
}

/// Σ of a block (at most 64 values): eight f32 lanes, then the lanes and any tail in f64. A
/// full block is summed as a fixed-size array, which vectorizes; a slice of unknown length
/// did not.
#[inline(always)]
fn block_sum(b: &[f32]) -> f64 {
    let mut lanes = [0.0f32; LANES];
    let tail = if let Ok(full) = <&[f32; 64]>::try_from(b) {
        for j in 0..64 / LANES {
            for k in 0..LANES {
                lanes[k] += full[j * LANES + k];
            }
        }
        &[][..]
    } else {
        let mut es = b.chunks_exact(LANES);
        for el in &mut es {
            for k in 0..LANES {
                lanes[k] += el[k];
            }
        }
        es.remainder()
    };
    let mut sum: f64 = lanes.iter().map(|&v| v as f64).sum();
    for &v in tail {
        sum += v as f64;
    }
    sum
}

/// Writes e_k = exp(x_k − m) into `e` and returns Σ e_k: f32 lanes over blocks of 64, each
/// block's total added in f64.
#[inline(always)]
fn exp_and_sum(x: &[f32], m: f32, e: &mut [f32]) -> f64 {
    const BLOCK: usize = 64;
    let mut total = 0.0f64;
    for (xb, eb) in x.chunks(BLOCK).zip(e.chunks_mut(BLOCK)) {
        // Two simple loops (exp, then the block's lanes) vectorize at full width; one fused
        // loop over lanes did not.
        for (xk, ek) in xb.iter().zip(eb.iter_mut()) {
            *ek = exp(xk - m);
        }
        total += block_sum(eb);
    }
    total
}
