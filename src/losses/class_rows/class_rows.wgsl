// Losses over whole rows of class scores (semantics: docs/LOSSES.md), forward and backward in
// one pass: a team of TEAM invocations per row sums the row's loss terms (and, for
// multi-margin, the gradient that flows to the target's score), then writes every gradient
// element. A workgroup holds WG_SIZE / TEAM rows. Multilabel margin first counts each
// class's listings into scratch words after the status flag (`multilabel_margin`).

override WG_SIZE: u32 = 64u;
override TEAM: u32 = 8u;               // a power of two dividing WG_SIZE
override LOSS: u32 = 0u;               // one of the loss ids below
override P_POWER: u32 = 1u;            // multi-margin's p: 1 or 2
override WEIGHTED: bool = false;
override UPSTREAM_PER_ROW: bool = false;
override WANT_GRAD: bool = true;
override LABELED: bool = false;        // JSD: row labels in `classes`, some ignored
override DENOM_FROM_BUFFER: bool = false; // mean over a count the `counts` pass summed into weight[0]

const MULTI_MARGIN: u32 = 0u;
const MULTILABEL_SOFT_MARGIN: u32 = 1u;
const DISTILL_KL: u32 = 2u;
const MULTILABEL_MARGIN: u32 = 3u;
const JSD: u32 = 4u;
const CORAL: u32 = 5u;
const CORN: u32 = 6u;

struct Params {
    rows: u32,       // rows in this window
    c: u32,
    row_base: u32,   // the window's first row in the batch
    param: f32,      // multi-margin's margin, distillation's temperature, JSD's beta
    scale: f32,      // gradient scale: upstream / denominator (the count's, for DENOM_FROM_BUFFER)
    ignore_index: i32, // JSD's dropped label
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Multi-margin's classes, CORAL's and CORN's labels, JSD's row labels: [rows]; multilabel
// margin's class lists: [rows, C].
@group(0) @binding(1) var<storage, read> classes: array<i32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;    // [rows, C]: multilabel's targets, the teacher's logits or log-probabilities
// Class weights (CORAL's importance); with DENOM_FROM_BUFFER, [0] is the mean's count.
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> upstream: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_loss: array<f32>;
// [0]: u32::MAX − the first bad target element; multilabel margin: then [rows, C] scratch.
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
// Bindings 7 (`input`) and 8 (`grad`) come from the I/O header (`header` in gpu.rs), in their
// element types, through load_input(i) and store_grad(i, v).

var<workgroup> partial: array<vec2<f32>, WG_SIZE>;
// Distillation: each invocation's teacher state (max, Σ e^(a − max), Σ e^(a − max)·(a − b))
// and student log-sum-exp state, a = t/τ, b = s/τ.
var<workgroup> teacher_state: array<vec3<f32>, WG_SIZE>;
var<workgroup> student_state: array<vec2<f32>, WG_SIZE>;
var<workgroup> smallest: array<u32, WG_SIZE>;

// Adds a = t/τ with its gap a − b to a teacher state.
fn teacher_push(st: vec3<f32>, a: f32, gap: f32) -> vec3<f32> {
    if (a > st.x) {
        let e = exp(st.x - a);
        return vec3<f32>(a, st.y * e + 1.0, st.z * e + gap);
    }
    let e = exp(a - st.x);
    return vec3<f32>(st.x, st.y + e, st.z + e * gap);
}

fn teacher_merge(u: vec3<f32>, v: vec3<f32>) -> vec3<f32> {
    let m = max(u.x, v.x);
    let eu = exp(u.x - m);
    let ev = exp(v.x - m);
    return vec3<f32>(m, u.y * eu + v.y * ev, u.z * eu + v.z * ev);
}

// Merges each team's distillation states in a fixed order. Whole workgroup.
fn team_merge(lid: u32, t_st: vec3<f32>, s_st: vec2<f32>) {
    teacher_state[lid] = t_st;
    student_state[lid] = s_st;
    let t = lid % TEAM;
    for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (t < stride) {
            teacher_state[lid] = teacher_merge(teacher_state[lid], teacher_state[lid + stride]);
            student_state[lid] = lse_merge(student_state[lid], student_state[lid + stride]);
        }
    }
    workgroupBarrier();
}

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

// The smallest of each team's values. Whole workgroup.
fn team_min(lid: u32, v: u32) -> u32 {
    smallest[lid] = v;
    let t = lid % TEAM;
    for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (t < stride) {
            smallest[lid] = min(smallest[lid], smallest[lid + stride]);
        }
    }
    workgroupBarrier();
    return smallest[lid - t];
}

