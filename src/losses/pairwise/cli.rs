//! `triplet-mined`, `nt-xent`, `clip` and `supcon` by name, on host arrays: the command
//! line's view.

use super::cpu::{HostMinedTripletInputs, HostNceInputs, HostNceRows};
use super::gpu::{
    backward_blocking, key_splits, query_tile, MinedTripletInputs, NceInputs, NceRows,
    BLOCK_ROWS, KEY_TILE,
};
use super::{
    cpu, mined_reference, reference, Args, Distance, InfoNce, MinedTriplet, Mining, NceKind,
};
use crate::core::{Arg, DType, Element, LossValues, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    f64s, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream, Evaluated,
    GpuSession, HostArray, InputSpec, LossDef, Rows, GRAD_OUTPUT,
};
use crate::Reduction;

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[
    &AllPairsDef::Nce(NceKind::NtXent),
    &AllPairsDef::Nce(NceKind::Clip),
    &AllPairsDef::Nce(NceKind::SupCon),
    &AllPairsDef::TripletMined,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllPairsDef {
    TripletMined,
    Nce(NceKind),
}

#[derive(Debug, Clone, Copy)]
enum Opts {
    Mined(MinedTriplet),
    Nce(InfoNce),
}

/// A checked host problem.
struct Problem {
    opts: Opts,
    rows: Rows,
    labels: Option<Vec<i32>>,
    upstream: f32,
}

impl AllPairsDef {
    fn problem(&self, case: &Case) -> Result<Problem> {
        case.check_names(self)?;
        case.mean_only()?;
        let opts = match self {
            AllPairsDef::TripletMined => Opts::Mined(MinedTriplet {
                margin: case.option("margin", 0.2)?,
                distance: case.option("distance", Distance::Euclidean)?,
                mining: case.option("mining", Mining::BatchAll)?,
                gradient: true,
                grad_dtype: case.grad_dtype_option()?,
            }),
            AllPairsDef::Nce(kind) => Opts::Nce(
                InfoNce::new(*kind)
                    .temperature(case.option("temperature", kind.default_temperature())?)
                    .grad_dtype(case.grad_dtype_option()?),
            ),
        };
        let arrays = case.row_arrays(self);
        let labels = case.input("labels");
        let rows = Rows::checked(arrays, |rows| {
            let args = Args {
                kind: match self {
                    AllPairsDef::Nce(kind) => Some(*kind),
                    AllPairsDef::TripletMined => None,
                },
                rows,
                // Integer labels, or floats holding whole numbers (converted below).
                labels: labels.map(|l| Arg {
                    shape: &l.shape,
                    dtype: DType::I32,
                }),
            };
            match opts {
                Opts::Mined(o) => o.check(&args),
                Opts::Nce(o) => o.check(&args),
            }
        })?;
        let labels = labels.map(|l| labels_i32("labels", l)).transpose()?;
        let upstream = case.mean_upstream()?;
        Ok(Problem {
            opts,
            labels,
            upstream,
            rows,
        })
    }
}

impl Problem {
    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, vec![], &[self.rows.n, self.rows.dim])
    }

    /// The CPU backend on the rows as `T` (16-bit rows reach it as 16-bit values).
    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let r = &self.rows;
        let rows: Vec<Vec<T>> = (0..r.rows.len())
            .map(|i| r.row(i).iter().map(|&x| T::from_f32(x)).collect())
            .collect();
        let upstream = Upstream::Scalar(self.upstream);
        match self.opts {
            Opts::Mined(o) => cpu::mined_triplet(
                &o,
                &HostMinedTripletInputs {
                    embeddings: &rows[0],
                    labels: self.labels(),
                    dim: r.dim,
                    upstream,
                },
            ),
            Opts::Nce(o) => {
                let rows = match o.kind {
                    NceKind::NtXent => HostNceRows::NtXent { z: &rows[0] },
                    NceKind::Clip => HostNceRows::Clip {
                        a: &rows[0],
                        b: &rows[1],
                    },
                    NceKind::SupCon => HostNceRows::SupCon {
                        embeddings: &rows[0],
                        labels: self.labels(),
                    },
                };
                let inputs = HostNceInputs {
                    rows,
                    dim: r.dim,
                    upstream,
                };
                cpu::info_nce(&o, &inputs)
            }
        }
    }

    fn labels(&self) -> &[i32] {
        self.labels.as_deref().expect("checked: required")
    }
}

