"""A matcher kind is one class: defined here, registered in the test, and config validation,
`config check` and the router find it through `MATCHER_KINDS` with no other file edited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import pytest
import yaml

from deskbell.channels import build_registry
from deskbell.config.load import build_router, parse_config, routing_table
from deskbell.config.matchers import parse_match, route_matchers
from deskbell.errors import ConfigError
from deskbell.models import AssistanceRequestIn
from deskbell.routing.rules import (
    MATCHER_KINDS,
    Canonical,
    Matcher,
    MatcherError,
    as_text,
    matcher_kind,
)


@dataclass(frozen=True)
class OtherThan(Matcher):
    """`language: {other_than: en}`: a value is there and is not this one."""

    kind: ClassVar[str] = "other_than"
    written: ClassVar[str] = "{other_than: ...}"

    path: str
    value: str

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, dict) and set(spec) == {"other_than"}

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        try:
            return cls(path, str(canonical(spec["other_than"])))
        except ValueError as exc:
            raise MatcherError(str(exc)) from None

    def matches(self, request: AssistanceRequestIn) -> bool:
        text = as_text(request.field_value(self.path))
        return text is not None and text != self.value

    def describe(self) -> str:
        return f"(not {self.value})"

    def to_yaml(self) -> dict[str, str]:
        return {"other_than": self.value}


CONFIG = """
channels: {local: {type: console}, abroad: {type: console}, sales: {type: console}}
routes:
  - match: {topic: sales}
    to: [sales]
    continue: true
  - match: {language: {other_than: EN}}
    to: [abroad]
  - match: {topic: {other_than: " Sales "}}
    to: [local]
"""

CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"topic": "sales", "language": "de"}, ["sales", "abroad"]),
    ({"topic": "sales", "language": "en"}, ["sales"]),  # not `local`: the value is canonical
    ({"topic": "sales"}, ["sales"]),  # no language: other_than never matches a missing field
    ({"topic": "support", "language": "EN"}, ["local"]),
    ({"topic": "support", "language": "pt-BR"}, ["abroad"]),
]


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MATCHER_KINDS, OtherThan.kind, OtherThan)


@pytest.mark.parametrize(("fields", "expected"), CASES)
def test_a_kind_defined_here_routes(
    registered: None, fields: dict[str, Any], expected: list[str]
) -> None:
    router = build_router(parse_config(CONFIG, build_registry(), env={}))
    request = AssistanceRequestIn.model_validate({"description": "help", **fields})
    assert [t.channel for t in router.targets(request)] == expected
    assert router.known_topics() == ["sales"]  # it names no topic: tried for every one


def test_a_kind_defined_here_is_checked_and_shown(registered: None) -> None:
    config = parse_config(CONFIG, build_registry(), env={})
    assert config.routes[1].match == {"language": {"other_than": "en"}}
    assert config.routes[2].match == {"topic": {"other_than": "sales"}}
    assert [row[0] for row in routing_table(config)] == [
        "topic=sales",
        "language=(not en)",
        "topic=(not sales)",
        "(no route matched)",
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("EN}", "english}"), build_registry(), env={})
    assert str(caught.value).startswith(
        "routes[1].match.language: 'english' is not a valid language"
    )


def test_an_unregistered_form_names_the_forms_it_could_be() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG, build_registry(), env={})
    forms = (
        "a value, a list [a, b], {regex: ...}, {exists: true|false}, {gt|gte|lt|lte: number}, "
        "{not: matcher}, {any: [matchers]}, {all: [matchers]} (quote a value YAML reads as "
        "another type, such as a date)"
    )
    assert str(caught.value) == (
        f"routes[1].match.language: {{'other_than': 'EN'}} is not a matcher; write one of: "
        f"{forms}; routes[2].match.topic: {{'other_than': ' Sales '}} is not a matcher; "
        f"write one of: {forms}"
    )


def test_a_form_two_kinds_read_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Greedy(OtherThan):
        kind: ClassVar[str] = "greedy"

    monkeypatch.setitem(MATCHER_KINDS, OtherThan.kind, OtherThan)
    monkeypatch.setitem(MATCHER_KINDS, Greedy.kind, Greedy)
    with pytest.raises(ConfigError, match=r"read by several matcher kinds \(other_than, greedy\)"):
        parse_config(CONFIG, build_registry(), env={})


def test_a_kind_name_is_registered_once() -> None:
    with pytest.raises(ConfigError, match="'regex' is registered twice"):
        matcher_kind(type("Again", (OtherThan,), {"kind": "regex"}))


ROUND_TRIP = """
channels: {c: {type: console}}
routes:
  - match: {topic: " Sales ", language: [EN-gb, PT, pt], metadata.vip: true, metadata.n: 5}
    to: [c]
  - match: {customer.email: Bob@Example.COM, conversation_url: "https://Chat.Example.com"}
    to: [c]
  - match: {language: {regex: "^EN"}, metadata.plan: {other_than: Gold}}
    to: [c]
