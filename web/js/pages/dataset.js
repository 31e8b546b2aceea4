// Dataset detail: its datasheet (what it is, from whom, under which license) and its columns
// (description, unit, the provider's declared bounds from the schema, the label and its classes);
// status, terms, access lists, schema, the budget as a bar and over time, the jobs that used it;
// for its provider, the controls to pause, resume, delist, top up, reprice and edit the datasheet.
import { formatUnits } from "ethers";
import { getJSON, subscribe, waitForIndex } from "../api.js";
import { budgetBar, budgetChart } from "../charts.js";
import { categoricalFeatures, datasetUnavailable, esc, eps, few, labelSummary, money, parseMoney, paymentUnit, short, statusBadges, when } from "../format.js";
import { epsilonUnits } from "../onchain.js";
import { datasheetDocument, datasheetHash, datasheetProblems, DatasheetRejected, parseTags, publishDatasheet } from "../listing-flow.js";
import * as wallet from "../wallet.js";

export async function render(root, [id]) {
  // A static shell: live updates re-render the dataset, never the provider's controls or their messages.
  root.innerHTML = `<h1 id="dataset-title">Dataset #${esc(id)}</h1>
    <p class="muted" id="dataset-byline" hidden></p>
    <div id="dataset-badges"></div>
    <div class="panel" id="provider-panel" hidden>
      <h2>Manage your dataset</h2>
      <div class="controls" id="provider-controls">
        <div class="badges">
          <button type="button" id="pause-toggle">Pause</button>
          <button type="button" id="delist" class="secondary">Delist…</button>
          <span id="delist-confirm-box" hidden>Delisting is for good: no new jobs, no further changes; running jobs finish.
            <button type="button" id="delist-confirm">Delist for good</button></span>
        </div>
        <form id="topup-form" novalidate><div class="field"><label for="topup-amount">Add ε to the total budget</label>
          <input id="topup-amount" name="amount" type="number" min="0" step="any" value="1"></div>
          <button type="submit" id="topup-submit">Top up budget</button></form>
        <form id="price-form" novalidate><div class="field"><label for="new-price">New price per job (${esc(paymentUnit().symbol)})</label>
          <input id="new-price" name="price" type="number" min="0" step="any"></div>
          <button type="submit" id="price-submit">Update price</button></form>
        <div class="datasheet-edit" id="datasheet-edit">
          <button type="button" id="datasheet-edit-toggle" class="secondary" aria-expanded="false" aria-controls="datasheet-form">Edit datasheet</button>
          <form id="datasheet-form" class="datasheet-edit-form" novalidate hidden aria-labelledby="datasheet-form-title"></form>
          <div id="datasheet-outcome" aria-live="polite"></div>
        </div>
      </div>
      <p class="muted" id="provider-delisted" hidden>This dataset is delisted: it can no longer be changed.</p>
      <div id="manage-status" aria-live="polite"></div>
    </div>
    <div id="dataset-body"><p class="muted">Loading…</p></div>`;
  const panel = root.querySelector("#provider-panel");
  const status = root.querySelector("#manage-status");
  const buttons = () => [...panel.querySelectorAll("button")];
  let me = null;
  let current = null;
  let busy = false;
  let pricePrefilled = false;

  async function load() {
    const [d, account] = await Promise.all([getJSON(`/api/datasets/${id}`), wallet.address()]);
    current = d;
    me = account;
    const sheet = d.datasheet;
    root.querySelector("#dataset-title").textContent = sheet?.title || `Dataset #${id}`;
    const byline = root.querySelector("#dataset-byline");
    byline.hidden = !sheet;
    byline.innerHTML = sheet ? `Dataset #${esc(id)} · by ${esc(sheet.provider_name)}` : "";
    root.querySelector("#dataset-badges").innerHTML = statusBadges(d, { showActive: true });
    root.querySelector("#dataset-body").innerHTML = body(d);
    const mine = Boolean(me && me.toLowerCase() === String(d.provider).toLowerCase());
    panel.hidden = !mine;
    const delisted = d.status === "delisted";
    root.querySelector("#provider-controls").hidden = delisted;
    root.querySelector("#provider-delisted").hidden = !delisted;
    root.querySelector("#pause-toggle").textContent = d.status === "paused" ? "Resume" : "Pause";
    if (!pricePrefilled) {
      root.querySelector("#new-price").value = formatUnits(BigInt(d.price_wei), paymentUnit().decimals);
      pricePrefilled = true;
    }
    for (const b of buttons()) b.disabled = busy;
  }

  /** Send one provider transaction through the wallet, then show it indexed. */
  // `out`: where its progress and outcome are said (the panel's status line unless given); `okId`:
  // the outcome's id; `reveal`: scroll the outcome into view. Resolves true when it was indexed.
  async function send(label, makeTx, { out = status, okId = "manage-ok", reveal: scroll = false, before } = {}) {
    busy = true;
    for (const b of buttons()) b.disabled = true;
    out.innerHTML = `<p class="muted">${esc(label)}: sign the transaction…</p>`;
    let ok = false;
    let rejected = null;
    try {
      if (before) await before((text) => (out.innerHTML = `<p class="muted">${esc(text)}</p>`));
      const market = await wallet.jobMarket({ write: true });
      const tx = await makeTx(market);
      out.innerHTML = `<p class="muted">${esc(label)}: waiting for ${short(tx.hash)} to be mined…</p>`;
      const receipt = await tx.wait();
      await waitForIndex(receipt.blockNumber);
      out.innerHTML = `<div class="ok-box" role="status" id="${okId}">${esc(label)}: done in transaction ${short(tx.hash)}.</div>`;
      ok = true;
    } catch (error) {
      if (error instanceof DatasheetRejected) {
        rejected = error;
        out.innerHTML = `<div class="error-box" role="alert">The gateway refused the datasheet (see the fields marked above): ${esc(error.message)} Nothing was sent on-chain.</div>`;
      } else {
        out.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
      }
    } finally {
      busy = false;
      await load().catch(() => {});
    }
    if (rejected) showSheetProblems(rejected.problems, { gateway: true });
    else if (scroll) reveal(out.firstElementChild);
    return ok;
  }

  root.querySelector("#pause-toggle").addEventListener("click", () => {
    const pause = current?.status !== "paused";
    send(pause ? "Pause" : "Resume", (market) => market.setDatasetPaused(BigInt(id), pause));
  });
  root.querySelector("#delist").addEventListener("click", () => (root.querySelector("#delist-confirm-box").hidden = false));
  root.querySelector("#delist-confirm").addEventListener("click", () => {
    root.querySelector("#delist-confirm-box").hidden = true;
    send("Delist", (market) => market.delistDataset(BigInt(id)));
  });
  root.querySelector("#topup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const amount = Number(root.querySelector("#topup-amount").value);
    if (!(amount > 0)) {
      status.innerHTML = `<div class="error-box" role="alert">Give a positive amount of ε to add.</div>`;
      return;
    }
    send(`Top up by ${eps(amount)} ε`, (market) => market.topUpBudget(BigInt(id), epsilonUnits(amount)));
  });
  root.querySelector("#price-form").addEventListener("submit", (event) => {
    event.preventDefault();
    let price;
    try {
      price = parseMoney(root.querySelector("#new-price").value);
    } catch {
      status.innerHTML = `<div class="error-box" role="alert">The price is not a number.</div>`;
      return;
    }
    send(`Price set to ${money(price)}`, async (market) => {
      // The other terms exactly as on-chain (not as the gateway's floats), with the new price.
      const terms = (await (await wallet.jobMarket()).dataset(BigInt(id))).terms;
      return market.updateTerms(BigInt(id), [price, terms.maxEpsilonPerJob, terms.totalEpsilonBudget, terms.maxDelta, terms.expiry]);
    });
  });

  // --- the datasheet: edited here, checked, published, its hash sent with setDatasheet ---------------
  const sheetForm = root.querySelector("#datasheet-form");
  const sheetToggle = root.querySelector("#datasheet-edit-toggle");
  const sheetOutcome = root.querySelector("#datasheet-outcome");
  let editing = null; // {features, rows (null: asked for), columns kept when the schema is unknown}

  sheetToggle.addEventListener("click", () => {
    const open = sheetForm.hidden;
    if (open) openSheetForm();
    else closeSheetForm();
  });

  function openSheetForm() {
    editing = sheetFormFor(current);
    sheetForm.innerHTML = editing.html;
    sheetForm.hidden = false;
    sheetToggle.setAttribute("aria-expanded", "true");
    sheetOutcome.innerHTML = "";
    sheetForm.querySelector("#edit-cancel").addEventListener("click", closeSheetForm);
    reveal(sheetForm.querySelector("h3"), { block: "start" });
    sheetForm.querySelector("#edit-title").focus({ preventScroll: true });
  }

  function closeSheetForm() {
    sheetForm.hidden = true;
    sheetForm.innerHTML = "";
    sheetToggle.setAttribute("aria-expanded", "false");
    editing = null;
  }

  sheetForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || !editing) return;
    sheetOutcome.innerHTML = "";
    const doc = readSheet();
    if (!doc) return;
    const ours = await datasheetHash(doc);
    if (current?.datasheet_hash && String(current.datasheet_hash).replace(/^0x/, "").toLowerCase() === ours) {
      sheetOutcome.innerHTML = `<div class="ok-box" role="status" id="datasheet-unchanged">This datasheet is the one on-chain already (${short("0x" + ours, 6)}): nothing was sent.</div>`;
      reveal(sheetOutcome.firstElementChild);
      return;
    }
    const done = await send(
      "Datasheet",
      (market) => market.setDatasheet(BigInt(id), "0x" + ours),
      {
        out: sheetOutcome,
        okId: "datasheet-ok",
        reveal: true,
        before: async (say) => {
          say("Publishing the datasheet…");
          const published = await publishDatasheet(doc); // throws when the gateway's hash is not ours
          if (published !== ours) throw new Error("The gateway computed another datasheet hash than this browser.");
          say("Datasheet published: sign the setDatasheet transaction…");
        },
      },
    );
    if (done) {
      const ok = sheetOutcome.querySelector("#datasheet-ok");
      closeSheetForm();
      if (ok) {
        ok.textContent = `Datasheet updated: ${short("0x" + ours, 6)} is on-chain${current?.datasheet?.title ? ` and shown below as “${current.datasheet.title}”` : ""}.`;
        reveal(ok);
      }
    }
  });

  /** The document from the form, or null with every problem shown next to its field (and the first in view). */
  function readSheet() {
    clearSheetProblems();
    const value = (name) => sheetForm.querySelector(`#${name}`)?.value ?? "";
    const local = [];
    const start = value("edit-period-start");
    const end = value("edit-period-end");
    if (Boolean(start) !== Boolean(end)) local.push({ path: start ? "collection_period.end" : "collection_period.start", message: "Give both dates, or neither." });
    let rows = editing.rows;
    if (rows === null) {
      const text = value("edit-rows").trim();
      rows = /^\d+$/.test(text) ? Number(text) : NaN;
      if (!(Number.isSafeInteger(rows) && rows >= 1)) local.push({ path: "rows", message: "Give the number of rows of the file you listed (a whole number, at least 1)." });
    }
    const columns = editing.features
      ? editing.features.map((name, i) => ({ name, description: value(`edit-col-desc-${i}`), unit: value(`edit-col-unit-${i}`) }))
      : editing.keptColumns;
    const doc = datasheetDocument({
      title: value("edit-title"),
      description: value("edit-description"),
      tags: parseTags(value("edit-tags")),
      license: value("edit-license"),
      providerName: value("edit-provider-name"),
      rows: Number.isSafeInteger(rows) ? rows : 1,
      labelName: value("edit-label-name"),
      labelDescription: value("edit-label-description"),
      columns,
      provenance: value("edit-provenance"),
      intendedUses: value("edit-intended-uses"),
      collectionPeriod: start && end ? { start, end } : null,
    });
    if (editing.features && editing.features.includes(doc.label.name)) local.push({ path: "label.name", message: `“${doc.label.name}” is a feature column, not the label` });
    const problems = [...local, ...datasheetProblems(doc)];
    if (!problems.length) return doc;
    showSheetProblems(problems);
    return null;
  }

  /** Problems (ours or the gateway's 422) next to the fields their paths name; the first in view. */
  function showSheetProblems(problems, { gateway = false } = {}) {
    if (!sheetForm.querySelector("#edit-title")) return;
    let first = null;
    for (const { path, message } of problems) {
      const control = sheetControl(path);
      const slot = control ? sheetForm.querySelector(`#${control.dataset.errorSlot || `${control.id}-error`}`) : sheetForm.querySelector("#edit-form-error");
      const text = control ? sentence(message) : `${path ? `${path}: ` : ""}${sentence(message)}`;
      slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
      if (control) control.setAttribute("aria-invalid", "true");
      first ??= [slot, control];
    }
    if (!first) return;
    if (!gateway) {
      sheetOutcome.innerHTML = `<div class="error-box" role="alert" id="datasheet-problems">The datasheet has ${problems.length === 1 ? "a problem" : `${problems.length} problems`} (marked above): nothing was sent.</div>`;
    }
    reveal(first[0], { focus: first[1] });
  }

  function clearSheetProblems() {
    for (const slot of sheetForm.querySelectorAll(".error")) slot.textContent = "";
    for (const control of sheetForm.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  }

  /** The control a problem's path names (`title`, `tags.1`, `columns.2.unit`, `collection_period.end`), or null. */
  function sheetControl(path) {
    const [head, index, leaf] = String(path).split(".");
    const simple = {
      title: "edit-title", description: "edit-description", tags: "edit-tags", license: "edit-license",
      provider_name: "edit-provider-name", provenance: "edit-provenance", intended_uses: "edit-intended-uses",
    }; // prettier-ignore
    let id = simple[head];
    if (head === "label") id = index === "description" ? "edit-label-description" : "edit-label-name";
    if (head === "rows") id = "edit-rows";
    if (head === "collection_period") id = index === "end" ? "edit-period-end" : "edit-period-start";
    if (head === "columns" && editing?.features) {
      // the document's columns are the described features, in the schema's order
      const described = editing.features
        .map((name, i) => ({ name, i }))
        .filter(({ i }) => sheetForm.querySelector(`#edit-col-desc-${i}`).value.trim() || sheetForm.querySelector(`#edit-col-unit-${i}`).value.trim());
      const at = described[Number(index)]?.i;
      if (at !== undefined) id = leaf === "unit" ? `edit-col-unit-${at}` : `edit-col-desc-${at}`;
    }
    return id ? sheetForm.querySelector(`#${id}`) : null;
  }

  await load();
  return subscribe((type, data) => {
    if ((type === "dataset" && String(data?.dataset_id) === String(id)) || type === "job") load().catch(() => {});
  });
}

