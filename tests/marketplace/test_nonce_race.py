"""Two senders for one account (services of one operator on one node): a transaction whose nonce
the other took between its read and its send is signed again with the next one, and both land."""

from __future__ import annotations

from typing import Any

import pytest

from marketplace.abi import load_artifact
from marketplace.chain import Chain, anvil

pytestmark = [pytest.mark.anvil]


def test_a_nonce_taken_by_another_sender_is_read_again_and_the_transaction_lands() -> None:
    with anvil() as chain:
        sender = chain.new_account()
        token = _deploy_token(chain)
        real_count = chain.w3.eth.get_transaction_count
        raced: list[int] = []

        def count_then_race(address: Any, block: Any = "latest") -> int:
            nonce = int(real_count(address, block))
            if not raced:  # the other process sends with this nonce right after our read
                raced.append(nonce)
                other = sender.sign_transaction(
                    {"to": sender.address, "value": 0, "gas": 21_000, "gasPrice": 2 * chain.w3.eth.gas_price, "nonce": nonce,
                     "chainId": chain.chain_id}
                )  # fmt: skip
                chain.w3.eth.send_raw_transaction(other.raw_transaction)
            return nonce

        chain.w3.eth.get_transaction_count = count_then_race  # type: ignore[method-assign]
        try:
            result = chain.transact(sender, token.functions.mint(sender.address, 5), name="mint")
        finally:
            chain.w3.eth.get_transaction_count = real_count  # type: ignore[method-assign]
        assert raced, "the race was not staged"
        assert result.receipt["status"] == 1
        assert int(result.receipt["transactionIndex"]) >= 0 and chain.w3.eth.get_transaction(result.tx_hash)["nonce"] == raced[0] + 1
        assert token.functions.balanceOf(sender.address).call() == 5
        assert real_count(sender.address, "latest") == raced[0] + 2  # both transactions are on chain


def _deploy_token(chain: Chain) -> Any:
    artifact = load_artifact("TestStablecoin", test=True)
    deployer = chain.new_account()
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    address = chain.transact(deployer, factory.constructor(), name="deploy").receipt["contractAddress"]
    return chain.w3.eth.contract(address=address, abi=artifact["abi"])
