//! `NLLLoss`: log-probabilities `[N, C]` with class targets, the loss `−w_y·x[y]` per row.
//! One kernel (`nll.wgsl`: a pass over the rows for the losses and weights, one over the
//! elements for the gradient, which is `−w_y` times the row's scale at the target and 0
//! elsewhere), its CPU twin (`cpu.rs`), the f64 reference (`reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{
    check_grad_dtype, check_rows, check_upstream, per_item_reduction, Arg, DType, Reduction,
};
use crate::error::Result;

/// Negative log-likelihood over log-probabilities (PyTorch `F.nll_loss`): `−w_y·x[n, y]` per
/// row; `mean` divides by `Σ w_y` over the kept rows (0 when every row is ignored, as
/// cross-entropy here).
///
/// ```
/// let nll = wgpu_losses::Nll::new().ignore_index(0);
/// assert_eq!(nll.reduction, wgpu_losses::Reduction::Mean);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nll {
    /// Combination of the row losses (default mean, weighted by `w[y]`).
    pub reduction: Reduction,
    /// Rows with this target contribute nothing (default -100).
    pub ignore_index: i32,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradient (default `None`: the input's type).
    pub grad_dtype: Option<DType>,
}

impl Default for Nll {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            ignore_index: -100,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl Nll {
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
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`](crate::Error::Option) for `BatchMean` or a gradient type that is not
    /// a float.
    pub fn validate(&self) -> Result<()> {
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

/// The family's input rules: `input` `[N, C]` floats (N, C ≥ 1), `target` i32 `[N]`,
/// `weight` f32 `[C]`, the upstream gradient a scalar or (reduction none) `[N]`. Gives
/// (N, C).
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape), [`Error::Empty`](crate::Error::Empty),
/// [`Error::DType`](crate::Error::DType) naming the input; the upstream
/// gradient's errors.
pub(crate) fn check(args: &Args<'_>, reduction: Reduction) -> Result<(usize, usize)> {
    let (n, c) = check_rows(&[("input", args.input)])?;
    args.target.expect("target", &[n], DType::I32)?;
    if let Some(w) = args.weight {
        w.expect("weight", &[c], DType::F32)?;
    }
    check_upstream(
        args.scalar_upstream,
        args.per_item_upstream,
        &[n],
        reduction,
    )?;
    Ok((n, c))
}
