"""Matcher kinds: one class each, found through `MATCHER_KINDS`.

A kind says how it is written in YAML (`reads`), turns that into a matcher (`parse`, with the
field's canonical form of a value), shows itself for `deskbell config check` (`describe`) and
matches a request. Config validation and the router know the kinds only through this registry,
so a new kind is one class decorated with `@matcher_kind` plus its test (docs/channels.md,
"Adding a matcher kind").

Every matcher reads one field of the request by dotted path (`topic`, `customer.email`,
`metadata.plan`); a missing field never matches.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar, cast

from deskbell.errors import ConfigError
from deskbell.models import AssistanceRequestIn

Scalar = str | int | bool
Canonical = Callable[[Scalar], Scalar]
"""A value as ingest stores it at the matcher's path (`EN` -> `en` for `language`); raises
ValueError saying why when ingest would refuse it. Metadata values come back as written."""


class MatcherError(ConfigError):
    """A matcher's YAML that no request can ever match. Each part is (where inside the value,
    why): where is "" for the whole value or e.g. "[1]" for a list item, and is appended to
    the matcher's key in the message (`routes[0].match.topic[1]: ...`)."""

    def __init__(self, why: str = "", *, parts: Sequence[tuple[str, str]] = ()) -> None:
        self.parts: tuple[tuple[str, str], ...] = tuple(parts) or (("", why),)
        super().__init__("; ".join(f"{where}: {reason}" for where, reason in self.parts))


def as_text(value: Any) -> str | None:
    """A request's value as matchers compare it: booleans as YAML writes them."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Matcher(ABC):
    """One kind of matcher. Subclasses are frozen dataclasses with a `path` field."""

    kind: ClassVar[str]
    """Its name in the registry and in error messages."""
    written: ClassVar[str]
    """How it is written, for the message about a value no kind reads (`{regex: ...}`)."""

    path: str

    @classmethod
    @abstractmethod
    def reads(cls, spec: object) -> bool:
        """Whether `spec`, a value under `match:` as YAML loaded it, is written this kind's way."""

    @classmethod
    @abstractmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        """The matcher for `spec` (one `reads` accepted); MatcherError when it can never match."""

    @abstractmethod
    def matches(self, request: AssistanceRequestIn) -> bool: ...

    @abstractmethod
    def describe(self) -> str:
        """How `deskbell config check` shows it after the path (`topic=<this>`)."""

    @abstractmethod
    def to_yaml(self) -> Any:
        """Its YAML value in canonical form: what the loaded config holds and shows."""

    def literals(self) -> tuple[str, ...] | None:
        """The only values it can match, when it names them; else None. The router indexes
        routes by these for `topic`, so a kind must return them only if `matches` is false for
        every other value."""
        return None


MATCHER_KINDS: dict[str, type[Matcher]] = {}
"""kind name -> class, in registration order. Tests add kinds with `monkeypatch.setitem`."""


M = TypeVar("M", bound=type[Matcher])


def matcher_kind(cls: M) -> M:
    """Class decorator: register a matcher kind."""
    if cls.kind in MATCHER_KINDS:
        raise ConfigError(f"matcher kind {cls.kind!r} is registered twice")
    MATCHER_KINDS[cls.kind] = cls
    return cls


def parse_matcher(path: str, spec: Any, canonical: Canonical) -> Matcher:
    """The matcher the one kind that reads `spec` makes; MatcherError when none or several do."""
    kinds = [kind for kind in MATCHER_KINDS.values() if kind.reads(spec)]
    if len(kinds) == 1:
        return kinds[0].parse(path, spec, canonical)
    if kinds:
        names = ", ".join(kind.kind for kind in kinds)
        raise MatcherError(f"{spec!r} is read by several matcher kinds ({names})")
    forms = ", ".join(kind.written for kind in MATCHER_KINDS.values())
    shown = "null" if spec is None else repr(spec) if isinstance(spec, str) else str(spec)
    raise MatcherError(
        f"{shown} is not a matcher; write one of: {forms} (quote a value YAML reads as "
        "another type, such as a date)"
    )


