// The evaluation tab: confusion matrices, PR curves with a threshold slider, per-label
// precision/recall/F1, tables. From GET /api/runs/{id}/evals; each name shows its newest record.
// Every label and cell is put on the page as text.

import { api, errorBox } from "./api.js";
import { fmtNum, fmtTime, fmtValue, h } from "./dom.js";
import { PALETTE } from "./plot.js";

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function evalsView(runId, holder) {
  const note = h("p", { class: "muted" }, "Loading evaluations…");
  holder.appendChild(note);
  api(`/api/runs/${encodeURIComponent(runId)}/evals`).then((body) => {
    const evals = body.evals || [];
    if (!evals.length) {
      note.textContent = "No evaluations logged. Use run.log_confusion_matrix(), run.log_pr_curve() or run.log_table().";
      return;
    }
    note.remove();
    // Rows of one name (log_row) form one table; of everything else the newest record counts.
    const newest = new Map(), rows = new Map();
    for (const e of evals) {
      if (e.type === "row") {
        if (!rows.has(e.name)) rows.set(e.name, []);
        rows.get(e.name).push(e.data);
      } else newest.set(e.name, e);
    }
    for (const e of newest.values()) holder.appendChild(evalCard(e));
    for (const [name, list] of rows) holder.appendChild(card(name, "rows", null, recordTable(list)));
  }, (err) => {
    if (err.status === 404) note.textContent = "Nothing of this run is stored yet.";
    else note.replaceWith(errorBox(err));
  });
}

function card(name, kind, ts, ...body) {
  return h("section", { class: "panel eval", "data-eval": kind },
    h("h3", {}, name, h("span", { class: "muted" }, `  ${kind}${ts ? ` · ${fmtTime(ts)}` : ""}`)), ...body);
}

function evalCard(e) {
  const d = e.data || {};
  if (e.type === "confusion_matrix" && Array.isArray(d.labels) && Array.isArray(d.matrix)) {
    return card(e.name, "confusion matrix", e.ts, h("div", { class: "eval-row" },
      confusionMatrix(d), perLabelTable(d.labels, d.per_label || {}, d.accuracy)));
  }
  if (e.type === "pr_curve" && Array.isArray(d.curves) && Array.isArray(d.thresholds)) {
    return card(e.name, "PR curve", e.ts, prCurve(d));
  }
  if (e.type === "table" && Array.isArray(d.columns)) {
    return card(e.name, "table", e.ts, table(d.columns, d.rows || []));
  }
  return card(e.name, e.type, e.ts, h("pre", { class: "json" }, JSON.stringify(d, null, 2)));
}

function confusionMatrix(d) {
  const n = d.labels.length;
  const rowSums = d.matrix.map((row) => row.reduce((a, b) => a + (Number(b) || 0), 0));
  const head = h("tr", {}, h("th", { class: "corner" }, "true \\ predicted"), d.labels.map((l) => h("th", { class: "pred" }, String(l))));
  const body = d.matrix.slice(0, n).map((row, i) => h("tr", {}, h("th", {}, String(d.labels[i])),
    row.slice(0, n).map((count, j) => {
      const share = rowSums[i] ? count / rowSums[i] : 0;
      const cell = h("td", { class: `cell${i === j ? " diag" : ""}`, title: `${fmtNum(share * 100)} % of true ${d.labels[i]}` },
        String(count));
      // Intensity by the share of the true label's rows: CSSOM, allowed by the CSP (no inline style attribute).
      cell.style.backgroundColor = i === j ? `rgba(76, 195, 138, ${0.12 + 0.7 * share})` : `rgba(240, 97, 109, ${share ? 0.1 + 0.7 * share : 0})`;
      return cell;
    })));
  return h("table", { class: "confusion" }, h("thead", {}, head), h("tbody", {}, body));
}

function perLabelTable(labels, per, accuracy) {
  const cols = ["precision", "recall", "f1", "support"].filter((c) => Array.isArray(per[c]));
  const rows = labels.map((label, i) => h("tr", {}, h("th", {}, String(label)),
    cols.map((c) => h("td", { class: "num" }, c === "support" ? String(per[c][i]) : fmt3(per[c][i])))));
  return h("div", {}, h("table", { class: "kv per-label" },
    h("thead", {}, h("tr", {}, h("th", {}, "label"), cols.map((c) => h("th", { class: "num" }, c)))),
    h("tbody", {}, rows)),
  typeof accuracy === "number" ? h("p", { class: "muted" }, `accuracy ${fmt3(accuracy)}`) : null);
}

