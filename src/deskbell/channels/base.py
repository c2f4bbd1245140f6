"""What every channel shares: the Message it gets, the SendResult it returns, its settings base
and the one HTTP status classifier.

A channel formats and sends once, then reports. It never sleeps or loops to retry: only the
delivery worker decides what happens next (see delivery/dispatch.py).
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from deskbell.channels.kit.render import (
    TemplateOverride,
    TemplateSpec,
    compile_override,
    load_override,
)
from deskbell.clock import Clock, SystemClock
from deskbell.errors import TemplateError, UnsendableMessage
from deskbell.models import AssistanceRequestIn, Outcome

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Message:
    """One delivery's input: the accepted request plus the ids a channel may show or use."""

    delivery_id: str
    request_id: str
    channel: str
    request: AssistanceRequestIn
    accepted_at: datetime
    attempt: int = 1
    # A signed link to claim the request (SPEC §9), for channels with `CLAIM_LINKS`; None
    # without DESKBELL_SECRET_KEY. Templates see it as `claim_url`.
    claim_url: str | None = None
    # Set when this delivery is an SLA escalation step (SPEC §9): nobody has claimed the
    # request in time. Templates see it as `escalation_step` (None otherwise).
    escalation_step: int | None = None


@dataclass(frozen=True)
class SendResult:
    """Sent, transient (worth retrying, maybe not before `retry_after` seconds) or permanent."""

    outcome: Outcome
    error: str | None = None
    retry_after: float | None = None

    @classmethod
    def sent(cls) -> SendResult:
        return cls(Outcome.SENT)

    @classmethod
    def transient(cls, error: str, retry_after: float | None = None) -> SendResult:
        return cls(Outcome.TRANSIENT, error, retry_after)

    @classmethod
    def permanent(cls, error: str) -> SendResult:
        return cls(Outcome.PERMANENT, error)

    @classmethod
    def unsendable(cls, exc: UnsendableMessage) -> SendResult:
        """Permanent: the message, not the channel, is at fault (see `building`)."""
        return cls(Outcome.PERMANENT, str(exc)[:500])


@contextmanager
def building() -> Iterator[None]:
    """Wrap the step that turns a Message into what goes on the wire (render, encode,
    serialise), before anything is sent.

    That step depends only on the message and the channel's settings, so whatever it raises
    will be raised again on every retry: it becomes `UnsendableMessage`, which a channel
    reports as `SendResult.unsendable` (permanent, and so never held against the channel's
    breaker). A channel does its I/O outside this block: only the I/O may be worth a retry.
    """
    try:
        yield
    except UnsendableMessage:
        raise
    except TemplateError as exc:  # already names the template, its origin and the line
        raise UnsendableMessage(str(exc)) from exc
    except Exception as exc:
        raise UnsendableMessage(f"cannot render/encode: {type(exc).__name__}: {exc}") from exc


class RetryConfig(BaseModel):
    """The `retry:` block of a channel; defaults as SPEC §5. delivery/policy.py turns it into
    a RetryPolicy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=10, ge=1, le=1000)
    max_age: float = Field(default=24 * 3600, gt=0, description="seconds since accept")
    initial: float = Field(default=1.0, gt=0, description="first backoff, seconds")
    max: float = Field(default=300.0, gt=0, description="backoff cap, seconds")
    max_retry_after: float = Field(
        default=3600.0, gt=0, description="cap on a server's Retry-After, seconds"
    )


class BreakerConfig(BaseModel):
    """The `breaker:` block of a channel; delivery/breaker.py runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=5, ge=1, le=1000, description="consecutive transient failures")
    cool_down: float = Field(default=30.0, gt=0, le=86400, description="seconds paused")