impl LossDef for AllPairsDef {
    fn half_precision(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        match self {
            AllPairsDef::TripletMined => "triplet-mined",
            AllPairsDef::Nce(k) => k.name(),
        }
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const LABELLED: &[InputSpec] = &[
            spec("embeddings", true, true),
            spec("labels", false, true),
            GRAD_OUTPUT,
        ];
        const VIEWS: &[InputSpec] = &[spec("z", true, true), GRAD_OUTPUT];
        const MODALITIES: &[InputSpec] =
            &[spec("a", true, true), spec("b", true, true), GRAD_OUTPUT];
        match self {
            AllPairsDef::TripletMined | AllPairsDef::Nce(NceKind::SupCon) => LABELLED,
            AllPairsDef::Nce(NceKind::NtXent) => VIEWS,
            AllPairsDef::Nce(NceKind::Clip) => MODALITIES,
        }
    }

    fn options(&self) -> &'static [&'static str] {
        match self {
            AllPairsDef::TripletMined => &["reduction", "margin", "distance", "mining"],
            AllPairsDef::Nce(_) => &["reduction", "temperature"],
        }
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let (n, dim) = (p.rows.n, p.rows.dim);
        let rows: Vec<crate::Tensor> = p
            .rows
            .rows
            .iter()
            .map(|(name, x)| s.upload_as(name, x, &[n, dim], p.rows.dtype))
            .collect::<Result<_>>()?;
        let labels = p
            .labels
            .as_ref()
            .map(|l| s.upload_i32("labels", l, &[n]))
            .transpose()?;
        let up = DeviceUpstream::upload(s, Some(&[p.upstream]), &[n], Reduction::Mean)?;
        let out = match p.opts {
            Opts::Mined(o) => s.run(
                &o,
                &MinedTripletInputs::new(&rows[0], labels.as_ref().expect("checked: required"))
                    .upstream(up.get()),
            )?,
            Opts::Nce(o) => {
                let rows = match o.kind {
                    NceKind::NtXent => NceRows::NtXent { z: &rows[0] },
                    NceKind::Clip => NceRows::Clip {
                        a: &rows[0],
                        b: &rows[1],
                    },
                    NceKind::SupCon => NceRows::SupCon {
                        embeddings: &rows[0],
                        labels: labels.as_ref().expect("checked: required"),
                    },
                };
                s.run(&o, &NceInputs::from(rows).upstream(up.get()))?
            }
        };
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let out = match p.rows.dtype {
            DType::F16 => p.cpu::<half::f16>()?,
            DType::BF16 => p.cpu::<half::bf16>()?,
            _ => p.cpu::<f32>()?,
        };
        Ok(p.evaluated(out))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = self.problem(case)?;
        let rows: Vec<Vec<f64>> = p.rows.rows.iter().map(|(_, x)| f64s(x)).collect();
        let labels: Option<Vec<i64>> = p
            .labels
            .as_ref()
            .map(|l| l.iter().map(|&v| v as i64).collect());
        let (dim, up) = (p.rows.dim, p.upstream as f64);
        let out = match p.opts {
            Opts::Mined(o) => mined_reference::mined_triplet(
                &o,
                &rows[0],
                labels.as_deref().expect("checked: required"),
                dim,
                up,
            ),
            Opts::Nce(o) => {
                let inputs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
                reference::info_nce_loss(&o, &inputs, labels.as_deref(), dim, up)
            }
        };
        Ok(Evaluated::from_reference(out, vec![], &[p.rows.n, dim]))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let (n, dim) = rng.metric_shape();
        let rows = |rng: &mut Rng, n: usize| HostArray::f32(&[n, dim], rng.normals(n * dim, 0.6));
        let mut case = match self {
            AllPairsDef::TripletMined => {
                let mining = ["batch-all", "batch-hard", "semi-hard"][rng.below(3)];
                let n = if mining == "batch-all" { n.min(48) } else { n };
                Case::default()
                    .with("embeddings", rows(rng, n.max(2)))
                    .with("labels", random_labels(rng, n.max(2)))
                    .set("mining", mining)
                    .set("distance", ["euclidean", "squared", "cosine"][rng.below(3)])
                    .set("margin", rng.range(0.0, 1.0) as f32)
            }
            AllPairsDef::Nce(kind) => {
                let case = Case::default().set("temperature", rng.range(0.05, 1.0) as f32);
                match kind {
                    NceKind::NtXent => case.with("z", rows(rng, 2 * n.div_ceil(2))),
                    NceKind::Clip => case.with("a", rows(rng, n)).with("b", rows(rng, n)),
                    NceKind::SupCon => case
                        .with("embeddings", rows(rng, n))
                        .with("labels", random_labels(rng, n)),
                }
            }
        };
        if rng.chance(0.3) {
            case = case.with_random_upstream(rng, &[], false);
        }
        case
    }

    fn bench(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        spec: &BenchSpec,
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let shapes = match self {
            AllPairsDef::Nce(_) => spec.pairs(&[&[1024, 128]], &[&[4096, 256]])?,
            AllPairsDef::TripletMined => spec.pairs(&[&[512, 64]], &[&[1024, 128]])?,
        };
        for (n, d) in shapes {
            match self {
                AllPairsDef::Nce(kind) => {
                    let z = rng.normals(2 * n * d, 1.0);
                    let labels: Vec<i32> =
                        (0..n).map(|_| rng.below((n / 8).max(1)) as i32).collect();
                    for dtype in spec.dtypes(true) {
                        let job = (*kind, &z[..], &labels[..], (n, d));
                        match dtype {
                            DType::F16 => bench_nce::<half::f16>(engine, job, run)?,
                            DType::BF16 => bench_nce::<half::bf16>(engine, job, run)?,
                            _ => bench_nce::<f32>(engine, job, run)?,
                        }
                    }
                }
                AllPairsDef::TripletMined => self.bench_mined(engine, rng, (n, d), run)?,
            }
        }
        Ok(())
    }
}

