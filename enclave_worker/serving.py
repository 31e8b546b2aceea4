"""Host side of an inference enclave: model loading, dynamic batching, backpressure, voucher redemption.

The host is untrusted: it sees request envelopes (a clear header and an HPKE ciphertext to the
enclave's on-chain key), encrypted responses and vouchers, never inputs, outputs or weights.

- **Loading.** On the first request for a model the host reads its listing from the model market,
  fetches the STRL ciphertext and model spec from the blob store, has the key manager release the
  model key to this enclave's on-chain key (:class:`~.model_keys.ModelKeyService`), and sends it all
  to the enclave, which checks every hash and keeps the model in a bounded LRU cache.
- **Chain state off the hot path.** A channel's state (deposit, redeemed totals, allow-listing,
  bound enclave) is read once, on its first request, and then kept: a watcher thread reads the model
  market's logs every ``channel_seconds`` (one ``eth_getLogs`` for all channels) and re-reads only
  the channels and listings an event names (a deposit, a redemption, a close, a reprice, a pause,
  an allow-list change), and drops listings that expired. The dispatcher never waits on the chain
  for a known channel. If the watcher falls behind (the node does not answer for
  ``3 × channel_seconds``), the host goes back to re-reading a channel after ``channel_seconds`` and
  a listing after ``terms_seconds`` on the request path. (Measured: with a read per channel per
  second on the dispatcher, 32 clients spent most of the dispatcher's time in web3 calls.)
- **Batching.** Requests wait in one bounded queue; a dispatcher thread takes the first, then
  whatever else is queued (and, if ``max_wait`` > 0, whatever arrives within that many seconds) up
  to ``max_batch`` requests, and sends each model's share to the enclave in one ``infer`` frame:
  one forward pass for all their rows. By default it does not wait: requests that arrive while
  the enclave answers a batch form the next one (continuous batching), so an idle service answers
  a lone request at once and a busy one batches more the busier it is. (Measured: waiting 2 ms
  for company cost a lone request 3.3 ms, as the thread wakes late.) Every
  request gets its own answer or refusal; one bad request never fails the batch.
- **Backpressure.** A full queue refuses at once with :class:`ServiceBusy` (the gateway's 429 and
  ``Retry-After``); each client (the voucher's signer) has a token bucket of ``client_rate``
  requests per second (burst ``client_burst``) beyond which it gets :class:`RateLimited`.
- **Vouchers.** The latest voucher served on each channel is kept (and appended to
  ``vouchers.jsonl`` in the state directory, so a restart can still redeem it); :meth:`redeem`
  redeems every channel whose latest voucher is above the chain's redeemed total, as the
  enclave's operator: one transaction per channel for any number of queries.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount
from eth_utils import to_canonical_address, to_checksum_address

from marketplace.blobstore import BlobAccess
from marketplace.contracts import RegistryClient
from marketplace.errors import ContractReverted, SterlingError
from marketplace.inference import refusal
from marketplace.model_market import MarketChanges, ModelMarketClient, ModelRecord, Redemption

from .host import EnclaveRequestFailed
from .sim_platform import LaunchedEnclave
from .trusted.inference import MAX_BATCH_REQUESTS, RequestHeader, parse_header
from .trusted.onchain import ModelStatus, Role
from .trusted.vouchers import Voucher

logger = logging.getLogger(__name__)


class ServiceBusy(SterlingError):
    """The inference queue is full; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(ServiceBusy):
    """This client sent more requests per second than the service allows."""


class ModelUnavailable(SterlingError, LookupError):
    """The model does not exist, is not active, has expired, or could not be loaded."""


class ModelReleaser(Protocol):
    def release(self, *, model_id: int, enclave: str) -> bytes: ...


@dataclass(frozen=True)
class Served:
    """One answered request, as the client receives it."""

    request_id: bytes
    response: bytes
    """``response_nonce || AES-256-GCM(outputs)``, for the client only."""
    receipt_signature: bytes
    """The enclave's signature of the :class:`~.trusted.vouchers.ResponseReceipt`."""
    voucher: Voucher
    enclave: str


@dataclass
class _Pending:
    envelope: bytes
    header: RequestHeader
    future: Future[Served]
    queued_at: float


