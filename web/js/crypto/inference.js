// Serving (docs/inference.md): request envelopes, vouchers, response keys and receipts, byte for
// byte as enclave_worker/trusted/inference.py and vouchers.py write them (the Python client is
// marketplace/inference.py). Nothing here talks to the network: serving.js does.
//
//   envelope = header (234 bytes, clear) ‖ HPKE(enclave's on-chain key, info, response_secret ‖ rows)
//   info     = "sterling/v1/inference-request/" ‖ chainId (32) ‖ modelMarket (20) ‖ SHA-256(header)
//   response = nonce (32) ‖ AES-256-GCM(key, iv, outputs)
//   key ‖ iv = HKDF-SHA256(response_secret, salt = enc ‖ nonce, info = "sterling/v1/inference-response/" ‖ SHA-256(envelope), 44)

import { getAddress, Signature, verifyTypedData } from "ethers";

import { concat, fromHex, sha256, toHex, uintBE } from "./bytes.js";
import { CiphertextTampered, EnvelopeMalformed, ResponseRejected } from "./errors.js";
import { wrapKey } from "./hpke.js";

const ascii = (s) => new TextEncoder().encode(s);

export const ENVELOPE_MAGIC = ascii("STRQ");
export const ENVELOPE_VERSION = 1;
export const HEADER_LEN = 234;
export const ENC_LEN = 32;
export const TAG_LEN = 16;
export const SECRET_LEN = 32;
export const NONCE_LEN = 32;
export const REQUEST_ID_LEN = 16;
export const SIGNATURE_LEN = 65;
export const MAX_ENVELOPE_BYTES = 4 << 20;
export const RESPONSE_MAGIC = ascii("STRP");
export const RESPONSE_VERSION = 1;
const OUTPUTS_HEADER_LEN = 16; // ">4sBBBBII"
const REQUEST_INFO = ascii("sterling/v1/inference-request/");
const RESPONSE_INFO = ascii("sterling/v1/inference-response/");

/** EIP-712 domain name and version of the model market (vouchers.py DOMAIN_NAME / DOMAIN_VERSION). */
export const DOMAIN_NAME = "SterlingModelMarket";
export const DOMAIN_VERSION = "1";

/** The client's voucher, as ethers' signTypedData takes it (vouchers.py VOUCHER_TYPES). */
export const VOUCHER_TYPES = {
  Voucher: [
    { name: "modelId", type: "uint256" },
    { name: "client", type: "address" },
    { name: "enclave", type: "address" },
    { name: "amount", type: "uint256" },
    { name: "queries", type: "uint64" },
  ],
};

/** The enclave's response receipt (vouchers.py RESPONSE_TYPES). */
export const RESPONSE_TYPES = {
  ResponseReceipt: [
    { name: "modelId", type: "uint256" },
    { name: "client", type: "address" },
    { name: "requestHash", type: "bytes32" },
    { name: "responseHash", type: "bytes32" },
    { name: "modelHash", type: "bytes32" },
    { name: "measurement", type: "bytes32" },
    { name: "amount", type: "uint256" },
    { name: "queries", type: "uint64" },
  ],
};

/**
 * The model market's EIP-712 domain (vouchers.py `domain`).
 * @param {bigint | number} chainId
 * @param {string} modelMarket  the ModelMarket contract's address
 */
export function modelMarketDomain(chainId, modelMarket) {
  return { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: BigInt(chainId), verifyingContract: getAddress(modelMarket) };
}

/**
 * @typedef {{modelId: bigint, client: string, enclave: string, amount: bigint, queries: bigint}} Voucher
 *   cumulative totals of the channel (modelId, client) after a request, served by `enclave`
 */

/** A voucher with checksummed addresses and bigint numbers (what signTypedData and the header take). */
export function normalizeVoucher(v) {
  return {
    modelId: BigInt(v.modelId),
    client: getAddress(v.client),
    enclave: getAddress(v.enclave),
    amount: BigInt(v.amount),
    queries: BigInt(v.queries),
  };
}

/**
 * The clear header of an envelope (inference.py `encode_header`).
 * @param {{modelId: bigint|number, requestId: Uint8Array, voucher: Voucher, signature: Uint8Array, rows: number}} h
 * @returns {Uint8Array} 234 bytes
 */
