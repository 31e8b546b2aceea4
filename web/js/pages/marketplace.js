// The marketplace: datasets told apart by their datasheets (title, provider, rows, label, tags, a
// line of description) with price and a remaining-budget bar; searched (free text, tags), filtered
// by schema, status and remaining ε, sorted, paged. The search lives in the URL's hash query
// (#/?q=credit&tag=finance&sort=-rows&page=2), so a search can be bookmarked and shared.
import { getJSON, subscribe } from "../api.js";
import { budgetBar } from "../charts.js";
import { esc, money, eps, short, statusBadges } from "../format.js";
import { datasetStatusNames } from "../onchain.js";

const SORTS = [
  ["-listed", "Newest first"],
  ["listed", "Oldest first"],
  ["price", "Price, low to high"],
  ["-price", "Price, high to low"],
  ["-remaining_epsilon", "Most ε remaining"],
  ["remaining_epsilon", "Least ε remaining"],
  ["title", "Title, A to Z"],
  ["-title", "Title, Z to A"],
  ["-rows", "Most rows"],
  ["rows", "Fewest rows"],
];
const PAGE_SIZES = [12, 24, 48, 96];
const DEFAULT_PAGE_SIZE = 12;
const MAX_PAGE_SIZE = 100;

/** The status filter's choices [value, label, statuses asked for]: "" is the gateway's default (all but delisted), then each status, then all. */
function statusChoices() {
  const names = datasetStatusNames();
  const label = (name) => name[0].toUpperCase() + name.slice(1).replaceAll("_", " ");
  return [["", "All but delisted", []], ...names.map((name) => [name, label(name), [name]]), ["all", "All", names]];
}

/**
 * The search as the URL's hash query holds it.
 * @typedef {{q: string, tags: string[], sort: string, schema: string, status: string, minEps: string, page: number, per: number}} SearchState
 */

