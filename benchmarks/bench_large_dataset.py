"""``make bench-large``: DP training on a dataset larger than the trainer enclave's memory budget.

A synthetic dataset of ``--size-mib`` (1 GiB by default) of float32 rows (``--features`` columns, a
linearly separable label) is written as a canonical dataset package (safetensors) and encrypted in
the normal format (STRL, 1 MiB chunks, a fresh data key and context) as a stream: neither the
plaintext nor the ciphertext is ever whole in this process's memory. A real trainer enclave process,
launched with a memory budget of ``--budget-mib``, trains logistic regression on it for one epoch,
reading the ciphertext from this process (the host) on demand: its plan must be ``scanned``. Its
peak resident memory is its ``VmHWM`` from ``/proc/<pid>/status``, its epoch time the time between
its epoch-0 and epoch-1 progress events. The same rows, generated again in this process's memory,
are then trained on for one epoch by ``train_dp`` directly (the in-memory path the enclave takes for
small datasets), timed the same way.

Prints the plan, the enclave's memory (at start, peak) and the timings, and the summary line::

    bench-large: 1 GiB training peak RSS M MiB, epoch X s chunked vs Y s in memory (ratio R)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_worker.host import EnclaveProcess, FileSource
from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.dataset import DatasetPackage, Schema, canonical_json
from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, Role
from enclave_worker.trusted.training import train_dp

MIB = 1 << 20
CHAIN_ID, MARKET = 31337, bytes(20)
BLOCK_ROWS = 16_384
"""Rows generated at once (8 MiB of float32 at 128 features)."""


def schema(features: int) -> Schema:
    return Schema(task="classification", feature_names=tuple(f"f{i}" for i in range(features)), feature_shape=(features,),
                  class_names=("negative", "positive"))  # fmt: skip


def rows_for(size_mib: int, features: int) -> int:
    """Rows whose features and labels make ``size_mib`` MiB."""
    return size_mib * MIB // (4 * features + 8)


def blocks(rows: int, features: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The synthetic rows, block by block (the same blocks every time for a seed)."""
    weights = np.random.default_rng(seed).standard_normal(features).astype(np.float32)
    for index, start in enumerate(range(0, rows, BLOCK_ROWS)):
        rng = np.random.default_rng([seed, index])
        x = rng.standard_normal((min(BLOCK_ROWS, rows - start), features), dtype=np.float32)
        yield x, (x @ weights > 0).astype(np.int64)


def package_stream(rows: int, features: int) -> Iterator[bytes]:
    """A dataset package's bytes (safetensors: header, features, labels), produced block by block;
    ``DatasetPackage.from_bytes`` reads the whole of it (``tests/benchmarks/test_bench_large_dataset.py``)."""
    feature_bytes = rows * features * 4
    header = {
        "__metadata__": {"sterling_schema": canonical_json(schema(features).to_json()).decode()},
        "features": {"dtype": "F32", "shape": [rows, features], "data_offsets": [0, feature_bytes]},
        "labels": {"dtype": "I64", "shape": [rows], "data_offsets": [feature_bytes, feature_bytes + 8 * rows]},
    }
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    yield len(body).to_bytes(8, "little") + body
    labels = []
    for x, y in blocks(rows, features):
        yield x.tobytes()
        labels.append(y)  # the labels follow all the features: 8 bytes a row, kept until then
    yield np.concatenate(labels).tobytes()


