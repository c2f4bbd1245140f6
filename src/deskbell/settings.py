"""Process settings from the environment (SPEC §7). Routing lives in deskbell.yaml, not here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DESKBELL_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./deskbell.db"
    config: Path = Path("deskbell.yaml")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_format: Literal["console", "json"] = "console"
    log_level: str = "info"
    max_body_bytes: int = Field(default=65536, ge=1024)
    workers: int = Field(default=16, ge=1, le=1024, description="concurrent sends per process")
    processes: int = Field(
        default=1, ge=1, le=256, description="server processes `deskbell serve` runs on one port"
    )
    ingest_timeout: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="seconds ingest waits for its commit; then 503 + Retry-After (maybe stored)",
    )
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="on SIGTERM, how long running sends may finish"
    )
    # Security (docs/security.md). Secrets are SecretStr so a printed Settings shows none.
    api_keys: SecretStr = Field(
        default=SecretStr(""), description="comma-separated key:scope pairs to bootstrap"
    )
    webhook_secrets: SecretStr = Field(
        default=SecretStr(""), description="comma-separated whsec_ secrets for signed ingest"
    )
    rate_limit: float = Field(default=100.0, ge=0, description="requests/s per key; 0: off")
    metrics_open: bool = Field(
        default=False, description="serve /metrics without credentials (else scope read)"
    )
    rate_burst: int = Field(default=1000, ge=1, description="requests a key may send at once")
    # Run-time config (SPEC §8, docs/operations.md).
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="server key: encrypts literal secrets sent through the config API, signs "
        "email claim links and dashboard sessions",
    )
    config_poll_seconds: float = Field(
        default=1.0, gt=0, le=5, description="how often a node checks the active config version"
    )
    # The handoff (SPEC §9).
    public_url: str | None = Field(
        default=None, description="the URL people reach this service at, for links in emails"
    )
    claim_link_ttl_seconds: float = Field(default=86400.0, gt=0)
    # OIDC bearer tokens (SPEC §3): on when issuer and audience are both set.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_scopes: str = Field(
        default="", description="claim scope -> deskbell scope, e.g. request-assistance:ingest"
    )
    oidc_name_claim: str = Field(default="sub", description="the claim that names the caller")
