"""Log a failing background operation once per outage, not once per try.

A worker retries its claim every poll interval and its lease renewal every heartbeat; while
the database is down each try fails the same way, and a traceback per try buried everything
else. `FailureStreaks` logs the first failure of a streak as one warning line (the traceback
only at debug), counts every failure (`deskbell_worker_errors_total{operation}`), and logs one
line when the operation works again, with how many tries failed meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)
MAX_ERROR_CHARS = 300


def describe(exc: BaseException) -> str:
    """One short line: the exception's type and the first line of its message (SQLAlchemy's
    add the statement and a link on further lines)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line[:MAX_ERROR_CHARS]


class FailureStreaks:
    """Per operation name: failed tries since it last worked."""

    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self._count = count
        self._failures: dict[str, int] = {}

    def failed(self, operation: str, exc: BaseException, **fields: object) -> None:
        if self._count is not None:
            self._count(operation)
        n = self._failures[operation] = self._failures.get(operation, 0) + 1
        if n == 1:
            log.warning(f"{operation}_failed", error=describe(exc), **fields)
            log.debug(f"{operation}_failed_traceback", exc_info=exc)
        else:
            log.debug(f"{operation}_failed_again", error=describe(exc), failures=n, **fields)

    def succeeded(self, operation: str, **fields: object) -> None:
        n = self._failures.pop(operation, 0)
        if n:
            log.info(f"{operation}_recovered", failures=n, **fields)

    def failing(self, operation: str) -> int:
        return self._failures.get(operation, 0)
