"""Training on datasets larger than the enclave's memory (issue 17, item 6).

The host keeps the ciphertexts and the trainer reads them on demand; rows that do not fit are
scanned window by window in a fixed order. Checked here: the scanned trainer's model equals the
in-memory trainer's for the same randomness, bit for bit; the host sees the same reads whatever was
sampled; the memory budget refuses a job before its key is taken (and the worker before it claims it
or asks for any key); a host that changes, reorders, duplicates or truncates chunks fails the run;
several providers with different chunk sizes train scanned through the real enclave process.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_worker.host import EnclaveProcess, EnclaveRequestFailed
from enclave_worker.trusted import dataformat, keywrap, memory_budget
from enclave_worker.trusted.dataformat import HEADER_LEN, TAG_LEN, ChunkOpener, Header, Kind, Layout
from enclave_worker.trusted.dataset import DatasetPackage, PackageLayout, canonical_json, join
from enclave_worker.trusted.enclave import Enclave
from enclave_worker.trusted.errors import CiphertextTruncated, InvalidDataset, MemoryBudgetExceeded
from enclave_worker.trusted.hosted import EncryptedPackage, Fingerprints, HostedCiphertext
from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, Role
from enclave_worker.trusted.training import train_dp
from enclave_worker.trusted.trainset import ScannedRows
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus
from marketplace.provider import list_dataset
from sterling.localnet import LocalNet
from tests.conftest import toy_package, toy_spec, toy_terms

CHUNK = 1024
MARKET, CHAIN_ID = bytes(20), 31337


@dataclass
class Sealed:
    package: DatasetPackage
    key: bytes
    ciphertext: bytes

    @property
    def content_hash(self) -> bytes:
        return hashlib.sha256(self.ciphertext).digest()

    @property
    def schema(self) -> bytes:
        return canonical_json(self.package.schema.to_json())


def _seal(package: DatasetPackage, chunk: int = CHUNK) -> Sealed:
    key = dataformat.new_data_key()
    return Sealed(package, key, dataformat.encrypt_bytes(package.to_bytes(), key, kind=Kind.DATASET, context=bytes(32), chunk_size=chunk))


class Host:
    """Serves ciphertexts by byte range and logs every read."""

    def __init__(self, ciphertexts: list[bytes]) -> None:
        self.ciphertexts = ciphertexts
        self.reads: list[tuple[int, int, int]] = []

    def read(self, dataset: int, offset: int, length: int) -> bytes:
        """The host side's read (``EnclaveProcess.request(read=...)``)."""
        self.reads.append((dataset, offset, length))
        return self.ciphertexts[dataset][offset : offset + length]

    def read_into(self, dataset: int, offset: int, out: memoryview) -> int:
        """The same read as the trusted side sees it (``protocol.HostChannel.read_into``)."""
        data = self.read(dataset, offset, len(out))
        out[: len(data)] = data
        return len(data)


