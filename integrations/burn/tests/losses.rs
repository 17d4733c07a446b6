//! Every wrapped loss through burn: the value and every input gradient from burn's autodiff
//! equal this crate's `run` of the same loss on the same data (the same kernels: agreement to
//! 2e-6 of the largest value, the room for a kernel variant picked by a different buffer
//! offset), and burn's own loss where burn has one (independent f32 arithmetic: 2e-5 of the
//! largest value). Upstream gradients other than one, per-item losses, inference without
//! autodiff, and bad input as errors.

#[path = "../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::sync::OnceLock;

use burn::nn::loss::{
    BinaryCrossEntropyLossConfig, CosineEmbeddingLossConfig, CrossEntropyLossConfig,
    HingeEmbeddingLossConfig, HuberLossConfig, KLDivLossConfig, MarginRankingLossConfig, MseLoss,
    MultiMarginLossConfig, PoissonNllLossConfig, Reduction as BurnReduction, SmoothL1LossConfig,
    SoftMarginLoss, TripletMarginLossConfig,
};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use common::{values, Rng};
use wgpu_losses::{
    ClassRowsInputs, ContrastiveInputs, CrossEntropyInputs, CtcInputs, ElementwiseInputs, Engine,
    LinearCrossEntropyInputs, LossValues, MinedTripletInputs, NceInputs, NllInputs, OverlapInputs,
    RankingInputs, Target, TripletInputs, Upstream,
};
use wgpu_losses_burn::{
    Activation, ClassRows, ClassRowsKind, Contrastive, CosineEmbedding, CrossEntropy, Ctc,
    Distance, ElementwiseLoss, Error, InfoNce, LinearCrossEntropy, MinedTriplet, Mining, NceKind,
    Nll, Overlap, OverlapKind, Pointwise, Ranking, RankingKind, Reduction, SoftmaxFocal, Triplet,
};

/// burn's wgpu device shared with wgpu-losses; no adapter fails the test.
fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            wgpu_losses_burn::init().expect(
                "a wgpu adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)",
            )
        })
        .clone()
}

fn engine() -> Engine {
    wgpu_losses_burn::engine(&device()).expect("shared")
}

fn normals(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn classes(rng: &mut Rng, n: usize, c: usize) -> Vec<i32> {
    (0..n).map(|_| rng.below(c) as i32).collect()
}

fn tracked2(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &device().autodiff()).require_grad()
}

fn tracked1(v: &[f32]) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device().autodiff()).require_grad()
}

fn constant1(v: &[f32]) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device().autodiff())
}

fn ints(v: &[i32]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device().autodiff())
}

fn up2(e: &Engine, v: &[f32], shape: [usize; 2]) -> wgpu_losses::Tensor {
    e.upload(v, &shape).unwrap()
}

fn up1(e: &Engine, v: &[f32]) -> wgpu_losses::Tensor {
    e.upload(v, &[v.len()]).unwrap()
}

fn up_i32(e: &Engine, v: &[i32]) -> wgpu_losses::Tensor {
    e.upload_i32(v, &[v.len()]).unwrap()
}

/// `got` equals `want` to `rel` of `want`'s largest magnitude.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}[{i}]: {g} vs {w} (largest {scale}, tolerance {rel} of it)"
        );
    }
}

const SAME_KERNELS: f32 = 2e-6;
const INDEPENDENT: f32 = 2e-5;

fn grad2(t: &Tensor<2>, grads: &Gradients) -> Vec<f32> {
    values(t.grad(grads).expect("a gradient"))
}

fn grad1(t: &Tensor<1>, grads: &Gradients) -> Vec<f32> {
    values(t.grad(grads).expect("a gradient"))
}

/// Checks a burn loss and the gradients of `inputs` against `want`.
#[track_caller]
fn check(name: &str, loss: Tensor<1>, inputs: &[(&str, &dyn GradOf)], want: &LossValues) {
    assert_close(
        &format!("{name} loss"),
        &values(loss.clone()),
        &want.loss,
        SAME_KERNELS,
    );
    let grads = loss.backward();
    for (input, t) in inputs {
        let g = t.grad_values(&grads);
        let w = want
            .grad(input)
            .unwrap_or_else(|| panic!("{name}: no gradient {input}"));
        assert_close(&format!("{name} grad {input}"), &g, w, SAME_KERNELS);
    }
}

trait GradOf {
    fn grad_values(&self, grads: &Gradients) -> Vec<f32>;
}
impl GradOf for Tensor<2> {
    fn grad_values(&self, grads: &Gradients) -> Vec<f32> {
        grad2(self, grads)
    }
}
impl GradOf for Tensor<1> {
    fn grad_values(&self, grads: &Gradients) -> Vec<f32> {
        grad1(self, grads)
    }
}

#[test]
fn cross_entropy_equals_run_and_burns_loss() {
    let (n, c) = (37, 11);
    let mut rng = Rng::new(1);
    let x = normals(&mut rng, n * c);
    let t = classes(&mut rng, n, c);
    let loss = CrossEntropy::new().label_smoothing(0.1);
    let logits = tracked2(&x, [n, c]);
    let ours = wgpu_losses_burn::cross_entropy(&loss, logits.clone(), ints(&t), None).unwrap();

    let e = engine();
    let (xg, tg) = (up2(&e, &x, [n, c]), up_i32(&e, &t));
    let want = loss
        .run(&e, &CrossEntropyInputs::new(&xg, Target::Classes(&tg)))
        .unwrap();
    check("cross-entropy", ours.clone(), &[("logits", &logits)], &want);

    let logits_b = tracked2(&x, [n, c]);
    let theirs = CrossEntropyLossConfig::new()
        .with_smoothing(Some(0.1))
        .init(&device().autodiff())
        .forward(logits_b.clone(), ints(&t));
    assert_close(
        "vs burn loss",
        &values(ours),
        &values(theirs.clone()),
        INDEPENDENT,
    );
    let g = theirs.backward();
    assert_close(
        "vs burn grad",
        &grad2(&logits_b, &g),
        want.grad("logits").unwrap(),
        INDEPENDENT,
    );
}

