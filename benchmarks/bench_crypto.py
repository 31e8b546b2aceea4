"""Throughput and memory of the Sterling ciphertext format against raw AES-256-GCM.

``make bench-crypto`` (or ``python -m benchmarks.bench_crypto --size-mib 1024``) measures two
things on a dataset of the given size:

- **throughput** — alternating order over several rounds, encryption reads the same 1 MiB
  plaintext buffer over and over and decryption reads a ciphertext file from the page cache;
  both write to a counting sink, so disk writes do not drown the crypto. Sterling's format
  (:mod:`enclave_worker.trusted.dataformat`) and bare AES-256-GCM (same buffers, same 1 MiB
  chunks and nonces, the same in-place ``encrypt_into``/``decrypt_into``, no framing or checks) run side by side;
  the ratio is raw time / Sterling time for encrypt + decrypt (1.0 = no overhead);
- **memory** — the growth of the process's peak resident memory while a file of that size is
  encrypted and decrypted file-to-file by the streaming API. The last line reads
``bench-crypto: ratio to raw AES-GCM X.XX, peak memory growth N MiB``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_worker.trusted import dataformat

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK = dataformat.DEFAULT_CHUNK_SIZE


@dataclass(frozen=True)
class CryptoBench:
    """Medians (seconds) and the derived figures."""

    size_bytes: int
    sterling_encrypt: float
    sterling_decrypt: float
    raw_encrypt: float
    raw_decrypt: float
    peak_growth_mib: float

    @property
    def ratio(self) -> float:
        """Raw AES-GCM time over Sterling time for encrypt + decrypt (higher is better, 1.0 = parity)."""
        return (self.raw_encrypt + self.raw_decrypt) / (self.sterling_encrypt + self.sterling_decrypt)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _write_input(path: Path, size: int) -> None:
    block = os.urandom(CHUNK)
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            out.write(block[: min(CHUNK, remaining)])
            remaining -= CHUNK


class _RepeatReader(io.RawIOBase):
    """Reads the same block again and again until ``total`` bytes were served (no I/O)."""

    def __init__(self, block: bytes, total: int) -> None:
        self._view, self._left = memoryview(block), total

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = min(self._left, len(self._view) if n < 0 else n, len(self._view))
        self._left -= n
        return bytes(self._view[:n])


class _CountingSink(io.RawIOBase):
    """Discards what is written, counting it."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer) -> int:
        n = memoryview(b).nbytes
        self.count += n
        return n


def _as_binary(stream: io.RawIOBase) -> BinaryIO:
    """``stream`` typed as the ``BinaryIO`` the stream APIs take: they only call ``read``/``write`` on it."""
    return cast(BinaryIO, stream)


def _raw_encrypt(block: bytes, size: int, key: bytes, prefix: bytes, dst: BinaryIO) -> None:
    aead, src = AESGCM(key), _RepeatReader(block, size)
    out = memoryview(bytearray(CHUNK + dataformat.TAG_LEN))
    index = 0
    while chunk := src.read(CHUNK):
        n = len(chunk) + dataformat.TAG_LEN
        aead.encrypt_into(prefix + struct.pack(">I", index), chunk, None, out[:n])
        dst.write(out[:n])
        index += 1


def _raw_decrypt(src: BinaryIO, key: bytes, prefix: bytes, dst: BinaryIO) -> None:
    aead = AESGCM(key)
    out = memoryview(bytearray(CHUNK))
    index = 0
    while chunk := src.read(CHUNK + dataformat.TAG_LEN):
        n = len(chunk) - dataformat.TAG_LEN
        aead.decrypt_into(prefix + struct.pack(">I", index), chunk, None, out[:n])
        dst.write(out[:n])
        index += 1


def _sterling_encrypt(block: bytes, size: int, key: bytes, dst: BinaryIO) -> None:
    src = _as_binary(_RepeatReader(block, size))
    dataformat.encrypt_stream(src, dst, key, kind=dataformat.Kind.DATASET, context=bytes(32), chunk_size=CHUNK)


