//! Overlap losses for segmentation (MONAI's `DiceLoss` and `TverskyLoss`, docs/LOSSES.md):
//! per (item, channel) — or per channel with `batch` — sums over the spatial positions of
//! p·g, p and g, then one ratio per group. Three kernels (`overlap.wgsl`): per (item, tile of
//! positions), each channel's partial sums (`partials`); per group, its sums added in a fixed
//! order, its loss and the two coefficients of its gradient (`groups`); per position, every
//! channel's gradient through the activation (`gradients`). The CPU twin (`cpu.rs`), the f64
//! reference (`reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{check_grad_dtype, check_option, check_upstream, per_item_reduction, Arg, DType};
use crate::core::{non_negative, Reduction};
use crate::error::{Error, Result};

/// Which overlap ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OverlapKind {
    /// `1 − (2I + smooth_nr) / (P + G + smooth_dr)`, with `I = Σp·g`, `P = Σp` (`Σp²` with
    /// `squared_pred`), `G = Σg` (`Σg²`); `jaccard` uses the denominator `2·(P + G − I)`.
    Dice {
        /// Squares the predictions and targets in the denominator's sums (default false).
        squared_pred: bool,
        /// The Jaccard (IoU) form of the ratio (default false).
        jaccard: bool,
    },
    /// `1 − (I + smooth_nr) / (I + α·Σp(1 − g) + β·Σ(1 − p)·g + smooth_dr)`.
    Tversky {
        /// Weight of the false positives (default 0.5).
        alpha: f32,
        /// Weight of the false negatives (default 0.5).
        beta: f32,
    },
}

impl OverlapKind {
    /// Dice with MONAI's defaults.
    pub const DICE: OverlapKind = OverlapKind::Dice {
        squared_pred: false,
        jaccard: false,
    };
    /// Tversky with MONAI's defaults (α = β = 0.5: Dice).
    pub const TVERSKY: OverlapKind = OverlapKind::Tversky {
        alpha: 0.5,
        beta: 0.5,
    };
}

/// What turns the input into predictions, over the channel axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Probabilities as given (MONAI's default).
    #[default]
    None,
    /// The logistic function of each logit.
    Sigmoid,
    /// The softmax over the channels at each position.
    Softmax,
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Activation::None),
            "sigmoid" => Ok(Activation::Sigmoid),
            "softmax" => Ok(Activation::Softmax),
            _ => Err(Error::Option {
                option: "activation",
                value: s.into(),
                reason: "expected none, sigmoid or softmax",
            }),
        }
    }
}

/// A Dice or Tversky loss with MONAI's defaults: no activation, the background kept,
/// `smooth_nr = smooth_dr = 1e-5`, one ratio per (item, channel), mean reduction.
///
/// ```
/// use wgpu_losses::{Activation, Overlap, OverlapKind};
/// let dice = Overlap::new(OverlapKind::DICE).activation(Activation::Softmax).batch(true);
/// assert_eq!(dice.smooth_dr, 1e-5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// Dice (with its `squared_pred` and `jaccard`) or Tversky (with α, β).
    pub kind: OverlapKind,
    /// Applied to the input first (default none).
    pub activation: Activation,
    /// Keeps channel 0 (default true); false drops it after the activation.
    pub include_background: bool,
    /// Added to the numerator (default 1e-5).
    pub smooth_nr: f32,
    /// Added to the denominator (default 1e-5). Must be > 0, so that a channel empty in both
    /// prediction and target has a defined ratio (MONAI allows 0 and returns NaN there).
    pub smooth_dr: f32,
    /// Sums over the batch too: one ratio per channel (default false).
    pub batch: bool,
    /// Mean or sum over the ratios, or none (`[N, C']`, or `[C']` with `batch`).
    pub reduction: Reduction,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradient (default `None`: the input's type).
    pub grad_dtype: Option<DType>,
}

