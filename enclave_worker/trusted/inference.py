"""Serving a sealed model: request envelopes, the voucher rule, output policies and response receipts.

A client sends each request as an **envelope** (all integers big-endian)::

    clear header (234 bytes), what the host and gateway read for routing and rate limiting
      magic        4  b"STRQ"
      version      1  1
      model_id    32  the listed model the request is for
      request_id  16  random, chosen by the client
      voucher    112  Voucher(modelId 32, client 20, enclave 20, amount 32, queries 8)
      signature   65  the client's EIP-712 signature of the voucher (r || s || v, v = 27/28)
      rows         4  n, the rows the request asks (and pays) for
    HPKE ciphertext (base mode, X25519 / HKDF-SHA256 / AES-256-GCM, as :mod:`.keywrap`):
      enc (32) || AEAD ciphertext of   response_secret (32) || rows (n x d float32, little-endian)

to the inference enclave's on-chain encryption key, with ``info`` = :func:`request_info`: chain
id, model market and the SHA-256 of the whole clear header, so no header field (model, request
id, voucher, signature, row count) can be swapped without the ciphertext failing to open.

The **response** is ``response_nonce (32) || AES-256-GCM(outputs)``: cryptography's HPKE has no
secret exporter, so, as Oblivious HTTP does with its exported secret, key and nonce are
HKDF-SHA256 of the client's ``response_secret`` with salt ``enc || response_nonce`` and an info
binding the request envelope's hash (:func:`response_key`). The outputs are
:func:`encode_outputs` of the model's logits after the listing's output policy.

The **voucher rule** (per channel (model, client), :class:`ChannelMarks`): the enclave keeps a
high-water mark (amount, queries), never below the chain's (redeemed, redeemedQueries); a request
of n rows is served only if its voucher has ``queries == mark.queries + n``,
``amount >= mark.amount + n * price``, ``amount <= deposited``, ``queries <= queryCap``, names
this enclave and this model, is signed by its client, the client is allowed, and the channel is
bound on-chain to this enclave (so no two enclaves serve the same totals). Then, and only
once its answer is made, the mark advances: a refused request charges nothing.

Every answer carries a :class:`~.vouchers.ResponseReceipt` signed by the enclave, binding the
request and response hashes to the model's weights hash, the measurement and the voucher.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from coincurve import PrivateKey as Secp256k1Key
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_keys.datatypes import PrivateKey
from eth_utils import to_checksum_address
from safetensors.torch import load as load_tensors
from torch import nn

from . import dataformat, keywrap
from .dataset import Schema, safetensors_metadata
from .errors import (
    CiphertextTampered,
    ClientNotAllowed,
    EnvelopeMalformed,
    InvalidModelSpec,
    ModelLoadFailed,
    ModelNotLoaded,
    ProtocolError,
    QueryCapExceeded,
    RequestTampered,
    SterlingError,
    VoucherOverDeposit,
    VoucherStale,
    VoucherUnderpaid,
    WrongEnclave,
    WrongModel,
)
from .models import ModelSpec, build_model
from .onchain import MAX_PROBABILITY_DECIMALS, OutputPolicy
from .vouchers import ResponseReceipt, Voucher, VoucherInvalid, recover_digest

ENVELOPE_MAGIC = b"STRQ"
ENVELOPE_VERSION = 1
_HEADER = struct.Struct(">4sB32s16s32s20s20s32s8s65sI")
HEADER_LEN = _HEADER.size
"""234 bytes of clear header."""
_REQUEST_ID = slice(37, 53)
ENC_LEN = 32
"""The HPKE encapsulated key (X25519) at the front of the HPKE ciphertext."""
TAG_LEN = 16
SECRET_LEN = 32
NONCE_LEN = 32
MAX_ENVELOPE_BYTES = 4 << 20
"""An envelope carries at most about a million float32 values (4 MiB)."""
MAX_BATCH_REQUESTS = 256
MAX_BATCH_BYTES = 64 << 20
"""Envelopes in one ``infer`` batch, together."""
DEFAULT_MODEL_CACHE = 8
"""Models an inference enclave keeps loaded by default; the least recently used goes first."""

RESPONSE_MAGIC = b"STRP"
RESPONSE_VERSION = 1
_OUTPUTS = struct.Struct(">4sBBBBII")
_U64 = 2**64

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_REQUEST_INFO = b"sterling/v1/inference-request/"
_RESPONSE_INFO = b"sterling/v1/inference-response/"


# --- the envelope --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestHeader:
    """The clear header of a request envelope (what the host may read)."""

    model_id: int
    request_id: bytes
    voucher: Voucher
    signature: bytes
    rows: int
    raw: bytes
    """The header's bytes, as bound into the HPKE ``info``."""

    @property
    def client(self) -> bytes:
        return self.voucher.client


