// "Create a training job": pick datasets, a model and ε; eligibility and the total price are
// checked live against each dataset's status and terms before anything is sent. The total shown
// is the job's price limit (createJob's maxTotalPrice): if a provider raises a price before the
// transaction is mined, the market refuses the job instead of charging more. The model is sealed
// to a key made in this browser, or, by choice, to the key manager's attested key (for serving or a
// competition: nobody, the consumer included, ever sees its weights).
import { ApiError, getJSON, postJSON, waitForIndex } from "../api.js";
import { bytesToHex, datasetUnavailable, download, esc, money, eps, parseMoney, paymentUnit, short } from "../format.js";
import { newConsumerKey, rememberJobKey } from "../consumer-keys.js";
import { attestedKeyManagerKey } from "../key-manager.js";
import { deltaUnits, epsilonUnits } from "../onchain.js";
import * as wallet from "../wallet.js";

const DATASETS_PATH = "/api/datasets?limit=200&sort=-listed";

export async function render(root) {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const preselected = new Set((query.get("datasets") || "").split(",").filter(Boolean));
  const sealPreset = query.get("seal") === "key-manager";
  const [{ items: datasets }, me, health, limits, cfg] = await Promise.all([
    getJSON(DATASETS_PATH), wallet.address(), getJSON("/api/health"), wallet.marketLimits(), wallet.loadConfig(),
  ]);
  const hasKeyManager = Boolean(cfg.key_manager);
  const unit = paymentUnit();
  root.innerHTML = `<h1>Create a training job</h1>
    <form class="stack panel" id="job-form" novalidate>
      <fieldset class="field"><legend><strong>Datasets</strong> (same schema)</legend>
        ${
          datasets.length
            ? `<div class="table-wrap"><table><thead><tr><th>Use</th><th>Dataset</th><th>Price</th><th>ε left</th><th>Max ε/job</th><th>Check</th></tr></thead><tbody>
          ${datasets
            .map((d) => `<tr><td><input type="checkbox" name="dataset" value="${d.id}" id="ds-${d.id}" ${preselected.has(String(d.id)) ? "checked" : ""} aria-label="use dataset ${d.id}"></td>
            <td><label for="ds-${d.id}">#${d.id}</label> <span class="muted">${short("0x" + String(d.schema_hash).replace(/^0x/, ""), 4)}</span></td>
            <td data-price="${d.id}">${money(d.price_wei)}</td><td>${eps(d.remaining_epsilon)}</td><td>${eps(d.max_epsilon_per_job)}</td><td data-check="${d.id}"></td></tr>`)
            .join("")}</tbody></table></div>`
            : `<p class="muted">No datasets are listed yet. <a href="#/list">List one</a>.</p>`
        }</fieldset>
      <div class="row">
        <div class="field"><label for="architecture">Model</label><select id="architecture" name="architecture">
          <option value="mlp">MLP</option><option value="logistic_regression">Logistic regression</option><option value="cnn">CNN (images)</option></select></div>
        <div class="field"><label for="hidden">Hidden sizes</label><input id="hidden" name="hidden_sizes" type="text" value="32" aria-describedby="hidden-hint"><span class="hint" id="hidden-hint">comma-separated, e.g. 64,32</span></div>
        <div class="field"><label for="channels">Conv channels (CNN)</label><input id="channels" name="channels" type="text" value="16,32"></div>
        <div class="field"><label for="activation">Activation</label><select id="activation" name="activation"><option>relu</option><option>tanh</option></select></div>
      </div>
      <div class="row">
        <div class="field"><label for="epochs">Epochs</label><input id="epochs" name="epochs" type="number" min="1" max="1000" value="20"></div>
        <div class="field"><label for="batch">Batch size</label><input id="batch" name="batch_size" type="number" min="1" value="64"></div>
        <div class="field"><label for="lr">Learning rate</label><input id="lr" name="learning_rate" type="number" min="0" step="any" value="0.01"></div>
        <div class="field"><label for="clip">Clipping norm</label><input id="clip" name="max_grad_norm" type="number" min="0" step="any" value="1"></div>
        <div class="field"><label for="accountant">Accountant</label><select id="accountant" name="accountant"><option value="rdp">RDP</option><option value="prv">PRV</option></select></div>
      </div>
      <div class="row">
        <div class="field"><label for="epsilon">ε (privacy budget)</label><input id="epsilon" name="epsilon" type="number" min="0" step="any" value="1"></div>
        <div class="field"><label for="delta">δ</label><input id="delta" name="delta" type="number" min="0" step="any" value="0.00001"></div>
        <div class="field"><label for="fee">Worker fee (${esc(unit.symbol)})</label><input id="fee" name="worker_fee" type="number" min="0" step="any" value="0.01"></div>
      </div>
      <fieldset class="field"><legend><strong>Released statistics</strong> (optional, DP — their ε comes out of the job's ε)</legend>
        <label><input type="checkbox" name="private_metrics" value="class_counts"> class counts</label>
        <label><input type="checkbox" name="private_metrics" value="train_accuracy"> training accuracy</label>
        <label><input type="checkbox" name="private_metrics" value="train_loss"> training loss</label>
        <div class="row"><div class="field"><label for="metrics-eps">ε for statistics</label><input id="metrics-eps" name="metrics_epsilon" type="number" min="0" step="any" value="0"></div>
        <div class="field"><label for="canaries">Privacy audit canaries (0 = none)</label><input id="canaries" name="audit_canaries" type="number" min="0" max="10000" value="0"></div></div>
      </fieldset>
      <fieldset class="field" id="seal-choice"><legend><strong>Who can open the trained model</strong></legend>
        <label class="check"><input type="radio" name="seal" value="consumer" id="seal-consumer" ${sealPreset && hasKeyManager ? "" : "checked"}> You: it is sealed to a key made in this browser, and you download and decrypt it here.</label>
        <label class="check"><input type="radio" name="seal" value="key-manager" id="seal-key-manager" aria-describedby="seal-hint" ${hasKeyManager ? "" : "disabled"} ${sealPreset && hasKeyManager ? "checked" : ""}> Seal the model to the key manager, for serving or a competition: nobody, you included, ever sees its weights.</label>
        <span class="hint" id="seal-hint">${
          hasKeyManager
            ? "The job's consumer key on-chain is then the key manager enclave's attested key. Only the key manager opens the trained model, inside its enclave, to admit it to a competition (from the competition's page) or to serve it; the job's page offers no download."
            : "This gateway names no key manager: the model can only be sealed to you."
        }</span>
      </fieldset>
      <div id="summary" class="panel" aria-live="polite"></div>
      <span class="error" id="spec-error" role="alert"></span>
      <div><button type="submit" id="create-submit">${unit.token ? "Approve and create the job" : "Create job and pay"}</button></div>
      <div id="job-outcome" aria-live="polite"></div>
    </form>`;
  const form = root.querySelector("#job-form");
  const byId = new Map(datasets.map((d) => [String(d.id), d]));
  const context = { byId, me, marketPaused: Boolean(health.market_paused), maxDatasets: limits.maxDatasetsPerJob };
  form.addEventListener("input", () => check(form, root, context));
  form.addEventListener("change", () => check(form, root, context));
  check(form, root, context);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const state = check(form, root, context);
    if (!state.ok) return;
    const refused = await submit(form, root, state);
    if (refused) await refresh(form, root, context);
  });
}

