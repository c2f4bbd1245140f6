"""The channel registry: `type:` name -> ChannelType.

Built-in types are found, not listed: every module of this package except `base` is a channel
module and exports its `CHANNEL_TYPE` (helpers live in the `kit` sub-package). Adding a
channel is adding a module here (and its test file; docs/channels.md walks through it).

Another package adds a type by declaring an entry point in the group `deskbell.channels` that
points at its `CHANNEL_TYPE`:

    [project.entry-points."deskbell.channels"]
    teams = "deskbell_teams:CHANNEL_TYPE"

A type name registered twice is a start-up error, so a plugin cannot silently replace one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from deskbell.channels.base import ChannelType
from deskbell.errors import ConfigError

ENTRY_POINT_GROUP = "deskbell.channels"
NOT_CHANNELS = frozenset({"base"})


def builtin_modules() -> list[str]:
    """The names of this package's channel modules, sorted."""
    return sorted(
        found.name
        for found in pkgutil.iter_modules(__path__)
        if not found.ispkg and found.name not in NOT_CHANNELS
    )


def _builtin_types() -> Iterable[ChannelType]:
    for name in builtin_modules():
        kind = getattr(importlib.import_module(f"{__name__}.{name}"), "CHANNEL_TYPE", None)
        if not isinstance(kind, ChannelType):
            raise ConfigError(f"{__name__}.{name} has no CHANNEL_TYPE (a ChannelType)")
        yield kind


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
