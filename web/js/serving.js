// Served models (docs/inference.md) from the browser: the model market and the registry read
// ON-CHAIN through the relay, the client's running voucher totals per channel, buying credit,
// and one encrypted, paid, verified query. The byte formats are in crypto/inference.js.
import { getAddress, ZeroAddress } from "ethers";
import { ApiError, getJSON } from "./api.js";
import { fromHex, toHex } from "./crypto/bytes.js";
import { buildRequest, interpretOutputs, openVerifiedResponse } from "./crypto/inference.js";
import { roleNumber } from "./onchain.js";
import * as wallet from "./wallet.js";

/** How long a registry check of an inference enclave is trusted (marketplace/serving.py ENCLAVE_RECHECK_SECONDS). */
export const ENCLAVE_RECHECK_MS = 60_000;

let policiesPromise = null;

/** The model market's output-policy numbers, read once from the contract: {label, topK, probabilities}. */
export function outputPolicies() {
  if (!policiesPromise) {
    policiesPromise = (async () => {
      const market = await wallet.modelMarket();
      const [label, topK, probabilities] = await Promise.all([market.OUTPUT_LABEL(), market.OUTPUT_TOP_K(), market.OUTPUT_PROBABILITIES()]);
      return { label: Number(label), topK: Number(topK), probabilities: Number(probabilities) };
    })();
    policiesPromise.catch(() => (policiesPromise = null));
  }
  return policiesPromise;
}

/** A listing's output policy in words, from the API's name and parameter. */
export function policyText(policy, param) {
  if (policy === "label") return "label (the most likely class)";
  if (policy === "top_k") return `top ${param} classes, most likely first`;
  if (policy === "probabilities") return `probabilities, rounded to ${param} decimal${Number(param) === 1 ? "" : "s"}`;
  return String(policy);
}

const checked = new Map();

/**
 * An inference enclave as the REGISTRY shows it (never as the gateway says): active in the
 * inference role, its encryption key and measurement. Re-checked after ENCLAVE_RECHECK_MS.
 * @param {string} signer  the enclave's signer address (the gateway names which one serves a model)
 * @returns {Promise<{signer: string, encryptionKey: Uint8Array, measurement: string, operator: string}>}
 */
export async function servingEnclave(signer, { refresh = false } = {}) {
  const address = getAddress(signer);
  const hit = checked.get(address);
  if (!refresh && hit && Date.now() - hit.at <= ENCLAVE_RECHECK_MS) return hit.enclave;
  const registry = await wallet.enclaveRegistry();
  if (!(await registry.isActive(address, roleNumber("inference")))) {
    checked.delete(address);
    throw new Error(`${address} is not an active inference enclave in the registry (unregistered, revoked, expired, or its measurement is not approved): nothing was sent.`);
  }
  const record = await registry.enclaveOf(address);
  const enclave = { signer: address, encryptionKey: fromHex(record.encryptionKey, 32), measurement: record.measurement, operator: record.operator };
  checked.set(address, { at: Date.now(), enclave });
  return enclave;
}

/** A listing as the CHAIN holds it (`modelOf`): what a request pays and a receipt must name. */
export async function listingOnChain(modelId) {
  const info = await (await wallet.modelMarket()).modelOf(BigInt(modelId));
  return {
    owner: info.owner,
    status: Number(info.status),
    weightsHash: info.terms.weightsHash,
    pricePerQuery: BigInt(info.terms.pricePerQuery),
    outputPolicy: Number(info.terms.outputPolicy),
    outputParam: Number(info.terms.outputParam),
    queryCap: BigInt(info.terms.queryCap),
  };
}

/** A client's channel on a model, from the chain (`channelOf`). */
export async function channelOnChain(modelId, client) {
  const c = await (await wallet.modelMarket()).channelOf(BigInt(modelId), client);
  return {
    deposited: BigInt(c.deposited),
    redeemed: BigInt(c.redeemed),
    redeemedQueries: BigInt(c.redeemedQueries),
    closeRequestedAt: Number(c.closeRequestedAt),
    balance: BigInt(c.deposited) - BigInt(c.redeemed),
    // The inference enclave the channel is bound to (set by the first deposit); null when unbound
    // or when the market binds no channel.
    enclave: c.enclave && c.enclave !== ZeroAddress ? getAddress(c.enclave) : null,
  };
}

// --- the client's voucher book, kept in localStorage per (chain, model market, model, client) ---

async function bookKey(modelId, client) {
  const cfg = await wallet.loadConfig();
  return `sterling.voucher.${cfg.chain_id}.${String(cfg.contracts.model_market).toLowerCase()}.${modelId}.${String(client).toLowerCase()}`;
}

