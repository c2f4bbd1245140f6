"""A real local HTTP server that behaves like a Slack Incoming Webhook.

It runs `http.server.ThreadingHTTPServer` on 127.0.0.1 (a free port) in a daemon thread, so it
answers the test's own event loop, a worker in that loop, and a separate deskbell process alike.

    with FakeSlack() as slack:
        settings = {"type": "slack", "webhook_url": slack.url}
        ...                                   # send something
        await slack.wait_for_payloads_async(1)  # or slack.wait_for_payloads(1) in sync code
        assert slack.payloads[0]["text"].startswith("Assistance requested")

API
- `FakeSlack(path="/services/T000/B000/XXXX", host="127.0.0.1", port=0)`; context manager, or
  call `start()` / `stop()`. `stop()` cuts short any configured delay.
- `url`: the full webhook URL; `base_url`: scheme, host and port only.
- Validation, like Slack: method POST, `Content-Type: application/json`, body a JSON object with
  a non-empty string `text`, and `blocks`, if present, a list of objects each with a string
  `type`. Anything else is answered `400 invalid_payload` whatever the reply mode.
  A request to another path gets `404 no_service`.
- Reply mode for valid payloads: `reply_with(status, body=None, retry_after=None)` sets the
  standing answer (default `200 ok`); `reply_next(*replies)` queues one-shot `Reply` values
  used first, e.g. `reply_next(Reply(503), Reply(429, retry_after=7))` then back to the
  standing answer; `delay` (seconds, settable attribute) holds every answer back, to test
  timeouts. Default bodies: 200 `ok`, 400 `invalid_payload`, 403/404 `no_service`,
  410 `channel_is_archived`, 429 `rate_limited`, 500 `rollup_error`, 503
  `service_unavailable`.
- Records, thread-safe, as copies: `payloads` (parsed JSON of payloads answered 2xx),
  `requests` (every request as a `RecordedRequest`: method, path, headers (lower-case
  keys), body, status); both are recorded on arrival, before any `delay`, as Slack would
  have the message even when the client gave up waiting. `clear()` empties both.
- Web API: the same server answers `POST /api/chat.postMessage` like Slack's Web API
  (`api_url` is the base to configure). It needs `Authorization: Bearer <token>` (attribute
  `token`, default `xoxb-test-token`; else `invalid_auth`) and a `channel` in `channels`
  (default `{"C0TEST"}`; else `channel_not_found`), then validates the payload like the
  webhook (`invalid_blocks`). Answers are always HTTP 200 with `{"ok": ...}` JSON, except a
  queued/standing `Reply` with another status (429, 5xx) which is sent as that status.
  `Reply.api_error("not_in_channel")` is an `ok: false` answer; a payload counts in
  `payloads` only when the answer was ok.
- Interactivity (the Claim button): `response_url` is a URL on this server (path under
  `/actions/`) that takes what an app posts back to a click (JSON with `text` or `blocks`),
  recorded in `responses`; `POST /api/chat.update` checks the token and needs `channel` (one
  of `channels`), `ts` and a valid payload, like `chat.postMessage`, and records in
  `updates`. Neither counts in `payloads`. `wait_for_responses(n)` / `wait_for_updates(n)`
  (and `_async`) wait for them.
- Waiting: `wait_for_payloads(n, timeout=5.0)` / `await wait_for_payloads_async(n, timeout)`
  return the payloads once at least `n` arrived, else raise AssertionError;
  `wait_for_requests(n)` / `wait_for_requests_async(n)` the same for all requests.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes import DEFAULT_TIMEOUT, wait_until, wait_until_async
from tests.fakes.served import ServedInThread

DEFAULT_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
API_PATH = "/api/chat.postMessage"
UPDATE_PATH = "/api/chat.update"
RESPONSE_PREFIX = "/actions/T000/1000000000001/"
DEFAULT_BODIES = {
    200: "ok",
    400: "invalid_payload",
    403: "no_service",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
    503: "service_unavailable",
}


@dataclass(frozen=True)
class Reply:
    """One answer: status, body (default from DEFAULT_BODIES) and an optional Retry-After."""

    status: int = 200
    body: str | None = None
    retry_after: int | None = None

    @property
    def text(self) -> str:
        return self.body if self.body is not None else DEFAULT_BODIES.get(self.status, "error")

    @classmethod
    def api_error(cls, error: str) -> Reply:
        """A Web API refusal: HTTP 200 with `{"ok": false, "error": error}`."""
        return cls(200, json.dumps({"ok": False, "error": error}))

    @property
    def api_text(self) -> str:
        if self.body is not None:
            return self.body
        if self.status == 200:
            return json.dumps({"ok": True, "channel": "C0TEST", "ts": "1700000000.000100"})
        return json.dumps({"ok": False, "error": DEFAULT_BODIES.get(self.status, "error")})


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


def invalid_reason(content_type: str, body: bytes) -> str | None:
    """Why Slack would refuse this body, or None when it is a valid webhook payload."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        return "content type is not application/json"
    try:
        payload = json.loads(body)
    except ValueError:
        return "body is not JSON"
    if not isinstance(payload, dict):
        return "body is not a JSON object"
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        return "missing non-empty text"
    blocks = payload.get("blocks")
    if blocks is not None and not (
        isinstance(blocks, list)
        and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
    ):
        return "blocks must be a list of objects with a type"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that stalls mid-request cannot hold up stop() for longer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self._answer(body)

    def do_GET(self) -> None:
        self._answer(b"")

    do_PUT = do_DELETE = do_PATCH = do_GET

    def _answer(self, body: bytes) -> None:
        fake = self.server.fake
        if self.path == API_PATH:
            self._answer_api(body)
            return
        if self.path == UPDATE_PATH:
            self._answer_update(body)
            return
        if self.path.startswith(RESPONSE_PREFIX):
            self._answer_response(body)
            return
        if self.path != fake.path:
            reply = Reply(404)
        elif self.command != "POST" or invalid_reason(self.headers.get("Content-Type", ""), body):
            reply = Reply(400)
        else:
            reply = fake._next_reply()
        headers = {key.lower(): value for key, value in self.headers.items()}
        fake._record(RecordedRequest(self.command, self.path, headers, body, reply.status))
        self._send(reply, reply.text, "text/html")

    def _answer_api(self, body: bytes) -> None:
        fake = self.server.fake
        headers = {key.lower(): value for key, value in self.headers.items()}
        if self.command != "POST":
            reply = Reply.api_error("invalid_request")
        elif headers.get("authorization") != f"Bearer {fake.token}":
            reply = Reply.api_error("invalid_auth")
        elif invalid_reason(headers.get("content-type", ""), body):
            reply = Reply.api_error("invalid_blocks")
        elif json.loads(body).get("channel") not in fake.channels:
            reply = Reply.api_error("channel_not_found")
        else:
            reply = fake._next_reply()
        try:
            ok = reply.status == 200 and json.loads(reply.api_text).get("ok") is True
        except ValueError:  # a deliberately broken answer (a proxy's HTML page)
            ok = False
        recorded = RecordedRequest(self.command, self.path, headers, body, reply.status)
        fake._record(recorded, accepted=ok)
        self._send(reply, reply.api_text, "application/json")

    def _answer_update(self, body: bytes) -> None:
        """`chat.update`: token, a known channel, a `ts`, a valid payload."""
        fake = self.server.fake
        headers = {key.lower(): value for key, value in self.headers.items()}
        payload = _json_object(body)
        if headers.get("authorization") != f"Bearer {fake.token}":
            reply = Reply.api_error("invalid_auth")
        elif payload is None or invalid_reason(headers.get("content-type", ""), body):
            reply = Reply.api_error("invalid_blocks")
        elif payload.get("channel") not in fake.channels:
            reply = Reply.api_error("channel_not_found")
        elif not payload.get("ts"):
            reply = Reply.api_error("message_not_found")
        else:
            reply = Reply()
            with fake._lock:
                fake._updates.append(payload)
        fake._record(RecordedRequest(self.command, self.path, headers, body, 200), accepted=False)
        self._send(reply, reply.api_text, "application/json")

    def _answer_response(self, body: bytes) -> None:
        """A click's `response_url`: JSON with `text` or `blocks`."""
        fake = self.server.fake
        headers = {key.lower(): value for key, value in self.headers.items()}
        payload = _json_object(body)
        ok = (
            self.command == "POST"
            and payload is not None
            and headers.get("content-type", "").startswith("application/json")
            and bool(payload.get("text") or payload.get("blocks"))
        )
        if ok and payload is not None:
            with fake._lock:
                fake._responses.append(payload)
        reply = Reply(200, "ok") if ok else Reply(400, "invalid_payload")
        status = reply.status
        fake._record(RecordedRequest(self.command, self.path, headers, body, status), False)
        self._send(reply, reply.text, "text/html")

    def _send(self, reply: Reply, text: str, content_type: str) -> None:
        fake = self.server.fake
        if fake.delay > 0:
            fake._stopping.wait(fake.delay)
        data = text.encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if reply.retry_after is not None:
                self.send_header("Retry-After", str(reply.retry_after))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), so stop() returns with no thread left
    # behind; stop() first wakes any handler waiting out a configured delay.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], fake: FakeSlack) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


