// 16-bit floats packed in pairs in u32 words (element 2i in the low half of word i), widened
// and narrowed with integer arithmetic: exact widening and round-to-nearest-even narrowing
// on every adapter, where WGSL leaves `pack2x16float`'s rounding and overflow to the
// implementation. bf16 is the top half of an f32; f16 is IEEE binary16.

fn bf16_to_f32(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

fn f32_to_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    // Ties to even; a carry out of the mantissa rounds up the exponent (to ∞ past the max).
    let rounded = (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
    // NaN stays a (quiet) NaN. Selects, not branches: SIMD adapters run both sides anyway.
    return select(rounded, (b >> 16u) | 0x40u, (b & 0x7fffffffu) > 0x7f800000u);
}

fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    let normal = ((e + 112u) << 23u) | (m << 13u);
    // Zero or subnormal: m·2⁻²⁴, a normal f32.
    let subnormal = bitcast<u32>(f32(m) * 5.9604644775390625e-8);
    let special = 0x7f800000u | (m << 13u); // ∞ or NaN
    var w = select(normal, subnormal, e == 0u);
    w = select(w, special, e == 31u);
    return bitcast<f32>(sign | w);
}

fn f32_to_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    // Normal: rebias the exponent (127 → 15), round the 13 dropped bits to even (a carry
    // rounds up the exponent).
    let r = a - 0x38000000u;
    let normal = (r + 0xfffu + ((r >> 13u) & 1u)) >> 13u;
    // Subnormal (or zero): |x|·2²⁴ is exact; `round` ties to even; 1024 is the smallest normal.
    let subnormal = u32(round(abs(x) * 16777216.0));
    var h = select(subnormal, normal, a >= 0x38800000u);
    h = select(h, 0x7c00u, a >= 0x477ff000u); // 65520 and above round to ∞
    h = select(h, 0x7e00u | ((a >> 13u) & 0x3ffu), a > 0x7f800000u); // NaN stays a NaN
    return sign | h;
}