#[test]
fn every_cross_entropy_option_and_input() {
    let (n, c) = (29, 7);
    let mut rng = Rng::new(2);
    let x = normals(&mut rng, n * c);
    let mut t = classes(&mut rng, n, c);
    t[3] = -100;
    t[10] = -100;
    let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.25).collect();
    let probs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let probs: Vec<f32> = probs
        .chunks(c)
        .flat_map(|r| {
            let s: f32 = r.iter().sum();
            r.iter().map(move |v| v / s).collect::<Vec<_>>()
        })
        .collect();
    let e = engine();
    let (xg, tg, wg, pg) = (
        up2(&e, &x, [n, c]),
        up_i32(&e, &t),
        up1(&e, &w),
        up2(&e, &probs, [n, c]),
    );
    for loss in [
        CrossEntropy::new().z_loss(1e-3).softcap(Some(3.0)),
        CrossEntropy::new()
            .label_smoothing(0.2)
            .reduction(Reduction::Sum),
    ] {
        let logits = tracked2(&x, [n, c]);
        let got =
            wgpu_losses_burn::cross_entropy(&loss, logits.clone(), ints(&t), Some(constant1(&w)))
                .unwrap();
        let mut inputs = CrossEntropyInputs::new(&xg, Target::Classes(&tg));
        inputs.weight = Some(&wg);
        let want = loss.run(&e, &inputs).unwrap();
        check("weighted, ignored rows", got, &[("logits", &logits)], &want);

        let logits = tracked2(&x, [n, c]);
        let target =
            Tensor::<2>::from_data(TensorData::new(probs.clone(), [n, c]), &device().autodiff());
        let got =
            wgpu_losses_burn::cross_entropy_probabilities(&loss, logits.clone(), target, None)
                .unwrap();
        let want = loss
            .run(
                &e,
                &CrossEntropyInputs::new(&xg, Target::Probabilities(&pg)),
            )
            .unwrap();
        check("probabilities", got, &[("logits", &logits)], &want);
    }
}

#[test]
fn nll_equals_run() {
    let (n, c) = (19, 6);
    let mut rng = Rng::new(14);
    let x: Vec<f32> = normals(&mut rng, n * c)
        .chunks(c)
        .flat_map(|r| {
            let lse = r.iter().map(|v| v.exp()).sum::<f32>().ln();
            r.iter().map(move |v| v - lse).collect::<Vec<_>>()
        })
        .collect();
    let mut t = classes(&mut rng, n, c);
    t[2] = -100;
    let w: Vec<f32> = (0..c).map(|i| 0.25 + i as f32 * 0.5).collect();
    let e = engine();
    let (xg, tg, wg) = (up2(&e, &x, [n, c]), up_i32(&e, &t), up1(&e, &w));
    for loss in [Nll::new(), Nll::new().reduction(Reduction::None)] {
        let input = tracked2(&x, [n, c]);
        let got =
            wgpu_losses_burn::nll(&loss, input.clone(), ints(&t), Some(constant1(&w))).unwrap();
        let mut inputs = NllInputs::new(&xg, &tg);
        inputs.weight = Some(&wg);
        let want = loss.run(&e, &inputs).unwrap();
        let got = if loss.reduction == Reduction::None {
            got.sum()
        } else {
            got
        };
        let want_sum = LossValues {
            loss: vec![want.loss.iter().sum()],
            ..want.clone()
        };
        let want = if loss.reduction == Reduction::None {
            &want_sum
        } else {
            &want
        };
        check("nll", got, &[("input", &input)], want);
    }
}

#[test]
fn class_row_losses_equal_run_and_burns_own() {
    let (n, c) = (15, 8);
    let mut rng = Rng::new(15);
    let x = normals(&mut rng, n * c);
    let t = classes(&mut rng, n, c);
    let bits: Vec<f32> = (0..n * c).map(|_| rng.below(2) as f32).collect();
    let w: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
    let e = engine();
    let (xg, tg, bg, wg) = (
        up2(&e, &x, [n, c]),
        up_i32(&e, &t),
        up2(&e, &bits, [n, c]),
        up1(&e, &w),
    );
    for p in [1, 2] {
        let loss = ClassRows::new(ClassRowsKind::MultiMargin { p, margin: 0.75 });
        let input = tracked2(&x, [n, c]);
        let got =
            wgpu_losses_burn::multi_margin(&loss, input.clone(), ints(&t), Some(constant1(&w)))
                .unwrap();
        let mut inputs = ClassRowsInputs::new(&xg, &tg);
        inputs.weight = Some(&wg);
        let want = loss.run(&e, &inputs).unwrap();
        check("multi-margin", got, &[("input", &input)], &want);

        // burn's own MultiMarginLoss (no weight).
        let (ours_in, theirs_in) = (tracked2(&x, [n, c]), tracked2(&x, [n, c]));
        let ours = wgpu_losses_burn::multi_margin(&loss, ours_in.clone(), ints(&t), None).unwrap();
        let theirs = MultiMarginLossConfig::new()
            .with_p(p as i32)
            .with_margin(0.75)
            .init()
            .forward(theirs_in.clone(), ints(&t), BurnReduction::Mean);
        compare(
            &format!("multi-margin p={p} vs burn"),
            ours,
            &ours_in,
            theirs,
            &theirs_in,
        );
    }
    let loss = ClassRows::new(ClassRowsKind::MultilabelSoftMargin);
    let input = tracked2(&x, [n, c]);
    let target =
        Tensor::<2>::from_data(TensorData::new(bits.clone(), [n, c]), &device().autodiff());
    let got =
        wgpu_losses_burn::multilabel_soft_margin(&loss, input.clone(), target, Some(constant1(&w)))
            .unwrap();
    let mut inputs = ClassRowsInputs::new(&xg, &bg);
    inputs.weight = Some(&wg);
    let want = loss.run(&e, &inputs).unwrap();
    check("multilabel soft margin", got, &[("input", &input)], &want);

    let loss = ClassRows::new(ClassRowsKind::DistillKl { temperature: 2.0 });
    let teacher_values = normals(&mut rng, n * c);
    let student = tracked2(&x, [n, c]);
    let teacher = Tensor::<2>::from_data(
        TensorData::new(teacher_values.clone(), [n, c]),
        &device().autodiff(),
    );
    let got = wgpu_losses_burn::distill_kl(&loss, student.clone(), teacher).unwrap();
    let tg = up2(&e, &teacher_values, [n, c]);
    let want = loss.run(&e, &ClassRowsInputs::new(&xg, &tg)).unwrap();
    check("distill-kl", got, &[("student", &student)], &want);
}

