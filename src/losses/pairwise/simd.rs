//! AVX2 + FMA register blocks for the all-pairs losses (x86-64, chosen at run time): the
//! two products that cost N²·D multiply-adds, written out because the compiler's own
//! vectorization of them spilled its accumulators. Rows have a length that is a multiple
//! of 8 ([`usable`]).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs the kernels here, for rows of `dim`.
pub(crate) fn usable(dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        dim.is_multiple_of(8)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = dim;
        false
    }
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lane_total(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
}

/// `out[a][b] = q[a] · k[b]` for four rows of `q` and two of `k`, all of one length (a
/// multiple of 8): each chunk of a row is loaded once for two (or four) products.
///
/// # Safety
/// The CPU has AVX2 and FMA, and every row has the same length, a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dots_4x2(q: [&[f32]; 4], k: [&[f32]; 2]) -> [[f32; 2]; 4] {
    let d = k[0].len();
    debug_assert!(d.is_multiple_of(8) && q.iter().chain(&k).all(|r| r.len() == d));
    let mut acc = [_mm256_setzero_ps(); 8];
    for c in (0..d).step_by(8) {
        // SAFETY: c + 8 <= d, the length of every row (the caller's contract).
        let (k0, k1) = unsafe {
            (
                _mm256_loadu_ps(k[0].as_ptr().add(c)),
                _mm256_loadu_ps(k[1].as_ptr().add(c)),
            )
        };
        for a in 0..4 {
            // SAFETY: as above.
            let qa = unsafe { _mm256_loadu_ps(q[a].as_ptr().add(c)) };
            acc[2 * a] = _mm256_fmadd_ps(qa, k0, acc[2 * a]);
            acc[2 * a + 1] = _mm256_fmadd_ps(qa, k1, acc[2 * a + 1]);
        }
    }
    std::array::from_fn(|a| [lane_total(acc[2 * a]), lane_total(acc[2 * a + 1])])
}

/// `g[a] += Σ_t coef[a][t] · keys[t]` for four gradient rows (`g` is `[4, d]`) and the
/// `coef[a].len()` rows of `keys` (`[T, d]`, d a multiple of 8), in segments of the rows
/// held in registers while all keys pass.
///
/// # Safety
/// The CPU has AVX2 and FMA; `g.len() == 4·d`, `keys.len() == coef[a].len()·d` for every a,
/// and d is a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn accumulate_4(g: &mut [f32], coef: [&[f32]; 4], keys: &[f32], d: usize) {
    let rows = coef[0].len();
    debug_assert!(d.is_multiple_of(8) && g.len() == 4 * d && keys.len() == rows * d);
    let (gp, kp) = (g.as_mut_ptr(), keys.as_ptr());
    let mut seg = 0;
    while seg < d {
        // Two vectors per row where they fit, else one.
        let wide = seg + 16 <= d;
        let mut acc = [_mm256_setzero_ps(); 8];
        for a in 0..4 {
            // SAFETY: a·d + seg + 16 <= 4·d (wide) or + 8 (not), the length of g.
            unsafe {
                acc[2 * a] = _mm256_loadu_ps(gp.add(a * d + seg));
                if wide {
                    acc[2 * a + 1] = _mm256_loadu_ps(gp.add(a * d + seg + 8));
                }
            }
        }
        #[allow(clippy::needless_range_loop)] // t indexes four coefficient rows and the keys
        for t in 0..rows {
            // SAFETY: t·d + seg + 16 (or 8) <= rows·d, the length of keys.
            let (k0, k1) = unsafe {
                let k = kp.add(t * d + seg);
                (
                    _mm256_loadu_ps(k),
                    if wide {
                        _mm256_loadu_ps(k.add(8))
                    } else {
                        _mm256_setzero_ps()
                    },
                )
            };
            for a in 0..4 {
                let c = _mm256_set1_ps(coef[a][t]);
                acc[2 * a] = _mm256_fmadd_ps(c, k0, acc[2 * a]);
                acc[2 * a + 1] = _mm256_fmadd_ps(c, k1, acc[2 * a + 1]);
            }
        }
        for a in 0..4 {
            // SAFETY: as for the loads.
            unsafe {
                _mm256_storeu_ps(gp.add(a * d + seg), acc[2 * a]);
                if wide {
                    _mm256_storeu_ps(gp.add(a * d + seg + 8), acc[2 * a + 1]);
                }
            }
        }
        seg += if wide { 16 } else { 8 };
    }
}