def _sterling_decrypt(src: BinaryIO, key: bytes, dst: BinaryIO) -> None:
    dataformat.decrypt_stream(src, dst, key, kind=dataformat.Kind.DATASET, context=bytes(32))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _streaming_peak_growth(base: Path, size: int) -> float:
    """Peak-RSS growth (MiB) while a ``size``-byte file is encrypted and decrypted file to file."""
    plain, sealed, back = base / "plain", base / "sealed", base / "back"
    _write_input(plain, size)
    key = dataformat.new_data_key()
    before = _peak_rss_mib()
    with plain.open("rb") as fin, sealed.open("wb") as fout:
        dataformat.encrypt_stream(fin, fout, key, kind=dataformat.Kind.DATASET, context=bytes(32), chunk_size=CHUNK)
    with sealed.open("rb") as fin, back.open("wb") as fout:
        dataformat.decrypt_stream(fin, fout, key, kind=dataformat.Kind.DATASET, context=bytes(32))
    growth = _peak_rss_mib() - before
    if back.stat().st_size != size:
        raise RuntimeError("streaming round trip lost data")
    for path in (plain, sealed, back):
        path.unlink()
    return max(growth, 0.0)


def run(size_bytes: int, *, rounds: int = 9, workdir: Path | None = None) -> CryptoBench:
    """Run the benchmark for a ``size_bytes`` dataset, files under ``workdir`` (a temporary directory by default)."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="sterling-bench-crypto-") as tmp:
        base = Path(tmp)
        growth = _streaming_peak_growth(base, size_bytes)
        block, key, prefix = os.urandom(CHUNK), dataformat.new_data_key(), os.urandom(8)
        sterling_ct, raw_ct = base / "sterling.ct", base / "raw.ct"
        with sterling_ct.open("wb") as out:
            _sterling_encrypt(block, size_bytes, key, out)
        with raw_ct.open("wb") as out:
            _raw_encrypt(block, size_bytes, key, prefix, out)
        runs: dict[str, Callable[[], object]] = {
            "se": lambda: _sterling_encrypt(block, size_bytes, key, _as_binary(_CountingSink())),
            "re": lambda: _raw_encrypt(block, size_bytes, key, prefix, _as_binary(_CountingSink())),
        }
        times: dict[str, list[float]] = {"se": [], "sd": [], "re": [], "rd": []}
        for r in range(rounds):
            for tag in ("s", "r") if r % 2 == 0 else ("r", "s"):
                times[tag + "e"].append(_timed(runs[tag + "e"]))
                with (sterling_ct if tag == "s" else raw_ct).open("rb") as src:
                    sink = _CountingSink()
                    if tag == "s":
                        times["sd"].append(_timed(partial(_sterling_decrypt, src, key, _as_binary(sink))))
                    else:
                        times["rd"].append(_timed(partial(_raw_decrypt, src, key, prefix, _as_binary(sink))))
                    if sink.count != size_bytes:
                        raise RuntimeError("decryption lost data")
    return CryptoBench(
        size_bytes=size_bytes,
        sterling_encrypt=statistics.median(times["se"]),
        sterling_decrypt=statistics.median(times["sd"]),
        raw_encrypt=statistics.median(times["re"]),
        raw_decrypt=statistics.median(times["rd"]),
        peak_growth_mib=growth,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    result = run(args.size_mib << 20, rounds=args.rounds)
    mib = result.size_bytes / (1 << 20)
    for name, secs in (("sterling encrypt", result.sterling_encrypt), ("sterling decrypt", result.sterling_decrypt),
                       ("raw AES-GCM encrypt", result.raw_encrypt), ("raw AES-GCM decrypt", result.raw_decrypt)):
        print(f"{name:22s} {secs:7.3f} s  {mib / secs:8.1f} MiB/s  (median of {args.rounds})")
    sys.stdout.write(
        f"bench-crypto: ratio to raw AES-GCM {result.ratio:.2f}, peak memory growth {result.peak_growth_mib:.0f} MiB\n"
    )


if __name__ == "__main__":
    main()
