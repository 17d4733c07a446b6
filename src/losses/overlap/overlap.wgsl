// Dice and Tversky (semantics: docs/LOSSES.md). `partials`: one workgroup per (item, tile of
// positions) sums, for each kept channel, p·g, p and g (squares with SQUARED) over the tile's
// positions in a fixed tree. `groups`: one invocation per ratio adds its partials in order
// (tiles, then items with BATCH), and writes its weighted loss and the two coefficients of
// its gradient, d loss / d numerator and d loss / d denominator, already scaled by the
// upstream gradient and the mean. `gradients`: one invocation per position writes every
// channel's gradient through the activation (softmax couples the channels).

override WG_SIZE: u32 = 256u;
override ACTIVATION: u32 = 0u;           // NONE, SIGMOID or SOFTMAX
override INDICES: bool = false;          // class indices, not one-hot targets
override TVERSKY: bool = false;
override SQUARED: bool = false;          // dice's squared_pred
override JACCARD: bool = false;
override BATCH: bool = false;            // one ratio per channel over the whole batch
override WEIGHTED: bool = false;
override UPSTREAM_PER_GROUP: bool = false;

const SIGMOID: u32 = 1u;
const SOFTMAX: u32 = 2u;
// Positions per invocation in `partials`: a tile is WG_SIZE·PER positions.
const PER: u32 = 4u;

struct Params {
    n: u32,          // items in this window
    c: u32,          // channels
    s: u32,          // positions per item
    first: u32,      // the first kept channel (1 without the background)
    item_base: u32,  // the window's first item in the batch
    items: u32,      // items in the batch
    tiles: u32,      // tiles per item
    groups: u32,     // ratios
    smooth_nr: f32,
    smooth_dr: f32,
    alpha: f32,
    beta: f32,
    scale: f32,      // the upstream scalar over the mean's count
    stride: u32,     // `stats`' per-array stride
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// partials, gradients: this window's one-hot targets [n, C, S]; groups: the upstream per ratio.
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;     // this window's [n, S]
@group(0) @binding(3) var<storage, read> weight: array<f32>;     // [C]
// Partial sums [3][C'][items][tiles]: intersection, prediction, target.
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
// Per ratio, each array `stride` long: d/d numerator, d/d denominator, its weighted loss.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
// Bindings 7 (`input`) and 8 (`grad`) come from the I/O header, in their element types,
// through load_input(i) and store_grad(i, v).

var<workgroup> shared_v: array<vec3<f32>, WG_SIZE>;

// Σ of every invocation's v in a fixed tree order, to all. Whole workgroup.
fn group_sum(lid: u32, v: vec3<f32>) -> vec3<f32> {
    shared_v[lid] = v;
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            shared_v[lid] += shared_v[lid + stride];
        }
    }
    workgroupBarrier();
    let total = shared_v[0];
    workgroupBarrier();
    return total;
}

// The softmax's normalizer over the channels of window item `item` at position q.
fn channel_norm(item: u32, q: u32) -> f32 {
    var st = vec2<f32>(F32_LOWEST, 0.0);
    for (var ch = 0u; ch < params.c; ch++) {
        st = lse_push(st, load_input((item * params.c + ch) * params.s + q));
    }
    return softmax_normalizer(st);
}

// The prediction from input x (`norm`: the position's softmax normalizer).
fn activate(x: f32, norm: f32) -> f32 {
    if (ACTIVATION == SIGMOID) {
        return logistic(x).p;
    }
    if (ACTIVATION == SOFTMAX) {
        return exp(x - norm);
    }
    return x;
}

// The target of channel ch at element e = (item·C + ch)·S + q of this window (`label`: the
// position's class index).
fn target_of(e: u32, ch: u32, label: i32) -> f32 {
    if (INDICES) {
        return select(0.0, 1.0, label == i32(ch));
    }
    return values[e];
}

