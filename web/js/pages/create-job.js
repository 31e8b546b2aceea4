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
import { bytesToHex, categoricalFeatures, chip, datasetUnavailable, download, esc, few, labelSummary, money, eps, parseMoney, paymentUnit, short } from "../format.js";
import { newConsumerKey, rememberJobKey, rememberKey } from "../consumer-keys.js";
import { attestedKeyManagerKey } from "../key-manager.js";
import { deltaUnits, epsilonUnits } from "../onchain.js";
import * as wallet from "../wallet.js";

const DATASETS_PATH = "/api/datasets?limit=200&sort=-listed";

/** The architectures a job can train (enclave_worker/trusted/models.py): whether each needs image features, and its depth and width when it has them. */
const ARCHITECTURES = {
  mlp: { label: "MLP", images: false },
  logistic_regression: { label: "Logistic regression", images: false },
  cnn: { label: "CNN (images)", images: true },
  resnet: { label: "ResNet (colour images)", images: true, depth: 32, width: 16, depthHint: "6n+2: 20, 32, 44, 56 or 110 layers" },
  vgg: { label: "VGG (colour images)", images: true, depth: 9, width: 64, depthHint: "6 to 15 layers (VGG-9: six convolutions, three dense)" },
};

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
      <div class="row" id="model-fields">
        <div class="field"><label for="architecture">Model</label><select id="architecture" name="architecture" aria-describedby="architecture-hint">
          ${Object.entries(ARCHITECTURES).map(([value, a]) => `<option value="${value}">${esc(a.label)}</option>`).join("")}</select>
          <span class="hint" id="architecture-hint"></span></div>
        <div class="field" data-arch="mlp cnn"><label for="hidden">Hidden sizes</label><input id="hidden" name="hidden_sizes" type="text" value="32" aria-describedby="hidden-hint"><span class="hint" id="hidden-hint">comma-separated, e.g. 64,32</span></div>
        <div class="field" data-arch="cnn"><label for="channels">Conv channels (CNN)</label><input id="channels" name="channels" type="text" value="16,32"></div>
        <div class="field" data-arch="resnet vgg"><label for="depth">Depth</label><input id="depth" name="depth" type="number" min="6" max="110" value="32" aria-describedby="depth-hint"><span class="hint" id="depth-hint"></span></div>
        <div class="field" data-arch="resnet vgg"><label for="width">Width</label><input id="width" name="width" type="number" min="4" max="256" value="16" aria-describedby="width-hint"><span class="hint" id="width-hint">channels of the first stage, doubled twice</span></div>
        <div class="field" data-arch="mlp cnn resnet vgg"><label for="activation">Activation</label><select id="activation" name="activation"><option>relu</option><option>tanh</option></select></div>
      </div>
      <div class="row" id="task-fields">
        <div class="field" data-task="regression"><label for="regression-loss">Loss</label><select id="regression-loss" name="regression_loss" aria-describedby="regression-loss-hint">
          <option value="mse">squared error</option><option value="huber">Huber (δ = 1)</option></select>
          <span class="hint" id="regression-loss-hint">on the targets scaled to [-1, 1] by their declared bounds</span></div>
        <div class="field" data-task="survival"><label for="survival-head">Hazard model</label><select id="survival-head" name="survival_head" aria-describedby="survival-head-hint">
          <option value="proportional">proportional</option><option value="per_interval">one output per interval</option></select>
          <span class="hint" id="survival-head-hint">proportional: one score per patient and a baseline per interval (fewer parameters, better under DP)</span></div>
        <div class="field" data-task="survival"><label for="survival-prior">Share expected to survive the last interval</label><input id="survival-prior" name="survival_prior" type="number" min="0" max="1" step="any" value="0.5" aria-describedby="survival-prior-hint">
          <span class="hint" id="survival-prior-hint">your own estimate (your data, the literature), never the providers': the model starts from it</span></div>
        <div class="field" data-task="categories"><label for="embedding-dim">Embedding width</label><input id="embedding-dim" name="embedding_dim" type="number" min="1" max="256" placeholder="min(8, vocabulary)" aria-describedby="embedding-hint">
          <span class="hint" id="embedding-hint"></span></div>
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
      <fieldset class="field" id="released-statistics" data-task="classification"><legend><strong>Released statistics</strong> (optional, DP — their ε comes out of the job's ε)</legend>
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
  const architecture = root.querySelector("#architecture");
  architecture.addEventListener("change", () => {
    const a = ARCHITECTURES[architecture.value];
    if (a.depth) {
      root.querySelector("#depth").value = a.depth;
      root.querySelector("#width").value = a.width;
    }
    showModelFields(root, context.schema());
  });
  root.querySelectorAll("input[name=schema]").forEach((radio) => radio.addEventListener("change", () => showModelFields(root, context.schema())));
  showSchema();
  showModelFields(root, context.schema());
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
  const names = few(s.feature_names || [], 4);
  const shape = (s.feature_shape || []).length > 1 ? ` of shape ${s.feature_shape.join("×")}` : "";
  const labels = labelNames(group);
  const named = labels.length ? `label "${labels.join('" / "')}"` : "label";
  const categorical = categoricalFeatures(s);
  const kinds = categorical.length ? `; ${categorical.length} categorical (${few(categorical, 3)})` : "";
  return `${n} feature${n === 1 ? "" : "s"}${shape}${names ? ` (${names})` : ""}${kinds}, ${named}: ${labelSummary(s)}`;
}

