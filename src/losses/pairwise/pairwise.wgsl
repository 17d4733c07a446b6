// Batch losses over all pairs of rows (metric learning; semantics: docs/LOSSES.md).
//
// A tile engine through workgroup memory: 64 invocations (8×8) share a tile of QT query
// rows × 64 key rows; each owns a block of BLOCK_ROWS × 8 scores (query rows ty + 8a, key
// columns 4tx + b and 32 + 4tx + b) and streams 32-wide depth chunks of the rows as vec4s.
// It computes similarity/distance tiles (`tile_scores`: 8 + BLOCK_ROWS vec4s read from
// workgroup memory per 32·BLOCK_ROWS multiply-adds, 16 per vec4 at 8 rows) and accumulates
// gradient rows from a coefficient tile, one 32-key half at a time (`accumulate`, G += C·K).
//
// InfoNCE (nt-xent, clip, supcon) never stores the N×N matrix: `nce_forward` streams key
// tiles through an online log-sum-exp per query row; `nce_backward` recomputes each tile and
// turns it into gradient coefficients with the saved log-sum-exps (flash-attention style).
// The key range is split across `splits` workgroups per query tile, so that few rows still
// fill a GPU and no invocation loops over every key: each split leaves a partial state
// (forward) or a partial gradient (backward), merged in split order by `nce_merge` and
// `finish`.
// Mined triplets use the distance matrix (`distances`, `mine`: each anchor's row sorted and
// binary-searched), split into row windows, with integer pair counts (exact, deterministic
// atomics) as gradient weights (`mined_backward`).
// `normalize` and `finish` (the normalization's Jacobian) are the per-row steps before and after.

override WG_SIZE: u32 = 256u;
override MODE: u32 = 0u;          // distances: EUCLIDEAN, SQUARED or COSINE (rows pre-normalized)
override MINING: u32 = 0u;        // BATCH_ALL, BATCH_HARD or SEMI_HARD
override EXCLUDE_SELF: bool = true;
// Query rows of a tile per invocation, 1 to 8 (8 but where `backward_blocking` in gpu.rs
// picks fewer to leave registers for `nce_backward`'s gradient rows); the tile's query rows.
override BLOCK_ROWS: u32 = 8u;
override QT: u32 = SIDE * BLOCK_ROWS;

const EUCLIDEAN: u32 = 0u;
const SQUARED: u32 = 1u;
const COSINE: u32 = 2u;
const BATCH_ALL: u32 = 0u;
const BATCH_HARD: u32 = 1u;
const SEMI_HARD: u32 = 2u;
const NORM_EPS: f32 = 1e-12;
const NONE: u32 = 0xffffffffu;

const KT: u32 = 64u;     // key rows of a tile (its columns)
const HALF: u32 = 32u;   // key columns per half of a tile
const KC: u32 = 32u;     // depth chunk: 8 vec4s
const TW: u32 = 64u;     // invocations of the tile kernels (8×8)
const SIDE: u32 = 8u;    // invocations along each side of the tile
const MAX_BLOCK_ROWS: u32 = 8u;

// An invocation's block of a tile: [2a + h][b] for query row ty + 8a (a < BLOCK_ROWS) and
// key column 32h + 4tx + b.
alias Block = array<vec4<f32>, 16>;
// One vec4 per query row of an invocation (a < BLOCK_ROWS).
alias Rows = array<vec4<f32>, MAX_BLOCK_ROWS>;

struct Params {
    dim: u32,
    q_begin: u32,    // first query row of this launch (global index)
    q_count: u32,
    k_begin: u32,    // first key row (global index)
    k_count: u32,
    n: u32,          // row length of the N×N matrices
    plane: u32,      // stride between the planes of the per-row statistics
    inv_tau: f32,
    margin: f32,
    scale: f32,      // upstream gradient; divided by divisor[0] on the device
    splits: u32,     // InfoNCE: key ranges per query tile (one workgroup each)
    k_from: u32,     // mined_backward: the key rows k_begin + [k_from, k_to) of this launch
    k_to: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rows_q: array<f32>;     // query rows [*, dim]
@group(0) @binding(2) var<storage, read> rows_k: array<f32>;     // key rows [*, dim]
@group(0) @binding(3) var<storage, read> labels_q: array<i32>;
@group(0) @binding(4) var<storage, read> labels_k: array<i32>;
@group(0) @binding(5) var<storage, read> stats_q: array<f32>;    // per query row, in planes
@group(0) @binding(6) var<storage, read> stats_k: array<f32>;    // per key row, in planes
@group(0) @binding(7) var<storage, read> divisor: array<f32>;    // [1]
@group(0) @binding(8) var<storage, read> dist_q: array<f32>;     // matrix rows q_begin..
@group(0) @binding(9) var<storage, read> cnt_q: array<i32>;      // count rows q_begin..
@group(0) @binding(10) var<storage, read> cnt_k: array<i32>;     // count rows k_begin..
@group(0) @binding(11) var<storage, read_write> out: array<f32>;
@group(0) @binding(12) var<storage, read_write> out_stats: array<f32>;
@group(0) @binding(13) var<storage, read_write> out_cnt: array<atomic<i32>>;

// 16 KiB in all, the least every adapter allows. `sh_a`: a tile's query rows (QT × 8 vec4s
// of depth), then a coefficient tile of one key half (QT × 8 vec4s of columns, see
// `coef_slot`), and the scratch of the workgroup reductions. `sh_b`: a tile's key rows
// (64 × 8 vec4s, see `key_slot`), or one key half's (32 × 8 vec4s) in `accumulate`.
var<workgroup> sh_a: array<vec4<f32>, 512>;
var<workgroup> sh_b: array<vec4<f32>, 512>;

// Elements c..c+3 of the query (key) row starting at `base`, zeros past the row's `dim`.
fn load_q4(base: u32, c: u32, dim: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var t = 0u; t < 4u; t++) {
        if (c + t < dim) {
            v[t] = rows_q[base + c + t];
        }
    }
    return v;
}

fn load_k4(base: u32, c: u32, dim: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var t = 0u; t < 4u; t++) {
        if (c + t < dim) {
            v[t] = rows_k[base + c + t];
        }
    }
    return v;
}