class ChannelSettings(BaseModel):
    """Keys every channel block accepts. A channel module subclasses this with its own keys;
    secrets are `SecretStr` so they never print."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    timeout: float = Field(default=15.0, gt=0, le=300, description="whole send, seconds")
    connect_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    max_concurrency: int = Field(
        default=8, ge=1, le=1024, description="sends of this channel at once, per worker process"
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    template: dict[str, TemplateOverride] = Field(default_factory=dict)

    # The templates this channel type renders (see channels/kit/render.py); a subclass sets it.
    TEMPLATES: ClassVar[Mapping[str, TemplateSpec]] = {}
    # Whether this channel's messages carry an email-style claim link (`Message.claim_url`):
    # a bearer link, so only where the recipients are the people who may claim.
    CLAIM_LINKS: ClassVar[bool] = False
    # A minimal valid block of this type, `type:` included: what the registry test builds and
    # the contract test (tests/channels/contract.py) points at a local peer. A subclass sets it.
    EXAMPLE: ClassVar[Mapping[str, Any]] = {}

    @field_validator("template", mode="before")
    @classmethod
    def _read_template_files(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        config_dir = (info.context or {}).get("config_dir")
        base = Path(config_dir) if config_dir is not None else None
        return {name: load_override(item, base) for name, item in value.items()}

    @model_validator(mode="after")
    def _templates_compile(self) -> ChannelSettings:
        unknown = sorted(set(self.template) - set(self.TEMPLATES))
        if unknown:
            known = ", ".join(self.TEMPLATES) or "none"
            raise ValueError(f"template: unknown {unknown}; {self.type} channels have: {known}")
        for name, override in self.template.items():
            try:
                compile_override(name, override, self.TEMPLATES[name])
            except TemplateError as exc:  # a ValueError, so pydantic reports it with the key
                raise ValueError(str(exc)) from None
        return self


@dataclass(frozen=True)
class ChannelContext:
    """Shared resources a channel may use; injected so tests hand in real local peers."""

    http: httpx.AsyncClient
    clock: Clock = field(default_factory=SystemClock)
    console: IO[str] | None = None


class Channel(Protocol):
    name: str

    async def send(self, message: Message) -> SendResult:
        """Send once. Report failures as a SendResult; raise only for bugs. A message that
        cannot be built is `SendResult.unsendable` (raising `UnsendableMessage` means the same:
        the worker records it as permanent)."""
        ...


async def send_once(channel: Channel, settings: ChannelSettings, message: Message) -> SendResult:
    """One send through `channel`, as the delivery worker and test sends both make it: bounded
    by the channel's timeout, never raising.

    `UnsendableMessage` is the message's fault (it cannot be rendered or encoded for this
    channel): permanent, so a delivery goes dead with the reason, falls back, and the
    channel's breaker never hears of it. Any other exception is a bug of ours, not of the
    message, and one bad channel must not take a worker down or lose a delivery, so it is
    reported as a transient failure (retried) and logged with its traceback.
    """
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for runs the send as a task of its own.
        async with asyncio.timeout(settings.timeout + 1.0):
            return await channel.send(message)
    except TimeoutError:
        return SendResult.transient(f"timeout after {settings.timeout:g}s")
    except UnsendableMessage as exc:
        return SendResult.unsendable(exc)
    except Exception as exc:
        log.exception("channel_crashed", channel=message.channel, delivery_id=message.delivery_id)
        return SendResult.transient(f"channel error: {type(exc).__name__}: {exc}")


ChannelFactory = Callable[[str, Any, ChannelContext], Channel]


@dataclass(frozen=True)
class ChannelType:
    """A registered channel kind: its `type:` name, its settings model and how to build it."""

    name: str
    settings_model: type[ChannelSettings]
    factory: ChannelFactory


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_http(
    status: int, headers: Mapping[str, str], body: str = "", now: datetime | None = None
) -> SendResult:
    """The shared HTTP rule: 2xx sent; 408, 429 and 5xx transient (with Retry-After);
    every other status permanent, because sending the same thing again cannot help."""
    excerpt = body.strip()[:200]
    detail = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if 200 <= status < 300:
        return SendResult.sent()
    if status in (408, 429) or status >= 500:
        return SendResult.transient(detail, parse_retry_after(headers.get("retry-after"), now))
    return SendResult.permanent(detail)


def classify_http_error(exc: httpx.HTTPError) -> SendResult:
    """A failure before any answer: timeouts and connection errors are worth retrying;
    a URL httpx cannot use never will be."""
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return SendResult.permanent(f"invalid URL: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return SendResult.transient(f"timeout: {type(exc).__name__}")
    return SendResult.transient(f"{type(exc).__name__}: {exc}")


def http_timeout(settings: ChannelSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
