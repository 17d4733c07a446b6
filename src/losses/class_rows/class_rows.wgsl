// Losses over whole rows of class scores (semantics: docs/LOSSES.md), forward and backward in
// one pass: a team of TEAM invocations per row sums the row's loss terms (and, for
// multi-margin, the gradient that flows to the target's score), then writes every gradient
// element. A workgroup holds WG_SIZE / TEAM rows.

override WG_SIZE: u32 = 64u;
override TEAM: u32 = 8u;               // a power of two dividing WG_SIZE
override LOSS: u32 = 0u;               // MULTI_MARGIN or MULTILABEL_SOFT_MARGIN
override P_POWER: u32 = 1u;            // multi-margin's p: 1 or 2
override WEIGHTED: bool = false;
override UPSTREAM_PER_ROW: bool = false;
override WANT_GRAD: bool = true;

const MULTI_MARGIN: u32 = 0u;
const MULTILABEL_SOFT_MARGIN: u32 = 1u;

struct Params {
    rows: u32,       // rows in this window
    c: u32,
    row_base: u32,   // the window's first row in the batch
    margin: f32,
    scale: f32,      // gradient scale: upstream / denominator
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> classes: array<i32>;   // multi-margin: [rows]
@group(0) @binding(2) var<storage, read> labels: array<f32>;    // multilabel: [rows, C]
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> upstream: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
// Bindings 7 (`input`) and 8 (`grad`) come from the I/O header (`header` in gpu.rs), in their
// element types, through load_input(i) and store_grad(i, v).

var<workgroup> partial: array<vec2<f32>, WG_SIZE>;

// Sums over each team, in a fixed order. Whole workgroup.
fn team_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
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

fn class_weight(k: u32) -> f32 {
    if (WEIGHTED) {
        return weight[k];
    }
    return 1.0;
}

// Multi-margin's hinge term max(0, h)^p and its derivative in h: 0 unless h > 0, the test
// PyTorch's kernels make, so a NaN term is dropped as there.
fn hinge_power(h: f32) -> vec2<f32> {
    if (!(h > 0.0)) {
        return vec2<f32>(0.0);
    }
    if (P_POWER == 2u) {
        return vec2<f32>(h * h, 2.0 * h);
    }
    return vec2<f32>(h, 1.0);
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
    let r = select(0u, row, live);
    let c = params.c;
    let base = r * c;
    // Multi-margin: the row's class (a bad one is reported; the row then counts as class 0,
    // whose values are never used: the call fails).
    var y = 0u;
    var x_y = 0.0;
    var w_y = 1.0;
    if (LOSS == MULTI_MARGIN) {
        let k = classes[r];
        if (k < 0 || u32(k) >= c) {
            if (live && t == 0u) {
                atomicMax(&status[0], 0xffffffffu - (params.row_base + row));
            }
        } else {
            y = u32(k);
        }
        x_y = load_input(base + y);
        w_y = class_weight(y);
    }
    // (loss sum, multi-margin: Σ of the hinge derivatives) over the row.
    var acc = vec2<f32>(0.0);
    for (var k = t; k < c; k += TEAM) {
        let x = load_input(base + k);
        if (LOSS == MULTI_MARGIN) {
            if (k != y) {
                acc += hinge_power(params.margin - x_y + x);
            }
        } else {
            let s = logistic(x);
            let l = labels[base + k];
            acc.x += class_weight(k) * ((1.0 - l) * x + s.softplus_neg);
        }
    }
    let sums = team_sum2(lid, acc);
    if (!live) {
        return;
    }
    let inv_c = 1.0 / f32(c);
    // Multi-margin weighs each positive hinge term (a NaN weight reaches only those terms and
    // the target, as in PyTorch); `any` is whether the row has one.
    let any = sums.y > 0.0;
    if (t == 0u) {
        if (LOSS == MULTI_MARGIN) {
            row_loss[row] = select(0.0, w_y * sums.x, any) * inv_c;
        } else {
            row_loss[row] = sums.x * inv_c;
        }
    }
    if (!WANT_GRAD) {
        return;
    }
    var s = params.scale * inv_c;
    if (UPSTREAM_PER_ROW) {
        s *= upstream[row];
    }
    for (var k = t; k < c; k += TEAM) {
        let x = load_input(base + k);
        var g: f32;
        if (LOSS == MULTI_MARGIN) {
            // The upstream scale multiplies last: a NaN upstream reaches every element.
            if (k == y) {
                g = select(0.0, -w_y * sums.y, any) * s;
            } else {
                let d = hinge_power(params.margin - x_y + x).y;
                g = select(0.0, w_y * d, d > 0.0) * s;
            }
        } else {
            let p = logistic(x).p;
            g = class_weight(k) * (p - labels[base + k]) * s;
        }
        store_grad(base + k, g);
    }
}
