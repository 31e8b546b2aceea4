"""``sterling keymanager`` as a service of its own (issue 17): the key manager and the attestation
verifier behind HTTP, used through :class:`RemoteKeyManager` and :class:`RemoteVerifier` exactly as
the in-process services are used, refusals included.

The process test runs the service as a child process on anvil, with nothing in common with the test
but the RPC URL, the deployment record and the simulated platform's key file: a trainer enclave of
the test registers through its verifier, a provider deposits through it, and a trainer worker gets
its keys from it (once per claim). The fast tests hold the HTTP app to its input rules in process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from enclave_worker.keymanager import JobKey
from enclave_worker.measurement import measure
from enclave_worker.remote import (
    KeyReleaser,
    RemoteKeyManager,
    RemoteVerifier,
    ServiceUnreachable,
    decode_claims,
    encode_claims,
)
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.onchain import Role
from enclave_worker.trusted.receipt import ClaimRelease, DepositExists, DepositSignatureInvalid, claim_release_signer
from enclave_worker.worker import TrainerWorker
from marketplace.blobstore import BlobStore
from marketplace.chain import anvil, free_port
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus, MarketClient, RegistryClient, deploy
from marketplace.errors import AttestationRejected, KeyReleaseRefused
from marketplace.provider import list_dataset, signed_deposit
from sterling.keymanager_service import KeyManagerNode, create_app
from sterling.localnet import LocalNet, attest_and_register, ensure_operator_stake
from sterling.standalone import ChainView
from sterling.up import checkout_root
from tests.conftest import toy_package, toy_spec, toy_terms

# --- the service as a process --------------------------------------------------------------------


@contextlib.contextmanager
def keymanager_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sterling keymanager <args>`` as a child process; killed if the test left it running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sterling.cli", "keymanager", *args], cwd=checkout_root(), stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200", **env},
        )  # fmt: skip
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"sterling keymanager exited with {process.returncode}:\n{log.read_text()}"
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/health", timeout=5)
            if answer.status_code == 200:
                return dict(answer.json())
        time.sleep(0.25)
    raise AssertionError(f"sterling keymanager did not serve in {timeout} s:\n{log.read_text()}")


@pytest.mark.anvil
@pytest.mark.slow
def test_keymanager_service_registers_enclaves_takes_deposits_and_releases_once_per_claim(tmp_path: Path) -> None:
    with anvil() as chain, contextlib.ExitStack() as stack:
        # Governance's set-up, as start_enclaves does it: the measurement approved for both roles, a verifier granted.
        governance, verifier_account, km_operator, worker_operator = (chain.new_account() for _ in range(4))
        deployment = deploy(chain, governance)
        record = tmp_path / "deployment.json"
        deployment.save(record)
        registry, market = RegistryClient(chain, deployment.registry), MarketClient(chain, deployment.market)
        measurement = measure()
        for role in (Role.KEY_MANAGER, Role.TRAINER):
            registry.approve_measurement(governance, role, measurement)
        registry.add_verifier(governance, verifier_account.address)
        platform_key = tmp_path / "sim-platform.pem"
        platform = SimPlatform.load_or_create(platform_key)  # the one file this test shares with the service (development only)
        verifier_key_file = tmp_path / "verifier.key"
        verifier_key_file.touch(mode=0o600)
        verifier_key_file.write_text(verifier_account.key.hex())

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        rpc = str(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        state_dir = tmp_path / "km-state"
        log = tmp_path / "keymanager.log"
        args = [
            "--rpc-url", rpc, "--deployment", str(record), "--state-dir", str(state_dir), "--platform-key", str(platform_key),
            "--verifier-key-file", str(verifier_key_file), "--port", str(port), "-v",
        ]  # fmt: skip
        env = {"STERLING_KEYMANAGER_OPERATOR_KEY": km_operator.key.hex()}
        process = stack.enter_context(keymanager_process(args, env, log))
        health = wait_for_health(url, process, log)
        assert health["status"] == "ok" and health["registered"] is True and health["confirmations"] == 0
        assert health["head_block"] >= chain.w3.eth.block_number - 1

        key_manager = stack.enter_context(RemoteKeyManager(url))
        assert isinstance(key_manager, KeyReleaser)
        assert key_manager.signer == health["signer"] and key_manager.confirmations == 0
        record_of_km = registry.enclave_of(key_manager.signer)
        assert record_of_km.operator == km_operator.address and record_of_km.role == int(Role.KEY_MANAGER)
        assert (state_dir / "key-manager" / "deposits").is_dir()

        # 1. A trainer enclave launched here registers through the service's verifier; its evidence is single-use.
        verifier = stack.enter_context(RemoteVerifier(url))
        trainer = platform.launch(Role.TRAINER, threads=1)
        stack.callback(trainer.close)
        attest_and_register(trainer, verifier, registry, worker_operator)  # type: ignore[arg-type]
        assert registry.is_active(_checksum(trainer.process.signer), Role.TRAINER)
        claims, evidence = trainer.attest(verifier.challenge())
        verifier.certify(evidence=evidence, claims=claims, operator=worker_operator.address)
        with pytest.raises(AttestationRejected, match="nonce was not issued by this verifier or was already used"):
            verifier.certify(evidence=evidence, claims=claims, operator=worker_operator.address)
        stranger = SimPlatform.load_or_create(tmp_path / "another-platform.pem")
        claims, _ = trainer.attest(nonce := verifier.challenge())
        with pytest.raises(AttestationRejected, match="does not verify against the pinned platform key"):
            verifier.certify(evidence=stranger.quote(measurement, claims["report_data"]), claims=claims, operator=worker_operator.address)
        assert nonce == claims["nonce"]

        # 2. A provider lists a dataset, its key deposited through the service; a second deposit is refused.
        blobs = BlobStore(tmp_path / "blobs")
        provider = chain.new_account()
        listed = list_dataset(
            toy_package(120, 5), provider, terms=toy_terms(), market=market, registry=registry, key_manager=key_manager, blobs=blobs
        )
        sealed = state_dir / "key-manager" / "deposits" / listed.content_hash.hex() / f"{provider.address}.sealed"
        before = sealed.read_bytes()
        again = keywrap.wrap(
            dataformat.new_data_key(), registry.active_key_manager_key(key_manager.signer), info=keywrap.datakey_info(listed.content_hash)
        )
        signature = signed_deposit(
            provider, listed.content_hash, again, key_manager=key_manager.signer, chain_id=chain.chain_id, market=market.address
        )
        with pytest.raises(DepositExists, match=f"provider {provider.address} already deposited a key for {listed.content_hash.hex()}"):
            key_manager.deposit(listed.content_hash, again, provider=provider.address, signature=signature)
        forged = signed_deposit(
            Account.create(), listed.content_hash, again, key_manager=key_manager.signer, chain_id=chain.chain_id, market=market.address
        )
        with pytest.raises(DepositSignatureInvalid, match=f"not signed by provider {provider.address}"):
            key_manager.deposit(listed.content_hash, again, provider=provider.address, signature=forged)
        assert sealed.read_bytes() == before

        # 3. Releases: refused for a job the trainer has not claimed; for a claimed one, once.
        ensure_operator_stake(market, worker_operator)
        worker = TrainerWorker(trainer, operator=worker_operator, market=market, key_manager=key_manager, blobs=blobs)  # type: ignore[arg-type]
        consumer = Consumer(chain.new_account(), market=market, blobs=blobs)
        jobs = [
            consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0).job_id  # type: ignore[arg-type]
            for _ in range(3)
        ]
        unclaimed, claimed, run = jobs
        ask = {"dataset_id": listed.dataset_id, "trainer": worker.signer}
        with pytest.raises(KeyReleaseRefused, match=f"job {unclaimed} is not in the Claimed state"):
            key_manager.release(job_id=unclaimed, job_key=worker.prepare_job(unclaimed), **ask)

        market.claim_job(worker_operator, claimed, worker.signer)
        job_key = worker.prepare_job(claimed)
        released = key_manager.release(job_id=claimed, job_key=job_key, **ask)
        assert len(released) > 32
        with pytest.raises(KeyReleaseRefused, match=f"already released for job {claimed} to this enclave: one claim, one key"):
            key_manager.release(job_id=claimed, job_key=job_key, **ask)
        with pytest.raises(KeyReleaseRefused):  # a key went out under this claim: it cannot be given back for free
            key_manager.claim_release_statement(claimed)

        # 4. A claim with no key under it is given back on the service's statement, signed by its enclave.
        market.claim_job(worker_operator, unclaimed, worker.signer)
        statement = key_manager.claim_release_statement(unclaimed)
        assert len(statement) == 65
        holder = ClaimRelease(job_id=unclaimed, enclave=trainer.process.signer, charges=market.job(unclaimed).charges)
        assert (
            _checksum(claim_release_signer(holder, statement, chain_id=chain.chain_id, market=market.address_bytes)) == key_manager.signer
        )
        market.release_claim(worker_operator, unclaimed, statement)
        assert market.job(unclaimed).status is JobStatus.OPEN

        # 5. A whole job through the trainer worker, its key from the service: the released key opens the data.
        outcome = worker.run_job(run)
        assert market.job(run).status is JobStatus.COMPLETED and outcome.receipt.job_id == run

        # The service's health, then SIGTERM stops it promptly.
        assert httpx.get(f"{url}/health", timeout=5).json()["registered"] is True
        started = time.monotonic()
        process.terminate()
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
        with pytest.raises(ServiceUnreachable, match=url):
            key_manager.claim_release_statement(claimed)

    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert any("registered for operator" in entry["message"] for entry in lines)
    assert km_operator.key.hex().removeprefix("0x") not in text and verifier_account.key.hex().removeprefix("0x") not in text


def _checksum(address: bytes) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))


# --- the HTTP app in process -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(localnet: LocalNet) -> Iterator[TestClient]:
    """The service's app over the session's key manager and verifier (embedded chain)."""
    view = ChainView(localnet.chain, localnet.deployment, localnet.market, localnet.registry)
    with TestClient(create_app(KeyManagerNode(view=view, key_manager=localnet.key_manager, verifier=localnet.verifier))) as client:
        yield client


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


H32, SIG = "0x" + "11" * 32, "0x" + "22" * 65
ADDRESS = "0x" + "33" * 20
MALFORMED: list[tuple[str, Any]] = [
    ("/deposits", {"content_hash": "0x" + "11" * 31, "wrapped_key": "0x01", "provider": ADDRESS, "signature": SIG}),
    ("/deposits", {"content_hash": H32, "wrapped_key": "0x", "provider": ADDRESS, "signature": SIG}),
    ("/deposits", {"content_hash": H32, "wrapped_key": "0x" + "ab" * 513, "provider": ADDRESS, "signature": SIG}),
    ("/deposits", {"content_hash": H32, "wrapped_key": "0x0g", "provider": ADDRESS, "signature": SIG}),
    ("/deposits", {"content_hash": H32, "wrapped_key": "0x012", "provider": ADDRESS, "signature": SIG}),
    ("/deposits", {"content_hash": H32, "wrapped_key": "0x01", "provider": "0x1234", "signature": SIG}),
    ("/deposits", {"content_hash": H32, "wrapped_key": "0x01", "provider": ADDRESS, "signature": SIG[:-2]}),
    ("/releases", {"job_id": 1, "dataset_id": 1, "trainer": ADDRESS, "job_key": {"public_key": "0x" + "11" * 33, "signature": SIG}}),
    ("/releases", {"job_id": -1, "dataset_id": 1, "trainer": ADDRESS, "job_key": {"public_key": H32, "signature": SIG}}),
    ("/releases", {"job_id": "1", "dataset_id": 1, "trainer": ADDRESS, "job_key": {"public_key": H32, "signature": SIG}}),
    ("/releases", {"job_id": 1, "dataset_id": 1, "trainer": ADDRESS}),
    ("/claim-releases", {"job_id": 1, "abandoned": "0x" + "00" * 10}),
    ("/claim-releases", {"job_id": 2**256}),
    ("/attestation/certify", {"evidence": "0x", "claims": {}, "operator": ADDRESS}),
    ("/attestation/certify", {"evidence": "0x01", "claims": {"nonce": "not hex"}, "operator": ADDRESS}),
    ("/attestation/certify", {"evidence": "0x01", "claims": {"role": 1.5}, "operator": ADDRESS}),
    ("/deposits", "{not json"),
]


@pytest.mark.parametrize(("path", "body"), MALFORMED)
def test_a_malformed_request_is_refused_before_it_reaches_the_key_manager(
    api: TestClient, localnet: LocalNet, path: str, body: Any
) -> None:
    before = _files(localnet.key_manager.state_dir)
    if isinstance(body, str):
        answer = api.post(path, content=body, headers={"content-type": "application/json"})
    else:
        answer = api.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "RequestInvalid" and answer.json()["detail"]
    assert _files(localnet.key_manager.state_dir) == before


def test_refusals_keep_their_class_name_status_and_message(api: TestClient, localnet: LocalNet) -> None:
    net = localnet
    # A deposit whose signature is not the provider's: 400, named as the service raises it.
    provider = net.chain.new_account()
    content_hash = hashlib.sha256(b"remote-km-refusal").digest()
    wrapped = keywrap.wrap(
        dataformat.new_data_key(), net.registry.active_key_manager_key(net.key_manager.signer), info=keywrap.datakey_info(content_hash)
    )
    forged = signed_deposit(
        Account.create(), content_hash, wrapped, key_manager=net.key_manager.signer, chain_id=net.chain.chain_id, market=net.market.address
    )
    body = {"content_hash": "0x" + content_hash.hex(), "wrapped_key": "0x" + wrapped.hex(), "provider": provider.address}
    answer = api.post("/deposits", json=body | {"signature": "0x" + forged.hex()})
    assert answer.status_code == 400 and answer.json()["error"] == "DepositSignatureInvalid"
    assert f"not signed by provider {provider.address}" in answer.json()["detail"]
    assert not net.key_manager.deposit_path(content_hash, provider.address).exists()
    signature = signed_deposit(
        provider, content_hash, wrapped, key_manager=net.key_manager.signer, chain_id=net.chain.chain_id, market=net.market.address
    )
    first = api.post("/deposits", json=body | {"signature": "0x" + signature.hex()})
    assert first.status_code == 201 and first.json()["provider"] == provider.address
    assert net.key_manager.deposit_path(content_hash, provider.address).exists()
    second = api.post("/deposits", json=body | {"signature": "0x" + signature.hex()})
    assert second.status_code == 409 and second.json()["error"] == "DepositExists"

    # A claim-release statement for a job that is not Claimed: 403 KeyReleaseRefused.
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    dataset = list_dataset(toy_package(60, 9), provider, terms=toy_terms(), market=net.market, registry=net.registry,
                           key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    job = consumer.create_job([dataset.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0).job_id  # type: ignore[arg-type]
    answer = api.post("/claim-releases", json={"job_id": job})
    assert answer.status_code == 403 and answer.json() == {"error": "KeyReleaseRefused", "detail": f"job {job} is not in the Claimed state"}

    # A release for a job that does not exist: the chain's revert, with its custom error.
    key = {"public_key": H32, "signature": SIG}
    answer = api.post("/releases", json={"job_id": 10**9, "dataset_id": dataset.dataset_id, "trainer": ADDRESS, "job_key": key})
    assert answer.status_code == 400 and answer.json()["error"] == "ContractReverted"
    assert answer.json()["revert"]["error"].startswith("JobMarket")

    # A certification with a nonce this verifier never issued: 403 AttestationRejected.
    claims, evidence = net.worker.enclave.attest(os.urandom(32))
    answer = api.post(
        "/attestation/certify", json={"evidence": "0x" + evidence.hex(), "claims": encode_claims(claims), "operator": ADDRESS}
    )
    assert answer.status_code == 403 and answer.json()["error"] == "AttestationRejected"


def test_info_and_health_describe_the_key_manager(api: TestClient, localnet: LocalNet) -> None:
    info = api.get("/info").json()
    assert info == {
        "signer": localnet.key_manager.signer, "encryption_key": "0x" + localnet.key_manager.enclave.process.encryption_key.hex(),
        "confirmations": 0, "chain_id": localnet.chain.chain_id, "market": localnet.market.address,
        "registry": localnet.registry.address, "verifier": localnet.verifier.signer.address,
        "model_market": None, "competitions": None,  # this node serves neither side (tests/enclave_worker/test_remote_keys.py)
    }  # fmt: skip
    health = api.get("/health")
    assert health.status_code == 200 and health.json()["registered"] is True and health.json()["signer"] == info["signer"]


def test_claims_travel_faithfully_and_a_dead_url_is_named() -> None:
    claims = {"role": int(Role.TRAINER), "signer": b"\x01" * 20, "encryption_key": b"\x00" * 32, "nonce": os.urandom(32)}
    assert decode_claims(json.loads(json.dumps(encode_claims(claims)))) == claims
    with pytest.raises(TypeError, match="'note' is a str"):
        encode_claims({"note": "0x01"})
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnreachable, match=f"key manager at {url} did not answer GET /info"):
        RemoteKeyManager(url, timeout=2)
    with pytest.raises(ServiceUnreachable, match=f"attestation verifier at {url}"):
        RemoteVerifier(url, timeout=2).challenge()


def test_the_command_refuses_to_start_without_its_keys_and_never_echoes_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STERLING_KEYMANAGER_")} | {"COLUMNS": "200"}
    command = [
        sys.executable,
        "-m",
        "sterling.cli",
        "keymanager",
        "--rpc-url",
        "http://127.0.0.1:1",
        "--deployment",
        str(tmp_path / "d.json"),
    ]
    missing = subprocess.run(command, cwd=checkout_root(), env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "STERLING_KEYMANAGER_OPERATOR_KEY" in missing.stderr
    bad_key = "ab" * 31  # 31 bytes: not a private key
    env |= {"STERLING_KEYMANAGER_OPERATOR_KEY": "0x" + "11" * 32, "STERLING_KEYMANAGER_VERIFIER_KEY": bad_key}
    malformed = subprocess.run(command, cwd=checkout_root(), env=env, capture_output=True, text=True, timeout=60)
    assert malformed.returncode == 1 and "STERLING_KEYMANAGER_VERIFIER_KEY does not hold a private key" in malformed.stderr
    assert bad_key not in malformed.stdout + malformed.stderr


def test_both_key_managers_are_key_releasers(localnet: LocalNet) -> None:
    assert isinstance(localnet.key_manager, KeyReleaser)
    assert not isinstance(JobKey(b"", b""), KeyReleaser)
