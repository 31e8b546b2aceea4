// The provider's side of listing, before the chain call: CSV → canonical package → encrypted
// blob + wrapped data key, all in this browser (web/js/crypto/).
import { getAddress } from "ethers";
import { splitCsv } from "./crypto/csv.js";
import { encryptDatasetForListing, readCsvFile } from "./crypto/index.js";

/** The column names of a CSV file's header row. */
export async function readCsvHeader(file) {
  const head = await file.slice(0, 1 << 16).text();
  const rows = splitCsv(head.includes("\n") ? head.slice(0, head.indexOf("\n") + 1) : head);
  if (!rows.length || !rows[0].cells.length) throw new Error("The file has no header row.");
  return rows[0].cells.map((c) => c.trim());
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
