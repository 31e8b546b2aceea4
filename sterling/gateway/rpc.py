"""The browser's JSON-RPC endpoint: chain reads and ``eth_sendRawTransaction``, nothing else.

The browser signs its own transactions; the gateway only relays them. Methods that would let
a caller act with the node's accounts or change the node (``eth_sendTransaction``,
``eth_accounts``, ``anvil_*``, ``evm_*``, ``debug_*`` …) are refused with ``-32601``.
Requests go to the node over HTTP (anvil, any RPC URL) or, for the embedded chain, through
the in-process provider, whose answers are re-encoded as a node would send them (quantities
as hex strings).

Nothing a client sends may hold the gateway up: ``eth_call`` and ``eth_estimateGas`` get at most
``rpc_gas_cap`` gas and ``rpc_call_seconds`` of time, and run in worker threads (on the embedded
chain outside its lock, see :class:`ProviderBackend`), so ``/api/health``, the indexer and the
other clients keep their turn while a contract loops. Errors are JSON-RPC error objects with a
standard code and a short message; what went wrong inside is logged, never sent.
"""

from __future__ import annotations

import ast
import ctypes
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import anyio
import httpx
from web3 import HTTPProvider, Web3
from web3.providers.eth_tester import EthereumTesterProvider

from sterling.gateway.errors import NonStandardJson
from sterling.gateway.strict_json import strict_loads

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
EXECUTING_METHODS = frozenset({"eth_call", "eth_estimateGas"})
"""Methods that run EVM code the caller chooses: gas-capped, time-limited, off the chain's lock."""
MAX_CONCURRENT_CALLS = 2
"""Client ``eth_call``/``eth_estimateGas`` computing at once; more wait for a turn (within their time limit)."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
EXECUTION_REVERTED = 3

MESSAGES = {
    PARSE_ERROR: "parse error",
    INVALID_REQUEST: "invalid request",
    METHOD_NOT_FOUND: "method not found",
    INVALID_PARAMS: "invalid params",
    INTERNAL_ERROR: "internal error",
    SERVER_ERROR: "execution failed",
    EXECUTION_REVERTED: "execution reverted",
}
"""The short message sent with each code when the detail stays in the gateway's log."""
TIMED_OUT = "execution timed out"

JsonRpcId = int | str | None
Params = list[Any] | dict[str, Any]
T = TypeVar("T")


def error_response(request_id: JsonRpcId, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def logged_error(request_id: JsonRpcId, code: int, *, method: str, detail: str, message: str | None = None) -> dict[str, Any]:
    """A JSON-RPC error with a standard message; ``detail`` (exception text) goes to the log only, once."""
    logger.info("rpc %s (id %r) answered %d: %s", method, request_id, code, detail[:300])
    return error_response(request_id, code, message or MESSAGES.get(code, MESSAGES[INTERNAL_ERROR]))


class CallTimedOut(BaseException):
    """Raised in a worker thread whose EVM call ran past its time limit.

    A ``BaseException``, so no ``except Exception`` on the way out of py-evm or web3 swallows it.
    """


def run_with_deadline(fn: Callable[[], T], *, seconds: float) -> T:
    """Run ``fn`` in this thread; if it is still running after ``seconds``, stop it with :class:`CallTimedOut`.

    py-evm is pure Python and has no way to stop a computation, so a timer thread raises
    :class:`CallTimedOut` in this thread (``PyThreadState_SetAsyncExc``) at the next bytecode
    boundary. Only use it for work that changes no shared state (an ``eth_call`` on a throw-away
    VM state): the exception can land anywhere in ``fn``. It is raised only while ``fn`` runs, and
    is always caught before this function returns.

    Raises:
        CallTimedOut: ``fn`` ran out of time.
    """
    thread_id = threading.get_ident()
    guard = threading.Lock()
    running = True

    def interrupt() -> None:
        with guard:
            if running:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(CallTimedOut))

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        try:
            return fn()
        finally:
            with guard:
                running = False
            timer.cancel()  # a CallTimedOut set just before `running` cleared is raised here at the latest
    except CallTimedOut:
        raise CallTimedOut() from None


