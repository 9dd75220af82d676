// A line chart on <canvas>: no third-party code (a later version uses uPlot).

import { fmtAxis } from "./dom.js";

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// A line chart of [step, value] pairs; non-finite values (strings) are red ticks.
export function drawChart(canvas, points) {
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 400, cssHeight = 160;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  ctx.font = `11px ${cssVar("--mono") || "monospace"}`;
  const finite = points.filter((p) => typeof p[1] === "number" && Number.isFinite(p[1]));
  const bad = points.filter((p) => typeof p[1] !== "number" || !Number.isFinite(p[1]));
  canvas.chartFrame = null;
  if (!points.length) {
    ctx.fillStyle = cssVar("--muted");
    ctx.fillText("no points", 8, 20);
    return;
  }
  const left = 60, right = 8, top = 8, bottom = 20;
  const w = cssWidth - left - right, hgt = cssHeight - top - bottom;
  let xMin = points[0][0], xMax = points[points.length - 1][0];
  if (xMin === xMax) { xMin -= 1; xMax += 1; }
  let yMin = Math.min(...finite.map((p) => p[1])), yMax = Math.max(...finite.map((p) => p[1]));
  if (!finite.length) { yMin = 0; yMax = 1; }
  if (yMin === yMax) { yMin -= 1; yMax += 1; }
  const x = (s) => left + ((s - xMin) / (xMax - xMin)) * w;
  const y = (v) => top + (1 - (v - yMin) / (yMax - yMin)) * hgt;

  ctx.strokeStyle = cssVar("--grid");
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const v of [yMin, (yMin + yMax) / 2, yMax]) {
    ctx.moveTo(left, Math.round(y(v)) + 0.5);
    ctx.lineTo(left + w, Math.round(y(v)) + 0.5);
  }
  ctx.stroke();
  ctx.fillStyle = cssVar("--muted");
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of [yMin, (yMin + yMax) / 2, yMax]) ctx.fillText(fmtAxis(v), left - 6, y(v));
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  ctx.fillText(String(xMin), left, cssHeight - 4);
  ctx.textAlign = "right";
  ctx.fillText(String(xMax), left + w, cssHeight - 4);

  ctx.strokeStyle = cssVar("--accent");
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let pen = false;
  for (const p of points) {
    if (typeof p[1] !== "number" || !Number.isFinite(p[1])) { pen = false; continue; }
    if (pen) ctx.lineTo(x(p[0]), y(p[1]));
    else ctx.moveTo(x(p[0]), y(p[1]));
    pen = true;
  }
  ctx.stroke();
  // Dots where points are few, so that lone points (between NaNs) stay visible.
  if (points.length <= 60) {
    ctx.fillStyle = cssVar("--accent");
    for (const p of finite) ctx.fillRect(x(p[0]) - 2, y(p[1]) - 2, 4, 4);
  }
  ctx.strokeStyle = cssVar("--bad");
  ctx.beginPath();
  for (const p of bad) {
    ctx.moveTo(x(p[0]), top + hgt);
    ctx.lineTo(x(p[0]), top + hgt - 8);
  }
  ctx.stroke();

  canvas.chartFrame = {
    nearest(px) {
      let best = null, bestDist = Infinity;
      for (const p of points) {
        const d = Math.abs(x(p[0]) - px);
        if (d < bestDist) { best = p; bestDist = d; }
      }
      return best;
    },
  };
}
