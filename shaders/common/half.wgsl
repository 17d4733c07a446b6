// 16-bit floats packed in pairs in u32 words (element 2i in the low half of word i), widened
// and narrowed with integer arithmetic: exact widening and round-to-nearest-even narrowing
// on every adapter, where WGSL leaves `pack2x16float`'s rounding and overflow to the
// implementation. bf16 is the top half of an f32; f16 is IEEE binary16.

fn bf16_to_f32(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

fn f32_to_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u; // NaN stays a (quiet) NaN
    }
    // Ties to even; a carry out of the mantissa rounds up the exponent (to ∞ past the max).
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m·2⁻²⁴, a normal f32.
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn f32_to_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u | ((a >> 13u) & 0x3ffu); // NaN stays a (quiet) NaN
    }
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u; // 65520 and above round to ∞
    }
    if (a >= 0x38800000u) {
        // Normal: rebias the exponent (127 → 15), round the 13 dropped bits to even.
        let r = a - 0x38000000u;
        return sign | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);
    }
    // Subnormal (or zero): |x|·2²⁴ is exact; `round` ties to even; 1024 is the smallest normal.
    return sign | u32(round(abs(x) * 16777216.0));
}
