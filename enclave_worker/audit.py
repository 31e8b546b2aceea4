"""An append-only, hash-chained log of key-release decisions.

Each line is a JSON object holding one decision and ``prev``, the SHA-256 of the previous line's
bytes (64 zeros for the first), so an edited, removed or reordered entry breaks the chain and
:meth:`AuditLog.verify` names the first bad line. Providers query it for their datasets.

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


@dataclass(frozen=True)
class AuditEntry:
    """One key-release decision."""

    time: float
    job_id: int
    dataset_id: int
    content_hash: str
    trainer: str
    released: bool
    reason: str


class AuditLog:
    """The log file and its chain head."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_bytes().split(b"\n") if line]

    def append(self, *, job_id: int, dataset_id: int, content_hash: bytes, trainer: str, released: bool, reason: str) -> AuditEntry:
        """Record one decision, chained to the last line."""
        entry = AuditEntry(time.time(), job_id, dataset_id, content_hash.hex(), trainer, released, reason)
        lines = self._lines()
        prev = hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS
        line = json.dumps({**asdict(entry), "prev": prev}, sort_keys=True).encode()
        with self.path.open("ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return entry

    def verify(self) -> int:
        """Check the whole chain; returns the number of entries.

        Raises:
            AuditLogTampered: a line was altered, removed, inserted or reordered.
        """
        prev = GENESIS
        lines = self._lines()
        for number, line in enumerate(lines, start=1):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise AuditLogTampered(f"{self.path}: line {number} is not JSON") from e
            if doc.get("prev") != prev:
                raise AuditLogTampered(f"{self.path}: chain broken at line {number}")
            prev = hashlib.sha256(line).hexdigest()
        return len(lines)

    def entries(self, *, content_hash: bytes | None = None) -> list[AuditEntry]:
        """Verified entries, optionally only those of one dataset."""
        self.verify()
        fields = set(AuditEntry.__dataclass_fields__)
        result = [AuditEntry(**{k: v for k, v in json.loads(line).items() if k in fields}) for line in self._lines()]
        if content_hash is None:
            return result
        return [e for e in result if e.content_hash == content_hash.hex()]
