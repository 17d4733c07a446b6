"""Times PyTorch (CPU) and jax.jit (XLA CPU) on the shapes `wgpu-losses bench` uses, forward
and backward, and writes JSON that `wgpu-losses bench --compare FILE` prints beside its rows.

    pip install torch "jax[cpu]" optax numpy
    python bench/compare.py --threads 2 --out compare.json
    cargo run --release --features cli -- bench --compare compare.json

Same thread count for everyone: pass the cores the Rust side uses (rayon's default is all).
Each framework allocates its gradient per call, as it would in training; the Rust CPU rows
write into a reused buffer.
"""
import argparse, json, os, platform, time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--reps", type=int, default=7)
p.add_argument("--out", default="compare.json")
p.add_argument("--quick", action="store_true")
p.add_argument("--loss", action="append", help="only this loss's rows (repeatable)")
args = p.parse_args()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}")

import numpy as np

CE = [(32, 10), (1024, 4096), (64, 32000)] if args.quick else \
     [(32, 10), (1024, 4096), (4096, 4096), (256, 32000), (4096, 32000), (512, 50257), (64, 131072)]
N = 4 << 20
# Fused linear cross-entropy (N, H, V): F.linear then F.cross_entropy, logits materialized.
LINEAR = [(256, 128, 4096)] if args.quick else [(256, 128, 4096), (1024, 256, 8192)]
# Metric losses, as `wgpu-losses bench`: explicit rows, then the all-pairs InfoNCE losses.
ROWS = (16384, 128) if args.quick else (65536, 128)
PAIRS = (1024, 128) if args.quick else (4096, 256)
CTC = [(150, 128, 40, 29)] if args.quick else [(150, 128, 40, 29), (500, 32, 100, 5000)]


