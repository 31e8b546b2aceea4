// Sterling's browser cryptography: the public API the pages import. Byte-compatible with the
// Python implementation (docs/formats.md, docs/web-crypto.md; proven by tests/web/).
//
// Needs an import map that resolves "@hpke/core" and "@hpke/common":
//   { "imports": { "@hpke/core": "/vendor/@hpke/core/esm/mod.js",
//                  "@hpke/common": "/vendor/@hpke/common/esm/mod.js" } }

export { fromHex, sha256, toHex } from "./bytes.js";
export { datasetFromRows, parseCsv, readCsvFile, separatorName, sniffSeparator, splitCsv } from "./csv.js";
export * from "./errors.js";
export {
  datakeyInfo,
  generateKeyPair,
  modelContext,
  modelInfo,
  openSealed,
  openSealedModel,
  publicKeyOf,
  unwrapKey,
  wrapKey,
} from "./hpke.js";
export { encryptDatasetForListing } from "./listing.js";
export { buildPackage, canonicalJson, inspectPackage, normaliseFeatureBounds, schemaBytes, schemaHash } from "./package.js";
export { decryptBlob, decryptBytes, DEFAULT_CHUNK_SIZE, encryptBlob, encryptBytes, Kind, newDataKey } from "./stream.js";
