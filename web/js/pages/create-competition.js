// "Create a competition": the private test set (a Sterling dataset package, or a CSV as on the
// "List a dataset" page) is encrypted in this browser to the key manager's attested key; only its
// ciphertext, its public schema and the rules leave the machine. Then the prize goes into escrow
// with createCompetition.
import { inspectPackage } from "../crypto/package.js";
import * as flow from "../competition-flow.js";
import { esc, money, parseMoney, paymentUnit, short } from "../format.js";
import { readCsvHeader } from "../listing-flow.js";
import * as wallet from "../wallet.js";
import { metricLabel } from "./competitions.js";

const MAX_TITLE = 200; // marketplace/competing.py Rules: a title of 1..200 characters
const MAX_RULES_TEXT = 20_000; // description and training data together
const UINT32_MAX = 2 ** 32 - 1;
const POLICY_LABELS = { organizer: "the organizer only (you)", anyone: "anyone", none: "nobody: models stay sealed" };

export async function render(root) {
  const cfg = await wallet.loadConfig();
  if (!cfg.contracts.competitions) {
    root.innerHTML = `<h1>Create a competition</h1><p class="muted">This deployment has no competition market: it runs no competitions.</p>`;
    return undefined;
  }
  const constants = await flow.marketConstants();
  const unit = paymentUnit();
  const steps = [
    ["seal", "Read the test set and encrypt it with a fresh key, wrapped to the key manager's attested key (in this browser)"],
    ["upload", "Upload the ciphertext"],
    ["documents", "Publish the schema and the rules"],
    ["deposit", "Sign the deposit; the key manager opens the test set once and keeps its key for the evaluator"],
    ...(unit.token ? [["approve", "Approve the market to take the prize"]] : []),
    ["create", "Sign and send createCompetition, escrowing the prize"],
  ];
  const metricOptions = Object.entries(constants.metrics)
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => `<option value="${esc(name)}"${name === "accuracy" ? " selected" : ""}>${esc(metricLabel(name))}</option>`)
    .join("");
  const archBoxes = Object.entries(constants.architectures)
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => `<label class="check"><input type="checkbox" name="architectures" id="arch-${esc(name)}" value="${esc(name)}" checked> ${esc(name.replace(/_/g, " "))}</label>`)
    .join("");
  const policyOptions = Object.entries(constants.policies)
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => `<option value="${esc(name)}"${name === "organizer" ? " selected" : ""}>${esc(POLICY_LABELS[name] || name)}</option>`)
    .join("");

  root.innerHTML = `<h1>Create a competition</h1>
    <p class="muted">The test set is encrypted on this machine before anything is uploaded: only the evaluator enclave ever sees it in the clear. Participants never see its labels; the public leaderboard is released through the Ladder.</p>
    <form class="stack panel" id="competition-form" novalidate>
      <div class="field"><label for="test-set">Private test set</label>
        <input id="test-set" type="file" accept=".safetensors,.csv,text/csv" required aria-describedby="test-set-hint test-set-error">
        <span class="hint" id="test-set-hint">A Sterling dataset package (.safetensors with its schema), or a CSV with a header row, numeric feature columns and one label column. Entries must take its schema.</span>
        <span class="hint" id="test-set-info"></span><span class="error" id="test-set-error" role="alert"></span></div>
      <div class="field" id="label-field" hidden><label for="label-column">Label column</label>
        <select id="label-column"></select></div>
      <div class="field"><label for="title">Title</label><input id="title" type="text" maxlength="${MAX_TITLE}" required></div>
      <div class="field"><label for="description">Description</label><textarea id="description" rows="3" placeholder="The task, how entries are judged, anything participants should know"></textarea></div>
      <div class="field"><label for="training-data">Public training data (optional)</label><input id="training-data" type="text" placeholder="a URL, or where to find it"></div>
      <div class="field"><label for="training-datasets">Sterling datasets participants may train on (optional)</label>
        <input id="training-datasets" type="text" placeholder="dataset ids, e.g. 3, 7"></div>
      <div class="row">
        <div class="field"><label for="metric">Metric</label><select id="metric">${metricOptions}</select></div>
        <div class="field"><label for="prize">Prize (${esc(unit.symbol)})</label><input id="prize" type="number" min="0" step="any" value="1" required></div>
        <div class="field"><label for="window-hours">Submission window (hours from now)</label><input id="window-hours" type="number" min="0" step="any" value="24" required></div>
        <div class="field"><label for="scoring-hours">Scoring period (hours after the window)</label><input id="scoring-hours" type="number" min="0" step="any" value="1" required></div>
      </div>
      <div class="row">
        <div class="field"><label for="public-split">Public leaderboard share of the test rows (%)</label><input id="public-split" type="number" min="0" max="100" step="any" value="30" required></div>
        <div class="field"><label for="ladder-step-input">Ladder step η (metric units)</label><input id="ladder-step-input" type="number" min="0" step="any" value="0.01" required>
          <span class="hint">The public leaderboard moves only for a gain above η.</span></div>
        <div class="field"><label for="cap">Entries per participant</label><input id="cap" type="number" min="1" max="65535" step="1" value="5" required></div>
        <div class="field"><label for="max-parameters">Max. parameters (0: no limit)</label><input id="max-parameters" type="number" min="0" step="1" value="0" required></div>
      </div>
      <fieldset class="field"><legend>Architectures allowed</legend><div class="badges">${archBoxes}</div></fieldset>
      <div class="field"><label for="purchase-policy">Who may buy entries after the close</label><select id="purchase-policy">${policyOptions}</select></div>
      <span class="error" id="terms-error" role="alert"></span>
      <div><button type="submit" id="create-submit">${unit.token ? "Encrypt, approve and open the competition" : "Encrypt and open the competition"}</button></div>
    </form>
    <div class="panel" id="progress-panel" hidden>
      <h2>Progress</h2>
      <ol class="steps" id="create-steps">${steps.map(([k, t]) => `<li data-step="${k}"><span class="dot"></span><span>${esc(t)}</span></li>`).join("")}</ol>
      <p><label for="create-bar">Current step</label> <progress id="create-bar" max="1" value="0"></progress></p>
      <div id="create-outcome" aria-live="polite"></div>
    </div>`;

  const fileInput = root.querySelector("#test-set");
  const labelField = root.querySelector("#label-field");
  const labelSelect = root.querySelector("#label-column");
  const isCsv = (file) => /\.csv$/i.test(file.name) || file.type === "text/csv";

  fileInput.addEventListener("change", async () => {
    const info = root.querySelector("#test-set-info");
    const error = root.querySelector("#test-set-error");
    info.textContent = "";
    error.textContent = "";
    fileInput.removeAttribute("aria-invalid");
    labelField.hidden = true;
    const file = fileInput.files[0];
    if (!file) return;
    try {
      if (isCsv(file)) {
        const columns = await readCsvHeader(file);
        labelSelect.innerHTML = columns.map((c) => `<option>${esc(c)}</option>`).join("");
        labelSelect.value = columns[columns.length - 1];
        labelField.hidden = false;
        info.textContent = `CSV with ${columns.length} columns; it is packaged in this browser.`;
      } else {
        const { schema, rows } = await inspectPackage(file);
        info.textContent = `${rows.toLocaleString()} rows · ${schema.feature_names.length} features · ${schema.class_names.length} classes (${schema.class_names.slice(0, 6).join(", ")}${schema.class_names.length > 6 ? ", …" : ""})`;
      }
    } catch (e) {
      error.textContent = e.message;
      fileInput.setAttribute("aria-invalid", "true");
    }
  });

  root.querySelector("#competition-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) {
      root.querySelector("#test-set-error").textContent = "Choose the test set file.";
      return;
    }
    let input;
    try {
      input = { testSet: file, labelColumn: isCsv(file) ? labelSelect.value : undefined, ...(await readForm(root, constants)) };
    } catch (e) {
      root.querySelector("#terms-error").textContent = e.message;
      return;
    }
    root.querySelector("#terms-error").textContent = "";
    const button = root.querySelector("#create-submit");
    button.disabled = true;
    root.querySelector("#progress-panel").hidden = false;
    await create(root, input);
    button.disabled = false;
  });
}

