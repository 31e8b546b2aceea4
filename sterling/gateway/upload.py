"""What the gateway accepts as a blob: well-formed Sterling ciphertext, checked as it streams in.

Two layouts (``docs/formats.md``): an encrypted object (``STRL`` header, then chunks) and a
sealed envelope (``STRS`` prefix, an HPKE-wrapped key, then an ``STRL`` object). The header is
checked as soon as its bytes have arrived — magic, version, kind, reserved bits, chunk size —
so a CSV or a plaintext safetensors file is refused after its first bytes; at the end the total
length must be one a STREAM writer produces (whole sealed chunks, the last one at least a tag).
The gateway cannot check the tags (it has no key, by design); the enclave does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

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

    def __init__(self) -> None:
        self._head = bytearray()
        self._layout: tuple[Literal["STRL", "STRS"], dataformat.Header, int] | None = None
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        """Account for the next bytes of the upload.

        Raises:
            UploadRejected: the bytes so far cannot be the start of a Sterling ciphertext.
        """
        self.size += len(chunk)
        if self._layout is None:
            self._head += chunk[: _HEAD_BYTES - len(self._head)]
            self._parse(final=False)

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
            UploadRejected: truncated header, or a length no STREAM writer produces.
        """
        if self._layout is None:
            self._parse(final=True)
        assert self._layout is not None
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
