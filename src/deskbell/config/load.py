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

from deskbell.callbacks import config_problems as callback_problems
from deskbell.channels.base import ChannelType
from deskbell.config.matchers import check_routes, route_matchers, route_window
from deskbell.config.schema import DeskbellConfig, RawConfig, RouteConfig, format_duration
from deskbell.errors import ConfigError
from deskbell.routing.router import EscalationStep, Route, Router

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


def _problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    return [(_location(e["loc"], prefix), e["msg"]) for e in exc.errors()]


def _explain(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{key}: {why}" for key, why in _problems(exc, prefix))


def read_yaml(text: str) -> Any:
    """The YAML text as data (no `${VAR}` expanded yet)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        why = f"not valid YAML: {exc}"
        raise ConfigError(why, [("(document)", why)]) from exc


def parse_config(
    text: str,
    registry: Mapping[str, ChannelType],
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> DeskbellConfig:
    """Validate a config document completely, or raise ConfigError naming every defect.

    `base_dir` is where relative paths in the document (template files) start; the config
    file's directory when it came from a file, else the working directory."""
    return parse_document(read_yaml(text), registry, env, base_dir)


def parse_document(
    data: Any,
    registry: Mapping[str, ChannelType],
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> DeskbellConfig:
    """`parse_config` after the YAML: data as read (a file's YAML or an API's JSON), with
    `${VAR}` not yet expanded. Raises ConfigError whose `problems` lists every (key, why)
    found: each channel block, the cross-references and the matchers are all checked."""
    if not isinstance(data, dict):
        why = "the config must be a mapping with channels, routes and default"
        raise ConfigError(why, [("(document)", why)])
    try:
        data = _expand_values(data, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(str(exc), [("(environment)", str(exc))]) from exc
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc), _problems(exc)) from exc
    problems: list[tuple[str, str]] = []
    channels = {}
    for name, block in raw.channels.items():
        try:
            channels[name] = _channel(name, block, registry, base_dir)
        except ConfigError as exc:
            problems.extend(exc.problems or [(f"channels.{name}", str(exc))])
    problems.extend(_cross_problems(raw, raw.channels))
    problems.extend(callback_problems(raw.channels, raw.sources))  # reserved name, SSRF
    routes, found = check_routes(raw.routes)
    problems.extend(_split(problem) for problem in found)
    if problems:
        raise ConfigError(problems=problems)
    return DeskbellConfig(
        channels=channels, routes=routes, default=raw.default, sources=raw.sources
    )


def _split(problem: str) -> tuple[str, str]:
    """("routes[0].match.x", "why") from "routes[0].match.x: why"."""
    key, sep, why = problem.partition(": ")
    return (key, why) if sep else ("(routes)", problem)


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
    where = f"channels.{name}.type"
    if not isinstance(kind, str):
        raise ConfigError(problems=[(where, f"required, one of {sorted(registry)}")])
    if kind not in registry:
        why = f"unknown channel type {kind!r}; known: {sorted(registry)}"
        raise ConfigError(problems=[(where, why)])
    try:
        return registry[kind].settings_model.model_validate(block, context={"config_dir": base_dir})
    except ValidationError as exc:
        where = f"channels.{name}"
        raise ConfigError(_explain(exc, where), _problems(exc, where)) from exc


def _cross_problems(raw: RawConfig, channels: Mapping[str, object]) -> list[tuple[str, str]]:
    """Every route, fallback and default naming a channel the document does not define."""
    found: list[tuple[str, str]] = []

    def require(name: str, where: str) -> None:
        if name not in channels:
            found.append((where, f"unknown channel {name!r}; defined: {sorted(channels)}"))

    for index, route in enumerate(raw.routes):
        for position, channel in enumerate(route.to):
            require(channel, f"routes[{index}].to[{position}]")
        if route.fallback is not None:
            require(route.fallback, f"routes[{index}].fallback")
        for step, (_after, to) in enumerate(route.escalation_steps()):
            for channel in to:
                require(channel, f"routes[{index}].escalate_to[{step}]")
    if isinstance(raw.default, list):
        for position, channel in enumerate(raw.default):
            require(channel, f"default[{position}]")
    return found


def build_router(config: DeskbellConfig) -> Router:
    routes = [
        Route(
            matchers=route_matchers(r, f"routes[{index}]"),
            to=tuple(r.to),
            continue_=r.continue_,
            fallback=r.fallback,
            escalations=tuple(EscalationStep(a, tuple(to)) for a, to in r.escalation_steps()),
            window=route_window(r, f"routes[{index}]"),
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
                _when_note(r, f"routes[{index}]"),
                f"fallback {r.fallback}" * bool(r.fallback),
                *(
                    f"escalate {format_duration(a)} to {'+'.join(to)}"
                    for a, to in r.escalation_steps()
                ),
            )
            if n
        )
        rows.append((match, ", ".join(r.to), notes))
    default = "reject" if config.default == "reject" else ", ".join(config.default)
    rows.append(("(no route matched)", default, "default"))
    return rows


def _when_note(route: RouteConfig, where: str) -> str:
    """`when mon-fri 09:00-18:00 Europe/Madrid` for a route with a time window, else ""."""
    window = route_window(route, where)
    return f"when {window.describe()}" if window is not None else ""
