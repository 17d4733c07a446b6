//! Softmax cross-entropy and softmax focal loss: one row kernel (`cross_entropy.wgsl`, an
//! online log-sum-exp pass and a gradient pass), its CPU twin (`cpu.rs`), the f64 reference
//! (`reference.rs`) and the command-line adapter (`cli.rs`). Options and their checks live
//! here, once, for every backend.

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{check_upstream, Arg, DType, Reduction};
use crate::error::{Error, Result};

/// Softmax cross-entropy options. Defaults are PyTorch's `F.cross_entropy` defaults.
///
/// ```
/// use wgpu_losses::{CrossEntropy, Reduction};
/// let ce = CrossEntropy::new().label_smoothing(0.1).reduction(Reduction::Sum);
/// assert_eq!(ce.ignore_index, -100);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropy {
    /// Combination of the per-row losses (default mean, weighted by `w[y]`).
    pub reduction: Reduction,
    /// Class-index rows with this target contribute nothing (default -100).
    pub ignore_index: i32,
    /// ε in [0, 1]: the target is mixed with the uniform distribution (default 0).
    pub label_smoothing: f32,
    /// z-loss coefficient: adds `z * lse²` per row (default 0).
    pub z_loss: f32,
    /// Logit soft-capping `x ← c·tanh(x/c)` before the softmax (default off).
    pub softcap: Option<f32>,
    /// Write the gradient over the logits buffer instead of a new buffer (default false).
    pub in_place: bool,
    /// Compute the gradient (default true); false gives the loss alone.
    pub gradient: bool,
    /// Element type of the gradient: `None` (default) writes it in the logits' type (f32,
    /// f16 or bf16); `Some(DType::F32)` writes f32 gradients of 16-bit logits.
    pub grad_dtype: Option<DType>,
    /// Softmax focal loss's γ: set by [`crate::SoftmaxFocal`], which shares this row kernel.
    pub(crate) focal: Option<f32>,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            in_place: false,
            gradient: true,
            grad_dtype: None,
            focal: None,
        }
    }
}

impl CrossEntropy {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }

    /// Sets the ignored target value.
    pub fn ignore_index(mut self, i: i32) -> Self {
        self.ignore_index = i;
        self
    }

    /// Sets label smoothing ε.
    pub fn label_smoothing(mut self, eps: f32) -> Self {
        self.label_smoothing = eps;
        self
    }

    /// Sets the z-loss coefficient.
    pub fn z_loss(mut self, z: f32) -> Self {
        self.z_loss = z;
        self
    }

    /// Caps logits at `c·tanh(x/c)`; `None` turns capping off.
    pub fn softcap(mut self, c: Option<f32>) -> Self {
        self.softcap = c;
        self
    }

    /// Writes the gradient over the logits.
    pub fn in_place(mut self, yes: bool) -> Self {
        self.in_place = yes;
        self
    }

    /// Whether to compute the gradient at all.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }

    /// Sets the gradient's element type (`None`: the logits' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }

    /// The gradient's element type for logits of type `logits`.
    pub(crate) fn grad_dtype_for(&self, logits: DType) -> DType {
        self.grad_dtype.unwrap_or(logits)
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for ε outside [0, 1], a negative or non-finite z-loss, or a softcap
    /// that is not a positive finite number.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, value: f32, reason| {
            Err(Error::Option {
                option,
                value: value.to_string(),
                reason,
            })
        };
        if self.reduction == Reduction::BatchMean {
            return Err(Error::Option {
                option: "reduction",
                value: "batchmean".into(),
                reason: "batchmean is for kl-div; use mean",
            });
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", self.label_smoothing, "must be in [0, 1]");
        }
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return bad("z_loss", self.z_loss, "must be finite and >= 0");
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return bad("softcap", c, "must be finite and > 0");
            }
        }
        if let Some(gamma) = self.focal {
            if !(gamma.is_finite() && gamma >= 0.0) {
                return bad("gamma", gamma, "must be finite and >= 0");
            }
        }
        if let Some(d) = self.grad_dtype.filter(|d| !d.is_float()) {
            return Err(Error::Option {
                option: "grad_dtype",
                value: d.name().into(),
                reason: "must be f32, f16 or bf16",
            });
        }
        Ok(())
    }

    /// Checks the options and the inputs' shapes and types, and gives (N, C): the one place
    /// these rules are written, for every backend and the command line.
    ///
    /// # Errors
    /// As [`CrossEntropy::validate`]; [`Error::Shape`], [`Error::DType`] and [`Error::Empty`]
    /// naming the input; the upstream gradient's errors.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<(usize, usize)> {
        self.validate()?;
        args.logits.expect_float("logits")?;
        if self.in_place && self.grad_dtype_for(args.logits.dtype) != args.logits.dtype {
            return Err(Error::Option {
                option: "grad_dtype",
                value: self.grad_dtype_for(args.logits.dtype).name().into(),
                reason: "an in-place gradient has the logits' type",
            });
        }
        let &[n, c] = args.logits.shape else {
            return Err(Error::shape("logits", "[N, C]".into(), args.logits.shape));
        };
        if n == 0 {
            return Err(Error::Empty("logits"));
        }
        if c == 0 {
            return Err(Error::shape("logits", "[N, C] with C >= 1".into(), &[n, c]));
        }
        if args.probabilities {
            if self.focal.is_some() {
                return Err(Error::DType {
                    input: "target",
                    expected: "class indices (i32) for softmax-focal",
                    got: "probabilities",
                });
            }
            args.target.expect("target", &[n, c], DType::F32)?;
        } else {
            args.target.expect("target", &[n], DType::I32)?;
        }
        if let Some(w) = args.weight {
            let name = if self.focal.is_some() {
                "alpha"
            } else {
                "weight"
            };
            w.expect(name, &[c], DType::F32)?;
        }
        check_upstream(
            args.scalar_upstream,
            args.per_item_upstream,
            &[n],
            self.reduction,
        )?;
        Ok((n, c))
    }
}

