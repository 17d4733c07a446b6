//! Comparison of f32 results with the f64 reference, with stated tolerances.

use crate::core::DType;

/// Tolerance: `|got - want| <= atol * max|want| + rtol * |want|` elementwise, plus ½ ulp of
/// `written_as` when the values were rounded to a 16-bit type on output. The `atol` term is
/// relative to the array's largest magnitude, because f32 error in a row is set by the
/// row's scale, not by each element's own size.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Elementwise relative tolerance.
    pub rtol: f64,
    /// Tolerance relative to the largest reference magnitude (floored at `floor`).
    pub atol: f64,
    /// Smallest scale the `atol` term uses, so arrays of near-zeros are not held to zero.
    pub floor: f64,
    /// The type the values were written in: f16 and bf16 add the final rounding, ½ ulp at
    /// the element (`|g|·2⁻¹¹` for f16, `|g|·2⁻⁸` for bf16; subnormals by their absolute
    /// ulp), the rule of docs/LOSSES.md.
    pub written_as: DType,
}

impl Tolerance {
    /// The same tolerance for values written as `dtype`.
    pub fn written_as(self, dtype: DType) -> Self {
        Self {
            written_as: dtype,
            ..self
        }
    }

    /// ½ ulp of `written_as` at magnitude `m` (0 for f32, and for an infinite `m`: an
    /// overflow is matched exactly, never tolerated).
    fn rounding(&self, m: f64) -> f64 {
        if !m.is_finite() {
            return 0.0;
        }
        match self.written_as {
            DType::F16 => (m * 2f64.powi(-11)).max(2f64.powi(-25)),
            DType::BF16 => (m * 2f64.powi(-8)).max(2f64.powi(-134)),
            DType::F32 | DType::I32 => 0.0,
        }
    }

    /// `want` as written in `written_as`: past the type's range it is ±∞, which the written
    /// value must then equal.
    fn overflowed(&self, want: f64) -> Option<f64> {
        let rounded = self.written_as.round(want as f32) as f64;
        (rounded.is_infinite() && want.is_finite()).then_some(rounded)
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            rtol: 1e-4,
            atol: 1e-5,
            floor: 1e-6,
            written_as: DType::F32,
        }
    }
}

/// The outcome of comparing two arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest difference relative to the reference's largest magnitude.
    pub max_rel: f64,
    /// First index outside the tolerance, with (got, want).
    pub first_bad: Option<(usize, f32, f64)>,
}

impl Comparison {
    /// Whether every element is within the tolerance.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Compares `got` with `want`. NaN matches NaN only; a length mismatch is bad at the
/// shorter length.
pub fn compare(got: &[f32], want: &[f64], tol: Tolerance) -> Comparison {
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, w| m.max(w.abs()))
        .max(tol.floor);
    let mut max_abs = 0.0f64;
    let mut first_bad = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g64 = g as f64;
        let same_special = (g64.is_nan() && w.is_nan()) || (g64.is_infinite() && g64 == w);
        let d = (g64 - w).abs();
        let bound = tol.atol * scale + tol.rtol * w.abs() + tol.rounding(w.abs().max(g64.abs()));
        let overflow = tol.overflowed(w);
        let ok = match overflow {
            Some(inf) => g64 == inf,
            None => same_special || d <= bound,
        };
        // Matched specials and a matched overflow are exact, not an error to report.
        let exact = same_special || (ok && overflow.is_some());
        if !exact {
            max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
        }
        if !ok && first_bad.is_none() {
            first_bad = Some((i, g, w));
        }
    }
    if got.len() != want.len() && first_bad.is_none() {
        let i = got.len().min(want.len());
        first_bad = Some((i, f32::NAN, f64::NAN));
    }
    Comparison {
        max_abs,
        max_rel: max_abs / scale,
        first_bad,
    }
}
