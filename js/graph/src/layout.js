// Graph layout for the widget: dagre (from npm) for views up to DAGRE_MAX boxes, and a linear-time layered
// layout for bigger ones (dagre takes ~0.6 s on 300 nodes here and overflows its stack near 5,000; elkjs
// is slower still: js/graph/bench/layout_bench.mjs). Both return {x, y} centres per unit and edge paths.
import dagre from "@dagrejs/dagre";

export const DAGRE_MAX = 300;
export const GAP_X = 28;
export const GAP_Y = 44; // room for an edge label between layers

// units: [{w, h}], edges: [[src, dst], ...] (indices). Returns {xs, ys, paths: [[x,y]...] per edge, width, height, engine}
export function layout(units, edges) {
  if (units.length <= DAGRE_MAX) return dagreLayout(units, edges);
  return layeredLayout(units, edges);
}

function dagreLayout(units, edges) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "TB", nodesep: GAP_X, ranksep: GAP_Y, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  units.forEach((u, i) => g.setNode(String(i), { width: u.w, height: u.h }));
  edges.forEach(([s, d], k) => g.setEdge(String(s), String(d), {}, "e" + k));
  dagre.layout(g);
  const xs = new Float64Array(units.length), ys = new Float64Array(units.length);
  units.forEach((_, i) => { const n = g.node(String(i)); xs[i] = n.x; ys[i] = n.y; });
  const paths = edges.map(([s, d], k) => {
    const e = g.edge({ v: String(s), w: String(d), name: "e" + k });
    return e && e.points ? e.points.map((p) => [p.x, p.y]) : null;
  });
  const gr = g.graph();
  return { xs, ys, paths, width: gr.width || 0, height: gr.height || 0, engine: "dagre" };
}

// Longest-path layers (sources pulled down to just above their first consumer), barycentric ordering sweeps,
// then each node placed near the mean x of its predecessors: O((V + E) * sweeps + V log V).
export function layeredLayout(units, edges, sweeps = 4) {
  const n = units.length;
  const preds = Array.from({ length: n }, () => []), succs = Array.from({ length: n }, () => []);
  for (const [s, d] of edges) {
    if (s === d || s < 0 || d < 0 || s >= n || d >= n) continue;
    preds[d].push(s); succs[s].push(d);
  }
  const indeg = preds.map((p) => p.length);
  const order = [];
  for (let i = 0; i < n; i++) if (indeg[i] === 0) order.push(i);
  for (let h = 0; h < order.length; h++) for (const j of succs[order[h]]) if (--indeg[j] === 0) order.push(j);
  if (order.length < n) { const seen = new Uint8Array(n); order.forEach((v) => (seen[v] = 1)); for (let i = 0; i < n; i++) if (!seen[i]) order.push(i); }
  const rank = new Int32Array(n); order.forEach((v, k) => (rank[v] = k));
  const layer = new Int32Array(n);
  for (const v of order) { let l = 0; for (const p of preds[v]) if (rank[p] < rank[v] && layer[p] + 1 > l) l = layer[p] + 1; layer[v] = l; }
  const P = preds.map((ps, v) => ps.filter((p) => layer[p] < layer[v]));
  for (const v of order) {
    if (P[v].length) continue;
    let m = Infinity; for (const s of succs[v]) if (rank[s] > rank[v] && layer[s] < m) m = layer[s];
    if (m !== Infinity && m - 1 > layer[v]) layer[v] = m - 1;
  }
  const S = succs.map((ss, v) => ss.filter((s) => layer[s] > layer[v]));
  const P2 = preds.map((ps, v) => ps.filter((p) => layer[p] < layer[v]));
  let maxL = 0; for (let i = 0; i < n; i++) if (layer[i] > maxL) maxL = layer[i];
  const layers = Array.from({ length: n ? maxL + 1 : 0 }, () => []);
  for (const v of order) layers[layer[v]].push(v);
  const x = new Float64Array(n);
  const centre = (row) => { const half = (row.length - 1) / 2; row.forEach((v, k) => (x[v] = k - half)); };
  const bary = (v, nb) => { const ns = nb[v]; if (!ns.length) return x[v]; let s = 0; for (const q of ns) s += x[q]; return s / ns.length; };
  layers.forEach(centre);
  for (let sw = 0; sw < sweeps; sw++) {
    const down = sw % 2 === 0;
    const rows = down ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const row of rows) {
      if (row.length < 2) continue;
      const key = new Map(row.map((v) => [v, bary(v, down ? P2 : S)]));
      row.sort((a, b) => key.get(a) - key.get(b)); centre(row);
    }
  }
  for (const row of layers) {
    const want = new Map(row.map((v) => [v, bary(v, P2)]));
    row.sort((a, b) => want.get(a) - want.get(b));
    const pos = [];
    for (const v of row) { const w = want.get(v); pos.push(pos.length ? Math.max(w, pos[pos.length - 1] + 1) : w); }
    let shift = 0; row.forEach((v, k) => (shift += want.get(v) - pos[k])); shift = row.length ? shift / row.length : 0;
    row.forEach((v, k) => (x[v] = pos[k] + shift));
  }
  let W = 0; for (const u of units) if (u.w > W) W = u.w;
  const colW = W + GAP_X;
  const xs = new Float64Array(n), ys = new Float64Array(n);
  let minX = Infinity, maxX = -Infinity;
  for (let i = 0; i < n; i++) { xs[i] = x[i] * colW; if (xs[i] < minX) minX = xs[i]; if (xs[i] > maxX) maxX = xs[i]; }
  const off = (isFinite(minX) ? -minX : 0) + W / 2 + 10;
  let y = 10;
  for (const row of layers) {
    let h = 0; for (const v of row) if (units[v].h > h) h = units[v].h;
    for (const v of row) { xs[v] += off; ys[v] = y + h / 2; }
    y += h + GAP_Y;
  }
  return { xs, ys, paths: null, width: (isFinite(maxX) ? maxX - minX : 0) + W + 20, height: y, engine: "layered" };
}
