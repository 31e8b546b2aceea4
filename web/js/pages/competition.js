// A competition: its rules (checked against the on-chain rules hash), prize, window and a live
// countdown, the Ladder's step, the leaderboard (public scores through the Ladder; private scores
// once the window has closed; the winner once closed) and its chart over time; submitting a model
// sealed in this browser; closing; and buying an entry, opened in this browser and checked against
// the weights hash on-chain; or entering the model of one of the account's jobs sealed to the key
// manager, which nobody ever holds.
import { getJSON } from "../api.js";
import * as flow from "../competition-flow.js";
import { sha256, toHex } from "../crypto/bytes.js";
import { chip, download, eps, esc, money, parseMoney, paymentUnit, short, when } from "../format.js";
import * as wallet from "../wallet.js";
import { chainSkew, countdown, duration, metricText, phaseChip, scoreText, startCountdowns, tickCountdowns } from "./competitions.js";

const SUBMIT_STEPS = [
  ["check", "Check the model file (spec and input schema in its metadata)"],
  ["seal", "Encrypt with a fresh key, wrapped to the key manager's attested key (in this browser)"],
  ["upload", "Upload the ciphertext"],
  ["admit", "Sign the deposit; the key manager checks the model against the rules and signs its admission"],
  ["submit", "Sign and send submit"],
];
const JOB_STEPS = [
  ["check", "Check on-chain that the job is yours, completed, and sealed to the key manager's attested key"],
  ["admit", "The key manager opens the job's sealed result in its enclave, checks it against the job's receipt and the rules, and signs its admission"],
  ["submit", "Sign and send submit"],
];
const BUY_STEPS = [
  ["pay", "Pay the ask price (a purchase key is made and kept in this browser)"],
  ["key", "Get the model key, re-wrapped by the key manager to your purchase key"],
  ["verify", "Read the entry's ciphertext and weights hashes from the chain"],
  ["decrypt", "Decrypt the model in this browser and check its SHA-256"],
];
const POLICY_TEXT = {
  none: "nobody: every model stays sealed",
  organizer: "the organizer only, at each participant's ask price",
  anyone: "anyone, at each participant's ask price",
};

