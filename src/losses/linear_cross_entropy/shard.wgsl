// Vocabulary-sharded fused linear cross-entropy (semantics: docs/LOSSES.md; the protocol: the
// family's shard.rs). A shard holds classes [class_base, class_base + classes) of `vocab`.
//
// statistics: a workgroup per row of a chunk's logits writes the row's record of RECORD values,
//   (max, Σ e^(x − max), x_y, w_y, found, Σ w·(x − max), Σ w, first index of the max),
//   x the shard's (capped) logits, y the row's class when this shard holds it (found = 1).
// combine: an invocation per row merges the K shards' records, in shard order, into the row's
//   loss and the coefficients of its gradient (planes of `rows`).
// gradient: an invocation per logit of a chunk writes its gradient in place.

override WG_SIZE: u32 = 256u;
override CAPPED: bool = false;
override WEIGHTED: bool = false;
override UPSTREAM_PER_ROW: bool = false;
override MEAN: bool = false;

struct Params {
    rows: u32,       // rows of the chunk (statistics, gradient) or of the batch (combine)
    classes: u32,    // the shard's classes
    class_base: u32, // its first class in the vocabulary
    vocab: u32,
    row_base: u32,   // the chunk's first row in the batch
    shards: u32,     // records per row (combine)
    plane: u32,      // values per plane of `rows`
    ignore_index: i32,
    smoothing: f32,
    z_loss: f32,
    softcap: f32,
    grad_output: f32,
    record_rows: u32, // rows between one shard's records and the next's (combine)
}

@group(0) @binding(0) var<uniform> params: Params;
// A chunk's logits [rows, classes]: read by statistics, turned into their gradient by gradient.
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
// The shard's class weights [classes].
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> upstream: array<f32>;
// [K, N, RECORD]: written (K = 1) by statistics, read by combine.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
// Planes of `params.plane` values, one value per row (the denominator: one value).
@group(0) @binding(6) var<storage, read_write> rows: array<f32>;
// status[0] = 0xffffffff - (first bad row), 0 when every target is valid.
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

const RECORD: u32 = 8u;
const LOSS: u32 = 0u;     // the row's loss
const KEPT: u32 = 1u;     // w_y, 0 for an ignored row: the mean's denominator sums it
const LSE: u32 = 2u;      // log-sum-exp of the row's capped logits, 0 when ignored
const CORRECT: u32 = 3u;  // 1 where the first index of the row's maximum is its class
const COEF: u32 = 4u;     // the gradient's coefficient of p_c
const HIT: u32 = 5u;      // and of [c = y]
const KEEP: u32 = 6u;     // 1 for a row that has a gradient
const MAX: u32 = 7u;      // the row's maximum and log Σ e^(x − max): p_c without the
const LOG_SUM: u32 = 8u;  // cancellation of x − lse at large logits
const DENOM: u32 = 9u;    // the mean's denominator (its first value)

fn capped(x: f32) -> f32 {
    if (CAPPED) {
        return params.softcap * safe_tanh(x / params.softcap);
    }
    return x;
}

fn class_weight(k: u32) -> f32 {
    if (WEIGHTED) {
        return weight[k];
    }
    return 1.0;
}

// The row's class as an index into this shard, or -1 when it is ignored or held elsewhere.
fn local_class(row: u32) -> i32 {
    let y = targets[row];
    let base = i32(params.class_base);
    if (y == params.ignore_index || y < base || y - base >= i32(params.classes)) {
        return -1;
    }
    return y - base;
}

// (max, Σ e^(x − max), first index of the max or -1, ·) per invocation, then
// (Σ w·(x − max), Σ w, x_y, w_y).
var<workgroup> shared_lse: array<vec4<f32>, WG_SIZE>;
var<workgroup> shared_sums: array<vec4<f32>, WG_SIZE>;

// The first index of the larger maximum of two (max, ·, index, ·) states, -1 having none.
fn first_max(a: vec4<f32>, b: vec4<f32>) -> f32 {
    if (a.z < 0.0) {
        return b.z;
    }
    if (b.z < 0.0) {
        return a.z;
    }
    if (b.x > a.x) {
        return b.z;
    }
    if (a.x > b.x) {
        return a.z;
    }
    return min(a.z, b.z);
}

@compute @workgroup_size(WG_SIZE)
fn statistics(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg);
    if (row >= params.rows) {
        return; // the whole workgroup
    }
    let at = (params.row_base + row) * RECORD;
    // Ignored rows (padding) read nothing.
    if (targets[params.row_base + row] == params.ignore_index) {
        if (lid < RECORD) {
            stats[at + lid] = select(0.0, -1.0, lid == 7u);
        }
        return;
    }
    let base = row * params.classes;
    var st = vec2<f32>(F32_LOWEST, 0.0);
    var arg = -1.0;
    for (var k = lid; k < params.classes; k += WG_SIZE) {
        let x = capped(logits[base + k]);
        if (x > st.x) {
            arg = f32(k); // k goes up: the first of equal maxima stays
        }
        st = lse_push(st, x);
    }
    shared_lse[lid] = vec4<f32>(st, arg, 0.0);
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            let a = shared_lse[lid];
            let b = shared_lse[lid + stride];
            shared_lse[lid] = vec4<f32>(lse_merge(a.xy, b.xy), first_max(a, b), 0.0);
        }
    }
    workgroupBarrier();
    let total = shared_lse[0];
    // The weighted sums for label smoothing, relative to the maximum (exact differences
    // near it), and the target's logit and weight where this shard holds the class.
    let y = local_class(params.row_base + row);
    var sums = vec4<f32>(0.0);
    for (var k = lid; k < params.classes; k += WG_SIZE) {
        let x = capped(logits[base + k]);
        let w = class_weight(k);
        sums += vec4<f32>(w * (x - total.x), w, 0.0, 0.0);
        if (i32(k) == y) {
            sums.z = x;
            sums.w = w;
        }
    }
    let sum = workgroup_sum_vec4(lid, sums);
    if (lid == 0u) {
        stats[at] = total.x;
        stats[at + 1u] = total.y;
        stats[at + 2u] = sum.z;
        stats[at + 3u] = sum.w;
        stats[at + 4u] = select(0.0, 1.0, y >= 0);
        stats[at + 5u] = sum.x;
        stats[at + 6u] = sum.y;
        stats[at + 7u] = select(-1.0, f32(params.class_base) + total.z, total.z >= 0.0);
    }
}

