// The resources tab: per-GPU utilisation, memory, power, temperature; host CPU and RAM.
// History from GET /api/runs/{id}/resources (downsampled, peaks kept), then live samples from the feed.

import { api, errorBox } from "./api.js";
import { append, clear, fmtAxis, fmtBytes, h, plural } from "./dom.js";
import { subscribe } from "./feed.js";
import { multiChart } from "./plot.js";

// [title, metric name, device kind, value format, fixed y range]
const CHARTS = [
  ["GPU utilisation %", "util_pct", "gpu", (v) => `${fmtAxis(v)} %`, [0, 100]],
  ["GPU memory used", "mem_used_bytes", "gpu", fmtBytes, null],
  ["GPU power W", "power_w", "gpu", (v) => `${fmtAxis(v)} W`, null],
  ["GPU temperature °C", "temp_c", "gpu", (v) => `${fmtAxis(v)} °C`, null],
  ["CPU %", "cpu_pct", "host", (v) => `${fmtAxis(v)} %`, [0, 100]],
  ["RAM used", "mem_used_bytes", "host", fmtBytes, null],
  ["process tree RSS", "proc_rss_bytes", "host", fmtBytes, null],
];
const POINTS = 800;
const REDRAW_MS = 1000;

function kindOf(device) {
  return String(device).startsWith("gpu") ? "gpu" : String(device) === "host" ? "host" : "other";
}

export function resourcesView(runId, holder, onLeave) {
  const note = h("p", { class: "muted" }, "Loading resource samples…");
  const gpuGrid = h("div", { class: "charts" });
  const hostGrid = h("div", { class: "charts" });
  const gapNote = h("p", { class: "gap-note", role: "status", hidden: true });
  append(holder, [note, gapNote, h("h2", {}, "GPUs"), gpuGrid, h("h2", {}, "host"), hostGrid]);
  // chart title -> {card, series: Map(label -> [[t, v]])}
  const charts = new Map();
  let dirty = false;

  function add(item) {
    const spec = CHARTS.find(([, name, kind]) => name === item.name && kind === kindOf(item.device));
    if (!spec || typeof item.value !== "number") return;
    const [title, , kind, fmt, range] = spec;
    let chart = charts.get(title);
    if (!chart) {
      const card = multiChart(title, { time: true, fmt, xLabel: "time", yRange: range || undefined });
      card.dataset.resource = `${kind}:${item.name}`;
      chart = { card, series: new Map() };
      charts.set(title, chart);
      (kind === "gpu" ? gpuGrid : hostGrid).appendChild(card);
      onLeave(card.destroy);
    }
    const label = item.node ? `${item.node}/${item.device}` : String(item.device);
    if (!chart.series.has(label)) chart.series.set(label, []);
    chart.series.get(label).push([Date.parse(item.ts) / 1000, item.value]);
    dirty = true;
  }

  function draw() {
    if (!dirty) return;
    dirty = false;
    for (const chart of charts.values()) {
      const labels = [...chart.series.keys()].sort();
      chart.card.set(labels, labels.map((l) => chart.series.get(l)));
    }
    const gpus = [...charts.values()].some((c) => c.card.dataset.resource.startsWith("gpu"));
    if (!gpus && !gpuGrid.firstChild) gpuGrid.appendChild(h("p", { class: "muted empty" }, "No GPU samples (no NVML on the run's machines, or none sampled yet)."));
    else if (gpus) for (const e of gpuGrid.querySelectorAll(".empty")) e.remove();
  }

  let live = [];
  let loaded = false;
  let skipped = 0;
  onLeave(subscribe(runId, "resources", { limit: 0 }, {
    onFrame(frame) {
      if (frame.type === "history") return;
      if (frame.coalesced) {
        // The feed kept only the newest sample per series while this tab was behind: say so.
        skipped += frame.coalesced;
        note.dataset.skipped = String(skipped);
        note.textContent = `${note.textContent.split(" · ")[0]} · live · ${plural(skipped, "sample")} skipped while this tab was behind`;
      }
      if (!loaded) { live = live.concat(frame.items); return; }
      for (const item of frame.items) add(item);
    },
    onGap() {
      // Storage was behind when this view subscribed: samples between stored and live may be missing.
      append(clear(gapNote), ["Some samples between stored and live may be missing (storage was behind). ",
        h("button", { type: "button", class: "reload", onclick: () => location.reload() }, "reload")]);
      gapNote.hidden = false;
    },
  }));
  const timer = setInterval(draw, REDRAW_MS);
  onLeave(() => clearInterval(timer));

  api(`/api/runs/${encodeURIComponent(runId)}/resources`, { points: POINTS }).then((body) => {
    const series = body.series || [];
    for (const s of series) {
      for (const [ts, value] of s.points) add({ ts, value, name: s.name, device: s.device, node: s.node });
    }
    loaded = true;
    const last = Math.max(0, ...series.flatMap((s) => s.points.map((p) => Date.parse(p[0]))));
    for (const item of live.splice(0)) if (Date.parse(item.ts) > last) add(item);
    note.textContent = series.length ? `${series.length} sampled series · live` : "No resource samples yet; they appear here as the run samples them.";
    if (skipped) note.textContent += ` · ${plural(skipped, "sample")} skipped while this tab was behind`;
    draw();
  }, (err) => {
    loaded = true;
    if (err.status === 404) note.textContent = "Nothing of this run is stored yet.";
    else note.replaceWith(errorBox(err));
    draw();
  });
}
