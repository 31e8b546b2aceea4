// The provider's side of listing, before the chain call: CSV → canonical package → encrypted
// blob + wrapped data key, all in this browser (web/js/crypto/), and the wrapped key's deposit
// with the key manager, signed by the provider. Also the listing's datasheet (docs/datasheets.md):
// built from the form, checked here as marketplace/datasheet.py checks it, hashed over the same
// canonical JSON, published; and this browser's memory of the files a provider has listed.
import { getAddress, keccak256 } from "ethers";
import { postJSON } from "./api.js";
import { datasetFromRows, headerNames, separatorName, sniffSeparator, splitCsv } from "./crypto/csv.js";
import { encryptDatasetForListing, readCsvFile } from "./crypto/index.js";
import { sha256, toHex } from "./crypto/bytes.js";
import { canonicalJson } from "./crypto/package.js";
import { bytesToHex } from "./format.js";
import { marketDomain } from "./wallet.js";

// The EIP-712 Deposit statement; its one definition is DEPOSIT_TYPES in
// enclave_worker/trusted/receipt.py (tests/web/test_deposit_signature.py checks that a signature
// made here recovers there). The domain is the job market's own, read from the contract.
const DEPOSIT_TYPES = {
  Deposit: [
    { name: "contentHash", type: "bytes32" },
    { name: "wrappedKeyHash", type: "bytes32" },
    { name: "keyManager", type: "address" },
  ],
};

/** The column names of a CSV file's header row. */
export async function readCsvHeader(file) {
  const head = await file.slice(0, 1 << 16).text();
  const rows = splitCsv(head.includes("\n") ? head.slice(0, head.indexOf("\n") + 1) : head);
  if (!rows.length || !rows[0].cells.length) throw new Error("The file has no header row.");
  return rows[0].cells.map((c) => c.trim());
}

/**
 * A chosen CSV file read once: its separator (sniffed), header, rows and SHA-256, for the
 * listing page to preview and check before anything is encrypted.
 * @typedef {object} CsvTable
 * @property {string} separator       ",", ";" or "\t"
 * @property {string} separatorName   "comma-separated", "semicolon-separated", "tab-separated"
 * @property {string[]} columns       the header's names
 * @property {string[][]} head        the first data rows' cells (at most `previewRows`)
 * @property {number} rowCount        data rows (blank lines not counted)
 * @property {{cells: string[], line: number}[]} rows  every row, the header first (for {@link datasetFromTable})
 * @property {string} sha256          hex of the file's bytes (what a second listing of the same file is told by)
 */

/**
 * Read a CSV file for the listing page: separator, header and rows (no number is checked yet).
 * @param {Blob} file
 * @param {{previewRows?: number}} [options]
 * @returns {Promise<CsvTable>}
 * @throws {import("./crypto/errors.js").InvalidCsv} not splittable (a quote), empty, a bad header
 */
export async function readCsvTable(file, { previewRows = 5 } = {}) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(bytes);
  const separator = sniffSeparator(text);
  const rows = splitCsv(text, { separator });
  const columns = headerNames(rows);
  return {
    separator,
    separatorName: separatorName(separator),
    columns,
    head: rows.slice(1, 1 + previewRows).map((r) => r.cells),
    rowCount: rows.length - 1,
    rows,
    sha256: toHex(await sha256(bytes)),
  };
}

/**
 * The dataset of a table with `labelColumn` as the label (every cell checked; errors name the line and column).
 * @param {CsvTable} table
 * @param {string} labelColumn
 * @returns {import("./crypto/csv.js").CsvDataset}
 */
export function datasetFromTable(table, labelColumn) {
  return datasetFromRows(table.rows, { labelColumn, separator: table.separator });
}

/**
 * How many rows have a feature outside its declared bounds (the enclave clips them); computed
 * here only to warn the provider, never sent anywhere.
 * @param {import("./crypto/csv.js").CsvDataset} dataset
 * @param {([number, number] | null)[]} bounds  one entry per feature
 * @returns {{rows: number, perFeature: number[]}}  rows with any feature outside; rows outside per feature
 */
