// NLLLoss (semantics: docs/LOSSES.md). `rows`: one invocation per row writes its loss
// −w_y·x[y] and its weight w_y (0 for an ignored row; a target outside [0, C) is reported).
// `grads`: one invocation per element writes −w_y·scale at the row's target and 0 elsewhere,
// so the gradient costs one write per element and the input one read per row.

override WG_SIZE: u32 = 64u;
override WEIGHTED: bool = false;
override UPSTREAM_PER_ROW: bool = false;
override DENOM_FROM_BUFFER: bool = false;

struct Params {
    n: u32,            // rows in this window
    c: u32,
    row_base: u32,     // the window's first row in the batch
    ignore_index: i32,
    weights_at: u32,   // where the rows' weights start in `stats`
    scale: f32,        // the upstream scalar (1 otherwise)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> targets: array<i32>;   // this window's rows
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> upstream: array<f32>;  // this window's rows
@group(0) @binding(4) var<storage, read> denom: array<f32>;     // Σ w_y (mean)
// The whole batch's row losses, then (from `weights_at`) their weights.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
// Bindings 7 (`input`) and 8 (`grad`) come from the I/O header (`header` in gpu.rs), in their
// element types, through load_input(i) and store_grad(i, v).

// The row's class, or -1 when it is ignored or out of range.
fn class_of(row: u32) -> i32 {
    let y = targets[row];
    if (y == params.ignore_index || y < 0 || u32(y) >= params.c) {
        return -1;
    }
    return y;
}

fn class_weight(y: u32) -> f32 {
    if (WEIGHTED) {
        return weight[y];
    }
    return 1.0;
}

@compute @workgroup_size(WG_SIZE)
fn rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg) * WG_SIZE + lid;
    if (row >= params.n) {
        return;
    }
    let y = targets[row];
    if (y != params.ignore_index && (y < 0 || u32(y) >= params.c)) {
        atomicMax(&status[0], 0xffffffffu - (params.row_base + row));
    }
    var loss = 0.0;
    var w = 0.0;
    let k = class_of(row);
    if (k >= 0) {
        w = class_weight(u32(k));
        loss = -w * load_input(row * params.c + u32(k));
    }
    stats[params.row_base + row] = loss;
    stats[params.weights_at + params.row_base + row] = w;
}

@compute @workgroup_size(WG_SIZE)
fn grads(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = group_index(wid, nwg) * WG_SIZE + lid;
    if (e >= params.n * params.c) {
        return;
    }
    let row = e / params.c;
    let k = class_of(row);
    var g = 0.0;
    if (k >= 0 && u32(k) == e % params.c) {
        var s = params.scale;
        if (UPSTREAM_PER_ROW) {
            s *= upstream[row];
        }
        if (DENOM_FROM_BUFFER) {
            let d = denom[0];
            s = select(s / d, 0.0, d == 0.0);
        }
        g = -class_weight(u32(k)) * s;
    }
    store_grad(e, g);
}
