"""Request -> target channels, as SPEC §4: first match wins unless a route says `continue`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from deskbell.models import AssistanceRequestIn
from deskbell.routing.rules import Matcher
from deskbell.routing.windows import Window

Now = Callable[[], datetime]
"""The injected clock routing asks for the time, only when a route with a window is tried."""


class Target(NamedTuple):
    """A channel to deliver to, and the channel that takes over if that delivery dies.

    With `step` set, an SLA escalation (SPEC §9): delivered `after` the accept if the request
    is still unclaimed then (its delivery is stored at accept, due later, cancelled by a claim).
    """

    channel: str
    fallback: str | None = None
    step: int | None = None
    after: timedelta | None = None


@dataclass(frozen=True)
class EscalationStep:
    """A route's SLA step: to `to` when still unclaimed `after` the accept."""

    after: timedelta
    to: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    matchers: tuple[Matcher, ...]
    to: tuple[str, ...]
    continue_: bool = False
    fallback: str | None = None
    escalations: tuple[EscalationStep, ...] = ()  # steps 1..n, in order
    window: Window | None = None  # `when:`: the route matches only inside it
    # Built once: a route's targets are the same for every request it matches (its
    # escalation steps' targets last).
    targets: tuple[Target, ...] = field(init=False, repr=False, compare=False)
    # The topics the route can match, when a topic matcher names them (its `literals()`:
    # `topic: sales` or a list), and the matchers left to check once the topic is known to be
    # one of them; None and all matchers when the route names no topic.
    topics: frozenset[str] | None = field(init=False, repr=False, compare=False)
    rest: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unique = dict.fromkeys(self.to)
        steps = tuple(
            Target(c, None, n, e.after)
            for n, e in enumerate(self.escalations, 1)
            for c in dict.fromkeys(e.to)
        )
        targets = tuple(Target(c, self.fallback) for c in unique)
        object.__setattr__(self, "targets", targets + steps)
        topics, rest = None, self.matchers
        for index, matcher in enumerate(self.matchers):
            literals = matcher.literals() if matcher.path == "topic" else None
            if literals is not None:
                topics = frozenset(literals)
                rest = self.matchers[:index] + self.matchers[index + 1 :]
                break
        object.__setattr__(self, "topics", topics)
        object.__setattr__(self, "rest", rest)

    def matches_rest(self, request: AssistanceRequestIn) -> bool:
        """The matchers other than the one that names the route's topics."""
        # A loop, not all() over a generator: this runs for every ingest request.
        for matcher in self.rest:  # noqa: SIM110
            if not matcher.matches(request):
                return False
        return True


@dataclass(frozen=True)
class Router:
    routes: Sequence[Route]
    default: tuple[str, ...] | None = None  # None: reject unmatched topics
    _known: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _default: tuple[Target, ...] = field(init=False, repr=False, compare=False)
    # topic -> the routes that may match it, in config order: the routes naming that topic
    # and those naming none. A request only runs the matchers of those, so routing costs the
    # same with 3 routes as with 300.
    _by_topic: dict[str, tuple[Route, ...]] = field(init=False, repr=False, compare=False)
    _any_topic: tuple[Route, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_known", self._collect_known_topics())
        object.__setattr__(self, "_default", tuple(Target(c) for c in self.default or ()))
        named = {topic for route in self.routes for topic in route.topics or ()}
        by_topic = {
            topic: tuple(r for r in self.routes if r.topics is None or topic in r.topics)
            for topic in named
        }
        object.__setattr__(self, "_by_topic", by_topic)
        object.__setattr__(self, "_any_topic", tuple(r for r in self.routes if r.topics is None))

    def targets(self, request: AssistanceRequestIn, now: Now | None = None) -> list[Target]:
        """Channels in route order, each once. Empty means: no route and no default.

        `now` is called (once) only when a route with a time window matches otherwise, so a
        config without windows never reads the clock; such a route without `now` is a bug."""
        found: dict[tuple[str, int | None], Target] = {}  # by channel and escalation step
        at: datetime | None = None
        for route in self._by_topic.get(request.topic, self._any_topic):
            if not route.matches_rest(request):  # its topic is this request's, if it names one
                continue
            if route.window is not None:
                at = at or _time(now)
                if not route.window.contains(at):
                    continue
            if not route.continue_ and not found and route.targets:
                return list(route.targets)  # the common case: one route decides
            for target in route.targets:
                found.setdefault((target.channel, target.step), target)
            if not route.continue_:
                break
        if not found:
            return list(self._default)
        return list(found.values())

    def matched(self, request: AssistanceRequestIn, now: Now | None = None) -> list[Route]:
        """The routes that decide `request`, in order (`targets` without its short cut, for
        the dry run and `GET /v1/topics`); empty when the default applies."""
        out: list[Route] = []
        at: datetime | None = None
        for route in self._by_topic.get(request.topic, self._any_topic):
            if not route.matches_rest(request):
                continue
            if route.window is not None:
                at = at or _time(now)
                if not route.window.contains(at):
                    continue
            out.append(route)
            if not route.continue_:
                break
        return out

    def known_topics(self) -> list[str]:
        """Topics named literally by a route, for error messages and `GET /v1/topics`."""
        return list(self._known)

    def channels_for_topic(self, topic: str, now: Now | None = None) -> list[str]:
        request = AssistanceRequestIn(topic=topic, description="-")
        return [t.channel for t in self.targets(request, now) if t.step is None]

    def _collect_known_topics(self) -> tuple[str, ...]:
        topics: dict[str, None] = {}
        for route in self.routes:
            for matcher in route.matchers:
                literals = matcher.literals() if matcher.path == "topic" else None
                topics.update(dict.fromkeys(sorted(literals or ())))
        return tuple(topics)


def _time(now: Now | None) -> datetime:
    if now is None:
        raise ValueError("a route has a time window: pass the router a clock (`now`)")
    return now()
