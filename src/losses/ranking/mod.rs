//! Learning-to-rank losses over lists of scores `[Q, L]` with graded relevance (allRank's
//! conventions, docs/LOSSES.md): the pairwise `ranknet`, `pairwise-hinge` and `lambda-ndcg`,
//! the listwise `listnet` and `listmle`, each optionally reporting NDCG@k per list. One
//! workgroup per list (`ranking.wgsl`'s `lists`: ranks, the loss, its count and the unscaled
//! gradient), then one pass over the elements (`finish`: the gradient scaled by the mean's
//! count). The CPU twin (`cpu.rs`), the f64 reference (`reference.rs`).

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod reference;

use crate::core::{check_grad_dtype, check_upstream, per_item_reduction, Arg, DType, Reduction};
use crate::error::{Error, Result};

/// Which ranking loss. Pairs are (i, j) in one list with relevance i > relevance j.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankingKind {
    /// allRank's rankNet: `log(1 + e^−(s_i − s_j))` per pair; mean over every pair of the
    /// batch.
    RankNet,
    /// `max(0, margin − (s_i − s_j))` per pair; mean over every pair of the batch.
    PairwiseHinge {
        /// Default 1.
        margin: f32,
    },
    /// allRank's listNet: `−Σ softmax(relevance)·log_softmax(scores)` per list; mean over
    /// lists.
    ListNet,
    /// allRank's listMLE: the Plackett–Luce negative log-likelihood of the order by relevance
    /// (descending, ties by index), `Σ_p log Σ_{q ≥ p} e^{s_π(q)} − s_π(p)` per list; mean over
    /// lists.
    ListMle,
    /// LambdaLoss with LambdaRank's weights: `|ΔNDCG@k_ij|·log(1 + e^−(s_i − s_j))` per pair,
    /// the weight (the change in NDCG@k from swapping i and j at their current ranks, gains
    /// `2^rel − 1`) held constant in the gradient; mean over the lists that have a pair.
    LambdaNdcg,
}

/// A ranking loss with its options.
///
/// ```
/// use wgpu_losses::{Ranking, RankingKind};
/// let loss = Ranking::new(RankingKind::LambdaNdcg).k(Some(10)).ndcg(true);
/// assert_eq!(loss.reduction, wgpu_losses::Reduction::Mean);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranking {
    /// The loss.
    pub kind: RankingKind,
    /// Mean (each loss's own: over pairs, lists, or lists with a pair), sum, or none (one
    /// value per list: its loss, summed over its pairs).
    pub reduction: Reduction,
    /// NDCG's cutoff k for `lambda-ndcg` and the report (default `None`: the whole list).
    pub k: Option<u32>,
    /// Also report NDCG@k per list (`rows`: "ndcg"; 1 for a list without relevant items, as
    /// allRank's filler value).
    pub ndcg: bool,
    /// Compute the gradient (default true).
    pub gradient: bool,
    /// Element type of the gradient (default `None`: the scores' type).
    pub grad_dtype: Option<DType>,
}

impl Ranking {
    /// `kind` with mean reduction, the whole list, no report, and a gradient.
    pub fn new(kind: RankingKind) -> Self {
        Self {
            kind,
            reduction: Reduction::Mean,
            k: None,
            ndcg: false,
            gradient: true,
            grad_dtype: None,
        }
    }
    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// Sets NDCG's cutoff (`None`: the whole list).
    pub fn k(mut self, k: Option<u32>) -> Self {
        self.k = k;
        self
    }
    /// Whether to report NDCG@k per list.
    pub fn ndcg(mut self, yes: bool) -> Self {
        self.ndcg = yes;
        self
    }
    /// Whether to compute the gradient.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }
    /// Sets the gradient's element type (`None`: the scores' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }
    /// The cutoff as a rank (the whole list: `u32::MAX`).
    pub(crate) fn cutoff(&self) -> u32 {
        self.k.unwrap_or(u32::MAX)
    }
    /// Whether the ranks by score and by relevance are needed.
    pub(crate) fn needs_ranks(&self) -> bool {
        self.ndcg || matches!(self.kind, RankingKind::LambdaNdcg | RankingKind::ListMle)
    }
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for k = 0, a non-finite margin, `BatchMean` or a gradient type that
    /// is not a float.
    pub fn validate(&self) -> Result<()> {
        if self.k == Some(0) {
            return Err(Error::Option {
                option: "k",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if let RankingKind::PairwiseHinge { margin } = self.kind {
            crate::core::finite("margin", margin)?;
        }
        check_grad_dtype(self.grad_dtype)?;
        per_item_reduction(self.reduction)
    }
}

/// The inputs of one call as [`Ranking::check`] sees them, on any backend.
pub(crate) struct Args<'a> {
    pub scores: Arg<'a>,
    pub relevance: Arg<'a>,
    pub lengths: Option<Arg<'a>>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}

impl Ranking {
    /// The family's input rules: `scores` `[Q, L]` floats (Q, L ≥ 1), `relevance` f32 of the
    /// same shape, `lengths` i32 `[Q]`, the upstream gradient a scalar or (reduction none)
    /// `[Q]`. Gives (Q, L).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::Empty`], [`Error::DType`] naming the input; the upstream
    /// gradient's errors.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<(usize, usize)> {
        self.validate()?;
        let (q, l) = crate::core::check_rows(&[("scores", args.scores)])?;
        args.relevance.expect("relevance", &[q, l], DType::F32)?;
        if let Some(lengths) = args.lengths {
            lengths.expect("lengths", &[q], DType::I32)?;
        }
        check_upstream(
            args.scalar_upstream,
            args.per_item_upstream,
            &[q],
            self.reduction,
        )?;
        Ok((q, l))
    }
}

/// List `row`'s length: `Err` naming the row when outside `[0, l]`.
pub(crate) fn list_length(length: i64, row: usize, l: usize) -> Result<usize> {
    if length < 0 || length > l as i64 {
        return Err(Error::Value {
            input: "lengths",
            row,
            value: length.to_string(),
            reason: format!("outside [0, {l}]"),
        });
    }
    Ok(length as usize)
}

/// NDCG's discount at 1-based `rank` with cutoff `k`: 1/log2(1 + rank) within the top k.
pub(crate) fn discount(rank: usize, k: u32) -> f64 {
    match rank as u64 <= k as u64 {
        true => 1.0 / ((1 + rank) as f64).log2(),
        false => 0.0,
    }
}

/// NDCG's gain of a relevance grade: 2^rel − 1.
pub(crate) fn gain(rel: f64) -> f64 {
    rel.exp2() - 1.0
}
