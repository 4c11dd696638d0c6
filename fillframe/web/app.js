// The playground: wires the page to the public API (api.js), the mask brush (mask.js) and the
// outpaint preview (outpaint.js). No framework, no build step.

import { Api, ApiError, loadKey, pollJob, storeKey } from "./api.js";
import { MaskEditor } from "./mask.js";
import { MAX_EXPAND, PRESETS, SIDES, drawPlan, planFor } from "./outpaint.js";

const $ = (id) => document.getElementById(id);
const SERVER_FORMATS = new Set(["image/jpeg", "image/png", "image/webp"]);
const STATUS_LABELS = { QUEUED: "Queued", PROCESSING: "Filling" };
const ENGINE_NOTES = {
  classic: "Engine: classic (CPU). It fills from the surrounding texture and ignores the prompt.",
  flux: "Engine: flux (FLUX.1 Fill [dev] on this server). The prompt guides the fill.",
  bfl: "Engine: bfl (Black Forest Labs' FLUX.1 Fill [pro]). The prompt guides the fill.",
};

const state = {
  api: new Api(loadKey()),
  input: null, // {blob, name, bitmap, width, height, objectUrl, uploads: Map(key -> url)}
  mode: "inpaint",
  preset: PRESETS[0], // or CUSTOM: the four expand inputs
  running: null, // {id, cancelled}
  result: null, // {job, beforeUrl}
  historyCursor: null,
};

const mask = new MaskEditor($("mask-canvas"), $("brush-cursor"), updateMaskButtons);

// --- small helpers ----------------------------------------------------------------------------

function randomKey() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "pg-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function relativeTime(iso) {
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

function blobToDataUri(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function canvasBlob(canvas, type = "image/png") {
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("Could not encode the image."))), type),
  );
}

// --- errors and progress ----------------------------------------------------------------------

function showError(title, message, { code = null, details = null, hint = "" } = {}) {
  $("error-title").textContent = title;
  $("error-message").textContent = message;
  $("error-hint").textContent = hint;
  $("error-hint").hidden = !hint;
  $("error-code").hidden = !code;
  $("error-code").textContent = code || "";
  const list = $("error-details");
  list.replaceChildren();
  for (const [path, messages] of Object.entries(details || {})) {
    for (const m of messages) list.append(el("li", {}, el("code", {}, path), ` ${m}`));
  }
  $("error").hidden = false;
}

function showApiError(err) {
  if (!(err instanceof ApiError)) {
    showError("Something went wrong", err.message || String(err));
    return;
  }
  const titles = {
    0: "The server could not be reached",
    400: "The request was not accepted",
    401: "The API key was refused",
    402: "Not enough credits",
    403: "The API key is not allowed",
    404: "Not found",
    409: "Conflict",
    413: "The image is too large",
    429: "Too many requests",
    503: "The service is busy",
  };
  let message = err.message;
  if (err.status === 402 && err.body) {
    message += ` (this job needs ${err.body.creditsRequired}, the account has ${err.body.creditsAvailable}).`;
  }
  if (err.retryAfter) message += ` Try again in ${err.retryAfter} s.`;
  const hints = {
    401: "Check the key at the top of the page; an operator creates keys with: fillframe keys create.",
    402: "An operator adds credits with: fillframe credits grant.",
    403: "An operator re-enables keys with: fillframe keys enable.",
  };
  const title = titles[err.status] || `The server answered ${err.status}`;
  const code = err.status ? `HTTP ${err.status}` : null;
  showError(title, message, { code, details: err.details, hint: hints[err.status] });
}

function clearError() {
  $("error").hidden = true;
}

function setProgress(label, percent = null) {
  $("progress").hidden = false;
  $("progress-label").textContent = label;
  $("progress-pct").textContent = percent === null ? "" : `${percent}%`;
  $("progress-bar").style.width = `${percent === null ? 0 : percent}%`;
  $("progress-bar").classList.toggle("indeterminate", percent === null);
}

