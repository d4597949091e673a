"""Read a run directory's metrics and plot the curriculum yourself.

Any run directory works: one from ``gdro train`` or one of ``gdro simulate``'s
``OUT/runs/<strategy>-s<seed>/``. ``gdro report`` draws the full set of plots; this script shows
how little is needed to get at the numbers::

    python examples/read_run.py RUN_DIR [--out curriculum.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """One dict per line of ``metrics.jsonl`` (a torn last line is skipped)."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/curriculum.png)")
    args = ap.parse_args(argv)
    config = json.loads((args.run_dir / "config.json").read_text())
    rows = [r for r in read_metrics(args.run_dir) if "classifier/share/0" in r]
    bins = int(config["num_bins"])
    steps = np.array([r["step"] for r in rows])
    share = np.array([[r.get(f"classifier/share/{b}", 0.0) for b in range(bins)] for r in rows])
    q = np.array([[r.get(f"prompt/q/{b}", np.nan) for b in range(bins)] for r in rows])

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100, sharey=True)
    for ax, data, title in ((axes[0], share, "batch share per bin"), (axes[1], q, "adversary weight q per bin")):
        im = ax.imshow(data.T, aspect="auto", origin="lower", cmap="viridis",
                       extent=(steps.min(), steps.max() + 1, -0.5, bins - 0.5))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        fig.colorbar(im, ax=ax)
    axes[0].set_ylabel("bin (0 = hardest)")
    fig.tight_layout()
    out = args.out or args.run_dir / "curriculum.png"
    fig.savefig(out)
    plt.close(fig)
    last = rows[-1]
    summary = {"steps": float(len(rows)), "mean_bin": last["classifier/mean_bin"],
               "entropy": last.get("prompt/entropy", float("nan"))}
    print(f"{config.get('kind', 'run')} run, {len(rows)} steps; last mean bin {summary['mean_bin']:.2f};"
          f" plot: {out}")
    return summary


if __name__ == "__main__":
    main()
