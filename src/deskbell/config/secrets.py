"""Literal secrets in a stored config: found by the settings models, sealed with Fernet.

A config stored in the database (SPEC §8) keeps `${VAR}` references as written: each node
resolves them from its own environment. Any other value of a secret field is a *literal
secret*: it is stored sealed, as `enc:v1:<Fernet token>`, and never answered back in clear.

Which fields are secret is read from the models themselves: a channel type's settings model
(every `SecretStr`, inside lists, dicts, unions and nested models too) and `SourceConfig`
(`sources.<name>.secrets`). A new channel type with a `SecretStr` field is covered without a
change here.

The key comes from `DESKBELL_SECRET_KEY`: a Fernet key (32 bytes, URL-safe base64, as
`Fernet.generate_key()` prints) is used as it is; any other string of at least 32
characters is stretched to one with HKDF-SHA256. Every node that reads the config needs the
same key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, SecretStr

from deskbell.channels.base import ChannelType
from deskbell.config.schema import SourceConfig
from deskbell.errors import ConfigError

SEALED_PREFIX = "enc:v1:"
MASK = "**********"
MIN_KEY_CHARS = 32
_HKDF_INFO = b"deskbell config secrets v1"

# `${VAR}` without a fallback: a reference, stored as written. `${VAR:-fallback}` is not one:
# its fallback is literal text, which may be the secret itself.
_REFERENCES = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")

# (key, value) -> value; `key` names the value in the document, e.g. channels.a.webhook_url.
SecretFn = Callable[[str, str], str]


def is_reference(value: str) -> bool:
    """Entirely `${VAR}` references: resolved on each node, never sealed or masked."""
    return _REFERENCES.fullmatch(value) is not None


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


class Sealer:
    """Seals and unseals values with the key from DESKBELL_SECRET_KEY."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(fernet_key(secret_key))

    def seal(self, value: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode("ascii")

    def unseal(self, value: str, key: str) -> str:
        try:
            return self._fernet.decrypt(value.removeprefix(SEALED_PREFIX)).decode()
        except (InvalidToken, UnicodeDecodeError) as exc:
            raise ConfigError(
                problems=[(key, "cannot decrypt this sealed secret: sealed with another key?")]
            ) from exc


def fernet_key(secret_key: str) -> bytes:
    """A Fernet key as it is, or one derived from any string of at least 32 characters."""
    text = secret_key.strip()
    try:
        if len(base64.urlsafe_b64decode(text.encode("ascii"))) == 32 and len(text) == 44:
            return text.encode("ascii")
    except (binascii.Error, UnicodeEncodeError, ValueError):
        pass
    if len(text) < MIN_KEY_CHARS:
        raise ConfigError(
            problems=[
                (
                    "DESKBELL_SECRET_KEY",
                    f"needs at least {MIN_KEY_CHARS} characters (or a Fernet key); try "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                )
            ]
        )
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        text.encode()
    )
    return base64.urlsafe_b64encode(derived)


def map_secrets(
    document: Mapping[str, Any], registry: Mapping[str, ChannelType], fn: SecretFn
) -> dict[str, Any]:
    """A copy of `document` with `fn` applied to every string in a secret field.

    A channel whose type the registry does not know has every string but its `type` treated
    as secret: nothing is known of it, so nothing is shown."""
    out = dict(document)
    channels = document.get("channels")
    if isinstance(channels, dict):
        out["channels"] = {
            name: _channel(block, registry, f"channels.{name}", fn)
            for name, block in channels.items()
        }
    sources = document.get("sources")
    if isinstance(sources, dict):
        out["sources"] = {
            name: _walk(SourceConfig, block, f"sources.{name}", fn)
            for name, block in sources.items()
        }
    return out


def _channel(block: Any, registry: Mapping[str, ChannelType], where: str, fn: SecretFn) -> Any:
    if not isinstance(block, dict):
        return block
    kind = registry.get(block["type"]) if isinstance(block.get("type"), str) else None
    if kind is None:
        return {
            key: value if key == "type" else _every_string(value, f"{where}.{key}", fn)
            for key, value in block.items()
        }
    return _walk(kind.settings_model, block, where, fn)


def _every_string(value: Any, where: str, fn: SecretFn) -> Any:
    if isinstance(value, str):
        return fn(where, value)
    if isinstance(value, list):
        return [_every_string(v, f"{where}[{i}]", fn) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _every_string(v, f"{where}.{k}", fn) for k, v in value.items()}
    return value


