//! Math shared by the CPU backend of every family (`losses/<family>/cpu.rs`): `exp` and `ln`
//! pieces without libm calls, so that the loops over them vectorize, and the fixed chunk size
//! that keeps results independent of the thread count; float slices of any element type.

use std::ops::Range;

use crate::core::{DType, Element};

/// Rows (or elements) per parallel task: large enough to amortize scheduling, fixed so that
/// partial sums, and so results, do not depend on the thread count.
pub(crate) const CHUNK_ELEMENTS: usize = 1 << 16;

/// exp for f32 without a libm call, so loops over it vectorize: 2^k · p(r) with
/// r = x − k·ln 2, |r| ≤ ln2/2, and a degree-6 Taylor polynomial (relative error < 2e-7 over
/// the normal range). Over the whole line as libm's: past ln(f32::MAX) it overflows to +∞,
/// below it goes through the subnormals to 0 (e^−∞ = 0), and NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
                                     // Beyond these the result is +∞ or 0 anyway; inside them k stays in [−159, 129].
    let x = x.clamp(-110.0, 89.0);
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's low mantissa bits hold k (t = 1.5·2^23 + k exactly), so 2^k is built with integer
    // operations that vectorize, where `k as i32` (saturating) would be a scalar loop. It is
    // built as two normal factors 2^k1·2^k2, so that 2^k past either end of the exponent
    // range rounds once, in the product, to ∞ or a subnormal.
    let k = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let k1 = k >> 1;
    let scale = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * scale(k1) * scale(k - k1)
}

/// ln(1 + e) for e in [0, 1] without a libm call, so loops over it vectorize:
/// 2·atanh(s) with s = e/(2 + e) ≤ 1/3, as an odd polynomial (relative error < 2e-7; it
/// holds for e down to 1/√2 − 1, as [`ln_pos`] uses it).
#[inline(always)]
pub(crate) fn ln_1p_unit(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let s2 = s * s;
    let p = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 / 13.0)))));
    2.0 * s * p
}

/// ln(x) for x > 0 without a libm call, so loops over it vectorize: x = 2^k·m with
/// m ∈ [√½, √2), ln x = k·ln 2 + ln(1 + (m − 1)) (m − 1 is exact). Subnormals are scaled up
/// first; +inf and NaN are returned as they are.
#[inline(always)]
pub(crate) fn ln_pos(x: f32) -> f32 {
    const SQRT_HALF: u32 = 0x3F35_04F3;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let tiny = x < f32::MIN_POSITIVE;
    let v = if tiny { x * 8_388_608.0 } else { x }; // · 2^23
                                                    // Shifting the bits by √½'s puts m's exponent (0 or −1) into k.
    let t = v.to_bits().wrapping_sub(SQRT_HALF);
    let k = (t as i32 >> 23) as f32 - if tiny { 23.0 } else { 0.0 };
    let m = f32::from_bits((t & 0x007F_FFFF).wrapping_add(SQRT_HALF));
    let ln = k * LN2_HI + (ln_1p_unit(m - 1.0) + k * LN2_LO);
    if x == f32::INFINITY || x.is_nan() {
        x
    } else {
        ln
    }
}

/// 1 − tanh²(v) without the cancellation of forming it from tanh(v) near ±1.
#[inline]
pub(crate) fn sech2(v: f32) -> f32 {
    let e = exp(-2.0 * v.abs());
    4.0 * e / ((1.0 + e) * (1.0 + e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let got = super::exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(super::exp(f32::NAN).is_nan());
        // The ends: up to f32::MAX and then ∞; subnormals down to 0.
        for x in [88.3f32, 88.5, 88.72, 88.7228] {
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        for x in [88.73f32, 89.0, 100.0, 1e30, f32::INFINITY] {
            assert_eq!(super::exp(x), f32::INFINITY, "exp({x})");
        }
        for x in [-88.0f32, -95.0, -103.0] {
            let (got, want) = (super::exp(x), (x as f64).exp() as f32);
            assert!(
                (got - want).abs() <= f32::from_bits(1),
                "exp({x}) = {got}, want {want}"
            );
        }
        for x in [-104.0f32, -120.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(super::exp(x), 0.0, "exp({x})");
        }
    }

    #[test]
    fn ln_pos_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = f32::from_bits(1); // the smallest subnormal
        while x < f32::MAX / 1.001 {
            let got = super::ln_pos(x) as f64;
            let want = (x as f64).ln();
            // Relative where ln x is far from 0, absolute (in units of x's ulp) near x = 1.
            worst = worst.max((got - want).abs() / want.abs().max(1.0));
            x *= 1.000_37;
            x = f32::from_bits(x.to_bits() + 1);
        }
        assert!(worst < 3e-7, "worst error {worst}");
        for x in [0.5f32, 1.0, 2.0, std::f32::consts::E, 1.0 - f32::EPSILON] {
            let want = (x as f64).ln();
            assert!((super::ln_pos(x) as f64 - want).abs() <= 1e-7 * want.abs().max(1e-7));
        }
        assert_eq!(super::ln_pos(1.0), 0.0);
        assert_eq!(super::ln_pos(f32::INFINITY), f32::INFINITY);
        assert!(super::ln_pos(f32::NAN).is_nan());
    }

    #[test]
    fn ln_1p_unit_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let e = i as f32 * 1e-6;
            let got = super::ln_1p_unit(e) as f64;
            let want = (e as f64).ln_1p();
            if want > 0.0 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(super::ln_1p_unit(0.0), 0.0);
        assert!(super::ln_1p_unit(f32::NAN).is_nan());
    }
}

