//! Softmax focal loss. It runs on the cross-entropy row kernel (`shaders/cross_entropy.wgsl`
//! with its FOCAL specialization): same online log-sum-exp, same launch; only the row's loss
//! and gradient coefficient differ. f64 twin: `reference::softmax_focal`.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::losses::cross_entropy::{CrossEntropy, CrossEntropyInputs, Target};
use crate::losses::{LossOutput, LossValues, Reduction};

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
}

impl Default for SoftmaxFocal {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            gamma: 2.0,
            ignore_index: -100,
            in_place: false,
            gradient: true,
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

    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for γ negative or non-finite, or `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::Option {
                option: "gamma",
                value: self.gamma.to_string(),
                reason: "must be finite and >= 0",
            });
        }
        self.row_kernel().validate()
    }

    /// The row-kernel configuration that computes this loss.
    pub(crate) fn row_kernel(&self) -> CrossEntropy {
        CrossEntropy {
            reduction: self.reduction,
            ignore_index: self.ignore_index,
            in_place: self.in_place,
            gradient: self.gradient,
            focal: Some(self.gamma),
            ..CrossEntropy::default()
        }
    }

    /// Records the loss (and gradient) into `encoder`; α is `inputs.weight`.
    ///
    /// # Errors
    /// As [`CrossEntropy::record`]; probability targets are an [`Error::DType`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &CrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        self.validate()?;
        if matches!(inputs.target, Target::Probabilities(_)) {
            return Err(Error::DType {
                input: "target",
                expected: "class indices (i32) for softmax-focal",
                got: "probabilities",
            });
        }
        self.row_kernel().record(engine, encoder, inputs)
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`SoftmaxFocal::record`], plus [`Error::Value`] for a target out of range.
    pub fn run(&self, engine: &Engine, inputs: &CrossEntropyInputs<'_>) -> Result<LossValues> {
        engine.execute(|e| self.record(engine, e, inputs))
    }
}
