// Competitions from the browser (docs/competitions.md), step for step what marketplace/competing.py
// does: the organizer's test set and the participant's model are encrypted HERE
// (crypto/competition.js) to the key manager's key as the on-chain registry holds it, uploaded as
// ciphertext, their keys deposited with a signed EIP-712 Deposit under the competition market's
// domain, and the transactions (createCompetition, submit, close, buy) signed by the wallet and
// relayed by /api/rpc. A bought model is opened here with a key made here; its ciphertext and
// weights hashes are read from the chain, not taken from the gateway. A job's model sealed to the
// key manager is entered without anyone holding its weights: the key manager admits it from the
// job's sealed result (marketplace/competing.py `submit_job_model`).
import { Contract, getAddress, Interface } from "ethers";
import { COMPETITION_MARKET_ABI } from "./abi.js";
import { ApiError, getBytes, getJSON, postJSON, uploadBlob } from "./api.js";
import { fromHex, sha256, toHex } from "./crypto/bytes.js";
import { openPurchasedModel, readWeights, sealSubmission, sealTestSet } from "./crypto/competition.js";
import { readCsvFile } from "./crypto/csv.js";
import { generateKeyPair, publicKeyOf } from "./crypto/hpke.js";
import { canonicalJson } from "./crypto/package.js";
import { money, paymentUnit } from "./format.js";
import { attestedKeyManagerKey, sealedToKeyManager } from "./key-manager.js";
import { signDeposit } from "./listing-flow.js";
import { jobStatusName } from "./onchain.js";
import * as wallet from "./wallet.js";

export { attestedKeyManagerKey };

const ERRORS = new Interface(COMPETITION_MARKET_ABI.filter((item) => item.type === "error"));
const PURCHASE_KEY_PREFIX = "sterling.purchase-key.";

/** A refusal by the key manager (rules, window, signature) or a check in this page: shown as is. */
export class CompetitionRefused extends Error {
  constructor(message) {
    super(message);
    this.name = "CompetitionRefused";
  }
}

/** The competition market contract, connected to the signer (write) or the reader. */
export async function competitionMarket({ write = false } = {}) {
  const cfg = await wallet.loadConfig();
  if (!cfg.contracts.competitions) throw new Error("This deployment has no competition market: it runs no competitions.");
  return new Contract(cfg.contracts.competitions, COMPETITION_MARKET_ABI, write ? await wallet.signer() : await wallet.reader());
}

let domainPromise = null;

/** The competition market's EIP-712 domain as the contract reports it: deposits and admissions are signed under it. */
export function competitionsDomain() {
  if (!domainPromise) {
    domainPromise = (async () => {
      const [, name, version, chainId, verifyingContract] = await (await competitionMarket()).eip712Domain();
      return { name, version, chainId, verifyingContract };
    })();
    domainPromise.catch(() => (domainPromise = null));
  }
  return domainPromise;
}

let constantsPromise = null;
const GROUPS = { METRIC: "metrics", ARCH: "architectures", PURCHASE: "policies" };

/**
 * The market's public constants, read from the contract (none is copied here): metric numbers,
 * architecture bits and purchase policies by the names the API gives them ("accuracy", "mlp",
 * "organizer", …), and the largest public split.
 * @returns {Promise<{metrics: Record<string, number>, architectures: Record<string, number>, policies: Record<string, number>, maxPublicSplitBps: number}>}
 */
export function marketConstants() {
  if (!constantsPromise) {
    constantsPromise = (async () => {
      const market = await competitionMarket();
      const getters = COMPETITION_MARKET_ABI.filter(
        (item) => item.type === "function" && item.stateMutability === "view" && item.inputs.length === 0 && /^(METRIC|ARCH|PURCHASE)_[A-Z0-9_]+$/.test(item.name),
      );
      const [values, maxSplit] = await Promise.all([Promise.all(getters.map((g) => market.getFunction(g.name)())), market.MAX_PUBLIC_SPLIT_BPS()]);
      const out = { metrics: {}, architectures: {}, policies: {}, maxPublicSplitBps: Number(maxSplit) };
      getters.forEach((g, i) => {
        const [prefix, ...rest] = g.name.split("_");
        out[GROUPS[prefix]][rest.join("_").toLowerCase()] = Number(values[i]);
      });
      return out;
    })();
    constantsPromise.catch(() => (constantsPromise = null));
  }
  return constantsPromise;
}

