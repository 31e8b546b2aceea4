"""Serving (issue 15): the key manager's model keys, the inference enclave's voucher rule, output
policies and response receipts, driven through :class:`Enclave` (every request validated by the
protocol schemas first) and through a real trusted process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address
from safetensors.torch import save as save_tensors

from enclave_worker.host import CODE_ROOT, EnclaveProcess, EnclaveRequestFailed
from enclave_worker.trusted import inference, platform_seal, protocol
from enclave_worker.trusted.dataset import Schema, canonical_json
from enclave_worker.trusted.enclave import Enclave
from enclave_worker.trusted.errors import ModelNotLoaded, ProtocolError
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import ModelStatus, OutputPolicy, Role
from enclave_worker.trusted.receipt import Deposit, DepositSignatureInvalid, sign_deposit
from enclave_worker.trusted.vouchers import (
    MODEL_DEPOSIT_TYPES,
    ModelDeposit,
    ResponseReceipt,
    Voucher,
    domain,
    sign_digest,
    sign_voucher,
)
from marketplace.errors import ResponseRejected
from marketplace.inference import (
    PendingRequest,
    VoucherBook,
    build_request,
    open_response,
    refusal,
    seal_model,
    sign_model_deposit,
)

CHAIN_ID = 1337
MARKET = bytes.fromhex("42" * 20)
MEASUREMENT = hashlib.sha256(b"measurement").digest()
PRICE = 7
FEATURES = 8
SPEC = ModelSpec(architecture="mlp", hidden_sizes=(32,), epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)
SCHEMA = Schema(
    task="classification",
    feature_names=tuple(f"f{i}" for i in range(FEATURES)),
    feature_shape=(FEATURES,),
    class_names=("a", "b", "c", "d", "e"),
)


def call(enclave: Enclave, op: str, **fields: Any) -> dict[str, Any]:
    """One request as the trusted process takes it: schema-checked, then handled."""
    op, checked = protocol.validate_request({"v": protocol.PROTOCOL_VERSION, "op": op, **fields})
    return enclave.handle(op, checked, lambda message: None)


def _model(seed: int = 0) -> tuple[torch.nn.Module, bytes]:
    torch.manual_seed(seed)
    module = build_model(SPEC, SCHEMA)
    module.eval()
    metadata = {inference.WEIGHTS_SCHEMA_KEY: canonical_json(SCHEMA.to_json()).decode()}
    return module, save_tensors({k: v.contiguous() for k, v in module.state_dict().items()}, metadata=metadata)


class World:
    """A key manager, an inference enclave and one sealed, deposited model (weights ``self.weights``)."""

    def __init__(self, *, model_cache: int = 8) -> None:
        self.km = Enclave(Role.KEY_MANAGER, seal_key=os.urandom(32))
        self.server = Enclave(Role.INFERENCE, model_cache=model_cache)
        self.owner = Account.create()
        self.module, self.weights = _model()
        self.sealed = seal_model(self.weights, self.km.encryption_key)
        signature = sign_model_deposit(
            self.owner,
            self.sealed.content_hash,
            self.sealed.wrapped_key,
            key_manager=self.km.signer,
            chain_id=CHAIN_ID,
            model_market=MARKET,
        )
        self.sealed_key = call(self.km, "deposit_model", **self.deposit_fields(signature))["sealed_key"]

    def deposit_fields(self, signature: bytes) -> dict[str, Any]:
        return {
            "chain_id": CHAIN_ID, "model_market": MARKET, "content_hash": self.sealed.content_hash,
            "wrapped_key": self.sealed.wrapped_key, "owner": to_canonical_address(self.owner.address), "signature": signature,
        }  # fmt: skip

    def release_fields(self, model_id: int, **overrides: Any) -> dict[str, Any]:
        fields = {
            "chain_id": CHAIN_ID, "model_market": MARKET, "model_id": model_id, "model_status": int(ModelStatus.ACTIVE),
            "model_owner": to_canonical_address(self.owner.address), "model_content_hash": self.sealed.content_hash,
            "model_expiry": 0, "model_source_job": 0, "now": 1000, "sealed_key": self.sealed_key, "inference_signer": self.server.signer,
            "inference_active": True, "inference_key": self.server.encryption_key,
        }  # fmt: skip
        return fields | overrides

    def load(
        self, model_id: int, policy: OutputPolicy = OutputPolicy.LABEL, param: int = 0, *, cap: int = 10_000, price: int = PRICE
    ) -> None:
        released = call(self.km, "release_model", **self.release_fields(model_id))["released_key"]
        spec = SPEC.to_bytes()
        call(
            self.server, "load_model", chain_id=CHAIN_ID, model_market=MARKET, model_id=model_id,
            weights_hash=self.sealed.weights_hash, spec_hash=hashlib.sha256(spec).digest(), content_hash=self.sealed.content_hash,
            price_per_query=price, output_policy=int(policy), output_param=param, query_cap=cap, released_key=released,
            ciphertext=self.sealed.ciphertext, model_spec=spec, measurement=MEASUREMENT,
        )  # fmt: skip

    def infer(self, model_id: int, *requests: PendingRequest | bytes, deposited: int = 10**9, redeemed: int = 0,
              redeemed_queries: int = 0, allowed: bool = True, bound: bytes | None = None) -> list[dict[str, Any]]:  # fmt: skip
        items = [
            {"envelope": r if isinstance(r, bytes) else r.envelope, "deposited": deposited, "redeemed": redeemed,
             "redeemed_queries": redeemed_queries, "allowed": allowed, "channel_enclave": bound or self.server.signer}
            for r in requests
        ]  # fmt: skip
        results: list[dict[str, Any]] = call(
            self.server, "infer", chain_id=CHAIN_ID, model_market=MARKET, model_id=model_id, requests=items
        )["results"]
        return results

    def open(self, pending: PendingRequest, result: dict[str, Any]) -> inference.Outputs:
        assert "error" not in result, result
        return open_response(
            pending, result["response"], result["receipt_signature"], measurement=MEASUREMENT, weights_hash=self.sealed.weights_hash
        )


def handmade(world: World, client: LocalAccount, voucher: Voucher, rows: np.ndarray, *, model_id: int | None = None,
             signature: bytes | None = None) -> PendingRequest:  # fmt: skip
    """A request with exactly this voucher (what a dishonest or confused client could send)."""
    signature = signature if signature is not None else sign_voucher(bytes(client.key), voucher, chain_id=CHAIN_ID, model_market=MARKET)
    request_id, secret = os.urandom(16), os.urandom(32)
    header = inference.encode_header(voucher.model_id if model_id is None else model_id, request_id, voucher, signature, len(rows))
    envelope = inference.seal_request(header, secret, rows, world.server.encryption_key, chain_id=CHAIN_ID, model_market=MARKET)
    return PendingRequest(
        envelope=envelope, request_id=request_id, voucher=voucher, voucher_signature=signature, enclave=world.server.signer,
        chain_id=CHAIN_ID, model_market=MARKET, response_secret=secret, request_hash=hashlib.sha256(envelope).digest(),
        rows=len(rows), price_per_query=PRICE,
    )  # fmt: skip


def _rows(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def world() -> World:
    w = World()
    w.load(1, OutputPolicy.LABEL)
    w.load(2, OutputPolicy.PROBABILITIES, 3)
    w.load(3, OutputPolicy.TOP_K, 2)
    return w


def _request(world: World, book: VoucherBook, client: LocalAccount, rows: np.ndarray, model_id: int = 1) -> PendingRequest:
    return build_request(
        client,
        rows,
        model_id=model_id,
        enclave=world.server.signer,
        enclave_key=world.server.encryption_key,
        price_per_query=PRICE,
        book=book,
    )


# --- answers ---------------------------------------------------------------------------------


def test_answers_equal_the_native_model_under_each_output_policy(world: World) -> None:
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    rows = _rows(1000)
    with torch.inference_mode():
        logits = world.module(torch.from_numpy(rows))
    native = {
        1: logits.argmax(dim=1).numpy(),
        2: torch.round(torch.softmax(logits, dim=1) * 1000).to(torch.int64).numpy(),
        3: torch.topk(logits, k=2, dim=1).indices.numpy(),
    }
    for model_id in (1, 2, 3):
        pending = _request(world, book, client, rows, model_id)
        (result,) = world.infer(model_id, pending)
        outputs = world.open(pending, result)
        assert result["voucher"]["queries"] == 1000 and result["voucher"]["amount"] == 1000 * PRICE
        if model_id == 2:
            assert outputs.policy is OutputPolicy.PROBABILITIES and outputs.param == 3 and outputs.values.shape == (1000, 5)
            np.testing.assert_array_equal(np.round(outputs.values * 1000).astype(np.int64), native[2])
            assert np.allclose(outputs.values.sum(axis=1), 1.0, atol=0.003)
        else:
            np.testing.assert_array_equal(outputs.values, native[model_id])
    assert outputs.policy is OutputPolicy.TOP_K and outputs.values.shape == (1000, 2)
    assert len(set(native[1])) > 1  # the model does not answer one class for everything


# --- the voucher rule ------------------------------------------------------------------------


def _refusal_cases(world: World, client: LocalAccount, mark: tuple[int, int]) -> dict[str, PendingRequest]:
    amount, queries = mark
    n = 3
    rows = _rows(n, 7)
    stranger = Account.create()
    me, srv = to_canonical_address(client.address), world.server.signer

    def v(**kw: Any) -> Voucher:
        fields: dict[str, Any] = {"model_id": 1, "client": me, "enclave": srv, "amount": amount + n * PRICE, "queries": queries + n}
        return Voucher(**(fields | kw))

    good = v()
    return {
        "VoucherStale": handmade(world, client, v(queries=queries + n - 1), rows),  # skips back
        "VoucherStale/ahead": handmade(world, client, v(queries=queries + n + 1), rows),
        "VoucherUnderpaid": handmade(world, client, v(amount=amount + n * PRICE - 1), rows),
        "VoucherOverDeposit": handmade(world, client, v(amount=10**9 + 1), rows),
        "WrongModel": handmade(world, client, v(model_id=2), rows, model_id=1),
        "WrongModel/batch": handmade(world, client, v(model_id=2), rows),
        "WrongEnclave": handmade(world, client, v(enclave=b"\x01" * 20), rows),
        "VoucherInvalid": handmade(
            world, client, good, rows, signature=sign_voucher(bytes(stranger.key), good, chain_id=CHAIN_ID, model_market=MARKET)
        ),
        "VoucherInvalid/chain": handmade(
            world, client, good, rows, signature=sign_voucher(bytes(client.key), good, chain_id=1, model_market=MARKET)
        ),
        "VoucherInvalid/garbage": handmade(world, client, good, rows, signature=bytes(64) + b"\x1b"),
        "ClientNotAllowed": handmade(world, client, good, rows),
        "WrongEnclave/channel bound elsewhere": handmade(world, client, good, rows),
    }


def test_refused_vouchers_charge_nothing_and_the_next_valid_voucher_is_served(world: World) -> None:
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    first = _request(world, book, client, _rows(5))
    (result,) = world.infer(1, first)
    world.open(first, result)
    mark = (5 * PRICE, 5)
    for name, pending in _refusal_cases(world, client, mark).items():
        expected = name.split("/")[0]
        bound = b"\x02" * 20 if name.endswith("bound elsewhere") else None
        (refused,) = world.infer(1, pending, allowed=expected != "ClientNotAllowed", bound=bound)
        assert refused["error"] == expected, (name, refused)
        assert refused["request_id"] == pending.request_id and "response" not in refused
        assert type(refusal(refused["error"], refused["message"])).__name__ == expected
    # No mark moved: the book's next voucher (exactly the channel's mark plus its rows) is served.
    nxt = _request(world, book, client, _rows(3, 9))
    assert (nxt.voucher.amount, nxt.voucher.queries) == (mark[0] + 3 * PRICE, mark[1] + 3)
    (served,) = world.infer(1, nxt)
    world.open(nxt, served)
    # A replay of a served request (the very same envelope) is stale.
    (replayed,) = world.infer(1, nxt)
    assert replayed["error"] == "VoucherStale"
    (replayed_first,) = world.infer(1, first)
    assert replayed_first["error"] == "VoucherStale"


def test_the_query_cap_bounds_each_clients_rows(world: World) -> None:
    world.load(4, OutputPolicy.LABEL, cap=7)  # model 1's weights, listed with a cap of 7 rows per client
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    assert "error" not in world.infer(4, _request(world, book, client, _rows(5), 4))[0]
    over = _request(world, book, client, _rows(3), 4)
    assert world.infer(4, over)[0]["error"] == "QueryCapExceeded"
    assert book.refund(over.voucher, rows=3, price_per_query=PRICE)
    last = _request(world, book, client, _rows(2), 4)  # exactly at the cap: served
    assert world.open(last, world.infer(4, last)[0]).values.shape == (2,)


def test_the_mark_never_falls_below_the_chain_and_a_host_cannot_lower_it(world: World) -> None:
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    a = _request(world, book, client, _rows(2))
    assert "error" not in world.infer(1, a)[0]
    # The chain shows the client redeemed up to 10 queries elsewhere: the enclave's mark follows.
    book.sync(1, client.address, redeemed=10 * PRICE, redeemed_queries=10)
    b = _request(world, book, client, _rows(2))
    assert world.infer(1, b, redeemed=10 * PRICE, redeemed_queries=10)[0].get("error") is None
    # A host reporting an older chain state does not reopen the way for an old voucher.
    assert world.infer(1, a, redeemed=0, redeemed_queries=0)[0]["error"] == "VoucherStale"


def test_a_tampered_envelope_is_refused_and_nothing_is_served(world: World) -> None:
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    pending = _request(world, book, client, _rows(4))
    body = bytearray(pending.envelope)
    body[-5] ^= 1  # the ciphertext
    header = bytearray(pending.envelope)
    header[40] ^= 1  # the request id (the voucher and its signature stay valid)
    wrong_rows = bytearray(pending.envelope)
    wrong_rows[inference.HEADER_LEN - 1] = 3  # the row count: the voucher no longer pays exactly for it
    cases = [
        (bytes(body), "RequestTampered"), (bytes(header), "RequestTampered"), (bytes(wrong_rows), "VoucherStale"),
        (b"STRX" + pending.envelope[4:], "EnvelopeMalformed"), (pending.envelope[:100], "EnvelopeMalformed"),
    ]  # fmt: skip
    for envelope, error in cases:
        (refused,) = world.infer(1, envelope)
        assert refused["error"] == error and "response" not in refused
    # Rows of another width (encrypted properly, but for a model with other inputs).
    wide = handmade(world, client, pending.voucher, _rows(4)[:, :4].copy())
    assert world.infer(1, wide)[0]["error"] == "RequestTampered"
    nan = handmade(world, client, pending.voucher, np.full((4, FEATURES), np.nan, dtype=np.float32))
    assert world.infer(1, nan)[0]["error"] == "EnvelopeMalformed"
    (served,) = world.infer(1, pending)  # nothing was charged: the untampered request is the next one
    assert world.open(pending, served).values.shape == (4,)


def test_one_bad_request_does_not_fail_the_others_in_a_batch(world: World) -> None:
    clients = [Account.create() for _ in range(4)]
    book = VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    good = [_request(world, book, c, _rows(3, i)) for i, c in enumerate(clients)]
    again = _request(world, book, clients[0], _rows(2, 11))  # the same channel twice in one batch, in order
    bad = handmade(world, clients[1], good[1].voucher, _rows(3))  # a second request with the same voucher
    results = world.infer(1, good[0], bad, good[1], again, b"junk", good[2], good[3])
    assert [r.get("error") for r in results] == [None, None, "VoucherStale", None, "EnvelopeMalformed", None, None]
    # `bad` came first on its channel, so it was served and good[1] became the stale one.
    assert world.open(bad, results[1]).values.shape == (3,)
    for pending, result, rows in (
        (good[0], results[0], _rows(3, 0)),
        (again, results[3], _rows(2, 11)),
        (good[3], results[6], _rows(3, 3)),
    ):
        with torch.inference_mode():
            native = world.module(torch.from_numpy(rows)).argmax(dim=1).numpy()
        np.testing.assert_array_equal(world.open(pending, result).values, native)


def test_a_batch_for_a_model_not_loaded_fails_whole() -> None:
    enclave = Enclave(Role.INFERENCE)
    with pytest.raises(ModelNotLoaded):
        call(enclave, "infer", chain_id=CHAIN_ID, model_market=MARKET, model_id=9,
             requests=[{"envelope": b"x", "deposited": 0, "redeemed": 0, "redeemed_queries": 0, "allowed": True, "channel_enclave": bytes(20)}])  # fmt: skip
    with pytest.raises(ProtocolError, match="1..256"):
        call(enclave, "infer", chain_id=CHAIN_ID, model_market=MARKET, model_id=9,
             requests=[{"envelope": b"x", "deposited": 0, "redeemed": 0, "redeemed_queries": 0, "allowed": True, "channel_enclave": bytes(20)}] * 257)  # fmt: skip
    with pytest.raises(ProtocolError, match="not served by a trainer"):
        call(Enclave(Role.TRAINER), "infer", chain_id=CHAIN_ID, model_market=MARKET, model_id=9,
             requests=[{"envelope": b"x", "deposited": 0, "redeemed": 0, "redeemed_queries": 0, "allowed": True, "channel_enclave": bytes(20)}])  # fmt: skip


# --- receipts --------------------------------------------------------------------------------


def test_the_sdk_verifies_the_receipt_and_rejects_forged_or_mismatched_ones(world: World) -> None:
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    pending = _request(world, book, client, _rows(6))
    (result,) = world.infer(1, pending)
    response, signature = result["response"], result["receipt_signature"]
    assert result["voucher_signature"] == pending.voucher_signature
    assert Voucher(**result["voucher"]) == pending.voucher
    ok = open_response(pending, response, signature, measurement=MEASUREMENT, weights_hash=world.sealed.weights_hash,
                       output_policy=OutputPolicy.LABEL, output_param=0)  # fmt: skip
    assert ok.values.shape == (6,)
    flipped = bytearray(response)
    flipped[-1] ^= 1
    forger = Account.create()

    forged_receipt = ResponseReceipt(1, pending.voucher.client, pending.request_hash, hashlib.sha256(response).digest(),
                                     world.sealed.weights_hash, MEASUREMENT, pending.voucher.amount, pending.voucher.queries)  # fmt: skip
    forged = sign_digest(bytes(forger.key), forged_receipt.digest(chain_id=CHAIN_ID, model_market=MARKET))
    cases: list[tuple[bytes, bytes, dict[str, Any], str]] = [
        (bytes(flipped), signature, {}, "not signed by enclave"),  # the response hash no longer matches
        (response, forged, {}, "not signed by enclave"),
        (response, bytes(65), {}, "malformed"),
        (response, signature, {"measurement": bytes(32)}, "not signed by enclave"),
        (response, signature, {"weights_hash": bytes(32)}, "not signed by enclave"),
        (response, signature, {"output_policy": OutputPolicy.PROBABILITIES, "output_param": 6}, "not the listing's"),
    ]
    for resp, sig, overrides, match in cases:
        kwargs: dict[str, Any] = {"measurement": MEASUREMENT, "weights_hash": world.sealed.weights_hash} | overrides
        with pytest.raises(ResponseRejected, match=match):
            open_response(pending, resp, sig, **kwargs)
    # A receipt for another request (same client, another envelope) does not verify for this one.
    other = _request(world, book, client, _rows(6))
    (other_result,) = world.infer(1, other)
    with pytest.raises(ResponseRejected, match="not signed by enclave"):
        open_response(pending, other_result["response"], other_result["receipt_signature"], measurement=MEASUREMENT,
                      weights_hash=world.sealed.weights_hash)  # fmt: skip


# --- the key manager -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"inference_active": False}, "not an active inference enclave"),
        ({"model_status": int(ModelStatus.PAUSED)}, "not active"),
        ({"model_status": int(ModelStatus.DELISTED)}, "not active"),
        ({"model_status": int(ModelStatus.NONE)}, "not active"),
        ({"model_expiry": 1000}, "expired at 1000"),
        ({"model_owner": b"\x07" * 20}, "not by its on-chain owner"),
        ({"model_market": b"\x43" * 20}, "not by its on-chain owner"),
        ({"chain_id": 1}, "not by its on-chain owner"),
    ],
)
def test_the_key_manager_refuses_a_model_key(world: World, overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(Exception, match=match) as refused:
        call(world.km, "release_model", **world.release_fields(1, **overrides))
    assert type(refused.value).__name__ == "ModelReleaseRefused"


def test_a_released_model_key_opens_only_for_its_enclave_and_model(world: World) -> None:
    released = call(world.km, "release_model", **world.release_fields(5, model_expiry=1001))["released_key"]
    trainer = Enclave(Role.TRAINER)
    with pytest.raises(ProtocolError, match="not served by a trainer"):
        call(trainer, "release_model", **world.release_fields(5))
    spec = SPEC.to_bytes()
    load = {
        "chain_id": CHAIN_ID, "model_market": MARKET, "model_id": 5, "weights_hash": world.sealed.weights_hash,
        "spec_hash": hashlib.sha256(spec).digest(), "content_hash": world.sealed.content_hash, "price_per_query": 1,
        "output_policy": 1, "output_param": 0, "query_cap": 1, "released_key": released, "ciphertext": world.sealed.ciphertext,
        "model_spec": spec, "measurement": MEASUREMENT,
    }  # fmt: skip
    other = Enclave(Role.INFERENCE)
    with pytest.raises(Exception, match="does not open") as e:
        call(other, "load_model", **load)
    assert type(e.value).__name__ == "KeyUnwrapFailed"
    with pytest.raises(Exception, match="does not open"):
        call(world.server, "load_model", **(load | {"model_id": 6}))  # released for model 5
    with pytest.raises(Exception, match="content hash"):
        call(world.server, "load_model", **(load | {"ciphertext": world.sealed.ciphertext[:-1] + b"\x00"}))
    with pytest.raises(Exception, match="spec hash"):
        call(world.server, "load_model", **(load | {"spec_hash": bytes(32)}))
    with pytest.raises(Exception, match="weights hash"):
        call(world.server, "load_model", **(load | {"weights_hash": bytes(32)}))
    with pytest.raises(ProtocolError, match="TOP_K"):
        call(world.server, "load_model", **(load | {"output_policy": 2}))
    with pytest.raises(ProtocolError, match="0..6"):
        call(world.server, "load_model", **(load | {"output_policy": 3, "output_param": 7}))
    assert call(world.server, "load_model", **load)["features"] == FEATURES


def test_model_deposit_signatures_are_checked() -> None:
    world = World()
    owner, stranger = world.owner, Account.create()
    statement = ModelDeposit(world.sealed.content_hash, world.sealed.wrapped_key, world.km.signer)
    # The hand-rolled digest is EIP-712's (what wallets sign with MODEL_DEPOSIT_TYPES).
    typed = encode_typed_data(domain(CHAIN_ID, MARKET), MODEL_DEPOSIT_TYPES, statement.message())
    assert keccak(b"\x19" + typed.version + typed.header + typed.body) == statement.digest(chain_id=CHAIN_ID, model_market=MARKET)
    content, wrapped = world.sealed.content_hash, world.sealed.wrapped_key

    def sign(signer: LocalAccount, key_manager: bytes = world.km.signer, chain_id: int = CHAIN_ID, market: bytes = MARKET) -> bytes:
        return sign_model_deposit(signer, content, wrapped, key_manager=key_manager, chain_id=chain_id, model_market=market)

    forged = [
        sign(stranger),
        sign(owner, chain_id=CHAIN_ID + 1),
        sign(owner, key_manager=b"\x01" * 20),
        sign(owner, market=b"\x01" * 20),
        # A dataset deposit (job market's domain) of the same key never stands in for a model's.
        sign_deposit(owner, Deposit(content, wrapped, world.km.signer), chain_id=CHAIN_ID, market=MARKET),
        bytes(65),
    ]
    for signature in forged:
        with pytest.raises(DepositSignatureInvalid):
            call(world.km, "deposit_model", **world.deposit_fields(signature))
    # A model deposit's sealed key never passes as a dataset's (another sealing label).
    with pytest.raises(platform_seal.SealedDataInvalid):
        platform_seal.unseal(world.km._seal_key or b"", world.sealed_key, label=b"sterling/v2/sealed-datakey/" + world.sealed.content_hash)


# --- the model cache -------------------------------------------------------------------------


def test_the_model_cache_keeps_the_most_recently_used_models_only() -> None:
    world = World(model_cache=2)
    client, book = Account.create(), VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    world.load(1)
    world.load(2)
    assert "error" not in world.infer(1, _request(world, book, client, _rows(1), 1))[0]  # 1 is now the most recent
    world.load(3)  # evicts 2
    assert len(world.server._inference().models) == 2
    with pytest.raises(ModelNotLoaded):
        world.infer(2, _request(world, book, client, _rows(1), 2))
    book.refund(book.issue(2, client.address, world.server.signer, rows=1, price_per_query=PRICE), rows=1, price_per_query=PRICE)
    assert "error" not in world.infer(1, _request(world, book, client, _rows(1), 1))[0]
    # A reload with the same key and weights reprices without rebuilding the module.
    module = world.server._inference().models.get((CHAIN_ID, MARKET, 1)).module
    world.load(1, price=PRICE + 1)
    assert world.server._inference().models.get((CHAIN_ID, MARKET, 1)).module is module
    under = _request(world, book, client, _rows(1), 1)  # priced at PRICE by the client
    assert world.infer(1, under)[0]["error"] == "VoucherUnderpaid"


# --- through a real trusted process ----------------------------------------------------------


@pytest.fixture(scope="module")
def processes() -> Any:
    km = EnclaveProcess.start(Role.KEY_MANAGER, seal_key=os.urandom(32))
    popen = subprocess.Popen(
        [sys.executable, "-m", "enclave_worker.trusted.main", "--role", "inference", "--models", "4", "--threads", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=CODE_ROOT, start_new_session=True,
    )  # fmt: skip
    server = EnclaveProcess(popen, Role.INFERENCE)
    yield km, server
    server.close()
    km.close()


def test_serving_through_the_trusted_processes(processes: Any) -> None:
    km, server = processes
    assert server.request("hello")["role"] == int(Role.INFERENCE)
    owner, client = Account.create(), Account.create()
    module, weights = _model(3)
    sealed = seal_model(weights, km.encryption_key)
    signature = sign_model_deposit(
        owner, sealed.content_hash, sealed.wrapped_key, key_manager=km.signer, chain_id=CHAIN_ID, model_market=MARKET
    )
    sealed_key = km.request(
        "deposit_model", chain_id=CHAIN_ID, model_market=MARKET, content_hash=sealed.content_hash, wrapped_key=sealed.wrapped_key,
        owner=to_canonical_address(owner.address), signature=signature,
    )["sealed_key"]  # fmt: skip
    release = {
        "chain_id": CHAIN_ID, "model_market": MARKET, "model_id": 1, "model_status": 1, "model_owner": to_canonical_address(owner.address),
        "model_content_hash": sealed.content_hash, "model_expiry": 0, "model_source_job": 0, "now": 5, "sealed_key": sealed_key,
        "inference_signer": server.signer, "inference_active": True, "inference_key": server.encryption_key,
    }  # fmt: skip
    with pytest.raises(EnclaveRequestFailed, match="ModelReleaseRefused"):
        km.request("release_model", **(release | {"inference_active": False}))
    released = km.request("release_model", **release)["released_key"]
    spec = SPEC.to_bytes()
    server.request(
        "load_model", chain_id=CHAIN_ID, model_market=MARKET, model_id=1, weights_hash=sealed.weights_hash,
        spec_hash=hashlib.sha256(spec).digest(), content_hash=sealed.content_hash, price_per_query=PRICE, output_policy=3,
        output_param=6, query_cap=10**6, released_key=released, ciphertext=sealed.ciphertext, model_spec=spec,
        measurement=MEASUREMENT,
    )  # fmt: skip
    book = VoucherBook(chain_id=CHAIN_ID, model_market=MARKET)
    rows = _rows(1000, 5)
    pendings = [
        build_request(client, rows[i * 250 : (i + 1) * 250], model_id=1, enclave=server.signer, enclave_key=server.encryption_key,
                      price_per_query=PRICE, book=book)
        for i in range(4)
    ]  # fmt: skip
    items = [
        {"envelope": p.envelope, "deposited": 10**9, "redeemed": 0, "redeemed_queries": 0, "allowed": True, "channel_enclave": server.signer}
        for p in pendings
    ]
    results = server.request("infer", chain_id=CHAIN_ID, model_market=MARKET, model_id=1, requests=items)["results"]
    got = np.concatenate([
        open_response(p, r["response"], r["receipt_signature"], measurement=MEASUREMENT, weights_hash=sealed.weights_hash).values
        for p, r in zip(pendings, results, strict=True)
    ])  # fmt: skip
    with torch.inference_mode():
        native = torch.round(torch.softmax(module(torch.from_numpy(rows)), dim=1) * 10**6).to(torch.int64).numpy()
    # One forward pass over all 1,000 rows in the enclave, the same in the test: the same numbers.
    np.testing.assert_array_equal(np.round(got * 10**6).astype(np.int64), native)
    again = server.request("infer", chain_id=CHAIN_ID, model_market=MARKET, model_id=1, requests=items[:1])["results"]
    assert again[0]["error"] == "VoucherStale"
    with pytest.raises(EnclaveRequestFailed, match="not served by a inference|not served by an inference|not served"):
        server.request("release_model", **release)


REGRESSION_SCHEMA = Schema(task="regression", feature_names=SCHEMA.feature_names, feature_shape=SCHEMA.feature_shape,
                           target_names=("y",), target_bounds=((0, 1),))  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        (None, "no valid input schema"),  # the schema comes from the weights, never from the host
        # The output policies release labels or class probabilities: a regression model is not served.
        ({inference.WEIGHTS_SCHEMA_KEY: canonical_json(REGRESSION_SCHEMA.to_json()).decode()},
         "served models are classifiers; this one is a regression model"),
    ],
    ids=["no-schema", "regression"],
)
def test_weights_without_a_classifiers_schema_in_the_metadata_are_refused_at_load(metadata: dict[str, str] | None, match: str) -> None:
    """The input schema comes from the weights (bound by the listing's weights hash), never from the host."""
    km, server, owner = Enclave(Role.KEY_MANAGER, seal_key=os.urandom(32)), Enclave(Role.INFERENCE), Account.create()
    module, _ = _model()
    bare = save_tensors({k: v.contiguous() for k, v in module.state_dict().items()}, metadata=metadata)
    sealed = seal_model(bare, km.encryption_key)
    signature = sign_model_deposit(
        owner, sealed.content_hash, sealed.wrapped_key, key_manager=km.signer, chain_id=CHAIN_ID, model_market=MARKET
    )
    sealed_key = call(
        km, "deposit_model", chain_id=CHAIN_ID, model_market=MARKET, content_hash=sealed.content_hash, wrapped_key=sealed.wrapped_key,
        owner=to_canonical_address(owner.address), signature=signature,
    )["sealed_key"]  # fmt: skip
    released = call(
        km, "release_model", chain_id=CHAIN_ID, model_market=MARKET, model_id=1, model_status=int(ModelStatus.ACTIVE),
        model_owner=to_canonical_address(owner.address), model_content_hash=sealed.content_hash, model_expiry=0, model_source_job=0, now=1,
        sealed_key=sealed_key, inference_signer=server.signer, inference_active=True, inference_key=server.encryption_key,
    )["released_key"]  # fmt: skip
    spec = SPEC.to_bytes()
    with pytest.raises(Exception, match=match) as e:
        call(
            server, "load_model", chain_id=CHAIN_ID, model_market=MARKET, model_id=1, weights_hash=sealed.weights_hash,
            spec_hash=hashlib.sha256(spec).digest(), content_hash=sealed.content_hash, price_per_query=1, output_policy=1,
            output_param=0, query_cap=1, released_key=released, ciphertext=sealed.ciphertext, model_spec=spec, measurement=MEASUREMENT,
        )  # fmt: skip
    assert type(e.value).__name__ == "ModelLoadFailed"
