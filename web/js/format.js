// Small formatting and DOM helpers shared by the pages.
import { formatEther } from "ethers";

/** Escape text for HTML. */
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** Wei (decimal string or bigint) as ETH with up to 6 decimals. */
export function eth(wei) {
  const value = Number(formatEther(BigInt(wei ?? 0)));
  return `${value.toLocaleString(undefined, { maximumFractionDigits: 6 })} ETH`;
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