// Scores of this invocation's block of the tile at (q0, k0): Σ q·k, or Σ(q − k)² when
// `sqdiff`; rows past q_end / k_end read zeros. Called by the whole workgroup (barriers).
fn tile_scores(lid: u32, q0: u32, q_end: u32, k0: u32, k_end: u32, sqdiff: bool) -> Block {
    let ty = lid / SIDE;
    let tx = lid % SIDE;
    let dim = params.dim;
    var acc: Block;
    for (var d0 = 0u; d0 < dim; d0 += KC) {
        // QT query rows and 64 key rows of 8 vec4s each; eight consecutive invocations
        // load one row's 128 bytes.
        for (var m = 0u; m < BLOCK_ROWS; m++) {
            let idx = lid + m * TW;
            let r = idx / 8u;
            var qv = vec4<f32>(0.0);
            if (q0 + r < q_end) {
                qv = load_q4((q0 + r) * dim, d0 + 4u * (idx % 8u), dim);
            }
            sh_a[idx] = qv;
        }
        for (var m = 0u; m < KT / 8u; m++) {
            let idx = lid + m * TW;
            let r = idx / 8u;
            var kv = vec4<f32>(0.0);
            if (k0 + r < k_end) {
                kv = load_k4((k0 + r) * dim, d0 + 4u * (idx % 8u), dim);
            }
            sh_b[key_slot(r, idx % 8u)] = kv;
        }
        workgroupBarrier();
        // Every chunk takes KC / 4 steps, a constant trip the compiler can unroll: past the
        // row's end both tiles hold zeros, which add nothing (0·0, (0 − 0)²). Each step
        // reads the 8 key columns' vec4s once and every query row's once.
        for (var c = 0u; c < KC / 4u; c++) {
            let low = key_columns(tx, c, 0u);
            let high = key_columns(tx, c, 1u);
            for (var a = 0u; a < BLOCK_ROWS; a++) {
                let q = sh_a[(ty + SIDE * a) * 8u + c];
                acc[2u * a] += row_scores(q, low, sqdiff);
                acc[2u * a + 1u] += row_scores(q, high, sqdiff);
            }
        }
        workgroupBarrier();
    }
    return acc;
}

// Where `tile_scores` keeps vec4 `c` of key row `r` (0..64): an invocation reads rows
// 32h + 4tx + b at one depth, which in plain rows of 8 vec4s would fall in one of the eight
// 16-byte bank groups for all eight tx (an 8-way conflict on 32-bank GPUs); here rows
// 32h + 4t + b lie in block (h, b) at t ⊕ c (rotated by the depth), so the eight tx of a
// read hit eight distinct groups, and so do the eight vec4s of a row that eight invocations
// store.
fn key_slot(r: u32, c: u32) -> u32 {
    return (r / HALF) * 256u + (r % 4u) * 64u + c * 8u + ((r / 4u) % 8u + c) % 8u;
}

// Columns: the vec4s at depth step `c` of key rows 32h + 4tx + 0..3.
fn key_columns(tx: u32, c: u32, h: u32) -> mat4x4<f32> {
    let r = HALF * h + 4u * tx;
    return mat4x4<f32>(
        sh_b[key_slot(r, c)],
        sh_b[key_slot(r + 1u, c)],
        sh_b[key_slot(r + 2u, c)],
        sh_b[key_slot(r + 3u, c)],
    );
}

// (q·k_b) or Σ(q − k_b)² for the four columns k_b of `k`.
fn row_scores(q: vec4<f32>, k: mat4x4<f32>, sqdiff: bool) -> vec4<f32> {
    if (sqdiff) {
        let d0 = q - k[0];
        let d1 = q - k[1];
        let d2 = q - k[2];
        let d3 = q - k[3];
        return vec4<f32>(dot(d0, d0), dot(d1, d1), dot(d2, d2), dot(d3, d3));
    }
    return q * k;
}

// Query row and key column (within the tile) of block element e = 4(2a + h) + b.
fn block_row(lid: u32, e: u32) -> u32 {
    return lid / SIDE + SIDE * (e / 8u);
}

fn block_col(lid: u32, e: u32) -> u32 {
    return HALF * ((e / 4u) % 2u) + 4u * (lid % SIDE) + e % 4u;
}

// Where the coefficient tile of a key half keeps vec4 `c4` (columns 4c4..) of row `r`:
// rotated by the row, so that the 32 rows' values of one column, stored by consecutive
// invocations (`mined_backward`'s counts), spread over eight bank groups.
fn coef_slot(r: u32, c4: u32) -> u32 {
    return r * 8u + (c4 + r) % 8u;
}

// Stores this invocation's coefficients of a key half (4 columns of each of its rows) into
// sh_a. Whole workgroup.
fn store_coefficients(lid: u32, c: Rows) {
    workgroupBarrier();
    for (var a = 0u; a < BLOCK_ROWS; a++) {
        sh_a[coef_slot(lid / SIDE + SIDE * a, lid % SIDE)] = c[a];
    }
}

// The columns of key half `h` of a block.
fn half_columns(b: Block, h: u32) -> Rows {
    var c: Rows;
    for (var a = 0u; a < BLOCK_ROWS; a++) {
        c[a] = b[2u * a + h];
    }
    return c;
}

// Where this invocation's gradient rows start in `out` (a split's partial gradient).
var<private> out_base: u32 = 0u;

// Depth chunks of gradient rows that `accumulate` keeps in registers across key tiles (the
// row length in chunks; GRAD_CHUNKS · BLOCK_ROWS ≤ 32 vec4s, `grad_regs[chunk · BLOCK_ROWS
// + a]`, fewer block rows for more chunks: `backward_blocking` in gpu.rs; `write_gradient`
// stores them once), or 0: it adds each key half's part into `out` (read-modify-write). The
// sums are formed in the same order either way.
override GRAD_CHUNKS: u32 = 0u;
var<private> grad_regs: array<vec4<f32>, 32>;

