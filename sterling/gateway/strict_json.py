"""Strict JSON for request bodies: RFC 8259 numbers only, parsed before any route sees them.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, turns ``1e999`` into ``inf``,
and raises a bare ``ValueError`` on an integer of more than 4,300 digits. A NaN then passes
checks such as ``x > 0 or fail`` (every comparison with NaN is false) and is stored as
non-standard JSON other parsers refuse. :func:`strict_loads` refuses all of these with
:class:`~sterling.gateway.errors.NonStandardJson` (a 422), and :class:`StrictJsonMiddleware`
applies it to every JSON request body, so routes that let FastAPI parse their body are covered too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sterling.gateway.errors import NonStandardJson

MAX_INT_DIGITS = 100
"""Longest integer accepted in a JSON body: a uint256 has 78 digits."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _refuse_constant(name: str) -> Any:
    raise NonStandardJson(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise NonStandardJson(f"an integer of {len(text.lstrip('-'))} digits is out of range (at most {MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonStandardJson(f"the number {text[:32]} is out of range")
    return value


def strict_loads(data: bytes | str) -> Any:
    """Parse JSON, refusing ``NaN``/``Infinity``, numbers that overflow a float and integers over :data:`MAX_INT_DIGITS` digits.

    The caller bounds the nesting depth first (:class:`~sterling.gateway.limits.RequestGuardMiddleware`).

    Raises:
        NonStandardJson: ``data`` is not strict JSON (the message says why, without echoing it).

    Example:
        >>> strict_loads(b'{"scale": 2.5}')
        {'scale': 2.5}
        >>> strict_loads(b'{"scale": NaN}')  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        sterling.gateway.errors.NonStandardJson: NaN is not a JSON number
    """
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_finite_float)
    except NonStandardJson:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8
        raise NonStandardJson(f"the body is not JSON ({type(e).__name__})") from e


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


class StrictJsonMiddleware:
    """Refuse JSON request bodies that :func:`strict_loads` refuses, with a 422 ``{"detail": ...}``.

    The body is read whole (the size and depth guards outside this middleware bound it), checked,
    and handed on unchanged. Paths in ``skip`` parse their body themselves (the JSON-RPC relay
    answers a parse error as JSON-RPC ``-32700``).
    """

    def __init__(self, app: ASGIApp, *, skip: Collection[str] = ()) -> None:
        self.app = app
        self.skip = frozenset(skip)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or scope["path"] in self.skip or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except HTTPException as e:  # the size or depth guard refused the body
            await _send_json(send, e.status_code, str(e.detail))
            return
        if body:
            try:
                strict_loads(bytes(body))
            except NonStandardJson as e:
                await _send_json(send, 422, f"request body refused: {e}")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
