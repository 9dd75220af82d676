// The live feed client: one websocket per page, subscriptions resumed from their cursor on reconnect.
// Protocol: see ui/feed.py. Data is handed to callbacks; nothing here touches the DOM.

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;

let socket = null;
let opened = false;
let backoff = RECONNECT_MIN_MS;
let nextId = 1;
const subs = new Map();

function url() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function sendSubscribe(sub) {
  send({ op: "subscribe", sub: sub.id, run: sub.run, stream: sub.stream, filters: sub.filters, cursor: sub.cursor });
}

function connect() {
  if (socket) return;
  const ws = new WebSocket(url());
  socket = ws;
  ws.addEventListener("open", () => {
    opened = true;
    backoff = RECONNECT_MIN_MS;
    for (const sub of subs.values()) sendSubscribe(sub);
  });
  ws.addEventListener("message", (event) => {
    if (socket !== ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    const sub = subs.get(frame.sub);
    if (!sub) return;
    if (frame.cursor) sub.cursor = frame.cursor;
    if (frame.type === "dropped") {
      // The server ended the subscription because this tab fell behind: resume from its cursor
      // (what was missed comes again as history), and let the view say so.
      sub.onDropped(frame.count || 0);
      sendSubscribe(sub);
      return;
    }
    if (frame.type === "gap") {
      // The server could not vouch for the records between this history and the live ones (the
      // sink was behind): the subscription goes on live; the view offers a fresh read.
      sub.onGap(frame.reason || "");
      return;
    }
    if (frame.type === "error") {
      sub.onStatus(`live feed: ${frame.error}`);
      sub.onError(frame.error);
      return;
    }
    sub.onFrame(frame);
  });
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    socket = null;
    const everOpened = opened;
    opened = false;
    for (const sub of subs.values()) {
      sub.onStatus(everOpened ? "live feed disconnected, reconnecting…" : "live feed unavailable");
      if (!everOpened) sub.onError("unavailable");
    }
    if (subs.size && everOpened) {
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
    }
  });
}

// subscribe(run, "logs", {q: "error"}, {onFrame, onStatus, onError, onDropped, onGap}) -> unsubscribe function.
// onFrame gets {type: "history"|"live", items, last}; a reconnect resumes from the last cursor,
// so frames after it continue exactly where the previous connection stopped.
export function subscribe(run, stream, filters, handlers) {
  const sub = {
    id: `s${nextId++}`, run, stream, filters: filters || {}, cursor: null,
    onFrame: handlers.onFrame || (() => {}), onStatus: handlers.onStatus || (() => {}),
    onError: handlers.onError || (() => {}),
    onDropped: handlers.onDropped || (() => sub.onStatus("caught up after a pause")),
    onGap: handlers.onGap || (() => sub.onStatus("some records between history and live may be missing; reload")),
  };
  subs.set(sub.id, sub);
  if (socket && opened) sendSubscribe(sub);
  else connect();
  return () => {
    if (!subs.delete(sub.id)) return;
    send({ op: "unsubscribe", sub: sub.id });
    if (!subs.size && socket) {
      socket.close();
      socket = null;
    }
  };
}
