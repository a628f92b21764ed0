// Every call to the pagelens API: the key from sessionStorage as a Bearer header (never in a URL),
// error bodies as ApiError, server-sent events read from fetch streams, images as blob URLs.

const KEY_NAME = "pagelens.apiKey";
/** The API lives under the path the page was served from, less /ui (a proxy may add a prefix). */
export const BASE = location.pathname.replace(/\/ui\/?$/, "");

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

let unauthorized = () => {};
/** Called (once per wrong key) when the server answers 401: the key is dropped first. */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

export const key = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (value) => sessionStorage.setItem(KEY_NAME, value),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

/** fetch(BASE + path) with the key; resolves to the Response when it is 2xx/304, else throws ApiError. */
export async function request(path, { method = "GET", json, body, headers = {}, signal } = {}) {
  const sent = new Headers(headers);
  const apiKey = key.get();
  if (apiKey) sent.set("Authorization", `Bearer ${apiKey}`);
  if (json !== undefined) {
    sent.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(BASE + path, { method, headers: sent, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", `the server could not be reached (${error.message})`);
  }
  if (response.ok || response.status === 304) return response;
  const error = await errorOf(response);
  if (response.status === 401) {
    key.clear();
    unauthorized(error);
  }
  throw error;
}

/** The JSON body of a call. */
export async function api(path, options) {
  return (await request(path, options)).json();
}

/** The typed error of a response: the server's {"error": {"type", "message"}} body, or its status. */
export async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(response.status, body.error.type, body.error.message);
  } catch {
    // not JSON: fall through
  }
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`.trim());
}

/** Server-sent events of a streaming response, as {event, data} with data parsed as JSON when it is. */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (!data.length) continue;
      const raw = data.join("\n");
      let parsed = raw;
      try {
        parsed = JSON.parse(raw);
      } catch {
        // plain text data
      }
      yield { event, data: parsed };
    }
  }
}

const pagePath = (collection, documentId, page) =>
  `/collections/${encodeURIComponent(collection)}/documents/${encodeURIComponent(documentId)}/pages/${page}`;

/** A page image as a blob URL (the caller revokes it): a JPEG `width` pixels wide, or the full PNG. */
export async function pageImage(collection, documentId, page, { width, signal } = {}) {
  const query = width ? `?width=${width}` : "";
  const response = await request(pagePath(collection, documentId, page) + query, { signal });
  return URL.createObjectURL(await response.blob());
}

export { pagePath };

/** Words for an API error, for a person. */
export function explain(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const words = {
    400: "Bad input",
    401: "Wrong API key",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported file type",
    422: "Cannot be read",
    429: "The server is busy, try again",
    501: "Not configured",
    503: "The server is not ready",
  }[error.status];
  return words ? `${words}: ${error.message}` : error.message;
}
