// The public Fillframe API as the page uses it: only documented endpoints, the key in X-API-Key.

export class ApiError extends Error {
  /** status: HTTP status (0 when the server could not be reached); body: the parsed error body. */
  constructor(status, message, body = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.body = body;
    this.details = (body && body.details) || null;
    this.retryAfter = retryAfter;
  }
}

const KEY_STORAGE = "fillframe.apiKey";

export function loadKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Private mode without storage: the key lives for this page only.
  }
}

export class Api {
  constructor(key = "") {
    this.key = key;
  }

  async request(method, path, { json, form, headers = {}, auth = true } = {}) {
    const init = { method, headers: { ...headers } };
    if (auth) {
      if (!this.key) throw new ApiError(401, "Enter your API key first (it starts with afk_).");
      init.headers["X-API-Key"] = this.key;
    }
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `Could not reach the server (${err.message}).`);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message = (body && typeof body.error === "string" && body.error) || `HTTP ${response.status}`;
      const retry = Number(response.headers.get("Retry-After"));
      throw new ApiError(response.status, message, body, Number.isFinite(retry) && retry > 0 ? retry : null);
    }
    return body;
  }

  models() {
    return this.request("GET", "/v2/models", { auth: false });
  }

  me() {
    return this.request("GET", "/v2/me");
  }

  /** Upload a Blob; resolves to the upload's `url` (usable as image or mask by this account). */
  async upload(blob, filename) {
    const form = new FormData();
    form.append("file", blob, filename);
    const body = await this.request("POST", "/v2/uploads", { form });
    return body.url;
  }

  /** Submit; the Idempotency-Key makes a repeated click or a retried request one job. */
  submit(body, idempotencyKey) {
    return this.request("POST", "/v2/images/edit", { json: body, headers: { "Idempotency-Key": idempotencyKey } });
  }

  job(id) {
    return this.request("GET", `/v2/jobs/${encodeURIComponent(id)}`);
  }

  jobs({ limit = 12, cursor = null, status = null } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    if (status) q.set("status", status);
    return this.request("GET", `/v2/jobs?${q}`);
  }

  cancel(id) {
    return this.request("POST", `/v2/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** A Blob for a URL of this server that needs the key (an upload), or a signed result URL. */
  async blob(url, { auth = false } = {}) {
    const headers = auth && this.key ? { "X-API-Key": this.key } : {};
    let response;
    try {
      response = await fetch(url, { headers });
    } catch (err) {
      throw new ApiError(0, `Could not download ${url} (${err.message}).`);
    }
    if (!response.ok) throw new ApiError(response.status, `Could not download the image (HTTP ${response.status}).`);
    return response.blob();
  }
}

export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

/**
 * Poll a job until it ends. onUpdate(job) runs on every answer; shouldStop() ends polling early.
 * Backs off from 250 ms to 2 s, and waits out a 429's Retry-After.
 */
export async function pollJob(api, id, { onUpdate, shouldStop = () => false }) {
  let delay = 250;
  for (;;) {
    let job;
    try {
      job = await api.job(id);
    } catch (err) {
      if (err.status !== 429 && err.status !== 503 && err.status !== 0) throw err;
      await sleep((err.retryAfter || 2) * 1000);
      continue;
    }
    onUpdate(job);
    if (TERMINAL.has(job.status) || shouldStop()) return job;
    await sleep(delay);
    delay = Math.min(2000, delay * 1.5);
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
