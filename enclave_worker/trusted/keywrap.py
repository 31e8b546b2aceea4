"""HPKE key wrapping (RFC 9180 base mode: X25519, HKDF-SHA256, AES-256-GCM) and its bindings.

Every wrap binds an ``info`` string that names what the key is for, so a wrapped key cannot be
replayed in another context: a provider's data key is bound to its dataset's content hash, a
released key to (chain id, market, job, dataset), a model key to (chain id, market, job).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from .errors import KeyUnwrapFailed

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
PUBLIC_KEY_LEN = 32


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte X25519 public key (what goes on-chain as ``bytes32``)."""
    return private_key.public_key().public_bytes_raw()


def wrap(plaintext_key: bytes, recipient_public_key: bytes, *, info: bytes) -> bytes:
    """Encrypt ``plaintext_key`` to a raw X25519 public key under the binding ``info``."""
    if len(recipient_public_key) != PUBLIC_KEY_LEN:
        raise ValueError(f"recipient public key must be {PUBLIC_KEY_LEN} bytes, got {len(recipient_public_key)}")
    return _SUITE.encrypt(plaintext_key, X25519PublicKey.from_public_bytes(recipient_public_key), info=info)


def unwrap(wrapped: bytes, private_key: X25519PrivateKey, *, info: bytes) -> bytes:
    """Open a wrapped key.

    Raises:
        KeyUnwrapFailed: not addressed to this key, or bound to another ``info``.
    """
    try:
        return _SUITE.decrypt(wrapped, private_key, info=info)
    except (InvalidTag, ValueError) as e:
        raise KeyUnwrapFailed("wrapped key does not open for this recipient and binding") from e


def datakey_info(content_hash: bytes) -> bytes:
    """Binding of a provider's data key, wrapped to the key manager, to its dataset ciphertext."""
    return b"sterling/v1/datakey/" + content_hash


def release_info(chain_id: int, market: bytes, job_id: int, content_hash: bytes) -> bytes:
    """Binding of a data key released by the key manager to one trainer for one job."""
    return b"sterling/v1/release/" + chain_id.to_bytes(32, "big") + market + job_id.to_bytes(32, "big") + content_hash


def model_info(chain_id: int, market: bytes, job_id: int) -> bytes:
    """Binding of a trained model's key, wrapped to the consumer, to its job."""
    return b"sterling/v1/model/" + chain_id.to_bytes(32, "big") + market + job_id.to_bytes(32, "big")


def modelkey_info(content_hash: bytes) -> bytes:
    """Binding of a model owner's key, wrapped to the key manager, to its model ciphertext."""
    return b"sterling/v1/modelkey/" + content_hash


def model_release_info(chain_id: int, model_market: bytes, model_id: int, content_hash: bytes) -> bytes:
    """Binding of a model key released by the key manager to an inference enclave for one listed model."""
    return b"sterling/v1/model-release/" + chain_id.to_bytes(32, "big") + model_market + model_id.to_bytes(32, "big") + content_hash


def test_set_info(chain_id: int, competitions: bytes, content_hash: bytes) -> bytes:
    """Binding of an organizer's test-set key, wrapped to the key manager, to its competition market and ciphertext."""
    return b"sterling/v1/test-set/" + chain_id.to_bytes(32, "big") + competitions + content_hash


def submission_info(chain_id: int, competitions: bytes, competition_id: int, participant: bytes, content_hash: bytes) -> bytes:
    """Binding of a participant's model key, wrapped to the key manager, to its competition, its
    participant and its ciphertext: a copied wrapped key does not open under another participant."""
    return (
        b"sterling/v1/submission/"
        + chain_id.to_bytes(32, "big")
        + competitions
        + competition_id.to_bytes(32, "big")
        + participant
        + content_hash
    )


def evaluation_info(
    chain_id: int, competitions: bytes, competition_id: int, index: int, split: int, previous_best: int, content_hash: bytes
) -> bytes:
    """Binding of a key (the test set's or submission ``index``'s, named by ``content_hash``)
    released to an evaluator enclave for ONE scoring: that submission, that split, and the
    leaderboard best the Ladder compares against (``previous_best``), so a released key cannot
    score against another leaderboard state."""
    return (
        b"sterling/v1/evaluation/"
        + chain_id.to_bytes(32, "big")
        + competitions
        + competition_id.to_bytes(32, "big")
        + index.to_bytes(4, "big")
        + bytes([split])
        + previous_best.to_bytes(8, "big")
        + content_hash
    )


def purchase_info(chain_id: int, competitions: bytes, competition_id: int, index: int, buyer: bytes, content_hash: bytes) -> bytes:
    """Binding of a bought submission's model key, re-wrapped to its buyer's key."""
    return (
        b"sterling/v1/purchase/"
        + chain_id.to_bytes(32, "big")
        + competitions
        + competition_id.to_bytes(32, "big")
        + index.to_bytes(4, "big")
        + buyer
        + content_hash
    )
