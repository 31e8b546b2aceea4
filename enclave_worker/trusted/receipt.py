"""EIP-712 receipts the trainer enclave signs and ``JobMarket.submitResult`` verifies.

The domain binds chain id and market contract; the message binds job id, the datasets' content
hashes (in job order), the model and result hashes, the metrics document and the ε spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

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
