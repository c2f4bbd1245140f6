"""The channel registry: `type:` name -> ChannelType.

Built-in types are the modules listed in `_BUILTIN`; another package adds one by declaring an
entry point in the group `deskbell.channels` that points at its `CHANNEL_TYPE`:

    [project.entry-points."deskbell.channels"]
    teams = "deskbell_teams:CHANNEL_TYPE"

A type name registered twice is a start-up error, so a plugin cannot silently replace one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from deskbell.channels.base import ChannelType
from deskbell.errors import ConfigError

ENTRY_POINT_GROUP = "deskbell.channels"
_BUILTIN = tuple(
    f"deskbell.channels.{name}" for name in ("slack", "email", "webhook", "apprise", "console")
)


def _builtin_types() -> Iterable[ChannelType]:
    for module_name in _BUILTIN:
        yield importlib.import_module(module_name).CHANNEL_TYPE


def _plugin_types() -> Iterable[ChannelType]:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if not isinstance(loaded, ChannelType):
            raise ConfigError(f"entry point {entry.name!r} is not a deskbell ChannelType")
        yield loaded


def build_registry(extra: Iterable[ChannelType] = ()) -> Mapping[str, ChannelType]:
    """Every known channel type by name: built-ins, entry points, then `extra` (for tests)."""
    registry: dict[str, ChannelType] = {}
    for kind in (*_builtin_types(), *_plugin_types(), *extra):
        if kind.name in registry:
            raise ConfigError(f"channel type {kind.name!r} is registered twice")
        registry[kind.name] = kind
    return registry