async function readForm(root, constants) {
  const value = (id) => root.querySelector(`#${id}`).value;
  const title = value("title").trim();
  const description = value("description").trim();
  const trainingData = value("training-data").trim();
  if (!title || title.length > MAX_TITLE) throw new Error(`Give a title of 1 to ${MAX_TITLE} characters.`);
  if (description.length + trainingData.length > MAX_RULES_TEXT) throw new Error(`The description and training data hold at most ${MAX_RULES_TEXT.toLocaleString()} characters together.`);
  const datasets = value("training-datasets").split(/[\s,]+/).filter(Boolean);
  for (const d of datasets) if (!/^\d+$/.test(d) || Number(d) < 1 || !Number.isSafeInteger(Number(d))) throw new Error(`Not a dataset id: ${d}`);
  let prize;
  try {
    prize = parseMoney(value("prize"));
  } catch {
    throw new Error("The prize is not a number.");
  }
  if (prize <= 0n) throw new Error("The prize must be positive.");
  const hours = (id, what) => {
    const h = Number(value(id));
    if (!(h > 0) || !Number.isFinite(h)) throw new Error(`The ${what} must be a positive number of hours.`);
    return Math.max(1, Math.round(h * 3600));
  };
  const windowSeconds = hours("window-hours", "submission window");
  const scoringPeriod = hours("scoring-hours", "scoring period");
  const split = Number(value("public-split"));
  const bps = Math.round(split * 100);
  if (!(bps >= 1 && bps <= constants.maxPublicSplitBps)) throw new Error(`The public share must be between 0.01% and ${constants.maxPublicSplitBps / 100}% of the rows.`);
  const eta = Number(value("ladder-step-input"));
  if (!(eta > 0)) throw new Error("The Ladder step η must be positive.");
  const ladderStep = Math.round(eta * (await flow.scoreScale()));
  if (ladderStep < 1 || ladderStep > UINT32_MAX) throw new Error("The Ladder step η is too small or too large for the contract.");
  const cap = Number(value("cap"));
  if (!Number.isInteger(cap) || cap < 1 || cap > 65535) throw new Error("Entries per participant: a whole number from 1 to 65,535.");
  const maxParameters = Number(value("max-parameters"));
  if (!Number.isInteger(maxParameters) || maxParameters < 0 || maxParameters > UINT32_MAX) throw new Error("Max. parameters: a whole number (0 for no limit).");
  const chosen = [...root.querySelectorAll("input[name=architectures]:checked")].map((i) => i.value);
  if (!chosen.length) throw new Error("Allow at least one architecture.");
  const architectures = chosen.reduce((mask, name) => mask | constants.architectures[name], 0);
  return {
    rules: { title, description, training_data: trainingData, training_datasets: datasets.map(Number) },
    terms: {
      prize,
      metric: constants.metrics[value("metric")],
      publicSplitBps: bps,
      ladderStep,
      windowSeconds,
      scoringPeriod,
      submissionCap: cap,
      maxParameters,
      architectures,
      purchasePolicy: constants.policies[value("purchase-policy")],
    },
  };
}

