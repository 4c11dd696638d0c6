// The operator console: static, no build step. Talks to /admin/v1 with the operator token the
// operator types in (kept in this tab's sessionStorage only). Every text from the server goes
// into the page through textContent, never as HTML.

const TOKEN_KEY = "fillframe.adminToken";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = { COMPLETED: "#1b873f", FAILED: "#c62828", other: "#98a2b3" };

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem(TOKEN_KEY) || "", teams: [], selected: null };

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && data.details ? ` (${Object.entries(data.details).map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ")})` : "";
    throw new Error(`${(data && data.error) || `HTTP ${response.status}`}${detail}`);
  }
  return data;
}

function showError(err) {
  const box = $("console-error");
  box.textContent = err ? err.message : "";
  box.hidden = !err;
}

async function guarded(fn) {
  try {
    showError(null);
    await fn();
  } catch (err) {
    showError(err);
  }
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text);
  else td.textContent = text ?? "";
  if (cls) td.className = cls;
  row.append(td);
  return td;
}

function tag(text, cls = "") {
  const span = document.createElement("span");
  span.className = `pill ${cls}`.trim();
  span.textContent = text;
  return span;
}

const credits = (team) => (team.unlimited ? `${team.credits} · unlimited` : String(team.credits));

// --- teams ----------------------------------------------------------------------------------------

async function loadTeams() {
  const { teams } = await api("/admin/v1/teams?limit=500");
  state.teams = teams;
  const body = $("teams-table").querySelector("tbody");
  body.replaceChildren();
  for (const team of teams) {
    const row = document.createElement("tr");
    row.dataset.teamId = team.id;
    row.classList.toggle("selected", team.id === state.selected);
    cell(row, team.name);
    cell(row, credits(team), "num");
    cell(row, team.plan);
    cell(row, team.customerId || "");
    row.addEventListener("click", () => guarded(() => selectTeam(team.id)));
    body.append(row);
  }
  $("teams-empty").hidden = teams.length > 0;
}

async function selectTeam(teamId) {
  if (teamId !== state.selected) $("new-key").hidden = true; // a key is shown to its team only
  state.selected = teamId;
  for (const row of $("teams-table").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.teamId === teamId);
  }
  const team = await api(`/admin/v1/teams/${teamId}`);
  $("no-team").hidden = true;
  $("team-detail").hidden = false;
  $("team-title").textContent = team.name;
  $("team-balance").textContent = `${credits(team)} credits`;
  const meta = [`id ${team.id}`, `plan ${team.plan}`, `max ${team.maxConcurrentJobs} jobs at once`];
  if (team.customerId) meta.push(`customer ${team.customerId}`);
  $("team-meta").textContent = meta.join(" · ");
  renderUsers(team.users);
  renderKeys(team.keys, team.users);
  await loadUsage(teamId);
}

function renderUsers(users) {
  const body = $("users-table").querySelector("tbody");
  body.replaceChildren();
  const select = $("key-user");
  select.replaceChildren();
  for (const user of users) {
    const row = document.createElement("tr");
    cell(row, user.email);
    cell(row, user.role);
    body.append(row);
    const option = document.createElement("option");
    option.value = user.id;
    option.textContent = `${user.email} (${user.role})`;
    select.append(option);
  }
}

function renderKeys(keys, users) {
  const emails = Object.fromEntries(users.map((u) => [u.id, u.email]));
  const body = $("keys-table").querySelector("tbody");
  body.replaceChildren();
  for (const key of keys) {
    const row = document.createElement("tr");
    row.dataset.keyId = key.id;
    cell(row, key.name);
    const prefix = document.createElement("code");
    prefix.textContent = `${key.prefix}…`;
    cell(row, prefix);
    cell(row, emails[key.userId] || key.userId || "");
    cell(row, tag(key.status, key.status === "active" ? "" : key.status === "revoked" ? "bad" : "off"));
    const actions = cell(row, "");
    if (key.status !== "revoked") {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "btn ghost revoke";
      revoke.textContent = "Revoke";
      revoke.addEventListener("click", () =>
        guarded(async () => {
          await api(`/admin/v1/keys/${key.id}/revoke`, { method: "POST" });
          await selectTeam(state.selected);
        }),
      );
      actions.append(revoke);
    }
    body.append(row);
  }
}

// --- usage chart (inline SVG) ----------------------------------------------------------------------