def _segments(sealed: list[Sealed], host: Host) -> list[EncryptedPackage]:
    fingerprints = Fingerprints()
    segments = []
    for i, s in enumerate(sealed):
        source = HostedCiphertext(i, s.content_hash, len(s.ciphertext), host.read_into)
        source.verify(fingerprints)
        segments.append(EncryptedPackage.open(source, s.key))
    return segments


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- the format's random access and the package's row layout ----------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 77])
def test_chunks_opened_one_by_one_give_the_stream_plaintext(size: int) -> None:
    key, plaintext = dataformat.new_data_key(), bytes(range(256)) * (size // 256 + 1)
    plaintext = plaintext[:size]
    ciphertext = dataformat.encrypt_bytes(plaintext, key, kind=Kind.DATASET, context=bytes(32), chunk_size=CHUNK)
    layout = Layout.of(Header.decode(ciphertext[:HEADER_LEN]), len(ciphertext))
    opener = ChunkOpener(key, ciphertext[:HEADER_LEN], kind=Kind.DATASET)
    assert layout.plaintext_size == size and layout.chunks == max(1, math.ceil(size / CHUNK))
    parts = []
    for i in reversed(range(layout.chunks)):  # any order
        offset, length = layout.span(i)
        parts.append(opener.open(i, ciphertext[offset : offset + length], final=layout.final(i)))
    assert b"".join(reversed(parts)) == plaintext


def test_a_size_that_cuts_a_tag_is_truncated() -> None:
    ciphertext = dataformat.encrypt_bytes(bytes(3000), dataformat.new_data_key(), kind=Kind.DATASET, context=bytes(32), chunk_size=CHUNK)
    header = Header.decode(ciphertext[:HEADER_LEN])
    assert Layout.of(header, len(ciphertext)).chunks == 3
    for size in (HEADER_LEN + 5, HEADER_LEN + 2 * (CHUNK + TAG_LEN) + 7):
        with pytest.raises(CiphertextTruncated):
            Layout.of(header, size)


def test_the_package_layout_finds_every_row_where_safetensors_put_it() -> None:
    package = toy_package(333, 4)
    raw = package.to_bytes()
    layout = PackageLayout.parse(raw[: 8 + PackageLayout.header_length(raw)], len(raw))
    assert (layout.rows, layout.size, layout.schema) == (333, len(raw), package.schema)
    features = np.frombuffer(raw[layout.features_offset : layout.features_offset + 333 * layout.row_bytes], np.float32)
    labels = np.frombuffer(raw[layout.labels_offset : layout.labels_offset + 8 * 333], np.int64)
    assert np.array_equal(features.reshape(333, 4), package.features) and np.array_equal(labels, package.labels)


def _with_header(raw: bytes, edit: Callable[[dict[str, Any]], None]) -> tuple[bytes, int]:
    n = PackageLayout.header_length(raw)
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    body = json.dumps(header).encode()
    return len(body).to_bytes(8, "little") + body, 8 + len(body) + len(raw) - 8 - n


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.update(extra=h["labels"]), "exactly features and labels"),
        (lambda h: h["features"].update(dtype="F64"), "features must be float32"),
        (lambda h: h["labels"].update(data_offsets=[h["labels"]["data_offsets"][0] + 8, h["labels"]["data_offsets"][1] + 8]),
         "do not tile"),
        (lambda h: h["features"].update(shape=[h["features"]["shape"][0], 5]), "offsets do not match"),
        (lambda h: h["__metadata__"].pop("sterling_schema"), "sterling_schema"),
    ],
)  # fmt: skip
def test_a_malformed_package_header_is_refused(edit: Callable[[dict[str, Any]], None], message: str) -> None:
    prefix, size = _with_header(toy_package(10, 1).to_bytes(), edit)
    with pytest.raises(InvalidDataset, match=message):
        PackageLayout.parse(prefix, size)


# --- one sampler, two ways of holding the rows --------------------------------------------------------


@pytest.mark.parametrize(
    "spec", [toy_spec(epochs=2, batch_size=24), toy_spec(architecture="mlp", hidden_sizes=(16,), epochs=2, batch_size=40)]
)
def test_the_scanned_trainer_equals_the_in_memory_trainer_bit_for_bit(spec: ModelSpec) -> None:
    sealed = [_seal(toy_package(300, 1)), _seal(toy_package(157, 2), chunk=4096), _seal(toy_package(90, 3), chunk=2048)]
    host = Host([s.ciphertext for s in sealed])
    in_memory = train_dp(spec, join([s.package for s in sealed]), epsilon=2.0, delta=1e-5, noise_seed=7)
    rows = ScannedRows(_segments(sealed, host), window_steps=3, window_rows=memory_budget.tail_rows(3 * spec.batch_size))
    scanned = train_dp(spec, rows, epsilon=2.0, delta=1e-5, noise_seed=7)
    steps = math.ceil(547 / spec.batch_size)
    assert rows.scans == spec.epochs * math.ceil(steps / 3)  # several windows per epoch
    a, b = _weights(in_memory.model), _weights(scanned.model)
    # Bit-identical: the same sampler and noise streams give the same index batches, whose rows are
    # gathered into fresh tensors of the same values and layout, so every kernel sees the same inputs.
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... and a different noise stream gives a different model (the comparison can fail).
    other = train_dp(spec, rows, epsilon=2.0, delta=1e-5, noise_seed=8)
    assert not all(torch.equal(a[k], v) for k, v in _weights(other.model).items())


def test_a_window_too_small_for_its_batches_is_split_and_trains_the_same() -> None:
    spec = toy_spec(epochs=1, batch_size=30)
    sealed = [_seal(toy_package(400, 5))]
    reference = train_dp(spec, sealed[0].package, epsilon=2.0, delta=1e-5, noise_seed=3)
    rows = ScannedRows(_segments(sealed, Host([sealed[0].ciphertext])), window_steps=6, window_rows=70)  # ~2 batches fit
    split = train_dp(spec, rows, epsilon=2.0, delta=1e-5, noise_seed=3)
    assert rows.scans > math.ceil(math.ceil(400 / 30) / 6)
    a, b = _weights(reference.model), _weights(split.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MemoryBudgetExceeded, match="exceeds the 5-row scan window"):
        train_dp(spec, ScannedRows(rows.segments, window_steps=2, window_rows=5), epsilon=2.0, delta=1e-5, noise_seed=3)


