"""The FastAPI application factory of the gateway."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from marketplace.errors import SterlingError
from sterling.gateway.api.routes import (
    blobs,
    config,
    datasets,
    deposits,
    events,
    health,
    jobs,
    operators,
    payments,
    rpc,
    specs,
    workers,
)
from sterling.gateway.cache import ResponseCache
from sterling.gateway.errors import status_of
from sterling.gateway.feed import EventFeed
from sterling.gateway.limits import RequestGuardMiddleware
from sterling.gateway.rpc import RpcGateway, backend_for
from sterling.gateway.schemas import ErrorPublic
from sterling.gateway.services import GatewayServices
from sterling.gateway.settings import GatewaySettings, vendor_dir, web_dir

logger = logging.getLogger(__name__)

API_PREFIX = "/api"
_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorPublic, "description": "bad request"},
    404: {"model": ErrorPublic, "description": "not found"},
    413: {"model": ErrorPublic, "description": "request body too large"},
    422: {"model": ErrorPublic, "description": "invalid parameters or document"},
}


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(settings: GatewaySettings, *, services: GatewayServices) -> FastAPI:
    """Build the gateway app for ``services``; nothing runs until a server serves it.

    Example:
        >>> app = create_app(get_settings(), services=GatewayServices.from_localnet(net, index))  # doctest: +SKIP
        >>> uvicorn.run(app)
    """
    app = FastAPI(
        title="Sterling gateway",
        version="1",
        summary="Browse datasets and jobs, upload ciphertext, relay signed transactions.",
        description=(
            "The untrusted gateway of a Sterling marketplace: it indexes the chain, stores ciphertext, relays "
            "signed transactions and wrapped keys, and never sees plaintext data, data keys or model weights."
        ),
    )
    app.state.settings = settings
    app.state.services = services
    app.state.feed = EventFeed(
        services.index, cursor_key=services.cursor_key, status=services.status, poll_seconds=settings.events_poll_seconds
    )
    app.state.cache = ResponseCache(max_entries=settings.response_cache_entries)
    app.state.rpc = RpcGateway(backend_for(services.chain.w3, timeout=settings.rpc_timeout_seconds), max_batch=settings.rpc_max_batch)

    for module in (health, config, datasets, jobs, workers, operators, payments, blobs, specs, deposits, rpc, events):
        app.include_router(module.router, prefix=API_PREFIX, responses=_ERRORS)

    @app.exception_handler(SterlingError)
    async def domain_error(request: Request, error: SterlingError) -> JSONResponse:
        status = status_of(error)
        if status >= 500:
            logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error)
            return JSONResponse({"detail": f"{type(error).__name__}: the gateway could not complete the request"}, status_code=status)
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(error)}, status_code=422)

    @app.exception_handler(RecursionError)
    async def nested_too_deeply(request: Request, error: RecursionError) -> JSONResponse:
        return JSONResponse({"detail": "request JSON is nested too deeply"}, status_code=400)

    upload_path = f"{API_PREFIX}{blobs.router.prefix}"
    app.add_middleware(
        RequestGuardMiddleware,
        default_limit=settings.max_json_bytes,
        limits={upload_path: settings.max_blob_bytes},
        binary_paths={upload_path},
    )
    vendor, web = vendor_dir(settings), web_dir(settings)
    if vendor is not None and vendor.is_dir():
        app.mount("/vendor", StaticFiles(directory=vendor), name="vendor")
    if web.is_dir():
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    return app