fn workgroup_sum_vec4(lid: u32, v: vec4<f32>) -> vec4<f32> {
    shared_sums[lid] = v;
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            shared_sums[lid] += shared_sums[lid + stride];
        }
    }
    workgroupBarrier();
    return shared_sums[0];
}

fn plane(p: u32, row: u32) -> u32 {
    return p * params.plane + row;
}

@compute @workgroup_size(WG_SIZE)
fn combine(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg) * WG_SIZE + lid;
    let n = params.rows;
    if (row >= n) {
        return;
    }
    let y = targets[row];
    var out = array<f32, 9>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    if (y != params.ignore_index) {
        // The shards in order: log-sum-exp, first index of the maximum (ties to the earlier
        // shard, whose classes come first), the target's logit and weight from its shard.
        var st = vec2<f32>(F32_LOWEST, 0.0);
        var best = vec4<f32>(F32_LOWEST, 0.0, -1.0, 0.0);
        var x_y = 0.0;
        var w_y = 0.0;
        var found = 0.0;
        for (var k = 0u; k < params.shards; k++) {
            let r = (k * params.record_rows + row) * RECORD;
            st = lse_merge(st, vec2<f32>(stats[r], stats[r + 1u]));
            let part = vec4<f32>(stats[r], 0.0, stats[r + 7u], 0.0);
            best = vec4<f32>(max(best.x, part.x), 0.0, first_max(best, part), 0.0);
            if (stats[r + 4u] != 0.0) {
                x_y = stats[r + 2u];
                w_y = stats[r + 3u];
            }
            found += stats[r + 4u];
        }
        // A class outside the vocabulary, or held by no shard or by two (shards that do
        // not tile it), is the row's error.
        if (y < 0 || u32(y) >= params.vocab || found != 1.0) {
            atomicMax(&status[0], 0xffffffffu - row);
        } else {
            let m = st.x;
            let log_sum = log(st.y);
            let lse = softmax_normalizer(st);
            let eps = params.smoothing;
            var loss = (1.0 - eps) * w_y * (log_sum - (x_y - m));
            var coef = (1.0 - eps) * w_y;
            // No smoothing, no term: 0·w would make a NaN weight reach every row.
            if (eps > 0.0) {
                var w_dx = 0.0; // Σ w·(x − m) over the vocabulary
                var w_all = 0.0;
                for (var k = 0u; k < params.shards; k++) {
                    let r = (k * params.record_rows + row) * RECORD;
                    w_dx += stats[r + 5u] + (stats[r] - m) * stats[r + 6u];
                    w_all += stats[r + 6u];
                }
                let eps_v = eps / f32(params.vocab);
                loss += eps_v * (log_sum * w_all - w_dx);
                coef += eps_v * w_all;
            }
            loss += params.z_loss * lse * lse;
            coef += 2.0 * params.z_loss * lse;
            out[LOSS] = loss;
            out[KEPT] = w_y;
            out[LSE] = lse;
            out[CORRECT] = select(0.0, 1.0, best.z == f32(y));
            out[COEF] = coef;
            out[HIT] = (1.0 - eps) * w_y;
            out[KEEP] = 1.0;
            out[MAX] = m;
            out[LOG_SUM] = log_sum;
        }
    }
    for (var p = 0u; p < 9u; p++) {
        rows[plane(p, row)] = out[p];
    }
}

fn row_scale(row: u32) -> f32 {
    var s = params.grad_output;
    if (UPSTREAM_PER_ROW) {
        s = upstream[row];
    }
    var d = 1.0;
    if (MEAN) {
        d = rows[plane(DENOM, 0u)];
    }
    // 0 for a zero denominator (all rows ignored); a NaN one propagates.
    return select(s / d, 0.0, d == 0.0);
}

@compute @workgroup_size(WG_SIZE)
fn gradient(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = group_index(wid, nwg) * WG_SIZE + lid;
    if (i >= params.rows * params.classes) {
        return;
    }
    let k = i % params.classes;
    let row = params.row_base + i / params.classes;
    let scale = row_scale(row);
    // Dropped rows (ignored, bad class, zero scale) get exact zeros whatever their logits.
    if (rows[plane(KEEP, row)] == 0.0 || scale == 0.0) {
        logits[i] = 0.0;
        return;
    }
    let raw = logits[i];
    let p = exp((capped(raw) - rows[plane(MAX, row)]) - rows[plane(LOG_SUM, row)]);
    var target_term = 0.0;
    if (params.smoothing > 0.0) {
        target_term = params.smoothing / f32(params.vocab) * class_weight(k);
    }
    if (i32(k) == local_class(row)) {
        target_term += rows[plane(HIT, row)];
    }
    var g = (p * rows[plane(COEF, row)] - target_term) * scale;
    if (CAPPED) {
        g *= sech2(raw / params.softcap);
    }
    logits[i] = g;
}
