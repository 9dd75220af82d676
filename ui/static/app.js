// runstream: the first page. Vanilla JS modules, no third-party code.
//
// Every string that comes from the API is put on the page as text
// (textContent / createTextNode); no file of this page parses data as HTML.
// Routes: "/" the run list, "/runs/ID" a run, "/runs/ID/logs?q=..." a run
// with its log search filled in.

import { api, errorBox } from "./api.js";
import { chartCard, chartOptions } from "./charts.js";
import {
  STATUSES, append, clear, fmtClock, fmtDuration, fmtNum, fmtTime, fmtValue, h, link, statusBadge,
} from "./dom.js";
import { subscribe } from "./feed.js";
import { logPanel } from "./logs.js";

const LIST_REFRESH_MS = 15000;
const SUMMARY_COLUMNS = 4;

// ---------------------------------------------------------------- routing

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
let cleanups = [];

function onLeave(fn) {
  cleanups.push(fn);
}

function navigate(url, replace) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

function route() {
  for (const fn of cleanups) fn();
  cleanups = [];
  clear(main);
  clear(crumbs);
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  const match = /^\/runs\/([^/]+)(\/logs)?\/?$/.exec(path);
  if (path === "/" || path === "") {
    listView(params);
  } else if (match) {
    let runId;
    try {
      runId = decodeURIComponent(match[1]);
    } catch (err) {
      runId = match[1];
    }
    runView(runId, Boolean(match[2]), params);
  } else {
    document.title = "runstream";
    append(main, [h("p", { class: "error" }, "No such page. "), link("/", "All runs")]);
  }
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest && event.target.closest("a[data-nav]");
  if (!anchor || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(anchor.href, location.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash, false);
});
window.addEventListener("popstate", route);

// ---------------------------------------------------------------- run list

function listView(params) {
  document.title = "runs · runstream";
  append(crumbs, ["runs"]);
  const project = h("input", { type: "search", placeholder: "project", value: params.get("project") || "" });
  const status = h("select", {}, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  status.value = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const form = h("form", { class: "filters" }, project, status, h("button", { type: "submit" }, "filter"));
  const note = h("span", { class: "muted" });
  const holder = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading runs…"));
  append(main, [h("section", { class: "bar" }, form, note), holder]);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (project.value.trim()) q.set("project", project.value.trim());
    if (status.value) q.set("status", status.value);
    navigate(q.toString() ? `/?${q}` : "/", true);
  });

  async function load() {
    try {
      const body = await api("/api/runs", { project: params.get("project"), status: status.value });
      clear(holder).appendChild(runTable(body.runs || []));
      note.textContent = `${(body.runs || []).length} runs · updated ${fmtClock(new Date())}`;
    } catch (err) {
      clear(holder).appendChild(errorBox(err));
    }
  }
  load();
  const timer = setInterval(() => {
    if (!document.hidden) load();
  }, LIST_REFRESH_MS);
  onLeave(() => clearInterval(timer));
}

// The most common metric names over the listed runs become summary columns.
function summaryColumns(runs) {
  const counts = new Map();
  for (const run of runs) {
    for (const name of Object.keys(run.summary || {})) counts.set(name, (counts.get(name) || 0) + 1);
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, SUMMARY_COLUMNS)
    .map(([name]) => name);
}

function runTable(runs) {
  if (!runs.length) return h("p", { class: "muted" }, "No runs yet. Start one with `runstream run -- CMD` or runstream.init() in your script.");
  const metrics = summaryColumns(runs);
  const head = h("tr", {}, ["status", "name", "project", "started", "duration"].map((c) => h("th", {}, c)),
    metrics.map((m) => h("th", { class: "num", title: "last (min – max)" }, m)));
  const rows = runs.map((run) => {
    const summary = run.summary || {};
    return h("tr", {},
      h("td", {}, statusBadge(run.status)),
      h("td", { class: "name" }, link(`/runs/${encodeURIComponent(run.id)}`, run.name || run.id)),
      h("td", {}, run.project || ""),
      h("td", { class: "time" }, fmtTime(run.started_at)),
      h("td", { class: "num" }, fmtDuration(run.duration_s)),
      metrics.map((m) => {
        const s = summary[m];
        if (!s) return h("td", { class: "num muted" }, "—");
        return h("td", { class: "num" }, fmtNum(s.last),
          h("span", { class: "range" }, `${fmtNum(s.min)} – ${fmtNum(s.max)}`));
      }));
  });
  return h("table", { class: "runs" }, h("thead", {}, head), h("tbody", {}, rows));
}

// ---------------------------------------------------------------- run page

function runView(runId, focusLogs, params) {
  document.title = `${runId} · runstream`;
  append(crumbs, [link("/", "runs"), " / ", h("span", {}, runId)]);
  const overview = h("section", { class: "overview" }, h("p", { class: "muted" }, "Loading run…"));
  const charts = h("section", { class: "metrics" });
  const logs = h("section", { class: "logs", id: "logs" });
  append(main, [overview, h("h2", {}, "metrics"), charts, h("h2", {}, "logs"), logs]);

  api(`/api/runs/${encodeURIComponent(runId)}`).then((run) => {
    document.title = `${run.name || run.id} · runstream`;
    clear(overview).appendChild(runOverview(run));
  }, (err) => clear(overview).appendChild(errorBox(err)));

  metricCharts(runId, charts);
  onLeave(logPanel(runId, logs, params));
  if (focusLogs) logs.scrollIntoView();
}

