"""An ingest answer's head goes out with its body in one write (`deskbell.cli.head_limit`),
through a real uvicorn protocol on a fake transport; other routes are written as uvicorn
writes them, and an answer cut short after its head still gets its head and its close: the
bytes are those uvicorn's own protocol writes, for every kind of answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from deskbell.cli.head_limit import HeadLimitedProtocol, _HeadWithBody

BODY = b'{"topic": "sales", "description": "x"}'
LENGTH = [(b"content-length", b"2")]


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer(
    app: Any, request: bytes, protocol_class: type[HttpToolsProtocol] = HeadLimitedProtocol
) -> Transport:
    config = Config(app=app, log_config=None, proxy_headers=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Wed, 02 Dec 2026 06:00:00 GMT"), (b"server", b"uvicorn")]
    protocol = protocol_class(config, state, app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.gather(*protocol.tasks)
    return transport


def post(path: str, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n".encode()
        + extra
        + f"content-length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )


async def two_messages(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 202, "headers": LENGTH})
    await send({"type": "http.response.body", "body": b"ok"})


def test_ingest_answers_in_one_write() -> None:
    transport = asyncio.run(answer(two_messages, post("/v1/assistance-requests")))
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert written.endswith(b"\r\n\r\nok")


@pytest.mark.parametrize(
    "request_bytes",
    [
        post("/v1/requests"),  # another route: its body might be a stream
        post("/v1/assistance-requests", b"expect: 100-continue\r\n"),
    ],
    ids=["other-route", "expect-100"],
)
def test_other_answers_are_written_as_uvicorn_writes_them(request_bytes: bytes) -> None:
    transport = asyncio.run(answer(two_messages, request_bytes))
    assert transport.writes[-1] == b"ok"
    assert transport.writes[-2].startswith(b"HTTP/1.1 202 Accepted\r\n")


def test_a_head_without_its_body_is_written_before_the_close() -> None:
    async def head_then_error(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 202, "headers": LENGTH})
        raise RuntimeError("boom")

    transport = asyncio.run(answer(head_then_error, post("/v1/assistance-requests")))
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert transport.closed


def test_writes_after_the_body_pass_straight_on() -> None:
    transport = Transport()
    held = _HeadWithBody(transport)
    held.write(b"head")
    assert transport.writes == []
    held.write(b"body")
    held.write(b"more")
    held.close()
    assert transport.writes == [b"headbody", b"more"]
    assert transport.closed
    assert held.is_closing()


def answering(*messages: dict[str, Any], error: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        for message in messages:
            await send(message)
        if error:
            raise RuntimeError("boom")

    return app


def start(*headers: tuple[bytes, bytes], status: int = 202) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


JSON = (b"content-type", b"application/json")
CASES = {
    "accepted": [start(JSON, (b"content-length", b"2"), (b"x-request-id", b"abc")), body(b"{}")],
    "no-length": [start(JSON), body(b"{}")],
    "streamed": [start(JSON, (b"content-length", b"4")), body(b"{}", more=True), body(b"{}")],
    "bad-value": [start((b"content-length", b"2"), (b"x-bad", b"a\r\nb")), body(b"{}")],
    "short-body": [start((b"content-length", b"3")), body(b"{}")],
}


@pytest.mark.parametrize("messages", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("closing", [False, True], ids=["keep-alive", "close"])
def test_ingest_answers_are_the_bytes_uvicorn_writes(
    messages: list[dict[str, Any]], closing: bool
) -> None:
    request = post("/v1/assistance-requests", b"connection: close\r\n" if closing else b"")
    ours = asyncio.run(answer(answering(*messages), request))
    uvicorns = asyncio.run(answer(answering(*messages), request, HttpToolsProtocol))
    assert b"".join(ours.writes) == b"".join(uvicorns.writes)
    assert ours.closed == uvicorns.closed
