// HPKE key wrapping (RFC 9180 base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM)
// with Sterling's `info` bindings, and the consumer's side of sealed envelopes (STRS).
// Mirrors enclave_worker/trusted/keywrap.py and sealing.py; see docs/formats.md.

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";

import { concat, sha256, uintBE } from "./bytes.js";
import { CiphertextMalformed, KeyUnwrapFailed } from "./errors.js";
import { decryptBytes, Kind } from "./stream.js";

export const PUBLIC_KEY_LEN = 32;
export const PRIVATE_KEY_LEN = 32;
/** enc (32) ‖ encrypted 32-byte key ‖ tag (16) */
export const WRAPPED_KEY_LEN = 80;
export const ENVELOPE_MAGIC = new Uint8Array([0x53, 0x54, 0x52, 0x53]); // "STRS"
export const ENVELOPE_VERSION = 1;
export const MAX_WRAPPED_LEN = 512;
const ENVELOPE_PREFIX_LEN = 7; // magic ‖ version ‖ uint16 wrapped-key length

const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
const ascii = (s) => new TextEncoder().encode(s);
// PKCS#8 prefix of a raw X25519 private key (RFC 8410): WebCrypto imports private keys only this way.
const PKCS8_X25519 = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);

/**
 * Binding of a provider's data key, wrapped to the key manager, to its dataset ciphertext.
 * @param {Uint8Array} contentHash  SHA-256 of the ciphertext
 * @returns {Uint8Array}
 */
export function datakeyInfo(contentHash) {
  checkLength("content hash", contentHash, 32);
  return concat(ascii("sterling/v1/datakey/"), contentHash);
}

/**
 * Binding of a trained model's key, wrapped to the consumer, to its job.
 * @param {bigint | number} chainId
 * @param {Uint8Array} market  the job market's 20-byte address
 * @param {bigint | number} jobId
 * @returns {Uint8Array}
 */
export function modelInfo(chainId, market, jobId) {
  checkLength("market address", market, 20);
  return concat(ascii("sterling/v1/model/"), uintBE(chainId, 32), market, uintBE(jobId, 32));
}

/**
 * The 32-byte context a sealed model's ciphertext is bound to: SHA-256 of {@link modelInfo}.
 * @param {bigint | number} chainId
 * @param {Uint8Array} market
 * @param {bigint | number} jobId
 * @returns {Promise<Uint8Array>}
 */
export async function modelContext(chainId, market, jobId) {
  return sha256(modelInfo(chainId, market, jobId));
}

/**
 * Encrypt a key to a raw X25519 public key under the binding `info`.
 * @param {Uint8Array} key  the plaintext key (a 32-byte data key)
 * @param {Uint8Array} recipientPublicKey  raw 32 bytes (e.g. the key manager's attested key)
 * @param {{info: Uint8Array}} binding
 * @returns {Promise<Uint8Array>} enc ‖ ciphertext ‖ tag (80 bytes for a 32-byte key)
 */
export async function wrapKey(key, recipientPublicKey, { info }) {
  checkLength("recipient public key", recipientPublicKey, PUBLIC_KEY_LEN);
  const recipient = await suite.kem.deserializePublicKey(recipientPublicKey);
  const { ct, enc } = await suite.seal({ recipientPublicKey: recipient, info }, key);
  return concat(new Uint8Array(enc), new Uint8Array(ct));
}

/**
 * Open a wrapped key.
 * @param {Uint8Array} wrapped  enc ‖ ciphertext ‖ tag
 * @param {Uint8Array} privateKey  raw 32-byte X25519 private key
 * @param {{info: Uint8Array}} binding
 * @returns {Promise<Uint8Array>}
 * @throws {KeyUnwrapFailed} not addressed to this key, or bound to another `info`
 */
export async function unwrapKey(wrapped, privateKey, { info }) {
  const recipientKey = await importPrivateKey(privateKey);
  const encLen = suite.kem.encSize;
  if (wrapped.length < encLen) throw new KeyUnwrapFailed("wrapped key is too short");
  try {
    const opened = await suite.open({ recipientKey, enc: wrapped.slice(0, encLen), info }, wrapped.slice(encLen));
    return new Uint8Array(opened);
  } catch (e) {
    throw new KeyUnwrapFailed(`wrapped key does not open for this recipient and binding (${e.name})`);
  }
}

