//! Losses over rows of class scores `[N, C]` that take each row whole, with a team of
//! invocations per row (`class_rows.wgsl`): PyTorch's `MultiMarginLoss` (class targets),
//! `MultiLabelSoftMarginLoss` (a 0/1 target per class), `MultiLabelMarginLoss` (a list of
//! classes per row) and Hinton's distillation KL (teacher logits per class). Its CPU twin (`cpu.rs`), the f64
//! reference (`reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{
    check_grad_dtype, check_rows, check_upstream, finite, per_item_reduction, Arg, DType, Reduction,
};
use crate::error::{Error, Result};

/// Which loss, and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassRowsKind {
    /// `F.multi_margin_loss`: `Σ_{i≠y} w_y·max(0, margin − x_y + x_i)^p / C` per row, with class
    /// targets `[N]`; `p` is 1 or 2.
    MultiMargin {
        /// 1 or 2 (default 1).
        p: u32,
        /// Default 1.
        margin: f32,
    },
    /// `F.multilabel_soft_margin_loss`: `−(1/C)·Σ_c w_c·[y·log σ(x) + (1−y)·log σ(−x)]` per
    /// row, with a target per class `[N, C]` (0 or 1).
    MultilabelSoftMargin,
    /// `F.multilabel_margin_loss`: `Σ_{j ∈ targets} Σ_{i ∉ targets} max(0, 1 − x_j + x_i) / C`
    /// per row, with the row's classes as i32 `[N, C]` ended by the first −1 (a class listed
    /// twice counts twice, as in PyTorch). No class weight.
    MultilabelMargin,
    /// Hinton's distillation loss: `τ²·Σ_c softmax(t/τ)·(log_softmax(t/τ) − log_softmax(s/τ))`
    /// per row of student logits `s` (the differentiable input) against teacher logits `t`
    /// (`[N, C]`, f32, the target); mean over rows is PyTorch's `batchmean`. No class weight.
    DistillKl {
        /// τ > 0 (default 1).
        temperature: f32,
    },
}

impl ClassRowsKind {
    /// The differentiable input's name, as its gradient is reported.
    pub fn input_name(self) -> &'static str {
        match self {
            ClassRowsKind::DistillKl { .. } => "student",
            _ => "input",
        }
    }

    /// The target's name.
    pub fn target_name(self) -> &'static str {
        match self {
            ClassRowsKind::DistillKl { .. } => "teacher",
            _ => "target",
        }
    }
}

/// A loss over whole rows of class scores, with PyTorch's defaults.
///
/// ```
/// use wgpu_losses::{ClassRows, ClassRowsKind};
/// let m = ClassRows::new(ClassRowsKind::MultiMargin { p: 2, margin: 0.5 });
/// assert_eq!(m.reduction, wgpu_losses::Reduction::Mean);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassRows {
    /// The loss.
    pub kind: ClassRowsKind,
    /// Combination of the row losses (default mean over the rows).
    pub reduction: Reduction,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradient (default `None`: the input's type).
    pub grad_dtype: Option<DType>,
}

impl ClassRows {
    /// `kind` with mean reduction and a gradient.
    pub fn new(kind: ClassRowsKind) -> Self {
        Self {
            kind,
            reduction: Reduction::Mean,
            gradient: true,
            grad_dtype: None,
        }
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
    /// Sets the gradient's element type (`None`: the input's type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// Whether the targets are class indices `[N]` (else a value per class `[N, C]`).
    pub fn class_targets(&self) -> bool {
        matches!(self.kind, ClassRowsKind::MultiMargin { .. })
    }
    /// Whether the targets are lists of classes, i32 `[N, C]` padded with −1.
    pub fn class_lists(&self) -> bool {
        self.kind == ClassRowsKind::MultilabelMargin
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for p outside {1, 2}, a non-finite margin, `BatchMean` or a gradient
    /// type that is not a float.
    pub fn validate(&self) -> Result<()> {
        if let ClassRowsKind::MultiMargin { p, margin } = self.kind {
            if p != 1 && p != 2 {
                return Err(Error::Option {
                    option: "p",
                    value: p.to_string(),
                    reason: "must be 1 or 2",
                });
            }
            finite("margin", margin)?;
        }
        if let ClassRowsKind::DistillKl { temperature } = self.kind {
            crate::core::check_option(
                "temperature",
                temperature,
                temperature.is_finite() && temperature > 0.0,
                "must be finite and > 0",
            )?;
        }
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}

/// The inputs of one call as [`check`] sees them, on any backend.
pub(crate) struct Args<'a> {
    pub input: Arg<'a>,
    pub target: Arg<'a>,
    pub weight: Option<Arg<'a>>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

impl ClassRows {
    /// The family's input rules: `input` `[N, C]` floats (N, C ≥ 1); `target` i32 `[N]`
    /// (multi-margin), i32 `[N, C]` (multilabel margin) or f32 `[N, C]` (the others); `weight` f32 `[C]`; the upstream gradient
    /// a scalar or (reduction none) `[N]`. Gives (N, C).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Empty`], [`Error::DType`] naming the input; the upstream
    /// gradient's errors.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<(usize, usize)> {
        let (n, c) = check_rows(&[(self.kind.input_name(), args.input)])?;
        let target = self.kind.target_name();
        match (self.class_targets(), self.class_lists()) {
            (true, _) => args.target.expect(target, &[n], DType::I32)?,
            (_, true) => args.target.expect(target, &[n, c], DType::I32)?,
            _ => args.target.expect(target, &[n, c], DType::F32)?,
        }
        if let Some(w) = args.weight {
            if matches!(
                self.kind,
                ClassRowsKind::DistillKl { .. } | ClassRowsKind::MultilabelMargin
            ) {
                return Err(crate::core::unused("weight"));
            }
            w.expect("weight", &[c], DType::F32)?;
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

/// Multi-margin's class for row `row`: `Err` naming the row when outside `[0, c)`.
pub(crate) fn class_index(y: i64, row: usize, c: usize) -> Result<usize> {
    if y < 0 || y >= c as i64 {
        return Err(Error::Value {
            input: "target",
            row,
            value: y.to_string(),
            reason: format!("class index outside [0, {c})"),
        });
    }
    Ok(y as usize)
}

/// The first `−1` of a multilabel-margin row `list` ends it; every entry must lie in
/// `[−1, c)` (PyTorch checks the whole tensor). Gives the list's length, or `Err` naming the
/// row and the first bad value.
pub(crate) fn class_list_len(list: &[i64], row: usize, c: usize) -> Result<usize> {
    if let Some(&bad) = list.iter().find(|&&v| v < -1 || v >= c as i64) {
        return Err(Error::Value {
            input: "target",
            row,
            value: bad.to_string(),
            reason: format!("class outside [-1, {c})"),
        });
    }
    Ok(list.iter().position(|&v| v == -1).unwrap_or(list.len()))
}
