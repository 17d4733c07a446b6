//! Fused linear + cross-entropy: the loss of `hidden · classifierᵀ + bias` under softmax
//! cross-entropy, with the gradients of the hidden states, the classifier and the bias, and
//! without the N×V logits in memory. Rows go a chunk at a time (as Liger-Kernel's fused linear
//! cross-entropy does): a chunk's logits come from a matrix product (`gemm.wgsl`), the
//! cross-entropy row kernel turns them into their gradient in place with the whole batch's
//! mean denominator, and two more products (and a column sum for the bias) fold that
//! gradient into the inputs' gradients, the classifier's accumulated chunk after chunk in a
//! fixed order. Only one chunk's logits exist at a time. Semantics: docs/LOSSES.md
//! ("linear-cross-entropy").

#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod products;
pub(crate) mod reference;
pub(crate) mod shard;
pub(crate) mod shard_gpu;

use crate::core::{check_grad_dtype, check_upstream, Arg, DType, Reduction};
use crate::error::{Error, Result};
use crate::CrossEntropy;

/// Fused linear cross-entropy options: every option of [`CrossEntropy`] with its meaning and
/// PyTorch's defaults, applied to the logits `hidden · classifierᵀ + bias`.
///
/// ```
/// use wgpu_losses::{LinearCrossEntropy, Reduction};
/// let lce = LinearCrossEntropy::new().label_smoothing(0.1).reduction(Reduction::Sum);
/// assert_eq!(lce.ignore_index, -100);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearCrossEntropy {
    /// Combination of the per-row losses (default mean, weighted by `w[y]`).
    pub reduction: Reduction,
    /// Rows with this target contribute nothing (default -100).
    pub ignore_index: i32,
    /// ε in [0, 1] (default 0).
    pub label_smoothing: f32,
    /// z-loss coefficient: adds `z * lse²` per row (default 0).
    pub z_loss: f32,
    /// Logit soft-capping `x ← c·tanh(x/c)` (default off).
    pub softcap: Option<f32>,
    /// Compute the gradients (default true); false gives the loss alone.
    pub gradient: bool,
    /// Rows per chunk, a multiple of 64; `None` (the default) picks the most whose logits
    /// fit in 64 MiB. Memory holds one chunk's logits, never all N×V.
    pub chunk_rows: Option<usize>,
    /// Element type of the gradients: `None` (default) writes them in the inputs' type
    /// (hidden, classifier and bias share one: f32, f16 or bf16); `Some(DType::F32)` writes
    /// f32 gradients of 16-bit inputs. They accumulate in f32 either way.
    pub grad_dtype: Option<DType>,
    /// Also report, per row, the log-sum-exp of its (capped) logits as `lse` and 1 where the
    /// first index of its largest logit is its target as `correct` (token accuracy), 0 for
    /// ignored rows in both (default false). Computed while the logits are on hand.
    pub row_stats: bool,
    /// Gradient filtering as Cut Cross-Entropy does it (default off): the gradient products
    /// skip each 16×16 block (rows × classes) of a chunk's logit gradient in which every
    /// value of the rows' own loss gradient (before the upstream gradient and the mean's
    /// denominator) is below this threshold in magnitude: those values count as 0 in every
    /// gradient. CCE's default is [`LinearCrossEntropy::auto_filter`] of the inputs' type.
    pub grad_filter: Option<f32>,
}

impl Default for LinearCrossEntropy {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            gradient: true,
            chunk_rows: None,
            grad_dtype: None,
            row_stats: false,
            grad_filter: None,
        }
    }
}

/// Bytes of logits one chunk may hold when the caller does not choose.
const CHUNK_BYTES: usize = 64 << 20;
/// Chunks start at multiples of this many rows, so that views of per-row inputs stay aligned
/// to every adapter's storage offset alignment (at most 256 bytes).
pub(crate) const CHUNK_ALIGN: usize = 64;

impl LinearCrossEntropy {
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

    /// Sets label smoothing ε.
    pub fn label_smoothing(mut self, eps: f32) -> Self {
        self.label_smoothing = eps;
        self
    }

    /// Sets the z-loss coefficient.
    pub fn z_loss(mut self, z: f32) -> Self {
        self.z_loss = z;
        self
    }

    /// Caps logits at `c·tanh(x/c)`; `None` turns capping off.
    pub fn softcap(mut self, c: Option<f32>) -> Self {
        self.softcap = c;
        self
    }

    /// Whether to compute the gradients.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }

