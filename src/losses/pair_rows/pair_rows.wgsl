// Contrastive and triplet losses over explicit rows (semantics: docs/LOSSES.md), forward and
// backward in one pass: a team of TEAM invocations per row reduces the row's distances
// (‖u − v + eps‖_p, as F.pairwise_distance, or 1 − cos as F.cosine_similarity), then writes
// every gradient element. A workgroup holds WG_SIZE / TEAM rows, so short rows share the
// workgroup's barriers.

override WG_SIZE: u32 = 64u;
override TEAM: u32 = 8u;               // a power of two dividing WG_SIZE
override LOSS: u32 = 0u;               // CONTRASTIVE, TRIPLET, COSINE or TRIPLET_COSINE
override P_NORM: u32 = 2u;             // 1 or 2
override SWAP: bool = false;
override UPSTREAM_PER_ROW: bool = false;
override WANT_GRAD: bool = true;

const CONTRASTIVE: u32 = 0u;
const TRIPLET: u32 = 1u;
const COSINE: u32 = 2u; // cosine embedding: sums of a·b, a², b²
const TRIPLET_COSINE: u32 = 3u; // triplet over 1 − cos: sums of a·p, a·n, p·n and a², p², n²
// F.cosine_similarity's ε: each norm is max(‖x‖, ε).
const COSINE_EPS: f32 = 1e-8;

