#!/usr/bin/env python3
"""Charts of saved benchmark runs: the latency sweep of both implementations and the soak's memory.

    .venv/bin/python bench/plot.py --results FILE [FILE ...] [--soak-samples FILE] [--out-dir docs]

Reads the JSONL files bench/compare.py (and bench/soak.py --results) wrote; nothing is run.
Writes OUT_DIR/perf-latency.png (assets/s and worker CPU per asset against concurrency, mediacache
and Node, on the latency workload; hollow markers are points over the 200 MiB RSS cap or with
failures) and OUT_DIR/perf-soak.png (the worker's RSS, and its file descriptors and TCP connections,
against finished assets; the samples file named by the last soak record unless --soak-samples).
Needs matplotlib: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import soak

STYLE = {"mediacache": ("tab:blue", "o", "mediacache"), "node": ("tab:orange", "s", "Node")}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit("bench/plot.py needs matplotlib: pip install -e '.[bench]'") from exc
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def latency_workload(records: list[dict[str, Any]]) -> compare.Workload:
    """The full-size latency workload if the files have runs of it, else the --quick one."""
    full = compare.FULL["latency"]
    return full if any(full.matches(r) for r in records) else compare.QUICK["latency"]


def plot_latency(records: list[dict[str, Any]], out: Path) -> dict[str, int]:
    """Writes the two-panel sweep chart; returns the number of points drawn per side."""
    plt = _pyplot()
    workload = latency_workload(records)
    rows = [r for r in compare.latency_rows(records, workload) if r["runs"]]
    if not rows:
        raise SystemExit(f"no runs of the latency workload ({workload.label}) in the results")
    fig, (rate_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = {}
    for impl, (color, marker, label) in STYLE.items():
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["concurrency"])
        drawn[impl] = len(mine)
        if not mine:
            continue
        xs = [r["concurrency"] for r in mine]
        for ax, key in ((rate_ax, "assets_per_s"), (cpu_ax, "cpu_ms_per_asset")):
            ax.plot(xs, [r[key] for r in mine], color=color, label=label)
            for i, r in enumerate(mine):
                ax.scatter([r["concurrency"]], [r[key]], color=color, marker=marker, zorder=3,
                           facecolors=color if r["eligible"] else "white")
                if not r["eligible"] and ax is rate_ax:
                    # Above and below the line in turn, so that the notes of neighbouring points do not overlap.
                    ax.annotate(str(r["why_not"]), (r["concurrency"], r[key]), textcoords="offset points",
                                xytext=(4, 6 if i % 2 == 0 else -14), fontsize=7, color=color)
    for ax, title, unit in ((rate_ax, "throughput", "assets/s"), (cpu_ax, "worker CPU per asset", "ms")):
        ax.set_xscale("log", base=2)
        concurrencies = sorted({r["concurrency"] for r in rows})
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_xlabel("worker concurrency (one process)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{workload.label} (every origin response delayed); hollow: over "
                 f"{compare.LATENCY_RSS_CAP_MIB:.0f} MiB RSS or failures", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def soak_samples_path(records: list[dict[str, Any]], results: list[Path]) -> Path:
    """The samples file of the last soak record: as written, or beside the results files (moved together)."""
    soaks = [r for r in records if r.get("kind") == "soak"]
    if not soaks:
        raise SystemExit("no soak record in the results; pass --soak-samples FILE")
    path = Path(soaks[-1]["samples_file"])
    for candidate in (path, *(r.parent / path.name for r in results)):
        if candidate.exists():
            return candidate
    raise SystemExit(f"the soak's samples file {path} is not there (nor beside the results); pass --soak-samples")


def plot_soak(samples: list[dict[str, Any]], out: Path) -> int:
    """Writes the soak chart; returns the number of samples drawn."""
    plt = _pyplot()
    if len(samples) < 2:
        raise SystemExit("the soak samples file has fewer than two samples")
    assets = [s["assets"] for s in samples]
    fig, (rss_ax, count_ax) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=(2, 1))
    rss_ax.plot(assets, [s["rss_mib"] for s in samples], color="tab:blue", label="RSS")
    rss_ax.plot(assets, [s["peak_rss_mib"] for s in samples], color="tab:blue", alpha=0.4, linestyle="--",
                label="peak RSS (VmHWM)")
    baseline = assets[-1] * 0.1
    for ax in (rss_ax, count_ax):
        ax.axvline(baseline, color="grey", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
    rss_ax.set_ylabel("MiB")
    rss_ax.set_title(f"one mediacache worker over {assets[-1]:,} assets (dotted: the 10 % point)")
    rss_ax.legend()
    count_ax.plot(assets, [s["fds"] for s in samples], color="tab:green", label="open file descriptors")
    count_ax.plot(assets, [s["tcp"] for s in samples], color="tab:red", label="TCP connections")
    count_ax.set_xlabel("assets finished")
    count_ax.set_ylim(bottom=0)
    count_ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="+", required=True)
    parser.add_argument("--soak-samples", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    parser.add_argument("--only", choices=["latency", "soak"], help="one chart")
    args = parser.parse_args()
    records = compare.load(args.results)
    if args.only in (None, "latency"):
        out = args.out_dir / "perf-latency.png"
        drawn = plot_latency(records, out)
        print(f"{out}: latency sweep, {drawn.get('mediacache', 0)} mediacache points, "
              f"{drawn.get('node', 0)} Node points")
    if args.only in (None, "soak"):
        path = args.soak_samples or soak_samples_path(records, args.results)
        out = args.out_dir / "perf-soak.png"
        count = plot_soak(soak.read_samples(path), out)
        print(f"{out}: soak, {count} samples from {path}")


if __name__ == "__main__":
    main()
