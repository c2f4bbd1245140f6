"""The channel contract (tests/channels/contract.py), once per built-in channel type.

Each type's own test file says how to reach a real local peer (`contract_peer()`); the
settings model says what a minimal block looks like (`EXAMPLE`). Nothing here names a type.
A type from another package runs `check_contract` in its own tests (as test_plugins.py does
for the example plugin), so an installed plugin does not break this suite.
"""

from __future__ import annotations

import importlib

import httpx
import pytest

from deskbell.channels import build_registry, builtin_modules
from tests.channels.contract import Peer, check_contract


def peer_for(name: str) -> Peer:
    module = importlib.import_module(f"tests.channels.test_{name}")
    make = getattr(module, "contract_peer", None)
    assert make is not None, f"tests/channels/test_{name}.py has no contract_peer()"
    peer: Peer = make()
    return peer


@pytest.mark.parametrize("name", builtin_modules())
async def test_channel_keeps_the_contract(name: str, http_client: httpx.AsyncClient) -> None:
    with peer_for(name) as peer:
        await check_contract(build_registry()[name], peer, http_client)
