//! CTC on the CPU, the twin of `ctc.wgsl`: sequences in parallel for the recursions (in
//! f64), then frame rows in parallel for the gradient.

use rayon::prelude::*;

use super::{sequence, Args, Ctc, CtcInput, Layout};
use crate::core::{written_as, Arg, Element, LossValues, Reduction, Upstream};
use crate::error::Result;

/// Host inputs of [`ctc`]; the fields mirror [`crate::CtcInputs`]. The scores may be f32,
/// [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostCtcInputs<'a, T: Element = f32> {
    /// Scores `[T, N, C]`, row-major: logits, or log-probabilities.
    pub logits: &'a [T],
    /// (T, N, C).
    pub shape: (usize, usize, usize),
    /// i32 targets: padded `[N, S]` (`padded` = Some(S)) or concatenated (`padded` = None).
    pub targets: &'a [i32],
    /// The padded targets' width S.
    pub padded: Option<usize>,
    /// Each sequence's frames.
    pub input_lengths: &'a [i32],
    /// Each sequence's target length.
    pub target_lengths: &'a [i32],
    /// Gradient from above: a scalar, or one per sequence with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// log(e^a + e^b), −∞ when both are, NaN when either is.
fn log_add(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (m, d) = (a.max(b), -(a - b).abs());
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + d.exp().ln_1p()
}

/// One sequence's recursions: per frame the normalizer, per (frame, extended label) the
/// log-probability, alpha and beta (frame-major, `width` = 2·S + 1 per frame), and the
/// log-likelihood.
struct Recursion {
    norm: Vec<f64>,
    lp: Vec<f64>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    ll: f64,
    /// The extended labels.
    ext: Vec<usize>,
    /// Per extended position: the next one with the same label (labels only), and whether
    /// it is its label's first.
    next: Vec<Option<usize>>,
    first: Vec<bool>,
}

fn recurse(
    opts: &Ctc,
    score: impl Fn(usize, usize) -> f64,
    frames: usize,
    c: usize,
    labels: &[i32],
) -> Recursion {
    let blank = opts.blank as usize;
    let ext: Vec<usize> = (0..2 * labels.len() + 1)
        .map(|s| {
            if s % 2 == 0 {
                blank
            } else {
                labels[s / 2] as usize
            }
        })
        .collect();
    let w = ext.len();
    let next = (0..w)
        .map(|s| match s % 2 {
            1 => (s + 2..w).step_by(2).find(|&j| ext[j] == ext[s]),
            _ => None,
        })
        .collect();
    let first = (0..w)
        .map(|s| s == 0 || (s % 2 == 1 && !(1..s).step_by(2).any(|j| ext[j] == ext[s])))
        .collect();
    let norm: Vec<f64> = (0..frames)
        .map(|t| match opts.input {
            CtcInput::LogProbs => 0.0,
            CtcInput::Logits => {
                let m = (0..c)
                    .map(|k| score(t, k))
                    .fold(f64::NEG_INFINITY, f64::max);
                m + (0..c).map(|k| (score(t, k) - m).exp()).sum::<f64>().ln()
            }
        })
        .collect();
    let mut lp = vec![0.0; frames * w];
    for t in 0..frames {
        for s in 0..w {
            lp[t * w + s] = score(t, ext[s]) - norm[t];
        }
    }
    let skip = |s: usize| s % 2 == 1 && s >= 2 && ext[s] != ext[s - 2];
    let mut alpha = vec![f64::NEG_INFINITY; frames * w];
    for s in 0..w.min(2) {
        if frames > 0 {
            alpha[s] = lp[s];
        }
    }
    for t in 1..frames {
        for s in 0..w {
            let prev = &alpha[(t - 1) * w..t * w];
            let mut v = prev[s];
            if s >= 1 {
                v = log_add(v, prev[s - 1]);
            }
            if skip(s) {
                v = log_add(v, prev[s - 2]);
            }
            alpha[t * w + s] = lp[t * w + s] + v;
        }
    }
    // A NaN (or, given as log_probs, +∞) log-probability the sequence reads makes its
    // likelihood NaN, whether or not a path reaches it (as the kernel's check).
    let unreadable = lp.iter().any(|v| v.is_nan() || *v == f64::INFINITY);
    let ll = match frames {
        _ if unreadable => f64::NAN,
        0 if labels.is_empty() => 0.0,
        0 => f64::NEG_INFINITY,
        _ => {
            let last = &alpha[(frames - 1) * w..];
            log_add(
                last[w - 1],
                if w >= 2 {
                    last[w - 2]
                } else {
                    f64::NEG_INFINITY
                },
            )
        }
    };
    let mut beta = vec![f64::NEG_INFINITY; frames * w];
    if opts.gradient && frames > 0 {
        for s in w.saturating_sub(2)..w {
            beta[(frames - 1) * w + s] = lp[(frames - 1) * w + s];
        }
        for t in (0..frames - 1).rev() {
            for s in 0..w {
                let after = &beta[(t + 1) * w..(t + 2) * w];
                let mut v = after[s];
                if s + 1 < w {
                    v = log_add(v, after[s + 1]);
                }
                if s + 2 < w && skip(s + 2) {
                    v = log_add(v, after[s + 2]);
                }
                beta[t * w + s] = lp[t * w + s] + v;
            }
        }
    }
    Recursion {
        norm,
        lp,
        alpha,
        beta,
        ll,
        ext,
        next,
        first,
    }
}