// out[i] += Σ_j sh_a[i][j]·rows_k[j] for the tile's query rows i (global) and the 32 key
// rows kh.. of a half (zeros past k_end); sh_a must hold the half's coefficient tile. With
// `diff`, the terms are sh_a[i][j]·(rows_q[i] − rows_k[j]) instead: each difference is
// formed before it is scaled, so a large coefficient of a close pair cannot cancel in f32.
// Whole workgroup.
fn accumulate(lid: u32, q0: u32, q_end: u32, kh: u32, k_end: u32, diff: bool) {
    workgroupBarrier();
    let ty = lid / SIDE;
    let tx = lid % SIDE;
    let dim = params.dim;
    // A constant trip where the gradient stays in registers, so that they are indexed by
    // constants once the loop is unrolled.
    let chunks = select((dim + KC - 1u) / KC, GRAD_CHUNKS, GRAD_CHUNKS > 0u);
    for (var chunk = 0u; chunk < chunks; chunk++) {
        let d0 = chunk * KC;
        for (var m = 0u; m < HALF / 8u; m++) {
            let idx = lid + m * TW;
            let r = idx / 8u;
            var kv = vec4<f32>(0.0);
            if (kh + r < k_end) {
                kv = load_k4((kh + r) * dim, d0 + 4u * (idx % 8u), dim);
            }
            sh_b[idx] = kv;
        }
        workgroupBarrier();
        // Rows ty + 8a, dimensions d0 + 4tx .. +3.
        var g: Rows;
        if (diff) {
            var q: Rows;
            for (var a = 0u; a < BLOCK_ROWS; a++) {
                let i = q0 + ty + SIDE * a;
                q[a] = select(vec4<f32>(0.0), load_q4(i * dim, d0 + 4u * tx, dim), i < q_end);
            }
            for (var j = 0u; j < HALF; j++) {
                let k = sh_b[j * 8u + tx];
                for (var a = 0u; a < BLOCK_ROWS; a++) {
                    let c = sh_a[coef_slot(ty + SIDE * a, j / 4u)][j % 4u];
                    g[a] += c * (q[a] - k);
                }
            }
        } else {
            // Columns of `k`: four consecutive keys.
            for (var j4 = 0u; j4 < HALF / 4u; j4++) {
                let k = mat4x4<f32>(
                    sh_b[(4u * j4) * 8u + tx],
                    sh_b[(4u * j4 + 1u) * 8u + tx],
                    sh_b[(4u * j4 + 2u) * 8u + tx],
                    sh_b[(4u * j4 + 3u) * 8u + tx],
                );
                for (var a = 0u; a < BLOCK_ROWS; a++) {
                    g[a] += k * sh_a[coef_slot(ty + SIDE * a, j4)];
                }
            }
        }
        if (GRAD_CHUNKS > 0u) {
            for (var a = 0u; a < BLOCK_ROWS; a++) {
                grad_regs[chunk * BLOCK_ROWS + a] += g[a];
            }
        } else {
            for (var a = 0u; a < BLOCK_ROWS; a++) {
                let i = q0 + ty + SIDE * a;
                for (var t = 0u; t < 4u; t++) {
                    let d = d0 + 4u * tx + t;
                    if (i < q_end && d < dim) {
                        out[out_base + i * dim + d] += g[a][t];
                    }
                }
            }
        }
        workgroupBarrier();
    }
}

// Stores the gradient rows `accumulate` kept in registers (GRAD_CHUNKS > 0) into `out`.
fn write_gradient(lid: u32, q0: u32, q_end: u32) {
    let dim = params.dim;
    for (var chunk = 0u; chunk < GRAD_CHUNKS; chunk++) {
        for (var a = 0u; a < BLOCK_ROWS; a++) {
            let i = q0 + lid / SIDE + SIDE * a;
            for (var t = 0u; t < 4u; t++) {
                let d = chunk * KC + 4u * (lid % SIDE) + t;
                if (i < q_end && d < dim) {
                    out[out_base + i * dim + d] = grad_regs[chunk * BLOCK_ROWS + a][t];
                }
            }
        }
    }
}

// Sums over the workgroup of two values, in a fixed order. Whole workgroup.
fn workgroup_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    workgroupBarrier();
    sh_a[lid] = vec4<f32>(v, 0.0, 0.0);
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            sh_a[lid] += sh_a[lid + stride];
        }
    }
    workgroupBarrier();
    return sh_a[0].xy;
}

// The largest of one value per invocation over the workgroup. Whole workgroup.
fn workgroup_max(lid: u32, v: f32) -> f32 {
    workgroupBarrier();
    sh_a[lid] = vec4<f32>(v, 0.0, 0.0, 0.0);
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            sh_a[lid].x = max(sh_a[lid].x, sh_a[lid + stride].x);
        }
    }
    workgroupBarrier();
    return sh_a[0].x;
}

// The best (value, index) over the workgroup: largest value when `largest`, else smallest;
// ties to the lower index; index NONE for no candidate. Whole workgroup.
fn workgroup_best(lid: u32, v: f32, idx: u32, largest: bool) -> vec2<u32> {
    workgroupBarrier();
    sh_a[lid] = vec4<f32>(v, bitcast<f32>(idx), 0.0, 0.0);
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            let o = sh_a[lid + stride];
            let me = sh_a[lid];
            if (better(o.x, bitcast<u32>(o.y), me.x, bitcast<u32>(me.y), largest)) {
                sh_a[lid] = o;
            }
        }
    }
    workgroupBarrier();
    return bitcast<vec2<u32>>(sh_a[0].xy);
}

fn better(v: f32, i: u32, best_v: f32, best_i: u32, largest: bool) -> bool {
    if (i == NONE) {
        return false;
    }
    if (best_i == NONE) {
        return true;
    }
    let strictly = select((v < best_v), (v > best_v), largest);
    return strictly || (v == best_v && i < best_i);
}

// --- per-row steps -------------------------------------------------------------------

