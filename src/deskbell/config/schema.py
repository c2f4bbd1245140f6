"""The shape of `deskbell.yaml`. Channel blocks are checked by their own module's model
(see channels/), so this file knows only what every config has."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deskbell.channels.base import ChannelSettings


class RegexSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    regex: str


MatchSpec = str | int | bool | list[str] | RegexSpec


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: dict[str, MatchSpec] = Field(default_factory=dict)
    to: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    fallback: str | None = None


class RawConfig(BaseModel):
    """The file before channel blocks are checked against their type's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    default: Literal["reject"] | list[str] = "reject"

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

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets masked (SecretStr dumps as '**********')."""
        return {
            "channels": {name: ch.model_dump(mode="json") for name, ch in self.channels.items()},
            "routes": [r.model_dump(mode="json", by_alias=True) for r in self.routes],
            "default": self.default,
        }
