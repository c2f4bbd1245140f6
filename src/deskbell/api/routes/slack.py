"""`POST /v1/slack/interactions`: a click on a message's Claim button, sent by Slack (SPEC §9).

No bearer credential: Slack cannot send one. The request's Slack signature is its
authentication (api/slack_signature.py), checked against the `signing_secret` of every Slack
channel of the active config before anything in the body is read: a missing or bad signature,
or a timestamp more than five minutes off, is a 401 that changes nothing.

Then the request is claimed through the handoff service (`via: slack`, by the Slack user's
name, their id when Slack sends none) and Slack gets its 200 at once (it wants one within
3 s). The message is updated after the answer: through `chat.update` for a channel that
posted it with the Web API, else the click's `response_url`. Whoever clicks after someone
else claimed is told who was first, in a note only they see. Clicks on other buttons (the
conversation link) are answered 200 and ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from deskbell import handoff
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.limits import read_body
from deskbell.api.slack_signature import Verdict, check_headers, matches
from deskbell.channels.kit.mrkdwn import escape_mrkdwn
from deskbell.channels.kit.slack_claim import CLAIM_ACTION_ID, claimed_blocks, claimed_text
from deskbell.channels.slack import SlackChannel, SlackSettings
from deskbell.errors import NotFound
from deskbell.handoff import HandoffOutcome
from deskbell.storage.ids import parse_id
from deskbell.wiring import Runtime

router = APIRouter(tags=["handoff"])
log = structlog.get_logger(__name__)

PATH = "/v1/slack/interactions"
# Slack sends the whole message back with a click: 50 blocks of up to 3,000 characters.
MAX_BODY_BYTES = 512 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SlackUser(_Model):
    id: str
    name: str | None = None
    username: str | None = None


class SlackAction(_Model):
    action_id: str = ""
    block_id: str | None = None
    value: str | None = None


class SlackContainer(_Model):
    channel_id: str | None = None
    message_ts: str | None = None


class SlackMessage(_Model):
    ts: str | None = None
    blocks: list[dict[str, Any]] | None = None


class Interaction(_Model):
    """The part of Slack's `block_actions` payload a claim needs."""

    type: str
    user: SlackUser | None = None
    actions: list[SlackAction] = []
    container: SlackContainer = SlackContainer()
    message: SlackMessage | None = None
    response_url: str | None = None


Found = tuple[str, SlackChannel, SlackSettings]


@router.post(
    PATH,
    status_code=200,
    responses={
        200: {"description": "handled (or ignored: not a Claim click); Slack wants nothing"},
        400: {"description": "not a Slack interaction payload"},
        401: {"description": "missing or bad Slack signature, or a stale timestamp"},
        413: {"description": "body too large"},
    },
)
async def interactions(
    request: Request, runtime: RuntimeDep, background: BackgroundTasks
) -> Response:
    """A Slack interaction (form field `payload`, JSON), signed by the Slack app."""
    body = await read_body(request, MAX_BODY_BYTES)
    channels = _signed_by(runtime, request, body)
    interaction = _parse(body)
    action = next((a for a in interaction.actions if a.action_id == CLAIM_ACTION_ID), None)
    if interaction.type != "block_actions" or action is None or interaction.user is None:
        return Response(status_code=200)
    found = _channel_for(channels, interaction)
    user = interaction.user
    by = (user.name or user.username or user.id).strip() or user.id
    request_id = parse_id(action.value or "")
    if request_id is None:
        note = "This request is not known to deskbell."
        background.add_task(_tell, found, interaction, note)
        return Response(status_code=200)
    try:
        outcome = await handoff.claim(runtime, request_id, by=by, via="slack")
    except NotFound:
        background.add_task(_tell, found, interaction, "This request is not known to deskbell.")
        return Response(status_code=200)
    except ValueError as exc:  # a name the handoff refuses (control characters, too long)
        background.add_task(
            _tell, found, interaction, escape_mrkdwn(f"Cannot claim as {by!r}: {exc}.")
        )
        return Response(status_code=200)
    log.info("slack_claim", request_id=request_id, by=by, won=outcome.won, state=outcome.state)
    background.add_task(_update, found, interaction, outcome)
    if not outcome.won:
        background.add_task(_tell, found, interaction, _taken_note(outcome))
    return Response(status_code=200)


