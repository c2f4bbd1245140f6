"""OpenTelemetry tracing, optional (`pip install 'deskbell[otel]'`) and off unless configured.

Spans: one SERVER span per ingest request (continuing the caller's `traceparent` if it sent
one) and one CONSUMER span per delivery attempt. An attempt runs later, maybe in another
process, so the ingest span's context is stored with the request as a W3C `traceparent`
string and each attempt's span is its child: the request and every attempt of every
delivery show as one trace.

On when the standard variables ask for it: OTEL_TRACES_EXPORTER (`otlp`, `console`) or an
OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT; OTEL_SDK_DISABLED=true wins. Without the extra, or
unconfigured, `Tracing.off()` is used and every span is a no-op that costs a branch.
The provider belongs to the runtime, not the process-global one, so tests can build their
own with an in-memory exporter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger(__name__)
_ENABLING = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def configured(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return any(env.get(name) for name in _ENABLING)


class Tracing:
    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer: Tracer | None = provider.get_tracer("deskbell") if provider else None

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Tracing:
        if not configured(env):
            return cls.off()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        except ImportError:
            log.warning("tracing_unavailable", hint="OTEL_* is set; pip install 'deskbell[otel]'")
            return cls.off()
        provider = TracerProvider(
            resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "deskbell")})
        )
        exporter: Any
        if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("tracing_on", exporter=type(exporter).__name__)
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextmanager
    def ingest_span(self, headers: Mapping[str, str], route: str) -> Iterator[str | None]:
        """A SERVER span around an ingest request; yields its `traceparent` to store."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        propagator = TraceContextTextMapPropagator()
        parent = propagator.extract(dict(headers))
        with self._tracer.start_as_current_span(
            f"POST {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": route},
        ) as span:
            carrier: dict[str, str] = {}
            propagator.inject(carrier, context=trace.set_span_in_context(span))
            yield carrier.get("traceparent")

    @contextmanager
    def attempt_span(
        self, traceparent: str | None, attributes: Mapping[str, str | int]
    ) -> Iterator[Span | None]:
        """A CONSUMER span for one delivery attempt, a child of the stored ingest span."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = (
            TraceContextTextMapPropagator().extract({"traceparent": traceparent})
            if traceparent
            else None
        )
        with self._tracer.start_as_current_span(
            f"deliver {attributes.get('deskbell.channel', '')}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=dict(attributes),
        ) as span:
            yield span

    def shutdown(self) -> None:
        """Flush what is batched; called when the runtime closes."""
        if self.provider is not None:
            self.provider.shutdown()
