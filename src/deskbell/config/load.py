"""Read, expand, validate and cross-check a routing file; build the Router from it.

Errors name the key (`channels.sales-slack.webhook_url`, `routes[1].to`) and why, because the
person reading them is editing YAML, not Python.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deskbell.channels.base import ChannelSettings, ChannelType
from deskbell.config.matchers import check_routes, route_matchers
from deskbell.config.schema import DeskbellConfig, RawConfig
from deskbell.errors import ConfigError
from deskbell.routing.router import Route, Router

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEMO_CONFIG_YAML = """\
# Built-in demo config: used when no deskbell.yaml exists. Run `deskbell init` for a real one.
channels:
  demo-console:
    type: console
routes:
  - match: {topic: [sales, pricing]}
    to: [demo-console]
default: reject
"""


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """`${VAR}` and `${VAR:-fallback}`; an unset variable without fallback is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if fallback is not None:
            return fallback
        raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")

    return _VAR.sub(substitute, text)


def _expand_values(data: Any, env: Mapping[str, str]) -> Any:
    """Expand `${VAR}` inside string values only: comments stay comments, and a variable's
    value can never add YAML structure."""
    if isinstance(data, str):
        return expand_env(data, env)
    if isinstance(data, list):
        return [_expand_values(item, env) for item in data]
    if isinstance(data, dict):
        return {key: _expand_values(value, env) for key, value in data.items()}
    return data


def _location(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{_location(e['loc'], prefix)}: {e['msg']}" for e in exc.errors())


def parse_config(
    text: str,
    registry: Mapping[str, ChannelType],
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> DeskbellConfig:
    """Validate a config document completely, or raise ConfigError naming every defect.

    `base_dir` is where relative paths in the document (template files) start; the config
    file's directory when it came from a file, else the working directory."""
    try:
        data = _expand_values(yaml.safe_load(text), os.environ if env is None else env)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping with channels, routes and default")
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc
    channels = {
        name: _channel(name, block, registry, base_dir) for name, block in raw.channels.items()
    }
    _cross_check(raw, channels)
    routes, problems = check_routes(raw.routes)
    if problems:
        raise ConfigError("; ".join(problems))
    return DeskbellConfig(
        channels=channels, routes=routes, default=raw.default, sources=raw.sources
    )


def load_config(
    path: Path, registry: Mapping[str, ChannelType], env: Mapping[str, str] | None = None
) -> DeskbellConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return parse_config(text, registry, env, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _channel(
    name: str, block: dict[str, Any], registry: Mapping[str, ChannelType], base_dir: Path | None
) -> Any:
    kind = block.get("type")
    if not isinstance(kind, str):
        raise ConfigError(f"channels.{name}.type: required, one of {sorted(registry)}")
    if kind not in registry:
        raise ConfigError(
            f"channels.{name}.type: unknown channel type {kind!r}; known: {sorted(registry)}"
        )
    try:
        return registry[kind].settings_model.model_validate(block, context={"config_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_explain(exc, f"channels.{name}")) from exc


def _cross_check(raw: RawConfig, channels: Mapping[str, ChannelSettings]) -> None:
    def require(name: str, where: str) -> None:
        if name not in channels:
            raise ConfigError(f"{where}: unknown channel {name!r}; defined: {sorted(channels)}")

    for index, route in enumerate(raw.routes):
        for position, channel in enumerate(route.to):
            require(channel, f"routes[{index}].to[{position}]")
        if route.fallback is not None:
            require(route.fallback, f"routes[{index}].fallback")
    if isinstance(raw.default, list):
        for position, channel in enumerate(raw.default):
            require(channel, f"default[{position}]")


def build_router(config: DeskbellConfig) -> Router:
    routes = [
        Route(
            matchers=route_matchers(r, f"routes[{index}]"),
            to=tuple(r.to),
            continue_=r.continue_,
            fallback=r.fallback,
        )
        for index, r in enumerate(config.routes)
    ]
    default = None if config.default == "reject" else tuple(config.default)
    return Router(routes, default)


def routing_table(config: DeskbellConfig) -> list[tuple[str, str, str]]:
    """Rows of (match, channels, notes) for `deskbell config check`."""
    rows = []
    for index, r in enumerate(config.routes):
        matchers = route_matchers(r, f"routes[{index}]")
        match = ", ".join(f"{m.path}={m.describe()}" for m in matchers) or "(everything)"
        notes = ", ".join(
            n
            for n in (
                "continue" if r.continue_ else "",
                f"fallback {r.fallback}" * bool(r.fallback),
            )
            if n
        )
        rows.append((match, ", ".join(r.to), notes))
    default = "reject" if config.default == "reject" else ", ".join(config.default)
    rows.append(("(no route matched)", default, "default"))
    return rows
