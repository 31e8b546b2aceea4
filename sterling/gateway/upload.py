"""What the gateway accepts as a blob: well-formed Sterling ciphertext, checked as it streams in.

Two layouts (``docs/formats.md``): an encrypted object (``STRL`` header, then chunks) and a
sealed envelope (``STRS`` prefix, an HPKE-wrapped key, then an ``STRL`` object). The header is
checked as soon as its bytes have arrived — magic, version, kind, reserved bits, chunk size —
so a CSV or a plaintext safetensors file is refused after its first bytes; at the end the total
length must be one a STREAM writer produces (whole sealed chunks, the last one at least a tag).
The gateway cannot check the tags (it has no key, by design); the enclave does.

It can check that the payload looks like ciphertext, though: AES-GCM output is uniformly
random, so every 64 KiB window after the header must have a byte histogram a random source
could produce (:class:`EntropyCheck`). Plaintext behind a copied ``STRL`` header (a CSV, a
float array) fails at its first window.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np

from enclave_worker.trusted import dataformat, sealing
from marketplace.errors import CiphertextMalformed
from sterling.gateway.errors import UploadRejected

_ENVELOPE_PREFIX = struct.Struct(">4sBH")
_MAX_CHUNKS = 1 << 32
_HEAD_BYTES = _ENVELOPE_PREFIX.size + sealing.MAX_WRAPPED_LEN + dataformat.HEADER_LEN
"""The longest header: an envelope prefix, the largest wrapped key, the STRL header."""


@dataclass(frozen=True)
class CiphertextLayout:
    """The parsed framing of an accepted upload."""

    format: Literal["STRL", "STRS"]
    kind: dataformat.Kind
    chunk_size: int
    header_end: int
    chunks: int


ENTROPY_WINDOW = 1 << 16
"""Payload bytes judged at a time (the last, shorter window too, from :data:`ENTROPY_MIN_BYTES`)."""
ENTROPY_MIN_BYTES = 64
_TEXT_BYTES = np.zeros(256, dtype=bool)
_TEXT_BYTES[[9, 10, 13, *range(32, 127)]] = True
_TEXT_SHARE = float(_TEXT_BYTES.sum()) / 256
"""The share of printable ASCII among uniformly random bytes (98/256)."""
_Z_MAX = 8.0
"""How many standard deviations from random a window may stray (a false alarm about 1e-15 per window)."""
_CHI2_MIN_BYTES = 1024
_CHI2_MAX = 512.0
"""Byte-histogram chi-square bound (255 degrees of freedom: mean 255, sd 22.6; 512 is over 9 sd out)."""


def plaintext_evidence(window: bytes) -> str | None:
    """Why ``window`` cannot be uniformly random bytes, or ``None`` if it could be.

    Two cheap tests on the byte histogram: the share of printable ASCII (text, CSV, JSON) and,
    for windows of 1 KiB or more, Pearson's chi-square against the uniform distribution (binary
    plaintext: float arrays, zero padding, …).
    """
    n = len(window)
    counts = np.bincount(np.frombuffer(window, dtype=np.uint8), minlength=256)
    text = float(counts[_TEXT_BYTES].sum()) / n
    share = f"{text:.0%} printable text, random data about {_TEXT_SHARE:.0%}"
    if n >= _CHI2_MIN_BYTES:
        expected = n / 256
        chi2 = float(((counts - expected) ** 2).sum() / expected)
        if chi2 > _CHI2_MAX:
            return f"its byte histogram is far from uniform (chi-square {chi2:.0f}, random data stays under {_CHI2_MAX:.0f}; {share})"
    if (text - _TEXT_SHARE) / math.sqrt(_TEXT_SHARE * (1 - _TEXT_SHARE) / n) > _Z_MAX:
        return f"too many of its bytes are printable text ({share})"
    return None


class EntropyCheck:
    """Refuses a payload whose bytes do not look like ciphertext, window by window as they stream in.

    Example:
        >>> check = EntropyCheck()
        >>> check.feed(b"age,glucose,label\\n" * 4096)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        sterling.gateway.errors.UploadRejected: payload bytes 0…65536 do not look like ciphertext: ...
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._judged = 0

    def feed(self, data: bytes) -> None:
        """Account for the next payload bytes.

        Raises:
            UploadRejected: a complete window looks like plaintext.
        """
        self._pending += data
        while len(self._pending) >= ENTROPY_WINDOW:
            self._judge(bytes(self._pending[:ENTROPY_WINDOW]))
            del self._pending[:ENTROPY_WINDOW]

    def finish(self) -> None:
        """Judge the last, partial window (if it is long enough to say anything)."""
        if len(self._pending) >= ENTROPY_MIN_BYTES:
            self._judge(bytes(self._pending))
        self._pending.clear()

    def _judge(self, window: bytes) -> None:
        evidence = plaintext_evidence(window)
        if evidence is not None:
            start = self._judged
            raise UploadRejected(
                f"payload bytes {start}…{start + len(window)} after the header do not look like ciphertext: {evidence}. "
                "Encrypted data is uniformly random; the gateway stores only data encrypted by the client (docs/formats.md)"
            )
        self._judged += len(window)


