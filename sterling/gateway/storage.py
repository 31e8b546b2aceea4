"""Storage quotas per client and the clean-up of blobs nothing on-chain refers to.

Uploads are unauthenticated, so a client (:func:`sterling.gateway.bounds.client_of`) is charged
for the blobs it uploaded *until a listing, job or result refers to them*: from then on the chain
(someone who paid gas) vouches for them. The charge is kept in a small ledger next to the blobs
(``<blob root>/uploads.sqlite3``: digest, client, size, time). A blob that nothing in the index
refers to ``grace_seconds`` after it was stored is deleted — but only while the index is within
``max_index_lag_blocks`` of the chain head, so a lagging (or rebuilding) index never condemns a
blob whose reference it has not read yet. Staging files no upload in this process is writing
and older than an hour (a crash's leftovers) go too.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from starlette.exceptions import HTTPException

from marketplace.blobstore import BlobStore
from oracle.index_db import AllowedModel, Cursor, Dataset, IndexDatabase, Job

logger = logging.getLogger(__name__)

LEDGER_FILE = "uploads.sqlite3"
STALE_STAGING_SECONDS = 3600.0
_IN_CHUNK = 500
_REFERENCE_COLUMNS = (
    Dataset.content_hash, Dataset.schema_hash, Job.model_spec_hash, Job.result_hash, Job.metrics_hash, AllowedModel.model_spec_hash,
)  # fmt: skip
"""Every index column holding the SHA-256 of a blob the chain refers to (``0x`` + hex)."""


class QuotaExceeded(HTTPException):
    """A client's unreferenced stored bytes or blobs would exceed its quota (507, nothing stored)."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=507, detail=detail)


@dataclass(frozen=True)
class Usage:
    """What a client has stored that nothing on-chain refers to yet."""

    bytes: int
    blobs: int


@dataclass(frozen=True)
class CollectionReport:
    """One clean-up pass: blobs deleted, bytes freed, old blobs kept because referenced, staging files removed."""

    deleted: int
    freed_bytes: int
    kept: int
    staging_removed: int
    skipped: str | None = None


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def referenced_digests(index: IndexDatabase, digests: Collection[str]) -> set[str]:
    """Those of ``digests`` (hex, no ``0x``) that a listing, job, result or model allow-list refers to."""
    wanted = sorted({"0x" + d.lower().removeprefix("0x") for d in digests})
    found: set[str] = set()
    with index.session() as session:
        for part in _chunks(wanted):
            for column in _REFERENCE_COLUMNS:
                found.update(str(v) for v in session.scalars(select(column).where(column.in_(part))) if v)
    return {v.lower().removeprefix("0x") for v in found}