function fmt3(v) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(3) : fmtValue(v);
}

// Precision against recall per label, a marker at the slider's threshold, and the numbers there.
function prCurve(d) {
  const canvas = h("canvas", { class: "pr", width: "420", height: "300" });
  const slider = h("input", { type: "range", class: "threshold", min: "0", max: String(d.thresholds.length - 1), step: "1",
    value: String(Math.floor((d.thresholds.length - 1) / 2)) });
  const shown = h("span", { class: "threshold-value" });
  const tbody = h("tbody", {});
  const legend = h("div", { class: "legend" }, d.curves.map((c, i) => {
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = PALETTE[i % PALETTE.length];
    return h("span", { class: "key" }, swatch, String(c.label), typeof c.average_precision === "number" ? ` (AP ${fmt3(c.average_precision)})` : "");
  }));
  function update() {
    const k = Number(slider.value);
    shown.textContent = `threshold ${fmt3(d.thresholds[k])}`;
    drawPr(canvas, d.curves, k);
    tbody.replaceChildren(...d.curves.map((c) => h("tr", { "data-label": String(c.label) }, h("th", {}, String(c.label)),
      h("td", { class: "num precision" }, fmt3(c.precision[k])), h("td", { class: "num recall" }, fmt3(c.recall[k])),
      h("td", { class: "num f1" }, fmt3(c.f1 ? c.f1[k] : null)))));
  }
  slider.addEventListener("input", update);
  update();
  return h("div", { class: "eval-row" }, h("div", {}, canvas, legend),
    h("div", {}, h("label", { class: "toggle" }, slider, shown),
      h("table", { class: "kv per-label" }, h("thead", {}, h("tr", {}, h("th", {}, "label"),
        ["precision", "recall", "f1"].map((c) => h("th", { class: "num" }, c)))), tbody)));
}

function drawPr(canvas, curves, k) {
  const dpr = window.devicePixelRatio || 1, w = 420, hh = 300;
  canvas.width = w * dpr;
  canvas.height = hh * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hh);
  const left = 56, right = 10, top = 10, bottom = 34;
  const x = (r) => left + r * (w - left - right), y = (p) => top + (1 - p) * (hh - top - bottom);
  ctx.strokeStyle = cssVar("--grid");
  ctx.fillStyle = cssVar("--muted");
  ctx.font = `11px ${cssVar("--mono") || "monospace"}`;
  ctx.beginPath();
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.moveTo(x(t), y(0)); ctx.lineTo(x(t), y(1));
    ctx.moveTo(x(0), y(t)); ctx.lineTo(x(1), y(t));
    ctx.fillText(String(t), x(t) - 8, hh - bottom + 14);
    ctx.fillText(String(t), 22, y(t) + 4);
  }
  ctx.stroke();
  ctx.fillText("recall", w / 2 - 14, hh - 4);
  ctx.save(); ctx.translate(12, hh / 2 + 26); ctx.rotate(-Math.PI / 2); ctx.fillText("precision", 0, 0); ctx.restore();
  curves.forEach((c, i) => {
    const colour = PALETTE[i % PALETTE.length];
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    c.recall.forEach((r, j) => (j ? ctx.lineTo(x(r), y(c.precision[j])) : ctx.moveTo(x(r), y(c.precision[j]))));
    ctx.stroke();
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.arc(x(c.recall[k]), y(c.precision[k]), 4, 0, 2 * Math.PI);
    ctx.fill();
  });
}

function table(columns, rows) {
  return h("div", { class: "table-wrap" }, h("table", { class: "kv" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, String(c))))),
    h("tbody", {}, rows.map((row) => h("tr", {}, (Array.isArray(row) ? row : []).map((cell) => h("td", {}, fmtValue(cell))))))));
}

function recordTable(list) {
  const columns = [...new Set(list.flatMap((r) => Object.keys(r || {})))];
  return table(columns, list.map((r) => columns.map((c) => (r || {})[c])));
}

