"""One root exception; its children name what went wrong so callers can catch precisely."""

from __future__ import annotations

from collections.abc import Sequence


class DeskbellError(Exception):
    """Root of every error deskbell raises on purpose."""


class ConfigError(DeskbellError):
    """The routing config is invalid; the message names the key and why.

    `problems` lists every defect found as (key, why) pairs, e.g. ("routes[1].to[0]",
    "unknown channel 'x'"), for answers that show them one by one (`PUT /v1/config`'s 422);
    given alone, they make the message too. Empty when only the message is known."""

    def __init__(self, message: str = "", problems: Sequence[tuple[str, str]] = ()) -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(message or "; ".join(f"{key}: {why}" for key, why in self.problems))


class StaleVersion(DeskbellError):
    """A config write named the version it expected to replace (`If-Match`), and another
    version is active now (HTTP 412). `active` is the active number (None: no version yet)."""

    def __init__(self, expected: int, active: int | None) -> None:
        super().__init__(f"expected config version {expected}, but {active} is active")
        self.expected = expected
        self.active = active


class TemplateError(ConfigError):
    """A channel template does not compile or render; the message names the template, where
    it came from (default, inline or file) and the line."""

    def __init__(self, message: str, *, template: str, line: int | None = None) -> None:
        super().__init__(message)
        self.template = template
        self.line = line


class IdempotencyConflict(DeskbellError):
    """The same Idempotency-Key was used with a different body."""


class NotFound(DeskbellError):
    """A requested record does not exist."""


class InvalidState(DeskbellError):
    """An operation does not apply to a record in its current state."""


class UnsendableMessage(DeskbellError):
    """This message cannot be rendered, encoded or carried by a channel (a value the peer's
    format cannot hold, an address the server cannot take). Sending it again cannot help, so
    its delivery goes `dead` with this reason; the channel itself is fine (its breaker is not
    fed)."""


class ShuttingDown(DeskbellError):
    """The component is closing and takes no new work."""
