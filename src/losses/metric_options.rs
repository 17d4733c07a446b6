//! Options of the metric-learning losses (LOSSES.md "Distances used by the metric losses" and
//! after), shared by the GPU path, the CPU backend and the f64 reference.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::losses::Reduction;

/// `F.pairwise_distance`'s ε, the default of every `eps` option.
pub const PAIRWISE_EPS: f32 = 1e-6;
/// `F.normalize`'s ε: rows are divided by `max(‖x‖₂, NORM_EPS)`.
pub const NORM_EPS: f32 = 1e-12;

fn option(option: &'static str, value: f32, ok: bool, reason: &'static str) -> Result<()> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(Error::Option {
            option,
            value: value.to_string(),
            reason,
        })
    }
}

/// `value` must be finite and ≥ 0 (margins, ε).
fn non_negative(name: &'static str, value: f32) -> Result<()> {
    option(name, value, value >= 0.0, "must be finite and >= 0")
}

fn per_item_reduction(r: Reduction) -> Result<()> {
    if r == Reduction::BatchMean {
        return Err(Error::Option {
            option: "reduction",
            value: "batchmean".into(),
            reason: "batchmean is for kl-div; use none, sum or mean",
        });
    }
    Ok(())
}

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
}

impl Default for Contrastive {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            margin: 1.0,
            eps: PAIRWISE_EPS,
            gradient: true,
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
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for a negative or non-finite margin or ε, or `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        non_negative("margin", self.margin)?;
        non_negative("eps", self.eps)?;
        per_item_reduction(self.reduction)
    }
}

/// Triplet margin loss (`F.triplet_margin_loss`): `max(0, m + d(a,p) − d(a,n))` with
/// `d(u,v) = ‖u − v + ε‖_p`; with `swap`, `d(a,n) ← min(d(a,n), d(p,n))`.
///
/// ```
/// let t = wgpu_losses::Triplet::new().p(1).swap(true);
/// assert_eq!(t.margin, 1.0);
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
    /// Compute the gradients (default true).
    pub gradient: bool,
}

impl Default for Triplet {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            margin: 1.0,
            p: 2,
            eps: PAIRWISE_EPS,
            swap: false,
            gradient: true,
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
    /// Whether to compute the gradients.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for p outside {1, 2}, a negative or non-finite margin or ε, or
    /// `BatchMean`.
    pub fn validate(&self) -> Result<()> {
        if self.p != 1 && self.p != 2 {
            return Err(Error::Option {
                option: "p",
                value: self.p.to_string(),
                reason: "must be 1 or 2",
            });
        }
        non_negative("margin", self.margin)?;
        non_negative("eps", self.eps)?;
        per_item_reduction(self.reduction)
    }
}

/// Which InfoNCE loss: they share one kernel and differ in what counts as a positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NceKind {
    /// SimCLR's NT-Xent over `z` [2N, D]: rows i and i+N are positives.
    NtXent,
    /// CLIP's symmetric InfoNCE between `a` and `b` [N, D]: row i of a matches row i of b.
    Clip,
    /// Supervised contrastive ("out") over `embeddings` `[N, D]` with `labels` `[N]`.
    SupCon,
}

impl NceKind {
    /// LOSSES.md name.
    pub fn name(self) -> &'static str {
        match self {
            NceKind::NtXent => "nt-xent",
            NceKind::Clip => "clip",
            NceKind::SupCon => "supcon",
        }
    }

    /// The default temperature (LOSSES.md).
    pub fn default_temperature(self) -> f32 {
        match self {
            NceKind::NtXent => 0.5,
            NceKind::Clip => 0.07,
            NceKind::SupCon => 0.1,
        }
    }
}

/// An InfoNCE loss over similarities of L2-normalized rows divided by a temperature; the
/// loss is the mean over anchors (see [`NceKind`]).
///
/// ```
/// use wgpu_losses::{InfoNce, NceKind};
/// let loss = InfoNce::new(NceKind::Clip);
/// assert_eq!(loss.temperature, 0.07);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfoNce {
    /// Which loss.
    pub kind: NceKind,
    /// τ > 0 (defaults: nt-xent 0.5, clip 0.07, supcon 0.1).
    pub temperature: f32,
    /// Compute the gradients (default true).
    pub gradient: bool,
}

impl InfoNce {
    /// The loss `kind` with its default temperature.
    pub fn new(kind: NceKind) -> Self {
        Self {
            kind,
            temperature: kind.default_temperature(),
            gradient: true,
        }
    }
    /// Sets τ.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }
    /// Whether to compute the gradients.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for τ ≤ 0 or non-finite.
    pub fn validate(&self) -> Result<()> {
        option(
            "temperature",
            self.temperature,
            self.temperature > 0.0,
            "must be finite and > 0",
        )
    }
}

/// Distance between embeddings for mined triplets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Distance {
    /// `sqrt(Σ(e_i − e_j)²)`, gradient 0 where it is 0.
    #[default]
    Euclidean,
    /// `Σ(e_i − e_j)²`.
    Squared,
    /// `1 − n_i·n_j` of L2-normalized rows.
    Cosine,
}

impl FromStr for Distance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "euclidean" => Ok(Distance::Euclidean),
            "squared" => Ok(Distance::Squared),
            "cosine" => Ok(Distance::Cosine),
            _ => Err(Error::Option {
                option: "distance",
                value: s.into(),
                reason: "expected euclidean, squared or cosine",
            }),
        }
    }
}

/// Which triplets online mining keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mining {
    /// Every valid triplet; mean over those with a positive loss.
    #[default]
    BatchAll,
    /// Per anchor, the farthest positive and the nearest negative.
    BatchHard,
    /// Per positive pair, the nearest negative farther than the positive (FaceNet).
    SemiHard,
}

impl FromStr for Mining {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "batch-all" => Ok(Mining::BatchAll),
            "batch-hard" => Ok(Mining::BatchHard),
            "semi-hard" => Ok(Mining::SemiHard),
            _ => Err(Error::Option {
                option: "mining",
                value: s.into(),
                reason: "expected batch-all, batch-hard or semi-hard",
            }),
        }
    }
}

/// Triplet loss with online mining from labels over the batch's distance matrix; the loss
/// is a mean (see [`Mining`] for over what).
///
/// ```
/// use wgpu_losses::{Distance, MinedTriplet, Mining};
/// let loss = MinedTriplet::new().mining(Mining::SemiHard).distance(Distance::Cosine);
/// assert_eq!(loss.margin, 0.2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinedTriplet {
    /// Margin ≥ 0 (default 0.2).
    pub margin: f32,
    /// Distance (default euclidean).
    pub distance: Distance,
    /// Mining (default batch-all).
    pub mining: Mining,
    /// Compute the gradient (default true).
    pub gradient: bool,
}

impl Default for MinedTriplet {
    fn default() -> Self {
        Self {
            margin: 0.2,
            distance: Distance::Euclidean,
            mining: Mining::BatchAll,
            gradient: true,
        }
    }
}

impl MinedTriplet {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the margin.
    pub fn margin(mut self, m: f32) -> Self {
        self.margin = m;
        self
    }
    /// Sets the distance.
    pub fn distance(mut self, d: Distance) -> Self {
        self.distance = d;
        self
    }
    /// Sets the mining.
    pub fn mining(mut self, m: Mining) -> Self {
        self.mining = m;
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
    /// [`Error::Option`] for a negative or non-finite margin.
    pub fn validate(&self) -> Result<()> {
        non_negative("margin", self.margin)
    }
}