class ShortSwitchInterval:
    """Lower the interpreter's thread switch interval while client EVM calls run in this process (counted, then restored).

    A thread computing in py-evm holds the GIL until another thread has waited ``sys.getswitchinterval()``
    (5 ms); a request that touches the network and SQLite waits that long a dozen times. At 1 ms,
    ``/api/health`` answers in ~15 ms instead of ~45 ms (up to 140 ms) next to a looping ``eth_call``.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._active = 0
        self._saved = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, self.seconds))
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                sys.setswitchinterval(self._saved)


_SHORT_SWITCH_INTERVAL = ShortSwitchInterval(0.001)


class RpcBackend(Protocol):
    """Where allowed requests go; ``time_limit`` bounds requests that execute caller-chosen code."""

    async def call(self, method: str, params: Params, request_id: JsonRpcId, *, time_limit: float | None = None) -> dict[str, Any]: ...


class HttpBackend:
    """Forwards to a node's HTTP JSON-RPC endpoint."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    async def call(self, method: str, params: Params, request_id: JsonRpcId, *, time_limit: float | None = None) -> dict[str, Any]:
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        timeout = self.timeout if time_limit is None else min(self.timeout, time_limit)
        try:
            with anyio.fail_after(timeout):
                async with httpx.AsyncClient(timeout=timeout) as client:
                    response = await client.post(self.url, json=payload)
            answer = response.json()
        except TimeoutError:
            return logged_error(request_id, SERVER_ERROR, method=method, detail=f"no answer within {timeout} s", message=TIMED_OUT)
        except (httpx.HTTPError, ValueError) as e:
            logger.warning("chain node at %s did not answer %s: %s", self.url, method, type(e).__name__)
            return error_response(request_id, INTERNAL_ERROR, "the chain node did not answer")
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            return logged_error(request_id, INTERNAL_ERROR, method=method, detail="the node's answer is not JSON-RPC")
        if "error" in answer:
            return _node_error(request_id, answer["error"], method=method)
        return {"jsonrpc": "2.0", "id": request_id, "result": answer["result"]}


def _node_error(request_id: JsonRpcId, error: Any, *, method: str) -> dict[str, Any]:
    """A node's error object, passed on with its code, a bounded message and hex ``data`` (revert data) only."""
    if not isinstance(error, dict) or isinstance(error.get("code"), bool) or not isinstance(error.get("code"), int):
        return logged_error(request_id, INTERNAL_ERROR, method=method, detail=f"malformed node error {str(error)[:200]!r}")
    message = error.get("message")
    data = error.get("data")
    hex_data = data if isinstance(data, str) and data.startswith("0x") and len(data) <= 2 + 2 * 4096 else None
    return error_response(request_id, error["code"], str(message)[:200] if message else MESSAGES.get(error["code"], "error"), hex_data)


class ProviderBackend:
    """Calls an in-process web3 provider (the embedded chain) through web3's middleware.

    The embedded chain's provider takes one lock per request (py-evm is not thread-safe), so a
    client's ``eth_call`` that loops until its gas runs out would hold up every other reader —
    ``/api/health``, the indexer, the dispatcher — for as long as it runs (30M gas: ~10 s).
    ``eth_call`` and ``eth_estimateGas`` therefore go through a second provider over the same
    tester *without* the lock: they run on a throw-away VM state built for the block asked for,
    and only read the chain's database (trie nodes are addressed by hash, so a block mined at the
    same time does not change what they read). They are stopped at their time limit
    (:func:`run_with_deadline`), at most :data:`MAX_CONCURRENT_CALLS` at once.
    """

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        provider = w3.provider
        tester = getattr(provider, "ethereum_tester", None)
        self.unlocked = Web3(EthereumTesterProvider(tester)) if isinstance(provider, EthereumTesterProvider) and tester is not None else w3
        self._limiter: anyio.CapacityLimiter | None = None

    async def call(self, method: str, params: Params, request_id: JsonRpcId, *, time_limit: float | None = None) -> dict[str, Any]:
        if method not in EXECUTING_METHODS or time_limit is None:
            return await anyio.to_thread.run_sync(self._call, self.w3, method, params, request_id)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_CALLS)
        try:
            with anyio.fail_after(time_limit):
                await self._limiter.acquire()
        except TimeoutError:
            return logged_error(request_id, SERVER_ERROR, method=method, detail="no free slot within the time limit", message=TIMED_OUT)
        try:
            return await anyio.to_thread.run_sync(self._call_with_deadline, method, params, request_id, time_limit)
        finally:
            self._limiter.release()

    def _call_with_deadline(self, method: str, params: Params, request_id: JsonRpcId, seconds: float) -> dict[str, Any]:
        try:
            with _SHORT_SWITCH_INTERVAL:
                return run_with_deadline(lambda: self._call(self.unlocked, method, params, request_id), seconds=seconds)
        except CallTimedOut:
            return logged_error(request_id, SERVER_ERROR, method=method, detail=f"stopped after {seconds} s", message=TIMED_OUT)

    @staticmethod
    def _call(w3: Web3, method: str, params: Params, request_id: JsonRpcId) -> dict[str, Any]:
        request = w3.provider.request_func(w3, w3.middleware_onion)
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
            return _tester_error(request_id, e, method=method)
        if "error" in answer:
            error = answer["error"]
            code = error.get("code") if isinstance(error, dict) else None
            code = code if isinstance(code, int) and code in MESSAGES else SERVER_ERROR
            return logged_error(request_id, code, method=method, detail=str(error))
        return {"jsonrpc": "2.0", "id": request_id, "result": to_wire(answer.get("result"))}