@matcher_kind
@dataclass(frozen=True)
class Equals(Matcher):
    """`topic: sales`. The value is in stored form (`canonical`: topics lower-case, language
    tags `en-GB`), so comparing text is enough. Metadata values may be numbers or booleans,
    compared as text (`true`)."""

    kind: ClassVar[str] = "exact"
    written: ClassVar[str] = "a value"

    path: str
    value: Scalar

    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", as_text(self.value))

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, str | int | bool)

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        try:
            return cls(path, canonical(spec))
        except ValueError as exc:
            raise MatcherError(str(exc)) from None

    def matches(self, request: AssistanceRequestIn) -> bool:
        return as_text(request.field_value(self.path)) == self.text

    def describe(self) -> str:
        return str(self.value)

    def to_yaml(self) -> Scalar:
        return self.value

    def literals(self) -> tuple[str, ...]:
        return (self.text,)


@matcher_kind
@dataclass(frozen=True)
class OneOf(Matcher):
    """`topic: [sales, pricing]`: any of the values, each in stored form as for `Equals`."""

    kind: ClassVar[str] = "list"
    written: ClassVar[str] = "a list [a, b]"

    path: str
    values: tuple[str, ...]  # in the order written, without repeats

    accepted: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted", frozenset(self.values))

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, list)

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        problems: list[tuple[str, str]] = []
        if not spec:
            problems.append(("", "an empty list matches nothing"))
        values: list[str] = []
        for position, item in enumerate(spec):
            if not isinstance(item, str):
                problems.append((f"[{position}]", f"{item!r} is not text; quote it"))
                continue
            try:
                values.append(str(canonical(item)))
            except ValueError as exc:
                problems.append((f"[{position}]", str(exc)))
        if problems:
            raise MatcherError(parts=problems)
        return cls(path, tuple(dict.fromkeys(values)))

    def matches(self, request: AssistanceRequestIn) -> bool:
        return as_text(request.field_value(self.path)) in self.accepted

    def describe(self) -> str:
        return "[" + ", ".join(self.values) + "]"

    def to_yaml(self) -> list[str]:
        return list(self.values)

    def literals(self) -> tuple[str, ...]:
        return self.values


@matcher_kind
@dataclass(frozen=True)
class Regex(Matcher):
    """`topic: {regex: "^billing-"}`; searched, so anchor it when you mean the whole value.

    Kept as written and searched in the stored value: topics are lower-case and language tags
    canonical (`en-GB`, `zh-Hant-TW`), so `^EN` never matches; `(?i)` makes a regex ignore case.
    """

    kind: ClassVar[str] = "regex"
    written: ClassVar[str] = "{regex: ...}"

    path: str
    pattern: re.Pattern[str]

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, dict) and "regex" in spec

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        extra = sorted(str(key) for key in spec if key != "regex")
        if extra:
            raise MatcherError(f"{{regex: ...}} takes no other key (found {', '.join(extra)})")
        if not isinstance(spec["regex"], str):
            raise MatcherError(f"the regex must be text, not {spec['regex']!r}; quote it")
        try:
            return cls(path, re.compile(spec["regex"]))
        except re.error as exc:
            raise MatcherError(f"bad regex: {exc}") from None

    def matches(self, request: AssistanceRequestIn) -> bool:
        text = as_text(request.field_value(self.path))
        return text is not None and self.pattern.search(text) is not None

    def describe(self) -> str:
        return f"/{self.pattern.pattern}/"

    def to_yaml(self) -> dict[str, str]:
        return {"regex": self.pattern.pattern}


def _nested(error: MatcherError, prefix: str) -> MatcherError:
    """An inner matcher's error, each part under `prefix` (`.not`, `.any[1]`)."""
    return MatcherError(parts=[(f"{prefix}{where}", why) for where, why in error.parts])


def _only_key(spec: dict[Any, Any], key: str) -> None:
    extra = sorted(str(k) for k in spec if k != key)
    if extra:
        raise MatcherError(f"{{{key}: ...}} takes no other key (found {', '.join(extra)})")


