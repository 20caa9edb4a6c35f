#!/usr/bin/env python3
"""mediacache against the Node anchor, side by side: A B A B runs of each workload, medians and ratios.

    .venv/bin/python bench/compare.py [--pairs 3] [--results FILE] [--quick]

Workloads (N x size, concurrency x worker processes):
    small      2000 x 50 KiB, 16 x 1 for both
    small-best 2000 x 50 KiB, each side's best configuration (mediacache 16 x 2, Node 16 x 1)
    video      20 x 50 MiB, 4 x 1 for both
The Node side is the seed's design in ../shared/anchors/node-seed (copied to a scratch folder and
`npm ci`-ed once). Both use the same origin, PostgreSQL, SeaweedFS and Redis DB 5 (bench/services.sh).
Every run appends its JSON line to --results; the table at the end is computed from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANCHOR = HERE.parent.parent / "shared" / "anchors" / "node-seed"
SCRATCH = Path("/tmp/mediacache-node-seed")

WORKLOADS = {  # name: (n, size, (mediacache concurrency, workers), (node concurrency, workers))
    "small": (2000, 51200, (16, 1), (16, 1)),
    "small-best": (2000, 51200, (16, 2), (16, 1)),
    "video": (20, 50 * 1024 * 1024, (4, 1), (4, 1)),
}


def node_dir() -> Path:
    if not (SCRATCH / "node_modules").exists():
        if SCRATCH.exists():
            shutil.rmtree(SCRATCH)
        shutil.copytree(ANCHOR, SCRATCH)
        subprocess.run(["npm", "ci", "--silent"], cwd=SCRATCH, check=True)
    return SCRATCH


def wait_quiet(max_wait_s: float = 60) -> None:
    """Like the anchor's run_all.sh: start a run only once the CPUs were >= 85 % idle for 2 s."""
    def idle_total() -> tuple[int, int]:
        fields = list(map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:]))
        return fields[3] + fields[4], sum(fields)
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        i0, t0 = idle_total()
        time.sleep(2)
        i1, t1 = idle_total()
        if 1 - (i1 - i0) / max(t1 - t0, 1) <= 0.15:
            return


def run(impl: str, n: int, size: int, concurrency: int, workers: int) -> dict[str, object]:
    env = {**os.environ, "VERIFY_SAMPLE": "5", "WEED_BIN": str(Path(sys.executable).parent / "weed")}
    if impl == "node":
        cmd = ["bash", str(node_dir() / "bench" / "bench_node.sh"), str(n), str(size), str(concurrency), str(workers)]
    else:
        cmd = [sys.executable, str(HERE / "run_bench.py"), str(n), str(size), str(concurrency), str(workers)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{impl} run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(lines[-1]))


def table(results: list[dict[str, object]]) -> str:
    rows = ["| workload | config (mediacache / Node) | mediacache assets/s | Node assets/s | ratio | "
            "mediacache MiB/s | Node MiB/s | worker CPU ms/asset (mc / Node) | peak RSS MiB (mc / Node) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, (n, size, mc_cfg, node_cfg) in WORKLOADS.items():
        mc = [r for r in results if r.get("workload") == name and r["impl"] == "mediacache"]
        node = [r for r in results if r.get("workload") == name and r["impl"] == "node-seed"]
        if not mc or not node:
            continue

        def med(rs: list[dict[str, object]], key: str) -> float:
            return statistics.median(float(r[key]) for r in rs)  # type: ignore[arg-type]
        mc_rate, node_rate = med(mc, "assets_per_s"), med(node, "assets_per_s")
        mib = size * n / 2**20
        rows.append(
            f"| {name} ({n} x {size // 1024} KiB) | {mc_cfg[0]}x{mc_cfg[1]} / {node_cfg[0]}x{node_cfg[1]} | "
            f"{mc_rate:.1f} ({', '.join(str(r['assets_per_s']) for r in mc)}) | "
            f"{node_rate:.1f} ({', '.join(str(r['assets_per_s']) for r in node)}) | **{mc_rate / node_rate:.2f}** | "
            f"{mib / med(mc, 'total_s'):.1f} | {mib / med(node, 'total_s'):.1f} | "
            f"{med(mc, 'worker_cpu_s') / n * 1000:.2f} / {med(node, 'worker_cpu_s') / n * 1000:.2f} | "
            f"{max(float(r['peak_rss_mb_per_worker']) for r in mc):.0f} / "  # type: ignore[arg-type]
            f"{max(float(r['peak_rss_mb_per_worker']) for r in node):.0f} |")  # type: ignore[arg-type]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--results", type=Path, default=Path("/tmp/mediacache-compare.jsonl"))
    parser.add_argument("--only", choices=list(WORKLOADS), action="append")
    args = parser.parse_args()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(WORKLOADS):
        n, size, mc_cfg, node_cfg = WORKLOADS[name]
        for pair in range(args.pairs):
            for impl, cfg in (("mediacache", mc_cfg), ("node", node_cfg)):
                wait_quiet()
                result = {**run(impl, n, size, *cfg), "workload": name, "pair": pair}
                print(json.dumps(result), flush=True)
                with args.results.open("a") as f:
                    f.write(json.dumps(result) + "\n")
    results = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    print(table(results))


if __name__ == "__main__":
    main()
