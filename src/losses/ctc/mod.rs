//! Connectionist temporal classification (PyTorch `F.ctc_loss`): the negative log-likelihood
//! of every alignment of a target sequence with a sequence of per-frame class scores
//! `[T, N, C]`. Three kernels (`ctc.wgsl`): per frame row, the log-softmax normalizer and the
//! log-probabilities of the row's extended labels (`gather`); per sequence, the forward and
//! backward recursions in log space (`recurse`); per frame row, the gradient from the
//! occupancies (`gradients`). The CPU twin (`cpu.rs`), the f64 reference (`reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{check_grad_dtype, check_upstream, per_item_reduction, Arg, DType, Reduction};
use crate::error::{Error, Result};

/// What the scores are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtcInput {
    /// Unnormalized logits: the log-softmax over classes is fused, and the gradient is with
    /// respect to the logits (PyTorch's `ctc_loss(log_softmax(x, 2), …)` differentiated
    /// through the log-softmax).
    #[default]
    Logits,
    /// Log-probabilities, used as given; the gradient is the true derivative with respect to
    /// them, `−occupancy` (PyTorch's own returns `exp(lp) − occupancy`, which agrees only
    /// after a log-softmax backward).
    LogProbs,
}

impl std::str::FromStr for CtcInput {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "logits" => Ok(CtcInput::Logits),
            "log_probs" => Ok(CtcInput::LogProbs),
            _ => Err(Error::Option {
                option: "input",
                value: s.into(),
                reason: "expected logits or log_probs",
            }),
        }
    }
}

/// The CTC loss with PyTorch's defaults: blank 0, mean reduction (each sequence's loss
/// divided by its target length, at least 1, then averaged), `zero_infinity` false.
///
/// ```
/// let ctc = wgpu_losses::Ctc::new().blank(3).zero_infinity(true);
/// assert_eq!(ctc.reduction, wgpu_losses::Reduction::Mean);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ctc {
    /// The blank class (default 0).
    pub blank: u32,
    /// Combination of the sequence losses (default mean: each divided by its target length).
    pub reduction: Reduction,
    /// An impossible alignment's infinite loss becomes 0 (default false). Either way its
    /// gradient is 0 (PyTorch's is NaN without `zero_infinity`: deliberate deviation).
    pub zero_infinity: bool,
    /// Logits (default) or log-probabilities.
    pub input: CtcInput,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradient (default `None`: the input's type).
    pub grad_dtype: Option<DType>,
}

impl Default for Ctc {
    fn default() -> Self {
        Self {
            blank: 0,
            reduction: Reduction::Mean,
            zero_infinity: false,
            input: CtcInput::Logits,
            gradient: true,
            grad_dtype: None,
        }
    }
}