/**
 * The scale of on-chain scores (the contract holds them as integers in 1/score_scale metric
 * units), from /api/config like the ε and δ scales.
 * @throws {Error} the gateway does not serve it
 */
export async function scoreScale() {
  const scale = Number((await wallet.loadConfig()).score_scale);
  if (!Number.isSafeInteger(scale) || scale <= 0) {
    throw new Error("This gateway does not say how the competition market scales scores (score_scale in /api/config): update the gateway to create competitions.");
  }
  return scale;
}

/** The chain's clock: the latest block's timestamp (what the contract calls now). */
export async function chainNow() {
  return Number((await (await wallet.reader()).getBlock("latest")).timestamp);
}

/** The canonical bytes of a rules document (competing.py `Rules.to_bytes`), whose SHA-256 is the competition's rulesHash. */
export function rulesBytes({ title, description = "", training_data = "", training_datasets = [] }) {
  return new TextEncoder().encode(canonicalJson({ version: 1, title, description, training_data, training_datasets }));
}

/**
 * A competition's rules document from the blob store, checked against its on-chain rulesHash.
 * @returns {Promise<object|null>} null when the gateway does not hold it
 * @throws {CompetitionRefused} the document does not match the hash
 */
export async function rulesOf(competition) {
  const hash = String(competition.rules_hash).replace(/^0x/, "").toLowerCase();
  let raw;
  try {
    raw = await getBytes(`/api/blobs/${hash}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
  if (toHex(await sha256(raw)) !== hash) throw new CompetitionRefused("The stored rules do not match the competition's rules hash.");
  return JSON.parse(new TextDecoder().decode(raw));
}

/** GET /api/competitions/{id}. */
export function competition(id) {
  return getJSON(`/api/competitions/${Number(id)}`);
}

/**
 * Who may close now, and why not otherwise (ICompetitionMarket.close's requirements).
 * @returns {{allowed: boolean, reason: string}}
 */
export function closeRule(c, me) {
  const organizer = Boolean(me && me.toLowerCase() === String(c.organizer).toLowerCase());
  if (c.phase === "closed") return { allowed: false, reason: "The competition is closed." };
  if (c.phase === "upcoming" || c.phase === "submissions") return { allowed: false, reason: "Submissions are still open: it can be closed once its window has ended." };
  if (c.phase === "closable") return { allowed: true, reason: "The scoring period is over: anyone may close it." };
  if (!organizer) return { allowed: false, reason: "Until the scoring period ends only the organizer may close it; after that, anyone." };
  if (c.private_scored < c.submission_count) {
    return { allowed: false, reason: `The evaluator has privately scored ${c.private_scored} of ${c.submission_count} entries; you may close once every entry is scored.` };
  }
  return { allowed: true, reason: "Every entry has its private score: you may close it." };
}

/** Whether `me` may buy entries of a closed competition under its purchase policy. */
export function mayBuy(c, me) {
  if (!me || c.phase !== "closed" || c.purchase_policy === "none") return false;
  return c.purchase_policy === "anyone" || me.toLowerCase() === String(c.organizer).toLowerCase();
}

/**
 * Seal a test set, store it with its schema and the rules, deposit its key and create the competition.
 * @param {{testSet: File, labelColumn?: string, rules: object, terms: object}} input
 *   terms: {prize, metric, publicSplitBps, ladderStep, windowSeconds, scoringPeriod, submissionCap, maxParameters, architectures, purchasePolicy}
 * @param {{onStep: (name: string) => void, onProgress: (done: number, total: number) => void}} ui
 * @returns {Promise<{competitionId: string, txHash: string, rows: number}>}
 */
export async function openCompetition({ testSet, labelColumn, rules, terms }, { onStep, onProgress }) {
  const cfg = await wallet.loadConfig();
  const signer = await wallet.signer();
  const organizer = getAddress(await signer.getAddress());
  const [kmKey, market] = await Promise.all([attestedKeyManagerKey(), competitionMarket({ write: true })]);

  onStep("seal");
  const csv = /\.csv$/i.test(testSet.name || "") || testSet.type === "text/csv";
  const dataset = csv ? await readCsvFile(testSet, { labelColumn }) : testSet;
  const sealed = await sealTestSet(dataset, { kmPublicKey: kmKey, chainId: BigInt(cfg.chain_id), competitions: cfg.contracts.competitions, onProgress });

  onStep("upload");
  const uploaded = await uploadBlob("/api/blobs", sealed.ciphertext, { sha256: sealed.contentHash, onProgress });
  if (uploaded.sha256 !== sealed.contentHash) throw new CompetitionRefused("The gateway stored the test set under another hash.");

  onStep("documents");
  const schema = await postJSON("/api/schemas", sealed.schema);
  if (schema.sha256 !== sealed.schemaHash) throw new CompetitionRefused("The gateway computed another schema hash.");
  const rulesHash = toHex(await sha256(rulesBytes(rules)));
  const published = await postJSON("/api/competition-rules", { version: 1, ...rules });
  if (published.sha256 !== rulesHash) throw new CompetitionRefused("The gateway stored other rules than the ones written here.");

  onStep("deposit");
  const signature = await signDeposit(signer, { domain: await competitionsDomain(), contentHash: sealed.contentHash, wrappedKey: sealed.wrappedKey, keyManager: cfg.key_manager.signer });
  const deposit = await keyManager("/api/key-manager/test-sets", { content_hash: sealed.contentHash, wrapped_key: toHex(sealed.wrappedKey), organizer, signature }, "test set");
  if (String(deposit.schema_hash).replace(/^0x/, "") !== sealed.schemaHash || deposit.rows !== sealed.rows) {
    throw new CompetitionRefused("The key manager read another schema or row count from the test set than the one sealed here.");
  }

  const now = await chainNow();
  const struct = {
    testSetHash: "0x" + sealed.contentHash,
    schemaHash: "0x" + sealed.schemaHash,
    rulesHash: "0x" + rulesHash,
    prize: terms.prize,
    metric: terms.metric,
    publicSplitBps: terms.publicSplitBps,
    ladderStep: terms.ladderStep,
    opensAt: BigInt(now),
    closesAt: BigInt(now + terms.windowSeconds),
    scoringPeriod: BigInt(terms.scoringPeriod),
    submissionCap: terms.submissionCap,
    maxParameters: terms.maxParameters,
    architectures: terms.architectures,
    purchasePolicy: terms.purchasePolicy,
  };
  let tx;
  if (paymentUnit().token) {
    onStep("approve");
    await approve(market, organizer, terms.prize);
    onStep("create");
    tx = await market.createCompetition(struct);
  } else {
    onStep("create");
    tx = await market.createCompetition(struct, { value: terms.prize });
  }
  const receipt = await tx.wait();
  const event = parsedLogs(market, receipt).find((e) => e.name === "CompetitionCreated");
  if (!event) throw new Error(`Transaction ${tx.hash} created no competition.`);
  return { competitionId: event.args.competitionId.toString(), txHash: tx.hash, rows: sealed.rows };
}

/**
 * Check a model file against a competition before anything is uploaded: a Sterling model (spec
 * and schema in its metadata) taking the competition's input schema, of an allowed architecture.
 * Its size is the key manager's to judge (it builds the model).
 * @returns {Promise<import("./crypto/competition.js").WeightsInfo>}
 * @throws {import("./crypto/competition.js").InvalidWeights | CompetitionRefused}
 */
export async function checkWeights(file, c) {
  const info = await readWeights(file);
  if ("0x" + info.schemaHash !== String(c.schema_hash).toLowerCase()) {
    throw new CompetitionRefused(`The model takes another input schema (${info.schema.feature_names.length} features, ${info.schema.class_names.length} classes) than this competition's test set: train it on data with the competition's schema.`);
  }
  if (!c.architectures.includes(info.spec.architecture)) {
    throw new CompetitionRefused(`This competition takes ${c.architectures.join(", ")} models, not ${info.spec.architecture}.`);
  }
  return info;
}

/**
 * Seal a model to the key manager for the connected account's entry, have it admitted against the
 * rules, and submit it on-chain.
 * @returns {Promise<{index: string, txHash: string, weightsHash: string, contentHash: string}>}
 * @throws {CompetitionRefused} the key manager refused the model (its message says why)
 */
export async function submitModel(c, file, askPrice, { onStep, onProgress }) {
  const cfg = await wallet.loadConfig();
  const signer = await wallet.signer();
  const participant = getAddress(await signer.getAddress());
  onStep("check");
  await checkWeights(file, c);
  const [kmKey, market] = await Promise.all([attestedKeyManagerKey(), competitionMarket({ write: true })]);

  onStep("seal");
  const sealed = await sealSubmission(file, {
    kmPublicKey: kmKey, chainId: BigInt(cfg.chain_id), competitions: cfg.contracts.competitions,
    competitionId: BigInt(c.competition_id), participant, onProgress,
  });

  onStep("upload");
  const uploaded = await uploadBlob("/api/blobs", sealed.ciphertext, { sha256: sealed.contentHash, onProgress });
  if (uploaded.sha256 !== sealed.contentHash) throw new CompetitionRefused("The gateway stored the model under another hash.");

  onStep("admit");
  const signature = await signDeposit(signer, { domain: await competitionsDomain(), contentHash: sealed.contentHash, wrappedKey: sealed.wrappedKey, keyManager: cfg.key_manager.signer });
  const admitted = await keyManager(
    "/api/key-manager/admissions",
    { competition_id: c.competition_id, content_hash: sealed.contentHash, wrapped_key: toHex(sealed.wrappedKey), participant, signature },
    "model",
  );
  if (
    String(admitted.content_hash).toLowerCase() !== "0x" + sealed.contentHash ||
    String(admitted.weights_hash).toLowerCase() !== "0x" + sealed.weightsHash ||
    getAddress(admitted.participant) !== participant
  ) {
    throw new CompetitionRefused("The admission names another model or participant than the one sealed here.");
  }

  onStep("submit");
  const tx = await market.submit(BigInt(c.competition_id), "0x" + sealed.contentHash, "0x" + sealed.weightsHash, askPrice, admitted.admission);
  const receipt = await tx.wait();
  const event = parsedLogs(market, receipt).find((e) => e.name === "Submitted");
  return { index: event ? event.args.index.toString() : "?", txHash: tx.hash, weightsHash: sealed.weightsHash, contentHash: sealed.contentHash };
}

/**
 * The connected account's jobs as candidate entries of competition ``c``, newest first, each with
 * why it cannot be entered (``problem``, null when it can): its model must be sealed to the key
 * manager, completed, of an allowed architecture and trained on the competition's input schema,
 * and not entered already. Completed jobs sealed to their consumer are listed too, so the page can
 * say why they cannot be entered; jobs sealed to the key manager still training are listed as not
 * ready. The size limit is the key manager's to judge (it builds the model), as for a file.
 * @param {Map<string, Promise<object>>} cache job details and datasets, which do not change once completed
 * @returns {Promise<{job: object, spec: object|null, problem: string|null, entered: number|null, ownKey: boolean}[]>}
 */
export async function entrantJobs(c, me, cache) {
  const cfg = await wallet.loadConfig();
  const once = (key, load) => {
    if (!cache.has(key)) cache.set(key, load().catch((error) => (cache.delete(key), Promise.reject(error))));
    return cache.get(key);
  };
  // GET /api/jobs filters by consumer and status, not by consumer key: read the account's jobs and keep the relevant ones here.
  const { items } = await getJSON(`/api/jobs?consumer=${getAddress(me)}&limit=500`);
  const relevant = items.filter((j) => (sealedToKeyManager(j, cfg) ? j.status === "completed" || j.status === "open" || j.status === "claimed" : j.status === "completed"));
  const entered = enteredWeights(c, me);
  return Promise.all(
    relevant.map(async (job) => {
      if (job.status !== "completed") return { job, spec: null, entered: null, ownKey: false, problem: `still ${job.status === "open" ? "waiting for a worker" : "training"}: it can be entered once it completes.` };
      const detail = await once(`job.${job.id}`, () => getJSON(`/api/jobs/${job.id}`));
      if (!sealedToKeyManager(job, cfg)) {
        return { job: detail, spec: detail.model_spec || null, entered: null, ownKey: true, problem: "sealed to your own key: the key manager cannot open it." };
      }
      const dataset = await once(`dataset.${job.dataset_ids[0]}`, () => getJSON(`/api/datasets/${job.dataset_ids[0]}`));
      const spec = detail.model_spec || {};
      const index = entered.get(String(job.model_hash).toLowerCase());
      let problem = null;
      if (index !== undefined) problem = `entered, as entry #${index}.`;
      else if (!c.architectures.includes(spec.architecture)) problem = `a ${spec.architecture || "unknown"} model: this competition takes ${c.architectures.join(", ")} models.`;
      else if ("0x" + String(dataset.schema_hash).toLowerCase().replace(/^0x/, "") !== String(c.schema_hash).toLowerCase()) {
        problem = "trained on data with another input schema than this competition's test set.";
      }
      return { job: detail, spec, entered: index ?? null, ownKey: false, problem };
    }),
  );
}