// out = rows_q / max(‖row‖, 1e-12), out_stats = ‖row‖; one workgroup per row.
@compute @workgroup_size(WG_SIZE)
fn normalize(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = params.q_begin + group_index(wid, nwg);
    if (row >= params.q_begin + params.q_count) {
        return;
    }
    let base = row * params.dim;
    // Rows with entries past 1e15 are scaled by their largest magnitude before squaring, so
    // the sum of squares cannot overflow f32 (it did from |x| ~ 1e19); other rows, and
    // non-finite ones (whose inf or NaN must propagate), are summed as they are.
    var largest = 0.0;
    for (var d = lid; d < params.dim; d += WG_SIZE) {
        largest = max(largest, abs(rows_q[base + d]));
    }
    largest = workgroup_max(lid, largest);
    let scale = select(1.0, largest, largest > 1e15 && largest <= 3.4028235e38);
    var ss = 0.0;
    for (var d = lid; d < params.dim; d += WG_SIZE) {
        let v = rows_q[base + d] / scale;
        ss += v * v;
    }
    let norm = scale * sqrt(workgroup_sum2(lid, vec2<f32>(ss, 0.0)).x);
    // A NaN norm stays NaN (as PyTorch's clamp_min): the whole row becomes NaN.
    let div = select(norm, NORM_EPS, norm < NORM_EPS);
    for (var d = lid; d < params.dim; d += WG_SIZE) {
        out[base + d] = rows_q[base + d] / div;
    }
    if (lid == 0u) {
        out_stats[row] = norm;
    }
}

// Turns G (in out), the gradient for the normalized rows (in rows_q, norms in stats_q),
// into the raw rows' gradient: (G − n(n·G))/‖x‖, or G/eps where the norm was clamped.
@compute @workgroup_size(WG_SIZE)
fn finish(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = params.q_begin + group_index(wid, nwg);
    if (row >= params.q_begin + params.q_count) {
        return;
    }
    let base = row * params.dim;
    // The splits' partial gradients, added in split order into split 0's rows.
    let split_stride = params.q_count * params.dim;
    for (var s = 1u; s < params.splits; s++) {
        for (var d = lid; d < params.dim; d += WG_SIZE) {
            out[base + d] += out[s * split_stride + base + d];
        }
    }
    var dot = 0.0;
    for (var d = lid; d < params.dim; d += WG_SIZE) {
        dot += out[base + d] * rows_q[base + d];
    }
    dot = workgroup_sum2(lid, vec2<f32>(dot, 0.0)).x;
    let norm = stats_q[row];
    let clamped = norm < NORM_EPS; // false for NaN, which then reaches the whole row
    for (var d = lid; d < params.dim; d += WG_SIZE) {
        let g = out[base + d];
        out[base + d] = select((g - rows_q[base + d] * dot) / norm, g / NORM_EPS, clamped);
    }
}

// --- InfoNCE ---------------------------------------------------------------------------

// Per query row i over all key rows j (j ≠ i when EXCLUDE_SELF), s = q_i·k_j/τ: writes the
// planes of out_stats: lse, 1/|P(i)| (0 without positives), the row loss
// lse − mean_{p∈P(i)} s_ip (0 without positives), and 1/0 for whether the row counts.
@compute @workgroup_size(TW)
fn nce_forward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let keys = split_keys(group_index(wid, nwg));
    let q0 = keys.x;
    let q_end = params.q_begin + params.q_count;
    if (q0 >= q_end) {
        return;
    }
    let k_begin = keys.y;
    let k_end = keys.z;
    // Per row a of the block: running log-sum-exp and (Σ s, count) over positives.
    var st: array<vec2<f32>, MAX_BLOCK_ROWS>;
    var pos: array<vec2<f32>, MAX_BLOCK_ROWS>;
    for (var a = 0u; a < BLOCK_ROWS; a++) {
        st[a] = vec2<f32>(F32_LOWEST, 0.0);
        pos[a] = vec2<f32>(0.0);
    }
    for (var k0 = k_begin; k0 < k_end; k0 += KT) {
        let s = tile_scores(lid, q0, q_end, k0, k_end, false);
        for (var e = 0u; e < 8u * BLOCK_ROWS; e++) {
            let a = e / 8u;
            let i = q0 + block_row(lid, e);
            let j = k0 + block_col(lid, e);
            if (i < q_end && j < k_end && !(EXCLUDE_SELF && i == j)) {
                let v = s[e / 4u][e % 4u] * params.inv_tau;
                st[a] = lse_push(st[a], v);
                if (labels_q[i] == labels_k[j]) {
                    pos[a] += vec2<f32>(v, 1.0);
                }
            }
        }
    }
    // Merge the 8 invocations of each row, in order: sh_a[row·8 + tx].
    for (var a = 0u; a < BLOCK_ROWS; a++) {
        sh_a[block_row(lid, a * 8u) * SIDE + lid % SIDE] = vec4<f32>(st[a], pos[a]);
    }
    workgroupBarrier();
    if (lid < QT && q0 + lid < q_end) {
        var total = vec2<f32>(F32_LOWEST, 0.0);
        var p = vec2<f32>(0.0);
        for (var t = 0u; t < SIDE; t++) {
            let v = sh_a[lid * SIDE + t];
            total = lse_merge(total, v.xy);
            p += v.zw;
        }
        let i = q0 + lid;
        if (params.splits == 1u) {
            write_row_stats(i, total, p);
        } else {
            let at = 4u * (keys.w * params.plane + i);
            out[at] = total.x;
            out[at + 1u] = total.y;
            out[at + 2u] = p.x;
            out[at + 3u] = p.y;
        }
    }
}

// (first query row, first key, key end, split) of workgroup g: query tile g mod tiles,
// split g / tiles, each split a run of whole key tiles.
fn split_keys(g: u32) -> vec4<u32> {
    let tiles = (params.q_count + QT - 1u) / QT;
    let split = g / tiles;
    let key_tiles = (params.k_count + KT - 1u) / KT;
    let span = ((key_tiles + params.splits - 1u) / params.splits) * KT;
    let k_end = params.k_begin + params.k_count;
    let begin = min(params.k_begin + split * span, k_end);
    let q0 = select(params.q_begin + (g % tiles) * QT, NONE, split >= params.splits);
    return vec4<u32>(q0, begin, min(begin + span, k_end), split);
}

// The statistics planes of row i from its log-sum-exp state and (Σ positive s, count).
fn write_row_stats(i: u32, total: vec2<f32>, p: vec2<f32>) {
    let lse = total.x + log(total.y);
    let valid = p.y > 0.0;
    let inv = select(0.0, 1.0 / p.y, valid);
    out_stats[i] = lse;
    out_stats[params.plane + i] = inv;
    out_stats[2u * params.plane + i] = select(0.0, lse - p.x * inv, valid);
    out_stats[3u * params.plane + i] = select(0.0, 1.0, valid);
}

