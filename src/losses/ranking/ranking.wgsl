// Ranking losses (semantics: docs/LOSSES.md). `lists`: one workgroup per list computes the
// ranks (by score and by relevance, descending, ties by index), the list's loss, its count
// for the mean (pairs, 1, or whether it has a pair) and NDCG@k, and each element's unscaled
// gradient into `work`. `finish`: one invocation per element scales it (upstream / the mean's
// count) into the gradient's type.

override WG_SIZE: u32 = 64u;
override LOSS: u32 = 0u;               // RANKNET, PAIRWISE_HINGE, LISTNET, LISTMLE or LAMBDA_NDCG
override HAS_LENGTHS: bool = false;
override NEEDS_RANKS: bool = false;    // lambda-ndcg, listmle or the NDCG report
override UPSTREAM_PER_LIST: bool = false;
override DENOM_FROM_BUFFER: bool = true; // finish: divide by values[0], the summed counts

const RANKNET: u32 = 0u;
const PAIRWISE_HINGE: u32 = 1u;
const LISTNET: u32 = 2u;
const LISTMLE: u32 = 3u;
const LAMBDA_NDCG: u32 = 4u;

struct Params {
    lists: u32,      // lists in this window
    l: u32,          // list capacity L
    list_base: u32,  // the window's first list in the batch
    k: u32,          // NDCG's cutoff rank
    margin: f32,
    scale: f32,      // the upstream scalar (1 otherwise)
    stride: u32,     // `stats`' per-array stride (Q rounded up)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// lists: relevance [lists, L]; finish: [0] is the mean's count.
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> lengths: array<i32>;    // [lists]
@group(0) @binding(3) var<storage, read> upstream: array<f32>;   // [Q]
// Per list of this window, 3·L values: the unscaled gradient, the rank by score, the rank by
// relevance (and listMLE's scores by position, then its running sums, in the last two).
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
// The batch's [loss | count | ndcg], each `stride` long.
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
// Bindings 7 (`input`: the scores) and 8 (`grad`) come from the I/O header, in their element
// types, through load_input(i) and store_grad(i, v).

var<workgroup> shared_v: array<f32, WG_SIZE>;

// Σ of every invocation's v, in a fixed order, to all. Whole workgroup.
fn group_sum(lid: u32, v: f32) -> f32 {
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

// The largest of every invocation's v, to all. Whole workgroup.
fn group_max(lid: u32, v: f32) -> f32 {
    shared_v[lid] = v;
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            shared_v[lid] = max(shared_v[lid], shared_v[lid + stride]);
        }
    }
    workgroupBarrier();
    let m = shared_v[0];
    workgroupBarrier();
    return m;
}

// log Σ e^v over the list's `len` values `at(i)`. Whole workgroup.
fn list_lse(lid: u32, m: f32, sum: f32) -> f32 {
    let top = group_max(lid, m);
    let total = group_sum(lid, select(sum * exp(m - top), 0.0, m == F32_LOWEST));
    return top + log(total);
}

fn discount(rank: f32) -> f32 {
    if (rank > f32(params.k)) {
        return 0.0;
    }
    return 1.0 / log2(1.0 + rank);
}

fn gain(rel: f32) -> f32 {
    return exp2(rel) - 1.0;
}

// log(1 + e^−d) and its derivative in d.
fn softplus_neg(d: f32) -> vec2<f32> {
    let e = exp(-abs(d));
    let value = max(-d, 0.0) + log1p_small(e);
    let slope = select(-e / (1.0 + e), -1.0 / (1.0 + e), d < 0.0);
    return vec2<f32>(value, slope);
}

// A pair's term and its derivative in d = s_i − s_j.
fn pair_term(d: f32) -> vec2<f32> {
    if (LOSS == PAIRWISE_HINGE) {
        let h = params.margin - d;
        return select(vec2<f32>(0.0), vec2<f32>(h, -1.0), h > 0.0);
    }
    return softplus_neg(d);
}

