//! Command line: `info`, `eval`, `check`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use wgpu_losses::cli::bench::{copy_gbps, host_copy_gbps, median_secs, KernelTimer};
use wgpu_losses::cli::chart::{self, shape_text};
use wgpu_losses::cli::npy;
use wgpu_losses::registry::random::Rng;
use wgpu_losses::registry::{BenchJob, BenchSpec, Case, Evaluated, HostData};
use wgpu_losses::{compare, Tolerance};
use wgpu_losses::{DType, Engine, Error, Result};

#[derive(Parser)]
#[command(
    version,
    about = "Fused loss functions and gradients on any wgpu adapter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Backend {
    /// The fused WGSL kernels on the best adapter.
    Gpu,
    /// The multi-threaded CPU backend.
    Cpu,
    /// The f64 CPU reference.
    Reference,
}

#[derive(Subcommand)]
enum Command {
    /// List adapters, the one chosen, its limits and features.
    Info,
    /// Evaluate one loss on .npy inputs; writes DIR/loss.npy and DIR/grad_NAME.npy.
    Eval {
        /// Loss name, e.g. cross-entropy.
        loss: String,
        /// Input as NAME=FILE.npy (repeat).
        #[arg(long = "in", value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Option as KEY=VALUE (repeat).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        options: Vec<String>,
        #[arg(long, value_enum, default_value = "gpu")]
        backend: Backend,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every loss on random inputs on a backend and the reference; non-zero exit on a
    /// mismatch.
    Check {
        /// The backend compared with the reference (gpu or cpu).
        #[arg(long, value_enum, default_value = "gpu")]
        backend: Backend,
        /// Random cases per loss.
        #[arg(long, default_value_t = 20)]
        cases: usize,
        /// Seed (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Only this loss.
        #[arg(long)]
        loss: Option<String>,
        /// Element types of the differentiable inputs (repeatable; default f32, f16 and
        /// bf16). 16-bit cases write their gradients in the input's type or, in half of
        /// them, f32.
        #[arg(long, value_name = "DTYPE", value_parser = parse_dtype)]
        dtype: Vec<DType>,
    },
    /// Time every loss family on the GPU and the CPU backend, with the adapter's copy
    /// bandwidth.
    Bench {
        /// A short run.
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also draw the results as an SVG chart (time per call, GPU beside CPU, log axis).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Print timings of other frameworks (JSON from bench/compare.py) beside ours.
        #[arg(long, value_name = "FILE")]
        compare: Option<PathBuf>,
        /// Time PyTorch and JAX in this run first, by running bench/compare.py with this
        /// Python (with torch / jax installed) on the same shapes and thread count.
        #[arg(long, value_name = "PYTHON", conflicts_with = "compare")]
        frameworks: Option<PathBuf>,
        /// Only this loss (repeatable).
        #[arg(long, value_name = "NAME")]
        loss: Vec<String>,
        /// Run at this shape instead of each loss's own, e.g. 64x131072 (rows x classes or
        /// dimensions; one number for elementwise losses); repeatable.
        #[arg(long, value_name = "NxC", value_parser = parse_shape)]
        shape: Vec<Vec<usize>>,
        /// Element type of the differentiable inputs (f32, f16, bf16); repeatable. Default:
        /// f32, and bf16 where the loss reads 16-bit floats.
        #[arg(long, value_name = "DTYPE", value_parser = parse_dtype)]
        dtype: Vec<DType>,
    },
    /// Draw the chart of a `bench --json` file (from this machine or another) as SVG.
    Chart {
        /// The bench results.
        json: PathBuf,
        /// The SVG to write.
        svg: PathBuf,
    },
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// `64x131072` as `[64, 131072]`.
fn parse_shape(s: &str) -> std::result::Result<Vec<usize>, String> {
    s.split('x')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|e| format!("`{d}` in `{s}`: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .and_then(|v| match v.iter().all(|&d| d > 0) {
            true => Ok(v),
            false => Err(format!("`{s}` has an empty dimension")),
        })
}

fn split_pair(s: &str) -> Result<(&str, &str)> {
    s.split_once('=').ok_or_else(|| Error::Option {
        option: "argument",
        value: s.into(),
        reason: "expected NAME=VALUE",
    })
}

fn info() -> Result<()> {
    println!("adapters (best first):");
    for a in wgpu_losses::adapters() {
        let i = a.get_info();
        println!(
            "  {} [{:?}, {:?}] {} {}",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        );
    }
    let engine = Engine::new()?;
    let i = engine.adapter_info();
    let l = engine.limits();
    println!("chosen: {} ({:?})", i.name, i.backend);
    println!(
        "  max_storage_buffer_binding_size {}",
        l.max_storage_buffer_binding_size
    );
    println!("  max_buffer_size {}", l.max_buffer_size);
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_compute_workgroup_storage_size {}",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  min_storage_buffer_offset_alignment {}",
        l.min_storage_buffer_offset_alignment
    );
    println!(
        "  subgroup size {}..{}, probed {}, subgroup operations in kernels: {}",
        i.subgroup_min_size,
        i.subgroup_max_size,
        engine
            .probed_subgroup_size()
            .map_or("none".to_string(), |s| s.to_string()),
        if engine.subgroup_ops() { "yes" } else { "no" }
    );
    println!("  features {:?}", engine.features());
    Ok(())
}

