// The workbench's graph widget (anywidget ES module). Traits: graph (the compact JSON of
// workbench/plots/graph_data.py), selected (node names; a click sets it, a change from Python highlights and
// centres), highlight (ringed nodes), overlay ({title, colors, legend, values}), multiselect, height,
// collapse_above; info is written back (what was drawn, how long it took).
import { layout, GAP_Y } from "./layout.js";

const NODE_W = 176;
const LINE = 13;
const SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function html(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
function clipLeft(s, n) { s = String(s); return s.length > n ? "…" + s.slice(s.length - n + 1) : s; }

function dark(hex) {
  if (!hex || hex[0] !== "#" || hex.length < 7) return false;
  const r = parseInt(hex.slice(1, 3), 16), g = parseInt(hex.slice(3, 5), 16), b = parseInt(hex.slice(5, 7), 16);
  return 0.299 * r + 0.587 * g + 0.114 * b < 140;
}

// Scope tree: for each node its scope path; groups are scopes holding >= 2 nodes (counting nested ones).
function scopeTree(nodes) {
  const size = new Map(), kids = new Map(), direct = new Map();
  nodes.forEach((nd) => {
    if (!nd.sc) return;
    const parts = nd.sc.split("/");
    let path = "";
    for (let k = 0; k < parts.length; k++) {
      const parent = path;
      path = path ? path + "/" + parts[k] : parts[k];
      size.set(path, (size.get(path) || 0) + 1);
      if (!kids.has(parent)) kids.set(parent, new Set());
      kids.get(parent).add(path);
    }
    direct.set(path, (direct.get(path) || 0) + 1);
  });
  return { size, kids, direct };
}

function ancestors(sc) {
  if (!sc) return [];
  const parts = sc.split("/"), out = [];
  let path = "";
  for (const p of parts) { path = path ? path + "/" + p : p; out.push(path); }
  return out;
}

// Collapse scopes until at most `limit` boxes show: top-level groups collapsed, then expanded biggest-first
// while the count stays under the limit.
function defaultCollapsed(nodes, tree, limit) {
  const collapsed = new Set();
  if (nodes.length <= limit) return collapsed;
  const isGroup = (p) => (tree.size.get(p) || 0) >= 2;
  const unscoped = nodes.filter((n) => !n.sc).length;
  const top = [...(tree.kids.get("") || [])];
  let count = unscoped;
  for (const p of top) { if (isGroup(p)) { collapsed.add(p); count += 1; } else count += tree.size.get(p) || 0; }
  const queue = top.filter(isGroup).sort((a, b) => tree.size.get(b) - tree.size.get(a));
  while (queue.length) {
    const g = queue.shift();
    const children = [...(tree.kids.get(g) || [])];
    let add = tree.direct.get(g) || 0;
    for (const c of children) add += isGroup(c) ? 1 : tree.size.get(c) || 0;
    if (count - 1 + add > limit) continue;
    count += add - 1;
    collapsed.delete(g);
    for (const c of children) if (isGroup(c)) { collapsed.add(c); queue.push(c); }
    queue.sort((a, b) => tree.size.get(b) - tree.size.get(a));
  }
  return collapsed;
}

const CSS = `
.wbg{font:12px/1.25 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;border:1px solid #ddd;position:relative;background:#fff;color:#222;width:100%;box-sizing:border-box;min-width:0}
.wbg-bar{display:flex;gap:6px;align-items:center;padding:4px 6px;border-bottom:1px solid #eee;flex-wrap:wrap}
.wbg-bar input{width:200px;padding:2px 4px;font:inherit}
.wbg-bar button{font:inherit;padding:1px 8px;cursor:pointer}
.wbg-bar select{font:inherit}
.wbg-count,.wbg-info{color:#666}
.wbg-view{position:relative;overflow:hidden;cursor:grab;touch-action:none}
.wbg-view.drag{cursor:grabbing}
.wbg-view svg{display:block;width:100%;height:100%}
.wbg-node rect.box{stroke:#555;stroke-width:1}
.wbg-node rect.ring{fill:none;stroke:none}
.wbg-node{cursor:pointer}
.wbg-node text{pointer-events:none}
.wbg-node .op{font-weight:600;font-size:12px}
.wbg-node .sub{font-size:10px}
.wbg-node.group rect.box{stroke-dasharray:4 2;stroke:#3b4a6b;stroke-width:1.5}
.wbg-node.sel rect.box{stroke:#000;stroke-width:3.5}
.wbg-node.hl rect.ring{stroke:#d50000;stroke-width:3;fill:none}
.wbg-node.match rect.box{stroke:#ff6d00;stroke-width:3}
.wbg-edge{fill:none;stroke:#8a8a8a;stroke-width:1.1}
.wbg-elabel{font-size:9px;fill:#555}
.wbg-frame{fill:rgba(59,74,107,.04);stroke:#9aa5bd;stroke-dasharray:3 3}
.wbg-frame-label{font-size:10px;fill:#3b4a6b;cursor:pointer}
.wbg-legend{position:absolute;right:6px;top:38px;max-width:45%;white-space:nowrap;text-overflow:ellipsis;background:rgba(255,255,255,.92);border:1px solid #ddd;padding:4px 6px;max-height:60%;overflow:auto;font-size:11px}
.wbg-legend.min>div:not(:first-child){display:none}
.wbg-legend>div:first-child{cursor:pointer}
.wbg-legend .sw{display:inline-block;width:10px;height:10px;margin-right:4px;border:1px solid #888;vertical-align:middle}
.wbg-legend .grad{width:120px;height:10px;border:1px solid #888}
.wbg-details{border-top:1px solid #eee;padding:4px 6px;max-height:140px;overflow:auto;font-size:11px}
.wbg-details code{font-size:11px}
`;

function render({ model, el: root }) {
  const style = document.createElement("style");
  style.textContent = CSS;
  root.appendChild(style);
  const wrap = html("div", "wbg", root);
  const bar = html("div", "wbg-bar", wrap);
  const search = html("input", "wbg-search", bar);
  search.placeholder = "search node, tensor or op";
  search.type = "search";
  const count = html("span", "wbg-count", bar);
  const colourBy = html("select", "wbg-colour", bar); // overlays registered from the kernel (trait `overlays`)
  const fitBtn = html("button", "wbg-fit", bar, "fit");
  const expandBtn = html("button", "wbg-expand", bar, "expand all");
  const collapseBtn = html("button", "wbg-collapse", bar, "collapse");
  const info = html("span", "wbg-info", bar);
  const view = html("div", "wbg-view", wrap);
  const svg = el("svg", {}, view);
  const scene = el("g", {}, svg);
  const frameLayer = el("g", {}, scene), edgeLayer = el("g", {}, scene), labelLayer = el("g", {}, scene);
  const nodeLayer = el("g", {}, scene);
  const legend = html("div", "wbg-legend", wrap);
  legend.title = "click the title to fold the legend";
  legend.addEventListener("click", (ev) => { if (ev.target === legend.firstChild) legend.classList.toggle("min"); });
  const details = html("div", "wbg-details", wrap);

  let G = null; // the graph trait
  let tree = null, collapsed = new Set(), nodeIndex = new Map(), tensorsOf = null;
  let units = [], unitOf = null, uedges = [], L = null, drawn = new Map(), drawnEdges = new Map();
  let frames = [];
  let tx = 0, ty = 0, k = 1;
  let matches = [], matchAt = -1;
  let raf = 0, clicking = false, lod = 1; // level of detail: 0 = plain boxes (zoomed far out), 1 = text
  const t0 = performance.now();
  let firstPaint = true;

  const height = () => model.get("height") || 560;
  view.style.height = height() + "px";

  // ---- model -> visible units ------------------------------------------------------------------------
  function setGraph() {
    G = model.get("graph") || { nodes: [], edges: [] };
    G.nodes = G.nodes || []; G.edges = G.edges || [];
    nodeIndex = new Map(G.nodes.map((n, i) => [n.id, i]));
    tree = scopeTree(G.nodes);
    collapsed = defaultCollapsed(G.nodes, tree, model.get("collapse_above") || 400);
    tensorsOf = null;
    const sel = model.get("selected") || [];
    for (const id of sel) expandTo(id);
    rebuild();
  }

  function repOf(i) {
    const nd = G.nodes[i];
    if (nd.sc) for (const a of ancestors(nd.sc)) if (collapsed.has(a)) return "g:" + a;
    return nd.id;
  }

  function boxLines(u) {
    if (u.group) return 3;
    const nd = G.nodes[u.node];
    return 2 + (nd.at && nd.at.length ? 1 : 0) + (nd.w && nd.w.length ? 1 : 0);
  }

  function rebuild() {
    const t = performance.now();
    const idx = new Map();
    units = [];
    unitOf = new Int32Array(G.nodes.length);
    G.nodes.forEach((nd, i) => {
      const r = repOf(i);
      let u = idx.get(r);
      if (u === undefined) {
        u = units.length; idx.set(r, u);
        units.push(r.startsWith("g:") && !nodeIndex.has(r) ? { id: r, group: r.slice(2), members: [] } : { id: r, node: i });
      }
      if (units[u].group !== undefined) units[u].members.push(i);
      unitOf[i] = u;
    });
    for (const u of units) { u.w = NODE_W; u.h = 8 + LINE * boxLines(u); }
    const seen = new Map();
    uedges = [];
    for (const e of G.edges) {
      const s = unitOf[e[0]], d = unitOf[e[1]];
      if (s === d) continue;
      const key = s * 1e7 + d;
      const have = seen.get(key);
      if (have !== undefined) { uedges[have].n += 1; continue; }
      seen.set(key, uedges.length);
      uedges.push({ s, d, t: e[2], l: e[3], n: 1 });
    }
    L = layout(units, uedges.map((e) => [e.s, e.d]));
    frames = [];
    const open = expandedGroups();
    const below = new Map(); // nested open levels under each open group: outer frames get wider margins
    for (const g of open) {
      const d = g.split("/").length;
      for (const a of ancestors(g)) if (a !== g) below.set(a, Math.max(below.get(a) || 0, d - a.split("/").length));
    }
    for (const g of open) {
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (let i = 0; i < G.nodes.length; i++) {
        const nd = G.nodes[i];
        if (!nd.sc || !(nd.sc === g || nd.sc.startsWith(g + "/"))) continue;
        const u = unitOf[i];
        x0 = Math.min(x0, L.xs[u] - units[u].w / 2); x1 = Math.max(x1, L.xs[u] + units[u].w / 2);
        y0 = Math.min(y0, L.ys[u] - units[u].h / 2); y1 = Math.max(y1, L.ys[u] + units[u].h / 2);
      }
      if (isFinite(x0)) {
        const m = below.get(g) || 0;
        frames.push({ g, x0: x0 - 6 - 5 * m, y0: y0 - 15 - 13 * m, x1: x1 + 6 + 5 * m, y1: y1 + 5 + 4 * m });
      }
    }
    clearDrawn();
    const ms = performance.now() - t;
    info.textContent = `${units.length} boxes · ${G.nodes.length} nodes` + (collapsed.size ? ` · ${collapsed.size} groups collapsed` : "")
      + (G.counts && G.counts.folded ? ` · ${G.counts.folded} Constant nodes folded` : "");
    info.dataset.layoutMs = ms.toFixed(1);
    info.dataset.engine = L.engine;
  }

  function expandedGroups() {
    if (!tree) return [];
    const out = [];
    for (const [p, n] of tree.size) {
      if (n < 2) continue;
      if (ancestors(p).some((a) => collapsed.has(a))) continue;
      out.push(p);
    }
    return out;
  }

  function expandTo(id) {
    const i = nodeIndex.get(id);
    if (i === undefined) return false;
    let changed = false;
    for (const a of ancestors(G.nodes[i].sc)) if (collapsed.delete(a)) changed = true;
    return changed;
  }

  // ---- drawing ----------------------------------------------------------------------------------------
  function clearDrawn() {
    drawn.clear(); drawnEdges.clear();
    nodeLayer.textContent = ""; edgeLayer.textContent = ""; labelLayer.textContent = ""; frameLayer.textContent = "";
  }

  function fillOf(u) {
    const ov = model.get("overlay");
    if (u.group !== undefined) {
      if (ov && ov.colors) return "#e8ebf2";
      return "#e8ebf2";
    }
    const nd = G.nodes[u.node];
    if (ov && ov.colors) return ov.colors[nd.id] || "#eeeeee";
    return (G.colors && G.colors[nd.op]) || "#dddddd";
  }

  function groupSummary(u) {
    const ops = new Map();
    for (const i of u.members) ops.set(G.nodes[i].op, (ops.get(G.nodes[i].op) || 0) + 1);
    return [...ops].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([o, c]) => `${o}×${c}`).join(" ");
  }

  function drawNode(ui) {
    const u = units[ui];
    const x = L.xs[ui] - u.w / 2, y = L.ys[ui] - u.h / 2;
    const g = el("g", { class: "wbg-node" + (u.group !== undefined ? " group" : ""), transform: `translate(${x},${y})` });
    g.dataset.id = u.id;
    const fill = fillOf(u);
    if (!lod && u.group === undefined) { // far out: a plain box is all that can be seen (groups keep their label)
      el("rect", { class: "box", width: u.w, height: u.h, rx: 4, fill }, g);
      styleNode(g, u);
      nodeLayer.appendChild(g);
      return g;
    }
    el("rect", { class: "ring", x: -4, y: -4, width: u.w + 8, height: u.h + 8, rx: 7 }, g);
    const box = el("rect", { class: "box", width: u.w, height: u.h, rx: 4, fill }, g);
    const fg = dark(fill) ? "#fff" : "#111";
    const lines = [];
    if (u.group !== undefined) {
      const name = u.group.split("/").pop();
      lines.push(["op", "▸ " + clip(name, 24)]);
      lines.push(["sub", `${u.members.length} nodes (click to expand)`]);
      lines.push(["sub", clip(groupSummary(u), 34)]);
    } else {
      const nd = G.nodes[u.node];
      const ov = model.get("overlay");
      let title = nd.op;
      if (ov && ov.values && ov.values[nd.id] !== undefined) title += "  " + ov.values[nd.id];
      lines.push(["op", clip(title, 26)]);
      lines.push(["sub", clipLeft(nd.id.replace(/^\//, ""), 34)]);
      if (nd.at && nd.at.length) lines.push(["sub", clip(nd.at.map((a) => a[0] + " " + a[1]).join("  "), 36)]);
      if (nd.w && nd.w.length) lines.push(["sub", clip("◆ " + nd.w.map((w) => w[1]).join(", "), 36)]);
      const tip = el("title", {}, g);
      tip.textContent = `${nd.op} ${nd.id}` + (nd.w ? `\nweights: ${nd.w.map((w) => w[0] + " " + w[1] + " " + w[2]).join("; ")}` : "");
    }
    lines.forEach(([cls, text], k) => {
      const t = el("text", { class: cls, x: 6, y: 16 + k * LINE, fill: fg }, g);
      t.textContent = text;
    });
    box.dataset.box = "1";
    styleNode(g, u);
    nodeLayer.appendChild(g);
    return g;
  }

  function styleNode(g, u) {
    const sel = new Set(model.get("selected") || []), hl = new Set(model.get("highlight") || []);
    const ids = u.group !== undefined ? u.members.map((i) => G.nodes[i].id) : [u.id];
    g.classList.toggle("sel", ids.some((i) => sel.has(i)));
    g.classList.toggle("hl", ids.some((i) => hl.has(i)));
    g.classList.toggle("match", matches.length > 0 && matchAt >= 0 && unitOf[matches[matchAt]] === units.indexOf(u));
  }

  function edgePath(e, k2) {
    const p = L.paths && L.paths[k2];
    if (p && p.length >= 2) {
      let d = `M${p[0][0]},${p[0][1]}`;
      for (let i = 1; i < p.length; i++) d += `L${p[i][0]},${p[i][1]}`;
      const m = p[Math.floor(p.length / 2)];
      return { d, mx: m[0], my: m[1] };
    }
    const x0 = L.xs[e.s], y0 = L.ys[e.s] + units[e.s].h / 2, x1 = L.xs[e.d], y1 = L.ys[e.d] - units[e.d].h / 2;
    if (y1 - y0 > 2.5 * GAP_Y + 40 && Math.abs(x1 - x0) < NODE_W) { // a long edge goes around the boxes it skips
      const xr = Math.max(x0, x1) + NODE_W / 2 + 12, a = y0 + GAP_Y / 2, b = y1 - GAP_Y / 2;
      return { d: `M${x0},${y0}Q${x0},${a} ${xr},${a}L${xr},${b}Q${x1},${b} ${x1},${y1}`, mx: xr, my: (a + b) / 2 };
    }
    const c = Math.max(20, (y1 - y0) / 2);
    return { d: `M${x0},${y0}C${x0},${y0 + c} ${x1},${y1 - c} ${x1},${y1}`, mx: (x0 + x1) / 2, my: (y0 + y1) / 2 };
  }

  function paint() {
    raf = 0;
    if (!L) return;
    const W = view.clientWidth || 800, H = view.clientHeight || height();
    scene.setAttribute("transform", `translate(${tx},${ty}) scale(${k})`);
    const pad = 200 / k;
    const vx0 = -tx / k - pad, vy0 = -ty / k - pad, vx1 = (W - tx) / k + pad, vy1 = (H - ty) / k + pad;
    const inView = (ui) => {
      const u = units[ui];
      return L.xs[ui] + u.w / 2 >= vx0 && L.xs[ui] - u.w / 2 <= vx1 && L.ys[ui] + u.h / 2 >= vy0 && L.ys[ui] - u.h / 2 <= vy1;
    };
    const want = new Set();
    const detail = k < 0.3 ? 0 : 1;
    if (detail !== lod) { lod = detail; for (const g of drawn.values()) g.remove(); drawn.clear(); }
    for (let ui = 0; ui < units.length; ui++) if (inView(ui)) want.add(ui);
    for (const [ui, g] of drawn) if (!want.has(ui)) { g.remove(); drawn.delete(ui); }
    for (const ui of want) if (!drawn.has(ui)) drawn.set(ui, drawNode(ui));
    const labels = k >= 0.6;
    for (let j = 0; j < uedges.length; j++) {
      const e = uedges[j];
      const ex0 = Math.min(L.xs[e.s], L.xs[e.d]), ex1 = Math.max(L.xs[e.s], L.xs[e.d]);
      const ey0 = Math.min(L.ys[e.s], L.ys[e.d]), ey1 = Math.max(L.ys[e.s], L.ys[e.d]);
      const vis = ex1 >= vx0 && ex0 <= vx1 && ey1 >= vy0 && ey0 <= vy1;
      let de = drawnEdges.get(j);
      if (!vis) { if (de) { de.p.remove(); if (de.t) de.t.remove(); drawnEdges.delete(j); } continue; }
      if (!de) {
        const { d, mx, my } = edgePath(e, j);
        const p = el("path", { class: "wbg-edge", d, "marker-end": "url(#wbg-arrow)" }, edgeLayer);
        de = { p, mx, my, t: null };
        drawnEdges.set(j, de);
      }
      if (labels && !de.t && (e.l || e.n > 1)) {
        de.t = el("text", { class: "wbg-elabel", x: de.mx + 4, y: de.my + 3 }, labelLayer);
        de.t.textContent = clip(e.l + (e.n > 1 ? ` (${e.n} tensors)` : ""), 40);
        de.t.dataset.tensor = e.t;
      } else if (!labels && de.t) { de.t.remove(); de.t = null; }
    }
    if (frameLayer.childNodes.length !== frames.length) {
      frameLayer.textContent = "";
      for (const f of frames) {
        el("rect", { class: "wbg-frame", x: f.x0, y: f.y0, width: f.x1 - f.x0, height: f.y1 - f.y0, rx: 6 }, frameLayer);
      }
      for (const f of frames) {
        const t = el("text", { class: "wbg-frame-label", x: f.x0 + 4, y: f.y0 + 11 }, frameLayer);
        t.textContent = "▾ " + clip(f.g.split("/").pop(), 30);
        t.dataset.group = f.g;
      }
    }
    if (firstPaint) {
      firstPaint = false;
      requestAnimationFrame(() => {
        const ms = performance.now() - t0;
        wrap.dataset.firstPaintMs = ms.toFixed(1);
        report({ first_paint_ms: +ms.toFixed(1) });
      });
    } else report();
  }

  let reportTimer = 0, pending = {};
  function report(extra) {
    Object.assign(pending, extra || {});
    wrap.dataset.boxes = String(drawn.size);
    if (reportTimer) return;
    reportTimer = setTimeout(() => {
      reportTimer = 0;
      const prev = model.get("info") || {};
      const next = { ...prev, ...pending, boxes: drawn.size, units: units.length, nodes: G ? G.nodes.length : 0,
        collapsed: collapsed.size, engine: L ? L.engine : "", layout_ms: +(info.dataset.layoutMs || 0) };
      pending = {};
      // only what changed goes to the kernel (panning and zooming alone send nothing)
      const same = Object.keys(next).every((key) => key === "layout_ms" || prev[key] === next[key]);
      if (same) return;
      try { model.set("info", next); model.save_changes(); } catch (err) { /* a closed comm */ }
    }, 150);
  }

  function schedule() { if (!raf) raf = requestAnimationFrame(paint); }
  function paintNow() { if (raf) { cancelAnimationFrame(raf); raf = 0; } paint(); }

  // ---- view -------------------------------------------------------------------------------------------
  function fit(all) {
    if (!L) return;
    const W = view.clientWidth || 800, H = view.clientHeight || height();
    const sx = (W - 20) / Math.max(1, L.width), sy = (H - 20) / Math.max(1, L.height);
    k = Math.min(1.2, Math.min(sx, sy));
    if (!all && k < 0.45) { // a tall graph opens readable, on its top
      k = Math.min(1, Math.max(0.45, sx));
      tx = Math.max(10, (W - L.width * k) / 2); ty = 10;
    } else {
      tx = (W - L.width * k) / 2; ty = (H - L.height * k) / 2;
    }
    schedule();
  }

  function centreOn(ui, zoomIn) {
    const W = view.clientWidth || 800, H = view.clientHeight || height();
    if (zoomIn && k < 0.6) k = 0.8;
    tx = W / 2 - L.xs[ui] * k; ty = H / 2 - L.ys[ui] * k;
  }

  function restyle() { for (const [ui, g] of drawn) styleNode(g, units[ui]); }
  function recolour() { // fills and titles change: redraw the drawn boxes
    for (const [ui, g] of drawn) { g.remove(); drawn.set(ui, drawNode(ui)); }
    showLegend();
  }

  function showColourChoices() {
    const names = Object.keys(model.get("overlays") || {});
    colourBy.style.display = names.length ? "" : "none";
    colourBy.textContent = "";
    const ov = model.get("overlay") || {};
    for (const name of ["op type", ...names]) {
      const o = html("option", "", colourBy, "colour: " + name);
      o.value = name;
    }
    colourBy.value = ov.colors && names.includes(ov.title) ? ov.title : ov.colors ? "" : "op type";
  }
  colourBy.addEventListener("change", () => {
    const ovs = model.get("overlays") || {};
    model.set("overlay", colourBy.value === "op type" ? {} : ovs[colourBy.value] || {});
    model.save_changes();
    recolour();
  });

  function showLegend() {
    legend.textContent = "";
    const ov = model.get("overlay");
    if (ov && ov.colors) {
      html("div", "", legend, ov.title || "overlay").style.fontWeight = "600";
      if (ov.kind === "numeric" && ov.legend && ov.legend.length) {
        const gd = html("div", "grad", legend);
        gd.style.background = `linear-gradient(to right, ${ov.legend.map((x) => x[1]).join(",")})`;
        const row = html("div", "", legend);
        row.style.display = "flex"; row.style.justifyContent = "space-between"; row.style.width = "120px";
        ov.legend.forEach((x) => html("span", "", row, x[0]));
      } else for (const [lab, c] of ov.legend || []) {
        const r = html("div", "", legend); const sw = html("span", "sw", r); sw.style.background = c;
        html("span", "", r, lab);
      }
      const none = html("div", "", legend); const sw = html("span", "sw", none); sw.style.background = "#eeeeee";
      html("span", "", none, "no value");
      return;
    }
    const ops = new Map();
    for (const nd of G.nodes) ops.set(nd.op, (ops.get(nd.op) || 0) + 1);
    html("div", "", legend, "op type").style.fontWeight = "600";
    [...ops].sort((a, b) => b[1] - a[1]).slice(0, 24).forEach(([op, n]) => {
      const r = html("div", "", legend); const sw = html("span", "sw", r);
      sw.style.background = (G.colors && G.colors[op]) || "#ddd";
      html("span", "", r, `${op} ${n}`);
    });
  }

  function showDetails() {
    const sel = model.get("selected") || [];
    const i = sel.length ? nodeIndex.get(sel[0]) : undefined;
    details.textContent = "";
    if (i === undefined) { details.style.display = "none"; return; }
    details.style.display = "";
    const nd = G.nodes[i];
    const head = html("div", "", details); html("b", "", head, nd.op + " "); html("code", "", head, nd.id);
    if (nd.sc) html("div", "", details, "scope: " + nd.sc);
    if (nd.at && nd.at.length) html("div", "", details, "attributes: " + nd.at.map((a) => a[0] + "=" + a[1]).join(", "));
    if (nd.w && nd.w.length) {
      html("div", "", details, "weights:");
      const ul = html("ul", "", details);
      for (const w of nd.w) html("li", "", ul, `${w[0]}  ${w[1]} ${w[2]}`);
    }
    const ins = G.edges.filter((e) => e[1] === i).map((e) => `${e[2]} ${e[3]}`);
    const outs = G.edges.filter((e) => e[0] === i).map((e) => `${e[2]} ${e[3]}`);
    if (ins.length) html("div", "", details, "in: " + [...new Set(ins)].join("; "));
    if (outs.length) html("div", "", details, "out: " + [...new Set(outs)].join("; "));
    const ov = model.get("overlay");
    if (ov && ov.values && ov.values[nd.id] !== undefined) html("div", "", details, `${ov.title || "value"}: ${ov.values[nd.id]}`);
  }

  function onSelected() {
    const sel = model.get("selected") || [];
    let relaid = false;
    for (const id of sel) if (expandTo(id)) relaid = true;
    if (relaid) rebuild();
    restyle();
    showDetails();
    const i = sel.length ? nodeIndex.get(sel[sel.length - 1]) : undefined;
    if (i !== undefined && !clicking) centreOn(unitOf[i], true);
    paintNow();
  }

  // ---- search -----------------------------------------------------------------------------------------
  function runSearch(step) {
    const q = search.value.trim().toLowerCase();
    if (!q) { matches = []; matchAt = -1; count.textContent = ""; restyle(); return; }
    if (!tensorsOf) { // node -> names of the tensors it writes and of its folded weights
      tensorsOf = G.nodes.map(() => []);
      for (const e of G.edges) tensorsOf[e[0]].push(e[2].toLowerCase());
      G.nodes.forEach((nd, i) => { if (nd.w) for (const w of nd.w) tensorsOf[i].push(w[0].toLowerCase()); });
    }
    const hits = [];
    G.nodes.forEach((nd, i) => {
      if (nd.id.toLowerCase().includes(q) || nd.op.toLowerCase() === q || nd.op.toLowerCase().includes(q)
        || tensorsOf[i].some((t) => t.includes(q))) hits.push(i);
    });
    const same = hits.length === matches.length && hits.every((h, j) => h === matches[j]);
    matches = hits;
    matchAt = !hits.length ? -1 : same ? (matchAt + step + hits.length) % hits.length : 0;
    count.textContent = hits.length ? `${matchAt + 1} of ${hits.length}` : "no match";
    count.dataset.matches = String(hits.length);
    if (matchAt >= 0) {
      const id = G.nodes[matches[matchAt]].id;
      if (expandTo(id)) rebuild();
      centreOn(unitOf[matches[matchAt]], true);
    }
    restyle();
    paintNow();
  }
  let searchTimer = 0;
  search.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => runSearch(0), 120); });
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(searchTimer); runSearch(ev.shiftKey ? -1 : 1); }
    ev.stopPropagation(); // keep JupyterLab's shortcuts out of the box
  });

  // ---- interaction ------------------------------------------------------------------------------------
  let drag = null;
  view.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, tx, ty, moved: false };
  });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) { drag.moved = true; view.classList.add("drag"); }
    tx = drag.tx + dx; ty = drag.ty + dy; schedule();
  });
  window.addEventListener("pointerup", (ev) => {
    if (!drag) return;
    const moved = drag.moved; drag = null; view.classList.remove("drag");
    if (!moved) click(ev);
  });
  view.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = view.getBoundingClientRect();
    const mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const f = Math.exp(-ev.deltaY * (ev.ctrlKey ? 0.01 : 0.0015));
    const nk = Math.min(4, Math.max(0.02, k * f));
    tx = mx - ((mx - tx) * nk) / k; ty = my - ((my - ty) * nk) / k; k = nk;
    schedule();
  }, { passive: false });

  function click(ev) {
    const target = document.elementFromPoint(ev.clientX, ev.clientY);
    if (!target || !view.contains(target)) return;
    const frame = target.closest("[data-group]");
    if (frame) { collapsed.add(frame.dataset.group); rebuild(); schedule(); return; }
    const g = target.closest(".wbg-node");
    if (!g) return;
    const id = g.dataset.id;
    if (id.startsWith("g:") && !nodeIndex.has(id)) { // a collapsed group: expand it in place
      const ui = units.findIndex((u) => u.id === id);
      const px = L.xs[ui] * k + tx, py = L.ys[ui] * k + ty;
      collapsed.delete(id.slice(2));
      rebuild();
      const first = units.findIndex((u) => u.node !== undefined && (G.nodes[u.node].sc || "").startsWith(id.slice(2)));
      if (first >= 0) { tx = px - L.xs[first] * k; ty = py - L.ys[first] * k; }
      schedule();
      return;
    }
    let sel = model.get("selected") || [];
    if (model.get("multiselect")) sel = sel.includes(id) ? sel.filter((s) => s !== id) : [...sel, id];
    else sel = [id];
    clicking = true;
    try { model.set("selected", sel); model.save_changes(); } finally { clicking = false; }
    restyle(); showDetails(); schedule();
  }

  fitBtn.addEventListener("click", () => fit(true));
  expandBtn.addEventListener("click", () => { collapsed.clear(); rebuild(); fit(false); });
  collapseBtn.addEventListener("click", () => {
    collapsed = defaultCollapsed(G.nodes, tree, Math.min(model.get("collapse_above") || 400, 60));
    rebuild(); fit(false);
  });

  // arrow marker
  const defs = el("defs", {}, svg);
  const mk = el("marker", { id: "wbg-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0L10,5L0,10z", fill: "#8a8a8a" }, mk);

  model.on("change:graph", () => { setGraph(); showLegend(); showDetails(); fit(false); });
  model.on("change:selected", onSelected);
  model.on("change:highlight", () => { restyle(); schedule(); });
  model.on("change:overlay", () => { recolour(); showColourChoices(); });
  model.on("change:overlays", showColourChoices);
  model.on("change:height", () => { view.style.height = height() + "px"; schedule(); });

  setGraph();
  showColourChoices();
  showLegend();
  showDetails();
  // the view has no size until it is attached: fit once it has one
  const start = () => {
    const sel = model.get("selected") || [];
    const i = sel.length ? nodeIndex.get(sel[sel.length - 1]) : undefined;
    fit(false);
    if (i !== undefined) centreOn(unitOf[i], true);
    paintNow();
  };
  if (view.clientWidth) start();
  else {
    const ro = new ResizeObserver(() => { if (view.clientWidth) { ro.disconnect(); start(); } });
    ro.observe(view);
  }
  return () => { if (raf) cancelAnimationFrame(raf); clearTimeout(reportTimer); };
}

export default { render };
