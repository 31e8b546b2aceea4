// A served model: its terms and serving enclave (checked in the registry), "try it" — buy credit,
// type a row, and get the answer encrypted to this page, paid with a signed voucher and checked
// against the enclave's signed receipt — and, for its owner, usage from the redemptions.
import { formatUnits } from "ethers";
import { getBytes, getJSON } from "../api.js";
import { sha256, toHex } from "../crypto/bytes.js";
import { chip, esc, eps, money, parseMoney, paymentUnit, short, when } from "../format.js";
import * as serving from "../serving.js";
import * as wallet from "../wallet.js";

const STEPS = [
  ["registry", "Check the enclave in the registry"],
  ["sign", "Sign the voucher"],
  ["send", "Encrypt and send the row"],
  ["verify", "Verify the enclave's receipt"],
  ["decrypt", "Decrypt the answer"],
];

export async function render(root, [id]) {
  const modelId = Number(id);
  root.innerHTML = `<h1>Model #${esc(id)}</h1>
    <div id="model-badges" class="badges"></div>
    <div class="panel" id="model-terms"><p class="muted">Loading…</p></div>
    <section class="panel" id="try-panel"><h2>Try it</h2>
      <p class="muted">Your row is encrypted in this browser to the serving enclave's key as the registry holds it, with a voucher you sign for its price; the answer comes back encrypted to this page and is shown only if the enclave's signed receipt checks out.</p>
      <div id="channel"></div>
      <form id="deposit-form" class="inline-form" novalidate>
        <div class="field"><label for="deposit-amount">Buy credit (${esc(paymentUnit().symbol)})</label>
          <input id="deposit-amount" name="amount" type="number" min="0" step="any"></div>
        <button type="submit" id="deposit-submit">Deposit</button>
      </form>
      <div id="deposit-status" aria-live="polite"></div>
      <form id="ask-form" novalidate>
        <div class="field"><label for="row">One row: numbers separated by commas</label>
          <textarea id="row" name="row" rows="3" spellcheck="false" autocomplete="off" placeholder="0.5, 1.2, 3, …"></textarea>
          <span class="hint" id="row-hint"></span><span class="error" id="row-error" role="alert"></span></div>
        <button type="submit" id="ask-submit">Ask the model</button>
      </form>
      <ol class="steps" id="ask-steps" hidden>${STEPS.map(([k, label]) => `<li data-step="${k}"><span class="dot"></span>${esc(label)}</li>`).join("")}</ol>
      <div id="answer" aria-live="polite"></div>
    </section>
    <section class="panel" id="owner-panel" hidden><h2>Usage (you own this model)</h2><div id="owner-usage"></div>
      <p class="muted">Earnings of all your models are withdrawn on the <a href="#/models">Models</a> page.</p></section>`;

  let model = null;
  let me = null;
  let busy = false;
  const amountInput = root.querySelector("#deposit-amount");

  async function load() {
    [model, me] = await Promise.all([getJSON(`/api/models/${modelId}`), wallet.address()]);
    root.querySelector("#model-badges").innerHTML = badges(model);
    root.querySelector("#model-terms").innerHTML = terms(model);
    if (!amountInput.value) amountInput.value = formatUnits(BigInt(model.price_per_query_wei) * 100n, paymentUnit().decimals);
    checkEnclave();
    describeSpec();
    await loadChannel();
    const owner = Boolean(me && me.toLowerCase() === String(model.owner).toLowerCase());
    root.querySelector("#owner-panel").hidden = !owner;
    if (owner) await loadUsage();
  }

  async function checkEnclave() {
    const box = root.querySelector("#enclave-check");
    if (!model.serving_enclave) {
      box.innerHTML = `<span class="chip bad">no enclave serves it here</span>`;
      return;
    }
    try {
      const e = await serving.servingEnclave(model.serving_enclave);
      box.innerHTML = `${chip("active inference enclave in the registry", "ok")} ${short(e.signer)}<br><span class="muted">measurement</span> ${short(e.measurement)} <span class="muted">key</span> ${short("0x" + toHex(e.encryptionKey))}`;
    } catch (error) {
      box.innerHTML = `${chip("not active in the registry", "bad")} ${short(model.serving_enclave)} <span class="muted">${esc(error.message)}</span>`;
    }
  }

  async function describeSpec() {
    const box = root.querySelector("#model-spec");
    const hint = root.querySelector("#row-hint");
    try {
      const raw = await getBytes(`/api/blobs/${String(model.spec_hash).replace(/^0x/, "")}`);
      if ("0x" + toHex(await sha256(raw)) !== String(model.spec_hash).toLowerCase()) throw new Error("the stored spec does not match the listing's spec hash");
      const spec = JSON.parse(new TextDecoder().decode(raw));
      const layers = spec.hidden_sizes && spec.hidden_sizes.length ? ` · hidden ${spec.hidden_sizes.join("×")}` : "";
      box.textContent = `${spec.architecture}${layers}${spec.activation ? ` · ${spec.activation}` : ""}`;
      const features = spec.input_mean ? spec.input_mean.length : null;
      hint.textContent = features ? `${features} values, in the model's feature order.` : "As many values as the model has features, in its feature order.";
    } catch (error) {
      box.textContent = `unavailable (${error.message})`;
      hint.textContent = "As many values as the model has features, in its feature order.";
    }
  }

  async function loadChannel() {
    const box = root.querySelector("#channel");
    if (!me) {
      box.innerHTML = `<div class="error-box" role="alert">No account selected: choose one in the header, or connect a browser wallet.</div>`;
      return;
    }
    const c = await serving.channelOnChain(modelId, me);
    const last = await serving.lastVoucher(modelId, me);
    const totals = model.serving_enclave ? await serving.channelTotals(modelId, me, model.serving_enclave, c) : { amount: c.redeemed, queries: c.redeemedQueries };
    const left = c.deposited - totals.amount;
    box.innerHTML = `<dl class="kv">
      <dt>Your deposit</dt><dd id="channel-deposited">${money(c.deposited)}</dd>
      <dt>Redeemed by the operator</dt><dd id="channel-redeemed">${money(c.redeemed)} <span class="muted">for ${c.redeemedQueries} quer${c.redeemedQueries === 1n ? "y" : "ies"}</span></dd>
      <dt>Your last voucher</dt><dd id="voucher-totals">${last ? `${money(last.amount)} for ${last.queries} quer${last.queries === 1n ? "y" : "ies"}` : "none yet"}</dd>
      <dt>Credit left</dt><dd id="credit-left">${money(left > 0n ? left : 0n)} <span class="muted">(${left > 0n && BigInt(model.price_per_query_wei) > 0n ? `${left / BigInt(model.price_per_query_wei)} rows` : "0 rows"})</span></dd>
      ${c.enclave ? `<dt>Bound to enclave</dt><dd id="channel-enclave">${short(c.enclave)}${model.serving_enclave && c.enclave.toLowerCase() !== String(model.serving_enclave).toLowerCase() ? ` <span class="chip warn">not the enclave serving this model here</span>` : ""}</dd>` : ""}
      ${c.closeRequestedAt ? `<dt>Close requested</dt><dd>${esc(when(c.closeRequestedAt))}</dd>` : ""}
    </dl>`;
  }

  async function loadUsage() {
    const u = await serving.usage(modelId);
    root.querySelector("#owner-usage").innerHTML = `<dl class="kv">
        <dt>Queries redeemed</dt><dd id="usage-queries">${u.queries}</dd>
        <dt>Paid by clients</dt><dd id="usage-paid">${money(u.paid)}</dd>
        <dt>Operator fees</dt><dd>${money(u.fees)}</dd>
        <dt>Your earnings</dt><dd id="usage-share">${money(u.ownerShare)}</dd></dl>
      ${u.clients.length ? `<div class="table-wrap"><table><thead><tr><th>Client</th><th>Queries</th><th>Amount</th><th>Block</th></tr></thead><tbody>
        ${u.clients.map((c) => `<tr><td>${short(c.client)}</td><td>${c.queries}</td><td>${money(c.amount)}</td><td>${c.block}</td></tr>`).join("")}</tbody></table></div>` : `<p class="muted">No redemptions yet.</p>`}`;
  }

  root.querySelector("#deposit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = root.querySelector("#deposit-status");
    let amount;
    try {
      amount = parseMoney(amountInput.value);
      if (amount <= 0n) throw new Error("positive");
    } catch {
      status.innerHTML = `<div class="error-box" role="alert">Enter a positive amount.</div>`;
      return;
    }
    const button = root.querySelector("#deposit-submit");
    button.disabled = true;
    status.innerHTML = `<p class="muted">Depositing ${money(amount)}…</p>`;
    try {
      const tx = await serving.deposit(modelId, amount, model.serving_enclave, (step) => {
        status.innerHTML = `<p class="muted">${step === "approve" ? "Approving the model market for the token…" : `Depositing ${money(amount)}…`}</p>`;
      });
      status.innerHTML = `<div class="ok-box" role="status" id="deposit-ok">Deposited ${money(amount)} in transaction ${short(tx.hash)}.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert">${esc(wallet.describeTxError(error))}</div>`;
    } finally {
      button.disabled = false;
      loadChannel().catch(() => {});
    }
  });

  root.querySelector("#ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const error = root.querySelector("#row-error");
    const answer = root.querySelector("#answer");
    const textarea = root.querySelector("#row");
    error.textContent = "";
    textarea.removeAttribute("aria-invalid");
    let row;
    try {
      row = serving.parseRow(textarea.value);
    } catch (e) {
      error.textContent = e.message;
      textarea.setAttribute("aria-invalid", "true");
      return;
    }
    busy = true;
    const button = root.querySelector("#ask-submit");
    button.disabled = true;
    const steps = root.querySelector("#ask-steps");
    steps.hidden = false;
    steps.querySelectorAll("li").forEach((li) => (li.className = ""));
    answer.innerHTML = "";
    let current = null;
    const onStep = (step) => {
      if (current) steps.querySelector(`[data-step=${current}]`).className = "done";
      current = step;
      steps.querySelector(`[data-step=${step}]`).className = "current";
    };
    try {
      const result = await serving.ask(model, row, onStep);
      if (current) steps.querySelector(`[data-step=${current}]`).className = "done";
      answer.innerHTML = renderAnswer(result);
    } catch (e) {
      if (current) steps.querySelector(`[data-step=${current}]`).className = "failed";
      answer.innerHTML = `<div class="error-box" role="alert" id="answer-error">${esc(explain(e))}</div>`;
    } finally {
      busy = false;
      button.disabled = false;
      loadChannel().catch(() => {});
    }
  });

  await load();
  const timer = setInterval(() => {
    if (busy || !model) return;
    loadChannel().catch(() => {});
    if (!root.querySelector("#owner-panel").hidden) loadUsage().catch(() => {});
  }, 4000);
  return () => clearInterval(timer);
}

