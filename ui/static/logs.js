// The logs panel: search form, the log view, and cursor paging.
// Data from the API is only ever put on the page as text (never parsed as HTML).

import { api, errorBox } from "./api.js";
import { LEVELS, append, clear, fmtClock, h } from "./dom.js";

// Values are what the API's level= takes: one level or several, comma-separated.
const LEVEL_CHOICES = [["", "any level"], ["WARNING,ERROR,CRITICAL", "warning and above"],
  ["ERROR,CRITICAL", "error and above"], ...LEVELS.map((l) => [l, `${l} only`])];
const SINCE_PRESETS = [["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"], ["", "all time"]];
const LOG_PAGE = 500;

export function logPanel(runId, holder, params) {
  const q = h("input", { type: "search", class: "q", placeholder: "search logs (words or \"a phrase\")",
    value: params.get("q") || "" });
  const regex = h("input", { type: "checkbox", id: "regex" });
  regex.checked = params.get("regex") === "1";
  const level = h("select", { title: "level" }, LEVEL_CHOICES.map(([value, label]) => h("option", { value }, label)));
  const wantedLevel = (params.get("level") || "").toUpperCase();
  if (!LEVEL_CHOICES.some(([value]) => value === wantedLevel)) {
    level.appendChild(h("option", { value: wantedLevel }, wantedLevel));
  }
  level.value = wantedLevel;
  const since = h("select", { title: "time range" },
    SINCE_PRESETS.map(([value, label]) => h("option", { value }, label)));
  const wanted = params.has("since") ? params.get("since") : "";
  if (!SINCE_PRESETS.some(([value]) => value === wanted)) {
    since.appendChild(h("option", { value: wanted }, `since ${wanted}`));
  }
  since.value = wanted;
  const form = h("form", { class: "filters" }, q,
    h("label", { for: "regex", class: "toggle" }, regex, " regex"), level, since,
    h("button", { type: "submit" }, "search"));
  const status = h("span", { class: "muted" });
  const view = h("div", { class: "logview", role: "log" });
  const more = h("button", { type: "button", class: "more", hidden: true }, "load more");
  append(holder, [h("div", { class: "bar" }, form, status), view, more]);

  let cursor = null;
  let shown = 0;
  let generation = 0;

  function query() {
    const text = q.value.trim();
    return {
      q: regex.checked ? null : text,
      regex: regex.checked ? text : null,
      level: level.value,
      since: since.value,
      limit: LOG_PAGE,
    };
  }

  async function load(reset) {
    const mine = reset ? ++generation : generation;
    if (reset) {
      cursor = null;
      shown = 0;
      clear(view);
    }
    more.hidden = true;
    status.textContent = "searching…";
    let body;
    try {
      body = await api(`/api/runs/${encodeURIComponent(runId)}/logs`, { ...query(), cursor });
    } catch (err) {
      if (mine !== generation) return;
      status.textContent = "";
      view.appendChild(errorBox(err));
      return;
    }
    if (mine !== generation) return;
    const lines = body.lines || [];
    const fragment = document.createDocumentFragment();
    for (const line of lines) fragment.appendChild(logLine(line));
    view.appendChild(fragment);
    shown += lines.length;
    cursor = body.next_cursor || null;
    more.hidden = !cursor;
    status.textContent = shown ? `${shown} lines${cursor ? ", more available" : ""}` : "";
    if (!shown) view.appendChild(h("p", { class: "muted" }, "No matching lines."));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const page = new URLSearchParams();
    if (q.value.trim()) page.set("q", q.value.trim());
    if (regex.checked) page.set("regex", "1");
    if (level.value) page.set("level", level.value);
    if (since.value) page.set("since", since.value);
    history.replaceState(null, "", `/runs/${encodeURIComponent(runId)}/logs${page.toString() ? `?${page}` : ""}`);
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
}

function logLine(line) {
  const level = LEVELS.includes(line.level) ? line.level.toLowerCase() : "none";
  const where = line.rank === null || line.rank === undefined ? `${line.node || ""}` : `${line.node || ""}:${line.rank}`;
  return h("div", { class: `line level-${level}${line.stream === "stderr" ? " stderr" : ""}` },
    h("span", { class: "ts", title: line.ts || "" }, fmtClock(line.ts)),
    h("span", { class: "where" }, where),
    h("span", { class: "lvl" }, line.level || ""),
    h("span", { class: "text" }, line.line));
}
