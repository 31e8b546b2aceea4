"""Gateway settings: one pydantic-settings class, environment prefix ``STERLING_GATEWAY_``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from oracle.index_db import default_url

from ..config import REPO_ROOT

DEFAULT_MAX_BLOB_BYTES = 1 << 30
DEFAULT_MAX_JSON_BYTES = 1 << 20


class GatewaySettings(BaseSettings):
    """What the gateway needs to know that its services do not tell it.

    Every field can be set from the environment, e.g. ``STERLING_GATEWAY_MAX_BLOB_BYTES=1048576``.
    """

    model_config = SettingsConfigDict(env_prefix="STERLING_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    state_dir: Path = Field(default=Path(".sterling"), description="blob store, index database, status board")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the chain index; SQLite in state_dir if unset")
    max_blob_bytes: int = Field(default=DEFAULT_MAX_BLOB_BYTES, ge=1, description="largest ciphertext upload")
    max_json_bytes: int = Field(default=DEFAULT_MAX_JSON_BYTES, ge=1024, description="largest JSON request body")
    rpc_max_batch: int = Field(default=100, ge=1, le=10_000, description="largest JSON-RPC batch forwarded")
    rpc_timeout_seconds: float = Field(default=30.0, gt=0)
    events_poll_seconds: float = Field(default=0.5, gt=0, description="how often an event stream looks for news")
    response_cache_entries: int = Field(default=512, ge=1, le=100_000, description="rendered index queries kept until the index moves")
    web_dir: Path | None = Field(default=REPO_ROOT / "web", description="static UI served at / (if it exists)")
    vendor_dir: Path | None = Field(default=REPO_ROOT / "node_modules", description="npm packages served at /vendor (if it exists)")

    @property
    def index_url(self) -> str:
        """The chain index database: ``database_url`` or SQLite under ``state_dir``."""
        return self.database_url or default_url(self.state_dir)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def get_settings(**overrides: Any) -> GatewaySettings:
    """Settings from the environment, with explicit ``overrides`` (e.g. from the CLI) taking precedence."""
    return GatewaySettings(**overrides)
