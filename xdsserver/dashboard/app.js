// Trellis dashboard: polls the admin API and draws the mesh. Plain DOM and
// SVG, no dependencies. Text from the server is only ever set as textContent.
"use strict";

const REFRESH_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return e;
}

async function getJSON(path) {
  const resp = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (resp.status === 401) throw new Error("unauthorized: open /dashboard?token=TOKEN with the admin token");
  if (!resp.ok) throw new Error(path + ": " + resp.status + " " + resp.statusText);
  return resp.json();
}

function fmtRate(r) { return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2); }
function fmtPct(f) { return (100 * f).toFixed(f > 0 && f < 0.01 ? 2 : 1) + "%"; }
function fmtMs(ms) { return ms === null || ms === undefined ? "–" : ms >= 100 ? ms.toFixed(0) + " ms" : ms.toFixed(1) + " ms"; }
function ago(t) {
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  return s < 1.5 ? "now" : s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}
function short(id) {
  const m = /^([^.]+)\.([^.]+)\.svc\.cluster\.local$/.exec(id);
  return m ? m[1] + "." + m[2] : id;
}
function edgeClass(e) {
  if (e.rps <= 0) return "idle";
  if (e.errorRate >= 0.05) return "bad";
  if (e.errorRate > 0) return "warn";
  return "ok";
}

// aggregate sums the per-version, per-subset edges of each source and
// destination pair.
function aggregate(edges) {
  const byPair = new Map();
  for (const e of edges) {
    const k = e.source + "\u0000" + e.destination;
    let a = byPair.get(k);
    if (!a) {
      a = { source: e.source, destination: e.destination, rps: 0, requests: 0, errors: 0, latW: 0, latSum: 0, inProgress: 0 };
      byPair.set(k, a);
    }
    a.rps += e.rps;
    a.requests += e.requests;
    a.errors += e.errors;
    a.inProgress += e.inProgress;
    if (e.latencyMs !== null && e.latencyMs !== undefined && e.requests > 0) {
      a.latSum += e.latencyMs * e.requests;
      a.latW += e.requests;
    }
  }
  return [...byPair.values()].map(a => ({
    ...a,
    errorRate: a.requests > 0 ? a.errors / a.requests : 0,
    latencyMs: a.latW > 0 ? a.latSum / a.latW : null,
  }));
}

