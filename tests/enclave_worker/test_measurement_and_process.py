"""The measurement, the trusted process and its import boundary."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import pytest
from eth_account import Account

from enclave_worker import measurement
from enclave_worker.host import EnclaveProcess, EnclaveRequestFailed
from enclave_worker.trusted.errors import ProtocolError
from enclave_worker.trusted.report import report_data
from enclave_worker.trusted.onchain import Role
from enclave_worker.trusted.receipt import Deposit, sign_deposit

TRUSTED = Path(measurement.__file__).parent / "trusted"


def test_measurement_is_reproducible_and_covers_every_trusted_file(tmp_path: Path) -> None:
    copy = tmp_path / "enclave_worker"
    shutil.copytree(measurement.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    baseline = measurement.measure()
    assert measurement.measure(copy) == baseline
    for path in measurement.trusted_files(copy):
        original = path.read_bytes()
        path.write_bytes(original + b"\n# one more line\n")
        assert measurement.measure(copy) != baseline, path
        path.write_bytes(original)
    assert measurement.measure(copy) == baseline
    # Untrusted host files are not measured.
    (copy / "worker.py").write_text("changed")
    assert measurement.measure(copy) == baseline
    # Neither is a pinned dependency version left alone.
    deps = measurement.dependency_versions()
    deps["torch"] = "0.0.1"
    assert measurement.measure(copy, dependencies=deps) != baseline


@pytest.fixture(scope="module")
def key_manager_process() -> EnclaveProcess:
    process = EnclaveProcess.start(Role.KEY_MANAGER)
    yield process
    process.close()


def test_attest_binds_keys_and_nonce(key_manager_process: EnclaveProcess) -> None:
    reply = key_manager_process.request("attest", nonce=b"\x01" * 32)
    assert reply["report_data"] == report_data(Role.KEY_MANAGER, key_manager_process.signer, key_manager_process.encryption_key, b"\x01" * 32)
    assert len(key_manager_process.signer) == 20 and len(key_manager_process.encryption_key) == 32


def test_bad_requests_get_clear_errors_and_the_enclave_keeps_serving(key_manager_process: EnclaveProcess) -> None:
    with pytest.raises(EnclaveRequestFailed, match="unknown op"):
        key_manager_process.request("dump_keys")
    with pytest.raises(EnclaveRequestFailed, match="exceeds 64"):
        key_manager_process.request("attest", nonce=bytes(65))
    provider = Account.create()
    deposit = Deposit(content_hash=bytes(32), wrapped_key=bytes(80), key_manager=key_manager_process.signer)
    with pytest.raises(EnclaveRequestFailed, match="KeyUnwrapFailed"):
        key_manager_process.request(
            "deposit", chain_id=1, market=bytes(20), content_hash=bytes(32), wrapped_key=bytes(80),
            provider=bytes.fromhex(provider.address[2:]), signature=sign_deposit(provider, deposit, chain_id=1, market=bytes(20)),
        )  # fmt: skip
    with pytest.raises(EnclaveRequestFailed, match="not served by a key_manager"):
        key_manager_process.request(
            "run", chain_id=1, market=bytes(20), job_id=1, model_spec=b"{}", model_spec_hash=bytes(32), epsilon=1, delta=1,
            consumer_key=bytes(32), datasets=[{"content_hash": bytes(32), "released_key": b"", "ciphertext": b"", "schema": b"{}"}],
        )
    release = {
        "chain_id": 1, "market": bytes(20), "job_id": 1, "job_status": 2, "job_enclave": b"\x01" * 20,
        "job_content_hashes": [b"\x02" * 32], "job_completion_deadline": 10, "job_lease_expiry": 10, "job_charges": 0,
        "now": 5, "content_hash": b"\x02" * 32, "dataset_provider": b"\x03" * 20,
        "sealed_key": bytes(80), "trainer_signer": b"\x01" * 20, "trainer_active": True,
        "job_key": bytes(32), "job_key_signature": bytes(65),
    }
    with pytest.raises(EnclaveRequestFailed, match="KeyReleaseRefused: the per-job key of job 1 carries an invalid signature"):
        key_manager_process.request("release", **release)
    with pytest.raises(EnclaveRequestFailed, match="past its completion deadline"):
        key_manager_process.request("release", **{**release, "now": 11})
    assert key_manager_process.request("hello")["role"] == int(Role.KEY_MANAGER)


def test_a_corrupt_frame_ends_the_session_without_leaking() -> None:
    process = EnclaveProcess.start(Role.KEY_MANAGER)
    try:
        assert process._process.stdin is not None
        process._process.stdin.write(b"\x00\x00\x00\x05\xff\xff\xff\xff\xff")
        process._process.stdin.flush()
        with pytest.raises(EnclaveRequestFailed, match="not valid CBOR"):
            process.request("hello")
        # Out of sync, the trusted process stops rather than guess where the next frame starts.
        with pytest.raises(ProtocolError, match="closed its output|has exited"):
            process.request("hello")
    finally:
        process.close()


def test_a_trainer_sharing_the_machine_runs_niced_with_the_threads_it_is_given() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    process = EnclaveProcess.start(Role.TRAINER, threads=1, niceness=7)
    try:
        assert os.getpriority(os.PRIO_PROCESS, process._process.pid) == min(19, before + 7)
        assert "--threads" in process._process.args and process.request("hello")["signer"]
    finally:
        process.close()
    with pytest.raises(ValueError):
        EnclaveProcess.start(Role.TRAINER, threads=0)
