"""`deskbell version` and `--help` start fast because they import no server: FastAPI,
SQLAlchemy, uvicorn and the channels load only in the commands that use them (`deskbell.cli`).
Checked by what a fresh interpreter has imported, not by timing. Also: the option enums the
CLI declares to stay light still match the real ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deskbell.cli.keys import ScopeName
from deskbell.cli.ledger import Status
from deskbell.models import DeliveryStatus, Scope

HEAVY = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "httpx", "deskbell.channels")
PROBE = """
import sys
sys.argv = ["deskbell", *{args!r}]
from deskbell.cli import main
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
heavy = [name for name in {heavy!r} if name in sys.modules]
print("HEAVY:", ",".join(heavy))
"""


@pytest.mark.parametrize(
    "args", [["version"], ["--help"], ["requests", "--help"], ["apikey", "create", "--help"]]
)
def test_light_commands_import_no_server(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines()[-1] == "HEAVY: ", result.stdout


def test_option_enums_match_the_real_ones() -> None:
    assert [s.value for s in Status] == [s.value for s in DeliveryStatus]
    assert [s.value for s in ScopeName] == [s.value for s in Scope]
