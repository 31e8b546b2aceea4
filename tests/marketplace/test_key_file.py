"""The consumer key file: one format written by the CLI and the session, read by ``model fetch``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_worker.trusted import keywrap
from marketplace.key_file import KeyFileInvalid, read_key_file, write_key_file


def test_a_key_file_round_trips_with_mode_0600_and_is_never_written_over(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    path = write_key_file(tmp_path / "keys" / "sterling-job-7-key.json", key, job_id=7)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document == {
        "job_id": 7, "public_key": keywrap.public_key_bytes(key).hex(), "private_key": key.private_bytes_raw().hex()
    }  # fmt: skip
    assert read_key_file(path, job_id=7).private_bytes_raw() == key.private_bytes_raw()
    with pytest.raises(FileExistsError):
        write_key_file(path, X25519PrivateKey.generate(), job_id=7)
    assert json.loads(path.read_text()) == document  # the first key is still there


def test_a_pending_key_file_opens_for_any_job_and_a_job_s_file_only_for_its_job(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    pending = write_key_file(tmp_path / "pending.json", key, job_id=None)
    assert read_key_file(pending, job_id=3).private_bytes_raw() == key.private_bytes_raw()
    saved = write_key_file(tmp_path / "job-2.json", key, job_id=2)
    with pytest.raises(KeyFileInvalid, match=r"holds the key of job 2, not of job 3"):
        read_key_file(saved, job_id=3)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json", "it is not JSON"),
        ('{"job_id": 1}', "32-byte hex private_key"),
        ('{"job_id": 1, "private_key": "abcd"}', "32-byte hex private_key"),
        ("[1, 2]", "32-byte hex private_key"),
    ],
)
def test_what_is_not_a_key_file_is_refused_without_quoting_it(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(KeyFileInvalid, match=says) as refused:
        read_key_file(path, job_id=1)
    assert "abcd" not in str(refused.value)


def test_a_missing_key_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(KeyFileInvalid, match=r"cannot read .*missing.json: No such file"):
        read_key_file(tmp_path / "missing.json", job_id=1)
