"""`qtmesh up` to SERVING: wall seconds from starting the command to every service of the mesh
serving (its "serving, started in" line), the median of a few runs, each in a fresh directory
(fresh stores, ephemeral ports), and where the time went in the median run: when each service
had loaded, and when it served. The reference, measured in the same run: starting one bare
``python -c "import grpc"`` process.

    python -m benchmarks.startup [--runs 3] [SERVICE ...]

Warm caches are assumed (``make`` warms the numba kernels). Python's bytecode cache counts
too: with PYTHONDONTWRITEBYTECODE set, every process compiles the mesh's own modules again
(reported as ``bytecode_cache``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._report import emit

BUDGET_S = 5.0
# `qtmesh up`'s progress lines without a terminal: "  1.23s  memory           WAITING on market".
_LINE = re.compile(r"^ *(\d+\.\d+)s  (\S+) +([A-Z]+)")
_DONE = re.compile(r"^ *(\d+\.\d+)s  serving, started in")


def start_once(services: list[str]) -> dict[str, Any]:
    """One `qtmesh up`, stopped again once every service serves."""
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "qtmesh", "up", "--ephemeral-ports", *services],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        events: dict[str, dict[str, float]] = {}
        seen = []
        serving_after = None
        try:
            for line in process.stdout:  # type: ignore[union-attr]
                seen.append(line)
                done = _DONE.match(line)
                if done:
                    wall = time.perf_counter() - start
                    serving_after = float(done[1])
                    break
                event = _LINE.match(line)
                if event:
                    events.setdefault(event[2], {}).setdefault(event[3], float(event[1]))
            else:
                raise RuntimeError("qtmesh up did not serve:\n" + "".join(seen))
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
        # The progress clock starts once the command has loaded: the rest is its own start-up.
        before_progress = wall - serving_after
        return {
            "wall_s": round(wall, 3),
            "command_start_s": round(before_progress, 3),
            "services": {
                name: {
                    "loaded_s": round(before_progress + _loaded(statuses), 3),
                    "serving_s": round(before_progress + statuses["SERVING"], 3),
                }
                for name, statuses in events.items()
            },
        }


def _loaded(statuses: dict[str, float]) -> float:
    """When the service had loaded: it waited, or (waiting on nothing) started."""
    return min(statuses.get("WAITING", statuses["STARTING"]), statuses["STARTING"])


def reference_once() -> float:
    """The same-run reference: one interpreter that imports grpc."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import grpc"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("services", nargs="*", help="default: every service")
    args = parser.parse_args()
    command = " ".join(["qtmesh up --ephemeral-ports", *args.services])
    print(
        f"workload: `{command}` until every service serves, {args.runs} runs (median), each in "
        f"a fresh directory, on {len(os.sched_getaffinity(0))} CPUs; reference: "
        "`python -c 'import grpc'`, median of 5"
    )
    reference_once()  # the interpreter and grpc, once, into the page cache
    references = [reference_once() for _ in range(5)]
    runs = [start_once(args.services) for _ in range(args.runs)]
    median_run = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    wall = median_run["wall_s"]
    reference = statistics.median(references)
    emit(
        {
            "services": len(median_run["services"]),
            "up_to_serving_s": wall,
            "runs_s": [r["wall_s"] for r in runs],
            "budget_s": BUDGET_S,
            "within_budget": wall <= BUDGET_S,
            "reference_import_grpc_s": round(reference, 4),
            "ratio_to_reference": round(wall / reference, 1),
            "command_start_s": median_run["command_start_s"],
            "per_service_s": median_run["services"],
            "bytecode_cache": not (
                sys.flags.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE")
            ),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    )


if __name__ == "__main__":
    main()
