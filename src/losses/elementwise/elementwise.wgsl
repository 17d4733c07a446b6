// Elementwise losses, forward and backward in one pass (semantics: docs/LOSSES.md).
//
// Each loss is one function returning its term and derivatives, selected by the LOSS
// override. Every invocation handles ITEMS elements of its workgroup's block; the gradient
// is written directly (its scale is known before the launch), and per-element losses go
// either to `out` (reduction none) or into one partial sum per workgroup that `reduce.wgsl`'s
// `finish` adds in a fixed order.

override WG_SIZE: u32 = 256u;
override ITEMS: u32 = 4u;
override TEAM: u32 = 8u;
override LOSS: u32 = 0u;
// Specialization: each pipeline carries only the work its inputs and reduction need.
override PER_ELEMENT_OUT: bool = false;      // write per-element losses (reduction none)
override UPSTREAM_PER_ELEMENT: bool = false;
override C_PER_CLASS: bool = false;          // in_c is indexed by the last dimension
override C_PER_ITEM: bool = false;           // in_c holds one value per item (gaussian NLL's var)
override HAS_C: bool = false;
override HAS_D: bool = false;
override WANT_GRAD: bool = true;

struct Params {
    len: u32,        // elements in this window
    base: u32,       // global index of the window's first element
    inner: u32,      // size of the broadcast (last) dimension, for per-class inputs
    scale: f32,      // gradient scale: upstream / denominator
    p0: f32,         // loss parameter (delta, beta, alpha, margin, q)
    p1: f32,         // second loss parameter (gamma)
    group_base: u32, // index of this window's first partial sum
    c_base: u32,     // per-item in_c: the item at its binding's start
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1 (in_a: the differentiable input), 2 (in_b: target or x2), 6 (grad_a) and
// 7 (grad_b) come from the I/O header (`header` in gpu.rs): f32 or vec4<f32>
// arrays, read and written LANES elements at a time through load_a/load_b/store_ga/store_gb.
@group(0) @binding(3) var<storage, read> in_c: array<f32>;   // y (margin-ranking), weight or var
@group(0) @binding(4) var<storage, read> in_d: array<f32>;   // pos_weight, per class
@group(0) @binding(5) var<storage, read> upstream: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
// status[0] = 0xffffffff - (first element whose label is outside its allowed set), else 0.
@group(0) @binding(9) var<storage, read_write> status: array<atomic<u32>>;


// A loss term: x = loss, y = d/da, z = d/db.
alias Term = vec3<f32>;

// The term ids (MSE, L1, … SIGMOID_FOCAL) are generated from `Term` in mod.rs.

// sign with sign(0) = 0, as torch.sign.
fn sgn(d: f32) -> f32 {
    return select(select(0.0, -1.0, d < 0.0), 1.0, d > 0.0);
}

fn mse(x: f32, y: f32) -> Term {
    let d = x - y;
    return Term(d * d, 2.0 * d, 0.0);
}

fn l1(x: f32, y: f32) -> Term {
    let d = x - y;
    return Term(abs(d), sgn(d), 0.0);
}

// A NaN difference fails the test and takes the quadratic side: NaN loss and gradient,
// as PyTorch.
fn huber(x: f32, y: f32, delta: f32) -> Term {
    let d = x - y;
    if (abs(d) >= delta) {
        return Term(delta * (abs(d) - 0.5 * delta), delta * sgn(d), 0.0);
    }
    return Term(0.5 * d * d, d, 0.0);
}

fn smooth_l1(x: f32, y: f32, beta: f32) -> Term {
    let d = x - y;
    if (abs(d) >= beta) {
        return Term(abs(d) - 0.5 * beta, sgn(d), 0.0);
    }
    return Term(0.5 * d * d / beta, d / beta, 0.0);
}

// input x is a log-probability; target y a probability (0 contributes 0).
// 0 where y <= 0; a NaN target propagates, as PyTorch's xlogy (tested by its bits: see
// is_nan).
fn kl_div(x: f32, y: f32) -> Term {
    if (is_nan(y)) {
        return Term(y, y, 0.0);
    }
    if (y > 0.0) {
        return Term(y * (log(y) - x), -y, 0.0);
    }
    return Term(0.0, 0.0, 0.0);
}

// target y is a log-probability.
fn kl_div_log_target(x: f32, y: f32) -> Term {
    let e = exp(y);
    return Term(e * (y - x), -e, 0.0);
}

// max(0, m) as PyTorch's clamp_min: a NaN m stays the loss, with a zero
// gradient (clamp's backward mask is false at NaN).
fn hinge(x: f32, y: f32) -> Term {
    let m = 1.0 - y * x;
    if (is_nan(m)) {
        return Term(m, 0.0, 0.0);
    }
    if (m > 0.0) {
        return Term(m, -y, 0.0);
    }
    return Term(0.0, 0.0, 0.0);
}

fn margin_ranking(x1: f32, x2: f32, y: f32, margin: f32) -> Term {
    let m = -y * (x1 - x2) + margin;
    if (is_nan(m)) {
        return Term(m, 0.0, 0.0);
    }
    if (m > 0.0) {
        return Term(m, -y, y);
    }
    return Term(0.0, 0.0, 0.0);
}

// w·[(1 - y)·x + (1 + (pw - 1)·y)·softplus(-x)]; w and pw are applied by the caller.
fn bce_with_logits(x: f32, y: f32, pw: f32) -> Term {
    let s = logistic(x);
    let lw = 1.0 + (pw - 1.0) * y;
    return Term((1.0 - y) * x + lw * s.softplus_neg, (1.0 - y) - lw * s.q, 0.0);
}

// x^e as C's pow: whole exponents take negative bases (targets outside [0, 1] make
// 1 - p_t negative, and torch's (1 - p_t) ** 2 is then still defined); 0^0 = 1.
fn real_pow(x: f32, e: f32) -> f32 {
    if (e == 0.0) {
        return 1.0;
    }
    let r = pow(abs(x), e);
    if (x < 0.0) {
        if (e != floor(e)) {
            return bitcast<f32>(0x7fc00000u); // NaN, as C's pow
        }
        let odd = (e * 0.5) != floor(e * 0.5);
        return select(r, -r, odd);
    }
    return r;
}

// torchvision.ops.sigmoid_focal_loss: ce·(1 - p_t)^γ, times α_t when α >= 0.
fn sigmoid_focal(x: f32, y: f32, alpha: f32, gamma: f32) -> Term {
    let s = logistic(x);
    let ce = (1.0 - y) * x + s.softplus_neg;
    let dce = s.p - y;
    // 1 - p_t = p·(1 - y) + (1 - p)·y, formed from p and q = 1 - p.
    let m = s.p * (1.0 - y) + s.q * y;
    var f = 1.0;
    var df = 0.0; // d(m^γ)/dx = γ·m^(γ-1)·dm/dx, dm/dx = p·q·(1 - 2y)
    if (gamma != 0.0) {
        f = real_pow(m, gamma);
        if (m != 0.0) {
            df = gamma * (f / m) * s.p * s.q * (1.0 - 2.0 * y); // m^(γ-1) = m^γ / m: one pow
        }
    }
    var a = 1.0;
    if (alpha >= 0.0) {
        a = alpha * y + (1.0 - alpha) * (1.0 - y);
    }
    return Term(a * ce * f, a * (dce * f + ce * df), 0.0);
}

// Pinball loss with d = y - x: q·d where d > 0, (q - 1)·d elsewhere (a NaN d takes the
// second side: NaN loss). d/dx = -q where d > 0, 1 - q where d < 0, 0 at d = 0.
fn quantile(x: f32, y: f32, q: f32) -> Term {
    let d = y - x;
    let g = select(select(0.0, 1.0 - q, d < 0.0), -q, d > 0.0);
    return Term(select((q - 1.0) * d, q * d, d > 0.0), g, 0.0);
}

// |d|^p with d = x - y, p >= 1: gradient p·|d|^(p-1)·sign(d), 0 at d = 0, ±∞ (p > 1) or
// ±1 (p = 1) at d = ±∞, NaN for a NaN d (the one value for which `a >= 0` is false).
fn power(x: f32, y: f32, p: f32) -> Term {
    let d = x - y;
    let a = abs(d);
    let zero = a == 0.0;
    // |d|^(p-1); pow is exp2((p-1)·log2 a) in WGSL, NaN at a = ∞ for p = 1: say 1 there.
    let lower = select(select(pow(a, p - 1.0), 1.0, p == 1.0), 0.0, zero);
    let g = select(p * lower * select(-1.0, 1.0, d > 0.0), 0.0, zero);
    return Term(a * lower, select(d, g, a >= 0.0), 0.0);
}

// log(1 + exp(-y·x)) for y = ±1: softplus(-y·x), gradient -y·σ(-y·x).
fn soft_margin(x: f32, y: f32) -> Term {
    let s = logistic(y * x);
    return Term(s.softplus_neg, -y * s.q, 0.0);
}

// x where y = 1; max(0, margin - x) where y = -1, with a gradient only where margin - x > 0
// (PyTorch's in-place clamp_min_ passes none at 0; a NaN stays the loss, gradient 0).
fn hinge_embedding(x: f32, y: f32, margin: f32) -> Term {
    if (y == 1.0) {
        return Term(x, 1.0, 0.0);
    }
    let m = margin - x;
    return Term(relu(m), select(0.0, -1.0, m > 0.0), 0.0);
}

// Stirling's y·log y − y + ½·log(2πy) where y > 1, else 0 (`full`).
fn stirling(y: f32) -> f32 {
    if (y > 1.0) {
        return y * log(y) - y + 0.5 * log(6.2831853071795864 * y);
    }
    return 0.0;
}

// e^x − y·x (x is the log of the rate).
fn poisson_nll_log(x: f32, y: f32, full: bool) -> Term {
    let e = exp(x);
    return Term(e - y * x + select(0.0, stirling(y), full), e - y, 0.0);
}

// x − y·log(x + eps).
fn poisson_nll(x: f32, y: f32, eps: f32, full: bool) -> Term {
    return Term(x - y * log(x + eps) + select(0.0, stirling(y), full), 1.0 - y / (x + eps), 0.0);
}

// BCE on a probability p (checked to be in [0, 1]): logs clamped at -100, the gradient's
// denominator at 1e-12, as PyTorch's forward and backward.
fn bce(p: f32, y: f32) -> Term {
    let lp = max(log(p), -100.0);
    let lq = max(log(1.0 - p), -100.0);
    return Term(-(y * lp + (1.0 - y) * lq), (p - y) / max((1.0 - p) * p, 1e-12), 0.0);
}

// ½·(log v + d²/v) with v = max(var, eps); ∂/∂var passes through the clamp (PyTorch clamps
// under no_grad).
fn gaussian_nll(x: f32, y: f32, variance: f32, eps: f32, full: bool) -> Term {
    let v = max(variance, eps);
    let d = x - y;
    let r = d / v;
    var l = 0.5 * (log(v) + d * r);
    if (full) {
        l += 0.9189385332046727; // ½·log 2π
    }
    return Term(l, r, 0.5 * (1.0 - d * r) / v);
}

// BCE's probabilities must be in [0, 1] (NaN is not).
fn check_probability(i: u32, p: f32) {
    if (!(p >= 0.0 && p <= 1.0)) {
        atomicMax(&status[0], 0xffffffffu - (params.base + i));
    }
}

fn term(x: f32, y: f32, i: u32, g: u32) -> Term {
    switch LOSS {
        case MSE: { return mse(x, y); }
        case L1: { return l1(x, y); }
        case HUBER: { return huber(x, y, params.p0); }
        case SMOOTH_L1: { return smooth_l1(x, y, params.p0); }
        case KL_DIV: { return kl_div(x, y); }
        case KL_DIV_LOG_TARGET: { return kl_div_log_target(x, y); }
        case HINGE: {
            check_label(i, y);
            return hinge(x, y);
        }
        case MARGIN_RANKING: {
            let label = in_c[i];
            check_label(i, label);
            return margin_ranking(x, y, label, params.p0);
        }
        case BCE_WITH_LOGITS: {
            var pw = 1.0;
            if (HAS_D) {
                pw = in_d[g % params.inner];
            }
            var w = 1.0;
            if (HAS_C) {
                w = in_c[select(i, g % params.inner, C_PER_CLASS)];
            }
            return w * bce_with_logits(x, y, pw);
        }
        case BCE: {
            check_probability(i, x);
            var w = 1.0;
            if (HAS_C) {
                w = in_c[select(i, g % params.inner, C_PER_CLASS)];
            }
            return w * bce(x, y);
        }
        case SIGMOID_FOCAL: { return sigmoid_focal(x, y, params.p0, params.p1); }
        case QUANTILE: { return quantile(x, y, params.p0); }
        case POWER: { return power(x, y, params.p0); }
        case SOFT_MARGIN: {
            check_label(i, y);
            return soft_margin(x, y);
        }
        case HINGE_EMBEDDING: {
            check_label(i, y);
            return hinge_embedding(x, y, params.p0);
        }
        case POISSON_NLL_LOG: { return poisson_nll_log(x, y, params.p1 != 0.0); }
        case POISSON_NLL: { return poisson_nll(x, y, params.p0, params.p1 != 0.0); }
        case GAUSSIAN_NLL: {
            // Element i's variance, and its index in the whole var tensor.
            var k = i;
            var at = g;
            if (C_PER_ITEM) {
                at = g / params.inner;
                k = at - params.c_base;
            }
            let v = in_c[k];
            if (v < 0.0) {
                atomicMax(&status[0], 0xffffffffu - at);
            }
            return gaussian_nll(x, y, v, params.p0, params.p1 != 0.0);
        }
        default: { return Term(0.0); }
    }
}

// Element i of the window: its loss, and its derivatives times the gradient scale; writes
// the per-element loss for reduction none.
fn element(i: u32, x: f32, y: f32) -> Term {
    let t = term(x, y, i, params.base + i);
    var s = params.scale;
    if (UPSTREAM_PER_ELEMENT) {
        s *= upstream[i];
    }
    if (PER_ELEMENT_OUT) {
        out[i] = t.x;
    }
    return Term(t.x, t.y * s, t.z * s);
}

// Labels of hinge, soft margin, hinge embedding and margin ranking must be -1 or +1.
fn check_label(i: u32, y: f32) {
    if (y != 1.0 && y != -1.0) {
        atomicMax(&status[0], 0xffffffffu - (params.base + i));
    }
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = group_index(wid, nwg);
    // Chunks of LANES elements; this workgroup owns ITEMS * WG_SIZE of them.
    let chunks = (params.len + LANES - 1u) / LANES;
    let start = group * WG_SIZE * ITEMS;
    var sum = 0.0;
    // Each team of TEAM invocations (the subgroup width) streams its own contiguous run of
    // ITEMS * TEAM chunks: coalesced on GPUs, sequential per SIMD group on CPU adapters.
    let run = start + (lid / TEAM) * ITEMS * TEAM + lid % TEAM;
    for (var k = 0u; k < ITEMS; k++) {
        let j = run + k * TEAM;
        if (j < chunks) {
            let a = load_a(j);
            let b = load_b(j);
            // Written out rather than looped: drivers do not all unroll a LANES loop, and
            // one that does not spills the vec4s (lavapipe runs 1.6x slower).
            let i = j * LANES;
            let t0 = element(i, a.x, b.x);
            var t1 = Term(0.0);
            var t2 = Term(0.0);
            var t3 = Term(0.0);
            if (LANES == 4u) {
                t1 = element(i + 1u, a.y, b.y);
                t2 = element(i + 2u, a.z, b.z);
                t3 = element(i + 3u, a.w, b.w);
            }
            sum += (t0.x + t1.x) + (t2.x + t3.x);
            let ga = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
            let gb = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
            if (WANT_GRAD) {
                store_ga(j, ga);
                if (LOSS == MARGIN_RANKING || LOSS == GAUSSIAN_NLL) {
                    store_gb(j, gb);
                }
            }
        }
    }
    if (PER_ELEMENT_OUT) {
        return;
    }
    // One partial per workgroup, in a fixed order.
    let total = workgroup_sum(lid, sum);
    // Groups past the end (a 2-D grid's overshoot) own no partial.
    if (lid == 0u && start < chunks) {
        out[params.group_base + group] = total;
    }
}
