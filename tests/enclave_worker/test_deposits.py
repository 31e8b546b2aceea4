"""Deposits are bound to their provider (issue 14, finding 1).

A deposit carries the provider's EIP-712 ``Deposit`` signature, checked by the key manager's
trusted part, and is kept per (content hash, provider), never replaced; a release uses only the
deposit of the listing's on-chain provider, and the trusted part checks the provider sealed with
the key. So a stranger's deposit for a listed dataset's content hash, however signed, never
changes the key a job gets, and every deposit decision is in the hash-chained audit log.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from enclave_worker.audit import DEPOSIT, DEPOSIT_REFUSED, RELEASE, AuditLog
from enclave_worker.host import EnclaveRequestFailed
from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.receipt import DepositExists, DepositSignatureInvalid
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus
from marketplace.errors import KeyReleaseRefused
from marketplace.provider import ListedDataset, list_dataset, signed_deposit
from sterling.localnet import LocalNet
from tests.conftest import toy_package, toy_spec, toy_terms


def _wrapped(net: LocalNet, content_hash: bytes) -> bytes:
    """A fresh data key wrapped to the key manager for ``content_hash`` (what a stranger can make too)."""
    km_key = net.registry.active_key_manager_key(net.key_manager.signer)
    return keywrap.wrap(dataformat.new_data_key(), km_key, info=keywrap.datakey_info(content_hash))


def _deposit(
    net: LocalNet, signer: LocalAccount, content_hash: bytes, wrapped: bytes, *, provider: str | None = None,
    chain_id: int | None = None, market: str | None = None, key_manager: str | None = None,
) -> None:  # fmt: skip
    """``signer`` signs a deposit (for this chain, market and key manager unless told) claiming ``provider``."""
    signature = signed_deposit(
        signer, content_hash, wrapped, key_manager=key_manager or net.key_manager.signer,
        chain_id=net.chain.chain_id if chain_id is None else chain_id, market=market or net.market.address,
    )  # fmt: skip
    net.key_manager.deposit(content_hash, wrapped, provider=provider or signer.address, signature=signature)


def _list(net: LocalNet, seed: int) -> tuple[ListedDataset, LocalAccount]:
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, seed), provider, terms=toy_terms(), market=net.market, registry=net.registry,
                          key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    return listed, provider


def _run(net: LocalNet, dataset_id: int) -> int:
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    return created.job_id


def test_a_strangers_deposit_never_changes_the_key_a_job_gets(localnet: LocalNet) -> None:
    net = localnet
    listed, provider = _list(net, 41)
    stranger = Account.create()
    sealed_before = net.key_manager.deposit_path(listed.content_hash, provider.address).read_bytes()

    # 1. The stranger deposits a key of its own for the listed content hash, signed by itself:
    #    accepted as the stranger's deposit, kept apart, never used for the provider's listing.
    _deposit(net, stranger, listed.content_hash, _wrapped(net, listed.content_hash))
    # 2. A forged signature claiming the provider (signed by the stranger), and an absent one.
    with pytest.raises(DepositSignatureInvalid, match=f"not signed by provider {provider.address}"):
        _deposit(net, stranger, listed.content_hash, _wrapped(net, listed.content_hash), provider=provider.address)
    with pytest.raises(DepositSignatureInvalid, match="malformed|not signed by provider"):
        net.key_manager.deposit(listed.content_hash, _wrapped(net, listed.content_hash), provider=provider.address, signature=bytes(65))
    with pytest.raises(DepositSignatureInvalid, match="must be 65 bytes"):
        net.key_manager.deposit(listed.content_hash, _wrapped(net, listed.content_hash), provider=provider.address, signature=b"")

    assert net.key_manager.deposit_path(listed.content_hash, provider.address).read_bytes() == sealed_before
    job_id = _run(net, listed.dataset_id)  # the trainer opens the provider's ciphertext: the provider's key
    assert net.market.job(job_id).status is JobStatus.COMPLETED

    deposits = [(e.kind, e.provider) for e in net.key_manager.deposit_log(content_hash=listed.content_hash)]
    assert deposits == [
        (DEPOSIT, provider.address),
        (DEPOSIT, stranger.address),
        (DEPOSIT_REFUSED, provider.address),
        (DEPOSIT_REFUSED, provider.address),
        (DEPOSIT_REFUSED, provider.address),
    ]
    refused = net.key_manager.deposit_log(content_hash=listed.content_hash)[2]
    assert refused.reason.startswith(f"the deposit for {listed.content_hash.hex()} is not signed by provider {provider.address}")
    releases = net.key_manager.audit_log(content_hash=listed.content_hash)
    assert [(e.job_id, e.kind, e.released) for e in releases] == [(job_id, RELEASE, True)]
    net.key_manager.audit.verify()


def test_a_stranger_depositing_first_does_not_block_the_provider(localnet: LocalNet) -> None:
    net = localnet
    stranger = Account.create()

    class FrontRunner:
        """The key manager, with a stranger's deposit for the same content hash slipped in just before each."""

        signer = net.key_manager.signer

        def deposit(self, content_hash: bytes, wrapped_key: bytes, *, provider: str, signature: bytes) -> None:
            _deposit(net, stranger, content_hash, wrapped_key)  # even the provider's own wrapped key, replayed
            net.key_manager.deposit(content_hash, wrapped_key, provider=provider, signature=signature)

    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, 42), provider, terms=toy_terms(), market=net.market, registry=net.registry,
                          key_manager=FrontRunner(), blobs=net.blobs)  # fmt: skip
    assert [e.provider for e in net.key_manager.deposit_log(content_hash=listed.content_hash)] == [stranger.address, provider.address]
    assert net.market.job(_run(net, listed.dataset_id)).status is JobStatus.COMPLETED


