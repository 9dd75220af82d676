// runstream: the first page. Vanilla JS modules, no third-party code.
//
// Every string that comes from the API is put on the page as text
// (textContent / createTextNode); no file of this page parses data as HTML.
// Routes: "/" the run list, "/compare?runs=A,B" runs overlaid, "/runs/ID" a run
// (overview, metrics, logs), "/runs/ID/logs?q=..." its logs tab (the log panel alone, its
// search filled in), "/runs/ID/resources" and "/runs/ID/evaluation" its other tabs.

import { api, errorBox } from "./api.js";
import { chartCard, chartOptions } from "./charts.js";
import { compareView } from "./compare.js";
import {
  append, clear, fmtBytes, fmtDuration, fmtPct, fmtTime, fmtValue, h, link, plural, statusBadge,
} from "./dom.js";
import { evalsView } from "./evals.js";
import { subscribe } from "./feed.js";
import { logPanel } from "./logs.js";
import { resourcesView } from "./resources.js";
import { listView } from "./runlist.js";

const TABS = [["", "overview"], ["logs", "logs"], ["resources", "resources"], ["evaluation", "evaluation"]];
//: How soon the overview re-reads its run after a lifecycle event or an alert, and after heartbeats.
const RUN_EVENT_REFRESH_MS = 300;
const HEARTBEAT_REFRESH_MS = 10000;
//: Re-reads, RUN_RETRY_MS apart, while the stored run does not yet show what the feed delivered.
const RUN_REFRESH_TRIES = 20;
const RUN_RETRY_MS = 500;

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
  const match = /^\/runs\/([^/]+)(?:\/(logs|metrics|resources|evaluation))?\/?$/.exec(path);
  const ctx = { main, crumbs, navigate, onLeave };
  if (path === "/" || path === "") {
    listView(params, ctx);
  } else if (path === "/compare") {
    compareView(params, ctx);
  } else if (match) {
    let runId;
    try {
      runId = decodeURIComponent(match[1]);
    } catch (err) {
      runId = match[1];
    }
    runView(runId, match[2] || "", params);
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

// ---------------------------------------------------------------- run page

function runView(runId, tab, params) {
  document.title = `${runId} · runstream`;
  append(crumbs, [link("/", "runs"), " / ", h("span", {}, runId)]);
  const title = h("h1", {}, statusBadge("unknown"), " ", runId);
  const base = `/runs/${encodeURIComponent(runId)}`;
  const shownTab = tab === "metrics" ? "" : tab;
  const tabs = h("nav", { class: "tabs" }, TABS.map(([path, label]) => {
    const a = link(path ? `${base}/${path}` : base, label);
    if (path === shownTab) a.className = "active";
    return a;
  }));
  append(main, [title, tabs]);
  const overview = h("section", { class: "overview" });
  let first = true;
  // What the live feed has shown that the stored run must reflect before a refresh is done (the sink
  // may store an event a moment after the feed delivered it): a status, and a number of alerts.
  const want = { status: null, alerts: 0, tries: 0 };
  let baseAlerts = null;
  const loadRun = () => api(`/api/runs/${encodeURIComponent(runId)}`).then((run) => {
    const alerts = (run.alerts || []).length;
    if (baseAlerts === null) baseAlerts = alerts;
    if (((want.status && run.status !== want.status) || alerts < baseAlerts + want.alerts)
      && want.tries++ < RUN_REFRESH_TRIES) refresh(RUN_RETRY_MS);
    document.title = `${run.name || run.id} · runstream`;
    clear(title).append(statusBadge(run.status), " ", run.name || run.id);
    if (overview.isConnected) clear(overview).appendChild(runOverview(run));
    // The overview above the charts just grew: keep a /metrics deep link showing the charts.
    const charts = document.getElementById("metrics");
    if (first && tab === "metrics" && charts) charts.scrollIntoView();
    first = false;
  }, (err) => {
    if (!first) return; // a live refresh that failed leaves the overview shown
    if (err.status === 404) clear(overview).appendChild(h("p", { class: "muted" }, "Nothing of this run is stored yet; what it sends appears here live."));
    else clear(overview).appendChild(errorBox(err));
  });
  loadRun();
  // The run's lifecycle events (finish, crash, a rank joining) and new alerts re-read the run, so the
  // status, duration, exit reason and alerts stay live; heartbeats only refresh the duration, slowly.
  let refreshTimer = null, refreshDue = Infinity;
  const refresh = (delayMs) => {
    if (Date.now() + delayMs >= refreshDue) return; // one as soon or sooner is already due
    clearTimeout(refreshTimer);
    refreshDue = Date.now() + delayMs;
    refreshTimer = setTimeout(() => { refreshDue = Infinity; loadRun(); }, delayMs);
  };
  onLeave(() => clearTimeout(refreshTimer));
  onLeave(subscribe(runId, "status", {}, {
    onFrame(frame) {
      if (frame.type !== "live" || !frame.items.length) return;
      for (const item of frame.items) if (item.status) want.status = item.status;
      want.tries = 0;
      refresh(frame.items.some((item) => item.event !== "heartbeat") ? RUN_EVENT_REFRESH_MS : HEARTBEAT_REFRESH_MS);
    },
  }));
  onLeave(subscribe(runId, "alerts", { limit: 0 }, {
    onFrame(frame) {
      if (frame.type !== "live" || !frame.items.length) return;
      want.alerts += frame.items.length;
      want.tries = 0;
      refresh(RUN_EVENT_REFRESH_MS);
    },
  }));

  if (tab === "resources") {
    const holder = h("section", { class: "resources" });
    main.appendChild(holder);
    resourcesView(runId, holder, onLeave);
    return;
  }
  if (tab === "logs") {
    // The logs tab is the log panel alone (the overview also ends with it): a /logs deep link,
    // or a click on a chart point, opens the search without loading the charts above it.
    const holder = h("section", { class: "logs logs-tab", id: "logs" });
    main.appendChild(holder);
    onLeave(logPanel(runId, holder, params));
    return;
  }
  if (tab === "evaluation") {
    const holder = h("section", { class: "evaluation" });
    main.appendChild(holder);
    evalsView(runId, holder);
    return;
  }
  overview.appendChild(h("p", { class: "muted" }, "Loading run…"));
  const charts = h("section", { class: "metrics", id: "metrics" });
  const logs = h("section", { class: "logs", id: "logs" });
  append(main, [overview, h("h2", {}, "metrics"), charts, h("h2", {}, "logs"), logs]);
  metricCharts(runId, charts);
  onLeave(logPanel(runId, logs, params));
  if (tab === "metrics") charts.scrollIntoView();
}

function runOverview(run) {
  const exit = run.exit_code === null || run.exit_code === undefined ? null
    : `${run.exit_code}${run.reason ? ` (${run.reason})` : ""}`;
  const facts = [
    ["id", run.id], ["project", run.project], ["started", fmtTime(run.started_at)],
    ["ended", fmtTime(run.ended_at)], ["duration", fmtDuration(run.duration_s)],
    ["last seen", run.last_seen], ["world size", run.world_size],
    ["exit", exit], ["reason", exit ? null : run.reason],
    ["tags", (run.tags || []).join(", ")], ["command", (run.argv || []).join(" ")],
  ];
  // Fields shown above or in their own panel (summary and metrics are the charts).
  const shown = new Set(["id", "project", "name", "status", "started_at", "ended_at", "duration_s",
    "last_seen", "world_size", "exit_code", "reason", "tags", "argv", "config", "nodes",
    "summary", "metrics", "resource_summary", "resources", "alerts", "evals"]);
  const extras = Object.keys(run).filter((k) => !shown.has(k) && !isEmpty(run[k]));
  const alerts = run.alerts || [];
  return h("div", {},
    h("dl", { class: "facts" }, facts.filter(([, v]) => !isEmpty(v))
      .map(([k, v]) => [h("dt", {}, k), h("dd", { class: k === "exit" && run.exit_code ? "bad" : null }, fmtValue(v))])),
    h("div", { class: "panels" },
      h("div", { class: "panel alerts" }, h("h3", {}, `alerts (${alerts.length})`), alertList(alerts)),
      h("div", { class: "panel resource-summary" }, h("h3", {}, "resources"), resourceSummary(run)),
      h("div", { class: "panel" }, h("h3", {}, "config"), keyValues(run.config)),
      h("div", { class: "panel nodes" }, h("h3", {}, `nodes and ranks (${(run.nodes || []).length})`), nodeTable(run.nodes || [])),
      extras.map((k) => h("div", { class: "panel" }, h("h3", {}, k), anyTable(run[k])))));
}

function alertList(alerts) {
  if (!alerts.length) return h("p", { class: "muted" }, "none");
  return h("ul", { class: "alert-list" }, alerts.map((a) => h("li", { class: `alert severity-${String(a.severity || "").toLowerCase()}` },
    h("span", { class: "badge" }, String(a.kind || "alert")), " ",
    h("span", { class: "ts" }, fmtTime(a.ts)), " ",
    h("span", { class: "where" }, a.node ? `${a.node}${a.rank === null || a.rank === undefined ? "" : `:${a.rank}`}` : ""), " ",
    h("span", { class: "message" }, String(a.message || "")))));
}

// Per node: each GPU's utilisation and peak memory used (the device's, as nvidia-smi shows it), and
// the host's CPU and peak RAM used (the whole machine's); beside each, the run's own peak (its process
// tree's GPU memory, its RSS).
function resourceSummary(run) {
  const rs = run.resource_summary || {};
  const devices = rs.devices || [];
  if (!devices.length) return h("p", { class: "muted" }, "no samples");
  const hosts = devices.filter((d) => String(d.device) === "host");
  const gpus = devices.filter((d) => String(d.device) !== "host");
  const table = (cls, columns, rows) => h("table", { class: `kv ${cls}` },
    h("thead", {}, h("tr", {}, columns.map(([label, num]) => h("th", { class: num ? "num" : null }, label)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((text, k) => h("td", { class: columns[k][1] ? "num" : null }, text))))));
  const overall = gpus.length > 1 && rs.gpu_util_avg !== null && rs.gpu_util_avg !== undefined
    ? h("p", { class: "muted" }, `${plural(gpus.length, "GPU")}: utilisation avg ${fmtPct(rs.gpu_util_avg)}, `
      + `max ${fmtPct(rs.gpu_util_max)}; most memory used on one GPU ${fmtBytes(rs.gpu_mem_peak_bytes)}`)
    : null;
  // A GPU is named as on the resource charts' legends: node/device.
  const where = (d) => (d.node ? `${d.node}/${d.device}` : String(d.device));
  return h("div", {},
    gpus.length ? [h("h4", {}, "GPUs"), overall,
      table("gpus", [["GPU"], ["util avg", 1], ["util max", 1], ["peak memory used", 1], ["run's peak", 1]],
        gpus.map((d) => [where(d), fmtPct(d.util_avg), fmtPct(d.util_max), fmtBytes(d.mem_peak_bytes),
          fmtBytes(d.proc_peak_bytes)]))] : null,
    hosts.length ? [h("h4", {}, "hosts"),
      table("hosts", [["node"], ["CPU avg", 1], ["CPU max", 1], ["peak RAM used", 1], ["run's peak RSS", 1]],
        hosts.map((d) => [String(d.node || ""), fmtPct(d.util_avg), fmtPct(d.util_max), fmtBytes(d.mem_peak_bytes),
          fmtBytes(d.proc_peak_bytes)])),
      h("p", { class: "muted note" }, "RAM used is the whole machine's; the run's peak is its process tree's"
        + " (with several ranks on a node, the largest rank's).")] : null,
    link(`/runs/${encodeURIComponent(run.id)}/resources`, "resource charts →"));
}

function nodeTable(nodes) {
  if (!nodes.length) return h("p", { class: "muted" }, "—");
  return h("table", { class: "kv" },
    h("thead", {}, h("tr", {}, ["node", "rank", "host", "pid", "last seen"].map((c) => h("th", {}, c)))),
    h("tbody", {}, nodes.map((n) => h("tr", {}, h("td", {}, String(n.node ?? "")), h("td", {}, String(n.rank ?? "")),
      h("td", {}, String(n.host ?? "")), h("td", {}, String(n.pid ?? "")), h("td", {}, fmtTime(n.last_seen))))));
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
    entries.map(([k, v]) => h("tr", {}, h("th", {}, h("span", { class: "key" }, k)), h("td", {}, fmtValue(v))))));
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
  const axis = h("select", { class: "x-axis", title: "x axis" }, h("option", { value: "step" }, "x: step"),
    h("option", { value: "time" }, "x: time"));
  axis.value = chartOptions.x;
  const tools = h("div", { class: "chart-tools" }, axis, "smoothing", smoothing,
    h("label", { for: "logscale", class: "toggle" }, log, " log scale"),
    h("span", { class: "live-note" }, "drag to zoom (full resolution), click a point for its logs"));
  // Says when the feed skipped live points because this tab fell behind (the charts then re-read them).
  const skipped = h("p", { class: "muted coalesced-note", hidden: true });
  const gapNote = h("p", { class: "gap-note", role: "status", hidden: true });
  const grid = h("div", { class: "charts" });
  append(holder, [tools, skipped, gapNote, grid]);
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
      found = chartCard(runId, name, onLeave, openLogs);
      cards.set(name, found);
      const names = [...cards.keys()].sort();
      const next = names[names.indexOf(name) + 1];
      grid.insertBefore(found, next ? cards.get(next) : null);
      observer.observe(found);
    }
    return found;
  }
  function openLogs(ms) {
    const q = new URLSearchParams({ since: new Date(ms - 30000).toISOString(), until: new Date(ms + 30000).toISOString() });
    navigate(`/runs/${encodeURIComponent(runId)}/logs?${q}`, false);
  }
  const redraw = () => {
    chartOptions.smoothing = Number(smoothing.value);
    chartOptions.log = log.checked;
    chartOptions.x = axis.value;
    for (const c of cards.values()) c.redraw();
  };
  smoothing.addEventListener("change", redraw);
  log.addEventListener("change", redraw);
  axis.addEventListener("change", redraw);

  // Subscribe first, so no point logged while the charts load is missed; live points append.
  let historyDone = false;
  let coalesced = 0;
  onLeave(subscribe(runId, "metrics", { limit: 0 }, {
    onFrame(frame) {
      if (frame.type === "history") { historyDone = historyDone || Boolean(frame.last); return; }
      for (const item of frame.items) card(item.name).addPoint(item.step, item.value, item.ts);
      if (frame.coalesced) {
        // Only the newest point per series came; the charts re-read what was skipped from storage.
        coalesced += frame.coalesced;
        skipped.hidden = false;
        skipped.textContent = `${plural(coalesced, "live point")} skipped while this tab was behind; re-read from storage.`;
        const newest = new Map();
        for (const item of frame.items) newest.set(item.name, Math.max(newest.get(item.name) ?? -Infinity, item.step));
        for (const [name, step] of newest) card(name).reload(step);
      }
      const empty = grid.querySelector(".empty");
      if (empty) empty.remove();
    },
    onGap() {
      // Storage was behind when the charts subscribed: points between stored and live may be missing.
      append(clear(gapNote), ["Some points between stored and live may be missing (storage was behind). ",
        h("button", { type: "button", class: "reload", onclick: () => location.reload() }, "reload")]);
      gapNote.hidden = false;
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