fn to_f32(e: Evaluated<f64>) -> Evaluated<f32> {
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    Evaluated {
        loss: f(e.loss),
        loss_shape: e.loss_shape,
        grads: e.grads.into_iter().map(|(n, g, s)| (n, f(g), s)).collect(),
        rows: e.rows.into_iter().map(|(n, r)| (n, f(r))).collect(),
        grad_terms: e.grad_terms,
        loss_terms: e.loss_terms,
        decision_gap: e.decision_gap,
    }
}

fn eval(
    loss: &str,
    inputs: &[String],
    options: &[String],
    backend: Backend,
    out: &PathBuf,
) -> Result<()> {
    let def = wgpu_losses::losses::find(loss)?;
    let mut case = Case::default();
    let twice = |option, name: &str| Error::Option {
        option,
        value: name.into(),
        reason: "given twice; give each once",
    };
    for arg in inputs {
        let (name, file) = split_pair(arg)?;
        if case.inputs.contains_key(name) {
            return Err(twice("--in", name));
        }
        case.inputs.insert(name.into(), npy::read(file.as_ref())?);
    }
    for arg in options {
        let (key, value) = split_pair(arg)?;
        if case.options.insert(key.into(), value.into()).is_some() {
            return Err(twice("--set", key));
        }
    }
    // Gradients of an f16 file come back as f16 when they were written as f16.
    let f16_files: Vec<String> = case
        .inputs
        .iter()
        .filter(|(_, a)| matches!(a.data, HostData::F16(_)))
        .map(|(n, _)| n.clone())
        .collect();
    let case = case.apply_dtype(def)?;
    case.check_names(def)?;
    let f16_grads = backend != Backend::Reference
        && case
            .options
            .get("grad_dtype")
            .is_none_or(|d| d.parse() == Ok(DType::F16));
    let result = match backend {
        Backend::Gpu => def.gpu(&Engine::new()?, &case)?,
        Backend::Cpu => def.cpu(&case)?,
        Backend::Reference => to_f32(def.reference(&case)?),
    };
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.display().to_string(),
        message: e.to_string(),
    })?;
    npy::write_f32(&out.join("loss.npy"), &result.loss_shape, &result.loss)?;
    for (name, values) in &result.rows {
        npy::write_f32(&out.join(format!("{name}.npy")), &[values.len()], values)?;
    }
    for (name, g, shape) in &result.grads {
        let path = out.join(format!("grad_{name}.npy"));
        if f16_grads && f16_files.iter().any(|f| f == name) && case.float_dtype(name) == DType::F16
        {
            npy::write_f16(&path, shape, g)?;
        } else {
            npy::write_f32(&path, shape, g)?;
        }
    }
    Ok(())
}

