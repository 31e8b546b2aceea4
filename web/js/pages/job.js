// Job detail: a live timeline (created → claimed → training with progress → settled, or expired
// or cancelled), the claim (holder, lease expiry, re-claims that charged ε again), ε spent,
// payments, released statistics, the consumer's "Cancel job" while it is open, and the model
// downloaded and decrypted in this browser with its model card — or, for a job whose model was
// sealed to the key manager, what can be done with a model nobody can download. The download is
// offered to the job's consumer only; anyone else sees whose model it is. The progress bar moves
// with the worker's reports (server-sent "progress" events): indeterminate while nothing is
// measurable (waiting for a claim, releasing keys), by epoch while training, full when settled.
import { getBytes, getJSON, subscribe, waitForIndex } from "../api.js";
import { epsilonProgress } from "../charts.js";
import { consumerKeyFor, importKeyFile, openModel } from "../consumer-keys.js";
import { evaluateCsv } from "../evaluate.js";
import { download, esc, eps, jobStatusChip, money, short, when } from "../format.js";
import { sealedToKeyManager } from "../key-manager.js";
import * as wallet from "../wallet.js";

export async function render(root, [id]) {
  // A static shell: live updates re-render the job, never the cancel button's message.
  root.innerHTML = `<div id="job-head"><p class="muted">Loading…</p></div>
    <div class="panel" id="cancel-panel" hidden><h2>Cancel</h2>
      <p class="muted">While no worker has claimed the job, cancelling releases the reserved ε and credits the whole escrow back to you (withdraw it from <a href="#/account">My account</a>).</p>
      <button type="button" id="cancel-job">Cancel job</button><div id="cancel-status" aria-live="polite"></div></div>
    <div id="job-view"></div>`;
  const head = root.querySelector("#job-head");
  const view = root.querySelector("#job-view");
  const cancelPanel = root.querySelector("#cancel-panel");
  const cancelButton = root.querySelector("#cancel-job");
  const cancelStatus = root.querySelector("#cancel-status");
  let busy = false;
  let schema; // the datasets' schema document (read once): its declared bounds say how the inputs were scaled

  async function load() {
    const [job, me, cfg] = await Promise.all([getJSON(`/api/jobs/${id}`), wallet.address(), wallet.loadConfig()]);
    if (schema === undefined && job.dataset_ids.length) {
      schema = await getJSON(`/api/datasets/${job.dataset_ids[0]}`).then((d) => d.schema || null, () => null);
    }
    const isConsumer = Boolean(me && me.toLowerCase() === String(job.consumer).toLowerCase());
    const sealed = sealedToKeyManager(job, cfg);
    const stages = timeline(job);
    const cancellable = job.status === "open" && isConsumer;
    cancelPanel.hidden = !cancellable && !cancelStatus.hasChildNodes(); // the outcome of a cancellation stays in view
    cancelButton.hidden = !cancellable;
    cancelButton.disabled = busy;
    head.innerHTML = `<h1>Job #${job.id} ${jobStatusChip(job.status)}</h1>`;
    // A download under way (or its outcome) survives the re-render: its handler writes to this very node.
    const downloading = view.querySelector("#download-status");
    view.innerHTML = `<div class="panel"><h2>Timeline</h2><ol class="steps" id="timeline">${stages
        .map((s) => `<li class="${s.state}" data-stage="${s.key}"><span class="dot"></span><span><strong>${esc(s.title)}</strong> ${s.detail ? `<span class="muted">${s.detail}</span>` : ""}</span></li>`)
        .join("")}</ol>${progressBar(job)}</div>
      <div class="panel"><h2>Privacy</h2><dl class="kv">
        <dt>ε target</dt><dd>${eps(job.epsilon)}</dd><dt>δ</dt><dd>${esc(job.delta)}</dd>
        <dt>ε spent</dt><dd id="eps-spent">${job.status === "completed" ? eps(job.epsilon_spent) : "—"}</dd></dl>
        ${job.status === "completed" ? epsilonProgress(job.epsilon_spent, job.epsilon) : ""}${chargesNote(job)}${metrics(job.metrics)}${scalingNote(job, schema)}</div>
      ${claimPanel(job)}
      <div class="panel"><h2>Payment</h2><dl class="kv"><dt>Escrow</dt><dd>${money(job.escrow_wei)}</dd><dt>Worker fee</dt><dd>${money(job.worker_fee_wei)}</dd>
        <dt>Datasets</dt><dd>${job.dataset_ids.map((d, i) => `<a href="#/datasets/${d}">#${d}</a> at ${money((job.prices_wei || [])[i] ?? 0)}`).join(", ")}</dd>
        ${job.refund_wei !== null && job.refund_wei !== undefined ? `<dt>Refunded</dt><dd id="refund">${money(job.refund_wei)}</dd>` : ""}
        <dt>Consumer</dt><dd>${short(job.consumer)}</dd>
        <dt>Model sealed to</dt><dd id="sealed-to">${sealed ? "the key manager enclave" : "the consumer's key"} <span class="muted">${short(job.consumer_key)}</span></dd><dt>Enclave</dt><dd>${job.enclave && !/^0x0+$/.test(job.enclave) ? short(job.enclave) : "—"}</dd></dl>
        ${job.payments && job.payments.length ? `<h3>Credited</h3><ul>${job.payments.map((p) => `<li>${short(p.account)}: ${money(p.amount_wei)} <span class="muted">(${esc(p.reason)})</span></li>`).join("")}</ul>` : ""}</div>
      <div class="panel"><h2>Model</h2>${sealed ? sealedSection(job) : isConsumer ? resultSection(job) : notConsumerSection(job, me)}</div>
      ${job.status === "completed" ? `<div class="panel" id="model-card"><h2>Model card</h2><p class="muted">Loading the card…</p></div>` : ""}`;
    if (!sealed && isConsumer) wireDownload(view, job);
    if (job.status === "completed") showCard(view.querySelector("#model-card"), job.id);
    if (downloading) view.querySelector("#download-status")?.replaceWith(downloading);
  }

  cancelButton.addEventListener("click", async () => {
    busy = true;
    cancelButton.disabled = true;
    cancelStatus.innerHTML = `<p class="muted">Sending the cancellation…</p>`;
    try {
      const market = await wallet.jobMarket({ write: true });
      const tx = await market.cancelJob(BigInt(id));
      const receipt = await tx.wait();
      await waitForIndex(receipt.blockNumber);
      cancelStatus.innerHTML = `<div class="ok-box" role="status" id="cancel-ok">Cancelled in transaction ${short(tx.hash)}; the escrow was credited back to you.</div>`;
    } catch (error) {
      cancelStatus.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
    } finally {
      busy = false;
      await load().catch(() => {});
    }
  });
  await load();
  return subscribe((type, data) => {
    if ((type === "job" || type === "progress") && (!data || data.job_id === undefined || String(data.job_id) === String(id) || String(data.id) === String(id))) {
      load().catch(() => {});
    }
  });
}

function timeline(job) {
  const by = Object.fromEntries((job.timeline || []).map((e) => [e.stage, e]));
  const progress = job.progress || {};
  const training = job.status === "claimed" && progress.stage && progress.stage !== "claimed";
  const at = (e) => (e ? `block ${e.block}${e.timestamp ? ` · ${new Date(e.timestamp * 1000).toLocaleTimeString()}` : ""}` : "");
  const stages = [
    { key: "created", title: "Created", detail: at(by.created), state: "done" },
    { key: "claimed", title: "Claimed by an attested worker", detail: at(by.claimed), state: job.status === "open" ? "current" : by.claimed || job.status === "completed" ? "done" : "" },
    {
      key: "training",
      title: "Training with DP-SGD",
      detail: training && progress.epochs ? `epoch ${progress.epoch ?? 0} of ${progress.epochs}, ε so far ${eps(progress.epsilon ?? 0)}` : "",
      state: job.status === "completed" ? "done" : job.status === "claimed" ? "current" : "",
    },
    { key: "settled", title: "Settled: receipt verified on-chain, providers and worker paid", detail: at(by.settled), state: job.status === "completed" ? "done" : "" },
  ];
  if (progress.stage === "failed" && (job.status === "claimed" || job.status === "open")) {
    // The worker's report of a failed run (error text is escaped where titles are rendered).
    stages.splice(3, 0, { key: "failed", title: `Training failed: ${progress.error || "unknown error"}`, detail: esc(progress.outcome || ""), state: "failed" });
    stages[2].state = "";
  }
  if (job.status === "expired") stages.push({ key: "expired", title: "Expired: escrow refunded", detail: at(by.expired), state: "failed" });
  if (job.status === "cancelled") {
    // Cancelled before any claim: the later stages never happen.
    return [stages[0], { key: "cancelled", title: `Cancelled by the consumer: ${money(job.refund_wei)} refunded`, detail: at(by.cancelled), state: "failed" }];
  }
  return stages;
}

const ZERO = /^0x0*$/;

function holder(job) {
  return job.enclave && !ZERO.test(job.enclave) ? job.enclave : null;
}

/** A re-claim after a lapsed lease charged every dataset the job's ε once more: say so where ε is shown. */
function chargesNote(job) {
  const n = Number(job.charges || 0);
  if (n <= 0) return "";
  const times = n === 1 ? "1 time" : `${n} times`;
  return `<p class="chip warn" id="charges">Re-claimed after a lapsed lease ${times}: ε charged ${n} extra ${n === 1 ? "time" : "times"}.</p>`;
}

function claimPanel(job) {
  const lease = Number(job.lease_expiry || 0);
  const rows = [];
  if (job.status === "claimed") {
    rows.push(`<dt>Holder</dt><dd id="holder">${short(holder(job))}</dd>`);
    if (job.operator) rows.push(`<dt>Operator</dt><dd>${short(job.operator)}</dd>`);
    rows.push(`<dt>Lease expires</dt><dd id="lease-expiry" data-lease-expiry="${lease}">${lease ? esc(when(lease)) : "—"}</dd>`);
  } else if (job.status === "open") {
    rows.push(`<dt>Claimable until</dt><dd id="claim-deadline">${job.claim_deadline ? esc(when(job.claim_deadline)) : "—"}</dd>`);
  } else if (holder(job)) {
    rows.push(`<dt>Last holder</dt><dd id="holder">${short(holder(job))}</dd>`);
  }
  rows.push(`<dt>Completion deadline</dt><dd>${esc(when(job.completion_deadline))}</dd>`);
  const released = (job.timeline || []).filter((e) => e.stage === "released").length;
  const note = released ? `<p class="muted" id="released">The claim was given back ${released === 1 ? "once" : `${released} times`} on the key manager's statement that no data key was released (nothing charged).</p>` : "";
  return `<div class="panel" id="claim-panel"><h2>Claim</h2><dl class="kv">${rows.join("")}</dl>${note}</div>`;
}

/**
 * Where the job stands, for its bar: ``value`` 0–100, or null while nothing measurable happens
 * (waiting for a claim, keys being released); null altogether once it ended without a result.
 * Training fills 20–90 % by epoch, so even a one-epoch job moves (claimed → training → sealed → settled).
 */
export function jobProgress(job) {
  const p = job.progress || {};
  if (job.status === "completed") return { value: 100, label: "Settled: the receipt is verified on-chain" };
  if (job.status === "expired" || job.status === "cancelled") return null;
  if (job.status === "open") return { value: null, label: "Waiting for an attested worker to claim the job" };
  if (p.stage === "failed") return null;
  if (p.stage === "settled") return { value: 97, label: "Result submitted; waiting for the chain's settlement" };
  if (p.stage === "training" && p.epochs) {
    const done = Math.min(Number(p.epoch || 0), Number(p.epochs));
    if (done >= p.epochs) return { value: 90, label: `Trained ${p.epochs} of ${p.epochs} epochs; sealing the model and signing the receipt` };
    return { value: Math.round(20 + (70 * done) / Number(p.epochs)), label: `Training: epoch ${done + 1} of ${p.epochs} running (${done} done)` };
  }
  if (p.stage === "keys released") return { value: null, label: "Data keys released to the enclave; decrypting the data" };
  return { value: null, label: "Claimed by an attested worker; preparing the enclave" };
}

/** The job's progress bar: determinate when the stage is measurable, else animated; running while the job runs. */
function progressBar(job) {
  const at = jobProgress(job);
  if (!at) return "";
  const running = job.status === "open" || job.status === "claimed";
  const classes = ["job-progress", at.value === null ? "indeterminate" : "", running ? "running" : "done"].filter(Boolean).join(" ");
  const value = at.value === null ? "" : ` aria-valuenow="${at.value}"`;
  return `<div class="progress-block"><div class="${classes}" id="job-progress" role="progressbar" aria-label="Job progress" aria-valuemin="0" aria-valuemax="100"${value} aria-valuetext="${esc(at.label)}">
      <span style="width:${at.value === null ? 35 : at.value}%"></span></div>
    <p class="muted" id="job-progress-label">${esc(at.label)}${at.value === null ? "" : ` · ${at.value} %`}</p></div>`;
}

/** How the model's inputs were scaled: the spec's own standardisation, the schema's declared bounds, or none. */
function scalingNote(job, schema) {
  const spec = job.model_spec || {};
  let text;
  if (Array.isArray(spec.input_mean) && spec.input_mean.length) {
    text = `Inputs: standardised with the ${spec.input_mean.length} means and standard deviations the job's spec gave; the model applies them itself.`;
  } else if (schema && Array.isArray(schema.feature_bounds) && schema.feature_bounds.some(Array.isArray)) {
    text = "Inputs: clipped to the provider's declared bounds and scaled to [-1, 1] inside the enclave (the spec gave no standardisation).";
  } else {
    text = "Inputs: used unscaled: the spec gave no standardisation and the schema declares no feature bounds. If the model predicts one class for everything, train again with standardisation statistics of your own data (the job form computes them from a CSV).";
  }
  return `<p class="muted" id="job-scaling">${esc(text)}</p>`;
}

/** Someone else's job: its model is sealed to its consumer's key, so nothing here can open it. */
function notConsumerSection(job, me) {
  return `<p class="muted" id="not-consumer">This job's model is encrypted to its consumer's key: only the consumer (${short(job.consumer)}) can download and decrypt it${
    me ? `; you are signed in as ${short(me)}` : "; no account is selected"
  }. Its receipt, privacy accounting and model card are public.</p>`;
}

function metrics(doc) {
  if (!doc) return "";
  const parts = [`<h3>Receipt metrics</h3><dl class="kv"><dt>Accountant</dt><dd>${esc(doc.accountant)}</dd><dt>Noise multiplier</dt><dd>${Number(doc.noise_multiplier).toFixed(3)}</dd><dt>Steps</dt><dd>${esc(doc.steps)}</dd></dl>`];
  const pm = doc.private_metrics;
  if (pm) {
    parts.push(`<h3>Statistics released with DP (ε ${eps(pm.epsilon)})</h3><ul>${Object.entries(pm.metrics)
      .map(([name, m]) => `<li>${esc(name.replace("_", " "))}: <strong>${Array.isArray(m.value) ? m.value.join(", ") : Number(m.value).toFixed(4)}</strong> <span class="muted">(ε ${eps(m.epsilon)}, noise scale ${Number(m.scale).toPrecision(3)})</span></li>`)
      .join("")}</ul>`);
  } else {
    parts.push(`<p class="muted" id="no-statistics">No statistic of the providers' data was released with this job (none was asked for), so nothing here says how well the model does: evaluate it on data of your own, fed as the model card below describes. To get DP statistics (class counts, training accuracy or loss), ask for them in the job form.</p>`);
  }
  const audit = doc.privacy_audit;
  if (audit) {
    parts.push(`<h3>Privacy audit</h3><p>Empirical ε lower bound <strong>${Number(audit.epsilon_lower_bound).toFixed(3)}</strong> at ${Math.round(audit.confidence * 100)} % confidence
      (${audit.correct} of ${audit.guesses} guesses right, ${audit.canaries} canaries) against the accountant's ${eps(audit.epsilon_target)}.</p>`);
  }
  return parts.join("");
}

/**
 * The model card (GET /api/jobs/:id/card, the document `sterling model card` prints): how to feed
 * the model (its inputs in order, with the standardisation it applies itself), what it answers
 * (one logit per class) and what it cost in privacy, with its receipt.
 */
async function showCard(panel, jobId) {
  if (!panel) return;
  try {
    const card = await getJSON(`/api/jobs/${jobId}/card`);
    const inputs = card.inputs, privacy = card.privacy, receipt = card.receipt;
    const arch = card.model.architecture;
    // One entry per model output: a class's logit, a regression target, or a survival interval's hazard logit.
    const outputColumns = (outputs) => {
      if (outputs.kind === "targets") return outputs.targets.map((c) => `output ${c.index} = <strong>${esc(c.name)}</strong> (${esc(c.bounds[0])} to ${esc(c.bounds[1])})`).join(", ");
      if (outputs.kind === "hazard_logits") return outputs.intervals.map((c) => `output ${c.index} = hazard of <strong>${esc(c.name)}</strong>`).join(", ");
      return outputs.classes.map((c) => `logit ${c.index} = <strong>${esc(c.name)}</strong>`).join(", ");
    };
    const shown = inputs.columns.slice(0, 64);
    panel.innerHTML = `<h2>Model card</h2>
      <p>${esc(arch.name.replace(/_/g, " "))}${arch.depth ? `-${esc(arch.depth)} (width ${esc(arch.width)}, GroupNorm)` : ""}${arch.hidden_sizes ? ` (hidden ${arch.hidden_sizes.join("×")})` : ""}, ${esc(arch.activation)};
        input float32 of shape (${inputs.shape.map(esc).join(", ")}). <span class="muted">Standardisation: ${esc(inputs.standardisation)}.</span></p>
      <div class="table-wrap"><table id="card-inputs"><thead><tr><th>#</th><th>Input column</th><th>Mean</th><th>Scale</th></tr></thead><tbody>
        ${shown.map((c) => `<tr><td>${c.index}</td><td>${esc(c.name)}</td><td>${c.mean ?? "—"}</td><td>${c.scale ?? "—"}</td></tr>`).join("")}
        ${inputs.columns.length > shown.length ? `<tr><td colspan="4" class="muted">… and ${inputs.columns.length - shown.length} more columns</td></tr>` : ""}</tbody></table></div>
      <p id="card-classes">Outputs: ${outputColumns(card.outputs)}; ${esc(card.outputs.prediction)}.</p>
      <p id="card-privacy">(ε ${eps(privacy.epsilon)}, δ ${esc(privacy.delta)}) with the ${esc(privacy.accountant)} accountant: noise multiplier ${Number(privacy.noise_multiplier).toFixed(3)},
        sample rate ${Number(privacy.sample_rate).toPrecision(3)}, ${esc(privacy.steps)} steps over ${esc(privacy.epochs)} epoch(s), clipping norm ${esc(privacy.max_grad_norm)}.</p>
      <p class="muted">Receipt: enclave ${short(receipt.enclave)}, transaction <span class="mono">${esc(receipt.transaction)}</span> (block ${esc(receipt.block)}).</p>
      <p><a id="card-markdown" href="/api/jobs/${jobId}/card?format=markdown" download="sterling-job-${jobId}-model-card.md">Download the card (Markdown)</a>
        <span class="muted">· ONNX: <span class="mono">sterling model fetch ${jobId} --key-file sterling-job-${jobId}-key.json --onnx model.onnx</span></span></p>`;
  } catch (error) {
    panel.innerHTML = `<h2>Model card</h2><div class="error-box">${esc(error.message || error)}</div>`;
  }
}

/** A model sealed to the key manager: nobody downloads it; say what it is for. */
function sealedSection(job) {
  const done = job.status === "completed";
  return `<div class="ok-box" id="model-sealed">${done ? "The model is sealed" : "When the job settles, its model will be sealed"} to the key manager enclave's key, as the job asked: nobody, its consumer included, can download or decrypt its weights.
      The key manager opens it only inside its enclave, to admit it as an entry to a competition or to serve it.</div>
    <p>${done ? `Its weights hash (the receipt's model hash) is <span class="mono" id="sealed-model-hash">${esc(job.model_hash)}</span>.` : ""}
      Submit it to a competition from the competition's page (<a href="#/competitions" id="sealed-competitions">open competitions</a>), or list it for serving with the SDK (<span class="mono">marketplace.serving.list_job_model</span>).</p>`;
}

function resultSection(job) {
  if (job.status !== "completed") return `<p class="muted">The encrypted model can be downloaded once the job settles.</p>`;
  const key = consumerKeyFor(job);
  return `<p>The model is encrypted to the job's consumer key. It is decrypted here, in your browser.</p>
    ${key ? "" : `<div class="field"><label for="key-file">Your key file for job #${job.id}</label><input id="key-file" type="file" accept="application/json"></div>`}
    <button id="download-model" type="button">Download and decrypt the model</button>
    <div id="download-status" aria-live="polite"></div>`;
}

function wireDownload(root, job) {
  const button = root.querySelector("#download-model");
  if (!button) return;
  button.addEventListener("click", async () => {
    const status = root.querySelector("#download-status");
    button.disabled = true;
    status.innerHTML = `<p class="muted">Downloading the sealed model…</p>`;
    try {
      let key = consumerKeyFor(job);
      const file = root.querySelector("#key-file")?.files?.[0];
      if (!key && file) key = await importKeyFile(file, job);
      if (!key) throw new Error("This browser does not hold the job's key: choose your key file.");
      const modelHash = await receiptModelHash(job);
      const sealed = await getBytes(`/api/jobs/${job.id}/result`);
      const cfg = await wallet.loadConfig();
      const weights = await openModel(sealed, key, { chainId: cfg.chain_id, market: cfg.contracts.job_market, jobId: job.id, modelHash });
      download(weights, `sterling-job-${job.id}-model.safetensors`);
      status.innerHTML = `<div class="ok-box" role="status" id="model-ok">Decrypted ${weights.length.toLocaleString()} bytes; their SHA-256 matches the receipt's model hash.</div>
        ${evaluationPanel(job)}`;
      wireEvaluation(status, job, weights);
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(error.message || error)}</div>`;
    } finally {
      button.disabled = false;
    }
  });
}

