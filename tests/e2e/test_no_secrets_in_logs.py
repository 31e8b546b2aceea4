"""With every logger at DEBUG, a whole job leaves no key, plaintext row or weight in any log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from enclave_worker.trusted import dataformat
from marketplace import chain as chain_mod
from marketplace import provider as provider_mod
from marketplace.consumer import Consumer
from sterling.localnet import bring_up
from tests.conftest import toy_package, toy_spec, toy_terms


def test_debug_logs_of_a_whole_job_hold_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STERLING_ENCLAVE_LOG", "DEBUG")
    caplog.set_level(logging.DEBUG)
    keys: list[bytes] = []
    original = dataformat.new_data_key

    def recording_key() -> bytes:
        keys.append(original())
        return keys[-1]

    monkeypatch.setattr(provider_mod.dataformat, "new_data_key", recording_key)
    net = bring_up(chain_mod.embedded(), tmp_path)
    try:
        package = toy_package(80, 5)
        listed = provider_mod.list_dataset(package, net.chain.new_account(), terms=toy_terms(), market=net.market,
                                           registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
        consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
        job = consumer.create_job([listed.dataset_id], toy_spec(epochs=2), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
        outcome = net.worker.run_job(job.job_id)
        model = consumer.fetch_model(job.job_id)
    finally:
        net.close()
    out, err = capfd.readouterr()
    logs = "\n".join([out, err, caplog.text]).lower()
    assert "epsilon" in logs or "job" in logs  # the logs did capture the run
    secrets = [k.hex() for k in keys]
    secrets += [f"{v:.6f}" for v in package.features[:3].ravel() if abs(v) > 1e-3]
    secrets += [f"{v:.6f}" for v in next(model.parameters()).detach().numpy().ravel()[:4] if abs(v) > 1e-3]
    secrets += [outcome.signature.hex()[:40]]  # signatures go on-chain, but not into logs
    assert keys, "the provider's data key was not recorded"
    for secret in secrets:
        assert secret.lower() not in logs, secret
