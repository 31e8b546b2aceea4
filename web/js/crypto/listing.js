// Everything marketplace/provider.py's list_dataset does before it touches the chain, in the
// browser, so the plaintext never leaves the provider's machine:
// fresh data key → uid context → STRL kind-1 encryption → content hash → HPKE wrap to the key manager.

import { concat, fromHex, sha256, toHex } from "./bytes.js";
import { buildPackage, checkSchema, inspectPackage, schemaBytes, schemaHash } from "./package.js";
import { datakeyInfo, wrapKey } from "./hpke.js";
import { DEFAULT_CHUNK_SIZE, encryptBlob, Kind, newDataKey } from "./stream.js";

/**
 * @typedef {object} EncryptedListing
 * @property {Blob} ciphertext          upload to the blob store; its SHA-256 is contentHash
 * @property {string} contentHash       hex, no 0x (the listing's contentHash)
 * @property {import("./package.js").Schema} schema
 * @property {Uint8Array} schemaJson    canonical schema JSON (stored in the blob store under schemaHash)
 * @property {string} schemaHash        hex, no 0x
 * @property {Uint8Array} wrappedKey    80 bytes for the key manager's deposit, bound to contentHash
 * @property {number} rows
 */

/**
 * Encrypt a dataset for listing.
 *
 * @param {Blob | import("./package.js").DatasetArrays} dataset  a package file (.safetensors, checked
 *   without reading it whole) or arrays + schema (e.g. from {@link import("./csv.js").parseCsv})
 * @param {object} options
 * @param {Uint8Array} options.kmPublicKey  the key manager's attested X25519 key from the enclave registry
 * @param {string} options.providerAddress  the provider's 0x address, as provider.py hashes it
 * @param {(done: number, total: number) => void} [options.onProgress]  plaintext bytes encrypted so far
 * @param {number} [options.chunkSize]  STRL chunk size (default 1 MiB)
 * @returns {Promise<EncryptedListing>}
 *
 * @example
 *   const listing = await encryptDatasetForListing(parseCsv(text, { labelColumn: "outcome" }), {
 *     kmPublicKey, providerAddress: account.address, onProgress: (done, total) => bar.value = done / total,
 *   });
 */
export async function encryptDatasetForListing(dataset, { kmPublicKey, providerAddress, onProgress, chunkSize = DEFAULT_CHUNK_SIZE }) {
  fromHex(providerAddress, 20); // refuse anything that is not an address before any work
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
  // provider.py: sha256(provider.address.encode() + os.urandom(32)), the checksummed address text
  const uid = await sha256(concat(new TextEncoder().encode(providerAddress), crypto.getRandomValues(new Uint8Array(32))));
  const { ciphertext, sha256: contentHash } = await encryptBlob(plaintext, key, {
    kind: Kind.DATASET,
    context: uid,
    chunkSize,
    onProgress,
  });
  const wrappedKey = await wrapKey(key, kmPublicKey, { info: datakeyInfo(contentHash) });
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
