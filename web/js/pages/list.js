// "List a dataset": the CSV is read and checked when it is chosen (separator, preview, label,
// every cell), then packaged and encrypted in this browser; only ciphertext, the public schema
// (with the provider's declared feature bounds), the public datasheet and the key wrapped to the
// key manager's attested key leave the machine. Every error is shown next to the control that
// caused it before anything is encrypted; results and errors are scrolled into view.
import { uploadBlob, postJSON, waitForIndex } from "../api.js";
import { esc, parseMoney, paymentUnit, short } from "../format.js";
import {
  datasetFromTable,
  datasheetDocument,
  datasheetProblems,
  DatasheetRejected,
  depositDataKey,
  encryptForListing,
  parseTags,
  previousListing,
  publishDatasheet,
  readCsvTable,
  rememberListing,
  rowsOutsideBounds,
} from "../listing-flow.js";
import { normaliseFeatureBounds, schemaHash } from "../crypto/package.js";
import { toHex } from "../crypto/bytes.js";
import { deltaUnits, epsilonFromUnits, epsilonUnits } from "../onchain.js";
import { attestedKeyManagerKey } from "../key-manager.js";
import * as wallet from "../wallet.js";

// [key, text, share of the overall progress bar]
const STEPS = [
  ["package", "Read and check the CSV (in this browser)", 0.04],
  ["datasheet", "Publish the datasheet", 0.03],
  ["schema", "Publish the schema", 0.03],
  ["encrypt", "Encrypt with a fresh data key (in this browser)", 0.3],
  ["upload", "Upload the ciphertext", 0.3],
  ["deposit", "Sign the deposit and hand the data key, wrapped to the key manager's attested key, to the key manager", 0.1],
  ["list", "Sign and send listDataset", 0.15],
  ["datasheet-tx", "Sign and send setDatasheet (the datasheet's hash, on-chain)", 0.05],
];

const LICENSES = ["CC-BY-4.0", "CC-BY-SA-4.0", "CC0-1.0", "ODbL-1.0", "proprietary"];

/** Datasheet fields of the form: [path in the document, control id, label, kind, hint]. */
const SHEET_FIELDS = [
  ["title", "ds-title", "Title", "text", "What a consumer sees first, e.g. “Consumer credit defaults, 2023”."],
  ["description", "ds-description", "Description", "textarea", "What the rows are, who they describe, how they were chosen."],
  ["tags", "ds-tags", "Tags", "text", "Comma-separated, e.g. credit, finance, tabular (lower-case, hyphens for spaces)."],
  ["license", "ds-license", "License", "license", "An SPDX identifier (CC-BY-4.0) or “proprietary”."],
  ["provider_name", "ds-provider-name", "Provider display name", "text", "How consumers see you, e.g. “Northwind Bank”."],
  ["provenance", "ds-provenance", "Provenance (optional)", "textarea", "Where the data comes from and how it was processed."],
  ["intended_uses", "ds-intended-uses", "Intended uses (optional)", "textarea", "What models this data is suited (and not suited) for."],
];

