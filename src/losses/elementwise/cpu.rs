//! Elementwise losses on the CPU: the twin of `shaders/elementwise.wgsl`, element chunks in
//! parallel with one f64 partial sum each, added in order.

use rayon::prelude::*;

use super::{Args, ElementwiseLoss, Pointwise};
use crate::core::cpu_math::{exp, ln_1p_unit, ln_pos, Floats, FloatsMut, CHUNK_ELEMENTS};
use crate::core::{host_shape, Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};

/// Host inputs of a CPU elementwise loss; the fields mirror
/// [`crate::ElementwiseInputs`]. `upstream`: a scalar, or one per element
/// with reduction none. The input (`A`) may be f32, [`half::f16`] or [`half::bf16`], and so
/// may margin ranking's x2 (`B`); a target is f32.
#[derive(Debug, Clone, Copy)]
pub struct HostElementInputs<'a, A: Element = f32, B: Element = f32> {
    /// The input's shape.
    pub shape: &'a [usize],
    /// Input, logits or x1.
    pub input: &'a [A],
    /// Target or x2.
    pub target: &'a [B],
    /// Margin ranking's y.
    pub labels: Option<&'a [f32]>,
    /// Gaussian NLL's variance: one per element, or one per item (the last dimension
    /// dropped).
    pub var: Option<&'a [f32]>,
    /// BCE weight: full shape or last dimension.
    pub weight: Option<&'a [f32]>,
    /// BCE positive weight, last dimension.
    pub pos_weight: Option<&'a [f32]>,
    /// Upstream gradient.
    pub upstream: Upstream<'a, [f32]>,
}

/// The first element of `v` that is not ±1. Blocks are scanned with a branch-free OR (which
/// vectorizes; an early-exit scan of 4M labels took 20 ms, ten times the loss itself), and
/// only a bad block is searched element by element.
fn first_non_sign(v: &[f32]) -> Option<usize> {
    const BLOCK: usize = 4096;
    let bad = |l: f32| (l != 1.0) & (l != -1.0);
    v.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        block
            .iter()
            .fold(false, |any, &l| any | bad(l))
            .then(|| b * BLOCK + block.iter().position(|&l| bad(l)).unwrap_or(0))
    })
}

/// The first value of `v` outside [0, 1] (NaN included), scanned a block at a time.
fn first_outside_unit(v: Floats<'_>) -> Option<usize> {
    let mut buf = [0.0f32; 4096];
    (0..v.len()).step_by(buf.len()).find_map(|b| {
        let block = v.block(b..(b + 4096).min(v.len()), &mut buf);
        let bad = |p: f32| !(0.0..=1.0).contains(&p);
        block
            .iter()
            .fold(false, |any, &p| any | bad(p))
            .then(|| b + block.iter().position(|&p| bad(p)).unwrap_or(0))
    })
}

