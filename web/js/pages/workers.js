// Workers: the attested enclaves, their measurements and attestation status.
import { getJSON, subscribe } from "../api.js";
import { chip, esc, short, when } from "../format.js";

export async function render(root) {
  async function load() {
    const workers = await getJSON("/api/workers");
    const now = Date.now() / 1000;
    root.innerHTML = `<h1>Workers and key managers</h1>
      <p class="muted">Each enclave is registered on-chain by an attestation verifier after checking its evidence. Keys are released only to approved, unexpired measurements, and never to an enclave governance revoked.</p>
      ${
        workers.length
          ? `<div class="table-wrap"><table><thead><tr><th>Role</th><th>Enclave signer</th><th>Operator</th><th>Measurement</th><th>Attestation</th><th>Valid until</th><th>Status</th></tr></thead><tbody>
        ${workers
          .map((w) => {
            const expired = w.valid_until && Number(w.valid_until) < now;
            const tone = w.active && !expired ? "ok" : "bad";
            const status = w.revoked
              ? "enclave revoked"
              : !w.measurement_approved
                ? "measurement revoked"
                : expired || !w.active
                  ? "certificate expired"
                  : "active";
            const att = w.attestation || {};
            return `<tr data-signer="${esc(w.signer)}"><td>${esc(w.role)}</td><td>${short(w.signer)}</td><td>${short(w.operator)}</td>
              <td>${short(w.measurement, 8)}</td><td>${esc(att.format || "—")}${att.verified_at ? `<br><span class="muted">${when(att.verified_at)}</span>` : ""}</td>
              <td>${when(w.valid_until)}</td><td>${chip(status, tone)}</td></tr>`;
          })
          .join("")}</tbody></table></div>`
          : `<p class="muted">No enclave is registered yet.</p>`
      }`;
  }
  await load();
  return subscribe((type) => type === "worker" && load().catch(() => {}));
}