export function rowsOutsideBounds(dataset, bounds) {
  const width = dataset.schema.feature_names.length;
  const perFeature = new Array(width).fill(0);
  let rows = 0;
  for (let r = 0; r < dataset.rows; r++) {
    let outside = false;
    for (let j = 0; j < width; j++) {
      const b = bounds[j];
      if (!b) continue;
      const v = dataset.features[r * width + j];
      if (v < b[0] || v > b[1]) {
        perFeature[j]++;
        outside = true;
      }
    }
    if (outside) rows++;
  }
  return { rows, perFeature };
}

/** Parse a CSV into the canonical dataset arrays and schema (errors name the line and column). */
export async function readCsvDataset(file, labelColumn) {
  return readCsvFile(file, { labelColumn });
}

/**
 * Package and encrypt a parsed dataset for listing.
 * @param {object} dataset  from {@link readCsvDataset}
 * @param {{kmPublicKey: Uint8Array, providerAddress: string, onProgress?: (done: number, total: number) => void}} options
 */
export async function encryptForListing(dataset, { kmPublicKey, providerAddress, onProgress }) {
  // provider.py hashes the checksummed address text into the dataset's uid.
  return encryptDatasetForListing(dataset, { kmPublicKey, providerAddress: getAddress(providerAddress), onProgress });
}

/**
 * The provider's EIP-712 signature of a deposit: "the data key of ciphertext `contentHash` is
 * `wrappedKey`, deposited with key manager `keyManager`", under the job market's domain.
 * @param {import("ethers").Signer} signer  the provider
 * @param {{domain: object, contentHash: string, wrappedKey: Uint8Array, keyManager: string}} deposit
 * @returns {Promise<string>} the 65-byte signature, 0x-hex
 */
export async function signDeposit(signer, { domain, contentHash, wrappedKey, keyManager }) {
  const value = { contentHash: "0x" + contentHash.replace(/^0x/, ""), wrappedKeyHash: keccak256(wrappedKey), keyManager: getAddress(keyManager) };
  return signer.signTypedData(domain, DEPOSIT_TYPES, value);
}

/**
 * Hand the wrapped data key to the key manager, signed by the provider: the key manager keeps it
 * for this provider only and releases it only for a dataset this provider lists. The wallet asks
 * the provider to sign (no transaction, no gas).
 * @param {{contentHash: string, wrappedKey: Uint8Array}} listing  from {@link encryptForListing}
 * @param {{signer: import("ethers").Signer, keyManager: string}} options  `keyManager`: its signer address
 */
export async function depositDataKey(listing, { signer, keyManager }) {
  const provider = getAddress(await signer.getAddress());
  const signature = await signDeposit(signer, { domain: await marketDomain(), contentHash: listing.contentHash, wrappedKey: listing.wrappedKey, keyManager });
  return postJSON("/api/key-manager/deposits", { content_hash: listing.contentHash, wrapped_key: bytesToHex(listing.wrappedKey), provider, signature });
}

// --- datasheets (docs/datasheets.md; marketplace/datasheet.py is the reference) ------------------

const TAG = /^[a-z0-9][a-z0-9-]{0,31}$/;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;

/** A datasheet the gateway refused (422): `problems` name the fields, as `[{path, message}]`. */
export class DatasheetRejected extends Error {
  constructor(message, problems) {
    super(message);
    this.name = "DatasheetRejected";
    this.problems = problems;
  }
}

/**
 * Tags as typed ("Credit scoring, finance") → the datasheet's tags ("credit-scoring", "finance"):
 * split at commas, trimmed, lower-cased, inner spaces as hyphens, each once.
 * @param {string} text
 * @returns {string[]}
 */
export function parseTags(text) {
  const tags = String(text || "")
    .split(",")
    .map((t) => t.trim().toLowerCase().replace(/\s+/g, "-"))
    .filter(Boolean);
  return [...new Set(tags)];
}

