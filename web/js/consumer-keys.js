// The consumer's X25519 keys: made in this browser, kept in localStorage (and in a file the
// user saves), used to open the sealed model. The private key never leaves the browser.
import { fromHex, generateKeyPair, openSealedModel, publicKeyOf, sha256, toHex } from "./crypto/index.js";

const PREFIX = "sterling.consumer-key.";

/** A fresh key pair for one job. */
export async function newConsumerKey() {
  return generateKeyPair();
}

/** Keep a private key in this browser under its public key (before its job exists). */
export function rememberKey(key) {
  localStorage.setItem(`${PREFIX}${toHex(key.publicKey)}`, toHex(key.privateKey));
}

/** Keep a job's private key in this browser, under the job id and the public key. */
export function rememberJobKey(jobId, key) {
  localStorage.setItem(`${PREFIX}job.${jobId}`, toHex(key.privateKey));
  localStorage.setItem(`${PREFIX}${toHex(key.publicKey)}`, toHex(key.privateKey));
}

/** The private key this browser holds for ``job``, or null. */
export function consumerKeyFor(job) {
  const byKey = job.consumer_key ? localStorage.getItem(PREFIX + String(job.consumer_key).replace(/^0x/, "").toLowerCase()) : null;
  const hex = byKey || localStorage.getItem(`${PREFIX}job.${job.id}`);
  return hex ? fromHex(hex, 32) : null;
}

/** Read a saved key file, check it belongs to ``job``, and remember it. */
export async function importKeyFile(file, job) {
  let doc;
  try {
    doc = JSON.parse(await file.text());
  } catch {
    throw new Error("The key file is not JSON.");
  }
  const privateKey = fromHex(String(doc.private_key || ""), 32);
  const publicKey = await publicKeyOf(privateKey);
  if (job.consumer_key && toHex(publicKey) !== String(job.consumer_key).replace(/^0x/, "").toLowerCase()) {
    throw new Error(`This key file is not for job #${job.id}: its public key differs from the job's.`);
  }
  rememberJobKey(job.id, { privateKey, publicKey });
  return privateKey;
}

/**
 * Open a job's sealed model and check it against the receipt's model hash.
 * @returns {Promise<Uint8Array>} the safetensors weights
 */
export async function openModel(sealed, privateKey, { chainId, market, jobId, modelHash }) {
  const weights = await openSealedModel(sealed, privateKey, { chainId: BigInt(chainId), market: fromHex(market, 20), jobId: BigInt(jobId) });
  const digest = toHex(await sha256(weights));
  if (digest !== String(modelHash).replace(/^0x/, "").toLowerCase()) {
    throw new Error("The decrypted model does not match the receipt's model hash.");
  }
  return weights;
}
