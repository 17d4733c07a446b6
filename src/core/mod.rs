//! What every loss and every backend shares, with no GPU in sight: the reduction, the upstream
//! gradient, host results, element types, option and shape checks, the f64 reference's
//! reduction helpers and the CPU backend's vectorizable math.

pub(crate) mod cpu_math;
pub(crate) mod reference;

use std::str::FromStr;

use crate::error::{Error, Result};

/// How per-item losses are combined (PyTorch's `reduction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Per-item losses.
    None,
    /// Sum of the per-item losses.
    Sum,
    /// Mean (weighted, where the loss defines weights).
    #[default]
    Mean,
    /// Sum divided by the batch size (the first dimension); `kl-div` only, as in PyTorch.
    BatchMean,
}

impl FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Reduction::None),
            "sum" => Ok(Reduction::Sum),
            "mean" => Ok(Reduction::Mean),
            "batchmean" => Ok(Reduction::BatchMean),
            _ => Err(Error::Option {
                option: "reduction",
                value: s.into(),
                reason: "expected none, sum, mean (or batchmean for kl-div)",
            }),
        }
    }
}

/// The gradient flowing into the loss from above (PyTorch's `grad_output`), for any backend:
/// `T` is [`crate::Tensor`] on the GPU and `[f32]` on the CPU.
#[derive(Debug, Default)]
pub enum Upstream<'a, T: ?Sized> {
    /// 1 for a reduced loss, ones for `Reduction::None`.
    #[default]
    Ones,
    /// A scalar for every item.
    Scalar(f32),
    /// One value per item; only with `Reduction::None`.
    PerItem(&'a T),
}

impl<T: ?Sized> Clone for Upstream<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for Upstream<'_, T> {}

/// The extent of an input on any backend, for error messages: a tensor's shape, a host
/// slice's length.
pub trait Dims {
    /// Outermost first.
    fn dims(&self) -> Vec<usize>;
}

impl Dims for [f32] {
    fn dims(&self) -> Vec<usize> {
        vec![self.len()]
    }
}

impl<'a, T: ?Sized + Dims> Upstream<'a, T> {
    /// The scalar of a loss that is always a mean (ones: 1).
    ///
    /// # Errors
    /// [`Error::Option`] for a scalar that is not finite (the rule of [`check_upstream`]);
    /// [`Error::Shape`] for per-item values.
    pub(crate) fn scalar(&self) -> Result<f32> {
        match self {
            Upstream::Ones => Ok(1.0),
            Upstream::Scalar(g) => finite("grad_output", *g).map(|()| *g),
            Upstream::PerItem(t) => Err(Error::shape(
                "grad_output",
                "a scalar (the loss is a mean)".into(),
                &t.dims(),
            )),
        }
    }
}

impl<'a, T: ?Sized> Upstream<'a, T> {
    /// The scalar, or the per-item values seen through `arg`, for the input checks.
    pub(crate) fn split<A>(&self, arg: impl FnOnce(&'a T) -> A) -> (Option<f32>, Option<A>) {
        match *self {
            Upstream::Ones => (None, None),
            Upstream::Scalar(g) => (Some(g), None),
            Upstream::PerItem(g) => (None, Some(arg(g))),
        }
    }
}

impl<'a> Upstream<'a, [f32]> {
    /// The values as the CPU kernels read them: none (ones), one (a scalar) or one per item.
    pub(crate) fn values(&self) -> std::borrow::Cow<'a, [f32]> {
        match *self {
            Upstream::Ones => std::borrow::Cow::Borrowed(&[]),
            Upstream::Scalar(g) => std::borrow::Cow::Owned(vec![g]),
            Upstream::PerItem(v) => std::borrow::Cow::Borrowed(v),
        }
    }
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit signed integer (class indices, labels).
    I32,
    /// IEEE binary16 (half precision).
    F16,
    /// bfloat16: the top 16 bits of an f32.
    BF16,
}

impl DType {
    /// Lower-case name, as in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Whether this is a floating-point type (what a differentiable input may be).
    pub fn is_float(self) -> bool {
        self != DType::I32
    }

    /// Rounds `x` to this float type (to nearest, ties to even) and widens it back: the
    /// value a tensor of this type holds. Identity for f32.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
            DType::F32 | DType::I32 => x,
        }
    }
}

impl FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            _ => Err(Error::Option {
                option: "dtype",
                value: s.into(),
                reason: "expected f32, f16 or bf16",
            }),
        }
    }
}