/** Reload the datasets' current terms (after the market refused a stale price) and check again. */
async function refresh(form, root, context) {
  const { items } = await getJSON(DATASETS_PATH);
  for (const d of items) {
    context.byId.set(String(d.id), d);
    const cell = root.querySelector(`[data-price="${d.id}"]`);
    if (cell) cell.textContent = money(d.price_wei);
  }
  check(form, root, context);
}

function numbers(text) {
  return String(text || "").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
}

function spec(form) {
  const data = new FormData(form);
  const architecture = data.get("architecture");
  const s = {
    architecture,
    activation: data.get("activation"),
    epochs: Number(data.get("epochs")),
    batch_size: Number(data.get("batch_size")),
    learning_rate: Number(data.get("learning_rate")),
    max_grad_norm: Number(data.get("max_grad_norm")),
    accountant: data.get("accountant"),
  };
  if (architecture !== "logistic_regression") s.hidden_sizes = numbers(data.get("hidden_sizes"));
  if (architecture === "cnn") s.channels = numbers(data.get("channels"));
  const metrics = data.getAll("private_metrics");
  if (metrics.length) {
    s.private_metrics = metrics;
    s.metrics_epsilon = Number(data.get("metrics_epsilon"));
  }
  const canaries = Number(data.get("audit_canaries"));
  if (canaries > 0) s.audit_canaries = canaries;
  return s;
}