function svg(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderChart(days) {
  const width = 720;
  const height = 200;
  const pad = { left: 30, right: 8, top: 18, bottom: 24 };
  const totals = days.map((d) => Object.values(d.jobs).reduce((a, b) => a + b, 0));
  const top = Math.max(1, ...totals);
  const plotH = height - pad.top - pad.bottom;
  const slot = (width - pad.left - pad.right) / days.length;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, "data-max": top });
  root.append(svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }));
  root.append(svg("text", { x: pad.left - 6, y: pad.top + 4, "text-anchor": "end" }, String(top)));
  root.append(svg("text", { x: pad.left - 6, y: height - pad.bottom, "text-anchor": "end" }, "0"));
  days.forEach((day, i) => {
    const completed = day.jobs.COMPLETED;
    const failed = day.jobs.FAILED;
    const other = totals[i] - completed - failed;
    const group = svg("g", { class: "day", "data-date": day.date, "data-total": totals[i], "data-completed": completed, "data-failed": failed });
    group.append(svg("title", {}, `${day.date}: ${completed} completed, ${failed} failed, ${other} other; ${day.creditsCaptured} credits captured, ${day.creditsRefunded} refunded, ${day.engineSeconds} engine s`));
    const x = pad.left + i * slot + slot * 0.18;
    const barW = slot * 0.64;
    let y = height - pad.bottom;
    for (const [count, color] of [[completed, COLORS.COMPLETED], [failed, COLORS.FAILED], [other, COLORS.other]]) {
      if (!count) continue;
      const h = (count / top) * plotH;
      y -= h;
      group.append(svg("rect", { x, y, width: barW, height: h, rx: 2, fill: color }));
    }
    if (totals[i]) group.append(svg("text", { class: "count", x: x + barW / 2, y: y - 4, "text-anchor": "middle" }, String(totals[i])));
    if (i % 2 === days.length % 2 || i === days.length - 1) {
      group.append(svg("text", { x: x + barW / 2, y: height - 8, "text-anchor": "middle" }, day.date.slice(5)));
    }
    root.append(group);
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const [cls, label] of [["completed", "completed"], ["failed", "failed"], ["other", "queued, running or cancelled"]]) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.className = cls;
    item.append(swatch, label);
    legend.append(item);
  }
  $("usage-chart").replaceChildren(root, legend);
  const sum = (field) => days.reduce((a, d) => a + d[field], 0);
  $("usage-summary").textContent =
    `${totals.reduce((a, b) => a + b, 0)} jobs · ${sum("creditsCaptured")} credits captured · ` +
    `${sum("creditsRefunded")} refunded · ${sum("engineSeconds").toFixed(1)} engine seconds`;
}

async function loadUsage(teamId) {
  const { days } = await api(`/admin/v1/teams/${teamId}/usage?days=14`);
  renderChart(days);
}

// --- failed jobs ---------------------------------------------------------------------------------

async function loadFailed() {
  const { jobs } = await api("/admin/v1/jobs?status=FAILED&limit=20");
  const names = Object.fromEntries(state.teams.map((t) => [t.id, t.name]));
  const body = $("failed-table").querySelector("tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.id;
    cell(row, (job.completedAt || job.createdAt).replace("T", " ").slice(0, 19));
    cell(row, names[job.teamId] || job.teamId);
    const id = document.createElement("code");
    id.textContent = job.id;
    cell(row, id);
    const code = document.createElement("code");
    code.className = "error-code";
    code.textContent = job.errorCode || "";
    cell(row, code);
    cell(row, job.error || "");
    body.append(row);
  }
  $("failed-empty").hidden = jobs.length > 0;
}

// --- forms ---------------------------------------------------------------------------------------

async function refreshAll() {
  await loadTeams();
  if (state.selected) await selectTeam(state.selected);
  await loadFailed();
}

async function signIn() {
  if (!state.token) {
    $("signed-in").textContent = "";
    return;
  }
  await refreshAll();
  $("signed-in").textContent = "Signed in";
}

function wire() {
  $("admin-token").value = state.token;
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("admin-token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    guarded(signIn);
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    $("admin-token").value = "";
    $("signed-in").textContent = "";
  });
  $("teams-refresh").addEventListener("click", () => guarded(refreshAll));
  $("failed-refresh").addEventListener("click", () => guarded(loadFailed));

  $("team-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const body = {
        name: $("team-name").value.trim(),
        credits: Number($("team-credits").value || 0),
        unlimited: $("team-unlimited").checked,
      };
      const email = $("team-email").value.trim();
      const customer = $("team-customer").value.trim();
      if (email) body.ownerEmail = email;
      if (customer) body.customerId = customer;
      const team = await api("/admin/v1/teams", { method: "POST", body });
      event.target.reset();
      state.selected = team.id;
      await loadTeams();
      await selectTeam(team.id);
    });
  });

  $("credits-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const body = { amount: Number($("credits-amount").value), reason: $("credits-reason").value.trim() };
      await api(`/admin/v1/teams/${state.selected}/credits`, { method: "POST", body });
      await loadTeams();
      await selectTeam(state.selected);
    });
  });

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const body = { name: $("key-name").value.trim(), userId: $("key-user").value || undefined };
      const made = await api(`/admin/v1/teams/${state.selected}/keys`, { method: "POST", body });
      $("new-key-value").textContent = made.key;
      $("new-key-copied").textContent = "";
      $("new-key").hidden = false;
      await selectTeam(state.selected);
    });
  });

  $("new-key-copy").addEventListener("click", () =>
    guarded(async () => {
      const value = $("new-key-value");
      if (navigator.clipboard) {
        await navigator.clipboard.writeText(value.textContent);
      } else {
        // Plain http on another host is not a secure context: no Clipboard API there.
        const range = document.createRange();
        range.selectNodeContents(value);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        if (!document.execCommand("copy")) throw new Error("Copying is blocked here: the key is selected, press Ctrl+C.");
      }
      $("new-key-copied").textContent = "Copied.";
    }),
  );
}

wire();
guarded(signIn);