@matcher_kind
@dataclass(frozen=True)
class Exists(Matcher):
    """`customer.email: {exists: true}`: the request has a value there (`false`: it has none)."""

    kind: ClassVar[str] = "exists"
    written: ClassVar[str] = "{exists: true|false}"

    path: str
    present: bool

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, dict) and "exists" in spec

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        _only_key(spec, "exists")
        if not isinstance(spec["exists"], bool):
            raise MatcherError(f"exists takes true or false, not {spec['exists']!r}")
        return cls(path, spec["exists"])

    def matches(self, request: AssistanceRequestIn) -> bool:
        return (request.field_value(self.path) is not None) is self.present

    def describe(self) -> str:
        return "(exists)" if self.present else "(absent)"

    def to_yaml(self) -> dict[str, bool]:
        return {"exists": self.present}


# Metadata numbers are I-JSON integers (models.IJSON_MAX_INT) or floats; a bound past that
# range compares with nothing ingest can store exactly.
MAX_BOUND = 2**53 - 1
_OPERATORS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "gt": (">", lambda value, bound: value > bound),
    "gte": (">=", lambda value, bound: value >= bound),
    "lt": ("<", lambda value, bound: value < bound),
    "lte": ("<=", lambda value, bound: value <= bound),
}


def _bound(key: str, value: object) -> tuple[str, str] | None:
    """Why `value` cannot be the bound under `key`, as a MatcherError part; None if it can."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (f".{key}", f"{value!r} is not a number (gt/gte/lt/lte compare numbers)")
    if value != value or value in (float("inf"), float("-inf")):
        return (f".{key}", f"{value} is not a finite number")
    if abs(value) > MAX_BOUND:
        return (
            f".{key}",
            f"{value} is beyond +-(2**53 - 1): ingest stores no number compared exactly there",
        )
    return None


@matcher_kind
@dataclass(frozen=True)
class Compare(Matcher):
    """`metadata.seats: {gte: 50}` or `{gt: 10, lte: 100}` (every bound must hold). Only
    numbers compare: a text or boolean value never matches (`"60"` is not 60), and only
    metadata values can be numbers, so any other path is a config error."""

    kind: ClassVar[str] = "compare"
    written: ClassVar[str] = "{gt|gte|lt|lte: number}"

    path: str
    bounds: tuple[tuple[str, int | float], ...]  # (operator, bound) in gt, gte, lt, lte order

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, dict) and any(key in _OPERATORS for key in spec)

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        problems: list[tuple[str, str]] = []
        extra = sorted(str(key) for key in spec if key not in _OPERATORS)
        if extra:
            problems.append(("", f"gt/gte/lt/lte take no other key (found {', '.join(extra)})"))
        bounds = [(key, spec[key]) for key in _OPERATORS if key in spec]
        problems.extend(p for key, value in bounds if (p := _bound(key, value)) is not None)
        if problems:
            raise MatcherError(parts=problems)
        if not _holds_numbers(canonical, bounds[0][1]):
            raise MatcherError(
                f"{path} is text; gt/gte/lt/lte compare numbers, which only metadata values are"
            )
        for low, high in (("gt", "lt"), ("gt", "lte"), ("gte", "lt"), ("gte", "lte")):
            if low in spec and high in spec:
                empty = spec[low] > spec[high] or (
                    spec[low] == spec[high] and (low, high) != ("gte", "lte")
                )
                if empty:
                    raise MatcherError(f"no number is {low} {spec[low]} and {high} {spec[high]}")
        for pair in (("gt", "gte"), ("lt", "lte")):
            if all(key in spec for key in pair):
                raise MatcherError(f"write one of {pair[0]} and {pair[1]}, not both")
        return cls(path, tuple(bounds))

    def matches(self, request: AssistanceRequestIn) -> bool:
        value = request.field_value(self.path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        for operator, bound in self.bounds:  # noqa: SIM110 (a loop on the ingest path)
            if not _OPERATORS[operator][1](value, bound):
                return False
        return True

    def describe(self) -> str:
        return "(" + " and ".join(f"{_OPERATORS[op][0]} {b}" for op, b in self.bounds) + ")"

    def to_yaml(self) -> dict[str, int | float]:
        return dict(self.bounds)


def _holds_numbers(canonical: Canonical, sample: int | float) -> bool:
    """Whether the path stores numbers: `canonical` hands a metadata value back as written,
    and a fixed field's value as text (or refuses it)."""
    try:
        stored = canonical(cast("Scalar", sample))
    except ValueError:
        return False
    return stored == sample and not isinstance(stored, str)


