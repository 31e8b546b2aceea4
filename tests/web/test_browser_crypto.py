"""The browser's cryptography (web/js/crypto/) against the Python implementation, in real Chromium.

Each test moves bytes between the two sides: what one writes the other reads, byte for byte,
and both sides name the same damage with the same error class.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from playwright.sync_api import Browser, Page
from safetensors.numpy import save as st_save

from enclave_worker.trusted import dataformat, keywrap, sealing
from enclave_worker.trusted.dataformat import HEADER_LEN, TAG_LEN, Kind
from enclave_worker.trusted.dataset import DatasetPackage, canonical_json
from enclave_worker.trusted.enclave import model_context
from enclave_worker.trusted.errors import CiphertextError, KeyUnwrapFailed
from marketplace.datasets import digits
from tests.csv_reference import BAD_CSV, TRICKY_CSV, reference_csv_package

pytestmark = pytest.mark.browser

PROVIDER = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
CHUNK = 1024


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.fixture(scope="module")
def crypto_page(browser: Browser, static_server: str) -> Iterator[Page]:
    """One harness page for the module (the tests keep no state in it); it must raise no uncaught error."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{static_server}/test/crypto.html")
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=10_000)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the harness page: {errors}"


def js(page: Page, body: str, *args: Any) -> Any:
    """Run an async function body in the page with ``S`` = the crypto API and ``args``."""
    return page.evaluate(
        f"async (args) => {{ const S = window.sterling.crypto, {{ b64encode, b64decode, outcome }} = window.sterling; {body} }}",
        list(args),
    )


def _python_error(ciphertext: bytes, key: bytes, *, kind: Kind, context: bytes | None) -> str:
    """The name of the error Python's reader raises, or "ok"."""
    try:
        dataformat.decrypt_bytes(ciphertext, key, kind=kind, context=context)
    except CiphertextError as e:
        return type(e).__name__
    return "ok"


def test_static_server_serves_web_and_vendor_like_the_gateway(page: Page, static_server: str) -> None:
    """The harness loads through the conftest's own ``page`` fixture, and /vendor/ serves JS as JS."""
    page.goto(f"{static_server}/test/crypto.html")
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=10_000)
    versions = page.evaluate(
        "async () => ({ ethers: (await import('ethers')).version, hpke: typeof (await import('@hpke/core')).CipherSuite })"
    )
    assert versions == {"ethers": "6.17.0", "hpke": "function"}
    for path in ("/vendor/@hpke/core/esm/mod.js", "/vendor/@hpke/common/esm/mod.js", "/js/crypto/index.js"):
        response = page.request.get(static_server + path)
        assert response.ok and response.headers["content-type"].startswith("text/javascript"), path
    assert page.request.get(f"{static_server}/vendor/does-not-exist.js").status == 404


# --- a. datasets: CSV → package → listing, read back by Python ---------------------------------


def test_csv_package_is_byte_identical_to_python_and_listing_decrypts_in_python(crypto_page: Page) -> None:
    km = X25519PrivateKey.generate()
    expected = reference_csv_package(TRICKY_CSV)
    out = js(
        crypto_page,
        """
        const [text, kmKey, provider] = args;
        const data = S.parseCsv(text, { labelColumn: "outcome" });
        const listing = await S.encryptDatasetForListing(data, { kmPublicKey: b64decode(kmKey), providerAddress: provider });
        return {
          pkg: b64encode(S.buildPackage(data)), classes: data.schema.class_names,
          ciphertext: b64encode(new Uint8Array(await listing.ciphertext.arrayBuffer())),
          contentHash: listing.contentHash, schemaHash: listing.schemaHash, rows: listing.rows,
          schemaJson: b64encode(listing.schemaJson), wrappedKey: b64encode(listing.wrappedKey),
        };
        """,
        TRICKY_CSV,
        b64(keywrap.public_key_bytes(km)),
        PROVIDER,
    )
    assert out["classes"] == ["z", "Ａ", "😀"]  # code-point order, not UTF-16 order
    assert unb64(out["pkg"]) == expected.to_bytes()

    ciphertext = unb64(out["ciphertext"])
    assert out["contentHash"] == hashlib.sha256(ciphertext).hexdigest()
    header = dataformat.Header.decode(ciphertext[:HEADER_LEN])
    assert (header.kind, header.chunk_size) == (Kind.DATASET, dataformat.DEFAULT_CHUNK_SIZE)
    assert header.context != bytes(32)
    wrapped = unb64(out["wrappedKey"])
    assert len(wrapped) == 80
    key = keywrap.unwrap(wrapped, km, info=keywrap.datakey_info(bytes.fromhex(out["contentHash"])))
    package = DatasetPackage.from_bytes(dataformat.decrypt_bytes(ciphertext, key, kind=Kind.DATASET))

    assert np.array_equal(package.features.view(np.uint32), expected.features.view(np.uint32))  # bit for bit, -0 too
    assert np.array_equal(package.labels, expected.labels)
    assert package.schema == expected.schema
    assert out["schemaHash"] == expected.schema.hash().hex()
    assert unb64(out["schemaJson"]) == canonical_json(expected.schema.to_json())
    assert out["rows"] == 4


