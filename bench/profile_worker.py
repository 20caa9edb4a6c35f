#!/usr/bin/env python3
"""Where a benchmark worker's CPU goes: py-spy samples of one `run_bench.py` worker, split by library.

    .venv/bin/python bench/profile_worker.py [N SIZE CONCURRENCY] [--duration-s 8] [--out FILE] [--set K=V ...]

Starts `bench/run_bench.py N SIZE CONCURRENCY 1` (default 2000 x 50 KiB at 16, the services of
bench/services.sh), attaches py-spy (the `bench` extra) to its worker once the worker process
exists, samples it for --duration-s at 200 Hz without stopping it, and prints:
- per library, the share of samples whose innermost frame outside the standard library is in
  it (the library doing the work: asyncpg, sqlalchemy, redis, httpx, ...; "stdlib/loop only"
  is the event loop itself and the system calls it makes);
- the mediacache functions that were innermost among mediacache's frames most often (which
  use case the time was spent for).
The collapsed stacks are kept in --out (default /tmp/mediacache-worker.folded) for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY_SPY = Path(sys.executable).with_name("py-spy")
# Frames of these belong to the interpreter's own machinery, not to a library doing work.
STDLIB = re.compile(r"^(asyncio|selectors|contextlib|enum|typing|weakref|functools|uuid|json|socket|ssl|"
                    r"hashlib|base64|datetime|logging|re|collections|threading|dataclasses|abc|copy|"
                    r"inspect|types|email|urllib|string|ipaddress|<frozen [^>]+>|typer|\?|"
                    r"mediacache\.cli|mediacache\.__main__)$")


def _package(frame: str) -> str:
    match = re.search(r"\(([^:)]+)", frame)
    if match is None:
        return "?"
    path = match.group(1)
    if path.startswith("mediacache/"):
        return "mediacache." + path.split("/")[1].removesuffix(".py")
    return path.split("/")[0].removesuffix(".py")


def split(folded: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Samples in all; per library (innermost non-stdlib frame); per innermost mediacache function."""
    total, libraries, functions = 0, collections.Counter[str](), collections.Counter[str]()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a stack py-spy was still writing when it stopped
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        libs = [p for p in map(_package, frames) if not STDLIB.match(p)]
        libraries[libs[-1] if libs else "stdlib/loop only"] += samples
        ours = [f.split(" (")[0] for f in frames if "(mediacache/" in f and "mediacache/cli/" not in f]
        if ours:
            functions[ours[-1]] += samples
    return total, libraries, functions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", default="2000")
    parser.add_argument("size", nargs="?", default="51200")
    parser.add_argument("concurrency", nargs="?", default="16")
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mediacache-worker.folded"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not PY_SPY.exists():
        sys.exit(f"{PY_SPY} is missing: install the bench extra (pip install -e '.[bench]')")
    sets = [a for kv in args.set for a in ("--set", kv)]
    run = subprocess.Popen([sys.executable, str(HERE / "run_bench.py"), args.n, args.size, args.concurrency, "1",
                            *sets], stdout=subprocess.PIPE, text=True)
    pid = ""
    deadline = time.monotonic() + 60
    while not pid and time.monotonic() < deadline and run.poll() is None:
        found = subprocess.run(["pgrep", "-f", "mediacache worker --concurrency"], capture_output=True, text=True)
        pid = found.stdout.split()[0] if found.stdout.split() else ""
        time.sleep(0.1)
    if not pid:
        run.kill()
        sys.exit("no worker process appeared within 60 s")
    time.sleep(1.0)  # past the worker's imports and start-up
    subprocess.run([str(PY_SPY), "record", "-p", pid, "-d", str(int(args.duration_s)), "-r", "200", "-f", "raw",
                    "-o", str(args.out), "--nonblocking"], check=True, capture_output=True)
    out, _ = run.communicate()
    print(out.strip().splitlines()[-1] if out.strip() else "(run_bench printed nothing)")
    total, libraries, functions = split(args.out)
    print(f"\n{total} samples of worker {pid}; by the library doing the work:")
    for name, samples in libraries.most_common(16):
        print(f"  {100 * samples / total:5.1f} %  {name}")
    print("innermost mediacache function:")
    for name, samples in functions.most_common(12):
        print(f"  {100 * samples / total:5.1f} %  {name}")
    print(f"collapsed stacks: {args.out}")


if __name__ == "__main__":
    main()
