"""Time windows (`when:` on a route): days, hours across midnight, zones and their daylight
saving changes, the errors that name the key, and a router that reads the clock only when a
route with a window is about to match."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deskbell.channels import build_registry
from deskbell.config.load import build_router, parse_config, routing_table
from deskbell.errors import ConfigError
from deskbell.models import AssistanceRequestIn
from deskbell.routing.windows import WindowError, parse_window


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


OFFICE = {"days": "mon-fri", "hours": "09:00-18:00", "tz": "Europe/Madrid"}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # Before the change (2026-03-29 02:00 CET -> 03:00 CEST) Madrid is UTC+1 ...
        ("2026-03-27T07:59:00", False),  # Friday 08:59 Madrid
        ("2026-03-27T08:00:00", True),  # Friday 09:00
        ("2026-03-27T16:59:00", True),  # Friday 17:59
        ("2026-03-27T17:00:00", False),  # Friday 18:00
        # ... after it UTC+2: the same wall-clock hours are an hour earlier in UTC.
        ("2026-03-30T07:00:00", True),  # Monday 09:00 CEST
        ("2026-03-30T06:59:00", False),  # Monday 08:59 CEST (would be inside in winter)
        ("2026-03-30T16:30:00", False),  # Monday 18:30 CEST (17:30 in winter: inside)
        ("2026-03-29T10:00:00", False),  # Sunday
        # The autumn change (2026-10-25 03:00 CEST -> 02:00 CET): UTC+1 again.
        ("2026-10-23T07:30:00", True),  # Friday 09:30 CEST
        ("2026-10-26T07:30:00", False),  # Monday 08:30 CET
        ("2026-10-26T08:00:00", True),  # Monday 09:00 CET
        ("2026-10-26T16:59:00", True),  # Monday 17:59 CET
    ],
)
def test_office_hours_follow_daylight_saving(when: str, expected: bool) -> None:
    assert parse_window(OFFICE).contains(utc(when)) is expected


def test_hours_across_midnight_belong_to_the_day_they_start() -> None:
    window = parse_window({"days": "fri", "hours": "22:00-06:00"})  # UTC
    assert window.contains(utc("2026-03-27T22:00:00"))  # Friday 22:00
    assert window.contains(utc("2026-03-28T05:59:00"))  # Saturday 05:59: Friday's night
    assert not window.contains(utc("2026-03-28T06:00:00"))
    assert not window.contains(utc("2026-03-28T22:30:00"))  # Saturday night: not listed
    assert not window.contains(utc("2026-03-27T05:00:00"))  # Friday early: Thursday's night


def test_a_night_shift_across_the_spring_gap() -> None:
    """01:00-04:00 Madrid on the night the clocks skip 02:00-03:00 lasts two real hours."""
    window = parse_window({"hours": "01:00-04:00", "tz": "Europe/Madrid"})
    start = utc("2026-03-28T23:00:00")  # 00:00 CET
    inside = [
        minute
        for minute in range(0, 6 * 60, 15)
        if window.contains(start + timedelta(minutes=minute))
    ]
    # 01:00 CET (00:00 UTC) to 03:45 CEST (01:45 UTC): 8 quarters, two real hours.
    assert inside == list(range(60, 180, 15))


@pytest.mark.parametrize(
    ("days", "listed"),
    [
        ("mon-fri", "mon-fri"),
        (["sat", "sun"], "sat-sun"),
        ("Fri-Mon", "mon, fri-sun"),  # a range may wrap the week
        ("mon, wed-thu", "mon, wed-thu"),
        (["mon-tue", "thu"], "mon-tue, thu"),
        ("sun", "sun"),
    ],
)
def test_days_are_read_in_every_form_and_written_canonically(days: Any, listed: str) -> None:
    window = parse_window({"days": days})
    assert window.to_yaml() == {"days": listed, "tz": "UTC"}
    assert parse_window(window.to_yaml()) == window


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"days": "mon-fri", "tz": "Europe/Madird"}, ".tz: unknown time zone 'Europe/Madird'"),
        ({"days": "mon", "tz": "../../etc/passwd"}, ".tz: unknown time zone '../../etc/passwd'"),
        ({"days": "mon", "tz": 5}, ".tz: 5 is not a time zone name"),
        ({"days": "mon-fry"}, ".days: 'fry' is not a day; days are mon, tue,"),
        ({"days": ["sat", 7]}, ".days[1]: 7 is not a day"),
        ({"days": []}, ".days: [] is not days such as mon-fri"),
        ({"hours": "9-17"}, ".hours: '9' is not a time HH:MM"),
        ({"hours": "09:00-25:00"}, ".hours: '25:00' is not a time of day"),
        ({"hours": "09:60-10:00"}, ".hours: '09:60' is not a time of day"),
        ({"hours": "24:00-06:00"}, ".hours: '24:00' is not a time of day"),
        ({"hours": "09:00-09:00"}, ".hours: '09:00-09:00' starts where it ends"),
        ({"hours": 540}, ".hours: 540 is not hours such as"),
        ({"tz": "UTC"}, ": give days, hours or both"),
        ({"days": "mon", "hour": "09:00-10:00"}, ": unknown key hour; keys: days, hours, tz"),
        ("weekdays", ": must be a mapping"),
    ],
)
def test_a_bad_window_names_its_key(spec: Any, message: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(spec)
    assert message in str(caught.value)


CONFIG = """
channels: {day: {type: console}, night: {type: console}, all: {type: console}}
routes:
  - match: {topic: support}
    when: {days: [mon, tue, wed, thu, fri], hours: "09:00-18:00", tz: Europe/Madrid}
    to: [day]
  - match: {topic: support}
    when: {hours: "22:00-06:00", tz: Europe/Madrid}
    to: [night]
  - match: {topic: [support, sales]}
    to: [all]