    /// Rows per chunk (a multiple of 64).
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows);
        self
    }

    /// Sets the gradients' element type (`None`: the inputs' type).
    pub fn grad_dtype(mut self, dtype: Option<DType>) -> Self {
        self.grad_dtype = dtype;
        self
    }

    /// Whether to report each row's `lse` and `correct` (see the field).
    pub fn row_stats(mut self, yes: bool) -> Self {
        self.row_stats = yes;
        self
    }

    /// Sets the gradient filter's threshold (`None`: off).
    pub fn grad_filter(mut self, eps: Option<f32>) -> Self {
        self.grad_filter = eps;
        self
    }

    /// Cut Cross-Entropy's `filter_eps="auto"` for inputs of `dtype`: its machine epsilon
    /// over 32 (bf16 2⁻¹², f16 2⁻¹⁵, f32 2⁻²⁸), below which a gradient value is lost to
    /// rounding in that type.
    pub fn auto_filter(dtype: DType) -> f32 {
        match dtype {
            DType::BF16 => 2f32.powi(-12),
            DType::F16 => 2f32.powi(-15),
            _ => 2f32.powi(-28),
        }
    }

    /// The cross-entropy of one chunk: per-row losses, the gradient over the logits.
    pub(crate) fn row_kernel(&self) -> CrossEntropy {
        CrossEntropy::new()
            .reduction(Reduction::None)
            .ignore_index(self.ignore_index)
            .label_smoothing(self.label_smoothing)
            .z_loss(self.z_loss)
            .softcap(self.softcap)
            .gradient(self.gradient)
    }

    /// Checks the options.
    ///
    /// # Errors
    /// As [`CrossEntropy::validate`]; [`Error::Option`] for a chunk size that is 0 or not a
    /// multiple of 64.
    pub fn validate(&self) -> Result<()> {
        CrossEntropy {
            reduction: self.reduction,
            ..self.row_kernel()
        }
        .validate()?;
        check_grad_dtype(self.grad_dtype)?;
        if let Some(eps) = self.grad_filter {
            if !(eps.is_finite() && eps >= 0.0) {
                return Err(Error::Option {
                    option: "grad_filter",
                    value: eps.to_string(),
                    reason: "must be finite and >= 0",
                });
            }
        }
        if let Some(rows) = self.chunk_rows {
            if rows == 0 || !rows.is_multiple_of(CHUNK_ALIGN) {
                return Err(Error::Option {
                    option: "chunk_rows",
                    value: rows.to_string(),
                    reason: "must be a positive multiple of 64",
                });
            }
        }
        Ok(())
    }

    /// Rows per chunk for `n` rows of `v` classes.
    pub(crate) fn rows_per_chunk(&self, n: usize, v: usize) -> usize {
        self.rows_per_chunk_within(n, v, CHUNK_BYTES)
    }

    /// Rows per chunk for `n` rows of `v` classes whose logits are to fit `bytes` (unless
    /// chosen by `chunk_rows`).
    pub(crate) fn rows_per_chunk_within(&self, n: usize, v: usize, bytes: usize) -> usize {
        let rows = self.chunk_rows.unwrap_or_else(|| {
            let fit = bytes.min(CHUNK_BYTES) / (v * 4).max(1);
            (fit - fit % CHUNK_ALIGN).max(CHUNK_ALIGN)
        });
        rows.min(n.next_multiple_of(CHUNK_ALIGN))
    }

    /// Checks the options and the inputs' shapes and types; gives (N, H, V). The one place
    /// these rules are written, for every backend and the command line.
    ///
    /// # Errors
    /// As [`LinearCrossEntropy::validate`]; [`Error::Shape`], [`Error::DType`] and
    /// [`Error::Empty`] naming the input; the upstream gradient's errors.
    pub(crate) fn check(&self, args: &Args<'_>) -> Result<(usize, usize, usize)> {
        self.validate()?;
        // hidden, classifier and bias share one float type, as F.linear's operands.
        args.hidden.expect_float("hidden")?;
        let dtype = args.hidden.dtype;
        let &[n, h] = args.hidden.shape else {
            return Err(Error::shape("hidden", "[N, H]".into(), args.hidden.shape));
        };
        if n == 0 {
            return Err(Error::Empty("hidden"));
        }
        if h == 0 {
            return Err(Error::shape("hidden", "[N, H] with H >= 1".into(), &[n, h]));
        }
        args.classifier.expect_dtype("classifier", dtype)?;
        let &[v, h2] = args.classifier.shape else {
            return Err(Error::shape(
                "classifier",
                "[V, H]".into(),
                args.classifier.shape,
            ));
        };
        if v == 0 {
            return Err(Error::Empty("classifier"));
        }
        if h2 != h {
            return Err(Error::shape(
                "classifier",
                format!("[V, {h}]"),
                args.classifier.shape,
            ));
        }
        if let Some(b) = args.bias {
            b.expect("bias", &[v], dtype)?;
        }
        args.target.expect("target", &[n], DType::I32)?;
        if let Some(w) = args.weight {
            w.expect("weight", &[v], DType::F32)?;
        }
        check_upstream(
            args.scalar_upstream,
            args.per_item_upstream,
            &[n],
            self.reduction,
        )?;
        Ok((n, h, v))
    }
}

/// The inputs of one call as [`LinearCrossEntropy::check`] sees them, on any backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args<'a> {
    pub hidden: Arg<'a>,
    pub classifier: Arg<'a>,
    pub bias: Option<Arg<'a>>,
    pub target: Arg<'a>,
    pub weight: Option<Arg<'a>>,
    pub scalar_upstream: Option<f32>,
    pub per_item_upstream: Option<Arg<'a>>,
}
