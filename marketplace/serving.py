"""The model owner's and the client's workflows for served models (docs/inference.md).

Owner: :func:`model_weights` packs a trained model as safetensors (its spec and schema in the
metadata, so the weights hash commits to them too), :func:`list_model` seals the weights for the
key manager, stores the ciphertext and spec, deposits the key with the owner's signature and lists
the model on the model market.

Client: :class:`InferenceClient` buys credit (:meth:`~InferenceClient.deposit`), checks the serving
enclave in the registry (active in the INFERENCE role, its measurement approved) and takes its
encryption key from there — never from the gateway — then encrypts rows to it with a voucher for
exactly their price, sends the envelope through a :data:`Transport` (the gateway's
``POST /api/inference``, or an in-process host), verifies the enclave's response receipt and
decrypts the outputs. :meth:`~InferenceClient.query_many` splits a large table into envelopes
and reports progress.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import httpx
import numpy as np
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from safetensors.torch import save as save_tensors
from torch import nn

from enclave_worker.trusted import inference as envelope_format
from enclave_worker.trusted.dataset import Schema, canonical_json
from enclave_worker.trusted.inference import WEIGHTS_SCHEMA_KEY, WEIGHTS_SPEC_KEY
from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.onchain import ModelStatus, OutputPolicy, Role

from .blobstore import BlobStore
from .chain import TxResult, Wei
from .contracts import MarketClient, RegistryClient
from .errors import ConfigError, SterlingError
from .inference import (
    Outputs,
    PendingRequest,
    SealedModel,
    VoucherBook,
    build_request,
    open_response,
    refusal,
    seal_model,
    sign_model_deposit,
)
from .model_market import ModelMarketClient, ModelRecord, ModelTerms

ENCLAVE_RECHECK_SECONDS = 60.0
"""How long a client trusts its last registry check of an inference enclave (two chain reads per check)."""

DEFAULT_BULK_ROWS = 4096
"""Rows per envelope in :meth:`InferenceClient.query_many` (well under the 4 MiB envelope bound for small inputs)."""


def model_weights(model: nn.Module, spec: ModelSpec, schema: Schema) -> bytes:
    """``model``'s weights as safetensors with ``spec`` and ``schema`` in the metadata (what a served model is)."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {WEIGHTS_SPEC_KEY: spec.to_bytes().decode(), WEIGHTS_SCHEMA_KEY: canonical_json(schema.to_json()).decode()}
    return bytes(save_tensors(tensors, metadata=metadata))


class ModelKeyDepository(Protocol):
    """Where a model owner deposits its wrapped model key: the key manager's host (or the gateway's route)."""

    @property
    def signer(self) -> str: ...

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, owner: str, signature: bytes) -> None: ...


class ModelStore(Protocol):
    """Where a model's ciphertext and spec go, named by their SHA-256 (what the listing commits to)."""

    def put_ciphertext(self, ciphertext: bytes) -> bytes: ...

    def put_spec(self, spec: ModelSpec) -> bytes: ...


