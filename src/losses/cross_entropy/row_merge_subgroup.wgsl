// The row merge for adapters with subgroup operations. The engine picks this variant only
// where invocation i of a workgroup is lane i mod subgroup_size of its subgroup (probed), so
// a row's invocations are whole runs of lanes.

struct Invocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
}

// The row's state merged over its ROW_THREADS invocations (lane = index within the row):
// a butterfly of subgroup shuffles over each subgroup's part of the row, then (where a row
// may span subgroups) the parts, one per subgroup in workgroup memory, merged by every
// subgroup of the row, each lane first folding `per` consecutive parts where there are more
// parts than lanes. At most one barrier instead of log2(ROW_THREADS), and a fixed order:
// deterministic, and every lane forms the same bits. Called by the whole workgroup.
fn merge_row(inv: Invocation, lane: u32, st: RowState) -> RowState {
    // A row within one subgroup on any pipeline (no wider than the adapter's smallest
    // subgroup) merges by shuffles alone: no workgroup memory, no barrier.
    if (ROW_THREADS <= MIN_SUBGROUP) {
        return butterfly(inv, st, ROW_THREADS);
    }
    let width = min(ROW_THREADS, inv.sg_size);
    let s = butterfly(inv, st, width);
    let first = inv.lid - lane;
    if (lane % width == 0u) {
        store_shared_state(first + lane / width, s);
    }
    workgroupBarrier();
    let parts = ROW_THREADS / width;
    let span = min(parts, width);
    let per = parts / span;
    let at = first + (inv.sg_lane % span) * per;
    var t = shared_state(at);
    for (var i = 1u; i < per; i++) {
        t = merge_states(t, shared_state(at + i));
    }
    return butterfly(inv, t, span);
}

// The states of each run of `width` lanes merged: log2(width) shuffle steps, pairing lane l
// with l ^ bit, the lower lane's state first.
fn butterfly(inv: Invocation, st: RowState, width: u32) -> RowState {
    var s = st;
    for (var bit = 1u; bit < width; bit <<= 1u) {
        var other = RowState(subgroupShuffleXor(s.stat, bit), s.acc);
        if (SUMS) {
            other.acc = subgroupShuffleXor(s.acc, bit);
        }
        if ((inv.sg_lane & bit) == 0u) {
            s = merge_states(s, other);
        } else {
            s = merge_states(other, s);
        }
    }
    return s;
}
