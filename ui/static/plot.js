// Multi-series line charts (uPlot, from npm) for resources, comparisons and PR curves.
// Series are given as [[x, y], ...] each; they are joined on x (a value missing in one series is
// a gap, spanned). Data is only ever drawn or put on the page as text.

import { fmtAxis, fmtTime, h } from "./dom.js";

export const PALETTE = ["#5fa8ff", "#f0a35e", "#4cc38a", "#c678dd", "#f0616d", "#56b6c2", "#e6b450", "#9aa5ff",
  "#ff8fb1", "#a3d977"];

//: Least width of a y axis, and the room left beside its widest label.
const MIN_Y_AXIS_PX = 40;
const AXIS_PAD_PX = 4;

// The width in CSS px of a tick label's widest line, drawn in its axis's font.
function labelWidth(u, axis, label) {
  if (label === null || label === undefined || label === "") return 0;
  u.ctx.font = axis.font[0];
  const widest = Math.max(...String(label).split("\n").map((line) => u.ctx.measureText(line).width));
  return widest / (window.devicePixelRatio || 1);
}

// A uPlot axis `size`: as wide as its widest tick label (a fixed width cut "55.9 GiB" or "-1.5e+6").
export function fitAxisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  const widest = Math.max(0, ...(values || []).map((v) => labelWidth(u, axis, v)));
  const size = Math.max(MIN_Y_AXIS_PX, Math.ceil((axis.ticks.size || 0) + (axis.gap || 0) + widest + AXIS_PAD_PX));
  // uPlot asks again while the layout settles, and the new plot size can bring new labels ("0.25"
  // where "0.5" was): grow to fit them, never shrink, so that it settles and no label is cut.
  return cycleNum > 1 ? Math.max(axis._size || 0, size) : size;
}

//: uPlot's own room right of a plot without a right axis (half its default axis size), and the
//: least gap kept between a tick label and the canvas's edge.
const RIGHT_PAD_PX = 25;
const EDGE_PX = 3;

// A uPlot `padding` side (1: right, 3: left) that leaves room for the x axis's outermost tick
// labels: uPlot centres a label on its tick, so a wide one near the plot's edge (the date under
// the first tick of a time axis) would otherwise run past the canvas and be cut off.
export function fitXPadding(u, side, sidesWithAxes, cycleNum) {
  const least = side === 1 ? RIGHT_PAD_PX : 0;
  const x = u.axes && u.axes[0], y = u.axes && u.axes[1];
  const scale = u.scales && u.scales.x;
  if (!x || !y || !x._values || !x._splits || !scale || !(scale.max > scale.min)) return least;
  const labelled = x._splits.map((at, k) => [at, x._values[k]]).filter(([, label]) => label);
  if (!labelled.length) return least;
  const [at, label] = side === 1 ? labelled[labelled.length - 1] : labelled[0];
  // The tick's share of the plot's width from this side, and that width before this side's padding.
  const share = side === 1 ? (scale.max - at) / (scale.max - scale.min) : (at - scale.min) / (scale.max - scale.min);
  const axis = side === 1 ? 0 : y._size || 0;
  const other = side === 1 ? (y._size || 0) + ((u._padding && u._padding[3]) || 0)
    : (u._padding && u._padding[1]) || RIGHT_PAD_PX;
  const plot = u.width - axis - other;
  // The label's half-width must fit in axis + pad + share * (plot - pad).
  const need = share < 1 ? Math.ceil((labelWidth(u, x, label) / 2 + EDGE_PX - axis - share * plot) / (1 - share)) : 0;
  const pad = Math.max(least, need);
  // As for the axis size: grow while the layout settles, never shrink.
  return cycleNum > 1 && u._padding ? Math.max(u._padding[side] || 0, pad) : pad;
}

// Time-axis tick labels in the page's 24-hour clock and ISO dates (uPlot's own read "1:02pm" and
// "11/24/26"); the date goes under the first tick and where the day changes. uPlot's format:
// [least tick step (s), label, then what a new year, month, day, hour, minute, second adds, 1].
const DAY_S = 86400;
export const TIME_VALUES = [
  [365 * DAY_S, "{YYYY}", null, null, null, null, null, null, 1],
  [28 * DAY_S, "{YYYY}-{MM}", null, null, null, null, null, null, 1],
  [DAY_S, "{MM}-{DD}", "\n{YYYY}", null, null, null, null, null, 1],
  [60, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1],
  [1, ":{ss}", "\n{YYYY}-{MM}-{DD} {HH}:{mm}", null, "\n{MM}-{DD} {HH}:{mm}", null, "\n{HH}:{mm}", null, 1],
  [0.001, ":{ss}.{fff}", "\n{YYYY}-{MM}-{DD} {HH}:{mm}", null, "\n{MM}-{DD} {HH}:{mm}", null, "\n{HH}:{mm}", null, 1],
];

//: Least distance between time-axis ticks (uPlot's default), and between sub-second ones, whose
//: labels (":45.200") are wider than "12:53" or ":05" and would touch at the default.
const TIME_SPACE_PX = 50;
const SUB_SECOND_SPACE_PX = 70;

// A uPlot axis `space` for a time axis in seconds: wider where the ticks would be under a second apart.
export function timeSpace(u, axisIdx, min, max, plotPx) {
  return (max - min) * TIME_SPACE_PX < plotPx ? SUB_SECOND_SPACE_PX : TIME_SPACE_PX;
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
      padding: [null, fitXPadding, null, fitXPadding],
      axes: [{ ...axis, ...(opts.time ? { values: TIME_VALUES, space: timeSpace } : { values: (u, vals) => vals.map(fmtAxis) }) },
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
          const at = opts.time ? fmtTime(x * 1000) : fmtAxis(x);
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