/** The weights hashes ``me`` entered in ``c`` (the index's record of their Submitted logs) → entry index. */
function enteredWeights(c, me) {
  const mine = c.submissions.filter((s) => String(s.participant).toLowerCase() === me.toLowerCase());
  return new Map(mine.map((s) => [String(s.weights_hash).toLowerCase(), Number(s.index)]));
}

/**
 * Enter the model of the connected account's completed job ``job`` (as GET /api/jobs/{id} serves
 * it), whose result was sealed to the key manager: the chain is asked whether the job is this
 * account's, completed and sealed to the key manager's attested key; the key manager opens the
 * sealed result in its enclave, checks it against the job's receipt and the rules and signs an
 * admission for the job's own model ciphertext; the admission is checked to name this account and
 * the weights hash of the job's receipt on-chain, then submitted. Nothing here ever holds, fetches
 * or decrypts the model: its weights stay sealed.
 * @param {{onStep: (name: string) => void}} ui
 * @returns {Promise<{index: string, txHash: string, weightsHash: string, contentHash: string}>}
 * @throws {CompetitionRefused} the chain or the key manager says the job cannot be entered (the message says why)
 */
export async function submitJobModel(c, job, askPrice, { onStep }) {
  const signer = await wallet.signer();
  const participant = getAddress(await signer.getAddress());
  const jobId = BigInt(job.id);

  onStep("check");
  const [jobs, kmKey, market] = await Promise.all([wallet.jobMarket(), attestedKeyManagerKey(), competitionMarket({ write: true })]);
  const info = await jobs.job(jobId);
  if (getAddress(info.consumer) !== participant) throw new CompetitionRefused(`Job #${job.id} is ${info.consumer}'s, not yours: only its consumer may enter its model.`);
  const status = jobStatusName(info.status);
  if (status !== "completed") throw new CompetitionRefused(`Job #${job.id} is ${status}, not completed: its model can be entered once it settles.`);
  if (String(info.consumerKey).toLowerCase() !== "0x" + toHex(kmKey)) {
    throw new CompetitionRefused(`Job #${job.id}'s model is sealed to its consumer's key, not to the key manager's: the key manager cannot open it. Download it from the job's page and submit the file instead.`);
  }
  const modelHash = await receiptModelHash(jobs, job);

  onStep("admit");
  const admitted = await keyManager("/api/key-manager/job-admissions", { competition_id: c.competition_id, job_id: Number(job.id) }, `model of job #${job.id}`);
  if (getAddress(admitted.participant) !== participant || String(admitted.weights_hash).toLowerCase() !== modelHash) {
    throw new CompetitionRefused("The admission names another participant or other weights than this job's consumer and its receipt's model hash on-chain.");
  }

  onStep("submit");
  const tx = await market.submit(BigInt(c.competition_id), admitted.content_hash, admitted.weights_hash, askPrice, admitted.admission);
  const receipt = await tx.wait();
  const event = parsedLogs(market, receipt).find((e) => e.name === "Submitted");
  return { index: event ? event.args.index.toString() : "?", txHash: tx.hash, weightsHash: modelHash, contentHash: String(admitted.content_hash).toLowerCase() };
}