#[test]
fn upstream_gradients_scale_the_saved_gradient() {
    let (n, c) = (16, 5);
    let mut rng = Rng::new(3);
    let x = normals(&mut rng, n * c);
    let t = classes(&mut rng, n, c);
    let e = engine();
    let (xg, tg) = (up2(&e, &x, [n, c]), up_i32(&e, &t));

    // A scalar upstream: 2.5 · loss.
    let loss = CrossEntropy::new();
    let logits = tracked2(&x, [n, c]);
    let l = wgpu_losses_burn::cross_entropy(&loss, logits.clone(), ints(&t), None).unwrap();
    let grads = (l * 2.5).backward();
    let want = loss
        .run(
            &e,
            &CrossEntropyInputs::new(&xg, Target::Classes(&tg)).upstream(Upstream::Scalar(2.5)),
        )
        .unwrap();
    assert_close(
        "2.5 · grad",
        &grad2(&logits, &grads),
        want.grad("logits").unwrap(),
        SAME_KERNELS,
    );

    // Per-row upstream values of an unreduced loss: Σ rᵢ · lossᵢ.
    let loss = CrossEntropy::new().reduction(Reduction::None);
    let r: Vec<f32> = (0..n).map(|i| i as f32 - 4.0).collect();
    let logits = tracked2(&x, [n, c]);
    let l = wgpu_losses_burn::cross_entropy(&loss, logits.clone(), ints(&t), None).unwrap();
    assert_eq!(l.dims(), [n]);
    let grads = (l * constant1(&r)).sum().backward();
    let rg = up1(&e, &r);
    let want = loss
        .run(
            &e,
            &CrossEntropyInputs::new(&xg, Target::Classes(&tg)).upstream(Upstream::PerItem(&rg)),
        )
        .unwrap();
    assert_close(
        "per-row grads",
        &grad2(&logits, &grads),
        want.grad("logits").unwrap(),
        SAME_KERNELS,
    );
}

#[test]
fn without_autodiff_the_loss_alone() {
    let (n, c) = (9, 4);
    let mut rng = Rng::new(4);
    let x = normals(&mut rng, n * c);
    let t = classes(&mut rng, n, c);
    let loss = SoftmaxFocal::new();
    let d = device();
    let logits = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, c]), &d);
    let target = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), &d);
    let got = wgpu_losses_burn::softmax_focal(&loss, logits, target, None).unwrap();
    let e = engine();
    let (xg, tg) = (up2(&e, &x, [n, c]), up_i32(&e, &t));
    let want = loss
        .gradient(false)
        .run(&e, &CrossEntropyInputs::new(&xg, Target::Classes(&tg)))
        .unwrap();
    assert_close("focal loss", &values(got), &want.loss, SAME_KERNELS);

    let logits = tracked2(&x, [n, c]);
    let got = wgpu_losses_burn::softmax_focal(&loss, logits.clone(), ints(&t), None).unwrap();
    let want = loss
        .run(&e, &CrossEntropyInputs::new(&xg, Target::Classes(&tg)))
        .unwrap();
    check("softmax focal", got, &[("logits", &logits)], &want);
}

#[test]
fn elementwise_losses_equal_run_and_burns_losses() {
    let (n, d) = (23, 6);
    let mut rng = Rng::new(5);
    let x = normals(&mut rng, n * d);
    let y = normals(&mut rng, n * d);
    let bits: Vec<f32> = (0..n * d).map(|_| rng.below(2) as f32).collect();
    let e = engine();
    let xg = up2(&e, &x, [n, d]);
    let ad = device().autodiff();
    let kinds = [
        Pointwise::Mse,
        Pointwise::L1,
        Pointwise::Huber { delta: 0.7 },
        Pointwise::SmoothL1 { beta: 0.5 },
        Pointwise::BceWithLogits,
        Pointwise::SigmoidFocal {
            alpha: 0.25,
            gamma: 2.0,
        },
        Pointwise::Power { p: 1.5 },
        Pointwise::SoftMargin,
    ];
    for kind in kinds {
        let binary = matches!(
            kind,
            Pointwise::BceWithLogits | Pointwise::SigmoidFocal { .. }
        );
        let target = if binary { &bits } else { &y };
        let target = match kind {
            Pointwise::SoftMargin => bits.iter().map(|b| 2.0 * b - 1.0).collect(),
            _ => target.clone(),
        };
        let tg = up2(&e, &target, [n, d]);
        let loss = ElementwiseLoss::new(kind);
        let input = tracked2(&x, [n, d]);
        let t = Tensor::<2>::from_data(TensorData::new(target.clone(), [n, d]), &ad);
        let got = wgpu_losses_burn::elementwise(&loss, input.clone(), t.clone()).unwrap();
        let want = loss.run(&e, &ElementwiseInputs::new(&xg, &tg)).unwrap();
        let name = kind.grad_names()[0];
        check(&format!("{kind:?}"), got.clone(), &[(name, &input)], &want);

        let input_b = tracked2(&x, [n, d]);
        let theirs = match kind {
            Pointwise::Mse => MseLoss::new().forward(input_b.clone(), t, BurnReduction::Mean),
            Pointwise::Huber { delta } => {
                HuberLossConfig::new(delta)
                    .init()
                    .forward(input_b.clone(), t, BurnReduction::Mean)
            }
            Pointwise::BceWithLogits => {
                let t_int: Vec<i32> = bits.iter().map(|&b| b as i32).collect();
                let t_int = Tensor::<2, Int>::from_data(TensorData::new(t_int, [n, d]), &ad);
                BinaryCrossEntropyLossConfig::new()
                    .with_logits(true)
                    .init(&ad)
                    .forward(input_b.clone(), t_int)
            }
            _ => continue,
        };
        assert_close(
            &format!("{kind:?} vs burn"),
            &values(got),
            &values(theirs.clone()),
            INDEPENDENT,
        );
        let g = theirs.backward();
        assert_close(
            &format!("{kind:?} grad vs burn"),
            &grad2(&input_b, &g),
            want.grad(name).unwrap(),
            INDEPENDENT,
        );
    }
}