fn sgn(d: f32) -> f32 {
    if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// sigmoid(x), sigmoid(−x) and softplus(−x) from one exp. The sign of x picks which of r
/// and e·r is which through a 0/1 factor (one of the two products is exactly 0), not a
/// branch: the sign is unpredictable element to element.
#[inline(always)]
fn logistic(x: f32) -> (f32, f32, f32) {
    let e = exp(-x.abs());
    let r = 1.0 / (1.0 + e);
    let neg = (x < 0.0) as u32 as f32;
    let er = e * r;
    let p = r * (1.0 - neg) + er * neg;
    let q = er * (1.0 - neg) + r * neg;
    (p, q, ln_1p_unit(e) + (-x).max(0.0))
}

/// (loss, d/da, d/db) of one element.
type Term = (f32, f32, f32);

fn mse(x: f32, y: f32) -> Term {
    ((x - y) * (x - y), 2.0 * (x - y), 0.0)
}

fn l1(x: f32, y: f32) -> Term {
    ((x - y).abs(), sgn(x - y), 0.0)
}

/// v limited to [-r, r], NaN kept; unlike `f32::clamp` no assertion on the bounds sits in
/// the loop (it kept these loops scalar).
#[inline(always)]
fn limit(v: f32, r: f32) -> f32 {
    if v < -r {
        -r
    } else if v > r {
        r
    } else {
        v
    }
}

// huber and smooth-l1 as the quadratic part up to δ (β) plus the linear part beyond it,
// through min and limit: no per-element branch, whose side is unpredictable (3× faster).
// NaN stays NaN (min keeps δ, then |d| − δ is NaN; limit keeps NaN); ±inf gives inf, ±δ.
fn huber(x: f32, y: f32, delta: f32) -> Term {
    let d = x - y;
    let a = d.abs().min(delta);
    let l = 0.5 * a * a + delta * (d.abs() - a);
    let g = limit(d, delta);
    (l, g, 0.0)
}

fn smooth_l1(x: f32, y: f32, beta: f32) -> Term {
    let d = x - y;
    let a = d.abs().min(beta);
    let l = 0.5 * a * a / beta + (d.abs() - a);
    let g = limit(d, beta) / beta;
    (l, g, 0.0)
}

// 0 where y ≤ 0, chosen per value rather than by a branch, so the loop vectorizes; a NaN
// target propagates (as PyTorch's xlogy).
fn kl_div(x: f32, y: f32) -> Term {
    let off = y <= 0.0;
    let l = y * (ln_pos(y) - x);
    (if off { 0.0 } else { l }, if off { 0.0 } else { -y }, 0.0)
}

fn kl_div_log_target(x: f32, y: f32) -> Term {
    let e = exp(y);
    (e * (y - x), -e, 0.0)
}

// hinge and margin-ranking without a per-element branch: a select, and a 0/1 factor for the
// gradient. As PyTorch's clamp_min, a NaN m stays the loss with a zero gradient (f32::max
// would drop it).
fn hinge(x: f32, y: f32) -> Term {
    let m = 1.0 - y * x;
    let on = (m > 0.0) as u32 as f32;
    (if m <= 0.0 { 0.0 } else { m }, -y * on, 0.0)
}

fn margin_ranking(x1: f32, x2: f32, y: f32, margin: f32) -> Term {
    let m = -y * (x1 - x2) + margin;
    let on = (m > 0.0) as u32 as f32;
    (if m <= 0.0 { 0.0 } else { m }, -y * on, y * on)
}

// d = y − x; q·d on the positive side, (q − 1)·d elsewhere (NaN: NaN loss, gradient 0).
fn quantile(x: f32, y: f32, q: f32) -> Term {
    let d = y - x;
    let pos = (d > 0.0) as u32 as f32;
    let neg = (d < 0.0) as u32 as f32;
    let l = if d > 0.0 { q * d } else { (q - 1.0) * d };
    (l, -q * pos + (1.0 - q) * neg, 0.0)
}

// |d|^p with d = x − y: gradient p·|d|^(p−1)·sign(d), 0 at d = 0 (±∞ at d = ±∞ for p > 1,
// ±1 for p = 1); NaN stays NaN.
fn power(x: f32, y: f32, p: f32) -> Term {
    let d = x - y;
    let a = d.abs();
    if a == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let lower = if p == 1.0 { 1.0 } else { a.powf(p - 1.0) };
    let g = p * lower * d.signum();
    (a * lower, if d.is_nan() { d } else { g }, 0.0)
}

// log(1 + exp(−y·x)) for y = ±1 and its gradient −y·σ(−y·x), from one exp.
fn soft_margin(x: f32, y: f32) -> Term {
    let (_, q, sp) = logistic(y * x);
    (sp, -y * q, 0.0)
}

// x where y = 1, max(0, margin − x) where y = −1, with a gradient only where margin − x > 0
// (none at 0, as PyTorch's in-place clamp_min_; NaN stays the loss with a zero gradient).
fn hinge_embedding(x: f32, y: f32, margin: f32) -> Term {
    if y == 1.0 {
        return (x, 1.0, 0.0);
    }
    let m = margin - x;
    (
        if m < 0.0 { 0.0 } else { m },
        if m > 0.0 { -1.0 } else { 0.0 },
        0.0,
    )
}

/// Stirling's `y·log y − y + ½·log(2πy)` where y > 1, else 0.
fn stirling(y: f32) -> f32 {
    if y > 1.0 {
        y * ln_pos(y) - y + 0.5 * ln_pos(std::f32::consts::TAU * y)
    } else {
        0.0
    }
}

fn poisson_nll_log(x: f32, y: f32, full: bool) -> Term {
    let e = exp(x);
    (e - y * x + if full { stirling(y) } else { 0.0 }, e - y, 0.0)
}

// log(x + eps) through libm: a negative rate gives NaN and 0 gives −∞, as in PyTorch
// (ln_pos assumes a positive argument).
fn poisson_nll(x: f32, y: f32, eps: f32, full: bool) -> Term {
    let l = x - y * (x + eps).ln() + if full { stirling(y) } else { 0.0 };
    (l, 1.0 - y / (x + eps), 0.0)
}

/// ½·(log v + d²/v) with v = max(var, eps), `full` adding ½·log 2π; ∂/∂var passes through
/// the clamp (PyTorch clamps under no_grad).
fn gaussian_nll(x: f32, y: f32, var: f32, eps: f32, full: bool) -> Term {
    let v = var.max(eps);
    let d = x - y;
    let r = d / v;
    let half_log_tau = 0.918_938_5_f32;
    let l = 0.5 * (v.ln() + d * r) + if full { half_log_tau } else { 0.0 };
    (l, r, 0.5 * (1.0 - d * r) / v)
}

// BCE on a probability (checked in [0, 1]): logs clamped at −100 and the gradient's
// denominator at 1e−12, as PyTorch's forward and backward.
fn bce(p: f32, y: f32, w: f32) -> Term {
    let (lp, lq) = (p.ln().max(-100.0), (1.0 - p).ln().max(-100.0));
    (
        -w * (y * lp + (1.0 - y) * lq),
        w * (p - y) / ((1.0 - p) * p).max(1e-12),
        0.0,
    )
}

fn bce_with_logits(x: f32, y: f32, w: f32, pw: f32) -> Term {
    let (_, q, sp) = logistic(x);
    let lw = 1.0 + (pw - 1.0) * y;
    (w * ((1.0 - y) * x + lw * sp), w * ((1.0 - y) - lw * q), 0.0)
}

/// `pow_m(m)` gives (m^γ, γ·m^(γ−1)), the latter 0 at m = 0 (and for γ = 0).
#[inline(always)]
fn sigmoid_focal(x: f32, y: f32, alpha: f32, pow_m: impl Fn(f32) -> (f32, f32)) -> Term {
    let (p, q, sp) = logistic(x);
    let ce = (1.0 - y) * x + sp;
    let m = p * (1.0 - y) + q * y;
    let (f, dm) = pow_m(m);
    let df = dm * p * q * (1.0 - 2.0 * y);
    let a = if alpha >= 0.0 {
        alpha * y + (1.0 - alpha) * (1.0 - y)
    } else {
        1.0
    };
    (a * ce * f, a * ((p - y) * f + ce * df), 0.0)
}

/// [`focal_power`] for a fractional γ as exp(γ·ln m) (relative error ~|γ·ln m|·2⁻²⁴), with
/// C's pow at the edges: 0^γ = 0, a negative base gives NaN.
#[inline(always)]
fn focal_power_fractional(gamma: f32, m: f32) -> (f32, f32) {
    let l = ln_pos(m);
    let (f, d) = (exp(gamma * l), gamma * exp((gamma - 1.0) * l));
    if m > 0.0 {
        (f, d)
    } else if m == 0.0 {
        (0.0, 0.0)
    } else {
        (f32::NAN, f32::NAN)
    }
}

/// [`sigmoid_focal`]'s m^γ for one γ: the common whole γ as multiplications (their loops
/// vectorize), C's pow otherwise (whole exponents take negative bases; 0^0 = 1).
#[inline(always)]
fn focal_power(gamma: f32, m: f32) -> (f32, f32) {
    let zero_at_0 = |d: f32| if m == 0.0 { 0.0 } else { d };
    match gamma {
        0.0 => (1.0, 0.0),
        1.0 => (m, zero_at_0(1.0)),
        2.0 => (m * m, zero_at_0(2.0 * m)),
        _ => (m.powf(gamma), zero_at_0(gamma * m.powf(gamma - 1.0))),
    }
}

/// The elementwise loss of `inputs` on the CPU.
///
/// # Errors
/// Option, shape and label errors as the GPU path.
///
/// The gradients come back as the values written in `loss.grad_dtype` (by default each
/// input's type), widened to f32.
pub fn elementwise<A: Element, B: Element>(
    loss: &ElementwiseLoss,
    inputs: &HostElementInputs<'_, A, B>,
) -> Result<LossValues> {
    elementwise_dyn(loss, &Inputs::of(inputs), (A::DTYPE, B::DTYPE))
}

/// [`elementwise`] over inputs of any float type `types` (input, target or x2).
pub(crate) fn elementwise_dyn(
    loss: &ElementwiseLoss,
    inputs: &Inputs<'_>,
    (a_type, b_type): (DType, DType),
) -> Result<LossValues> {
    let names = loss.kind.grad_names();
    let len: usize = inputs.shape.iter().product();
    let size = |k: usize| {
        if loss.gradient && k < names.len() {
            len
        } else {
            0
        }
    };
    let gb_type = match inputs.var {
        Some(_) => loss.grad_dtype_for(inputs.var_dtype),
        None => loss.grad_dtype_for(b_type),
    };
    let ga_type = loss.grad_dtype_for(a_type);
    let second_len = inputs
        .var
        .map_or(size(1), |v| v.len() * usize::from(size(1) > 0));
    let (mut ga, mut gb) = (Grad::new(size(0)), Grad::new(second_len));
    let values = checked_into(
        loss,
        inputs,
        (a_type, b_type),
        ga.floats(ga_type),
        gb.floats(gb_type),
    )?;
    let mut grads = Vec::new();
    if loss.gradient {
        grads.push((names[0], ga.widened(ga_type)));
        if names.len() == 2 {
            grads.push((names[1], gb.widened(gb_type)));
        }
    }
    Ok(LossValues {
        loss: values,
        grads,
        rows: Vec::new(),
    })
}

/// A gradient buffer of any float type, for [`elementwise`].
struct Grad {
    f32: Vec<f32>,
    f16: Vec<half::f16>,
    bf16: Vec<half::bf16>,
}

impl Grad {
    fn new(len: usize) -> Self {
        Self {
            f32: vec![0.0; len],
            f16: vec![half::f16::ZERO; len],
            bf16: vec![half::bf16::ZERO; len],
        }
    }

    fn floats(&mut self, dtype: DType) -> FloatsMut<'_> {
        match dtype {
            DType::F16 => FloatsMut::of(&mut self.f16),
            DType::BF16 => FloatsMut::of(&mut self.bf16),
            _ => FloatsMut::of(&mut self.f32),
        }
    }

    fn widened(self, dtype: DType) -> Vec<f32> {
        match dtype {
            DType::F16 => self.f16.iter().map(|v| v.to_f32()).collect(),
            DType::BF16 => self.bf16.iter().map(|v| v.to_f32()).collect(),
            _ => self.f32,
        }
    }
}