/** A schema's task ("classification" when it has no document here). */
function taskOf(schema) {
  return schema?.task || "classification";
}

/** Show the fields the chosen architecture takes and those of the schema's task (the rest are hidden and not sent). */
function showModelFields(root, group) {
  const name = root.querySelector("#architecture").value;
  const a = ARCHITECTURES[name];
  const schema = group?.schema;
  const task = taskOf(schema);
  const categorical = categoricalFeatures(schema);
  root.querySelectorAll("[data-arch]").forEach((field) => (field.hidden = !field.dataset.arch.split(" ").includes(name)));
  root.querySelectorAll("[data-task]").forEach((field) => {
    const wanted = field.dataset.task;
    field.hidden = wanted === "categories" ? !categorical.length || a.images : wanted !== task;
  });
  if (a.depthHint) root.querySelector("#depth-hint").textContent = a.depthHint;
  root.querySelector("#embedding-hint").textContent = categorical.length
    ? `each of ${categorical.length} categorical feature${categorical.length === 1 ? "" : "s"} (${categorical.slice(0, 3).join(", ")}${categorical.length > 3 ? ", …" : ""}) becomes a learned vector this wide`
    : "";
  const output = task === "regression" ? "one output per target" : task === "survival" ? "a hazard per time interval" : "a score per class";
  root.querySelector("#architecture-hint").textContent = `${a.images ? "for image features (channels × height × width)" : "for flat features"}; ${output}`;
}