def _signed_by(runtime: Runtime, request: Request, body: bytes) -> list[Found]:
    """The Slack channels whose signing secret signed this body; 401 when none did."""
    checked = check_headers(request.headers, runtime.clock.now().timestamp())
    if checked is Verdict.MISSING:
        raise ApiError(401, "signature_missing", "X-Slack-Signature and timestamp required")
    if checked is Verdict.STALE or not isinstance(checked, tuple):
        raise ApiError(401, "signature_stale", "X-Slack-Request-Timestamp is not within 5 min")
    timestamp, given = checked
    found = [
        (name, channel, settings)
        for name, (channel, settings) in runtime.channels().items()
        if isinstance(settings, SlackSettings)
        and isinstance(channel, SlackChannel)
        and settings.signing_secret is not None
        and matches(settings.signing_secret.get_secret_value(), timestamp, given, body)
    ]
    if not found:
        raise ApiError(401, "signature_invalid", "the Slack signature does not match")
    return found


def _parse(body: bytes) -> Interaction:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=10)
        [raw] = form["payload"]
        return Interaction.model_validate(orjson.loads(raw))
    except (UnicodeDecodeError, ValueError, KeyError, ValidationError) as exc:
        # A JSONDecodeError and a ValidationError are ValueErrors: one answer for all.
        raise ApiError(
            400, "invalid_payload", "expected a form field `payload` with Slack's JSON"
        ) from exc


def _channel_for(channels: list[Found], interaction: Interaction) -> Found:
    """The channel that posted the message: the Web API channel posting to the click's
    Slack channel, else the first whose secret matched (a webhook: `response_url` serves)."""
    where = interaction.container.channel_id
    for item in channels:
        settings = item[2]
        if settings.token is not None and where and settings.channel == where:
            return item
    webhooks = [item for item in channels if item[2].token is None]
    return (webhooks or channels)[0]


def _taken_note(outcome: HandoffOutcome) -> str:
    """Who was first, as mrkdwn (the name escaped: it is a person's text)."""
    if outcome.state == "resolved":
        return f"Already resolved by *{escape_mrkdwn(outcome.resolved_by or 'someone')}*."
    when = outcome.claimed_at.strftime(" at %Y-%m-%d %H:%M UTC") if outcome.claimed_at else ""
    return f"Already claimed by *{escape_mrkdwn(outcome.claimed_by or 'someone')}*{when}."


async def _update(found: Found, interaction: Interaction, outcome: HandoffOutcome) -> None:
    """The message shows who holds the request (after the 200; failures only logged)."""
    resolved = outcome.state == "resolved"
    by = (outcome.resolved_by if resolved else outcome.claimed_by) or "someone"
    at = outcome.resolved_at if resolved else outcome.claimed_at
    if at is None:
        return
    blocks = interaction.message.blocks if interaction.message else None
    payload = {
        "text": claimed_text(by, at, resolved=resolved),
        "blocks": claimed_blocks(blocks, by, at, resolved=resolved),
    }
    name, channel, _ = found
    message_ts = interaction.message.ts if interaction.message else None
    ts = interaction.container.message_ts or message_ts
    result = await channel.update(
        payload,
        response_url=interaction.response_url,
        channel_id=interaction.container.channel_id,
        ts=ts,
    )
    if result.error:
        log.warning("slack_update_failed", channel=name, error=result.error)


async def _tell(found: Found, interaction: Interaction, note: str) -> None:
    """A note only the person who clicked sees."""
    name, channel, _ = found
    payload = {"response_type": "ephemeral", "replace_original": False, "text": note}
    result = await channel.respond(interaction.response_url, payload)
    if result.error:
        log.warning("slack_note_failed", channel=name, error=result.error)
