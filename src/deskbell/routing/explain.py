"""Why a request goes where it goes: the dry run (`POST /v1/routes/test`, `deskbell routes
test`) and `GET /v1/topics`, both from the router that ingest uses.

The channels come from `Router.targets` itself and the routes from `Router.matched` (the same
walk without the short cut), so a dry run answers what ingest would do. A topic's overview
lists every route a request of that topic may take, with what else it must match (beyond the
topic) and its time window: `{topic: sales, language: es} -> es-slack` shows as a condition
`language=es` before the route that takes every other sales request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deskbell.models import AssistanceRequestIn
from deskbell.routing.router import Now, Route, Router, Target
from deskbell.routing.rules import Matcher


@dataclass(frozen=True)
class RouteView:
    """A route and its place in the config (`routes[index]`)."""

    index: int
    route: Route

    def match(self) -> dict[str, Any]:
        """Its `match:` block in canonical YAML form."""
        return {m.path: m.to_yaml() for m in self.route.matchers}

    def when(self) -> dict[str, str] | None:
        window = self.route.window
        return window.to_yaml() if window is not None else None

    def channels(self) -> list[str]:
        return [t.channel for t in self.route.targets if t.step is None]

    def describe(self) -> str:
        """`topic=sales, language=es`, as `config check` shows a route's match."""
        return ", ".join(f"{m.path}={m.describe()}" for m in self.route.matchers) or "(everything)"

    def data(self) -> dict[str, Any]:
        """The route as the dry run and `GET /v1/topics` answer it."""
        return {
            "index": self.index,
            "match": self.match(),
            "when": self.when(),
            "channels": self.channels(),
            "continue": self.route.continue_,
            "fallback": self.route.fallback,
        }


@dataclass(frozen=True)
class Explanation:
    """What routing does with one request: the targets ingest would store, the routes that
    gave them (empty when the default did), whether the default applied, and whether the
    request would be refused (no route and `default: reject`)."""

    targets: tuple[Target, ...]
    routes: tuple[RouteView, ...]
    default: bool
    rejected: bool

    def channels(self) -> list[str]:
        """The channels delivered at once (escalation steps are later, and only if unclaimed)."""
        return [t.channel for t in self.targets if t.step is None]

    def data(self) -> dict[str, Any]:
        """The dry run's answer (`POST /v1/routes/test`, `deskbell routes test --json`)."""
        return {
            "channels": self.channels(),
            "routes": [view.data() for view in self.routes],
            "default": self.default,
            "rejected": self.rejected,
        }


def explain(router: Router, request: AssistanceRequestIn, now: Now) -> Explanation:
    targets = tuple(router.targets(request, now))
    places = {id(route): index for index, route in enumerate(router.routes)}
    routes = tuple(RouteView(places[id(r)], r) for r in router.matched(request, now))
    return Explanation(targets, routes, default=not routes, rejected=not targets)


@dataclass(frozen=True)
class Branch:
    """A route a topic's requests may take: what they must match beyond the topic
    (`conditions`, on other fields; none: every request of the topic) and its window."""

    view: RouteView
    conditions: tuple[Matcher, ...]

    def describe(self) -> str | None:
        """`language=es`, `language=es, when mon-fri 09:00-18:00 UTC`; None: always taken."""
        parts = [f"{m.path}={m.describe()}" for m in self.conditions]
        window = self.view.route.window
        if window is not None:
            parts.append(f"when {window.describe()}")
        return ", ".join(parts) or None


@dataclass(frozen=True)
class TopicView:
    """A topic: what a request with only the topic gets now (`bare`), the routes its requests
    may take in order, and whether some of them can reach the default (no route matched)."""

    topic: str
    bare: Explanation
    branches: tuple[Branch, ...]
    reaches_default: bool

    def data(self) -> dict[str, Any]:
        """One topic of `GET /v1/topics`: `channels` as before (a request with only the topic),
        and each route with its `condition` beyond the topic (null: always taken)."""
        return {
            "topic": self.topic,
            "channels": self.bare.channels(),
            "routes": [
                {**branch.view.data(), "condition": branch.describe()} for branch in self.branches
            ],
            "reaches_default": self.reaches_default,
        }


def topic_view(router: Router, topic: str, now: Now) -> TopicView:
    """The routes in config order whose topic matchers accept `topic`, up to the first one
    that always matches and does not continue (nothing after it can be reached)."""
    bare = AssistanceRequestIn(topic=topic, description="-")
    branches: list[Branch] = []
    always = False
    for index, route in enumerate(router.routes):
        on_topic = [m for m in route.matchers if m.path == "topic"]
        if not all(m.matches(bare) for m in on_topic):
            continue
        conditions = tuple(m for m in route.matchers if m.path != "topic")
        branches.append(Branch(RouteView(index, route), conditions))
        if not conditions and route.window is None:
            always = True
            if not route.continue_:
                break
    return TopicView(topic, explain(router, bare, now), tuple(branches), not always)


def topic_views(router: Router, now: Now) -> list[TopicView]:
    """Every topic a route names, in config order (`Router.known_topics`)."""
    at = now()  # one time for the whole answer
    return [topic_view(router, topic, lambda: at) for topic in router.known_topics()]
