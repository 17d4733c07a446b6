// Fused softmax cross-entropy, forward and backward (semantics: docs/LOSSES.md).
//
// ROW_THREADS invocations share one row; a workgroup holds WG_SIZE / ROW_THREADS rows.
// Rows are read in chunks of LANES elements: vec4s, several times faster than scalars on
// some adapters (lavapipe among them). When C is not a multiple of 4 (RAGGED), rows do not
// start on a vec4: a row's chunks are the vec4s it overlaps, the lanes outside it are
// skipped, and the partial chunks at its ends go through a scalar view of the same buffer.
// `row_first_chunk`, `row_chunks`, `load_row_chunk`, `store_row_chunk` and `first_logit`
// come from the I/O header; element k of the row is lane e of chunk j at k = k0(j) + e.
// Pass 1 reads the row once for the online log-sum-exp and the sums that the loss needs;
// pass 2 re-reads it (from cache for all but the largest rows; from registers where each
// invocation holds at most ROW_CACHE chunks, ROW_ON_CHIP) and writes the gradient.
// `denominator` is the pre-pass of the mean over class targets: each workgroup sums w[y_n]
// (0 when ignored) over a block of rows into denom[group_base + g], in a fixed order. One
// block is the denominator itself; more are summed by the reduce kernel before `main`.

override WG_SIZE: u32 = 256u;
override ROW_THREADS: u32 = 256u;
// Invocations that read consecutive chunks together (the subgroup width, at most
// ROW_THREADS). Each such team streams its own contiguous block of the row: coalesced on
// GPUs, and sequential per SIMD group on CPU adapters, whose caches a row-wide stride defeats.
override TEAM: u32 = 8u;
// The adapter's smallest subgroup size where rows are merged by subgroup shuffles (the
// subgroup header), else 0: rows of at most this many invocations need no barrier.
override MIN_SUBGROUP: u32 = 0u;
// Specialization: each pipeline carries only the work its options need.
override PROBS: bool = false;      // probability targets (else class indices)
override WEIGHTED: bool = false;   // per-class weights
override SUMS: bool = false;       // the weighted sums of pass 1 (label smoothing, PROBS)
override CAPPED: bool = false;     // logit softcap
override FOCAL: bool = false;      // softmax focal loss (class targets; weight holds alpha)
// ROW_STATS (from the I/O header): per-row statistics, the fused linear loss's optional
// outputs: the log-sum-exp of the (capped) logits and whether the first index of the row's
// maximum is its target class, through `write_row_stats`; 0 for dropped rows.
// Rows split across `params.splits` workgroups each (few rows, many classes): phase 1 leaves
// each split's pass-1 state in `state`, phase 2 merges a row's states in split order and
// writes its split's gradient. Phase 0: one workgroup per row, both passes.
override PHASE: u32 = 0u;
// Rows whose invocations each hold at most ROW_CACHE chunks (phase 0) keep them in registers
// from pass 1 to pass 2: two transfers of the logits (read, write gradient) instead of three.
// CACHED_STEPS (0: off) is then the most chunks an invocation holds: both passes take that
// constant trip, which the compiler can unroll, so the cache is indexed by constants, only
// the registers used are allocated, and an invocation's loads are all issued before use.
override CACHED_STEPS: u32 = 0u;
override ROW_ON_CHIP: bool = CACHED_STEPS > 0u; // not set by the host
const ROW_CACHE: u32 = 16u;
var<private> row_cache: array<vec4<f32>, ROW_CACHE>;

// Steps of an invocation's chunk loop: j = start, start + TEAM, ... below end.
fn chunk_steps(start: u32, end: u32) -> u32 {
    if (ROW_ON_CHIP) {
        return CACHED_STEPS;
    }
    return select(0u, (end - start + TEAM - 1u) / TEAM, end > start);
}

// Chunk j (step i of this invocation's loop) of the row: from registers in pass 2 when the
// row is on chip.
fn row_chunk(row: u32, j: u32, i: u32, second_pass: bool) -> vec4<f32> {
    if (ROW_ON_CHIP && second_pass) {
        return row_cache[i];
    }
    let v = load_row_chunk(row, j);
    if (ROW_ON_CHIP) {
        row_cache[i] = v;
    }
    return v;
}

struct Params {
    n: u32,
    c: u32,
    row_base: u32,
    flags: u32,
    ignore_index: i32,
    smoothing: f32,
    z_loss: f32,
    softcap: f32,
    grad_output: f32,
    denom: f32,
    gamma: f32,
    block: u32,      // rows per workgroup (denominator)
    group_base: u32, // index of this window's first block (denominator)
    splits: u32,     // workgroups per row (PHASE 1 and 2)
    _pad: u32,
}

