"""The key manager keeps data keys sealed to its measurement: they survive a restart of the same
code, and code with another measurement cannot open them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from enclave_worker import measurement
from enclave_worker.keymanager import KeyManagerService
from enclave_worker.trusted import platform_seal
from enclave_worker.trusted.onchain import Role
from marketplace.consumer import Consumer
from marketplace.errors import KeyReleaseRefused
from sterling.localnet import LocalNet
from marketplace.provider import list_dataset
from tests.conftest import toy_package, toy_spec, toy_terms


def test_seal_round_trip_and_refusals() -> None:
    key = bytes(range(32))
    blob = platform_seal.seal(key, b"data key", label=b"dataset A")
    assert platform_seal.unseal(key, blob, label=b"dataset A") == b"data key"
    with pytest.raises(platform_seal.SealedDataInvalid):
        platform_seal.unseal(key, blob, label=b"dataset B")
    with pytest.raises(platform_seal.SealedDataInvalid):
        platform_seal.unseal(bytes(32), blob, label=b"dataset A")
    for junk in (b"", b"STSK\x01", blob[:-1] + bytes([blob[-1] ^ 1]), b"XXXX" + blob[4:]):
        with pytest.raises(platform_seal.SealedDataInvalid):
            platform_seal.unseal(key, junk, label=b"dataset A")


def test_sealed_keys_survive_a_restart_and_refuse_other_code(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    listed = list_dataset(toy_package(50, 1), net.chain.new_account(), terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    deposits = net.key_manager.state_dir / "deposits"
    stored = sorted(p.relative_to(deposits) for p in deposits.rglob("*") if p.is_file())
    provider = net.market.dataset(listed.dataset_id).provider
    assert stored == [net.key_manager.deposit_path(listed.content_hash, provider).relative_to(deposits)]  # only the sealed blob
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    job = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.market.claim_job(net.operator, job.job_id, net.worker.signer)

    # Restart: a new process of the same code on the same platform gets the same sealing key.
    net.key_manager.enclave.close()
    restarted = net.platform.launch(Role.KEY_MANAGER)
    net.key_manager = KeyManagerService(restarted, market=net.market, registry=net.registry, state_dir=net.key_manager.state_dir)
    job_key = net.worker.prepare_job(job.job_id)

    # Other code: one changed line in a trusted file gives another measurement and another key.
    code_root = tmp_path / "other-release"
    shutil.copytree(measurement.PACKAGE_ROOT, code_root / "enclave_worker", ignore=shutil.ignore_patterns("__pycache__"))
    changed = code_root / "enclave_worker" / "trusted" / "onchain.py"
    changed.write_text(changed.read_text() + "\n# a different release\n")
    other = net.platform.launch(Role.KEY_MANAGER, code_root=code_root)
    try:
        assert other.measurement != restarted.measurement
        impostor = KeyManagerService(other, market=net.market, registry=net.registry, state_dir=net.key_manager.state_dir)
        with pytest.raises(KeyReleaseRefused, match="does not open"):
            impostor.release(job_id=job.job_id, dataset_id=listed.dataset_id, trainer=net.worker.signer, job_key=job_key)
    finally:
        other.close()

    released = net.key_manager.release(job_id=job.job_id, dataset_id=listed.dataset_id, trainer=net.worker.signer, job_key=job_key)
    assert len(released) == 80
