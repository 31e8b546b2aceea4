"""The browser's deposit signature (web/js/listing-flow.js ``signDeposit``) recovers, in Python, to
the provider under the job market's domain: the JS copy of the EIP-712 ``Deposit`` type matches its
one definition in enclave_worker/trusted/receipt.py, and it is bound to chain id, market and key manager."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account
from playwright.sync_api import Page

from enclave_worker.trusted.receipt import DOMAIN_NAME, DOMAIN_VERSION, Deposit, DepositSignatureInvalid, check_deposit, deposit_signer

pytestmark = pytest.mark.browser


def test_a_deposit_signed_in_the_browser_recovers_to_the_provider(page: Page, static_server: str) -> None:
    page.goto(f"{static_server}/test/crypto.html")
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=10_000)
    provider = Account.create()
    content_hash = hashlib.sha256(b"ciphertext").digest()
    wrapped = bytes(range(80))
    key_manager, market, chain_id = Account.create().address, Account.create().address, 31337
    signature = page.evaluate(
        """async ([key, contentHash, wrapped, keyManager, market, chainId, name, version]) => {
            const { Wallet, getBytes } = await import("ethers");
            const { signDeposit } = await import("/js/listing-flow.js");
            const domain = { name, version, chainId, verifyingContract: market };
            return signDeposit(new Wallet(key), { domain, contentHash, wrappedKey: getBytes(wrapped), keyManager });
        }""",
        [provider.key.hex(), content_hash.hex(), "0x" + wrapped.hex(), key_manager, market, chain_id, DOMAIN_NAME, DOMAIN_VERSION],
    )
    signed = bytes.fromhex(signature.removeprefix("0x"))
    statement = Deposit(content_hash=content_hash, wrapped_key=wrapped, key_manager=bytes.fromhex(key_manager[2:]))
    market_bytes = bytes.fromhex(market[2:])
    assert deposit_signer(statement, signed, chain_id=chain_id, market=market_bytes) == bytes.fromhex(provider.address[2:])
    with pytest.raises(DepositSignatureInvalid):
        check_deposit(statement, signed, provider=bytes.fromhex(provider.address[2:]), chain_id=chain_id + 1, market=market_bytes)