const DENOM_FROM_BUFFER: u32 = 4u;
const UPSTREAM_PER_ROW: u32 = 8u;
const WANT_GRAD: u32 = 16u;

@group(0) @binding(0) var<uniform> params: Params;
// Class indices (bitcast i32) [n] or probabilities (bitcast f32) [n, c].
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> upstream: array<f32>;
// [0]: the denominator (main), or the blocks' partial denominators (denominator); from
// STATE_BASE: the split rows' pass-1 states, 8 per (row, split).
@group(0) @binding(4) var<storage, read_write> denom: array<f32>;
const STATE_BASE: u32 = 4u;
@group(0) @binding(5) var<storage, read_write> loss_rows: array<f32>;
// status[0] = 0xffffffff - (first bad row), 0 when every target is valid.
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;

// (max, sum, x[target], first index of the max, or -1 for none) and the weighted sums, per
// invocation. Indices are exact in f32 below 2²⁴ classes.
var<workgroup> shared_stat: array<vec4<f32>, WG_SIZE>;
var<workgroup> shared_acc: array<vec4<f32>, WG_SIZE>;

fn has(flag: u32) -> bool {
    return (params.flags & flag) != 0u;
}

fn class_weight(k: u32) -> f32 {
    if (WEIGHTED) {
        return weight[k];
    }
    return 1.0;
}

fn capped(x: f32) -> f32 {
    if (CAPPED) {
        return params.softcap * safe_tanh(x / params.softcap);
    }
    return x;
}

fn report_bad_row(row: u32) {
    atomicMax(&status[0], 0xffffffffu - (params.row_base + row));
}

// The row's class, or -1 when the row is ignored or its target is out of range (reported).
fn row_class(row: u32) -> i32 {
    let y = bitcast<i32>(targets[row]);
    if (y == params.ignore_index) {
        return -1;
    }
    if (y < 0 || u32(y) >= params.c) {
        report_bad_row(row);
        return -1;
    }
    return y;
}

// The first index of the larger maximum of two (max, ·, ·, index) states, -1 having none.
fn first_max(a: vec4<f32>, b: vec4<f32>) -> f32 {
    if (a.w < 0.0) {
        return b.w;
    }
    if (b.w < 0.0) {
        return a.w;
    }
    if (b.x > a.x) {
        return b.w;
    }
    if (a.x > b.x) {
        return a.w;
    }
    return min(a.w, b.w);
}

fn row_scale(row: u32) -> f32 {
    var s = params.grad_output;
    if (has(UPSTREAM_PER_ROW)) {
        s = upstream[row];
    }
    var d = params.denom;
    if (has(DENOM_FROM_BUFFER)) {
        d = denom[0];
    }
    // 0 for a zero denominator (all rows ignored); a NaN one (a NaN class weight) propagates:
    // `d == 0` is false for NaN, where `d != 0` (an ordered comparison) is false too.
    return select(s / d, 0.0, d == 0.0);
}

@compute @workgroup_size(WG_SIZE)
fn denominator(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // The mean divides by sum w[y] (cross-entropy) or by the kept rows (focal).
    let g = group_index(wid, nwg);
    let end = min((g + 1u) * params.block, params.n);
    var v = 0.0;
    for (var row = g * params.block + lid; row < end; row += WG_SIZE) {
        let y = row_class(row);
        var w = 1.0;
        if (!FOCAL) {
            w = class_weight(u32(max(y, 0)));
        }
        v += select(0.0, w, y >= 0);
    }
    let total = workgroup_sum(lid, v);
    if (lid == 0u) {
        denom[params.group_base + g] = total;
    }
}

// A row's pass-1 state: (max, sum, x[target], first index of the max) and the weighted sums.
struct RowState {
    stat: vec4<f32>,
    acc: vec4<f32>,
}

// a then b, in that order (the sums are not associative in floating point).
fn merge_states(a: RowState, b: RowState) -> RowState {
    var acc = a.acc;
    if (SUMS) {
        acc += b.acc;
    }
    let stat = vec4<f32>(lse_merge(a.stat.xy, b.stat.xy), a.stat.z + b.stat.z, first_max(a.stat, b.stat));
    return RowState(stat, acc);
}

fn shared_state(i: u32) -> RowState {
    var acc = vec4<f32>(0.0);
    if (SUMS) {
        acc = shared_acc[i];
    }
    return RowState(shared_stat[i], acc);
}

fn store_shared_state(i: u32, s: RowState) {
    shared_stat[i] = s.stat;
    if (SUMS) {
        shared_acc[i] = s.acc;
    }
}