/// As [`elementwise`], writing the gradients into `grad` (for the input, or x1) and `grad_x2`
/// (margin ranking's x2, gaussian NLL's var), reused across calls to save their allocation, and returning the
/// loss values. Without `loss.gradient` (or x2) the buffers are ignored and may be empty.
///
/// # Errors
/// As [`elementwise`]; [`Error::Shape`] when a gradient buffer has the wrong length.
/// [`Error::DType`] when one has the wrong type.
pub fn elementwise_into<A: Element, B: Element, GA: Element, GB: Element>(
    loss: &ElementwiseLoss,
    inputs: &HostElementInputs<'_, A, B>,
    grad: &mut [GA],
    grad_x2: &mut [GB],
) -> Result<Vec<f32>> {
    for (name, want, got) in [
        ("grad_out", loss.grad_dtype_for(A::DTYPE), GA::DTYPE),
        ("grad_out_x2", loss.grad_dtype_for(B::DTYPE), GB::DTYPE),
    ] {
        if loss.gradient && want != got {
            return Err(Error::DType {
                input: name,
                expected: want.name(),
                got: got.name(),
            });
        }
    }
    let types = (A::DTYPE, B::DTYPE);
    checked_into(
        loss,
        &Inputs::of(inputs),
        types,
        FloatsMut::of(grad),
        FloatsMut::of(grad_x2),
    )
}

