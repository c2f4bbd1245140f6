"""Slack's mrkdwn: making user text inert, fitting it within Slack's limits, building links.

Slack reads message text as markup: `<!channel>` pings a whole channel and
`<http://evil|Your bank>` shows a link whose label lies about its target. Everything a customer
or a chatbot wrote goes through `escape_mrkdwn` before it reaches Slack; the template renderer
(render.py) applies it to every `{{ ... }}` output of a Slack template, so only a template's
own literal text can carry markup.

Too-long text is cut with a visible marker (`TRUNCATED`) rather than refused: a message over a
block limit is answered `invalid_blocks`, which no retry could fix.
"""

from __future__ import annotations

import re

WORD_JOINER = "\u2060"
TRUNCATED = "\u2026 (truncated)"
_BROADCAST = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")


def escape_mrkdwn(text: str) -> str:
    """User text made inert for Slack's mrkdwn.

    `&`, `<` and `>` become entities, as Slack documents, so no `<!here>`, `<@U123>`, `<#C1>`
    or `<url|label>` survives. A bare `@channel`, `@here` or `@everyone` gets a word joiner
    after the `@`, so it reads the same but pings nobody even where Slack links names.
    Formatting characters (`*`, `_`, `~`, backticks) are left alone: they can only change how
    the text looks, never whom it reaches or where a link goes.
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub(lambda match: "@" + WORD_JOINER + match.group(1), escaped)


def cut(text: str, limit: int, marker: str = TRUNCATED) -> str:
    """`text` at most `limit` characters long; a cut one ends with `marker`."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return marker[:limit]
    return text[: limit - len(marker)].rstrip() + marker


def escape_fitted(text: str, limit: int, marker: str = TRUNCATED) -> str:
    """`escape_mrkdwn(text)` no longer than `limit`, cutting the raw text (never the escaped
    one, which could leave half an entity behind)."""
    size = limit
    while True:
        escaped = escape_mrkdwn(cut(text, size, marker))
        if len(escaped) <= limit:
            return escaped
        # Shrink in proportion to the overflow; at least one character, so this ends.
        size = min(size - 1, size * limit // len(escaped))


def fit_escaped(escaped: str, limit: int, marker: str = TRUNCATED) -> str:
    """Already-escaped mrkdwn (a rendered template) cut to `limit`, dropping an entity the cut
    split in half so Slack never shows a stray `&am`."""
    if len(escaped) <= limit:
        return escaped
    kept = _PARTIAL_ENTITY.sub("", escaped[: max(0, limit - len(marker))])
    return kept.rstrip() + marker


def slack_link(url: str, label: str) -> str:
    """A mrkdwn link whose target and label cannot be bent by what is inside either.

    The URL is already a validated http(s) URL; `&<>` become entities and `|` is percent-encoded
    so nothing in it can end the target early and supply a label of its own.
    """
    target = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{target}|{escape_mrkdwn(label)}>"
