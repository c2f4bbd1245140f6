"""What changed between two config documents: the summary stored with each version and shown
in the version list (SPEC §8's audit).

Channels are told apart by name. Routes have no name, so a route is known by what it matches
(`match`, and `when` if it has one): a route whose match stays and whose channels, fallback or
`continue` change is `changed`; a new match is `added`, a gone one `removed`. A route is
named in the summary by a short label such as `topic=sales`. Documents are compared as
stored, secrets sealed: a secret whose sealed token changes counts as a change of its
channel, and the summary holds names only, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_EVERYTHING = "(everything)"


def summarize(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """{"channels": {added, removed, changed}, "routes": {added, removed, changed},
    "default_changed", "sources_changed"}; `before` None: everything is added."""
    old = before or {}
    return {
        "channels": _by_name(_mapping(old, "channels"), _mapping(after, "channels")),
        "routes": _routes(_list(old, "routes"), _list(after, "routes")),
        "default_changed": old.get("default", "reject") != after.get("default", "reject"),
        "sources_changed": _mapping(old, "sources") != _mapping(after, "sources"),
    }


def is_empty(summary: Mapping[str, Any]) -> bool:
    """Nothing in it changed."""
    return not (
        any(summary["channels"].values())
        or any(summary["routes"].values())
        or summary["default_changed"]
        or summary["sources_changed"]
    )


def _mapping(document: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    return value if isinstance(value, dict) else {}


def _list(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    return value if isinstance(value, list) else []


def _by_name(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(name for name in set(old) & set(new) if old[name] != new[name]),
    }


def _routes(old: list[Any], new: list[Any]) -> dict[str, list[str]]:
    before = _keyed(old)
    after = _keyed(new)
    return {
        "added": [after[k][0] for k in after if k not in before],
        "removed": [before[k][0] for k in before if k not in after],
        "changed": [after[k][0] for k in after if k in before and before[k][1] != after[k][1]],
    }


def _keyed(routes: list[Any]) -> dict[str, tuple[str, Any]]:
    """{identity: (label, the route)}; a second route with the same identity gets `#2`."""
    out: dict[str, tuple[str, Any]] = {}
    for route in routes:
        if not isinstance(route, dict):
            continue
        identity = json.dumps(
            {"match": route.get("match"), "when": route.get("when")}, sort_keys=True
        )
        label = route_label(route)
        n = 1
        key = identity
        while key in out:
            n += 1
            key = f"{identity}#{n}"
            label = f"{route_label(route)} #{n}"
        out[key] = (label, route)
    return out


def route_label(route: Mapping[str, Any]) -> str:
    """`topic=sales`, `topic=[a,b], language=es`, `(everything)`; with `when` appended."""
    match = route.get("match")
    parts = (
        [f"{path}={_short(spec)}" for path, spec in match.items()]
        if isinstance(match, dict)
        else []
    )
    label = ", ".join(parts) or _EVERYTHING
    if route.get("when") is not None:
        label += f" when {_short(route['when'])}"
    return label


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
