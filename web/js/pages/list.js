// "List a dataset": the CSV is packaged and encrypted in this browser; only ciphertext, the
// public schema and the key wrapped to the key manager's attested key leave the machine.
import { postJSON, uploadBlob, waitForIndex } from "../api.js";
import { esc, parseMoney, paymentUnit, short } from "../format.js";
import { depositDataKey, encryptForListing, readCsvDataset, readCsvHeader } from "../listing-flow.js";
import { deltaUnits, epsilonFromUnits, epsilonUnits } from "../onchain.js";
import { attestedKeyManagerKey } from "../key-manager.js";
import * as wallet from "../wallet.js";

const STEPS = [
  ["package", "Read and package the CSV (in this browser)"],
  ["encrypt", "Encrypt with a fresh data key (in this browser)"],
  ["upload", "Upload the ciphertext"],
  ["schema", "Publish the schema"],
  ["deposit", "Sign the deposit and hand the data key, wrapped to the key manager's attested key, to the key manager"],
  ["list", "Sign and send listDataset"],
];

export async function render(root) {
  const limits = await wallet.marketLimits();
  const minEpsilon = epsilonFromUnits(1); // the contracts' smallest ε
  root.innerHTML = `<h1>List a dataset</h1>
    <p class="muted">Your file is encrypted on this machine before anything is uploaded. The data key is wrapped (HPKE) to the key manager enclave's attested key, read from the on-chain enclave registry.</p>
    <form class="stack panel" id="list-form" novalidate>
      <div class="field"><label for="file">CSV file</label>
        <input id="file" name="file" type="file" accept=".csv,text/csv" required aria-describedby="file-hint file-error">
        <span class="hint" id="file-hint">A header row, numeric feature columns and one label column.</span>
        <span class="error" id="file-error" role="alert"></span></div>
      <div class="field"><label for="label-column">Label column</label>
        <select id="label-column" name="label_column" required disabled aria-describedby="label-error"><option value="">choose a file first</option></select>
        <span class="error" id="label-error" role="alert"></span></div>
      <div class="row">
        <div class="field"><label for="price">Price per job (${esc(paymentUnit().symbol)})</label><input id="price" name="price" type="number" min="0" step="any" value="0.1" required></div>
        <div class="field"><label for="max-eps">Max. ε per job</label><input id="max-eps" name="max_epsilon" type="number" min="${minEpsilon}" step="any" value="2" required></div>
        <div class="field"><label for="total-eps">Total ε budget</label><input id="total-eps" name="total_epsilon" type="number" min="${minEpsilon}" step="any" value="10" required></div>
        <div class="field"><label for="max-delta">Max. δ per job</label><input id="max-delta" name="max_delta" type="number" min="0" step="any" value="0.0001" required></div>
      </div>
      <div class="field"><label for="expiry">Expires on (optional)</label><input id="expiry" name="expiry" type="date"></div>
      <div class="field"><label for="allowed">Only these buyers (optional, one address per line)</label>
        <textarea id="allowed" name="allowed" rows="2" placeholder="0x…"></textarea></div>
      <div class="field"><label for="allowed-models">Only these model specs (optional, one spec hash per line)</label>
        <textarea id="allowed-models" name="allowed_models" rows="2" placeholder="0x… (the sha256 POST /api/specs returns)"></textarea></div>
      <span class="error" id="terms-error" role="alert"></span>
      <div><button type="submit" id="list-submit">Encrypt and list</button></div>
    </form>
    <div class="panel" id="progress-panel" hidden>
      <h2>Progress</h2>
      <ol class="steps" id="steps">${STEPS.map(([k, t]) => `<li data-step="${k}"><span class="dot"></span><span>${esc(t)}</span></li>`).join("")}</ol>
      <p><label for="bar">Current step</label> <progress id="bar" max="1" value="0"></progress></p>
      <div id="outcome" aria-live="polite"></div>
    </div>`;
  const form = root.querySelector("#list-form");
  const fileInput = root.querySelector("#file");
  const labelSelect = root.querySelector("#label-column");

  fileInput.addEventListener("change", async () => {
    root.querySelector("#file-error").textContent = "";
    labelSelect.disabled = true;
    const file = fileInput.files[0];
    if (!file) return;
    try {
      const columns = await readCsvHeader(file);
      labelSelect.innerHTML = columns.map((c) => `<option>${esc(c)}</option>`).join("");
      labelSelect.value = columns[columns.length - 1];
      labelSelect.disabled = false;
    } catch (error) {
      root.querySelector("#file-error").textContent = error.message;
      fileInput.setAttribute("aria-invalid", "true");
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const terms = readTerms(form, root, limits);
    const file = fileInput.files[0];
    if (!file) {
      root.querySelector("#file-error").textContent = "Choose a CSV file.";
      return;
    }
    if (!terms) return;
    root.querySelector("#list-submit").disabled = true;
    root.querySelector("#progress-panel").hidden = false;
    try {
      await listDataset(root, file, labelSelect.value, terms);
    } finally {
      root.querySelector("#list-submit").disabled = false;
    }
  });
}

function readTerms(form, root, { maxListEntries }) {
  const error = root.querySelector("#terms-error");
  error.textContent = "";
  const data = new FormData(form);
  try {
    const maxEps = Number(data.get("max_epsilon"));
    const totalEps = Number(data.get("total_epsilon"));
    const maxDelta = Number(data.get("max_delta"));
    if (!(maxEps > 0) || !(totalEps > 0)) throw new Error("ε limits must be positive.");
    if (maxEps > totalEps) throw new Error("The ε per job cannot exceed the total ε budget.");
    if (!(maxDelta > 0 && maxDelta < 1)) throw new Error("δ must be between 0 and 1.");
    const expiryText = String(data.get("expiry") || "");
    const expiry = expiryText ? Math.floor(new Date(`${expiryText}T23:59:59`).getTime() / 1000) : 0;
    if (expiry && expiry * 1000 < Date.now()) throw new Error("The expiry date has passed.");
    const allowed = String(data.get("allowed") || "").split(/\s+/).filter(Boolean);
    for (const a of allowed) if (!/^0x[0-9a-fA-F]{40}$/.test(a)) throw new Error(`Not an address: ${a}`);
    const models = String(data.get("allowed_models") || "").split(/\s+/).filter(Boolean).map((m) => (m.startsWith("0x") ? m : `0x${m}`));
    for (const m of models) if (!/^0x[0-9a-fA-F]{64}$/.test(m)) throw new Error(`Not a model spec hash: ${m}`);
    if (allowed.length > maxListEntries || models.length > maxListEntries) throw new Error(`At most ${maxListEntries} buyers and ${maxListEntries} model specs.`);
    return {
      pricePerJob: parseMoney(data.get("price")),
      maxEpsilonPerJob: epsilonUnits(maxEps),
      totalEpsilonBudget: epsilonUnits(totalEps),
      maxDelta: deltaUnits(maxDelta),
      expiry: BigInt(expiry),
      allowed,
      models,
    };
  } catch (e) {
    error.textContent = e.shortMessage || e.message;
    return null;
  }
}

async function listDataset(root, file, labelColumn, terms) {
  const bar = root.querySelector("#bar");
  const outcome = root.querySelector("#outcome");
  outcome.innerHTML = "";
  root.querySelectorAll("#steps li").forEach((li) => (li.className = ""));
  let current = null;
  const step = (name) => {
    if (current) root.querySelector(`[data-step="${current}"]`).className = "done";
    current = name;
    if (name) root.querySelector(`[data-step="${name}"]`).className = "current";
    bar.value = 0;
  };
  const progress = (done, total) => (bar.value = total ? done / total : 1);
  try {
    const signer = await wallet.signer();
    const provider = await signer.getAddress();
    const cfg = await wallet.loadConfig();
    const kmKey = await attestedKeyManagerKey();

    step("package");
    const dataset = await readCsvDataset(file, labelColumn);
    step("encrypt");
    const listing = await encryptForListing(dataset, { kmPublicKey: kmKey, providerAddress: provider, onProgress: progress });

    step("upload");
    const uploaded = await uploadBlob("/api/blobs", listing.ciphertext, { sha256: listing.contentHash, onProgress: progress });
    if (uploaded.sha256 !== listing.contentHash) throw new Error("The gateway stored the ciphertext under another hash.");

    step("schema");
    const schema = await postJSON("/api/schemas", listing.schema);
    if (schema.sha256 !== listing.schemaHash) throw new Error("The gateway computed another schema hash.");

    step("deposit");
    await depositDataKey(listing, { signer, keyManager: cfg.key_manager.signer });

    step("list");
    const market = await wallet.jobMarket({ write: true });
    const tx = await market.listDataset(
      "0x" + listing.contentHash,
      "0x" + listing.schemaHash,
      "sterling-blob:",
      [terms.pricePerJob, terms.maxEpsilonPerJob, terms.totalEpsilonBudget, terms.maxDelta, terms.expiry],
      terms.allowed,
      terms.models,
    );
    const receipt = await tx.wait();
    const event = receipt.logs.map((l) => safeParse(market, l)).find((e) => e && e.name === "DatasetListed");
    await waitForIndex(receipt.blockNumber);
    step(null);
    const id = event ? event.args.datasetId.toString() : null;
    outcome.innerHTML = `<div class="ok-box" role="status">Listed${id ? ` as <a href="#/datasets/${id}" id="listed-link">dataset #${id}</a>` : ""} in transaction ${short(tx.hash)}. Your plaintext never left this browser.</div>`;
  } catch (error) {
    if (current) root.querySelector(`[data-step="${current}"]`).className = "failed";
    outcome.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
  }
}

function safeParse(contract, log) {
  try {
    return contract.interface.parseLog(log);
  } catch {
    return null;
  }
}
