// The marketplace: datasets with price and a remaining-budget bar, filtered by status and more, sorted.
import { getJSON, subscribe } from "../api.js";
import { budgetBar } from "../charts.js";
import { esc, money, eps, short, statusBadges } from "../format.js";
import { datasetStatusNames } from "../onchain.js";

/** The status filter's choices [value, label, statuses asked for]: "" is the gateway's default (all but delisted), then each status, then all. */
function statusChoices() {
  const names = datasetStatusNames();
  const label = (name) => name[0].toUpperCase() + name.slice(1).replaceAll("_", " ");
  return [["", "All but delisted", []], ...names.map((name) => [name, label(name), [name]]), ["all", "All", names]];
}

export async function render(root) {
  const choices = statusChoices();
  root.innerHTML = `
    <h1>Datasets</h1>
    <form class="toolbar" id="filters" aria-label="Filter datasets">
      <div class="field"><label for="sort">Sort by</label>
        <select id="sort" name="sort">
          <option value="-listed">Newest first</option><option value="price">Price, low to high</option>
          <option value="-price">Price, high to low</option><option value="-remaining_epsilon">Most ε remaining</option>
          <option value="remaining_epsilon">Least ε remaining</option>
        </select></div>
      <div class="field"><label for="min-eps">Min. ε remaining</label><input id="min-eps" name="min_remaining_epsilon" type="number" min="0" step="0.1" placeholder="any"></div>
      <div class="field"><label for="schema">Schema hash</label><input id="schema" name="schema_hash" type="text" placeholder="any" autocomplete="off"></div>
      <div class="field"><label for="status-filter">Status</label>
        <select id="status-filter" name="status">${choices.map(([v, label]) => `<option value="${v}">${esc(label)}</option>`).join("")}</select></div>
    </form>
    <div id="results" aria-live="polite"></div>`;
  const form = root.querySelector("#filters");
  const results = root.querySelector("#results");

  async function load() {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (k === "status") continue;
      if (String(v).trim()) params.set(k, String(v).trim().replace(/^0x/, ""));
    }
    const statuses = choices.find(([v]) => v === form.elements.status.value)?.[2] || [];
    for (const status of statuses) params.append("status", status);
    params.set("limit", "100");
    try {
      const { items, total } = await getJSON(`/api/datasets?${params}`);
      if (!items.length) {
        results.innerHTML = `<p class="muted">No datasets match. <a href="#/list">List one</a>.</p>`;
        return;
      }
      results.innerHTML = `<p class="muted">${total} dataset${total === 1 ? "" : "s"}</p><div class="grid">${items.map(card).join("")}</div>`;
    } catch (error) {
      results.innerHTML = `<div class="error-box" role="alert">Could not load datasets: ${esc(error.message)}</div>`;
    }
  }
  form.addEventListener("change", load);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  await load();
  return subscribe((type) => (type === "dataset" || type === "job") && load());
}

function card(d) {
  return `<article class="card" data-dataset-id="${d.id}" data-status="${esc(d.status)}">
    <h3><a href="#/datasets/${d.id}">Dataset #${d.id}</a></h3>
    ${statusBadges(d)}
    <div><strong>${money(d.price_wei)}</strong> per job · up to ${eps(d.max_epsilon_per_job)} ε per job</div>
    ${budgetBar(d)}
    <div class="muted">schema ${short("0x" + String(d.schema_hash).replace(/^0x/, ""))} · provider ${short(d.provider)}</div>
  </article>`;
}