/// The inputs of one row-kernel call as [`CrossEntropy::check`] sees them, on any backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args<'a> {
    pub logits: Arg<'a>,
    /// Class indices `[N]` (i32), or probabilities `[N, C]` (f32) when `probabilities`.
    pub target: Arg<'a>,
    pub probabilities: bool,
    /// Class weights (softmax focal's α).
    pub weight: Option<Arg<'a>>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

/// Multi-class focal loss `−α_y·(1 − p_y)^γ·log p_y` over class-index targets.
/// Per-class α is passed as the inputs' `weight` (default 1). With γ = 0 and no α it is
/// cross-entropy.
///
/// ```
/// use wgpu_losses::SoftmaxFocal;
/// let focal = SoftmaxFocal::new().gamma(1.5);
/// assert_eq!(focal.ignore_index, -100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftmaxFocal {
    /// Combination of the row losses (default mean over the non-ignored rows).
    pub reduction: Reduction,
    /// Focusing exponent γ ≥ 0 (default 2).
    pub gamma: f32,
    /// Rows with this target contribute nothing (default -100).
    pub ignore_index: i32,
    /// Write the gradient over the logits (default false).
    pub in_place: bool,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradient (default `None`: the logits' type).
    pub grad_dtype: Option<DType>,
}

impl Default for SoftmaxFocal {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            gamma: 2.0,
            ignore_index: -100,
            in_place: false,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl SoftmaxFocal {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }

    /// Sets γ.
    pub fn gamma(mut self, gamma: f32) -> Self {
        self.gamma = gamma;
        self
    }

    /// Sets the ignored target value.
    pub fn ignore_index(mut self, i: i32) -> Self {
        self.ignore_index = i;
        self
    }

    /// Writes the gradient over the logits.
    pub fn in_place(mut self, yes: bool) -> Self {
        self.in_place = yes;
        self
    }

    /// Whether to compute the gradient.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }

    /// Sets the gradient's element type (`None`: the logits' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for γ negative or non-finite, or `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        self.row_kernel().validate()
    }

    /// The row-kernel configuration that computes this loss.
    pub(crate) fn row_kernel(&self) -> CrossEntropy {
        CrossEntropy {
            reduction: self.reduction,
            ignore_index: self.ignore_index,
            in_place: self.in_place,
            gradient: self.gradient,
            grad_dtype: self.grad_dtype,
            focal: Some(self.gamma),
            ..CrossEntropy::default()
        }
    }
}

/// The class of row `row`'s target `y`: `None` when it is `ignore_index`.
///
/// # Errors
/// [`Error::Value`] for a class outside `[0, c)`.
pub(crate) fn target_class(
    y: i64,
    row: usize,
    c: usize,
    ignore_index: i32,
) -> Result<Option<usize>> {
    if y == ignore_index as i64 {
        return Ok(None);
    }
    if y < 0 || y >= c as i64 {
        return Err(Error::Value {
            input: "target",
            row,
            value: y.to_string(),
            reason: format!("class index outside [0, {c}) and not ignore_index {ignore_index}"),
        });
    }
    Ok(Some(y as usize))
}
