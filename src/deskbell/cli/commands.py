"""The commands of `deskbell` (SPEC §6): a table of Typer commands, each a thin call into the
modules that do the work.

Startup is part of the interface: `deskbell version` and `--help` import only Typer and this
package, and every command imports what it needs (FastAPI, SQLAlchemy, uvicorn, the channels)
when it runs. Option types are enums declared in the cli modules for the same reason; a test
checks them against the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deskbell import __version__
from deskbell.cli.errors import fail, read_settings
from deskbell.cli.keys import keys_app
from deskbell.cli.ledger import requests_app, retry
from deskbell.cli.routing import routes_app

HELP = (
    "Receive chatbot hand-off requests, store them, and deliver them to Slack, email, "
    "webhooks and more, with retries.\n\n"
    "Start with `deskbell init` (a starter deskbell.yaml), check it with `deskbell config "
    "check deskbell.yaml`, then run `deskbell serve`. Settings are DESKBELL_* environment "
    "variables (README.md, Environment); the database is DESKBELL_DATABASE_URL, "
    "./deskbell.db by default."
)

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help=HELP, pretty_exceptions_enable=False
)
config_app = typer.Typer(no_args_is_help=True, help="Check routing config files.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
channels_app = typer.Typer(no_args_is_help=True, help="Try the channels of a config.")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(requests_app, name="requests")
app.add_typer(channels_app, name="channels")
app.add_typer(keys_app, name="apikey")
app.add_typer(routes_app, name="routes")


class Options:
    """The global options, read by `main` when a command fails."""

    debug = False


@app.callback()
def options(
    debug: Annotated[
        bool, typer.Option("--debug", help="on an error, show its traceback too")
    ] = False,
) -> None:
    Options.debug = debug


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [env DESKBELL_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env DESKBELL_PORT]")] = None,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="API only")] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow a non-loopback --host with auth off")
    ] = False,
    processes: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="server processes on one port [env DESKBELL_PROCESSES]"),
    ] = None,
) -> None:
    """Run the API and, unless --no-workers, the delivery workers (in --processes N
    processes sharing the port, each with its own workers)."""
    from deskbell.cli.serving import serve_here, serve_processes
    from deskbell.metrics import prepare_multiprocess
    from deskbell.observability import configure_logging

    settings = read_settings(host=host, port=port, processes=processes)
    configure_logging(settings.log_format, settings.log_level)
    prepare_multiprocess()
    run = serve_here if settings.processes == 1 else serve_processes
    run(settings, with_workers=not no_workers, insecure=insecure)


@app.command()
def worker() -> None:
    """Deliver only: claim due deliveries from the shared database and send them."""
    from deskbell.cli.serving import run_worker
    from deskbell.metrics import prepare_multiprocess
    from deskbell.observability import configure_logging

    settings = read_settings()
    configure_logging(settings.log_format, settings.log_level)
    prepare_multiprocess()
    run_worker(settings)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="where to write")] = Path("deskbell.yaml"),
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Write a starter deskbell.yaml (Slack, email and console channels)."""
    from importlib.resources import files

    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite")
    path.write_text(files("deskbell.config").joinpath("starter.yaml").read_text("utf-8"))
    typer.echo(
        f"wrote {path}; set SLACK_WEBHOOK_URL and SMTP_URL, then `deskbell config check {path}`"
    )


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="config file")]) -> None:
    """Validate a config file and print its routing table."""
    from deskbell.channels import build_registry
    from deskbell.config.load import load_config, routing_table
    from deskbell.errors import DeskbellError

    try:
        config = load_config(file, build_registry())
    except DeskbellError as exc:
        fail(str(exc), code=1)
    from deskbell.channels.kit.sample import check_channel_templates
    from deskbell.clock import SystemClock
    from deskbell.config.destinations import config_warnings

    checked, problems = check_channel_templates(config.channels, SystemClock().now())
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    for warning in config_warnings(config):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{file}: valid; {len(config.channels)} channels, {len(config.routes)} routes")
    rows = [("MATCH", "CHANNELS", "NOTES"), *routing_table(config)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    typer.echo(f"templates: {checked} rendered against the full and minimal sample requests")


@config_app.command("push")
def config_push(file: Annotated[Path, typer.Argument(help="config file")]) -> None:
    """Store FILE as the active config version (as `PUT /v1/config` does): every running
    node switches to it within seconds, no restart. Nothing is stored if it is invalid."""
    from deskbell.channels import build_registry
    from deskbell.cli.ledger import with_db
    from deskbell.errors import DeskbellError
    from deskbell.live import reload_file
    from deskbell.storage.config_versions import ConfigVersions
    from deskbell.storage.engine import Database

    settings = read_settings().model_copy(update={"config": file})  # counts as given

    async def push(db: Database) -> int | None:
        stored = await reload_file(ConfigVersions(db), settings, build_registry())
        return stored.number if stored is not None else None

    try:
        number = with_db(push)
    except DeskbellError as exc:
        fail(str(exc), code=1)
    if number is None:
        fail("the config was not stored (several writers at once): try again")
    typer.echo(f"{file}: active as config version {number}; running nodes follow within 5 s")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (also done at every start)."""
    import asyncio

    from deskbell.cli.serving import migrate
    from deskbell.observability import configure_logging

    settings = read_settings()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(migrate(settings))
    typer.echo("database is up to date")


@app.command()
def send(
    topic: Annotated[str, typer.Option(help="e.g. sales")],
    description: Annotated[str, typer.Option(help="what the customer needs")],
    url: Annotated[str, typer.Option(help="deskbell's base URL")] = "http://127.0.0.1:8000",
    conversation_url: Annotated[str | None, typer.Option(help="link back to the chat")] = None,
    key: Annotated[
        str | None, typer.Option(envvar="DESKBELL_API_KEY", help="an ingest API key")
    ] = None,
) -> None:
    """Post an assistance request to a running deskbell, as a chatbot would."""
    import httpx
    import orjson

    body: dict[str, Any] = {"topic": topic, "description": description}
    if conversation_url:
        body["conversation_url"] = conversation_url
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = httpx.post(
            f"{url.rstrip('/')}/v1/assistance-requests", json=body, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    typer.echo(orjson.dumps(answer.json(), option=orjson.OPT_INDENT_2).decode())
    if answer.status_code != 202:
        raise typer.Exit(1)


@channels_app.command("test")
def channels_test(
    name: Annotated[str, typer.Argument(help="a channel of the config")],
    config: Annotated[Path | None, typer.Option(help="config file [env DESKBELL_CONFIG]")] = None,
) -> None:
    """Send a sample notification through one channel now (no server needed); exit 1 unless
    it was sent."""
    import asyncio

    from deskbell.channels import build_registry
    from deskbell.channels.base import ChannelContext
    from deskbell.channels.kit.http import ChannelHTTPClient
    from deskbell.channels.kit.sample import send_sample
    from deskbell.clock import SystemClock
    from deskbell.errors import DeskbellError
    from deskbell.wiring import read_config

    settings = read_settings(config=config)
    try:
        loaded, source = read_config(settings, build_registry())
    except DeskbellError as exc:
        fail(str(exc), code=1)
    if name not in loaded.channels:
        fail(f"no channel {name!r} in {source}; defined: {sorted(loaded.channels)}", code=1)
    channel_settings = loaded.channels[name]

    async def run() -> Any:
        clock = SystemClock()
        async with ChannelHTTPClient() as http:
            kind = build_registry()[channel_settings.type]
            channel = kind.factory(name, channel_settings, ChannelContext(http=http, clock=clock))
            return await send_sample(name, channel, channel_settings, clock.now())

    result = asyncio.run(run())
    typer.echo(f"channel: {name} ({result.type})")
    typer.echo(f"status: {result.status.value}")
    typer.echo(f"duration_ms: {result.duration_ms}")
    typer.echo(f"error: {result.error or '-'}")
    if result.status.value != "sent":
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"deskbell {__version__}")


app.command()(retry)  # after the others: --help lists commands as they were added