/// One InfoNCE bench row: `kind` over rows `z` (`2n` rows of `d`: nt-xent's two views, or
/// clip's `a` then `b`) as `T`, supcon's `labels`.
///
/// Bytes moved count the tile scheme's global reads (every query tile streams every key row,
/// and re-reads its own rows per key tile) and the gradient's writes; FLOPs count the
/// similarity products (2·D per pair) of the forward pass, the backward pass's
/// recomputation and its gradient accumulation.
fn bench_nce<T: Element>(
    engine: &Engine,
    (kind, z, labels, (n, d)): (NceKind, &[f32], &[i32], (usize, usize)),
    run: &mut BenchRun<'_>,
) -> Result<()> {
    let z: Vec<T> = z.iter().map(|&v| T::from_f32(v)).collect();
    let (za, zb) = z.split_at(n * d);
    let (at, bt) = (
        engine.upload_values(za, &[n, d])?,
        engine.upload_values(zb, &[n, d])?,
    );
    let lt = engine.upload_i32(labels, &[n])?;
    let size = T::DTYPE.size() as usize;
    let (rows, host_rows, bytes) = match kind {
        NceKind::NtXent => (
            NceRows::NtXent { z: &at },
            HostNceRows::NtXent { z: za },
            2 * n * d * size,
        ),
        NceKind::Clip => (
            NceRows::Clip { a: &at, b: &bt },
            HostNceRows::Clip { a: za, b: zb },
            4 * n * d * size,
        ),
        NceKind::SupCon => (
            NceRows::SupCon {
                embeddings: &at,
                labels: &lt,
            },
            HostNceRows::SupCon {
                embeddings: za,
                labels,
            },
            2 * n * d * size,
        ),
    };
    let loss = InfoNce::new(kind);
    let mut plan = loss.plan(engine);
    let inputs = NceInputs::from(rows);
    // Rows M and the (query, key) pairs P: clip's anchors see the other half.
    let m = if kind == NceKind::Clip { 2 * n } else { n };
    let pairs = if kind == NceKind::Clip {
        2 * n * n
    } else {
        n * n
    };
    // Each direction has n queries and n keys.
    let splits = key_splits(engine, n, n, (m, d))?;
    let (grad_chunks, block_rows) = backward_blocking(d);
    let row_bytes = d * 4;
    // Per pass over the pairs: a tile of `qt` query rows streams every key row once and
    // reads its own rows once per 64-key tile.
    let tile_reads = |qt: usize| (pairs.div_ceil(qt) + pairs.div_ceil(KEY_TILE)) * row_bytes;
    let backward_qt = query_tile(block_rows);
    // Forward, backward's recomputation, its accumulation (key rows again per query tile).
    let tiles = tile_reads(query_tile(BLOCK_ROWS))
        + tile_reads(backward_qt)
        + pairs.div_ceil(backward_qt) * row_bytes;
    // Each split's partial gradient: written once from registers, or read and written per
    // 32-key half (into a zero-fill the engine counts); the splits past the first are read
    // by finish.
    let gradient = match grad_chunks {
        0 => 2 * pairs.div_ceil(KEY_TILE / 2) * row_bytes,
        _ => splits * m * row_bytes,
    } + (splits - 1) * m * row_bytes;
    // 16-bit rows are widened once and the gradient narrowed once.
    let edges = if size == 4 { 0 } else { m * d * (2 + 4) * 2 };
    let host = HostNceInputs {
        rows: host_rows,
        dim: d,
        upstream: Upstream::Ones,
    };
    let label = match T::DTYPE {
        DType::F32 => kind.name().to_string(),
        t => format!("{} {}", kind.name(), t.name()),
    };
    run(BenchJob {
        label: &label,
        shape: vec![n, d],
        bytes_min: bytes,
        // Normalize (read, write), the tiles, the gradient, and the final Jacobian pass
        // (read rows, read and write the gradient).
        bytes_moved: 2 * m * row_bytes + tiles + gradient + 3 * m * row_bytes + edges,
        flops: Some(6.0 * pairs as f64 * d as f64),
        gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
        cpu: &mut || cpu::info_nce(&loss, &host).map(|_| ()),
    })
}

