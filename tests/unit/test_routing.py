"""Routing as data: one inline config and a table of requests -> expected channels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskbell.channels import build_registry
from deskbell.config.load import build_router, parse_config
from deskbell.models import AssistanceRequestIn
from deskbell.routing.router import Target
from deskbell.routing.rules import Matcher

CONFIG = """
channels:
  slack: {type: console}
  mail: {type: console}
  audit: {type: console}
  vip: {type: console}
  catchall: {type: console}
routes:
  - match: {topic: sales}
    to: [slack]
    fallback: mail
  - match: {topic: [pricing, billing]}
    to: [mail]
  - match: {topic: {regex: "^ops-"}}
    to: [audit]
    continue: true
  - match: {topic: ops-urgent}
    to: [slack, audit]
  - match: {topic: support, metadata.plan: enterprise}
    to: [vip]
  - match: {topic: support, language: es}
    to: [mail]
default: [catchall]
"""

ROUTER = build_router(parse_config(CONFIG, build_registry(), env={}))

CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"topic": "sales"}, ["slack"]),
    ({"topic": "SALES "}, ["slack"]),
    ({"topic": "pricing"}, ["mail"]),
    ({"topic": "billing"}, ["mail"]),
    ({"topic": "ops-db"}, ["audit"]),  # continue, but nothing else matches
    ({"topic": "ops-urgent"}, ["audit", "slack"]),  # continue, then a second route; deduped
    ({"topic": "support", "metadata": {"plan": "enterprise"}}, ["vip"]),
    ({"topic": "support", "language": "es"}, ["mail"]),
    ({"topic": "support", "language": "en"}, ["catchall"]),
    ({"topic": "nobody-knows"}, ["catchall"]),
]


@pytest.mark.parametrize(("fields", "expected"), CASES)
def test_route_table(fields: dict[str, Any], expected: list[str]) -> None:
    request = AssistanceRequestIn.model_validate({"description": "help", **fields})
    assert [t.channel for t in ROUTER.targets(request)] == expected


def test_fallback_travels_with_its_route() -> None:
    request = AssistanceRequestIn(topic="sales", description="x")
    assert ROUTER.targets(request) == [Target("slack", fallback="mail")]


def test_reject_default_gives_no_targets_and_lists_known_topics() -> None:
    config = parse_config(
        "channels: {c: {type: console}}\n"
        "routes: [{match: {topic: [sales, pricing]}, to: [c]}, {match: {topic: hr}, to: [c]}]\n",
        build_registry(),
        env={},
    )
    router = build_router(config)
    assert router.targets(AssistanceRequestIn(topic="legal", description="x")) == []
    assert router.known_topics() == ["pricing", "sales", "hr"]


def test_known_topics_of_the_big_table() -> None:
    assert ROUTER.known_topics() == ["sales", "billing", "pricing", "ops-urgent", "support"]


INDEXED = """
channels:
  a: {type: console}
  b: {type: console}
  c: {type: console}
  d: {type: console}
routes:
  - match: {metadata.plan: gold}
    to: [a]
    continue: true
  - match: {language: es, topic: [sales, support]}
    to: [b]
  - match: {topic: sales}
    to: [c]
    continue: true
  - match: {customer.email: {regex: "@example\\\\.com$"}}
    to: [d]
  - match: {topic: {regex: "^sup"}}
    to: [a, d]
"""


def all_match(matchers: Sequence[Matcher], request: AssistanceRequestIn) -> bool:
    return all(m.matches(request) for m in matchers)


def reference_targets(routes: Any, default: Any, request: AssistanceRequestIn) -> list[str]:
    """SPEC §4 read literally: every route in order, first match wins unless `continue`."""
    found: dict[str, None] = {}
    for route in routes:
        if all_match(route.matchers, request):
            found.update(dict.fromkeys(route.to))
            if not route.continue_:
                break
    return list(found) or list(default or ())


@pytest.mark.parametrize("topic", ["sales", "support", "billing", "sup-x"])
@pytest.mark.parametrize("language", [None, "es"])
@pytest.mark.parametrize("plan", [None, "gold"])
@pytest.mark.parametrize("email", [None, "x@example.com"])
def test_the_topic_index_routes_as_every_route_in_order_would(
    topic: str, language: str | None, plan: str | None, email: str | None
) -> None:
    """The router only runs the routes that name a request's topic or name none; the
    answer must be the one that trying every route in order gives."""
    router = build_router(parse_config(INDEXED, build_registry(), env={}))
    fields: dict[str, Any] = {"topic": topic, "description": "help"}
    if language:
        fields["language"] = language
    if plan:
        fields["metadata"] = {"plan": plan}
    if email:
        fields["customer"] = {"email": email}
    request = AssistanceRequestIn.model_validate(fields)
    expected = reference_targets(router.routes, router.default, request)
    assert [t.channel for t in router.targets(request)] == expected
    for route in router.routes:  # the index's premise: the topic stands in for its matcher
        indexed = route.topics is None or request.topic in route.topics
        assert (indexed and route.matches_rest(request)) == all_match(route.matchers, request)


# Exact values in a route are put in the form ingest stores, so case and spelling variants of
# the same value match: BCP 47 tags are case-insensitive (`EN` is `en`), topics lower-case,
# e-mail domains and URLs normalised. Regex matchers search the stored value as written.
CANONICAL = """
channels:
  english: {type: console}
  british: {type: console}
  latin: {type: console}
  bob: {type: console}
  chat: {type: console}
  chinese: {type: console}
  other: {type: console}