def _describe(head: bytes) -> str:
    """A hint at what an unrecognised upload looks like (so the message says more than 'bad magic')."""
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27:
        return "it looks like a plaintext safetensors file"
    if head.startswith(b"PK\x03\x04"):
        return "it looks like a ZIP/NPZ archive"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:64]):
        return "it looks like plaintext text (CSV, JSON, …)"
    return f"it starts with {head[:8].hex() or 'nothing'}"


class CiphertextCheck:
    """Incremental validation of one upload: :meth:`feed` every chunk, then :meth:`finish`.

    Example:
        >>> check = CiphertextCheck()
        >>> check.feed(dataformat.encrypt_bytes(b"x", bytes(32), kind=dataformat.Kind.DATASET, context=bytes(32)))
        >>> check.finish().format
        'STRL'
    """

    def __init__(self, *, entropy: bool = True) -> None:
        self._head = bytearray()
        self._layout: tuple[Literal["STRL", "STRS"], dataformat.Header, int] | None = None
        self._entropy: EntropyCheck | None = EntropyCheck() if entropy else None
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        """Account for the next bytes of the upload.

        Raises:
            UploadRejected: the bytes so far cannot be the start of a Sterling ciphertext.
        """
        self.size += len(chunk)
        if self._layout is None:
            before = bytes(self._head)  # every earlier byte: the header was still incomplete
            self._head += chunk[: _HEAD_BYTES - len(self._head)]
            self._parse(final=False)
            self._payload_from_start(before + chunk)
        elif self._entropy is not None:
            self._entropy.feed(chunk)

    def _payload_from_start(self, received: bytes) -> None:
        """Hand the payload bytes among ``received`` (the upload so far) to the entropy check, once the header is known."""
        if self._layout is not None and self._entropy is not None:
            self._entropy.feed(received[self._layout[2] :])

    def _parse(self, *, final: bool) -> None:
        head = bytes(self._head)
        if len(head) < 4:
            if final:
                raise UploadRejected(f"upload is {self.size} bytes, too short for a Sterling ciphertext header")
            return
        magic = head[:4]
        if magic == dataformat.MAGIC:
            header_end = dataformat.HEADER_LEN
            name: Literal["STRL", "STRS"] = "STRL"
        elif magic == sealing.ENVELOPE_MAGIC:
            if len(head) < _ENVELOPE_PREFIX.size:
                if final:
                    raise UploadRejected("upload ends inside the sealed-envelope prefix")
                return
            _, version, wrapped_len = _ENVELOPE_PREFIX.unpack_from(head)
            if version != sealing.ENVELOPE_VERSION:
                raise UploadRejected(f"unsupported sealed-envelope version {version} (this gateway accepts {sealing.ENVELOPE_VERSION})")
            if not 0 < wrapped_len <= sealing.MAX_WRAPPED_LEN:
                raise UploadRejected(f"sealed envelope declares a wrapped key of {wrapped_len} bytes (1…{sealing.MAX_WRAPPED_LEN} allowed)")
            header_end = _ENVELOPE_PREFIX.size + wrapped_len + dataformat.HEADER_LEN
            name = "STRS"
        else:
            raise UploadRejected(
                f"not a Sterling ciphertext: expected magic STRL (encrypted object) or STRS (sealed envelope), "
                f"but {_describe(head)}. The gateway stores only data encrypted by the client (docs/formats.md)"
            )
        if len(head) < header_end:
            if final:
                raise UploadRejected(f"upload is {self.size} bytes and ends inside the {header_end}-byte {name} header")
            return
        try:
            header = dataformat.Header.decode(head[header_end - dataformat.HEADER_LEN : header_end])
        except CiphertextMalformed as e:
            raise UploadRejected(f"malformed {name} header: {e}") from e
        self._layout = (name, header, header_end)

    def finish(self) -> CiphertextLayout:
        """Check the complete upload's framing.

        Raises:
            UploadRejected: truncated header, a length no STREAM writer produces, or a payload tail
                that looks like plaintext.
        """
        if self._layout is None:
            self._parse(final=True)
        assert self._layout is not None
        if self._entropy is not None:
            self._entropy.finish()
        name, header, header_end = self._layout
        body = self.size - header_end
        sealed_chunk = header.chunk_size + dataformat.TAG_LEN
        if body < dataformat.TAG_LEN:
            raise UploadRejected(
                f"{name} ciphertext has no final chunk ({body} bytes after the header, a chunk needs at least {dataformat.TAG_LEN})"
            )
        full, rest = divmod(body, sealed_chunk)
        if 0 < rest < dataformat.TAG_LEN:
            raise UploadRejected(f"{name} ciphertext ends inside a chunk tag ({rest} bytes after {full} whole chunks)")
        chunks = full + (1 if rest else 0)
        if chunks > _MAX_CHUNKS:
            raise UploadRejected(f"{name} ciphertext has {chunks} chunks, more than the format allows")
        return CiphertextLayout(format=name, kind=header.kind, chunk_size=header.chunk_size, header_end=header_end, chunks=chunks)
