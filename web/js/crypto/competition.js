// Competitions in the browser, byte for byte as marketplace/competing.py does them: an organizer's
// test set sealed to the key manager (seal_test_set), a participant's model sealed to it
// (seal_submission), and a bought model opened with the key the key manager re-wrapped to its
// buyer (open_bought_model). The `info` bindings are enclave_worker/trusted/keywrap.py's
// test_set_info, submission_info and purchase_info.

import { sha256 as sha256Hasher } from "@hpke/common";

import { concat, fromHex, sha256, toHex, uintBE } from "./bytes.js";
import { CiphertextTampered, SterlingError } from "./errors.js";
import { unwrapKey, wrapKey } from "./hpke.js";
import { buildPackage, checkSchema, inspectPackage, schemaBytes, schemaHash } from "./package.js";
import { decryptBlob, DEFAULT_CHUNK_SIZE, encryptBlob, Kind, newDataKey } from "./stream.js";

const ascii = (s) => new TextEncoder().encode(s);

/** Metadata keys a submitted model's safetensors carry (enclave_worker/trusted/inference.py). */
export const WEIGHTS_SPEC_KEY = "sterling_model_spec";
export const WEIGHTS_SCHEMA_KEY = "sterling_schema";
/** Largest safetensors header read from a model file (as for dataset packages). */
export const MAX_WEIGHTS_HEADER_BYTES = 1 << 20;

/** A file is not a Sterling model: no safetensors header, or no spec and input schema in its metadata. */
export class InvalidWeights extends SterlingError {}

/**
 * Binding of an organizer's test-set key, wrapped to the key manager, to its competition market and ciphertext.
 * @param {bigint | number} chainId
 * @param {Uint8Array} competitions  the competition market's 20-byte address
 * @param {Uint8Array} contentHash   SHA-256 of the test set ciphertext
 * @returns {Uint8Array}
 */
export function testSetInfo(chainId, competitions, contentHash) {
  checkLength("competition market address", competitions, 20);
  checkLength("content hash", contentHash, 32);
  return concat(ascii("sterling/v1/test-set/"), uintBE(chainId, 32), competitions, contentHash);
}

/**
 * Binding of a participant's model key, wrapped to the key manager, to its competition, its
 * participant and its ciphertext (a copied wrapped key does not open under another participant).
 * @param {bigint | number} chainId
 * @param {Uint8Array} competitions  20 bytes
 * @param {bigint | number} competitionId
 * @param {Uint8Array} participant   20 bytes
 * @param {Uint8Array} contentHash   32 bytes
 * @returns {Uint8Array}
 */
export function submissionInfo(chainId, competitions, competitionId, participant, contentHash) {
  checkLength("competition market address", competitions, 20);
  checkLength("participant address", participant, 20);
  checkLength("content hash", contentHash, 32);
  return concat(ascii("sterling/v1/submission/"), uintBE(chainId, 32), competitions, uintBE(competitionId, 32), participant, contentHash);
}

/**
 * Binding of a bought submission's model key, re-wrapped by the key manager to its buyer's key.
 * @param {bigint | number} chainId
 * @param {Uint8Array} competitions  20 bytes
 * @param {bigint | number} competitionId
 * @param {number} index             the submission's 0-based index
 * @param {Uint8Array} buyer         20 bytes
 * @param {Uint8Array} contentHash   32 bytes
 * @returns {Uint8Array}
 */
export function purchaseInfo(chainId, competitions, competitionId, index, buyer, contentHash) {
  checkLength("competition market address", competitions, 20);
  checkLength("buyer address", buyer, 20);
  checkLength("content hash", contentHash, 32);
  return concat(ascii("sterling/v1/purchase/"), uintBE(chainId, 32), competitions, uintBE(competitionId, 32), uintBE(index, 4), buyer, contentHash);
}

/**
 * @typedef {object} SealedTestSet
 * @property {Blob} ciphertext        upload to the blob store; its SHA-256 is contentHash (the competition's testSetHash)
 * @property {string} contentHash     hex, no 0x
 * @property {import("./package.js").Schema} schema
 * @property {Uint8Array} schemaJson  canonical schema JSON
 * @property {string} schemaHash      hex, no 0x (the competition's schemaHash)
 * @property {Uint8Array} wrappedKey  for the key manager's test-set deposit, bound by {@link testSetInfo}
 * @property {number} rows
 */

