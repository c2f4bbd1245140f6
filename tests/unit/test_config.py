"""Config validation: every bad fixture in tests/data/bad has one defect, named by the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from deskbell.channels import build_registry
from deskbell.config.load import expand_env, load_config, parse_config, routing_table
from deskbell.errors import ConfigError

DATA = Path(__file__).parent.parent / "data"
BAD = sorted((DATA / "bad").glob("*.yaml"))


def expected_message(path: Path) -> str:
    """Each bad file's first line is `# expect: <text the error must contain>`."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_is_refused_with_the_key_named(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path, build_registry(), env={"SLACK_URL": "https://hooks.slack.com/x"})
    assert expected_message(path) in str(caught.value)


def test_there_are_bad_fixtures() -> None:
    assert len(BAD) >= 8


def test_good_config_loads_with_env_expansion() -> None:
    config = load_config(
        DATA / "good.yaml",
        build_registry(),
        env={"SLACK_URL": "https://hooks.slack.com/services/T/B/secret", "SMTP_HOST": "mail"},
    )
    assert set(config.channels) == {"sales-slack", "pricing-email", "ops-console"}
    assert config.channels["pricing-email"].model_dump()["smtp_url"] is not None
    assert config.default == ["ops-console"]


def test_redacted_config_hides_secrets() -> None:
    config = load_config(
        DATA / "good.yaml",
        build_registry(),
        env={"SLACK_URL": "https://hooks.slack.com/services/T/B/tok3n-v4lue", "SMTP_HOST": "mail"},
    )
    assert "tok3n-v4lue" not in str(config.redacted())
    assert "tok3n-v4lue" not in repr(config)


def test_expand_env_fallback_and_missing() -> None:
    assert expand_env("a ${X:-dflt} ${Y}", {"Y": "y"}) == "a dflt y"
    with pytest.raises(ConfigError, match="NOPE"):
        expand_env("${NOPE}", {})


def test_routing_table_rows() -> None:
    config = parse_config(
        "channels: {c: {type: console}, d: {type: console}}\n"
        "routes: [{match: {topic: [a, b]}, to: [c], continue: true, fallback: d}]\n",
        build_registry(),
        env={},
    )
    assert routing_table(config) == [
        ("topic=[a, b]", "c", "continue, fallback d"),
        ("(no route matched)", "reject", "default"),
    ]


def test_env_values_cannot_add_yaml_structure() -> None:
    config = parse_config(
        "channels:\n  s: {type: slack, webhook_url: '${URL}'}  # ${NOT_EXPANDED_IN_COMMENTS}\n",
        build_registry(),
        env={"URL": "https://hooks.slack.com/x}\nroutes: [oops]"},
    )
    assert config.routes == []


def test_route_values_are_stored_and_shown_as_ingest_stores_them() -> None:
    """`config check` prints what routing compares: `EN` is `en`, ` Sales ` is `sales`."""
    config = parse_config(
        "channels: {c: {type: console}}\n"
        "routes:\n"
        "  - {match: {topic: ' Sales ', language: [EN-gb, PT]}, to: [c]}\n"
        "  - {match: {language: {regex: '^EN'}, metadata.vip: true}, to: [c]}\n",
        build_registry(),
        env={},
    )
    assert config.routes[0].match == {"topic": "sales", "language": ["en-GB", "pt"]}
    assert config.routes[1].match["metadata.vip"] is True  # metadata values stay as written
    assert [row[0] for row in routing_table(config)][:2] == [
        "topic=sales, language=[en-GB, pt]",
        "language=/^EN/, metadata.vip=True",
    ]