function setBusy(busy) {
  $("fill").disabled = busy;
  $("fill").textContent = busy ? "Working…" : "Fill";
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
}

// --- key and account --------------------------------------------------------------------------

async function refreshAccount() {
  const out = $("account");
  out.classList.remove("bad");
  if (!state.api.key) {
    out.textContent = "";
    return;
  }
  try {
    const me = await state.api.me();
    const credits = me.team.unlimited ? "unlimited credits" : `${me.team.credits} credits`;
    out.textContent = `${me.team.name} · ${credits}`;
  } catch (err) {
    out.textContent = err.message;
    out.classList.add("bad");
  }
}

async function loadEngineNote() {
  try {
    const { models } = await state.api.models();
    const engine = models[0] && models[0].engine;
    $("engine-note").textContent = engine ? ENGINE_NOTES[engine] || `Engine: ${engine}.` : "";
  } catch {
    $("engine-note").textContent = "";
  }
}

// --- the input image ---------------------------------------------------------------------------

async function setInput(blob, name) {
  clearError();
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch {
    showError("This file is not an image the browser can read", `${name} could not be decoded.`);
    return;
  }
  if (!SERVER_FORMATS.has(blob.type)) {
    // The API takes JPEG, PNG and WebP; anything else the browser reads goes up as PNG.
    const c = el("canvas", { width: bitmap.width, height: bitmap.height });
    c.getContext("2d").drawImage(bitmap, 0, 0);
    blob = await canvasBlob(c);
  }
  if (state.input) URL.revokeObjectURL(state.input.objectUrl);
  const objectUrl = URL.createObjectURL(blob);
  state.input = { blob, name, bitmap, width: bitmap.width, height: bitmap.height, objectUrl, uploads: new Map() };
  const img = $("input-image");
  img.src = objectUrl;
  await img.decode().catch(() => {});
  mask.reset(bitmap.width, bitmap.height);
  const size = Math.max(4, Math.round(Math.max(bitmap.width, bitmap.height) / 16));
  setBrushSize(size);
  $("stage").classList.remove("empty");
  $("drop-hint").hidden = true;
  $("replace").hidden = false;
  renderStage();
}

function setBrushSize(size) {
  const input = $("brush-size");
  size = Math.max(Number(input.min), Math.min(Number(input.max), Math.round(size)));
  input.value = String(size);
  $("brush-size-value").textContent = String(size);
  mask.size = size;
}

function renderStage() {
  const has = Boolean(state.input);
  const outpaint = state.mode === "outpaint";
  $("brush-tools").hidden = outpaint;
  $("outpaint-tools").hidden = !outpaint;
  $("editor").hidden = !has || outpaint;
  $("outpaint-preview").hidden = !has || !outpaint;
  if (!has) {
    $("image-info").textContent = "";
    return;
  }
  const { width, height, name } = state.input;
  if (outpaint) {
    const plan = planFor(width, height, outpaintSpec());
    drawPlan($("preview-canvas"), state.input.bitmap, plan);
    const scaled = plan.scale < 1 ? ` (scaled to ${plan.imageWidth}×${plan.imageHeight} to fit)` : "";
    $("image-info").textContent = `${name} · ${width}×${height} → ${plan.width}×${plan.height}${scaled}`;
  } else {
    $("image-info").textContent = `${name} · ${width}×${height}`;
  }
}

function updateMaskButtons() {
  $("undo").disabled = !mask.canUndo;
  $("redo").disabled = !mask.canRedo;
}

/** The chip that switches from presets to free expansion (the request's `expand`). */
const CUSTOM = "Custom";

/** What shapes the outpaint canvas: the chosen preset's name, or the expand inputs' {left, ...}. */
function outpaintSpec() {
  if (state.preset !== CUSTOM) return state.preset;
  const sides = {};
  for (const side of SIDES) {
    const value = Math.round(Number($(`expand-${side}`).value) || 0);
    sides[side] = Math.max(0, Math.min(MAX_EXPAND, value));
  }
  return sides;
}

