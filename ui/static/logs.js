// The logs panel: live tail over the feed (follow/pause) and time-range search over the HTTP API,
// one virtualised view (only the rows on screen exist in the DOM), hits highlighted, download.
// Data from the API is only ever put on the page as text (never parsed as HTML).

import { api, errorBox } from "./api.js";
import { renderLine } from "./ansi.js";
import { LEVELS, append, clear, fmtClock, h, plural } from "./dom.js";
import { subscribe } from "./feed.js";

// Values are what the API's level= takes: one level or several, comma-separated.
const LEVEL_CHOICES = [["", "any level"], ["WARNING,ERROR,CRITICAL", "warning and above"],
  ["ERROR,CRITICAL", "error and above"], ...LEVELS.map((l) => [l, `${l} only`])];
const SINCE_PRESETS = [["", "live tail"], ["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"],
  ["0", "whole run"], ["custom", "custom…"]];
const LOG_PAGE = 500;
const TAIL_LINES = 1000;
const ROW_PX = 17;
const OVERSCAN_ROWS = 40;
//: Lines kept in memory by the live tail; the oldest go first, TRIM_LINES at a time (not one
//: splice of the whole array per live line once the tail is full).
const MAX_TAIL_LINES = 200000;
const TRIM_LINES = 20000;
const HISTOGRAM_BUCKETS = 80;
//: A search fetches its next page when a scroll comes this close to its last row.
const END_ROWS = 50;
//: Download fetches at most this many matching lines from the API (pages of 10000).
const MAX_DOWNLOAD_LINES = 500000;

// A scrolling list of log lines that creates DOM rows only for what is on screen (plus a margin).
// Rows are kept between renders: appending a line adds its row and drops the one that left the
// margin, so the cost of a live line does not grow with the rows already shown (bench/ui_fresh.py).
class LogView {
  constructor() {
    this.el = h("div", { class: "logview", role: "log" });
    this.spacer = h("div", { class: "spacer" });
    this.rows = h("div", { class: "rows" });
    this.note = h("p", { class: "muted", hidden: true });
    append(this.el, [this.note, this.spacer]);
    this.spacer.appendChild(this.rows);
    // One entry per row on screen: a record, or one line of a multi-line record (see pushRows).
    this.lines = [];
    // Records held (a multi-line record is one record and several rows).
    this.count = 0;
    // Called when a scroll reaches the last rows (a search then fetches its next page).
    this.onEnd = null;
    // Lines dropped from the front so far: row numbers below are absolute (index + base),
    // so rows already in the DOM keep their number when old lines are let go.
    this.base = 0;
    this.q = null;
    this.regex = null;
    this.follow = true;
    this.first = -1;
    this.last = -1;
    this.el.addEventListener("scroll", () => {
      this.render(false);
      if (this.onEnd && this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - END_ROWS * ROW_PX) this.onEnd();
    });
  }

  set(lines) {
    this.lines = [];
    this.count = 0;
    this.base = 0;
    this.first = this.last = -1;
    this.append(lines);
  }

  append(lines) {
    if (!lines.length) return;
    for (const line of lines) pushRows(this.lines, line);
    this.count += lines.length;
    if (this.lines.length > MAX_TAIL_LINES + TRIM_LINES) {
      const over = this.lines.length - MAX_TAIL_LINES;
      for (let k = 0; k < over; k++) if (!this.lines[k].continued) this.count -= 1;
      this.lines.splice(0, over);
      this.base += over;
    }
    this.render(true);
  }

  // The records shown (not their rows), oldest first, as the API gave them.
  records() {
    return this.lines.filter((row) => !row.continued).map((row) => row.record || row);
  }

  message(text) {
    this.note.hidden = !text;
    this.note.textContent = text || "";
  }

  // Lines base+from .. base+to-1 as rows, in a fragment.
  fragment(from, to) {
    const fragment = document.createDocumentFragment();
    for (let k = from; k < to; k++) fragment.appendChild(logLine(this.lines[k - this.base], this.q, this.regex));
    return fragment;
  }

  render(changed) {
    const n = this.lines.length;
    this.spacer.style.height = `${n * ROW_PX}px`;
    if (changed && this.follow) this.el.scrollTop = this.el.scrollHeight;
    const top = this.el.scrollTop, height = this.el.clientHeight || 600;
    const first = this.base + Math.max(0, Math.floor(top / ROW_PX) - OVERSCAN_ROWS);
    const last = this.base + Math.min(n, Math.ceil((top + height) / ROW_PX) + OVERSCAN_ROWS);
    if (first === this.first && last === this.last) return;
    if (first >= this.last || last <= this.first || this.first < 0) {
      clear(this.rows).appendChild(this.fragment(first, last));
    } else {
      // The new range overlaps the rows shown: drop what left it, add what entered it.
      for (let k = this.first; k < first; k++) this.rows.firstChild.remove();
      for (let k = last; k < this.last; k++) this.rows.lastChild.remove();
      if (first < this.first) this.rows.insertBefore(this.fragment(first, this.first), this.rows.firstChild);
      if (last > this.last) this.rows.appendChild(this.fragment(this.last, last));
    }
    this.first = first;
    this.last = last;
    this.rows.style.transform = `translateY(${(first - this.base) * ROW_PX}px)`;
  }
}

