// Shared numerics. Prepended to every kernel by `shader::compose`.

const F32_LOWEST: f32 = -3.40282347e38;

// NaN by its bits: compilers that assume no NaN (Mesa's GLSL path) may fold a float
// comparison such as v != v, or a select on v < 0.0 into max, but not integer tests.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// max(0, v) that keeps NaN on every backend (see is_nan).
fn relu(v: f32) -> f32 {
    return select(max(v, 0.0), v, is_nan(v));
}

// Running log-sum-exp state: x = running max, y = sum of exp(v - max).
// One exp per element: the smaller of (max, v) is scaled into the larger.
// A NaN input makes the sum NaN and so propagates to the row's result.
fn lse_push(st: vec2<f32>, v: f32) -> vec2<f32> {
    let d = v - st.x;
    let e = exp(-abs(d));
    let bigger = d > 0.0;
    return vec2<f32>(select(st.x, v, bigger), select(st.y + e, st.y * e + 1.0, bigger));
}

// log Σ e^v from a running state, for a softmax over a row. A +∞ entry makes it NaN: PyTorch's
// max-shifted softmax is NaN over the whole row then (∞ − ∞), where the online state alone
// would leave the other entries at probability 0 and a result silently finite.
fn softmax_normalizer(st: vec2<f32>) -> f32 {
    let norm = st.x + log(st.y);
    if (norm > 3.40282347e38) {
        return bitcast<f32>(0x7fc00000u); // NaN
    }
    return norm;
}

// Merges two running log-sum-exp states.
fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// tanh that never overflows: some drivers evaluate tanh through exp(2v) and return NaN for
// large |v|; beyond |v| = 10 tanh is ±1 in f32. NaN stays NaN, tested by its bits: Mesa's
// GL path clamps tanh's argument (tanh(NaN) = ±1 there) and may fold the comparison.
fn safe_tanh(v: f32) -> f32 {
    return select(select(tanh(v), sign(v), abs(v) >= 10.0), v, is_nan(v));
}

// 1 - exp(v) for v <= 0, without cancellation near 0 (WGSL has no expm1).
fn one_minus_exp(v: f32) -> f32 {
    if (v > -0.01) {
        return -v * (1.0 + v * (0.5 + v * (1.0 / 6.0 + v / 24.0)));
    }
    return 1.0 - exp(v);
}

// 1 - tanh²(v), without the cancellation of forming it from tanh(v) near ±1.
fn sech2(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return 4.0 * e / ((1.0 + e) * (1.0 + e));
}

// Linear workgroup index of a 1-D launch spread over a 2-D grid (past 65,535 workgroups).
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// log(1 + z) for z in [0, 1], accurate for small z.
fn log1p_small(z: f32) -> f32 {
    let u = 1.0 + z;
    if (u == 1.0) {
        return z;
    }
    return log(u) * z / (u - 1.0);
}

// The logistic pieces of x from one exp: sigmoid(x), sigmoid(-x) and softplus(-x) =
// log(1 + e^-x), all stable for either sign.
struct Logistic {
    p: f32,
    q: f32,
    softplus_neg: f32,
}

fn logistic(x: f32) -> Logistic {
    let e = exp(-abs(x));
    let r = 1.0 / (1.0 + e);
    return Logistic(
        select(e * r, r, x >= 0.0),
        select(r, e * r, x >= 0.0),
        log1p_small(e) + max(-x, 0.0),
    );
}
