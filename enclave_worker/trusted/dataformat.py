"""Sterling's chunked authenticated-encryption format (STREAM construction over AES-256-GCM).

Layout of a ciphertext (all integers big-endian)::

    header (52 bytes)
      magic        4  b"STRL"
      version      1  1
      kind         1  1 = dataset, 2 = model
      reserved     2  0
      chunk_size   4  plaintext bytes per chunk (every chunk but the last is full)
      nonce_prefix 8  random per object
      context     32  what the object is bound to (e.g. a dataset uid or a job binding)
    chunk 0 .. n-1: AES-256-GCM(ciphertext || 16-byte tag) of up to chunk_size plaintext bytes

Chunk ``i`` uses nonce ``nonce_prefix || uint32(i)`` and associated data
``header || uint64(i) || final_flag``; the last chunk (possibly empty) has ``final_flag = 1``.
So a flipped bit, a reordered or duplicated chunk, a wrong key or a wrong context fails
authentication, a stream cut at a chunk boundary is detected as truncated, and bytes after the
final chunk are rejected. A fresh random data key is used for every object, so counter nonces
never repeat under one key. See ``docs/formats.md``.
"""

from __future__ import annotations

import enum
import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import (
    CiphertextDuplicated,
    CiphertextError,
    CiphertextMalformed,
    CiphertextReordered,
    CiphertextTampered,
    CiphertextTrailingData,
    CiphertextTruncated,
)

MAGIC = b"STRL"
VERSION = 1
HEADER_LEN = 52
TAG_LEN = 16
KEY_LEN = 32
DEFAULT_CHUNK_SIZE = 1 << 20
DIAGNOSIS_WINDOW = 64
"""How many positions around a failing chunk are tried to tell reordering and duplication from bit flips."""
MIN_CHUNK_SIZE = 1 << 10
MAX_CHUNK_SIZE = 1 << 24
_HEADER = struct.Struct(">4sBBHI8s32s")


class Kind(enum.IntEnum):
    """What a ciphertext holds; checked on decryption so one kind cannot stand in for another."""

    DATASET = 1
    MODEL = 2


@dataclass(frozen=True)
class Header:
    """The parsed fixed header of a Sterling ciphertext."""

    kind: Kind
    chunk_size: int
    nonce_prefix: bytes
    context: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, int(self.kind), 0, self.chunk_size, self.nonce_prefix, self.context)

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        """Parse and validate a header.

        Raises:
            CiphertextMalformed: wrong length, magic, version, kind or chunk size.
        """
        if len(raw) != HEADER_LEN:
            raise CiphertextMalformed(f"ciphertext header is {len(raw)} bytes, expected {HEADER_LEN}")
        magic, version, kind, reserved, chunk_size, prefix, context = _HEADER.unpack(raw)
        if magic != MAGIC:
            raise CiphertextMalformed("not a Sterling ciphertext (bad magic)")
        if version != VERSION:
            raise CiphertextMalformed(f"unsupported ciphertext version {version} (this build reads {VERSION})")
        if kind not in (k.value for k in Kind):
            raise CiphertextMalformed(f"unknown ciphertext kind {kind}")
        if reserved != 0:
            raise CiphertextMalformed("reserved header bits are set")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise CiphertextMalformed(f"chunk size {chunk_size} outside [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
        return cls(kind=Kind(kind), chunk_size=chunk_size, nonce_prefix=prefix, context=context)


def new_data_key() -> bytes:
    """A fresh random 256-bit data key (one per object)."""
    return AESGCM.generate_key(bit_length=256)


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= 1 << 32:
        raise CiphertextMalformed("object has more than 2**32 chunks")
    return prefix + struct.pack(">I", index)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if final else 0)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"data key must be {KEY_LEN} bytes, got {len(key)}")


def _check_context(context: bytes) -> None:
    if len(context) != 32:
        raise ValueError(f"context must be 32 bytes, got {len(context)}")


