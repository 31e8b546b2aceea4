// The STRL encrypted-object format (docs/formats.md, enclave_worker/trusted/dataformat.py):
// a STREAM construction over AES-256-GCM (WebCrypto), read and written chunk by chunk.
//
//   header (52 bytes) = "STRL" ‖ version 1 ‖ kind ‖ reserved 0 (2) ‖ uint32 chunk_size
//                       ‖ nonce_prefix (8) ‖ context (32)
//   chunk i           = AES-256-GCM(key, nonce = nonce_prefix ‖ uint32(i),
//                                   aad = header ‖ uint64(i) ‖ final) ‖ 16-byte tag
//
// Every chunk but the last holds chunk_size plaintext bytes; the last has final = 1 and is empty
// only when the whole plaintext is.

import { sha256 as sha256Hasher } from "@hpke/common";

import { concat, uintBE } from "./bytes.js";
import {
  CiphertextDuplicated,
  CiphertextMalformed,
  CiphertextReordered,
  CiphertextTampered,
  CiphertextTrailingData,
  CiphertextTruncated,
} from "./errors.js";

export const MAGIC = new Uint8Array([0x53, 0x54, 0x52, 0x4c]); // "STRL"
export const VERSION = 1;
export const HEADER_LEN = 52;
export const TAG_LEN = 16;
export const KEY_LEN = 32;
export const DEFAULT_CHUNK_SIZE = 1 << 20;
export const MIN_CHUNK_SIZE = 1 << 10;
export const MAX_CHUNK_SIZE = 1 << 24;
/** How many positions around a failing chunk are tried to tell reordering and duplication from bit flips. */
export const DIAGNOSIS_WINDOW = 64;

/** What a ciphertext holds; checked on decryption so one kind cannot stand in for another. */
export const Kind = Object.freeze({ DATASET: 1, MODEL: 2 });
const KIND_NAMES = { 1: "dataset", 2: "model" };

/**
 * @typedef {object} Header
 * @property {number} kind        1 dataset, 2 model
 * @property {number} chunkSize   plaintext bytes per chunk
 * @property {Uint8Array} noncePrefix  8 bytes
 * @property {Uint8Array} context      32 bytes
 */

/**
 * Serialise a header.
 * @param {Header} header
 * @returns {Uint8Array} 52 bytes
 */
export function encodeHeader({ kind, chunkSize, noncePrefix, context }) {
  return concat(MAGIC, new Uint8Array([VERSION, kind, 0, 0]), uintBE(chunkSize, 4), noncePrefix, context);
}

/**
 * Parse and validate a header.
 * @param {Uint8Array} raw
 * @returns {Header}
 * @throws {CiphertextMalformed} wrong length, magic, version, kind, reserved bits or chunk size
 */