"""


def test_a_route_matches_only_inside_its_window_and_the_clock_is_read_once() -> None:
    config = parse_config(CONFIG, build_registry(), env={})
    assert config.routes[0].when == OFFICE  # canonical: what GET /v1/config shows
    router = build_router(config)
    request = AssistanceRequestIn(topic="support", description="help")
    calls: list[datetime] = []

    def at(when: str) -> list[str]:
        def now() -> datetime:
            calls.append(utc(when))
            return utc(when)

        return [t.channel for t in router.targets(request, now)]

    assert at("2026-03-30T08:00:00") == ["day"]  # Monday 10:00 CEST
    assert at("2026-03-30T21:00:00") == ["night"]  # Monday 23:00
    assert at("2026-03-28T12:00:00") == ["all"]  # Saturday 13:00
    assert len(calls) == 3  # once per request, though two windows were tried


def test_a_config_without_windows_never_reads_the_clock() -> None:
    plain = """
channels: {day: {type: console}}
routes:
  - match: {topic: support, language: {not: fr}}
    to: [day]
"""
    router = build_router(parse_config(plain, build_registry(), env={}))

    def clock() -> datetime:
        raise AssertionError("the clock was read")

    request = AssistanceRequestIn(topic="support", description="help")
    assert [t.channel for t in router.targets(request, clock)] == ["day"]
    assert router.targets(AssistanceRequestIn(topic="sales", description="x"), clock) == []


def test_a_window_route_that_does_not_match_otherwise_never_reads_the_clock() -> None:
    router = build_router(parse_config(CONFIG, build_registry(), env={}))

    def clock() -> datetime:
        raise AssertionError("the clock was read")

    sales = AssistanceRequestIn(topic="sales", description="x")
    assert [t.channel for t in router.targets(sales, clock)] == ["all"]


def test_config_errors_name_the_route_and_the_key() -> None:
    bad = CONFIG.replace(
        "tz: Europe/Madrid}\n    to: [night]", "tz: Europe/Madird}\n    to: [night]"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, build_registry(), env={})
    assert "routes[1].when.tz: unknown time zone 'Europe/Madird'" in str(caught.value)


def test_config_check_shows_the_window() -> None:
    rows = routing_table(parse_config(CONFIG, build_registry(), env={}))
    assert rows[0] == ("topic=support", "day", "when mon-fri 09:00-18:00 Europe/Madrid")
    assert rows[1] == ("topic=support", "night", "when 22:00-06:00 Europe/Madrid")