/** Where the consumer measures the decrypted model on labelled rows of its own (never uploaded). */
function evaluationPanel(job) {
  return `<div class="panel" id="evaluate-panel"><h3>How good is it on your data?</h3>
    <p class="muted">Choose a CSV of labelled rows you hold (not the providers'): the model's input columns by name, and the labels —
      the class column (classification), each target by name (regression), or <span class="mono">time</span> and <span class="mono">event</span> (survival).
      The model runs here, in your browser; the rows are not uploaded, and no ε is spent.</p>
    <div class="field"><label for="evaluate-file">Your labelled rows (CSV)</label><input id="evaluate-file" type="file" accept=".csv,text/csv"></div>
    <div id="evaluation" aria-live="polite"></div></div>`;
}

function wireEvaluation(root, job, weights) {
  const input = root.querySelector("#evaluate-file");
  const out = root.querySelector("#evaluation");
  input.addEventListener("change", async () => {
    const file = input.files?.[0];
    if (!file) return;
    out.innerHTML = `<p class="muted">Running the model on ${esc(file.name)}…</p>`;
    try {
      const card = await getJSON(`/api/jobs/${job.id}/card`);
      const report = evaluateCsv({ weights, card, csvText: await file.text() });
      out.innerHTML = evaluationReport(report);
    } catch (error) {
      out.innerHTML = `<div class="error-box" role="alert" id="evaluation-error">${esc(error.message || error)}</div>`;
    }
  });
}

