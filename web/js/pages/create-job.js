// "Create a training job": pick datasets, a model and ε; eligibility and the total price are
// checked live against each dataset's status and terms before anything is sent. The total shown
// is the job's price limit (createJob's maxTotalPrice): if a provider raises a price before the
// transaction is mined, the market refuses the job instead of charging more. The model is sealed
// to a key made in this browser, or, by choice, to the key manager's attested key (for serving or a
// competition: nobody, the consumer included, ever sees its weights).
// The form guides: datasets are grouped by schema and only the chosen schema's datasets are
// offered; it says how the enclave will scale the inputs (declared bounds, or the consumer's own
// standardisation); and a model sealed to the consumer's key cannot be paid for before that key
// is backed up (downloaded or copied, then confirmed).
import { ApiError, getJSON, postJSON, waitForIndex } from "../api.js";
import { bytesToHex, chip, datasetUnavailable, download, esc, money, eps, parseMoney, paymentUnit, short } from "../format.js";
import { newConsumerKey, rememberJobKey, rememberKey } from "../consumer-keys.js";
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
  const groups = await schemaGroups(datasets);
  // The schema: the one of the dataset the user came from, else the one asked for, else the only one there is.
  const arrivedFrom = datasets.find((d) => preselected.has(String(d.id)));
  const asked = groups.find((g) => g.hash === query.get("schema"));
  let chosenSchema = arrivedFrom ? arrivedFrom.schema_hash : asked ? asked.hash : groups.length === 1 ? groups[0].hash : null;
  const key = await newConsumerKey();
  root.innerHTML = `<h1>Create a training job</h1>
    <form class="stack panel" id="job-form" novalidate>
      ${
        groups.length
          ? `<fieldset class="field" id="schema-choice"><legend><strong>1. Data schema</strong></legend>
        <span class="hint">A job trains on datasets that share one schema (the same features, in the same order, and the same classes). Choose the schema; its datasets are offered below.</span>
        <div class="schema-groups">${groups.map((g) => schemaCard(g, g.hash === chosenSchema)).join("")}</div></fieldset>
      <fieldset class="field" id="dataset-choice"><legend id="datasets-heading"></legend><div id="dataset-table"></div><p class="muted" id="other-schemas"></p></fieldset>
      <div class="panel" id="scaling" aria-live="polite"></div>`
          : `<fieldset class="field" id="dataset-choice"><legend><strong>Datasets</strong></legend><p class="muted">No datasets are listed yet. <a href="#/list">List one</a>.</p></fieldset>`
      }
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
      <fieldset class="field panel" id="key-backup"><legend><strong>Back up your model key</strong> (required before paying)</legend>
        <p>The model will be encrypted to a key made in this browser; nobody else holds it. This browser keeps a copy, but clearing its storage (or using another browser) loses it, and with it the model: save a backup now.</p>
        <p class="muted">Public key <span class="mono" id="key-public"></span></p>
        <div class="inline-form"><button type="button" id="key-download">Download the key file</button><button type="button" class="secondary" id="key-copy">Copy the key</button></div>
        <textarea id="key-text" rows="3" readonly hidden aria-label="your model key (JSON)"></textarea>
        <span class="hint" id="key-status" role="status"></span>
        <label class="check"><input type="checkbox" id="key-saved" disabled> I have stored the key file or the copied key somewhere safe, outside this browser.</label>
      </fieldset>
      <div id="summary" class="panel" aria-live="polite"></div>
      <span class="error" id="spec-error" role="alert"></span>
      <div class="pay-row"><button type="submit" id="create-submit">${unit.token ? "Approve and create the job" : "Create job and pay"}</button>
        <span class="hint" id="pay-reason" role="status"></span></div>
      <div id="job-outcome" aria-live="polite"></div>
    </form>`;
  const form = root.querySelector("#job-form");
  const byId = new Map(datasets.map((d) => [String(d.id), d]));
  const context = {
    byId, me, marketPaused: Boolean(health.market_paused), maxDatasets: limits.maxDatasetsPerJob,
    groups, schema: () => groups.find((g) => g.hash === chosenSchema) || null, backup: { key, saved: false },
  };
  const showSchema = () => {
    const group = context.schema();
    root.querySelectorAll(".schema-group").forEach((card) => card.classList.toggle("chosen", card.dataset.schema === chosenSchema));
    if (!groups.length) return;
    root.querySelector("#datasets-heading").innerHTML = group
      ? `<strong>2. Datasets of this schema</strong>: ${esc(describeSchema(group))}`
      : `<strong>2. Datasets</strong>: choose a schema above first`;
    root.querySelector("#dataset-table").innerHTML = group ? datasetTable(group.datasets, preselected) : "";
    const others = datasets.filter((d) => d.schema_hash !== chosenSchema);
    const otherGroups = new Set(others.map((d) => d.schema_hash)).size;
    root.querySelector("#other-schemas").textContent = group && others.length
      ? `${others.length} dataset${others.length === 1 ? "" : "s"} of ${otherGroups} other schema${otherGroups === 1 ? "" : "s"} cannot join this job (their features or classes differ); choose their schema above to use them instead.`
      : "";
    root.querySelector("#scaling").innerHTML = group ? scalingSection(group) : `<p class="muted">Choose a schema to see how the enclave scales its features.</p>`;
    const statsFile = root.querySelector("#stats-file");
    if (statsFile) statsFile.addEventListener("change", () => statisticsFromFile(root, group, statsFile.files[0]).then(() => check(form, root, context)));
  };
  root.querySelectorAll("input[name=schema]").forEach((radio) =>
    radio.addEventListener("change", () => {
      chosenSchema = radio.value;
      showSchema();
      check(form, root, context);
    }),
  );
  wireKeyBackup(root, context, () => check(form, root, context));
  showSchema();
  form.addEventListener("input", () => check(form, root, context));
  form.addEventListener("change", () => check(form, root, context));
  check(form, root, context);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const state = check(form, root, context);
    if (!state.ok) return;
    const refused = await submit(form, root, state, context);
    if (refused) await refresh(form, root, context);
    else check(form, root, context);
  });
}

