// The provider's side of listing, before the chain call: CSV → canonical package → encrypted
// blob + wrapped data key, all in this browser (web/js/crypto/), and the wrapped key's deposit
// with the key manager, signed by the provider.
import { getAddress, keccak256 } from "ethers";
import { postJSON } from "./api.js";
import { splitCsv } from "./crypto/csv.js";
import { encryptDatasetForListing, readCsvFile } from "./crypto/index.js";
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
