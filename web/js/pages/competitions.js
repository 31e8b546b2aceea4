// Competitions: every competition with its title (from its rules document, checked against the
// on-chain rules hash), phase, metric, prize, entries, public best and a live countdown; the
// account's prizes and sales to withdraw. Also the display helpers the competition pages share.
import { getJSON } from "../api.js";
import * as flow from "../competition-flow.js";
import { chip, esc, money, short } from "../format.js";
import * as wallet from "../wallet.js";

const METRIC_LABELS = { accuracy: "accuracy", macro_f1: "macro F1", roc_auc: "ROC AUC", log_loss: "log loss", rmse: "RMSE" };
const PHASES = {
  upcoming: ["Upcoming", "warn"],
  submissions: ["Open for submissions", "ok"],
  scoring: ["Private scoring", "warn"],
  closable: ["Awaiting close", "warn"],
  closed: ["Closed", ""],
};
const titles = new Map(); // rules hash → title (rules never change)

/** A metric's name as people write it. */
export function metricLabel(name) {
  return METRIC_LABELS[name] || String(name);
}

/** "accuracy (higher is better)". */
export function metricText(c) {
  return `${metricLabel(c.metric)} (${c.higher_is_better ? "higher" : "lower"} is better)`;
}

/** A metric value with up to 6 decimals (the chain's resolution), or a dash. */
export function scoreText(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toFixed(6).replace(/0+$/, "").replace(/\.$/, "");
}

/** The competition's phase as a chip. */
export function phaseChip(c) {
  const [label, tone] = PHASES[c.phase] || [c.phase, ""];
  return `<span class="chip ${tone}" data-phase="${esc(c.phase)}">${esc(label)}</span>`;
}

/** A live countdown element for the competition's next deadline (ticked by {@link startCountdowns}). */
export function countdown(c, id = "") {
  const attrs = id ? ` id="${esc(id)}"` : "";
  if (c.phase === "upcoming") return `<span class="countdown"${attrs} data-countdown="${c.opens_at}" data-label="opens in">opens soon</span>`;
  if (c.phase === "submissions") return `<span class="countdown"${attrs} data-countdown="${c.closes_at}" data-label="closes in">closes soon</span>`;
  if (c.phase === "scoring") return `<span class="countdown"${attrs} data-countdown="${c.open_to_all_at}" data-label="private scoring; anyone may close in">private scoring</span>`;
  if (c.phase === "closable") return `<span class="countdown"${attrs}>scoring period over: anyone may close it</span>`;
  return `<span class="countdown"${attrs}>closed</span>`;
}