/** Datasets grouped by schema hash, each with its schema document (read once per group), most datasets first. */
async function schemaGroups(datasets) {
  const byHash = new Map();
  for (const d of datasets) {
    if (!byHash.has(d.schema_hash)) byHash.set(d.schema_hash, { hash: d.schema_hash, datasets: [], schema: null });
    byHash.get(d.schema_hash).datasets.push(d);
  }
  const groups = [...byHash.values()];
  await Promise.all(
    groups.map(async (g) => {
      try {
        g.schema = (await getJSON(`/api/datasets/${g.datasets[0].id}`)).schema || null;
      } catch {
        g.schema = null; // the page still offers the group; its description says the schema is unknown
      }
    }),
  );
  return groups.sort((a, b) => b.datasets.length - a.datasets.length);
}

/** The number of (flattened) features a schema document describes. */
function featureCount(schema) {
  if (!schema) return null;
  if (Array.isArray(schema.feature_shape) && schema.feature_shape.length) return schema.feature_shape.reduce((a, b) => a * Number(b), 1);
  return Array.isArray(schema.feature_names) ? schema.feature_names.length : null;
}

function labelNames(group) {
  return [...new Set(group.datasets.map((d) => d.datasheet?.label_name).filter(Boolean))];
}

function titles(group) {
  return group.datasets.map((d) => d.datasheet?.title).filter(Boolean);
}

/** "4 features (x0, x1, …), label "diagnosis": 2 classes (benign, malignant)" — what a group's datasets share. */
function describeSchema(group) {
  const s = group.schema;
  if (!s) return `schema ${String(group.hash).slice(0, 10)}… (its document is not on this gateway)`;
  const n = featureCount(s);
  const names = (s.feature_names || []).slice(0, 4).join(", ") + ((s.feature_names || []).length > 4 ? ", …" : "");
  const shape = (s.feature_shape || []).length > 1 ? ` of shape ${s.feature_shape.join("×")}` : "";
  const labels = labelNames(group);
  const classes = s.class_names || [];
  const label = `${labels.length ? `label "${labels.join('" / "')}"` : "label"}: ${classes.length} classes (${classes.slice(0, 6).join(", ")}${classes.length > 6 ? ", …" : ""})`;
  return `${n} feature${n === 1 ? "" : "s"}${shape}${names ? ` (${names})` : ""}, ${label}`;
}

function hasBounds(schema) {
  return Boolean(schema && Array.isArray(schema.feature_bounds) && schema.feature_bounds.some((b) => Array.isArray(b)));
}

