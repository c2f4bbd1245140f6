"""Logging setup: structlog, readable console lines by default, one JSON object a line with
DESKBELL_LOG_FORMAT=json.

deskbell's own lines never go through the standard library's `logging`: a filtering bound
logger drops a line below the level in one method call, and a line that is kept is rendered
to bytes (orjson for JSON) and written to stderr in one `write`. Through `logging` a line cost
more than validating and committing the request it reported (docs/performance.md). Other
libraries' loggers (uvicorn, alembic) still use `logging`, rendered in the same format, so an
operator sees one format either way.

While a server runs (`batched_lines`), the lines its event loop writes in one turn of the loop
go out together, in one `write` at the end of that turn (or sooner, at LINES_PER_WRITE lines):
a group commit answers a whole batch of requests in one turn, and each request's line cost a
syscall of its own. Nothing waits longer than that turn; the lines of other threads, and
every line outside a server, are written at once, as before.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any, Literal

import orjson
import structlog
from structlog._config import _CONFIG as structlog_state

EventDict = MutableMapping[str, Any]
LINES_PER_WRITE = 256  # a loop turn's lines are written at the latest when this many wait


class _Output:
    """Where every LineWriter writes. Loggers are cached on first use, so a later
    `configure_logging` (a test's CLI run with its own stream) changes this one object
    instead of leaving cached loggers writing to a stream that may be closed.

    Each line goes out in one `write` (and flush), so lines of several threads never
    interleave; while `batched_lines` runs, the lines of its loop's thread are gathered and
    written once per turn of that loop (`_pending`, touched by that thread only)."""

    __slots__ = ("_flush", "_loop", "_pending", "_thread", "_write")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._thread: int | None = None  # the batching loop's thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self.point_at(sys.stderr)

    def point_at(self, stream: IO[str]) -> None:
        self.drain()
        target = _byte_stream(stream)
        self._write = target.write
        self._flush = target.flush

    def line(self, line: bytes) -> None:
        """Write one rendered line (without its newline)."""
        if self._thread is not None and threading.get_ident() == self._thread:
            pending = self._pending
            pending.append(line)
            if len(pending) == 1:
                assert self._loop is not None
                try:
                    self._loop.call_soon(self.drain)
                except RuntimeError:  # the loop is closed: no turn will end
                    self.drain()
            elif len(pending) >= LINES_PER_WRITE:
                self.drain()
            return
        self._send(line + b"\n")

    def drain(self) -> None:
        """Write the gathered lines now (from the batching loop's thread, or once it is gone)."""
        pending = self._pending
        if pending:
            self._pending = []
            pending.append(b"")  # the last newline
            self._send(b"\n".join(pending))

    def _send(self, data: bytes) -> None:
        try:
            self._write(data)
            self._flush()
        except (OSError, ValueError):  # a closed or broken stderr: the work goes on unlogged,
            pass  # as `logging` does it (it prints a complaint, to that same stream)

    @contextmanager
    def batched(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        self.drain()
        self._loop, self._thread = loop, threading.get_ident()
        try:
            yield
        finally:
            self._thread = self._loop = None
            self.drain()

    def before_foreign_line(self) -> None:
        """A `logging` line of the batching loop's thread: what it gathered goes out first."""
        if self._pending and threading.get_ident() == self._thread:
            self.drain()


class LineWriter:
    """A structlog logger that hands each rendered line to the process's `_Output`."""

    __slots__ = ("_out", "name")

    def __init__(self, name: str, out: _Output) -> None:
        self.name = name
        self._out = out

    def msg(self, line: bytes) -> None:
        self._out.line(line)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _byte_stream(stream: IO[str]) -> IO[bytes] | _TextAsBytes:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()  # what was written as text goes out before our bytes
        return buffer  # type: ignore[no-any-return]
    return _TextAsBytes(stream)


class _TextAsBytes:
    """A text stream (a test's capture) seen as a byte stream."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        return self._stream.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        self._stream.flush()


class _Timestamp:
    """ISO 8601 UTC with microseconds, as structlog's TimeStamper writes it, for a fraction of
    its cost: the text up to the second is formatted once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: object, method: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


_OUTPUT = _Output()  # process-wide, as the logging configuration itself is
atexit.register(_OUTPUT.drain)


def batched_lines(loop: asyncio.AbstractEventLoop) -> AbstractContextManager[None]:
    """While it is entered (on `loop`'s thread: a server's lifespan), the lines that thread
    logs are written once per turn of `loop`; on exit, what is gathered is written."""
    return _OUTPUT.batched(loop)


class HotLine:
    """A logger for a line written per request or per attempt (`request_accepted`,
    `delivery_attempt`): the processors
    `configure_logging` installed, called straight, so the line is the one structlog would
    write, without its wrapper's half a dozen calls and dict copies around them. Under any
    other configuration (a test capturing lines), or below its level, it logs through
    structlog as usual."""

    __slots__ = ("_structlog", "name")

    def __init__(self, name: str) -> None:
        self.name = name  # what `_logger_name` reads of a logger
        self._structlog = structlog.get_logger(name)

    def info(self, event: str, **fields: Any) -> None:
        chain = _CHAIN
        processors = chain.processors
        if (
            processors is None
            or processors is not structlog_state.default_processors
            or processors[-1] is not chain.renderer  # changed in place (capture_logs does)
            or chain.quiet_info
        ):
            self._structlog.info(event, **fields)
            return
        fields["event"] = event
        line: Any = fields
        try:
            for processor in processors:
                line = processor(self, "info", line)
        except structlog.DropEvent:
            return
        _OUTPUT.line(line)


class _Chain:
    """What `configure_logging` installed last: its processors, and whether info is dropped."""

    __slots__ = ("processors", "quiet_info", "renderer")

    def __init__(self) -> None:
        self.processors: list[structlog.types.Processor] | None = None
        self.renderer: structlog.types.Processor | None = None
        self.quiet_info = True


_CHAIN = _Chain()


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Other libraries' lines: after what deskbell's own lines gathered in this turn."""

    def emit(self, record: logging.LogRecord) -> None:
        _OUTPUT.before_foreign_line()
        super().emit(record)


def _logger_name(logger: Any, method: str, event: EventDict) -> EventDict:
    event["logger"] = logger.name
    return event


_OWN_KEYS = frozenset({"timestamp", "level", "event", "logger", "exception", "stack"})


def _console_line(logger: object, method: str, event: EventDict) -> bytes:
    """The line structlog's ConsoleRenderer (colors off) writes, built in one pass: that
    renderer pads, sorts and styles through a dozen calls per key, a third of a request's
    cost at the default log level."""
    parts = [
        f"{event.get('timestamp', '')} [{event.get('level', method):<9}] "
        f"{event.get('event', '')!s:<30} [{event.get('logger', '')}]"
    ]
    for key in sorted(event.keys() - _OWN_KEYS):
        value = event[key]
        parts.append(f"{key}={value if isinstance(value, str) else repr(value)}")
    line = " ".join(parts)
    for trailer in ("stack", "exception"):
        if trailer in event:
            line += "\n" + str(event[trailer])
    return line.encode("utf-8", "replace")


def _renderers(
    fmt: Literal["console", "json"],
) -> tuple[list[structlog.types.Processor], structlog.types.Processor]:
    """(our lines' last processors, ending in bytes; the stdlib formatter's renderer)."""
    if fmt == "json":
        return (
            [structlog.processors.JSONRenderer(serializer=_orjson_dumps)],
            structlog.processors.JSONRenderer(serializer=_orjson_text),
        )
    return [_console_line], structlog.dev.ConsoleRenderer(colors=False)


def _orjson_dumps(value: Any, **_: Any) -> bytes:
    """orjson, with a value it cannot encode (a Path) logged as its text; an integer beyond
    64 bits, which orjson refuses outright, takes the standard library's path: a log line must
    never fail the work it reports."""
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        return json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace")


def _orjson_text(value: Any, **_: Any) -> str:
    """The same compact JSON for other libraries' lines (their formatter wants text)."""
    return _orjson_dumps(value).decode("utf-8", "replace")


def configure_logging(
    fmt: Literal["console", "json"] = "console",
    level: str = "info",
    stream: IO[str] | None = None,
) -> None:
    out = stream if stream is not None else sys.stderr
    level_number = logging.getLevelNamesMapping().get(level.upper())
    if level_number is None:
        raise ValueError(f"unknown log level {level!r}: debug, info, warning, error or critical")
    ours, foreign_renderer = _renderers(fmt)
    timestamp = _Timestamp()
    _OUTPUT.point_at(out)

    def factory(*args: Any) -> LineWriter:
        return LineWriter(str(args[0]) if args else "", _OUTPUT)

    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _logger_name,
        timestamp,
        structlog.processors.format_exc_info,  # only does work when exc_info is given
        *ours,  # ends in bytes: a line for `_Output`
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _CHAIN.processors = processors  # the very list: `HotLine` checks it is still the one
    _CHAIN.renderer = processors[-1]
    _CHAIN.quiet_info = level_number > logging.INFO
    foreign_chain: list[Callable[..., EventDict]] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamp,
    ]
    handler = _StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign_chain,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                foreign_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; webhook URLs carry tokens, so keep it quiet.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
