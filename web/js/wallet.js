// Accounts: an EIP-1193 wallet (MetaMask) when the browser has one; on a local development
// chain, the chain's development accounts, signed locally and sent through the gateway's
// JSON-RPC endpoint (which forwards reads and eth_sendRawTransaction only).
import { BrowserProvider, Contract, Interface, JsonRpcProvider, Wallet } from "ethers";
import { ENCLAVE_REGISTRY_ABI, JOB_MARKET_ABI, MODEL_MARKET_ABI } from "./abi.js";
import { getJSON } from "./api.js";
import { money, paymentUnit } from "./format.js";
import { datasetStatusName, epsilonFromUnits, erc20Abi, jobStatusName } from "./onchain.js";

const ERRORS = new Interface([...JOB_MARKET_ABI, ...ENCLAVE_REGISTRY_ABI, ...MODEL_MARKET_ABI].filter((item) => item.type === "error"));

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
      // No 250 ms answer cache: a local chain mines at once, and a cached "pending" nonce would
      // give the second of two quick transactions (approve, then createJob) the first one's nonce.
      cacheTimeout: -1,
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

const walletListeners = new Set();

/** Be told when the browser wallet's user changes account or chain (while it is the selected account). */
export function onWalletChange(listener) {
  walletListeners.add(listener);
  return () => walletListeners.delete(listener);
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
        await useGatewayChain(window.ethereum, cfg);
        return new BrowserProvider(window.ethereum).getSigner(); // eth_requestAccounts: the wallet asks its user
      }
      const account = cfg.dev_accounts[Number(choice.split(":")[1])];
      return new Wallet(account.private_key, await reader());
    })();
    signerPromise.catch(() => (signerPromise = null));
  }
  return signerPromise;
}

/**
 * Have the wallet on the gateway's chain: ask it to switch (EIP-3326), adding the chain first when
 * the wallet does not know it (error 4902, EIP-3085). A declined switch (4001) is said as such.
 */
// Our own switch request: the chainChanged it causes (during it, or soon after, as wallets differ)
// is no news to the page, which would otherwise render again under an action in progress.
let switching = false;
let switchedAt = 0;
const OWN_SWITCH_MS = 5000;

async function useGatewayChain(ethereum, cfg) {
  const wanted = Number(cfg.chain_id);
  const current = Number(await ethereum.request({ method: "eth_chainId" }));
  if (current === wanted) return;
  switching = true;
  try {
    await switchChain(ethereum, cfg, wanted, current);
  } finally {
    switching = false;
    switchedAt = Date.now();
  }
}

async function switchChain(ethereum, cfg, wanted, current) {
  const chainId = `0x${wanted.toString(16)}`;
  try {
    await ethereum.request({ method: "wallet_switchEthereumChain", params: [{ chainId }] });
  } catch (error) {
    if (error?.code === 4001) throw new Error(`Your wallet is on chain ${current}, and the switch to chain ${wanted} was declined in it.`);
    if (error?.code !== 4902) throw error;
    const rpcUrls = [new URL(cfg.rpc_path, location.origin).href];
    await ethereum.request({
      method: "wallet_addEthereumChain",
      params: [{ chainId, chainName: `Sterling (chain ${wanted})`, rpcUrls, nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 } }],
    });
    // Some wallets switch to a chain they add, others only add it: ask again (a no-op for the first).
    if (Number(await ethereum.request({ method: "eth_chainId" })) !== wanted) {
      await ethereum.request({ method: "wallet_switchEthereumChain", params: [{ chainId }] });
    }
  }
  const now = Number(await ethereum.request({ method: "eth_chainId" }));
  if (now !== wanted) throw new Error(`Your wallet is on chain ${now}; switch it to chain ${wanted}.`);
}