function schemaCard(group, chosen) {
  const t = titles(group);
  const n = group.datasets.length;
  return `<label class="schema-group${chosen ? " chosen" : ""}" data-schema="${esc(group.hash)}">
      <input type="radio" name="schema" value="${esc(group.hash)}" ${chosen ? "checked" : ""}>
      <span><strong>${esc(describeSchema(group))}</strong><br>
        <span class="muted">schema <span class="mono">${esc(String(group.hash).slice(0, 10))}…</span> · ${n} dataset${n === 1 ? "" : "s"}${t.length ? `: ${esc(t.slice(0, 3).join(" · "))}${t.length > 3 ? " …" : ""}` : ` (${group.datasets.map((d) => `#${d.id}`).join(", ")})`}</span>
        ${hasBounds(group.schema) ? ` ${chip("feature bounds declared", "ok")}` : ` ${chip("no feature bounds", "warn")}`}</span></label>`;
}

function datasetTable(datasets, preselected) {
  return `<div class="table-wrap"><table class="cards-on-phone" id="dataset-rows"><thead><tr><th>Use</th><th>Dataset</th><th>Price</th><th>ε left</th><th>Max ε/job</th><th>Check</th></tr></thead><tbody>
    ${datasets
      .map((d) => `<tr data-row="${d.id}"><td data-label="Use"><input type="checkbox" name="dataset" value="${d.id}" id="ds-${d.id}" ${preselected.has(String(d.id)) ? "checked" : ""} aria-label="use dataset ${d.id}"></td>
        <td data-label="Dataset"><label for="ds-${d.id}">#${d.id}${d.datasheet?.title ? ` ${esc(d.datasheet.title)}` : ""}</label>${d.datasheet?.rows ? ` <span class="muted">${Number(d.datasheet.rows).toLocaleString()} rows</span>` : ""}</td>
        <td data-label="Price" data-price="${d.id}">${money(d.price_wei)}</td><td data-label="ε left">${eps(d.remaining_epsilon)}</td><td data-label="Max ε/job">${eps(d.max_epsilon_per_job)}</td><td data-label="Check" data-check="${d.id}"></td></tr>`)
      .join("")}</tbody></table></div>`;
}

/**
 * How the enclave will scale the model's inputs. With declared bounds (and no standardisation in
 * the spec) it clips each feature to them and scales it to [-1, 1]; without, the features reach the
 * model as they are, which can leave it predicting one class: the consumer may give standardisation
 * statistics of its own data (computed here from a CSV, never sent).
 */
function scalingSection(group) {
  const s = group.schema;
  const n = featureCount(s);
  const names = (s && s.feature_names) || [];
  let head;
  if (hasBounds(s)) {
    const rows = s.feature_bounds
      .map((b, i) => `<tr><td data-label="#">${i}</td><td data-label="Feature">${esc(names[i] ?? `feature ${i}`)}</td><td data-label="Bounds">${Array.isArray(b) ? `[${esc(b[0])}, ${esc(b[1])}]` : `<span class="muted">none declared: passed as it is</span>`}</td></tr>`)
      .slice(0, 64)
      .join("");
    head = `<div class="ok-box" id="scaling-bounds">Features are clipped to the provider's declared bounds and scaled to [-1, 1] inside the enclave (unless you give standardisation statistics below, which then apply instead).</div>
      <div class="table-wrap"><table class="cards-on-phone" id="bounds-table"><thead><tr><th>#</th><th>Feature</th><th>Declared bounds</th></tr></thead><tbody>${rows}
        ${s.feature_bounds.length > 64 ? `<tr><td colspan="3" class="muted">… and ${s.feature_bounds.length - 64} more features</td></tr>` : ""}</tbody></table></div>`;
  } else {
    head = `<div class="warn-box" id="scaling-unscaled" role="note"><strong>No feature bounds declared:</strong> the enclave gives the model these features unscaled. Features on very different scales (say 0.001 next to 2,000) can leave the model predicting one class for every row.
      Give standardisation statistics of your own data of this schema below (the mean and the standard deviation of each feature): the model then applies them to every input, in training and when you use it.</div>`;
  }
  return `<h2>How the model's inputs are scaled</h2>${head}
    <div class="row"><div class="field"><label for="input-mean">Mean of each feature (optional)</label><input id="input-mean" name="input_mean" type="text" placeholder="${n ? `${n} numbers, comma-separated` : "comma-separated"}"></div>
      <div class="field"><label for="input-scale">Standard deviation of each feature</label><input id="input-scale" name="input_scale" type="text" placeholder="${n ? `${n} positive numbers` : "positive numbers"}"></div></div>
    <div class="field"><label for="stats-file">Or compute them from a CSV of your own data</label><input id="stats-file" type="file" accept=".csv,text/csv" aria-describedby="stats-hint">
      <span class="hint" id="stats-hint">Its header must name the ${n ?? ""} features${names.length ? ` (${esc(names.slice(0, 4).join(", "))}${names.length > 4 ? ", …" : ""})` : ""}; the file is read in this browser and never sent.</span></div>`;
}

