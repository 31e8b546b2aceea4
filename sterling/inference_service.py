"""``sterling inference``: one operator's inference enclave and its host as a service of their own,
serving the model market to gateways on other machines.

The process launches an inference enclave on the simulated platform (development only: on AWS
Nitro the hardware's attestation replaces the platform key), has the verifier beside a ``sterling
keymanager`` certify it, registers it on-chain for the operator, and serves requests with an
:class:`~enclave_worker.serving.InferenceService` whose model keys come from that key manager's
model side (:class:`~enclave_worker.remote_keys.RemoteModelKeys`) and whose ciphertexts come from a
blob folder or a gateway's ``/api/blobs``. Governance must have approved the enclave's measurement
for the inference role: otherwise the service refuses to start (``AttestationRejected``), before
it launches anything.

The operator redeems the latest voucher of every channel served every ``redeem_interval`` seconds
and once more on stop (SIGTERM or Ctrl-C), after the queued requests are answered; the vouchers
are kept in ``<state_dir>/vouchers.jsonl`` too, so a host killed before it redeemed can still be
redeemed by the next one (or ``sterling models redeem``). Routes (client:
:class:`~enclave_worker.remote_inference.RemoteInference`; ``sterling gateway --inference URL``):

=========================== ===========================================================================
``POST /infer``              one request envelope (``application/octet-stream``) → the gateway's
                             ``POST /api/inference`` answer: ``{request_id, response, receipt_signature,
                             enclave, amount_wei, queries}``
``GET /health``              signer, operator, registered or not, chain head, requests served and refused,
                             channels with a voucher (503 if the chain is down)
``GET /info``                signer, operator, model market, registry, chain id (read once by clients)
=========================== ===========================================================================

A refusal is ``{"error": <class name>, "detail": <message>}`` with the status of
:data:`enclave_worker.remote_inference.INFERENCE_REFUSALS` (429 and 503 with ``Retry-After`` and a
``retry_after`` field); any other failure is 500 ``{"error": "InternalError", ...}``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from enclave_worker.measurement import measure
from enclave_worker.remote import RemoteVerifier
from enclave_worker.remote_inference import (
    INFERENCE_RESPONSES,
    INTERNAL_ERROR,
    inference_refusal_of,
    refusal_json,
    retry_after_header,
    served_json,
)  # fmt: skip
from enclave_worker.remote_keys import RemoteModelKeys
from enclave_worker.serving import InferenceService, ServiceBusy
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted.errors import EnvelopeMalformed
from enclave_worker.trusted.inference import MAX_ENVELOPE_BYTES
from enclave_worker.trusted.onchain import Role
from marketplace.errors import ConfigError, SterlingError
from marketplace.model_market import ModelMarketClient
from sterling.localnet import attest_and_register
from sterling.standalone import ChainView, check_approved, service_account
from sterling.worker_service import connect_key_manager, open_blobs

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8200
ENV_PREFIX = "STERLING_INFERENCE_"
OPERATOR_KEY_ENV = f"{ENV_PREFIX}OPERATOR_KEY"
DEFAULT_REDEEM_INTERVAL = 30.0
"""Seconds between redemptions (``sterling up``'s default)."""


# --- settings ----------------------------------------------------------------------------------


class InferenceSettings(BaseSettings):
    """The service's settings: flags, then ``STERLING_INFERENCE_<FIELD>``, then the defaults.

    The operator's key is a secret: it comes from ``STERLING_INFERENCE_OPERATOR_KEY`` (hex) or from a
    file holding the hex key (``operator_key_file``), never from a command-line argument (visible to
    every user of the machine in the process list). The host's limits (``max_batch``, ``queue_limit``,
    ``client_rate``, ``client_burst``) are set in the environment only.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    key_manager: str = Field(description="URL of the `sterling keymanager` service: its verifier and its model-key side")
    blobs: str = Field(description="a gateway's URL (blobs over /api/blobs, cached locally) or a shared blob folder")
    platform_key: Path = Field(description="the simulated platform's Ed25519 key the verifier trusts (development only)")
    state_dir: Path = Field(default=Path(".sterling-inference"), description="the voucher ledger and the blob cache")
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="port to listen on")
    threads: int | None = Field(default=None, ge=1, description="torch threads of the inference enclave (default: one per core)")
    redeem_interval: float = Field(default=DEFAULT_REDEEM_INTERVAL, gt=0, description="seconds between the operator's redemptions")
    key_manager_wait: float = Field(default=0.0, ge=0, description="seconds to keep asking a key manager that does not answer yet")
    max_batch: int = Field(default=64, ge=1, description="requests the enclave answers in one forward pass at most")
    queue_limit: int = Field(default=2048, ge=1, description="requests waiting at most; more are refused 503 ServiceBusy")
    client_rate: float = Field(default=2000.0, gt=0, description="requests per second a client (a voucher's signer) may send")
    client_burst: int = Field(default=256, ge=1, description="requests a client may send at once above its rate")
    operator_key: SecretStr | None = Field(default=None, description="the operator account's private key (hex)")
    operator_key_file: Path | None = Field(default=None, description="a file holding the operator account's private key (hex)")

    def operator(self) -> LocalAccount:
        """The account the inference enclave is registered for, and which redeems its vouchers.

        Raises:
            ConfigError: neither or both of the key and its file are given, or the key is not a key.
        """
        secret = self.operator_key.get_secret_value() if self.operator_key is not None else None
        return service_account("operator", secret, self.operator_key_file, variable=OPERATOR_KEY_ENV)


def get_settings(**flags: Any) -> InferenceSettings:
    """The settings, with ``flags`` (``None``: not given) over the environment.

    Raises:
        ConfigError: an invalid or missing value (the message names the setting).
    """
    from pydantic import ValidationError

    try:
        return InferenceSettings(**{name: value for name, value in flags.items() if value is not None})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"inference settings: {problems}") from e


# --- the HTTP API ------------------------------------------------------------------------------


class InfoPublic(BaseModel):
    signer: str = Field(description="the inference enclave's address: clients encrypt to its on-chain key")
    operator: str
    model_market: str
    registry: str
    chain_id: int


class HealthPublic(BaseModel):
    status: str
    signer: str
    operator: str
    registered: bool | None = Field(description="an active inference enclave in the registry (null: the chain is down)")
    head_block: int | None
    served: int = Field(description="requests answered since the start")
    refused: int = Field(description="requests the enclave refused since the start")
    channels: int = Field(description="channels with a voucher in the ledger (redeemed or not)")
    error: str | None = None


@dataclass(frozen=True)
class InferenceNode:
    """What one ``sterling inference`` process serves."""

    view: ChainView
    model_market: ModelMarketClient
    service: InferenceService
    operator: LocalAccount


def create_app(node: InferenceNode) -> FastAPI:
    """The service's HTTP API over ``node`` (no work at import time; the process builds it once)."""
    app = FastAPI(title="Sterling inference host", version="1", docs_url=None, redoc_url=None)
    service, view = node.service, node.view
    operator = str(to_checksum_address(node.operator.address))

    @app.post(
        "/infer",
        responses=INFERENCE_RESPONSES,
        openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def infer(request: Request) -> Response:
        """Serve one request envelope; answers as the gateway's ``POST /api/inference`` (the hot path: no validation layer)."""
        envelope = bytearray()
        async for chunk in request.stream():
            envelope += chunk
            if len(envelope) > MAX_ENVELOPE_BYTES:
                return _refused(EnvelopeMalformed(f"an envelope is at most {MAX_ENVELOPE_BYTES} bytes"))
        try:
            served = await asyncio.wrap_future(service.submit(bytes(envelope)))
        except SterlingError as e:
            return _refused(e)
        return Response(served_json(served), media_type="application/json")

    @app.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic, "description": "the chain is unreachable"}})
    def health() -> HealthPublic | JSONResponse:
        """Serving, the enclave's registration, the chain head and the host's counters; 503 when the chain does not answer."""
        stats, channels = service.stats, len(service.unredeemed())
        try:
            head = int(view.chain.w3.eth.block_number)
            registered = view.registry.is_active(service.signer, Role.INFERENCE)
        except Exception as e:  # noqa: BLE001 - any failure to read the chain is the answer
            down = HealthPublic(
                status="chain unreachable", signer=service.signer, operator=operator, registered=None, head_block=None,
                served=stats.served, refused=stats.refused, channels=channels, error=type(e).__name__,
            )  # fmt: skip
            return JSONResponse(down.model_dump(), status_code=503)
        return HealthPublic(
            status="ok", signer=service.signer, operator=operator, registered=registered, head_block=head, served=stats.served,
            refused=stats.refused, channels=channels,
        )  # fmt: skip

    @app.get("/info", response_model=InfoPublic)
    def info() -> InfoPublic:
        """The inference enclave's signer and the deployment it serves (read once by clients)."""
        return InfoPublic(
            signer=service.signer, operator=operator, model_market=node.model_market.address, registry=view.registry.address,
            chain_id=view.chain.chain_id,
        )  # fmt: skip

    return app


