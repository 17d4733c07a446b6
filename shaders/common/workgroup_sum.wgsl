// Sum over a workgroup in a fixed tree order (the same bits every run). Needs the module's
// WG_SIZE override. Every invocation must call it (it has barriers); all get the total.

var<workgroup> shared_sum: array<f32, WG_SIZE>;

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    shared_sum[lid] = v;
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lid < stride) {
            shared_sum[lid] += shared_sum[lid + stride];
        }
    }
    workgroupBarrier();
    return shared_sum[0];
}