/** The model hash job ``job``'s receipt committed to, from its ResultSubmitted log on-chain (not the gateway's word). */
async function receiptModelHash(jobs, job) {
  const cfg = await wallet.loadConfig();
  const settled = (job.timeline || []).find((e) => e.stage === "settled");
  const from = settled ? settled.block : Number(cfg.deployment_block || 0);
  const logs = await jobs.queryFilter(jobs.filters.ResultSubmitted(BigInt(job.id)), from, settled ? settled.block : "latest");
  if (!logs.length) throw new CompetitionRefused(`The chain has no result of job #${job.id}: it has not settled.`);
  return String(logs[logs.length - 1].args.modelHash).toLowerCase();
}

/** Close a competition (the prize goes to the best private score). */
export async function closeCompetition(c) {
  const market = await competitionMarket({ write: true });
  const tx = await market.close(BigInt(c.competition_id));
  await tx.wait();
  return tx.hash;
}

/** What `me` can withdraw from the competition market (prizes and sales). */
export async function credits(me) {
  return (await competitionMarket()).credits(me);
}

/** Withdraw every pending payment of the connected account. */
export async function withdraw() {
  const tx = await (await competitionMarket({ write: true })).withdraw();
  await tx.wait();
  return tx.hash;
}

/** Whether `me` bought entry `index` already (its purchase key on-chain is non-zero). */
export async function purchased(c, index, me) {
  const key = await (await competitionMarket()).purchaseOf(BigInt(c.competition_id), index, me);
  return BigInt(key) !== 0n;
}