export async function render(root, [id]) {
  const competitionId = Number(id);
  root.innerHTML = `<h1 id="competition-title">Competition #${esc(id)}</h1>
    <div class="badges" id="competition-badges"></div>
    <div class="panel" id="competition-about"><p class="muted">Loading…</p></div>
    <section class="panel" id="close-panel" hidden><h2>Close the competition</h2>
      <p id="close-reason"></p><p><button type="button" id="close-competition">Close and pay the prize</button></p>
      <div id="close-status" aria-live="polite"></div></section>
    <section id="leaderboard-section"><h2>Leaderboard</h2>
      <p class="muted" id="ladder-note"></p>
      <div id="leaderboard"></div>
      <h3>Over time</h3><div id="leaderboard-chart"></div></section>
    <section class="panel" id="buy-panel" hidden><h2 id="buy-title">Buy a model</h2>
      <ol class="steps" id="buy-steps">${steps(BUY_STEPS)}</ol><div id="buy-status" aria-live="polite"></div></section>
    <section class="panel" id="submit-panel" hidden><h2>Submit a model</h2>
      <p class="muted">Your model is encrypted in this browser with a fresh key wrapped to the key manager enclave's attested key. Only the key manager (to check it against the rules) and the evaluator enclave (to score it) ever open it; a buyer gets it only after the close, if you ask a price.</p>
      <form class="stack" id="submit-form" novalidate>
        <div class="field"><label for="weights-file">Model (.safetensors)</label>
          <input id="weights-file" type="file" accept=".safetensors,application/octet-stream" aria-describedby="weights-hint weights-error">
          <span class="hint" id="weights-hint">Weights saved as a Sterling job saves a model: the model spec and input schema in the safetensors metadata.</span>
          <span class="hint" id="weights-info"></span><span class="error" id="weights-error" role="alert"></span></div>
        <div class="field"><label for="ask-price">Ask price after the close (${esc(paymentUnit().symbol)}; 0: not for sale)</label>
          <input id="ask-price" type="number" min="0" step="any" value="0"></div>
        <div><button type="submit" id="submit-model">Encrypt and submit</button></div>
      </form>
      <div id="submit-progress" hidden><ol class="steps" id="submit-steps">${steps(SUBMIT_STEPS)}</ol>
        <p><label for="submit-bar">Current step</label> <progress id="submit-bar" max="1" value="0"></progress></p></div>
      <div id="submit-outcome" aria-live="polite"></div></section>
    <section class="panel" id="submit-job-panel" hidden><h2>Submit a model trained here</h2>
      <p class="muted">A model you trained through a Sterling job whose result was sealed to the key manager: the key manager opens it inside its enclave, checks it against the job's receipt and this competition's rules, and admits it as your entry. Nobody, you included, ever sees its weights. <a id="train-sealed" href="#/jobs/new?seal=key-manager">Train one</a> (choose "Seal the model to the key manager").</p>
      <form class="stack" id="submit-job-form" novalidate>
        <fieldset class="field"><legend><strong>Your jobs</strong></legend>
          <div id="job-choices"><p class="muted">Choose an account to see your jobs.</p></div>
          <span class="hint" id="job-hint"></span><span class="error" id="job-error" role="alert"></span></fieldset>
        <div class="field"><label for="job-ask-price">Ask price after the close (${esc(paymentUnit().symbol)}; 0: not for sale)</label>
          <input id="job-ask-price" type="number" min="0" step="any" value="0"></div>
        <div><button type="submit" id="submit-job" disabled>Submit the job's model</button></div>
      </form>
      <div id="submit-job-progress" hidden><ol class="steps" id="submit-job-steps">${steps(JOB_STEPS)}</ol></div>
      <div id="submit-job-outcome" aria-live="polite"></div></section>`;

  let c = null;
  let me = null;
  let skew = 0;
  let busy = false;
  let last = "";
  let rulesChecked = null;
  let entries = 0; // the connected account's entries in this competition (on-chain)
  let jobsShown = "";
  const jobCache = new Map();
  let loaded;
  const ready = new Promise((resolve) => (loaded = resolve)); // the handlers below may fire before the first load ends

  async function load() {
    const [data, s, account] = await Promise.all([flow.competition(competitionId), chainSkew(), wallet.address()]);
    skew = s;
    const key = JSON.stringify(data) + (account || "");
    if (key === last) return;
    last = key;
    c = data;
    me = account;
    loaded();
    if (rulesChecked === null) rulesChecked = await checkRules(c);
    const title = c.rules?.title || `Competition #${competitionId}`;
    root.querySelector("#competition-title").textContent = title;
    root.querySelector("#competition-badges").innerHTML = `${phaseChip(c)} ${chip(`#${competitionId}`)} ${chip(metricText(c))} ${c.phase === "closed" ? "" : countdown(c, "countdown")}`;
    root.querySelector("#competition-about").innerHTML = about(c, rulesChecked);
    root.querySelector("#ladder-note").textContent = ladderSentence(c);
    root.querySelector("#leaderboard-chart").innerHTML = leaderboardChart(c.history, c);
    tickCountdowns(root, skew);
    await renderLeaderboard();
    renderClose();
    const open = c.phase === "submissions";
    root.querySelector("#submit-panel").hidden = !open;
    root.querySelector("#submit-job-panel").hidden = !open;
    const datasets = Array.isArray(c.rules?.training_datasets) ? c.rules.training_datasets.map(Number).filter((d) => d > 0) : [];
    root.querySelector("#train-sealed").href = `#/jobs/new?seal=key-manager${datasets.length ? `&datasets=${datasets.join(",")}` : ""}`;
    if (open && me) {
      const market = await flow.competitionMarket();
      entries = Number(await market.submissionsBy(BigInt(competitionId), me));
      const capped = entries >= c.submission_cap;
      const made = `You made ${entries} of ${c.submission_cap} allowed entries${capped ? ": this competition takes no more from you" : ""}.`;
      root.querySelector("#weights-hint").textContent = `Weights saved as a Sterling job saves a model: the model spec and input schema in the safetensors metadata. ${c.architectures.join(", ")}; ${c.max_parameters ? `at most ${c.max_parameters.toLocaleString()} parameters` : "any size"}. ${made}`;
      root.querySelector("#job-hint").textContent = `${c.max_parameters ? `The key manager checks the model's size (at most ${c.max_parameters.toLocaleString()} parameters). ` : ""}${made}`;
      if (!busy) root.querySelector("#submit-model").disabled = capped;
    }
    jobsShown = ""; // the competition changed (an entry, the phase): show the jobs' eligibility again
  }

  /** The account's jobs as candidate entries, with why each can or cannot be entered; the choice survives a refresh. */
  async function loadJobs() {
    const box = root.querySelector("#job-choices");
    if (!c || c.phase !== "submissions" || !me) {
      if (!me) box.innerHTML = `<p class="muted">Choose an account to see your jobs.</p>`;
      return;
    }
    const jobs = await flow.entrantJobs(c, me, jobCache);
    const shown = JSON.stringify([me, entries, jobs.map((j) => [j.job.id, j.job.status, j.problem])]);
    if (shown === jobsShown) return;
    jobsShown = shown;
    const chosen = root.querySelector("input[name=job]:checked")?.value;
    box.innerHTML = jobs.length
      ? `<div class="table-wrap"><table id="job-table"><thead><tr><th>Enter</th><th>Job</th><th>Model</th><th>Datasets</th><th>ε spent</th><th>Check</th></tr></thead><tbody>
        ${jobs
          .map(({ job, spec, problem, entered }) => {
            const hidden = spec && Array.isArray(spec.hidden_sizes) && spec.hidden_sizes.length ? ` (hidden ${spec.hidden_sizes.join("×")})` : "";
            const check = entered !== null ? `<span class="eligible">✓ ${esc(problem)}</span>` : problem ? `<span class="ineligible">✗ ${esc(problem)}</span>` : `<span class="eligible">✓ sealed to the key manager; can be entered</span>`;
            return `<tr data-job="${job.id}"><td><input type="radio" name="job" value="${job.id}" id="job-${job.id}" aria-label="enter job ${job.id}" ${problem ? "disabled" : ""} ${!problem && String(job.id) === chosen ? "checked" : ""}></td>
              <td><a href="#/jobs/${job.id}">#${job.id}</a></td>
              <td>${spec ? esc(`${spec.architecture}${hidden}`) : `<span class="muted">—</span>`}</td>
              <td>${job.dataset_ids.map((d) => `<a href="#/datasets/${d}">#${d}</a>`).join(", ")}</td>
              <td>${job.epsilon_spent === null || job.epsilon_spent === undefined ? "—" : eps(job.epsilon_spent)}</td>
              <td data-job-check="${job.id}">${check}</td></tr>`;
          })
          .join("")}</tbody></table></div>
        ${jobs.some((j) => j.ownKey) ? `<p class="hint" id="own-key-note">A model sealed to your own key can still be entered as a file: download it from its job's page and submit it above. Or train again with "Seal the model to the key manager", so that nobody ever holds it.</p>` : ""}`
      : `<p class="muted" id="no-jobs">You have no completed job whose model is sealed to the key manager. <a href="${esc(root.querySelector("#train-sealed").getAttribute("href"))}">Train one</a>: when you create it, choose "Seal the model to the key manager".</p>`;
    syncJobButton();
  }

  function syncJobButton() {
    const chosen = root.querySelector("input[name=job]:checked");
    root.querySelector("#submit-job").disabled = busy || !chosen || entries >= (c?.submission_cap ?? 0);
  }

  const refresh = async () => {
    await load();
    await loadJobs();
  };

  async function renderLeaderboard() {
    const box = root.querySelector("#leaderboard");
    if (!c.submissions.length) {
      box.innerHTML = `<p class="muted">No entries yet.</p>`;
      return;
    }
    const buying = flow.mayBuy(c, me);
    const bought = buying ? await Promise.all(c.submissions.map((s) => flow.purchased(c, s.index, me).catch(() => false))) : [];
    const better = (a, b) => (c.higher_is_better ? b - a : a - b);
    const rows = [...c.submissions].sort((a, b) => {
      if (a.private_score !== null && b.private_score !== null) return better(a.private_score, b.private_score) || a.index - b.index;
      if (a.private_score !== null || b.private_score !== null) return a.private_score === null ? 1 : -1;
      return a.index - b.index;
    });
    const winner = c.phase === "closed" && c.leader !== null ? c.leader : null;
    box.innerHTML = `<div class="table-wrap"><table id="leaderboard-table"><thead><tr><th>Entry</th><th>Participant</th><th>Submitted</th>
        <th>Public score (Ladder)</th><th>Private score</th><th>Ask price</th>${buying ? "<th>Model</th>" : ""}</tr></thead><tbody>
      ${rows
        .map((s) => {
          const mine = me && me.toLowerCase() === String(s.participant).toLowerCase();
          const ask = BigInt(s.ask_price_wei);
          const action = !buying
            ? ""
            : `<td>${ask === 0n ? `<span class="muted">not for sale</span>` : `<button type="button" class="${bought[s.index] ? "secondary" : ""}" data-buy="${s.index}" ${busy ? "disabled" : ""}>${bought[s.index] ? "Open again" : `Buy for ${money(ask)}`}</button>`}</td>`;
          return `<tr data-entry="${s.index}"${s.index === winner ? ` class="winner"` : ""}>
            <td>#${s.index}${s.index === winner ? ` <span class="chip ok" id="winner-chip">★ Winner</span>` : ""}</td>
            <td>${short(s.participant)}${mine ? ` ${chip("you")}` : ""}</td><td>${esc(when(s.submitted_at))}</td>
            <td data-public="${s.public_score ?? ""}">${s.public_score === null ? `<span class="muted">scoring…</span>` : esc(scoreText(s.public_score))}</td>
            <td data-private="${s.private_score ?? ""}">${s.private_score === null ? `<span class="muted">${c.phase === "upcoming" || c.phase === "submissions" ? "after the window" : "scoring…"}</span>` : esc(scoreText(s.private_score))}</td>
            <td>${ask === 0n ? `<span class="muted">not for sale</span>` : money(ask)}</td>${action}</tr>`;
        })
        .join("")}</tbody></table></div>`;
  }

  function renderClose() {
    const panel = root.querySelector("#close-panel");
    const shown = c.phase === "scoring" || c.phase === "closable";
    panel.hidden = !shown && !root.querySelector("#close-ok");
    root.querySelector("#close-competition").hidden = !shown;
    if (!shown) {
      root.querySelector("#close-reason").textContent = "";
      return;
    }
    const rule = flow.closeRule(c, me);
    root.querySelector("#close-reason").textContent = `${rule.reason} The prize of ${money(c.prize_wei)} goes to the best private score${c.submission_count ? "" : " (nobody entered: it goes back to the organizer)"}.`;
    root.querySelector("#close-competition").disabled = busy || !rule.allowed;
  }

  root.querySelector("#close-competition").addEventListener("click", async () => {
    const status = root.querySelector("#close-status");
    busy = true;
    root.querySelector("#close-competition").disabled = true;
    status.innerHTML = `<p class="muted">Sending close…</p>`;
    try {
      const hash = await flow.closeCompetition(c);
      status.innerHTML = `<div class="ok-box" role="status" id="close-ok">Closed in transaction ${short(hash)}.</div>`;
    } catch (error) {
      status.innerHTML = `<div class="error-box" role="alert" id="close-error">${esc(flow.describeError(error))}</div>`;
    } finally {
      busy = false;
      last = "";
      await refresh().catch(() => {});
    }
  });

  root.querySelector("#leaderboard").addEventListener("click", async (event) => {
    const button = event.target.closest("[data-buy]");
    if (!button || busy) return;
    const index = Number(button.dataset.buy);
    const panel = root.querySelector("#buy-panel");
    const status = root.querySelector("#buy-status");
    panel.hidden = false;
    root.querySelector("#buy-title").textContent = `Entry #${index}`;
    root.querySelectorAll("#buy-steps li").forEach((li) => (li.className = ""));
    status.innerHTML = "";
    busy = true;
    root.querySelectorAll("[data-buy]").forEach((b) => (b.disabled = true));
    const mark = stepper(root, "#buy-steps");
    try {
      const opened = await flow.buyModel(c, index, { onStep: mark });
      mark(null);
      const name = `competition-${competitionId}-entry-${index}.safetensors`;
      status.innerHTML = `<div class="ok-box" role="status" id="buy-ok">${opened.paid ? "Bought and opened" : "Opened"} entry #${index}: ${opened.weights.length.toLocaleString()} bytes of safetensors, decrypted in this browser.
        <br>SHA-256 <span class="mono" id="opened-sha256">${esc(opened.weightsHash)}</span> — matches the weights hash admitted on-chain.</div>
        <p><button type="button" id="download-model">Save ${esc(name)}</button></p>`;
      root.querySelector("#download-model").addEventListener("click", () => download(opened.weights, name));
    } catch (error) {
      mark.fail();
      status.innerHTML = `<div class="error-box" role="alert" id="buy-error">${esc(flow.describeError(error))}</div>`;
    } finally {
      busy = false;
      last = "";
      await refresh().catch(() => {});
    }
  });

  const fileInput = root.querySelector("#weights-file");
  fileInput.addEventListener("change", async () => {
    const info = root.querySelector("#weights-info");
    const error = root.querySelector("#weights-error");
    info.textContent = "";
    error.textContent = "";
    fileInput.removeAttribute("aria-invalid");
    const file = fileInput.files[0];
    if (!file) return;
    await ready;
    try {
      const w = await flow.checkWeights(file, c);
      const hidden = Array.isArray(w.spec.hidden_sizes) && w.spec.hidden_sizes.length ? ` (hidden ${w.spec.hidden_sizes.join("×")})` : "";
      info.textContent = `${w.spec.architecture}${hidden} · ${w.tensors} tensors holding ${w.values.toLocaleString()} values · ${w.schema.feature_names.length} features → ${w.schema.class_names.length} classes`;
    } catch (e) {
      error.textContent = flow.describeError(e);
      fileInput.setAttribute("aria-invalid", "true");
    }
  });

  root.querySelector("#submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = root.querySelector("#weights-error");
    const outcome = root.querySelector("#submit-outcome");
    const file = fileInput.files[0];
    if (!file) {
      error.textContent = "Choose a .safetensors model file.";
      return;
    }
    await ready;
    let ask;
    try {
      ask = parseMoney(root.querySelector("#ask-price").value);
      if (ask < 0n) throw new Error("negative");
    } catch {
      outcome.innerHTML = `<div class="error-box" role="alert">The ask price is not a number.</div>`;
      return;
    }
    const button = root.querySelector("#submit-model");
    button.disabled = true;
    busy = true;
    outcome.innerHTML = "";
    root.querySelector("#submit-progress").hidden = false;
    root.querySelectorAll("#submit-steps li").forEach((li) => (li.className = ""));
    const bar = root.querySelector("#submit-bar");
    const mark = stepper(root, "#submit-steps", () => (bar.value = 0));
    try {
      const entry = await flow.submitModel(c, file, ask, { onStep: mark, onProgress: (done, total) => (bar.value = total ? done / total : 1) });
      mark(null);
      outcome.innerHTML = `<div class="ok-box" role="status" id="submit-ok">Submitted as entry <strong id="submitted-index">#${esc(entry.index)}</strong> in transaction ${short(entry.txHash)}${ask > 0n ? `, for sale at ${money(ask)} after the close` : ""}. Weights SHA-256 ${short("0x" + entry.weightsHash)}. The evaluator posts its public score shortly.</div>`;
      fileInput.value = "";
      root.querySelector("#weights-info").textContent = "";
    } catch (e) {
      mark.fail();
      outcome.innerHTML = `<div class="error-box" role="alert" id="submit-error">${esc(flow.describeError(e))}</div>`;
    } finally {
      button.disabled = false;
      busy = false;
      last = "";
      await refresh().catch(() => {});
    }
  });

  root.querySelector("#job-choices").addEventListener("change", () => {
    root.querySelector("#job-error").textContent = "";
    syncJobButton();
  });

  root.querySelector("#submit-job-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = root.querySelector("#job-error");
    const outcome = root.querySelector("#submit-job-outcome");
    const chosen = root.querySelector("input[name=job]:checked");
    error.textContent = "";
    if (!chosen) {
      error.textContent = "Choose one of your jobs whose model is sealed to the key manager.";
      return;
    }
    await ready;
    let ask;
    try {
      ask = parseMoney(root.querySelector("#job-ask-price").value);
      if (ask < 0n) throw new Error("negative");
    } catch {
      outcome.innerHTML = `<div class="error-box" role="alert">The ask price is not a number.</div>`;
      return;
    }
    const jobId = chosen.value;
    busy = true;
    syncJobButton();
    outcome.innerHTML = "";
    root.querySelector("#submit-job-progress").hidden = false;
    root.querySelectorAll("#submit-job-steps li").forEach((li) => (li.className = ""));
    const mark = stepper(root, "#submit-job-steps");
    try {
      const job = jobCache.has(`job.${jobId}`) ? await jobCache.get(`job.${jobId}`) : await getJSON(`/api/jobs/${jobId}`);
      const entry = await flow.submitJobModel(c, job, ask, { onStep: mark });
      mark(null);
      outcome.innerHTML = `<div class="ok-box" role="status" id="submit-job-ok">Job #${esc(jobId)}'s model was admitted by the key manager and submitted as entry <strong id="submitted-job-index">#${esc(entry.index)}</strong> in transaction ${short(entry.txHash)}${ask > 0n ? `, for sale at ${money(ask)} after the close` : ""}.
        Weights SHA-256 <span class="mono" id="submitted-job-weights">${esc(entry.weightsHash)}</span>, the job's receipt's model hash. Nobody saw its weights; the evaluator posts its public score shortly.</div>`;
    } catch (e) {
      mark.fail();
      outcome.innerHTML = `<div class="error-box" role="alert" id="submit-job-error">${esc(flow.describeError(e))}</div>`;
    } finally {
      busy = false;
      last = "";
      await refresh().catch(() => {});
      syncJobButton();
    }
  });

  await load();
  await loadJobs().catch((error) => {
    root.querySelector("#job-choices").innerHTML = `<div class="error-box" role="alert">Your jobs could not be read: ${esc(error.message || error)}</div>`;
  });
  const stopCountdowns = startCountdowns(root, () => skew);
  // Scores are posted on-chain by the evaluator, and jobs settle, without a word in the gateway's event feed here: poll.
  const timer = setInterval(() => !busy && refresh().catch(() => {}), 3000);
  return () => {
    clearInterval(timer);
    stopCountdowns();
  };
}

