"""Guard: every module in channels/ (helpers live in channels/kit/) registers exactly one type,
carries its own EXAMPLE and has a test file; the registry refuses a duplicate type name."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import httpx
import pytest

import deskbell.channels
from deskbell.channels import build_registry
from deskbell.channels.base import ChannelContext, ChannelType
from deskbell.errors import ConfigError

TESTS = Path(__file__).parent


def channel_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(deskbell.channels.__path__)
        if m.name != "base" and not m.ispkg
    )


@pytest.mark.parametrize("name", channel_modules())
def test_module_registers_one_type_and_is_tested(name: str) -> None:
    module = importlib.import_module(f"deskbell.channels.{name}")
    kinds = [v for v in vars(module).values() if isinstance(v, ChannelType)]
    assert len(kinds) == 1
    assert kinds[0].name == name
    assert build_registry()[name] is kinds[0]
    assert (TESTS / f"test_{name}.py").exists()


def test_registry_has_the_core_types() -> None:
    assert {"slack", "email", "webhook", "apprise", "console"} <= set(build_registry())


def test_duplicate_type_is_refused() -> None:
    console = build_registry()["console"]
    with pytest.raises(ConfigError, match="registered twice"):
        build_registry([console])


async def test_every_type_builds_from_its_own_example() -> None:
    async with httpx.AsyncClient() as http:
        for name, kind in build_registry().items():
            model = kind.settings_model
            assert "EXAMPLE" in vars(model), f"{model.__name__} sets no EXAMPLE of its own"
            settings = model.model_validate(model.EXAMPLE)
            assert settings.type == name
            channel = kind.factory(name, settings, ChannelContext(http=http))
            assert channel.name == name
