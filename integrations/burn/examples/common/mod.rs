//! Generated data sets for the examples and the training tests: seeded, so every run sees
//! the same points.

/// SplitMix64: a small seeded generator (the data must not depend on a crate's version).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u = self.uniform().max(1e-7);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Points `[n, d]` flattened, with their class labels.
pub struct Points {
    pub x: Vec<f32>,
    pub labels: Vec<i32>,
    pub dim: usize,
}

impl Points {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
}

/// Interleaved spiral arms in the plane, one per class, with Gaussian jitter and a fraction
/// of labels replaced by a random class (label noise).
pub fn spirals(per_class: usize, classes: usize, label_noise: f32, rng: &mut Rng) -> Points {
    let mut x = Vec::new();
    let mut labels = Vec::new();
    for c in 0..classes {
        for i in 0..per_class {
            let t = (i as f32 + rng.uniform()) / per_class as f32;
            let angle = c as f32 * std::f32::consts::TAU / classes as f32 + 4.0 * t;
            let r = 0.1 + t;
            x.push(r * angle.cos() + 0.03 * rng.normal());
            x.push(r * angle.sin() + 0.03 * rng.normal());
            let label = if rng.uniform() < label_noise {
                rng.below(classes)
            } else {
                c
            };
            labels.push(label as i32);
        }
    }
    Points { x, labels, dim: 2 }
}

/// Gaussian blobs whose class shows only in `signal` of the `dim` coordinates; the others
/// are noise `noise` times as large, so that raw nearest neighbours are close to chance and
/// an embedding has to learn which coordinates matter. A training and a held-out set drawn
/// around the same centres.
pub fn hidden_blobs(
    per_class: [usize; 2],
    classes: usize,
    dim: usize,
    signal: usize,
    noise: f32,
    rng: &mut Rng,
) -> [Points; 2] {
    let centers: Vec<f32> = (0..classes * signal).map(|_| 2.0 * rng.normal()).collect();
    per_class.map(|count| {
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..count {
            for c in 0..classes {
                for j in 0..dim {
                    let v = if j < signal {
                        centers[c * signal + j] + 0.5 * rng.normal()
                    } else {
                        noise * rng.normal()
                    };
                    x.push(v);
                }
                labels.push(c as i32);
            }
        }
        Points { x, labels, dim }
    })
}

/// The fraction of `query` rows whose nearest row of `base` (Euclidean) has their label.
pub fn nearest_neighbour_accuracy(
    query: &[f32],
    q_labels: &[i32],
    base: &[f32],
    b_labels: &[i32],
    dim: usize,
) -> f32 {
    let mut hits = 0;
    for (qi, q) in query.chunks(dim).enumerate() {
        let mut best = (f32::INFINITY, 0);
        for (bi, b) in base.chunks(dim).enumerate() {
            let d: f32 = q.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum();
            if d < best.0 {
                best = (d, bi);
            }
        }
        hits += usize::from(b_labels[best.1] == q_labels[qi]);
    }
    hits as f32 / q_labels.len() as f32
}

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// A two-hidden-layer perceptron.
#[derive(Module, Debug)]
pub struct Mlp {
    first: Linear,
    second: Linear,
    out: Linear,
}

impl Mlp {
    pub fn new(input: usize, hidden: usize, output: usize, device: &Device) -> Self {
        Self {
            first: LinearConfig::new(input, hidden).init(device),
            second: LinearConfig::new(hidden, hidden).init(device),
            out: LinearConfig::new(hidden, output).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(self.first.forward(x));
        let x = relu(self.second.forward(x));
        self.out.forward(x)
    }
}

/// `points` as device tensors: `[n, dim]` floats and `[n]` labels.
pub fn tensors(points: &Points, device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let n = points.len();
    let x = Tensor::from_data(TensorData::new(points.x.clone(), [n, points.dim]), device);
    let y = Tensor::from_data(TensorData::new(points.labels.clone(), [n]), device);
    (x, y)
}

/// The host values of a tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 values")
}

/// The fraction of rows of `logits` whose largest entry is at their label.
pub fn accuracy(logits: Tensor<2>, labels: &[i32]) -> f32 {
    let classes = logits.dims()[1];
    let v = values(logits);
    let hits = v
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = (0..classes).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best as i32 == label
        })
        .count();
    hits as f32 / labels.len() as f32
}

/// Full-batch Adam on `x`, `y` with `loss`; returns the model and the loss of every step.
pub fn train<M: Module + Clone>(
    mut model: M,
    steps: usize,
    learning_rate: f64,
    mut loss: impl FnMut(&M) -> Tensor<1>,
) -> (M, Vec<f32>) {
    let mut optimizer = AdamConfig::new().init();
    let mut curve = Vec::with_capacity(steps);
    for _ in 0..steps {
        let l = loss(&model);
        curve.push(values(l.clone())[0]);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optimizer.step(learning_rate, model, grads);
    }
    (model, curve)
}
