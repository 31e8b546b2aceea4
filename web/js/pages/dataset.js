// Dataset detail: terms, schema, the budget as a bar and over time, the jobs that used it.
import { getJSON, subscribe } from "../api.js";
import { budgetBar, budgetChart } from "../charts.js";
import { chip, esc, eth, eps, short, when } from "../format.js";

export async function render(root, [id]) {
  async function load() {
    const d = await getJSON(`/api/datasets/${id}`);
    const schema = d.schema;
    root.innerHTML = `
      <h1>Dataset #${d.id}</h1>
      <div class="panel"><h2>Privacy budget</h2>${budgetBar(d)}
        <h2>Remaining ε over time</h2>${budgetChart(d.budget_history || [], d.total_epsilon)}</div>
      <div class="panel"><h2>Terms</h2><dl class="kv">
        <dt>Price per job</dt><dd>${eth(d.price_wei)}</dd>
        <dt>Max. ε per job</dt><dd>${eps(d.max_epsilon_per_job)}</dd>
        <dt>Total ε budget</dt><dd>${eps(d.total_epsilon)}</dd>
        <dt>Max. δ</dt><dd>${esc(d.max_delta)}</dd>
        <dt>Expires</dt><dd>${when(d.expiry)}</dd>
        <dt>Buyers</dt><dd>${d.allowed_consumers && d.allowed_consumers.length ? d.allowed_consumers.map((a) => short(a)).join(", ") : "anyone"}</dd>
        <dt>Provider</dt><dd>${short(d.provider, 10)}</dd>
        <dt>Content hash</dt><dd>${short(d.content_hash, 10)}</dd>
        <dt>Listed</dt><dd>block ${esc(d.listed_block)}${d.listed_at ? ` · ${when(d.listed_at)}` : ""}</dd>
      </dl></div>
      <div class="panel"><h2>Schema</h2>${
        schema
          ? `<dl class="kv"><dt>Task</dt><dd>${esc(schema.task)}</dd>
             <dt>Features</dt><dd>${esc((schema.feature_shape || []).join(" × "))}: ${esc((schema.feature_names || []).slice(0, 12).join(", "))}${(schema.feature_names || []).length > 12 ? ", …" : ""}</dd>
             <dt>Classes</dt><dd>${esc((schema.class_names || []).join(", "))}</dd>
             <dt>Schema hash</dt><dd>${short(d.schema_hash, 10)}</dd></dl>`
          : `<p class="muted">Schema ${short(d.schema_hash, 10)} is not in this gateway's store.</p>`
      }</div>
      <div class="panel"><h2>Jobs</h2>${
        d.job_ids && d.job_ids.length ? `<p>${d.job_ids.map((j) => `<a href="#/jobs/${j}">job #${j}</a>`).join(" · ")}</p>` : `<p class="muted">No job has used this dataset yet.</p>`
      }<p><a class="button" href="#/jobs/new?datasets=${d.id}">Create a job with this dataset</a></p></div>
      <p>${chip(d.remaining_epsilon > 0 ? "available" : "budget exhausted", d.remaining_epsilon > 0 ? "ok" : "bad")}</p>`;
  }
  await load();
  return subscribe((type, data) => {
    if ((type === "dataset" && String(data?.dataset_id) === String(id)) || type === "job") load().catch(() => {});
  });
}
