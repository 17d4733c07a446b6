//! Metric losses over all pairs of a batch: the InfoNCE family (nt-xent, clip, supcon) and
//! triplets with online mining. One tiled kernel file (`pairwise.wgsl`: 32×32 tiles through
//! workgroup memory, an online log-sum-exp per row, mining by fixed-order arg-reductions),
//! its CPU twin (`cpu.rs`, with the AVX2 register blocks in `simd.rs`) and the f64
//! references (`reference.rs`, `mined_reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod mined_reference;
pub(crate) mod reference;
mod simd;

use std::str::FromStr;

use crate::core::{check_grad_dtype, check_option, check_rows, non_negative, Arg, DType};
use crate::error::{Error, Result};

/// The inputs of one all-pairs call as the checks see them, on any backend. The upstream
/// gradient is checked apart: these losses are means, so it is a scalar.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args<'a> {
    /// The kind whose rows these are (`None` for mined triplets).
    pub kind: Option<NceKind>,
    /// The row inputs by name, in declaration order.
    pub rows: &'a [(&'static str, Arg<'a>)],
    pub labels: Option<Arg<'a>>,
}

impl Args<'_> {
    /// The family's input rules, the one place they are written: rows f32 `[N, D]` of one
    /// shape, labels i32 `[N]` where the loss takes them, nt-xent's rows an even count.
    /// Gives (N, D).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Empty`], [`Error::DType`] naming the input.
    fn check(&self, labelled: bool) -> Result<(usize, usize)> {
        let (n, dim) = check_rows(self.rows)?;
        if self.kind == Some(NceKind::NtXent) && n % 2 != 0 {
            return Err(Error::shape(
                "z",
                "an even number of rows [2N, D] (two views)".into(),
                &[n, dim],
            ));
        }
        match (labelled, self.labels) {
            (true, Some(l)) => l.expect("labels", &[n], DType::I32)?,
            (true, None) => return Err(Error::Empty("labels")),
            (false, Some(_)) => return Err(crate::core::unused("labels")),
            (false, None) => {}
        }
        Ok((n, dim))
    }
}

/// `F.normalize`'s ε: rows are divided by `max(‖x‖₂, NORM_EPS)`.
pub const NORM_EPS: f32 = 1e-12;

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
    /// The names of its row inputs.
    pub(crate) fn input_names(self) -> &'static [&'static str] {
        match self {
            NceKind::NtXent => &["z"],
            NceKind::Clip => &["a", "b"],
            NceKind::SupCon => &["embeddings"],
        }
    }

    /// docs/LOSSES.md name.
    pub fn name(self) -> &'static str {
        match self {
            NceKind::NtXent => "nt-xent",
            NceKind::Clip => "clip",
            NceKind::SupCon => "supcon",
        }
    }

    /// The default temperature (docs/LOSSES.md).
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
    /// Element type of the gradients (default `None`: the rows' type).
    pub grad_dtype: Option<DType>,
}

impl InfoNce {
    /// Checks the options and the inputs (see [`Args`]); gives (N, D) of the stacked rows'
    /// first input.
    ///
    /// # Errors
    /// Bad options; rows of another kind ([`Error::Unknown`]); the input errors of [`Args`].
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<(usize, usize)> {
        self.validate()?;
        if args.kind != Some(self.kind) {
            return Err(Error::Unknown {
                kind: "input set",
                name: args.kind.map_or("mined-triplet rows", NceKind::name).into(),
                hint: format!(" for {}", self.kind.name()),
            });
        }
        args.check(self.kind == NceKind::SupCon)
    }

    /// The loss `kind` with its default temperature.
    pub fn new(kind: NceKind) -> Self {
        Self {
            kind,
            temperature: kind.default_temperature(),
            gradient: true,
            grad_dtype: None,
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
    /// Sets the gradients' element type (`None`: the rows' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for τ ≤ 0 or non-finite.
    pub fn validate(&self) -> Result<()> {
        check_option(
            "temperature",
            self.temperature,
            self.temperature > 0.0,
            "must be finite and > 0",
        )?;
        check_grad_dtype(self.grad_dtype)
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
    /// Element type of the gradient (default `None`: the embeddings' type).
    pub grad_dtype: Option<DType>,
}

impl Default for MinedTriplet {
    fn default() -> Self {
        Self {
            margin: 0.2,
            distance: Distance::Euclidean,
            mining: Mining::BatchAll,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl MinedTriplet {
    /// Checks the options and the inputs (see [`Args`]); gives (N, D).
    ///
    /// # Errors
    /// Bad options; the input errors of [`Args`].
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<(usize, usize)> {
        self.validate()?;
        args.check(true)
    }

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
    /// Sets the gradients' element type (`None`: the rows' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for a negative or non-finite margin.
    pub fn validate(&self) -> Result<()> {
        non_negative("margin", self.margin)?;
        check_grad_dtype(self.grad_dtype)
    }
}