#[test]
fn weighted_bce_and_margin_ranking() {
    let (n, d) = (12, 5);
    let mut rng = Rng::new(6);
    let x = normals(&mut rng, n * d);
    let x2 = normals(&mut rng, n * d);
    let bits: Vec<f32> = (0..n * d).map(|_| rng.below(2) as f32).collect();
    let signs: Vec<f32> = bits.iter().map(|b| 2.0 * b - 1.0).collect();
    let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32).collect();
    let pw: Vec<f32> = (0..d).map(|i| 2.0 - 0.3 * i as f32).collect();
    let e = engine();
    let ad = device().autodiff();
    let (xg, x2g, bg, sg, wg, pwg) = (
        up2(&e, &x, [n, d]),
        up2(&e, &x2, [n, d]),
        up2(&e, &bits, [n, d]),
        up2(&e, &signs, [n, d]),
        up1(&e, &w),
        up1(&e, &pw),
    );

    let loss = ElementwiseLoss::new(Pointwise::BceWithLogits).reduction(Reduction::Sum);
    let input = tracked2(&x, [n, d]);
    let t = Tensor::<2>::from_data(TensorData::new(bits.clone(), [n, d]), &ad);
    let got = wgpu_losses_burn::elementwise_weighted(
        &loss,
        input.clone(),
        t,
        Some(constant1(&w)),
        Some(constant1(&pw)),
    )
    .unwrap();
    let mut inputs = ElementwiseInputs::new(&xg, &bg);
    inputs.weight = Some(&wg);
    inputs.pos_weight = Some(&pwg);
    let want = loss.run(&e, &inputs).unwrap();
    check("weighted bce", got, &[("logits", &input)], &want);

    let loss = ElementwiseLoss::new(Pointwise::MarginRanking { margin: 0.3 });
    let (a, b) = (tracked2(&x, [n, d]), tracked2(&x2, [n, d]));
    let y = Tensor::<2>::from_data(TensorData::new(signs.clone(), [n, d]), &ad);
    let got = wgpu_losses_burn::margin_ranking(&loss, a.clone(), b.clone(), y).unwrap();
    let want = loss
        .run(&e, &ElementwiseInputs::ranking(&xg, &x2g, &sg))
        .unwrap();
    check("margin ranking", got, &[("x1", &a), ("x2", &b)], &want);
}

#[test]
fn pair_losses_equal_run() {
    let (n, d) = (19, 8);
    let mut rng = Rng::new(7);
    let (a, p, q) = (
        normals(&mut rng, n * d),
        normals(&mut rng, n * d),
        normals(&mut rng, n * d),
    );
    let bits: Vec<f32> = (0..n).map(|_| rng.below(2) as f32).collect();
    let signs: Vec<f32> = bits.iter().map(|b| 2.0 * b - 1.0).collect();
    let e = engine();
    let (ag, pg, qg, bg, sg) = (
        up2(&e, &a, [n, d]),
        up2(&e, &p, [n, d]),
        up2(&e, &q, [n, d]),
        up1(&e, &bits),
        up1(&e, &signs),
    );

    let loss = Triplet::new().swap(true);
    let (ta, tp, tq) = (
        tracked2(&a, [n, d]),
        tracked2(&p, [n, d]),
        tracked2(&q, [n, d]),
    );
    let got = wgpu_losses_burn::triplet(&loss, ta.clone(), tp.clone(), tq.clone()).unwrap();
    let inputs = TripletInputs {
        anchor: &ag,
        positive: &pg,
        negative: &qg,
        upstream: Upstream::Ones,
    };
    let want = loss.run(&e, &inputs).unwrap();
    check(
        "triplet",
        got,
        &[("anchor", &ta), ("positive", &tp), ("negative", &tq)],
        &want,
    );

    // TripletMarginWithDistanceLoss with the cosine distance.
    let loss = Triplet::new()
        .distance(Distance::Cosine)
        .swap(true)
        .margin(0.5);
    let (ta, tp, tq) = (
        tracked2(&a, [n, d]),
        tracked2(&p, [n, d]),
        tracked2(&q, [n, d]),
    );
    let got = wgpu_losses_burn::triplet(&loss, ta.clone(), tp.clone(), tq.clone()).unwrap();
    let want = loss.run(&e, &inputs).unwrap();
    check(
        "cosine triplet",
        got,
        &[("anchor", &ta), ("positive", &tp), ("negative", &tq)],
        &want,
    );

    let loss = Contrastive::new().margin(1.5);
    let (x1, x2) = (tracked2(&a, [n, d]), tracked2(&p, [n, d]));
    let got =
        wgpu_losses_burn::contrastive(&loss, x1.clone(), x2.clone(), constant1(&bits)).unwrap();
    let inputs = ContrastiveInputs {
        x1: &ag,
        x2: &pg,
        y: &bg,
        upstream: Upstream::Ones,
    };
    let want = loss.run(&e, &inputs).unwrap();
    check("contrastive", got, &[("x1", &x1), ("x2", &x2)], &want);

    let loss = CosineEmbedding::new().margin(0.2).reduction(Reduction::Sum);
    let (x1, x2) = (tracked2(&a, [n, d]), tracked2(&p, [n, d]));
    let got = wgpu_losses_burn::cosine_embedding(&loss, x1.clone(), x2.clone(), constant1(&signs))
        .unwrap();
    let inputs = ContrastiveInputs {
        x1: &ag,
        x2: &pg,
        y: &sg,
        upstream: Upstream::Ones,
    };
    let want = loss.run(&e, &inputs).unwrap();
    check("cosine embedding", got, &[("x1", &x1), ("x2", &x2)], &want);
}

