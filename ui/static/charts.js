// Metric charts that update live: uPlot (from npm, served from node_modules) when loaded,
// else the small canvas chart in chart.js. Points from the API are [step, value]; non-finite
// values arrive as strings ("NaN", "Infinity") and are left out of the line.

import { api, errorBox } from "./api.js";
import { drawChart } from "./chart.js";
import { fmtAxis, fmtNum, h } from "./dom.js";

export const chartOptions = { smoothing: 0, log: false };

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// Exponential moving average of the finite values (what "smoothing" means in most trackers).
function smooth(values, weight) {
  if (!weight) return null;
  const out = new Array(values.length);
  let last = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null) { out[i] = null; continue; }
    last = last === null ? v : last * weight + (1 - weight) * v;
    out[i] = last;
  }
  return out;
}

function finite(v, log) {
  if (typeof v !== "number" || !Number.isFinite(v)) return null;
  return log && v <= 0 ? null : v;
}

export function chartCard(runId, name, onLeave) {
  const holder = h("div", { class: "plot" });
  const info = h("span", { class: "muted" });
  const readout = h("div", { class: "readout muted" }, " ");
  const card = h("figure", { class: "card", "data-metric": name },
    h("figcaption", {}, h("span", { class: "metric" }, name), info), holder, readout);
  let points = null;
  let total = 0;
  let downsampled = false;
  let plot = null;
  let canvas = null;
  const early = [];

  function caption() {
    const last = points.length ? points[points.length - 1][1] : null;
    info.textContent = ` last ${fmtNum(last)} · ${total} points` + (downsampled ? ` (showing ${points.length})` : "");
  }

  function draw() {
    if (!points) return;
    caption();
    if (!window.uPlot) {
      if (!canvas) {
        canvas = h("canvas", { class: "chart", height: "160" });
        holder.appendChild(canvas);
        canvas.addEventListener("mousemove", (event) => {
          const p = canvas.chartFrame && canvas.chartFrame.nearest(event.offsetX);
          readout.textContent = p ? `step ${p[0]}: ${fmtNum(p[1])}` : " ";
        });
      }
      drawChart(canvas, points);
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => finite(p[1], chartOptions.log));
    const smoothed = smooth(ys, chartOptions.smoothing);
    const data = smoothed ? [xs, ys, smoothed] : [xs, ys];
    const shape = `${Boolean(smoothed)}/${chartOptions.log}`;
    if (plot && plot.shape === shape) {
      plot.setData(data);
      return;
    }
    if (plot) plot.destroy();
    const accent = cssVar("--accent"), muted = cssVar("--muted"), grid = cssVar("--grid");
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const series = [{ label: "step" },
      { label: name, stroke: smoothed ? `${accent}55` : accent, width: 1.5, spanGaps: false,
        points: { show: xs.length <= 60 } }];
    if (smoothed) series.push({ label: "smoothed", stroke: accent, width: 1.5 });
    plot = new window.uPlot({
      width: Math.max(200, holder.clientWidth || 380), height: 160, legend: { show: false },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false }, y: { distr: chartOptions.log ? 3 : 1 } },
      axes: [{ ...axis }, { ...axis, size: 56, values: (u, vals) => vals.map(fmtAxis) }],
      series,
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          readout.textContent = i === null || i === undefined ? " " : `step ${xs[i]}: ${fmtNum(points[i][1])}`;
        }],
      },
    }, data, holder);
    plot.shape = shape;
  }

  // A live point: appended in step order; a point at a step already drawn replaces it.
  card.addPoint = function (step, value) {
    if (!points) {
      early.push([step, value]);
      return;
    }
    let i = points.length;
    while (i > 0 && points[i - 1][0] > step) i--;
    if (i > 0 && points[i - 1][0] === step) points[i - 1] = [step, value];
    else {
      points.splice(i, 0, [step, value]);
      total += 1;
    }
    draw();
  };

  card.redraw = () => { if (plot) { plot.destroy(); plot = null; } draw(); };

  card.load = async function () {
    const width = Math.max(3, Math.min(10000, Math.round((holder.clientWidth || 400) * (window.devicePixelRatio || 1))));
    let series;
    try {
      series = await api(`/api/runs/${encodeURIComponent(runId)}/metrics`, { name, points: width });
    } catch (err) {
      // 404: nothing of this run is stored yet (its first points are still on their way): start empty.
      if (err.status !== 404) {
        holder.appendChild(errorBox(err));
        return;
      }
      series = { points: [], total: 0 };
    }
    points = series.points || [];
    total = series.total ?? points.length;
    downsampled = Boolean(series.downsampled);
    draw();
    for (const [step, value] of early.splice(0)) card.addPoint(step, value);
  };

  const resize = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(200, holder.clientWidth), height: 160 });
    else if (canvas && points) drawChart(canvas, points);
  });
  resize.observe(holder);
  onLeave(() => { resize.disconnect(); if (plot) plot.destroy(); });
  return card;
}
