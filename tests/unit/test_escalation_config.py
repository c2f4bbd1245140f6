"""Route keys `escalate_after` and `escalate_to` (SPEC §9): one step or several, durations,
errors that name the key, channel names cross-checked; the router's escalation targets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deskbell.channels import build_registry
from deskbell.config.load import build_router, parse_config, routing_table
from deskbell.config.schema import parse_duration
from deskbell.errors import ConfigError
from deskbell.models import AssistanceRequestIn
from deskbell.routing.router import Target

CHANNELS = """
channels:
  desk: {type: console}
  lead: {type: console}
  manager: {type: console}
"""


def config(route: str, default: str = "reject") -> str:
    head = f"{CHANNELS}routes:\n  - match: {{topic: sales}}\n    to: [desk]\n"
    return f"{head}{route}default: {default}\n"


def targets(text: str, topic: str = "sales") -> list[Target]:
    router = build_router(parse_config(text, build_registry()))
    return router.targets(AssistanceRequestIn(topic=topic, description="x"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("2d", 172800), (" 5m ", 300)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0s", "10", "m", "1.5h", "-5m", "10 m", "1w", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_one_step() -> None:
    found = targets(config("    escalate_after: 10m\n    escalate_to: [lead, manager]\n"))
    after = timedelta(minutes=10)
    assert found == [
        Target("desk"),
        Target("lead", None, 1, after),
        Target("manager", None, 1, after),
    ]


def test_several_steps() -> None:
    route = "    escalate_after: [10m, 1h]\n    escalate_to: [lead, [manager, lead]]\n"
    found = targets(config(route))
    assert [(t.channel, t.step, t.after) for t in found] == [
        ("desk", None, None),
        ("lead", 1, timedelta(minutes=10)),
        ("manager", 2, timedelta(hours=1)),
        ("lead", 2, timedelta(hours=1)),
    ]
    table = routing_table(parse_config(config(route), build_registry()))
    assert "escalate 10m to lead, escalate 1h to manager+lead" in table[0][2]


def test_a_route_without_escalation_and_the_topics_view() -> None:
    text = config("    escalate_after: 10m\n    escalate_to: [lead]\n")
    assert targets(text, "pricing") == []  # no route, no default
    router = build_router(parse_config(text, build_registry()))
    assert router.channels_for_topic("sales") == ["desk"]  # escalations are not routes' channels


def test_continue_routes_keep_each_routes_steps() -> None:
    text = f"""{CHANNELS}routes:
  - match: {{topic: sales}}
    to: [desk]
    continue: true
    escalate_after: 10m
    escalate_to: [lead]
  - match: {{topic: sales}}
    to: [lead]
    escalate_after: 5m
    escalate_to: [manager]
"""
    found = targets(text)
    assert [(t.channel, t.step) for t in found] == [
        ("desk", None),
        ("lead", 1),
        ("lead", None),
        ("manager", 1),
    ]


@pytest.mark.parametrize(
    ("route", "key", "why"),
    [
        ("    escalate_after: 10m\n", "routes[0]", "go together"),
        ("    escalate_to: [lead]\n", "routes[0]", "go together"),
        ("    escalate_after: soon\n    escalate_to: [lead]\n", "routes[0]", "duration"),
        (
            "    escalate_after: [10m, 5m]\n    escalate_to: [lead, manager]\n",
            "routes[0]",
            "increase",
        ),
        ("    escalate_after: [10m]\n    escalate_to: [lead, manager]\n", "routes[0]", "one entry"),
        ("    escalate_after: 10m\n    escalate_to: [[lead]]\n", "routes[0]", "list of channels"),
        ("    escalate_after: 10m\n    escalate_to: [boss]\n", "routes[0].escalate_to[0]", "boss"),
        (
            "    escalate_after: [1m, 2m]\n    escalate_to: [lead, [manager, boss]]\n",
            "routes[0].escalate_to[1]",
            "boss",
        ),
    ],
)
def test_errors_name_the_key(route: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(route), build_registry())
    problems = caught.value.problems or []
    assert any(where.startswith(key) and why in text for where, text in problems), problems
