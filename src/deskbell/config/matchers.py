"""Route matchers checked against the request model, and exact values put in the form ingest
stores them.

Why: a matcher on a field no request has (`custmer.emial`) or on a value ingest never stores
(`topic: Sales Team`, `language: english`) makes a route that can never match, and nothing
would say so. The valid paths come from `AssistanceRequestIn` itself, and each exact value is
run through that field's own validator, so the config compares what ingest stores:
`language: EN` becomes `en`, `topic: Sales` `sales`, `customer.email: Bob@Example.COM`
`Bob@example.com`. Regex matchers stay as written: they search the stored value.
"""

from __future__ import annotations

from difflib import get_close_matches
from functools import cache
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from deskbell.config.schema import MatchSpec, RegexSpec, RouteConfig
from deskbell.models import AssistanceRequestIn

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


@cache  # built on first use: the validators cost ~10 ms, and only config loading needs them
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


def _canonical(path: str, value: str | int | bool) -> str | int | bool:
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


def _check_spec(path: str, spec: MatchSpec, where: str, problems: list[str]) -> MatchSpec:
    if isinstance(spec, RegexSpec):
        return spec  # searched in the stored value as written; compiled by the cross-check
    if isinstance(spec, list):
        if not spec:
            problems.append(f"{where}: an empty list matches nothing")
        values: list[str] = []
        for position, item in enumerate(spec):
            try:
                values.append(str(_canonical(path, item)))
            except ValueError as exc:
                problems.append(f"{where}[{position}]: {exc}")
        return list(dict.fromkeys(values))
    try:
        return _canonical(path, spec)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return spec


def check_routes(routes: list[RouteConfig]) -> tuple[list[RouteConfig], list[str]]:
    """The routes with exact values in stored form, and every matcher that can never match
    (`routes[2].match.topic: 'Sales Team' is not a valid topic: ...`)."""
    problems: list[str] = []
    out: list[RouteConfig] = []
    for index, route in enumerate(routes):
        match: dict[str, MatchSpec] = {}
        for path, spec in route.match.items():
            where = f"routes[{index}].match.{path}"
            problem = path_problem(path)
            if problem is not None:
                problems.append(f"{where}: {problem}")
                match[path] = spec
                continue
            match[path] = _check_spec(path, spec, where, problems)
        out.append(route.model_copy(update={"match": match}))
    return out, problems
