"""A consumer's session with a Sterling gateway, for a notebook: find datasets, create a job, wait
for it, fetch the model and its card.

Everything goes through the gateway's HTTP API and its JSON-RPC relay; transactions are signed
here with the account given, the consumer key the model is sealed to is made here and never
leaves this process (unless :meth:`Job.save_key` writes it, in the web UI's key-file format),
and the model is decrypted here and checked against the receipt's hash on-chain.

Example:
    >>> from marketplace.session import Marketplace  # doctest: +SKIP
    >>> market = Marketplace.connect("http://127.0.0.1:8000", account)
    >>> job = market.create_job([4], spec, epsilon=1.0, worker_fee=10**16)
    >>> market.wait(job.id)["status"]
    'completed'
    >>> model = market.fetch_model(job)
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount
from torch import nn

from enclave_worker.trusted.models import ModelSpec

from .chain import Wei, connect_gateway
from .consumer import Consumer, open_job_model
from .contracts import JobId, MarketClient
from .errors import SterlingError
from .key_file import write_key_file
from .model_card import build_card
from .remote_blobs import GatewayBlobStore

SETTLED = ("completed", "expired", "cancelled")


class JobFailed(SterlingError):
    """The job settled without a model (expired or cancelled), or did not settle in time."""


@dataclass(frozen=True)
class Job:
    """A job this session created: its id and the consumer key its model is sealed to."""

    id: JobId
    key: X25519PrivateKey
    escrow: Wei
    transaction: str

    def save_key(self, path: Path) -> Path:
        """Write the key file the web UI and ``sterling model fetch`` read (:mod:`marketplace.key_file`: mode 0600, never over a file)."""
        return write_key_file(path, self.key, job_id=int(self.id))


class Marketplace:
    """One gateway, one account. Close it (or use ``with``) to release its connections and cache."""

    def __init__(self, gateway: str, account: LocalAccount, *, timeout: float = 60.0) -> None:
        self.gateway = gateway.rstrip("/")
        self.account = account
        self.http = httpx.Client(base_url=self.gateway, timeout=timeout)
        self.config: dict[str, Any] = self.http.get("/api/config").raise_for_status().json()
        self.chain = connect_gateway(self.gateway)
        self.market = MarketClient(self.chain, self.config["contracts"]["job_market"])
        self._cache = tempfile.TemporaryDirectory(prefix="sterling-session-")
        self.blobs = GatewayBlobStore(self.gateway, Path(self._cache.name), timeout=timeout)

    @classmethod
    def connect(cls, gateway: str, account: LocalAccount) -> Marketplace:
        return cls(gateway, account)

    def close(self) -> None:
        self.blobs.close()
        self.http.close()
        self._cache.cleanup()

    def __enter__(self) -> Marketplace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def datasets(self, **filters: Any) -> list[dict[str, Any]]:
        """Listed datasets (``GET /api/datasets``; filters such as ``min_remaining_epsilon=1``, ``sort="price"``)."""
        page: dict[str, Any] = self.http.get("/api/datasets", params={"limit": 500, **filters}).raise_for_status().json()
        return list(page["items"])

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        """One dataset with its schema, budget history and jobs."""
        detail: dict[str, Any] = self.http.get(f"/api/datasets/{dataset_id}").raise_for_status().json()
        return detail

    def create_job(self, dataset_ids: Sequence[int], spec: ModelSpec, *, epsilon: float, delta: float = 1e-5, worker_fee: int = 0) -> Job:
        """Create a job paying each dataset's current price plus ``worker_fee`` (a raised price makes it revert).

        Raises:
            ContractReverted: a dataset's terms refuse it (``marketplace.refusals.explain`` says why in words).
        """
        key = X25519PrivateKey.generate()
        consumer = Consumer(self.account, market=self.market, blobs=self.blobs, key=key)
        created = consumer.create_job(dataset_ids, spec, epsilon=epsilon, delta=delta, worker_fee=Wei(worker_fee))
        return Job(created.job_id, key, created.escrow, created.tx.tx_hash)

    def job(self, job_id: int) -> dict[str, Any]:
        """The job as the gateway shows it (status, timeline, progress, metrics)."""
        detail: dict[str, Any] = self.http.get(f"/api/jobs/{job_id}").raise_for_status().json()
        return detail

    def wait(self, job_id: int, *, timeout: float = 3600.0, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Wait until the job settles, calling ``progress`` with its progress (stage, epoch, ε so far) as it changes.

        Raises:
            JobFailed: it settled without a model, or not within ``timeout`` seconds.
        """
        deadline, seen = time.monotonic() + timeout, None
        while True:
            response = self.http.get(f"/api/jobs/{job_id}")
            if response.status_code != 404:  # 404: created but not indexed yet
                job: dict[str, Any] = response.raise_for_status().json()
                now = (job["status"], job.get("progress"))
                if progress is not None and now != seen:
                    progress({"status": job["status"], **(job.get("progress") or {})})
                seen = now
                if job["status"] == "completed":
                    return job
                if job["status"] in SETTLED:
                    raise JobFailed(f"job {job_id} was {job['status']}: no model (its escrow is credited back)")
            if time.monotonic() > deadline:
                raise JobFailed(f"job {job_id} did not settle within {timeout:g} s")
            time.sleep(0.5)

    def fetch_weights(self, job: Job) -> bytes:
        """The job's model weights (safetensors), decrypted here and checked against the receipt."""
        return open_job_model(self.market, self.blobs, job.key, job.id)

    def fetch_model(self, job: Job) -> nn.Module:
        """The job's model, ready to evaluate (``eval()`` mode; it standardises its inputs itself)."""
        return Consumer(self.account, market=self.market, blobs=self.blobs, key=job.key).fetch_model(job.id)

    def card(self, job_id: int) -> dict[str, Any]:
        """The model card (:mod:`marketplace.model_card`), built from the chain and the receipt's documents.

        Raises:
            JobNotReady: the job has no model yet.
        """
        return build_card(self.market, self.blobs, job_id)
