// Job detail: a live timeline (created → claimed → training with progress → settled), ε spent,
// payments, released statistics, and the model downloaded and decrypted in this browser.
import { getBytes, getJSON, subscribe } from "../api.js";
import { epsilonProgress } from "../charts.js";
import { consumerKeyFor, importKeyFile, openModel } from "../consumer-keys.js";
import { chip, download, esc, eps, eth, short, when } from "../format.js";
import * as wallet from "../wallet.js";

export async function render(root, [id]) {
  async function load() {
    const job = await getJSON(`/api/jobs/${id}`);
    job.status = String(job.status).toUpperCase();
    const stages = timeline(job);
    root.innerHTML = `<h1>Job #${job.id} ${chip(job.status, job.status === "COMPLETED" ? "ok" : job.status === "EXPIRED" ? "bad" : "warn")}</h1>
      <div class="panel"><h2>Timeline</h2><ol class="steps" id="timeline">${stages
        .map((s) => `<li class="${s.state}" data-stage="${s.key}"><span class="dot"></span><span><strong>${esc(s.title)}</strong> ${s.detail ? `<span class="muted">${s.detail}</span>` : ""}</span></li>`)
        .join("")}</ol>${trainingBar(job)}</div>
      <div class="panel"><h2>Privacy</h2><dl class="kv">
        <dt>ε target</dt><dd>${eps(job.epsilon)}</dd><dt>δ</dt><dd>${esc(job.delta)}</dd>
        <dt>ε spent</dt><dd id="eps-spent">${job.status === "COMPLETED" ? eps(job.epsilon_spent) : "—"}</dd></dl>
        ${job.status === "COMPLETED" ? epsilonProgress(job.epsilon_spent, job.epsilon) : ""}${metrics(job.metrics)}</div>
      <div class="panel"><h2>Payment</h2><dl class="kv"><dt>Escrow</dt><dd>${eth(job.escrow_wei)}</dd><dt>Worker fee</dt><dd>${eth(job.worker_fee_wei)}</dd>
        <dt>Datasets</dt><dd>${job.dataset_ids.map((d) => `<a href="#/datasets/${d}">#${d}</a>`).join(", ")}</dd>
        <dt>Consumer</dt><dd>${short(job.consumer)}</dd><dt>Enclave</dt><dd>${job.enclave && !/^0x0+$/.test(job.enclave) ? short(job.enclave) : "—"}</dd></dl>
        ${job.payments && job.payments.length ? `<h3>Paid out</h3><ul>${job.payments.map((p) => `<li>${short(p.account)}: ${eth(p.amount_wei)}</li>`).join("")}</ul>` : ""}</div>
      <div class="panel"><h2>Model</h2>${resultSection(job)}</div>`;
    wireDownload(root, job);
  }
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
  const training = job.status === "CLAIMED" && progress.stage && progress.stage !== "claimed";
  const at = (e) => (e ? `block ${e.block}${e.timestamp ? ` · ${new Date(e.timestamp * 1000).toLocaleTimeString()}` : ""}` : "");
  const stages = [
    { key: "created", title: "Created", detail: at(by.created), state: "done" },
    { key: "claimed", title: "Claimed by an attested worker", detail: at(by.claimed), state: by.claimed || job.status === "COMPLETED" ? "done" : job.status === "OPEN" ? "current" : "" },
    {
      key: "training",
      title: "Training with DP-SGD",
      detail: training && progress.epochs ? `epoch ${progress.epoch ?? 0} of ${progress.epochs}, ε so far ${eps(progress.epsilon ?? 0)}` : "",
      state: job.status === "COMPLETED" ? "done" : job.status === "CLAIMED" ? "current" : "",
    },
    { key: "settled", title: "Settled: receipt verified on-chain, providers and worker paid", detail: at(by.settled), state: job.status === "COMPLETED" ? "done" : "" },
  ];
  if (job.status === "EXPIRED") stages.push({ key: "expired", title: "Expired: escrow refunded", detail: at(by.expired), state: "failed" });
  return stages;
}

function trainingBar(job) {
  const p = job.progress;
  if (job.status !== "CLAIMED" || !p || !p.epochs) return "";
  return `<p><label for="training-progress">Training progress</label>
    <progress id="training-progress" max="${p.epochs}" value="${p.epoch || 0}">${p.epoch || 0} / ${p.epochs}</progress></p>`;
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
    parts.push(`<p class="muted">No statistic of the providers' data was released; evaluate the model on your own data.</p>`);
  }
  const audit = doc.privacy_audit;
  if (audit) {
    parts.push(`<h3>Privacy audit</h3><p>Empirical ε lower bound <strong>${Number(audit.epsilon_lower_bound).toFixed(3)}</strong> at ${Math.round(audit.confidence * 100)} % confidence
      (${audit.correct} of ${audit.guesses} guesses right, ${audit.canaries} canaries) against the accountant's ${eps(audit.epsilon_target)}.</p>`);
  }
  return parts.join("");
}

function resultSection(job) {
  if (job.status !== "COMPLETED") return `<p class="muted">The encrypted model can be downloaded once the job settles.</p>`;
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
      const sealed = await getBytes(`/api/jobs/${job.id}/result`);
      const cfg = await wallet.loadConfig();
      const weights = await openModel(sealed, key, { chainId: cfg.chain_id, market: cfg.contracts.job_market, jobId: job.id, modelHash: job.model_hash });
      download(weights, `sterling-job-${job.id}-model.safetensors`);
      status.innerHTML = `<div class="ok-box" role="status" id="model-ok">Decrypted ${weights.length.toLocaleString()} bytes; their SHA-256 matches the receipt's model hash.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(error.message || error)}</div>`;
    } finally {
      button.disabled = false;
    }
  });
}