def encode_header(model_id: int, request_id: bytes, voucher: Voucher, signature: bytes, rows: int) -> bytes:
    """The clear header of an envelope (the SDK's :func:`marketplace.inference.build_request` uses it)."""
    if len(request_id) != 16 or len(signature) != 65 or len(voucher.client) != 20 or len(voucher.enclave) != 20:
        raise ValueError("request id 16 bytes, signature 65 bytes, addresses 20 bytes")
    if not 1 <= rows < 2**32 or not 0 <= voucher.queries < _U64:
        raise ValueError("rows must be in 1..2^32-1 and queries a uint64")
    return _HEADER.pack(
        ENVELOPE_MAGIC,
        ENVELOPE_VERSION,
        model_id.to_bytes(32, "big"),
        request_id,
        voucher.model_id.to_bytes(32, "big"),
        voucher.client,
        voucher.enclave,
        voucher.amount.to_bytes(32, "big"),
        voucher.queries.to_bytes(8, "big"),
        signature,
        rows,
    )


def parse_header(envelope: bytes) -> RequestHeader:
    """Read an envelope's clear header (host and enclave alike); nothing in it is authenticated yet.

    Raises:
        EnvelopeMalformed: too short or long, bad magic or version, no rows, no room for a ciphertext.
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise EnvelopeMalformed(f"an envelope is at most {MAX_ENVELOPE_BYTES} bytes, got {len(envelope)}")
    if len(envelope) < HEADER_LEN + ENC_LEN + TAG_LEN + SECRET_LEN:
        raise EnvelopeMalformed(f"an envelope is at least {HEADER_LEN + ENC_LEN + TAG_LEN + SECRET_LEN} bytes, got {len(envelope)}")
    magic, version, model_id, request_id, v_model, client, enclave, amount, queries, signature, rows = _HEADER.unpack_from(envelope)
    if magic != ENVELOPE_MAGIC:
        raise EnvelopeMalformed("not a Sterling request envelope (bad magic)")
    if version != ENVELOPE_VERSION:
        raise EnvelopeMalformed(f"unsupported envelope version {version} (this enclave reads {ENVELOPE_VERSION})")
    if rows < 1:
        raise EnvelopeMalformed("a request asks for at least one row")
    voucher = Voucher(
        model_id=int.from_bytes(v_model, "big"),
        client=client,
        enclave=enclave,
        amount=int.from_bytes(amount, "big"),
        queries=int.from_bytes(queries, "big"),
    )
    return RequestHeader(
        model_id=int.from_bytes(model_id, "big"),
        request_id=request_id,
        voucher=voucher,
        signature=signature,
        rows=rows,
        raw=bytes(envelope[:HEADER_LEN]),
    )


def request_info(chain_id: int, model_market: bytes, header: bytes) -> bytes:
    """The HPKE ``info`` of a request: chain, model market and the SHA-256 of its clear header."""
    return _REQUEST_INFO + chain_id.to_bytes(32, "big") + model_market + hashlib.sha256(header).digest()


def seal_request(
    header: bytes, response_secret: bytes, rows: np.ndarray, enclave_key: bytes, *, chain_id: int, model_market: bytes
) -> bytes:
    """The whole envelope: ``header`` followed by the HPKE ciphertext of ``response_secret || rows``."""
    if len(response_secret) != SECRET_LEN:
        raise ValueError(f"the response secret is {SECRET_LEN} bytes")
    plaintext = response_secret + np.ascontiguousarray(rows, dtype="<f4").tobytes()
    return header + keywrap.wrap(plaintext, enclave_key, info=request_info(chain_id, model_market, header))


def response_key(response_secret: bytes, enc: bytes, response_nonce: bytes, request_hash: bytes) -> tuple[bytes, bytes]:
    """The response's AES-256-GCM key and 12-byte nonce, from the client's secret (both sides)."""
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=enc + response_nonce, info=_RESPONSE_INFO + request_hash).derive(response_secret)
    return okm[:32], okm[32:]


def seal_response(outputs: bytes, response_secret: bytes, enc: bytes, request_hash: bytes, response_nonce: bytes) -> bytes:
    key, nonce = response_key(response_secret, enc, response_nonce, request_hash)
    return response_nonce + AESGCM(key).encrypt(nonce, outputs, None)


def open_response(response: bytes, response_secret: bytes, enc: bytes, request_hash: bytes) -> bytes:
    """Decrypt a response (client side).

    Raises:
        CiphertextTampered: altered, or not the answer to this request.
    """
    if len(response) < NONCE_LEN + TAG_LEN:
        raise CiphertextTampered("a response is at least 48 bytes")
    key, nonce = response_key(response_secret, enc, response[:NONCE_LEN], request_hash)
    try:
        return AESGCM(key).decrypt(nonce, response[NONCE_LEN:], None)
    except InvalidTag as e:
        raise CiphertextTampered("the response does not open with this request's secret") from e


# --- outputs -------------------------------------------------------------------------------


def apply_policy(logits: torch.Tensor, policy: OutputPolicy, param: int) -> torch.Tensor:
    """What the listing releases per row, as an int32 matrix ``[rows, cols]``.

    LABEL: the arg-max class (one column); TOP_K: the ``min(k, classes)`` most likely classes,
    most likely first; PROBABILITIES: every class's softmax probability in units of
    ``10**-decimals``, rounded half to even.
    """
    if policy is OutputPolicy.LABEL:
        return logits.argmax(dim=1, keepdim=True).to(torch.int32)
    if policy is OutputPolicy.TOP_K:
        return torch.topk(logits, k=min(param, logits.shape[1]), dim=1).indices.to(torch.int32)
    return torch.round(torch.softmax(logits, dim=1) * float(10**param)).to(torch.int32)


def encode_outputs(policy: OutputPolicy, param: int, values: np.ndarray) -> bytes:
    """Canonical bytes of a response's outputs: ``b"STRP" || version || policy || param || 0 || rows (u32) ||
    cols (u32) || rows x cols int32 little-endian``."""
    rows, cols = values.shape
    return (
        _OUTPUTS.pack(RESPONSE_MAGIC, RESPONSE_VERSION, int(policy), param, 0, rows, cols)
        + np.ascontiguousarray(values, dtype="<i4").tobytes()
    )


@dataclass(frozen=True)
class Outputs:
    """A decoded response: the policy it was made under and its values."""

    policy: OutputPolicy
    param: int
    values: np.ndarray
    """LABEL: int32 ``[rows]``; TOP_K: int32 ``[rows, k]``; PROBABILITIES: float64 ``[rows, classes]``."""


def decode_outputs(raw: bytes) -> Outputs:
    """Parse :func:`encode_outputs` bytes.

    Raises:
        EnvelopeMalformed: not canonical outputs.
    """
    if len(raw) < _OUTPUTS.size:
        raise EnvelopeMalformed("response outputs are too short")
    magic, version, policy, param, reserved, rows, cols = _OUTPUTS.unpack_from(raw)
    if magic != RESPONSE_MAGIC or version != RESPONSE_VERSION or reserved != 0:
        raise EnvelopeMalformed("not Sterling response outputs of version 1")
    if policy not in (p.value for p in OutputPolicy) or len(raw) != _OUTPUTS.size + 4 * rows * cols:
        raise EnvelopeMalformed("response outputs have an unknown policy or the wrong length")
    values = np.frombuffer(raw, dtype="<i4", offset=_OUTPUTS.size).reshape(rows, cols)
    kind = OutputPolicy(policy)
    if kind is OutputPolicy.LABEL:
        return Outputs(kind, param, values[:, 0].copy())
    if kind is OutputPolicy.PROBABILITIES:
        return Outputs(kind, param, values.astype(np.float64) / 10**param)
    return Outputs(kind, param, values.copy())


WEIGHTS_SPEC_KEY = "sterling_model_spec"
WEIGHTS_SCHEMA_KEY = "sterling_schema"
"""safetensors metadata keys of a served model: its spec and its input schema (canonical JSON)."""


def weights_schema(weights: bytes, *, model_id: int) -> Schema:
    """The input schema a served model's safetensors carry in their metadata.

    Raises:
        ModelLoadFailed: no Sterling schema in the metadata, or not a valid one.
    """
    try:
        return Schema.from_json(json.loads(safetensors_metadata(weights)[WEIGHTS_SCHEMA_KEY]))
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # MalformedSafetensors and InvalidDataset are ValueErrors
        raise ModelLoadFailed(
            f"model {model_id}: the weights carry no valid input schema in their metadata ({WEIGHTS_SCHEMA_KEY!r}; {type(e).__name__})"
        ) from e


def weights_spec(weights: bytes) -> ModelSpec:
    """The model spec a Sterling model's safetensors carry in their metadata (a job's model, or one
    saved with ``marketplace.serving.model_weights``).

    Raises:
        ModelLoadFailed: no Sterling spec in the metadata, or not a valid one.
    """
    try:
        return ModelSpec.from_bytes(safetensors_metadata(weights)[WEIGHTS_SPEC_KEY].encode())
    except (KeyError, ValueError) as e:  # MalformedSafetensors and InvalidModelSpec are ValueErrors
        raise ModelLoadFailed(f"the weights carry no valid model spec in their metadata ({WEIGHTS_SPEC_KEY!r}; {type(e).__name__})") from e


# --- listing terms, the model cache and channel marks --------------------------------------


@dataclass(frozen=True)
class ListingTerms:
    """The listing's terms as the host read them from ``ModelMarket.modelOf``."""

    model_id: int
    weights_hash: bytes
    spec_hash: bytes
    content_hash: bytes
    price_per_query: int
    output_policy: OutputPolicy
    output_param: int
    query_cap: int

    @classmethod
    def from_fields(cls, model_id: int, fields: dict[str, Any]) -> ListingTerms:
        """Check and take the terms of a ``load_model`` request.

        Raises:
            ProtocolError: a policy, parameter or cap the contract would not have accepted.
        """
        policy, param = fields["output_policy"], fields["output_param"]
        if policy not in (p.value for p in OutputPolicy):
            raise ProtocolError(f"unknown output policy {policy}")
        if policy == OutputPolicy.LABEL and param != 0:
            raise ProtocolError("the LABEL policy takes output param 0")
        if policy == OutputPolicy.TOP_K and not 1 <= param <= 255:
            raise ProtocolError("the TOP_K policy needs k in 1..255")
        if policy == OutputPolicy.PROBABILITIES and param > MAX_PROBABILITY_DECIMALS:
            raise ProtocolError(f"the PROBABILITIES policy rounds to 0..{MAX_PROBABILITY_DECIMALS} decimals")
        if not 1 <= fields["query_cap"] < _U64 or fields["price_per_query"] >= 2**128:
            raise ProtocolError("query cap must be a uint64 >= 1 and price a uint128")
        return cls(
            model_id=model_id,
            weights_hash=fields["weights_hash"],
            spec_hash=fields["spec_hash"],
            content_hash=fields["content_hash"],
            price_per_query=fields["price_per_query"],
            output_policy=OutputPolicy(policy),
            output_param=param,
            query_cap=fields["query_cap"],
        )


