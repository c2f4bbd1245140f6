"""Text helpers every channel shares: which request fields a human sees, in which order, and how
to make user text safe for a single-line header.

Keeping the field list here means Slack, email and the console show the same facts in the same
order, and a new request field is added to every channel in one place. `template_context` is what
every template (default or from config, see render.py) may use.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

from deskbell.models import AssistanceRequestIn

if TYPE_CHECKING:  # base.py imports the renderer, which imports this module
    from deskbell.channels.base import Message

ELLIPSIS = "\u2026"
WORD_JOINER = "\u2060"  # invisible, and no chat service reads a mention across it
# Broadcasts (`@channel`, `@here`: Slack and Mattermost; `@everyone`, `@here`: Discord; `@all`:
# Mattermost) and tag openers that ping (`<@U123>` a Slack user, `<@123>` a Discord one,
# `<!here>` Slack).
_MENTION = re.compile(r"@(channel|here|everyone|all)\b|<([@!])", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# Categories a header or a one-line label must never carry: controls (CR, LF, NUL, ...), format
# characters (bidi overrides can make a subject read backwards), line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass(frozen=True)
class Detail:
    """One labelled fact about a request, such as ("Email", "ana@example.com")."""

    label: str
    value: str


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marking a cut with an ellipsis."""
    if limit < 1:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + ELLIPSIS


def single_line(text: str, limit: int | None = None) -> str:
    """`text` safe for a mail header or a one-line label: every control, format and separator
    character becomes a space, runs of whitespace collapse, and the result is trimmed.

    A CR or LF that reached a header could start a new header (header injection); that is why
    this removes them rather than trusting the mail library to refuse them.
    """
    cleaned = "".join(
        " " if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in text
    )
    cleaned = _SPACES.sub(" ", cleaned).strip()
    return cleaned if limit is None else truncate(cleaned, limit)


def defuse_mentions(text: str) -> str:
    """`text` with every mention a chat service would act on broken by a word joiner after
    its `@` (or after a `<` before `@`/`!`): it reads the same and pings nobody.

    For targets that show plain text as it is written (Apprise's Discord, Mattermost, JSON):
    markup each service escapes itself, but a bare `@everyone` is text to every escaper.
    """
    return _MENTION.sub(_defused, text)


def _defused(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return "@" + WORD_JOINER + match.group(1)
    return "<" + WORD_JOINER + match.group(2)


def details(request: AssistanceRequestIn) -> list[Detail]:
    """Who asked and in which language, in display order; absent fields are left out.

    The conversation link and the metadata are not here: each channel shows them its own way
    (a Slack link, an HTML anchor, a key/value list).
    """
    found: list[Detail] = []
    customer = request.customer
    if customer is not None:
        for label, value in (
            ("Customer", customer.name),
            ("Email", customer.email),
            ("Phone", customer.phone),
            ("Customer id", customer.id),
        ):
            if value:
                found.append(Detail(label, value))
    if request.language:
        found.append(Detail("Language", request.language))
    return found


def metadata_items(request: AssistanceRequestIn) -> list[Detail]:
    """Metadata as display strings, keys sorted so two renderings of one request match."""
    return [Detail(key, _display(value)) for key, value in sorted(request.metadata.items())]


def _display(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def template_context(message: Message) -> dict[str, Any]:
    """What a template may use. Adding a key here is how a template gets a new fact.

    Optional facts are always present (None when absent; `customer` always has its four keys),
    so `{% if customer.name %}` works in a strict template without a guard for each level.
    """
    request = message.request
    customer = request.customer
    return {
        "topic": request.topic,
        "description": request.description,
        "details": details(request),
        "metadata": metadata_items(request),
        "customer": {
            key: getattr(customer, key) if customer is not None else None
            for key in ("id", "name", "email", "phone")
        },
        "language": request.language,
        "conversation_url": request.conversation_url,
        "request": request.model_dump(mode="json"),
        "request_id": message.request_id,
        "delivery_id": message.delivery_id,
        "channel": message.channel,
        "attempt": message.attempt,
        "accepted_at": message.accepted_at.isoformat(timespec="seconds"),
        "escalation_step": message.escalation_step,  # an unclaimed request's SLA step, or None
    }


MIN_TOKEN_SEGMENT = 16  # a path segment this long in a secret URL is taken for a token


def secret_fragments(secret: str) -> list[str]:
    """What of `secret` may show up in an error, longest first: the whole of it and, when it
    is a URL, its path (with and without the query), its query, its password and every path
    segment or query value long enough to be a token. A peer that answers "Cannot POST
    /hooks/<token>" echoes only the path."""
    fragments = {secret}
    parts = urlsplit(secret)
    if parts.scheme and parts.netloc:
        path = parts.path.strip("/")
        if path:
            fragments.add(parts.path)
            fragments.add(path)
        if parts.query:
            fragments.update((parts.query, f"{parts.path}?{parts.query}"))
        if parts.password:
            fragments.add(parts.password)
        pieces = path.split("/") + [value for _, value in parse_qsl(parts.query)]
        fragments.update(p for p in pieces if len(p) >= MIN_TOKEN_SEGMENT)
        fragments.update(quote(f, safe="") for f in list(fragments) if quote(f, safe="") != f)
    return sorted((f for f in fragments if f), key=len, reverse=True)


def redact(text: str | None, secret: str) -> str | None:
    """`text` with every fragment of `secret` (above) replaced, for error strings that leave
    the channel (a Slack webhook URL is a credential)."""
    if text is None or not secret:
        return text
    for fragment in secret_fragments(secret):
        text = text.replace(fragment, "<redacted>")
    return text
