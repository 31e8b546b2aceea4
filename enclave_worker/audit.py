"""An append-only, hash-chained log of the key manager's decisions: deposits, key releases and claim releases.

Each line is a JSON object holding one decision and ``prev``, the SHA-256 of the previous line's
bytes (64 zeros for the first), so an edited, removed or reordered entry breaks the chain and
:meth:`AuditLog.verify` names the first bad line. Providers query it for their datasets.

The log is verified and loaded once when opened; :meth:`AuditLog.append` chains to the head kept
in memory (re-loading, and so re-verifying, only if the file changed on disk since), and
:meth:`AuditLog.loaded` hands out the entries in memory, so a host consulting its decisions does
not re-read the file each time. :meth:`AuditLog.entries` re-reads and verifies the file.

Limit: the host keeps the file, so it can drop entries from the end unnoticed; anchoring the
chain head (e.g. in enclave-signed receipts or on-chain) is future work.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from marketplace.errors import SterlingError

GENESIS = "0" * 64


class AuditLogTampered(SterlingError):
    """The audit log's hash chain is broken."""


RELEASE = "release"
"""``kind`` of a key-release decision: ``released`` says whether the key went to ``trainer``."""
CLAIM_RELEASE = "claim_release"
"""``kind`` of a ClaimRelease decision, one entry per dataset of the job: ``retired`` says whether
the statement was signed (the claim of ``trainer`` under ``charges`` then never gets a key)."""
DEPOSIT = "deposit"
"""``kind`` of an accepted deposit of ``provider``'s wrapped data key for ``content_hash`` (before
listing: ``job_id`` and ``dataset_id`` are 0, ``trainer`` is empty)."""
DEPOSIT_REFUSED = "deposit_refused"
"""``kind`` of a refused deposit (bad signature, or a key ``provider`` deposited already); ``reason`` says why."""
MODEL_DEPOSIT = "model_deposit"
"""``kind`` of an accepted deposit of a served model's key by its owner (``provider``) for the model
ciphertext ``content_hash`` (``job_id``, ``dataset_id`` 0)."""
MODEL_DEPOSIT_REFUSED = "model_deposit_refused"
"""``kind`` of a refused model-key deposit; ``reason`` says why."""
MODEL_RELEASE = "model_release"
"""``kind`` of a model-key release decision: ``dataset_id`` holds the model id, ``trainer`` the inference
enclave, ``released`` whether the key went to it."""
COMPETITION_DEPOSIT = "competition_deposit"
"""``kind`` of an accepted competition deposit: a test-set key by its organizer, or a submission's
model key by its participant (``provider``); ``dataset_id`` holds the competition id (0 for a test set)."""
COMPETITION_DEPOSIT_REFUSED = "competition_deposit_refused"
"""``kind`` of a refused competition deposit or admission; ``reason`` says why."""
COMPETITION_RELEASE = "competition_release"
"""``kind`` of a competition key-release decision: to an evaluator for one scoring, or to a buyer
(``trainer`` holds the evaluator or the buyer, ``dataset_id`` the competition id, ``job_id`` the
submission index); ``released`` says whether the key went."""
DEPOSIT_KINDS = (DEPOSIT, DEPOSIT_REFUSED)
COMPETITION_KINDS = (COMPETITION_DEPOSIT, COMPETITION_DEPOSIT_REFUSED, COMPETITION_RELEASE)
MODEL_KINDS = (MODEL_DEPOSIT, MODEL_DEPOSIT_REFUSED, MODEL_RELEASE)
RELEASE_KINDS = (RELEASE, CLAIM_RELEASE)


@dataclass(frozen=True)
class AuditEntry:
    """One decision about one dataset of a job."""

    time: float
    job_id: int
    dataset_id: int
    content_hash: str
    trainer: str
    released: bool
    reason: str
    kind: str = RELEASE
    charges: int | None = None
    """The job's on-chain ``charges`` when decided (``None`` in entries written before leases)."""
    retired: bool = False
    provider: str | None = None
    """The depositing provider's address (deposit entries; ``None`` in the others)."""
    abandoned: bool = False
    """A claim release signed on the holder's ``RunAbandoned``: the keys released under the claim
    no longer count against the job's charges."""


class AuditLog:
    """The log file and its chain head."""

    def __init__(self, path: Path) -> None:
        """Open the log and verify it.

        Raises:
            AuditLogTampered: the hash chain on disk is broken.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.generation = 0
        """Incremented whenever the entries in memory are re-loaded from disk (not on appends)."""
        self._load()

    def _fingerprint(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    def _load(self) -> None:
        lines = self._lines()
        self._verify_lines(lines)
        self._entries = [_parse(line) for line in lines]
        self._head = hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS
        self._seen = self._fingerprint()
        self.generation += 1

    def refresh(self) -> bool:
        """Re-load (and re-verify) the log if the file changed since it was loaded or last appended to.

        Returns:
            Whether it was re-loaded (:attr:`generation` then moved on).

        Raises:
            AuditLogTampered: the hash chain on disk is broken.
        """
        if self._fingerprint() == self._seen:
            return False
        self._load()
        return True

    def loaded(self) -> list[AuditEntry]:
        """The entries in memory: verified when loaded, plus those appended since."""
        return list(self._entries)

    def _lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_bytes().split(b"\n") if line]

    def append(
        self,
        *,
        job_id: int,
        dataset_id: int,
        content_hash: bytes,
        trainer: str,
        released: bool,
        reason: str,
        kind: str = RELEASE,
        charges: int | None = None,
        retired: bool = False,
        provider: str | None = None,
        abandoned: bool = False,
    ) -> AuditEntry:
        """Record one decision, chained to the last line (durable when this returns).

        Raises:
            AuditLogTampered: the file changed on disk since it was loaded and its chain is broken.
        """
        self.refresh()
        entry = AuditEntry(
            time.time(), job_id, dataset_id, content_hash.hex(), trainer, released, reason, kind, charges, retired, provider, abandoned
        )
        line = json.dumps({**asdict(entry), "prev": self._head}, sort_keys=True).encode()
        with self.path.open("ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
            st = os.fstat(f.fileno())
        self._head = hashlib.sha256(line).hexdigest()
        self._entries.append(entry)
        self._seen = (st.st_size, st.st_mtime_ns)
        return entry

    def verify(self) -> int:
        """Check the whole chain; returns the number of entries.

        Raises:
            AuditLogTampered: a line was altered, removed, inserted or reordered.
        """
        lines = self._lines()
        self._verify_lines(lines)
        return len(lines)

    def _verify_lines(self, lines: list[bytes]) -> None:
        prev = GENESIS
        for number, line in enumerate(lines, start=1):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise AuditLogTampered(f"{self.path}: line {number} is not JSON") from e
            if doc.get("prev") != prev:
                raise AuditLogTampered(f"{self.path}: chain broken at line {number}")
            prev = hashlib.sha256(line).hexdigest()

    def entries(self, *, content_hash: bytes | None = None, kinds: tuple[str, ...] | None = None) -> list[AuditEntry]:
        """Verified entries, optionally only those of one dataset and/or of some kinds."""
        lines = self._lines()
        self._verify_lines(lines)
        result = [_parse(line) for line in lines]
        return [
            e for e in result
            if (content_hash is None or e.content_hash == content_hash.hex()) and (kinds is None or e.kind in kinds)
        ]  # fmt: skip


_FIELDS = frozenset(AuditEntry.__dataclass_fields__)


def _parse(line: bytes) -> AuditEntry:
    return AuditEntry(**{k: v for k, v in json.loads(line).items() if k in _FIELDS})
