// Small formatting and DOM helpers shared by the pages.
import { formatUnits, parseUnits } from "ethers";

// The market's payment unit: the chain's native currency, or the ERC-20 in /api/config's
// payment_token (set once by app.js before any page renders).
let currency = { symbol: "ETH", decimals: 18, token: null };

/** Use the market's payment unit for every amount shown or parsed from now on. */
export function setCurrency(paymentToken) {
  currency = paymentToken
    ? { symbol: String(paymentToken.symbol || "tokens"), decimals: Number(paymentToken.decimals), token: paymentToken.address }
    : { symbol: "ETH", decimals: 18, token: null };
}

/** The payment unit: {symbol, decimals, token} (token: the ERC-20's address, null for the native currency). */
export function paymentUnit() {
  return currency;
}

/** Escape text for HTML. */
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** An amount in the payment unit's smallest denomination (decimal string or bigint), with up to 6 decimals and its symbol. */
export function money(amount) {
  const value = Number(formatUnits(BigInt(amount ?? 0), currency.decimals));
  return `${value.toLocaleString(undefined, { maximumFractionDigits: 6 })} ${currency.symbol}`;
}

/** A decimal amount typed by the user (e.g. "0.5") in the payment unit's smallest denomination; throws if malformed. */
export function parseMoney(text) {
  return parseUnits(String(text || "0").trim() || "0", currency.decimals);
}

/** ε with 3 decimals. */
export function eps(value) {
  return Number(value ?? 0).toFixed(3);
}

/** A shortened 0x… string with the full value in a title. */
export function short(hex, keep = 6) {
  const s = String(hex ?? "");
  if (s.length <= 2 * keep + 3) return `<span class="mono">${esc(s)}</span>`;
  return `<span class="mono" title="${esc(s)}">${esc(s.slice(0, keep + 2))}…${esc(s.slice(-keep))}</span>`;
}

/** Unix seconds as a local date-time, or "never" for 0. */
export function when(seconds) {
  if (!seconds) return "never";
  return new Date(Number(seconds) * 1000).toLocaleString();
}

/** A status chip. */
export function chip(text, tone = "") {
  return `<span class="chip ${tone}">${esc(text)}</span>`;
}

// Statuses are compared by the names the API gives them; which statuses exist, and their numbers
// on chain, come from /api/config (onchain.js).

/** A job's status as a chip: settled in green, ended without a result in red, else in progress. */
export function jobStatusChip(status) {
  const tone = status === "completed" ? "ok" : status === "expired" || status === "cancelled" ? "bad" : "warn";
  return chip(String(status).toUpperCase(), tone);
}

/** Why a dataset accepts no new jobs ("paused by its provider", "delisted"), or "" when it is active. */
export function datasetUnavailable(d) {
  if (d.status === "active") return "";
  return d.status === "paused" ? "paused by its provider" : String(d.status);
}

/** Status badges of a dataset; an active one gets none unless ``showActive``. */
export function statusBadges(d, { showActive = false } = {}) {
  const badges = [];
  if (d.status === "active" && showActive) badges.push(chip("Active", "ok"));
  if (d.status === "paused") badges.push(chip("Paused", "warn"));
  if (d.status === "delisted") badges.push(chip("Delisted", "bad"));
  if (d.restricted) badges.push(chip(`restricted to ${d.allowed_consumers.length} buyer(s)`, "warn"));
  if (d.models_restricted) badges.push(chip(`${d.allowed_models.length} approved model(s) only`, "warn"));
  if (Number(d.remaining_epsilon) <= 0) badges.push(chip("budget exhausted", "bad"));
  return badges.length ? `<div class="badges">${badges.join("")}</div>` : "";
}

export { fromHex as hexToBytes, toHex as bytesToHex } from "./crypto/bytes.js";

/** Let the user save bytes as a file. */
export function download(bytes, filename, type = "application/octet-stream") {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** ``list``'s first ``k`` items joined with commas, "…" when there are more. */
export function few(list, k) {
  return list.slice(0, k).join(", ") + (list.length > k ? ", …" : "");
}

/**
 * What a schema's label is, in words (plain text, not escaped): its classes, its regression
 * targets with their declared bounds, or its survival intervals — "2 classes (benign, malignant)",
 * "regression on 1 target (progression, declared 25 to 346)", "survival: time to event in 14
 * intervals ending at 365.25, 730.5, …".
 */
export function labelSummary(schema) {
  if (schema.task === "regression") {
    const targets = schema.target_names || [];
    const bounds = schema.target_bounds || [];
    const named = targets.map((t, i) => (Array.isArray(bounds[i]) ? `${t}, declared ${bounds[i][0]} to ${bounds[i][1]}` : t));
    return `regression on ${targets.length} target${targets.length === 1 ? "" : "s"} (${few(named, 4)})`;
  }
  if (schema.task === "survival") {
    const bins = (schema.time_bins || []).map(String);
    return `survival: time to event in ${bins.length} interval${bins.length === 1 ? "" : "s"} ending at ${few(bins, 4)}`;
  }
  const classes = schema.class_names || [];
  return `${classes.length} classes (${few(classes, 6)})`;
}

/** A schema's categorical features, in feature order (its ``categories`` object is key-sorted in canonical JSON). */
export function categoricalFeatures(schema) {
  const declared = schema?.categories || {};
  return (schema?.feature_names || []).filter((name) => Object.hasOwn(declared, name));
}