routes:
  - match: {language: EN-gb}
    to: [british]
  - match: {language: EN}
    to: [english]
  - match: {language: [PT-br, ES-419]}
    to: [latin]
  - match: {language: {regex: "^zh-Hant"}}
    to: [chinese]
  - match: {topic: " Sales ", customer.email: Bob@Example.COM}
    to: [bob]
  - match: {conversation_url: "https://Chat.Example.com"}
    to: [chat]
default: [other]
"""

CANONICAL_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"language": "en"}, ["english"]),
    ({"language": "EN"}, ["english"]),
    ({"language": "en-GB"}, ["british"]),
    ({"language": "en-gb"}, ["british"]),
    ({"language": "pt-BR"}, ["latin"]),
    ({"language": "es-419"}, ["latin"]),
    ({"language": "es"}, ["other"]),
    ({"language": "ZH-HANT-TW"}, ["chinese"]),  # stored zh-Hant-TW: the regex sees that
    ({"topic": "sales", "customer": {"email": "Bob@example.com"}}, ["bob"]),
    ({"topic": "SALES", "customer": {"email": "Bob@EXAMPLE.com"}}, ["bob"]),
    ({"topic": "sales", "customer": {"email": "bob@example.com"}}, ["other"]),  # local part kept
    ({"conversation_url": "https://chat.example.com/"}, ["chat"]),
    ({"conversation_url": "https://CHAT.example.com"}, ["chat"]),
]


@pytest.mark.parametrize(("fields", "expected"), CANONICAL_CASES)
def test_route_values_compare_in_stored_form(fields: dict[str, Any], expected: list[str]) -> None:
    router = build_router(parse_config(CANONICAL, build_registry(), env={}))
    request = AssistanceRequestIn.model_validate({"topic": "t", "description": "help", **fields})
    assert [t.channel for t in router.targets(request)] == expected


# The kinds of SPEC §8 beyond exact, list and regex: exists, numeric bounds, not, any/all.
KINDS = """
channels:
  known: {type: console}
  big: {type: console}
  small: {type: console}
  enterprise: {type: console}
  not-spanish: {type: console}
  rest: {type: console}
routes:
  - match: {topic: vip, customer.email: {exists: true}}
    to: [known]
  - match: {topic: seats, metadata.seats: {gte: 50}}
    to: [big]
  - match: {topic: seats, metadata.seats: {gt: 0, lt: 10.5}}
    to: [small]
  - match: {metadata.plan: {any: [enterprise, {regex: ^ent}, [gold, platinum]]}}
    to: [enterprise]
  - match: {topic: {any: [help, support]}, language: {not: {any: [es, {regex: ^es-}]}}}
    to: [not-spanish]
  - match: {topic: audit, metadata.n: {all: [{gte: 1}, {not: 13}, {lte: 20}]}}
    to: [known]
  - match: {topic: anon, customer.email: {exists: false}}
    to: [small]
