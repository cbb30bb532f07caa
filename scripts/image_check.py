"""The containers half of `make image-check` (scripts/image_check.sh): the market, SESA and the
federation from ``--image``, each a container on loopback (``--network host``) on a free port.
Waits for each one's health (a grpc.health.v1 Watch that waits for the server), asks the
federation for one plan (SESA recommends its first evolution), then stops them with SIGTERM and
checks that each exited 0. Prints what it did and how long it took; exits non-zero on failure,
with the failing container's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from federation.client import FederationClient
from qtmesh.base.contract import ActionType
from qtmesh.runtime.channels import open_channel

START_TIMEOUT_S = 180.0
DEAD = "127.0.0.1:1"  # services these three never need to reach in this check


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def containers(ports: dict[str, int]) -> dict[str, dict[str, str]]:
    def at(name: str) -> str:
        return f"127.0.0.1:{ports[name]}"

    return {
        "market": {"QTMESH_MARKET_SYNTHETIC_DAYS": "8"},
        "sesa": {
            "QTMESH_ADDRESSES": f"market={at('market')},meta={DEAD}",
            "QTMESH_SESA_RECORD_TO_MEMORY": "false",
            "QTMESH_SESA_RECALL_FROM_MEMORY": "false",
            "QTMESH_SESA_WORLD_MODEL_SCENARIOS": "false",
        },
        "federation": {
            "QTMESH_ADDRESSES": f"sesa={at('sesa')},market={at('market')}",
            "QTMESH_FEDERATION_AGENTS": "sesa",
            "QTMESH_FEDERATION_OWNERS": "RUN_EVOLUTION=sesa",
            "QTMESH_FEDERATION_GAP_UPDATE_INTERVAL_SECONDS": "0",
            "QTMESH_FEDERATION_RECORD_TO_MEMORY": "false",
        },
    }


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


async def serving(address: str) -> None:
    """Returns once the server at ``address`` reports SERVING (waiting for it to listen)."""
    async with open_channel(address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=START_TIMEOUT_S
        )
        async for answer in watch:
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                watch.cancel()
                return
    raise RuntimeError(f"{address} stopped before serving")


async def check(image: str) -> dict[str, object]:
    ports = {name: free_port() for name in ("market", "sesa", "federation")}
    started: dict[str, str] = {}
    figures: dict[str, object] = {"image": image}
    try:
        begin = time.perf_counter()
        for name, env in containers(ports).items():
            flags = [f"--env=QTMESH_PORT={ports[name]}"] + [
                f"--env={k}={v}" for k, v in env.items()
            ]
            started[name] = docker(
                "run",
                "--detach",
                "--network",
                "host",
                f"--name=qtmesh-check-{name}",
                *flags,
                image,
                "serve",
                name,
            ).strip()
            await serving(f"127.0.0.1:{ports[name]}")
            figures[f"{name}_serving_s"] = round(time.perf_counter() - begin, 2)
        async with open_channel(f"127.0.0.1:{ports['federation']}") as channel:
            plan = await FederationClient(channel).generate_plan()
        kinds = sorted({a.action_type.name for a in plan.actions})
        figures["plan"] = {"sequence": plan.sequence, "actions": kinds, "summary": plan.summary}
        if ActionType.RUN_EVOLUTION.name not in kinds:
            raise RuntimeError(f"the plan has no RUN_EVOLUTION from SESA: {plan.summary}")
    finally:
        codes = {}
        for name in reversed(list(started)):
            docker("stop", "--time", "30", started[name])
            codes[name] = int(docker("wait", started[name]).strip())
        figures["exit_codes"] = codes
        failed = [n for n, c in codes.items() if c != 0]
        for name in failed:
            print(f"--- {name} ---\n{docker('logs', started[name])}", file=sys.stderr)
        for container in started.values():
            docker("rm", container)
    if failed:
        raise RuntimeError(f"exited non-zero: {', '.join(failed)}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    args = parser.parse_args()
    try:
        print(json.dumps(asyncio.run(check(args.image))))
    except (RuntimeError, grpc.RpcError, subprocess.CalledProcessError) as exc:
        sys.exit(f"image-check failed: {exc}")


if __name__ == "__main__":
    main()
