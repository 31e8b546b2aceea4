// The single-page app: hash routes, the account selector, and live updates.
import { getJSON, subscribe } from "./api.js";
import { esc, setCurrency } from "./format.js";
import { useChainConstants } from "./onchain.js";
import * as wallet from "./wallet.js";

const routes = [
  { pattern: /^\/$/, nav: "marketplace", load: () => import("./pages/marketplace.js") },
  { pattern: /^\/datasets\/(\d+)$/, nav: "marketplace", load: () => import("./pages/dataset.js") },
  { pattern: /^\/list$/, nav: "list", load: () => import("./pages/list.js") },
  { pattern: /^\/jobs\/new$/, nav: "create-job", load: () => import("./pages/create-job.js") },
  { pattern: /^\/jobs$/, nav: "jobs", load: () => import("./pages/jobs.js") },
  { pattern: /^\/jobs\/(\d+)$/, nav: "jobs", load: () => import("./pages/job.js") },
  { pattern: /^\/models$/, nav: "models", load: () => import("./pages/models.js") },
  { pattern: /^\/models\/(\d+)$/, nav: "models", load: () => import("./pages/model.js") },
  { pattern: /^\/competitions$/, nav: "competitions", load: () => import("./pages/competitions.js") },
  { pattern: /^\/competitions\/new$/, nav: "competitions", load: () => import("./pages/create-competition.js") },
  { pattern: /^\/competitions\/(\d+)$/, nav: "competitions", load: () => import("./pages/competition.js") },
  { pattern: /^\/workers$/, nav: "workers", load: () => import("./pages/workers.js") },
  { pattern: /^\/account$/, nav: "account", load: () => import("./pages/account.js") },
];

const view = document.getElementById("view");
let cleanup = null;
let renderToken = 0;

async function route() {
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const match = routes.map((r) => ({ r, m: path.match(r.pattern) })).find((x) => x.m);
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const token = ++renderToken;
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", match && a.dataset.nav === match.r.nav));
  revealActiveNav();
  if (!match) {
    view.innerHTML = `<h1>Not found</h1><p>No page at <span class="mono">${esc(path)}</span>. <a href="#/">Back to the marketplace</a>.</p>`;
    return;
  }
  // Each render gets an element of its own: a render overtaken by a newer one (a quick second
  // navigation, a wallet's accountsChanged) finishes into a detached element, never the page shown.
  const root = document.createElement("div");
  root.className = "page";
  root.innerHTML = `<p class="muted">Loading…</p>`;
  view.replaceChildren(root);
  try {
    const page = await match.r.load();
    if (token !== renderToken) return;
    const result = await page.render(root, match.m.slice(1));
    if (token === renderToken) cleanup = typeof result === "function" ? result : null;
    else if (typeof result === "function") result();
    view.focus({ preventScroll: true });
  } catch (error) {
    if (token === renderToken) root.innerHTML = `<div class="error-box" role="alert">${esc(error.message || error)}</div>`;
  }
}

async function setUpAccounts() {
  const select = document.getElementById("account-select");
  const status = document.getElementById("chain-status");
  try {
    const cfg = await wallet.loadConfig();
    setCurrency(cfg.payment_token);
    useChainConstants(cfg);
    const choices = (await wallet.accountChoices()).map((c) => accountLabel(c, cfg));
    select.innerHTML = choices.map((c) => `<option value="${esc(c.value)}" title="${esc(c.title)}">${esc(c.label)}</option>`).join("") || `<option value="">no account</option>`;
    const current = wallet.selectedChoice();
    if (choices.some((c) => c.value === current)) select.value = current;
    else if (choices.length) wallet.select(choices[0].value);
    const showSelected = () => (select.title = choices.find((c) => c.value === select.value)?.title || "");
    showSelected();
    select.addEventListener("change", () => {
      wallet.select(select.value);
      showSelected();
      route();
    });
    wallet.onWalletChange(route); // the wallet's user switched account or chain: show the page as the new one
    status.textContent = `chain ${cfg.chain_id}`;
    subscribe((type, data) => {
      if (type === "block" && data && data.indexed_block !== undefined) status.textContent = `chain ${cfg.chain_id} · block ${data.indexed_block}`;
      if (type === "market" && data) showMarketPaused(Boolean(data.paused));
    });
    getJSON("/api/health").then((h) => showMarketPaused(Boolean(h.market_paused))).catch(() => {});
  } catch (error) {
    status.textContent = "gateway unreachable";
    status.classList.add("bad");
  }
}

/** On a phone the nav scrolls sideways: bring the current page's link into view. */
function revealActiveNav() {
  const nav = document.querySelector(".topbar nav");
  const active = nav && nav.querySelector("a.active");
  if (!active || nav.scrollWidth <= nav.clientWidth) return;
  nav.scrollLeft = Math.max(0, active.offsetLeft - nav.offsetLeft - 16);
}

/** A short address, "0x70…79C8": enough to tell accounts apart where space is short. */
function shortAddress(address) {
  const a = String(address || "");
  return a.length > 12 ? `${a.slice(0, 4)}…${a.slice(-4)}` : a;
}

/** The selector's label of an account choice: "Dev #2 0x3C…93BC" for a development account (the full address in its title). */
function accountLabel(choice, cfg) {
  const dev = /^dev:(\d+)$/.exec(choice.value);
  const account = dev ? cfg.dev_accounts[Number(dev[1])] : null;
  if (!account) return { ...choice, title: choice.label };
  return { value: choice.value, label: `Dev #${dev[1]} ${shortAddress(account.address)}`, title: `Development account ${dev[1]}: ${account.address}` };
}

/** The market-wide emergency stop, as a banner above every page. */
function showMarketPaused(paused) {
  const banner = document.getElementById("market-banner");
  banner.hidden = !paused;
  banner.textContent = paused
    ? "The market is in an emergency stop: no new listings, jobs, claims or settlements. Cancelling open jobs and withdrawing still work."
    : "";
}

window.addEventListener("hashchange", route);
setUpAccounts().then(route);