class _Stream:
    """``read(n)`` over an iterator of byte strings."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._pending = b""
        self._at = 0

    def read(self, n: int) -> bytes:
        out = []
        while n > 0:
            if self._at == len(self._pending):
                part = next(self._parts, None)
                if part is None:
                    break
                self._pending, self._at = part, 0
            take = self._pending[self._at : self._at + n]
            self._at += len(take)
            n -= len(take)
            out.append(take)
        return b"".join(out)


class _Hashing:
    """A file writer that hashes what it writes."""

    def __init__(self, dst: BinaryIO) -> None:
        self.dst = dst
        self.sha = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        return self.dst.write(data)


def encrypt_dataset(path: Path, rows: int, features: int) -> tuple[bytes, bytes]:
    """Write the encrypted package to ``path``; returns (data key, content hash)."""
    key = dataformat.new_data_key()
    with path.open("wb") as out:
        hashing = _Hashing(out)
        dataformat.encrypt_stream(_Stream(package_stream(rows, features)), hashing, key, kind=dataformat.Kind.DATASET,  # type: ignore[arg-type]
                                  context=os.urandom(32))  # fmt: skip
    return key, hashing.sha.digest()


def in_memory_package(rows: int, features: int) -> DatasetPackage:
    x = np.empty((rows, features), dtype=np.float32)
    y = np.empty(rows, dtype=np.int64)
    start = 0
    for bx, by in blocks(rows, features):
        x[start : start + len(by)], y[start : start + len(by)] = bx, by
        start += len(by)
    return DatasetPackage(features=x, labels=y, schema=schema(features))


def _status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def enclave_epoch(
    path: Path, key: bytes, content_hash: bytes, spec: ModelSpec, features: int, *, budget_mib: int, threads: int
) -> dict[str, Any]:
    """One epoch through a trainer enclave process with ``budget_mib``: plan, memory, times."""
    raw_spec = spec.to_bytes()
    declared = canonical_json(schema(features).to_json())
    with EnclaveProcess.start(Role.TRAINER, memory_budget_mib=budget_mib, threads=threads) as enclave, FileSource(path) as source:
        at_start = _status(enclave.pid)["VmRSS"]
        plan = enclave.request("plan", model_spec=raw_spec, datasets=[{"schema": declared, "ciphertext": source}])
        job_key = enclave.request("prepare_job", chain_id=CHAIN_ID, market=MARKET, job_id=1)["job_key"]
        released = keywrap.wrap(key, job_key, info=keywrap.release_info(CHAIN_ID, MARKET, 1, content_hash))
        marks: dict[int, float] = {}

        def mark(event: dict[str, Any]) -> None:
            marks.setdefault(int(event.get("epoch", -1)), time.perf_counter())

        started = time.perf_counter()
        enclave.request(
            "run", progress=mark,
            chain_id=CHAIN_ID, market=MARKET, job_id=1, model_spec=raw_spec, model_spec_hash=hashlib.sha256(raw_spec).digest(),
            epsilon=2 * EPSILON_SCALE, delta=round(1e-6 * DELTA_SCALE), consumer_key=keywrap.public_key_bytes(X25519PrivateKey.generate()),
            datasets=[{"content_hash": content_hash, "released_key": released, "schema": declared, "ciphertext": source}],
        )  # fmt: skip
        finished = time.perf_counter()
        memory = _status(enclave.pid)
    return {
        "plan": plan,
        "rss_start": at_start,
        "rss_peak": memory["VmHWM"],
        "setup": marks[0] - started,
        "epoch": marks[1] - marks[0],
        "after": finished - marks[1],
    }


def in_memory_epoch(package: DatasetPackage, spec: ModelSpec) -> float:
    """One epoch of ``train_dp`` on rows in memory, timed as the enclave's (from just before the call to the epoch's end)."""
    marks: list[float] = []
    started = time.perf_counter()
    with warnings.catch_warnings():  # Opacus: "optimal order is the largest alpha" (the enclave's logs drop it too)
        warnings.simplefilter("ignore", UserWarning)
        train_dp(spec, package, epsilon=2.0, delta=1e-6, progress=lambda *_: marks.append(time.perf_counter()))
    return marks[0] - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="dataset size (features and labels)")
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--budget-mib", type=int, default=256, help="the trainer enclave's memory budget")
    parser.add_argument("--dir", type=Path, default=None, help="where the ciphertext is written (default: a temporary directory)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the enclave and of the in-memory run (1: on 2 shared cores, 2 threads' timings vary 10x)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Opacus warns when the noise bisection tries an order at the end of its grid; the enclave inherits this.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    rows = rows_for(args.size_mib, args.features)
    spec = ModelSpec(architecture="logistic_regression", epochs=1, batch_size=args.batch_size, learning_rate=0.05, optimizer="sgd",
                     max_grad_norm=1.0, seed=0)  # fmt: skip
    size = f"{args.size_mib / 1024:g} GiB" if args.size_mib >= 1024 else f"{args.size_mib} MiB"
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "dataset.strl"
        started = time.perf_counter()
        key, content_hash = encrypt_dataset(path, rows, args.features)
        print(f"dataset: {rows:,} rows x {args.features} float32 features, {path.stat().st_size / MIB:,.0f} MiB of ciphertext "
              f"(generated and encrypted as a stream in {time.perf_counter() - started:.1f} s)")  # fmt: skip
        chunked = enclave_epoch(path, key, content_hash, spec, args.features, budget_mib=args.budget_mib, threads=args.threads)
    plan = chunked["plan"]
    if plan["mode"] != "scanned":
        raise SystemExit(f"the enclave planned {plan['mode']!r}: the dataset fits its {args.budget_mib} MiB budget; raise --size-mib")
    print(
        f"enclave plan: {plan['mode']}, ~{plan['needs'] / MIB:,.0f} MiB of a {plan['budget'] / MIB:,.0f} MiB budget, "
        f"{plan['window_steps']} steps ({plan['window_rows']:,} rows) per window, {plan['scans_per_epoch']} scans per epoch"
    )
    growth = chunked["rss_peak"] - chunked["rss_start"]
    print(
        f"enclave memory: {chunked['rss_start'] / MIB:,.0f} MiB resident after start (code and libraries), peak "
        f"{chunked['rss_peak'] / MIB:,.0f} MiB: the job grew it by {growth / MIB:,.0f} MiB (budget {args.budget_mib} MiB)"
    )
    print(f"enclave run: {chunked['setup']:.1f} s before the epoch (hash pass, header, row check), epoch {chunked['epoch']:.2f} s, "
          f"{chunked['after']:.1f} s after (seal, sign)")  # fmt: skip
    package = in_memory_package(rows, args.features)
    memory_epoch = in_memory_epoch(package, spec)
    print(f"in memory: epoch {memory_epoch:.2f} s (train_dp on the same {rows:,} rows held in this process)")
    ratio = chunked["epoch"] / memory_epoch
    print(f"bench-large: {size} training peak RSS {chunked['rss_peak'] / MIB:,.0f} MiB, epoch {chunked['epoch']:.2f} s chunked vs "
          f"{memory_epoch:.2f} s in memory (ratio {ratio:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
