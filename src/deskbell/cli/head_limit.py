"""uvicorn's httptools protocol with a bound on each request's head (request line + headers).

httptools keeps every header of a request in memory until the blank line that ends them, with
no limit: one client sending endless headers makes the server buffer all of them, before any
authentication can run. This protocol refuses a head over MAX_HEAD_BYTES or MAX_HEADER_FIELDS
with `431 Request Header Fields Too Large`, closes the connection and reads no further.

How, at no measurable cost per request: while a head is open, the bytes of each received chunk
are added up, which bounds what an unfinished head can make the parser buffer (to one read
beyond the limit). When a head completes, its fields are counted, and its exact size (URL and
header lines) is summed only if the chunks could hold more than the limit, which is rare: a
whole head can arrive in one read, together with a body. Bodies are never counted.
`deskbell serve` passes the class to uvicorn as `http=`, for one process or many.

It also answers ingest (`POST /v1/assistance-requests`) with one write instead of two: uvicorn
writes an answer's head and its body with a `transport.write` each, and uvloop sends each at
once, a syscall apiece (on loopback the receiving side's work is charged to it too). Ingest's
endpoint always sends its body right after its head, so for that route the head is held and
written with the body (`_HeadWithBody`); every other route, whose body may come later (a
stream), is written as uvicorn writes it.
"""

from __future__ import annotations

from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from deskbell.api.routes.ingest import PATH as INGEST_PATH
from deskbell.errors import DeskbellError

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100
LINE_OVERHEAD = 4  # ": " and CRLF of a header line, so the exact count matches the wire
TOO_LARGE = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"


class HeadTooLarge(DeskbellError):
    """Raised from a parser callback to stop parsing a head that is over a limit."""


class HeadLimitedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing a head over 16 KiB or 100 header fields with a 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # awaiting (the rest of) a request line and headers
        self._head_received = 0  # bytes of whole chunks received while the head was open
        self._chunk = 0  # bytes of the chunk being parsed

    def data_received(self, data: bytes) -> None:
        # HttpToolsProtocol.data_received, plus the counting and the 431
        self._chunk = len(data)
        if self._head_open:
            self._head_received += self._chunk
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse(str(exc.__context__))
            else:
                self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_open and self._head_received > MAX_HEAD_BYTES:
            self._refuse(TOO_LARGE)

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._head_open = False
        if len(self.headers) > MAX_HEADER_FIELDS:
            raise HeadTooLarge(f"more than {MAX_HEADER_FIELDS} header fields")
        # The head is at most what came while it was open plus this chunk; only when that
        # could pass the limit is it measured exactly.
        if self._head_received + self._chunk > MAX_HEAD_BYTES and self._exact_size() > (
            MAX_HEAD_BYTES
        ):
            raise HeadTooLarge(TOO_LARGE)
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        scope = self.scope
        if (
            scope["method"] == "POST"
            and scope["path"] == INGEST_PATH
            and not cycle.waiting_for_100_continue  # that interim answer goes out at once
            and cycle.transport is self.transport  # not refused by uvicorn (its 503 is sent)
        ):
            cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

    def _exact_size(self) -> int:
        return len(self.url) + sum(len(n) + len(v) + LINE_OVERHEAD for n, v in self.headers)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._head_open = True
        self._head_received = 0

    def _refuse(self, why: str) -> None:
        self._head_open = False
        self.logger.warning("refused a request head: %s", why)
        body = orjson.dumps(
            {"error": {"code": "headers_too_large", "message": why, "details": None}}
        )
        head = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()


class _HeadWithBody:
    """The transport as one ingest answer's cycle sees it: its first write (the head) is held
    and goes out with the second (the body) in one write; later writes pass straight on. A
    close writes what is held first, so an answer cut short (an app error after the head) ends
    as it did."""

    __slots__ = ("_head", "_transport", "_writes")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head = b""
        self._writes = 0

    def write(self, data: bytes) -> None:
        self._writes += 1
        if self._writes == 1:
            self._head = data
        elif self._writes == 2:
            head, self._head = self._head, b""
            self._transport.write(head + data)
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._writes == 1:
            self._writes = 2
            self._transport.write(self._head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)
