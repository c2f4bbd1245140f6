"""Config documents (YAML/JSON text, digest), the secrets in them (found from the models,
sealed, redacted, kept when masked) and the change summary."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from deskbell.channels import build_registry
from deskbell.config.changes import is_empty, summarize
from deskbell.config.document import build_config, digest, document_from_text, redacted
from deskbell.config.secrets import (
    MASK,
    fernet_key,
    is_reference,
    keep_masked,
    map_secrets,
    seal_document,
    unseal_document,
)
from deskbell.errors import ConfigError

REGISTRY = build_registry()
KEY = "a-server-key-of-at-least-32-characters!"
HOOK = "https://hooks.slack.com/services/T0/B0/s3cr3t"
SMTP = "smtp://deskbell:hunter2@mail.example.com:25"
WHSEC = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

YAML = f"""
channels:
  slack:
    type: slack
    webhook_url: {HOOK}
  mail:
    type: email
    smtp_url: {SMTP}
    from: deskbell@example.com
    to: [ops@example.com]
  ref:
    type: slack
    webhook_url: ${{SLACK_URL}}
routes:
  - match: {{topic: sales}}
    to: [slack, mail, ref]
default: reject
sources:
  bot:
    secrets: [{WHSEC}]
"""
ENV = {"SLACK_URL": "https://hooks.slack.com/services/T0/B0/from-env"}


def doc() -> dict[str, Any]:
    return document_from_text(YAML, "application/yaml")


def test_yaml_and_json_read_the_same_document() -> None:
    import json

    assert document_from_text(json.dumps(doc()), "application/json; charset=utf-8") == doc()


@pytest.mark.parametrize(
    ("text", "media", "why"),
    [
        ("channels: [", "application/yaml", "not valid YAML"),
        ("{", "application/json", "not valid JSON"),
        ("[1, 2]", "application/json", "must be a mapping"),
        ('{"a": NaN}', "application/json", "not a finite number"),
        ("when: 2024-01-01", "text/yaml", "quote it"),
        ("channels: {1: {type: console}}", "application/yaml", "not a string"),
        ("channels: {}", "text/plain", "unsupported media type"),
    ],
)
def test_text_that_is_not_a_document(text: str, media: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        document_from_text(text, media)
    assert caught.value.problems
    assert why in str(caught.value)


def test_digest_ignores_key_order() -> None:
    d = doc()
    assert digest(dict(reversed(d.items()))) == digest(d)
    assert digest({**d, "default": ["slack"]}) != digest(d)


def test_secret_fields_come_from_the_models() -> None:
    """Every SecretStr of every registered channel type (lists, dicts and optionals too) is
    treated as a secret, and nothing else is."""
    for name, kind in REGISTRY.items():
        for field_name, field in kind.settings_model.model_fields.items():
            key = field.alias or field_name
            secret = "SecretStr" in str(field.annotation)
            value: Any = {"k": "v"} if "dict[" in str(field.annotation) else "v"
            seen: list[str] = []

            def note(where: str, v: str, seen: list[str] = seen) -> str:
                seen.append(where)
                return v

            map_secrets({"channels": {"n": {"type": name, key: value}}}, REGISTRY, note)
            assert bool(seen) == secret, (name, key, seen)
    assert isinstance(SecretStr("x"), SecretStr)


def test_references_and_literals() -> None:
    assert is_reference("${A}")
    assert is_reference("${A}${B_2}")
    assert not is_reference("${A:-fallback}")  # the fallback is literal text
    assert not is_reference("https://h/${A}")
    assert not is_reference("plain")


def test_sealing_round_trip_and_redaction() -> None:
    sealed = seal_document(doc(), REGISTRY, KEY)
    text = str(sealed)
    for secret in (HOOK, "hunter2", WHSEC):
        assert secret not in text
    assert sealed["channels"]["slack"]["webhook_url"].startswith("enc:v1:")
    assert sealed["channels"]["ref"]["webhook_url"] == "${SLACK_URL}"
    assert sealed["channels"]["mail"]["from"] == "deskbell@example.com"  # not a secret
    assert unseal_document(sealed, REGISTRY, KEY) == doc()
    built = build_config(sealed, REGISTRY, env=ENV, secret_key=SecretStr(KEY))
    assert built == build_config(doc(), REGISTRY, env=ENV, secret_key=None)
    shown = redacted(sealed, REGISTRY)
    assert shown["channels"]["slack"]["webhook_url"] == MASK
    assert shown["channels"]["ref"]["webhook_url"] == "${SLACK_URL}"
    assert shown["sources"]["bot"]["secrets"] == [MASK]
    assert redacted(doc(), REGISTRY) == shown  # a literal never stored sealed: masked too


def test_resealing_keeps_tokens_of_unchanged_secrets() -> None:
    first = seal_document(doc(), REGISTRY, KEY)
    again = seal_document(doc(), REGISTRY, KEY, previous=first)
    assert digest(again) == digest(first)
    changed = doc()
    changed["channels"]["slack"]["webhook_url"] = HOOK + "x"
    other = seal_document(changed, REGISTRY, KEY, previous=first)
    assert other["channels"]["slack"]["webhook_url"] != first["channels"]["slack"]["webhook_url"]
    assert other["channels"]["mail"] == first["channels"]["mail"]


def test_without_a_key_a_literal_secret_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        seal_document(doc(), REGISTRY, None)
    keys = [key for key, _ in caught.value.problems]
    assert keys == [
        "channels.slack.webhook_url",
        "channels.mail.smtp_url",
        "sources.bot.secrets[0]",
    ]
    assert "DESKBELL_SECRET_KEY" in str(caught.value)
    assert HOOK not in str(caught.value)


def test_a_sealed_secret_needs_the_key_that_sealed_it() -> None:
    sealed = seal_document(doc(), REGISTRY, KEY)
    with pytest.raises(ConfigError, match=r"channels\.slack\.webhook_url"):
        build_config(sealed, REGISTRY, env=ENV, secret_key="another-key-of-at-least-32-chars!!")
    with pytest.raises(ConfigError, match="DESKBELL_SECRET_KEY is not set"):
        build_config(sealed, REGISTRY, env=ENV, secret_key=None)


def test_a_missing_variable_names_it() -> None:
    with pytest.raises(ConfigError, match="SLACK_URL"):
        build_config(doc(), REGISTRY, env={}, secret_key=None)


def test_key_forms() -> None:
    fernet = Fernet.generate_key().decode()
    assert fernet_key(fernet) == fernet.encode()
    assert fernet_key(KEY) == fernet_key(KEY)  # derived, the same on every node
    assert fernet_key(KEY) != fernet_key(KEY + "x")
    with pytest.raises(ConfigError, match="at least 32"):
        fernet_key("short")


def test_masked_values_keep_the_stored_secret() -> None:
    stored = seal_document(doc(), REGISTRY, KEY)
    shown = redacted(stored, REGISTRY)
    assert keep_masked(shown, REGISTRY, stored) == stored
    shown["channels"]["new"] = {"type": "slack", "webhook_url": MASK}
    with pytest.raises(ConfigError, match=r"channels\.new\.webhook_url"):
        keep_masked(shown, REGISTRY, stored)


def test_summary_names_what_changed() -> None:
    before = doc()
    after = doc()
    del after["channels"]["ref"]
    after["channels"]["slack"]["channel"] = "#sales"
    after["channels"]["new"] = {"type": "console"}
    after["routes"] = [
        {"match": {"topic": "sales"}, "to": ["slack"]},
        {"match": {"topic": ["a", "b"], "language": "es"}, "to": ["new"]},
    ]
    after["default"] = ["new"]
    summary = summarize(before, after)
    assert summary["channels"] == {"added": ["new"], "removed": ["ref"], "changed": ["slack"]}
    assert summary["routes"] == {
        "added": ['topic=["a","b"], language=es'],
        "removed": [],
        "changed": ["topic=sales"],
    }
    assert summary["default_changed"] is True
    assert summary["sources_changed"] is False
    assert is_empty(summarize(before, doc()))
    assert summarize(None, before)["channels"]["added"] == ["mail", "ref", "slack"]
