"""Route matchers parsed by their kind (`routing.rules.MATCHER_KINDS`) and checked against
the request model.

Why: a matcher on a field no request has (`custmer.emial`) or on a value ingest never stores
(`topic: Sales Team`, `language: english`) makes a route that can never match, and nothing
would say so. The valid paths come from `AssistanceRequestIn` itself, and each kind gets the
field's own validator (`_canonical`) for the values it compares, so the config compares what
ingest stores: `language: EN` becomes `en`, `topic: Sales` `sales`, `customer.email:
Bob@Example.COM` `Bob@example.com`. Regex matchers stay as written: they search the stored
value. A route's `when:` time window is checked here too (`parse_when`, routing/windows.py)
and kept in canonical form.
"""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from functools import cache, partial
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from deskbell.config.schema import RouteConfig
from deskbell.errors import ConfigError
from deskbell.models import AssistanceRequestIn
from deskbell.routing.rules import Matcher, MatcherError, Scalar, parse_matcher
from deskbell.routing.windows import Window, WindowError, parse_window

MAX_KEY_CHARS = 64  # as `MetadataKey`: a longer key is refused at ingest


def _adapter(info: FieldInfo) -> TypeAdapter[Any]:
    """The field's own validator (pydantic keeps a field's constraints beside its type)."""
    form: Any = info.annotation
    if info.metadata:
        form = Annotated[(form, *info.metadata)]
    return TypeAdapter(form)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


@cache  # built on first use: only config loading needs the validators
def _request_paths() -> tuple[dict[str, TypeAdapter[Any]], frozenset[str]]:
    """Fixed paths (`topic`, `customer.email`) with their validator, and the fields whose keys
    are free (`metadata`: any key)."""
    fixed: dict[str, TypeAdapter[Any]] = {}
    free: set[str] = set()
    for name, info in AssistanceRequestIn.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None:
            fixed.update({f"{name}.{sub}": _adapter(i) for sub, i in nested.model_fields.items()})
        elif get_origin(info.annotation) is dict:
            free.add(name)
        else:
            fixed[name] = _adapter(info)
    return fixed, frozenset(free)


def path_problem(path: str) -> str | None:
    """Why no request can have a value at `path`, or None when one can."""
    fixed, free_paths = _request_paths()
    if path in fixed:
        return None
    head, _, key = path.partition(".")
    if head in free_paths and key and "." not in key and len(key) <= MAX_KEY_CHARS:
        return None
    parts = [p for p in fixed if p.startswith(f"{path}.")]
    if parts:
        return f"{path} is matched one field at a time: {', '.join(parts)}"
    if head in free_paths:
        return (
            f"{head} is matched one key at a time: {head}.<key>, the key 1..{MAX_KEY_CHARS} "
            "characters without '.'"
        )
    candidates = [*fixed, *(f"{free}.{key}" for free in free_paths if key)]
    close = get_close_matches(path, candidates, n=1)
    if close:
        return f"no request has this field; did you mean {close[0]!r}?"
    known = ", ".join([*fixed, *(f"{free}.<key>" for free in sorted(free_paths))])
    return f"no request has this field (fields: {known})"


def _canonical(path: str, value: Scalar) -> Scalar:
    """`value` as ingest would store it at `path`; ValueError when ingest would refuse it."""
    adapter = _request_paths()[0].get(path)
    if adapter is None:
        return value  # a metadata value: string, number or boolean, compared as text
    if isinstance(value, bool):
        raise ValueError(
            f"{value} is a boolean here (YAML reads unquoted yes/no/on/off/true/false as "
            "booleans: `language: no` is false, not Norwegian); quote the value"
        )
    text = str(value)
    try:
        stored = adapter.validate_python(text)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        if path == "topic":
            reason = "a topic is 1..64 characters of a-z 0-9 _ . - once trimmed and lower-cased"
        raise ValueError(f"{text!r} is not a valid {path}: {reason}") from None
    return str(stored)


def parse_match(match: Mapping[str, Any], where: str) -> tuple[list[Matcher], list[str]]:
    """The matchers of a route's `match:` block (`where` is `routes[2]`), and every one that
    can never match (`routes[2].match.topic: 'Sales Team' is not a valid topic: ...`)."""
    matchers: list[Matcher] = []
    problems: list[str] = []
    for path, spec in match.items():
        key = f"{where}.match.{path}"
        problem = path_problem(path)
        if problem is not None:
            problems.append(f"{key}: {problem}")
            continue
        try:
            matchers.append(parse_matcher(path, spec, partial(_canonical, path)))
        except MatcherError as exc:
            problems.extend(f"{key}{at}: {why}" for at, why in exc.parts)
    return matchers, problems


def parse_when(when: Any, where: str) -> tuple[Window | None, list[str]]:
    """A route's `when:` window (None without one), and what is wrong with it
    (`routes[2].when.tz: unknown time zone 'Europe/Madird'`)."""
    if when is None:
        return None, []
    try:
        return parse_window(when), []
    except WindowError as exc:
        return None, [f"{where}.when{at}: {why}" for at, why in exc.parts]


def check_routes(routes: list[RouteConfig]) -> tuple[list[RouteConfig], list[str]]:
    """The routes with their matchers and windows in canonical form (as `to_yaml` writes
    them), and every matcher or window that can never match."""
    problems: list[str] = []
    out: list[RouteConfig] = []
    for index, route in enumerate(routes):
        matchers, found = parse_match(route.match, f"routes[{index}]")
        window, wrong = parse_when(route.when, f"routes[{index}]")
        problems.extend(found + wrong)
        if not found and not wrong:
            update: dict[str, Any] = {"match": {m.path: m.to_yaml() for m in matchers}}
            if window is not None:
                update["when"] = window.to_yaml()
            route = route.model_copy(update=update)
        out.append(route)
    return out, problems


def route_matchers(route: RouteConfig, where: str) -> tuple[Matcher, ...]:
    """The matchers of a checked route, for the router and `config check`."""
    matchers, problems = parse_match(route.match, where)
    if problems:
        raise ConfigError("; ".join(problems))
    return tuple(matchers)


def route_window(route: RouteConfig, where: str) -> Window | None:
    """The time window of a checked route, for the router and `config check`."""
    window, problems = parse_when(route.when, where)
    if problems:
        raise ConfigError("; ".join(problems))
    return window
