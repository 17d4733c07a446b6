//! f64 elementwise losses, the twin of `shaders/elementwise.wgsl`. BCE and focal loss are
//! written from their textbook definitions (`-w·[pw·y·log σ(x) + (1-y)·log(1-σ(x))]`), not
//! from the kernel's rearranged form, so the two check each other.

use super::{ElementwiseLoss, Pointwise};
use crate::core::reference::{reduce, RefOutput};
use crate::core::Reduction;
use crate::error::Result;

/// The host arrays of an elementwise problem, all in the input's shape except the
/// broadcast `weight` (or full-shape) and `pos_weight` (last dimension).
#[derive(Debug, Clone, Copy)]
pub struct RefInputs<'a> {
    /// Input, logits or x1.
    pub a: &'a [f64],
    /// Target or x2.
    pub b: &'a [f64],
    /// Margin ranking's y.
    pub labels: Option<&'a [f64]>,
    /// Gaussian NLL's variance: one per element, or one per item of the last dimension.
    pub var: Option<&'a [f64]>,
    /// BCE weight.
    pub weight: Option<&'a [f64]>,
    /// BCE positive weight.
    pub pos_weight: Option<&'a [f64]>,
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// (loss, d/da, d/db, magnitude of the terms summed into d/da) of one element.
/// `pw·y·softplus(−x) + (1 − y)·softplus(x)`, the textbook BCE on a logit; with an infinite
/// logit, target or pos_weight, where the textbook form is a limit or ∞ − ∞, PyTorch's evaluation `(1 − y)·x + (1 + (pw −
/// 1)·y)·softplus(−x)` instead (NaN at x = −∞, and at x = +∞ with y = 1), as docs/LOSSES.md
/// makes PyTorch the reference.
fn bce_textbook_or_pytorch(x: f64, y: f64, pw: f64) -> f64 {
    if x.is_infinite() || y.is_infinite() || pw.is_infinite() {
        (1.0 - y) * x + (1.0 + (pw - 1.0) * y) * softplus(-x)
    } else {
        pw * y * softplus(-x) + (1.0 - y) * softplus(x)
    }
}