/// The CTC loss on the CPU; the gradient is written in the scores' type unless `grad_dtype`
/// says otherwise.
///
/// # Errors
/// As [`crate::Ctc::record`], and [`crate::Error::Value`] naming the sequence of a target that
/// is the blank or not a class.
pub fn ctc<T: Element>(opts: &Ctc, inputs: &HostCtcInputs<'_, T>) -> Result<LossValues> {
    let (t, n, c) = inputs.shape;
    let logits_shape = match inputs.logits.len() == t * n * c {
        true => vec![t, n, c],
        false => vec![inputs.logits.len()],
    };
    let len = inputs.targets.len();
    let targets_shape = match inputs.padded {
        Some(s) if s * n == len => vec![n, s],
        Some(s) if s > 0 && len.is_multiple_of(s) => vec![len / s, s],
        // Not whole rows: a shape the check rejects, naming the length.
        Some(s) => vec![len, s],
        None => vec![len],
    };
    let (scalar_upstream, per_item) = inputs.upstream.split(|g| [g.len()]);
    let layout: Layout = opts.check(&Args {
        logits: Arg {
            shape: &logits_shape,
            dtype: T::DTYPE,
        },
        targets: Arg {
            shape: &targets_shape,
            dtype: crate::core::DType::I32,
        },
        input_lengths: inputs.input_lengths,
        target_lengths: inputs.target_lengths,
        scalar_upstream,
        per_item_upstream: per_item.as_ref().map(|s| Arg::f32(s)),
    })?;
    let labels: Vec<&[i32]> = (0..n)
        .map(|seq| sequence(inputs.targets, &layout, seq, opts.blank))
        .collect::<Result<_>>()?;
    let x = |i: usize| inputs.logits[i].to_f32() as f64;
    let runs: Vec<Recursion> = (0..n)
        .into_par_iter()
        .map(|seq| {
            let score = |frame: usize, k: usize| x((frame * n + seq) * c + k);
            recurse(opts, score, layout.frames[seq], c, labels[seq])
        })
        .collect();
    let impossible = |seq: usize| runs[seq].ll == f64::NEG_INFINITY;
    let losses: Vec<f64> = (0..n)
        .map(|seq| match impossible(seq) {
            true if opts.zero_infinity => 0.0,
            true => f64::INFINITY,
            false => -runs[seq].ll * layout.weight(seq, opts.reduction),
        })
        .collect();
    let denom = match opts.reduction {
        Reduction::Mean => n as f64,
        _ => 1.0,
    };
    let loss = match opts.reduction {
        Reduction::None => losses.iter().map(|&l| l as f32).collect(),
        _ => vec![(losses.iter().sum::<f64>() / denom) as f32],
    };
    let mut grads = Vec::new();
    if opts.gradient {
        let upstream = inputs.upstream.values();
        let up = |seq: usize| *upstream.get(seq).or(upstream.first()).unwrap_or(&1.0) as f64;
        let mut grad = vec![0.0f32; t * n * c];
        grad.par_chunks_mut(c).enumerate().for_each(|(row, g)| {
            let (frame, seq) = (row / n, row % n);
            let r = &runs[seq];
            if frame >= layout.frames[seq] || impossible(seq) {
                return; // zeros
            }
            let scale = up(seq) / denom * layout.weight(seq, opts.reduction);
            let w = r.ext.len();
            let softmax = |k: usize| match opts.input {
                CtcInput::Logits => (x(row * c + k) - r.norm[frame]).exp(),
                CtcInput::LogProbs => 0.0,
            };
            // With log-probabilities a class no path reaches keeps a structural 0, whatever
            // the upstream gradient (as the kernel, which never writes it).
            if opts.input == CtcInput::Logits {
                for (k, g) in g.iter_mut().enumerate() {
                    *g = (softmax(k) * scale) as f32;
                }
            }
            // Each label's first position sums the occupancies along its chain.
            // A cell of probability 0 (a −∞ log-probability) carries no path: 0, not
            // e^(−∞ + ∞).
            let cell = |s: usize| {
                let i = frame * w + s;
                match r.lp[i] {
                    f64::NEG_INFINITY => 0.0,
                    lp => (r.alpha[i] + r.beta[i] - lp - r.ll).exp(),
                }
            };
            let blank: f64 = (0..w).step_by(2).map(cell).sum();
            g[r.ext[0]] = ((softmax(r.ext[0]) - blank) * scale) as f32;
            for s in (1..w).step_by(2).filter(|&s| r.first[s]) {
                let chain = std::iter::successors(Some(s), |&j| r.next[j]);
                let occupancy: f64 = chain.map(cell).sum();
                g[r.ext[s]] = ((softmax(r.ext[s]) - occupancy) * scale) as f32;
            }
        });
        grads.push(("logits", grad));
    }
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        opts.grad_dtype.unwrap_or(T::DTYPE),
    ))
}
