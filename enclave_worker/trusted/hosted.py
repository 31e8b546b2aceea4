"""Datasets whose ciphertext the host keeps: read by byte range on demand, checked, decrypted chunk by chunk.

A trainer enclave cannot assume a job's datasets fit in its memory, and it does no I/O of its own,
so the ciphertext stays with the host and the enclave asks for byte ranges over its request channel
(:class:`.protocol.HostChannel`; ``docs/enclave-protocol.md``). The host is untrusted; what it
serves is checked three ways:

1. **Content hash.** Before any data key is opened, one sequential pass reads the whole ciphertext
   a span at a time (memory: one span) and compares its SHA-256 with the on-chain content hash
   (:meth:`HostedCiphertext.verify`). The header read at the start is kept; it is never read again.
2. **Fingerprints.** The same pass records a 16-byte fingerprint of every sealed chunk: GMAC
   (AES-256-GCM with an empty plaintext and the chunk as associated data) under a key the enclave
   draws for the run and never reveals, nonce ``uint32(dataset) ‖ uint64(chunk)``. Every later read
   of a chunk is checked against it, so the bytes decrypted are the bytes hashed. GMAC is a
   Carter–Wegman MAC: for bytes chosen without knowledge of the key, a match has probability at
   most ``(blocks + 1) / 2^128``, and the host sees no fingerprint, only that a run failed (which ends
   the run). It costs about as much as the decryption (~14 GB/s here), where a SHA-256 per chunk
   would cost ten times more (~1.2 GB/s).
3. **AEAD.** Each chunk is authenticated at its own position under the data key
   (:class:`.dataformat.ChunkOpener`), which names the damage (tampered, reordered, duplicated,
   truncated). Against the host alone this suffices; the fingerprints add that a host colluding with
   the provider (who holds the data key and could seal other chunks under the same header) cannot
   swap the data either.

Reads during training are sequential scans in a fixed order (:mod:`.trainset`), a span of chunks
per request, each chunk decrypted once per scan.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .dataformat import HEADER_LEN, TAG_LEN, ChunkOpener, Header, Kind, Layout
from .dataset import PackageLayout
from .errors import CiphertextError, CiphertextMalformed, CiphertextTampered, CiphertextTruncated

ReadFn = Callable[[int, int, memoryview], int]
"""Asks the host for ``len(out)`` bytes at ``offset`` of dataset ``index``'s ciphertext, into
``out``: ``(index, offset, out)`` -> how many bytes the host sent (:meth:`.protocol.HostChannel.read_into`)."""

SPAN_BYTES = 1 << 20
"""Plaintext bytes fetched per read request (whole chunks, at least one): a scan holds one span."""
BLOCK_BYTES = 1 << 20
"""Feature bytes per block of rows a scan yields (at least one row)."""
FINGERPRINT_LEN = 16


def span_chunks(chunk_size: int) -> int:
    """Chunks fetched per read request for objects of ``chunk_size``."""
    return max(1, SPAN_BYTES // chunk_size)


class Fingerprints:
    """The run's secret fingerprint key: GMAC of a sealed chunk at its (dataset, chunk) position."""

    def __init__(self) -> None:
        self._mac = AESGCM(secrets.token_bytes(32))

    def of(self, dataset: int, index: int, sealed: bytes | memoryview) -> bytes:
        return self._mac.encrypt(struct.pack(">IQ", dataset, index), b"", sealed)