/** "2 d 3 h", "59 min 58 s", "12 s". */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${r} s`;
  return `${r} s`;
}

/**
 * Tick every countdown under `root` once a second, on the chain's clock: `getSkew()` gives chain
 * time minus this machine's time as of the last refresh (see {@link chainSkew}). Returns a stop function.
 */
export function startCountdowns(root, getSkew) {
  const tick = () => tickCountdowns(root, getSkew());
  tick();
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

/** Set every countdown under `root` to the time left on the chain's clock (`skew`: see {@link chainSkew}). */
export function tickCountdowns(root, skew) {
  const now = Date.now() / 1000 + skew;
  root.querySelectorAll("[data-countdown]").forEach((el) => {
    const left = Number(el.dataset.countdown) - now;
    el.textContent = left > 0 ? `${el.dataset.label} ${duration(left)}` : `${el.dataset.label.replace(/ in$/, "")}: now (refreshing…)`;
  });
}

/** Chain time minus this machine's time, in seconds (the contract's deadlines are on the chain's clock). */
export async function chainSkew() {
  return (await flow.chainNow()) - Date.now() / 1000;
}

/** The competition's title from its rules document (cached by rules hash), or null. */
export async function titleOf(c) {
  if (!titles.has(c.rules_hash)) {
    try {
      const rules = await flow.rulesOf(c);
      titles.set(c.rules_hash, rules && typeof rules.title === "string" ? rules.title : null);
    } catch {
      return null;
    }
  }
  return titles.get(c.rules_hash);
}

export async function render(root) {
  const cfg = await wallet.loadConfig();
  if (!cfg.contracts.competitions) {
    root.innerHTML = `<h1>Competitions</h1><p class="muted">This deployment has no competition market: it runs no competitions.</p>`;
    return undefined;
  }
  root.innerHTML = `<h1>Competitions</h1>
    <p class="muted">Models compete on a private test set that only an attested evaluator enclave ever decrypts. Entries are sealed in your browser; scores are signed by the enclave and posted on-chain, the public leaderboard through the Ladder so it leaks little about the hidden labels.</p>
    <div class="toolbar"><a class="button" href="#/competitions/new" id="new-competition">Create a competition</a></div>
    <section class="panel" id="credits-panel" hidden><h2>Your prizes and sales</h2>
      <dl class="kv"><dt>Withdrawable from the competition market</dt><dd id="competition-credits">—</dd></dl>
      <p><button type="button" id="competition-withdraw">Withdraw</button></p><div id="withdraw-status" aria-live="polite"></div></section>
    <div id="competition-list" aria-live="polite"><p class="muted">Loading…</p></div>`;
  const list = root.querySelector("#competition-list");
  let skew = 0;
  let busy = false;
  let shown = false; // once shown, the panel stays (with its withdrawal message) until the page changes

  async function load() {
    const [items, s, me] = await Promise.all([getJSON("/api/competitions"), chainSkew(), wallet.address()]);
    skew = s;
    const named = await Promise.all(items.map(async (c) => ({ c, title: await titleOf(c) })));
    list.innerHTML = items.length
      ? `<p class="muted">${items.length} competition${items.length === 1 ? "" : "s"}</p><div class="grid">${named.map(({ c, title }) => card(c, title)).join("")}</div>`
      : `<p class="muted">No competitions yet. <a href="#/competitions/new">Create the first one</a>.</p>`;
    tickCountdowns(list, skew);
    if (me) {
      const owed = await flow.credits(me);
      shown = shown || owed > 0n;
      root.querySelector("#credits-panel").hidden = !shown;
      root.querySelector("#competition-credits").textContent = money(owed);
      root.querySelector("#competition-withdraw").disabled = busy || owed === 0n;
    }
  }

  root.querySelector("#competition-withdraw").addEventListener("click", async () => {
    const status = root.querySelector("#withdraw-status");
    busy = true;
    root.querySelector("#competition-withdraw").disabled = true;
    status.innerHTML = `<p class="muted">Sending the withdrawal…</p>`;
    try {
      const hash = await flow.withdraw();
      status.innerHTML = `<div class="ok-box" role="status" id="withdraw-ok">Withdrawn in transaction ${short(hash)}.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(flow.describeError(error))}</div>`;
    } finally {
      busy = false;
      load().catch(() => {});
    }
  });

  await load();
  const stopCountdowns = startCountdowns(root, () => skew);
  // Scores and submissions live on-chain, not in the gateway's event feed: refresh every few seconds.
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => {
    clearInterval(timer);
    stopCountdowns();
  };
}

function card(c, title) {
  const id = c.competition_id;
  return `<article class="card competition-card" data-competition-id="${id}" data-phase="${esc(c.phase)}">
    <h3><a href="#/competitions/${id}">${title ? esc(title) : `Competition #${id}`}</a></h3>
    <div class="badges">${phaseChip(c)}${chip(`#${id}`)}</div>
    <div><strong>${money(c.prize_wei)}</strong> prize · ${esc(metricText(c))}</div>
    <div>${c.submission_count} entr${c.submission_count === 1 ? "y" : "ies"} · public best <span data-public-best>${esc(scoreText(c.public_best))}</span></div>
    <div class="muted">${countdown(c)}</div>
  </article>`;
}
