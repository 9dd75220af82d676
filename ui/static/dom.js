// DOM and formatting helpers for the runstream page.
// Data from the API is only ever put on the page as text (never parsed as HTML).

export const STATUSES = ["running", "finished", "failed", "killed", "crashed"];
export const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

// h("a", {href: "/x", class: "c", onclick: fn}, "text", child) -> element.
// Attributes are set with setAttribute, children strings become text nodes.
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function link(href, ...children) {
  return h("a", { href, "data-nav": true }, ...children);
}

function pad(n, width) {
  return String(n).padStart(width || 2, "0");
}

export function fmtTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClock(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || typeof seconds !== "number") return "—";
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d}d ${pad(hh)}h`;
  if (hh) return `${hh}h ${pad(mm)}m`;
  if (mm) return `${mm}m ${pad(ss)}s`;
  return `${ss}s`;
}

// Numbers compactly; non-finite values arrive as strings ("NaN", "inf").
export function fmtNum(value) {
  if (typeof value !== "number") return value === null || value === undefined ? "—" : String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

// Config and other stored values as written (numbers unrounded), times made local.
export function fmtValue(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "string") return RFC3339.test(value) ? fmtTime(value) : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

// Axis labels: three significant digits are enough to read a chart.
export function fmtAxis(value) {
  // uPlot's log scale hands null for the ticks it leaves unlabelled.
  if (value === null || value === undefined) return "";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(1);
  return String(Number(value.toPrecision(3)));
}

export function statusBadge(status) {
  const known = STATUSES.includes(status) ? status : "unknown";
  return h("span", { class: `badge status-${known}` }, status || "unknown");
}

// Bytes in binary units (GiB for GPU memory, as nvidia-smi shows it).
// `digits` decimals below 100 of a unit, one fewer above (an axis asks for more when ticks would repeat).
export function fmtBytes(value, digits = 1) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value === null || value === undefined ? "—" : String(value);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Math.abs(value), u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  const shown = u === 0 ? Math.round(v) : v.toFixed(v >= 100 ? Math.max(0, digits - 1) : digits);
  return `${value < 0 ? "-" : ""}${shown} ${units[u]}`;
}

// A count and its noun in the right number: plural(1, "line") is "1 line", plural(2, "line") "2 lines";
// `many` is the plural where adding "s" is wrong.
export function plural(count, noun, many) {
  return `${count} ${count === 1 ? noun : many || `${noun}s`}`;
}

export function fmtPct(value) {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(value >= 10 ? 0 : 1)} %` : "—";
}