// `Invocation` and `merge_row` (the reduction over a row's invocations) come from the
// barrier or the subgroup header, whichever the adapter allows.
@compute @workgroup_size(WG_SIZE)
fn main(inv: Invocation) {
    let lid = inv.lid;
    let lane = lid % ROW_THREADS;
    let rows_per_group = WG_SIZE / ROW_THREADS;
    let g = group_index(inv.wid, inv.nwg);
    // Split rows: workgroup g takes split g / row_groups of row group g mod row_groups.
    let row_groups = (params.n + rows_per_group - 1u) / rows_per_group;
    var split = 0u;
    var row_group = g;
    if (PHASE != 0u) {
        split = g / row_groups;
        row_group = g % row_groups;
    }
    let row = row_group * rows_per_group + lid / ROW_THREADS;
    let live = row < params.n && split < max(params.splits, 1u);
    let c = params.c;
    let base = row * c;
    // This split's chunks of the row (all of them unless split).
    let row_chunk_count = row_chunks(row);
    let span = (row_chunk_count + max(params.splits, 1u) - 1u) / max(params.splits, 1u);
    let skipped = min(split * span, row_chunk_count);
    let first_chunk = row_first_chunk(row) + skipped;
    let chunks = min(span, row_chunk_count - skipped);
    // This invocation's chunks: j = start, start + TEAM, ... below end.
    let teams = ROW_THREADS / TEAM;
    let block = (chunks + teams - 1u) / teams;
    let team_start = (lane / TEAM) * block;
    let start = team_start + lane % TEAM;
    let end = min(team_start + block, chunks);
    let steps = chunk_steps(start, end);
    let eps = params.smoothing;
    let eps_c = eps / f32(c);

    // Pass 1: online log-sum-exp and, relative to x_ref = x[0] (which keeps the sums exact
    // when a whole row sits at a large offset): sum w*t*(x - x_ref), sum w*t,
    // sum w*(x - x_ref), sum w. The lane owning the target class keeps its logit.
    var y = -1;
    var keep = true;
    var st = vec2<f32>(F32_LOWEST, 0.0);
    var arg = -1.0; // the first index of this invocation's largest logit
    var x_y = 0.0;
    var acc = vec4<f32>(0.0);
    var x_ref = 0.0;
    if (live && !PROBS) {
        y = bitcast<i32>(targets[row]);
        keep = y != params.ignore_index && y >= 0 && u32(y) < c;
    }
    // Ignored rows (padding, often a large share of a batch) read nothing.
    if (live && keep) {
        x_ref = capped(first_logit(row));
    }
    if (live && keep && PHASE != 2u) {
        for (var i = 0u; i < steps; i++) {
            let j = start + i * TEAM;
            if (j >= end) {
                break;
            }
            let v = row_chunk(row, first_chunk + j, i, false);
            let k0 = chunk_start(row, first_chunk + j);
            for (var e = 0u; e < LANES; e++) {
                let k = u32(k0 + i32(e));
                if (RAGGED && k >= c) {
                    continue; // outside the row (k0 + e < 0 wraps past c too)
                }
                let x = capped(v[e]);
                if (ROW_STATS && x > st.x) {
                    arg = f32(k); // chunks and lanes go up in k: the first of equal maxima stays
                }
                st = lse_push(st, x);
                if (SUMS) {
                    let w = class_weight(k);
                    let dx = x - x_ref;
                    var t = 0.0;
                    if (PROBS) {
                        t = bitcast<f32>(targets[base + k]);
                    }
                    acc += vec4<f32>(w * t * dx, w * t, w * dx, w);
                }
                if (i32(k) == y) {
                    x_y = x;
                }
            }
        }
    }

    // Merged over the row's invocations (phase 2 merges stored states instead).
    var merged = RowState(vec4<f32>(F32_LOWEST, 0.0, 0.0, -1.0), vec4<f32>(0.0));
    if (PHASE != 2u) {
        merged = merge_row(inv, lane, RowState(vec4<f32>(st, x_y, arg), acc));
    }
    if (!live) {
        return;
    }
    let states = STATE_BASE + 8u * (params.row_base + row) * params.splits;
    if (PHASE == 2u) {
        for (var s = 0u; s < params.splits; s++) {
            let at = states + 8u * s;
            let part = RowState(
                vec4<f32>(denom[at], denom[at + 1u], denom[at + 2u], denom[at + 3u]),
                vec4<f32>(denom[at + 4u], denom[at + 5u], denom[at + 6u], denom[at + 7u]),
            );
            merged = merge_states(merged, part);
        }
    }
    let stat = merged.stat;
    acc = merged.acc;
    if (PHASE == 1u) {
        if (lane == 0u) {
            let at = states + 8u * split;
            denom[at] = stat.x;
            denom[at + 1u] = stat.y;
            denom[at + 2u] = stat.z;
            denom[at + 3u] = stat.w;
            denom[at + 4u] = acc.x;
            denom[at + 5u] = acc.y;
            denom[at + 6u] = acc.z;
            denom[at + 7u] = acc.w;
        }
        return;
    }
    x_y = stat.z;
    // x - lse is formed as (x - max) - log(sum): exact differences near the max keep the
    // probabilities accurate to f32 rounding even for logits of magnitude 1e4.
    let row_max = stat.x;
    let log_sum = log(stat.y);
    let lse = row_max + log_sum;

    // Row loss; the gradient is p * coef - target_term, times the row's scale.
    var loss = 0.0;
    var coef = 0.0;
    var w_y = 0.0;
    var hit = 0.0; // the target term at the target class
    var scale = 0.0;
    if (!PROBS && !keep && y != params.ignore_index && lane == 0u && split == 0u) {
        report_bad_row(row);
    }
    if (keep) {
        let lse_rel = (row_max - x_ref) + log_sum;
        if (PROBS) {
            let a = (1.0 - eps) * acc.y + eps_c * acc.w;
            loss = lse_rel * a - ((1.0 - eps) * acc.x + eps_c * acc.z);
            coef = a;
        } else {
            w_y = class_weight(u32(y));
            if (FOCAL) {
                // l = -α q^γ log p with p = p_y, q = 1 - p; ∂l/∂x_c = F·(p_c - [c = y]) with
                // F = α q^γ (1 - γ p log p / q), and p log p / q → -1 as q → 0. With γ = 0
                // the bracket is 1 even where p log p is 0·(−∞) (a −∞ target logit).
                let log_p = (x_y - row_max) - log_sum;
                let q = one_minus_exp(log_p);
                var qg = 1.0;
                var bracket = 1.0;
                if (params.gamma != 0.0) {
                    qg = pow(q, params.gamma);
                    let r = select(-1.0, exp(log_p) * log_p / q, q > 0.0);
                    bracket = 1.0 - params.gamma * r;
                }
                loss = -w_y * qg * log_p;
                coef = w_y * qg * bracket;
                hit = coef;
            } else {
                loss = (1.0 - eps) * w_y * (log_sum - (x_y - row_max)) + eps_c * (lse_rel * acc.w - acc.z);
                coef = (1.0 - eps) * w_y + eps_c * acc.w;
                hit = (1.0 - eps) * w_y;
            }
        }
        loss += params.z_loss * lse * lse;
        coef += 2.0 * params.z_loss * lse;
        scale = row_scale(row);
    }
    if (lane == 0u && split == 0u) {
        loss_rows[row] = loss;
        if (ROW_STATS) {
            write_row_stats(row, select(0.0, lse, keep), keep && !PROBS && stat.w == f32(y));
        }
    }
    if (!has(WANT_GRAD)) {
        return;
    }

    // Pass 2: gradient. Dropped rows (ignored, bad target, zero scale) get exact zeros;
    // ignored and bad rows without reading their logits.
    if (!keep) {
        for (var j = start; j < end; j += TEAM) {
            store_row_chunk(row, first_chunk + j, vec4<f32>(0.0));
        }
        return;
    }
    for (var i = 0u; i < steps; i++) {
        let j = start + i * TEAM;
        if (j >= end) {
            break;
        }
        let v = row_chunk(row, first_chunk + j, i, true);
        let k0 = chunk_start(row, first_chunk + j);
        var g = vec4<f32>(0.0);
        for (var e = 0u; e < LANES; e++) {
            let k = u32(k0 + i32(e));
            if (RAGGED && k >= c) {
                continue;
            }
            let x = capped(v[e]);
            let w = class_weight(k);
            // No smoothing, no term: 0·w would make another class's NaN weight reach this row.
            var tt = 0.0;
            if (eps > 0.0) {
                tt = eps_c * w;
            }
            if (PROBS) {
                tt += (1.0 - eps) * w * bitcast<f32>(targets[base + k]);
            } else if (i32(k) == y) {
                tt += hit;
            }
            g[e] = (exp((x - row_max) - log_sum) * coef - tt) * scale;
            if (CAPPED) {
                g[e] *= sech2(v[e] / params.softcap);
            }
        }
        store_row_chunk(row, first_chunk + j, select(g, vec4<f32>(0.0), scale == 0.0));
    }
}