class UploadLedger:
    """Who uploaded which blob through the gateway, and whether the chain refers to it yet (SQLite, thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS uploads (sha256 TEXT PRIMARY KEY, client TEXT NOT NULL, size INTEGER NOT NULL, "
                "stored_at REAL NOT NULL, referenced INTEGER NOT NULL DEFAULT 0)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS uploads_client ON uploads (client, referenced)")

    def record(self, sha256: str, client: str, size: int, *, stored_at: float) -> bool:
        """Charge ``client`` for a newly stored blob; ``False`` if the blob was already on someone's account."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO uploads (sha256, client, size, stored_at) VALUES (?, ?, ?, ?)", (sha256, client, size, stored_at)
            )
            return cursor.rowcount == 1

    def pending(self, client: str) -> dict[str, int]:
        """The client's blobs not yet known to be referenced: digest → size."""
        with self._lock:
            rows = self._db.execute("SELECT sha256, size FROM uploads WHERE client = ? AND referenced = 0", (client,)).fetchall()
        return {str(d): int(s) for d, s in rows}

    def mark_referenced(self, digests: Collection[str]) -> None:
        with self._lock:
            self._db.executemany("UPDATE uploads SET referenced = 1 WHERE sha256 = ?", [(d,) for d in digests])

    def forget(self, digests: Collection[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM uploads WHERE sha256 = ?", [(d,) for d in digests])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StorageGuard:
    """Per-client storage quotas and the garbage collection of unreferenced blobs.

    Example:
        >>> guard = StorageGuard(blobs, index, cursor_key=key, head=lambda: w3.eth.block_number)  # doctest: +SKIP
        >>> with guard.reservation("203.0.113.7", staging=path) as charge:
        ...     charge(len(chunk))  # raises QuotaExceeded past the quota
        >>> guard.collect().deleted
        0
    """

    def __init__(
        self,
        blobs: BlobStore,
        index: IndexDatabase,
        *,
        cursor_key: str,
        head: Callable[[], int],
        quota_bytes: int = 2 << 30,
        quota_blobs: int = 1000,
        grace_seconds: float = 86_400.0,
        interval_seconds: float = 600.0,
        max_index_lag_blocks: int = 12,
    ) -> None:
        self.blobs = blobs
        self.index = index
        self.cursor_key = cursor_key
        self.head = head
        self.quota_bytes = quota_bytes
        self.quota_blobs = quota_blobs
        self.grace_seconds = grace_seconds
        self.interval_seconds = interval_seconds
        self.max_index_lag_blocks = max_index_lag_blocks
        self.ledger = UploadLedger(blobs.root / LEDGER_FILE)
        self._lock = threading.Lock()
        self._in_flight: dict[str, list[int]] = {}  # client → [bytes, uploads]
        self._staging: set[Path] = set()
        self._next_collection = time.monotonic() + interval_seconds
        self._collecting = False

    # -- quotas ------------------------------------------------------------------------------

    def usage(self, client: str, *, refresh: bool = True) -> Usage:
        """The client's stored blobs nothing on-chain refers to.

        Args:
            client: whose usage.
            refresh: ask the index which of them are referenced by now (one query); without it,
                the ledger's flags as the last refresh or clean-up left them (no index access).
        """
        pending = self.ledger.pending(client)
        if pending and refresh:
            referenced = referenced_digests(self.index, pending)
            if referenced:
                self.ledger.mark_referenced(referenced)
                for digest in referenced:
                    pending.pop(digest, None)
        return Usage(bytes=sum(pending.values()), blobs=len(pending))

    def usage_for_upload(self, client: str, *, adding: int | None) -> Usage:
        """:meth:`usage` as an upload of ``adding`` bytes (``None``: not declared) needs it.

        The ledger alone while it leaves room for the upload; the index (the shared, pooled
        resource) is asked only when the quota looks reached, or the size is unknown — so a
        refusal is always decided on fresh references.
        """
        used = self.usage(client, refresh=False)
        if adding is None or used.blobs + 1 > self.quota_blobs or used.bytes + adding > self.quota_bytes:
            used = self.usage(client)
        return used

    def _describe(self, client: str, used: Usage, adding: int) -> str:
        return (
            f"storage quota exceeded for client {client}: it has {used.bytes} bytes in {used.blobs} blob(s) that no listing, job "
            f"or result refers to yet, plus {adding} bytes in progress; the quota is {self.quota_bytes} bytes and {self.quota_blobs} "
            f"blob(s). Nothing was stored. Blobs stop counting once a transaction refers to them; unreferenced ones are deleted "
            f"{self.grace_seconds:g} s after upload"
        )

    @contextmanager
    def reservation(self, client: str, *, used: Usage | None = None, staging: Path | None = None) -> Iterator[Callable[[int], None]]:
        """Admit one upload of ``client`` against its quota; yields ``charge(n)`` to call for every ``n`` bytes received.

        Args:
            client: who is charged.
            used: the client's :meth:`usage` if the caller just read it (off the event loop); read here otherwise.
            staging: the upload's staging file, which the clean-up leaves alone while the upload runs.

        Raises:
            QuotaExceeded: at once if the client is already at its quota, or from ``charge`` once
                the upload would take it past the quota.
        """
        used = self.usage(client) if used is None else used
        with self._lock:
            flight = self._in_flight.setdefault(client, [0, 0])
            if used.blobs + flight[1] + 1 > self.quota_blobs or used.bytes + flight[0] >= self.quota_bytes:
                detail = self._describe(client, used, flight[0])
                if flight == [0, 0]:
                    del self._in_flight[client]
                raise QuotaExceeded(detail)
            flight[1] += 1
            if staging is not None:
                self._staging.add(staging)
        charged = 0

        def charge(n: int) -> None:
            nonlocal charged
            with self._lock:
                flight[0] += n
                charged += n
                if used.bytes + flight[0] > self.quota_bytes:
                    raise QuotaExceeded(self._describe(client, used, flight[0]))

        try:
            yield charge
        finally:
            with self._lock:
                flight[0] -= charged
                flight[1] -= 1
                if flight == [0, 0] and self._in_flight.get(client) is flight:
                    del self._in_flight[client]
                if staging is not None:
                    self._staging.discard(staging)

    def record(self, client: str, sha256: str, size: int) -> None:
        """Charge ``client`` for a blob just committed (unless someone already uploaded the same bytes)."""
        self.ledger.record(sha256, client, size, stored_at=time.time())

    # -- clean-up ----------------------------------------------------------------------------

    def _indexed_block(self) -> int:
        with self.index.session() as session:
            cursor = session.get(Cursor, self.cursor_key)
            return cursor.last_block if cursor is not None else -1

    def collect(self, *, now: float | None = None) -> CollectionReport:
        """Delete blobs older than the grace period that nothing in the index refers to, and stale staging files."""
        now = time.time() if now is None else now
        staging_removed = self._sweep_staging(now)
        head, indexed = self.head(), self._indexed_block()
        if indexed < head - self.max_index_lag_blocks:
            reason = f"the index is at block {indexed}, the chain at {head}"
            logger.info("blob clean-up skipped: %s", reason)
            return CollectionReport(0, 0, 0, staging_removed, skipped=reason)
        old = {d: st.st_size for d, st in self.blobs.digests() if now - st.st_mtime >= self.grace_seconds}
        referenced = referenced_digests(self.index, old) if old else set()
        deleted, freed = [], 0
        for digest, size in old.items():
            if digest not in referenced and self.blobs.delete(digest):
                deleted.append(digest)
                freed += size
        self.ledger.forget(deleted)
        self.ledger.mark_referenced(referenced)
        if deleted or staging_removed:
            logger.info(
                "blob clean-up: deleted %d unreferenced blob(s), %d bytes, %d stale staging file(s)", len(deleted), freed, staging_removed
            )
        return CollectionReport(len(deleted), freed, len(referenced), staging_removed)

    def _sweep_staging(self, now: float) -> int:
        removed = 0
        directory = self.blobs.staging_dir
        if not directory.is_dir():
            return 0
        with self._lock:
            active = set(self._staging)
        for path in directory.iterdir():
            try:
                if path not in active and now - path.stat().st_mtime >= STALE_STAGING_SECONDS:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def collect_if_due(self) -> None:
        """Start a clean-up pass in a thread of its own if the interval has passed and none is running."""
        moment = time.monotonic()
        with self._lock:
            if self._collecting or moment < self._next_collection:
                return
            self._collecting = True
            self._next_collection = moment + self.interval_seconds
        threading.Thread(target=self._collect_in_background, name="sterling-blob-gc", daemon=True).start()

    def _collect_in_background(self) -> None:
        try:
            self.collect()
        except Exception as e:  # the next pass tries again; a request must never see this
            logger.warning("blob clean-up failed: %s: %s", type(e).__name__, e)
        finally:
            with self._lock:
                self._collecting = False