impl Ctc {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the blank class.
    pub fn blank(mut self, blank: u32) -> Self {
        self.blank = blank;
        self
    }
    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// Whether an impossible alignment's loss is 0 rather than ∞.
    pub fn zero_infinity(mut self, yes: bool) -> Self {
        self.zero_infinity = yes;
        self
    }
    /// Logits or log-probabilities.
    pub fn input(mut self, input: CtcInput) -> Self {
        self.input = input;
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
    /// [`Error::Option`] for `BatchMean` or a gradient type that is not a float.
    pub fn validate(&self) -> Result<()> {
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}

/// The inputs of one call as [`Ctc::check`] sees them, on any backend. The lengths are host
/// values, as PyTorch reads them.
pub(crate) struct Args<'a> {
    pub logits: Arg<'a>,
    pub targets: Arg<'a>,
    pub input_lengths: &'a [i32],
    pub target_lengths: &'a [i32],
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

/// A checked call's sizes and where each sequence lies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    /// Frames, sequences, classes.
    pub t: usize,
    pub n: usize,
    pub c: usize,
    /// Per sequence: its frames, its target length, its target's first element.
    pub frames: Vec<usize>,
    pub lengths: Vec<usize>,
    pub offsets: Vec<usize>,
    /// Extended labels of the longest target: 2·S + 1.
    pub width: usize,
}

impl Layout {
    /// Sequence `n`'s mean weight: 1 / max(target length, 1) with reduction mean, else 1.
    pub(crate) fn weight(&self, seq: usize, reduction: Reduction) -> f64 {
        match reduction {
            Reduction::Mean => 1.0 / self.lengths[seq].max(1) as f64,
            _ => 1.0,
        }
    }
}

impl Ctc {
    /// The family's input rules: `logits` `[T, N, C]` floats (T, N, C ≥ 1); `targets` i32,
    /// padded `[N, S]` or concatenated 1-D; `input_lengths` and `target_lengths` N values,
    /// each in `[0, T]` and `[0, S]` (concatenated: their sum within the array); blank < C;
    /// the upstream gradient a scalar or (reduction none) `[N]`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Empty`], [`Error::DType`] naming the input;
    /// [`Error::Value`] naming the first bad length's row; [`Error::Option`] for the blank.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<Layout> {
        self.validate()?;
        let &[t, n, c] = args.logits.shape else {
            return Err(Error::shape(
                "logits",
                "[T, N, C]".into(),
                args.logits.shape,
            ));
        };
        args.logits.expect_float("logits")?;
        if t == 0 || n == 0 {
            return Err(Error::Empty("logits"));
        }
        if c == 0 {
            return Err(Error::shape(
                "logits",
                "[T, N, C] with C >= 1".into(),
                args.logits.shape,
            ));
        }
        if self.blank as usize >= c {
            return Err(Error::Option {
                option: "blank",
                value: self.blank.to_string(),
                reason: "must be a class: below C",
            });
        }
        args.targets.expect_dtype("targets", DType::I32)?;
        let padded = match args.targets.shape {
            &[rows, s] if rows == n => Some(s),
            &[_] => None,
            other => return Err(Error::shape("targets", format!("[{n}, S] or 1-D"), other)),
        };
        for (name, v) in [
            ("input_lengths", args.input_lengths),
            ("target_lengths", args.target_lengths),
        ] {
            if v.len() != n {
                return Err(Error::shape(name, format!("[{n}]"), &[v.len()]));
            }
        }
        let bad = |input, row, value: i32, reason: String| Error::Value {
            input,
            row,
            value: value.to_string(),
            reason,
        };
        let mut frames = Vec::with_capacity(n);
        for (row, &l) in args.input_lengths.iter().enumerate() {
            if l < 0 || l as usize > t {
                return Err(bad("input_lengths", row, l, format!("outside [0, {t}]")));
            }
            frames.push(l as usize);
        }
        let (mut lengths, mut offsets, mut next) = (Vec::with_capacity(n), Vec::new(), 0usize);
        let available = args.targets.len();
        for (row, &l) in args.target_lengths.iter().enumerate() {
            let limit = padded.unwrap_or(available - next.min(available));
            if l < 0 || l as usize > limit {
                let reason = match padded {
                    Some(s) => format!("outside [0, {s}]"),
                    None => format!("past the {available} concatenated targets"),
                };
                return Err(bad("target_lengths", row, l, reason));
            }
            let start = padded.map_or(next, |s| row * s);
            offsets.push(start);
            lengths.push(l as usize);
            next += l as usize;
        }
        check_upstream(
            args.scalar_upstream,
            args.per_item_upstream,
            &[n],
            self.reduction,
        )?;
        let width = 2 * lengths.iter().copied().max().unwrap_or(0) + 1;
        Ok(Layout {
            t,
            n,
            c,
            frames,
            lengths,
            offsets,
            width,
        })
    }
}

/// Sequence `row`'s targets from `targets` (the whole array): `Err` naming the row and the
/// first value that is the blank or not a class.
pub(crate) fn sequence<'a>(
    targets: &'a [i32],
    layout: &Layout,
    row: usize,
    blank: u32,
) -> Result<&'a [i32]> {
    let at = layout.offsets[row];
    let labels = &targets[at..at + layout.lengths[row]];
    if let Some(&v) = labels
        .iter()
        .find(|&&v| v < 0 || v as usize >= layout.c || v as u32 == blank)
    {
        return Err(Error::Value {
            input: "targets",
            row,
            value: v.to_string(),
            reason: target_reason(layout.c, blank),
        });
    }
    Ok(labels)
}

/// Why a target value is rejected.
pub(crate) fn target_reason(c: usize, blank: u32) -> String {
    format!("a target must be a class in [0, {c}) other than the blank {blank}")
}
