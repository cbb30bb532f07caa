"""Prometheus metrics of one server: its RPCs, its service's own figures, and ``GET /metrics``.

Rules:

- Every server has its own registry, so several servers in one process (tests, an embedded
  mesh) never mix their figures; the scrape of a service shows that service only.
- RPC metrics carry the grpc-ecosystem (go-grpc-prometheus) names and labels, so dashboards
  and alerts written for any gRPC service work here: ``grpc_{server,client}_started_total``,
  ``grpc_{server,client}_handled_total`` with ``grpc_code``, and the
  ``grpc_{server,client}_handling_seconds`` histogram, each labelled ``grpc_service``,
  ``grpc_method`` and ``grpc_type``; ``grpc_code`` is spelt as there too (``OK``,
  ``InvalidArgument``, ``DeadlineExceeded``, ``Canceled``). The server interceptor records
  the server side; the channels the runtime opens for a service record the client side.
- A service adds its own (``qtmesh_*``) metrics through :class:`Metrics` in its build
  (``Context.metrics``). A gauge read at scrape time (``set_function``) runs on the HTTP
  server's thread: its function must only read.
- The endpoint is plain HTTP on the server's host, on the ``metrics_port`` setting; unset, there
  is none, and the figures are kept in memory only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Literal
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
)

from qtmesh.base.config import ConfigError

__all__ = ["GRPC_CODES", "LATENCY_BUCKETS", "Metrics", "RpcMetrics", "RpcType", "rpc_type"]

# A counter's `_created` series doubles every series for a figure Prometheus does not need.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

RpcType = Literal["UNARY", "CLIENT_STREAM", "SERVER_STREAM", "BIDI_STREAM"]
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip
"""Seconds: from a sub-millisecond call on loopback to a long evolution."""
_RPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")
# Status codes as the Go implementation names them (codes.Code.String()), which the ecosystem's
# dashboards and alerts match on; Python's enum spells them in capitals.
GRPC_CODES = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}


def rpc_type(*, request_streaming: bool, response_streaming: bool) -> RpcType:
    if request_streaming:
        return "BIDI_STREAM" if response_streaming else "CLIENT_STREAM"
    return "SERVER_STREAM" if response_streaming else "UNARY"


class _Rpc:
    """The series of one method, looked up once: a label lookup takes a lock per call."""

    __slots__ = ("_handled", "_handled_family", "_labels", "seconds", "started")

    def __init__(self, metrics: RpcMetrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self.started = metrics.started.labels(*labels)
        self.seconds = metrics.seconds.labels(*labels)
        self._handled: dict[str, Counter] = {}
        self._handled_family = metrics.handled

    def handled(self, code: str, seconds: float) -> None:
        """One call ended with ``code`` (a ``grpc.StatusCode`` name) after ``seconds``."""
        counter = self._handled.get(code)
        if counter is None:
            label = GRPC_CODES.get(code, code)
            counter = self._handled[code] = self._handled_family.labels(*self._labels, label)
        counter.inc()
        self.seconds.observe(seconds)


class RpcMetrics:
    """One side's (server or client) RPC metrics in ``registry``."""

    def __init__(self, registry: CollectorRegistry, side: Literal["server", "client"]) -> None:
        where = "received by the server" if side == "server" else "started by this process"
        self.started = Counter(
            f"grpc_{side}_started_total", f"RPCs {where}", _RPC_LABELS, registry=registry
        )
        self.handled = Counter(
            f"grpc_{side}_handled_total",
            f"RPCs {where} that completed, by status code",
            (*_RPC_LABELS, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            f"grpc_{side}_handling_seconds",
            f"Duration of RPCs {where}, to their status",
            _RPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._by_method: dict[tuple[str, RpcType], _Rpc] = {}

    def rpc(self, method: str, kind: RpcType) -> _Rpc:
        """The series of ``method`` (``/package.Service/Method``)."""
        found = self._by_method.get((method, kind))
        if found is None:
            service, _, name = method.lstrip("/").rpartition("/")
            found = self._by_method[(method, kind)] = _Rpc(self, (service, name, kind))
        return found


class Metrics:
    """A server's registry: its RPC metrics, the process's figures, and its service's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.server = RpcMetrics(self.registry, "server")
        self.client = RpcMetrics(self.registry, "client")
        self._http: _Endpoint | None = None

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def read(self, name: str, documentation: str, read: Callable[[], float]) -> Gauge:
        """A gauge whose value ``read()`` gives at every scrape (from the HTTP thread)."""
        gauge = self.gauge(name, documentation)
        gauge.set_function(read)
        return gauge

    def text(self) -> str:
        """What a scrape returns now, in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry).decode()

    def serve(self, host: str, port: int) -> str:
        """Serves ``GET /metrics`` on ``host:port`` (0: a free port) from a thread; returns the
        bound ``host:port``. Raises ConfigError naming ``metrics_port`` if it cannot listen."""
        try:
            server, thread = prometheus_client.start_http_server(
                port, addr=host, registry=self.registry
            )
        except OSError as exc:
            raise ConfigError("metrics_port", f"cannot listen on {host}:{port}: {exc}") from None
        self._http = _Endpoint(server, thread)
        bound = server.server_address[1]
        return f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"

    def close(self) -> None:
        """Stops serving ``/metrics``; safe to call twice or when never served."""
        if self._http is not None:
            self._http.close()
            self._http = None


class _Endpoint:
    __slots__ = ("_server", "_thread")

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