@dataclass
class LoadedModel:
    """A decrypted model ready to serve, with the terms it is served under."""

    chain_id: int
    model_market: bytes
    terms: ListingTerms
    module: nn.Module
    input_shape: tuple[int, ...]
    features: int
    """Floats per row (the product of ``input_shape``)."""
    measurement: bytes
    """The measurement the host read from the registry for this enclave; signed into every receipt."""
    key: bytes
    """The model key (a reload with the same key and weights reuses the built module)."""


ModelKey = tuple[int, bytes, int]
"""(chain id, model market, model id)."""


class ModelCache:
    """At most ``capacity`` loaded models; the least recently used is dropped first."""

    def __init__(self, capacity: int = DEFAULT_MODEL_CACHE) -> None:
        if capacity < 1:
            raise ValueError("the model cache holds at least one model")
        self.capacity = capacity
        self._models: OrderedDict[ModelKey, LoadedModel] = OrderedDict()

    def get(self, key: ModelKey) -> LoadedModel:
        """The loaded model, now the most recently used.

        Raises:
            ModelNotLoaded: never loaded, or evicted.
        """
        model = self._models.get(key)
        if model is None:
            raise ModelNotLoaded(f"model {key[2]} of model market {to_checksum_address(key[1])} on chain {key[0]} is not loaded")
        self._models.move_to_end(key)
        return model

    def peek(self, key: ModelKey) -> LoadedModel | None:
        return self._models.get(key)

    def put(self, key: ModelKey, model: LoadedModel) -> None:
        self._models[key] = model
        self._models.move_to_end(key)
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: object) -> bool:
        return key in self._models