default: [rest]
"""

KINDS_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"topic": "vip", "customer": {"email": "a@example.com"}}, ["known"]),
    ({"topic": "vip", "customer": {"name": "Ann"}}, ["rest"]),
    ({"topic": "vip"}, ["rest"]),
    ({"topic": "seats", "metadata": {"seats": 50}}, ["big"]),
    ({"topic": "seats", "metadata": {"seats": 49.9}}, ["rest"]),
    ({"topic": "seats", "metadata": {"seats": 10}}, ["small"]),
    ({"topic": "seats", "metadata": {"seats": 10.5}}, ["rest"]),  # lt is strict
    ({"topic": "seats", "metadata": {"seats": 0}}, ["rest"]),
    ({"topic": "seats", "metadata": {"seats": "60"}}, ["rest"]),  # text never compares
    ({"topic": "seats", "metadata": {"seats": True}}, ["rest"]),  # nor a boolean
    ({"topic": "seats"}, ["rest"]),
    ({"topic": "x", "metadata": {"plan": "enterprise"}}, ["enterprise"]),
    ({"topic": "x", "metadata": {"plan": "ent-2"}}, ["enterprise"]),
    ({"topic": "x", "metadata": {"plan": "platinum"}}, ["enterprise"]),
    ({"topic": "x", "metadata": {"plan": "free"}}, ["rest"]),
    ({"topic": "help"}, ["not-spanish"]),  # no language: `not` matches
    ({"topic": "support", "language": "en"}, ["not-spanish"]),
    ({"topic": "support", "language": "es"}, ["rest"]),
    ({"topic": "support", "language": "ES-mx"}, ["rest"]),
    ({"topic": "audit", "metadata": {"n": 12}}, ["known"]),
    ({"topic": "audit", "metadata": {"n": 13}}, ["rest"]),
    ({"topic": "audit", "metadata": {"n": 21}}, ["rest"]),
    ({"topic": "anon"}, ["small"]),
    ({"topic": "anon", "customer": {"email": "a@example.com"}}, ["rest"]),
]


@pytest.mark.parametrize(("fields", "expected"), KINDS_CASES)
def test_every_matcher_kind_routes(fields: dict[str, Any], expected: list[str]) -> None:
    router = build_router(parse_config(KINDS, build_registry(), env={}))
    request = AssistanceRequestIn.model_validate({"description": "help", **fields})
    assert [t.channel for t in router.targets(request)] == expected
    assert reference_targets(router.routes, router.default, request) == expected


def test_any_of_literals_indexes_its_topics() -> None:
    router = build_router(parse_config(KINDS, build_registry(), env={}))
    assert router.routes[4].topics == frozenset({"help", "support"})
    assert "help" in router.known_topics()


@pytest.mark.parametrize("topic", ["sales", "support", "billing", "sup-x"])
@pytest.mark.parametrize("language", [None, "es"])
@pytest.mark.parametrize("plan", [None, "gold"])
@pytest.mark.parametrize("email", [None, "x@example.com"])
def test_the_dry_run_explains_what_targets_does(
    topic: str, language: str | None, plan: str | None, email: str | None
) -> None:
    """`explain` (the dry run, GET /v1/topics) names the routes every-route-in-order takes,
    and its channels are `targets`' own."""
    from deskbell.routing.explain import explain

    router = build_router(parse_config(INDEXED, build_registry(), env={}))
    fields: dict[str, Any] = {"topic": topic, "description": "help", "language": language}
    fields["metadata"] = {"plan": plan} if plan else {}
    fields["customer"] = {"email": email} if email else None
    request = AssistanceRequestIn.model_validate(fields)

    def clock() -> Any:
        raise AssertionError("no window here: the clock is not read")

    answer = explain(router, request, clock)
    taken = [
        index for index, route in enumerate(router.routes) if all_match(route.matchers, request)
    ]
    first_stop = next((i for i in taken if not router.routes[i].continue_), None)
    expected = [i for i in taken if first_stop is None or i <= first_stop]
    assert [view.index for view in answer.routes] == expected
    assert answer.channels() == [t.channel for t in router.targets(request)]
    assert answer.default is (not expected)


WINDOWED = KINDS.replace(
    "default: [rest]",
    """  - match: {topic: [seats, x]}
    when: {days: sat-sun, tz: America/New_York}
    to: [known]
    continue: true
  - match: {}
    when: {hours: "22:00-06:00", tz: Australia/Sydney}
    to: [small]
default: [rest]""",
)

WINDOWED_ROUTER = build_router(parse_config(WINDOWED, build_registry(), env={}))


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(["vip", "seats", "x", "help", "support", "audit", "anon", "other"]),
    language=st.sampled_from([None, "en", "es", "es-MX"]),
    seats=st.one_of(st.none(), st.integers(-5, 100), st.floats(-5, 100), st.text(max_size=3)),
    plan=st.sampled_from([None, "enterprise", "ent-x", "gold", "free"]),
    email=st.sampled_from([None, "a@example.com"]),
    minutes=st.integers(0, 60 * 24 * 14),
)
def test_indexed_windowed_routing_is_every_route_in_order(
    topic: str,
    language: str | None,
    seats: Any,
    plan: str | None,
    email: str | None,
    minutes: int,
) -> None:
    """The topic index, the one-route short cut and the lazy clock give what trying every
    route in order (window included) gives; `explain` names those routes."""
    from datetime import UTC, datetime, timedelta

    from deskbell.routing.explain import explain

    router = WINDOWED_ROUTER
    metadata = {k: v for k, v in (("seats", seats), ("plan", plan), ("n", seats)) if v is not None}
    request = AssistanceRequestIn.model_validate(
        {
            "topic": topic,
            "description": "help",
            "language": language,
            "metadata": metadata,
            "customer": {"email": email} if email else None,
        }
    )
    at = datetime(2026, 3, 20, tzinfo=UTC) + timedelta(minutes=minutes)
    taken = [
        index
        for index, route in enumerate(router.routes)
        if all_match(route.matchers, request)
        and (route.window is None or route.window.contains(at))
    ]
    stop = next((i for i in taken if not router.routes[i].continue_), None)
    expected = [i for i in taken if stop is None or i <= stop]
    channels: dict[str, None] = {}
    for index in expected:
        channels.update(dict.fromkeys(router.routes[index].to))
    assert [t.channel for t in router.targets(request, lambda: at)] == (list(channels) or ["rest"])
    assert [view.index for view in explain(router, request, lambda: at).routes] == expected