/**
 * A fresh X25519 key pair for receiving models. The private key is returned as raw bytes for the
 * user to keep (it never leaves the browser); the public key goes on-chain with the job.
 * @returns {Promise<{privateKey: Uint8Array, publicKey: Uint8Array}>}
 */
export async function generateKeyPair() {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  return { privateKey: fromBase64Url(jwk.d), publicKey: fromBase64Url(jwk.x) };
}

/**
 * The public key belonging to a raw private key (to check a pasted key against a job's key).
 * @param {Uint8Array} privateKey  raw 32 bytes
 * @returns {Promise<Uint8Array>}
 */
export async function publicKeyOf(privateKey) {
  const jwk = await crypto.subtle.exportKey("jwk", await importPrivateKey(privateKey));
  return fromBase64Url(jwk.x);
}

/**
 * Open a sealed envelope (`"STRS" ‖ version ‖ uint16 length ‖ wrapped key ‖ STRL object`).
 * @param {Uint8Array} envelope
 * @param {Uint8Array} privateKey  raw 32-byte X25519 private key
 * @param {{info: Uint8Array, kind: number, context: Uint8Array}} binding
 * @returns {Promise<Uint8Array>}
 * @throws {CiphertextMalformed} not an envelope, or bound to another context
 * @throws {KeyUnwrapFailed} not addressed to this key or this binding
 * @throws {import("./errors.js").CiphertextError} the body is damaged
 */
export async function openSealed(envelope, privateKey, { info, kind, context }) {
  if (envelope.length < ENVELOPE_PREFIX_LEN) throw new CiphertextMalformed("sealed envelope is too short");
  if (!ENVELOPE_MAGIC.every((b, i) => envelope[i] === b)) {
    throw new CiphertextMalformed("not a Sterling sealed envelope (bad magic)");
  }
  if (envelope[4] !== ENVELOPE_VERSION) throw new CiphertextMalformed(`unsupported envelope version ${envelope[4]}`);
  const wrappedLen = (envelope[5] << 8) | envelope[6];
  if (wrappedLen > MAX_WRAPPED_LEN || envelope.length < ENVELOPE_PREFIX_LEN + wrappedLen) {
    throw new CiphertextMalformed("sealed envelope has an invalid wrapped-key length");
  }
  const wrapped = envelope.subarray(ENVELOPE_PREFIX_LEN, ENVELOPE_PREFIX_LEN + wrappedLen);
  const key = await unwrapKey(wrapped, privateKey, { info });
  return decryptBytes(envelope.subarray(ENVELOPE_PREFIX_LEN + wrappedLen), key, { kind, context });
}

/**
 * Open a trained model sealed to the consumer by the trainer enclave for one job.
 * @param {Uint8Array} envelope  the result blob (its SHA-256 is the job's resultHash)
 * @param {Uint8Array} privateKey  the consumer's raw X25519 private key
 * @param {{chainId: bigint | number, market: Uint8Array, jobId: bigint | number}} job
 * @returns {Promise<Uint8Array>} the safetensors weights (SHA-256 = the job's modelHash)
 */
export async function openSealedModel(envelope, privateKey, { chainId, market, jobId }) {
  return openSealed(envelope, privateKey, {
    info: modelInfo(chainId, market, jobId),
    kind: Kind.MODEL,
    context: await modelContext(chainId, market, jobId),
  });
}

async function importPrivateKey(privateKey) {
  checkLength("private key", privateKey, PRIVATE_KEY_LEN);
  return crypto.subtle.importKey("pkcs8", concat(PKCS8_X25519, privateKey), { name: "X25519" }, true, ["deriveBits"]);
}

function fromBase64Url(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function checkLength(what, bytes, length) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new RangeError(`${what} must be ${length} bytes, got ${bytes?.length}`);
  }
}
