"""A content-addressed blob store on the local file system.

Blobs are stored under their SHA-256 (``<root>/sha256/<aa>/<hex>``), written atomically, and
verified on every read, so an untrusted store can lose data but cannot alter it unnoticed.
Only ciphertext is ever stored here. The same interface fits any S3-compatible service.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from ._files import write_atomic
from .errors import BlobNotFound, CiphertextTampered

logger = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20


def _check_hex(digest: str) -> str:
    d = digest.lower().removeprefix("0x")
    if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return d


class BlobStore:
    """Content-addressed storage rooted at a directory.

    Example:
        >>> store = BlobStore(tmp_path)  # doctest: +SKIP
        >>> digest = store.put(b"ciphertext")
        >>> store.get(digest) == b"ciphertext"
        True
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        d = _check_hex(digest)
        return self.root / "sha256" / d[:2] / d

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            write_atomic(target, data)
            logger.info("stored blob %s (%d bytes)", digest, len(data))
        return digest

    def put_stream(self, src: BinaryIO) -> str:
        """Store a stream without holding it in memory; returns its SHA-256 hex digest."""
        h = hashlib.sha256()
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(_READ_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            digest = h.hexdigest()
            target = self.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    @property
    def staging_dir(self) -> Path:
        """Where uploads are streamed before :meth:`commit` (their files are removed if the upload fails)."""
        return self.root / "tmp"

    def staging_file(self) -> Path:
        """A new empty file on the store's file system, to stream an upload into before :meth:`commit`."""
        tmp_dir = self.staging_dir
        tmp_dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        os.close(fd)
        return Path(tmp)

    def commit(self, staged: Path, digest: str) -> str:
        """Move a staged file whose SHA-256 the caller computed into place (atomically); returns the digest.

        The caller hashes while it writes (one pass over a large upload); reads still verify.
        """
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        logger.info("stored blob %s (%d bytes)", _check_hex(digest), target.stat().st_size)
        return _check_hex(digest)

    def get(self, digest: str) -> bytes:
        """Read a blob and check it still hashes to ``digest``.

        Raises:
            BlobNotFound: no such blob.
            CiphertextTampered: the stored bytes no longer match their hash.
        """
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError as e:
            raise BlobNotFound(f"no blob {_check_hex(digest)} in {self.root}") from e
        if hashlib.sha256(data).hexdigest() != _check_hex(digest):
            raise CiphertextTampered(f"blob {digest} was altered in storage")
        return data

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def digests(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every stored blob's digest with its file status (size, modification time), in no order."""
        for shard in (self.root / "sha256").iterdir():
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if len(entry.name) == 64 and entry.is_file():
                    try:
                        yield entry.name, entry.stat()
                    except FileNotFoundError:  # deleted meanwhile
                        continue

    def delete(self, digest: str) -> bool:
        """Remove a blob (garbage collection); ``False`` if it was not there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        logger.info("deleted blob %s", _check_hex(digest))
        return True


class BlobAccess(Protocol):
    """What a trainer worker needs of blob storage: a local :class:`BlobStore`, or a
    :class:`~marketplace.remote_blobs.GatewayBlobStore` on another machine's gateway."""

    @property
    def root(self) -> Path: ...

    def path(self, digest: str) -> Path: ...

    def get(self, digest: str) -> bytes: ...

    def has(self, digest: str) -> bool: ...

    def put(self, data: bytes) -> str: ...