impl Overlap {
    /// `kind` with MONAI's defaults.
    pub fn new(kind: OverlapKind) -> Self {
        Self {
            kind,
            activation: Activation::None,
            include_background: true,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            batch: false,
            reduction: Reduction::Mean,
            gradient: true,
            grad_dtype: None,
        }
    }
    /// Sets the activation.
    pub fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// Whether channel 0 counts.
    pub fn include_background(mut self, yes: bool) -> Self {
        self.include_background = yes;
        self
    }
    /// Sets the numerator's and the denominator's smoothing.
    pub fn smooth(mut self, nr: f32, dr: f32) -> Self {
        (self.smooth_nr, self.smooth_dr) = (nr, dr);
        self
    }
    /// Whether the sums run over the batch too.
    pub fn batch(mut self, yes: bool) -> Self {
        self.batch = yes;
        self
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
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for a negative or non-finite smoothing, `smooth_dr` = 0, a negative
    /// α or β, `BatchMean`, or a gradient type that is not a float.
    pub fn validate(&self) -> Result<()> {
        non_negative("smooth_nr", self.smooth_nr)?;
        check_option(
            "smooth_dr",
            self.smooth_dr,
            self.smooth_dr > 0.0,
            "must be finite and > 0 (an empty channel's ratio is 0/0 otherwise)",
        )?;
        if let OverlapKind::Tversky { alpha, beta } = self.kind {
            non_negative("alpha", alpha)?;
            non_negative("beta", beta)?;
        }
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}

/// The inputs of one call as [`Overlap::check`] sees them, on any backend. The class weights
/// are host values (MONAI takes them with the loss's options).
pub(crate) struct Args<'a> {
    pub input: Arg<'a>,
    pub target: Arg<'a>,
    pub weight: Option<&'a [f32]>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

/// A checked call's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Items, channels, spatial positions per item.
    pub n: usize,
    pub c: usize,
    pub s: usize,
    /// The first channel counted (1 without the background).
    pub first: usize,
    /// The target holds class indices `[N, spatial…]`, not one-hot values `[N, C, spatial…]`.
    pub indices: bool,
    /// Whether the sums run over the batch.
    pub batch: bool,
}

impl Layout {
    /// Channels counted: C', C minus the background when it is dropped.
    pub(crate) fn kept(&self) -> usize {
        self.c - self.first
    }
    /// Ratios: one per (item, kept channel), or per kept channel with `batch`.
    pub(crate) fn groups(&self) -> usize {
        match self.batch {
            true => self.kept(),
            false => self.n * self.kept(),
        }
    }
    /// The shape of the per-ratio losses (reduction none).
    pub(crate) fn group_shape(&self) -> Vec<usize> {
        match self.batch {
            true => vec![self.kept()],
            false => vec![self.n, self.kept()],
        }
    }
    /// The group of kept channel `k` of item `i`.
    pub(crate) fn group(&self, i: usize, k: usize) -> usize {
        match self.batch {
            true => k,
            false => i * self.kept() + k,
        }
    }
}

impl Overlap {
    /// The family's input rules: `input` `[N, C, spatial…]` floats with at least one spatial
    /// axis and every size ≥ 1; `target` f32 of the input's shape (one-hot or soft labels),
    /// or i32 class indices `[N, spatial…]` or `[N, 1, spatial…]`; `weight` C values, finite
    /// and ≥ 0; softmax and a dropped background need C ≥ 2; the upstream gradient a scalar
    /// or (reduction none) one per ratio.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Empty`], [`Error::DType`] naming the input; [`Error::Value`]
    /// naming a bad weight's class; [`Error::Option`] for softmax or a dropped background over
    /// one channel.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<Layout> {
        self.validate()?;
        let shape = args.input.shape;
        if shape.len() < 3 {
            return Err(Error::shape(
                "input",
                "[N, C, spatial…] with at least one spatial axis".into(),
                shape,
            ));
        }
        args.input.expect_float("input")?;
        let (n, c, s) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
        if n == 0 || s == 0 {
            return Err(Error::Empty("input"));
        }
        if c == 0 {
            return Err(Error::shape("input", "C >= 1 channels".into(), shape));
        }
        let one_channel = |option, reason| match c {
            1 => Err(Error::Option {
                option,
                value: "set".into(),
                reason,
            }),
            _ => Ok(()),
        };
        if self.activation == Activation::Softmax {
            one_channel(
                "activation",
                "softmax over a single channel is 1 everywhere: use sigmoid",
            )?;
        }
        if !self.include_background {
            one_channel(
                "include_background",
                "dropping the only channel leaves nothing to compare",
            )?;
        }
        let indices = args.target.dtype == DType::I32;
        if indices {
            let plain = [&[n][..], &shape[2..]].concat();
            let with_axis = [&[n, 1][..], &shape[2..]].concat();
            if args.target.shape != plain && args.target.shape != with_axis {
                return Err(Error::shape(
                    "target",
                    format!("class indices {plain:?} or {with_axis:?}, or one-hot {shape:?}"),
                    args.target.shape,
                ));
            }
        } else {
            args.target.expect("target", shape, DType::F32)?;
        }
        if let Some(w) = args.weight {
            if w.len() != c {
                return Err(Error::shape("weight", format!("[{c}]"), &[w.len()]));
            }
            if let Some((k, v)) = w
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(Error::Value {
                    input: "weight",
                    row: k,
                    value: v.to_string(),
                    reason: "a class weight must be finite and >= 0".into(),
                });
            }
        }
        let layout = Layout {
            n,
            c,
            s,
            first: (!self.include_background) as usize,
            indices,
            batch: self.batch,
        };
        check_upstream(
            args.scalar_upstream,
            args.per_item_upstream,
            &layout.group_shape(),
            self.reduction,
        )?;
        Ok(layout)
    }
}

