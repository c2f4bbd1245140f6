"""Which callback a request gets (SPEC §9): where its events go, decided once, at accept.

A request's events go to a URL fixed when it is accepted (`requests.callback_url`), and are
signed with its source's `callback_secret` when they are sent (delivery/callbacks.py):

- a signed request (Standard Webhooks, a source of the config's `sources:`) gets its source's
  `callback_url`, if it has one;
- its body may name its own `callback_url` instead, if its source has a `callback_secret`
  (the source takes callbacks, and the events are signed for it alone). Anyone else naming
  one is refused (403 `callback_not_allowed`): an API key is not a bot identity deskbell can
  sign for, and an unsigned event is worth nothing to a bot;
- the URL passes the webhook channels' SSRF rule (channels/kit/netguard.py): here, offline,
  for hosts that need no DNS (a literal IP, `localhost`); at every send, after resolution.

Pure: no I/O, so config loading and the ingest hot path can both call it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import httpx

from deskbell.channels.kit.netguard import IPAddress, refusal
from deskbell.config.schema import DeskbellConfig, SourceConfig
from deskbell.errors import DeskbellError

_LOOPBACK = ipaddress.ip_address("127.0.0.1")
# The channel name of event deliveries (storage/events.py): no config channel may take it.
CALLBACK_CHANNEL = "callback"


class CallbackRefused(DeskbellError):
    """A request's `callback_url` may not be used: `status` 403 (its caller may not name one)
    or 422 (the URL is refused), `code` the API error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _literal_address(host: str) -> IPAddress | None:
    """The address a host stands for without DNS, or None when only DNS can tell."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return _LOOPBACK
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why the guard will refuse every send to `url`, judged without DNS; None when it may
    pass (a name is judged at send time, after resolution). The URL may hold a token, so
    only its host is named."""
    host = httpx.URL(url).host
    address = _literal_address(host)
    if address is None:
        return None
    reason = refusal(address, allow_private)
    if reason is None:
        return None
    fix = "; allow_private_networks: true on the source would allow it"
    allowable = refusal(address, allow_private=True) is None
    return f"the host {host} is {reason}, which the SSRF guard refuses{fix if allowable else ''}"


def config_problems(
    channels: Iterable[str], sources: Mapping[str, SourceConfig]
) -> list[tuple[str, str]]:
    """(key, why) for a channel taking the reserved name, and every source whose
    `callback_url` the guard always refuses."""
    found = [
        (f"channels.{name}", f"{name!r} is reserved for the events sent to bots")
        for name in channels
        if name == CALLBACK_CHANNEL
    ]
    for name, source in sources.items():
        if source.callback_url is None:
            continue
        why = url_refusal(source.callback_url.get_secret_value(), source.allow_private_networks)
        if why is not None:
            found.append((f"sources.{name}.callback_url", why))
    return found


def callback_for(
    config: DeskbellConfig, source: str | None, requested: str | None
) -> tuple[str | None, str | None]:
    """(source, callback URL) to store with a request from `source` (None: not a signed
    request) whose body named `requested` (None: none). Raises CallbackRefused."""
    settings: SourceConfig | None = config.sources.get(source) if source is not None else None
    if requested is None:
        url = settings.callback_url if settings is not None else None
        return source, url.get_secret_value() if url is not None else None
    if settings is None or settings.callback_secret is None:
        raise CallbackRefused(
            403,
            "callback_not_allowed",
            "callback_url is accepted only from a signed source with a callback_secret "
            "(sources: in the config)",
        )
    why = url_refusal(requested, settings.allow_private_networks)
    if why is not None:
        raise CallbackRefused(422, "callback_refused", f"callback_url refused: {why}")
    return source, requested
