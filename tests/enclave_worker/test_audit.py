"""The hash-chained key-release audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave_worker.audit import AuditLog, AuditLogTampered


def _log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for job, released in ((1, True), (2, False), (3, True)):
        log.append(job_id=job, dataset_id=7, content_hash=bytes([job]) * 32, trainer="0xT", released=released, reason="r")
    return log


def test_entries_are_chained_and_queryable_per_dataset(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert log.verify() == 3
    assert [e.job_id for e in log.entries()] == [1, 2, 3]
    assert [e.released for e in log.entries(content_hash=bytes([2]) * 32)] == [False]


@pytest.mark.parametrize("damage", ["edit", "remove_middle", "swap", "insert"])
def test_any_edit_breaks_the_chain(tmp_path: Path, damage: str) -> None:
    log = _log(tmp_path)
    lines = log.path.read_bytes().split(b"\n")[:-1]
    if damage == "edit":
        lines[1] = lines[1].replace(b'"released": false', b'"released": true')
    elif damage == "remove_middle":
        del lines[1]
    elif damage == "swap":
        lines[0], lines[1] = lines[1], lines[0]
    else:
        lines.insert(1, lines[0])
    log.path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AuditLogTampered, match="line"):
        log.entries()