export function logPanel(runId, holder, params) {
  const q = h("input", { type: "search", class: "q", placeholder: "search logs (words or \"a phrase\")",
    value: params.get("q") || "" });
  const regex = h("input", { type: "checkbox", id: "regex" });
  regex.checked = params.get("regex") === "1";
  const level = h("select", { title: "level", class: "level" },
    LEVEL_CHOICES.map(([value, label]) => h("option", { value }, label)));
  const wantedLevel = (params.get("level") || "").toUpperCase();
  if (!LEVEL_CHOICES.some(([value]) => value === wantedLevel)) {
    level.appendChild(h("option", { value: wantedLevel }, wantedLevel));
  }
  level.value = wantedLevel;
  const node = h("input", { type: "text", class: "node", placeholder: "node", size: 10, value: params.get("node") || "" });
  const rank = h("input", { type: "number", class: "rank", placeholder: "rank", min: 0, value: params.get("rank") || "" });
  const since = h("select", { title: "time range", class: "since" },
    SINCE_PRESETS.map(([value, label]) => h("option", { value }, label)));
  const custom = h("input", { type: "text", class: "custom", placeholder: "since: 2h, 2026-11-23T10:00:00Z",
    hidden: true });
  const until = h("input", { type: "text", class: "until", placeholder: "until (empty: now)", hidden: true,
    value: params.get("until") || "" });
  const wanted = params.has("since") ? params.get("since") : (params.get("q") ? "0" : "");
  if (!SINCE_PRESETS.some(([value]) => value === wanted) || params.get("until")) {
    since.value = "custom";
    custom.hidden = false;
    custom.value = wanted;
  } else {
    since.value = wanted;
  }
  until.hidden = custom.hidden;
  since.addEventListener("change", () => { custom.hidden = until.hidden = since.value !== "custom"; });
  const form = h("form", { class: "filters" }, q,
    h("label", { for: "regex", class: "toggle" }, regex, " regex"), level, node, rank, since, custom, until,
    h("button", { type: "submit" }, "search"));
  const pause = h("button", { type: "button", class: "pause" }, "pause");
  const download = h("button", { type: "button", class: "download" }, "download");
  const status = h("span", { class: "muted status" });
  const view = new LogView();
  const more = h("button", { type: "button", class: "more", hidden: true }, "load more");
  // Shown when the feed could not vouch for the lines between the history and the live ones.
  const reload = h("button", { type: "button", class: "reload" }, "reload");
  const gapNote = h("p", { class: "gap-note", role: "status", hidden: true },
    "Some lines between history and live may be missing (storage was behind when the tail started). ", reload);
  const histogram = h("div", { class: "histogram", title: "matching lines over time; click a bar to search it" });
  const histNote = h("span", { class: "muted hist-note" });
  append(holder, [h("div", { class: "bar" }, form, pause, download, status),
    h("div", { class: "hist-wrap" }, histNote, histogram), gapNote, view.el, more]);

  let cursor = null;
  let generation = 0;
  let unsubscribe = null;
  let unseen = 0;

  function filters() {
    const text = q.value.trim();
    return {
      q: regex.checked ? null : text || null,
      regex: regex.checked && text ? text : null,
      level: level.value || null,
      node: node.value.trim() || null,
      rank: rank.value === "" ? null : Number(rank.value),
    };
  }

  function sinceValue() {
    return since.value === "custom" ? custom.value.trim() : since.value;
  }

  function untilValue() {
    return since.value === "custom" ? until.value.trim() || null : null;
  }

  // Matching lines per time bucket over the chosen range (the whole run for the live tail); the
  // server narrows the range to the run's lines in it, so a "7 days" search of a short run still
  // spreads its matches over the bars.
  async function loadHistogram() {
    const mine = generation;
    const s = sinceValue();
    let body;
    try {
      body = await api(`/api/runs/${encodeURIComponent(runId)}/logs/histogram`, {
        ...filters(), since: s && s !== "0" ? s : null, until: untilValue(), buckets: HISTOGRAM_BUCKETS,
      });
    } catch (err) {
      if (mine === generation) { clear(histogram); histNote.textContent = err.status === 404 ? "" : `histogram: ${err.message}`; }
      return;
    }
    if (mine !== generation) return;
    const buckets = body.buckets || [];
    const top = Math.max(1, ...buckets.map((b) => b.count));
    histNote.textContent = `${plural(body.total, "matching line")}` + (buckets.length
      ? ` · ${fmtClock(buckets[0].ts)} – ${fmtClock(Date.parse(buckets[buckets.length - 1].ts) + body.width_s * 1000)}` : "");
    clear(histogram).append(...buckets.map((b) => {
      const bar = h("div", { class: "hbar", "data-count": String(b.count), title: `${fmtClock(b.ts)}: ${b.count}` },
        h("div", { class: "fill" }));
      bar.firstChild.style.height = `${Math.round((100 * b.count) / top)}%`;
      bar.addEventListener("click", () => {
        since.value = "custom";
        custom.hidden = until.hidden = false;
        custom.value = b.ts;
        until.value = bucketEnd(b.ts, body.width_s);
        form.requestSubmit();
      });
      return bar;
    }));
  }

  function stopTail() {
    if (unsubscribe) unsubscribe();
    unsubscribe = null;
  }

  function tail() {
    const mine = ++generation;
    stopTail();
    gapNote.hidden = true;
    view.set([]);
    view.follow = true;
    pause.hidden = false;
    pause.textContent = "pause";
    more.hidden = true;
    status.textContent = "connecting…";
    const f = filters();
    const wantedFilters = { limit: TAIL_LINES };
    for (const [k, v] of Object.entries(f)) if (v !== null) wantedFilters[k] = v;
    let history = [];
    let behind = 0;
    unsubscribe = subscribe(runId, "logs", wantedFilters, {
      onFrame(frame) {
        if (mine !== generation) return;
        let items = frame.items || [];
        if (frame.type === "history") {
          // History comes in several frames; show it at once when the last one is in.
          for (const item of items) history.push(item);
          if (!frame.last) return;
          items = history;
          history = [];
        }
        view.append(items);
        if (!view.follow) unseen += items.length;
        status.textContent = `${plural(view.count, "line")} · live${unseen ? ` · ${unseen} new below` : ""}`
          + (behind ? ` · fell behind ${plural(behind, "line")}, re-read from storage` : "");
        view.message(view.count ? "" : "No matching lines yet; new ones appear here.");
      },
      onStatus(text) {
        if (mine === generation) status.textContent = text;
      },
      onDropped(count) {
        // The feed ended the tail because this tab fell behind; it resumes from its cursor.
        if (mine === generation) behind += count;
      },
      onGap() {
        // A resume cannot fill it (its cursor is past it): "reload" starts the tail afresh.
        if (mine === generation) gapNote.hidden = false;
      },
      onError() {
        // No live feed (an API-only server): fall back to a search over stored lines.
        if (mine === generation && !view.count) search(true);
      },
    });
  }

  async function search(reset) {
    const mine = reset ? ++generation : generation;
    if (reset) {
      stopTail();
      gapNote.hidden = true;
      cursor = null;
      view.follow = false;
      view.set([]);
    }
    pause.hidden = true;
    more.hidden = true;
    status.textContent = "searching…";
    const f = filters();
    const s = sinceValue();
    let body;
    try {
      body = await api(`/api/runs/${encodeURIComponent(runId)}/logs`, {
        ...f, since: s && s !== "0" ? s : null, until: untilValue(), limit: LOG_PAGE, cursor,
      });
    } catch (err) {
      if (mine !== generation) return;
      status.textContent = "";
      view.message("");
      holder.insertBefore(errorBox(err), view.el);
      return;
    }
    if (mine !== generation) return;
    const lines = body.lines || [];
    view.append(lines);
    cursor = body.next_cursor || null;
    more.hidden = !cursor;
    const shown = view.count;
    status.textContent = shown ? `${plural(shown, "line")}${cursor ? ", more available" : ""}` : "";
    view.message(shown ? "" : "No matching lines.");
  }

  function run() {
    for (const box of holder.querySelectorAll(".error")) box.remove();
    view.q = regex.checked ? null : q.value.trim() || null;
    view.regex = regex.checked ? q.value.trim() || null : null;
    if (sinceValue() === "") tail();
    else search(true);
    loadHistogram();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const page = new URLSearchParams();
    if (q.value.trim()) page.set("q", q.value.trim());
    if (regex.checked) page.set("regex", "1");
    if (level.value) page.set("level", level.value);
    if (node.value.trim()) page.set("node", node.value.trim());
    if (rank.value !== "") page.set("rank", rank.value);
    if (sinceValue() !== "" && !(sinceValue() === "0" && q.value.trim())) page.set("since", sinceValue());
    if (untilValue()) page.set("until", untilValue());
    history.replaceState(null, "", `/runs/${encodeURIComponent(runId)}/logs${page.toString() ? `?${page}` : ""}`);
    run();
  });
  pause.addEventListener("click", () => {
    view.follow = !view.follow;
    pause.textContent = view.follow ? "pause" : "follow";
    if (view.follow) {
      unseen = 0;
      view.render(true);
    }
  });
  view.el.addEventListener("wheel", () => {
    // Scrolling up pauses the tail, as in a terminal; "follow" resumes it.
    if (unsubscribe && view.follow && view.el.scrollTop + view.el.clientHeight < view.el.scrollHeight - ROW_PX) {
      view.follow = false;
      pause.textContent = "follow";
    }
  }, { passive: true });
  // The live tail saves what it holds; a search saves every matching line, fetched page by page.
  download.addEventListener("click", async () => {
    let lines = view.records();
    const s = sinceValue();
    if (s !== "") {
      lines = [];
      let next = null;
      download.disabled = true;
      try {
        do {
          status.textContent = `downloading… ${plural(lines.length, "line")}`;
          const body = await api(`/api/runs/${encodeURIComponent(runId)}/logs`, {
            ...filters(), since: s !== "0" ? s : null, until: untilValue(), limit: 10000, cursor: next,
          });
          lines = lines.concat(body.lines || []);
          next = (body.lines || []).length ? body.next_cursor : null;
        } while (next && lines.length < MAX_DOWNLOAD_LINES);
      } catch (err) {
        status.textContent = `download failed: ${err.message}`;
        download.disabled = false;
        return;
      }
      download.disabled = false;
      status.textContent = `${plural(lines.length, "line")} downloaded`;
    }
    const text = lines.map((l) => `${l.ts}\t${l.node || ""}\t${l.rank ?? ""}\t${l.level || ""}\t${l.line}`).join("\n");
    const link = h("a", { href: URL.createObjectURL(new Blob([text + "\n"], { type: "text/plain" })),
      download: `${runId}-logs.txt` });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  });
  more.addEventListener("click", () => search(false));
  reload.addEventListener("click", () => tail());
  // Scrolling to the end of a search's lines loads its next page, as "load more" does.
  view.onEnd = () => {
    if (!more.hidden) search(false);
  };
  run();
  return stopTail;
}

