"""EIP-712 statements under the job market's domain: receipts, claim releases and deposits.

The trainer enclave signs a :class:`Receipt`, which ``JobMarket.submitResult`` verifies: the
domain binds chain id and market contract; the message binds job id, the datasets' content
hashes (in job order), the model and result hashes, the metrics document and the ε spent.

The key manager signs a :class:`ClaimRelease`, which ``JobMarket.releaseClaim`` verifies (same
domain): "no run of job ``job_id`` by ``enclave`` under the job's ``charges``-th claim had, or
will ever have, the job's data keys to produce anything with", so the claim can be given back
without an ε charge. It says so when it released no key under the claim, or when the holding
trainer enclave itself signed a :class:`RunAbandoned` for it (same domain; verified by the key
manager's trusted part, not on-chain): "this enclave produced nothing from job ``job_id`` and
never will" — a failed run, given back at once instead of lapsing.

A provider signs a :class:`Deposit` (same domain; verified by the key manager's trusted part,
not on-chain): "the data key of the ciphertext ``content_hash`` is the wrapped key whose keccak256
is ``wrappedKeyHash``, deposited with the key manager ``keyManager``". The key manager keeps a
deposit per (content hash, signer) and releases only the one by the listing's on-chain provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address, to_checksum_address

from .errors import SterlingError
from .onchain import EPSILON_SCALE

DOMAIN_NAME = "SterlingJobMarket"
DOMAIN_VERSION = "1"

RECEIPT_TYPES: dict[str, list[dict[str, str]]] = {
    "Receipt": [
        {"name": "jobId", "type": "uint256"},
        {"name": "datasetsHash", "type": "bytes32"},
        {"name": "modelHash", "type": "bytes32"},
        {"name": "resultHash", "type": "bytes32"},
        {"name": "metricsHash", "type": "bytes32"},
        {"name": "epsilonSpent", "type": "uint64"},
    ]
}

CLAIM_RELEASE_TYPES: dict[str, list[dict[str, str]]] = {
    "ClaimRelease": [
        {"name": "jobId", "type": "uint256"},
        {"name": "enclave", "type": "address"},
        {"name": "charges", "type": "uint16"},
    ]
}
MAX_CHARGES = 2**16 - 1
"""``JobInfo.charges`` is a ``uint16``."""

RUN_ABANDONED_TYPES: dict[str, list[dict[str, str]]] = {
    "RunAbandoned": [
        {"name": "jobId", "type": "uint256"},
        {"name": "enclave", "type": "address"},
        {"name": "charges", "type": "uint16"},
    ]
}

DEPOSIT_TYPES: dict[str, list[dict[str, str]]] = {
    "Deposit": [
        {"name": "contentHash", "type": "bytes32"},
        {"name": "wrappedKeyHash", "type": "bytes32"},
        {"name": "keyManager", "type": "address"},
    ]
}


@dataclass(frozen=True)
class Receipt:
    """What the enclave attests to about one finished job."""

    job_id: int
    datasets_hash: bytes
    model_hash: bytes
    result_hash: bytes
    metrics_hash: bytes
    epsilon_spent: int

    def message(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "datasetsHash": self.datasets_hash,
            "modelHash": self.model_hash,
            "resultHash": self.result_hash,
            "metricsHash": self.metrics_hash,
            "epsilonSpent": self.epsilon_spent,
        }

    def as_tuple(self) -> tuple[int, bytes, bytes, bytes, bytes, int]:
        """The ABI tuple for ``submitResult``."""
        return (self.job_id, self.datasets_hash, self.model_hash, self.result_hash, self.metrics_hash, self.epsilon_spent)


def domain(chain_id: int, market: bytes) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(market),
    }


def datasets_hash(content_hashes: list[bytes]) -> bytes:
    """``keccak256(abi.encodePacked(contentHash_1, ..., contentHash_n))`` in job order."""
    return keccak(b"".join(content_hashes))


def epsilon_to_units(epsilon: float) -> int:
    """ε as the contracts' fixed-point integer, rounded up (never in the consumer's favour)."""
    units = int(epsilon * EPSILON_SCALE)
    return units if units >= epsilon * EPSILON_SCALE else units + 1


def sign_receipt(account: LocalAccount, receipt: Receipt, *, chain_id: int, market: bytes) -> bytes:
    """Sign a receipt with the enclave's key; returns the 65-byte signature."""
    signed = account.sign_typed_data(domain(chain_id, market), RECEIPT_TYPES, receipt.message())
    return bytes(signed.signature)


@dataclass(frozen=True)
class ClaimRelease:
    """The key manager's statement that the claim ``(job_id, enclave, charges)`` never had, and
    never will have, a data key of the job."""

    job_id: int
    enclave: bytes
    """The holding trainer enclave's 20-byte signer address."""
    charges: int
    """The job's ``charges`` count when the claim was made (``JobInfo.charges``)."""

    def message(self) -> dict[str, Any]:
        if len(self.enclave) != 20 or not 0 <= self.charges <= MAX_CHARGES:
            raise ValueError("a claim release needs a 20-byte enclave address and charges in 0..65535")
        return {"jobId": self.job_id, "enclave": to_checksum_address(self.enclave), "charges": self.charges}


@dataclass(frozen=True)
class RunAbandoned(ClaimRelease):
    """A trainer enclave's statement that it produced nothing from the job under this claim and
    never will (its per-job key is gone and it refuses to run the job): signed after a failed run,
    so the key manager may give the claim back although keys were released under it."""


