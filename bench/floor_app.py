"""The floor: a raw ASGI app that reads the body and answers 202 with a fixed JSON body.
Nothing any real service could do is faster on this server stack."""

from __future__ import annotations

from typing import Any

BODY = b'{"id":"0","status":"accepted"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