export async function render(root) {
  const limits = await wallet.marketLimits();
  const minEpsilon = epsilonFromUnits(1); // the contracts' smallest ε
  root.innerHTML = `<h1>List a dataset</h1>
    <p class="muted">Your file is read and encrypted on this machine before anything is uploaded. The data key is wrapped (HPKE) to the key manager enclave's attested key, read from the on-chain enclave registry.</p>
    <form class="stack panel listing-form" id="list-form" novalidate>
      <h2>The file</h2>
      <div class="field"><label for="file">CSV file</label>
        <input id="file" name="file" type="file" accept=".csv,.tsv,.txt,text/csv,text/tab-separated-values" required aria-describedby="file-hint file-summary file-error">
        <span class="hint" id="file-hint">A header row, numeric feature columns and one label column; separated by commas, semicolons or tabs. It is read here, never uploaded as is.</span>
        <span class="csv-summary" id="file-summary" role="status"></span>
        <span class="error" id="file-error" role="alert"></span></div>
      <div id="csv-preview-box" hidden></div>
      <div class="field"><label for="label-column">Label column</label>
        <select id="label-column" name="label_column" required disabled data-error-slot="label-error" aria-describedby="label-hint label-error"><option value="">choose a file first</option></select>
        <span class="hint" id="label-hint">What a model learns to predict; every other column is a feature.</span>
        <span class="error" id="label-error" role="alert"></span></div>

      <h2>Datasheet</h2>
      <p class="hint">Public: what consumers read to tell your dataset from others and judge it before paying (its hash goes on-chain). Title, description, license and display name are required; the rest helps consumers choose.</p>
      ${SHEET_FIELDS.map(sheetField).join("")}
      <fieldset class="field period"><legend>Collection period (optional)</legend>
        <div class="row">
          <div class="field"><label for="ds-period-start">From</label><input id="ds-period-start" name="period_start" type="date" aria-describedby="ds-period-start-error"></div>
          <div class="field"><label for="ds-period-end">To</label><input id="ds-period-end" name="period_end" type="date" aria-describedby="ds-period-end-error"></div>
        </div>
        <span class="error" id="ds-period-start-error" role="alert"></span><span class="error" id="ds-period-end-error" role="alert"></span></fieldset>
      <div class="field"><label for="ds-label-description">What the label records (optional)</label>
        <input id="ds-label-description" name="label_description" type="text" maxlength="1000" aria-describedby="ds-label-description-error" placeholder="e.g. 1 if the borrower defaulted within 12 months">
        <span class="error" id="ds-label-description-error" role="alert"></span></div>
      <div class="field"><span class="field-title">Feature columns</span>
        <span class="hint" id="columns-hint">Describe each column and, if you wish, declare the range it may take. Declared bounds are public and go into the schema: the enclave clips each value to them and scales it to [-1, 1]. Give ranges the column may take in principle (ages 18 to 100), not the ones you see in your file.</span>
        <div id="columns-box"><p class="muted">Choose a file to describe its columns.</p></div></div>
      <span class="error" id="datasheet-error" role="alert"></span>

      <h2>Terms</h2>
      <div class="row">
        <div class="field"><label for="price">Price per job (${esc(paymentUnit().symbol)})</label><input id="price" name="price" type="number" min="0" step="any" value="0.1" required aria-describedby="terms-error"></div>
        <div class="field"><label for="max-eps">Max. ε per job</label><input id="max-eps" name="max_epsilon" type="number" min="${minEpsilon}" step="any" value="2" required aria-describedby="terms-error"></div>
        <div class="field"><label for="total-eps">Total ε budget</label><input id="total-eps" name="total_epsilon" type="number" min="${minEpsilon}" step="any" value="10" required aria-describedby="terms-error"></div>
        <div class="field"><label for="max-delta">Max. δ per job</label><input id="max-delta" name="max_delta" type="number" min="0" step="any" value="0.0001" required aria-describedby="terms-error"></div>
      </div>
      <div class="field"><label for="expiry">Expires on (optional)</label><input id="expiry" name="expiry" type="date" aria-describedby="terms-error"></div>
      <div class="field"><label for="allowed">Only these buyers (optional, one address per line)</label>
        <textarea id="allowed" name="allowed" rows="2" placeholder="0x…" aria-describedby="terms-error"></textarea></div>
      <div class="field"><label for="allowed-models">Only these model specs (optional, one spec hash per line)</label>
        <textarea id="allowed-models" name="allowed_models" rows="2" placeholder="0x… (the sha256 POST /api/specs returns)" aria-describedby="terms-error"></textarea></div>
      <span class="error" id="terms-error" role="alert"></span>
      <div class="warn-box" id="duplicate-warning" role="alert" hidden>
        <p id="duplicate-text"></p>
        <div class="badges"><button type="button" id="duplicate-confirm">List it again</button>
          <button type="button" class="secondary" id="duplicate-cancel">Don't list it</button></div></div>
      <div class="submit-row"><button type="submit" id="list-submit" aria-describedby="submit-note">Encrypt and list</button>
        <span class="hint" id="submit-note" role="status"></span></div>
    </form>
    <div class="panel" id="progress-panel" hidden>
      <h2>Progress</h2>
      <ol class="steps" id="steps">${STEPS.map(([k, t]) => `<li data-step="${k}"><span class="dot"></span><span>${esc(t)}</span></li>`).join("")}</ol>
      <p class="progress-line"><label for="bar">Overall</label> <progress id="bar" max="1" value="0"></progress> <span id="bar-text" class="muted">0 %</span></p>
      <div id="outcome" aria-live="polite"></div>
    </div>`;

  const form = root.querySelector("#list-form");
  const fileInput = root.querySelector("#file");
  const labelSelect = root.querySelector("#label-column");
  const submit = root.querySelector("#list-submit");
  const $ = (selector) => root.querySelector(selector);

  /** The chosen file, read: {file, table, dataset, error} (error: why it cannot be listed as it is). */
  let chosen = null;
  let busy = false;
  let listedSha = null; // the file just listed: the button stays disabled until the file or form changes
  let confirmedSha = null; // the file the provider confirmed listing again

  // --- the file: read when chosen, checked again when the label changes --------------------------

  fileInput.addEventListener("change", async () => {
    const file = fileInput.files[0];
    chosen = null;
    setError("file", "");
    $("#file-summary").innerHTML = "";
    $("#csv-preview-box").hidden = true;
    labelSelect.disabled = true;
    labelSelect.innerHTML = `<option value="">choose a file first</option>`;
    $("#columns-box").innerHTML = `<p class="muted">Choose a file to describe its columns.</p>`;
    hideDuplicate();
    if (!busy && !listedSha) {
      // a new file is a new attempt: the last one's failure no longer applies (a success stays shown)
      $("#progress-panel").hidden = true;
      $("#outcome").innerHTML = "";
    }
    if (!file) return;
    let table;
    try {
      table = await readCsvTable(file);
    } catch (error) {
      if (fileInput.files[0] !== file) return;
      chosen = { file, table: null, dataset: null, error: error.message };
      setError("file", fileMessage(error.message));
      return;
    }
    if (fileInput.files[0] !== file) return; // another file was chosen meanwhile
    chosen = { file, table, dataset: null, error: "" };
    $("#file-summary").innerHTML = `<strong id="csv-format">${esc(table.separatorName)}</strong> · <span id="csv-rows" data-rows="${table.rowCount}">${table.rowCount.toLocaleString("en")} row${table.rowCount === 1 ? "" : "s"}</span> · <span id="csv-columns" data-columns="${table.columns.length}">${table.columns.length} column${table.columns.length === 1 ? "" : "s"}</span>`;
    labelSelect.innerHTML = table.columns.map((c) => `<option value="${esc(c)}">${esc(c)}</option>`).join("");
    labelSelect.value = table.columns[table.columns.length - 1];
    labelSelect.disabled = false;
    checkFile();
  });

  labelSelect.addEventListener("change", () => {
    setError("label", "");
    if (chosen?.table) checkFile();
  });

  /** Parse every cell with the chosen label, show the preview and the column rows; errors next to the file. */
  function checkFile() {
    const { table } = chosen;
    const label = labelSelect.value;
    const previous = readColumns(); // keep what was typed for columns that stay features
    try {
      chosen.dataset = datasetFromTable(table, label);
      chosen.error = "";
      setError("file", "");
    } catch (error) {
      chosen.dataset = null;
      chosen.error = error.message;
      setError("file", fileMessage(error.message));
    }
    renderPreview(table, label);
    const features = table.columns.filter((c) => c !== label);
    $("#columns-box").innerHTML = columnsTable(features, previous);
    for (let i = 0; i < features.length; i++) {
      for (const part of ["min", "max"]) $(`#col-${part}-${i}`).addEventListener("input", () => checkBounds(i));
      if (previous[features[i]]) checkBounds(i);
    }
  }

  function renderPreview(table, label) {
    const box = $("#csv-preview-box");
    const labelAt = table.columns.indexOf(label);
    box.innerHTML = `<div class="table-wrap csv-preview-wrap"><table id="csv-preview">
      <caption>The first ${table.head.length} of ${table.rowCount.toLocaleString("en")} rows (${esc(table.separatorName)}, ${table.columns.length} columns), as read here</caption>
      <thead><tr>${table.columns.map((c, i) => `<th scope="col"${i === labelAt ? ' class="label-col"' : ""}>${esc(c)}${i === labelAt ? ' <span class="chip">label</span>' : ""}</th>`).join("")}</tr></thead>
      <tbody>${table.head.map((cells) => `<tr>${table.columns.map((_, i) => `<td${i === labelAt ? ' class="label-col"' : ""}>${esc(cells[i] ?? "")}</td>`).join("")}</tr>`).join("")}</tbody>
    </table></div>`;
    box.hidden = false;
  }

  /** Check one column's declared bounds; warn (locally) how many rows they clip. Returns [lo, hi], null, or undefined when invalid. */
  function checkBounds(i) {
    const note = $(`#col-note-${i}`);
    const lo = $(`#col-min-${i}`);
    const hi = $(`#col-max-${i}`);
    note.textContent = "";
    note.className = "col-note";
    for (const input of [lo, hi]) input.removeAttribute("aria-invalid");
    const fail = (message, input) => {
      note.textContent = message;
      note.className = "col-note error";
      note.setAttribute("role", "alert");
      input.setAttribute("aria-invalid", "true");
      return undefined;
    };
    const a = lo.value.trim();
    const b = hi.value.trim();
    if (!a && !b) return null;
    if (!a) return fail("Give a minimum too, or neither.", lo);
    if (!b) return fail("Give a maximum too, or neither.", hi);
    const bounds = [Number(a), Number(b)];
    try {
      normaliseFeatureBounds([bounds], { featureNames: [$(`#col-name-${i}`).textContent], featureShape: [1] });
    } catch (error) {
      return fail(boundMessage(error.message), bounds[0] >= bounds[1] ? hi : lo);
    }
    if (chosen?.dataset) {
      const features = chosen.dataset.schema.feature_names.length;
      const all = Array.from({ length: features }, (_, j) => (j === i ? bounds : null));
      const { rows } = rowsOutsideBounds(chosen.dataset, all);
      if (rows) {
        note.textContent = `${rows.toLocaleString("en")} row${rows === 1 ? " falls" : "s fall"} outside these bounds and will be clipped.`;
        note.className = "col-note warn";
        note.setAttribute("role", "status");
      }
    }
    return bounds;
  }

  // --- the button: disabled while listing and after a success, until the file or the form changes ---

  form.addEventListener("input", formChanged);
  form.addEventListener("change", formChanged);
  function formChanged(event) {
    if (event.target?.closest?.("#duplicate-warning")) return;
    if (busy || !listedSha) return;
    listedSha = null;
    submit.disabled = false;
    $("#submit-note").textContent = "";
  }

  $("#duplicate-confirm").addEventListener("click", () => {
    confirmedSha = chosen?.table?.sha256 ?? null;
    hideDuplicate();
    form.requestSubmit();
  });
  $("#duplicate-cancel").addEventListener("click", () => {
    hideDuplicate();
    reveal(fileInput, { focus: true });
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || listedSha) return;
    hideDuplicate();
    const errors = [];
    const file = fileInput.files[0];
    if (!file) {
      setError("file", "Choose a CSV file.");
      errors.push(["file-error", fileInput]);
    } else if (chosen?.error) {
      setError("file", fileMessage(chosen.error));
      errors.push(["file-error", fileInput]);
    }
    const terms = readTerms(form, root, limits);
    if (!terms) errors.push(["terms-error", $("#price")]);
    const bounds = readBounds(errors);
    const sheet = readDatasheet(errors);
    if (errors.length || !chosen?.dataset) {
      if (file && chosen?.error) showFileFailure(chosen.error);
      const [first, control] = errors[0] || ["file-error", fileInput];
      reveal($(`#${first}`), { focus: control });
      return;
    }
    busy = true;
    submit.disabled = true;
    $("#submit-note").textContent = "Listing…";
    let listed = false;
    try {
      listed = await listDataset(root, { chosen, terms, bounds, sheet });
    } finally {
      busy = false;
      if (listed) {
        listedSha = chosen.table.sha256;
        $("#submit-note").textContent = "Listed. Change the file or the form to list another.";
      } else {
        submit.disabled = false;
        $("#submit-note").textContent = "";
      }
    }
  });

  /** The declared bounds of every feature, or null when none is declared; pushes an error per bad column. */
  function readBounds(errors) {
    if (!chosen?.dataset) return null;
    const count = chosen.dataset.schema.feature_names.length;
    const bounds = [];
    for (let i = 0; i < count; i++) {
      const b = checkBounds(i);
      if (b === undefined) errors.push([`col-note-${i}`, $(`#col-min-${i}`)]);
      bounds.push(b ?? null);
    }
    return bounds.some(Boolean) ? bounds : null;
  }

  /** The datasheet document (every listing has one), null when it has problems: they are pushed next to their fields. */
  function readDatasheet(errors) {
    clearSheetErrors();
    const value = (id) => $(`#${id}`).value;
    const columns = Object.entries(readColumns()).map(([name, c]) => ({ name, description: c.description, unit: c.unit }));
    const start = value("ds-period-start");
    const end = value("ds-period-end");
    if (!chosen?.dataset) return null; // the file's own error is shown; the datasheet is checked once it reads
    if (Boolean(start) !== Boolean(end)) {
      const id = start ? "ds-period-end" : "ds-period-start";
      showProblem(errors, { path: start ? "collection_period.end" : "collection_period.start", message: "Give both dates, or neither." }, id);
      return null;
    }
    const doc = datasheetDocument({
      title: value("ds-title"),
      description: value("ds-description"),
      tags: parseTags(value("ds-tags")),
      license: value("ds-license"),
      providerName: value("ds-provider-name"),
      rows: chosen.dataset.rows,
      labelName: labelSelect.value,
      labelDescription: value("ds-label-description"),
      columns,
      provenance: value("ds-provenance"),
      intendedUses: value("ds-intended-uses"),
      collectionPeriod: start && end ? { start, end } : null,
    });
    const problems = datasheetProblems(doc);
    for (const problem of problems) showProblem(errors, problem, controlOf(problem.path, doc));
    return problems.length ? null : doc;
  }

  /** Show the gateway's (or our own) datasheet problem next to the field its path names. */
  function showProblem(errors, { path, message }, id) {
    const control = id ? $(`#${id}`) : null;
    const slot = control ? $(`#${control.dataset.errorSlot || `${id}-error`}`) : $("#datasheet-error");
    const text = control ? sentence(message) : `${path ? `${path}: ` : ""}${sentence(message)}`;
    slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
    slot.setAttribute("role", "alert");
    slot.classList.add("error");
    if (control) control.setAttribute("aria-invalid", "true");
    errors.push([slot.id, control || $("#ds-title")]);
  }

  function controlOf(path, doc) {
    const [head, index, leaf] = String(path).split(".");
    const simple = Object.fromEntries(SHEET_FIELDS.map(([p, id]) => [p, id]));
    if (simple[head]) return simple[head];
    if (head === "label") return index === "description" ? "ds-label-description" : "label-column";
    if (head === "rows") return "file";
    if (head === "collection_period") return index === "end" ? "ds-period-end" : "ds-period-start";
    if (head === "columns" && doc?.columns?.[Number(index)]) {
      const at = chosen?.dataset?.schema.feature_names.indexOf(doc.columns[Number(index)].name);
      if (at >= 0) return leaf === "unit" ? `col-unit-${at}` : `col-desc-${at}`;
    }
    return null;
  }

  function clearSheetErrors() {
    for (const slot of root.querySelectorAll("#list-form .error")) {
      if (["file-error", "terms-error"].includes(slot.id) || slot.classList.contains("col-note")) continue;
      slot.textContent = "";
    }
    for (const control of root.querySelectorAll("#list-form [aria-invalid]")) {
      if (control.id === "file" || /^col-(min|max)-/.test(control.id)) continue;
      control.removeAttribute("aria-invalid");
    }
  }

  /** Values typed per feature column, by name. */
  function readColumns() {
    const out = {};
    root.querySelectorAll("#columns-box [data-column]").forEach((row) => {
      const i = row.dataset.index;
      out[row.dataset.column] = {
        description: $(`#col-desc-${i}`).value,
        unit: $(`#col-unit-${i}`).value,
        min: $(`#col-min-${i}`).value,
        max: $(`#col-max-${i}`).value,
      };
    });
    return out;
  }

  function setError(which, message) {
    const slot = $(`#${which}-error`);
    slot.textContent = message;
    const control = which === "file" ? fileInput : labelSelect;
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }

  /** A file that cannot be listed as it is, at the click: the package step fails, nothing is encrypted. */
  function showFileFailure(message) {
    $("#progress-panel").hidden = false;
    root.querySelectorAll("#steps li").forEach((li) => (li.className = ""));
    $('[data-step="package"]').className = "failed";
    setBar(root, 0);
    $("#outcome").innerHTML = `<div class="error-box" role="alert">The file cannot be listed as it is: ${esc(fileMessage(message))} Nothing was encrypted or sent.</div>`;
  }

  function hideDuplicate() {
    $("#duplicate-warning").hidden = true;
  }

  /** Ask before listing a file this provider already listed from this browser; true when it may go on. */
  async function confirmNotDuplicate(where) {
    const sha = chosen.table.sha256;
    const previous = previousListing(where, sha);
    if (!previous || confirmedSha === sha) return true;
    const when = new Date(previous.at).toLocaleString();
    $("#duplicate-text").innerHTML = `You already listed this file (SHA-256 ${short(sha, 8)}) from this account${
      previous.datasetId ? ` as <a href="#/datasets/${esc(previous.datasetId)}">dataset #${esc(previous.datasetId)}</a>` : ""
    } on ${esc(when)}. Listing it again creates a second dataset with the same rows, with a privacy budget of its own: consumers could then spend twice the ε on the same people.`;
    $("#duplicate-warning").hidden = false;
    reveal($("#duplicate-warning"), { focus: $("#duplicate-confirm") });
    return false;
  }

  /** The listing itself; true when the dataset was listed. */
  async function listDataset(root, { chosen, terms, bounds, sheet }) {
    const outcome = $("#outcome");
    const progress = tracker(root);
    let where;
    let signer;
    try {
      signer = await wallet.signer();
      const provider = await signer.getAddress();
      const cfg = await wallet.loadConfig();
      where = { chainId: cfg.chain_id, market: cfg.contracts.job_market, provider };
      if (!(await confirmNotDuplicate(where))) return false;
      $("#progress-panel").hidden = false;
      outcome.innerHTML = "";
      progress.reset(sheet);
      reveal($("#progress-panel"));
      const kmKey = await attestedKeyManagerKey();

      progress.step("package");
      const dataset = datasetFromTable(chosen.table, labelSelect.value);
      if (bounds) dataset.schema = { ...dataset.schema, feature_bounds: bounds };
      const ownSchemaHash = toHex(await schemaHash(dataset.schema)); // checks the bounds as Python would

      let sheetHash = null;
      if (sheet) {
        progress.step("datasheet");
        sheetHash = await publishDatasheet(sheet);
      }

      progress.step("schema");
      const schema = await postJSON("/api/schemas", dataset.schema);
      if (schema.sha256 !== ownSchemaHash) throw new Error("The gateway computed another schema hash.");

      progress.step("encrypt");
      const listing = await encryptForListing(dataset, { kmPublicKey: kmKey, providerAddress: provider, onProgress: progress.fraction });
      if (listing.schemaHash !== ownSchemaHash) throw new Error("The package's schema is not the one published.");

      progress.step("upload");
      const uploaded = await uploadBlob("/api/blobs", listing.ciphertext, { sha256: listing.contentHash, onProgress: progress.fraction });
      if (uploaded.sha256 !== listing.contentHash) throw new Error("The gateway stored the ciphertext under another hash.");

      progress.step("deposit");
      await depositDataKey(listing, { signer, keyManager: cfg.key_manager.signer });

      progress.step("list");
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
      const id = event ? event.args.datasetId.toString() : null;
      rememberListing(where, chosen.table.sha256, id);
      confirmedSha = null;
      const listedText = `Listed${id ? ` as <a href="#/datasets/${id}" id="listed-link">dataset #${id}</a>` : ""} in transaction ${short(tx.hash)}. Your plaintext never left this browser.`;

      let sheetFailure = null;
      let lastBlock = receipt.blockNumber;
      if (sheetHash) {
        progress.step("datasheet-tx");
        try {
          if (!id) throw new Error("the listing's DatasetListed event was not found");
          const sheetTx = await market.setDatasheet(BigInt(id), "0x" + sheetHash);
          lastBlock = (await sheetTx.wait()).blockNumber;
        } catch (error) {
          sheetFailure = error;
        }
      }
      await waitForIndex(lastBlock);
      if (sheetFailure) {
        progress.fail();
        outcome.innerHTML = `<div class="ok-box" role="status">${listedText}</div>
          <div class="error-box" role="alert" id="datasheet-tx-error">The datasheet was not attached: ${esc(wallet.describeTxError(sheetFailure))} The dataset is listed without one.</div>`;
      } else {
        progress.finish();
        outcome.innerHTML = `<div class="ok-box" role="status" id="listed-ok">${listedText}${sheetHash ? ` Its datasheet ${short("0x" + sheetHash, 6)} is on-chain.` : ""}</div>`;
      }
      reveal(outcome.firstElementChild);
      return true;
    } catch (error) {
      progress.fail();
      if (error instanceof DatasheetRejected) {
        const errors = [];
        for (const problem of error.problems) showProblem(errors, problem, controlOf(problem.path, sheet));
        outcome.innerHTML = `<div class="error-box" role="alert">The gateway refused the datasheet (see the fields marked above): ${esc(error.message)} Nothing was encrypted or sent.</div>`;
        reveal($(`#${errors[0]?.[0] || "datasheet-error"}`), { focus: errors[0]?.[1] });
        return false;
      }
      $("#progress-panel").hidden = false;
      outcome.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
      reveal(outcome.firstElementChild);
      return false;
    }
  }
}