/** Whether the gateway's rules document is the one the competition's rules hash commits to. */
async function checkRules(c) {
  if (!c.rules) return false;
  try {
    return "0x" + toHex(await sha256(flow.rulesBytes(c.rules))) === String(c.rules_hash).toLowerCase();
  } catch {
    return false;
  }
}

function steps(list) {
  return list.map(([k, label]) => `<li data-step="${k}"><span class="dot"></span><span>${esc(label)}</span></li>`).join("");
}

/** Mark steps of a list as they go: mark(name) starts one (the previous is done); mark(null) ends; mark.fail() fails the current one. */
function stepper(root, selector, onStart = () => {}) {
  let current = null;
  const mark = (name) => {
    if (current) root.querySelector(`${selector} [data-step="${current}"]`).className = "done";
    current = name;
    if (name) {
      root.querySelector(`${selector} [data-step="${name}"]`).className = "current";
      onStart(name);
    }
  };
  mark.fail = () => {
    if (current) root.querySelector(`${selector} [data-step="${current}"]`).className = "failed";
  };
  return mark;
}

/** One sentence on what the Ladder's step means here. */
function ladderSentence(c) {
  const eta = scoreText(c.ladder_step);
  return `Public scores go through the Ladder with step η = ${eta}: the leaderboard moves only when an entry ${c.higher_is_better ? "beats" : "improves on"} the best public score by more than ${eta}, otherwise it shows the previous best again, so repeated submissions learn little about the hidden test labels. The winner is decided on the private split, scored once per entry after the window closes.`;
}

