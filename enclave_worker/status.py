"""Live job status for the UI and CLI: the latest stage, epoch and ε spent of each job a worker runs.

Only what the enclave reports as progress is recorded (stage, epoch, ε spent so far), nothing
derived from the providers' data beyond that, and a failed run's reason (the error's type and
first line) with what became of its claim (given back, or left to lapse). One small JSON file per job, replaced atomically,
so a gateway in another process can read it at any time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from marketplace._files import write_atomic

_FIELDS = ("stage", "epoch", "epochs", "epsilon", "datasets", "epsilon_spent", "error", "outcome", "given_back")
_FAILURE_FIELDS = ("error", "outcome", "given_back")
"""Kept only while the latest stage is ``failed``: a later claim of the job starts clean."""


class JobStatusBoard:
    """Latest progress per job, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: int) -> Path:
        return self.root / f"job-{int(job_id)}.json"

    def update(self, job_id: int, event: dict[str, Any]) -> dict[str, Any]:
        """Merge a progress event into the job's status and write it atomically."""
        status = self.get(job_id) or {"job_id": int(job_id)}
        if event.get("stage") not in (None, "failed"):
            for key in _FAILURE_FIELDS:
                status.pop(key, None)
        status.update({k: event[k] for k in _FIELDS if k in event})
        status["updated_at"] = time.time()
        write_atomic(self._path(job_id), json.dumps(status, sort_keys=True).encode())
        return status

    def versions(self) -> dict[int, int]:
        """Every job on the board with its file's modification time (ns), to notice updates cheaply."""
        found: dict[int, int] = {}
        for path in self.root.glob("job-*.json"):
            try:
                found[int(path.stem.removeprefix("job-"))] = path.stat().st_mtime_ns
            except (ValueError, FileNotFoundError):
                continue
        return found

    def get(self, job_id: int) -> dict[str, Any] | None:
        """The job's latest status, or ``None`` if this worker never ran it."""
        try:
            doc = json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            return None
        return doc if isinstance(doc, dict) else None