def test_every_listing_has_a_fresh_key_and_uid(crypto_page: Page) -> None:
    km = X25519PrivateKey.generate()
    out = js(
        crypto_page,
        """
        const data = S.parseCsv("a,y\\n1,p\\n2,q\\n");
        const once = async () => {
          const l = await S.encryptDatasetForListing(data, { kmPublicKey: b64decode(args[0]), providerAddress: args[1] });
          return { ct: b64encode(new Uint8Array(await l.ciphertext.arrayBuffer())), key: b64encode(l.wrappedKey) };
        };
        return [await once(), await once()];
        """,
        b64(keywrap.public_key_bytes(km)),
        PROVIDER,
    )
    cts = [unb64(o["ct"]) for o in out]
    keys = [keywrap.unwrap(unb64(o["key"]), km, info=keywrap.datakey_info(hashlib.sha256(ct).digest())) for o, ct in zip(out, cts)]
    assert keys[0] != keys[1]
    assert cts[0][20:HEADER_LEN] != cts[1][20:HEADER_LEN]  # the uid context
    assert dataformat.decrypt_bytes(cts[0], keys[0], kind=Kind.DATASET) == dataformat.decrypt_bytes(cts[1], keys[1], kind=Kind.DATASET)


def test_package_from_arrays_and_package_file_listing_match_python(crypto_page: Page) -> None:
    """A multi-dimensional package (digits, [1, 8, 8]) built in JS, and a Python-made package file listed as is."""
    pkg = digits()
    raw = pkg.to_bytes()
    km = X25519PrivateKey.generate()
    out = js(
        crypto_page,
        """
        const [features, labels, schema, file, kmKey, provider] = args;
        const built = S.buildPackage({
          features: new Float32Array(b64decode(features).buffer), labels: new BigInt64Array(b64decode(labels).buffer),
          schema: JSON.parse(schema),
        });
        const blob = new Blob([b64decode(file)]);
        const inspected = await S.inspectPackage(blob);
        const listing = await S.encryptDatasetForListing(blob, { kmPublicKey: b64decode(kmKey), providerAddress: provider });
        return {
          built: b64encode(built), inspected, schemaHash: listing.schemaHash, rows: listing.rows,
          ciphertext: b64encode(new Uint8Array(await listing.ciphertext.arrayBuffer())), wrappedKey: b64encode(listing.wrappedKey),
        };
        """,
        b64(pkg.features.tobytes()),
        b64(pkg.labels.tobytes()),
        canonical_json(pkg.schema.to_json()).decode(),
        b64(raw),
        b64(keywrap.public_key_bytes(km)),
        PROVIDER,
    )
    assert unb64(out["built"]) == raw
    assert out["inspected"] == {"schema": pkg.schema.to_json(), "rows": pkg.rows}
    assert out["schemaHash"] == pkg.schema.hash().hex()
    ciphertext = unb64(out["ciphertext"])
    key = keywrap.unwrap(unb64(out["wrappedKey"]), km, info=keywrap.datakey_info(hashlib.sha256(ciphertext).digest()))
    assert dataformat.decrypt_bytes(ciphertext, key, kind=Kind.DATASET) == raw


def _patched(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value) :]