/** Read the search from `#/?…`; unknown or malformed values fall back to the defaults. */
export function readState(hash, choices) {
  const query = new URLSearchParams(String(hash).split("?")[1] || "");
  const int = (value, fallback, max) => {
    const n = Number(value);
    return Number.isSafeInteger(n) && n >= 1 && n <= max ? n : fallback;
  };
  const sort = query.get("sort");
  const status = query.get("status") || "";
  return {
    q: (query.get("q") || "").slice(0, 200),
    tags: [...new Set(query.getAll("tag").filter((t) => /^[a-z0-9][a-z0-9-]{0,31}$/.test(t)))],
    sort: SORTS.some(([v]) => v === sort) ? sort : "-listed",
    schema: query.get("schema_hash") || "",
    status: choices.some(([v]) => v === status) ? status : "",
    minEps: query.get("min_remaining_epsilon") || "",
    page: int(query.get("page"), 1, Number.MAX_SAFE_INTEGER),
    per: int(query.get("per"), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
  };
}

/** The hash for a search: only what differs from the defaults. */
export function stateHash(state) {
  const query = new URLSearchParams();
  if (state.q.trim()) query.set("q", state.q.trim());
  for (const tag of state.tags) query.append("tag", tag);
  if (state.sort !== "-listed") query.set("sort", state.sort);
  if (state.schema.trim()) query.set("schema_hash", state.schema.trim());
  if (state.status) query.set("status", state.status);
  if (state.minEps.trim()) query.set("min_remaining_epsilon", state.minEps.trim());
  if (state.page > 1) query.set("page", String(state.page));
  if (state.per !== DEFAULT_PAGE_SIZE) query.set("per", String(state.per));
  const text = query.toString();
  return text ? `#/?${text}` : "#/";
}

export async function render(root) {
  const choices = statusChoices();
  const state = readState(location.hash, choices);
  const sizes = [...new Set([...PAGE_SIZES, state.per])].sort((a, b) => a - b);
  root.innerHTML = `
    <h1>Datasets</h1>
    <form class="search-bar" id="search-form" role="search" aria-label="Search datasets">
      <div class="field"><label for="search">Search</label>
        <input id="search" name="q" type="search" maxlength="200" placeholder="title, description, provider, label, columns…" autocomplete="off" value="${esc(state.q)}"></div>
      <button type="submit" id="search-submit">Search</button>
    </form>
    <div id="tag-bar" aria-label="Filter by tag"></div>
    <form class="toolbar" id="filters" aria-label="Filter datasets">
      <div class="field"><label for="sort">Sort by</label>
        <select id="sort" name="sort">${SORTS.map(([v, label]) => `<option value="${v}">${esc(label)}</option>`).join("")}</select></div>
      <div class="field"><label for="min-eps">Min. ε remaining</label><input id="min-eps" name="min_remaining_epsilon" type="number" min="0" step="0.1" placeholder="any" value="${esc(state.minEps)}"></div>
      <div class="field"><label for="schema">Schema hash</label><input id="schema" name="schema_hash" type="text" placeholder="any" autocomplete="off" value="${esc(state.schema)}"></div>
      <div class="field"><label for="status-filter">Status</label>
        <select id="status-filter" name="status">${choices.map(([v, label]) => `<option value="${v}">${esc(label)}</option>`).join("")}</select></div>
      <div class="field"><label for="per-page">Per page</label>
        <select id="per-page" name="per">${sizes.map((n) => `<option value="${n}">${n}</option>`).join("")}</select></div>
    </form>
    <div id="results" aria-live="polite"></div>`;
  const form = root.querySelector("#filters");
  const search = root.querySelector("#search");
  const results = root.querySelector("#results");
  const tagBar = root.querySelector("#tag-bar");
  form.elements.sort.value = state.sort;
  form.elements.status.value = state.status;
  form.elements.per.value = String(state.per);
  let knownTags = [];
  let sequence = 0;

  /** Take the form's values into the state; a changed filter goes back to the first page. */
  function fromForm({ keepPage = false } = {}) {
    state.q = search.value;
    state.sort = form.elements.sort.value;
    state.schema = form.elements.schema_hash.value;
    state.status = form.elements.status.value;
    state.minEps = form.elements.min_remaining_epsilon.value;
    state.per = Number(form.elements.per.value) || DEFAULT_PAGE_SIZE;
    if (!keepPage) state.page = 1;
  }

  /** Put the state in the address bar without a navigation (so the page is not rendered again). */
  function remember() {
    // Overtaken by a navigation (the address bar names another page, perhaps before its render
    // began): the address bar is that page's now.
    const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
    if (!root.isConnected || path !== "/") return;
    const hash = stateHash(state);
    if (location.hash !== hash) history.replaceState(history.state, "", hash);
  }

  function renderTags() {
    const all = [...knownTags];
    for (const tag of state.tags) if (!all.some((t) => t.tag === tag)) all.push({ tag, count: 0 });
    tagBar.innerHTML = all.length
      ? `<ul class="tag-chips" id="tag-chips">${all
          .map(
            ({ tag, count }) =>
              `<li><button type="button" class="tag-chip" data-tag="${esc(tag)}" aria-pressed="${state.tags.includes(tag)}">${esc(tag)}${count ? `<span class="count">${count}</span>` : ""}</button></li>`,
          )
          .join("")}</ul>`
      : "";
  }

  async function loadTags() {
    try {
      knownTags = (await getJSON("/api/datasets/tags")).tags || [];
    } catch {
      knownTags = []; // the chips are a shortcut; the search box still finds tags
    }
    renderTags();
  }

  async function load() {
    remember();
    const mine = ++sequence;
    const params = new URLSearchParams();
    if (state.q.trim()) params.set("q", state.q.trim());
    for (const tag of state.tags) params.append("tag", tag);
    params.set("sort", state.sort);
    if (state.schema.trim()) params.set("schema_hash", state.schema.trim().replace(/^0x/, ""));
    if (state.minEps.trim()) params.set("min_remaining_epsilon", state.minEps.trim());
    for (const status of choices.find(([v]) => v === state.status)?.[2] || []) params.append("status", status);
    params.set("limit", String(state.per));
    params.set("offset", String((state.page - 1) * state.per));
    try {
      const { items, total } = await getJSON(`/api/datasets?${params}`);
      if (mine !== sequence) return; // a newer search answered first
      if (!items.length && total > 0 && state.page > 1) {
        state.page = Math.max(1, Math.ceil(total / state.per)); // past the last page (a shared link, a delisting): show the last
        return load();
      }
      if (!items.length) {
        const searching = state.q.trim() || state.tags.length || state.schema.trim() || state.minEps.trim() || state.status;
        results.innerHTML = searching
          ? `<p class="muted" id="no-results">No dataset matches this search. <button type="button" class="secondary" id="clear-search">Clear the search</button></p>`
          : `<p class="muted" id="no-results">No datasets yet. <a href="#/list">List one</a>.</p>`;
        return;
      }
      const first = (state.page - 1) * state.per + 1;
      const last = first + items.length - 1;
      results.innerHTML = `<p class="muted" id="result-count">${total} dataset${total === 1 ? "" : "s"}</p>
        <div class="grid">${items.map(card).join("")}</div>
        ${pager(state.page, first, last, total)}`;
    } catch (error) {
      if (mine === sequence) results.innerHTML = `<div class="error-box" role="alert">Could not load datasets: ${esc(error.message)}</div>`;
    }
  }

  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      fromForm();
      load();
    }, 300);
  });
  root.querySelector("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    fromForm();
    load();
  });
  form.addEventListener("change", () => {
    fromForm();
    load();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    fromForm();
    load();
  });
  root.addEventListener("click", (event) => {
    const chip = event.target.closest("[data-tag]");
    if (chip) {
      const tag = chip.dataset.tag;
      state.tags = state.tags.includes(tag) ? state.tags.filter((t) => t !== tag) : [...state.tags, tag];
      state.page = 1;
      renderTags();
      load();
      return;
    }
    const move = event.target.closest("[data-page]");
    if (move) {
      state.page = Math.max(1, Number(move.dataset.page));
      load().then(() => root.querySelector("#result-count")?.scrollIntoView({ block: "start" }));
      return;
    }
    if (event.target.closest("#clear-search")) {
      Object.assign(state, readState("#/", choices), { per: state.per, sort: state.sort });
      search.value = "";
      form.elements.schema_hash.value = "";
      form.elements.min_remaining_epsilon.value = "";
      form.elements.status.value = "";
      renderTags();
      load();
    }
  });

  renderTags();
  await Promise.all([loadTags(), load()]);
  return subscribe((type) => {
    if (type === "dataset" || type === "job") {
      load();
      if (type === "dataset") loadTags();
    }
  });
}

