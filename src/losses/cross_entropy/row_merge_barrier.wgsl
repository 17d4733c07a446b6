// The row merge for adapters without subgroup operations (or with them turned off).

struct Invocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// The row's state merged over its ROW_THREADS invocations (lane = index within the row), a
// tree through workgroup memory in a fixed order: log2(ROW_THREADS) barriers. Every
// invocation of the row gets the result. Called by the whole workgroup.
fn merge_row(inv: Invocation, lane: u32, st: RowState) -> RowState {
    let lid = inv.lid;
    store_shared_state(lid, st);
    for (var stride = ROW_THREADS / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if (lane < stride) {
            store_shared_state(lid, merge_states(shared_state(lid), shared_state(lid + stride)));
        }
    }
    workgroupBarrier();
    return shared_state(lid - lane);
}
