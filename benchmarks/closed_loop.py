"""Does the mesh in the loop beat the same fleet left static? Each seed of the synthetic market is
replayed four times on a mesh of its own (``qtmesh replay``'s loop, replay/driver.py):

* ``closed``: the whole mesh in the loop; ``static``: the same fleet, no action executed;
* ``noise_closed`` and ``noise_static``: the same on a zero-drift market with no regimes, where
  there is nothing to find: nothing should be promoted and the loop should cost next to nothing.

Figures are out of sample: the replayed days come after the fleet's deployment and after every
bar any strategy or evolution had seen. The paired tests compare closed with static across seeds
(two-sided t test of the per-seed differences). ``wall_s_per_day`` is the closed loop's wall
seconds per replayed market day, the mesh's start-up left out. With ``--data FILE`` the same
comparison runs on a user's bars (one run per arm; no noise arms).

    python -m benchmarks.closed_loop [--seeds 10] [--days 30] [--data FILE] [--no-noise]
                                     [--progress FILE]

The whole run takes hours (about 10 wall seconds per replayed day of the closed loop on a busy
2-core machine). With ``--progress FILE`` every measured arm is appended to FILE as one JSON
line as soon as it is done, and a run started again with the same FILE and settings measures
only the arms FILE does not hold yet: a long run can be spread over several sittings.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import emit
from replay import ArmSummary, MarketSource, ReplayConfig, paired_p_value, summary
from replay.cli import replay_arm
from replay.config import Arm

# Goals of the benchmark (benchmarks/README.md): wall seconds per market day, and the most the
# closed loop's mean return may differ from static's on the noise market.
WALL_S_PER_DAY_GOAL = 2.0
NOISE_RETURN_GAP_GOAL = 0.005
SIGNIFICANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Measured:
    summary: ArmSummary
    wall_s_per_day: float
    phases_s_per_day: dict[str, float]

    def to_json(self, key: dict[str, Any]) -> str:
        return json.dumps(
            {
                **key,
                "summary": dataclasses.asdict(self.summary),
                "wall_s_per_day": self.wall_s_per_day,
                "phases_s_per_day": self.phases_s_per_day,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measured:
        return cls(ArmSummary(**data["summary"]), data["wall_s_per_day"], data["phases_s_per_day"])


class Progress:
    """The arms measured so far, one JSON line each in ``path`` (``--progress``), by what
    identifies them: arm, market source, days and cadence."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._done: dict[str, Measured] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                data = json.loads(line)
                self._done[self._name(data["key"])] = Measured.from_json(data)

    @staticmethod
    def _name(key: dict[str, Any]) -> str:
        return json.dumps(key, sort_keys=True)

    def get(self, key: dict[str, Any]) -> Measured | None:
        return self._done.get(self._name(key))

    def add(self, key: dict[str, Any], measured: Measured) -> None:
        self._done[self._name(key)] = measured
        if self._path is not None:
            with self._path.open("a") as out:
                out.write(measured.to_json({"key": key}) + "\n")


async def measure(arm: Arm, source: MarketSource, config: ReplayConfig) -> Measured:
    with tempfile.TemporaryDirectory(prefix="qtmesh-bench-") as work:
        run = await replay_arm(arm, source, config, work_dir=Path(work))
    s = summary(run)
    days = run.days or float("nan")
    phases = {k: v / days for k, v in run.wall_seconds_by_phase.items()}
    return Measured(s, run.wall_seconds / days, phases)


