// p2p-agent web view: the mesh as this node sees it, refreshed every second.
// Everything comes from the node's control API; the token (when the API
// needs one) is entered once and kept in localStorage.
"use strict";

const TOKEN_KEY = "p2p-agent-token";
const SVG = "http://www.w3.org/2000/svg";
const state = { selected: null, self: null, nodes: [], edges: [], prevStats: null, rates: null, tasks: [], trace: null };

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

async function api(path) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const resp = await fetch(path, { headers });
  if (resp.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the API needs a token");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(body.error || resp.status + " " + resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return body;
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  refresh();
});

// network reads the mesh as this node sees it (GET /api/v1/network).
async function network() {
  const net = await api("/api/v1/network");
  const nodes = (net.nodes || []).map((n) => ({
    id: n.id, name: n.name || shortID(n.id), version: n.version, state: n.state, peers: n.peers,
    cpu: n.cpu_percent, memory: n.memory_bytes, mps: n.messages_per_second, tasks: n.tasks_running, self: !!n.self,
  }));
  return { nodes, edges: net.edges || [] };
}

function shortID(id) { return id && id.length > 10 ? "…" + id.slice(-8) : id || "?"; }

function health(n) {
  const s = (n.state || "").toLowerCase();
  if (s === "active" || s === "up") return "ok";
  if (s === "gone" || s === "down" || s === "unreachable" || s === "stopped") return "bad";
  return "warn";
}

function latencyClass(ms) {
  if (ms == null) return "mid";
  return ms < 5 ? "fast" : ms < 50 ? "mid" : "slow";
}