// Multilabel margin, whole workgroup: the list's length (its first −1, every entry checked),
// how often each class is listed (integer atomics: the same counts in any order), then per
// class i: unlisted, Σ over the listed entries j of max(0, 1 − x_j + x_i) and its slope
// count; listed (m times), −m·#{unlisted k : 1 − x_i + x_k > 0}. O(C·len) per row, as
// PyTorch's loops.
fn multilabel_margin(lid: u32, row: u32, live: bool, r: u32) {
    let t = lid % TEAM;
    let c = params.c;
    let base = r * c;
    var end = c;
    for (var k = t; k < c; k += TEAM) {
        let v = classes[base + k];
        if (v == -1) {
            end = min(end, k);
        } else if ((v < -1 || v >= i32(c)) && live) {
            atomicMax(&status[0], 0xffffffffu - ((params.row_base + row) * c + k));
        }
    }
    let len = team_min(lid, end);
    // The row's listing counts; dead rows (computing on row 0) leave them alone.
    let counts = 1u + row * c;
    if (live) {
        for (var k = t; k < c; k += TEAM) {
            atomicStore(&status[counts + k], 0u);
        }
    }
    storageBarrier();
    workgroupBarrier();
    if (live) {
        for (var q = t; q < len; q += TEAM) {
            let j = classes[base + q];
            if (j >= 0 && j < i32(c)) {
                atomicAdd(&status[counts + u32(j)], 1u);
            }
        }
    }
    storageBarrier();
    workgroupBarrier();
    var loss = 0.0;
    var s = params.scale / f32(c);
    if (UPSTREAM_PER_ROW && live) {
        s *= upstream[row];
    }
    for (var i = t; i < c && live; i += TEAM) {
        let x_i = load_input(base + i);
        let listed = atomicLoad(&status[counts + i]);
        var slopes = 0.0;
        if (listed == 0u) {
            for (var q = 0u; q < len; q++) {
                let j = classes[base + q];
                let h = 1.0 - load_input(base + u32(clamp(j, 0, i32(c) - 1))) + x_i;
                if (h > 0.0) {
                    loss += h;
                    slopes += 1.0;
                }
            }
        } else if (WANT_GRAD) {
            for (var k = 0u; k < c; k++) {
                if (atomicLoad(&status[counts + k]) == 0u && 1.0 - x_i + load_input(base + k) > 0.0) {
                    slopes += 1.0;
                }
            }
            slopes *= -f32(listed);
        }
        if (WANT_GRAD) {
            store_grad(base + i, slopes * s);
        }
    }
    let sum = team_sum2(lid, vec2<f32>(loss, 0.0)).x;
    if (live && t == 0u) {
        row_loss[row] = sum / f32(c);
    }
}

// JSD's term and its derivative in the student's log-probability x, against the teacher's
// y: P = e^y, Q = e^x, M = β·P + (1 − β)·Q. A zero probability's terms are 0 (their limit).
fn jsd(x: f32, y: f32) -> vec2<f32> {
    let beta = params.param;
    let p = exp(y);
    let q = exp(x);
    if (beta == 0.0) {
        return vec2<f32>(select(p * (y - x), 0.0, p == 0.0), -p);
    }
    if (beta == 1.0) {
        let t = select(q * (x - y), 0.0, q == 0.0);
        return vec2<f32>(t, t + q);
    }
    let m = beta * p + (1.0 - beta) * q;
    let log_m = log(m);
    var term = select(beta * p * y, 0.0, p == 0.0) + select((1.0 - beta) * q * x, 0.0, q == 0.0);
    term -= select(m * log_m, 0.0, m == 0.0);
    return vec2<f32>(term, select((1.0 - beta) * q * (x - log_m), 0.0, q == 0.0));
}

// CORAL's and CORN's cumulative task k of a row with ordinal `label`: its BCE-with-logits term
// against [label > k] (weighted) and the derivative; CORN trains task k on labels ≥ k only.
fn ordinal_task(x: f32, k: u32, label: u32) -> vec2<f32> {
    if (LOSS == CORN && k > label) {
        return vec2<f32>(0.0);
    }
    let level = select(0.0, 1.0, k < label);
    let s = logistic(x);
    let w = class_weight(k);
    return vec2<f32>(w * (s.softplus_neg + (1.0 - level) * x), w * (s.p - level));
}

