"""The shape of `deskbell.yaml`. Channel blocks are checked by their own module's model
(see channels/), so this file knows only what every config has."""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import pairwise
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from deskbell.channels.base import ChannelSettings
from deskbell.channels.kit import whsec


class RouteConfig(BaseModel):
    """One route. `match` maps a request path to a matcher's YAML, which the matcher kinds
    read (`routing/rules.py`); `config/matchers.py` checks it and puts it in canonical form."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: dict[str, Any] = Field(default_factory=dict)
    to: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    fallback: str | None = None
    # A time window (`{days: mon-fri, hours: "09:00-18:00", tz: Europe/Madrid}`), read by
    # routing/windows.py; config/matchers.py checks it and puts it in canonical form.
    when: dict[str, Any] | None = None
    # SLA escalation (SPEC §9): one step (`escalate_after: 10m`, `escalate_to: [lead]`) or
    # several (`escalate_after: [10m, 30m]`, `escalate_to: [lead, [manager, pager]]`: one
    # entry per step, a channel or a list of channels).
    escalate_after: str | list[str] | None = None
    escalate_to: list[str | list[str]] | None = None

    @model_validator(mode="after")
    def _escalation(self) -> RouteConfig:
        self.escalation_steps()  # raises ValueError naming the rule
        return self

    def escalation_steps(self) -> list[tuple[timedelta, list[str]]]:
        """(after, channels) for each SLA step, in order; [] when the route has none."""
        if self.escalate_after is None and self.escalate_to is None:
            return []
        if self.escalate_after is None or not self.escalate_to:
            raise ValueError("escalate_after and escalate_to go together")
        if isinstance(self.escalate_after, str):
            if not all(isinstance(c, str) for c in self.escalate_to):
                raise ValueError("with one escalate_after, escalate_to is a list of channels")
            return [(parse_duration(self.escalate_after), [str(c) for c in self.escalate_to])]
        afters = [parse_duration(a) for a in self.escalate_after]
        if len(afters) != len(self.escalate_to) or not afters:
            raise ValueError("escalate_to needs one entry (a channel or a list) per escalate_after")
        if len(afters) > MAX_ESCALATION_STEPS:
            raise ValueError(f"at most {MAX_ESCALATION_STEPS} escalation steps")
        if any(b <= a for a, b in pairwise(afters)):
            raise ValueError("escalate_after steps must increase")
        steps = []
        for after, to in zip(afters, self.escalate_to, strict=True):
            channels = [to] if isinstance(to, str) else list(to)
            if not channels:
                raise ValueError("each escalation step names at least one channel")
            steps.append((after, channels))
        return steps


MAX_ESCALATION_STEPS = 10
_DURATION = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `1h`, `2d`: a positive whole number and one unit. Raises ValueError."""
    found = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m, 1h or 2d")
    return timedelta(seconds=int(found.group(1)) * _UNIT[found.group(2)])


def format_duration(value: timedelta) -> str:
    """The shortest form `parse_duration` reads back: `90s`, `10m`, `1h`, `2d`."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNIT[unit] == 0:
            return f"{seconds // _UNIT[unit]}{unit}"
    return f"{seconds}s"


class SourceConfig(BaseModel):
    """A sender that signs its requests (Standard Webhooks) instead of using an API key.

    Several secrets are accepted at once so a sender can rotate: add the new secret, switch
    the sender, then remove the old one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secrets: list[SecretStr] = Field(min_length=1, max_length=10)
    # Telling the bot (SPEC §9, deskbell/callbacks.py): where its requests' events go, signed
    # with `callback_secret` (Standard Webhooks). With a callback_secret the source's requests
    # may also name their own `callback_url` in the body. The URL is kept secret like a
    # webhook channel's (tokens live in URLs) and guarded the same way (SSRF, at load and send).
    callback_url: SecretStr | None = None
    callback_secret: SecretStr | None = None
    allow_private_networks: bool = False

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            if not whsec.is_webhook_secret(secret.get_secret_value()):
                # Never repeat the value: it is a credential.
                raise ValueError(f"each secret must be {whsec.RULE}")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _is_http_url(value.get_secret_value()):
            raise ValueError("must be an http(s) URL such as https://bot.example.com/deskbell")
        return value

    @field_validator("callback_secret")
    @classmethod
    def _callback_whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not whsec.is_webhook_secret(value.get_secret_value()):
            raise ValueError(f"must be {whsec.RULE}")
        return value

    @model_validator(mode="after")
    def _callback_signed(self) -> SourceConfig:
        if self.callback_url is not None and self.callback_secret is None:
            raise ValueError("callback_url needs a callback_secret: every event is signed")
        return self


def _is_http_url(text: str) -> bool:
    """An absolute http(s) URL with a host (the rule of webhook channels' `url`)."""
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class RawConfig(BaseModel):
    """The file before channel blocks are checked against their type's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    default: Literal["reject"] | list[str] = "reject"
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("default", mode="before")
    @classmethod
    def _reject_or_list(cls, value: Any) -> Any:
        if value != "reject" and not isinstance(value, list):
            raise ValueError("must be 'reject' or a list of channel names")
        return value


class DeskbellConfig(BaseModel):
    """A whole, cross-checked config: every channel block validated by its type's model."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    channels: dict[str, ChannelSettings]
    routes: list[RouteConfig]
    default: Literal["reject"] | list[str] = "reject"
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets masked (SecretStr dumps as '**********')."""
        return {
            "channels": {name: ch.model_dump(mode="json") for name, ch in self.channels.items()},
            "routes": [r.model_dump(mode="json", by_alias=True) for r in self.routes],
            "default": self.default,
            "sources": {name: s.model_dump(mode="json") for name, s in self.sources.items()},
        }