def refusal_answer(error: BaseException) -> JSONResponse | None:
    """A refusal's answer (:data:`~enclave_worker.remote_inference.INFERENCE_REFUSALS`: its status,
    ``{"error", "detail"}``, ``Retry-After`` for a busy host), as the service and the gateway give
    it; ``None`` for any other error."""
    matched = inference_refusal_of(error)
    if matched is None:
        return None
    family, status = matched
    headers = {"Retry-After": retry_after_header(error.retry_after)} if isinstance(error, ServiceBusy) else None
    return JSONResponse(refusal_json(error, family), status_code=status, headers=headers)  # type: ignore[arg-type]


def _refused(error: SterlingError) -> JSONResponse:
    """A refusal's answer (:func:`refusal_answer`), or 500 for any other error."""
    answer = refusal_answer(error)
    if answer is None:
        logger.error("POST /infer failed: %s: %s", type(error).__name__, error)
        return JSONResponse({"error": INTERNAL_ERROR, "detail": "the inference host failed to answer; its log says why"}, status_code=500)
    return answer


# --- the process -------------------------------------------------------------------------------


@contextmanager
def started_node(view: ChainView, settings: InferenceSettings, *, stop: threading.Event) -> Iterator[InferenceNode]:
    """Launch the inference enclave, certify and register it for the operator, and yield the node;
    on exit the host answers what is queued, then the enclave stops.

    Raises:
        ConfigError: the deployment has no model market, the platform key or the blob folder is
            missing, or the operator's key is.
        AttestationRejected: governance has not approved this code's measurement for the inference
            role (checked before anything is launched), or the verifier refused the enclave.
        ServiceUnreachable: the key manager did not answer (within ``settings.key_manager_wait`` seconds).
        NotServed: the key manager serves no model market.
    """
    operator = settings.operator()
    model_market = view.model_market()
    if model_market is None:
        raise ConfigError("the deployment record names no model market: there is nothing to serve")
    if not settings.platform_key.is_file():
        raise ConfigError(
            f"no platform key at {settings.platform_key}: a development inference host needs the sim platform key the verifier "
            "trusts (sim-platform.pem in the state folder of `sterling up` or `sterling keymanager`)"
        )
    check_approved(view.registry, Role.INFERENCE, measure())
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    blobs = open_blobs(settings.blobs, state / "blob-cache")
    platform = SimPlatform.load_or_create(settings.platform_key)
    with ExitStack() as stack:
        # The enclave starts (it imports torch) while the key manager may still be starting too.
        enclave = platform.launch(Role.INFERENCE, threads=settings.threads)
        stack.callback(enclave.close)
        keys = stack.enter_context(
            connect_key_manager(settings.key_manager, wait=settings.key_manager_wait, stop=stop, client=RemoteModelKeys)
        )
        verifier = stack.enter_context(RemoteVerifier(settings.key_manager))
        tx = attest_and_register(enclave, verifier, view.registry, operator)
        service = InferenceService(
            enclave, model_market=model_market, registry=view.registry, key_manager=keys, blobs=blobs, state_dir=state,
            operator=operator, max_batch=settings.max_batch, queue_limit=settings.queue_limit, client_rate=settings.client_rate,
            client_burst=settings.client_burst,
        )  # fmt: skip
        stack.callback(service.close)  # closed before the enclave: the queued requests are answered first
        logger.info(
            "inference enclave %s registered for operator %s in tx %s (measurement %s, sim attestation: development only)",
            service.signer, to_checksum_address(operator.address), tx.tx_hash, enclave.measurement.hex(),
        )  # fmt: skip
        yield InferenceNode(view=view, model_market=model_market, service=service, operator=operator)