function drawGraph(graph) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const edges = aggregate(graph.edges);
  const nodes = graph.nodes.filter(n => !n.client || edges.some(e => e.source === n.id));
  document.getElementById("graph-empty").hidden = edges.length > 0;
  document.getElementById("graph-window").textContent =
    "(rates over the last " + graph.windowSeconds + " s; clients report every " + graph.reportIntervalSeconds + " s)";

  // Layers: a node is one column right of its callers'.
  const layer = new Map(nodes.map(n => [n.id, 0]));
  for (let i = 0; i < nodes.length; i++) {
    let changed = false;
    for (const e of edges) {
      if (e.source === e.destination || !layer.has(e.source) || !layer.has(e.destination)) continue;
      const want = Math.min(layer.get(e.source) + 1, nodes.length);
      if (layer.get(e.destination) < want) { layer.set(e.destination, want); changed = true; }
    }
    if (!changed) break;
  }
  // Services nobody calls and that call nobody go to the last column.
  const connected = new Set(edges.flatMap(e => [e.source, e.destination]));
  const maxLayer = Math.max(0, ...layer.values());
  for (const n of nodes) if (!connected.has(n.id)) layer.set(n.id, Math.max(maxLayer, 1));

  const W = 190, H = 48, COL = 430, ROW = 78, PAD = 20; // room for edge labels between columns
  const columns = new Map();
  for (const n of [...nodes].sort((a, b) => a.id.localeCompare(b.id))) {
    const l = layer.get(n.id);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(n);
  }
  const pos = new Map();
  let width = 0, height = 0;
  for (const [l, col] of columns) {
    col.forEach((n, i) => {
      const p = { x: PAD + l * COL, y: PAD + i * ROW };
      pos.set(n.id, p);
      width = Math.max(width, p.x + W + PAD);
      height = Math.max(height, p.y + H + PAD);
    });
  }
  svg.setAttribute("viewBox", "0 0 " + Math.max(width, 400) + " " + Math.max(height + 30, 160));
  svg.style.height = Math.max(height + 30, 160) + "px";

  const defs = el("svg:defs");
  for (const cls of ["ok", "warn", "bad", "idle"]) {
    const color = { ok: "#15803d", warn: "#b45309", bad: "#b91c1c", idle: "#9ca3af" }[cls];
    defs.append(el("svg:marker", { id: "arrow-" + cls, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color })));
  }
  svg.append(defs);

  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.destination);
    if (!a || !b) continue;
    const cls = edgeClass(e);
    let d, lx, ly;
    if (b.x > a.x) {
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
      lx = mx; ly = (y1 + y2) / 2 - 6;
    } else { // same column or backwards: loop below
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y + H, dy = ROW * 0.6;
      d = `M ${x1} ${y1} C ${x1} ${y1 + dy}, ${x2} ${y2 + dy}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2; ly = Math.max(y1, y2) + dy * 0.8;
    }
    const label = fmtRate(e.rps) + " rps · " + fmtPct(e.errorRate) + " err · " + fmtMs(e.latencyMs);
    const g = el("svg:g", {
      class: "edge " + cls, "data-edge": "", "data-source": e.source, "data-destination": e.destination,
      "data-rps": e.rps, "data-error-rate": e.errorRate, "data-latency-ms": e.latencyMs === null ? "" : e.latencyMs,
    },
      el("svg:title", {}, short(e.source) + " → " + short(e.destination) + ": " + label + ", " + e.inProgress + " in flight"),
      el("svg:path", { d, "marker-end": "url(#arrow-" + cls + ")" }),
      el("svg:text", { x: lx, y: ly, "text-anchor": "middle", class: "edge-label" }, label));
    svg.append(g);
  }

  for (const n of nodes) {
    const p = pos.get(n.id);
    const versions = n.versions.length ? n.versions.join(", ") : "";
    const sub = n.client ? "client" : n.endpoints.length + " endpoint" + (n.endpoints.length === 1 ? "" : "s") + (versions ? " · " + versions : "");
    svg.append(el("svg:g", { class: "node" + (n.client ? " client" : ""), "data-node": n.id, transform: `translate(${p.x},${p.y})` },
      el("svg:title", {}, n.id),
      el("svg:rect", { width: W, height: H, rx: 8 }),
      el("svg:text", { x: 10, y: 20 }, short(n.id)),
      el("svg:text", { x: 10, y: 37, class: "sub" }, sub)));
  }

  const tbody = document.querySelector("#edges tbody");
  tbody.replaceChildren(...graph.edges.map(e => {
    const errCls = e.errorRate >= 0.05 ? "rate-bad" : e.errorRate > 0 ? "rate-warn" : "";
    return el("tr", { "data-cluster": e.cluster },
      el("td", {}, short(e.source) + (e.sourceVersion ? " (" + e.sourceVersion + ")" : "")),
      el("td", {}, short(e.destination) + (e.port ? ":" + e.port : "")),
      el("td", {}, e.subset || "–"),
      el("td", {}, fmtRate(e.rps) + " rps"),
      el("td", { class: errCls }, fmtPct(e.errorRate) + " (" + e.errors + "/" + e.requests + ")"),
      el("td", {}, fmtMs(e.latencyMs)),
      el("td", {}, e.inProgress),
      el("td", {}, ago(e.lastReport)));
  }));
}

function drawServices(graph, registry, dump) {
  const byService = new Map();
  for (const r of registry) {
    const id = r.service.includes(".") ? r.service : r.service + "." + r.namespace + ".svc.cluster.local";
    if (!byService.has(id)) byService.set(id, []);
    byService.get(id).push(r);
  }
  const clusters = Object.entries(dump.endpoints || {});
  const tbody = document.querySelector("#services tbody");
  tbody.replaceChildren(...graph.nodes.filter(n => !n.client).map(n => {
    const eps = el("ul", { class: "plain" });
    for (const r of byService.get(n.id) || []) {
      const v = (r.labels && r.labels.version) ? " " + r.labels.version : "";
      eps.append(el("li", {}, r.address + ":" + r.port + v + (r.identity ? " · " + r.identity : "") + (r.locality ? " · " + r.locality : "")));
    }
    for (const [name, addrs] of clusters) {
      const parts = name.split("|");
      if (parts.length === 4 && parts[3] === n.id) {
        eps.append(el("li", { class: "muted" }, "cluster " + name + ": " + addrs.length + " endpoint" + (addrs.length === 1 ? "" : "s")));
      }
    }
    return el("tr", { "data-service": n.id },
      el("td", {}, n.service), el("td", {}, n.namespace || "–"),
      el("td", {}, n.versions.join(", ") || "–"), el("td", {}, eps));
  }));
}

function syncState(ts) {
  if (ts.consecutiveNacks > 0) return "NACKED";
  if (!ts.acks) return "PENDING";
  return "SYNCED";
}

function drawClients(clients) {
  const tbody = document.querySelector("#clients tbody");
  tbody.replaceChildren(...clients.map(c => {
    let state = "SYNCED", lastNack = "";
    const types = [];
    for (const t of Object.keys(c.types || {}).sort()) {
      const ts = c.types[t], st = syncState(ts);
      if (st !== "SYNCED" && state !== "NACKED") state = st;
      if (ts.lastNack) lastNack = t + ": " + ts.lastNack;
      types.push(t + " " + st.toLowerCase() + (ts.ackedVersion ? " v" + ts.ackedVersion : ""));
    }
    return el("tr", { "data-client": c.node },
      el("td", {}, c.node + (c.delta ? " (delta)" : "")),
      el("td", {}, el("span", { class: "state " + state }, state)),
      el("td", {}, ago(c.connected)),
      el("td", {}, types.join(", ")),
      el("td", { class: "muted" }, lastNack));
  }));
}

function drawConfig(dump) {
  const cfg = dump.config;
  document.getElementById("config-state").textContent = cfg.lastLoadValid
    ? "Configuration valid: " + cfg.resources + " resources from " + (cfg.files || []).length + " files" + (cfg.dir ? " in " + cfg.dir : "") + ", build " + cfg.build + "."
    : "Configuration REJECTED — the last good configuration is serving. Errors:";
  document.getElementById("config-state").className = cfg.lastLoadValid ? "" : "rate-bad";
  document.getElementById("config-errors").replaceChildren(...(cfg.lastErrors || []).map(e => el("li", {}, e)));
  document.getElementById("config-warnings").replaceChildren(...(dump.warnings || []).map(w => el("li", {}, "warning: " + w)));
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [graph, registry, clients, dump] = await Promise.all([
      getJSON("/debug/graph"), getJSON("/debug/registry"), getJSON("/debug/clients"), getJSON("/debug/config_dump"),
    ]);
    drawGraph(graph);
    drawServices(graph, registry, dump);
    drawClients(clients);
    drawConfig(dump);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "status";
  } catch (err) {
    status.textContent = String(err.message || err);
    status.className = "status error";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
