"""Property tests over arbitrary unicode: whatever a customer types, Slack gets no mention,
no link it did not ask for, and valid Block Kit; email gets no extra header line and HTML
that shows the text instead of running it. (Tests only: channels/ belongs to its module's
owners; a finding here is reported, not patched from this side.)"""

from __future__ import annotations

import email
import email.policy
import re
from html.parser import HTMLParser
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskbell.channels.base import ChannelContext
from deskbell.channels.email import EmailSettings, build_email
from deskbell.channels.slack import SlackSettings, build_payload
from tests.fakes import make_message

TEXT = st.text(max_size=400)
SHORT = st.text(max_size=120)
MENTION = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)
# What a hostile customer would try; mixed into the generated text so every run covers them.
ATTACKS = st.sampled_from(
    [
        "<!channel>", "<!here>", "@channel", "@HERE", "@everyone", "<@U12345>", "<#C12345>",
        "<http://evil.example|Your bank>", "<https://x|y>", "&lt;!channel&gt;", "<!subteam^S1>",
        "\r\nBcc: victim@example.com", "\nX-Injected: 1", "\u2028", "\u0085", "<script>x</script>",
        '"}]},{"type":"section"', "*bold* _it_ ~s~ `c`",
    ]
)  # fmt: skip
HOSTILE = st.lists(st.one_of(TEXT, ATTACKS), min_size=1, max_size=4).map("".join)
NONBLANK = HOSTILE.filter(lambda s: s.strip() != "")


def request(description: str, name: str, meta: str) -> dict[str, Any]:
    return {
        "topic": "sales",
        "description": description[:4000],
        "customer": {"name": name[:256], "id": name[:256], "email": "ana@example.com"},
        "metadata": {"note": meta[:1024], (meta[:64] or "k"): "v"},
    }


def mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    """Every string Slack parses as mrkdwn in a payload."""
    found = [payload["text"]]
    for block in payload["blocks"]:
        text = block.get("text")
        if isinstance(text, dict) and text.get("type") == "mrkdwn":
            found.append(text["text"])
        for item in [*block.get("fields", []), *block.get("elements", [])]:
            if item.get("type") == "mrkdwn":
                found.append(item["text"])
    return found


def block_shape(payload: dict[str, Any]) -> list[Any]:
    return [(b["type"], sorted(b)) for b in payload["blocks"]]


SLACK = SlackSettings.model_validate({"type": "slack", "webhook_url": "https://hooks.example/x"})


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(description=NONBLANK, name=HOSTILE, meta=HOSTILE)
def test_slack_text_cannot_mention_link_or_break_blocks(
    description: str, name: str, meta: str
) -> None:
    message = make_message(request(description, name, meta))
    payload = build_payload(message, SLACK)
    for text in mrkdwn_texts(payload):
        assert not {"<", ">"} & set(text), text  # no <!..>, <@..>, <#..>, <url|label>
        assert not MENTION.search(text), text
    plain = build_payload(make_message(request("x", "n", "m")), SLACK)
    assert block_shape(payload) == block_shape(plain)  # user text adds or removes no block
    for block in payload["blocks"]:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        assert len(block.get("fields", [])) <= 10
        assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))


EMAIL = EmailSettings.model_validate(
    {"type": "email", "smtp_url": "smtp://127.0.0.1:25", "from": "d@example.com",
     "to": ["t@example.com"]}
)  # fmt: skip


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)


def html_tags(html: str) -> set[str]:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def render_email(description: str, name: str, meta: str) -> Any:
    # build_email only formats; the client is never opened, so it needs no closing.
    ctx = ChannelContext(httpx.AsyncClient())
    return build_email(make_message(request(description, name, meta)), EMAIL, ctx)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(description=NONBLANK, name=HOSTILE, meta=HOSTILE)
def test_email_headers_stay_single_lines_and_html_is_escaped(
    description: str, name: str, meta: str
) -> None:
    marker = "<xss-marker>"
    mail = render_email(description + marker, name + marker, meta)
    for key, value in mail.items():
        assert not {"\r", "\n"} & set(str(value)), (key, value)
    raw = mail.as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    reference = render_email("x", "n", "m")
    assert sorted(k.lower() for k in parsed) == sorted(
        k.lower() for k in reference
    )  # no header was added by the text
    html = parsed.get_body(("html",))
    assert html is not None
    content = html.get_content()
    tags = html_tags(content)
    assert "xss-marker" not in tags
    assert tags <= html_tags(render_email("x", "n", "m").get_body(("html",)).get_content())
    assert "&lt;xss-marker&gt;" in content
