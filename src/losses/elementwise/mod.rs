//! The elementwise losses: regression (mse, l1, huber, smooth-l1), distribution (kl-div),
//! margin (hinge, margin-ranking) and logistic (bce-with-logits, sigmoid-focal). One kernel
//! (`elementwise.wgsl`, one function per loss) serves them all: a per-element term with its
//! derivative, the gradient written in the same pass, one deterministic sum of the loss.
//! The CPU twin is `cpu.rs`, the f64 reference `reference.rs`, the command line's `cli.rs`.

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{check_shape, check_upstream, finite, unused, Arg, DType, Reduction};
use crate::error::{Error, Result};

/// Which elementwise loss, with its parameters (each field documents the PyTorch /
/// torchvision default that the command line uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointwise {
    /// `(x − y)²`.
    Mse,
    /// `|x − y|`; gradient `sign(x − y)` with sign(0) = 0.
    L1,
    /// `½d²` if `|d| < delta`, else `delta·(|d| − ½delta)`; delta > 0.
    Huber {
        /// Threshold (default 1).
        delta: f32,
    },
    /// `½d²/beta` if `|d| < beta`, else `|d| − ½beta`; beta = 0 is L1.
    SmoothL1 {
        /// Threshold (default 1).
        beta: f32,
    },
    /// `F.kl_div`: input is log-probabilities; `y·(log y − x)` (0 where y ≤ 0), or
    /// `e^y·(y − x)` with `log_target`.
    KlDiv {
        /// The target is given as log-probabilities (default false).
        log_target: bool,
    },
    /// Binary hinge `max(0, 1 − y·x)`, y ∈ {−1, +1}.
    Hinge,
    /// `max(0, −y·(x1 − x2) + margin)`, y ∈ {−1, +1}.
    MarginRanking {
        /// Margin (default 0).
        margin: f32,
    },
    /// Binary cross-entropy on logits, with optional `weight` and `pos_weight` inputs.
    BceWithLogits,
    /// `F.binary_cross_entropy` on probabilities p ∈ [0, 1] (others are an error naming the
    /// element), optional `weight`: `−w·[y·max(log p, −100) + (1 − y)·max(log(1 − p), −100)]`,
    /// gradient `w·(p − y)/max(p·(1 − p), 1e−12)` as PyTorch's backward.
    Bce,
    /// Pinball (quantile) loss `max(q·d, (q − 1)·d)` with `d = target − input`; gradient
    /// `−q` where d > 0, `1 − q` where d < 0, 0 at d = 0.
    Quantile {
        /// The quantile, in (0, 1) (default 0.5: half the L1 loss).
        q: f32,
    },
    /// `|input − target|^p`, p ≥ 1; gradient `p·|d|^(p−1)·sign(d)`, 0 at d = 0.
    Power {
        /// The exponent, finite and ≥ 1 (default 1.5).
        p: f32,
    },
    /// `F.soft_margin_loss`: `log(1 + exp(−y·x))`, y ∈ {−1, +1}; gradient `−y·σ(−y·x)`.
    SoftMargin,
    /// `F.hinge_embedding_loss`: `x` where y = 1, `max(0, margin − x)` where y = −1; no
    /// gradient at `margin − x = 0`, as PyTorch's in-place `clamp_min_`.
    HingeEmbedding {
        /// Margin (default 1).
        margin: f32,
    },
    /// `F.poisson_nll_loss`: `e^x − y·x` with `log_input`, else `x − y·log(x + eps)`; `full`
    /// adds Stirling's `y·log y − y + ½·log(2πy)` where y > 1 (no gradient).
    PoissonNll {
        /// The input is the log of the rate (default true).
        log_input: bool,
        /// Add Stirling's approximation term (default false).
        full: bool,
        /// Added to the rate before its log without `log_input` (default 1e-8).
        eps: f32,
    },
    /// `F.gaussian_nll_loss`: `½·(log v + (x − y)²/v)` (+ `½·log 2π` with `full`), with the
    /// variance `v = max(var, eps)` from a second differentiable input `var` in the
    /// input's shape, or one per item (the input's shape without its last dimension, or with
    /// it 1), of any float type. The gradient passes through the clamp, as PyTorch's
    /// (clamped under no_grad).
    GaussianNll {
        /// Add the constant `½·log 2π` (default false).
        full: bool,
        /// The variance's lower clamp, finite and ≥ 0 (default 1e-6).
        eps: f32,
    },
    /// torchvision's `sigmoid_focal_loss`: `ce·(1 − p_t)^gamma`, times `α_t` when alpha ≥ 0.
    SigmoidFocal {
        /// Balance of positives; negative disables it (default 0.25).
        alpha: f32,
        /// Focusing exponent ≥ 0 (default 2).
        gamma: f32,
    },
}