function purchaseKeyName(cfg, c, index, buyer) {
  return `${PURCHASE_KEY_PREFIX}${String(cfg.contracts.competitions).toLowerCase()}.${c.competition_id}.${index}.${buyer.toLowerCase()}`;
}

/**
 * Buy entry `index` at its ask price (unless bought already), get its key from the key manager
 * and open the model in this browser. The purchase key pair is made here and kept in this
 * browser BEFORE paying, so a purchase whose key could not be fetched opens later without paying twice.
 * @param {{onStep: (name: string) => void}} ui
 * @returns {Promise<{weights: Uint8Array, weightsHash: string, paid: boolean}>}
 */
export async function buyModel(c, index, { onStep }) {
  const cfg = await wallet.loadConfig();
  const signer = await wallet.signer();
  const buyer = getAddress(await signer.getAddress());
  const reader = await competitionMarket();
  const cid = BigInt(c.competition_id);
  const storageName = purchaseKeyName(cfg, c, index, buyer);

  onStep("pay");
  const onChainKey = String(await reader.purchaseOf(cid, index, buyer)).toLowerCase();
  let privateKey = localStorage.getItem(storageName) ? fromHex(localStorage.getItem(storageName), 32) : null;
  let paid = false;
  if (BigInt(onChainKey) === 0n) {
    if (!privateKey) {
      privateKey = (await generateKeyPair()).privateKey;
      localStorage.setItem(storageName, toHex(privateKey));
    }
    const publicKey = "0x" + toHex(await publicKeyOf(privateKey));
    const ask = BigInt((await reader.submissionOf(cid, index)).askPrice);
    const market = await competitionMarket({ write: true });
    let tx;
    if (paymentUnit().token) {
      await approve(market, buyer, ask);
      tx = await market.buy(cid, index, publicKey);
    } else {
      tx = await market.buy(cid, index, publicKey, { value: ask });
    }
    await tx.wait();
    paid = true;
  } else if (!privateKey || "0x" + toHex(await publicKeyOf(privateKey)) !== onChainKey) {
    throw new CompetitionRefused(`You bought entry ${index} with a key this browser does not hold: open it where you bought it (or with the CLI and that purchase's key file).`);
  }

  onStep("key");
  const released = await keyManager("/api/key-manager/purchases", { competition_id: c.competition_id, index, buyer }, "purchase");

  onStep("verify");
  const [submission, logs] = await Promise.all([reader.submissionOf(cid, index), reader.queryFilter(reader.filters.Submitted(cid), Number(cfg.deployment_block || 0))]);
  const log = logs.find((l) => Number(l.args.index) === Number(index));
  if (!log) throw new CompetitionRefused(`No Submitted log of entry ${index} on-chain: its weights hash cannot be checked.`);
  const contentHash = String(submission.contentHash).toLowerCase();
  const weightsHash = String(log.args.weightsHash).toLowerCase();
  if (String(released.content_hash).toLowerCase() !== contentHash || String(released.weights_hash).toLowerCase() !== weightsHash) {
    throw new CompetitionRefused("The gateway names other hashes for this entry than the chain holds.");
  }

  onStep("decrypt");
  const ciphertext = await getBytes(`/api/blobs/${contentHash.slice(2)}`);
  const weights = await openPurchasedModel(ciphertext, fromHex(released.released_key), privateKey, {
    chainId: BigInt(cfg.chain_id), competitions: cfg.contracts.competitions, competitionId: cid, index: Number(index), buyer, contentHash, weightsHash,
  });
  return { weights, weightsHash, paid };
}

