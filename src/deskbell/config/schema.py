"""The shape of `deskbell.yaml`. Channel blocks are checked by their own module's model
(see channels/), so this file knows only what every config has."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from deskbell.channels.base import ChannelSettings
from deskbell.channels.kit import whsec


class RouteConfig(BaseModel):
    """One route. `match` maps a request path to a matcher's YAML, which the matcher kinds
    read (`routing/rules.py`); `config/matchers.py` checks it and puts it in canonical form."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: dict[str, Any] = Field(default_factory=dict)
    to: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    fallback: str | None = None


class SourceConfig(BaseModel):
    """A sender that signs its requests (Standard Webhooks) instead of using an API key.

    Several secrets are accepted at once so a sender can rotate: add the new secret, switch
    the sender, then remove the old one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secrets: list[SecretStr] = Field(min_length=1, max_length=10)

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            if not whsec.is_webhook_secret(secret.get_secret_value()):
                # Never repeat the value: it is a credential.
                raise ValueError(f"each secret must be {whsec.RULE}")
        return value


class RawConfig(BaseModel):
    """The file before channel blocks are checked against their type's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    default: Literal["reject"] | list[str] = "reject"
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("default", mode="before")
    @classmethod
    def _reject_or_list(cls, value: Any) -> Any:
        if value != "reject" and not isinstance(value, list):
            raise ValueError("must be 'reject' or a list of channel names")
        return value


class DeskbellConfig(BaseModel):
    """A whole, cross-checked config: every channel block validated by its type's model."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    channels: dict[str, ChannelSettings]
    routes: list[RouteConfig]
    default: Literal["reject"] | list[str] = "reject"
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets masked (SecretStr dumps as '**********')."""
        return {
            "channels": {name: ch.model_dump(mode="json") for name, ch in self.channels.items()},
            "routes": [r.model_dump(mode="json", by_alias=True) for r in self.routes],
            "default": self.default,
            "sources": {name: s.model_dump(mode="json") for name, s in self.sources.items()},
        }
