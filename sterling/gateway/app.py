"""The FastAPI application factory of the gateway."""

from __future__ import annotations

import functools
import logging
from pathlib import PurePosixPath

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from enclave_worker.trusted.inference import MAX_ENVELOPE_BYTES
from marketplace.errors import SterlingError
from sterling.gateway.api.routes import (
    blobs,
    competitions,
    config,
    datasets,
    deposits,
    documents,
    events,
    health,
    jobs,
    models,
    operators,
    payments,
    rpc,
    specs,
    workers,
)
from sterling.gateway.bounds import BoundsMiddleware, GatewayBounds
from sterling.gateway.cache import ResponseCache
from sterling.gateway.errors import status_of
from sterling.gateway.feed import EventFeed
from sterling.gateway.headers import (
    ContentTypeMiddleware,
    HostGuardMiddleware,
    SecurityHeadersMiddleware,
    content_security_policy,
    default_allowed_hosts,
    inline_script_hashes,
)
from sterling.gateway.health import HealthProbe
from sterling.gateway.limits import RequestGuardMiddleware
from sterling.gateway.rpc import RpcGateway, backend_for
from sterling.gateway.schemas import ErrorPublic
from sterling.gateway.services import GatewayServices
from sterling.gateway.settings import GatewaySettings, vendor_dir, web_dir
from sterling.gateway.strict_json import StrictJsonMiddleware

logger = logging.getLogger(__name__)

API_PREFIX = "/api"
VENDOR_FILES = ("ethers/dist/ethers.min.js",)
"""Files under ``/vendor`` the UI loads (``web/index.html``'s import map); nothing else of ``node_modules`` is served."""
VENDOR_MODULE_DIRS = ("@hpke/core/esm/", "@hpke/common/esm/")
"""ES-module packages the UI imports whose modules import each other: their ``.js`` files only (no maps, sources, manifests)."""
DOCS_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
        "font-src https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
"""FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from their CDN with an inline script; only they get this policy."""
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


def vendor_file_allowed(path: str) -> bool:
    """Whether ``/vendor/<path>`` is one of the files the UI uses (:data:`VENDOR_FILES`, :data:`VENDOR_MODULE_DIRS`).

    Example:
        >>> vendor_file_allowed("ethers/dist/ethers.min.js"), vendor_file_allowed(".bin/solcjs")
        (True, False)
    """
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not parts or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return False
    clean = "/".join(parts)
    return clean in VENDOR_FILES or (clean.endswith(".js") and any(clean.startswith(d) for d in VENDOR_MODULE_DIRS))


class VendorFiles(StaticFiles):
    """``node_modules`` served at ``/vendor``, but only the files :func:`vendor_file_allowed` names; the rest is 404."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not vendor_file_allowed(path):
            raise StarletteHTTPException(status_code=404)
        return await super().get_response(path, scope)


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
    app.state.health = HealthProbe(functools.partial(health.read_health, services), max_age=settings.health_max_age_seconds)
    app.state.cache = ResponseCache(max_entries=settings.response_cache_entries)
    app.state.rpc = RpcGateway(
        backend_for(services.chain.w3, timeout=settings.rpc_timeout_seconds),
        max_batch=settings.rpc_max_batch, chain_id=services.chain.chain_id,
        gas_cap=settings.rpc_gas_cap, call_seconds=settings.rpc_call_seconds,
    )  # fmt: skip

    routers = (
        health, config, datasets, jobs, models, competitions, workers, operators, payments, blobs, specs, documents, deposits, rpc, events,
    )  # fmt: skip
    for module in routers:
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
    inference_path = f"{API_PREFIX}/inference"
    rpc_path = f"{API_PREFIX}/rpc"
    # The last added runs first: security headers, Host, content type, size and depth, then strict JSON next to the routes.
    app.add_middleware(StrictJsonMiddleware, skip={rpc_path})
    app.add_middleware(
        RequestGuardMiddleware,
        default_limit=settings.max_json_bytes,
        limits={upload_path: settings.max_blob_bytes, inference_path: MAX_ENVELOPE_BYTES},
        binary_paths={upload_path, inference_path},
    )
    app.state.bounds = GatewayBounds.for_services(services)
    app.add_middleware(BoundsMiddleware, bounds=app.state.bounds, upload_path=upload_path, events_path=f"{API_PREFIX}/events")
    app.add_middleware(
        ContentTypeMiddleware, prefix=f"{API_PREFIX}/", default="application/json",
        media_types=dict.fromkeys((upload_path, inference_path), "application/octet-stream"),
    )  # fmt: skip
    app.add_middleware(HostGuardMiddleware, allowed_hosts=default_allowed_hosts(settings))
    vendor, web = vendor_dir(settings), web_dir(settings)
    docs_paths = [path for path in (app.docs_url, app.redoc_url) if path]
    app.add_middleware(
        SecurityHeadersMiddleware,
        csp=content_security_policy(inline_script_hashes(web / "index.html")),
        csp_by_prefix=dict.fromkeys(docs_paths, DOCS_CSP),
    )
    if vendor is not None and vendor.is_dir():
        app.mount("/vendor", VendorFiles(directory=vendor), name="vendor")
    if web.is_dir():
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    return app
