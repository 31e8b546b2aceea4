"""The consumer key file: the X25519 key a job's model is sealed to, saved where its consumer keeps it.

One format for everyone who writes or reads it: the web UI (``web/js``, which saves the same JSON),
``sterling job create``, :meth:`marketplace.session.Job.save_key` and ``sterling model fetch``::

    {"job_id": 7, "public_key": "<32 bytes, hex>", "private_key": "<32 bytes, hex>"}

``job_id`` is ``null`` while the job is being created (its id is known only from the transaction).
A key file is written with mode 0600 and never over another file: a lost key is a lost model.

Example:
    >>> path = write_key_file(Path("sterling-job-7-key.json"), key, job_id=7)  # doctest: +SKIP
    >>> key = read_key_file(path, job_id=7)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_worker.trusted import keywrap

from .errors import SterlingError


class KeyFileInvalid(SterlingError):
    """Not a readable consumer key file, or one saved for another job (the message never quotes the key)."""


def key_document(key: X25519PrivateKey, *, job_id: int | None) -> dict[str, Any]:
    """The file's JSON for ``key`` (``job_id`` ``None`` until the job exists)."""
    return {
        "job_id": None if job_id is None else int(job_id),
        "public_key": keywrap.public_key_bytes(key).hex(),
        "private_key": key.private_bytes_raw().hex(),
    }


def write_key_file(path: Path, key: X25519PrivateKey, *, job_id: int | None) -> Path:
    """Write ``key`` to ``path`` (its folder made if missing), mode 0600, synced to disk.

    Raises:
        FileExistsError: ``path`` exists; it is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(key_document(key, job_id=job_id), out)
        out.flush()
        os.fsync(out.fileno())
    return path


def read_key_file(path: Path, *, job_id: int) -> X25519PrivateKey:
    """The consumer key saved in ``path`` for job ``job_id`` (a file saved with no job id is taken for any).

    Raises:
        KeyFileInvalid: unreadable, not a key file, or saved for another job.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise KeyFileInvalid(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise KeyFileInvalid(f"{path} is not a Sterling consumer key file (it is not JSON)") from e
    try:
        key = X25519PrivateKey.from_private_bytes(bytes.fromhex(str(document["private_key"]).removeprefix("0x")))
    except (ValueError, KeyError, TypeError) as e:
        raise KeyFileInvalid(f"{path} is not a Sterling consumer key file (JSON with a 32-byte hex private_key)") from e
    saved_for = document.get("job_id")
    if saved_for is not None and int(saved_for) != int(job_id):
        raise KeyFileInvalid(f"{path} holds the key of job {saved_for}, not of job {job_id}")
    return key
