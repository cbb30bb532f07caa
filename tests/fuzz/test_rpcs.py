"""Fuzzes every RPC of the mesh with requests generated from its protobuf descriptors.

The whole mesh (every App of ``qtmesh.runtime.catalog``) runs in this process, once for the
module (tests/helpers/fuzz/mesh.py), and the tests call it over plain synchronous gRPC channels
with generic calls (tests/helpers/fuzz/calls.py). There is one test per unary-unary and
unary-stream method of every service of ``qtmesh.api`` (the health and reflection services
aside); it sends, to every server that hosts the service:

* the empty request, then ``QTMESH_FUZZ_EXAMPLES`` requests hypothesis draws from the request's
  descriptor (tests/helpers/fuzz/strategies.py: the edge values of every field type, unknown enum
  numbers, valid and out-of-range Timestamps and Durations, nested messages, oneofs, maps);
* a quarter as many raw bodies (random bytes, broken encodings) through a bytes-passthrough
  serializer.

The rules every server must keep:

1. No request is answered UNKNOWN, INTERNAL or DEADLINE_EXCEEDED. A request a server cannot
   serve gets a status that says why (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
   RESOURCE_EXHAUSTED, ...), and a call with one response gets it within 20 s. A server stream is
   read for two messages or 0.3 s, then cancelled: a stream still open then passes (``OPEN``),
   only a status the server ended it with counts. Streams are watched a few at a time.
2. After the RPC's requests, the server still reports SERVING (grpc.health.v1: the server and
   the service), still lists the service through reflection, and still answers a normal request
   of the service (:data:`PROBES`) with OK.

A failing test names, for each bad status and each cause (the exception the server logged, else
the status details), how often it came back, the smallest request that got it (the smallest
sent, then minimized by clearing fields and dropping elements while the same status and cause
come back) and the error the server logged. Hypothesis does not shrink: every example is a real
call of up to 20 s, and the minimization does that job within a budget of calls and seconds. A
request that keeps a server busy past the deadline is a finding, not a hang: after two
DEADLINE_EXCEEDED an RPC gets no more requests (its test fails anyway), and every call has a
deadline.

The servers keep their state from test to test, as a mesh in production does: requests that
mutate (Advance, IngestBars, ExecuteAction, GeneratePlan ...) change what later ones see.

Environment:

``QTMESH_FUZZ_EXAMPLES``
    generated requests per RPC and server (default 30, which keeps the module to about three
    minutes on two cores); setting it also makes the examples random (by default they are
    derandomized, the same on every run; ``--hypothesis-seed`` then picks them).
``QTMESH_FUZZ_REPORT``
    path of a JSON report: per server, service and method, the count of each status code seen,
    the seconds taken and the failures.

Run ``pytest tests/fuzz`` (part of ``make test``), or a longer run with
``QTMESH_FUZZ_EXAMPLES=500 QTMESH_FUZZ_REPORT=fuzz.json pytest tests/fuzz``. A per-service
summary of the codes seen is printed at the end of the session.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import importlib
import os
import pkgutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health
from hypothesis import HealthCheck, Phase, example, given, settings

import qtmesh.api
from qtmesh.runtime import catalog, reflection
from tests.helpers.fuzz import strategies
from tests.helpers.fuzz.calls import (
    Outcome,
    Rpc,
    call,
    health_status,
    minimize,
    normalized,
    reflected_services,
)
from tests.helpers.fuzz.mesh import InProcessMesh, LoggedError, ServerLog
from tests.helpers.fuzz.report import REPORT_KEY, FuzzReport

EXAMPLES = int(os.environ.get("QTMESH_FUZZ_EXAMPLES", "30"))
RAW_BODIES = max(4, EXAMPLES // 4)
DERANDOMIZE = "QTMESH_FUZZ_EXAMPLES" not in os.environ
FORBIDDEN = frozenset({"UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED"})
SKIPPED_SERVICES = frozenset({health.SERVICE_NAME, *reflection.SERVICE_NAMES})
MAX_DEADLINES = 2  # DEADLINE_EXCEEDED answers after which an RPC gets no more requests
CONCURRENT_STREAMS = 4
MINIMIZE_CALLS = 60  # calls spent minimizing the request of one failure, at most
MINIMIZE_SECONDS = 20.0  # and seconds spent minimizing the requests of one RPC and server
MINIMIZED_FAILURES = 4  # failures of one RPC and server that are minimized; the rest are not
LOG_LINES = 25  # lines of the server's logged error shown per failure
HYPOTHESIS = settings(
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    # No shrinking: the test never fails inside hypothesis (see the module docstring).
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ),
)
# A last resort only (every call has its own deadline): pytest-timeout's default is 120 s.
TEST_TIMEOUT_S = 300 + 10 * (EXAMPLES + RAW_BODIES)

# A normal request per service, in text format, that a working server answers OK: read-only
# where the service has a read, otherwise one that changes nothing shared.
PROBES: dict[str, tuple[str, str]] = {
    "qtmesh.api.agent.v1.AgentService": ("Recommend", ""),
    "qtmesh.api.alpha.v1.AlphaReportingService": ("ListReports", ""),
    "qtmesh.api.ceo.v1.CeoService": ("GetMode", ""),
    "qtmesh.api.federation.v1.FederationService": ("ListPlans", ""),
    "qtmesh.api.market.v1.MarketService": ("ListSymbols", ""),
    "qtmesh.api.memory.v1.MemoryService": ("Summarize", ""),
    "qtmesh.api.meta.v1.MetaService": ("GetParameters", ""),
    "qtmesh.api.metaoptimizer.v1.MetaOptimizerService": ("GetPulse", ""),
    "qtmesh.api.risk.v1.RiskService": ("GetLimits", ""),
    "qtmesh.api.sesa.v1.SesaService": (
        "Mutate",
        'parents { id: "probe" family: STRATEGY_FAMILY_MA_CROSSOVER } '
        "operator: MUTATION_OPERATOR_PARAMETER_TWEAK count: 1 magnitude: 0.1 rate: 0.5 seed: 1",
    ),
    "qtmesh.api.strategy.v1.StrategyOfficerService": ("ListStrategies", ""),
    "qtmesh.api.worldmodel.v1.WorldModelService": ("DetectRegime", "market: true"),
}
# Reads whose answers hold the names the servers know (symbols, sectors, strategy ids ...) and
# their times (the market clock ...): drawn for string fields and plausible Timestamps, so
# requests get past lookups too.
KNOWN_VALUE_SOURCES: tuple[tuple[str, str], ...] = (
    *((service, method) for service, (method, _request) in PROBES.items()),
    ("qtmesh.api.market.v1.MarketService", "GetFleet"),
    ("qtmesh.api.market.v1.MarketService", "Snapshot"),
)
MAX_KNOWN = 500


def api_services() -> dict[str, ServiceDescriptor]:
    """Every service of the generated ``*_pb2`` modules under qtmesh/api, by full name."""
    found: dict[str, ServiceDescriptor] = {}
    for module in pkgutil.walk_packages(qtmesh.api.__path__, "qtmesh.api."):
        if module.name.endswith("_pb2"):
            file = importlib.import_module(module.name).DESCRIPTOR
            found.update({s.full_name: s for s in file.services_by_name.values()})
    return dict(sorted(found.items()))


SERVICES = api_services()
RPCS = [
    Rpc(method)
    for name, service in SERVICES.items()
    if name not in SKIPPED_SERVICES
    for method in service.methods
    if not method.client_streaming
]


def rpc_of(service: str, method: str) -> Rpc:
    return Rpc(SERVICES[service].methods_by_name[method])


def probe_body(service: str) -> tuple[Rpc, bytes]:
    method, text = PROBES[service]
    rpc = rpc_of(service, method)
    return rpc, text_format.Parse(text, rpc.request_class()).SerializeToString()


# -- the mesh -------------------------------------------------------------------------------


@dataclasses.dataclass
class Fuzzed:
    """The running mesh, a channel to each server, the report, and the names and times the
    servers know (drawn for string fields and plausible Timestamps)."""

    mesh: InProcessMesh
    channels: dict[str, grpc.Channel]
    report: FuzzReport
    names: list[str] = dataclasses.field(default_factory=list)
    times: list[int] = dataclasses.field(default_factory=list)

    def hosts(self, service: str) -> list[str]:
        """The servers hosting ``service``, in catalog order."""
        servers = self.mesh.servers
        return [n for n in catalog.names() if n in servers and service in servers[n].service_names]


def harvest(message: Message, names: set[str], times: set[int]) -> None:
    """Adds every short string of ``message`` (map keys and nested messages included) to
    ``names`` and the seconds of every Timestamp to ``times``."""

    def add(value: object) -> None:
        if isinstance(value, str) and 0 < len(value) <= 64:
            names.add(value)
        elif isinstance(value, Timestamp):
            times.add(value.seconds)
        elif isinstance(value, Message):
            harvest(value, names, times)

    for field, value in message.ListFields():
        if strategies.is_map(field):
            for key, item in value.items():
                add(key)
                add(item)
        elif field.is_repeated:
            for item in value:
                add(item)
        else:
            add(value)


def known_values(fuzzed: Fuzzed) -> tuple[list[str], list[int]]:
    """The names and Timestamp seconds in the answers to :data:`KNOWN_VALUE_SOURCES`."""
    names: set[str] = set()
    times: set[int] = set()
    for service, method in KNOWN_VALUE_SOURCES:
        rpc = rpc_of(service, method)
        for server in fuzzed.hosts(service)[:1]:
            unary = fuzzed.channels[server].unary_unary(
                rpc.path,
                request_serializer=rpc.request_class.SerializeToString,
                response_deserializer=rpc.response_class.FromString,
            )
            try:
                harvest(unary(rpc.request_class(), timeout=20), names, times)
            except grpc.RpcError:
                continue  # a read that fails here fails its own probe later
    return sorted(names)[:MAX_KNOWN], sorted(times)[:MAX_KNOWN]


@pytest.fixture(scope="module")
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    """The whole mesh for the module; at the end, stops it and writes the report."""
    report = FuzzReport(examples=EXAMPLES, raw_bodies=RAW_BODIES)
    request.config.stash[REPORT_KEY] = report
    mesh = InProcessMesh(tmp_path_factory.mktemp("fuzz-mesh"))
    started = time.monotonic()
    mesh.start()
    channels = {name: grpc.insecure_channel(address) for name, address in mesh.addresses.items()}
    try:
        result = Fuzzed(mesh, channels, report)
        result.names, result.times = known_values(result)
        yield result
    finally:
        for channel in channels.values():
            channel.close()
        mesh.stop()
        report.mesh_seconds = time.monotonic() - started
        if path := os.environ.get("QTMESH_FUZZ_REPORT"):
            report.write(Path(path))


@pytest.fixture(autouse=True)
def _quiet_logs(fuzzed: Fuzzed) -> None:
    """Overrides tests/conftest.py's, which resets structlog before every test: the mesh's log
    capture (tests/helpers/fuzz/mesh.py) stays installed."""
    fuzzed.mesh.log.install()


# -- fuzzing one RPC on one server ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sent:
    outcome: Outcome
    request: Message | bytes  # a generated message, or a raw body

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def body(self) -> bytes:
        return self.request if isinstance(self.request, bytes) else self.request.SerializeToString()


class Fuzzing:
    """Sends requests of one RPC to one server and keeps how each call ended. Calls with one
    response are made one after the other; streams, a few at a time."""

    def __init__(self, server: str, channel: grpc.Channel, rpc: Rpc, log: ServerLog) -> None:
        self.server = server
        self.channel = channel
        self.rpc = rpc
        self.log = log
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._streams: list[concurrent.futures.Future[None]] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(CONCURRENT_STREAMS)
        self._minimize_until = 0.0

    @property
    def deadlines(self) -> int:
        with self._lock:
            return sum(s.outcome.code == "DEADLINE_EXCEEDED" for s in self.sent)

    def send(self, request: Message | bytes) -> None:
        if self.deadlines >= MAX_DEADLINES:
            return  # the RPC fails already; more requests would only take deadlines more
        if self.rpc.streaming:
            self._streams.append(self._pool.submit(self._send, request))
        else:
            self._send(request)

    def _send(self, request: Message | bytes) -> None:
        body = request if isinstance(request, bytes) else request.SerializeToString()
        outcome = call(self.channel, self.rpc, body)
        with self._lock:
            self.sent.append(Sent(outcome, request))

    def finish(self) -> None:
        """Waits for the streams still being watched."""
        for stream in self._streams:
            stream.result()
        self._pool.shutdown()

    def cause(self, outcome: Outcome) -> tuple[str, list[LoggedError]]:
        """What the server logged for ``outcome``, and its cause: the signature of the logged
        exception, else the status details without numbers and ids."""
        # A server logs before it answers: what it logged without a request id during the call
        # is the call's (or, for streams watched side by side, maybe a neighbour's).
        logged = self.log.errors(
            request_id=outcome.request_id,
            since=outcome.started,
            until=outcome.started + outcome.seconds,
        )
        signature = next((e.signature for e in logged if e.signature), None)
        return signature or normalized(outcome.details), logged

    def failures(self) -> list[str]:
        """One description per bad status code and cause, the smallest request first minimized."""
        groups: dict[tuple[str, str], list[tuple[Sent, list[LoggedError]]]] = {}
        for sent in self.sent:
            if sent.outcome.code in FORBIDDEN:
                cause, logged = self.cause(sent.outcome)
                groups.setdefault((sent.outcome.code, cause), []).append((sent, logged))
        described = []
        self._minimize_until = time.monotonic() + MINIMIZE_SECONDS
        for index, ((code, cause), seen) in enumerate(sorted(groups.items())):
            smallest, logged = min(seen, key=lambda pair: pair[0].size)
            request = smallest.request
            if (
                isinstance(request, Message)
                and code != "DEADLINE_EXCEEDED"
                and index < MINIMIZED_FAILURES
            ):
                fails = functools.partial(self._fails, code=code, cause=cause)
                request = minimize(request, fails, budget=MINIMIZE_CALLS)
            described.append(self._describe(code, cause, len(seen), smallest, request, logged))
        return described

    def _fails(self, request: Message, code: str, cause: str) -> bool:
        if time.monotonic() > self._minimize_until:
            return False  # out of time: the request stays as small as it got
        outcome = call(self.channel, self.rpc, request.SerializeToString())
        return outcome.code == code and self.cause(outcome)[0] == cause

    def _describe(
        self,
        code: str,
        cause: str,
        count: int,
        smallest: Sent,
        request: Message | bytes,
        logged: list[LoggedError],
    ) -> str:
        lines = [
            f"{self.server} {self.rpc.path}: {code} x{count} ({cause})",
            f"  details: {smallest.outcome.details[:300]!r} after {smallest.outcome.seconds:.1f} s",
            f"  minimal request: {shown(request)}",
        ]
        for text in list(dict.fromkeys(tuple(e.text.splitlines()) for e in logged))[:2]:
            lines.append("  server log:")
            lines.extend(f"    | {line}" for line in text[-LOG_LINES:])
        return "\n".join(lines)


def headline(failure: str) -> str:
    """A failure's first line and its minimal request, for the report."""
    lines = failure.splitlines()
    request = [line.strip() for line in lines if line.startswith("  minimal request:")]
    return " ".join([lines[0], *request])


