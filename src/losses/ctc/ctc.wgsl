// CTC (semantics: docs/LOSSES.md) in three entry points over one workspace `work`:
//   [norm: T·N] [lp: N·T·W] [alpha: N·T·W] [beta: N·T·W] [chain: N·W] [ll: N]
// W = 2·S_max + 1 extended labels (blank, l1, blank, l2, …, blank). `gather` and `gradients`
// take a team of TEAM invocations per frame row (t, n) of the scores; `recurse` one workgroup
// per sequence. Log 0 is NEG, kept finite: sums of a few NEGs stay far from overflow, and
// anything below IMPOSSIBLE is a zero probability.
//
// Precision: alpha and beta are stored rescaled every RESCALE frames (the frame's largest
// value subtracted), so each step rounds at the scale of a few frames' log-probabilities
// rather than of the whole prefix's (hundreds after a few hundred frames); the forward
// offsets add up to the log-likelihood. (Every frame would cost a workgroup reduction per
// step.) The occupancies are normalized per frame (they sum to 1 over the
// extended labels), which cancels both scalings and the log-likelihood's rounding.

override WG_SIZE: u32 = 64u;
override TEAM: u32 = 8u;               // a power of two dividing WG_SIZE
override LOG_PROBS: bool = false;      // the scores are log-probabilities, not logits
override UPSTREAM_PER_ITEM: bool = false;
override MEAN: bool = true;            // each sequence's loss divided by its target length
override ZERO_INFINITY: bool = false;
override WANT_GRAD: bool = true;

struct Params {
    t: u32,
    n: u32,
    c: u32,
    width: u32,      // W
    blank: u32,
    row_base: u32,   // row kernels: this window's first frame row (t·N + n)
    rows: u32,       // row kernels: rows in this window
    scale: f32,      // gradient scale: the upstream scalar / N for mean, else the scalar
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
// Per sequence: frames, target length, first target's index, unused.
@group(0) @binding(2) var<storage, read> seqs: array<vec4<i32>>;
@group(0) @binding(3) var<storage, read> upstream: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_loss: array<f32>;
// [0]: u32::MAX − the first bad target element, else 0; [1 + n]: nonzero when a
// log-probability that sequence n reads is NaN (`recurse` reads and clears it).
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
// Bindings 7 (`input`: the scores of this window's rows) and 8 (`grad`) come from the I/O
// header, in their element types, through load_input(i) and store_grad(i, v).

const NEG: f32 = -1e30;
const RESCALE: u32 = 8u;
const IMPOSSIBLE: f32 = -5e29;

var<workgroup> team_state: array<vec2<f32>, WG_SIZE>;
var<workgroup> largest: array<f32, WG_SIZE>;

fn lp_at() -> u32 {
    return params.t * params.n;
}

fn block() -> u32 {
    return params.n * params.t * params.width;
}

fn alpha_at() -> u32 {
    return lp_at() + block();
}

fn beta_at() -> u32 {
    return alpha_at() + block();
}

fn chain_at() -> u32 {
    return beta_at() + block();
}

fn ll_at() -> u32 {
    return chain_at() + params.n * params.width;
}

// Cell (frame t, extended label s) of sequence `seq` in an [N, T, W] block.
fn cell(seq: u32, t: u32, s: u32) -> u32 {
    return (seq * params.t + t) * params.width + s;
}

// Extended label s of sequence `seq`: the blank at even s, target (s − 1)/2 at odd s (a bad
// target reads as the blank: `recurse` reports it and the call fails).
fn label(seq: u32, s: u32) -> u32 {
    if (s % 2u == 0u) {
        return params.blank;
    }
    let v = targets[u32(seqs[seq].z) + s / 2u];
    if (v < 0 || u32(v) >= params.c) {
        return params.blank;
    }
    return u32(v);
}

// Whether a path may jump from s − 2 to s: s is a label unlike the one before the blank.
fn skip_allowed(seq: u32, s: u32) -> bool {
    return s % 2u == 1u && s >= 2u && label(seq, s) != label(seq, s - 2u);
}

fn log_add(a: f32, b: f32) -> f32 {
    let m = max(a, b);
    if (m <= IMPOSSIBLE) {
        return NEG;
    }
    return m + log(exp(a - m) + exp(b - m));
}

// Each team's log-sum-exp state merged in a fixed order. Whole workgroup.
fn team_lse(lid: u32, st: vec2<f32>) -> vec2<f32> {
    team_state[lid] = st;
    let t = lid % TEAM;
    for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (t < stride) {
            team_state[lid] = lse_merge(team_state[lid], team_state[lid + stride]);
        }
    }
    workgroupBarrier();
    return team_state[lid - t];
}

