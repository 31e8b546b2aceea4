"""The browser's serving crypto (web/js/crypto/inference.js) against the Python implementation, in real Chromium.

For fixed inputs, the page builds the same clear header, HPKE ``info``, voucher signature and
response key as ``enclave_worker/trusted/inference.py`` / ``vouchers.py``; it opens responses and
outputs Python sealed; and, end to end, an envelope the page builds is served by the enclave's
own ``InferenceServer`` and its answer opens and verifies in the page (a tampered answer, another
measurement or another weights hash is rejected).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from playwright.sync_api import Browser, Page

from enclave_worker.trusted import dataformat, inference, keywrap
from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.inference import ChannelState, InferenceServer, ListingTerms
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import OutputPolicy
from enclave_worker.trusted.vouchers import Voucher, sign_voucher
from marketplace.serving import model_weights
from tests.web.test_browser_crypto import b64, unb64

pytestmark = pytest.mark.browser

CHAIN_ID = 31337
MARKET = bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3")
CLIENT = Account.from_key("0x" + "11" * 32)
ENCLAVE_KEY = bytes.fromhex("22" * 32)
SCHEMA = Schema(task="classification", feature_names=("a", "b", "c", "d", "e"), feature_shape=(5,), class_names=("x", "y", "z"))
SPEC = ModelSpec(architecture="mlp", hidden_sizes=(8,), epochs=1, batch_size=8, learning_rate=0.1, max_grad_norm=1.0, seed=3)
MEASUREMENT = hashlib.sha256(b"inference measurement").digest()


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


def js(page: Page, body: str, *args: Any) -> Any:
    """Run an async body with ``I`` = inference.js, ``ethers``, the harness helpers and ``args``."""
    return page.evaluate(
        "async (args) => { const I = await import('/js/crypto/inference.js'), ethers = await import('ethers');"
        f" const {{ b64encode, b64decode, outcome }} = window.sterling; {body} }}",
        list(args),
    )


def voucher_js(v: Voucher) -> dict[str, str]:
    return {"modelId": str(v.model_id), "client": "0x" + v.client.hex(), "enclave": "0x" + v.enclave.hex(),
            "amount": str(v.amount), "queries": str(v.queries)}  # fmt: skip


def test_header_info_and_voucher_signature_are_pythons(page: Page) -> None:
    enclave = Account.from_key(ENCLAVE_KEY).address
    voucher = Voucher(model_id=7, client=bytes.fromhex(CLIENT.address[2:]), enclave=bytes.fromhex(enclave[2:]),
                      amount=3 * 10**15 + 12345, queries=2**40 + 3)  # fmt: skip
    signature = sign_voucher(bytes(CLIENT.key), voucher, chain_id=CHAIN_ID, model_market=MARKET)
    request_id = bytes(range(16))
    header = inference.encode_header(7, request_id, voucher, signature, 5)
    got = js(
        page,
        """const [key, chainId, market, v, requestId] = args;
        const domain = I.modelMarketDomain(chainId, market);
        const signature = await I.signVoucher(new ethers.Wallet(key), domain, v);
        const header = I.encodeHeader({ modelId: 7n, requestId: b64decode(requestId), voucher: v, signature, rows: 5 });
        const info = await I.requestInfo(chainId, market, header);
        return { signature: b64encode(signature), header: b64encode(header), info: b64encode(info) };""",
        CLIENT.key.hex(), CHAIN_ID, "0x" + MARKET.hex(), voucher_js(voucher), b64(request_id),
    )  # fmt: skip
    assert unb64(got["signature"]) == signature  # RFC 6979: the same bytes, v = 27/28
    assert unb64(got["header"]) == header and len(header) == inference.HEADER_LEN
    assert unb64(got["info"]) == inference.request_info(CHAIN_ID, MARKET, header)
    parsed = inference.parse_header(unb64(got["header"]) + bytes(80))
    assert parsed.voucher == voucher and parsed.rows == 5 and parsed.request_id == request_id


def test_response_key_and_outputs_are_pythons(page: Page) -> None:
    secret, enc, nonce, request_hash = os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32)
    key, iv = inference.response_key(secret, enc, nonce, request_hash)
    cases = {
        "label": (OutputPolicy.LABEL, 0, np.array([[2], [0]], dtype=np.int32)),
        "top_k": (OutputPolicy.TOP_K, 2, np.array([[2, 1], [0, 2]], dtype=np.int32)),
        "probabilities": (OutputPolicy.PROBABILITIES, 3, np.array([[125, 375, 500], [1000, 0, 0]], dtype=np.int32)),
    }
    sealed = {name: b64(inference.seal_response(inference.encode_outputs(p, k, v), secret, enc, request_hash, nonce))
              for name, (p, k, v) in cases.items()}  # fmt: skip
    got = js(
        page,
        """const [secret, enc, nonce, hash, sealed, policies] = args;
        const k = await I.responseKey(b64decode(secret), b64decode(enc), b64decode(nonce), b64decode(hash));
        const out = {};
        for (const [name, response] of Object.entries(sealed)) {
          const raw = await I.openResponse(b64decode(response), b64decode(secret), b64decode(enc), b64decode(hash));
          out[name] = I.interpretOutputs(I.decodeOutputs(raw), policies);
        }
        const other = new Uint8Array(32);
        const wrong = await outcome(() => I.openResponse(b64decode(sealed.label), other, b64decode(enc), b64decode(hash)));
        const malformed = await outcome(async () => I.decodeOutputs(new Uint8Array(20)));
        return { key: b64encode(k.key), iv: b64encode(k.iv), out, wrong: wrong.name, malformed: malformed.name };""",
        b64(secret), b64(enc), b64(nonce), b64(request_hash), sealed,
        {"label": int(OutputPolicy.LABEL), "topK": int(OutputPolicy.TOP_K), "probabilities": int(OutputPolicy.PROBABILITIES)},
    )  # fmt: skip
    assert unb64(got["key"]) == key and unb64(got["iv"]) == iv
    assert got["out"]["label"] == {"kind": "label", "param": 0, "rows": [2, 0]}
    assert got["out"]["top_k"] == {"kind": "top_k", "param": 2, "rows": [[2, 1], [0, 2]]}
    decoded = inference.decode_outputs(inference.encode_outputs(*cases["probabilities"]))
    assert got["out"]["probabilities"]["rows"] == decoded.values.tolist()
    assert got["wrong"] == "CiphertextTampered" and got["malformed"] == "EnvelopeMalformed"


def test_a_row_encrypted_in_the_page_is_served_by_the_enclave_and_its_answer_verifies(page: Page) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, SCHEMA).eval()
    weights = model_weights(model, SPEC, SCHEMA)
    weights_hash = hashlib.sha256(weights).digest()
    model_key = dataformat.new_data_key()
    ciphertext = dataformat.encrypt_bytes(weights, model_key, kind=dataformat.Kind.MODEL, context=weights_hash)
    box = X25519PrivateKey.generate()
    server = InferenceServer(ENCLAVE_KEY, box)
    enclave = Account.from_key(ENCLAVE_KEY).address
    rows = np.array([[0.5, -1.25, 3.0, 0.1, 2.0]], dtype=np.float32)
    with torch.inference_mode():
        probabilities = torch.softmax(model(torch.from_numpy(rows)), dim=1)[0].tolist()

    for model_id, policy, param in [(1, OutputPolicy.LABEL, 0), (2, OutputPolicy.TOP_K, 2), (3, OutputPolicy.PROBABILITIES, 4)]:
        price = 10**12 * model_id
        terms = ListingTerms(model_id=model_id, weights_hash=weights_hash, spec_hash=hashlib.sha256(SPEC.to_bytes()).digest(),
                             content_hash=hashlib.sha256(ciphertext).digest(), price_per_query=price, output_policy=policy,
                             output_param=param, query_cap=100)  # fmt: skip
        released = keywrap.wrap(model_key, keywrap.public_key_bytes(box), info=keywrap.model_release_info(CHAIN_ID, MARKET, model_id, terms.content_hash))
        server.load(chain_id=CHAIN_ID, model_market=MARKET, terms=terms, released_key=released, ciphertext=ciphertext,
                    model_spec=SPEC.to_bytes(), measurement=MEASUREMENT)  # fmt: skip
        # The page builds the request: voucher signed with the client's key, row encrypted to the enclave's key.
        pending = js(
            page,
            """const [key, chainId, market, modelId, enclave, enclaveKey, row, price] = args;
            const wallet = new ethers.Wallet(key);
            const p = await I.buildRequest({ signer: wallet, client: wallet.address, chainId, modelMarket: market, modelId,
              enclave, enclaveKey: b64decode(enclaveKey), rows: [row], totals: { amount: 5n * BigInt(price), queries: 5n },
              pricePerQuery: BigInt(price) });
            window.pending = p;
            return { envelope: b64encode(p.envelope), amount: String(p.voucher.amount), queries: String(p.voucher.queries) };""",
            CLIENT.key.hex(), CHAIN_ID, "0x" + MARKET.hex(), model_id, enclave, b64(keywrap.public_key_bytes(box)), rows[0].tolist(), price,
        )  # fmt: skip
        envelope = unb64(pending["envelope"])
        assert int(pending["amount"]) == 6 * price and int(pending["queries"]) == 6
        state_fields = {"deposited": 100 * price, "redeemed": 5 * price, "redeemed_queries": 5, "allowed": True}
        if "enclave" in {f.name for f in dataclasses.fields(ChannelState)}:
            state_fields["enclave"] = bytes.fromhex(enclave[2:])
        (result,) = server.infer(chain_id=CHAIN_ID, model_market=MARKET, model_id=model_id, requests=[(envelope, ChannelState(**state_fields))])
        assert "error" not in result, result
        assert result["voucher"]["amount"] == 6 * price and result["voucher"]["client"] == bytes.fromhex(CLIENT.address[2:])

        # The page verifies the receipt and opens the answer; any mismatch is rejected.
        got = js(
            page,
            """const [response, signature, measurement, weightsHash, policies] = args;
            const r = b64decode(response);
            const ok = await I.openVerifiedResponse(window.pending, r, signature, { measurement, weightsHash });
            const flipped = r.slice(); flipped[flipped.length - 1] ^= 1;
            const tampered = await outcome(() => I.openVerifiedResponse(window.pending, flipped, signature, { measurement, weightsHash }));
            const otherMeasurement = await outcome(() => I.openVerifiedResponse(window.pending, r, signature, { measurement: "0x" + "00".repeat(32), weightsHash }));
            const otherWeights = await outcome(() => I.openVerifiedResponse(window.pending, r, signature, { measurement, weightsHash: "0x" + "ab".repeat(32) }));
            return { signer: ok.signer, answer: I.interpretOutputs(ok.outputs, policies),
                     rejected: [tampered.name, otherMeasurement.name, otherWeights.name] };""",
            b64(result["response"]), "0x" + result["receipt_signature"].hex(), "0x" + MEASUREMENT.hex(), "0x" + weights_hash.hex(),
            {"label": int(OutputPolicy.LABEL), "topK": int(OutputPolicy.TOP_K), "probabilities": int(OutputPolicy.PROBABILITIES)},
        )  # fmt: skip
        assert got["signer"] == enclave
        assert got["rejected"] == ["ResponseRejected"] * 3
        ranked = sorted(range(3), key=lambda c: -probabilities[c])
        if policy is OutputPolicy.LABEL:
            assert got["answer"]["rows"] == [ranked[0]]
        elif policy is OutputPolicy.TOP_K:
            assert got["answer"]["rows"] == [ranked[:2]]
        else:
            assert got["answer"]["rows"][0] == pytest.approx(probabilities, abs=0.5e-4 + 1e-7)