class BlobModelStore:
    """:class:`ModelStore` over a :class:`~marketplace.blobstore.BlobStore` (the one inference hosts read)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def put_ciphertext(self, ciphertext: bytes) -> bytes:
        return bytes.fromhex(self.blobs.put(ciphertext))

    def put_spec(self, spec: ModelSpec) -> bytes:
        return bytes.fromhex(self.blobs.put(spec.to_bytes()))


@dataclass(frozen=True)
class ListedModel:
    """A model after listing."""

    model_id: int
    sealed: SealedModel | None
    """The owner's sealed weights (``None`` for a job's model: nobody outside the enclaves ever had them)."""
    spec_hash: bytes
    tx: TxResult


def list_model(
    weights: bytes,
    spec: ModelSpec,
    owner: LocalAccount,
    *,
    price_per_query: int,
    output_policy: OutputPolicy,
    output_param: int,
    query_cap: int,
    model_market: ModelMarketClient,
    registry: RegistryClient,
    key_manager: ModelKeyDepository,
    store: ModelStore,
    expiry: int = 0,
    restricted: bool = False,
) -> ListedModel:
    """Seal ``weights`` (from :func:`model_weights`) for the key manager, store them and the spec,
    deposit the key with ``owner``'s signature and list the model.

    ``store`` is where inference hosts will fetch them: :class:`BlobModelStore` over a blob store,
    or :class:`marketplace.gateway_client.GatewayModelStore` over a gateway's upload routes; the
    key manager likewise (its host, or :class:`marketplace.gateway_client.GatewayModelKeys`).

    Raises:
        ConfigError: ``key_manager`` is not an active key manager in the registry.
        ContractReverted: the listing's terms were refused on-chain.
    """
    km_key = registry.active_key_manager_key(key_manager.signer)
    sealed = seal_model(weights, km_key)
    if store.put_ciphertext(sealed.ciphertext) != sealed.content_hash:
        raise ConfigError("the store named the model ciphertext by another hash than its SHA-256")
    spec_hash = store.put_spec(spec)
    if spec_hash != hashlib.sha256(spec.to_bytes()).digest():
        raise ConfigError("the store named the model spec by another hash than the SHA-256 of its canonical JSON")
    signature = sign_model_deposit(
        owner, sealed.content_hash, sealed.wrapped_key, key_manager=key_manager.signer, chain_id=model_market.chain.chain_id,
        model_market=model_market.address,
    )  # fmt: skip
    key_manager.deposit(sealed.content_hash, sealed.wrapped_key, owner=owner.address, signature=signature)
    terms = ModelTerms(
        weights_hash=sealed.weights_hash, spec_hash=spec_hash, content_hash=sealed.content_hash, price_per_query=Wei(price_per_query),
        output_policy=output_policy, output_param=output_param, query_cap=query_cap, expiry=expiry, restricted=restricted,
    )  # fmt: skip
    model_id, tx = model_market.list_model(owner, terms)
    return ListedModel(model_id=int(model_id), sealed=sealed, spec_hash=spec_hash, tx=tx)


@dataclass(frozen=True)
class JobModel:
    """A job's model taken for serving: what its consumer lists with ``listModelFromJob``."""

    job_id: int
    content_hash: bytes
    """SHA-256 of the model ciphertext in the blob store (the listing's ``contentHash``)."""
    weights_hash: bytes
    """SHA-256 of the weights (the receipt's ``modelHash``, the listing's ``weightsHash``)."""
    owner: str
    """The job's consumer: the only account whose listing gets the key."""


class JobModelDepository(Protocol):
    """The key manager's host (or a gateway route) that takes a job's model sealed to it for serving."""

    def deposit_from_job(self, job_id: int) -> JobModel: ...


class JobModelCopyDepository(ModelKeyDepository, Protocol):
    """The key manager's host (or a gateway route) that takes a copy of a job's model from its consumer."""

    def deposit_job_model_copy(self, job_id: int, content_hash: bytes, wrapped_key: bytes, *, signature: bytes) -> JobModel: ...


