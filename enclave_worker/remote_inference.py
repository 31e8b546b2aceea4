"""A client of an inference host that runs as a service of its own (``sterling inference``,
``docs/operations.md``), with what the gateway uses of the in-process
:class:`~enclave_worker.serving.InferenceService`.

:class:`RemoteInference` relays a request envelope to the service's ``POST /infer`` and returns the
same :class:`~enclave_worker.serving.Served` answer in a :class:`~concurrent.futures.Future`; many
requests are in flight at once, from a thread pool over one pooled HTTP client. A refusal raises
the exception the in-process host raises, with its message: the service answers it as
``{"error": <class name>, "detail": <message>}`` with the status of :data:`INFERENCE_REFUSALS`,
the one table both sides read (:class:`~enclave_worker.serving.ServiceBusy` and
:class:`~enclave_worker.serving.RateLimited` carry ``retry_after`` too, and a ``Retry-After``
header). :class:`InferenceHost` is what the gateway holds: either host.

The host only ever sees envelopes, encrypted answers and vouchers, so nothing secret crosses the
wire in clear; across machines put TLS in front of the port all the same. Nothing here retries a
request: an envelope sent twice is refused as stale the second time (a voucher is served once).

Example:
    >>> with RemoteInference("http://inference.internal:8200") as inference:  # doctest: +SKIP
    ...     served = inference.submit(envelope).result()
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import httpx
from eth_utils import to_checksum_address

from marketplace.errors import SterlingError

from .remote import ServiceFailed, ServiceUnreachable, from_hex
from .serving import ModelUnavailable, RateLimited, Served, ServiceBusy
from .trusted import errors as trusted_errors
from .trusted.inference import parse_header
from .trusted.vouchers import Voucher, VoucherInvalid

if TYPE_CHECKING:
    from .serving import InferenceService

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
"""Seconds a request may take (the first request for a model waits for its loading)."""
DEFAULT_CONCURRENCY = 64
"""Requests a :class:`RemoteInference` has in flight at once (its threads and pooled connections)."""
INTERNAL_ERROR = "InternalError"
"""The ``error`` of an answer the service failed to give (status 500): not a refusal."""


@runtime_checkable
class InferenceHost(Protocol):
    """What the gateway needs of an inference host: in process (:class:`~enclave_worker.serving.InferenceService`)
    or across the network (:class:`RemoteInference`)."""

    @property
    def signer(self) -> str:
        """The inference enclave's address (EIP-55): clients encrypt to its on-chain key."""
        ...

    def submit(self, envelope: bytes) -> Future[Served]:
        """Queue one request envelope; the future holds its :class:`~enclave_worker.serving.Served`
        answer or the refusal (:data:`INFERENCE_REFUSALS`).

        Raises:
            EnvelopeMalformed, RateLimited, ServiceBusy: refused at once (the in-process host), or
                through the future.
        """
        ...


INFERENCE_REFUSALS: tuple[tuple[type[SterlingError], int], ...] = (
    (RateLimited, 429),
    (ServiceBusy, 503),
    (ModelUnavailable, 404),
    (VoucherInvalid, 402),
    (trusted_errors.VoucherStale, 402),
    (trusted_errors.VoucherUnderpaid, 402),
    (trusted_errors.VoucherOverDeposit, 402),
    (trusted_errors.QueryCapExceeded, 403),
    (trusted_errors.ClientNotAllowed, 403),
    (trusted_errors.WrongModel, 400),
    (trusted_errors.WrongEnclave, 400),
    (trusted_errors.RequestTampered, 400),
    (trusted_errors.EnvelopeMalformed, 400),
)
"""The errors an inference host answers as refusals, with their HTTP status (the gateway's for
``POST /api/inference``: 402 pay with a valid voucher, 403 over the cap or not allowed, 400 a bad
envelope, 404 a model not served, 429/503 try again after ``Retry-After``). The service names the
first family an error belongs to (specific before general) and the client raises that class again;
any other error is the service's fault (500)."""
INFERENCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed or tampered envelope, or one for another model or enclave"},
    402: {"description": "the voucher is invalid, stale or replayed, underpays, or exceeds the deposit"},
    403: {"description": "the client is over the model's query cap or not on its allow-list"},
    404: {"description": "the model is not listed, not active, or cannot be served here"},
    429: {"description": "this client is over its request rate (Retry-After)"},
    503: {"description": "the inference queue is full (Retry-After)"},
}
"""The refusals of :data:`INFERENCE_REFUSALS` as OpenAPI documents them (the gateway's and the service's routes)."""
_REFUSAL_BY_NAME: dict[str, type[SterlingError]] = {family.__name__: family for family, _ in INFERENCE_REFUSALS}


