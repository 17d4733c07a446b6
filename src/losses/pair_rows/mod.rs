//! Metric losses over explicit rows: contrastive pairs, cosine embedding and triplets
//! (`F.pairwise_distance` distances, or 1 − cosine similarity for `triplet-distance`). One kernel (`pair_rows.wgsl`, teams of invocations per row), its CPU twin
//! (`cpu.rs`), the f64 reference (`reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{
    check_grad_dtype, check_rows, check_upstream, non_negative, per_item_reduction, Arg, DType,
    Reduction,
};
use crate::error::{Error, Result};
use crate::Distance;

/// The inputs of one call as [`check`] sees them, on any backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args<'a> {
    /// The row inputs by name, in declaration order.
    pub rows: &'a [(&'static str, Arg<'a>)],
    /// Contrastive's labels `y`.
    pub y: Option<Arg<'a>>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

/// The family's input rules, the one place they are written: rows `[N, D]` of one shape and
/// one float type,
/// contrastive's `y` f32 `[N]`, the upstream gradient a scalar or (reduction none) `[N]`.
/// Gives (N, D).
///
/// # Errors
/// [`Error::Shape`], [`Error::Empty`], [`Error::DType`] naming the input; the upstream
/// gradient's errors.
pub(crate) fn check(args: &Args<'_>, reduction: Reduction) -> Result<(usize, usize)> {
    let (n, dim) = check_rows(args.rows)?;
    if let Some(y) = args.y {
        y.expect("y", &[n], DType::F32)?;
    }
    check_upstream(
        args.scalar_upstream,
        args.per_item_upstream,
        &[n],
        reduction,
    )?;
    Ok((n, dim))
}

/// `F.cosine_embedding_loss` over explicit pairs with labels y ∈ {−1, +1}: `1 − cos` where
/// y = 1, `max(0, cos − margin)` where y = −1 (no gradient at 0, as PyTorch's in-place
/// `clamp_min_`), `cos = Σx1·x2 / sqrt((Σx1² + 1e−12)·(Σx2² + 1e−12))`.
///
/// ```
/// let c = wgpu_losses::CosineEmbedding::new().margin(0.5);
/// assert_eq!(c.margin, 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineEmbedding {
    /// Combination of the per-pair losses (default mean).
    pub reduction: Reduction,
    /// Margin for dissimilar pairs (default 0).
    pub margin: f32,
    /// Compute the gradients (default true).
    pub gradient: bool,
    /// Element type of the gradients (default `None`: the rows' type).
    pub grad_dtype: Option<DType>,
}

impl Default for CosineEmbedding {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            margin: 0.0,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl CosineEmbedding {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// Sets the margin.
    pub fn margin(mut self, m: f32) -> Self {
        self.margin = m;
        self
    }
    /// Whether to compute the gradients.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }
    /// Sets the gradients' element type (`None`: the rows' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for a non-finite margin, or `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        crate::core::finite("margin", self.margin)?;
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}

/// The first label of `y` that is not ±1, with its value: cosine embedding's rule.
pub(crate) fn first_bad_sign(y: &[f32]) -> Option<(usize, f32)> {
    y.iter()
        .position(|&v| v != 1.0 && v != -1.0)
        .map(|i| (i, y[i]))
}

/// `F.pairwise_distance`'s ε, the default of every `eps` option.
pub const PAIRWISE_EPS: f32 = 1e-6;

/// `F.cosine_similarity`'s ε: the cosine triplet distance clamps each norm at it.
pub(crate) const COSINE_EPS: f64 = 1e-8;

/// Contrastive loss over explicit pairs: `½[y·d² + (1−y)·max(0, m−d)²]`,
/// `d = ‖x1 − x2 + ε‖₂`.
///
/// ```
/// let c = wgpu_losses::Contrastive::new().margin(2.0);
/// assert_eq!(c.eps, 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contrastive {
    /// Combination of the per-pair losses (default mean).
    pub reduction: Reduction,
    /// Margin m ≥ 0 for dissimilar pairs (default 1).
    pub margin: f32,
    /// ε added to the difference, as `F.pairwise_distance` (default 1e-6).
    pub eps: f32,
    /// Compute the gradients (default true).
    pub gradient: bool,
    /// Element type of the gradients (default `None`: the rows' type).
    pub grad_dtype: Option<DType>,
}

impl Default for Contrastive {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            margin: 1.0,
            eps: PAIRWISE_EPS,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl Contrastive {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// Sets the margin.
    pub fn margin(mut self, m: f32) -> Self {
        self.margin = m;
        self
    }
    /// Sets ε.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// Whether to compute the gradients.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }
    /// Sets the gradients' element type (`None`: the rows' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for a negative or non-finite margin or ε, or `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        non_negative("margin", self.margin)?;
        non_negative("eps", self.eps)?;
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}

/// Triplet margin loss (`F.triplet_margin_loss`): `max(0, m + d(a,p) − d(a,n))` with
/// `d(u,v) = ‖u − v + ε‖_p`; with `swap`, `d(a,n) ← min(d(a,n), d(p,n))`. With
/// `distance(Distance::Cosine)` it is `TripletMarginWithDistanceLoss` with
/// `d(u,v) = 1 − F.cosine_similarity(u, v)` (norms clamped at 1e-8; `p` and `eps` unused).
///
/// ```
/// use wgpu_losses::{Distance, Triplet};
/// let t = Triplet::new().p(1).swap(true);
/// assert_eq!(t.margin, 1.0);
/// let cosine = Triplet::new().distance(Distance::Cosine);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triplet {
    /// Combination of the per-triplet losses (default mean).
    pub reduction: Reduction,
    /// Margin ≥ 0 (default 1).
    pub margin: f32,
    /// Norm degree, 1 or 2 (default 2).
    pub p: u32,
    /// ε added to differences (default 1e-6).
    pub eps: f32,
    /// Use the positive–negative distance when it is smaller (default false).
    pub swap: bool,
    /// `Euclidean` (default: the p-norm above) or `Cosine` (1 − cosine similarity).
    pub distance: Distance,
    /// Compute the gradients (default true).
    pub gradient: bool,
    /// Element type of the gradients (default `None`: the rows' type).
    pub grad_dtype: Option<DType>,
}

impl Default for Triplet {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            margin: 1.0,
            p: 2,
            eps: PAIRWISE_EPS,
            swap: false,
            distance: Distance::Euclidean,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl Triplet {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// Sets the margin.
    pub fn margin(mut self, m: f32) -> Self {
        self.margin = m;
        self
    }
    /// Sets the norm degree (1 or 2).
    pub fn p(mut self, p: u32) -> Self {
        self.p = p;
        self
    }
    /// Sets ε.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the distance swap.
    pub fn swap(mut self, yes: bool) -> Self {
        self.swap = yes;
        self
    }
    /// Sets the distance (euclidean or cosine).
    pub fn distance(mut self, d: Distance) -> Self {
        self.distance = d;
        self
    }
    /// Whether to compute the gradients.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }
    /// Sets the gradients' element type (`None`: the rows' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for p outside {1, 2}, a negative or non-finite margin or ε, the
    /// squared distance, or `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        if self.distance == Distance::Squared {
            return Err(Error::Option {
                option: "distance",
                value: "squared".into(),
                reason: "a triplet distance is euclidean or cosine",
            });
        }
        if self.p != 1 && self.p != 2 {
            return Err(Error::Option {
                option: "p",
                value: self.p.to_string(),
                reason: "must be 1 or 2",
            });
        }
        non_negative("margin", self.margin)?;
        non_negative("eps", self.eps)?;
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}
