"""Traces with OpenTelemetry, across every hop of the mesh.

Rules:

- A server traces when it has a tracer provider: one built from its settings when
  ``otlp_endpoint`` is set (:func:`otlp_tracer_provider`, spans exported in batches to that
  collector), or one a caller passes in (a test's in-memory exporter). Without one, no tracing
  interceptor is installed, so an untraced call costs nothing for tracing. None is exported by
  default.
- The server runs OpenTelemetry's grpc aio interceptor before the mesh's own, so a call's span
  is current while it is served: the calls it makes are its children (the channels the runtime
  opens for a service carry the trace context on), and its log lines carry its trace id.
- Work a service starts on its own (the federation's planning cycle on a timer) opens a span of
  its own with the service's tracer (``Context.tracer``), so one GAP cycle is one trace.
- Health checks are not traced: probes would be most of the traces.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

# The SDK, the exporter and the instrumentation (70 ms of imports) load only in a process that
# traces.

__all__ = [
    "client_interceptors",
    "otlp_tracer_provider",
    "server_interceptor",
    "shutdown",
    "tracer_of",
]


def otlp_tracer_provider(
    *, service: str, endpoint: str, sample_ratio: float
) -> trace.TracerProvider:
    """A provider that exports ``service``'s spans to the OTLP/gRPC collector at ``endpoint``
    (``http://`` for plaintext), sampling ``sample_ratio`` of the traces this process starts
    and following the caller's decision for the others."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "qtmesh"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def server_interceptor(provider: trace.TracerProvider) -> Any:
    """OpenTelemetry's grpc aio server interceptor, for every method but health checks."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider,
        filter_=filters.negate(filters.health_check()),
    )


def client_interceptors(provider: trace.TracerProvider) -> list[Any]:
    """OpenTelemetry's grpc aio client interceptors (one per call arity): each call a span,
    its trace context sent on."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=provider))  # type: ignore[no-untyped-call]


def tracer_of(provider: trace.TracerProvider | None, name: str) -> trace.Tracer:
    """The tracer ``name`` of ``provider``; without one, a tracer whose spans cost nothing."""
    return provider.get_tracer(name) if provider is not None else trace.NoOpTracer()


def shutdown(provider: trace.TracerProvider | None) -> None:
    """Exports what is buffered and stops ``provider`` (an SDK provider; others are left)."""
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()
