"""Readiness says which check fails; the request id comes back in every answer; tracing links
the ingest span to each delivery attempt's span (SDK in-memory exporter)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from deskbell.config.schema import DeskbellConfig
from deskbell.tracing import Tracing, configured
from deskbell.wiring import Runtime
from tests.conftest import running_app, statuses, wait_for_request
from tests.process import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929c0e0e4736"


async def test_ready_with_database_and_config(make_runtime: Callable[..., Runtime]) -> None:
    async with running_app(make_runtime()) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ready"


async def test_not_ready_while_the_database_is_unreachable(
    make_runtime: Callable[..., Runtime],
) -> None:
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    runtime = make_runtime(url=url)
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["details"] == {"database": "unreachable"}


async def test_not_ready_without_a_valid_config(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    empty = DeskbellConfig.model_validate({"channels": {}, "routes": []})
    runtime.active = dataclasses.replace(runtime.active, config=empty, channels={})
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "config_not_loaded"
    assert answer.json()["error"]["details"] == {"config": "no valid config loaded"}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-1.2:3", True), ("has space", False), ("x" * 129, False), ("<b>x</b>", False)],
)
async def test_request_id_is_kept_only_when_safe(
    make_runtime: Callable[..., Runtime], sent: str, kept: bool
) -> None:
    async with running_app(make_runtime(), start_workers=False) as client:
        answer = await client.get("/healthz", headers={"X-Request-ID": sent})
        made = await client.get("/healthz")
    returned = answer.headers["X-Request-ID"]
    assert (returned == sent) is kept
    assert 1 <= len(returned) <= 128
    assert made.headers["X-Request-ID"] != returned


def test_tracing_is_off_unless_otel_variables_say_so() -> None:
    assert not configured({})
    assert configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not configured({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert not Tracing.from_env({}).enabled


async def test_ingest_and_attempt_spans_are_one_trace(
    make_runtime: Callable[..., Runtime],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runtime = make_runtime()
    runtime.tracing = Tracing(provider)
    assert runtime.workers is not None
    runtime.workers.tracing = runtime.tracing
    caller = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    async with running_app(runtime) as client:
        answer = await client.post(
            "/v1/assistance-requests",
            json={"topic": "sales", "description": "traced"},
            headers={"traceparent": caller},
        )
        assert answer.status_code == 202
        await wait_for_request(
            runtime, answer.json()["id"], lambda s: set(statuses(s).values()) == {"sent"}
        )
    spans = exporter.get_finished_spans()
    (ingest,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (attempt,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert ingest.context is not None
    assert attempt.context is not None
    assert f"{ingest.context.trace_id:032x}" == TRACE_ID  # continues the caller's trace
    assert attempt.context.trace_id == ingest.context.trace_id
    assert attempt.parent is not None
    assert attempt.parent.span_id == ingest.context.span_id
    assert attempt.attributes is not None
    assert attempt.attributes["deskbell.channel"] == "console"
    assert attempt.attributes["deskbell.status"] == "sent"