def test_the_host_sees_the_same_reads_whatever_was_sampled() -> None:
    spec = toy_spec(epochs=2, batch_size=16)
    sealed = [_seal(toy_package(260, 6)), _seal(toy_package(120, 7), chunk=2048)]
    logs = []
    for seed in (1, 2):
        host = Host([s.ciphertext for s in sealed])
        rows = ScannedRows(_segments(sealed, host), window_steps=4, window_rows=memory_budget.tail_rows(64))
        host.reads.clear()
        train_dp(spec, rows, epsilon=2.0, delta=1e-5, noise_seed=seed)
        logs.append(host.reads)
    assert logs[0] == logs[1]
    # Every scan reads every byte of every dataset's chunks, in the same order.
    per_scan = len(logs[0]) // (spec.epochs * math.ceil(math.ceil(380 / 16) / 4))
    first = logs[0][:per_scan]
    assert all(logs[0][i : i + per_scan] == first for i in range(0, len(logs[0]), per_scan))
    covered = {d: sum(n for dd, _, n in first if dd == d) for d in (0, 1)}
    assert all(covered[d] >= len(sealed[d].ciphertext) - HEADER_LEN for d in (0, 1))


# --- the memory budget --------------------------------------------------------------------------------


def _shape(rows: int, chunk: int = 1 << 20) -> memory_budget.DatasetShape:
    return memory_budget.DatasetShape(chunk_size=chunk, chunks=max(1, rows * 24 // chunk + 1), rows=rows)


def test_the_plan_keeps_rows_in_memory_when_they_fit_else_the_largest_window() -> None:
    spec, schema = toy_spec(batch_size=256), toy_package(1, 0).schema
    roomy = memory_budget.plan(spec, schema, [_shape(1_000_000)], budget=1 << 30)
    assert roomy.mode == "in_memory" and roomy.needs <= 1 << 30
    base = roomy.needs - dict(roomy.parts)["rows"]
    budget = base + 4 * memory_budget.MIB
    tight = memory_budget.plan(spec, schema, [_shape(1_000_000)], budget=budget)
    assert tight.mode == "scanned" and tight.needs <= budget and 1 < tight.window_steps < tight.steps_per_epoch
    per_row = 4 * 4 + memory_budget.WINDOW_ROW_OVERHEAD
    assert base + memory_budget.tail_rows((tight.window_steps + 1) * 1_000_000 / tight.steps_per_epoch) * per_row > budget
    assert tight.scans_per_epoch == math.ceil(tight.steps_per_epoch / tight.window_steps)
    with pytest.raises(MemoryBudgetExceeded, match=r"needs ~\d+ MiB of enclave memory, budget 8 MiB"):
        memory_budget.plan(spec, schema, [_shape(1_000_000)], budget=8 * memory_budget.MIB)


def _run_fields(sealed: list[Sealed], spec: ModelSpec, job_key: bytes, job_id: int) -> dict[str, Any]:
    raw = spec.to_bytes()
    consumer = keywrap.public_key_bytes(X25519PrivateKey.generate())
    return {
        "chain_id": CHAIN_ID, "market": MARKET, "job_id": job_id, "model_spec": raw, "model_spec_hash": hashlib.sha256(raw).digest(),
        "epsilon": 2 * EPSILON_SCALE, "delta": round(1e-5 * DELTA_SCALE), "consumer_key": consumer,
        "datasets": [
            {"content_hash": s.content_hash, "size": len(s.ciphertext), "schema": s.schema,
             "released_key": keywrap.wrap(s.key, job_key, info=keywrap.release_info(CHAIN_ID, MARKET, job_id, s.content_hash))}
            for s in sealed
        ],
    }  # fmt: skip


def test_a_job_that_cannot_fit_is_refused_before_its_key_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    enclave = Enclave(Role.TRAINER, memory_budget=4 * memory_budget.MIB)
    sealed = [_seal(toy_package(200, 1)), _seal(toy_package(100, 2))]
    host = Host([s.ciphertext for s in sealed])
    job_key = enclave.handle("prepare_job", {"chain_id": CHAIN_ID, "market": MARKET, "job_id": 9}, lambda _: None)["job_key"]
    unwrapped: list[bytes] = []
    real_unwrap = keywrap.unwrap

    def unwrap(*args: Any, **kwargs: Any) -> bytes:
        unwrapped.append(b"")
        return real_unwrap(*args, **kwargs)

    monkeypatch.setattr(keywrap, "unwrap", unwrap)
    fields = _run_fields(sealed, toy_spec(epochs=1), job_key, 9)
    with pytest.raises(MemoryBudgetExceeded, match=r"needs ~\d+ MiB of enclave memory, budget 4 MiB"):
        enclave.handle("run", fields, lambda _: None, read=host.read_into)
    assert unwrapped == [] and host.reads == [(0, 0, HEADER_LEN), (1, 0, HEADER_LEN)]  # the headers only
    # The job's key was not taken: with room enough, the same enclave runs the same job.
    enclave.memory_budget = memory_budget.DEFAULT_BUDGET
    reply = enclave.handle("run", fields, lambda _: None, read=host.read_into)
    assert reply["receipt"]["job_id"] == 9 and len(unwrapped) == 2


def test_the_worker_refuses_a_job_that_cannot_fit_before_claiming_it_or_asking_for_a_key(
    localnet: LocalNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = localnet
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, 81), provider, terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    huge = toy_spec(architecture="mlp", hidden_sizes=(4096,) * 8, epochs=1)  # ~117 M parameters: over the 2 GiB default
    created = consumer.create_job([listed.dataset_id], huge, epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    released: list[object] = []
    monkeypatch.setattr(net.key_manager, "release", lambda **kwargs: released.append(kwargs))
    with pytest.raises(MemoryBudgetExceeded, match=r"needs ~[\d,]+ MiB of enclave memory, budget 2,048 MiB"):
        net.worker.run_job(created.job_id)
    assert released == []
    job = net.market.job(created.job_id)
    assert job.status is JobStatus.OPEN and job.charges == 0
    assert net.worker.can_take(created.job_id)  # never claimed, never prepared


# --- through the enclave process: an untrusted host, several providers ----------------------------------

BIG_SPEC = toy_spec(epochs=1, batch_size=512, private_metrics=("class_counts", "train_accuracy"), metrics_epsilon=0.2, audit_canaries=40)


@pytest.fixture(scope="module")
def providers() -> list[Sealed]:
    return [_seal(toy_package(30_000, 11)), _seal(toy_package(45_000, 12), chunk=4096), _seal(toy_package(20_000, 13), chunk=65536)]


@pytest.fixture(scope="module")
def trainer(providers: list[Sealed]) -> Iterator[EnclaveProcess]:
    """A trainer whose budget holds everything but the providers' rows: they must be scanned."""
    shapes = []
    for s in providers:
        layout = Layout.of(Header.decode(s.ciphertext[:HEADER_LEN]), len(s.ciphertext))
        shapes.append(memory_budget.DatasetShape(chunk_size=layout.chunk_size, chunks=layout.chunks, rows=s.package.rows))
    roomy = memory_budget.plan(BIG_SPEC, providers[0].package.schema, shapes, budget=1 << 40, canaries=BIG_SPEC.audit_canaries)
    base = roomy.needs - dict(roomy.parts)["rows"]
    with EnclaveProcess.start(Role.TRAINER, memory_budget_mib=math.ceil(base / memory_budget.MIB) + 1) as process:
        yield process


def _run(
    process: EnclaveProcess, sealed: list[Sealed], spec: ModelSpec, job_id: int, read: Callable[[int, int, int], bytes]
) -> dict[str, Any]:
    job_key = process.request("prepare_job", chain_id=CHAIN_ID, market=MARKET, job_id=job_id)["job_key"]
    return process.request("run", read=read, **_run_fields(sealed, spec, job_key, job_id))


def test_several_providers_train_scanned_through_the_enclave(trainer: EnclaveProcess, providers: list[Sealed]) -> None:
    plan = trainer.request("plan", model_spec=BIG_SPEC.to_bytes(),
                           datasets=[{"schema": s.schema, "ciphertext": s.ciphertext} for s in providers])  # fmt: skip
    assert plan["mode"] == "scanned" and plan["scans_per_epoch"] >= 2, plan
    host = Host([s.ciphertext for s in providers])
    events: list[dict[str, Any]] = []
    job_key = trainer.request("prepare_job", chain_id=CHAIN_ID, market=MARKET, job_id=1)["job_key"]
    reply = trainer.request("run", read=host.read, progress=events.append, **_run_fields(providers, BIG_SPEC, job_key, 1))
    metrics = json.loads(reply["metrics"])
    assert metrics["rows"] == 95_000 and metrics["steps"] == 186  # ceil((95,000 + included canaries) / 512)
    assert set(metrics["private_metrics"]["metrics"]) == {"class_counts", "train_accuracy"}
    assert metrics["privacy_audit"]["canaries"] == 40
    assert [e["epoch"] for e in events if e.get("stage") == "training"] == [0, 1]
    # Every dataset is read whole once to check its hash, once to check its rows, once per scan
    # window and once for the private metrics: the scans are there, in full.
    read = [sum(n for d, _, n in host.reads if d == i) for i in range(3)]
    passes = [r / (len(s.ciphertext) - HEADER_LEN) for r, s in zip(read, providers, strict=True)]
    assert all(p >= 3 + plan["scans_per_epoch"] for p in passes), passes


def test_a_trainer_loads_opendp_only_when_a_job_asks_for_private_metrics() -> None:
    """OpenDP, with the scikit-learn and pandas its prelude imports, is ~65 MiB of a trainer's resident
    memory (``make bench-large``): a trainer process starts without them. Private metrics still load
    it, through the enclave process (``test_several_providers_train_scanned_through_the_enclave``)."""
    code = (
        "import sys; from enclave_worker.trusted import main; from enclave_worker.trusted.enclave import Enclave; "
        "from enclave_worker.trusted.onchain import Role; Enclave(Role.TRAINER); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'opendp', 'sklearn', 'pandas'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def _after_first_pass(honest: bytes, served: bytes) -> Callable[[int, int, int], bytes]:
    """A host that serves ``honest`` until the enclave has read it once (the hash pass), then ``served``."""
    read_so_far = 0

    def read(dataset: int, offset: int, length: int) -> bytes:
        nonlocal read_so_far
        source = honest if read_so_far < len(honest) else served
        read_so_far += length
        return source[offset : offset + length]

    return read


def _chunks(ciphertext: bytes) -> list[bytes]:
    step = CHUNK + TAG_LEN
    return [ciphertext[i : i + step] for i in range(HEADER_LEN, len(ciphertext), step)]


def _rebuild(ciphertext: bytes, chunks: list[bytes]) -> bytes:
    return ciphertext[:HEADER_LEN] + b"".join(chunks)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("everywhere", "CiphertextTampered", "does not match its on-chain content hash"),
        ("flipped", "CiphertextTampered", "chunk 5 failed authentication"),
        ("reordered", "CiphertextReordered", "chunk 7 belongs at position 8"),
        ("duplicated", "CiphertextDuplicated", "chunk 8 is a copy of chunk 7"),
        ("truncated", "CiphertextTruncated", "the host served"),
    ],
)
def test_a_host_that_changes_chunks_fails_the_run(trainer: EnclaveProcess, damage: str, error: str, message: str) -> None:
    sealed = _seal(toy_package(600, 21))
    honest = sealed.ciphertext
    chunks = _chunks(honest)
    assert len(chunks) > 10  # labels in chunks 0-4, features from chunk 5 on: read in that order after the hash pass
    flipped = bytearray(honest)
    flipped[HEADER_LEN + 5 * (CHUNK + TAG_LEN) + 3] ^= 1
    read: Callable[[int, int, int], bytes]
    if damage == "everywhere":
        read = Host([bytes(flipped)]).read
    else:
        served = {
            "flipped": bytes(flipped),
            "reordered": _rebuild(honest, [*chunks[:7], chunks[8], chunks[7], *chunks[9:]]),
            "duplicated": _rebuild(honest, [*chunks[:8], chunks[7], *chunks[9:]]),
            "truncated": _rebuild(honest, chunks[:7]),
        }[damage]
        read = _after_first_pass(honest, served)
    job_id = 100 + ["everywhere", "flipped", "reordered", "duplicated", "truncated"].index(damage)
    with pytest.raises(EnclaveRequestFailed) as failed:
        _run(trainer, [sealed], toy_spec(epochs=1), job_id, read)
    assert failed.value.error == error and message in failed.value.message, failed.value
    # The honest host gets a model from the same trainer (another job: this one's run is used up).
    assert _run(trainer, [sealed], toy_spec(epochs=1), job_id + 50, Host([honest]).read)["receipt"]["job_id"] == job_id + 50