/**
 * Encrypt a test set with a fresh key wrapped to the key manager for this competition market
 * (competing.py `seal_test_set`: STRL dataset kind, a random 32-byte context).
 * @param {Blob | import("./package.js").DatasetArrays} dataset  a package file, or arrays + schema (e.g. from a CSV)
 * @param {{kmPublicKey: Uint8Array, chainId: bigint | number, competitions: string | Uint8Array,
 *          onProgress?: (done: number, total: number) => void, chunkSize?: number}} options
 * @returns {Promise<SealedTestSet>}
 * @throws {import("./errors.js").InvalidDataset} not a valid dataset package
 */
export async function sealTestSet(dataset, { kmPublicKey, chainId, competitions, onProgress, chunkSize = DEFAULT_CHUNK_SIZE }) {
  const market = asAddress(competitions, "competition market address");
  let plaintext;
  let schema;
  let rows;
  if (dataset instanceof Blob) {
    ({ schema, rows } = await inspectPackage(dataset));
    plaintext = dataset;
  } else {
    plaintext = new Blob([buildPackage(dataset)]);
    schema = checkSchema(dataset.schema);
    rows = dataset.labels.length;
  }
  const key = newDataKey();
  const { ciphertext, sha256: contentHash } = await encryptBlob(plaintext, key, {
    kind: Kind.DATASET,
    context: crypto.getRandomValues(new Uint8Array(32)),
    chunkSize,
    onProgress,
  });
  const wrappedKey = await wrapKey(key, kmPublicKey, { info: testSetInfo(chainId, market, contentHash) });
  key.fill(0);
  return {
    ciphertext,
    contentHash: toHex(contentHash),
    schema,
    schemaJson: schemaBytes(schema),
    schemaHash: toHex(await schemaHash(schema)),
    wrappedKey,
    rows,
  };
}

/**
 * @typedef {object} WeightsInfo
 * @property {object} spec            the model spec from the metadata (architecture, hidden_sizes, …)
 * @property {import("./package.js").Schema} schema  the input schema from the metadata
 * @property {string} schemaHash      hex, no 0x: must be the competition's schemaHash
 * @property {number} tensors
 * @property {number} values          scalars held by all tensors (parameters and buffers)
 */

/**
 * Read a model file's safetensors header: it must carry the Sterling spec and input schema in its
 * metadata (as a Sterling job's model does), which the key manager needs to build it.
 * @param {Blob} file
 * @returns {Promise<WeightsInfo>}
 * @throws {InvalidWeights}
 */
export async function readWeights(file) {
  if (file.size < 8) throw new InvalidWeights("the file is too short to be safetensors");
  const headerLen = Number(new DataView(await file.slice(0, 8).arrayBuffer()).getBigUint64(0, true));
  if (headerLen < 2 || headerLen > MAX_WEIGHTS_HEADER_BYTES || 8 + headerLen > file.size) {
    throw new InvalidWeights("the file is not safetensors (invalid header length)");
  }
  let header;
  try {
    header = JSON.parse(await file.slice(8, 8 + headerLen).text());
  } catch {
    throw new InvalidWeights("the file is not safetensors (its header is not JSON)");
  }
  const metadata = header?.__metadata__ || {};
  if (typeof metadata[WEIGHTS_SPEC_KEY] !== "string" || typeof metadata[WEIGHTS_SCHEMA_KEY] !== "string") {
    throw new InvalidWeights(
      `the file carries no Sterling model spec and input schema in its safetensors metadata ("${WEIGHTS_SPEC_KEY}", "${WEIGHTS_SCHEMA_KEY}"): save the weights as a Sterling job saves a model`,
    );
  }
  let spec;
  let schema;
  try {
    spec = JSON.parse(metadata[WEIGHTS_SPEC_KEY]);
    if (typeof spec?.architecture !== "string") throw new Error("no architecture");
  } catch (e) {
    throw new InvalidWeights(`the model spec in the metadata is not valid (${e.message})`);
  }
  try {
    schema = checkSchema(JSON.parse(metadata[WEIGHTS_SCHEMA_KEY]));
  } catch (e) {
    throw new InvalidWeights(`the input schema in the metadata is not valid (${e.message})`);
  }
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const values = names.reduce((n, k) => n + (header[k]?.shape || []).reduce((a, b) => a * b, 1), 0);
  return { spec, schema, schemaHash: toHex(await schemaHash(schema)), tensors: names.length, values };
}

/**
 * @typedef {object} SealedSubmission
 * @property {Blob} ciphertext        upload to the blob store
 * @property {string} contentHash     hex, no 0x: SHA-256 of the ciphertext
 * @property {string} weightsHash     hex, no 0x: SHA-256 of the plaintext safetensors
 * @property {Uint8Array} wrappedKey  for the key manager's admission, bound by {@link submissionInfo}
 */