impl AllPairsDef {
    /// Three bench rows, one per mining: `n` rows of `d`. Bytes moved count the distance
    /// tiles' global reads, the N×N matrices and the gradient's read-modify-writes.
    fn bench_mined(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        (n, d): (usize, usize),
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let e = rng.normals(n * d, 1.0);
        let labels: Vec<i32> = (0..n).map(|_| rng.below((n / 16).max(1)) as i32).collect();
        let (et, lt) = (
            engine.upload(&e, &[n, d])?,
            engine.upload_i32(&labels, &[n])?,
        );
        let inputs = MinedTripletInputs::new(&et, &lt);
        let host = HostMinedTripletInputs {
            embeddings: &e,
            labels: &labels,
            dim: d,
            upstream: Upstream::Ones,
        };
        for (mining, label) in [
            (Mining::BatchAll, "mined batch-all"),
            (Mining::BatchHard, "mined batch-hard"),
            (Mining::SemiHard, "mined semi-hard"),
        ] {
            let loss = MinedTriplet::new().mining(mining);
            let mut plan = loss.plan(engine);
            let (pairs, matrix) = (n * n, n * n * 4);
            let qt = query_tile(BLOCK_ROWS);
            run(BenchJob {
                label,
                shape: vec![n, d],
                bytes_min: 2 * n * d * 4,
                // Distance tiles' reads (each query tile streams every key row and re-reads
                // its own per key tile), backward's key rows per query tile and query rows
                // per 32-key half (the differences), the gradient (read and written per
                // half), the distance matrix (written, read by mining and backward), the
                // counts (read twice by backward; mining's atomics not counted). The
                // gradient's and counts' zero-fills are the engine's count.
                bytes_moved: (pairs.div_ceil(qt) + pairs.div_ceil(KEY_TILE)) * d * 4
                    + (pairs.div_ceil(qt) + pairs.div_ceil(KEY_TILE / 2)) * d * 4
                    + 2 * pairs.div_ceil(KEY_TILE / 2) * d * 4
                    + 3 * matrix
                    + 2 * matrix,
                flops: Some(4.0 * pairs as f64 * d as f64),
                gpu: &mut |enc| plan.record(enc, &inputs).map(|_| ()),
                cpu: &mut || cpu::mined_triplet(&loss, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}

/// Labels in the patterns that matter: a few classes, all one class, all distinct, and
/// classes of one element.
fn random_labels(rng: &mut Rng, n: usize) -> HostArray {
    let l: Vec<i64> = match rng.below(5) {
        0 => vec![7; n],
        1 => (0..n as i64).map(|i| 3 * i - 5).collect(),
        2 => (0..n)
            .map(|i| {
                if i % 4 == 0 {
                    100 + i as i64
                } else {
                    (i % 3) as i64
                }
            })
            .collect(),
        _ => {
            let classes = 1 + rng.below(n.div_ceil(2).max(1));
            (0..n).map(|_| rng.below(classes) as i64).collect()
        }
    };
    HostArray::i64(&[n], l)
}