@matcher_kind
@dataclass(frozen=True)
class Not(Matcher):
    """`language: {not: es}`, `topic: {not: {regex: ^test-}}`: the inner matcher does not match.
    A missing field matches (`{not: es}` takes a request without a language); write
    `{all: [{exists: true}, {not: es}]}` to require one."""

    kind: ClassVar[str] = "not"
    written: ClassVar[str] = "{not: matcher}"

    path: str
    inner: Matcher

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, dict) and "not" in spec

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        _only_key(spec, "not")
        try:
            return cls(path, parse_matcher(path, spec["not"], canonical))
        except MatcherError as exc:
            raise _nested(exc, ".not") from None

    def matches(self, request: AssistanceRequestIn) -> bool:
        return not self.inner.matches(request)

    def describe(self) -> str:
        return f"(not {self.inner.describe()})"

    def to_yaml(self) -> dict[str, Any]:
        return {"not": self.inner.to_yaml()}


class _Several(Matcher):
    """`{any: [...]}` / `{all: [...]}`: matchers on the same path, each written as under
    `match:` (a value, a list, `{regex: ...}`, ...)."""

    word: ClassVar[str]
    path: str
    items: tuple[Matcher, ...]

    @classmethod
    def reads(cls, spec: object) -> bool:
        return isinstance(spec, dict) and cls.kind in spec

    @classmethod
    def parse(cls, path: str, spec: Any, canonical: Canonical) -> Self:
        _only_key(spec, cls.kind)
        listed = spec[cls.kind]
        if not isinstance(listed, list) or not listed:
            raise MatcherError(f"{cls.kind} takes a non-empty list of matchers, not {listed!r}")
        items: list[Matcher] = []
        problems: list[tuple[str, str]] = []
        for position, item in enumerate(listed):
            try:
                items.append(parse_matcher(path, item, canonical))
            except MatcherError as exc:
                problems.extend(_nested(exc, f".{cls.kind}[{position}]").parts)
        if problems:
            raise MatcherError(parts=problems)
        return cls(path, tuple(items))  # type: ignore[call-arg]

    def describe(self) -> str:
        return f"({self.word} " + ", ".join(item.describe() for item in self.items) + ")"

    def to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: [item.to_yaml() for item in self.items]}


@matcher_kind
@dataclass(frozen=True)
class AnyOf(_Several):
    """`metadata.plan: {any: [enterprise, {regex: ^ent}]}`: at least one of them matches."""

    kind: ClassVar[str] = "any"
    written: ClassVar[str] = "{any: [matchers]}"
    word: ClassVar[str] = "any of"

    path: str
    items: tuple[Matcher, ...]

    def matches(self, request: AssistanceRequestIn) -> bool:
        return any(item.matches(request) for item in self.items)

    def literals(self) -> tuple[str, ...] | None:
        """The union of the items' values, when every item names its values."""
        found: dict[str, None] = {}
        for item in self.items:
            values = item.literals()
            if values is None:
                return None
            found.update(dict.fromkeys(values))
        return tuple(found)


@matcher_kind
@dataclass(frozen=True)
class AllOf(_Several):
    """`metadata.seats: {all: [{gte: 10}, {not: 13}]}`: every one of them matches."""

    kind: ClassVar[str] = "all"
    written: ClassVar[str] = "{all: [matchers]}"
    word: ClassVar[str] = "all of"

    path: str
    items: tuple[Matcher, ...]

    def matches(self, request: AssistanceRequestIn) -> bool:
        return all(item.matches(request) for item in self.items)