/// [`HostElementInputs`] with the float arrays of any type.
pub(crate) struct Inputs<'a> {
    pub shape: &'a [usize],
    pub input: Floats<'a>,
    pub target: Floats<'a>,
    pub labels: Option<&'a [f32]>,
    pub var: Option<&'a [f32]>,
    /// The type `var`'s values came in (they are given widened): its gradient's default.
    pub var_dtype: DType,
    pub weight: Option<&'a [f32]>,
    pub pos_weight: Option<&'a [f32]>,
    pub upstream: Upstream<'a, [f32]>,
}

impl<'a> Inputs<'a> {
    fn of<A: Element, B: Element>(inputs: &HostElementInputs<'a, A, B>) -> Self {
        Self {
            shape: inputs.shape,
            input: Floats::of(inputs.input),
            target: Floats::of(inputs.target),
            labels: inputs.labels,
            var: inputs.var,
            var_dtype: DType::F32,
            weight: inputs.weight,
            pos_weight: inputs.pos_weight,
            upstream: inputs.upstream,
        }
    }
}

fn checked_into(
    loss: &ElementwiseLoss,
    inputs: &Inputs<'_>,
    (a_type, b_type): (DType, DType),
    grad: FloatsMut<'_>,
    grad_x2: FloatsMut<'_>,
) -> Result<Vec<f32>> {
    let shape = inputs.shape;
    let (len, inner) = (
        shape.iter().product::<usize>(),
        shape.last().copied().unwrap_or(1),
    );
    let as_shape = |v: &[f32]| host_shape(v.len(), shape);
    let (target, labels) = (
        host_shape(inputs.target.len(), shape),
        inputs.labels.map(as_shape),
    );
    let weight = inputs.weight.map(as_shape);
    // A variance per item drops the last dimension.
    let items = len / inner.max(1);
    let var_shape = inputs.var.map(|v| match v.len() {
        n if n == len => shape.to_vec(),
        n if n == items && !shape.is_empty() => shape[..shape.len() - 1].to_vec(),
        n => vec![n],
    });
    let pos_weight = inputs.pos_weight.map(|v| host_shape(v.len(), &[inner]));
    let (scalar_upstream, per_item) = inputs.upstream.split(as_shape);
    loss.check(&Args {
        input: Arg {
            shape: &host_shape(inputs.input.len(), shape),
            dtype: a_type,
        },
        target: Arg {
            shape: &target,
            dtype: b_type,
        },
        labels: labels.as_deref().map(Arg::f32),
        var: var_shape.as_deref().map(|shape| Arg {
            shape,
            dtype: inputs.var_dtype,
        }),
        weight: weight.as_deref().map(Arg::f32),
        pos_weight: pos_weight.as_deref().map(Arg::f32),
        scalar_upstream,
        per_item_upstream: per_item.as_deref().map(Arg::f32),
    })?;
    let names = loss.kind.grad_names();
    let ups = &*inputs.upstream.values();
    let signed_target = match inputs.target {
        Floats::F32(t) if loss.kind.signed_target() => Some(t),
        _ => None,
    };
    let checked = match loss.kind {
        k if k.signed_target() => signed_target.map(|t| ("target", t)),
        Pointwise::MarginRanking { .. } => inputs.labels.map(|y| ("y", y)),
        _ => None,
    };
    if let Some((input, v)) = checked {
        if let Some(row) = first_non_sign(v) {
            return Err(Error::Value {
                input,
                row,
                value: v[row].to_string(),
                reason: "labels must be -1 or +1".into(),
            });
        }
    }
    if loss.kind == Pointwise::Bce {
        if let Some(row) = first_outside_unit(inputs.input) {
            return Err(Error::Value {
                input: "input",
                row,
                value: inputs.input.get(row).to_string(),
                reason: "probabilities must be in [0, 1]".into(),
            });
        }
    }
    if let Some(v) = inputs.var {
        if let Some(row) = v.iter().position(|&v| v < 0.0) {
            return Err(Error::Value {
                input: "var",
                row,
                value: v[row].to_string(),
                reason: "variances must be >= 0".into(),
            });
        }
    }
    let (need_a, need_b) = (loss.gradient, loss.gradient && names.len() == 2);
    let second_len = inputs.var.map_or(len, <[f32]>::len);
    for (name, g, needed, want) in [
        ("grad_out", &grad, need_a, len),
        ("grad_out_x2", &grad_x2, need_b, second_len),
    ] {
        if needed && g.len() != want {
            return Err(Error::shape(name, format!("[{want}]"), &[g.len()]));
        }
    }
    // Gaussian NLL reads its variance per element as the label; one per item is spread
    // over its elements, and its gradient terms summed per item after the sweep.
    let per_item_var = inputs.var.filter(|v| v.len() != len);
    let spread: Option<Vec<f32>> = per_item_var.map(|v| (0..len).map(|i| v[i / inner]).collect());
    let inputs = &Inputs {
        labels: spread.as_deref().or(inputs.var).or(inputs.labels),
        ..*inputs
    };
    let mut var_terms = vec![0.0f32; if need_b && spread.is_some() { len } else { 0 }];
    let mut grad_x2 = grad_x2;
    let (grad_x2, var_grad) = match var_terms.is_empty() {
        true => (grad_x2, None),
        false => (FloatsMut::of(&mut var_terms[..]), Some(&mut grad_x2)),
    };
    let ga = if need_a {
        grad
    } else {
        FloatsMut::F32(&mut [])
    };
    let gb = if need_b {
        grad_x2
    } else {
        FloatsMut::F32(&mut [])
    };
    let denom = match loss.reduction {
        Reduction::Mean => len as f64,
        Reduction::BatchMean => inputs.shape.first().copied().unwrap_or(1) as f64,
        _ => 1.0,
    };
    let base_scale = (match ups.len() {
        1 => ups[0] as f64,
        _ => 1.0,
    } / denom) as f32;
    let per_element = loss.reduction == Reduction::None;
    // One instance of the loop per loss, so that each compiles (and vectorizes) on its own.
    macro_rules! run {
        ($term:expr) => {
            sweep(
                inputs,
                (ga, gb),
                base_scale,
                per_element,
                #[inline(always)]
                $term,
            )
        };
    }
    let class = |i: usize| i % inner;
    let (out, partials) = match loss.kind {
        Pointwise::Mse => run!(|_, x, y, _| mse(x, y)),
        Pointwise::L1 | Pointwise::SmoothL1 { beta: 0.0 } => run!(|_, x, y, _| l1(x, y)),
        Pointwise::Huber { delta } => run!(move |_, x, y, _| huber(x, y, delta)),
        Pointwise::SmoothL1 { beta } => run!(move |_, x, y, _| smooth_l1(x, y, beta)),
        Pointwise::KlDiv { log_target: false } => run!(|_, x, y, _| kl_div(x, y)),
        Pointwise::KlDiv { log_target: true } => run!(|_, x, y, _| kl_div_log_target(x, y)),
        Pointwise::Hinge => run!(|_, x, y, _| hinge(x, y)),
        Pointwise::Quantile { q } => run!(move |_, x, y, _| quantile(x, y, q)),
        Pointwise::Power { p } => run!(move |_, x, y, _| power(x, y, p)),
        Pointwise::SoftMargin => run!(|_, x, y, _| soft_margin(x, y)),
        Pointwise::HingeEmbedding { margin } => {
            run!(move |_, x, y, _| hinge_embedding(x, y, margin))
        }
        Pointwise::PoissonNll {
            log_input: true,
            full,
            ..
        } => run!(move |_, x, y, _| poisson_nll_log(x, y, full)),
        Pointwise::PoissonNll { full, eps, .. } => {
            run!(move |_, x, y, _| poisson_nll(x, y, eps, full))
        }
        Pointwise::MarginRanking { margin } => {
            run!(move |_, x, y, label| margin_ranking(x, y, label, margin))
        }
        Pointwise::GaussianNll { full, eps } => {
            run!(move |_, x, y, var| gaussian_nll(x, y, var, eps, full))
        }
        Pointwise::BceWithLogits if inputs.weight.is_none() && inputs.pos_weight.is_none() => {
            run!(|_, x, y, _| bce_with_logits(x, y, 1.0, 1.0))
        }
        Pointwise::Bce => run!(|i, x, y, _| {
            let w = inputs
                .weight
                .map_or(1.0, |w| if w.len() == len { w[i] } else { w[class(i)] });
            bce(x, y, w)
        }),
        Pointwise::BceWithLogits => run!(|i, x, y, _| {
            let w = inputs
                .weight
                .map_or(1.0, |w| if w.len() == len { w[i] } else { w[class(i)] });
            let pw = inputs.pos_weight.map_or(1.0, |p| p[class(i)]);
            bce_with_logits(x, y, w, pw)
        }),
        // One loop per common γ, whose power is then multiplications; a fractional γ takes
        // exp(γ·ln m), which vectorizes where powf does not.
        Pointwise::SigmoidFocal { alpha, gamma } => match gamma {
            0.0 => run!(move |_, x, y, _| sigmoid_focal(x, y, alpha, |m| focal_power(0.0, m))),
            1.0 => run!(move |_, x, y, _| sigmoid_focal(x, y, alpha, |m| focal_power(1.0, m))),
            2.0 => run!(move |_, x, y, _| sigmoid_focal(x, y, alpha, |m| focal_power(2.0, m))),
            _ if gamma.fract() != 0.0 => run!(move |_, x, y, _| {
                sigmoid_focal(x, y, alpha, |m| focal_power_fractional(gamma, m))
            }),
            _ => run!(move |_, x, y, _| sigmoid_focal(x, y, alpha, |m| focal_power(gamma, m))),
        },
    };
    if let Some(g) = var_grad {
        // Each item's terms added in order, as the GPU's `row_sums`.
        let sums: Vec<f32> = var_terms.chunks(inner).map(|c| c.iter().sum()).collect();
        g.write(0..sums.len(), &mut vec![0.0; sums.len()], |k| sums[k]);
    }
    Ok(if per_element {
        out
    } else {
        vec![(partials.iter().sum::<f64>() / denom) as f32]
    })
}

