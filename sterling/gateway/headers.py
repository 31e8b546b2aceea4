"""What the gateway checks in, and adds to, the HTTP headers a browser sends and reads.

- :class:`HostGuardMiddleware`: only the configured ``Host`` names are answered (421 otherwise),
  so a page on another site whose name rebinds to 127.0.0.1 (DNS rebinding) cannot read the API.
- :class:`ContentTypeMiddleware`: state-changing requests must carry their route's real media type
  (415 otherwise); a page on another site can only send ``text/plain``, form or multipart bodies
  without a CORS preflight, and the gateway answers no preflight.
- :class:`SecurityHeadersMiddleware`: a strict Content-Security-Policy, ``nosniff``, no framing and
  no referrer on every response.

``docs/security.md`` says what each covers and what it leaves.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sterling.gateway.settings import GatewaySettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Host names that always mean this machine (browsers resolve ``localhost`` to loopback themselves)."""

_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)

PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


def split_host(host: str) -> tuple[str, int | None]:
    """A ``Host`` header (or allow-list entry) as lower-case name and port (``None`` when absent or malformed).

    Example:
        >>> split_host("[::1]:8000"), split_host("LocalHost")
        (('[::1]', 8000), ('localhost', None))
    """
    host = host.strip().lower()
    name, sep, port = host.rpartition(":")
    if not sep or name.endswith(":") or (name.startswith("[") != name.endswith("]")) or (not name.startswith("[") and ":" in name):
        return host, None  # no port, or a bare IPv6 address
    return name, int(port) if port.isdigit() and len(port) <= 5 else -1


def default_allowed_hosts(settings: GatewaySettings) -> tuple[str, ...]:
    """``settings.allowed_hosts`` if set, else the loopback names with the served port (and the listen address if specific)."""
    if settings.allowed_hosts is not None:
        return settings.allowed_hosts
    names = list(LOOPBACK_NAMES)
    bind = settings.host.strip().lower()
    if bind not in _WILDCARD_BINDS:
        try:
            address = ipaddress.ip_address(bind)
            bind = f"[{bind}]" if address.version == 6 else bind
        except ValueError:
            pass  # a host name
        if bind not in names:
            names.append(bind)
    return tuple(f"{name}:{settings.port}" for name in names)


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine (``localhost``, ``127.0.0.1``, ``[::1]``, any port)."""
    return host is not None and split_host(host)[0] in LOOPBACK_NAMES


class HostGuardMiddleware:
    """Answer only requests whose ``Host`` is on the allow-list; others get 421 Misdirected Request.

    An entry ``name:port`` matches that name and port (port 80 also matches a ``Host`` without
    one); an entry ``name`` matches the name on any port.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.exact: set[tuple[str, int | None]] = set()
        self.any_port: set[str] = set()
        for entry in allowed_hosts:
            name, port = split_host(entry)
            if port is None:
                self.any_port.add(name)
            else:
                self.exact.add((name, port))
                if port == 80:
                    self.exact.add((name, None))

    def allows(self, host: str | None) -> bool:
        if host is None:
            return False
        name, port = split_host(host)
        return name in self.any_port or (name, port) in self.exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = [value for name, value in scope.get("headers", ()) if name == b"host"]
        if len(hosts) == 1 and self.allows(hosts[0].decode("latin-1")):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_json(send, 421, "this gateway does not answer for that Host (see gateway.allowed_hosts in docs/configuration.md)")


class ContentTypeMiddleware:
    """State-changing requests under ``prefix`` must declare their route's media type, else 415.

    ``media_types`` maps a path to the type it takes; every other path under ``prefix`` takes
    ``default``. Parameters (``; charset=utf-8``) are ignored.
    """

    def __init__(self, app: ASGIApp, *, prefix: str, default: str, media_types: Mapping[str, str]) -> None:
        self.app = app
        self.prefix = prefix
        self.default = default
        self.media_types = dict(media_types)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        required = self.media_types.get(scope["path"], self.default)
        declared = [value for name, value in scope.get("headers", ()) if name == b"content-type"]
        media_type = declared[0].decode("latin-1").split(";", 1)[0].strip().lower() if len(declared) == 1 else None
        if media_type != required:
            await _send_json(send, 415, f"{scope['method']} {scope['path']} takes Content-Type: {required}")
            return
        await self.app(scope, receive, send)


def inline_script_hashes(index_html: Path) -> tuple[str, ...]:
    """CSP sources (``'sha256-…'``) of the inline ``<script>`` blocks of the UI's page (its import map)."""
    try:
        text = index_html.read_text(encoding="utf-8")
    except OSError:
        return ()
    return tuple(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() + "'" for body in _INLINE_SCRIPT.findall(text)
    )


def content_security_policy(script_hashes: Collection[str]) -> str:
    """The UI's policy: everything from this origin only, no inline script but the hashed import map.

    The UI sets widths and colours with ``style`` attributes (its charts), so those are allowed;
    ``<style>`` elements and style sheets from elsewhere are not. The favicon is a ``data:`` URL.
    """
    script = " ".join(("'self'", *script_hashes))
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src {script}",
            "style-src 'self'",
            "style-src-attr 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeadersMiddleware:
    """Add the browser-facing security headers to every HTTP response (``headers`` maps a path prefix to a CSP)."""

    def __init__(self, app: ASGIApp, *, csp: str, csp_by_prefix: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.csp = csp
        self.csp_by_prefix = dict(csp_by_prefix or {})

    def _csp_for(self, path: str) -> str:
        for prefix, csp in self.csp_by_prefix.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return csp
        return self.csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self._csp_for(scope["path"])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = csp
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Cross-Origin-Resource-Policy"] = "same-origin"
                headers["Permissions-Policy"] = PERMISSIONS_POLICY
            await send(message)

        await self.app(scope, receive, with_headers)


async def _send_json(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
