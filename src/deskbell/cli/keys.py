"""`deskbell apikey create|list|revoke` and the bind rule of `deskbell serve` (SPEC §3).

Kept apart from commands.py so that module stays a table of commands. The bind rule: a server with
no credential configured (no key in DESKBELL_API_KEYS or the database, no webhook secret) is
open to anyone who can reach it, so it may only listen on a loopback address; anything else
is refused unless the operator says `--insecure`.

Imported by every `deskbell` command, so like commands.py it imports the database and the API
only inside the functions that use them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from deskbell.cli.errors import fail
from deskbell.errors import DeskbellError

if TYPE_CHECKING:
    from deskbell.config.schema import DeskbellConfig
    from deskbell.settings import Settings
    from deskbell.storage.keys import KeyStore

T = TypeVar("T")
keys_app = typer.Typer(no_args_is_help=True, help="API keys: create, list, revoke.")


class ScopeName(StrEnum):
    """The values of deskbell.models.Scope, without importing the models for `--help`."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    AGENT = "agent"


class InsecureBind(DeskbellError):
    """Asked to listen beyond loopback with authentication off."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def credentials_configured(settings: Settings, config: DeskbellConfig) -> bool:
    """Any key, webhook secret or OIDC issuer, from the environment, the config or the
    database."""
    from deskbell.api.auth import parse_env_keys
    from deskbell.api.oidc import oidc_settings
    from deskbell.api.webhooks import parse_secrets
    from deskbell.storage.engine import connect
    from deskbell.storage.keys import KeyStore

    env_keys = parse_env_keys(settings.api_keys.get_secret_value())
    env_secrets = parse_secrets(settings.webhook_secrets.get_secret_value())
    if env_keys or env_secrets or config.sources or oidc_settings(settings) is not None:
        return True
    db = connect(settings.database_url)
    try:
        return await KeyStore(db).any_active()
    finally:
        await db.dispose()


def check_bind(settings: Settings, config: DeskbellConfig, *, insecure: bool) -> None:
    """Log whether auth is on; raise InsecureBind for a non-loopback host without it."""
    import asyncio

    import structlog

    log = structlog.get_logger(__name__)
    if asyncio.run(credentials_configured(settings, config)):
        log.info("auth_on", host=settings.host)
        return
    if is_loopback(settings.host):
        log.warning(
            "auth_off",
            message=f"no API key or webhook secret configured: authentication is OFF; "
            f"listening on {settings.host} only",
        )
        return
    if insecure:
        log.warning(
            "auth_off_insecure",
            message=f"--insecure: listening on {settings.host} with authentication OFF; "
            "anyone who can reach this port can read and post requests",
        )
        return
    raise InsecureBind(
        f"refusing to listen on {settings.host} with authentication off: create a key "
        "(`deskbell apikey create --scope ingest`), set DESKBELL_API_KEYS or "
        "DESKBELL_WEBHOOK_SECRETS, or pass --insecure"
    )


def _keys(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    """Run `action(keys)`; a SQLite file that is not there is an error, never created."""
    import asyncio

    from deskbell.settings import Settings
    from deskbell.storage.engine import connect
    from deskbell.storage.keys import KeyStore

    async def run() -> T:
        db = connect(Settings().database_url, must_exist=True)
        try:
            return await action(KeyStore(db))
        finally:
            await db.dispose()

    return asyncio.run(run())


@keys_app.command("create")
def create(
    scope: Annotated[
        ScopeName,
        typer.Option(
            help="ingest, read, agent (claim and resolve requests, and read) or admin "
            "(implies read and agent)"
        ),
    ],
    name: Annotated[str | None, typer.Option(help="a label, unique; default key-<id>")] = None,
) -> None:
    """Create a key and print it once (stdout); only its hash is stored."""
    from deskbell.clock import SystemClock
    from deskbell.models import Scope
    from deskbell.storage.engine import NoDatabase

    try:
        record, plain = _keys(lambda k: k.create(Scope(scope.value), SystemClock().now(), name))
    except NoDatabase:
        raise
    except DeskbellError as exc:
        fail(str(exc), code=1)
    typer.echo(plain)
    typer.echo(
        f"created {record.name} ({record.id}, scope {record.scope.value}); the key above is "
        "shown only this once",
        err=True,
    )


@keys_app.command("list")
def list_keys() -> None:
    """Names, scopes, created and last-used times; never the keys."""
    from deskbell.api.auth import parse_env_keys
    from deskbell.settings import Settings

    keys = _keys(lambda k: k.list())
    rows = [("NAME", "ID", "SCOPE", "PREFIX", "CREATED", "LAST USED", "STATE")]
    for key in keys:
        rows.append(
            (
                key.name,
                key.id,
                key.scope.value,
                key.prefix + "...",
                f"{key.created_at:%Y-%m-%d %H:%M:%S}",
                f"{key.last_used_at:%Y-%m-%d %H:%M:%S}" if key.last_used_at else "never",
                "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    env_count = len(parse_env_keys(Settings().api_keys.get_secret_value()))
    if env_count:
        typer.echo(f"(and {env_count} key(s) from DESKBELL_API_KEYS, not stored)")


@keys_app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="the key's id or name")]) -> None:
    """Revoke a key; every node refuses it from the next request on."""
    from deskbell.clock import SystemClock
    from deskbell.storage.engine import NoDatabase

    try:
        record = _keys(lambda k: k.revoke(key, SystemClock().now()))
    except NoDatabase:
        raise
    except DeskbellError as exc:
        fail(str(exc), code=1)
    typer.echo(f"revoked {record.name} ({record.id})")