_INVALID_PARAMS_ERRORS = frozenset({"ValidationError", "Web3ValidationError", "TypeError", "ValueError", "KeyError", "IndexError"})
"""Exception types the tester and web3 raise for parameters they cannot use (wrong count, shape or type)."""


def _tester_error(request_id: JsonRpcId, error: Exception, *, method: str) -> dict[str, Any]:
    """A JSON-RPC error for an exception of the embedded chain, shaped like a node's; the exception text is only logged."""
    name = type(error).__name__
    detail = f"{name}: {error}"
    if name == "TransactionFailed":
        reason = str(error).removeprefix("execution reverted: ")
        if reason[:2] in ("b'", 'b"'):
            try:
                raw = ast.literal_eval(reason)
            except (ValueError, SyntaxError):
                raw = None
            if isinstance(raw, bytes):
                return error_response(request_id, EXECUTION_REVERTED, MESSAGES[EXECUTION_REVERTED], "0x" + raw.hex())
        if reason.startswith("Out of gas"):
            return logged_error(request_id, SERVER_ERROR, method=method, detail=detail, message="out of gas")
        return logged_error(request_id, SERVER_ERROR, method=method, detail=detail)
    if name in _INVALID_PARAMS_ERRORS or isinstance(error, TypeError | ValueError | LookupError):
        return logged_error(request_id, INVALID_PARAMS, method=method, detail=detail)
    logger.warning("rpc %s (id %r): the embedded chain failed: %s", method, request_id, detail[:300])
    return error_response(request_id, INTERNAL_ERROR, MESSAGES[INTERNAL_ERROR])


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


def cap_gas(params: Params, gas_cap: int) -> Params | None:
    """``params`` of an ``eth_call``/``eth_estimateGas`` with the call's ``gas`` at most ``gas_cap``.

    A missing ``gas`` is set to ``gas_cap``, unless the call names a fee (``gasPrice``,
    ``maxFeePerGas``): then a node bounds the gas by what the sender can pay, and a 30M default
    would make a modest account fail its balance check. Returns ``None`` when the call object or
    its ``gas`` is malformed.

    Example:
        >>> cap_gas([{"to": "0x01", "gas": "0xffffffff"}, "latest"], 30_000_000)
        [{'to': '0x01', 'gas': '0x1c9c380'}, 'latest']
    """
    if not isinstance(params, list) or not params or not isinstance(params[0], dict):
        return None
    call = dict(params[0])
    gas = call.get("gas")
    if gas is None:
        if "gasPrice" in call or "maxFeePerGas" in call:
            return [call, *params[1:]]
        call["gas"] = hex(gas_cap)
        return [call, *params[1:]]
    try:
        value = int(gas, 16) if isinstance(gas, str) else gas if isinstance(gas, int) and not isinstance(gas, bool) else -1
    except ValueError:
        return None
    if value < 0:
        return None
    call["gas"] = hex(min(value, gas_cap))
    return [call, *params[1:]]


class RpcGateway:
    """Parses JSON-RPC 2.0 (single and batch), applies the allow-list and limits, forwards the rest.

    Never raises for bad input: every problem becomes a JSON-RPC error object.
    """

    def __init__(self, backend: RpcBackend, *, max_batch: int, chain_id: int, gas_cap: int, call_seconds: float) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.chain_id = chain_id
        self.gas_cap = gas_cap
        self.call_seconds = call_seconds

    async def handle(self, body: bytes) -> dict[str, Any] | list[dict[str, Any]]:
        try:
            message = strict_loads(body)
        except NonStandardJson as e:
            return logged_error(None, PARSE_ERROR, method="-", detail=str(e), message="parse error: the body is not JSON")
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
        if method == "net_version":  # the network id of a Sterling chain is its chain id (EIP-155), in decimal
            return {"jsonrpc": "2.0", "id": request_id, "result": str(self.chain_id)}
        time_limit = None
        if method in EXECUTING_METHODS:
            capped = cap_gas(params, self.gas_cap)
            if capped is None:
                return error_response(request_id, INVALID_PARAMS, "invalid params: expected a call object with a hex gas, if any")
            params, time_limit = capped, self.call_seconds
        try:
            return await self.backend.call(method, params, request_id, time_limit=time_limit)
        except Exception:  # a bug of ours: log it with its traceback, tell the client nothing more
            logger.exception("rpc %s (id %r) failed in the gateway", method, request_id)
            return error_response(request_id, INTERNAL_ERROR, MESSAGES[INTERNAL_ERROR])
