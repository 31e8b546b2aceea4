"""EIP-712 statements under the competition market's domain: admissions and score receipts.

A participant's sealed model enters a competition in two steps. The key manager opens it (the
model key is wrapped to the key manager with :func:`keywrap.submission_info`, which binds the
competition and the participant), checks it against the competition's rules and signs an
:class:`Admission`: "this ciphertext, of these weights, is a valid submission of ``participant``
to competition ``competition_id``". ``CompetitionMarket.submit`` takes it only from the
participant it names and only if an active key manager signed it, so a ciphertext copied from
another participant is refused twice over: its wrapped key does not open under the copier's name,
and its content hash is already on-chain.

The evaluator enclave scores a submission on one split of the private test set and signs a
:class:`ScoreReceipt`, which ``CompetitionMarket.postScore`` verifies (an active evaluator signed
it, for this chain, contract, competition, submission, test set and metric). A public-split
receipt carries the Ladder's output (:mod:`.ladder`) and the leaderboard's best before it, so it
is accepted only against that very leaderboard.

Deposits (a test-set key by its organizer, a model key by its participant) are the job market's
:class:`~.receipt.Deposit`, signed under this market's domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_canonical_address, to_checksum_address

from .errors import SterlingError
from .onchain import Split
from .receipt import DEPOSIT_TYPES, Deposit

DOMAIN_NAME = "SterlingCompetitions"
DOMAIN_VERSION = "1"

ADMISSION_TYPES: dict[str, list[dict[str, str]]] = {
    "Admission": [
        {"name": "competitionId", "type": "uint256"},
        {"name": "participant", "type": "address"},
        {"name": "contentHash", "type": "bytes32"},
        {"name": "weightsHash", "type": "bytes32"},
    ]
}

SCORE_TYPES: dict[str, list[dict[str, str]]] = {
    "ScoreReceipt": [
        {"name": "competitionId", "type": "uint256"},
        {"name": "index", "type": "uint32"},
        {"name": "contentHash", "type": "bytes32"},
        {"name": "testSetHash", "type": "bytes32"},
        {"name": "metric", "type": "uint8"},
        {"name": "split", "type": "uint8"},
        {"name": "score", "type": "uint64"},
        {"name": "previousBest", "type": "uint64"},
    ]
}

class CompetitionSignatureInvalid(SterlingError, ValueError):
    """A competition statement's signature is malformed or by someone else than it must be."""


def domain(chain_id: int, competitions: bytes) -> dict[str, Any]:
    """The EIP-712 domain of the competition market at ``competitions`` on ``chain_id``."""
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(competitions),
    }


@dataclass(frozen=True)
class Admission:
    """The key manager's statement that a sealed model is a valid submission of ``participant``."""

    competition_id: int
    participant: bytes
    """20-byte address of the participant (the only account ``submit`` takes it from)."""
    content_hash: bytes
    """SHA-256 of the sealed model's ciphertext."""
    weights_hash: bytes
    """SHA-256 of the plaintext safetensors (what a buyer gets after decrypting)."""

    def message(self) -> dict[str, Any]:
        if len(self.participant) != 20 or len(self.content_hash) != 32 or len(self.weights_hash) != 32:
            raise ValueError("an admission needs a 20-byte participant and 32-byte hashes")
        return {
            "competitionId": self.competition_id,
            "participant": to_checksum_address(self.participant),
            "contentHash": self.content_hash,
            "weightsHash": self.weights_hash,
        }


@dataclass(frozen=True)
class ScoreReceipt:
    """An evaluator's signed score of submission ``index`` of a competition on one split."""

    competition_id: int
    index: int
    """The submission's position in its competition (0-based, the order it was submitted in)."""
    content_hash: bytes
    test_set_hash: bytes
    metric: int
    split: Split
    score: int
    """PUBLIC: the leaderboard's value after the Ladder step; PRIVATE: the submission's score (10⁻⁶ units)."""
    previous_best: int
    """PUBLIC: the leaderboard's best the Ladder compared against; PRIVATE: 0."""

    def message(self) -> dict[str, Any]:
        if len(self.content_hash) != 32 or len(self.test_set_hash) != 32:
            raise ValueError("a score receipt needs 32-byte hashes")
        return {
            "competitionId": self.competition_id,
            "index": self.index,
            "contentHash": self.content_hash,
            "testSetHash": self.test_set_hash,
            "metric": int(self.metric),
            "split": int(self.split),
            "score": self.score,
            "previousBest": self.previous_best,
        }

    def as_tuple(self) -> tuple[int, int, bytes, bytes, int, int, int, int]:
        """The ``ICompetitionMarket.ScoreReceipt`` struct as web3 encodes it."""
        m = self.message()
        return (m["competitionId"], m["index"], m["contentHash"], m["testSetHash"], m["metric"], m["split"], m["score"], m["previousBest"])


Statement = Admission | ScoreReceipt | Deposit


def _types(statement: Statement) -> dict[str, list[dict[str, str]]]:
    if isinstance(statement, Admission):
        return ADMISSION_TYPES
    if isinstance(statement, ScoreReceipt):
        return SCORE_TYPES
    return DEPOSIT_TYPES


def sign(account: LocalAccount, statement: Statement, *, chain_id: int, competitions: bytes) -> bytes:
    """Sign a competition statement; returns the 65-byte signature.

    Example:
        >>> sign(participant, Deposit(content_hash, wrapped, km), chain_id=1337, competitions=market)  # doctest: +SKIP
    """
    signed = account.sign_typed_data(domain(chain_id, competitions), _types(statement), statement.message())
    return bytes(signed.signature)


def signer_of(statement: Statement, signature: bytes, *, chain_id: int, competitions: bytes) -> bytes:
    """The 20-byte address that signed ``statement`` under the market's domain on ``chain_id``.

    Raises:
        CompetitionSignatureInvalid: the signature is malformed (recovers to nobody).
    """
    message = encode_typed_data(domain(chain_id, competitions), _types(statement), statement.message())
    try:
        return to_canonical_address(Account.recover_message(message, signature=signature))
    except Exception as e:  # eth_keys raises several types for a malformed signature
        raise CompetitionSignatureInvalid(f"the signature is malformed ({type(e).__name__})") from e


def check_signed_by(statement: Statement, signature: bytes, signer: bytes, *, chain_id: int, competitions: bytes, what: str) -> None:
    """Raise :class:`CompetitionSignatureInvalid` unless ``signer`` signed ``statement``."""
    if signer_of(statement, signature, chain_id=chain_id, competitions=competitions) != signer:
        raise CompetitionSignatureInvalid(
            f"{what} is not signed by {to_checksum_address(signer)} for chain {chain_id} and competition market "
            f"{to_checksum_address(competitions)}"
        )