def test_damaged_package_files_are_refused(crypto_page: Page) -> None:
    expected = reference_csv_package("a,b,y\n1,2,p\n3,4,q\n")
    raw = expected.to_bytes()
    data = 8 + struct.unpack("<Q", raw[:8])[0]  # labels (I64) first, then features (F32)
    damaged = {
        "label out of range": (_patched(raw, data, struct.pack("<q", 2)), "labels outside [0, 2)"),
        "NaN feature": (_patched(raw, data + 16, struct.pack("<f", float("nan"))), "NaN or infinity"),
        "cut short": (raw[:-1], "trailing or missing data"),
        "not safetensors": (b"PK\x03\x04" + bytes(60), "header length"),
    }
    out = js(
        crypto_page,
        "return Promise.all(args[0].map((f) => outcome(() => S.inspectPackage(new Blob([b64decode(f)])))));",
        [b64(d) for d, _ in damaged.values()],
    )
    for (case, (_, message)), result in zip(damaged.items(), out):
        assert (result["ok"], result["name"]) == (False, "InvalidDataset"), case
        assert message in result["message"], case


@pytest.mark.parametrize(("text", "options", "message"), BAD_CSV)
def test_bad_csv_files_get_clear_errors(crypto_page: Page, text: str, options: dict[str, str], message: str) -> None:
    result = js(crypto_page, "return outcome(() => S.parseCsv(args[0], args[1]));", text, options)
    assert (result["ok"], result["name"]) == (False, "InvalidCsv")
    assert message in result["message"]


def test_integer_labels_are_ordered_by_value_and_canonical_json_matches_python(crypto_page: Page) -> None:
    text = "x,label\n1,10\n2,2\n3,0\n4,-1\n5,2\n"
    out = js(
        crypto_page,
        "const d = S.parseCsv(args[0]); return { classes: d.schema.class_names, labels: Array.from(d.labels, Number), "
        "json: S.canonicalJson(args[1]) };",
        text,
        {"é": '😀\u007f\n"\\', "b": [1, None, True, -7], "A": {"z": "", "Z": "\x01"}},
    )
    expected = reference_csv_package(text)
    assert out["classes"] == ["-1", "0", "2", "10"] == list(expected.schema.class_names)
    assert out["labels"] == expected.labels.tolist() == [3, 2, 1, 0, 2]
    assert out["json"].encode() == canonical_json({"é": '😀\u007f\n"\\', "b": [1, None, True, -7], "A": {"z": "", "Z": "\x01"}})


# --- b. the STRL stream format in both directions, and its errors ---------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 10])
def test_python_encrypts_js_decrypts_and_back(crypto_page: Page, size: int) -> None:
    plaintext = np.random.default_rng(size).bytes(size)
    key = dataformat.new_data_key()
    context = hashlib.sha256(b"context %d" % size).digest()
    py_ct = dataformat.encrypt_bytes(plaintext, key, kind=Kind.DATASET, context=context, chunk_size=CHUNK)
    out = js(
        crypto_page,
        """
        const [ct, pt, key, context, chunkSize] = args;
        const opts = { kind: S.Kind.DATASET, context: b64decode(context) };
        return {
          decrypted: b64encode(await S.decryptBytes(b64decode(ct), b64decode(key), opts)),
          encrypted: b64encode(await S.encryptBytes(b64decode(pt), b64decode(key), { ...opts, chunkSize })),
        };
        """,
        b64(py_ct),
        b64(plaintext),
        b64(key),
        b64(context),
        CHUNK,
    )
    assert unb64(out["decrypted"]) == plaintext
    js_ct = unb64(out["encrypted"])
    assert len(js_ct) == len(py_ct)  # same chunking, final chunk empty only for an empty plaintext
    assert js_ct[:12] == py_ct[:12] and js_ct[20:HEADER_LEN] == context
    assert dataformat.decrypt_bytes(js_ct, key, kind=Kind.DATASET, context=context) == plaintext


