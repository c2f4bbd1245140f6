"""The log lines deskbell writes, in both formats, from a fresh interpreter (logging setup is
process-global, so each case runs in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import logging, pathlib, structlog
from deskbell.observability import configure_logging
configure_logging({fmt!r}, {level!r})
log = structlog.get_logger("deskbell.test")
log.debug("dropped_debug")
log.info("accepted", request_id="r-1", channels=["sales-slack"], text="caf\\u00e9 \\x00 <b>",
         path=pathlib.Path("/tmp/x"), big=10**30)
with structlog.contextvars.bound_contextvars(http_request_id="h-1"):
    log.warning("bound")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
logging.getLogger("uvicorn.error").info("from_stdlib")
"""


def run(fmt: str, level: str = "info") -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(fmt=fmt, level=level))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == ""
    return done.stderr.splitlines()


def test_json_lines_are_one_object_each_with_every_field() -> None:
    lines = [json.loads(line) for line in run("json")]
    events = [line["event"] for line in lines]
    assert events == ["accepted", "bound", "failed", "from_stdlib"]
    accepted = lines[0]
    assert accepted["level"] == "info"
    assert accepted["logger"] == "deskbell.test"
    assert accepted["channels"] == ["sales-slack"]
    assert accepted["text"] == "café \x00 <b>"
    assert accepted["path"] == "/tmp/x"  # not encodable as JSON: logged as its text
    assert accepted["big"] in (10**30, str(10**30))
    assert accepted["timestamp"].endswith("Z")
    assert len(accepted["timestamp"]) == len("2026-12-02T03:21:15.221611Z")
    assert lines[1]["http_request_id"] == "h-1"
    assert "ZeroDivisionError" in lines[2]["exception"]
    assert lines[3]["logger"] == "uvicorn.error"


def test_console_lines_read_like_structlogs_console_renderer() -> None:
    lines = run("console")
    assert lines[0].split(" ", 1)[1].startswith("[info     ] accepted")
    assert "[deskbell.test]" in lines[0]
    assert "channels=['sales-slack']" in lines[0]
    assert "request_id=r-1" in lines[0]
    assert "dropped_debug" not in "\n".join(lines)
    assert any(line.startswith("ZeroDivisionError") for line in lines)
    assert any("from_stdlib" in line for line in lines)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_the_level_filters_our_lines_and_the_librarys(fmt: str) -> None:
    text = "\n".join(run(fmt, "warning"))
    assert "accepted" not in text
    assert "from_stdlib" not in text
    assert "bound" in text
    assert "failed" in text


def test_an_unknown_level_is_refused_clearly() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from deskbell.observability import configure_logging; "
            "configure_logging('json', 'loud')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "unknown log level 'loud'" in done.stderr


BATCHED = """
import asyncio, io, logging, structlog
from deskbell.observability import batched_lines, configure_logging

class Counted(io.BytesIO):
    writes = 0
    def write(self, data):
        Counted.writes += 1
        return super().write(data)

stream = io.TextIOWrapper(Counted(), encoding="utf-8", write_through=True)  # as stderr is
configure_logging("console", "info", stream)
log = structlog.get_logger("deskbell.test")

async def main():
    with batched_lines(asyncio.get_running_loop()):
        for n in range(3):
            log.info("one_turn", n=n)
        assert Counted.writes == 0  # gathered until the turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert Counted.writes == 1, Counted.writes  # then written together
        log.info("before_stdlib")
        logging.getLogger("uvicorn.error").info("stdlib")  # after what was gathered
        await asyncio.to_thread(log.info, "other_thread")  # written at once
        log.info("at_exit")  # written when the batching ends
    print(stream.buffer.getvalue().decode(), end="")

asyncio.run(main())
"""


def test_a_loop_turns_lines_are_written_together_and_in_order() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BATCHED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    events = [line.split("] ", 1)[1].split(" ", 1)[0] for line in lines]
    assert events == ["one_turn", "one_turn", "one_turn", "before_stdlib", "stdlib",
                      "other_thread", "at_exit"], lines  # fmt: skip


HOT = """
import structlog
from structlog.testing import capture_logs
from deskbell.observability import HotLine, configure_logging
configure_logging({fmt!r}, "info")
fields = dict(request_id="r-1", topic="sales", channels=["c"], http_request_id="h-1")
structlog.get_logger("deskbell.hot").info("request_accepted", **fields)
HotLine("deskbell.hot").info("request_accepted", **fields)
with structlog.contextvars.bound_contextvars(bound="b-1"):
    HotLine("deskbell.hot").info("bound")
with capture_logs() as captured:
    HotLine("deskbell.hot").info("captured", n=1)
assert captured == [{{"n": 1, "event": "captured", "log_level": "info"}}], captured
"""


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_the_hot_line_is_the_line_structlog_writes(fmt: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HOT.format(fmt=fmt))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    structlogs, hot, bound = done.stderr.splitlines()
    if fmt == "json":  # the same keys in the same order, the same values but the time
        assert list(json.loads(hot).items())[:-1] == list(json.loads(structlogs).items())[:-1]
        assert json.loads(bound)["bound"] == "b-1"
    else:
        assert hot.split(" ", 1)[1] == structlogs.split(" ", 1)[1]
        assert bound.endswith(" bound=b-1")