fn shape_of(case: &Case) -> String {
    case.inputs
        .iter()
        .map(|(n, a)| format!("{n}{:?}", a.shape))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(
    backend: Backend,
    cases: usize,
    seed: Option<u64>,
    only: Option<&str>,
    dtypes: &[DType],
) -> Result<bool> {
    let dtypes = match dtypes.is_empty() {
        true => &[DType::F32, DType::F16, DType::BF16][..],
        false => dtypes,
    };
    // An unknown loss is an error before anything runs, never a check of nothing.
    if let Some(name) = only {
        wgpu_losses::losses::find(name)?;
    }
    let engine = match backend {
        Backend::Gpu => Some(Engine::new()?),
        Backend::Cpu => None,
        Backend::Reference => {
            return Err(Error::Option {
                option: "backend",
                value: "reference".into(),
                reason: "check compares gpu or cpu with the reference",
            })
        }
    };
    let seed = seed.unwrap_or_else(|| Rng::from_time().next_u64());
    match &engine {
        Some(e) => println!("backend: gpu on {}; seed {seed}", e.adapter_info().name),
        None => println!(
            "backend: cpu ({} threads); seed {seed}",
            rayon::current_num_threads()
        ),
    }
    let tol = Tolerance::default();
    println!(
        "tolerance: |got - ref| <= {} * scale + {} * |ref|; scale = max|ref| for the loss, \
         the largest term summed into an element for gradients; plus, for a gradient written \
         in 16 bits, half an ulp of its type",
        tol.atol, tol.rtol
    );
    let mut rng = Rng::new(seed);
    let mut all_ok = true;
    for (def, &dtype) in wgpu_losses::losses::all()
        .iter()
        .flat_map(|d| dtypes.iter().map(move |t| (d, t)))
    {
        if only.is_some_and(|o| o != def.name()) {
            continue;
        }
        let (mut worst_loss, mut worst_grad, mut bad, mut redrawn) = (0.0f64, 0.0f64, 0, 0);
        for i in 0..cases {
            // A case with a mining decision within f32 rounding of its boundary is drawn anew.
            let (case, want) = loop {
                let mut case = def.random_case(&mut rng).set("dtype", dtype.name());
                if dtype != DType::F32 && rng.chance(0.5) {
                    case = case.set("grad_dtype", "f32");
                }
                let case = case.apply_dtype(*def)?;
                let want = def.reference(&case)?;
                if !want.ambiguous() {
                    break (case, want);
                }
                redrawn += 1;
            };
            let gpu = match &engine {
                Some(e) => def.gpu(e, &case)?,
                None => def.cpu(&case)?,
            };
            let mut report = vec![(
                "loss",
                compare(&gpu.loss, &want.loss, want.loss_tolerance(tol)),
            )];
            for ((name, g, _), (_, w, _)) in gpu.grads.iter().zip(&want.grads) {
                let tol = want.grad_tolerance(tol).written_as(case.grad_dtype(name));
                report.push((name, compare(g, w, tol)));
            }
            // Per-row statistics the reference reports (the ranking losses' NDCG).
            for (name, w) in &want.rows {
                let got = gpu.rows.iter().find(|(n, _)| n == name);
                report.push((name, compare(got.map_or(&[][..], |g| &g.1[..]), w, tol)));
            }
            for (name, c) in &report {
                if *name == "loss" {
                    worst_loss = worst_loss.max(c.max_rel);
                } else {
                    worst_grad = worst_grad.max(c.max_rel);
                }
                if let Some((idx, got, want)) = c.first_bad {
                    bad += 1;
                    println!(
                        "  MISMATCH {} case {i} ({}; options {:?}): {name}[{idx}] gpu {got} ref {want}",
                        def.name(),
                        shape_of(&case),
                        case.options
                    );
                }
            }
        }
        let verdict = if bad == 0 { "ok" } else { "FAIL" };
        let redrawn = match redrawn {
            0 => String::new(),
            r => format!("  ({r} ambiguous cases redrawn)"),
        };
        println!(
            "{:<16} {:<4} {cases} cases  worst loss err {worst_loss:.2e}  worst grad err {worst_grad:.2e}  {verdict}{redrawn}",
            def.name(),
            dtype.name()
        );
        all_ok &= bad == 0;
    }
    Ok(all_ok)
}

/// The benchmark: each row times the GPU (resident inputs, a planned call: median of
/// repeats after warm-up, several calls submitted before one wait) and the CPU backend on the
/// same problem, and counts what one planned call records.
struct Bench<'a> {
    engine: &'a Engine,
    timer: Option<KernelTimer>,
    /// Whether the device times each dispatch (timestamps inside compute passes).
    per_dispatch: bool,
    progress: indicatif::ProgressBar,
    copy_gbps: f64,
    host_copy_gbps: f64,
    reps: usize,
    results: Vec<serde_json::Value>,
}