struct Params {
    rows: u32,       // rows in this window
    dim: u32,
    margin: f32,
    eps: f32,
    scale: f32,      // gradient scale: upstream / denominator
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1–3 (in_a: x1 or anchor, in_b: x2 or positive, in_c: negative) and 6–8 (their
// gradients grad_a, grad_b, grad_c) come from the I/O header (`header` in gpu.rs), in the
// rows' element type, through load_NAME(i) and store_NAME(i, v).
@group(0) @binding(4) var<storage, read> labels: array<f32>;    // contrastive y
@group(0) @binding(5) var<storage, read> upstream: array<f32>;
@group(0) @binding(9) var<storage, read_write> row_loss: array<f32>;

var<workgroup> partial: array<vec3<f32>, WG_SIZE>;

// Sums of the three distance accumulators over each team, in a fixed order. Whole workgroup.
fn team_sum3(lid: u32, v: vec3<f32>) -> vec3<f32> {
    partial[lid] = v;
    let t = lid % TEAM;
    for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (t < stride) {
            partial[lid] += partial[lid + stride];
        }
    }
    workgroupBarrier();
    return partial[lid - t];
}

fn norm_term(w: f32) -> f32 {
    if (P_NORM == 1u) {
        return abs(w);
    }
    return w * w;
}

fn norm_of(sum: f32) -> f32 {
    if (P_NORM == 1u) {
        return sum;
    }
    return sqrt(sum);
}

// d‖w‖_p/dw: sign(w) for p = 1, w/‖w‖ (0 at 0) for p = 2; NaN stays NaN (`==` and the
// ordered comparisons are false for NaN).
fn norm_grad(w: f32, d: f32) -> f32 {
    if (P_NORM == 1u) {
        return select(select(select(w, 0.0, w == 0.0), -1.0, w < 0.0), 1.0, w > 0.0);
    }
    return select(w / d, 0.0, d == 0.0);
}

// ∂cos(x, y)/∂x with cos = x·y / (n_x n_y), n_x = max(‖x‖, ε), as PyTorch differentiates
// it: y / (n_x n_y) − cos · x / (n_x ‖x‖), the second term 0 for a zero row.
fn cos_grad(x: f32, y: f32, n_x: f32, n_y: f32, len_x: f32, cos: f32) -> f32 {
    return y / (n_x * n_y) - select(cos * x / (n_x * len_x), 0.0, len_x == 0.0);
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg) * (WG_SIZE / TEAM) + lid / TEAM;
    let t = lid % TEAM;
    // Rows past the end compute on row 0 (every invocation must reach the barriers) and
    // write nothing.
    let live = row < params.rows;
    let dim = params.dim;
    let base = select(0u, row, live) * dim;
    let eps = params.eps;
    var acc = vec3<f32>(0.0);
    var squares = vec3<f32>(0.0); // TRIPLET_COSINE: a², p², n²
    for (var k = t; k < dim; k += TEAM) {
        let a = load_in_a(base + k);
        let b = load_in_b(base + k);
        if (LOSS == COSINE) {
            acc += vec3<f32>(a * b, a * a, b * b);
            continue;
        }
        if (LOSS == TRIPLET_COSINE) {
            let c = load_in_c(base + k);
            acc += vec3<f32>(a * b, a * c, b * c);
            squares += vec3<f32>(a * a, b * b, c * c);
            continue;
        }
        acc.x += norm_term(a - b + eps);
        if (LOSS == TRIPLET) {
            let c = load_in_c(base + k);
            acc.y += norm_term(a - c + eps);
            if (SWAP) {
                acc.z += norm_term(b - c + eps);
            }
        }
    }
    let sums = team_sum3(lid, acc);
    var lengths = vec3<f32>(0.0);
    if (LOSS == TRIPLET_COSINE) {
        workgroupBarrier(); // every team has read its sums before `partial` is reused
        lengths = sqrt(team_sum3(lid, squares));
    }
    if (!live) {
        return;
    }
    // TRIPLET_COSINE: the clamped norms and cos(a, p), cos(a, n), cos(p, n).
    let norms = max(lengths, vec3<f32>(COSINE_EPS));
    let cosines = sums / vec3<f32>(norms.x * norms.y, norms.x * norms.z, norms.y * norms.z);
    var d_ab = norm_of(sums.x);
    var d_ac = norm_of(sums.y);
    var d_bc = norm_of(sums.z);
    if (LOSS == TRIPLET_COSINE) {
        d_ab = 1.0 - cosines.x;
        d_ac = 1.0 - cosines.y;
        d_bc = 1.0 - cosines.z;
    }
    let m = params.margin;
    var loss: f32;
    // Coefficients of the three distance gradients: d(a,b), d(a,c), d(b,c).
    var coef = vec3<f32>(0.0);
    // Cosine embedding: cos and the inverse magnitudes its gradient needs.
    let mag = vec2<f32>(sums.y, sums.z) + 1e-12;
    let denom = sqrt(mag.x * mag.y);
    let cos = sums.x / denom;
    if (LOSS == COSINE) {
        // 1 - cos where y = 1; max(0, cos - margin) where y = -1, with a gradient only where
        // cos - margin > 0 (PyTorch's in-place clamp_min_).
        let positive = labels[row] == 1.0;
        loss = select(relu(cos - m), 1.0 - cos, positive);
        coef.x = select(select(0.0, 1.0, cos - m > 0.0), -1.0, positive);
    } else if (LOSS == CONTRASTIVE) {
        let y = labels[row];
        let hinge = relu(m - d_ab);
        loss = 0.5 * (y * d_ab * d_ab + (1.0 - y) * hinge * hinge);
        coef.x = y * d_ab - (1.0 - y) * hinge;
    } else {
        // swap: the smaller of d(a,n), d(p,n); equal ones share the gradient (torch.min).
        var w = vec2<f32>(1.0, 0.0);
        var d_neg = d_ac;
        if (SWAP) {
            w = select(select(vec2<f32>(0.5, 0.5), vec2<f32>(0.0, 1.0), d_bc < d_ac), vec2<f32>(1.0, 0.0), d_ac < d_bc);
            d_neg = min(d_ac, d_bc);
        }
        let t = m + d_ab - d_neg;
        loss = relu(t);
        // clamp_min passes the gradient where t >= 0, as PyTorch.
        let on = select(0.0, 1.0, t >= 0.0);
        coef = vec3<f32>(on, -on * w.x, -on * w.y);
    }
    if (t == 0u) {
        row_loss[row] = loss;
    }
    if (!WANT_GRAD) {
        return;
    }
    var s = params.scale;
    if (UPSTREAM_PER_ROW) {
        s *= upstream[row];
    }
    coef *= s;
    for (var k = t; k < dim; k += TEAM) {
        let a = load_in_a(base + k);
        let b = load_in_b(base + k);
        if (LOSS == TRIPLET_COSINE) {
            // d = 1 − cos: each distance's gradient is −∂cos. d(p, n) only with swap, as
            // PyTorch computes it only then.
            let c = load_in_c(base + k);
            let n = norms;
            let l = lengths;
            let cs = cosines;
            let g_a = -coef.x * cos_grad(a, b, n.x, n.y, l.x, cs.x)
                - coef.y * cos_grad(a, c, n.x, n.z, l.x, cs.y);
            var g_b = -coef.x * cos_grad(b, a, n.y, n.x, l.y, cs.x);
            var g_c = -coef.y * cos_grad(c, a, n.z, n.x, l.z, cs.y);
            if (SWAP) {
                g_b -= coef.z * cos_grad(b, c, n.y, n.z, l.y, cs.z);
                g_c -= coef.z * cos_grad(c, b, n.z, n.y, l.z, cs.z);
            }
            store_grad_a(base + k, g_a);
            store_grad_b(base + k, g_b);
            store_grad_c(base + k, g_c);
            continue;
        }
        if (LOSS == COSINE) {
            // d cos/da = b/denom - cos·a/|a|², d cos/db = a/denom - cos·b/|b|².
            store_grad_a(base + k, coef.x * (b / denom - cos * a / mag.x));
            store_grad_b(base + k, coef.x * (a / denom - cos * b / mag.y));
            continue;
        }
        let g_ab = coef.x * norm_grad(a - b + eps, d_ab);
        if (LOSS == CONTRASTIVE) {
            store_grad_a(base + k, g_ab);
            store_grad_b(base + k, -g_ab);
        } else {
            let c = load_in_c(base + k);
            let g_ac = coef.y * norm_grad(a - c + eps, d_ac);
            var g_bc = 0.0;
            if (SWAP) {
                g_bc = coef.z * norm_grad(b - c + eps, d_bc);
            }
            store_grad_a(base + k, g_ab + g_ac);
            store_grad_b(base + k, -g_ab + g_bc);
            store_grad_c(base + k, -g_ac - g_bc);
        }
    }
}