def arm_figures(runs: list[Measured]) -> dict[str, Any]:
    s = [r.summary for r in runs]
    return {
        "sharpe_mean": float(np.mean([x.sharpe for x in s])),
        "return_mean": float(np.mean([x.total_return for x in s])),
        "max_drawdown_mean": float(np.mean([x.max_drawdown for x in s])),
        "promotions": int(sum(x.promotions for x in s)),
        "halts": int(sum(x.halts for x in s)),
        "sharpe": [round(x.sharpe, 4) for x in s],
        "return": [round(x.total_return, 6) for x in s],
        "max_drawdown": [round(x.max_drawdown, 6) for x in s],
        "promotions_per_seed": [x.promotions for x in s],
        "halts_per_seed": [x.halts for x in s],
        "plans_per_seed": [x.plans for x in s],
        "days_per_seed": [round(x.days, 3) for x in s],
        "wall_s_per_day": [round(r.wall_s_per_day, 3) for r in runs],
        # Where the wall time goes (replay/driver.py ReplayRun.wall_seconds_by_phase).
        "wall_s_per_day_by_phase": {
            phase: round(float(np.mean([r.phases_s_per_day.get(phase, 0.0) for r in runs])), 3)
            for phase in sorted({p for r in runs for p in r.phases_s_per_day})
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    config = ReplayConfig(days=args.days, plan_every_minutes=args.plan_every_minutes)
    if args.data is not None:
        sources = {"": [MarketSource(data_path=args.data)]}
    else:
        seeds = list(range(1, args.seeds + 1))
        sources = {"": [MarketSource(seed=s) for s in seeds]}
        if not args.no_noise:
            sources["noise_"] = [MarketSource(seed=s, noise=True) for s in seeds]
    results: dict[str, list[Measured]] = {}
    progress = Progress(args.progress)
    started = time.monotonic()
    for prefix, market in sources.items():
        for source in market:
            for arm in (Arm.CLOSED, Arm.STATIC):
                key = {
                    "arm": prefix + arm.value,
                    "source": source.describe(),
                    "days": args.days,
                    "plan_every_minutes": args.plan_every_minutes,
                }
                measured = progress.get(key)
                earlier = measured is not None
                if measured is None:
                    measured = await measure(arm, source, config)
                    progress.add(key, measured)
                results.setdefault(prefix + arm.value, []).append(measured)
                s = measured.summary
                print(
                    f"{prefix + arm.value:>13} {source.describe():<42} Sharpe {s.sharpe:+7.2f}  "
                    f"return {s.total_return:+7.2%}  max dd {s.max_drawdown:6.2%}  "
                    f"promotions {s.promotions:2d}  halts {s.halts:2d}  "
                    f"{measured.wall_s_per_day:5.2f} s/day  "
                    f"[{time.monotonic() - started:,.0f} s]" + ("  (from --progress)" * earlier),
                    file=sys.stderr,
                    flush=True,
                )
    figures: dict[str, Any] = {
        "benchmark": "closed_loop",
        "seeds": len(sources[""]) if args.data is None else 0,
        "data": str(args.data) if args.data is not None else None,
        "days": args.days,
        "plan_every_minutes": args.plan_every_minutes,
    }
    for name, runs in results.items():
        figures[name] = arm_figures(runs)
    closed, static = results["closed"], results["static"]
    figures["sharpe_p_value"] = paired_p_value(
        [r.summary.sharpe for r in closed], [r.summary.sharpe for r in static]
    )
    figures["drawdown_p_value"] = paired_p_value(
        [r.summary.max_drawdown for r in closed], [r.summary.max_drawdown for r in static]
    )
    figures["wall_s_per_day"] = round(float(np.mean([r.wall_s_per_day for r in closed])), 3)
    goals: dict[str, bool | None] = {
        "sharpe_beats_static": figures["closed"]["sharpe_mean"] > figures["static"]["sharpe_mean"]
        and (figures["sharpe_p_value"] or 1.0) < SIGNIFICANCE,
        "drawdown_beats_static": figures["closed"]["max_drawdown_mean"]
        < figures["static"]["max_drawdown_mean"]
        and (figures["drawdown_p_value"] or 1.0) < SIGNIFICANCE,
        "wall_s_per_day": figures["wall_s_per_day"] <= WALL_S_PER_DAY_GOAL,
    }
    if "noise_closed" in results:
        gap = figures["noise_closed"]["return_mean"] - figures["noise_static"]["return_mean"]
        figures["noise_return_gap"] = gap
        goals["noise_nothing_promoted"] = figures["noise_closed"]["promotions"] == 0
        goals["noise_return_within_0.5pp"] = abs(gap) <= NOISE_RETURN_GAP_GOAL
    figures["goals_met"] = goals
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the synthetic market")
    parser.add_argument("--days", type=float, default=30.0, help="market days replayed per run")
    parser.add_argument("--plan-every-minutes", type=float, default=240.0)
    parser.add_argument("--data", type=Path, default=None, help="a file of bars instead")
    parser.add_argument("--no-noise", action="store_true", help="leave out the noise arms")
    parser.add_argument(
        "--progress", type=Path, default=None, help="JSON lines of the arms measured (resumable)"
    )
    emit(asyncio.run(main(parser.parse_args())))
