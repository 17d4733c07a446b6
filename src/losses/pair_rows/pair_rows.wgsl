// Contrastive and triplet losses over explicit rows (semantics: docs/LOSSES.md), forward and
// backward in one pass: a team of TEAM invocations per row reduces the row's distances
// (‖u − v + eps‖_p, as F.pairwise_distance), then writes every gradient element. A
// workgroup holds WG_SIZE / TEAM rows, so short rows share the workgroup's barriers.

override WG_SIZE: u32 = 64u;
override TEAM: u32 = 8u;               // a power of two dividing WG_SIZE
override LOSS: u32 = 0u;               // CONTRASTIVE, TRIPLET or COSINE
override P_NORM: u32 = 2u;             // 1 or 2
override SWAP: bool = false;
override UPSTREAM_PER_ROW: bool = false;
override WANT_GRAD: bool = true;

const CONTRASTIVE: u32 = 0u;
const TRIPLET: u32 = 1u;
const COSINE: u32 = 2u; // cosine embedding: sums of a·b, a², b²

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

// max(0, v) that keeps NaN.
fn relu(v: f32) -> f32 {
    return select(v, 0.0, v < 0.0);
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
    for (var k = t; k < dim; k += TEAM) {
        let a = load_in_a(base + k);
        let b = load_in_b(base + k);
        if (LOSS == COSINE) {
            acc += vec3<f32>(a * b, a * a, b * b);
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
    if (!live) {
        return;
    }
    let d_ab = norm_of(sums.x);
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
        let d_ac = norm_of(sums.y);
        let d_bc = norm_of(sums.z);
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
    let d_ac = norm_of(sums.y);
    let d_bc = norm_of(sums.z);
    for (var k = t; k < dim; k += TEAM) {
        let a = load_in_a(base + k);
        let b = load_in_b(base + k);
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
