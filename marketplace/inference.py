"""The client and owner side of serving (docs/inference.md): request envelopes, vouchers, receipts.

A client keeps a :class:`VoucherBook` (its running totals per channel), builds each request with
:func:`build_request` (rows HPKE-encrypted to the inference enclave's on-chain key, a voucher
raising the channel's totals by exactly the request's cost) and opens the answer with
:func:`open_response`, which first verifies the enclave's ``ResponseReceipt`` against what the
client knows (the enclave it encrypted to, the registry's measurement of it and the listing's
weights hash). A model owner seals weights with :func:`seal_model` and signs the key's deposit
with the key manager with :func:`sign_model_deposit`.

Example:
    >>> book = VoucherBook(chain_id=1337, model_market=market)  # doctest: +SKIP
    >>> pending = build_request(client, rows, model_id=1, enclave=signer, enclave_key=key, price_per_query=10, book=book)
    >>> outputs = open_response(pending, reply["response"], reply["receipt_signature"], measurement=m, weights_hash=w)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
from eth_account.signers.local import LocalAccount
from eth_utils import to_canonical_address, to_checksum_address

from enclave_worker.trusted import dataformat, errors, inference, keywrap
from enclave_worker.trusted.inference import ENC_LEN, HEADER_LEN, Outputs
from enclave_worker.trusted.onchain import OutputPolicy
from enclave_worker.trusted.vouchers import (
    ModelDeposit,
    ResponseReceipt,
    Voucher,
    VoucherInvalid,
    response_signer,
    sign_voucher,
)
from enclave_worker.trusted.vouchers import sign_model_deposit as _sign_model_deposit

from .errors import CiphertextTampered, ResponseRejected, SterlingError

__all__ = [
    "ChannelTotals",
    "Outputs",
    "PendingRequest",
    "SealedModel",
    "VoucherBook",
    "build_request",
    "open_response",
    "refusal",
    "seal_model",
    "sign_model_deposit",
]


def _address(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else to_canonical_address(value)


@dataclass(frozen=True)
class ChannelTotals:
    """The totals of the latest voucher a client issued on a channel (cumulative, as vouchers are)."""

    amount: int = 0
    queries: int = 0


class VoucherBook:
    """A client's running totals per channel (model, client) on one model market.

    :meth:`issue` raises a channel's totals by a request's cost and returns the voucher to sign;
    if the enclave refuses the request (nothing is charged then), :meth:`refund` takes the latest
    voucher back so the next request reuses its totals. :meth:`sync` raises the totals to the
    chain's ``redeemed`` / ``redeemedQueries`` (after a restart, or from another device).
    """

    def __init__(self, *, chain_id: int, model_market: str | bytes) -> None:
        self.chain_id = chain_id
        self.model_market = _address(model_market)
        self._totals: dict[tuple[int, bytes], ChannelTotals] = {}

    def totals(self, model_id: int, client: str | bytes) -> ChannelTotals:
        return self._totals.get((model_id, _address(client)), ChannelTotals())

    def sync(self, model_id: int, client: str | bytes, *, redeemed: int, redeemed_queries: int) -> ChannelTotals:
        """Raise the channel's totals to at least the chain's; returns them."""
        now = self.totals(model_id, client)
        totals = ChannelTotals(max(now.amount, redeemed), max(now.queries, redeemed_queries))
        self._totals[(model_id, _address(client))] = totals
        return totals

    def issue(self, model_id: int, client: str | bytes, enclave: str | bytes, *, rows: int, price_per_query: int) -> Voucher:
        """The next voucher on the channel for a request of ``rows`` rows; the book's totals move to it."""
        if rows < 1 or price_per_query < 0:
            raise ValueError("a request has at least one row and a non-negative price")
        now = self.totals(model_id, client)
        voucher = Voucher(
            model_id=model_id,
            client=_address(client),
            enclave=_address(enclave),
            amount=now.amount + rows * price_per_query,
            queries=now.queries + rows,
        )
        self._totals[(model_id, voucher.client)] = ChannelTotals(voucher.amount, voucher.queries)
        return voucher

    def refund(self, voucher: Voucher, *, rows: int, price_per_query: int) -> bool:
        """Take back ``voucher`` after the enclave refused its request; only the channel's latest
        voucher can be taken back (returns whether it was)."""
        key = (voucher.model_id, voucher.client)
        if self._totals.get(key) != ChannelTotals(voucher.amount, voucher.queries):
            return False
        self._totals[key] = ChannelTotals(voucher.amount - rows * price_per_query, voucher.queries - rows)
        return True


