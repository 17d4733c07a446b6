// Deterministic sum: `partial_sums` gives one partial per contiguous block, `finish` adds
// the partials (or, for short sums, the values themselves) in one workgroup and applies the
// scale and the optional divisor; `row_sums` adds each row of `block` values in order, one
// invocation per row. The order of additions depends only on the sizes, so the
// same inputs give the same bits.

override WG_SIZE: u32 = 256u;

struct ReduceParams {
    len: u32,        // values in this window
    block: u32,      // values per partial
    groups: u32,     // partials of this window (partial_sums) or in all (finish)
    flags: u32,
    scale: f32,
    group_base: u32, // index of this window's first partial (inputs past one binding)
    _pad0: u32,
    _pad1: u32,
}

const DIVIDE_BY_BUFFER: u32 = 1u;
const FROM_VALUES: u32 = 2u; // finish sums values[0..len] directly

@group(0) @binding(0) var<uniform> params: ReduceParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read> divisor: array<f32>;
@group(0) @binding(4) var<storage, read_write> result: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn partial_sums(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = group_index(wid, nwg);
    let start = g * params.block;
    let end = min(start + params.block, params.len);
    var v = 0.0;
    for (var i = start + lid; i < end; i += WG_SIZE) {
        v += values[i];
    }
    let total = workgroup_sum(lid, v);
    if (lid == 0u && g < params.groups) {
        partials[params.group_base + g] = total;
    }
}

@compute @workgroup_size(WG_SIZE)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var v = 0.0;
    if ((params.flags & FROM_VALUES) != 0u) {
        for (var i = lid; i < params.len; i += WG_SIZE) {
            v += values[i];
        }
    } else {
        for (var i = lid; i < params.groups; i += WG_SIZE) {
            v += partials[i];
        }
    }
    let total = workgroup_sum(lid, v) * params.scale;
    if (lid == 0u) {
        var out = total;
        if ((params.flags & DIVIDE_BY_BUFFER) != 0u) {
            let d = divisor[0];
            // NaN divisors propagate: `d == 0` is false for NaN, where `d != 0` may be too.
            out = select(total / d, 0.0, d == 0.0);
        }
        result[0] = out;
    }
}

@compute @workgroup_size(WG_SIZE)
fn row_sums(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg) * WG_SIZE + lid;
    if (row >= params.len) {
        return;
    }
    var v = 0.0;
    for (var i = row * params.block; i < (row + 1u) * params.block; i++) {
        v += values[i];
    }
    result[row] = v;
}
