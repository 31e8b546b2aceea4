// The gateway's REST API, server-sent events and uploads with progress.

/** An error from the gateway, carrying its HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

async function failure(response) {
  let detail = response.statusText;
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, detail || `HTTP ${response.status}`);
}

/** GET a JSON document. */
export async function getJSON(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** POST a JSON body, return the JSON answer. */
export async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** GET raw bytes. */
export async function getBytes(path) {
  const response = await fetch(path);
  if (!response.ok) throw await failure(response);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Upload a Blob as application/octet-stream with upload progress (fetch has none, XHR does).
 * @param {string} path
 * @param {Blob} blob
 * @param {{sha256?: string, onProgress?: (done: number, total: number) => void}} options
 */
export function uploadBlob(path, blob, { sha256, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("content-type", "application/octet-stream");
    if (sha256) xhr.setRequestHeader("x-content-sha256", sha256);
    xhr.upload.onprogress = (e) => onProgress && e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onerror = () => reject(new ApiError(0, "the upload failed: the gateway could not be reached"));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        if (onProgress) onProgress(blob.size, blob.size);
        resolve(body);
      } else {
        reject(new ApiError(xhr.status, (body && body.detail) || `HTTP ${xhr.status}`));
      }
    };
    xhr.send(blob);
  });
}

let source = null;
const listeners = new Set();

/**
 * Subscribe to the gateway's server-sent events; returns an unsubscribe function.
 * @param {(type: string, data: any) => void} listener
 */
export function subscribe(listener) {
  listeners.add(listener);
  if (!source) {
    source = new EventSource("/api/events");
    for (const type of ["block", "dataset", "job", "payment", "market", "progress", "worker", "stake"]) {
      source.addEventListener(type, (e) => {
        let data = null;
        try {
          data = JSON.parse(e.data);
        } catch {
          data = e.data;
        }
        for (const l of [...listeners]) l(type, data);
      });
    }
  }
  return () => listeners.delete(listener);
}

/** Wait (up to ``timeoutMs``) until the gateway's index has caught up with ``block``. */
export async function waitForIndex(block, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const health = await getJSON("/api/health");
    if (Number(health.indexed_block) >= Number(block)) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new ApiError(0, `the gateway's index has not reached block ${block} yet; reload in a moment`);
}