impl Overlap {
    /// The host backends' per-ratio upstream gradient, `len` flat values, by the device's
    /// rule: reduction none and one value per ratio.
    pub(crate) fn check_flat_upstream(&self, layout: &Layout, len: usize) -> Result<()> {
        let want = layout.group_shape();
        let got = if len == layout.groups() { want.clone() } else { vec![len] };
        check_upstream(None, Some(Arg::f32(&got)), &want, self.reduction)
    }
}

/// Why a class index is rejected.
pub(crate) fn index_reason(c: usize) -> String {
    format!("a class index must be in [0, {c})")
}

/// The ratio's numerator and denominator from a group's sums `(I, P, G)` (P and G of squares
/// with `squared_pred`), in f64: every backend forms the same expression.
pub(crate) fn ratio_parts(opts: &Overlap, (i, p, g): (f64, f64, f64)) -> (f64, f64) {
    let (nr, dr) = (opts.smooth_nr as f64, opts.smooth_dr as f64);
    match opts.kind {
        OverlapKind::Dice { jaccard, .. } => {
            let den = if jaccard { 2.0 * (p + g - i) } else { p + g };
            (2.0 * i + nr, den + dr)
        }
        OverlapKind::Tversky { alpha, beta } => (
            i + nr,
            i + alpha as f64 * (p - i) + beta as f64 * (g - i) + dr,
        ),
    }
}

/// The derivatives of the numerator and the denominator in one prediction `p` with target
/// `g`.
pub(crate) fn part_slopes(opts: &Overlap, p: f64, g: f64) -> (f64, f64) {
    match opts.kind {
        OverlapKind::Dice {
            squared_pred,
            jaccard,
        } => {
            let dp = if squared_pred { 2.0 * p } else { 1.0 };
            (2.0 * g, if jaccard { 2.0 * (dp - g) } else { dp })
        }
        OverlapKind::Tversky { alpha, beta } => {
            let (a, b) = (alpha as f64, beta as f64);
            (g, g + a * (1.0 - g) - b * g)
        }
    }
}

/// Whether the sums square p and g.
pub(crate) fn squared(kind: OverlapKind) -> bool {
    matches!(
        kind,
        OverlapKind::Dice {
            squared_pred: true,
            ..
        }
    )
}
