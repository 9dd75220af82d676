// The run list: filters (name, project, status, tag), config and metric columns (last, min–max),
// sort by any column, select several runs to compare. Everything from the API is put on the page as text.

import { api, errorBox } from "./api.js";
import {
  STATUSES, append, clear, fmtClock, fmtDuration, fmtNum, fmtTime, fmtValue, h, link, statusBadge,
} from "./dom.js";

const LIST_REFRESH_MS = 15000;
const DEFAULT_METRICS = 4;
const MAX_CONFIG_COLUMNS = 6;

// Config keys whose values differ between runs come first: those are what tells runs apart.
function configColumns(runs) {
  const values = new Map();
  for (const run of runs) {
    for (const [k, v] of Object.entries(run.config && typeof run.config === "object" ? run.config : {})) {
      if (k.startsWith("_")) continue; // recorded by runstream itself (e.g. _system), shown on the run page
      if (!values.has(k)) values.set(k, new Set());
      values.get(k).add(JSON.stringify(v));
    }
  }
  return [...values.entries()]
    .sort((a, b) => (b[1].size > 1) - (a[1].size > 1) || (a[0] < b[0] ? -1 : 1))
    .slice(0, MAX_CONFIG_COLUMNS).map(([k]) => k);
}

function metricNames(runs) {
  const counts = new Map();
  for (const run of runs) {
    for (const name of Object.keys(run.summary || {})) counts.set(name, (counts.get(name) || 0) + 1);
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([n]) => n);
}

// The value a column sorts by; undefined sorts last either way.
function sortValue(run, key) {
  if (key.startsWith("metric:")) {
    const v = ((run.summary || {})[key.slice(7)] || {}).last;
    return typeof v === "number" ? v : undefined;
  }
  if (key.startsWith("config:")) {
    const v = (run.config || {})[key.slice(7)];
    return v === null || v === undefined ? undefined : v;
  }
  const v = key === "tags" ? (run.tags || []).join(",") : run[key];
  return v === null || v === undefined || v === "" ? undefined : v;
}

function compareValues(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(typeof a === "object" ? JSON.stringify(a) : a).localeCompare(String(typeof b === "object" ? JSON.stringify(b) : b), undefined, { numeric: true });
}

