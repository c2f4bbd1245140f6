"""Operations on deliveries: replay of a dead one."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from deskbell.api.deps import DeliveryId, RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import DeliveryOut, ErrorOut, delivery_data, render
from deskbell.errors import InvalidState, NotFound

router = APIRouter(tags=["deliveries"])


@router.post(
    "/v1/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
async def retry_delivery(delivery_id: DeliveryId, runtime: RuntimeDep) -> Response:
    try:
        delivery = await runtime.store.queue.retry_dead(delivery_id, runtime.clock.now())
    except NotFound as exc:
        raise ApiError(404, "not_found", f"no delivery {delivery_id}") from exc
    except InvalidState as exc:
        raise ApiError(409, "not_dead", str(exc)) from exc
    runtime.wake_workers()
    return Response(render(delivery_data(delivery)), 202, media_type="application/json")