def test_default_chunk_size_multi_megabyte_round_trip(crypto_page: Page) -> None:
    plaintext = np.random.default_rng(1).bytes(2 * dataformat.DEFAULT_CHUNK_SIZE + 12345)
    key = dataformat.new_data_key()
    py_ct = dataformat.encrypt_bytes(plaintext, key, kind=Kind.MODEL, context=bytes(32))
    out = js(
        crypto_page,
        """
        const [ct, key] = args;
        const pt = await S.decryptBytes(b64decode(ct), b64decode(key), { kind: S.Kind.MODEL });
        return { sha: S.toHex(await S.sha256(pt)), back: b64encode(await S.encryptBytes(pt, b64decode(key), { kind: S.Kind.MODEL, context: new Uint8Array(32) })) };
        """,
        b64(py_ct),
        b64(key),
    )
    assert out["sha"] == hashlib.sha256(plaintext).hexdigest()
    assert dataformat.decrypt_bytes(unb64(out["back"]), key, kind=Kind.MODEL) == plaintext


KEY = dataformat.new_data_key()
CONTEXT = hashlib.sha256(b"damage").digest()


def _damage_cases() -> dict[str, tuple[bytes, dict[str, Any], str]]:
    """(ciphertext, decrypt options, expected error) for each kind of damage, from docs/formats.md."""
    ct = dataformat.encrypt_bytes(
        b"".join(bytes([i]) * CHUNK for i in range(3)) + b"tail", KEY, kind=Kind.DATASET, context=CONTEXT, chunk_size=CHUNK
    )
    full = dataformat.encrypt_bytes(bytes(2 * CHUNK), KEY, kind=Kind.DATASET, context=CONTEXT, chunk_size=CHUNK)
    sealed = CHUNK + TAG_LEN
    header, chunks = ct[:HEADER_LEN], [ct[i : i + sealed] for i in range(HEADER_LEN, len(ct), sealed)]
    flipped = bytearray(ct)
    flipped[HEADER_LEN + sealed + 100] ^= 0x10
    bad_magic = b"XTRL" + ct[4:]
    dataset = {"kind": int(Kind.DATASET)}
    return {
        "intact": (ct, dataset, "ok"),
        "bit flip in chunk 1": (bytes(flipped), dataset, "CiphertextTampered"),
        "cut inside a chunk": (header + chunks[0] + chunks[1][:500], dataset, "CiphertextTampered"),
        "cut inside the last tag": (ct[:-5], dataset, "CiphertextTruncated"),
        "cut at a chunk boundary": (header + chunks[0] + chunks[1], dataset, "CiphertextTruncated"),
        "header only": (header, dataset, "CiphertextTruncated"),
        "a chunk appended": (full + bytes(sealed), dataset, "CiphertextTrailingData"),
        "one byte appended": (full + b"x", dataset, "CiphertextTrailingData"),
        "chunks swapped": (header + chunks[1] + chunks[0] + b"".join(chunks[2:]), dataset, "CiphertextReordered"),
        "chunk duplicated": (header + chunks[0] + chunks[0] + b"".join(chunks[1:]), dataset, "CiphertextDuplicated"),
        "bad magic": (bad_magic, dataset, "CiphertextMalformed"),
        "short header": (ct[:30], dataset, "CiphertextMalformed"),
        "wrong kind": (ct, {"kind": int(Kind.MODEL)}, "CiphertextMalformed"),
        "wrong context": (ct, {**dataset, "context": bytes(32)}, "CiphertextMalformed"),
        "wrong key": (
            dataformat.encrypt_bytes(b"x", dataformat.new_data_key(), kind=Kind.DATASET, context=CONTEXT),
            dataset,
            "CiphertextTampered",
        ),
    }


def test_js_and_python_name_the_same_damage_the_same_way(crypto_page: Page) -> None:
    cases = _damage_cases()
    out = js(
        crypto_page,
        """
        const [cases, key] = args;
        return Promise.all(cases.map(([ct, opts]) => outcome(async () => {
          const options = { kind: opts.kind, context: opts.context === undefined ? undefined : b64decode(opts.context) };
          return (await S.decryptBytes(b64decode(ct), b64decode(key), options)).length;
        })));
        """,
        [[b64(ct), {**opts, "context": b64(opts["context"])} if "context" in opts else opts] for ct, opts, _ in cases.values()],
        b64(KEY),
    )
    for (case, (ct, opts, expected)), result in zip(cases.items(), out):
        python = _python_error(ct, KEY, kind=Kind(opts["kind"]), context=opts.get("context"))
        javascript = "ok" if result["ok"] else result["name"]
        assert (javascript, python) == (expected, expected), f"{case}: {result}"


# --- c. HPKE key wrapping -----------------------------------------------------------------------


