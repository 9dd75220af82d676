// The run list: filters (name, project, status, tag), config and metric columns (last, min–max),
// sort by any column, select several runs to compare. Everything from the API is put on the page as text.

import { api, errorBox } from "./api.js";
import {
  STATUSES, append, clear, fmtClock, fmtDuration, fmtNum, fmtTime, fmtValue, h, link, plural, statusBadge,
} from "./dom.js";

//: How often the list is re-read while a listed run is running (its status, duration and metrics
//: change), and otherwise (a new run). The feed has no stream across runs to follow instead; a
//: hidden tab reads nothing and re-reads at once when shown again.
const RUNNING_REFRESH_MS = 3000;
const IDLE_REFRESH_MS = 10000;
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

  // A refresh changes only what changed: the chooser when the metric names do, the header when the
  // columns or the sort do, a row's cells when its values do; rows are moved, never re-made, so a
  // ticked box, a focus or a hover stays put.
  let chooserKey = null;
  function render() {
    const all = metricNames(state.runs);
    const shown = state.metrics ? state.metrics.filter((m) => all.includes(m)) : all.slice(0, DEFAULT_METRICS);
    const key = JSON.stringify([all, shown]);
    if (key !== chooserKey) {
      chooserKey = key;
      renderChooser(all, shown);
    }
    const shownNow = runTable(shown);
    if (holder.firstChild !== shownNow || holder.childNodes.length !== 1) clear(holder).appendChild(shownNow);
    compare.disabled = state.selected.size < 2;
    compare.textContent = `compare selected (${state.selected.size})`;
  }

  function renderChooser(all, shown) {
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

  const table = h("table", { class: "runs" });
  const thead = h("thead");
  const tbody = h("tbody");
  append(table, [thead, tbody]);
  const rows = new Map(); // run id -> {tr, pick, keys: what each cell after the checkbox shows}
  let headKey = null;

  // The table (kept between refreshes), or a note when no run matches.
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
    const key = JSON.stringify([config, metrics, state.sort, state.desc]);
    if (key !== headKey) {
      headKey = key;
      const head = h("tr", {}, h("th", {}, ""), header("status", "status"), header("name", "name"),
        header("project", "project"), header("tags", "tags"), header("started", "started_at"),
        header("duration", "duration_s", "num"),
        config.map((c) => header(c, `config:${c}`, "config")),
        metrics.map((m) => header(m, `metric:${m}`, "num")));
      // Which columns are config values and which are metric summaries (a key can name both, e.g. lr).
      const groups = h("tr", { class: "groups" }, h("th", { colspan: 7 }),
        config.length ? h("th", { colspan: config.length, class: "group" }, "config") : [],
        metrics.length ? h("th", { colspan: metrics.length, class: "group" }, "metrics: last, min – max") : []);
      append(clear(thead), [groups, head]);
    }
    const listed = new Set();
    runs.forEach((run, k) => {
      listed.add(run.id);
      const tr = syncRow(run, config, metrics);
      if (tbody.children[k] !== tr) tbody.insertBefore(tr, tbody.children[k] || null);
    });
    for (const [id, row] of rows) {
      if (!listed.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    return table;
  }

  // A run's row, made once; of its cells only those whose values changed are made again.
  function syncRow(run, config, metrics) {
    let row = rows.get(run.id);
    if (!row) {
      const pick = h("input", { type: "checkbox", class: "pick", value: run.id, title: "select to compare" });
      pick.addEventListener("change", () => {
        if (pick.checked) state.selected.add(run.id);
        else state.selected.delete(run.id);
        compare.disabled = state.selected.size < 2;
        compare.textContent = `compare selected (${state.selected.size})`;
      });
      row = { tr: h("tr", { "data-run": run.id }, h("td", {}, pick)), pick, keys: [] };
      rows.set(run.id, row);
    }
    row.pick.checked = state.selected.has(run.id);
    const summary = run.summary || {};
    const cells = [
      [run.status, () => h("td", {}, statusBadge(run.status))],
      [run.name || run.id, () => h("td", { class: "name" }, link(`/runs/${encodeURIComponent(run.id)}`, run.name || run.id))],
      [run.project || "", () => h("td", {}, run.project || "")],
      [JSON.stringify(run.tags || []), () => h("td", { class: "tags" }, (run.tags || []).map((t) => h("span", { class: "tag" }, String(t))))],
      [fmtTime(run.started_at), () => h("td", { class: "time" }, fmtTime(run.started_at))],
      [fmtDuration(run.duration_s), () => h("td", { class: "num" }, fmtDuration(run.duration_s))],
      ...config.map((c) => [`${c}=${fmtValue((run.config || {})[c])}`, () => h("td", { class: "config" }, fmtValue((run.config || {})[c]))]),
      ...metrics.map((m) => [`${m}=${JSON.stringify(summary[m] || null)}`, () => {
        const s = summary[m];
        if (!s) return h("td", { class: "num muted" }, "—");
        return h("td", { class: "num" }, fmtNum(s.last), h("span", { class: "range" }, `${fmtNum(s.min)} – ${fmtNum(s.max)}`));
      }]),
    ];
    cells.forEach(([key, make], k) => {
      if (row.keys[k] === key) return;
      row.keys[k] = key;
      const old = row.tr.children[k + 1];
      if (old) old.replaceWith(make());
      else row.tr.appendChild(make());
    });
    while (row.tr.children.length > cells.length + 1) row.tr.lastChild.remove();
    row.keys.length = cells.length;
    return row.tr;
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
      note.textContent = `${plural(state.runs.length, "run")} · updated ${fmtClock(new Date())}`;
    } catch (err) {
      // A failed refresh leaves the rows shown (and says so); a failed first read shows the error.
      if (holder.firstChild === table) note.textContent = `not updated: ${err.message}`;
      else clear(holder).appendChild(errorBox(err));
    }
  }

  // One read at a time; the next is due sooner while a listed run is running.
  let timer = null, loading = null, left = false;
  function refresh() {
    clearTimeout(timer);
    if (!loading) {
      loading = load().finally(() => {
        loading = null;
        if (left) return;
        const running = state.runs.some((r) => r.status === "running");
        timer = setTimeout(tick, running ? RUNNING_REFRESH_MS : IDLE_REFRESH_MS);
      });
    }
  }
  // A hidden tab reads nothing; showing it again reads at once and starts the timer again.
  function tick() {
    if (!document.hidden) refresh();
  }
  const whenShown = () => { if (!document.hidden) refresh(); };
  document.addEventListener("visibilitychange", whenShown);
  refresh();
  onLeave(() => {
    left = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", whenShown);
  });
}
