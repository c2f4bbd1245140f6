"""Time windows on a route: `when: {days: mon-fri, hours: "09:00-18:00", tz: Europe/Madrid}`.

A route with a window matches only inside it. The window is read on the wall clock of its
zone (`zoneinfo`), so it follows daylight saving: `09:00-18:00` Madrid time is 08:00-17:00 UTC
in winter and 07:00-16:00 UTC in summer. Hours that cross midnight (`22:00-06:00`) belong to
the day they start on: `days: fri, hours: "22:00-06:00"` is Friday 22:00 to Saturday 06:00.

Pure apart from reading the zone's rules once, when the config is loaded; the router asks for
the time only when a route with a window is about to match (routing/router.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deskbell.errors import ConfigError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEYS = ("days", "hours", "tz")
MINUTES_A_DAY = 24 * 60


class WindowError(ConfigError):
    """A `when:` block that is wrong. Each part is (key, why): the key (`.tz`, `.days[1]`, or
    "" for the block) is appended to the route's `when` in the message."""

    def __init__(self, parts: Sequence[tuple[str, str]]) -> None:
        self.parts = tuple(parts)
        super().__init__("; ".join(f"{where}: {why}" for where, why in self.parts))


@dataclass(frozen=True)
class Window:
    """Days (Monday is 0; None: every day), hours as minutes since midnight (None: all day;
    `end <= start` crosses midnight) and the zone whose wall clock they are read on."""

    days: frozenset[int] | None
    start: int | None
    end: int | None
    tz: ZoneInfo

    def contains(self, now: datetime) -> bool:
        """Whether `now` (timezone-aware) is inside the window."""
        local = now.astimezone(self.tz)
        day = local.weekday()
        if self.start is None or self.end is None:
            return self._on(day)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end and self._on(day)
        if minute >= self.start:
            return self._on(day)
        return minute < self.end and self._on((day - 1) % 7)  # opened the day before

    def _on(self, day: int) -> bool:
        return self.days is None or day in self.days

    def describe(self) -> str:
        """`mon-fri 09:00-18:00 Europe/Madrid`, as `config check` and the dry run show it."""
        yaml = self.to_yaml()
        return " ".join(str(yaml[key]) for key in KEYS if key in yaml)

    def to_yaml(self) -> dict[str, str]:
        """The canonical `when:` block: days as ranges from Monday, hours `HH:MM-HH:MM`."""
        out: dict[str, str] = {}
        if self.days is not None:
            out["days"] = _days_text(self.days)
        if self.start is not None and self.end is not None:
            out["hours"] = f"{_clock(self.start)}-{_clock(self.end)}"
        out["tz"] = self.tz.key
        return out


def parse_window(spec: Any) -> Window:
    """The window a `when:` block describes; WindowError naming each bad key."""
    if not isinstance(spec, dict):
        raise WindowError([("", "must be a mapping with days, hours and/or tz")])
    problems: list[tuple[str, str]] = []
    unknown = sorted(str(key) for key in spec if key not in KEYS)
    if unknown:
        problems.append(("", f"unknown key {', '.join(unknown)}; keys: {', '.join(KEYS)}"))
    if "days" not in spec and "hours" not in spec:
        problems.append(("", "give days, hours or both (without them the route always matches)"))
    days = hours = None
    tz = ZoneInfo("UTC")
    try:
        days = _parse_days(spec["days"]) if "days" in spec else None
    except WindowError as exc:
        problems.extend(exc.parts)
    try:
        hours = _parse_hours(spec["hours"]) if "hours" in spec else None
    except WindowError as exc:
        problems.extend(exc.parts)
    try:
        tz = _parse_tz(spec["tz"]) if "tz" in spec else tz
    except WindowError as exc:
        problems.extend(exc.parts)
    if problems:
        raise WindowError(problems)
    start, end = hours if hours is not None else (None, None)
    return Window(days, start, end, tz)


def _parse_tz(value: object) -> ZoneInfo:
    if not isinstance(value, str) or not value:
        raise WindowError([(".tz", f"{value!r} is not a time zone name such as Europe/Madrid")])
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise WindowError([(".tz", f"unknown time zone {value!r}")]) from None


def _parse_days(value: object) -> frozenset[int]:
    """`mon-fri`, `sat`, `mon-wed, fri`, `[sat, sun]`, `[mon-tue, thu]`; a range may wrap
    (`fri-mon`)."""
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",")]
        where = [".days"] * len(items)
    elif isinstance(value, list) and value:
        items = list(value)
        where = [f".days[{position}]" for position in range(len(items))]
    else:
        raise WindowError([(".days", f"{value!r} is not days such as mon-fri or [sat, sun]")])
    days: set[int] = set()
    problems: list[tuple[str, str]] = []
    for key, item in zip(where, items, strict=True):
        try:
            days.update(_day_range(item))
        except ValueError as exc:
            problems.append((key, str(exc)))
    if problems:
        raise WindowError(problems)
    return frozenset(days)


def _day_range(item: object) -> list[int]:
    if not isinstance(item, str):
        raise ValueError(f"{item!r} is not a day; days are {', '.join(DAY_NAMES)}")
    first, dash, last = item.strip().lower().partition("-")
    for name in (first, last) if dash else (first,):
        if name.strip() not in DAY_NAMES:
            raise ValueError(f"{name.strip()!r} is not a day; days are {', '.join(DAY_NAMES)}")
    start = DAY_NAMES.index(first.strip())
    stop = DAY_NAMES.index(last.strip()) if dash else start
    return [(start + step) % 7 for step in range((stop - start) % 7 + 1)]


def _parse_hours(value: object) -> tuple[int, int]:
    """`HH:MM-HH:MM` on a 24-hour clock; `24:00` may end a range."""
    if not isinstance(value, str) or value.count("-") != 1:
        raise WindowError([(".hours", f'{value!r} is not hours such as "09:00-18:00"')])
    first, last = (part.strip() for part in value.split("-"))
    try:
        start, end = _minutes(first, end=False), _minutes(last, end=True)
    except ValueError as exc:
        raise WindowError([(".hours", str(exc))]) from None
    if start == end % MINUTES_A_DAY:
        raise WindowError(
            [(".hours", f"{value!r} starts where it ends; leave hours out for the whole day")]
        )
    return start, end


def _minutes(text: str, *, end: bool) -> int:
    hour, colon, minute = text.partition(":")
    if not (colon and len(hour) in (1, 2) and len(minute) == 2 and (hour + minute).isdigit()):
        raise ValueError(f"{text!r} is not a time HH:MM")
    total = int(hour) * 60 + int(minute)
    if int(minute) > 59 or total > MINUTES_A_DAY or (total == MINUTES_A_DAY and not end):
        raise ValueError(f"{text!r} is not a time of day (00:00..23:59, or 24:00 to end)")
    return total


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_text(days: frozenset[int]) -> str:
    """Runs of consecutive days from Monday: `mon-fri`, `mon, fri-sun`."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        DAY_NAMES[run[0]] if len(run) == 1 else f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}"
        for run in runs
    )
