"""Request -> target channels, as SPEC §4: first match wins unless a route says `continue`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from deskbell.models import AssistanceRequestIn
from deskbell.routing.rules import Matcher


class Target(NamedTuple):
    """A channel to deliver to, and the channel that takes over if that delivery dies."""

    channel: str
    fallback: str | None = None


@dataclass(frozen=True)
class Route:
    matchers: tuple[Matcher, ...]
    to: tuple[str, ...]
    continue_: bool = False
    fallback: str | None = None
    # Built once: a route's targets are the same for every request it matches.
    targets: tuple[Target, ...] = field(init=False, repr=False, compare=False)
    # The topics the route can match, when a topic matcher names them (its `literals()`:
    # `topic: sales` or a list), and the matchers left to check once the topic is known to be
    # one of them; None and all matchers when the route names no topic.
    topics: frozenset[str] | None = field(init=False, repr=False, compare=False)
    rest: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unique = dict.fromkeys(self.to)
        object.__setattr__(self, "targets", tuple(Target(c, self.fallback) for c in unique))
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

    def targets(self, request: AssistanceRequestIn) -> list[Target]:
        """Channels in route order, each once. Empty means: no route and no default."""
        found: dict[str, Target] = {}
        for route in self._by_topic.get(request.topic, self._any_topic):
            if not route.matches_rest(request):  # its topic is this request's, if it names one
                continue
            if not route.continue_ and not found and route.targets:
                return list(route.targets)  # the common case: one route decides
            for target in route.targets:
                found.setdefault(target.channel, target)
            if not route.continue_:
                break
        if not found:
            return list(self._default)
        return list(found.values())

    def known_topics(self) -> list[str]:
        """Topics named literally by a route, for error messages and `GET /v1/topics`."""
        return list(self._known)

    def channels_for_topic(self, topic: str) -> list[str]:
        return [t.channel for t in self.targets(AssistanceRequestIn(topic=topic, description="-"))]

    def _collect_known_topics(self) -> tuple[str, ...]:
        topics: dict[str, None] = {}
        for route in self.routes:
            for matcher in route.matchers:
                literals = matcher.literals() if matcher.path == "topic" else None
                topics.update(dict.fromkeys(sorted(literals or ())))
        return tuple(topics)