class HostedCiphertext:
    """One dataset's ciphertext as the host serves it, and what the enclave checked of it.

    Example:
        >>> source = HostedCiphertext(0, content_hash, size, read)  # doctest: +SKIP
        >>> source.verify(Fingerprints())  # the whole ciphertext once: content hash, fingerprints
        >>> package = EncryptedPackage.open(source, data_key)
    """

    def __init__(self, index: int, content_hash: bytes, size: int, read: ReadFn) -> None:
        self.index = index
        self.content_hash = content_hash
        self.size = size
        self._read = read
        self._header_bytes: bytes | None = None
        self._layout: Layout | None = None
        self._fingerprints: Fingerprints | None = None
        self._recorded = bytearray()

    def read_into(self, offset: int, out: memoryview) -> None:
        """Exactly ``len(out)`` bytes at ``offset`` from the host, into ``out``.

        Raises:
            CiphertextTruncated: the host served fewer bytes.
        """
        served = self._read(self.index, offset, out)
        if served != len(out):
            raise CiphertextTruncated(f"dataset {self.index}: the host served {served} of {len(out)} bytes at offset {offset}")

    def read(self, offset: int, length: int) -> bytes:
        """:meth:`read_into` a new buffer."""
        out = bytearray(length)
        self.read_into(offset, memoryview(out))
        return bytes(out)

    def header(self) -> tuple[bytes, Layout]:
        """The header's bytes (read from the host once) and the chunk layout they imply for ``size``.

        Raises:
            CiphertextMalformed: not a dataset ciphertext header.
            CiphertextTruncated: ``size`` is no possible ciphertext length.
        """
        if self._header_bytes is None or self._layout is None:
            raw = self.read(0, HEADER_LEN) if self.size >= HEADER_LEN else self.read(0, self.size)
            header = Header.decode(raw)
            if header.kind != Kind.DATASET:
                raise CiphertextMalformed(f"dataset {self.index}: the ciphertext holds a {header.kind.name.lower()}, expected a dataset")
            self._header_bytes, self._layout = raw, Layout.of(header, self.size)
        return self._header_bytes, self._layout

    @property
    def layout(self) -> Layout:
        return self.header()[1]

    def verify(self, fingerprints: Fingerprints) -> None:
        """Read the whole ciphertext once, a span at a time: check its SHA-256 against the content
        hash and record every chunk's fingerprint. No key is needed.

        Raises:
            CiphertextTampered: the bytes do not hash to the content hash.
            CiphertextTruncated: the host served short reads.
        """
        header_bytes, layout = self.header()
        digest = hashlib.sha256(header_bytes)
        recorded = bytearray(FINGERPRINT_LEN * layout.chunks)
        step = span_chunks(layout.chunk_size)
        span = memoryview(bytearray(step * (layout.chunk_size + TAG_LEN)))
        for first in range(0, layout.chunks, step):
            count = min(step, layout.chunks - first)
            offset, length = layout.span(first, count)
            data = span[:length]
            self.read_into(offset, data)
            digest.update(data)
            for i, sealed in self._split(first, count, data):
                recorded[FINGERPRINT_LEN * i : FINGERPRINT_LEN * (i + 1)] = fingerprints.of(self.index, i, sealed)
        if digest.digest() != self.content_hash:
            raise CiphertextTampered(f"dataset {self.index}: ciphertext does not match its on-chain content hash")
        self._fingerprints, self._recorded = fingerprints, recorded

    def _split(self, first: int, count: int, data: memoryview) -> Iterator[tuple[int, memoryview]]:
        sealed = self.layout.chunk_size + TAG_LEN
        for k in range(count):
            yield first + k, data[k * sealed : (k + 1) * sealed]

    def sealed_chunks(self, first: int, count: int, opener: ChunkOpener, into: memoryview) -> Iterator[tuple[int, memoryview]]:
        """Chunks ``first … first + count - 1`` as the host serves them now (read into ``into``),
        each checked against its fingerprint from :meth:`verify`; yields ``(index, sealed bytes)``.

        Raises:
            CiphertextTruncated: short reads.
            CiphertextTampered: a chunk differs from the one hashed; the subclass (from ``opener``'s
                diagnosis) says what it is instead, e.g. :class:`.CiphertextReordered`.
        """
        if self._fingerprints is None:
            raise RuntimeError("verify() the ciphertext before reading its chunks")
        offset, length = self.layout.span(first, count)
        data = into[:length]
        self.read_into(offset, data)
        for i, sealed in self._split(first, count, data):
            expected = self._recorded[FINGERPRINT_LEN * i : FINGERPRINT_LEN * (i + 1)]
            if not hmac.compare_digest(self._fingerprints.of(self.index, i, sealed), expected):
                raise self._diagnose(opener, i, sealed)
            yield i, sealed

    def _diagnose(self, opener: ChunkOpener, index: int, sealed: memoryview) -> CiphertextError:
        """What a chunk that fails its fingerprint is: the AEAD's diagnosis (another position's
        chunk, flipped bits), or a valid chunk under this key that is not the one hashed."""
        try:
            opener.open(index, sealed, final=self.layout.final(index))
        except CiphertextError as e:
            e.args = (f"dataset {self.index}: {e}",)
            return e
        return CiphertextTampered(f"dataset {self.index}: chunk {index} is not the chunk whose hash was checked")