def test_js_wraps_to_python_key_with_the_datakey_binding(crypto_page: Page) -> None:
    km = X25519PrivateKey.generate()
    data_key = dataformat.new_data_key()
    content_hash = hashlib.sha256(b"some ciphertext").digest()
    out = js(
        crypto_page,
        "const [key, pub, hash] = args; return b64encode(await S.wrapKey(b64decode(key), b64decode(pub), { info: S.datakeyInfo(b64decode(hash)) }));",
        b64(data_key),
        b64(keywrap.public_key_bytes(km)),
        b64(content_hash),
    )
    wrapped = unb64(out)
    assert len(wrapped) == 80
    assert keywrap.unwrap(wrapped, km, info=keywrap.datakey_info(content_hash)) == data_key
    with pytest.raises(KeyUnwrapFailed):
        keywrap.unwrap(wrapped, km, info=keywrap.datakey_info(hashlib.sha256(b"another ciphertext").digest()))
    with pytest.raises(KeyUnwrapFailed):
        keywrap.unwrap(wrapped, X25519PrivateKey.generate(), info=keywrap.datakey_info(content_hash))


def test_js_unwraps_python_wrap_and_refuses_another_binding(crypto_page: Page) -> None:
    out = js(
        crypto_page,
        """
        const pair = await S.generateKeyPair();
        return { priv: b64encode(pair.privateKey), pub: b64encode(pair.publicKey), derived: b64encode(await S.publicKeyOf(pair.privateKey)) };
        """,
    )
    private = X25519PrivateKey.from_private_bytes(unb64(out["priv"]))
    assert keywrap.public_key_bytes(private) == unb64(out["pub"]) == unb64(out["derived"])
    data_key = dataformat.new_data_key()
    info = keywrap.datakey_info(bytes(range(32)))
    wrapped = keywrap.wrap(data_key, unb64(out["pub"]), info=info)
    results = js(
        crypto_page,
        """
        const [wrapped, priv, info, otherInfo] = args;
        const open = (i) => outcome(async () => b64encode(await S.unwrapKey(b64decode(wrapped), b64decode(priv), { info: b64decode(i) })));
        return [await open(info), await open(otherInfo)];
        """,
        b64(wrapped),
        out["priv"],
        b64(info),
        b64(keywrap.datakey_info(bytes(32))),
    )
    assert results[0] == {"ok": True, "value": b64(data_key)}
    assert (results[1]["ok"], results[1]["name"]) == (False, "KeyUnwrapFailed")


# --- d. sealed models opened by the consumer in the browser ---------------------------------------


def test_python_sealed_model_opens_in_the_browser_only_with_the_right_key_and_job(crypto_page: Page) -> None:
    chain_id, market, job_id = 31337, bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3"), 2**64 + 5
    weights = st_save(
        {"linear.weight": np.random.default_rng(0).normal(size=(2, 30)).astype(np.float32), "linear.bias": np.zeros(2, np.float32)},
        metadata={"sterling_job_id": str(job_id)},
    )
    keys = js(
        crypto_page,
        "const a = await S.generateKeyPair(), b = await S.generateKeyPair(); return [a, b].map((p) => ({ priv: b64encode(p.privateKey), pub: b64encode(p.publicKey) }));",
    )
    envelope = sealing.seal(
        weights,
        unb64(keys[0]["pub"]),
        info=keywrap.model_info(chain_id, market, job_id),
        kind=Kind.MODEL,
        context=model_context(chain_id, market, job_id),
    )
    out = js(
        crypto_page,
        """
        const [envelope, right, wrong, market, chainId, jobId] = args;
        const open = (priv, job) => outcome(async () => b64encode(await S.openSealedModel(b64decode(envelope), b64decode(priv),
          { chainId: BigInt(chainId), market: b64decode(market), jobId: BigInt(job) })));
        return {
          context: b64encode(await S.modelContext(BigInt(chainId), b64decode(market), BigInt(jobId))),
          right: await open(right, jobId), wrongKey: await open(wrong, jobId), wrongJob: await open(right, String(BigInt(jobId) + 1n)),
          notEnvelope: await outcome(() => S.openSealed(new Uint8Array(10), b64decode(right), {})),
        };
        """,
        b64(envelope),
        keys[0]["priv"],
        keys[1]["priv"],
        b64(market),
        str(chain_id),
        str(job_id),
    )
    assert unb64(out["context"]) == model_context(chain_id, market, job_id)
    assert out["right"]["ok"] and unb64(out["right"]["value"]) == weights
    for case in ("wrongKey", "wrongJob"):
        assert (out[case]["ok"], out[case]["name"]) == (False, "KeyUnwrapFailed"), case
    assert (out["notEnvelope"]["ok"], out["notEnvelope"]["name"]) == (False, "CiphertextMalformed")


