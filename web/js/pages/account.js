// My account: balance, withdrawable earnings, withdraw; what this account spent as a consumer
// (each job's escrow, paid out or refunded, from /api/jobs?consumer=) and what was credited to it
// (earnings and refunds, from /api/payments).
import { formatEther } from "ethers";
import { getJSON, subscribe } from "../api.js";
import { esc, jobStatusChip, money, paymentUnit, short, when } from "../format.js";
import * as wallet from "../wallet.js";

export async function render(root) {
  let me;
  try {
    me = await (await wallet.signer()).getAddress();
  } catch (error) {
    // Why there is no account: none selected, or the wallet said no (declined, on another chain).
    root.innerHTML = `<h1>My account</h1><div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
    return undefined;
  }
  // A static shell: live updates refresh the figures, never the message of a withdrawal in progress.
  root.innerHTML = `<h1>My account</h1>
    <div class="panel"><div id="details"></div>
      <p><button id="withdraw" disabled>Withdraw</button></p>
      <div id="withdraw-status" aria-live="polite"></div></div>
    <h2>Spending: jobs you paid for</h2><div id="spending"></div>
    <h2>Credited to you</h2><p class="muted">Earnings as a provider or worker, and refunds of jobs that expired or were cancelled; withdraw them above.</p><div id="payments"></div>`;
  const button = root.querySelector("#withdraw");
  const status = root.querySelector("#withdraw-status");
  let busy = false;

  async function load() {
    const token = paymentUnit().token ? await wallet.paymentToken() : null;
    const [balance, tokenBalance, payments, jobs] = await Promise.all([
      (await wallet.reader()).getBalance(me),
      token ? token.balanceOf(me) : null,
      getJSON(`/api/payments?account=${me}`),
      getJSON(`/api/jobs?consumer=${me}&limit=500`),
    ]);
    root.querySelector("#spending").innerHTML = spending(jobs);
    const pending = BigInt(payments.pending_wei || "0");
    const ether = `${Number(formatEther(balance)).toLocaleString(undefined, { maximumFractionDigits: 6 })} ETH`;
    root.querySelector("#details").innerHTML = `<dl class="kv"><dt>Address</dt><dd class="mono" id="my-address">${esc(me)}</dd>
      ${token ? `<dt>Balance</dt><dd>${money(tokenBalance)} <span class="muted">(and ${ether} for gas)</span></dd>` : `<dt>Balance</dt><dd>${ether}</dd>`}
      <dt>Withdrawable</dt><dd id="pending">${money(pending)}</dd></dl>`;
    button.textContent = `Withdraw ${money(pending)}`;
    button.disabled = busy || pending === 0n;
    root.querySelector("#payments").innerHTML = payments.items.length
      ? `<div class="table-wrap"><table class="cards-on-phone" id="payments-table"><thead><tr><th>Kind</th><th>Reason</th><th>Job</th><th>Amount</th><th>Block</th><th>Transaction</th></tr></thead><tbody>
        ${payments.items.map((p) => `<tr data-reason="${esc(p.reason || "")}"><td data-label="Kind">${esc(p.kind)}</td><td data-label="Reason">${esc(p.reason || "—")}</td><td data-label="Job">${p.job_id ? `<a href="#/jobs/${p.job_id}">#${p.job_id}</a>` : "—"}</td><td data-label="Amount">${money(p.amount_wei)}</td><td data-label="Block">${esc(p.block)}</td><td data-label="Transaction">${short(p.tx_hash)}</td></tr>`).join("")}
        </tbody></table></div>`
      : `<p class="muted" id="no-credits">Nothing has been credited to this account.</p>`;
  }

  button.addEventListener("click", async () => {
    busy = true;
    button.disabled = true;
    status.innerHTML = `<p class="muted">Sending the withdrawal…</p>`;
    try {
      const market = await wallet.jobMarket({ write: true });
      const tx = await market.withdraw();
      await tx.wait();
      status.innerHTML = `<div class="ok-box" role="status">Withdrawn in transaction ${short(tx.hash)}.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
    } finally {
      busy = false;
      load().catch(() => {});
    }
  });
  await load();
  return subscribe((type) => (type === "payment" || type === "job") && load().catch(() => {}));
}

/**
 * Where a job's escrow went: still held (open or claimed), paid out to providers and worker
 * (completed: the escrow less any change credited back), or refunded (expired or cancelled).
 */
export function escrowOf(job) {
  const escrow = BigInt(job.escrow_wei || "0");
  const refunded = job.refund_wei !== null && job.refund_wei !== undefined ? BigInt(job.refund_wei) : 0n;
  const held = job.status === "open" || job.status === "claimed" ? escrow : 0n;
  const paid = job.status === "completed" ? escrow - refunded : 0n;
  return { escrow, held, paid, refunded };
}

function spending({ items, total }) {
  if (!items.length) return `<p class="muted" id="no-jobs">This account has not paid for a job yet. <a href="#/jobs/new">Create one</a>.</p>`;
  const rows = items.map((j) => ({ job: j, ...escrowOf(j) }));
  const sum = (key) => rows.reduce((acc, r) => acc + r[key], 0n);
  const outcome = (r) =>
    r.job.status === "completed" ? `paid out ${money(r.paid)}` : r.held > 0n ? `held in escrow` : r.refunded > 0n ? `refunded ${money(r.refunded)}` : "—";
  return `<dl class="kv" id="spending-totals"><dt>Jobs paid for</dt><dd>${total}</dd>
      <dt>Escrowed in all</dt><dd id="total-escrowed">${money(sum("escrow"))}</dd>
      <dt>Paid out to providers and workers</dt><dd id="total-paid">${money(sum("paid"))}</dd>
      <dt>Refunded to you</dt><dd id="total-refunded">${money(sum("refunded"))}</dd>
      <dt>Held in escrow now</dt><dd id="total-held">${money(sum("held"))}</dd></dl>
    ${total > items.length ? `<p class="muted">Totals of your ${items.length} latest jobs.</p>` : ""}
    <div class="table-wrap"><table class="cards-on-phone" id="spending-table"><thead><tr><th>Job</th><th>Status</th><th>Escrowed</th><th>Outcome</th><th>Datasets</th><th>Created</th></tr></thead><tbody>
      ${rows
        .map((r) => `<tr data-job="${r.job.id}"><td data-label="Job"><a href="#/jobs/${r.job.id}">#${r.job.id}</a></td><td data-label="Status">${jobStatusChip(r.job.status)}</td>
          <td data-label="Escrowed">${money(r.escrow)}</td><td data-label="Outcome">${outcome(r)}</td>
          <td data-label="Datasets">${r.job.dataset_ids.map((d) => `<a href="#/datasets/${d}">#${d}</a>`).join(", ")}</td><td data-label="Created">${esc(when(r.job.created_at))}</td></tr>`)
        .join("")}</tbody></table></div>`;
}