/**
 * The datasheet document from the form's values, in the form the SDK publishes
 * (Datasheet.to_json: optional fields left at their defaults are left out).
 * @param {object} fields
 * @param {string} fields.title
 * @param {string} fields.description
 * @param {string[]} fields.tags
 * @param {string} fields.license
 * @param {string} fields.providerName
 * @param {number} fields.rows            from the parsed file
 * @param {string} fields.labelName
 * @param {string} [fields.labelDescription]
 * @param {{name: string, description?: string, unit?: string}[]} [fields.columns]  columns with nothing said are left out
 * @param {string} [fields.provenance]
 * @param {string} [fields.intendedUses]
 * @param {{start: string, end: string} | null} [fields.collectionPeriod]
 * @returns {object}
 */
export function datasheetDocument(fields) {
  const t = (s) => String(s ?? "").trim();
  const label = { name: t(fields.labelName) };
  if (t(fields.labelDescription)) label.description = t(fields.labelDescription);
  const doc = {
    version: 1,
    title: t(fields.title),
    description: t(fields.description),
    tags: [...(fields.tags || [])],
    license: t(fields.license),
    provider_name: t(fields.providerName),
    rows: fields.rows,
    label,
  };
  const columns = (fields.columns || [])
    .map((c) => {
      const column = { name: c.name };
      if (t(c.description)) column.description = t(c.description);
      if (t(c.unit)) column.unit = t(c.unit);
      return column;
    })
    .filter((c) => c.description !== undefined || c.unit !== undefined);
  if (columns.length) doc.columns = columns;
  if (t(fields.provenance)) doc.provenance = t(fields.provenance);
  if (t(fields.intendedUses)) doc.intended_uses = t(fields.intendedUses);
  if (fields.collectionPeriod) doc.collection_period = { start: fields.collectionPeriod.start, end: fields.collectionPeriod.end };
  return doc;
}

/**
 * Check a datasheet document as marketplace/datasheet.py does, every problem named by its path
 * (`title`, `tags.1`, `columns.2.unit`, `collection_period`), before anything is sent.
 * @param {object} doc  from {@link datasheetDocument}
 * @returns {{path: string, message: string}[]}  empty when valid
 */
export function datasheetProblems(doc) {
  const problems = [];
  const length = (s) => [...s].length; // code points, as Python counts
  const text = (path, value, { min = 0, max, blank = false }) => {
    if (typeof value !== "string") return problems.push({ path, message: "is required" });
    if (length(value) < min) return problems.push({ path, message: "is required" });
    if (length(value) > max) return problems.push({ path, message: `is at most ${max} characters (this is ${length(value)})` });
    if (blank && min > 0 && !/\S/.test(value)) problems.push({ path, message: "must not be blank" });
  };
  text("title", doc.title, { min: 1, max: 120, blank: true });
  text("description", doc.description, { min: 1, max: 5000, blank: true });
  text("license", doc.license, { min: 1, max: 100, blank: true });
  text("provider_name", doc.provider_name, { min: 1, max: 80, blank: true });
  if (doc.tags.length > 16) problems.push({ path: "tags", message: `at most 16 tags (these are ${doc.tags.length})` });
  doc.tags.forEach((tag, i) => {
    if (!TAG.test(tag)) problems.push({ path: `tags.${i}`, message: `"${tag}": a tag is lower-case letters, digits and hyphens, at most 32 characters (e.g. credit-scoring)` });
  });
  if (new Set(doc.tags).size !== doc.tags.length) problems.push({ path: "tags", message: "a tag is named twice" });
  if (!Number.isSafeInteger(doc.rows) || doc.rows < 1) problems.push({ path: "rows", message: "the file has no data rows" });
  text("label.name", doc.label.name, { min: 1, max: 200 });
  if (doc.label.description !== undefined) text("label.description", doc.label.description, { max: 1000 });
  const names = new Set();
  (doc.columns || []).forEach((c, i) => {
    text(`columns.${i}.name`, c.name, { min: 1, max: 200 });
    if (c.description !== undefined) text(`columns.${i}.description`, c.description, { max: 1000 });
    if (c.unit !== undefined) text(`columns.${i}.unit`, c.unit, { max: 40 });
    if (names.has(c.name)) problems.push({ path: `columns.${i}.name`, message: "a column is described twice" });
    names.add(c.name);
  });
  if (doc.provenance !== undefined) text("provenance", doc.provenance, { max: 2000 });
  if (doc.intended_uses !== undefined) text("intended_uses", doc.intended_uses, { max: 2000 });
  const period = doc.collection_period;
  if (period) {
    const day = (s) => ISO_DATE.test(s || "") && !Number.isNaN(Date.parse(`${s}T00:00:00Z`)) && new Date(`${s}T00:00:00Z`).toISOString().startsWith(s);
    if (!day(period.start)) problems.push({ path: "collection_period.start", message: "must be a date written YYYY-MM-DD" });
    else if (!day(period.end)) problems.push({ path: "collection_period.end", message: "must be a date written YYYY-MM-DD" });
    else if (period.start > period.end) {
      problems.push({ path: "collection_period", message: `the collection period starts (${period.start}) after it ends (${period.end})` });
    }
  }
  return problems;
}