"""


def test_every_kind_parses_its_canonical_yaml_back_to_itself(registered: None) -> None:
    """The loaded config keeps `to_yaml()`, and the router is built from it."""
    raw = yaml.safe_load(ROUND_TRIP)["routes"]
    config = parse_config(ROUND_TRIP, build_registry(), env={})
    for index, route in enumerate(config.routes):
        first, problems = parse_match(raw[index]["match"], f"routes[{index}]")
        assert problems == []
        assert route_matchers(route, f"routes[{index}]") == tuple(first)


EVERY_KIND = """
channels: {c: {type: console}}
routes:
  - match:
      topic: {any: [Sales, [pricing, BILLING], {regex: ^ops-}]}
      customer.email: {exists: true}
      customer.phone: {exists: false}
      metadata.seats: {gte: 50}
      metadata.score: {gt: -1.5, lte: 10}
      language: {not: {any: [ES, {regex: ^es-}]}}
      metadata.plan: {all: [{not: free}, {not: {exists: false}}]}
    when: {days: [Sat, sun], hours: "22:00-06:00", tz: Europe/Madrid}
    to: [c]
"""


def test_every_built_in_kind_round_trips_and_shows_itself() -> None:
    """Canonical YAML parses back to the same matchers, and `config check` shows each."""
    config = parse_config(EVERY_KIND, build_registry(), env={})
    [route] = config.routes
    assert route.match == {
        "topic": {"any": ["sales", ["pricing", "billing"], {"regex": "^ops-"}]},
        "customer.email": {"exists": True},
        "customer.phone": {"exists": False},
        "metadata.seats": {"gte": 50},
        "metadata.score": {"gt": -1.5, "lte": 10},
        "language": {"not": {"any": ["es", {"regex": "^es-"}]}},
        "metadata.plan": {"all": [{"not": "free"}, {"not": {"exists": False}}]},
    }
    assert route.when == {"days": "sat-sun", "hours": "22:00-06:00", "tz": "Europe/Madrid"}
    again = parse_config(
        yaml.safe_dump(config.redacted(), sort_keys=False), build_registry(), env={}
    )
    assert again.routes == config.routes
    assert route_matchers(again.routes[0], "routes[0]") == route_matchers(route, "routes[0]")
    [row, _default] = routing_table(config)
    assert row == (
        "topic=(any of sales, [pricing, billing], /^ops-/), customer.email=(exists), "
        "customer.phone=(absent), metadata.seats=(>= 50), metadata.score=(> -1.5 and <= 10), "
        "language=(not (any of es, /^es-/)), metadata.plan=(all of (not free), (not (absent)))",
        "c",
        "when sat-sun 22:00-06:00 Europe/Madrid",
    )


def test_a_nested_matcher_names_where_inside_it_is_wrong() -> None:
    config = """
channels: {c: {type: console}}
routes:
  - match: {language: {any: [en, {not: [EN, english]}, {gte: 3}]}}
    to: [c]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(config, build_registry(), env={})
    assert str(caught.value) == (
        "routes[0].match.language.any[1].not[1]: 'english' is not a valid language: must be a "
        "BCP 47 language tag such as 'es' or 'en-GB'; routes[0].match.language.any[2]: language "
        "is text; gt/gte/lt/lte compare numbers, which only metadata values are"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gt": 1, "gte": 2}, "write one of gt and gte, not both"),
        ({"gte": 5, "lt": 5}, "no number is gte 5 and lt 5"),
        ({"gte": 1, "below": 3}, "gt/gte/lt/lte take no other key (found below)"),
        ({"not": "a", "x": 1}, "{not: ...} takes no other key (found x)"),
        ({"any": "gold"}, "any takes a non-empty list of matchers, not 'gold'"),
        ({"regex": "a", "not": "b"}, "is read by several matcher kinds (regex, not)"),
        ({"gte": float("inf")}, ".gte: inf is not a finite number"),
        ({"lte": -(2**53)}, ".lte: -9007199254740992 is beyond +-(2**53 - 1)"),
    ],
)
def test_bad_forms_of_the_new_kinds(spec: dict[str, Any], message: str) -> None:
    _, problems = parse_match({"metadata.n": spec}, "routes[0]")
    assert len(problems) == 1
    assert message in problems[0]
    assert problems[0].startswith("routes[0].match.metadata.n")