/** Scroll an element to the middle of the screen (a result or an error a click produced), optionally focusing a control. */
function reveal(element, { focus, block = "center" } = {}) {
  if (!element) return;
  element.scrollIntoView({ block, inline: "nearest" });
  if (focus && typeof focus.focus === "function") focus.focus({ preventScroll: true });
}

function sentence(message) {
  const text = String(message).trim();
  return /[.!?)]$/.test(text) ? text : `${text}.`;
}

/**
 * The edit form for a dataset's datasheet, prefilled from the current document (empty without
 * one). The row count is kept from the current document (asked for when there is none); each
 * feature of the schema gets a description and a unit, its declared bounds shown read-only.
 */
function sheetFormFor(d) {
  const sheet = d?.datasheet || null;
  const features = d?.schema?.feature_names || null;
  const bounds = Array.isArray(d?.schema?.feature_bounds) ? d.schema.feature_bounds : [];
  const described = new Map((sheet?.columns || []).map((c) => [c.name, c]));
  const rows = sheet && Number.isSafeInteger(sheet.rows) ? sheet.rows : null;
  const number = (x) => Number(x).toLocaleString("en", { maximumFractionDigits: 6 });
  const field = (id, label, control, hint = "") =>
    `<div class="field"><label for="${id}">${esc(label)}</label>${control}${hint ? `<span class="hint" id="${id}-hint">${esc(hint)}</span>` : ""}
      <span class="error" id="${id}-error" role="alert"></span></div>`;
  const attrs = (id, max, hint) => `id="${id}" aria-describedby="${hint ? `${id}-hint ` : ""}${id}-error"${max ? ` maxlength="${max}"` : ""}`;
  const input = (id, value, max, hint) => `<input ${attrs(id, max, hint)} type="text" autocomplete="off" value="${esc(value ?? "")}">`;
  const area = (id, value, max, lines, hint) => `<textarea ${attrs(id, max, hint)} rows="${lines}">${esc(value ?? "")}</textarea>`;
  const period = sheet?.collection_period;
  const columnRows = features
    ? features.length
      ? `<div class="columns-list" id="edit-columns">${features
          .map((name, i) => {
            const c = described.get(name);
            const b = bounds[i];
            return `<div class="column-row edit-column-row" data-column="${esc(name)}" role="group" aria-labelledby="edit-col-name-${i}">
              <div class="column-name" id="edit-col-name-${i}">${esc(name)}</div>
              <div class="field col-desc-field"><label for="edit-col-desc-${i}">Description</label><input id="edit-col-desc-${i}" type="text" maxlength="1000" value="${esc(c?.description || "")}" data-error-slot="edit-col-note-${i}" aria-describedby="edit-col-note-${i}"></div>
              <div class="field"><label for="edit-col-unit-${i}">Unit</label><input id="edit-col-unit-${i}" type="text" maxlength="40" value="${esc(c?.unit || "")}" data-error-slot="edit-col-note-${i}" aria-describedby="edit-col-note-${i}"></div>
              <div class="field col-bounds"><span class="field-title" id="edit-col-bounds-label-${i}">Declared bounds</span>
                <output id="edit-col-bounds-${i}" aria-labelledby="edit-col-bounds-label-${i}" data-bounds="${b ? esc(JSON.stringify(b)) : ""}">${b ? `${number(b[0])} to ${number(b[1])}` : "none declared"}</output></div>
              <span class="col-note error" id="edit-col-note-${i}" role="alert"></span>
            </div>`;
          })
          .join("")}</div>`
      : `<p class="muted">The schema has no feature column besides the label.</p>`
    : `<p class="muted" id="edit-columns-kept">The schema is not in this gateway's store, so its columns cannot be listed here: the datasheet's column descriptions are kept as they are.</p>`;
  const html = `<h3 id="datasheet-form-title">${sheet ? "Edit the datasheet" : "Write a datasheet"}</h3>
    <p class="hint">Saving publishes the new document and sends its hash with <span class="mono">setDatasheet</span>; the old one stays readable under its own hash. The schema (features, classes, declared bounds) cannot change.</p>
    ${field("edit-title", "Title", input("edit-title", sheet?.title, 120))}
    ${field("edit-description", "Description", area("edit-description", sheet?.description, 5000, 3))}
    ${field("edit-tags", "Tags", input("edit-tags", (sheet?.tags || []).join(", "), 0, true), "Comma-separated, lower-case, hyphens for spaces (e.g. credit-scoring, finance).")}
    <div class="row edit-pair">
      ${field("edit-license", "License", input("edit-license", sheet?.license, 100, true), "An SPDX identifier (CC-BY-4.0) or “proprietary”.")}
      ${field("edit-provider-name", "Provider display name", input("edit-provider-name", sheet?.provider_name, 80))}
    </div>
    ${
      rows === null
        ? field("edit-rows", "Rows", `<input ${attrs("edit-rows", 0, true)} type="number" min="1" step="1" inputmode="numeric">`, "The number of data rows in the file you listed (public).")
        : `<div class="field"><span class="field-title">Rows</span><output id="edit-rows-kept">${Number(rows).toLocaleString("en")}</output><span class="hint">Kept from the current datasheet.</span></div>`
    }
    <div class="row edit-pair">
      ${field("edit-label-name", "Label column", input("edit-label-name", sheet?.label?.name, 200, true), "Its name in your file (not a feature).")}
      ${field("edit-label-description", "What the label records (optional)", input("edit-label-description", sheet?.label?.description, 1000))}
    </div>
    <fieldset class="field edit-period"><legend>Collection period (optional)</legend>
      <div class="row edit-pair">
        <div class="field"><label for="edit-period-start">From</label><input id="edit-period-start" type="date" value="${esc(period?.start || "")}" aria-describedby="edit-period-start-error"></div>
        <div class="field"><label for="edit-period-end">To</label><input id="edit-period-end" type="date" value="${esc(period?.end || "")}" aria-describedby="edit-period-end-error"></div>
      </div>
      <span class="error" id="edit-period-start-error" role="alert"></span><span class="error" id="edit-period-end-error" role="alert"></span></fieldset>
    ${field("edit-provenance", "Provenance (optional)", area("edit-provenance", sheet?.provenance, 2000, 2))}
    ${field("edit-intended-uses", "Intended uses (optional)", area("edit-intended-uses", sheet?.intended_uses, 2000, 2))}
    <h3>Columns</h3>
    ${columnRows}
    <span class="error" id="edit-form-error" role="alert"></span>
    <div class="submit-row"><button type="submit" id="edit-save">Save datasheet</button>
      <button type="button" id="edit-cancel" class="secondary">Cancel</button></div>`;
  return { html, features, rows, keptColumns: features ? null : sheet?.columns || [] };
}

