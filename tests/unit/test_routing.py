"""Routing as data: one inline config and a table of requests -> expected channels."""

from __future__ import annotations

from typing import Any

import pytest

from deskbell.channels import build_registry
from deskbell.config.load import build_router, parse_config
from deskbell.models import AssistanceRequestIn
from deskbell.routing.router import Target

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