# --- e. progress while encrypting a multi-chunk file -----------------------------------------------


def test_progress_is_reported_per_chunk_up_to_the_total(crypto_page: Page) -> None:
    km = X25519PrivateKey.generate()
    out = js(
        crypto_page,
        """
        const [kmKey, provider] = args;
        const file = new File([crypto.getRandomValues(new Uint8Array(10000))], "data.bin");
        const blobCalls = [];
        const { ciphertext } = await S.encryptBlob(file, S.newDataKey(), {
          kind: S.Kind.DATASET, context: new Uint8Array(32), chunkSize: 1024, onProgress: (done, total) => blobCalls.push([done, total]),
        });
        const data = S.parseCsv("a,b,y\\n" + Array.from({ length: 300 }, (_, i) => `${i},${i / 7},${i % 3}`).join("\\n"));
        const listingCalls = [];
        const listing = await S.encryptDatasetForListing(data, {
          kmPublicKey: b64decode(kmKey), providerAddress: provider, chunkSize: 1024, onProgress: (d, t) => listingCalls.push([d, t]),
        });
        return { blobCalls, size: ciphertext.size, listingCalls, packageSize: S.buildPackage(data).length,
                 listing: b64encode(new Uint8Array(await listing.ciphertext.arrayBuffer())), key: b64encode(listing.wrappedKey) };
        """,
        b64(keywrap.public_key_bytes(km)),
        PROVIDER,
    )
    assert out["blobCalls"] == [[min(1024 * (i + 1), 10000), 10000] for i in range(10)]
    assert out["size"] == HEADER_LEN + 10000 + 10 * TAG_LEN

    calls, total = out["listingCalls"], out["packageSize"]
    done = [d for d, _ in calls]
    assert len(calls) == -(-total // 1024) > 3
    assert all(t == total for _, t in calls) and done == sorted(set(done)) and done[-1] == total
    ciphertext = unb64(out["listing"])
    key = keywrap.unwrap(unb64(out["key"]), km, info=keywrap.datakey_info(hashlib.sha256(ciphertext).digest()))
    assert len(dataformat.decrypt_bytes(ciphertext, key, kind=Kind.DATASET)) == total


@pytest.mark.slow
def test_a_large_file_is_encrypted_chunk_by_chunk_with_a_streaming_content_hash(crypto_page: Page) -> None:
    """100 MiB in the browser: the incremental content hash equals a one-shot SHA-256, and it decrypts back."""
    out = js(
        crypto_page,
        """
        const parts = [];
        for (let i = 0; i < 100 * 16; i++) parts.push(crypto.getRandomValues(new Uint8Array(65536)));
        const file = new File(parts, "big.bin");
        const key = S.newDataKey(), opts = { kind: S.Kind.DATASET, context: new Uint8Array(32) };
        let calls = 0;
        const started = performance.now();
        const { ciphertext, sha256 } = await S.encryptBlob(file, key, { ...opts, onProgress: () => calls++ });
        const seconds = (performance.now() - started) / 1000;
        const oneShot = await S.sha256(new Uint8Array(await ciphertext.arrayBuffer()));
        const back = await S.decryptBlob(ciphertext, key, opts);
        const same = S.toHex(await S.sha256(new Uint8Array(await back.arrayBuffer()))) === S.toHex(await S.sha256(new Uint8Array(await file.arrayBuffer())));
        return { calls, seconds, streaming: S.toHex(sha256), oneShot: S.toHex(oneShot), same, size: ciphertext.size };
        """,
    )
    assert out["calls"] == 100
    assert out["streaming"] == out["oneShot"]
    assert out["same"]
    assert out["size"] == HEADER_LEN + 100 * 2**20 + 100 * TAG_LEN
