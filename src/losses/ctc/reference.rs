//! f64 CTC from the definition (Graves et al. 2006): the extended label sequence, the
//! forward and backward variables over every allowed transition, and each class's
//! occupancy summed over the positions that carry it.

use super::{sequence, Args, Ctc, CtcInput};
use crate::core::reference::{reduce, reduced_terms, RefOutput};
use crate::core::{Arg, DType};
use crate::error::Result;

/// log(Σ e^v) over `v`, −∞ for an empty or all −∞ list, NaN when one is NaN.
fn log_sum(v: &[f64]) -> f64 {
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The host inputs of the reference: scores `[T, N, C]` in f64, targets as given (padded
/// `[N, S]` or concatenated, with their shape), host lengths.
#[derive(Debug, Clone, Copy)]
pub struct RefCtcInputs<'a> {
    /// Logits or log-probabilities `[T, N, C]`.
    pub scores: &'a [f64],
    /// (T, N, C).
    pub shape: (usize, usize, usize),
    /// The targets and their shape.
    pub targets: (&'a [i32], &'a [usize]),
    /// Frames per sequence.
    pub input_lengths: &'a [i32],
    /// Target length per sequence.
    pub target_lengths: &'a [i32],
    /// One value (a scalar upstream gradient) or one per sequence (reduction none).
    pub upstream: &'a [f64],
}

/// The CTC loss of docs/LOSSES.md and its gradient with respect to the scores.
///
/// # Errors
/// As [`Ctc::record`]'s input checks; [`crate::Error::Value`] naming the sequence of a target that is the
/// blank or not a class.
pub fn ctc(opts: &Ctc, x: RefCtcInputs<'_>) -> Result<RefOutput> {
    let (t, n, c) = x.shape;
    let upstream_arg = [x.upstream.len()];
    // One value is a scalar (checked to be finite), also for a batch of one; any other count
    // is per sequence, which the check holds to reduction none and N values.
    let per_item = x.upstream.len() != 1;
    let layout = opts.check(&Args {
        logits: Arg::f32(&[t, n, c]),
        targets: Arg {
            shape: x.targets.1,
            dtype: DType::I32,
        },
        input_lengths: x.input_lengths,
        target_lengths: x.target_lengths,
        scalar_upstream: (x.upstream.len() == 1 && !per_item).then(|| x.upstream[0] as f32),
        per_item_upstream: per_item.then(|| Arg::f32(&upstream_arg)),
    })?;
    let blank = opts.blank as usize;
    let score = |tt: usize, seq: usize, k: usize| x.scores[(tt * n + seq) * c + k];
    // Per frame and sequence: log-probabilities of every class.
    let log_probs = |tt: usize, seq: usize| -> Vec<f64> {
        let row: Vec<f64> = (0..c).map(|k| score(tt, seq, k)).collect();
        match opts.input {
            CtcInput::LogProbs => row,
            CtcInput::Logits => {
                let lse = log_sum(&row);
                row.iter().map(|v| v - lse).collect()
            }
        }
    };
    let mut losses = vec![0.0; n];
    let mut local = vec![0.0; t * n * c];
    // Rows with a gradient: the frames of sequences with a possible alignment (the others'
    // is 0 whatever the upstream gradient).
    let mut scored = vec![false; t * n];
    // With log-probabilities, a class outside the sequence's labels and blank has no path
    // through it: its gradient is a structural 0, whatever the upstream gradient (as an
    // ignored row's).
    let mut unreached = vec![false; t * n * c];
    let mut loss_terms = vec![0.0; n];
    for seq in 0..n {
        let labels = sequence(x.targets.0, &layout, seq, opts.blank)?;
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
        let frames = layout.frames[seq];
        let lp: Vec<Vec<f64>> = (0..frames).map(|tt| log_probs(tt, seq)).collect();
        // A path may enter position s from s, from s − 1, and from s − 2 when s holds a label
        // that differs from the one at s − 2.
        let skip = |s: usize| s >= 2 && ext[s] != blank && ext[s] != ext[s - 2];
        let mut alpha = vec![vec![f64::NEG_INFINITY; w]; frames];
        let mut beta = vec![vec![f64::NEG_INFINITY; w]; frames];
        for tt in 0..frames {
            for s in 0..w {
                let mut from = Vec::new();
                if tt == 0 {
                    if s < 2 {
                        from.push(0.0);
                    }
                } else {
                    from.push(alpha[tt - 1][s]);
                    if s >= 1 {
                        from.push(alpha[tt - 1][s - 1]);
                    }
                    if skip(s) {
                        from.push(alpha[tt - 1][s - 2]);
                    }
                }
                alpha[tt][s] = lp[tt][ext[s]] + log_sum(&from);
            }
        }
        for tt in (0..frames).rev() {
            for s in 0..w {
                let mut to = Vec::new();
                if tt + 1 == frames {
                    if s + 2 >= w {
                        to.push(0.0);
                    }
                } else {
                    to.push(beta[tt + 1][s]);
                    if s + 1 < w {
                        to.push(beta[tt + 1][s + 1]);
                    }
                    if s + 2 < w && skip(s + 2) {
                        to.push(beta[tt + 1][s + 2]);
                    }
                }
                beta[tt][s] = lp[tt][ext[s]] + log_sum(&to);
            }
        }
        // A NaN (or, given as log_probs, +∞) log-probability of the sequence's labels makes
        // its likelihood NaN, whether or not a path reaches it.
        let unreadable = (0..frames)
            .any(|tt| ext.iter().any(|&k| lp[tt][k].is_nan() || lp[tt][k] == f64::INFINITY));
        let ll = match frames {
            _ if unreadable => f64::NAN,
            0 if labels.is_empty() => 0.0,
            0 => f64::NEG_INFINITY,
            _ => log_sum(&alpha[frames - 1][w.saturating_sub(2)..]),
        };
        let weight = layout.weight(seq, opts.reduction);
        losses[seq] = match ll {
            f64::NEG_INFINITY if opts.zero_infinity => 0.0,
            ll => -ll * weight,
        };
        loss_terms[seq] = weight
            * (0..frames)
                .map(|tt| ext.iter().map(|&k| lp[tt][k].abs()).fold(0.0, f64::max))
                .sum::<f64>();
        if ll == f64::NEG_INFINITY {
            continue; // no gradient through an impossible alignment
        }
        for tt in 0..frames {
            scored[tt * n + seq] = true;
            // Each position's share of the paths through frame tt, added to its class.
            let mut occupancy = vec![0.0; c];
            // A cell of probability 0 (a −∞ log-probability) carries no path: its share is
            // 0, not e^(−∞ + ∞).
            for s in (0..w).filter(|&s| lp[tt][ext[s]] != f64::NEG_INFINITY) {
                occupancy[ext[s]] += (alpha[tt][s] + beta[tt][s] - lp[tt][ext[s]] - ll).exp();
            }
            if opts.input == CtcInput::LogProbs {
                for k in (0..c).filter(|k| !ext.contains(k)) {
                    unreached[(tt * n + seq) * c + k] = true;
                }
            }
            let g = &mut local[(tt * n + seq) * c..(tt * n + seq + 1) * c];
            for (k, g) in g.iter_mut().enumerate() {
                *g = match opts.input {
                    CtcInput::Logits => lp[tt][k].exp() - occupancy[k],
                    CtcInput::LogProbs => -occupancy[k],
                } * weight;
            }
        }
    }
    let (loss, scale) = reduce(&losses, opts.reduction, n as f64, x.upstream);
    let grad: Vec<f64> = local
        .iter()
        .enumerate()
        .map(|(i, g)| match scored[i / c] && !unreached[i] {
            true => g * scale(i / c % n),
            false => 0.0,
        })
        .collect();
    let grad_terms = (0..n).map(|seq| (scale(seq) * layout.weight(seq, opts.reduction)).abs());
    let loss_terms = reduced_terms(&loss_terms, opts.reduction, n as f64);
    Ok(RefOutput {
        loss,
        grads: match opts.gradient {
            true => vec![("logits", grad)],
            false => Vec::new(),
        },
        grad_terms: grad_terms.fold(0.0, f64::max),
        loss_terms,
        decision_gap: f64::INFINITY,
    })
}
