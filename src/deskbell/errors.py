"""One root exception; its children name what went wrong so callers can catch precisely."""

from __future__ import annotations


class DeskbellError(Exception):
    """Root of every error deskbell raises on purpose."""


class ConfigError(DeskbellError):
    """The routing config is invalid; the message names the key and why."""


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