export function encodeHeader({ modelId, requestId, voucher, signature, rows }) {
  const v = normalizeVoucher(voucher);
  if (requestId.length !== REQUEST_ID_LEN || signature.length !== SIGNATURE_LEN) {
    throw new RangeError("request id 16 bytes, signature 65 bytes");
  }
  if (!Number.isInteger(rows) || rows < 1 || rows >= 2 ** 32) throw new RangeError("rows must be in 1..2^32-1");
  const header = concat(
    ENVELOPE_MAGIC,
    Uint8Array.of(ENVELOPE_VERSION),
    uintBE(modelId, 32),
    requestId,
    uintBE(v.modelId, 32),
    fromHex(v.client, 20),
    fromHex(v.enclave, 20),
    uintBE(v.amount, 32),
    uintBE(v.queries, 8),
    signature,
    uintBE(rows, 4),
  );
  if (header.length !== HEADER_LEN) throw new Error(`header is ${header.length} bytes`);
  return header;
}

/**
 * The HPKE `info` of a request (inference.py `request_info`).
 * @param {bigint|number} chainId
 * @param {Uint8Array|string} modelMarket  20 bytes or an address
 * @param {Uint8Array} header
 */
export async function requestInfo(chainId, modelMarket, header) {
  const market = typeof modelMarket === "string" ? fromHex(modelMarket, 20) : modelMarket;
  if (market.length !== 20) throw new RangeError("the model market address must be 20 bytes");
  return concat(REQUEST_INFO, uintBE(chainId, 32), market, await sha256(header));
}

/**
 * Rows of numbers as float32 little-endian bytes (numpy's `astype("<f4").tobytes()`); every row
 * must have the same length.
 * @param {number[][]} rows
 * @returns {Uint8Array}
 */
export function encodeRows(rows) {
  if (!rows.length) throw new RangeError("a request needs at least one row");
  const width = rows[0].length;
  if (!width || rows.some((r) => r.length !== width)) throw new RangeError("every row needs the same, non-zero number of values");
  const out = new Uint8Array(rows.length * width * 4);
  const view = new DataView(out.buffer);
  rows.forEach((row, i) =>
    row.forEach((value, j) => {
      if (!Number.isFinite(value)) throw new RangeError(`row ${i + 1}, value ${j + 1} is not a finite number`);
      view.setFloat32(4 * (i * width + j), value, true);
    }),
  );
  return out;
}

/**
 * The whole envelope: header ‖ HPKE(secret ‖ rows) to the enclave's raw X25519 key (inference.py `seal_request`).
 * @param {Uint8Array} header
 * @param {Uint8Array} responseSecret  32 random bytes
 * @param {Uint8Array} rowBytes  from {@link encodeRows}
 * @param {Uint8Array} enclaveKey  the enclave's ON-CHAIN encryption key (32 bytes)
 * @param {{chainId: bigint|number, modelMarket: Uint8Array|string}} binding
 */
export async function sealRequest(header, responseSecret, rowBytes, enclaveKey, { chainId, modelMarket }) {
  if (responseSecret.length !== SECRET_LEN) throw new RangeError("the response secret is 32 bytes");
  const sealed = await wrapKey(concat(responseSecret, rowBytes), enclaveKey, { info: await requestInfo(chainId, modelMarket, header) });
  return concat(header, sealed);
}

/**
 * The response's AES-256-GCM key (raw 32 bytes) and 12-byte IV (inference.py `response_key`), by WebCrypto HKDF.
 * @param {Uint8Array} responseSecret
 * @param {Uint8Array} enc  the request's HPKE encapsulated key (32 bytes after the header)
 * @param {Uint8Array} responseNonce  the response's first 32 bytes
 * @param {Uint8Array} requestHash  SHA-256 of the whole envelope
 * @returns {Promise<{key: Uint8Array, iv: Uint8Array}>}
 */
export async function responseKey(responseSecret, enc, responseNonce, requestHash) {
  const ikm = await crypto.subtle.importKey("raw", responseSecret, "HKDF", false, ["deriveBits"]);
  const okm = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: concat(enc, responseNonce), info: concat(RESPONSE_INFO, requestHash) },
      ikm,
      44 * 8,
    ),
  );
  return { key: okm.slice(0, 32), iv: okm.slice(32) };
}

/**
 * Decrypt a response (inference.py `open_response`).
 * @returns {Promise<Uint8Array>} the outputs' bytes
 * @throws {CiphertextTampered} altered, or not the answer to this request
 */
export async function openResponse(response, responseSecret, enc, requestHash) {
  if (response.length < NONCE_LEN + TAG_LEN) throw new CiphertextTampered("a response is at least 48 bytes");
  const { key, iv } = await responseKey(responseSecret, enc, response.subarray(0, NONCE_LEN), requestHash);
  const aes = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, aes, response.subarray(NONCE_LEN)));
  } catch {
    throw new CiphertextTampered("the response does not open with this request's secret");
  }
}

