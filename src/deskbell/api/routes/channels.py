"""The channels of the active config: list them, and send a test notification through one.

A test send goes straight through the channel, outside the delivery ledger: nothing is stored,
nothing is retried, and the answer is the channel's own verdict (status, duration, error), so
an operator can tell a wrong token from a Slack outage before a customer is waiting. It sends
a real message to the real destination, which is why it needs the `admin` scope (SPEC §3).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import ErrorOut
from deskbell.channels.kit.sample import send_sample
from deskbell.models import Outcome

router = APIRouter(tags=["channels"])

ChannelName = Annotated[str, Path(min_length=1, max_length=200)]


class ChannelOut(BaseModel):
    name: str
    type: str
    templates: list[str]
    settings: dict[str, Any]


class ChannelsOut(BaseModel):
    items: list[ChannelOut]


class TestSendOut(BaseModel):
    channel: str
    type: str
    status: Outcome
    duration_ms: float
    error: str | None
    retry_after: float | None


@router.get("/v1/channels", response_model=ChannelsOut)
async def list_channels(runtime: RuntimeDep) -> ChannelsOut:
    """Every channel of the active config with its type, the templates it renders and its
    settings; secrets (URLs, tokens, passwords, header values) are shown as `**********`."""
    return ChannelsOut(
        items=[
            ChannelOut(
                name=name,
                type=settings.type,
                templates=list(settings.TEMPLATES),
                settings=settings.model_dump(mode="json", by_alias=True, exclude={"type"}),
            )
            for name, (_, settings) in sorted(runtime.channels().items())
        ]
    )


@router.post(
    "/v1/channels/{name}/test",
    response_model=TestSendOut,
    responses={404: {"model": ErrorOut, "description": "no channel of that name"}},
)
async def test_channel(name: ChannelName, runtime: RuntimeDep) -> TestSendOut:
    """Send a sample notification through channel `name` now and report what it did.

    Answers 200 whatever the channel's outcome; `status` is `sent`, `transient` or
    `permanent`, as a delivery's attempt would record it.
    """
    entry = runtime.channels().get(name)
    if entry is None:
        known = sorted(runtime.channels())
        raise ApiError(404, "not_found", f"no channel {name!r}", {"known_channels": known})
    channel, settings = entry
    result = await send_sample(name, channel, settings, runtime.clock.now())
    return TestSendOut(
        channel=result.channel,
        type=result.type,
        status=result.status,
        duration_ms=result.duration_ms,
        error=result.error,
        retry_after=result.retry_after,
    )