// A team's frame row: its index in this window, whether it is one, and (t, n).
struct FrameRow {
    local: u32,
    live: bool,
    frame: u32,
    seq: u32,
}

fn frame_row(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> FrameRow {
    let local = group_index(wid, nwg) * (WG_SIZE / TEAM) + lid / TEAM;
    // Rows past the end compute on the window's first (every invocation must reach the
    // barriers) and write nothing.
    let live = local < params.rows;
    let r = select(0u, local, live);
    let row = params.row_base + r;
    return FrameRow(r, live, row / params.n, row % params.n);
}

// Per frame row: the log-softmax normalizer (0 for log-probabilities), and the
// log-probability of each of the sequence's extended labels at this frame.
@compute @workgroup_size(WG_SIZE)
fn gather(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let fr = frame_row(lid, wid, nwg);
    let t = lid % TEAM;
    let base = fr.local * params.c;
    var st = vec2<f32>(F32_LOWEST, 0.0);
    if (!LOG_PROBS) {
        for (var k = t; k < params.c; k += TEAM) {
            st = lse_push(st, load_input(base + k));
        }
    }
    let total = team_lse(lid, st);
    if (!fr.live) {
        return;
    }
    var norm = 0.0;
    if (!LOG_PROBS) {
        norm = softmax_normalizer(total);
    }
    if (t == 0u) {
        work[params.row_base + fr.local] = norm;
    }
    if (i32(fr.frame) >= seqs[fr.seq].x) {
        return;
    }
    let width = 2u * u32(seqs[fr.seq].y) + 1u;
    for (var s = t; s < width; s += TEAM) {
        // Log-probabilities of −∞ (given as log_probs) become NEG; a NaN one (a NaN or +∞
        // score in the row) makes the sequence's loss NaN, as PyTorch's, and so does a +∞
        // one given as log_probs (no probability).
        let lp = load_input(base + label(fr.seq, s)) - norm;
        if (!(lp <= 0.0 || lp > 0.0) || lp > 3.40282347e38) {
            atomicOr(&status[1u + fr.seq], 1u);
        }
        work[lp_at() + cell(fr.seq, fr.frame, s)] = max(lp, NEG);
    }
}

// The largest of every invocation's `v`, to all. Whole workgroup.
fn workgroup_max(lid: u32, v: f32) -> f32 {
    largest[lid] = v;
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            largest[lid] = max(largest[lid], largest[lid + stride]);
        }
    }
    workgroupBarrier();
    let m = largest[0];
    workgroupBarrier();
    return m;
}

// Frame t of a rescaled recursion (`at` its first cell): subtracts the frame's largest value
// from this invocation's cells and gives it (0 when every cell is impossible). Whole
// workgroup; the cells were written by the same invocations.
fn rescale(lid: u32, at: u32, width: u32, own_max: f32) -> f32 {
    var m = workgroup_max(lid, own_max);
    if (m <= IMPOSSIBLE) {
        m = 0.0;
    }
    for (var s = lid; s < width; s += WG_SIZE) {
        work[at + s] -= m;
    }
    return m;
}

