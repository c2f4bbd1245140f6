"""What the `deskbell` command prints when a command fails: one line, what and what to do.

A traceback tells an operator where deskbell broke, not what to change; the known failures
of starting up (the database unreachable, missing or unopenable, a URL with a driver that is
not installed) are recognised anywhere in an exception's chain, SQLAlchemy's wrapped driver
error included, and named with the setting to fix. Anything else is still one line, with its
type, and `deskbell --debug ...` shows the traceback.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from deskbell.errors import DeskbellError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from deskbell.settings import Settings


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with `error: <message>` on stderr and exit `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def explain(exc: BaseException) -> str:
    """One line for `exc`: `<what went wrong> - <what to do>`."""
    if isinstance(exc, DeskbellError):
        return str(exc)
    for error in _chain(exc):
        message = _database_problem(error)
        if message:
            return message
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"{type(exc).__name__}: {first_line} - run the command again with `deskbell --debug` "
        "for the traceback"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, the driver error SQLAlchemy wrapped (`.orig`), and their causes and contexts."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        for linked in (getattr(error, "orig", None), error.__cause__, error.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)


def _database_problem(error: BaseException) -> str | None:
    where = _database_shown()
    name = type(error).__name__
    text = str(error)
    fix = "set DESKBELL_DATABASE_URL"
    if name == "InvalidCatalogNameError":
        return f"the database in {where} does not exist - create it (`createdb`), or {fix}"
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return f"the database server refused the login of {where} - {fix}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the database host of {where} - check the host name, or {fix}"
    if isinstance(error, ConnectionRefusedError | TimeoutError):
        reason = "connection refused" if isinstance(error, ConnectionRefusedError) else "timeout"
        return (
            f"cannot reach the database at {where} ({reason}) - start it, or {fix} to one that runs"
        )
    if "unable to open database file" in text:
        return (
            f"cannot open the SQLite database {where} - check that its directory exists and "
            f"is writable, or {fix}"
        )
    if "no such table" in text or name == "UndefinedTableError":
        return f"{where} has no deskbell tables - run `deskbell db upgrade`"
    if name in ("NoSuchModuleError", "ArgumentError") or (
        isinstance(error, ModuleNotFoundError) and _is_database_driver(error.name)
    ):
        return (
            f"DESKBELL_DATABASE_URL ({where}) is not a database deskbell can use - use "
            "sqlite+aiosqlite:///path/to/deskbell.db or postgresql://user:pass@host/db"
        )
    return None


def _is_database_driver(module: str | None) -> bool:
    return (module or "").split(".")[0] in {"psycopg", "psycopg2", "pg8000", "pysqlite2", "MySQLdb"}


def _database_shown() -> str:
    """DESKBELL_DATABASE_URL as the command read it, with its password hidden."""
    from deskbell.settings import Settings

    try:
        url = Settings().database_url
    except ValueError:  # another setting is invalid: the default is what was used
        url = str(Settings.model_fields["database_url"].default)
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show only its scheme
        return url.partition("://")[0] + "://..."


def quiet_orphaned_sqlite_threads() -> None:
    """aiosqlite finishes a failed open on its own thread without awaiting it; when the command
    then fails, that thread can outlive the event loop and print an "Event loop is closed"
    traceback after the error line. Only that, from aiosqlite's worker threads, is dropped."""
    default = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread.name if args.thread else ""
        if "_connection_worker_thread" in thread and str(args.exc_value) == "Event loop is closed":
            return
        default(args)

    threading.excepthook = hook


def read_settings(**overrides: Any) -> Settings:
    """The process settings with `overrides` (None: not given); a bad DESKBELL_* variable is a
    one-line failure naming it."""
    from pydantic import ValidationError

    from deskbell.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        fail("; ".join(_setting_error(e) for e in exc.errors()))
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _setting_error(error: ErrorDetails) -> str:
    name = "_".join(str(part) for part in error["loc"]).upper()
    return f"DESKBELL_{name}: {error['msg']}"
