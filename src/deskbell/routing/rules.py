"""Matchers: one small class per kind. A new kind is one class here plus rows in its table test.

Every matcher reads one field of the request by dotted path (`topic`, `customer.email`,
`metadata.plan`); a missing field never matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from deskbell.models import AssistanceRequestIn


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Matcher(Protocol):
    @property
    def path(self) -> str: ...

    def matches(self, request: AssistanceRequestIn) -> bool: ...


@dataclass(frozen=True)
class Equals:
    """`topic: sales`. The value is in stored form (config load canonicalises it: topics
    lower-case, language tags `en-GB`), so comparing text is enough."""

    path: str
    value: str

    def matches(self, request: AssistanceRequestIn) -> bool:
        return _as_text(request.field_value(self.path)) == self.value


@dataclass(frozen=True)
class OneOf:
    """`topic: [sales, pricing]`."""

    path: str
    values: frozenset[str]

    def matches(self, request: AssistanceRequestIn) -> bool:
        return _as_text(request.field_value(self.path)) in self.values


@dataclass(frozen=True)
class Regex:
    """`topic: {regex: "^billing-"}`; searched, so anchor it when you mean the whole value.

    Kept as written and searched in the stored value: topics are lower-case and language tags
    canonical (`en-GB`, `zh-Hant-TW`), so `^EN` never matches; `(?i)` makes a regex ignore case.
    """

    path: str
    pattern: re.Pattern[str]

    def matches(self, request: AssistanceRequestIn) -> bool:
        text = _as_text(request.field_value(self.path))
        return text is not None and self.pattern.search(text) is not None