// Per sequence (one workgroup): the targets checked, each label's next repeat, the forward
// variables alpha (log-probability of the prefixes ending at (t, s)) and the log-likelihood,
// the row loss, then the backward variables beta (of the suffixes from (t, s)); both include
// the frame's own log-probability, as PyTorch's, and both are rescaled per frame.
@compute @workgroup_size(WG_SIZE)
fn recurse(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let seq = group_index(wid, nwg);
    // A 2-D grid's overshoot (past 65,535 sequences): the whole workgroup has none.
    if (seq >= params.n) {
        return;
    }
    let frames = u32(seqs[seq].x);
    let len = u32(seqs[seq].y);
    let off = u32(seqs[seq].z);
    let width = 2u * len + 1u;
    // Chain of label s = 2k + 1: (the next position with its label) + 1, or 0; plus ½ when
    // it is the label's first position. Exact in f32 for widths below 2^22.
    for (var k = lid; k < len; k += WG_SIZE) {
        let v = targets[off + k];
        if (v < 0 || u32(v) >= params.c || u32(v) == params.blank) {
            atomicMax(&status[0], 0xffffffffu - (off + k));
        }
        var next = 0u;
        for (var j = k + 1u; j < len; j++) {
            if (targets[off + j] == v) {
                next = 2u * j + 2u;
                break;
            }
        }
        var first = 0.5;
        for (var j = 0u; j < k; j++) {
            if (targets[off + j] == v) {
                first = 0.0;
                break;
            }
        }
        work[chain_at() + seq * params.width + 2u * k + 1u] = f32(next) + first;
    }
    let lp = lp_at();
    let alpha = alpha_at();
    // The forward offsets' running sum (invocation 0's is the one used).
    var offsets = 0.0;
    if (frames > 0u) {
        var own = NEG;
        for (var s = lid; s < width; s += WG_SIZE) {
            let v = select(NEG, work[lp + cell(seq, 0u, s)], s < 2u);
            work[alpha + cell(seq, 0u, s)] = v;
            own = max(own, v);
        }
        offsets = rescale(lid, alpha + cell(seq, 0u, 0u), width, own);
    }
    for (var t = 1u; t < frames; t++) {
        storageBarrier();
        workgroupBarrier();
        let prev = alpha + cell(seq, t - 1u, 0u);
        var own = NEG;
        for (var s = lid; s < width; s += WG_SIZE) {
            var v = work[prev + s];
            if (s >= 1u) {
                v = log_add(v, work[prev + s - 1u]);
            }
            if (skip_allowed(seq, s)) {
                v = log_add(v, work[prev + s - 2u]);
            }
            v += work[lp + cell(seq, t, s)];
            work[alpha + cell(seq, t, s)] = v;
            own = max(own, v);
        }
        if (t % RESCALE == 0u) {
            offsets += rescale(lid, alpha + cell(seq, t, 0u), width, own);
        }
    }
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        // No frames: the empty target is certain, any other impossible.
        var ll = select(NEG, 0.0, len == 0u);
        if (frames > 0u) {
            let last = alpha + cell(seq, frames - 1u, 0u);
            var end = work[last + width - 1u];
            if (width >= 2u) {
                end = log_add(end, work[last + width - 2u]);
            }
            ll = select(offsets + end, NEG, end <= IMPOSSIBLE);
        }
        if (atomicExchange(&status[1u + seq], 0u) != 0u) {
            ll = bitcast<f32>(0x7fc00000u); // NaN
        }
        work[ll_at() + seq] = ll;
        var loss = -ll;
        if (ll <= IMPOSSIBLE) {
            loss = select(bitcast<f32>(0x7f800000u), 0.0, ZERO_INFINITY);
        }
        if (MEAN) {
            loss /= f32(max(len, 1u));
        }
        row_loss[seq] = loss;
    }
    if (!WANT_GRAD || frames == 0u) {
        return;
    }
    let beta = beta_at();
    var own = NEG;
    for (var s = lid; s < width; s += WG_SIZE) {
        let at = cell(seq, frames - 1u, s);
        let v = select(NEG, work[lp + at], s + 2u >= width);
        work[beta + at] = v;
        own = max(own, v);
    }
    rescale(lid, beta + cell(seq, frames - 1u, 0u), width, own);
    for (var k = 1u; k < frames; k++) {
        let t = frames - 1u - k;
        storageBarrier();
        workgroupBarrier();
        let next = beta + cell(seq, t + 1u, 0u);
        own = NEG;
        for (var s = lid; s < width; s += WG_SIZE) {
            var v = work[next + s];
            if (s + 1u < width) {
                v = log_add(v, work[next + s + 1u]);
            }
            if (s + 2u < width && skip_allowed(seq, s + 2u)) {
                v = log_add(v, work[next + s + 2u]);
            }
            v += work[lp + cell(seq, t, s)];
            work[beta + cell(seq, t, s)] = v;
            own = max(own, v);
        }
        if (k % RESCALE == 0u) {
            rescale(lid, beta + cell(seq, t, 0u), width, own);
        }
    }
}