// Merges the splits' partial states of each query row (in stats_q, 4 per split and row) in
// split order and writes the row's statistics planes. One invocation per row.
@compute @workgroup_size(WG_SIZE)
fn nce_merge(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.q_count) {
        return;
    }
    let i = params.q_begin + r;
    var total = vec2<f32>(F32_LOWEST, 0.0);
    var p = vec2<f32>(0.0);
    for (var s = 0u; s < params.splits; s++) {
        let at = 4u * (s * params.plane + i);
        total = lse_merge(total, vec2<f32>(stats_q[at], stats_q[at + 1u]));
        p += vec2<f32>(stats_q[at + 2u], stats_q[at + 3u]);
    }
    write_row_stats(i, total, p);
}

// Gradient rows G_i = Σ_j c_ij·k_j for the query rows, recomputing each similarity tile:
// c_ij = w·[(e^{s_ij − lse_i} − pos_ij/|P(i)|) + (e^{s_ij − lse_j} − pos_ij/|P(j)|)]/τ, the
// terms of anchor i (query side) and of anchor j (key side, whose loss holds s_ji = s_ij),
// each only for anchors that count; w = upstream / number of anchors that count.
@compute @workgroup_size(TW)
fn nce_backward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let keys = split_keys(group_index(wid, nwg));
    let q0 = keys.x;
    let q_end = params.q_begin + params.q_count;
    if (q0 >= q_end) {
        return;
    }
    let k_end = keys.z;
    // Each split accumulates into its own copy of the gradient rows.
    out_base = keys.w * params.n * params.dim;
    let div = divisor[0];
    let w = select(params.scale / div * params.inv_tau, 0.0, div == 0.0);
    let plane = params.plane;
    for (var k0 = keys.y; k0 < k_end; k0 += KT) {
        let s = tile_scores(lid, q0, q_end, k0, k_end, false);
        var coef: Block;
        for (var e = 0u; e < 8u * BLOCK_ROWS; e++) {
            let i = q0 + block_row(lid, e);
            let j = k0 + block_col(lid, e);
            var c = 0.0;
            if (i < q_end && j < k_end && !(EXCLUDE_SELF && i == j)) {
                let v = s[e / 4u][e % 4u] * params.inv_tau;
                let pos = labels_q[i] == labels_k[j];
                let inv_i = stats_q[plane + i];
                let inv_j = stats_k[plane + j];
                let term_i = exp(v - stats_q[i]) - select(0.0, inv_i, pos);
                let term_j = exp(v - stats_k[j]) - select(0.0, inv_j, pos);
                c = w * (select(0.0, term_i, inv_i > 0.0) + select(0.0, term_j, inv_j > 0.0));
            }
            coef[e / 4u][e % 4u] = c;
        }
        for (var h = 0u; h < 2u && k0 + HALF * h < k_end; h++) {
            store_coefficients(lid, half_columns(coef, h));
            accumulate(lid, q0, q_end, k0 + HALF * h, k_end, false);
        }
    }
    write_gradient(lid, q0, q_end);
}

// --- mined triplets ----------------------------------------------------------------------

// The distance matrix rows of this launch's window: out[(i − q_begin)·n + j] = D_ij.
// Workgroups cover (query tile, key tile) pairs.
@compute @workgroup_size(TW)
fn distances(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let key_tiles = (params.k_count + KT - 1u) / KT;
    let g = group_index(wid, nwg);
    let q0 = params.q_begin + (g / key_tiles) * QT;
    let k0 = params.k_begin + (g % key_tiles) * KT;
    let q_end = params.q_begin + params.q_count;
    let k_end = params.k_begin + params.k_count;
    if (q0 >= q_end) {
        return;
    }
    let s = tile_scores(lid, q0, q_end, k0, k_end, MODE != COSINE);
    for (var e = 0u; e < 8u * BLOCK_ROWS; e++) {
        let i = q0 + block_row(lid, e);
        let j = k0 + block_col(lid, e);
        if (i < q_end && j < k_end) {
            var v = s[e / 4u][e % 4u];
            if (MODE == EUCLIDEAN) {
                v = sqrt(v);
            } else if (MODE == COSINE) {
                v = 1.0 - v;
            }
            out[(i - params.q_begin) * params.n + j] = v;
        }
    }
}

// An anchor's row sorted for mining: one (distance, tag) pair per element in `out`, the
// tag (class << 28) | index as an f32 bit pattern (classes 1 to 3 keep it a normal float,
// never flushed or canonicalized): negatives, then positives, then the anchor itself, each
// ascending by distance and then by index, so the ties of docs/LOSSES.md (lowest index)
// fall out of the order.
const NEGATIVE: u32 = 1u;
const POSITIVE: u32 = 2u;
const ANCHOR: u32 = 3u;
const TAG_INDEX: u32 = 0x0fffffffu;
// Positives listed in workgroup memory by the miner for few positives (one per invocation
// of a 256-wide workgroup): indices, distances, and per sorted place a histogram count
// (batch-all) or the nearest negative's distance key and index (semi-hard).
const LIST: u32 = 256u; // LISTED_POSITIVES in gpu.rs
var<workgroup> sh_list: array<u32, LIST>;
var<workgroup> sh_dist: array<f32, LIST>;
var<workgroup> sh_scan: array<u32, LIST>;
var<workgroup> sh_bucket_key: array<atomic<u32>, LIST>;
var<workgroup> sh_bucket_index: array<atomic<u32>, LIST>;
var<workgroup> sh_chunk: u32;

