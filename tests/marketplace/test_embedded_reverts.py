"""Reverts on the embedded chain whose custom-error data web3 cannot render still surface as
reverts with their raw data (a full-suite run once hit web3's OverflowError for dataset id 38)."""

from __future__ import annotations

import pytest
from eth_tester.exceptions import TransactionFailed

from marketplace import chain as chain_mod


def _reverting_contract(chain: chain_mod.Chain, payload: bytes) -> str:
    """Deploy EVM code that reverts every call with ``payload`` (hand-assembled: CODECOPY + REVERT)."""
    size = len(payload)
    runtime = bytes([0x60, size, 0x60, 12, 0x60, 0, 0x39, 0x60, size, 0x60, 0, 0xFD]) + payload
    init = bytes([0x60, len(runtime), 0x80, 0x60, 11, 0x60, 0, 0x39, 0x60, 0, 0xF3]) + runtime
    w3 = chain.w3
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": w3.eth.accounts[0], "data": init}))
    assert receipt["status"] == 1 and w3.eth.get_code(receipt["contractAddress"]) == runtime
    return str(receipt["contractAddress"])


@pytest.mark.parametrize("first_word", [38, 5, 64])
def test_custom_error_data_web3_cannot_read_as_a_string_is_still_a_revert(first_word: int) -> None:
    chain = chain_mod.embedded()
    payload = bytes.fromhex("dd1d1436") + b"".join(n.to_bytes(32, "big") for n in (first_word, 3_000_000, 2_000_000))
    address = _reverting_contract(chain, payload)
    with pytest.raises(TransactionFailed, match="execution reverted"):
        chain.w3.eth.estimate_gas({"from": chain.w3.eth.accounts[0], "to": address})