#[test]
fn all_pairs_losses_equal_run() {
    let (n, d) = (24, 8);
    let mut rng = Rng::new(8);
    let z = normals(&mut rng, n * d);
    let z2 = normals(&mut rng, n * d);
    let labels = classes(&mut rng, n, 4);
    let e = engine();
    let (zg, z2g, lg) = (
        up2(&e, &z, [n, d]),
        up2(&e, &z2, [n, d]),
        up_i32(&e, &labels),
    );

    for mining in [Mining::BatchAll, Mining::BatchHard, Mining::SemiHard] {
        let loss = MinedTriplet::new().mining(mining);
        let t = tracked2(&z, [n, d]);
        let got = wgpu_losses_burn::mined_triplet(&loss, t.clone(), ints(&labels)).unwrap();
        let want = loss.run(&e, &MinedTripletInputs::new(&zg, &lg)).unwrap();
        check(&format!("{mining:?}"), got, &[("embeddings", &t)], &want);
    }

    let loss = InfoNce::new(NceKind::NtXent);
    let t = tracked2(&z, [n, d]);
    let got = wgpu_losses_burn::nt_xent(&loss, t.clone()).unwrap();
    let want = loss.run(&e, &NceInputs::nt_xent(&zg)).unwrap();
    check("nt-xent", got, &[("z", &t)], &want);

    let loss = InfoNce::new(NceKind::Clip);
    let (a, b) = (tracked2(&z, [n, d]), tracked2(&z2, [n, d]));
    let got = wgpu_losses_burn::clip(&loss, a.clone(), b.clone()).unwrap();
    let want = loss.run(&e, &NceInputs::clip(&zg, &z2g)).unwrap();
    check("clip", got, &[("a", &a), ("b", &b)], &want);

    let loss = InfoNce::new(NceKind::SupCon);
    let t = tracked2(&z, [n, d]);
    let got = wgpu_losses_burn::supcon(&loss, t.clone(), ints(&labels)).unwrap();
    let want = loss.run(&e, &NceInputs::supcon(&zg, &lg)).unwrap();
    check("supcon", got, &[("embeddings", &t)], &want);
}

#[test]
fn linear_cross_entropy_equals_run() {
    let (n, h, v) = (21, 16, 45);
    let mut rng = Rng::new(9);
    let hidden = normals(&mut rng, n * h);
    let classifier: Vec<f32> = normals(&mut rng, v * h).iter().map(|x| 0.3 * x).collect();
    let bias = normals(&mut rng, v);
    let t = classes(&mut rng, n, v);
    let e = engine();
    let (hg, cg, bg, tg) = (
        up2(&e, &hidden, [n, h]),
        up2(&e, &classifier, [v, h]),
        up1(&e, &bias),
        up_i32(&e, &t),
    );
    let loss = LinearCrossEntropy::new().label_smoothing(0.1);
    let (th, tc, tb) = (
        tracked2(&hidden, [n, h]),
        tracked2(&classifier, [v, h]),
        tracked1(&bias),
    );
    let got = wgpu_losses_burn::linear_cross_entropy(
        &loss,
        th.clone(),
        tc.clone(),
        Some(tb.clone()),
        ints(&t),
        None,
    )
    .unwrap();
    let mut inputs = LinearCrossEntropyInputs::new(&hg, &cg, &tg);
    inputs.bias = Some(&bg);
    let want = loss.run(&e, &inputs).unwrap();
    check(
        "linear cross-entropy",
        got,
        &[("hidden", &th), ("classifier", &tc), ("bias", &tb)],
        &want,
    );
}

#[test]
fn inputs_from_burn_ops_are_read_after_them() {
    // The logits come from burn kernels recorded just before the call (a product and a
    // transpose, so a non-contiguous view is made contiguous): the fused call must see
    // their results.
    let (n, k, c) = (13, 6, 9);
    let mut rng = Rng::new(10);
    let a = normals(&mut rng, n * k);
    let b = normals(&mut rng, c * k);
    let t = classes(&mut rng, n, c);
    let ad = device().autodiff();
    let ta = Tensor::<2>::from_data(TensorData::new(a.clone(), [n, k]), &ad).require_grad();
    let tb = Tensor::<2>::from_data(TensorData::new(b.clone(), [c, k]), &ad);
    let logits = ta
        .clone()
        .matmul(tb.clone().transpose())
        .transpose()
        .transpose();
    let host_logits = values(logits.clone());
    let loss = CrossEntropy::new();
    let got = wgpu_losses_burn::cross_entropy(&loss, logits, ints(&t), None).unwrap();
    let e = engine();
    let (xg, tg) = (up2(&e, &host_logits, [n, c]), up_i32(&e, &t));
    let want = loss
        .run(&e, &CrossEntropyInputs::new(&xg, Target::Classes(&tg)))
        .unwrap();
    assert_close(
        "loss after burn ops",
        &values(got.clone()),
        &want.loss,
        SAME_KERNELS,
    );
    // The chain rule through burn's matmul: grad_a = grad_logits · b.
    let grads = got.backward();
    let grad_logits = want.grad("logits").unwrap();
    let expected: Vec<f32> = (0..n * k)
        .map(|i| {
            (0..c)
                .map(|j| grad_logits[i / k * c + j] * b[j * k + i % k])
                .sum()
        })
        .collect();
    assert_close("grad through matmul", &grad2(&ta, &grads), &expected, 1e-5);
}

