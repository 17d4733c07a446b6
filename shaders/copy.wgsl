// vec4 copy: the bandwidth yardstick that benchmarks compare kernels against. It uses the
// same work layout as the loss kernels (teams of TEAM invocations streaming contiguous runs
// of ITEMS vec4s), so the yardstick is the best copy this crate knows how to write.

override WG_SIZE: u32 = 256u;
override ITEMS: u32 = 16u;
override TEAM: u32 = 8u;

struct CopyParams {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let start = group_index(wid, nwg) * WG_SIZE * ITEMS;
    let run = start + (lid / TEAM) * ITEMS * TEAM + lid % TEAM;
    for (var k = 0u; k < ITEMS; k++) {
        let i = run + k * TEAM;
        if (i < params.len) {
            dst[i] = src[i];
        }
    }
}