/** The last voucher this browser signed on a channel: {amount, queries, enclave, at} or null. */
export async function lastVoucher(modelId, client) {
  try {
    const stored = JSON.parse(localStorage.getItem(await bookKey(modelId, client)) || "null");
    return stored ? { amount: BigInt(stored.amount), queries: BigInt(stored.queries), enclave: stored.enclave, at: stored.at } : null;
  } catch {
    return null;
  }
}

async function remember(modelId, client, voucher) {
  const value = { amount: String(voucher.amount), queries: String(voucher.queries), enclave: voucher.enclave, at: Date.now() };
  localStorage.setItem(await bookKey(modelId, client), JSON.stringify(value));
}

async function forget(modelId, client, previous) {
  const key = await bookKey(modelId, client);
  if (previous) localStorage.setItem(key, JSON.stringify({ ...previous, amount: String(previous.amount), queries: String(previous.queries) }));
  else localStorage.removeItem(key);
}

/**
 * The channel's running totals for the next voucher to `enclave`: this browser's last voucher to
 * that enclave, raised to at least the chain's redeemed totals (marketplace/inference.py
 * `VoucherBook.sync`). A voucher made out to another enclave (one that restarted) does not count:
 * a fresh enclave starts from the chain's totals.
 */
export async function channelTotals(modelId, client, enclave, channel = null) {
  const chain = channel || (await channelOnChain(modelId, client));
  const last = await lastVoucher(modelId, client);
  const same = last && last.enclave && getAddress(last.enclave) === getAddress(enclave);
  return {
    amount: same && last.amount > chain.redeemed ? last.amount : chain.redeemed,
    queries: same && last.queries > chain.redeemedQueries ? last.queries : chain.redeemedQueries,
  };
}

/**
 * Buy `amount` of credit on the caller's channel with `modelId` (approving the token first in a
 * token market). When the market binds a channel to its serving enclave
 * (`deposit(modelId, amount, enclave)`), `enclave` is passed.
 * @param {(step: string) => void} [onStep]
 */
export async function deposit(modelId, amount, enclave, onStep = () => {}) {
  const market = await wallet.modelMarket({ write: true });
  const token = await market.paymentToken();
  const native = token === ZeroAddress;
  if (!native) {
    const erc20 = await wallet.paymentToken({ write: true });
    const me = await (await wallet.signer()).getAddress();
    if (BigInt(await erc20.allowance(me, await market.getAddress())) < amount) {
      onStep("approve");
      await (await erc20.approve(await market.getAddress(), amount)).wait();
    }
  }
  onStep("deposit");
  const inputs = market.interface.getFunction("deposit").inputs;
  const args = inputs.length >= 3 ? [BigInt(modelId), amount, getAddress(enclave)] : [BigInt(modelId), amount];
  const tx = await market.deposit(...args, { value: native ? amount : 0n });
  await tx.wait();
  return tx;
}

/** Parse one row typed as comma-separated numbers; throws with the position of a bad value. */
export function parseRow(text) {
  const cells = String(text || "").split(/[,\s]+/).filter((c) => c.trim() !== "");
  if (!cells.length) throw new RangeError("Enter one row: numbers separated by commas.");
  return cells.map((cell, i) => {
    const value = Number(cell);
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(cell.trim()) || !Number.isFinite(value)) {
      throw new RangeError(`Value ${i + 1} ("${cell}") is not a number.`);
    }
    return value;
  });
}

/** The channel's deposit does not cover the next voucher: buy more credit first. */
export class InsufficientCredit extends Error {
  constructor(needed, deposited) {
    super("This row costs more than your channel's credit: deposit more first.");
    this.name = "InsufficientCredit";
    this.needed = needed;
    this.deposited = deposited;
  }
}

/** An enclave's refusal of a request (HTTP 4xx with an `error` name): nothing was charged. */
export class InferenceRefused extends Error {
  constructor(status, error, message) {
    super(message);
    this.name = "InferenceRefused";
    this.status = status;
    this.error = error;
  }
}

/**
 * Ask model `model` (the API's listing, with `serving_enclave`) about one row, paying with a
 * voucher signed by the selected account; returns the verified, decoded answer.
 * @param {object} model  GET /api/models/{id}
 * @param {number[]} row
 * @param {(step: string) => void} [onStep]  "registry", "sign", "encrypt", "send", "verify", "decrypt"
 */