/** Live eligibility of each chosen dataset and the total price; returns what submit needs. */
function check(form, root, { byId, me, marketPaused, maxDatasets }) {
  const data = new FormData(form);
  const chosen = data.getAll("dataset").map((id) => byId.get(String(id)));
  const epsilon = Number(data.get("epsilon"));
  const delta = Number(data.get("delta"));
  const now = Date.now() / 1000;
  let fee = 0n;
  const problems = [];
  try {
    fee = parseMoney(data.get("worker_fee"));
  } catch {
    problems.push("The worker fee is not a number.");
  }
  if (!(epsilon > 0)) problems.push("ε must be positive.");
  if (!(delta > 0 && delta < 1)) problems.push("δ must be between 0 and 1.");
  const metricsEps = Number(data.get("metrics_epsilon") || 0);
  if (data.getAll("private_metrics").length && !(metricsEps > 0)) problems.push("Give the statistics a positive ε.");
  if (metricsEps > 0 && metricsEps >= epsilon) problems.push("The statistics' ε must leave some of the job's ε for training.");
  const schema = chosen[0]?.schema_hash;
  let total = fee;
  root.querySelectorAll("[data-check]").forEach((cell) => (cell.innerHTML = ""));
  for (const d of chosen) {
    const reasons = [];
    const unavailable = datasetUnavailable(d);
    if (unavailable) reasons.push(unavailable);
    if (d.schema_hash !== schema) reasons.push("different schema");
    if (epsilon > d.max_epsilon_per_job + 1e-12) reasons.push(`ε above ${eps(d.max_epsilon_per_job)}`);
    if (epsilon > d.remaining_epsilon + 1e-12) reasons.push(`only ${eps(d.remaining_epsilon)} ε left`);
    if (delta > Number(d.max_delta)) reasons.push(`δ above ${d.max_delta}`);
    if (d.expiry && Number(d.expiry) < now) reasons.push("expired");
    if (d.restricted && !(me && d.allowed_consumers.map((a) => a.toLowerCase()).includes(me.toLowerCase()))) reasons.push("not offered to you");
    const cell = root.querySelector(`[data-check="${d.id}"]`);
    const note = d.models_restricted ? ` <span class="muted">(approved model specs only)</span>` : "";
    cell.innerHTML = reasons.length ? `<span class="ineligible">✗ ${esc(reasons.join(", "))}</span>` : `<span class="eligible">✓ eligible</span>${note}`;
    if (reasons.length) problems.push(`Dataset #${d.id}: ${reasons.join(", ")}.`);
    total += BigInt(d.price_wei);
  }
  if (!chosen.length) problems.push("Choose at least one dataset.");
  if (chosen.length > maxDatasets) problems.push(`At most ${maxDatasets} datasets per job.`);
  if (marketPaused) problems.push("The market is in an emergency stop and accepts no new jobs.");
  root.querySelector("#summary").innerHTML = `<strong id="total">Total to escrow: ${money(total)}</strong> <span class="muted">(${chosen.length} dataset${chosen.length === 1 ? "" : "s"} + worker fee ${money(fee)}; the most this job can cost you)</span>
    ${problems.length ? `<ul class="error">${problems.map((p) => `<li>${esc(p)}</li>`).join("")}</ul>` : `<p class="eligible">Every dataset accepts this job.</p>`}`;
  root.querySelector("#create-submit").disabled = problems.length > 0;
  return { ok: problems.length === 0, chosen, epsilon, delta, fee, total };
}

/**
 * Publish the spec and create the job with ``maxTotalPrice`` = the total shown. Native currency:
 * that total is sent with the transaction. Token: the market is approved for it first, then the
 * job is created; both steps are shown. Returns true when the market refused a stale price.
 */