def list_job_model(
    consumer: LocalAccount,
    job_id: int,
    *,
    price_per_query: int,
    output_policy: OutputPolicy,
    output_param: int,
    query_cap: int,
    market: MarketClient,
    model_market: ModelMarketClient,
    key_manager: JobModelDepository | JobModelCopyDepository,
    expiry: int = 0,
    restricted: bool = False,
    weights: bytes | None = None,
    registry: RegistryClient | None = None,
    store: ModelStore | None = None,
) -> ListedModel:
    """List for serving the model of ``consumer``'s completed job ``job_id``; the listing shows the
    job's ε and δ (``listModelFromJob``). Two ways, by how the job sealed its result:

    - to the key manager (``Consumer.create_job(..., seal_to=<key manager key>)``): the key manager
      takes the model from the sealed result; nobody, the consumer included, ever holds its weights;
    - to the consumer itself (the default), which then also sells it as a service: pass the
      ``weights`` it decrypted (the safetensors bytes, exactly), the ``registry`` (for the key
      manager's on-chain key) and the ``store`` the inference hosts read. A copy is sealed to the
      key manager like any listed model and deposited with the consumer's signature; the key
      manager takes it only if it decrypts to the weights the job's receipt names.

    Raises:
        ValueError: ``weights`` are not the job's model (their SHA-256 is not the receipt's
            ``modelHash``), or ``registry``/``store`` are missing; nothing was stored or signed.
        JobNotReady: the job has not completed.
        KeyReleaseRefused: without ``weights``, its model was sealed to the consumer, not to the key manager.
        ContractReverted: not the job's consumer, or the job's model is listed already.
    """
    job = market.job(job_id)
    result = market.result_submitted(job_id)
    if weights is None:
        taken = key_manager.deposit_from_job(job_id)  # type: ignore[union-attr]
    else:
        if hashlib.sha256(weights).digest() != result.model_hash:
            raise ValueError(f"these weights are not job {job_id}'s model: their SHA-256 is not its receipt's model hash")
        if registry is None or store is None:
            raise ValueError("listing a job's model from its weights needs the registry and a model store")
        depository: JobModelCopyDepository = key_manager  # type: ignore[assignment]
        sealed = seal_model(weights, registry.active_key_manager_key(depository.signer))
        if store.put_ciphertext(sealed.ciphertext) != sealed.content_hash:
            raise ConfigError("the store named the model ciphertext by another hash than its SHA-256")
        signature = sign_model_deposit(
            consumer, sealed.content_hash, sealed.wrapped_key, key_manager=depository.signer, chain_id=model_market.chain.chain_id,
            model_market=model_market.address,
        )  # fmt: skip
        taken = depository.deposit_job_model_copy(job_id, sealed.content_hash, sealed.wrapped_key, signature=signature)
    terms = ModelTerms(
        weights_hash=result.model_hash, spec_hash=job.model_spec_hash, content_hash=bytes(taken.content_hash),
        price_per_query=Wei(price_per_query), output_policy=output_policy, output_param=output_param, query_cap=query_cap,
        expiry=expiry, restricted=restricted,
    )  # fmt: skip
    model_id, tx = model_market.list_model_from_job(consumer, job_id, terms)
    return ListedModel(model_id=int(model_id), sealed=None, spec_hash=job.model_spec_hash, tx=tx)


@dataclass(frozen=True)
class Answer:
    """What a transport returns for one envelope: the encrypted response and the receipt's signature."""

    response: bytes
    receipt_signature: bytes


Transport = Callable[[bytes], Answer]
"""Sends one envelope and returns the enclave's answer, or raises the enclave's refusal
(:func:`marketplace.inference.refusal`) or :class:`ServingUnavailable`."""


class ServingUnavailable(SterlingError, ConnectionError):
    """The gateway could not serve the request (busy, rate-limited, model not served there)."""