/// Per-element outputs and per-chunk partial sums of `term` over all elements, chunks in
/// parallel, writing its gradients into `ga` and `gb` where they are not empty. `term` takes the element's index, input, target and label
/// (margin ranking's y; 0 for the other losses).
fn sweep(
    inputs: &Inputs<'_>,
    (ga, gb): (FloatsMut<'_>, FloatsMut<'_>),
    base_scale: f32,
    per_element: bool,
    term: impl Fn(usize, f32, f32, f32) -> Term + Sync,
) -> (Vec<f32>, Vec<f64>) {
    let len = inputs.input.len();
    let mut out = vec![0.0f32; if per_element { len } else { 0 }];
    let tasks = len.div_ceil(CHUNK_ELEMENTS);
    let slices: Vec<_> = chunks(&mut out, tasks)
        .into_iter()
        .zip(ga.pieces(CHUNK_ELEMENTS, tasks))
        .zip(gb.pieces(CHUNK_ELEMENTS, tasks))
        .enumerate()
        .collect();
    let partials = slices
        .into_par_iter()
        .map(|(t, ((out, ga), gb))| {
            let start = t * CHUNK_ELEMENTS;
            let span = start..(start + CHUNK_ELEMENTS).min(len);
            let chunk = Chunk {
                inputs,
                span,
                base_scale,
                out,
                ga,
                gb,
            };
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { chunk_avx2(chunk, &term) };
            }
            chunk_portable(chunk, &term)
        })
        .collect();
    (out, partials)
}

