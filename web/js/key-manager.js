// The key manager enclave as the browser sees it: its X25519 key as the on-chain registry records
// it (what a test set, a model or a job's result is sealed to), and whether a job's result was
// sealed to it rather than to its consumer (docs/competitions.md, docs/inference.md).
import { fromHex } from "./crypto/bytes.js";
import { roleNumber } from "./onchain.js";
import * as wallet from "./wallet.js";

const hex = (value) => String(value || "").toLowerCase().replace(/^0x/, "");

/**
 * The key manager's X25519 key as recorded on-chain by attestation — not merely what the gateway
 * says: the signer the gateway names must be an active key manager, and its registered key the
 * one the gateway serves.
 * @returns {Promise<Uint8Array>} 32 bytes
 * @throws {Error} no key manager, not active on-chain, or the gateway's key is not the registered one
 */
export async function attestedKeyManagerKey() {
  const cfg = await wallet.loadConfig();
  if (!cfg.key_manager) throw new Error("This gateway names no key manager; nothing can be sealed to it.");
  const registry = await wallet.enclaveRegistry();
  const signer = cfg.key_manager.signer;
  const [active, enclave] = await Promise.all([registry.isActive(signer, roleNumber("key_manager")), registry.enclaveOf(signer)]);
  if (!active) throw new Error(`The key manager ${signer} is not an active, attested enclave on-chain; refusing to hand it a key.`);
  const onChain = hex(enclave.encryptionKey);
  if (onChain !== hex(cfg.key_manager.encryption_key)) {
    throw new Error("The gateway's key manager key differs from the attested key on-chain; refusing to continue.");
  }
  return fromHex(onChain, 32);
}

/**
 * Whether ``job`` (as the gateway serves it) has its model sealed to the key manager ``cfg``
 * names: its consumer key is the key manager's. Nobody, its consumer included, can open such a
 * model; the key manager admits it to a competition or takes it for serving. Display only: the
 * key manager itself checks the job's on-chain consumer key before it admits anything.
 */
export function sealedToKeyManager(job, cfg) {
  return Boolean(cfg.key_manager && job.consumer_key && hex(job.consumer_key) === hex(cfg.key_manager.encryption_key));
}
