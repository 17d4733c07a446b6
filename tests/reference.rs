//! The f64 reference on its own: its hand-derived gradients against central finite
//! differences of its own loss, and closed forms. No GPU.

mod common;

use common::fresh_rng;
use wgpu_losses::reference::{cross_entropy, RefTarget};
use wgpu_losses::{CrossEntropy, Reduction};

/// Sum of the loss outputs weighted by `upstream` (what the gradient is the gradient of).
fn objective(
    opts: &CrossEntropy,
    x: &[f64],
    nc: (usize, usize),
    t: RefTarget<'_>,
    w: Option<&[f64]>,
    up: &[f64],
) -> f64 {
    let out = cross_entropy(opts, x, nc, t, w, &[1.0]).unwrap();
    out.loss
        .iter()
        .enumerate()
        .map(|(i, l)| l * if up.len() == 1 { up[0] } else { up[i] })
        .sum()
}

/// Central differences with step h; the O(h²) truncation and f64 rounding bound the error.
fn check_fd(
    opts: &CrossEntropy,
    x: &[f64],
    nc: (usize, usize),
    t: RefTarget<'_>,
    w: Option<&[f64]>,
    up: &[f64],
) {
    let analytic = cross_entropy(opts, x, nc, t, w, up).unwrap().grads[0]
        .1
        .clone();
    let h = 1e-5;
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + h;
        let fp = objective(opts, &xp, nc, t, w, up);
        xp[i] = x[i] - h;
        let fm = objective(opts, &xp, nc, t, w, up);
        xp[i] = x[i];
        let fd = (fp - fm) / (2.0 * h);
        assert!(
            (fd - analytic[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{opts:?}: d/dx[{i}] finite difference {fd} vs analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = fresh_rng("gradients_match_finite_differences");
    for trial in 0..60 {
        let n = 1 + rng.below(5);
        let c = 1 + rng.below(9);
        let x: Vec<f64> = (0..n * c).map(|_| rng.normal() * 2.0).collect();
        let mut opts = CrossEntropy::new()
            .reduction([Reduction::Mean, Reduction::Sum, Reduction::None][trial % 3])
            .label_smoothing(if rng.chance(0.5) {
                rng.uniform() as f32
            } else {
                0.0
            })
            .z_loss(if rng.chance(0.5) { 0.01 } else { 0.0 })
            .softcap(rng.chance(0.4).then_some(1.5));
        if rng.chance(0.3) {
            opts = opts.ignore_index(0);
        }
        let w: Vec<f64> = (0..c).map(|_| rng.range(0.2, 2.0)).collect();
        let w = rng.chance(0.5).then_some(w.as_slice());
        let up: Vec<f64> = if opts.reduction == Reduction::None && rng.chance(0.5) {
            (0..n).map(|_| rng.normal()).collect()
        } else {
            vec![rng.range(0.5, 2.0)]
        };
        if trial % 2 == 0 {
            let y: Vec<i64> = (0..n).map(|_| rng.below(c) as i64).collect();
            check_fd(&opts, &x, (n, c), RefTarget::Classes(&y), w, &up);
        } else {
            let mut t: Vec<f64> = (0..n * c).map(|_| rng.uniform()).collect();
            for row in t.chunks_mut(c) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            check_fd(&opts, &x, (n, c), RefTarget::Probabilities(&t), w, &up);
        }
    }
}

#[test]
fn closed_forms() {
    // Uniform logits: loss = ln C for any target, gradient p - onehot = 1/C - [c = y].
    let (n, c) = (3, 5);
    let out = cross_entropy(
        &CrossEntropy::new(),
        &vec![0.7; n * c],
        (n, c),
        RefTarget::Classes(&[0, 4, 2]),
        None,
        &[1.0],
    )
    .unwrap();
    assert!((out.loss[0] - (c as f64).ln()).abs() < 1e-12);
    let g = &out.grads[0].1;
    assert!((g[0] - (0.2 - 1.0) / 3.0).abs() < 1e-12 && (g[1] - 0.2 / 3.0).abs() < 1e-12);

    // One class: softmax is 1, loss 0, gradient 0; z-loss adds z * x².
    let out = cross_entropy(
        &CrossEntropy::new().z_loss(0.5),
        &[3.0],
        (1, 1),
        RefTarget::Classes(&[0]),
        None,
        &[1.0],
    )
    .unwrap();
    assert!((out.loss[0] - 0.5 * 9.0).abs() < 1e-12);

    // One-hot probabilities equal class targets (without weights the means agree too).
    let x = [0.3, -1.2, 2.5, 0.0, 0.1, 0.2];
    let opts = CrossEntropy::new().label_smoothing(0.2);
    let a = cross_entropy(&opts, &x, (2, 3), RefTarget::Classes(&[2, 0]), None, &[1.0]).unwrap();
    let b = cross_entropy(
        &opts,
        &x,
        (2, 3),
        RefTarget::Probabilities(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
        None,
        &[1.0],
    )
    .unwrap();
    assert!((a.loss[0] - b.loss[0]).abs() < 1e-12);
    for (u, v) in a.grads[0].1.iter().zip(&b.grads[0].1) {
        assert!((u - v).abs() < 1e-12);
    }

    // Full smoothing (ε = 1) ignores the target: loss = mean of -log p over classes.
    let full = cross_entropy(
        &CrossEntropy::new().label_smoothing(1.0),
        &x,
        (2, 3),
        RefTarget::Classes(&[2, 0]),
        None,
        &[1.0],
    )
    .unwrap();
    let lse = |r: &[f64]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
    let want = (x[..3].iter().map(|v| lse(&x[..3]) - v).sum::<f64>()
        + x[3..].iter().map(|v| lse(&x[3..]) - v).sum::<f64>())
        / 6.0;
    assert!((full.loss[0] - want).abs() < 1e-12);

    // Weighted mean divides by the sum of the targets' weights.
    let w = [2.0, 1.0, 0.5];
    let m = cross_entropy(
        &CrossEntropy::new(),
        &x,
        (2, 3),
        RefTarget::Classes(&[2, 0]),
        Some(&w),
        &[1.0],
    )
    .unwrap();
    let s = cross_entropy(
        &CrossEntropy::new().reduction(Reduction::Sum),
        &x,
        (2, 3),
        RefTarget::Classes(&[2, 0]),
        Some(&w),
        &[1.0],
    )
    .unwrap();
    assert!((m.loss[0] - s.loss[0] / 2.5).abs() < 1e-12);

    // All rows ignored: mean is 0 with a zero gradient (deliberate deviation from PyTorch's NaN).
    let z = cross_entropy(
        &CrossEntropy::new(),
        &x,
        (2, 3),
        RefTarget::Classes(&[-100, -100]),
        None,
        &[1.0],
    )
    .unwrap();
    assert_eq!(z.loss, vec![0.0]);
    assert!(z.grads[0].1.iter().all(|&g| g == 0.0));
}

/// Central differences of every registered loss's reference at random small problems.
/// Steps are taken in f32 (the inputs' type) and divided by the step actually taken. Points
/// where the loss is not smooth within a step (a kink or a jump: the differences at h and h/2
/// disagree) or where a step leaves the input's domain (bce's probabilities at 0 or 1) are
/// skipped and counted; they must stay under a fifth of the points checked.
#[test]
fn every_reference_gradient_matches_finite_differences() {
    use wgpu_losses::registry::{Case, HostData};
    let mut rng = fresh_rng("every_reference_gradient_matches_finite_differences");
    for def in wgpu_losses::losses::all() {
        let (mut checked, mut kinks) = (0, 0);
        for _ in 0..4 {
            // A small random problem: few enough elements for O(len²) differences.
            let mut case = (0..1000)
                .map(|_| def.random_case(&mut rng))
                .find(|c| {
                    c.inputs
                        .values()
                        .all(|a| a.shape.iter().product::<usize>() <= 120)
                })
                .unwrap_or_else(|| panic!("{}: no small random case", def.name()));
            case.inputs.remove("grad_output");
            // Gaussian NLL's gradient passes through the variance's clamp by contract (as
            // PyTorch's, which clamps under no_grad): not the derivative where var < eps, so
            // differences are taken away from the clamp. The PyTorch fixtures check the
            // clamped side (`eps_clamps_mean`).
            if def.name() == "gaussian-nll" {
                let eps: f32 = case.options.get("eps").map_or(1e-6, |e| e.parse().unwrap());
                if let HostData::F32(v) = &mut case.inputs.get_mut("var").unwrap().data {
                    v.iter_mut().for_each(|v| *v = v.max(2.0 * eps + 1e-3));
                }
            }
            // An impossible CTC alignment's infinite loss would leave nothing to difference;
            // zero_infinity makes it 0 with its (zero) gradient.
            if def.name() == "ctc" {
                case = case.set("zero_infinity", true);
            }
            let base = def.reference(&case).unwrap();
            // A non-finite loss (an impossible CTC alignment in the batch) has no differences.
            let objective = |c: &Case| {
                let loss = def.reference(c).ok()?.loss.iter().sum::<f64>();
                loss.is_finite().then_some(loss)
            };
            for (name, grad, _) in &base.grads {
                let HostData::F32(x) = case.inputs[*name].data.clone() else {
                    panic!("{name} is differentiable, so floats");
                };
                let at = |i: usize, v: f32| {
                    let mut c = case.clone();
                    if let HostData::F32(d) = &mut c.inputs.get_mut(*name).unwrap().data {
                        d[i] = v;
                    }
                    objective(&c)
                };
                let Some(mid) = objective(&case) else {
                    continue;
                };
                for i in 0..x.len() {
                    // One-sided slopes at `step`, divided by the f32 steps actually taken.
                    let slopes = |step: f32| {
                        let (lo, hi) = (x[i] - step, x[i] + step);
                        Some((
                            (mid - at(i, lo)?) / (x[i] - lo) as f64,
                            (at(i, hi)? - mid) / (hi - x[i]) as f64,
                        ))
                    };
                    // Central differences at h and h/2 where the loss is smooth within h, for
                    // h from 1e-4·(1 + |x|) down by 8 twice (steep spots: bce near 0 or 1).
                    // Smooth: the one-sided slopes' gap (h·f'') halves with the step, and the
                    // two central differences agree to O(h²). A kink at the point (a hinge, a
                    // tie in a ranking) keeps its gap however small, at every step; a kink or
                    // a jump elsewhere within the step moves one central difference and not
                    // the other. The slopes' rounding noise is far under 1e-9 of the objective.
                    let resolved = [1.0f32, 0.125, 0.015625].iter().find_map(|scale| {
                        let h = 1e-4 * (1.0 + x[i].abs()) * scale;
                        let ((left, right), (left2, right2)) = (slopes(h)?, slopes(h / 2.0)?);
                        let (fd, fd2) = ((left + right) / 2.0, (left2 + right2) / 2.0);
                        let (gap, gap2) = (right - left, right2 - left2);
                        let kinked = gap.abs() > 1e-9 * (1.0 + mid.abs())
                            && (gap2 - gap / 2.0).abs() > 0.25 * gap.abs();
                        let smooth = !kinked && (fd - fd2).abs() <= 1e-5 * (1.0 + fd2.abs());
                        smooth.then_some((fd, fd2))
                    });
                    let Some((fd, fd2)) = resolved else {
                        kinks += 1;
                        continue;
                    };
                    checked += 1;
                    // Richardson's extrapolation cancels the h² term; what is left is well
                    // under the difference between the two steps.
                    let fd = (4.0 * fd2 - fd) / 3.0;
                    assert!(
                        (fd - grad[i]).abs() <= 1e-4 * (1.0 + fd.abs()) + (fd2 - fd).abs(),
                        "{} d/d{name}[{i}]: finite difference {fd} vs analytic {} ({:?})",
                        def.name(),
                        grad[i],
                        case.options
                    );
                }
            }
        }
        assert!(
            checked > 4 * kinks,
            "{}: {checked} checked, {kinks} at kinks",
            def.name()
        );
    }
}

/// A −∞ logit in a class that is not the target leaves the loss finite, as PyTorch (the
/// reference multiplied it by a smoothing weight of 0, giving NaN).
#[test]
fn a_minus_infinite_logit_elsewhere_leaves_the_loss_finite() {
    let logits = [1.0, f64::NEG_INFINITY, 0.5];
    let out = cross_entropy(
        &CrossEntropy::new(),
        &logits,
        (1, 3),
        RefTarget::Classes(&[0]),
        None,
        &[1.0],
    )
    .unwrap();
    let want = -(1.0 - (1f64.exp() + 0.5f64.exp()).ln());
    assert!((out.loss[0] - want).abs() < 1e-15, "{:?}", out.loss);
    let g = &out.grads[0].1;
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert_eq!(g[1], 0.0);
}

/// Two logits tied at ±3e38 share the probability: p = ½ each, loss log 2 (the reference
/// formed x − (m + log 2), which rounds back to x − m, and gave p = 1 to both).
#[test]
fn a_tie_at_the_largest_logits_splits_the_probability() {
    for big in [3e38, -3e38] {
        let out = cross_entropy(
            &CrossEntropy::new(),
            &[big, big],
            (1, 2),
            RefTarget::Classes(&[0]),
            None,
            &[1.0],
        )
        .unwrap();
        assert!(
            (out.loss[0] - 2f64.ln()).abs() < 1e-15,
            "{big}: {:?}",
            out.loss
        );
        assert_eq!(out.grads[0].1, [-0.5, 0.5], "{big}");
    }
}

/// A NaN in `positive` makes the loss NaN but does not reach `grad_negative` without swap,
/// as in PyTorch, which forms d(p, n) only with swap.
#[test]
fn a_nan_positive_does_not_poison_the_negative_gradient() {
    use wgpu_losses::reference::triplet;
    let (a, mut p, n) = (
        [0.0, 1.0, 0.5, 0.5],
        [1.0, 0.0, 0.5, -0.5],
        [2.0, 2.0, 0.0, 0.0],
    );
    p[0] = f64::NAN;
    let out = triplet(&wgpu_losses::Triplet::new(), &a, &p, &n, 2, &[1.0]);
    assert!(out.loss[0].is_nan());
    let gn = &out
        .grads
        .iter()
        .find(|(name, _)| *name == "negative")
        .unwrap()
        .1;
    assert!(gn.iter().all(|v| v.is_finite()), "{gn:?}");
}

/// A +∞ in a softmax row: as PyTorch's `logsumexp` and its backward, only the +∞ element's
/// gradient is NaN (the reference's max-shifted normalizer made the whole row NaN). distill-kl
/// and listmle, whose rows the backends may still make NaN whole (tests/non_finite.rs).
#[test]
fn a_positive_infinite_score_is_nan_only_at_itself_in_the_reference() {
    use wgpu_losses::registry::{Case, HostArray};
    let student = HostArray::f32(&[1, 4], vec![0.5, f32::INFINITY, -1.0, 2.0]);
    let teacher = HostArray::f32(&[1, 4], vec![1.0, 0.0, -0.5, 0.25]);
    let distill = wgpu_losses::losses::find("distill-kl").unwrap();
    let case = Case::default()
        .with("student", student)
        .with("teacher", teacher);
    let out = distill.reference(&case).unwrap();
    let nan: Vec<bool> = out.grads[0].1.iter().map(|g| g.is_nan()).collect();
    assert_eq!(nan, [false, true, false, false], "{:?}", out.grads);
    let listmle = wgpu_losses::losses::find("listmle").unwrap();
    let case = Case::default()
        .with(
            "scores",
            HostArray::f32(&[1, 4], vec![0.5, 1.0, f32::INFINITY, -2.0]),
        )
        .with(
            "relevance",
            HostArray::f32(&[1, 4], vec![3.0, 2.0, 1.0, 0.0]),
        );
    let out = listmle.reference(&case).unwrap();
    let nan: Vec<bool> = out.grads[0].1.iter().map(|g| g.is_nan()).collect();
    assert_eq!(nan, [false, false, true, false], "{:?}", out.grads);
}

/// jsd with β strictly between 0 and 1: a −∞ student log-probability (q = 0) has slope
/// (1 − β)·q·(x − log m) → 0, the backends' value, not 0·(−∞).
#[test]
fn jsd_at_a_zero_student_probability_has_a_zero_slope() {
    use wgpu_losses::registry::{Case, HostArray};
    let ln = |p: f32| p.ln();
    let input = HostArray::f32(&[1, 3], vec![f32::NEG_INFINITY, ln(0.25), ln(0.75)]);
    let target = HostArray::f32(&[1, 3], vec![ln(0.5), ln(0.25), ln(0.25)]);
    let jsd = wgpu_losses::losses::find("jsd").unwrap();
    let case = Case::default()
        .with("input", input)
        .with("target", target)
        .set("beta", 0.5);
    let out = jsd.reference(&case).unwrap();
    assert!(out.loss[0].is_finite(), "{:?}", out.loss);
    assert_eq!(out.grads[0].1[0], 0.0, "{:?}", out.grads);
}
