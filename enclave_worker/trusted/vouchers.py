"""EIP-712 statements under the model market's domain: query vouchers and response receipts.

A client of a served model signs a :class:`Voucher`, which ``ModelMarket.redeem`` verifies: "on
channel (``model_id``, ``client``) I owe ``amount`` in total (cumulative, never a delta) for
``queries`` rows in total, served by the inference enclave ``enclave``". The inference enclave
serves a request only against a voucher that raises both totals by exactly what the request
costs, within the channel's deposit and the model's per-client query cap; the enclave's operator
redeems the latest voucher whenever it likes, one transaction for any number of queries.

The inference enclave signs a :class:`ResponseReceipt` for every answer: the hashes of the request
and response ciphertexts, the model's weights hash, the enclave's measurement and the voucher it
served against. The client SDK verifies it against the registry (the signer is an active
inference enclave running that measurement); it is not submitted on-chain.

The domain binds chain id and the model market contract. Hashing is done here by hand for the two
fixed types (``hashStruct`` of EIP-712, checked against eth-account's ``encode_typed_data`` in the
tests) because serving signs and recovers one of each per request; signing and recovery use
eth-keys (with its coincurve backend, pinned in the measurement).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_utils import keccak, to_checksum_address

from .errors import SterlingError

DOMAIN_NAME = "SterlingModelMarket"
DOMAIN_VERSION = "1"

_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"

VOUCHER_TYPES: dict[str, list[dict[str, str]]] = {
    "Voucher": [
        {"name": "modelId", "type": "uint256"},
        {"name": "client", "type": "address"},
        {"name": "enclave", "type": "address"},
        {"name": "amount", "type": "uint256"},
        {"name": "queries", "type": "uint64"},
    ]
}
"""The same type for eth-account / ethers ``signTypedData`` (wallets sign vouchers with it)."""

RESPONSE_TYPES: dict[str, list[dict[str, str]]] = {
    "ResponseReceipt": [
        {"name": "modelId", "type": "uint256"},
        {"name": "client", "type": "address"},
        {"name": "requestHash", "type": "bytes32"},
        {"name": "responseHash", "type": "bytes32"},
        {"name": "modelHash", "type": "bytes32"},
        {"name": "measurement", "type": "bytes32"},
        {"name": "amount", "type": "uint256"},
        {"name": "queries", "type": "uint64"},
    ]
}

MODEL_DEPOSIT_TYPES: dict[str, list[dict[str, str]]] = {
    "Deposit": [
        {"name": "contentHash", "type": "bytes32"},
        {"name": "wrappedKeyHash", "type": "bytes32"},
        {"name": "keyManager", "type": "address"},
    ]
}
"""The same type for eth-account / ethers ``signTypedData``. It has the dataset deposit's shape, but
under the model market's domain, so a dataset deposit never stands in for a model's (or back)."""

_U256 = 2**256
_U64 = 2**64
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class VoucherInvalid(SterlingError, PermissionError):
    """A voucher or response receipt is malformed or not signed by whom it must be."""


def domain(chain_id: int, model_market: bytes) -> dict[str, object]:
    """The EIP-712 domain as eth-account / ethers take it."""
    return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id, "verifyingContract": to_checksum_address(model_market)}


@lru_cache(maxsize=64)
def domain_separator(chain_id: int, model_market: bytes) -> bytes:
    """``keccak256(abi.encode(EIP712Domain typehash, name, version, chainId, verifyingContract))``."""
    if len(model_market) != 20:
        raise ValueError("the model market address must be 20 bytes")
    return keccak(
        keccak(_DOMAIN_TYPE.encode())
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + _uint(chain_id, _U256)
        + _address(model_market)
    )


def _uint(value: int, bound: int) -> bytes:
    if not 0 <= value < bound:
        raise ValueError(f"{value} is out of range")
    return value.to_bytes(32, "big")


def _address(value: bytes) -> bytes:
    if len(value) != 20:
        raise ValueError("an address must be 20 bytes")
    return bytes(12) + value


def _b32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError("a bytes32 must be 32 bytes")
    return value

def _type_string(types: dict[str, list[dict[str, str]]]) -> str:
    ((name, fields),) = types.items()
    return f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})"


VOUCHER_TYPE = _type_string(VOUCHER_TYPES)
RESPONSE_TYPE = _type_string(RESPONSE_TYPES)
MODEL_DEPOSIT_TYPE = _type_string(MODEL_DEPOSIT_TYPES)
_TYPEHASHES = {
    name: keccak(_type_string({name: fields}).encode())
    for types in (VOUCHER_TYPES, RESPONSE_TYPES, MODEL_DEPOSIT_TYPES)
    for name, fields in types.items()
}
_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "uint256": lambda v: _uint(v, _U256), "uint64": lambda v: _uint(v, _U64), "address": _address, "bytes32": _b32,
}  # fmt: skip


def _digest(struct_hash: bytes, chain_id: int, model_market: bytes) -> bytes:
    """``keccak256("\\x19\\x01" || domainSeparator || hashStruct)``: what is signed."""
    return keccak(b"\x19\x01" + domain_separator(chain_id, model_market) + struct_hash)


def _struct_hash(types: dict[str, list[dict[str, str]]], values: tuple[object, ...]) -> bytes:
    """EIP-712 ``hashStruct`` of a flat struct of ``uint``/``address``/``bytes32`` fields, given in type order."""
    ((name, fields),) = types.items()
    return keccak(_TYPEHASHES[name] + b"".join(_ENCODERS[f["type"]](v) for f, v in zip(fields, values, strict=True)))



@dataclass(frozen=True)
class Voucher:
    """A client's cumulative promise to pay on one channel (model, client)."""

    model_id: int
    client: bytes
    """20-byte address of the client (the signer)."""
    enclave: bytes
    """20-byte signer address of the inference enclave the client sends its queries to; only its
    operator may redeem the voucher."""
    amount: int
    """Total owed on the channel, in the market's payment unit (wei or token units)."""
    queries: int
    """Total rows asked on the channel."""

    def struct_hash(self) -> bytes:
        return _struct_hash(VOUCHER_TYPES, (self.model_id, self.client, self.enclave, self.amount, self.queries))

    def digest(self, *, chain_id: int, model_market: bytes) -> bytes:
        """The 32-byte EIP-712 digest the client signs."""
        return _digest(self.struct_hash(), chain_id, model_market)

    def message(self) -> dict[str, object]:
        """The message as eth-account / ethers ``signTypedData`` take it."""
        return {
            "modelId": self.model_id,
            "client": to_checksum_address(self.client),
            "enclave": to_checksum_address(self.enclave),
            "amount": self.amount,
            "queries": self.queries,
        }

    def as_tuple(self) -> tuple[int, str, str, int, int]:
        """The ABI tuple for ``ModelMarket.redeem``."""
        return (self.model_id, to_checksum_address(self.client), to_checksum_address(self.enclave), self.amount, self.queries)