/**
 * Encrypt safetensors weights with a fresh key wrapped to the key manager for `participant`'s
 * entry to `competitionId` (competing.py `seal_submission`: STRL model kind, context = SHA-256 of the weights).
 * @param {Blob} weights
 * @param {{kmPublicKey: Uint8Array, chainId: bigint | number, competitions: string | Uint8Array,
 *          competitionId: bigint | number, participant: string | Uint8Array,
 *          onProgress?: (done: number, total: number) => void, chunkSize?: number}} options
 * @returns {Promise<SealedSubmission>}
 */
export async function sealSubmission(weights, { kmPublicKey, chainId, competitions, competitionId, participant, onProgress, chunkSize = DEFAULT_CHUNK_SIZE }) {
  const market = asAddress(competitions, "competition market address");
  const who = asAddress(participant, "participant address");
  const weightsHash = await sha256OfBlob(weights);
  const key = newDataKey();
  const { ciphertext, sha256: contentHash } = await encryptBlob(weights, key, { kind: Kind.MODEL, context: weightsHash, chunkSize, onProgress });
  const wrappedKey = await wrapKey(key, kmPublicKey, { info: submissionInfo(chainId, market, competitionId, who, contentHash) });
  key.fill(0);
  return { ciphertext, contentHash: toHex(contentHash), weightsHash: toHex(weightsHash), wrappedKey };
}

/**
 * Open a bought model (competing.py `open_bought_model`): unwrap the key the key manager released
 * to the buyer's X25519 key, decrypt, and check the weights are the ones admitted.
 * @param {Blob | Uint8Array} ciphertext  the submission's ciphertext from the blob store
 * @param {Uint8Array} releasedKey        the key manager's re-wrapped key
 * @param {Uint8Array} privateKey         the buyer's raw X25519 private key (its public half went on-chain with the payment)
 * @param {{chainId: bigint | number, competitions: string | Uint8Array, competitionId: bigint | number, index: number,
 *          buyer: string | Uint8Array, contentHash: string | Uint8Array, weightsHash: string | Uint8Array}} purchase
 *   contentHash and weightsHash as the chain holds them (submissionOf, the Submitted log)
 * @returns {Promise<Uint8Array>} the safetensors weights
 * @throws {CiphertextTampered} the ciphertext is not the submission's, or does not decrypt to the admitted weights
 * @throws {import("./errors.js").KeyUnwrapFailed} the key is not released to this key and purchase
 */
export async function openPurchasedModel(ciphertext, releasedKey, privateKey, { chainId, competitions, competitionId, index, buyer, contentHash, weightsHash }) {
  const blob = ciphertext instanceof Blob ? ciphertext : new Blob([ciphertext]);
  const expectedContent = asBytes(contentHash, 32, "content hash");
  const expectedWeights = asBytes(weightsHash, 32, "weights hash");
  if (toHex(await sha256OfBlob(blob)) !== toHex(expectedContent)) {
    throw new CiphertextTampered(`the ciphertext is not submission ${index}'s: its SHA-256 is not the content hash on-chain`);
  }
  const info = purchaseInfo(chainId, asAddress(competitions, "competition market address"), competitionId, index, asAddress(buyer, "buyer address"), expectedContent);
  const key = await unwrapKey(releasedKey, privateKey, { info });
  const weights = new Uint8Array(await (await decryptBlob(blob, key, { kind: Kind.MODEL, context: expectedWeights })).arrayBuffer());
  key.fill(0);
  if (toHex(await sha256(weights)) !== toHex(expectedWeights)) {
    throw new CiphertextTampered(`submission ${index} does not decrypt to the weights it was admitted with`);
  }
  return weights;
}

/**
 * SHA-256 of a Blob read one slice at a time (a model need not fit in memory twice).
 * @param {Blob} blob
 * @returns {Promise<Uint8Array>}
 */
export async function sha256OfBlob(blob) {
  const hash = sha256Hasher.create();
  const step = 1 << 20;
  for (let at = 0; at < blob.size; at += step) hash.update(new Uint8Array(await blob.slice(at, Math.min(at + step, blob.size)).arrayBuffer()));
  return hash.digest();
}

function asAddress(value, what) {
  return asBytes(value, 20, what);
}

function asBytes(value, length, what) {
  if (value instanceof Uint8Array) {
    checkLength(what, value, length);
    return value;
  }
  try {
    return fromHex(String(value), length);
  } catch (e) {
    throw new RangeError(`${what} must be ${length} bytes of hex (${e.message})`);
  }
}

function checkLength(what, bytes, length) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new RangeError(`${what} must be ${length} bytes, got ${bytes?.length}`);
  }
}