@compute @workgroup_size(WG_SIZE)
fn lists(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let list = group_index(wid, nwg);
    // A 2-D grid's overshoot (past 65,535 lists): the whole workgroup has no list.
    if (list >= params.lists) {
        return;
    }
    let l = params.l;
    var len = l;
    if (HAS_LENGTHS) {
        let given = lengths[list];
        if (given < 0 || u32(given) > l) {
            if (lid == 0u) {
                atomicMax(&status[0], 0xffffffffu - (params.list_base + list));
            }
            len = 0u;
        } else {
            len = u32(given);
        }
    }
    let base = list * l;
    let w = list * 3u * l;
    let grad_at = w;
    let rank_at = w + l;
    let ideal_at = w + 2u * l;
    if (NEEDS_RANKS) {
        for (var i = lid; i < len; i += WG_SIZE) {
            let s_i = load_input(base + i);
            let r_i = values[base + i];
            var rank = 1.0;
            var ideal = 1.0;
            for (var j = 0u; j < len; j++) {
                let s_j = load_input(base + j);
                let r_j = values[base + j];
                rank += select(0.0, 1.0, s_j > s_i || (s_j == s_i && j < i));
                ideal += select(0.0, 1.0, r_j > r_i || (r_j == r_i && j < i));
            }
            work[rank_at + i] = rank;
            work[ideal_at + i] = ideal;
        }
        storageBarrier();
        workgroupBarrier();
    }
    // NDCG@k: DCG by the ranks by score over the ideal DCG.
    var dcg = 0.0;
    var idcg = 0.0;
    for (var i = lid; i < len && NEEDS_RANKS; i += WG_SIZE) {
        let g = gain(values[base + i]);
        dcg += g * discount(work[rank_at + i]);
        idcg += g * discount(work[ideal_at + i]);
    }
    dcg = group_sum(lid, dcg);
    idcg = group_sum(lid, idcg);
    var loss = 0.0;
    var count = 0.0;
    if (LOSS == RANKNET || LOSS == PAIRWISE_HINGE || LOSS == LAMBDA_NDCG) {
        // Each invocation owns its items' gradients: the pairs where the item is above, and
        // those where it is below; the loss and the count from the pairs it is above in.
        for (var i = lid; i < len; i += WG_SIZE) {
            let s_i = load_input(base + i);
            let r_i = values[base + i];
            var g = 0.0;
            for (var j = 0u; j < len; j++) {
                let r_j = values[base + j];
                let above = r_i > r_j;
                if (!above && !(r_j > r_i)) {
                    continue; // equal grades (or a NaN one): not a pair
                }
                let s_j = load_input(base + j);
                var weight = 1.0;
                if (LOSS == LAMBDA_NDCG) {
                    let rank_i = work[rank_at + i];
                    let rank_j = work[rank_at + j];
                    if (min(rank_i, rank_j) > f32(params.k)) {
                        continue; // swapping them leaves DCG@k alone: not counted
                    }
                    weight = abs(gain(r_i) - gain(r_j)) * abs(discount(rank_i) - discount(rank_j)) / idcg;
                }
                let t = pair_term(select(s_j - s_i, s_i - s_j, above));
                if (above) {
                    loss += weight * t.x;
                    count += 1.0;
                    g += weight * t.y;
                } else {
                    g -= weight * t.y;
                }
            }
            work[grad_at + i] = g;
        }
        loss = group_sum(lid, loss);
        count = group_sum(lid, count);
        if (LOSS == LAMBDA_NDCG) {
            count = select(0.0, 1.0, count > 0.0);
        }
    }
    if (LOSS == LISTNET) {
        // −Σ softmax(rel)·log_softmax(s); gradient softmax(s) − softmax(rel).
        var st_s = vec2<f32>(F32_LOWEST, 0.0);
        var st_r = vec2<f32>(F32_LOWEST, 0.0);
        var nan = vec2<f32>(0.0);
        for (var i = lid; i < len; i += WG_SIZE) {
            let s = load_input(base + i);
            let r = values[base + i];
            st_s = lse_push(st_s, s);
            st_r = lse_push(st_r, r);
            nan += select(vec2<f32>(1.0), vec2<f32>(0.0), vec2<bool>(s <= 0.0 || s > 0.0, r <= 0.0 || r > 0.0));
        }
        // A NaN makes its softmax NaN (a maximum may have dropped it).
        var lse_s = list_lse(lid, st_s.x, st_s.y);
        var lse_r = list_lse(lid, st_r.x, st_r.y);
        if (group_sum(lid, nan.x) > 0.0) {
            lse_s = bitcast<f32>(0x7fc00000u);
        }
        if (group_sum(lid, nan.y) > 0.0) {
            lse_r = bitcast<f32>(0x7fc00000u);
        }
        for (var i = lid; i < len; i += WG_SIZE) {
            let s = load_input(base + i);
            let wanted = exp(values[base + i] - lse_r);
            loss -= wanted * (s - lse_s);
            work[grad_at + i] = exp(s - lse_s) - wanted;
        }
        loss = group_sum(lid, loss);
        count = 1.0;
    }
    if (LOSS == LISTMLE) {
        // The scores by position in the relevance order (into the ranks' slot, which is no
        // longer needed), then one invocation runs the suffix log-sum-exps z_p (the loss) and
        // the prefix log-sums of e^−z_p (the gradient: −1 + e^{s}·Σ_{p' ≤ p} e^−z_p').
        for (var i = lid; i < len; i += WG_SIZE) {
            work[rank_at + u32(work[ideal_at + i]) - 1u] = load_input(base + i);
        }
        storageBarrier();
        workgroupBarrier();
        if (lid == 0u && len > 0u) {
            var z = F32_LOWEST;
            for (var p = len; p > 0u; p--) {
                let s = work[rank_at + p - 1u];
                let st = lse_merge(vec2<f32>(z, 1.0), vec2<f32>(s, 1.0));
                z = st.x + log(st.y);
                loss += z - s;
                work[grad_at + p - 1u] = z; // z_p for now
            }
            var c = F32_LOWEST;
            for (var p = 0u; p < len; p++) {
                let st = lse_merge(vec2<f32>(c, 1.0), vec2<f32>(-work[grad_at + p], 1.0));
                c = st.x + log(st.y);
                work[rank_at + p] = c; // log Σ_{p' ≤ p} e^−z_p'
            }
        }
        storageBarrier();
        workgroupBarrier();
        for (var i = lid; i < len; i += WG_SIZE) {
            let p = u32(work[ideal_at + i]) - 1u;
            work[grad_at + i] = exp(load_input(base + i) + work[rank_at + p]) - 1.0;
        }
        loss = group_sum(lid, loss);
        count = 1.0;
    }
    if (lid == 0u) {
        let at = params.list_base + list;
        stats[at] = loss;
        stats[params.stride + at] = count;
        stats[2u * params.stride + at] = select(dcg / idcg, 1.0, idcg == 0.0);
    }
}

// One invocation per element of this window: the gradient, 0 past a list's length.
@compute @workgroup_size(WG_SIZE)
fn finish(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = group_index(wid, nwg) * WG_SIZE + lid;
    let l = params.l;
    if (e >= params.lists * l) {
        return;
    }
    let list = e / l;
    let i = e % l;
    var len = l;
    if (HAS_LENGTHS) {
        len = u32(clamp(lengths[list], 0, i32(l)));
    }
    var scale = params.scale;
    if (DENOM_FROM_BUFFER) {
        let count = values[0];
        scale = select(scale / count, 0.0, count == 0.0);
    }
    if (UPSTREAM_PER_LIST) {
        scale *= upstream[params.list_base + list];
    }
    var g = 0.0;
    if (i < len) {
        g = work[list * 3u * l + i] * scale;
    }
    store_grad(e, g);
}