// Per row, the count the mean divides by: JSD's kept rows (0 or 1), CORN's tasks (label + 1,
// at most C). One invocation per row; into `row_loss`, which `main` then overwrites.
@compute @workgroup_size(WG_SIZE)
fn counts(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg) * WG_SIZE + lid;
    if (row >= params.rows) {
        return;
    }
    let y = classes[row];
    var count = 1.0;
    if (LOSS == JSD) {
        count = select(1.0, 0.0, y == params.ignore_index);
    } else if (LOSS == CORN) {
        count = f32(clamp(y, 0, i32(params.c) - 1) + 1);
    }
    row_loss[row] = count;
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
    if (LOSS == MULTILABEL_MARGIN) {
        multilabel_margin(lid, row, live, r);
        return;
    }
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
    // CORAL's and CORN's ordinal label, in 0..=C (a bad one is reported, the row counts as 0).
    var label = 0u;
    if (LOSS == CORAL || LOSS == CORN) {
        let k = classes[r];
        if (k < 0 || u32(k) > c) {
            if (live && t == 0u) {
                atomicMax(&status[0], 0xffffffffu - (params.row_base + row));
            }
        } else {
            label = u32(k);
        }
    }
    // JSD drops the rows labelled ignore_index.
    var kept = true;
    if (LOSS == JSD && LABELED) {
        kept = classes[r] != params.ignore_index;
    }
    // (loss sum, multi-margin: Σ of the hinge derivatives) over the row.
    var acc = vec2<f32>(0.0);
    let inv_tau = 1.0 / params.param;
    var t_st = vec3<f32>(F32_LOWEST, 0.0, 0.0);
    var s_st = vec2<f32>(F32_LOWEST, 0.0);
    for (var k = t; k < c; k += TEAM) {
        let x = load_input(base + k);
        if (LOSS == DISTILL_KL) {
            let a = labels[base + k] * inv_tau;
            let b = x * inv_tau;
            t_st = teacher_push(t_st, a, a - b);
            s_st = lse_push(s_st, b);
            continue;
        }
        if (LOSS == JSD) {
            acc.x += jsd(x, labels[base + k]).x;
        } else if (LOSS == CORAL || LOSS == CORN) {
            acc.x += ordinal_task(x, k, label).x;
        } else if (LOSS == MULTI_MARGIN) {
            if (k != y) {
                acc += hinge_power(params.param - x_y + x);
            }
        } else {
            let s = logistic(x);
            let l = labels[base + k];
            acc.x += class_weight(k) * ((1.0 - l) * x + s.softplus_neg);
        }
    }
    let sums = team_sum2(lid, acc);
    // Distillation: the row's log-sum-exps of t/τ and s/τ, and Σ p_t·(t − s)/τ.
    var lse_t = 0.0;
    var lse_s = 0.0;
    var kl = 0.0;
    if (LOSS == DISTILL_KL) {
        team_merge(lid, t_st, s_st);
        let ts = teacher_state[lid - t];
        let ss = student_state[lid - t];
        lse_t = ts.x + log(ts.y);
        lse_s = ss.x + log(ss.y);
        kl = ts.z / ts.y - lse_t + lse_s;
    }
    if (!live) {
        return;
    }
    let inv_c = 1.0 / f32(c);
    // Multi-margin weighs each positive hinge term (a NaN weight reaches only those terms and
    // the target, as in PyTorch); `any` is whether the row has one.
    let any = sums.y > 0.0;
    let tau = params.param;
    if (t == 0u) {
        if (LOSS == MULTI_MARGIN) {
            row_loss[row] = select(0.0, w_y * sums.x, any) * inv_c;
        } else if (LOSS == DISTILL_KL) {
            row_loss[row] = tau * tau * kl;
        } else if (LOSS == JSD) {
            row_loss[row] = select(0.0, sums.x, kept);
        } else if (LOSS == CORAL || LOSS == CORN) {
            row_loss[row] = sums.x;
        } else {
            row_loss[row] = sums.x * inv_c;
        }
    }
    if (!WANT_GRAD) {
        return;
    }
    var s = params.scale * inv_c;
    if (LOSS == DISTILL_KL) {
        s = params.scale * tau; // τ²·∂KL/∂s = τ·(p_s − p_t)
    }
    if (LOSS == JSD || LOSS == CORAL || LOSS == CORN) {
        s = params.scale;
    }
    if (DENOM_FROM_BUFFER) {
        let count = weight[0];
        s = select(s / count, 0.0, count == 0.0);
    }
    if (UPSTREAM_PER_ROW) {
        s *= upstream[row];
    }
    for (var k = t; k < c; k += TEAM) {
        let x = load_input(base + k);
        var g: f32;
        if (LOSS == JSD) {
            g = select(0.0, jsd(x, labels[base + k]).y, kept) * s;
        } else if (LOSS == CORAL || LOSS == CORN) {
            g = ordinal_task(x, k, label).y * s;
        } else if (LOSS == DISTILL_KL) {
            let p_s = exp(x * inv_tau - lse_s);
            let p_t = exp(labels[base + k] * inv_tau - lse_t);
            g = (p_s - p_t) * s;
        } else if (LOSS == MULTI_MARGIN) {
            // The upstream scale multiplies last: a NaN upstream reaches every element.
            if (k == y) {
                g = select(0.0, -w_y * sums.y, any) * s;
            } else {
                let d = hinge_power(params.param - x_y + x).y;
                g = select(0.0, w_y * d, d > 0.0) * s;
            }
        } else {
            let p = logistic(x).p;
            g = class_weight(k) * (p - labels[base + k]) * s;
        }
        store_grad(base + k, g);
    }
}