function runOverview(run) {
  const facts = [
    ["id", run.id], ["project", run.project], ["started", fmtTime(run.started_at)],
    ["ended", fmtTime(run.ended_at)], ["duration", fmtDuration(run.duration_s)],
    ["last seen", run.last_seen], ["world size", run.world_size],
    ["exit code", run.exit_code], ["reason", run.reason],
    ["tags", (run.tags || []).join(", ")], ["command", (run.argv || []).join(" ")],
  ];
  // Fields shown above, or elsewhere on the page (summary and metrics are the charts).
  const shown = new Set(["id", "project", "name", "status", "started_at", "ended_at", "duration_s",
    "last_seen", "world_size", "exit_code", "reason", "tags", "argv", "config", "nodes",
    "summary", "metrics"]);
  const extras = Object.keys(run).filter((k) => !shown.has(k) && !isEmpty(run[k]));
  return h("div", {},
    h("h1", {}, statusBadge(run.status), " ", run.name || run.id),
    h("dl", { class: "facts" }, facts.filter(([, v]) => !isEmpty(v))
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, fmtValue(v))])),
    h("div", { class: "panels" },
      h("div", { class: "panel" }, h("h3", {}, "config"), keyValues(run.config)),
      h("div", { class: "panel" }, h("h3", {}, "nodes"), anyTable(run.nodes)),
      extras.map((k) => h("div", { class: "panel" }, h("h3", {}, k), anyTable(run[k])))));
}

function isEmpty(value) {
  if (value === null || value === undefined || value === "") return true;
  if (Array.isArray(value)) return value.length === 0;
  if (typeof value === "object") return Object.keys(value).length === 0;
  return false;
}

function keyValues(obj) {
  const entries = obj && typeof obj === "object" ? Object.entries(obj) : [];
  if (!entries.length) return h("p", { class: "muted" }, "—");
  return h("table", { class: "kv" }, h("tbody", {},
    entries.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmtValue(v))))));
}

// A list of objects as a table, an object as key/value rows, anything else as text.
function anyTable(value) {
  if (Array.isArray(value) && value.length && value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
    const columns = [...new Set(value.flatMap((v) => Object.keys(v)))];
    return h("table", { class: "kv" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, value.map((row) => h("tr", {}, columns.map((c) => h("td", {}, fmtValue(row[c])))))));
  }
  if (Array.isArray(value)) return h("p", {}, value.length ? value.map(fmtValue).join(", ") : "—");
  if (value && typeof value === "object") return keyValues(value);
  return h("p", {}, fmtValue(value));
}

// ---------------------------------------------------------------- metric charts

async function metricCharts(runId, holder) {
  const smoothing = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", class: "smoothing" });
  const log = h("input", { type: "checkbox", id: "logscale" });
  const tools = h("div", { class: "chart-tools" }, "smoothing", smoothing,
    h("label", { for: "logscale", class: "toggle" }, log, " log scale"), h("span", { class: "live-note" }));
  const grid = h("div", { class: "charts" });
  append(holder, [tools, grid]);
  const cards = new Map();
  // Charts load when scrolled into view, so a run with hundreds of metrics stays quick.
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      entry.target.load();
    }
  }, { rootMargin: "200px" });
  onLeave(() => observer.disconnect());

  function card(name) {
    let found = cards.get(name);
    if (!found) {
      found = chartCard(runId, name, onLeave);
      cards.set(name, found);
      const names = [...cards.keys()].sort();
      const next = names[names.indexOf(name) + 1];
      grid.insertBefore(found, next ? cards.get(next) : null);
      observer.observe(found);
    }
    return found;
  }
  const redraw = () => {
    chartOptions.smoothing = Number(smoothing.value);
    chartOptions.log = log.checked;
    for (const c of cards.values()) c.redraw();
  };
  smoothing.addEventListener("change", redraw);
  log.addEventListener("change", redraw);

  // Subscribe first, so no point logged while the charts load is missed; live points append.
  let historyDone = false;
  onLeave(subscribe(runId, "metrics", { limit: 0 }, {
    onFrame(frame) {
      if (frame.type === "history") { historyDone = historyDone || Boolean(frame.last); return; }
      for (const item of frame.items) card(item.name).addPoint(item.step, item.value);
      const empty = grid.querySelector(".empty");
      if (empty) empty.remove();
    },
  }));
  let names;
  try {
    names = (await api(`/api/runs/${encodeURIComponent(runId)}/metrics`)).names || [];
  } catch (err) {
    // 404: nothing of the run is stored yet; its metrics appear live as they come.
    if (err.status !== 404) {
      grid.appendChild(errorBox(err));
      return;
    }
    names = [];
  }
  if (!names.length && !cards.size) grid.appendChild(h("p", { class: "muted empty" }, "No metrics logged yet."));
  for (const name of names) card(name);
}

route();