impl Bench<'_> {
    fn row(&mut self, job: BenchJob<'_>) -> Result<()> {
        let BenchJob {
            label: loss,
            shape,
            bytes_min,
            bytes_moved,
            flops,
            gpu,
            cpu,
        } = job;
        let engine = self.engine;
        // The first call allocates the plan; the second is the steady state, counted.
        let once = |gpu: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>| {
            let mut encoder = engine.encoder();
            gpu(&mut encoder)?;
            engine.submit(encoder)
        };
        let first = median_secs(0, 1, || once(&mut *gpu))?;
        let before = engine.counters();
        once(&mut *gpu)?;
        let counted = engine.counters().since(&before);
        // Short calls are submitted in batches before one wait, so the wait's latency does
        // not hide the kernels' time; calls over a quarter second (all-pairs losses on a
        // software adapter) get three repeats, so the full run stays within minutes.
        let batch = if first < 0.01 { 8 } else { 1 };
        let reps = if first > 0.25 { 3 } else { self.reps };
        // The counted call warmed slow rows up already.
        let warmup = if first > 0.25 { 0 } else { 1 };
        let gpu_secs = median_secs(warmup, reps, || {
            for _ in 0..batch {
                let mut encoder = engine.encoder();
                gpu(&mut encoder)?;
                engine.queue().submit([encoder.finish()]);
            }
            engine.submit(engine.encoder())
        })? / batch as f64;
        let kernel = match &self.timer {
            Some(t) => {
                let mut times = Vec::with_capacity(reps);
                for _ in 0..reps {
                    times.push(t.time(engine, &mut *gpu)?);
                }
                times.sort_by(|a, b| a.total_cmp(b));
                Some(times[times.len() / 2])
            }
            None => None,
        };
        let dispatch_ms = if self.per_dispatch {
            engine.profile_dispatches(true)?;
            let timed = once(&mut *gpu).and_then(|_| engine.dispatch_times());
            engine.profile_dispatches(false)?;
            per_kernel_ms(timed?)
        } else {
            Vec::new()
        };
        let cpu = median_secs(1, reps, cpu)?;
        let shape_text = shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x");
        for (backend, secs) in [("gpu", gpu_secs), ("cpu", cpu)] {
            let gpu_row = backend == "gpu";
            let gbps = bytes_min as f64 / secs / 1e9;
            // Each backend against its own yardstick: the copy kernel, or the host copy.
            let fraction = gbps
                / if gpu_row {
                    self.copy_gbps
                } else {
                    self.host_copy_gbps
                };
            let gflops = flops.map(|f| f / secs / 1e9);
            let blank = String::new;
            let speedup = gpu_row.then(|| format!("{:.2}x", cpu / gpu_secs));
            let kernel_ms = kernel
                .filter(|_| gpu_row)
                .map(|k| format!("{:.3}", k * 1e3));
            let line = format!(
                "{loss:<16} {shape_text:>12} {backend:>4} {:>10.3} {:>10} {gbps:>8.2} {:>8.0}% {:>9} {:>5} {:>6} {:>8}",
                secs * 1e3,
                kernel_ms.clone().unwrap_or_else(blank),
                100.0 * fraction,
                speedup.unwrap_or_else(blank),
                if gpu_row { counted.dispatches.to_string() } else { blank() },
                if gpu_row {
                    format!("{:.2}x", bytes_moved as f64 / bytes_min as f64)
                } else {
                    blank()
                },
                gflops.map_or_else(blank, |g| format!("{g:.1}")),
            );
            let mut lines = vec![line];
            if gpu_row && !dispatch_ms.is_empty() {
                let each: Vec<String> = dispatch_ms
                    .iter()
                    .map(|(k, ms)| format!("{k} {ms:.3}"))
                    .collect();
                lines.push(format!("{:>35} {}", "kernel ms by entry:", each.join(", ")));
            }
            for line in lines {
                // Above the bar on a terminal; a hidden bar (output piped) would drop it.
                if self.progress.is_hidden() {
                    println!("{line}");
                } else {
                    self.progress.println(line);
                }
            }
            let mut row = serde_json::json!({
                "loss": loss,
                "shape": shape,
                "backend": backend,
                "median_ms": secs * 1e3,
                "kernel_ms": kernel.filter(|_| gpu_row).map(|k| k * 1e3),
                "gbps": gbps,
                "roofline_fraction": fraction,
                "bytes_min": bytes_min,
                "flops": flops,
                "gflops": gflops,
            });
            if gpu_row {
                let extra = serde_json::json!({
                    "bytes_moved": bytes_moved + counted.bytes_zero_filled as usize,
                    "dispatches": counted.dispatches,
                    "compute_passes": counted.compute_passes,
                    "buffers_created": counted.buffers_created,
                    "bind_groups_created": counted.bind_groups_created,
                    "bytes_zero_filled": counted.bytes_zero_filled,
                    "uniform_writes": counted.uniform_writes,
                    "kernel_ms_by_entry": dispatch_ms
                        .iter()
                        .map(|(k, ms)| serde_json::json!({"entry": k, "ms": ms}))
                        .collect::<Vec<_>>(),
                });
                row.as_object_mut()
                    .expect("an object")
                    .extend(extra.as_object().expect("an object").clone());
            }
            self.results.push(row);
        }
        Ok(())
    }
}