/** Fill the mean and scale fields from a CSV of the consumer's own data (read here, never uploaded). */
async function statisticsFromFile(root, group, file) {
  const hint = root.querySelector("#stats-hint");
  if (!file || !group?.schema) return;
  try {
    const lines = (await file.text()).split(/\r?\n/).filter((l) => l.trim());
    const header = lines[0].split(",").map((h) => h.trim().replace(/^"|"$/g, ""));
    const names = group.schema.feature_names || [];
    const columns = names.map((name) => header.indexOf(name));
    const missing = names.filter((_, i) => columns[i] < 0);
    if (missing.length) throw new Error(`the CSV has no column ${missing.slice(0, 3).map((m) => `"${m}"`).join(", ")}`);
    const sums = names.map(() => 0), squares = names.map(() => 0);
    let rows = 0;
    for (const line of lines.slice(1)) {
      const cells = line.split(",");
      const values = columns.map((c) => Number(cells[c]));
      if (values.some((v) => !Number.isFinite(v))) throw new Error(`row ${rows + 2} holds a value that is not a number`);
      values.forEach((v, i) => ((sums[i] += v), (squares[i] += v * v)));
      rows += 1;
    }
    if (rows < 2) throw new Error("it needs at least two rows");
    const means = sums.map((s) => s / rows);
    const scales = squares.map((q, i) => Math.sqrt(Math.max(q / rows - means[i] ** 2, 0)) || 1);
    const fmt = (v) => Number(v.toPrecision(6));
    root.querySelector("#input-mean").value = means.map(fmt).join(", ");
    root.querySelector("#input-scale").value = scales.map(fmt).join(", ");
    hint.textContent = `Computed from ${rows} rows of ${file.name}, in this browser.`;
  } catch (error) {
    hint.textContent = `Could not use ${file.name}: ${error.message || error}.`;
  }
}

/** The key-file document, as marketplace/key_file.py reads it (``job_id`` null until the job exists). */
function keyDocument(key, jobId = null) {
  return JSON.stringify({ job_id: jobId === null ? null : Number(jobId), public_key: bytesToHex(key.publicKey), private_key: bytesToHex(key.privateKey) });
}

/** The required backup of the model key: download or copy it, then confirm; only then can the job be paid. */
function wireKeyBackup(root, context, changed) {
  const box = root.querySelector("#key-backup");
  const saved = root.querySelector("#key-saved");
  const status = root.querySelector("#key-status");
  const text = root.querySelector("#key-text");
  const show = () => {
    root.querySelector("#key-public").textContent = "0x" + bytesToHex(context.backup.key.publicKey);
  };
  const backedUp = (message) => {
    saved.disabled = false;
    status.textContent = message;
  };
  context.backup.reset = (key) => {
    context.backup.key = key;
    context.backup.saved = false;
    saved.checked = false;
    saved.disabled = true;
    text.hidden = true;
    text.value = "";
    status.textContent = "A new key for the next job: back it up too.";
    show();
  };
  show();
  root.querySelector("#key-download").addEventListener("click", () => {
    const key = context.backup.key;
    download(new TextEncoder().encode(keyDocument(key)), `sterling-key-${bytesToHex(key.publicKey).slice(0, 8)}.json`, "application/json");
    backedUp("Key file saved by your browser: keep it out of this browser (a password manager, an encrypted drive), then tick the box.");
  });
  root.querySelector("#key-copy").addEventListener("click", async () => {
    const doc = keyDocument(context.backup.key);
    try {
      await navigator.clipboard.writeText(doc);
      backedUp("Copied to the clipboard: paste it somewhere safe, then tick the box.");
    } catch {
      text.hidden = false;
      text.value = doc;
      text.select();
      backedUp("This browser did not allow copying: the key is selected above; copy it (Ctrl+C) and store it, then tick the box.");
    }
  });
  saved.addEventListener("change", () => {
    context.backup.saved = saved.checked;
    changed();
  });
  const sealChoice = () => (box.hidden = new FormData(root.querySelector("#job-form")).get("seal") === "key-manager");
  root.querySelectorAll("input[name=seal]").forEach((r) => r.addEventListener("change", sealChoice));
  sealChoice();
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
  const mean = numbers(data.get("input_mean")), scale = numbers(data.get("input_scale"));
  if (mean.length || scale.length) {
    s.input_mean = mean;
    s.input_scale = scale;
  }
  return s;
}