/** The report: each metric next to the baseline's, and a bar pair for the headline metric. */
export function evaluationReport(report) {
  const fmt = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(4));
  const rows = {
    classification: [["Accuracy", report.accuracy, report.baseline.accuracy, true], ["ROC AUC", report.roc_auc, 0.5, true]],
    regression: [["RMSE", report.rmse, report.baseline.rmse, false], ["MAE", report.mae, report.baseline.mae, false], ["R²", report.r2, 0, true]],
    survival: [["Concordance index", report.concordance_index, report.baseline.concordance_index, true],
      ["Integrated Brier score", report.integrated_brier_score, report.baseline.integrated_brier_score, false]],
  }[report.task].filter(([, value]) => value !== undefined);
  const [name, model, baseline, higherBetter] = rows[0];
  const top = Math.max(model, baseline, 1e-12);
  const bar = (label, value, cls) => `<div class="eval-bar"><span>${esc(label)}</span><svg class="eval-svg" width="240" height="14" role="img" aria-label="${esc(label)} ${fmt(value)}">
      <rect width="${Math.max(0, (240 * value) / top).toFixed(1)}" height="14" class="${cls}"></rect></svg><span class="mono">${fmt(value)}</span></div>`;
  return `<div id="evaluation-report">
    <p>${report.rows.toLocaleString()} rows. ${esc(name)} (${higherBetter ? "higher" : "lower"} is better):</p>
    ${bar("this model", model, "bar-model")}${bar(report.baseline.name, baseline, "bar-baseline")}
    <div class="table-wrap"><table id="evaluation-table"><thead><tr><th>Metric</th><th>This model</th><th>${esc(report.baseline.name)}</th></tr></thead><tbody>
      ${rows.map(([n, m, b]) => `<tr><td>${esc(n)}</td><td class="mono">${fmt(m)}</td><td class="mono">${fmt(b)}</td></tr>`).join("")}
    </tbody></table></div></div>`;
}

/**
 * The model hash the job's receipt committed to, from its ResultSubmitted log read through the
 * chain (in the block the gateway says it settled in), so an untrusted gateway cannot swap it.
 */
async function receiptModelHash(job) {
  const settled = (job.timeline || []).find((e) => e.stage === "settled");
  if (!settled) throw new Error(`Job #${job.id} has no settlement yet.`);
  const market = await wallet.jobMarket();
  const logs = await market.queryFilter(market.filters.ResultSubmitted(BigInt(job.id)), settled.block, settled.block);
  if (!logs.length) throw new Error(`The chain has no ResultSubmitted for job #${job.id} in block ${settled.block}.`);
  const onChain = String(logs[logs.length - 1].args.modelHash).toLowerCase();
  if (job.model_hash && onChain !== String(job.model_hash).toLowerCase()) {
    throw new Error("The gateway's model hash differs from the one the receipt committed to on-chain; refusing to trust it.");
  }
  return onChain;
}
