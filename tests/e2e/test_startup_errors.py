"""Failures of the `deskbell` command, as an operator meets them: each is one `error:` line on
stderr naming what to change, exit 2, no traceback (unless `--debug`). Real processes of the
installed `deskbell` script; real PostgreSQL where the failure is PostgreSQL's. Also the
warnings a valid config gets, logged when a worker starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.process import Deskbell, clean_env, free_port

DESKBELL = Path(sys.executable).parent / "deskbell"


def deskbell(args: Sequence[str], workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DESKBELL), *args],
        cwd=workdir,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 and exactly one `error:` line, no traceback; returns that line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def closed_port_url() -> str:
    return f"postgresql+asyncpg://deskbell:pw@127.0.0.1:{free_port()}/deskbell"


@pytest.mark.parametrize("command", [["db", "upgrade"], ["worker"], ["serve"], ["apikey", "list"]])
def test_unreachable_postgres(tmp_path: Path, command: list[str]) -> None:
    result = deskbell(command, tmp_path, DESKBELL_DATABASE_URL=closed_port_url())
    line = one_error_line(result)
    assert "cannot reach the database at postgresql+asyncpg://deskbell:***@127.0.0.1" in line
    assert "DESKBELL_DATABASE_URL" in line
    assert "pw@" not in result.stderr  # the password is not printed
    if command != ["serve"]:
        assert result.stderr == line + "\n"  # nothing else at all


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = deskbell(
        ["--debug", "db", "upgrade"], tmp_path, DESKBELL_DATABASE_URL=closed_port_url()
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConnectionRefusedError" in result.stderr


def test_sqlite_file_in_a_missing_directory(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'deskbell.db'}"
    line = one_error_line(deskbell(["db", "upgrade"], tmp_path, DESKBELL_DATABASE_URL=url))
    assert line == (
        f"error: cannot create the SQLite database {tmp_path / 'no-such-dir' / 'deskbell.db'}: "
        f"{tmp_path / 'no-such-dir'} does not exist - create it, or set DESKBELL_DATABASE_URL"
    )


@pytest.mark.parametrize("attempt", range(3))  # the driver's failure races its own thread
def test_unopenable_sqlite_path(tmp_path: Path, attempt: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}"  # a directory: exists, but SQLite cannot open it
    for command in (["db", "upgrade"], ["serve"]):
        line = one_error_line(deskbell(command, tmp_path, DESKBELL_DATABASE_URL=url))
        assert "cannot open the SQLite database" in line
        assert "directory exists and is writable" in line


def test_unusable_url(tmp_path: Path) -> None:
    result = deskbell(["db", "upgrade"], tmp_path, DESKBELL_DATABASE_URL="mysql://u@h/db")
    assert "not a database deskbell can use" in one_error_line(result)


@pytest.mark.parametrize(
    "command",
    [["requests", "list"], ["requests", "show", "x"], ["retry", "x"], ["apikey", "list"],
     ["apikey", "revoke", "x"], ["apikey", "create", "--scope", "read"]],
)  # fmt: skip
def test_reading_commands_never_create_a_database(tmp_path: Path, command: list[str]) -> None:
    line = one_error_line(deskbell(command, tmp_path))
    assert line == (
        "error: no database at ./deskbell.db - run `deskbell db upgrade` to create it, or set "
        "DESKBELL_DATABASE_URL to the one `deskbell serve` uses"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("processes", ["1", "2"])
def test_port_in_use_names_the_settings(tmp_path: Path, processes: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = deskbell(
            ["serve"],
            tmp_path,
            DESKBELL_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'port.db'}",
            DESKBELL_PORT=str(port),
            DESKBELL_PROCESSES=processes,
        )
    line = one_error_line(result)
    assert line == (
        f"error: port {port} on 127.0.0.1 is in use - stop the process listening there or "
        "choose another port with --port or DESKBELL_PORT"
    )


@pytest.mark.postgres
def test_missing_postgres_database(tmp_path: Path, postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/deskbell_no_such_database"
    for command in (["db", "upgrade"], ["worker"]):
        line = one_error_line(deskbell(command, tmp_path, DESKBELL_DATABASE_URL=url))
        assert "deskbell_no_such_database does not exist - create it" in line


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgres_urls_use_asyncpg(tmp_path: Path, postgres_url: str, scheme: str) -> None:
    url = postgres_url.replace("postgresql+asyncpg://", f"{scheme}://", 1)
    assert url.startswith(f"{scheme}://")
    upgraded = deskbell(["db", "upgrade"], tmp_path, DESKBELL_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    listed = deskbell(["requests", "list"], tmp_path, DESKBELL_DATABASE_URL=url)
    assert listed.returncode == 0, listed.stderr


def test_worker_logs_config_warnings_at_start(tmp_path: Path) -> None:
    config = tmp_path / "hook.yaml"
    config.write_text(
        'channels:\n  hook: {type: webhook, url: "http://127.0.0.1:9/h?token=s3cret"}\n'
        "routes:\n  - match: {topic: sales}\n    to: [hook]\n"
    )
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'warn.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_LOG_FORMAT": "json",
    }
    worker = Deskbell(["worker"], env=env, workdir=tmp_path, name="worker")
    try:
        worker.wait_ready()
    finally:
        output = worker.stop()
    assert '"event":"config_warning"' in output
    assert "channels.hook.url: the host 127.0.0.1 is a loopback address" in output
    assert "s3cret" not in output