async function submit(form, root, state) {
  const outcome = root.querySelector("#job-outcome");
  const specError = root.querySelector("#spec-error");
  const button = root.querySelector("#create-submit");
  const unit = paymentUnit();
  specError.textContent = "";
  button.disabled = true;
  outcome.innerHTML = `<p class="muted">Checking the model spec…</p>`;
  try {
    let stored;
    try {
      stored = await postJSON("/api/specs", spec(form));
    } catch (error) {
      if (error instanceof ApiError) {
        specError.textContent = `The model spec is not valid: ${error.message}`;
        outcome.innerHTML = "";
        return false;
      }
      throw error;
    }
    const specHash = "0x" + stored.sha256;
    const refusing = state.chosen.filter((d) => d.models_restricted && !d.allowed_models.map((m) => m.toLowerCase()).includes(specHash.toLowerCase()));
    if (refusing.length) {
      specError.textContent = `${refusing.map((d) => `Dataset #${d.id}`).join(", ")} accept${refusing.length === 1 ? "s" : ""} only model specs their provider approved, and this one (${specHash.slice(0, 10)}…) is not among them.`;
      outcome.innerHTML = "";
      return false;
    }
    // Sealed to the key manager: its key as the registry attests it, never merely the gateway's word; no key is made here.
    const sealedToKeyManager = new FormData(form).get("seal") === "key-manager";
    const key = sealedToKeyManager ? null : await newConsumerKey();
    const consumerKey = sealedToKeyManager ? await attestedKeyManagerKey() : key.publicKey;
    const market = await wallet.jobMarket({ write: true });
    const head = await (await wallet.reader()).getBlock("latest");
    const now = BigInt(head.timestamp);
    const request = {
      datasetIds: state.chosen.map((d) => BigInt(d.id)),
      modelSpecHash: specHash,
      epsilon: epsilonUnits(state.epsilon),
      delta: deltaUnits(state.delta),
      consumerKey: "0x" + bytesToHex(consumerKey),
      workerFee: state.fee,
      maxTotalPrice: state.total,
      claimDeadline: now + 3600n,
      completionDeadline: now + 6n * 3600n,
    };
    let tx;
    if (unit.token) {
      outcome.innerHTML = `<ol class="steps" id="pay-steps">
        <li data-step="approve" class="current"><span class="dot"></span><span>Approve the market to take ${money(state.total)}</span></li>
        <li data-step="create"><span class="dot"></span><span>Create the job (the market takes what it costs, at most ${money(state.total)})</span></li></ol>`;
      const step = (name, cls) => (outcome.querySelector(`[data-step="${name}"]`).className = cls);
      try {
        const token = await wallet.paymentToken({ write: true });
        const owner = await (await wallet.signer()).getAddress();
        if ((await token.allowance(owner, await market.getAddress())) < state.total) {
          await (await token.approve(await market.getAddress(), state.total)).wait();
        }
        step("approve", "done");
        step("create", "current");
        tx = await market.createJob(request);
      } catch (error) {
        outcome.querySelector("li.current")?.classList.replace("current", "failed");
        throw error;
      }
    } else {
      outcome.innerHTML = `<p class="muted">Sending the job with ${money(state.total)} in escrow…</p>`;
      tx = await market.createJob(request, { value: state.total });
    }
    const receipt = await tx.wait();
    const event = receipt.logs.map((l) => { try { return market.interface.parseLog(l); } catch { return null; } }).find((e) => e && e.name === "JobCreated");
    const jobId = event.args.jobId.toString();
    if (key) rememberJobKey(jobId, key);
    await waitForIndex(receipt.blockNumber);
    outcome.querySelector('[data-step="create"]')?.classList.replace("current", "done");
    const steps = outcome.querySelector("#pay-steps");
    const created = `Job <a id="job-link" href="#/jobs/${jobId}">#${jobId}</a> created in ${short(tx.hash)}.`;
    if (!key) {
      outcome.innerHTML = `${steps ? steps.outerHTML : ""}<div class="ok-box" role="status" id="job-sealed-to-key-manager">${created}
        Its model will be sealed to the key manager: nobody, you included, ever sees its weights. Once it completes, submit it from a <a href="#/competitions">competition</a>'s page, or list it for serving with the SDK (<span class="mono">marketplace.serving.list_job_model</span>).</div>`;
      return false;
    }
    outcome.innerHTML = `${steps ? steps.outerHTML : ""}<div class="ok-box" role="status">${created}
      Your model will be encrypted to a key that stays in this browser. <button type="button" class="secondary" id="save-key">Save the key to a file</button></div>`;
    root.querySelector("#save-key").addEventListener("click", () =>
      download(new TextEncoder().encode(JSON.stringify({ job_id: jobId, public_key: bytesToHex(key.publicKey), private_key: bytesToHex(key.privateKey) })), `sterling-job-${jobId}-key.json`, "application/json"),
    );
    return false;
  } catch (error) {
    const box = `<div class="error-box" role="alert" id="job-error">${esc(wallet.describeTxError(error))}</div>`;
    const steps = outcome.querySelector("#pay-steps");
    outcome.innerHTML = (steps ? steps.outerHTML : "") + box;
    return wallet.revertOf(error)?.name === "JobMarketPriceAboveLimit";
  } finally {
    button.disabled = false;
  }
}
