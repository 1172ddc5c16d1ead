"use strict";
// The upload page. The token lives in sessionStorage (never a cookie) and is sent as a
// bearer header, so other sites cannot make requests on the user's behalf.

const TOKEN_KEY = "chunkstore-token";
const $ = (id) => document.getElementById(id);
let files = [];

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function authHeaders() { return token() ? { Authorization: "Bearer " + token() } : {}; }

function humanBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toString() : n.toFixed(1)) + " " + units[i];
}

function localTime(iso) { return new Date(iso).toLocaleString(); }

function notice(message) {
  const box = $("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); message = body.message || message; } catch (_) { /* not JSON */ }
    if (response.status === 401) message = "This server needs a token: " + message;
    throw new Error(message);
  }
  return response;
}

// ---- upload ----------------------------------------------------------------------------

function uploadFile(file) {
  const item = document.createElement("li");
  item.innerHTML = '<div class="row"><span class="name"></span><span class="result">uploading…</span></div>' +
                   '<progress max="1" value="0"></progress>';
  item.querySelector(".name").textContent = file.name;
  $("uploads").prepend(item);
  const bar = item.querySelector("progress");
  const result = item.querySelector(".result");

  const request = new XMLHttpRequest();
  request.open("POST", "/files?name=" + encodeURIComponent(file.name));
  for (const [header, value] of Object.entries(authHeaders())) request.setRequestHeader(header, value);
  request.setRequestHeader("Content-Type", "application/octet-stream");
  request.upload.onprogress = (event) => { if (event.lengthComputable) bar.value = event.loaded / event.total; };
  request.onload = () => {
    let body = {};
    try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON */ }
    bar.value = 1;
    if (request.status === 200) {
      result.className = "result " + body.outcome;
      result.textContent = body.message + (body.duplicate_of ? " (same as " + body.duplicate_of + ")" : "") +
                           " · " + humanBytes(body.size) + ", " + humanBytes(body.new_bytes) + " new";
    } else {
      result.className = "result error";
      result.textContent = "Failed: " + (body.message || request.status);
    }
    refresh();
  };
  request.onerror = () => { result.className = "result error"; result.textContent = "Failed: network error"; };
  request.send(file);
}

function uploadAll(list) { for (const file of list) uploadFile(file); }

// ---- files -----------------------------------------------------------------------------

async function loadFiles() {
  const versions = $("all-versions").checked;
  const response = await api("/files?versions=" + versions);
  files = (await response.json()).files;
  renderFiles();
}

function renderFiles() {
  const query = $("search").value.trim().toLowerCase();
  const rows = $("file-rows");
  rows.replaceChildren();
  const shown = files.filter((f) => f.name.toLowerCase().includes(query));
  for (const f of shown) {
    const row = document.createElement("tr");
    const cells = [f.name, "v" + f.version, humanBytes(f.size), localTime(f.stored_at)];
    cells.forEach((text, i) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (i === 2) cell.className = "num";
      row.append(cell);
    });
    const actions = document.createElement("td");
    const get = document.createElement("button");
    get.textContent = "Download";
    get.addEventListener("click", () => download(f).catch((e) => notice(e.message)));
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.className = "danger";
    remove.addEventListener("click", () => removeFile(f).catch((e) => notice(e.message)));
    actions.append(get, remove);
    row.append(actions);
    rows.append(row);
  }
  $("empty").hidden = shown.length > 0;
}

function filePath(f) { return "/files/" + f.name.split("/").map(encodeURIComponent).join("/"); }

async function download(f) {
  const response = await api(filePath(f) + "?version=" + f.version);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = f.name.split("/").pop();
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function removeFile(f) {
  const which = $("all-versions").checked ? "version " + f.version + " of " + f.name : f.name + " (every version)";
  if (!confirm("Delete " + which + "?")) return;
  const query = $("all-versions").checked ? "?version=" + f.version : "";
  await api(filePath(f) + query, { method: "DELETE" });
  refresh();
}

// ---- dashboard -------------------------------------------------------------------------

function drawChart(stats) {
  const chart = $("chart");
  const saved = Math.max(0, stats.logical_bytes - stats.stored_bytes);
  const bars = [["Logical", stats.logical_bytes, "#8aa4c8"], ["Unique", stats.unique_bytes, "#4f7fc0"],
                ["Stored", stats.stored_bytes, "#1d7a3e"], ["Saved", saved, "#e0a030"]];
  const largest = Math.max(1, ...bars.map((b) => b[1]));
  const svg = "http://www.w3.org/2000/svg";
  chart.replaceChildren();
  bars.forEach(([label, value, colour], i) => {
    const y = 10 + i * 38;
    const text = document.createElementNS(svg, "text");
    text.setAttribute("x", 0); text.setAttribute("y", y + 17); text.textContent = label;
    const bar = document.createElementNS(svg, "rect");
    bar.setAttribute("x", 60); bar.setAttribute("y", y); bar.setAttribute("height", 24); bar.setAttribute("rx", 3);
    bar.setAttribute("width", Math.max(1, 300 * value / largest)); bar.setAttribute("fill", colour);
    const amount = document.createElementNS(svg, "text");
    amount.setAttribute("x", 66 + 300 * value / largest); amount.setAttribute("y", y + 17);
    amount.textContent = humanBytes(value);
    chart.append(text, bar, amount);
  });
}

async function loadStats() {
  const stats = await (await api("/stats")).json();
  $("logical").textContent = humanBytes(stats.logical_bytes);
  $("stored").textContent = humanBytes(stats.stored_bytes);
  $("dedup").textContent = stats.dedup_ratio ? stats.dedup_ratio.toFixed(2) + "x" : "-";
  const saved = stats.logical_bytes ? 1 - stats.stored_bytes / stats.logical_bytes : 0;
  $("saved").textContent = stats.logical_bytes ? (100 * saved).toFixed(1) + "%" : "-";
  $("counts").textContent = stats.files + " / " + stats.versions;
  drawChart(stats);
}

async function loadActivity() {
  const entries = (await (await api("/activity")).json()).entries;
  const list = $("activity");
  list.replaceChildren();
  for (const e of entries) {
    const item = document.createElement("li");
    const when = document.createElement("time");
    when.textContent = new Date(e.time).toLocaleTimeString();
    item.append(when, e.action + " " + e.name + ": " + e.message + (e.duplicate_of ? " (same as " + e.duplicate_of + ")" : "") +
                " by " + e.user);
    list.append(item);
  }
}

async function refresh() {
  try {
    await Promise.all([loadFiles(), loadStats(), loadActivity()]);
    notice("");
  } catch (error) {
    notice(error.message);
  }
}

// ---- wiring ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter") $("picker").click(); });
  $("picker").addEventListener("change", (event) => { uploadAll(event.target.files); event.target.value = ""; });
  $("search").addEventListener("input", renderFiles);
  $("all-versions").addEventListener("change", refresh);
  $("refresh").addEventListener("click", refresh);
  $("token").value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    refresh();
  });
  refresh();
});