@dataclass(frozen=True)
class ResponseReceipt:
    """The inference enclave's statement about one answered request."""

    model_id: int
    client: bytes
    request_hash: bytes
    """SHA-256 of the request envelope (the bytes the client posted)."""
    response_hash: bytes
    """SHA-256 of the encrypted response."""
    model_hash: bytes
    """SHA-256 of the served model's weights (the listing's ``weightsHash``)."""
    measurement: bytes
    """The measurement the enclave runs (the registry's ``enclaveOf(signer).measurement``)."""
    amount: int
    queries: int
    """The totals of the voucher the request was served against."""

    def struct_hash(self) -> bytes:
        return _struct_hash(
            RESPONSE_TYPES,
            (
                self.model_id, self.client, self.request_hash, self.response_hash, self.model_hash, self.measurement,
                self.amount, self.queries,
            ),  # fmt: skip
        )

    def digest(self, *, chain_id: int, model_market: bytes) -> bytes:
        return _digest(self.struct_hash(), chain_id, model_market)

    def message(self) -> dict[str, object]:
        return {
            "modelId": self.model_id,
            "client": to_checksum_address(self.client),
            "requestHash": self.request_hash,
            "responseHash": self.response_hash,
            "modelHash": self.model_hash,
            "measurement": self.measurement,
            "amount": self.amount,
            "queries": self.queries,
        }


@lru_cache(maxsize=16)
def _signing_key(private_key: bytes) -> PrivateKey:
    """The libsecp256k1 key of ``private_key``, built once (building it derives the public key)."""
    return PrivateKey(private_key)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """A 65-byte ``r || s || v`` signature (v = 27 or 28, low s: as OpenZeppelin's ECDSA takes it)."""
    signature = _signing_key(private_key).sign_recoverable(digest, hasher=None)  # r || s || recovery id; libsecp256k1 signs low-s
    return signature[:64] + bytes([signature[64] + 27])