export async function ask(model, row, onStep = () => {}) {
  const cfg = await wallet.loadConfig();
  const signer = await wallet.signer();
  const me = await signer.getAddress();
  if (!model.serving_enclave) throw new Error("No inference enclave serves this model through this gateway.");
  onStep("registry");
  const [enclave, listing, channel, policies] = await Promise.all([
    servingEnclave(model.serving_enclave),
    listingOnChain(model.model_id),
    channelOnChain(model.model_id, me),
    outputPolicies(),
  ]);
  if (channel.enclave && channel.enclave !== enclave.signer) {
    throw new Error(`Your channel is bound to inference enclave ${channel.enclave}, but ${enclave.signer} serves this model here: its vouchers could not be redeemed. Spend or reclaim the channel's credit first.`);
  }
  const totals = await channelTotals(model.model_id, me, enclave.signer, channel);
  const previous = await lastVoucher(model.model_id, me);
  if (totals.amount + listing.pricePerQuery > channel.deposited) {
    throw new InsufficientCredit(totals.amount + listing.pricePerQuery, channel.deposited);
  }
  if (totals.queries + 1n > listing.queryCap) {
    throw new Error(`Your channel has used the model's query cap (${listing.queryCap} rows per client).`);
  }
  onStep("sign");
  const pending = await buildRequest({
    signer, client: me, chainId: cfg.chain_id, modelMarket: cfg.contracts.model_market, modelId: model.model_id,
    enclave: enclave.signer, enclaveKey: enclave.encryptionKey, rows: [row], totals, pricePerQuery: listing.pricePerQuery,
  });
  await remember(model.model_id, me, pending.voucher);
  onStep("send");
  let reply;
  try {
    reply = await postEnvelope(pending.envelope);
  } catch (error) {
    if (error instanceof InferenceRefused) await forget(model.model_id, me, previous); // refused: nothing charged, the voucher is taken back
    throw error;
  }
  onStep("verify");
  const { outputs, signer: receiptSigner, responseHash } = await openVerifiedResponse(pending, fromHex(reply.response), reply.receipt_signature, {
    measurement: enclave.measurement,
    weightsHash: listing.weightsHash,
  });
  onStep("decrypt");
  if (outputs.policy !== listing.outputPolicy || outputs.param !== listing.outputParam) {
    throw new Error(`The answer follows output policy ${outputs.policy}/${outputs.param}, not the listing's ${listing.outputPolicy}/${listing.outputParam}.`);
  }
  return {
    answer: interpretOutputs(outputs, policies),
    voucher: pending.voucher,
    enclave,
    receiptSigner,
    requestHash: "0x" + toHex(pending.requestHash),
    responseHash: "0x" + toHex(responseHash),
    requestId: reply.request_id,
  };
}

/** Refusals that say nothing against the request (as marketplace.serving.NOT_SERVING_NOW). */
const NOT_SERVING_NOW = new Set(["ModelUnavailable", "RateLimited", "ServiceBusy"]);

async function postEnvelope(envelope) {
  const response = await fetch("/api/inference", {
    method: "POST",
    headers: { "content-type": "application/octet-stream", accept: "application/json" },
    body: envelope,
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  if (response.ok) return body;
  const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
  // A model not served or a busy host says nothing against the request: try again later.
  if (body && body.error && !NOT_SERVING_NOW.has(body.error)) throw new InferenceRefused(response.status, body.error, `${body.error}: ${detail}`);
  const retry = response.headers.get("retry-after");
  throw new ApiError(response.status, retry ? `${detail} (retry in ${retry} s)` : detail);
}

/**
 * Usage of a model from its VoucherRedeemed events (read through the relay): per client the
 * latest redeemed totals, and the sums paid and taken as operator fees.
 */
export async function usage(modelId) {
  const cfg = await wallet.loadConfig();
  const market = await wallet.modelMarket();
  const events = await market.queryFilter(market.filters.VoucherRedeemed(BigInt(modelId)), Number(cfg.deployment_block || 0));
  const clients = new Map();
  let paid = 0n;
  let fees = 0n;
  for (const e of events) {
    const { client, amount, queries } = e.args;
    clients.set(client, { client, amount: BigInt(amount), queries: BigInt(queries), block: e.blockNumber });
    paid += BigInt(e.args.paid);
    fees += BigInt(e.args.fee);
  }
  const perClient = [...clients.values()];
  return {
    redemptions: events.length,
    clients: perClient,
    queries: perClient.reduce((n, c) => n + c.queries, 0n),
    paid,
    fees,
    ownerShare: paid - fees,
  };
}

/** The listings of the model market (the gateway reads them from the contract), newest first. */
export function models() {
  return getJSON("/api/models");
}
