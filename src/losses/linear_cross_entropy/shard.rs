//! Vocabulary shards: the fused linear cross-entropy over a classifier split by vocabulary
//! rows, as tensor-parallel training holds it (Megatron's vocab-parallel cross-entropy, Cut
//! Cross-Entropy's `VocabParallelOptions`). Each shard holds classes `[start, start + V_s)`
//! of a vocabulary of `vocab` and runs two steps:
//!
//! 1. [`ShardStatistics`]: from the hidden states and its classifier rows (and bias and
//!    weight slices), one record of [`SHARD_RECORD`] f32 per row, its partial statistics:
//!    `(max, Σ e^(x − max), x_y, w_y, found, Σ w·(x − max), Σ w, first index of the max)`
//!    over its capped logits `x`; `x_y`, `w_y` and `found` = 1 only in the shard that holds
//!    the row's class `y`. Ignored rows read nothing.
//! 2. The records of all shards, stacked in vocabulary order as `[K, N, SHARD_RECORD]` (what
//!    an all-gather gives), go to [`ShardGradients`]: it merges them row by row in shard
//!    order (the log-sum-exp, the target's logit, the smoothing sums) into every row's loss
//!    and gradient coefficients, so every shard computes the same loss, then recomputes its
//!    logits chunk by chunk and writes its gradients: `classifier` and `bias` of its rows,
//!    and its share of `hidden`'s, which the shards' sum (an all-reduce) completes.
//!
//! Nothing of size N×V exists on any shard, and the only traffic between shards is N×8
//! values each way plus the `[N, H]` sum. The merge is done in a fixed order, so the result
//! does not depend on which shard computes it.

use super::LinearCrossEntropy;
use crate::core::{Arg, DType};
use crate::error::{Error, Result};

/// Values per row of a shard's statistics record (see the module documentation).
pub const SHARD_RECORD: usize = 8;

/// Classes are f32 indices in the records: exact below 2²⁴.
const MAX_VOCAB: usize = 1 << 24;

/// Where a shard's classifier rows lie in the vocabulary: it holds classes `[start, start +
/// V_s)` of `vocab`, `V_s` being its classifier's row count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabShard {
    /// The shard's first class.
    pub start: usize,
    /// Classes of the whole vocabulary (label smoothing spreads ε over all of them).
    pub vocab: usize,
}

impl VocabShard {
    /// The shard from class `start` of a vocabulary of `vocab` classes.
    pub fn new(start: usize, vocab: usize) -> Self {
        Self { start, vocab }
    }

    /// `Err` unless `classes` from `start` lie in the vocabulary.
    pub(crate) fn check(&self, classes: usize) -> Result<()> {
        if self.vocab >= MAX_VOCAB {
            return Err(Error::Limit(format!(
                "a vocabulary of {} classes: shard records hold class indices as f32, \
                 exact below {MAX_VOCAB}",
                self.vocab
            )));
        }
        if self.start + classes > self.vocab {
            return Err(Error::shape(
                "classifier",
                format!(
                    "at most {} rows: the shard starts at class {} of {}",
                    self.vocab.saturating_sub(self.start),
                    self.start,
                    self.vocab
                ),
                &[classes],
            ));
        }
        Ok(())
    }
}

/// Step 1 of a vocabulary shard: its per-row statistics (see the module documentation).
/// Uses `ignore_index`, `softcap` and `chunk_rows` of the options; the target holds the
/// vocabulary's class indices, and the classifier, bias and weight the shard's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStatistics {
    /// The loss's options.
    pub loss: LinearCrossEntropy,
    /// The shard's place in the vocabulary.
    pub shard: VocabShard,
}

/// Step 2 of a vocabulary shard: the loss from every shard's statistics, and this shard's
/// gradients (see the module documentation). Every option of [`LinearCrossEntropy`] applies
/// with the same meaning as unsharded; `row_stats` reports each row's `lse` and `correct`
/// over the whole vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardGradients {
    /// The loss's options.
    pub loss: LinearCrossEntropy,
    /// The shard's place in the vocabulary.
    pub shard: VocabShard,
}

impl LinearCrossEntropy {
    /// Step 1 for the shard `shard`: see [`ShardStatistics`].
    pub fn shard_statistics(&self, shard: VocabShard) -> ShardStatistics {
        ShardStatistics {
            loss: self.clone(),
            shard,
        }
    }

    /// Step 2 for the shard `shard`: see [`ShardGradients`].
    pub fn shard_gradients(&self, shard: VocabShard) -> ShardGradients {
        ShardGradients {
            loss: self.clone(),
            shard,
        }
    }
}

/// Checks the stacked records `[K, N, SHARD_RECORD]` of `n` rows; gives K.
pub(crate) fn check_records(stats: Arg<'_>, n: usize) -> Result<usize> {
    let expected = || format!("[K, {n}, {SHARD_RECORD}]: every shard's records, stacked");
    match *stats.shape {
        [k, rows, SHARD_RECORD] if rows == n && k >= 1 => {
            stats.expect_dtype("stats", DType::F32)?;
            Ok(k)
        }
        _ => Err(Error::shape("stats", expected(), stats.shape)),
    }
}
