// Models: the catalogue of served models (price per row, output policy, cap, the ε a model trained
// here was trained with, status); the selected account's channels (client view); and, for a model
// owner, usage and earnings with a Withdraw button (owner view).
import { chip, esc, eps, money, short } from "../format.js";
import * as serving from "../serving.js";
import * as wallet from "../wallet.js";

export async function render(root) {
  const cfg = await wallet.loadConfig();
  if (!cfg.contracts.model_market) {
    root.innerHTML = `<h1>Models</h1><p class="muted">This deployment has no model market: it serves no models.</p>`;
    return undefined;
  }
  root.innerHTML = `<h1>Models</h1>
    <p class="muted">Sealed models served inside attested inference enclaves: your row is encrypted in this browser to the enclave's on-chain key, and you pay per row with signed vouchers.</p>
    <div id="catalogue" aria-live="polite"><p class="muted">Loading…</p></div>
    <section id="owner-section" hidden><h2>Your models: usage and earnings</h2>
      <div class="panel"><div id="owner-usage"></div>
        <dl class="kv"><dt>Withdrawable from the model market</dt><dd id="model-earnings">—</dd></dl>
        <p><button type="button" id="model-withdraw" disabled>Withdraw</button></p>
        <div id="model-withdraw-status" aria-live="polite"></div></div></section>
    <section id="client-section" hidden><h2>Your channels</h2><div id="my-channels"></div></section>`;
  const button = root.querySelector("#model-withdraw");
  const status = root.querySelector("#model-withdraw-status");
  let busy = false;

  async function load() {
    const [list, me] = await Promise.all([serving.models(), wallet.address()]);
    root.querySelector("#catalogue").innerHTML = list.length
      ? `<p class="muted">${list.length} model${list.length === 1 ? "" : "s"}</p><div class="grid">${list.map(card).join("")}</div>`
      : `<p class="muted">No models are listed yet.</p>`;
    if (!me) return;
    const mine = list.filter((m) => String(m.owner).toLowerCase() === me.toLowerCase());
    root.querySelector("#owner-section").hidden = mine.length === 0;
    if (mine.length) await loadOwner(mine, me);
    await loadChannels(list, me);
  }

  async function loadOwner(mine, me) {
    const market = await wallet.modelMarket();
    const [credits, usages] = await Promise.all([market.credits(me), Promise.all(mine.map((m) => serving.usage(m.model_id)))]);
    root.querySelector("#owner-usage").innerHTML = `<div class="table-wrap"><table><thead><tr><th>Model</th><th>Status</th><th>Clients</th><th>Queries redeemed</th><th>Paid by clients</th><th>Operator fees</th><th>Your share</th></tr></thead><tbody>
      ${mine
        .map((m, i) => {
          const u = usages[i];
          return `<tr data-owned-model="${m.model_id}"><td><a href="#/models/${m.model_id}">#${m.model_id}</a></td><td>${statusChip(m.status)}</td>
            <td>${u.clients.length}</td><td data-usage="queries">${u.queries}</td><td>${money(u.paid)}</td><td>${money(u.fees)}</td><td data-usage="share">${money(u.ownerShare)}</td></tr>`;
        })
        .join("")}</tbody></table></div>`;
    root.querySelector("#model-earnings").textContent = money(credits);
    button.textContent = `Withdraw ${money(credits)}`;
    button.disabled = busy || BigInt(credits) === 0n;
  }

  async function loadChannels(list, me) {
    const rows = [];
    for (const m of list) {
      const c = await serving.channelOnChain(m.model_id, me);
      if (c.deposited === 0n && c.redeemed === 0n) continue;
      const last = await serving.lastVoucher(m.model_id, me);
      rows.push({ m, c, last });
    }
    root.querySelector("#client-section").hidden = rows.length === 0;
    root.querySelector("#my-channels").innerHTML = rows.length
      ? `<div class="table-wrap"><table><thead><tr><th>Model</th><th>Deposited</th><th>Redeemed</th><th>Queries redeemed</th><th>Balance</th><th>Your last voucher</th></tr></thead><tbody>
        ${rows.map(({ m, c, last }) => `<tr data-channel="${m.model_id}"><td><a href="#/models/${m.model_id}">#${m.model_id}</a></td><td>${money(c.deposited)}</td><td>${money(c.redeemed)}</td>
          <td>${c.redeemedQueries}</td><td>${money(c.balance)}</td><td>${last ? `${money(last.amount)} for ${last.queries} quer${last.queries === 1n ? "y" : "ies"}` : "—"}</td></tr>`).join("")}
        </tbody></table></div>`
      : "";
  }

  button.addEventListener("click", async () => {
    busy = true;
    button.disabled = true;
    status.innerHTML = `<p class="muted">Sending the withdrawal…</p>`;
    try {
      const market = await wallet.modelMarket({ write: true });
      const tx = await market.withdraw();
      await tx.wait();
      status.innerHTML = `<div class="ok-box" role="status" id="model-withdraw-ok">Withdrawn in transaction ${short(tx.hash)}.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
    } finally {
      busy = false;
      load().catch(() => {});
    }
  });

  await load();
  // Redemptions and channels live on-chain, not in the gateway's event feed: refresh every few seconds.
  const timer = setInterval(() => !busy && load().catch(() => {}), 4000);
  return () => clearInterval(timer);
}

function statusChip(status) {
  return chip(status[0].toUpperCase() + status.slice(1), status === "active" ? "ok" : status === "paused" ? "warn" : "bad");
}

function card(m) {
  return `<article class="card" data-model-id="${m.model_id}" data-status="${esc(m.status)}">
    <h3><a href="#/models/${m.model_id}">Model #${m.model_id}</a></h3>
    <div class="badges">${statusChip(m.status)}${m.restricted ? chip("allow-list only", "warn") : ""}${m.epsilon !== null && m.epsilon !== undefined ? chip(`trained here · ε ${eps(m.epsilon)}`, "ok") : ""}</div>
    <div><strong>${money(m.price_per_query_wei)}</strong> per row</div>
    <div>${esc(serving.policyText(m.output_policy, m.output_param))}</div>
    <div class="muted">up to ${Number(m.query_cap).toLocaleString()} rows per client · owner ${short(m.owner)}</div>
  </article>`;
}
