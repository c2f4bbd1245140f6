"""uvicorn's httptools protocol with a bound on each request's head (request line + headers).

httptools keeps every header of a request in memory until the blank line that ends them, with
no limit: one client sending endless headers makes the server buffer all of them, before any
authentication can run. This protocol refuses a head over MAX_HEAD_BYTES or MAX_HEADER_FIELDS
with `431 Request Header Fields Too Large`, closes the connection and reads no further.

Two counts, both only while a head is open: bytes per received chunk (bounds what an unfinished
head can make the parser buffer, to one read beyond the limit) and, in the parser callbacks,
the exact size of the URL and of each header (a whole head that arrives in one read). Bodies
are not counted, so a request's cost is one comparison per chunk and one addition per header.
`deskbell serve` passes the class to uvicorn as `http=`, for one process or many.
"""

from __future__ import annotations

from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100
LINE_OVERHEAD = 4  # ": " and CRLF of a header line, so the exact count matches the wire


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head that is over a limit."""


class HeadLimitedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing a head over 16 KiB or 100 header fields with a 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # awaiting (the rest of) a request line and headers
        self._head_received = 0  # bytes of chunks received since the head opened
        self._head_size = 0  # exact: URL and header lines seen by the parser
        self._head_fields = 0

    def data_received(self, data: bytes) -> None:
        if not self._head_open:
            super().data_received(data)
            return
        self._head_received += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse(str(exc.__context__))
                return
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
            self._refuse(f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._head_fields = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        self._head_size += len(name) + len(value) + LINE_OVERHEAD
        if self._head_fields > MAX_HEADER_FIELDS:
            raise HeadTooLarge(f"more than {MAX_HEADER_FIELDS} header fields")
        if self._head_size > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
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