function about(c, rulesChecked) {
  const r = c.rules || {};
  const datasets = Array.isArray(r.training_datasets) ? r.training_datasets : [];
  const training = r.training_data
    ? /^https?:\/\//i.test(r.training_data)
      ? `<a href="${esc(r.training_data)}" rel="noopener noreferrer" target="_blank">${esc(r.training_data)}</a>`
      : esc(r.training_data)
    : `<span class="muted">none given</span>`;
  const publicShare = (c.public_split_bps / 100).toLocaleString(undefined, { maximumFractionDigits: 2 });
  return `${r.description ? `<p class="rules-text" id="competition-description">${esc(r.description)}</p>` : ""}
    ${c.rules ? "" : `<div class="error-box" role="alert">The gateway does not hold this competition's rules document.</div>`}
    <dl class="kv">
      <dt>Prize</dt><dd id="competition-prize"><strong>${money(c.prize_wei)}</strong> in escrow, to the best private score</dd>
      <dt>Window</dt><dd id="competition-window">${esc(when(c.opens_at))} – ${esc(when(c.closes_at))} <span class="muted">(${esc(duration(c.closes_at - c.opens_at))})</span></dd>
      <dt>Next</dt><dd>${countdown(c, "countdown-about")}</dd>
      <dt>Private scoring until</dt><dd>${esc(when(c.open_to_all_at))} <span class="muted">(then anyone may close it)</span></dd>
      <dt>Metric</dt><dd>${esc(metricText(c))}</dd>
      <dt>Public leaderboard</dt><dd>${publicShare}% of the test rows; Ladder step η = <span id="ladder-step">${esc(scoreText(c.ladder_step))}</span></dd>
      <dt>Public best</dt><dd id="competition-public-best">${esc(scoreText(c.public_best))}</dd>
      <dt>Entries</dt><dd>${c.submission_count} <span class="muted">(at most ${c.submission_cap} per participant)</span></dd>
      <dt>Models</dt><dd>${esc(c.architectures.join(", "))}; ${c.max_parameters ? `at most ${c.max_parameters.toLocaleString()} parameters` : "any size"}</dd>
      <dt>Who may buy entries</dt><dd>${esc(POLICY_TEXT[c.purchase_policy] || c.purchase_policy)}</dd>
      <dt>Training data</dt><dd id="competition-training">${training}</dd>
      <dt>Sterling datasets</dt><dd id="competition-datasets">${datasets.length ? datasets.map((d) => `<a href="#/datasets/${Number(d)}">#${Number(d)}</a>`).join(", ") : `<span class="muted">none</span>`}</dd>
      <dt>Organizer</dt><dd>${short(c.organizer)}</dd>
      <dt>Test set</dt><dd>${short(c.test_set_hash)} <span class="muted">sealed to the key manager; only the evaluator enclave opens it</span></dd>
      <dt>Rules</dt><dd>${short(c.rules_hash)} ${rulesChecked ? chip("matches the rules hash on-chain", "ok") : chip("not checked", "warn")}</dd>
    </dl>`;
}

/**
 * The public leaderboard over time (its best after each public score, as a step line) and, once
 * the window has closed, each entry's private score (dots), as inline SVG in charts.js's style.
 * @param {{index: number, split: string, score: number, time: number}[]} history
 */
export function leaderboardChart(history, c) {
  if (!history.length) return `<p class="muted" id="chart-empty">No scores yet: the evaluator posts each entry's public score shortly after it is submitted.</p>`;
  const W = 640, H = 240, L = 56, R = 16, T = 14, B = 40;
  const pub = history.filter((p) => p.split === "public").sort((a, b) => a.time - b.time || a.block - b.block);
  const priv = history.filter((p) => p.split === "private");
  const times = history.map((p) => Number(p.time));
  const t0 = Math.min(...times, Number(c.opens_at));
  const t1 = Math.max(...times, t0 + 1);
  const scores = history.map((p) => Number(p.score));
  let lo = Math.min(...scores), hi = Math.max(...scores);
  const pad = hi - lo < 1e-9 ? Math.max(Math.abs(hi) * 0.05, 0.01) : (hi - lo) * 0.1;
  lo -= pad;
  hi += pad;
  if (scores.every((s) => s >= 0 && s <= 1)) [lo, hi] = [Math.max(0, lo), Math.min(1, hi)];
  const x = (t) => L + ((Number(t) - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (Number(v) - lo) / (hi - lo)) * (H - T - B);
  const f = (n) => n.toFixed(1);
  let line = "";
  if (pub.length) {
    line = `M ${f(x(pub[0].time))} ${f(y(pub[0].score))}`;
    for (const p of pub.slice(1)) line += ` H ${f(x(p.time))} V ${f(y(p.score))}`;
    line += ` H ${f(x(t1))}`;
  }
  const ticks = [lo, (lo + hi) / 2, hi].map(
    (v) => `<line x1="${L}" x2="${W - R}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#dde2e8"/>
      <text x="${L - 6}" y="${f(y(v) + 4)}" text-anchor="end" font-size="11" fill="#5b6675">${esc(Number(v).toFixed(3))}</text>`,
  );
  const closeLine =
    c.closes_at >= t0 && c.closes_at <= t1
      ? `<line x1="${f(x(c.closes_at))}" x2="${f(x(c.closes_at))}" y1="${T}" y2="${H - B}" stroke="#5b6675" stroke-dasharray="4 3"/>
         <text x="${f(x(c.closes_at) - 4)}" y="${T + 10}" font-size="11" fill="#5b6675" text-anchor="end">window closed</text>`
      : "";
  const dot = (p, cls, fill, what) =>
    `<circle class="point ${cls}" data-entry="${p.index}" cx="${f(x(p.time))}" cy="${f(y(p.score))}" r="${cls === "private" ? 4.5 : 3.5}" fill="${fill}"><title>entry #${p.index}: ${esc(scoreText(p.score))} (${what})</title></circle>`;
  const fmt = (t) => new Date(Number(t) * 1000).toLocaleString();
  return `<svg class="chart" id="leaderboard-svg" viewBox="0 0 ${W} ${H}" role="img" aria-label="public leaderboard best over time${priv.length ? ", and private scores" : ""}">
    ${ticks.join("")}${closeLine}
    ${line ? `<path d="${line}" fill="none" stroke="var(--accent)" stroke-width="2"/>` : ""}
    ${pub.map((p) => dot(p, "public", "var(--accent)", "public best after it, through the Ladder")).join("")}
    ${priv.map((p) => dot(p, "private", "var(--spent)", "private score")).join("")}
    <text x="${L}" y="${H - 12}" font-size="11" fill="#5b6675">${esc(fmt(t0))}</text>
    <text x="${W - R}" y="${H - 12}" font-size="11" fill="#5b6675" text-anchor="end">${esc(fmt(t1))}</text>
    <text x="12" y="${T + 4}" font-size="11" fill="#5b6675" transform="rotate(-90 12 ${T + 70})">${esc(c.metric)}</text>
  </svg>
  <div class="legend"><span><i style="background:var(--accent)"></i>public best (Ladder)</span>${priv.length ? `<span><i style="background:var(--spent)"></i>private score</span>` : ""}</div>`;
}