impl Pointwise {
    /// The kernel's term for this loss (its `LOSS` override).
    pub(crate) fn term(self) -> Term {
        match self {
            Pointwise::Mse => Term::Mse,
            Pointwise::L1 | Pointwise::SmoothL1 { beta: 0.0 } => Term::L1,
            Pointwise::Huber { .. } => Term::Huber,
            Pointwise::SmoothL1 { .. } => Term::SmoothL1,
            Pointwise::KlDiv { log_target: false } => Term::KlDiv,
            Pointwise::KlDiv { log_target: true } => Term::KlDivLogTarget,
            Pointwise::Hinge => Term::Hinge,
            Pointwise::MarginRanking { .. } => Term::MarginRanking,
            Pointwise::BceWithLogits => Term::BceWithLogits,
            Pointwise::Bce => Term::Bce,
            Pointwise::SigmoidFocal { .. } => Term::SigmoidFocal,
            Pointwise::Quantile { .. } => Term::Quantile,
            Pointwise::Power { .. } => Term::Power,
            Pointwise::SoftMargin => Term::SoftMargin,
            Pointwise::HingeEmbedding { .. } => Term::HingeEmbedding,
            Pointwise::PoissonNll {
                log_input: true, ..
            } => Term::PoissonNllLog,
            Pointwise::PoissonNll { .. } => Term::PoissonNll,
            Pointwise::GaussianNll { .. } => Term::GaussianNll,
        }
    }

    /// The input whose values the kernel checks, and the rule they break: ±1 labels, or
    /// BCE's probabilities.
    pub(crate) fn checked_input(self) -> Option<(&'static str, &'static str)> {
        match self {
            k if k.signed_target() => Some(("target", "labels must be -1 or +1")),
            Pointwise::MarginRanking { .. } => Some(("y", "labels must be -1 or +1")),
            Pointwise::Bce => Some(("input", "probabilities must be in [0, 1]")),
            Pointwise::GaussianNll { .. } => Some(("var", "variances must be >= 0")),
            _ => None,
        }
    }

    /// Whether the target is a ±1 label (checked, naming the first other value).
    pub(crate) fn signed_target(self) -> bool {
        matches!(
            self,
            Pointwise::Hinge | Pointwise::SoftMargin | Pointwise::HingeEmbedding { .. }
        )
    }

    /// The two kernel parameters.
    pub(crate) fn params(self) -> (f32, f32) {
        match self {
            Pointwise::Huber { delta } => (delta, 0.0),
            Pointwise::SmoothL1 { beta } => (beta, 0.0),
            Pointwise::MarginRanking { margin } => (margin, 0.0),
            Pointwise::SigmoidFocal { alpha, gamma } => (alpha, gamma),
            Pointwise::Quantile { q } => (q, 0.0),
            Pointwise::Power { p } => (p, 0.0),
            Pointwise::HingeEmbedding { margin } => (margin, 0.0),
            Pointwise::PoissonNll { full, eps, .. } | Pointwise::GaussianNll { full, eps } => {
                (eps, full as u32 as f32)
            }
            _ => (0.0, 0.0),
        }
    }

