// Tiled matrix product c = a·b or c += a·b (plus a bias per column) over strided views,
// for the fused linear cross-entropy: logits = hidden·classifierᵀ + bias,
// grad_hidden = g·classifier, grad_classifier += gᵀ·hidden, grad_bias += gᵀ·1.
//
// A(i, k) = a[a_base + i * a_rs + k * a_cs], B(k, j) = b[b_base + k * b_rs + j * b_cs],
// C(i, j) = c[i * n + j] (a base lets a window start at an aligned offset before its data),
// over k in [k_base, k_base + k): software adapters, whose loops stop silently after 65,535
// iterations, get the depth in several dispatches that add to c in order.
// A workgroup computes a 64×64 tile of c, 4×4 per invocation, staging 16-deep blocks of a and
// b in workgroup memory; each element's sum runs over k in order, so the bits are fixed.
// Gradient filtering (FILTER, Cut Cross-Entropy's): a is a chunk's logit gradient g (1) or
// its transpose (2), and `mask` marks its 16×16 blocks (rows × classes) holding a value
// above the threshold; a depth block whose 64×16 slice of a is unmarked is skipped.

override ACCUMULATE: bool = false; // c += a·b (else c = a·b)
override BIAS: bool = false;       // adds bias[j]
override B_ONES: bool = false;     // b is all ones: c gets the row sums of a
override FILTER: u32 = 0u;         // 0: none; 1: a = g; 2: a = gᵀ (see above)

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    k_base: u32,
    a_base: u32,
    b_base: u32,
    mask_cols: u32, // class blocks per row block of `mask`
    mask_rows: u32, // row blocks
}

@group(0) @binding(0) var<uniform> params: Params;
// Bindings 1 (a) and 2 (b) come from the I/O header (`gemm_module` in gpu.rs), in their
// element types, read through load_a(i) and load_b(i); c and the bias are f32.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
// [mask_rows, mask_cols]: 1 where a 16×16 block of g is kept.
@group(0) @binding(5) var<storage, read> mask: array<u32>;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
// [DEPTH][TILE]: a_s[kk * TILE + i] = A(row0 + i, k0 + kk), b_s[kk * TILE + j] = B(k0 + kk, col0 + j).
var<workgroup> a_s: array<f32, 1024>;
var<workgroup> b_s: array<f32, 1024>;
var<workgroup> skip_block: u32;

// Whether the depth block from k (global) of the tile from row0 holds no kept block of g.
fn filtered(row0: u32, k: u32) -> bool {
    for (var t = 0u; t < 4u; t++) {
        var at = 0u;
        if (FILTER == 1u) {
            let rb = row0 / 16u + t;
            if (rb >= params.mask_rows) {
                break;
            }
            at = rb * params.mask_cols + k / 16u;
        } else {
            let cb = row0 / 16u + t;
            if (cb >= params.mask_cols) {
                break;
            }
            at = (k / 16u) * params.mask_cols + cb;
        }
        if (mask[at] != 0u) {
            return false;
        }
    }
    return true;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = group_index(wid, nwg);
    let tiles_n = (params.n + TILE - 1u) / TILE;
    let row0 = (g / tiles_n) * TILE;
    let col0 = (g % tiles_n) * TILE;
    let tr = lid / 16u; // rows row0 + tr * 4 ..
    let tc = lid % 16u; // columns col0 + tc * 4 ..
    var acc = array<vec4<f32>, 4>();
    for (var k0 = 0u; k0 < params.k; k0 += DEPTH) {
        if (FILTER != 0u) {
            if (lid == 0u) {
                skip_block = select(0u, 1u, filtered(row0, params.k_base + k0));
            }
            if (workgroupUniformLoad(&skip_block) != 0u) {
                continue;
            }
        }
        // Each invocation stages 4 values of each block; neighbours read neighbouring
        // addresses along whichever dimension is contiguous.
        for (var e = 0u; e < 4u; e++) {
            let idx = lid + e * 256u;
            var i = idx % TILE;
            var kk = idx / TILE;
            if (params.a_cs == 1u) {
                i = idx / DEPTH;
                kk = idx % DEPTH;
            }
            let row = row0 + i;
            let ka = k0 + kk;
            var va = 0.0;
            if (row < params.m && ka < params.k) {
                va = load_a(params.a_base + row * params.a_rs + (params.k_base + ka) * params.a_cs);
            }
            a_s[kk * TILE + i] = va;
            if (!B_ONES) {
                var j = idx % TILE;
                var kb = idx / TILE;
                if (params.b_cs != 1u && params.b_rs == 1u) {
                    j = idx / DEPTH;
                    kb = idx % DEPTH;
                }
                let col = col0 + j;
                var vb = 0.0;
                if (col < params.n && k0 + kb < params.k) {
                    vb = load_b(params.b_base + (params.k_base + k0 + kb) * params.b_rs + col * params.b_cs);
                }
                b_s[kb * TILE + j] = vb;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            let at = kk * TILE;
            let av = vec4<f32>(a_s[at + tr * 4u], a_s[at + tr * 4u + 1u], a_s[at + tr * 4u + 2u], a_s[at + tr * 4u + 3u]);
            var bv = vec4<f32>(1.0);
            if (!B_ONES) {
                bv = vec4<f32>(b_s[at + tc * 4u], b_s[at + tc * 4u + 1u], b_s[at + tc * 4u + 2u], b_s[at + tc * 4u + 3u]);
            }
            for (var r = 0u; r < 4u; r++) {
                acc[r] += av[r] * bv;
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + tr * 4u + r;
        for (var q = 0u; q < 4u; q++) {
            let col = col0 + tc * 4u + q;
            if (row < params.m && col < params.n) {
                var v = acc[r][q];
                if (BIAS) {
                    v += bias[col];
                }
                let at = row * params.n + col;
                if (ACCUMULATE) {
                    v += c[at];
                }
                c[at] = v;
            }
        }
    }
}
