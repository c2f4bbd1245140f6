"""Request heads are bounded (`deskbell.cli.head_limit`), on a real `deskbell serve`: 60 MB of
headers are refused with a 431 without the process holding them, 101 small headers too, and
a request with 15 KiB of headers is still served; with one process and with `--processes 2`."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import Deskbell, free_port

MIB = 1 << 20
POST = b"POST /v1/assistance-requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-processes"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deskbell]:
    tmp_path = tmp_path_factory.mktemp("heads")
    port = free_port()
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'heads.db'}",
        "DESKBELL_PROCESSES": str(request.param),
        "DESKBELL_LOG_FORMAT": "json",
    }
    running = Deskbell(["serve"], env=env, workdir=tmp_path, port=port)
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """/proc/PID/status memory figure, in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, field
    return int(match.group(1))


def server_pids(server: Deskbell) -> list[int]:
    """The processes that parse HTTP: the serve process, or the children of its supervisor."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return [int(pid) for pid in children] or [server.pid]


def send_head(port: int, head: bytes, *, piece: int = MIB) -> tuple[bytes, int]:
    """Send `head` in pieces, stopping when the server answers or closes; (answer, bytes sent)."""
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            while sent < len(head):
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    answer += sock.recv(65536)
                sock.setblocking(True)
                if answer:
                    break
                sock.sendall(head[sent : sent + piece])
                sent += piece
            sock.settimeout(10)
            while True:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
    return answer, min(sent, len(head))


def refused(answer: bytes) -> bool:
    """A 431 with our JSON error, or nothing: a reset can drop the answer the server wrote."""
    return answer == b"" or (
        answer.startswith(b"HTTP/1.1 431 ")
        and b"connection: close" in answer.lower()
        and b'"code":"headers_too_large"' in answer
    )


def test_60_mb_of_headers_are_refused_without_being_held(server: Deskbell) -> None:
    pids = server_pids(server)
    before = {pid: rss_kib(pid) for pid in pids}
    one_value = POST + b"X-Big: " + b"a" * (60 * MIB)
    many_lines = POST + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 8000) for i in range(7500))
    for head in (one_value, many_lines, one_value):
        answer, sent = send_head(server.port or 0, head)
        assert refused(answer), answer[:300]
        assert sent < len(head)  # it stopped reading long before the end
    grown_mib = max(rss_kib(pid) - before[pid] for pid in pids) / 1024
    assert grown_mib < 30, f"RSS grew by {grown_mib:.0f} MiB after 3 x 60 MB of headers"
    assert server.client.get("/healthz").status_code == 200


def test_a_complete_head_over_the_limit_gets_a_431(server: Deskbell) -> None:
    head = POST + b"X-Big: " + b"c" * (17 * 1024) + b"\r\nContent-Length: 2\r\n\r\n{}"
    answer, _ = send_head(server.port or 0, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"exceed 16384 bytes" in answer


def test_101_small_headers_get_a_431(server: Deskbell) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(99))  # + Host + Content-Length
    head = POST + fields + b"Content-Length: 2\r\n\r\n{}"
    answer, _ = send_head(server.port or 0, head)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"more than 100 header fields" in answer


def test_15_kib_of_headers_and_100_fields_are_served(server: Deskbell) -> None:
    headers = {f"X-Pad-{i:02}": "p" * 155 for i in range(93)}  # 15.2 KiB; with httpx's 7: 100
    answer = server.client.post(
        "/v1/assistance-requests",
        json={"topic": "sales", "description": "big but allowed headers"},
        headers=headers,
    )
    assert answer.status_code == 202, answer.text
    # keep-alive: the next request on the same connection is counted from zero
    assert server.client.get("/healthz", headers=headers).status_code == 200


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data` in one write and read until the server closes the connection."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        while more := sock.recv(65536):
            answer += more
    return answer


def post(extra_headers: bytes, body: bytes, *, close: bool = False) -> bytes:
    return (
        POST + b"Content-Type: application/json\r\n" + extra_headers
        + (b"Connection: close\r\n" if close else b"")
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


BODY = b'{"topic": "sales", "description": "one read"}'


def test_a_body_in_the_same_read_does_not_count(server: Deskbell) -> None:
    headers = b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * 150) for i in range(90))  # 14.6 KiB
    answer = raw_exchange(server.port or 0, post(headers, BODY + b" " * 40_000, close=True))
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]


def test_a_pipelined_head_over_the_limit_gets_a_431(server: Deskbell) -> None:
    first = post(b"", BODY + b" " * 30_000)
    second = post(b"X-Big: " + b"c" * (17 * 1024) + b"\r\n", BODY)
    answer = raw_exchange(server.port or 0, first + second)
    # As with uvicorn's 400 for a malformed pipelined request, the refusal is written at
    # once and may come before (or instead of) the first request's answer.
    assert b"HTTP/1.1 431 " in answer, answer[:300]
    assert b"headers_too_large" in answer
