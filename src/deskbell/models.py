"""Domain types shared by every layer.

`AssistanceRequestIn` is both the wire model of the ingest endpoint and the validated payload
that routing and channels read, so a rule written once (topic normalisation, size limits)
holds everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    TypeAdapter,
)

TOPIC_PATTERN = r"^[a-z0-9_.-]{1,64}$"
MAX_DESCRIPTION_CHARS = 4000
MAX_METADATA_KEYS = 50
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def canonical_language(tag: str) -> str:
    """A BCP 47 tag in its canonical casing (RFC 5646 2.1.1): language lower case, a 4-letter
    script title case, a 2-letter region upper case, everything else lower case. Tags are
    case-insensitive, so routing compares the canonical forms (`EN-gb` is `en-GB`)."""
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif len(part) == 2 and part.isalpha():
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def _bcp47(value: str) -> str:
    if not _BCP47.match(value):
        raise ValueError("must be a BCP 47 language tag such as 'es' or 'en-GB'")
    return canonical_language(value)


def _bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
    return value


_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


def _http_url(value: str) -> str:
    """An absolute http(s) URL, kept as the string the bot sent (normalised by pydantic)."""
    return str(_HTTP_URL.validate_python(value))


def _normalise_topic(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


# Constraints before the normaliser (which still runs first): so the JSON schema shows the pattern.
Topic = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN), BeforeValidator(_normalise_topic)]
Description = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_DESCRIPTION_CHARS),
]
ShortText = Annotated[str, StringConstraints(max_length=256)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# I-JSON (RFC 7493 2.2): integers beyond +-(2**53 - 1) are not read exactly by every JSON
# peer (JavaScript, many JSON libraries and orjson past 64 bits), so no channel could carry one.
IJSON_MAX_INT = 2**53 - 1


def _ijson_int(value: object) -> object:
    """Refuse an integer no JSON peer is sure to read back exactly (before the union could
    quietly turn it into a float); booleans, which are ints to Python, pass."""
    if type(value) is int and not -IJSON_MAX_INT <= value <= IJSON_MAX_INT:
        raise ValueError(
            "integers must be within +-(2**53 - 1) (I-JSON, RFC 7493) so every JSON reader "
            "gets them exactly; send a large id as a string"
        )
    return value


MetadataValue = Annotated[
    Annotated[str, StringConstraints(max_length=1024)] | int | float | bool,
    BeforeValidator(_ijson_int),
]


class Customer(BaseModel):
    """Who asked for help; every field optional because bots know different things."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: ShortText | None = None
    name: ShortText | None = None
    email: EmailStr | None = None
    phone: Annotated[str, StringConstraints(max_length=64)] | None = None


class AssistanceRequestIn(BaseModel):
    """What a chatbot posts. Unknown fields are rejected: a typo must not pass silently.
    NaN and Infinity (which Python's JSON writers emit) are refused: JSON cannot store them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    topic: Topic = Field(examples=["sales"])
    description: Description = Field(examples=["Wants a quote for 40 seats"])
    customer: Customer | None = None
    conversation_url: (
        Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)] | None
    ) = Field(default=None, examples=["https://chat.example.com/c/123"])
    language: Annotated[str, StringConstraints(max_length=35), AfterValidator(_bcp47)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], AfterValidator(_bounded_metadata)] = (
        Field(default_factory=dict)
    )
    # Where the bot hears about this request (SPEC §9; deskbell/callbacks.py says who may set
    # it). Read at the HTTP edge and stored on its own column: `exclude` keeps it out of the
    # stored payload, routing and what channels show.
    callback_url: (
        Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)] | None
    ) = Field(
        default=None,
        exclude=True,
        description="Where deskbell sends this request's events (signed Standard Webhooks);"
        " only from a signed source with a callback_secret",
        examples=["https://bot.example.com/deskbell/events"],
    )

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> AssistanceRequestIn:
        """A payload read back from the database, built without validating it again.

        The store keeps only what this model accepted, as its JSON dump without nulls, so
        the values are already valid and normalised, and validating them again on every
        read would cost more than the read (docs/performance.md). The nested `Customer` is
        built too, so the result equals what validation makes. Only for data this model
        dumped: anything else must go through `model_validate`.
        """
        customer = data.get("customer")
        if customer is None:
            return cls.model_construct(**data)
        return cls.model_construct(**{**data, "customer": Customer.model_construct(**customer)})

    def field_value(self, path: str) -> Any:
        """Value at a dotted path (`customer.email`, `metadata.plan`), None when absent.

        Routing rules match on these paths, so the lookup lives with the data it reads.
        """
        if "." not in path and path in _PLAIN_FIELDS:
            return getattr(self, path)  # the common case (`topic`), without a whole dump
        current: Any = self.model_dump(mode="json")
        for part in path.split("."):
            if not isinstance(current, dict) or part not in current:
                return None
            current = current[part]
        return current


# Fields whose value is already what the JSON dump holds (str or None), so routing can read
# them directly.
_PLAIN_FIELDS = frozenset({"topic", "description", "language", "conversation_url"})


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    RETRYING = "retrying"
    DEAD = "dead"
    # An SLA escalation step (kind `escalation`) that a claim or resolve stopped before it
    # was sent (SPEC §9): final, never claimed by a worker, not counted as open or dead.
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    """What one send attempt came to; the worker turns it into a delivery status."""

    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


# The values below are shared by storage, delivery and the API: frozen dataclasses with slots.


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    request_id: str
    channel: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None
    sent_at: datetime | None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    fallback_of: str | None = None
    kind: str | None = None  # None: a route's notification; `escalation` or `event`
    step: int | None = None  # an escalation's SLA step, 1..n


class HandoffState(StrEnum):
    """Where a request is between its message and a person (SPEC §9): `waiting` until
    someone claims it, then `claimed`, then `resolved` (also straight from `waiting`)."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    RESOLVED = "resolved"