/** Live eligibility of each chosen dataset and the total price; returns what submit needs. */
function check(form, root, { byId, me, marketPaused, maxDatasets, schema: chosenSchema, backup }) {
  const data = new FormData(form);
  const group = chosenSchema();
  const chosen = data.getAll("dataset").map((id) => byId.get(String(id))).filter((d) => d && group && d.schema_hash === group.hash);
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
  const mean = numbers(data.get("input_mean")), scale = numbers(data.get("input_scale"));
  const width = featureCount(group?.schema);
  if (mean.length || scale.length) {
    if (mean.length !== scale.length) problems.push("Give as many standard deviations as means.");
    else if (width && mean.length !== width) problems.push(`The standardisation needs ${width} means and ${width} standard deviations, one per feature (${mean.length} given).`);
    if ([...mean, ...scale].some((v) => !Number.isFinite(v))) problems.push("The standardisation statistics must be numbers.");
    else if (scale.some((v) => !(v > 0))) problems.push("Every standard deviation must be positive.");
  }
  let total = fee;
  root.querySelectorAll("[data-check]").forEach((cell) => (cell.innerHTML = ""));
  for (const d of chosen) {
    const reasons = [];
    const unavailable = datasetUnavailable(d);
    if (unavailable) reasons.push(unavailable);
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
  if (!group) problems.push("Choose a data schema.");
  else if (!chosen.length) problems.push("Choose at least one dataset of this schema.");
  if (chosen.length > maxDatasets) problems.push(`At most ${maxDatasets} datasets per job.`);
  if (marketPaused) problems.push("The market is in an emergency stop and accepts no new jobs.");
  root.querySelector("#summary").innerHTML = `<strong id="total">Total to escrow: ${money(total)}</strong> <span class="muted">(${chosen.length} dataset${chosen.length === 1 ? "" : "s"} + worker fee ${money(fee)}; the most this job can cost you)</span>
    ${problems.length ? `<ul class="error">${problems.map((p) => `<li>${esc(p)}</li>`).join("")}</ul>` : `<p class="eligible">Every dataset accepts this job.</p>`}`;
  // The model key must be backed up before paying (unless the model is sealed to the key manager).
  const toMe = data.get("seal") !== "key-manager";
  const unsaved = toMe && !backup.saved;
  const reason = problems.length
    ? `Not yet: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more above)` : ""}`
    : unsaved
      ? "Back up your model key first: download the key file or copy it, then tick the box."
      : "";
  root.querySelector("#pay-reason").textContent = reason;
  root.querySelector("#create-submit").disabled = Boolean(reason);
  return { ok: !reason, chosen, epsilon, delta, fee, total, toMe };
}

/**
 * Publish the spec and create the job with ``maxTotalPrice`` = the total shown. Native currency:
 * that total is sent with the transaction. Token: the market is approved for it first, then the
 * job is created; both steps are shown. Returns true when the market refused a stale price.
 */
async function submit(form, root, state, context) {
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
    const key = sealedToKeyManager ? null : context.backup.key;
    if (key) rememberKey(key); // kept in this browser before the job exists, besides the user's backup
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
      Its model will be encrypted to the key you backed up (public key ${short("0x" + bytesToHex(key.publicKey), 4)}); this browser keeps a copy too.
      <button type="button" class="secondary" id="save-key">Save it again, named for job #${jobId}</button></div>`;
    root.querySelector("#save-key").addEventListener("click", () =>
      download(new TextEncoder().encode(keyDocument(key, jobId)), `sterling-job-${jobId}-key.json`, "application/json"),
    );
    context.backup.reset(await newConsumerKey()); // the next job from this form gets a key of its own
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