// Per frame row: the gradient. With logits, softmax − occupancy; with log-probabilities,
// −occupancy; times the sequence's scale. The occupancy of class c at frame t is
// Σ_{s: label s = c} γ_s, γ_s = e^(alpha + beta − lp) normalized over the frame's extended
// labels. Every element is written first (softmax or 0), then each label's first position
// adds up its label's occupancies along the chain and overwrites that class.
@compute @workgroup_size(WG_SIZE)
fn gradients(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let fr = frame_row(lid, wid, nwg);
    let t = lid % TEAM;
    let c = params.c;
    let base = fr.local * c;
    let norm = work[params.row_base + fr.local];
    let frames = u32(seqs[fr.seq].x);
    let len = u32(seqs[fr.seq].y);
    let ll = work[ll_at() + fr.seq];
    var scale = params.scale;
    if (MEAN) {
        scale /= f32(max(len, 1u));
    }
    if (UPSTREAM_PER_ITEM) {
        scale *= upstream[fr.seq];
    }
    // Past the sequence's frames, and for an impossible alignment, the gradient is 0; a NaN
    // log-likelihood makes every occupancy NaN.
    let scored = fr.live && fr.frame < frames && !(ll <= IMPOSSIBLE);
    let nan = scored && !(ll > IMPOSSIBLE);
    let width = 2u * len + 1u;
    let cells = cell(fr.seq, fr.frame, 0u);
    // log Σ_s e^(alpha + beta − lp): the frame's normalizer.
    var st = vec2<f32>(F32_LOWEST, 0.0);
    for (var s = t; s < width && scored; s += TEAM) {
        st = lse_push(st, occupancy_log(cells + s));
    }
    let total = team_lse(lid, st);
    let z = total.x + log(total.y);
    if (fr.live) {
        for (var k = t; k < c; k += TEAM) {
            // The scale multiplies last: a NaN upstream reaches every element of the
            // sequence's frames.
            var g = 0.0;
            if (scored) {
                g = select(exp(load_input(base + k) - norm), 0.0, LOG_PROBS) * scale;
            }
            store_grad(base + k, g);
        }
    }
    storageBarrier();
    workgroupBarrier();
    if (!scored) {
        return;
    }
    let chain = chain_at() + fr.seq * params.width;
    for (var s = t; s < width; s += TEAM) {
        // The blank's chain starts at 0, a label's at its first position.
        let later_blank = s % 2u == 0u && s > 0u;
        if (later_blank || (s % 2u == 1u && fract(work[chain + s]) < 0.25)) {
            continue;
        }
        var occupancy = 0.0;
        var j = s;
        loop {
            occupancy += exp(occupancy_log(cells + j) - z);
            if (j % 2u == 0u) {
                j += 2u;
                if (j >= width) {
                    break;
                }
            } else {
                let next = u32(work[chain + j]);
                if (next == 0u) {
                    break;
                }
                j = next - 1u;
            }
        }
        if (nan) {
            occupancy = bitcast<f32>(0x7fc00000u); // NaN
        }
        let k = label(fr.seq, s);
        var g = -occupancy * scale;
        if (!LOG_PROBS) {
            g = (exp(load_input(base + k) - norm) - occupancy) * scale;
        }
        store_grad(base + k, g);
    }
}

// alpha + beta − lp of a cell: the log of its occupancy, up to the frame's normalizer.
fn occupancy_log(at: u32) -> f32 {
    return work[alpha_at() + at] + work[beta_at() + at] - work[lp_at() + at];
}