Channel = tuple[int, bytes, int, bytes]
"""(chain id, model market, model id, client)."""


class ChannelMarks:
    """Per channel, the highest (amount, queries) this enclave has served against.

    Never below the chain's (redeemed, redeemedQueries) as the host reports them, and never
    lowered: a host reporting an older chain state cannot make a voucher count twice. Marks are
    kept for the process's life (a few dozen bytes per channel); after a restart they start from
    the chain, so an operator redeems before restarting (docs/inference.md).
    """

    def __init__(self) -> None:
        self._marks: dict[Channel, tuple[int, int]] = {}

    def get(self, channel: Channel, redeemed: int, redeemed_queries: int) -> tuple[int, int]:
        amount, queries = self._marks.get(channel, (0, 0))
        return max(amount, redeemed), max(queries, redeemed_queries)

    def advance(self, channel: Channel, amount: int, queries: int) -> None:
        old_amount, old_queries = self._marks.get(channel, (0, 0))
        self._marks[channel] = (max(old_amount, amount), max(old_queries, queries))

    def __len__(self) -> int:
        return len(self._marks)


# --- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelState:
    """What the host read from the chain about one request's channel."""

    deposited: int
    redeemed: int
    redeemed_queries: int
    allowed: bool
    """``ModelMarket.isAllowed(modelId, client)`` (true for an unrestricted model)."""
    enclave: bytes
    """The inference enclave the channel is bound to on-chain (``channelOf(...).enclave``): a channel's
    credit is spent at one enclave at a time, so no two enclaves serve the same totals."""


