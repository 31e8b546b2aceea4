"""The gateway's settings: the ``gateway`` section of Sterling's one configuration.

:class:`GatewaySettings` is defined with the rest of the configuration in
:mod:`marketplace.config` (environment ``STERLING_GATEWAY_<FIELD>``, e.g.
``STERLING_GATEWAY_MAX_BLOB_BYTES=1048576``; ``docs/configuration.md``). This module builds it
on its own and resolves the folders the gateway serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marketplace.config import GatewaySettings, checkout_root
from marketplace.config import get_settings as get_sterling_settings

__all__ = ["GatewaySettings", "get_settings", "vendor_dir", "web_dir"]

PACKAGED_WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The browser UI shipped with the ``sterling`` package."""


def get_settings(**overrides: Any) -> GatewaySettings:
    """The gateway section of :func:`marketplace.config.get_settings`, ``overrides`` (its fields) taking precedence.

    Raises:
        ConfigError: an invalid value (the message names the setting).
    """
    return get_sterling_settings(gateway=overrides).gateway


def web_dir(settings: GatewaySettings) -> Path:
    """The static UI served at ``/``: ``web_dir`` if set, else the UI shipped with the package."""
    return settings.web_dir if settings.web_dir is not None else PACKAGED_WEB_DIR


def vendor_dir(settings: GatewaySettings) -> Path | None:
    """The npm packages served at ``/vendor``: ``vendor_dir`` if set, else the checkout's ``node_modules`` (if any)."""
    if settings.vendor_dir is not None:
        return settings.vendor_dir
    root = checkout_root()
    return root / "node_modules" if root is not None else None