class FakeSlack(ServedInThread):
    def __init__(self, path: str = DEFAULT_PATH, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = path
        self.delay = 0.0
        self.token = "xoxb-test-token"
        self.channels = {"C0TEST"}
        self._address = (host, port)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._standing = Reply()
        self._queued: list[Reply] = []
        self._payloads: list[dict[str, Any]] = []
        self._requests: list[RecordedRequest] = []
        self._updates: list[dict[str, Any]] = []
        self._responses: list[dict[str, Any]] = []

    def _bind(self) -> _Server:
        return _Server(self._address, self)

    def start(self) -> FakeSlack:
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        self._stopping.set()  # wakes any handler waiting out a configured delay
        super().stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlack is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    @property
    def api_url(self) -> str:
        """The Web API base, as a channel's `api_url`."""
        return self.base_url + "/api"

    @property
    def response_url(self) -> str:
        """A click's `response_url`, as Slack would put in an interaction payload."""
        return self.base_url + RESPONSE_PREFIX + "fakeresponsetoken"

    @property
    def updates(self) -> list[dict[str, Any]]:
        """Bodies of accepted `chat.update` calls."""
        with self._lock:
            return list(self._updates)

    @property
    def responses(self) -> list[dict[str, Any]]:
        """Bodies posted to `response_url`."""
        with self._lock:
            return list(self._responses)

    def wait_for_updates(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        wait_until(lambda: len(self.updates) >= count, timeout, f"{count} chat.update(s)")
        return self.updates

    async def wait_for_updates_async(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        what = f"{count} chat.update(s)"
        await wait_until_async(lambda: len(self.updates) >= count, timeout, what)
        return self.updates

    def wait_for_responses(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        what = f"{count} response_url post(s)"
        wait_until(lambda: len(self.responses) >= count, timeout, what)
        return self.responses

    async def wait_for_responses_async(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        what = f"{count} response_url post(s)"
        await wait_until_async(lambda: len(self.responses) >= count, timeout, what)
        return self.responses

    def reply_with(
        self, status: int, body: str | None = None, retry_after: int | None = None
    ) -> None:
        with self._lock:
            self._standing = Reply(status, body, retry_after)

    def reply_next(self, *replies: Reply) -> None:
        with self._lock:
            self._queued.extend(replies)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._payloads)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._payloads.clear()
            self._requests.clear()
            self._updates.clear()
            self._responses.clear()

    def wait_for_payloads(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.payloads) >= count, timeout, f"{count} Slack payload(s)")
        return self.payloads

    async def wait_for_payloads_async(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        what = f"{count} Slack payload(s)"
        await wait_until_async(lambda: len(self.payloads) >= count, timeout, what)
        return self.payloads

    def wait_for_requests(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[RecordedRequest]:
        wait_until(lambda: len(self.requests) >= count, timeout, f"{count} Slack request(s)")
        return self.requests

    async def wait_for_requests_async(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[RecordedRequest]:
        what = f"{count} Slack request(s)"
        await wait_until_async(lambda: len(self.requests) >= count, timeout, what)
        return self.requests

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queued.pop(0) if self._queued else self._standing

    def _record(self, request: RecordedRequest, accepted: bool | None = None) -> None:
        with self._lock:
            self._requests.append(request)
            if accepted if accepted is not None else 200 <= request.status < 300:
                self._payloads.append(json.loads(request.body))