export function listView(params, { main, crumbs, navigate, onLeave }) {
  document.title = "runs · runstream";
  append(crumbs, ["runs"]);
  const name = h("input", { type: "search", class: "name-filter", placeholder: "name contains", value: params.get("name") || "" });
  const project = h("input", { type: "search", placeholder: "project", value: params.get("project") || "" });
  const tag = h("input", { type: "search", placeholder: "tag", size: 10, value: params.get("tag") || "" });
  const status = h("select", {}, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  status.value = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const form = h("form", { class: "filters" }, name, project, tag, status, h("button", { type: "submit" }, "filter"));
  const chooser = h("details", { class: "chooser" }, h("summary", {}, "metric columns"));
  const compare = h("button", { type: "button", class: "compare", disabled: true }, "compare selected");
  const note = h("span", { class: "muted" });
  const holder = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading runs…"));
  append(main, [h("section", { class: "bar" }, form, chooser, compare, note), holder]);

  const state = {
    runs: [], selected: new Set(), sort: params.get("sort") || "", desc: params.get("order") !== "asc",
    metrics: params.has("metrics") ? params.get("metrics").split(",").filter(Boolean) : null,
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(listUrl(), true);
  });
  function listUrl() {
    const q = new URLSearchParams();
    for (const [k, el] of [["name", name], ["project", project], ["tag", tag]]) if (el.value.trim()) q.set(k, el.value.trim());
    if (status.value) q.set("status", status.value);
    if (state.sort) { q.set("sort", state.sort); q.set("order", state.desc ? "desc" : "asc"); }
    if (state.metrics) q.set("metrics", state.metrics.join(","));
    return q.toString() ? `/?${q}` : "/";
  }
  compare.addEventListener("click", () => {
    navigate(`/compare?runs=${[...state.selected].map(encodeURIComponent).join(",")}`, false);
  });

  function render() {
    const all = metricNames(state.runs);
    const shown = state.metrics ? state.metrics.filter((m) => all.includes(m)) : all.slice(0, DEFAULT_METRICS);
    clear(chooser).appendChild(h("summary", {}, `metric columns (${shown.length}/${all.length})`));
    const box = h("div", { class: "chooser-list" }, all.length ? all.map((m) => {
      const cb = h("input", { type: "checkbox", value: m });
      cb.checked = shown.includes(m);
      cb.addEventListener("change", () => {
        const now = [...box.querySelectorAll("input:checked")].map((c) => c.value);
        state.metrics = now;
        history.replaceState(null, "", listUrl());
        render();
        chooser.open = true;
      });
      return h("label", { class: "toggle" }, cb, m);
    }) : h("span", { class: "muted" }, "no metrics logged"));
    chooser.appendChild(box);
    clear(holder).appendChild(runTable(shown));
    compare.disabled = state.selected.size < 2;
    compare.textContent = `compare selected (${state.selected.size})`;
  }

  function header(label, key, cls) {
    const arrow = state.sort === key ? (state.desc ? " ▾" : " ▴") : "";
    const th = h("th", { class: `sortable ${cls || ""}`, "data-sort": key, title: `sort by ${label}` }, label, arrow);
    th.addEventListener("click", () => {
      state.desc = state.sort === key ? !state.desc : key !== "name" && key !== "project";
      state.sort = key;
      history.replaceState(null, "", listUrl());
      render();
    });
    return th;
  }

  function runTable(metrics) {
    const runs = state.runs.slice();
    if (!runs.length) return h("p", { class: "muted" }, "No runs match. Start one with `runstream run -- CMD` or runstream.init() in your script.");
    if (state.sort) {
      const have = runs.filter((r) => sortValue(r, state.sort) !== undefined);
      const missing = runs.filter((r) => sortValue(r, state.sort) === undefined);
      have.sort((a, b) => compareValues(sortValue(a, state.sort), sortValue(b, state.sort)) * (state.desc ? -1 : 1));
      runs.splice(0, runs.length, ...have, ...missing);
    }
    const config = configColumns(runs);
    const head = h("tr", {}, h("th", {}, ""), header("status", "status"), header("name", "name"),
      header("project", "project"), header("tags", "tags"), header("started", "started_at"),
      header("duration", "duration_s", "num"),
      config.map((c) => header(c, `config:${c}`, "config")),
      metrics.map((m) => header(m, `metric:${m}`, "num")));
    // Which columns are config values and which are metric summaries (a key can name both, e.g. lr).
    const groups = h("tr", { class: "groups" }, h("th", { colspan: 7 }),
      config.length ? h("th", { colspan: config.length, class: "group" }, "config") : [],
      metrics.length ? h("th", { colspan: metrics.length, class: "group" }, "metrics: last, min – max") : []);
    const rows = runs.map((run) => {
      const summary = run.summary || {};
      const pick = h("input", { type: "checkbox", class: "pick", value: run.id, title: "select to compare" });
      pick.checked = state.selected.has(run.id);
      pick.addEventListener("change", () => {
        if (pick.checked) state.selected.add(run.id);
        else state.selected.delete(run.id);
        compare.disabled = state.selected.size < 2;
        compare.textContent = `compare selected (${state.selected.size})`;
      });
      return h("tr", { "data-run": run.id },
        h("td", {}, pick),
        h("td", {}, statusBadge(run.status)),
        h("td", { class: "name" }, link(`/runs/${encodeURIComponent(run.id)}`, run.name || run.id)),
        h("td", {}, run.project || ""),
        h("td", { class: "tags" }, (run.tags || []).map((t) => h("span", { class: "tag" }, String(t)))),
        h("td", { class: "time" }, fmtTime(run.started_at)),
        h("td", { class: "num" }, fmtDuration(run.duration_s)),
        config.map((c) => h("td", { class: "config" }, fmtValue((run.config || {})[c]))),
        metrics.map((m) => {
          const s = summary[m];
          if (!s) return h("td", { class: "num muted" }, "—");
          return h("td", { class: "num" }, fmtNum(s.last),
            h("span", { class: "range" }, `${fmtNum(s.min)} – ${fmtNum(s.max)}`));
        }));
    });
    return h("table", { class: "runs" }, h("thead", {}, groups, head), h("tbody", {}, rows));
  }

  async function load() {
    try {
      const body = await api("/api/runs", {
        project: params.get("project"), status: status.value, name: params.get("name"), tag: params.get("tag"),
      });
      state.runs = body.runs || [];
      const ids = new Set(state.runs.map((r) => r.id));
      for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
      render();
      note.textContent = `${state.runs.length} runs · updated ${fmtClock(new Date())}`;
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
