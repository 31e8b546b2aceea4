// Accounts: an EIP-1193 wallet (MetaMask) when the browser has one; on a local development
// chain, the chain's development accounts, signed locally and sent through the gateway's
// JSON-RPC endpoint (which forwards reads and eth_sendRawTransaction only).
import { BrowserProvider, Contract, JsonRpcProvider, Wallet } from "ethers";
import { ENCLAVE_REGISTRY_ABI, JOB_MARKET_ABI } from "./abi.js";
import { getJSON } from "./api.js";

const STORAGE_KEY = "sterling.account";
let config = null;
let readProvider = null;
let signerPromise = null;
const changeListeners = new Set();

/** The gateway's /api/config, fetched once. */
export async function loadConfig() {
  if (!config) config = await getJSON("/api/config");
  return config;
}

/** A provider for reads through /api/rpc. */
export async function reader() {
  if (!readProvider) {
    const cfg = await loadConfig();
    readProvider = new JsonRpcProvider(new URL(cfg.rpc_path, location.origin).href, Number(cfg.chain_id), {
      staticNetwork: true,
      batchMaxCount: 1,
      pollingInterval: 500,
    });
  }
  return readProvider;
}

/** The choices for the account selector: "injected" and/or dev accounts. */
export async function accountChoices() {
  const cfg = await loadConfig();
  const choices = [];
  if (window.ethereum) choices.push({ value: "injected", label: "Browser wallet (EIP-1193)" });
  cfg.dev_accounts.forEach((a, i) => choices.push({ value: `dev:${i}`, label: `Dev account ${i} · ${a.address.slice(0, 8)}…` }));
  return choices;
}

/** The selected account choice (persisted in localStorage). */
export function selectedChoice() {
  return localStorage.getItem(STORAGE_KEY) || "";
}

/** Select an account choice and notify listeners. */
export function select(choice) {
  localStorage.setItem(STORAGE_KEY, choice);
  signerPromise = null;
  for (const l of changeListeners) l(choice);
}

/** Be told when the account changes. */
export function onAccountChange(listener) {
  changeListeners.add(listener);
  return () => changeListeners.delete(listener);
}

/** The signer of the selected account; throws a clear error when there is none. */
export async function signer() {
  if (!signerPromise) {
    signerPromise = (async () => {
      const cfg = await loadConfig();
      let choice = selectedChoice();
      const choices = await accountChoices();
      if (!choices.some((c) => c.value === choice)) choice = choices[0]?.value || "";
      if (!choice) throw new Error("No account: install an EIP-1193 wallet such as MetaMask, or run a local chain with development accounts.");
      if (choice === "injected") {
        const provider = new BrowserProvider(window.ethereum);
        const network = await provider.getNetwork();
        if (Number(network.chainId) !== Number(cfg.chain_id)) {
          throw new Error(`Your wallet is on chain ${network.chainId}; switch it to chain ${cfg.chain_id}.`);
        }
        return provider.getSigner();
      }
      const account = cfg.dev_accounts[Number(choice.split(":")[1])];
      return new Wallet(account.private_key, await reader());
    })();
    signerPromise.catch(() => (signerPromise = null));
  }
  return signerPromise;
}

/** The selected account's address, or null. */
export async function address() {
  try {
    return await (await signer()).getAddress();
  } catch {
    return null;
  }
}

/** The job market contract, connected to the signer (write) or the reader. */
export async function jobMarket({ write = false } = {}) {
  const cfg = await loadConfig();
  return new Contract(cfg.contracts.job_market, JOB_MARKET_ABI, write ? await signer() : await reader());
}

/** The enclave registry contract (reads). */
export async function enclaveRegistry() {
  const cfg = await loadConfig();
  return new Contract(cfg.contracts.enclave_registry, ENCLAVE_REGISTRY_ABI, await reader());
}

/**
 * A readable message for a failed transaction: the contract's custom error with its arguments
 * when ethers could decode it, else the wallet's or node's message.
 */
export function describeTxError(error) {
  const revert = error?.revert || error?.info?.error?.revert;
  if (revert?.name) return `${revert.name}(${(revert.args || []).map(String).join(", ")})`;
  if (error?.code === "ACTION_REJECTED") return "You rejected the transaction in your wallet.";
  if (error?.code === "INSUFFICIENT_FUNDS") return "The account has too little ETH for this transaction.";
  return error?.shortMessage || error?.message || String(error);
}