def shown(request: Message | bytes, limit: int = 600) -> str:
    if isinstance(request, bytes):
        return f"raw body {request[:120].hex()} ({len(request)} bytes)"
    text = text_format.MessageToString(request, as_one_line=True) or "(empty)"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def fuzz(fuzzing: Fuzzing, known: Fuzzed) -> None:
    """The empty request, EXAMPLES generated ones and RAW_BODIES raw bodies."""
    descriptor = fuzzing.rpc.method.input_type

    @settings(HYPOTHESIS, max_examples=EXAMPLES)
    @given(request=strategies.messages(descriptor, strings=known.names, times=known.times))
    @example(request=fuzzing.rpc.request_class())
    def generated(request: Message) -> None:
        fuzzing.send(request)

    @settings(HYPOTHESIS, max_examples=RAW_BODIES)
    @given(body=strategies.malformed_bodies(descriptor))
    def raw(body: bytes) -> None:
        fuzzing.send(body)

    try:
        generated()
        raw()
    finally:
        fuzzing.finish()


def still_working(fuzzed: Fuzzed, server: str, service: str) -> list[str]:
    """What is wrong with ``server``: its health, its reflection, its answer to the probe."""
    channel = fuzzed.channels[server]
    problems = [
        f"{server}: health of {name or 'the server'} is {status}"
        for name in ("", service)
        if (status := health_status(channel, name)) != "SERVING"
    ]
    try:
        listed = reflected_services(channel)
    except grpc.RpcError as error:
        problems.append(f"{server}: reflection failed: {error}")
    else:
        if service not in listed:
            problems.append(f"{server}: reflection no longer lists {service}: {listed}")
    if service in PROBES:
        rpc, body = probe_body(service)
        outcome = call(channel, rpc, body)
        if outcome.code != "OK":
            problems.append(
                f"{server}: the probe {rpc.path} ({PROBES[service][1] or 'empty'}) "
                f"is answered {outcome.code}: {outcome.details[:300]!r}"
            )
    return problems