def _walk(annotation: Any, value: Any, where: str, fn: SecretFn) -> Any:
    """`value` with `fn` applied where `annotation` says SecretStr."""
    annotation = _unwrap(annotation)
    if not _has_secret(annotation) or value is None:
        return value
    if annotation is SecretStr:
        return fn(where, value) if isinstance(value, str) else value
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        candidates = [a for a in map(_unwrap, args) if _has_secret(a)]
        fitting = [a for a in candidates if _fits(a, value)] or candidates
        return _walk(fitting[0], value, where, fn)
    if origin in (list, tuple, set, frozenset) and args:
        if isinstance(value, str):  # a single value a before-validator wraps in a list
            return _walk(args[0], value, where, fn)
        if isinstance(value, list):
            return [_walk(args[0], v, f"{where}[{i}]", fn) for i, v in enumerate(value)]
        return value
    if origin is dict and len(args) == 2:
        if isinstance(value, dict):
            return {k: _walk(args[1], v, f"{where}.{k}", fn) for k, v in value.items()}
        return value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for name, field in annotation.model_fields.items():
            for key in {field.alias or name, name}:
                if key in out:
                    out[key] = _walk(field.annotation, out[key], f"{where}.{key}", fn)
        return out
    return value


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _fits(annotation: Any, value: Any) -> bool:
    origin = get_origin(annotation)
    if annotation is SecretStr:
        return isinstance(value, str)
    if origin in (list, tuple, set, frozenset):
        return isinstance(value, list)
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return isinstance(value, dict)
    return False


def _has_secret(annotation: Any, seen: frozenset[Any] = frozenset()) -> bool:
    annotation = _unwrap(annotation)
    if annotation is SecretStr:
        return True
    if annotation in seen:
        return False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(
            _has_secret(f.annotation, seen | {annotation}) for f in annotation.model_fields.values()
        )
    return any(_has_secret(arg, seen) for arg in get_args(annotation))


def seal_document(
    document: Mapping[str, Any],
    registry: Mapping[str, ChannelType],
    secret_key: str | None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every literal secret sealed. A literal equal to what `previous` (the active document)
    holds sealed at the same key keeps that token, so an unchanged document keeps its digest.

    Without a key, a literal secret is a ConfigError naming each such key."""
    sealer = Sealer(secret_key) if secret_key else None
    kept = _sealed_values(previous, registry, sealer) if previous and sealer else {}
    missing: list[tuple[str, str]] = []

    def seal(key: str, value: str) -> str:
        if is_reference(value) or is_sealed(value):
            return value
        if sealer is None:
            missing.append(
                (
                    key,
                    "a literal secret: write it as ${VAR} (read from each node's environment), "
                    "or set DESKBELL_SECRET_KEY so it can be stored encrypted",
                )
            )
            return value
        token = kept.get(key)
        return token[0] if token is not None and token[1] == value else sealer.seal(value)

    sealed = map_secrets(document, registry, seal)
    if missing:
        raise ConfigError(problems=missing)
    return sealed


def _sealed_values(
    document: Mapping[str, Any], registry: Mapping[str, ChannelType], sealer: Sealer
) -> dict[str, tuple[str, str]]:
    """{key: (token, clear value)} for every sealed value `document` holds."""
    found: dict[str, tuple[str, str]] = {}

    def note(key: str, value: str) -> str:
        if is_sealed(value):
            with contextlib.suppress(ConfigError):  # another key's token: not reused
                found[key] = (value, sealer.unseal(value, key))
        return value

    map_secrets(document, registry, note)
    return found


def unseal_document(
    document: Mapping[str, Any], registry: Mapping[str, ChannelType], secret_key: str | None
) -> dict[str, Any]:
    """Every sealed value in clear; a sealed value without a key is a ConfigError naming it."""
    sealer = Sealer(secret_key) if secret_key else None
    problems: list[tuple[str, str]] = []

    def unseal(key: str, value: str) -> str:
        if not is_sealed(value):
            return value
        if sealer is None:
            problems.append((key, "sealed secret, and DESKBELL_SECRET_KEY is not set"))
            return value
        try:
            return sealer.unseal(value, key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return value

    out = map_secrets(document, registry, unseal)
    if problems:
        raise ConfigError(problems=problems)
    return out


def redact_document(
    document: Mapping[str, Any], registry: Mapping[str, ChannelType]
) -> dict[str, Any]:
    """For answers: `${VAR}` references as written, every other secret value masked."""
    return map_secrets(
        document, registry, lambda _key, value: value if is_reference(value) else MASK
    )


def keep_masked(
    document: Mapping[str, Any],
    registry: Mapping[str, ChannelType],
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A document read back from GET and sent again has its secrets masked: a secret that is
    exactly the mask keeps the value stored at the same key in `previous` (the active
    document). Without one there, it is a ConfigError naming the key."""
    stored: dict[str, str] = {}
    if previous:
        map_secrets(previous, registry, lambda key, value: stored.setdefault(key, value))
    problems: list[tuple[str, str]] = []

    def keep(key: str, value: str) -> str:
        if value != MASK:
            return value
        if key in stored:
            return stored[key]
        problems.append((key, f"{MASK!r} stands for a stored secret, and there is none here"))
        return value

    out = map_secrets(document, registry, keep)
    if problems:
        raise ConfigError(problems=problems)
    return out