@compute @workgroup_size(WG_SIZE)
fn partials(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let index = group_index(wid, nwg);
    let item = index / params.tiles;
    let tile = index % params.tiles;
    if (item >= params.n) {
        return;
    }
    let c = params.c;
    let s = params.s;
    var norm: array<f32, PER>;
    var label: array<i32, PER>;
    for (var j = 0u; j < PER; j++) {
        let q = (tile * PER + j) * WG_SIZE + lid;
        if (q < s) {
            if (ACTIVATION == SOFTMAX) {
                norm[j] = channel_norm(item, q);
            }
            if (INDICES) {
                label[j] = labels[item * s + q];
                if (label[j] < 0 || label[j] >= i32(c)) {
                    atomicMax(&status[0], 0xffffffffu - ((params.item_base + item) * s + q));
                }
            }
        }
    }
    let kept = c - params.first;
    for (var k = 0u; k < kept; k++) {
        let ch = k + params.first;
        var acc = vec3<f32>(0.0);
        for (var j = 0u; j < PER; j++) {
            let q = (tile * PER + j) * WG_SIZE + lid;
            if (q < s) {
                let e = (item * c + ch) * s + q;
                let p = activate(load_input(e), norm[j]);
                let g = target_of(e, ch, label[j]);
                if (SQUARED) {
                    acc += vec3<f32>(p * g, p * p, g * g);
                } else {
                    acc += vec3<f32>(p * g, p, g);
                }
            }
        }
        let total = group_sum(lid, acc);
        if (lid == 0u) {
            let at = (k * params.items + params.item_base + item) * params.tiles + tile;
            let part = kept * params.items * params.tiles;
            work[at] = total.x;
            work[part + at] = total.y;
            work[2u * part + at] = total.z;
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn groups(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let grp = group_index(wid, nwg) * WG_SIZE + lid;
    if (grp >= params.groups) {
        return;
    }
    let kept = params.c - params.first;
    var k = grp % kept;
    var items = vec2<u32>(grp / kept, grp / kept + 1u);
    if (BATCH) {
        k = grp;
        items = vec2<u32>(0u, params.items);
    }
    let part = kept * params.items * params.tiles;
    var sums = vec3<f32>(0.0);
    for (var it = items.x; it < items.y; it++) {
        let base = (k * params.items + it) * params.tiles;
        for (var t = 0u; t < params.tiles; t++) {
            let at = base + t;
            sums += vec3<f32>(work[at], work[part + at], work[2u * part + at]);
        }
    }
    let inter = sums.x;
    var num = 2.0 * inter + params.smooth_nr;
    var den = sums.y + sums.z;
    if (JACCARD) {
        den = 2.0 * (den - inter);
    }
    den += params.smooth_dr;
    if (TVERSKY) {
        num = inter + params.smooth_nr;
        den = inter + params.alpha * (sums.y - inter) + params.beta * (sums.z - inter)
            + params.smooth_dr;
    }
    var w = 1.0;
    if (WEIGHTED) {
        w = weight[k + params.first];
    }
    var scale = w * params.scale;
    if (UPSTREAM_PER_GROUP) {
        scale *= values[grp];
    }
    stats[grp] = -scale / den;
    stats[params.stride + grp] = scale * num / (den * den);
    stats[2u * params.stride + grp] = w * (1.0 - num / den);
}

// d loss / d p of channel ch (kept channel k) of window item `item`, with prediction p and
// target g.
fn prediction_slope(item: u32, k: u32, p: f32, g: f32) -> f32 {
    var grp = (params.item_base + item) * (params.c - params.first) + k;
    if (BATCH) {
        grp = k;
    }
    var dnum = 2.0 * g;
    var dden = 1.0;
    if (SQUARED) {
        dden = 2.0 * p;
    }
    if (JACCARD) {
        dden = 2.0 * (dden - g);
    }
    if (TVERSKY) {
        dnum = g;
        dden = g + params.alpha * (1.0 - g) - params.beta * g;
    }
    return stats[grp] * dnum + stats[params.stride + grp] * dden;
}

@compute @workgroup_size(WG_SIZE)
fn gradients(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let position = group_index(wid, nwg) * WG_SIZE + lid;
    let c = params.c;
    let s = params.s;
    if (position >= params.n * s) {
        return;
    }
    let item = position / s;
    let q = position % s;
    var label = -1;
    if (INDICES) {
        label = labels[item * s + q];
    }
    var norm = 0.0;
    var dot = 0.0;
    if (ACTIVATION == SOFTMAX) {
        norm = channel_norm(item, q);
        // Σ_k p_k·dp_k over the kept channels: the softmax's shared term.
        for (var ch = params.first; ch < c; ch++) {
            let e = (item * c + ch) * s + q;
            let p = activate(load_input(e), norm);
            dot += p * prediction_slope(item, ch - params.first, p, target_of(e, ch, label));
        }
    }
    for (var ch = 0u; ch < c; ch++) {
        let e = (item * c + ch) * s + q;
        let x = load_input(e);
        let p = activate(x, norm);
        var dp = 0.0;
        if (ch >= params.first) {
            dp = prediction_slope(item, ch - params.first, p, target_of(e, ch, label));
        }
        var dx = dp;
        if (ACTIVATION == SIGMOID) {
            // σ'(x) = σ(x)·σ(−x), each from one exp without cancellation.
            let l = logistic(x);
            dx = dp * l.p * l.q;
        }
        if (ACTIVATION == SOFTMAX) {
            dx = p * (dp - dot);
        }
        store_grad(e, dx);
    }
}