class PlaintextReader:
    """Sequential reads of plaintext bytes ``[start, end)`` of one hosted dataset: each chunk is
    fetched, checked and decrypted once, a span of chunks at a time."""

    def __init__(self, source: HostedCiphertext, opener: ChunkOpener, start: int, end: int) -> None:
        layout = source.layout
        if not 0 <= start <= end <= layout.plaintext_size:
            raise ValueError(f"plaintext range {start}..{end} outside 0..{layout.plaintext_size}")
        self._source = source
        self._opener = opener
        self._layout = layout
        self._end = end
        self._position = start
        self._span = span_chunks(layout.chunk_size)
        self._buffer = bytearray(self._span * layout.chunk_size)
        self._sealed = memoryview(bytearray(self._span * (layout.chunk_size + TAG_LEN)))
        self._buffer_start = 0  # plaintext offset of the buffer's first byte
        self._buffer_len = 0

    def read_into(self, out: memoryview) -> None:
        """Fill ``out`` (a byte view) with the next ``len(out)`` bytes of the range.

        Raises:
            ValueError: past the range's end.
            CiphertextError: a chunk that fails its fingerprint or its authentication.
        """
        if self._position + len(out) > self._end:
            raise ValueError("read past the end of the plaintext range")
        done = 0
        while done < len(out):
            inside = self._position - self._buffer_start
            if not 0 <= inside < self._buffer_len:
                self._load(self._layout.chunk_of(self._position))
                inside = self._position - self._buffer_start
            take = min(len(out) - done, self._buffer_len - inside)
            out[done : done + take] = memoryview(self._buffer)[inside : inside + take]
            done += take
            self._position += take

    def read(self, n: int) -> bytes:
        out = bytearray(n)
        self.read_into(memoryview(out))
        return bytes(out)

    def _load(self, first: int) -> None:
        last = self._layout.chunk_of(self._end - 1)
        count = min(self._span, last - first + 1)
        view = memoryview(self._buffer)
        size = self._layout.chunk_size
        filled = 0
        for i, sealed in self._source.sealed_chunks(first, count, self._opener, self._sealed):
            n = len(sealed) - TAG_LEN
            self._opener.open_into(i, sealed, view[(i - first) * size : (i - first) * size + n], final=self._layout.final(i))
            filled = (i - first) * size + n
        self._buffer_start, self._buffer_len = first * size, filled


class EncryptedPackage:
    """One provider's dataset package inside a hosted ciphertext, read by blocks of rows.

    Example:
        >>> package = EncryptedPackage.open(source, data_key)  # doctest: +SKIP
        >>> for first_row, features, labels in package.blocks():
        ...     ...
    """

    def __init__(self, source: HostedCiphertext, opener: ChunkOpener, layout: PackageLayout) -> None:
        self.source = source
        self.layout = layout
        self._opener = opener
        self.rows = layout.rows
        self.schema = layout.schema

    @classmethod
    def open(cls, source: HostedCiphertext, key: bytes) -> EncryptedPackage:
        """Open ``source`` (verified) with its data key and read its safetensors header.

        Raises:
            CiphertextError: the header's chunks fail their checks (a wrong key among them).
            InvalidDataset: the plaintext is not a dataset package (:meth:`PackageLayout.parse`).
        """
        header_bytes, layout = source.header()
        opener = ChunkOpener(key, header_bytes, kind=Kind.DATASET)
        size = layout.plaintext_size
        prefix = PlaintextReader(source, opener, 0, min(8, size)).read(min(8, size))
        header_len = PackageLayout.header_length(prefix)
        whole = min(size, 8 + header_len)
        return cls(source, opener, PackageLayout.parse(PlaintextReader(source, opener, 0, whole).read(whole), size))

    def block_rows(self) -> int:
        """Rows per block of :meth:`blocks`."""
        return max(1, BLOCK_BYTES // self.layout.row_bytes)

    def blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """All rows in order, ``(first row, features, labels)`` per block of :meth:`block_rows` rows.

        The arrays are reused for the next block: copy what must outlive it. The reads (two
        sequential streams, the features' and the labels' ranges, interleaved) depend on the
        layout alone, never on the data or on which rows a caller uses.
        """
        layout, rows = self.layout, self.rows
        per_block = self.block_rows()
        features_at, labels_at = layout.features_offset, layout.labels_offset
        features_reader = PlaintextReader(self.source, self._opener, features_at, features_at + rows * layout.row_bytes)
        label_bytes = layout.schema.label_bytes
        labels_reader = PlaintextReader(self.source, self._opener, labels_at, labels_at + label_bytes * rows)
        features = np.empty((per_block, *layout.schema.feature_shape), dtype=np.float32)
        labels = np.empty((per_block, *layout.schema.label_shape), dtype=layout.schema.label_dtype)
        for first in range(0, rows, per_block):
            n = min(per_block, rows - first)
            features_reader.read_into(features.data.cast("B")[: n * layout.row_bytes])
            labels_reader.read_into(labels.data.cast("B")[: label_bytes * n])
            yield first, features[:n], labels[:n]