function body(d) {
  const schema = d.schema;
  const history = d.budget_history || [];
  const scale = Math.max(Number(d.total_epsilon), ...history.map((h) => Number(h.total_epsilon) || 0));
  const open = d.status === "active";
  return `${datasheetPanel(d)}${columnsPanel(d)}
    <div class="panel"><h2>Privacy budget</h2><div id="budget">${budgetBar(d)}</div>
      <h2>Remaining ε over time</h2>${budgetChart(history, scale)}</div>
    <div class="panel"><h2>Terms</h2><dl class="kv">
      <dt>Status</dt><dd id="dataset-status">${esc(open ? "active: open for new jobs" : `${datasetUnavailable(d)}: no new jobs`)}</dd>
      <dt>Price per job</dt><dd id="dataset-price">${money(d.price_wei)}</dd>
      <dt>Max. ε per job</dt><dd>${eps(d.max_epsilon_per_job)}</dd>
      <dt>Total ε budget</dt><dd id="dataset-total">${eps(d.total_epsilon)}</dd>
      <dt>Max. δ</dt><dd>${esc(d.max_delta)}</dd>
      <dt>Expires</dt><dd>${when(d.expiry)}</dd>
      <dt>Provider</dt><dd>${short(d.provider, 10)}</dd>
      <dt>Content hash</dt><dd>${short(d.content_hash, 10)}</dd>
      <dt>Listed</dt><dd>block ${esc(d.listed_block)}${d.listed_at ? ` · ${when(d.listed_at)}` : ""}</dd>
    </dl></div>
    <div class="panel"><h2>Access</h2><dl class="kv">
      <dt>Buyers</dt><dd id="dataset-buyers">${
        d.restricted ? (d.allowed_consumers.length ? d.allowed_consumers.map((a) => short(a)).join(", ") : "nobody yet (restricted, empty list)") : "anyone"
      }</dd>
      <dt>Models</dt><dd id="dataset-models">${
        d.models_restricted
          ? d.allowed_models.length
            ? `only these model specs:<ul>${d.allowed_models.map((m) => `<li>${short(m, 10)}</li>`).join("")}</ul>`
            : "none yet (restricted, empty list)"
          : "any model spec"
      }</dd>
    </dl></div>
    <div class="panel"><h2>Schema</h2>${
      schema
        ? `<dl class="kv"><dt>Task</dt><dd>${esc(schema.task)}</dd>
           <dt>Features</dt><dd>${esc((schema.feature_shape || []).join(" × "))}: ${esc((schema.feature_names || []).slice(0, 12).join(", "))}${(schema.feature_names || []).length > 12 ? ", …" : ""}</dd>
           <dt>Label</dt><dd id="schema-label">${esc(labelSummary(schema))}</dd>${
             categoricalFeatures(schema).length
               ? `<dt>Categorical</dt><dd>${categoricalFeatures(schema).map((name) => `${esc(name)}: ${esc(few(schema.categories[name], 6))}`).join("; ")}</dd>`
               : ""
           }
           <dt>Schema hash</dt><dd>${short(d.schema_hash, 10)}</dd></dl>`
        : `<p class="muted">Schema ${short(d.schema_hash, 10)} is not in this gateway's store.</p>`
    }</div>
    <div class="panel"><h2>Jobs</h2>${
      d.job_ids && d.job_ids.length ? `<p>${d.job_ids.map((j) => `<a href="#/jobs/${j}">job #${j}</a>`).join(" · ")}</p>` : `<p class="muted">No job has used this dataset yet.</p>`
    }${open ? `<p><a class="button" href="#/jobs/new?datasets=${d.id}">Create a job with this dataset</a></p>` : `<p class="muted">This dataset accepts no new jobs while it is ${esc(d.status)}.</p>`}</div>`;
}

/** The whole datasheet: description, license, provider, provenance, intended uses, collection period, tags. */
function datasheetPanel(d) {
  const sheet = d.datasheet;
  if (!sheet) {
    const why = d.datasheet_hash
      ? `Its datasheet ${short(d.datasheet_hash, 10)} is on-chain, but this gateway does not hold the document.`
      : "The provider has published no datasheet for this dataset.";
    return `<div class="panel" id="datasheet-panel"><h2>Datasheet</h2><p class="muted" id="no-datasheet">${why}</p></div>`;
  }
  const period = sheet.collection_period ? `${esc(sheet.collection_period.start)} to ${esc(sheet.collection_period.end)}` : "";
  const rows = [
    ["License", esc(sheet.license), "ds-license"],
    ["Provider", `${esc(sheet.provider_name)} · ${short(d.provider)}`, "ds-provider"],
    ["Rows", Number(sheet.rows).toLocaleString("en"), "ds-rows"],
    ["Tags", (sheet.tags || []).length ? `<span class="badges">${sheet.tags.map((t) => `<a class="chip" href="#/?tag=${encodeURIComponent(t)}">${esc(t)}</a>`).join("")}</span>` : "", "ds-tags"],
    ["Collection period", period, "ds-period"],
    ["Provenance", sheet.provenance ? `<span class="datasheet-text">${esc(sheet.provenance)}</span>` : "", "ds-provenance"],
    ["Intended uses", sheet.intended_uses ? `<span class="datasheet-text">${esc(sheet.intended_uses)}</span>` : "", "ds-intended-uses"],
    ["Datasheet hash", short(d.datasheet_hash, 10), "ds-hash"],
  ].filter(([, value]) => value);
  return `<div class="panel" id="datasheet-panel"><h2>Datasheet</h2>
    <p class="datasheet-text" id="ds-description">${esc(sheet.description)}</p>
    <dl class="kv">${rows.map(([k, v, id]) => `<dt>${k}</dt><dd id="${id}">${v}</dd>`).join("")}</dl></div>`;
}

const MAX_COLUMN_ROWS = 200;

/** Each feature (name, description, unit, declared bounds from the schema), then the label with its classes. */
function columnsPanel(d) {
  const schema = d.schema;
  if (!schema) return "";
  const sheet = d.datasheet;
  const described = new Map((sheet?.columns || []).map((c) => [c.name, c]));
  const bounds = Array.isArray(schema.feature_bounds) ? schema.feature_bounds : [];
  const names = schema.feature_names || [];
  const shown = names.slice(0, MAX_COLUMN_ROWS);
  const number = (x) => Number(x).toLocaleString("en", { maximumFractionDigits: 6 });
  const featureRows = shown.map((name, i) => {
    const c = described.get(name);
    const b = bounds[i];
    return `<tr data-column="${esc(name)}"><th scope="row">${esc(name)}</th><td>${esc(c?.description || "")}</td><td>${esc(c?.unit || "")}</td>
      <td class="num" data-bounds="${b ? esc(JSON.stringify(b)) : ""}">${b ? `${number(b[0])} to ${number(b[1])}` : `<span class="muted">none declared</span>`}</td></tr>`;
  });
  const more = names.length > shown.length ? `<tr><td colspan="4" class="muted">… and ${names.length - shown.length} more feature columns</td></tr>` : "";
  const labelName = sheet?.label?.name || "label";
  const labelRow = `<tr class="label-row" data-label="${esc(labelName)}"><th scope="row">${esc(labelName)} <span class="chip">label</span></th>
    <td>${esc(sheet?.label?.description || "")}</td><td></td>
    <td>${(schema.task || "classification") === "classification" ? `classes: ${(schema.class_names || []).map((c) => `<span class="mono">${esc(c)}</span>`).join(", ")}` : esc(labelSummary(schema))}</td></tr>`;
  return `<div class="panel" id="columns-panel"><h2>Columns</h2>
    <p class="muted">Declared bounds are the provider's, not statistics of the rows: the enclave clips each value to them and scales it to [-1, 1].</p>
    <div class="table-wrap"><table id="column-table">
      <thead><tr><th scope="col">Column</th><th scope="col">Description</th><th scope="col">Unit</th><th scope="col">Declared bounds</th></tr></thead>
      <tbody>${featureRows.join("")}${more}${labelRow}</tbody></table></div></div>`;
}
