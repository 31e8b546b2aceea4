"""The Sterling gateway: REST API over the chain index, ciphertext uploads, JSON-RPC relay, live events.

It is untrusted by design: it stores only ciphertext and public JSON documents, relays
transactions the browser signed and data keys the browser wrapped to the key manager's
attested key, and never sees plaintext data, data keys or model weights (``docs/gateway.md``).

Example:
    >>> from sterling.gateway import create_app, get_settings  # doctest: +SKIP
    >>> app = create_app(get_settings(), services=services)
"""

from __future__ import annotations

from sterling.gateway.app import create_app
from sterling.gateway.services import GatewayServices
from sterling.gateway.settings import GatewaySettings, get_settings

__all__ = ["GatewayServices", "GatewaySettings", "create_app", "get_settings"]
