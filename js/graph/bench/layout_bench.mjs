// Measures dagre and elkjs (layered) on a generated 5,000-node DAG (1,000 swish-like blocks of 5 nodes).
import dagre from "@dagrejs/dagre";
import ELK from "elkjs/lib/elk.bundled.js";

function big(blocks) {
  const nodes = [], edges = [];
  let x = "input"; nodes.push(x);
  for (let b = 0; b < blocks; b++) {
    for (const n of ["a", "s", "m", "n", "o"]) nodes.push(n + b);
    edges.push([x, "a" + b], ["a" + b, "s" + b], ["a" + b, "m" + b], ["s" + b, "m" + b], [x, "n" + b], ["m" + b, "o" + b], ["n" + b, "o" + b]);
    x = "o" + b;
  }
  return { nodes, edges };
}
const N = +(process.argv[2] || 1000);
const g0 = big(N);
let t = performance.now();
const g = new dagre.graphlib.Graph({ multigraph: false });
g.setGraph({ rankdir: "TB", nodesep: 20, ranksep: 30 });
g.setDefaultEdgeLabel(() => ({}));
for (const n of g0.nodes) g.setNode(n, { width: 160, height: 44 });
for (const [s, d] of g0.edges) g.setEdge(s, d);
dagre.layout(g);
console.log(`dagre ${g0.nodes.length} nodes: ${(performance.now() - t).toFixed(0)} ms`);
t = performance.now();
const elk = new ELK();
const res = await elk.layout({ id: "root", layoutOptions: { "elk.algorithm": "layered", "elk.direction": "DOWN" },
  children: g0.nodes.map((id) => ({ id, width: 160, height: 44 })),
  edges: g0.edges.map(([s, d], i) => ({ id: "e" + i, sources: [s], targets: [d] })) });
console.log(`elk layered ${g0.nodes.length} nodes: ${(performance.now() - t).toFixed(0)} ms`);