#[test]
fn bad_input_is_an_error() {
    let (n, c) = (6, 4);
    let x = vec![0.5; n * c];
    let mut t = vec![1; n];
    t[4] = 7;
    let err =
        wgpu_losses_burn::cross_entropy(&CrossEntropy::new(), tracked2(&x, [n, c]), ints(&t), None)
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Loss(wgpu_losses::Error::Value { row: 4, .. })),
        "{msg}"
    );
    assert!(msg.contains("target") && msg.contains('7'), "{msg}");

    // A weight of the wrong length.
    let err = wgpu_losses_burn::cross_entropy(
        &CrossEntropy::new(),
        tracked2(&x, [n, c]),
        ints(&[0; 6]),
        Some(constant1(&[1.0; 3])),
    )
    .unwrap_err();
    assert!(err.to_string().contains("weight"), "{err}");

    // Options for another loss; per-item losses that share inputs under autodiff.
    let z = tracked2(&[0.1; 8 * 3], [8, 3]);
    let err = wgpu_losses_burn::clip(&InfoNce::new(NceKind::NtXent), z.clone(), z).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    let err = wgpu_losses_burn::linear_cross_entropy(
        &LinearCrossEntropy::new().reduction(Reduction::None),
        tracked2(&[0.1; 8], [2, 4]),
        tracked2(&[0.1; 12], [3, 4]),
        None,
        ints(&[0, 1]),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");

    // The failed calls left the device usable.
    let ok = wgpu_losses_burn::cross_entropy(
        &CrossEntropy::new(),
        tracked2(&x, [n, c]),
        ints(&[1; 6]),
        None,
    )
    .unwrap();
    assert!((values(ok)[0] - (4f32).ln()).abs() < 1e-6);
}

#[test]
fn more_losses_equal_burns_own() {
    let (n, d) = (17, 9);
    let mut rng = Rng::new(12);
    let ad = device().autodiff();
    let tensor = |v: &[f32]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [n, d]), &ad);
    let (a, p, q) = (
        normals(&mut rng, n * d),
        normals(&mut rng, n * d),
        normals(&mut rng, n * d),
    );

    // kl-div with batchmean: log-probabilities against probabilities.
    let log_softmax = |v: &[f32]| -> Vec<f32> {
        v.chunks(d)
            .flat_map(|r| {
                let lse = r.iter().map(|x| x.exp()).sum::<f32>().ln();
                r.iter().map(move |x| x - lse).collect::<Vec<_>>()
            })
            .collect()
    };
    let (lp, lq) = (log_softmax(&a), log_softmax(&p));
    let probs: Vec<f32> = lq.iter().map(|x| x.exp()).collect();
    let loss = ElementwiseLoss::new(Pointwise::KlDiv { log_target: false })
        .reduction(Reduction::BatchMean);
    let (ours_in, theirs_in) = (tracked2(&lp, [n, d]), tracked2(&lp, [n, d]));
    let ours = wgpu_losses_burn::elementwise(&loss, ours_in.clone(), tensor(&probs)).unwrap();
    let theirs = KLDivLossConfig::new().init().forward(
        theirs_in.clone(),
        tensor(&probs),
        BurnReduction::BatchMean,
    );
    compare("kl-div", ours, &ours_in, theirs, &theirs_in);

    // smooth L1 with β = 0.5, mean.
    let loss = ElementwiseLoss::new(Pointwise::SmoothL1 { beta: 0.5 });
    let (ours_in, theirs_in) = (tracked2(&a, [n, d]), tracked2(&a, [n, d]));
    let ours = wgpu_losses_burn::elementwise(&loss, ours_in.clone(), tensor(&p)).unwrap();
    let theirs = SmoothL1LossConfig::new()
        .with_beta(0.5)
        .init()
        .forward(theirs_in.clone(), tensor(&p))
        .mean();
    compare("smooth-l1", ours, &ours_in, theirs, &theirs_in);

    // Triplet margin (burn's distance has no ε; ours adds PyTorch's 1e-6 to each difference,
    // far below the tolerance here).
    let (ours_in, theirs_in) = (tracked2(&a, [n, d]), tracked2(&a, [n, d]));
    let ours = wgpu_losses_burn::triplet(&Triplet::new(), ours_in.clone(), tensor(&p), tensor(&q))
        .unwrap();
    let theirs = TripletMarginLossConfig::new().init().forward(
        theirs_in.clone(),
        tensor(&p),
        tensor(&q),
        BurnReduction::Mean,
    );
    compare("triplet", ours, &ours_in, theirs, &theirs_in);

    // Elementwise losses of two inputs with ±1 or positive targets.
    let signs: Vec<f32> = (0..n * d)
        .map(|_| 2.0 * rng.below(2) as f32 - 1.0)
        .collect();
    let counts: Vec<f32> = (0..n * d).map(|_| rng.below(6) as f32).collect();
    let cases: [(Pointwise, &[f32]); 3] = [
        (Pointwise::SoftMargin, &signs),
        (Pointwise::HingeEmbedding { margin: 0.8 }, &signs),
        (
            Pointwise::PoissonNll {
                log_input: true,
                full: true,
                eps: 1e-8,
            },
            &counts,
        ),
    ];
    for (kind, target) in cases {
        let (ours_in, theirs_in) = (tracked2(&a, [n, d]), tracked2(&a, [n, d]));
        let ours = wgpu_losses_burn::elementwise(
            &ElementwiseLoss::new(kind),
            ours_in.clone(),
            tensor(target),
        )
        .unwrap();
        let (x, t, mean) = (theirs_in.clone(), tensor(target), BurnReduction::Mean);
        let theirs = match kind {
            Pointwise::SoftMargin => SoftMarginLoss::new().forward(x, t, mean),
            Pointwise::HingeEmbedding { margin } => HingeEmbeddingLossConfig::new()
                .with_margin(margin.into())
                .init()
                .forward(x, t, mean),
            _ => PoissonNllLossConfig::new()
                .with_full(true)
                .init()
                .forward(x, t, mean),
        };
        compare(&format!("{kind:?}"), ours, &ours_in, theirs, &theirs_in);
    }

    // Margin ranking: both inputs differentiable.
    let loss = ElementwiseLoss::new(Pointwise::MarginRanking { margin: 0.25 });
    let (x1, x2) = (tracked2(&a, [n, d]), tracked2(&p, [n, d]));
    let (y1, y2) = (tracked2(&a, [n, d]), tracked2(&p, [n, d]));
    let ours =
        wgpu_losses_burn::margin_ranking(&loss, x1.clone(), x2.clone(), tensor(&signs)).unwrap();
    let theirs = MarginRankingLossConfig::new()
        .with_margin(0.25)
        .init()
        .forward(y1.clone(), y2.clone(), tensor(&signs), BurnReduction::Mean);
    assert_close(
        "margin ranking",
        &values(ours.clone()),
        &values(theirs.clone()),
        INDEPENDENT,
    );
    let (g, h) = (ours.backward(), theirs.backward());
    assert_close(
        "margin ranking x1",
        &grad2(&x1, &g),
        &grad2(&y1, &h),
        INDEPENDENT,
    );
    assert_close(
        "margin ranking x2",
        &grad2(&x2, &g),
        &grad2(&y2, &h),
        INDEPENDENT,
    );
    // Cosine embedding with labels ±1 per row.
    let rows: Vec<f32> = (0..n).map(|_| 2.0 * rng.below(2) as f32 - 1.0).collect();
    let row_ints: Vec<i32> = rows.iter().map(|&y| y as i32).collect();
    let (x1, x2) = (tracked2(&a, [n, d]), tracked2(&p, [n, d]));
    let (y1, y2) = (tracked2(&a, [n, d]), tracked2(&p, [n, d]));
    let ours = wgpu_losses_burn::cosine_embedding(
        &CosineEmbedding::new().margin(0.1),
        x1.clone(),
        x2.clone(),
        constant1(&rows),
    )
    .unwrap();
    let theirs = CosineEmbeddingLossConfig::new()
        .with_margin(0.1)
        .init()
        .forward(y1.clone(), y2.clone(), ints(&row_ints));
    assert_close(
        "cosine embedding",
        &values(ours.clone()),
        &values(theirs.clone()),
        INDEPENDENT,
    );
    let (g, h) = (ours.backward(), theirs.backward());
    assert_close(
        "cosine embedding x1",
        &grad2(&x1, &g),
        &grad2(&y1, &h),
        INDEPENDENT,
    );
    assert_close(
        "cosine embedding x2",
        &grad2(&x2, &g),
        &grad2(&y2, &h),
        INDEPENDENT,
    );
}