/// Milliseconds per kernel entry, summed over its dispatches, in order of first use.
fn per_kernel_ms(times: Vec<(String, f64)>) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for (label, secs) in times {
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, ms)) => *ms += secs * 1e3,
            None => out.push((label, secs * 1e3)),
        }
    }
    out
}

/// Runs bench/compare.py with `python` on the bench's shapes (of the losses in `only`, if
/// any) and rayon's thread count and returns the JSON file it wrote.
fn run_frameworks(python: &std::path::Path, quick: bool, only: &[String]) -> Result<PathBuf> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/compare.py");
    let out = std::env::temp_dir().join(format!(
        "wgpu-losses-frameworks-{}.json",
        std::process::id()
    ));
    let io = |message: String| Error::Io {
        path: script.display().to_string(),
        message,
    };
    println!(
        "timing PyTorch / JAX first: {} {}",
        python.display(),
        script.display()
    );
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .arg("--threads")
        .arg(rayon::current_num_threads().to_string())
        .arg("--out")
        .arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    for loss in only {
        cmd.arg("--loss").arg(loss);
    }
    let status = cmd.status().map_err(|e| io(e.to_string()))?;
    if !status.success() {
        return Err(io(format!("exited with {status}")));
    }
    Ok(out)
}

fn bench(
    spec: &BenchSpec,
    only: &[String],
    json: Option<&std::path::Path>,
    svg: Option<&std::path::Path>,
    compare: Option<&std::path::Path>,
    frameworks: Option<&std::path::Path>,
) -> Result<()> {
    // Frameworks and the comparison file first, so a failure comes before minutes of timing.
    let quick = spec.quick;
    // Unknown names fail before any timing.
    let losses: Vec<_> = if only.is_empty() {
        wgpu_losses::losses::all().to_vec()
    } else {
        only.iter()
            .map(|name| wgpu_losses::losses::find(name))
            .collect::<Result<_>>()?
    };
    let timed = frameworks
        .map(|p| run_frameworks(p, quick, only))
        .transpose()?;
    let others = timed
        .as_deref()
        .or(compare)
        .map(read_comparison)
        .transpose()?;
    let engine = Engine::new()?;
    let info = engine.adapter_info().clone();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!("cpu: {} threads", rayon::current_num_threads());
    let reps = if quick { 5 } else { 15 };
    // The yardstick is the best of the sizes, so no row looks good against a copy that fell
    // out of (or into) the cache differently; the full run adds 1 GiB, past any L2.
    let mut sizes = vec![16u64 << 20, 64 << 20];
    if !quick {
        sizes.push(1 << 30);
    }
    let mut copy_gbps = 0.0f64;
    let mut said = Vec::new();
    for &bytes in &sizes {
        let reps = if bytes >= 1 << 30 { 3 } else { reps.max(10) };
        let gbps = self::copy_gbps(&engine, bytes, reps)?;
        copy_gbps = copy_gbps.max(gbps);
        said.push(format!("{gbps:.2} GB/s at {} MiB", bytes >> 20));
    }
    println!("copy kernel: {} (read + write)", said.join(", "));
    let host_16 = host_copy_gbps(16 << 20, reps.max(10))?;
    let host_64 = host_copy_gbps(64 << 20, reps.max(10))?;
    let host_copy_gbps = host_16.max(host_64);
    println!(
        "host copy ({} threads): {host_16:.2} GB/s at 16 MiB, {host_64:.2} GB/s at 64 MiB",
        rayon::current_num_threads()
    );
    let timer = KernelTimer::new(&engine);
    println!(
        "median ms per call end to end (gpu: resident inputs, no readback){}; \
         of copy: GB/s / the better copy (gpu: copy kernel, cpu: host copy)",
        if timer.is_some() {
            "; kernel ms from timestamp queries"
        } else {
            "; no timestamp queries on this adapter"
        }
    );
    println!(
        "GB/s over the least bytes a call can move; disp: dispatches per planned call; \
         moved: bytes the kernels move over that least"
    );
    println!(
        "{:<16} {:>12} {:>4} {:>10} {:>10} {:>8} {:>9} {:>9} {:>5} {:>6} {:>8}",
        "loss",
        "shape",
        "",
        "median ms",
        "kernel ms",
        "GB/s",
        "of copy",
        "cpu/gpu",
        "disp",
        "moved",
        "GFLOP/s"
    );
    // One row set per loss, from the one list of losses (or those asked for).
    let progress = indicatif::ProgressBar::new(losses.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} losses {elapsed}")
            .expect("a fixed template"),
    );
    let per_dispatch = engine.profile_dispatches(true).is_ok();
    engine.profile_dispatches(false)?;
    let mut b = Bench {
        engine: &engine,
        timer,
        per_dispatch,
        progress,
        copy_gbps,
        host_copy_gbps,
        reps,
        results: Vec::new(),
    };
    let mut rng = Rng::new(7);
    for def in losses {
        def.bench(&engine, &mut rng, spec, &mut |job| b.row(job))?;
        b.progress.inc(1);
    }
    b.progress.finish_and_clear();
    if let Some(others) = others {
        print_comparison(&b.results, &others);
    }
    let doc = serde_json::json!({
            "adapter": {
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "device_type": format!("{:?}", info.device_type),
                "driver": info.driver,
                "driver_info": info.driver_info,
            },
            "cpu_threads": rayon::current_num_threads(),
            "copy_gbps": copy_gbps,
            "host_copy_gbps": host_copy_gbps,
            "results": b.results,
    });
    if let Some(path) = svg {
        write_chart(&doc, path)?;
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&doc).expect("JSON of plain values");
        write_file(path, &text)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Draws the chart of a bench document into `path`.