/**
 * Parse a response's outputs (inference.py `encode_outputs` / `decode_outputs`): the policy's
 * number and parameter and the int32 values, row by row. What the numbers mean depends on the
 * policy; {@link interpretOutputs} applies it.
 * @param {Uint8Array} raw
 * @returns {{policy: number, param: number, rows: number, cols: number, values: number[][]}}
 * @throws {EnvelopeMalformed}
 */
export function decodeOutputs(raw) {
  if (raw.length < OUTPUTS_HEADER_LEN) throw new EnvelopeMalformed("response outputs are too short");
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (!RESPONSE_MAGIC.every((b, i) => raw[i] === b) || raw[4] !== RESPONSE_VERSION || raw[7] !== 0) {
    throw new EnvelopeMalformed("not Sterling response outputs of version 1");
  }
  const policy = raw[5];
  const param = raw[6];
  const rows = view.getUint32(8, false);
  const cols = view.getUint32(12, false);
  if (raw.length !== OUTPUTS_HEADER_LEN + 4 * rows * cols) throw new EnvelopeMalformed("response outputs have the wrong length");
  const values = [];
  for (let r = 0; r < rows; r++) {
    const row = [];
    for (let c = 0; c < cols; c++) row.push(view.getInt32(OUTPUTS_HEADER_LEN + 4 * (r * cols + c), true));
    values.push(row);
  }
  return { policy, param, rows, cols, values };
}

/**
 * What decoded outputs mean under the model market's policy numbers (read from the contract:
 * OUTPUT_LABEL, OUTPUT_TOP_K, OUTPUT_PROBABILITIES).
 * @param {{policy: number, param: number, values: number[][]}} outputs
 * @param {{label: number, topK: number, probabilities: number}} policies
 * @returns {{kind: "label"|"top_k"|"probabilities", param: number, rows: (number|number[])[]}}
 *   label: one class per row; top_k: k classes per row, most likely first; probabilities: one per class
 */
export function interpretOutputs(outputs, policies) {
  const p = Number(outputs.policy);
  if (p === Number(policies.label)) return { kind: "label", param: outputs.param, rows: outputs.values.map((r) => r[0]) };
  if (p === Number(policies.topK)) return { kind: "top_k", param: outputs.param, rows: outputs.values };
  if (p === Number(policies.probabilities)) {
    const scale = 10 ** outputs.param;
    return { kind: "probabilities", param: outputs.param, rows: outputs.values.map((r) => r.map((v) => v / scale)) };
  }
  throw new EnvelopeMalformed(`unknown output policy ${p}`);
}

/** 32 random bytes, or `n`. */
export function randomBytes(n = 32) {
  return crypto.getRandomValues(new Uint8Array(n));
}

/**
 * The client's EIP-712 signature of a voucher, as 65 bytes r ‖ s ‖ v (v = 27/28), made by an
 * ethers signer (a wallet signs it with `eth_signTypedData_v4`).
 * @param {{signTypedData: Function}} signer
 * @param {ReturnType<typeof modelMarketDomain>} domain
 * @param {Voucher} voucher
 */
export async function signVoucher(signer, domain, voucher) {
  const signature = Signature.from(await signer.signTypedData(domain, VOUCHER_TYPES, normalizeVoucher(voucher)));
  return fromHex(signature.serialized, SIGNATURE_LEN);
}

/**
 * The address that signed a response receipt under the model market's domain.
 * @param {ReturnType<typeof modelMarketDomain>} domain
 * @param {{modelId, client, requestHash: Uint8Array, responseHash: Uint8Array, modelHash: Uint8Array, measurement: Uint8Array, amount, queries}} receipt
 * @param {Uint8Array|string} signature
 */
export function receiptSigner(domain, receipt, signature) {
  const message = {
    modelId: BigInt(receipt.modelId),
    client: getAddress(receipt.client),
    requestHash: hex32(receipt.requestHash),
    responseHash: hex32(receipt.responseHash),
    modelHash: hex32(receipt.modelHash),
    measurement: hex32(receipt.measurement),
    amount: BigInt(receipt.amount),
    queries: BigInt(receipt.queries),
  };
  const sig = typeof signature === "string" ? signature : "0x" + toHex(signature);
  return verifyTypedData(domain, RESPONSE_TYPES, message, sig);
}

function hex32(value) {
  const bytes = typeof value === "string" ? fromHex(value, 32) : value;
  if (bytes.length !== 32) throw new RangeError("a bytes32 must be 32 bytes");
  return "0x" + toHex(bytes);
}