fn term(kind: Pointwise, x: f64, y: f64, label: f64, w: f64, pw: f64) -> (f64, f64, f64, f64) {
    let sign = |d: f64| {
        if d > 0.0 {
            1.0
        } else if d < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let plain = |l: f64, g: f64| (l, g, 0.0, g.abs());
    match kind {
        Pointwise::Mse => plain((x - y).powi(2), 2.0 * (x - y)),
        Pointwise::L1 | Pointwise::SmoothL1 { beta: 0.0 } => plain((x - y).abs(), sign(x - y)),
        Pointwise::Huber { delta } => {
            // A NaN difference takes the quadratic side: NaN loss and gradient, as PyTorch.
            let (d, delta) = (x - y, delta as f64);
            if d.abs() >= delta {
                plain(delta * (d.abs() - 0.5 * delta), delta * sign(d))
            } else {
                plain(0.5 * d * d, d)
            }
        }
        Pointwise::SmoothL1 { beta } => {
            let (d, beta) = (x - y, beta as f64);
            if d.abs() >= beta {
                plain(d.abs() - 0.5 * beta, sign(d))
            } else {
                plain(0.5 * d * d / beta, d / beta)
            }
        }
        Pointwise::KlDiv { log_target: false } => {
            if y > 0.0 {
                plain(y * (y.ln() - x), -y)
            } else if y <= 0.0 {
                plain(0.0, 0.0)
            } else {
                plain(y, y) // NaN propagates, as PyTorch's xlogy
            }
        }
        Pointwise::KlDiv { log_target: true } => plain(y.exp() * (y - x), -y.exp()),
        Pointwise::Quantile { q } => {
            let (d, q) = (y - x, q as f64);
            if d > 0.0 {
                plain(q * d, -q)
            } else if d < 0.0 {
                plain((q - 1.0) * d, 1.0 - q)
            } else {
                plain((q - 1.0) * d, 0.0)
            }
        }
        Pointwise::Power { p } => {
            // p·|d|^(p−1)·sign(d): 0 at d = 0 for every p ≥ 1 (sign(0) = 0); NaN for NaN.
            let (d, p) = (x - y, p as f64);
            if d == 0.0 {
                plain(0.0, 0.0)
            } else {
                plain(d.abs().powf(p), p * d.abs().powf(p - 1.0) * d.signum())
            }
        }
        Pointwise::SoftMargin => {
            // softplus(−y·x); d/dx = −y·σ(−y·x).
            plain(softplus(-y * x), -y * sigmoid(-y * x))
        }
        Pointwise::HingeEmbedding { margin } => {
            let m = margin as f64 - x;
            // PyTorch's in-place clamp_min_ passes no gradient at m = 0.
            if y == 1.0 {
                plain(x, 1.0)
            } else if m > 0.0 {
                plain(m, -1.0)
            } else if m <= 0.0 {
                plain(0.0, 0.0)
            } else {
                plain(m, 0.0) // NaN stays the loss, with a zero gradient
            }
        }
        Pointwise::PoissonNll {
            log_input,
            full,
            eps,
        } => {
            let stirling = if full && y > 1.0 {
                y * y.ln() - y + 0.5 * (2.0 * std::f64::consts::PI * y).ln()
            } else {
                0.0
            };
            if log_input {
                plain(x.exp() - y * x + stirling, x.exp() - y)
            } else {
                let r = x + eps as f64;
                plain(x - y * r.ln() + stirling, 1.0 - y / r)
            }
        }
        Pointwise::GaussianNll { full, eps } => {
            // `label` is the variance: clamped for the value, the gradient passing through
            // the clamp; the terms of ∂/∂var are ½/v and ½·d²/v².
            let (v, d) = (label.max(eps as f64), x - y);
            let constant = if full {
                0.5 * (2.0 * std::f64::consts::PI).ln()
            } else {
                0.0
            };
            let dv = 0.5 / v - 0.5 * d * d / (v * v);
            let mag = (d / v).abs().max(0.5 / v + 0.5 * d * d / (v * v));
            (0.5 * (v.ln() + d * d / v) + constant, d / v, dv, mag)
        }
        Pointwise::Hinge => {
            // clamp_min: a NaN m stays the loss, with a zero gradient.
            let m = 1.0 - y * x;
            if m > 0.0 {
                plain(m, -y)
            } else if m <= 0.0 {
                plain(0.0, 0.0)
            } else {
                plain(m, 0.0)
            }
        }
        Pointwise::MarginRanking { margin } => {
            let m = -label * (x - y) + margin as f64;
            if m > 0.0 {
                (m, -label, label, 1.0)
            } else if m <= 0.0 {
                (0.0, 0.0, 0.0, 0.0)
            } else {
                (m, 0.0, 0.0, 0.0)
            }
        }
        Pointwise::Bce => {
            // PyTorch's clamps: the logs at −100, the gradient's denominator at 1e−12 (an f32
            // constant there too, even in float64).
            let (lp, lq) = (x.ln().max(-100.0), (1.0 - x).ln().max(-100.0));
            let l = -w * (y * lp + (1.0 - y) * lq);
            plain(l, w * (x - y) / (x * (1.0 - x)).max(1e-12_f32 as f64))
        }
        Pointwise::BceWithLogits => {
            // log σ(x) = -softplus(-x), log(1 - σ(x)) = -softplus(x).
            let l = w * bce_textbook_or_pytorch(x, y, pw);
            let pos = w * pw * y * sigmoid(-x);
            let neg = w * (1.0 - y) * sigmoid(x);
            if [x, y, w, pw].iter().all(|v| v.is_finite()) {
                (l, neg - pos, 0.0, pos.abs() + neg.abs())
            } else {
                // PyTorch's gradient, w·((1 − y) − (1 + (pw − 1)·y)·σ(−x)), where an infinite
                // input makes the two textbook terms ∞ − ∞.
                let g = w * ((1.0 - y) - (1.0 + (pw - 1.0) * y) * sigmoid(-x));
                (l, g, 0.0, g.abs())
            }
        }
        Pointwise::SigmoidFocal { alpha, gamma } => {
            let (alpha, gamma) = (alpha as f64, gamma as f64);
            let p = sigmoid(x);
            let ce = bce_textbook_or_pytorch(x, y, 1.0);
            let m = 1.0 - (p * y + (1.0 - p) * (1.0 - y)); // 1 - p_t
            let a = if alpha >= 0.0 {
                alpha * y + (1.0 - alpha) * (1.0 - y)
            } else {
                1.0
            };
            let f = m.powf(gamma);
            // d(1 - p_t)/dx = p(1 - p)(1 - 2y); the γ term vanishes at γ = 0 or m = 0.
            // f64::powf is C's pow: whole exponents accept negative bases (targets outside
            // [0, 1] make m negative), as torch's ** does.
            let df = if gamma == 0.0 || m == 0.0 {
                0.0
            } else {
                gamma * m.powf(gamma - 1.0) * p * (1.0 - p) * (1.0 - 2.0 * y)
            };
            let g = a * ((p - y) * f + ce * df);
            (
                a * ce * f,
                g,
                0.0,
                a.abs() * ((p + y.abs()) * f + (ce * df).abs()),
            )
        }
    }
}

/// The elementwise loss of `loss.kind` on arrays of `shape`; `upstream` holds one value or
/// one per element.
///
/// # Errors
/// Option errors as [`ElementwiseLoss::validate`]; [`crate::Error::Value`] for a negative
/// variance.
pub fn elementwise(
    loss: &ElementwiseLoss,
    shape: &[usize],
    inputs: RefInputs<'_>,
    upstream: &[f64],
) -> Result<RefOutput> {
    loss.validate()?;
    let len = inputs.a.len();
    let inner = shape.last().copied().unwrap_or(1);
    let mut l = vec![0.0; len];
    let mut ga = vec![0.0; len];
    let mut gb = vec![0.0; len];
    let mut mag = vec![0.0; len];
    // Gaussian NLL: the variance of element i, its ½·|log v| + ½·d²/v (the terms its loss
    // adds), and for a variance per item the items' gradients summed.
    let per_item = inputs.var.is_some_and(|v| v.len() != len);
    let var = |i: usize| {
        inputs
            .var
            .map(|v| if per_item { v[i / inner] } else { v[i] })
    };
    if let Some(row) = inputs.var.and_then(|v| v.iter().position(|&v| v < 0.0)) {
        return Err(crate::Error::Value {
            input: "var",
            row,
            value: (inputs.var.unwrap()[row] as f32).to_string(),
            reason: "variances must be >= 0".into(),
        });
    }
    let mut loss_terms = 0.0f64;
    for i in 0..len {
        let w = inputs
            .weight
            .map_or(1.0, |w| if w.len() == len { w[i] } else { w[i % inner] });
        let pw = inputs.pos_weight.map_or(1.0, |p| p[i % inner]);
        let label = var(i).or(inputs.labels.map(|y| y[i])).unwrap_or(0.0);
        (l[i], ga[i], gb[i], mag[i]) = term(loss.kind, inputs.a[i], inputs.b[i], label, w, pw);
        if let (Some(v), Pointwise::GaussianNll { eps, .. }) = (var(i), loss.kind) {
            let v = v.max(eps as f64);
            let d = inputs.a[i] - inputs.b[i];
            loss_terms = loss_terms.max(0.5 * v.ln().abs() + 0.5 * d * d / v);
        }
    }
    let denom = match loss.reduction {
        Reduction::BatchMean => shape.first().copied().unwrap_or(1) as f64,
        _ => len as f64,
    };
    let (out, scale) = reduce(&l, loss.reduction, denom, upstream);
    let names = loss.kind.grad_names();
    let mut grads = vec![(names[0], (0..len).map(|i| ga[i] * scale(i)).collect())];
    if per_item {
        let items = len / inner;
        let sum = |item: usize| {
            (item * inner..(item + 1) * inner)
                .map(|i| gb[i] * scale(i))
                .sum()
        };
        grads.push((names[1], (0..items).map(sum).collect()));
    } else if names.len() == 2 {
        grads.push((names[1], (0..len).map(|i| gb[i] * scale(i)).collect()));
    }
    let grad_terms = (0..len).fold(0.0f64, |m, i| m.max((mag[i] * scale(i)).abs()));
    Ok(RefOutput {
        loss: out,
        grads: if loss.gradient { grads } else { Vec::new() },
        grad_terms,
        loss_terms,
        decision_gap: f64::INFINITY,
    })
}