/**
 * A readable message for a failed step: the key manager's refusal, the contract's custom error
 * explained when a user can act on it, else the wallet's description.
 */
export function describeError(error) {
  if (error instanceof CompetitionRefused) return error.message;
  if (error?.name === "InvalidWeights" || error?.name === "InvalidDataset" || error?.name === "InvalidCsv") return error.message;
  const revert = wallet.revertOf(error) || decodeRevert(error);
  if (revert && EXPLAIN[revert.name]) {
    const args = [...(revert.args || [])];
    return `${EXPLAIN[revert.name](args)} [${revert.name}(${args.map(String).join(", ")})]`;
  }
  if (revert) return `${revert.name}(${[...(revert.args || [])].map(String).join(", ")})`;
  return wallet.describeTxError(error);
}

// What the user should understand from the competition market's errors that a person can cause and fix.
const EXPLAIN = {
  CompetitionMarketInvalidWindow: () => "The submission window must end in the future.",
  PullPaymentsIncorrectPayment: ([sent, expected]) => `The market expected ${money(expected)} with the transaction, not ${money(sent)}.`,
  CompetitionMarketOutsideSubmissionWindow: ([id]) => `Competition #${id} takes no submissions now: its window is not open.`,
  CompetitionMarketSubmissionCapReached: ([id, , cap]) => `You made ${cap} submission${Number(cap) === 1 ? "" : "s"} to competition #${id}, its limit per participant.`,
  CompetitionMarketDuplicateSubmission: () => "This very ciphertext was submitted already (to this or another competition).",
  CompetitionMarketInvalidAdmission: () => "The admission is not the key manager's for this account, competition and model.",
  CompetitionMarketInvalidStatus: ([id]) => `Competition #${id} does not allow this in its current state.`,
  CompetitionMarketSubmissionsStillOpen: ([id]) => `Competition #${id} cannot close before its submission window ends.`,
  CompetitionMarketNotOrganizer: ([id]) => `Until its scoring period ends, only the organizer may close competition #${id}.`,
  CompetitionMarketScoringIncomplete: ([id, scored, count]) => `Only ${scored} of competition #${id}'s ${count} entries have their private score; the organizer may close once every one has.`,
  CompetitionMarketNotForSale: ([id, index]) => `Entry ${index} of competition #${id} is not for sale.`,
  CompetitionMarketBuyerNotAllowed: ([id]) => `Only the organizer of competition #${id} may buy its models.`,
  CompetitionMarketAlreadyBought: ([, index]) => `You bought entry ${index} already.`,
  PullPaymentsNothingToWithdraw: () => "There is nothing to withdraw from the competition market.",
};

function decodeRevert(error) {
  const data = [error?.data, error?.info?.error?.data, error?.error?.data].find((d) => typeof d === "string" && /^0x[0-9a-fA-F]{8}/.test(d));
  if (!data) return null;
  try {
    const parsed = ERRORS.parseError(data);
    return parsed ? { name: parsed.name, args: [...parsed.args] } : null;
  } catch {
    return null;
  }
}

/** POST to a key-manager route; its 4xx refusals become {@link CompetitionRefused} with the key manager's message. */
async function keyManager(path, body, what) {
  try {
    return await postJSON(path, body);
  } catch (error) {
    if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
      throw new CompetitionRefused(`The key manager refused the ${what}: ${error.message}`);
    }
    throw error;
  }
}

/** Token mode: let the market take `amount` of the payment token (skipped when already allowed). */
async function approve(market, owner, amount) {
  const token = await wallet.paymentToken({ write: true });
  const spender = await market.getAddress();
  if ((await token.allowance(owner, spender)) < amount) await (await token.approve(spender, amount)).wait();
}

function parsedLogs(contract, receipt) {
  return receipt.logs
    .map((log) => {
      try {
        return contract.interface.parseLog(log);
      } catch {
        return null;
      }
    })
    .filter(Boolean);
}