// The distance's bits as an unsigned key in the floats' order (−0 as +0, NaN last).
fn distance_key(d: f32) -> u32 {
    let b = bitcast<u32>(select(d, 0.0, d == 0.0));
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn sorts_before(x: vec2<f32>, y: vec2<f32>) -> bool {
    let tx = bitcast<u32>(x.y);
    let ty = bitcast<u32>(y.y);
    if ((tx >> 28u) != (ty >> 28u)) {
        return tx < ty;
    }
    let kx = distance_key(x.x);
    let ky = distance_key(y.x);
    return kx < ky || (kx == ky && tx < ty);
}

fn sorted_at(base: u32, i: u32) -> vec2<f32> {
    return vec2<f32>(out[base + 2u * i], out[base + 2u * i + 1u]);
}

fn sorted_index(e: vec2<f32>) -> u32 {
    return bitcast<u32>(e.y) & TAG_INDEX;
}

// The positions (lo, hi) of comparator `t` of the stage (k, j) of a bitonic network in its
// all-ascending form: each merge of k starts by comparing mirrored halves, then halves j.
fn comparator(t: u32, j: u32, k: u32) -> vec2<u32> {
    let lo = (t / j) * 2u * j + t % j;
    return vec2<u32>(lo, select(lo + j, lo ^ (k - 1u), j == k >> 1u));
}

// Inclusive prefix sums of sh_scan over the LIST invocations, in place. Whole workgroup.
fn scan_counts(lid: u32) {
    for (var s = 1u; s < LIST; s <<= 1u) {
        workgroupBarrier();
        let v = select(0u, sh_scan[lid - s], lid >= s);
        workgroupBarrier();
        sh_scan[lid] += v;
    }
}

// Sorts the `n` pairs at `base` ascending: a bitonic network in its all-ascending form
// (each merge starts by comparing mirrored halves), over the next power of two with the
// pairs past `n` virtual: they sort last and no comparator would move them, so comparators
// that reach them are skipped. Whole workgroup; storage barriers order the stages.
fn sort_row(lid: u32, base: u32, n: u32) {
    let top = select(1u, 1u << (32u - countLeadingZeros(n - 1u)), n > 1u);
    for (var k = 2u; k <= top; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            for (var t = lid; t < (top >> 1u); t += WG_SIZE) {
                let pair = comparator(t, j, k);
                let lo = pair.x;
                let hi = pair.y;
                if (hi < n) {
                    let x = sorted_at(base, lo);
                    let y = sorted_at(base, hi);
                    if (sorts_before(y, x)) {
                        out[base + 2u * lo] = y.x;
                        out[base + 2u * lo + 1u] = y.y;
                        out[base + 2u * hi] = x.x;
                        out[base + 2u * hi + 1u] = x.y;
                    }
                }
            }
            storageBarrier();
        }
    }
}

// The first position in [lo, hi) of the sorted row whose class is above `kind`.
fn class_end(base: u32, lo: u32, hi: u32, kind: u32) -> u32 {
    var a = lo;
    var b = hi;
    while (a < b) {
        let mid = (a + b) / 2u;
        if ((bitcast<u32>(out[base + 2u * mid + 1u]) >> 28u) > kind) {
            b = mid;
        } else {
            a = mid + 1u;
        }
    }
    return a;
}

// Lists the first LIST positives of anchor `a` in index order: indices in sh_list,
// distances in sh_dist. Each invocation counts the positives of its own run of candidates,
// one workgroup scan places the runs. Returns how many positives the anchor has (uniform).
fn list_positives(lid: u32, a: u32, label: i32) -> u32 {
    let n = params.n;
    let row = (a - params.q_begin) * n;
    let per = (n + LIST - 1u) / LIST;
    let begin = min(lid * per, n);
    let end = min(begin + per, n);
    var own = 0u;
    for (var j = begin; j < end; j++) {
        own += select(0u, 1u, j != a && labels_k[j] == label);
    }
    sh_scan[lid] = own;
    scan_counts(lid);
    var at = sh_scan[lid] - own;
    for (var j = begin; j < end && at < LIST; j++) {
        if (j != a && labels_k[j] == label) {
            sh_list[at] = j;
            sh_dist[at] = dist_q[row + j];
            at++;
        }
    }
    if (lid == LIST - 1u) {
        sh_chunk = sh_scan[lid];
    }
    return workgroupUniformLoad(&sh_chunk);
}

// Sorts the `count` ≤ LIST listed positives by distance, then index (`sort_row`'s network
// in workgroup memory).
fn sort_listed(lid: u32, count: u32) {
    let top = select(1u, 1u << (32u - countLeadingZeros(count - 1u)), count > 1u);
    for (var k = 2u; k <= top; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            workgroupBarrier();
            let pair = comparator(lid, j, k);
            let lo = pair.x;
            let hi = pair.y;
            if (lid < (top >> 1u) && hi < count) {
                let x = vec2<f32>(sh_dist[lo], bitcast<f32>((POSITIVE << 28u) | sh_list[lo]));
                let y = vec2<f32>(sh_dist[hi], bitcast<f32>((POSITIVE << 28u) | sh_list[hi]));
                if (sorts_before(y, x)) {
                    sh_dist[lo] = y.x;
                    sh_dist[hi] = x.x;
                    sh_list[lo] = sorted_index(y);
                    sh_list[hi] = sorted_index(x);
                }
            }
        }
    }
    workgroupBarrier();
}