# How a claim or resolve came in (`requests.claimed_via`): the SPEC's four, and the CLI.
HANDOFF_VIAS = frozenset({"slack", "email", "api", "ui", "cli"})


@dataclass(frozen=True, slots=True)
class Escalation:
    """One SLA step's delivery to one channel: due at `due_at`, sent at `sent_at`,
    `cancelled` when the request was claimed first."""

    step: int
    channel: str
    status: DeliveryStatus
    due_at: datetime | None
    sent_at: datetime | None
    delivery_id: str


@dataclass(frozen=True, slots=True)
class Handoff:
    """A request's handoff: who took it, when and through what, and its escalations."""

    state: HandoffState = HandoffState.WAITING
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    via: str | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    escalations: tuple[Escalation, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredRequest:
    id: str
    created_at: datetime
    payload: AssistanceRequestIn
    deliveries: list[Delivery] = field(default_factory=list)
    handoff: Handoff | None = None  # read with the request by `RequestReads.get_request`


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    id: str
    channel: str
    status: DeliveryStatus = DeliveryStatus.PENDING


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a 202 tells the caller: the stored request's id and its deliveries, built from
    the ids made on arrival, without reading anything back."""

    id: str
    topic: str
    deliveries: tuple[DeliveryReceipt, ...]


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """Where a request came from, stored with it so its deliveries' log lines and spans, run
    later and maybe elsewhere, join the ingest's: the `X-Request-ID` and the W3C traceparent."""

    http_request_id: str | None = None
    traceparent: str | None = None


NO_TRACE = RequestTrace()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a worker now holds, with what it needs to send it.

    `replayed_at` and `replay_base` (attempts spent before it) are set once the delivery was
    replayed: its retry budget counts from the replay (`budget_attempts`, `budget_since`),
    while `delivery.attempts` keeps counting every attempt (it numbers the attempt rows and
    guards the lease)."""

    delivery: Delivery
    request: AssistanceRequestIn
    accepted_at: datetime
    lease_owner: str
    trace: RequestTrace = NO_TRACE
    replayed_at: datetime | None = None
    replay_base: int = 0
    # The request has a callback (SPEC §9), so this attempt's result may raise an event for
    # the bot; a claim knows, and a batch of results for requests without one skips the read.
    has_callback: bool = True

    @property
    def budget_attempts(self) -> int:
        """The attempts the retry policy counts: those since the last replay."""
        return self.delivery.attempts - self.replay_base

    @property
    def budget_since(self) -> datetime:
        """Where the policy's age limit counts from: the last replay, else the accept."""
        return self.replayed_at or self.accepted_at


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What the worker decided after one attempt; storage only records it."""

    outcome: Outcome
    status: DeliveryStatus
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    next_attempt_at: datetime | None = None


class Scope(StrEnum):
    """What a key (or a signed webhook, or a token) may do."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    # Claims and resolves requests (SPEC §9) and reads: a support person's key, which must
    # not change config or retry deliveries.
    AGENT = "agent"

    def grants(self) -> frozenset[Scope]:
        """What holding this scope allows: `admin` implies `read` and `agent` (SPEC §3);
        `agent` implies `read`."""
        if self is Scope.ADMIN:
            return frozenset({Scope.ADMIN, Scope.READ, Scope.AGENT})
        if self is Scope.AGENT:
            return frozenset({Scope.AGENT, Scope.READ})
        return frozenset({self})


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the key itself, only its name, scope and dates."""

    id: str
    name: str
    scope: Scope
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