/// A float slice of any element type, as the CPU loops read it: a block at a time, f32
/// where it lies and 16-bit types widened into a small buffer. One loop then serves every
/// type without a copy of the loop per type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Floats<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    BF16(&'a [half::bf16]),
}

impl<'a> Floats<'a> {
    pub(crate) fn of<T: Element>(v: &'a [T]) -> Self {
        match T::DTYPE {
            DType::F16 => Floats::F16(bytemuck::cast_slice(v)),
            DType::BF16 => Floats::BF16(bytemuck::cast_slice(v)),
            _ => Floats::F32(bytemuck::cast_slice(v)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Floats::F32(v) => v.len(),
            Floats::F16(v) => v.len(),
            Floats::BF16(v) => v.len(),
        }
    }

    /// Element `k` as f32.
    #[inline(always)]
    pub(crate) fn get(&self, k: usize) -> f32 {
        match self {
            Floats::F32(v) => v[k],
            Floats::F16(v) => v[k].to_f32(),
            Floats::BF16(v) => v[k].to_f32(),
        }
    }

    /// Every element as f32, in a new vector.
    pub(crate) fn to_vec(self) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        match self {
            Floats::F32(v) => out.copy_from_slice(v),
            Floats::F16(v) => Element::widen(v, &mut out),
            Floats::BF16(v) => Element::widen(v, &mut out),
        }
        out
    }

    /// Elements `at` as f32: borrowed, or widened into `buf` (at least as long).
    #[inline(always)]
    pub(crate) fn block<'b>(&'b self, at: Range<usize>, buf: &'b mut [f32]) -> &'b [f32] {
        let buf = &mut buf[..at.len()];
        match self {
            Floats::F32(v) => return &v[at],
            Floats::F16(v) => Element::widen(&v[at], buf),
            Floats::BF16(v) => Element::widen(&v[at], buf),
        }
        buf
    }
}

/// A mutable float slice of any element type (gradients), written a block at a time.
#[derive(Debug)]
pub(crate) enum FloatsMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [half::f16]),
    BF16(&'a mut [half::bf16]),
}

impl<'a> FloatsMut<'a> {
    pub(crate) fn of<T: Element>(v: &'a mut [T]) -> Self {
        match T::DTYPE {
            DType::F16 => FloatsMut::F16(bytemuck::cast_slice_mut(v)),
            DType::BF16 => FloatsMut::BF16(bytemuck::cast_slice_mut(v)),
            _ => FloatsMut::F32(bytemuck::cast_slice_mut(v)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            FloatsMut::F32(v) => v.len(),
            FloatsMut::F16(v) => v.len(),
            FloatsMut::BF16(v) => v.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consecutive pieces of `len` elements (`count` empty pieces when empty).
    pub(crate) fn pieces(self, len: usize, count: usize) -> Vec<FloatsMut<'a>> {
        fn split<T>(v: &mut [T], len: usize, count: usize) -> Vec<&mut [T]> {
            if v.is_empty() {
                return (0..count).map(|_| &mut [][..]).collect();
            }
            v.chunks_mut(len).collect()
        }
        match self {
            FloatsMut::F32(v) => split(v, len, count)
                .into_iter()
                .map(FloatsMut::F32)
                .collect(),
            FloatsMut::F16(v) => split(v, len, count)
                .into_iter()
                .map(FloatsMut::F16)
                .collect(),
            FloatsMut::BF16(v) => split(v, len, count)
                .into_iter()
                .map(FloatsMut::BF16)
                .collect(),
        }
    }

    /// Writes `f(k)` for k in 0..`at.len()` to elements `at`: directly into f32, through
    /// `buf` (at least as long) and a narrowing for 16-bit types.
    #[inline(always)]
    pub(crate) fn write(&mut self, at: Range<usize>, buf: &mut [f32], f: impl Fn(usize) -> f32) {
        let fill = |out: &mut [f32]| {
            for (k, o) in out.iter_mut().enumerate() {
                *o = f(k);
            }
        };
        let buf = &mut buf[..at.len()];
        match self {
            FloatsMut::F32(v) => fill(&mut v[at]),
            FloatsMut::F16(v) => {
                fill(buf);
                Element::narrow(buf, &mut v[at]);
            }
            FloatsMut::BF16(v) => {
                fill(buf);
                Element::narrow(buf, &mut v[at]);
            }
        }
    }
}
