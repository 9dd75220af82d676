// Metric charts that update live: uPlot (from npm, served from node_modules) when loaded,
// else the small canvas chart in chart.js. Points from the API are [step, value]; non-finite
// values arrive as strings ("NaN", "Infinity") and are left out of the line.

import { api, errorBox } from "./api.js";
import { drawChart } from "./chart.js";
import { fmtAxis, fmtNum, fmtTime, h, plural } from "./dom.js";
import { TIME_VALUES, fitAxisSize, fitXPadding, timeSpace, xRange } from "./plot.js";

// x: "step" or "time" (wall clock, mapped from steps through /metrics/steps).
export const chartOptions = { smoothing: 0, log: false, x: "step" };

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

// Live points beyond this many per pixel of the chart are thinned (thin()), so drawing a live point
// costs the same after an hour of them as after a minute.
const MAX_POINTS_PER_PX = 4;
//: How often, and how far apart, a chart re-reads its series until the sink holds the skipped points.
const RELOAD_ATTEMPTS = 10;
const RELOAD_WAIT_MS = 500;

// The points in `buckets` equal step ranges, each keeping its lowest and highest finite point and
// its first non-finite one (as the API downsamples: no spike is lost); the newest point stays.
export function thin(points, buckets) {
  const lo = points[0][0], span = points[points.length - 1][0] - lo + 1;
  const out = [];
  let bucket = -1, min = null, max = null, bad = null;
  const flush = () => {
    const kept = [...new Set([min, max, bad].filter(Boolean))].sort((a, b) => a[0] - b[0]);
    for (const p of kept) out.push(p);
  };
  for (const p of points) {
    const b = Math.floor(((p[0] - lo) * buckets) / span);
    if (b !== bucket) {
      flush();
      bucket = b;
      min = max = bad = null;
    }
    if (typeof p[1] === "number" && Number.isFinite(p[1])) {
      if (!min || p[1] < min[1]) min = p;
      if (!max || p[1] > max[1]) max = p;
    } else if (!bad) bad = p;
  }
  flush();
  const newest = points[points.length - 1];
  if (out[out.length - 1] !== newest) out.push(newest);
  return out;
}

function finite(v, log) {
  if (typeof v !== "number" || !Number.isFinite(v)) return null;
  return log && v <= 0 ? null : v;
}