/// A float element type the losses read and write: `f32`, [`half::f16`] or [`half::bf16`].
/// Arithmetic is f32 whatever the type; 16-bit values widen exactly and narrow to nearest,
/// ties to even.
pub trait Element: Copy + Send + Sync + bytemuck::Pod + 'static {
    /// The tensor type of this element.
    const DTYPE: DType;
    /// Exact widening.
    fn to_f32(self) -> f32;
    /// Rounding to nearest, ties to even.
    fn from_f32(x: f32) -> Self;
    /// The slice itself when the type is f32 (the CPU kernels then read it in place).
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
    /// As [`Element::as_f32`], mutable.
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]>;
    /// Widens `src` into `dst` (of the same length).
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// Narrows `src` into `dst` (of the same length), to nearest, ties to even.
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(s);
        }
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn as_f32(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        Some(values)
    }
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    // The half crate's slice conversions use the CPU's conversion instructions (F16C)
    // where it has them.
    fn widen(src: &[Self], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(dst, src);
    }
}

impl Element for half::bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    // Bit operations without a branch, so the loops vectorize (the same rule as
    // `shaders/common/half.wgsl`).
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            let b = s.to_bits();
            let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
            let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
            let h = if nan { (b >> 16) | 0x40 } else { rounded };
            *d = half::bf16::from_bits(h as u16);
        }
    }
}

/// `values` as f32: borrowed when they are f32, else widened (exactly) into a copy.
pub(crate) fn widened<T: Element>(values: &[T]) -> std::borrow::Cow<'_, [f32]> {
    match T::as_f32(values) {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => values.iter().map(|v| v.to_f32()).collect(),
    }
}

/// The gradients of `out` as written in `dtype`: each value rounded to it (to nearest,
/// ties to even), as a kernel that writes `dtype` stores them.
pub(crate) fn written_as(mut out: LossValues, dtype: DType) -> LossValues {
    if dtype != DType::F32 {
        for (_, g) in &mut out.grads {
            g.iter_mut().for_each(|v| *v = dtype.round(*v));
        }
    }
    out
}

/// Host results of one loss call, on any backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LossValues {
    /// One value for mean and sum, one per item for `Reduction::None`.
    pub loss: Vec<f32>,
    /// Gradient of each differentiable input, by input name.
    pub grads: Vec<(&'static str, Vec<f32>)>,
    /// Per-row statistics a loss reports beside its loss, by name (the fused linear loss's
    /// `lse` and `correct` when asked for); empty for the others.
    pub rows: Vec<(&'static str, Vec<f32>)>,
}

impl LossValues {
    /// The gradient of the input called `name`.
    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        self.grads
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, g)| g.as_slice())
    }
}

/// `Err` unless `value` is finite.
pub(crate) fn finite(option: &'static str, value: f32) -> Result<()> {
    check_option(option, value, true, "must be finite")
}

/// `Err` naming `option` unless `ok` holds and `value` is finite.
pub(crate) fn check_option(
    option: &'static str,
    value: f32,
    ok: bool,
    reason: &'static str,
) -> Result<()> {
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
pub(crate) fn non_negative(name: &'static str, value: f32) -> Result<()> {
    check_option(name, value, value >= 0.0, "must be finite and >= 0")
}

/// `Err` unless the `grad_dtype` option, if set, is a float type.
pub(crate) fn check_grad_dtype(dtype: Option<DType>) -> Result<()> {
    match dtype {
        Some(d) if !d.is_float() => Err(Error::Option {
            option: "grad_dtype",
            value: d.name().into(),
            reason: "must be f32, f16 or bf16",
        }),
        _ => Ok(()),
    }
}

/// `Err` for `BatchMean`, which only kl-div defines.
pub(crate) fn per_item_reduction(r: Reduction) -> Result<()> {
    if r == Reduction::BatchMean {
        return Err(Error::Option {
            option: "reduction",
            value: "batchmean".into(),
            reason: "batchmean is for kl-div; use none, sum or mean",
        });
    }
    Ok(())
}

/// The bytes of an array of `shape` and `dtype`, rounded up to whole 4-byte words (what a
/// buffer holding it needs), computed with overflow checks.
///
/// # Errors
/// [`Error::Shape`] naming `input` when the element count or the byte count overflows.
pub(crate) fn typed_bytes(input: &'static str, shape: &[usize], dtype: DType) -> Result<u64> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| u64::try_from(n).ok()?.checked_mul(dtype.size()))
        .and_then(|b| b.checked_next_multiple_of(4))
        .ok_or_else(|| Error::shape(input, "a shape whose size fits in 64 bits".into(), shape))
}

/// One input as the checks see it on every backend: its shape and element type. The GPU
/// builds it from a tensor, the CPU backend from a slice ([`host_shape`]), the command line
/// from a host array; each family's rules over these are written once, in its `mod.rs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arg<'a> {
    pub shape: &'a [usize],
    pub dtype: DType,
}