/**
 * The datasheet's on-chain hash: SHA-256 of its canonical JSON (Python's
 * `json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`), hex.
 * @param {object} doc
 * @returns {Promise<string>}
 */
export async function datasheetHash(doc) {
  return toHex(await sha256(new TextEncoder().encode(canonicalJson(doc))));
}

/**
 * Publish a datasheet document with the gateway and check the hash it answers against ours.
 * @param {object} doc
 * @returns {Promise<string>}  the hash, hex
 * @throws {DatasheetRejected} the gateway refused it (422), with the fields it named
 */
export async function publishDatasheet(doc) {
  const body = canonicalJson(doc);
  const ours = await datasheetHash(doc);
  const response = await fetch("/api/datasheets", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body,
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    /* not JSON */
  }
  if (response.status === 422 && Array.isArray(answer?.problems)) {
    throw new DatasheetRejected(typeof answer.detail === "string" ? answer.detail : "the gateway refused the datasheet", answer.problems);
  }
  if (!response.ok) {
    const detail = typeof answer?.detail === "string" ? answer.detail : JSON.stringify(answer?.detail ?? response.statusText);
    throw new Error(`the gateway refused the datasheet (HTTP ${response.status}): ${detail}`);
  }
  if (answer?.sha256 !== ours) throw new Error("The gateway computed another datasheet hash than this browser.");
  return ours;
}

// --- files this browser has listed, per provider (a second listing of one file asks first) -------

function listedKey({ chainId, market, provider }) {
  return `sterling.listed.v1:${chainId}:${String(market).toLowerCase()}:${String(provider).toLowerCase()}`;
}

/**
 * The listing this provider made of a file with this SHA-256 from this browser, if any.
 * @param {{chainId: number|string, market: string, provider: string}} where
 * @param {string} fileSha256  hex
 * @returns {{sha256: string, datasetId: string|null, at: number} | null}
 */
export function previousListing(where, fileSha256) {
  try {
    const entries = JSON.parse(localStorage.getItem(listedKey(where)) || "[]");
    return (Array.isArray(entries) && entries.find((e) => e && e.sha256 === fileSha256)) || null;
  } catch {
    return null; // unreadable or unavailable storage: no memory, no warning
  }
}

/**
 * Remember that this provider listed the file with this SHA-256 (after a successful listing).
 * @param {{chainId: number|string, market: string, provider: string}} where
 * @param {string} fileSha256  hex
 * @param {string|null} datasetId
 */
export function rememberListing(where, fileSha256, datasetId) {
  try {
    const key = listedKey(where);
    const entries = JSON.parse(localStorage.getItem(key) || "[]").filter((e) => e && e.sha256 !== fileSha256);
    entries.push({ sha256: fileSha256, datasetId, at: Date.now() });
    localStorage.setItem(key, JSON.stringify(entries.slice(-500)));
  } catch {
    /* storage full or unavailable: the next listing of this file will not be warned about */
  }
}
