"""The browser's competition crypto (web/js/crypto/competition.js) against the Python key manager, in real Chromium.

The page builds the same ``info`` bindings as ``enclave_worker/trusted/keywrap.py``; a test set
and a model the page seals (and whose Deposit it signs under the competition market's domain) are
opened by the trusted key manager's own handlers (``deposit_test_set``, ``admit_submission``, as
tests/enclave_worker/test_competition_enclave.py drives them), and refused when bound to another
market or participant; and the page opens a model key the key manager re-wrapped to a purchase
key the page made (``release_purchase``, :func:`keywrap.purchase_info`), and refuses a tampered one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from eth_account import Account
from eth_utils import to_canonical_address
from playwright.sync_api import Browser, Page
from safetensors.torch import save as save_tensors

from enclave_worker.trusted import dataformat, inference, keywrap, protocol
from enclave_worker.trusted.competition import DOMAIN_NAME, DOMAIN_VERSION, Admission, sign, signer_of
from enclave_worker.trusted.dataset import DatasetPackage, Schema, canonical_json
from enclave_worker.trusted.enclave import Enclave
from enclave_worker.trusted.errors import KeyUnwrapFailed, SubmissionRefused
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import Architecture, CompetitionStatus, Metric, Role
from enclave_worker.trusted.receipt import Deposit
from marketplace.competing import seal_submission
from tests.web.test_browser_crypto import TRICKY_CSV, b64, reference_csv_package, unb64

pytestmark = pytest.mark.browser

CHAIN_ID = 31337
COMPETITIONS = bytes.fromhex("c0" * 20)
OTHER_MARKET = bytes.fromhex("c1" * 20)
COMPETITION = 2**40 + 3  # beyond 32 bits: the binding holds it as 32 bytes
SCHEMA = Schema(task="classification", feature_names=("a", "b", "c", "d", "e"), feature_shape=(5,), class_names=("x", "y", "z"))
SPEC = ModelSpec(architecture="mlp", hidden_sizes=(8,), epochs=1, batch_size=8, learning_rate=0.1, max_grad_norm=1.0)


def call(enclave: Enclave, op: str, **fields: Any) -> dict[str, Any]:
    """One request as the trusted process takes it: schema-checked, then handled."""
    op, checked = protocol.validate_request({"v": protocol.PROTOCOL_VERSION, "op": op, **fields})
    return enclave.handle(op, checked, lambda message: None)


def package(rows: int, seed: int) -> DatasetPackage:
    rng = np.random.default_rng(seed)
    return DatasetPackage(
        features=rng.normal(size=(rows, 5)).astype(np.float32), labels=rng.integers(0, 3, size=rows).astype(np.int64), schema=SCHEMA
    )


def weights_file(spec: ModelSpec = SPEC, *, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    module = build_model(spec, SCHEMA)
    metadata = {
        inference.WEIGHTS_SPEC_KEY: spec.to_bytes().decode(),
        inference.WEIGHTS_SCHEMA_KEY: canonical_json(SCHEMA.to_json()).decode(),
    }
    return save_tensors({k: v.detach().contiguous() for k, v in module.state_dict().items()}, metadata=metadata)


def domain_js(market: bytes = COMPETITIONS) -> dict[str, Any]:
    return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": CHAIN_ID, "verifyingContract": "0x" + market.hex()}


@pytest.fixture(scope="module")
def page(browser: Browser, static_server: str) -> Iterator[Page]:
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{static_server}/test/crypto.html")
    pg.wait_for_function("document.body.dataset.ready === 'true'", timeout=10_000)
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the harness page: {errors}"


@pytest.fixture(scope="module")
def key_manager() -> Enclave:
    return Enclave(Role.KEY_MANAGER, seal_key=os.urandom(32))


def js(page: Page, body: str, *args: Any) -> Any:
    """Run an async body with ``C`` = crypto/competition.js, ``S`` = the crypto API, ``signDeposit``, ``ethers`` and ``args``."""
    return page.evaluate(
        "async (args) => { const C = await import('/js/crypto/competition.js'), ethers = await import('ethers');"
        " const { signDeposit } = await import('/js/listing-flow.js');"
        f" const S = window.sterling.crypto, {{ b64encode, b64decode, outcome }} = window.sterling; {body} }}",
        list(args),
    )


def admission_fields(participant: bytes, *, max_parameters: int = 0, market: bytes = COMPETITIONS) -> dict[str, Any]:
    return {
        "chain_id": CHAIN_ID, "competitions": market, "competition_id": COMPETITION, "test_set_hash": bytes(range(32)),
        "schema_hash": SCHEMA.hash(), "metric": int(Metric.ACCURACY), "public_split_bps": 3000, "ladder_step": 10_000,
        "max_parameters": max_parameters, "architectures": int(Architecture.LOGISTIC_REGRESSION | Architecture.MLP),
        "competition_status": int(CompetitionStatus.OPEN), "closes_at": 2000, "now": 1000, "participant": participant,
    }  # fmt: skip


SEAL_TEST_SET = """const [data, csv, km, chainId, market, key, domain, keyManager] = args;
    const dataset = csv === null ? new Blob([b64decode(data)]) : S.parseCsv(csv);
    const sealed = await C.sealTestSet(dataset, {
      kmPublicKey: b64decode(km), chainId: BigInt(chainId), competitions: market, chunkSize: 1024 });
    const signature = await signDeposit(new ethers.Wallet(key), {
      domain, contentHash: sealed.contentHash, wrappedKey: sealed.wrappedKey, keyManager });
    return { ciphertext: b64encode(new Uint8Array(await sealed.ciphertext.arrayBuffer())), contentHash: sealed.contentHash,
             wrappedKey: b64encode(sealed.wrappedKey), schemaHash: sealed.schemaHash, rows: sealed.rows, signature };"""


def test_the_bindings_are_keywraps(page: Page) -> None:
    content, buyer, participant = hashlib.sha256(b"ct").digest(), bytes(range(20)), bytes(range(1, 21))
    got = js(
        page,
        """const [chainId, market, cid, participant, buyer, content] = args;
        const m = b64decode(market), c = b64decode(content);
        return [C.testSetInfo(BigInt(chainId), m, c), C.submissionInfo(BigInt(chainId), m, BigInt(cid), b64decode(participant), c),
                C.purchaseInfo(BigInt(chainId), m, BigInt(cid), 4294967295, b64decode(buyer), c)].map(b64encode);""",
        CHAIN_ID, b64(COMPETITIONS), str(COMPETITION), b64(participant), b64(buyer), b64(content),
    )  # fmt: skip
    assert [unb64(g) for g in got] == [
        keywrap.test_set_info(CHAIN_ID, COMPETITIONS, content),
        keywrap.submission_info(CHAIN_ID, COMPETITIONS, COMPETITION, participant, content),
        keywrap.purchase_info(CHAIN_ID, COMPETITIONS, COMPETITION, 2**32 - 1, buyer, content),
    ]


@pytest.mark.parametrize("source", ["package", "csv"])
def test_a_test_set_sealed_in_the_page_is_deposited_with_the_key_manager(page: Page, key_manager: Enclave, source: str) -> None:
    organizer = Account.create()
    expected = package(300, 1) if source == "package" else reference_csv_package(TRICKY_CSV)
    data, csv = (b64(expected.to_bytes()), None) if source == "package" else ("", TRICKY_CSV)
    sealed = js(
        page, SEAL_TEST_SET, data, csv, b64(key_manager.encryption_key), CHAIN_ID, "0x" + COMPETITIONS.hex(), organizer.key.hex(),
        domain_js(), "0x" + key_manager.signer.hex(),
    )  # fmt: skip
    ciphertext = unb64(sealed["ciphertext"])
    assert sealed["contentHash"] == hashlib.sha256(ciphertext).hexdigest()
    assert ciphertext[:4] == b"STRL" and ciphertext[5] == dataformat.Kind.DATASET
    assert sealed["schemaHash"] == expected.schema.hash().hex() and sealed["rows"] == expected.rows
    fields = {
        "chain_id": CHAIN_ID, "competitions": COMPETITIONS, "organizer": to_canonical_address(organizer.address),
        "wrapped_key": unb64(sealed["wrappedKey"]), "signature": bytes.fromhex(sealed["signature"][2:]), "ciphertext": ciphertext,
    }  # fmt: skip
    reply = call(key_manager, "deposit_test_set", **fields)
    assert reply["content_hash"].hex() == sealed["contentHash"]
    assert reply["schema_hash"] == expected.schema.hash() and reply["rows"] == expected.rows

    # Bound to its market: the same wrapped key does not open for another competition market.
    other = Account.create()
    signed_other = js(
        page, SEAL_TEST_SET, data, csv, b64(key_manager.encryption_key), CHAIN_ID, "0x" + OTHER_MARKET.hex(), other.key.hex(),
        domain_js(COMPETITIONS), "0x" + key_manager.signer.hex(),
    )  # fmt: skip
    with pytest.raises(KeyUnwrapFailed):
        call(
            key_manager, "deposit_test_set", **fields | {
                "organizer": to_canonical_address(other.address), "wrapped_key": unb64(signed_other["wrappedKey"]),
                "signature": bytes.fromhex(signed_other["signature"][2:]), "ciphertext": unb64(signed_other["ciphertext"]),
            },
        )  # fmt: skip


def test_a_model_sealed_in_the_page_is_admitted_by_the_key_manager(page: Page, key_manager: Enclave) -> None:
    alice, mallory = Account.create(), Account.create()
    weights = weights_file()
    got = js(
        page,
        """const [weights, km, chainId, market, cid, keys, domain, keyManager, datasetPackage] = args;
        const file = new Blob([b64decode(weights)]);
        const info = await C.readWeights(file);
        const out = { info: { architecture: info.spec.architecture, schemaHash: info.schemaHash,
                              tensors: info.tensors, values: info.values } };
        for (const [name, key] of Object.entries(keys)) {
          const who = new ethers.Wallet(key);
          const sealed = await C.sealSubmission(file, { kmPublicKey: b64decode(km), chainId: BigInt(chainId), competitions: market,
            competitionId: BigInt(cid), participant: who.address, chunkSize: 1024 });
          const signature = await signDeposit(who, { domain, contentHash: sealed.contentHash, wrappedKey: sealed.wrappedKey, keyManager });
          out[name] = { ciphertext: b64encode(new Uint8Array(await sealed.ciphertext.arrayBuffer())), contentHash: sealed.contentHash,
                        weightsHash: sealed.weightsHash, wrappedKey: b64encode(sealed.wrappedKey), signature };
        }
        out.notAModel = (await outcome(() => C.readWeights(new Blob([b64decode(datasetPackage)])))).name;
        out.notSafetensors = (await outcome(() => C.readWeights(new Blob([new Uint8Array(64).fill(7)])))).name;
        return out;""",
        b64(weights), b64(key_manager.encryption_key), CHAIN_ID, "0x" + COMPETITIONS.hex(), str(COMPETITION),
        {"alice": alice.key.hex(), "mallory": mallory.key.hex()}, domain_js(), "0x" + key_manager.signer.hex(),
        b64(package(20, 2).to_bytes()),
    )  # fmt: skip
    module = build_model(SPEC, SCHEMA)
    assert got["info"] == {
        "architecture": "mlp", "schemaHash": SCHEMA.hash().hex(), "tensors": len(module.state_dict()),
        "values": sum(v.numel() for v in module.state_dict().values()),
    }  # fmt: skip
    assert got["notAModel"] == got["notSafetensors"] == "InvalidWeights"
    sealed = got["alice"]
    ciphertext = unb64(sealed["ciphertext"])
    assert sealed["weightsHash"] == hashlib.sha256(weights).hexdigest() and sealed["contentHash"] == hashlib.sha256(ciphertext).hexdigest()
    header = dataformat.Header.decode(ciphertext[: dataformat.HEADER_LEN])
    assert header.kind is dataformat.Kind.MODEL and header.context == hashlib.sha256(weights).digest()

    def admit(entry: dict[str, str], participant: str, **overrides: Any) -> dict[str, Any]:
        market = overrides.pop("market", COMPETITIONS)
        fields = admission_fields(to_canonical_address(participant), market=market, **overrides) | {
            "ciphertext": unb64(entry["ciphertext"]), "wrapped_key": unb64(entry["wrappedKey"]),
            "signature": bytes.fromhex(entry["signature"][2:]),
        }  # fmt: skip
        return call(key_manager, "admit_submission", **fields)

    def signed_by(account: Any, entry: dict[str, str], market: bytes = COMPETITIONS) -> dict[str, str]:
        """``entry`` with a Deposit over its ciphertext and wrapped key signed in the page by ``account``."""
        signature = js(
            page,
            "const [key, domain, contentHash, wrapped, keyManager] = args;"
            " return signDeposit(new ethers.Wallet(key), { domain, contentHash, wrappedKey: b64decode(wrapped), keyManager });",
            account.key.hex(), domain_js(market), entry["contentHash"], entry["wrappedKey"], "0x" + key_manager.signer.hex(),
        )  # fmt: skip
        return entry | {"signature": signature}

    reply = admit(sealed, alice.address)
    assert reply["weights_hash"] == hashlib.sha256(weights).digest() and reply["content_hash"].hex() == sealed["contentHash"]
    statement = Admission(COMPETITION, to_canonical_address(alice.address), reply["content_hash"], reply["weights_hash"])
    assert signer_of(statement, reply["admission"], chain_id=CHAIN_ID, competitions=COMPETITIONS) == key_manager.signer
    assert admit(got["mallory"], mallory.address)["weights_hash"] == reply["weights_hash"]  # her own sealing of the same file is hers
    with pytest.raises(KeyUnwrapFailed):  # Alice's ciphertext and wrapped key, deposited by Mallory, do not open under her name
        admit(signed_by(mallory, sealed), mallory.address)
    with pytest.raises(KeyUnwrapFailed):  # nor for another competition market
        admit(signed_by(alice, sealed, OTHER_MARKET), alice.address, market=OTHER_MARKET)
    with pytest.raises(SubmissionRefused, match="parameters"):  # and the rules apply to what the page sealed
        admit(sealed, alice.address, max_parameters=10)


def test_the_page_opens_a_bought_model_with_the_key_the_key_manager_released(page: Page, key_manager: Enclave) -> None:
    alice, organizer = Account.create(), Account.create()
    weights = weights_file(seed=5)
    sealed = seal_submission(
        weights, key_manager_key=key_manager.encryption_key, chain_id=CHAIN_ID, competitions=COMPETITIONS, competition_id=COMPETITION,
        participant=alice.address,
    )  # fmt: skip
    deposit = Deposit(sealed.content_hash, sealed.wrapped_key, key_manager.signer)
    signature = sign(alice, deposit, chain_id=CHAIN_ID, competitions=COMPETITIONS)
    admitted = call(
        key_manager, "admit_submission", **admission_fields(to_canonical_address(alice.address)) | {
            "ciphertext": sealed.ciphertext, "wrapped_key": sealed.wrapped_key, "signature": signature,
        },
    )  # fmt: skip
    # The buyer's key pair is made in the page; only its public half leaves it (on-chain, with the payment).
    public = unb64(js(page, "const pair = await S.generateKeyPair(); window.buyerKey = pair.privateKey; return b64encode(pair.publicKey);"))
    released = call(
        key_manager, "release_purchase", chain_id=CHAIN_ID, competitions=COMPETITIONS, competition_id=COMPETITION,
        competition_status=int(CompetitionStatus.CLOSED), index=7, participant=to_canonical_address(alice.address),
        submission_hash=admitted["content_hash"], buyer=to_canonical_address(organizer.address), buyer_key=public,
        submission_sealed_key=admitted["sealed_key"],
    )["released_key"]  # fmt: skip
    got = js(
        page,
        """const [ciphertext, released, chainId, market, cid, buyer, content, weightsHash, stranger] = args;
        const purchase = { chainId: BigInt(chainId), competitions: market, competitionId: BigInt(cid), index: 7, buyer,
                           contentHash: content, weightsHash };
        const ct = b64decode(ciphertext), key = b64decode(released);
        const opened = await C.openPurchasedModel(ct, key, window.buyerKey, purchase);
        const flipped = ct.slice(); flipped[flipped.length - 5] ^= 1;
        const attempts = {
          tampered: () => C.openPurchasedModel(flipped, key, window.buyerKey, purchase),
          anotherBuyer: () => C.openPurchasedModel(ct, key, window.buyerKey, { ...purchase, buyer: stranger }),
          anotherEntry: () => C.openPurchasedModel(ct, key, window.buyerKey, { ...purchase, index: 8 }),
          anotherKey: async () => C.openPurchasedModel(ct, key, (await S.generateKeyPair()).privateKey, purchase),
          otherWeights: () => C.openPurchasedModel(ct, key, window.buyerKey, { ...purchase, weightsHash: "ab".repeat(32) }),
        };
        const refused = {};
        for (const [name, attempt] of Object.entries(attempts)) refused[name] = (await outcome(attempt)).name;
        return { weights: b64encode(opened), refused };""",
        b64(sealed.ciphertext), b64(released), CHAIN_ID, "0x" + COMPETITIONS.hex(), str(COMPETITION), organizer.address,
        sealed.content_hash.hex(), sealed.weights_hash.hex(), Account.create().address,
    )  # fmt: skip
    assert unb64(got["weights"]) == weights
    assert got["refused"] == {
        "tampered": "CiphertextTampered", "anotherBuyer": "KeyUnwrapFailed", "anotherEntry": "KeyUnwrapFailed",
        "anotherKey": "KeyUnwrapFailed", "otherWeights": "CiphertextMalformed",
    }  # fmt: skip


def test_the_page_explains_the_competition_markets_reverts_and_passes_refusals_on(page: Page) -> None:
    """competition-flow.js ``describeError``: a custom error decoded from raw revert data (as the relay returns
    it for a transaction refused while its gas is estimated) is explained; a key manager's refusal is shown as is."""
    got = js(
        page,
        """const F = await import('/js/competition-flow.js'), { COMPETITION_MARKET_ABI } = await import('/js/abi.js');
        const market = new ethers.Interface(COMPETITION_MARKET_ABI);
        const incomplete = market.encodeErrorResult("CompetitionMarketScoringIncomplete", [3n, 1, 2]);
        const notAllowed = market.encodeErrorResult("CompetitionMarketBuyerNotAllowed", [3n, ethers.ZeroAddress]);
        const unexplained = market.encodeErrorResult("CompetitionMarketWrongMetric", [3n, 1, 2]);
        return [F.describeError({ data: incomplete }), F.describeError({ info: { error: { data: notAllowed } } }),
                F.describeError({ data: unexplained }),
                F.describeError(new F.CompetitionRefused("The key manager refused the model: too big"))];""",
    )
    assert got == [
        "Only 1 of competition #3's 2 entries have their private score; the organizer may close once every one has."
        " [CompetitionMarketScoringIncomplete(3, 1, 2)]",
        f"Only the organizer of competition #3 may buy its models. [CompetitionMarketBuyerNotAllowed(3, {'0x' + '0' * 40})]",
        "CompetitionMarketWrongMetric(3, 1, 2)",
        "The key manager refused the model: too big",
    ]