/// Our loss and the gradient of its first input against burn's.
#[track_caller]
fn compare(
    name: &str,
    ours: Tensor<1>,
    ours_in: &Tensor<2>,
    theirs: Tensor<1>,
    theirs_in: &Tensor<2>,
) {
    assert_close(
        name,
        &values(ours.clone()),
        &values(theirs.clone()),
        INDEPENDENT,
    );
    let (g, h) = (ours.backward(), theirs.backward());
    assert_close(
        &format!("{name} grad"),
        &grad2(ours_in, &g),
        &grad2(theirs_in, &h),
        INDEPENDENT,
    );
}

#[test]
fn half_precision_inputs_and_gradients() {
    use burn::tensor::FloatDType;
    let (n, c) = (21, 13);
    let mut rng = Rng::new(13);
    let x = normals(&mut rng, n * c);
    let t = classes(&mut rng, n, c);
    let e = engine();
    let tg = up_i32(&e, &t);
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let logits =
            Tensor::<2>::from_data(TensorData::new(x.clone(), [n, c]), &device().autodiff())
                .cast(dtype)
                .detach()
                .require_grad();
        assert_eq!(logits.dtype(), dtype.into());
        let loss = CrossEntropy::new().label_smoothing(0.05);
        let got = wgpu_losses_burn::cross_entropy(&loss, logits.clone(), ints(&t), None).unwrap();
        let rounded = values(logits.clone());
        let xg = match dtype {
            FloatDType::BF16 => e.upload_as(&rounded, &[n, c], wgpu_losses::DType::BF16),
            _ => e.upload_as(&rounded, &[n, c], wgpu_losses::DType::F16),
        }
        .unwrap();
        let want = loss
            .run(&e, &CrossEntropyInputs::new(&xg, Target::Classes(&tg)))
            .unwrap();
        assert_close(
            &format!("{dtype:?} loss"),
            &values(got.clone()),
            &want.loss,
            SAME_KERNELS,
        );
        let grads = got.backward();
        let g = logits.grad(&grads).expect("a gradient");
        assert_eq!(
            g.dtype(),
            dtype.into(),
            "the gradient keeps the input's type"
        );
        // Written in 16 bits by the same kernels: equal up to one rounding step of the type.
        let step = if dtype == FloatDType::BF16 {
            2f32.powi(-8)
        } else {
            2f32.powi(-11)
        };
        let (g, w) = (values(g), want.grad("logits").unwrap().to_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= step * b.abs() + 1e-7,
                "{dtype:?} grad[{i}]: {a} vs {b}"
            );
        }
    }
}