def _answer(status: int, body: bytes, retry_after: str | None) -> Answer:
    """The gateway's reply to ``POST /api/inference``, as both transports read it."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"detail": body[:200].decode("utf-8", "replace")}
    if not isinstance(parsed, dict):
        parsed = {"detail": str(parsed)[:200]}
    if status == 200:
        try:
            return Answer(
                response=bytes.fromhex(str(parsed["response"]).removeprefix("0x")),
                receipt_signature=bytes.fromhex(str(parsed["receipt_signature"]).removeprefix("0x")),
            )
        except (KeyError, ValueError) as e:
            raise ServingUnavailable(f"the gateway's answer is not an inference answer ({type(e).__name__}: {e})") from e
    if "error" in parsed and parsed["error"] not in NOT_SERVING_NOW:
        raise refusal(str(parsed["error"]), str(parsed.get("detail", "")))
    raise ServingUnavailable(f"HTTP {status}: {parsed.get('detail')}" + (f" (retry after {retry_after} s)" if retry_after else ""))


NOT_SERVING_NOW = frozenset({"ModelUnavailable", "RateLimited", "ServiceBusy"})
"""Refusals that say nothing against the request (the model is not served, the host is busy):
raised as :class:`ServingUnavailable`, to try again later or elsewhere."""


def gateway_transport(client: httpx.Client, *, path: str = "/api/inference") -> Transport:
    """A transport over the gateway's ``POST /api/inference`` through an httpx client (which carries
    the base URL; also a Starlette ``TestClient``). For a gateway over the network,
    :func:`http_transport` costs the client about half the CPU per request."""

    def send(envelope: bytes) -> Answer:
        reply = client.post(path, content=envelope, headers={"Content-Type": "application/octet-stream"})
        return _answer(reply.status_code, reply.content, reply.headers.get("Retry-After"))

    return send


def http_transport(url: str, *, path: str = "/api/inference", timeout: float = 120.0) -> Transport:
    """A transport over the gateway's ``POST /api/inference`` at ``url`` (``http://`` or ``https://``),
    on the standard library's HTTP/1.1 client: one keep-alive connection per calling thread, so
    threads sharing a client never wait on one another's requests.

    A connection the gateway closed while idle is opened again and the envelope sent once more;
    that is safe, as the enclave never serves one voucher twice (a second arrival is refused as
    stale, not charged). Measured against the httpx transport on the same gateway: 0.72 against
    1.32 ms of client CPU per request, p50 2.0 against 2.7 ms (``benchmarks/bench_infer.py``).

    Raises (from the returned transport):
        ServingUnavailable: the gateway does not answer, or answers with an error that is not a refusal.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    target = parts.path.rstrip("/") + path
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    local = threading.local()
    headers = {"Content-Type": "application/octet-stream"}

    def send(envelope: bytes) -> Answer:
        for attempt in (1, 2):
            connection = getattr(local, "connection", None)
            reused = connection is not None
            if connection is None:
                connection = local.connection = connection_type(host, parts.port, timeout=timeout)
            try:
                connection.request("POST", target, body=envelope, headers=headers)
                reply = connection.getresponse()
                body = reply.read()
            except (http.client.HTTPException, OSError) as e:
                connection.close()
                local.connection = None
                if reused and attempt == 1 and isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    continue  # the gateway closed the idle connection: once more on a new one
                raise ServingUnavailable(f"the gateway at {url} did not answer ({type(e).__name__}: {e})") from e
            if reply.will_close:
                connection.close()
                local.connection = None
            return _answer(reply.status, body, reply.getheader("Retry-After"))
        raise AssertionError("unreachable")  # pragma: no cover

    return send


@dataclass(frozen=True)
class ServingEnclave:
    """An inference enclave as the registry shows it (what a client encrypts to and checks receipts against)."""

    signer: str
    encryption_key: bytes
    measurement: bytes


