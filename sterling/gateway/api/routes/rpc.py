"""``POST /api/rpc``: JSON-RPC for the browser, reads and ``eth_sendRawTransaction`` only."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sterling.gateway.api.deps import RpcDep
from sterling.gateway.schemas import JsonRpcResponsePublic

router = APIRouter(tags=["rpc"])

_REQUEST = {
    "type": "object",
    "required": ["jsonrpc", "method"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"type": ["integer", "string", "null"]},
        "method": {"type": "string"},
        "params": {"type": ["array", "object"]},
    },
}


@router.post(
    "/rpc",
    response_class=JSONResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [_REQUEST, {"type": "array", "items": _REQUEST}]}}},
        }
    },
    responses={200: {"model": JsonRpcResponsePublic | list[JsonRpcResponsePublic], "description": "JSON-RPC 2.0 response(s)"}},
)
async def rpc(request: Request, gateway: RpcDep) -> JSONResponse:
    """Forward JSON-RPC 2.0 (single or batch) to the chain node; other methods get ``-32601``, bad JSON ``-32700``.

    ``eth_call`` and ``eth_estimateGas`` are capped at ``rpc_gas_cap`` gas and ``rpc_call_seconds``
    (then ``-32000`` "execution timed out"); the body must be ``application/json`` (else 415).
    """
    return JSONResponse(await gateway.handle(await request.body()))