def _types(statement: ClaimRelease) -> dict[str, list[dict[str, str]]]:
    return RUN_ABANDONED_TYPES if isinstance(statement, RunAbandoned) else CLAIM_RELEASE_TYPES


def sign_claim_release(account: LocalAccount, statement: ClaimRelease, *, chain_id: int, market: bytes) -> bytes:
    """Sign a claim release (key manager) or a :class:`RunAbandoned` (trainer); returns the 65-byte signature."""
    signed = account.sign_typed_data(domain(chain_id, market), _types(statement), statement.message())
    return bytes(signed.signature)


def claim_release_signer(statement: ClaimRelease, signature: bytes, *, chain_id: int, market: bytes) -> bytes:
    """The 20-byte address that signed ``statement`` (for a ClaimRelease, what ``releaseClaim``
    checks is a key manager; for a RunAbandoned, what the key manager checks is the holder)."""
    message = encode_typed_data(domain(chain_id, market), _types(statement), statement.message())
    return to_canonical_address(Account.recover_message(message, signature=signature))


class DepositRefused(SterlingError, PermissionError):
    """The key manager refused a provider's deposit of a wrapped data key; the subclass says why."""


class DepositSignatureInvalid(DepositRefused):
    """The deposit is not signed by the provider it names, for this chain, market and key manager."""


class DepositExists(DepositRefused):
    """The provider already deposited a key for this content hash; the first deposit stays."""


@dataclass(frozen=True)
class Deposit:
    """A provider's statement binding a wrapped data key to a ciphertext and a key manager."""

    content_hash: bytes
    """SHA-256 of the dataset's ciphertext (the listing's ``contentHash``)."""
    wrapped_key: bytes
    """The data key HPKE-wrapped to the key manager; signed as its keccak256."""
    key_manager: bytes
    """The key manager enclave's 20-byte signer address."""

    def message(self) -> dict[str, Any]:
        if len(self.content_hash) != 32 or len(self.key_manager) != 20:
            raise ValueError("a deposit needs a 32-byte content hash and a 20-byte key-manager address")
        return {
            "contentHash": self.content_hash,
            "wrappedKeyHash": keccak(self.wrapped_key),
            "keyManager": to_checksum_address(self.key_manager),
        }


def sign_deposit(account: LocalAccount, statement: Deposit, *, chain_id: int, market: bytes) -> bytes:
    """Sign a deposit with the provider's key; returns the 65-byte signature.

    Example:
        >>> sign_deposit(provider, Deposit(content_hash, wrapped, km_signer), chain_id=1337, market=market)  # doctest: +SKIP
    """
    signed = account.sign_typed_data(domain(chain_id, market), DEPOSIT_TYPES, statement.message())
    return bytes(signed.signature)


def deposit_signer(statement: Deposit, signature: bytes, *, chain_id: int, market: bytes) -> bytes:
    """The 20-byte address that signed ``statement`` under the market's domain on ``chain_id``.

    Raises:
        DepositSignatureInvalid: the signature is malformed (recovers to nobody).
    """
    message = encode_typed_data(domain(chain_id, market), DEPOSIT_TYPES, statement.message())
    try:
        return to_canonical_address(Account.recover_message(message, signature=signature))
    except Exception as e:  # eth_keys raises several types for a malformed signature
        raise DepositSignatureInvalid(f"the deposit signature is malformed ({type(e).__name__})") from e


def check_deposit(statement: Deposit, signature: bytes, *, provider: bytes, chain_id: int, market: bytes) -> None:
    """Check that ``provider`` signed ``statement`` (trusted part and host alike).

    Raises:
        DepositSignatureInvalid: it recovers to another address (a forged or absent signature, or
            one made for another chain id, market contract, key manager, content hash or key).
    """
    signer = deposit_signer(statement, signature, chain_id=chain_id, market=market)
    if signer != provider:
        raise DepositSignatureInvalid(
            f"the deposit for {statement.content_hash.hex()} is not signed by provider {to_checksum_address(provider)} "
            f"for chain {chain_id}, market {to_checksum_address(market)} and key manager {to_checksum_address(statement.key_manager)}"
        )


# Refusals of the key manager about claims, worded once for its trusted part and its host.


def retired_claim_message(job_id: int, charges: int) -> str:
    """Why no key is released to a claim the key manager gave back (trusted part and host alike)."""
    return (
        f"the claim on job {job_id} by this enclave (charges {charges}) was given back with a ClaimRelease statement: "
        "no key is released under it"
    )


def counter_message(dataset: str, job_id: int, prior: int, charges: int) -> str:
    """Why a release would give more runs the key than the chain debits ε for."""
    return (
        f"the key of {dataset} was released {prior} time(s) for job {job_id} and the chain shows {charges} charged "
        f"lapsed claim(s): at most charges + 1 releases per job and dataset, one per ε debit"
    )


def keys_released_message(job_id: int, enclave: bytes, charges: int) -> str:
    """Why the key manager does not sign a ClaimRelease statement (trusted part and host alike)."""
    return (
        f"data keys of job {job_id} were released to enclave {to_checksum_address(enclave)} under its claim "
        f"(charges {charges}) and it did not sign a RunAbandoned: no ClaimRelease; the job can only be re-claimed, "
        "with an ε charge, after its lease lapses"
    )
