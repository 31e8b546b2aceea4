"""Network settings from ``brownie-config.yaml`` (its compiler section is read by :mod:`marketplace.compile`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
BROWNIE_CONFIG = REPO_ROOT / "brownie-config.yaml"

NetworkKind = Literal["embedded", "anvil", "rpc"]


@dataclass(frozen=True)
class NetworkConfig:
    """One named network from ``brownie-config.yaml``."""

    name: str
    kind: NetworkKind
    url: str | None
    port: int | None
    hardfork: str | None


@lru_cache(maxsize=1)
def _load(path: Path = BROWNIE_CONFIG) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a mapping")
    return doc


def network(name: str | None = None) -> NetworkConfig:
    """A named network; ``None`` means the configured default.

    Raises:
        ConfigError: unknown network or invalid entry.
    """
    networks = _load().get("networks", {})
    chosen = name or networks.get("default")
    entry = networks.get(chosen)
    if not isinstance(entry, dict):
        known = sorted(k for k in networks if k != "default")
        raise ConfigError(f"unknown network {chosen!r}; brownie-config.yaml defines {known}")
    kind = entry.get("kind")
    if kind not in ("embedded", "anvil", "rpc"):
        raise ConfigError(f"network {chosen!r} has invalid kind {kind!r}")
    port = entry.get("port")
    return NetworkConfig(
        name=str(chosen),
        kind=kind,
        url=str(entry["host"]) if "host" in entry else None,
        port=int(port) if port is not None else None,
        hardfork=str(entry["hardfork"]) if "hardfork" in entry else None,
    )
