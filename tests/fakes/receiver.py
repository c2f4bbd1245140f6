"""A real local HTTP server that keeps every request: the far end of a webhook, of an Apprise
`json://` URL, or of a third-party channel under test.

    with Receiver() as receiver:
        ...                                        # send something to receiver.url
        [request] = await receiver.wait_for_requests_async(1)
        assert request.json()["type"] == "assistance_request.accepted"

API
- `Receiver(host="127.0.0.1", path="/hook")`; context manager, or `start()` / `stop()`.
  `host="::1"` listens on IPv6 loopback.
- `url` (`http://host:port/hook`, IPv6 hosts in brackets), `port`.
- Answers every method with the standing reply: `reply_with(status=200, body="ok",
  retry_after=None)`.
- Records, thread-safe, as copies: `requests` (each a `Received`: method, path, headers with
  lower-case keys, body bytes; `.json()` parses the body). `clear()` empties them.
- Waiting: `wait_for_requests(n)` / `await wait_for_requests_async(n)`, deadline 5 s.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes import DEFAULT_TIMEOUT, wait_until, wait_until_async
from tests.fakes.served import ServedInThread


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        headers = {key.lower(): value for key, value in self.headers.items()}
        receiver._record(Received(self.command, self.path, headers, body))
        status, text, retry_after = receiver._reply()
        data = b"" if status in (204, 304) else text.encode()  # no body allowed (RFC 9110)
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        self.receiver = receiver
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class Receiver(ServedInThread):
    def __init__(self, host: str = "127.0.0.1", path: str = "/hook") -> None:
        self.host = host
        self.path = path
        self.port = 0
        self._lock = threading.Lock()
        self._status, self._body, self._retry_after = 200, "ok", None
        self._requests: list[Received] = []

    def _bind(self) -> _Server:
        return _Server((self.host, 0), self)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def reply_with(
        self, status: int = 200, body: str = "ok", retry_after: int | None = None
    ) -> None:
        with self._lock:
            self._status, self._body, self._retry_after = status, body, retry_after

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for_requests(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[Received]:
        wait_until(lambda: len(self.requests) >= count, timeout, f"{count} request(s)")
        return self.requests

    async def wait_for_requests_async(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Received]:
        await wait_until_async(lambda: len(self.requests) >= count, timeout, f"{count} request(s)")
        return self.requests

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    def _reply(self) -> tuple[int, str, int | None]:
        with self._lock:
            return self._status, self._body, self._retry_after