def redeem_periodically(inference: InferenceService, stop: threading.Event, *, interval: float) -> None:
    """Redeem the latest voucher of every channel served, every ``interval`` seconds and once more on stop."""
    while True:
        stopping = stop.wait(interval)
        try:
            for redemption in inference.redeem():
                logger.info("redeemed %d queries of model %d by %s", redemption.queries, redemption.model_id, redemption.client)
        except Exception as e:  # a node hiccup: try again next round
            logger.warning("redeeming vouchers failed: %s: %s", type(e).__name__, e)
        if stopping:
            return


@contextmanager
def serving(view: ChainView, settings: InferenceSettings, *, stop: threading.Event) -> Iterator[InferenceNode]:
    """:func:`started_node`, redeeming its vouchers every ``settings.redeem_interval`` seconds; on
    exit the host answers what is queued, then redeems once more (every voucher served), then stops.

    Raises:
        as :func:`started_node`.
    """
    with started_node(view, settings, stop=stop) as node:
        redeemed = threading.Event()  # set once nothing more is served: the last redemption then sees every voucher
        redeemer = threading.Thread(
            target=redeem_periodically, args=(node.service, redeemed), kwargs={"interval": settings.redeem_interval},
            name="sterling-inference-redeemer", daemon=True,
        )  # fmt: skip
        redeemer.start()
        try:
            yield node
        finally:
            node.service.close()  # the queued requests are answered, their vouchers recorded
            redeemed.set()
            redeemer.join()


def run_inference(view: ChainView, settings: InferenceSettings, *, stop: threading.Event) -> None:
    """Serve the model market from an inference enclave on ``settings.host:port`` until ``stop``,
    redeeming its vouchers every ``settings.redeem_interval`` seconds and once more when it stops.

    Raises:
        ConfigError, AttestationRejected, ServiceUnreachable, NotServed: as :func:`started_node`;
            nothing is served then.
    """
    with serving(view, settings, stop=stop) as node:
        app = create_app(node)
        server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"))

        def exit_on_stop() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=exit_on_stop, name="sterling-inference-stop", daemon=True).start()
        logger.info(
            "serving model market %s from inference enclave %s on http://%s:%d",
            node.model_market.address, node.service.signer, settings.host, settings.port,
        )  # fmt: skip
        server.run()
    logger.info("inference enclave %s stopped", node.service.signer)
