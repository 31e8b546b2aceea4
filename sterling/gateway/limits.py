"""Request guards: body size limits and JSON nesting depth, answered as JSON errors.

The nesting guard is not optional: py-evm and py_ecc raise Python's recursion limit to
100 000 when imported, so ``json.loads`` of a body like ``[[[[…`` would recurse until the C stack
overflows and take the whole process down (a segfault, not a ``RecursionError``). Bodies are
scanned as they stream in, before any parser sees them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_DEPTH = 64
_JSON_SPECIALS = re.compile(rb'[\[\]{}"\\]')
_OPEN, _CLOSE, _QUOTE, _BACKSLASH = frozenset(b"[{"), frozenset(b"]}"), ord('"'), ord("\\")


class NestedTooDeeply(ValueError):
    """A JSON document nests arrays/objects deeper than allowed."""


class JsonDepthScanner:
    """Tracks the nesting depth of a JSON text fed in pieces (strings and escapes respected).

    It does not validate JSON; it only guarantees that no document handed to a parser nests
    deeper than ``max_depth``.

    Example:
        >>> JsonDepthScanner(2).feed(b'{"a": [1, "[[["]}')
        >>> JsonDepthScanner(2).feed(b"[[[1]]]")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        sterling.gateway.limits.NestedTooDeeply: JSON nests deeper than 2 levels
    """

    def __init__(self, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self._in_string = False
        self._escaped_at = -1
        self._offset = 0

    def feed(self, chunk: bytes) -> None:
        """Account for the next bytes.

        Raises:
            NestedTooDeeply: the text so far opens more than ``max_depth`` levels.
        """
        for match in _JSON_SPECIALS.finditer(chunk):
            position = self._offset + match.start()
            char = chunk[match.start()]
            if self._in_string:
                if position == self._escaped_at:
                    continue
                if char == _BACKSLASH:
                    self._escaped_at = position + 1
                elif char == _QUOTE:
                    self._in_string = False
            elif char == _QUOTE:
                self._in_string = True
            elif char in _OPEN:
                self.depth += 1
                if self.depth > self.max_depth:
                    raise NestedTooDeeply(f"JSON nests deeper than {self.max_depth} levels")
            elif char in _CLOSE:
                self.depth -= 1
        self._offset += len(chunk)


def check_json_depth(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`NestedTooDeeply` if ``data`` nests deeper than ``max_depth``."""
    JsonDepthScanner(max_depth).feed(data)


class RequestGuardMiddleware:
    """Refuse request bodies over a per-path size limit (413) or nesting JSON too deeply (400).

    A declared ``Content-Length`` over the limit is refused before the app runs; a body that
    grows past it, or nests too deeply, raises from ``receive`` inside the route, where the
    app's exception handler renders ``{"detail": ...}``. Paths in ``binary_paths`` (ciphertext
    uploads) are not scanned as JSON.
    """

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: Mapping[str, int], binary_paths: Collection[str]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits)
        self.binary_paths = frozenset(binary_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.limits.get(path, self.default_limit)
        detail = f"request body exceeds the limit of {limit} bytes"
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = json.dumps({"detail": detail}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scanner = None if path in self.binary_paths else JsonDepthScanner()
        received = 0

        async def guarded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise HTTPException(status_code=413, detail=detail)
                if scanner is not None:
                    try:
                        scanner.feed(chunk)
                    except NestedTooDeeply as e:
                        raise HTTPException(status_code=400, detail=f"request body refused: {e}") from e
            return message

        await self.app(scope, guarded, send)
