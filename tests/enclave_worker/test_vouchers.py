"""The model market's EIP-712 statements: the hand-written hashing equals eth-account's, and signatures bind every field."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_utils import to_canonical_address

from enclave_worker.trusted import vouchers
from enclave_worker.trusted.vouchers import ResponseReceipt, Voucher, VoucherInvalid

CHAIN, MARKET = 31337, os.urandom(20)


def _voucher(client: bytes, **changes: object) -> Voucher:
    fields: dict[str, object] = {"model_id": 7, "client": client, "enclave": b"\x11" * 20, "amount": 3 * 10**15, "queries": 12}
    fields.update(changes)
    return Voucher(**fields)  # type: ignore[arg-type]


def test_hand_hashed_voucher_and_receipt_sign_as_eth_account_signs_typed_data() -> None:
    account = Account.create()
    voucher = _voucher(to_canonical_address(account.address), amount=2**200, queries=2**64 - 1)
    ours = vouchers.sign_voucher(account.key, voucher, chain_id=CHAIN, model_market=MARKET)
    theirs = account.sign_typed_data(vouchers.domain(CHAIN, MARKET), vouchers.VOUCHER_TYPES, voucher.message()).signature
    assert ours == bytes(theirs)
    receipt = ResponseReceipt(7, voucher.client, os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32), 5, 9)
    signed = account.sign_typed_data(vouchers.domain(CHAIN, MARKET), vouchers.RESPONSE_TYPES, receipt.message()).signature
    assert vouchers.response_signer(receipt, bytes(signed), chain_id=CHAIN, model_market=MARKET) == voucher.client


@pytest.mark.parametrize(
    "change",
    [{"model_id": 8}, {"enclave": b"\x12" * 20}, {"amount": 3 * 10**15 + 1}, {"queries": 13}],
    ids=["other model", "other enclave", "other amount", "other queries"],
)
def test_a_voucher_signature_binds_every_field(change: dict[str, object]) -> None:
    account = Account.create()
    client = to_canonical_address(account.address)
    signature = vouchers.sign_voucher(account.key, _voucher(client), chain_id=CHAIN, model_market=MARKET)
    vouchers.check_voucher(_voucher(client), signature, chain_id=CHAIN, model_market=MARKET)
    with pytest.raises(VoucherInvalid, match="not signed by its client"):
        vouchers.check_voucher(_voucher(client, **change), signature, chain_id=CHAIN, model_market=MARKET)


def test_a_voucher_signature_binds_chain_and_market() -> None:
    account = Account.create()
    voucher = _voucher(to_canonical_address(account.address))
    signature = vouchers.sign_voucher(account.key, voucher, chain_id=CHAIN, model_market=MARKET)
    for chain_id, market in ((CHAIN + 1, MARKET), (CHAIN, os.urandom(20))):
        with pytest.raises(VoucherInvalid):
            vouchers.check_voucher(voucher, signature, chain_id=chain_id, model_market=market)


def test_malformed_signatures_and_fields_are_refused_cleanly() -> None:
    account = Account.create()
    voucher = _voucher(to_canonical_address(account.address))
    good = vouchers.sign_voucher(account.key, voucher, chain_id=CHAIN, model_market=MARKET)
    for bad in (b"", good[:64], good[:64] + b"\x05", bytes(64) + b"\x1b"):
        with pytest.raises(VoucherInvalid):
            vouchers.check_voucher(voucher, bad, chain_id=CHAIN, model_market=MARKET)
    with pytest.raises(VoucherInvalid, match="malformed"):
        vouchers.check_voucher(_voucher(voucher.client, queries=2**64), good, chain_id=CHAIN, model_market=MARKET)
    with pytest.raises(VoucherInvalid, match="malformed"):
        vouchers.check_voucher(_voucher(voucher.client, amount=-1), good, chain_id=CHAIN, model_market=MARKET)


def test_a_malleable_high_s_twin_is_refused_as_openzeppelin_refuses_it() -> None:
    """(r, N - s, v ^ 1) recovers the same signer, but the contract's ECDSA refuses it: the enclave
    must too, or a client could pay with vouchers the operator can never redeem."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    account = Account.create()
    voucher = _voucher(to_canonical_address(account.address))
    good = vouchers.sign_voucher(account.key, voucher, chain_id=CHAIN, model_market=MARKET)
    s = int.from_bytes(good[32:64], "big")
    assert s <= n // 2  # we sign low-s
    twin = good[:32] + (n - s).to_bytes(32, "big") + bytes([55 - good[64]])
    with pytest.raises(VoucherInvalid, match="upper half"):
        vouchers.check_voucher(voucher, twin, chain_id=CHAIN, model_market=MARKET)
    for r in (0, n):
        with pytest.raises(VoucherInvalid, match="r is out of range"):
            vouchers.check_voucher(voucher, r.to_bytes(32, "big") + good[32:], chain_id=CHAIN, model_market=MARKET)