export function decodeHeader(raw) {
  if (raw.length !== HEADER_LEN) {
    throw new CiphertextMalformed(`ciphertext header is ${raw.length} bytes, expected ${HEADER_LEN}`);
  }
  if (!MAGIC.every((b, i) => raw[i] === b)) throw new CiphertextMalformed("not a Sterling ciphertext (bad magic)");
  if (raw[4] !== VERSION) {
    throw new CiphertextMalformed(`unsupported ciphertext version ${raw[4]} (this build reads ${VERSION})`);
  }
  if (!(raw[5] in KIND_NAMES)) throw new CiphertextMalformed(`unknown ciphertext kind ${raw[5]}`);
  if (raw[6] !== 0 || raw[7] !== 0) throw new CiphertextMalformed("reserved header bits are set");
  const chunkSize = new DataView(raw.buffer, raw.byteOffset).getUint32(8);
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new CiphertextMalformed(`chunk size ${chunkSize} outside [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
  }
  return { kind: raw[5], chunkSize, noncePrefix: raw.slice(12, 20), context: raw.slice(20, 52) };
}

/**
 * A fresh random 256-bit data key (one per object).
 * @returns {Uint8Array}
 */
export function newDataKey() {
  return crypto.getRandomValues(new Uint8Array(KEY_LEN));
}

/**
 * @typedef {object} EncryptOptions
 * @property {number} kind                 {@link Kind}
 * @property {Uint8Array} context          32 bytes the object is bound to
 * @property {number} [chunkSize]          plaintext bytes per chunk (default 1 MiB)
 * @property {(done: number, total: number) => void} [onProgress]
 *   called after each chunk with the plaintext bytes encrypted so far; strictly increasing, the
 *   last call is (total, total) (a single (0, 0) for an empty source)
 */

/**
 * Encrypt a Blob (or File) chunk by chunk: only one plaintext chunk is read at a time, and the
 * SHA-256 of the ciphertext (a dataset's content hash) is computed on the way.
 * @param {Blob} source
 * @param {Uint8Array} key  32-byte data key
 * @param {EncryptOptions} options
 * @returns {Promise<{ciphertext: Blob, sha256: Uint8Array}>}
 */
export async function encryptBlob(source, key, { kind, context, chunkSize = DEFAULT_CHUNK_SIZE, onProgress }) {
  checkLength("context", context, 32);
  if (!(kind in KIND_NAMES)) throw new RangeError(`unknown kind ${kind}`);
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunk size ${chunkSize} outside [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
  }
  const aesKey = await importKey(key);
  const noncePrefix = crypto.getRandomValues(new Uint8Array(8));
  const header = encodeHeader({ kind, chunkSize, noncePrefix, context });
  const total = source.size;
  const count = Math.max(1, Math.ceil(total / chunkSize)); // the final chunk is empty only for an empty source
  const hash = sha256Hasher.create();
  hash.update(header);
  /** @type {Uint8Array[]} */
  const parts = [header];
  for (let i = 0; i < count; i++) {
    const start = i * chunkSize;
    const end = Math.min(start + chunkSize, total);
    const plain = await source.slice(start, end).arrayBuffer();
    const algorithm = { name: "AES-GCM", iv: nonce(noncePrefix, i), additionalData: aad(header, i, i === count - 1) };
    const sealed = new Uint8Array(await crypto.subtle.encrypt(algorithm, aesKey, plain));
    hash.update(sealed);
    parts.push(sealed);
    onProgress?.(end, total);
  }
  return { ciphertext: new Blob(parts, { type: "application/octet-stream" }), sha256: hash.digest() };
}

/**
 * Encrypt an in-memory buffer; see {@link encryptBlob}.
 * @param {Uint8Array} plaintext
 * @param {Uint8Array} key
 * @param {EncryptOptions} options
 * @returns {Promise<Uint8Array>}
 */
export async function encryptBytes(plaintext, key, options) {
  const { ciphertext } = await encryptBlob(new Blob([plaintext]), key, options);
  return new Uint8Array(await ciphertext.arrayBuffer());
}

/**
 * Decrypt and authenticate a ciphertext chunk by chunk. A chunk's plaintext is kept only after
 * its tag verified, and nothing is returned unless the whole object verified.
 * @param {Blob} source
 * @param {Uint8Array} key  32-byte data key
 * @param {{kind: number, context?: Uint8Array}} options  context: refuse any other binding
 * @returns {Promise<Blob>}
 * @throws {CiphertextMalformed} header invalid, wrong kind, or wrong context
 * @throws {CiphertextTampered} a chunk failed authentication (bit flips, wrong key);
 *   {@link CiphertextReordered} / {@link CiphertextDuplicated} when it opens at another position
 * @throws {CiphertextTruncated} the ciphertext ends before its final chunk
 * @throws {CiphertextTrailingData} bytes follow the final chunk
 */
export async function decryptBlob(source, key, { kind, context }) {
  const aesKey = await importKey(key);
  const headerBytes = await read(source, 0, HEADER_LEN);
  const header = decodeHeader(headerBytes);
  if (header.kind !== kind) {
    throw new CiphertextMalformed(`ciphertext holds a ${KIND_NAMES[header.kind]}, expected a ${KIND_NAMES[kind]}`);
  }
  if (context !== undefined && !equal(header.context, context)) {
    throw new CiphertextMalformed("ciphertext is bound to another context than the one expected");
  }
  const sealedLen = header.chunkSize + TAG_LEN;
  /** @type {Uint8Array[]} */
  const parts = [];
  for (let index = 0, offset = HEADER_LEN; ; index++, offset += sealedLen) {
    const end = Math.min(offset + sealedLen, source.size);
    if (end - offset < TAG_LEN) throw new CiphertextTruncated(`ciphertext ends inside chunk ${index}`);
    const sealed = await read(source, offset, end);
    const final = end === source.size;
    const plain = await open(aesKey, nonce(header.noncePrefix, index), sealed, aad(headerBytes, index, final));
    if (plain === null) throw await diagnose(aesKey, header, headerBytes, sealed, index, final);
    parts.push(plain);
    if (final) return new Blob(parts, { type: "application/octet-stream" });
  }
}

/**
 * Decrypt an in-memory buffer; see {@link decryptBlob}.
 * @param {Uint8Array} ciphertext
 * @param {Uint8Array} key
 * @param {{kind: number, context?: Uint8Array}} options
 * @returns {Promise<Uint8Array>}
 */
export async function decryptBytes(ciphertext, key, options) {
  const plaintext = await decryptBlob(new Blob([ciphertext]), key, options);
  return new Uint8Array(await plaintext.arrayBuffer());
}

/**
 * Name what is wrong with a chunk that failed authentication at position `index` (error path only):
 * the other final flag at its own position means truncation or appended data; another position
 * means reordering or duplication.
 * @returns {Promise<Error>}
 */
async function diagnose(aesKey, header, headerBytes, sealed, index, final) {
  const ownNonce = nonce(header.noncePrefix, index);
  if ((await open(aesKey, ownNonce, sealed, aad(headerBytes, index, !final))) !== null) {
    return final
      ? new CiphertextTruncated(`ciphertext ends after chunk ${index}, before its final chunk`)
      : new CiphertextTrailingData(`data follows the final chunk ${index}`);
  }
  for (let other = Math.max(0, index - DIAGNOSIS_WINDOW); other <= index + DIAGNOSIS_WINDOW; other++) {
    if (other === index || other >= 2 ** 32) continue;
    for (const flag of [false, true]) {
      if ((await open(aesKey, nonce(header.noncePrefix, other), sealed, aad(headerBytes, other, flag))) !== null) {
        return other < index
          ? new CiphertextDuplicated(`chunk ${index} is a copy of chunk ${other} (or chunks were reordered)`)
          : new CiphertextReordered(`chunk ${index} belongs at position ${other}: chunks were reordered or removed`);
      }
    }
  }
  return new CiphertextTampered(
    `chunk ${index} failed authentication (altered bytes, wrong key, or cut inside the chunk)`,
  );
}

/** @returns {Promise<Uint8Array | null>} the plaintext, or null when the tag does not verify */
async function open(aesKey, iv, sealed, additionalData) {
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData }, aesKey, sealed));
  } catch (e) {
    if (e instanceof DOMException && e.name === "OperationError") return null;
    throw e;
  }
}

function nonce(prefix, index) {
  if (index >= 2 ** 32) throw new CiphertextMalformed("object has more than 2**32 chunks");
  return concat(prefix, uintBE(index, 4));
}

function aad(header, index, final) {
  return concat(header, uintBE(index, 8), new Uint8Array([final ? 1 : 0]));
}

async function importKey(key) {
  checkLength("data key", key, KEY_LEN);
  return crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
}

async function read(blob, start, end) {
  return new Uint8Array(await blob.slice(start, end).arrayBuffer());
}

function checkLength(what, bytes, length) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new RangeError(`${what} must be ${length} bytes, got ${bytes?.length}`);
  }
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