function explain(error) {
  if (error instanceof serving.InsufficientCredit) return `${error.message} (the next voucher would total ${money(error.needed)}; your deposit is ${money(error.deposited)}).`;
  if (error instanceof serving.InferenceRefused) return `The enclave refused the request; nothing was charged. ${error.message}`;
  if (error?.name === "ResponseRejected") return `The answer was rejected: ${error.message}`;
  if (error?.code === "ACTION_REJECTED") return "You declined to sign the voucher; nothing was sent.";
  return error?.shortMessage || error?.message || String(error);
}

function badges(m) {
  const tone = m.status === "active" ? "ok" : m.status === "paused" ? "warn" : "bad";
  return [
    chip(m.status[0].toUpperCase() + m.status.slice(1), tone),
    m.restricted ? chip("allow-list only", "warn") : "",
    m.epsilon !== null && m.epsilon !== undefined ? chip(`trained here with differential privacy · ε ${eps(m.epsilon)}`, "ok") : "",
  ].join("");
}

function terms(m) {
  return `<dl class="kv">
    <dt>Price</dt><dd id="model-price">${money(m.price_per_query_wei)} per row</dd>
    <dt>Output</dt><dd id="model-policy">${esc(serving.policyText(m.output_policy, m.output_param))}</dd>
    <dt>Query cap</dt><dd id="model-cap">${Number(m.query_cap).toLocaleString()} rows per client</dd>
    <dt>Training</dt><dd>${m.source_job_id ? `<a href="#/jobs/${m.source_job_id}">job #${m.source_job_id}</a>, ε ${eps(m.epsilon)}` : "trained elsewhere (no privacy guarantee from Sterling)"}</dd>
    <dt>Expires</dt><dd>${esc(when(m.expiry))}</dd>
    <dt>Owner</dt><dd>${short(m.owner)}</dd>
    <dt>Model</dt><dd id="model-spec" class="muted">…</dd>
    <dt>Weights hash</dt><dd>${short(m.weights_hash)}</dd>
    <dt>Serving enclave</dt><dd id="enclave-check"><span class="muted">checking the registry…</span></dd>
  </dl>`;
}

function renderAnswer({ answer, voucher, enclave, receiptSigner, requestHash, responseHash }) {
  const row = answer.rows[0];
  let body;
  if (answer.kind === "label") {
    body = `<p class="answer-big">Class <strong id="answer-label">${esc(row)}</strong></p>`;
  } else if (answer.kind === "top_k") {
    body = `<p>The ${row.length} most likely classes, most likely first:</p><ol id="answer-topk">${row.map((c) => `<li>class <strong>${esc(c)}</strong></li>`).join("")}</ol>`;
  } else {
    const best = row.indexOf(Math.max(...row));
    body = `<div class="prob-chart" id="answer-probabilities" role="img" aria-label="probability per class">${row
      .map(
        (p, i) => `<div class="prob-row${i === best ? " best" : ""}" data-class="${i}"><span>class ${i}</span>
          <span class="prob-bar"><span style="width:${(100 * Math.min(1, Math.max(0, p))).toFixed(1)}%"></span></span>
          <span class="mono">${p.toFixed(answer.param)}</span></div>`,
      )
      .join("")}</div>`;
  }
  return `<div class="answer" data-kind="${esc(answer.kind)}" data-values="${esc(JSON.stringify(row))}">
    <div class="badges"><span class="chip ok" id="receipt-ok">✓ receipt verified</span><span class="muted">signed by the enclave you encrypted to</span></div>
    ${body}
    <details><summary>Receipt</summary><dl class="kv">
      <dt>Enclave</dt><dd>${short(receiptSigner)}</dd>
      <dt>Measurement</dt><dd>${short(enclave.measurement)}</dd>
      <dt>Request hash</dt><dd>${short(requestHash)}</dd>
      <dt>Response hash</dt><dd>${short(responseHash)}</dd>
      <dt>Voucher</dt><dd id="answer-voucher">${money(voucher.amount)} for ${voucher.queries} quer${voucher.queries === 1n ? "y" : "ies"} in total</dd>
    </dl></details></div>`;
}