@dataclass(frozen=True)
class PendingRequest:
    """A built request and the secret state that opens its answer (never leaves the client)."""

    envelope: bytes
    request_id: bytes
    voucher: Voucher
    voucher_signature: bytes
    enclave: bytes
    """The signer address of the inference enclave the request is encrypted to."""
    chain_id: int
    model_market: bytes
    response_secret: bytes
    request_hash: bytes
    rows: int
    price_per_query: int

    @property
    def enc(self) -> bytes:
        return self.envelope[HEADER_LEN : HEADER_LEN + ENC_LEN]


def build_request(
    client: LocalAccount,
    rows: np.ndarray,
    *,
    model_id: int,
    enclave: str | bytes,
    enclave_key: bytes,
    price_per_query: int,
    book: VoucherBook,
) -> PendingRequest:
    """Encrypt ``rows`` (float32 ``[n, ...]``) for the inference enclave ``enclave`` and pay for them.

    Args:
        client: the client's account (signs the voucher; the channel is (model, its address)).
        enclave: the inference enclave's signer address; ``enclave_key`` its ON-CHAIN X25519
            encryption key (``EnclaveRegistry``), never one a host merely claims.
        price_per_query: the listing's price per row.
        book: the client's voucher book for this chain and model market; its totals advance.
    """
    data = np.ascontiguousarray(rows, dtype=np.float32)
    n = int(data.shape[0]) if data.ndim >= 1 else 0
    if n < 1:
        raise ValueError("a request needs at least one row")
    voucher = book.issue(model_id, client.address, enclave, rows=n, price_per_query=price_per_query)
    signature = sign_voucher(bytes(client.key), voucher, chain_id=book.chain_id, model_market=book.model_market)
    request_id = os.urandom(16)
    secret = os.urandom(inference.SECRET_LEN)
    header = inference.encode_header(model_id, request_id, voucher, signature, n)
    envelope = inference.seal_request(
        header, secret, data.reshape(n, -1), enclave_key, chain_id=book.chain_id, model_market=book.model_market
    )
    if len(envelope) > inference.MAX_ENVELOPE_BYTES:
        book.refund(voucher, rows=n, price_per_query=price_per_query)
        raise ValueError(f"the request is {len(envelope)} bytes; split it (an envelope holds at most {inference.MAX_ENVELOPE_BYTES})")
    return PendingRequest(
        envelope=envelope,
        request_id=request_id,
        voucher=voucher,
        voucher_signature=signature,
        enclave=_address(enclave),
        chain_id=book.chain_id,
        model_market=book.model_market,
        response_secret=secret,
        request_hash=hashlib.sha256(envelope).digest(),
        rows=n,
        price_per_query=price_per_query,
    )