def _read_full(src: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    remaining = n
    while remaining:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    kind: Kind,
    context: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; memory use is one chunk.

    Returns:
        The number of ciphertext bytes written.
    """
    _check_key(key)
    _check_context(context)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} outside [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    header = Header(kind=kind, chunk_size=chunk_size, nonce_prefix=os.urandom(8), context=context).encode()
    aead = AESGCM(key)
    dst.write(header)
    written = len(header)
    index = 0
    out = bytearray(chunk_size + TAG_LEN)  # reused for every chunk: memory stays at two chunks
    view = memoryview(out)
    current = _read_full(src, chunk_size)
    while True:
        following = _read_full(src, chunk_size) if len(current) == chunk_size else b""
        final = not following
        n = len(current) + TAG_LEN
        aead.encrypt_into(_nonce(header[12:20], index), current, _aad(header, index, final), view[:n])
        dst.write(view[:n])
        written += n
        if final:
            return written
        index += 1
        current = following


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    kind: Kind,
    context: bytes | None = None,
) -> Header:
    """Decrypt and authenticate a stream written by :func:`encrypt_stream`.

    Plaintext of a chunk is written only after that chunk authenticated; a caller that must not
    act on partial output should decrypt into a buffer it discards on error.

    Raises:
        CiphertextMalformed: header invalid, wrong kind, or wrong context.
        CiphertextTampered: a chunk failed authentication (bit flips, wrong key).
        CiphertextReordered / CiphertextDuplicated: a chunk authenticates at another position.
        CiphertextTruncated: the stream ended before its final chunk.
        CiphertextTrailingData: bytes follow the final chunk.
    """
    _check_key(key)
    header_bytes = _read_full(src, HEADER_LEN)
    header = Header.decode(header_bytes)
    if header.kind != kind:
        raise CiphertextMalformed(f"ciphertext holds a {header.kind.name.lower()}, expected a {kind.name.lower()}")
    if context is not None and header.context != context:
        raise CiphertextMalformed("ciphertext is bound to another context than the one expected")
    aead = AESGCM(key)
    sealed_len = header.chunk_size + TAG_LEN
    index = 0
    out = bytearray(header.chunk_size)  # reused for every chunk
    view = memoryview(out)
    current = _read_full(src, sealed_len)
    while True:
        if len(current) < TAG_LEN:
            raise CiphertextTruncated(f"ciphertext ends inside chunk {index}")
        following = _read_full(src, sealed_len) if len(current) == sealed_len else b""
        nonce = _nonce(header.nonce_prefix, index)
        final = not following
        n = len(current) - TAG_LEN
        try:
            aead.decrypt_into(nonce, current, _aad(header_bytes, index, final), view[:n])
        except InvalidTag:
            raise _diagnose(aead, header, header_bytes, current, index, final) from None
        dst.write(view[:n])
        if final:
            return header
        index += 1
        current = following


def _diagnose(aead: AESGCM, header: Header, header_bytes: bytes, sealed: bytes, index: int, final: bool) -> CiphertextError:
    """Name what is wrong with a chunk that failed authentication at position ``index``.

    Only runs on the error path: tries the chunk at its own position with the other final flag
    (truncation, appended data), then at nearby positions (reordering, duplication).
    """
    own_nonce = _nonce(header.nonce_prefix, index)
    if final and _opens(aead, own_nonce, sealed, _aad(header_bytes, index, False)):
        return CiphertextTruncated(f"ciphertext ends after chunk {index}, before its final chunk")
    if not final and _opens(aead, own_nonce, sealed, _aad(header_bytes, index, True)):
        return CiphertextTrailingData(f"data follows the final chunk {index}")
    for other in range(max(0, index - DIAGNOSIS_WINDOW), index + DIAGNOSIS_WINDOW + 1):
        if other == index or other >= 1 << 32:
            continue
        nonce = _nonce(header.nonce_prefix, other)
        if any(_opens(aead, nonce, sealed, _aad(header_bytes, other, flag)) for flag in (False, True)):
            if other < index:
                return CiphertextDuplicated(f"chunk {index} is a copy of chunk {other} (or chunks were reordered)")
            return CiphertextReordered(f"chunk {index} belongs at position {other}: chunks were reordered or removed")
    return CiphertextTampered(f"chunk {index} failed authentication (altered bytes, wrong key, or cut inside the chunk)")


def _opens(aead: AESGCM, nonce: bytes, sealed: bytes, aad: bytes) -> bool:
    try:
        aead.decrypt(nonce, sealed, aad)
    except InvalidTag:
        return False
    return True


def encrypt_bytes(plaintext: bytes, key: bytes, *, kind: Kind, context: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """Encrypt an in-memory buffer; see :func:`encrypt_stream`."""
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), out, key, kind=kind, context=context, chunk_size=chunk_size)
    return out.getvalue()


def decrypt_bytes(ciphertext: bytes, key: bytes, *, kind: Kind, context: bytes | None = None) -> bytes:
    """Decrypt an in-memory buffer; see :func:`decrypt_stream`."""
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(ciphertext), out, key, kind=kind, context=context)
    return out.getvalue()


@dataclass(frozen=True)
class Layout:
    """Where each sealed chunk of a ciphertext of ``size`` bytes lies: the map for reading chunks
    out of order (random access), as the trainer does with a dataset the host keeps.

    Every chunk but the last holds ``chunk_size`` plaintext bytes; the last (the one with the final
    flag) holds 0 … ``chunk_size``, and is empty only when the whole plaintext is.
    """

    size: int
    chunk_size: int
    chunks: int

    @classmethod
    def of(cls, header: Header, size: int) -> Layout:
        """The layout of a ciphertext of ``size`` bytes (header included) under ``header``.

        Raises:
            CiphertextTruncated: ``size`` ends before the first chunk's tag or inside a chunk's tag.
            CiphertextMalformed: more than 2**32 chunks.
        """
        body = size - HEADER_LEN
        sealed = header.chunk_size + TAG_LEN
        if body < TAG_LEN:
            raise CiphertextTruncated("ciphertext ends before its first chunk")
        chunks = -(-body // sealed)
        if body - (chunks - 1) * sealed < TAG_LEN:
            raise CiphertextTruncated(f"ciphertext ends inside chunk {chunks - 1}")
        if chunks > 1 << 32:
            raise CiphertextMalformed("object has more than 2**32 chunks")
        return cls(size=size, chunk_size=header.chunk_size, chunks=chunks)

    @property
    def plaintext_size(self) -> int:
        return self.size - HEADER_LEN - self.chunks * TAG_LEN

    def span(self, first: int, count: int = 1) -> tuple[int, int]:
        """``(offset, length)`` in the ciphertext of the sealed chunks ``first … first + count - 1``."""
        if not (first >= 0 and count >= 1 and first + count <= self.chunks):
            raise ValueError(f"chunks {first}..{first + count - 1} outside 0..{self.chunks - 1}")
        sealed = self.chunk_size + TAG_LEN
        start = HEADER_LEN + first * sealed
        return start, min(self.size, start + count * sealed) - start

    def final(self, index: int) -> bool:
        return index == self.chunks - 1

    def chunk_of(self, plaintext_offset: int) -> int:
        """The chunk holding plaintext byte ``plaintext_offset``."""
        return plaintext_offset // self.chunk_size


class ChunkOpener:
    """Decrypts single chunks of one object at their positions (random access), under its key and header.

    Example:
        >>> opener = ChunkOpener(key, header_bytes, kind=Kind.DATASET)  # doctest: +SKIP
        >>> plaintext = opener.open(3, sealed_chunk_3, final=False)
    """

    def __init__(self, key: bytes, header_bytes: bytes, *, kind: Kind, context: bytes | None = None) -> None:
        """
        Raises:
            CiphertextMalformed: the header is invalid, or of another kind or context.
        """
        _check_key(key)
        header = Header.decode(header_bytes)
        if header.kind != kind:
            raise CiphertextMalformed(f"ciphertext holds a {header.kind.name.lower()}, expected a {kind.name.lower()}")
        if context is not None and header.context != context:
            raise CiphertextMalformed("ciphertext is bound to another context than the one expected")
        self.header = header
        self._header_bytes = bytes(header_bytes)
        self._aead = AESGCM(key)

    def open(self, index: int, sealed: bytes | memoryview, *, final: bool) -> bytes:
        """The plaintext of chunk ``index``, released only once its tag verified at that position.

        Raises:
            CiphertextTampered (or CiphertextReordered / CiphertextDuplicated): the bytes do not
                authenticate as chunk ``index``; the subclass names what they are instead.
            CiphertextTruncated: the bytes are a non-final chunk found where the final one belongs,
                or shorter than a tag.
            CiphertextTrailingData: the final chunk found where a non-final one belongs.
        """
        out = bytearray(max(0, len(sealed) - TAG_LEN))
        self.open_into(index, sealed, out, final=final)
        return bytes(out)

    def open_into(self, index: int, sealed: bytes | memoryview, out: bytearray | memoryview, *, final: bool) -> None:
        """:meth:`open`, writing the plaintext into ``out`` (exactly ``len(sealed) - 16`` bytes); ``out``
        holds nothing usable if it raises."""
        if len(sealed) < TAG_LEN:
            raise CiphertextTruncated(f"ciphertext ends inside chunk {index}")
        try:
            self._aead.decrypt_into(_nonce(self.header.nonce_prefix, index), sealed, _aad(self._header_bytes, index, final), out)
        except InvalidTag:
            raise _diagnose(self._aead, self.header, self._header_bytes, bytes(sealed), index, final) from None
