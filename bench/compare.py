#!/usr/bin/env python3
"""mediacache and the Node implementation of the same design, side by side: A B A B runs, medians, targets.

    .venv/bin/python bench/compare.py [--pairs 3] [--only WORKLOAD ...] [--results FILE] [--quick]
    .venv/bin/python bench/compare.py --report-only --results FILE   # (--quick implied for a file of quick runs)

Workloads (N x size; configurations are concurrency x worker processes, the same for both sides):
    small     2000 x 50 KiB at 16x1 and 16x2
    latency   5000 x 50 KiB, every origin response 100 ms late (`&delay_ms=100` in the URLs of both
              sides), at 16, 64, 256 and 512 x 1; mediacache with MEDIACACHE_HOST_LIMITS=*=unlimited,
              as the one origin host stands in for many (its default allows 64 downloads per host at once)
    video     20 x 50 MiB at 4x1
    bigfile   1 x 1 GiB at 4x1, mediacache only (its worker's peak RSS)
    soak      bench/soak.py: 100,000 mixed assets through one mediacache worker
`--quick` shrinks every workload (tiny sizes, one pair, no waiting for a quiet machine): a smoke
test of the whole harness, whose figures mean nothing.

The targets, printed as `measured / target / met` lines at the end:
    (1)  worker CPU per asset on small at 16x1                        <= 0.67x Node's
    (2)  small assets/s, each side's best configuration               >= 1.1x Node's
    (3)  latency assets/s, each side's best concurrency among the
         points whose workers stayed under 200 MiB RSS each           >= 1.5x Node's
    (4a) video MiB/s                                                  >= 1.1x Node's
    (4b) bigfile: the worker's peak RSS                               < 150 MiB
    (5)  soak: RSS, file descriptors, connections, throughput         see bench/soak.py

The Node side is copied from its source folder (--node-src) to a scratch folder and `npm ci`-ed
once; its run script gets one added line so that its URLs can carry the same query as ours
(BENCH_URL_QUERY). Both sides use the same origin, PostgreSQL, SeaweedFS and Redis DB 5
(bench/services.sh). Every run appends its JSON line, with the workload, pair and settings, to
--results; the tables and targets are computed from that file only, so `--report-only` recomputes
them from saved runs. A run that fails is recorded with an `error` and left out of the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import soak  # noqa: E402 - next to this file
from run_bench import parse_settings  # noqa: E402

SCRATCH = Path("/tmp/mediacache-node-impl")
NODE_RUN_JS = "bench/run.js"
NODE_URLS = "`${origin}/big/${i}.mp4?size=${size}` : `${origin}/media/${i}.jpg?size=${size}`"
NODE_URLS_WITH_QUERY = ("`${origin}/big/${i}.mp4?size=${size}${urlQuery}` : "
                        "`${origin}/media/${i}.jpg?size=${size}${urlQuery}`")
NODE_QUERY_LINE = ("const urlQuery = process.env.BENCH_URL_QUERY ? `&${process.env.BENCH_URL_QUERY}` : '';"
                   "  // added by mediacache's bench/compare.py\n")

MiB = 2**20
CPU_TARGET = 0.67
SMALL_TARGET = 1.1
LATENCY_TARGET = 1.5
LATENCY_RSS_CAP_MIB = 200.0
VIDEO_TARGET = 1.1
BIGFILE_RSS_TARGET_MIB = 150.0


@dataclass(frozen=True)
class Workload:
    name: str
    n: int
    size: int
    configs: tuple[tuple[int, int], ...]  # (concurrency, worker processes), for both sides
    url_query: str = ""
    impls: tuple[str, ...] = ("mediacache", "node")
    mc_settings: dict[str, str] = field(default_factory=dict)

    def matches(self, record: dict[str, Any]) -> bool:
        return (record.get("n"), record.get("size"), record.get("url_query", "")) == (self.n, self.size, self.url_query)

    @property
    def label(self) -> str:
        size = f"{self.size // MiB} MiB" if self.size >= MiB else f"{self.size // 1024} KiB"
        if self.size >= 2**30:
            size = f"{self.size // 2**30} GiB"
        return f"{self.n:,} x {size}" + (f", {self.url_query}" if self.url_query else "")


UNLIMITED_HOSTS = {"MEDIACACHE_HOST_LIMITS": "*=unlimited"}
# The default MEDIACACHE_MAX_BYTES (512 MiB) refuses a 1 GiB file, as it should.
BIG_ENOUGH = {"MEDIACACHE_MAX_BYTES": str(2 * 2**30)}
FULL = {
    "small": Workload("small", 2000, 51200, ((16, 1), (16, 2))),
    "latency": Workload("latency", 5000, 51200, ((16, 1), (64, 1), (256, 1), (512, 1)), "delay_ms=100",
                        mc_settings=UNLIMITED_HOSTS),
    "video": Workload("video", 20, 50 * MiB, ((4, 1),)),
    "bigfile": Workload("bigfile", 1, 1024 * MiB, ((4, 1),), impls=("mediacache",), mc_settings=BIG_ENOUGH),
}
QUICK = {
    "small": Workload("small", 60, 51200, ((4, 1), (4, 2))),
    "latency": Workload("latency", 80, 51200, ((4, 1), (16, 1)), "delay_ms=100", mc_settings=UNLIMITED_HOSTS),
    "video": Workload("video", 2, 4 * MiB, ((2, 1),)),
    "bigfile": Workload("bigfile", 1, 32 * MiB, ((2, 1),), impls=("mediacache",)),
}
SOAK_ASSETS = {False: 100_000, True: 300}
NAMES = [*FULL, "soak"]


# ---- running -------------------------------------------------------------------------------------

def default_node_src() -> Path | None:
    for parent in HERE.parents:
        candidate = parent / "shared" / "anchors" / "node-seed"
        if (candidate / "package.json").exists():
            return candidate
    return None


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "node_modules" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def node_dir(src: Path) -> Path:
    """A writable copy of the Node implementation with its dependencies installed, made once per source version."""
    stamp = SCRATCH / ".copied-from"
    digest = _tree_digest(src)
    if (SCRATCH / "node_modules").exists() and stamp.exists() and stamp.read_text() == digest:
        return SCRATCH
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    shutil.copytree(src, SCRATCH, ignore=shutil.ignore_patterns("node_modules"))
    for path in [SCRATCH, *SCRATCH.rglob("*")]:  # the source may be read-only; npm and the patch write here
        path.chmod(path.stat().st_mode | 0o200)
    run_js = SCRATCH / NODE_RUN_JS
    text = run_js.read_text()
    if text.count(NODE_URLS) != 1:
        raise SystemExit(f"{src / NODE_RUN_JS} does not build its URLs as expected ({NODE_URLS}); "
                         "update NODE_URLS in bench/compare.py")
    text = text.replace(NODE_URLS, NODE_URLS_WITH_QUERY).replace("const urls =", NODE_QUERY_LINE + "const urls =", 1)
    run_js.write_text(text)
    subprocess.run(["npm", "ci", "--silent"], cwd=SCRATCH, check=True)
    stamp.write_text(digest)
    return SCRATCH


def cpu_busy(interval_s: float = 2.0) -> float:
    def idle_total() -> tuple[int, int]:
        fields = list(map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:]))
        return fields[3] + fields[4], sum(fields)
    i0, t0 = idle_total()
    time.sleep(interval_s)
    i1, t1 = idle_total()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(max_wait_s: float) -> float | None:
    """Like the Node harness's run_all.sh: start a run once the CPUs were >= 85 % idle for 2 s (or
    max_wait_s has passed); returns the busy share seen last, which is recorded with the run."""
    if max_wait_s <= 0:
        return None
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = cpu_busy()
        if busy <= 0.15 or time.monotonic() > deadline:
            return round(busy, 3)


def run_one(impl: str, workload: Workload, concurrency: int, workers: int, *, node_src: Path | None,
            mc_settings: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One timed run of one side; its JSON line, or a record with an `error`."""
    env = {**os.environ, "VERIFY_SAMPLE": os.environ.get("VERIFY_SAMPLE", "5"),
           "WEED_BIN": os.environ.get("WEED_BIN", str(Path(sys.executable).parent / "weed")),
           "BENCH_TIMEOUT_S": str(timeout_s)}
    args = [str(workload.n), str(workload.size), str(concurrency), str(workers)]
    if impl == "node":
        if node_src is None:
            raise SystemExit("no Node implementation found: pass --node-src DIR")
        cmd = ["bash", str(node_dir(node_src) / "bench" / "bench_node.sh"), *args]
        env["BENCH_URL_QUERY"] = workload.url_query
    else:
        cmd = [sys.executable, str(HERE / "run_bench.py"), *args]
        if workload.url_query:
            cmd += ["--url-query", workload.url_query]
        for key, value in mc_settings.items():
            cmd += ["--set", f"{key}={value}"]
    base: dict[str, Any] = {"impl": "mediacache" if impl == "mediacache" else "node", "n": workload.n,
                            "size": workload.size, "concurrency": concurrency, "workers": workers}
    # A session of its own, so that a run that hangs goes with its worker processes.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s + 300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {**base, "error": f"no answer within {timeout_s + 300:.0f} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {**base, "error": f"exit {proc.returncode}: {stderr[-1500:]}"}
    record: dict[str, Any] = {**json.loads(lines[-1]), "impl": base["impl"]}
    if proc.returncode != 0:
        failed = int(record.get("failed") or 0)
        verify = [line for line in stderr.splitlines() if line.startswith("verify:")]
        why = f"{failed} of {record.get('n')} assets failed" if failed else (verify or ["see its stderr"])[-1]
        record["error"] = f"exit {proc.returncode} after the run, {why}: {stderr[-500:]}"
    return record