// A wallet's user may change account or chain at any time (EIP-1193 events): forget the signer,
// so the next action asks the wallet again, and tell the page.
if (window.ethereum?.on) {
  const changed = () => {
    if (selectedChoice() !== "injected") return;
    signerPromise = null;
    for (const l of walletListeners) l();
  };
  window.ethereum.on("accountsChanged", changed);
  window.ethereum.on("chainChanged", (chainId) => {
    const ours = switching || (config && Number(chainId) === Number(config.chain_id) && Date.now() - switchedAt < OWN_SWITCH_MS);
    if (!ours) changed();
  });
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

let domainPromise = null;

/**
 * The job market's EIP-712 domain, as the contract reports it (`eip712Domain()`): what the
 * statements it and the key manager verify are signed under (name, version, chain id, market).
 */
export function marketDomain() {
  if (!domainPromise) {
    domainPromise = (async () => {
      const [, name, version, chainId, verifyingContract] = await (await jobMarket()).eip712Domain();
      return { name, version, chainId, verifyingContract };
    })();
    domainPromise.catch(() => (domainPromise = null));
  }
  return domainPromise;
}

let limitsPromise = null;

/** The market's public limits, read once from the contract: {maxDatasetsPerJob, maxListEntries}. */
export function marketLimits() {
  if (!limitsPromise) {
    limitsPromise = (async () => {
      const market = await jobMarket();
      const [datasets, entries] = await Promise.all([market.MAX_DATASETS_PER_JOB(), market.MAX_LIST_ENTRIES()]);
      return { maxDatasetsPerJob: Number(datasets), maxListEntries: Number(entries) };
    })();
    limitsPromise.catch(() => (limitsPromise = null));
  }
  return limitsPromise;
}

/** The model market contract (serving, docs/inference.md), connected to the signer (write) or the reader. */
export async function modelMarket({ write = false } = {}) {
  const cfg = await loadConfig();
  if (!cfg.contracts.model_market) throw new Error("This deployment has no model market: it serves no models.");
  return new Contract(cfg.contracts.model_market, MODEL_MARKET_ABI, write ? await signer() : await reader());
}

/** The enclave registry contract (reads). */
export async function enclaveRegistry() {
  const cfg = await loadConfig();
  return new Contract(cfg.contracts.enclave_registry, ENCLAVE_REGISTRY_ABI, await reader());
}

/** The market's ERC-20 payment token (token mode only), connected to the signer (write) or the reader. */
export async function paymentToken({ write = false } = {}) {
  const unit = paymentUnit();
  if (!unit.token) throw new Error("This market is paid in the chain's native currency, not a token.");
  return new Contract(unit.token, erc20Abi(), write ? await signer() : await reader());
}

/**
 * The custom error a failed call or transaction reverted with, or null. ethers decodes it for
 * contract calls; a transaction refused while its gas is estimated carries only the raw revert
 * data, decoded here against the contracts' errors.
 */
export function revertOf(error) {
  const revert = error?.revert || error?.info?.error?.revert;
  if (revert?.name) return revert;
  const data = [error?.data, error?.info?.error?.data, error?.error?.data].find((d) => typeof d === "string" && /^0x[0-9a-fA-F]{8}/.test(d));
  if (!data) return null;
  try {
    const parsed = ERRORS.parseError(data);
    return parsed ? { name: parsed.name, args: [...parsed.args] } : null;
  } catch {
    return null;
  }
}

// What the user should understand from the contracts' errors that a person can cause and fix.
const EXPLAIN = {
  JobMarketPriceAboveLimit: ([required, max]) =>
    `The price went up before your transaction was mined: this job now costs ${money(required)}, more than the ${money(max)} you agreed to pay. Nothing was charged; check the new total and create the job again.`,
  JobMarketDatasetUnavailable: ([id, status]) => `Dataset #${id} is ${datasetStatusName(status) || "unavailable"} and accepts no new jobs.`,
  JobMarketDatasetExpired: ([id]) => `Dataset #${id} has expired and accepts no new jobs.`,
  JobMarketConsumerNotAllowed: ([id]) => `Dataset #${id} is offered only to an allow-list of buyers, and your account is not on it.`,
  JobMarketModelNotAllowed: ([id]) => `Dataset #${id} accepts only model specs its provider approved, and this one is not among them.`,
  JobMarketBudgetExhausted: ([id, requested, remaining]) => `Dataset #${id} has only ${epsilonFromUnits(remaining)} ε left, less than the ${epsilonFromUnits(requested)} ε asked for.`,
  JobMarketInvalidJobStatus: ([id, status]) => `Job #${id} is ${jobStatusName(status) || "no longer open"} now and can no longer be changed this way.`,
  JobMarketNotConsumer: ([id]) => `Only the consumer who created job #${id} can do this.`,
  EnforcedPause: () => "The market is in an emergency stop: no new listings, jobs, claims or settlements until governance resumes it.",
  DatasetRegistryNotProvider: ([id]) => `Only the provider of dataset #${id} can change it.`,
  DatasetRegistryDelisted: ([id]) => `Dataset #${id} is delisted and can no longer be changed.`,
  DatasetRegistryInvalidTerms: ([problem]) => `The terms were refused: ${TERMS_PROBLEMS[Number(problem)] || "they are invalid"}.`,
  ModelMarketInvalidStatus: ([id]) => `Model #${id} is not active now: it takes no deposits and answers no queries.`,
  ModelMarketModelExpired: ([id]) => `Model #${id}'s listing has expired: it takes no new deposits.`,
  ModelMarketClientNotAllowed: ([id]) => `Model #${id} is offered only to an allow-list of clients, and your account is not on it.`,
  ModelMarketInvalidDeposit: () => "A deposit must be a positive amount.",
  ModelMarketNotOwner: ([id]) => `Only the owner of model #${id} can do this.`,
  PullPaymentsNothingToWithdraw: () => "There is nothing to withdraw from the model market.",
  ModelMarketChannelBoundElsewhere: ([id, , bound]) =>
    `Your channel on model #${id} is bound to inference enclave ${bound}, which still holds unspent credit: spend it there, or request a close and reclaim it, before buying credit for another enclave.`,
  ModelMarketWrongEnclave: ([enclave, bound]) => `The voucher names enclave ${enclave}, but the channel is bound to ${bound}.`,
  ModelMarketEnclaveNotActive: ([enclave]) => `${enclave} is not an active inference enclave in the registry.`,
  DatasetRegistryInvalidTopUp: () => "A top-up must add a positive amount of ε that keeps the budget within its limit.",
};
// IDatasetRegistry.TermsProblem, in order.
const TERMS_PROBLEMS = [
  "the content hash is zero",
  "the ε per job must be positive",
  "the ε per job cannot exceed the total budget",
  "δ must be positive",
  "the expiry date has passed (set a new one, or none)",
  "the total budget cannot go below the ε already spent and reserved",
  "the price is too high",
];

/**
 * A readable message for a failed transaction: an explanation of the contract's custom error
 * when it is one a user can act on, else the error with its arguments as ethers decoded it,
 * else the wallet's or node's message.
 */
export function describeTxError(error) {
  const revert = revertOf(error);
  if (revert) {
    const args = [...(revert.args || [])];
    const raw = `${revert.name}(${args.map(String).join(", ")})`;
    return EXPLAIN[revert.name] ? `${EXPLAIN[revert.name](args)} [${raw}]` : raw;
  }
  if (error?.code === "ACTION_REJECTED") {
    // ethers names what was declined: a transaction, or a signature (a key deposit, a voucher).
    return error.action && error.action !== "sendTransaction"
      ? "You declined the signature in your wallet; nothing was sent."
      : "You rejected the transaction in your wallet.";
  }
  if (error?.code === "INSUFFICIENT_FUNDS") return `The account has too little ${paymentUnit().token ? "ETH for gas" : "ETH"} for this transaction.`;
  return error?.shortMessage || error?.message || String(error);
}