impl<'a> Arg<'a> {
    /// An f32 input of `shape`.
    pub(crate) fn f32(shape: &'a [usize]) -> Self {
        Self {
            shape,
            dtype: DType::F32,
        }
    }

    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// `Err` naming `input` unless it is of `dtype`.
    pub(crate) fn expect_dtype(&self, input: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::DType {
                input,
                expected: dtype.name(),
                got: self.dtype.name(),
            });
        }
        Ok(())
    }

    /// `Err` naming `input` unless it is a float type (f32, f16 or bf16): the rule for
    /// every differentiable input.
    pub(crate) fn expect_float(&self, input: &'static str) -> Result<()> {
        if !self.dtype.is_float() {
            return Err(Error::DType {
                input,
                expected: "f32, f16 or bf16",
                got: self.dtype.name(),
            });
        }
        Ok(())
    }

    /// `Err` naming `input` unless it is of `dtype` and exactly `shape`.
    pub(crate) fn expect(&self, input: &'static str, shape: &[usize], dtype: DType) -> Result<()> {
        self.expect_dtype(input, dtype)?;
        check_shape(input, self.shape, shape)
    }
}

impl Dims for Arg<'_> {
    fn dims(&self) -> Vec<usize> {
        self.shape.to_vec()
    }
}

/// The shape a flat host slice of `len` values is checked with: `like` when it has that many
/// elements, else `[len]` (which then fails the comparison, naming the length).
pub(crate) fn host_shape(len: usize, like: &[usize]) -> Vec<usize> {
    if like.iter().product::<usize>() == len {
        like.to_vec()
    } else {
        vec![len]
    }
}

/// The rule for the upstream gradient of every loss: a finite scalar, or (with reduction
/// none) one f32 value per item of `items`.
pub(crate) fn check_upstream(
    scalar: Option<f32>,
    per_item: Option<Arg<'_>>,
    items: &[usize],
    reduction: Reduction,
) -> Result<()> {
    if let Some(g) = scalar {
        finite("grad_output", g)?;
    }
    if let Some(g) = per_item {
        if reduction != Reduction::None {
            return Err(Error::Option {
                option: "grad_output",
                value: format!("{:?}", g.shape),
                reason: "a per-item upstream gradient needs reduction none",
            });
        }
        g.expect("grad_output", items, DType::F32)?;
    }
    Ok(())
}

/// The metric losses' rule for their row inputs: each `[N, D]` of one float type (f32, f16
/// or bf16), all of one shape, with N ≥ 1 and D ≥ 1. Gives (N, D).
///
/// # Errors
/// [`Error::Shape`], [`Error::Empty`] or [`Error::DType`] naming the input.
pub(crate) fn check_rows(rows: &[(&'static str, Arg<'_>)]) -> Result<(usize, usize)> {
    let (first, arg) = rows[0];
    let &[n, dim] = arg.shape else {
        return Err(Error::shape(first, "[N, D]".into(), arg.shape));
    };
    if n == 0 {
        return Err(Error::Empty(first));
    }
    if dim == 0 {
        return Err(Error::shape(first, "[N, D] with D >= 1".into(), arg.shape));
    }
    arg.expect_float(first)?;
    for &(name, r) in rows {
        r.expect_dtype(name, arg.dtype)?;
        if r.shape != arg.shape {
            return Err(Error::shape(
                name,
                format!("{:?} like {first}", arg.shape),
                r.shape,
            ));
        }
    }
    Ok((n, dim))
}

/// The shape a flat host slice of rows of `dim` values is checked with: `[len / dim, dim]`
/// when it holds whole rows, else `[len]`.
pub(crate) fn host_rows(len: usize, dim: usize) -> Vec<usize> {
    if dim > 0 && len.is_multiple_of(dim) {
        vec![len / dim, dim]
    } else {
        vec![len]
    }
}

/// An input the loss does not take.
pub(crate) fn unused(input: &'static str) -> Error {
    Error::Shape {
        input,
        expected: "nothing: this loss takes no such input".into(),
        got: vec![],
    }
}

/// `Err` unless `got` is exactly `shape`.
pub(crate) fn check_shape(input: &'static str, got: &[usize], shape: &[usize]) -> Result<()> {
    if got != shape {
        return Err(Error::shape(input, format!("{shape:?}"), got));
    }
    Ok(())
}