def run_workloads(args: argparse.Namespace, workloads: dict[str, Workload], names: list[str]) -> None:
    node_src = args.node_src or default_node_src()
    extra = parse_settings(args.mc_set)
    for name in names:
        if name == "soak":
            run_soak(args)
            continue
        workload = workloads[name]
        for pair in range(args.pairs):
            for concurrency, workers in workload.configs:
                for impl in workload.impls:
                    busy = wait_quiet(args.quiet_wait_s)
                    settings = {**workload.mc_settings, **extra} if impl == "mediacache" else {}
                    record = run_one(impl, workload, concurrency, workers, node_src=node_src, mc_settings=settings,
                                     timeout_s=args.timeout_s)
                    record.update({"workload": name, "pair": pair, "quick": args.quick, "cpu_busy_before": busy,
                                   "ts": time.strftime("%Y-%m-%dT%H:%M:%S")})
                    if workload.url_query:
                        record["url_query"] = workload.url_query
                    if settings:
                        record["settings"] = settings
                    print(json.dumps(record), flush=True)
                    with args.results.open("a") as f:
                        f.write(json.dumps(record) + "\n")


def run_soak(args: argparse.Namespace) -> None:
    samples = args.results.with_name(args.results.stem + "-soak-samples.jsonl")
    cmd = [sys.executable, str(HERE / "soak.py"), "--assets", str(SOAK_ASSETS[args.quick]),
           "--results", str(args.results), "--samples", str(samples)]
    for setting in args.mc_set:
        cmd += ["--set", setting]
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(f"compare: bench/soak.py exited {done.returncode}", file=sys.stderr)


