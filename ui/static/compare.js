// /compare?runs=A,B&metric=loss: one metric of several runs overlaid (GET /api/metrics), with a
// table of each run's last/min/max. Run names and metric names are put on the page as text.

import { api, errorBox } from "./api.js";
import { append, fmtNum, h, link, plural, statusBadge } from "./dom.js";
import { multiChart } from "./plot.js";

export async function compareView(params, { main, crumbs, navigate, onLeave }) {
  const ids = (params.get("runs") || "").split(",").map((s) => s.trim()).filter(Boolean);
  document.title = "compare · runstream";
  append(crumbs, [link("/", "runs"), " / compare"]);
  if (ids.length < 1) {
    main.appendChild(h("p", { class: "muted" }, "Select runs in the run list, then \"compare selected\"."));
    return;
  }
  const metric = h("select", { class: "metric-choice" });
  const log = h("input", { type: "checkbox", id: "cmp-log" });
  const bar = h("section", { class: "bar" }, h("span", { class: "muted" }, "metric"), metric,
    h("label", { for: "cmp-log", class: "toggle" }, log, " log scale"));
  const holder = h("div", { class: "compare-chart" });
  const summary = h("div", { class: "table-wrap" });
  append(main, [h("h1", {}, `compare ${plural(ids.length, "run")}`), bar, holder, summary]);

  let runs;
  try {
    const found = await Promise.all(ids.map((id) => api(`/api/runs/${encodeURIComponent(id)}`).catch(() => ({ id, summary: {} }))));
    runs = found;
  } catch (err) {
    main.appendChild(errorBox(err));
    return;
  }
  const names = [...new Set(runs.flatMap((r) => Object.keys(r.summary || {})))].sort();
  if (!names.length) {
    holder.appendChild(h("p", { class: "muted" }, "These runs have no metrics."));
    return;
  }
  for (const n of names) metric.appendChild(h("option", { value: n }, n));
  metric.value = names.includes(params.get("metric")) ? params.get("metric") : names.includes("loss") ? "loss" : names[0];
  const label = (id) => {
    const run = runs.find((r) => r.id === id);
    return run && run.name ? `${run.name} (${id.slice(0, 8)})` : id;
  };
  let chart = null;

  async function draw() {
    const name = metric.value;
    history.replaceState(null, "", `/compare?runs=${ids.map(encodeURIComponent).join(",")}&metric=${encodeURIComponent(name)}`);
    let body;
    try {
      body = await api("/api/metrics", { runs: ids.join(","), name, points: 2000 });
    } catch (err) {
      holder.replaceChildren(errorBox(err));
      return;
    }
    if (chart) chart.destroy();
    chart = multiChart(name, { xLabel: "step", log: log.checked, height: 320 });
    holder.replaceChildren(chart);
    const series = body.series || [];
    chart.set(series.map((s) => label(s.run)), series.map((s) => s.points || []));
    summary.replaceChildren(h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["run", "status", `${name} last`, "min", "max", "points"].map((c) => h("th", {}, c)))),
      h("tbody", {}, series.map((s) => {
        const run = runs.find((r) => r.id === s.run) || {};
        const st = (run.summary || {})[name] || {};
        return h("tr", { "data-run": s.run }, h("td", { class: "name" }, link(`/runs/${encodeURIComponent(s.run)}`, label(s.run))),
          h("td", {}, statusBadge(run.status)), h("td", { class: "num" }, fmtNum(st.last)),
          h("td", { class: "num" }, fmtNum(st.min)), h("td", { class: "num" }, fmtNum(st.max)),
          h("td", { class: "num" }, String(s.total ?? (s.points || []).length)));
      }))));
  }
  metric.addEventListener("change", draw);
  log.addEventListener("change", draw);
  onLeave(() => { if (chart) chart.destroy(); });
  draw();
}
