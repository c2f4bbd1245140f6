"""`GET /metrics`: Prometheus text. Needs the `read` scope (SPEC §3) unless
DESKBELL_METRICS_OPEN=true, for a scraper on a trusted network that cannot send a key.

The backlog gauges come from one grouped query per scrape (`Store.backlog`). If the database
does not answer, the counters are still served (they say what happened before the outage)
with the backlog at zero, and /readyz says why.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError

from deskbell.api.deps import RuntimeDep
from deskbell.metrics import CONTENT_TYPE, Backlog

router = APIRouter(tags=["operations"])
log = structlog.get_logger(__name__)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    backlog: Backlog = {}
    try:
        backlog = await runtime.store.queue.backlog()
    except (OperationalError, DBAPIError, OSError) as exc:
        log.warning("metrics_backlog_failed", error=str(exc))
    unclaimed: int | None = None  # deskbell_requests_unclaimed: one count through an index
    try:
        unclaimed = await runtime.store.handoff.unclaimed()
    except (OperationalError, DBAPIError, OSError) as exc:
        log.warning("metrics_unclaimed_failed", error=str(exc))
    body = runtime.metrics.render(backlog, runtime.clock.now(), unclaimed=unclaimed)
    return Response(body, media_type=CONTENT_TYPE)