def median_ms(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


results = []
rng = np.random.default_rng(0)

try:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)

    def torch_row(loss, shape, fn, x):
        if args.loss and loss not in args.loss:
            return
        x = torch.tensor(x, requires_grad=True)
        def step():
            fn(x).backward()
            x.grad = None
        results.append({"loss": loss, "shape": shape, "backend": "torch-cpu",
                        "median_ms": median_ms(step, args.reps)})

    for n, c in CE:
        y = torch.tensor(rng.integers(0, c, n))
        torch_row("cross-entropy", [n, c], lambda x: F.cross_entropy(x, y),
                  rng.standard_normal((n, c), dtype=np.float32) * 2)
    t = torch.tensor(rng.random(N, dtype=np.float32))
    torch_row("mse", [N], lambda x: F.mse_loss(x, t), rng.standard_normal(N, dtype=np.float32))
    torch_row("bce-with-logits", [N], lambda x: F.binary_cross_entropy_with_logits(x, t),
              rng.standard_normal(N, dtype=np.float32))

    def torch_rows(loss, shape, fn, *xs):
        if args.loss and loss not in args.loss:
            return
        xs = [torch.tensor(x, requires_grad=True) for x in xs]
        def step():
            fn(*xs).backward()
            for x in xs:
                x.grad = None
        results.append({"loss": loss, "shape": shape, "backend": "torch-cpu",
                        "median_ms": median_ms(step, args.reps)})

    n, d = ROWS
    rows = [rng.standard_normal((n, d), dtype=np.float32) * 0.5 for _ in range(3)]
    y = torch.tensor(rng.integers(0, 2, n), dtype=torch.float32)

    def contrastive(a, b):
        dist = F.pairwise_distance(a, b)
        return (0.5 * (y * dist ** 2 + (1 - y) * (1 - dist).clamp(min=0) ** 2)).mean()

    torch_rows("contrastive", [n, d], contrastive, rows[0], rows[1])
    torch_rows("triplet", [n, d], F.triplet_margin_loss, *rows)

    n, d = PAIRS
    za, zb = (rng.standard_normal((n, d), dtype=np.float32) for _ in range(2))

    def info_nce(u, v, same, tau, exclude_self):
        s = u @ v.T / tau
        if exclude_self:
            eye = torch.eye(len(u), dtype=torch.bool)
            s = s.masked_fill(eye, float("-inf"))
            same = same & ~eye
        count = same.sum(1)
        keep = count > 0
        pos = torch.where(same, s, torch.zeros_like(s)).sum(1)
        return (torch.logsumexp(s, 1) - pos / count.clamp(min=1))[keep].mean()

    idx = torch.arange(n)
    views = (idx[:, None] % (n // 2)) == (idx[None, :] % (n // 2))
    torch_rows("nt-xent", [n, d],
               lambda z: info_nce(F.normalize(z, dim=1), F.normalize(z, dim=1), views, 0.5, True),
               za)

    def clip(a, b):
        s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.07
        return 0.5 * (F.cross_entropy(s, idx) + F.cross_entropy(s.T, idx))

    torch_rows("clip", [n, d], clip, za, zb)
    lab = torch.tensor(rng.integers(0, n // 8, n))
    classes = lab[:, None] == lab[None, :]
    torch_rows("supcon", [n, d],
               lambda e: info_nce(F.normalize(e, dim=1), F.normalize(e, dim=1), classes, 0.1, True),
               za)
    for ln, lh, lv in LINEAR:
        ly = torch.tensor(rng.integers(0, lv, ln))
        torch_rows("linear-cross-entropy", [ln, lh, lv],
                   lambda x, w: F.cross_entropy(F.linear(x, w), ly),
                   rng.standard_normal((ln, lh), dtype=np.float32),
                   rng.standard_normal((lv, lh), dtype=np.float32) * (1.5 / lh ** 0.5))
    # CTC on logits (T, N, S, C): warp-ctc's published case, and a long one with a large
    # vocabulary; full-length sequences and targets, as `wgpu-losses bench`.
    for ct, cn, cs, cc in CTC:
        targets = torch.tensor(rng.integers(1, cc, (cn, cs)))
        lengths, target_lengths = torch.full((cn,), ct), torch.full((cn,), cs)
        torch_rows("ctc", [ct, cn, cs, cc],
                   lambda x: F.ctc_loss(F.log_softmax(x, 2), targets, lengths, target_lengths),
                   rng.standard_normal((ct, cn, cc), dtype=np.float32))
    print("torch", torch.__version__, "done")
except ImportError as e:
    print("torch not available:", e)

try:
    import jax, jax.numpy as jnp, optax

    def jax_row(loss, shape, fn, *xs):
        if args.loss and loss not in args.loss:
            return
        g = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(xs)))))
        xs = [jnp.asarray(x) for x in xs]
        def step():
            v, gr = g(*xs)
            jax.block_until_ready(gr)
        results.append({"loss": loss, "shape": shape, "backend": "jax-cpu",
                        "median_ms": median_ms(step, args.reps)})

    for n, c in CE:
        y = jnp.asarray(rng.integers(0, c, n))
        jax_row("cross-entropy", [n, c],
                lambda x: optax.softmax_cross_entropy_with_integer_labels(x, y).mean(),
                rng.standard_normal((n, c), dtype=np.float32) * 2)
    t = jnp.asarray(rng.random(N, dtype=np.float32))
    jax_row("mse", [N], lambda x: jnp.mean((x - t) ** 2), rng.standard_normal(N, dtype=np.float32))
    jax_row("bce-with-logits", [N], lambda x: optax.sigmoid_binary_cross_entropy(x, t).mean(),
            rng.standard_normal(N, dtype=np.float32))
    for ln, lh, lv in LINEAR:
        ly = jnp.asarray(rng.integers(0, lv, ln))
        jax_row("linear-cross-entropy", [ln, lh, lv],
                lambda x, w: optax.softmax_cross_entropy_with_integer_labels(x @ w.T, ly).mean(),
                rng.standard_normal((ln, lh), dtype=np.float32),
                rng.standard_normal((lv, lh), dtype=np.float32) * (1.5 / lh ** 0.5))
    print("jax", jax.__version__, "done")
except ImportError as e:
    print("jax not available:", e)

with open(args.out, "w") as f:
    json.dump({"machine": platform.platform(), "processor": platform.processor(),
               "threads": args.threads, "results": results}, f, indent=1)
print("wrote", args.out)