// The last microsecond of a histogram bucket starting at `ts` (RFC 3339 with microseconds), as an
// inclusive search `until`: a Date keeps milliseconds only, and the run's last line, which the
// server's range ends on, can sit in its bucket's last millisecond.
function bucketEnd(ts, widthS) {
  const match = /^(.*?)(?:\.(\d+))?Z$/.exec(ts);
  if (!match) return new Date(Date.parse(ts) + widthS * 1000).toISOString();
  const us = Date.parse(`${match[1]}Z`) * 1000 + Number((match[2] || "").padEnd(6, "0").slice(0, 6))
    + Math.round(widthS * 1e6) - 1;
  const ms = Math.floor(us / 1000);
  return new Date(ms).toISOString().replace(/Z$/, `${String(us - ms * 1000).padStart(3, "0")}Z`);
}

// A record whose text holds several lines (a traceback logged in one call) becomes one row per line,
// so every row keeps the fixed height the virtualised view scrolls by: the first row carries the
// record's time, place and level, the others ("continued") only their text.
function pushRows(rows, record) {
  const text = String(record.line ?? "");
  if (!text.includes("\n")) {
    rows.push(record);
    return;
  }
  const parts = text.split(/\r?\n/);
  if (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
  parts.forEach((part, i) => rows.push(i === 0 ? { ...record, line: part, record }
    : { continued: true, line: part, level: record.level, stream: record.stream, ts: record.ts, record }));
}

function logLine(line, q, regex) {
  if (line.continued) {
    const level = LEVELS.includes(line.level) ? line.level.toLowerCase() : "none";
    return h("div", { class: `line continued level-${level}${line.stream === "stderr" ? " stderr" : ""}` },
      h("span", { class: "ts" }), h("span", { class: "where" }), h("span", { class: "lvl" }),
      renderLine(line.line, q, regex));
  }
  const level = LEVELS.includes(line.level) ? line.level.toLowerCase() : "none";
  const where = line.rank === null || line.rank === undefined ? `${line.node || ""}` : `${line.node || ""}:${line.rank}`;
  return h("div", { class: `line level-${level}${line.stream === "stderr" ? " stderr" : ""}` },
    h("span", { class: "ts", title: line.ts || "" }, fmtClock(line.ts)),
    h("span", { class: "where" }, where),
    h("span", { class: "lvl" }, line.level || ""),
    renderLine(String(line.line ?? ""), q, regex));
}