class InferenceClient:
    """A client of served models: credit, encrypted queries, verified answers (see the module doc)."""

    def __init__(
        self, account: LocalAccount, *, model_market: ModelMarketClient, registry: RegistryClient, transport: Transport,
        recheck_seconds: float = ENCLAVE_RECHECK_SECONDS,
    ) -> None:  # fmt: skip
        self.account = account
        self.recheck_seconds = recheck_seconds
        self._enclaves: dict[str, tuple[float, ServingEnclave]] = {}
        self.model_market = model_market
        self.registry = registry
        self.transport = transport
        self.book = VoucherBook(chain_id=model_market.chain.chain_id, model_market=model_market.address)
        self._listings: dict[int, ModelRecord] = {}

    def deposit(self, model_id: int, amount: int, enclave: str) -> TxResult:
        """Buy ``amount`` of credit on the channel with ``model_id``, served by inference enclave
        ``enclave`` (approving the token first in token mode).

        The channel is bound on-chain to one enclave: the first deposit binds it, and a deposit
        naming another enclave is refused (``ModelMarketChannelBoundElsewhere``) until the channel
        has nothing left to spend; only the bound enclave's vouchers are redeemable.
        """
        return self.model_market.deposit(self.account, model_id, Wei(amount), enclave)

    def enclave(self, signer: str) -> ServingEnclave:
        """``signer`` as the registry shows it.

        Checked again after ``recheck_seconds`` (a revocation reaches the client within that time).

        Raises:
            ConfigError: it is not an active inference enclave (unregistered, revoked, expired or
                its measurement not approved).
        """
        checked = self._enclaves.get(signer)
        if checked is not None and time.monotonic() - checked[0] <= self.recheck_seconds:
            return checked[1]
        if not self.registry.is_active(signer, Role.INFERENCE):
            self._enclaves.pop(signer, None)
            raise ConfigError(f"{signer} is not an active inference enclave in the registry")
        record = self.registry.enclave_of(signer)
        serving = ServingEnclave(str(to_checksum_address(signer)), encryption_key=record.encryption_key, measurement=record.measurement)
        self._enclaves[signer] = (time.monotonic(), serving)
        return serving

    def listing(self, model_id: int, *, refresh: bool = False) -> ModelRecord:
        if refresh or model_id not in self._listings:
            self._listings[model_id] = self.model_market.model(model_id)
        return self._listings[model_id]

    def sync(self, model_id: int) -> None:
        """Raise this client's totals on the channel to at least the chain's redeemed totals."""
        channel = self.model_market.channel(model_id, self.account.address)
        self.book.sync(model_id, self.account.address, redeemed=int(channel.redeemed), redeemed_queries=channel.redeemed_queries)

    def query(self, model_id: int, rows: np.ndarray, *, enclave: str) -> Outputs:
        """Ask model ``model_id`` about ``rows`` (float32 ``[n, ...]``) through inference enclave ``enclave``.

        Raises:
            ConfigError: ``enclave`` is not an active inference enclave, or the model is not active.
            ResponseRejected: the answer's receipt or ciphertext does not verify.
            VoucherStale, QueryCapExceeded, ...: the enclave refused (nothing was charged; the
                voucher is taken back).
        """
        listing = self.listing(model_id)
        if listing.status is not ModelStatus.ACTIVE:
            listing = self.listing(model_id, refresh=True)
            if listing.status is not ModelStatus.ACTIVE:
                raise ConfigError(f"model {model_id} is {listing.status.name.lower()}")
        serving = self.enclave(enclave)
        pending = build_request(
            self.account, rows, model_id=model_id, enclave=serving.signer, enclave_key=serving.encryption_key,
            price_per_query=int(listing.terms.price_per_query), book=self.book,
        )  # fmt: skip
        return self._send(pending, listing, serving)

    def _send(self, pending: PendingRequest, listing: ModelRecord, serving: ServingEnclave) -> Outputs:
        try:
            answer = self.transport(pending.envelope)
        except SterlingError:
            self.book.refund(pending.voucher, rows=pending.rows, price_per_query=pending.price_per_query)
            raise
        return open_response(
            pending, answer.response, answer.receipt_signature, measurement=serving.measurement,
            weights_hash=listing.terms.weights_hash, output_policy=listing.terms.output_policy, output_param=listing.terms.output_param,
        )  # fmt: skip

    def query_many(
        self, model_id: int, rows: np.ndarray, *, enclave: str, batch_rows: int = DEFAULT_BULK_ROWS,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """:meth:`query` over a large table, ``batch_rows`` rows per envelope; the outputs' values in row order.

        ``progress(done, total)`` is called after each envelope.
        """
        total = int(rows.shape[0])
        parts = []
        for start, chunk in _chunks(rows, batch_rows):
            parts.append(self.query(model_id, chunk, enclave=enclave).values)
            if progress is not None:
                progress(start + len(chunk), total)
        if not parts:
            raise ValueError("no rows to ask about")
        return np.concatenate(parts)


def _chunks(rows: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    if size < 1:
        raise ValueError("batch_rows must be at least 1")
    per_row = 4 * int(np.prod(rows.shape[1:])) if rows.ndim > 1 else 4
    size = max(1, min(size, (envelope_format.MAX_ENVELOPE_BYTES - 4096) // max(per_row, 1)))
    for start in range(0, int(rows.shape[0]), size):
        yield start, rows[start : start + size]


__all__ = [
    "Answer",
    "BlobModelStore",
    "InferenceClient",
    "JobModel",
    "JobModelCopyDepository",
    "ListedModel",
    "ModelKeyDepository",
    "ModelStore",
    "ServingEnclave",
    "ServingUnavailable",
    "Transport",
    "gateway_transport",
    "http_transport",
    "list_job_model",
    "list_model",
    "model_weights",
]
