// My account: balance, withdrawable earnings, withdraw, payment history.
import { formatEther } from "ethers";
import { getJSON, subscribe } from "../api.js";
import { esc, money, paymentUnit, short } from "../format.js";
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
    <h2>Payments</h2><div id="payments"></div>`;
  const button = root.querySelector("#withdraw");
  const status = root.querySelector("#withdraw-status");
  let busy = false;

  async function load() {
    const token = paymentUnit().token ? await wallet.paymentToken() : null;
    const [balance, tokenBalance, payments] = await Promise.all([
      (await wallet.reader()).getBalance(me),
      token ? token.balanceOf(me) : null,
      getJSON(`/api/payments?account=${me}`),
    ]);
    const pending = BigInt(payments.pending_wei || "0");
    const ether = `${Number(formatEther(balance)).toLocaleString(undefined, { maximumFractionDigits: 6 })} ETH`;
    root.querySelector("#details").innerHTML = `<dl class="kv"><dt>Address</dt><dd class="mono" id="my-address">${esc(me)}</dd>
      ${token ? `<dt>Balance</dt><dd>${money(tokenBalance)} <span class="muted">(and ${ether} for gas)</span></dd>` : `<dt>Balance</dt><dd>${ether}</dd>`}
      <dt>Withdrawable</dt><dd id="pending">${money(pending)}</dd></dl>`;
    button.textContent = `Withdraw ${money(pending)}`;
    button.disabled = busy || pending === 0n;
    root.querySelector("#payments").innerHTML = payments.items.length
      ? `<div class="table-wrap"><table><thead><tr><th>Kind</th><th>Reason</th><th>Job</th><th>Amount</th><th>Block</th><th>Transaction</th></tr></thead><tbody>
        ${payments.items.map((p) => `<tr data-reason="${esc(p.reason || "")}"><td>${esc(p.kind)}</td><td>${esc(p.reason || "—")}</td><td>${p.job_id ? `<a href="#/jobs/${p.job_id}">#${p.job_id}</a>` : "—"}</td><td>${money(p.amount_wei)}</td><td>${esc(p.block)}</td><td>${short(p.tx_hash)}</td></tr>`).join("")}
        </tbody></table></div>`
      : `<p class="muted">No payments yet.</p>`;
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
  return subscribe((type) => type === "payment" && load().catch(() => {}));
}