async function create(root, input) {
  const bar = root.querySelector("#create-bar");
  const outcome = root.querySelector("#create-outcome");
  outcome.innerHTML = "";
  root.querySelectorAll("#create-steps li").forEach((li) => (li.className = ""));
  let current = null;
  const step = (name) => {
    if (current) root.querySelector(`#create-steps [data-step="${current}"]`).className = "done";
    current = name;
    if (name) root.querySelector(`#create-steps [data-step="${name}"]`).className = "current";
    bar.value = 0;
  };
  try {
    const opened = await flow.openCompetition(input, { onStep: step, onProgress: (done, total) => (bar.value = total ? done / total : 1) });
    step(null);
    outcome.innerHTML = `<div class="ok-box" role="status">Opened <a href="#/competitions/${opened.competitionId}" id="created-link">competition #${opened.competitionId}</a> with ${money(input.terms.prize)} in escrow, in transaction ${short(opened.txHash)}.
      Its ${opened.rows.toLocaleString()}-row test set was sealed in this browser; only the evaluator enclave opens it.</div>`;
  } catch (error) {
    if (current) root.querySelector(`#create-steps [data-step="${current}"]`).className = "failed";
    outcome.innerHTML = `<div class="error-box" role="alert" id="create-error">${esc(flow.describeError(error))}</div>`;
  }
}