def test_a_provider_cannot_replace_its_deposit(localnet: LocalNet) -> None:
    net = localnet
    listed, provider = _list(net, 43)
    path = net.key_manager.deposit_path(listed.content_hash, provider.address)
    original = path.read_bytes()
    with pytest.raises(DepositExists, match=f"provider {provider.address} already deposited a key for {listed.content_hash.hex()}"):
        _deposit(net, provider, listed.content_hash, _wrapped(net, listed.content_hash))
    assert path.read_bytes() == original
    assert [e.kind for e in net.key_manager.deposit_log(content_hash=listed.content_hash)] == [DEPOSIT, DEPOSIT_REFUSED]
    assert net.market.job(_run(net, listed.dataset_id)).status is JobStatus.COMPLETED  # still the first key


def test_a_deposit_signature_is_bound_to_chain_market_and_key_manager(localnet: LocalNet) -> None:
    net = localnet
    provider = net.chain.new_account()
    content_hash = hashlib.sha256(b"bound deposit").digest()
    wrapped = _wrapped(net, content_hash)
    elsewhere = (
        {"chain_id": net.chain.chain_id + 1},
        {"market": net.registry.address},
        {"key_manager": Account.create().address},
    )
    for binding in elsewhere:
        with pytest.raises(DepositSignatureInvalid, match=f"not signed by provider {provider.address} for chain {net.chain.chain_id}"):
            _deposit(net, provider, content_hash, wrapped, **binding)
    assert not net.key_manager.deposit_path(content_hash, provider.address).exists()
    _deposit(net, provider, content_hash, wrapped)  # the same key, signed for this chain, market and key manager
    kinds = [e.kind for e in net.key_manager.deposit_log(content_hash=content_hash)]
    assert kinds == [DEPOSIT_REFUSED, DEPOSIT_REFUSED, DEPOSIT_REFUSED, DEPOSIT]


def test_the_trusted_part_releases_only_a_key_sealed_for_the_listing_provider(localnet: LocalNet) -> None:
    """A host that swaps a stranger's sealed deposit into the provider's place gets a refusal from the enclave."""
    net = localnet
    listed, provider = _list(net, 44)
    stranger = Account.create()
    _deposit(net, stranger, listed.content_hash, _wrapped(net, listed.content_hash))
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.market.claim_job(net.operator, created.job_id, net.worker.signer)
    job_key = net.worker.prepare_job(created.job_id)
    path = net.key_manager.deposit_path(listed.content_hash, provider.address)
    path.write_bytes(net.key_manager.deposit_path(listed.content_hash, stranger.address).read_bytes())
    with pytest.raises(KeyReleaseRefused) as refused:
        net.key_manager.release(job_id=created.job_id, dataset_id=listed.dataset_id, trainer=net.worker.signer, job_key=job_key)
    assert str(refused.value) == (
        f"the sealed key of this dataset was deposited by {stranger.address}, not by the dataset's on-chain provider "
        f"{provider.address} on this market"
    )


def test_audit_logs_written_before_deposits_stay_readable(tmp_path: Path) -> None:
    old = {
        "time": 1.0, "job_id": 1, "dataset_id": 1, "content_hash": "22" * 32, "trainer": "0x" + "11" * 20, "released": True,
        "reason": "claimed by this trainer", "kind": "release", "charges": 0, "retired": False, "prev": "0" * 64,
    }  # fmt: skip
    (tmp_path / "audit.jsonl").write_bytes(json.dumps(old, sort_keys=True).encode() + b"\n")
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(job_id=0, dataset_id=0, content_hash=bytes(32), trainer="", released=False, reason="r", kind=DEPOSIT, provider="0xP")
    assert [(e.kind, e.provider) for e in log.entries()] == [(RELEASE, None), (DEPOSIT, "0xP")]
    assert [e.kind for e in log.entries(kinds=(DEPOSIT,))] == [DEPOSIT]
    assert log.verify() == 2


def test_the_trusted_part_checks_the_deposit_signature_itself(localnet: LocalNet) -> None:
    """A host that skips its own check still gets nothing sealed for a forged or misbound deposit."""
    net = localnet
    provider, stranger = Account.create(), Account.create()
    content_hash = hashlib.sha256(b"trusted check").digest()
    wrapped = _wrapped(net, content_hash)
    fields: dict[str, Any] = {
        "chain_id": net.chain.chain_id, "market": net.market.address_bytes, "content_hash": content_hash, "wrapped_key": wrapped,
        "provider": bytes.fromhex(provider.address[2:]),
    }  # fmt: skip

    def signature(signer: LocalAccount, chain_id: int) -> bytes:
        return signed_deposit(
            signer, content_hash, wrapped, key_manager=net.key_manager.signer, chain_id=chain_id, market=net.market.address
        )

    for forged in (signature(stranger, net.chain.chain_id), signature(provider, net.chain.chain_id + 1), bytes(65)):
        with pytest.raises(EnclaveRequestFailed) as refused:
            net.key_manager.enclave.process.request("deposit", **fields, signature=forged)
        assert refused.value.error == "DepositSignatureInvalid"
    sealed = net.key_manager.enclave.process.request("deposit", **fields, signature=signature(provider, net.chain.chain_id))
    assert len(sealed["sealed_key"]) == 5 + 12 + 32 + 20 + 20 + 32 + 16  # header, nonce, (chain id, market, provider, key), tag
