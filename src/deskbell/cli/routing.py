"""`deskbell routes test`: where a request would go, and which route sends it there.

The same answer as `POST /v1/routes/test` (routing/explain.py over the router ingest builds),
from a config file: `--config F`, else the file the server reads at start (DESKBELL_CONFIG,
./deskbell.yaml, or the built-in demo). Nothing is stored or sent, so no database is needed.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deskbell.cli.errors import fail, read_settings

if TYPE_CHECKING:
    from deskbell.config.schema import DeskbellConfig
    from deskbell.routing.explain import Explanation

routes_app = typer.Typer(no_args_is_help=True, help="Try the routing of a config.")

TOP_LEVEL = ("description", "conversation_url", "language")
NESTED = ("customer", "metadata")


@routes_app.command("test")
def routes_test(
    topic: Annotated[str, typer.Option(help="the request's topic")],
    field: Annotated[
        list[str] | None,
        typer.Option(
            help="another field as PATH=VALUE (language=es, customer.email=a@b.c, "
            "metadata.seats=60: a metadata value is read as JSON when it is a number, true "
            "or false or a quoted string, else as text); repeatable",
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="the request's description")] = "(dry run)",
    config: Annotated[
        Path | None, typer.Option(help="config file (default: what `deskbell serve` reads)")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="route at this ISO 8601 time with a zone, for time windows"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
) -> None:
    """Which channels a request would go to, and which route matched (nothing is sent)."""
    from pydantic import ValidationError

    from deskbell.clock import SystemClock
    from deskbell.config.load import build_router
    from deskbell.errors import DeskbellError
    from deskbell.models import AssistanceRequestIn
    from deskbell.routing.explain import explain

    fields: dict[str, Any] = {"topic": topic, "description": description}
    for item in field or []:
        _put(fields, item)
    try:
        request = AssistanceRequestIn.model_validate(fields)
    except ValidationError as exc:
        fail("invalid request: " + "; ".join(_error(e) for e in exc.errors()))
    when = _time(at) if at else SystemClock().now()
    try:
        loaded, source = _config(config)
        answer = explain(build_router(loaded), request, lambda: when)
    except DeskbellError as exc:
        fail(str(exc))
    if as_json:
        data = {"topic": request.topic, "at": when.isoformat(), "config": source, **answer.data()}
        typer.echo(json.dumps(data, indent=2))
        return
    _print(request.topic, when, source, answer)


def _put(fields: dict[str, Any], item: str) -> None:
    """`language=es` -> fields["language"]; `metadata.seats=60` -> fields["metadata"]["seats"]."""
    path, equals, value = item.partition("=")
    head, dot, key = path.strip().partition(".")
    if not equals or not head:
        fail(f"--field {item!r}: write PATH=VALUE, e.g. language=es or metadata.plan=gold")
    if head == "topic":
        fail("--field topic=...: give the topic with --topic")
    if dot and head in NESTED and key:
        fields.setdefault(head, {})[key] = _metadata(value) if head == "metadata" else value
    elif not dot and head in TOP_LEVEL:
        fields[head] = value
    else:
        known = ", ".join([*TOP_LEVEL, *(f"{n}.<key>" for n in NESTED)])
        fail(f"--field {item!r}: no request has the field {path!r} (fields: {known})")


def _metadata(value: str) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, str | int | float | bool) else value


def _error(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {str(error['msg']).removeprefix('Value error, ')}"


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--at {text!r}: not an ISO 8601 time, e.g. 2026-03-30T09:00:00+02:00")
    if when.tzinfo is None:
        fail(f"--at {text!r}: give its zone (Z or an offset such as +02:00)")
    return when


def _config(path: Path | None) -> tuple[DeskbellConfig, str]:
    """The file given, else the one the server reads at start (DESKBELL_CONFIG, then
    ./deskbell.yaml), else the built-in demo."""
    from deskbell.channels import build_registry
    from deskbell.config.load import DEMO_CONFIG_YAML, load_config, parse_config

    registry = build_registry()
    if path is not None:
        return load_config(path, registry), str(path)
    settings = read_settings()
    if settings.config.exists() or "config" in settings.model_fields_set:
        return load_config(settings.config, registry), str(settings.config)
    return parse_config(DEMO_CONFIG_YAML, registry), "built-in demo"


def _print(topic: str, when: datetime, source: str, answer: Explanation) -> None:
    typer.echo(f"topic {topic} at {when.isoformat()} ({source})")
    if answer.routes:
        rows = [("ROUTE", "MATCH", "WHEN", "CHANNELS")]
        for view in answer.routes:
            window = view.route.window
            rows.append(
                (
                    f"routes[{view.index}]" + (" (continue)" if view.route.continue_ else ""),
                    view.describe(),
                    window.describe() if window is not None else "-",
                    ", ".join(view.channels()),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if answer.rejected:
        typer.echo("no route matched and default is reject: ingest answers 422 unknown_topic")
    elif answer.default:
        typer.echo(f"no route matched: the default -> {', '.join(answer.channels())}")
    else:
        typer.echo(f"channels: {', '.join(answer.channels())}")