/// One task of [`sweep`]: the elements `span`, with its slices of the outputs.
struct Chunk<'a, 'b> {
    inputs: &'a Inputs<'b>,
    span: std::ops::Range<usize>,
    base_scale: f32,
    out: &'a mut [f32],
    ga: FloatsMut<'b>,
    gb: FloatsMut<'b>,
}

/// [`chunk_portable`] compiled for AVX2 (the same operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_avx2(c: Chunk<'_, '_>, term: &impl Fn(usize, f32, f32, f32) -> Term) -> f64 {
    chunk_portable(c, term)
}

/// The partial sum of one chunk, writing its outputs and gradients.
#[inline(always)]
fn chunk_portable(c: Chunk<'_, '_>, term: &impl Fn(usize, f32, f32, f32) -> Term) -> f64 {
    let Chunk {
        inputs,
        span,
        base_scale,
        out,
        mut ga,
        mut gb,
    } = c;
    let ups = &*inputs.upstream.values();
    let mut sum = 0.0f64;
    // Terms are formed a block at a time into arrays, and the block's losses summed in f32
    // lanes, so the loops over terms vectorize; a running f64 sum would serialize them.
    let (mut l, mut da, mut db) = ([0.0f32; BLOCK], [0.0f32; BLOCK], [0.0f32; BLOCK]);
    let (mut xb, mut yb, mut gbuf) = ([0.0f32; BLOCK], [0.0f32; BLOCK], [0.0f32; BLOCK]);
    for b in span.clone().step_by(BLOCK) {
        let m = BLOCK.min(span.end - b);
        let x = inputs.input.block(b..b + m, &mut xb);
        let y = inputs.target.block(b..b + m, &mut yb);
        let z = inputs.labels.map_or(&[0.0; BLOCK][..m], |z| &z[b..b + m]);
        for k in 0..m {
            (l[k], da[k], db[k]) = term(b + k, x[k], y[k], z[k]);
        }
        l[m..].fill(0.0);
        sum += lane_sum(&l);
        let j = b - span.start;
        for (g, d) in [(&mut ga, &da), (&mut gb, &db)] {
            if g.is_empty() {
                continue;
            }
            if ups.len() > 1 {
                let u = &ups[b..b + m];
                g.write(j..j + m, &mut gbuf, |k| d[k] * (base_scale * u[k]));
            } else {
                g.write(j..j + m, &mut gbuf, |k| d[k] * base_scale);
            }
        }
        if !out.is_empty() {
            out[j..j + m].copy_from_slice(&l[..m]);
        }
    }
    sum
}

/// Elements per block of [`sweep`].
const BLOCK: usize = 64;

/// Σ v over eight f32 lanes, then in f64.
fn lane_sum(v: &[f32; BLOCK]) -> f64 {
    let mut lanes = [0.0f32; 8];
    for c in v.chunks_exact(8) {
        for k in 0..8 {
            lanes[k] += c[k];
        }
    }
    lanes.iter().map(|&v| v as f64).sum()
}

/// `v` cut into `tasks` chunks of CHUNK_ELEMENTS (empty slices when `v` is empty).
fn chunks(v: &mut [f32], tasks: usize) -> Vec<&mut [f32]> {
    if v.is_empty() {
        return (0..tasks).map(|_| &mut [][..]).collect();
    }
    v.chunks_mut(CHUNK_ELEMENTS).collect()
}