    /// Names of the differentiable inputs, as gradients are reported.
    pub fn grad_names(self) -> &'static [&'static str] {
        match self {
            Pointwise::MarginRanking { .. } => &["x1", "x2"],
            Pointwise::GaussianNll { .. } => &["input", "var"],
            Pointwise::BceWithLogits | Pointwise::SigmoidFocal { .. } => &["logits"],
            _ => &["input"],
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Option`] for a non-finite parameter, delta ≤ 0, beta < 0 or gamma < 0.
    pub fn validate(self) -> Result<()> {
        let bad = |option, value: f32, reason| {
            Err(Error::Option {
                option,
                value: value.to_string(),
                reason,
            })
        };
        match self {
            Pointwise::Huber { delta } if !(delta.is_finite() && delta > 0.0) => {
                bad("delta", delta, "must be finite and > 0")
            }
            Pointwise::SmoothL1 { beta } if !(beta.is_finite() && beta >= 0.0) => {
                bad("beta", beta, "must be finite and >= 0")
            }
            Pointwise::MarginRanking { margin } | Pointwise::HingeEmbedding { margin } => {
                finite("margin", margin)
            }
            Pointwise::PoissonNll { eps, .. } | Pointwise::GaussianNll { eps, .. }
                if !(eps.is_finite() && eps >= 0.0) =>
            {
                bad("eps", eps, "must be finite and >= 0")
            }
            Pointwise::Quantile { q } if !(q > 0.0 && q < 1.0) => bad("q", q, "must be in (0, 1)"),
            Pointwise::Power { p } if !(p.is_finite() && p >= 1.0) => {
                bad("p", p, "must be finite and >= 1")
            }
            Pointwise::SigmoidFocal { alpha, gamma } => {
                finite("alpha", alpha)?;
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return bad("gamma", gamma, "must be finite and >= 0");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The per-element terms of `elementwise.wgsl`. The discriminants are the shader's ids: the
/// WGSL constants (`const MSE: u32 = 0u;` …) are generated from this list, so the two cannot
/// drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Term {
    Mse = 0,
    L1,
    Huber,
    SmoothL1,
    KlDiv,
    KlDivLogTarget,
    Hinge,
    MarginRanking,
    BceWithLogits,
    SigmoidFocal,
    Quantile,
    Power,
    SoftMargin,
    HingeEmbedding,
    PoissonNllLog,
    PoissonNll,
    Bce,
    GaussianNll,
}

impl Term {
    pub(crate) const ALL: &[Term] = &[
        Term::Mse,
        Term::L1,
        Term::Huber,
        Term::SmoothL1,
        Term::KlDiv,
        Term::KlDivLogTarget,
        Term::Hinge,
        Term::MarginRanking,
        Term::BceWithLogits,
        Term::SigmoidFocal,
        Term::Quantile,
        Term::Power,
        Term::SoftMargin,
        Term::HingeEmbedding,
        Term::PoissonNllLog,
        Term::PoissonNll,
        Term::Bce,
        Term::GaussianNll,
    ];

    /// The WGSL constant's name: the variant in SCREAMING_SNAKE_CASE.
    pub(crate) fn wgsl_name(self) -> String {
        let mut name = String::new();
        for (i, ch) in format!("{self:?}").chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(ch.to_ascii_uppercase());
        }
        name
    }
}

/// The inputs of one elementwise call as [`ElementwiseLoss::check`] sees them, on any backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args<'a> {
    /// `input`, `logits` or `x1`.
    pub input: Arg<'a>,
    /// `target`, or `x2`.
    pub target: Arg<'a>,
    /// Margin ranking's `y`.
    pub labels: Option<Arg<'a>>,
    /// Gaussian NLL's variance.
    pub var: Option<Arg<'a>>,
    pub weight: Option<Arg<'a>>,
    pub pos_weight: Option<Arg<'a>>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

/// An elementwise loss with its reduction.
///
/// ```
/// use wgpu_losses::{ElementwiseLoss, Pointwise, Reduction};
/// let huber = ElementwiseLoss::new(Pointwise::Huber { delta: 0.5 }).reduction(Reduction::Sum);
/// assert_eq!(huber.reduction, Reduction::Sum);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElementwiseLoss {
    /// The loss and its parameters.
    pub kind: Pointwise,
    /// Combination of the per-element losses (default mean over all elements;
    /// `BatchMean`, kl-div only, divides the sum by the first dimension).
    pub reduction: Reduction,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradients: `None` (default) writes each in its input's type
    /// (f32, f16 or bf16); `Some(DType::F32)` writes f32 gradients of 16-bit inputs.
    pub grad_dtype: Option<DType>,
}

impl ElementwiseLoss {
    /// The loss with mean reduction and a gradient.
    pub fn new(kind: Pointwise) -> Self {
        Self {
            kind,
            reduction: Reduction::Mean,
            gradient: true,
            grad_dtype: None,
        }
    }

    /// Sets the gradients' element type (`None`: each input's type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }

    /// The gradient's element type for an input of type `input`.
    pub(crate) fn grad_dtype_for(&self, input: DType) -> DType {
        self.grad_dtype.unwrap_or(input)
    }

    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }

    /// Whether to compute the gradient.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// As [`Pointwise::validate`]; `BatchMean` for a loss other than kl-div.
    pub fn validate(&self) -> Result<()> {
        self.kind.validate()?;
        if let Some(d) = self.grad_dtype.filter(|d| !d.is_float()) {
            return Err(Error::Option {
                option: "grad_dtype",
                value: d.name().into(),
                reason: "must be f32, f16 or bf16",
            });
        }
        if self.reduction == Reduction::BatchMean && !matches!(self.kind, Pointwise::KlDiv { .. }) {
            return Err(Error::Option {
                option: "reduction",
                value: "batchmean".into(),
                reason: "batchmean is for kl-div only",
            });
        }
        Ok(())
    }

    /// Checks the options and the inputs' shapes and types: the one place these rules are
    /// written, for every backend and the command line.
    ///
    /// # Errors
    /// As [`ElementwiseLoss::validate`]; [`Error::Empty`] for no elements or margin ranking
    /// without `y`; [`Error::Shape`] for a shape that does not fit or an input this loss does
    /// not take; [`Error::DType`]; the upstream gradient's errors.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<()> {
        self.validate()?;
        let names = self.kind.grad_names();
        let shape = args.input.shape;
        args.input.expect_float(names[0])?;
        if args.input.len() == 0 {
            return Err(Error::Empty(names[0]));
        }
        // Margin ranking's x2 is differentiable (any float type); targets are f32.
        let ranking = matches!(self.kind, Pointwise::MarginRanking { .. });
        if ranking {
            args.target.expect_float(names[1])?;
            check_shape(names[1], args.target.shape, shape)?;
        } else {
            args.target.expect("target", shape, DType::F32)?;
        }
        match (ranking, args.labels) {
            (true, Some(y)) => y.expect("y", shape, DType::F32)?,
            (true, None) => return Err(Error::Empty("y")),
            (false, Some(_)) => return Err(unused("y")),
            (false, None) => {}
        }
        let inner = shape.last().copied().unwrap_or(1);
        let gaussian = matches!(self.kind, Pointwise::GaussianNll { .. });
        match (gaussian, args.var) {
            (true, Some(v)) => {
                v.expect_float("var")?;
                var_per_item(shape, v.shape)?;
            }
            (true, None) => return Err(Error::Empty("var")),
            (false, Some(_)) => return Err(unused("var")),
            (false, None) => {}
        }
        let bce = self.kind == Pointwise::BceWithLogits;
        if let Some(w) = args.weight {
            if !bce && self.kind != Pointwise::Bce {
                return Err(unused("weight"));
            }
            w.expect_dtype("weight", DType::F32)?;
            if w.shape != shape && w.shape != [inner] {
                return Err(Error::shape(
                    "weight",
                    format!("{shape:?} or [{inner}]"),
                    w.shape,
                ));
            }
        }
        if let Some(pw) = args.pos_weight {
            if !bce {
                return Err(unused("pos_weight"));
            }
            pw.expect("pos_weight", &[inner], DType::F32)?;
        }
        check_upstream(
            args.scalar_upstream,
            args.per_item_upstream,
            shape,
            self.reduction,
        )
    }

    /// Whether gaussian NLL's `var` holds one value per item (else one per element).
    pub(crate) fn var_per_item(&self, shape: &[usize], var: Option<&[usize]>) -> bool {
        var.is_some_and(|v| var_per_item(shape, v).unwrap_or(false))
    }

    /// The mean's denominator for an input of `shape`.
    pub(crate) fn denominator(&self, shape: &[usize]) -> f64 {
        match self.reduction {
            Reduction::Mean => shape.iter().product::<usize>() as f64,
            Reduction::BatchMean => shape.first().copied().unwrap_or(1) as f64,
            _ => 1.0,
        }
    }
}

/// Gaussian NLL's variance shapes, as PyTorch's `GaussianNLLLoss` takes them: the input's
/// (`false`), or one per item — the input's shape without its last dimension, or with it 1
/// (`true`). Any other shape is an error, even one a newer PyTorch broadcasts.
fn var_per_item(input: &[usize], var: &[usize]) -> Result<bool> {
    if var == input {
        return Ok(false);
    }
    let items = &input[..input.len().saturating_sub(1)];
    if !input.is_empty()
        && (var == items
            || (var.len() == input.len() && var[..items.len()] == *items && var.last() == Some(&1)))
    {
        return Ok(true);
    }
    Err(Error::shape(
        "var",
        format!("{input:?}, {items:?} or {:?}", [items, &[1]].concat()),
        var,
    ))
}