// Batch-all and semi-hard for an anchor with at most LIST positives: they are sorted in
// workgroup memory and every negative binary-searches them, O(N log P) for the anchor.
// Batch-all: a negative forms triplets with a suffix of the sorted positives (from s_n,
// by the test d_ap − d_an + m > 0, monotone in d_ap), so its weight is −(P − s_n) and a
// positive's is the number of negatives with s_n at or below its place (a histogram of s_n,
// summed by a scan). Semi-hard: a negative is farther than a prefix of the sorted
// positives (those below u_n); each bucket u keeps its nearest negative (ties to the
// lowest index: an atomic min of the distance key, then of the index among those at it),
// and a positive takes the nearest over the buckets at or past its place, else the
// farthest negative. Returns the invocation's (loss, count).
fn mine_listed(lid: u32, a: u32, label: i32, positives: u32) -> vec2<f32> {
    let n = params.n;
    let row = (a - params.q_begin) * n;
    let m = params.margin;
    var loss = 0.0;
    var count = 0.0;
    sort_listed(lid, positives);
    atomicStore(&sh_bucket_key[lid], select(NONE, 0u, MINING == BATCH_ALL));
    atomicStore(&sh_bucket_index[lid], NONE);
    var farthest = vec2<f32>(0.0, bitcast<f32>(NONE));
    workgroupBarrier();
    for (var j = lid; j < n; j += WG_SIZE) {
        let d = dist_q[row + j];
        if (labels_k[j] == label) {
            continue;
        }
        if (MINING == BATCH_ALL) {
            var lo = 0u;
            var hi = positives;
            while (lo < hi) {
                let mid = (lo + hi) / 2u;
                if (sh_dist[mid] - d + m > 0.0) {
                    hi = mid;
                } else {
                    lo = mid + 1u;
                }
            }
            if (lo < positives) {
                atomicAdd(&out_cnt[row + j], -i32(positives - lo));
                loss -= f32(positives - lo) * d;
                atomicAdd(&sh_bucket_key[lo], 1u);
            }
        } else {
            if (better(d, j, farthest.x, bitcast<u32>(farthest.y), true)) {
                farthest = vec2<f32>(d, bitcast<f32>(j));
            }
            let u = below(d, positives);
            if (u > 0u) {
                atomicMin(&sh_bucket_key[u - 1u], distance_key(d));
            }
        }
    }
    if (MINING == BATCH_ALL) {
        workgroupBarrier();
        sh_scan[lid] = atomicLoad(&sh_bucket_key[lid]);
        scan_counts(lid);
        let k = sh_scan[lid];
        if (lid < positives && k > 0u) {
            atomicAdd(&out_cnt[row + sh_list[lid]], i32(k));
            loss += f32(k) * (sh_dist[lid] + m);
            count += f32(k);
        }
    } else {
        let far = workgroup_best(lid, farthest.x, bitcast<u32>(farthest.y), true);
        for (var j = lid; j < n; j += WG_SIZE) {
            let d = dist_q[row + j];
            if (labels_k[j] != label) {
                let u = below(d, positives);
                if (u > 0u && atomicLoad(&sh_bucket_key[u - 1u]) == distance_key(d)) {
                    atomicMin(&sh_bucket_index[u - 1u], j);
                }
            }
        }
        workgroupBarrier();
        if (lid < positives && far.y != NONE) {
            var pick = far;
            var nearest = vec2<u32>(NONE, NONE);
            for (var u = lid; u < positives; u++) {
                let key = atomicLoad(&sh_bucket_key[u]);
                let index = atomicLoad(&sh_bucket_index[u]);
                if (key < nearest.x || (key == nearest.x && index < nearest.y)) {
                    nearest = vec2<u32>(key, index);
                }
            }
            if (nearest.y != NONE) {
                pick = vec2<u32>(bitcast<u32>(dist_q[row + nearest.y]), nearest.y);
            }
            let t = sh_dist[lid] - bitcast<f32>(pick.x) + m;
            loss += max(t, 0.0);
            count += 1.0;
            if (t > 0.0) {
                atomicAdd(&out_cnt[row + sh_list[lid]], 1);
                atomicAdd(&out_cnt[row + pick.y], -1);
            }
        }
    }
    return vec2<f32>(loss, count);
}

