// Gradient filtering (Cut Cross-Entropy's): marks the 16×16 blocks (rows × classes) of a
// chunk's logit gradient g that hold a value the products must not skip, |g| ≥ eps·|s| with
// s the row's scale (the upstream gradient over the mean's denominator: g/s is the row
// loss's own gradient; NaN is kept), and zeroes the others: the products skip a depth block
// only where all four 16×16 blocks of their 64-wide tile are unmarked, and add the zeros of
// the others. An invocation per block.

override WG_SIZE: u32 = 64u;
override UPSTREAM_PER_ROW: bool = false;
override MEAN: bool = false;

struct Params {
    rows: u32,
    classes: u32,
    row_base: u32, // the chunk's first row in the batch (upstream)
    eps: f32,
    grad_output: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read> upstream: array<f32>;
@group(0) @binding(3) var<storage, read> denom: array<f32>;
@group(0) @binding(4) var<storage, read_write> mask: array<u32>;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let cols = (params.classes + 15u) / 16u;
    let blocks = ((params.rows + 15u) / 16u) * cols;
    let b = group_index(wid, nwg) * WG_SIZE + lid;
    if (b >= blocks) {
        return;
    }
    let r0 = (b / cols) * 16u;
    let c0 = (b % cols) * 16u;
    var keep = false;
    for (var r = r0; r < min(r0 + 16u, params.rows); r++) {
        var s = params.grad_output;
        if (UPSTREAM_PER_ROW) {
            s = upstream[params.row_base + r];
        }
        if (MEAN) {
            s /= denom[0];
        }
        let bound = params.eps * abs(s);
        for (var c = c0; c < min(c0 + 16u, params.classes); c++) {
            keep = keep || !(abs(g[r * params.classes + c]) < bound);
        }
    }
    mask[b] = select(0u, 1u, keep);
    if (!keep) {
        for (var r = r0; r < min(r0 + 16u, params.rows); r++) {
            for (var c = c0; c < min(c0 + 16u, params.classes); c++) {
                g[r * params.classes + c] = 0.0;
            }
        }
    }
}