/** Previous / "N–M of T" / Next. */
function pager(page, first, last, total) {
  const hasPrev = page > 1;
  const hasNext = last < total;
  return `<nav class="pager" aria-label="Pages">
    <button type="button" class="secondary" id="prev-page" data-page="${page - 1}"${hasPrev ? "" : " disabled"}>Previous</button>
    <span class="range" id="page-range">${first}–${last} of ${total}</span>
    <button type="button" class="secondary" id="next-page" data-page="${page + 1}"${hasNext ? "" : " disabled"}>Next</button>
  </nav>`;
}

/** A dataset card: what it is (the datasheet) before what it costs. */
function card(d) {
  const sheet = d.datasheet;
  const title = sheet ? esc(sheet.title) : `Dataset #${d.id}`;
  const facts = sheet
    ? `<div class="facts"><span class="card-rows" data-rows="${sheet.rows}">${Number(sheet.rows).toLocaleString("en")} row${sheet.rows === 1 ? "" : "s"}</span><span class="card-label">label: <strong>${esc(sheet.label_name)}</strong></span><span class="muted">${esc(sheet.license)}</span></div>`
    : "";
  const tags = sheet?.tags?.length
    ? `<div class="card-tags">${sheet.tags.map((t) => `<button type="button" class="tag-chip" data-tag="${esc(t)}" title="Show datasets tagged ${esc(t)}">${esc(t)}</button>`).join("")}</div>`
    : "";
  return `<article class="card dataset-card" data-dataset-id="${d.id}" data-status="${esc(d.status)}">
    <h3><a href="#/datasets/${d.id}" class="card-title">${title}</a></h3>
    <div class="muted provider-name">${sheet ? `by <span class="card-provider">${esc(sheet.provider_name)}</span> · #${d.id}` : `no datasheet · provider ${short(d.provider)}`}</div>
    ${sheet ? `<p class="summary" title="${esc(sheet.description)}">${esc(oneLine(sheet.description))}</p>` : ""}
    ${facts}
    ${tags}
    ${statusBadges(d)}
    <div><strong>${money(d.price_wei)}</strong> per job · up to ${eps(d.max_epsilon_per_job)} ε per job</div>
    ${budgetBar(d)}
    <div class="muted">schema ${short("0x" + String(d.schema_hash).replace(/^0x/, ""))}${sheet ? ` · provider ${short(d.provider)}` : ""}</div>
  </article>`;
}

/** The first line of a description (the card shows one; CSS ellipsizes it). */
function oneLine(text) {
  return String(text || "").split(/\r?\n/).find((l) => l.trim()) || "";
}
