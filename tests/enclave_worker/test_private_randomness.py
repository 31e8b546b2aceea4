"""The consumer's spec seeds the model's initialisation only: DP sampling and noise stay private.

Were the consumer's ``seed`` to fix Poisson sampling and the Gaussian noise, the consumer could
replay both and subtract the noise; the receipt's ε would then be false.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_worker.host import EnclaveProcess
from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.receipt import DELTA_SCALE, EPSILON_SCALE
from enclave_worker.trusted.roles import Role
from enclave_worker.trusted.training import train_dp
from tests.conftest import toy_package, toy_spec


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("engine", ["bookkeeping", "opacus-hooks"])
def test_the_spec_seed_fixes_the_initialisation_but_not_the_noise(engine: str) -> None:
    data, spec = toy_package(200, 3), toy_spec(epochs=1, seed=5)
    first, second = (_weights(train_dp(spec, data, epsilon=2.0, delta=1e-5, engine=engine).model) for _ in range(2))  # type: ignore[arg-type]
    assert not _same(first, second)
    # A test may fix the private randomness explicitly (the enclave never does); with it, the spec
    # seed makes the whole run reproducible, initialisation included.
    again = [_weights(train_dp(spec, data, epsilon=2.0, delta=1e-5, engine=engine, noise_seed=11).model) for _ in range(2)]  # type: ignore[arg-type]
    assert _same(again[0], again[1])


def test_the_enclave_trains_with_fresh_noise_whatever_the_spec_seed() -> None:
    spec = toy_spec(epochs=1, seed=5)
    raw_spec = spec.to_bytes()
    key = dataformat.new_data_key()
    ciphertext = dataformat.encrypt_bytes(toy_package(200, 3).to_bytes(), key, kind=dataformat.Kind.DATASET, context=bytes(32))
    content_hash = hashlib.sha256(ciphertext).digest()
    consumer = keywrap.public_key_bytes(X25519PrivateKey.generate())
    market, chain_id, job_id = bytes(20), 31337, 1
    hashes = []
    with EnclaveProcess.start(Role.TRAINER) as enclave:
        for _ in range(2):  # the very same job, twice
            released = keywrap.wrap(key, enclave.encryption_key, info=keywrap.release_info(chain_id, market, job_id, content_hash))
            reply = enclave.request(
                "run", chain_id=chain_id, market=market, job_id=job_id, model_spec=raw_spec,
                model_spec_hash=hashlib.sha256(raw_spec).digest(), epsilon=2 * EPSILON_SCALE, delta=round(1e-5 * DELTA_SCALE),
                consumer_key=consumer, datasets=[{"content_hash": content_hash, "released_key": released, "ciphertext": ciphertext}],
            )
            hashes.append(reply["receipt"]["model_hash"])
    assert hashes[0] != hashes[1]
