// Multi-series line charts (uPlot, from npm) for resources, comparisons and PR curves.
// Series are given as [[x, y], ...] each; they are joined on x (a value missing in one series is
// a gap, spanned). Data is only ever drawn or put on the page as text.

import { fmtAxis, h } from "./dom.js";

export const PALETTE = ["#5fa8ff", "#f0a35e", "#4cc38a", "#c678dd", "#f0616d", "#56b6c2", "#e6b450", "#9aa5ff",
  "#ff8fb1", "#a3d977"];

//: Least width of a y axis, and the room left beside its widest label.
const MIN_Y_AXIS_PX = 40;
const AXIS_PAD_PX = 4;

// A uPlot axis `size`: as wide as its widest tick label (a fixed width cut "55.9 GiB" or "-1.5e+6").
export function fitAxisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size; // uPlot asks again after a resize: settle on the last width
  let widest = 0;
  if (values && values.length) {
    u.ctx.font = axis.font[0];
    for (const v of values) widest = Math.max(widest, u.ctx.measureText(String(v)).width);
  }
  const ratio = window.devicePixelRatio || 1;
  return Math.max(MIN_Y_AXIS_PX, Math.ceil((axis.ticks.size || 0) + (axis.gap || 0) + widest / ratio + AXIS_PAD_PX));
}

//: Most decimals an axis asks its formatter for while tick labels still repeat ("1.3 GiB" four times).
const MAX_AXIS_DIGITS = 4;

// Tick labels, with more decimals (a formatter's second argument) until no two ticks read the same.
export function distinctLabels(values, fmt) {
  let labels = values.map((v) => (v === null || v === undefined ? "" : fmt(v)));
  for (let digits = 2; digits <= MAX_AXIS_DIGITS; digits++) {
    const shown = labels.filter(Boolean);
    if (new Set(shown).size === shown.length) break;
    labels = values.map((v) => (v === null || v === undefined ? "" : fmt(v, digits)));
  }
  return labels;
}

// A uPlot x-scale range that stays around a lone x (one sample) instead of spanning years: uPlot
// widens a single time to min + 86400 / ms, which for a scale in seconds is 86.4 million seconds.
export function xRange(time) {
  const pad = time ? 30 : 1; // seconds either side on a time axis, one step otherwise
  return (u, min, max) => {
    const xs = u && u.data && u.data[0];
    const lone = xs && xs.length ? (xs[0] === xs[xs.length - 1] ? xs[0] : null) : (min === max ? min : null);
    return lone === null || lone === undefined ? [min, max] : [lone - pad, lone + pad];
  };
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// [[x, y], ...] per series -> uPlot's aligned data: [xs, ys1, ys2, ...], x ascending.
export function align(seriesPoints) {
  const xs = [...new Set(seriesPoints.flatMap((pts) => pts.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  for (const pts of seriesPoints) {
    const ys = new Array(xs.length).fill(null);
    for (const [x, y] of pts) ys[index.get(x)] = typeof y === "number" && Number.isFinite(y) ? y : null;
    data.push(ys);
  }
  return data;
}

// A chart card: title, a plot of several labelled series, a readout of the values under the cursor.
// opts: {time: bool (x in seconds since epoch), fmt: value formatter, height, log, xLabel, onClick(x)}.
export function multiChart(title, opts) {
  const holder = h("div", { class: "plot" });
  const readout = h("div", { class: "readout muted" }, " ");
  const legend = h("div", { class: "legend" });
  const card = h("figure", { class: "card", "data-chart": title },
    h("figcaption", {}, h("span", { class: "metric" }, title)), holder, legend, readout);
  let plot = null;
  let shape = "";
  const fmt = opts.fmt || fmtAxis;
  const height = opts.height || 180;

  card.set = function (labels, seriesPoints) {
    const data = align(seriesPoints);
    const nextShape = labels.join("\u0000") + `/${Boolean(opts.log)}`;
    clearNode(legend);
    labels.forEach((label, i) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = PALETTE[i % PALETTE.length];
      legend.appendChild(h("span", { class: "key" }, swatch, label));
    });
    if (!window.uPlot) {
      holder.textContent = "charts need uPlot (npm install)";
      return;
    }
    if (plot && shape === nextShape) {
      plot.setData(data);
      return;
    }
    if (plot) plot.destroy();
    shape = nextShape;
    const muted = cssVar("--muted"), grid = cssVar("--grid");
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    plot = new window.uPlot({
      width: Math.max(200, holder.clientWidth || 380), height, legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: Boolean(opts.time), range: xRange(Boolean(opts.time)) }, y: { distr: opts.log ? 3 : 1, ...(opts.yRange ? { range: opts.yRange } : {}) } },
      axes: [{ ...axis, ...(opts.time ? {} : { values: (u, vals) => vals.map(fmtAxis) }) },
        { ...axis, size: fitAxisSize, values: (u, vals) => distinctLabels(vals, fmt) }],
      series: [{ label: opts.xLabel || "x" }, ...labels.map((label, i) => ({
        label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true,
        points: { show: data[0].length <= 40 },
      }))],
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          if (i === null || i === undefined) { readout.textContent = " "; return; }
          const now = u.data; // not `data`: setData replaces it while this plot lives on
          const x = now[0][i];
          const at = opts.time ? new Date(x * 1000).toLocaleTimeString() : fmtAxis(x);
          const parts = labels.map((label, k) => (now[k + 1][i] == null ? null : `${label} ${fmt(now[k + 1][i])}`))
            .filter(Boolean);
          readout.textContent = `${opts.xLabel || "x"} ${at}: ${parts.join(" · ")}`;
        }],
      },
    }, data, holder);
  };

  const resize = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(200, holder.clientWidth), height });
  });
  resize.observe(holder);
  card.destroy = () => { resize.disconnect(); if (plot) plot.destroy(); plot = null; };
  return card;
}

function clearNode(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}