def open_response(
    pending: PendingRequest,
    response: bytes,
    receipt_signature: bytes,
    *,
    measurement: bytes,
    weights_hash: bytes,
    output_policy: OutputPolicy | None = None,
    output_param: int | None = None,
) -> Outputs:
    """Verify the enclave's receipt for ``response``, then decrypt and decode it.

    Args:
        measurement: the registry's ``enclaveOf(enclave).measurement`` of the enclave the request
            was encrypted to (which the caller checked is an approved one).
        weights_hash: the listing's ``weightsHash``.
        output_policy, output_param: if given, the listing's, which the outputs must follow.

    Raises:
        ResponseRejected: the receipt is not signed by ``pending.enclave`` over this request,
            this response, ``weights_hash``, ``measurement`` and the request's voucher; or the
            response does not decrypt, or its outputs do not follow the listing's policy.
    """
    voucher = pending.voucher
    receipt = ResponseReceipt(
        model_id=voucher.model_id,
        client=voucher.client,
        request_hash=pending.request_hash,
        response_hash=hashlib.sha256(response).digest(),
        model_hash=weights_hash,
        measurement=measurement,
        amount=voucher.amount,
        queries=voucher.queries,
    )
    try:
        signer = response_signer(receipt, receipt_signature, chain_id=pending.chain_id, model_market=pending.model_market)
    except VoucherInvalid as e:
        raise ResponseRejected(f"the response receipt is malformed: {e}") from e
    if signer != pending.enclave:
        raise ResponseRejected(
            f"the response receipt is not signed by enclave {to_checksum_address(pending.enclave)} over this request, response, "
            "weights hash, measurement and voucher"
        )
    try:
        outputs = inference.decode_outputs(inference.open_response(response, pending.response_secret, pending.enc, pending.request_hash))
    except (CiphertextTampered, errors.EnvelopeMalformed) as e:
        raise ResponseRejected(f"the response does not open: {e}") from e
    if outputs.values.shape[0] != pending.rows:
        raise ResponseRejected(f"the response holds {outputs.values.shape[0]} rows, the request asked {pending.rows}")
    if output_policy is not None and (outputs.policy, outputs.param) != (
        output_policy,
        output_param if output_param is not None else outputs.param,
    ):
        raise ResponseRejected(f"the response follows policy {outputs.policy.name}/{outputs.param}, not the listing's")
    return outputs


_REFUSALS: dict[str, type[SterlingError]] = {
    cls.__name__: cls
    for cls in (
        errors.VoucherStale,
        errors.VoucherUnderpaid,
        errors.VoucherOverDeposit,
        errors.QueryCapExceeded,
        errors.ClientNotAllowed,
        errors.WrongModel,
        errors.WrongEnclave,
        errors.RequestTampered,
        errors.EnvelopeMalformed,
        errors.ModelNotLoaded,
        VoucherInvalid,
    )
}


def refusal(error: str, message: str) -> SterlingError:
    """The exception for a refused request's ``error`` name and ``message`` (as the enclave answered them);
    an unknown name gives :class:`~enclave_worker.trusted.errors.InferenceRefused`."""
    return _REFUSALS.get(error, errors.InferenceRefused)(f"{error}: {message}" if error not in _REFUSALS else message)


@dataclass(frozen=True)
class SealedModel:
    """A model's weights sealed for serving: what the owner stores, lists and deposits."""

    ciphertext: bytes
    content_hash: bytes
    """SHA-256 of ``ciphertext`` (the listing's ``contentHash``; the blob store's name for it)."""
    weights_hash: bytes
    """SHA-256 of the plaintext safetensors (the listing's ``weightsHash``)."""
    wrapped_key: bytes
    """The model key HPKE-wrapped to the key manager, bound to ``content_hash``."""


def seal_model(weights: bytes, key_manager_key: bytes) -> SealedModel:
    """Encrypt safetensors ``weights`` with a fresh key and wrap the key to the key manager's
    ON-CHAIN encryption key (``registry.active_key_manager_key``)."""
    key = dataformat.new_data_key()
    weights_hash = hashlib.sha256(weights).digest()
    ciphertext = dataformat.encrypt_bytes(weights, key, kind=dataformat.Kind.MODEL, context=weights_hash)
    content_hash = hashlib.sha256(ciphertext).digest()
    wrapped = keywrap.wrap(key, key_manager_key, info=keywrap.modelkey_info(content_hash))
    return SealedModel(ciphertext=ciphertext, content_hash=content_hash, weights_hash=weights_hash, wrapped_key=wrapped)


def sign_model_deposit(
    owner: LocalAccount, content_hash: bytes, wrapped_key: bytes, *, key_manager: str | bytes, chain_id: int, model_market: str | bytes
) -> bytes:
    """``owner``'s EIP-712 ``Deposit`` signature of ``wrapped_key`` for ``content_hash`` with the key
    manager ``key_manager`` (its signer address), under the MODEL MARKET's domain on ``chain_id``."""
    statement = ModelDeposit(content_hash=content_hash, wrapped_key=wrapped_key, key_manager=_address(key_manager))
    return _sign_model_deposit(bytes(owner.key), statement, chain_id=chain_id, model_market=_address(model_market))
