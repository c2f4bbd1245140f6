"""A config document as stored and answered: read from YAML or JSON text, canonical JSON and
its digest, the redacted form for answers, and the `DeskbellConfig` a node builds from it.

A stored document is the config as written (SPEC §8): `${VAR}` kept as text, resolved on each
node by `build_config`, and literal secrets sealed (config/secrets.py). Two documents with
the same content have the same canonical text, so the same digest, whatever their key order:
that is how "unchanged" is told.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from deskbell.channels.base import ChannelType
from deskbell.channels.kit.sample import check_channel_templates
from deskbell.config.load import parse_document, read_yaml
from deskbell.config.schema import DeskbellConfig
from deskbell.config.secrets import redact_document, unseal_document
from deskbell.errors import ConfigError

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_TYPES = frozenset({"application/json"})


def document_from_text(text: str, media_type: str) -> dict[str, Any]:
    """The document in `text`, YAML (the same text as the file) or JSON by `media_type`.

    Only what JSON can hold is accepted (string keys, finite numbers, no YAML dates), so the
    document stored is the document validated."""
    media = media_type.split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or media.endswith("+json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(problems=[("(document)", f"not valid JSON: {exc}")]) from exc
    elif media in YAML_TYPES:
        data = read_yaml(text)
    else:
        raise ConfigError(problems=[("(document)", f"unsupported media type {media!r}")])
    if not isinstance(data, dict):
        why = "the config must be a mapping with channels, routes and default"
        raise ConfigError(problems=[("(document)", why)])
    problems: list[tuple[str, str]] = []
    _check_plain(data, "", problems)
    if problems:
        raise ConfigError(problems=problems)
    return data


def _check_plain(value: Any, where: str, problems: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append((where or "(top level)", f"key {key!r} is not a string"))
                continue
            _check_plain(item, f"{where}.{key}" if where else key, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", problems)
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append((where, "not a finite number"))
    elif value is not None and not isinstance(value, str | int | float | bool):
        problems.append((where, f"a YAML {type(value).__name__}: quote it to make it text"))


def canonical_json(document: Mapping[str, Any]) -> str:
    """The one text of a document: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def digest(document: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical text: equal for equal documents."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def redacted(document: Mapping[str, Any], registry: Mapping[str, ChannelType]) -> dict[str, Any]:
    """The document for an answer: `${VAR}` as written, every other secret `**********`."""
    return redact_document(document, registry)


def build_config(
    document: Mapping[str, Any],
    registry: Mapping[str, ChannelType],
    *,
    env: Mapping[str, str] | None = None,
    secret_key: str | SecretStr | None,
    base_dir: Path | None = None,
) -> DeskbellConfig:
    """The config a node runs from a stored document: sealed secrets opened with
    `secret_key`, `${VAR}` expanded from `env` (the process environment by default), then
    every check of `parse_config`. ConfigError names each key and why (a variable this node
    lacks, a secret it cannot open, ...)."""
    if isinstance(secret_key, SecretStr):
        secret_key = secret_key.get_secret_value()
    opened = unseal_document(document, registry, secret_key or None)
    return parse_document(opened, registry, env, base_dir)


def check_document(
    document: Mapping[str, Any],
    registry: Mapping[str, ChannelType],
    *,
    now: datetime,
    env: Mapping[str, str] | None = None,
    secret_key: str | SecretStr | None,
) -> DeskbellConfig:
    """What `deskbell config check` checks, on a document: `build_config`, then every
    channel template rendered against the sample requests. ConfigError lists each problem."""
    config = build_config(document, registry, env=env, secret_key=secret_key)
    _, found = check_channel_templates(config.channels, now)
    if found:
        raise ConfigError(problems=[_split(problem) for problem in found])
    return config


def _split(problem: str) -> tuple[str, str]:
    """("channels.a.template.x", "why") from "channels.a: template.x why"-style lines."""
    key, sep, why = problem.partition(": ")
    return (key, why) if sep else ("(templates)", problem)