// openLogs(ms): called with the wall-clock time of a clicked point.
export function chartCard(runId, name, onLeave, openLogs) {
  const holder = h("div", { class: "plot" });
  const info = h("span", { class: "muted" });
  // The zoom note has its own line: on a narrow card it would be cut off at the end of the first.
  const zoomNote = h("span", { class: "muted zoom-note", hidden: true });
  const reset = h("button", { type: "button", class: "reset-zoom", hidden: true }, "reset zoom");
  const readout = h("div", { class: "readout muted" }, " ");
  const card = h("figure", { class: "card", "data-metric": name },
    h("figcaption", {}, h("span", { class: "metric" }, name), info, reset, zoomNote), holder, readout);
  let points = null;
  let zoomed = null; // {lo, hi, points}: full-resolution points of a zoomed step range
  let stepMap = null; // [[step, ms]] ascending, or [] where the server cannot map steps
  let total = 0;
  let downsampled = false;
  let plot = null;
  let drawn = { shown: [], xs: [], byTime: false }; // what the plot shows now (its hooks read it)
  let canvas = null;
  const early = [];

  function caption() {
    const last = points.length ? points[points.length - 1][1] : null;
    info.textContent = ` last ${fmtNum(last)} · ${plural(total, "point")}` + (downsampled ? ` (showing ${points.length})` : "");
    zoomNote.textContent = zoomed ? `zoomed to steps ${zoomed.lo}–${zoomed.hi}: ${plural(zoomed.points.length, "point")}` : "";
    reset.hidden = zoomNote.hidden = !zoomed;
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
    const shown = zoomed ? zoomed.points : points;
    const byTime = chartOptions.x === "time" && stepMap && stepMap.length > 0;
    const xs = shown.map((p) => (byTime ? timeOf(p[0]) / 1000 : p[0]));
    const ys = shown.map((p) => finite(p[1], chartOptions.log));
    const smoothed = smooth(ys, chartOptions.smoothing);
    const data = smoothed ? [xs, ys, smoothed] : [xs, ys];
    // The plot outlives this call (setData below): its hooks read what is drawn now from here.
    drawn = { shown, xs, byTime };
    const shape = `${Boolean(smoothed)}/${chartOptions.log}/${byTime}`;
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
      cursor: { drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: byTime, range: xRange(byTime) }, y: { distr: chartOptions.log ? 3 : 1 } },
      padding: [null, fitXPadding, null, fitXPadding],
      axes: [{ ...axis, ...(byTime ? { values: TIME_VALUES, space: timeSpace } : { values: (u, vals) => vals.map(fmtAxis) }) },
        { ...axis, size: fitAxisSize, values: (u, vals) => vals.map(fmtAxis) }],
      series,
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          const { shown: at, xs: x, byTime: timed } = drawn;
          readout.textContent = i === null || i === undefined || !at[i] ? " "
            : `step ${at[i][0]}${timed ? ` (${fmtTime(x[i] * 1000)})` : ""}: ${fmtNum(at[i][1])}`
              + " · click: logs at that time, drag: zoom";
        }],
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          const inRange = drawn.shown.filter((p, k) => drawn.xs[k] >= a && drawn.xs[k] <= b);
          if (inRange.length) zoomTo(inRange[0][0], inRange[inRange.length - 1][0]);
        }],
      },
    }, data, holder);
    plot.shape = shape;
    plot.over.addEventListener("click", () => {
      const i = plot.cursor.idx;
      const current = zoomed ? zoomed.points : points;
      if (i === null || i === undefined || !current[i] || !openLogs) return;
      steps().then(() => {
        const ms = timeOf(current[i][0]);
        if (ms !== null) openLogs(ms);
      });
    });
  }

  // Wall-clock ms of a step, interpolated in the step -> time map; null without one.
  function timeOf(step) {
    if (!stepMap || !stepMap.length) return null;
    let lo = 0, hi = stepMap.length - 1;
    if (step <= stepMap[0][0]) return stepMap[0][1];
    if (step >= stepMap[hi][0]) return stepMap[hi][1];
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (stepMap[mid][0] <= step) lo = mid; else hi = mid;
    }
    const [s0, t0] = stepMap[lo], [s1, t1] = stepMap[hi];
    return t0 + ((t1 - t0) * (step - s0)) / (s1 - s0 || 1);
  }

  async function steps() {
    if (stepMap) return stepMap;
    try {
      const body = await api(`/api/runs/${encodeURIComponent(runId)}/metrics/steps`, { name, points: 2000 });
      stepMap = (body.steps || []).map(([step, ts]) => [step, Date.parse(ts)]);
    } catch (err) {
      stepMap = [];
    }
    return stepMap;
  }

  function pixels() {
    return Math.max(3, Math.min(10000, Math.round((holder.clientWidth || 400) * (window.devicePixelRatio || 1))));
  }

  // Re-query the stored points of steps lo..hi at full resolution (as many as the chart has pixels).
  async function zoomTo(lo, hi) {
    await steps();
    const from = timeOf(lo), to = timeOf(hi);
    const width = pixels();
    let body = null;
    if (from !== null && to !== null) {
      try {
        // A second of slack each side: the map interpolates inside its buckets.
        body = await api(`/api/runs/${encodeURIComponent(runId)}/metrics`, {
          name, points: width, since: new Date(from - 1000).toISOString(), until: new Date(to + 1000).toISOString(),
        });
      } catch (err) {
        body = null;
      }
    }
    const source = body ? body.points || [] : points;
    zoomed = { lo, hi, points: source.filter((p) => p[0] >= lo && p[0] <= hi) };
    draw();
  }
  reset.addEventListener("click", () => { zoomed = null; draw(); });

  // A live point: appended in step order; a point at a step already drawn replaces it.
  card.addPoint = function (step, value, ts) {
    if (stepMap && stepMap.length && ts && step > stepMap[stepMap.length - 1][0]) stepMap.push([step, Date.parse(ts)]);
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
    if (points.length > MAX_POINTS_PER_PX * pixels()) {
      points = thin(points, pixels());
      downsampled = true;
    }
    draw();
  };

  card.redraw = async () => {
    if (chartOptions.x === "time") await steps();
    if (plot) { plot.destroy(); plot = null; }
    draw();
  };

  // Re-read the stored series (live points that arrive meanwhile are kept and added after it), until
  // it holds step `upTo`: after the feed skipped points of a tab that fell behind (coalesced), the
  // chart would otherwise lack them. Tries every RELOAD_WAIT_MS while the sink catches up.
  let reloading = false, reloadTo = -Infinity;
  card.reload = async function (upTo) {
    reloadTo = Math.max(reloadTo, upTo);
    if (points === null || reloading) return; // not loaded yet (its first load reads all), or re-reading
    reloading = true;
    try {
      for (let attempt = 0; attempt < RELOAD_ATTEMPTS; attempt++) {
        points = null;
        const newest = await card.load();
        if (newest === undefined || newest >= reloadTo) return;
        await new Promise((resolve) => setTimeout(resolve, RELOAD_WAIT_MS));
      }
    } finally {
      reloading = false;
    }
  };

  // Load the stored series (then the live points that came meanwhile); its newest stored step
  // (-Infinity: none), undefined when the API failed.
  card.load = async function () {
    const width = pixels();
    let series;
    try {
      series = await api(`/api/runs/${encodeURIComponent(runId)}/metrics`, { name, points: width });
    } catch (err) {
      // 404: nothing of this run is stored yet (its first points are still on their way): start empty.
      if (err.status !== 404) {
        holder.appendChild(errorBox(err));
        return undefined;
      }
      series = { points: [], total: 0 };
    }
    points = series.points || [];
    const newest = points.length ? points[points.length - 1][0] : -Infinity;
    total = series.total ?? points.length;
    downsampled = Boolean(series.downsampled);
    if (chartOptions.x === "time") await steps();
    draw();
    for (const [step, value] of early.splice(0)) card.addPoint(step, value);
    return newest;
  };

  const resize = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(200, holder.clientWidth), height: 160 });
    else if (canvas && points) drawChart(canvas, points);
  });
  resize.observe(holder);
  onLeave(() => { resize.disconnect(); if (plot) plot.destroy(); });
  return card;
}
