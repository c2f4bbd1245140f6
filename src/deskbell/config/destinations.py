"""Warnings about a valid config: webhook URLs the SSRF guard will refuse on every send.

A warning, not an error: such a config loads and runs (the guard's own tests need it to), but
each delivery to that channel goes `dead` with "refused: ... is a loopback address". Telling
at `config check` and at start saves finding it in the dead-letter list.

Only hosts that need no DNS are judged: a literal IP, `localhost` and `*.localhost` (RFC 6761
names for loopback). A name is resolved when a delivery is sent, not here: the check stays
offline and repeatable, and DNS may answer differently by then.
"""

from __future__ import annotations

import ipaddress

import httpx

from deskbell.channels.kit.netguard import IPAddress, refusal
from deskbell.channels.webhook import WebhookSettings
from deskbell.config.schema import DeskbellConfig

_LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _literal_address(host: str) -> IPAddress | None:
    """The address a host stands for without DNS, or None when only DNS can tell."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return _LOOPBACK
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def config_warnings(config: DeskbellConfig) -> list[str]:
    """One line per webhook channel whose URL host the guard always refuses, naming the key
    and why. The URL is a secret (tokens live in URLs), so only its host is shown."""
    warnings: list[str] = []
    for name, settings in config.channels.items():
        if not isinstance(settings, WebhookSettings):
            continue
        host = httpx.URL(settings.url.get_secret_value()).host
        address = _literal_address(host)
        if address is None:
            continue
        reason = refusal(address, settings.allow_private_networks)
        if reason is None:
            continue
        allowable = refusal(address, allow_private=True) is None
        fix = "; set allow_private_networks: true if you mean it" if allowable else ""
        warnings.append(
            f"channels.{name}.url: the host {host} is {reason}, which the webhook guard "
            f"refuses: every delivery to {name} will go dead{fix}"
        )
    return warnings