def recover_digest(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``digest``.

    Only what OpenZeppelin's ``ECDSA.recover`` accepts is accepted: r and s in range and s in the
    lower half of the curve order, so a signature the contract would refuse (a malleable high-s
    twin of a valid one) is never taken by the enclave as payment it cannot redeem.

    Raises:
        VoucherInvalid: the signature is malformed, malleable (high s) or recovers to nobody.
    """
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise VoucherInvalid("a signature must be 65 bytes ending in v = 27 or 28")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if not 0 < r < _SECP256K1_N:
        raise VoucherInvalid("the signature's r is out of range")
    if not 0 < s <= _SECP256K1_N // 2:
        raise VoucherInvalid("the signature's s is zero or in the upper half of the curve order (malleable: OpenZeppelin refuses it)")
    try:
        public_key = PublicKey.from_signature_and_message(signature[:64] + bytes([signature[64] - 27]), digest, hasher=None)
    except ValueError as e:
        raise VoucherInvalid(f"the signature recovers to nobody ({e})") from e
    return keccak(public_key.format(compressed=False)[1:])[12:]


def sign_voucher(private_key: bytes, voucher: Voucher, *, chain_id: int, model_market: bytes) -> bytes:
    """The client's signature of ``voucher`` (SDK side; browsers sign :data:`VOUCHER_TYPES` with their wallet)."""
    return sign_digest(private_key, voucher.digest(chain_id=chain_id, model_market=model_market))


def check_voucher(voucher: Voucher, signature: bytes, *, chain_id: int, model_market: bytes) -> None:
    """Check that ``voucher.client`` signed ``voucher`` for this chain and model market.

    Raises:
        VoucherInvalid: malformed, or signed by someone else or for another chain, market or voucher.
    """
    try:
        digest = voucher.digest(chain_id=chain_id, model_market=model_market)
    except ValueError as e:
        raise VoucherInvalid(f"malformed voucher: {e}") from e
    if recover_digest(digest, signature) != voucher.client:
        raise VoucherInvalid("the voucher is not signed by its client for this chain, model market and totals")


def response_signer(receipt: ResponseReceipt, signature: bytes, *, chain_id: int, model_market: bytes) -> bytes:
    """The 20-byte address that signed ``receipt`` under the model market's domain.

    Raises:
        VoucherInvalid: the receipt or signature is malformed.
    """
    try:
        digest = receipt.digest(chain_id=chain_id, model_market=model_market)
    except ValueError as e:
        raise VoucherInvalid(f"malformed response receipt: {e}") from e
    return recover_digest(digest, signature)


# Model deposits: a model owner's key, deposited with the key manager (added for serving).



@dataclass(frozen=True)
class ModelDeposit:
    """A model owner's statement binding a wrapped model key to a ciphertext and a key manager."""

    content_hash: bytes
    """SHA-256 of the model's ciphertext (the listing's ``contentHash``)."""
    wrapped_key: bytes
    """The model key HPKE-wrapped to the key manager; signed as its keccak256."""
    key_manager: bytes
    """The key manager enclave's 20-byte signer address."""

    def struct_hash(self) -> bytes:
        return _struct_hash(MODEL_DEPOSIT_TYPES, (self.content_hash, keccak(self.wrapped_key), self.key_manager))

    def digest(self, *, chain_id: int, model_market: bytes) -> bytes:
        return _digest(self.struct_hash(), chain_id, model_market)

    def message(self) -> dict[str, object]:
        return {
            "contentHash": self.content_hash,
            "wrappedKeyHash": keccak(self.wrapped_key),
            "keyManager": to_checksum_address(self.key_manager),
        }


def sign_model_deposit(private_key: bytes, deposit: ModelDeposit, *, chain_id: int, model_market: bytes) -> bytes:
    """The owner's signature of ``deposit`` (SDK side)."""
    return sign_digest(private_key, deposit.digest(chain_id=chain_id, model_market=model_market))


def model_deposit_signer(deposit: ModelDeposit, signature: bytes, *, chain_id: int, model_market: bytes) -> bytes:
    """The 20-byte address that signed ``deposit`` under the model market's domain.

    Raises:
        VoucherInvalid: the deposit or signature is malformed.
    """
    try:
        digest = deposit.digest(chain_id=chain_id, model_market=model_market)
    except ValueError as e:
        raise VoucherInvalid(f"malformed model deposit: {e}") from e
    return recover_digest(digest, signature)