# -- the tests ------------------------------------------------------------------------------


def test_every_service_the_mesh_hosts_is_fuzzed(fuzzed: Fuzzed) -> None:
    """Every service a server hosts has a descriptor in qtmesh.api (so its RPCs are among the
    tests), is listed by the server's reflection, and answers its probe."""
    fuzzed_services = {rpc.service for rpc in RPCS}
    problems = []
    for name, server in fuzzed.mesh.servers.items():
        listed = set(reflected_services(fuzzed.channels[name])) - SKIPPED_SERVICES
        if listed != set(server.service_names):
            hosted = server.service_names
            problems.append(f"{name}: reflection lists {sorted(listed)}, not {hosted}")
        for service in server.service_names:
            if service not in fuzzed_services:
                problems.append(f"{name} hosts {service}, which no *_pb2 module of qtmesh.api has")
            if service not in PROBES:
                problems.append(f"{name}: {service} has no probe: add one to PROBES")
            problems += still_working(fuzzed, name, service)
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(TEST_TIMEOUT_S)
@pytest.mark.parametrize("rpc", RPCS, ids=str)
def test_rpc_answers_every_request_with_a_precise_status(fuzzed: Fuzzed, rpc: Rpc) -> None:
    hosts = fuzzed.hosts(rpc.service)
    if not hosts:
        pytest.skip(f"no server of the catalog hosts {rpc.service}")
    problems: list[str] = []
    for server in hosts:
        before = still_working(fuzzed, server, rpc.service)
        if before:
            problems += [f"before fuzzing (an earlier test broke it?): {p}" for p in before]
            continue
        started = time.monotonic()
        fuzzing = Fuzzing(server, fuzzed.channels[server], rpc, fuzzed.mesh.log)
        fuzz(fuzzing, fuzzed)
        failures = fuzzing.failures()
        if fuzzing.deadlines >= MAX_DEADLINES:
            failures.append(
                f"{server} {rpc.path}: stopped after {MAX_DEADLINES} DEADLINE_EXCEEDED; "
                f"{len(fuzzing.sent)} requests sent"
            )
        after = still_working(fuzzed, server, rpc.service)
        method = fuzzed.report.method(server, rpc.service, rpc.method.name)
        method.codes.update(collections.Counter(s.outcome.code for s in fuzzing.sent))
        method.seconds = time.monotonic() - started
        method.failures = [headline(f) for f in failures] + after
        problems += failures + after
    assert not problems, f"{rpc.path}:\n\n" + "\n\n".join(problems)
