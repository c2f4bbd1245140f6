"""Process start-up: the `deskbell` command and the server and worker processes it runs.

`commands.py` is the table of commands, `ledger.py` the `requests` and `retry` commands,
`keys.py` the `apikey` commands and the bind rule,
`serving.py` the processes (uvicorn, the app factories of `--processes N`, the worker),
`head_limit.py` the bound on request heads, `errors.py` the one-line errors. Nothing outside
this package imports it: it is the outermost layer (tests/unit/test_layers.py).
"""

from __future__ import annotations

import sys

import typer

from deskbell.cli.commands import Options, app
from deskbell.cli.errors import explain, quiet_orphaned_sqlite_threads

__all__ = ["app", "main"]


def main() -> None:
    """The `deskbell` command: any failure is one line on stderr and exit 2."""
    quiet_orphaned_sqlite_threads()
    try:
        app(prog_name="deskbell")
    except Exception as exc:
        if Options.debug:
            raise
        typer.echo(f"error: {explain(exc)}", err=True)
        sys.exit(2)
