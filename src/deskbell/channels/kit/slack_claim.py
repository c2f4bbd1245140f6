"""The Slack handoff in blocks: the Claim button a message carries, and the message once
someone has claimed it (SPEC §9).

The button's `value` is the request id and its `action_id` is `CLAIM_ACTION_ID`; the actions
block that holds it has the block id `CLAIM_BLOCK_ID`, so the claimed version of a message
finds it again whatever else the message holds (Slack sends the message's blocks back with
each click) and replaces it with a line that says who took the request and when. Names come
from Slack users and are escaped like any other user text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deskbell.channels.kit.mrkdwn import escape_fitted

CLAIM_ACTION_ID = "deskbell_claim"
CLAIM_BLOCK_ID = "deskbell_handoff"
CLAIMED_BLOCK_ID = "deskbell_claimed"  # the line that replaced the button
NAME_LIMIT = 200
ACTION_VALUE_LIMIT = 2000  # Slack's limit on a button's value


def claim_button(request_id: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": "Claim"},
        "style": "primary",
        "action_id": CLAIM_ACTION_ID,
        "value": request_id[:ACTION_VALUE_LIMIT],
    }


def slack_date(when: datetime) -> str:
    """A time Slack shows in each reader's own zone, with UTC text as the fallback."""
    fallback = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def claimed_line(by: str, at: datetime, *, resolved: bool = False) -> str:
    verb = "Resolved" if resolved else "Claimed"
    return f":raising_hand: {verb} by *{escape_fitted(by, NAME_LIMIT)}* {slack_date(at)}"


def claimed_text(by: str, at: datetime, *, resolved: bool = False) -> str:
    """The plain fallback `text` of an updated message (notifications, screen readers)."""
    verb = "Resolved" if resolved else "Claimed"
    return f"{verb} by {escape_fitted(by, NAME_LIMIT)} at {at.strftime('%Y-%m-%d %H:%M UTC')}"


def claimed_blocks(
    blocks: list[dict[str, Any]] | None, by: str, at: datetime, *, resolved: bool = False
) -> list[dict[str, Any]]:
    """`blocks` with the Claim button replaced by who took the request and when; other buttons
    of that actions block stay. Without the original blocks (Slack did not send them), a
    single line."""
    text = {"type": "mrkdwn", "text": claimed_line(by, at, resolved=resolved)}
    line = {"type": "context", "block_id": CLAIMED_BLOCK_ID, "elements": [text]}
    if not blocks:
        return [line]
    has_line = any(block.get("block_id") == CLAIMED_BLOCK_ID for block in blocks)
    updated: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("block_id") == CLAIM_BLOCK_ID:
            elements = block.get("elements") or []
            rest = [e for e in elements if e.get("action_id") != CLAIM_ACTION_ID]
            if rest:  # the conversation button stays
                updated.append({**block, "elements": rest})
            if not has_line:
                updated.append(line)
        elif block.get("block_id") == CLAIMED_BLOCK_ID:
            updated.append(line)  # updated again (resolved): one line, in its place
        else:
            updated.append(block)
    if not any(block is line for block in updated):
        updated.append(line)
    return updated