function sheetField([path, id, label, kind, hint]) {
  const describedBy = `${id}-hint ${id}-error`;
  const max = { title: 120, description: 5000, license: 100, provider_name: 80, provenance: 2000, intended_uses: 2000 }[path];
  const common = `id="${id}" name="${esc(path)}" aria-describedby="${describedBy}"${max ? ` maxlength="${max}"` : ""}`;
  const control =
    kind === "textarea"
      ? `<textarea ${common} rows="${path === "description" ? 3 : 2}"></textarea>`
      : kind === "license"
        ? `<input ${common} type="text" list="license-choices" autocomplete="off"><datalist id="license-choices">${LICENSES.map((l) => `<option value="${esc(l)}">`).join("")}</datalist>`
        : `<input ${common} type="text" autocomplete="off">`;
  return `<div class="field"><label for="${id}">${esc(label)}</label>${control}
    <span class="hint" id="${id}-hint">${esc(hint)}</span><span class="error" id="${id}-error" role="alert"></span></div>`;
}

/** The feature columns' rows: description, unit, declared bounds (empty unless typed: never filled from the data). */
function columnsTable(features, previous) {
  if (!features.length) return `<p class="muted">The file has no feature column besides the label.</p>`;
  const v = (name, key) => esc(previous[name]?.[key] ?? "");
  return `<div class="columns-list" id="columns-table">${features
    .map(
      (name, i) => `<div class="column-row" data-column="${esc(name)}" data-index="${i}" role="group" aria-labelledby="col-name-${i}">
        <div class="column-name" id="col-name-${i}">${esc(name)}</div>
        <div class="field col-desc-field"><label for="col-desc-${i}">Description</label><input id="col-desc-${i}" type="text" maxlength="1000" value="${v(name, "description")}" data-error-slot="col-note-${i}" aria-describedby="col-note-${i}"></div>
        <div class="field"><label for="col-unit-${i}">Unit</label><input id="col-unit-${i}" type="text" maxlength="40" value="${v(name, "unit")}" data-error-slot="col-note-${i}" aria-describedby="col-note-${i}"></div>
        <div class="field"><label for="col-min-${i}">Declared min.</label><input id="col-min-${i}" type="number" step="any" inputmode="decimal" value="${v(name, "min")}" aria-describedby="col-note-${i}"></div>
        <div class="field"><label for="col-max-${i}">Declared max.</label><input id="col-max-${i}" type="number" step="any" inputmode="decimal" value="${v(name, "max")}" aria-describedby="col-note-${i}"></div>
        <span class="col-note" id="col-note-${i}" role="status"></span>
      </div>`,
    )
    .join("")}</div>`;
}

