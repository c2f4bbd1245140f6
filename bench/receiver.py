"""A fast stand-in for Slack's Incoming Webhook, for benchmarks: a raw ASGI app under uvicorn
that answers `ok` and remembers when each request mark (`req-NNNNNN` in the text) arrived.

    python bench/receiver.py PORT        # POST /hook records; GET /marks returns {mark: time}
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

import orjson
import uvicorn

MARK = re.compile(rb"req-\d{6}")
arrivals: dict[str, float] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        payload = orjson.dumps(arrivals)
    else:
        now = time.time()
        for mark in MARK.findall(body):
            arrivals.setdefault(mark.decode(), now)
        payload = b"ok"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