// layout places nodes on a circle in id order, so positions are stable
// from one refresh to the next and 50 nodes stay readable.
function layout(nodes) {
  const sorted = [...nodes].sort((a, b) => (a.id < b.id ? -1 : 1));
  const cx = 500, cy = 350, r = nodes.length <= 1 ? 0 : Math.min(300, 60 + nodes.length * 14);
  const pos = new Map();
  sorted.forEach((n, i) => {
    const a = (2 * Math.PI * i) / sorted.length - Math.PI / 2;
    pos.set(n.id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  return pos;
}

function el(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// draw updates the SVG in place: elements are keyed by node id and edge
// ends, created once and then only moved or recoloured.
function draw() {
  const svg = document.getElementById("graph");
  const pos = layout(state.nodes);
  const small = state.nodes.length > 20;
  let edgeLayer = svg.querySelector("g.edges"), nodeLayer = svg.querySelector("g.nodes");
  if (!edgeLayer) { edgeLayer = el("g", { class: "edges" }); nodeLayer = el("g", { class: "nodes" }); svg.append(edgeLayer, nodeLayer); }

  const seenEdges = new Set();
  for (const e of state.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const key = [e.from, e.to].sort().join("|");
    if (seenEdges.has(key)) continue;
    seenEdges.add(key);
    let line = edgeLayer.querySelector(`line[data-key="${CSS.escape(key)}"]`);
    if (!line) { line = el("line", { "data-key": key }); line.append(el("title")); edgeLayer.append(line); }
    line.setAttribute("x1", a.x); line.setAttribute("y1", a.y); line.setAttribute("x2", b.x); line.setAttribute("y2", b.y);
    line.setAttribute("class", "edge " + latencyClass(e.latency_ms));
    line.setAttribute("data-from", e.from); line.setAttribute("data-to", e.to);
    line.firstChild.textContent = e.latency_ms == null ? "latency unknown" : e.latency_ms.toFixed(2) + " ms";
  }
  for (const line of [...edgeLayer.children]) if (!seenEdges.has(line.dataset.key)) line.remove();

  const seenNodes = new Set();
  for (const n of state.nodes) {
    const p = pos.get(n.id);
    seenNodes.add(n.id);
    let g = nodeLayer.querySelector(`g[data-id="${CSS.escape(n.id)}"]`);
    if (!g) {
      g = el("g", { "data-id": n.id, class: "node" });
      const c = el("circle", { class: "node" });
      c.addEventListener("click", () => { state.selected = n.id; renderPanel(); draw(); });
      g.append(c, el("text", { class: "label" }));
      nodeLayer.append(g);
    }
    const load = (n.mps || 0) + 10 * (n.tasks || 0);
    const radius = (small ? 10 : 18) + Math.min(14, Math.sqrt(load));
    const c = g.querySelector("circle"), t = g.querySelector("text");
    c.setAttribute("cx", p.x); c.setAttribute("cy", p.y); c.setAttribute("r", radius);
    c.setAttribute("class", "node " + health(n) + (state.selected === n.id ? " selected" : ""));
    g.setAttribute("data-name", n.name);
    t.setAttribute("x", p.x); t.setAttribute("y", p.y + radius + 14);
    t.textContent = n.name + (n.self ? " (this node)" : "");
  }
  for (const g of [...nodeLayer.children]) if (!seenNodes.has(g.dataset.id)) g.remove();
}

function row(k, v) { return `<tr><td>${esc(k)}</td><td>${v}</td></tr>`; }
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
function num(v, digits, unit) { return v == null ? "–" : esc(Number(v).toFixed(digits) + (unit || "")); }

function renderPanel() {
  const panel = document.getElementById("panel");
  const n = state.nodes.find((x) => x.id === state.selected);
  if (!n) { panel.innerHTML = '<p class="hint">Select a node.</p>'; return; }
  const peers = state.edges.filter((e) => e.from === n.id || e.to === n.id).map((e) => {
    const other = e.from === n.id ? e.to : e.from;
    const o = state.nodes.find((x) => x.id === other);
    return `<tr><td>${esc(o ? o.name : shortID(other))}</td><td>${num(e.latency_ms, 2, " ms")}</td></tr>`;
  });
  const peerCount = n.peers != null ? n.peers : peers.length;
  let html = `<h2 id="panel-name">${esc(n.name)}</h2><table id="panel-details">`;
  html += row("peer id", esc(n.id)) + row("version", esc(n.version)) + row("state", esc(n.state));
  html += `<tr><td>peers</td><td id="panel-peers">${esc(peerCount)}</td></tr>`;
  html += row("cpu", num(n.cpu, 1, " %")) + row("memory", n.memory == null ? "–" : num(n.memory / 1048576, 1, " MiB"));
  html += row("messages/s", num(n.mps, 1)) + row("tasks running", n.tasks == null ? "–" : esc(n.tasks));
  html += "</table>";
  if (n.self && state.rates) {
    const r = state.rates;
    html += "<h2>Rates (this node)</h2><table>" + row("messages/s in", num(r.in, 1)) + row("messages/s out", num(r.out, 1)) +
      row("storage ops/s", num(r.storage, 1)) + row("storage errors/s", num(r.storageErrors, 2)) + "</table>";
  }
  html += `<h2>Peers</h2><table id="panel-peer-list">${peers.join("") || row("none", "")}</table>`;
  if (n.self) {
    html += "<h2>Tasks (a page of records, newest first)</h2><table id=\"panel-tasks\">";
    for (const t of state.tasks.slice(0, 10)) {
      const link = t.trace_id ? ` <a href="#trace=${esc(t.trace_id)}" data-trace="${esc(t.trace_id)}">trace</a>` : "";
      html += row(t.type, esc(t.state) + link);
    }
    if (!state.tasks.length) html += row("none", "");
    html += "</table>";
  }
  panel.innerHTML = html;
  for (const a of panel.querySelectorAll("a[data-trace]")) a.addEventListener("click", (ev) => { ev.preventDefault(); showTrace(a.dataset.trace); });
}

async function showTrace(id) {
  const sec = document.getElementById("trace");
  try {
    const t = await api("/api/v1/traces/" + encodeURIComponent(id));
    const spans = t.spans || [];
    const start = Math.min(...spans.map((s) => Date.parse(s.start)));
    const end = Math.max(...spans.map((s) => Date.parse(s.end)));
    const total = Math.max(end - start, 0.001);
    const nodes = new Set(spans.map((s) => s.peer_id));
    document.getElementById("trace-title").textContent =
      `trace ${t.trace_id} · ${spans.length} spans · ${nodes.size} nodes` + (t.incomplete ? ` · incomplete: ${t.incomplete.join(", ")}` : "");
    const wf = document.getElementById("waterfall");
    wf.innerHTML = spans.map((s) => {
      const left = ((Date.parse(s.start) - start) / total) * 100, width = ((Date.parse(s.end) - Date.parse(s.start)) / total) * 100;
      return `<div class="span-row"><div class="span-name">${esc(s.node)} · ${esc(s.name)}</div><div class="span-track">` +
        `<div class="span-bar${s.error ? " error" : ""}" style="left:${left}%;width:${width}%" title="${esc(s.error || "")}"></div></div></div>`;
    }).join("");
    sec.hidden = false;
  } catch (e) {
    document.getElementById("error").textContent = "trace " + id + ": " + e.message;
  }
}

// refreshTasks reads a page of this node's task records (the store has no
// index by time: a page of 100 records, shown newest first).
async function refreshTasks() {
  try {
    const page = await api("/api/v1/kv?prefix=tasks/&limit=100");
    const recs = [];
    for (const kv of page.items || []) {
      try { recs.push(JSON.parse(atob(kv.value))); } catch (_) { /* not a record */ }
    }
    recs.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    state.tasks = recs;
  } catch (_) { state.tasks = []; }
}

async function refresh() {
  const errEl = document.getElementById("error");
  try {
    const [net, stats] = await Promise.all([network(), api("/api/v1/stats").catch(() => null)]);
    state.nodes = net.nodes; state.edges = net.edges;
    const self = net.nodes.find((n) => n.self);
    if (self && !state.selected) state.selected = self.id;
    if (stats) {
      const c = stats.counters, p = state.prevStats;
      if (p) {
        const dt = (Date.parse(c.time) - Date.parse(p.time)) / 1000 || 1;
        state.rates = { in: (c.messages_received_total - p.messages_received_total) / dt, out: (c.messages_sent_total - p.messages_sent_total) / dt,
          storage: (c.storage_operations_total - p.storage_operations_total) / dt, storageErrors: (c.storage_errors_total - p.storage_errors_total) / dt };
        if (self) { self.mps = state.rates.in + state.rates.out; }
      }
      state.prevStats = c;
      if (self) { self.memory = self.memory ?? c.resident_memory_bytes; self.tasks = self.tasks ?? c.tasks_running; }
    }
    await refreshTasks();
    document.getElementById("summary").textContent = `${state.nodes.length} nodes · ${state.edges.length} edges · updated ${new Date().toLocaleTimeString()}`;
    errEl.textContent = "";
    draw();
    renderPanel();
    if (!document.body.dataset.firstRenderMs && state.nodes.length) {
      // Time from navigation to the first complete drawing, for measurements.
      document.body.dataset.firstRenderMs = String(Math.round(performance.now()));
      console.log(`p2p-agent-ui first-render-ms ${document.body.dataset.firstRenderMs} nodes ${state.nodes.length} edges ${state.edges.length}`);
    }
  } catch (e) {
    errEl.textContent = e.message;
  }
}

refresh();
setInterval(refresh, 1000);
const m = location.hash.match(/trace=([0-9a-f]{32})/);
if (m) showTrace(m[1]);