@dataclass
class _Loaded:
    record: ModelRecord
    at: float


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class ServingStats:
    """Counters a caller may read (for the bench and the status board)."""

    served: int = 0
    refused: int = 0
    batches: int = 0
    batch_rows: int = 0
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))


VOUCHER_LEDGER = "vouchers.jsonl"
"""The file, in an inference host's state directory, of the latest voucher served on each channel."""


class VoucherLedger:
    """The latest voucher served on each channel (model, client), appended to a JSON-lines file as
    it is served, so a restart, or ``sterling models redeem``, can still redeem it. Reading tolerates
    a torn last line (a host writing while it is read)."""

    def __init__(self, path: Path, *, writable: bool = True) -> None:
        self.path = path
        self._latest: dict[tuple[int, bytes], tuple[Voucher, bytes]] = {}
        self._lock = threading.Lock()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    voucher = Voucher(
                        model_id=int(entry["model_id"]), client=bytes.fromhex(entry["client"]), enclave=bytes.fromhex(entry["enclave"]),
                        amount=int(entry["amount"]), queries=int(entry["queries"]),
                    )  # fmt: skip
                    signature = bytes.fromhex(entry["signature"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("skipping a malformed line of %s", path)
                    continue
                self._keep(voucher, signature)
        self._log = None
        if writable:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = path.open("a", encoding="utf-8")

    def _keep(self, voucher: Voucher, signature: bytes) -> bool:
        key = (voucher.model_id, voucher.client)
        current = self._latest.get(key)
        if current is None or voucher.amount > current[0].amount or voucher.queries > current[0].queries:
            self._latest[key] = (voucher, signature)
            return True
        return False

    def record(self, served: list[tuple[Voucher, bytes]]) -> None:
        """Keep (and append) each voucher that is its channel's latest."""
        if self._log is None:
            raise ValueError(f"{self.path} was opened for reading only")
        with self._lock:
            lines = []
            for voucher, signature in served:
                if self._keep(voucher, signature):
                    lines.append(json.dumps({
                        "model_id": voucher.model_id, "client": voucher.client.hex(), "enclave": voucher.enclave.hex(),
                        "amount": str(voucher.amount), "queries": voucher.queries, "signature": signature.hex(),
                    }))  # fmt: skip
            if lines:
                self._log.write("\n".join(lines) + "\n")
                self._log.flush()

    def latest(self) -> list[tuple[Voucher, bytes]]:
        """The latest voucher of every channel."""
        with self._lock:
            return list(self._latest.values())

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def redeem_vouchers(
    vouchers: list[tuple[Voucher, bytes]], *, model_market: ModelMarketClient, operator: LocalAccount, min_amount: int = 1
) -> list[Redemption]:
    """Redeem, as ``operator``, each voucher that is at least ``min_amount`` above its channel's
    redeemed total on-chain: one transaction per channel, whatever the number of queries. A voucher
    someone redeemed meanwhile (another redeemer of the same ledger) is skipped, not an error."""
    redeemed = []
    for voucher, signature in vouchers:
        channel = model_market.channel(voucher.model_id, str(to_checksum_address(voucher.client)))
        if voucher.amount - int(channel.redeemed) < max(min_amount, 1):
            continue
        try:
            redemption, _ = model_market.redeem(operator, voucher, signature)
        except ContractReverted as e:
            if e.error != "ModelMarketStaleVoucher":
                raise
            logger.info("voucher of channel (%d, %s) was redeemed meanwhile", voucher.model_id, to_checksum_address(voucher.client))
            continue
        redeemed.append(redemption)
    return redeemed


class InferenceService:
    """Serves the model market's models from one inference enclave (see the module doc)."""

    def __init__(
        self,
        enclave: LaunchedEnclave,
        *,
        model_market: ModelMarketClient,
        registry: RegistryClient,
        key_manager: ModelReleaser,
        blobs: BlobAccess,
        state_dir: Path,
        operator: LocalAccount | None = None,
        max_batch: int = 64,
        max_wait: float = 0.0,
        queue_limit: int = 2048,
        client_rate: float = 2000.0,
        client_burst: int = 256,
        channel_seconds: float = 1.0,
        terms_seconds: float = 5.0,
    ) -> None:
        if enclave.process.role is not Role.INFERENCE:
            raise ValueError("InferenceService needs an inference enclave")
        if not 1 <= max_batch <= MAX_BATCH_REQUESTS:
            raise ValueError(f"max_batch must be in 1..{MAX_BATCH_REQUESTS}")
        self.enclave = enclave
        self.model_market = model_market
        self.registry = registry
        self.key_manager = key_manager
        self.blobs = blobs
        self.operator = operator
        self.max_batch, self.max_wait = max_batch, max_wait
        self.queue_limit = queue_limit
        self.client_rate, self.client_burst = client_rate, client_burst
        self.channel_seconds, self.terms_seconds = channel_seconds, terms_seconds
        self.signer = str(to_checksum_address(enclave.process.signer))
        self.stats = ServingStats()
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=queue_limit)
        self._buckets: dict[bytes, _Bucket] = {}
        self._buckets_lock = threading.Lock()
        self._loaded: dict[int, _Loaded] = {}
        self._channels: dict[tuple[int, bytes], tuple[float, tuple[int, int, int, bool, bytes]]] = {}
        state_dir.mkdir(parents=True, exist_ok=True)
        self.vouchers = VoucherLedger(state_dir / VOUCHER_LEDGER)
        self._closed = False
        self._watched_at: float | None = None  # when the watcher last read the market's logs up to the head
        self._watch_stop = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="sterling-inference", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch, name="sterling-inference-watch", daemon=True)
        self._watcher.start()

    # --- requests ------------------------------------------------------------------------------

    def submit(self, envelope: bytes) -> Future[Served]:
        """Queue one request envelope; the future holds its :class:`Served` answer or the refusal.

        Raises (at once, nothing queued):
            EnvelopeMalformed: the clear header does not parse.
            RateLimited: the voucher's client is over its rate.
            ServiceBusy: the queue is full.
        """
        if self._closed:
            raise ServiceBusy("the inference service is shutting down", retry_after=5.0)
        header = parse_header(envelope)
        self._take_token(header.client)
        pending = _Pending(envelope=bytes(envelope), header=header, future=Future(), queued_at=time.monotonic())
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise ServiceBusy(f"{self.queue_limit} requests are waiting; try again shortly", retry_after=1.0) from None
        return pending.future

    def infer(self, envelope: bytes, *, timeout: float = 60.0) -> Served:
        """:meth:`submit` and wait for the answer.

        Raises:
            SterlingError: the enclave refused the request (:func:`marketplace.inference.refusal`:
                ``VoucherStale``, ``QueryCapExceeded``, ...).
            ModelUnavailable: the model cannot be served.
        """
        return self.submit(envelope).result(timeout=timeout)

    def _take_token(self, client: bytes) -> None:
        now = time.monotonic()
        with self._buckets_lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = _Bucket(tokens=float(self.client_burst), at=now)
            bucket.tokens = min(float(self.client_burst), bucket.tokens + (now - bucket.at) * self.client_rate)
            bucket.at = now
            if bucket.tokens < 1.0:
                raise RateLimited(
                    f"client {to_checksum_address(client)} is over {self.client_rate:g} requests per second",
                    retry_after=max((1.0 - bucket.tokens) / self.client_rate, 0.001),
                )
            bucket.tokens -= 1.0

    # --- the dispatcher ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            by_model: dict[int, list[_Pending]] = defaultdict(list)
            for pending in batch:
                by_model[pending.header.model_id].append(pending)
            for model_id, items in by_model.items():
                try:
                    self._serve(model_id, items)
                except Exception as e:  # a model that cannot be served fails its requests, not the service
                    if not isinstance(e, SterlingError):
                        logger.exception("serving model %d failed", model_id)
                    failure = e if isinstance(e, SterlingError) else ModelUnavailable(f"model {model_id} failed ({type(e).__name__})")
                    for pending in items:
                        if not pending.future.done():
                            pending.future.set_exception(failure)

    def _serve(self, model_id: int, items: list[_Pending]) -> None:
        self.ensure_loaded(model_id)
        requests = []
        for pending in items:
            deposited, redeemed, redeemed_queries, allowed, bound = self._channel(model_id, pending.header.client)
            requests.append({
                "envelope": pending.envelope, "deposited": deposited, "redeemed": redeemed,
                "redeemed_queries": redeemed_queries, "allowed": allowed, "channel_enclave": bound,
            })  # fmt: skip
        try:
            reply = self._infer_frame(model_id, requests)
        except EnclaveRequestFailed as e:
            if e.error != "ModelNotLoaded":
                raise
            self._loaded.pop(model_id, None)  # evicted from the enclave's cache: load again, once
            self.ensure_loaded(model_id)
            reply = self._infer_frame(model_id, requests)
        self.stats.batches += 1
        self.stats.batch_rows += sum(p.header.rows for p in items)
        served: list[tuple[Voucher, bytes]] = []
        for pending, result in zip(items, reply["results"], strict=True):
            if "error" in result:
                self.stats.refused += 1
                self.stats.refusals[str(result["error"])] += 1
                if result["error"] in ("VoucherOverDeposit", "ClientNotAllowed", "WrongEnclave"):
                    self._channels.pop((model_id, pending.header.client), None)  # a deposit or allow-listing may be new
                pending.future.set_exception(refusal(str(result["error"]), str(result["message"])))
                continue
            v = result["voucher"]
            voucher = Voucher(model_id=v["model_id"], client=v["client"], enclave=v["enclave"], amount=v["amount"], queries=v["queries"])
            served.append((voucher, result["voucher_signature"]))
            self.stats.served += 1
            pending.future.set_result(
                Served(
                    request_id=result["request_id"], response=result["response"], receipt_signature=result["receipt_signature"],
                    voucher=voucher, enclave=self.signer,
                )
            )  # fmt: skip
        if served:
            self.vouchers.record(served)

    def _infer_frame(self, model_id: int, requests: list[dict[str, Any]]) -> dict[str, Any]:
        return self.enclave.process.request(
            "infer", chain_id=self.model_market.chain.chain_id, model_market=self.model_market.address_bytes, model_id=model_id,
            requests=requests,
        )  # fmt: skip

    def _channel(self, model_id: int, client: bytes) -> tuple[int, int, int, bool, bytes]:
        """(deposited, redeemed, redeemed queries, allowed, bound enclave) of a channel, re-read after ``channel_seconds``."""
        key = (model_id, client)
        cached = self._channels.get(key)
        now = time.monotonic()
        if cached is not None and (self._watching(now) or now - cached[0] <= self.channel_seconds):
            return cached[1]
        return self._read_channel(model_id, client)

    def _read_channel(self, model_id: int, client: bytes) -> tuple[int, int, int, bool, bytes]:
        now = time.monotonic()
        key = (model_id, client)
        address = str(to_checksum_address(client))
        channel = self.model_market.channel(model_id, address)
        loaded = self._loaded.get(model_id)  # ``restricted`` is fixed at listing: an open model allows everyone
        allowed = True if loaded is not None and not loaded.record.terms.restricted else self.model_market.is_allowed(model_id, address)
        state = (int(channel.deposited), int(channel.redeemed), channel.redeemed_queries, allowed, to_canonical_address(channel.enclave))
        self._channels[key] = (now, state)
        return state

    # --- the chain watcher ---------------------------------------------------------------------

    def _watching(self, now: float) -> bool:
        """Whether the watcher read the market's logs recently enough for cached state to stand."""
        return self._watched_at is not None and now - self._watched_at <= 3 * self.channel_seconds

    def _watch(self) -> None:
        chain = self.model_market.chain
        last: int | None = None
        while not self._watch_stop.wait(0 if last is None else self.channel_seconds):
            try:
                head = chain.w3.eth.get_block("latest")
                number, timestamp = int(head["number"]), int(head["timestamp"])
                if last is None:
                    last = number  # what is read from now on is read at this block or later
                elif number > last:
                    self._apply(self.model_market.changes(last + 1, number))
                    last = number
                for model_id, loaded in list(self._loaded.items()):
                    if loaded.record.terms.expiry and timestamp >= loaded.record.terms.expiry:
                        self._loaded.pop(model_id, None)  # the next request finds it expired
                self._watched_at = time.monotonic()
            except Exception as e:  # the node is away: the request path re-reads on its own until it is back
                logger.warning("the inference host's chain watcher could not read the model market: %s", e)

    def _apply(self, changes: MarketChanges) -> None:
        """Re-read what an event named; a listing whose terms changed is loaded again (new terms to the enclave)."""
        for model_id in changes.models:
            self._loaded.pop(model_id, None)
        for key in list(self._channels):
            if key in changes.channels or key[0] in changes.models:
                try:
                    self._read_channel(*key)
                except Exception:
                    self._channels.pop(key, None)  # read again on its next request
                    raise

    # --- models --------------------------------------------------------------------------------

    def ensure_loaded(self, model_id: int) -> _Loaded:
        """Load (or re-read the terms of) ``model_id`` into the enclave if not done in the last ``terms_seconds``.

        Raises:
            ModelUnavailable: no such model, not active, expired, or the key manager refused its key.
        """
        loaded = self._loaded.get(model_id)
        now = time.monotonic()
        if loaded is not None and (self._watching(now) or now - loaded.at <= self.terms_seconds):
            return loaded
        if model_id < 1 or model_id > self.model_market.model_count():
            raise ModelUnavailable(f"there is no model {model_id} on model market {self.model_market.address}")
        record = self.model_market.model(model_id)
        if record.status is not ModelStatus.ACTIVE:
            self._loaded.pop(model_id, None)
            raise ModelUnavailable(f"model {model_id} is {record.status.name.lower()}, not served")
        if record.terms.expiry and self.model_market.chain.now() >= record.terms.expiry:
            raise ModelUnavailable(f"model {model_id}'s listing expired at {record.terms.expiry}")
        if loaded is not None and loaded.record == record:
            loaded.at = now
            return loaded
        measurement = self.registry.enclave_of(self.signer).measurement
        if measurement != self.enclave.measurement:
            raise ModelUnavailable("this inference enclave's registered measurement is not the one it runs; register it again")
        try:
            released = self.key_manager.release(model_id=model_id, enclave=self.signer)
        except SterlingError as e:
            raise ModelUnavailable(f"the key manager refused model {model_id}'s key: {e}") from e
        terms = record.terms
        ciphertext = self.blobs.get(terms.content_hash.hex())
        spec = self.blobs.get(terms.spec_hash.hex())
        self.enclave.process.request(
            "load_model", chain_id=self.model_market.chain.chain_id, model_market=self.model_market.address_bytes,
            model_id=model_id, weights_hash=terms.weights_hash, spec_hash=terms.spec_hash, content_hash=terms.content_hash,
            price_per_query=int(terms.price_per_query), output_policy=int(terms.output_policy), output_param=terms.output_param,
            query_cap=terms.query_cap, released_key=released, ciphertext=ciphertext, model_spec=spec, measurement=measurement,
        )  # fmt: skip
        self._loaded[model_id] = loaded = _Loaded(record=record, at=now)
        logger.info("loaded model %d (%d bytes of ciphertext) into inference enclave %s", model_id, len(ciphertext), self.signer)
        return loaded

    # --- vouchers ------------------------------------------------------------------------------

    def unredeemed(self) -> list[tuple[Voucher, bytes]]:
        """The latest voucher of every channel this service served."""
        return self.vouchers.latest()

    def redeem(self, *, min_amount: int = 1) -> list[Redemption]:
        """Redeem, as the operator, every channel's latest voucher that is at least ``min_amount`` above the chain's redeemed total.

        Raises:
            ValueError: the service has no operator account.
        """
        if self.operator is None:
            raise ValueError("this inference service has no operator account to redeem with")
        redeemed = redeem_vouchers(self.unredeemed(), model_market=self.model_market, operator=self.operator, min_amount=min_amount)
        for redemption in redeemed:
            self._channels.pop((redemption.model_id, to_canonical_address(redemption.client)), None)
        return redeemed

    def close(self) -> None:
        """Stop the dispatcher after the queued requests (the enclave is the caller's to close)."""
        if self._closed:
            return
        self._closed = True
        self._watch_stop.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._watcher.join(timeout=30)
        self.vouchers.close()
