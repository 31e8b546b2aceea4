// Pictures where they beat text: the privacy budget as a bar and over time, as inline SVG.
import { eps, esc } from "./format.js";

/** A remaining / reserved / spent bar for a dataset's ε budget. */
export function budgetBar({ total_epsilon: total, remaining_epsilon: remaining, reserved_epsilon: reserved }) {
  const t = Math.max(Number(total) || 0, 1e-12);
  const rem = Math.max(0, Number(remaining) || 0);
  const res = Math.max(0, Number(reserved) || 0);
  const spent = Math.max(0, t - rem - res);
  const pct = (v) => `${((100 * v) / t).toFixed(2)}%`;
  return `
    <div class="budget-bar" role="img" aria-label="privacy budget: ${eps(rem)} of ${eps(t)} ε remaining, ${eps(res)} reserved, ${eps(spent)} spent">
      <span style="width:${pct(rem)};background:var(--remaining)"></span>
      <span style="width:${pct(res)};background:var(--reserved)"></span>
      <span style="width:${pct(spent)};background:var(--spent)"></span>
    </div>
    <div class="legend"><span><i style="background:var(--remaining)"></i>remaining ${eps(rem)}</span>
      <span><i style="background:var(--reserved)"></i>reserved ${eps(res)}</span>
      <span><i style="background:var(--spent)"></i>spent ${eps(spent)}</span><span>of ${eps(t)} ε</span></div>`;
}

/** Text in the charts, in CSS pixels when the chart is drawn at its natural width. */
const LABEL_PX = 12;

/**
 * The chart's drawing width: the space a page gives it, about, so that one unit of the SVG is
 * about one CSS pixel and its labels render at ``LABEL_PX`` (a 640-wide drawing squeezed onto a
 * phone would shrink 11 px labels to 6). Never wider than 640, never narrower than 280.
 */
function drawingWidth() {
  const viewport = typeof document === "undefined" ? 640 : document.documentElement.clientWidth || window.innerWidth || 640;
  return Math.round(Math.max(280, Math.min(640, viewport - 72)));
}

/**
 * Remaining ε over time as a step chart.
 * @param {{timestamp: number, remaining_epsilon: number, kind: string, job_id: number|null}[]} history
 * @param {number} total
 */
export function budgetChart(history, total) {
  const points = history.filter((h) => h.remaining_epsilon !== null && h.remaining_epsilon !== undefined);
  if (points.length === 0) return `<p class="muted">No budget events yet.</p>`;
  const W = drawingWidth(), H = 220, L = 52, R = 12, T = 12, B = 36;
  const t0 = Number(points[0].timestamp), t1 = Math.max(Number(points[points.length - 1].timestamp), t0 + 1);
  const x = (t) => L + ((Number(t) - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - Number(v) / Math.max(Number(total), 1e-12)) * (H - T - B);
  let d = `M ${x(points[0].timestamp).toFixed(1)} ${y(points[0].remaining_epsilon).toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    d += ` H ${x(points[i].timestamp).toFixed(1)} V ${y(points[i].remaining_epsilon).toFixed(1)}`;
  }
  d += ` H ${W - R}`;
  const ticks = [0, 0.5, 1].map((f) => {
    const v = f * Number(total);
    return `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#dde2e8"/>
      <text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" font-size="${LABEL_PX}" fill="#5b6675">${eps(v)}</text>`;
  });
  const dots = points
    .map((p) => `<circle cx="${x(p.timestamp)}" cy="${y(p.remaining_epsilon)}" r="3" fill="var(--accent)"><title>${esc(p.kind)}${p.job_id ? ` (job ${p.job_id})` : ""}: ${eps(p.remaining_epsilon)} ε left</title></circle>`)
    .join("");
  const fmt = (t) => new Date(Number(t) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="remaining privacy budget over time">
    ${ticks.join("")}
    <path d="${d}" fill="none" stroke="var(--remaining)" stroke-width="2"/>
    ${dots}
    <text x="${L}" y="${H - 10}" font-size="${LABEL_PX}" fill="#5b6675">${esc(fmt(t0))}</text>
    <text x="${W - R}" y="${H - 10}" font-size="${LABEL_PX}" fill="#5b6675" text-anchor="end">${esc(fmt(t1))}</text>
    <text x="12" y="${T + 4}" font-size="${LABEL_PX}" fill="#5b6675" transform="rotate(-90 12 ${T + 60})">ε remaining</text>
  </svg>`;
}

/** ε spent so far against the job's target, as a bar. */
export function epsilonProgress(spent, target) {
  const f = Math.min(1, Number(spent) / Math.max(Number(target), 1e-12));
  return `<div class="budget-bar" role="img" aria-label="ε spent ${eps(spent)} of ${eps(target)}">
    <span style="width:${(100 * f).toFixed(1)}%;background:var(--spent)"></span></div>`;
}