# ---- the report ----------------------------------------------------------------------------------

def load(paths: Iterable[Path]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip().startswith("{"):
                records.append(json.loads(line))
    return records


def side(record: dict[str, Any]) -> str:
    return "mediacache" if record.get("impl") == "mediacache" else "node"


@dataclass
class Point:
    """The runs of one side at one configuration of one workload."""
    runs: list[dict[str, Any]]
    errors: int

    def median(self, key: str) -> float:
        return float(statistics.median(float(r[key]) for r in self.runs))

    @property
    def assets_per_s(self) -> float:
        return self.median("assets_per_s")

    def cpu_ms_per_asset(self, n: int) -> float:
        return self.median("worker_cpu_s") / n * 1000

    def mib_per_s(self, n: int, size: int) -> float:
        return float(statistics.median(n * size / MiB / float(r["total_s"]) for r in self.runs))

    @property
    def peak_rss_mib(self) -> float:
        return max(float(r["peak_rss_mb_per_worker"]) for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(int(r["failed"]) for r in self.runs)

    def all_rates(self) -> str:
        return ", ".join(f"{float(r['assets_per_s']):g}" for r in self.runs)


def points(records: list[dict[str, Any]], workload: Workload) -> dict[tuple[str, int, int], Point]:
    out: dict[tuple[str, int, int], Point] = {}
    for r in records:
        if r.get("kind") == "soak" or not workload.matches(r):
            continue
        key = (side(r), int(r["concurrency"]), int(r["workers"]))
        point = out.setdefault(key, Point([], 0))
        if "error" in r or "assets_per_s" not in r:
            point.errors += 1
        else:
            point.runs.append(r)
    return {k: p for k, p in out.items() if p.runs or p.errors}


def ineligible_reason(point: Point | None, rss_cap_mib: float) -> str | None:
    if point is None:
        return "no run"
    if point.errors:
        return f"{point.errors} run(s) failed"
    if not point.runs:
        return "no run"
    if point.failed:
        return f"{point.failed} assets failed"
    if point.peak_rss_mib > rss_cap_mib:
        return f"RSS {point.peak_rss_mib:.0f} MiB > {rss_cap_mib:.0f}"
    return None


def best(pts: dict[tuple[str, int, int], Point], which: str,
         rss_cap_mib: float = float("inf")) -> tuple[tuple[int, int], Point] | None:
    eligible = [((c, w), p) for (s, c, w), p in pts.items()
                if s == which and ineligible_reason(p, rss_cap_mib) is None]
    return max(eligible, key=lambda item: item[1].assets_per_s) if eligible else None


Target = tuple[str, str, str, bool | None]  # (what, measured, target, met; None: no data)


def _ratio_line(number: str, what: str, ours: float | None, theirs: float | None, unit: str, target: float,
                higher_is_better: bool = True, detail: str = "") -> Target:
    goal = f"{'>=' if higher_is_better else '<='} {target:g}x"
    if ours is None or theirs is None or theirs == 0:
        return (f"({number}) {what}", "no runs", goal, None)
    ratio = ours / theirs
    met = ratio >= target if higher_is_better else ratio <= target
    return (f"({number}) {what}", f"{ratio:.2f}x Node's ({ours:.2f} vs {theirs:.2f} {unit}{detail})", goal, met)


def targets(records: list[dict[str, Any]], workloads: dict[str, Workload], soak_assets: int) -> list[Target]:
    lines: list[Target] = []
    small = workloads["small"]
    pts = points(records, small)
    c, w = small.configs[0]
    mc, node = pts.get(("mediacache", c, w)), pts.get(("node", c, w))
    lines.append(_ratio_line("1", f"worker CPU per asset, {small.label} at {c}x{w}",
                             mc.cpu_ms_per_asset(small.n) if mc and mc.runs else None,
                             node.cpu_ms_per_asset(small.n) if node and node.runs else None,
                             "ms", CPU_TARGET, higher_is_better=False))
    mc_best, node_best = best(pts, "mediacache"), best(pts, "node")
    lines.append(_ratio_line(
        "2", f"assets/s, {small.label}, best configuration of each",
        mc_best[1].assets_per_s if mc_best else None, node_best[1].assets_per_s if node_best else None,
        "assets/s", SMALL_TARGET,
        detail=f"; at {mc_best[0][0]}x{mc_best[0][1]} / {node_best[0][0]}x{node_best[0][1]}"
        if mc_best and node_best else ""))

    latency = workloads["latency"]
    pts = points(records, latency)
    mc_best, node_best = best(pts, "mediacache", LATENCY_RSS_CAP_MIB), best(pts, "node", LATENCY_RSS_CAP_MIB)
    lines.append(_ratio_line(
        "3", f"assets/s, {latency.label}, best concurrency of each under {LATENCY_RSS_CAP_MIB:.0f} MiB RSS",
        mc_best[1].assets_per_s if mc_best else None, node_best[1].assets_per_s if node_best else None,
        "assets/s", LATENCY_TARGET,
        detail=f"; at {mc_best[0][0]} / {node_best[0][0]}" if mc_best and node_best else ""))

    video = workloads["video"]
    pts = points(records, video)
    c, w = video.configs[0]
    mc, node = pts.get(("mediacache", c, w)), pts.get(("node", c, w))
    lines.append(_ratio_line("4a", f"MiB/s, {video.label} at {c}x{w}",
                             mc.mib_per_s(video.n, video.size) if mc and mc.runs else None,
                             node.mib_per_s(video.n, video.size) if node and node.runs else None,
                             "MiB/s", VIDEO_TARGET))
    big = workloads["bigfile"]
    pts = points(records, big)
    runs = [p for (s, _c, _w), p in pts.items() if s == "mediacache" and p.runs]
    goal = f"< {BIGFILE_RSS_TARGET_MIB:.0f} MiB"
    if runs:
        peak = max(p.peak_rss_mib for p in runs)
        count = sum(len(p.runs) for p in runs)
        lines.append((f"(4b) worker peak RSS, {big.label}", f"{peak:.1f} MiB (largest of {count} run(s))", goal,
                      peak < BIGFILE_RSS_TARGET_MIB))
    else:
        lines.append((f"(4b) worker peak RSS, {big.label}", "no runs", goal, None))

    soaks = [r for r in records if r.get("kind") == "soak" and r.get("assets") == soak_assets]
    if soaks:
        for what, measured, goal, met in soak.target_lines(soaks[-1]):
            lines.append((f"(5) soak {what}", measured, goal, met))
    else:
        lines.append((f"(5) soak, {soak_assets:,} assets", "no run", "see bench/soak.py", None))
    return lines


def format_targets(lines: list[Target]) -> str:
    width_what = max(len(t[0]) for t in lines)
    width_measured = max(len(t[1]) for t in lines)
    width_goal = max(len(t[2]) for t in lines)
    out = [f"{'target':<{width_what}}  {'measured':<{width_measured}} / {'target':<{width_goal}} / met"]
    for what, measured, goal, met in lines:
        verdict = "-" if met is None else "met" if met else "NOT MET"
        out.append(f"{what:<{width_what}}  {measured:<{width_measured}} / {goal:<{width_goal}} / {verdict}")
    return "\n".join(out)


def _cell(point: Point | None, text: Any) -> str:
    return str(text(point)) if point and point.runs else "-"


def _side_by_side_row(name: str, workload: Workload, config: tuple[int, int], mc: Point | None,
                      node: Point | None) -> str:
    n, size = workload.n, workload.size
    ratio = f"**{mc.assets_per_s / node.assets_per_s:.2f}**" if mc and mc.runs and node and node.runs else "-"
    return (f"| {name} ({workload.label}) | {config[0]}x{config[1]} | "
            f"{_cell(mc, lambda p: f'{p.assets_per_s:.2f} ({p.all_rates()})')} | "
            f"{_cell(node, lambda p: f'{p.assets_per_s:.2f} ({p.all_rates()})')} | {ratio} | "
            f"{_cell(mc, lambda p: f'{p.mib_per_s(n, size):.1f}')} | "
            f"{_cell(node, lambda p: f'{p.mib_per_s(n, size):.1f}')} | "
            f"{_cell(mc, lambda p: f'{p.cpu_ms_per_asset(n):.2f}')} / "
            f"{_cell(node, lambda p: f'{p.cpu_ms_per_asset(n):.2f}')} | "
            f"{_cell(mc, lambda p: f'{p.peak_rss_mib:.0f}')} / {_cell(node, lambda p: f'{p.peak_rss_mib:.0f}')} |")


def side_by_side_table(records: list[dict[str, Any]], workloads: dict[str, Workload]) -> str:
    rows = ["| workload | config | mediacache assets/s (runs) | Node assets/s (runs) | ratio | mediacache MiB/s | "
            "Node MiB/s | worker CPU ms/asset (mc / Node) | peak RSS MiB per worker (mc / Node) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in ("small", "video", "bigfile"):
        workload = workloads[name]
        pts = points(records, workload)
        for config in workload.configs:
            mc, node = pts.get(("mediacache", *config)), pts.get(("node", *config))
            if (mc and mc.runs) or (node and node.runs):
                rows.append(_side_by_side_row(name, workload, config, mc, node))
    return "\n".join(rows)


def latency_rows(records: list[dict[str, Any]], workload: Workload) -> list[dict[str, Any]]:
    """One row per side and concurrency of the latency sweep (also what bench/plot.py draws)."""
    rows = []
    for (which, c, w), p in sorted(points(records, workload).items()):
        reason = ineligible_reason(p, LATENCY_RSS_CAP_MIB)
        rows.append({"impl": which, "concurrency": c, "workers": w, "runs": len(p.runs), "errors": p.errors,
                     "assets_per_s": p.assets_per_s if p.runs else None,
                     "cpu_ms_per_asset": p.cpu_ms_per_asset(workload.n) if p.runs else None,
                     "peak_rss_mib": p.peak_rss_mib if p.runs else None,
                     "eligible": reason is None, "why_not": reason})
    return rows


def latency_table(records: list[dict[str, Any]], workload: Workload) -> str:
    rows = [f"| side | concurrency x workers | assets/s (runs) | worker CPU ms/asset | peak RSS MiB per worker | "
            f"under {LATENCY_RSS_CAP_MIB:.0f} MiB |", "|---|---|---|---|---|---|"]
    pts = points(records, workload)
    for row in latency_rows(records, workload):
        p = pts[(row["impl"], row["concurrency"], row["workers"])]
        name = "mediacache" if row["impl"] == "mediacache" else "Node"
        if not p.runs:
            rows.append(f"| {name} | {row['concurrency']}x{row['workers']} | - | - | - | "
                        f"not eligible: {row['why_not']} |")
            continue
        rows.append(f"| {name} | {row['concurrency']}x{row['workers']} | {p.assets_per_s:.1f} ({p.all_rates()}) | "
                    f"{row['cpu_ms_per_asset']:.2f} | {row['peak_rss_mib']:.0f} | "
                    f"{'yes' if row['eligible'] else 'not eligible: ' + str(row['why_not'])} |")
    return "\n".join(rows)


def report(records: list[dict[str, Any]], quick: bool) -> str:
    workloads = QUICK if quick else FULL
    parts = ["## Side by side", side_by_side_table(records, workloads), "",
             f"## Latency sweep ({workloads['latency'].label})", latency_table(records, workloads["latency"]), "",
             "## Targets", format_targets(targets(records, workloads, SOAK_ASSETS[quick]))]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, help="A B rounds per configuration (3; 1 with --quick)")
    parser.add_argument("--only", choices=NAMES, action="append", help="a workload (repeatable; all by default)")
    parser.add_argument("--results", type=Path, help="JSONL file the runs are appended to and the report read from "
                        "(default /tmp/mediacache-compare-DATE.jsonl)")
    parser.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test of the harness")
    parser.add_argument("--report-only", action="store_true", help="no runs: the report from --results")
    parser.add_argument("--node-src", type=Path, help="the Node implementation's folder (found next to the project)")
    parser.add_argument("--mc-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a mediacache setting for every mediacache run (repeatable)")
    parser.add_argument("--quiet-wait-s", type=float, help="longest wait for a quiet machine before a run "
                        "(120; 0 with --quick)")
    parser.add_argument("--timeout-s", type=float, default=900, help="longest time one run may take")
    args = parser.parse_args()
    args.pairs = args.pairs or (1 if args.quick else 3)
    if args.quiet_wait_s is None:
        args.quiet_wait_s = 0 if args.quick else 120
    if args.report_only:
        if args.results is None or not args.results.exists():
            raise SystemExit("--report-only needs --results FILE of earlier runs")
    else:
        if args.results is None:
            args.results = Path(f"/tmp/mediacache-compare-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        args.results.parent.mkdir(parents=True, exist_ok=True)
        run_workloads(args, QUICK if args.quick else FULL, args.only or NAMES)
    records = load([args.results])
    runs = [r for r in records if r.get("kind") != "soak"]
    # a file of --quick runs only is reported as such without being told
    quick = args.quick or bool(runs and all(r.get("quick") for r in runs))
    print(report(records, quick))
    print(f"\nresults: {args.results}")


if __name__ == "__main__":
    main()
