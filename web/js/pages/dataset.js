// Dataset detail: its datasheet (what it is, from whom, under which license) and its columns
// (description, unit, the provider's declared bounds from the schema, the label and its classes);
// status, terms, access lists, schema, the budget as a bar and over time, the jobs that used it;
// for its provider, the controls to pause, resume, delist, top up and reprice.
import { formatUnits } from "ethers";
import { getJSON, subscribe, waitForIndex } from "../api.js";
import { budgetBar, budgetChart } from "../charts.js";
import { datasetUnavailable, esc, eps, money, parseMoney, paymentUnit, short, statusBadges, when } from "../format.js";
import { epsilonUnits } from "../onchain.js";
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
  async function send(label, makeTx) {
    busy = true;
    for (const b of buttons()) b.disabled = true;
    status.innerHTML = `<p class="muted">${esc(label)}: sign the transaction…</p>`;
    try {
      const market = await wallet.jobMarket({ write: true });
      const tx = await makeTx(market);
      status.innerHTML = `<p class="muted">${esc(label)}: waiting for ${short(tx.hash)} to be mined…</p>`;
      const receipt = await tx.wait();
      await waitForIndex(receipt.blockNumber);
      status.innerHTML = `<div class="ok-box" role="status" id="manage-ok">${esc(label)}: done in transaction ${short(tx.hash)}.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
    } finally {
      busy = false;
      await load().catch(() => {});
    }
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

  await load();
  return subscribe((type, data) => {
    if ((type === "dataset" && String(data?.dataset_id) === String(id)) || type === "job") load().catch(() => {});
  });
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
           <dt>Classes</dt><dd>${esc((schema.class_names || []).join(", "))}</dd>
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
    <td>classes: ${(schema.class_names || []).map((c) => `<span class="mono">${esc(c)}</span>`).join(", ")}</td></tr>`;
  return `<div class="panel" id="columns-panel"><h2>Columns</h2>
    <p class="muted">Declared bounds are the provider's, not statistics of the rows: the enclave clips each value to them and scales it to [-1, 1].</p>
    <div class="table-wrap"><table id="column-table">
      <thead><tr><th scope="col">Column</th><th scope="col">Description</th><th scope="col">Unit</th><th scope="col">Declared bounds</th></tr></thead>
      <tbody>${featureRows.join("")}${more}${labelRow}</tbody></table></div></div>`;
}
