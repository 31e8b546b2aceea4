"""``POST /api/key-manager/deposits`` takes only deposits signed by their provider: a bad signature is
answered 400, a second deposit by the same provider 409, and neither touches the stored key."""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount

from enclave_worker.audit import DEPOSIT, DEPOSIT_REFUSED
from enclave_worker.trusted import dataformat, keywrap
from marketplace.provider import signed_deposit
from tests.gateway.conftest import Gateway


def _deposit_body(gateway: Gateway, signer: LocalAccount, content_hash: str, wrapped: bytes, **claims: object) -> dict[str, object]:
    net = gateway.net
    binding: dict[str, object] = {"key_manager": net.key_manager.signer, "chain_id": net.chain.chain_id, "market": net.market.address}
    binding |= {k: v for k, v in claims.items() if k in binding}
    signature = signed_deposit(signer, bytes.fromhex(content_hash), wrapped, **binding)  # type: ignore[arg-type]
    provider = claims.get("provider", signer.address)
    return {"content_hash": content_hash, "wrapped_key": wrapped.hex(), "provider": provider, "signature": "0x" + signature.hex()}


def test_deposits_need_the_providers_signature_and_are_never_replaced(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    stored = net.blobs.put(dataformat.encrypt_bytes(b"rows", dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32)))
    km_key = bytes.fromhex(client.get("/api/config").json()["key_manager"]["encryption_key"][2:])

    def wrapped() -> bytes:
        return keywrap.wrap(dataformat.new_data_key(), km_key, info=keywrap.datakey_info(bytes.fromhex(stored)))

    provider, stranger = Account.create(), Account.create()
    first = client.post("/api/key-manager/deposits", json=_deposit_body(gateway, provider, stored, wrapped()))
    assert first.status_code == 201 and first.json()["provider"] == provider.address
    sealed = net.key_manager.deposit_path(bytes.fromhex(stored), provider.address).read_bytes()

    again = client.post("/api/key-manager/deposits", json=_deposit_body(gateway, provider, stored, wrapped()))
    assert again.status_code == 409
    assert (
        again.json()["detail"]
        == f"deposit refused: provider {provider.address} already deposited a key for {stored}: a deposit is never replaced"
    )

    forged = client.post("/api/key-manager/deposits", json=_deposit_body(gateway, stranger, stored, wrapped(), provider=provider.address))
    assert forged.status_code == 400
    assert forged.json()["detail"].startswith(f"deposit refused: the deposit for {stored} is not signed by provider {provider.address}")
    for elsewhere in ({"chain_id": net.chain.chain_id + 1}, {"market": net.registry.address}):
        misbound = client.post("/api/key-manager/deposits", json=_deposit_body(gateway, provider, stored, wrapped(), **elsewhere))
        assert misbound.status_code == 400 and "is not signed by provider" in misbound.json()["detail"]
    unsigned = client.post(
        "/api/key-manager/deposits", json={**_deposit_body(gateway, provider, stored, wrapped()), "signature": "00" * 65}
    )
    assert unsigned.status_code == 400 and unsigned.json()["detail"].startswith("deposit refused: ")
    missing = client.post("/api/key-manager/deposits", json={"content_hash": stored, "wrapped_key": wrapped().hex()})
    assert missing.status_code == 422 and "provider" in missing.json()["detail"] and "signature" in missing.json()["detail"]

    assert net.key_manager.deposit_path(bytes.fromhex(stored), provider.address).read_bytes() == sealed
    assert not net.key_manager.deposit_path(bytes.fromhex(stored), stranger.address).exists()
    kinds = [(e.kind, e.provider) for e in net.key_manager.deposit_log(content_hash=bytes.fromhex(stored))]
    assert kinds == [(DEPOSIT, provider.address)] + [(DEPOSIT_REFUSED, provider.address)] * 5
