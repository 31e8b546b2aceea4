"""The browser's JSON-RPC endpoint: chain reads and ``eth_sendRawTransaction``, nothing else.

The browser signs its own transactions; the gateway only relays them. Methods that would let
a caller act with the node's accounts or change the node (``eth_sendTransaction``,
``eth_accounts``, ``anvil_*``, ``evm_*``, ``debug_*`` …) are refused with ``-32601``.
Requests go to the node over HTTP (anvil, any RPC URL) or, for the embedded chain, through
the in-process provider, whose answers are re-encoded as a node would send them (quantities
as hex strings).
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import httpx
from web3 import HTTPProvider, Web3

logger = logging.getLogger(__name__)

READ_METHODS = frozenset(
    {
        "eth_chainId",
        "net_version",
        "eth_blockNumber",
        "eth_call",
        "eth_estimateGas",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_getBalance",
        "eth_getCode",
        "eth_getTransactionCount",
        "eth_getTransactionByHash",
        "eth_getTransactionReceipt",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getLogs",
    }
)
SEND_METHODS = frozenset({"eth_sendRawTransaction"})
ALLOWED_METHODS = READ_METHODS | SEND_METHODS

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
EXECUTION_REVERTED = 3

JsonRpcId = int | str | None


def error_response(request_id: JsonRpcId, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class RpcBackend(Protocol):
    """Where allowed requests go."""

    async def call(self, method: str, params: list[Any] | dict[str, Any], request_id: JsonRpcId) -> dict[str, Any]: ...


class HttpBackend:
    """Forwards to a node's HTTP JSON-RPC endpoint."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    async def call(self, method: str, params: list[Any] | dict[str, Any], request_id: JsonRpcId) -> dict[str, Any]:
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=payload)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as e:
            logger.warning("chain node at %s did not answer %s: %s", self.url, method, e)
            return error_response(request_id, INTERNAL_ERROR, f"the chain node did not answer: {type(e).__name__}")
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            return error_response(request_id, INTERNAL_ERROR, "the chain node sent an answer that is not JSON-RPC")
        answer["id"] = request_id
        answer["jsonrpc"] = "2.0"
        return answer


class ProviderBackend:
    """Calls an in-process web3 provider (the embedded chain) through web3's middleware."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    async def call(self, method: str, params: list[Any] | dict[str, Any], request_id: JsonRpcId) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self._call, method, params, request_id)

    def _call(self, method: str, params: list[Any] | dict[str, Any], request_id: JsonRpcId) -> dict[str, Any]:
        request = self.w3.provider.request_func(self.w3, self.w3.middleware_onion)
        # web3's ENS step chokes on a single address string in a log filter; a one-element list means the same.
        if (
            method == "eth_getLogs"
            and isinstance(params, list)
            and params
            and isinstance(params[0], dict)
            and isinstance(params[0].get("address"), str)
        ):
            params = [{**params[0], "address": [params[0]["address"]]}, *params[1:]]
        try:
            answer = request(method, params)
        except Exception as e:  # anything the tester raises is the caller's bad request or a revert
            return _tester_error(request_id, e)
        if "error" in answer:
            error: dict[str, Any] = dict(answer["error"])
            code = error.get("code")
            return error_response(request_id, code if isinstance(code, int) else SERVER_ERROR, str(error.get("message", "error")))
        return {"jsonrpc": "2.0", "id": request_id, "result": to_wire(answer.get("result"))}


def _tester_error(request_id: JsonRpcId, error: Exception) -> dict[str, Any]:
    """A JSON-RPC error for an exception of the embedded chain, shaped like a node's."""
    message = str(error)
    if type(error).__name__ == "TransactionFailed":
        reason = message.removeprefix("execution reverted: ")
        data = None
        if reason[:2] in ("b'", 'b"'):
            try:
                raw = ast.literal_eval(reason)
                data = "0x" + raw.hex() if isinstance(raw, bytes) else None
            except (ValueError, SyntaxError):
                data = None
        return error_response(request_id, EXECUTION_REVERTED, "execution reverted", data)
    if type(error).__name__ == "ValidationError":
        return error_response(request_id, INVALID_PARAMS, f"invalid params: {message}")
    return error_response(request_id, SERVER_ERROR, f"{type(error).__name__}: {message}"[:500])


def to_wire(value: Any, key: str | None = None) -> Any:
    """A web3 result as JSON-RPC puts it on the wire: integers as hex quantities, bytes as hex data."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_wire(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v, key) for v in value]
    return str(value)


def backend_for(w3: Web3, *, timeout: float) -> RpcBackend:
    """HTTP forwarding when the chain is a node we reach over HTTP, else the in-process provider."""
    provider = w3.provider
    if isinstance(provider, HTTPProvider) and provider.endpoint_uri:
        return HttpBackend(str(provider.endpoint_uri), timeout=timeout)
    return ProviderBackend(w3)


class RpcGateway:
    """Parses JSON-RPC 2.0 (single and batch), applies the allow-list, forwards the rest.

    Never raises for bad input: every problem becomes a JSON-RPC error object.
    """

    def __init__(self, backend: RpcBackend, *, max_batch: int) -> None:
        self.backend = backend
        self.max_batch = max_batch

    async def handle(self, body: bytes) -> dict[str, Any] | list[dict[str, Any]]:
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as e:
            return error_response(None, PARSE_ERROR, f"parse error: the body is not JSON ({type(e).__name__})")
        if isinstance(message, list):
            if not message:
                return error_response(None, INVALID_REQUEST, "invalid request: empty batch")
            if len(message) > self.max_batch:
                return error_response(None, INVALID_REQUEST, f"invalid request: batch of {len(message)} exceeds {self.max_batch}")
            # In order, one after the other: raw transactions of one sender keep their nonce order.
            return [await self._single(item) for item in message]
        return await self._single(message)

    async def _single(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            return error_response(None, INVALID_REQUEST, "invalid request: expected a JSON-RPC request object")
        request_id = item.get("id")
        if isinstance(request_id, bool) or not (request_id is None or isinstance(request_id, int | str)):
            return error_response(None, INVALID_REQUEST, "invalid request: id must be a string, an integer or null")
        if item.get("jsonrpc") != "2.0":
            return error_response(request_id, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
        method = item.get("method")
        if not isinstance(method, str):
            return error_response(request_id, INVALID_REQUEST, 'invalid request: "method" must be a string')
        params = item.get("params", [])
        if not isinstance(params, list | dict):
            return error_response(request_id, INVALID_PARAMS, 'invalid params: "params" must be an array or an object')
        if method not in ALLOWED_METHODS:
            return error_response(
                request_id,
                METHOD_NOT_FOUND,
                f"method {method[:64]!r} is not available through the Sterling gateway: it forwards chain reads and "
                "eth_sendRawTransaction only (sign transactions in the browser)",
            )
        return await self.backend.call(method, params, request_id)