def inference_refusal_of(error: BaseException) -> tuple[type[SterlingError], int] | None:
    """The :data:`INFERENCE_REFUSALS` family ``error`` belongs to and its HTTP status (``None``: not a refusal)."""
    for family, status in INFERENCE_REFUSALS:
        if isinstance(error, family):
            return family, status
    return None


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` for a wait of ``seconds``: whole seconds, at least one (as the gateway answers)."""
    return str(max(1, round(seconds)))


def served_json(served: Served) -> bytes:
    """The JSON answer of one served request, as the gateway's ``POST /api/inference`` and the
    service's ``POST /infer`` give it (fixed fields, written without a serializer: the hot path)."""
    return (
        f'{{"request_id":"0x{served.request_id.hex()}","response":"0x{served.response.hex()}",'
        f'"receipt_signature":"0x{served.receipt_signature.hex()}","enclave":"{served.enclave}",'
        f'"amount_wei":"{served.voucher.amount}","queries":{served.voucher.queries}}}'
    ).encode()


def refusal_json(error: SterlingError, family: type[SterlingError]) -> dict[str, Any]:
    """The JSON answer of a refusal: its family's name and the message, and ``retry_after`` for a busy host."""
    content: dict[str, Any] = {"error": family.__name__, "detail": str(error)}
    if isinstance(error, ServiceBusy):
        content["retry_after"] = error.retry_after
    return content


def _refusal_from(answer: dict[str, Any], status: int, retry_after: str | None, *, where: str) -> SterlingError:
    """The exception an error answer of the service stands for."""
    name, detail = answer.get("error"), str(answer.get("detail", ""))
    family = _REFUSAL_BY_NAME.get(name) if isinstance(name, str) else None
    if family is not None and issubclass(family, ServiceBusy):
        try:
            wait = float(answer.get("retry_after", retry_after or 1.0))
        except (TypeError, ValueError):
            wait = 1.0
        return family(detail, retry_after=wait)
    if family is not None:
        return family(detail)
    return ServiceFailed(f"{where} failed with HTTP {status}: {name}: {detail}")


class RemoteInference:
    """A ``sterling inference`` service, used as the gateway's inference host (:class:`InferenceHost`).

    The enclave's signer is read once, when the client is made: a restarted service runs a new
    enclave with a new signer, so make a new client then.

    Example:
        >>> inference = RemoteInference("http://127.0.0.1:8200")  # doctest: +SKIP
        >>> services = GatewayServices(..., inference=inference)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        """Connect to the service at ``url`` and read its signer (``GET /info``).

        Args:
            concurrency: requests in flight at once (more wait for a free thread, in order).

        Raises:
            ServiceUnreachable: nothing answers at ``url``.
            ServiceFailed: what answers is not an inference service.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.url = url.rstrip("/")
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, limits=limits)
        try:
            info = self._info()
            self._signer = str(to_checksum_address(info["signer"]))
            self._model_market = str(to_checksum_address(info["model_market"]))
            self._chain_id = int(info["chain_id"])
        except (KeyError, TypeError, ValueError) as e:
            self._http.close()
            raise ServiceFailed(f"the inference host at {self.url} answered GET /info out of protocol: {e!r}") from e
        except BaseException:
            self._http.close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sterling-remote-inference")

    def _info(self) -> dict[str, Any]:
        try:
            response = self._http.get("/info")
        except httpx.TransportError as e:
            raise ServiceUnreachable(f"the inference host at {self.url} did not answer GET /info: {type(e).__name__}: {e}") from e
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not response.is_success or not isinstance(answer, dict):
            raise ServiceFailed(f"the inference host at {self.url} answered GET /info: HTTP {response.status_code}, not its info")
        return answer

    @property
    def signer(self) -> str:
        """The inference enclave's address (EIP-55), as the service said when this client was made."""
        return self._signer

    @property
    def model_market(self) -> str:
        """The model market the service serves (EIP-55)."""
        return self._model_market

    @property
    def chain_id(self) -> int:
        return self._chain_id

    def submit(self, envelope: bytes) -> Future[Served]:
        """``POST /infer`` from the client's thread pool; the future holds the :class:`~enclave_worker.serving.Served`
        answer or the refusal, raised as the in-process host raises it.

        Raises (at once, nothing sent):
            EnvelopeMalformed: the clear header does not parse.
            ServiceBusy: this client is closed (as the in-process host once it is shutting down).

        Raises (through the future):
            VoucherStale, QueryCapExceeded, ModelUnavailable, RateLimited, ServiceBusy, ...: the
                service's refusal (:data:`INFERENCE_REFUSALS`).
            ServiceUnreachable, ServiceFailed: the request did not get an answer.
        """
        header = parse_header(envelope)
        try:
            return self._pool.submit(self._send, bytes(envelope), header.voucher)
        except RuntimeError:  # the pool was shut down
            raise ServiceBusy(f"the client of the inference host at {self.url} is closed", retry_after=5.0) from None

    def infer(self, envelope: bytes, *, timeout: float | None = None) -> Served:
        """:meth:`submit` and wait for the answer (raises as :meth:`submit`'s future)."""
        return self.submit(envelope).result(timeout=timeout)

    def _send(self, envelope: bytes, voucher: Voucher) -> Served:
        try:
            response = self._http.post("/infer", content=envelope, headers={"Content-Type": "application/octet-stream"})
        except httpx.TransportError as e:
            raise ServiceUnreachable(f"the inference host at {self.url} did not answer POST /infer: {type(e).__name__}: {e}") from e
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ServiceFailed(f"the inference host at {self.url} answered POST /infer: HTTP {response.status_code}, no JSON object")
        if not response.is_success:
            raise _refusal_from(
                answer, response.status_code, response.headers.get("Retry-After"), where=f"the inference host at {self.url}"
            )
        try:
            return Served(
                request_id=from_hex(str(answer["request_id"])), response=from_hex(str(answer["response"])),
                receipt_signature=from_hex(str(answer["receipt_signature"])),
                voucher=Voucher(
                    model_id=voucher.model_id, client=voucher.client, enclave=voucher.enclave, amount=int(answer["amount_wei"]),
                    queries=int(answer["queries"]),
                ),
                enclave=str(to_checksum_address(answer["enclave"])),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ServiceFailed(f"the inference host at {self.url} answered POST /infer out of protocol: {e!r}") from e

    def close(self) -> None:
        """Wait for the requests in flight, then close the connections."""
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


if TYPE_CHECKING:  # both hosts give the gateway what it needs (checked by mypy)

    def _hosts(in_process: InferenceService, remote: RemoteInference) -> tuple[InferenceHost, InferenceHost]:
        return in_process, remote
