"""Side-by-side timings of masked_mse against the hand-written losses users would write.

Every candidate runs in this one process, alternated round by round so that drift (thermal,
other processes) hits all of them alike; we report medians and the ratio to the naive
hand-written masked mean ``((p - t)**2 * m).sum() / m.sum()`` of the same framework.

Candidates per backend, size and mode:
    masked_mse   this library
    naive        ((p - t)**2 * m).sum() / m.sum()          (NaN-unsafe, the usual 3 lines)
    where        d = where(m, p - t, 0); (d*d).sum() / m.sum()   (hand-written NaN-safe)
    unmasked     the framework's own MSE on all entries (no mask at all)
    floor        one streaming pass over pred: dot(p, p)

Usage:
    python benchmarks/bench.py            # full run, writes benchmarks/results.{json,md}
    python benchmarks/bench.py --quick    # < 1 minute, small sizes, few repeats
    python benchmarks/plot.py             # the figure in docs/assets/benchmarks/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {"256x3": (256, 3), "1e5": (100_000,), "1e7": (10_000_000,)}
QUICK_SIZES = {"256x3": (256, 3), "1e5": (100_000,)}
CANDIDATES = ("masked_mse", "naive", "where", "unmasked", "floor")
MODES = ("eager fwd", "eager fwd+bwd", "compiled fwd+bwd")
IMPORT_BASE = "import numpy, array_api_compat"
# Issue 5's targets: masked_mse / naive at most `max` in these cells (import: a ratio of times).
TARGETS = (
    {"target": "eager 1e7 forward", "mode": "eager fwd", "backends": ("numpy", "torch"),
     "sizes": ("1e7",), "max": 1.0},
    {"target": "eager (256, 3) forward+backward", "mode": "eager fwd+bwd",
     "backends": ("torch", "jax"), "sizes": ("256x3",), "max": 1.25},
    {"target": "compiled forward+backward", "mode": "compiled fwd+bwd",
     "backends": ("torch", "jax", "tensorflow"), "sizes": tuple(SIZES), "max": 1.05},
)
IMPORT_TARGET = 1.2


def candidates_for(mode: str) -> tuple[str, ...]:
    """The candidates timed in ``mode`` (the floor has no gradient worth comparing)."""
    return tuple(c for c in CANDIDATES if not (c == "floor" and "bwd" in mode))


# ---- data ---------------------------------------------------------------------------------


def make_data(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(shape, dtype=np.float32)
    t = rng.standard_normal(shape, dtype=np.float32)
    m = rng.random(shape) < 0.5
    t = np.where(m, t, np.float32(0.0))  # finite garbage so that the naive version is comparable
    return p, t, m


# ---- the candidates, per backend ----------------------------------------------------------
# Each backend returns {candidate: fn(p, t, m) -> scalar} for the forward pass, and the
# arrays converted to its type. Gradients and compilation are added generically below.


def numpy_candidates() -> dict[str, Callable[..., Any]]:
    from masked_losses import masked_mse

    def where(p: Any, t: Any, m: Any) -> Any:
        d = np.where(m, p - t, np.float32(0.0))
        return (d * d).sum() / m.sum()

    return {
        "masked_mse": lambda p, t, m: masked_mse(p, t, m),
        "naive": lambda p, t, m: ((p - t) ** 2 * m).sum() / m.sum(),
        "where": where,
        "unmasked": lambda p, t, m: np.mean((p - t) ** 2),
        "floor": lambda p, t, m: np.dot(p.ravel(), p.ravel()),
    }


def torch_candidates() -> dict[str, Callable[..., Any]]:
    import torch

    from masked_losses import masked_mse

    def where(p: Any, t: Any, m: Any) -> Any:
        d = torch.where(m, p - t, 0.0)
        return (d * d).sum() / m.sum()

    return {
        "masked_mse": lambda p, t, m: masked_mse(p, t, m),
        "naive": lambda p, t, m: ((p - t) ** 2 * m).sum() / m.sum(),
        "where": where,
        "unmasked": lambda p, t, m: torch.nn.functional.mse_loss(p, t),
        "floor": lambda p, t, m: torch.dot(p.reshape(-1), p.reshape(-1)),
    }


def jax_candidates() -> dict[str, Callable[..., Any]]:
    import jax.numpy as jnp

    import masked_losses.jax as mlj

    def where(p: Any, t: Any, m: Any) -> Any:
        d = jnp.where(m, p - t, 0.0)
        return (d * d).sum() / m.sum()

    return {
        "masked_mse": lambda p, t, m: mlj.masked_mse(p, t, m),
        "naive": lambda p, t, m: ((p - t) ** 2 * m).sum() / m.sum(),
        "where": where,
        "unmasked": lambda p, t, m: jnp.mean((p - t) ** 2),
        "floor": lambda p, t, m: jnp.vdot(p, p),
    }


def tf_candidates() -> dict[str, Callable[..., Any]]:
    import tensorflow as tf

    import masked_losses.tensorflow as mltf

    def naive(p: Any, t: Any, m: Any) -> Any:
        mf = tf.cast(m, p.dtype)
        return tf.reduce_sum(tf.square(p - t) * mf) / tf.reduce_sum(mf)

    def where(p: Any, t: Any, m: Any) -> Any:
        d = tf.where(m, p - t, tf.zeros_like(p))
        return tf.reduce_sum(d * d) / tf.reduce_sum(tf.cast(m, p.dtype))

    return {
        "masked_mse": lambda p, t, m: mltf.masked_mse(p, t, m),
        "naive": naive,
        "where": where,
        "unmasked": lambda p, t, m: tf.reduce_mean(tf.square(p - t)),
        "floor": lambda p, t, m: tf.tensordot(tf.reshape(p, [-1]), tf.reshape(p, [-1]), 1),
    }


# ---- modes: eager forward, eager forward+backward, compiled forward+backward ---------------
# A mode turns a candidate fn(p, t, m) into a runner() over fixed data: a forward runner returns
# the value, a forward+backward runner returns (value, gradient with respect to pred).


def torch_modes(fns: dict[str, Callable[..., Any]], data: tuple[np.ndarray, ...]) -> Any:
    import torch

    p, t, m = (torch.from_numpy(a) for a in data)

    def fwd(f: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return f(p, t, m)

        return run

    def fwd_bwd(f: Callable[..., Any]) -> Callable[[], Any]:
        pg = p.clone().requires_grad_(True)

        def run() -> Any:
            pg.grad = None
            out = f(pg, t, m)
            out.backward()
            return out, pg.grad

        return run

    def compiled(f: Callable[..., Any]) -> Callable[[], Any]:
        # How torch.compile is used in training: the forward is compiled (in one graph:
        # fullgraph=True), and backward() runs the backward graph AOTAutograd compiled with
        # it. (torch.autograd.grad inside the compiled function would break the graph.)
        cf = torch.compile(f, fullgraph=True, dynamic=False)
        pg = p.clone().requires_grad_(True)

        def run() -> Any:
            pg.grad = None
            out = cf(pg, t, m)
            out.backward()
            return out, pg.grad

        return run

    return {"eager fwd": fwd, "eager fwd+bwd": fwd_bwd, "compiled fwd+bwd": compiled}


def jax_modes(fns: dict[str, Callable[..., Any]], data: tuple[np.ndarray, ...]) -> Any:
    import jax
    import jax.numpy as jnp

    p, t, m = (jnp.asarray(a) for a in data)

    def fwd(f: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: f(p, t, m).block_until_ready()

    def fwd_bwd(f: Callable[..., Any]) -> Callable[[], Any]:
        vg = jax.value_and_grad(lambda x: f(x, t, m))
        return lambda: jax.block_until_ready(vg(p))

    def compiled(f: Callable[..., Any]) -> Callable[[], Any]:
        vg = jax.jit(jax.value_and_grad(lambda x, t, m: f(x, t, m)))
        return lambda: jax.block_until_ready(vg(p, t, m))

    return {"eager fwd": fwd, "eager fwd+bwd": fwd_bwd, "compiled fwd+bwd": compiled}


def tf_modes(fns: dict[str, Callable[..., Any]], data: tuple[np.ndarray, ...]) -> Any:
    import tensorflow as tf

    p, t, m = (tf.constant(a) for a in data)

    def fwd(f: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: f(p, t, m).numpy()

    def fwd_bwd(f: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            with tf.GradientTape() as tape:
                tape.watch(p)
                out = f(p, t, m)
            grad = tape.gradient(out, p)
            return out.numpy(), grad.numpy()

        return run

    def compiled(f: Callable[..., Any]) -> Callable[[], Any]:
        @tf.function(jit_compile=True)
        def step(p: Any, t: Any, m: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(p)
                out = f(p, t, m)
            return out, tape.gradient(out, p)

        return lambda: tuple(x.numpy() for x in step(p, t, m))

    return {"eager fwd": fwd, "eager fwd+bwd": fwd_bwd, "compiled fwd+bwd": compiled}


def numpy_modes(fns: dict[str, Callable[..., Any]], data: tuple[np.ndarray, ...]) -> Any:
    p, t, m = data
    return {"eager fwd": lambda f: (lambda: f(p, t, m))}


BACKENDS = {
    "numpy": (numpy_candidates, numpy_modes),
    "torch": (torch_candidates, torch_modes),
    "jax": (jax_candidates, jax_modes),
    "tensorflow": (tf_candidates, tf_modes),
}


# ---- timing -------------------------------------------------------------------------------


def time_alternating(
    runs: dict[str, Callable[[], Any]], budget_s: float, max_rounds: int, sample_s: float = 2e-3
) -> dict:
    """Median seconds per call of each runner, alternating the runners round by round.

    A sample repeats a runner for at least ``sample_s`` (timer resolution, dispatch noise);
    rounds go on until ``budget_s`` is spent or ``max_rounds`` are done (at least 3).
    """
    for run in runs.values():  # warm up (and compile)
        run()
        run()
    per_call = {}
    for name, run in runs.items():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        per_call[name] = max(best, 1e-7)
    reps = {name: max(1, round(sample_s / s)) for name, s in per_call.items()}
    round_s = sum(reps[name] * s for name, s in per_call.items())
    rounds = max(3, min(max_rounds, int(budget_s / round_s)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(reps[name]):
                run()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def import_times(repeats: int) -> dict[str, float]:
    """Median wall time of a fresh interpreter importing masked_losses vs its own deps."""
    cmds = {
        "import masked_losses": "import masked_losses",
        "import numpy, array_api_compat": "import numpy, array_api_compat",
        "import numpy, masked_losses": "import numpy, masked_losses",
        "python (nothing)": "pass",
    }
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for name, code in cmds.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 1 min)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json/.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    # Dynamo notes that array-api-compat's namespace lookup is lru_cache'd; it is traced through.
    warnings.filterwarnings("ignore", message=".*functools.lru_cache")

    sizes = QUICK_SIZES if args.quick else SIZES
    budget, max_rounds, sample_s = (0.2, 5, 2e-3) if args.quick else (4.0, 50, 5e-3)
    rows = []
    for backend in args.backends.split(","):
        make_fns, make_modes = BACKENDS[backend]
        fns = make_fns()
        for size_name, shape in sizes.items():
            modes = make_modes(fns, make_data(shape))
            for mode, wrap in modes.items():
                if args.quick and mode == "compiled fwd+bwd" and backend == "torch" \
                        and size_name != next(iter(sizes)):
                    continue  # torch.compile takes seconds per candidate: one size is enough
                runs = {c: wrap(fns[c]) for c in candidates_for(mode)}
                medians = time_alternating(runs, budget, max_rounds, sample_s)
                base = medians["naive"]
                for cand, sec in medians.items():
                    rows.append(
                        {"backend": backend, "size": size_name, "mode": mode, "candidate": cand,
                         "median_us": sec * 1e6, "ratio_to_naive": sec / base}
                    )
                line = "  ".join(f"{c}={medians[c] * 1e6:9.1f}us" for c in medians)
                print(f"{backend:>10} {size_name:>6} {mode:<17} {line}", flush=True)

    imports = import_times(3 if args.quick else 15)
    print("import times: " + ", ".join(f"{k}={v * 1e3:.1f}ms" for k, v in imports.items()))
    checks = check_targets(rows, imports)
    for c in checks:
        verdict = "met" if c["met"] else "NOT MET"
        print(f"target {c['target']:<32} {c['backend']:>10} {c['size']:>6}: "
              f"{c['ratio']:.3f} <= {c['max']}  {verdict}")

    meta = {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "quick": args.quick,
        "versions": _versions(args.backends.split(",")),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "import_s": imports, "targets": checks}, indent=1)
        + "\n"
    )
    (args.out / "results.md").write_text(markdown_table(rows, imports, meta, checks))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


def _versions(backends: list[str]) -> dict[str, str]:
    import array_api_compat

    import masked_losses

    out = {"masked_losses": masked_losses.__version__, "numpy": np.__version__,
           "array_api_compat": array_api_compat.__version__}
    for mod in ("torch", "jax", "tensorflow"):
        if mod in sys.modules:
            out[mod] = sys.modules[mod].__version__
    return out


def check_targets(rows: list[dict], imports: dict[str, float]) -> list[dict]:
    """Each target cell that was measured: its masked_mse / naive ratio and whether it is met."""
    ratio = {(r["backend"], r["size"], r["mode"]): r["ratio_to_naive"]
             for r in rows if r["candidate"] == "masked_mse"}
    out = []
    for t in TARGETS:
        for backend in t["backends"]:
            for size in t["sizes"]:
                key = (backend, size, t["mode"])
                if key in ratio:
                    out.append({"target": t["target"], "backend": backend, "size": size,
                                "mode": t["mode"], "ratio": ratio[key], "max": t["max"],
                                "met": bool(ratio[key] <= t["max"])})
    r = imports["import masked_losses"] / imports[IMPORT_BASE]
    out.append({"target": "import time", "backend": "-", "size": "-", "mode": "import",
                "ratio": r, "max": IMPORT_TARGET, "met": bool(r <= IMPORT_TARGET)})
    return out


def _duration(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.1f} µs"


def markdown_table(
    rows: list[dict], imports: dict[str, float], meta: dict, checks: list[dict]
) -> str:
    lines = [
        "| backend | size | mode | masked_mse | naive | where | unmasked | floor "
        "| masked_mse / naive |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keyed: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        keyed.setdefault((r["backend"], r["size"], r["mode"]), {})[r["candidate"]] = r
    for (backend, size, mode), cands in keyed.items():
        cells = [_duration(cands[c]["median_us"]) if c in cands else "" for c in CANDIDATES]
        ratio = cands["masked_mse"]["ratio_to_naive"]
        lines.append(f"| {backend} | {size} | {mode} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    ratio = imports["import masked_losses"] / imports["import numpy, array_api_compat"]
    lines += [
        "",
        f"Import: `import masked_losses` {imports['import masked_losses'] * 1e3:.0f} ms, "
        f"`import numpy, array_api_compat` "
        f"{imports['import numpy, array_api_compat'] * 1e3:.0f} ms "
        f"(ratio {ratio:.2f}); `import numpy, masked_losses` "
        f"{imports['import numpy, masked_losses'] * 1e3:.0f} ms "
        f"(ratio {imports['import numpy, masked_losses'] / imports[IMPORT_BASE]:.2f}).",
        "",
        "| target | backend | size | masked_mse / naive | limit | |",
        "| --- | --- | --- | ---: | ---: | --- |",
        *(f"| {c['target']} | {c['backend']} | {c['size']} | {c['ratio']:.2f} | "
          f"{c['max']} | {'met' if c['met'] else '**not met**'} |" for c in checks),
        "",
        f"Machine: {meta['cpus']} CPUs, {meta['machine']}, Python {meta['python']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