fn write_chart(doc: &serde_json::Value, path: &std::path::Path) -> Result<()> {
    let svg = chart::chart(doc).map_err(|message| Error::Io {
        path: path.display().to_string(),
        message,
    })?;
    write_file(path, &svg)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `chart`: the chart of a `bench --json` file, from this machine or another.
fn chart_of(json: &std::path::Path, svg: &std::path::Path) -> Result<()> {
    let io = |message: String| Error::Io {
        path: json.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(json).map_err(|e| io(e.to_string()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| io(e.to_string()))?;
    write_chart(&doc, svg)
}

fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The `results` of a bench/compare.py file.
fn read_comparison(path: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    let bad = |message: String| Error::Io {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    doc["results"]
        .as_array()
        .cloned()
        .ok_or_else(|| bad("no `results` array".into()))
}

/// Each other framework's row beside our CPU and GPU rows for the same loss and shape.
fn print_comparison(ours: &[serde_json::Value], others: &[serde_json::Value]) {
    println!();
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>14} {:>14}",
        "loss", "shape", "framework", "median ms", "our cpu faster", "our gpu faster"
    );
    let ms = |v: &serde_json::Value| v["median_ms"].as_f64().unwrap_or(f64::NAN);
    for o in others {
        let find = |backend: &str| {
            ours.iter()
                .find(|r| {
                    r["loss"] == o["loss"]
                        && shape_text(&r["shape"]) == shape_text(&o["shape"])
                        && r["backend"] == backend
                })
                .map(|r| format!("{:.2}x", ms(o) / ms(r)))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<16} {:>12} {:>10} {:>10.3} {:>14} {:>14}",
            o["loss"].as_str().unwrap_or("?"),
            shape_text(&o["shape"]),
            o["backend"].as_str().unwrap_or("?"),
            ms(o),
            find("cpu"),
            find("gpu"),
        );
    }
}

fn main() -> ExitCode {
    // We rank adapters ourselves. Mesa's implicit device-select layer would also probe for a
    // Wayland/X display and print errors on headless machines; turn it off unless the user
    // set it. Done first, while the process has one thread.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info => info().map(|_| true),
        Command::Eval {
            loss,
            inputs,
            options,
            backend,
            out,
        } => eval(loss, inputs, options, *backend, out).map(|_| true),
        Command::Check {
            backend,
            cases,
            seed,
            loss,
            dtype,
        } => check(*backend, *cases, *seed, loss.as_deref(), dtype),
        Command::Bench {
            quick,
            json,
            svg,
            compare,
            frameworks,
            loss,
            shape,
            dtype,
        } => bench(
            &BenchSpec {
                quick: *quick,
                shapes: shape.clone(),
                dtypes: dtype.clone(),
            },
            loss,
            json.as_deref(),
            svg.as_deref(),
            compare.as_deref(),
            frameworks.as_deref(),
        )
        .map(|_| true),
        Command::Chart { json, svg } => chart_of(json, svg).map(|_| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
