"""SSRF guard for channels that POST to a URL from config: resolve first, check every address,
then connect to the address that was checked.

Why after resolution: a hostname is only a name. `localhost`, a name an attacker points at
`10.0.0.1`, or a public name that resolves to the cloud metadata service all look harmless
as text. Why pin the connection to the checked address: resolving again at connect time
would let a name that changes between the two lookups (DNS rebinding) slip through.

Refused unless a channel sets `allow_private_networks: true`: loopback, private (RFC 1918,
unique-local IPv6), link-local, shared (100.64/10) and any other non-global address.
Refused always: the well-known cloud metadata addresses, unspecified and multicast addresses;
no webhook receiver lives there, and the metadata service holds cloud credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from functools import cached_property

import httpx

from deskbell.errors import DeskbellError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)


class BlockedDestination(DeskbellError):
    """The URL's host is, or resolves to, an address this channel may not reach."""


class UnresolvableHost(DeskbellError):
    """DNS gave no answer; may be temporary."""


@dataclass(frozen=True)
class Pinned:
    """A request target with its host replaced by a checked address; `host_header` and `sni`
    keep the original name so virtual hosting and certificate checks still see it."""

    url: httpx.URL
    host_header: str
    sni: str | None

    @cached_property
    def address(self) -> str:
        """`url` as text, built once: a pinned target serves many sends."""
        return str(self.url)


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why `address` may not be reached, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    if allow_private:
        return None
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
    ):
        if flag:
            return f"a {kind} address"
    if not address.is_global:
        return "not a public address"
    return None


async def resolve(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """Every address `host` stands for, refusing the whole host if any one is blocked (a
    name with one public and one private address must not be a way in)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UnresolvableHost(f"cannot resolve {host}: {exc.strerror}") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not found:
            raise UnresolvableHost(f"cannot resolve {host}: no addresses")
    for address in found:
        reason = refusal(address, allow_private)
        if reason is not None:
            shown = host if literal is not None else f"{host} resolves to {address}, which"
            raise BlockedDestination(
                f"refused: {shown} is {reason}; allow_private_networks: true would allow it"
                if "metadata" not in reason and "unicast" not in reason
                else f"refused: {shown} is {reason}"
            )
    return found


async def pin(url: str, allow_private: bool) -> Pinned:
    """`url` aimed at a checked address of its host (raises BlockedDestination or
    UnresolvableHost)."""
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = (await resolve(host, port, allow_private))[0]
    default_port = parsed.port is None
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
    return Pinned(
        url=parsed.copy_with(host=str(address)),
        host_header=host_header,
        sni=host if parsed.scheme == "https" else None,
    )
