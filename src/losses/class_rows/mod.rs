//! Losses over rows of class scores `[N, C]` that take each row whole, with a team of
//! invocations per row (`class_rows.wgsl`): PyTorch's `MultiMarginLoss` (class targets),
//! `MultiLabelSoftMarginLoss` (a 0/1 target per class), `MultiLabelMarginLoss` (a list of
//! classes per row), Hinton's distillation KL (teacher logits per class), Liger-Kernel's
//! generalized JSD (teacher log-probabilities per class) and the ordinal CORAL and CORN losses
//! of coral-pytorch (a label per row). Its CPU twin (`cpu.rs`), the f64
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
    /// Liger-Kernel's generalized Jensen–Shannon divergence between student
    /// log-probabilities `X` (the differentiable input) and teacher log-probabilities `Y`
    /// (`[N, C]`, f32, the target), P = e^Y, Q = e^X, M = β·P + (1 − β)·Q:
    /// `Σ_c β·P·Y + (1 − β)·Q·X − M·log M` per row; β = 0 is KL(P‖Q), β = 1 is KL(Q‖P).
    /// Optional labels `[N]` drop the rows equal to `ignore_index`; mean is over kept rows.
    Jsd {
        /// β in [0, 1] (default 0.5).
        beta: f32,
        /// Rows whose label is this are dropped (default -100).
        ignore_index: i32,
    },
    /// coral-pytorch's CORAL loss: logits `[N, K − 1]` of the cumulative tasks `[label > k]`,
    /// labels `[N]` in `0..K`, optional importance weights `[K − 1]`:
    /// `Σ_k imp_k·BCE-with-logits(x_k, [label > k])` per row; mean over rows.
    Coral,
    /// coral-pytorch's CORN loss: task k (logit k of `[N, K − 1]`) is trained on the rows with
    /// label ≥ k against `[label > k]`; the loss sums their BCE-with-logits terms, and mean
    /// divides by the number of (task, row) terms, as coral-pytorch's `corn_loss`.
    Corn,
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
            ClassRowsKind::Coral | ClassRowsKind::Corn => "logits",
            _ => "input",
        }
    }

    /// The target's name.
    pub fn target_name(self) -> &'static str {
        match self {
            ClassRowsKind::DistillKl { .. } => "teacher",
            ClassRowsKind::Coral | ClassRowsKind::Corn => "labels",
            _ => "target",
        }
    }

    /// The per-class weight's name (CORAL's is its importance weights).
    pub fn weight_name(self) -> &'static str {
        match self {
            ClassRowsKind::Coral => "importance",
            _ => "weight",
        }
    }

    /// Whether the loss takes a per-class weight.
    pub fn weighted(self) -> bool {
        matches!(
            self,
            ClassRowsKind::MultiMargin { .. }
                | ClassRowsKind::MultilabelSoftMargin
                | ClassRowsKind::Coral
        )
    }

    /// Whether the targets are ordinal labels `[N]` in `0..=C` (K = C + 1 ranks).
    pub fn ordinal(self) -> bool {
        matches!(self, ClassRowsKind::Coral | ClassRowsKind::Corn)
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
    /// Whether the targets are class indices or ordinal labels `[N]` (else a value per class
    /// `[N, C]`).
    pub fn class_targets(&self) -> bool {
        matches!(self.kind, ClassRowsKind::MultiMargin { .. }) || self.kind.ordinal()
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
        if let ClassRowsKind::Jsd { beta, .. } = self.kind {
            crate::core::check_option(
                "beta",
                beta,
                (0.0..=1.0).contains(&beta),
                "must be in [0, 1]",
            )?;
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
    /// JSD's row labels.
    pub labels: Option<Arg<'a>>,
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
        let weight = self.kind.weight_name();
        if let Some(w) = args.weight {
            if !self.kind.weighted() {
                return Err(crate::core::unused(weight));
            }
            w.expect(weight, &[c], DType::F32)?;
        }
        if let Some(l) = args.labels {
            if !matches!(self.kind, ClassRowsKind::Jsd { .. }) {
                return Err(crate::core::unused("labels"));
            }
            l.expect("labels", &[n], DType::I32)?;
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

/// An ordinal label of row `row` for `c` cumulative logits (K = c + 1 ranks): `Err` naming the
/// row when outside `[0, c]`.
pub(crate) fn ordinal_label(y: i64, row: usize, c: usize) -> Result<usize> {
    if y < 0 || y > c as i64 {
        return Err(Error::Value {
            input: "labels",
            row,
            value: y.to_string(),
            reason: format!("label outside [0, {c}]"),
        });
    }
    Ok(y as usize)
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
