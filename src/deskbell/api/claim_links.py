"""Email claim links (SPEC §9): `{public_url}/claim/{token}`, signed with DESKBELL_SECRET_KEY.

The token is itsdangerous's URL-safe timed serialization of the request and delivery ids:
signed (HMAC-SHA1 over a key derived from the secret key and a salt of its own, so a token for
one purpose cannot stand for another), expiring after `claim_link_ttl_seconds` (24 h by
default), and used once: the claim it makes ends the request's `waiting`, and a link to a
request that is no longer waiting is refused, naming who has it (routes/claim_page.py).

The page's form carries a CSRF token: signed with another salt, bound to the link's token
(its digest) and expiring, so a form cannot be posted for a link its page was not shown for,
and a cross-site POST without the page's token is refused.

Time comes from the runtime's clock, so tests expire a link by moving a clock, not sleeping.
Without a secret key there are no links (emails go out without one, and the page is 404).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from deskbell.clock import Clock
from deskbell.errors import DeskbellError
from deskbell.settings import Settings

LINK_SALT = "deskbell.claim-link"
CSRF_SALT = "deskbell.claim-form"
CSRF_TTL_SECONDS = 3600  # a page left open for an hour must be loaded again
PATH_PREFIX = "/claim/"


class LinkRefused(DeskbellError):
    """A token that is not ours, was altered, or has expired (`expired`)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class ClaimLink:
    request_id: str
    delivery_id: str


class _ClockSigner(TimestampSigner):
    """itsdangerous's timestamp signer, its time read from our clock."""

    def __init__(self, *args: Any, clock: Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock.now().timestamp())


class ClaimLinks:
    def __init__(self, secret_key: str, public_url: str, ttl_seconds: float, clock: Clock) -> None:
        if not secret_key:
            raise ValueError("a claim link needs a secret key")
        self.public_url = public_url.rstrip("/")
        self.ttl_seconds = ttl_seconds
        kwargs: dict[str, Any] = {"signer": _ClockSigner, "signer_kwargs": {"clock": clock}}
        self._links = URLSafeTimedSerializer(secret_key, salt=LINK_SALT, **kwargs)
        self._forms = URLSafeTimedSerializer(secret_key, salt=CSRF_SALT, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> ClaimLinks | None:
        """None without DESKBELL_SECRET_KEY: emails then carry no link."""
        secret = settings.secret_key.get_secret_value()
        if not secret:
            return None
        public = settings.public_url or f"http://{settings.host}:{settings.port}"
        return cls(secret, public, settings.claim_link_ttl_seconds, clock)

    def token(self, request_id: str, delivery_id: str) -> str:
        return str(self._links.dumps([request_id, delivery_id]))

    def url(self, request_id: str, delivery_id: str) -> str:
        """The link an email carries for this delivery."""
        return f"{self.public_url}{PATH_PREFIX}{self.token(request_id, delivery_id)}"

    def read(self, token: str) -> ClaimLink:
        """What a token names; LinkRefused when it is not ours, altered or expired."""
        try:
            value = self._links.loads(token, max_age=int(self.ttl_seconds))
        except SignatureExpired:
            raise LinkRefused("this claim link has expired", expired=True) from None
        except BadData:
            raise LinkRefused("this is not a valid claim link") from None
        if not (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
        ):
            raise LinkRefused("this is not a valid claim link")
        return ClaimLink(value[0], value[1])

    def csrf_token(self, token: str) -> str:
        """The form's token for the page of `token`."""
        return str(self._forms.dumps(_digest(token)))

    def csrf_ok(self, token: str, csrf: str | None) -> bool:
        if not csrf:
            return False
        try:
            bound = self._forms.loads(csrf, max_age=CSRF_TTL_SECONDS)
        except BadData:
            return False
        return bool(bound == _digest(token))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]
