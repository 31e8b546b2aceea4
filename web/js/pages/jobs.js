// Jobs: every job, newest first; "mine" for the selected account.
import { getJSON, subscribe } from "../api.js";
import { esc, eps, jobStatusChip, money, short } from "../format.js";
import * as wallet from "../wallet.js";

export async function render(root) {
  root.innerHTML = `<h1>Training jobs</h1>
    <div class="toolbar"><div class="field"><label for="mine">Show</label>
      <select id="mine"><option value="all">All jobs</option><option value="mine">My jobs</option></select></div>
      <a class="button" href="#/jobs/new">Create a job</a></div><div id="list"></div>`;
  const mine = root.querySelector("#mine");
  const list = root.querySelector("#list");
  async function load() {
    const params = new URLSearchParams({ limit: "100" });
    if (mine.value === "mine") {
      const me = await wallet.address();
      if (me) params.set("consumer", me);
    }
    const { items } = await getJSON(`/api/jobs?${params}`);
    list.innerHTML = items.length
      ? `<div class="table-wrap"><table class="cards-on-phone" id="jobs-table"><thead><tr><th>Job</th><th>Status</th><th>Datasets</th><th>ε target</th><th>ε spent</th><th>Escrow</th><th>Consumer</th></tr></thead><tbody>
        ${items
          .map((j) => `<tr><td data-label="Job"><a href="#/jobs/${j.id}">#${j.id}</a></td><td data-label="Status">${jobStatusChip(j.status)}</td>
            <td data-label="Datasets">${j.dataset_ids.map((d) => `<a href="#/datasets/${d}">#${d}</a>`).join(", ")}</td><td data-label="ε target">${eps(j.epsilon)}</td>
            <td data-label="ε spent">${j.status === "completed" ? eps(j.epsilon_spent) : "—"}</td><td data-label="Escrow">${money(j.escrow_wei)}</td><td data-label="Consumer">${short(j.consumer)}</td></tr>`)
          .join("")}</tbody></table></div>`
      : `<p class="muted">No jobs yet.</p>`;
  }
  mine.addEventListener("change", () => load().catch((e) => (list.innerHTML = `<div class="error-box">${esc(e.message)}</div>`)));
  await load();
  return subscribe((type) => (type === "job" || type === "progress") && load().catch(() => {}));
}
