"""Plot benchmarks/results.json: each candidate's time relative to the naive masked mean.

One panel per mode; in each, one group of bars per (backend, size), one bar per candidate,
on a log scale. The grey line is the naive hand-written version (ratio 1); a red tick over
a group marks issue 5's target for masked_mse in that cell.

Usage:
    python benchmarks/plot.py       # benchmarks/results.json -> docs/assets/benchmarks/results.png
    python benchmarks/plot.py --results R.json --out R.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

HERE = Path(__file__).resolve().parent
MODES = ("eager fwd", "eager fwd+bwd", "compiled fwd+bwd")
CANDIDATES = ("masked_mse", "naive", "where", "unmasked", "floor")
COLORS = {"masked_mse": "#3949ab", "naive": "#9e9e9e", "where": "#26a69a",
          "unmasked": "#ffb300", "floor": "#8d6e63"}


def plot(results: dict, out: Path) -> Path:
    """Write the figure for ``results`` (the dict bench.py stores) to ``out`` (PNG)."""
    rows = results["rows"]
    limits = {(t["backend"], t["size"], t["mode"]): t["max"] for t in results.get("targets", [])}
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(len(modes), 1, figsize=(11, 3.2 * len(modes)), squeeze=False)
    width = 0.8 / len(CANDIDATES)
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        cells: list[tuple[str, str]] = []
        for r in rows:
            if r["mode"] == mode and (r["backend"], r["size"]) not in cells:
                cells.append((r["backend"], r["size"]))
        ratio = {(r["backend"], r["size"], r["candidate"]): r["ratio_to_naive"]
                 for r in rows if r["mode"] == mode}
        for j, cand in enumerate(CANDIDATES):
            xs = [i + (j - (len(CANDIDATES) - 1) / 2) * width for i in range(len(cells))]
            ys = [ratio.get((b, s, cand), float("nan")) for b, s in cells]
            if all(y != y for y in ys):  # not timed in this mode (the floor with gradients)
                continue
            ax.bar(xs, ys, width, label=cand, color=COLORS[cand], bottom=0)
            if cand == "masked_mse":
                for x, y in zip(xs, ys, strict=True):
                    if y == y:
                        ax.annotate(f"{y:.2f}", (x, y), ha="center", va="bottom", fontsize=7)
        for i, (b, s) in enumerate(cells):
            if (b, s, mode) in limits:
                ax.hlines(limits[(b, s, mode)], i - 0.45, i + 0.45, colors="#d32f2f", lw=2,
                          label="target" if i == 0 or "target" not in
                          ax.get_legend_handles_labels()[1] else None)
        ax.axhline(1.0, color="#616161", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(range(len(cells)), [f"{b}\n{s}" for b, s in cells], fontsize=8)
        ax.set_ylabel("time / naive")
        ax.set_title(mode, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles: dict[str, object] = {}
    for ax in axes[:, 0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles),
               fontsize=8, bbox_to_anchor=(0.5, 0.955), frameon=False)
    imports = results["import_s"]
    base = imports["import numpy, array_api_compat"]
    fig.suptitle(
        "masked_mse and hand-written losses, median time relative to the naive masked mean "
        f"(import masked_losses: {imports['import masked_losses'] / base:.2f}x "
        "import numpy, array_api_compat)", fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--results", type=Path, default=HERE / "results.json")
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs/assets/benchmarks/results.png")
    args = ap.parse_args(argv)
    path = plot(json.loads(args.results.read_text()), args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
