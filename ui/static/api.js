// Calls to the runstream HTTP API.
// Data from the API is only ever put on the page as text (never parsed as HTML).

import { h } from "./dom.js";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const url = query.toString() ? `${path}?${query}` : path;
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  } catch (err) {
    throw new ApiError(0, `the server cannot be reached (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    if (response.status === 401) {
      throw new ApiError(401, "not signed in: open the URL that `runstream up` printed (it ends in ?token=...)");
    }
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

export function errorBox(err) {
  return h("p", { class: "error" }, err instanceof ApiError ? err.message : `error: ${err.message || err}`);
}