@dataclass
class _Accepted:
    index: int
    header: RequestHeader
    rows: np.ndarray
    secret: bytes
    enc: bytes
    request_hash: bytes
    channel: Channel


class InferenceServer:
    """The inference role's state: the loaded models and the channels' marks.

    Args:
        signing_key: the enclave's 32-byte secp256k1 key (its on-chain identity).
        box: the enclave's X25519 key (its on-chain encryption key); requests are encrypted to it.
    """

    def __init__(self, signing_key: bytes, box: X25519PrivateKey, *, cache_size: int = DEFAULT_MODEL_CACHE) -> None:
        self._key = Secp256k1Key(signing_key)  # kept: no key derivation per signature
        self.signer = PrivateKey(signing_key).public_key.to_canonical_address()
        self._box = box
        self.models = ModelCache(cache_size)
        self.marks = ChannelMarks()

    def load(
        self,
        *,
        chain_id: int,
        model_market: bytes,
        terms: ListingTerms,
        released_key: bytes,
        ciphertext: bytes,
        model_spec: bytes,
        measurement: bytes,
    ) -> LoadedModel:
        """Open a released model key, decrypt and check the weights, build the model and cache it.

        The model's input schema (feature shape, classes) is read from the weights' safetensors
        metadata (:data:`WEIGHTS_SCHEMA_KEY`), so the listing's weights hash commits to it too and
        no host can pass another layout of the same size. A reload with the same key and weights
        hash (a repricing, a new measurement) only updates the terms, without decrypting or
        building again.

        Raises:
            KeyUnwrapFailed: the key was not released to this enclave for this model and ciphertext.
            CiphertextTampered: the ciphertext is not the listing's ``contentHash``.
            InvalidModelSpec: the spec is not the listing's ``specHash``, or not a valid spec.
            ModelLoadFailed: the weights are not the listing's ``weightsHash`` or do not fit the spec.
        """
        if hashlib.sha256(ciphertext).digest() != terms.content_hash:
            raise CiphertextTampered(f"model {terms.model_id}: the ciphertext does not match the listing's content hash")
        if hashlib.sha256(model_spec).digest() != terms.spec_hash:
            raise InvalidModelSpec(f"model {terms.model_id}: the spec does not match the listing's spec hash")
        info = keywrap.model_release_info(chain_id, model_market, terms.model_id, terms.content_hash)
        key = keywrap.unwrap(released_key, self._box, info=info)
        cache_key = (chain_id, model_market, terms.model_id)
        cached = self.models.peek(cache_key)
        if cached is not None and cached.key == key and cached.terms.weights_hash == terms.weights_hash:
            cached.terms, cached.measurement = terms, measurement
            self.models.put(cache_key, cached)
            return cached
        weights = dataformat.decrypt_bytes(ciphertext, key, kind=dataformat.Kind.MODEL)
        if hashlib.sha256(weights).digest() != terms.weights_hash:
            raise ModelLoadFailed(f"model {terms.model_id}: the decrypted weights do not match the listing's weights hash")
        spec = ModelSpec.from_bytes(model_spec)
        parsed_schema = weights_schema(weights, model_id=terms.model_id)
        if parsed_schema.task != "classification":
            # The output policies release labels, top classes or class probabilities: a classifier's outputs.
            raise ModelLoadFailed(f"model {terms.model_id}: served models are classifiers; this one is a {parsed_schema.task} model")
        module = build_model(spec, parsed_schema)
        try:
            module.load_state_dict(load_tensors(weights), strict=True)
        except Exception as e:  # safetensors and torch raise several types for foreign or mis-shaped weights
            raise ModelLoadFailed(f"model {terms.model_id}: the weights do not fit the spec and schema ({type(e).__name__})") from e
        module.eval()
        module.requires_grad_(False)
        features = 1
        for d in parsed_schema.feature_shape:
            features *= d
        loaded = LoadedModel(
            chain_id=chain_id,
            model_market=model_market,
            terms=terms,
            module=module,
            input_shape=parsed_schema.feature_shape,
            features=features,
            measurement=measurement,
            key=key,
        )
        self.models.put(cache_key, loaded)
        return loaded

    def infer(
        self, *, chain_id: int, model_market: bytes, model_id: int, requests: list[tuple[bytes, ChannelState]]
    ) -> list[dict[str, Any]]:
        """Answer a batch of requests for one model: one result map per request, in order.

        A served request's map holds ``request_id``, ``response``, ``receipt_signature``, the
        ``voucher`` (a map of its fields) and ``voucher_signature`` for the operator to redeem; a
        refused one's holds ``request_id`` (empty if the header did not parse), ``error`` (the
        error class's name) and ``message``. One refused request never fails the others, and
        nothing is charged for it: the channels' marks move only for served requests, once every
        answer of the batch is made.

        Raises:
            ModelNotLoaded: the model is not loaded (the whole batch waits for a ``load_model``).
        """
        model = self.models.get((chain_id, model_market, model_id))
        results: list[dict[str, Any]] = [{} for _ in requests]
        staged: dict[Channel, tuple[int, int]] = {}
        accepted: list[_Accepted] = []
        for i, (envelope, state) in enumerate(requests):
            request_id = bytes(envelope[_REQUEST_ID]) if len(envelope) >= HEADER_LEN else b""
            try:
                accepted.append(self._open(i, envelope, state, model, staged))
            except SterlingError as e:
                results[i] = {"request_id": request_id, "error": type(e).__name__, "message": str(e)}
        if not accepted:
            return results
        x = torch.from_numpy(np.concatenate([a.rows for a in accepted]) if len(accepted) > 1 else accepted[0].rows.copy())
        with torch.inference_mode():
            logits = model.module(x.reshape(-1, *model.input_shape))
            released = apply_policy(logits, model.terms.output_policy, model.terms.output_param).numpy()
        start = 0
        for a in accepted:
            values = released[start : start + a.header.rows]
            start += a.header.rows
            results[a.index] = self._answer(a, model, values)
        for channel, (amount, queries) in staged.items():
            self.marks.advance(channel, amount, queries)
        return results

    def _open(
        self, index: int, envelope: bytes, state: ChannelState, model: LoadedModel, staged: dict[Channel, tuple[int, int]]
    ) -> _Accepted:
        """Check one request against the voucher rule and open it; stages its channel's new mark."""
        header = parse_header(envelope)
        voucher, terms, n = header.voucher, model.terms, header.rows
        if header.model_id != terms.model_id or voucher.model_id != header.model_id:
            raise WrongModel(
                f"the request is for model {header.model_id} with a voucher for model {voucher.model_id}; "
                f"this batch serves model {terms.model_id}"
            )
        if voucher.enclave != self.signer:
            raise WrongEnclave(f"the voucher names enclave {to_checksum_address(voucher.enclave)}, not this one")
        if not any(state.enclave):
            raise VoucherOverDeposit(f"channel ({terms.model_id}, {to_checksum_address(voucher.client)}) has no deposit")
        if state.enclave != self.signer:
            raise WrongEnclave(
                f"channel ({terms.model_id}, {to_checksum_address(voucher.client)}) is bound to enclave "
                f"{to_checksum_address(state.enclave)}, not this one"
            )
        if not state.allowed:
            raise ClientNotAllowed(f"client {to_checksum_address(voucher.client)} is not allowed to query model {terms.model_id}")
        digest = voucher.digest(chain_id=model.chain_id, model_market=model.model_market)
        if recover_digest(digest, header.signature) != voucher.client:
            raise VoucherInvalid("the voucher is not signed by its client for this chain, model market and totals")
        channel: Channel = (model.chain_id, model.model_market, terms.model_id, voucher.client)
        amount, queries = staged.get(channel) or self.marks.get(channel, state.redeemed, state.redeemed_queries)
        if voucher.queries != queries + n:
            raise VoucherStale(
                f"the voucher's query total is {voucher.queries}; the channel is at {queries} and the request asks {n} rows, "
                f"so the next voucher totals {queries + n} queries (a replayed or stale voucher is never served twice)"
            )
        if voucher.queries > terms.query_cap:
            raise QueryCapExceeded(
                f"the voucher's {voucher.queries} queries exceed model {terms.model_id}'s per-client cap ({terms.query_cap})"
            )
        due = amount + n * terms.price_per_query
        if voucher.amount < due:
            raise VoucherUnderpaid(
                f"the voucher totals {voucher.amount}; the channel is at {amount}, {n} rows cost {n * terms.price_per_query}"
            )
        if voucher.amount > state.deposited:
            raise VoucherOverDeposit(f"the voucher totals {voucher.amount}, above the channel's deposit of {state.deposited}")
        sealed = envelope[HEADER_LEN:]
        try:
            plaintext = _SUITE.decrypt(sealed, self._box, info=request_info(model.chain_id, model.model_market, header.raw))
        except (InvalidTag, ValueError) as e:
            raise RequestTampered("the request does not open for this enclave under its clear header") from e
        if len(plaintext) != SECRET_LEN + 4 * n * model.features:
            raise RequestTampered(f"the request holds {len(plaintext) - SECRET_LEN} bytes of rows, not {n} rows of {model.features} floats")
        rows = np.frombuffer(plaintext, dtype="<f4", offset=SECRET_LEN).reshape(n, model.features)
        if not np.isfinite(rows).all():
            raise EnvelopeMalformed("the request's rows hold a NaN or an infinity")
        staged[channel] = (voucher.amount, voucher.queries)
        return _Accepted(
            index=index,
            header=header,
            rows=rows,
            secret=plaintext[:SECRET_LEN],
            enc=bytes(sealed[:ENC_LEN]),
            request_hash=hashlib.sha256(envelope).digest(),
            channel=channel,
        )

    def _answer(self, accepted: _Accepted, model: LoadedModel, values: np.ndarray) -> dict[str, Any]:
        terms, voucher = model.terms, accepted.header.voucher
        outputs = encode_outputs(terms.output_policy, terms.output_param, values)
        response = seal_response(outputs, accepted.secret, accepted.enc, accepted.request_hash, os.urandom(NONCE_LEN))
        receipt = ResponseReceipt(
            model_id=terms.model_id,
            client=voucher.client,
            request_hash=accepted.request_hash,
            response_hash=hashlib.sha256(response).digest(),
            model_hash=terms.weights_hash,
            measurement=model.measurement,
            amount=voucher.amount,
            queries=voucher.queries,
        )
        signature = self._key.sign_recoverable(receipt.digest(chain_id=model.chain_id, model_market=model.model_market), hasher=None)
        return {
            "request_id": accepted.header.request_id,
            "response": response,
            "receipt_signature": signature[:64] + bytes([signature[64] + 27]),
            "voucher": {
                "model_id": voucher.model_id,
                "client": voucher.client,
                "enclave": voucher.enclave,
                "amount": voucher.amount,
                "queries": voucher.queries,
            },
            "voucher_signature": accepted.header.signature,
        }
