// Log text to safe DOM: ANSI colour codes become spans with fixed classes, search hits become <mark>.
// Only text nodes carry the line's content; nothing is ever parsed as HTML.

// CSI (colours, cursor moves), OSC (titles, hyperlinks), charset selection: as the logs table strips them.
const ESCAPES = /\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()*+][0-9A-Za-z]|[=>78])/g;
const SGR = /^\x1b\[([0-9;]*)m$/;

// [{text, classes}] for a line; classes name the colour and weight in force.
export function parseAnsi(line) {
  const out = [];
  let fg = null, bg = null, bold = false, last = 0;
  const classes = () => [fg !== null ? `ansi-fg-${fg}` : "", bg !== null ? `ansi-bg-${bg}` : "",
    bold ? "ansi-bold" : ""].filter(Boolean).join(" ");
  for (const match of line.matchAll(ESCAPES)) {
    if (match.index > last) out.push({ text: line.slice(last, match.index), classes: classes() });
    last = match.index + match[0].length;
    const sgr = SGR.exec(match[0]);
    if (!sgr) continue;
    const codes = sgr[1] === "" ? [0] : sgr[1].split(";").map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { fg = null; bg = null; bold = false; }
      else if (c === 1) bold = true;
      else if (c === 22) bold = false;
      else if (c >= 30 && c <= 37) fg = c - 30;
      else if (c >= 90 && c <= 97) fg = c - 90 + 8;
      else if (c === 39) fg = null;
      else if (c >= 40 && c <= 47) bg = c - 40;
      else if (c >= 100 && c <= 107) bg = c - 100 + 8;
      else if (c === 49) bg = null;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        const n = codes[i + 2];
        if (Number.isInteger(n) && n >= 0 && n < 16) { if (c === 38) fg = n; else bg = n; }
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        i += 4; // 24-bit colours are not mapped (fixed classes only)
      }
    }
  }
  if (last < line.length) out.push({ text: line.slice(last), classes: classes() });
  return out;
}

// Ranges [start, end) of hits of `q` (case-insensitive substring) or `regex` in `text`.
export function hitRanges(text, q, regex) {
  const ranges = [];
  if (regex) {
    let re;
    try {
      re = new RegExp(regex, "g");
    } catch (err) {
      return ranges;
    }
    for (const m of text.matchAll(re)) {
      if (m[0].length === 0) continue;
      ranges.push([m.index, m.index + m[0].length]);
      if (ranges.length > 200) break;
    }
  } else if (q) {
    const hay = text.toLowerCase(), needle = q.toLowerCase();
    let at = hay.indexOf(needle);
    while (at >= 0 && ranges.length <= 200) {
      ranges.push([at, at + needle.length]);
      at = hay.indexOf(needle, at + needle.length);
    }
  }
  return ranges;
}

// A <span class="text"> with the line's coloured segments and its hits marked.
export function renderLine(line, q, regex) {
  const holder = document.createElement("span");
  holder.className = "text";
  const segments = parseAnsi(line);
  const plain = segments.map((s) => s.text).join("");
  const ranges = hitRanges(plain, q, regex);
  let offset = 0, r = 0;
  for (const seg of segments) {
    const span = seg.classes ? document.createElement("span") : holder;
    if (seg.classes) {
      span.className = seg.classes;
      holder.appendChild(span);
    }
    let pos = 0;
    while (pos < seg.text.length) {
      const abs = offset + pos;
      while (r < ranges.length && ranges[r][1] <= abs) r++;
      const hit = r < ranges.length && ranges[r][0] <= abs;
      const end = hit ? Math.min(seg.text.length, ranges[r][1] - offset)
        : Math.min(seg.text.length, r < ranges.length ? ranges[r][0] - offset : seg.text.length);
      const piece = document.createTextNode(seg.text.slice(pos, end));
      if (hit) {
        const mark = document.createElement("mark");
        mark.appendChild(piece);
        span.appendChild(mark);
      } else {
        span.appendChild(piece);
      }
      pos = end;
    }
    offset += seg.text.length;
  }
  return holder;
}