function renderPresets() {
  const box = $("presets");
  for (const side of SIDES) $(`expand-${side}`).addEventListener("input", renderStage);
  for (const preset of [...PRESETS, CUSTOM]) {
    const button = el("button", { type: "button", class: "chip", textContent: preset });
    button.dataset.preset = preset;
    button.setAttribute("role", "radio");
    button.addEventListener("click", () => {
      state.preset = preset;
      syncPresets();
      renderStage();
    });
    box.append(button);
  }
  syncPresets();
}

function syncPresets() {
  for (const b of $("presets").children) b.setAttribute("aria-checked", String(b.dataset.preset === state.preset));
  $("expand-tools").hidden = state.preset !== CUSTOM;
}

// --- filling ---------------------------------------------------------------------------------

/** The image's URL for the API: an upload (cached per key), or a data URI on servers without uploads. */
async function inputSource() {
  const { uploads, blob, name } = state.input;
  const cached = uploads.get(state.api.key);
  if (cached) return cached;
  const url = await uploadOrInline(blob, name);
  uploads.set(state.api.key, url);
  return url;
}

async function uploadOrInline(blob, name) {
  try {
    return await state.api.upload(blob, name);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return blobToDataUri(blob);
    throw err;
  }
}

function readParams() {
  const number = (id) => {
    const raw = $(id).value.trim();
    return raw === "" ? null : Number(raw);
  };
  const params = {
    steps: number("steps"),
    guidance: number("guidance"),
    seed: number("seed"),
    safety_tolerance: number("safety"),
    output_format: $("format").value,
  };
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== null));
}

/** What the "before" side of the comparison shows: the input, placed on the canvas for outpaint. */
async function beforeImage(bitmap, mode, spec) {
  if (mode !== "outpaint") return null;
  const plan = planFor(bitmap.width, bitmap.height, spec);
  const c = el("canvas");
  drawPlan(c, bitmap, plan, { hatch: true });
  return URL.createObjectURL(await canvasBlob(c));
}

async function fill() {
  clearError();
  if (!state.api.key) return showError("No API key", "Enter your API key at the top and press Save.");
  if (!state.input) return showError("No image", "Drop, paste or choose an image first.");
  const prompt = $("prompt").value.trim();
  if (!prompt) return showError("No prompt", "Write a prompt: the API needs one even where the engine ignores it.");
  const mode = state.mode;
  if (mode === "inpaint" && mask.isEmpty()) {
    return showError("Nothing to fill", "Paint over the area to repaint, or switch to Outpaint.");
  }
  const { bitmap, objectUrl } = state.input;
  const spec = outpaintSpec();
  if (mode === "outpaint" && typeof spec !== "string" && !SIDES.some((side) => spec[side] > 0)) {
    return showError("Nothing to add", "Give at least one side more than 0 pixels, or pick a preset.");
  }
  setBusy(true);
  state.running = { id: null, cancelled: false };
  try {
    setProgress("Uploading the image");
    const image = await inputSource();
    const params = { image, prompt, mode, ...readParams() };
    if (mode === "inpaint") {
      setProgress("Uploading the mask");
      params.mask = await uploadOrInline(await mask.toBlob(), "mask.png");
    } else if (typeof spec === "string") {
      params.outpaint = spec;
    } else {
      params.expand = spec;
    }
    setProgress("Submitting");
    const submitted = await state.api.submit({ model: "flux-fill-pro", fluxFillParams: params }, randomKey());
    state.running.id = submitted.jobId || submitted.id;
    refreshHistory();
    const job = await pollJob(state.api, state.running.id, {
      onUpdate: (j) => setProgress(STATUS_LABELS[j.status] || j.status, j.progress),
    });
    if (job.status === "COMPLETED") {
      setProgress("Done", 100);
      await showResult(job, (await beforeImage(bitmap, mode, spec)) || objectUrl);
    } else {
      $("progress").hidden = true;
      const title = job.status === "CANCELLED" ? "Cancelled" : "The job failed";
      const fallback =
        job.status === "CANCELLED" ? "The job was cancelled; its credits were refunded." : "No reason was given.";
      showError(title, job.error || fallback, { code: job.errorCode });
    }
  } catch (err) {
    if (state.input) state.input.uploads.clear(); // a refused upload URL is not reused
    $("progress").hidden = true;
    showApiError(err);
  } finally {
    state.running = null;
    setBusy(false);
    refreshHistory();
    refreshAccount();
  }
}

