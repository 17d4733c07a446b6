// Element-type conversions at the edges of the compute-bound kernels (the all-pairs losses,
// whose O(N·D) inputs and gradients are small against their O(N²·D) work): 16-bit values
// (pairs in u32 words, `half.wgsl`) widened into an f32 workspace, and an f32 result
// narrowed into 16-bit words. One invocation per word, so no two share one.

override WG_SIZE: u32 = 256u;
override BF16: bool = false; // else f16

struct ConvertParams {
    len: u32, // elements
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: ConvertParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn widen_half(h: u32) -> f32 {
    if (BF16) {
        return bf16_to_f32(h);
    }
    return f16_to_f32(h);
}

fn narrow_half(x: f32) -> u32 {
    if (BF16) {
        return f32_to_bf16(x);
    }
    return f32_to_f16(x);
}

@compute @workgroup_size(WG_SIZE)
fn widen(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = group_index(wid, nwg) * WG_SIZE + lid;
    let i = 2u * w;
    if (i >= params.len) {
        return;
    }
    let word = src[w];
    dst[i] = bitcast<u32>(widen_half(word & 0xffffu));
    if (i + 1u < params.len) {
        dst[i + 1u] = bitcast<u32>(widen_half(word >> 16u));
    }
}

@compute @workgroup_size(WG_SIZE)
fn narrow(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = group_index(wid, nwg) * WG_SIZE + lid;
    let i = 2u * w;
    if (i >= params.len) {
        return;
    }
    var word = narrow_half(bitcast<f32>(src[i]));
    if (i + 1u < params.len) {
        word |= narrow_half(bitcast<f32>(src[i + 1u])) << 16u;
    } else {
        word |= dst[w] & 0xffff0000u; // the padding after an odd count keeps its bits
    }
    dst[w] = word;
}