/**
 * @typedef {object} PendingRequest  a built request and the secret state that opens its answer (never leaves the page)
 * @property {Uint8Array} envelope
 * @property {Uint8Array} requestId
 * @property {Voucher} voucher
 * @property {Uint8Array} signature  the voucher's
 * @property {Uint8Array} responseSecret
 * @property {Uint8Array} requestHash  SHA-256 of the envelope
 * @property {Uint8Array} enc
 * @property {number} rows
 * @property {ReturnType<typeof modelMarketDomain>} domain
 */

/**
 * Encrypt `rows` to the inference enclave and pay for them (marketplace/inference.py `build_request`).
 * @param {object} a
 * @param {{signTypedData: Function}} a.signer  the client's signer (its address is the voucher's client)
 * @param {string} a.client  the signer's address
 * @param {bigint|number} a.chainId
 * @param {string} a.modelMarket
 * @param {bigint|number} a.modelId
 * @param {string} a.enclave  the enclave's signer address
 * @param {Uint8Array} a.enclaveKey  its ON-CHAIN X25519 key
 * @param {number[][]} a.rows
 * @param {{amount: bigint, queries: bigint}} a.totals  the channel's totals before this request
 * @param {bigint} a.pricePerQuery
 * @param {Uint8Array} [a.requestId]  fixed only in tests
 * @param {Uint8Array} [a.responseSecret]  fixed only in tests
 * @returns {Promise<PendingRequest>}
 */
export async function buildRequest({ signer, client, chainId, modelMarket, modelId, enclave, enclaveKey, rows, totals, pricePerQuery, requestId, responseSecret }) {
  const rowBytes = encodeRows(rows);
  const n = rows.length;
  const domain = modelMarketDomain(chainId, modelMarket);
  const voucher = normalizeVoucher({
    modelId,
    client,
    enclave,
    amount: BigInt(totals.amount) + BigInt(n) * BigInt(pricePerQuery),
    queries: BigInt(totals.queries) + BigInt(n),
  });
  const signature = await signVoucher(signer, domain, voucher);
  const id = requestId || randomBytes(REQUEST_ID_LEN);
  const secret = responseSecret || randomBytes(SECRET_LEN);
  const header = encodeHeader({ modelId, requestId: id, voucher, signature, rows: n });
  const envelope = await sealRequest(header, secret, rowBytes, enclaveKey, { chainId, modelMarket });
  if (envelope.length > MAX_ENVELOPE_BYTES) throw new RangeError(`the request is ${envelope.length} bytes; an envelope holds at most ${MAX_ENVELOPE_BYTES}`);
  return {
    envelope,
    requestId: id,
    voucher,
    signature,
    responseSecret: secret,
    requestHash: await sha256(envelope),
    enc: envelope.slice(HEADER_LEN, HEADER_LEN + ENC_LEN),
    rows: n,
    domain,
  };
}

/**
 * Verify the enclave's receipt for `response`, then decrypt and decode it (marketplace/inference.py `open_response`).
 * @param {PendingRequest} pending
 * @param {Uint8Array} response
 * @param {Uint8Array|string} receiptSignature
 * @param {{measurement: Uint8Array|string, weightsHash: Uint8Array|string}} expected  the registry's
 *   measurement of the enclave the request was encrypted to, and the listing's weights hash
 * @returns {Promise<{outputs: ReturnType<typeof decodeOutputs>, signer: string, responseHash: Uint8Array}>}
 * @throws {ResponseRejected}
 */
export async function openVerifiedResponse(pending, response, receiptSignature, { measurement, weightsHash }) {
  const responseHash = await sha256(response);
  let signer;
  try {
    signer = receiptSigner(
      pending.domain,
      {
        modelId: pending.voucher.modelId,
        client: pending.voucher.client,
        requestHash: pending.requestHash,
        responseHash,
        modelHash: weightsHash,
        measurement,
        amount: pending.voucher.amount,
        queries: pending.voucher.queries,
      },
      receiptSignature,
    );
  } catch (e) {
    throw new ResponseRejected(`the response receipt is malformed: ${e.message}`);
  }
  if (getAddress(signer) !== getAddress(pending.voucher.enclave)) {
    throw new ResponseRejected(
      `the response receipt is not signed by enclave ${pending.voucher.enclave} over this request, response, weights hash, measurement and voucher`,
    );
  }
  let outputs;
  try {
    outputs = decodeOutputs(await openResponse(response, pending.responseSecret, pending.enc, pending.requestHash));
  } catch (e) {
    throw new ResponseRejected(`the response does not open: ${e.message}`);
  }
  if (outputs.rows !== pending.rows) throw new ResponseRejected(`the response holds ${outputs.rows} rows, the request asked ${pending.rows}`);
  return { outputs, signer: getAddress(signer), responseHash };
}