async function cancel() {
  const running = state.running;
  if (!running || !running.id) return;
  $("cancel").disabled = true;
  try {
    await state.api.cancel(running.id);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 409)) showApiError(err); // 409: it just finished
  }
}

// --- the result ------------------------------------------------------------------------------

async function showResult(job, beforeUrl) {
  const url = job.result && job.result.images[0];
  if (!url) return;
  state.result = { job, beforeUrl };
  $("result").dataset.jobId = job.id;
  const img = $("result-image");
  img.src = url;
  await img.decode().catch(() => {});
  const before = $("before-image");
  before.hidden = !beforeUrl;
  $("before-layer").hidden = !beforeUrl;
  $("divider").hidden = !beforeUrl;
  $("compare-range").hidden = !beforeUrl;
  if (beforeUrl) before.src = beforeUrl;
  setCompare(50);
  const ext = (job.input && job.input.fluxFillParams && job.input.fluxFillParams.output_format) || "jpg";
  const link = $("download");
  link.href = url;
  link.download = `fillframe-${job.id.slice(0, 8)}.${ext}`;
  const size = `${img.naturalWidth}×${img.naturalHeight}`;
  $("result-info").textContent = `${size} · seed ${job.seed} · job ${job.id.slice(0, 8)}`;
  $("result").hidden = false;
  $("result").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function setCompare(percent) {
  $("compare").style.setProperty("--pos", `${percent}%`);
  $("compare-range").value = String(percent);
}

async function useResult() {
  if (!state.result) return;
  clearError();
  try {
    const blob = await state.api.blob(state.result.job.result.images[0]);
    await setInput(blob, `result-${state.result.job.id.slice(0, 8)}`);
    window.scrollTo({ top: 0, behavior: "smooth" });
  } catch (err) {
    showApiError(err);
  }
}

// --- history ---------------------------------------------------------------------------------

async function refreshHistory(more = false) {
  if (!state.api.key) return;
  try {
    const page = await state.api.jobs({ limit: 12, cursor: more ? state.historyCursor : null });
    const list = $("history-list");
    if (!more) list.replaceChildren();
    for (const job of page.jobs) list.append(historyItem(job));
    state.historyCursor = page.nextCursor;
    $("history-more").hidden = !page.hasMore;
    $("history-empty").hidden = list.children.length > 0;
    $("history-empty").textContent = "No jobs yet.";
  } catch (err) {
    $("history-empty").hidden = false;
    $("history-empty").textContent = `Could not load your jobs: ${err.message}`;
  }
}

function historyItem(job) {
  const params = (job.input && job.input.fluxFillParams) || {};
  const thumb =
    job.status === "COMPLETED" && job.result
      ? el("img", { src: job.result.images[0], alt: "", loading: "lazy" })
      : el("div", { class: "thumb-placeholder", textContent: job.errorCode || job.status.toLowerCase() });
  const what = params.mode === "outpaint" ? (params.expand ? "expand" : params.outpaint || "outpaint") : "inpaint";
  const card = el(
    "button",
    { type: "button", class: "job-card", title: job.error || job.id },
    thumb,
    el("span", { class: `badge ${job.status.toLowerCase()}`, textContent: job.status }),
    el("span", { class: "job-meta", textContent: `${what} · ${relativeTime(job.createdAt)}` }),
  );
  card.dataset.jobId = job.id;
  card.addEventListener("click", () => openHistoryJob(job));
  return el("li", {}, card);
}

async function openHistoryJob(job) {
  clearError();
  if (job.status !== "COMPLETED") {
    showError(`Job ${job.status.toLowerCase()}`, job.error || "This job has no result yet.", { code: job.errorCode });
    return;
  }
  // The input is one of this account's uploads: fetch it with the key to show "before".
  let beforeUrl = null;
  const params = (job.input && job.input.fluxFillParams) || {};
  try {
    if (params.image && params.image.includes("/v2/uploads/")) {
      const bitmap = await createImageBitmap(await state.api.blob(params.image, { auth: true }));
      beforeUrl = await beforeImage(bitmap, params.mode || "inpaint", params.expand || params.outpaint || PRESETS[0]);
      if (!beforeUrl) {
        const c = el("canvas", { width: bitmap.width, height: bitmap.height });
        c.getContext("2d").drawImage(bitmap, 0, 0);
        beforeUrl = URL.createObjectURL(await canvasBlob(c));
      }
    }
  } catch {
    beforeUrl = null; // expired upload: show the result alone
  }
  await showResult(job, beforeUrl);
}

// --- wiring ----------------------------------------------------------------------------------

function isTyping(target) {
  return (
    target instanceof HTMLInputElement ||
    target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement
  );
}

function wire() {
  $("api-key").value = state.api.key;
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.api.key = $("api-key").value.trim();
    storeKey(state.api.key);
    clearError();
    refreshAccount();
    refreshHistory();
  });
  $("key-forget").addEventListener("click", () => {
    state.api.key = "";
    $("api-key").value = "";
    storeKey("");
    refreshAccount();
    $("history-list").replaceChildren();
    $("history-empty").hidden = false;
  });

  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      state.mode = radio.value;
      renderStage();
    });
  }

  const chooseFile = () => $("file-input").click();
  $("choose").addEventListener("click", chooseFile);
  $("replace").addEventListener("click", chooseFile);
  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) setInput(file, file.name);
    e.target.value = "";
  });
  const stage = $("stage");
  stage.addEventListener("click", (e) => {
    if (!state.input && e.target === stage) chooseFile();
  });
  stage.addEventListener("dragover", (e) => {
    e.preventDefault();
    stage.classList.add("dragging");
  });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    stage.classList.remove("dragging");
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (file) setInput(file, file.name);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (!item) return;
    e.preventDefault();
    setInput(item.getAsFile(), "pasted image");
  });

  $("brush-size").addEventListener("input", (e) => setBrushSize(Number(e.target.value)));
  $("eraser").addEventListener("click", () => {
    mask.eraser = !mask.eraser;
    $("eraser").setAttribute("aria-pressed", String(mask.eraser));
  });
  $("undo").addEventListener("click", () => mask.undo());
  $("redo").addEventListener("click", () => mask.redo());
  $("clear").addEventListener("click", () => mask.clear());
  $("invert").addEventListener("click", () => mask.invert());
  $("mask-opacity").addEventListener("input", (e) => mask.setOpacity(Number(e.target.value) / 100));
  mask.setOpacity(Number($("mask-opacity").value) / 100);

  document.addEventListener("keydown", (e) => {
    if (isTyping(e.target) || state.mode !== "inpaint" || !state.input) return;
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z") {
      e.preventDefault();
      if (e.shiftKey) mask.redo();
      else mask.undo();
    } else if (mod && e.key.toLowerCase() === "y") {
      e.preventDefault();
      mask.redo();
    } else if (!mod && e.key.toLowerCase() === "e") {
      $("eraser").click();
    } else if (!mod && (e.key === "[" || e.key === "]")) {
      setBrushSize(mask.size * (e.key === "]" ? 1.25 : 0.8));
    }
  });

  $("fill").addEventListener("click", fill);
  $("cancel").addEventListener("click", cancel);
  $("compare-range").addEventListener("input", (e) => setCompare(Number(e.target.value)));
  $("use-result").addEventListener("click", useResult);
  $("history-refresh").addEventListener("click", () => refreshHistory());
  $("history-more").addEventListener("click", () => refreshHistory(true));

  renderPresets();
  renderStage();
}

wire();
loadEngineNote();
refreshAccount();
refreshHistory();