/** The overall progress bar: each step fills its share; encryption and upload move with their bytes. */
function tracker(root) {
  const starts = {};
  let at = 0;
  for (const [key, , share] of STEPS) {
    starts[key] = [at, share];
    at += share;
  }
  let current = null;
  const li = (key) => root.querySelector(`[data-step="${key}"]`);
  return {
    reset(sheet) {
      root.querySelectorAll("#steps li").forEach((item) => (item.className = ""));
      for (const key of ["datasheet", "datasheet-tx"]) if (!sheet) li(key).className = "skipped";
      current = null;
      setBar(root, 0);
    },
    step(key) {
      if (current) li(current).className = "done";
      current = key;
      li(key).className = "current";
      setBar(root, starts[key][0]);
    },
    fraction: (done, total) => {
      if (!current) return;
      const [start, share] = starts[current];
      setBar(root, start + share * (total ? Math.min(1, done / total) : 1));
    },
    finish() {
      if (current) li(current).className = "done";
      current = null;
      setBar(root, 1);
    },
    fail() {
      if (current) li(current).className = "failed";
      current = null;
    },
  };
}

function setBar(root, value) {
  const bar = root.querySelector("#bar");
  bar.value = value >= 1 ? bar.max : Math.max(0, value);
  root.querySelector("#bar-text").textContent = `${Math.floor(100 * Math.min(1, value))} %`;
}

/** Scroll an element to the middle of the screen (a result or an error the click produced), optionally focusing a control. */
function reveal(element, { focus } = {}) {
  if (!element) return;
  element.scrollIntoView({ block: "center", inline: "nearest" });
  if (focus && typeof focus.focus === "function") focus.focus({ preventScroll: true });
}

function fileMessage(message) {
  const text = sentence(message);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function sentence(message) {
  const text = String(message).trim();
  return /[.!?)]$/.test(text) ? text : `${text}.`;
}

function boundMessage(message) {
  // "the lower bound of feature 0 ("age") is ..." → without the feature (the note sits on its row)
  return fileMessage(message.replace(/ of feature \d+ \([^)]*\)/, "").replace(/^feature_bounds: /, ""));
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

function safeParse(contract, log) {
  try {
    return contract.interface.parseLog(log);
  } catch {
    return null;
  }
}