// How many of the sorted listed positives are nearer than `d`.
fn below(d: f32, positives: u32) -> u32 {
    var lo = 0u;
    var hi = positives;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (sh_dist[mid] < d) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Batch-all and semi-hard for an anchor with many positives: its row sorted (`sort_row`,
// in `out`) and binary-searched, O(N log² N) for the anchor however many positives it has.
// A positive at d_ap forms a triplet with the negatives below d_ap + m (a prefix of the
// sorted negatives), a negative with the positives above d_an − m (a suffix), both decided
// by the one test d_ap − d_an + m > 0, monotone in either distance: batch-all's pair
// weights are counts (k per positive, −c per negative) and its loss sum
// Σ_p k_p·(d_ap + m) − Σ_n c_n·d_an; semi-hard's negative is the first past d_ap, else
// the first of the largest distance. Returns the invocation's (loss, count).
fn mine_sorted(lid: u32, a: u32, label: i32) -> vec2<f32> {
    let n = params.n;
    let row = (a - params.q_begin) * n;
    let base = 2u * row;
    let m = params.margin;
    var loss = 0.0;
    var count = 0.0;
    for (var j = lid; j < n; j += WG_SIZE) {
        let kind = select(select(NEGATIVE, POSITIVE, labels_k[j] == label), ANCHOR, j == a);
        out[base + 2u * j] = dist_q[row + j];
        out[base + 2u * j + 1u] = bitcast<f32>((kind << 28u) | j);
    }
    storageBarrier();
    sort_row(lid, base, n);
    let negatives = class_end(base, 0u, n, NEGATIVE);
    let positives_end = class_end(base, negatives, n, POSITIVE);
    for (var q = negatives + lid; q < positives_end; q += WG_SIZE) {
        let e = sorted_at(base, q);
        let d_ap = e.x;
        var lo = 0u;
        var hi = negatives;
        if (MINING == BATCH_ALL) {
            // The negatives forming a triplet with this positive: a prefix.
            while (lo < hi) {
                let mid = (lo + hi) / 2u;
                if (d_ap - out[base + 2u * mid] + m > 0.0) {
                    lo = mid + 1u;
                } else {
                    hi = mid;
                }
            }
            if (lo > 0u) {
                atomicAdd(&out_cnt[row + sorted_index(e)], i32(lo));
                loss += f32(lo) * (d_ap + m);
                count += f32(lo);
            }
        } else if (negatives > 0u) {
            // The first negative farther than the positive, else the first of the farthest.
            while (lo < hi) {
                let mid = (lo + hi) / 2u;
                if (out[base + 2u * mid] > d_ap) {
                    hi = mid;
                } else {
                    lo = mid + 1u;
                }
            }
            if (lo == negatives) {
                let far = out[base + 2u * (negatives - 1u)];
                lo = 0u;
                hi = negatives - 1u;
                while (lo < hi) {
                    let mid = (lo + hi) / 2u;
                    if (out[base + 2u * mid] >= far) {
                        hi = mid;
                    } else {
                        lo = mid + 1u;
                    }
                }
            }
            let pick = sorted_at(base, lo);
            let t = d_ap - pick.x + m;
            loss += max(t, 0.0);
            count += 1.0;
            if (t > 0.0) {
                atomicAdd(&out_cnt[row + sorted_index(e)], 1);
                atomicAdd(&out_cnt[row + sorted_index(pick)], -1);
            }
        }
    }
    if (MINING == BATCH_ALL) {
        for (var q = lid; q < negatives; q += WG_SIZE) {
            let e = sorted_at(base, q);
            // The positives forming a triplet with this negative: a suffix.
            var lo = negatives;
            var hi = positives_end;
            while (lo < hi) {
                let mid = (lo + hi) / 2u;
                if (out[base + 2u * mid] - e.x + m > 0.0) {
                    hi = mid;
                } else {
                    lo = mid + 1u;
                }
            }
            let uses = positives_end - lo;
            if (uses > 0u) {
                atomicAdd(&out_cnt[row + sorted_index(e)], -i32(uses));
                loss -= f32(uses) * e.x;
            }
        }
    }
    return vec2<f32>(loss, count);
}

// Mines the rows of the window's anchors, one workgroup each. Batch-hard takes the
// farthest positive and the nearest negative in one pass. Batch-all and semi-hard never
// scan the negatives per positive pair: an anchor's positives are listed, then sorted in
// workgroup memory when at most LIST (`mine_listed`, O(N log P)), else the whole row is
// sorted in `out` (`mine_sorted`, O(N log² N)). Adds the chosen pairs' gradient weights to
// out_cnt (+1 per use as D_ap, −1 per use as D_an, only for triplets with a positive loss;
// integer atomics, so the order does not matter) and writes the anchor's loss sum and
// count to out_stats[a] of the two planes. A NaN distance in the anchor's row makes the
// anchor's count NaN.
@compute @workgroup_size(WG_SIZE)
fn mine(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let local_a = group_index(wid, nwg);
    if (local_a >= params.q_count) {
        return;
    }
    let a = params.q_begin + local_a;
    let n = params.n;
    let row = local_a * n;
    let label = labels_q[a];
    var sums = vec2<f32>(0.0);
    var nan = false;
    for (var j = lid; j < n; j += WG_SIZE) {
        nan = nan || (j != a && is_nan(dist_q[row + j]));
    }
    if (MINING == BATCH_HARD) {
        var p_best = vec2<f32>(0.0, bitcast<f32>(NONE));
        var n_best = vec2<f32>(0.0, bitcast<f32>(NONE));
        for (var j = lid; j < n; j += WG_SIZE) {
            let d = dist_q[row + j];
            if (labels_k[j] == label) {
                if (j != a && better(d, j, p_best.x, bitcast<u32>(p_best.y), true)) {
                    p_best = vec2<f32>(d, bitcast<f32>(j));
                }
            } else if (better(d, j, n_best.x, bitcast<u32>(n_best.y), false)) {
                n_best = vec2<f32>(d, bitcast<f32>(j));
            }
        }
        let p = workgroup_best(lid, p_best.x, bitcast<u32>(p_best.y), true);
        let q = workgroup_best(lid, n_best.x, bitcast<u32>(n_best.y), false);
        if (lid == 0u && p.y != NONE && q.y != NONE) {
            let t = bitcast<f32>(p.x) - bitcast<f32>(q.x) + params.margin;
            sums = vec2<f32>(max(t, 0.0), 1.0);
            if (t > 0.0) {
                atomicAdd(&out_cnt[row + p.y], 1);
                atomicAdd(&out_cnt[row + q.y], -1);
            }
        }
    } else {
        let positives = list_positives(lid, a, label);
        if (positives <= LIST) {
            sums = mine_listed(lid, a, label, positives);
        } else {
            sums = mine_sorted(lid, a, label);
        }
    }
    sums = workgroup_sum2(lid, sums);
    let any_nan = workgroup_sum2(lid, vec2<f32>(select(0.0, 1.0, nan), 0.0)).x > 0.0;
    if (lid == 0u) {
        out_stats[a] = sums.x;
        out_stats[params.plane + a] = select(sums.y, bitcast<f32>(0x7fc00000u), any_nan);
    }
}

// Gradient rows for the query rows of this window from the key rows of another:
// c_ij = (C_ij + C_ji)·f(D_ij)·upstream/divisor with f = 1/D (euclidean, 0 at 0),
// 2 (squared), −1 (cosine, on normalized rows); out_i += Σ_j c_ij·(e_i − e_j) for
// distances, Σ_j c_ij·n_j for cosine (accumulating over key windows).
@compute @workgroup_size(TW)
fn mined_backward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let q0 = params.q_begin + group_index(wid, nwg) * QT;
    let q_end = params.q_begin + params.q_count;
    if (q0 >= q_end) {
        return;
    }
    let k_end = params.k_begin + params.k_count;
    let n = params.n;
    let div = divisor[0];
    let w = select(params.scale / div, 0.0, div == 0.0);
    let k_stop = min(params.k_begin + params.k_to, k_end);
    // Key halves of 32 columns: the coefficient tile of one half fills sh_a.
    for (var kh = params.k_begin + params.k_from; kh < k_stop; kh += HALF) {
        // C_ji for the half, read along rows of the key window's counts (consecutive
        // invocations, consecutive query columns) and transposed through workgroup memory
        // (as f32: exact, counts stay far below 2^24).
        workgroupBarrier();
        for (var m = 0u; m < QT / 2u; m++) {
            let idx = lid + m * TW;
            let j = kh + idx / QT;
            let i = q0 + idx % QT;
            var count = 0;
            if (i < q_end && j < k_stop) {
                count = cnt_k[(j - params.k_begin) * n + i];
            }
            sh_a[coef_slot(idx % QT, idx / QT / 4u)][(idx / QT) % 4u] = f32(count);
        }
        workgroupBarrier();
        var coef: Rows;
        for (var a = 0u; a < BLOCK_ROWS; a++) {
            let r = lid / SIDE + SIDE * a;
            let transposed = sh_a[coef_slot(r, lid % SIDE)];
            for (var b = 0u; b < 4u; b++) {
                let i = q0 + r;
                let j = kh + 4u * (lid % SIDE) + b;
                var c = 0.0;
                if (i < q_end && j < k_end && i != j) {
                    let at = (i - params.q_begin) * n + j;
                    let uses = f32(cnt_q[at]) + transposed[b];
                    var f = -1.0;
                    if (MODE == EUCLIDEAN) {
                        let d = dist_q[at];
                        f = select(0.0, 1.0 / d, d > 0.0);
                    } else if (MODE == SQUARED) {
                        f = 2.0;
                    }
                    c = uses * f * w;
                }
                coef[a][b] = c;
            }
        }
        store_coefficients(lid, coef);
        // Distances: c·(e_i − e_j); cosine: c·n_j into G, then the normalization's Jacobian.
        accumulate(lid, q0, q_end, kh, k_end, MODE != COSINE);
    }
}