#[test]
fn ranking_losses_equal_run() {
    let (q, l) = (6, 9);
    let mut rng = Rng::new(21);
    let scores = normals(&mut rng, q * l);
    let relevance: Vec<f32> = classes(&mut rng, q * l, 4)
        .iter()
        .map(|&g| g as f32)
        .collect();
    let lengths = [9, 4, 1, 0, 7, 9];
    let e = engine();
    let (sg, rg, lg) = (
        up2(&e, &scores, [q, l]),
        up2(&e, &relevance, [q, l]),
        up_i32(&e, &lengths),
    );
    for kind in [
        RankingKind::RankNet,
        RankingKind::PairwiseHinge { margin: 0.5 },
        RankingKind::ListNet,
        RankingKind::ListMle,
        RankingKind::LambdaNdcg,
    ] {
        let loss = Ranking::new(kind).k(Some(5));
        let input = tracked2(&scores, [q, l]);
        let got = wgpu_losses_burn::ranking(
            &loss,
            input.clone(),
            Tensor::from_data(TensorData::new(relevance.clone(), [q, l]), &device()),
            Some(ints(&lengths)),
        )
        .unwrap();
        let mut inputs = RankingInputs::new(&sg, &rg);
        inputs.lengths = Some(&lg);
        let want = loss.run(&e, &inputs).unwrap();
        check(&format!("{kind:?}"), got, &[("scores", &input)], &want);
    }
}

#[test]
fn ctc_equals_run_and_needs_a_reduction_under_autodiff() {
    let (t, n, c, s) = (12, 3, 5, 4);
    let mut rng = Rng::new(22);
    let x = normals(&mut rng, t * n * c);
    let targets: Vec<i32> = vec![1, 2, 2, 3, 4, 1, 0, 0, 3, 3, 1, 0];
    let (input_lengths, target_lengths) = ([12, 9, 12], [4, 2, 3]);
    let e = engine();
    let logits_g = e.upload(&x, &[t, n, c]).unwrap();
    let targets_g = e.upload_i32(&targets, &[n, s]).unwrap();
    let ints2 = || Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [n, s]), &device());
    for loss in [Ctc::new(), Ctc::new().reduction(Reduction::Sum)] {
        let logits =
            Tensor::<3>::from_data(TensorData::new(x.clone(), [t, n, c]), &device().autodiff())
                .require_grad();
        let got = wgpu_losses_burn::ctc(
            &loss,
            logits.clone(),
            ints2(),
            &input_lengths,
            &target_lengths,
        )
        .unwrap();
        let want = loss
            .run(
                &e,
                &CtcInputs::new(&logits_g, &targets_g, &input_lengths, &target_lengths),
            )
            .unwrap();
        assert_close("ctc loss", &values(got.clone()), &want.loss, SAME_KERNELS);
        let grads = got.backward();
        let g = values(logits.grad(&grads).expect("a gradient"));
        assert_close(
            "ctc grad logits",
            &g,
            want.grad("logits").unwrap(),
            SAME_KERNELS,
        );
    }
    let logits =
        Tensor::<3>::from_data(TensorData::new(x, [t, n, c]), &device().autodiff()).require_grad();
    let none = Ctc::new().reduction(Reduction::None);
    let err = wgpu_losses_burn::ctc(&none, logits, ints2(), &input_lengths, &target_lengths);
    assert!(matches!(err, Err(Error::Unsupported(_))), "{err:?}");
}

#[test]
fn dice_and_tversky_equal_run_with_labels_or_one_hot() {
    let (n, c, h, w) = (2, 3, 4, 5);
    let s = h * w;
    let mut rng = Rng::new(23);
    let x = normals(&mut rng, n * c * s);
    let labels = classes(&mut rng, n * s, c);
    let mut one_hot = vec![0.0f32; n * c * s];
    for (at, &l) in labels.iter().enumerate() {
        one_hot[(at / s * c + l as usize) * s + at % s] = 1.0;
    }
    let weight = [0.5f32, 1.0, 2.0];
    let e = engine();
    let x_g = e.upload(&x, &[n, c, h, w]).unwrap();
    let labels_g = e.upload_i32(&labels, &[n, h, w]).unwrap();
    let shape = [n, c, h, w];
    let input = || {
        Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device().autodiff())
            .require_grad()
    };
    for kind in [OverlapKind::DICE, OverlapKind::TVERSKY] {
        let loss = Overlap::new(kind)
            .activation(Activation::Softmax)
            .include_background(false);
        let mut inputs = OverlapInputs::new(&x_g, &labels_g);
        inputs.weight = Some(&weight);
        let want = loss.run(&e, &inputs).unwrap();
        let by_labels = input();
        let l3 = Tensor::<3, Int>::from_data(TensorData::new(labels.clone(), [n, h, w]), &device());
        let got = wgpu_losses_burn::overlap_labels(&loss, by_labels.clone(), l3, Some(&weight));
        let by_one_hot = input();
        let t4 = Tensor::<4>::from_data(TensorData::new(one_hot.clone(), shape), &device());
        let got_one_hot =
            wgpu_losses_burn::overlap(&loss, by_one_hot.clone(), t4, Some(&weight)).unwrap();
        for (what, got, x) in [
            ("labels", got.unwrap(), by_labels),
            ("one-hot", got_one_hot, by_one_hot),
        ] {
            assert_close(
                &format!("{kind:?} {what} loss"),
                &values(got.clone()),
                &want.loss,
                SAME_KERNELS,
            );
            let grads = got.backward();
            let g = values(x.grad(&grads).expect("a gradient"));
            assert_close(
                &format!("{kind:?} {what} grad"),
                &g,
                want.grad("input").unwrap(),
                SAME_KERNELS,
            );
        }
    }
    // Per-ratio losses share the softmax's inputs: a reduction is needed under autodiff.
    let none = Overlap::new(OverlapKind::DICE).reduction(Reduction::None);
    let l3 = Tensor::<3, Int>::from_data(TensorData::new(labels, [n, h, w]), &device());
    let err = wgpu_losses_burn::overlap_labels(&none, input(), l3, None);
    assert!(matches!(err, Err(Error::Unsupported(_))), "{err:?}");
}