/** Why the chosen model cannot train on the chosen schema, as far as the page can tell (the gateway checks the rest). */
function modelProblems(data, group) {
  const name = data.get("architecture");
  const a = ARCHITECTURES[name];
  const problems = [];
  const shape = group?.schema?.feature_shape;
  if (Array.isArray(shape)) {
    if (a.images && shape.length !== 3) problems.push(`${a.label} needs image features (channels × height × width); this schema's features are flat: choose the MLP or logistic regression.`);
    if (!a.images && shape.length !== 1) problems.push(`${a.label} needs flat features; this schema's are ${shape.join("×")} images: choose the CNN, ResNet or VGG.`);
  }
  if (a.depth) {
    const depth = Number(data.get("depth")), width = Number(data.get("width"));
    if (name === "resnet" && !(Number.isInteger(depth) && depth >= 8 && depth <= 110 && (depth - 2) % 6 === 0)) problems.push("A ResNet's depth is 6n+2: 20, 32, 44, 56 or 110.");
    if (name === "vgg" && !(Number.isInteger(depth) && depth >= 6 && depth <= 15)) problems.push("A VGG's depth is 6 to 15.");
    if (!(Number.isInteger(width) && width >= 8 && width <= 256 && width % 8 === 0)) problems.push("The width must be a multiple of 8 (its GroupNorm has 8 groups) between 8 and 256.");
  }
  if (taskOf(group?.schema) === "survival") {
    const prior = Number(data.get("survival_prior"));
    if (!(prior > 0 && prior < 1)) problems.push("The share expected to survive must be between 0 and 1 (exclusive).");
  }
  return problems;
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
  const imageChannels = (s?.feature_shape || []).length === 3 ? s.feature_shape[0] : null;
  const names = (s && s.feature_names) || [];
  let head;
  if (hasBounds(s)) {
    const rows = s.feature_bounds
      .map((b, i) => `<tr><td data-label="#">${i}</td><td data-label="Feature">${esc(names[i] ?? `feature ${i}`)}</td><td data-label="Bounds">${Array.isArray(b) ? `[${esc(b[0])}, ${esc(b[1])}]` : s.categories?.[names[i]] ? `<span class="muted">categorical (${esc(few(s.categories[names[i]], 4))}): its category's embedding</span>` : `<span class="muted">none declared: passed as it is</span>`}</td></tr>`)
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
    <div class="row"><div class="field"><label for="input-mean">Mean of each feature (optional)</label><input id="input-mean" name="input_mean" type="text" placeholder="${n ? `${n} numbers${imageChannels ? ` (or ${imageChannels}, one per channel)` : ""}, comma-separated` : "comma-separated"}"></div>
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
    // Categorical columns pass to their embeddings unchanged: mean 0 and scale 1, whatever the CSV holds there.
    const declared = new Set(categoricalFeatures(group.schema));
    const categorical = names.map((name) => declared.has(name));
    const columns = names.map((name) => header.indexOf(name));
    const missing = names.filter((_, i) => columns[i] < 0 && !categorical[i]);
    if (missing.length) throw new Error(`the CSV has no column ${missing.slice(0, 3).map((m) => `"${m}"`).join(", ")}`);
    const sums = names.map(() => 0), squares = names.map(() => 0);
    let rows = 0;
    for (const line of lines.slice(1)) {
      const cells = line.split(",");
      const values = columns.map((c, i) => (categorical[i] ? 0 : Number(cells[c])));
      if (values.some((v) => !Number.isFinite(v))) throw new Error(`row ${rows + 2} holds a value that is not a number`);
      values.forEach((v, i) => ((sums[i] += v), (squares[i] += v * v)));
      rows += 1;
    }
    if (rows < 2) throw new Error("it needs at least two rows");
    const means = sums.map((s) => s / rows);
    const scales = squares.map((q, i) => (categorical[i] ? 1 : Math.sqrt(Math.max(q / rows - means[i] ** 2, 0)) || 1));
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

/** The model spec the form describes for datasets of ``group``'s schema: only the fields of its architecture and task. */
function spec(form, group) {
  const data = new FormData(form);
  const architecture = data.get("architecture");
  const task = taskOf(group?.schema);
  const s = {
    architecture,
    activation: data.get("activation"),
    epochs: Number(data.get("epochs")),
    batch_size: Number(data.get("batch_size")),
    learning_rate: Number(data.get("learning_rate")),
    max_grad_norm: Number(data.get("max_grad_norm")),
    accountant: data.get("accountant"),
  };
  if (architecture === "mlp" || architecture === "cnn") s.hidden_sizes = numbers(data.get("hidden_sizes"));
  if (architecture === "cnn") s.channels = numbers(data.get("channels"));
  if (ARCHITECTURES[architecture].depth) {
    s.depth = Number(data.get("depth"));
    s.width = Number(data.get("width"));
  }
  if (task === "regression") s.regression_loss = data.get("regression_loss");
  if (task === "survival") {
    s.survival_head = data.get("survival_head");
    s.survival_prior = Number(data.get("survival_prior"));
  }
  const embedding = String(data.get("embedding_dim") || "").trim();
  if (embedding && categoricalFeatures(group?.schema).length && !ARCHITECTURES[architecture].images) s.embedding_dim = Number(embedding);
  const metrics = task === "classification" ? data.getAll("private_metrics") : [];
  if (metrics.length) {
    s.private_metrics = metrics;
    s.metrics_epsilon = Number(data.get("metrics_epsilon"));
  }
  const canaries = Number(data.get("audit_canaries"));
  if (canaries > 0 && task === "classification") s.audit_canaries = canaries;
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
  const classifying = taskOf(group?.schema) === "classification";
  const metricsEps = classifying ? Number(data.get("metrics_epsilon") || 0) : 0;
  if (classifying && data.getAll("private_metrics").length && !(metricsEps > 0)) problems.push("Give the statistics a positive ε.");
  if (metricsEps > 0 && metricsEps >= epsilon) problems.push("The statistics' ε must leave some of the job's ε for training.");
  problems.push(...modelProblems(data, group));
  const mean = numbers(data.get("input_mean")), scale = numbers(data.get("input_scale"));
  const width = featureCount(group?.schema);
  const shape = group?.schema?.feature_shape || [];
  const channels = shape.length === 3 ? Number(shape[0]) : null;
  if (mean.length || scale.length) {
    if (mean.length !== scale.length) problems.push("Give as many standard deviations as means.");
    else if (width && mean.length !== width && !(channels && mean.length === channels)) {
      const perChannel = channels ? ` (or ${channels}, one per image channel)` : "";
      problems.push(`The standardisation needs ${width} means and ${width} standard deviations, one per feature${perChannel} (${mean.length} given).`);
    }
    if ([...mean, ...scale].some((v) => !Number.isFinite(v))) problems.push("The standardisation statistics must be numbers.");
    else if (scale.some((v) => !(v > 0))) problems.push("Every standard deviation must be positive.");
    const names = group?.schema?.feature_names || [];
    const declared = new Set(categoricalFeatures(group?.schema));
    const fixed = names.filter((name, i) => declared.has(name) && i < mean.length && (mean[i] !== 0 || scale[i] !== 1));
    if (fixed.length) problems.push(`${few(fixed, 3)} ${fixed.length === 1 ? "is" : "are"} categorical: mean 0 and standard deviation 1 there (the category's index passes to its embedding unchanged).`);
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
      // With the schema's hash the gateway also refuses a spec that cannot train on these datasets, before anything is paid
      // (when it holds the schema's document; the trainer checks again in any case).
      const group = context.schema();
      const fitted = group?.schema ? `?schema=${encodeURIComponent(String(group.hash).replace(/^0x/, ""))}` : "";
      stored = await postJSON(`/api/specs${fitted}`, spec(form, group));
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
